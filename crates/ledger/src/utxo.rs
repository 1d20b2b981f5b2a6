//! The UTXO set as the rules see it: a read view, a writable store, and an in-memory overlay.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use borsh::{BorshDeserialize, BorshSerialize};
use timecoin_primitives::{FastMap, Height, OutPoint, TxOut};

/// An unspent output and what the rules need to know about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, BorshSerialize, BorshDeserialize)]
pub struct UtxoEntry {
    /// The output.
    pub output: TxOut,
    /// The height of the block that created it.
    pub height: Height,
    /// Whether it is a masternode's collateral, which only a deregistration may spend.
    pub is_collateral: bool,
}

/// A failure of the storage behind a view. Not the peer's fault: the node must stop or retry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("UTXO storage failed: {0}")]
pub struct BackendError(pub String);

/// Read access to a UTXO set.
pub trait UtxoView {
    /// The unspent output at `outpoint`, or `None` if it does not exist or is spent.
    fn utxo(&self, outpoint: &OutPoint) -> Result<Option<UtxoEntry>, BackendError>;
}

/// Write access to a UTXO set.
pub trait UtxoStore: UtxoView {
    /// Adds an unspent output, replacing any at the same outpoint.
    fn insert_utxo(&mut self, outpoint: OutPoint, entry: UtxoEntry) -> Result<(), BackendError>;
    /// Adds an unspent output that the caller knows is not in the set: one created by a
    /// transaction with inputs, whose txid no other transaction can share (ADR 0017). A store
    /// that records what an insert replaces need not look the outpoint up; by default this is
    /// [`UtxoStore::insert_utxo`].
    fn insert_new_utxo(
        &mut self,
        outpoint: OutPoint,
        entry: UtxoEntry,
    ) -> Result<(), BackendError> {
        self.insert_utxo(outpoint, entry)
    }
    /// Removes an unspent output, returning it if it was there.
    fn remove_utxo(&mut self, outpoint: &OutPoint) -> Result<Option<UtxoEntry>, BackendError>;
}

impl<V: UtxoView + ?Sized> UtxoView for &V {
    fn utxo(&self, outpoint: &OutPoint) -> Result<Option<UtxoEntry>, BackendError> {
        (**self).utxo(outpoint)
    }
}

impl<V: UtxoView + ?Sized> UtxoView for &mut V {
    fn utxo(&self, outpoint: &OutPoint) -> Result<Option<UtxoEntry>, BackendError> {
        (**self).utxo(outpoint)
    }
}

impl<V: UtxoStore + ?Sized> UtxoStore for &mut V {
    fn insert_utxo(&mut self, outpoint: OutPoint, entry: UtxoEntry) -> Result<(), BackendError> {
        (**self).insert_utxo(outpoint, entry)
    }
    fn insert_new_utxo(
        &mut self,
        outpoint: OutPoint,
        entry: UtxoEntry,
    ) -> Result<(), BackendError> {
        (**self).insert_new_utxo(outpoint, entry)
    }
    fn remove_utxo(&mut self, outpoint: &OutPoint) -> Result<Option<UtxoEntry>, BackendError> {
        (**self).remove_utxo(outpoint)
    }
}

/// A plain in-memory UTXO set.
impl UtxoView for HashMap<OutPoint, UtxoEntry> {
    fn utxo(&self, outpoint: &OutPoint) -> Result<Option<UtxoEntry>, BackendError> {
        Ok(self.get(outpoint).copied())
    }
}

impl UtxoStore for HashMap<OutPoint, UtxoEntry> {
    fn insert_utxo(&mut self, outpoint: OutPoint, entry: UtxoEntry) -> Result<(), BackendError> {
        self.insert(outpoint, entry);
        Ok(())
    }
    fn remove_utxo(&mut self, outpoint: &OutPoint) -> Result<Option<UtxoEntry>, BackendError> {
        Ok(self.remove(outpoint))
    }
}

/// An in-memory overlay of changes over any [`UtxoView`]; the base is never written.
///
/// Reads fall through to the base unless the overlay knows better; writes stay in the overlay
/// until [`UtxoCache::into_changes`] hands them over, so a block can be validated and applied
/// speculatively and then either kept or dropped.
#[derive(Debug)]
pub struct UtxoCache<V> {
    base: V,
    /// `Some` for an output created (or re-created) here, `None` for one spent here.
    changes: FastMap<OutPoint, Option<UtxoEntry>>,
}

impl<V: UtxoView> UtxoCache<V> {
    /// An empty overlay over `base`.
    pub fn new(base: V) -> Self {
        UtxoCache {
            base,
            changes: FastMap::default(),
        }
    }

    /// The base view.
    pub fn base(&self) -> &V {
        &self.base
    }

    /// How many outpoints the overlay has changed.
    pub fn change_count(&self) -> usize {
        self.changes.len()
    }

    /// The changes (`None` = spent), for writing into the base; the base itself is returned too.
    pub fn into_changes(self) -> (V, FastMap<OutPoint, Option<UtxoEntry>>) {
        (self.base, self.changes)
    }
}

impl<S: UtxoStore> UtxoCache<S> {
    /// Writes the changes into the base (in outpoint order, so that fault injection is
    /// reproducible) and returns it. Pass `&mut store` as the base to keep the store.
    pub fn flush(self) -> Result<S, BackendError> {
        let (mut base, changes) = self.into_changes();
        let mut changes: Vec<_> = changes.into_iter().collect();
        changes.sort_unstable_by_key(|(outpoint, _)| *outpoint);
        for (outpoint, change) in changes {
            match change {
                Some(entry) => base.insert_utxo(outpoint, entry)?,
                None => {
                    base.remove_utxo(&outpoint)?;
                }
            }
        }
        Ok(base)
    }
}

impl<V: UtxoView> UtxoView for UtxoCache<V> {
    fn utxo(&self, outpoint: &OutPoint) -> Result<Option<UtxoEntry>, BackendError> {
        match self.changes.get(outpoint) {
            Some(change) => Ok(*change),
            None => self.base.utxo(outpoint),
        }
    }
}

impl<V: UtxoView> UtxoStore for UtxoCache<V> {
    fn insert_utxo(&mut self, outpoint: OutPoint, entry: UtxoEntry) -> Result<(), BackendError> {
        self.changes.insert(outpoint, Some(entry));
        Ok(())
    }

    fn remove_utxo(&mut self, outpoint: &OutPoint) -> Result<Option<UtxoEntry>, BackendError> {
        match self.changes.entry(*outpoint) {
            Entry::Occupied(mut slot) => Ok(slot.get_mut().take()),
            Entry::Vacant(slot) => {
                let existing = self.base.utxo(outpoint)?;
                if existing.is_some() {
                    slot.insert(None);
                }
                Ok(existing)
            }
        }
    }
}
