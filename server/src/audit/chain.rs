//! The hash chain: how an entry's hash is computed, how the next entry is made, and how a
//! stored chain is checked.
//!
//! `hash = SHA-256("tacit-audit-entry-v1" 0x00 || seq || time_ms || fields || prev_hash)`,
//! where `seq` is a big-endian `u64`, `time_ms` a big-endian `i64`, and every field is
//! encoded with a one-byte tag and its length, so no two different entries encode alike:
//! a string field as `tag || 0x01 || u32 length || UTF-8 bytes` (or `tag || 0x00` when
//! absent), the device as `tag || 0x01 || u32`, and the details as a count followed by
//! their `(key, value)` pairs in key order. The first entry's `prev_hash` is all zeros.

use sha2::{Digest, Sha256};

use super::{Entry, EntryHash, Event};

/// The domain label hashed before every entry.
const ENTRY_LABEL: &[u8] = b"tacit-audit-entry-v1\0";

/// The hash of an entry's contents (its `hash` field is not an input).
pub fn entry_hash(entry: &Entry) -> EntryHash {
    let mut hasher = Sha256::new();
    hasher.update(ENTRY_LABEL);
    hasher.update(entry.seq.to_be_bytes());
    hasher.update(entry.time_ms.to_be_bytes());
    string_field(&mut hasher, 1, Some(&entry.action));
    string_field(&mut hasher, 2, Some(&entry.outcome));
    string_field(&mut hasher, 3, entry.actor.as_deref());
    string_field(&mut hasher, 4, entry.target_user.as_deref());
    hasher.update([5]);
    match entry.target_device {
        Some(device) => {
            hasher.update([1]);
            hasher.update(device.to_be_bytes());
        }
        None => hasher.update([0]),
    }
    string_field(&mut hasher, 6, entry.source_ip.as_deref());
    hasher.update([7]);
    hasher.update(length(entry.details.len()));
    for (key, value) in &entry.details {
        string_field(&mut hasher, 8, Some(key));
        string_field(&mut hasher, 9, Some(value));
    }
    hasher.update(entry.prev_hash.0);
    EntryHash(hasher.finalize().into())
}

fn string_field(hasher: &mut Sha256, tag: u8, value: Option<&str>) {
    hasher.update([tag]);
    match value {
        Some(value) => {
            hasher.update([1]);
            hasher.update(length(value.len()));
            hasher.update(value.as_bytes());
        }
        None => hasher.update([0]),
    }
}

/// A length as the encoding's `u32`. Entries are built from bounded fields (usernames,
/// addresses, short codes); a longer value saturates, which only makes its hash differ.
fn length(len: usize) -> [u8; 4] {
    u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes()
}

/// The end of a chain: the last entry's position and hash (`seq` 0 and the genesis hash
/// for an empty chain).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    /// The last entry's sequence number, or 0.
    pub seq: u64,
    /// The last entry's hash, or [`EntryHash::GENESIS`].
    pub hash: EntryHash,
}

impl Head {
    /// The head of the empty chain.
    pub const EMPTY: Self = Self {
        seq: 0,
        hash: EntryHash::GENESIS,
    };

    /// The entry that follows this head: `event` at `time_ms`, hashed.
    pub fn next(&self, event: &Event, time_ms: i64) -> Entry {
        let mut entry = Entry {
            seq: self.seq + 1,
            time_ms,
            action: event.action.as_str().to_owned(),
            outcome: event.outcome.as_str().to_owned(),
            actor: event.actor.clone(),
            target_user: event.target_user.clone(),
            target_device: event.target_device,
            source_ip: event.source_ip.clone(),
            details: event
                .details
                .iter()
                .map(|(key, value)| (key.as_str().to_owned(), value.clone()))
                .collect(),
            prev_hash: self.hash,
            hash: EntryHash::GENESIS,
        };
        entry.hash = entry_hash(&entry);
        entry
    }

    /// The head after `entry`.
    pub fn of(entry: &Entry) -> Self {
        Self {
            seq: entry.seq,
            hash: entry.hash,
        }
    }
}

/// The first entry at which a stored chain is broken, and how.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("audit entry {seq}: {problem}")]
pub struct Broken {
    /// The first entry that fails (for [`Problem::Missing`], the missing one's number).
    pub seq: u64,
    /// What is wrong with it.
    pub problem: Problem,
}

