//! What goes into the node and what comes out of it.

use timecoin_consensus::{Evidence, FinalityCertificate};
use timecoin_ledger::UtxoEntry;
use timecoin_mempool::FeeRate;
use timecoin_primitives::{
    Address, Amount, Block, BlockHash, CommitCertificate, Epoch, Height, OutPoint, PublicKey,
    Transaction, Txid,
};
use timecoin_storage::ChainTip;

use crate::message::{NodeMessage, PeerId};

/// Identifies a client command so the runtime can route the reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);

/// One input to [`crate::Node::handle`].
#[derive(Clone, Debug)]
pub enum Input {
    /// Time passed. The node's only clock; every other input is handled at the last tick's time.
    Tick {
        /// Milliseconds since the Unix epoch (any fixed origin works; it must not go backwards
        /// by much, and the node ignores backward steps).
        now_ms: u64,
    },
    /// A frame from a peer, still encoded: decoding is the node's job so that a malformed frame
    /// can be blamed on its sender.
    PeerMessage {
        /// Who sent it.
        peer: PeerId,
        /// The frame.
        bytes: Vec<u8>,
    },
    /// A peer connected (or reconnected): it gets our tip and our latest signed messages.
    PeerConnected {
        /// The peer.
        peer: PeerId,
    },
    /// A peer went away.
    PeerDisconnected {
        /// The peer.
        peer: PeerId,
    },
    /// A client (RPC) command.
    Command {
        /// Echoed in the reply.
        id: RequestId,
        /// The command.
        command: Command,
    },
}

/// What a client can ask.
#[derive(Clone, Debug)]
pub enum Command {
    /// Validate, pool, relay and vote on a transaction.
    SubmitTransaction(Transaction),
    /// The committed tip.
    Tip,
    /// A committed block by hash, with its certificate.
    BlockByHash(BlockHash),
    /// A committed block by height, with its certificate.
    BlockByHeight(Height),
    /// Where a transaction stands.
    TransactionStatus(Txid),
    /// Unspent outputs paying an address, including outputs of certified transactions not yet
    /// in a block (those are spendable: they are final).
    UtxosByAddress {
        /// The address.
        address: Address,
        /// Most outputs to return.
        limit: usize,
    },
    /// Pool statistics.
    MempoolInfo,
    /// Consensus state.
    ConsensusInfo,
}

/// How a submitted transaction was received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubmitOutcome {
    /// Valid, pooled, relayed, voted on.
    Accepted(Txid),
    /// Already known (pooled, certified or committed).
    AlreadyKnown(Txid),
    /// Some inputs are unknown: held until a certificate or block provides them.
    AwaitingInputs(Txid),
    /// Refused; the text says why.
    Rejected(String),
    /// Not looked at: too many transactions are collecting votes for a new client's to be
    /// final soon (ADR 0026). Nothing is wrong with it; submit it again shortly.
    Busy {
        /// Transactions collecting votes at this node.
        pending: usize,
        /// The most that may be, for a client's to enter.
        limit: usize,
    },
}

/// Where a transaction stands, from this node's point of view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxStatus {
    /// Never seen (or forgotten).
    Unknown,
    /// Waiting for inputs that are not final yet.
    AwaitingInputs,
    /// Pooled, collecting votes.
    Pending,
    /// Final: it holds a finality certificate, not yet in a block.
    Certified(FinalityCertificate),
    /// In a committed block.
    Included {
        /// The block's height.
        height: Height,
        /// The position in the block.
        position: u32,
    },
}

/// Pool statistics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MempoolSummary {
    /// Transactions collecting votes.
    pub pending_transactions: usize,
    /// Their encoded bytes.
    pub pending_bytes: usize,
    /// Certified transactions waiting for a block.
    pub certified_transactions: usize,
    /// Transactions waiting for inputs.
    pub awaiting_inputs: usize,
    /// The most transactions that may be collecting votes for a client's to enter (ADR 0026);
    /// `None` when that limit is off.
    pub admission_limit: Option<usize>,
    /// Transactions this node saw finalized per second, over the last full second.
    pub finalized_per_s: u64,
    /// Client transactions refused since start because the node was busy.
    pub refused_busy: u64,
}

/// The pools in detail, as `getmempoolinfo` reports them ([`crate::Node::pool_stats`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolStats {
    /// The counts [`Command::MempoolInfo`] answers.
    pub summary: MempoolSummary,
    /// The pool's estimate of the memory its pending transactions take, indexes included
    /// (allocator overhead is not modelled; see [`timecoin_mempool::MempoolInfo::usage_bytes`]).
    pub pending_usage_bytes: usize,
    /// The sum of the pending transactions' fees.
    pub pending_fees: Amount,
    /// The pool's byte limit, on the sum of encoded sizes (`pending_bytes`).
    pub max_bytes: usize,
    /// The pool's transaction-count limit.
    pub max_transactions: usize,
    /// The fee rate a transaction of the pool's average size must exceed to enter now, because
    /// the pool is full; `None` while such a transaction fits without evicting anything.
    pub entry_fee_rate: Option<FeeRate>,
}

/// Where block sync stands, from what peers have told this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncStatus {
    /// The committed tip.
    pub height: Height,
    /// The best height known to exist: the highest tip a connected peer announced, or a height
    /// consensus decided whose block we lack, and never below `height`.
    pub target_height: Height,
    /// Connected peers that have announced a tip above genesis.
    pub peers_known: usize,
    /// The first height of the sync request in flight, if one is.
    pub in_flight: Option<Height>,
}

