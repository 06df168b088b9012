// The bodies of the fuzz targets, shared by `fuzz_targets/*.rs` (under cargo-fuzz) and by
// `crypto/tests/fuzz_corpus.rs` (which replays the committed corpus on every test run).
// Each parses untrusted bytes and checks what must hold for any input.

use std::sync::OnceLock;

use rand::SeedableRng;
use rand::rngs::StdRng;
use tacit_crypto::{
    Address, IdentityKey, IdentityKeyPair, KemPreKey, KemPreKeyKind, KemPreKeyPair, Message,
    OneTimePreKey, OneTimePreKeyPair, PreKeyBundle, PreKeyId, ResponderKeys, SafetyNumber,
    Session, SignedPreKey, SignedPreKeyPair,
};

/// Any message: decoding never panics, and what decodes re-encodes to the same bytes.
pub fn decode_message(data: &[u8]) {
    if let Ok(message) = Message::from_bytes(data) {
        assert_eq!(message.to_bytes(), data, "message encoding is not canonical");
    }
}

/// Every key and bundle encoding, chosen by the first byte.
pub fn decode_keys(data: &[u8]) {
    let Some((which, bytes)) = data.split_first() else {
        return;
    };
    let reencoded = match which % 9 {
        0 => IdentityKey::from_bytes(bytes).map(|k| k.to_bytes()).ok(),
        1 => SignedPreKey::from_bytes(bytes).map(|k| k.to_bytes()).ok(),
        2 => OneTimePreKey::from_bytes(bytes).map(|k| k.to_bytes()).ok(),
        3 => KemPreKey::from_bytes(bytes).map(|k| k.to_bytes()).ok(),
        4 => PreKeyBundle::from_bytes(bytes).map(|b| b.to_bytes()).ok(),
        5 => IdentityKeyPair::from_secret_bytes(bytes)
            .map(|k| k.to_secret_bytes().to_vec())
            .ok(),
        6 => SignedPreKeyPair::from_secret_bytes(bytes)
            .map(|k| k.to_secret_bytes().to_vec())
            .ok(),
        7 => OneTimePreKeyPair::from_secret_bytes(bytes)
            .map(|k| k.to_secret_bytes().to_vec())
            .ok(),
        _ => {
            let fixture = fixture();
            let _ = fixture.safety_number.matches_scanned(bytes);
            KemPreKeyPair::from_secret_bytes(bytes)
                .map(|k| k.to_secret_bytes().to_vec())
                .ok()
        }
    };
    if let Some(reencoded) = reencoded {
        assert_eq!(reencoded, bytes, "key encoding is not canonical");
    }
}

/// Stored session state: decoding never panics and re-encodes to the same bytes.
pub fn decode_session(data: &[u8]) {
    if let Ok(session) = Session::from_bytes(data) {
        assert_eq!(session.to_bytes().as_slice(), data, "session encoding is not canonical");
    }
}

/// Decrypting any bytes on an established session (and accepting any prekey message):
/// never panics, and a failure leaves the session exactly as it was.
pub fn decrypt(data: &[u8]) {
    let fixture = fixture();
    let Ok(message) = Message::from_bytes(data) else {
        return;
    };
    let mut rng = StdRng::seed_from_u64(1);
    for stored in [&fixture.alice_session, &fixture.bob_session] {
        let Ok(mut session) = Session::from_bytes(stored) else {
            panic!("fixture session does not decode");
        };
        if session.decrypt(&mut rng, &message).is_err() {
            assert_eq!(session.to_bytes().as_slice(), stored.as_slice());
        }
    }
    if let Message::PreKey(first) = &message {
        let keys = ResponderKeys {
            identity: &fixture.bob,
            signed_prekey: &fixture.bob_signed_prekey,
            one_time_prekey: None,
            kem_prekey: &fixture.bob_kem_prekey,
        };
        let _ = Session::accept(&mut rng, keys, &fixture.bob_address, &fixture.alice_address, first);
    }
}

