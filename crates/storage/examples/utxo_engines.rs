//! What a UTXO flush and a UTXO read cost per operation in redb, against a hash-indexed
//! append-only log, in the same run: the evidence behind the UTXO log (ADR 0029).
//!
//! Both hold 1,000,000 entries of a 36-byte key (an outpoint) and a 50-byte value (an entry).
//! A "flush" deletes 100,000 of them and inserts 100,000 new ones, in key order for redb (as the
//! store's flush does), then makes it durable; "reads" look up 100,000 keys, most present.
//!
//! The log is the store's own (`timecoin_storage::utxo_log`, ADR 0029): records appended in
//! checksummed frames, an in-memory map from a keyed 64-bit hash to each record's place, every
//! lookup reading the record back (`pread`) to check its key. Its flush is measured up to its
//! durable end; the redb commit that records the log's extent in the store is not included.
//!
//! Run: `cargo run --release -p timecoin-storage --example utxo_engines`.

use std::hash::BuildHasher;
use std::path::Path;
use std::time::{Duration, Instant};

use redb::{Database, ReadableDatabase, TableDefinition};
use timecoin_storage::utxo_log::{LogState, SEGMENT_BYTES, UtxoLog};

const ENTRIES: u64 = 1_000_000;
const OPERATIONS: u64 = 100_000;
const VALUE: [u8; 50] = [7; 50];
const UTXOS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("utxos");

/// A pseudo-random 36-byte key: `salt` 1 for the stored entries, 2 for the new ones.
fn key(number: u64, salt: u64) -> [u8; 36] {
    let mut key = [0u8; 36];
    for (part, chunk) in key.chunks_mut(8).enumerate() {
        let seed = salt.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ part as u64;
        let word = foldhash::quality::FixedState::with_seed(seed).hash_one(number);
        chunk.copy_from_slice(&word.to_le_bytes()[..chunk.len()]);
    }
    key
}

/// The keys a flush deletes (stored ones) and inserts (new ones), in no particular order.
fn flush_keys() -> (Vec<[u8; 36]>, Vec<[u8; 36]>) {
    let deleted = (0..OPERATIONS)
        .map(|number| key(number * 7 % ENTRIES, 1))
        .collect();
    let inserted = (0..OPERATIONS).map(|number| key(number, 2)).collect();
    (deleted, inserted)
}

/// Per-operation microseconds.
fn per_op(elapsed: Duration, operations: u64) -> f64 {
    elapsed.as_secs_f64() * 1e6 / operations as f64
}

struct Figures {
    flush_us: f64,
    durable_flush_us: f64,
    read_us: f64,
    found: u64,
}

impl Figures {
    /// The figures of a flush whose writes took `written` and that was durable after
    /// `durable`, and of the reads that `present` answers.
    fn measure(
        written: Duration,
        durable: Duration,
        mut present: impl FnMut(&[u8; 36]) -> bool,
    ) -> Figures {
        let started = Instant::now();
        let found = (0..OPERATIONS)
            .filter(|number| present(&key(number * 13 % ENTRIES, 1)))
            .count() as u64;
        Figures {
            flush_us: per_op(written, 2 * OPERATIONS),
            durable_flush_us: per_op(durable, 2 * OPERATIONS),
            read_us: per_op(started.elapsed(), OPERATIONS),
            found,
        }
    }
}

fn redb(directory: &Path) -> Figures {
    let path = directory.join("utxos.redb");
    // Each round starts from an empty file.
    let _ = std::fs::remove_file(&path);
    // The store's default page cache for the UTXO file: three quarters of 16 MiB.
    let database = Database::builder()
        .set_cache_size(12 << 20)
        .create(&path)
        .expect("create");
    let mut stored: Vec<[u8; 36]> = (0..ENTRIES).map(|number| key(number, 1)).collect();
    stored.sort_unstable();
    let load = database.begin_write().expect("begin");
    {
        let mut table = load.open_table(UTXOS).expect("table");
        for key in &stored {
            table
                .insert(key.as_slice(), VALUE.as_slice())
                .expect("insert");
        }
    }
    load.commit().expect("commit");

    let (mut deleted, mut inserted) = flush_keys();
    deleted.sort_unstable();
    inserted.sort_unstable();
    let started = Instant::now();
    let flush = database.begin_write().expect("begin");
    {
        let mut table = flush.open_table(UTXOS).expect("table");
        for key in &deleted {
            table.remove(key.as_slice()).expect("remove");
        }
        for key in &inserted {
            table
                .insert(key.as_slice(), VALUE.as_slice())
                .expect("insert");
        }
    }
    let written = started.elapsed();
    flush.commit().expect("commit");
    let durable = started.elapsed();

    let reader = database.begin_read().expect("read");
    let table = reader.open_table(UTXOS).expect("table");
    Figures::measure(written, durable, |wanted| {
        table.get(wanted.as_slice()).expect("get").is_some()
    })
}

fn log(directory: &Path) -> Figures {
    let prefix = directory.join("utxos-");
    // Each round starts from an empty log.
    for entry in std::fs::read_dir(directory).expect("list") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|extension| extension == "log") {
            std::fs::remove_file(path).expect("remove");
        }
    }
    let log = UtxoLog::open(prefix, LogState::EMPTY, SEGMENT_BYTES).expect("open");
    let mut load = log.batch().expect("batch");
    for number in 0..ENTRIES {
        load.put(&key(number, 1), &VALUE).expect("put");
    }
    load.finish().expect("finish");
    load.committed();

    let (deleted, inserted) = flush_keys();
    let started = Instant::now();
    let mut flush = log.batch().expect("batch");
    for key in &deleted {
        flush.delete(key).expect("delete");
    }
    for key in &inserted {
        flush.put(key, &VALUE).expect("put");
    }
    let written = started.elapsed();
    // The whole durable part of a flush: the last frame, compaction if due, the syncs, and
    // publishing it to readers (which the node's thread does).
    flush.finish().expect("finish");
    flush.committed();
    log.publish();
    let durable = started.elapsed();

    Figures::measure(written, durable, |wanted| {
        log.get(wanted).expect("get").is_some()
    })
}

fn main() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    for round in 1..=2 {
        for (engine, figures) in [
            ("redb", redb(directory.path())),
            ("log", log(directory.path())),
        ] {
            println!(
                "round {round} {engine:>4}: flush {:.2} µs/op ({:.2} with the commit or fdatasync), \
                 reads {:.2} µs/op ({} of {OPERATIONS} found)",
                figures.flush_us, figures.durable_flush_us, figures.read_us, figures.found
            );
        }
    }
}
