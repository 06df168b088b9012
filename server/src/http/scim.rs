//! SCIM 2.0 at `/scim/v2` (RFC 7644): the identity provider's provisioning client, with
//! the bearer token of `[scim] bearer_token_file`. Answers are `application/scim+json`,
//! errors the SCIM error body; requests are `application/scim+json` or
//! `application/json`.

use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::Value;
use tracing::error;

use super::{AppState, Source};
use crate::error::ApiError;
use crate::service::{Origin, ScimError};

/// The media type of every SCIM answer.
pub(super) const SCIM_JSON: &str = "application/scim+json";

/// A SCIM answer: `status` with a JSON body.
pub(super) struct Scim(StatusCode, Value);

impl IntoResponse for Scim {
    fn into_response(self) -> Response {
        let Self(status, body) = self;
        let mut response = (status, body.to_string()).into_response();
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(SCIM_JSON));
        response
    }
}

/// A refusal as the SCIM error body.
pub(super) struct Refused(ScimError);

impl From<ScimError> for Refused {
    fn from(e: ScimError) -> Self {
        Self(e)
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let Self(e) = self;
        if let ScimError::Api(ApiError::Internal(cause)) = &e {
            error!(error = %cause, "internal error");
        }
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = Scim(status, e.body()).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"scim\""),
            );
        }
        if matches!(e, ScimError::RateLimited) {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                HeaderValue::from_static("5"),
            );
        }
        response
    }
}

type Answer = Result<Scim, Refused>;

/// The SCIM client, authenticated by its bearer token (or the server has no `[scim]`:
/// 404).
pub(super) struct ScimClient {
    source: Option<std::net::IpAddr>,
}

impl FromRequestParts<AppState> for ScimClient {
    type Rejection = Refused;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Refused> {
        let Ok(Source(origin)) = Source::from_request_parts(parts, state).await;
        let source = match origin {
            Origin::Client(ip) => ip,
            _ => None,
        };
        let bearer = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token);
        state.svc.scim_authorize(bearer, source).await?;
        Ok(Self { source })
    }
}

/// A JSON object body, as `application/scim+json` or `application/json`.
pub(super) struct ScimJson(Value);

impl<S: Send + Sync> FromRequest<S> for ScimJson {
    type Rejection = Refused;

    async fn from_request(req: Request, state: &S) -> Result<Self, Refused> {
        let json = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| {
                let v = v.trim();
                v.eq_ignore_ascii_case("application/json") || v.eq_ignore_ascii_case(SCIM_JSON)
            });
        if !json {
            return Err(ScimError::UnsupportedMediaType.into());
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|rejection| match rejection.status() {
                StatusCode::PAYLOAD_TOO_LARGE => {
                    ScimError::Api(ApiError::PayloadTooLarge("request body too large".into()))
                }
                _ => ScimError::InvalidSyntax("unreadable body".into()),
            })?;
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(value @ Value::Object(_)) => Ok(Self(value)),
            _ => Err(ScimError::InvalidSyntax("the body must be a JSON object".into()).into()),
        }
    }
}

/// The query of `GET /scim/v2/Users`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub(super) struct ListQuery {
    /// `userName eq "..."` or `externalId eq "..."`.
    filter: Option<String>,
    /// The first result's position, from 1.
    start_index: Option<String>,
    /// Most results (capped at 100).
    count: Option<String>,
}

fn integer(name: &str, value: Option<&str>) -> Result<Option<i64>, ScimError> {
    value
        .map(|v| {
            v.trim()
                .parse::<i64>()
                .map_err(|_| ScimError::InvalidValue(format!("{name}: an integer")))
        })
        .transpose()
}

