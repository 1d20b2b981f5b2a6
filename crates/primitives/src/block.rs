//! Blocks, their headers, and the commit certificate that makes a block final.

use borsh::{BorshDeserialize, BorshSerialize};

use crate::codec::{BoundedVec, encode};
use crate::hash::{BlockHash, Domain, Hash32, Txid};
use crate::keys::{PublicKey, Signature};
use crate::merkle::merkle_root;
use crate::quantities::{Epoch, Height, Timestamp};
use crate::transaction::Transaction;

/// Most transactions in one block.
pub const MAX_BLOCK_TRANSACTIONS: usize = 100_000;
/// Most votes in one certificate: the largest committee we admit.
pub const MAX_COMMITTEE_SIZE: usize = 10_000;
/// The only block version so far.
pub const BLOCK_VERSION: u32 = 1;

/// A block header. Its hash is the block hash; it commits to the transactions through the Merkle
/// root, to the UTXO set after the block through the commitment, and to the parent's commit
/// certificate the block carries through its hash.
#[derive(Clone, Debug, PartialEq, Eq, Hash, BorshSerialize, BorshDeserialize)]
pub struct BlockHeader {
    /// The format version.
    pub version: u32,
    /// The distance from genesis.
    pub height: Height,
    /// The parent's hash (all zero for genesis).
    pub previous_hash: BlockHash,
    /// When the proposer made the block.
    pub timestamp: Timestamp,
    /// The epoch whose committee certifies this block.
    pub epoch: Epoch,
    /// The masternode that proposed it (all zero for genesis).
    pub proposer: PublicKey,
    /// The Merkle root of the transactions' txids.
    pub transactions_root: Hash32,
    /// The commitment to the UTXO set after applying this block.
    pub utxo_commitment: Hash32,
    /// [`CommitCertificate::hash`] of the parent's certificate the block carries, or all zero
    /// when it carries none (heights 0 and 1). Without it a relayer could swap the certificate,
    /// and with it the set of masternodes the reward pays, without changing the block hash.
    pub parent_commit_hash: Hash32,
}

impl BlockHeader {
    /// The block hash.
    pub fn hash(&self) -> BlockHash {
        BlockHash(Domain::BlockHeader.hash(&[&encode(self)]))
    }
}

/// A block: a header, its transactions (the reward first) and its parent's commit certificate.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Block {
    /// The header.
    pub header: BlockHeader,
    /// The transactions, in order.
    pub transactions: BoundedVec<Transaction, MAX_BLOCK_TRANSACTIONS>,
    /// The commit certificate of the parent block (Tendermint's "LastCommit"): its signers are
    /// the masternodes this block's reward pays. `None` only at heights 0 and 1, whose parent
    /// has no certificate. Boxed so that a `Block` stays small where it sits inline in other
    /// types (messages, replies).
    pub parent_commit: Option<Box<CommitCertificate>>,
}

impl Block {
    /// The block hash.
    pub fn hash(&self) -> BlockHash {
        self.header.hash()
    }

    /// The txids of the transactions, in order.
    pub fn txids(&self) -> Vec<Txid> {
        self.transactions.iter().map(Transaction::txid).collect()
    }

    /// The Merkle root the header should carry.
    pub fn compute_transactions_root(&self) -> Hash32 {
        merkle_root(&self.txids())
    }

    /// The `parent_commit_hash` the header should carry: the certificate's hash, or zero.
    pub fn compute_parent_commit_hash(&self) -> Hash32 {
        self.parent_commit
            .as_deref()
            .map_or(Hash32::ZERO, CommitCertificate::hash)
    }
}

/// One masternode's commit vote inside a certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, BorshSerialize, BorshDeserialize)]
pub struct CommitVote {
    /// The masternode's node key.
    pub voter: PublicKey,
    /// Its signature over the commit message (defined by the consensus crate).
    pub signature: Signature,
}

/// Commit votes from at least the quorum weight for one block: the proof that it is final. It
/// travels beside the block rather than inside it, because it can only exist after the block;
/// the child block then carries it as [`Block::parent_commit`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, BorshSerialize, BorshDeserialize)]
pub struct CommitCertificate {
    /// The block's height.
    pub height: Height,
    /// The consensus round (view) in which it was committed.
    pub view: u32,
    /// The block certified.
    pub block_hash: BlockHash,
    /// The votes, sorted by voter.
    pub votes: BoundedVec<CommitVote, MAX_COMMITTEE_SIZE>,
}

impl CommitCertificate {
    /// The hash a child block's header commits to ([`BlockHeader::parent_commit_hash`]). Never
    /// zero in practice, so zero can stand for "no certificate".
    pub fn hash(&self) -> Hash32 {
        Domain::CommitCertificate.hash(&[&encode(self)])
    }
}
