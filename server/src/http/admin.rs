//! Handlers of `/v1/admin/...`: extract, call one administrative service, answer. The
//! role checks are the services' (`service::admin`).

use axum::Json;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tacit_api::{
    AdminUser, AdminUserList, AuditPage, CreateInviteRequest, CreateInviteResponse, DeviceId,
    ErrorBody, InviteList, Role, SetQuotaRequest,
};

use super::{ApiJson, AppState, Authed, Source};
use crate::error::ApiError;
use crate::service::{Admin, AuthedDevice, Origin};

type ApiResult<T> = Result<T, ApiError>;

/// Query parameters, with a malformed query answered as `bad_request`.
pub(super) struct ApiQuery<T>(T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(q)| Self(q))
            .map_err(|e| ApiError::BadRequest(format!("query: {}", e.body_text())))
    }
}

fn admin(caller: &AuthedDevice, origin: Origin) -> Admin<'_> {
    Admin::Device {
        caller,
        source: match origin {
            Origin::Client(ip) => ip,
            Origin::Host | Origin::Server => None,
        },
    }
}

fn role(name: &str) -> ApiResult<Role> {
    Role::from_name(name).ok_or(ApiError::NotFound("role"))
}

/// `GET /v1/admin/users` parameters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct UsersQuery {
    /// Only users whose name contains this (at most 32 characters).
    #[param(max_length = 32)]
    search: Option<String>,
    /// Users after this name (the previous page's `next`).
    #[param(max_length = 32)]
    after: Option<String>,
    /// Users per page (1 to 1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

/// `GET /v1/admin/audit` parameters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct AuditQuery {
    /// Entries after this sequence number (the previous page's `next`; default 0).
    #[param(minimum = 0, maximum = 9_223_372_036_854_775_807_u64)]
    after: Option<u64>,
    /// Entries per page (1 to 1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

#[utoipa::path(
    get,
    path = "/v1/admin/users",
    operation_id = "adminListUsers",
    summary = "List and search users with their devices: name, created, last seen, prekey stock, mailbox depth (admin).",
    params(UsersQuery),
    responses(
        (status = 200, description = "a page of users", body = AdminUserList),
        (status = 403, description = "forbidden: the caller is not an admin", body = ErrorBody),
        (status = "default", description = "an error; `code` names it", body = ErrorBody),
    ),
)]
pub(super) async fn list_users(
    State(state): State<AppState>,
    Authed(caller): Authed,
    Source(origin): Source,
    ApiQuery(q): ApiQuery<UsersQuery>,
) -> ApiResult<Json<AdminUserList>> {
    Ok(Json(
        state
            .svc
            .admin_users(
                admin(&caller, origin),
                q.search.as_deref(),
                q.after.as_deref(),
                q.limit,
            )
            .await?,
    ))
}

#[utoipa::path(
    get,
    path = "/v1/admin/users/{username}",
    operation_id = "adminGetUser",
    summary = "One user with their devices (admin).",
    params(("username" = String, Path, description = "the user")),
    responses(
        (status = 200, description = "the user", body = AdminUser),
        (status = 403, description = "forbidden: the caller is not an admin", body = ErrorBody),
        (status = 404, description = "not_found: no such user", body = ErrorBody),
        (status = "default", description = "an error; `code` names it", body = ErrorBody),
    ),
)]
pub(super) async fn get_user(
    State(state): State<AppState>,
    Authed(caller): Authed,
    Source(origin): Source,
    Path(username): Path<String>,
) -> ApiResult<Json<AdminUser>> {
    Ok(Json(
        state
            .svc
            .admin_user(admin(&caller, origin), &username)
            .await?,
    ))
}

