//! Linking a new device to the account (both sides).

use super::*;

impl Client {
    /// Starts linking this (new) device: opens a provisioning channel and returns the link
    /// code to type into an existing device of the account (`approve_link`).
    pub async fn begin_link(transport: Transport) -> Result<PendingLink, ClientError> {
        let keys = ProvisioningKeyPair::generate(&mut rng());
        let opened = transport
            .open_channel(&api::OpenChannelRequest {
                public_key: keys.public().to_bytes().into(),
            })
            .await?;
        let channel = URL_SAFE_NO_PAD
            .decode(&opened.channel)
            .ok()
            .filter(|c| c.len() == LINK_CHANNEL_LEN)
            .ok_or(LinkError::MalformedChannel)?;
        // channel id || digest of our key || the link secret, which only the code carries.
        let secret = LinkSecret::generate(&mut rng());
        let mut code_bytes = Zeroizing::new(channel);
        code_bytes.extend_from_slice(&keys.public().digest());
        code_bytes.extend_from_slice(secret.as_bytes());
        Ok(PendingLink {
            code: Zeroizing::new(URL_SAFE_NO_PAD.encode(code_bytes.as_slice())),
            channel: opened.channel,
            expires_at: opened.expires_at.0,
            transport,
            keys,
            secret,
        })
    }

    /// Finishes linking this device: waits (up to `timeout`) for an existing device to
    /// answer, checks that the answer was made under the link code's secret (so only a
    /// device that was shown the code can answer), opens the sealed account identity,
    /// shows `confirm` the account it names (username and identity fingerprint) and, if
    /// `confirm` says yes, adds this device to the account and keeps it in a new store at
    /// `store_path`. Any failure before that leaves the store without an account.
    pub async fn finish_link(
        pending: PendingLink,
        store_path: &Path,
        key: KeySource<'_>,
        device_name: Option<&str>,
        timeout: std::time::Duration,
        confirm: impl FnOnce(&LinkPreview) -> bool,
    ) -> Result<Self, ClientError> {
        let store = Store::open(store_path, key).await?;
        if let Some(record) = store.secret("account").await? {
            let record: AccountRecord =
                serde_json::from_slice(&record).map_err(Inconsistent::from)?;
            return Err(ClientError::AlreadyRegistered(record.username));
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let sealed = loop {
            let state = match pending.transport.channel_state(&pending.channel).await {
                Ok(state) => state,
                Err(TransportError::Api { code, .. }) if code == "not_found" => {
                    return Err(LinkError::Expired.into());
                }
                Err(other) => return Err(other.into()),
            };
            if let Some(message) = state.message {
                break message;
            }
            if tokio::time::Instant::now() >= deadline || now_ms() >= pending.expires_at {
                return Err(LinkError::TimedOut.into());
            }
            tokio::time::sleep(LINK_POLL_INTERVAL).await;
        };
        let plaintext = pending
            .keys
            .open_answer(
                &pending.secret,
                &link_context(&pending.channel),
                sealed.as_slice(),
            )
            .map_err(|e| match e {
                ProvisionError::NotFromLinkCode => LinkError::NotFromLinkCode,
                other => LinkError::AnswerDoesNotOpen(other),
            })?;
        let payload: LinkPayload =
            serde_json::from_slice(&plaintext).map_err(|_| LinkError::NotALinkPayload)?;
        let identity = IdentityKeyPair::from_secret_bytes(&payload.identity)
            .map_err(LinkError::MalformedIdentity)?;
        let preview = LinkPreview {
            username: payload.username.clone(),
            fingerprint: identity_fingerprint(identity.public()),
        };
        if !confirm(&preview) {
            return Err(LinkError::Declined {
                username: preview.username,
            }
            .into());
        }
        let mut account = AccountRecord::new(pending.transport.base_url(), &payload.username);
        let keys = Self::prepare_device(&store, &identity, &mut account).await?;
        let added = pending
            .transport
            .link_device(&api::LinkDeviceRequest {
                channel: pending.channel.clone(),
                link_token: payload.link_token.clone(),
                device_name: device_name.map(str::to_owned),
                keys,
            })
            .await?;
        account.device = added.device_id;
        account.credential = added.credential.to_string();
        store
            .put_secret("identity", &identity.to_secret_bytes())
            .await?;
        for contact in &payload.contacts {
            store
                .pin_contact(&contact.username, &contact.identity_key)
                .await?;
            if contact.verified {
                store.mark_verified(&contact.username).await?;
            }
        }
        let client = Self {
            transport: pending.transport.with_credential(&account.credential),
            store,
            identity,
            account,
        };
        client.save_account().await?;
        Ok(client)
    }

    /// Approves linking a new device: checks the key on the server against the link code,
    /// then seals the account identity, the pinned contacts and a one-time link token to
    /// it. The server relays the sealed message and never sees what it holds.
    pub async fn approve_link(&self, code: &str) -> Result<(), ClientError> {
        let raw = URL_SAFE_NO_PAD
            .decode(code.trim())
            .ok()
            .map(Zeroizing::new)
            .filter(|raw| raw.len() == LINK_CODE_LEN)
            .ok_or(LinkError::MalformedCode)?;
        let (channel, rest) = raw.split_at(LINK_CHANNEL_LEN);
        let (digest, secret) = rest.split_at(32);
        let secret =
            LinkSecret::from_bytes(secret.try_into().map_err(|_| LinkError::MalformedSecret)?);
        let channel = URL_SAFE_NO_PAD.encode(channel);
        let state = match self.transport.channel_state(&channel).await {
            Ok(state) => state,
            Err(TransportError::Api { code, .. }) if code == "not_found" => {
                return Err(LinkError::UnknownCode.into());
            }
            Err(other) => return Err(other.into()),
        };
        if state.message.is_some() {
            return Err(LinkError::CodeUsed.into());
        }
        let public = ProvisioningPublicKey::from_bytes(state.public_key.as_slice())
            .map_err(LinkError::MalformedDeviceKey)?;
        if !bool::from(public.digest().as_slice().ct_eq(digest)) {
            return Err(LinkError::KeyMismatch.into());
        }
        let mut token = Zeroizing::new([0u8; 32]);
        getrandom::fill(token.as_mut()).map_err(Inconsistent::from)?;
        let link_token = URL_SAFE_NO_PAD.encode(token.as_ref());
        let contacts = self
            .store
            .contacts()
            .await?
            .into_iter()
            .map(|c| LinkContact {
                username: c.username,
                identity_key: c.identity_key,
                verified: c.verified,
            })
            .collect();
        let payload = LinkPayload {
            v: 1,
            username: self.account.username.clone(),
            identity: self.identity.to_secret_bytes().to_vec(),
            link_token: link_token.clone(),
            contacts,
        };
        let plaintext = Zeroizing::new(serde_json::to_vec(&payload).map_err(Inconsistent::from)?);
        let sealed = provision::seal_answer(
            &mut rng(),
            &public,
            &secret,
            &link_context(&channel),
            &plaintext,
        )
        .map_err(LinkError::Seal)?;
        self.transport
            .answer_channel(
                &channel,
                &api::AnswerChannelRequest {
                    message: sealed.into(),
                    link_token,
                },
            )
            .await?;
        Ok(())
    }
}

/// Length of a provisioning channel id in bytes.
pub(super) const LINK_CHANNEL_LEN: usize = 16;
/// Length of a link code in bytes: channel id, SHA-256 of the new device's key, secret.
const LINK_CODE_LEN: usize = LINK_CHANNEL_LEN + 32 + LinkSecret::LEN;
/// Length of a link code as shown (unpadded base64url).
pub const LINK_CODE_CHARS: usize = (LINK_CODE_LEN * 8).div_ceil(6);

/// What a new device is about to join, shown to its user before the link completes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LinkPreview {
    /// The account's username.
    pub username: String,
    /// The account identity's fingerprint ([`identity_fingerprint`]), to compare with the
    /// one `tacit device add` shows on the approving device.
    pub fingerprint: String,
}

