//! Certified transactions that are not in a block yet, and the UTXO view they imply: the
//! committed set minus what they spend plus what they create. Chains of dependent payments
//! validate against this view, so they finalize without waiting for a block.

use std::collections::BTreeMap;

use timecoin_consensus::FinalityCertificate;
use timecoin_ledger::{BackendError, UtxoEntry, UtxoView};
use timecoin_primitives::{Amount, FastMap, Height, OutPoint, Transaction, TxKind, Txid};

/// Most certified transactions waiting for a block. Leaders include them at every block, so
/// reaching this means blocks have stalled; further certificates wait for a block.
pub const MAX_CERTIFIED_UNBLOCKED: usize = 100_000;

/// One certified transaction waiting for a block.
#[derive(Clone, Debug)]
pub struct CertifiedEntry {
    /// The transaction.
    pub transaction: Transaction,
    /// Its certificate.
    pub certificate: FinalityCertificate,
    /// Its fee.
    pub fee: Amount,
    /// Its encoded size.
    pub size_bytes: usize,
}

/// The certified, unblocked transactions, in certification order (parents before children).
#[derive(Clone, Debug, Default)]
pub struct CertifiedPool {
    next_sequence: u64,
    order: BTreeMap<u64, Txid>,
    /// Each entry with its sequence number and the height its outputs are recorded at. The
    /// outputs are read from the transaction itself: an index of them cost 120 bytes per
    /// output, 100 MB on a node that certified a burst of large fan-outs.
    entries: FastMap<Txid, (u64, Height, CertifiedEntry)>,
    spent: FastMap<OutPoint, Txid>,
}

impl CertifiedPool {
    /// How many transactions wait.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether none waits.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `txid` is certified and waiting.
    pub fn contains(&self, txid: &Txid) -> bool {
        self.entries.contains_key(txid)
    }

    /// The entry of `txid`.
    pub fn get(&self, txid: &Txid) -> Option<&CertifiedEntry> {
        self.entries.get(txid).map(|(_, _, entry)| entry)
    }

    /// The certified transaction spending `outpoint`, if any.
    pub fn spender_of(&self, outpoint: &OutPoint) -> Option<Txid> {
        self.spent.get(outpoint).copied()
    }

    /// The entries in certification order.
    pub fn iter(&self) -> impl Iterator<Item = &CertifiedEntry> + '_ {
        self.order
            .values()
            .filter_map(|txid| self.entries.get(txid).map(|(_, _, entry)| entry))
    }

    /// Outputs created by waiting transactions and not spent by another waiting one, by txid
    /// and output index.
    pub fn unspent_outputs(&self) -> impl Iterator<Item = (OutPoint, UtxoEntry)> + '_ {
        self.entries
            .iter()
            .flat_map(move |(txid, (_, height, entry))| {
                (0u32..)
                    .zip(&entry.transaction.body.outputs)
                    .filter_map(move |(index, _)| {
                        let outpoint = OutPoint { txid: *txid, index };
                        if self.spent.contains_key(&outpoint) {
                            return None;
                        }
                        created_entry(&entry.transaction, index, *height)
                            .map(|created| (outpoint, created))
                    })
            })
    }

    /// The output at `outpoint` if a waiting transaction created it (spent or not).
    fn created(&self, outpoint: &OutPoint) -> Option<UtxoEntry> {
        let (_, height, entry) = self.entries.get(&outpoint.txid)?;
        created_entry(&entry.transaction, outpoint.index, *height)
    }

    /// Adds a certified transaction; `height` is the height its outputs are recorded at (the
    /// next block's).
    pub fn insert(&mut self, entry: CertifiedEntry, height: Height) {
        let txid = entry.transaction.txid();
        if self.entries.contains_key(&txid) {
            return;
        }
        for input in &entry.transaction.body.inputs {
            self.spent.insert(input.prevout, txid);
        }
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        self.order.insert(sequence, txid);
        self.entries.insert(txid, (sequence, height, entry));
    }

    /// Removes `txid`, returning its entry.
    pub fn remove(&mut self, txid: &Txid) -> Option<CertifiedEntry> {
        let (sequence, _, entry) = self.entries.remove(txid)?;
        self.order.remove(&sequence);
        for input in &entry.transaction.body.inputs {
            if self.spent.get(&input.prevout) == Some(txid) {
                self.spent.remove(&input.prevout);
            }
        }
        Some(entry)
    }
}

