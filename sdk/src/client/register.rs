//! Registration, opening an account, and prekey upkeep.

use super::*;

/// How a device with a fresh identity joins an account.
#[derive(Clone, Copy)]
enum Admission<'a> {
    /// `POST /v1/accounts`: a new account, with an invite, an ID token or neither (open
    /// registration).
    Register {
        username: &'a str,
        invite: Option<&'a str>,
        id_token: Option<&'a str>,
    },
    /// `POST /v1/devices/sso`: a new device of the account bound to the ID token.
    SsoDevice {
        id_token: &'a str,
        device_name: Option<&'a str>,
        replace_devices: bool,
    },
}

impl Client {
    /// Makes a device's key set for `identity`: the signed prekey, the last-resort KEM
    /// prekey and a first batch of one-time prekeys, with their secrets stored first.
    pub(super) async fn prepare_device(
        store: &Store,
        identity: &IdentityKeyPair,
        account: &mut AccountRecord,
    ) -> Result<api::DeviceKeys, ClientError> {
        let mut rng = rng();
        let signed = identity.generate_signed_prekey(&mut rng, PreKeyId(account.signed_prekey_id));
        let last_resort = identity.generate_kem_prekey(
            &mut rng,
            PreKeyId(account.kem_last_resort_id),
            KemPreKeyKind::LastResort,
        );
        let (one_time, kems) = Self::fresh_prekeys(identity, account);
        store
            .put_prekey(PrekeyKind::Signed, signed.id().0, &signed.to_secret_bytes())
            .await?;
        store
            .put_prekey(
                PrekeyKind::Kem,
                last_resort.id().0,
                &last_resort.to_secret_bytes(),
            )
            .await?;
        Self::store_prekeys(store, &one_time, &kems).await?;
        Ok(api::DeviceKeys {
            identity_key: identity.public().to_bytes().into(),
            signed_prekey: signed_wire(&signed.public()),
            kem_last_resort_prekey: kem_wire(last_resort.public()),
            one_time_prekeys: one_time
                .iter()
                .map(|k| one_time_wire(&k.public()))
                .collect(),
            one_time_kem_prekeys: kems.iter().map(|k| kem_wire(k.public())).collect(),
        })
    }

    /// Registers a new account on `server` and keeps it in the store at `store_path`.
    pub async fn register(
        store_path: &Path,
        key: KeySource<'_>,
        transport: Transport,
        username: &str,
        invite: Option<&str>,
    ) -> Result<Self, ClientError> {
        let admission = Admission::Register {
            username,
            invite,
            id_token: None,
        };
        Self::join_fresh(store_path, key, transport, admission).await
    }

    /// Registers a new account on `server` with an OpenID Connect ID token from the
    /// server's identity provider ([`Transport::oidc_config`]) instead of an invite, and
    /// keeps it in the store at `store_path`. `username` must be the name the server derives
    /// from the token's username claim ([`api::OidcConfig::username_claim`]). The server
    /// accepts a token once: [`ClientError::IdTokenRefused`] and
    /// [`ClientError::IdTokenReplayed`] say why it did not.
    pub async fn register_with_id_token(
        store_path: &Path,
        key: KeySource<'_>,
        transport: Transport,
        username: &str,
        id_token: &str,
    ) -> Result<Self, ClientError> {
        let admission = Admission::Register {
            username,
            invite: None,
            id_token: Some(id_token),
        };
        Self::join_fresh(store_path, key, transport, admission).await
    }

