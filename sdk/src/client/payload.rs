//! The plaintext inside every pairwise message.
//!
//! On the wire it is one JSON object, `{"v": 1, "kind": ..., ...}`, whose `kind` says what
//! the rest is; [`Content`] is that `kind` as an enum, so a receiver handles each one in an
//! exhaustive match. Group updates and sender keys carry their own JSON in `body` (their
//! formats are specified in SECURITY.md). A kind this version does not know reads as
//! [`Content::Unknown`] and is reported, never guessed at.

use super::*;
use crate::files::FileDescriptor;

/// The plaintext of a pairwise message.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub(crate) struct Payload {
    /// Payload format version (1).
    pub(crate) v: u8,
    /// On copies sent to the sender's own other devices: the conversation's other party.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) to: Option<String>,
    /// With texts and files: when the sender sent it (its clock, milliseconds since the
    /// Unix epoch). Shown instead of the server's time, which is only the server's claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) ts: Option<i64>,
    /// With texts and files in a conversation with a disappearing-message timer: the
    /// sender's timer, in seconds (see `disappearing`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) expire: Option<u64>,
    /// What the message is (the `kind` field and its own fields).
    #[serde(flatten)]
    pub(crate) content: Content,
}

/// What a pairwise message is, by its `kind`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum Content {
    /// A text message.
    Text {
        /// The text.
        #[serde(default)]
        body: String,
        /// The sender's random id of the message, named by receipts.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
    /// What happened to which of our messages.
    Receipt {
        /// The receipt.
        receipt: ReceiptBody,
    },
    /// A file: what to fetch and how to open it.
    File {
        /// The file's descriptor.
        file: FileDescriptor,
        /// The sender's random id of the message.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
    /// A group membership change (JSON in `body`, see `groups`).
    GroupUpdate {
        /// The update.
        body: String,
    },
    /// A group sender key (JSON in `body`, see `groups`).
    SenderKey {
        /// The distribution message.
        body: String,
    },
    /// The conversation's disappearing-message timer changed (`ts` says when).
    Timer {
        /// Seconds a message lives; 0: off.
        seconds: u64,
    },
    /// A kind this version does not know (a newer client's).
    #[serde(other)]
    Unknown,
}

/// The body of a receipt.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReceiptBody {
    /// What happened.
    pub(crate) status: ReceiptKind,
    /// The message ids it covers.
    pub(crate) ids: Vec<String>,
}

impl Payload {
    fn new(content: Content, to: Option<&str>) -> Self {
        Self {
            v: 1,
            to: to.map(str::to_owned),
            ts: None,
            expire: None,
            content,
        }
    }

    /// A group update (`body` is its JSON).
    pub(crate) fn group_update(body: &str, to: Option<&str>) -> Self {
        Self::new(
            Content::GroupUpdate {
                body: body.to_owned(),
            },
            to,
        )
    }

    /// A sender-key distribution (`body` is its JSON).
    pub(crate) fn sender_key(body: &str, to: Option<&str>) -> Self {
        Self::new(
            Content::SenderKey {
                body: body.to_owned(),
            },
            to,
        )
    }

    /// A text message with the id `uid`.
    pub(crate) fn text(text: &str, to: Option<&str>, uid: &str) -> Self {
        Self::new(
            Content::Text {
                body: text.to_owned(),
                id: Some(uid.to_owned()),
            },
            to,
        )
    }

    /// A receipt for `ids`.
    pub(crate) fn receipt(status: ReceiptKind, ids: &[String], to: Option<&str>) -> Self {
        Self::new(
            Content::Receipt {
                receipt: ReceiptBody {
                    status,
                    ids: ids.to_vec(),
                },
            },
            to,
        )
    }

    /// A file message: `file` says what to fetch and how to open it.
    pub(crate) fn file(file: FileDescriptor, to: Option<&str>, uid: &str) -> Self {
        Self::new(
            Content::File {
                file,
                id: Some(uid.to_owned()),
            },
            to,
        )
    }

