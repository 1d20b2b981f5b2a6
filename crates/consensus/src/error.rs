//! The one error type of the consensus crate.

use timecoin_primitives::{Epoch, Hash32, Height, OutPoint, PublicKey, Txid};

use crate::signing::Slot;

/// Why the consensus crate refused an input, a certificate or a request to sign.
///
/// [`ConsensusError::is_peer_fault`] tells the node whether the peer that sent the offending
/// message broke the protocol (penalise it) or whether the rejection is benign: the message is
/// merely stale, early, or the refusal is our own.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsensusError {
    /// A signer is not in the epoch's committee.
    #[error("{0:?} is not a member of the committee")]
    NotAMember(PublicKey),
    /// A signature does not verify.
    #[error("signature by {0:?} does not verify")]
    BadSignature(PublicKey),
    /// A set of signatures does not verify as a batch (which one is unknown).
    #[error("a signature in the set does not verify")]
    BadSignatureSet,
    /// A certificate's voters are not strictly ascending, so one may be counted twice.
    #[error("certificate voters are not strictly ascending (duplicate or unsorted voter)")]
    UnsortedVoters,
    /// A certificate or justification does not reach the quorum weight.
    #[error("signed weight {have} is below the quorum weight {need}")]
    InsufficientWeight {
        /// The weight of valid signers.
        have: u64,
        /// The quorum weight.
        need: u64,
    },
    /// A message or certificate is for another epoch than the committee we hold. Not a fault:
    /// the peer or we may be at an epoch boundary.
    #[error("message is for epoch {got}, we are in epoch {expected}")]
    WrongEpoch {
        /// Our epoch.
        expected: Epoch,
        /// The message's epoch.
        got: Epoch,
    },
    /// A message is for another height than the one being decided. Not a fault.
    #[error("message is for height {got}, we are deciding height {expected}")]
    WrongHeight {
        /// The height being decided.
        expected: Height,
        /// The message's height.
        got: Height,
    },
    /// A message is for a view too far from ours to be worth memory. Not a fault.
    #[error("message is for view {got}, outside the window around our view {current}")]
    ViewOutOfWindow {
        /// Our view.
        current: u32,
        /// The message's view.
        got: u32,
    },
    /// A proposal was signed by someone other than the view's leader.
    #[error("proposal for view {view} is not from the view's leader")]
    WrongLeader {
        /// The view.
        view: u32,
    },
    /// A proposal's block is malformed or does not extend our chain.
    #[error("invalid proposal: {0}")]
    InvalidProposal(&'static str),
    /// A view change or a new-view justification is malformed.
    #[error("invalid view change: {0}")]
    InvalidViewChange(&'static str),
    /// A transaction spends an input that we locked for a different transaction this epoch. Not
    /// a fault of the relaying peer: the client double-spent.
    #[error("input {outpoint} is locked by {locked_by} this epoch")]
    ConflictsWithLock {
        /// The contested input.
        outpoint: OutPoint,
        /// The transaction we voted for.
        locked_by: Txid,
    },
    /// A transaction has no inputs, or too many, to be voted on.
    #[error("transaction {0} has no inputs or too many to vote on")]
    UnvotableTransaction(Txid),
    /// A bounded collection is full; the input was dropped. Not a fault of any one peer.
    #[error("{what} is full (limit {limit})")]
    Full {
        /// Which collection.
        what: &'static str,
        /// Its limit.
        limit: usize,
    },
    /// Signing was refused because it would contradict a statement we already signed. This is
    /// the guard that keeps an honest node honest across restarts.
    #[error("refusing to sign {wanted:?} for {digest}: already signed {signed:?}")]
    WouldEquivocate {
        /// What we were asked to sign.
        wanted: Slot,
        /// Its digest (block hash or view-change claim).
        digest: Hash32,
        /// The last slot we signed.
        signed: Slot,
    },
    /// Evidence that does not show two different signed statements.
    #[error("invalid evidence: {0}")]
    InvalidEvidence(&'static str),
    /// The committee could not be formed.
    #[error("invalid committee: {0}")]
    InvalidCommittee(&'static str),
    /// A masternode registration clashes with an existing one.
    #[error("masternode with node key {0:?} or its collateral is already registered")]
    AlreadyRegistered(PublicKey),
    /// The node asked for something out of order (our bug, not a peer's).
    #[error("out-of-order request: {0}")]
    OutOfOrder(&'static str),
    /// A finality vote that names no transaction.
    #[error("finality vote from {0:?} covers no transaction")]
    EmptyVote(PublicKey),
}

impl ConsensusError {
    /// Whether the peer that sent the rejected message broke the protocol and should be
    /// penalised. `false` means the message was stale, early or otherwise benign, or that the
    /// error is ours.
    pub fn is_peer_fault(&self) -> bool {
        match self {
            ConsensusError::NotAMember(_)
            | ConsensusError::BadSignature(_)
            | ConsensusError::BadSignatureSet
            | ConsensusError::UnsortedVoters
            | ConsensusError::InsufficientWeight { .. }
            | ConsensusError::WrongLeader { .. }
            | ConsensusError::InvalidProposal(_)
            | ConsensusError::InvalidViewChange(_)
            | ConsensusError::InvalidEvidence(_)
            | ConsensusError::EmptyVote(_) => true,
            ConsensusError::WrongEpoch { .. }
            | ConsensusError::WrongHeight { .. }
            | ConsensusError::ViewOutOfWindow { .. }
            | ConsensusError::ConflictsWithLock { .. }
            | ConsensusError::UnvotableTransaction(_)
            | ConsensusError::Full { .. }
            | ConsensusError::WouldEquivocate { .. }
            | ConsensusError::InvalidCommittee(_)
            | ConsensusError::AlreadyRegistered(_)
            | ConsensusError::OutOfOrder(_) => false,
        }
    }
}
