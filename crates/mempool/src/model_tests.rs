//! Model-based property tests: random sequences of inserts, removals and blocks applied both to
//! the pool and to a plain reference that scans a vector for every question, with the two
//! compared after each step.

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroUsize;

use proptest::prelude::*;
use timecoin_primitives::{Amount, Block, OutPoint, Transaction, Txid};

use crate::test_support::{block, confirmed, output, reward, transfer, units};
use crate::{FeeRate, Mempool, MempoolConfig, MempoolError, RemovalReason, Removed};

#[derive(Clone, Debug)]
struct ModelEntry {
    transaction: Transaction,
    txid: Txid,
    fee: u64,
    size: usize,
    sequence: u64,
}

impl ModelEntry {
    fn fee_rate(&self) -> FeeRate {
        FeeRate::new(units(self.fee), self.size).unwrap()
    }

    fn spends(&self, outpoint: &OutPoint) -> bool {
        self.transaction
            .body
            .inputs
            .iter()
            .any(|input| input.prevout == *outpoint)
    }

    fn spends_output_of(&self, txid: &Txid) -> bool {
        self.transaction
            .body
            .inputs
            .iter()
            .any(|input| input.prevout.txid == *txid)
    }
}

/// Whether `a` ranks above `b`: a higher fee rate, compared by cross-multiplication written out
/// here independently of [`FeeRate`], and the lower txid among equal rates.
fn ranks_above(a: &ModelEntry, b: &ModelEntry) -> bool {
    let left = u128::from(a.fee) * b.size as u128;
    let right = u128::from(b.fee) * a.size as u128;
    left > right || (left == right && a.txid < b.txid)
}

type Removals = BTreeMap<Txid, RemovalReason>;

struct Model {
    max_transactions: usize,
    max_bytes: usize,
    entries: Vec<ModelEntry>,
    next_sequence: u64,
}

impl Model {
    fn find(&self, txid: &Txid) -> Option<&ModelEntry> {
        self.entries.iter().find(|entry| entry.txid == *txid)
    }

    fn bytes(&self) -> usize {
        self.entries.iter().map(|entry| entry.size).sum()
    }

