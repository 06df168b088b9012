//! The HTTP layer: one route table, extractors that turn every bad input into an
//! [`ApiError`] before any service runs, and the answer for errors.

use std::sync::Arc;
use std::time::{Duration, Instant};

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

mod admin;
mod handlers;
mod oidc;
mod openapi;
mod scim;
mod ws;

/// What every handler gets.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The services.
    pub svc: Arc<Services>,
    /// Becomes `true` when the server shuts down; sockets close on it.
    pub shutdown: watch::Receiver<bool>,
    /// The socket tasks, waited for on shutdown. A task that ends in any way, a panic
    /// included, leaves the tracker.
    pub sockets: tokio_util::task::TaskTracker,
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
        .route("/v1/devices/sso", post(oidc::sso_add_device))
        .route("/v1/oidc/config", get(oidc::config))
        .route(
            "/v1/oidc/backchannel-logout",
            post(oidc::backchannel_logout),
        )
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
        .route("/v1/policy", get(handlers::policy))
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
        .route("/v1/admin/users", get(admin::list_users))
        .route(
            "/v1/admin/users/{username}",
            get(admin::get_user).delete(admin::delete_user),
        )
        .route(
            "/v1/admin/users/{username}/disable",
            post(admin::disable_user),
        )
        .route(
            "/v1/admin/users/{username}/enable",
            post(admin::enable_user),
        )
        .route(
            "/v1/admin/users/{username}/devices/{device_id}",
            delete(admin::remove_device),
        )
        .route(
            "/v1/admin/users/{username}/roles/{role}",
            put(admin::grant_role).delete(admin::revoke_role),
        )
        .route("/v1/admin/users/{username}/quota", put(admin::set_quota))
        .route(
            "/v1/admin/invites",
            get(admin::list_invites).post(admin::create_invite),
        )
        .route("/v1/admin/invites/{id}", delete(admin::revoke_invite))
        .route("/v1/admin/audit", get(admin::audit_log))
        .route(
            "/scim/v2/Users",
            get(scim::list_users).post(scim::create_user),
        )
        .route(
            "/scim/v2/Users/{id}",
            get(scim::get_user)
                .put(scim::replace_user)
                .patch(scim::patch_user)
                .delete(scim::delete_user),
        )
        .route(
            "/scim/v2/ServiceProviderConfig",
            get(scim::service_provider_config),
        )
        .route("/scim/v2/ResourceTypes", get(scim::resource_types))
        .route("/scim/v2/Schemas", get(scim::schemas))
        .route("/healthz", get(handlers::healthz))
        .route("/readyz", get(handlers::readyz))
        .route("/metrics", get(handlers::metrics))
        .route(
            "/openapi.json",
            get(handlers::openapi).layer(axum::Extension(openapi_document(&state))),
        )
        .fallback(|| async { ApiError::NotFound("route") })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(middleware::from_fn_with_state(state.clone(), edge))
        .with_state(state)
}

/// The OpenAPI document with this server's limits, made once per router.
fn openapi_document(state: &AppState) -> axum::body::Bytes {
    match openapi::document(&state.svc.config) {
        Ok(doc) => doc.into(),
        Err(e) => {
            // A schema renamed without its limit: tests catch it; serve what states the
            // failure rather than a document that would be wrong.
            error!(error = %e, "the OpenAPI document could not be made");
            serde_json::json!({ "error": format!("the OpenAPI document could not be made: {e}") })
                .to_string()
                .into()
        }
    }
}

/// Mark `response` as the connection's last.
fn close_after(response: &mut Response) {
    response.headers_mut().insert(
        axum::http::header::CONNECTION,
        axum::http::HeaderValue::from_static("close"),
    );
}

/// The router of the separate metrics listener (`metrics.listen`): `/metrics` only, no
/// token needed (bind it where only the scraper reaches it).
pub fn metrics_router(svc: Arc<Services>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(
                |axum::extract::State(svc): axum::extract::State<Arc<Services>>| async move {
                    handlers::render_metrics(&svc).await
                },
            ),
        )
        .fallback(|| async { ApiError::NotFound("route") })
        .with_state(svc)
}

