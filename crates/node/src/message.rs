//! The wire protocol between nodes: one [`NodeMessage`] per network frame, in the project's
//! canonical encoding (borsh, every variable-length field bounded).

use borsh::{BorshDeserialize, BorshSerialize};
use timecoin_consensus::{
    BftMessage, FinalityCertificate, PreparedCertificate, Proposal, ViewChange, VoteBatch,
};
use timecoin_primitives::block::{MAX_BLOCK_TRANSACTIONS, MAX_COMMITTEE_SIZE};
use timecoin_primitives::{
    Block, BlockHash, BlockHeader, BoundedVec, CommitCertificate, DecodeError, Height, Signature,
    Transaction, Txid, decode, encode,
};

/// Largest frame a node accepts or sends, in bytes: one maximal block plus its certificate and
/// framing. Anything larger is a protocol violation by the sender.
pub const MAX_MESSAGE_BYTES: usize = 17 << 20;
/// Most blocks one sync response carries.
pub const MAX_SYNC_BLOCKS: usize = 32;
/// Most encoded bytes of blocks one sync response carries (a response stops before exceeding
/// it, but always carries at least one block so that sync progresses).
pub const MAX_SYNC_RESPONSE_BYTES: usize = 8 << 20;
/// Most transactions one `Transactions` message relays.
pub const MAX_RELAY_TRANSACTIONS: usize = 1_024;
/// Most signed votes one `TxVotes` message relays (each covers up to
/// [`timecoin_consensus::signing::MAX_VOTE_TXIDS`] transactions).
pub const MAX_RELAY_VOTES: usize = 256;
/// Most certified transactions one `CertifiedMany` message relays.
pub const MAX_RELAY_CERTIFIED: usize = 512;
/// The encoded size a node aims to keep each relay message under when it coalesces many items
/// into one, well inside the gossip limits of every topic.
pub const RELAY_TARGET_BYTES: usize = 512 * 1024;

/// An opaque handle for a connected peer, assigned by the runtime (the network crate maps it
/// to a libp2p peer id; the simulator uses the node index). The node only compares them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerId(pub u64);

/// A block with the certificate that made it final, as sync serves it.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct CertifiedBlock {
    /// The block.
    pub block: Block,
    /// Its commit certificate, to be verified against the committee of the block's epoch.
    pub certificate: CommitCertificate,
}

/// A transaction with the finality certificate that made it final.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct CertifiedTransaction {
    /// The transaction.
    pub transaction: Transaction,
    /// Its certificate.
    pub certificate: FinalityCertificate,
}

/// One transaction of a [`CompactProposal`]'s block.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum CompactTransaction {
    /// Sent whole: the block reward, which no pool holds.
    Full(Transaction),
    /// Named by txid: every other transaction of a block is certified before it is proposed,
    /// so the receivers already hold it, relayed for voting or with its certificate.
    Id(Txid),
}

/// A block proposal as it is gossiped: the block's transactions by txid (the idea of
/// Bitcoin's compact blocks, BIP 152). Whole proposals repeated every transaction the
/// receivers had just voted on, and each one grew every peer's gossip receive buffer to the
/// largest block seen, for good (ADR 0013).
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct CompactProposal {
    /// The height.
    pub height: Height,
    /// The view.
    pub view: u32,
    /// The block's header.
    pub header: BlockHeader,
    /// The block's transactions, in order.
    pub transactions: BoundedVec<CompactTransaction, MAX_BLOCK_TRANSACTIONS>,
    /// The block's parent certificate.
    pub parent_commit: Option<Box<CommitCertificate>>,
    /// As in [`Proposal::justification`].
    pub justification: BoundedVec<ViewChange, MAX_COMMITTEE_SIZE>,
    /// As in [`Proposal::certificate`].
    pub certificate: Option<PreparedCertificate>,
    /// The leader's signature, as in [`Proposal::signature`] (it signs the header's hash, so
    /// it holds for both forms).
    pub signature: Signature,
}

