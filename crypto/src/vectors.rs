//! Checks the language-neutral test vectors in `crypto/tests/vectors/*.json`.
//!
//! Each file holds inputs (every random byte a party draws, in the order it draws them)
//! and the outputs they must give. This test reads the inputs, recomputes every output
//! and compares. `TACIT_WRITE_VECTORS=1 cargo test -p tacit-crypto vectors` rewrites the
//! files from fixed seeds instead (only when the format deliberately changes).

use std::convert::Infallible;
use std::path::PathBuf;

use ml_kem::{EncapsulationKey768, KeyExport};
use rand_core::{TryCryptoRng, TryRng};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use sha2::{Digest, Sha512};
use x25519_dalek::{PublicKey, StaticSecret};

use crate::consts::LABEL_MESSAGE_KEYS;
use crate::ratchet::chain::{ChainKey, MessageKey};
use crate::ratchet::root::RootKey;
use crate::{
    Address, IdentityKeyPair, KemPreKeyKind, Message, PreKeyBundle, PreKeyId, ResponderKeys,
    SafetyNumber, Session,
};

/// Replays fixed bytes as randomness, and counts what was drawn.
struct FixedRng {
    bytes: Vec<u8>,
    used: usize,
}

impl FixedRng {
    fn new(bytes: &[u8]) -> Self {
        Self {
            bytes: bytes.to_vec(),
            used: 0,
        }
    }
}

impl TryRng for FixedRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut b = [0u8; 4];
        self.try_fill_bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut b = [0u8; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        let end = self.used + dst.len();
        assert!(end <= self.bytes.len(), "vector ran out of random bytes");
        dst.copy_from_slice(&self.bytes[self.used..end]);
        self.used = end;
        Ok(())
    }
}

impl TryCryptoRng for FixedRng {}

fn writing() -> bool {
    std::env::var_os("TACIT_WRITE_VECTORS").is_some()
}

fn path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/vectors")
        .join(name)
}

/// Fixed pseudo-random input bytes for writing vectors: SHA-512 in counter mode.
fn seeded(label: &str, len: usize) -> String {
    let mut out = Vec::with_capacity(len + 64);
    let mut counter = 0u32;
    while out.len() < len {
        let block = Sha512::new()
            .chain_update(b"Tacit test vector ")
            .chain_update(label.as_bytes())
            .chain_update(counter.to_be_bytes())
            .finalize();
        out.extend_from_slice(&block);
        counter += 1;
    }
    out.truncate(len);
    hex::encode(out)
}

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

fn arr32(s: &str) -> [u8; 32] {
    unhex(s).try_into().unwrap()
}

/// Recomputes `expected` from its own inputs with `build` and compares (or writes it).
fn check<T>(name: &str, fresh: Vec<T>, build: impl Fn(&T) -> T)
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let file = path(name);
    if writing() {
        let built: Vec<T> = fresh.iter().map(&build).collect();
        let json = serde_json::to_string_pretty(&built).unwrap();
        std::fs::write(&file, json + "\n").unwrap();
    }
    let text = std::fs::read_to_string(&file).unwrap();
    let expected: Vec<T> = serde_json::from_str(&text).unwrap();
    assert!(!expected.is_empty());
    for case in &expected {
        assert_eq!(&build(case), case, "{name}");
    }
}

// -------------------------------------------------------------------------------------
// KDFs and message encryption

#[derive(Serialize, Deserialize, PartialEq, Debug, Clone, Default)]
struct KdfVector {
    description: String,
    root_key: String,
    dh_output: String,
    /// KDF_RK outputs.
    next_root_key: String,
    chain_key: String,
    /// KDF_CK outputs from `chain_key` (at index 0).
    message_key: String,
    next_chain_key: String,
    /// The message key expanded.
    aead_key: String,
    nonce: String,
    /// Sealing `plaintext` under `message_key` with `associated_data`: ciphertext || tag.
    associated_data: String,
    plaintext: String,
    sealed: String,
}

