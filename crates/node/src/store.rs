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
}
