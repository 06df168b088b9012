//! The plaintext inside every pairwise message.

use super::*;

impl Payload {
    /// A control payload (group update, sender key) carried in `body`.
    pub(super) fn control(kind: &str, body: &str, to: Option<&str>) -> Self {
        Self {
            v: 1,
            kind: kind.to_owned(),
            body: body.to_owned(),
            to: to.map(str::to_owned),
            id: None,
            receipt: None,
            file: None,
            ts: None,
        }
    }

    pub(super) fn text(text: &str, to: Option<&str>, uid: &str) -> Self {
        Self {
            v: 1,
            kind: "text".into(),
            body: text.to_owned(),
            to: to.map(str::to_owned),
            id: Some(uid.to_owned()),
            receipt: None,
            file: None,
            ts: None,
        }
    }

    /// A file message: `file` says what to fetch and how to open it.
    pub(crate) fn file(file: crate::files::FileDescriptor, to: Option<&str>, uid: &str) -> Self {
        Self {
            v: 1,
            kind: "file".into(),
            body: String::new(),
            to: to.map(str::to_owned),
            id: Some(uid.to_owned()),
            receipt: None,
            file: Some(file),
            ts: None,
        }
    }

    /// The payload, saying that the sender sent it at `time` (milliseconds since the Unix
    /// epoch, the sender's clock).
    pub(crate) fn at(self, time: i64) -> Self {
        Self {
            ts: Some(time),
            ..self
        }
    }

    pub(crate) fn to_bytes(&self) -> Result<Vec<u8>, ClientError> {
        serde_json::to_vec(self).map_err(|e| ClientError::Inconsistent(e.to_string()))
    }
}