fn build_kdf(v: &KdfVector) -> KdfVector {
    let (root, chain) = RootKey::new(arr32(&v.root_key)).step(&arr32(&v.dh_output));
    let Some((message_key, next)) = ChainKey::new(*chain.as_bytes(), 0).step() else {
        panic!("chain exhausted")
    };
    let (aead_key, nonce) = message_key.expand(LABEL_MESSAGE_KEYS);
    let mut sealed = Vec::new();
    MessageKey::new(*message_key.as_bytes(), 0).seal(
        LABEL_MESSAGE_KEYS,
        &unhex(&v.associated_data),
        &unhex(&v.plaintext),
        &mut sealed,
    );
    assert_eq!(
        message_key
            .open(LABEL_MESSAGE_KEYS, &unhex(&v.associated_data), &sealed)
            .unwrap(),
        unhex(&v.plaintext)
    );
    KdfVector {
        description: v.description.clone(),
        root_key: v.root_key.clone(),
        dh_output: v.dh_output.clone(),
        next_root_key: hex::encode(root.as_bytes()),
        chain_key: hex::encode(chain.as_bytes()),
        message_key: hex::encode(message_key.as_bytes()),
        next_chain_key: hex::encode(next.as_bytes()),
        aead_key: hex::encode(*aead_key),
        nonce: hex::encode(nonce),
        associated_data: v.associated_data.clone(),
        plaintext: v.plaintext.clone(),
        sealed: hex::encode(sealed),
    }
}

#[test]
fn kdf_and_message_encryption_vectors() {
    let fresh = (0..3)
        .map(|i| KdfVector {
            description: format!("root step, chain step, message key {i}"),
            root_key: seeded(&format!("kdf root {i}"), 32),
            dh_output: seeded(&format!("kdf dh {i}"), 32),
            associated_data: seeded(&format!("kdf ad {i}"), 16 + 42 * i),
            plaintext: seeded(&format!("kdf plaintext {i}"), [0, 5, 1024][i]),
            ..Default::default()
        })
        .collect();
    check("kdf.json", fresh, build_kdf);
}

// -------------------------------------------------------------------------------------
// PQXDH and the ratchet after it

#[derive(Serialize, Deserialize, PartialEq, Debug, Clone, Default)]
struct AddressJson {
    user: String,
    device: u32,
}

impl AddressJson {
    fn address(&self) -> Address {
        Address::new(self.user.clone(), self.device).unwrap()
    }
}

#[derive(Serialize, Deserialize, PartialEq, Debug, Clone, Default)]
struct RatchetStep {
    /// "alice" or "bob".
    sender: String,
    plaintext: String,
    /// Random bytes the receiver draws while decrypting (32 on a DH ratchet step, else none).
    receiver_random: String,
    /// The encrypted message on the wire.
    message: String,
}

#[derive(Serialize, Deserialize, PartialEq, Debug, Clone, Default)]
struct PqxdhVector {
    description: String,
    alice_address: AddressJson,
    bob_address: AddressJson,
    /// Ed25519 seed (32) || X25519 secret (32).
    alice_identity_random: String,
    bob_identity_random: String,
    bob_signed_prekey_id: u32,
    bob_signed_prekey_secret: String,
    bob_one_time_prekey_id: Option<u32>,
    bob_one_time_prekey_secret: Option<String>,
    bob_kem_prekey_id: u32,
    /// Which kind of KEM prekey the bundle carries: `"last_resort"` (kind byte 0x02, the
    /// key a bundle falls back to) or `"one_time"` (0x01).
    bob_kem_prekey_kind: String,
    /// FIPS 203 seed d || z (64 bytes).
    bob_kem_prekey_seed: String,
    /// EK_A (32) || ML-KEM encapsulation message m (32) || Alice's first ratchet key (32).
    alice_random: String,
    /// Bob's first ratchet key, drawn while accepting.
    bob_random: String,
    plaintext: String,
    // Outputs.
    alice_identity_key: String,
    bob_identity_key: String,
    bundle: String,
    dh1: String,
    dh2: String,
    dh3: String,
    dh4: Option<String>,
    kem_ciphertext: String,
    kem_shared_secret: String,
    session_key: String,
    associated_data: String,
    /// Alice's first message (a prekey message).
    message: String,
    /// The conversation that follows, each message delivered as soon as it is sent.
    ratchet: Vec<RatchetStep>,
}

