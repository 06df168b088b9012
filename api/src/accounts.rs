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
