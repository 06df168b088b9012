//! Session setup: PQXDH (Signal's PQXDH specification, revision 3), hybrid X25519 +
//! ML-KEM-768 with HKDF-SHA256.
//!
//! Initiator A, responder B, with B's bundle (IK_B, SPK_B, optional OPK_B, PQPK_B):
//! ```text
//! DH1 = DH(IK_A, SPK_B)   DH2 = DH(EK_A, IK_B)   DH3 = DH(EK_A, SPK_B)   [DH4 = DH(EK_A, OPK_B)]
//! (CT, SS) = ML-KEM-768.Encaps(PQPK_B)
//! SK = HKDF-SHA256(salt = 32 zero bytes, IKM = 32 x 0xFF || DH1 || DH2 || DH3 [|| DH4] || SS,
//!                  info = "Tacit_PQXDH_X25519_SHA-256_ML-KEM-768_v1", L = 32)
//! AD = "Tacit_SessionAD_v1" || IK_A || IK_B || address(A) || address(B)
//! ```
//! Every DH result must be contributory and every prekey signature must verify, or setup
//! fails. SK then seeds the Double Ratchet with SPK_B as B's first ratchet key
//! (`RatchetInitAlice` / `RatchetInitBob`).
//!
//! The initiator draws from its `rng`, in order: EK_A (32 bytes), the ML-KEM message m
//! (32 bytes, FIPS 203 `Encaps_internal`), then its first ratchet key (32 bytes).

use hkdf::Hkdf;
use ml_kem::ml_kem_768::Ciphertext;
use rand_core::CryptoRng;
use sha2::Sha256;
use thiserror::Error;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::{Zeroize, Zeroizing};

use crate::address::Address;
use crate::consts::{LABEL_ASSOCIATED_DATA, LABEL_PQXDH};
use crate::keys::{
    BadSignature, IdentityKey, IdentityKeyPair, KemPreKeyPair, OneTimePreKeyPair, PreKeyBundle,
    SignedPreKeyPair,
};
use crate::message::PreKeyMessage;
use crate::ratchet::session::{PendingPreKey, RatchetKeyPair, SessionInit};
use crate::ratchet::{DecryptError, RootKey, Session};

