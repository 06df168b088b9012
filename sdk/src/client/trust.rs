//! Safety numbers, verification and accepting a changed identity.

use super::*;

impl Client {
    /// The safety number with `username`, from the pinned identity.
    pub async fn safety_number(&self, username: &str) -> Result<SafetyNumber, ClientError> {
        let contact = self
            .store
            .contact(username)
            .await?
            .ok_or_else(|| ClientError::UnknownContact(username.to_owned()))?;
        let key = contact
            .changed_identity_key
            .as_deref()
            .unwrap_or(&contact.identity_key);
        let theirs = IdentityKey::from_bytes(key).map_err(Inconsistent::from)?;
        Ok(SafetyNumber::new(
            self.account.username.as_bytes(),
            self.identity.public(),
            username.as_bytes(),
            &theirs,
        ))
    }

    /// Marks a contact verified after comparing safety numbers: the key verified is the one
    /// [`Self::safety_number`] shows. If the contact's identity changed and the change is not
    /// accepted yet, the safety number shown is the new key's, so verifying accepts the new
    /// key (dropping the old sessions, as [`Self::trust`]) and marks it verified. Returns
    /// whether it accepted a changed key.
    pub async fn verify(&self, username: &str) -> Result<bool, ClientError> {
        let contact = self
            .store
            .contact(username)
            .await?
            .ok_or_else(|| ClientError::UnknownContact(username.to_owned()))?;
        let accepted = contact.changed_identity_key.is_some() && self.trust(username).await?;
        if self.store.mark_verified(username).await? {
            Ok(accepted)
        } else {
            Err(ClientError::UnknownContact(username.to_owned()))
        }
    }

    /// Accepts a contact's changed identity key; sessions with their old key are dropped.
    /// Returns whether there was a change to accept.
    pub async fn trust(&self, username: &str) -> Result<bool, ClientError> {
        let accepted = self.store.accept_changed_identity(username).await?;
        if accepted {
            self.store.delete_sessions(username).await?;
        }
        Ok(accepted)
    }
}
