//! The send decision: which devices a send must cover, whether their mailboxes have room,
//! and how the repeats of a client message id within one write batch are answered.
//!
//! These are the service's rules, applied by the store inside its write transaction (so a
//! device added or removed concurrently is never skipped or written to): the store reads
//! the facts ([`DeviceFacts`]), asks [`Rules`] through the [`SendRules`] trait, and stores
//! what the rules accept. Everything here is a pure function.

use std::collections::BTreeSet;

use tacit_api::DeviceId;

use crate::store::{
    AccountMismatch, Decision, DeviceFacts, NewMessage, SendOutcome, SendRules, StoreError,
};

/// The relay's send rules, handed to [`crate::store::Store::write_batch`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Rules;

impl SendRules for Rules {
    fn check(
        &self,
        message: &NewMessage,
        facts: &mut DeviceFacts,
    ) -> Option<Result<SendOutcome, StoreError>> {
        check(message, facts)
    }

    fn resolve(
        &self,
        decisions: Vec<Decision>,
        messages: &[NewMessage],
    ) -> Vec<Result<SendOutcome, StoreError>> {
        resolve(decisions, messages)
    }
}

/// Decide a send that was not stored before, in batch order: the device sets must match
/// exactly ([`mismatches`]), and every destination mailbox must have room, counting what
/// this batch accepted before it. `None` accepts it (and counts its envelopes).
pub(crate) fn check(
    message: &NewMessage,
    facts: &mut DeviceFacts,
) -> Option<Result<SendOutcome, StoreError>> {
    let mismatches = mismatches(message, facts);
    if !mismatches.is_empty() {
        return Some(Ok(SendOutcome::Mismatch(mismatches)));
    }
    let max = message.max_mailbox_depth;
    if message
        .envelopes
        .iter()
        .any(|(mb, _)| facts.depth.get(mb).is_some_and(|d| *d >= max))
    {
        return Some(Err(StoreError::MailboxFull));
    }
    for (mb, _) in &message.envelopes {
        *facts.depth.entry(*mb).or_default() += 1;
    }
    None
}

/// How the destinations of a send differ from the current devices: for each recipient, all
/// its devices (less the sending one for a message to oneself); for the sender's account,
/// its other devices.
pub(crate) fn mismatches(m: &NewMessage, facts: &DeviceFacts) -> Vec<AccountMismatch> {
    let sender = m.sender.account;
    let mut accounts = m.recipients.clone();
    if !accounts.contains(&sender) {
        accounts.push(sender);
    }
    let mut out = Vec::new();
    for account in accounts {
        let mut expected = facts.devices.get(&account).cloned().unwrap_or_default();
        if account == sender {
            expected.remove(&m.sender.device);
        }
        let given: BTreeSet<DeviceId> = m
            .envelopes
            .iter()
            .filter(|(mb, _)| mb.account == account)
            .map(|(mb, _)| mb.device)
            .collect();
        let missing: Vec<_> = expected.difference(&given).copied().collect();
        let stale: Vec<_> = given.difference(&expected).copied().collect();
        if !missing.is_empty() || !stale.is_empty() {
            out.push(AccountMismatch {
                account,
                missing,
                stale,
            });
        }
    }
    out
}

