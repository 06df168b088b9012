//! Administration from an admin's (or auditor's) own device: [`Client::admin`] and the
//! [`Admin`] handle, one method per `/v1/admin/...` endpoint.
//!
//! What these methods return is display data only. Nothing in it is used for, or may be
//! used for, any cryptographic decision: a device list here is not the one sends go to
//! (that is fetched and checked by the send path), and no key is ever taken from it. The
//! server could lie in these answers as in any other; they inform an operator, they do
//! not move trust.

use super::*;

/// The roles a request needs, as [`ClientError::Forbidden`] names them.
const ADMIN: &str = "admin";
const AUDITOR_OR_ADMIN: &str = "auditor or admin";

/// The administration API as this device's account, borrowed from a [`Client`]. Every
/// method needs the `admin` role, except [`Admin::audit`], which an `auditor` may call
/// too; a caller without it gets [`ClientError::Forbidden`], and a disabled account
/// [`ClientError::AccountDisabled`].
///
/// Everything returned is display data for people only: no key, device list or trust
/// decision is taken from it (see SECURITY.md, "What a malicious server can try").
#[derive(Debug)]
pub struct Admin<'a> {
    transport: &'a Transport,
}

impl Client {
    /// The administration API, as this account.
    pub fn admin(&self) -> Admin<'_> {
        Admin {
            transport: &self.transport,
        }
    }
}

/// The error of an admin request that needs `needs`.
fn refused(needs: &'static str) -> impl FnOnce(TransportError) -> ClientError {
    move |error| match error {
        TransportError::Api { code, .. } if code == api::ErrorCode::Forbidden.as_str() => {
            ClientError::Forbidden { needs }
        }
        other => other.into(),
    }
}

impl Admin<'_> {
    /// One page of users (in username order) whose name contains `search`, after the
    /// name `after` (the previous page's `next`), at most `limit` (server default 100).
    pub async fn users_page(
        &self,
        search: Option<&str>,
        after: Option<&str>,
        limit: Option<u32>,
    ) -> Result<api::AdminUserList, ClientError> {
        self.transport
            .admin_users(search, after, limit)
            .await
            .map_err(refused(ADMIN))
    }

    /// Every user whose name contains `search` (every page, followed to the end).
    pub async fn users(&self, search: Option<&str>) -> Result<Vec<api::AdminUser>, ClientError> {
        let mut users = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self
                .users_page(search, after.as_deref(), Some(1000))
                .await?;
            users.extend(page.users);
            match page.next {
                // A server that repeats a page must not keep us here.
                Some(next) if after.as_deref().is_none_or(|a| a < next.as_str()) => {
                    after = Some(next);
                }
                Some(_) => {
                    return Err(TransportError::Protocol(
                        "the user list's next page does not move forward".into(),
                    )
                    .into());
                }
                None => return Ok(users),
            }
        }
    }

    /// One user with their devices; [`ClientError::UnknownUser`] if there is none.
    pub async fn user(&self, username: &str) -> Result<api::AdminUser, ClientError> {
        self.transport
            .admin_user(username)
            .await
            .map_err(unknown_user(username))
    }

    /// Disables a user: every credential of theirs is refused and their sockets closed.
    /// Disabling a disabled user changes nothing.
    pub async fn disable(&self, username: &str) -> Result<(), ClientError> {
        self.transport
            .admin_disable_user(username)
            .await
            .map_err(unknown_user(username))
    }

    /// Enables a disabled user again.
    pub async fn enable(&self, username: &str) -> Result<(), ClientError> {
        self.transport
            .admin_enable_user(username)
            .await
            .map_err(unknown_user(username))
    }

    /// Removes one device of a user (not their last: [`Admin::delete_user`] instead).
    pub async fn remove_device(&self, username: &str, device: DeviceId) -> Result<(), ClientError> {
        self.transport
            .admin_remove_device(username, device)
            .await
            .map_err(refused(ADMIN))
    }

    /// Deletes a user's account, keys and waiting messages; the name is free again.
    pub async fn delete_user(&self, username: &str) -> Result<(), ClientError> {
        self.transport
            .admin_delete_user(username)
            .await
            .map_err(unknown_user(username))
    }

    /// Grants a role (granting one held changes nothing).
    pub async fn grant(&self, username: &str, role: api::Role) -> Result<(), ClientError> {
        self.transport
            .admin_grant_role(username, role)
            .await
            .map_err(unknown_user(username))
    }

    /// Revokes a role (revoking one not held changes nothing).
    pub async fn revoke(&self, username: &str, role: api::Role) -> Result<(), ClientError> {
        self.transport
            .admin_revoke_role(username, role)
            .await
            .map_err(unknown_user(username))
    }

    /// Sets a user's own limits; an absent field returns that limit to the server's.
    pub async fn set_quota(
        &self,
        username: &str,
        quota: &api::SetQuotaRequest,
    ) -> Result<(), ClientError> {
        self.transport
            .admin_set_quota(username, quota)
            .await
            .map_err(unknown_user(username))
    }

    /// Every invite, newest first.
    pub async fn invites(&self) -> Result<api::InviteList, ClientError> {
        self.transport.admin_invites().await.map_err(refused(ADMIN))
    }

    /// Creates an invite; its token is in the answer, and only there.
    pub async fn create_invite(
        &self,
        request: &api::CreateInviteRequest,
    ) -> Result<api::CreateInviteResponse, ClientError> {
        self.transport
            .admin_create_invite(request)
            .await
            .map_err(refused(ADMIN))
    }

    /// Revokes an invite by its id (the SHA-256 of its token, in hex).
    pub async fn revoke_invite(&self, id: &str) -> Result<(), ClientError> {
        self.transport
            .admin_revoke_invite(id)
            .await
            .map_err(refused(ADMIN))
    }

    /// A page of the audit log after sequence number `after`, at most `limit` entries
    /// (auditor or admin). The read is itself audited.
    pub async fn audit(
        &self,
        after: Option<u64>,
        limit: Option<u32>,
    ) -> Result<api::AuditPage, ClientError> {
        self.transport
            .admin_audit(after, limit)
            .await
            .map_err(refused(AUDITOR_OR_ADMIN))
    }
}