/// What is wrong at the first broken entry.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Problem {
    /// The entry's contents do not hash to its stored hash: it was edited, or written in
    /// place of another.
    #[error("its contents do not match its hash (edited, replaced or moved)")]
    Edited,
    /// The entry does not name its predecessor's hash: an entry before it was rewritten,
    /// or entries were inserted or reordered.
    #[error("it does not link to entry {previous} (an entry was rewritten, inserted or reordered)")]
    Unlinked {
        /// The entry it should link to.
        previous: u64,
    },
    /// The entry is absent: the chain jumps from the one before to `found`.
    #[error("it is missing (deleted): the chain jumps to entry {found}")]
    Missing {
        /// The next sequence number present.
        found: u64,
    },
    /// The entries are not in ascending order of sequence number.
    #[error("it comes after entry {previous} (out of order)")]
    OutOfOrder {
        /// The sequence number read before it.
        previous: u64,
    },
    /// A kept checkpoint names a longer chain than the stored one: the end was cut off.
    #[error(
        "it is missing: the log ends at entry {last} but a signed checkpoint covers it (truncated)"
    )]
    Truncated {
        /// The last stored entry.
        last: u64,
    },
    /// The chain up to this entry differs from what a kept checkpoint signed: it was
    /// rewritten at or before this entry, hashes and all.
    #[error("the chain up to it differs from the signed checkpoint (rewritten at or before it)")]
    CheckpointMismatch,
}

/// Checks a chain entry by entry, in ascending order of sequence number, from the first.
///
/// Feed it every entry with [`push`](Self::push) (stored order, `ORDER BY seq`), then call
/// [`finish`](Self::finish). Expected heads (from kept checkpoints, already checked for
/// their signature) are compared as the chain passes them; one beyond the end means the
/// chain was truncated.
#[derive(Debug)]
pub struct Verifier {
    head: Head,
    expected: Vec<Head>,
}

impl Verifier {
    /// A verifier that also compares the chain against `expected` heads.
    pub fn new(expected: Vec<Head>) -> Self {
        let mut expected = expected;
        expected.sort_by_key(|head| std::cmp::Reverse(head.seq));
        Self {
            head: Head::EMPTY,
            expected,
        }
    }

    /// A verifier for a chain whose entries up to `anchor` were pruned: the first stored
    /// entry must follow `anchor` (number and hash). An expected head at the anchor is
    /// compared with it; the ones before it cannot be checked any more (their entries are
    /// gone) and are returned apart, as their count.
    pub fn from_anchor(anchor: Head, expected: Vec<Head>) -> Result<(Self, usize), Broken> {
        let mut verifier = Self::new(expected);
        verifier.head = anchor;
        let mut before = 0;
        while let Some(checkpoint) = verifier.expected.last().copied() {
            if checkpoint.seq > anchor.seq {
                break;
            }
            verifier.expected.pop();
            if checkpoint.seq == anchor.seq {
                if checkpoint.hash != anchor.hash {
                    return Err(Broken {
                        seq: anchor.seq,
                        problem: Problem::CheckpointMismatch,
                    });
                }
            } else {
                before += 1;
            }
        }
        Ok((verifier, before))
    }

    /// Checks the next stored entry.
    pub fn push(&mut self, entry: &Entry) -> Result<(), Broken> {
        let expected_seq = self.head.seq + 1;
        if entry.seq <= self.head.seq {
            return Err(Broken {
                seq: entry.seq,
                problem: Problem::OutOfOrder {
                    previous: self.head.seq,
                },
            });
        }
        if entry.seq > expected_seq {
            return Err(Broken {
                seq: expected_seq,
                problem: Problem::Missing { found: entry.seq },
            });
        }
        if entry_hash(entry) != entry.hash {
            return Err(Broken {
                seq: entry.seq,
                problem: Problem::Edited,
            });
        }
        if entry.prev_hash != self.head.hash {
            return Err(Broken {
                seq: entry.seq,
                problem: Problem::Unlinked {
                    previous: self.head.seq,
                },
            });
        }
        self.head = Head::of(entry);
        while let Some(checkpoint) = self.expected.last().copied() {
            if checkpoint.seq > self.head.seq {
                break;
            }
            self.expected.pop();
            if checkpoint.seq == self.head.seq && checkpoint.hash != self.head.hash {
                return Err(Broken {
                    seq: checkpoint.seq,
                    problem: Problem::CheckpointMismatch,
                });
            }
        }
        Ok(())
    }

    /// The head of a chain found unbroken, or the truncation a checkpoint reveals.
    pub fn finish(self) -> Result<Head, Broken> {
        match self.expected.first() {
            Some(checkpoint) if checkpoint.seq > self.head.seq => Err(Broken {
                seq: self.head.seq + 1,
                problem: Problem::Truncated {
                    last: self.head.seq,
                },
            }),
            _ => Ok(self.head),
        }
    }
}