/// Final results: repeats within the batch answer like their first occurrence would on a
/// retry (a duplicate of a stored send, or the same refusal).
pub(crate) fn resolve(
    mut decisions: Vec<Decision>,
    messages: &[NewMessage],
) -> Vec<Result<SendOutcome, StoreError>> {
    let snapshot: Vec<Option<Result<SendOutcome, StoreError>>> = decisions
        .iter()
        .map(|d| match d {
            Decision::Done(Ok(SendOutcome::Stored(_))) => None,
            Decision::Done(Ok(other)) => Some(Ok(other.clone())),
            Decision::Done(Err(StoreError::MailboxFull)) => Some(Err(StoreError::MailboxFull)),
            _ => Some(Err(StoreError::BatchFailed)),
        })
        .collect();
    for decision in &mut decisions {
        if let Decision::RepeatOf(j) = *decision {
            *decision = Decision::Done(match snapshot.get(j) {
                Some(None) => match messages.get(j) {
                    Some(first) => Ok(SendOutcome::Duplicate(first.server_ts)),
                    None => Err(StoreError::BatchFailed),
                },
                Some(Some(Ok(o))) => Ok(o.clone()),
                Some(Some(Err(StoreError::MailboxFull))) => Err(StoreError::MailboxFull),
                Some(Some(Err(_))) | None => Err(StoreError::BatchFailed),
            });
        }
    }
    decisions
        .into_iter()
        .map(|d| match d {
            Decision::Done(r) => r,
            Decision::Open | Decision::RepeatOf(_) => Err(StoreError::BatchFailed),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use tacit_api::{Ciphertext, Timestamp};

    use super::*;
    use crate::store::Mailbox;

    fn mb(account: i64, device: u32) -> Mailbox {
        Mailbox {
            account,
            device: DeviceId(device),
        }
    }

    /// A send from `sender` to the accounts `recipients`, with one envelope per mailbox
    /// of `to`.
    fn send(sender: Mailbox, recipients: &[i64], to: &[Mailbox], ts: i64) -> NewMessage {
        NewMessage {
            sender,
            recipients: recipients.to_vec(),
            sender_username: "alice".into(),
            client_message_id: "m".into(),
            server_ts: Timestamp(ts),
            expires_at: Timestamp(ts + 1000),
            remember_until: Timestamp(ts + 1000),
            max_mailbox_depth: 2,
            envelopes: to
                .iter()
                .map(|m| (*m, Ciphertext(vec![1].into())))
                .collect(),
            body: None,
        }
    }

    /// Alice (account 1) has devices 1 and 2, Bob (account 2) devices 1 and 3.
    fn facts() -> DeviceFacts {
        let mut facts = DeviceFacts::default();
        facts
            .devices
            .insert(1, [DeviceId(1), DeviceId(2)].into_iter().collect());
        facts
            .devices
            .insert(2, [DeviceId(1), DeviceId(3)].into_iter().collect());
        facts
    }

    #[test]
    fn a_send_must_cover_the_recipients_and_the_senders_other_devices() {
        let facts = facts();
        let exact = send(mb(1, 1), &[2], &[mb(2, 1), mb(2, 3), mb(1, 2)], 1);
        assert!(mismatches(&exact, &facts).is_empty());

        // Bob's device 3 missed, a device 2 of his that does not exist, Alice's device 2
        // missed; the sending device itself is never expected.
        let wrong = send(mb(1, 1), &[2], &[mb(2, 1), mb(2, 2)], 1);
        assert_eq!(
            mismatches(&wrong, &facts),
            vec![
                AccountMismatch {
                    account: 2,
                    missing: vec![DeviceId(3)],
                    stale: vec![DeviceId(2)],
                },
                AccountMismatch {
                    account: 1,
                    missing: vec![DeviceId(2)],
                    stale: vec![],
                },
            ]
        );
        let to_self = send(mb(1, 1), &[1], &[mb(1, 1)], 1);
        assert_eq!(
            mismatches(&to_self, &facts),
            vec![AccountMismatch {
                account: 1,
                missing: vec![DeviceId(2)],
                stale: vec![DeviceId(1)],
            }]
        );
    }

    #[test]
    fn an_account_without_devices_takes_no_envelope() {
        let facts = facts();
        let m = send(mb(1, 1), &[9], &[mb(9, 1), mb(1, 2)], 1);
        assert_eq!(
            mismatches(&m, &facts),
            vec![AccountMismatch {
                account: 9,
                missing: vec![],
                stale: vec![DeviceId(1)],
            }]
        );
    }

    #[test]
    fn a_full_mailbox_refuses_counting_what_the_batch_accepted() {
        let mut facts = facts();
        facts.depth.insert(mb(2, 1), 1);
        let m = send(mb(1, 1), &[2], &[mb(2, 1), mb(2, 3), mb(1, 2)], 1);
        assert!(check(&m, &mut facts).is_none());
        assert_eq!(facts.depth.get(&mb(2, 1)), Some(&2));
        assert_eq!(facts.depth.get(&mb(2, 3)), Some(&1));
        assert!(matches!(
            check(&m, &mut facts),
            Some(Err(StoreError::MailboxFull))
        ));
        // The refused send counted nothing.
        assert_eq!(facts.depth.get(&mb(2, 3)), Some(&1));
        let wrong = send(mb(1, 1), &[2], &[mb(2, 1)], 1);
        assert!(matches!(
            check(&wrong, &mut facts),
            Some(Ok(SendOutcome::Mismatch(_)))
        ));
    }

    #[test]
    fn repeats_in_a_batch_answer_like_their_first_occurrence() {
        let messages = vec![
            send(mb(1, 1), &[2], &[], 10),
            send(mb(1, 1), &[2], &[], 20),
            send(mb(1, 1), &[2], &[], 30),
            send(mb(1, 1), &[2], &[], 40),
            send(mb(1, 1), &[2], &[], 50),
            send(mb(1, 1), &[2], &[], 60),
            send(mb(1, 1), &[2], &[], 70),
            send(mb(1, 1), &[2], &[], 80),
        ];
        let mismatch = SendOutcome::Mismatch(vec![AccountMismatch {
            account: 2,
            missing: vec![DeviceId(1)],
            stale: vec![],
        }]);
        let decisions = vec![
            Decision::Done(Ok(SendOutcome::Stored(vec![mb(2, 1)]))),
            Decision::RepeatOf(0),
            Decision::Done(Ok(mismatch.clone())),
            Decision::RepeatOf(2),
            Decision::Done(Err(StoreError::MailboxFull)),
            Decision::RepeatOf(4),
            Decision::Open,
            Decision::RepeatOf(6),
        ];
        let results = resolve(decisions, &messages);
        assert!(matches!(&results[0], Ok(SendOutcome::Stored(_))));
        // A repeat of a stored send is a duplicate at the first one's time.
        assert_eq!(
            results[1].as_ref().unwrap(),
            &SendOutcome::Duplicate(Timestamp(10))
        );
        assert_eq!(results[3].as_ref().unwrap(), &mismatch);
        assert!(matches!(results[5], Err(StoreError::MailboxFull)));
        // Left undecided (the batch failed around it): failed, and so is its repeat.
        assert!(matches!(results[6], Err(StoreError::BatchFailed)));
        assert!(matches!(results[7], Err(StoreError::BatchFailed)));
    }
}
