//! Signed checkpoints of the audit chain, and the audit key that signs them.
//!
//! A checkpoint states "the chain had `seq` entries and its head hash was `head` at
//! `time_ms`", signed with Ed25519 over
//! `"tacit-audit-checkpoint-v1" 0x00 || seq (u64 BE) || head || time_ms (i64 BE)`.
//! The key lives in a file outside the database (`audit.key_file`), so a person who can
//! rewrite the database cannot sign a checkpoint for a rewritten chain. An outside party
//! keeps the checkpoints (they are logged, stored, and exportable) and the public key
//! (`tacit-server audit public-key`); `tacit-server audit verify --checkpoint FILE` then
//! detects a chain rewritten or truncated behind a checkpoint.
//!
//! The key file holds the 32-byte Ed25519 seed in hex on one line, mode 0600. It is made
//! on first use if absent.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::EntryHash;
use super::chain::Head;

/// The domain label of a checkpoint's signed message.
const CHECKPOINT_LABEL: &[u8] = b"tacit-audit-checkpoint-v1\0";
/// The domain label of a signed anchor (where a pruned chain starts).
const ANCHOR_LABEL: &[u8] = b"tacit-audit-anchor-v1\0";

/// Why a checkpoint or the audit key could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// The key file could not be read or written.
    #[error("audit key file {path}: {source}")]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The key file does not hold a key.
    #[error("audit key file {0} does not hold a key (64 hex digits expected)")]
    BadKeyFile(PathBuf),
    /// The key file can be read by others.
    #[error("audit key file {0} is readable by other users: chmod 600 it")]
    KeyFileOpen(PathBuf),
    /// No random bytes for a new key.
    #[error("no randomness for a new audit key: {0}")]
    Random(String),
    /// A checkpoint is not well formed.
    #[error("checkpoint is malformed: {0}")]
    Malformed(&'static str),
    /// A checkpoint was signed by another key than the server's.
    #[error(
        "checkpoint (or the pruned log's anchor) at entry {seq} was signed by another key ({found}), not this server's audit key ({expected})"
    )]
    OtherKey {
        /// The checkpoint's entry.
        seq: u64,
        /// The key it names.
        found: String,
        /// The server's key.
        expected: String,
    },
    /// A checkpoint's signature does not verify.
    #[error("checkpoint at entry {0} has a bad signature (forged or altered)")]
    BadSignature(u64),
    /// The anchor of the pruned chain is not signed by this key: it was moved (or
    /// written) by someone who does not hold it.
    #[error(
        "the audit log starts after entry {0}, but that anchor has no valid signature of the audit key (entries deleted and the anchor moved by someone without the key)"
    )]
    BadAnchorSignature(u64),
}

/// The server's audit signing key. Never printed; zeroized on drop (by `ed25519-dalek`).
pub struct AuditKey {
    signing: SigningKey,
}

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditKey")
            .field("public", &hex::encode(self.public().as_bytes()))
            .finish_non_exhaustive()
    }
}

impl AuditKey {
    /// A key from its 32-byte seed.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self {
            signing: SigningKey::from_bytes(seed),
        }
    }

    /// Reads the key at `path`, or makes one there (mode 0600) if the file does not exist.
    pub fn load_or_create(path: &Path) -> Result<Self, CheckpointError> {
        match fs::read_to_string(path) {
            Ok(text) => Self::parse(path, &Zeroizing::new(text)),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Self::create(path),
            Err(source) => Err(CheckpointError::KeyFile {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// Reads the key at `path`; it must exist.
    pub fn load(path: &Path) -> Result<Self, CheckpointError> {
        let text = fs::read_to_string(path).map_err(|source| CheckpointError::KeyFile {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &Zeroizing::new(text))
    }

    fn parse(path: &Path, text: &str) -> Result<Self, CheckpointError> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = fs::metadata(path)
                .map_err(|source| CheckpointError::KeyFile {
                    path: path.to_owned(),
                    source,
                })?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                return Err(CheckpointError::KeyFileOpen(path.to_owned()));
            }
        }
        let bytes = Zeroizing::new(
            hex::decode(text.trim()).map_err(|_| CheckpointError::BadKeyFile(path.to_owned()))?,
        );
        let seed: &[u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| CheckpointError::BadKeyFile(path.to_owned()))?;
        Ok(Self::from_seed(seed))
    }

    fn create(path: &Path) -> Result<Self, CheckpointError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut()).map_err(|e| CheckpointError::Random(e.to_string()))?;
        let io = |source| CheckpointError::KeyFile {
            path: path.to_owned(),
            source,
        };
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        let mut file = options.open(path).map_err(io)?;
        let text = Zeroizing::new(format!("{}\n", hex::encode(seed.as_ref())));
        file.write_all(text.as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)?;
        Ok(Self::from_seed(&seed))
    }

    /// The public key that verifies this key's checkpoints.
    pub fn public(&self) -> VerifyingKey {
        self.signing.verifying_key()
    }

    /// Signs `head` as of `time_ms`.
    pub fn checkpoint(&self, head: Head, time_ms: i64) -> Checkpoint {
        let signature = self
            .signing
            .sign(&signed_message(head.seq, &head.hash, time_ms));
        Checkpoint {
            version: 1,
            seq: head.seq,
            head: head.hash.to_string(),
            time_ms,
            public_key: hex::encode(self.public().as_bytes()),
            signature: hex::encode(signature.to_bytes()),
        }
    }
}