fn dh(secret: &[u8], public: &PublicKey) -> String {
    let secret = StaticSecret::from(<[u8; 32]>::try_from(secret).unwrap());
    hex::encode(secret.diffie_hellman(public).as_bytes())
}

fn build_pqxdh(v: &PqxdhVector) -> PqxdhVector {
    let alice_random = unhex(&v.alice_identity_random);
    let alice = IdentityKeyPair::generate(&mut FixedRng::new(&alice_random));
    let bob_random = unhex(&v.bob_identity_random);
    let bob = IdentityKeyPair::generate(&mut FixedRng::new(&bob_random));
    let spk_secret = unhex(&v.bob_signed_prekey_secret);
    let spk = bob.generate_signed_prekey(
        &mut FixedRng::new(&spk_secret),
        PreKeyId(v.bob_signed_prekey_id),
    );
    let otk_secret = v.bob_one_time_prekey_secret.as_deref().map(unhex);
    let otk = v
        .bob_one_time_prekey_id
        .zip(otk_secret.as_ref())
        .map(|(id, secret)| {
            bob.generate_one_time_prekeys(&mut FixedRng::new(secret), PreKeyId(id), 1)
                .remove(0)
        });
    let kem = bob.generate_kem_prekey(
        &mut FixedRng::new(&unhex(&v.bob_kem_prekey_seed)),
        PreKeyId(v.bob_kem_prekey_id),
        match v.bob_kem_prekey_kind.as_str() {
            "last_resort" => KemPreKeyKind::LastResort,
            "one_time" => KemPreKeyKind::OneTime,
            other => panic!("unknown KEM prekey kind {other:?}"),
        },
    );
    let bundle = PreKeyBundle {
        identity: bob.public().clone(),
        signed_prekey: spk.public(),
        one_time_prekey: otk.as_ref().map(|k| k.public()),
        kem_prekey: kem.public().clone(),
    };
    let (alice_address, bob_address) = (v.alice_address.address(), v.bob_address.address());

    // Intermediate values, computed directly from the primitives.
    let random = unhex(&v.alice_random);
    let (ek, m) = (&random[..32], &random[32..64]);
    let dh1 = dh(&alice_random[32..], bundle.signed_prekey.key());
    let dh2 = dh(ek, bundle.identity.dh_key());
    let dh3 = dh(ek, bundle.signed_prekey.key());
    let dh4 = bundle.one_time_prekey.as_ref().map(|k| dh(ek, k.key()));
    let ek_pub = EncapsulationKey768::new(&(*bundle.kem_prekey.key_bytes()).into()).unwrap();
    let m: [u8; 32] = m.try_into().unwrap();
    let (kem_ct, kem_ss) = ek_pub.encapsulate_deterministic(&m.into());
    let mut dhs = vec![arr32(&dh1), arr32(&dh2), arr32(&dh3)];
    dhs.extend(dh4.iter().map(|d| arr32(d)));
    let kem_ss: [u8; 32] = kem_ss.into();
    let sk = crate::pqxdh::session_key(&dhs, &kem_ss);
    let ad =
        crate::pqxdh::associated_data(alice.public(), bob.public(), &alice_address, &bob_address);

    // The protocol run itself.
    let mut alice_rng = FixedRng::new(&random);
    let mut a = Session::initiate(
        &mut alice_rng,
        &alice,
        &alice_address,
        &bob_address,
        &bundle,
    )
    .unwrap();
    assert_eq!(
        alice_rng.used, 96,
        "initiator draws EK, m and a ratchet key"
    );
    let first = a.encrypt(&unhex(&v.plaintext)).unwrap();
    let Message::PreKey(prekey) = Message::from_bytes(&first).unwrap() else {
        panic!("first message must be a prekey message")
    };
    let keys = ResponderKeys {
        identity: &bob,
        signed_prekey: &spk,
        one_time_prekey: otk.as_ref(),
        kem_prekey: &kem,
    };
    let mut bob_rng = FixedRng::new(&unhex(&v.bob_random));
    let (mut b, plaintext) =
        Session::accept(&mut bob_rng, keys, &bob_address, &alice_address, &prekey).unwrap();
    assert_eq!(plaintext, unhex(&v.plaintext));

    let ratchet = v
        .ratchet
        .iter()
        .map(|step| {
            let (sender, receiver) = if step.sender == "alice" {
                (&mut a, &mut b)
            } else {
                (&mut b, &mut a)
            };
            let message = sender.encrypt(&unhex(&step.plaintext)).unwrap();
            let mut rng = FixedRng::new(&unhex(&step.receiver_random));
            let opened = receiver
                .decrypt(&mut rng, &Message::from_bytes(&message).unwrap())
                .unwrap();
            assert_eq!(opened, unhex(&step.plaintext));
            RatchetStep {
                sender: step.sender.clone(),
                plaintext: step.plaintext.clone(),
                receiver_random: hex::encode(&rng.bytes[..rng.used]),
                message: hex::encode(message),
            }
        })
        .collect();

    PqxdhVector {
        alice_identity_key: hex::encode(alice.public().to_bytes()),
        bob_identity_key: hex::encode(bob.public().to_bytes()),
        bundle: hex::encode(bundle.to_bytes()),
        dh1,
        dh2,
        dh3,
        dh4,
        kem_ciphertext: hex::encode(<[u8; 1088]>::from(kem_ct)),
        kem_shared_secret: hex::encode(kem_ss),
        session_key: hex::encode(sk.as_bytes()),
        associated_data: hex::encode(ad),
        message: hex::encode(first),
        ratchet,
        ..v.clone()
    }
}