    /// Signs this machine in as a device of the account bound to the ID token's identity
    /// (`POST /v1/devices/sso`), in a new store at `store_path`.
    ///
    /// No existing device takes part, so unlike linking ([`Client::finish_link`]) the new
    /// device cannot receive the account identity: it makes an identity key of its own,
    /// which becomes the account's. Every device of an account must carry the account
    /// identity, so the server removes the account's other devices in the same step; this
    /// is account recovery onto a new machine, and runs only with `replace_devices`
    /// (otherwise [`ClientError::SsoWouldReplaceDevices`], and nothing changes). Contacts see
    /// the account's identity change and accept it with `trust` after comparing safety
    /// numbers. Use linking while another device of the account is at hand.
    ///
    /// The answer's username is the server's word: the caller should show it (the account
    /// keeps the name it registered with, while the provider's claim may have changed).
    pub async fn add_device_sso(
        store_path: &Path,
        key: KeySource<'_>,
        transport: Transport,
        id_token: &str,
        device_name: Option<&str>,
        replace_devices: bool,
    ) -> Result<Self, ClientError> {
        let admission = Admission::SsoDevice {
            id_token,
            device_name,
            replace_devices,
        };
        Self::join_fresh(store_path, key, transport, admission).await
    }

    /// Makes a device with a fresh identity in a new store at `store_path`, joins it to an
    /// account as `admission` says and keeps the account record. Any failure before the
    /// server's answer leaves the store without an account.
    async fn join_fresh(
        store_path: &Path,
        key: KeySource<'_>,
        transport: Transport,
        admission: Admission<'_>,
    ) -> Result<Self, ClientError> {
        let store = Store::open(store_path, key).await?;
        if let Some(record) = store.secret("account").await? {
            let record: AccountRecord =
                serde_json::from_slice(&record).map_err(Inconsistent::from)?;
            return Err(ClientError::AlreadyRegistered(record.username));
        }
        let identity = IdentityKeyPair::generate(&mut rng());
        // The username of an SSO device is the server's to say: filled in from its answer.
        let username = match admission {
            Admission::Register { username, .. } => username,
            Admission::SsoDevice { .. } => "",
        };
        let mut account = AccountRecord::new(transport.base_url(), username);
        let keys = Self::prepare_device(&store, &identity, &mut account).await?;
        let (device, credential) = match admission {
            Admission::Register {
                username,
                invite,
                id_token,
            } => {
                let response = transport
                    .register(&api::RegisterRequest {
                        username: username.to_owned(),
                        invite: invite.map(str::to_owned),
                        id_token: id_token.map(str::to_owned),
                        device_name: None,
                        keys,
                    })
                    .await?;
                (response.device_id, response.credential)
            }
            Admission::SsoDevice {
                id_token,
                device_name,
                replace_devices,
            } => {
                let response = transport
                    .sso_device(&api::SsoDeviceRequest {
                        id_token: id_token.to_owned(),
                        device_name: device_name.map(str::to_owned),
                        keys,
                        replace_devices,
                    })
                    .await
                    .map_err(|e| match e {
                        TransportError::Api { code, .. }
                            if code == api::ErrorCode::Conflict.as_str() =>
                        {
                            ClientError::SsoWouldReplaceDevices
                        }
                        other => other.into(),
                    })?;
                if !api::is_username(&response.username) {
                    return Err(ServerClaim::InvalidUsername {
                        answered: response.username,
                    }
                    .into());
                }
                account.username = response.username;
                (response.device_id, response.credential)
            }
        };
        account.device = device;
        account.credential = credential.to_string();
        store
            .put_secret("identity", &identity.to_secret_bytes())
            .await?;
        let client = Self {
            transport: transport.with_credential(&account.credential),
            store,
            identity,
            account,
        };
        client.save_account().await?;
        Ok(client)
    }

    /// Opens the account kept in the store at `store_path`.
    pub async fn open(
        store_path: &Path,
        key: KeySource<'_>,
        transport_for: impl FnOnce(&str) -> Result<Transport, TransportError>,
    ) -> Result<Self, ClientError> {
        let store = Store::open(store_path, key).await?;
        let Some(record) = store.secret("account").await? else {
            return Err(ClientError::NotRegistered);
        };
        let account: AccountRecord = serde_json::from_slice(&record).map_err(Inconsistent::from)?;
        let identity = store
            .secret("identity")
            .await?
            .ok_or(Inconsistent::IdentityMissing)?;
        let identity = IdentityKeyPair::from_secret_bytes(&identity).map_err(Inconsistent::from)?;
        let transport = transport_for(&account.server)?.with_credential(&account.credential);
        Ok(Self {
            store,
            transport,
            identity,
            account,
        })
    }