/// Why a session could not be set up.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SetupError {
    /// A prekey in the bundle is not signed by the bundle's identity (a server or network
    /// attacker substituted it).
    #[error(transparent)]
    BadSignature(#[from] BadSignature),
    /// A Diffie-Hellman result was all zeros: some public key is a low-order point.
    #[error("a Diffie-Hellman result is non-contributory (low-order public key)")]
    NonContributory,
    /// The keys passed to [`Session::accept`] are not the ones the message names.
    #[error("the {0} passed in is not the one the prekey message names")]
    WrongPreKey(&'static str),
    /// The first message did not decrypt: a tampered message, or keys that do not match.
    #[error("first message did not decrypt: {0}")]
    Decrypt(#[from] DecryptError),
}

/// The responder's private keys that a prekey message names (look them up by the ids in
/// [`PreKeyMessage`]).
#[derive(Clone, Copy, Debug)]
pub struct ResponderKeys<'a> {
    /// The responder's identity.
    pub identity: &'a IdentityKeyPair,
    /// The signed prekey with [`PreKeyMessage::signed_prekey_id`].
    pub signed_prekey: &'a SignedPreKeyPair,
    /// The one-time prekey with [`PreKeyMessage::one_time_prekey_id`], if it names one.
    pub one_time_prekey: Option<&'a OneTimePreKeyPair>,
    /// The KEM prekey with [`PreKeyMessage::kem_prekey_id`].
    pub kem_prekey: &'a KemPreKeyPair,
}

fn agree(secret: &StaticSecret, public: &PublicKey) -> Result<[u8; 32], SetupError> {
    let shared = secret.diffie_hellman(public);
    if shared.was_contributory() {
        Ok(shared.to_bytes())
    } else {
        Err(SetupError::NonContributory)
    }
}

/// SK = HKDF(salt = zeros, IKM = 0xFF * 32 || DH1 || DH2 || DH3 [|| DH4] || SS, info).
fn session_key(dhs: &[[u8; 32]], kem_secret: &[u8; 32]) -> RootKey {
    let mut ikm = Zeroizing::new(Vec::with_capacity(32 * (dhs.len() + 2)));
    ikm.extend_from_slice(&[0xFF; 32]);
    for dh in dhs {
        ikm.extend_from_slice(dh);
    }
    ikm.extend_from_slice(kem_secret);
    let mut sk = [0u8; 32];
    // 32 bytes is far below HKDF-SHA256's limit, so expand cannot fail.
    let _ = Hkdf::<Sha256>::new(Some(&[0u8; 32]), &ikm).expand(LABEL_PQXDH, &mut sk);
    let root = RootKey::new(sk);
    sk.zeroize();
    root
}

/// AD = label || IK_initiator || IK_responder || address(initiator) || address(responder).
fn associated_data(
    initiator: &IdentityKey,
    responder: &IdentityKey,
    initiator_address: &Address,
    responder_address: &Address,
) -> Vec<u8> {
    let mut ad = Vec::with_capacity(LABEL_ASSOCIATED_DATA.len() + 128 + 2 * 260);
    ad.extend_from_slice(LABEL_ASSOCIATED_DATA);
    ad.extend_from_slice(&initiator.key_bytes());
    ad.extend_from_slice(&responder.key_bytes());
    initiator_address.encode(&mut ad);
    responder_address.encode(&mut ad);
    ad
}

impl Session {
    /// Starts a session from the remote device's prekey bundle (the initiator's side of
    /// PQXDH, then `RatchetInitAlice`). Check the bundle's identity against the pinned one
    /// first; this verifies every prekey signature.
    ///
    /// Every message [`Session::encrypt`] returns is a prekey message until the remote side
    /// answers.
    pub fn initiate<R: CryptoRng + ?Sized>(
        rng: &mut R,
        identity: &IdentityKeyPair,
        local: &Address,
        remote: &Address,
        bundle: &PreKeyBundle,
    ) -> Result<Self, SetupError> {
        bundle.verify()?;
        let mut ephemeral_bytes = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(ephemeral_bytes.as_mut());
        let ephemeral = StaticSecret::from(*ephemeral_bytes);
        let mut kem_message = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(kem_message.as_mut());

        let spk = bundle.signed_prekey.key();
        let mut dhs = Zeroizing::new(vec![
            agree(identity.dh_secret(), spk)?,
            agree(&ephemeral, bundle.identity.dh_key())?,
            agree(&ephemeral, spk)?,
        ]);
        if let Some(one_time) = &bundle.one_time_prekey {
            dhs.push(agree(&ephemeral, one_time.key())?);
        }
        let (kem_ciphertext, kem_secret) = bundle
            .kem_prekey
            .encapsulation_key()
            .encapsulate_deterministic(&(*kem_message).into());
        let kem_secret = Zeroizing::new(<[u8; 32]>::from(kem_secret));
        let sk = session_key(&dhs, &kem_secret);

        // RatchetInitAlice: the responder's signed prekey is its first ratchet key.
        let ratchet = RatchetKeyPair::generate(rng);
        let first = ratchet.agree(spk).ok_or(SetupError::NonContributory)?;
        let (root, sending) = sk.step(&first);

        Ok(Session::new(SessionInit {
            local_identity: identity.public().clone(),
            remote_identity: bundle.identity.clone(),
            associated_data: associated_data(identity.public(), &bundle.identity, local, remote),
            base_key: PublicKey::from(&ephemeral),
            root,
            ratchet,
            sending: Some(sending),
            pending_prekey: Some(PendingPreKey {
                signed_prekey_id: bundle.signed_prekey.id(),
                one_time_prekey_id: bundle.one_time_prekey.as_ref().map(|k| k.id()),
                kem_prekey_id: bundle.kem_prekey.id(),
                kem_ciphertext: Box::new(kem_ciphertext.into()),
            }),
        }))
    }

    /// Accepts a prekey message (the responder's side of PQXDH, then `RatchetInitBob`) and
    /// decrypts the message it carries. Check [`PreKeyMessage::identity`] against the pinned
    /// identity first. After success the caller must delete the one-time prekeys used.
    ///
    /// Replays: a prekey message whose base key names a session the caller already has must
    /// go to that session's [`Session::decrypt`], which rejects duplicates.
    pub fn accept<R: CryptoRng + ?Sized>(
        rng: &mut R,
        keys: ResponderKeys<'_>,
        local: &Address,
        remote: &Address,
        message: &PreKeyMessage,
    ) -> Result<(Self, Vec<u8>), SetupError> {
        if keys.signed_prekey.id() != message.signed_prekey_id {
            return Err(SetupError::WrongPreKey("signed prekey"));
        }
        if keys.kem_prekey.id() != message.kem_prekey_id {
            return Err(SetupError::WrongPreKey("KEM prekey"));
        }
        if keys.one_time_prekey.map(OneTimePreKeyPair::id) != message.one_time_prekey_id {
            return Err(SetupError::WrongPreKey("one-time prekey"));
        }
        let spk = keys.signed_prekey.secret();
        let mut dhs = Zeroizing::new(vec![
            agree(spk, message.identity.dh_key())?,
            agree(keys.identity.dh_secret(), &message.base_key)?,
            agree(spk, &message.base_key)?,
        ]);
        if let Some(one_time) = keys.one_time_prekey {
            dhs.push(agree(one_time.secret(), &message.base_key)?);
        }
        let ciphertext = Ciphertext::from(*message.kem_ciphertext);
        let kem_secret = keys.kem_prekey.decapsulate(&ciphertext);
        let sk = session_key(&dhs, &kem_secret);

        // RatchetInitBob: the signed prekey is our first ratchet key; no chains yet.
        let mut session = Session::new(SessionInit {
            local_identity: keys.identity.public().clone(),
            remote_identity: message.identity.clone(),
            associated_data: associated_data(
                &message.identity,
                keys.identity.public(),
                remote,
                local,
            ),
            base_key: message.base_key,
            root: sk,
            ratchet: RatchetKeyPair::from_secret(spk.clone()),
            sending: None,
            pending_prekey: None,
        });
        let plaintext = session.decrypt_ratchet(rng, &message.message)?;
        Ok((session, plaintext))
    }
}
