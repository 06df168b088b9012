//! The Tacit protocol: identity keys and prekeys, PQXDH session setup, the Double Ratchet,
//! sender keys for groups ([`group`]), streaming attachment encryption ([`attachment`]) and
//! safety numbers.
//!
//! This crate does no I/O, reads no clock and uses no global random number generator:
//! callers pass `rng` and persist the state that calls return. `SECURITY.md` at the
//! repository root specifies every byte and label used here.
//!
//! # Alice and Bob
//!
//! ```
//! use tacit_crypto::{
//!     Address, IdentityKeyPair, KemPreKeyKind, Message, PreKeyBundle, PreKeyId,
//!     ResponderKeys, Session,
//! };
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut rng = rand::rng();
//! let (alice_addr, bob_addr) = (Address::new("alice", 1)?, Address::new("bob", 1)?);
//!
//! // Bob publishes a bundle (through the server).
//! let bob = IdentityKeyPair::generate(&mut rng);
//! let bob_spk = bob.generate_signed_prekey(&mut rng, PreKeyId(1));
//! let bob_otks = bob.generate_one_time_prekeys(&mut rng, PreKeyId(1), 10);
//! let bob_kem = bob.generate_kem_prekey(&mut rng, PreKeyId(1), KemPreKeyKind::LastResort);
//! let bundle = PreKeyBundle {
//!     identity: bob.public().clone(),
//!     signed_prekey: bob_spk.public(),
//!     one_time_prekey: Some(bob_otks[0].public()),
//!     kem_prekey: bob_kem.public().clone(),
//! };
//!
//! // Alice starts a session from it and sends.
//! let alice = IdentityKeyPair::generate(&mut rng);
//! let mut alice_session = Session::initiate(&mut rng, &alice, &alice_addr, &bob_addr, &bundle)?;
//! let wire = alice_session.encrypt(b"hello Bob")?;
//!
//! // Bob looks up the keys the message names and accepts it.
//! let Message::PreKey(first) = Message::from_bytes(&wire)? else { unreachable!() };
//! let keys = ResponderKeys {
//!     identity: &bob,
//!     signed_prekey: &bob_spk,
//!     one_time_prekey: Some(&bob_otks[0]),
//!     kem_prekey: &bob_kem,
//! };
//! let (mut bob_session, plaintext) =
//!     Session::accept(&mut rng, keys, &bob_addr, &alice_addr, &first)?;
//! assert_eq!(plaintext, b"hello Bob");
//!
//! // Bob answers; from now on both send plain ratchet messages.
//! let reply = bob_session.encrypt(b"hi Alice")?;
//! let plaintext = alice_session.decrypt(&mut rng, &Message::from_bytes(&reply)?)?;
//! assert_eq!(plaintext, b"hi Alice");
//! assert!(alice_session.is_acknowledged());
//!
//! // A replay is refused, and the session can be stored and restored.
//! let err = alice_session.decrypt(&mut rng, &Message::from_bytes(&reply)?).unwrap_err();
//! assert_eq!(err, tacit_crypto::DecryptError::Duplicate);
//! let restored = Session::from_bytes(&alice_session.to_bytes())?;
//! assert_eq!(restored.base_key(), bob_session.base_key());
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod address;
pub mod attachment;
pub mod consts;
pub mod fingerprint;
pub mod group;
pub mod keys;
mod message;
pub mod pqxdh;
pub mod provision;
pub mod ratchet;
pub mod wire;

pub use address::{Address, AddressError, MAX_USER_ID_LEN};
pub use attachment::{AttachmentDigest, AttachmentError, AttachmentKey};
pub use fingerprint::{FingerprintError, SafetyNumber};
pub use group::{
    ChainId, DistributionError, GroupDecryptError, GroupEncryptError, GroupId,
    SenderKeyDistribution, SenderKeyMessage, SenderKeyRecord, SenderKeyState,
};
pub use keys::{
    BadSignature, IdentityKey, IdentityKeyPair, KemPreKey, KemPreKeyKind, KemPreKeyPair,
    OneTimePreKey, OneTimePreKeyPair, PreKeyBundle, PreKeyId, SignedPreKey, SignedPreKeyPair,
};
pub use message::{Message, PreKeyMessage, RatchetMessage};
pub use pqxdh::{ResponderKeys, SetupError};
pub use provision::{ProvisionError, ProvisioningKeyPair, ProvisioningPublicKey};
pub use ratchet::{DecryptError, EncryptError, Session};
pub use wire::DecodeError;

