//! Wire types of the Tacit relay server, shared by the server and its clients (the SDK).
//!
//! Every request and response body is JSON. Byte strings (public keys, signatures,
//! ciphertexts) travel as standard base64 with padding, through [`Bytes`]. The server treats
//! all of them as opaque: it never parses a key or a ciphertext, so these types carry no
//! cryptographic meaning beyond their names.
//!
//! # Endpoints
//!
//! | method and path | request | response |
//! |---|---|---|
//! | `POST /v1/accounts` | [`RegisterRequest`] | `201` [`RegisterResponse`] |
//! | `DELETE /v1/accounts/me` | - | `204` (the caller's whole account) |
//! | `GET /v1/devices` | - | [`DeviceList`] (the caller's own devices) |
//! | `POST /v1/devices` | [`AddDeviceRequest`] | `201` [`AddDeviceResponse`] |
//! | `DELETE /v1/devices/{device_id}` | - | `204` |
//! | `POST /v1/devices/link` | [`LinkDeviceRequest`] (no credential) | `201` [`AddDeviceResponse`] |
//! | `POST /v1/devices/sso` | [`SsoDeviceRequest`] (no credential; an ID token) | `201` [`SsoDeviceResponse`] |
//! | `GET /v1/policy` | - | [`Policy`] (what the organisation asks clients to enforce) |
//! | `GET /v1/oidc/config` | - (no credential) | [`OidcConfig`] (`404` without an identity provider) |
//! | `POST /v1/oidc/backchannel-logout` | form `logout_token` (OpenID Connect Back-Channel Logout 1.0) | `200` |
//! | `GET`, `POST /scim/v2/Users`; `GET`, `PUT`, `PATCH`, `DELETE /scim/v2/Users/{id}` | SCIM 2.0 (RFC 7644; the IdP's bearer token) | `application/scim+json` |
//! | `POST /v1/provisioning` | [`OpenChannelRequest`] (no credential) | `201` [`OpenChannelResponse`] |
//! | `GET /v1/provisioning/{channel}` | - (no credential) | [`ChannelState`] |
//! | `PUT /v1/provisioning/{channel}` | [`AnswerChannelRequest`] | `204` |
//! | `GET /v1/users/{username}/devices` | - | [`DeviceList`] |
//! | `PUT /v1/keys` | [`UploadKeysRequest`] | `204` |
//! | `GET /v1/keys/count` | - | [`PrekeyCount`] |
//! | `POST /v1/users/{username}/bundles` | [`ClaimBundlesRequest`] | [`PrekeyBundles`] |
//! | `POST /v1/messages` | [`SendMessageRequest`] | [`SendMessageResponse`] |
//! | `POST /v1/multicast` | [`MulticastRequest`] | [`SendMessageResponse`] |
//! | `GET /v1/messages` | - | [`EnvelopeBatch`] (poll without a socket) |
//! | `POST /v1/messages/ack` | [`AckRequest`] | `204` |
//! | `GET /v1/ws` | WebSocket: [`ClientFrame`] | WebSocket: [`ServerFrame`] |
//! | `POST /v1/blobs` | [`CreateBlobRequest`] | `201` [`CreateBlobResponse`] |
//! | `HEAD /v1/blobs/{blob_id}` | - | `200` with [`UPLOAD_OFFSET`] and [`UPLOAD_LENGTH`] (uploader only) |
//! | `PATCH /v1/blobs/{blob_id}` | raw bytes ([`BLOB_UPLOAD_CONTENT_TYPE`]) at [`UPLOAD_OFFSET`] | `204` with the new [`UPLOAD_OFFSET`] (uploader only) |
//! | `GET /v1/blobs/{blob_id}` | optional `Range: bytes=N-` | `200` or `206`: the complete blob's bytes |
//! | `DELETE /v1/blobs/{blob_id}` | - | `204` (uploader only) |
//! | `GET /v1/admin/users?search=&after=&limit=` | - (admin) | [`AdminUserList`] |
//! | `GET /v1/admin/users/{username}` | - (admin) | [`AdminUser`] |
//! | `DELETE /v1/admin/users/{username}` | - (admin) | `204` (the account is deleted; the name is free again) |
//! | `POST /v1/admin/users/{username}/disable`, `/enable` | - (admin) | `204` |
//! | `DELETE /v1/admin/users/{username}/devices/{device_id}` | - (admin) | `204` |
//! | `PUT`, `DELETE /v1/admin/users/{username}/roles/{role}` | - (admin) | `204` |
//! | `PUT /v1/admin/users/{username}/quota` | [`SetQuotaRequest`] (admin) | `204` |
//! | `GET /v1/admin/invites` | - (admin) | [`InviteList`] |
//! | `POST /v1/admin/invites` | [`CreateInviteRequest`] (admin) | `201` [`CreateInviteResponse`] |
//! | `DELETE /v1/admin/invites/{id}` | - (admin) | `204` |
//! | `GET /v1/admin/audit?after=&limit=` | - (auditor or admin) | [`AuditPage`] |
//! | `GET /healthz`, `/readyz`, `/metrics`, `/openapi.json` | - | operations |
//!
//! Every authenticated request carries `Authorization: Bearer <credential>`, where the
//! credential is the string form of [`DeviceCredential`] returned at registration or when a
//! device is added. Every error answers with an [`ErrorBody`] whose `code` is one of
//! [`ErrorCode`].
//!
//! The types live in one private module per concern (`primitives`, `credential`, `keys`,
//! `accounts`, `admin`, `policy`, `provisioning`, `messages`, `blobs`, `ws`, `errors`), all re-exported here.

