//! Sign-in with the identity provider: its configuration for clients, adding a device
//! with an ID token, and the provider's back-channel logout.

use axum::extract::State;
use axum::extract::rejection::FormRejection;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Form, Json};
use serde::Deserialize;
use tacit_api::{ErrorBody, OidcConfig, SsoDeviceRequest, SsoDeviceResponse};

use super::{ApiJson, AppState, Source};
use crate::error::ApiError;
use crate::service::{LogoutError, Origin, source_key};

/// A refused token counts as a failed authentication of its source, so that token
/// guessing (and the audit entries each refusal makes) is bounded per source as
/// credential guessing is.
pub(super) async fn guarded<T>(
    state: &AppState,
    origin: Origin,
    run: impl Future<Output = Result<T, ApiError>>,
) -> Result<T, ApiError> {
    let key = match origin {
        Origin::Client(Some(ip)) => Some(source_key(ip)),
        _ => None,
    };
    if let Some(key) = key
        && !state.svc.auth_attempt(key)
    {
        return Err(ApiError::RateLimited);
    }
    let result = run.await;
    if let Some(key) = key {
        let refused = matches!(
            result,
            Err(ApiError::IdTokenRefused(_) | ApiError::IdTokenReplayed)
        );
        state.svc.auth_outcome(key, !refused);
    }
    result
}

#[utoipa::path(
    get,
    path = "/v1/oidc/config",
    operation_id = "oidcConfig",
    summary = "How a client signs in with the server's identity provider (404 when none is configured).",
    responses(
        (status = 200, description = "the provider", body = OidcConfig),
        (status = 404, description = "not_found: no identity provider", body = ErrorBody),
        (status = "default", description = "an error; `code` names it", body = ErrorBody),
    ),
    security(()),
)]
pub(super) async fn config(State(state): State<AppState>) -> Result<Json<OidcConfig>, ApiError> {
    Ok(Json(state.svc.oidc_config()?))
}

#[utoipa::path(
    post,
    path = "/v1/devices/sso",
    operation_id = "ssoAddDevice",
    summary = "Sign a device in to the account bound to the ID token's identity (iss, sub), replacing the account's other devices (account recovery: the new device's identity key becomes the account's); no credential. The token is usable once.",
    request_body = SsoDeviceRequest,
    responses(
        (status = 201, description = "added", body = SsoDeviceResponse),
        (status = 404, description = "not_found: the server has no identity provider", body = ErrorBody),
        (status = 401, description = "id_token_refused: the message says why", body = ErrorBody),
        (status = 403, description = "account_disabled", body = ErrorBody),
        (status = 409, description = "id_token_replayed; or conflict: the account has other devices and replace_devices is not true (nothing changed)", body = ErrorBody),
        (status = 503, description = "unavailable: the identity provider is unreachable", body = ErrorBody),
        (status = "default", description = "an error; `code` names it", body = ErrorBody),
    ),
    security(()),
)]
pub(super) async fn sso_add_device(
    State(state): State<AppState>,
    Source(origin): Source,
    ApiJson(req): ApiJson<SsoDeviceRequest>,
) -> Result<(StatusCode, Json<SsoDeviceResponse>), ApiError> {
    let added = guarded(&state, origin, state.svc.sso_add_device(req, origin)).await?;
    Ok((StatusCode::CREATED, Json(added)))
}

/// The form the provider posts (Back-Channel Logout 1.0 §2.5).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(super) struct LogoutForm {
    /// The signed logout token.
    logout_token: String,
}

#[utoipa::path(
    post,
    path = "/v1/oidc/backchannel-logout",
    operation_id = "oidcBackchannelLogout",
    summary = "The identity provider's back-channel logout (OpenID Connect Back-Channel Logout 1.0): a signed logout token disables the user or removes the session's devices, as configured; sockets close.",
    request_body(content = LogoutForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "done"),
        (status = 400, description = "`{\"error\":\"invalid_request\"}`: the token is refused (audited with the reason)"),
        (status = 404, description = "not_found: the server has no identity provider", body = ErrorBody),
        (status = 503, description = "unavailable: the provider's keys or the database are unreachable; retry"),
    ),
    security(()),
)]
pub(super) async fn backchannel_logout(
    State(state): State<AppState>,
    Source(origin): Source,
    form: Result<Form<LogoutForm>, FormRejection>,
) -> Response {
    let source = match origin {
        Origin::Client(ip) => ip,
        _ => None,
    };
    let no_store = || [(header::CACHE_CONTROL, "no-store")];
    let invalid = |description: String| {
        (
            StatusCode::BAD_REQUEST,
            no_store(),
            Json(serde_json::json!({
                "error": "invalid_request",
                "error_description": description,
            })),
        )
            .into_response()
    };
    let Ok(Form(form)) = form else {
        return invalid("a form with logout_token is expected".to_owned());
    };
    let key = source.map(source_key);
    if let Some(key) = key
        && !state.svc.auth_attempt(key)
    {
        return ApiError::RateLimited.into_response();
    }
    let result = state
        .svc
        .backchannel_logout(&form.logout_token, source)
        .await;
    if let Some(key) = key {
        state
            .svc
            .auth_outcome(key, !matches!(result, Err(LogoutError::Invalid(_))));
    }
    match result {
        Ok(_) => (StatusCode::OK, no_store()).into_response(),
        Err(LogoutError::Invalid(reason)) => invalid(reason),
        Err(LogoutError::Unavailable(e)) => e.into_response(),
    }
}
