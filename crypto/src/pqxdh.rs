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
//!
//! ```
//! use tacit_crypto::{
//!     Address, IdentityKeyPair, KemPreKeyKind, Message, PreKeyBundle, PreKeyId,
//!     ResponderKeys, Session, SetupError,
//! };
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut rng = rand::rng();
//! let (alice_addr, bob_addr) = (Address::new("alice", 1)?, Address::new("bob", 1)?);
//! let alice = IdentityKeyPair::generate(&mut rng);
//! let bob = IdentityKeyPair::generate(&mut rng);
//! let spk = bob.generate_signed_prekey(&mut rng, PreKeyId(1));
//! let kem = bob.generate_kem_prekey(&mut rng, PreKeyId(1), KemPreKeyKind::LastResort);
//! let bundle = PreKeyBundle {
//!     identity: bob.public().clone(),
//!     signed_prekey: spk.public(),
//!     one_time_prekey: None, // all used up: PQXDH still works, with DH1..DH3 and SS
//!     kem_prekey: kem.public().clone(),
//! };
//!
//! // A server that swaps in its own signed prekey is caught by the signature check.
//! let mallory = IdentityKeyPair::generate(&mut rng);
//! let forged = PreKeyBundle {
//!     signed_prekey: mallory.generate_signed_prekey(&mut rng, PreKeyId(1)).public(),
//!     ..bundle.clone()
//! };
//! let err = Session::initiate(&mut rng, &alice, &alice_addr, &bob_addr, &forged).unwrap_err();
//! assert!(matches!(err, SetupError::BadSignature(_)));
//!
//! // With the real bundle, Bob accepts Alice's first message.
//! let mut session = Session::initiate(&mut rng, &alice, &alice_addr, &bob_addr, &bundle)?;
//! let Message::PreKey(first) = Message::from_bytes(&session.encrypt(b"hi")?)? else {
//!     unreachable!()
//! };
//! let keys = ResponderKeys {
//!     identity: &bob,
//!     signed_prekey: &spk,
//!     one_time_prekey: None,
//!     kem_prekey: &kem,
//! };
//! let (_bob_session, plaintext) = Session::accept(&mut rng, keys, &bob_addr, &alice_addr, &first)?;
//! assert_eq!(plaintext, b"hi");
//! # Ok(())
//! # }
//! ```

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
pub(crate) fn session_key(dhs: &[[u8; 32]], kem_secret: &[u8; 32]) -> RootKey {
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
pub(crate) fn associated_data(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::PreKeyId;
    use crate::testing::{Party, prekey_message, test_rng};
    use crate::{KemPreKeyKind, Message};

    #[test]
    fn setup_works_with_and_without_a_one_time_prekey() {
        for with_one_time in [true, false] {
            let mut rng = test_rng(21);
            let alice = Party::new(&mut rng, "alice");
            let bob = Party::new(&mut rng, "bob");
            let mut a = alice.initiate(&mut rng, &bob, with_one_time);
            let first = prekey_message(&a.encrypt(b"one").unwrap());
            assert_eq!(first.one_time_prekey_id().is_some(), with_one_time);
            assert_eq!(first.identity(), alice.identity.public());
            let (b, plaintext) = bob.accept(&mut rng, &alice, &first).unwrap();
            assert_eq!(plaintext, b"one");
            assert_eq!(a.base_key(), b.base_key());
            assert_eq!(b.remote_identity(), alice.identity.public());
        }
    }

    #[test]
    fn bad_prekey_signatures_are_rejected() {
        let mut rng = test_rng(22);
        let alice = Party::new(&mut rng, "alice");
        let bob = Party::new(&mut rng, "bob");
        let mallory = Party::new(&mut rng, "mallory");
        let setup = |bundle: &PreKeyBundle, rng: &mut rand::rngs::StdRng| {
            Session::initiate(rng, &alice.identity, &alice.address, &bob.address, bundle).err()
        };

        let mut bundle = bob.bundle(true);
        bundle.signed_prekey = mallory.signed_prekey.public();
        assert_eq!(
            setup(&bundle, &mut rng),
            Some(SetupError::BadSignature(BadSignature("signed prekey")))
        );
        let mut bundle = bob.bundle(true);
        bundle.one_time_prekey = Some(mallory.one_time_prekeys[0].public());
        assert_eq!(
            setup(&bundle, &mut rng),
            Some(SetupError::BadSignature(BadSignature("one-time prekey")))
        );
        let mut bundle = bob.bundle(true);
        bundle.kem_prekey = mallory.kem_prekey.public().clone();
        assert_eq!(
            setup(&bundle, &mut rng),
            Some(SetupError::BadSignature(BadSignature("KEM prekey")))
        );
    }

    /// Low-order X25519 points: all zeros, and the order-8 point 0x01.
    const LOW_ORDER: [[u8; 32]; 2] = [[0u8; 32], {
        let mut p = [0u8; 32];
        p[0] = 1;
        p
    }];

    #[test]
    fn low_order_prekeys_are_rejected_even_when_signed() {
        let mut rng = test_rng(23);
        let alice = Party::new(&mut rng, "alice");
        let bob = Party::new(&mut rng, "bob");
        for point in LOW_ORDER {
            // A malicious identity signs a low-order signed prekey: the signature verifies,
            // the DH result is non-contributory, and setup refuses it.
            let signature = bob.identity.sign(
                crate::consts::LABEL_SIGN_SIGNED_PREKEY,
                Some(PreKeyId(9)),
                &point,
            );
            let mut encoded = vec![crate::consts::KEY_FORMAT_VERSION];
            encoded.extend_from_slice(&9u32.to_be_bytes());
            encoded.extend_from_slice(&point);
            encoded.extend_from_slice(&signature.to_bytes());
            let mut bundle = bob.bundle(true);
            bundle.signed_prekey = crate::SignedPreKey::from_bytes(&encoded).unwrap();
            assert!(bundle.verify().is_ok());
            assert_eq!(
                Session::initiate(
                    &mut rng,
                    &alice.identity,
                    &alice.address,
                    &bob.address,
                    &bundle
                )
                .err(),
                Some(SetupError::NonContributory)
            );
        }
    }

    #[test]
    fn low_order_base_key_is_rejected() {
        let mut rng = test_rng(24);
        let alice = Party::new(&mut rng, "alice");
        let bob = Party::new(&mut rng, "bob");
        let mut a = alice.initiate(&mut rng, &bob, true);
        let mut first = prekey_message(&a.encrypt(b"x").unwrap());
        for point in LOW_ORDER {
            first.base_key = PublicKey::from(point);
            assert_eq!(
                bob.accept(&mut rng, &alice, &first).err(),
                Some(SetupError::NonContributory)
            );
        }
    }

    #[test]
    fn wrong_recipient_wrong_keys_and_wrong_addresses_fail() {
        let mut rng = test_rng(25);
        let alice = Party::new(&mut rng, "alice");
        let bob = Party::new(&mut rng, "bob");
        let carol = Party::new(&mut rng, "carol");
        let mut a = alice.initiate(&mut rng, &bob, true);
        let first = prekey_message(&a.encrypt(b"for bob").unwrap());

        // Carol has keys with the same ids, but they are not the ones Alice used.
        assert_eq!(
            Session::accept(
                &mut rng,
                carol.keys_for(&first),
                &carol.address,
                &alice.address,
                &first
            )
            .err(),
            Some(SetupError::Decrypt(DecryptError::Authentication))
        );
        // Bob, told the message came from another address (unknown key-share), refuses it.
        let elsewhere = Address::new("alice", 2).unwrap();
        assert_eq!(
            Session::accept(
                &mut rng,
                bob.keys_for(&first),
                &bob.address,
                &elsewhere,
                &first
            )
            .err(),
            Some(SetupError::Decrypt(DecryptError::Authentication))
        );
        // Keys that do not match the ids the message names.
        let mut keys = bob.keys_for(&first);
        keys.one_time_prekey = None;
        assert_eq!(
            Session::accept(&mut rng, keys, &bob.address, &alice.address, &first).err(),
            Some(SetupError::WrongPreKey("one-time prekey"))
        );
        let other_kem =
            bob.identity
                .generate_kem_prekey(&mut rng, PreKeyId(2), KemPreKeyKind::OneTime);
        let mut keys = bob.keys_for(&first);
        keys.kem_prekey = &other_kem;
        assert_eq!(
            Session::accept(&mut rng, keys, &bob.address, &alice.address, &first).err(),
            Some(SetupError::WrongPreKey("KEM prekey"))
        );
    }

    #[test]
    fn every_flipped_byte_of_a_prekey_message_is_refused() {
        let mut rng = test_rng(26);
        let alice = Party::new(&mut rng, "alice");
        let bob = Party::new(&mut rng, "bob");
        let mut a = alice.initiate(&mut rng, &bob, true);
        let wire = a.encrypt(b"tamper with me").unwrap();
        for i in 0..wire.len() {
            let mut bytes = wire.clone();
            bytes[i] ^= 0x80;
            let Ok(Message::PreKey(message)) = Message::from_bytes(&bytes) else {
                continue; // refused by the decoder (version, type, flag or signature)
            };
            let mut keys = bob.keys_for(&message);
            // Changed ids are looked up by the caller; pass the real keys regardless.
            keys.one_time_prekey = message
                .one_time_prekey_id()
                .map(|_| &bob.one_time_prekeys[0]);
            assert!(
                Session::accept(&mut rng, keys, &bob.address, &alice.address, &message).is_err(),
                "byte {i} flipped was accepted"
            );
        }
    }
}
