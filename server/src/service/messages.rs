//! Sending, fetching and acknowledging envelopes.

use crate::store::AccountId;
use std::collections::BTreeSet;

use tacit_api::{
    Ciphertext, DeviceAddress, DeviceCiphertext, DeviceId, DeviceMismatch, Envelope, EnvelopeBatch,
    MulticastRequest, SendMessageRequest, SendMessageResponse, Timestamp,
};

use super::accounts::validate_username;
use super::{AuthedDevice, Services, now};
use crate::error::ApiError;
use crate::store::{Mailbox, NewMessage, SendOutcome};

/// Most destination devices of one multicast.
pub(crate) const MAX_MULTICAST_DEVICES: usize = 5000;

/// Most ids in one acknowledgement.
pub(crate) const MAX_ACK_IDS: usize = 1000;

fn validate_client_message_id(id: &str) -> Result<(), ApiError> {
    if (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(ApiError::BadRequest(
            "client_message_id: 1 to 64 printable ASCII characters".into(),
        ))
    }
}

fn addresses(username: &str, devices: impl IntoIterator<Item = DeviceId>) -> Vec<DeviceAddress> {
    devices
        .into_iter()
        .map(|device_id| DeviceAddress {
            username: username.to_owned(),
            device_id,
        })
        .collect()
}

impl Services {
    fn validate_ciphertexts(&self, field: &str, list: &[DeviceCiphertext]) -> Result<(), ApiError> {
        let max = self.config.limits.max_envelope_bytes;
        let mut seen = BTreeSet::new();
        for d in list {
            if d.ciphertext.0.is_empty() {
                return Err(ApiError::BadRequest(format!("{field}: empty ciphertext")));
            }
            if u64::try_from(d.ciphertext.0.len()).map_or(true, |l| l > max) {
                return Err(ApiError::PayloadTooLarge(format!(
                    "{field}: a ciphertext is over {max} bytes"
                )));
            }
            if !seen.insert(d.device_id) {
                return Err(ApiError::BadRequest(format!(
                    "{field}: device {} given twice",
                    d.device_id
                )));
            }
        }
        Ok(())
    }

    /// Accept a send: every current device of the recipient (and every other device of the
    /// sender) gets its ciphertext, all in one transaction, or nothing is stored. The device
    /// sets are checked inside that transaction, so a device added or removed concurrently
    /// can never be skipped or written to.
    pub async fn send(
        &self,
        caller: &AuthedDevice,
        req: SendMessageRequest,
    ) -> Result<SendMessageResponse, ApiError> {
        validate_client_message_id(&req.client_message_id)?;
        validate_username(&req.recipient).map_err(|_| ApiError::NotFound("user"))?;
        self.validate_ciphertexts("recipient_devices", &req.recipient_devices)?;
        self.validate_ciphertexts("own_devices", &req.own_devices)?;
        if req.recipient_devices.is_empty() {
            return Err(ApiError::BadRequest(
                "recipient_devices: at least one ciphertext".into(),
            ));
        }
        let recipient = self.account_id(&req.recipient).await?;
        if recipient == caller.mailbox.account && !req.own_devices.is_empty() {
            // To oneself, the other own devices are the recipients.
            return Err(ApiError::DeviceMismatch(DeviceMismatch {
                missing: Vec::new(),
                stale: addresses(
                    &caller.username,
                    req.own_devices.iter().map(|d| d.device_id),
                ),
            }));
        }
        let server_ts = now();
        let ttl_ms = self.config.limits.message_ttl_secs.saturating_mul(1000);
        let expires_at = Timestamp(
            server_ts
                .0
                .saturating_add(i64::try_from(ttl_ms).unwrap_or(i64::MAX)),
        );
        let destination = |account: AccountId, d: DeviceCiphertext| {
            (
                Mailbox {
                    account,
                    device: d.device_id,
                },
                d.ciphertext,
            )
        };
        let envelopes: Vec<(Mailbox, Ciphertext)> = req
            .recipient_devices
            .into_iter()
            .map(|d| destination(recipient, d))
            .chain(
                req.own_devices
                    .into_iter()
                    .map(|d| destination(caller.mailbox.account, d)),
            )
            .collect();
        let message = NewMessage {
            sender: caller.mailbox,
            recipients: vec![recipient],
            sender_username: caller.username.clone(),
            client_message_id: req.client_message_id,
            server_ts,
            expires_at,
            remember_until: self.remember_until(server_ts, expires_at),
            max_mailbox_depth: self.config.limits.max_mailbox_depth,
            envelopes,
            body: None,
        };
        self.commit_send(message, |account| {
            if account == recipient {
                &req.recipient
            } else {
                &caller.username
            }
        })
        .await
    }

