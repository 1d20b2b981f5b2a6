//! TimeCoin's consensus state machines.
//!
//! Every engine here is *sans-I/O*: it takes an input (a peer message, a timer tick carrying the
//! current time in milliseconds, an answer from the node) and returns effects (persist this, send
//! that, this block is committed). Nothing reads a clock, draws randomness, spawns a task or
//! touches a disk, so the deterministic simulator can drive many engines in one thread and replay
//! any run from its seed. The protocol, its safety argument and the runtime's obligations are in
//! `docs/consensus.md`.
//!
//! - [`committee`]: the weighted masternode set of an epoch, its quorum and leader rotation.
//! - [`signing`]: the exact messages that are signed, and certificate verification.
//! - [`finality`]: per-transaction votes, input locks and finality certificates.
//! - [`bft`]: PBFT-style block consensus with view change and commit certificates.
//! - [`evidence`]: proof that a masternode signed two conflicting statements.

pub mod bft;
pub mod committee;
pub mod error;
pub mod evidence;
pub mod finality;
pub mod signing;

pub use bft::{
    BftConfig, BftEffect, BftEngine, BftInput, BftMessage, PersistedBftState, PreparedCertificate,
    PreparedProof, Proposal, ViewChange, ViewChangeMessage, Vote,
};
pub use committee::{Committee, MasternodeRegistry, Member, Registration, TierWeights, Weight};
pub use error::ConsensusError;
pub use evidence::Evidence;
pub use finality::{
    FinalityCertificate, FinalityEffect, FinalityEngine, FinalityInput, FinalityVote,
    PersistedLock, VoteBatch, VoteBatchOutcome, VoteProof,
};
pub use signing::{Phase, SignedSlot, Slot, verify_commit_certificate};