/// Longest request target (path and query) the server reads.
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// Most bytes of request headers (names and values) the server reads.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// The checks before any route: a request target or headers over their limits, or a
/// declared body longer than the route takes, are refused at once (before a body byte is
/// read); and every error answer, whoever produced it (an extractor's rejection, a
/// fallback), carries the JSON error body.
async fn edge(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let uri = request.uri();
    if uri.path().len() + uri.query().map_or(0, str::len) > MAX_URI_BYTES {
        return ApiError::UriTooLong(MAX_URI_BYTES).into_response();
    }
    let header_bytes: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if header_bytes > MAX_HEADER_BYTES {
        return ApiError::HeadersTooLarge(MAX_HEADER_BYTES).into_response();
    }
    let declared = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(len) = declared {
        let limits = &state.svc.config;
        let upload = request.method() == axum::http::Method::PATCH
            && request.uri().path().starts_with("/v1/blobs/");
        let max = if upload {
            // The largest blob: the largest file plus the attachment format's overhead.
            crate::service::max_blob_bytes(limits.blobs.max_file_bytes)
        } else {
            limits.limits.max_body_bytes
        };
        if len > max {
            let mut response = ApiError::PayloadTooLarge(format!(
                "the body is over the {max} bytes this route takes"
            ))
            .into_response();
            close_after(&mut response);
            return response;
        }
    }
    // An error answered before the body was read leaves the rest of it on the connection:
    // such a connection is closed after the answer, and the client told so.
    let has_body = declared.is_some_and(|len| len > 0)
        || request
            .headers()
            .contains_key(axum::http::header::TRANSFER_ENCODING);
    let connection = request.extensions().get::<crate::listener::Connection>();
    let socket = request.uri().path() == "/v1/ws";
    if connection.is_some_and(|c| c.reserved) && !socket {
        // Admitted into the slots kept for devices' sockets: nothing else is served, and
        // the connection is not kept.
        let mut response = ApiError::Busy.into_response();
        close_after(&mut response);
        return response;
    }
    let reserved = connection.is_some_and(|c| c.reserved);
    // Every route but the streamed ones (uploads, downloads, sockets) must be done in
    // bounded time, its body read included: a client that trickles a body is cut off.
    let streamed = socket || request.uri().path().starts_with("/v1/blobs/");
    let response = if streamed {
        next.run(request).await
    } else {
        let limit = Duration::from_secs(state.svc.config.http.request_timeout_secs);
        match tokio::time::timeout(limit, next.run(request)).await {
            Ok(response) => response,
            // Too slow, the client's body or the server's work: a temporary failure that
            // is safe to retry (a send with the same client message id is a duplicate at
            // worst), so 503 with Retry-After rather than 408.
            Err(_) => {
                let mut response = ApiError::Unavailable.into_response();
                close_after(&mut response);
                response
            }
        }
    };
    let mut response = response;
    let status = response.status();
    // A reserved slot is only for a socket: one that did not become one is not kept.
    let failed_upgrade = reserved && status != axum::http::StatusCode::SWITCHING_PROTOCOLS;
    if failed_upgrade || (has_body && (status.is_client_error() || status.is_server_error())) {
        close_after(&mut response);
    }
    // SCIM answers its errors with its own body, as `application/scim+json`.
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| {
            v.as_bytes().starts_with(b"application/json")
                || v.as_bytes().starts_with(scim::SCIM_JSON.as_bytes())
        });
    if (status.is_client_error() || status.is_server_error()) && !is_json {
        let (mut parts, body) = response.into_parts();
        // The rejection's own text (axum's extractors say what was wrong) becomes the
        // message; it quotes no header or body.
        let text = axum::body::to_bytes(body, 1024)
            .await
            .ok()
            .and_then(|b| String::from_utf8(b.to_vec()).ok())
            .filter(|t| !t.trim().is_empty());
        let error = ApiError::from_status(status, text);
        let fresh = error.into_response();
        parts.headers.remove(axum::http::header::CONTENT_LENGTH);
        parts.headers.remove(axum::http::header::CONTENT_TYPE);
        let (fresh_parts, fresh_body) = fresh.into_parts();
        for (name, value) in &fresh_parts.headers {
            parts.headers.insert(name.clone(), value.clone());
        }
        return Response::from_parts(parts, fresh_body);
    }
    response
}

/// Count and time every request by route template; log it at debug level without any
/// header, query or body.
async fn observe(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let route = crate::metrics::Route::new(request.extensions().get::<MatchedPath>());
    let method = request.method().clone();
    let start = Instant::now();
    let response = next.run(request).await;
    let elapsed = start.elapsed();
    let status = response.status().as_u16();
    state.svc.metrics.observe_request(&route, status, elapsed);
    debug!(%method, route = route.as_str(), status, micros = elapsed.as_micros(), "request");
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
            // A temporary condition: say when to come back.
            ApiError::Busy
            | ApiError::Unavailable
            | ApiError::StorageFull
            | ApiError::RateLimited
            | ApiError::MailboxFull => Some((axum::http::header::RETRY_AFTER, "5".to_owned())),
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
        let json = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
        if !json {
            return Err(ApiError::UnsupportedMediaType("application/json"));
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|rejection| match rejection.status() {
                StatusCode::PAYLOAD_TOO_LARGE => {
                    ApiError::PayloadTooLarge("request body too large".into())
                }
                _ => ApiError::BadRequest("unreadable body".into()),
            })?;
        // Every request body of the API is a JSON object; serde would also take a
        // positional array for a struct, which the API does not speak.
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(ApiError::BadRequest(
                "the body must be a JSON object".into(),
            ));
        }
        match Json::<T>::from_bytes(&bytes) {
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

/// Where a request came from, for the audit entry of the action it causes: the peer's
/// address as the listener saw it (no forwarding header is trusted).
#[derive(Debug, Clone, Copy)]
pub struct Source(pub crate::service::Origin);

impl<S: Send + Sync> FromRequestParts<S> for Source {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let ip = parts
            .extensions
            .get::<crate::listener::Connection>()
            .map(|c| c.peer.ip().to_canonical());
        Ok(Self(crate::service::Origin::Client(ip)))
    }
}

/// The caller's device, authenticated from `Authorization: Bearer <credential>`.
#[derive(Debug, Clone)]
pub struct Authed(pub AuthedDevice);

impl FromRequestParts<AppState> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        // Failed authentications are counted per source address: past the limit, the
        // source's credentials are not even checked until its bucket refills.
        let source = parts
            .extensions
            .get::<crate::listener::Connection>()
            .map(|c| crate::service::source_key(c.peer.ip()));
        // A token is taken before the check (so that concurrent guesses cannot all pass a
        // bucket with one token left) and given back when the credential is good.
        if let Some(key) = source
            && !state.svc.auth_attempt(key)
        {
            return Err(ApiError::RateLimited);
        }
        let result = match credential(parts) {
            Some(credential) => state.svc.authenticate(&credential).await,
            None => Err(ApiError::Unauthorized),
        };
        if let Some(key) = source {
            state
                .svc
                .auth_outcome(key, !matches!(result, Err(ApiError::Unauthorized)));
        }
        result.map(Self)
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
