//! Linking a device through a provisioning channel.
//!
//! 1. The new device opens a channel with its provisioning public key and shows the channel
//!    id and a digest of the key as a link code.
//! 2. An existing device of the account, given the code, reads the key from the channel,
//!    checks it against the digest, and answers with a message sealed to that key (it holds
//!    the account identity and a one-time link token) and the token.
//! 3. The new device reads the answer, opens it, and adds itself with the token.
//!
//! The server sees the public key, the sealed message and the token's hash, never what the
//! message holds.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{Bytes, DeviceKeys, Timestamp};

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
