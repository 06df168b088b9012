//! Sessions per remote device: which to use, claiming bundles, and the identity checks on everything the server hands out.

use super::*;

impl Client {
    pub(super) fn address(username: &str, device: u32) -> Result<Address, ClientError> {
        Address::new(username, device).map_err(|e| ClientError::Inconsistent(e.to_string()))
    }

    /// Checks `identity` against the pin for `username`, pinning it on first use. A device
    /// of our own account must carry the account identity.
    pub(super) async fn check_identity(
        &self,
        username: &str,
        device: u32,
        identity: &IdentityKey,
    ) -> Result<(), ClientError> {
        if self.identity_unpinned(username, device, identity).await? {
            self.store
                .pin_contact(username, &identity.to_bytes())
                .await?;
        }
        Ok(())
    }

    /// As [`Self::check_identity`], but pins nothing: returns whether `username` has no pin
    /// yet (the caller pins once what carried the key has authenticated).
    pub(super) async fn identity_unpinned(
        &self,
        username: &str,
        device: u32,
        identity: &IdentityKey,
    ) -> Result<bool, ClientError> {
        let encoded = identity.to_bytes();
        if username == self.account.username {
            return if encoded == self.identity.public().to_bytes() {
                Ok(false)
            } else {
                Err(ClientError::ForeignDevice(device))
            };
        }
        match self.store.contact(username).await? {
            None => Ok(true),
            Some(contact) if contact.identity_key == encoded => Ok(false),
            Some(contact) => {
                self.store
                    .record_changed_identity(username, &encoded)
                    .await?;
                Err(ClientError::IdentityChanged {
                    username: username.to_owned(),
                    verified: contact.verified,
                })
            }
        }
    }

    /// The devices of `username` the server lists, each checked against the pinned
    /// identity (or, for our own account, the account identity), less this device.
    pub(super) async fn checked_devices(
        &self,
        username: &str,
    ) -> Result<BTreeSet<u32>, ClientError> {
        let list = if username == self.account.username {
            self.transport.own_devices().await?
        } else {
            match self.transport.user_devices(username).await {
                Err(TransportError::Api { code, .. }) if code == "not_found" => {
                    return Err(ClientError::UnknownUser(username.to_owned()));
                }
                other => other?,
            }
        };
        if list.username != username {
            return Err(ClientError::ServerClaimRefused(format!(
                "asked for {username}'s devices, the server answered with {}'s",
                list.username
            )));
        }
        let mut devices = BTreeSet::new();
        for device in list.devices {
            let id = device.device_id.0;
            if username == self.account.username && id == self.account.device {
                continue;
            }
            let identity = IdentityKey::from_bytes(device.identity_key.as_slice())
                .map_err(|e| bad_bundle(username, e))?;
            self.check_identity(username, id, &identity).await?;
            devices.insert(id);
        }
        Ok(devices)
    }

    /// The active session with a device, if any.
    pub(super) async fn active_session(
        &self,
        username: &str,
        device: u32,
    ) -> Result<Option<Session>, ClientError> {
        let sessions = self.store.sessions(username, device).await?;
        match sessions.into_iter().find(|s| s.active) {
            Some(stored) => Session::from_bytes(&stored.state)
                .map(Some)
                .map_err(|e| ClientError::Inconsistent(format!("stored session: {e}"))),
            None => Ok(None),
        }
    }

    /// Sessions for every device in `devices`, claiming bundles for those without one.
    pub(super) async fn sessions_for(
        &self,
        username: &str,
        devices: &BTreeSet<u32>,
    ) -> Result<Vec<(u32, SessionFor)>, ClientError> {
        let mut sessions = Vec::new();
        let mut missing = Vec::new();
        for &device in devices {
            match self.active_session(username, device).await? {
                Some(session) => {
                    self.check_identity(username, device, session.remote_identity())
                        .await?;
                    sessions.push((device, SessionFor::Stored(*session.base_key())));
                }
                None => missing.push(api::DeviceId(device)),
            }
        }
        if missing.is_empty() {
            return Ok(sessions);
        }
        let bundles = self
            .transport
            .claim_bundles(
                username,
                &api::ClaimBundlesRequest {
                    device_ids: missing.clone(),
                },
            )
            .await?;
        if bundles.username != username {
            return Err(ClientError::ServerClaimRefused(format!(
                "asked for {username}'s bundles, the server answered with {}'s",
                bundles.username
            )));
        }
        let local = Self::address(&self.account.username, self.account.device)?;
        let mut rng = rng();
        let mut claimed = BTreeSet::new();
        for bundle in &bundles.bundles {
            let device = bundle.device_id.0;
            if !missing.contains(&api::DeviceId(device)) || !claimed.insert(device) {
                return Err(ClientError::ServerClaimRefused(format!(
                    "the server answered with a bundle for {username}.{device}, which was not \
                     asked for"
                )));
            }
            let parsed = parse_bundle(username, bundle)?;
            self.check_identity(username, bundle.device_id.0, &parsed.identity)
                .await?;
            let remote = Self::address(username, bundle.device_id.0)?;
            let session = Session::initiate(&mut rng, &self.identity, &local, &remote, &parsed)?;
            sessions.push((bundle.device_id.0, SessionFor::New(Box::new(session))));
        }
        Ok(sessions)
    }

