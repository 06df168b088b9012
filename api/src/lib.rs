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
//! | `GET /healthz`, `/readyz`, `/metrics`, `/openapi.json` | - | operations |
//!
//! Every authenticated request carries `Authorization: Bearer <credential>`, where the
//! credential is the string form of [`DeviceCredential`] returned at registration or when a
//! device is added. Every error answers with an [`ErrorBody`] whose `code` is one of
//! [`ErrorCode`].

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaFormat, Type};
use utoipa::openapi::{KnownFormat, RefOr};
use utoipa::{PartialSchema, ToSchema};

mod whole;

/// The pattern of a canonical standard base64 string with padding (the only spelling
/// [`Bytes`] accepts: trailing bits must be zero).
pub const BASE64_PATTERN: &str =
    r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=|[A-Za-z0-9+/][AQgw]==)?$";

/// The header that carries a device credential: `Authorization: Bearer <credential>`.
pub const AUTHORIZATION_SCHEME: &str = "Bearer";

/// Close code the server sends on a WebSocket that a newer connection of the same device
/// replaced.
pub const CLOSE_CODE_REPLACED: u16 = 4000;
/// Close code the server sends when the device was removed while connected.
pub const CLOSE_CODE_REVOKED: u16 = 4001;
/// Close code the server sends when it shuts down.
pub const CLOSE_CODE_SHUTDOWN: u16 = 1001;

// ---------------------------------------------------------------------------------------
// Primitive types
// ---------------------------------------------------------------------------------------

/// An opaque byte string, base64 (standard alphabet, padded) on the wire.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Bytes(pub Vec<u8>);

impl Bytes {
    /// The raw bytes.
    #[must_use]
    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }

    /// Length in bytes (not in base64 characters).
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the byte string is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Any byte string; fields that take a bounded one say so where they are declared.
impl PartialSchema for Bytes {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .content_encoding("base64")
            .pattern(Some(BASE64_PATTERN))
            .description(Some("Bytes in standard base64 with padding."))
            .into()
    }
}

impl ToSchema for Bytes {}

impl From<Vec<u8>> for Bytes {
    fn from(v: Vec<u8>) -> Self {
        Self(v)
    }
}

/// Prints only the length, so that a stray `{:?}` never logs key material or ciphertext.
impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bytes({} bytes)", self.0.len())
    }
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Bytes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a base64 string (standard alphabet, padded)")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Bytes, E> {
                STANDARD
                    .decode(v)
                    .map(Bytes)
                    .map_err(|_| E::custom("invalid base64"))
            }
        }
        d.deserialize_str(Visitor)
    }
}

/// An end-to-end encrypted message for one device. The server stores and forwards it
/// without ever looking inside.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct Ciphertext(pub Bytes);

impl fmt::Debug for Ciphertext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ciphertext({} bytes)", self.0.len())
    }
}

impl PartialSchema for Ciphertext {
    fn schema() -> RefOr<Schema> {
        Bytes::schema()
    }
}

impl ToSchema for Ciphertext {}

/// A device number, unique within one account and never reused after a device is removed
/// (so that a ciphertext made for a removed device can never reach a new one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct DeviceId(pub u32);

impl<'de> Deserialize<'de> for DeviceId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        whole::deserialize(d).map(Self)
    }
}

impl PartialSchema for DeviceId {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
            .minimum(Some(0))
            .maximum(Some(u32::MAX))
            .into()
    }
}

impl ToSchema for DeviceId {}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Milliseconds since the Unix epoch, as assigned by the server.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

/// The secret a device presents on every request and on its WebSocket.
///
/// Its string form is `<account>.<device>.<secret>` where the secret is 32 random bytes in
/// unpadded base64url. The server keeps only a SHA-256 hash of the secret and compares it in
/// constant time. `Debug` never prints the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct DeviceCredential {
    /// The server's number for the account (not secret).
    pub account: i64,
    /// The device within the account (not secret).
    pub device: DeviceId,
    /// The 32 secret bytes.
    pub secret: [u8; 32],
}

impl fmt::Debug for DeviceCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            account,
            device,
            secret: _,
        } = self;
        f.debug_struct("DeviceCredential")
            .field("account", account)
            .field("device", device)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for DeviceCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{}.{}",
            self.account,
            self.device,
            URL_SAFE_NO_PAD.encode(self.secret)
        )
    }
}

