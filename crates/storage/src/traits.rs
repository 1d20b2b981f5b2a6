//! The store traits the node programs against. [`crate::ChainDb`] implements them over any
//! [`crate::KvBackend`]: redb on disk, or memory with injected faults in the simulator.

use timecoin_ledger::{MasternodeRegistry, UtxoCommitment, UtxoView};
use timecoin_primitives::{
    Address, Block, BlockHash, BlockHeader, CommitCertificate, Height, OutPoint, Txid,
};

use crate::error::Result;
use crate::types::{BlockCommit, ChainTip, ConsensusRecord, LogKey, LogOutcome, TxLocation};

/// Most outpoints one address query returns.
pub const MAX_ADDRESS_QUERY: usize = 10_000;
/// Most consensus records one listing returns.
pub const MAX_LOG_LISTING: usize = 100_000;

/// The chain: blocks, indexes, the UTXO set and the masternode registry.
///
/// Reads of the UTXO set go through [`UtxoView`], reads of the registry through
/// [`timecoin_ledger::MasternodeView`], so the store itself can be handed to the ledger. A block is committed whole with
/// [`ChainStore::commit_block`]: after a crash the store is at the last committed block.
pub trait ChainStore: UtxoView + timecoin_ledger::MasternodeView {
    /// The last committed block, or `None` before genesis.
    fn tip(&self) -> Option<ChainTip>;

    /// The highest height with a stored commit certificate.
    fn finalized_height(&self) -> Option<Height>;

    /// The UTXO commitment after the tip (empty before genesis).
    fn utxo_commitment(&self) -> &UtxoCommitment;

    /// The hash of the committed block at `height`.
    fn block_hash(&self, height: Height) -> Result<Option<BlockHash>>;

    /// A committed block's header.
    fn header(&self, hash: &BlockHash) -> Result<Option<BlockHeader>>;

    /// A committed block, or `None` if unknown or its body was pruned.
    fn block(&self, hash: &BlockHash) -> Result<Option<Block>>;

    /// The commit certificate of the block at `height`.
    fn certificate(&self, height: Height) -> Result<Option<CommitCertificate>>;

    /// Where a committed transaction is.
    fn transaction_location(&self, txid: &Txid) -> Result<Option<TxLocation>>;

    /// Up to `limit` (at most [`MAX_ADDRESS_QUERY`]) unspent outpoints paying `address`, in
    /// outpoint order.
    fn address_outpoints(&self, address: &Address, limit: usize) -> Result<Vec<OutPoint>>;

    /// The masternode registry as of the tip (kept in memory; it is small).
    fn masternodes(&self) -> &MasternodeRegistry;

    /// Commits a block atomically and durably: when this returns `Ok` the block survives a
    /// crash; when it returns `Err` nothing of it was stored. After a write failure every later
    /// write fails too ([`crate::StorageError::Halted`]) and the node must stop.
    fn commit_block(&mut self, commit: BlockCommit<'_>) -> Result<()>;

    /// Stores a certificate for an already committed block, durably.
    fn store_certificate(&mut self, certificate: &CommitCertificate) -> Result<()>;

    /// Writes cached changes to the database so that startup needs no replay. Call before a
    /// clean shutdown; the store also flushes on its own when the cache is full.
    fn flush(&mut self) -> Result<()>;
}

/// This node's own consensus log: the votes it signed and the input locks it took. A record
/// must be durable before the vote leaves the node, so that after a restart the node can never
/// sign anything contradicting it.
pub trait ConsensusLog {
    /// Writes a batch with one durable commit (group commit: batch every vote produced by one
    /// step of the node). Records whose key already holds a different value are refused and
    /// reported as [`LogOutcome::Conflict`]; the caller must not send those. At most
    /// [`crate::MAX_CONSENSUS_BATCH`] records.
    fn persist(&mut self, records: &[ConsensusRecord]) -> Result<Vec<LogOutcome>>;

    /// The record stored under `key`.
    fn record(&self, key: &LogKey) -> Result<Option<ConsensusRecord>>;

    /// Up to `limit` (at most [`MAX_LOG_LISTING`]) records in key order, starting at `from`.
    fn records(&self, from: Option<LogKey>, limit: usize) -> Result<Vec<ConsensusRecord>>;

    /// Deletes block votes below `height` and input locks of epochs before `epoch`, which can no
    /// longer matter; returns how many were deleted.
    fn prune_log(&mut self, height: Height, epoch: timecoin_primitives::Epoch) -> Result<u64>;
}
