//! Byzantine masternodes. Each runs the honest node (so it follows the chain and has valid
//! material to abuse) and then rewrites, multiplies or withholds what it sends, signing with
//! its real key so the lies carry valid signatures.

use timecoin_consensus::finality::sign_transaction_vote;
use timecoin_consensus::signing::{Phase, Slot, statement_message, view_change_digest};
use timecoin_consensus::{BftMessage, Proposal, Vote};
use timecoin_node::{CompactProposal, NodeMessage};
use timecoin_primitives::{
    BlockHash, BoundedVec, Hash32, Height, Network, SecretKey, Timestamp, Transaction,
};

use crate::Rng;

/// How a masternode misbehaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// Follows the protocol.
    Honest,
    /// Sends nothing at all.
    Silent,
    /// As leader, sends two different proposals to two halves of the network; also signs a
    /// second, different prepare and commit for every one it sends.
    Equivocate,
    /// Votes for every transaction it sees, conflicting or not, each vote only to the peer
    /// that relayed the transaction.
    DoubleVote,
    /// Re-sends old messages it received, at random later times.
    Replay,
    /// Re-signs its block statements with view numbers bumped into the future.
    BumpViews,
    /// As leader, proposes blocks that break ledger rules (wrong UTXO commitment); as a sync
    /// server, serves tampered blocks.
    InvalidProposals,
    /// Two processes share this key, each running the honest node (with its own disk).
    Twin,
}

impl Behaviour {
    /// Every misbehaviour the random configurations draw from (twins are set up separately).
    pub const FAULTY: [Behaviour; 6] = [
        Behaviour::Silent,
        Behaviour::Equivocate,
        Behaviour::DoubleVote,
        Behaviour::Replay,
        Behaviour::BumpViews,
        Behaviour::InvalidProposals,
    ];
}

/// Where a rewritten message goes.
pub enum Target {
    /// Everyone.
    All,
    /// Peers with an even index.
    EvenHalf,
    /// Peers with an odd index.
    OddHalf,
}

fn sign_statement(
    key: &SecretKey,
    network: Network,
    epoch_length: u64,
    height: Height,
    view: u32,
    phase: Phase,
    digest: Hash32,
) -> timecoin_primitives::Signature {
    let epoch = timecoin_primitives::Epoch(height.get() / epoch_length.max(1));
    key.sign(&statement_message(
        network,
        epoch,
        Slot {
            height,
            view,
            phase,
        },
        &digest,
    ))
}