impl PartialSchema for DeviceCredential {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(
                r"^-?[0-9]+\.[0-9]+\.[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]$",
            ))
            .description(Some(
                "`<account>.<device>.<secret>`: the secret is 32 bytes in unpadded base64url.",
            ))
            .into()
    }
}

impl ToSchema for DeviceCredential {}

/// Why a credential string could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MalformedCredential;

impl fmt::Display for MalformedCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("malformed device credential")
    }
}

impl std::error::Error for MalformedCredential {}

impl FromStr for DeviceCredential {
    type Err = MalformedCredential;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.split('.');
        let (Some(account), Some(device), Some(secret), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(MalformedCredential);
        };
        let account = account.parse().map_err(|_| MalformedCredential)?;
        let device = DeviceId(device.parse().map_err(|_| MalformedCredential)?);
        let bytes = URL_SAFE_NO_PAD
            .decode(secret)
            .map_err(|_| MalformedCredential)?;
        let secret = bytes.try_into().map_err(|_| MalformedCredential)?;
        Ok(Self {
            account,
            device,
            secret,
        })
    }
}

impl Serialize for DeviceCredential {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DeviceCredential {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

// ---------------------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------------------

/// A public prekey signed by the device's identity key (the signed X25519 prekey, or an
/// ML-KEM prekey). The server stores it as given and verifies nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignedPrekey {
    /// The client's identifier for the key, echoed back in bundles.
    #[serde(deserialize_with = "whole::deserialize")]
    #[schema(format = Int64, minimum = 0, maximum = 4_294_967_295_u32)]
    pub id: u32,
    /// The public key, opaque to the server.
    #[schema(value_type = String, pattern = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=|[A-Za-z0-9+/][AQgw]==)?$", min_length = 4, max_length = 5460)]
    pub public_key: Bytes,
    /// The identity key's signature over the public key, opaque to the server.
    #[schema(value_type = String, pattern = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=|[A-Za-z0-9+/][AQgw]==)?$", min_length = 4, max_length = 5460)]
    pub signature: Bytes,
}

/// A one-time X25519 public prekey. Tacit signs these too (the signature names the key's
/// kind), so a server cannot substitute one of its own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OneTimePrekey {
    /// The client's identifier for the key, echoed back in bundles.
    #[serde(deserialize_with = "whole::deserialize")]
    #[schema(format = Int64, minimum = 0, maximum = 4_294_967_295_u32)]
    pub id: u32,
    /// The public key, opaque to the server.
    #[schema(value_type = String, pattern = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=|[A-Za-z0-9+/][AQgw]==)?$", min_length = 4, max_length = 5460)]
    pub public_key: Bytes,
    /// The identity's signature over the key, opaque to the server.
    #[schema(value_type = String, pattern = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=|[A-Za-z0-9+/][AQgw]==)?$", min_length = 4, max_length = 5460)]
    pub signature: Bytes,
}

/// The complete public key set of a device, given when the device is created.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceKeys {
    /// The device's long-term public identity key (opaque to the server).
    #[schema(value_type = String, pattern = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=|[A-Za-z0-9+/][AQgw]==)?$", min_length = 4, max_length = 5460)]
    pub identity_key: Bytes,
    /// The current signed X25519 prekey.
    pub signed_prekey: SignedPrekey,
    /// The ML-KEM last-resort prekey, handed out when no one-time KEM prekey is left.
    pub kem_last_resort_prekey: SignedPrekey,
    /// A first batch of one-time X25519 prekeys (at most the server's per-upload cap).
    #[serde(default)]
    #[schema(max_items = 200)]
    pub one_time_prekeys: Vec<OneTimePrekey>,
    /// A first batch of one-time ML-KEM prekeys (at most the server's per-upload cap).
    #[serde(default)]
    #[schema(max_items = 200)]
    pub one_time_kem_prekeys: Vec<SignedPrekey>,
}

