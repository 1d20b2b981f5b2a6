//! Certified transactions not yet in a block, stored as one appended entry per durable batch
//! (ADR 0022).
//!
//! A node stores every transaction it sees certified and forgets it once a block holds it: at
//! 2,000 payments/s that was 2,000 B-tree inserts and 2,000 deletes per second, each a page
//! rewritten at the next commit. Appended, the records certified between two syncs are one
//! value, and a block usually empties whole entries, each one delete. An entry that a removal
//! leaves partly live is rewritten with its live records only, so whatever is on disk is live
//! and nothing needs a tombstone.

use std::collections::{HashMap, HashSet};

use borsh::{BorshDeserialize, BorshSerialize};
use timecoin_primitives::{Txid, decode, encode};

use crate::backend::{KvBackend, Table, WriteBatch};
use crate::error::{Result, corrupt};

/// Most records in one entry: a longer open entry is sealed early, so that no value grows past
/// a megabyte or so.
const RECORDS_PER_ENTRY: usize = 1024;

/// Entries read per scan: each is up to about a megabyte.
const SCAN_CHUNK: usize = 16;

/// Length of an entry's key (its sequence number, big-endian). Records stored one per key
/// before entries have keys of 32 bytes (the txid) or 40 (a sequence number and the txid).
const ENTRY_KEY_LEN: usize = 8;

/// One appended batch of records, in the order stored.
#[derive(BorshSerialize, BorshDeserialize)]
struct StoredEntry {
    records: Vec<(Txid, Vec<u8>)>,
}

fn entry_key(sequence: u64) -> Vec<u8> {
    sequence.to_be_bytes().to_vec()
}

fn entry_sequence(key: &[u8]) -> Option<u64> {
    <[u8; ENTRY_KEY_LEN]>::try_from(key)
        .ok()
        .map(u64::from_be_bytes)
}

fn decode_entry(value: &[u8]) -> Result<StoredEntry> {
    decode(value).map_err(|error| {
        corrupt(format!(
            "an entry of stored certified transactions does not decode: {error}"
        ))
    })
}

/// The txid in a key of the one-record-per-key layout.
fn legacy_txid(key: &[u8]) -> Result<Txid> {
    let txid = match key.len() {
        32 => key,
        40 => &key[8..],
        _ => {
            return Err(corrupt(
                "a stored certified transaction's key is neither an entry, a txid, nor a sequence number and a txid",
            ));
        }
    };
    let bytes: [u8; 32] = txid.try_into().expect("32 bytes");
    Ok(Txid(timecoin_primitives::Hash32(bytes)))
}

/// Where every stored record is, and the records not written yet.
#[derive(Default)]
pub(crate) struct Finals {
    /// The entry holding each record, or `None` while it waits in `open`.
    places: HashMap<Txid, Option<u64>>,
    /// Live records per written entry.
    live: HashMap<u64, u32>,
    /// Records stored since the last seal, in the order stored.
    open: Vec<(Txid, Vec<u8>)>,
    next_entry: u64,
}

/// Changes to written entries that a removal implies, computed before any state changes.
pub(crate) struct Removal {
    batch: WriteBatch,
    from_open: HashSet<Txid>,
    from_entries: Vec<Txid>,
    emptied: Vec<u64>,
    shrunk: Vec<(u64, u32)>,
}

impl Removal {
    /// The deletions and rewrites to commit.
    pub(crate) fn batch(&self) -> &WriteBatch {
        &self.batch
    }
}

impl Finals {
    /// Reads every entry. Records of the one-per-key layout are moved into a new entry by the
    /// returned batch, which must be committed before the store is used; it also deletes
    /// entries with no live record.
    pub(crate) fn load<B: KvBackend>(backend: &B) -> Result<(Finals, WriteBatch)> {
        let mut finals = Finals::default();
        let mut cleanup = WriteBatch::new();
        let mut legacy = Vec::new();
        backend.scan_all(Table::Final, SCAN_CHUNK, |key, value| {
            let Some(sequence) = entry_sequence(key) else {
                legacy.push((legacy_txid(key)?, value.to_vec()));
                cleanup.delete(Table::Final, key.to_vec());
                return Ok(());
            };
            finals.next_entry = finals.next_entry.max(sequence + 1);
            let mut live = 0u32;
            for (txid, _) in decode_entry(value)?.records {
                // A txid is stored once, so it is in one entry only; were it in two, the first
                // is kept, as when it is stored again.
                if finals.places.contains_key(&txid) {
                    continue;
                }
                finals.places.insert(txid, Some(sequence));
                live += 1;
            }
            if live == 0 {
                cleanup.delete(Table::Final, key.to_vec());
            } else {
                finals.live.insert(sequence, live);
            }
            Ok(())
        })?;
        for (txid, record) in legacy {
            finals.store(txid, record);
        }
        finals.seal_into(&mut cleanup);
        Ok((finals, cleanup))
    }