    /// A change of the conversation's disappearing-message timer (0: off).
    pub(crate) fn timer(seconds: u64, to: Option<&str>) -> Self {
        Self::new(Content::Timer { seconds }, to)
    }

    /// The payload, carrying the sender's disappearing-message timer (`None`: none).
    pub(crate) fn expiring(self, timer: Option<u64>) -> Self {
        Self {
            expire: timer,
            ..self
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
        Ok(serde_json::to_vec(self).map_err(Inconsistent::from)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Payload {
        serde_json::from_str(json).unwrap()
    }

    /// The wire format is that of the struct this enum replaced: every field an older
    /// client wrote (including an empty `body` on receipts) still reads, and what this
    /// version writes is what an older client reads.
    #[test]
    fn the_wire_format_is_unchanged() {
        let text = Payload::text("hi", Some("bob"), "u1").at(7);
        assert_eq!(
            serde_json::to_value(&text).unwrap(),
            serde_json::json!({"v": 1, "kind": "text", "body": "hi", "to": "bob", "id": "u1", "ts": 7})
        );
        let older = parse(r#"{"v":1,"kind":"text","body":"hi","id":"u1"}"#);
        assert_eq!(
            older.content,
            Content::Text {
                body: "hi".into(),
                id: Some("u1".into())
            }
        );
        let receipt = parse(
            r#"{"v":1,"kind":"receipt","body":"","receipt":{"status":"read","ids":["a","b"]}}"#,
        );
        assert_eq!(
            receipt.content,
            Content::Receipt {
                receipt: ReceiptBody {
                    status: ReceiptKind::Read,
                    ids: vec!["a".into(), "b".into()]
                }
            }
        );
        assert_eq!(
            serde_json::to_value(Payload::receipt(
                ReceiptKind::Delivered,
                &["x".into()],
                None
            ))
            .unwrap(),
            serde_json::json!({"v": 1, "kind": "receipt", "receipt": {"status": "delivered", "ids": ["x"]}})
        );
        let update = parse(r#"{"v":1,"kind":"group_update","body":"{}","to":"carol"}"#);
        assert_eq!(update.to.as_deref(), Some("carol"));
        assert_eq!(update.content, Content::GroupUpdate { body: "{}".into() });
        assert_eq!(
            serde_json::to_value(Payload::sender_key("{}", None)).unwrap(),
            serde_json::json!({"v": 1, "kind": "sender_key", "body": "{}"})
        );
    }

    #[test]
    fn timers_travel_inside_the_payload() {
        let timer = Payload::timer(3600, Some("bob")).at(5);
        assert_eq!(
            serde_json::to_value(&timer).unwrap(),
            serde_json::json!({"v": 1, "kind": "timer", "seconds": 3600, "to": "bob", "ts": 5})
        );
        let text = Payload::text("hi", None, "u1").at(7).expiring(Some(60));
        let value = serde_json::to_value(&text).unwrap();
        assert_eq!(value["expire"], 60);
        assert_eq!(parse(&value.to_string()), text);
        // Without a timer the field is absent (what older clients wrote and read).
        let plain = serde_json::to_value(Payload::text("hi", None, "u1").expiring(None)).unwrap();
        assert!(plain.get("expire").is_none(), "{plain}");
        assert!(serde_json::from_str::<Payload>(r#"{"v":1,"kind":"timer"}"#).is_err());
    }

    #[test]
    fn an_unknown_kind_reads_as_unknown_and_a_broken_one_fails() {
        let newer = parse(r#"{"v":1,"kind":"poll","question":"?"}"#);
        assert_eq!(newer.content, Content::Unknown);
        for broken in [
            r#"{"v":1,"kind":"receipt","body":""}"#,
            r#"{"v":1,"kind":"file","body":"","id":"u"}"#,
            r#"{"v":1,"body":"no kind"}"#,
            r#"{"kind":"text","body":"no version"}"#,
        ] {
            assert!(serde_json::from_str::<Payload>(broken).is_err(), "{broken}");
        }
    }
}
