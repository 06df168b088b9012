//! Sessions per remote device: which to use, claiming bundles, and the identity checks on everything the server hands out.

use super::*;

impl Client {
    pub(super) fn address(username: &str, device: DeviceId) -> Result<Address, ClientError> {
        Ok(Address::new(username, device.0).map_err(Inconsistent::from)?)
    }

    /// Checks `identity` against the pin for `username`, pinning it on first use. A device
    /// of our own account must carry the account identity.
    pub(super) async fn check_identity(
        &self,
        username: &str,
        device: DeviceId,
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
        device: DeviceId,
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
    ) -> Result<BTreeSet<DeviceId>, ClientError> {
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
            return Err(ServerClaim::DevicesOfAnother {
                asked: username.to_owned(),
                answered: list.username,
            }
            .into());
        }
        let mut devices = BTreeSet::new();
        for device in list.devices {
            let id = device.device_id;
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
        device: DeviceId,
    ) -> Result<Option<Session>, ClientError> {
        let sessions = self.store.sessions(username, device).await?;
        match sessions.into_iter().find(|s| s.active) {
            Some(stored) => Session::from_bytes(&stored.state)
                .map(Some)
                .map_err(|e| Inconsistent::StoredSession(e).into()),
            None => Ok(None),
        }
    }