    /// Whether records wait to be written.
    pub(crate) fn has_open(&self) -> bool {
        !self.open.is_empty()
    }

    /// Whether the open entry is full and should be sealed now.
    pub(crate) fn open_is_full(&self) -> bool {
        self.open.len() >= RECORDS_PER_ENTRY
    }

    /// Stores `record` under `txid`, in memory until the next seal. A txid stored already keeps
    /// its first record (any certificate proves the same finality); returns whether it was new.
    pub(crate) fn store(&mut self, txid: Txid, record: Vec<u8>) -> bool {
        if self.places.contains_key(&txid) {
            return false;
        }
        self.places.insert(txid, None);
        self.open.push((txid, record));
        true
    }

    /// Puts the open records into `batch` as one new entry and marks them written there.
    pub(crate) fn seal_into(&mut self, batch: &mut WriteBatch) {
        if self.open.is_empty() {
            return;
        }
        let sequence = self.next_entry;
        self.next_entry += 1;
        let records = std::mem::take(&mut self.open);
        for (txid, _) in &records {
            self.places.insert(*txid, Some(sequence));
        }
        self.live.insert(sequence, records.len() as u32);
        batch.put(
            Table::Final,
            entry_key(sequence),
            encode(&StoredEntry { records }),
        );
    }

    /// What removing `txids` takes: written entries left with no live record are deleted,
    /// and those left with some are rewritten with the live ones only (read back from
    /// `backend`, which must see every sealed entry). Txids not stored are skipped. Nothing
    /// changes until [`Finals::removed`].
    pub(crate) fn removal<B: KvBackend>(&self, backend: &B, txids: &[Txid]) -> Result<Removal> {
        let mut removal = Removal {
            batch: WriteBatch::new(),
            from_open: HashSet::new(),
            from_entries: Vec::new(),
            emptied: Vec::new(),
            shrunk: Vec::new(),
        };
        let mut per_entry: HashMap<u64, HashSet<Txid>> = HashMap::new();
        for txid in txids {
            match self.places.get(txid) {
                Some(None) => {
                    removal.from_open.insert(*txid);
                }
                // A txid listed twice counts once.
                Some(Some(sequence)) if per_entry.entry(*sequence).or_default().insert(*txid) => {
                    removal.from_entries.push(*txid);
                }
                _ => {}
            }
        }
        let mut sequences: Vec<u64> = per_entry.keys().copied().collect();
        sequences.sort_unstable();
        for sequence in sequences {
            let gone = &per_entry[&sequence];
            let live = self.live.get(&sequence).copied().unwrap_or(0);
            let key = entry_key(sequence);
            if gone.len() as u32 >= live {
                removal.batch.delete(Table::Final, key);
                removal.emptied.push(sequence);
                continue;
            }
            let value = backend.get(Table::Final, &key)?.ok_or_else(|| {
                corrupt(format!(
                    "the entry {sequence} of stored certified transactions is missing"
                ))
            })?;
            let records: Vec<(Txid, Vec<u8>)> = decode_entry(&value)?
                .records
                .into_iter()
                .filter(|(txid, _)| {
                    !gone.contains(txid) && self.places.get(txid) == Some(&Some(sequence))
                })
                .collect();
            removal.shrunk.push((sequence, records.len() as u32));
            removal
                .batch
                .put(Table::Final, key, encode(&StoredEntry { records }));
        }
        Ok(removal)
    }

    /// Takes a committed (or deferred) [`Removal`] into the index.
    pub(crate) fn removed(&mut self, removal: Removal) {
        if !removal.from_open.is_empty() {
            self.open
                .retain(|(txid, _)| !removal.from_open.contains(txid));
        }
        for txid in removal.from_open.iter().chain(&removal.from_entries) {
            self.places.remove(txid);
        }
        for sequence in removal.emptied {
            self.live.remove(&sequence);
        }
        for (sequence, live) in removal.shrunk {
            self.live.insert(sequence, live);
        }
    }

    /// Up to `limit` stored records, the earliest stored first: the written entries from
    /// `backend`, then the open one.
    pub(crate) fn list<B: KvBackend>(
        &self,
        backend: &B,
        limit: usize,
    ) -> Result<Vec<(Txid, Vec<u8>)>> {
        let mut listed = Vec::new();
        backend.scan_all(Table::Final, SCAN_CHUNK, |key, value| {
            let Some(sequence) = entry_sequence(key) else {
                return Ok(());
            };
            if listed.len() < limit {
                let records = decode_entry(value)?.records.into_iter();
                listed.extend(
                    records
                        .filter(|(txid, _)| self.places.get(txid) == Some(&Some(sequence)))
                        .take(limit - listed.len()),
                );
            }
            Ok(())
        })?;
        let room = limit - listed.len();
        listed.extend(self.open.iter().take(room).cloned());
        Ok(listed)
    }
}
