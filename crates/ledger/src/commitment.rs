//! The UTXO-set commitment: a homomorphic multiset hash (LtHash, as Solana uses for accounts).
//!
//! Each UTXO is expanded by BLAKE3's extendable output into 1,024 16-bit lanes; the set's state is
//! the lane-wise sum (mod 2^16) of its elements. Adding or removing a UTXO is one addition or
//! subtraction, so a block updates the commitment in time proportional to its own size, and the
//! result does not depend on the order of the updates: the incremental value always equals a
//! recomputation from scratch. The header carries a 32-byte BLAKE3 digest of the state.

use borsh::BorshSerialize;
use rayon::prelude::*;
use timecoin_primitives::hash::{Domain, Hash32};
use timecoin_primitives::{OutPoint, encode};

use crate::utxo::UtxoEntry;

/// Lanes in the state.
pub const LANES: usize = 1024;

/// The running multiset hash of a UTXO set.
#[derive(Clone, PartialEq, Eq)]
pub struct UtxoCommitment {
    lanes: Box<[u16; LANES]>,
}

impl Default for UtxoCommitment {
    fn default() -> Self {
        UtxoCommitment {
            lanes: Box::new([0; LANES]),
        }
    }
}

impl std::fmt::Debug for UtxoCommitment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "UtxoCommitment({})", self.digest())
    }
}

#[derive(BorshSerialize)]
struct Element<'a> {
    outpoint: &'a OutPoint,
    entry: &'a UtxoEntry,
}

fn expand(outpoint: &OutPoint, entry: &UtxoEntry) -> [u16; LANES] {
    let mut hasher = Domain::UtxoElement.hasher();
    hasher.update(&encode(&Element { outpoint, entry }));
    let mut bytes = [0u8; LANES * 2];
    hasher.finalize_xof().fill(&mut bytes);
    let mut lanes = [0u16; LANES];
    for (lane, pair) in lanes.iter_mut().zip(bytes.chunks_exact(2)) {
        *lane = u16::from_le_bytes([pair[0], pair[1]]);
    }
    lanes
}

impl UtxoCommitment {
    /// The commitment to the empty set.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Adds a UTXO to the set.
    pub fn insert(&mut self, outpoint: &OutPoint, entry: &UtxoEntry) {
        let element = expand(outpoint, entry);
        for (lane, value) in self.lanes.iter_mut().zip(element) {
            *lane = lane.wrapping_add(value);
        }
    }

    /// Removes a UTXO from the set. It must have been added with the same entry.
    pub fn remove(&mut self, outpoint: &OutPoint, entry: &UtxoEntry) {
        let element = expand(outpoint, entry);
        for (lane, value) in self.lanes.iter_mut().zip(element) {
            *lane = lane.wrapping_sub(value);
        }
    }

    /// Combines two disjoint sets' commitments, e.g. from parallel recomputation.
    pub fn combine(&mut self, other: &UtxoCommitment) {
        for (lane, value) in self.lanes.iter_mut().zip(other.lanes.iter()) {
            *lane = lane.wrapping_add(*value);
        }
    }

    /// Removes `removed` and adds `inserted` in one step, expanding the elements on all cores.
    /// The result equals calling [`UtxoCommitment::remove`] and [`UtxoCommitment::insert`] one
    /// by one, because lane arithmetic commutes; only the cost differs.
    pub fn update(
        &mut self,
        inserted: &[(OutPoint, UtxoEntry)],
        removed: &[(OutPoint, UtxoEntry)],
    ) {
        /// Below this many elements a thread hand-off costs more than it saves.
        const PARALLEL_THRESHOLD: usize = 64;
        // With a pool of one thread, handing work over would only add thread switches.
        if inserted.len() + removed.len() < PARALLEL_THRESHOLD || rayon::current_num_threads() < 2 {
            removed
                .iter()
                .for_each(|(outpoint, entry)| self.remove(outpoint, entry));
            inserted
                .iter()
                .for_each(|(outpoint, entry)| self.insert(outpoint, entry));
            return;
        }
        let signed = inserted
            .par_iter()
            .map(|item| (item, true))
            .chain(removed.par_iter().map(|item| (item, false)));
        let delta = signed
            .fold(
                UtxoCommitment::empty,
                |mut delta, ((outpoint, entry), add)| {
                    if add {
                        delta.insert(outpoint, entry);
                    } else {
                        delta.remove(outpoint, entry);
                    }
                    delta
                },
            )
            .reduce(UtxoCommitment::empty, |mut left, right| {
                left.combine(&right);
                left
            });
        self.combine(&delta);
    }

    /// The commitment of a whole set, from scratch.
    pub fn from_utxos<'a, I>(utxos: I) -> Self
    where
        I: IntoIterator<Item = (&'a OutPoint, &'a UtxoEntry)>,
    {
        let mut commitment = Self::empty();
        for (outpoint, entry) in utxos {
            commitment.insert(outpoint, entry);
        }
        commitment
    }

    /// The 32-byte digest that block headers carry.
    pub fn digest(&self) -> Hash32 {
        let mut hasher = Domain::UtxoCommitment.hasher();
        for lane in self.lanes.iter() {
            hasher.update(&lane.to_le_bytes());
        }
        Hash32(*hasher.finalize().as_bytes())
    }

    /// The full state, for storing beside the UTXO set.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.lanes
            .iter()
            .flat_map(|lane| lane.to_le_bytes())
            .collect()
    }

    /// The state from [`UtxoCommitment::to_bytes`], or `None` if the length is wrong.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != LANES * 2 {
            return None;
        }
        let mut commitment = Self::empty();
        for (lane, pair) in commitment.lanes.iter_mut().zip(bytes.chunks_exact(2)) {
            *lane = u16::from_le_bytes([pair[0], pair[1]]);
        }
        Some(commitment)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use timecoin_primitives::{Address, Amount, Hash32, Height, TxOut, Txid};

    fn element(i: u32) -> (OutPoint, UtxoEntry) {
        let outpoint = OutPoint {
            txid: Txid(Hash32([(i % 7) as u8; 32])),
            index: i,
        };
        let output = TxOut {
            amount: Amount::from_units(u64::from(i) + 1).unwrap(),
            address: Address(Hash32([3; 32])),
        };
        (
            outpoint,
            UtxoEntry {
                output,
                height: Height(u64::from(i)),
                is_collateral: i.is_multiple_of(5),
            },
        )
    }

    /// Large batches take the parallel path; it must equal one-by-one updates.
    #[test]
    fn batched_update_equals_one_by_one() {
        let existing: Vec<_> = (0..150).map(element).collect();
        let base = UtxoCommitment::from_utxos(existing.iter().map(|(o, e)| (o, e)));
        let removed = &existing[..100];
        let inserted: Vec<_> = (1_000..1_200).map(element).collect();
        for (inserted, removed) in [(&inserted[..], removed), (&inserted[..10], &removed[..5])] {
            let mut batched = base.clone();
            batched.update(inserted, removed);
            let mut single = base.clone();
            removed.iter().for_each(|(o, e)| single.remove(o, e));
            inserted.iter().for_each(|(o, e)| single.insert(o, e));
            assert_eq!(batched, single);
        }
        // And the result is the commitment of the resulting set.
        let mut updated = base.clone();
        updated.update(&inserted, removed);
        let remaining = existing[100..].iter().chain(&inserted).map(|(o, e)| (o, e));
        assert_eq!(updated, UtxoCommitment::from_utxos(remaining));
        assert_eq!(
            UtxoCommitment::from_bytes(&updated.to_bytes()),
            Some(updated)
        );
    }
}
