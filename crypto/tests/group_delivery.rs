//! Property test: a sender sends group messages, rotates its chain and re-sends its
//! distribution, while the network delays, reorders, duplicates and drops messages, and a
//! second member joins part-way. Every message a member may read opens exactly once to its
//! plaintext; every other delivery fails with the error that says why (duplicate, sent
//! before the member got the chain, chain evicted or never given); a failure changes
//! nothing; and every state survives being stored and restored at any point.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is a failure

use std::collections::{HashMap, HashSet};

use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;
use tacit_crypto::consts::MAX_SENDER_KEY_CHAINS;
use tacit_crypto::{
    ChainId, GroupDecryptError, GroupId, SenderKeyDistribution, SenderKeyMessage, SenderKeyRecord,
    SenderKeyState,
};

#[derive(Debug, Clone)]
enum Op {
    /// The sender sends a message of this length.
    Send { len: usize },
    /// The network delivers the in-flight message at this position to a member.
    Deliver { carol: bool, pick: usize },
    /// The network delivers an already delivered message again.
    Duplicate { carol: bool, pick: usize },
    /// The network loses a message on its way to a member.
    Drop { carol: bool, pick: usize },
    /// The sender starts a new chain and distributes it to the members.
    Rotate,
    /// The sender sends its current distribution to Bob again.
    Redistribute,
    /// Carol joins: she gets the sender's current distribution.
    Join,
    /// A party stores its state and restores it.
    Restore { who: u8 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0usize..100).prop_map(|len| Op::Send { len }),
        5 => (any::<bool>(), any::<usize>()).prop_map(|(carol, pick)| Op::Deliver { carol, pick }),
        1 => (any::<bool>(), any::<usize>()).prop_map(|(carol, pick)| Op::Duplicate { carol, pick }),
        1 => (any::<bool>(), any::<usize>()).prop_map(|(carol, pick)| Op::Drop { carol, pick }),
        1 => Just(Op::Rotate),
        1 => Just(Op::Redistribute),
        1 => Just(Op::Join),
        1 => (0u8..3).prop_map(|who| Op::Restore { who }),
    ]
}

/// A message on the wire with what it should open to.
#[derive(Clone)]
struct Sent {
    wire: Vec<u8>,
    plaintext: Vec<u8>,
    chain: ChainId,
    iteration: u32,
}

/// A member: its record, and the model of what it should be able to open.
struct Member {
    record: SenderKeyRecord,
    /// Chains by recency of distribution, most recent first (the record keeps the first
    /// `MAX_SENDER_KEY_CHAINS`).
    recency: Vec<ChainId>,
    /// The iteration at which the member got each chain.
    first: HashMap<ChainId, u32>,
    opened: HashSet<(ChainId, u32)>,
    in_flight: Vec<Sent>,
    delivered: Vec<Sent>,
}

impl Member {
    fn new(group: GroupId) -> Self {
        Self {
            record: SenderKeyRecord::new(group),
            recency: Vec::new(),
            first: HashMap::new(),
            opened: HashSet::new(),
            in_flight: Vec::new(),
            delivered: Vec::new(),
        }
    }

    /// Receives a distribution over the (reliable, ordered) pairwise session.
    fn process(&mut self, distribution: &SenderKeyDistribution) {
        let bytes = distribution.to_bytes();
        let decoded = SenderKeyDistribution::from_bytes(&bytes).unwrap();
        self.record.process(&decoded).unwrap();
        let chain = decoded.chain_id();
        self.recency.retain(|c| *c != chain);
        self.recency.insert(0, chain);
        if self.recency.len() > MAX_SENDER_KEY_CHAINS {
            // Evicted: a later distribution of it would start afresh.
            for evicted in self.recency.split_off(MAX_SENDER_KEY_CHAINS) {
                self.first.remove(&evicted);
            }
        }
        self.first.entry(chain).or_insert(decoded.iteration());
    }

    fn expected(&self, sent: &Sent) -> Result<Vec<u8>, GroupDecryptError> {
        if !self.recency.contains(&sent.chain) {
            return Err(GroupDecryptError::UnknownChain);
        }
        let first = self.first[&sent.chain];
        if sent.iteration < first {
            return Err(GroupDecryptError::BeforeDistribution {
                iteration: sent.iteration,
                first,
            });
        }
        if self.opened.contains(&(sent.chain, sent.iteration)) {
            return Err(GroupDecryptError::Duplicate);
        }
        Ok(sent.plaintext.clone())
    }

