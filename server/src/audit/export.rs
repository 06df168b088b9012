//! The audit log as ECS-style JSON lines, for ELK or a SIEM.
//!
//! One object per entry, with field names from the Elastic Common Schema where one fits
//! (`@timestamp`, `event.action`, `event.outcome`, `event.category`, `event.sequence`,
//! `user.name`, `user.target.name`, `source.ip`) and the rest under `tacit.*`
//! (`tacit.device.id`, `tacit.details.*`, and the chain's `tacit.audit.hash` and
//! `tacit.audit.prev_hash`, so that an exported file can itself be re-verified). The schema
//! is documented in `docs/AUDIT.md`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{Action, Entry, EntryHash};

/// One exported entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// When the entry was appended (RFC 3339, UTC, milliseconds).
    #[serde(rename = "@timestamp")]
    pub timestamp: String,
    /// `event.*`.
    pub event: EventFields,
    /// `user.*`: who acted and on whom.
    #[serde(default, skip_serializing_if = "UserFields::is_empty")]
    pub user: UserFields,
    /// `source.*`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceFields>,
    /// `tacit.*`.
    pub tacit: TacitFields,
}

/// `event.*`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventFields {
    /// The action's stable name.
    pub action: String,
    /// `success` or `failure`.
    pub outcome: String,
    /// The ECS category (`iam`, `authentication`, `host`, `network`, `configuration`).
    pub category: String,
    /// `event`, always.
    pub kind: String,
    /// The entry's position in the chain.
    pub sequence: u64,
}

/// `user.*`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserFields {
    /// The acting account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The account acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<TargetFields>,
}

impl UserFields {
    fn is_empty(&self) -> bool {
        self.name.is_none() && self.target.is_none()
    }
}

/// `user.target.*`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetFields {
    /// The account acted on.
    pub name: String,
}

/// `source.*`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceFields {
    /// The client's address.
    pub ip: String,
}

/// `tacit.*`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TacitFields {
    /// `tacit.device.*`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<DeviceFields>,
    /// `tacit.details.*`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub details: BTreeMap<String, String>,
    /// `tacit.audit.*`.
    pub audit: ChainFields,
}

/// `tacit.device.*`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceFields {
    /// The device acted on.
    pub id: u32,
}

/// `tacit.audit.*`: the chain, so that an export can be re-verified.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainFields {
    /// The entry's hash (hex).
    pub hash: String,
    /// Its predecessor's hash (hex).
    pub prev_hash: String,
    /// The entry's time in milliseconds since the Unix epoch (hashed; `@timestamp` is its
    /// rendering).
    pub time_ms: i64,
}

/// Why an exported line could not be read back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    /// Not an exported record.
    #[error("not an audit record: {0}")]
    Json(#[from] serde_json::Error),
    /// A hash field is not 64 hex digits.
    #[error("entry {0}: a hash is not 64 hex digits")]
    Hash(u64),
}

/// An RFC 3339 UTC time with milliseconds, for `time_ms`.
pub fn timestamp(time_ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(time_ms) * 1_000_000)
        .ok()
        .and_then(|time| {
            time.replace_nanosecond((time.nanosecond() / 1_000_000) * 1_000_000)
                .ok()
        })
        .and_then(|time| time.format(&Rfc3339).ok())
        .unwrap_or_else(|| time_ms.to_string())
}

impl Record {
    /// The export of `entry`.
    pub fn of(entry: &Entry) -> Self {
        let category = Action::from_name(&entry.action)
            .map(Action::category)
            .unwrap_or("configuration");
        Self {
            timestamp: timestamp(entry.time_ms),
            event: EventFields {
                action: entry.action.clone(),
                outcome: entry.outcome.clone(),
                category: category.to_owned(),
                kind: "event".to_owned(),
                sequence: entry.seq,
            },
            user: UserFields {
                name: entry.actor.clone(),
                target: entry.target_user.clone().map(|name| TargetFields { name }),
            },
            source: entry.source_ip.clone().map(|ip| SourceFields { ip }),
            tacit: TacitFields {
                device: entry.target_device.map(|id| DeviceFields { id }),
                details: entry.details.clone(),
                audit: ChainFields {
                    hash: entry.hash.to_string(),
                    prev_hash: entry.prev_hash.to_string(),
                    time_ms: entry.time_ms,
                },
            },
        }
    }

    /// The entry this record was exported from (so an export can be verified like the
    /// database).
    pub fn entry(&self) -> Result<Entry, ImportError> {
        let seq = self.event.sequence;
        let hash = |text: &str| EntryHash::from_hex(text).ok_or(ImportError::Hash(seq));
        Ok(Entry {
            seq,
            time_ms: self.tacit.audit.time_ms,
            action: self.event.action.clone(),
            outcome: self.event.outcome.clone(),
            actor: self.user.name.clone(),
            target_user: self.user.target.as_ref().map(|t| t.name.clone()),
            target_device: self.tacit.device.as_ref().map(|d| d.id),
            source_ip: self.source.as_ref().map(|s| s.ip.clone()),
            details: self.tacit.details.clone(),
            prev_hash: hash(&self.tacit.audit.prev_hash)?,
            hash: hash(&self.tacit.audit.hash)?,
        })
    }

    /// One JSON line (without the newline).
    pub fn to_line(&self) -> String {
        // A struct of strings and integers always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads one line back.
    pub fn from_line(line: &str) -> Result<Self, ImportError> {
        Ok(serde_json::from_str(line)?)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::super::chain::{Head, verify};
    use super::super::{Detail, Event, Outcome};
    use super::*;

    #[test]
    fn records_use_ecs_names_and_round_trip() {
        let event = Event::new(Action::UserDisable, Outcome::Success)
            .actor("root")
            .target("bob")
            .source("10.0.0.7")
            .detail(Detail::Reason, "left the firm");
        let first = Head::EMPTY.next(&event, 1_764_590_400_123);
        let second = Head::of(&first).next(
            &Event::new(Action::DeviceRemove, Outcome::Failure).device(3),
            1_764_590_400_500,
        );
        let line = Record::of(&first).to_line();
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["@timestamp"], "2025-12-01T12:00:00.123Z");
        assert_eq!(value["event"]["action"], "user-disable");
        assert_eq!(value["event"]["outcome"], "success");
        assert_eq!(value["event"]["category"], "iam");
        assert_eq!(value["event"]["sequence"], 1);
        assert_eq!(value["user"]["name"], "root");
        assert_eq!(value["user"]["target"]["name"], "bob");
        assert_eq!(value["source"]["ip"], "10.0.0.7");
        assert_eq!(value["tacit"]["details"]["reason"], "left the firm");
        let back: Vec<Entry> = [&first, &second]
            .into_iter()
            .map(|entry| {
                Record::from_line(&Record::of(entry).to_line())
                    .unwrap()
                    .entry()
                    .unwrap()
            })
            .collect();
        assert_eq!(back, vec![first, second.clone()]);
        // An export verifies like the database.
        assert_eq!(verify(&back, vec![]).unwrap(), Head::of(&second));
        // Absent fields are left out, not null.
        let line = Record::of(&second).to_line();
        assert!(!line.contains("null"), "{line}");
        assert!(!line.contains("\"user\""), "{line}");
    }
}
