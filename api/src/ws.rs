//! The WebSocket (`GET /v1/ws`): its frames and close codes.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{Envelope, ErrorBody, whole};

/// Close code the server sends on a WebSocket that a newer connection of the same device
/// replaced.
pub const CLOSE_CODE_REPLACED: u16 = 4000;
/// Close code the server sends when the device was removed while connected.
pub const CLOSE_CODE_REVOKED: u16 = 4001;
/// Close code the server sends when it shuts down.
pub const CLOSE_CODE_SHUTDOWN: u16 = 1001;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
