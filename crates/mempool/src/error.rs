//! Why the pool turned a transaction away.

use timecoin_primitives::{OutPoint, Txid};

use crate::fee_rate::FeeRate;

/// Why [`Mempool::insert`](crate::Mempool::insert) rejected a transaction.
///
/// Every variant names the transaction, so a log line or an RPC reply is useful on its own.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MempoolError {
    /// Reward transactions are created by the block proposer inside its block and are never
    /// relayed, so one arriving at the pool is a protocol violation.
    #[error(
        "transaction {txid} is a block reward; rewards exist only inside blocks and are never \
         relayed or pooled"
    )]
    RewardTransaction {
        /// The transaction.
        txid: Txid,
    },

    /// The same transaction (same txid) is already pooled. Common and harmless: gossip delivers
    /// a transaction from several peers.
    #[error("transaction {txid} is already in the pool; nothing to do")]
    AlreadyInPool {
        /// The transaction.
        txid: Txid,
    },

    /// The transaction lists one outpoint as two of its inputs; it can never be valid.
    #[error(
        "transaction {txid} spends {outpoint} more than once; each output may be spent by only \
         one input"
    )]
    DuplicateInput {
        /// The transaction.
        txid: Txid,
        /// The outpoint it spends twice.
        outpoint: OutPoint,
    },

    /// Another pooled transaction already spends one of the inputs (a double spend).
    #[error(
        "transaction {txid} spends {outpoint}, which pooled transaction {conflicting} already \
         spends; the pool keeps the first spend, so wait until {conflicting} is included in a \
         block or dropped"
    )]
    Conflict {
        /// The rejected transaction.
        txid: Txid,
        /// The outpoint both spend (the first such input, in input order).
        outpoint: OutPoint,
        /// The pooled transaction that spends it.
        conflicting: Txid,
    },

    /// The transaction alone exceeds the pool's byte limit, so no eviction could make room.
    #[error(
        "transaction {txid} is {size_bytes} bytes, more than the pool's whole limit of \
         {max_bytes} bytes; split it into smaller transactions or raise the pool's byte limit"
    )]
    TooLarge {
        /// The transaction.
        txid: Txid,
        /// Its encoded size.
        size_bytes: usize,
        /// The pool's byte limit.
        max_bytes: usize,
    },

    /// The pool is full and the transaction's fee rate is not above that of every transaction
    /// it would have to evict, so it would be the next to go.
    #[error(
        "the pool is full: to admit transaction {txid} at {fee_rate} it would have to evict \
         transactions paying up to {min_fee_rate}; resend it with a fee rate above \
         {min_fee_rate}"
    )]
    PoolFull {
        /// The transaction.
        txid: Txid,
        /// Its fee rate.
        fee_rate: FeeRate,
        /// The rate it must exceed: the highest rate among the transactions that would be
        /// evicted to make room for it.
        min_fee_rate: FeeRate,
    },

    /// Making room would evict a pooled transaction whose output this one spends, which would
    /// leave it unspendable at once.
    #[error(
        "the pool is full and making room for transaction {txid} would evict its parent \
         {parent}, whose fee rate is among the lowest; resend {txid} once {parent} is in a block"
    )]
    ParentWouldBeEvicted {
        /// The transaction.
        txid: Txid,
        /// The pooled parent that would be evicted.
        parent: Txid,
    },
}

impl MempoolError {
    /// The rejected transaction.
    pub fn txid(&self) -> Txid {
        match self {
            MempoolError::RewardTransaction { txid }
            | MempoolError::AlreadyInPool { txid }
            | MempoolError::DuplicateInput { txid, .. }
            | MempoolError::Conflict { txid, .. }
            | MempoolError::TooLarge { txid, .. }
            | MempoolError::PoolFull { txid, .. }
            | MempoolError::ParentWouldBeEvicted { txid, .. } => *txid,
        }
    }

    /// Whether whoever sent the transaction is at fault (and a peer may be penalised).
    ///
    /// Only transactions that no honest node relays count: a reward transaction and one that
    /// spends an outpoint twice. A double spend of a *pooled* transaction does not count, because
    /// an honest peer may simply have seen the other spend first; deciding between conflicting
    /// spends is the finality layer's job, not the pool's. Size and fee rejections depend on
    /// this node's limits and load, which the sender cannot know.
    pub fn is_sender_fault(&self) -> bool {
        match self {
            MempoolError::RewardTransaction { .. } | MempoolError::DuplicateInput { .. } => true,
            MempoolError::AlreadyInPool { .. }
            | MempoolError::Conflict { .. }
            | MempoolError::TooLarge { .. }
            | MempoolError::PoolFull { .. }
            | MempoolError::ParentWouldBeEvicted { .. } => false,
        }
    }
}