#[utoipa::path(
    delete,
    path = "/v1/admin/users/{username}",
    operation_id = "adminDeleteUser",
    summary = "Delete a user's account, for one who lost every device: credentials stop working, sockets close, keys and mailboxes are deleted, and the name is free to register again (with a new identity, which contacts are told of) (admin).",
    params(("username" = String, Path, description = "the user")),
    responses(
        (status = 204, description = "deleted"),
        (status = 403, description = "forbidden: the caller is not an admin", body = ErrorBody),
        (status = 404, description = "not_found: no such user", body = ErrorBody),
        (status = "default", description = "an error; `code` names it", body = ErrorBody),
    ),
)]
pub(super) async fn delete_user(
    State(state): State<AppState>,
    Authed(caller): Authed,
    Source(origin): Source,
    Path(username): Path<String>,
) -> ApiResult<StatusCode> {
    // Its own task: a client that goes away must not cut a deletion off between its steps.
    let svc = state.svc.clone();
    tokio::spawn(async move {
        svc.admin_delete_user(admin(&caller, origin), &username)
            .await
    })
    .await
    .map_err(|_| ApiError::Unavailable)??;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/v1/admin/users/{username}/disable",
    operation_id = "adminDisableUser",
    summary = "Disable a user: every device credential is refused (`account_disabled`) and every socket closed at once; the name stays taken. Doing it again changes nothing (admin).",
    params(("username" = String, Path, description = "the user")),
    responses(
        (status = 204, description = "disabled"),
        (status = 403, description = "forbidden: the caller is not an admin", body = ErrorBody),
        (status = 404, description = "not_found: no such user", body = ErrorBody),
        (status = "default", description = "an error; `code` names it", body = ErrorBody),
    ),
)]
pub(super) async fn disable_user(
    State(state): State<AppState>,
    Authed(caller): Authed,
    Source(origin): Source,
    Path(username): Path<String>,
) -> ApiResult<StatusCode> {
    state
        .svc
        .set_user_disabled(admin(&caller, origin), &username, true)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/v1/admin/users/{username}/enable",
    operation_id = "adminEnableUser",
    summary = "Enable a disabled user again: their devices' credentials work again (admin).",
    params(("username" = String, Path, description = "the user")),
    responses(
        (status = 204, description = "enabled"),
        (status = 403, description = "forbidden: the caller is not an admin", body = ErrorBody),
        (status = 404, description = "not_found: no such user", body = ErrorBody),
        (status = "default", description = "an error; `code` names it", body = ErrorBody),
    ),
)]
pub(super) async fn enable_user(
    State(state): State<AppState>,
    Authed(caller): Authed,
    Source(origin): Source,
    Path(username): Path<String>,
) -> ApiResult<StatusCode> {
    state
        .svc
        .set_user_disabled(admin(&caller, origin), &username, false)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    delete,
    path = "/v1/admin/users/{username}/devices/{device_id}",
    operation_id = "adminRemoveDevice",
    summary = "Remove one device of a user (a lost phone): its credential stops working and its socket closes at once; not the account's last device (delete the account instead) (admin).",
    params(
        ("username" = String, Path, description = "the user"),
        ("device_id" = u32, Path, description = "the device", minimum = 1),
    ),
    responses(
        (status = 204, description = "removed"),
        (status = 403, description = "forbidden: the caller is not an admin", body = ErrorBody),
        (status = 404, description = "not_found: no such user or device", body = ErrorBody),
        (status = 409, description = "conflict: the account's last device", body = ErrorBody),
        (status = "default", description = "an error; `code` names it", body = ErrorBody),
    ),
)]
pub(super) async fn remove_device(
    State(state): State<AppState>,
    Authed(caller): Authed,
    Source(origin): Source,
    Path((username, device_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let device: u32 = device_id
        .parse()
        .map_err(|_| ApiError::NotFound("device"))?;
    state
        .svc
        .admin_remove_device(admin(&caller, origin), &username, DeviceId(device))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    put,
    path = "/v1/admin/users/{username}/roles/{role}",
    operation_id = "adminGrantRole",
    summary = "Grant a role (`admin` or `auditor`); granting one held changes nothing (admin).",
    params(
        ("username" = String, Path, description = "the user"),
        ("role" = Role, Path, description = "the role"),
    ),
    responses(
        (status = 204, description = "held"),
        (status = 403, description = "forbidden: the caller is not an admin", body = ErrorBody),
        (status = 404, description = "not_found: no such user or role", body = ErrorBody),
        (status = "default", description = "an error; `code` names it", body = ErrorBody),
    ),
)]
pub(super) async fn grant_role(
    State(state): State<AppState>,
    Authed(caller): Authed,
    Source(origin): Source,
    Path((username, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let role = role(&name)?;
    state
        .svc
        .set_role(admin(&caller, origin), &username, role, true)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    delete,
    path = "/v1/admin/users/{username}/roles/{role}",
    operation_id = "adminRevokeRole",
    summary = "Revoke a role; revoking one not held changes nothing (admin).",
    params(
        ("username" = String, Path, description = "the user"),
        ("role" = Role, Path, description = "the role"),
    ),
    responses(
        (status = 204, description = "not held"),
        (status = 403, description = "forbidden: the caller is not an admin", body = ErrorBody),
        (status = 404, description = "not_found: no such user or role", body = ErrorBody),
        (status = "default", description = "an error; `code` names it", body = ErrorBody),
    ),
)]
pub(super) async fn revoke_role(
    State(state): State<AppState>,
    Authed(caller): Authed,
    Source(origin): Source,
    Path((username, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let role = role(&name)?;
    state
        .svc
        .set_role(admin(&caller, origin), &username, role, false)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    put,
    path = "/v1/admin/users/{username}/quota",
    operation_id = "adminSetQuota",
    summary = "Set a user's own device limit and blob quota; an absent field returns to the server's (admin).",
    params(("username" = String, Path, description = "the user")),
    request_body = SetQuotaRequest,
    responses(
        (status = 204, description = "set"),
        (status = 403, description = "forbidden: the caller is not an admin", body = ErrorBody),
        (status = 404, description = "not_found: no such user", body = ErrorBody),
        (status = "default", description = "an error; `code` names it", body = ErrorBody),
    ),
)]
pub(super) async fn set_quota(
    State(state): State<AppState>,
    Authed(caller): Authed,
    Source(origin): Source,
    Path(username): Path<String>,
    ApiJson(req): ApiJson<SetQuotaRequest>,
) -> ApiResult<StatusCode> {
    state
        .svc
        .set_quota(admin(&caller, origin), &username, &req)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get,
    path = "/v1/admin/invites",
    operation_id = "adminListInvites",
    summary = "Every invite, newest first, with expiry and use counts (admin).",
    responses(
        (status = 200, description = "the invites", body = InviteList),
        (status = 403, description = "forbidden: the caller is not an admin", body = ErrorBody),
        (status = "default", description = "an error; `code` names it", body = ErrorBody),
    ),
)]
pub(super) async fn list_invites(
    State(state): State<AppState>,
    Authed(caller): Authed,
    Source(origin): Source,
) -> ApiResult<Json<InviteList>> {
    Ok(Json(state.svc.admin_invites(admin(&caller, origin)).await?))
}

#[utoipa::path(
    post,
    path = "/v1/admin/invites",
    operation_id = "adminCreateInvite",
    summary = "Create an invite admitting `max_uses` registrations (default 1) until it expires (default never); the token is shown only in this answer (admin).",
    request_body = CreateInviteRequest,
    responses(
        (status = 201, description = "created", body = CreateInviteResponse),
        (status = 403, description = "forbidden: the caller is not an admin", body = ErrorBody),
        (status = "default", description = "an error; `code` names it", body = ErrorBody),
    ),
)]
pub(super) async fn create_invite(
    State(state): State<AppState>,
    Authed(caller): Authed,
    Source(origin): Source,
    ApiJson(req): ApiJson<CreateInviteRequest>,
) -> ApiResult<(StatusCode, Json<CreateInviteResponse>)> {
    let created = state
        .svc
        .admin_create_invite(admin(&caller, origin), &req)
        .await?;
    Ok((StatusCode::CREATED, Json(created)))
}