    /// Accept a multicast (a group message): one ciphertext for every current device of each
    /// listed user and every other device of the sender, stored once with one small
    /// envelope row per device, all in one transaction, or nothing. The device sets of every
    /// listed user are checked as in [`Self::send`]; a user that does not exist (any more)
    /// is reported with all its listed devices stale.
    pub async fn multicast(
        &self,
        caller: &AuthedDevice,
        req: MulticastRequest,
    ) -> Result<SendMessageResponse, ApiError> {
        validate_client_message_id(&req.client_message_id)?;
        let max = self.config.limits.max_envelope_bytes;
        if req.ciphertext.0.is_empty() {
            return Err(ApiError::BadRequest("ciphertext: empty".into()));
        }
        if u64::try_from(req.ciphertext.0.len()).map_or(true, |l| l > max) {
            return Err(ApiError::PayloadTooLarge(format!(
                "ciphertext: over {max} bytes"
            )));
        }
        if req.recipients.is_empty() {
            return Err(ApiError::BadRequest("recipients: at least one user".into()));
        }
        // Every recipient counts, with at least one device: each costs a lookup even when
        // it lists none.
        let total: usize = req
            .recipients
            .iter()
            .map(|r| r.device_ids.len().max(1))
            .sum::<usize>()
            .saturating_add(req.own_devices.len());
        if total > MAX_MULTICAST_DEVICES {
            return Err(ApiError::PayloadTooLarge(format!(
                "at most {MAX_MULTICAST_DEVICES} destination devices per multicast"
            )));
        }
        let mut users = BTreeSet::new();
        let mut accounts = std::collections::HashMap::new();
        let mut unknown = DeviceMismatch::default();
        let mut envelopes = Vec::with_capacity(total);
        let empty = Ciphertext::default();
        for recipient in &req.recipients {
            validate_username(&recipient.username)?;
            if recipient.username == caller.username {
                return Err(ApiError::BadRequest(
                    "recipients: the sender's own devices go in own_devices".into(),
                ));
            }
            if !users.insert(recipient.username.as_str()) {
                return Err(ApiError::BadRequest(format!(
                    "recipients: {} given twice",
                    recipient.username
                )));
            }
            let devices: BTreeSet<DeviceId> = recipient.device_ids.iter().copied().collect();
            if devices.len() != recipient.device_ids.len() {
                return Err(ApiError::BadRequest(format!(
                    "recipients: a device of {} given twice",
                    recipient.username
                )));
            }
            let account = match self.account_id(&recipient.username).await {
                Ok(account) => account,
                Err(ApiError::NotFound(_)) => {
                    unknown
                        .stale
                        .extend(addresses(&recipient.username, devices));
                    continue;
                }
                Err(other) => return Err(other),
            };
            accounts.insert(account, recipient.username.clone());
            envelopes.extend(
                devices
                    .into_iter()
                    .map(|device| (Mailbox { account, device }, empty.clone())),
            );
        }
        if !unknown.stale.is_empty() {
            return Err(ApiError::DeviceMismatch(unknown));
        }
        if accounts.is_empty() && req.own_devices.is_empty() {
            // Only users that do not exist, none of them with a device: nothing would be
            // delivered, so nothing is stored.
            return Err(ApiError::NotFound("user"));
        }
        let own: BTreeSet<DeviceId> = req.own_devices.iter().copied().collect();
        envelopes.extend(own.into_iter().map(|device| {
            (
                Mailbox {
                    account: caller.mailbox.account,
                    device,
                },
                empty.clone(),
            )
        }));
        let server_ts = now();
        let ttl_ms = self.config.limits.message_ttl_secs.saturating_mul(1000);
        let expires_at = Timestamp(
            server_ts
                .0
                .saturating_add(i64::try_from(ttl_ms).unwrap_or(i64::MAX)),
        );
        let message = NewMessage {
            sender: caller.mailbox,
            recipients: accounts.keys().copied().collect(),
            sender_username: caller.username.clone(),
            client_message_id: req.client_message_id,
            server_ts,
            expires_at,
            remember_until: self.remember_until(server_ts, expires_at),
            max_mailbox_depth: self.config.limits.max_mailbox_depth,
            envelopes,
            body: Some(req.ciphertext),
        };
        self.commit_send(message, |account| {
            accounts
                .get(&account)
                .map_or(caller.username.as_str(), String::as_str)
        })
        .await
    }

