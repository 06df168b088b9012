//! Handlers: extract, call one service, answer. No rule and no SQL here.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tacit_api::ErrorBody;
use tacit_api::{
    AckRequest, AddDeviceRequest, AddDeviceResponse, AnswerChannelRequest, ChannelState,
    ClaimBundlesRequest, CreateBlobRequest, CreateBlobResponse, DeviceId, DeviceList,
    EnvelopeBatch, LinkDeviceRequest, MulticastRequest, OpenChannelRequest, OpenChannelResponse,
    PrekeyBundles, PrekeyCount, RegisterRequest, RegisterResponse, SendMessageRequest,
    SendMessageResponse, UploadKeysRequest,
};
use tokio::io::AsyncReadExt as _;

use super::openapi::{AnyObject, RawBytes};
use super::{ApiJson, AppState, Authed, Source};
use crate::error::ApiError;

type ApiResult<T> = Result<T, ApiError>;

#[utoipa::path(
    post,
    path = "/v1/accounts",
    operation_id = "register",
    summary = "Create an account and its first device (needs an invite unless registration is open).",
    request_body = RegisterRequest,
    responses(
        (status = 201, description = "created", body = RegisterResponse),
        (status = 401, description = "id_token_refused: the message says why", body = ErrorBody),
        (status = 403, description = "invite_required", body = ErrorBody),
        (status = 409, description = "username_taken, or id_token_replayed", body = ErrorBody),
        (status = "default", description = "an error; `code` names it", body = ErrorBody),
    ),
    security(()),
)]
pub(super) async fn register(
    State(state): State<AppState>,
    Source(origin): Source,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> ApiResult<(StatusCode, Json<RegisterResponse>)> {
    let created = if req.id_token.is_some() {
        super::oidc::guarded(&state, origin, state.svc.register(req, origin)).await?
    } else {
        state.svc.register(req, origin).await?
    };
    Ok((StatusCode::CREATED, Json(created)))
}

#[utoipa::path(
    delete,
    path = "/v1/accounts/me",
    operation_id = "deleteAccount",
    summary = "Delete the caller's whole account: every device's credential stops working, sockets close, keys and mailboxes are deleted, and the username becomes free.",
    responses(
        (status = 204, description = "deleted"),
        (status = "default", description = "an error; `code` names it", body = ErrorBody),
    ),
)]
pub(super) async fn delete_account(
    State(state): State<AppState>,
    Authed(caller): Authed,
    Source(origin): Source,
) -> ApiResult<StatusCode> {
    // Its own task: a client that goes away (or a request timeout) must not cut a
    // deletion off between its steps.
    let svc = state.svc.clone();
    tokio::spawn(async move { svc.delete_account(&caller, origin).await })
        .await
        .map_err(|_| ApiError::Unavailable)??;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/v1/devices/link",
    operation_id = "linkDevice",
    summary = "A new device adds itself to the account that answered its provisioning channel, presenting the link token from the sealed answer. No credential. The channel is deleted.",
    request_body = LinkDeviceRequest,
    responses(
        (status = 201, description = "created", body = AddDeviceResponse),
        (status = 404, description = "not_found: no such channel, or it was not answered", body = ErrorBody),
        (status = 409, description = "conflict (see code)", body = ErrorBody),
        (status = "default", description = "an error; `code` names it", body = ErrorBody),
    ),
    security(()),
)]
pub(super) async fn link_device(
    State(state): State<AppState>,
    Source(origin): Source,
    ApiJson(req): ApiJson<LinkDeviceRequest>,
) -> ApiResult<(StatusCode, Json<AddDeviceResponse>)> {
    let added = state.svc.link_device(req, origin).await?;
    Ok((StatusCode::CREATED, Json(added)))
}

#[utoipa::path(
    post,
    path = "/v1/provisioning",
    operation_id = "openChannel",
    summary = "Open a provisioning channel for a new device (no credential; rate limited for everyone together). Expires after 10 minutes.",
    request_body = OpenChannelRequest,
    responses(
        (status = 201, description = "created", body = OpenChannelResponse),
        (status = 429, description = "rate_limited", body = ErrorBody),
        (status = "default", description = "an error; `code` names it", body = ErrorBody),
    ),
    security(()),
)]
pub(super) async fn open_channel(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<OpenChannelRequest>,
) -> ApiResult<(StatusCode, Json<OpenChannelResponse>)> {
    let opened = state.svc.open_channel(req).await?;
    Ok((StatusCode::CREATED, Json(opened)))
}

