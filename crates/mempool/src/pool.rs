//! The pool itself.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::mem::size_of;
use std::num::NonZeroUsize;

use timecoin_primitives::{
    Amount, Block, FastMap, FastSet, OutPoint, Signature, Transaction, TxInput, TxKind, TxOut, Txid,
};

use crate::error::MempoolError;
use crate::fee_rate::FeeRate;

/// Default for [`MempoolConfig::max_transactions`].
pub const DEFAULT_MAX_TRANSACTIONS: usize = 10_000;
/// Default for [`MempoolConfig::max_bytes`]: 300 MB, as Bitcoin Core's `maxmempool`.
pub const DEFAULT_MAX_BYTES: usize = 300_000_000;

/// The pool's limits. Zero is not a limit, so the types rule it out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MempoolConfig {
    /// Most transactions held at once.
    pub max_transactions: NonZeroUsize,
    /// Most bytes held at once, counted as the sum of the transactions' canonical encoded sizes
    /// (the sizes fee rates are computed on). The memory actually used is somewhat larger; see
    /// [`MempoolInfo::usage_bytes`].
    pub max_bytes: NonZeroUsize,
}

impl Default for MempoolConfig {
    fn default() -> MempoolConfig {
        MempoolConfig {
            max_transactions: NonZeroUsize::new(DEFAULT_MAX_TRANSACTIONS).expect("not zero"),
            max_bytes: NonZeroUsize::new(DEFAULT_MAX_BYTES).expect("not zero"),
        }
    }
}

/// One pooled transaction and what the pool knows about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MempoolEntry {
    transaction: Transaction,
    txid: Txid,
    fee: Amount,
    size_bytes: usize,
    usage_bytes: usize,
    sequence: u64,
}

impl MempoolEntry {
    /// The transaction.
    pub fn transaction(&self) -> &Transaction {
        &self.transaction
    }

    /// Gives up the entry for its transaction.
    pub fn into_transaction(self) -> Transaction {
        self.transaction
    }

    /// The transaction's txid.
    pub fn txid(&self) -> Txid {
        self.txid
    }

    /// The fee the caller declared when inserting it (the pool cannot check it; see
    /// [`Mempool::insert`]).
    pub fn fee(&self) -> Amount {
        self.fee
    }

    /// The canonical encoded size.
    pub fn size_bytes(&self) -> usize {
        self.size_bytes
    }

    /// The fee rate: fee over encoded size.
    pub fn fee_rate(&self) -> FeeRate {
        FeeRate::new(self.fee, self.size_bytes).expect("an encoded transaction is never empty")
    }

    /// The pool's estimate of the memory the entry takes, indexes included.
    pub fn usage_bytes(&self) -> usize {
        self.usage_bytes
    }

    /// The order of arrival: each accepted transaction gets the next number, never reused, so
    /// a caller can tell which of two entries is newer (e.g. to relay only what is new).
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    fn priority_key(&self) -> PriorityKey {
        PriorityKey {
            fee_rate: self.fee_rate(),
            txid: self.txid,
        }
    }

    fn spent_outpoints(&self) -> impl Iterator<Item = OutPoint> + '_ {
        self.transaction
            .body
            .inputs
            .iter()
            .map(|input| input.prevout)
    }
}

/// The total order the pool keeps transactions in: by fee rate, and among equal rates the lower
/// txid ranks higher. Txids break ties because every node computes the same ones, so all nodes
/// evict and select alike; an arrival sequence number would differ from node to node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PriorityKey {
    fee_rate: FeeRate,
    txid: Txid,
}

impl Ord for PriorityKey {
    fn cmp(&self, other: &PriorityKey) -> Ordering {
        self.fee_rate
            .cmp(&other.fee_rate)
            .then_with(|| other.txid.cmp(&self.txid))
    }
}

impl PartialOrd for PriorityKey {
    fn partial_cmp(&self, other: &PriorityKey) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Why a transaction left the pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemovalReason {
    /// It is in the block passed to [`Mempool::remove_for_block`].
    Included,
    /// A transaction in the block spends one of the same outpoints, so this one can never be
    /// valid again.
    Conflict {
        /// The outpoint both spend.
        outpoint: OutPoint,
        /// The block's transaction that spends it.
        block_txid: Txid,
    },
    /// It had the lowest fee rate when the pool needed room for a better-paying transaction.
    Evicted {
        /// The transaction that was admitted in its place.
        admitted: Txid,
    },
    /// The caller asked for it with [`Mempool::remove`].
    Requested,
    /// It spends an output of `ancestor`, directly or through other pooled transactions, and
    /// `ancestor` was removed for a reason other than inclusion, so those outputs no longer exist.
    AncestorRemoved {
        /// The removed ancestor whose removal took this one with it.
        ancestor: Txid,
    },
}

/// A transaction that left the pool, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Removed {
    /// The entry as it was in the pool.
    pub entry: MempoolEntry,
    /// Why it left.
    pub reason: RemovalReason,
}

/// The result of a successful [`Mempool::insert`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inserted {
    /// The admitted transaction's txid.
    pub txid: Txid,
    /// What was evicted to make room for it (with the evicted transactions' descendants), in
    /// the order removed.
    pub evicted: Vec<Removed>,
}

/// Pool statistics, as Bitcoin Core's `getmempoolinfo` reports them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MempoolInfo {
    /// Transactions held (`size`).
    pub transactions: usize,
    /// Sum of their encoded sizes (`bytes`), the quantity bounded by `max_bytes`.
    pub bytes: usize,
    /// Estimated memory used, indexes included (`usage`). An estimate from the sizes of the
    /// pool's own types; allocator overhead is not measured, since the pool does no I/O.
    pub usage_bytes: usize,
    /// The byte limit (`maxmempool`).
    pub max_bytes: usize,
    /// The transaction-count limit.
    pub max_transactions: usize,
    /// The fee rate a transaction of the pool's average size must exceed to enter now
    /// (`mempoolminfee`); `None` while such a transaction fits without evicting anything.
    pub min_fee_rate: Option<FeeRate>,
}

