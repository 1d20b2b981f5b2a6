//! The node state machine.

mod query;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use timecoin_consensus::{
    BftConfig, BftEffect, BftEngine, BftInput, BftMessage, Committee, FinalityCertificate,
    FinalityEffect, FinalityEngine, FinalityInput, PersistedLock, Proposal, TierWeights, Weight,
    verify_commit_certificate,
};
use timecoin_ledger::{
    BlockTemplate, ChainParams, LedgerError, MasternodeEvent, MasternodeRegistration,
    MasternodeRegistry, UtxoCache, UtxoEntry, UtxoStore, ValidatedBlock, apply_validated_block,
    build_block, check_transaction, validate_block_for_apply, validate_transaction,
    verify_transaction, verify_transactions,
};
use timecoin_mempool::{Mempool, MempoolConfig, MempoolError};
use timecoin_primitives::{
    Block, BlockHash, BoundedVec, CommitCertificate, Epoch, FastMap, FastSet, Height, OutPoint,
    SecretKey, Timestamp, Transaction, TxKind, Txid, decode, encode, encoded_len,
};
use timecoin_storage::{
    BlockCommit, ChangeRecorder, ConsensusRecord, LogKey, LogOutcome, MAX_CONSENSUS_BATCH,
    StorageError,
};

use crate::admission::{Admission, AdmissionConfig};
use crate::certified::{CertifiedEntry, CertifiedPool, CertifiedView, MAX_CERTIFIED_UNBLOCKED};
use crate::coalesce::coalesce;
use crate::error::NodeError;
use crate::io::{
    Action, Command, ConsensusSummary, Input, NodeEvent, Reply, RequestId, SubmitOutcome, TxStatus,
};
use crate::message::{
    CertifiedBlock, CertifiedTransaction, CompactProposal, MAX_RELAY_CERTIFIED,
    MAX_RELAY_TRANSACTIONS, MAX_SYNC_BLOCKS, MAX_SYNC_RESPONSE_BYTES, NodeMessage, PeerId,
    RELAY_TARGET_BYTES, RelayBundle,
};
use crate::store::NodeStore;
use crate::waiting::{Waiting, WhenFull};

/// Most transactions held while their inputs are not final yet.
pub const MAX_AWAITING_INPUTS: usize = 1_000;
/// Most certificates held while their transaction's inputs are unknown to us.
pub const MAX_AWAITING_CERTIFIED: usize = 1_000;
/// Most of our own block-consensus messages kept for re-sending at the current height.
pub const MAX_RESENT_BFT_MESSAGES: usize = 16;
/// Most received proposals remembered (compact) to answer requests for the whole one.
pub const MAX_SEEN_PROPOSALS: usize = 8;
/// Most transactions one proposed block takes from the certified pool.
pub const MAX_BLOCK_TRANSACTIONS_PROPOSED: usize = 10_000;
/// Most peers tracked.
pub const MAX_PEERS: usize = 1_024;
/// Most transactions whose first-seen time is kept (for the finality latency metric).
pub const MAX_FIRST_SEEN: usize = 20_000;
/// Most block-carrying answers (sync responses, whole proposals) served to one peer per
/// second: serving blocks is the most expensive thing a peer can ask of us.
pub const MAX_SYNC_RESPONSES_PER_SECOND: u32 = 20;
/// Most sync requests in flight at once, each to a different peer for the next range of
/// [`MAX_SYNC_BLOCKS`] heights.
pub const MAX_SYNC_IN_FLIGHT: usize = 4;
/// How far ahead of our clock a block's timestamp may be.
pub const MAX_FUTURE_BLOCK_MS: u64 = 30_000;
/// How many epochs of committees are kept (to verify late certificates and sync).
const KEPT_COMMITTEES: u64 = 4;
/// Most transactions whose votes one resend signs again (a few signatures' worth).
const MAX_RESENT_VOTES: usize = 4 * timecoin_consensus::signing::MAX_VOTE_TXIDS;

/// The node's settings.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// The chain's parameters (from the genesis spec).
    pub params: ChainParams,
    /// The masternode key, if this node is (or may become) a masternode.
    pub node_key: Option<SecretKey>,
    /// View timeout after progress.
    pub base_timeout_ms: u64,
    /// Cap on the view timeout.
    pub max_timeout_ms: u64,
    /// How often unfinished work (our votes, pending transactions, our latest block-consensus
    /// messages) is re-sent: the engines never retransmit, and the network may drop.
    pub resend_interval_ms: u64,
    /// How often we tell peers our tip.
    pub heartbeat_interval_ms: u64,
    /// The largest prepared block a gossiped view change carries; a larger one is left out
    /// (the claim and its certificate still go). libp2p's gossip receive buffers grow to the
    /// largest message a peer has sent and never shrink, so one view change carrying a
    /// multi-megabyte block bloated every peer's memory for good (ADR 0016). The next leader
    /// almost always holds the block already (it is prepared by a quorum); if it does not, its
    /// view times out and a later leader that holds it re-proposes it.
    pub gossip_block_limit_bytes: usize,
    /// How long a sync request may go unanswered before another peer is asked.
    pub sync_timeout_ms: u64,
    /// The pool's limits.
    pub mempool: MempoolConfig,
    /// When client transactions are refused as the node is busy (ADR 0026).
    pub admission: AdmissionConfig,
    /// TEST ONLY: forget this node's persisted input locks when it restarts. A deliberately
    /// broken node, so the simulator can show that its checkers catch a double vote.
    #[doc(hidden)]
    pub test_forget_locks_on_restart: bool,
    /// TEST ONLY: send block statements without persisting them first. Broken on purpose, so
    /// the simulator can show that its persistence-before-send check catches it.
    #[doc(hidden)]
    pub test_skip_statement_persistence: bool,
}

impl NodeConfig {
    /// Defaults for `params`: timeouts scaled to the block interval.
    pub fn new(params: ChainParams, node_key: Option<SecretKey>) -> NodeConfig {
        let interval = params.block_interval_ms;
        NodeConfig {
            node_key,
            base_timeout_ms: interval.max(500) * 2,
            max_timeout_ms: interval.max(500) * 60,
            resend_interval_ms: interval.max(200),
            heartbeat_interval_ms: interval.max(200) * 2,
            gossip_block_limit_bytes: RELAY_TARGET_BYTES,
            sync_timeout_ms: interval.max(500) * 3,
            mempool: MempoolConfig::default(),
            admission: AdmissionConfig::default(),
            test_forget_locks_on_restart: false,
            test_skip_statement_persistence: false,
            params,
        }
    }
}

#[derive(Clone, Debug, Default)]
struct SyncState {
    /// The peers and the tip height each last told us.
    peers: BTreeMap<PeerId, Height>,
    /// Requests in flight, by first height: the peer asked and when. Each covers
    /// [`MAX_SYNC_BLOCKS`] heights; different ranges go to different peers, in parallel.
    in_flight: BTreeMap<Height, (PeerId, u64)>,
    /// Blocks received ahead of the tip, waiting for the ones before them, with their sender.
    buffered: BTreeMap<Height, (PeerId, CertifiedBlock)>,
    /// Peers that served something invalid or timed out, until when they are skipped.
    shunned: BTreeMap<PeerId, u64>,
    /// Per peer: the start of its current one-second window and responses served in it.
    served: BTreeMap<PeerId, (u64, u32)>,
}

/// The deterministic node. See the crate documentation for the contract with the runtime.
pub struct Node<S: NodeStore> {
    config: NodeConfig,
    store: S,
    now_ms: u64,
    mempool: Mempool,
    certified: CertifiedPool,
    /// Verified transactions whose inputs are not final yet, in arrival order.
    awaiting_inputs: Waiting<Transaction>,
    /// Certificates whose transaction does not validate against our view yet.
    awaiting_certified: Waiting<(Transaction, FinalityCertificate)>,
    first_seen: FastMap<Txid, u64>,
    committees: BTreeMap<Epoch, Committee>,
    finality: FinalityEngine,
    bft: BftEngine,
    /// Transactions we voted for that are not yet certified, for re-sending our votes.
    own_votes: BTreeSet<Txid>,
    /// Our block-consensus messages at the current height, for re-sending.
    own_bft: VecDeque<BftMessage>,
    /// Other leaders' proposals lately received, in compact form, to answer
    /// [`NodeMessage::GetProposal`] (the block itself is the BFT engine's).
    seen_proposals: VecDeque<CompactProposal>,
    /// A decided height whose block we lack.
    missing_block: Option<CommitCertificate>,
    sync: SyncState,
    next_resend_ms: u64,
    next_heartbeat_ms: u64,
    bft_tick_ms: Option<u64>,
    /// The (height, view) last reported, to report view changes.
    last_view: (Height, u32),
    /// The last proposal judged valid, with the changes it makes, so that applying it once
    /// decided need not validate it again (nothing is applied in between: it extends our tip).
    validated: Option<ValidatedBlock>,
    /// Transactions of the current step whose signatures were verified together up front.
    preverified: FastSet<Txid>,
    /// What was waiting at the last resend; see [`Node::resend`].
    resend_memory: ResendMemory,
    /// Whether a client's transaction may enter now.
    admission: Admission,
}

/// The transactions whose votes, bodies and certificates were waiting at the last resend.
#[derive(Default)]
struct ResendMemory {
    votes: FastSet<Txid>,
    pending: FastSet<Txid>,
    certified: FastSet<Txid>,
}

/// The first `limit` items of `current` that were also there at the last resend (as
/// `previous` remembers), in order; `previous` becomes the txids of the first `limit` now.
fn still_waiting<T>(
    previous: &mut FastSet<Txid>,
    current: impl Iterator<Item = (Txid, T)>,
    limit: usize,
) -> Vec<T> {
    let mut now = FastSet::default();
    let mut again = Vec::new();
    for (txid, item) in current.take(limit) {
        if previous.contains(&txid) {
            again.push(item);
        }
        now.insert(txid);
    }
    *previous = now;
    again
}

/// One input of a step, with a peer's frame already decoded.
enum Step {
    Message(PeerId, NodeMessage),
    Input(Input),
}

/// How a block-consensus message goes on the wire: proposals in compact form.
fn wire_bft(message: &BftMessage, block_limit_bytes: usize) -> NodeMessage {
    match message {
        BftMessage::Proposal(proposal) => {
            NodeMessage::CompactProposal(Box::new(CompactProposal::new(proposal)))
        }
        BftMessage::ViewChange(change)
            if change
                .block
                .as_ref()
                .is_some_and(|block| encoded_len(block) > block_limit_bytes) =>
        {
            let mut change = change.clone();
            change.block = None;
            NodeMessage::Bft(BftMessage::ViewChange(change))
        }
        other => NodeMessage::Bft(other.clone()),
    }
}

/// Decodes a peer's frame; a frame that does not decode is the sender's fault.
fn decode_from(peer: PeerId, bytes: &[u8], actions: &mut Vec<Action>) -> Option<NodeMessage> {
    match NodeMessage::from_bytes(bytes) {
        Ok(message) => Some(message),
        Err(error) => {
            actions.push(Action::Penalize {
                peer,
                reason: error.to_string(),
            });
            None
        }
    }
}

fn tier_weights(params: &ChainParams) -> TierWeights {
    TierWeights {
        bronze: Weight(params.tiers[0].weight),
        silver: Weight(params.tiers[1].weight),
        gold: Weight(params.tiers[2].weight),
    }
}