#[utoipa::path(
    get,
    path = "/v1/provisioning/{channel}",
    operation_id = "channelState",
    summary = "The channel's public key and, once an existing device answered, the sealed answer (no credential: the channel id is the capability).",
    params(
        ("channel" = String, Path, description = "16 random bytes, unpadded base64url", pattern = r"^[A-Za-z0-9_-]{21}[AQgw]$"),
    ),
    responses(
        (status = 200, description = "OK", body = ChannelState),
        (status = 404, description = "not_found", body = ErrorBody),
        (status = "default", description = "an error; `code` names it", body = ErrorBody),
    ),
    security(()),
)]
pub(super) async fn channel_state(
    State(state): State<AppState>,
    Path(channel): Path<String>,
) -> ApiResult<Json<ChannelState>> {
    Ok(Json(state.svc.channel_state(&channel).await?))
}

#[utoipa::path(
    put,
    path = "/v1/provisioning/{channel}",
    operation_id = "answerChannel",
    summary = "An existing device answers the channel once, with a message sealed to the channel's key and the one-time link token (stored as a hash).",
    request_body = AnswerChannelRequest,
    params(
        ("channel" = String, Path, description = "16 random bytes, unpadded base64url", pattern = r"^[A-Za-z0-9_-]{21}[AQgw]$"),
    ),
    responses(
        (status = 204, description = "answered"),
        (status = 404, description = "not_found", body = ErrorBody),
        (status = 409, description = "conflict: already answered", body = ErrorBody),
        (status = "default", description = "an error; `code` names it", body = ErrorBody),
    ),
)]
pub(super) async fn answer_channel(
    State(state): State<AppState>,
    Authed(caller): Authed,
    Path(channel): Path<String>,
    ApiJson(req): ApiJson<AnswerChannelRequest>,
) -> ApiResult<StatusCode> {
    state.svc.answer_channel(&caller, &channel, req).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get,
    path = "/v1/devices",
    operation_id = "ownDevices",
    summary = "The caller's devices, with names.",
    responses(
        (status = 200, description = "OK", body = DeviceList),
        (status = "default", description = "an error; `code` names it", body = ErrorBody),
    ),
)]
pub(super) async fn own_devices(
    State(state): State<AppState>,
    Authed(caller): Authed,
) -> ApiResult<Json<DeviceList>> {
    Ok(Json(state.svc.own_devices(&caller).await?))
}

#[utoipa::path(
    post,
    path = "/v1/devices",
    operation_id = "addDevice",
    summary = "Add a device to the caller's account; returns its credential once.",
    request_body = AddDeviceRequest,
    responses(
        (status = 201, description = "created", body = AddDeviceResponse),
        (status = 409, description = "too_many_devices", body = ErrorBody),
        (status = "default", description = "an error; `code` names it", body = ErrorBody),
    ),
)]
pub(super) async fn add_device(
    State(state): State<AppState>,
    Authed(caller): Authed,
    Source(origin): Source,
    ApiJson(req): ApiJson<AddDeviceRequest>,
) -> ApiResult<(StatusCode, Json<AddDeviceResponse>)> {
    let added = state.svc.add_device(&caller, req, origin).await?;
    Ok((StatusCode::CREATED, Json(added)))
}

#[utoipa::path(
    delete,
    path = "/v1/devices/{device_id}",
    operation_id = "removeDevice",
    summary = "Remove a device of the caller's account: revokes its credential, closes its socket, deletes its keys and mailbox.",
    params(
        ("device_id" = u32, Path, description = "A device number of the caller's account"),
    ),
    responses(
        (status = 204, description = "removed"),
        (status = 404, description = "not_found", body = ErrorBody),
        (status = 409, description = "conflict: the last device is removed only with the account", body = ErrorBody),
        (status = "default", description = "an error; `code` names it", body = ErrorBody),
    ),
)]
pub(super) async fn remove_device(
    State(state): State<AppState>,
    Authed(caller): Authed,
    Source(origin): Source,
    Path(device_id): Path<String>,
) -> ApiResult<StatusCode> {
    let device_id = device_id
        .parse()
        .map(DeviceId)
        .map_err(|_| ApiError::NotFound("device"))?;
    state.svc.remove_device(&caller, device_id, origin).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get,
    path = "/v1/users/{username}/devices",
    operation_id = "userDevices",
    summary = "A user's current devices (without names).",
    params(
        ("username" = String, Path, description = "A username: 3 to 32 of a-z, 0-9, `_`, `-`, `.`", pattern = r"^[a-z0-9_.-]{3,32}$"),
    ),
    responses(
        (status = 200, description = "OK", body = DeviceList),
        (status = 404, description = "not_found", body = ErrorBody),
        (status = "default", description = "an error; `code` names it", body = ErrorBody),
    ),
)]
pub(super) async fn user_devices(
    State(state): State<AppState>,
    Authed(_caller): Authed,
    Path(username): Path<String>,
) -> ApiResult<Json<DeviceList>> {
    Ok(Json(state.svc.user_devices(&username).await?))
}