/// Whether a transaction listed by [`crate::Node::pool_transactions`] is final yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolFinality {
    /// Collecting votes: it may still lose to a conflicting transaction.
    Pending,
    /// Holds a finality certificate, waiting for a block.
    Certified,
}

/// A transaction held in memory and not yet in a block, as `getrawmempool` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolTransaction {
    /// Its txid.
    pub txid: Txid,
    /// Its canonical encoded size.
    pub size_bytes: usize,
    /// Its fee.
    pub fee: Amount,
    /// When this node first saw it (milliseconds on the node's clock), while it is known: the
    /// record is dropped once the transaction is certified, or when the bounded record is full.
    pub first_seen_ms: Option<u64>,
    /// The held transactions (pending or certified) whose outputs it spends, ascending.
    pub depends: Vec<Txid>,
    /// Pending or certified.
    pub finality: PoolFinality,
}

/// Consensus state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsensusSummary {
    /// The height being decided.
    pub height: Height,
    /// Its current view.
    pub view: u32,
    /// The epoch of that height.
    pub epoch: Epoch,
    /// Committee size.
    pub committee_members: usize,
    /// Committee weight W.
    pub total_weight: u64,
    /// Quorum weight.
    pub quorum_weight: u64,
    /// This node's key and whether it is in the committee.
    pub node_key: Option<(PublicKey, bool)>,
    /// Leader of the current view.
    pub leader: PublicKey,
    /// Locks held this epoch.
    pub locked_inputs: usize,
}

/// The answer to a [`Command`].
// One reply is built per RPC request and moved once, so the size of the `Block` variant (a
// header with three hashes and the parent certificate pointer) costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// To [`Command::SubmitTransaction`].
    Submitted(SubmitOutcome),
    /// To [`Command::Tip`].
    Tip(Option<ChainTip>),
    /// To the block queries.
    Block(Option<(Block, Option<CommitCertificate>)>),
    /// To [`Command::TransactionStatus`].
    TransactionStatus(TxStatus),
    /// To [`Command::UtxosByAddress`].
    Utxos(Vec<(OutPoint, UtxoEntry)>),
    /// To [`Command::MempoolInfo`].
    Mempool(MempoolSummary),
    /// To [`Command::ConsensusInfo`].
    Consensus(Box<ConsensusSummary>),
    /// The command could not be answered (storage failure reading).
    Error(String),
}

/// Something worth a log line or a metric.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeEvent {
    /// A transaction became final at this node.
    TransactionFinalized {
        /// It.
        txid: Txid,
        /// Milliseconds since this node first saw it (0 if it first saw the certificate).
        latency_ms: u64,
    },
    /// A block was committed and applied.
    BlockCommitted {
        /// Its height.
        height: Height,
        /// Its hash.
        hash: BlockHash,
        /// The view that decided it.
        view: u32,
        /// Its transaction count, reward included.
        transactions: usize,
        /// Whether it arrived through sync rather than this node's consensus.
        synced: bool,
    },
    /// Transactions of a committed block that this node had not certified before: final by
    /// the block alone (it missed their votes, or learnt the block by sync). Together with
    /// [`NodeEvent::TransactionFinalized`] this names every transaction that became final here.
    FinalInBlock {
        /// The block's height.
        height: Height,
        /// The transactions, in block order, the reward left out.
        txids: Vec<Txid>,
    },
    /// The consensus view moved on (timeouts or catch-up).
    ViewChanged {
        /// The height.
        height: Height,
        /// The new view.
        view: u32,
        /// The member who leads it: a run of view changes naming the same key points at a
        /// member that is down.
        leader: PublicKey,
    },
    /// A masternode signed conflicting statements.
    Evidence(Box<Evidence>),
    /// We judged a proposed block invalid and will not vote for it.
    ProposalRejected {
        /// Its height.
        height: Height,
        /// The view it was proposed in.
        view: u32,
        /// Why.
        reason: String,
    },
    /// The node refused to send a statement because its own log holds a different one for the
    /// same slot (a restarted node that lost state would otherwise equivocate).
    RefusedToEquivocate(String),
    /// A new epoch began.
    EpochStarted {
        /// It.
        epoch: Epoch,
        /// Committee size.
        members: usize,
    },
}

/// What the runtime must do. Perform actions in order. Everything the node had to persist is
/// already durable when an action is returned (see the crate documentation).
#[derive(Clone, Debug)]
pub enum Action {
    /// Send to every connected peer.
    Broadcast(NodeMessage),
    /// Send to one peer.
    Send {
        /// The peer.
        peer: PeerId,
        /// The message.
        message: NodeMessage,
    },
    /// The peer misbehaved; lower its score or disconnect it.
    Penalize {
        /// The peer.
        peer: PeerId,
        /// Why, for the log.
        reason: String,
    },
    /// Answer a client command.
    Reply {
        /// The command's id.
        id: RequestId,
        /// The answer.
        reply: Reply,
    },
    /// Deliver [`Input::Tick`] at (or soon after) this time.
    ScheduleTick {
        /// When.
        at_ms: u64,
    },
    /// For logs and metrics.
    Event(NodeEvent),
}
