//! Storage benchmark: durable block application with a million UTXOs, against a plain in-memory
//! `HashMap` in the same run; vote persistence throughput; recovery time after SIGKILL; database
//! size and the peak RSS of the process that applies the blocks (default settings).
//!
//! `cargo bench -p timecoin-storage --bench storage`. Knobs (environment): `BENCH_UTXOS`
//! (1,000,000), `BENCH_BLOCKS` (200), `BENCH_TRANSACTIONS` (1,000 per block),
//! `BENCH_DIRECTORY` (a temporary directory). Figures are printed and written as JSON to
//! `target/storage-bench.json`.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use timecoin_ledger::{UtxoCommitment, UtxoEntry, UtxoStore};
use timecoin_primitives::{Block, BlockHash, BoundedBytes, Height, OutPoint, decode, encode};
use timecoin_storage::testing::TestChain;
use timecoin_storage::{
    BlockChanges, BlockCommit, ChainStore, ChangeRecorder, ConsensusLog, ConsensusRecord, LogKey,
    RedbChainDb, RedbOptions, StoreConfig,
};

const CHILD_MODE: &str = "BENCH_CHILD_DIRECTORY";
const SEED: u64 = 2026;

fn knob(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(default)
}

fn peak_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|line| line.starts_with("VmHWM:"))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|kib| kib.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

fn current_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|kib| kib.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// Default settings, except for the knobs `BENCH_CACHE_BYTES`, `BENCH_PAGE_CACHE_BYTES`,
/// `BENCH_QUICK_REPAIR`, `BENCH_INDEX_ADDRESSES`, `BENCH_INDEX_TRANSACTIONS` and
/// `BENCH_BACKGROUND_FLUSH` (1/0) used to explore them.
fn open(directory: &Path, genesis: BlockHash) -> RedbChainDb {
    let mut config = StoreConfig::new(timecoin_primitives::Network::Devnet, genesis);
    config.cache_bytes = knob("BENCH_CACHE_BYTES", config.cache_bytes);
    config.index_addresses = knob("BENCH_INDEX_ADDRESSES", 1) == 1;
    config.index_transactions = knob("BENCH_INDEX_TRANSACTIONS", 1) == 1;
    config.background_flush = knob("BENCH_BACKGROUND_FLUSH", 1) == 1;
    let options = RedbOptions {
        page_cache_bytes: knob("BENCH_PAGE_CACHE_BYTES", config.page_cache_bytes),
        quick_repair: knob("BENCH_QUICK_REPAIR", 1) == 1,
        ..RedbOptions::default()
    };
    RedbChainDb::open_path_with(&directory.join("chain.redb"), config, options).unwrap()
}

/// Applies `block` through the store as a node would: its lookups are read ahead
/// (`prefetch_block`: the spent outputs), then a recorder over the store collects the changes
/// while the transactions spend and create outputs. Outputs of transactions with inputs are
/// new by construction, so they are inserted without a lookup, as the ledger does (ADR 0017).
fn apply_through_store(
    store: &RedbChainDb,
    block: &Block,
    prefetching: &mut Duration,
) -> BlockChanges {
    let started = Instant::now();
    store.prefetch_block(block).expect("prefetch");
    *prefetching += started.elapsed();
    let mut recorder = ChangeRecorder::for_block(store, block);
    for transaction in block.transactions.iter() {
        let txid = transaction.txid();
        for input in transaction.body.inputs.iter() {
            recorder
                .remove_utxo(&input.prevout)
                .expect("read")
                .expect("unspent");
        }
        for (index, output) in transaction.body.outputs.iter().enumerate() {
            let entry = UtxoEntry {
                output: *output,
                height: block.header.height,
                is_collateral: false,
            };
            recorder
                .insert_new_utxo(
                    OutPoint {
                        txid,
                        index: index as u32,
                    },
                    entry,
                )
                .expect("insert");
        }
    }
    recorder.into_changes().expect("bounded")
}

