//! Certified transactions that are not in a block yet, and the UTXO view they imply: the
//! committed set minus what they spend plus what they create. Chains of dependent payments
//! validate against this view, so they finalize without waiting for a block.

use std::collections::BTreeMap;

use timecoin_consensus::FinalityCertificate;
use timecoin_ledger::{BackendError, UtxoEntry, UtxoView};
use timecoin_primitives::{Amount, Height, OutPoint, Transaction, TxKind, Txid};

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
    entries: BTreeMap<Txid, (u64, CertifiedEntry)>,
    spent: BTreeMap<OutPoint, Txid>,
    created: BTreeMap<OutPoint, UtxoEntry>,
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
        self.entries.get(txid).map(|(_, entry)| entry)
    }

    /// The certified transaction spending `outpoint`, if any.
    pub fn spender_of(&self, outpoint: &OutPoint) -> Option<Txid> {
        self.spent.get(outpoint).copied()
    }

    /// The entries in certification order.
    pub fn iter(&self) -> impl Iterator<Item = &CertifiedEntry> + '_ {
        self.order
            .values()
            .filter_map(|txid| self.entries.get(txid).map(|(_, entry)| entry))
    }

    /// Outputs created by waiting transactions and not spent by another waiting one.
    pub fn unspent_outputs(&self) -> impl Iterator<Item = (&OutPoint, &UtxoEntry)> + '_ {
        self.created
            .iter()
            .filter(|(outpoint, _)| !self.spent.contains_key(outpoint))
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
        let collateral = match entry.transaction.body.kind {
            TxKind::RegisterMasternode {
                collateral_output, ..
            } => Some(collateral_output),
            _ => None,
        };
        for (index, output) in (0u32..).zip(entry.transaction.body.outputs.iter()) {
            self.created.insert(
                OutPoint { txid, index },
                UtxoEntry {
                    output: *output,
                    height,
                    is_collateral: collateral == Some(index),
                },
            );
        }
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        self.order.insert(sequence, txid);
        self.entries.insert(txid, (sequence, entry));
    }

    /// Removes `txid`, returning its entry.
    pub fn remove(&mut self, txid: &Txid) -> Option<CertifiedEntry> {
        let (sequence, entry) = self.entries.remove(txid)?;
        self.order.remove(&sequence);
        for input in &entry.transaction.body.inputs {
            if self.spent.get(&input.prevout) == Some(txid) {
                self.spent.remove(&input.prevout);
            }
        }
        for index in 0..entry.transaction.body.outputs.len() as u32 {
            self.created.remove(&OutPoint { txid: *txid, index });
        }
        Some(entry)
    }
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
        if let Some(entry) = self.pool.created.get(outpoint) {
            return Ok(Some(*entry));
        }
        self.base.utxo(outpoint)
    }
}
