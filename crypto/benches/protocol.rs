//! The protocol benchmark: `cargo bench -p tacit-crypto`.
//!
//! Four scenarios, each for Tacit, for vodozemac (Olm, libolm-compatible v1 sessions; for
//! groups, Megolm) and for the *floor*: the raw primitive calls the scenario needs in
//! Tacit's protocol, summed in one function. At the end it prints a table with the ratios,
//! for docs/PERFORMANCE.md.
//!
//! - `setup`: from the responder's encoded bundle to the first 1 KiB message decrypted
//!   (decode and verify the bundle, PQXDH on both sides, the first ratchet steps).
//! - `same_chain`: one 1 KiB message encrypted and decrypted, always in the same direction.
//! - `ping_pong`: one 1 KiB message each way (every message starts a DH ratchet step);
//!   figures are per round trip (two messages).
//! - `group`: one 1 KiB sender-key message encrypted, signed, parsed, verified and
//!   decrypted by one member (Megolm: `GroupSession::encrypt`, to bytes and back,
//!   `InboundGroupSession::decrypt`).
//!
//! And one throughput figure, `attachment`: a 4 MiB file encrypted and decrypted in 64 KiB
//! pieces, against ChaCha20-Poly1305 alone over the same chunks (and with the SHA-256
//! digest that Tacit also computes).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // a benchmark binary

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chacha20poly1305::{ChaCha20Poly1305, KeyInit, aead::AeadInOut};
use criterion::Criterion;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use ml_kem::{Decapsulate, EncapsulationKey768, KeyExport, Seed, ml_kem_768::DecapsulationKey};
use rand::SeedableRng;
use rand::rngs::StdRng;
use sha2::Digest;
use sha2::Sha256;
use tacit_crypto::attachment::{Decryptor, Encryptor};
use tacit_crypto::{
    Address, AttachmentKey, GroupId, IdentityKeyPair, KemPreKeyKind, KemPreKeyPair, Message,
    OneTimePreKeyPair, PreKeyBundle, PreKeyId, ResponderKeys, SenderKeyMessage, SenderKeyRecord,
    SenderKeyState, Session, SignedPreKeyPair,
};
use vodozemac::megolm::SessionConfig as MegolmConfig;
use vodozemac::megolm::{GroupSession, InboundGroupSession, MegolmMessage};
use vodozemac::olm::{Account, OlmMessage, SessionConfig};
use x25519_dalek::{PublicKey, StaticSecret};

const PAYLOAD: [u8; 1024] = [0x5A; 1024];
/// The attachment size for the throughput figure, and the piece size it is pushed in.
const FILE_LEN: usize = 4 << 20;
const PIECE_LEN: usize = 64 << 10;

// ---------------------------------------------------------------------------------------
// Tacit

struct Bob {
    identity: IdentityKeyPair,
    signed_prekey: SignedPreKeyPair,
    one_time_prekey: OneTimePreKeyPair,
    kem_prekey: KemPreKeyPair,
    bundle: Vec<u8>,
}

struct Tacit {
    rng: StdRng,
    alice: IdentityKeyPair,
    bob: Bob,
    alice_address: Address,
    bob_address: Address,
}

impl Tacit {
    fn new() -> Self {
        let mut rng = StdRng::seed_from_u64(7);
        let alice = IdentityKeyPair::generate(&mut rng);
        let identity = IdentityKeyPair::generate(&mut rng);
        let signed_prekey = identity.generate_signed_prekey(&mut rng, PreKeyId(1));
        let one_time_prekey = identity
            .generate_one_time_prekeys(&mut rng, PreKeyId(1), 1)
            .remove(0);
        let kem_prekey =
            identity.generate_kem_prekey(&mut rng, PreKeyId(1), KemPreKeyKind::OneTime);
        let bundle = PreKeyBundle {
            identity: identity.public().clone(),
            signed_prekey: signed_prekey.public(),
            one_time_prekey: Some(one_time_prekey.public()),
            kem_prekey: kem_prekey.public().clone(),
        }
        .to_bytes();
        Self {
            rng,
            alice,
            bob: Bob {
                identity,
                signed_prekey,
                one_time_prekey,
                kem_prekey,
                bundle,
            },
            alice_address: Address::new("alice", 1).unwrap(),
            bob_address: Address::new("bob", 1).unwrap(),
        }
    }

