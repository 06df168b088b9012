//! The organisation's policy for clients (`GET /v1/policy`): what the server's operator
//! asks every client to enforce. It is the server's word, so a client checks it (see
//! [`DISAPPEARING_POLICY_FLOOR_SECS`]) and a modified client can ignore it.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The shortest maximum for disappearing messages a client accepts from a server, in
/// seconds (an hour): a shorter one is ignored, so that a hostile server cannot make every
/// client wipe its history within seconds.
pub const DISAPPEARING_POLICY_FLOOR_SECS: u64 = 3600;

/// What the organisation asks of every client.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Policy {
    /// The longest a client keeps a message (sent or received) and a received file, in
    /// seconds: a conversation with no timer, or a longer one, disappears after this.
    /// Absent: no maximum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 3600)]
    pub disappearing_max_secs: Option<u64>,
}
