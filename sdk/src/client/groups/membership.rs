//! Membership epochs: the order in which a group's changes apply, so that every member that
//! has seen the same changes holds the same roster, whatever order the server delivered
//! them in (SECURITY.md, "Groups", membership epochs).
//!
//! Each change (add, remove, promote, leave) names an **epoch**: one more than the highest
//! epoch its author had seen. A member keeps every change it received since its **base**
//! (the group as created, or as the admin who added it showed it) and computes the roster
//! by applying them in the order of (epoch, digest), where the digest is a SHA-256 over the
//! change (below). A change applies only if its author may make it at that point of the
//! order (an admin for add, remove and promote; a member for leave); one that may not is
//! **superseded**: it stays in the log (so that the result depends only on the set of
//! changes) but changes nothing, and the member reports it. So two admins changing the
//! group at once (the same epoch) are ordered by digest on every member alike, and a change
//! that arrives late is put in its place and the roster computed again.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::{GroupChange, GroupInfo};

/// The most changes a member keeps per group; a change beyond it is refused.
pub(super) const MAX_CHANGES: usize = 1024;

/// One membership change, as a member keeps it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub(super) struct Change {
    /// One more than the highest epoch its author had seen.
    pub(super) epoch: u64,
    /// Who made it (the sender of the pairwise message that carried it).
    pub(super) author: String,
    /// What it does.
    pub(super) change: GroupChange,
    /// Whom it adds, removes or promotes (empty for a leave).
    pub(super) users: BTreeSet<String>,
    /// [`digest`] of the above, in hex: the order among changes of one epoch.
    pub(super) digest: String,
}

impl Change {
    /// A change of the group `group_id`, with its digest; `None` for a create (never a
    /// logged change), a name longer than 255 bytes, or more than 65,535 users.
    pub(super) fn new(
        group_id: &[u8; 16],
        epoch: u64,
        author: &str,
        change: GroupChange,
        users: BTreeSet<String>,
    ) -> Option<Self> {
        let users = if change == GroupChange::Leave {
            BTreeSet::new()
        } else {
            users
        };
        let digest = digest(group_id, epoch, author, change, &users)?;
        Some(Self {
            epoch,
            author: author.to_owned(),
            change,
            users,
            digest,
        })
    }

    fn key(&self) -> (u64, &str) {
        (self.epoch, &self.digest)
    }
}

/// `SHA-256("Tacit_GroupChange_v1" || group id (16) || epoch (8) || len (1) || author
/// || change (1: add 1, remove 2, promote 3, leave 4) || count (2) || { len (1) || user }*)`,
/// users in byte order, in lowercase hex.
fn digest(
    group_id: &[u8; 16],
    epoch: u64,
    author: &str,
    change: GroupChange,
    users: &BTreeSet<String>,
) -> Option<String> {
    use sha2::Digest as _;
    let code: u8 = match change {
        GroupChange::Create => return None,
        GroupChange::Add => 1,
        GroupChange::Remove => 2,
        GroupChange::Promote => 3,
        GroupChange::Leave => 4,
    };
    let mut hash = sha2::Sha256::new();
    hash.update(b"Tacit_GroupChange_v1");
    hash.update(group_id);
    hash.update(epoch.to_be_bytes());
    hash.update([u8::try_from(author.len()).ok()?]);
    hash.update(author.as_bytes());
    hash.update([code]);
    hash.update(u16::try_from(users.len()).ok()?.to_be_bytes());
    for user in users {
        hash.update([u8::try_from(user.len()).ok()?]);
        hash.update(user.as_bytes());
    }
    Some(hex::encode(hash.finalize()))
}

/// Where a member's view starts: the group as created (epoch 0) or as the admin who added
/// it showed it in that `Add` (its epoch and digest). Changes ordered at or before this
/// point are already in `info`, or were made on a view this member never had.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub(super) struct Base {
    pub(super) info: GroupInfo,
    pub(super) epoch: u64,
    #[serde(default)]
    pub(super) digest: String,
}

impl Base {
    /// Whether `change` comes after the base in the order.
    pub(super) fn precedes(&self, change: &Change) -> bool {
        (self.epoch, self.digest.as_str()) < change.key()
    }
}

/// The roster that a base and a set of changes give.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Folded {
    pub(super) info: GroupInfo,
    /// The digests of the changes that their authors could not make at their place in the
    /// order (superseded).
    pub(super) superseded: BTreeSet<String>,
}

/// Applies `log` to `base` in (epoch, digest) order. Depends only on the set of changes
/// in `log` (duplicates count once), never on their order in it.
pub(super) fn fold(base: &Base, log: &[Change]) -> Folded {
    let mut changes: Vec<&Change> = log.iter().filter(|c| base.precedes(c)).collect();
    changes.sort_by(|a, b| a.key().cmp(&b.key()));
    changes.dedup_by(|a, b| a.key() == b.key());
    let mut info = base.info.clone();
    let mut superseded = BTreeSet::new();
    for change in changes {
        let author = &change.author;
        let allowed = match change.change {
            GroupChange::Leave => info.members.contains(author),
            GroupChange::Create => false,
            GroupChange::Add | GroupChange::Remove | GroupChange::Promote => {
                info.admins.contains(author)
            }
        };
        if !allowed {
            superseded.insert(change.digest.clone());
            continue;
        }
        match change.change {
            GroupChange::Add => info.members.extend(change.users.iter().cloned()),
            GroupChange::Remove => {
                for user in &change.users {
                    info.members.remove(user);
                    info.admins.remove(user);
                }
            }
            GroupChange::Promote => {
                for user in change.users.iter().filter(|u| info.members.contains(*u)) {
                    info.admins.insert(user.clone());
                }
            }
            GroupChange::Leave => {
                info.members.remove(author);
                info.admins.remove(author);
            }
            GroupChange::Create => {}
        }
    }
    Folded { info, superseded }
}

