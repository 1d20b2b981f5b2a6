//! How a store is set up.

use timecoin_primitives::{BlockHash, Network};

/// The smallest cache the default picks, in bytes.
pub const MIN_DEFAULT_CACHE_BYTES: usize = 16 << 20;
/// The largest cache the default picks, in bytes: enough to flush rarely, small enough that a
/// node with a million UTXOs stays well under 200 MB resident.
pub const MAX_DEFAULT_CACHE_BYTES: usize = 64 << 20;
/// The default bound on blocks committed but not yet flushed, which bounds replay at startup.
pub const DEFAULT_MAX_UNFLUSHED_BLOCKS: u64 = 1_000;
/// Most bodies one commit deletes when pruning, so that turning pruning on for a long chain
/// spreads the work over many commits instead of one huge transaction.
pub const MAX_BODIES_PRUNED_PER_COMMIT: u64 = 256;
/// The fewest recent blocks pruning keeps whole.
pub const MIN_PRUNE_KEEP_BLOCKS: u64 = 2;

/// A store's settings.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// The network this node runs on; recorded at creation and checked at every open.
    pub network: Network,
    /// The hash of the network's genesis block; recorded and checked likewise.
    pub genesis_hash: BlockHash,
    /// Bytes the write-back cache (UTXO, transaction and address index changes since the last
    /// flush) may occupy. When the next block would exceed it, the cache is flushed first.
    pub cache_bytes: usize,
    /// Most committed blocks whose changes may wait in the cache; bounds replay after a crash.
    pub max_unflushed_blocks: u64,
    /// With `Some(n)`, bodies of blocks more than `n` below the tip are deleted (headers,
    /// certificates and UTXOs stay). `n` is raised to at least [`MIN_PRUNE_KEEP_BLOCKS`].
    pub prune_keep_blocks: Option<u64>,
    /// Bytes of the engine's page cache for reading flushed data (redb only).
    pub page_cache_bytes: usize,
    /// Whether to keep the transaction index (txid → block and position). Fixed when the
    /// database is created.
    pub index_transactions: bool,
    /// Whether to keep the address index (address → outpoints) that wallets list coins with.
    /// Changed while the node is stopped, it is built or dropped at the next open (ADR 0027).
    /// On disk (the redb backend) it is derived from the UTXO log in memory, 16 bytes per UTXO
    /// (ADR 0030); in memory it doubles the work of each flush.
    pub index_addresses: bool,
    /// Whether flushes write the UTXO file on a background thread while the node goes on
    /// (ADR 0019). The cache is then split in two layers of half the budget each: one fills
    /// while the other is written. Off, a flush stops the caller until it is written; the
    /// simulator turns it off so that runs repeat exactly.
    pub background_flush: bool,
}

impl StoreConfig {
    /// Defaults for `network` with genesis `genesis_hash`, the cache sized from the memory this
    /// machine has available.
    pub fn new(network: Network, genesis_hash: BlockHash) -> StoreConfig {
        StoreConfig {
            network,
            genesis_hash,
            cache_bytes: default_cache_bytes(),
            max_unflushed_blocks: DEFAULT_MAX_UNFLUSHED_BLOCKS,
            prune_keep_blocks: None,
            page_cache_bytes: 16 << 20,
            index_transactions: true,
            index_addresses: true,
            background_flush: true,
        }
    }
}

/// A sixteenth of the memory available now, between [`MIN_DEFAULT_CACHE_BYTES`] and
/// [`MAX_DEFAULT_CACHE_BYTES`]; the minimum if the amount cannot be read.
pub fn default_cache_bytes() -> usize {
    let available = available_memory_bytes().unwrap_or(0);
    usize::try_from(available / 16)
        .unwrap_or(usize::MAX)
        .clamp(MIN_DEFAULT_CACHE_BYTES, MAX_DEFAULT_CACHE_BYTES)
}

/// The memory the kernel says is available (Linux `MemAvailable`), if it can be read.
pub fn available_memory_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text
        .lines()
        .find(|line| line.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}
