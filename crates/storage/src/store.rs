//! The chain store: durable block log, write-back UTXO cache, and recovery by replay.
//!
//! Every block is committed as one small atomic write (header, body, its UTXO changes, the tip
//! and the commitment), with one fsync. The UTXO set, the transaction index and the address
//! index change in memory only, and reach the database in large sorted flushes. On open, the
//! changes of the blocks committed since the last flush are replayed. See ADR 0005.
//!
//! A flush writes a frozen copy of the cache into the UTXO file on a background thread while a
//! fresh cache takes the next blocks, and reads look in the fresh cache, then the frozen one,
//! then the file (ADR 0019).

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::path::Path;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use borsh::{BorshDeserialize, BorshSerialize};
use timecoin_ledger::{
    BackendError, MasternodeEvent, MasternodeRegistration, MasternodeRegistry, MasternodeView,
    UtxoCommitment, UtxoEntry, UtxoView,
};
use timecoin_primitives::block::MAX_BLOCK_TRANSACTIONS;
use timecoin_primitives::{
    Address, Block, BlockHash, BlockHeader, BoundedVec, CommitCertificate, Epoch, FastMap, Hash32,
    Height, Network, OutPoint, PublicKey, Transaction, TxOut, Txid, decode, encode,
};

use crate::backend::{KvBackend, Table, TableWriter, UtxoFileWriter, WriteBatch, prefix_end};
use crate::chunked;
use crate::config::{MAX_BODIES_PRUNED_PER_COMMIT, MIN_PRUNE_KEEP_BLOCKS, StoreConfig};
use crate::error::{Result, StorageError, corrupt};
use crate::finals::Finals;
use crate::log::LogIndex;
use crate::priority::{self, FlushPriority};
use crate::redb_backend::{RedbBackend, RedbOptions};
use crate::traits::{ChainStore, ConsensusLog, MAX_ADDRESS_QUERY, MAX_LOG_LISTING};
use crate::types::{
    BlockChanges, BlockCommit, ChainTip, ConsensusRecord, LogKey, LogOutcome, MAX_BLOCK_CHANGES,
    MAX_CONSENSUS_BATCH, MAX_MASTERNODES, TxLocation,
};

/// Most outpoints one [`ChainDb::prefetch_utxos`] call reads, and most UTXOs kept from reads
/// of the UTXO file between two block commits.
pub const MAX_PREFETCH: usize = 200_000;

/// Most UTXOs read from the UTXO file that a block commit keeps for the next blocks. A node
/// looks up a payment's inputs when it admits it, when it is certified, and when a block with
/// it is built, judged and applied, a second or more apart: kept, the file is read once.
const KEPT_READS: usize = 32_768;

/// The database layout this build writes. A database with another version is refused:
/// version 2 stores blocks that carry their parent's commit certificate (ADR 0009), which
/// version 1 bodies cannot be decoded as; version 3 stores finality certificates whose votes
/// sign Merkle roots over batches of transactions (ADR 0014); version 4 keeps the UTXO set and
/// its indexes in a file of their own (ADR 0019); version 5 keeps the flushed UTXO set in an
/// append-only log beside that file (ADR 0029).
pub const SCHEMA_VERSION: u32 = 5;

mod meta {
    pub const SCHEMA_VERSION: &[u8] = b"schema_version";
    pub const NETWORK: &[u8] = b"network";
    pub const GENESIS: &[u8] = b"genesis_hash";
    pub const TIP: &[u8] = b"tip";
    pub const TIP_COMMITMENT: &[u8] = b"tip_utxo_commitment";
    /// The highest height whose change record was deleted because a flush made it redundant:
    /// the UTXO file must be flushed at least this far.
    pub const CHANGES_DELETED_THROUGH: &[u8] = b"changes_deleted_through";
    pub const FINALIZED: &[u8] = b"finalized_height";
    pub const PRUNED_BELOW: &[u8] = b"pruned_below";
    pub const INDEXES: &[u8] = b"indexes";
}

/// Keys of [`Table::UtxoMeta`], in the UTXO file, besides the identity it records under the
/// chain file's keys ([`meta`]: schema version, network, genesis).
mod utxo_meta {
    pub const FLUSHED: &[u8] = b"flushed_height";
}

/// Largest value of one node-state slot ([`ChainDb::put_node_state`]): a maximal block plus
/// its prepared certificate, with room to spare.
pub const MAX_NODE_STATE_BYTES: usize = 20 << 20;

/// The name of the thread that writes a background flush (ADR 0019). Tools that watch a node
/// from outside (`time-bench` waits for it to end) find the flush by it.
pub const FLUSH_THREAD_NAME: &str = "utxo-flush";

/// Node-state slots live in the meta table under a prefix no store key uses.
fn node_state_key(name: &str) -> Vec<u8> {
    let mut key = b"node_state/".to_vec();
    key.extend_from_slice(name.as_bytes());
    key
}

/// What a UTXO cache slot says about the database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum SlotState {
    /// Created since the last flush and absent from the database (with its address-index
    /// entry): spending it before the next flush costs the database nothing.
    Fresh,
    /// To be written over whatever the database holds, with its address-index entry.
    Dirty,
    /// To be deleted from the database, with the address-index entry of the entry it holds.
    Spent,
}

/// A UTXO cache slot: a change since the last flush. Clean entries are not cached; they are
/// served by the engine's page cache.
///
/// One slot carries both the UTXO change and the address-index change it implies (a spent slot
/// keeps the spent entry, so its address is known at flush time), and is packed to 4-byte
/// alignment: with its [`OutPoint`] key a hash-table slot takes 88 bytes, where a separate
/// UTXO table and address-index table took 104 + 72. Twice as many changes fit the same budget,
/// so flushes come half as often (ADR 0005).
#[derive(Clone, Copy)]
#[repr(C, packed(4))]
struct CacheSlot {
    output: TxOut,
    height: Height,
    is_collateral: bool,
    state: SlotState,
}

impl CacheSlot {
    fn new(state: SlotState, entry: &UtxoEntry) -> CacheSlot {
        CacheSlot {
            output: entry.output,
            height: entry.height,
            is_collateral: entry.is_collateral,
            state,
        }
    }

    fn state(&self) -> SlotState {
        self.state
    }

    fn entry(&self) -> UtxoEntry {
        UtxoEntry {
            output: self.output,
            height: self.height,
            is_collateral: self.is_collateral,
        }
    }

    fn address(&self) -> Address {
        let output = self.output;
        output.address
    }

    /// The entry, unless the slot records a spend.
    fn unspent(&self) -> Option<UtxoEntry> {
        (self.state() != SlotState::Spent).then(|| self.entry())
    }
}

/// Changes since a flush, as one layer of the write-back cache.
#[derive(Default)]
struct Cache {
    /// UTXO changes, each with the address-index change it implies.
    utxos: FastMap<OutPoint, CacheSlot>,
    tx_index: FastMap<Txid, TxLocation>,
    /// Address-index keys to delete at the flush that the UTXO slots no longer name: an
    /// outpoint spent and then created again for another address (impossible with unique
    /// txids, handled anyway). Applied before the slots' own changes.
    address_deletes: Vec<(Address, OutPoint)>,
}

impl Cache {
    /// An empty cache whose tables, allocated now, fit `budget` bytes: growing a table on
    /// demand would need the old and the new table at once and, with power-of-two sizes, could
    /// use only about a third of the budget for data.
    fn with_budget(budget: usize, index_transactions: bool) -> Cache {
        // Shares of the budget, by how many entries a block adds to each table: about one per
        // UTXO operation to the UTXO table (which carries the address-index changes too), one
        // per transaction to the transaction index.
        let (utxo_share, tx_share) = if index_transactions {
            (85, 15)
        } else {
            (100, 0)
        };
        Cache {
            utxos: with_budget(budget / 100 * utxo_share),
            tx_index: with_budget(budget / 100 * tx_share),
            address_deletes: Vec::new(),
        }
    }

    fn is_empty(&self) -> bool {
        self.utxos.is_empty() && self.tx_index.is_empty() && self.address_deletes.is_empty()
    }

    fn address_deletes_bytes(&self) -> usize {
        self.address_deletes
            .capacity()
            .saturating_mul(std::mem::size_of::<(Address, OutPoint)>())
    }

    fn bytes(&self) -> usize {
        bytes_of(&self.utxos) + bytes_of(&self.tx_index) + self.address_deletes_bytes()
    }
}

/// A cache layer that is being, or failed to be, written to the UTXO file. Reads consult it
/// until its flush has committed.
struct Frozen {
    cache: Arc<Cache>,
    /// The height the UTXO file is flushed to once this layer is written.
    up_to: Height,
}

/// A flush in progress.
struct FlushJob {
    /// How long the write took, or why it failed.
    outcome: mpsc::Receiver<Result<Duration>>,
    /// The background thread, if the flush runs on one.
    worker: Option<std::thread::JoinHandle<()>>,
    /// Whether the node waits for the flush, which a background flush (lowered to the least
    /// CPU priority) answers by raising its priority again.
    priority: Arc<FlushPriority>,
}

