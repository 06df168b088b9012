//! Keys: what a device uploads (`PUT /v1/keys`, at registration and when added) and the
//! bundles others claim.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{Bytes, DeviceId, whole};

/// Below this many one-time prekeys of a kind left on the server, a client uploads a new
/// batch; the server counts the devices under it (`tacit_devices_low_one_time_prekeys`).
pub const PREKEY_LOW_WATER: u64 = 20;

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
