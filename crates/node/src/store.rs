//! What the node needs from storage: the chain ([`ChainStore`]), its own consensus log
//! ([`ConsensusLog`]), and one durable slot for the block-consensus engine's state.
//!
//! The engine's [`PersistedBftState`] carries the prepared block, which can be far larger than
//! a consensus-log record may be, and it is replaced rather than appended, which the
//! write-once log refuses. So it gets its own slot ([`ChainDb::put_node_state`]); every signed
//! block statement is *also* written to the log under its (height, view, phase), where the
//! store itself refuses a second, different statement for the same slot.

use timecoin_consensus::PersistedBftState;
use timecoin_primitives::{decode, encode};
use timecoin_storage::{ChainDb, ChainStore, ConsensusLog, KvBackend};

use crate::error::NodeError;

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
}

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
}