    fn deliver(&mut self, sent: Sent) {
        let expected = self.expected(&sent);
        let message = SenderKeyMessage::from_bytes(&sent.wire).unwrap();
        let before = self.record.to_bytes();
        let result = self.record.decrypt(&message);
        assert_eq!(result, expected);
        match result {
            Ok(_) => {
                self.opened.insert((sent.chain, sent.iteration));
                self.delivered.push(sent);
            }
            Err(_) => assert_eq!(
                self.record.to_bytes(),
                before,
                "a failure changed the record"
            ),
        }
    }
}

fn run(seed: u64, ops: &[Op]) {
    let mut rng = StdRng::seed_from_u64(seed);
    let group = GroupId::generate(&mut rng);
    let mut sender = SenderKeyState::generate(&mut rng, group);
    let mut bob = Member::new(group);
    bob.process(&sender.distribution());
    let mut carol: Option<Member> = None;
    let mut counter = 0u32;

    for op in ops {
        match op {
            Op::Send { len } => {
                counter += 1;
                let mut plaintext = counter.to_be_bytes().to_vec();
                plaintext.resize(4 + len, 0xC3);
                let sent = Sent {
                    wire: sender.encrypt(&plaintext).unwrap(),
                    plaintext,
                    chain: sender.chain_id(),
                    iteration: sender.iteration() - 1,
                };
                // The server fans one ciphertext out to every member device.
                if let Some(carol) = carol.as_mut() {
                    carol.in_flight.push(sent.clone());
                }
                bob.in_flight.push(sent);
            }
            Op::Deliver {
                carol: to_carol,
                pick,
            } => {
                let member = if *to_carol {
                    carol.as_mut()
                } else {
                    Some(&mut bob)
                };
                if let Some(member) = member
                    && !member.in_flight.is_empty()
                {
                    let sent = member.in_flight.remove(pick % member.in_flight.len());
                    member.deliver(sent);
                }
            }
            Op::Duplicate {
                carol: to_carol,
                pick,
            } => {
                let member = if *to_carol {
                    carol.as_mut()
                } else {
                    Some(&mut bob)
                };
                if let Some(member) = member
                    && !member.delivered.is_empty()
                {
                    let sent = member.delivered[pick % member.delivered.len()].clone();
                    let expected = member.expected(&sent);
                    assert!(expected.is_err(), "a delivered message would open again");
                    member.deliver(sent);
                }
            }
            Op::Drop {
                carol: to_carol,
                pick,
            } => {
                let member = if *to_carol {
                    carol.as_mut()
                } else {
                    Some(&mut bob)
                };
                if let Some(member) = member
                    && !member.in_flight.is_empty()
                {
                    member.in_flight.remove(pick % member.in_flight.len());
                }
            }
            Op::Rotate => {
                sender = SenderKeyState::generate(&mut rng, group);
                bob.process(&sender.distribution());
                if let Some(carol) = carol.as_mut() {
                    carol.process(&sender.distribution());
                }
            }
            Op::Redistribute => bob.process(&sender.distribution()),
            Op::Join => {
                if carol.is_none() {
                    let mut member = Member::new(group);
                    member.process(&sender.distribution());
                    // Carol also receives what was sent before she joined (the server may
                    // hand her anything); she must not be able to read it.
                    member.in_flight = bob.delivered.clone();
                    member.in_flight.extend(bob.in_flight.iter().cloned());
                    carol = Some(member);
                }
            }
            Op::Restore { who: 0 } => {
                sender = SenderKeyState::from_bytes(&sender.to_bytes()).unwrap();
            }
            Op::Restore { who } => {
                let member = if *who == 2 {
                    carol.as_mut()
                } else {
                    Some(&mut bob)
                };
                if let Some(member) = member {
                    let stored = member.record.to_bytes();
                    member.record = SenderKeyRecord::from_bytes(&stored).unwrap();
                    assert_eq!(member.record.to_bytes(), stored);
                }
            }
        }
    }

    // Finally deliver everything still in flight, each as the model says.
    for member in std::iter::once(&mut bob).chain(carol.as_mut()) {
        for sent in std::mem::take(&mut member.in_flight) {
            member.deliver(sent);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn every_readable_message_opens_exactly_once(seed in any::<u64>(), ops in prop::collection::vec(op(), 1..150)) {
        run(seed, &ops);
    }
}