/// A short fingerprint of an identity key, for a person to compare: the first 16 bytes of
/// SHA-256 over the identity key bytes (Ed25519 key || X25519 key), in groups of four hex
/// digits.
pub fn identity_fingerprint(key: &IdentityKey) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(key.key_bytes());
    digest
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .chunks(2)
        .map(|pair| pair.concat())
        .collect::<Vec<_>>()
        .join(" ")
}
/// How often a new device asks whether its link was approved.
const LINK_POLL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

/// The associated data of a sealed link answer: binds it to its channel.
pub(super) fn link_context(channel: &str) -> Vec<u8> {
    let mut context = b"Tacit link ".to_vec();
    context.extend_from_slice(channel.as_bytes());
    context
}

/// A new device waiting for an existing one to approve the link.
pub struct PendingLink {
    pub(super) transport: Transport,
    pub(super) keys: ProvisioningKeyPair,
    /// The secret of the code: an answer must be authenticated under it.
    pub(super) secret: LinkSecret,
    pub(super) channel: String,
    pub(super) code: Zeroizing<String>,
    pub(super) expires_at: i64,
}

impl PendingLink {
    /// The link code to type into the existing device ([`LINK_CODE_CHARS`] characters). It
    /// holds a secret: show it only to the user.
    pub fn code(&self) -> &str {
        &self.code
    }

    /// When the code expires (ms since the epoch).
    pub fn expires_at(&self) -> i64 {
        self.expires_at
    }
}

impl std::fmt::Debug for PendingLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingLink")
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}
