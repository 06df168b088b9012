// The bodies of the fuzz targets, shared by `fuzz_targets/*.rs` (under cargo-fuzz) and by
// `crypto/tests/fuzz_corpus.rs` (which replays the committed corpus on every test run).
// Each parses untrusted bytes and checks what must hold for any input.

use std::sync::OnceLock;

use rand::SeedableRng;
use rand::rngs::StdRng;
use tacit_crypto::attachment::{Decryptor, Encryptor};
use tacit_crypto::provision::{self, ProvisioningKeyPair, ProvisioningPublicKey};
use tacit_crypto::{
    Address, AttachmentDigest, AttachmentKey, GroupId, IdentityKey, IdentityKeyPair, KemPreKey,
    KemPreKeyKind, KemPreKeyPair, Message, OneTimePreKey, OneTimePreKeyPair, PreKeyBundle,
    PreKeyId, ResponderKeys, SafetyNumber, SenderKeyDistribution, SenderKeyMessage,
    SenderKeyRecord, SenderKeyState, Session, SignedPreKey, SignedPreKeyPair,
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

/// A group message: decoding never panics and keeps the bytes; decrypting it on the
/// fixture's record never panics, and a failure leaves the record exactly as it was.
pub fn group_decrypt(data: &[u8]) {
    let Ok(message) = SenderKeyMessage::from_bytes(data) else {
        return;
    };
    assert_eq!(message.as_bytes(), data, "sender key message encoding is not canonical");
    let fixture = fixture();
    let Ok(mut record) = SenderKeyRecord::from_bytes(&fixture.group_record) else {
        panic!("fixture record does not decode");
    };
    if record.decrypt(&message).is_err() {
        assert_eq!(record.to_bytes().as_slice(), fixture.group_record.as_slice());
    }
}

/// A sender-key distribution: decoding never panics, re-encodes to the same bytes, and
/// adding it to the fixture's record keeps the record decodable.
pub fn decode_distribution(data: &[u8]) {
    let Ok(distribution) = SenderKeyDistribution::from_bytes(data) else {
        return;
    };
    assert_eq!(distribution.to_bytes().as_slice(), data, "distribution encoding is not canonical");
    let fixture = fixture();
    let Ok(mut record) = SenderKeyRecord::from_bytes(&fixture.group_record) else {
        panic!("fixture record does not decode");
    };
    if record.process(&distribution).is_ok() {
        let stored = record.to_bytes();
        let restored = SenderKeyRecord::from_bytes(&stored);
        assert!(restored.is_ok(), "a processed record does not decode: {restored:?}");
    }
}

/// Stored group state, chosen by the first byte (sender state or receiver record): decoding
/// never panics and re-encodes to the same bytes.
pub fn decode_group_state(data: &[u8]) {
    let Some((which, bytes)) = data.split_first() else {
        return;
    };
    let reencoded = if which % 2 == 0 {
        SenderKeyState::from_bytes(bytes).map(|s| s.to_bytes()).ok()
    } else {
        SenderKeyRecord::from_bytes(bytes).map(|r| r.to_bytes()).ok()
    };
    if let Some(reencoded) = reencoded {
        assert_eq!(reencoded.as_slice(), bytes, "group state encoding is not canonical");
    }
}

/// Any bytes through an attachment decryptor (the first byte picks the piece size): never
/// panics, and only the fixture's own blob decrypts.
pub fn attachment_decrypt(data: &[u8]) {
    let Some((piece, blob)) = data.split_first() else {
        return;
    };
    let fixture = fixture();
    let key = AttachmentKey::from_bytes(fixture.attachment_key);
    let mut decryptor = Decryptor::new(&key, fixture.attachment_digest);
    let mut out = Vec::new();
    for part in blob.chunks(usize::from(*piece).max(1) * 16) {
        if decryptor.push(part, &mut out).is_err() {
            return;
        }
    }
    if decryptor.finish(&mut out).is_ok() {
        assert_eq!(blob, fixture.attachment_blob.as_slice(), "a foreign blob decrypted");
        assert_eq!(out, fixture.attachment_plaintext, "the blob decrypted wrongly");
    }
}

/// Provisioning (device linking), chosen by the first byte: a public key decodes strictly
/// and canonically; any bytes opened with the fixture's key (as a sealed message, or as a
/// link answer under the fixture's link secret) never panic, and only the fixture's own
/// sealed message and answer open.
pub fn provision_open(data: &[u8]) {
    let Some((which, bytes)) = data.split_first() else {
        return;
    };
    let fixture = fixture();
    match which % 3 {
        0 => {
            if let Ok(key) = ProvisioningPublicKey::from_bytes(bytes) {
                assert_eq!(key.to_bytes().as_slice(), bytes, "key encoding is not canonical");
            }
        }
        1 => {
            if let Ok(plaintext) = fixture.provisioning.open(PROVISIONING_CONTEXT, bytes) {
                assert_eq!(bytes, fixture.provisioning_sealed.as_slice(), "a foreign message opened");
                assert_eq!(plaintext.as_slice(), PROVISIONING_PLAINTEXT, "opened wrongly");
            }
        }
        _ => {
            let secret = provision::LinkSecret::from_bytes(fixture.provisioning_secret);
            let opened = fixture.provisioning.open_answer(&secret, PROVISIONING_CONTEXT, bytes);
            if let Ok(plaintext) = opened {
                assert_eq!(bytes, fixture.provisioning_answer.as_slice(), "a foreign answer opened");
                assert_eq!(plaintext.as_slice(), PROVISIONING_PLAINTEXT, "opened wrongly");
            }
        }
    }
}

const PROVISIONING_CONTEXT: &[u8] = b"Tacit link fixture";
const PROVISIONING_PLAINTEXT: &[u8] = b"the account identity";

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
    /// Bob's record of Alice's sender-key chains (two chains, some skipped keys).
    pub group_record: Vec<u8>,
    pub attachment_key: [u8; 32],
    pub attachment_digest: AttachmentDigest,
    pub attachment_blob: Vec<u8>,
    pub attachment_plaintext: Vec<u8>,
    /// A new device's provisioning key and a message sealed to it.
    pub provisioning: ProvisioningKeyPair,
    pub provisioning_sealed: Vec<u8>,
    /// A link secret and a link answer authenticated under it.
    pub provisioning_secret: [u8; provision::LinkSecret::LEN],
    pub provisioning_answer: Vec<u8>,
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

    // Group: Alice's old and current chains, as Bob holds them.
    let group = GroupId::generate(&mut rng);
    let mut old_chain = SenderKeyState::generate(&mut rng, group);
    let mut group_record = SenderKeyRecord::new(group);
    group_record.process(&old_chain.distribution()).unwrap_or_else(|_| fail("process"));
    let old_message = old_chain.encrypt(b"old").unwrap_or_else(|_| fail("group encrypt"));
    let mut chain = SenderKeyState::generate(&mut rng, group);
    let distribution = chain.distribution().to_bytes().to_vec();
    group_record.process(&chain.distribution()).unwrap_or_else(|_| fail("process"));
    let group_messages: Vec<Vec<u8>> = (0..4)
        .map(|i| chain.encrypt(&[i; 40]).unwrap_or_else(|_| fail("group encrypt")))
        .collect();
    let Ok(latest) = SenderKeyMessage::from_bytes(&group_messages[2]) else {
        fail("group message")
    };
    group_record.decrypt(&latest).unwrap_or_else(|_| fail("group decrypt"));

    // Attachment: a small file (one chunk) and an empty one.
    let attachment_key = AttachmentKey::generate(&mut rng);
    let attachment_plaintext = b"attachment ".repeat(20);
    let mut attachment_blob = Vec::new();
    let mut encryptor = Encryptor::new(&mut rng, &attachment_key);
    encryptor
        .push(&attachment_plaintext, &mut attachment_blob)
        .unwrap_or_else(|_| fail("attachment"));
    let attachment_digest = encryptor
        .finish(&mut attachment_blob)
        .unwrap_or_else(|_| fail("attachment"));
    let mut empty_blob = Vec::new();
    Encryptor::new(&mut rng, &attachment_key)
        .finish(&mut empty_blob)
        .unwrap_or_else(|_| fail("attachment"));
    // Provisioning: a new device's key and the answer sealed to it.
    let provisioning = ProvisioningKeyPair::generate(&mut rng);
    let provisioning_sealed = provision::seal(
        &mut rng,
        provisioning.public(),
        PROVISIONING_CONTEXT,
        PROVISIONING_PLAINTEXT,
    )
    .unwrap_or_else(|_| fail("provisioning"));
    let link_secret = provision::LinkSecret::generate(&mut rng);
    let provisioning_answer = provision::seal_answer(
        &mut rng,
        provisioning.public(),
        &link_secret,
        PROVISIONING_CONTEXT,
        PROVISIONING_PLAINTEXT,
    )
    .unwrap_or_else(|_| fail("link answer"));
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
        ("group_decrypt", group_messages[0].clone()),
        ("group_decrypt", group_messages[2].clone()),
        ("group_decrypt", group_messages[3].clone()),
        ("group_decrypt", old_message),
        ("decode_distribution", distribution),
        ("decode_distribution", old_chain.distribution().to_bytes().to_vec()),
        ("decode_group_state", [&[0u8][..], &chain.to_bytes()[..]].concat()),
        ("decode_group_state", [&[1u8][..], &group_record.to_bytes()[..]].concat()),
        ("attachment_decrypt", [&[3u8][..], &attachment_blob[..]].concat()),
        ("attachment_decrypt", [&[255u8][..], &empty_blob[..]].concat()),
        ("provision_open", [&[0u8][..], &provisioning.public().to_bytes()].concat()),
        ("provision_open", [&[1u8][..], &provisioning_sealed[..]].concat()),
        ("provision_open", [&[2u8][..], &provisioning_answer[..]].concat()),
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
        group_record: group_record.to_bytes().to_vec(),
        attachment_key: *attachment_key.as_bytes(),
        attachment_digest,
        attachment_blob,
        attachment_plaintext,
        provisioning,
        provisioning_sealed,
        provisioning_secret: *link_secret.as_bytes(),
        provisioning_answer,
        samples,
    }
}
