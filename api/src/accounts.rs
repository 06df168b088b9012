//! Accounts and devices: registration, adding a device, device lists.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{Bytes, DeviceCredential, DeviceId, DeviceKeys, Timestamp};

/// `POST /v1/accounts`: create an account and its first device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// 3 to 32 characters of `a-z`, `0-9`, `_`, `-`, `.`; unique on the server.
    #[schema(pattern = r"^[a-z0-9_.-]{3,32}$")]
    pub username: String,
    /// A registration invite, required unless the server has open registration or the
    /// request carries an `id_token` instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 128)]
    pub invite: Option<String>,
    /// An OpenID Connect ID token from the server's configured identity provider (see
    /// [`OidcConfig`]), instead of an invite. `username` must equal the name the server
    /// derives from the token's username claim. A token registers at most once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 16384)]
    pub id_token: Option<String>,
    /// A label for the device, only for its owner (at most 64 bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = r"^[^\x00-\x1f\x7f-\x9f]{0,64}$", max_length = 64)]
    pub device_name: Option<String>,
    /// The first device's public keys.
    pub keys: DeviceKeys,
}

/// The answer to a registration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RegisterResponse {
    /// The first device's number (always 1).
    pub device_id: DeviceId,
    /// The first device's credential. The server keeps only a hash of it and never shows it
    /// again.
    pub credential: DeviceCredential,
}

/// `POST /v1/devices`: an existing device of the account adds another device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddDeviceRequest {
    /// A label for the device, only for its owner (at most 64 bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = r"^[^\x00-\x1f\x7f-\x9f]{0,64}$", max_length = 64)]
    pub device_name: Option<String>,
    /// The new device's public keys.
    pub keys: DeviceKeys,
}

/// `POST /v1/devices/sso` (no credential): sign a new device in to the account bound to the
/// ID token's identity (`iss`, `sub`) at the configured identity provider.
///
/// No existing device takes part, so the new device cannot receive the account identity:
/// it brings an identity key of its own, which becomes the account's. Because every device
/// of an account must carry the account identity, the account's other devices are removed
/// in the same transaction (credentials revoked, sockets closed, keys and waiting messages
/// deleted): this is account recovery onto a new machine, and needs `replace_devices:
/// true`. Without it the server answers `409 conflict` and changes nothing (the token stays
/// unused). Adding a device while keeping the others is linking (`POST /v1/devices/link`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SsoDeviceRequest {
    /// An OpenID Connect ID token from the server's identity provider; usable once.
    #[schema(max_length = 16384)]
    pub id_token: String,
    /// A label for the device, only for its owner (at most 64 bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = r"^[^\x00-\x1f\x7f-\x9f]{0,64}$", max_length = 64)]
    pub device_name: Option<String>,
    /// The new device's public keys.
    pub keys: DeviceKeys,
    /// Consent to remove the account's other devices (see above). Default `false`.
    #[serde(default)]
    pub replace_devices: bool,
}

/// The answer to `POST /v1/devices/sso`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SsoDeviceResponse {
    /// The account the identity is bound to.
    pub username: String,
    /// The new device's number.
    pub device_id: DeviceId,
    /// The new device's credential, shown only this once.
    pub credential: DeviceCredential,
    /// The devices that were removed (the account's devices before this one).
    #[serde(default)]
    pub replaced_devices: Vec<DeviceId>,
}

/// `GET /v1/oidc/config` (no credential): how a client signs in with the server's identity
/// provider. `404 not_found` when the server has no identity provider configured.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OidcConfig {
    /// The provider's issuer URL; discovery is at
    /// `{issuer}/.well-known/openid-configuration`.
    pub issuer: String,
    /// The public OAuth client the CLI uses (device grant, or code flow with PKCE).
    pub client_id: String,
    /// The scopes to ask for (`openid` first).
    pub scopes: Vec<String>,
    /// The ID token claim that becomes the username (`preferred_username`, `email`,
    /// `upn`...). Its value is normalised: surrounding white space trimmed, lower-cased, and
    /// an `@domain` suffix removed when the domain is one of `allowed_domains`; the result
    /// must then be a valid username, or the server refuses the token (never a silent
    /// rewrite). A client computes the name the same way to fill
    /// [`RegisterRequest::username`]; the server checks it.
    pub username_claim: String,
    /// The e-mail domains whose `@domain` suffix is removed from the username claim.
    pub allowed_domains: Vec<String>,
    /// Whether registration with an invite is still open besides the identity provider.
    pub invites: bool,
}

/// The answer to adding a device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AddDeviceResponse {
    /// The new device's number.
    pub device_id: DeviceId,
    /// The new device's credential, shown only this once.
    pub credential: DeviceCredential,
}

/// A device as others (or its owner) see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DeviceInfo {
    /// The device's number.
    pub device_id: DeviceId,
    /// The label, only shown to the account's own devices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// When the device was added.
    pub created_at: Timestamp,
    /// The device's public identity key, so that a sender notices a changed key before it
    /// encrypts with an old session.
    pub identity_key: Bytes,
}

/// The current devices of a user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DeviceList {
    /// The user.
    pub username: String,
    /// The devices, in device order.
    pub devices: Vec<DeviceInfo>,
}