    /// Bundle bytes to the first message decrypted by Bob.
    fn setup(&mut self) -> (Session, Session) {
        let bundle = PreKeyBundle::from_bytes(&self.bob.bundle).unwrap();
        let mut a = Session::initiate(
            &mut self.rng,
            &self.alice,
            &self.alice_address,
            &self.bob_address,
            &bundle,
        )
        .unwrap();
        let wire = a.encrypt(&PAYLOAD).unwrap();
        let Message::PreKey(first) = Message::from_bytes(&wire).unwrap() else {
            unreachable!()
        };
        let keys = ResponderKeys {
            identity: &self.bob.identity,
            signed_prekey: &self.bob.signed_prekey,
            one_time_prekey: Some(&self.bob.one_time_prekey),
            kem_prekey: &self.bob.kem_prekey,
        };
        let (b, plaintext) = Session::accept(
            &mut self.rng,
            keys,
            &self.bob_address,
            &self.alice_address,
            &first,
        )
        .unwrap();
        assert_eq!(plaintext.len(), PAYLOAD.len());
        (a, b)
    }

    /// Two sessions after one message each way (so Alice sends plain ratchet messages).
    fn established(&mut self) -> (Session, Session) {
        let (mut a, mut b) = self.setup();
        let reply = b.encrypt(b"ok").unwrap();
        a.decrypt(&mut self.rng, &Message::from_bytes(&reply).unwrap())
            .unwrap();
        (a, b)
    }
}

fn tacit_send(from: &mut Session, to: &mut Session, rng: &mut StdRng) {
    let wire = from.encrypt(&PAYLOAD).unwrap();
    let plaintext = to
        .decrypt(rng, &Message::from_bytes(&wire).unwrap())
        .unwrap();
    black_box(plaintext);
}

// ---------------------------------------------------------------------------------------
// vodozemac (Olm)

fn olm_pair() -> (Account, Account) {
    (Account::new(), Account::new())
}

fn olm_setup(
    alice: &Account,
    bob: &mut Account,
) -> (vodozemac::olm::Session, vodozemac::olm::Session) {
    let otk = *bob.one_time_keys().values().next().unwrap();
    let mut a = alice
        .create_outbound_session(SessionConfig::version_1(), bob.curve25519_key(), otk)
        .unwrap();
    let OlmMessage::PreKey(first) = a.encrypt(PAYLOAD).unwrap() else {
        unreachable!()
    };
    let result = bob
        .create_inbound_session(SessionConfig::version_1(), alice.curve25519_key(), &first)
        .unwrap();
    assert_eq!(result.plaintext.len(), PAYLOAD.len());
    (a, result.session)
}

fn olm_established() -> (vodozemac::olm::Session, vodozemac::olm::Session) {
    let (alice, mut bob) = olm_pair();
    bob.generate_one_time_keys(1);
    let (mut a, mut b) = olm_setup(&alice, &mut bob);
    let reply = b.encrypt(b"ok").unwrap();
    a.decrypt(&reply).unwrap();
    (a, b)
}

fn olm_send(from: &mut vodozemac::olm::Session, to: &mut vodozemac::olm::Session) {
    let message = from.encrypt(PAYLOAD).unwrap();
    black_box(to.decrypt(&message).unwrap());
}

// ---------------------------------------------------------------------------------------
// The floor: Tacit's primitive calls, nothing else.

struct Floor {
    signer: SigningKey,
    verifying: [u8; 32],
    signature: Signature,
    message: Vec<u8>,
    x_secret: StaticSecret,
    x_public: PublicKey,
    kem_seed: [u8; 64],
    kem_public: [u8; 1184],
    decapsulation: Box<DecapsulationKey>,
}

impl Floor {
    fn new() -> Self {
        let signer = SigningKey::from_bytes(&[3u8; 32]);
        let message = vec![1u8; 60];
        let x_secret = StaticSecret::from([4u8; 32]);
        let kem_seed = [5u8; 64];
        let decapsulation = Box::new(DecapsulationKey::from_seed(Seed::from(kem_seed)));
        Self {
            verifying: signer.verifying_key().to_bytes(),
            signature: signer.sign(&message),
            message,
            x_public: PublicKey::from(&x_secret),
            x_secret,
            kem_public: decapsulation.encapsulation_key().to_bytes().into(),
            kem_seed,
            decapsulation,
            signer,
        }
    }