fn corrupt(what: impl Into<String>) -> NodeError {
    NodeError::Corrupt(what.into())
}

impl<S: NodeStore> Node<S> {
    /// Opens a node on `store`, which must hold at least the genesis block, at time `now_ms`.
    /// Restores the persisted locks and block-consensus state and returns the actions of the
    /// restart (votes re-sent, timers). Use [`crate::init_store`] to write genesis first.
    pub fn open(
        store: S,
        config: NodeConfig,
        now_ms: u64,
    ) -> Result<(Node<S>, Vec<Action>), NodeError> {
        let tip = store.tip().ok_or(NodeError::NoGenesis)?;
        let params = config.params.clone();
        let next = Height(tip.height.get() + 1);
        let epoch = params.epoch_of(next);
        let bft_config = BftConfig {
            network: params.network,
            block_interval_ms: params.block_interval_ms,
            base_timeout_ms: config.base_timeout_ms,
            max_timeout_ms: config.max_timeout_ms,
        };
        let bft = BftEngine::new(bft_config, config.node_key.clone(), store.load_bft_state()?);
        let placeholder = Committee::new(
            params.network,
            Epoch(0),
            Default::default(),
            vec![timecoin_consensus::Member {
                node_key: Default::default(),
                weight: Weight(1),
                collateral: OutPoint {
                    txid: Txid(Default::default()),
                    index: 0,
                },
            }],
        )?;
        let mut node = Node {
            mempool: Mempool::new(config.mempool),
            certified: CertifiedPool::default(),
            awaiting_inputs: Waiting::new(MAX_AWAITING_INPUTS),
            awaiting_certified: Waiting::new(MAX_AWAITING_CERTIFIED),
            first_seen: FastMap::default(),
            committees: BTreeMap::new(),
            finality: FinalityEngine::new(placeholder, None),
            bft,
            own_votes: BTreeSet::new(),
            own_bft: VecDeque::new(),
            seen_proposals: VecDeque::new(),
            missing_block: None,
            sync: SyncState::default(),
            next_resend_ms: now_ms,
            next_heartbeat_ms: now_ms,
            bft_tick_ms: None,
            last_view: (Height(0), 0),
            validated: None,
            preverified: FastSet::default(),
            resend_memory: ResendMemory::default(),
            admission: Admission::new(config.admission, now_ms),
            now_ms,
            store,
            config,
        };
        let committee = node.committee(epoch)?;
        if node.config.test_forget_locks_on_restart {
            // The deliberately broken node loses its whole lock table.
            node.store.prune_log(Height(0), Epoch(u64::MAX))?;
        }
        // Locks of earlier epochs (the node was down across a boundary) carry over first.
        let carried = node.locks_to_carry(epoch)?;
        node.persist_carried(carried)?;
        let locks = node.persisted_locks(epoch)?;
        let (finality, effects) =
            FinalityEngine::restore(committee.clone(), node.config.node_key.clone(), locks)?;
        node.finality = finality;
        let mut actions = Vec::new();
        node.run_finality(effects, &mut actions)?;
        let effects = node.bft.handle(BftInput::StartHeight {
            height: next,
            parent: tip.hash,
            committee,
            now_ms,
        })?;
        node.run_bft(effects, &mut actions)?;
        // Certified transactions not yet in a block were final before the restart and stay
        // final; those a block settled meanwhile are dropped.
        let mut included = Vec::new();
        node.store.set_group_commit(true);
        for stored in node.store.load_finals()? {
            let txid = stored.transaction.txid();
            if node.store.transaction_location(&txid)?.is_some() {
                included.push(txid);
                continue;
            }
            node.on_certificate(stored.transaction, stored.certificate, None, &mut actions)?;
        }
        node.store.forget_finals(&included)?;
        node.store.set_group_commit(false);
        node.store.sync()?;
        node.schedule(&mut actions);
        Ok((node, actions))
    }

    /// The store (read-only), for queries and the simulator's checks.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Gives the store back (a clean shutdown: flush it first).
    pub fn into_store(self) -> S {
        self.store
    }

    /// The chain parameters.
    pub fn params(&self) -> &ChainParams {
        &self.config.params
    }

    /// The certified transactions not yet in a block.
    pub fn certified(&self) -> &CertifiedPool {
        &self.certified
    }

    /// The block-consensus engine (read-only).
    pub fn bft(&self) -> &BftEngine {
        &self.bft
    }

    /// The finality engine (read-only).
    pub fn finality(&self) -> &FinalityEngine {
        &self.finality
    }

    /// The committed tip height.
    pub fn tip_height(&self) -> Height {
        self.store.tip().map_or(Height(0), |tip| tip.height)
    }

    /// The time of the last tick.
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// The committee of `epoch`, computed from the registry as it stood at the end of the
    /// previous epoch, with the hash of that epoch's last block as the leader seed.
    pub fn committee(&mut self, epoch: Epoch) -> Result<Committee, NodeError> {
        if let Some(committee) = self.committees.get(&epoch) {
            return Ok(committee.clone());
        }
        let params = &self.config.params;
        let boundary = if epoch.get() == 0 {
            Height(0)
        } else {
            Height(epoch.get() * params.epoch_length_blocks.max(1) - 1)
        };
        let tip = self.tip_height();
        if boundary > tip {
            return Err(corrupt(format!(
                "the committee of epoch {} needs height {} but the tip is {}",
                epoch.get(),
                boundary.get(),
                tip.get()
            )));
        }
        let seed = self
            .store
            .block_hash(boundary)?
            .ok_or_else(|| corrupt(format!("no block at height {}", boundary.get())))?;
        let registry = self.registry_at(boundary)?;
        let mut consensus_registry = timecoin_consensus::MasternodeRegistry::new();
        for registration in registry.iter() {
            consensus_registry.register(timecoin_consensus::Registration {
                node_key: registration.node_key,
                tier: registration.tier,
                collateral: registration.collateral,
            })?;
        }
        let committee = consensus_registry.committee_for(
            params.network,
            epoch,
            seed.0,
            &tier_weights(params),
        )?;
        self.committees.insert(epoch, committee.clone());
        while self.committees.len() as u64 > KEPT_COMMITTEES {
            self.committees.pop_first();
        }
        Ok(committee)
    }

    /// The ledger's registry as of `height`: the stored one (as of the tip) with the blocks
    /// above `height` undone. Registrations are read back from the blocks that made them.
    fn registry_at(&self, height: Height) -> Result<MasternodeRegistry, NodeError> {
        let mut registry = self.store.masternodes().clone();
        let tip = self.tip_height();
        let mut at = tip;
        while at > height {
            let block = self.block_at(at)?;
            let mut events = Vec::new();
            for transaction in block.transactions.iter() {
                match &transaction.body.kind {
                    TxKind::RegisterMasternode { .. } => {
                        events.push(MasternodeEvent::Registered(registration_made_by(
                            transaction,
                            at,
                        )?));
                    }
                    TxKind::DeregisterMasternode { collateral } => {
                        let location = self
                            .store
                            .transaction_location(&collateral.txid)?
                            .ok_or_else(|| {
                                corrupt("a deregistered collateral's transaction is not indexed")
                            })?;
                        let origin = self.block_at(location.height)?;
                        let registering = origin
                            .transactions
                            .get(location.position as usize)
                            .ok_or_else(|| corrupt("a transaction index points past its block"))?;
                        events.push(MasternodeEvent::Deregistered {
                            registration: registration_made_by(registering, location.height)?,
                            height: at,
                        });
                    }
                    _ => {}
                }
            }
            registry.undo(&events);
            at = Height(at.get() - 1);
        }
        Ok(registry)
    }

    fn block_at(&self, height: Height) -> Result<Block, NodeError> {
        let hash = self
            .store
            .block_hash(height)?
            .ok_or_else(|| corrupt(format!("no block at height {}", height.get())))?;
        self.store
            .block(&hash)?
            .ok_or_else(|| corrupt(format!("the body of block {} is missing", height.get())))
    }

    /// The locks of epochs before `epoch` that must carry over into it: those of transactions
    /// not in a committed block whose inputs are not spent by one.
    ///
    /// Locks do **not** simply lapse at the epoch's end (ADR 0008, a deviation from the
    /// architecture): a transaction certified late in an epoch may be known to too few nodes
    /// for the next leader to include it, and if its voters' locks lapsed, a conflicting
    /// transaction could gather a quorum in the next epoch. The simulator found exactly that.
    /// So an honest node keeps voting only for the transaction it first voted for, on each
    /// input, until a block settles the input.
    fn locks_to_carry(&self, epoch: Epoch) -> Result<Vec<PersistedLock>, NodeError> {
        let from = LogKey::InputLock {
            epoch: Epoch(0),
            outpoint: OutPoint {
                txid: Txid(Default::default()),
                index: 0,
            },
        };
        let mut by_txid: BTreeMap<Txid, Vec<OutPoint>> = BTreeMap::new();
        for record in self.store.records(Some(from), MAX_CONSENSUS_BATCH)? {
            if let LogKey::InputLock {
                epoch: record_epoch,
                outpoint,
            } = record.key
                && record_epoch < epoch
            {
                let txid: Txid = decode(&record.value)
                    .map_err(|error| corrupt(format!("an input lock: {error}")))?;
                by_txid.entry(txid).or_default().push(outpoint);
            }
        }
        let mut carried = Vec::new();
        for (txid, mut inputs) in by_txid {
            inputs.sort();
            inputs.dedup();
            if self.store.transaction_location(&txid)?.is_some() {
                continue;
            }
            let mut settled = false;
            for input in &inputs {
                if self.store.utxo(input)?.is_none()
                    && self.store.transaction_location(&input.txid)?.is_some()
                {
                    settled = true;
                    break;
                }
            }
            if !settled {
                carried.push(PersistedLock {
                    epoch,
                    txid,
                    inputs,
                });
            }
        }
        Ok(carried)
    }

    /// Writes carried locks under their (new) epoch, dropping any that would contradict a lock
    /// already taken in it.
    fn persist_carried(&mut self, locks: Vec<PersistedLock>) -> Result<(), NodeError> {
        for lock in locks {
            let records: Vec<ConsensusRecord> = lock
                .inputs
                .iter()
                .map(|outpoint| ConsensusRecord {
                    key: LogKey::InputLock {
                        epoch: lock.epoch,
                        outpoint: *outpoint,
                    },
                    value: timecoin_primitives::BoundedBytes::new(encode(&lock.txid))
                        .expect("a txid fits a record"),
                })
                .collect();
            self.store.persist(&records)?;
        }
        Ok(())
    }

    fn persisted_locks(&self, epoch: Epoch) -> Result<Vec<PersistedLock>, NodeError> {
        let from = LogKey::InputLock {
            epoch,
            outpoint: OutPoint {
                txid: Txid(Default::default()),
                index: 0,
            },
        };
        let mut by_txid: BTreeMap<Txid, Vec<OutPoint>> = BTreeMap::new();
        for record in self.store.records(Some(from), MAX_CONSENSUS_BATCH)? {
            if let LogKey::InputLock {
                epoch: record_epoch,
                outpoint,
            } = record.key
                && record_epoch == epoch
            {
                let txid: Txid = decode(&record.value)
                    .map_err(|error| corrupt(format!("an input lock: {error}")))?;
                by_txid.entry(txid).or_default().push(outpoint);
            }
        }
        Ok(by_txid
            .into_iter()
            .map(|(txid, mut inputs)| {
                inputs.sort();
                PersistedLock {
                    epoch,
                    txid,
                    inputs,
                }
            })
            .collect())
    }