    /// Until when a send's client message id is remembered (to answer a retry as a
    /// duplicate): `limits.idempotency_ttl_secs`, and never past the envelopes' expiry.
    fn remember_until(&self, server_ts: Timestamp, expires_at: Timestamp) -> Timestamp {
        let ttl_ms = self.config.limits.idempotency_ttl_secs.saturating_mul(1000);
        let until = server_ts
            .0
            .saturating_add(i64::try_from(ttl_ms).unwrap_or(i64::MAX));
        Timestamp(until.min(expires_at.0))
    }

    /// Commits a send (pairwise or multicast) and answers it: stored, a retried duplicate,
    /// or the device mismatch with every account named by `username_of`.
    async fn commit_send<'a>(
        &self,
        message: NewMessage,
        username_of: impl Fn(AccountId) -> &'a str,
    ) -> Result<SendMessageResponse, ApiError> {
        let server_ts = message.server_ts;
        match self.committer.send(message).await? {
            SendOutcome::Stored(mailboxes) => {
                self.metrics
                    .envelopes_accepted
                    .inc_by(u64::try_from(mailboxes.len()).unwrap_or(0));
                Ok(SendMessageResponse {
                    server_timestamp: server_ts,
                    duplicate: false,
                })
            }
            SendOutcome::Duplicate(ts) => Ok(SendMessageResponse {
                server_timestamp: ts,
                duplicate: true,
            }),
            SendOutcome::Mismatch(list) => {
                let mut mismatch = DeviceMismatch::default();
                for a in list {
                    let username = username_of(a.account);
                    mismatch.missing.extend(addresses(username, a.missing));
                    mismatch.stale.extend(addresses(username, a.stale));
                }
                Err(ApiError::DeviceMismatch(mismatch))
            }
        }
    }

    /// The oldest envelopes of the caller's mailbox, for clients without a socket.
    pub async fn fetch(&self, caller: &AuthedDevice) -> Result<EnvelopeBatch, ApiError> {
        let batch = self.config.limits.fetch_batch;
        let mut envelopes = self
            .store
            .mailbox(caller.mailbox, 0, batch.saturating_add(1), now())
            .await?;
        let more = envelopes.len() > batch as usize;
        envelopes.truncate(batch as usize);
        Ok(EnvelopeBatch { envelopes, more })
    }

    /// Envelopes of a mailbox after a cursor, for the socket.
    pub async fn mailbox_after(
        &self,
        mailbox: Mailbox,
        after: u64,
        limit: u32,
    ) -> Result<Vec<Envelope>, ApiError> {
        Ok(self.store.mailbox(mailbox, after, limit, now()).await?)
    }

    /// Delete acknowledged envelopes of the caller's mailbox.
    pub async fn ack(&self, mailbox: Mailbox, ids: &[u64]) -> Result<(), ApiError> {
        if ids.len() > MAX_ACK_IDS {
            return Err(ApiError::BadRequest(format!(
                "ids: at most {MAX_ACK_IDS} per acknowledgement"
            )));
        }
        // Envelope ids are positive 63-bit numbers: anything else is refused here, at the
        // edge, so that it never reaches (and never fails) a write batch shared with others.
        if let Some(bad) = ids
            .iter()
            .find(|id| **id == 0 || i64::try_from(**id).is_err())
        {
            return Err(ApiError::BadRequest(format!(
                "ids: {bad} is not an envelope id (1 to {})",
                i64::MAX
            )));
        }
        if ids.is_empty() {
            return Ok(());
        }
        let deleted = self.committer.ack(mailbox, ids.to_vec()).await?;
        self.metrics.envelopes_acked.inc_by(deleted);
        Ok(())
    }
}
