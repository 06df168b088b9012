//! Administration (`/v1/admin/...`): users and their devices, disabling, removal,
//! deletion, roles, invites, quotas, and the audit log for auditors.
//!
//! Every admin endpoint needs the `admin` role, except `GET /v1/admin/audit`, which an
//! `auditor` (or an `admin`) may read. A caller without the role gets `403`
//! [`ErrorCode::Forbidden`](crate::ErrorCode::Forbidden). Nothing here carries message
//! content, a credential or a token, except the invite token returned once at creation.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{DeviceId, Timestamp, whole};

/// A role an account may hold (several at once). Every account is a member; the roles
/// here are the ones granted on top.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Manages users, devices, roles, invites and quotas; reads the audit log.
    Admin,
    /// Reads the audit log, and nothing else.
    Auditor,
}

impl Role {
    /// Every role.
    pub const ALL: [Self; 2] = [Self::Admin, Self::Auditor];

    /// The stable name (in URLs, the database and the audit log).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Auditor => "auditor",
        }
    }

    /// The role of a stable name.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|role| role.as_str() == name)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A device as an administrator sees it: no keys, no content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AdminDevice {
    /// Its number.
    pub device_id: DeviceId,
    /// Its owner's label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// When it was added.
    pub created_at: Timestamp,
    /// When it last authenticated (to within a minute), if it has since this was
    /// recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen_at: Option<Timestamp>,
    /// One-time X25519 prekeys left.
    pub one_time_prekeys: u64,
    /// One-time ML-KEM prekeys left.
    pub one_time_kem_prekeys: u64,
    /// Envelopes waiting in its mailbox.
    pub mailbox_depth: u64,
}

/// A user as an administrator sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AdminUser {
    /// The username.
    pub username: String,
    /// When the account was registered.
    pub created_at: Timestamp,
    /// When it was disabled, while it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_at: Option<Timestamp>,
    /// Roles held besides member.
    pub roles: Vec<Role>,
    /// The account's own limit on devices, if set (else the server's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_devices: Option<u32>,
    /// The account's own blob quota in bytes, if set (else the server's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob_quota_bytes: Option<u64>,
    /// Its devices, in device order.
    pub devices: Vec<AdminDevice>,
}

/// `GET /v1/admin/users`: a page of users, in username order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AdminUserList {
    /// The users of this page.
    pub users: Vec<AdminUser>,
    /// Pass as `after` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// `POST /v1/admin/invites`: create an invite.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateInviteRequest {
    /// Seconds until it expires (absent: never).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole::deserialize_option"
    )]
    #[schema(minimum = 1, maximum = 31_622_400)]
    pub expires_in_secs: Option<u64>,
    /// How many registrations it admits (default 1).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole::deserialize_option"
    )]
    #[schema(minimum = 1, maximum = 100_000)]
    pub max_uses: Option<u32>,
}

/// An invite as listed (the token is never stored; `id` is its SHA-256, in hex).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct InviteInfo {
    /// The SHA-256 of the token, in hex: names the invite (to revoke it).
    #[schema(pattern = "^[0-9a-f]{64}$")]
    pub id: String,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it expires, if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
    /// How many registrations it admits.
    pub max_uses: u32,
    /// How many it admitted.
    pub uses: u32,
    /// When it was revoked, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<Timestamp>,
}

/// The answer to creating an invite: the token, shown only this once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CreateInviteResponse {
    /// The token to give the new user.
    pub token: String,
    /// The invite as listed.
    pub invite: InviteInfo,
}

/// `GET /v1/admin/invites`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct InviteList {
    /// Every invite, newest first.
    pub invites: Vec<InviteInfo>,
}

/// `PUT /v1/admin/users/{username}/quota`: an account's own limits. An absent field
/// returns that limit to the server's.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetQuotaRequest {
    /// Most devices the account may have.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole::deserialize_option"
    )]
    #[schema(minimum = 1, maximum = 1000)]
    pub max_devices: Option<u32>,
    /// Most bytes of blobs (stored and reserved) the account may hold.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole::deserialize_option"
    )]
    #[schema(minimum = 0, maximum = 4_611_686_018_427_387_903_u64)]
    pub blob_quota_bytes: Option<u64>,
}

/// `GET /v1/admin/audit`: a page of audit entries as ECS-style records (the objects of
/// `tacit-server audit export`, schema in `docs/AUDIT.md`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditPage {
    /// The entries, in sequence order.
    #[schema(value_type = Vec<Object>)]
    pub entries: Vec<serde_json::Value>,
    /// Pass as `after` for the next page; absent when this page reached the end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<u64>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn integers_may_be_spelled_as_floats_and_null_is_absent() {
        let q: SetQuotaRequest =
            serde_json::from_str(r#"{"max_devices": 3.0, "blob_quota_bytes": null}"#).unwrap();
        assert_eq!(
            q,
            SetQuotaRequest {
                max_devices: Some(3),
                blob_quota_bytes: None
            }
        );
        let i: CreateInviteRequest = serde_json::from_str(r#"{"max_uses": 994.0}"#).unwrap();
        assert_eq!(i.max_uses, Some(994));
        assert_eq!(
            serde_json::from_str::<CreateInviteRequest>("{}").unwrap(),
            CreateInviteRequest::default()
        );
        for bad in [
            r#"{"max_uses": 1.5}"#,
            r#"{"max_uses": -1}"#,
            r#"{"max_uses": "2"}"#,
            r#"{"other": 1}"#,
        ] {
            assert!(
                serde_json::from_str::<CreateInviteRequest>(bad).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn roles_have_stable_names() {
        for role in Role::ALL {
            assert_eq!(Role::from_name(role.as_str()), Some(role));
            assert_eq!(serde_json::to_value(role).unwrap(), role.as_str());
        }
        assert_eq!(Role::from_name("member"), None);
    }
}
