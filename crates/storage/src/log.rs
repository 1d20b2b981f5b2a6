//! The consensus log on disk: each durable batch is appended as one entry, and every live
//! record is indexed in memory (ADR 0021).
//!
//! A masternode logs two input locks per payment it votes for, under keys that are as random as
//! outpoints. Stored one record per key, every group commit rewrote about one B-tree page per
//! lock; appended as one entry per batch, it writes the few pages at the end of the table. The
//! write-once check (a key must never get a second, different value) reads the index instead of
//! the table.

use std::collections::{BTreeMap, HashMap};

use borsh::{BorshDeserialize, BorshSerialize};
use timecoin_primitives::{BoundedBytes, Epoch, Hash32, Height, OutPoint, Txid, decode, encode};

use crate::backend::{KvBackend, Table, WriteBatch};
use crate::error::{Result, corrupt};
use crate::types::{ConsensusRecord, LogKey, MAX_CONSENSUS_RECORD_BYTES};

/// Most records in one entry: a batch larger than this is split over several entries of the
/// same commit, so that no value grows past a few hundred kilobytes for small records.
const RECORDS_PER_ENTRY: usize = 4096;

/// First byte of an entry's key. Records of the old layout, one per key, start with 0 (block
/// votes) or 1 (input locks), so entries sort after them.
const ENTRY_PREFIX: u8 = 2;

/// Entries read per scan at open: entries are up to a few hundred kilobytes.
const LOAD_CHUNK: usize = 256;

/// Meta key of the prune thresholds: an entry outlives the records pruned from it while it
/// still holds live ones, and those must not come back at the next open.
pub(crate) const PRUNED_META_KEY: &[u8] = b"consensus_log_pruned";

/// One appended batch: (encoded [`LogKey`], value) pairs.
#[derive(BorshSerialize, BorshDeserialize)]
struct Entry {
    records: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Block votes below `votes_below` and input locks of epochs before `locks_below` are pruned.
#[derive(BorshSerialize, BorshDeserialize, Clone, Copy, Default, PartialEq, Eq, Debug)]
struct Pruned {
    votes_below: u64,
    locks_below: u64,
}

impl Pruned {
    fn covers(&self, key: &LogKey) -> bool {
        match key {
            LogKey::BlockVote { height, .. } => height.0 < self.votes_below,
            LogKey::InputLock { epoch, .. } => epoch.0 < self.locks_below,
        }
    }
}

struct Logged {
    value: BoundedBytes<MAX_CONSENSUS_RECORD_BYTES>,
    entry: u64,
}

/// What [`LogIndex::append`] wrote into a batch, to be taken into the index once the batch is
/// committed.
pub(crate) struct Appended {
    records: Vec<(ConsensusRecord, u64)>,
    entries: Vec<(u64, u32)>,
}

/// Every live record of the consensus log, and which entry holds it.
#[derive(Default)]
pub(crate) struct LogIndex {
    records: BTreeMap<LogKey, Logged>,
    /// Live records per entry; an entry is deleted when its count reaches zero.
    live: HashMap<u64, u32>,
    next_entry: u64,
    pruned: Pruned,
}

fn entry_key(sequence: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(9);
    key.push(ENTRY_PREFIX);
    key.extend_from_slice(&sequence.to_be_bytes());
    key
}

fn record_value(bytes: Vec<u8>) -> Result<BoundedBytes<MAX_CONSENSUS_RECORD_BYTES>> {
    BoundedBytes::new(bytes).map_err(|_| corrupt("a consensus record is too long"))
}

fn lock_key(epoch: Epoch) -> LogKey {
    LogKey::InputLock {
        epoch,
        outpoint: OutPoint {
            txid: Txid(Hash32::ZERO),
            index: 0,
        },
    }
}

fn vote_key(height: Height) -> LogKey {
    LogKey::BlockVote {
        height,
        view: 0,
        phase: 0,
    }
}

impl LogIndex {
    /// Reads the log: the prune thresholds, then every entry, keeping the records they do not
    /// cover. The returned batch (to be committed before the store is used) moves records of
    /// the old one-per-key layout into an entry and deletes entries with no live record.
    pub(crate) fn load<B: KvBackend>(backend: &B) -> Result<(LogIndex, WriteBatch)> {
        let mut index = LogIndex::default();
        if let Some(bytes) = backend.get(Table::Meta, PRUNED_META_KEY)? {
            index.pruned = decode(&bytes).map_err(|error| {
                corrupt(format!(
                    "the consensus log's prune marks do not decode: {error}"
                ))
            })?;
        }
        let mut cleanup = WriteBatch::new();
        let mut legacy = Vec::new();
        backend.scan_all(Table::ConsensusLog, LOAD_CHUNK, |key, value| {
            if key.first() == Some(&ENTRY_PREFIX) {
                let sequence = key
                    .get(1..)
                    .and_then(|bytes| <[u8; 8]>::try_from(bytes).ok())
                    .map(u64::from_be_bytes)
                    .ok_or_else(|| corrupt("a consensus-log entry key does not decode"))?;
                index.load_entry(sequence, value, &mut cleanup)
            } else {
                let log_key = LogKey::from_key(key)
                    .ok_or_else(|| corrupt("a consensus-log key does not decode"))?;
                legacy.push(ConsensusRecord {
                    key: log_key,
                    value: record_value(value.to_vec())?,
                });
                cleanup.delete(Table::ConsensusLog, key.to_vec());
                Ok(())
            }
        })?;
        if !legacy.is_empty() {
            let new: Vec<&ConsensusRecord> = legacy.iter().collect();
            let appended = index.append(&new, &mut cleanup);
            index.applied(appended);
        }
        Ok((index, cleanup))
    }

