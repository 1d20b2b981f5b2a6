//! Block consensus: PBFT-style pre-prepare (proposal) → prepare → commit with quorums by
//! weight, and a view change that carries prepared certificates (PBFT's scheme, not
//! Tendermint's locks; `docs/consensus.md` explains the choice and the safety argument).
//!
//! Persistence before send: whenever the engine signs, it emits [`BftEffect::Persist`] with its
//! new [`PersistedBftState`] *before* the [`BftEffect::Broadcast`] carrying the signature. The
//! runtime must perform effects in order and must not start an effect until every earlier
//! `Persist` is durable. Restoring an engine from the last durable state
//! ([`BftEngine::new`]) then guarantees that it never signs anything contradicting what it
//! sent before a crash.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use borsh::{BorshDeserialize, BorshSerialize};
use timecoin_primitives::block::MAX_COMMITTEE_SIZE;
use timecoin_primitives::{
    Block, BlockHash, BoundedVec, CommitCertificate, CommitVote, Hash32, Height, Network,
    PublicKey, SecretKey, Signature,
};

use crate::committee::{Committee, Weight};
use crate::error::ConsensusError;
use crate::evidence::Evidence;
use crate::signing::{
    Phase, SignedSlot, Slot, may_sign, statement_message, verify_quorum_votes, view_change_digest,
};

/// Messages for views further than this above ours are dropped rather than stored.
pub const MAX_VIEWS_AHEAD: u32 = 8;
/// Commit votes for views this far below ours are still collected (a late commit quorum of an
/// older view still decides the height); older ones are dropped.
pub const MAX_VIEWS_BEHIND: u32 = 8;
/// Most messages buffered for the next height while this one is being decided.
pub const MAX_FUTURE_MESSAGES: usize = 4_096;
/// Most distinct blocks held for one height (proposals and blocks behind prepared
/// certificates).
pub const MAX_BLOCKS_PER_HEIGHT: usize = 64;
/// The view timeout doubles at most this many times before it is capped.
pub const MAX_TIMEOUT_DOUBLINGS: u32 = 16;

/// Timing and identity parameters of block consensus.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BftConfig {
    /// The network whose signatures we produce and accept.
    pub network: Network,
    /// The time between view-0 proposals of consecutive heights: the leader of view 0 proposes
    /// this long after the previous height's view-0 proposal time, or at once if that is past
    /// (at most this long after the height starts).
    pub block_interval_ms: u64,
    /// The view timeout after progress; it doubles with each consecutive timeout.
    pub base_timeout_ms: u64,
    /// The cap on the view timeout.
    pub max_timeout_ms: u64,
}

/// A prepare or commit vote (which one is given by the [`BftMessage`] variant).
#[derive(Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Vote {
    /// The height.
    pub height: Height,
    /// The view.
    pub view: u32,
    /// The block voted for.
    pub block_hash: BlockHash,
    /// The voter's node key.
    pub voter: PublicKey,
    /// Signature over [`statement_message`] for (height, view, phase) and the block hash.
    pub signature: Signature,
}

/// Prepare votes from the quorum weight for one block in one view: proof that no other block
/// can have been committed in that view, carried through view changes.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct PreparedCertificate {
    /// The height.
    pub height: Height,
    /// The view in which the block was prepared.
    pub view: u32,
    /// The block.
    pub block_hash: BlockHash,
    /// The prepare votes, strictly ascending by voter.
    pub votes: BoundedVec<CommitVote, MAX_COMMITTEE_SIZE>,
}

impl PreparedCertificate {
    /// Checks the certificate against the committee of its height's epoch.
    pub fn verify(&self, committee: &Committee) -> Result<Weight, ConsensusError> {
        let slot = Slot {
            height: self.height,
            view: self.view,
            phase: Phase::Prepare,
        };
        let message = statement_message(
            committee.network(),
            committee.epoch(),
            slot,
            &self.block_hash.0,
        );
        verify_quorum_votes(committee, &message, &self.votes)
    }
}

/// A signed request to move to `view`, stating the sender's highest prepared certificate at
/// this height (its view and block) or that it prepared nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct ViewChange {
    /// The height.
    pub height: Height,
    /// The view the sender moves to.
    pub view: u32,
    /// (view, block) of the sender's highest prepared certificate, if any.
    pub prepared: Option<(u32, BlockHash)>,
    /// The sender's node key.
    pub voter: PublicKey,
    /// Signature over [`statement_message`] with phase `ViewChange` and digest
    /// [`view_change_digest`]`(prepared)`.
    pub signature: Signature,
}

/// A view change as sent to peers: the signed claim plus the certificate that backs it and the
/// block it names, so the next leader can re-propose the block without fetching it.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct ViewChangeMessage {
    /// The signed claim.
    pub view_change: ViewChange,
    /// The prepared certificate the claim names (required when it names one).
    pub certificate: Option<PreparedCertificate>,
    /// The prepared block (optional: its hash must match the certificate).
    pub block: Option<Block>,
}

/// The leader's proposal (PBFT's pre-prepare, merged with the new-view message in views > 0).
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Proposal {
    /// The height.
    pub height: Height,
    /// The view.
    pub view: u32,
    /// The proposed block.
    pub block: Block,
    /// In views > 0: view changes for this view from the quorum weight, strictly ascending by
    /// voter. Empty in view 0.
    pub justification: BoundedVec<ViewChange, MAX_COMMITTEE_SIZE>,
    /// The prepared certificate for the highest claim in the justification, if any; the block
    /// must then be exactly that block.
    pub certificate: Option<PreparedCertificate>,
    /// The leader's signature over [`statement_message`] with phase `Proposal`.
    pub signature: Signature,
}

/// A block-consensus message.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum BftMessage {
    /// A leader's proposal.
    Proposal(Box<Proposal>),
    /// A prepare vote.
    Prepare(Vote),
    /// A commit vote.
    Commit(Vote),
    /// A view change.
    ViewChange(Box<ViewChangeMessage>),
}

impl BftMessage {
    /// The height the message is about.
    pub fn height(&self) -> Height {
        match self {
            BftMessage::Proposal(proposal) => proposal.height,
            BftMessage::Prepare(vote) | BftMessage::Commit(vote) => vote.height,
            BftMessage::ViewChange(message) => message.view_change.height,
        }
    }

    /// The view the message is about.
    pub fn view(&self) -> u32 {
        match self {
            BftMessage::Proposal(proposal) => proposal.view,
            BftMessage::Prepare(vote) | BftMessage::Commit(vote) => vote.view,
            BftMessage::ViewChange(message) => message.view_change.view,
        }
    }
}

/// A prepared certificate together with its block.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct PreparedProof {
    /// The certificate.
    pub certificate: PreparedCertificate,
    /// The block it certifies.
    pub block: Block,
}