    /// Encrypts `plaintext` for each device, persisting each advanced session before it is
    /// sent (so a key is never used twice, even if the send is retried).
    pub(super) async fn encrypt_for(
        &self,
        username: &str,
        devices: &BTreeSet<u32>,
        plaintext: &[u8],
    ) -> Result<Vec<api::DeviceCiphertext>, ClientError> {
        let mut out = Vec::with_capacity(devices.len());
        for (device, session) in self.sessions_for(username, devices).await? {
            let ciphertext = match session {
                // A stored session: loaded again, used and saved in one store transaction,
                // so no other writer can encrypt under the state it was loaded in.
                SessionFor::Stored(checked) => {
                    self.store
                        .advance_session(username, device, |stored| {
                            encrypt_active(&stored, &checked, plaintext)
                        })
                        .await??
                }
                // A new session from a bundle: its keys are its own.
                SessionFor::New(mut session) => {
                    let ciphertext = session
                        .encrypt(plaintext)
                        .map_err(|e| ClientError::Inconsistent(e.to_string()))?;
                    self.store
                        .save_session(
                            username,
                            device,
                            session.base_key(),
                            &session.to_bytes(),
                            true,
                        )
                        .await?;
                    ciphertext
                }
            };
            out.push(api::DeviceCiphertext {
                device_id: api::DeviceId(device),
                ciphertext: api::Ciphertext(ciphertext.into()),
            });
        }
        Ok(out)
    }
}

pub(super) fn parse_bundle(
    username: &str,
    bundle: &api::PrekeyBundle,
) -> Result<PreKeyBundle, ClientError> {
    let err = |e: tacit_crypto::DecodeError| bad_bundle(username, e);
    let parsed = PreKeyBundle {
        identity: IdentityKey::from_bytes(bundle.identity_key.as_slice()).map_err(err)?,
        signed_prekey: SignedPreKey::from_parts(
            PreKeyId(bundle.signed_prekey.id),
            bundle.signed_prekey.public_key.as_slice(),
            bundle.signed_prekey.signature.as_slice(),
        )
        .map_err(err)?,
        one_time_prekey: bundle
            .one_time_prekey
            .as_ref()
            .map(|k| {
                OneTimePreKey::from_parts(
                    PreKeyId(k.id),
                    k.public_key.as_slice(),
                    k.signature.as_slice(),
                )
            })
            .transpose()
            .map_err(err)?,
        kem_prekey: KemPreKey::from_parts(
            PreKeyId(bundle.kem_prekey.id),
            if bundle.kem_prekey_is_last_resort {
                KemPreKeyKind::LastResort
            } else {
                KemPreKeyKind::OneTime
            },
            bundle.kem_prekey.public_key.as_slice(),
            bundle.kem_prekey.signature.as_slice(),
        )
        .map_err(err)?,
    };
    parsed.verify().map_err(|e| bad_bundle(username, e))?;
    Ok(parsed)
}

/// A session to encrypt with: one in the store (named by its base key, checked against
/// the pinned identity), or one just set up from a bundle.
pub(super) enum SessionFor {
    Stored([u8; 32]),
    New(Box<Session>),
}

/// Encrypts under the active session among `stored`, which must be the one checked before
/// (`checked`, its base key); returns the advanced state to save and the ciphertext.
pub(super) fn encrypt_active(
    stored: &[StoredSession],
    checked: &[u8; 32],
    plaintext: &[u8],
) -> (Option<SessionWrite>, Result<Vec<u8>, ClientError>) {
    let Some(record) = stored.iter().find(|s| s.active) else {
        return (
            None,
            Err(ClientError::Inconsistent(
                "the session went away while sending; send again".into(),
            )),
        );
    };
    if record.base_key.as_slice() != checked.as_slice() {
        return (
            None,
            Err(ClientError::Inconsistent(
                "the active session changed while sending; send again".into(),
            )),
        );
    }
    let mut session = match Session::from_bytes(&record.state) {
        Ok(session) => session,
        Err(e) => {
            let error = ClientError::Inconsistent(format!("stored session: {e}"));
            return (None, Err(error));
        }
    };
    match session.encrypt(plaintext) {
        Ok(ciphertext) => (
            Some(SessionWrite {
                base_key: session.base_key().to_vec(),
                state: session.to_bytes(),
            }),
            Ok(ciphertext),
        ),
        Err(e) => (None, Err(ClientError::Inconsistent(e.to_string()))),
    }
}