/// Writes `cache`, which covers the blocks up to `up_to`, into the UTXO file in one atomic
/// commit that also records the new flush height. `lowered`: the calling thread starts at the
/// lowest priority (a background flush), and only then moves between priorities.
fn write_cache(
    writer: &impl UtxoFileWriter,
    cache: &Cache,
    up_to: Height,
    index_addresses: bool,
    priority: &FlushPriority,
    lowered: bool,
) -> Result<()> {
    let total = cache.utxos.len()
        + cache.tx_index.len()
        + if index_addresses {
            cache.utxos.len() + cache.address_deletes.len()
        } else {
            0
        };
    let mut pacer = priority::Pacer::new(priority, total, lowered);
    writer.write(&mut |writer: &mut dyn TableWriter| {
        // The indexes are written in key order, so each B-tree is walked once left to right.
        // The UTXO set needs no order: the backends keep it in a log (ADR 0029) or a map. The
        // sort buffers hold references, not copies, and live one at a time.
        for (outpoint, slot) in &cache.utxos {
            pacer.step();
            let key = outpoint_key(outpoint);
            match slot.unspent() {
                Some(entry) => writer.put(Table::Utxos, &key, &encode(&entry))?,
                None => writer.delete(Table::Utxos, &key)?,
            }
        }
        if index_addresses {
            for (address, outpoint) in &cache.address_deletes {
                pacer.step();
                writer.delete(Table::AddressIndex, &address_key(address, outpoint))?;
            }
            // By address, then outpoint: the address-index key order. The leading 8 bytes of
            // the address decide almost every comparison without copying it out.
            let mut keys: Vec<(&OutPoint, &CacheSlot)> = cache.utxos.iter().collect();
            let prefix = |slot: &CacheSlot| {
                let address = slot.address();
                u64::from_be_bytes(address.0.0[..8].try_into().expect("8 bytes"))
            };
            keys.sort_unstable_by(|(left, left_slot), (right, right_slot)| {
                prefix(left_slot)
                    .cmp(&prefix(right_slot))
                    .then_with(|| left_slot.address().cmp(&right_slot.address()))
                    .then_with(|| left.cmp(right))
            });
            for (outpoint, slot) in &keys {
                pacer.step();
                let key = address_key(&slot.address(), outpoint);
                match slot.state() {
                    SlotState::Fresh | SlotState::Dirty => {
                        writer.put(Table::AddressIndex, &key, &[])?
                    }
                    SlotState::Spent => writer.delete(Table::AddressIndex, &key)?,
                }
            }
        }
        let mut txids: Vec<(&Txid, &TxLocation)> = cache.tx_index.iter().collect();
        txids.sort_unstable_by_key(|(txid, _)| **txid);
        for (txid, location) in txids {
            pacer.step();
            writer.put(Table::TxIndex, txid.as_bytes(), &encode(location))?;
        }
        writer.put(Table::UtxoMeta, utxo_meta::FLUSHED, &encode(&Some(up_to)))?;
        Ok(())
    })
}

/// A created output as the change record stores it: its place in the block body, which holds
/// the output itself, so a block's change record costs a few bytes per created output.
#[derive(BorshSerialize, BorshDeserialize)]
struct CreatedRef {
    position: u32,
    index: u32,
    is_collateral: bool,
}

/// A block's change record: the spent outputs in full (the block does not contain them; this is
/// the undo data), the created ones by reference.
#[derive(BorshSerialize, BorshDeserialize)]
struct StoredChanges {
    spent: BoundedVec<(OutPoint, UtxoEntry), MAX_BLOCK_CHANGES>,
    created: BoundedVec<CreatedRef, MAX_BLOCK_CHANGES>,
}

/// Encodes `changes` by reference to `block`, refusing any created output the block does not
/// contain at the block's height.
fn compact_changes(block: &Block, txids: &[Txid], changes: &BlockChanges) -> Result<StoredChanges> {
    let height = block.header.height;
    let refuse = |reason: String| StorageError::InvalidCommit { height, reason };
    let positions: HashMap<&Txid, usize> = txids
        .iter()
        .enumerate()
        .map(|(position, txid)| (txid, position))
        .collect();
    let mut created = Vec::with_capacity(changes.created.len());
    for (outpoint, entry) in changes.created.iter() {
        let position = *positions.get(&outpoint.txid).ok_or_else(|| {
            refuse(format!(
                "created output {outpoint} is not from a transaction of the block"
            ))
        })?;
        let output = block.transactions[position]
            .body
            .outputs
            .get(outpoint.index as usize);
        if output != Some(&entry.output) || entry.height != height {
            return Err(refuse(format!(
                "created output {outpoint} does not match the block's transaction output"
            )));
        }
        created.push(CreatedRef {
            position: position as u32,
            index: outpoint.index,
            is_collateral: entry.is_collateral,
        });
    }
    Ok(StoredChanges {
        spent: changes.spent.clone(),
        created: BoundedVec::new(created).expect("as many as the bounded input"),
    })
}

/// The inverse of [`compact_changes`].
fn expand_changes(block: &Block, txids: &[Txid], stored: StoredChanges) -> Result<BlockChanges> {
    let height = block.header.height;
    let mut created = Vec::with_capacity(stored.created.len());
    for reference in stored.created.iter() {
        let output = txids.get(reference.position as usize).and_then(|_| {
            block.transactions[reference.position as usize]
                .body
                .outputs
                .get(reference.index as usize)
        });
        let output = output.ok_or_else(|| {
            corrupt(format!(
                "the change record of block {height} points outside the block"
            ))
        })?;
        created.push((
            OutPoint {
                txid: txids[reference.position as usize],
                index: reference.index,
            },
            UtxoEntry {
                output: *output,
                height,
                is_collateral: reference.is_collateral,
            },
        ));
    }
    Ok(BlockChanges {
        spent: stored.spent,
        created: BoundedVec::new(created).expect("as many as the bounded record"),
    })
}

/// Counters for monitoring and benchmarks.
#[derive(Clone, Debug, Default)]
pub struct StoreStats {
    /// Blocks replayed from the change log when the store was opened.
    pub replayed_blocks: u64,
    /// How long opening (including replay) took.
    pub open_duration: Duration,
    /// Flushes completed since open.
    pub flushes: u64,
    /// Total time the completed flushes took to write, on whichever thread wrote them.
    pub flush_duration: Duration,
    /// Total time the node's thread waited for a flush: a flush that is not on a background
    /// thread, or a background flush that the next one had to wait for because the fresh
    /// cache filled first.
    pub flush_wait_duration: Duration,
    /// Whether a flush is being written now.
    pub flush_in_progress: bool,
    /// Total time the engine took to write and sync committed blocks since open (the durable
    /// block commits alone: no flush, no encoding, no cache update).
    pub block_write_duration: Duration,
    /// Bytes the write-back cache's tables occupy now, a layer being flushed included.
    pub cache_bytes: usize,
    /// Cached UTXO changes now, a layer being flushed included.
    pub cached_utxos: usize,
    /// The address index built or dropped when the store was opened, if its setting changed.
    pub address_index_switch: Option<AddressIndexSwitch>,
}

/// The address index built from the UTXO set, or dropped, at open (its setting had changed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddressIndexSwitch {
    /// Built (`true`) or dropped.
    pub built: bool,
    /// Index entries written: one per UTXO when built.
    pub entries: u64,
    /// How long it took, the flush before it included.
    pub duration: Duration,
}

/// The chain store over a key-value backend. Implements [`ChainStore`], [`ConsensusLog`] and
/// [`UtxoView`].
pub struct ChainDb<B: KvBackend> {
    backend: B,
    config: StoreConfig,
    tip: Option<ChainTip>,
    finalized: Option<Height>,
    /// The height up to which the UTXO file is written.
    flushed: Option<Height>,
    /// The highest height whose change record was deleted; those above it up to `flushed` are
    /// redundant and go with the next commit to the chain file.
    changes_deleted_through: Option<Height>,
    /// Bodies below this height have been pruned.
    pruned_below: u64,
    commitment: UtxoCommitment,
    registry: MasternodeRegistry,
    /// The changes of the blocks from `active_from` on.
    cache: Cache,
    /// The first height whose changes `cache` holds.
    active_from: u64,
    /// The layer below `cache`, while it is written to the UTXO file.
    frozen: Option<Frozen>,
    /// The flush writing `frozen`.
    job: Option<FlushJob>,
    /// UTXOs read from the UTXO file, ahead ([`ChainDb::prefetch_utxos`]) or by a lookup that
    /// missed the cache. An entry goes when a committed block changes its outpoint, so what is
    /// left always matches the file under the cache layers.
    prefetched: std::sync::Mutex<FastMap<OutPoint, Option<UtxoEntry>>>,
    /// Set by the first failed write; every later write is refused.
    halted: Option<String>,
    stats: StoreStats,
    /// While set, consensus-log records, node state and certificates are committed without
    /// waiting for the disk, and [`ChainDb::sync`] makes them durable together (group commit).
    deferred: bool,
    /// Told how long each durable commit took (for the daemon's metrics).
    commit_observer: Option<CommitObserver>,
    /// Where each stored certified transaction is (ADR 0022).
    finals: Finals,
    /// The consensus log's live records (ADR 0021).
    log: LogIndex,
}

/// Receives the duration of every durable commit (block, flush, or group sync).
pub type CommitObserver = Box<dyn FnMut(std::time::Duration) + Send>;

impl<B: KvBackend> std::fmt::Debug for ChainDb<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainDb")
            .field("tip", &self.tip)
            .field("flushed", &self.flushed)
            .field("cached_utxos", &self.cache.utxos.len())
            .field("flushing", &self.frozen.as_ref().map(|frozen| frozen.up_to))
            .finish_non_exhaustive()
    }
}

/// The on-disk chain store.
pub type RedbChainDb = ChainDb<RedbBackend>;

fn height_key(height: Height) -> [u8; 8] {
    height.0.to_be_bytes()
}

fn outpoint_key(outpoint: &OutPoint) -> [u8; 36] {
    let mut key = [0u8; 36];
    key[..32].copy_from_slice(outpoint.txid.as_bytes());
    key[32..].copy_from_slice(&outpoint.index.to_be_bytes());
    key
}

fn outpoint_from_key(key: &[u8]) -> Option<OutPoint> {
    let txid: [u8; 32] = key.get(..32)?.try_into().ok()?;
    let index: [u8; 4] = key.get(32..36)?.try_into().ok()?;
    Some(OutPoint {
        txid: Txid(Hash32(txid)),
        index: u32::from_be_bytes(index),
    })
}

/// Where the address is in a UTXO as the UTXO set stores it (`encode(&UtxoEntry)`: the output's
/// 8-byte amount, then its address), for a backend that derives the address index from the set
/// (ADR 0030).
const ADDRESS_IN_UTXO: std::ops::Range<usize> = 8..8 + std::mem::size_of::<Address>();

/// The address a stored UTXO pays.
fn utxo_address(value: &[u8]) -> Option<&[u8]> {
    value.get(ADDRESS_IN_UTXO)
}

fn address_key(address: &Address, outpoint: &OutPoint) -> [u8; 68] {
    let mut key = [0u8; 68];
    key[..32].copy_from_slice(&address.0.0);
    key[32..].copy_from_slice(&outpoint_key(outpoint));
    key
}

/// The address index's bit in the stored index settings (the transaction index's is 1).
const ADDRESS_INDEX_FLAG: u8 = 2;
/// Entries read at a time while the address index is built or dropped.
const SWITCH_SCAN_CHUNK: usize = 4_096;

fn index_names(flags: u8) -> String {
    let names: Vec<&str> = [(1, "transactions"), (ADDRESS_INDEX_FLAG, "addresses")]
        .into_iter()
        .filter(|(bit, _)| flags & bit != 0)
        .map(|(_, name)| name)
        .collect();
    names.join(", ")
}

