//! The protocol benchmark: `cargo bench -p tacit-crypto`.
//!
//! Three scenarios, each for Tacit, for vodozemac's Olm (libolm-compatible v1 sessions) and
//! for the *floor*: the raw primitive calls the scenario needs in Tacit's protocol, summed
//! in one function. At the end it prints a table with the ratios, for docs/PERFORMANCE.md.
//!
//! - `setup`: from the responder's encoded bundle to the first 1 KiB message decrypted
//!   (decode and verify the bundle, PQXDH on both sides, the first ratchet steps).
//! - `same_chain`: one 1 KiB message encrypted and decrypted, always in the same direction.
//! - `ping_pong`: one 1 KiB message each way (every message starts a DH ratchet step);
//!   figures are per round trip (two messages).

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
use sha2::Sha256;
use tacit_crypto::{
    Address, IdentityKeyPair, KemPreKeyKind, KemPreKeyPair, Message, OneTimePreKeyPair,
    PreKeyBundle, PreKeyId, ResponderKeys, Session, SignedPreKeyPair,
};
use vodozemac::olm::{Account, OlmMessage, SessionConfig};
use x25519_dalek::{PublicKey, StaticSecret};

const PAYLOAD: [u8; 1024] = [0x5A; 1024];

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