#[utoipa::path(
    post,
    path = "/v1/users/{username}/bundles",
    operation_id = "claimBundles",
    summary = "Claim prekey bundles; each one-time key is handed out once. Rate-limited per requester and per target.",
    request_body = ClaimBundlesRequest,
    params(
        ("username" = String, Path, description = "A username: 3 to 32 of a-z, 0-9, `_`, `-`, `.`", pattern = r"^[a-z0-9_.-]{3,32}$"),
    ),
    responses(
        (status = 200, description = "OK", body = PrekeyBundles),
        (status = 404, description = "not_found", body = ErrorBody),
        (status = 429, description = "rate_limited", body = ErrorBody),
        (status = "default", description = "an error; `code` names it", body = ErrorBody),
    ),
)]
pub(super) async fn claim_bundles(
    State(state): State<AppState>,
    Authed(caller): Authed,
    Path(username): Path<String>,
    ApiJson(req): ApiJson<ClaimBundlesRequest>,
) -> ApiResult<Json<PrekeyBundles>> {
    Ok(Json(
        state.svc.claim_bundles(&caller, &username, req).await?,
    ))
}

#[utoipa::path(
    put,
    path = "/v1/keys",
    operation_id = "uploadKeys",
    summary = "Replace identity/signed/last-resort keys and add one-time prekeys.",
    request_body = UploadKeysRequest,
    responses(
        (status = 204, description = "stored"),
        (status = 409, description = "conflict: the device would hold more one-time prekeys than `limits.max_one_time_prekeys`", body = ErrorBody),
        (status = "default", description = "an error; `code` names it", body = ErrorBody),
    ),
)]
pub(super) async fn upload_keys(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiJson(req): ApiJson<UploadKeysRequest>,
) -> ApiResult<StatusCode> {
    state.svc.upload_keys(&caller, req).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get,
    path = "/v1/policy",
    operation_id = "policy",
    summary = "What the organisation asks every client to enforce (retention.disappearing_max_secs).",
    responses(
        (status = 200, description = "OK", body = tacit_api::Policy),
        (status = "default", description = "an error; `code` names it", body = ErrorBody),
    ),
)]
pub(super) async fn policy(
    State(state): State<AppState>,
    Authed(_caller): Authed,
) -> ApiResult<Json<tacit_api::Policy>> {
    Ok(Json(state.svc.policy()))
}

#[utoipa::path(
    get,
    path = "/v1/keys/count",
    operation_id = "prekeyCount",
    summary = "One-time prekeys left for the caller.",
    responses(
        (status = 200, description = "OK", body = PrekeyCount),
        (status = "default", description = "an error; `code` names it", body = ErrorBody),
    ),
)]
pub(super) async fn prekey_count(
    State(state): State<AppState>,
    Authed(caller): Authed,
) -> ApiResult<Json<PrekeyCount>> {
    Ok(Json(state.svc.prekey_count(&caller).await?))
}

#[utoipa::path(
    post,
    path = "/v1/messages",
    operation_id = "send",
    summary = "Send one ciphertext per recipient device and per other own device, in one transaction; idempotent by client_message_id.",
    request_body = SendMessageRequest,
    responses(
        (status = 200, description = "OK", body = SendMessageResponse),
        (status = 404, description = "not_found: no such user", body = ErrorBody),
        (status = 409, description = "device_mismatch: see `mismatch`", body = ErrorBody),
        (status = 507, description = "mailbox_full, storage_full", body = ErrorBody),
        (status = "default", description = "an error; `code` names it", body = ErrorBody),
    ),
)]
pub(super) async fn send(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiJson(req): ApiJson<SendMessageRequest>,
) -> ApiResult<Json<SendMessageResponse>> {
    Ok(Json(state.svc.send(&caller, req).await?))
}