#[test]
fn pqxdh_and_ratchet_vectors() {
    let script = [
        ("bob", 8),
        ("alice", 0),
        ("alice", 300),
        ("bob", 12),
        ("bob", 1),
        ("alice", 64),
    ];
    let fresh = [(true, false), (false, false), (true, true)]
        .into_iter()
        .map(|(with_one_time, one_time_kem)| {
            let tag = match (with_one_time, one_time_kem) {
                (true, false) => "otk",
                (false, _) => "no-otk",
                (true, true) => "otk one-time-kem",
            };
            let s = |label: &str, len| seeded(&format!("pqxdh {tag} {label}"), len);
            PqxdhVector {
                description: format!(
                    "PQXDH {} a one-time prekey and with a {} KEM prekey, then a conversation",
                    if with_one_time { "with" } else { "without" },
                    if one_time_kem {
                        "one-time"
                    } else {
                        "last-resort"
                    }
                ),
                alice_address: AddressJson {
                    user: "alice".into(),
                    device: 1,
                },
                bob_address: AddressJson {
                    user: "bob".into(),
                    device: 2,
                },
                alice_identity_random: s("alice identity", 64),
                bob_identity_random: s("bob identity", 64),
                bob_signed_prekey_id: 7,
                bob_signed_prekey_secret: s("bob spk", 32),
                bob_one_time_prekey_id: with_one_time.then_some(1001),
                bob_one_time_prekey_secret: with_one_time.then(|| s("bob otk", 32)),
                bob_kem_prekey_id: 3,
                bob_kem_prekey_kind: if one_time_kem {
                    "one_time"
                } else {
                    "last_resort"
                }
                .into(),
                bob_kem_prekey_seed: s("bob kem", 64),
                alice_random: s("alice random", 96),
                bob_random: s("bob random", 32),
                plaintext: hex::encode(b"Hello Bob, this is Alice."),
                ratchet: script
                    .iter()
                    .enumerate()
                    .map(|(i, (sender, len))| RatchetStep {
                        sender: (*sender).into(),
                        plaintext: s(&format!("step {i} plaintext"), *len),
                        receiver_random: s(&format!("step {i} receiver random"), 32),
                        message: String::new(),
                    })
                    .collect(),
                ..Default::default()
            }
        })
        .collect();
    check("pqxdh.json", fresh, build_pqxdh);
}

