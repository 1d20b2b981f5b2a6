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
    BlockHash, CommitCertificate, CommitVote, Epoch, Hash32, Height, Network, PublicKey, Signature,
    Txid,
};

use crate::committee::{Committee, Weight};
use crate::error::ConsensusError;

const TAG_TRANSACTION_VOTE: u8 = 1;
const TAG_BLOCK_STATEMENT: u8 = 2;
const TAG_LEADER_LOTTERY: u8 = 3;
const TAG_VIEW_CHANGE_CLAIM: u8 = 4;
const TAG_VOTE_LEAF: u8 = 5;
const TAG_VOTE_NODE: u8 = 6;
const TAG_LEADER_ROTATION: u8 = 7;

/// Most transactions one signed finality vote covers (see [`vote_tree`]).
pub const MAX_VOTE_TXIDS: usize = 512;
/// Longest Merkle path from a transaction to the root of a vote over [`MAX_VOTE_TXIDS`].
pub const MAX_VOTE_PATH: usize = 9;

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

/// What a masternode signs to vote for the finality of every transaction under `root`, the
/// root of [`vote_tree`] over those txids (for one transaction, its leaf).
pub fn transaction_vote_message(network: Network, epoch: Epoch, root: &Hash32) -> [u8; 32] {
    Domain::ConsensusVote
        .hash(&[
            &[TAG_TRANSACTION_VOTE, network.id()],
            &epoch.0.to_le_bytes(),
            &root.0,
        ])
        .0
}

/// A transaction's leaf in a vote's Merkle tree. Its own tag keeps leaves and inner nodes
/// apart, so no inner node can pass for a transaction.
pub fn vote_leaf(txid: &Txid) -> Hash32 {
    Domain::ConsensusVote.hash(&[&[TAG_VOTE_LEAF], txid.as_bytes()])
}

/// An inner node: the children are hashed in sorted order, so a path needs no left/right bits.
fn vote_node(a: &Hash32, b: &Hash32) -> Hash32 {
    let (low, high) = if a <= b { (a, b) } else { (b, a) };
    Domain::ConsensusVote.hash(&[&[TAG_VOTE_NODE], &low.0, &high.0])
}

/// The levels of the Merkle tree a vote over `txids` signs the root of: leaves first, the root
/// alone last. Pairs are hashed left to right; an odd node at the end of a level moves up
/// unchanged (it is never paired with itself, so no two different lists share a root by
/// repeating their last element). Empty for no txids.
pub fn vote_tree(txids: &[Txid]) -> Vec<Vec<Hash32>> {
    if txids.is_empty() {
        return Vec::new();
    }
    let mut levels = vec![txids.iter().map(vote_leaf).collect::<Vec<_>>()];
    while let Some(level) = levels.last()
        && level.len() > 1
    {
        let next = level
            .chunks(2)
            .map(|pair| match pair {
                [a, b] => vote_node(a, b),
                [a] => *a,
                _ => unreachable!("chunks of two"),
            })
            .collect();
        levels.push(next);
    }
    levels
}

/// The siblings on the way from leaf `index` of `levels` ([`vote_tree`]) to the root.
pub fn vote_path(levels: &[Vec<Hash32>], mut index: usize) -> Vec<Hash32> {
    let mut path = Vec::new();
    for level in &levels[..levels.len().saturating_sub(1)] {
        if let Some(sibling) = level.get(index ^ 1) {
            path.push(*sibling);
        }
        index /= 2;
    }
    path
}