    /// Handles one input and returns what the runtime must do, in order. `Err` means the node
    /// must stop (its storage failed); nothing in the failed step was sent.
    pub fn handle(&mut self, input: Input) -> Result<Vec<Action>, NodeError> {
        self.handle_batch(vec![input])
    }

    /// Handles `inputs` as one step, in order, and returns what the runtime must do, in order.
    ///
    /// One step costs one fsync however many votes and locks it writes: the node's records are
    /// written in group-commit mode and made durable together before this returns, so the
    /// returned actions are safe to perform (nothing they enable can be forgotten by a crash).
    /// The step's relays are merged into few messages, and the signatures of all new
    /// transactions in it are verified as one batch. A runtime under load should pass whatever
    /// inputs are queued; the result is the same as handling them one by one, apart from the
    /// grouping of relays. `Err` means the node must stop (its storage failed); nothing of the
    /// failed step may be sent.
    pub fn handle_batch(&mut self, inputs: Vec<Input>) -> Result<Vec<Action>, NodeError> {
        let actions = self.handle_batch_unsynced(inputs)?;
        self.sync_steps()?;
        Ok(actions)
    }

    /// [`Node::handle_batch`] without its closing sync: the step's records stay deferred, and
    /// **none of the returned actions may be performed before [`Node::sync_steps`] returns
    /// `Ok`**. A busy runtime can so run several steps per fsync (a redb commit per step was a
    /// fifth of a node's CPU at 900 payments/s); a crash loses the unsynced steps whole, which
    /// is the same as crashing before them, since nothing they produced has left.
    pub fn handle_batch_unsynced(&mut self, inputs: Vec<Input>) -> Result<Vec<Action>, NodeError> {
        self.store.set_group_commit(true);
        let result = self.handle_inputs(inputs);
        self.store.set_group_commit(false);
        self.preverified.clear();
        Ok(coalesce(result?))
    }

    /// Makes the records of every step handled since the last sync durable, with one fsync.
    /// `Err` means the node must stop, and the actions of those steps must not be performed.
    pub fn sync_steps(&mut self) -> Result<(), NodeError> {
        self.store.sync()
    }

    fn handle_inputs(&mut self, inputs: Vec<Input>) -> Result<Vec<Action>, NodeError> {
        let mut actions = Vec::new();
        let mut decoded = Vec::with_capacity(inputs.len());
        for input in inputs {
            decoded.push(match input {
                Input::PeerMessage { peer, bytes } => match decode_from(peer, &bytes, &mut actions)
                {
                    Some(message) => Step::Message(peer, message),
                    None => continue,
                },
                other => Step::Input(other),
            });
        }
        self.preverify(&decoded)?;
        for step in decoded {
            match step {
                Step::Message(peer, message) => self.on_message(peer, message, &mut actions)?,
                Step::Input(input) => self.handle_one(input, &mut actions)?,
            }
        }
        // One signature for every vote the step's locks allow: they are all durable at the
        // step's sync, before any action leaves.
        let effects = self.finality.sign_votes();
        self.run_finality(effects, &mut actions)?;
        self.admission.observe(self.mempool.len(), self.now_ms);
        self.schedule(&mut actions);
        if cfg!(debug_assertions) {
            self.check_invariants();
        }
        Ok(actions)
    }

    /// Verifies the signatures of the step's new transactions as one batch, on every core.
    /// Those it clears skip single verification on admission; if the batch fails, each is
    /// verified alone as before, so the bad one is still found and its sender blamed.
    fn preverify(&mut self, steps: &[Step]) -> Result<(), NodeError> {
        let mut batch: Vec<&Transaction> = Vec::new();
        let mut txids: Vec<Txid> = Vec::new();
        let mut seen = BTreeSet::new();
        // Clients' transactions are left out while they would be refused as the node is busy:
        // should the backlog fall within the step, the few then admitted are checked alone.
        let refusing = self.admission.refusing();
        for step in steps {
            let transactions: &[Transaction] = match step {
                Step::Message(_, NodeMessage::Transactions(transactions)) => transactions,
                Step::Message(_, NodeMessage::Relay(bundle)) => &bundle.transactions,
                Step::Input(Input::Command {
                    command: Command::SubmitTransaction(transaction),
                    ..
                }) if !refusing => std::slice::from_ref(transaction),
                _ => continue,
            };
            for transaction in transactions {
                let txid = transaction.txid();
                if transaction.is_reward()
                    || !seen.insert(txid)
                    || self.is_known(transaction, &txid)?
                    || check_transaction(transaction, &self.config.params).is_err()
                {
                    continue;
                }
                batch.push(transaction);
                txids.push(txid);
            }
        }
        // One signature gains nothing from a batch, but two already do: a payment's two
        // signatures verified as a batch of two take about 18% less time than one by one
        // (72.5 against 88.4 µs in the ledger's `verify` bench).
        let signatures: usize = batch.iter().map(|tx| tx.signatures.len()).sum();
        if signatures >= 2 && verify_transactions(&batch, self.config.params.network).is_ok() {
            self.preverified.extend(txids);
        }
        Ok(())
    }

    fn handle_one(&mut self, input: Input, actions: &mut Vec<Action>) -> Result<(), NodeError> {
        match input {
            Input::Tick { now_ms } => self.on_tick(now_ms, actions)?,
            Input::PeerMessage { peer, bytes } => self.on_peer_bytes(peer, &bytes, actions)?,
            Input::PeerConnected { peer } => {
                if self.sync.peers.len() < MAX_PEERS {
                    self.sync.peers.entry(peer).or_insert(Height(0));
                }
                if let Some(tip) = self.store.tip() {
                    actions.push(Action::Send {
                        peer,
                        message: NodeMessage::Heartbeat {
                            height: tip.height,
                            hash: tip.hash,
                        },
                    });
                }
                // A direct message is read into a buffer of its own, so a view change keeps its
                // block here whatever its size.
                for message in &self.own_bft {
                    actions.push(Action::Send {
                        peer,
                        message: wire_bft(message, usize::MAX),
                    });
                }
            }
            Input::PeerDisconnected { peer } => {
                self.sync.peers.remove(&peer);
                self.sync.in_flight.retain(|_, (asked, _)| *asked != peer);
                self.request_sync(actions);
            }
            Input::Command { id, command } => self.on_command(id, command, actions)?,
        }
        Ok(())
    }

    fn schedule(&mut self, actions: &mut Vec<Action>) {
        let mut next = self.next_resend_ms.min(self.next_heartbeat_ms);
        if let Some(at) = self.bft_tick_ms {
            next = next.min(at);
        }
        for (_, sent) in self.sync.in_flight.values() {
            next = next.min(sent + self.config.sync_timeout_ms);
        }
        actions.push(Action::ScheduleTick {
            at_ms: next.max(self.now_ms),
        });
    }

    /// Asserts the node's own consistency (debug and simulation builds).
    pub fn check_invariants(&self) {
        for entry in self.certified.iter() {
            let txid = entry.transaction.txid();
            assert!(
                !self.mempool.contains(&txid),
                "a certified transaction is still pending"
            );
        }
        assert!(self.awaiting_inputs.len() <= MAX_AWAITING_INPUTS);
        assert!(self.awaiting_certified.len() <= MAX_AWAITING_CERTIFIED);
        assert!(self.own_bft.len() <= MAX_RESENT_BFT_MESSAGES);
        assert!(self.sync.in_flight.len() <= MAX_SYNC_IN_FLIGHT);
        assert!(self.sync.buffered.len() <= (MAX_SYNC_IN_FLIGHT + 1) * MAX_SYNC_BLOCKS);
        self.awaiting_inputs.check_invariants();
        self.awaiting_certified.check_invariants();
    }

    // ----- time -----

    fn on_tick(&mut self, now_ms: u64, actions: &mut Vec<Action>) -> Result<(), NodeError> {
        self.now_ms = self.now_ms.max(now_ms);
        let now = self.now_ms;
        if self.bft_tick_ms.is_some_and(|at| at <= now) {
            self.bft_tick_ms = None;
        }
        let effects = self.bft.handle(BftInput::Tick { now_ms: now })?;
        self.run_bft(effects, actions)?;
        if now >= self.next_resend_ms {
            self.next_resend_ms = now + self.config.resend_interval_ms;
            self.resend(actions);
        }
        if now >= self.next_heartbeat_ms {
            self.next_heartbeat_ms = now + self.config.heartbeat_interval_ms;
            if let Some(tip) = self.store.tip() {
                actions.push(Action::Broadcast(NodeMessage::Heartbeat {
                    height: tip.height,
                    hash: tip.hash,
                }));
            }
        }
        let timeout = self.config.sync_timeout_ms;
        let late: Vec<(Height, PeerId)> = self
            .sync
            .in_flight
            .iter()
            .filter(|(_, (_, sent))| now >= sent + timeout)
            .map(|(from, (peer, _))| (*from, *peer))
            .collect();
        for (from, peer) in &late {
            self.sync.in_flight.remove(from);
            self.sync.shunned.insert(*peer, now + timeout * 4);
        }
        if !late.is_empty() {
            self.request_sync(actions);
        }
        Ok(())
    }

    /// Re-sends what the engines never retransmit: our latest block-consensus statements, and
    /// the votes, pending transactions and certificates that were already waiting at the last
    /// resend. Fresh ones are still on their way; re-sending them as well multiplied the gossip
    /// under load, when every pending transaction is fresh.
    fn resend(&mut self, actions: &mut Vec<Action>) {
        for message in &self.own_bft {
            actions.push(Action::Broadcast(wire_bft(
                message,
                self.config.gossip_block_limit_bytes,
            )));
        }
        let voted = still_waiting(
            &mut self.resend_memory.votes,
            self.own_votes.iter().map(|txid| (*txid, *txid)),
            MAX_RESENT_VOTES,
        );
        let votes = self.finality.votes_again(&voted);
        if !votes.is_empty() {
            actions.push(Action::Broadcast(NodeMessage::TxVotes(
                BoundedVec::new(votes).expect("bounded by the limit"),
            )));
        }
        let pending = still_waiting(
            &mut self.resend_memory.pending,
            self.mempool
                .iter()
                .map(|entry| (entry.transaction().txid(), entry.transaction())),
            MAX_RELAY_TRANSACTIONS,
        );
        if !pending.is_empty() {
            let pending = pending.into_iter().cloned().collect();
            actions.push(Action::Broadcast(NodeMessage::Transactions(
                BoundedVec::new(pending).expect("bounded by the limit"),
            )));
        }
        let certified = still_waiting(
            &mut self.resend_memory.certified,
            self.certified
                .iter()
                .map(|entry| (entry.transaction.txid(), entry)),
            MAX_RELAY_CERTIFIED,
        );
        if !certified.is_empty() {
            let certified = certified
                .into_iter()
                .map(|entry| CertifiedTransaction {
                    transaction: entry.transaction.clone(),
                    certificate: entry.certificate.clone(),
                })
                .collect();
            actions.push(Action::Broadcast(NodeMessage::CertifiedMany(
                BoundedVec::new(certified).expect("bounded by the limit"),
            )));
        }
        if let Some(certificate) = &self.missing_block {
            let from = certificate.height;
            if from > self.tip_height() {
                self.request_sync(actions);
            }
        }
    }