// -------------------------------------------------------------------------------------
// Safety numbers

#[derive(Serialize, Deserialize, PartialEq, Debug, Clone, Default)]
struct SafetyNumberVector {
    alice_id: String,
    alice_identity_random: String,
    bob_id: String,
    bob_identity_random: String,
    alice_identity_key: String,
    bob_identity_key: String,
    /// The 60 digits, identical on both sides.
    displayable: String,
    /// Alice's and Bob's scannable forms.
    alice_scannable: String,
    bob_scannable: String,
}

fn build_safety_number(v: &SafetyNumberVector) -> SafetyNumberVector {
    let alice = IdentityKeyPair::generate(&mut FixedRng::new(&unhex(&v.alice_identity_random)));
    let bob = IdentityKeyPair::generate(&mut FixedRng::new(&unhex(&v.bob_identity_random)));
    let on_alice = SafetyNumber::new(
        v.alice_id.as_bytes(),
        alice.public(),
        v.bob_id.as_bytes(),
        bob.public(),
    );
    let on_bob = SafetyNumber::new(
        v.bob_id.as_bytes(),
        bob.public(),
        v.alice_id.as_bytes(),
        alice.public(),
    );
    assert_eq!(on_alice.displayable(), on_bob.displayable());
    SafetyNumberVector {
        alice_identity_key: hex::encode(alice.public().to_bytes()),
        bob_identity_key: hex::encode(bob.public().to_bytes()),
        displayable: on_alice.displayable().into(),
        alice_scannable: hex::encode(on_alice.scannable()),
        bob_scannable: hex::encode(on_bob.scannable()),
        ..v.clone()
    }
}

#[test]
fn safety_number_vectors() {
    let fresh = [("alice", "bob"), ("+14155550100", "+442079460000")]
        .into_iter()
        .map(|(a, b)| SafetyNumberVector {
            alice_id: a.into(),
            alice_identity_random: seeded(&format!("safety {a}"), 64),
            bob_id: b.into(),
            bob_identity_random: seeded(&format!("safety {b}"), 64),
            ..Default::default()
        })
        .collect();
    check("safety_number.json", fresh, build_safety_number);
}

// -------------------------------------------------------------------------------------
// Provisioning: the sealed message and the link answer

#[derive(Serialize, Deserialize, PartialEq, Debug, Clone, Default)]
struct ProvisioningVector {
    description: String,
    /// What the new device draws: its X25519 secret (32), then its ML-KEM seed d || z (64).
    recipient_random: String,
    /// What the sealing device draws: the ephemeral X25519 secret (32), then ML-KEM's m (32).
    seal_random: String,
    /// The link secret of the code (16).
    link_secret: String,
    /// The associated data (for a link: "Tacit link " || channel id).
    context: String,
    plaintext: String,
    /// The new device's public key encoding.
    recipient_public: String,
    kem_ciphertext: String,
    /// ML-KEM-768's shared secret, given for implementations without ML-KEM.
    kem_shared_secret: String,
    /// 0x01 || EK (32) || CT (1088) || ChaCha20-Poly1305 ciphertext || tag.
    sealed: String,
    /// 0x01 || HMAC-SHA256 tag (32) || sealed.
    answer: String,
    /// Answers that must be refused under `link_secret` and `context`.
    must_fail: Vec<ProvisioningFailure>,
}

#[derive(Serialize, Deserialize, PartialEq, Debug, Clone, Default)]
struct ProvisioningFailure {
    description: String,
    answer: String,
}