#[utoipa::path(
    post,
    path = "/v1/multicast",
    operation_id = "multicast",
    summary = "One ciphertext for many devices (a group message): stored once, with one small envelope per device; every listed user's device set and the sender's other devices are checked as for a send.",
    request_body = MulticastRequest,
    responses(
        (status = 200, description = "OK", body = SendMessageResponse),
        (status = 404, description = "not_found: none of the users exists", body = ErrorBody),
        (status = 409, description = "device_mismatch: see `mismatch`", body = ErrorBody),
        (status = 507, description = "mailbox_full, storage_full", body = ErrorBody),
        (status = "default", description = "an error; `code` names it", body = ErrorBody),
    ),
)]
pub(super) async fn multicast(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiJson(req): ApiJson<MulticastRequest>,
) -> ApiResult<Json<SendMessageResponse>> {
    Ok(Json(state.svc.multicast(&caller, req).await?))
}

#[utoipa::path(
    get,
    path = "/v1/messages",
    operation_id = "fetch",
    summary = "The oldest envelopes of the caller's mailbox (for clients without a socket).",
    responses(
        (status = 200, description = "OK", body = EnvelopeBatch),
        (status = "default", description = "an error; `code` names it", body = ErrorBody),
    ),
)]
pub(super) async fn fetch(
    State(state): State<AppState>,
    Authed(caller): Authed,
) -> ApiResult<Json<EnvelopeBatch>> {
    Ok(Json(state.svc.fetch(&caller).await?))
}

#[utoipa::path(
    post,
    path = "/v1/messages/ack",
    operation_id = "ack",
    summary = "Delete delivered envelopes from the caller's mailbox.",
    request_body = AckRequest,
    responses(
        (status = 204, description = "deleted"),
        (status = "default", description = "an error; `code` names it", body = ErrorBody),
    ),
)]
pub(super) async fn ack(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiJson(req): ApiJson<AckRequest>,
) -> ApiResult<StatusCode> {
    state.svc.ack(caller.mailbox, &req.ids).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/v1/blobs",
    operation_id = "createBlob",
    summary = "Reserve a blob (an attachment the client encrypted) of an exact size against the account's quota. Refused over the per-file limit (blobs.max_file_bytes plus the encryption overhead: 17 bytes, and 16 per 64 KiB).",
    request_body = CreateBlobRequest,
    responses(
        (status = 201, description = "reserved", body = CreateBlobResponse),
        (status = 507, description = "quota_exceeded, storage_full", body = ErrorBody),
        (status = "default", description = "an error; `code` names it", body = ErrorBody),
    ),
)]
pub(super) async fn create_blob(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiJson(req): ApiJson<CreateBlobRequest>,
) -> ApiResult<(StatusCode, Json<CreateBlobResponse>)> {
    let created = state.svc.create_blob(&caller, req).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Pieces of a blob download read from disk at a time.
const DOWNLOAD_PIECE: usize = 64 * 1024;

fn upload_offset_header(offset: u64) -> [(HeaderName, HeaderValue); 2] {
    [
        (
            HeaderName::from_static(tacit_api::UPLOAD_OFFSET),
            HeaderValue::from(offset),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
    ]
}

/// A header as a decimal `u64`: `None` if absent, `BadRequest` if malformed.
fn u64_header(headers: &HeaderMap, name: &str) -> ApiResult<Option<u64>> {
    headers
        .get(name)
        .map(|value| {
            value
                .to_str()
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| ApiError::BadRequest(format!("{name}: a decimal byte count")))
        })
        .transpose()
}

#[utoipa::path(
    head,
    path = "/v1/blobs/{blob_id}",
    operation_id = "blobStatus",
    summary = "How much of an upload the server holds, to resume it (the uploading account only).",
    params(
        ("blob_id" = String, Path, description = "16 random bytes, unpadded base64url", pattern = r"^[A-Za-z0-9_-]{21}[AQgw]$"),
    ),
    responses(
        (status = 200, description = "the upload's state", headers(("Upload-Offset" = u64, description = "bytes stored so far"), ("Upload-Length" = u64, description = "the blob's size"))),
        (status = "default", description = "an error (no body: this is HEAD)"),
    ),
)]
pub(super) async fn blob_status(
    State(state): State<AppState>,
    Authed(caller): Authed,
    Path(blob_id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let status = state.svc.blob_status(&caller, &blob_id).await?;
    Ok((
        upload_offset_header(status.offset),
        [(
            HeaderName::from_static(tacit_api::UPLOAD_LENGTH),
            HeaderValue::from(status.length),
        )],
    ))
}

#[utoipa::path(
    patch,
    path = "/v1/blobs/{blob_id}",
    operation_id = "uploadBlob",
    summary = "Append raw bytes at Upload-Offset, which must be where the upload is (the uploading account only). The body streams to disk; what arrives before an interruption is kept. The last byte makes the blob complete (fsynced, then renamed).",
    request_body(content = RawBytes, content_type = "application/offset+octet-stream"),
    params(
        ("blob_id" = String, Path, description = "16 random bytes, unpadded base64url", pattern = r"^[A-Za-z0-9_-]{21}[AQgw]$"),
        ("Upload-Offset" = u64, Header, description = "where these bytes start: the upload's current offset"),
    ),
    responses(
        (status = 204, description = "stored", headers(("Upload-Offset" = u64, description = "the new offset"))),
        (status = 404, description = "not_found", body = ErrorBody),
        (status = 409, description = "conflict: a wrong offset (the current one is in Upload-Offset), or another request is writing this blob", body = ErrorBody),
        (status = 413, description = "payload_too_large: more bytes than the blob has left", body = ErrorBody),
        (status = "default", description = "an error; `code` names it", body = ErrorBody),
    ),
)]
pub(super) async fn upload_blob(
    State(state): State<AppState>,
    Authed(caller): Authed,
    Path(blob_id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<impl IntoResponse> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::trim);
    if !content_type.is_some_and(|t| t.eq_ignore_ascii_case(tacit_api::BLOB_UPLOAD_CONTENT_TYPE)) {
        return Err(ApiError::UnsupportedMediaType(
            tacit_api::BLOB_UPLOAD_CONTENT_TYPE,
        ));
    }
    let offset = u64_header(&headers, tacit_api::UPLOAD_OFFSET)?.ok_or_else(|| {
        ApiError::BadRequest(format!("{} header required", tacit_api::UPLOAD_OFFSET))
    })?;
    let declared = u64_header(&headers, header::CONTENT_LENGTH.as_str())?;
    let offset = state
        .svc
        .upload_blob(&caller, &blob_id, offset, declared, body.into_data_stream())
        .await?;
    Ok((StatusCode::NO_CONTENT, upload_offset_header(offset)))
}