#[utoipa::path(
    get,
    path = "/scim/v2/Users",
    operation_id = "scimListUsers",
    summary = "SCIM: users, optionally filtered by `userName eq \"...\"` (case-insensitive) or `externalId eq \"...\"`; a ListResponse (404 without [scim]).",
    params(ListQuery),
    responses(
        (status = 200, description = "a ListResponse", content_type = "application/scim+json"),
        (status = 400, description = "invalidFilter or invalidValue", content_type = "application/scim+json"),
        (status = 401, description = "no or wrong bearer token", content_type = "application/scim+json"),
        (status = 404, description = "the server has no [scim]", content_type = "application/scim+json"),
    ),
    security(("scim" = [])),
)]
pub(super) async fn list_users(
    State(state): State<AppState>,
    _client: ScimClient,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Answer {
    let Query(query) = query.map_err(|_| ScimError::InvalidSyntax("unreadable query".into()))?;
    let start = integer("startIndex", query.start_index.as_deref())?;
    let count = integer("count", query.count.as_deref())?;
    let list = state
        .svc
        .scim_list(query.filter.as_deref(), start, count)
        .await?;
    Ok(Scim(StatusCode::OK, list))
}

#[utoipa::path(
    post,
    path = "/scim/v2/Users",
    operation_id = "scimCreateUser",
    summary = "SCIM: create (pre-provision) a user; userName is normalised as the OpenID Connect username claim. `password` is ignored.",
    request_body(content = super::openapi::AnyObject, content_type = "application/scim+json"),
    responses(
        (status = 201, description = "the user", content_type = "application/scim+json"),
        (status = 400, description = "invalidValue: the userName is not a valid username", content_type = "application/scim+json"),
        (status = 401, description = "no or wrong bearer token", content_type = "application/scim+json"),
        (status = 404, description = "the server has no [scim]", content_type = "application/scim+json"),
        (status = 409, description = "uniqueness: the user exists", content_type = "application/scim+json"),
    ),
    security(("scim" = [])),
)]
pub(super) async fn create_user(
    State(state): State<AppState>,
    client: ScimClient,
    ScimJson(body): ScimJson,
) -> Answer {
    let user = state.svc.scim_create(&body, client.source).await?;
    Ok(Scim(StatusCode::CREATED, user))
}

#[utoipa::path(
    get,
    path = "/scim/v2/Users/{id}",
    operation_id = "scimGetUser",
    summary = "SCIM: one user.",
    params(("id" = String, Path, description = "the user's SCIM id")),
    responses(
        (status = 200, description = "the user", content_type = "application/scim+json"),
        (status = 401, description = "no or wrong bearer token", content_type = "application/scim+json"),
        (status = 404, description = "no such user, or no [scim]", content_type = "application/scim+json"),
    ),
    security(("scim" = [])),
)]
pub(super) async fn get_user(
    State(state): State<AppState>,
    _client: ScimClient,
    Path(id): Path<String>,
) -> Answer {
    Ok(Scim(StatusCode::OK, state.svc.scim_get(&id).await?))
}

#[utoipa::path(
    put,
    path = "/scim/v2/Users/{id}",
    operation_id = "scimReplaceUser",
    summary = "SCIM: replace a user; `active: false` disables the account as an administrator does (devices revoked, sockets closed).",
    params(("id" = String, Path, description = "the user's SCIM id")),
    request_body(content = super::openapi::AnyObject, content_type = "application/scim+json"),
    responses(
        (status = 200, description = "the user", content_type = "application/scim+json"),
        (status = 400, description = "mutability (a userName change) or invalidValue", content_type = "application/scim+json"),
        (status = 401, description = "no or wrong bearer token", content_type = "application/scim+json"),
        (status = 404, description = "no such user, or no [scim]", content_type = "application/scim+json"),
    ),
    security(("scim" = [])),
)]
pub(super) async fn replace_user(
    State(state): State<AppState>,
    client: ScimClient,
    Path(id): Path<String>,
    ScimJson(body): ScimJson,
) -> Answer {
    let changes = crate::service::parse_scim_put(&body)?;
    let user = state.svc.scim_update(&id, changes, client.source).await?;
    Ok(Scim(StatusCode::OK, user))
}