fn build_provisioning(v: &ProvisioningVector) -> ProvisioningVector {
    use crate::provision::{LinkSecret, ProvisioningKeyPair, seal, seal_answer};
    let recipient = ProvisioningKeyPair::generate(&mut FixedRng::new(&unhex(&v.recipient_random)));
    let (context, plaintext) = (unhex(&v.context), unhex(&v.plaintext));
    let sealed = seal(
        &mut FixedRng::new(&unhex(&v.seal_random)),
        recipient.public(),
        &context,
        &plaintext,
    )
    .unwrap();
    let secret = LinkSecret::from_bytes(unhex(&v.link_secret).try_into().unwrap());
    let answer = seal_answer(
        &mut FixedRng::new(&unhex(&v.seal_random)),
        recipient.public(),
        &secret,
        &context,
        &plaintext,
    )
    .unwrap();
    assert_eq!(&answer[33..], sealed.as_slice());
    assert_eq!(
        recipient
            .open_answer(&secret, &context, &answer)
            .unwrap()
            .as_slice(),
        plaintext.as_slice()
    );
    let ciphertext: [u8; 1088] = sealed[33..33 + 1088].try_into().unwrap();
    let wrong_secret = seal_answer(
        &mut FixedRng::new(&unhex(&v.seal_random)),
        recipient.public(),
        &LinkSecret::from_bytes([0; LinkSecret::LEN]),
        &context,
        &plaintext,
    )
    .unwrap();
    let flip = |i: usize| {
        let mut bad = answer.clone();
        bad[i] ^= 0x01;
        bad
    };
    let must_fail = vec![
        ("made under another link secret (all zeros)", wrong_secret),
        ("tag altered", flip(1)),
        ("sealed message altered", flip(answer.len() - 1)),
        ("unknown version 0x02", {
            let mut bad = answer.clone();
            bad[0] = 0x02;
            bad
        }),
        ("truncated by one byte", answer[..answer.len() - 1].to_vec()),
        ("the bare sealed message, no tag", sealed.clone()),
    ];
    for (what, bad) in &must_fail {
        assert!(
            recipient.open_answer(&secret, &context, bad).is_err(),
            "{what}"
        );
    }
    ProvisioningVector {
        recipient_public: hex::encode(recipient.public().to_bytes()),
        kem_ciphertext: hex::encode(ciphertext),
        kem_shared_secret: hex::encode(recipient.kem_shared_secret(&ciphertext)),
        sealed: hex::encode(&sealed),
        answer: hex::encode(&answer),
        must_fail: must_fail
            .into_iter()
            .map(|(what, bad)| ProvisioningFailure {
                description: what.into(),
                answer: hex::encode(bad),
            })
            .collect(),
        ..v.clone()
    }
}