    /// Our username.
    pub fn username(&self) -> &str {
        &self.account.username
    }

    /// This device's id.
    pub fn device_id(&self) -> DeviceId {
        self.account.device
    }

    /// The account identity's fingerprint ([`identity_fingerprint`]): what a device being
    /// linked shows before it joins.
    pub fn fingerprint(&self) -> String {
        identity_fingerprint(self.identity.public())
    }

    /// The local store (history, contacts).
    pub fn store(&self) -> &Store {
        &self.store
    }

    pub(super) async fn save_account(&self) -> Result<(), ClientError> {
        let record = Zeroizing::new(serde_json::to_vec(&self.account).map_err(Inconsistent::from)?);
        self.store.put_secret("account", &record).await?;
        Ok(())
    }

    pub(super) fn fresh_prekeys(
        identity: &IdentityKeyPair,
        account: &mut AccountRecord,
    ) -> (Vec<OneTimePreKeyPair>, Vec<KemPreKeyPair>) {
        let mut rng = rng();
        let one_time = identity.generate_one_time_prekeys(
            &mut rng,
            PreKeyId(account.next_one_time_id),
            PREKEY_BATCH,
        );
        let kems = (0..PREKEY_BATCH)
            .map(|i| {
                identity.generate_kem_prekey(
                    &mut rng,
                    PreKeyId(account.next_kem_id.wrapping_add(i)),
                    KemPreKeyKind::OneTime,
                )
            })
            .collect();
        account.next_one_time_id = account.next_one_time_id.wrapping_add(PREKEY_BATCH);
        account.next_kem_id = account.next_kem_id.wrapping_add(PREKEY_BATCH);
        (one_time, kems)
    }

    pub(super) async fn store_prekeys(
        store: &Store,
        one_time: &[OneTimePreKeyPair],
        kems: &[KemPreKeyPair],
    ) -> Result<(), ClientError> {
        for key in one_time {
            store
                .put_prekey(PrekeyKind::OneTime, key.id().0, &key.to_secret_bytes())
                .await?;
        }
        for key in kems {
            store
                .put_prekey(PrekeyKind::Kem, key.id().0, &key.to_secret_bytes())
                .await?;
        }
        Ok(())
    }

    /// Uploads a new batch of one-time prekeys when the server's stock runs low.
    /// Returns whether it uploaded.
    pub async fn replenish_prekeys(&mut self) -> Result<bool, ClientError> {
        let count = self.transport.prekey_count().await?;
        if count.one_time_prekeys >= PREKEY_LOW_WATER
            && count.one_time_kem_prekeys >= PREKEY_LOW_WATER
        {
            return Ok(false);
        }
        let (one_time, kems) = Self::fresh_prekeys(&self.identity, &mut self.account);
        // Secrets first, then the counters, then the upload: a crash leaves unused secrets,
        // never published keys without secrets.
        Self::store_prekeys(&self.store, &one_time, &kems).await?;
        self.save_account().await?;
        self.transport
            .upload_keys(&api::UploadKeysRequest {
                one_time_prekeys: one_time
                    .iter()
                    .map(|k| one_time_wire(&k.public()))
                    .collect(),
                one_time_kem_prekeys: kems.iter().map(|k| kem_wire(k.public())).collect(),
                ..Default::default()
            })
            .await?;
        Ok(true)
    }

    /// Upkeep: replenishes one-time prekeys when the server runs low, rotates the signed
    /// and last-resort prekeys when they are due, and fetches the organisation's policy
    /// when the cached one is stale.
    pub async fn maintain(&mut self) -> Result<(), ClientError> {
        self.replenish_prekeys().await?;
        self.rotate_prekeys_if_older(SIGNED_PREKEY_ROTATION).await?;
        self.refresh_policy_if_stale().await?;
        Ok(())
    }