/// Checks a whole chain held in memory.
pub fn verify<'a>(
    entries: impl IntoIterator<Item = &'a Entry>,
    expected: Vec<Head>,
) -> Result<Head, Broken> {
    let mut verifier = Verifier::new(expected);
    for entry in entries {
        verifier.push(entry)?;
    }
    verifier.finish()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use proptest::prelude::*;

    use super::super::{Action, Detail, Outcome};
    use super::*;

    fn chain(n: u64) -> Vec<Entry> {
        let mut head = Head::EMPTY;
        (0..n)
            .map(|i| {
                let event = Event::new(Action::DeviceRemove, Outcome::Success)
                    .actor("admin")
                    .target(format!("user{i}"))
                    .device(u32::try_from(i).unwrap() + 1)
                    .source("127.0.0.1")
                    .detail(Detail::Reason, "lost");
                let entry = head.next(&event, 1_700_000_000_000 + i64::try_from(i).unwrap());
                head = Head::of(&entry);
                entry
            })
            .collect()
    }

    /// A pruned chain verifies from its anchor: the first kept entry must link to it, a
    /// checkpoint at the anchor is compared, older ones are only counted, and a gap right
    /// after the anchor (one more entry deleted) is caught.
    #[test]
    fn a_pruned_chain_verifies_from_its_anchor() {
        let entries = chain(6);
        let anchor = Head::of(&entries[2]);
        let check = |anchor, expected| {
            let (mut verifier, before) = Verifier::from_anchor(anchor, expected)?;
            for entry in &entries[3..] {
                verifier.push(entry)?;
            }
            verifier.finish().map(|head| (head, before))
        };
        let old = Head::of(&entries[0]);
        let (head, before) = check(anchor, vec![old, anchor, Head::of(&entries[4])]).unwrap();
        assert_eq!((head, before), (Head::of(&entries[5]), 1));
        // An anchor that is not the last pruned entry's hash: the first kept one does not
        // link to it.
        let forged = Head {
            seq: 3,
            hash: EntryHash([9; 32]),
        };
        assert_eq!(
            check(forged, vec![]).unwrap_err().problem,
            Problem::Unlinked { previous: 3 }
        );
        // A checkpoint at the anchor that disagrees with it.
        let other = Head {
            seq: 3,
            hash: EntryHash([1; 32]),
        };
        assert_eq!(
            check(anchor, vec![other]).unwrap_err().problem,
            Problem::CheckpointMismatch
        );
        // The entry after the anchor deleted as well.
        let (mut verifier, _) = Verifier::from_anchor(anchor, vec![]).unwrap();
        assert_eq!(
            verifier.push(&entries[4]).unwrap_err(),
            Broken {
                seq: 4,
                problem: Problem::Missing { found: 5 }
            }
        );
    }

    #[test]
    fn an_untouched_chain_verifies_to_its_head() {
        let entries = chain(5);
        let head = verify(&entries, vec![]).unwrap();
        assert_eq!(head, Head::of(&entries[4]));
        assert_eq!(verify(&[], vec![]).unwrap(), Head::EMPTY);
        assert_eq!(entries[0].prev_hash, EntryHash::GENESIS);
    }

    #[test]
    fn the_hash_is_pinned() {
        // A change to the encoding would make every stored chain fail: this vector pins it
        // (computed independently from the encoding in the module docs with Python's
        // hashlib; see docs/AUDIT.md).
        let entry = &chain(1)[0];
        assert_eq!(
            entry.hash.to_string(),
            "b0e49be81b0a14a9b6eca1f2e4a8ccabb20dfc4c742b2348e071dbbf5ab9ffe6"
        );
    }

    #[test]
    fn an_edited_entry_is_named() {
        let mut entries = chain(5);
        entries[2].target_user = Some("mallory".into());
        let broken = verify(&entries, vec![]).unwrap_err();
        assert_eq!(broken.seq, 3);
        assert_eq!(broken.problem, Problem::Edited);
    }

    #[test]
    fn a_rehashed_edit_is_named_at_the_next_entry() {
        let mut entries = chain(5);
        entries[2].outcome = "failure".into();
        entries[2].hash = entry_hash(&entries[2]);
        let broken = verify(&entries, vec![]).unwrap_err();
        assert_eq!(broken.seq, 4);
        assert_eq!(broken.problem, Problem::Unlinked { previous: 3 });
    }

    #[test]
    fn a_deleted_entry_is_named() {
        let mut entries = chain(5);
        entries.remove(1);
        let broken = verify(&entries, vec![]).unwrap_err();
        assert_eq!(broken.seq, 2);
        assert_eq!(broken.problem, Problem::Missing { found: 3 });
        let mut first_gone = chain(3);
        first_gone.remove(0);
        assert_eq!(verify(&first_gone, vec![]).unwrap_err().seq, 1);
    }

    #[test]
    fn an_inserted_entry_is_named() {
        let mut entries = chain(4);
        // A forged entry put at position 3, the later ones renumbered.
        let mut forged = entries[2].clone();
        forged.actor = Some("mallory".into());
        entries.insert(2, forged);
        for (i, entry) in entries.iter_mut().enumerate().skip(3) {
            entry.seq = u64::try_from(i).unwrap() + 1;
        }
        let broken = verify(&entries, vec![]).unwrap_err();
        assert_eq!(broken.seq, 3);
        assert_eq!(broken.problem, Problem::Edited);
    }

    #[test]
    fn swapped_entries_are_named() {
        let mut entries = chain(5);
        // Contents swapped, sequence numbers kept (as an UPDATE of two rows would).
        let (a, b) = (entries[1].clone(), entries[2].clone());
        entries[1] = Entry { seq: 2, ..b };
        entries[2] = Entry { seq: 3, ..a };
        let broken = verify(&entries, vec![]).unwrap_err();
        assert_eq!(broken.seq, 2);
        assert_eq!(broken.problem, Problem::Edited);
        // Read in the wrong order.
        let mut entries = chain(3);
        entries.swap(1, 2);
        assert_eq!(
            verify(&entries, vec![]).unwrap_err().problem,
            Problem::Missing { found: 3 }
        );
    }

    #[test]
    fn truncation_after_a_kept_checkpoint_is_found() {
        let entries = chain(6);
        let kept = Head::of(&entries[4]);
        assert!(verify(&entries, vec![kept]).is_ok());
        let broken = verify(&entries[..3], vec![kept]).unwrap_err();
        assert_eq!(broken.seq, 4);
        assert_eq!(broken.problem, Problem::Truncated { last: 3 });
        // Without the checkpoint the shorter chain looks whole: that is what checkpoints
        // are for.
        assert!(verify(&entries[..3], vec![]).is_ok());
    }

    #[test]
    fn a_chain_rewritten_with_its_hashes_is_caught_by_a_checkpoint() {
        let entries = chain(5);
        let kept = Head::of(&entries[3]);
        // Rebuild the chain from entry 2 on with one changed field, every hash recomputed.
        let mut rewritten = entries[..1].to_vec();
        let mut head = Head::of(&entries[0]);
        for entry in &entries[1..] {
            let mut entry = entry.clone();
            entry.prev_hash = head.hash;
            if entry.seq == 2 {
                entry.actor = Some("nobody".into());
            }
            entry.hash = entry_hash(&entry);
            head = Head::of(&entry);
            rewritten.push(entry);
        }
        assert!(verify(&rewritten, vec![]).is_ok());
        let broken = verify(&rewritten, vec![kept]).unwrap_err();
        assert_eq!(broken.seq, 4);
        assert_eq!(broken.problem, Problem::CheckpointMismatch);
    }

    proptest! {
        /// Any one changed field of any entry is caught, at that entry.
        #[test]
        fn any_single_edit_is_caught(index in 0usize..6, field in 0u8..9, text in "[a-z0-9.]{0,12}") {
            let mut entries = chain(6);
            let original = entries[index].clone();
            let entry = &mut entries[index];
            match field {
                0 => entry.time_ms += 1,
                1 => entry.action = format!("{}{text}x", entry.action),
                2 => entry.outcome = format!("{text}y"),
                3 => entry.actor = if text.is_empty() { None } else { Some(text.clone()) },
                4 => entry.target_user = Some(format!("{text}z")),
                5 => entry.target_device = entry.target_device.map(|d| d ^ 0x100),
                6 => entry.source_ip = None,
                7 => { entry.details.insert(format!("k{text}"), text.clone()); }
                _ => entry.details.clear(),
            }
            prop_assume!(*entry != original);
            let broken = verify(&entries, vec![]).unwrap_err();
            prop_assert_eq!(broken.seq, original.seq);
            prop_assert_eq!(broken.problem, Problem::Edited);
        }

        /// Field boundaries are part of the encoding: moving text from one field to the
        /// next changes the hash.
        #[test]
        fn field_boundaries_are_hashed(a in "[a-z]{0,6}", b in "[a-z]{0,6}", c in "[a-z]{0,6}") {
            prop_assume!(a != c);
            let mut one = chain(1).remove(0);
            one.actor = Some(format!("{a}{b}"));
            one.target_user = Some(c.clone());
            let mut two = one.clone();
            two.actor = Some(a.clone());
            two.target_user = Some(format!("{b}{c}"));
            prop_assume!(one.actor != two.actor);
            prop_assert_ne!(entry_hash(&one), entry_hash(&two));
        }
    }
}