/// `Range: bytes=N-` or `bytes=N-M`; any other form is ignored (the whole blob is sent), as
/// HTTP allows.
fn byte_range(headers: &HeaderMap) -> Option<(u64, Option<u64>)> {
    let spec = headers
        .get(header::RANGE)?
        .to_str()
        .ok()?
        .trim()
        .strip_prefix("bytes=")?;
    let (start, end) = spec.split_once('-')?;
    let start = start.trim().parse().ok()?;
    let end = end.trim();
    if end.is_empty() {
        Some((start, None))
    } else {
        Some((start, Some(end.parse().ok()?)))
    }
}

#[utoipa::path(
    get,
    path = "/v1/blobs/{blob_id}",
    operation_id = "downloadBlob",
    summary = "Stream a complete blob to any authenticated device (the id is the capability). `Range: bytes=N-` (or `bytes=N-M`) resumes a download; other range forms are ignored.",
    params(
        ("blob_id" = String, Path, description = "16 random bytes, unpadded base64url", pattern = r"^[A-Za-z0-9_-]{21}[AQgw]$"),
        ("Range" = Option<String>, Header, description = "`bytes=N-` or `bytes=N-M`; other forms are ignored"),
    ),
    responses(
        (status = 200, description = "the whole blob", body = RawBytes, content_type = "application/octet-stream"),
        (status = 206, description = "the requested range", body = RawBytes, content_type = "application/octet-stream", headers(("Content-Range" = String, description = "bytes N-M/size"))),
        (status = 404, description = "not_found (unknown, incomplete or expired)", body = ErrorBody),
        (status = 416, description = "range_not_satisfiable", body = ErrorBody),
        (status = "default", description = "an error; `code` names it", body = ErrorBody),
    ),
)]
pub(super) async fn download_blob(
    State(state): State<AppState>,
    Authed(_caller): Authed,
    Path(blob_id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let range = byte_range(&headers);
    let (start, end) = range.unwrap_or((0, None));
    let read = state.svc.open_blob(&blob_id, start, end).await?;
    let stream =
        tokio_util::io::ReaderStream::with_capacity(read.file.take(read.len), DOWNLOAD_PIECE);
    let mut response = Response::new(Body::from_stream(stream));
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(read.len));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if range.is_some() {
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
        let last = read.start + read.len - 1;
        let value = format!("bytes {}-{last}/{}", read.start, read.size);
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(header::CONTENT_RANGE, value);
        }
    }
    Ok(response)
}