    /// Txids, highest rank first.
    fn ranked(&self) -> Vec<Txid> {
        let mut entries: Vec<&ModelEntry> = self.entries.iter().collect();
        entries.sort_by(|a, b| {
            if ranks_above(a, b) {
                std::cmp::Ordering::Less
            } else if ranks_above(b, a) {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        });
        entries.iter().map(|entry| entry.txid).collect()
    }

    /// All pooled descendants of `root` outside `excluded`, by repeating until nothing is added.
    fn descendants(&self, root: Txid, excluded: &Removals) -> BTreeSet<Txid> {
        let mut found = BTreeSet::from([root]);
        loop {
            let before = found.len();
            for entry in &self.entries {
                if !excluded.contains_key(&entry.txid)
                    && found
                        .iter()
                        .any(|ancestor| entry.spends_output_of(ancestor))
                {
                    found.insert(entry.txid);
                }
            }
            if found.len() == before {
                found.remove(&root);
                return found;
            }
        }
    }

    /// Marks `root` with `reason` and its descendants as removed with it.
    fn mark_tree(&self, root: Txid, reason: RemovalReason, removals: &mut Removals) {
        removals.insert(root, reason);
        for descendant in self.descendants(root, removals) {
            removals.insert(
                descendant,
                RemovalReason::AncestorRemoved { ancestor: root },
            );
        }
    }

    fn drop_removed(&mut self, removals: &Removals) {
        self.entries
            .retain(|entry| !removals.contains_key(&entry.txid));
    }

    /// Evictions needed for a newcomer of `size` (reasons name `admitted`), and the highest
    /// directly evicted rate.
    fn plan(&self, size: usize, admitted: Txid) -> (Removals, Option<FeeRate>) {
        let mut victims = Removals::new();
        let mut highest = None;
        loop {
            let remaining: Vec<&ModelEntry> = self
                .entries
                .iter()
                .filter(|entry| !victims.contains_key(&entry.txid))
                .collect();
            let bytes: usize = remaining.iter().map(|entry| entry.size).sum();
            if remaining.len() < self.max_transactions && bytes + size <= self.max_bytes {
                return (victims, highest);
            }
            let lowest = remaining
                .iter()
                .copied()
                .reduce(|low, entry| if ranks_above(low, entry) { entry } else { low })
                .expect("a transaction no larger than the limit fits in an empty pool");
            highest = Some(lowest.fee_rate());
            self.mark_tree(
                lowest.txid,
                RemovalReason::Evicted { admitted },
                &mut victims,
            );
        }
    }

    fn insert(&mut self, transaction: Transaction, fee: u64) -> Result<Removals, MempoolError> {
        let txid = transaction.txid();
        if transaction.is_reward() {
            return Err(MempoolError::RewardTransaction { txid });
        }
        if self.find(&txid).is_some() {
            return Err(MempoolError::AlreadyInPool { txid });
        }
        let inputs: Vec<OutPoint> = transaction.body.inputs.iter().map(|i| i.prevout).collect();
        for (position, outpoint) in inputs.iter().enumerate() {
            if inputs[..position].contains(outpoint) {
                return Err(MempoolError::DuplicateInput {
                    txid,
                    outpoint: *outpoint,
                });
            }
        }
        for outpoint in &inputs {
            if let Some(other) = self.entries.iter().find(|entry| entry.spends(outpoint)) {
                return Err(MempoolError::Conflict {
                    txid,
                    outpoint: *outpoint,
                    conflicting: other.txid,
                });
            }
        }
        let size = transaction.encoded_size();
        if size > self.max_bytes {
            return Err(MempoolError::TooLarge {
                txid,
                size_bytes: size,
                max_bytes: self.max_bytes,
            });
        }
        let (victims, highest) = self.plan(size, txid);
        if let Some(min_fee_rate) = highest {
            let fee_rate = FeeRate::new(units(fee), size).unwrap();
            if fee_rate <= min_fee_rate {
                return Err(MempoolError::PoolFull {
                    txid,
                    fee_rate,
                    min_fee_rate,
                });
            }
            if let Some(parent) = inputs.iter().find(|o| victims.contains_key(&o.txid)) {
                return Err(MempoolError::ParentWouldBeEvicted {
                    txid,
                    parent: parent.txid,
                });
            }
        }
        self.drop_removed(&victims);
        self.entries.push(ModelEntry {
            transaction,
            txid,
            fee,
            size,
            sequence: self.next_sequence,
        });
        self.next_sequence += 1;
        Ok(victims)
    }

    fn remove(&mut self, txid: Txid) -> Removals {
        let mut removals = Removals::new();
        if self.find(&txid).is_some() {
            self.mark_tree(txid, RemovalReason::Requested, &mut removals);
        }
        self.drop_removed(&removals);
        removals
    }

    fn remove_for_block(&mut self, block: &Block) -> Removals {
        let mut removals = Removals::new();
        for transaction in block.transactions.iter() {
            if self.find(&transaction.txid()).is_some() {
                removals.insert(transaction.txid(), RemovalReason::Included);
            }
        }
        for transaction in block.transactions.iter() {
            for input in transaction.body.inputs.iter() {
                let spender = self.entries.iter().find(|entry| {
                    !removals.contains_key(&entry.txid) && entry.spends(&input.prevout)
                });
                if let Some(spender) = spender {
                    let reason = RemovalReason::Conflict {
                        outpoint: input.prevout,
                        block_txid: transaction.txid(),
                    };
                    self.mark_tree(spender.txid, reason, &mut removals);
                }
            }
        }
        self.drop_removed(&removals);
        removals
    }

    /// Greedy selection, literally: the best-ranked transaction whose pooled parents are all
    /// taken, skipping what does not fit.
    fn select(&self, max_transactions: usize, max_bytes: usize) -> Vec<Txid> {
        let mut taken: Vec<Txid> = Vec::new();
        let mut skipped: BTreeSet<Txid> = BTreeSet::new();
        let mut bytes = 0;
        while taken.len() < max_transactions {
            let best = self
                .entries
                .iter()
                .filter(|entry| !taken.contains(&entry.txid) && !skipped.contains(&entry.txid))
                .filter(|entry| {
                    entry.transaction.body.inputs.iter().all(|input| {
                        self.find(&input.prevout.txid).is_none()
                            || taken.contains(&input.prevout.txid)
                    })
                })
                .reduce(|best, entry| {
                    if ranks_above(entry, best) {
                        entry
                    } else {
                        best
                    }
                });
            let Some(best) = best else { break };
            if bytes + best.size > max_bytes {
                skipped.insert(best.txid);
            } else {
                bytes += best.size;
                taken.push(best.txid);
            }
        }
        taken
    }
}

/// Where an input comes from: a made-up confirmed output, or an output of an earlier generated
/// transaction (pooled, rejected or removed alike: the pool cannot tell them apart).
#[derive(Clone, Copy, Debug)]
enum Source {
    Confirmed(u32),
    Generated { which: usize, index: u32 },
}

#[derive(Clone, Debug)]
enum Op {
    Insert {
        inputs: Vec<Source>,
        outputs: usize,
        fee: u64,
        nonce: u64,
    },
    InsertReward {
        height: u64,
    },
    Remove {
        pick: usize,
    },
    Block {
        include: Vec<usize>,
        foreign: Vec<Vec<Source>>,
    },
}

fn source() -> impl Strategy<Value = Source> {
    prop_oneof![
        1 => (0u32..8).prop_map(Source::Confirmed),
        2 => (any::<usize>(), 0u32..3).prop_map(|(which, index)| Source::Generated { which, index }),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (prop::collection::vec(source(), 1..4), 1usize..4, 0u64..2_000, 0u64..3)
            .prop_map(|(inputs, outputs, fee, nonce)| Op::Insert { inputs, outputs, fee, nonce }),
        1 => (0u64..3).prop_map(|height| Op::InsertReward { height }),
        2 => any::<usize>().prop_map(|pick| Op::Remove { pick }),
        2 => (
            prop::collection::vec(any::<usize>(), 0..3),
            prop::collection::vec(prop::collection::vec(source(), 1..3), 0..3),
        )
            .prop_map(|(include, foreign)| Op::Block { include, foreign }),
    ]
}

fn resolve(source: Source, history: &[Transaction]) -> OutPoint {
    match source {
        Source::Generated { which, index } if !history.is_empty() => {
            let parent = &history[which % history.len()];
            output(parent.txid(), index % parent.body.outputs.len() as u32)
        }
        Source::Generated { index, .. } => confirmed(index),
        Source::Confirmed(n) => confirmed(n),
    }
}

fn removals(removed: &[Removed]) -> Removals {
    let map: Removals = removed.iter().map(|r| (r.entry.txid(), r.reason)).collect();
    assert_eq!(
        map.len(),
        removed.len(),
        "a transaction reported removed twice"
    );
    map
}

fn compare(pool: &Mempool, model: &Model) {
    pool.check_invariants();
    assert_eq!(
        pool.txids().collect::<Vec<_>>(),
        model.ranked(),
        "contents or order"
    );
    assert_eq!(pool.len(), model.entries.len());
    assert_eq!(pool.bytes(), model.bytes());
    assert!(pool.len() <= model.max_transactions && pool.bytes() <= model.max_bytes);
    for expected in &model.entries {
        let entry = pool.entry(&expected.txid).expect("pooled");
        assert_eq!(entry.transaction(), &expected.transaction);
        assert_eq!(
            (entry.fee(), entry.size_bytes(), entry.sequence()),
            (units(expected.fee), expected.size, expected.sequence)
        );
    }
    let half = model.max_bytes / 2;
    for (max_transactions, max_bytes) in [
        (usize::MAX, usize::MAX),
        (3, usize::MAX),
        (usize::MAX, half),
    ] {
        let selected: Vec<Txid> = pool
            .select_for_block(max_transactions, max_bytes)
            .iter()
            .map(|e| e.txid())
            .collect();
        // Checked directly too, not only through the model: no child before a pooled parent.
        for (position, txid) in selected.iter().enumerate() {
            for input in pool.get(txid).unwrap().body.inputs.iter() {
                let parent = input.prevout.txid;
                assert!(!pool.contains(&parent) || selected[..position].contains(&parent));
            }
        }
        assert_eq!(
            selected,
            model.select(max_transactions, max_bytes),
            "selection"
        );
    }
    let probe_size = 200;
    if probe_size <= model.max_bytes {
        assert_eq!(
            pool.min_fee_rate_to_enter(probe_size),
            model.plan(probe_size, Txid::default()).1
        );
    }
}

fn run(max_transactions: usize, max_bytes: usize, ops: Vec<Op>) {
    let config = MempoolConfig {
        max_transactions: NonZeroUsize::new(max_transactions).unwrap(),
        max_bytes: NonZeroUsize::new(max_bytes).unwrap(),
    };
    let mut pool = Mempool::new(config);
    let mut model = Model {
        max_transactions,
        max_bytes,
        entries: Vec::new(),
        next_sequence: 0,
    };
    let mut history: Vec<Transaction> = Vec::new();
    for op in ops {
        match op {
            Op::Insert {
                inputs,
                outputs,
                fee,
                nonce,
            } => {
                let inputs: Vec<OutPoint> = inputs.iter().map(|s| resolve(*s, &history)).collect();
                let transaction = transfer(&inputs, outputs, nonce);
                history.push(transaction.clone());
                let expected = model.insert(transaction.clone(), fee);
                let actual = pool.insert(transaction, units(fee));
                match (actual, expected) {
                    (Ok(inserted), Ok(expected)) => {
                        assert_eq!(removals(&inserted.evicted), expected, "evictions");
                    }
                    (actual, expected) => {
                        assert_eq!(actual.map(|_| ()), expected.map(|_| ()), "insert result");
                    }
                }
            }
            Op::InsertReward { height } => {
                let expected = model.insert(reward(height), 0).map(|_| ());
                assert_eq!(
                    pool.insert(reward(height), Amount::ZERO).map(|_| ()),
                    expected
                );
            }
            Op::Remove { pick } => {
                let ranked = model.ranked();
                let txid = if ranked.is_empty() {
                    Txid::default()
                } else {
                    ranked[pick % ranked.len()]
                };
                let expected = model.remove(txid);
                assert_eq!(removals(&pool.remove(&txid)), expected, "remove");
            }
            Op::Block { include, foreign } => {
                let ranked = model.ranked();
                let mut transactions: Vec<Transaction> = Vec::new();
                if !ranked.is_empty() {
                    let mut picked: Vec<Txid> =
                        include.iter().map(|p| ranked[p % ranked.len()]).collect();
                    picked.sort();
                    picked.dedup();
                    transactions.extend(
                        picked
                            .iter()
                            .map(|t| model.find(t).unwrap().transaction.clone()),
                    );
                }
                for (n, inputs) in foreign.iter().enumerate() {
                    let inputs: Vec<OutPoint> =
                        inputs.iter().map(|s| resolve(*s, &history)).collect();
                    transactions.push(transfer(&inputs, 1, 100 + n as u64));
                }
                let block = block(transactions);
                let expected = model.remove_for_block(&block);
                assert_eq!(removals(&pool.remove_for_block(&block)), expected, "block");
            }
        }
        compare(&pool, &model);
    }
    // Emptying the pool must leave every index empty: `check_invariants` compares the conflict
    // index's size with the (now zero) number of pooled inputs.
    for txid in model.ranked() {
        pool.remove(&txid);
    }
    pool.check_invariants();
    assert!(pool.is_empty());
    assert_eq!((pool.bytes(), pool.info().usage_bytes), (0, 0));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn pool_matches_the_model(
        max_transactions in 1usize..8,
        max_bytes in 150usize..2_000,
        ops in prop::collection::vec(op(), 1..60),
    ) {
        run(max_transactions, max_bytes, ops);
    }

    #[test]
    fn roomy_pool_matches_the_model(ops in prop::collection::vec(op(), 1..80)) {
        run(64, 1_000_000, ops);
    }
}
