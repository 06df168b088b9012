//! Handlers: extract, call one service, answer. No rule and no SQL here.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use tacit_api::{
    AckRequest, AddDeviceRequest, AddDeviceResponse, AnswerChannelRequest, ChannelState,
    ClaimBundlesRequest, DeviceId, DeviceList, EnvelopeBatch, LinkDeviceRequest, MulticastRequest,
    OpenChannelRequest, OpenChannelResponse, PrekeyBundles, PrekeyCount, RegisterRequest,
    RegisterResponse, SendMessageRequest, SendMessageResponse, UploadKeysRequest,
};

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
    state.svc.delete_account(&caller).await?;
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

pub(super) async fn healthz() -> &'static str {
    "ok\n"
}

pub(super) async fn readyz(State(state): State<AppState>) -> ApiResult<&'static str> {
    if *state.shutdown.borrow() {
        return Err(ApiError::Unavailable);
    }
    state
        .svc
        .store
        .ping()
        .await
        .map_err(|_| ApiError::Unavailable)?;
    Ok("ready\n")
}

pub(super) async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let stats = state.svc.store.stats().await.ok();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.svc.metrics.render(stats),
    )
}

pub(super) async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}