/// The root a vote for `txid` with Merkle path `path` signed.
pub fn vote_root(txid: &Txid, path: &[Hash32]) -> Hash32 {
    path.iter()
        .fold(vote_leaf(txid), |node, sibling| vote_node(&node, sibling))
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

/// The lottery input of the view-0 leader of `height`.
pub(crate) fn leader_seed_digest(
    network: Network,
    epoch: Epoch,
    seed: &Hash32,
    height: Height,
) -> Hash32 {
    Domain::ConsensusVote.hash(&[
        &[TAG_LEADER_LOTTERY, network.id()],
        &epoch.0.to_le_bytes(),
        &seed.0,
        &height.0.to_le_bytes(),
    ])
}

/// The sort key of `node_key` in the leader rotation of `epoch`: views after 0 pass the lead
/// along this order. The seed is fixed only at the end of the previous epoch, after keys are
/// registered, so members cannot place themselves next to each other in it.
pub(crate) fn leader_rotation_digest(
    network: Network,
    epoch: Epoch,
    seed: &Hash32,
    node_key: &PublicKey,
) -> Hash32 {
    Domain::ConsensusVote.hash(&[
        &[TAG_LEADER_ROTATION, network.id()],
        &epoch.0.to_le_bytes(),
        &seed.0,
        &node_key.0,
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
    verify_quorum_signatures(
        committee,
        votes
            .iter()
            .map(|vote| (vote.voter, *message, vote.signature)),
    )
}

/// [`verify_quorum_votes`] where each voter signed its own message: (voter, message,
/// signature), strictly ascending by voter.
pub fn verify_quorum_signatures(
    committee: &Committee,
    votes: impl IntoIterator<Item = (PublicKey, [u8; 32], Signature)>,
) -> Result<Weight, ConsensusError> {
    let mut weight: u64 = 0;
    let mut batch = BatchVerifier::new();
    let mut previous: Option<PublicKey> = None;
    let votes: Vec<_> = votes.into_iter().collect();
    for (voter, message, signature) in &votes {
        if previous.is_some_and(|previous| previous >= *voter) {
            return Err(ConsensusError::UnsortedVoters);
        }
        previous = Some(*voter);
        let member = committee
            .member(voter)
            .ok_or(ConsensusError::NotAMember(*voter))?;
        weight += member.weight.0;
        batch.queue(voter, message, signature);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn txids(n: usize) -> Vec<Txid> {
        (0..n)
            .map(|i| {
                let mut bytes = [0u8; 32];
                bytes[..8].copy_from_slice(&(i as u64).to_le_bytes());
                Txid(Hash32(bytes))
            })
            .collect()
    }

    #[test]
    fn every_path_leads_its_own_txid_and_no_other_to_the_root() {
        for n in (1..=40).chain([MAX_VOTE_TXIDS - 1, MAX_VOTE_TXIDS]) {
            let ids = txids(n);
            let levels = vote_tree(&ids);
            let root = levels.last().unwrap()[0];
            for (index, txid) in ids.iter().enumerate() {
                let path = vote_path(&levels, index);
                assert!(path.len() <= MAX_VOTE_PATH, "n {n}: path of {}", path.len());
                assert_eq!(vote_root(txid, &path), root, "n {n} index {index}");
                // The same path does not prove the neighbour, nor a txid outside the batch.
                let other = ids[(index + 1) % n];
                if other != *txid {
                    assert_ne!(vote_root(&other, &path), root);
                }
                assert_ne!(vote_root(&txids(n + 1)[n], &path), root);
            }
        }
    }

    #[test]
    fn different_lists_have_different_roots() {
        let root = |ids: &[Txid]| vote_tree(ids).last().unwrap()[0];
        let ids = txids(3);
        // Repeating the odd last element must not give the same root (Bitcoin's CVE-2012-2459).
        let mut repeated = ids.clone();
        repeated.push(ids[2]);
        assert_ne!(root(&ids), root(&repeated));
        // A single transaction's root is its leaf, and an inner node is never a leaf.
        assert_eq!(root(&ids[..1]), vote_leaf(&ids[0]));
        let inner = root(&ids[..2]);
        assert_ne!(inner, vote_leaf(&Txid(inner)));
        assert!(vote_tree(&[]).is_empty());
    }
}