/// A bounded pool of unconfirmed transactions, ordered by fee rate.
///
/// The pool is pure: no I/O, no clock, no randomness in any result, no threads. It trusts its
/// caller for everything that needs state it does not have:
///
/// * It never sees the UTXO set, so the caller passes each transaction's fee, computed while
///   validating the transaction against the UTXO set plus the outputs of pooled transactions.
/// * It never verifies signatures; the caller has done so.
///
/// What it does enforce: no reward transactions, no two pooled transactions spending one
/// outpoint, its count and byte limits, and removal of every transaction that can no longer be
/// valid once an ancestor is evicted, removed or conflicted by a block.
///
/// Transactions may spend outputs of other pooled transactions (TimeCoin finalizes chains of
/// payments between blocks). Such links are derived from the spent-outpoint index rather than
/// stored, so they cannot go stale whatever order parents and children arrive in.
#[derive(Clone, Debug)]
pub struct Mempool {
    config: MempoolConfig,
    /// Every pooled transaction, for O(1) lookup by txid. Never iterated where order matters:
    /// its order is random.
    entries: FastMap<Txid, MempoolEntry>,
    /// The same transactions in priority order, lowest first: the eviction order, and (reversed)
    /// the selection order.
    by_priority: BTreeSet<PriorityKey>,
    /// Which pooled transaction spends each outpoint: the conflict index, and (by range over a
    /// txid's outpoints) the children of a transaction.
    spent_by: BTreeMap<OutPoint, Txid>,
    total_bytes: usize,
    total_usage_bytes: usize,
    next_sequence: u64,
}

impl Mempool {
    /// An empty pool with the given limits.
    pub fn new(config: MempoolConfig) -> Mempool {
        Mempool {
            config,
            entries: FastMap::default(),
            by_priority: BTreeSet::new(),
            spent_by: BTreeMap::new(),
            total_bytes: 0,
            total_usage_bytes: 0,
            next_sequence: 0,
        }
    }

    /// The limits.
    pub fn config(&self) -> &MempoolConfig {
        &self.config
    }

    /// How many transactions are pooled.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the pool is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The sum of the pooled transactions' encoded sizes.
    pub fn bytes(&self) -> usize {
        self.total_bytes
    }

    /// Whether `txid` is pooled.
    pub fn contains(&self, txid: &Txid) -> bool {
        self.entries.contains_key(txid)
    }

    /// The pooled transaction `txid`.
    pub fn get(&self, txid: &Txid) -> Option<&Transaction> {
        self.entries.get(txid).map(MempoolEntry::transaction)
    }

    /// The entry for `txid`: the transaction with its fee, size, fee rate and sequence number.
    pub fn entry(&self, txid: &Txid) -> Option<&MempoolEntry> {
        self.entries.get(txid)
    }

    /// The pooled transaction spending `outpoint`, if any.
    pub fn spender_of(&self, outpoint: &OutPoint) -> Option<Txid> {
        self.spent_by.get(outpoint).copied()
    }

