//! Transactions (or certificates) held until outputs they spend become known, indexed by the
//! transactions that create those outputs.
//!
//! A certification makes exactly one transaction's outputs spendable, so only the entries that
//! spend them can have become valid. Retrying every held entry on every certification instead
//! made each certification cost as much as the whole room: anyone could fill it with signed
//! transactions spending outputs that do not exist (they pay no fee, as they never confirm),
//! and a node with 1,000 of them took about 20 times as long per payment.

use std::collections::BTreeMap;

use timecoin_consensus::FinalityCertificate;
use timecoin_primitives::{FastMap, FastSet, Transaction, Txid};

/// A held value names the transaction whose inputs it waits for.
pub(crate) trait Spends {
    fn transaction(&self) -> &Transaction;
}

impl Spends for Transaction {
    fn transaction(&self) -> &Transaction {
        self
    }
}

impl Spends for (Transaction, FinalityCertificate) {
    fn transaction(&self) -> &Transaction {
        &self.0
    }
}

struct Held<V> {
    sequence: u64,
    parents: Vec<Txid>,
    value: V,
}

/// At most `limit` held values by txid, in arrival order, with the reverse index from each
/// parent (a transaction whose output an entry spends) to the entries spending it.
pub(crate) struct Waiting<V> {
    entries: FastMap<Txid, Held<V>>,
    order: BTreeMap<u64, Txid>,
    children: FastMap<Txid, FastSet<Txid>>,
    next_sequence: u64,
    limit: usize,
}

/// What [`Waiting::insert`] does when the room is full.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum WhenFull {
    /// The oldest entry makes room.
    EvictOldest,
    /// The new entry is refused.
    Refuse,
}