#[cfg(test)]
pub(crate) use testing::test_rng;

#[cfg(test)]
mod vectors;
#[cfg(test)]
pub(crate) mod testing {
    //! Parties and sessions for unit tests.
    use crate::{
        Address, IdentityKeyPair, KemPreKeyKind, KemPreKeyPair, Message, OneTimePreKeyPair,
        PreKeyBundle, PreKeyId, PreKeyMessage, ResponderKeys, Session, SignedPreKeyPair,
    };
    use rand::SeedableRng;

    /// A deterministic RNG.
    pub(crate) fn test_rng(seed: u64) -> rand::rngs::StdRng {
        rand::rngs::StdRng::seed_from_u64(seed)
    }

    /// A device with its published keys.
    pub(crate) struct Party {
        pub(crate) identity: IdentityKeyPair,
        pub(crate) signed_prekey: SignedPreKeyPair,
        pub(crate) one_time_prekeys: Vec<OneTimePreKeyPair>,
        pub(crate) kem_prekey: KemPreKeyPair,
        pub(crate) address: Address,
    }

    impl Party {
        pub(crate) fn new(rng: &mut rand::rngs::StdRng, user: &str) -> Self {
            let identity = IdentityKeyPair::generate(rng);
            Self {
                signed_prekey: identity.generate_signed_prekey(rng, PreKeyId(1)),
                one_time_prekeys: identity.generate_one_time_prekeys(rng, PreKeyId(1), 3),
                kem_prekey: identity.generate_kem_prekey(
                    rng,
                    PreKeyId(1),
                    KemPreKeyKind::LastResort,
                ),
                identity,
                address: Address::new(user, 1).unwrap(),
            }
        }

        pub(crate) fn bundle(&self, with_one_time: bool) -> PreKeyBundle {
            PreKeyBundle {
                identity: self.identity.public().clone(),
                signed_prekey: self.signed_prekey.public(),
                one_time_prekey: with_one_time.then(|| self.one_time_prekeys[0].public()),
                kem_prekey: self.kem_prekey.public().clone(),
            }
        }

        /// A session from this party to `to`'s bundle.
        pub(crate) fn initiate(
            &self,
            rng: &mut rand::rngs::StdRng,
            to: &Party,
            with_one_time: bool,
        ) -> Session {
            Session::initiate(
                rng,
                &self.identity,
                &self.address,
                &to.address,
                &to.bundle(with_one_time),
            )
            .unwrap()
        }

        /// This party accepts a prekey message from `from`.
        pub(crate) fn accept(
            &self,
            rng: &mut rand::rngs::StdRng,
            from: &Party,
            message: &PreKeyMessage,
        ) -> Result<(Session, Vec<u8>), crate::SetupError> {
            Session::accept(
                rng,
                self.keys_for(message),
                &self.address,
                &from.address,
                message,
            )
        }

        /// The keys a prekey message names.
        pub(crate) fn keys_for(&self, message: &PreKeyMessage) -> ResponderKeys<'_> {
            ResponderKeys {
                identity: &self.identity,
                signed_prekey: &self.signed_prekey,
                one_time_prekey: message
                    .one_time_prekey_id()
                    .and_then(|id| self.one_time_prekeys.iter().find(|k| k.id() == id)),
                kem_prekey: &self.kem_prekey,
            }
        }
    }

    pub(crate) fn prekey_message(bytes: &[u8]) -> PreKeyMessage {
        match Message::from_bytes(bytes).unwrap() {
            Message::PreKey(message) => *message,
            Message::Ratchet(_) => panic!("expected a prekey message"),
        }
    }

    /// Alice and Bob after one message each way.
    pub(crate) fn established(rng: &mut rand::rngs::StdRng) -> (Session, Session) {
        let alice = Party::new(rng, "alice");
        let bob = Party::new(rng, "bob");
        let mut a = alice.initiate(rng, &bob, true);
        let first = prekey_message(&a.encrypt(b"first").unwrap());
        let (mut b, plaintext) = bob.accept(rng, &alice, &first).unwrap();
        assert_eq!(plaintext, b"first");
        let reply = b.encrypt(b"reply").unwrap();
        assert_eq!(
            a.decrypt(rng, &Message::from_bytes(&reply).unwrap())
                .unwrap(),
            b"reply"
        );
        (a, b)
    }
}