    /// The pooled txids, highest priority (fee rate) first.
    pub fn txids(&self) -> impl Iterator<Item = Txid> + '_ {
        self.by_priority.iter().rev().map(|key| key.txid)
    }

    /// The pooled entries, highest priority (fee rate) first.
    pub fn iter(&self) -> impl Iterator<Item = &MempoolEntry> + '_ {
        self.by_priority
            .iter()
            .rev()
            .map(|key| &self.entries[&key.txid])
    }

    /// Statistics for `getmempoolinfo`.
    pub fn info(&self) -> MempoolInfo {
        let average_size = self.total_bytes.div_ceil(self.len().max(1)).max(1);
        MempoolInfo {
            transactions: self.len(),
            bytes: self.total_bytes,
            usage_bytes: self.total_usage_bytes,
            max_bytes: self.config.max_bytes.get(),
            max_transactions: self.config.max_transactions.get(),
            min_fee_rate: self.min_fee_rate_to_enter(average_size),
        }
    }

    /// The fee rate a transaction of `size_bytes` must exceed to enter the pool now: the highest
    /// rate among the transactions that would be evicted to make room for it. `None` if it fits
    /// without evicting anything, or if it exceeds the byte limit and can never enter.
    pub fn min_fee_rate_to_enter(&self, size_bytes: usize) -> Option<FeeRate> {
        if size_bytes > self.config.max_bytes.get() {
            return None;
        }
        self.eviction_plan(size_bytes).highest_evicted_rate
    }

    /// Admits `transaction`, which pays `fee`, evicting lower-paying transactions if the pool is
    /// full.
    ///
    /// The caller must already have checked everything that needs chain state: the signatures,
    /// that every input exists in the UTXO set or among the outputs of pooled transactions, and
    /// that `fee` is the inputs' total minus the outputs' total. The pool takes `fee` on trust;
    /// a wrong fee only misorders this node's pool.
    ///
    /// When the pool is full, transactions are evicted lowest fee rate first, each with its
    /// pooled descendants, until the newcomer fits. It is rejected instead (and nothing is
    /// evicted) if its fee rate is not above every rate it would evict, since it would then be
    /// the next to go, or if it would evict its own parent.
    pub fn insert(
        &mut self,
        transaction: Transaction,
        fee: Amount,
    ) -> Result<Inserted, MempoolError> {
        let txid = transaction.txid();
        if transaction.is_reward() {
            return Err(MempoolError::RewardTransaction { txid });
        }
        if self.entries.contains_key(&txid) {
            return Err(MempoolError::AlreadyInPool { txid });
        }
        let mut spent =
            FastSet::with_capacity_and_hasher(transaction.body.inputs.len(), Default::default());
        for input in &transaction.body.inputs {
            if !spent.insert(input.prevout) {
                return Err(MempoolError::DuplicateInput {
                    txid,
                    outpoint: input.prevout,
                });
            }
        }
        for input in &transaction.body.inputs {
            if let Some(conflicting) = self.spent_by.get(&input.prevout) {
                return Err(MempoolError::Conflict {
                    txid,
                    outpoint: input.prevout,
                    conflicting: *conflicting,
                });
            }
        }
        let size_bytes = transaction.encoded_size();
        let max_bytes = self.config.max_bytes.get();
        if size_bytes > max_bytes {
            return Err(MempoolError::TooLarge {
                txid,
                size_bytes,
                max_bytes,
            });
        }
        let fee_rate =
            FeeRate::new(fee, size_bytes).expect("an encoded transaction is never empty");
        let plan = self.eviction_plan(size_bytes);
        if let Some(min_fee_rate) = plan.highest_evicted_rate {
            if fee_rate <= min_fee_rate {
                return Err(MempoolError::PoolFull {
                    txid,
                    fee_rate,
                    min_fee_rate,
                });
            }
            let victims: FastSet<Txid> = plan.victims.iter().map(|(victim, _)| *victim).collect();
            if let Some(parent) = transaction
                .body
                .inputs
                .iter()
                .map(|input| input.prevout.txid)
                .find(|parent| victims.contains(parent))
            {
                return Err(MempoolError::ParentWouldBeEvicted { txid, parent });
            }
        }

        let evicted = plan
            .victims
            .into_iter()
            .map(|(victim, ancestor)| Removed {
                entry: self.remove_entry(&victim),
                reason: match ancestor {
                    None => RemovalReason::Evicted { admitted: txid },
                    Some(ancestor) => RemovalReason::AncestorRemoved { ancestor },
                },
            })
            .collect();

        let entry = MempoolEntry {
            usage_bytes: estimated_usage_bytes(&transaction),
            transaction,
            txid,
            fee,
            size_bytes,
            sequence: self.next_sequence,
        };
        self.next_sequence += 1;
        for outpoint in entry.spent_outpoints() {
            self.spent_by.insert(outpoint, txid);
        }
        self.by_priority.insert(entry.priority_key());
        self.total_bytes += entry.size_bytes;
        self.total_usage_bytes += entry.usage_bytes;
        self.entries.insert(txid, entry);
        // The cheap part of `check_invariants`, on every insert of a debug build.
        debug_assert!(self.len() <= self.config.max_transactions.get());
        debug_assert!(self.total_bytes <= self.config.max_bytes.get());
        debug_assert_eq!(self.by_priority.len(), self.entries.len());
        Ok(Inserted { txid, evicted })
    }

    /// Removes `txid` and its pooled descendants (which spend outputs that will now never exist),
    /// e.g. when the node learns the transaction cannot become final. Returns what was removed,
    /// `txid` first; empty if `txid` is not pooled.
    pub fn remove(&mut self, txid: &Txid) -> Vec<Removed> {
        if !self.entries.contains_key(txid) {
            return Vec::new();
        }
        let mut removed = Vec::new();
        self.remove_with_descendants(*txid, RemovalReason::Requested, &mut removed);
        removed
    }

    /// Updates the pool for a block that has just been applied to the chain: removes the
    /// block's transactions (their descendants stay: the outputs they spend now exist on chain),
    /// then every pooled transaction that spends an outpoint the block spends, with its
    /// descendants. Returns what was removed, included transactions first, then conflicts in
    /// block order.
    pub fn remove_for_block(&mut self, block: &Block) -> Vec<Removed> {
        let block_txids = block.txids();
        let mut removed = Vec::new();
        for txid in &block_txids {
            if self.entries.contains_key(txid) {
                removed.push(Removed {
                    entry: self.remove_entry(txid),
                    reason: RemovalReason::Included,
                });
            }
        }
        for (transaction, block_txid) in block.transactions.iter().zip(&block_txids) {
            for input in &transaction.body.inputs {
                if let Some(spender) = self.spent_by.get(&input.prevout).copied() {
                    let reason = RemovalReason::Conflict {
                        outpoint: input.prevout,
                        block_txid: *block_txid,
                    };
                    self.remove_with_descendants(spender, reason, &mut removed);
                }
            }
        }
        removed
    }

    /// Up to `max_transactions` pooled transactions totalling at most `max_bytes`, for a block
    /// proposal: in an order where every pooled parent precedes its children, and otherwise
    /// highest fee rate first (ties by txid, as everywhere in the pool).
    ///
    /// Greedy: at each step it takes the highest-priority transaction whose pooled parents are
    /// all already taken; one that does not fit in the bytes left is skipped (with its
    /// descendants) and smaller ones are still tried. A child's fee does not lift its parent
    /// (no child-pays-for-parent).
    pub fn select_for_block(
        &self,
        max_transactions: usize,
        max_bytes: usize,
    ) -> Vec<&MempoolEntry> {
        let mut selected = Vec::new();
        let mut taken: FastSet<Txid> = FastSet::default();
        // Passed over by the priority walk because a parent was not yet taken.
        let mut waiting: FastSet<Txid> = FastSet::default();
        // Waiting transactions whose parents have since all been taken.
        let mut ready: BinaryHeap<PriorityKey> = BinaryHeap::new();
        let mut walk = self.by_priority.iter().rev().peekable();
        let mut bytes = 0usize;
        while selected.len() < max_transactions {
            while let Some(key) = walk.peek() {
                if self.parents_taken(&key.txid, &taken) {
                    break;
                }
                waiting.insert(key.txid);
                walk.next();
            }
            let from_ready = match (ready.peek(), walk.peek()) {
                (None, None) => break,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some(ready_key), Some(walk_key)) => ready_key > *walk_key,
            };
            let key = if from_ready {
                ready.pop().expect("peeked")
            } else {
                *walk.next().expect("peeked")
            };
            let entry = &self.entries[&key.txid];
            if entry.size_bytes > max_bytes - bytes {
                continue;
            }
            bytes += entry.size_bytes;
            taken.insert(key.txid);
            selected.push(entry);
            for child in self.children(&key.txid) {
                if waiting.contains(&child) && self.parents_taken(&child, &taken) {
                    waiting.remove(&child);
                    ready.push(self.entries[&child].priority_key());
                }
            }
        }
        selected
    }

    /// Panics unless every internal invariant holds: the indexes agree with the entries and
    /// with each other, the totals equal the sums, and the limits hold. Costs O(n log n) with
    /// hashing and encoding of every transaction, so it is for tests and debug builds, run after
    /// each operation.
    pub fn check_invariants(&self) {
        assert!(
            self.entries.len() <= self.config.max_transactions.get(),
            "count limit exceeded"
        );
        assert!(
            self.total_bytes <= self.config.max_bytes.get(),
            "byte limit exceeded"
        );
        assert_eq!(
            self.by_priority.len(),
            self.entries.len(),
            "priority index size"
        );
        let mut bytes = 0;
        let mut usage_bytes = 0;
        let mut inputs = 0;
        let mut sequences = FastSet::default();
        for (txid, entry) in &self.entries {
            assert_eq!(*txid, entry.txid, "entry filed under another txid");
            assert_eq!(
                entry.transaction.txid(),
                *txid,
                "stored txid is not the transaction's"
            );
            assert!(!entry.transaction.is_reward(), "reward transaction pooled");
            assert_eq!(
                entry.size_bytes,
                entry.transaction.encoded_size(),
                "stored size"
            );
            assert_eq!(
                entry.usage_bytes,
                estimated_usage_bytes(&entry.transaction),
                "usage"
            );
            assert!(
                self.by_priority.contains(&entry.priority_key()),
                "missing from priority index"
            );
            assert!(
                entry.sequence < self.next_sequence,
                "sequence number from the future"
            );
            assert!(sequences.insert(entry.sequence), "sequence number reused");
            for outpoint in entry.spent_outpoints() {
                assert_eq!(
                    self.spent_by.get(&outpoint),
                    Some(txid),
                    "conflict index for {outpoint}"
                );
                inputs += 1;
            }
            bytes += entry.size_bytes;
            usage_bytes += entry.usage_bytes;
        }
        // Every entry's inputs are in the index, so equal sizes mean nothing else is.
        assert_eq!(
            self.spent_by.len(),
            inputs,
            "stale entries in the conflict index"
        );
        assert_eq!(self.total_bytes, bytes, "byte total");
        assert_eq!(self.total_usage_bytes, usage_bytes, "usage total");
    }

    /// The transactions to evict, in order, so that one of `size_bytes` fits: each lowest-priority
    /// transaction (with `None`) followed by its pooled descendants (with `Some(it)`).
    fn eviction_plan(&self, size_bytes: usize) -> EvictionPlan {
        let max_transactions = self.config.max_transactions.get();
        let max_bytes = self.config.max_bytes.get();
        let mut plan = EvictionPlan {
            victims: Vec::new(),
            highest_evicted_rate: None,
        };
        let mut planned: FastSet<Txid> = FastSet::default();
        let mut count = self.len();
        let mut bytes = self.total_bytes;
        let mut lowest_first = self.by_priority.iter();
        while count + 1 > max_transactions || bytes + size_bytes > max_bytes {
            let Some(key) = lowest_first.next() else {
                break;
            };
            if planned.contains(&key.txid) {
                continue;
            }
            plan.highest_evicted_rate = Some(key.fee_rate);
            for (position, victim) in self
                .descendants_of(key.txid, &planned)
                .into_iter()
                .enumerate()
            {
                planned.insert(victim);
                count -= 1;
                bytes -= self.entries[&victim].size_bytes;
                plan.victims
                    .push((victim, (position > 0).then_some(key.txid)));
            }
        }
        plan
    }

    /// `root` and its pooled descendants not in `exclude`, each once, `root` first and every
    /// other one after one of its parents.
    fn descendants_of(&self, root: Txid, exclude: &FastSet<Txid>) -> Vec<Txid> {
        let mut seen = FastSet::from_iter([root]);
        let mut found = vec![root];
        let mut next = 0;
        while let Some(txid) = found.get(next).copied() {
            next += 1;
            for child in self.children(&txid) {
                if !exclude.contains(&child) && seen.insert(child) {
                    found.push(child);
                }
            }
        }
        found
    }

    fn remove_with_descendants(
        &mut self,
        root: Txid,
        reason: RemovalReason,
        removed: &mut Vec<Removed>,
    ) {
        for (position, txid) in self
            .descendants_of(root, &FastSet::default())
            .into_iter()
            .enumerate()
        {
            let reason = if position == 0 {
                reason
            } else {
                RemovalReason::AncestorRemoved { ancestor: root }
            };
            removed.push(Removed {
                entry: self.remove_entry(&txid),
                reason,
            });
        }
    }

    /// The pooled transactions spending an output of `txid`; one spending several appears once
    /// for each.
    fn children(&self, txid: &Txid) -> impl Iterator<Item = Txid> + '_ {
        let first = OutPoint {
            txid: *txid,
            index: 0,
        };
        let last = OutPoint {
            txid: *txid,
            index: u32::MAX,
        };
        self.spent_by
            .range(first..=last)
            .map(|(_, spender)| *spender)
    }

    fn parents_taken(&self, txid: &Txid, taken: &FastSet<Txid>) -> bool {
        self.entries[txid].spent_outpoints().all(|outpoint| {
            !self.entries.contains_key(&outpoint.txid) || taken.contains(&outpoint.txid)
        })
    }

    /// Removes one entry from every index. Leaves its descendants: the callers decide their fate.
    fn remove_entry(&mut self, txid: &Txid) -> MempoolEntry {
        let entry = self
            .entries
            .remove(txid)
            .expect("removing a pooled transaction");
        for outpoint in entry.spent_outpoints() {
            self.spent_by.remove(&outpoint);
        }
        self.by_priority.remove(&entry.priority_key());
        self.total_bytes -= entry.size_bytes;
        self.total_usage_bytes -= entry.usage_bytes;
        debug_assert_eq!(self.by_priority.len(), self.entries.len());
        entry
    }
}