/// The child: opens the store with default settings, applies every block from the file, each
/// durable before the next, reports, then waits to be killed (no clean shutdown).
fn child(directory: &Path) {
    let genesis: BlockHash =
        decode(&std::fs::read(directory.join("genesis.bin")).unwrap()).unwrap();
    let opened = Instant::now();
    let mut store = open(directory, genesis);
    let open_time = opened.elapsed();
    let mut reader = BufReader::new(File::open(directory.join("blocks.bin")).unwrap());
    let mut blocks = 0u64;
    let mut operations = 0u64;
    let mut busy = Duration::ZERO;
    let trace = std::env::var("BENCH_TRACE").is_ok();
    if trace {
        eprintln!(
            "trace opened rss={} peak={}",
            current_rss_bytes(),
            peak_rss_bytes()
        );
    }
    let mut reading = Duration::ZERO;
    let mut prefetching = Duration::ZERO;
    let mut length = [0u8; 4];
    while reader.read_exact(&mut length).is_ok() {
        let mut bytes = vec![0u8; u32::from_le_bytes(length) as usize];
        reader.read_exact(&mut bytes).unwrap();
        let (block, commitment): (Block, Vec<u8>) = decode(&bytes).unwrap();
        let commitment = UtxoCommitment::from_bytes(&commitment).unwrap();
        let started = Instant::now();
        let changes = apply_through_store(&store, &block, &mut prefetching);
        reading += started.elapsed();
        store
            .commit_block(BlockCommit {
                block: &block,
                certificate: None,
                changes: &changes,
                commitment: &commitment,
                masternode_events: &[],
            })
            .unwrap();
        busy += started.elapsed();
        blocks += 1;
        if trace && (blocks < 10 || blocks.is_multiple_of(10)) {
            eprintln!(
                "trace block={blocks} rss={} peak={} cache={} flushes={}",
                current_rss_bytes(),
                peak_rss_bytes(),
                store.stats().cache_bytes,
                store.stats().flushes
            );
        }
        operations += block
            .transactions
            .iter()
            .map(|transaction| {
                (transaction.body.inputs.len() + transaction.body.outputs.len()) as u64
            })
            .sum::<u64>();
    }
    // A flush the last blocks started is their work too: wait for it, on the clock.
    let started = Instant::now();
    store.finish_background_flush().unwrap();
    busy += started.elapsed();
    let stats = store.stats();
    println!(
        "result blocks={blocks} operations={operations} seconds={} open_seconds={} flushes={} \
         flush_seconds={} flush_wait_seconds={} read_seconds={} prefetch_seconds={} block_write_seconds={} \
         cache_bytes={} cache_budget={} peak_rss={}",
        busy.as_secs_f64(),
        open_time.as_secs_f64(),
        stats.flushes,
        stats.flush_duration.as_secs_f64(),
        stats.flush_wait_duration.as_secs_f64(),
        reading.as_secs_f64(),
        prefetching.as_secs_f64(),
        stats.block_write_duration.as_secs_f64(),
        stats.cache_bytes,
        store.config().cache_bytes,
        peak_rss_bytes()
    );
    std::io::stdout().flush().unwrap();
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

/// The design this crate replaces, for comparison: every block's UTXO changes written straight
/// into redb B-trees holding the whole set, one durable transaction per block. It maintains the
/// same UTXO, address and transaction tables as the store, but no block log (which flatters it).
fn naive_blocks_per_second(directory: &Path, chain: &TestChain, blocks: &[Block]) -> f64 {
    const UTXOS: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("utxos");
    const ADDRESSES: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("addresses");
    const TRANSACTIONS: redb::TableDefinition<&[u8], &[u8]> =
        redb::TableDefinition::new("transactions");
    fn address_key(address: &timecoin_primitives::Address, outpoint: &OutPoint) -> Vec<u8> {
        let mut bytes = address.0.0.to_vec();
        bytes.extend_from_slice(&key(outpoint));
        bytes
    }
    fn key(outpoint: &OutPoint) -> [u8; 36] {
        let mut key = [0u8; 36];
        key[..32].copy_from_slice(outpoint.txid.as_bytes());
        key[32..].copy_from_slice(&outpoint.index.to_be_bytes());
        key
    }
    let path = directory.join("naive.redb");
    let database = redb::Database::builder()
        .set_cache_size(16 << 20)
        .create(&path)
        .unwrap();
    let mut entries: Vec<([u8; 36], Vec<u8>)> = chain
        .genesis
        .changes
        .created
        .iter()
        .map(|(outpoint, entry)| (key(outpoint), encode(entry)))
        .collect();
    entries.sort_unstable();
    let mut address_entries: Vec<Vec<u8>> = chain
        .genesis
        .changes
        .created
        .iter()
        .map(|(outpoint, entry)| address_key(&entry.output.address, outpoint))
        .collect();
    address_entries.sort_unstable();
    let transaction = database.begin_write().unwrap();
    {
        let mut table = transaction.open_table(UTXOS).unwrap();
        for (key, value) in &entries {
            table.insert(key.as_slice(), value.as_slice()).unwrap();
        }
        let mut table = transaction.open_table(ADDRESSES).unwrap();
        for key in &address_entries {
            table.insert(key.as_slice(), [].as_slice()).unwrap();
        }
        transaction.open_table(TRANSACTIONS).unwrap();
    }
    transaction.commit().unwrap();
    drop(entries);
    let started = Instant::now();
    for block in blocks {
        let transaction = database.begin_write().unwrap();
        {
            let mut table = transaction.open_table(UTXOS).unwrap();
            for transaction in block.transactions.iter() {
                let txid = transaction.txid();
                for input in transaction.body.inputs.iter() {
                    assert!(
                        table
                            .remove(key(&input.prevout).as_slice())
                            .unwrap()
                            .is_some()
                    );
                }
                for (index, output) in transaction.body.outputs.iter().enumerate() {
                    let entry = UtxoEntry {
                        output: *output,
                        height: block.header.height,
                        is_collateral: false,
                    };
                    let outpoint = OutPoint {
                        txid,
                        index: index as u32,
                    };
                    table
                        .insert(key(&outpoint).as_slice(), encode(&entry).as_slice())
                        .unwrap();
                }
            }
        }
        transaction.commit().unwrap();
    }
    let per_second = blocks.len() as f64 / started.elapsed().as_secs_f64();
    drop(database);
    std::fs::remove_file(path).unwrap();
    per_second
}

fn fsync_latency(directory: &Path) -> Duration {
    let path = directory.join("fsync-probe");
    let mut file = File::create(&path).unwrap();
    let started = Instant::now();
    for _ in 0..50 {
        file.write_all(&[0u8; 4096]).unwrap();
        file.sync_data().unwrap();
    }
    let latency = started.elapsed() / 50;
    std::fs::remove_file(path).unwrap();
    latency
}

/// The least a design that makes each block durable before the next can spend per block:
/// appending the block's encoding to a file and waiting for `fdatasync`. No B-tree, no UTXO
/// work; the bound that the ratio to the HashMap cannot beat on this disk.
fn append_fsync_latency(directory: &Path, blocks: &[Vec<u8>]) -> Duration {
    let path = directory.join("append-probe");
    let mut file = File::create(&path).unwrap();
    let started = Instant::now();
    for bytes in blocks {
        file.write_all(bytes).unwrap();
        file.sync_data().unwrap();
    }
    let latency = started.elapsed() / blocks.len().max(1) as u32;
    std::fs::remove_file(path).unwrap();
    latency
}

/// The allocator `timed` runs with (ADR 0012), so that the peak RSS reported is what a node's
/// store would take: under glibc's malloc the same runs peaked anywhere from 157 to 191 MB,
/// depending on where the flushes fell.
#[cfg(all(target_os = "linux", not(target_env = "musl")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// `timed`'s allocator settings: freed pages go back to the system within a second.
#[cfg(all(target_os = "linux", not(target_env = "musl")))]
fn tune_allocator() {
    use tikv_jemalloc_ctl::{Access, AsName};
    let _ = b"arena.4096.dirty_decay_ms\0".name().write(1_000isize);
    let _ = b"arenas.dirty_decay_ms\0".name().write(1_000isize);
    let _ = tikv_jemalloc_ctl::background_thread::write(true);
}

#[cfg(not(all(target_os = "linux", not(target_env = "musl"))))]
fn tune_allocator() {}

fn main() {
    tune_allocator();
    if let Ok(directory) = std::env::var(CHILD_MODE) {
        child(Path::new(&directory));
        return;
    }
    if std::env::args().any(|argument| argument == "--list") {
        return;
    }
    let utxo_count = knob("BENCH_UTXOS", 1_000_000);
    let block_count = knob("BENCH_BLOCKS", 200);
    let transactions = knob("BENCH_TRANSACTIONS", 1_000);
    let temporary = tempfile::tempdir_in(
        std::env::var("BENCH_DIRECTORY")
            .map(PathBuf::from)
            .unwrap_or_else(|_| std::env::temp_dir()),
    )
    .expect("a scratch directory");
    let directory = temporary.path().to_path_buf();

    eprintln!("generating {utxo_count} UTXOs and {block_count} blocks of {transactions} transfers");
    let mut chain = TestChain::new(SEED, utxo_count, 100_000);
    let before_blocks = chain.utxos.clone();
    let mut file = BufWriter::new(File::create(directory.join("blocks.bin")).unwrap());
    let mut blocks = Vec::with_capacity(block_count);
    let mut probe_blocks = Vec::new();
    for _ in 0..block_count {
        let block = chain.next_block(transactions);
        let bytes = encode(&(&block.block, block.commitment.to_bytes()));
        file.write_all(&(bytes.len() as u32).to_le_bytes()).unwrap();
        file.write_all(&bytes).unwrap();
        if probe_blocks.len() < 20 {
            probe_blocks.push(bytes);
        }
        blocks.push(block.block);
    }
    file.flush().unwrap();
    drop(file);
    std::fs::write(
        directory.join("genesis.bin"),
        encode(&chain.genesis.block.hash()),
    )
    .unwrap();

    // Baseline: the same blocks applied to a plain HashMap, no durability.
    let mut baseline = before_blocks;
    let started = Instant::now();
    for block in &blocks {
        for transaction in block.transactions.iter() {
            let txid = transaction.txid();
            for input in transaction.body.inputs.iter() {
                baseline.remove(&input.prevout).expect("unspent");
            }
            for (index, output) in transaction.body.outputs.iter().enumerate() {
                let entry = UtxoEntry {
                    output: *output,
                    height: block.header.height,
                    is_collateral: false,
                };
                baseline.insert(
                    OutPoint {
                        txid,
                        index: index as u32,
                    },
                    entry,
                );
            }
        }
    }
    let baseline_seconds = started.elapsed().as_secs_f64();
    assert_eq!(baseline.len(), chain.utxos.len());
    drop(baseline);

    let naive_count = knob("BENCH_NAIVE_BLOCKS", 20).min(block_count);
    eprintln!("measuring the naive design on {naive_count} blocks");
    let naive_per_second = naive_blocks_per_second(&directory, &chain, &blocks[..naive_count]);
    drop(blocks);

    // Load the million UTXOs: genesis committed and flushed.
    let started = Instant::now();
    {
        let mut store = open(&directory, chain.genesis.block.hash());
        store.commit_block(chain.genesis.commit()).unwrap();
        store.flush().unwrap();
    }
    let load_seconds = started.elapsed().as_secs_f64();
    let size_loaded = std::fs::metadata(directory.join("chain.redb"))
        .unwrap()
        .len();
    drop(chain);

    // The measured run, in a child process so that its peak RSS is the store's alone.
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(CHILD_MODE, &directory)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    // Crash it: no flush, so the reopen below replays the unflushed blocks.
    child.kill().unwrap();
    child.wait().unwrap();
    let field = |name: &str| -> f64 {
        line.split_whitespace()
            .find_map(|pair| pair.strip_prefix(&format!("{name}=")))
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| panic!("the child reported no {name}: {line}"))
    };
    let store_seconds = field("seconds");
    let operations = field("operations");

    let genesis: BlockHash =
        decode(&std::fs::read(directory.join("genesis.bin")).unwrap()).unwrap();
    let started = Instant::now();
    let mut store = open(&directory, genesis);
    let recovery_seconds = started.elapsed().as_secs_f64();
    let replayed = store.stats().replayed_blocks;
    assert_eq!(store.tip().unwrap().height, Height(block_count as u64));
    let size_after = store.size_on_disk();
    let allocated_after = store.backend().allocated_bytes().unwrap();

    // Votes: durable batches of several sizes.
    let mut vote_figures = Vec::new();
    let mut number = 0u64;
    for batch_size in [1usize, 16, 256, 4096] {
        let total = (batch_size * 40).clamp(200, 40_000);
        let started = Instant::now();
        let mut written = 0;
        while written < total {
            let batch: Vec<ConsensusRecord> = (0..batch_size)
                .map(|_| {
                    number += 1;
                    ConsensusRecord {
                        key: LogKey::BlockVote {
                            height: Height(number),
                            view: 0,
                            phase: 1,
                        },
                        value: BoundedBytes::new(vec![7u8; 120]).unwrap(),
                    }
                })
                .collect();
            store.persist(&batch).unwrap();
            written += batch_size;
        }
        vote_figures.push((batch_size, written as f64 / started.elapsed().as_secs_f64()));
    }
    let fsync = fsync_latency(&directory);
    let append = append_fsync_latency(&directory, &probe_blocks);

    let baseline_blocks_per_second = block_count as f64 / baseline_seconds;
    let store_blocks_per_second = block_count as f64 / store_seconds;
    let baseline_block_seconds = baseline_seconds / block_count as f64;
    let durable_ratio_bound =
        baseline_block_seconds / (baseline_block_seconds + append.as_secs_f64());
    let report = format!(
        concat!(
            "{{\n  \"utxos\": {},\n  \"blocks\": {},\n  \"transactions_per_block\": {},\n",
            "  \"store_blocks_per_second\": {:.1},\n  \"store_utxo_operations_per_second\": {:.0},\n",
            "  \"hashmap_blocks_per_second\": {:.1},\n  \"hashmap_utxo_operations_per_second\": {:.0},\n",
            "  \"ratio_to_hashmap\": {:.4},\n  \"naive_btree_blocks_per_second\": {:.1},\n",
            "  \"flushes\": {},\n  \"flush_seconds\": {:.3},\n  \"flush_wait_seconds\": {:.3},\n",
            "  \"fsync_latency_ms\": {:.3},\n  \"block_append_fsync_ms\": {:.3},\n",
            "  \"durable_ratio_bound\": {:.4},\n  \"load_seconds\": {:.2},\n",
            "  \"recovery_seconds\": {:.3},\n  \"replayed_blocks\": {},\n",
            "  \"database_bytes_after_load\": {},\n  \"database_bytes_after_blocks\": {},\n",
            "  \"database_allocated_bytes_after_blocks\": {},\n",
            "  \"peak_rss_bytes\": {},\n  \"cache_budget_bytes\": {},\n  \"votes_per_second\": {{{}}}\n}}\n"
        ),
        utxo_count,
        block_count,
        transactions,
        store_blocks_per_second,
        operations / store_seconds,
        baseline_blocks_per_second,
        operations / baseline_seconds,
        store_blocks_per_second / baseline_blocks_per_second,
        naive_per_second,
        field("flushes"),
        field("flush_seconds"),
        field("flush_wait_seconds"),
        fsync.as_secs_f64() * 1000.0,
        append.as_secs_f64() * 1000.0,
        durable_ratio_bound,
        load_seconds,
        recovery_seconds,
        replayed,
        size_loaded,
        size_after,
        allocated_after,
        field("peak_rss"),
        field("cache_budget"),
        vote_figures
            .iter()
            .map(|(batch, rate)| format!("\"batch_{batch}\": {rate:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    print!("{report}");
    eprintln!("child: {line}");
    let out: PathBuf =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/storage-bench.json");
    if let Err(error) = std::fs::write(&out, &report) {
        eprintln!("could not write {}: {error}", out.display());
    }
}
