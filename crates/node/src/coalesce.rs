//! Merges the relays of one step into few messages.
//!
//! Under load one step of the node handles many inputs, and each accepted transaction, vote and
//! certificate would otherwise become a gossip message of its own: about a dozen frames per
//! payment per node, which costs more in framing, gossip bookkeeping and per-peer rate limits
//! than the payload itself. Merging them makes the message rate follow the step rate instead of
//! the payment rate. Only broadcasts of the same kind are merged, each at the place of its kind's
//! first broadcast in the step, so a receiver still sees a transaction no later than it did and
//! every other action keeps its order.

use timecoin_consensus::VoteBatch;
use timecoin_primitives::{BoundedVec, Transaction};

use crate::io::Action;
use crate::message::{
    CertifiedTransaction, MAX_RELAY_CERTIFIED, MAX_RELAY_TRANSACTIONS, MAX_RELAY_VOTES,
    NodeMessage, RELAY_TARGET_BYTES, RelayBundle,
};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Transactions,
    Votes,
    Certified,
}

/// Returns `actions` with every broadcast of transactions, of votes and of certified
/// transactions merged into as few messages as the relay limits allow, and with only the
/// earliest `ScheduleTick` kept.
pub fn coalesce(actions: Vec<Action>) -> Vec<Action> {
    let mut out: Vec<Option<Action>> = Vec::with_capacity(actions.len());
    let mut transactions: Vec<Transaction> = Vec::new();
    let mut votes: Vec<VoteBatch> = Vec::new();
    let mut certified: Vec<CertifiedTransaction> = Vec::new();
    // Where each kind's merged messages go: the slot of its first broadcast.
    let mut slots: Vec<(Kind, usize)> = Vec::new();
    let mut tick: Option<(usize, u64)> = None;
    for action in actions {
        let kind = match action {
            Action::Broadcast(NodeMessage::Transactions(batch)) => {
                transactions.extend(batch.into_inner());
                Kind::Transactions
            }
            Action::Broadcast(NodeMessage::TxVotes(batch)) => {
                votes.extend(batch.into_inner());
                Kind::Votes
            }
            Action::Broadcast(NodeMessage::Certified {
                transaction,
                certificate,
            }) => {
                certified.push(CertifiedTransaction {
                    transaction,
                    certificate,
                });
                Kind::Certified
            }
            Action::Broadcast(NodeMessage::CertifiedMany(batch)) => {
                certified.extend(batch.into_inner());
                Kind::Certified
            }
            Action::ScheduleTick { at_ms } => {
                match &mut tick {
                    Some((_, earliest)) => *earliest = (*earliest).min(at_ms),
                    None => {
                        tick = Some((out.len(), at_ms));
                        out.push(None);
                    }
                }
                continue;
            }
            other => {
                out.push(Some(other));
                continue;
            }
        };
        if !slots.iter().any(|(seen, _)| *seen == kind) {
            slots.push((kind, out.len()));
            out.push(None);
        }
    }
    let mut merged: Vec<(usize, Vec<Action>)> = Vec::new();
    for (kind, slot) in slots {
        let messages = match kind {
            Kind::Transactions => chunk(
                std::mem::take(&mut transactions),
                MAX_RELAY_TRANSACTIONS,
                |batch| NodeMessage::Transactions(BoundedVec::new(batch).expect("chunked")),
            ),
            Kind::Votes => chunk(std::mem::take(&mut votes), MAX_RELAY_VOTES, |batch| {
                NodeMessage::TxVotes(BoundedVec::new(batch).expect("chunked"))
            }),
            Kind::Certified => {
                let mut items = std::mem::take(&mut certified);
                if items.len() == 1 {
                    let only = items.pop().expect("one");
                    vec![NodeMessage::Certified {
                        transaction: only.transaction,
                        certificate: only.certificate,
                    }]
                } else {
                    chunk(items, MAX_RELAY_CERTIFIED, |batch| {
                        NodeMessage::CertifiedMany(BoundedVec::new(batch).expect("chunked"))
                    })
                }
            }
        };
        merged.push((slot, messages.into_iter().map(Action::Broadcast).collect()));
    }
    if let Some((slot, at_ms)) = tick {
        merged.push((slot, vec![Action::ScheduleTick { at_ms }]));
    }
    merged.sort_by_key(|(slot, _)| *slot);
    let mut merged = merged.into_iter().peekable();
    let mut result = Vec::with_capacity(out.len());
    for (index, action) in out.into_iter().enumerate() {
        match action {
            Some(action) => result.push(action),
            None => {
                let (slot, actions) = merged.next().expect("a slot per placeholder");
                debug_assert_eq!(slot, index);
                result.extend(actions);
            }
        }
    }
    result
}