/// `PUT /v1/keys`: replace some of the calling device's keys and add one-time prekeys.
///
/// Absent fields are left as they are. One-time prekeys are added to the stock; an id that
/// is already in the stock replaces that key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UploadKeysRequest {
    /// A new identity key (a device normally never changes it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, pattern = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=|[A-Za-z0-9+/][AQgw]==)?$", min_length = 4, max_length = 5460)]
    pub identity_key: Option<Bytes>,
    /// A new signed X25519 prekey.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_prekey: Option<SignedPrekey>,
    /// A new ML-KEM last-resort prekey.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kem_last_resort_prekey: Option<SignedPrekey>,
    /// One-time X25519 prekeys to add.
    #[serde(default)]
    #[schema(max_items = 200)]
    pub one_time_prekeys: Vec<OneTimePrekey>,
    /// One-time ML-KEM prekeys to add.
    #[serde(default)]
    #[schema(max_items = 200)]
    pub one_time_kem_prekeys: Vec<SignedPrekey>,
}

/// `GET /v1/keys/count`: how many one-time prekeys of the calling device are left, so that
/// the client knows when to upload more.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PrekeyCount {
    /// One-time X25519 prekeys left.
    pub one_time_prekeys: u64,
    /// One-time ML-KEM prekeys left.
    pub one_time_kem_prekeys: u64,
}

/// `POST /v1/users/{username}/bundles`: claim prekey bundles for some or all devices.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimBundlesRequest {
    /// The devices wanted; empty means every current device of the user.
    #[serde(default)]
    #[schema(max_items = 10)]
    pub device_ids: Vec<DeviceId>,
}

/// One device's prekey bundle. Each one-time key in it has been removed from the server:
/// no other claim will ever receive it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PrekeyBundle {
    /// The device this bundle belongs to.
    pub device_id: DeviceId,
    /// The device's public identity key.
    pub identity_key: Bytes,
    /// The device's current signed X25519 prekey.
    pub signed_prekey: SignedPrekey,
    /// A one-time X25519 prekey, or `None` when the stock is empty.
    pub one_time_prekey: Option<OneTimePrekey>,
    /// A one-time ML-KEM prekey, or the last-resort one when the stock is empty.
    pub kem_prekey: SignedPrekey,
    /// Whether `kem_prekey` is the last-resort key (which may be handed out many times).
    pub kem_prekey_is_last_resort: bool,
}

/// The answer to a bundle claim.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PrekeyBundles {
    /// The user the bundles belong to.
    pub username: String,
    /// One bundle per requested device, in device order.
    pub bundles: Vec<PrekeyBundle>,
}

// ---------------------------------------------------------------------------------------
// Accounts and devices
// ---------------------------------------------------------------------------------------

/// `POST /v1/accounts`: create an account and its first device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// 3 to 32 characters of `a-z`, `0-9`, `_`, `-`, `.`; unique on the server.
    #[schema(pattern = r"^[a-z0-9_.-]{3,32}$")]
    pub username: String,
    /// A registration invite, required unless the server has open registration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 128)]
    pub invite: Option<String>,
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

// ---------------------------------------------------------------------------------------
// Linking a device
// ---------------------------------------------------------------------------------------
//
// 1. The new device opens a channel with its provisioning public key and shows the channel
//    id and a digest of the key as a link code.
// 2. An existing device of the account, given the code, reads the key from the channel,
//    checks it against the digest, and answers with a message sealed to that key (it holds
//    the account identity and a one-time link token) and the token.
// 3. The new device reads the answer, opens it, and adds itself with the token.
//
// The server sees the public key, the sealed message and the token's hash, never what the
// message holds.

/// `POST /v1/provisioning`: open a provisioning channel (no credential needed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenChannelRequest {
    /// The new device's provisioning public key, opaque to the server.
    #[schema(value_type = String, pattern = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=|[A-Za-z0-9+/][AQgw]==)?$", min_length = 4, max_length = 5460)]
    pub public_key: Bytes,
}

/// The answer to opening a channel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OpenChannelResponse {
    /// The channel's id: 16 random bytes, unpadded base64url.
    pub channel: String,
    /// When the channel expires.
    pub expires_at: Timestamp,
}

/// `GET /v1/provisioning/{channel}`: the channel's public key and answer, if any.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ChannelState {
    /// The new device's provisioning public key.
    pub public_key: Bytes,
    /// The sealed answer of the existing device, once there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<Bytes>,
}

/// `PUT /v1/provisioning/{channel}`: an existing device answers a channel, once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AnswerChannelRequest {
    /// The message sealed to the channel's public key, opaque to the server.
    #[schema(value_type = String, pattern = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=|[A-Za-z0-9+/][AQgw]==)?$", min_length = 4, max_length = 87380)]
    pub message: Bytes,
    /// A one-time link token (16 to 128 characters), also inside the sealed message; the
    /// server keeps only its hash.
    #[schema(pattern = r"^[!-~]{16,128}$")]
    pub link_token: String,
}