fn flush_thread_died() -> StorageError {
    StorageError::Io {
        context: "flushing the UTXO cache".to_string(),
        message: "the flush thread stopped without reporting an outcome".to_string(),
    }
}

fn decode_stored<T: BorshDeserialize>(bytes: &[u8], what: &str) -> Result<T> {
    decode(bytes).map_err(|error| corrupt(format!("{what} does not decode: {error}")))
}

/// Bytes a hash table with room for `capacity` entries of `slot` bytes occupies (hashbrown: a
/// power-of-two number of buckets, one control byte each, at most 7/8 full).
fn table_bytes(capacity: usize, slot: usize) -> usize {
    if capacity == 0 {
        return 0;
    }
    let buckets = if capacity < 8 {
        (capacity + 1).next_power_of_two().max(4)
    } else {
        (capacity.saturating_mul(8) / 7).next_power_of_two()
    };
    buckets.saturating_mul(slot + 1)
}

/// Bytes `map` will occupy at the peak of inserting `additional` entries, counting the old and
/// new tables that coexist while it grows.
fn peak_after<K, V, S>(map: &HashMap<K, V, S>, additional: usize) -> usize {
    let slot = std::mem::size_of::<(K, V)>();
    let now = table_bytes(map.capacity(), slot);
    let needed = map.len().saturating_add(additional);
    if needed <= map.capacity() {
        now
    } else {
        now + table_bytes(needed, slot)
    }
}

/// An empty map whose table, allocated now, takes at most `bytes`.
fn with_budget<K, V>(bytes: usize) -> FastMap<K, V> {
    let slot = std::mem::size_of::<(K, V)>() + 1;
    let fitting = bytes / slot;
    if fitting < 16 {
        return FastMap::default();
    }
    // The largest power of two at most `fitting`; hashbrown keeps tables at most 7/8 full.
    let buckets = 1usize << (usize::BITS - 1 - fitting.leading_zeros());
    FastMap::with_capacity_and_hasher(buckets / 8 * 7, Default::default())
}

fn bytes_of<K, V, S>(map: &HashMap<K, V, S>) -> usize {
    table_bytes(map.capacity(), std::mem::size_of::<(K, V)>())
}

impl RedbChainDb {
    /// Opens (or creates) the chain database in the file at `path`.
    pub fn open_path(path: &Path, config: StoreConfig) -> Result<RedbChainDb> {
        let options = RedbOptions {
            page_cache_bytes: config.page_cache_bytes,
            ..RedbOptions::default()
        };
        Self::open_path_with(path, config, options)
    }

    /// Like [`ChainDb::open_path`] with explicit engine settings (`config.page_cache_bytes` is
    /// ignored in favour of `options`).
    pub fn open_path_with(
        path: &Path,
        config: StoreConfig,
        options: RedbOptions,
    ) -> Result<RedbChainDb> {
        ChainDb::open(RedbBackend::open(path, options)?, config)
    }
}

impl<B: KvBackend> ChainDb<B> {
    /// Opens the store on `backend`: initialises a blank one, or checks an existing one
    /// (version, network, commitment) and replays the blocks committed since its last flush.
    /// Existing data is never replaced.
    pub fn open(backend: B, config: StoreConfig) -> Result<ChainDb<B>> {
        let started = Instant::now();
        let mut store = ChainDb {
            backend,
            config,
            tip: None,
            finalized: None,
            flushed: None,
            changes_deleted_through: None,
            pruned_below: 0,
            commitment: UtxoCommitment::empty(),
            registry: MasternodeRegistry::new(),
            cache: Cache::default(),
            active_from: 0,
            frozen: None,
            job: None,
            prefetched: std::sync::Mutex::new(FastMap::default()),
            halted: None,
            deferred: false,
            commit_observer: None,
            finals: Finals::default(),
            log: LogIndex::default(),
            stats: StoreStats::default(),
        };
        store.cache = Cache::with_budget(store.layer_budget(), store.config.index_transactions);
        let index_addresses = store.config.index_addresses;
        if store.backend.is_blank()? {
            store.initialise()?;
        } else {
            store.load()?;
        }
        if store.config.index_addresses != index_addresses {
            store.switch_address_index(index_addresses)?;
        } else if index_addresses && store.backend.derives_address_index() {
            store.backend.derive_address_index(utxo_address)?;
        }
        store.stats.open_duration = started.elapsed();
        store.refresh_stats();
        Ok(store)
    }

    /// Writes the identity of a new database: the UTXO file's first, so that a chain file
    /// that exists always has its UTXO file.
    fn initialise(&mut self) -> Result<()> {
        if self
            .backend
            .get(Table::UtxoMeta, utxo_meta::FLUSHED)?
            .is_some()
        {
            return Err(StorageError::ForeignData {
                what: "the chain database file is empty, but the UTXO database file beside it \
                       holds a UTXO set"
                    .to_string(),
            });
        }
        self.write_utxo_identity()?;
        let mut batch = WriteBatch::new();
        for (key, value) in self.identity() {
            batch.put(Table::Meta, key.to_vec(), value);
        }
        batch.put(
            Table::Meta,
            meta::INDEXES.to_vec(),
            encode(&self.index_flags()),
        );
        self.backend.commit(&batch)
    }