#[utoipa::path(
    delete,
    path = "/v1/blobs/{blob_id}",
    operation_id = "deleteBlob",
    summary = "Delete a blob, complete or not (the uploading account only).",
    params(
        ("blob_id" = String, Path, description = "16 random bytes, unpadded base64url", pattern = r"^[A-Za-z0-9_-]{21}[AQgw]$"),
    ),
    responses(
        (status = 204, description = "deleted"),
        (status = 404, description = "not_found", body = ErrorBody),
        (status = 409, description = "conflict: an upload of this blob is in progress", body = ErrorBody),
        (status = "default", description = "an error; `code` names it", body = ErrorBody),
    ),
)]
pub(super) async fn delete_blob(
    State(state): State<AppState>,
    Authed(caller): Authed,
    Path(blob_id): Path<String>,
) -> ApiResult<StatusCode> {
    state.svc.delete_blob(&caller, &blob_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "healthz",
    summary = "Liveness: the process answers.",
    responses(
        (status = 200, description = "ok", body = String, content_type = "text/plain"),
        (status = "default", description = "an error; `code` names it", body = ErrorBody),
    ),
    security(()),
)]
pub(super) async fn healthz() -> &'static str {
    "ok\n"
}

#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    summary = "Readiness: the database answers and the server is not shutting down.",
    responses(
        (status = 200, description = "ready", body = String, content_type = "text/plain"),
        (status = 503, description = "unavailable", body = ErrorBody),
        (status = "default", description = "an error; `code` names it", body = ErrorBody),
    ),
    security(()),
)]
pub(super) async fn readyz(State(state): State<AppState>) -> ApiResult<&'static str> {
    if *state.shutdown.borrow() {
        return Err(ApiError::Unavailable);
    }
    if !state.svc.ready().await {
        return Err(ApiError::Unavailable);
    }
    Ok("ready\n")
}

/// `/metrics` on the public listener: only for a scraper with `metrics.token`, else 404
/// (the public listener shows strangers no figures).
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    summary = "Prometheus metrics: requests, latency, sockets, connections, write failures, readiness, mailbox depth, prekey stock, certificate expiry, disk space, process CPU, memory and file descriptors. On the public listener only with `Authorization: Bearer <metrics.token>`; or on the separate `metrics.listen` listener.",
    responses(
        (status = 200, description = "OpenMetrics text exposition format", body = String, content_type = "application/openmetrics-text"),
        (status = 404, description = "no `metrics.token` is configured, or the scraper did not present it", body = ErrorBody),
        (status = "default", description = "an error; `code` names it", body = ErrorBody),
    ),
    security(()),
)]
pub(super) async fn metrics(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
) -> Result<axum::response::Response, ApiError> {
    let Some(token) = &state.svc.config.metrics.token else {
        return Err(ApiError::NotFound("metrics"));
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if !bool::from(subtle::ConstantTimeEq::ct_eq(
        presented.as_bytes(),
        token.expose().as_bytes(),
    )) {
        return Err(ApiError::NotFound("metrics"));
    }
    Ok(render_metrics(&state.svc).await.into_response())
}

/// The metrics text; the store's totals are cached for a few seconds, so a scrape costs
/// no table scan when scrapes come often.
pub(super) async fn render_metrics(svc: &crate::service::Services) -> impl IntoResponse + use<> {
    let (stats, ops) = tokio::join!(svc.cached_stats(), svc.operations());
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        svc.metrics.render(stats, &ops),
    )
}

#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi",
    summary = "This document.",
    responses(
        (status = 200, description = "OpenAPI 3.1", body = AnyObject),
        (status = "default", description = "an error; `code` names it", body = ErrorBody),
    ),
    security(()),
)]
pub(super) async fn openapi(
    axum::Extension(doc): axum::Extension<axum::body::Bytes>,
) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        // Made once per router; a clone is a reference count, not a copy.
        doc,
    )
}