/// `POST /v1/devices/link`: the new device adds itself to the account that answered its
/// channel (no credential needed; the link token is the authority). The channel is
/// deleted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkDeviceRequest {
    /// The channel id.
    #[schema(pattern = r"^[A-Za-z0-9_-]{21}[AQgw]$")]
    pub channel: String,
    /// The link token from the sealed message.
    #[schema(pattern = r"^[!-~]{16,128}$")]
    pub link_token: String,
    /// A label for the device, only for its owner (at most 64 bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = r"^[^\x00-\x1f\x7f-\x9f]{0,64}$", max_length = 64)]
    pub device_name: Option<String>,
    /// The new device's public keys.
    pub keys: DeviceKeys,
}

// ---------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------

/// One ciphertext addressed to one device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceCiphertext {
    /// The destination device.
    pub device_id: DeviceId,
    /// The end-to-end encrypted message for that device.
    #[schema(value_type = String, pattern = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=|[A-Za-z0-9+/][AQgw]==)?$", min_length = 4, max_length = 349524)]
    pub ciphertext: Ciphertext,
}

/// `POST /v1/messages`: one message, encrypted once per destination device.
///
/// `recipient_devices` must cover exactly the recipient's current devices and
/// `own_devices` exactly the sender's other devices (for a message to oneself, all other
/// own devices go in `recipient_devices` and `own_devices` stays empty). Otherwise nothing is
/// stored and the server answers `409` with code `device_mismatch` and a [`DeviceMismatch`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendMessageRequest {
    /// A client-chosen id (1 to 64 printable ASCII characters). Sending again with the same
    /// id from the same device is answered like the first send and stores nothing.
    #[schema(pattern = r"^[!-~]{1,64}$")]
    pub client_message_id: String,
    /// The recipient's username.
    #[schema(pattern = r"^[a-z0-9_.-]{3,32}$")]
    pub recipient: String,
    /// One ciphertext per current device of the recipient.
    #[schema(min_items = 1, max_items = 10)]
    pub recipient_devices: Vec<DeviceCiphertext>,
    /// One ciphertext per other device of the sender.
    #[serde(default)]
    #[schema(max_items = 10)]
    pub own_devices: Vec<DeviceCiphertext>,
}

/// `POST /v1/multicast`: one ciphertext for many devices (a group message encrypted once).
///
/// `recipients` must list, for each user, exactly their current devices, and `own_devices`
/// exactly the sender's other devices; otherwise nothing is stored and the server answers
/// `409 device_mismatch` naming every missing and stale device (a user that does not exist
/// has all its listed devices stale). The server stores the ciphertext once and one small
/// envelope per device; each device receives an ordinary [`Envelope`] with the ciphertext.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MulticastRequest {
    /// As in [`SendMessageRequest::client_message_id`].
    #[schema(pattern = r"^[!-~]{1,64}$")]
    pub client_message_id: String,
    /// The users and their devices (not the sender).
    #[schema(min_items = 1, max_items = 450)]
    pub recipients: Vec<MulticastRecipient>,
    /// The sender's other devices.
    #[serde(default)]
    #[schema(max_items = 10)]
    pub own_devices: Vec<DeviceId>,
    /// The one ciphertext every listed device gets.
    #[schema(value_type = String, pattern = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=|[A-Za-z0-9+/][AQgw]==)?$", min_length = 4, max_length = 349524)]
    pub ciphertext: Ciphertext,
}

/// One user of a [`MulticastRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MulticastRecipient {
    /// The user.
    #[schema(pattern = r"^[a-z0-9_.-]{3,32}$")]
    pub username: String,
    /// Every current device of the user.
    #[schema(max_items = 10)]
    pub device_ids: Vec<DeviceId>,
}

/// The answer to an accepted send: every envelope is durably stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SendMessageResponse {
    /// The server time of the send (the first send's time for a retried one).
    pub server_timestamp: Timestamp,
    /// Whether this was a retry of an already accepted send.
    pub duplicate: bool,
}