impl CompactProposal {
    /// The compact form of `proposal`: the reward whole, every other transaction by txid.
    pub fn new(proposal: &Proposal) -> CompactProposal {
        let transactions = proposal
            .block
            .transactions
            .iter()
            .map(|transaction| match transaction.is_reward() {
                true => CompactTransaction::Full(transaction.clone()),
                false => CompactTransaction::Id(transaction.txid()),
            })
            .collect();
        CompactProposal {
            height: proposal.height,
            view: proposal.view,
            header: proposal.block.header.clone(),
            transactions: BoundedVec::new(transactions).expect("as many as the block has"),
            parent_commit: proposal.block.parent_commit.clone(),
            justification: proposal.justification.clone(),
            certificate: proposal.certificate.clone(),
            signature: proposal.signature,
        }
    }

    /// The hash of the proposed block.
    pub fn block_hash(&self) -> BlockHash {
        self.header.hash()
    }

    /// The whole proposal, with each transaction named by txid taken from `lookup`; or the
    /// txids `lookup` does not know. A transaction found by txid is the one the block commits
    /// to (the header's root is over txids), though its signatures may be other valid ones.
    pub fn reconstruct(
        &self,
        mut lookup: impl FnMut(&Txid) -> Option<Transaction>,
    ) -> Result<Proposal, Vec<Txid>> {
        let mut transactions = Vec::with_capacity(self.transactions.len());
        let mut missing = Vec::new();
        for item in self.transactions.iter() {
            match item {
                CompactTransaction::Full(transaction) => transactions.push(transaction.clone()),
                CompactTransaction::Id(txid) => match lookup(txid) {
                    Some(transaction) => transactions.push(transaction),
                    None => missing.push(*txid),
                },
            }
        }
        if !missing.is_empty() {
            return Err(missing);
        }
        Ok(Proposal {
            height: self.height,
            view: self.view,
            block: Block {
                header: self.header.clone(),
                transactions: BoundedVec::new(transactions).expect("as many as the compact form"),
                parent_commit: self.parent_commit.clone(),
            },
            justification: self.justification.clone(),
            certificate: self.certificate.clone(),
            signature: self.signature,
        })
    }
}

/// What a node relays in one gossip round, all kinds in one message. One message per round
/// instead of one per kind lets rounds be shorter within a peer's per-publisher message
/// allowance, and every gossip message costs a signature at the sender and a check at each
/// receiver whatever its size.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct RelayBundle {
    /// Transactions for finality voting.
    pub transactions: BoundedVec<Transaction, MAX_RELAY_TRANSACTIONS>,
    /// Finality votes.
    pub votes: BoundedVec<VoteBatch, MAX_RELAY_VOTES>,
    /// Certified transactions.
    pub certified: BoundedVec<CertifiedTransaction, MAX_RELAY_CERTIFIED>,
}

impl Default for RelayBundle {
    fn default() -> Self {
        RelayBundle {
            transactions: BoundedVec::empty(),
            votes: BoundedVec::empty(),
            certified: BoundedVec::empty(),
        }
    }
}

impl RelayBundle {
    /// Whether the bundle carries nothing.
    pub fn is_empty(&self) -> bool {
        self.transactions.is_empty() && self.votes.is_empty() && self.certified.is_empty()
    }
}