mod accounts;
mod admin;
mod blobs;
mod credential;
mod errors;
mod keys;
mod messages;
mod policy;
mod primitives;
mod provisioning;
mod whole;
mod ws;

pub use accounts::{
    AddDeviceRequest, AddDeviceResponse, DeviceInfo, DeviceList, OidcConfig, RegisterRequest,
    RegisterResponse, SsoDeviceRequest, SsoDeviceResponse,
};
pub use admin::{
    AdminDevice, AdminUser, AdminUserList, AuditPage, CreateInviteRequest, CreateInviteResponse,
    InviteInfo, InviteList, Role, SetQuotaRequest,
};
pub use blobs::{
    BLOB_UPLOAD_CONTENT_TYPE, CreateBlobRequest, CreateBlobResponse, UPLOAD_LENGTH, UPLOAD_OFFSET,
    blob_size,
};
pub use credential::{AUTHORIZATION_SCHEME, DeviceCredential, MalformedCredential};
pub use errors::{ErrorBody, ErrorCode};
pub use keys::{
    ClaimBundlesRequest, DeviceKeys, OneTimePrekey, PREKEY_LOW_WATER, PrekeyBundle, PrekeyBundles,
    PrekeyCount, SignedPrekey, UploadKeysRequest,
};
pub use messages::{
    AckRequest, DeviceAddress, DeviceCiphertext, DeviceMismatch, Envelope, EnvelopeBatch,
    EnvelopeIdSchema, MulticastRecipient, MulticastRequest, SendMessageRequest,
    SendMessageResponse,
};
pub use policy::{DISAPPEARING_POLICY_FLOOR_SECS, Policy};
pub use primitives::{
    BASE64_PATTERN, Bytes, Ciphertext, DeviceId, Timestamp, USERNAME_RULE, is_username,
    username_from_claim,
};
pub use provisioning::{
    AnswerChannelRequest, ChannelState, LinkDeviceRequest, OpenChannelRequest, OpenChannelResponse,
};
pub use ws::{
    CLOSE_CODE_REPLACED, CLOSE_CODE_REVOKED, CLOSE_CODE_SHUTDOWN, ClientFrame, ServerFrame,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_refuse_unknown_fields_and_take_whole_floats() {
        let ack: AckRequest = serde_json::from_str(r#"{"ids": [1, 2.0]}"#).unwrap();
        assert_eq!(ack.ids, vec![1, 2]);
        assert!(serde_json::from_str::<AckRequest>(r#"{"ids": [1], "extra": 1}"#).is_err());
        assert!(serde_json::from_str::<AckRequest>(r#"{"ids": [1.5]}"#).is_err());
        let d: DeviceAddress =
            serde_json::from_str(r#"{"username": "bob", "device_id": 3.0}"#).unwrap();
        assert_eq!(d.device_id, DeviceId(3));
        assert!(serde_json::from_str::<DeviceId>("4294967296").is_err());
        let blob: CreateBlobRequest = serde_json::from_str(r#"{"size": 1e3}"#).unwrap();
        assert_eq!(blob.size, 1000);
    }
}