/// Rewrites one outgoing message of a Byzantine node into what it actually sends.
pub fn corrupt_outgoing(
    behaviour: Behaviour,
    key: &SecretKey,
    network: Network,
    epoch_length: u64,
    message: NodeMessage,
    rng: &mut Rng,
) -> Vec<(Target, NodeMessage)> {
    let sign = |height, view, phase, digest| {
        sign_statement(key, network, epoch_length, height, view, phase, digest)
    };
    let resign_compact = |proposal: &mut CompactProposal| {
        proposal.signature = sign(
            proposal.height,
            proposal.view,
            Phase::Proposal,
            proposal.block_hash().0,
        );
    };
    match (behaviour, message) {
        (Behaviour::Silent, _) => Vec::new(),
        // Its votes go out targeted, on receipt (see the world's delivery hook).
        (Behaviour::DoubleVote, NodeMessage::TxVotes(_)) => Vec::new(),
        (Behaviour::Equivocate, NodeMessage::Bft(BftMessage::Proposal(proposal))) => {
            let mut other = (*proposal).clone();
            // A different but equally valid block: only the timestamp moves.
            other.block.header.timestamp =
                Timestamp(other.block.header.timestamp.as_millis() + 1 + rng.below(50));
            other.signature = sign(
                other.height,
                other.view,
                Phase::Proposal,
                other.block.hash().0,
            );
            vec![
                (
                    Target::EvenHalf,
                    NodeMessage::Bft(BftMessage::Proposal(proposal)),
                ),
                (
                    Target::OddHalf,
                    NodeMessage::Bft(BftMessage::Proposal(Box::new(other))),
                ),
            ]
        }
        (Behaviour::Equivocate, NodeMessage::CompactProposal(proposal)) => {
            let mut other = (*proposal).clone();
            other.header.timestamp =
                Timestamp(other.header.timestamp.as_millis() + 1 + rng.below(50));
            resign_compact(&mut other);
            vec![
                (Target::EvenHalf, NodeMessage::CompactProposal(proposal)),
                (
                    Target::OddHalf,
                    NodeMessage::CompactProposal(Box::new(other)),
                ),
            ]
        }
        (Behaviour::Equivocate, NodeMessage::Bft(BftMessage::Prepare(vote))) => {
            let fake = fake_vote(&vote, Phase::Prepare, rng, &sign);
            vec![
                (
                    Target::EvenHalf,
                    NodeMessage::Bft(BftMessage::Prepare(vote)),
                ),
                (Target::OddHalf, NodeMessage::Bft(BftMessage::Prepare(fake))),
            ]
        }
        (Behaviour::Equivocate, NodeMessage::Bft(BftMessage::Commit(vote))) => {
            let fake = fake_vote(&vote, Phase::Commit, rng, &sign);
            vec![
                (Target::EvenHalf, NodeMessage::Bft(BftMessage::Commit(vote))),
                (Target::OddHalf, NodeMessage::Bft(BftMessage::Commit(fake))),
            ]
        }
        (Behaviour::BumpViews, NodeMessage::Bft(message)) => {
            let bump = 1 + rng.below(12) as u32;
            let mut out = vec![(Target::All, NodeMessage::Bft(message.clone()))];
            let bumped = match message {
                BftMessage::Prepare(mut vote) => {
                    vote.view += bump;
                    vote.signature =
                        sign(vote.height, vote.view, Phase::Prepare, vote.block_hash.0);
                    Some(BftMessage::Prepare(vote))
                }
                BftMessage::Commit(mut vote) => {
                    vote.view += bump;
                    vote.signature = sign(vote.height, vote.view, Phase::Commit, vote.block_hash.0);
                    Some(BftMessage::Commit(vote))
                }
                BftMessage::ViewChange(mut change) => {
                    change.view_change.view += bump;
                    let claim = view_change_digest(change.view_change.prepared);
                    change.view_change.signature = sign(
                        change.view_change.height,
                        change.view_change.view,
                        Phase::ViewChange,
                        claim,
                    );
                    Some(BftMessage::ViewChange(change))
                }
                BftMessage::Proposal(mut proposal) => {
                    proposal.view += bump;
                    proposal.signature = sign(
                        proposal.height,
                        proposal.view,
                        Phase::Proposal,
                        proposal.block.hash().0,
                    );
                    Some(BftMessage::Proposal(proposal))
                }
            };
            if let Some(bumped) = bumped {
                out.push((Target::All, NodeMessage::Bft(bumped)));
            }
            out
        }
        (Behaviour::BumpViews, NodeMessage::CompactProposal(proposal)) => {
            let mut bumped: CompactProposal = (*proposal).clone();
            bumped.view += 1 + rng.below(12) as u32;
            resign_compact(&mut bumped);
            vec![
                (Target::All, NodeMessage::CompactProposal(proposal)),
                (Target::All, NodeMessage::CompactProposal(Box::new(bumped))),
            ]
        }
        (Behaviour::InvalidProposals, NodeMessage::CompactProposal(proposal)) => {
            let mut bad: CompactProposal = (*proposal).clone();
            bad.header.utxo_commitment.0[0] ^= 0xff;
            resign_compact(&mut bad);
            vec![(Target::All, NodeMessage::CompactProposal(Box::new(bad)))]
        }
        (Behaviour::InvalidProposals, NodeMessage::Bft(BftMessage::Proposal(proposal))) => {
            let mut bad: Proposal = (*proposal).clone();
            bad.block.header.utxo_commitment.0[0] ^= 0xff;
            bad.signature = sign(bad.height, bad.view, Phase::Proposal, bad.block.hash().0);
            vec![(
                Target::All,
                NodeMessage::Bft(BftMessage::Proposal(Box::new(bad))),
            )]
        }
        (Behaviour::InvalidProposals, NodeMessage::SyncResponse(blocks)) => {
            // A lying sync server: the first block is tampered with, so its certificate no
            // longer matches; the receiver must blame us and ask someone else.
            let mut blocks = blocks.into_inner();
            if let Some(first) = blocks.first_mut() {
                first.block.header.timestamp =
                    Timestamp(first.block.header.timestamp.as_millis() + 1);
            }
            vec![(
                Target::All,
                NodeMessage::SyncResponse(BoundedVec::new(blocks).expect("no longer than before")),
            )]
        }
        (_, message) => vec![(Target::All, message)],
    }
}

fn fake_vote(
    vote: &Vote,
    phase: Phase,
    rng: &mut Rng,
    sign: &dyn Fn(Height, u32, Phase, Hash32) -> timecoin_primitives::Signature,
) -> Vote {
    let mut fake = *vote;
    let mut bytes = [0u8; 32];
    for chunk in bytes.chunks_exact_mut(8) {
        chunk.copy_from_slice(&rng.next_u64().to_le_bytes());
    }
    fake.block_hash = BlockHash(Hash32(bytes));
    fake.signature = sign(fake.height, fake.view, phase, fake.block_hash.0);
    fake
}

/// A double-voter's reaction to a transaction it received: a vote for it, whatever it
/// conflicts with.
pub fn vote_for_anything(
    key: &SecretKey,
    network: Network,
    epoch: timecoin_primitives::Epoch,
    transaction: &Transaction,
) -> NodeMessage {
    let vote = sign_transaction_vote(network, epoch, transaction.txid(), key);
    NodeMessage::TxVotes(BoundedVec::new(vec![vote]).expect("one vote"))
}