    fn verify(&self) {
        let key = VerifyingKey::from_bytes(black_box(&self.verifying)).unwrap();
        key.verify_strict(&self.message, &self.signature).unwrap();
    }

    fn verify_again(&self) {
        let key = VerifyingKey::from_bytes(black_box(&self.verifying)).unwrap();
        for _ in 0..4 {
            key.verify_strict(&self.message, &self.signature).unwrap();
        }
    }

    fn dh(&self) -> [u8; 32] {
        black_box(&self.x_secret)
            .diffie_hellman(&self.x_public)
            .to_bytes()
    }

    fn keygen(&self) -> PublicKey {
        PublicKey::from(&StaticSecret::from(black_box([6u8; 32])))
    }

    fn hkdf(salt: &[u8], ikm: &[u8], out: &mut [u8]) {
        Hkdf::<Sha256>::new(Some(salt), ikm)
            .expand(b"label", out)
            .unwrap();
    }

    fn hmac2(key: &[u8; 32]) -> ([u8; 32], [u8; 32]) {
        let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap();
        m.update(&[1]);
        let a: [u8; 32] = m.finalize().into_bytes().into();
        let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap();
        m.update(&[2]);
        (a, m.finalize().into_bytes().into())
    }

    /// Chain step, message-key expansion and one AEAD call over 1 KiB.
    fn message(key: &[u8; 32], seal: bool) {
        let (mk, _next) = Self::hmac2(key);
        let mut okm = [0u8; 44];
        Self::hkdf(&[0u8; 32], &mk, &mut okm);
        let cipher = ChaCha20Poly1305::new(&<[u8; 32]>::try_from(&okm[..32]).unwrap().into());
        let nonce = <[u8; 12]>::try_from(&okm[32..]).unwrap().into();
        let mut buffer = PAYLOAD;
        let tag = cipher
            .encrypt_inout_detached(&nonce, &[0u8; 200], buffer.as_mut_slice().into())
            .unwrap();
        if !seal {
            // Opening costs the same pass plus a tag comparison.
            black_box(tag);
        }
        black_box(buffer);
    }

    fn root_step(root: &[u8; 32], dh: &[u8; 32]) -> [u8; 32] {
        let mut okm = [0u8; 64];
        Self::hkdf(root, dh, &mut okm);
        okm[32..].try_into().unwrap()
    }

    /// Receiving a message that starts a new chain: DH, root step, message, new ratchet key,
    /// DH, root step.
    fn ratchet_receive(&self) {
        let chain = Self::root_step(&[7u8; 32], &self.dh());
        Self::message(&chain, false);
        black_box(self.keygen());
        black_box(Self::root_step(&chain, &self.dh()));
    }

    fn setup(&self) {
        // Alice: decode and verify the bundle (identity + three prekey signatures).
        self.verify_again();
        let ek = EncapsulationKey768::new(&black_box(self.kem_public).into()).unwrap();
        black_box(self.keygen()); // EK_A
        let dhs = [self.dh(), self.dh(), self.dh(), self.dh()];
        let (ct, ss) = ek.encapsulate_deterministic(&[8u8; 32].into());
        let mut ikm = [0u8; 32 * 6];
        ikm[32..160].copy_from_slice(&dhs.concat());
        ikm[160..].copy_from_slice(&<[u8; 32]>::from(ss));
        let mut sk = [0u8; 32];
        Self::hkdf(&[0u8; 32], &ikm, &mut sk);
        black_box(self.keygen()); // first ratchet key
        let chain = Self::root_step(&sk, &self.dh());
        Self::message(&chain, true);
        // Bob: decode the prekey message (identity signature), PQXDH, then the first
        // message, which starts a DH ratchet step.
        self.verify();
        let dhs = [self.dh(), self.dh(), self.dh(), self.dh()];
        let ss = self.decapsulation.decapsulate(&ct);
        ikm[32..160].copy_from_slice(&dhs.concat());
        ikm[160..].copy_from_slice(&<[u8; 32]>::from(ss));
        Self::hkdf(&[0u8; 32], &ikm, &mut sk);
        self.ratchet_receive();
        black_box((&self.kem_seed, &self.signer));
    }