    /// What both files record about the database they belong to, under the same keys: schema
    /// version, network and genesis hash.
    fn identity(&self) -> [(&'static [u8], Vec<u8>); 3] {
        [
            (meta::SCHEMA_VERSION, encode(&SCHEMA_VERSION)),
            (meta::NETWORK, encode(&self.config.network)),
            (meta::GENESIS, encode(&self.config.genesis_hash)),
        ]
    }

    fn write_utxo_identity(&self) -> Result<()> {
        let identity = self.identity();
        self.backend.utxo_writer().write(&mut |writer| {
            for (key, value) in &identity {
                writer.put(Table::UtxoMeta, key, value)?;
            }
            Ok(())
        })?;
        self.backend.publish_utxo_writes();
        Ok(())
    }

    /// Checks the network and genesis hash recorded in `table` (the chain file's metadata or
    /// the UTXO file's, which use the same keys) against the configuration. `whose` starts the
    /// names in error messages ("the", "the UTXO file's").
    fn check_identity(&self, table: Table, whose: &str) -> Result<()> {
        let read = |key: &[u8], what: &str| -> Result<Vec<u8>> {
            self.backend
                .get(table, key)?
                .ok_or_else(|| corrupt(format!("{whose} {what} is missing")))
        };
        let network: Network = decode_stored(
            &read(meta::NETWORK, "network")?,
            &format!("{whose} network"),
        )?;
        let genesis: BlockHash = decode_stored(
            &read(meta::GENESIS, "genesis hash")?,
            &format!("{whose} genesis hash"),
        )?;
        if network != self.config.network || genesis != self.config.genesis_hash {
            return Err(StorageError::WrongNetwork {
                stored_network: network,
                stored_genesis: genesis,
                network: self.config.network,
                genesis: self.config.genesis_hash,
            });
        }
        Ok(())
    }

    /// Checks that the UTXO file belongs to this chain and reads how far it is flushed.
    fn load_utxo_file(&mut self) -> Result<()> {
        self.flushed = match self.backend.get(Table::UtxoMeta, utxo_meta::FLUSHED)? {
            Some(bytes) => decode_stored(&bytes, "the UTXO file's flushed height")?,
            None => None,
        };
        match self.backend.get(Table::UtxoMeta, meta::SCHEMA_VERSION)? {
            Some(version) => {
                let version: u32 = decode_stored(&version, "the UTXO file's schema version")?;
                if version > SCHEMA_VERSION {
                    return Err(StorageError::NewerVersion {
                        found: version,
                        supported: SCHEMA_VERSION,
                    });
                }
                self.check_identity(Table::UtxoMeta, "the UTXO file's")?;
            }
            None if self.flushed.is_some() => {
                return Err(corrupt("the UTXO file has a flush point but no identity"));
            }
            // A UTXO file that was never flushed to can be made again: the change records
            // hold everything it would. The check below catches one that was deleted after
            // flushes.
            None if self.changes_deleted_through.is_none() => self.write_utxo_identity()?,
            None => {}
        }
        if self.changes_deleted_through.map(|height| height.0) > self.flushed.map(|h| h.0) {
            return Err(corrupt(format!(
                "the UTXO database file is flushed to {:?}, but the chain file deleted the \
                 change records through {:?}: the UTXO file was replaced or deleted",
                self.flushed.map(|height| height.0),
                self.changes_deleted_through.map(|height| height.0),
            )));
        }
        Ok(())
    }

    /// How many cache layers share the budget and the unflushed-block limit: two when flushes
    /// run in the background, since a fresh layer fills while the full one is written.
    fn layers(&self) -> u8 {
        if self.config.background_flush { 2 } else { 1 }
    }

    /// The bytes one cache layer may take.
    fn layer_budget(&self) -> usize {
        self.config.cache_bytes / usize::from(self.layers())
    }

    /// The most blocks one cache layer may hold, so that the blocks not yet flushed stay
    /// within `max_unflushed_blocks` even with a layer being written.
    fn layer_blocks(&self) -> u64 {
        (self.config.max_unflushed_blocks / u64::from(self.layers())).max(1)
    }

    /// Builds the address index from the UTXO set (`on`), or drops it, for a store whose files
    /// were built the other way: the setting changed while the node was stopped. Every cached
    /// change is flushed first, so the UTXO file holds the whole set; then one transaction of
    /// that file clears the index and, to build it, adds an entry per UTXO; only then does the
    /// chain file record the new setting. A crash in between leaves the old setting recorded,
    /// and the next open does it all again from the start, so no stale entry can survive.
    ///
    /// A backend that derives the index from the UTXO set (ADR 0030) builds it in memory
    /// instead, after the same flush, and only the setting is written.
    fn switch_address_index(&mut self, on: bool) -> Result<()> {
        let started = Instant::now();
        if let Some(tip) = self.tip {
            self.flush_to(tip.height)?;
        }
        if self.backend.derives_address_index() {
            let entries = if on {
                self.backend.derive_address_index(utxo_address)?
            } else {
                0
            };
            return self.record_address_index(on, entries, started);
        }
        let writer = self.backend.utxo_writer();
        let mut entries = 0u64;
        writer.write(&mut |writer: &mut dyn TableWriter| {
            self.backend
                .scan_all(Table::AddressIndex, SWITCH_SCAN_CHUNK, |key, _| {
                    writer.delete(Table::AddressIndex, key)
                })?;
            if on {
                self.try_for_each_utxo(|outpoint, entry| {
                    entries += 1;
                    writer.put(
                        Table::AddressIndex,
                        &address_key(&entry.output.address, outpoint),
                        &[],
                    )
                })?;
            }
            Ok(())
        })?;
        self.backend.publish_utxo_writes();
        self.record_address_index(on, entries, started)
    }

    /// Records the address-index setting `on` in the chain file, once the index was built
    /// (`entries` of them since `started`) or dropped.
    fn record_address_index(&mut self, on: bool, entries: u64, started: Instant) -> Result<()> {
        self.config.index_addresses = on;
        let mut batch = WriteBatch::new();
        batch.put(
            Table::Meta,
            meta::INDEXES.to_vec(),
            encode(&self.index_flags()),
        );
        self.backend.commit(&batch)?;
        self.stats.address_index_switch = Some(AddressIndexSwitch {
            built: on,
            entries,
            duration: started.elapsed(),
        });
        Ok(())
    }

    fn index_flags(&self) -> u8 {
        u8::from(self.config.index_transactions)
            | if self.config.index_addresses {
                ADDRESS_INDEX_FLAG
            } else {
                0
            }
    }

    fn meta(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.backend.get(Table::Meta, key)
    }

    fn load(&mut self) -> Result<()> {
        let Some(version) = self.meta(meta::SCHEMA_VERSION)? else {
            return Err(StorageError::ForeignData {
                what: "the database has tables but no TimeCoin schema version".to_string(),
            });
        };
        let version: u32 = decode_stored(&version, "the schema version")?;
        if version > SCHEMA_VERSION {
            return Err(StorageError::NewerVersion {
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        if version < SCHEMA_VERSION {
            return Err(StorageError::OlderVersion {
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        self.check_identity(Table::Meta, "the")?;
        let indexes: u8 = decode_stored(
            &self
                .meta(meta::INDEXES)?
                .ok_or_else(|| corrupt("the index settings are missing"))?,
            "the index settings",
        )?;
        // The address index alone can be built from the UTXO set, or dropped: the store then
        // loads as it was built and switches once loaded. The transaction index would need
        // every block, which pruning may have removed.
        let switch_addresses = indexes ^ self.index_flags() == ADDRESS_INDEX_FLAG;
        if indexes != self.index_flags() && !switch_addresses {
            return Err(StorageError::IndexesDiffer {
                stored: index_names(indexes),
                configured: index_names(self.index_flags()),
            });
        }
        if switch_addresses {
            self.config.index_addresses = !self.config.index_addresses;
        }
        self.tip = match self.meta(meta::TIP)? {
            Some(bytes) => Some(decode_stored(&bytes, "the tip")?),
            None => None,
        };
        self.changes_deleted_through = match self.meta(meta::CHANGES_DELETED_THROUGH)? {
            Some(bytes) => Some(decode_stored(
                &bytes,
                "the height of the deleted change records",
            )?),
            None => None,
        };
        self.load_utxo_file()?;
        self.active_from = self.flushed.map_or(0, |height| height.0 + 1);
        self.finalized = match self.meta(meta::FINALIZED)? {
            Some(bytes) => Some(decode_stored(&bytes, "the finalized height")?),
            None => None,
        };
        self.pruned_below = match self.meta(meta::PRUNED_BELOW)? {
            Some(bytes) => decode_stored(&bytes, "the pruning point")?,
            None => 0,
        };
        self.load_registry()?;
        let (finals, mut cleanup) = Finals::load(&self.backend)?;
        self.finals = finals;
        let (log, log_cleanup) = LogIndex::load(&self.backend)?;
        self.log = log;
        cleanup.extend(log_cleanup);
        if !cleanup.is_empty() {
            self.backend.commit(&cleanup)?;
        }
        let Some(tip) = self.tip else {
            if self.flushed.is_some() {
                return Err(corrupt("a flush point is recorded but no tip"));
            }
            return Ok(());
        };
        let header = self
            .header(&tip.hash)?
            .ok_or_else(|| corrupt(format!("the tip header {} is missing", tip.hash)))?;
        if header.height != tip.height || self.block_hash(tip.height)? != Some(tip.hash) {
            return Err(corrupt(format!(
                "the tip {} is not indexed at its height",
                tip.hash
            )));
        }
        let bytes = self
            .meta(meta::TIP_COMMITMENT)?
            .ok_or_else(|| corrupt("the tip's UTXO commitment is missing"))?;
        self.commitment = UtxoCommitment::from_bytes(&bytes)
            .ok_or_else(|| corrupt("the tip's UTXO commitment has the wrong length"))?;
        if self.commitment.digest() != header.utxo_commitment {
            return Err(corrupt(format!(
                "the stored UTXO commitment {} does not match the tip header's {} at height {}",
                self.commitment.digest(),
                header.utxo_commitment,
                tip.height
            )));
        }
        if self.flushed.is_some_and(|flushed| flushed > tip.height) {
            return Err(corrupt("the flush point is above the tip"));
        }
        self.replay(tip)
    }

    fn load_registry(&mut self) -> Result<()> {
        const CHUNK: usize = 4096;
        let mut events = Vec::new();
        self.backend
            .scan_all(Table::Masternodes, CHUNK, |_, value| {
                let registration: MasternodeRegistration =
                    decode_stored(value, "a masternode registration")?;
                events.push(MasternodeEvent::Registered(registration));
                if events.len() > MAX_MASTERNODES {
                    return Err(corrupt("the masternode registry exceeds its limit"));
                }
                Ok(())
            })?;
        self.registry.apply(&events);
        Ok(())
    }

    /// Re-applies the changes of every block committed after the last flush to the cache.
    fn replay(&mut self, tip: ChainTip) -> Result<()> {
        let first = self.flushed.map_or(0, |flushed| flushed.0 + 1);
        for height in first..=tip.height.0 {
            let height = Height(height);
            let stored: StoredChanges = decode_stored(
                &chunked::get(&self.backend, Table::Changes, &height_key(height))?.ok_or_else(
                    || {
                        corrupt(format!(
                            "the UTXO changes of unflushed block {height} are missing"
                        ))
                    },
                )?,
                "a block's UTXO changes",
            )?;
            let hash = self
                .block_hash(height)?
                .ok_or_else(|| corrupt(format!("no block hash at height {height}")))?;
            let block = self.block(&hash)?.ok_or_else(|| {
                corrupt(format!("the body of unflushed block {height} is missing"))
            })?;
            let txids = block.txids();
            let changes = expand_changes(&block, &txids, stored)?;
            self.make_room(&changes, txids.len(), height)?;
            self.cache_block(height, &changes, &txids);
            self.report_fill(height);
            self.stats.replayed_blocks += 1;
        }
        Ok(())
    }

    /// Starts a flush of the cache first if caching these changes could take it over its
    /// layer's budget or block limit. `height` is the block about to be cached; a flush still
    /// running from before is waited for first.
    fn make_room(
        &mut self,
        changes: &BlockChanges,
        transactions: usize,
        height: Height,
    ) -> Result<()> {
        self.poll_flush()?;
        let peak = peak_after(&self.cache.utxos, changes.len())
            + peak_after(&self.cache.tx_index, transactions)
            + self.cache.address_deletes_bytes();
        let cached_blocks = height.0.saturating_sub(self.active_from);
        if !self.cache.is_empty()
            && (peak > self.layer_budget() || cached_blocks >= self.layer_blocks())
        {
            // Everything before the block about to be cached is what the UTXO file gets.
            let up_to = height.checked_prev().expect("a block above a cached one");
            self.wait_for_flush()?;
            self.start_flush(up_to, self.config.background_flush)?;
        }
        Ok(())
    }

    /// Freezes the cache, which covers the blocks up to `up_to`, and starts writing it to the
    /// UTXO file, on a background thread or (without `background`) before returning. A fresh
    /// cache takes the next blocks.
    fn start_flush(&mut self, up_to: Height, background: bool) -> Result<()> {
        self.check_not_halted()?;
        assert!(
            self.job.is_none() && self.frozen.is_none(),
            "one flush at a time"
        );
        let fresh = Cache::with_budget(self.layer_budget(), self.config.index_transactions);
        let cache = Arc::new(std::mem::replace(&mut self.cache, fresh));
        self.active_from = up_to.0 + 1;
        self.frozen = Some(Frozen {
            cache: Arc::clone(&cache),
            up_to,
        });
        let writer = self.backend.utxo_writer();
        let index_addresses = self.config.index_addresses && !self.backend.derives_address_index();
        let (report, outcome) = mpsc::channel();
        let priority = Arc::new(FlushPriority::default());
        let job_priority = Arc::clone(&priority);
        let job = move || {
            let lowered = background && priority::lower_this_thread();
            let started = Instant::now();
            let result = write_cache(
                &writer,
                &cache,
                up_to,
                index_addresses,
                &job_priority,
                lowered,
            )
            .map(|()| started.elapsed());
            // The store may have been dropped meanwhile; then nobody needs the outcome.
            let _ = report.send(result);
        };
        let worker = if background {
            let spawned = std::thread::Builder::new()
                .name(FLUSH_THREAD_NAME.to_string())
                .spawn(job)
                .map_err(|error| StorageError::from_io("starting the flush thread", &error));
            match spawned {
                Ok(worker) => Some(worker),
                // The frozen layer stays, so reads stay right; writes stop.
                Err(error) => return Err(self.halt(error)),
            }
        } else {
            // The caller waits for all of it.
            let started = Instant::now();
            job();
            self.stats.flush_wait_duration += started.elapsed();
            None
        };
        let inline = worker.is_none();
        self.job = Some(FlushJob {
            outcome,
            worker,
            priority,
        });
        if inline {
            // Complete it now: a frozen layer kept until the next commit would hold a full
            // budget's worth of memory beside the fresh cache.
            return self.wait_for_flush();
        }
        self.refresh_stats();
        Ok(())
    }

    /// Completes a flush that has finished, without waiting for one that has not.
    fn poll_flush(&mut self) -> Result<()> {
        let Some(job) = &self.job else {
            return Ok(());
        };
        match job.outcome.try_recv() {
            Ok(result) => self.finish_flush(result),
            Err(mpsc::TryRecvError::Empty) => Ok(()),
            Err(mpsc::TryRecvError::Disconnected) => self.finish_flush(Err(flush_thread_died())),
        }
    }

    /// Waits for the flush in progress, if any, and completes it.
    fn wait_for_flush(&mut self) -> Result<()> {
        let Some(job) = &self.job else {
            return Ok(());
        };
        job.priority.hurry();
        let started = Instant::now();
        let result = job
            .outcome
            .recv()
            .unwrap_or_else(|_| Err(flush_thread_died()));
        self.stats.flush_wait_duration += started.elapsed();
        self.finish_flush(result)
    }

    /// Takes note of a flush's outcome. After a success the UTXO file holds the frozen layer,
    /// which is dropped, and the change records it covers can go. After a failure the layer
    /// stays (reads still need it) and the store halts.
    fn finish_flush(&mut self, result: Result<Duration>) -> Result<()> {
        let job = self.job.take().expect("a flush in progress");
        if let Some(worker) = job.worker {
            // It has sent its outcome, so it is about to return.
            let _ = worker.join();
        }
        match result {
            Ok(took) => {
                // Published here, on the node's thread, not by the flush thread: publishing
                // holds the index's write lock, which a flush at the lowest priority could
                // keep for a long time. Reads go on to see the layer until this returns.
                self.backend.publish_utxo_writes();
                let frozen = self.frozen.take().expect("a flush writes a frozen layer");
                self.flushed = Some(frozen.up_to);
                self.stats.flushes += 1;
                self.stats.flush_duration += took;
                self.refresh_stats();
                Ok(())
            }
            Err(error) => {
                self.halted.get_or_insert_with(|| error.to_string());
                Err(error)
            }
        }
    }

    /// Writes the cached changes up to `up_to` to the UTXO file and waits until they are
    /// durable.
    fn flush_to(&mut self, up_to: Height) -> Result<()> {
        self.wait_for_flush()?;
        if !self.cache.is_empty() || self.flushed != Some(up_to) {
            self.start_flush(up_to, false)?;
        }
        Ok(())
    }

    /// The layer a flush is writing, if any.
    fn frozen_cache(&self) -> Option<&Cache> {
        self.frozen.as_ref().map(|frozen| &*frozen.cache)
    }

    /// The frozen layer's slot for `outpoint`, if a flush is writing one.
    fn frozen_slot(&self, outpoint: &OutPoint) -> Option<CacheSlot> {
        self.frozen_cache()
            .and_then(|cache| cache.utxos.get(outpoint).copied())
    }

    /// The newest cached change to `outpoint`: the fresh layer's, else the frozen one's.
    fn cached_slot(&self, outpoint: &OutPoint) -> Option<CacheSlot> {
        self.cache
            .utxos
            .get(outpoint)
            .copied()
            .or_else(|| self.frozen_slot(outpoint))
    }

    /// Tells a background flush in progress how full the fresh layer is after the block at
    /// `height`, by whichever of its limits is nearest: its tables' room or its block count.
    fn report_fill(&self, height: Height) {
        let Some(job) = &self.job else {
            return;
        };
        let share =
            |used: usize, room: usize| (used.saturating_mul(1_000) / room.max(1)).min(1_000) as u32;
        let blocks = (height.0 + 1).saturating_sub(self.active_from);
        let fill = share(self.cache.utxos.len(), self.cache.utxos.capacity())
            .max(share(
                self.cache.tx_index.len(),
                self.cache.tx_index.capacity(),
            ))
            .max(share(
                usize::try_from(blocks).unwrap_or(usize::MAX),
                usize::try_from(self.layer_blocks()).unwrap_or(usize::MAX),
            ));
        job.priority.set_fill(fill);
    }

    /// Applies a committed block's changes to the in-memory cache.
    fn cache_block(&mut self, height: Height, changes: &BlockChanges, txids: &[Txid]) {
        self.forget_changed_reads(changes);
        for (outpoint, entry) in changes.spent.iter() {
            let below = self.frozen_slot(outpoint);
            match self.cache.utxos.entry(*outpoint) {
                // Neither the output nor its address-index entry ever reached the database.
                Entry::Occupied(slot) if slot.get().state() == SlotState::Fresh => {
                    slot.remove();
                }
                Entry::Occupied(mut slot) => {
                    let previous = *slot.get();
                    if previous.state() == SlotState::Dirty
                        && previous.address() != entry.output.address
                    {
                        // Cannot happen with consistent changes; keep the index right anyway.
                        self.cache
                            .address_deletes
                            .push((previous.address(), *outpoint));
                    }
                    slot.insert(CacheSlot::new(SlotState::Spent, entry));
                }
                Entry::Vacant(slot) => {
                    // An output the frozen layer creates will be in the file once it is
                    // flushed, so spending it must delete it there: the slot is never dropped
                    // as fresh, and a stray address is handled as for a dirty slot.
                    if let Some(previous) = below
                        && previous.state() != SlotState::Spent
                        && previous.address() != entry.output.address
                    {
                        self.cache
                            .address_deletes
                            .push((previous.address(), *outpoint));
                    }
                    slot.insert(CacheSlot::new(SlotState::Spent, entry));
                }
            }
        }
        for (outpoint, entry) in changes.created.iter() {
            let below = self.frozen_slot(outpoint);
            match self.cache.utxos.entry(*outpoint) {
                Entry::Occupied(mut slot) => {
                    let previous = *slot.get();
                    let state = match previous.state() {
                        SlotState::Fresh => SlotState::Fresh,
                        SlotState::Dirty | SlotState::Spent => {
                            // The database may hold the previous entry's address-index key.
                            if previous.address() != entry.output.address {
                                self.cache
                                    .address_deletes
                                    .push((previous.address(), *outpoint));
                            }
                            SlotState::Dirty
                        }
                    };
                    slot.insert(CacheSlot::new(state, entry));
                }
                Entry::Vacant(slot) => {
                    let state = match below {
                        // The file will hold what the frozen layer says about this outpoint:
                        // overwrite it, and the old address-index key if the address moved.
                        Some(previous) => {
                            if previous.address() != entry.output.address {
                                self.cache
                                    .address_deletes
                                    .push((previous.address(), *outpoint));
                            }
                            SlotState::Dirty
                        }
                        None => SlotState::Fresh,
                    };
                    slot.insert(CacheSlot::new(state, entry));
                }
            }
        }
        if !self.config.index_transactions {
            return;
        }
        for (position, txid) in txids.iter().enumerate() {
            let position = u32::try_from(position).expect("a block's transactions are bounded");
            self.cache
                .tx_index
                .insert(*txid, TxLocation { height, position });
        }
    }

    /// Adds to `batch` the deletion of the change records that completed flushes made
    /// redundant. Returns the height they go through, to note once the batch is committed.
    fn add_flushed_change_deletes(&self, batch: &mut WriteBatch) -> Result<Option<Height>> {
        let Some(flushed) = self.flushed else {
            return Ok(None);
        };
        let first = self
            .changes_deleted_through
            .map_or(0, |height| height.0 + 1);
        if first > flushed.0 {
            return Ok(None);
        }
        for height in first..=flushed.0 {
            chunked::delete(
                &self.backend,
                batch,
                Table::Changes,
                &height_key(Height(height)),
            )?;
        }
        batch.put(
            Table::Meta,
            meta::CHANGES_DELETED_THROUGH.to_vec(),
            encode(&flushed),
        );
        Ok(Some(flushed))
    }

    /// The heights whose bodies pruning may delete now, given the database is flushed to
    /// `flushed`: bodies replay may still need are kept.
    fn prune_range(&self, flushed: Height) -> Option<std::ops::Range<u64>> {
        let keep = self.config.prune_keep_blocks?.max(MIN_PRUNE_KEEP_BLOCKS);
        let tip = self.tip?.height.0;
        let end = tip
            .saturating_add(1)
            .saturating_sub(keep)
            .min(flushed.0.saturating_add(1));
        let end = end.min(
            self.pruned_below
                .saturating_add(MAX_BODIES_PRUNED_PER_COMMIT),
        );
        (self.pruned_below < end).then_some(self.pruned_below..end)
    }

    /// Deletes, in one durable commit to the chain file, the change records that flushes made
    /// redundant and the bodies pruning may now drop; what a block commit would otherwise take
    /// along.
    fn commit_housekeeping(&mut self) -> Result<()> {
        let mut batch = WriteBatch::new();
        let deleted_through = self.add_flushed_change_deletes(&mut batch)?;
        let prune = self.flushed.and_then(|flushed| self.prune_range(flushed));
        if let Some(range) = prune.clone() {
            self.add_prune_ops(&mut batch, range)?;
        }
        if batch.is_empty() {
            return Ok(());
        }
        if let Err(error) = self.timed(|backend| backend.commit(&batch)) {
            return Err(self.halt(error));
        }
        if deleted_through.is_some() {
            self.changes_deleted_through = deleted_through;
        }
        if let Some(range) = prune {
            self.pruned_below = range.end;
        }
        Ok(())
    }

    fn add_prune_ops(&self, batch: &mut WriteBatch, range: std::ops::Range<u64>) -> Result<()> {
        for height in range.clone() {
            if let Some(hash) = self.block_hash(Height(height))? {
                chunked::delete(&self.backend, batch, Table::Bodies, hash.as_bytes())?;
            }
        }
        batch.put(Table::Meta, meta::PRUNED_BELOW.to_vec(), encode(&range.end));
        Ok(())
    }

    fn check_not_halted(&self) -> Result<()> {
        match &self.halted {
            Some(cause) => Err(StorageError::Halted {
                cause: cause.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Records a write failure: the store refuses every later write, so that the node stops
    /// at a block boundary instead of building on state that may not be on disk.
    fn halt(&mut self, error: StorageError) -> StorageError {
        if error.is_write_failure() && self.halted.is_none() {
            self.halted = Some(error.to_string());
        }
        error
    }

    /// Commits a small batch of the node's own records: deferred in group-commit mode, durable
    /// otherwise. A failure halts the store.
    fn commit_record_batch(&mut self, batch: &WriteBatch) -> Result<()> {
        let result = if self.deferred {
            self.backend.commit_deferred(batch)
        } else {
            self.timed(|backend| backend.commit(batch))
        };
        result.map_err(|error| self.halt(error))
    }

    /// Commits a block's batch durably, counting the time in the statistics.
    fn write_block(&mut self, batch: &WriteBatch) -> Result<()> {
        let started = Instant::now();
        let result = self.timed(|backend| backend.commit(batch));
        self.stats.block_write_duration += started.elapsed();
        result.map_err(|error| self.halt(error))
    }

    /// Runs a durable backend operation and reports its duration to the observer. The
    /// certified transactions stored since the last one go first, so that every durable commit
    /// takes them along.
    fn timed(&mut self, operation: impl FnOnce(&mut B) -> Result<()>) -> Result<()> {
        let started = self.commit_observer.is_some().then(std::time::Instant::now);
        self.seal_finals()?;
        let result = operation(&mut self.backend);
        if let (Some(started), Some(observer)) = (started, self.commit_observer.as_mut()) {
            observer(started.elapsed());
        }
        result
    }

    /// Switches group-commit mode. While on, [`ConsensusLog::persist`],
    /// [`ChainDb::put_node_state`], [`ChainStore::store_certificate`] and
    /// [`ConsensusLog::prune_log`] return before their writes are durable; the caller must call
    /// [`ChainDb::sync`] before acting on them (before a vote they enable leaves the node).
    /// Block commits stay durable in either mode and make earlier deferred writes durable too.
    pub fn set_group_commit(&mut self, on: bool) {
        self.deferred = on;
    }

    /// Makes every write deferred by group-commit mode durable, with one fsync. A failure halts
    /// the store.
    pub fn sync(&mut self) -> Result<()> {
        self.check_not_halted()?;
        self.timed(|backend| backend.sync())
            .map_err(|error| self.halt(error))
    }

    /// Stores a certified transaction that is not in a block yet (`record` is the node's
    /// encoding of it with its certificate), so that finality survives a restart of every
    /// node. In group-commit mode the records stored between two syncs are written together, as
    /// one entry, by the next durable commit (ADR 0022). A txid stored already keeps its first
    /// record: any certificate of a transaction proves the same finality.
    pub fn put_final(&mut self, txid: &Txid, record: &[u8]) -> Result<()> {
        self.check_not_halted()?;
        if !self.finals.store(*txid, record.to_vec()) {
            return Ok(());
        }
        if !self.deferred {
            return self
                .timed(|backend| backend.sync())
                .map_err(|error| self.halt(error));
        }
        if self.finals.open_is_full() {
            self.seal_finals().map_err(|error| self.halt(error))?;
        }
        Ok(())
    }

    /// Forgets stored certified transactions (they are in a block now); txids not stored are
    /// skipped.
    pub fn remove_final(&mut self, txids: &[Txid]) -> Result<()> {
        self.check_not_halted()?;
        let removal = self
            .finals
            .removal(&self.backend, txids)
            .map_err(|error| self.halt(error))?;
        if !removal.batch().is_empty() {
            self.commit_record_batch(removal.batch())?;
        }
        self.finals.removed(removal);
        Ok(())
    }

    /// Up to `limit` stored certified transactions, the earliest stored first.
    pub fn finals(&self, limit: usize) -> Result<Vec<(Txid, Vec<u8>)>> {
        self.finals.list(&self.backend, limit)
    }

    /// Hands the certified transactions stored since the last seal to the backend as one
    /// deferred entry, which the next durable commit writes first.
    fn seal_finals(&mut self) -> Result<()> {
        if !self.finals.has_open() {
            return Ok(());
        }
        let mut batch = WriteBatch::new();
        self.finals.seal_into(&mut batch);
        self.backend.commit_deferred(&batch)
    }

    /// Reports the duration of every durable commit to `observer` from now on.
    pub fn set_commit_observer(&mut self, observer: CommitObserver) {
        self.commit_observer = Some(observer);
    }

    fn refresh_stats(&mut self) {
        let frozen = self.frozen_cache();
        let cache_bytes = self.cache.bytes() + frozen.map_or(0, Cache::bytes);
        let cached_utxos = self.cache.utxos.len() + frozen.map_or(0, |cache| cache.utxos.len());
        self.stats.cache_bytes = cache_bytes;
        self.stats.cached_utxos = cached_utxos;
        self.stats.flush_in_progress = self.job.is_some();
    }

    /// Whether `outpoint` has a cached change in either layer.
    fn is_cached(&self, outpoint: &OutPoint) -> bool {
        self.cached_slot(outpoint).is_some()
    }

    /// Asks a background flush in progress to take the node's CPU priority back (ADR 0019),
    /// as waiting for it does, but without waiting: for a caller that wants the flush done soon
    /// without blocking on it.
    pub fn hurry_flush(&self) {
        if let Some(job) = &self.job {
            job.priority.hurry();
        }
    }

    /// Waits for a background flush in progress, if any, and completes it.
    pub fn finish_background_flush(&mut self) -> Result<()> {
        self.wait_for_flush()?;
        self.refresh_stats();
        Ok(())
    }

    /// Reads the outputs a block is about to spend, in parallel where the backend can, so that
    /// the ledger's one-at-a-time lookups while applying it hit memory. At most
    /// [`MAX_PREFETCH`] outpoints; what was read is kept until a committed block changes it.
    pub fn prefetch_utxos(&self, outpoints: &[OutPoint]) -> Result<()> {
        let mut wanted: Vec<OutPoint> = outpoints
            .iter()
            .take(MAX_PREFETCH)
            // A cached outpoint is answered by the cache; and one in the layer being flushed
            // could be read from the file before or after the flush commits.
            .filter(|outpoint| !self.is_cached(outpoint))
            .copied()
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        let keys: Vec<Vec<u8>> = wanted
            .iter()
            .map(|outpoint| outpoint_key(outpoint).to_vec())
            .collect();
        let values = self.backend.get_many(Table::Utxos, &keys)?;
        let mut prefetched = self.kept_reads();
        if prefetched.len() + wanted.len() > MAX_PREFETCH {
            prefetched.clear();
        }
        for (outpoint, value) in wanted.into_iter().zip(values) {
            let entry = value
                .map(|bytes| decode_stored(&bytes, "a UTXO"))
                .transpose()?;
            prefetched.insert(outpoint, entry);
        }
        Ok(())
    }

    /// Reads ahead every UTXO lookup applying `block` makes: the outputs it spends, and the
    /// outpoints that its transactions without inputs (the reward) create, which the ledger
    /// looks up to refuse a duplicate and the [`crate::ChangeRecorder`] to record what an
    /// insert replaces. Those are misses, but a miss walks the B-tree like a hit, so reading
    /// them ahead in parallel saves as much. Outputs of transactions with inputs are new by
    /// construction and never looked up (ADR 0017). At most [`MAX_PREFETCH`] outpoints.
    pub fn prefetch_block(&self, block: &Block) -> Result<()> {
        let mut outpoints = Vec::new();
        for transaction in block.transactions.iter() {
            outpoints.extend(transaction.body.inputs.iter().map(|input| input.prevout));
            if timecoin_ledger::outputs_are_new(transaction) {
                continue;
            }
            let txid = transaction.txid();
            outpoints.extend((0..transaction.body.outputs.len()).map(|index| OutPoint {
                txid,
                index: u32::try_from(index).unwrap_or(u32::MAX),
            }));
        }
        self.prefetch_utxos(&outpoints)
    }

    /// The UTXOs kept from reads of the UTXO file. A thread that panicked holding the lock
    /// left a map of whole entries (each insert or removal is one call), so it is used as is.
    fn kept_reads(&self) -> std::sync::MutexGuard<'_, FastMap<OutPoint, Option<UtxoEntry>>> {
        self.prefetched
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Forgets the file reads of every outpoint `changes` spends or creates: the cache layers
    /// answer for them now, and once flushed the file no longer holds what was read. Past
    /// [`KEPT_READS`] the rest goes too, so reads nobody repeats do not pile up.
    fn forget_changed_reads(&mut self, changes: &BlockChanges) {
        let prefetched = self
            .prefetched
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if prefetched.len() > KEPT_READS {
            prefetched.clear();
            return;
        }
        for (outpoint, _) in changes.spent.iter().chain(changes.created.iter()) {
            prefetched.remove(outpoint);
        }
    }

    /// Durably replaces the node's state slot `name` (at most [`MAX_NODE_STATE_BYTES`]): for
    /// state that is overwritten rather than appended, such as the block-consensus engine's
    /// last signed statement and prepared block, which the write-once [`ConsensusLog`] cannot
    /// hold. Returns when the value is durable; a failure halts the store like any write.
    pub fn put_node_state(&mut self, name: &str, value: &[u8]) -> Result<()> {
        self.check_not_halted()?;
        if value.len() > MAX_NODE_STATE_BYTES {
            return Err(StorageError::InvalidCommit {
                height: self.tip.map_or(Height(0), |tip| tip.height),
                reason: format!(
                    "node state '{name}' of {} bytes exceeds {MAX_NODE_STATE_BYTES}",
                    value.len()
                ),
            });
        }
        let mut batch = WriteBatch::new();
        batch.put(Table::Meta, node_state_key(name), value.to_vec());
        self.commit_record_batch(&batch)
    }

    /// The node's state slot `name`, if it was ever written.
    pub fn node_state(&self, name: &str) -> Result<Option<Vec<u8>>> {
        self.backend.get(Table::Meta, &node_state_key(name))
    }

    /// The settings the store runs with.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// Counters for monitoring and benchmarks.
    pub fn stats(&self) -> &StoreStats {
        &self.stats
    }

    /// The height up to which the UTXO set and indexes are written to the database.
    pub fn flushed_height(&self) -> Option<Height> {
        self.flushed
    }

    /// The lowest height whose body may still be stored (pruning deletes those below).
    pub fn pruned_below(&self) -> Height {
        Height(self.pruned_below)
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The bytes the database occupies on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.backend.size_on_disk()
    }

    /// The first write failure, if the store has halted.
    pub fn halted(&self) -> Option<&str> {
        self.halted.as_deref()
    }

    /// Calls `visit` for every UTXO (database merged with cache), in no particular order.
    pub fn for_each_utxo(&self, mut visit: impl FnMut(&OutPoint, &UtxoEntry)) -> Result<()> {
        self.try_for_each_utxo(|outpoint, entry| {
            visit(outpoint, entry);
            Ok(())
        })
    }

    /// [`ChainDb::for_each_utxo`] with a visitor that can fail; the first failure stops it.
    fn try_for_each_utxo(
        &self,
        mut visit: impl FnMut(&OutPoint, &UtxoEntry) -> Result<()>,
    ) -> Result<()> {
        self.backend
            .for_each_unordered(Table::Utxos, &mut |key, value| {
                let outpoint = outpoint_from_key(key)
                    .ok_or_else(|| corrupt("a UTXO key has the wrong length"))?;
                if self.is_cached(&outpoint) {
                    return Ok(());
                }
                let entry: UtxoEntry = decode_stored(value, "a UTXO")?;
                visit(&outpoint, &entry)
            })?;
        if let Some(frozen) = &self.frozen {
            for (outpoint, slot) in &frozen.cache.utxos {
                if self.cache.utxos.contains_key(outpoint) {
                    continue;
                }
                if let Some(entry) = slot.unspent() {
                    visit(outpoint, &entry)?;
                }
            }
        }
        for (outpoint, slot) in &self.cache.utxos {
            if let Some(entry) = slot.unspent() {
                visit(outpoint, &entry)?;
            }
        }
        Ok(())
    }

    /// Recomputes the commitment of the whole UTXO set and checks it against the tip header's.
    /// Costs a pass over the set; the check at open compares only the stored commitment.
    pub fn verify_utxo_set(&self) -> Result<()> {
        let mut recomputed = UtxoCommitment::empty();
        self.for_each_utxo(|outpoint, entry| recomputed.insert(outpoint, entry))?;
        let expected = match self.tip {
            Some(tip) => {
                self.header(&tip.hash)?
                    .ok_or_else(|| corrupt("the tip header is missing"))?
                    .utxo_commitment
            }
            None => UtxoCommitment::empty().digest(),
        };
        if recomputed.digest() != expected {
            return Err(corrupt(format!(
                "the UTXO set's commitment {} does not match the tip header's {expected}",
                recomputed.digest()
            )));
        }
        Ok(())
    }

    fn check_commit(&self, commit: &BlockCommit<'_>) -> Result<()> {
        let header = &commit.block.header;
        let height = header.height;
        let refuse = |reason: String| Err(StorageError::InvalidCommit { height, reason });
        let hash = header.hash();
        match self.tip {
            None => {
                if height != Height(0) {
                    return refuse("the first block must be genesis (height 0)".to_string());
                }
                if hash != self.config.genesis_hash {
                    return refuse(format!(
                        "its hash {hash} is not the configured genesis {}",
                        self.config.genesis_hash
                    ));
                }
            }
            Some(tip) => {
                if Some(height) != tip.height.checked_next() {
                    return refuse(format!("the tip is at {}", tip.height));
                }
                if header.previous_hash != tip.hash {
                    return refuse(format!("it does not extend the tip {}", tip.hash));
                }
            }
        }
        if commit.commitment.digest() != header.utxo_commitment {
            return refuse("the UTXO commitment given does not match the header's".to_string());
        }
        if let Some(certificate) = commit.certificate
            && (certificate.height != height || certificate.block_hash != hash)
        {
            return refuse("the certificate is for another block".to_string());
        }
        Ok(())
    }
}

impl<B: KvBackend> Drop for ChainDb<B> {
    fn drop(&mut self) {
        // A flush in progress finishes first: the UTXO file stays open until its writer is
        // gone, so a store reopened on the same files right after would find them busy.
        if let Some(job) = self.job.take() {
            job.priority.hurry();
            if let Some(worker) = job.worker {
                let _ = worker.join();
            }
        }
    }
}

impl<B: KvBackend> UtxoView for ChainDb<B> {
    fn utxo(&self, outpoint: &OutPoint) -> Result<Option<UtxoEntry>, BackendError> {
        // Kept reads first: the map is far smaller than a cache layer's table, which is sized
        // for the layer's whole budget, so a probe misses the CPU's caches less often. Both
        // orders answer the same, since no outpoint is in both (`prefetch_utxos`,
        // `forget_changed_reads`).
        if let Some(entry) = self.kept_reads().get(outpoint) {
            return Ok(*entry);
        }
        match self.cached_slot(outpoint) {
            Some(slot) => Ok(slot.unspent()),
            None => {
                let bytes = self
                    .backend
                    .get(Table::Utxos, &outpoint_key(outpoint))
                    .map_err(|error| BackendError(error.to_string()))?;
                let entry = bytes
                    .map(|bytes| decode_stored(&bytes, "a UTXO"))
                    .transpose()
                    .map_err(|error| BackendError(error.to_string()))?;
                // Nothing in the cache layers covers this outpoint, so the file's answer holds
                // until a block changes it (`forget_changed_reads`), flushes included.
                let mut prefetched = self.kept_reads();
                if prefetched.len() < MAX_PREFETCH {
                    prefetched.insert(*outpoint, entry);
                }
                Ok(entry)
            }
        }
    }
}

impl<B: KvBackend> MasternodeView for ChainDb<B> {
    fn collateral_of_node_key(
        &self,
        node_key: &PublicKey,
    ) -> Result<Option<OutPoint>, BackendError> {
        self.registry.collateral_of_node_key(node_key)
    }

    fn registration(
        &self,
        collateral: &OutPoint,
    ) -> Result<Option<MasternodeRegistration>, BackendError> {
        self.registry.registration(collateral)
    }
}

impl<B: KvBackend> ChainStore for ChainDb<B> {
    fn tip(&self) -> Option<ChainTip> {
        self.tip
    }

    fn finalized_height(&self) -> Option<Height> {
        self.finalized
    }

    fn utxo_commitment(&self) -> &UtxoCommitment {
        &self.commitment
    }

    fn block_hash(&self, height: Height) -> Result<Option<BlockHash>> {
        self.backend
            .get(Table::Heights, &height_key(height))?
            .map(|bytes| decode_stored(&bytes, "a block hash"))
            .transpose()
    }

    fn header(&self, hash: &BlockHash) -> Result<Option<BlockHeader>> {
        self.backend
            .get(Table::Headers, hash.as_bytes())?
            .map(|bytes| decode_stored(&bytes, "a block header"))
            .transpose()
    }

    fn block(&self, hash: &BlockHash) -> Result<Option<Block>> {
        let Some(header) = self.header(hash)? else {
            return Ok(None);
        };
        let Some(body) = chunked::get(&self.backend, Table::Bodies, hash.as_bytes())? else {
            return Ok(None);
        };
        // The body is the transactions followed by the parent's certificate (ADR 0009).
        let (transactions, parent_commit): (
            BoundedVec<Transaction, MAX_BLOCK_TRANSACTIONS>,
            Option<Box<CommitCertificate>>,
        ) = decode_stored(&body, "a block body")?;
        Ok(Some(Block {
            header,
            transactions,
            parent_commit,
        }))
    }

    fn certificate(&self, height: Height) -> Result<Option<CommitCertificate>> {
        self.backend
            .get(Table::Certificates, &height_key(height))?
            .map(|bytes| decode_stored(&bytes, "a commit certificate"))
            .transpose()
    }

    fn transaction_location(&self, txid: &Txid) -> Result<Option<TxLocation>> {
        if !self.config.index_transactions {
            return Err(StorageError::IndexDisabled {
                index: "transaction",
            });
        }
        if let Some(location) = self
            .cache
            .tx_index
            .get(txid)
            .or_else(|| self.frozen_cache()?.tx_index.get(txid))
        {
            return Ok(Some(*location));
        }
        self.backend
            .get(Table::TxIndex, txid.as_bytes())?
            .map(|bytes| decode_stored(&bytes, "a transaction location"))
            .transpose()
    }

    fn address_outpoints(&self, address: &Address, limit: usize) -> Result<Vec<OutPoint>> {
        if !self.config.index_addresses {
            return Err(StorageError::IndexDisabled { index: "address" });
        }
        let limit = limit.min(MAX_ADDRESS_QUERY);
        // Changes since the last flush, in the order the flushes apply them: the layer being
        // flushed, then the fresh one; in each, the stray deletes first, then the slots.
        let mut pending: HashMap<OutPoint, bool> = HashMap::new();
        let layers = self.frozen_cache().into_iter().chain([&self.cache]);
        for layer in layers {
            for (owner, outpoint) in &layer.address_deletes {
                if owner == address {
                    pending.insert(*outpoint, false);
                }
            }
            for (outpoint, slot) in &layer.utxos {
                if slot.address() == *address {
                    pending.insert(*outpoint, slot.state() != SlotState::Spent);
                }
            }
        }
        let deleted = pending.values().filter(|present| !**present).count();
        let start = address_key(
            address,
            &OutPoint {
                txid: Txid(Hash32::ZERO),
                index: 0,
            },
        );
        let end = prefix_end(&address.0.0);
        let stored = self.backend.scan(
            Table::AddressIndex,
            &start,
            end.as_deref(),
            limit.saturating_add(deleted),
        )?;
        let mut outpoints = std::collections::BTreeSet::new();
        for (key, _) in &stored {
            let outpoint = outpoint_from_key(&key[32..])
                .ok_or_else(|| corrupt("an address-index key has the wrong length"))?;
            outpoints.insert(outpoint);
        }
        for (outpoint, present) in pending {
            if present {
                outpoints.insert(outpoint);
            } else {
                outpoints.remove(&outpoint);
            }
        }
        Ok(outpoints.into_iter().take(limit).collect())
    }

    fn masternodes(&self) -> &MasternodeRegistry {
        &self.registry
    }

    fn commit_block(&mut self, commit: BlockCommit<'_>) -> Result<()> {
        self.check_not_halted()?;
        self.check_commit(&commit)?;
        let block = commit.block;
        let height = block.header.height;
        let hash = block.hash();
        let txids = block.txids();
        let stored_changes = compact_changes(block, &txids, commit.changes)?;
        // Make room before the durable write, so that a block is cached right after it is
        // committed and never waits half-applied on a flush.
        self.make_room(commit.changes, txids.len(), height)?;

        let tip = ChainTip { height, hash };
        let mut batch = WriteBatch::new();
        batch.put(
            Table::Headers,
            hash.as_bytes().to_vec(),
            encode(&block.header),
        );
        chunked::put(
            &mut batch,
            Table::Bodies,
            hash.as_bytes(),
            encode(&(&block.transactions, &block.parent_commit)),
        );
        batch.put(Table::Heights, height_key(height).to_vec(), encode(&hash));
        chunked::put(
            &mut batch,
            Table::Changes,
            &height_key(height),
            encode(&stored_changes),
        );
        if let Some(certificate) = commit.certificate {
            batch.put(
                Table::Certificates,
                height_key(height).to_vec(),
                encode(certificate),
            );
            batch.put(Table::Meta, meta::FINALIZED.to_vec(), encode(&height));
        }
        for event in commit.masternode_events {
            match event {
                MasternodeEvent::Registered(registration) => batch.put(
                    Table::Masternodes,
                    outpoint_key(&registration.collateral).to_vec(),
                    encode(registration),
                ),
                MasternodeEvent::Deregistered { registration, .. } => batch.delete(
                    Table::Masternodes,
                    outpoint_key(&registration.collateral).to_vec(),
                ),
            }
        }
        batch.put(Table::Meta, meta::TIP.to_vec(), encode(&tip));
        batch.put(
            Table::Meta,
            meta::TIP_COMMITMENT.to_vec(),
            commit.commitment.to_bytes(),
        );
        // The block's transactions no longer need their input locks; the entries that leaves
        // empty go with the block (ADR 0021).
        let inputs = block
            .transactions
            .iter()
            .map(|transaction| transaction.body.inputs.iter().map(|input| &input.prevout));
        self.log
            .forget_included(txids.iter().zip(inputs), &mut batch);
        // The change records a finished flush made redundant ride along: no commit of their own.
        let deleted_through = self.add_flushed_change_deletes(&mut batch)?;
        if let Some(flushed) = self.flushed
            && let Some(range) = {
                let previous_tip = self.tip;
                self.tip = Some(tip);
                let range = self.prune_range(flushed);
                self.tip = previous_tip;
                range
            }
        {
            self.add_prune_ops(&mut batch, range.clone())?;
            self.write_block(&batch)?;
            self.pruned_below = range.end;
        } else {
            self.write_block(&batch)?;
        }
        self.tip = Some(tip);
        if deleted_through.is_some() {
            self.changes_deleted_through = deleted_through;
        }
        if commit.certificate.is_some() {
            self.finalized = Some(height);
        }
        self.commitment = commit.commitment.clone();
        self.registry.apply(commit.masternode_events);
        self.cache_block(height, commit.changes, &txids);
        self.report_fill(height);
        self.refresh_stats();
        Ok(())
    }

    fn store_certificate(&mut self, certificate: &CommitCertificate) -> Result<()> {
        self.check_not_halted()?;
        let height = certificate.height;
        if self.block_hash(height)? != Some(certificate.block_hash) {
            return Err(StorageError::InvalidCommit {
                height,
                reason: "no committed block at that height has the certified hash".to_string(),
            });
        }
        let mut batch = WriteBatch::new();
        batch.put(
            Table::Certificates,
            height_key(height).to_vec(),
            encode(certificate),
        );
        let raises = self.finalized.is_none_or(|finalized| finalized < height);
        if raises {
            batch.put(Table::Meta, meta::FINALIZED.to_vec(), encode(&height));
        }
        self.commit_record_batch(&batch)?;
        if raises {
            self.finalized = Some(height);
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        self.check_not_halted()?;
        let Some(tip) = self.tip else { return Ok(()) };
        self.flush_to(tip.height)?;
        self.commit_housekeeping()?;
        self.refresh_stats();
        Ok(())
    }
}

impl<B: KvBackend> ConsensusLog for ChainDb<B> {
    fn persist(&mut self, records: &[ConsensusRecord]) -> Result<Vec<LogOutcome>> {
        self.check_not_halted()?;
        if records.len() > MAX_CONSENSUS_BATCH {
            return Err(StorageError::InvalidCommit {
                height: self.tip.map_or(Height(0), |tip| tip.height),
                reason: format!(
                    "{} consensus records exceed the batch limit of {MAX_CONSENSUS_BATCH}",
                    records.len()
                ),
            });
        }
        let mut outcomes = Vec::with_capacity(records.len());
        let mut in_batch: HashMap<LogKey, &ConsensusRecord> = HashMap::new();
        let mut new = Vec::new();
        for record in records {
            let existing = match in_batch.get(&record.key) {
                Some(earlier) => Some(&earlier.value),
                None => self.log.get(&record.key),
            };
            outcomes.push(match existing {
                Some(value) if *value == record.value => LogOutcome::AlreadyPresent,
                Some(value) => LogOutcome::Conflict(value.clone()),
                None => {
                    in_batch.insert(record.key, record);
                    new.push(record);
                    LogOutcome::Written
                }
            });
        }
        if !new.is_empty() {
            let mut batch = WriteBatch::new();
            let appended = self.log.append(&new, &mut batch);
            self.commit_record_batch(&batch)?;
            self.log.applied(appended);
        }
        Ok(outcomes)
    }

    fn record(&self, key: &LogKey) -> Result<Option<ConsensusRecord>> {
        Ok(self.log.get(key).map(|value| ConsensusRecord {
            key: *key,
            value: value.clone(),
        }))
    }

    fn records(&self, from: Option<LogKey>, limit: usize) -> Result<Vec<ConsensusRecord>> {
        Ok(self.log.list(from, limit.min(MAX_LOG_LISTING)))
    }

    fn prune_log(&mut self, height: Height, epoch: Epoch) -> Result<u64> {
        self.check_not_halted()?;
        let mut batch = WriteBatch::new();
        let forgotten = self.log.prune(height, epoch, &mut batch);
        if !batch.is_empty() {
            self.commit_record_batch(&batch)?;
        }
        Ok(forgotten)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presized_tables_fit_their_budget_and_do_not_grow_while_filling() {
        for budget in [64 << 10, 1 << 20, 5 << 20, 40 << 20] {
            let mut map: FastMap<OutPoint, CacheSlot> = with_budget(budget);
            let bytes = bytes_of(&map);
            assert!(bytes <= budget, "{bytes} > {budget}");
            assert!(
                bytes > budget / 2,
                "{bytes} wastes more than half of {budget}"
            );
            let capacity = map.capacity();
            // Filling to the capacity the accounting assumes must not reallocate.
            for index in 0..capacity {
                let outpoint = OutPoint {
                    txid: Txid(Hash32::ZERO),
                    index: index as u32,
                };
                let entry = UtxoEntry {
                    output: TxOut {
                        amount: timecoin_primitives::Amount::ZERO,
                        address: Address(Hash32::ZERO),
                    },
                    height: Height(0),
                    is_collateral: false,
                };
                map.insert(outpoint, CacheSlot::new(SlotState::Spent, &entry));
            }
            assert_eq!(map.capacity(), capacity, "the table grew");
            assert_eq!(peak_after(&map, 0), bytes);
            assert!(
                peak_after(&map, 1) > budget,
                "one more entry would exceed the budget"
            );
        }
    }

    #[test]
    fn the_address_of_a_stored_utxo_is_where_the_derived_index_looks() {
        let address = Address(Hash32([7; 32]));
        let max = timecoin_primitives::Amount::MAX;
        for (amount, height, is_collateral) in [(0, 0, false), (max.units(), u64::MAX, true)] {
            let entry = UtxoEntry {
                output: TxOut {
                    amount: timecoin_primitives::Amount::from_units(amount).unwrap(),
                    address,
                },
                height: Height(height),
                is_collateral,
            };
            assert_eq!(utxo_address(&encode(&entry)), Some(&[7u8; 32][..]));
        }
        assert_eq!(utxo_address(&[0; 39]), None, "a value too short has none");
    }

    #[test]
    fn a_cache_slot_with_its_key_takes_88_bytes() {
        // The budget arithmetic in ADR 0005 and BENCHMARKS.md counts on this packing.
        assert_eq!(std::mem::size_of::<(OutPoint, CacheSlot)>(), 88);
    }

    #[test]
    fn an_outpoint_spent_and_created_again_for_another_address_moves_its_index_entry() {
        use crate::memory::MemoryBackend;
        use crate::testing::TestChain;
        let chain = TestChain::new(5, 50, 4);
        let mut store = ChainDb::open(MemoryBackend::new(), chain.config(1 << 20)).unwrap();
        store.commit_block(chain.genesis.commit()).unwrap();
        store.flush().unwrap();
        let (outpoint, old) = chain
            .genesis
            .changes
            .created
            .iter()
            .next()
            .map(|(outpoint, entry)| (*outpoint, *entry))
            .unwrap();
        let old_address = old.output.address;
        let new_address = Address(Hash32([9u8; 32]));
        assert_ne!(old_address, new_address);
        let recreated = UtxoEntry {
            output: TxOut {
                amount: old.output.amount,
                address: new_address,
            },
            height: Height(1),
            is_collateral: false,
        };
        // Spent in one block and created again (for another address) in the next: cached
        // directly, as replay would, since a real block cannot reuse a txid.
        let spend = BlockChanges {
            spent: BoundedVec::new(vec![(outpoint, old)]).unwrap(),
            created: BoundedVec::new(Vec::new()).unwrap(),
        };
        let create = BlockChanges {
            spent: BoundedVec::new(Vec::new()).unwrap(),
            created: BoundedVec::new(vec![(outpoint, recreated)]).unwrap(),
        };
        store.cache_block(Height(1), &spend, &[]);
        store.cache_block(Height(2), &create, &[]);
        assert_eq!(
            store.address_outpoints(&new_address, 10).unwrap(),
            vec![outpoint]
        );
        assert!(
            !store
                .address_outpoints(&old_address, 10_000)
                .unwrap()
                .contains(&outpoint)
        );
        store.flush_to(Height(2)).unwrap();
        let stored = |address: &Address| {
            store
                .backend
                .get(Table::AddressIndex, &address_key(address, &outpoint))
                .unwrap()
        };
        assert!(stored(&new_address).is_some());
        assert!(stored(&old_address).is_none());
        assert_eq!(store.utxo(&outpoint).unwrap(), Some(recreated));
    }

    #[test]
    fn the_cache_stays_within_its_budget() {
        use crate::memory::MemoryBackend;
        use crate::testing::TestChain;
        for background in [true, false] {
            let mut chain = TestChain::new(21, 2_000, 16);
            let budget = 2 << 20;
            let mut config = chain.config(budget);
            config.background_flush = background;
            let mut store = ChainDb::open(MemoryBackend::new(), config).unwrap();
            store.commit_block(chain.genesis.commit()).unwrap();
            for _ in 0..60 {
                let block = chain.next_block(200);
                store.commit_block(block.commit()).unwrap();
                let stats = store.stats();
                assert!(stats.cache_bytes <= budget, "{background}: {stats:?}");
                // An inline flush is complete when the commit that needed it returns.
                assert!(background || !stats.flush_in_progress, "{stats:?}");
            }
            assert!(store.stats().flushes >= 1, "{:?}", store.stats());
            store.verify_utxo_set().unwrap();
        }
    }
}