/// A device of some user, as named in a [`DeviceMismatch`].
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
pub struct DeviceAddress {
    /// The user.
    pub username: String,
    /// The device.
    pub device_id: DeviceId,
}

/// Why a send was refused: the client's idea of the device set is out of date.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DeviceMismatch {
    /// Current devices that got no ciphertext: fetch their bundles and add them.
    pub missing: Vec<DeviceAddress>,
    /// Devices that got a ciphertext but no longer exist (or never did): drop them.
    pub stale: Vec<DeviceAddress>,
}

/// A stored message waiting for one device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Envelope {
    /// The server's id, used to acknowledge the envelope. Increases per mailbox.
    pub id: u64,
    /// The sending user.
    pub sender: String,
    /// The sending device.
    pub sender_device: DeviceId,
    /// When the server accepted the send.
    pub server_timestamp: Timestamp,
    /// The ciphertext, exactly as the sender gave it.
    pub ciphertext: Ciphertext,
}

/// `GET /v1/messages`: the oldest envelopes in the calling device's mailbox.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EnvelopeBatch {
    /// Up to a server-chosen number of envelopes, oldest first.
    pub envelopes: Vec<Envelope>,
    /// Whether more envelopes are waiting after these.
    pub more: bool,
}

/// `POST /v1/messages/ack`: delete delivered envelopes from the calling device's mailbox.
/// Unknown ids are ignored, so an acknowledgement may be repeated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AckRequest {
    /// Envelope ids.
    #[serde(deserialize_with = "whole::deserialize_vec")]
    #[schema(value_type = Vec<EnvelopeIdSchema>, max_items = 1000)]
    pub ids: Vec<u64>,
}

/// The attachment format's overhead (SECURITY.md, "Attachments"): a 17-byte header, and a
/// 16-byte tag per chunk of 64 KiB (at least one chunk).
const BLOB_HEADER_BYTES: u64 = 17;
const BLOB_TAG_BYTES: u64 = 16;
const BLOB_CHUNK_BYTES: u64 = 64 * 1024;

/// The size of the blob that carries an encrypted file of `file_bytes` bytes (`None` past
/// `u64::MAX`): what a client reserves and what the server allows for its largest file.
/// The one definition for both; a test in the SDK ties it to `tacit-crypto`'s attachment
/// encryption.
#[must_use]
pub fn blob_size(file_bytes: u64) -> Option<u64> {
    let chunks = file_bytes.div_ceil(BLOB_CHUNK_BYTES).max(1);
    chunks
        .checked_mul(BLOB_TAG_BYTES)?
        .checked_add(file_bytes)?
        .checked_add(BLOB_HEADER_BYTES)
}

/// The schema of an envelope id in an acknowledgement: the server numbers envelopes from
/// 1 and never past 2^63 - 1.
pub struct EnvelopeIdSchema;

impl PartialSchema for EnvelopeIdSchema {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
            .minimum(Some(1))
            .maximum(Some(i64::MAX))
            .into()
    }
}

impl ToSchema for EnvelopeIdSchema {}

// ---------------------------------------------------------------------------------------
// Blobs (encrypted attachments)
// ---------------------------------------------------------------------------------------
//
// A blob is an opaque byte string (an attachment encrypted by the client; its key and digest
// travel inside an end-to-end encrypted message). Its id is 16 random bytes: holding it is
// what lets any authenticated device fetch the blob, so ids are never listed or guessable.
//
// 1. `POST /v1/blobs` with the blob's exact size reserves it against the account's quota.
// 2. `PATCH /v1/blobs/{blob_id}` with `Upload-Offset: N` appends raw bytes at offset N
//    (resumable, in the manner of the tus protocol). A wrong offset answers `409` with the
//    current offset in `Upload-Offset`; `HEAD` tells the offset too. When the last byte
//    arrives, the blob is complete.
// 3. `GET /v1/blobs/{blob_id}` streams a complete blob, from `Range: bytes=N-` if given.
// Blobs expire (whole or partial) after the server's blob TTL.

/// Header of `PATCH` and `HEAD /v1/blobs/{blob_id}`: the byte offset an upload is at.
pub const UPLOAD_OFFSET: &str = "upload-offset";
/// Header of `HEAD /v1/blobs/{blob_id}`: the blob's declared size.
pub const UPLOAD_LENGTH: &str = "upload-length";
/// Content type of a `PATCH /v1/blobs/{blob_id}` body.
pub const BLOB_UPLOAD_CONTENT_TYPE: &str = "application/offset+octet-stream";