    fn same_chain(&self) {
        Self::message(&[9u8; 32], true);
        Self::message(&[9u8; 32], false);
    }

    fn ping_pong(&self) {
        for _ in 0..2 {
            Self::message(&[9u8; 32], true);
            self.ratchet_receive();
        }
    }
}

// ---------------------------------------------------------------------------------------
// Groups: Tacit sender keys, vodozemac Megolm, and their floor

struct Group {
    sender: SenderKeyState,
    member: SenderKeyRecord,
}

impl Group {
    fn new() -> Self {
        let mut rng = StdRng::seed_from_u64(11);
        let group = GroupId::generate(&mut rng);
        let sender = SenderKeyState::generate(&mut rng, group);
        let mut member = SenderKeyRecord::new(sender.group_id());
        member.process(&sender.distribution()).unwrap();
        Self { sender, member }
    }

    fn send(&mut self) {
        let wire = self.sender.encrypt(&PAYLOAD).unwrap();
        let message = SenderKeyMessage::from_bytes(&wire).unwrap();
        black_box(self.member.decrypt(&message).unwrap());
    }
}

fn megolm_pair() -> (GroupSession, InboundGroupSession) {
    let outbound = GroupSession::new(MegolmConfig::version_1());
    let inbound = InboundGroupSession::new(&outbound.session_key(), MegolmConfig::version_1());
    (outbound, inbound)
}

fn megolm_send(outbound: &mut GroupSession, inbound: &mut InboundGroupSession) {
    let wire = outbound.encrypt(PAYLOAD).to_bytes();
    let message = MegolmMessage::from_bytes(&wire).unwrap();
    black_box(inbound.decrypt(&message).unwrap());
}

impl Floor {
    /// `KDF_CK` as Tacit computes it: HMAC keyed once, cloned for the two inputs.
    fn chain_step(key: &[u8; 32]) -> ([u8; 32], [u8; 32]) {
        let keyed = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap();
        let mut seed = keyed.clone();
        seed.update(&[1]);
        let mut next = keyed;
        next.update(&[2]);
        (
            seed.finalize().into_bytes().into(),
            next.finalize().into_bytes().into(),
        )
    }

    /// The AEAD for one sender-key message key: chain step, then HKDF to key and nonce.
    fn group_cipher(chain_key: &[u8; 32]) -> (ChaCha20Poly1305, chacha20poly1305::Nonce) {
        let (seed, _next) = Self::chain_step(black_box(chain_key));
        let mut okm = [0u8; 44];
        Self::hkdf(&[0u8; 32], &seed, &mut okm);
        let cipher = ChaCha20Poly1305::new(&<[u8; 32]>::try_from(&okm[..32]).unwrap().into());
        (cipher, <[u8; 12]>::try_from(&okm[32..]).unwrap().into())
    }

    /// One sender-key message: the sender's chain step, key expansion, AEAD seal and
    /// Ed25519 signature over the message; the member's strict verification (with the
    /// chain's key already decoded, as a member holds it), chain step, key expansion and
    /// AEAD open.
    fn group(&self, member_key: &VerifyingKey) {
        const HEADER: usize = 38;
        let mut message = [0u8; HEADER + 1024 + 16];
        // Sender.
        let (cipher, nonce) = Self::group_cipher(&[9u8; 32]);
        message[HEADER..HEADER + 1024].copy_from_slice(&PAYLOAD);
        let (header, rest) = message.split_at_mut(HEADER);
        let (body, tag_out) = rest.split_at_mut(1024);
        let tag = cipher
            .encrypt_inout_detached(&nonce, header, body.into())
            .unwrap();
        tag_out.copy_from_slice(&tag);
        let signature = self.signer.sign(&message);
        // Member.
        member_key.verify_strict(&message, &signature).unwrap();
        let (cipher, nonce) = Self::group_cipher(&[9u8; 32]);
        let (header, rest) = message.split_at_mut(HEADER);
        let (body, tag) = rest.split_at_mut(1024);
        let tag = <[u8; 16]>::try_from(&*tag).unwrap().into();
        cipher
            .decrypt_inout_detached(&nonce, header, body.into(), &tag)
            .unwrap();
        black_box(message);
    }
}

// ---------------------------------------------------------------------------------------
// Attachments: throughput of Tacit's stream against the bare AEAD