/// [`refused`] for an admin request about `username`, whose `not_found` means no such
/// user.
fn unknown_user(username: &str) -> impl FnOnce(TransportError) -> ClientError + '_ {
    move |error| match error {
        TransportError::Api { code, .. } if code == api::ErrorCode::NotFound.as_str() => {
            ClientError::UnknownUser(username.to_owned())
        }
        other => refused(ADMIN)(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: api::ErrorCode) -> TransportError {
        TransportError::Api {
            code: code.as_str().to_owned(),
            message: "whatever the server says".to_owned(),
        }
    }

    #[test]
    fn server_codes_become_clear_errors() {
        assert!(matches!(
            ClientError::from(api_error(api::ErrorCode::AccountDisabled)),
            ClientError::AccountDisabled
        ));
        assert!(matches!(
            ClientError::from(api_error(api::ErrorCode::Forbidden)),
            ClientError::Transport(TransportError::Api { .. })
        ));
        let error = refused(ADMIN)(api_error(api::ErrorCode::Forbidden));
        assert!(matches!(error, ClientError::Forbidden { needs: "admin" }));
        assert!(
            error.to_string().starts_with("this needs the admin role"),
            "{error}"
        );
        let error = refused(AUDITOR_OR_ADMIN)(api_error(api::ErrorCode::Forbidden));
        assert!(
            error
                .to_string()
                .starts_with("this needs the auditor or admin role"),
            "{error}"
        );
        assert!(matches!(
            refused(ADMIN)(api_error(api::ErrorCode::AccountDisabled)),
            ClientError::AccountDisabled
        ));
        assert!(matches!(
            unknown_user("bob")(api_error(api::ErrorCode::NotFound)),
            ClientError::UnknownUser(name) if name == "bob"
        ));
        assert!(matches!(
            unknown_user("bob")(api_error(api::ErrorCode::Forbidden)),
            ClientError::Forbidden { needs: "admin" }
        ));
    }
}
