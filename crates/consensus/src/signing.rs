//! The exact bytes every consensus signature covers, and certificate verification.
//!
//! Every message is hashed in [`Domain::ConsensusVote`] and starts with a one-byte kind tag and
//! the network id, so a signature for one kind of statement, or on one network, can never be
//! replayed as another. The leader lottery hashes in the same domain under its own tag; it is
//! never signed, and the tag keeps its input disjoint from every signed message.

use borsh::{BorshDeserialize, BorshSerialize};
use timecoin_primitives::hash::Domain;
use timecoin_primitives::keys::BatchVerifier;
use timecoin_primitives::{
    BlockHash, CommitCertificate, CommitVote, Epoch, Hash32, Height, Network, Txid,
};

use crate::committee::{Committee, Weight};
use crate::error::ConsensusError;

const TAG_TRANSACTION_VOTE: u8 = 1;
const TAG_BLOCK_STATEMENT: u8 = 2;
const TAG_LEADER_LOTTERY: u8 = 3;
const TAG_VIEW_CHANGE_CLAIM: u8 = 4;

/// A step of block consensus. The order is the order in which one node signs within a height:
/// it enters view `v` with a view change (except view 0), then the leader proposes, then
/// everyone prepares and commits. [`Slot`]'s ordering builds on it.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, BorshSerialize, BorshDeserialize,
)]
#[borsh(use_discriminant = true)]
pub enum Phase {
    /// "I give up on view `v − 1`; here is my highest prepared certificate" (signed for `v`).
    ViewChange = 0,
    /// The leader's pre-prepare: "this is the block of view `v`".
    Proposal = 1,
    /// "I accept the leader's block for view `v`".
    Prepare = 2,
    /// "A quorum prepared this block in view `v`; I commit to it".
    Commit = 3,
}

/// Where a block-consensus statement sits: a node signs at most one digest per slot, and slots
/// only in increasing order (height, then view, then phase).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, BorshSerialize, BorshDeserialize,
)]
pub struct Slot {
    /// The height being decided.
    pub height: Height,
    /// The view (round) within the height.
    pub view: u32,
    /// The step.
    pub phase: Phase,
}

/// The last statement a node signed: what it persists so that, after a restart, it still never
/// signs anything that contradicts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct SignedSlot {
    /// The slot.
    pub slot: Slot,
    /// What was signed in it: the block hash, or the view-change claim digest.
    pub digest: Hash32,
}

/// What a masternode signs to vote for a transaction's finality.
pub fn transaction_vote_message(network: Network, epoch: Epoch, txid: &Txid) -> [u8; 32] {
    Domain::ConsensusVote
        .hash(&[
            &[TAG_TRANSACTION_VOTE, network.id()],
            &epoch.0.to_le_bytes(),
            txid.as_bytes(),
        ])
        .0
}

/// What a masternode signs for a block-consensus statement. The commit message
/// (`phase = Commit`, `digest` = block hash) is what a [`CommitCertificate`]'s votes sign.
pub fn statement_message(network: Network, epoch: Epoch, slot: Slot, digest: &Hash32) -> [u8; 32] {
    Domain::ConsensusVote
        .hash(&[
            &[TAG_BLOCK_STATEMENT, network.id()],
            &epoch.0.to_le_bytes(),
            &slot.height.0.to_le_bytes(),
            &slot.view.to_le_bytes(),
            &[slot.phase as u8],
            &digest.0,
        ])
        .0
}

/// The digest a view change signs: its claim "my highest prepared certificate is for `block` in
/// view `view`", or zero for "I prepared nothing at this height".
pub fn view_change_digest(prepared: Option<(u32, BlockHash)>) -> Hash32 {
    match prepared {
        None => Hash32::ZERO,
        Some((view, block)) => Domain::ConsensusVote.hash(&[
            &[TAG_VIEW_CHANGE_CLAIM],
            &view.to_le_bytes(),
            block.as_bytes(),
        ]),
    }
}

/// The lottery input of the leader of (`height`, `view`).
pub(crate) fn leader_seed_digest(
    network: Network,
    epoch: Epoch,
    seed: &Hash32,
    height: Height,
    view: u32,
) -> Hash32 {
    Domain::ConsensusVote.hash(&[
        &[TAG_LEADER_LOTTERY, network.id()],
        &epoch.0.to_le_bytes(),
        &seed.0,
        &height.0.to_le_bytes(),
        &view.to_le_bytes(),
    ])
}

/// Checks that `votes` are valid signatures over `message` from distinct members of
/// `committee` (strictly ascending voters, which rules out duplicates cheaply) whose weight
/// reaches the quorum. Returns the signed weight.
///
/// Signatures are checked as one batch: under ZIP-215 a batch accepts exactly the signatures
/// that single checks accept, so the outcome does not depend on how it was checked.
pub fn verify_quorum_votes(
    committee: &Committee,
    message: &[u8; 32],
    votes: &[CommitVote],
) -> Result<Weight, ConsensusError> {
    let mut weight: u64 = 0;
    let mut batch = BatchVerifier::new();
    for (position, vote) in votes.iter().enumerate() {
        if position > 0 && votes[position - 1].voter >= vote.voter {
            return Err(ConsensusError::UnsortedVoters);
        }
        let member = committee
            .member(&vote.voter)
            .ok_or(ConsensusError::NotAMember(vote.voter))?;
        weight += member.weight.0;
        batch.queue(&vote.voter, message, &vote.signature);
    }
    if !committee.is_quorum(Weight(weight)) {
        return Err(ConsensusError::InsufficientWeight {
            have: weight,
            need: committee.quorum_weight().0,
        });
    }
    batch
        .verify()
        .map_err(|_| ConsensusError::BadSignatureSet)?;
    Ok(Weight(weight))
}

/// Verifies a block's commit certificate against the committee of the block's epoch: what a
/// syncing node checks before it accepts a block as final. Returns the signed weight.
pub fn verify_commit_certificate(
    committee: &Committee,
    certificate: &CommitCertificate,
) -> Result<Weight, ConsensusError> {
    let slot = Slot {
        height: certificate.height,
        view: certificate.view,
        phase: Phase::Commit,
    };
    let message = statement_message(
        committee.network(),
        committee.epoch(),
        slot,
        &certificate.block_hash.0,
    );
    verify_quorum_votes(committee, &message, &certificate.votes)
}

/// Whether a node whose last signed statement is `last` may sign `digest` in `slot` without
/// contradicting itself. The rule, which makes equivocation impossible even across restarts
/// as long as `last` is persisted before anything signed leaves the node:
///
/// - slots are signed in strictly increasing order, except that re-signing the very same
///   (slot, digest) is allowed (Ed25519 is deterministic, so it yields the same signature);
/// - within one (height, view), the proposal, prepare and commit a node signs all name the same
///   block, so a restarted node that prepared block A never commits block B in that view.
pub fn may_sign(last: Option<&SignedSlot>, slot: Slot, digest: &Hash32) -> bool {
    let Some(last) = last else { return true };
    if slot == last.slot {
        return *digest == last.digest;
    }
    if slot < last.slot {
        return false;
    }
    let same_view = slot.height == last.slot.height && slot.view == last.slot.view;
    let both_name_blocks = slot.phase != Phase::ViewChange && last.slot.phase != Phase::ViewChange;
    !(same_view && both_name_blocks && *digest != last.digest)
}