impl AuditKey {
    /// Signs the anchor of a prune: the last pruned entry (`head`), when it was appended
    /// (`entry_time_ms`) and when it was pruned (`pruned_at_ms`).
    pub fn anchor(&self, head: Head, entry_time_ms: i64, pruned_at_ms: i64) -> Anchor {
        let signature = self
            .signing
            .sign(&anchor_message(head, entry_time_ms, pruned_at_ms));
        Anchor {
            head,
            entry_time_ms,
            pruned_at_ms,
            signature: signature.to_bytes(),
            public_key: self.public().to_bytes(),
        }
    }
}

/// Where a pruned chain starts, signed by the audit key when the prune was made: whoever
/// can write the database but does not hold the key cannot move it (delete a prefix and
/// claim retention did).
///
/// Signed: `"tacit-audit-anchor-v1" 0x00 || seq (u64 BE) || hash (32) || entry_time_ms
/// (i64 BE) || pruned_at_ms (i64 BE)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Anchor {
    /// The last pruned entry's number and hash.
    pub head: Head,
    /// When that entry was appended (ms since the epoch).
    pub entry_time_ms: i64,
    /// When the prune ran (ms since the epoch).
    pub pruned_at_ms: i64,
    /// The Ed25519 signature.
    pub signature: [u8; 64],
    /// The key that signed it (as the anchor row says; only `key` in [`Anchor::verify`]
    /// is trusted).
    pub public_key: [u8; 32],
}

impl Anchor {
    /// Checks the signature against `key`. An anchor that names another key is
    /// [`CheckpointError::OtherKey`] (the audit key was replaced: verify with the old one);
    /// one that does not verify under `key` is [`CheckpointError::BadAnchorSignature`].
    pub fn verify(&self, key: &VerifyingKey) -> Result<(), CheckpointError> {
        if self.public_key != key.to_bytes() {
            return Err(CheckpointError::OtherKey {
                seq: self.head.seq,
                found: hex::encode(self.public_key),
                expected: hex::encode(key.as_bytes()),
            });
        }
        key.verify_strict(
            &anchor_message(self.head, self.entry_time_ms, self.pruned_at_ms),
            &Signature::from_bytes(&self.signature),
        )
        .map_err(|_| CheckpointError::BadAnchorSignature(self.head.seq))
    }
}

fn anchor_message(head: Head, entry_time_ms: i64, pruned_at_ms: i64) -> Vec<u8> {
    let mut message = Vec::with_capacity(ANCHOR_LABEL.len() + 56);
    message.extend_from_slice(ANCHOR_LABEL);
    message.extend_from_slice(&head.seq.to_be_bytes());
    message.extend_from_slice(&head.hash.0);
    message.extend_from_slice(&entry_time_ms.to_be_bytes());
    message.extend_from_slice(&pruned_at_ms.to_be_bytes());
    message
}

fn signed_message(seq: u64, head: &EntryHash, time_ms: i64) -> Vec<u8> {
    let mut message = Vec::with_capacity(CHECKPOINT_LABEL.len() + 48);
    message.extend_from_slice(CHECKPOINT_LABEL);
    message.extend_from_slice(&seq.to_be_bytes());
    message.extend_from_slice(&head.0);
    message.extend_from_slice(&time_ms.to_be_bytes());
    message
}

/// A signed statement of the chain's head, as kept by outside parties (one JSON object; a
/// file of them has one per line).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// The format (1).
    pub version: u32,
    /// How many entries the chain had.
    pub seq: u64,
    /// The hash of entry `seq` (hex; all zeros for the empty chain).
    pub head: String,
    /// When it was signed, in milliseconds since the Unix epoch.
    pub time_ms: i64,
    /// The Ed25519 public key that signed it (hex).
    pub public_key: String,
    /// The Ed25519 signature (hex).
    pub signature: String,
}

impl Checkpoint {
    /// Checks the signature against `key` (the server's audit key, known to the verifier
    /// independently of the checkpoint) and gives the head it vouches for.
    pub fn verify(&self, key: &VerifyingKey) -> Result<Head, CheckpointError> {
        if self.version != 1 {
            return Err(CheckpointError::Malformed("unknown version"));
        }
        let expected = hex::encode(key.as_bytes());
        if self.public_key != expected {
            return Err(CheckpointError::OtherKey {
                seq: self.seq,
                found: self.public_key.clone(),
                expected,
            });
        }
        let hash = EntryHash::from_hex(&self.head)
            .ok_or(CheckpointError::Malformed("head is not 64 hex digits"))?;
        let signature: [u8; 64] = hex::decode(&self.signature)
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or(CheckpointError::Malformed(
                "signature is not 128 hex digits",
            ))?;
        key.verify_strict(
            &signed_message(self.seq, &hash, self.time_ms),
            &Signature::from_bytes(&signature),
        )
        .map_err(|_| CheckpointError::BadSignature(self.seq))?;
        Ok(Head {
            seq: self.seq,
            hash,
        })
    }

