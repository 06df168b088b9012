//! Replays the committed fuzz corpus (`crypto/fuzz/corpus/<target>/`) through the same
//! target bodies that cargo-fuzz runs, so every input the fuzzer ever kept is a regression
//! test. `TACIT_WRITE_CORPUS=1` adds the fixture's valid encodings as seeds.

#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub, dead_code)] // test code

mod fuzz {
    include!("../fuzz/common.rs");
}

use std::path::PathBuf;

/// A fuzz target's name and body.
type Target = (&'static str, fn(&[u8]));

const TARGETS: [Target; 9] = [
    ("decode_message", fuzz::decode_message),
    ("decode_keys", fuzz::decode_keys),
    ("decode_session", fuzz::decode_session),
    ("decrypt", fuzz::decrypt),
    ("group_decrypt", fuzz::group_decrypt),
    ("decode_distribution", fuzz::decode_distribution),
    ("decode_group_state", fuzz::decode_group_state),
    ("attachment_decrypt", fuzz::attachment_decrypt),
    ("provision_open", fuzz::provision_open),
];

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

#[test]
fn replay_committed_corpus() {
    if std::env::var_os("TACIT_WRITE_CORPUS").is_some() {
        for (i, (target, bytes)) in fuzz::fixture().samples.iter().enumerate() {
            let dir = corpus_dir(target);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(format!("seed-{i:02}")), bytes).unwrap();
        }
    }
    for (target, run) in TARGETS {
        let mut count = 0;
        for entry in std::fs::read_dir(corpus_dir(target)).expect("corpus directory") {
            let data = std::fs::read(entry.unwrap().path()).unwrap();
            run(&data);
            count += 1;
        }
        assert!(count > 0, "no corpus for {target}");
    }
}

#[test]
fn seeds_are_accepted_by_their_decoders() {
    // The seeds are valid encodings: if a decoder started refusing one, the corpus would
    // stop exercising the code behind it.
    for (target, bytes) in &fuzz::fixture().samples {
        match *target {
            "decode_message" | "decrypt" => {
                assert!(tacit_crypto::Message::from_bytes(bytes).is_ok())
            }
            "decode_session" => assert!(tacit_crypto::Session::from_bytes(bytes).is_ok()),
            "group_decrypt" => {
                assert!(tacit_crypto::SenderKeyMessage::from_bytes(bytes).is_ok())
            }
            "decode_distribution" => {
                assert!(tacit_crypto::SenderKeyDistribution::from_bytes(bytes).is_ok())
            }
            "decode_group_state" => {
                let (which, state) = bytes.split_first().unwrap();
                if which % 2 == 0 {
                    assert!(tacit_crypto::SenderKeyState::from_bytes(state).is_ok());
                } else {
                    assert!(tacit_crypto::SenderKeyRecord::from_bytes(state).is_ok());
                }
            }
            _ => {}
        }
    }
}