    fn load_entry(&mut self, sequence: u64, value: &[u8], cleanup: &mut WriteBatch) -> Result<()> {
        let entry: Entry = decode(value)
            .map_err(|error| corrupt(format!("a consensus-log entry does not decode: {error}")))?;
        self.next_entry = self.next_entry.max(sequence + 1);
        let mut live = 0u32;
        for (key, value) in entry.records {
            let key = LogKey::from_key(&key)
                .ok_or_else(|| corrupt("a consensus-log key does not decode"))?;
            if self.pruned.covers(&key) {
                continue;
            }
            let value = record_value(value)?;
            if let Some(earlier) = self.records.get(&key) {
                // The log is write-once: a second entry for a key can only repeat it.
                if earlier.value != value {
                    return Err(corrupt(format!(
                        "the consensus log holds two different records for {key:?}"
                    )));
                }
                continue;
            }
            self.records.insert(
                key,
                Logged {
                    value,
                    entry: sequence,
                },
            );
            live += 1;
        }
        if live == 0 {
            cleanup.delete(Table::ConsensusLog, entry_key(sequence));
        } else {
            self.live.insert(sequence, live);
        }
        Ok(())
    }

    /// The record stored under `key`.
    pub(crate) fn get(&self, key: &LogKey) -> Option<&BoundedBytes<MAX_CONSENSUS_RECORD_BYTES>> {
        self.records.get(key).map(|logged| &logged.value)
    }

    /// Up to `limit` records in key order, from `from` on.
    pub(crate) fn list(&self, from: Option<LogKey>, limit: usize) -> Vec<ConsensusRecord> {
        let records = match from {
            Some(from) => self.records.range(from..),
            None => self.records.range(..),
        };
        records
            .take(limit)
            .map(|(key, logged)| ConsensusRecord {
                key: *key,
                value: logged.value.clone(),
            })
            .collect()
    }

    /// Puts `records` (none of them in the index) into `batch` as new entries. The index
    /// learns them through [`LogIndex::applied`] once the batch is committed.
    pub(crate) fn append(&self, records: &[&ConsensusRecord], batch: &mut WriteBatch) -> Appended {
        let mut appended = Appended {
            records: Vec::with_capacity(records.len()),
            entries: Vec::new(),
        };
        for (offset, chunk) in records.chunks(RECORDS_PER_ENTRY).enumerate() {
            let sequence = self.next_entry + offset as u64;
            let entry = Entry {
                records: chunk
                    .iter()
                    .map(|record| (record.key.to_key(), record.value.to_vec()))
                    .collect(),
            };
            batch.put(Table::ConsensusLog, entry_key(sequence), encode(&entry));
            appended.entries.push((sequence, chunk.len() as u32));
            appended
                .records
                .extend(chunk.iter().map(|record| ((*record).clone(), sequence)));
        }
        appended
    }

