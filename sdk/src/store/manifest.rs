//! The store's manifest: the digest of every sealed row as last written.

use std::collections::{BTreeMap, BTreeSet};

use super::StoreError;

/// How much of a sealed row's SHA-256 the manifest keeps.
pub(super) const ROW_DIGEST_LEN: usize = 16;

/// The store's record of what it last wrote: for each sealed row (by its sealing context),
/// the first 16 bytes of the SHA-256 of its sealed value. Every seal has a fresh random
/// nonce, so each write gives a new digest, and an older copy of a row does not match. The
/// manifest is itself sealed (in `meta`) and rewritten in the same transaction as the row.
#[derive(Default)]
pub(super) struct Manifest(BTreeMap<String, [u8; ROW_DIGEST_LEN]>);

impl Manifest {
    pub(super) fn digest(sealed: &[u8]) -> [u8; ROW_DIGEST_LEN] {
        use sha2::Digest as _;
        let hash = sha2::Sha256::digest(sealed);
        let mut out = [0u8; ROW_DIGEST_LEN];
        out.copy_from_slice(&hash[..ROW_DIGEST_LEN]);
        out
    }

    /// `0x01 || count (4) || { len (2) || context || digest (16) }*`, in context order.
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(5 + self.0.len() * 64);
        out.push(1);
        let count = u32::try_from(self.0.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&count.to_be_bytes());
        for (context, digest) in &self.0 {
            let len = u16::try_from(context.len()).unwrap_or(u16::MAX);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(context.as_bytes());
            out.extend_from_slice(digest);
        }
        out
    }

    pub(super) fn decode(bytes: &[u8]) -> Option<Self> {
        fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
            let (head, rest) = (bytes.len() >= n).then(|| bytes.split_at(n))?;
            *bytes = rest;
            Some(head)
        }
        let mut rest = bytes;
        if take(&mut rest, 1)? != [1] {
            return None;
        }
        let count = u32::from_be_bytes(take(&mut rest, 4)?.try_into().ok()?);
        let mut map = BTreeMap::new();
        for _ in 0..count {
            let len = u16::from_be_bytes(take(&mut rest, 2)?.try_into().ok()?);
            let context = std::str::from_utf8(take(&mut rest, usize::from(len))?).ok()?;
            let digest = take(&mut rest, ROW_DIGEST_LEN)?.try_into().ok()?;
            if map.insert(context.to_owned(), digest).is_some() {
                return None;
            }
        }
        rest.is_empty().then_some(Self(map))
    }

    pub(super) fn set(&mut self, context: String, sealed: &[u8]) {
        self.0.insert(context, Self::digest(sealed));
    }

    pub(super) fn remove(&mut self, context: &str) {
        self.0.remove(context);
    }

    pub(super) fn remove_prefix(&mut self, prefix: &str) {
        self.0.retain(|context, _| !context.starts_with(prefix));
    }

    /// The row `context` holds `sealed`: it must be what was last written there.
    pub(super) fn check(&self, context: &str, sealed: &[u8]) -> Result<(), StoreError> {
        use subtle::ConstantTimeEq as _;
        match self.0.get(context) {
            Some(digest) if bool::from(digest.ct_eq(&Self::digest(sealed))) => Ok(()),
            _ => Err(StoreError::RolledBack(context.to_owned())),
        }
    }

    /// There is no row `context`: none may have been written since it was last deleted.
    pub(super) fn check_absent(&self, context: &str) -> Result<(), StoreError> {
        match self.0.contains_key(context) {
            true => Err(StoreError::RolledBack(format!("{context} (deleted)"))),
            false => Ok(()),
        }
    }

    /// Every row recorded under `prefix` was among those read (`seen`).
    pub(super) fn check_all_seen(
        &self,
        prefix: &str,
        seen: &BTreeSet<String>,
    ) -> Result<(), StoreError> {
        match self
            .0
            .keys()
            .filter(|c| c.starts_with(prefix))
            .find(|c| !seen.contains(*c))
        {
            Some(missing) => Err(StoreError::RolledBack(format!("{missing} (deleted)"))),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::{Manifest, ROW_DIGEST_LEN};

    proptest! {
        /// The manifest decoder reads only bytes the store just authenticated, but it is a
        /// parser all the same: any input is a manifest or `None`, never a panic.
        #[test]
        fn any_bytes_decode_or_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Some(manifest) = Manifest::decode(&bytes) {
                let again = Manifest::decode(&manifest.encode()).map(|m| m.0);
                prop_assert_eq!(again, Some(manifest.0));
            }
        }

        #[test]
        fn encode_then_decode_is_the_identity(
            rows in proptest::collection::btree_map("[a-z:0-9]{0,40}", any::<[u8; ROW_DIGEST_LEN]>(), 0..20)
        ) {
            let manifest = Manifest(rows);
            let decoded = Manifest::decode(&manifest.encode());
            prop_assert_eq!(decoded.map(|m| m.0), Some(manifest.0));
        }
    }
}