/// Output `index` of `transaction` as a UTXO entry recorded at `height`.
fn created_entry(transaction: &Transaction, index: u32, height: Height) -> Option<UtxoEntry> {
    let output = transaction.body.outputs.get(usize::try_from(index).ok()?)?;
    let collateral = match transaction.body.kind {
        TxKind::RegisterMasternode {
            collateral_output, ..
        } => Some(collateral_output),
        _ => None,
    };
    Some(UtxoEntry {
        output: *output,
        height,
        is_collateral: collateral == Some(index),
    })
}

/// The committed UTXO set seen through the certified pool.
pub struct CertifiedView<'a, V> {
    /// The committed set.
    pub base: &'a V,
    /// The certified, unblocked transactions.
    pub pool: &'a CertifiedPool,
}

impl<V: UtxoView> UtxoView for CertifiedView<'_, V> {
    fn utxo(&self, outpoint: &OutPoint) -> Result<Option<UtxoEntry>, BackendError> {
        if self.pool.spent.contains_key(outpoint) {
            return Ok(None);
        }
        if let Some(entry) = self.pool.created(outpoint) {
            return Ok(Some(entry));
        }
        self.base.utxo(outpoint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{key, pay};
    use timecoin_primitives::{BoundedVec, Epoch};

    struct Empty;

    impl UtxoView for Empty {
        fn utxo(&self, _: &OutPoint) -> Result<Option<UtxoEntry>, BackendError> {
            Ok(None)
        }
    }

    fn entry(transaction: Transaction) -> CertifiedEntry {
        CertifiedEntry {
            certificate: FinalityCertificate {
                epoch: Epoch(0),
                txid: transaction.txid(),
                votes: BoundedVec::new(Vec::new()).unwrap(),
            },
            transaction,
            fee: Amount::ZERO,
            size_bytes: 0,
        }
    }

    #[test]
    fn the_view_shows_what_waiting_transactions_create_minus_what_they_spend() {
        let (alice, bob) = (key(1), key(2));
        let coin = OutPoint {
            txid: Txid(timecoin_primitives::Hash32([7; 32])),
            index: 0,
        };
        let amount = Amount::from_units(10_000_000).unwrap();
        let first = pay(
            coin,
            amount,
            &alice,
            &bob,
            Amount::from_units(1_000_000).unwrap(),
        );
        let first_id = first.txid();
        let paid = OutPoint {
            txid: first_id,
            index: 0,
        };
        let change = OutPoint {
            txid: first_id,
            index: 1,
        };
        let mut pool = CertifiedPool::default();
        pool.insert(entry(first.clone()), Height(5));
        let view = CertifiedView {
            base: &Empty,
            pool: &pool,
        };
        let created = view
            .utxo(&paid)
            .unwrap()
            .expect("created by a waiting transaction");
        assert_eq!(created.output, first.body.outputs[0]);
        assert_eq!(created.height, Height(5));
        assert!(!created.is_collateral);
        assert_eq!(
            view.utxo(&coin).unwrap(),
            None,
            "spent by a waiting transaction"
        );
        assert_eq!(
            view.utxo(&OutPoint {
                txid: first_id,
                index: 2
            })
            .unwrap(),
            None,
            "no third output"
        );

        // A child spends the change: it leaves the unspent outputs, its own appear.
        let child = pay(
            change,
            first.body.outputs[1].amount,
            &alice,
            &bob,
            Amount::from_units(1_000_000).unwrap(),
        );
        pool.insert(entry(child.clone()), Height(5));
        let unspent: Vec<OutPoint> = pool
            .unspent_outputs()
            .map(|(outpoint, _)| outpoint)
            .collect();
        assert_eq!(unspent.len(), 3);
        assert!(unspent.contains(&paid) && !unspent.contains(&change));
        assert_eq!(pool.spender_of(&change), Some(child.txid()));

        // The parent reaches a block: its outputs are the committed set's business again.
        assert!(pool.remove(&first_id).is_some());
        let view = CertifiedView {
            base: &Empty,
            pool: &pool,
        };
        assert_eq!(view.utxo(&paid).unwrap(), None);
        assert_eq!(pool.spender_of(&coin), None);
        assert_eq!(pool.unspent_outputs().count(), 2);
    }
}