/// Merges relay messages of every kind (transactions, votes, certified transactions) into as
/// few [`NodeMessage::Relay`] bundles as the relay limits allow, each of about
/// [`RELAY_TARGET_BYTES`] at most; what a runtime publishes once per gossip round. Within each
/// kind the order is kept. Other messages are returned unchanged, after the bundles.
pub fn bundle_relays(messages: Vec<NodeMessage>) -> Vec<NodeMessage> {
    let mut transactions = Vec::new();
    let mut votes = Vec::new();
    let mut certified = Vec::new();
    let mut others = Vec::new();
    for message in messages {
        match message {
            NodeMessage::Transactions(batch) => transactions.extend(batch.into_inner()),
            NodeMessage::TxVotes(batch) => votes.extend(batch.into_inner()),
            NodeMessage::Certified {
                transaction,
                certificate,
            } => certified.push(CertifiedTransaction {
                transaction,
                certificate,
            }),
            NodeMessage::CertifiedMany(batch) => certified.extend(batch.into_inner()),
            NodeMessage::Relay(bundle) => {
                let RelayBundle {
                    transactions: t,
                    votes: v,
                    certified: c,
                } = *bundle;
                transactions.extend(t.into_inner());
                votes.extend(v.into_inner());
                certified.extend(c.into_inner());
            }
            other => others.push(other),
        }
    }
    let mut bundles = Vec::new();
    let mut current = Parts::default();
    // Votes first: they are the smallest and the most urgent (each may complete a
    // certificate); a bundle split by size then still carries them in its first message.
    for vote in votes {
        let size = borsh::object_length(&vote).unwrap_or(RELAY_TARGET_BYTES);
        if current.votes.len() == MAX_RELAY_VOTES || current.would_overflow(size) {
            bundles.push(std::mem::take(&mut current).into_message());
        }
        current.bytes += size;
        current.votes.push(vote);
    }
    for transaction in transactions {
        let size = borsh::object_length(&transaction).unwrap_or(RELAY_TARGET_BYTES);
        if current.transactions.len() == MAX_RELAY_TRANSACTIONS || current.would_overflow(size) {
            bundles.push(std::mem::take(&mut current).into_message());
        }
        current.bytes += size;
        current.transactions.push(transaction);
    }
    for item in certified {
        let size = borsh::object_length(&item).unwrap_or(RELAY_TARGET_BYTES);
        if current.certified.len() == MAX_RELAY_CERTIFIED || current.would_overflow(size) {
            bundles.push(std::mem::take(&mut current).into_message());
        }
        current.bytes += size;
        current.certified.push(item);
    }
    if current.bytes > 0 {
        bundles.push(current.into_message());
    }
    bundles.extend(others);
    bundles
}

/// A relay bundle being filled.
#[derive(Default)]
struct Parts {
    transactions: Vec<Transaction>,
    votes: Vec<VoteBatch>,
    certified: Vec<CertifiedTransaction>,
    bytes: usize,
}

impl Parts {
    /// Whether adding `size` bytes would pass the target (a lone item larger than it still
    /// gets a bundle of its own).
    fn would_overflow(&self, size: usize) -> bool {
        self.bytes > 0 && self.bytes + size > RELAY_TARGET_BYTES
    }

    fn into_message(self) -> NodeMessage {
        NodeMessage::Relay(Box::new(RelayBundle {
            transactions: BoundedVec::new(self.transactions).expect("filled up to the limit"),
            votes: BoundedVec::new(self.votes).expect("filled up to the limit"),
            certified: BoundedVec::new(self.certified).expect("filled up to the limit"),
        }))
    }
}