#[utoipa::path(
    patch,
    path = "/scim/v2/Users/{id}",
    operation_id = "scimPatchUser",
    summary = "SCIM: a PatchOp; `active` false (a boolean or \"False\") disables the account as an administrator does, true enables it.",
    params(("id" = String, Path, description = "the user's SCIM id")),
    request_body(content = super::openapi::AnyObject, content_type = "application/scim+json"),
    responses(
        (status = 200, description = "the user", content_type = "application/scim+json"),
        (status = 400, description = "invalidSyntax, invalidValue or mutability", content_type = "application/scim+json"),
        (status = 401, description = "no or wrong bearer token", content_type = "application/scim+json"),
        (status = 404, description = "no such user, or no [scim]", content_type = "application/scim+json"),
    ),
    security(("scim" = [])),
)]
pub(super) async fn patch_user(
    State(state): State<AppState>,
    client: ScimClient,
    Path(id): Path<String>,
    ScimJson(body): ScimJson,
) -> Answer {
    let changes = crate::service::parse_scim_patch(&body)?;
    let user = state.svc.scim_update(&id, changes, client.source).await?;
    Ok(Scim(StatusCode::OK, user))
}

#[utoipa::path(
    delete,
    path = "/scim/v2/Users/{id}",
    operation_id = "scimDeleteUser",
    summary = "SCIM: delete a user and its account, as an administrator's delete does.",
    params(("id" = String, Path, description = "the user's SCIM id")),
    responses(
        (status = 204, description = "deleted"),
        (status = 401, description = "no or wrong bearer token", content_type = "application/scim+json"),
        (status = 404, description = "no such user, or no [scim]", content_type = "application/scim+json"),
    ),
    security(("scim" = [])),
)]
pub(super) async fn delete_user(
    State(state): State<AppState>,
    client: ScimClient,
    Path(id): Path<String>,
) -> Result<StatusCode, Refused> {
    state.svc.scim_delete(&id, client.source).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The discovery documents, served without a token (they hold nothing of the users).
fn discovery(state: &AppState, document: fn() -> Value) -> Answer {
    if state.svc.config.scim.is_none() {
        return Err(ScimError::Off.into());
    }
    Ok(Scim(StatusCode::OK, document()))
}

#[utoipa::path(
    get,
    path = "/scim/v2/ServiceProviderConfig",
    operation_id = "scimServiceProviderConfig",
    summary = "SCIM: what this service provider supports (patch and filter; no bulk, sort, etag or password change).",
    responses(
        (status = 200, description = "the configuration", content_type = "application/scim+json"),
        (status = 404, description = "the server has no [scim]", content_type = "application/scim+json"),
    ),
    security(()),
)]
pub(super) async fn service_provider_config(State(state): State<AppState>) -> Answer {
    discovery(&state, crate::service::scim_service_provider_config)
}

#[utoipa::path(
    get,
    path = "/scim/v2/ResourceTypes",
    operation_id = "scimResourceTypes",
    summary = "SCIM: the resource types (User only).",
    responses(
        (status = 200, description = "a ListResponse", content_type = "application/scim+json"),
        (status = 404, description = "the server has no [scim]", content_type = "application/scim+json"),
    ),
    security(()),
)]
pub(super) async fn resource_types(State(state): State<AppState>) -> Answer {
    discovery(&state, crate::service::scim_resource_types)
}

#[utoipa::path(
    get,
    path = "/scim/v2/Schemas",
    operation_id = "scimSchemas",
    summary = "SCIM: the User schema's attributes this server keeps.",
    responses(
        (status = 200, description = "a ListResponse", content_type = "application/scim+json"),
        (status = 404, description = "the server has no [scim]", content_type = "application/scim+json"),
    ),
    security(()),
)]
pub(super) async fn schemas(State(state): State<AppState>) -> Answer {
    discovery(&state, crate::service::scim_schemas)
}
