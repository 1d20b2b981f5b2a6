//! TimeCoin's durable chain storage.
//!
//! The node programs against two traits: [`ChainStore`] (blocks, certificates, indexes, the
//! UTXO set through [`timecoin_ledger::UtxoView`], the masternode registry) and
//! [`ConsensusLog`] (this node's own signed votes and input locks). [`ChainDb`] implements both
//! over a [`KvBackend`]: [`RedbBackend`] on disk, or [`MemoryBackend`] in the simulator, which
//! can crash and fail writes on demand.
//!
//! Durability follows Bitcoin Core (ADR 0005): each block is one small atomic commit carrying
//! its own UTXO changes, the UTXO set and indexes live in a bounded write-back cache flushed in
//! large sorted batches, and opening replays the blocks committed since the last flush. The
//! flushes write a file of their own on a background thread (ADR 0019); on disk the flushed UTXO
//! set itself is an append-only log with an in-memory hash index ([`utxo_log`], ADR 0029).
//!
//! The caller runs the ledger rules: it applies a block through a [`ChangeRecorder`] over the
//! store, then hands the block, its [`BlockChanges`] and the new commitment to
//! [`ChainStore::commit_block`].

pub mod backend;
pub mod chunked;
pub mod config;
pub mod error;
mod finals;
mod log;
pub mod memory;
mod priority;
pub mod redb_backend;
pub mod store;
pub mod testing;
pub mod traits;
pub mod types;
pub mod utxo_log;

pub use backend::{AddressOf, KvBackend, Table, TableWriter, UtxoFileWriter, WriteBatch};
pub use config::{StoreConfig, default_cache_bytes};
pub use error::{Result, StorageError};
pub use memory::{Fault, MemoryBackend};
pub use redb_backend::{RedbBackend, RedbOptions, RedbUtxoWriter};
pub use store::{
    AddressIndexSwitch, ChainDb, CommitObserver, FLUSH_THREAD_NAME, MAX_NODE_STATE_BYTES,
    MAX_PREFETCH, RedbChainDb, SCHEMA_VERSION, StoreStats,
};
pub use traits::{ChainStore, ConsensusLog};
pub use types::{
    BlockChanges, BlockCommit, ChainTip, ChangeRecorder, ConsensusRecord, LogKey, LogOutcome,
    MAX_CONSENSUS_BATCH, MAX_MASTERNODES, TxLocation,
};
