//! Handlers: extract, call one service, answer. No rule and no SQL here.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tacit_api::{
    AckRequest, AddDeviceRequest, AddDeviceResponse, AnswerChannelRequest, ChannelState,
    ClaimBundlesRequest, CreateBlobRequest, CreateBlobResponse, DeviceId, DeviceList,
    EnvelopeBatch, LinkDeviceRequest, MulticastRequest, OpenChannelRequest, OpenChannelResponse,
    PrekeyBundles, PrekeyCount, RegisterRequest, RegisterResponse, SendMessageRequest,
    SendMessageResponse, UploadKeysRequest,
};
use tokio::io::AsyncReadExt as _;

use super::{ApiJson, AppState, Authed};
use crate::error::ApiError;

/// The OpenAPI document, kept next to the code and checked against the route table by a
/// test.
pub(super) const OPENAPI: &str = include_str!("../../openapi.json");

type ApiResult<T> = Result<T, ApiError>;

pub(super) async fn register(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> ApiResult<(StatusCode, Json<RegisterResponse>)> {
    let created = state.svc.register(req).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

pub(super) async fn delete_account(
    State(state): State<AppState>,
    Authed(caller): Authed,
) -> ApiResult<StatusCode> {
    // Its own task: a client that goes away (or a request timeout) must not cut a
    // deletion off between its steps.
    let svc = state.svc.clone();
    tokio::spawn(async move { svc.delete_account(&caller).await })
        .await
        .map_err(|_| ApiError::Unavailable)??;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn link_device(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<LinkDeviceRequest>,
) -> ApiResult<(StatusCode, Json<AddDeviceResponse>)> {
    let added = state.svc.link_device(req).await?;
    Ok((StatusCode::CREATED, Json(added)))
}

pub(super) async fn open_channel(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<OpenChannelRequest>,
) -> ApiResult<(StatusCode, Json<OpenChannelResponse>)> {
    let opened = state.svc.open_channel(req).await?;
    Ok((StatusCode::CREATED, Json(opened)))
}

pub(super) async fn channel_state(
    State(state): State<AppState>,
    Path(channel): Path<String>,
) -> ApiResult<Json<ChannelState>> {
    Ok(Json(state.svc.channel_state(&channel).await?))
}

pub(super) async fn answer_channel(
    State(state): State<AppState>,
    Authed(caller): Authed,
    Path(channel): Path<String>,
    ApiJson(req): ApiJson<AnswerChannelRequest>,
) -> ApiResult<StatusCode> {
    state.svc.answer_channel(&caller, &channel, req).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn own_devices(
    State(state): State<AppState>,
    Authed(caller): Authed,
) -> ApiResult<Json<DeviceList>> {
    Ok(Json(state.svc.own_devices(&caller).await?))
}

pub(super) async fn add_device(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiJson(req): ApiJson<AddDeviceRequest>,
) -> ApiResult<(StatusCode, Json<AddDeviceResponse>)> {
    let added = state.svc.add_device(&caller, req).await?;
    Ok((StatusCode::CREATED, Json(added)))
}

pub(super) async fn remove_device(
    State(state): State<AppState>,
    Authed(caller): Authed,
    Path(device_id): Path<String>,
) -> ApiResult<StatusCode> {
    let device_id = device_id
        .parse()
        .map(DeviceId)
        .map_err(|_| ApiError::NotFound("device"))?;
    state.svc.remove_device(&caller, device_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn user_devices(
    State(state): State<AppState>,
    Authed(_caller): Authed,
    Path(username): Path<String>,
) -> ApiResult<Json<DeviceList>> {
    Ok(Json(state.svc.user_devices(&username).await?))
}

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

pub(super) async fn upload_keys(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiJson(req): ApiJson<UploadKeysRequest>,
) -> ApiResult<StatusCode> {
    state.svc.upload_keys(&caller, req).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn prekey_count(
    State(state): State<AppState>,
    Authed(caller): Authed,
) -> ApiResult<Json<PrekeyCount>> {
    Ok(Json(state.svc.prekey_count(&caller).await?))
}

pub(super) async fn send(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiJson(req): ApiJson<SendMessageRequest>,
) -> ApiResult<Json<SendMessageResponse>> {
    Ok(Json(state.svc.send(&caller, req).await?))
}

pub(super) async fn multicast(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiJson(req): ApiJson<MulticastRequest>,
) -> ApiResult<Json<SendMessageResponse>> {
    Ok(Json(state.svc.multicast(&caller, req).await?))
}

pub(super) async fn fetch(
    State(state): State<AppState>,
    Authed(caller): Authed,
) -> ApiResult<Json<EnvelopeBatch>> {
    Ok(Json(state.svc.fetch(&caller).await?))
}

pub(super) async fn ack(
    State(state): State<AppState>,
    Authed(caller): Authed,
    ApiJson(req): ApiJson<AckRequest>,
) -> ApiResult<StatusCode> {
    state.svc.ack(caller.mailbox, &req.ids).await?;
    Ok(StatusCode::NO_CONTENT)
}

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

pub(super) async fn delete_blob(
    State(state): State<AppState>,
    Authed(caller): Authed,
    Path(blob_id): Path<String>,
) -> ApiResult<StatusCode> {
    state.svc.delete_blob(&caller, &blob_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn healthz() -> &'static str {
    "ok\n"
}

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
    let stats = svc.cached_stats().await;
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        svc.metrics.render(stats),
    )
}

pub(super) async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}