struct EvictionPlan {
    /// Each victim, with the directly evicted transaction whose descendant it is (`None` for a
    /// directly evicted one).
    victims: Vec<(Txid, Option<Txid>)>,
    /// The highest fee rate among the directly evicted, i.e. the rate a newcomer must beat.
    highest_evicted_rate: Option<FeeRate>,
}

/// Memory an entry takes, estimated from the sizes of the types involved so that the figure is
/// deterministic: the entry itself, its transaction's heap data, and its index records.
fn estimated_usage_bytes(transaction: &Transaction) -> usize {
    // Hash-map slot (key and entry) and priority-index key; allocator and node overheads are
    // not modelled.
    const ENTRY: usize = size_of::<Txid>() + size_of::<MempoolEntry>() + size_of::<PriorityKey>();
    // One conflict-index record per input.
    const INPUT_INDEX: usize = size_of::<OutPoint>() + size_of::<Txid>();
    let body = &transaction.body;
    let network_address = match &body.kind {
        TxKind::RegisterMasternode {
            network_address, ..
        } => network_address.len(),
        _ => 0,
    };
    ENTRY
        + body.inputs.len() * (size_of::<TxInput>() + INPUT_INDEX)
        + body.outputs.len() * size_of::<TxOut>()
        + transaction.signatures.len() * size_of::<Signature>()
        + network_address
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{block, confirmed, output, reward, transfer, units};

    fn config(max_transactions: usize, max_bytes: usize) -> MempoolConfig {
        MempoolConfig {
            max_transactions: NonZeroUsize::new(max_transactions).unwrap(),
            max_bytes: NonZeroUsize::new(max_bytes).unwrap(),
        }
    }

    fn pool(max_transactions: usize, max_bytes: usize) -> Mempool {
        Mempool::new(config(max_transactions, max_bytes))
    }

    /// Inserts and checks the invariants, returning the txid.
    fn add(pool: &mut Mempool, transaction: Transaction, fee: u64) -> Txid {
        let result = pool.insert(transaction, units(fee));
        pool.check_invariants();
        result.unwrap().txid
    }

    fn reasons(removed: &[Removed]) -> Vec<(Txid, RemovalReason)> {
        removed
            .iter()
            .map(|removed| (removed.entry.txid(), removed.reason))
            .collect()
    }

    #[test]
    fn default_limits() {
        let config = MempoolConfig::default();
        assert_eq!(config.max_transactions.get(), 10_000);
        assert_eq!(config.max_bytes.get(), 300_000_000);
    }

    #[test]
    fn accepts_and_looks_up() {
        let mut pool = pool(10, 100_000);
        let transaction = transfer(&[confirmed(1)], 2, 0);
        let size = transaction.encoded_size();
        let txid = add(&mut pool, transaction.clone(), 500);
        assert_eq!(pool.len(), 1);
        assert!(!pool.is_empty());
        assert_eq!(pool.bytes(), size);
        assert!(pool.contains(&txid));
        assert_eq!(pool.get(&txid), Some(&transaction));
        let entry = pool.entry(&txid).unwrap();
        assert_eq!(entry.txid(), txid);
        assert_eq!(entry.fee(), units(500));
        assert_eq!(entry.size_bytes(), size);
        assert_eq!(entry.fee_rate(), FeeRate::new(units(500), size).unwrap());
        assert_eq!(entry.sequence(), 0);
        assert_eq!(pool.spender_of(&confirmed(1)), Some(txid));
        assert_eq!(pool.spender_of(&confirmed(2)), None);
        let second = add(&mut pool, transfer(&[confirmed(2)], 1, 0), 1);
        assert_eq!(pool.entry(&second).unwrap().sequence(), 1);
        assert_eq!(pool.txids().collect::<Vec<_>>(), vec![txid, second]);
    }

    #[test]
    fn rejects_reward_transactions() {
        let mut pool = pool(10, 100_000);
        let error = pool.insert(reward(5), units(0)).unwrap_err();
        assert_eq!(
            error,
            MempoolError::RewardTransaction {
                txid: reward(5).txid()
            }
        );
        assert!(error.is_sender_fault());
        assert!(pool.is_empty());
        pool.check_invariants();
    }

    #[test]
    fn rejects_a_transaction_already_pooled() {
        let mut pool = pool(10, 100_000);
        let txid = add(&mut pool, transfer(&[confirmed(1)], 1, 0), 10);
        let error = pool
            .insert(transfer(&[confirmed(1)], 1, 0), units(10))
            .unwrap_err();
        assert_eq!(error, MempoolError::AlreadyInPool { txid });
        assert!(!error.is_sender_fault());
        pool.check_invariants();
    }

    #[test]
    fn rejects_a_transaction_spending_one_outpoint_twice() {
        let mut pool = pool(10, 100_000);
        let transaction = transfer(&[confirmed(1), confirmed(2), confirmed(1)], 1, 0);
        let error = pool.insert(transaction.clone(), units(10)).unwrap_err();
        assert_eq!(
            error,
            MempoolError::DuplicateInput {
                txid: transaction.txid(),
                outpoint: confirmed(1)
            }
        );
        assert!(error.is_sender_fault());
        assert!(pool.is_empty());
        pool.check_invariants();
    }

    #[test]
    fn rejects_a_double_spend_naming_the_pooled_spender() {
        let mut pool = pool(10, 100_000);
        let first = add(&mut pool, transfer(&[confirmed(1), confirmed(2)], 1, 0), 10);
        let double_spend = transfer(&[confirmed(3), confirmed(2)], 1, 0);
        // A higher fee does not matter: the first spend stays.
        let error = pool
            .insert(double_spend.clone(), units(1_000_000))
            .unwrap_err();
        assert_eq!(
            error,
            MempoolError::Conflict {
                txid: double_spend.txid(),
                outpoint: confirmed(2),
                conflicting: first,
            }
        );
        assert!(!error.is_sender_fault());
        let message = error.to_string();
        assert!(
            message.contains(&first.to_string()) && message.contains(&confirmed(2).to_string())
        );
        assert_eq!(pool.len(), 1);
        assert_eq!(pool.spender_of(&confirmed(3)), None);
        pool.check_invariants();
    }

    #[test]
    fn rejects_a_transaction_larger_than_the_pool() {
        let transaction = transfer(&[confirmed(1)], 3, 0);
        let size = transaction.encoded_size();
        let mut pool = pool(10, size - 1);
        let error = pool.insert(transaction.clone(), units(10)).unwrap_err();
        assert_eq!(
            error,
            MempoolError::TooLarge {
                txid: transaction.txid(),
                size_bytes: size,
                max_bytes: size - 1
            }
        );
        assert_eq!(pool.min_fee_rate_to_enter(size), None);
        pool.check_invariants();
    }

    #[test]
    fn full_pool_evicts_the_lowest_fee_rate() {
        let mut pool = pool(3, 100_000);
        let low = add(&mut pool, transfer(&[confirmed(1)], 1, 0), 100);
        let middle = add(&mut pool, transfer(&[confirmed(2)], 1, 0), 200);
        let high = add(&mut pool, transfer(&[confirmed(3)], 1, 0), 300);
        let inserted = pool
            .insert(transfer(&[confirmed(4)], 1, 0), units(250))
            .unwrap();
        pool.check_invariants();
        assert_eq!(
            reasons(&inserted.evicted),
            vec![(
                low,
                RemovalReason::Evicted {
                    admitted: inserted.txid
                }
            )]
        );
        assert_eq!(
            pool.txids().collect::<Vec<_>>(),
            vec![high, inserted.txid, middle]
        );
        assert_eq!(pool.spender_of(&confirmed(1)), None);
    }

    #[test]
    fn full_pool_rejects_a_rate_not_above_the_lowest() {
        let mut pool = pool(2, 100_000);
        add(&mut pool, transfer(&[confirmed(1)], 1, 0), 100);
        add(&mut pool, transfer(&[confirmed(2)], 1, 0), 300);
        let lowest = pool.iter().last().unwrap().fee_rate();
        // Same size and same fee: equal rate, so it would be the next to go.
        let equal = transfer(&[confirmed(3)], 1, 0);
        let error = pool.insert(equal.clone(), units(100)).unwrap_err();
        assert_eq!(
            error,
            MempoolError::PoolFull {
                txid: equal.txid(),
                fee_rate: FeeRate::new(units(100), equal.encoded_size()).unwrap(),
                min_fee_rate: lowest,
            }
        );
        assert!(!error.is_sender_fault());
        assert_eq!(pool.len(), 2);
        assert_eq!(pool.info().min_fee_rate, Some(lowest));
        add(&mut pool, equal, 101);
        assert_eq!(pool.len(), 2);
    }

    #[test]
    fn full_pool_by_bytes_evicts_until_the_newcomer_fits() {
        let small = transfer(&[confirmed(1)], 1, 0).encoded_size();
        let big = transfer(&[confirmed(9), confirmed(10)], 1, 0);
        let mut pool = pool(100, 3 * small + 10);
        let first = add(&mut pool, transfer(&[confirmed(1)], 1, 0), 10);
        let second = add(&mut pool, transfer(&[confirmed(2)], 1, 0), 20);
        let third = add(&mut pool, transfer(&[confirmed(3)], 1, 0), 5000);
        assert!(big.encoded_size() > small + 10 && big.encoded_size() <= 2 * small + 10);
        // It must beat the highest rate it evicts (the second), not just the lowest.
        let needed = pool.min_fee_rate_to_enter(big.encoded_size()).unwrap();
        assert_eq!(needed, pool.entry(&second).unwrap().fee_rate());
        let just_below = 20 * big.encoded_size() as u64 / small as u64;
        assert!(matches!(
            pool.insert(big.clone(), units(just_below)),
            Err(MempoolError::PoolFull { min_fee_rate, .. }) if min_fee_rate == needed
        ));
        pool.check_invariants();
        let inserted = pool.insert(big, units(10_000)).unwrap();
        pool.check_invariants();
        let admitted = inserted.txid;
        assert_eq!(
            reasons(&inserted.evicted),
            vec![
                (first, RemovalReason::Evicted { admitted }),
                (second, RemovalReason::Evicted { admitted })
            ]
        );
        assert_eq!(pool.txids().collect::<Vec<_>>(), vec![admitted, third]);
    }

    #[test]
    fn eviction_takes_descendants_even_well_paying_ones() {
        let mut pool = pool(4, 100_000);
        let parent = add(&mut pool, transfer(&[confirmed(1)], 2, 0), 10);
        let child = add(&mut pool, transfer(&[output(parent, 0)], 1, 0), 10_000);
        let grandchild = add(
            &mut pool,
            transfer(&[output(child, 0), output(parent, 1)], 1, 0),
            10_000,
        );
        let other = add(&mut pool, transfer(&[confirmed(2)], 1, 0), 500);
        let inserted = pool
            .insert(transfer(&[confirmed(3)], 1, 0), units(400))
            .unwrap();
        pool.check_invariants();
        assert_eq!(
            reasons(&inserted.evicted),
            vec![
                (
                    parent,
                    RemovalReason::Evicted {
                        admitted: inserted.txid
                    }
                ),
                (child, RemovalReason::AncestorRemoved { ancestor: parent }),
                (
                    grandchild,
                    RemovalReason::AncestorRemoved { ancestor: parent }
                ),
            ]
        );
        assert_eq!(pool.txids().collect::<Vec<_>>(), vec![other, inserted.txid]);
    }

    #[test]
    fn rejects_a_child_whose_parent_would_be_evicted() {
        let mut pool = pool(2, 100_000);
        let parent = add(&mut pool, transfer(&[confirmed(1)], 1, 0), 10);
        add(&mut pool, transfer(&[confirmed(2)], 1, 0), 500);
        let child = transfer(&[output(parent, 0)], 1, 0);
        let error = pool.insert(child.clone(), units(10_000)).unwrap_err();
        assert_eq!(
            error,
            MempoolError::ParentWouldBeEvicted {
                txid: child.txid(),
                parent
            }
        );
        assert_eq!(pool.len(), 2);
        pool.check_invariants();
    }

    #[test]
    fn remove_takes_descendants() {
        let mut pool = pool(10, 100_000);
        let parent = add(&mut pool, transfer(&[confirmed(1)], 1, 0), 10);
        let child = add(&mut pool, transfer(&[output(parent, 0)], 1, 0), 10);
        let unrelated = add(&mut pool, transfer(&[confirmed(2)], 1, 0), 10);
        assert!(pool.remove(&Txid::default()).is_empty());
        let removed = pool.remove(&parent);
        pool.check_invariants();
        assert_eq!(
            reasons(&removed),
            vec![
                (parent, RemovalReason::Requested),
                (child, RemovalReason::AncestorRemoved { ancestor: parent })
            ]
        );
        assert_eq!(
            removed[0].entry.transaction(),
            &transfer(&[confirmed(1)], 1, 0)
        );
        assert_eq!(pool.txids().collect::<Vec<_>>(), vec![unrelated]);
        // Removing a child leaves its parent.
        let parent = add(&mut pool, transfer(&[confirmed(1)], 1, 0), 10);
        let child = add(&mut pool, transfer(&[output(parent, 0)], 1, 0), 10);
        assert_eq!(
            reasons(&pool.remove(&child)),
            vec![(child, RemovalReason::Requested)]
        );
        assert!(pool.contains(&parent));
        pool.check_invariants();
    }

    #[test]
    fn block_removes_included_and_conflicting_transactions() {
        let mut pool = pool(10, 100_000);
        let included = transfer(&[confirmed(1)], 2, 0);
        let included_txid = add(&mut pool, included.clone(), 10);
        let child_of_included = add(&mut pool, transfer(&[output(included_txid, 0)], 1, 0), 10);
        let loser = add(&mut pool, transfer(&[confirmed(2), confirmed(3)], 1, 0), 10);
        let child_of_loser = add(&mut pool, transfer(&[output(loser, 0)], 1, 0), 10);
        let unrelated = add(&mut pool, transfer(&[confirmed(4)], 1, 0), 10);
        let winner = transfer(&[confirmed(3)], 1, 7);
        let removed = pool.remove_for_block(&block(vec![included, winner.clone()]));
        pool.check_invariants();
        assert_eq!(
            reasons(&removed),
            vec![
                (included_txid, RemovalReason::Included),
                (
                    loser,
                    RemovalReason::Conflict {
                        outpoint: confirmed(3),
                        block_txid: winner.txid()
                    }
                ),
                (
                    child_of_loser,
                    RemovalReason::AncestorRemoved { ancestor: loser }
                ),
            ]
        );
        let mut left = pool.txids().collect::<Vec<_>>();
        left.sort();
        let mut expected = vec![child_of_included, unrelated];
        expected.sort();
        assert_eq!(left, expected);
        assert_eq!(pool.spender_of(&confirmed(2)), None);
        assert!(pool.remove_for_block(&block(vec![])).is_empty());
    }

    #[test]
    fn selection_puts_parents_first_and_otherwise_follows_fee_rate() {
        let mut pool = pool(10, 100_000);
        let parent = add(&mut pool, transfer(&[confirmed(1)], 1, 0), 10);
        let child = add(&mut pool, transfer(&[output(parent, 0)], 1, 0), 1000);
        let high = add(&mut pool, transfer(&[confirmed(2)], 1, 0), 500);
        let middle = add(&mut pool, transfer(&[confirmed(3)], 1, 0), 50);
        let txids =
            |selected: Vec<&MempoolEntry>| selected.iter().map(|e| e.txid()).collect::<Vec<_>>();
        assert_eq!(
            txids(pool.select_for_block(10, usize::MAX)),
            vec![high, middle, parent, child]
        );
        assert_eq!(
            txids(pool.select_for_block(2, usize::MAX)),
            vec![high, middle]
        );
        assert!(pool.select_for_block(0, usize::MAX).is_empty());
        // A transaction that does not fit is skipped with its children; smaller ones still go in.
        let size = pool.entry(&high).unwrap().size_bytes();
        let inputs: Vec<OutPoint> = (4..10).map(confirmed).collect();
        let big = add(&mut pool, transfer(&inputs, 8, 0), 100_000);
        assert!(pool.entry(&big).unwrap().size_bytes() > 4 * size);
        assert_eq!(
            txids(pool.select_for_block(10, 4 * size)),
            vec![high, middle, parent, child]
        );
        assert_eq!(txids(pool.select_for_block(10, usize::MAX))[0], big);
        assert_eq!(txids(pool.select_for_block(10, size - 1)), vec![]);
    }

    #[test]
    fn a_child_arriving_before_its_parent_still_follows_it() {
        let mut pool = pool(10, 100_000);
        let parent = transfer(&[confirmed(1)], 1, 0);
        let child = add(&mut pool, transfer(&[output(parent.txid(), 0)], 1, 0), 1000);
        let parent = add(&mut pool, parent, 1);
        let order: Vec<_> = pool
            .select_for_block(10, usize::MAX)
            .iter()
            .map(|e| e.txid())
            .collect();
        assert_eq!(order, vec![parent, child]);
        assert_eq!(pool.remove(&parent).len(), 2);
        pool.check_invariants();
    }

    #[test]
    fn equal_rates_are_ordered_by_txid() {
        let mut pool = pool(10, 100_000);
        let txids: Vec<Txid> = (0..5)
            .map(|n| add(&mut pool, transfer(&[confirmed(n)], 1, 0), 100))
            .collect();
        let mut expected = txids.clone();
        expected.sort();
        assert_eq!(pool.txids().collect::<Vec<_>>(), expected);
        // Eviction takes the highest txid among equal rates: the lowest priority.
        let mut full = Mempool::new(config(5, 100_000));
        for txid in &txids {
            let entry = pool.entry(txid).unwrap();
            full.insert(entry.transaction().clone(), entry.fee())
                .unwrap();
        }
        let victim = *expected.last().unwrap();
        let inserted = full
            .insert(transfer(&[confirmed(99)], 1, 0), units(101))
            .unwrap();
        assert_eq!(
            reasons(&inserted.evicted),
            vec![(
                victim,
                RemovalReason::Evicted {
                    admitted: inserted.txid
                }
            )]
        );
        full.check_invariants();
    }

    #[test]
    fn indexes_shrink_back_to_empty() {
        let mut pool = pool(50, 1_000_000);
        let mut parents = Vec::new();
        for round in 0..400u32 {
            let fee = u64::from(round % 97) + 1;
            let transaction = match parents.last() {
                Some(parent) if round % 3 == 0 => {
                    transfer(&[output(*parent, 0)], 1, u64::from(round))
                }
                _ => transfer(&[confirmed(round)], 2, 0),
            };
            if let Ok(inserted) = pool.insert(transaction, units(fee)) {
                parents.push(inserted.txid);
            }
            pool.check_invariants();
            if round % 50 == 49 {
                let winner = transfer(&[confirmed(round - 5)], 1, 1);
                pool.remove_for_block(&block(vec![winner]));
                pool.check_invariants();
            }
        }
        assert_eq!(pool.len(), 50);
        let all: Vec<Txid> = pool.txids().collect();
        for txid in all {
            pool.remove(&txid);
            pool.check_invariants();
        }
        assert!(pool.is_empty());
        assert!(pool.spent_by.is_empty() && pool.by_priority.is_empty() && pool.entries.is_empty());
        assert_eq!((pool.bytes(), pool.info().usage_bytes), (0, 0));
    }

    #[test]
    fn info_reports_totals_and_the_entry_rate() {
        let mut pool = pool(2, 100_000);
        assert_eq!(
            pool.info(),
            MempoolInfo {
                transactions: 0,
                bytes: 0,
                usage_bytes: 0,
                max_bytes: 100_000,
                max_transactions: 2,
                min_fee_rate: None,
            }
        );
        let first = add(&mut pool, transfer(&[confirmed(1)], 1, 0), 10);
        assert_eq!(pool.info().min_fee_rate, None);
        add(&mut pool, transfer(&[confirmed(2)], 1, 0), 20);
        let info = pool.info();
        assert_eq!(info.transactions, 2);
        assert_eq!(
            info.bytes,
            pool.iter().map(MempoolEntry::size_bytes).sum::<usize>()
        );
        assert!(info.usage_bytes > info.bytes);
        assert_eq!(
            info.min_fee_rate,
            Some(pool.entry(&first).unwrap().fee_rate())
        );
    }

    #[test]
    fn error_messages_say_what_to_do() {
        let txid = Txid::default();
        let rate = FeeRate::new(units(1), 1).unwrap();
        let errors = [
            MempoolError::RewardTransaction { txid },
            MempoolError::AlreadyInPool { txid },
            MempoolError::DuplicateInput {
                txid,
                outpoint: confirmed(1),
            },
            MempoolError::Conflict {
                txid,
                outpoint: confirmed(1),
                conflicting: txid,
            },
            MempoolError::TooLarge {
                txid,
                size_bytes: 2,
                max_bytes: 1,
            },
            MempoolError::PoolFull {
                txid,
                fee_rate: rate,
                min_fee_rate: rate,
            },
            MempoolError::ParentWouldBeEvicted { txid, parent: txid },
        ];
        for error in errors {
            assert_eq!(error.txid(), txid);
            assert!(error.to_string().contains(&txid.to_string()), "{error}");
        }
    }
}