struct Attachment {
    rng: StdRng,
    key: AttachmentKey,
    file: Vec<u8>,
    blob: Vec<u8>,
    digest: tacit_crypto::AttachmentDigest,
    out: Vec<u8>,
}

impl Attachment {
    fn new() -> Self {
        let mut rng = StdRng::seed_from_u64(13);
        let key = AttachmentKey::generate(&mut rng);
        let file = vec![0xA5; FILE_LEN];
        let mut blob = Vec::new();
        let mut encryptor = Encryptor::new(&mut rng, &key);
        encryptor.push(&file, &mut blob).unwrap();
        let digest = encryptor.finish(&mut blob).unwrap();
        Self {
            rng,
            key,
            file,
            out: Vec::with_capacity(blob.len()),
            blob,
            digest,
        }
    }

    fn encrypt(&mut self) {
        self.out.clear();
        let mut encryptor = Encryptor::new(&mut self.rng, &self.key);
        for piece in self.file.chunks(PIECE_LEN) {
            encryptor.push(piece, &mut self.out).unwrap();
        }
        black_box(encryptor.finish(&mut self.out).unwrap());
    }

    fn decrypt(&mut self) {
        self.out.clear();
        let mut decryptor = Decryptor::new(&self.key, self.digest);
        for piece in self.blob.chunks(PIECE_LEN) {
            decryptor.push(piece, &mut self.out).unwrap();
        }
        decryptor.finish(&mut self.out).unwrap();
        black_box(&self.out);
    }

    /// ChaCha20-Poly1305 in place over the same 64 KiB chunks (one direction), optionally
    /// hashing the ciphertext as Tacit does.
    fn raw(&mut self, hash: bool) {
        let cipher = ChaCha20Poly1305::new(&[7u8; 32].into());
        self.out.clear();
        self.out.extend_from_slice(&self.file);
        let mut digest = Sha256::new();
        for (i, chunk) in self.out.chunks_mut(PIECE_LEN).enumerate() {
            let mut nonce = [0u8; 12];
            nonce[..8].copy_from_slice(&(i as u64).to_be_bytes());
            let tag = cipher
                .encrypt_inout_detached(&nonce.into(), &[], chunk.into())
                .unwrap();
            if hash {
                digest.update(&*chunk);
                digest.update(tag);
            }
            black_box(tag);
        }
        black_box(digest.finalize());
    }
}

// ---------------------------------------------------------------------------------------

fn bench(c: &mut Criterion) {
    let floor = Floor::new();
    let mut tacit = Tacit::new();

    let mut group = c.benchmark_group("setup");
    group.bench_function("tacit", |b| b.iter(|| black_box(tacit.setup())));
    group.bench_function("vodozemac", |b| {
        b.iter_custom(|iters| {
            let (alice, mut bob) = olm_pair();
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                bob.generate_one_time_keys(1);
                let start = Instant::now();
                black_box(olm_setup(&alice, &mut bob));
                total += start.elapsed();
            }
            total
        })
    });
    group.bench_function("floor", |b| b.iter(|| floor.setup()));
    group.finish();

    let mut group = c.benchmark_group("same_chain");
    let (mut a, mut b_session) = tacit.established();
    let mut rng = StdRng::seed_from_u64(9);
    group.bench_function("tacit", |b| {
        b.iter(|| tacit_send(&mut a, &mut b_session, &mut rng))
    });
    let (mut oa, mut ob) = olm_established();
    group.bench_function("vodozemac", |b| b.iter(|| olm_send(&mut oa, &mut ob)));
    group.bench_function("floor", |b| b.iter(|| floor.same_chain()));
    group.finish();

    let mut group = c.benchmark_group("ping_pong");
    let (mut a, mut b_session) = tacit.established();
    group.bench_function("tacit", |b| {
        b.iter(|| {
            tacit_send(&mut a, &mut b_session, &mut rng);
            tacit_send(&mut b_session, &mut a, &mut rng);
        })
    });
    let (mut oa, mut ob) = olm_established();
    group.bench_function("vodozemac", |b| {
        b.iter(|| {
            olm_send(&mut oa, &mut ob);
            olm_send(&mut ob, &mut oa);
        })
    });
    group.bench_function("floor", |b| b.iter(|| floor.ping_pong()));
    group.finish();

    let mut group = c.benchmark_group("group");
    let mut tacit_group = Group::new();
    group.bench_function("tacit", |b| b.iter(|| tacit_group.send()));
    let (mut outbound, mut inbound) = megolm_pair();
    group.bench_function("vodozemac", |b| {
        b.iter(|| megolm_send(&mut outbound, &mut inbound))
    });
    let member_key = floor.signer.verifying_key();
    group.bench_function("floor", |b| b.iter(|| floor.group(&member_key)));
    group.finish();

    let mut group = c.benchmark_group("attachment");
    group.throughput(criterion::Throughput::Bytes(FILE_LEN as u64));
    let mut attachment = Attachment::new();
    group.bench_function("tacit_encrypt", |b| b.iter(|| attachment.encrypt()));
    group.bench_function("tacit_decrypt", |b| b.iter(|| attachment.decrypt()));
    group.bench_function("chacha20poly1305", |b| b.iter(|| attachment.raw(false)));
    group.bench_function("chacha20poly1305_sha256", |b| {
        b.iter(|| attachment.raw(true))
    });
    group.finish();
}