    /// Sessions for every device in `devices`, claiming bundles for those without one.
    pub(super) async fn sessions_for(
        &self,
        username: &str,
        devices: &BTreeSet<DeviceId>,
    ) -> Result<Vec<(DeviceId, SessionFor)>, ClientError> {
        let mut sessions = Vec::new();
        let mut missing = Vec::new();
        for &device in devices {
            match self.active_session(username, device).await? {
                Some(session) => {
                    self.check_identity(username, device, session.remote_identity())
                        .await?;
                    sessions.push((device, SessionFor::Stored(*session.base_key())));
                }
                None => missing.push(device),
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
            return Err(ServerClaim::BundlesOfAnother {
                asked: username.to_owned(),
                answered: bundles.username,
            }
            .into());
        }
        let local = Self::address(&self.account.username, self.account.device)?;
        let mut rng = rng();
        let mut claimed = BTreeSet::new();
        for bundle in &bundles.bundles {
            let device = bundle.device_id;
            if !missing.contains(&device) || !claimed.insert(device) {
                return Err(ServerClaim::UnaskedBundle {
                    username: username.to_owned(),
                    device: bundle.device_id,
                }
                .into());
            }
            let parsed = parse_bundle(username, bundle)?;
            self.check_identity(username, bundle.device_id, &parsed.identity)
                .await?;
            let remote = Self::address(username, bundle.device_id)?;
            let session = Session::initiate(&mut rng, &self.identity, &local, &remote, &parsed)?;
            sessions.push((bundle.device_id, SessionFor::New(Box::new(session))));
        }
        Ok(sessions)
    }

    /// Encrypts `plaintext` for each device, persisting each advanced session before it is
    /// sent (so a key is never used twice, even if the send is retried).
    pub(super) async fn encrypt_for(
        &self,
        username: &str,
        devices: &BTreeSet<DeviceId>,
        plaintext: &[u8],
    ) -> Result<Vec<api::DeviceCiphertext>, ClientError> {
        let mut out = Vec::with_capacity(devices.len());
        for (device, session) in self.sessions_for(username, devices).await? {
            let ciphertext = match session {
                // A stored session: loaded again, used and saved in one store transaction,
                // so no other writer can encrypt under the state it was loaded in.
                SessionFor::Stored(checked) => {
                    encrypt_with_active(&self.store, username, device, &checked, plaintext).await?
                }
                // A new session from a bundle: its keys are its own.
                SessionFor::New(mut session) => {
                    let ciphertext = session.encrypt(plaintext).map_err(Inconsistent::from)?;
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
                device_id: device,
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

/// Encrypts under the active session with a device, which must be the one checked before
/// (`checked`, its base key), and saves the advanced state, in one step of the store: no
/// other writer can encrypt under the state it was loaded in.
pub(super) async fn encrypt_with_active<S: SessionStore>(
    store: &S,
    username: &str,
    device: DeviceId,
    checked: &[u8; 32],
    plaintext: &[u8],
) -> Result<Vec<u8>, ClientError> {
    store
        .advance_session(username, device, |stored| {
            encrypt_active(&stored, checked, plaintext)
        })
        .await?
}

/// Encrypts under the active session among `stored`, which must be the one checked before
/// (`checked`, its base key); returns the advanced state to save and the ciphertext.
fn encrypt_active(
    stored: &[StoredSession],
    checked: &[u8; 32],
    plaintext: &[u8],
) -> (Option<SessionWrite>, Result<Vec<u8>, ClientError>) {
    let Some(record) = stored.iter().find(|s| s.active) else {
        return (None, Err(Inconsistent::SessionGone.into()));
    };
    if record.base_key.as_slice() != checked.as_slice() {
        return (None, Err(Inconsistent::SessionChanged.into()));
    }
    let mut session = match Session::from_bytes(&record.state) {
        Ok(session) => session,
        Err(e) => {
            let error = Inconsistent::StoredSession(e).into();
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
        Err(e) => (None, Err(Inconsistent::from(e).into())),
    }
}

/// What trying the stored sessions with a device on a message gave.
pub(super) struct Tried {
    /// The plaintext, if one of them opened it (or why a stored session is unreadable).
    pub(super) opened: Option<Result<Vec<u8>, ClientError>>,
    /// The sessions as they were before.
    pub(super) stored: Vec<StoredSession>,
    /// Why the last session that was the message's own refused it, if one did.
    pub(super) last_error: Option<DecryptError>,
}

/// Tries each stored session with a device on `message`, the active one first, then newest
/// first; the one that opens it is saved, advanced, as the active session (Sesame: the
/// session a peer uses is the one to answer on), in one step of the store. A message none
/// opens changes nothing.
pub(super) async fn decrypt_stored<S: SessionStore>(
    store: &S,
    sender: &str,
    device: DeviceId,
    message: &Message,
) -> Result<Tried, StoreError> {
    let mut rng = rng();
    store
        .advance_session(sender, device, |stored| {
            let mut last_error = None;
            for record in &stored {
                let mut session = match Session::from_bytes(&record.state) {
                    Ok(session) => session,
                    Err(e) => {
                        let error = Inconsistent::StoredSession(e).into();
                        let tried = Tried {
                            opened: Some(Err(error)),
                            stored,
                            last_error: None,
                        };
                        return (None, tried);
                    }
                };
                match session.decrypt(&mut rng, message) {
                    Ok(plaintext) => {
                        let write = SessionWrite {
                            base_key: session.base_key().to_vec(),
                            state: session.to_bytes(),
                        };
                        let tried = Tried {
                            opened: Some(Ok(plaintext)),
                            stored,
                            last_error: None,
                        };
                        return (Some(write), tried);
                    }
                    Err(DecryptError::OtherSession) => {}
                    Err(error) => last_error = Some(error),
                }
            }
            let tried = Tried {
                opened: None,
                stored,
                last_error,
            };
            (None, tried)
        })
        .await
}

/// The secrets of the prekeys a prekey message names, or why the message cannot be
/// accepted (a sentence for the user).
pub(super) struct NamedPrekeys {
    pub(super) signed: Zeroizing<Vec<u8>>,
    pub(super) kem: Zeroizing<Vec<u8>>,
    pub(super) one_time: Option<Zeroizing<Vec<u8>>>,
}

/// Loads the prekeys a prekey message names. A one-time prekey that is gone was used by an
/// earlier session: the message is refused (a replay of a first message starts nothing).
pub(super) async fn named_prekeys<S: PreKeyStore>(
    store: &S,
    first: &tacit_crypto::PreKeyMessage,
) -> Result<Result<NamedPrekeys, &'static str>, StoreError> {
    let signed = store
        .prekey(PrekeyKind::Signed, first.signed_prekey_id().0)
        .await?;
    let kem = store
        .prekey(PrekeyKind::Kem, first.kem_prekey_id().0)
        .await?;
    let (Some(signed), Some(kem)) = (signed, kem) else {
        return Ok(Err("message names a prekey this device does not have"));
    };
    let one_time = match first.one_time_prekey_id() {
        Some(id) => match store.prekey(PrekeyKind::OneTime, id.0).await? {
            Some(secret) => Some(secret),
            None => return Ok(Err("message names a one-time prekey already used")),
        },
        None => None,
    };
    Ok(Ok(NamedPrekeys {
        signed,
        kem,
        one_time,
    }))
}

/// Saves a session accepted from a prekey message as the active one, then consumes the
/// prekeys it used: the one-time X25519 prekey and a one-time ML-KEM prekey are deleted;
/// the signed prekey and a last-resort ML-KEM prekey stay (they serve every sender until
/// they rotate).
pub(super) async fn save_accepted<S: SessionStore + PreKeyStore>(
    store: &S,
    sender: &str,
    device: DeviceId,
    session: &Session,
    one_time: Option<&OneTimePreKeyPair>,
    kem: &KemPreKeyPair,
) -> Result<(), StoreError> {
    store
        .save_session(
            sender,
            device,
            session.base_key(),
            &session.to_bytes(),
            true,
        )
        .await?;
    if let Some(one_time) = one_time {
        store
            .delete_prekey(PrekeyKind::OneTime, one_time.id().0)
            .await?;
    }
    if kem.public().kind() == KemPreKeyKind::OneTime {
        store.delete_prekey(PrekeyKind::Kem, kem.id().0).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    /// A device: its identity and the prekeys it published (kept in its store).
    struct Device {
        address: Address,
        identity: IdentityKeyPair,
        store: MemoryStore,
        signed: SignedPreKeyPair,
        one_time: OneTimePreKeyPair,
        kem: KemPreKeyPair,
    }

    impl Device {
        async fn new(user: &str, kem_kind: KemPreKeyKind) -> Self {
            let mut rng = rng();
            let identity = IdentityKeyPair::generate(&mut rng);
            let signed = identity.generate_signed_prekey(&mut rng, PreKeyId(1));
            let one_time = identity
                .generate_one_time_prekeys(&mut rng, PreKeyId(7), 1)
                .remove(0);
            let kem = identity.generate_kem_prekey(&mut rng, PreKeyId(3), kem_kind);
            let store = MemoryStore::new();
            store
                .put_prekey(PrekeyKind::Signed, 1, &signed.to_secret_bytes())
                .await
                .unwrap();
            store
                .put_prekey(PrekeyKind::OneTime, 7, &one_time.to_secret_bytes())
                .await
                .unwrap();
            store
                .put_prekey(PrekeyKind::Kem, 3, &kem.to_secret_bytes())
                .await
                .unwrap();
            Self {
                address: Address::new(user, 1).unwrap(),
                identity,
                store,
                signed,
                one_time,
                kem,
            }
        }

        fn bundle(&self) -> PreKeyBundle {
            PreKeyBundle {
                identity: self.identity.public().clone(),
                signed_prekey: self.signed.public(),
                one_time_prekey: Some(self.one_time.public()),
                kem_prekey: self.kem.public().clone(),
            }
        }

        /// Accepts a first message as the receive path does: the named prekeys, then the
        /// session saved and the prekeys consumed. `Err` with the refusal.
        async fn accept(&self, from: &Address, message: &[u8]) -> Result<Vec<u8>, String> {
            let Message::PreKey(first) = Message::from_bytes(message).unwrap() else {
                panic!("not a prekey message");
            };
            let named = named_prekeys(&self.store, &first).await.unwrap()?;
            let signed = SignedPreKeyPair::from_secret_bytes(&named.signed).unwrap();
            let kem = KemPreKeyPair::from_secret_bytes(&named.kem).unwrap();
            let one_time = named
                .one_time
                .map(|s| OneTimePreKeyPair::from_secret_bytes(&s).unwrap());
            let keys = ResponderKeys {
                identity: &self.identity,
                signed_prekey: &signed,
                one_time_prekey: one_time.as_ref(),
                kem_prekey: &kem,
            };
            let (session, plaintext) =
                Session::accept(&mut rng(), keys, &self.address, from, &first).unwrap();
            save_accepted(
                &self.store,
                from.user(),
                DeviceId(1),
                &session,
                one_time.as_ref(),
                &kem,
            )
            .await
            .unwrap();
            Ok(plaintext)
        }
    }

    /// The base key of the active session with alice's device, which is listed first.
    async fn active(store: &MemoryStore) -> Vec<u8> {
        let sessions = SessionStore::sessions(store, "alice", DeviceId(1))
            .await
            .unwrap();
        assert_eq!(sessions.iter().filter(|s| s.active).count(), 1);
        assert!(sessions[0].active, "the active session is listed first");
        sessions[0].base_key.clone()
    }

    fn alice() -> (IdentityKeyPair, Address) {
        (
            IdentityKeyPair::generate(&mut rng()),
            Address::new("alice", 1).unwrap(),
        )
    }

    /// A first message uses the one-time prekey and a one-time KEM prekey: both are gone
    /// once the session is saved, so the same message again is refused; the signed prekey
    /// stays.
    #[tokio::test]
    async fn a_first_message_consumes_its_one_time_prekeys_once() {
        let bob = Device::new("bob", KemPreKeyKind::OneTime).await;
        let (identity, address) = alice();
        let mut session =
            Session::initiate(&mut rng(), &identity, &address, &bob.address, &bob.bundle())
                .unwrap();
        let first = session.encrypt(b"hello").unwrap();
        assert_eq!(bob.accept(&address, &first).await.unwrap(), b"hello");
        let left = |kind, id| bob.store.prekey(kind, id);
        assert!(left(PrekeyKind::OneTime, 7).await.unwrap().is_none());
        assert!(left(PrekeyKind::Kem, 3).await.unwrap().is_none());
        assert!(left(PrekeyKind::Signed, 1).await.unwrap().is_some());
        let replay = bob.accept(&address, &first).await.unwrap_err();
        assert!(replay.contains("already used") || replay.contains("does not have"));
    }

    /// A last-resort KEM prekey serves every sender until it rotates: it is not consumed.
    #[tokio::test]
    async fn a_last_resort_kem_prekey_is_kept() {
        let bob = Device::new("bob", KemPreKeyKind::LastResort).await;
        let (identity, address) = alice();
        let mut session =
            Session::initiate(&mut rng(), &identity, &address, &bob.address, &bob.bundle())
                .unwrap();
        bob.accept(&address, &session.encrypt(b"hi").unwrap())
            .await
            .unwrap();
        assert!(
            bob.store
                .prekey(PrekeyKind::Kem, 3)
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            bob.store
                .prekey(PrekeyKind::OneTime, 7)
                .await
                .unwrap()
                .is_none()
        );
    }

    /// Which session is tried: every stored one, the active first; the one that opens a
    /// message becomes the active one, and a message none opens changes nothing.
    #[tokio::test]
    async fn the_session_that_opens_a_message_becomes_active() {
        let bob = Device::new("bob", KemPreKeyKind::LastResort).await;
        let (identity, address) = alice();
        // Alice starts two sessions (two of her sends raced); Bob accepts both, the second
        // last, so it is his active one.
        let mut bundle = bob.bundle();
        bundle.one_time_prekey = None;
        let mut older =
            Session::initiate(&mut rng(), &identity, &address, &bob.address, &bundle).unwrap();
        let mut newer =
            Session::initiate(&mut rng(), &identity, &address, &bob.address, &bundle).unwrap();
        bob.accept(&address, &older.encrypt(b"one").unwrap())
            .await
            .unwrap();
        bob.accept(&address, &newer.encrypt(b"two").unwrap())
            .await
            .unwrap();
        assert_eq!(active(&bob.store).await, newer.base_key().to_vec());

        // A message under the older session opens (the active one is tried first and
        // refuses it) and makes the older session the active one.
        let message = Message::from_bytes(&older.encrypt(b"three").unwrap()).unwrap();
        let tried = decrypt_stored(&bob.store, "alice", DeviceId(1), &message)
            .await
            .unwrap();
        assert_eq!(tried.opened.unwrap().unwrap(), b"three");
        assert_eq!(tried.stored.len(), 2);
        assert_eq!(active(&bob.store).await, older.base_key().to_vec());

        // A message of a third session opens under none, and nothing changes.
        let before: Vec<_> = SessionStore::sessions(&bob.store, "alice", DeviceId(1))
            .await
            .unwrap()
            .into_iter()
            .map(|s| (s.base_key, s.active, s.state.to_vec()))
            .collect();
        let mut stranger =
            Session::initiate(&mut rng(), &identity, &address, &bob.address, &bundle).unwrap();
        let message = Message::from_bytes(&stranger.encrypt(b"four").unwrap()).unwrap();
        let tried = decrypt_stored(&bob.store, "alice", DeviceId(1), &message)
            .await
            .unwrap();
        assert!(tried.opened.is_none());
        let after: Vec<_> = SessionStore::sessions(&bob.store, "alice", DeviceId(1))
            .await
            .unwrap()
            .into_iter()
            .map(|s| (s.base_key, s.active, s.state.to_vec()))
            .collect();
        assert_eq!(before, after);
    }

    /// Encrypting uses the active session, and only the one that was checked: if another
    /// became active in between, nothing is encrypted or saved.
    #[tokio::test]
    async fn encryption_uses_the_checked_active_session_only() {
        let store = MemoryStore::new();
        let bob = Device::new("bob", KemPreKeyKind::LastResort).await;
        let (identity, address) = alice();
        let mut bundle = bob.bundle();
        bundle.one_time_prekey = None;
        let first =
            Session::initiate(&mut rng(), &identity, &address, &bob.address, &bundle).unwrap();
        let base = *first.base_key();
        store
            .save_session("bob", DeviceId(1), &base, &first.to_bytes(), true)
            .await
            .unwrap();
        let sent = encrypt_with_active(&store, "bob", DeviceId(1), &base, b"hi")
            .await
            .unwrap();
        assert_eq!(bob.accept(&address, &sent).await.unwrap(), b"hi");
        let advanced = SessionStore::sessions(&store, "bob", DeviceId(1))
            .await
            .unwrap();
        assert_ne!(
            advanced[0].state.as_slice(),
            first.to_bytes().as_slice(),
            "the advanced state was saved"
        );

        let other =
            Session::initiate(&mut rng(), &identity, &address, &bob.address, &bundle).unwrap();
        store
            .save_session(
                "bob",
                DeviceId(1),
                other.base_key(),
                &other.to_bytes(),
                true,
            )
            .await
            .unwrap();
        let err = encrypt_with_active(&store, "bob", DeviceId(1), &base, b"again")
            .await
            .unwrap_err();
        assert!(
            matches!(err, ClientError::Inconsistent(Inconsistent::SessionChanged)),
            "{err}"
        );
        let none = encrypt_with_active(&MemoryStore::new(), "bob", DeviceId(1), &base, b"x")
            .await
            .unwrap_err();
        assert!(matches!(
            none,
            ClientError::Inconsistent(Inconsistent::SessionGone)
        ));
    }
}
