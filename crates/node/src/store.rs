//! What the node needs from storage: the chain ([`ChainStore`]), its own consensus log
//! ([`ConsensusLog`]), and one durable slot for the block-consensus engine's state.
//!
//! The engine's [`PersistedBftState`] carries the prepared block, which can be far larger than
//! a consensus-log record may be, and it is replaced rather than appended, which the
//! write-once log refuses. So it gets its own slot; every signed block statement is *also*
//! written to the log under its (height, view, phase), where the store itself refuses a second,
//! different statement for the same slot.

use timecoin_consensus::PersistedBftState;
use timecoin_primitives::{decode, encode};
use timecoin_storage::{
    ChainDb, ChainStore, ConsensusLog, KvBackend, MemoryBackend, Table, WriteBatch,
};

use crate::error::NodeError;

/// The meta-table key of the block-consensus state. Chosen outside the store's own meta keys,
/// which are short ASCII names.
const BFT_STATE_KEY: &[u8] = b"node/bft-state/v1";

/// The storage a node runs on.
pub trait NodeStore: ChainStore + ConsensusLog {
    /// Replaces the block-consensus state, durably, before returning.
    fn save_bft_state(&mut self, state: &PersistedBftState) -> Result<(), NodeError>;

    /// The last saved block-consensus state (default if none was saved).
    fn load_bft_state(&self) -> Result<PersistedBftState, NodeError>;
}

/// Reads the state slot from any backend.
fn load_from<B: KvBackend>(backend: &B) -> Result<PersistedBftState, NodeError> {
    match backend.get(Table::Meta, BFT_STATE_KEY)? {
        None => Ok(PersistedBftState::default()),
        Some(bytes) => decode(&bytes).map_err(|error| {
            NodeError::Corrupt(format!("the saved block-consensus state: {error}"))
        }),
    }
}

/// The simulator's store: the in-memory disk, whose handles share the disk, so the slot is
/// written through a second handle of the same process generation (a crashed process's
/// handle fails like every other write of that process).
impl NodeStore for ChainDb<MemoryBackend> {
    fn save_bft_state(&mut self, state: &PersistedBftState) -> Result<(), NodeError> {
        if let Some(reason) = self.halted() {
            return Err(NodeError::Corrupt(format!("the store halted: {reason}")));
        }
        let mut batch = WriteBatch::new();
        batch.put(Table::Meta, BFT_STATE_KEY.to_vec(), encode(state));
        let mut handle = self.backend().clone();
        handle.commit(&batch)?;
        Ok(())
    }

    fn load_bft_state(&self) -> Result<PersistedBftState, NodeError> {
        load_from(self.backend())
    }
}