    /// Reads checkpoints from text: one JSON object per line (blank lines skipped).
    pub fn parse_all(text: &str) -> Result<Vec<Self>, CheckpointError> {
        text.lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| {
                serde_json::from_str(line)
                    .map_err(|_| CheckpointError::Malformed("a line is not a checkpoint object"))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn head() -> Head {
        Head {
            seq: 7,
            hash: EntryHash([9; 32]),
        }
    }

    #[test]
    fn a_checkpoint_verifies_under_its_key_only() {
        let key = AuditKey::from_seed(&[1; 32]);
        let checkpoint = key.checkpoint(head(), 1_700_000_000_000);
        assert_eq!(checkpoint.verify(&key.public()).unwrap(), head());

        let other = AuditKey::from_seed(&[2; 32]);
        assert!(matches!(
            checkpoint.verify(&other.public()),
            Err(CheckpointError::OtherKey { seq: 7, .. })
        ));
        // Signed by another key that claims to be ours.
        let mut forged = other.checkpoint(head(), 1_700_000_000_000);
        forged.public_key = checkpoint.public_key.clone();
        assert!(matches!(
            forged.verify(&key.public()),
            Err(CheckpointError::BadSignature(7))
        ));
    }

    /// An anchor verifies under its key only, and a change to any of its fields breaks it.
    #[test]
    fn every_field_of_an_anchor_is_signed() {
        let key = AuditKey::from_seed(&[4; 32]);
        let head = Head {
            seq: 8,
            hash: EntryHash([7; 32]),
        };
        let anchor = key.anchor(head, 1_000, 2_000);
        anchor.verify(&key.public()).unwrap();
        let other = AuditKey::from_seed(&[5; 32]);
        assert!(anchor.verify(&other.public()).is_err());
        let altered = [
            Anchor {
                head: Head { seq: 9, ..head },
                ..anchor
            },
            Anchor {
                public_key: other.public().to_bytes(),
                ..anchor
            },
            Anchor {
                head: Head {
                    hash: EntryHash([6; 32]),
                    ..head
                },
                ..anchor
            },
            Anchor {
                entry_time_ms: 1_001,
                ..anchor
            },
            Anchor {
                pruned_at_ms: 2_001,
                ..anchor
            },
        ];
        for forged in altered {
            assert!(
                matches!(
                    forged.verify(&key.public()),
                    Err(CheckpointError::BadAnchorSignature(_) | CheckpointError::OtherKey { .. })
                ),
                "{forged:?}"
            );
        }
    }

    #[test]
    fn every_signed_field_is_covered() {
        let key = AuditKey::from_seed(&[1; 32]);
        let good = key.checkpoint(head(), 5);
        let mut seq = good.clone();
        seq.seq += 1;
        let mut hash = good.clone();
        hash.head = EntryHash([8; 32]).to_string();
        let mut time = good.clone();
        time.time_ms += 1;
        for bad in [seq, hash, time] {
            assert!(matches!(
                bad.verify(&key.public()),
                Err(CheckpointError::BadSignature(_))
            ));
        }
        let mut garbled = good;
        garbled.signature = "zz".into();
        assert!(matches!(
            garbled.verify(&key.public()),
            Err(CheckpointError::Malformed(_))
        ));
    }

    #[test]
    fn checkpoints_round_trip_as_json_lines() {
        let key = AuditKey::from_seed(&[1; 32]);
        let a = key.checkpoint(Head::EMPTY, 1);
        let b = key.checkpoint(head(), 2);
        let text = format!(
            "{}\n\n{}\n",
            serde_json::to_string(&a).unwrap(),
            serde_json::to_string(&b).unwrap()
        );
        assert_eq!(Checkpoint::parse_all(&text).unwrap(), vec![a, b]);
        assert!(Checkpoint::parse_all("{\"seq\":1}").is_err());
    }

    #[test]
    fn the_key_file_is_made_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.key");
        let made = AuditKey::load_or_create(&path).unwrap();
        let read = AuditKey::load(&path).unwrap();
        assert_eq!(made.public(), read.public());
        let again = AuditKey::load_or_create(&path).unwrap();
        assert_eq!(made.public(), again.public());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
            assert!(matches!(
                AuditKey::load(&path),
                Err(CheckpointError::KeyFileOpen(_))
            ));
        }
        fs::write(dir.path().join("bad.key"), "not hex\n").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            fs::set_permissions(
                dir.path().join("bad.key"),
                fs::Permissions::from_mode(0o600),
            )
            .unwrap();
        }
        assert!(matches!(
            AuditKey::load(&dir.path().join("bad.key")),
            Err(CheckpointError::BadKeyFile(_))
        ));
        // The key never shows in Debug output.
        let seed_hex = fs::read_to_string(&path).unwrap();
        assert!(!format!("{made:?}").contains(seed_hex.trim()));
    }
}
