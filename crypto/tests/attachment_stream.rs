//! Property test: attachments of any length, encrypted and decrypted in pieces of random
//! sizes, come back unchanged; and one flipped bit anywhere in the blob makes decryption
//! fail, however the blob is cut into pieces.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is a failure

use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;
use tacit_crypto::attachment::{Decryptor, Encryptor, encrypted_len};
use tacit_crypto::{AttachmentDigest, AttachmentError, AttachmentKey};

/// Cuts `data` into pieces whose sizes cycle through `sizes`.
fn pieces<'a>(data: &'a [u8], sizes: &'a [usize]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut rest = data;
    let mut i = 0;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let size = sizes[i % sizes.len()].clamp(1, rest.len());
        i += 1;
        let (head, tail) = rest.split_at(size);
        rest = tail;
        Some(head)
    })
}

fn encrypt(
    seed: u64,
    key: &AttachmentKey,
    data: &[u8],
    sizes: &[usize],
) -> (Vec<u8>, AttachmentDigest) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut encryptor = Encryptor::new(&mut rng, key);
    let mut blob = Vec::new();
    for piece in pieces(data, sizes) {
        encryptor.push(piece, &mut blob).unwrap();
    }
    // Empty pushes are allowed anywhere.
    encryptor.push(&[], &mut blob).unwrap();
    let digest = encryptor.finish(&mut blob).unwrap();
    (blob, digest)
}

fn decrypt(
    key: &AttachmentKey,
    digest: AttachmentDigest,
    blob: &[u8],
    sizes: &[usize],
) -> Result<Vec<u8>, AttachmentError> {
    let mut decryptor = Decryptor::new(key, digest);
    let mut out = Vec::new();
    for piece in pieces(blob, sizes) {
        decryptor.push(piece, &mut out)?;
    }
    decryptor.finish(&mut out)?;
    Ok(out)
}

fn sizes() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(
        prop_oneof![1usize..64, 64usize..5000, 60_000usize..140_000],
        1..8,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn round_trip_in_random_pieces(
        seed in any::<u64>(),
        len in prop_oneof![0usize..200, 65_000usize..66_100, 0usize..300_000],
        push_sizes in sizes(),
        read_sizes in sizes(),
        flip in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let mut rng = StdRng::seed_from_u64(seed);
        let key = AttachmentKey::generate(&mut rng);
        let data: Vec<u8> = (0..len).map(|i| u8::try_from(i % 251).unwrap() ^ 0x5A).collect();
        let (blob, digest) = encrypt(seed, &key, &data, &push_sizes);
        prop_assert_eq!(blob.len() as u64, encrypted_len(len as u64).unwrap());
        prop_assert_eq!(decrypt(&key, digest, &blob, &read_sizes).unwrap(), data);

        let mut flipped = blob.clone();
        flipped[flip.index(blob.len())] ^= 1 << bit;
        prop_assert!(decrypt(&key, digest, &flipped, &read_sizes).is_err());
    }
}
