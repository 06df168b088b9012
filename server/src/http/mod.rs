//! The HTTP layer: one route table, extractors that turn every bad input into an
//! [`ApiError`] before any service runs, and the answer for errors.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, MatchedPath, Request};
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post, put};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use tacit_api::DeviceCredential;
use tokio::sync::watch;
use tracing::{debug, error};

use crate::error::ApiError;
use crate::service::{AuthedDevice, Services};

mod handlers;
mod ws;

/// What every handler gets.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The services.
    pub svc: Arc<Services>,
    /// Becomes `true` when the server shuts down; sockets close on it.
    pub shutdown: watch::Receiver<bool>,
}

/// The route table.
pub fn router(state: AppState) -> Router {
    let body_limit = usize::try_from(state.svc.config.limits.max_body_bytes).unwrap_or(usize::MAX);
    Router::new()
        .route("/v1/accounts", post(handlers::register))
        .route("/v1/accounts/me", delete(handlers::delete_account))
        .route(
            "/v1/devices",
            get(handlers::own_devices).post(handlers::add_device),
        )
        .route("/v1/devices/{device_id}", delete(handlers::remove_device))
        .route("/v1/devices/link", post(handlers::link_device))
        .route("/v1/provisioning", post(handlers::open_channel))
        .route(
            "/v1/provisioning/{channel}",
            get(handlers::channel_state).put(handlers::answer_channel),
        )
        .route("/v1/users/{username}/devices", get(handlers::user_devices))
        .route(
            "/v1/users/{username}/bundles",
            post(handlers::claim_bundles),
        )
        .route("/v1/keys", put(handlers::upload_keys))
        .route("/v1/keys/count", get(handlers::prekey_count))
        .route("/v1/messages", post(handlers::send).get(handlers::fetch))
        .route("/v1/messages/ack", post(handlers::ack))
        .route("/v1/multicast", post(handlers::multicast))
        .route("/v1/ws", get(ws::upgrade))
        .route("/v1/blobs", post(handlers::create_blob))
        .route(
            "/v1/blobs/{blob_id}",
            get(handlers::download_blob)
                .head(handlers::blob_status)
                // The body streams to disk; its size is checked against the blob's.
                .merge(patch(handlers::upload_blob).layer(DefaultBodyLimit::disable()))
                .delete(handlers::delete_blob),
        )
        .route("/healthz", get(handlers::healthz))
        .route("/readyz", get(handlers::readyz))
        .route("/metrics", get(handlers::metrics))
        .route("/openapi.json", get(handlers::openapi))
        .fallback(|| async { ApiError::NotFound("route") })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Count and time every request by route template; log it at debug level without any
/// header, query or body.
async fn observe(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().clone();
    let start = Instant::now();
    let response = next.run(request).await;
    let elapsed = start.elapsed();
    let status = response.status().as_u16();
    state.svc.metrics.observe_request(&route, status, elapsed);
    debug!(%method, route, status, micros = elapsed.as_micros(), "request");
    response
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(cause) = &self {
            error!(error = %cause, "internal error");
        }
        let status = StatusCode::from_u16(self.code().http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, Json(self.body())).into_response();
        let extra = match &self {
            // Where a resumed upload must continue.
            ApiError::OffsetMismatch(offset) => Some((
                axum::http::HeaderName::from_static(tacit_api::UPLOAD_OFFSET),
                offset.to_string(),
            )),
            ApiError::RangeNotSatisfiable(size) => {
                Some((axum::http::header::CONTENT_RANGE, format!("bytes */{size}")))
            }
            _ => None,
        };
        if let Some((name, value)) = extra
            && let Ok(value) = axum::http::HeaderValue::from_str(&value)
        {
            response.headers_mut().insert(name, value);
        }
        response
    }
}

/// A JSON body whose rejections are [`ApiError`]s (413, 415 or 400 naming the problem).
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_rejection(&rejection)),
        }
    }
}

fn json_rejection(rejection: &JsonRejection) -> ApiError {
    match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge("request body too large".into()),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType("application/json"),
        _ => ApiError::BadRequest(match rejection {
            // The serde message names the field and what was expected; it quotes no value
            // beyond short type names.
            JsonRejection::JsonDataError(e) => e.body_text(),
            JsonRejection::JsonSyntaxError(_) => "body is not valid JSON".into(),
            _ => "unreadable body".into(),
        }),
    }
}

/// The caller's device, authenticated from `Authorization: Bearer <credential>`.
#[derive(Debug, Clone)]
pub struct Authed(pub AuthedDevice);

impl FromRequestParts<AppState> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let credential = credential(parts).ok_or(ApiError::Unauthorized)?;
        state.svc.authenticate(&credential).await.map(Self)
    }
}

/// Parse the credential; malformed ones never reach the store.
fn credential(parts: &Parts) -> Option<DeviceCredential> {
    let value = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case(tacit_api::AUTHORIZATION_SCHEME) {
        return None;
    }
    token.trim().parse().ok()
}