#[test]
fn provisioning_vectors() {
    let fresh = [
        (
            "a link answer",
            b"Tacit link AAAAAAAAAAAAAAAAAAAAAA".as_slice(),
        ),
        ("an empty context", b"".as_slice()),
    ]
    .into_iter()
    .map(|(description, context)| ProvisioningVector {
        description: description.into(),
        recipient_random: seeded(&format!("provisioning recipient {description}"), 96),
        seal_random: seeded(&format!("provisioning seal {description}"), 64),
        link_secret: seeded(&format!("provisioning secret {description}"), 16),
        context: hex::encode(context),
        plaintext: hex::encode(br#"{"v":1,"username":"alice"}"#),
        ..Default::default()
    })
    .collect();
    check("provisioning.json", fresh, build_provisioning);
}

// -------------------------------------------------------------------------------------
// Sender keys

#[derive(Serialize, Deserialize, PartialEq, Debug, Clone, Default)]
struct SenderKeyVector {
    description: String,
    group_id: String,
    /// What starting the chain draws: chain id (16), CK_0 (32), Ed25519 seed (32).
    chain_random: String,
    plaintexts: Vec<String>,
    /// The distribution at iteration 0.
    distribution: String,
    /// message_i for each plaintext, i = 0, 1, ...
    messages: Vec<String>,
    /// Messages a member holding the distribution must refuse.
    must_fail: Vec<SenderKeyFailure>,
}

#[derive(Serialize, Deserialize, PartialEq, Debug, Clone, Default)]
struct SenderKeyFailure {
    description: String,
    message: String,
}

fn build_sender_keys(v: &SenderKeyVector) -> SenderKeyVector {
    use crate::{SenderKeyMessage, SenderKeyRecord, SenderKeyState};
    let group = crate::GroupId(unhex(&v.group_id).try_into().unwrap());
    let mut chain = SenderKeyState::generate(&mut FixedRng::new(&unhex(&v.chain_random)), group);
    let distribution = chain.distribution();
    let messages: Vec<Vec<u8>> = v
        .plaintexts
        .iter()
        .map(|p| chain.encrypt(&unhex(p)).unwrap())
        .collect();
    let first = &messages[0];
    let flip = |i: usize| {
        let mut bad = first.clone();
        bad[i] ^= 0x01;
        bad
    };
    let must_fail = vec![
        ("signature altered", flip(first.len() - 1)),
        ("ciphertext altered (and so not what was signed)", flip(38)),
        ("iteration altered", flip(37)),
        ("chain id altered", flip(20)),
        ("type altered", flip(1)),
        ("truncated by one byte", first[..first.len() - 1].to_vec()),
    ];
    let mut record = SenderKeyRecord::new(group);
    record.process(&distribution).unwrap();
    for (what, bad) in &must_fail {
        let refused = SenderKeyMessage::from_bytes(bad)
            .map(|m| record.decrypt(&m).is_err())
            .unwrap_or(true);
        assert!(refused, "{what}");
    }
    for (message, plaintext) in messages.iter().zip(&v.plaintexts) {
        let message = SenderKeyMessage::from_bytes(message).unwrap();
        assert_eq!(record.decrypt(&message).unwrap(), unhex(plaintext));
    }
    SenderKeyVector {
        distribution: hex::encode(distribution.to_bytes().as_slice()),
        messages: messages.iter().map(hex::encode).collect(),
        must_fail: must_fail
            .into_iter()
            .map(|(what, bad)| SenderKeyFailure {
                description: what.into(),
                message: hex::encode(bad),
            })
            .collect(),
        ..v.clone()
    }
}

#[test]
fn sender_key_vectors() {
    let fresh = vec![SenderKeyVector {
        description: "three messages on one chain".into(),
        group_id: seeded("sender key group", 16),
        chain_random: seeded("sender key chain", 80),
        plaintexts: ["hello group", "", "the third"]
            .iter()
            .map(|p| hex::encode(p.as_bytes()))
            .collect(),
        ..Default::default()
    }];
    check("sender_keys.json", fresh, build_sender_keys);
}

// -------------------------------------------------------------------------------------
// Attachments

#[derive(Serialize, Deserialize, PartialEq, Debug, Clone, Default)]
struct AttachmentVector {
    description: String,
    key: String,
    /// What encrypting draws: the blob's nonce (16).
    nonce_random: String,
    /// The plaintext is `length` bytes, byte j = j mod 251.
    length: usize,
    /// The whole blob when it is short (else only its digest is given).
    blob: Option<String>,
    blob_length: usize,
    digest: String,
    /// Edits of the blob (or the digest) that a decryptor must refuse.
    must_fail: Vec<AttachmentFailure>,
}

#[derive(Serialize, Deserialize, PartialEq, Debug, Clone, Default)]
struct AttachmentFailure {
    description: String,
    /// Flip the low bit of this byte of the blob.
    flip: Option<usize>,
    /// Keep only this many bytes of the blob.
    truncate_to: Option<usize>,
    /// Append these bytes (hex).
    append: Option<String>,
    /// Flip the low bit of the digest's first byte.
    #[serde(default)]
    flip_digest: bool,
}

fn attachment_plaintext(length: usize) -> Vec<u8> {
    (0..length)
        .map(|j| u8::try_from(j % 251).unwrap())
        .collect()
}

fn open_attachment(key: &crate::AttachmentKey, digest: [u8; 32], blob: &[u8]) -> bool {
    use crate::attachment::Decryptor;
    let mut decryptor = Decryptor::new(key, crate::AttachmentDigest(digest));
    let mut out = Vec::new();
    // In two pieces, to exercise the streaming decoder.
    let (a, b) = blob.split_at(blob.len() / 2);
    decryptor.push(a, &mut out).is_ok()
        && decryptor.push(b, &mut out).is_ok()
        && decryptor.finish(&mut out).is_ok()
}

fn build_attachment(v: &AttachmentVector) -> AttachmentVector {
    use crate::attachment::Encryptor;
    let key = crate::AttachmentKey::from_bytes(arr32(&v.key));
    let plaintext = attachment_plaintext(v.length);
    let mut blob = Vec::new();
    let mut encryptor = Encryptor::new(&mut FixedRng::new(&unhex(&v.nonce_random)), &key);
    encryptor.push(&plaintext, &mut blob).unwrap();
    let digest = encryptor.finish(&mut blob).unwrap();
    assert!(open_attachment(&key, digest.0, &blob));
    for case in &v.must_fail {
        let mut bad = blob.clone();
        let mut bad_digest = digest.0;
        if let Some(i) = case.flip {
            bad[i] ^= 0x01;
        }
        if let Some(n) = case.truncate_to {
            bad.truncate(n);
        }
        if let Some(extra) = &case.append {
            bad.extend_from_slice(&unhex(extra));
        }
        if case.flip_digest {
            bad_digest[0] ^= 0x01;
        }
        assert!(
            !open_attachment(&key, bad_digest, &bad),
            "{}",
            case.description
        );
    }
    AttachmentVector {
        blob: (blob.len() <= 256).then(|| hex::encode(&blob)),
        blob_length: blob.len(),
        digest: hex::encode(digest.0),
        ..v.clone()
    }
}

#[test]
fn attachment_vectors() {
    let two_chunks = 65_536 + 10;
    let blob_len = 17 + two_chunks + 2 * 16;
    let failure = |description: &str| AttachmentFailure {
        description: description.into(),
        ..Default::default()
    };
    let must_fail = vec![
        AttachmentFailure {
            flip: Some(0),
            ..failure("unknown version")
        },
        AttachmentFailure {
            flip: Some(17 + 5),
            ..failure("first chunk altered")
        },
        AttachmentFailure {
            flip: Some(blob_len - 1),
            ..failure("last chunk's tag altered")
        },
        AttachmentFailure {
            truncate_to: Some(17 + 65_536 + 16),
            ..failure("cut at a chunk boundary (the last chunk dropped)")
        },
        AttachmentFailure {
            truncate_to: Some(blob_len - 1),
            ..failure("truncated by one byte")
        },
        AttachmentFailure {
            append: Some("00".into()),
            ..failure("a byte appended")
        },
        AttachmentFailure {
            flip_digest: true,
            ..failure("another digest")
        },
    ];
    let fresh = [0, 100, 65_536, two_chunks]
        .into_iter()
        .map(|length| AttachmentVector {
            description: format!("{length} bytes"),
            key: seeded(&format!("attachment key {length}"), 32),
            nonce_random: seeded(&format!("attachment nonce {length}"), 16),
            length,
            must_fail: if length == two_chunks {
                must_fail.clone()
            } else {
                Vec::new()
            },
            ..Default::default()
        })
        .collect();
    check("attachments.json", fresh, build_attachment);
}

#[test]
fn kem_key_export_matches_bundle_bytes() {
    // The KEM public key in bundles is FIPS 203's encapsulation key encoding.
    let mut rng = crate::test_rng(99);
    let id = IdentityKeyPair::generate(&mut rng);
    let kem = id.generate_kem_prekey(&mut rng, PreKeyId(1), KemPreKeyKind::OneTime);
    let ek = EncapsulationKey768::new(&(*kem.public().key_bytes()).into()).unwrap();
    assert_eq!(
        ek.to_bytes().as_slice(),
        kem.public().key_bytes().as_slice()
    );
}