fn output_directory() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join("criterion")
}

/// Median time in nanoseconds that criterion recorded for `group/function`.
fn median(dir: &Path, group: &str, function: &str) -> Option<f64> {
    let path = dir.join(group).join(function).join("new/estimates.json");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    json["median"]["point_estimate"].as_f64()
}

fn report(dir: &Path) {
    println!("\n## tacit-crypto benchmark (median per iteration)\n");
    println!(
        "| scenario | Tacit | vodozemac | floor | Tacit / floor | vodozemac / Tacit | target |"
    );
    println!("|---|---|---|---|---|---|---|");
    let targets = [
        ("setup", "Tacit within 1.2x of floor"),
        ("same_chain", "Tacit within 1.5x of floor"),
        ("ping_pong", "Tacit no slower than vodozemac"),
        ("group", "Tacit within 1.15x of floor"),
    ];
    for (group, target) in targets {
        let (Some(t), Some(v), Some(f)) = (
            median(dir, group, "tacit"),
            median(dir, group, "vodozemac"),
            median(dir, group, "floor"),
        ) else {
            println!("| {group} | (not measured in this run) | | | | | {target} |");
            continue;
        };
        let us = |ns: f64| format!("{:.2} us", ns / 1000.0);
        println!(
            "| {group} | {} | {} | {} | {:.2}x | {:.2}x | {target} |",
            us(t),
            us(v),
            us(f),
            t / f,
            v / t
        );
    }

    println!(
        "\n## attachment throughput ({} MiB file, {} KiB pieces)\n",
        FILE_LEN >> 20,
        PIECE_LEN >> 10
    );
    println!("| stream | median time | MiB/s | vs ChaCha20-Poly1305 alone |");
    println!("|---|---|---|---|");
    let raw = median(dir, "attachment", "chacha20poly1305");
    let rows = [
        ("tacit_encrypt", "Tacit encrypt (AEAD + SHA-256 + framing)"),
        ("tacit_decrypt", "Tacit decrypt (AEAD + SHA-256 + framing)"),
        (
            "chacha20poly1305_sha256",
            "ChaCha20-Poly1305 + SHA-256 only",
        ),
        ("chacha20poly1305", "ChaCha20-Poly1305 only"),
    ];
    for (function, label) in rows {
        let Some(ns) = median(dir, "attachment", function) else {
            println!("| {label} | (not measured in this run) | | |");
            continue;
        };
        let mib_per_s = (FILE_LEN as f64 / (1 << 20) as f64) / (ns / 1e9);
        let ratio = raw.map_or(String::new(), |raw| format!("{:.2}x the time", ns / raw));
        println!(
            "| {label} | {:.2} ms | {mib_per_s:.0} | {ratio} |",
            ns / 1e6
        );
    }
}

fn main() {
    let dir = output_directory();
    let mut criterion = Criterion::default()
        .output_directory(&dir)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .configure_from_args();
    bench(&mut criterion);
    criterion.final_summary();
    if std::env::args().any(|arg| arg == "--test") {
        println!("smoke run (--test): every scenario ran once; no figures measured");
    } else {
        report(&dir);
    }
}