/// `POST /v1/blobs`: reserve room for a blob of exactly `size` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBlobRequest {
    /// The blob's exact size in bytes (at least 1).
    #[serde(deserialize_with = "whole::deserialize")]
    #[schema(minimum = 1)]
    pub size: u64,
}

/// The answer to `POST /v1/blobs`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CreateBlobResponse {
    /// The blob's id: 16 random bytes, unpadded base64url.
    pub blob_id: String,
    /// When the blob (complete or not) is deleted.
    pub expires_at: Timestamp,
}

// ---------------------------------------------------------------------------------------
// WebSocket
// ---------------------------------------------------------------------------------------

/// A frame from the server on `GET /v1/ws` (JSON text frames, tagged by `type`).
///
/// After the upgrade the server pushes the mailbox backlog, then [`ServerFrame::QueueEmpty`]
/// once, then each new envelope as it arrives. Each envelope is pushed once per connection;
/// one not acknowledged is pushed again on the next connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// An envelope for this device. Acknowledge it with [`ClientFrame::Ack`].
    Envelope(Envelope),
    /// The backlog present at connect time has been pushed.
    QueueEmpty,
    /// The answer to [`ClientFrame::Ping`]. Frames are handled in order, so every
    /// acknowledgement sent before the ping is durably applied when the pong arrives.
    Pong {
        /// The nonce of the ping.
        nonce: u64,
    },
    /// A frame from the client was refused; the connection stays open.
    Error(ErrorBody),
}

/// A frame from the client on `GET /v1/ws` (JSON text frames, tagged by `type`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    /// Delete these envelopes: they are safely stored on the device.
    Ack {
        /// Envelope ids.
        #[serde(deserialize_with = "whole::deserialize_vec")]
        ids: Vec<u64>,
    },
    /// An application-level ping; answered with [`ServerFrame::Pong`]. (The server also
    /// sends WebSocket pings as heartbeats, which clients answer automatically.)
    Ping {
        /// Echoed back in the pong.
        #[serde(deserialize_with = "whole::deserialize")]
        nonce: u64,
    },
}

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

/// The body of every error response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// Stable, machine-readable code.
    pub code: ErrorCode,
    /// A human-readable explanation; may change between versions.
    pub message: String,
    /// With `device_mismatch`: which devices to add and to drop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mismatch: Option<DeviceMismatch>,
}