/// What a node must persist before its signed messages leave it, and restore after a restart.
#[derive(Clone, Debug, Default, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct PersistedBftState {
    /// The last statement signed.
    pub last_signed: Option<SignedSlot>,
    /// The highest prepared certificate at the last signed height (the PBFT "lock" that view
    /// changes must carry).
    pub prepared: Option<PreparedProof>,
}

/// What the node tells the block-consensus engine. Every input carries the current time, the
/// only clock the engine knows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BftInput {
    /// Start deciding `height` on top of `parent` with `committee` (the committee of the
    /// height's epoch). The node sends it at start-up and after applying each committed block.
    StartHeight {
        /// The height to decide.
        height: Height,
        /// The hash of the block at `height − 1`.
        parent: BlockHash,
        /// The committee of `height`'s epoch.
        committee: Committee,
        /// The time now.
        now_ms: u64,
    },
    /// Time passed; the engine fires any timer that is due.
    Tick {
        /// The time now.
        now_ms: u64,
    },
    /// A message from a peer.
    Message {
        /// The message.
        message: BftMessage,
        /// The time now.
        now_ms: u64,
    },
    /// The block this node proposes, in answer to [`BftEffect::RequestBlockContents`].
    BlockContents {
        /// The height asked for.
        height: Height,
        /// The view asked for.
        view: u32,
        /// The block: certified transactions plus the reward, proposer = our node key.
        block: Block,
        /// The time now.
        now_ms: u64,
    },
    /// The node's verdict on a proposed block, in answer to [`BftEffect::ValidateBlock`].
    BlockValidated {
        /// The height.
        height: Height,
        /// The view.
        view: u32,
        /// The block judged.
        block_hash: BlockHash,
        /// Whether the block is valid against the node's ledger.
        valid: bool,
        /// The time now.
        now_ms: u64,
    },
}

/// What the engine asks of the node, in the order to perform them. A `Persist` must be durable
/// before any later effect of the same batch is performed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BftEffect {
    /// Durably store this state (replacing the previous one).
    Persist(PersistedBftState),
    /// Send this message to every committee member.
    Broadcast(BftMessage),
    /// We lead this view: build a block on `parent` and answer [`BftInput::BlockContents`].
    RequestBlockContents {
        /// The height.
        height: Height,
        /// The view.
        view: u32,
        /// The parent block.
        parent: BlockHash,
    },
    /// Check this proposed block against the ledger and answer [`BftInput::BlockValidated`].
    ValidateBlock {
        /// The height.
        height: Height,
        /// The view.
        view: u32,
        /// The block.
        block: Block,
    },
    /// The height is decided. `block` is `None` if we never received it: fetch it by hash.
    /// The node applies the block, then sends [`BftInput::StartHeight`] for the next height.
    Committed {
        /// The proof of finality.
        certificate: CommitCertificate,
        /// The block, if we have it.
        block: Option<Block>,
    },
    /// A masternode signed two conflicting statements.
    Evidence(Evidence),
    /// Send [`BftInput::Tick`] at (or after) this time.
    ScheduleTick {
        /// When.
        at_ms: u64,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    /// No height started yet.
    Idle,
    /// Deciding `height`.
    Running,
    /// `height` decided; waiting for the node's next `StartHeight`.
    Decided,
}

#[derive(Clone, Debug)]
struct PendingProposal {
    block: Block,
    hash: BlockHash,
    validated: bool,
}

type VoteMap = BTreeMap<(u32, BlockHash), BTreeMap<PublicKey, Signature>>;

/// The block-consensus state machine of one node.
#[derive(Debug)]
pub struct BftEngine {
    config: BftConfig,
    key: Option<SecretKey>,
    committee: Option<Committee>,
    status: Status,
    height: Height,
    parent: BlockHash,
    view: u32,
    propose_at_ms: Option<u64>,
    /// The height last started in view 0 and its view-0 proposal time, which the next height's
    /// is counted from.
    schedule: Option<(Height, u64)>,
    deadline_ms: Option<u64>,
    consecutive_timeouts: u32,
    last_signed: Option<SignedSlot>,
    prepared: Option<PreparedProof>,
    proposals: BTreeMap<u32, PendingProposal>,
    blocks: BTreeMap<BlockHash, Block>,
    validated_blocks: BTreeSet<BlockHash>,
    /// The block we signed a prepare for, by view, for the last few views of this height. A
    /// quorum may have prepared one of them while only a faulty member saw the certificate;
    /// when it claims the certificate in a view change without the block, ours is what lets
    /// the view change re-propose it (the simulator found a height stuck for good without).
    own_prepares: BTreeMap<u32, BlockHash>,
    prepares: VoteMap,
    commits: VoteMap,
    view_changes: BTreeMap<u32, BTreeMap<PublicKey, (ViewChange, Option<PreparedCertificate>)>>,
    /// (signer, view, phase) → the digest and signature first seen, to spot equivocation.
    seen: BTreeMap<(PublicKey, u32, Phase), (Hash32, Signature)>,
    reported: BTreeSet<(PublicKey, u32, Phase)>,
    /// Views in which we, as leader, proposed or asked for block contents.
    led: BTreeSet<u32>,
    awaiting_contents: Option<u32>,
    future: VecDeque<BftMessage>,
    /// Whether the current view's timer already fired once without the view having started.
    waited_in_view: bool,
}

impl BftEngine {
    /// An engine, fresh (`persisted` = default) or restored from the last durable state. It is
    /// idle until the node sends [`BftInput::StartHeight`]. `key` is the node key of a
    /// masternode; without one the engine follows consensus without voting.
    pub fn new(
        config: BftConfig,
        key: Option<SecretKey>,
        persisted: PersistedBftState,
    ) -> BftEngine {
        BftEngine {
            config,
            key,
            committee: None,
            status: Status::Idle,
            height: Height(0),
            parent: BlockHash::default(),
            view: 0,
            propose_at_ms: None,
            schedule: None,
            deadline_ms: None,
            consecutive_timeouts: 0,
            last_signed: persisted.last_signed,
            prepared: persisted.prepared,
            proposals: BTreeMap::new(),
            blocks: BTreeMap::new(),
            validated_blocks: BTreeSet::new(),
            own_prepares: BTreeMap::new(),
            prepares: BTreeMap::new(),
            commits: BTreeMap::new(),
            view_changes: BTreeMap::new(),
            seen: BTreeMap::new(),
            reported: BTreeSet::new(),
            led: BTreeSet::new(),
            awaiting_contents: None,
            future: VecDeque::new(),
            waited_in_view: false,
        }
    }

    /// The height being decided (or just decided).
    pub fn height(&self) -> Height {
        self.height
    }

    /// The current view.
    pub fn view(&self) -> u32 {
        self.view
    }