/// Splits `items` into messages of at most `max` items and about [`RELAY_TARGET_BYTES`]
/// (a single item larger than that still gets its own message).
fn chunk<T: borsh::BorshSerialize>(
    items: Vec<T>,
    max: usize,
    make: impl Fn(Vec<T>) -> NodeMessage,
) -> Vec<NodeMessage> {
    let mut messages = Vec::new();
    let mut batch = Vec::new();
    let mut bytes = 0usize;
    for item in items {
        let size = borsh::object_length(&item).unwrap_or(RELAY_TARGET_BYTES);
        if !batch.is_empty() && (batch.len() == max || bytes + size > RELAY_TARGET_BYTES) {
            messages.push(make(std::mem::take(&mut batch)));
            bytes = 0;
        }
        bytes += size;
        batch.push(item);
    }
    if !batch.is_empty() {
        messages.push(make(batch));
    }
    messages
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{Reply, RequestId};
    use crate::message::PeerId;
    use timecoin_consensus::VoteBatch;
    use timecoin_primitives::{Epoch, Hash32, SecretKey, Txid};

    fn vote(n: u8) -> VoteBatch {
        let key = SecretKey::from_bytes([n.max(1); 32]);
        VoteBatch {
            epoch: Epoch(0),
            voter: key.public_key(),
            txids: BoundedVec::new(vec![Txid(Hash32([n; 32]))]).unwrap(),
            signature: key.sign(&[n]),
        }
    }

    fn votes_in(actions: &[Action]) -> Vec<VoteBatch> {
        actions
            .iter()
            .filter_map(|action| match action {
                Action::Broadcast(NodeMessage::TxVotes(votes)) => Some(votes.iter().cloned()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    #[test]
    fn votes_merge_at_the_first_vote_and_other_actions_keep_their_order() {
        let reply = |id| Action::Reply {
            id: RequestId(id),
            reply: Reply::Tip(None),
        };
        let one = |n| {
            Action::Broadcast(NodeMessage::TxVotes(
                BoundedVec::new(vec![vote(n)]).unwrap(),
            ))
        };
        let actions = vec![
            reply(1),
            one(1),
            Action::ScheduleTick { at_ms: 50 },
            Action::Penalize {
                peer: PeerId(3),
                reason: "x".into(),
            },
            one(2),
            reply(2),
            Action::ScheduleTick { at_ms: 20 },
            one(3),
        ];
        let merged = coalesce(actions);
        assert_eq!(merged.len(), 5, "{merged:?}");
        assert!(matches!(
            merged[0],
            Action::Reply {
                id: RequestId(1),
                ..
            }
        ));
        assert_eq!(votes_in(&merged[1..2]), vec![vote(1), vote(2), vote(3)]);
        assert!(matches!(merged[2], Action::ScheduleTick { at_ms: 20 }));
        assert!(matches!(merged[3], Action::Penalize { .. }));
        assert!(matches!(
            merged[4],
            Action::Reply {
                id: RequestId(2),
                ..
            }
        ));
    }

    #[test]
    fn many_votes_are_split_at_the_relay_limit_and_none_is_lost() {
        let count = MAX_RELAY_VOTES * 2 + 5;
        let actions: Vec<Action> = (0..count)
            .map(|n| {
                Action::Broadcast(NodeMessage::TxVotes(
                    BoundedVec::new(vec![vote((n % 250) as u8)]).unwrap(),
                ))
            })
            .collect();
        let merged = coalesce(actions);
        assert_eq!(merged.len(), 3);
        assert_eq!(votes_in(&merged).len(), count);
        for action in &merged {
            let Action::Broadcast(message) = action else {
                panic!("only broadcasts expected")
            };
            assert!(NodeMessage::from_bytes(&message.to_bytes()).is_ok());
        }
    }

    fn bundles(messages: &[NodeMessage]) -> Vec<&RelayBundle> {
        messages
            .iter()
            .filter_map(|message| match message {
                NodeMessage::Relay(bundle) => Some(&**bundle),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_round_of_every_kind_becomes_one_bundle_in_order() {
        let heartbeat = NodeMessage::Heartbeat {
            height: timecoin_primitives::Height(4),
            hash: timecoin_primitives::BlockHash(Hash32([4; 32])),
        };
        let votes = |range: std::ops::Range<u8>| {
            NodeMessage::TxVotes(BoundedVec::new(range.map(vote).collect()).unwrap())
        };
        let messages = vec![votes(1..3), heartbeat.clone(), votes(3..6)];
        let out = bundle_relays(messages);
        assert_eq!(out.len(), 2, "{out:?}");
        let bundle = bundles(&out);
        assert_eq!(bundle.len(), 1);
        let expected: Vec<VoteBatch> = (1..6).map(vote).collect();
        assert_eq!(bundle[0].votes.to_vec(), expected);
        assert!(bundle[0].transactions.is_empty() && bundle[0].certified.is_empty());
        assert_eq!(
            out[1], heartbeat,
            "other messages pass unchanged, after the bundles"
        );
        assert!(bundle_relays(Vec::new()).is_empty());
    }

    #[test]
    fn a_large_round_is_split_within_the_limits_and_nothing_is_lost() {
        let count = MAX_RELAY_VOTES * 2 + 7;
        let messages = (0..count)
            .map(|n| NodeMessage::TxVotes(BoundedVec::new(vec![vote((n % 250) as u8)]).unwrap()))
            .collect();
        let out = bundle_relays(messages);
        assert_eq!(out.len(), 3);
        let carried: usize = bundles(&out).iter().map(|b| b.votes.len()).sum();
        assert_eq!(carried, count);
        for message in &out {
            let bytes = message.to_bytes();
            assert!(bytes.len() <= RELAY_TARGET_BYTES + 1024);
            assert_eq!(NodeMessage::from_bytes(&bytes).unwrap(), *message);
        }
    }

    #[test]
    fn nothing_to_merge_is_left_alone() {
        let actions = vec![Action::Broadcast(NodeMessage::Heartbeat {
            height: timecoin_primitives::Height(1),
            hash: timecoin_primitives::BlockHash(Hash32([1; 32])),
        })];
        assert_eq!(coalesce(actions.clone()).len(), 1);
        assert!(coalesce(Vec::new()).is_empty());
    }
}
