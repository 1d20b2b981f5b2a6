//! The deterministic TimeCoin node: ledger, mempool, transaction finality, block consensus and
//! sync behind one sans-I/O state machine. The daemon and the simulator run exactly this code.
//!
//! # Driving it
//!
//! [`Node::open`] restores a node from its store; then every event becomes an [`Input`] to
//! [`Node::handle`], which returns [`Action`]s to perform **in order**:
//!
//! - [`Input::Tick`] carries the time; the node has no other clock. Deliver one at or after
//!   each [`Action::ScheduleTick`] time (and as often as convenient).
//! - [`Input::PeerMessage`] carries a frame's bytes; a malformed frame yields
//!   [`Action::Penalize`]. [`Input::PeerConnected`] / [`Input::PeerDisconnected`] keep the peer
//!   set (for sync and for re-sending our latest statements to a reconnecting peer).
//! - [`Input::Command`] is a client (RPC) request; its answer is an [`Action::Reply`].
//!
//! Actions: [`Action::Broadcast`] / [`Action::Send`] a [`NodeMessage`] (encode with
//! [`NodeMessage::to_bytes`]), [`Action::Penalize`] a peer, [`Action::Reply`] to a client,
//! [`Action::ScheduleTick`], and [`Action::Event`]s for logs and metrics.
//!
//! # Persistence before send
//!
//! All storage writes happen synchronously inside `handle`, through [`NodeStore`]: committed
//! blocks ([`timecoin_storage::ChainStore::commit_block`]), input locks and signed block
//! statements ([`timecoin_storage::ConsensusLog`]) and the block-consensus state
//! ([`NodeStore::save_bft_state`]). **Invariant: every vote, lock or consensus state that an
//! outgoing message depends on is durable before `handle` returns the action that sends it.**
//! A finality vote is signed only after its input locks are written; a block statement is sent
//! only after the engine state naming it and a write-once log record of its (height, view,
//! phase) are written, and is withheld if the log already holds a different statement for that
//! slot. So a crash at any point loses nothing that was sent, and a restarted node can never
//! sign a statement contradicting one it sent before. The simulator checks this on every
//! message a node sends. If `handle` returns `Err`, the store failed: stop the node without
//! performing anything (nothing of the failed step was sent).
//!
//! # Masternode registries
//!
//! The ledger's registry (stored by `timecoin-storage`, as of the tip) is the one source of
//! truth. The consensus crate's registry is built from it at each epoch boundary, as it stood
//! at the end of the previous epoch (reconstructed by undoing later blocks after a restart),
//! and turned into that epoch's immutable [`timecoin_consensus::Committee`].

pub mod admission;
pub mod certified;
pub mod coalesce;
pub mod error;
pub mod io;
pub mod message;
pub mod node;
pub mod store;
pub mod testing;
mod waiting;

pub use admission::AdmissionConfig;
pub use certified::{CertifiedEntry, CertifiedPool, CertifiedView};
pub use error::NodeError;
pub use io::{
    Action, Command, ConsensusSummary, Input, MempoolSummary, NodeEvent, Reply, RequestId,
    SubmitOutcome, TxStatus,
};
pub use message::{
    CertifiedBlock, CertifiedTransaction, CompactProposal, CompactTransaction, MessageError,
    NodeMessage, PeerId, RelayBundle,
};
pub use node::{Node, NodeConfig, init_store};
pub use store::NodeStore;