    /// A block held for the current height (proposed, or carried by a prepared certificate).
    pub fn block(&self, hash: &BlockHash) -> Option<&Block> {
        self.blocks.get(hash)
    }

    /// Whether the current height is decided.
    pub fn is_decided(&self) -> bool {
        self.status == Status::Decided
    }

    /// The state a restart would resume from (what the last `Persist` effect carried).
    pub fn persisted_state(&self) -> PersistedBftState {
        PersistedBftState {
            last_signed: self.last_signed,
            prepared: self.prepared.clone(),
        }
    }

    /// When the engine next needs a [`BftInput::Tick`].
    pub fn next_tick_ms(&self) -> Option<u64> {
        match (self.propose_at_ms, self.deadline_ms) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The view timeout now: the base doubled per consecutive timeout, capped.
    pub fn current_timeout_ms(&self) -> u64 {
        let doublings = self.consecutive_timeouts.min(MAX_TIMEOUT_DOUBLINGS);
        self.config
            .base_timeout_ms
            .saturating_mul(1u64 << doublings)
            .min(self.config.max_timeout_ms)
    }

    /// How many vote and view-change records are held (for memory-bound tests).
    pub fn held_records(&self) -> usize {
        let votes: usize = self
            .prepares
            .values()
            .chain(self.commits.values())
            .map(BTreeMap::len)
            .sum();
        votes + self.view_changes.values().map(BTreeMap::len).sum::<usize>() + self.seen.len()
    }

    /// Processes one input. `Err` means the input was rejected and changed nothing;
    /// [`ConsensusError::is_peer_fault`] says whether to penalise its sender.
    pub fn handle(&mut self, input: BftInput) -> Result<Vec<BftEffect>, ConsensusError> {
        let mut effects = Vec::new();
        let result = match input {
            BftInput::StartHeight {
                height,
                parent,
                committee,
                now_ms,
            } => self.start_height(height, parent, committee, now_ms, &mut effects),
            BftInput::Tick { now_ms } => self.tick(now_ms, &mut effects),
            BftInput::Message { message, now_ms } => self.on_message(message, now_ms, &mut effects),
            BftInput::BlockContents {
                height,
                view,
                block,
                now_ms,
            } => self.on_block_contents(height, view, block, now_ms, &mut effects),
            BftInput::BlockValidated {
                height,
                view,
                block_hash,
                valid,
                now_ms,
            } => self.on_block_validated(height, view, block_hash, valid, now_ms, &mut effects),
        };
        self.check_invariants();
        result.map(|()| effects)
    }

    fn committee(&self) -> &Committee {
        self.committee
            .as_ref()
            .expect("a committee is set once a height has started")
    }

    /// Our node key, if we are a member of the current committee.
    fn voter(&self) -> Option<PublicKey> {
        let key = self.key.as_ref()?.public_key();
        self.committee
            .as_ref()?
            .member(&key)
            .map(|member| member.node_key)
    }

    fn start_height(
        &mut self,
        height: Height,
        parent: BlockHash,
        committee: Committee,
        now_ms: u64,
        effects: &mut Vec<BftEffect>,
    ) -> Result<(), ConsensusError> {
        if self.status != Status::Idle && height <= self.height {
            return Err(ConsensusError::OutOfOrder(
                "StartHeight must move to a later height",
            ));
        }
        self.committee = Some(committee);
        self.status = Status::Running;
        self.height = height;
        self.parent = parent;
        self.consecutive_timeouts = 0;
        self.proposals.clear();
        self.blocks.clear();
        self.validated_blocks.clear();
        self.own_prepares.clear();
        self.prepares.clear();
        self.commits.clear();
        self.view_changes.clear();
        self.seen.clear();
        self.reported.clear();
        self.led.clear();
        self.awaiting_contents = None;
        if self
            .prepared
            .as_ref()
            .is_some_and(|proof| proof.certificate.height != height)
        {
            self.prepared = None;
        }
        // A restarted node resumes in the view it last signed in, so its timers and its
        // signing guard agree.
        let resumed = self
            .last_signed
            .filter(|signed| signed.slot.height == height);
        let view = resumed.map_or(0, |signed| signed.slot.view);
        self.view = view;
        self.waited_in_view = false;
        self.arm_timers(now_ms, effects);
        if let Some(proof) = &self.prepared {
            self.blocks
                .insert(proof.certificate.block_hash, proof.block.clone());
            self.validated_blocks.insert(proof.certificate.block_hash);
        }
        if resumed.is_some_and(|signed| signed.slot.phase == Phase::ViewChange) {
            // The view change may never have left before the crash; re-sending the identical
            // statement is safe and keeps the view change alive.
            self.send_view_change(view, effects)?;
        }
        let buffered: Vec<BftMessage> = self.future.drain(..).collect();
        for message in buffered {
            if message.height() == height {
                // Stale or invalid buffered messages are dropped as they would have been live.
                let _ = self.on_message(message, now_ms, effects);
            } else if message.height() > height {
                self.future.push_back(message);
            }
        }
        Ok(())
    }

    /// Sets the proposal and timeout timers for the current view, which just started.
    fn arm_timers(&mut self, now_ms: u64, effects: &mut Vec<BftEffect>) {
        let timeout = self.current_timeout_ms();
        if self.view == 0 {
            // Counted from the previous height's proposal time, not from this height's start:
            // otherwise every round's own latency (proposal to commit, block application) is
            // added to the interval, and under load blocks came at 0.85 per interval. Never
            // before now (a slow height is not made up for with a burst), never later than a
            // whole interval from now.
            let interval = self.config.block_interval_ms;
            let latest = now_ms.saturating_add(interval);
            let propose_at = self
                .schedule
                .filter(|(height, _)| height.checked_next() == Some(self.height))
                .map_or(latest, |(_, previous)| {
                    previous.saturating_add(interval).clamp(now_ms, latest)
                });
            self.schedule = Some((self.height, propose_at));
            let leads = self
                .voter()
                .is_some_and(|voter| self.committee().leader(self.height, 0).node_key == voter);
            self.propose_at_ms = leads.then_some(propose_at);
            self.deadline_ms = Some(propose_at.saturating_add(timeout));
        } else {
            self.propose_at_ms = None;
            self.deadline_ms = Some(now_ms.saturating_add(timeout));
        }
        if let Some(at_ms) = self.next_tick_ms() {
            effects.push(BftEffect::ScheduleTick { at_ms });
        }
    }

    /// Moves to `view` (> the current one) and drops state no longer needed.
    fn enter_view(&mut self, view: u32, now_ms: u64, effects: &mut Vec<BftEffect>) {
        debug_assert!(view > self.view);
        self.view = view;
        self.waited_in_view = false;
        self.awaiting_contents = None;
        let oldest_kept = view.saturating_sub(MAX_VIEWS_BEHIND);
        self.proposals
            .retain(|&proposal_view, _| proposal_view >= view);
        self.prepares.retain(|&(vote_view, _), _| vote_view >= view);
        self.commits
            .retain(|&(vote_view, _), _| vote_view >= oldest_kept);
        self.view_changes
            .retain(|&change_view, _| change_view >= view);
        self.seen.retain(|&(_, seen_view, phase), _| {
            seen_view >= view || (phase == Phase::Commit && seen_view >= oldest_kept)
        });
        self.reported
            .retain(|&(_, seen_view, _)| seen_view >= oldest_kept);
        self.led.retain(|&led_view| led_view >= view);
        // Keep only blocks something still refers to, so a long run of failed views cannot
        // exhaust the per-height block budget.
        let mut wanted: BTreeSet<BlockHash> = self
            .proposals
            .values()
            .map(|pending| pending.hash)
            .collect();
        wanted.extend(
            self.prepared
                .as_ref()
                .map(|proof| proof.certificate.block_hash),
        );
        wanted.extend(self.commits.keys().map(|(_, hash)| *hash));
        while self.own_prepares.len() > MAX_VIEWS_BEHIND as usize {
            self.own_prepares.pop_first();
        }
        wanted.extend(self.own_prepares.values().copied());
        wanted.extend(
            self.view_changes
                .values()
                .flat_map(|changes| changes.values())
                .filter_map(|(change, _)| change.prepared.map(|(_, hash)| hash)),
        );
        self.blocks.retain(|hash, _| wanted.contains(hash));
        let blocks = &self.blocks;
        self.validated_blocks
            .retain(|hash| blocks.contains_key(hash));
        self.arm_timers(now_ms, effects);
    }

    fn tick(&mut self, now_ms: u64, effects: &mut Vec<BftEffect>) -> Result<(), ConsensusError> {
        if self.status != Status::Running {
            return Ok(());
        }
        if self.propose_at_ms.is_some_and(|at| now_ms >= at) {
            self.propose_at_ms = None;
            if self.view == 0 && self.led.insert(0) {
                self.awaiting_contents = Some(0);
                effects.push(BftEffect::RequestBlockContents {
                    height: self.height,
                    view: 0,
                    parent: self.parent,
                });
            }
        }
        if self.deadline_ms.is_some_and(|at| now_ms >= at) {
            if !self.view_started() && !self.waited_in_view {
                // A view v > 0 that has not started (no view changes from the quorum, no
                // proposal) gets one extra timeout before we leave it. A node that timed out
                // alone used to move one view ahead per timeout, at the others' pace, and —
                // being at most f weight — never pulled them up, so with f silent members the
                // height stalled for good. Waiting halves its pace and the others catch up.
                // (PBFT waits for the quorum indefinitely; we do not, because view changes
                // received before a restart are not persisted, so a restarted node might
                // never see a quorum for its current view again.) Meanwhile we repeat our
                // identical view change.
                self.waited_in_view = true;
                self.consecutive_timeouts = self.consecutive_timeouts.saturating_add(1);
                self.send_view_change(self.view, effects)?;
                self.deadline_ms = Some(now_ms.saturating_add(self.current_timeout_ms()));
                if let Some(at_ms) = self.next_tick_ms() {
                    effects.push(BftEffect::ScheduleTick { at_ms });
                }
                return Ok(());
            }
            let next = self
                .view
                .checked_add(1)
                .ok_or(ConsensusError::OutOfOrder("view number exhausted"))?;
            self.consecutive_timeouts = self.consecutive_timeouts.saturating_add(1);
            self.send_view_change(next, effects)?;
            self.enter_view(next, now_ms, effects);
            self.try_lead(effects)?;
        }
        Ok(())
    }

    /// Whether the current view has started: view 0 always; a later view once view changes
    /// for it from the quorum weight are held, or a proposal for it (which carries them).
    fn view_started(&self) -> bool {
        if self.view == 0 || self.proposals.contains_key(&self.view) {
            return true;
        }
        // Having prepared or committed in this view (before a restart, say) means a proposal
        // with a quorum's justification was seen.
        if self.last_signed.is_some_and(|signed| {
            signed.slot.height == self.height
                && signed.slot.view == self.view
                && signed.slot.phase > Phase::ViewChange
        }) {
            return true;
        }
        let weight: u64 = self.view_changes.get(&self.view).map_or(0, |changes| {
            changes
                .keys()
                .map(|key| self.committee().weight_of(key).0)
                .sum()
        });
        self.committee().is_quorum(Weight(weight))
    }

    /// Signs `digest` for `slot` if the guard allows it, recording it as the last signed.
    fn sign(&mut self, slot: Slot, digest: Hash32) -> Result<Signature, ConsensusError> {
        if !may_sign(self.last_signed.as_ref(), slot, &digest) {
            let signed = self.last_signed.map_or(slot, |signed| signed.slot);
            return Err(ConsensusError::WouldEquivocate {
                wanted: slot,
                digest,
                signed,
            });
        }
        let key = self
            .key
            .as_ref()
            .ok_or(ConsensusError::OutOfOrder("signing without a key"))?;
        let message =
            statement_message(self.config.network, self.committee().epoch(), slot, &digest);
        let signature = key.sign(&message);
        self.last_signed = Some(SignedSlot { slot, digest });
        Ok(signature)
    }

    fn send_view_change(
        &mut self,
        view: u32,
        effects: &mut Vec<BftEffect>,
    ) -> Result<(), ConsensusError> {
        let Some(voter) = self.voter() else {
            return Ok(());
        };
        let claim = self
            .prepared
            .as_ref()
            .map(|proof| (proof.certificate.view, proof.certificate.block_hash));
        let slot = Slot {
            height: self.height,
            view,
            phase: Phase::ViewChange,
        };
        // Refused only after a restart that already signed further in this height; the earlier
        // statement stands and must not be contradicted.
        let Ok(signature) = self.sign(slot, view_change_digest(claim)) else {
            return Ok(());
        };
        let view_change = ViewChange {
            height: self.height,
            view,
            prepared: claim,
            voter,
            signature,
        };
        let certificate = self
            .prepared
            .as_ref()
            .map(|proof| proof.certificate.clone());
        effects.push(BftEffect::Persist(self.persisted_state()));
        effects.push(BftEffect::Broadcast(BftMessage::ViewChange(Box::new(
            ViewChangeMessage {
                view_change,
                certificate: certificate.clone(),
                block: self.prepared.as_ref().map(|proof| proof.block.clone()),
            },
        ))));
        self.view_changes
            .entry(view)
            .or_default()
            .insert(voter, (view_change, certificate));
        Ok(())
    }

    /// If we lead the current view (> 0) and hold view changes from the quorum, proposes the
    /// block of the highest prepared certificate among them, or asks for a new block.
    fn try_lead(&mut self, effects: &mut Vec<BftEffect>) -> Result<(), ConsensusError> {
        let view = self.view;
        if self.status != Status::Running || view == 0 || self.led.contains(&view) {
            return Ok(());
        }
        let Some(voter) = self.voter() else {
            return Ok(());
        };
        if self.committee().leader(self.height, view).node_key != voter {
            return Ok(());
        }
        let Some(changes) = self.view_changes.get(&view) else {
            return Ok(());
        };
        let weight: u64 = changes
            .keys()
            .map(|key| self.committee().weight_of(key).0)
            .sum();
        if !self.committee().is_quorum(Weight(weight)) {
            return Ok(());
        }
        let highest = changes
            .values()
            .filter_map(|(change, certificate)| Some((change.prepared?, certificate.clone()?)))
            .max_by_key(|((prepared_view, _), _)| *prepared_view);
        match highest {
            Some(((_, block_hash), certificate)) => {
                // Without the block we cannot re-propose; a later view change may bring it,
                // or the view times out.
                let Some(block) = self.blocks.get(&block_hash).cloned() else {
                    return Ok(());
                };
                self.led.insert(view);
                self.propose(block, Some(certificate), effects)
            }
            None => {
                self.led.insert(view);
                self.awaiting_contents = Some(view);
                effects.push(BftEffect::RequestBlockContents {
                    height: self.height,
                    view,
                    parent: self.parent,
                });
                Ok(())
            }
        }
    }

    fn propose(
        &mut self,
        block: Block,
        certificate: Option<PreparedCertificate>,
        effects: &mut Vec<BftEffect>,
    ) -> Result<(), ConsensusError> {
        let view = self.view;
        let hash = block.hash();
        let slot = Slot {
            height: self.height,
            view,
            phase: Phase::Proposal,
        };
        // Refused only after a restart that already proposed or prepared in this view: the
        // earlier proposal stands.
        let Ok(signature) = self.sign(slot, hash.0) else {
            return Ok(());
        };
        let justification = if view == 0 {
            BoundedVec::empty()
        } else {
            // A fresh block was chosen because the quorum's changes carried no claim; one with
            // a claim may have arrived while the node built the block (the simulator found it).
            // It must stay out, or the proposal names a claim without its certificate. The
            // claim-free changes still weigh a quorum: a member's change is never replaced.
            let fresh = certificate.is_none();
            let changes = self.view_changes.get(&view).map(|changes| {
                changes
                    .values()
                    .filter(|(change, _)| !fresh || change.prepared.is_none())
                    .map(|(change, _)| *change)
                    .collect()
            });
            BoundedVec::new(changes.unwrap_or_default()).expect("one view change per member")
        };
        let proposal = Proposal {
            height: self.height,
            view,
            block: block.clone(),
            justification,
            certificate,
            signature,
        };
        effects.push(BftEffect::Persist(self.persisted_state()));
        effects.push(BftEffect::Broadcast(BftMessage::Proposal(Box::new(
            proposal,
        ))));
        self.blocks.insert(hash, block.clone());
        self.validated_blocks.insert(hash);
        self.proposals.insert(
            view,
            PendingProposal {
                block,
                hash,
                validated: true,
            },
        );
        self.try_prepare(view, effects)
    }

    fn on_block_contents(
        &mut self,
        height: Height,
        view: u32,
        block: Block,
        _now_ms: u64,
        effects: &mut Vec<BftEffect>,
    ) -> Result<(), ConsensusError> {
        if self.status != Status::Running
            || height != self.height
            || self.awaiting_contents != Some(view)
            || view != self.view
        {
            // The view moved on while the node built the block: too late to propose it.
            return Ok(());
        }
        let own = self
            .voter()
            .ok_or(ConsensusError::OutOfOrder("block contents without a key"))?;
        self.check_block(&block, Some(own))?;
        self.awaiting_contents = None;
        self.propose(block, None, effects)
    }

    fn on_block_validated(
        &mut self,
        height: Height,
        view: u32,
        block_hash: BlockHash,
        valid: bool,
        _now_ms: u64,
        effects: &mut Vec<BftEffect>,
    ) -> Result<(), ConsensusError> {
        if self.status != Status::Running || height != self.height {
            return Ok(());
        }
        let Some(pending) = self.proposals.get_mut(&view) else {
            return Ok(());
        };
        if pending.hash != block_hash || !valid {
            // An invalid block is simply not prepared; the view will time out.
            return Ok(());
        }
        pending.validated = true;
        self.validated_blocks.insert(block_hash);
        self.try_prepare(view, effects)
    }

    /// Checks that a proposed block extends our chain at this height. `proposer` is the key the
    /// header must name (not checked for a re-proposed, already prepared block).
    fn check_block(
        &self,
        block: &Block,
        proposer: Option<PublicKey>,
    ) -> Result<(), ConsensusError> {
        let header = &block.header;
        if header.height != self.height {
            return Err(ConsensusError::InvalidProposal(
                "block height is not the height being decided",
            ));
        }
        if header.previous_hash != self.parent {
            return Err(ConsensusError::InvalidProposal(
                "block does not extend our parent",
            ));
        }
        if header.epoch != self.committee().epoch() {
            return Err(ConsensusError::InvalidProposal("block names another epoch"));
        }
        if proposer.is_some_and(|proposer| header.proposer != proposer) {
            return Err(ConsensusError::InvalidProposal(
                "block header names another proposer",
            ));
        }
        if header.transactions_root != block.compute_transactions_root() {
            return Err(ConsensusError::InvalidProposal(
                "transactions root does not match",
            ));
        }
        Ok(())
    }

    fn on_message(
        &mut self,
        message: BftMessage,
        now_ms: u64,
        effects: &mut Vec<BftEffect>,
    ) -> Result<(), ConsensusError> {
        if self.status == Status::Idle {
            return Err(ConsensusError::OutOfOrder("no height started"));
        }
        let height = message.height();
        if height != self.height {
            if Some(height) == self.height.checked_next() {
                if self.future.len() >= MAX_FUTURE_MESSAGES {
                    return Err(ConsensusError::Full {
                        what: "next-height messages",
                        limit: MAX_FUTURE_MESSAGES,
                    });
                }
                self.future.push_back(message);
                return Ok(());
            }
            return Err(ConsensusError::WrongHeight {
                expected: self.height,
                got: height,
            });
        }
        if self.status == Status::Decided {
            return Ok(());
        }
        let view = message.view();
        let lowest = match message {
            BftMessage::Commit(_) => self.view.saturating_sub(MAX_VIEWS_BEHIND),
            _ => self.view,
        };
        if view < lowest || view > self.view.saturating_add(MAX_VIEWS_AHEAD) {
            return Err(ConsensusError::ViewOutOfWindow {
                current: self.view,
                got: view,
            });
        }
        match message {
            BftMessage::Proposal(proposal) => self.on_proposal(*proposal, now_ms, effects),
            BftMessage::Prepare(vote) => self.on_vote(Phase::Prepare, vote, effects),
            BftMessage::Commit(vote) => self.on_vote(Phase::Commit, vote, effects),
            BftMessage::ViewChange(change) => self.on_view_change(*change, now_ms, effects),
        }
    }

    /// Whether this exact statement was already accepted (so the message is a harmless
    /// duplicate and its signature need not be checked again).
    fn is_duplicate(&self, signer: PublicKey, view: u32, phase: Phase, digest: &Hash32) -> bool {
        self.seen
            .get(&(signer, view, phase))
            .is_some_and(|(seen, _)| seen == digest)
    }

    /// Records a verified statement. Returns `false` (and emits evidence once) if the signer
    /// already signed a different digest in this slot.
    fn record_statement(
        &mut self,
        signer: PublicKey,
        view: u32,
        phase: Phase,
        digest: Hash32,
        signature: Signature,
        effects: &mut Vec<BftEffect>,
    ) -> bool {
        let key = (signer, view, phase);
        match self.seen.get(&key) {
            None => {
                self.seen.insert(key, (digest, signature));
                true
            }
            Some(&(first, _)) if first == digest => true,
            Some(&first) => {
                if self.reported.insert(key) {
                    effects.push(BftEffect::Evidence(Evidence::ConflictingStatements {
                        signer,
                        epoch: self.committee().epoch(),
                        slot: Slot {
                            height: self.height,
                            view,
                            phase,
                        },
                        first,
                        second: (digest, signature),
                    }));
                }
                false
            }
        }
    }

    fn verify_statement(
        &self,
        signer: &PublicKey,
        slot: Slot,
        digest: &Hash32,
        signature: &Signature,
    ) -> Result<(), ConsensusError> {
        let message =
            statement_message(self.config.network, self.committee().epoch(), slot, digest);
        signer
            .verify(&message, signature)
            .map_err(|_| ConsensusError::BadSignature(*signer))
    }

    fn on_vote(
        &mut self,
        phase: Phase,
        vote: Vote,
        effects: &mut Vec<BftEffect>,
    ) -> Result<(), ConsensusError> {
        if self.committee().member(&vote.voter).is_none() {
            return Err(ConsensusError::NotAMember(vote.voter));
        }
        let digest = vote.block_hash.0;
        if self.is_duplicate(vote.voter, vote.view, phase, &digest) {
            return Ok(());
        }
        let slot = Slot {
            height: vote.height,
            view: vote.view,
            phase,
        };
        self.verify_statement(&vote.voter, slot, &digest, &vote.signature)?;
        if !self.record_statement(
            vote.voter,
            vote.view,
            phase,
            digest,
            vote.signature,
            effects,
        ) {
            return Ok(());
        }
        let votes = if phase == Phase::Prepare {
            &mut self.prepares
        } else {
            &mut self.commits
        };
        votes
            .entry((vote.view, vote.block_hash))
            .or_default()
            .insert(vote.voter, vote.signature);
        if phase == Phase::Prepare {
            self.try_commit(vote.view, vote.block_hash, effects)
        } else {
            self.try_decide(vote.view, vote.block_hash, effects);
            Ok(())
        }
    }

    fn on_proposal(
        &mut self,
        proposal: Proposal,
        now_ms: u64,
        effects: &mut Vec<BftEffect>,
    ) -> Result<(), ConsensusError> {
        let view = proposal.view;
        let leader = self.committee().leader(self.height, view).node_key;
        let hash = proposal.block.hash();
        if self.is_duplicate(leader, view, Phase::Proposal, &hash.0) {
            return Ok(());
        }
        let slot = Slot {
            height: self.height,
            view,
            phase: Phase::Proposal,
        };
        self.verify_statement(&leader, slot, &hash.0, &proposal.signature)
            .map_err(|_| ConsensusError::WrongLeader { view })?;
        if !self.record_statement(
            leader,
            view,
            Phase::Proposal,
            hash.0,
            proposal.signature,
            effects,
        ) {
            return Ok(());
        }
        let fresh_block = self.check_justification(&proposal, hash)?;
        self.check_block(&proposal.block, fresh_block.then_some(leader))?;
        if !self.blocks.contains_key(&hash) && self.blocks.len() >= MAX_BLOCKS_PER_HEIGHT {
            return Err(ConsensusError::Full {
                what: "blocks at this height",
                limit: MAX_BLOCKS_PER_HEIGHT,
            });
        }
        if view > self.view {
            // The justification proves the quorum moved to this view: follow it.
            self.enter_view(view, now_ms, effects);
        }
        let validated = self.validated_blocks.contains(&hash);
        self.blocks.insert(hash, proposal.block.clone());
        self.proposals.insert(
            view,
            PendingProposal {
                block: proposal.block.clone(),
                hash,
                validated,
            },
        );
        if validated {
            self.try_prepare(view, effects)
        } else {
            effects.push(BftEffect::ValidateBlock {
                height: self.height,
                view,
                block: proposal.block,
            });
            Ok(())
        }
    }

    /// Checks a proposal's new-view justification. Returns whether the block is fresh (no
    /// prepared certificate constrains it), in which case the leader must be its proposer.
    fn check_justification(
        &self,
        proposal: &Proposal,
        hash: BlockHash,
    ) -> Result<bool, ConsensusError> {
        let committee = self.committee();
        if proposal.view == 0 {
            if !proposal.justification.is_empty() || proposal.certificate.is_some() {
                return Err(ConsensusError::InvalidViewChange(
                    "view 0 proposal carries a justification",
                ));
            }
            return Ok(true);
        }
        let mut weight = 0u64;
        let mut batch = timecoin_primitives::keys::BatchVerifier::new();
        let mut messages = Vec::with_capacity(proposal.justification.len());
        let mut highest: Option<u32> = None;
        for (position, change) in proposal.justification.iter().enumerate() {
            if position > 0 && proposal.justification[position - 1].voter >= change.voter {
                return Err(ConsensusError::UnsortedVoters);
            }
            if change.height != self.height || change.view != proposal.view {
                return Err(ConsensusError::InvalidViewChange(
                    "justification for another height or view",
                ));
            }
            if let Some((prepared_view, _)) = change.prepared {
                if prepared_view >= change.view {
                    return Err(ConsensusError::InvalidViewChange(
                        "claim is not from an earlier view",
                    ));
                }
                highest = highest.max(Some(prepared_view));
            }
            let member = committee
                .member(&change.voter)
                .ok_or(ConsensusError::NotAMember(change.voter))?;
            weight += member.weight.0;
            let slot = Slot {
                height: change.height,
                view: change.view,
                phase: Phase::ViewChange,
            };
            messages.push(statement_message(
                self.config.network,
                committee.epoch(),
                slot,
                &view_change_digest(change.prepared),
            ));
        }
        if !committee.is_quorum(Weight(weight)) {
            return Err(ConsensusError::InsufficientWeight {
                have: weight,
                need: committee.quorum_weight().0,
            });
        }
        for (change, message) in proposal.justification.iter().zip(&messages) {
            batch.queue(&change.voter, message, &change.signature);
        }
        batch
            .verify()
            .map_err(|_| ConsensusError::BadSignatureSet)?;
        match (highest, &proposal.certificate) {
            (None, None) => Ok(true),
            (None, Some(_)) => Err(ConsensusError::InvalidViewChange(
                "certificate without a claim",
            )),
            (Some(_), None) => Err(ConsensusError::InvalidViewChange(
                "highest claim has no certificate",
            )),
            (Some(highest), Some(certificate)) => {
                let claimed = proposal.justification.iter().any(|change| {
                    change.prepared == Some((certificate.view, certificate.block_hash))
                });
                if !claimed || certificate.view != highest || certificate.height != self.height {
                    return Err(ConsensusError::InvalidViewChange(
                        "certificate is not the highest claim",
                    ));
                }
                if certificate.block_hash != hash {
                    return Err(ConsensusError::InvalidViewChange(
                        "block is not the highest prepared block",
                    ));
                }
                certificate.verify(committee)?;
                Ok(false)
            }
        }
    }

    fn on_view_change(
        &mut self,
        message: ViewChangeMessage,
        now_ms: u64,
        effects: &mut Vec<BftEffect>,
    ) -> Result<(), ConsensusError> {
        let change = message.view_change;
        if change.view == 0 {
            return Err(ConsensusError::InvalidViewChange(
                "no view change into view 0",
            ));
        }
        if self.committee().member(&change.voter).is_none() {
            return Err(ConsensusError::NotAMember(change.voter));
        }
        let digest = view_change_digest(change.prepared);
        if self.is_duplicate(change.voter, change.view, Phase::ViewChange, &digest) {
            return Ok(());
        }
        let slot = Slot {
            height: change.height,
            view: change.view,
            phase: Phase::ViewChange,
        };
        self.verify_statement(&change.voter, slot, &digest, &change.signature)?;
        let certificate = match change.prepared {
            None => None,
            Some((prepared_view, block_hash)) => {
                if prepared_view >= change.view {
                    return Err(ConsensusError::InvalidViewChange(
                        "claim is not from an earlier view",
                    ));
                }
                let certificate = message
                    .certificate
                    .ok_or(ConsensusError::InvalidViewChange(
                        "claim without its certificate",
                    ))?;
                if certificate.height != change.height
                    || certificate.view != prepared_view
                    || certificate.block_hash != block_hash
                {
                    return Err(ConsensusError::InvalidViewChange(
                        "certificate does not match the claim",
                    ));
                }
                certificate.verify(self.committee())?;
                if let Some(block) = message.block {
                    if block.hash() != block_hash {
                        return Err(ConsensusError::InvalidViewChange(
                            "block does not match the claim",
                        ));
                    }
                    if !self.blocks.contains_key(&block_hash) {
                        if self.blocks.len() >= MAX_BLOCKS_PER_HEIGHT {
                            return Err(ConsensusError::Full {
                                what: "blocks at this height",
                                limit: MAX_BLOCKS_PER_HEIGHT,
                            });
                        }
                        self.blocks.insert(block_hash, block);
                    }
                }
                self.adopt_certificate(&certificate);
                Some(certificate)
            }
        };
        if !self.record_statement(
            change.voter,
            change.view,
            Phase::ViewChange,
            digest,
            change.signature,
            effects,
        ) {
            return Ok(());
        }
        self.view_changes
            .entry(change.view)
            .or_default()
            .insert(change.voter, (change, certificate));
        if change.view > self.view {
            self.maybe_join_view_change(now_ms, effects)?;
        }
        self.try_lead(effects)
    }

    /// Takes a verified prepared certificate that another member claims as our own claim if it
    /// is higher than ours and we validated its block: a faulty member may claim it without
    /// sending the block, and our view changes then carry both to every later leader. Safe:
    /// the certificate proves the quorum prepared the block, whoever collected it.
    fn adopt_certificate(&mut self, certificate: &PreparedCertificate) {
        let hash = certificate.block_hash;
        if certificate.height != self.height
            || certificate.view > self.view
            || !self.validated_blocks.contains(&hash)
            || self
                .prepared
                .as_ref()
                .is_some_and(|proof| proof.certificate.view >= certificate.view)
        {
            return;
        }
        if let Some(block) = self.blocks.get(&hash) {
            self.prepared = Some(PreparedProof {
                certificate: certificate.clone(),
                block: block.clone(),
            });
        }
    }

    /// PBFT's catch-up rule: once view changes to later views come from more than the faulty
    /// weight, at least one honest node has timed out, so join the smallest such view rather
    /// than wait for our own timer.
    fn maybe_join_view_change(
        &mut self,
        now_ms: u64,
        effects: &mut Vec<BftEffect>,
    ) -> Result<(), ConsensusError> {
        let ahead: BTreeSet<PublicKey> = self
            .view_changes
            .range(self.view.saturating_add(1)..)
            .flat_map(|(_, changes)| changes.keys().copied())
            .collect();
        let weight: u64 = ahead
            .iter()
            .map(|key| self.committee().weight_of(key).0)
            .sum();
        if !self.committee().exceeds_faulty(Weight(weight)) {
            return Ok(());
        }
        let Some(&target) = self
            .view_changes
            .range(self.view.saturating_add(1)..)
            .next()
            .map(|(view, _)| view)
        else {
            return Ok(());
        };
        self.consecutive_timeouts = self.consecutive_timeouts.saturating_add(1);
        let already_sent = self.voter().is_some_and(|voter| {
            self.view_changes
                .get(&target)
                .is_some_and(|changes| changes.contains_key(&voter))
        });
        if !already_sent {
            self.send_view_change(target, effects)?;
        }
        self.enter_view(target, now_ms, effects);
        Ok(())
    }

    fn try_prepare(
        &mut self,
        view: u32,
        effects: &mut Vec<BftEffect>,
    ) -> Result<(), ConsensusError> {
        if self.status != Status::Running || view != self.view {
            return Ok(());
        }
        let Some(pending) = self
            .proposals
            .get(&view)
            .filter(|pending| pending.validated)
        else {
            return Ok(());
        };
        let hash = pending.hash;
        if let Some(voter) = self.voter() {
            let slot = Slot {
                height: self.height,
                view,
                phase: Phase::Prepare,
            };
            let already = self.last_signed.is_some_and(|signed| signed.slot >= slot);
            if !already && may_sign(self.last_signed.as_ref(), slot, &hash.0) {
                self.cast_vote(slot, hash, voter, effects)?;
            }
        }
        self.try_commit(view, hash, effects)
    }

    fn weight_of_votes(&self, votes: Option<&BTreeMap<PublicKey, Signature>>) -> Weight {
        Weight(votes.map_or(0, |votes| {
            votes
                .keys()
                .map(|key| self.committee().weight_of(key).0)
                .sum()
        }))
    }

    fn collect_votes(
        votes: &BTreeMap<PublicKey, Signature>,
    ) -> BoundedVec<CommitVote, MAX_COMMITTEE_SIZE> {
        let votes = votes
            .iter()
            .map(|(voter, signature)| CommitVote {
                voter: *voter,
                signature: *signature,
            })
            .collect();
        BoundedVec::new(votes).expect("one vote per committee member")
    }

    /// Once the quorum prepared the block we accepted in this view, records the prepared
    /// certificate and signs a commit.
    fn try_commit(
        &mut self,
        view: u32,
        hash: BlockHash,
        effects: &mut Vec<BftEffect>,
    ) -> Result<(), ConsensusError> {
        if self.status != Status::Running || view != self.view {
            return Ok(());
        }
        let Some(pending) = self
            .proposals
            .get(&view)
            .filter(|pending| pending.validated && pending.hash == hash)
        else {
            return Ok(());
        };
        let block = pending.block.clone();
        let prepares = self.prepares.get(&(view, hash));
        if !self.committee().is_quorum(self.weight_of_votes(prepares)) {
            return Ok(());
        }
        let Some(voter) = self.voter() else {
            self.try_decide(view, hash, effects);
            return Ok(());
        };
        let slot = Slot {
            height: self.height,
            view,
            phase: Phase::Commit,
        };
        if self.last_signed.is_some_and(|signed| signed.slot >= slot)
            || !may_sign(self.last_signed.as_ref(), slot, &hash.0)
        {
            return Ok(());
        }
        let certificate = PreparedCertificate {
            height: self.height,
            view,
            block_hash: hash,
            votes: Self::collect_votes(prepares.expect("quorum implies votes")),
        };
        if self
            .prepared
            .as_ref()
            .is_none_or(|proof| proof.certificate.view < view)
        {
            self.prepared = Some(PreparedProof { certificate, block });
        }
        self.cast_vote(slot, hash, voter, effects)?;
        self.try_decide(view, hash, effects);
        Ok(())
    }

    /// Signs our prepare or commit (`slot.phase`) for `hash`, persists the signing state before
    /// the vote is broadcast, and counts our vote as if it had arrived from the network.
    fn cast_vote(
        &mut self,
        slot: Slot,
        hash: BlockHash,
        voter: PublicKey,
        effects: &mut Vec<BftEffect>,
    ) -> Result<(), ConsensusError> {
        debug_assert!(matches!(slot.phase, Phase::Prepare | Phase::Commit));
        let signature = self.sign(slot, hash.0)?;
        effects.push(BftEffect::Persist(self.persisted_state()));
        let vote = Vote {
            height: self.height,
            view: slot.view,
            block_hash: hash,
            voter,
            signature,
        };
        let (message, tally) = if slot.phase == Phase::Commit {
            (BftMessage::Commit(vote), &mut self.commits)
        } else {
            self.own_prepares.insert(slot.view, hash);
            (BftMessage::Prepare(vote), &mut self.prepares)
        };
        tally
            .entry((slot.view, hash))
            .or_default()
            .insert(voter, signature);
        effects.push(BftEffect::Broadcast(message));
        self.seen
            .insert((voter, slot.view, slot.phase), (hash.0, signature));
        Ok(())
    }

    fn try_decide(&mut self, view: u32, hash: BlockHash, effects: &mut Vec<BftEffect>) {
        if self.status != Status::Running {
            return;
        }
        let Some(commits) = self.commits.get(&(view, hash)) else {
            return;
        };
        if !self
            .committee()
            .is_quorum(self.weight_of_votes(Some(commits)))
        {
            return;
        }
        let certificate = CommitCertificate {
            height: self.height,
            view,
            block_hash: hash,
            votes: Self::collect_votes(commits),
        };
        let block = self.blocks.get(&hash).cloned();
        self.status = Status::Decided;
        self.propose_at_ms = None;
        self.deadline_ms = None;
        self.consecutive_timeouts = 0;
        self.awaiting_contents = None;
        effects.push(BftEffect::Committed { certificate, block });
    }

    /// Asserts the engine's internal consistency. Runs after every step in debug builds (and so
    /// in the simulator); compiled out of release builds.
    pub fn check_invariants(&self) {
        if !cfg!(debug_assertions) {
            return;
        }
        if self.status == Status::Idle {
            return;
        }
        if let Some(signed) = &self.last_signed
            && signed.slot.height == self.height
        {
            assert!(
                signed.slot.view <= self.view,
                "signed in a view we have not entered"
            );
        }
        if let Some(proof) = &self.prepared {
            assert_eq!(proof.certificate.height, self.height);
            assert!(proof.certificate.view <= self.view);
            assert_eq!(proof.block.hash(), proof.certificate.block_hash);
        }
        for (view, pending) in &self.proposals {
            assert!(*view >= self.view && *view <= self.view.saturating_add(MAX_VIEWS_AHEAD));
            assert!(self.blocks.contains_key(&pending.hash));
        }
        for (view, _) in self.prepares.keys() {
            assert!(*view >= self.view && *view <= self.view.saturating_add(MAX_VIEWS_AHEAD));
        }
        for (view, _) in self.commits.keys() {
            assert!(
                view.saturating_add(MAX_VIEWS_BEHIND) >= self.view
                    && *view <= self.view.saturating_add(MAX_VIEWS_AHEAD)
            );
        }
        for view in self.view_changes.keys() {
            assert!(*view >= self.view && *view <= self.view.saturating_add(MAX_VIEWS_AHEAD));
        }
        let committee = self.committee();
        for votes in self.prepares.values().chain(self.commits.values()) {
            assert!(votes.len() <= committee.members().len());
        }
        assert!(self.blocks.len() <= MAX_BLOCKS_PER_HEIGHT);
        assert!(self.validated_blocks.len() <= self.blocks.len());
        assert!(self.led.iter().all(|&led_view| led_view >= self.view));
        assert!(self.future.len() <= MAX_FUTURE_MESSAGES);
        if self.status == Status::Decided {
            assert!(self.deadline_ms.is_none() && self.propose_at_ms.is_none());
        }
    }
}
