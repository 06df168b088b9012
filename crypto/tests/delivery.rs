//! Property test: two parties send in random interleavings while the network delays,
//! reorders, duplicates and drops messages (within the protocol's limits). Every delivered
//! message decrypts exactly once to its plaintext, every duplicate is refused, nothing
//! panics, and sessions survive being stored and restored at any point.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is a failure

use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;
use tacit_crypto::{
    Address, DecryptError, IdentityKeyPair, KemPreKeyKind, Message, PreKeyBundle, PreKeyId,
    ResponderKeys, Session,
};

#[derive(Debug, Clone)]
enum Op {
    /// A party sends a message of this length.
    Send { from_alice: bool, len: usize },
    /// The network delivers the in-flight message at this position (reordering).
    Deliver { to_bob: bool, pick: usize },
    /// The network delivers an already delivered message again.
    Duplicate { to_bob: bool, pick: usize },
    /// The network loses an in-flight message.
    Drop { to_bob: bool, pick: usize },
    /// A party stores its session and restores it.
    Restore { alice: bool },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (any::<bool>(), 0usize..200).prop_map(|(from_alice, len)| Op::Send { from_alice, len }),
        4 => (any::<bool>(), any::<usize>()).prop_map(|(to_bob, pick)| Op::Deliver { to_bob, pick }),
        1 => (any::<bool>(), any::<usize>()).prop_map(|(to_bob, pick)| Op::Duplicate { to_bob, pick }),
        1 => (any::<bool>(), any::<usize>()).prop_map(|(to_bob, pick)| Op::Drop { to_bob, pick }),
        1 => any::<bool>().prop_map(|alice| Op::Restore { alice }),
    ]
}

struct Bob {
    identity: IdentityKeyPair,
    signed_prekey: tacit_crypto::SignedPreKeyPair,
    one_time_prekey: Option<tacit_crypto::OneTimePreKeyPair>,
    kem_prekey: tacit_crypto::KemPreKeyPair,
}

/// Bob opens a message: on his session, or (the first time) by accepting the prekey
/// message it must be, after which his one-time prekey is deleted.
fn deliver_to_bob(
    bob: &mut Option<Session>,
    keys: &mut Bob,
    rng: &mut StdRng,
    (alice_addr, bob_addr): &(Address, Address),
    alice: &IdentityKeyPair,
    wire: &[u8],
) -> Vec<u8> {
    let message = Message::from_bytes(wire).unwrap();
    if let Some(session) = bob.as_mut() {
        return session.decrypt(rng, &message).unwrap();
    }
    let Message::PreKey(first) = &message else {
        panic!("Bob got a ratchet message first")
    };
    assert_eq!(first.identity(), alice.public());
    let responder = ResponderKeys {
        identity: &keys.identity,
        signed_prekey: &keys.signed_prekey,
        one_time_prekey: keys.one_time_prekey.as_ref(),
        kem_prekey: &keys.kem_prekey,
    };
    let (session, opened) = Session::accept(rng, responder, bob_addr, alice_addr, first).unwrap();
    keys.one_time_prekey = None; // used: delete it
    *bob = Some(session);
    opened
}

#[derive(Default)]
struct Wire {
    in_flight: Vec<(Vec<u8>, Vec<u8>)>,
    delivered: Vec<Vec<u8>>,
}

