//! Messages: sends, multicasts, the envelopes of a mailbox and their acknowledgement.

use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaFormat, Type};
use utoipa::openapi::{KnownFormat, RefOr};
use utoipa::{PartialSchema, ToSchema};

use crate::{Ciphertext, DeviceId, Timestamp, whole};

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
