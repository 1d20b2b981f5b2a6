//! The node's one error type. Peer faults never surface here: they become
//! [`crate::Action::Penalize`]. A `NodeError` means this node cannot go on safely (its storage
//! failed or holds something it cannot read), and the runtime must stop it.

use timecoin_consensus::ConsensusError;
use timecoin_ledger::{BackendError, LedgerError};
use timecoin_storage::StorageError;

/// Why the node had to stop.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The store failed; nothing more may be written or sent.
    #[error("storage failed: {0}")]
    Storage(#[from] StorageError),
    /// The UTXO view behind the ledger rules failed.
    #[error("UTXO storage failed: {0}")]
    Backend(#[from] BackendError),
    /// The store holds something the node cannot make sense of.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// A ledger rule failed on data this node itself produced or already accepted.
    #[error("ledger failure on local data: {0}")]
    Ledger(#[from] LedgerError),
    /// A consensus engine refused an input the node itself built.
    #[error("consensus failure on local data: {0}")]
    Consensus(#[from] ConsensusError),
    /// The node was started on a store without a genesis block.
    #[error("the store has no genesis block; initialise it first")]
    NoGenesis,
}
