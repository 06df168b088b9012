//! Every protocol constant in one place: format versions, KDF labels, limits.
//!
//! Each label is unique to one use (domain separation), so no key or KDF output can be
//! reused across two parts of the protocol. SECURITY.md lists the same values.

/// Version byte that starts every public key encoding and every bundle.
pub const KEY_FORMAT_VERSION: u8 = 1;
/// Version byte that starts every protocol message.
pub const MESSAGE_VERSION: u8 = 1;
/// Version byte that starts a serialized [`crate::Session`].
pub const SESSION_FORMAT_VERSION: u8 = 1;
/// Version byte that starts a serialized secret key (identity or prekey private part).
pub const SECRET_FORMAT_VERSION: u8 = 1;
/// Version byte that starts a sealed provisioning message (device linking).
pub const PROVISIONING_VERSION: u8 = 1;
/// Version byte that starts a link answer (a sealed provisioning message authenticated
/// under the link secret).
pub const LINK_ANSWER_VERSION: u8 = 1;
/// Length of the link secret: shown only in the link code, never sent to the server.
pub const LINK_SECRET_LEN: usize = 16;
/// Length of a link answer's HMAC-SHA256 tag.
pub const LINK_ANSWER_TAG_LEN: usize = 32;
/// Version byte that starts a serialized sender-key state ([`crate::SenderKeyState`]) or
/// receiver record ([`crate::SenderKeyRecord`]).
pub const GROUP_STATE_FORMAT_VERSION: u8 = 1;
/// Version byte that starts an encrypted attachment.
pub const ATTACHMENT_FORMAT_VERSION: u8 = 1;
/// Version byte of the scannable safety-number form.
pub const FINGERPRINT_SCAN_VERSION: u8 = 1;

/// Message type byte of a Double Ratchet message.
pub const MESSAGE_TYPE_RATCHET: u8 = 0x01;
/// Message type byte of a PQXDH initial ("prekey") message that wraps a ratchet message.
pub const MESSAGE_TYPE_PREKEY: u8 = 0x02;
/// Message type byte of a sender-key (group) message.
pub const MESSAGE_TYPE_SENDER_KEY: u8 = 0x03;
/// Message type byte of a sender-key distribution message (sent over pairwise sessions).
pub const MESSAGE_TYPE_SENDER_KEY_DISTRIBUTION: u8 = 0x04;

/// HKDF info of the PQXDH session key (PQXDH rev. 3 section 2.2 "info").
pub const LABEL_PQXDH: &[u8] = b"Tacit_PQXDH_X25519_SHA-256_ML-KEM-768_v1";
/// Prefix of the associated data that binds both identities and addresses.
pub const LABEL_ASSOCIATED_DATA: &[u8] = b"Tacit_SessionAD_v1";
/// HKDF info of the root-key ratchet step (KDF_RK).
pub const LABEL_ROOT: &[u8] = b"Tacit_Ratchet_Root_v1";
/// HKDF info that expands a message key into an AEAD key and nonce.
pub const LABEL_MESSAGE_KEYS: &[u8] = b"Tacit_Ratchet_MessageKeys_v1";
/// HKDF info of the one-use key that seals a provisioning message (device linking).
pub const LABEL_PROVISIONING: &[u8] = b"Tacit_Provisioning_v1";
/// HKDF info of the key that authenticates a link answer under the link secret.
pub const LABEL_LINK_ANSWER: &[u8] = b"Tacit_LinkAnswer_v1";
/// HKDF info that expands a sender-key message key into an AEAD key and nonce.
pub const LABEL_SENDER_KEY_MESSAGE_KEYS: &[u8] = b"Tacit_SenderKey_MessageKeys_v1";
/// HKDF info that derives an attachment's payload key from its key and header nonce.
pub const LABEL_ATTACHMENT_PAYLOAD: &[u8] = b"Tacit_Attachment_Payload_v1";
/// Signature context of the identity's X25519 key, signed by its Ed25519 key.
pub const LABEL_SIGN_IDENTITY_DH: &[u8] = b"Tacit_Sign_IdentityDH_v1";
/// Signature context of a signed X25519 prekey.
pub const LABEL_SIGN_SIGNED_PREKEY: &[u8] = b"Tacit_Sign_SignedPreKey_v1";
/// Signature context of a one-time X25519 prekey.
pub const LABEL_SIGN_ONE_TIME_PREKEY: &[u8] = b"Tacit_Sign_OneTimePreKey_v1";
/// Signature context of an ML-KEM-768 prekey (one-time or last-resort).
pub const LABEL_SIGN_KEM_PREKEY: &[u8] = b"Tacit_Sign_KemPreKey_v1";

/// Chain KDF input that yields the message key (Double Ratchet section 5.2).
pub const CHAIN_MESSAGE_KEY_SEED: u8 = 0x01;
/// Chain KDF input that yields the next chain key.
pub const CHAIN_NEXT_KEY_SEED: u8 = 0x02;

/// Largest forward jump accepted within one receiving chain (counter-jump DoS cap).
pub const MAX_CHAIN_JUMP: u32 = 2_000;
/// Largest number of skipped message keys kept per session; the oldest is evicted first.
pub const MAX_SKIPPED_KEYS: usize = 2_000;
/// Largest number of receiving chains kept per session; the oldest is evicted first.
pub const MAX_RECEIVER_CHAINS: usize = 5;
/// How many ratchet keys of evicted receiving chains a session remembers, so that a replay
/// of an old message reports a duplicate rather than an authentication failure.
pub const MAX_RETIRED_RATCHET_KEYS: usize = 64;
/// Largest number of sender-key chains a receiver keeps per sender and group; the chain
/// least recently distributed is evicted first (as libsignal's `MAX_SENDER_KEY_STATES`).
pub const MAX_SENDER_KEY_CHAINS: usize = 5;

/// Plaintext bytes per attachment chunk (every chunk but the last holds exactly this many).
pub const ATTACHMENT_CHUNK_LEN: usize = 64 * 1024;
/// Length of the random nonce at the start of an encrypted attachment.
pub const ATTACHMENT_NONCE_LEN: usize = 16;

/// SHA-512 iterations of the safety-number hash (as Signal's fingerprint scheme).
pub const FINGERPRINT_ITERATIONS: u32 = 5_200;
/// Version of the safety-number hash input (two bytes, big-endian).
pub const FINGERPRINT_HASH_VERSION: u16 = 0;

/// Length of an X25519 public key, secret key or shared secret.
pub const X25519_LEN: usize = 32;
/// Length of an Ed25519 public key or secret seed.
pub const ED25519_LEN: usize = 32;
/// Length of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;
/// Length of an ML-KEM-768 encapsulation (public) key.
pub const KEM_PUBLIC_LEN: usize = 1184;
/// Length of an ML-KEM-768 ciphertext.
pub const KEM_CIPHERTEXT_LEN: usize = 1088;
/// Length of an ML-KEM-768 decapsulation key seed (d || z, FIPS 203).
pub const KEM_SEED_LEN: usize = 64;
/// Length of a group id.
pub const GROUP_ID_LEN: usize = 16;
/// Length of a sender-key chain id.
pub const CHAIN_ID_LEN: usize = 16;
/// Length of a SHA-256 digest.
pub const SHA256_LEN: usize = 32;
/// Length of a ChaCha20-Poly1305 tag.
pub const TAG_LEN: usize = 16;