/// The stable error codes, with the HTTP status each comes with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// 400: the body or a parameter is malformed or out of range.
    BadRequest,
    /// 401: no credential, a malformed one, or one that is not valid.
    Unauthorized,
    /// 403: registration needs a valid, unused invite.
    InviteRequired,
    /// 404: no such user, device or route.
    NotFound,
    /// 405: the route exists but not with this method.
    MethodNotAllowed,
    /// 409: the username is taken.
    UsernameTaken,
    /// 409: the device set of the send is out of date; see [`ErrorBody::mismatch`].
    DeviceMismatch,
    /// 409: the account already has the maximum number of devices.
    TooManyDevices,
    /// 409: the resource is not in a state that allows this (a provisioning channel that
    /// was already answered; a blob upload at the wrong offset, whose answer carries the
    /// current offset in [`UPLOAD_OFFSET`], or one that another request is writing).
    Conflict,
    /// 413: the body, an envelope, an upload batch or a blob is over its limit.
    PayloadTooLarge,
    /// 416: a blob download's `Range` starts at or past the blob's end.
    RangeNotSatisfiable,
    /// 415: the body is not `application/json`.
    UnsupportedMediaType,
    /// 429: too many requests of this kind; retry later.
    RateLimited,
    /// 507: a destination mailbox is full; retry later.
    MailboxFull,
    /// 507: the account's blobs (stored and reserved) would exceed its quota; delete some
    /// or wait for them to expire.
    QuotaExceeded,
    /// 507: the server's disk is full: nothing of the request was stored; retry later.
    StorageFull,
    /// 431: the request's headers are too large.
    HeadersTooLarge,
    /// 414: the request's URI is too long.
    UriTooLong,
    /// 408: the request did not arrive in time (its headers or a body that stalled).
    RequestTimeout,
    /// 503: the server is shutting down, its database is unreachable or failing, or it has
    /// all the connections it takes (then with `Retry-After`).
    Unavailable,
    /// 500: a bug or an outage; the server logged it.
    Internal,
    /// A code this version does not know (from a newer server); the HTTP status says how
    /// to treat it. Never sent.
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// The HTTP status code that goes with this error.
    #[must_use]
    pub fn http_status(self) -> u16 {
        match self {
            Self::BadRequest => 400,
            Self::Unauthorized => 401,
            Self::InviteRequired => 403,
            Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::UsernameTaken | Self::DeviceMismatch | Self::TooManyDevices | Self::Conflict => {
                409
            }
            Self::PayloadTooLarge => 413,
            Self::UnsupportedMediaType => 415,
            Self::RangeNotSatisfiable => 416,
            Self::RateLimited => 429,
            Self::MailboxFull | Self::QuotaExceeded | Self::StorageFull => 507,
            Self::HeadersTooLarge => 431,
            Self::UriTooLong => 414,
            Self::RequestTimeout => 408,
            Self::Unavailable => 503,
            Self::Internal | Self::Unknown => 500,
        }
    }

    /// The code as it appears on the wire.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::Unauthorized => "unauthorized",
            Self::InviteRequired => "invite_required",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::UsernameTaken => "username_taken",
            Self::DeviceMismatch => "device_mismatch",
            Self::TooManyDevices => "too_many_devices",
            Self::Conflict => "conflict",
            Self::PayloadTooLarge => "payload_too_large",
            Self::RangeNotSatisfiable => "range_not_satisfiable",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::RateLimited => "rate_limited",
            Self::MailboxFull => "mailbox_full",
            Self::QuotaExceeded => "quota_exceeded",
            Self::StorageFull => "storage_full",
            Self::HeadersTooLarge => "headers_too_large",
            Self::UriTooLong => "uri_too_long",
            Self::RequestTimeout => "request_timeout",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
            Self::Unknown => "unknown",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_base64_and_debug_hides_them() {
        let b = Bytes(vec![0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(serde_json::to_string(&b).unwrap(), "\"3q2+7w==\"");
        let back: Bytes = serde_json::from_str("\"3q2+7w==\"").unwrap();
        assert_eq!(back, b);
        assert!(serde_json::from_str::<Bytes>("\"not base64!\"").is_err());
        assert_eq!(format!("{b:?}"), "Bytes(4 bytes)");
    }

    #[test]
    fn credential_round_trips_and_hides_secret() {
        let c = DeviceCredential {
            account: 7,
            device: DeviceId(2),
            secret: [0xab; 32],
        };
        let s = c.to_string();
        assert_eq!(s.parse::<DeviceCredential>().unwrap(), c);
        assert!(!format!("{c:?}").contains("ab"));
        for bad in ["", "1.2", "1.2.3.4", "x.1.AAAA", "1.2.AAAA", "1.-2.AAAA"] {
            assert!(bad.parse::<DeviceCredential>().is_err(), "{bad}");
        }
    }

    #[test]
    fn frames_are_tagged() {
        let f = ClientFrame::Ack { ids: vec![1, 2] };
        assert_eq!(
            serde_json::to_string(&f).unwrap(),
            r#"{"type":"ack","ids":[1,2]}"#
        );
        let f: ServerFrame = serde_json::from_str(r#"{"type":"queue_empty"}"#).unwrap();
        assert_eq!(f, ServerFrame::QueueEmpty);
    }

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

    #[test]
    fn an_unknown_error_code_still_parses() {
        let body: ErrorBody =
            serde_json::from_str(r#"{"code":"from_the_future","message":"m"}"#).unwrap();
        assert_eq!(body.code, ErrorCode::Unknown);
    }

    #[test]
    fn error_codes_serialize_as_their_str() {
        for code in [
            ErrorCode::DeviceMismatch,
            ErrorCode::MailboxFull,
            ErrorCode::QuotaExceeded,
            ErrorCode::RangeNotSatisfiable,
            ErrorCode::StorageFull,
            ErrorCode::HeadersTooLarge,
            ErrorCode::UriTooLong,
            ErrorCode::RequestTimeout,
        ] {
            assert_eq!(
                serde_json::to_string(&code).unwrap(),
                format!("\"{}\"", code.as_str())
            );
        }
    }
}