fn run(seed: u64, ops: &[Op]) {
    let mut rng = StdRng::seed_from_u64(seed);
    let alice_addr = Address::new("alice", 1).unwrap();
    let bob_addr = Address::new("bob", 3).unwrap();
    let addrs = (alice_addr.clone(), bob_addr.clone());
    let alice_id = IdentityKeyPair::generate(&mut rng);
    let bob_id = IdentityKeyPair::generate(&mut rng);
    let mut bob_keys = Bob {
        signed_prekey: bob_id.generate_signed_prekey(&mut rng, PreKeyId(1)),
        one_time_prekey: seed.is_multiple_of(2).then(|| {
            bob_id
                .generate_one_time_prekeys(&mut rng, PreKeyId(5), 1)
                .remove(0)
        }),
        kem_prekey: bob_id.generate_kem_prekey(&mut rng, PreKeyId(2), KemPreKeyKind::OneTime),
        identity: bob_id,
    };
    let bundle = PreKeyBundle {
        identity: bob_keys.identity.public().clone(),
        signed_prekey: bob_keys.signed_prekey.public(),
        one_time_prekey: bob_keys.one_time_prekey.as_ref().map(|k| k.public()),
        kem_prekey: bob_keys.kem_prekey.public().clone(),
    };
    let mut alice =
        Session::initiate(&mut rng, &alice_id, &alice_addr, &bob_addr, &bundle).unwrap();
    let mut bob: Option<Session> = None;
    let (mut to_bob, mut to_alice) = (Wire::default(), Wire::default());
    let mut counter = 0u32;

    for op in ops {
        match op {
            Op::Send { from_alice, len } => {
                counter += 1;
                let mut plaintext = counter.to_be_bytes().to_vec();
                plaintext.resize(4 + len, 0xAB);
                if *from_alice {
                    let wire = alice.encrypt(&plaintext).unwrap();
                    to_bob.in_flight.push((wire, plaintext));
                } else if let Some(bob) = bob.as_mut() {
                    let wire = bob.encrypt(&plaintext).unwrap();
                    to_alice.in_flight.push((wire, plaintext));
                }
            }
            Op::Deliver { to_bob: true, pick } if !to_bob.in_flight.is_empty() => {
                let (wire, plaintext) = to_bob.in_flight.remove(pick % to_bob.in_flight.len());
                let opened =
                    deliver_to_bob(&mut bob, &mut bob_keys, &mut rng, &addrs, &alice_id, &wire);
                assert_eq!(opened, plaintext);
                to_bob.delivered.push(wire);
            }
            Op::Deliver {
                to_bob: false,
                pick,
            } if !to_alice.in_flight.is_empty() => {
                let (wire, plaintext) = to_alice.in_flight.remove(pick % to_alice.in_flight.len());
                let message = Message::from_bytes(&wire).unwrap();
                assert_eq!(alice.decrypt(&mut rng, &message).unwrap(), plaintext);
                to_alice.delivered.push(wire);
            }
            Op::Duplicate { to_bob: true, pick } if !to_bob.delivered.is_empty() => {
                let wire = &to_bob.delivered[pick % to_bob.delivered.len()];
                let session = bob.as_mut().unwrap();
                let before = session.to_bytes();
                let message = Message::from_bytes(wire).unwrap();
                assert_eq!(
                    session.decrypt(&mut rng, &message),
                    Err(DecryptError::Duplicate)
                );
                assert_eq!(session.to_bytes(), before);
            }
            Op::Duplicate {
                to_bob: false,
                pick,
            } if !to_alice.delivered.is_empty() => {
                let wire = &to_alice.delivered[pick % to_alice.delivered.len()];
                let before = alice.to_bytes();
                let message = Message::from_bytes(wire).unwrap();
                assert_eq!(
                    alice.decrypt(&mut rng, &message),
                    Err(DecryptError::Duplicate)
                );
                assert_eq!(alice.to_bytes(), before);
            }
            Op::Drop {
                to_bob: towards_bob,
                pick,
            } => {
                let wire = if *towards_bob {
                    &mut to_bob.in_flight
                } else {
                    &mut to_alice.in_flight
                };
                if !wire.is_empty() {
                    wire.remove(pick % wire.len());
                }
            }
            Op::Restore { alice: true } => {
                alice = Session::from_bytes(&alice.to_bytes()).unwrap();
            }
            Op::Restore { alice: false } => {
                if let Some(session) = bob.as_mut() {
                    *session = Session::from_bytes(&session.to_bytes()).unwrap();
                }
            }
            _ => {}
        }
    }

    // Finally deliver everything still in flight: all of it must open.
    for (wire, plaintext) in std::mem::take(&mut to_bob.in_flight) {
        let opened = deliver_to_bob(&mut bob, &mut bob_keys, &mut rng, &addrs, &alice_id, &wire);
        assert_eq!(opened, plaintext);
    }
    for (wire, plaintext) in std::mem::take(&mut to_alice.in_flight) {
        let message = Message::from_bytes(&wire).unwrap();
        assert_eq!(alice.decrypt(&mut rng, &message).unwrap(), plaintext);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn every_delivered_message_opens_exactly_once(seed in any::<u64>(), ops in prop::collection::vec(op(), 1..120)) {
        run(seed, &ops);
    }
}
