//! Prekeys: upload, stock count, and claims that hand each one-time key out once.

use std::collections::HashSet;

use tacit_api::{
    ClaimBundlesRequest, DeviceId, OneTimePrekey, PrekeyBundles, PrekeyCount, SignedPrekey,
    UploadKeysRequest,
};

use super::accounts::validate_username;
use super::{AuthedDevice, Services};
use crate::error::ApiError;
use crate::store::Mailbox;

impl Services {
    pub(crate) fn validate_key(&self, field: &str, len: usize) -> Result<(), ApiError> {
        let max = self.config.limits.max_key_bytes;
        if len == 0 || u64::try_from(len).map_or(true, |l| l > max) {
            return Err(ApiError::BadRequest(format!(
                "{field}: must be 1 to {max} bytes"
            )));
        }
        Ok(())
    }

    pub(crate) fn validate_signed(&self, field: &str, key: &SignedPrekey) -> Result<(), ApiError> {
        self.validate_key(&format!("{field}.public_key"), key.public_key.len())?;
        self.validate_key(&format!("{field}.signature"), key.signature.len())
    }

    pub(crate) fn validate_one_time(
        &self,
        x25519: &[OneTimePrekey],
        kem: &[SignedPrekey],
    ) -> Result<(), ApiError> {
        let cap = self.config.limits.max_prekeys_per_upload;
        for (field, n) in [
            ("one_time_prekeys", x25519.len()),
            ("one_time_kem_prekeys", kem.len()),
        ] {
            if u32::try_from(n).map_or(true, |n| n > cap) {
                return Err(ApiError::PayloadTooLarge(format!(
                    "{field}: at most {cap} keys per upload"
                )));
            }
        }
        let mut ids = HashSet::new();
        for k in x25519 {
            self.validate_key("one_time_prekeys.public_key", k.public_key.len())?;
            self.validate_key("one_time_prekeys.signature", k.signature.len())?;
            if !ids.insert(k.id) {
                return Err(ApiError::BadRequest(format!(
                    "one_time_prekeys: id {} given twice",
                    k.id
                )));
            }
        }
        ids.clear();
        for k in kem {
            self.validate_signed("one_time_kem_prekeys", k)?;
            if !ids.insert(k.id) {
                return Err(ApiError::BadRequest(format!(
                    "one_time_kem_prekeys: id {} given twice",
                    k.id
                )));
            }
        }
        Ok(())
    }

    /// Replace some of the caller's keys and add one-time prekeys.
    pub async fn upload_keys(
        &self,
        caller: &AuthedDevice,
        req: UploadKeysRequest,
    ) -> Result<(), ApiError> {
        if let Some(k) = &req.identity_key {
            self.validate_key("identity_key", k.len())?;
        }
        if let Some(k) = &req.signed_prekey {
            self.validate_signed("signed_prekey", k)?;
        }
        if let Some(k) = &req.kem_last_resort_prekey {
            self.validate_signed("kem_last_resort_prekey", k)?;
        }
        self.validate_one_time(&req.one_time_prekeys, &req.one_time_kem_prekeys)?;
        if !req.one_time_prekeys.is_empty() || !req.one_time_kem_prekeys.is_empty() {
            // A device keeps a bounded stock: uploads beyond it are refused, not stored.
            let stock = self.store.prekey_count(caller.mailbox).await?;
            let cap = u64::from(self.config.limits.max_one_time_prekeys);
            for (field, have, adding) in [
                (
                    "one_time_prekeys",
                    stock.one_time_prekeys,
                    req.one_time_prekeys.len(),
                ),
                (
                    "one_time_kem_prekeys",
                    stock.one_time_kem_prekeys,
                    req.one_time_kem_prekeys.len(),
                ),
            ] {
                if have.saturating_add(adding as u64) > cap {
                    return Err(ApiError::StockFull(format!(
                        "{field}: the device would hold more than {cap} one-time prekeys (it has {have})"
                    )));
                }
            }
        }
        self.store.upload_keys(caller.mailbox, &req).await?;
        Ok(())
    }

    /// How many one-time prekeys the caller has left.
    pub async fn prekey_count(&self, caller: &AuthedDevice) -> Result<PrekeyCount, ApiError> {
        Ok(self.store.prekey_count(caller.mailbox).await?)
    }

    /// Claim bundles for some or all devices of a user. Each device bundle costs one token
    /// of the caller's and one of the target's rate limit.
    pub async fn claim_bundles(
        &self,
        caller: &AuthedDevice,
        username: &str,
        req: ClaimBundlesRequest,
    ) -> Result<PrekeyBundles, ApiError> {
        validate_username(username).map_err(|_| ApiError::NotFound("user"))?;
        let max = self.config.limits.max_devices_per_account;
        if u32::try_from(req.device_ids.len()).map_or(true, |n| n > max) {
            return Err(ApiError::BadRequest(format!(
                "device_ids: at most {max} devices"
            )));
        }
        let account = self.account_id(username).await?;
        let current: Vec<DeviceId> = self
            .store
            .devices(account)
            .await?
            .into_iter()
            .map(|d| d.device_id)
            .collect();
        let wanted: Vec<DeviceId> = if req.device_ids.is_empty() {
            current
        } else {
            let mut wanted = req.device_ids;
            wanted.sort_unstable();
            wanted.dedup();
            if wanted.iter().any(|d| !current.contains(d)) {
                return Err(ApiError::NotFound("device"));
            }
            wanted
        };
        let cost = u32::try_from(wanted.len()).unwrap_or(u32::MAX);
        let refused_by = if !self
            .claims_by_requester
            .try_take(caller.mailbox.account, cost)
        {
            Some(super::Limit::ClaimsPerRequester)
        } else if !self.claims_by_target.try_take(account, cost) {
            Some(super::Limit::ClaimsPerTarget)
        } else {
            None
        };
        if let Some(limit) = refused_by {
            self.metrics.claims_rate_limited.inc();
            self.rate_limit_tripped(limit);
            return Err(ApiError::RateLimited);
        }
        let mut bundles = Vec::with_capacity(wanted.len());
        for device in wanted {
            // A device removed meanwhile is simply left out.
            if let Some(b) = self.store.claim_bundle(Mailbox { account, device }).await? {
                bundles.push(b);
            }
        }
        Ok(PrekeyBundles {
            username: username.to_owned(),
            bundles,
        })
    }
}