/// Alice and Bob with a session each way, built once from a fixed seed.
pub struct Fixture {
    pub alice_address: Address,
    pub bob_address: Address,
    pub bob: IdentityKeyPair,
    pub bob_signed_prekey: SignedPreKeyPair,
    pub bob_kem_prekey: KemPreKeyPair,
    pub alice_session: Vec<u8>,
    pub bob_session: Vec<u8>,
    pub safety_number: SafetyNumber,
    /// Valid encodings of every kind, for seeding the corpora.
    pub samples: Vec<(&'static str, Vec<u8>)>,
}

pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(build_fixture)
}

fn build_fixture() -> Fixture {
    let fail = |what: &str| -> ! { panic!("fixture: {what}") };
    let mut rng = StdRng::seed_from_u64(0x7AC17);
    let alice_address = Address::new("alice", 1).unwrap_or_else(|_| fail("address"));
    let bob_address = Address::new("bob", 2).unwrap_or_else(|_| fail("address"));
    let alice = IdentityKeyPair::generate(&mut rng);
    let bob = IdentityKeyPair::generate(&mut rng);
    let bob_signed_prekey = bob.generate_signed_prekey(&mut rng, PreKeyId(1));
    let bob_kem_prekey = bob.generate_kem_prekey(&mut rng, PreKeyId(1), KemPreKeyKind::LastResort);
    let one_time = bob.generate_one_time_prekeys(&mut rng, PreKeyId(1), 1);
    let bundle = PreKeyBundle {
        identity: bob.public().clone(),
        signed_prekey: bob_signed_prekey.public(),
        one_time_prekey: None,
        kem_prekey: bob_kem_prekey.public().clone(),
    };
    let mut a = Session::initiate(&mut rng, &alice, &alice_address, &bob_address, &bundle)
        .unwrap_or_else(|_| fail("initiate"));
    let first = a.encrypt(b"first").unwrap_or_else(|_| fail("encrypt"));
    let Ok(Message::PreKey(prekey)) = Message::from_bytes(&first) else {
        fail("prekey message")
    };
    let keys = ResponderKeys {
        identity: &bob,
        signed_prekey: &bob_signed_prekey,
        one_time_prekey: None,
        kem_prekey: &bob_kem_prekey,
    };
    let (mut b, _) = Session::accept(&mut rng, keys, &bob_address, &alice_address, &prekey)
        .unwrap_or_else(|_| fail("accept"));
    let reply = b.encrypt(b"reply").unwrap_or_else(|_| fail("encrypt"));
    let Ok(reply_message) = Message::from_bytes(&reply) else {
        fail("reply")
    };
    a.decrypt(&mut rng, &reply_message).unwrap_or_else(|_| fail("decrypt"));
    let next = a.encrypt(b"next").unwrap_or_else(|_| fail("encrypt"));
    let safety_number = SafetyNumber::new(b"alice", alice.public(), b"bob", bob.public());
    let samples = vec![
        ("decode_message", first.clone()),
        ("decode_message", reply.clone()),
        ("decrypt", next),
        ("decrypt", first),
        ("decode_session", a.to_bytes().to_vec()),
        ("decode_session", b.to_bytes().to_vec()),
        ("decode_keys", [&[0u8][..], &alice.public().to_bytes()].concat()),
        ("decode_keys", [&[1u8][..], &bob_signed_prekey.public().to_bytes()].concat()),
        ("decode_keys", [&[2u8][..], &one_time[0].public().to_bytes()].concat()),
        ("decode_keys", [&[3u8][..], &bob_kem_prekey.public().to_bytes()].concat()),
        ("decode_keys", [&[4u8][..], &bundle.to_bytes()].concat()),
        ("decode_keys", [&[5u8][..], &alice.to_secret_bytes()[..]].concat()),
        ("decode_keys", [&[6u8][..], &bob_signed_prekey.to_secret_bytes()[..]].concat()),
        ("decode_keys", [&[7u8][..], &one_time[0].to_secret_bytes()[..]].concat()),
        ("decode_keys", [&[8u8][..], &bob_kem_prekey.to_secret_bytes()[..]].concat()),
        ("decode_keys", [&[8u8][..], &safety_number.scannable()].concat()),
    ];
    Fixture {
        alice_address,
        bob_address,
        bob,
        bob_signed_prekey,
        bob_kem_prekey,
        alice_session: a.to_bytes().to_vec(),
        bob_session: b.to_bytes().to_vec(),
        safety_number,
        samples,
    }
}