impl<V: Spends> Waiting<V> {
    pub(crate) fn new(limit: usize) -> Waiting<V> {
        Waiting {
            entries: FastMap::default(),
            order: BTreeMap::new(),
            children: FastMap::default(),
            next_sequence: 0,
            limit,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn contains(&self, txid: &Txid) -> bool {
        self.entries.contains_key(txid)
    }

    pub(crate) fn get(&self, txid: &Txid) -> Option<&V> {
        self.entries.get(txid).map(|held| &held.value)
    }

    /// Holds `value` under `txid`, its transaction's id, unless that is held already. Returns
    /// whether it is held now.
    pub(crate) fn insert(&mut self, txid: Txid, value: V, when_full: WhenFull) -> bool {
        if self.entries.contains_key(&txid) {
            return true;
        }
        if self.entries.len() >= self.limit {
            match when_full {
                WhenFull::Refuse => return false,
                WhenFull::EvictOldest => {
                    let Some((_, oldest)) = self.order.first_key_value() else {
                        return false;
                    };
                    let oldest = *oldest;
                    self.remove(&oldest);
                }
            }
        }
        let mut parents: Vec<Txid> = value
            .transaction()
            .body
            .inputs
            .iter()
            .map(|input| input.prevout.txid)
            .collect();
        parents.sort_unstable();
        parents.dedup();
        for parent in &parents {
            self.children.entry(*parent).or_default().insert(txid);
        }
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        self.order.insert(sequence, txid);
        self.entries.insert(
            txid,
            Held {
                sequence,
                parents,
                value,
            },
        );
        true
    }

    pub(crate) fn remove(&mut self, txid: &Txid) -> Option<V> {
        let held = self.entries.remove(txid)?;
        self.order.remove(&held.sequence);
        for parent in &held.parents {
            if let Some(children) = self.children.get_mut(parent) {
                children.remove(txid);
                if children.is_empty() {
                    self.children.remove(parent);
                }
            }
        }
        Some(held.value)
    }

    /// Every held txid, oldest first.
    pub(crate) fn txids(&self) -> Vec<Txid> {
        self.order.values().copied().collect()
    }

    /// The held entries that spend an output of `parent`, oldest first.
    pub(crate) fn children_of(&self, parent: &Txid) -> Vec<Txid> {
        let Some(children) = self.children.get(parent) else {
            return Vec::new();
        };
        let mut children: Vec<(u64, Txid)> = children
            .iter()
            .map(|txid| (self.entries[txid].sequence, *txid))
            .collect();
        children.sort_unstable();
        children.into_iter().map(|(_, txid)| txid).collect()
    }

    /// Asserts that the index agrees with the entries.
    pub(crate) fn check_invariants(&self) {
        assert!(self.entries.len() <= self.limit);
        assert_eq!(self.entries.len(), self.order.len());
        let indexed: usize = self.children.values().map(FastSet::len).sum();
        let expected: usize = self.entries.values().map(|held| held.parents.len()).sum();
        assert_eq!(indexed, expected);
        for (parent, children) in &self.children {
            assert!(!children.is_empty());
            for child in children {
                assert!(self.entries[child].parents.contains(parent));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use timecoin_primitives::{
        Amount, BoundedVec, Hash32, Network, OutPoint, SecretKey, TxBody, TxInput, TxKind, TxOut,
    };

    fn spending(parents: &[u8]) -> (Txid, Transaction) {
        let key = SecretKey::from_bytes([3; 32]);
        let inputs = parents
            .iter()
            .enumerate()
            .map(|(index, parent)| TxInput {
                prevout: OutPoint {
                    txid: Txid(Hash32([*parent; 32])),
                    index: index as u32,
                },
                public_key: key.public_key(),
            })
            .collect();
        let body = TxBody {
            kind: TxKind::Transfer,
            inputs: BoundedVec::new(inputs).unwrap(),
            outputs: BoundedVec::new(vec![TxOut {
                amount: Amount::from_units(1).unwrap(),
                address: crate::testing::address(&key),
            }])
            .unwrap(),
        };
        let transaction =
            Transaction::sign(body, &vec![&key; parents.len()], None, Network::Devnet).unwrap();
        (transaction.txid(), transaction)
    }

    fn parent(byte: u8) -> Txid {
        Txid(Hash32([byte; 32]))
    }

    #[test]
    fn children_are_found_by_parent_and_forgotten_with_their_entry() {
        let mut waiting = Waiting::new(10);
        let (a, tx_a) = spending(&[1, 2]);
        let (b, tx_b) = spending(&[2, 2]);
        let (c, tx_c) = spending(&[3]);
        for (txid, transaction) in [(a, &tx_a), (b, &tx_b), (c, &tx_c)] {
            assert!(waiting.insert(txid, transaction.clone(), WhenFull::Refuse));
            waiting.check_invariants();
        }
        assert_eq!(waiting.children_of(&parent(1)), vec![a]);
        assert_eq!(waiting.children_of(&parent(2)), vec![a, b]);
        assert_eq!(waiting.children_of(&parent(4)), Vec::<Txid>::new());
        assert_eq!(waiting.remove(&a).map(|tx| tx.txid()), Some(a));
        waiting.check_invariants();
        assert_eq!(waiting.children_of(&parent(1)), Vec::<Txid>::new());
        assert_eq!(waiting.children_of(&parent(2)), vec![b]);
        assert_eq!(waiting.txids(), vec![b, c]);
        assert!(waiting.remove(&a).is_none());
    }

    #[test]
    fn a_full_room_evicts_its_oldest_entry_or_refuses_the_new_one() {
        let (a, tx_a) = spending(&[1]);
        let (b, tx_b) = spending(&[2]);
        let (c, tx_c) = spending(&[1, 3]);
        let mut evicting = Waiting::new(2);
        evicting.insert(a, tx_a.clone(), WhenFull::EvictOldest);
        evicting.insert(b, tx_b.clone(), WhenFull::EvictOldest);
        assert!(evicting.insert(c, tx_c.clone(), WhenFull::EvictOldest));
        evicting.check_invariants();
        assert_eq!(evicting.txids(), vec![b, c]);
        assert_eq!(evicting.get(&c), Some(&tx_c));
        assert_eq!(evicting.children_of(&parent(1)), vec![c]);
        let mut refusing = Waiting::new(2);
        refusing.insert(a, tx_a.clone(), WhenFull::Refuse);
        refusing.insert(b, tx_b.clone(), WhenFull::Refuse);
        assert!(!refusing.insert(c, tx_c.clone(), WhenFull::Refuse));
        assert!(!refusing.contains(&c));
        assert!(
            refusing.insert(a, tx_a.clone(), WhenFull::Refuse),
            "held already"
        );
        assert_eq!(refusing.len(), 2);
        refusing.check_invariants();
    }
}