/// The epoch of the next change this member makes: one more than the highest it has seen.
pub(super) fn next_epoch(base: &Base, log: &[Change]) -> u64 {
    log.iter()
        .map(|c| c.epoch)
        .chain([base.epoch])
        .max()
        .unwrap_or(0)
        .saturating_add(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ID: [u8; 16] = [7; 16];

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    fn base() -> Base {
        Base {
            info: GroupInfo {
                id: tacit_crypto::GroupId([7; 16]),
                name: "team".into(),
                members: set(&["alice", "bob", "carol", "dave", "erin"]),
                admins: set(&["alice", "bob"]),
                creator: "alice".into(),
                salt: String::new(),
            },
            epoch: 0,
            digest: String::new(),
        }
    }

    fn change(epoch: u64, author: &str, kind: GroupChange, users: &[&str]) -> Change {
        Change::new(&ID, epoch, author, kind, set(users)).unwrap()
    }

    /// Alice removes Bob while Bob removes Erin (one epoch): whichever digest is smaller
    /// goes first, and if it is Alice's, Bob's removal is superseded (he is no longer an
    /// admin at its place); every order of delivery gives that same answer.
    #[test]
    fn concurrent_changes_are_ordered_by_digest() {
        let a = change(1, "alice", GroupChange::Remove, &["bob"]);
        let b = change(1, "bob", GroupChange::Remove, &["erin"]);
        let folded = fold(&base(), &[a.clone(), b.clone()]);
        assert_eq!(folded, fold(&base(), &[b.clone(), a.clone()]));
        if a.digest < b.digest {
            assert_eq!(
                folded.info.members,
                set(&["alice", "carol", "dave", "erin"])
            );
            assert_eq!(folded.superseded, set(&[&b.digest]));
        } else {
            assert_eq!(folded.info.members, set(&["alice", "carol", "dave"]));
            assert!(folded.superseded.is_empty());
        }
        assert_eq!(folded.info.admins, set(&["alice"]));
    }

    /// A later epoch goes after an earlier one whatever the digests; a change from someone
    /// who is not an admin at its place is superseded; a leave needs only membership.
    #[test]
    fn epochs_order_before_digests() {
        let promote = change(1, "alice", GroupChange::Promote, &["carol"]);
        let by_carol = change(2, "carol", GroupChange::Add, &["frank"]);
        let by_dave = change(2, "dave", GroupChange::Add, &["grace"]);
        let leave = change(3, "erin", GroupChange::Leave, &["alice"]);
        let folded = fold(&base(), &[leave, by_dave.clone(), by_carol, promote]);
        assert_eq!(
            folded.info.members,
            set(&["alice", "bob", "carol", "dave", "frank"])
        );
        assert_eq!(folded.info.admins, set(&["alice", "bob", "carol"]));
        assert_eq!(folded.superseded, set(&[&by_dave.digest]));
    }

    /// The digest covers every field, so no two different changes share a place.
    #[test]
    fn the_digest_covers_every_field() {
        let one = change(1, "alice", GroupChange::Add, &["bob"]);
        for other in [
            change(2, "alice", GroupChange::Add, &["bob"]),
            change(1, "alicf", GroupChange::Add, &["bob"]),
            change(1, "alice", GroupChange::Remove, &["bob"]),
            change(1, "alice", GroupChange::Add, &["bob", "carol"]),
            Change::new(&[8; 16], 1, "alice", GroupChange::Add, set(&["bob"])).unwrap(),
        ] {
            assert_ne!(one.digest, other.digest, "{other:?}");
        }
        assert!(Change::new(&ID, 1, "alice", GroupChange::Create, set(&[])).is_none());
        assert_eq!(next_epoch(&base(), &[one]), 2);
    }

    fn arbitrary_change() -> impl Strategy<Value = Change> {
        let names = ["alice", "bob", "carol", "dave", "erin", "frank"];
        let kinds = [
            GroupChange::Add,
            GroupChange::Remove,
            GroupChange::Promote,
            GroupChange::Leave,
        ];
        (
            1u64..4,
            0..names.len(),
            0..kinds.len(),
            proptest::collection::btree_set(0..names.len(), 0..3),
        )
            .prop_map(move |(epoch, author, kind, users)| {
                let users = users.into_iter().map(|u| names[u]).collect::<Vec<_>>();
                change(epoch, names[author], kinds[kind], &users)
            })
    }

    proptest! {
        /// Any set of changes, delivered in any order and with any duplicates, folds to
        /// one roster; and the roster keeps its invariant (admins are members).
        #[test]
        fn any_delivery_order_gives_one_roster(
            changes in proptest::collection::vec(arbitrary_change(), 0..8),
            order in proptest::collection::vec(any::<proptest::sample::Index>(), 0..12),
        ) {
            let reference = fold(&base(), &changes);
            let mut delivered: Vec<Change> = order
                .iter()
                .filter(|_| !changes.is_empty())
                .map(|i| changes[i.index(changes.len())].clone())
                .collect();
            delivered.extend(changes.iter().rev().cloned());
            prop_assert_eq!(&fold(&base(), &delivered), &reference);
            prop_assert!(reference.info.admins.is_subset(&reference.info.members));
        }
    }
}