    /// Replaces the signed prekey and the last-resort KEM prekey if they are older than
    /// `max_age` (the previous ones are kept one more period; older ones are deleted).
    /// Returns whether it rotated.
    pub async fn rotate_prekeys_if_older(
        &mut self,
        max_age: std::time::Duration,
    ) -> Result<bool, ClientError> {
        let age_ms = now_ms().saturating_sub(self.account.signed_prekey_at);
        if u128::try_from(age_ms).unwrap_or(0) < max_age.as_millis() {
            return Ok(false);
        }
        let mut rng = rng();
        let (old_signed, old_kem) = (
            self.account.signed_prekey_id,
            self.account.kem_last_resort_id,
        );
        let signed_id = old_signed.wrapping_add(1);
        let kem_id = self.account.next_kem_id;
        let signed = self
            .identity
            .generate_signed_prekey(&mut rng, PreKeyId(signed_id));
        let kem = self.identity.generate_kem_prekey(
            &mut rng,
            PreKeyId(kem_id),
            KemPreKeyKind::LastResort,
        );
        // Secrets first, then the record, then the upload (as in `replenish_prekeys`).
        self.store
            .put_prekey(PrekeyKind::Signed, signed_id, &signed.to_secret_bytes())
            .await?;
        self.store
            .put_prekey(PrekeyKind::Kem, kem_id, &kem.to_secret_bytes())
            .await?;
        self.account.next_kem_id = kem_id.wrapping_add(1);
        self.account.signed_prekey_id = signed_id;
        self.account.kem_last_resort_id = kem_id;
        self.account.signed_prekey_at = now_ms();
        self.save_account().await?;
        self.transport
            .upload_keys(&api::UploadKeysRequest {
                signed_prekey: Some(signed_wire(&signed.public())),
                kem_last_resort_prekey: Some(kem_wire(kem.public())),
                ..Default::default()
            })
            .await?;
        // Keep the ones just replaced; drop every older signed and last-resort prekey.
        self.store
            .delete_prekeys_before(PrekeyKind::Signed, old_signed)
            .await?;
        if let Some(previous) = self.account.previous_kem_last_resort_id.replace(old_kem) {
            self.store.delete_prekey(PrekeyKind::Kem, previous).await?;
        }
        self.save_account().await?;
        Ok(true)
    }

    /// Our account's devices as the server lists them (with their names).
    pub async fn devices(&self) -> Result<Vec<api::DeviceInfo>, ClientError> {
        Ok(self.transport.own_devices().await?.devices)
    }

    /// Removes another device of our account: its credential stops working at once.
    pub async fn remove_device(&self, device: DeviceId) -> Result<(), ClientError> {
        if device == self.account.device {
            return Err(LinkError::RemoveThisDevice.into());
        }
        self.transport.remove_device(device).await?;
        Ok(())
    }

    /// Deletes the whole account on the server (every device, key and waiting message; the
    /// username becomes free). The local store is left for the caller to delete.
    pub async fn delete_account(self) -> Result<(), ClientError> {
        self.transport.delete_account().await?;
        self.store.close().await;
        Ok(())
    }
}

pub(super) fn signed_wire(key: &SignedPreKey) -> api::SignedPrekey {
    api::SignedPrekey {
        id: key.id().0,
        public_key: key.key().as_bytes().to_vec().into(),
        signature: key.signature().to_vec().into(),
    }
}

pub(super) fn one_time_wire(key: &OneTimePreKey) -> api::OneTimePrekey {
    api::OneTimePrekey {
        id: key.id().0,
        public_key: key.key().as_bytes().to_vec().into(),
        signature: key.signature().to_vec().into(),
    }
}

pub(super) fn kem_wire(key: &KemPreKey) -> api::SignedPrekey {
    api::SignedPrekey {
        id: key.id().0,
        public_key: key.key_bytes().to_vec().into(),
        signature: key.signature().to_vec().into(),
    }
}