    // ----- peers -----

    fn penalize(&self, peer: Option<PeerId>, reason: String, actions: &mut Vec<Action>) {
        if let Some(peer) = peer {
            actions.push(Action::Penalize { peer, reason });
        }
    }

    fn on_peer_bytes(
        &mut self,
        peer: PeerId,
        bytes: &[u8],
        actions: &mut Vec<Action>,
    ) -> Result<(), NodeError> {
        match decode_from(peer, bytes, actions) {
            Some(message) => self.on_message(peer, message, actions),
            None => Ok(()),
        }
    }

    fn on_message(
        &mut self,
        peer: PeerId,
        message: NodeMessage,
        actions: &mut Vec<Action>,
    ) -> Result<(), NodeError> {
        match message {
            NodeMessage::Transactions(transactions) => {
                for transaction in transactions.into_inner() {
                    self.accept_transaction(transaction, Some(peer), actions)?;
                }
            }
            NodeMessage::TxVotes(votes) => {
                let outcome = self.finality.handle_votes(votes.into_inner());
                for (voter, error) in &outcome.rejected {
                    if error.is_peer_fault() {
                        self.penalize(
                            Some(peer),
                            format!("finality vote by {voter:?}: {error}"),
                            actions,
                        );
                        break;
                    }
                }
                self.run_finality(outcome.effects, actions)?;
            }
            NodeMessage::Certified {
                transaction,
                certificate,
            } => self.on_certificate(transaction, certificate, Some(peer), actions)?,
            NodeMessage::CertifiedMany(batch) => {
                for item in batch.into_inner() {
                    self.on_certificate(item.transaction, item.certificate, Some(peer), actions)?;
                }
            }
            NodeMessage::Bft(message) => {
                let height = message.height();
                if height.get() > self.tip_height().get() + 2 {
                    self.note_peer_height(peer, Height(height.get() - 1), actions);
                }
                match self.bft.handle(BftInput::Message {
                    message,
                    now_ms: self.now_ms,
                }) {
                    Ok(effects) => self.run_bft(effects, actions)?,
                    Err(error) if error.is_peer_fault() => {
                        self.penalize(Some(peer), format!("block consensus: {error}"), actions)
                    }
                    Err(_) => {}
                }
            }
            NodeMessage::Relay(bundle) => {
                let RelayBundle {
                    transactions,
                    votes,
                    certified,
                } = *bundle;
                if !transactions.is_empty() {
                    self.on_message(peer, NodeMessage::Transactions(transactions), actions)?;
                }
                if !votes.is_empty() {
                    self.on_message(peer, NodeMessage::TxVotes(votes), actions)?;
                }
                if !certified.is_empty() {
                    self.on_message(peer, NodeMessage::CertifiedMany(certified), actions)?;
                }
            }
            NodeMessage::CompactProposal(compact) => {
                self.on_compact_proposal(peer, *compact, actions)?
            }
            NodeMessage::GetProposal {
                height,
                view,
                block,
            } => {
                // Each answer carries a whole block: limited like sync responses.
                if !self.may_serve(peer) {
                    return Ok(());
                }
                if let Some(proposal) = self.full_proposal(height, view, &block) {
                    actions.push(Action::Send {
                        peer,
                        message: NodeMessage::Bft(BftMessage::Proposal(Box::new(proposal))),
                    });
                } else if height <= self.tip_height()
                    && let Some(certified) = self.certified_block(height)?
                    && certified.block.hash() == block
                {
                    // Decided since: the block with its certificate serves the asker better.
                    actions.push(Action::Send {
                        peer,
                        message: NodeMessage::Committed(Box::new(certified)),
                    });
                }
            }
            NodeMessage::Committed(certified) => {
                let height = certified.block.header.height;
                let tip = self.tip_height();
                if height.get() == tip.get() + 1 {
                    if let Err(reason) = self.apply_certified(*certified, true, actions)? {
                        self.penalize(Some(peer), reason, actions);
                    }
                } else if height > tip {
                    self.note_peer_height(peer, height, actions);
                }
            }
            NodeMessage::SyncRequest { from, count } => {
                self.serve_sync(peer, from, count, actions)?
            }
            NodeMessage::SyncResponse(blocks) => {
                self.on_sync_response(peer, blocks.into_inner(), actions)?
            }
            NodeMessage::Heartbeat { height, hash: _ } => {
                self.note_peer_height(peer, height, actions);
                let tip = self.tip_height();
                if height.get() + 1 == tip.get() {
                    // The peer probably missed the last commit votes: push the block.
                    if let Some(certified) = self.certified_block(tip)? {
                        actions.push(Action::Send {
                            peer,
                            message: NodeMessage::Committed(Box::new(certified)),
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// Rebuilds a compact proposal's block from the transactions we hold and handles it as the
    /// whole proposal; if some are missing, asks the peer that sent it for the whole proposal.
    fn on_compact_proposal(
        &mut self,
        peer: PeerId,
        compact: CompactProposal,
        actions: &mut Vec<Action>,
    ) -> Result<(), NodeError> {
        let tip = self.tip_height();
        if compact.height.get() > tip.get() + 2 {
            self.note_peer_height(peer, Height(compact.height.get() - 1), actions);
            return Ok(());
        }
        if compact.height <= tip {
            return Ok(());
        }
        let rebuilt = compact.reconstruct(|txid| self.verified_copy(txid).cloned());
        match rebuilt {
            Ok(proposal) => {
                let hash = compact.block_hash();
                if !self
                    .seen_proposals
                    .iter()
                    .any(|seen| seen.view == compact.view && seen.block_hash() == hash)
                {
                    if self.seen_proposals.len() >= MAX_SEEN_PROPOSALS {
                        self.seen_proposals.pop_front();
                    }
                    self.seen_proposals.push_back(compact);
                }
                self.on_message(
                    peer,
                    NodeMessage::Bft(BftMessage::Proposal(Box::new(proposal))),
                    actions,
                )
            }
            Err(_missing) => {
                actions.push(Action::Send {
                    peer,
                    message: NodeMessage::GetProposal {
                        height: compact.height,
                        view: compact.view,
                        block: compact.block_hash(),
                    },
                });
                Ok(())
            }
        }
    }

    /// The whole proposal of `block` at (`height`, `view`), ours or one we received, if we
    /// still hold it.
    fn full_proposal(&self, height: Height, view: u32, block: &BlockHash) -> Option<Proposal> {
        let own = self.own_bft.iter().find_map(|message| match message {
            BftMessage::Proposal(proposal)
                if proposal.height == height
                    && proposal.view == view
                    && proposal.block.hash() == *block =>
            {
                Some((**proposal).clone())
            }
            _ => None,
        });
        own.or_else(|| {
            let compact = self.seen_proposals.iter().find(|seen| {
                seen.height == height && seen.view == view && seen.block_hash() == *block
            })?;
            let held = self.bft.block(block)?;
            Some(Proposal {
                height,
                view,
                block: held.clone(),
                justification: compact.justification.clone(),
                certificate: compact.certificate.clone(),
                signature: compact.signature,
            })
        })
    }

    /// Our copy of a transaction whose signatures we have verified: every pool admits a
    /// transaction only after verifying it.
    fn verified_copy(&self, txid: &Txid) -> Option<&Transaction> {
        self.certified
            .get(txid)
            .map(|entry| &entry.transaction)
            .or_else(|| self.mempool.get(txid))
            .or_else(|| self.awaiting_inputs.get(txid))
            .or_else(|| self.awaiting_certified.get(txid).map(|(tx, _)| tx))
    }

    fn note_peer_height(&mut self, peer: PeerId, height: Height, actions: &mut Vec<Action>) {
        if self.sync.peers.len() < MAX_PEERS || self.sync.peers.contains_key(&peer) {
            let known = self.sync.peers.entry(peer).or_insert(Height(0));
            *known = (*known).max(height);
        }
        if height > self.tip_height() {
            self.request_sync(actions);
        }
    }

    /// Keeps up to [`MAX_SYNC_IN_FLIGHT`] requests for the heights after our tip in flight,
    /// each for the next range nobody has been asked for yet and each to another peer that
    /// announced those heights, so a node far behind downloads from several peers at once.
    fn request_sync(&mut self, actions: &mut Vec<Action>) {
        let tip = self.tip_height();
        let now = self.now_ms;
        self.sync.shunned.retain(|_, until| *until > now);
        self.sync.buffered.retain(|height, _| *height > tip);
        let mut start = Height(tip.get() + 1);
        while self.sync.in_flight.len() < MAX_SYNC_IN_FLIGHT {
            // Skip what is buffered or already asked for.
            loop {
                if self.sync.buffered.contains_key(&start) {
                    start = Height(start.get() + 1);
                } else if let Some((from, _)) = self
                    .sync
                    .in_flight
                    .range(..=start)
                    .next_back()
                    .filter(|(from, _)| start.get() < from.get() + MAX_SYNC_BLOCKS as u64)
                {
                    start = Height(from.get() + MAX_SYNC_BLOCKS as u64);
                } else {
                    break;
                }
            }
            if start.get() > tip.get() + (MAX_SYNC_IN_FLIGHT * MAX_SYNC_BLOCKS) as u64 {
                break;
            }
            let busy: BTreeSet<PeerId> = self.sync.in_flight.values().map(|(p, _)| *p).collect();
            let best = self
                .sync
                .peers
                .iter()
                .filter(|(peer, height)| {
                    **height >= start
                        && !self.sync.shunned.contains_key(peer)
                        && !busy.contains(peer)
                })
                .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
                .map(|(peer, _)| *peer);
            let Some(peer) = best else { break };
            self.sync.in_flight.insert(start, (peer, now));
            actions.push(Action::Send {
                peer,
                message: NodeMessage::SyncRequest {
                    from: start,
                    count: MAX_SYNC_BLOCKS as u32,
                },
            });
            start = Height(start.get() + MAX_SYNC_BLOCKS as u64);
        }
    }

    fn certified_block(&self, height: Height) -> Result<Option<CertifiedBlock>, NodeError> {
        let Some(hash) = self.store.block_hash(height)? else {
            return Ok(None);
        };
        let (Some(block), Some(certificate)) =
            (self.store.block(&hash)?, self.store.certificate(height)?)
        else {
            return Ok(None);
        };
        Ok(Some(CertifiedBlock { block, certificate }))
    }

    /// Whether `peer` may have one more block-carrying answer (a sync response or a whole
    /// proposal) now, counting it: at most [`MAX_SYNC_RESPONSES_PER_SECOND`] per peer, plenty
    /// for an honest node that asks again only after each answer, cheap to refuse for one that
    /// floods.
    fn may_serve(&mut self, peer: PeerId) -> bool {
        let now = self.now_ms;
        let window = self.sync.served.get(&peer).copied();
        let (start, served) = match window {
            Some((start, served)) if now < start + 1_000 => (start, served),
            _ => (now, 0),
        };
        if served >= MAX_SYNC_RESPONSES_PER_SECOND {
            return false;
        }
        if self.sync.served.len() >= MAX_PEERS && !self.sync.served.contains_key(&peer) {
            self.sync
                .served
                .retain(|_, (start, _)| *start + 1_000 > now);
        }
        if self.sync.served.len() < MAX_PEERS || self.sync.served.contains_key(&peer) {
            self.sync.served.insert(peer, (start, served + 1));
        }
        true
    }

    fn serve_sync(
        &mut self,
        peer: PeerId,
        from: Height,
        count: u32,
        actions: &mut Vec<Action>,
    ) -> Result<(), NodeError> {
        if !self.may_serve(peer) {
            return Ok(());
        }
        let count = (count as usize).min(MAX_SYNC_BLOCKS);
        let mut blocks = Vec::new();
        let mut bytes = 0usize;
        let tip = self.tip_height();
        let mut height = from;
        while blocks.len() < count && height <= tip && height.get() > 0 {
            let Some(certified) = self.certified_block(height)? else {
                break;
            };
            bytes += encoded_len(&certified.block);
            if !blocks.is_empty() && bytes > MAX_SYNC_RESPONSE_BYTES {
                break;
            }
            blocks.push(certified);
            height = Height(height.get() + 1);
        }
        if !blocks.is_empty() {
            actions.push(Action::Send {
                peer,
                message: NodeMessage::SyncResponse(
                    BoundedVec::new(blocks).expect("bounded by MAX_SYNC_BLOCKS"),
                ),
            });
        }
        Ok(())
    }

    fn on_sync_response(
        &mut self,
        peer: PeerId,
        blocks: Vec<CertifiedBlock>,
        actions: &mut Vec<Action>,
    ) -> Result<(), NodeError> {
        // Only the range we asked this peer for is kept (ranges may arrive in any order), so
        // the buffer stays bounded by the requests in flight; an unasked response may still
        // carry the blocks right after our tip, as a pushed block can.
        let tip = self.tip_height();
        let asked = self
            .sync
            .in_flight
            .iter()
            .find(|(_, (asked, _))| *asked == peer)
            .map(|(from, _)| *from);
        self.sync.in_flight.retain(|_, (asked, _)| *asked != peer);
        let first = asked.unwrap_or(Height(tip.get() + 1));
        let range = first.get()..first.get() + MAX_SYNC_BLOCKS as u64;
        for certified in blocks {
            let height = certified.block.header.height;
            if height > tip && range.contains(&height.get()) {
                self.sync
                    .buffered
                    .entry(height)
                    .or_insert((peer, certified));
            }
        }
        while let Some((sender, certified)) = self
            .sync
            .buffered
            .remove(&Height(self.tip_height().get() + 1))
        {
            if let Err(reason) = self.apply_certified(certified, true, actions)? {
                self.penalize(Some(sender), format!("sync: {reason}"), actions);
                self.sync
                    .shunned
                    .insert(sender, self.now_ms + self.config.sync_timeout_ms * 10);
                // Nothing else it sent is trusted; those heights are asked of another peer.
                self.sync.buffered.retain(|_, (from, _)| *from != sender);
                break;
            }
        }
        self.request_sync(actions);
        Ok(())
    }

    /// Verifies a block received with its certificate and applies it if it is the next one.
    /// `Ok(Err(reason))` blames whoever sent it.
    fn apply_certified(
        &mut self,
        certified: CertifiedBlock,
        synced: bool,
        actions: &mut Vec<Action>,
    ) -> Result<Result<(), String>, NodeError> {
        let CertifiedBlock { block, certificate } = certified;
        let height = block.header.height;
        if certificate.height != height || certificate.block_hash != block.hash() {
            return Ok(Err("the certificate is for another block".into()));
        }
        if block.header.epoch != self.config.params.epoch_of(height) {
            return Ok(Err("the block names the wrong epoch".into()));
        }
        let committee = self.committee(block.header.epoch)?;
        if let Err(error) = verify_commit_certificate(&committee, &certificate) {
            return Ok(Err(format!("invalid commit certificate: {error}")));
        }
        match self.apply_block(&block, &certificate, synced, actions)? {
            Ok(()) => Ok(Ok(())),
            Err(error) => Ok(Err(format!("invalid block: {error}"))),
        }
    }

    // ----- transactions -----

    fn is_known(&self, transaction: &Transaction, txid: &Txid) -> Result<bool, NodeError> {
        Ok(self.mempool.contains(txid)
            || self.certified.contains(txid)
            || self.awaiting_inputs.contains(txid)
            || self.in_chain(transaction, txid)?)
    }

    /// Whether `transaction` is in a committed block. One with an unspent input cannot be: a
    /// block spends the inputs of all its transactions. A new transaction's first input is found
    /// (it is looked up for validation next, and kept), where the transaction index would be
    /// searched for a txid it does not hold, on every check.
    fn in_chain(&self, transaction: &Transaction, txid: &Txid) -> Result<bool, NodeError> {
        if let Some(input) = transaction.body.inputs.first()
            && self.store.utxo(&input.prevout)?.is_some()
        {
            return Ok(false);
        }
        Ok(self.store.transaction_location(txid)?.is_some())
    }

    /// Checks, pools, relays and votes on a transaction from a peer or a client.
    fn accept_transaction(
        &mut self,
        transaction: Transaction,
        from: Option<PeerId>,
        actions: &mut Vec<Action>,
    ) -> Result<SubmitOutcome, NodeError> {
        let txid = transaction.txid();
        if self.is_known(&transaction, &txid)? {
            return Ok(SubmitOutcome::AlreadyKnown(txid));
        }
        if transaction.is_reward() {
            self.penalize(from, "relayed a reward transaction".into(), actions);
            return Ok(SubmitOutcome::Rejected(
                "reward transactions are not relayed".into(),
            ));
        }
        // Before any signature is checked: refusing is meant to save the work.
        if from.is_none() && !self.admission.admits(self.mempool.len(), self.now_ms) {
            return Ok(SubmitOutcome::Busy {
                pending: self.mempool.len(),
                limit: self.admission.limit().unwrap_or(usize::MAX),
            });
        }
        let network = self.config.params.network;
        let preverified = self.preverified.remove(&txid);
        if let Err(error) =
            check_transaction(&transaction, &self.config.params).and_then(|_| match preverified {
                true => Ok(()),
                false => verify_transaction(&transaction, 0, network),
            })
        {
            self.penalize(
                from,
                format!("invalid transaction {txid}: {error}"),
                actions,
            );
            return Ok(SubmitOutcome::Rejected(error.to_string()));
        }
        if self.first_seen.len() >= MAX_FIRST_SEEN {
            // Forget when losers of double-spend races were first seen; nothing else waits.
            let (mempool, awaiting) = (&self.mempool, &self.awaiting_inputs);
            self.first_seen
                .retain(|txid, _| mempool.contains(txid) || awaiting.contains(txid));
        }
        if self.first_seen.len() < MAX_FIRST_SEEN {
            self.first_seen.entry(txid).or_insert(self.now_ms);
        }
        // A transaction from a peer came as gossip, which the network layer has already
        // forwarded to the rest of the mesh. Publishing it again made every node publish
        // every transaction, and each copy reached each node several times.
        self.admit_verified(transaction, from.is_none(), actions)
    }

    /// The state-dependent part of admission, for a transaction whose signatures and stateless
    /// rules already passed (also used to retry transactions awaiting inputs). `relay`: whether
    /// to broadcast it once pooled.
    fn admit_verified(
        &mut self,
        transaction: Transaction,
        relay: bool,
        actions: &mut Vec<Action>,
    ) -> Result<SubmitOutcome, NodeError> {
        let txid = transaction.txid();
        // Checked first: to the view below, a certified spend looks like a missing input.
        if let Some(other) = transaction
            .body
            .inputs
            .iter()
            .find_map(|input| self.certified.spender_of(&input.prevout))
        {
            return Ok(SubmitOutcome::Rejected(format!(
                "conflicts with certified transaction {other}"
            )));
        }
        let next = Height(self.tip_height().get() + 1);
        let validated = {
            let view = CertifiedView {
                base: &self.store,
                pool: &self.certified,
            };
            validate_transaction(&transaction, &view, &self.store, &self.config.params, next)
        };
        let validated = match validated {
            Ok(validated) => validated,
            Err(LedgerError::MissingInput { .. }) => {
                self.await_inputs(transaction);
                return Ok(SubmitOutcome::AwaitingInputs(txid));
            }
            Err(LedgerError::Backend(error)) => return Err(error.into()),
            // Validity depends on our view, which may differ from the relayer's: not a fault.
            Err(error) => return Ok(SubmitOutcome::Rejected(error.to_string())),
        };
        match self.mempool.insert(transaction.clone(), validated.fee) {
            Ok(_) => {}
            Err(MempoolError::AlreadyInPool { .. }) => {
                return Ok(SubmitOutcome::AlreadyKnown(txid));
            }
            Err(error) => return Ok(SubmitOutcome::Rejected(error.to_string())),
        }
        if relay {
            actions.push(Action::Broadcast(NodeMessage::Transactions(
                BoundedVec::new(vec![transaction.clone()]).expect("one transaction"),
            )));
        }
        self.vote_on(&transaction, actions)?;
        if let Some((transaction, certificate)) = self.awaiting_certified.remove(&txid) {
            self.on_certificate(transaction, certificate, None, actions)?;
        }
        Ok(SubmitOutcome::Accepted(txid))
    }

    fn vote_on(
        &mut self,
        transaction: &Transaction,
        actions: &mut Vec<Action>,
    ) -> Result<(), NodeError> {
        let inputs: Vec<OutPoint> = transaction.body.inputs.iter().map(|i| i.prevout).collect();
        match self.finality.handle(FinalityInput::Transaction {
            txid: transaction.txid(),
            inputs,
        }) {
            Ok(effects) => self.run_finality(effects, actions),
            // A conflicting lock or a full engine: we simply do not vote.
            Err(_) => Ok(()),
        }
    }

    fn await_inputs(&mut self, transaction: Transaction) {
        self.awaiting_inputs
            .insert(transaction.txid(), transaction, WhenFull::EvictOldest);
    }

    /// Retries every transaction and certificate that was waiting for inputs: after a block,
    /// which may settle any of them.
    fn retry_waiting(&mut self, actions: &mut Vec<Action>) -> Result<(), NodeError> {
        for txid in self.awaiting_inputs.txids() {
            self.retry_awaiting_inputs(txid, actions)?;
        }
        for txid in self.awaiting_certified.txids() {
            self.retry_awaiting_certified(txid, actions)?;
        }
        Ok(())
    }

    /// Retries what waits for the outputs of `parent`, just certified: nothing else can have
    /// become valid by it.
    fn retry_children(&mut self, parent: Txid, actions: &mut Vec<Action>) -> Result<(), NodeError> {
        for txid in self.awaiting_inputs.children_of(&parent) {
            self.retry_awaiting_inputs(txid, actions)?;
        }
        for txid in self.awaiting_certified.children_of(&parent) {
            self.retry_awaiting_certified(txid, actions)?;
        }
        Ok(())
    }

    fn retry_awaiting_inputs(
        &mut self,
        txid: Txid,
        actions: &mut Vec<Action>,
    ) -> Result<(), NodeError> {
        let Some(transaction) = self.awaiting_inputs.remove(&txid) else {
            return Ok(());
        };
        if self.in_chain(&transaction, &txid)? {
            return Ok(());
        }
        // Where it came from is not kept: relayed, as a client's would have to be. Still
        // missing an input, it is held again, at the back.
        self.admit_verified(transaction, true, actions)?;
        Ok(())
    }

    fn retry_awaiting_certified(
        &mut self,
        txid: Txid,
        actions: &mut Vec<Action>,
    ) -> Result<(), NodeError> {
        if let Some((transaction, certificate)) = self.awaiting_certified.remove(&txid) {
            self.on_certificate(transaction, certificate, None, actions)?;
        }
        Ok(())
    }

    /// A finality certificate, ours or a peer's (`from`): verify it, then make the transaction
    /// final in our view.
    fn on_certificate(
        &mut self,
        transaction: Transaction,
        certificate: FinalityCertificate,
        from: Option<PeerId>,
        actions: &mut Vec<Action>,
    ) -> Result<(), NodeError> {
        let txid = transaction.txid();
        if certificate.txid != txid {
            self.penalize(from, "certificate for another transaction".into(), actions);
            return Ok(());
        }
        if self.certified.contains(&txid) || self.in_chain(&transaction, &txid)? {
            return Ok(());
        }
        if from.is_some() {
            let network = self.config.params.network;
            // A byte-equal copy in our pools had its signatures checked on admission.
            let verified = self
                .verified_copy(&txid)
                .is_some_and(|copy| *copy == transaction);
            if !verified
                && let Err(error) = check_transaction(&transaction, &self.config.params)
                    .and_then(|_| verify_transaction(&transaction, 0, network))
            {
                self.penalize(
                    from,
                    format!("certified an invalid transaction: {error}"),
                    actions,
                );
                return Ok(());
            }
            let Some(committee) = self.known_committee(certificate.epoch) else {
                // A certificate of an epoch we cannot check (too old or not reached yet).
                return Ok(());
            };
            if let Err(error) = certificate.verify(&committee) {
                self.penalize(
                    from,
                    format!("invalid finality certificate: {error}"),
                    actions,
                );
                return Ok(());
            }
        }
        let next = Height(self.tip_height().get() + 1);
        let validated = {
            let view = CertifiedView {
                base: &self.store,
                pool: &self.certified,
            };
            validate_transaction(&transaction, &view, &self.store, &self.config.params, next)
        };
        let fee = match validated {
            Ok(validated) => validated.fee,
            Err(LedgerError::Backend(error)) => return Err(error.into()),
            Err(_) => {
                // Its inputs are not in our view yet (a parent's certificate or a block is
                // still on its way), or, with more than f faulty weight, it conflicts with
                // another certified transaction. Keep it and retry as our view grows.
                self.awaiting_certified
                    .insert(txid, (transaction, certificate), WhenFull::Refuse);
                return Ok(());
            }
        };
        if self.certified.len() >= MAX_CERTIFIED_UNBLOCKED {
            self.awaiting_certified
                .insert(txid, (transaction, certificate), WhenFull::Refuse);
            return Ok(());
        }
        // Pending transactions spending the same inputs can never be final now.
        for input in &transaction.body.inputs {
            if let Some(other) = self.mempool.spender_of(&input.prevout)
                && other != txid
            {
                self.mempool.remove(&other);
            }
        }
        self.mempool.remove(&txid);
        self.awaiting_inputs.remove(&txid);
        self.own_votes.remove(&txid);
        let size_bytes = transaction.encoded_size();
        let certified = CertifiedTransaction {
            transaction,
            certificate,
        };
        self.store.save_final(&certified)?;
        self.certified.insert(
            CertifiedEntry {
                transaction: certified.transaction,
                certificate: certified.certificate,
                fee,
                size_bytes,
            },
            next,
        );
        let latency_ms = self
            .first_seen
            .remove(&txid)
            .map_or(0, |seen| self.now_ms.saturating_sub(seen));
        self.admission.finalized(self.now_ms);
        actions.push(Action::Event(NodeEvent::TransactionFinalized {
            txid,
            latency_ms,
        }));
        // Not relayed: every node, member or not, forms the same certificate from the votes
        // gossiped to all. A copy per transaction was over half of the gossip bytes under load
        // (ADR 0011). Nodes that missed votes get the certificates still unblocked at a later
        // resend, or the block.
        self.retry_children(txid, actions)
    }

    fn known_committee(&self, epoch: Epoch) -> Option<Committee> {
        self.committees.get(&epoch).cloned()
    }

    /// Performs finality effects in order. A lock is durable before the vote it enables is
    /// even produced: the engine signs only what was reported `LockPersisted`, and only at the
    /// end of the step.
    fn run_finality(
        &mut self,
        effects: Vec<FinalityEffect>,
        actions: &mut Vec<Action>,
    ) -> Result<(), NodeError> {
        let mut queue: VecDeque<FinalityEffect> = effects.into();
        while let Some(effect) = queue.pop_front() {
            match effect {
                FinalityEffect::PersistLock(lock) => {
                    let records: Vec<ConsensusRecord> = lock
                        .inputs
                        .iter()
                        .map(|outpoint| ConsensusRecord {
                            key: LogKey::InputLock {
                                epoch: lock.epoch,
                                outpoint: *outpoint,
                            },
                            value: timecoin_primitives::BoundedBytes::new(encode(&lock.txid))
                                .expect("a txid fits a record"),
                        })
                        .collect();
                    let outcomes = self.store.persist(&records)?;
                    if let Some(LogOutcome::Conflict(_)) = outcomes
                        .iter()
                        .find(|outcome| matches!(outcome, LogOutcome::Conflict(_)))
                    {
                        actions.push(Action::Event(NodeEvent::RefusedToEquivocate(format!(
                            "input lock for {} conflicts with a persisted lock",
                            lock.txid
                        ))));
                        continue;
                    }
                    let more = self.finality.handle(FinalityInput::LockPersisted {
                        epoch: lock.epoch,
                        txid: lock.txid,
                    })?;
                    queue.extend(more);
                }
                FinalityEffect::BroadcastVotes(vote) => {
                    self.own_votes.extend(vote.txids.iter().copied());
                    actions.push(Action::Broadcast(NodeMessage::TxVotes(
                        BoundedVec::new(vec![vote]).expect("one vote"),
                    )));
                }
                FinalityEffect::Certified(certificate) => {
                    let txid = certificate.txid;
                    let body = self
                        .mempool
                        .get(&txid)
                        .cloned()
                        .or_else(|| self.awaiting_inputs.get(&txid).cloned());
                    // Without the body (it conflicted with our pool, say) we wait for a
                    // peer to relay it with the certificate.
                    if let Some(transaction) = body {
                        self.on_certificate(transaction, certificate, None, actions)?;
                    }
                }
                FinalityEffect::Evidence(evidence) => {
                    actions.push(Action::Event(NodeEvent::Evidence(Box::new(evidence))))
                }
                // We keep the transaction pooled; whichever of the conflicting pair gets a
                // certificate wins, and the other leaves the pool then.
                FinalityEffect::Refused { .. } => {}
                FinalityEffect::ReleaseLocksBefore(epoch) => {
                    let below = Height(self.tip_height().get().saturating_sub(1));
                    self.store.prune_log(below, epoch)?;
                }
            }
        }
        Ok(())
    }

    // ----- blocks -----

    /// Performs block-consensus effects in order. A `Persist` is durable (and the signed slot
    /// recorded in the write-once log) before any later effect; if the log already holds a
    /// different statement for the slot, the broadcasts that follow are withheld.
    fn run_bft(
        &mut self,
        effects: Vec<BftEffect>,
        actions: &mut Vec<Action>,
    ) -> Result<(), NodeError> {
        let mut queue: VecDeque<BftEffect> = effects.into();
        let mut withhold = false;
        while let Some(effect) = queue.pop_front() {
            match effect {
                BftEffect::Persist(_) if self.config.test_skip_statement_persistence => {}
                BftEffect::Persist(state) => {
                    self.store.save_bft_state(&state)?;
                    withhold = false;
                    if let Some(signed) = state.last_signed {
                        let record = ConsensusRecord {
                            key: LogKey::BlockVote {
                                height: signed.slot.height,
                                view: signed.slot.view,
                                phase: signed.slot.phase as u8,
                            },
                            value: timecoin_primitives::BoundedBytes::new(encode(&signed.digest))
                                .expect("a digest fits a record"),
                        };
                        let outcomes = self.store.persist(&[record])?;
                        if matches!(outcomes.first(), Some(LogOutcome::Conflict(_))) {
                            withhold = true;
                            actions.push(Action::Event(NodeEvent::RefusedToEquivocate(format!(
                                "block statement at {:?} differs from the persisted one",
                                signed.slot
                            ))));
                        }
                    }
                }
                BftEffect::Broadcast(message) => {
                    if withhold {
                        continue;
                    }
                    if self.own_bft.len() >= MAX_RESENT_BFT_MESSAGES {
                        self.own_bft.pop_front();
                    }
                    actions.push(Action::Broadcast(wire_bft(
                        &message,
                        self.config.gossip_block_limit_bytes,
                    )));
                    self.own_bft.push_back(message);
                }
                BftEffect::RequestBlockContents {
                    height,
                    view,
                    parent,
                } => match self.propose(height, parent)? {
                    Some(block) => {
                        let more = self.bft.handle(BftInput::BlockContents {
                            height,
                            view,
                            block,
                            now_ms: self.now_ms,
                        })?;
                        queue.extend(more);
                    }
                    None => actions.push(Action::Event(NodeEvent::ProposalRejected {
                        height,
                        view,
                        reason: "could not build our own proposal".into(),
                    })),
                },
                BftEffect::ValidateBlock {
                    height,
                    view,
                    block,
                } => {
                    let verdict = self.judge(&block)?;
                    if let Err(reason) = &verdict {
                        actions.push(Action::Event(NodeEvent::ProposalRejected {
                            height,
                            view,
                            reason: reason.clone(),
                        }));
                    }
                    let valid = verdict.is_ok();
                    let more = self.bft.handle(BftInput::BlockValidated {
                        height,
                        view,
                        block_hash: block.hash(),
                        valid,
                        now_ms: self.now_ms,
                    })?;
                    queue.extend(more);
                }
                BftEffect::Committed { certificate, block } => match block {
                    Some(block) => {
                        if block.header.height.get() == self.tip_height().get() + 1 {
                            match self.apply_block(&block, &certificate, false, actions)? {
                                Ok(()) => {}
                                Err(error) => {
                                    return Err(corrupt(format!(
                                        "a block committed by consensus does not apply: {error}"
                                    )));
                                }
                            }
                            // apply_block started the next height; its effects were run there.
                        }
                    }
                    None => {
                        self.missing_block = Some(certificate);
                        self.request_sync(actions);
                    }
                },
                BftEffect::Evidence(evidence) => {
                    actions.push(Action::Event(NodeEvent::Evidence(Box::new(evidence))))
                }
                BftEffect::ScheduleTick { at_ms } => {
                    self.bft_tick_ms = Some(self.bft_tick_ms.map_or(at_ms, |t| t.min(at_ms)));
                }
            }
        }
        let now_at = (self.bft.height(), self.bft.view());
        if now_at.0 == self.last_view.0 && now_at.1 > self.last_view.1 {
            actions.push(Action::Event(NodeEvent::ViewChanged {
                height: now_at.0,
                view: now_at.1,
                leader: self
                    .finality
                    .committee()
                    .leader(now_at.0, now_at.1)
                    .node_key,
            }));
        }
        self.last_view = now_at;
        Ok(())
    }

    /// Builds our proposal: certified transactions (in certification order, so parents come
    /// first) that still validate, the parent's commit certificate, and the reward split over
    /// that certificate's signers by weight (ADR 0009).
    fn propose(&mut self, height: Height, parent: BlockHash) -> Result<Option<Block>, NodeError> {
        let Some(key) = self.config.node_key.as_ref() else {
            return Ok(None);
        };
        let Some(tip) = self.store.tip() else {
            return Ok(None);
        };
        if tip.hash != parent || tip.height.get() + 1 != height.get() {
            return Ok(None);
        }
        let proposer = key.public_key();
        let parent_header = self
            .store
            .header(&parent)?
            .ok_or_else(|| corrupt("the tip's header is missing"))?;
        // From height 2 the block carries the certificate we committed the parent with; its
        // signers are who the reward pays. Without it (or if it no longer verifies, which only
        // a damaged store could cause) we cannot build a valid block.
        let parent_commit = if height.get() >= 2 {
            match self.store.certificate(tip.height)? {
                Some(certificate) => Some(certificate),
                None => return Ok(None),
            }
        } else {
            None
        };
        let Ok(shares) = self.reward_shares(height, &proposer, parent_commit.as_ref())? else {
            return Ok(None);
        };
        // The shares come from a verified certificate, so they are non-empty with positive
        // weights and the split cannot fail.
        let pay_reward =
            |allowed| timecoin_ledger::split_reward(allowed, &shares).unwrap_or_default();
        let params = &self.config.params;
        let mut chosen = Vec::new();
        let mut bytes = 0usize;
        {
            let mut cache = UtxoCache::new(&self.store);
            for entry in self.certified.iter() {
                if chosen.len() >= MAX_BLOCK_TRANSACTIONS_PROPOSED
                    || bytes + entry.size_bytes > params.max_block_bytes / 2
                {
                    break;
                }
                let Ok(validated) =
                    validate_transaction(&entry.transaction, &cache, &self.store, params, height)
                else {
                    continue;
                };
                for (outpoint, _) in &validated.spent {
                    cache.remove_utxo(outpoint)?;
                }
                let txid = validated.txid;
                let collateral_output = match entry.transaction.body.kind {
                    TxKind::RegisterMasternode {
                        collateral_output, ..
                    } => Some(collateral_output),
                    _ => None,
                };
                for (index, output) in (0u32..).zip(entry.transaction.body.outputs.iter()) {
                    cache.insert_utxo(
                        OutPoint { txid, index },
                        UtxoEntry {
                            output: *output,
                            height,
                            is_collateral: collateral_output == Some(index),
                        },
                    )?;
                }
                bytes += entry.size_bytes;
                chosen.push(entry.transaction.clone());
            }
        }
        // At most one registration per node key per block: the ledger refuses a second.
        let template = BlockTemplate {
            parent: parent_header.clone(),
            timestamp: Timestamp(self.now_ms.max(parent_header.timestamp.as_millis())),
            proposer,
            transactions: chosen,
            parent_commit: parent_commit.clone(),
        };
        let block = build_block(
            template,
            pay_reward,
            &self.store,
            self.store.utxo_commitment(),
            &self.store,
            params,
        );
        match block {
            Ok(block) => Ok(Some(block)),
            Err(LedgerError::Backend(error)) => Err(error.into()),
            // A combination the ledger refuses (two registrations of one key, say): propose
            // an empty block rather than nothing, so the chain moves.
            Err(_) => {
                let template = BlockTemplate {
                    parent: parent_header.clone(),
                    timestamp: Timestamp(self.now_ms.max(parent_header.timestamp.as_millis())),
                    proposer,
                    transactions: Vec::new(),
                    parent_commit,
                };
                Ok(build_block(
                    template,
                    pay_reward,
                    &self.store,
                    self.store.utxo_commitment(),
                    &self.store,
                    params,
                )
                .ok())
            }
        }
    }

    /// Whether a proposed block may be voted for: signatures, every ledger rule against our
    /// committed state (UTXO commitment included), the parent certificate and the reward's
    /// split over its signers, no transaction conflicting with one we know to be certified,
    /// and a timestamp not too far ahead of our clock.
    fn judge(&mut self, block: &Block) -> Result<Result<(), String>, NodeError> {
        let Some(tip) = self.store.tip() else {
            return Ok(Err("no chain".into()));
        };
        if block.header.previous_hash != tip.hash {
            return Ok(Err("does not extend our tip".into()));
        }
        if block.header.timestamp.as_millis() > self.now_ms + MAX_FUTURE_BLOCK_MS {
            return Ok(Err("timestamp too far in the future".into()));
        }
        for transaction in block.transactions.iter().skip(1) {
            let txid = transaction.txid();
            for input in &transaction.body.inputs {
                if let Some(holder) = self.certified.spender_of(&input.prevout)
                    && holder != txid
                {
                    return Ok(Err(format!(
                        "{txid} conflicts with certified transaction {holder}"
                    )));
                }
            }
        }
        let parent = self
            .store
            .header(&tip.hash)?
            .ok_or_else(|| corrupt("the tip's header is missing"))?;
        if let Err(error) = self.verify_unpooled(block) {
            return Ok(Err(error.to_string()));
        }
        // The parent certificate first: a bad one is cheaper to refuse than the UTXO work.
        let shares = match self.block_reward_shares(block)? {
            Ok(shares) => shares,
            Err(error) => return Ok(Err(error.to_string())),
        };
        let verdict = validate_block_for_apply(
            block,
            &parent,
            &self.store,
            self.store.utxo_commitment(),
            &self.store,
            &self.config.params,
        )
        .and_then(|validated| {
            timecoin_ledger::check_reward_split(
                block,
                validated.outcome().allowed_reward(),
                &shares,
            )
            .map(|()| validated)
        });
        match verdict {
            Ok(validated) => {
                self.validated = Some(validated);
                Ok(Ok(()))
            }
            Err(LedgerError::Backend(error)) => Err(error.into()),
            Err(error) => Ok(Err(error.to_string())),
        }
    }

    /// The reward shares `block` must pay: its parent certificate checked against the block
    /// (`check_parent_commit`) and then verified by [`Self::reward_shares`].
    fn block_reward_shares(
        &mut self,
        block: &Block,
    ) -> Result<Result<Vec<timecoin_ledger::RewardShare>, LedgerError>, NodeError> {
        if let Err(error) = timecoin_ledger::check_parent_commit(block) {
            return Ok(Err(error));
        }
        self.reward_shares(
            block.header.height,
            &block.header.proposer,
            block.parent_commit.as_deref(),
        )
    }

    /// Who the reward of the block at `height` pays (ADR 0009): the signers of the parent
    /// certificate it carries, each with its weight in the parent epoch's committee and paid
    /// at its collateral owner's address; at height 1, whose parent (genesis) has no
    /// certificate, the proposer alone. `Ok(Err(_))`: the certificate does not verify against
    /// that committee, or the proposer is not a member, so the block is invalid. The ledger
    /// has already checked that the certificate names the parent (`check_parent_commit`).
    fn reward_shares(
        &mut self,
        height: Height,
        proposer: &timecoin_primitives::PublicKey,
        parent_commit: Option<&CommitCertificate>,
    ) -> Result<Result<Vec<timecoin_ledger::RewardShare>, LedgerError>, NodeError> {
        let invalid = |reason: String| Ok(Err(LedgerError::InvalidParentCommit { reason }));
        let Some(certificate) = parent_commit else {
            let committee = self.committee(self.config.params.epoch_of(height))?;
            let Some(member) = committee.member(proposer).copied() else {
                return invalid(format!("the proposer {proposer} is not a committee member"));
            };
            let owner = self.collateral_owner(&member.collateral)?;
            return Ok(Ok(vec![timecoin_ledger::RewardShare {
                node_key: member.node_key,
                weight: member.weight.get(),
                owner,
            }]));
        };
        let committee = self.committee(self.config.params.epoch_of(certificate.height))?;
        if let Err(error) = verify_commit_certificate(&committee, certificate) {
            return invalid(error.to_string());
        }
        let mut shares = Vec::with_capacity(certificate.votes.len());
        for vote in certificate.votes.iter() {
            let Some(member) = committee.member(&vote.voter).copied() else {
                return invalid(format!("{} is not a committee member", vote.voter));
            };
            shares.push(timecoin_ledger::RewardShare {
                node_key: member.node_key,
                weight: member.weight.get(),
                owner: self.collateral_owner(&member.collateral)?,
            });
        }
        Ok(Ok(shares))
    }

    /// The owner of a committee member's collateral, who receives its rewards. A member whose
    /// deregistration is already committed serves out its epoch and is still paid; its
    /// registration has left the registry by then, so the owner is read from the collateral
    /// output itself (a registration's owner is by definition that output's address).
    fn collateral_owner(
        &self,
        collateral: &OutPoint,
    ) -> Result<timecoin_primitives::Address, NodeError> {
        if let Some(registration) = self.store.registration(collateral)? {
            return Ok(registration.owner);
        }
        let location = self
            .store
            .transaction_location(&collateral.txid)?
            .ok_or_else(|| corrupt("a committee member's collateral transaction is not indexed"))?;
        let block = self.block_at(location.height)?;
        block
            .transactions
            .get(location.position as usize)
            .and_then(|transaction| transaction.body.outputs.get(collateral.index as usize))
            .map(|output| output.address)
            .ok_or_else(|| corrupt("a committee member's collateral output is missing"))
    }

    /// Verifies the signatures of `block`'s transactions that our pools do not hold byte for
    /// byte. The pools hold only transactions whose signatures we verified, and a proposal
    /// rebuilt from its compact form is made of those copies, so only the rest (the reward, and
    /// what a whole proposal or a synced block carried that we lacked) is checked. Judging a
    /// proposal and applying the committed block both come here: each payment's signatures are
    /// verified once per node, on admission, instead of twice.
    fn verify_unpooled(&self, block: &Block) -> Result<(), LedgerError> {
        let unverified: Vec<Transaction> = block
            .transactions
            .iter()
            .filter(|transaction| self.verified_copy(&transaction.txid()) != Some(*transaction))
            .cloned()
            .collect();
        verify_transactions(&unverified, self.config.params.network)
    }

    /// Applies a committed block: ledger rules through a change recorder, one durable store
    /// commit, then the pools, the engines and the next height. `Ok(Err(_))` means the block
    /// broke a ledger rule (and nothing was written).
    fn apply_block(
        &mut self,
        block: &Block,
        certificate: &CommitCertificate,
        synced: bool,
        actions: &mut Vec<Action>,
    ) -> Result<Result<(), LedgerError>, NodeError> {
        let tip = self.store.tip().ok_or(NodeError::NoGenesis)?;
        let parent = self
            .store
            .header(&tip.hash)?
            .ok_or_else(|| corrupt("the tip's header is missing"))?;
        // Whoever sent the block (consensus or a syncing peer), its parent certificate must
        // verify and its reward follow the certificate's signers (ADR 0009).
        let shares = match self.block_reward_shares(block)? {
            Ok(shares) => shares,
            Err(error) => return Ok(Err(error)),
        };
        // A block we judged as a proposal was checked there already; this is for the rest
        // (a block fetched by sync or after a commit we did not judge) and costs little for a
        // judged one, whose transactions are all pooled copies.
        if let Err(error) = self.verify_unpooled(block) {
            return Ok(Err(error));
        }
        let mut commitment = self.store.utxo_commitment().clone();
        let validated = self.validated.take();
        let (outcome, changes) = {
            let mut recorder = ChangeRecorder::for_block(&self.store, block);
            let outcome = match apply_validated_block(
                validated,
                block,
                &parent,
                &mut recorder,
                &mut commitment,
                &self.store,
                &self.config.params,
            )
            .and_then(|outcome| {
                timecoin_ledger::check_reward_split(block, outcome.allowed_reward(), &shares)
                    .map(|()| outcome)
            }) {
                Ok(outcome) => outcome,
                Err(LedgerError::Backend(error)) => return Err(error.into()),
                Err(error) => return Ok(Err(error)),
            };
            (outcome, recorder.into_changes()?)
        };
        self.store.commit_block(BlockCommit {
            block,
            certificate: Some(certificate),
            changes: &changes,
            commitment: &commitment,
            masternode_events: outcome.masternode_events(),
        })?;
        let height = block.header.height;
        let hash = block.hash();
        if self
            .missing_block
            .as_ref()
            .is_some_and(|c| c.height <= height)
        {
            self.missing_block = None;
        }
        // Pools: included transactions leave, and so does anything conflicting with them.
        self.mempool.remove_for_block(block);
        let mut finality_effects = Vec::new();
        let mut settled = Vec::new();
        let mut final_by_block = Vec::new();
        for transaction in block.transactions.iter().skip(1) {
            let txid = transaction.txid();
            if self.certified.remove(&txid).is_some() {
                settled.push(txid);
            } else {
                final_by_block.push(txid);
            }
            self.own_votes.remove(&txid);
            self.first_seen.remove(&txid);
            self.awaiting_certified.remove(&txid);
            self.awaiting_inputs.remove(&txid);
            for input in &transaction.body.inputs {
                if let Some(other) = self.certified.spender_of(&input.prevout)
                    && other != txid
                {
                    self.certified.remove(&other);
                    settled.push(other);
                }
            }
            if let Ok(effects) = self.finality.handle(FinalityInput::Included { txid }) {
                finality_effects.extend(effects);
            }
        }
        // A crash before this lands leaves stale records, which the next start drops.
        self.store.forget_finals(&settled)?;
        self.own_bft.clear();
        self.seen_proposals.clear();
        actions.push(Action::Event(NodeEvent::BlockCommitted {
            height,
            hash,
            view: certificate.view,
            transactions: block.transactions.len(),
            synced,
        }));
        if !final_by_block.is_empty() {
            actions.push(Action::Event(NodeEvent::FinalInBlock {
                height,
                txids: final_by_block,
            }));
        }
        self.run_finality(finality_effects, actions)?;
        // The next height, maybe in a new epoch.
        let next = Height(height.get() + 1);
        let epoch = self.config.params.epoch_of(next);
        let committee = self.committee(epoch)?;
        if epoch > self.finality.committee().epoch() {
            let carried = self.locks_to_carry(epoch)?;
            let effects = self
                .finality
                .handle(FinalityInput::NewEpoch(committee.clone()))?;
            self.own_votes.clear();
            actions.push(Action::Event(NodeEvent::EpochStarted {
                epoch,
                members: committee.members().len(),
            }));
            // Old locks are deleted only after the carried ones are durable in the new epoch.
            let (release, effects): (Vec<_>, Vec<_>) = effects
                .into_iter()
                .partition(|effect| matches!(effect, FinalityEffect::ReleaseLocksBefore(_)));
            self.run_finality(effects, actions)?;
            for lock in carried {
                if let Ok(effects) = self.finality.handle(FinalityInput::Transaction {
                    txid: lock.txid,
                    inputs: lock.inputs,
                }) {
                    self.run_finality(effects, actions)?;
                }
            }
            self.run_finality(release, actions)?;
            // Vote again on everything else still pending, in a fixed order (the engine
            // refuses whatever conflicts with a carried lock).
            let pending: Vec<Transaction> = self
                .mempool
                .iter()
                .map(|entry| (entry.txid(), entry.transaction().clone()))
                .collect::<BTreeMap<_, _>>()
                .into_values()
                .collect();
            for transaction in pending {
                self.vote_on(&transaction, actions)?;
            }
        }
        let effects = self.bft.handle(BftInput::StartHeight {
            height: next,
            parent: hash,
            committee,
            now_ms: self.now_ms,
        })?;
        self.run_bft(effects, actions)?;
        self.retry_waiting(actions)?;
        Ok(Ok(()))
    }

    // ----- commands -----

    fn on_command(
        &mut self,
        id: RequestId,
        command: Command,
        actions: &mut Vec<Action>,
    ) -> Result<(), NodeError> {
        let reply = match command {
            Command::SubmitTransaction(transaction) => {
                Reply::Submitted(self.accept_transaction(transaction, None, actions)?)
            }
            Command::Tip => Reply::Tip(self.store.tip()),
            Command::BlockByHash(hash) => match self.store.block(&hash)? {
                Some(block) => {
                    let certificate = self.store.certificate(block.header.height)?;
                    Reply::Block(Some((block, certificate)))
                }
                None => Reply::Block(None),
            },
            Command::BlockByHeight(height) => match self.store.block_hash(height)? {
                Some(hash) => Reply::Block(
                    self.store
                        .block(&hash)?
                        .map(|block| (block, self.store.certificate(height).ok().flatten())),
                ),
                None => Reply::Block(None),
            },
            Command::TransactionStatus(txid) => Reply::TransactionStatus(self.status(&txid)?),
            Command::UtxosByAddress { address, limit } => self.utxos_by_address(address, limit)?,
            Command::MempoolInfo => Reply::Mempool(self.mempool_summary(&self.mempool.info())),
            Command::ConsensusInfo => {
                let committee = self.finality.committee();
                let height = self.bft.height();
                let view = self.bft.view();
                Reply::Consensus(Box::new(ConsensusSummary {
                    height,
                    view,
                    epoch: committee.epoch(),
                    committee_members: committee.members().len(),
                    total_weight: committee.total_weight().get(),
                    quorum_weight: committee.quorum_weight().get(),
                    node_key: self.config.node_key.as_ref().map(|key| {
                        let public = key.public_key();
                        (public, committee.member(&public).is_some())
                    }),
                    leader: committee.leader(height, view).node_key,
                    locked_inputs: self.finality.locked_inputs(),
                }))
            }
        };
        actions.push(Action::Reply { id, reply });
        Ok(())
    }

    /// The unspent outputs paying `address` (at most `limit`): those in blocks from the address
    /// index, less the ones certified transactions spend, then certified outputs not yet in a
    /// block.
    fn utxos_by_address(
        &self,
        address: timecoin_primitives::Address,
        limit: usize,
    ) -> Result<Reply, NodeError> {
        let limit = limit.min(timecoin_storage::traits::MAX_ADDRESS_QUERY);
        let mut utxos = Vec::new();
        let outpoints = match self.store.address_outpoints(&address, limit) {
            Ok(outpoints) => outpoints,
            // A setting of this node, not a storage failure: the caller is told, and the
            // node carries on.
            Err(error @ StorageError::IndexDisabled { .. }) => {
                return Ok(Reply::Error(error.to_string()));
            }
            Err(error) => return Err(error.into()),
        };
        for outpoint in outpoints {
            if self.certified.spender_of(&outpoint).is_some() {
                continue;
            }
            if let Some(entry) = self.store.utxo(&outpoint)? {
                utxos.push((outpoint, entry));
            }
        }
        for (outpoint, entry) in self.certified.unspent_outputs() {
            if utxos.len() >= limit {
                break;
            }
            if entry.output.address == address {
                utxos.push((outpoint, entry));
            }
        }
        utxos.truncate(limit);
        Ok(Reply::Utxos(utxos))
    }

    /// Where `txid` stands.
    pub fn status(&self, txid: &Txid) -> Result<TxStatus, NodeError> {
        // The pools first: a transaction leaves every one of them in the step that puts it in
        // a block, so the answer is the same, and clients poll mostly for transactions still
        // in them, which then cost no index lookup.
        if let Some(entry) = self.certified.get(txid) {
            return Ok(TxStatus::Certified(entry.certificate.clone()));
        }
        if self.mempool.contains(txid) {
            return Ok(TxStatus::Pending);
        }
        if self.awaiting_inputs.contains(txid) {
            return Ok(TxStatus::AwaitingInputs);
        }
        if let Some(location) = self.store.transaction_location(txid)? {
            return Ok(TxStatus::Included {
                height: location.height,
                position: location.position,
            });
        }
        Ok(TxStatus::Unknown)
    }
}

/// The registration a `RegisterMasternode` transaction made at `height`.
fn registration_made_by(
    transaction: &Transaction,
    height: Height,
) -> Result<MasternodeRegistration, NodeError> {
    let TxKind::RegisterMasternode {
        collateral_output,
        node_key,
        tier,
        network_address,
    } = &transaction.body.kind
    else {
        return Err(corrupt("a collateral was not created by a registration"));
    };
    let output = transaction
        .body
        .outputs
        .get(*collateral_output as usize)
        .ok_or_else(|| corrupt("a registration's collateral output is missing"))?;
    Ok(MasternodeRegistration {
        collateral: OutPoint {
            txid: transaction.txid(),
            index: *collateral_output,
        },
        owner: output.address,
        node_key: *node_key,
        tier: *tier,
        network_address: network_address.clone(),
        registered_at: height,
    })
}

/// Writes the genesis block into an empty store.
pub fn init_store<S: NodeStore>(
    store: &mut S,
    genesis: &Block,
    params: &ChainParams,
) -> Result<(), NodeError> {
    let mut commitment = timecoin_ledger::UtxoCommitment::empty();
    let (outcome, changes) = {
        let mut recorder = ChangeRecorder::for_block(&*store, genesis);
        let outcome =
            timecoin_ledger::apply_genesis(genesis, &mut recorder, &mut commitment, params)?;
        (outcome, recorder.into_changes()?)
    };
    store.commit_block(BlockCommit {
        block: genesis,
        certificate: None,
        changes: &changes,
        commitment: &commitment,
        masternode_events: outcome.masternode_events(),
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{MASTERNODE_SEED, genesis, key};
    use timecoin_consensus::{ViewChange, ViewChangeMessage};

    fn view_change_carrying(block: Block) -> BftMessage {
        let voter = key(MASTERNODE_SEED);
        BftMessage::ViewChange(Box::new(ViewChangeMessage {
            view_change: ViewChange {
                height: Height(1),
                view: 1,
                prepared: Some((0, block.hash())),
                voter: voter.public_key(),
                signature: voter.sign(b"not checked here"),
            },
            certificate: None,
            block: Some(block),
        }))
    }

    fn carried_block(message: &NodeMessage) -> Option<&Block> {
        match message {
            NodeMessage::Bft(BftMessage::ViewChange(change)) => change.block.as_ref(),
            other => panic!("a view change stays a view change, got {other:?}"),
        }
    }

    #[test]
    fn a_gossiped_view_change_leaves_out_a_block_over_the_limit_and_keeps_its_claim() {
        let (block, _) = genesis(None);
        let size = encode(&block).len();
        let message = view_change_carrying(block.clone());

        let within = wire_bft(&message, size);
        assert_eq!(carried_block(&within), Some(&block));

        let over = wire_bft(&message, size - 1);
        assert_eq!(carried_block(&over), None);
        let (NodeMessage::Bft(BftMessage::ViewChange(stripped)), BftMessage::ViewChange(original)) =
            (&over, &message)
        else {
            unreachable!("checked above");
        };
        assert_eq!(stripped.view_change, original.view_change);
        assert_eq!(stripped.certificate, original.certificate);
        assert!(over.to_bytes().len() < size);
    }
}
