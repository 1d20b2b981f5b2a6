//! What the node needs from storage: the chain ([`ChainStore`]), its own consensus log
//! ([`ConsensusLog`]), and one durable slot for the block-consensus engine's state.
//!
//! The engine's [`PersistedBftState`] carries the prepared block, which can be far larger than
//! a consensus-log record may be, and it is replaced rather than appended, which the
//! write-once log refuses. So it gets its own slot ([`ChainDb::put_node_state`]); every signed
//! block statement is *also* written to the log under its (height, view, phase), where the
//! store itself refuses a second, different statement for the same slot.

use timecoin_consensus::PersistedBftState;
use timecoin_primitives::{Txid, decode, encode};
use timecoin_storage::{ChainDb, ChainStore, ConsensusLog, KvBackend};

use crate::error::NodeError;
use crate::message::CertifiedTransaction;

/// The name of the block-consensus state slot.
const BFT_STATE: &str = "bft_state_v1";

/// The storage a node runs on.
pub trait NodeStore: ChainStore + ConsensusLog {
    /// Replaces the block-consensus state, durably, before returning.
    fn save_bft_state(&mut self, state: &PersistedBftState) -> Result<(), NodeError>;

    /// The last saved block-consensus state (default if none was saved).
    fn load_bft_state(&self) -> Result<PersistedBftState, NodeError>;

    /// Switches group commit: while on, the node's own records (votes, locks, the state slot,
    /// certificates) may return before they are durable, and [`NodeStore::sync`] makes them
    /// durable with one fsync. The node turns it on for one step and syncs before returning
    /// the step's actions, so nothing a record enables leaves the node before it is durable.
    fn set_group_commit(&mut self, on: bool);

    /// Makes every write of the current group durable.
    fn sync(&mut self) -> Result<(), NodeError>;

    /// Stores a certified transaction not yet in a block, with its certificate.
    fn save_final(&mut self, certified: &CertifiedTransaction) -> Result<(), NodeError>;

    /// Forgets stored certified transactions (a block holds them now).
    fn forget_finals(&mut self, txids: &[Txid]) -> Result<(), NodeError>;

    /// The stored certified transactions, at most [`MAX_STORED_FINALS`].
    fn load_finals(&self) -> Result<Vec<CertifiedTransaction>, NodeError>;
}

/// Most certified-but-unblocked transactions read back at startup (as many as the node keeps).
pub const MAX_STORED_FINALS: usize = crate::certified::MAX_CERTIFIED_UNBLOCKED;

/// Any chain database: redb for the daemon, the in-memory disk for the simulator.
impl<B: KvBackend> NodeStore for ChainDb<B> {
    fn save_bft_state(&mut self, state: &PersistedBftState) -> Result<(), NodeError> {
        self.put_node_state(BFT_STATE, &encode(state))?;
        Ok(())
    }

    fn load_bft_state(&self) -> Result<PersistedBftState, NodeError> {
        match self.node_state(BFT_STATE)? {
            None => Ok(PersistedBftState::default()),
            Some(bytes) => decode(&bytes).map_err(|error| {
                NodeError::Corrupt(format!("the saved block-consensus state: {error}"))
            }),
        }
    }

    fn set_group_commit(&mut self, on: bool) {
        ChainDb::set_group_commit(self, on);
    }

    fn sync(&mut self) -> Result<(), NodeError> {
        ChainDb::sync(self)?;
        Ok(())
    }

    fn save_final(&mut self, certified: &CertifiedTransaction) -> Result<(), NodeError> {
        self.put_final(&certified.transaction.txid(), &encode(certified))?;
        Ok(())
    }

    fn forget_finals(&mut self, txids: &[Txid]) -> Result<(), NodeError> {
        self.remove_final(txids)?;
        Ok(())
    }

    fn load_finals(&self) -> Result<Vec<CertifiedTransaction>, NodeError> {
        self.finals(MAX_STORED_FINALS)?
            .into_iter()
            .map(|(txid, bytes)| {
                let certified: CertifiedTransaction = decode(&bytes).map_err(|error| {
                    NodeError::Corrupt(format!("the stored certified transaction {txid}: {error}"))
                })?;
                if certified.transaction.txid() != txid {
                    return Err(NodeError::Corrupt(format!(
                        "the stored certified transaction under {txid} has another txid"
                    )));
                }
                Ok(certified)
            })
            .collect()
    }
}