    /// Takes committed entries into the index.
    pub(crate) fn applied(&mut self, appended: Appended) {
        for (sequence, count) in appended.entries {
            self.live.insert(sequence, count);
            self.next_entry = self.next_entry.max(sequence + 1);
        }
        for (record, entry) in appended.records {
            self.records.insert(
                record.key,
                Logged {
                    value: record.value,
                    entry,
                },
            );
        }
    }

    /// Forgets block votes below `height` and input locks of epochs before `epoch`, putting
    /// into `batch` the deletion of every entry left with no live record and the raised prune
    /// thresholds. Returns how many records were forgotten.
    pub(crate) fn prune(&mut self, height: Height, epoch: Epoch, batch: &mut WriteBatch) -> u64 {
        let mut forgotten = Vec::new();
        for range in [
            vote_key(Height(0))..vote_key(height),
            lock_key(Epoch(0))..lock_key(epoch),
        ] {
            if range.start < range.end {
                forgotten.extend(self.records.range(range).map(|(key, _)| *key));
            }
        }
        for key in &forgotten {
            if let Some(logged) = self.records.remove(key) {
                self.release(logged.entry, batch);
            }
        }
        let raised = Pruned {
            votes_below: self.pruned.votes_below.max(height.0),
            locks_below: self.pruned.locks_below.max(epoch.0),
        };
        if !forgotten.is_empty() && raised != self.pruned {
            self.pruned = raised;
            batch.put(Table::Meta, PRUNED_META_KEY.to_vec(), encode(&self.pruned));
        }
        forgotten.len() as u64
    }

    /// Forgets the input locks a committed block made moot: each `(txid, inputs)` is a
    /// transaction of the block, and its own locks on those inputs go, in every epoch. Puts
    /// into `batch` the deletion of every entry left with no live record. The inputs are spent
    /// for good, so the locks can never matter again, and without this the index would hold
    /// every lock of the epoch (a mainnet epoch is 1,440 blocks). Locks on the same inputs held
    /// for a losing conflicting transaction stay until the epoch's prune, as the finality
    /// engine keeps them. A forgotten lock in an entry that still holds live records is read
    /// back at the next open, which is harmless for the same reason.
    pub(crate) fn forget_included<'a, I>(
        &mut self,
        transactions: impl IntoIterator<Item = (&'a Txid, I)>,
        batch: &mut WriteBatch,
    ) -> u64
    where
        I: IntoIterator<Item = &'a OutPoint>,
    {
        let epochs = self.lock_epochs();
        if epochs.is_empty() {
            return 0;
        }
        let mut forgotten = 0;
        for (txid, inputs) in transactions {
            let value = encode(txid);
            for outpoint in inputs {
                for epoch in &epochs {
                    let key = LogKey::InputLock {
                        epoch: *epoch,
                        outpoint: *outpoint,
                    };
                    let held = self
                        .records
                        .get(&key)
                        .is_some_and(|logged| logged.value[..] == value[..]);
                    if held && let Some(logged) = self.records.remove(&key) {
                        forgotten += 1;
                        self.release(logged.entry, batch);
                    }
                }
            }
        }
        forgotten
    }

    /// The epochs with a live input lock, oldest first: usually the current one and, for a
    /// moment after a change, the one before (the prune at each epoch change keeps it so).
    fn lock_epochs(&self) -> Vec<Epoch> {
        let mut epochs = Vec::new();
        let mut from = lock_key(Epoch(0));
        while let Some((LogKey::InputLock { epoch, .. }, _)) = self.records.range(from..).next() {
            epochs.push(*epoch);
            let Some(next) = epoch.0.checked_add(1) else {
                break;
            };
            from = lock_key(Epoch(next));
        }
        epochs
    }

    /// Counts one record of `entry` gone, deleting the entry with its last one.
    fn release(&mut self, entry: u64, batch: &mut WriteBatch) {
        if let Some(live) = self.live.get_mut(&entry) {
            *live -= 1;
            if *live == 0 {
                self.live.remove(&entry);
                batch.delete(Table::ConsensusLog, entry_key(entry));
            }
        }
    }
}