/// Everything nodes say to each other.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum NodeMessage {
    /// Transactions being relayed for finality voting.
    Transactions(BoundedVec<Transaction, MAX_RELAY_TRANSACTIONS>),
    /// Finality votes.
    TxVotes(BoundedVec<VoteBatch, MAX_RELAY_VOTES>),
    /// A finality certificate with the transaction it certifies, so a receiver that never saw
    /// the transaction can still spend its outputs and include it in a block.
    Certified {
        /// The transaction.
        transaction: Transaction,
        /// Its certificate.
        certificate: FinalityCertificate,
    },
    /// A block-consensus message.
    Bft(BftMessage),
    /// A block that was just committed, with its certificate (pushed to peers that may have
    /// missed the final commit votes).
    Committed(Box<CertifiedBlock>),
    /// "Send me committed blocks from `from` on, at most `count`."
    SyncRequest {
        /// The first height wanted.
        from: Height,
        /// How many, at most [`MAX_SYNC_BLOCKS`].
        count: u32,
    },
    /// The answer to a sync request: consecutive committed blocks from the requested height.
    SyncResponse(BoundedVec<CertifiedBlock, MAX_SYNC_BLOCKS>),
    /// "I am alive and my chain ends here": lets peers notice they are behind.
    Heartbeat {
        /// The sender's committed tip height.
        height: Height,
        /// The sender's committed tip hash.
        hash: BlockHash,
    },
    /// Several certified transactions at once: what a node relays after a busy step, so
    /// that the message rate stays bounded by the step rate rather than the payment rate.
    CertifiedMany(BoundedVec<CertifiedTransaction, MAX_RELAY_CERTIFIED>),
    /// One gossip round's relays (see [`RelayBundle`]), handled as its transactions, then its
    /// votes, then its certified transactions.
    Relay(Box<RelayBundle>),
    /// A leader's proposal in compact form: how proposals are broadcast.
    CompactProposal(Box<CompactProposal>),
    /// "Send me the whole proposal for this block": from a node that received the compact
    /// form but lacks some of its transactions. Answered with [`NodeMessage::Bft`].
    GetProposal {
        /// Its height.
        height: Height,
        /// Its view.
        view: u32,
        /// The proposed block's hash.
        block: BlockHash,
    },
}

impl NodeMessage {
    /// The canonical bytes of the message.
    pub fn to_bytes(&self) -> Vec<u8> {
        encode(self)
    }

    /// Decodes a frame, refusing oversized ones before decoding anything.
    pub fn from_bytes(bytes: &[u8]) -> Result<NodeMessage, MessageError> {
        if bytes.len() > MAX_MESSAGE_BYTES {
            return Err(MessageError::TooLarge {
                size: bytes.len(),
                max: MAX_MESSAGE_BYTES,
            });
        }
        decode(bytes).map_err(MessageError::Malformed)
    }

    /// A short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            NodeMessage::Transactions(_) => "transactions",
            NodeMessage::TxVotes(_) => "tx_votes",
            NodeMessage::Certified { .. } => "certified",
            NodeMessage::CertifiedMany(_) => "certified_many",
            NodeMessage::Bft(_) => "bft",
            NodeMessage::Committed(_) => "committed",
            NodeMessage::SyncRequest { .. } => "sync_request",
            NodeMessage::SyncResponse(_) => "sync_response",
            NodeMessage::Heartbeat { .. } => "heartbeat",
            NodeMessage::Relay(_) => "relay",
            NodeMessage::CompactProposal(_) => "compact_proposal",
            NodeMessage::GetProposal { .. } => "get_proposal",
        }
    }
}

/// Why a frame could not be turned into a message. Always the sender's fault.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    /// The frame exceeds [`MAX_MESSAGE_BYTES`].
    #[error("message of {size} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The bytes are not a canonical encoding of a message.
    #[error(transparent)]
    Malformed(DecodeError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use timecoin_primitives::Hash32;

    #[test]
    fn messages_round_trip_and_reject_garbage() {
        let message = NodeMessage::Heartbeat {
            height: Height(7),
            hash: BlockHash(Hash32([3; 32])),
        };
        let bytes = message.to_bytes();
        assert_eq!(NodeMessage::from_bytes(&bytes).unwrap(), message);
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(NodeMessage::from_bytes(&trailing).is_err());
        assert!(NodeMessage::from_bytes(&[200]).is_err());
        let huge = vec![0u8; MAX_MESSAGE_BYTES + 1];
        assert!(matches!(
            NodeMessage::from_bytes(&huge),
            Err(MessageError::TooLarge { .. })
        ));
    }
}