#[utoipa::path(
    delete,
    path = "/v1/admin/invites/{id}",
    operation_id = "adminRevokeInvite",
    summary = "Revoke an invite: it admits no more registrations (admin).",
    params(("id" = String, Path, description = "the invite's id (SHA-256 of its token, hex)")),
    responses(
        (status = 204, description = "revoked"),
        (status = 403, description = "forbidden: the caller is not an admin", body = ErrorBody),
        (status = 404, description = "not_found: no such invite, or revoked already", body = ErrorBody),
        (status = "default", description = "an error; `code` names it", body = ErrorBody),
    ),
)]
pub(super) async fn revoke_invite(
    State(state): State<AppState>,
    Authed(caller): Authed,
    Source(origin): Source,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    state
        .svc
        .admin_revoke_invite(admin(&caller, origin), &id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get,
    path = "/v1/admin/audit",
    operation_id = "adminAuditLog",
    summary = "A page of the audit log as ECS-style records (docs/AUDIT.md); the read is itself audited (auditor or admin).",
    params(AuditQuery),
    responses(
        (status = 200, description = "a page of entries", body = AuditPage),
        (status = 403, description = "forbidden: the caller is neither an auditor nor an admin", body = ErrorBody),
        (status = "default", description = "an error; `code` names it", body = ErrorBody),
    ),
)]
pub(super) async fn audit_log(
    State(state): State<AppState>,
    Authed(caller): Authed,
    Source(origin): Source,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> ApiResult<Json<AuditPage>> {
    Ok(Json(
        state
            .svc
            .audit_page(admin(&caller, origin), q.after, q.limit)
            .await?,
    ))
}
