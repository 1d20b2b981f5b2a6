//! Block consensus, driven by a tiny deterministic message pump: every node's effects are
//! performed in order, messages are delivered FIFO, and time jumps to the next timer when the
//! network is quiet.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use timecoin_consensus::bft::{BftConfig, PersistedBftState};
use timecoin_consensus::signing::{
    Phase, SignedSlot, Slot, may_sign, statement_message, view_change_digest,
};
use timecoin_consensus::{
    BftEffect, BftEngine, BftInput, BftMessage, Committee, ConsensusError, Evidence, Member,
    PreparedCertificate, Proposal, ViewChange, Vote, Weight, verify_commit_certificate,
};
use timecoin_primitives::block::BLOCK_VERSION;
use timecoin_primitives::{
    Block, BlockHash, BlockHeader, BoundedVec, CommitCertificate, CommitVote, Epoch, Hash32,
    Height, Network, OutPoint, SecretKey, Timestamp, Txid,
};

const NETWORK: Network = Network::Devnet;
const CONFIG: BftConfig = BftConfig {
    network: NETWORK,
    block_interval_ms: 1_000,
    base_timeout_ms: 2_000,
    max_timeout_ms: 60_000,
};

fn secret(index: usize) -> SecretKey {
    SecretKey::from_bytes([index as u8 + 1; 32])
}

fn committee(weights: &[u64]) -> Committee {
    let members = weights
        .iter()
        .enumerate()
        .map(|(index, &weight)| Member {
            node_key: secret(index).public_key(),
            weight: Weight(weight),
            collateral: OutPoint {
                txid: Txid(Hash32([index as u8; 32])),
                index: 0,
            },
        })
        .collect();
    Committee::new(NETWORK, Epoch(3), Hash32([5; 32]), members).unwrap()
}

/// The index of `committee`'s leader of (height, view) among `secret(0..n)`.
fn leader_index(committee: &Committee, height: u64, view: u32, n: usize) -> usize {
    let leader = committee.leader(Height(height), view).node_key;
    (0..n)
        .find(|&index| secret(index).public_key() == leader)
        .unwrap()
}

fn make_block(
    height: Height,
    parent: BlockHash,
    proposer: &SecretKey,
    salt: u8,
    now_ms: u64,
) -> Block {
    let mut block = Block {
        header: BlockHeader {
            version: BLOCK_VERSION,
            height,
            previous_hash: parent,
            timestamp: Timestamp(now_ms),
            epoch: Epoch(3),
            proposer: proposer.public_key(),
            transactions_root: Hash32::ZERO,
            utxo_commitment: Hash32([salt; 32]),
            parent_commit_hash: Hash32::ZERO,
        },
        transactions: BoundedVec::empty(),
        parent_commit: None,
    };
    block.header.transactions_root = block.compute_transactions_root();
    block
}

fn sign_statement(
    key: &SecretKey,
    committee: &Committee,
    slot: Slot,
    digest: &Hash32,
) -> timecoin_primitives::Signature {
    key.sign(&statement_message(NETWORK, committee.epoch(), slot, digest))
}

fn vote(
    key: &SecretKey,
    committee: &Committee,
    phase: Phase,
    height: u64,
    view: u32,
    block_hash: BlockHash,
) -> Vote {
    let slot = Slot {
        height: Height(height),
        view,
        phase,
    };
    Vote {
        height: Height(height),
        view,
        block_hash,
        voter: key.public_key(),
        signature: sign_statement(key, committee, slot, &block_hash.0),
    }
}

fn proposal(key: &SecretKey, committee: &Committee, view: u32, block: Block) -> BftMessage {
    let slot = Slot {
        height: block.header.height,
        view,
        phase: Phase::Proposal,
    };
    let signature = sign_statement(key, committee, slot, &block.hash().0);
    BftMessage::Proposal(Box::new(Proposal {
        height: block.header.height,
        view,
        block,
        justification: BoundedVec::empty(),
        certificate: None,
        signature,
    }))
}

struct Node {
    engine: BftEngine,
    disk: PersistedBftState,
    committed: BTreeMap<Height, (CommitCertificate, Option<Block>)>,
    evidence: Vec<Evidence>,
    /// A crashed or Byzantine node: the pump neither runs nor delivers to its engine.
    silent: bool,
}

type Filter = Box<dyn Fn(usize, usize, &BftMessage) -> bool>;

struct Net {
    committee: Committee,
    /// From this height on, this committee (a later epoch) replaces `committee`.
    next_epoch: Option<(u64, Committee)>,
    nodes: Vec<Node>,
    queue: VecDeque<(usize, usize, BftMessage)>,
    now_ms: u64,
    /// Messages for which this returns false (from, to, message) are dropped.
    filter: Filter,
    peer_faults: Vec<ConsensusError>,
    target_height: u64,
}

impl Net {
    fn new(weights: &[u64]) -> Net {
        let committee = committee(weights);
        let nodes = (0..weights.len())
            .map(|index| Node {
                engine: BftEngine::new(CONFIG, Some(secret(index)), PersistedBftState::default()),
                disk: PersistedBftState::default(),
                committed: BTreeMap::new(),
                evidence: Vec::new(),
                silent: false,
            })
            .collect();
        Net {
            committee,
            next_epoch: None,
            nodes,
            queue: VecDeque::new(),
            now_ms: 0,
            filter: Box::new(|_, _, _| true),
            peer_faults: Vec::new(),
            target_height: 0,
        }
    }

    fn committee_for(&self, height: Height) -> Committee {
        match &self.next_epoch {
            Some((from, next)) if height.0 >= *from => next.clone(),
            _ => self.committee.clone(),
        }
    }

    fn start(&mut self) {
        for index in 0..self.nodes.len() {
            let input = BftInput::StartHeight {
                height: Height(1),
                parent: BlockHash(Hash32([1; 32])),
                committee: self.committee.clone(),
                now_ms: self.now_ms,
            };
            self.input(index, input);
        }
    }

    /// Feeds one input to a node and performs its effects in order, including the node's
    /// answers to block requests, validations and commits.
    fn input(&mut self, index: usize, input: BftInput) {
        if self.nodes[index].silent {
            return;
        }
        let mut inputs = VecDeque::from([input]);
        while let Some(input) = inputs.pop_front() {
            let effects = match self.nodes[index].engine.handle(input) {
                Ok(effects) => effects,
                Err(error) => {
                    if error.is_peer_fault() {
                        self.peer_faults.push(error);
                    }
                    continue;
                }
            };
            for effect in effects {
                match effect {
                    BftEffect::Persist(state) => self.nodes[index].disk = state,
                    BftEffect::Broadcast(message) => {
                        // Persistence before send: the disk already covers what goes out.
                        let phase = match &message {
                            BftMessage::Proposal(_) => Phase::Proposal,
                            BftMessage::Prepare(_) => Phase::Prepare,
                            BftMessage::Commit(_) => Phase::Commit,
                            BftMessage::ViewChange(_) => Phase::ViewChange,
                        };
                        let slot = Slot {
                            height: message.height(),
                            view: message.view(),
                            phase,
                        };
                        let signed = self.nodes[index]
                            .disk
                            .last_signed
                            .expect("persisted before send");
                        assert_eq!(
                            signed.slot, slot,
                            "the persisted slot is the one being sent"
                        );
                        for to in 0..self.nodes.len() {
                            if to != index && (self.filter)(index, to, &message) {
                                self.queue.push_back((index, to, message.clone()));
                            }
                        }
                    }
                    BftEffect::RequestBlockContents {
                        height,
                        view,
                        parent,
                    } => {
                        let mut block =
                            make_block(height, parent, &secret(index), view as u8, self.now_ms);
                        block.header.epoch = self.committee_for(height).epoch();
                        block.header.transactions_root = block.compute_transactions_root();
                        inputs.push_back(BftInput::BlockContents {
                            height,
                            view,
                            block,
                            now_ms: self.now_ms,
                        });
                    }
                    BftEffect::ValidateBlock {
                        height,
                        view,
                        block,
                    } => {
                        inputs.push_back(BftInput::BlockValidated {
                            height,
                            view,
                            block_hash: block.hash(),
                            valid: true,
                            now_ms: self.now_ms,
                        });
                    }
                    BftEffect::Committed { certificate, block } => {
                        let height = certificate.height;
                        let parent = certificate.block_hash;
                        self.nodes[index]
                            .committed
                            .insert(height, (certificate, block));
                        if height.0 < self.target_height {
                            inputs.push_back(BftInput::StartHeight {
                                height: Height(height.0 + 1),
                                parent,
                                committee: self.committee_for(Height(height.0 + 1)),
                                now_ms: self.now_ms,
                            });
                        }
                    }
                    BftEffect::Evidence(evidence) => self.nodes[index].evidence.push(evidence),
                    BftEffect::ScheduleTick { .. } => {}
                }
            }
        }
    }

    fn inject(&mut self, from: usize, to: usize, message: BftMessage) {
        self.queue.push_back((from, to, message));
    }

    /// Runs until every live node committed `target_height` or `deadline_ms` passes.
    fn run(&mut self, target_height: u64, deadline_ms: u64) {
        self.target_height = target_height;
        loop {
            let done = self
                .nodes
                .iter()
                .filter(|node| !node.silent)
                .all(|node| node.committed.contains_key(&Height(target_height)));
            if done || self.now_ms > deadline_ms {
                return;
            }
            if let Some((_, to, message)) = self.queue.pop_front() {
                let now_ms = self.now_ms;
                self.input(to, BftInput::Message { message, now_ms });
                continue;
            }
            let Some(next) = self
                .nodes
                .iter()
                .filter(|node| !node.silent)
                .filter_map(|node| node.engine.next_tick_ms())
                .min()
            else {
                return;
            };
            self.now_ms = self.now_ms.max(next);
            for index in 0..self.nodes.len() {
                if self.nodes[index]
                    .engine
                    .next_tick_ms()
                    .is_some_and(|at| at <= self.now_ms)
                {
                    let now_ms = self.now_ms;
                    self.input(index, BftInput::Tick { now_ms });
                }
            }
        }
    }

    fn live(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|node| !node.silent)
    }

    /// Asserts that live nodes agree on every height they committed and that each
    /// certificate verifies.
    fn assert_agreement(&self) -> BTreeMap<Height, CommitCertificate> {
        let mut decided: BTreeMap<Height, CommitCertificate> = BTreeMap::new();
        for node in self.live() {
            for (height, (certificate, block)) in &node.committed {
                let committee = self.committee_for(*height);
                assert!(verify_commit_certificate(&committee, certificate).is_ok());
                if let Some(block) = block {
                    assert_eq!(block.hash(), certificate.block_hash);
                }
                let first = decided
                    .entry(*height)
                    .or_insert_with(|| certificate.clone());
                assert_eq!(
                    first.block_hash, certificate.block_hash,
                    "two blocks committed at height {height}"
                );
            }
        }
        decided
    }
}

#[test]
fn happy_path_commits_blocks_in_view_zero() {
    let mut net = Net::new(&[1, 1, 1, 1]);
    net.start();
    net.run(5, 60_000);
    assert!(net.peer_faults.is_empty(), "{:?}", net.peer_faults);
    for node in net.live() {
        assert_eq!(node.committed.len(), 5);
        assert!(node.evidence.is_empty());
    }
    let decided = net.assert_agreement();
    // Each block extends the one before, all in view 0, at one block interval per height.
    for (height, certificate) in &decided {
        assert_eq!(certificate.view, 0, "height {height}");
        let (_, block) = &net.nodes[0].committed[height];
        let block = block.as_ref().unwrap();
        if let Some(parent) = decided.get(&Height(height.0 - 1)) {
            assert_eq!(block.header.previous_hash, parent.block_hash);
        }
        assert_eq!(
            block.header.proposer,
            net.committee.leader(*height, 0).node_key
        );
    }
    assert!(net.now_ms <= 5 * CONFIG.block_interval_ms);
}

#[test]
fn view_zero_proposals_keep_one_interval_apart_whatever_a_round_took() {
    let committee = committee(&[1, 1, 1, 1]);
    let interval = CONFIG.block_interval_ms;
    let mut engines: Vec<BftEngine> = (0..4)
        .map(|index| BftEngine::new(CONFIG, Some(secret(index)), PersistedBftState::default()))
        .collect();
    // Starts `height` on every engine at `now_ms`; returns when its view-0 leader will propose
    // (the leader's next timer: its view-0 deadline comes a timeout later).
    let mut start = |height: u64, now_ms: u64| -> u64 {
        for engine in engines.iter_mut() {
            engine
                .handle(BftInput::StartHeight {
                    height: Height(height),
                    parent: BlockHash(Hash32([height as u8; 32])),
                    committee: committee.clone(),
                    now_ms,
                })
                .unwrap();
        }
        let leader = leader_index(&committee, height, 0, 4);
        let at = engines[leader].next_tick_ms().unwrap();
        for (index, engine) in engines.iter().enumerate() {
            if index != leader {
                assert_eq!(engine.next_tick_ms(), Some(at + CONFIG.base_timeout_ms));
            }
        }
        at
    };
    // No previous height: one interval from the start.
    assert_eq!(start(1, 0), interval);
    // The round took 300 ms: the next proposal is still one interval after the last one.
    assert_eq!(start(2, interval + 300), 2 * interval);
    // A height that took far longer (view changes): propose at once, no burst to catch up.
    let late = 2 * interval + 5_000;
    assert_eq!(start(3, late), late);
    assert_eq!(start(4, late + 10), late + interval);
    // A height reached by skipping one (sync) counts from its own start.
    let synced = late + 40_000;
    assert_eq!(start(6, synced), synced + interval);
    // Never more than one interval from the start (a height decided before its own proposal
    // time, as a node that entered it late sees).
    assert_eq!(start(7, synced + 10), synced + 10 + interval);
}

#[test]
fn weighted_committee_needs_quorum_weight_not_quorum_count() {
    // W = 100, quorum 67. Half the members but 70 weight live: blocks commit.
    let mut net = Net::new(&[40, 30, 20, 10]);
    net.nodes[2].silent = true;
    net.nodes[3].silent = true;
    net.start();
    net.run(3, 600_000);
    assert!(net.peer_faults.is_empty(), "{:?}", net.peer_faults);
    let decided = net.assert_agreement();
    assert_eq!(decided.len(), 3);
    for certificate in decided.values() {
        assert_eq!(certificate.votes.len(), 2);
    }
    // Half the members with 60 weight live: nothing commits, however long we wait.
    let mut net = Net::new(&[40, 30, 20, 10]);
    net.nodes[1].silent = true;
    net.nodes[3].silent = true;
    net.start();
    net.run(1, 600_000);
    assert!(net.live().all(|node| node.committed.is_empty()));
    assert!(net.nodes[0].engine.view() >= 3, "kept changing views");
}

#[test]
fn silent_leader_is_replaced_by_a_view_change() {
    let mut net = Net::new(&[1, 1, 1, 1]);
    let leader = leader_index(&net.committee, 1, 0, 4);
    net.nodes[leader].silent = true;
    net.start();
    net.run(1, 600_000);
    assert!(net.peer_faults.is_empty(), "{:?}", net.peer_faults);
    let decided = net.assert_agreement();
    let certificate = &decided[&Height(1)];
    assert!(certificate.view >= 1);
    let (_, block) = &net.live().next().unwrap().committed[&Height(1)];
    assert_eq!(
        block.as_ref().unwrap().header.proposer,
        net.committee.leader(Height(1), certificate.view).node_key
    );
    // Timed out at least once: 1 s interval + 2 s timeout before view 1.
    assert!(net.now_ms >= CONFIG.block_interval_ms + CONFIG.base_timeout_ms);
    // Progress resets the back-off.
    for node in net.live() {
        assert_eq!(node.engine.current_timeout_ms(), CONFIG.base_timeout_ms);
    }
}

#[test]
fn view_change_carries_a_prepared_block_into_the_next_view() {
    // Everyone prepares the view-0 block but no commit vote of view 0 gets through. A block
    // that might have been committed must survive the view change: the view-1 leader has to
    // re-propose exactly it.
    let mut net = Net::new(&[1, 1, 1, 1]);
    net.filter =
        Box::new(|_, _, message| !matches!(message, BftMessage::Commit(vote) if vote.view == 0));
    net.start();
    net.run(1, 600_000);
    assert!(net.peer_faults.is_empty(), "{:?}", net.peer_faults);
    let decided = net.assert_agreement();
    let certificate = &decided[&Height(1)];
    assert!(certificate.view >= 1);
    let (_, block) = &net.nodes[0].committed[&Height(1)];
    let block = block.as_ref().unwrap();
    // Made in view 0 (salt = view) by the view-0 leader, re-proposed later.
    assert_eq!(block.header.utxo_commitment, Hash32([0; 32]));
    assert_eq!(
        block.header.proposer,
        net.committee.leader(Height(1), 0).node_key
    );
}

#[test]
fn timeouts_back_off_exponentially_while_nothing_progresses() {
    let mut net = Net::new(&[1, 1, 1, 1]);
    for index in 1..4 {
        net.nodes[index].silent = true;
    }
    net.start();
    let mut timeouts = Vec::new();
    let mut last_view = net.nodes[0].engine.view();
    for _ in 0..6 {
        let next = net.nodes[0].engine.next_tick_ms().unwrap();
        net.now_ms = next;
        let now_ms = net.now_ms;
        net.input(0, BftInput::Tick { now_ms });
        timeouts.push(net.nodes[0].engine.next_tick_ms().unwrap() - now_ms);
        // Alone, no view after the first ever starts, so each takes two timeouts: a node
        // that timed out alone falls behind no one for good.
        let view = net.nodes[0].engine.view();
        assert!(view <= last_view + 1);
        last_view = view;
    }
    assert_eq!(last_view, 3, "views 1 and 2 took two timeouts each");
    assert_eq!(timeouts[..4], [4_000, 8_000, 16_000, 32_000]);
    assert!(
        timeouts
            .iter()
            .all(|&timeout| timeout <= CONFIG.max_timeout_ms)
    );
    assert!(net.nodes[0].committed.is_empty());
}

/// Feeds `engine` (at height 1) the view-0 proposal of `block` by member `leader`, checks that
/// the engine asks for its validation, and validates it. Returns the effects of the validation.
fn validated_view_zero_proposal(
    engine: &mut BftEngine,
    committee: &Committee,
    leader: usize,
    block: &Block,
    now_ms: u64,
) -> Vec<BftEffect> {
    let effects = engine
        .handle(BftInput::Message {
            message: proposal(&secret(leader), committee, 0, block.clone()),
            now_ms,
        })
        .unwrap();
    assert!(
        matches!(&effects[..], [BftEffect::ValidateBlock { .. }]),
        "{effects:?}"
    );
    engine
        .handle(BftInput::BlockValidated {
            height: Height(1),
            view: 0,
            block_hash: block.hash(),
            valid: true,
            now_ms: now_ms + 1,
        })
        .unwrap()
}

/// A node that prepared block A in view 0, then crashed and restarted, with a second block B
/// (from an equivocating leader) arriving for the same view.
fn restarted_after_preparing() -> (Committee, usize, SecretKey, BftEngine, Block, Block) {
    let committee = committee(&[1, 1, 1, 1]);
    let leader = leader_index(&committee, 1, 0, 4);
    let node = (leader + 1) % 4;
    let parent = BlockHash(Hash32([1; 32]));
    let block_a = make_block(Height(1), parent, &secret(leader), 0xA, 0);
    let block_b = make_block(Height(1), parent, &secret(leader), 0xB, 0);
    let mut engine = engine_at_height_one(node, &committee, parent);
    let effects = validated_view_zero_proposal(&mut engine, &committee, leader, &block_a, 1);
    let [
        BftEffect::Persist(disk),
        BftEffect::Broadcast(BftMessage::Prepare(prepare)),
    ] = &effects[..]
    else {
        panic!("expected persist then prepare, got {effects:?}")
    };
    assert_eq!(prepare.block_hash, block_a.hash());
    // Crash; restart from the disk.
    let mut restarted = BftEngine::new(CONFIG, Some(secret(node)), disk.clone());
    restarted
        .handle(BftInput::StartHeight {
            height: Height(1),
            parent,
            committee: committee.clone(),
            now_ms: 10,
        })
        .unwrap();
    (committee, leader, secret(node), restarted, block_a, block_b)
}

fn broadcasts(effects: &[BftEffect]) -> Vec<&BftMessage> {
    effects
        .iter()
        .filter_map(|effect| match effect {
            BftEffect::Broadcast(message) => Some(message),
            _ => None,
        })
        .collect()
}

#[test]
fn restored_node_refuses_a_conflicting_prepare() {
    let (committee, leader, _, mut engine, _, block_b) = restarted_after_preparing();
    let effects = validated_view_zero_proposal(&mut engine, &committee, leader, &block_b, 11);
    assert!(
        broadcasts(&effects).is_empty(),
        "signed a conflicting prepare: {effects:?}"
    );
}

/// Feeds a restarted engine the leader's view-0 proposal of `block`, its validation, and
/// prepares for it from every other member; returns what the engine broadcast in answer to
/// the prepares.
fn prepares_for(
    engine: &mut BftEngine,
    committee: &Committee,
    leader: usize,
    own: &SecretKey,
    block: &Block,
) -> Vec<BftMessage> {
    validated_view_zero_proposal(engine, committee, leader, block, 11);
    let mut sent = Vec::new();
    for index in (0..4).filter(|&index| secret(index).public_key() != own.public_key()) {
        let prepare = vote(
            &secret(index),
            committee,
            Phase::Prepare,
            1,
            0,
            block.hash(),
        );
        let effects = engine
            .handle(BftInput::Message {
                message: BftMessage::Prepare(prepare),
                now_ms: 13,
            })
            .unwrap();
        sent.extend(broadcasts(&effects).into_iter().cloned());
    }
    sent
}

#[test]
fn restored_node_refuses_a_conflicting_commit_but_commits_what_it_prepared() {
    let (committee, leader, own, mut engine, block_a, block_b) = restarted_after_preparing();
    let sent = prepares_for(&mut engine, &committee, leader, &own, &block_b);
    assert!(
        sent.is_empty(),
        "signed a commit for a block it did not prepare: {sent:?}"
    );

    // The same restarted state does commit the block it did prepare.
    let (committee, leader, own, mut engine, block_a2, _) = restarted_after_preparing();
    assert_eq!(block_a, block_a2);
    let sent = prepares_for(&mut engine, &committee, leader, &own, &block_a);
    assert!(
        matches!(&sent[..], [BftMessage::Commit(commit)] if commit.block_hash == block_a.hash())
    );
    assert!(
        engine
            .persisted_state()
            .prepared
            .is_some_and(|proof| proof.certificate.block_hash == block_a.hash())
    );
}

#[test]
fn signing_guard_rules() {
    let block_a = Hash32([0xA; 32]);
    let block_b = Hash32([0xB; 32]);
    let slot = |height, view, phase| Slot {
        height: Height(height),
        view,
        phase,
    };
    let last = SignedSlot {
        slot: slot(5, 2, Phase::Prepare),
        digest: block_a,
    };
    assert!(may_sign(None, slot(0, 0, Phase::Prepare), &block_a));
    assert!(
        may_sign(Some(&last), slot(5, 2, Phase::Prepare), &block_a),
        "identical re-sign"
    );
    assert!(
        !may_sign(Some(&last), slot(5, 2, Phase::Prepare), &block_b),
        "conflicting prepare"
    );
    assert!(
        !may_sign(Some(&last), slot(5, 2, Phase::Commit), &block_b),
        "commit for another block"
    );
    assert!(may_sign(Some(&last), slot(5, 2, Phase::Commit), &block_a));
    assert!(
        !may_sign(Some(&last), slot(5, 2, Phase::Proposal), &block_a),
        "going back a phase"
    );
    assert!(
        !may_sign(Some(&last), slot(5, 1, Phase::Commit), &block_a),
        "going back a view"
    );
    assert!(
        !may_sign(Some(&last), slot(4, 9, Phase::Commit), &block_a),
        "going back a height"
    );
    assert!(may_sign(
        Some(&last),
        slot(5, 3, Phase::ViewChange),
        &block_b
    ));
    assert!(
        may_sign(Some(&last), slot(5, 3, Phase::Prepare), &block_b),
        "new view, new block"
    );
    assert!(may_sign(Some(&last), slot(6, 0, Phase::Prepare), &block_b));
}

#[test]
fn byzantine_leader_equivocation_yields_evidence_and_a_single_block() {
    let mut net = Net::new(&[1, 1, 1, 1]);
    let leader = leader_index(&net.committee, 1, 0, 4);
    net.nodes[leader].silent = true;
    net.start();
    let parent = BlockHash(Hash32([1; 32]));
    let key = secret(leader);
    let block_a = make_block(Height(1), parent, &key, 0xA, 0);
    let block_b = make_block(Height(1), parent, &key, 0xB, 0);
    let honest: Vec<usize> = (0..4).filter(|&index| index != leader).collect();
    // A to the first two honest nodes, B to the third; the first also hears B. The leader also
    // prepares and commits both blocks to everyone.
    net.inject(
        leader,
        honest[0],
        proposal(&key, &net.committee, 0, block_a.clone()),
    );
    net.inject(
        leader,
        honest[1],
        proposal(&key, &net.committee, 0, block_a.clone()),
    );
    net.inject(
        leader,
        honest[2],
        proposal(&key, &net.committee, 0, block_b.clone()),
    );
    net.inject(
        leader,
        honest[0],
        proposal(&key, &net.committee, 0, block_b.clone()),
    );
    for &to in &honest {
        for block in [&block_a, &block_b] {
            for phase in [Phase::Prepare, Phase::Commit] {
                let signed = vote(&key, &net.committee, phase, 1, 0, block.hash());
                let message = if phase == Phase::Prepare {
                    BftMessage::Prepare(signed)
                } else {
                    BftMessage::Commit(signed)
                };
                net.inject(leader, to, message);
            }
        }
    }
    net.run(1, 600_000);
    let decided = net.assert_agreement();
    assert!(decided.contains_key(&Height(1)));
    assert!(
        net.live()
            .all(|node| node.committed.contains_key(&Height(1)))
    );
    let evidence: Vec<&Evidence> = net.live().flat_map(|node| &node.evidence).collect();
    assert!(evidence.iter().any(|e| matches!(e, Evidence::ConflictingStatements { slot, .. } if slot.phase == Phase::Proposal)));
    assert!(evidence.iter().any(|e| matches!(e, Evidence::ConflictingStatements { slot, .. } if slot.phase == Phase::Prepare)));
    for item in &evidence {
        assert_eq!(item.offender(), key.public_key());
        assert_eq!(item.verify(&net.committee), Ok(()));
    }
}

fn certificate_from(
    keys: &[usize],
    committee: &Committee,
    block_hash: BlockHash,
) -> CommitCertificate {
    let mut votes: Vec<CommitVote> = keys
        .iter()
        .map(|&index| {
            let signed = vote(&secret(index), committee, Phase::Commit, 1, 0, block_hash);
            CommitVote {
                voter: signed.voter,
                signature: signed.signature,
            }
        })
        .collect();
    votes.sort_by_key(|vote| vote.voter);
    CommitCertificate {
        height: Height(1),
        view: 0,
        block_hash,
        votes: BoundedVec::new(votes).unwrap(),
    }
}

#[test]
fn commit_certificate_verification() {
    let committee = committee(&[1, 1, 1, 1]);
    let block = BlockHash(Hash32([0xA; 32]));
    let good = certificate_from(&[0, 1, 2], &committee, block);
    assert_eq!(verify_commit_certificate(&committee, &good), Ok(Weight(3)));

    let mut forged = good.clone();
    let mut votes = forged.votes.clone().into_inner();
    votes[2].signature.0[9] ^= 1;
    forged.votes = BoundedVec::new(votes).unwrap();
    assert_eq!(
        verify_commit_certificate(&committee, &forged),
        Err(ConsensusError::BadSignatureSet)
    );

    let short = certificate_from(&[0, 1], &committee, block);
    assert!(matches!(
        verify_commit_certificate(&committee, &short),
        Err(ConsensusError::InsufficientWeight { have: 2, need: 3 })
    ));

    let mut doubled = good.votes.clone().into_inner();
    doubled[1] = doubled[0];
    let duplicate = CommitCertificate {
        votes: BoundedVec::new(doubled).unwrap(),
        ..good.clone()
    };
    assert_eq!(
        verify_commit_certificate(&committee, &duplicate),
        Err(ConsensusError::UnsortedVoters)
    );

    let moved = CommitCertificate {
        view: 1,
        ..good.clone()
    };
    assert_eq!(
        verify_commit_certificate(&committee, &moved),
        Err(ConsensusError::BadSignatureSet)
    );

    // The same keys as the committee of another epoch: signatures name epoch 3 and fail.
    let other_epoch = Committee::new(
        NETWORK,
        Epoch(4),
        committee.seed(),
        committee.members().to_vec(),
    )
    .unwrap();
    assert_eq!(
        verify_commit_certificate(&other_epoch, &good),
        Err(ConsensusError::BadSignatureSet)
    );
    // Prepare votes are not commit votes.
    let mut prepares: Vec<CommitVote> = (0..3)
        .map(|index| {
            let signed = vote(&secret(index), &committee, Phase::Prepare, 1, 0, block);
            CommitVote {
                voter: signed.voter,
                signature: signed.signature,
            }
        })
        .collect();
    prepares.sort_by_key(|vote| vote.voter);
    let relabelled = CommitCertificate {
        votes: BoundedVec::new(prepares).unwrap(),
        ..good
    };
    assert_eq!(
        verify_commit_certificate(&committee, &relabelled),
        Err(ConsensusError::BadSignatureSet)
    );
}

#[test]
fn colluding_weight_beyond_f_cannot_certify_alone_and_is_caught_if_it_forks() {
    // W = 4, f = 1, quorum 3. Two colluders (f + 1) sign commits for two blocks.
    let committee = committee(&[1, 1, 1, 1]);
    let block_a = BlockHash(Hash32([0xA; 32]));
    let block_b = BlockHash(Hash32([0xB; 32]));
    // Alone they certify neither block.
    for block in [block_a, block_b] {
        let alone = certificate_from(&[0, 1], &committee, block);
        assert!(matches!(
            verify_commit_certificate(&committee, &alone),
            Err(ConsensusError::InsufficientWeight { .. })
        ));
    }
    // Each honest node signs one commit per (height, view), so two certificates need honest
    // nodes on both sides; even then every voter in both certificates is incriminated.
    let first = certificate_from(&[0, 1, 2], &committee, block_a);
    let second = certificate_from(&[0, 1, 3], &committee, block_b);
    assert!(verify_commit_certificate(&committee, &first).is_ok());
    assert!(verify_commit_certificate(&committee, &second).is_ok());
    let mut culprits = BTreeSet::new();
    for a in first.votes.iter() {
        for b in second.votes.iter().filter(|b| b.voter == a.voter) {
            let evidence = Evidence::ConflictingStatements {
                signer: a.voter,
                epoch: committee.epoch(),
                slot: Slot {
                    height: Height(1),
                    view: 0,
                    phase: Phase::Commit,
                },
                first: (block_a.0, a.signature),
                second: (block_b.0, b.signature),
            };
            assert_eq!(evidence.verify(&committee), Ok(()));
            culprits.insert(a.voter);
        }
    }
    // The overlap of two quorums always exceeds f: at least f + 1 weight is caught.
    let caught: u64 = culprits
        .iter()
        .map(|key| committee.weight_of(key).get())
        .sum();
    assert!(caught > committee.max_faulty_weight().get());
    // In the live protocol, f Byzantine weight never achieves a fork: see
    // `byzantine_leader_equivocation_yields_evidence_and_a_single_block`.
}

#[test]
fn rejections_are_classified() {
    let committee = committee(&[1, 1, 1, 1]);
    let leader = leader_index(&committee, 1, 0, 4);
    let other = (leader + 1) % 4;
    let parent = BlockHash(Hash32([1; 32]));
    let mut engine = BftEngine::new(CONFIG, Some(secret(other)), PersistedBftState::default());
    let block = make_block(Height(1), parent, &secret(leader), 0, 0);
    // Before any height is started the engine refuses messages without blaming the peer.
    let error = engine
        .handle(BftInput::Message {
            message: proposal(&secret(leader), &committee, 0, block.clone()),
            now_ms: 0,
        })
        .unwrap_err();
    assert!(!error.is_peer_fault());
    engine
        .handle(BftInput::StartHeight {
            height: Height(1),
            parent,
            committee: committee.clone(),
            now_ms: 0,
        })
        .unwrap();

    // A proposal signed by someone other than the leader.
    let error = engine
        .handle(BftInput::Message {
            message: proposal(&secret(other), &committee, 0, block.clone()),
            now_ms: 1,
        })
        .unwrap_err();
    assert_eq!(error, ConsensusError::WrongLeader { view: 0 });
    assert!(error.is_peer_fault());
    // A leader's block that does not extend our parent.
    let stray = make_block(Height(1), BlockHash(Hash32([2; 32])), &secret(leader), 0, 0);
    let error = engine
        .handle(BftInput::Message {
            message: proposal(&secret(leader), &committee, 0, stray),
            now_ms: 1,
        })
        .unwrap_err();
    assert!(matches!(error, ConsensusError::InvalidProposal(_)) && error.is_peer_fault());
    // Far-future views and other heights are dropped without blame.
    let far = vote(
        &secret(leader),
        &committee,
        Phase::Prepare,
        1,
        1_000,
        block.hash(),
    );
    let error = engine
        .handle(BftInput::Message {
            message: BftMessage::Prepare(far),
            now_ms: 1,
        })
        .unwrap_err();
    assert!(matches!(error, ConsensusError::ViewOutOfWindow { .. }) && !error.is_peer_fault());
    let old = vote(
        &secret(leader),
        &committee,
        Phase::Prepare,
        0,
        0,
        block.hash(),
    );
    let error = engine
        .handle(BftInput::Message {
            message: BftMessage::Prepare(old),
            now_ms: 1,
        })
        .unwrap_err();
    assert!(matches!(error, ConsensusError::WrongHeight { .. }) && !error.is_peer_fault());
    // A forged vote and a stranger's vote are the peer's fault.
    let mut forged = vote(
        &secret(leader),
        &committee,
        Phase::Prepare,
        1,
        0,
        block.hash(),
    );
    forged.signature.0[0] ^= 1;
    let error = engine
        .handle(BftInput::Message {
            message: BftMessage::Prepare(forged),
            now_ms: 1,
        })
        .unwrap_err();
    assert!(matches!(error, ConsensusError::BadSignature(_)) && error.is_peer_fault());
    let stranger = vote(&secret(9), &committee, Phase::Prepare, 1, 0, block.hash());
    let error = engine
        .handle(BftInput::Message {
            message: BftMessage::Prepare(stranger),
            now_ms: 1,
        })
        .unwrap_err();
    assert!(matches!(error, ConsensusError::NotAMember(_)) && error.is_peer_fault());
    // A duplicate vote is accepted once and then ignored.
    let prepare = vote(
        &secret(leader),
        &committee,
        Phase::Prepare,
        1,
        0,
        block.hash(),
    );
    engine
        .handle(BftInput::Message {
            message: BftMessage::Prepare(prepare),
            now_ms: 1,
        })
        .unwrap();
    let held = engine.held_records();
    assert!(
        engine
            .handle(BftInput::Message {
                message: BftMessage::Prepare(prepare),
                now_ms: 1
            })
            .unwrap()
            .is_empty()
    );
    assert_eq!(engine.held_records(), held);
    // Next-height messages are buffered, within a bound.
    let early = vote(
        &secret(leader),
        &committee,
        Phase::Prepare,
        2,
        0,
        block.hash(),
    );
    assert!(
        engine
            .handle(BftInput::Message {
                message: BftMessage::Prepare(early),
                now_ms: 1
            })
            .unwrap()
            .is_empty()
    );
}

fn view_change(
    index: usize,
    committee: &Committee,
    view: u32,
    prepared: Option<(u32, BlockHash)>,
) -> ViewChange {
    let slot = Slot {
        height: Height(1),
        view,
        phase: Phase::ViewChange,
    };
    let signature = sign_statement(
        &secret(index),
        committee,
        slot,
        &view_change_digest(prepared),
    );
    ViewChange {
        height: Height(1),
        view,
        prepared,
        voter: secret(index).public_key(),
        signature,
    }
}

fn prepared_certificate(
    keys: &[usize],
    committee: &Committee,
    view: u32,
    block_hash: BlockHash,
) -> PreparedCertificate {
    let mut votes: Vec<CommitVote> = keys
        .iter()
        .map(|&index| {
            let signed = vote(
                &secret(index),
                committee,
                Phase::Prepare,
                1,
                view,
                block_hash,
            );
            CommitVote {
                voter: signed.voter,
                signature: signed.signature,
            }
        })
        .collect();
    votes.sort_by_key(|vote| vote.voter);
    PreparedCertificate {
        height: Height(1),
        view,
        block_hash,
        votes: BoundedVec::new(votes).unwrap(),
    }
}

/// A fresh engine of member `index`, started on height 1.
fn engine_at_height_one(index: usize, committee: &Committee, parent: BlockHash) -> BftEngine {
    let mut engine = BftEngine::new(CONFIG, Some(secret(index)), PersistedBftState::default());
    engine
        .handle(BftInput::StartHeight {
            height: Height(1),
            parent,
            committee: committee.clone(),
            now_ms: 0,
        })
        .unwrap();
    engine
}

#[test]
fn new_leader_cannot_drop_a_prepared_block() {
    let committee = committee(&[1, 1, 1, 1]);
    let parent = BlockHash(Hash32([1; 32]));
    let old_leader = leader_index(&committee, 1, 0, 4);
    let new_leader = leader_index(&committee, 1, 1, 4);
    let replica = (0..4).find(|&index| index != new_leader).unwrap();
    let block_a = make_block(Height(1), parent, &secret(old_leader), 0xA, 0);
    let block_c = make_block(Height(1), parent, &secret(new_leader), 0xC, 0);
    let certificate = prepared_certificate(&[0, 1, 2], &committee, 0, block_a.hash());
    // View changes into view 1 from three members; one of them prepared A in view 0.
    let voters: Vec<usize> = (0..4).filter(|&index| index != replica).collect();
    let mut changes: Vec<ViewChange> = voters
        .iter()
        .enumerate()
        .map(|(position, &index)| {
            let claim = (position == 0).then_some((0, block_a.hash()));
            view_change(index, &committee, 1, claim)
        })
        .collect();
    changes.sort_by_key(|change| change.voter);
    let new_view = |block: &Block,
                    justification: Vec<ViewChange>,
                    certificate: Option<PreparedCertificate>| {
        let slot = Slot {
            height: Height(1),
            view: 1,
            phase: Phase::Proposal,
        };
        BftMessage::Proposal(Box::new(Proposal {
            height: Height(1),
            view: 1,
            block: block.clone(),
            justification: BoundedVec::new(justification).unwrap(),
            certificate,
            signature: sign_statement(&secret(new_leader), &committee, slot, &block.hash().0),
        }))
    };
    let fresh_engine = || engine_at_height_one(replica, &committee, parent);
    let attempt =
        |message: BftMessage| fresh_engine().handle(BftInput::Message { message, now_ms: 5 });

    // A fresh block C, hiding the claim's certificate: refused.
    let error = attempt(new_view(&block_c, changes.clone(), None)).unwrap_err();
    assert!(
        matches!(error, ConsensusError::InvalidViewChange(_)) && error.is_peer_fault(),
        "{error:?}"
    );
    // C together with A's certificate: refused.
    let error = attempt(new_view(
        &block_c,
        changes.clone(),
        Some(certificate.clone()),
    ))
    .unwrap_err();
    assert!(
        matches!(error, ConsensusError::InvalidViewChange(_)),
        "{error:?}"
    );
    // Dropping the view change that carries the claim leaves too little weight.
    let without_claim: Vec<ViewChange> = changes
        .iter()
        .filter(|change| change.prepared.is_none())
        .copied()
        .collect();
    let error = attempt(new_view(&block_c, without_claim, None)).unwrap_err();
    assert!(
        matches!(error, ConsensusError::InsufficientWeight { .. }),
        "{error:?}"
    );
    // A forged certificate for the claim: refused.
    let mut forged = certificate.clone();
    let mut votes = forged.votes.clone().into_inner();
    votes[0].signature.0[3] ^= 1;
    forged.votes = BoundedVec::new(votes).unwrap();
    let error = attempt(new_view(&block_a, changes.clone(), Some(forged))).unwrap_err();
    assert_eq!(error, ConsensusError::BadSignatureSet);
    // Re-proposing A with its certificate is accepted: the replica jumps to view 1 and, since
    // it never validated A, asks the node to.
    let mut engine = fresh_engine();
    let effects = engine
        .handle(BftInput::Message {
            message: new_view(&block_a, changes, Some(certificate)),
            now_ms: 5,
        })
        .unwrap();
    assert_eq!(engine.view(), 1);
    assert!(effects.iter().any(|effect| matches!(effect, BftEffect::ValidateBlock { block, .. } if block.hash() == block_a.hash())));
    let effects = engine
        .handle(BftInput::BlockValidated {
            height: Height(1),
            view: 1,
            block_hash: block_a.hash(),
            valid: true,
            now_ms: 6,
        })
        .unwrap();
    assert!(
        matches!(&broadcasts(&effects)[..], [BftMessage::Prepare(prepare)] if prepare.block_hash == block_a.hash() && prepare.view == 1)
    );
}

/// Found by the simulator (seed 8000679): a leader asks its node for a fresh block once view
/// changes from the quorum carry no claim; a claim that arrives while the block is being built
/// must not slip into the justification, or the proposal names a claim without its certificate
/// and every replica rejects it (and penalises an honest leader).
#[test]
fn a_claim_that_arrives_while_the_leader_builds_its_block_stays_out_of_the_proposal() {
    let committee = committee(&[1, 1, 1, 1]);
    let parent = BlockHash(Hash32([1; 32]));
    let new_leader = leader_index(&committee, 1, 1, 4);
    let others: Vec<usize> = (0..4).filter(|&index| index != new_leader).collect();
    let (late, replica) = (others[0], others[1]);
    let start = |index: usize| engine_at_height_one(index, &committee, parent);
    let mut leader = start(new_leader);
    // View 0 gets nowhere: the leader times out into view 1 with its own claim-free change.
    while leader.view() == 0 {
        let now_ms = leader.next_tick_ms().unwrap();
        leader.handle(BftInput::Tick { now_ms }).unwrap();
    }
    assert_eq!(leader.view(), 1);
    let now_ms = leader.next_tick_ms().unwrap_or(10_000) - 1;
    let deliver = |leader: &mut BftEngine,
                   index: usize,
                   prepared: Option<(u32, BlockHash)>,
                   block: Option<Block>| {
        let certificate =
            prepared.map(|(view, hash)| prepared_certificate(&[0, 1, 2], &committee, view, hash));
        let message = BftMessage::ViewChange(Box::new(timecoin_consensus::ViewChangeMessage {
            view_change: view_change(index, &committee, 1, prepared),
            certificate,
            block,
        }));
        leader
            .handle(BftInput::Message { message, now_ms })
            .unwrap()
    };
    // The quorum without the late member, no claims: the leader asks for a fresh block.
    for &index in &others[1..] {
        let effects = deliver(&mut leader, index, None, None);
        if index == others[2] {
            assert!(
                effects.iter().any(|effect| matches!(
                    effect,
                    BftEffect::RequestBlockContents { view: 1, .. }
                )),
                "{effects:?}"
            );
        }
    }
    // Meanwhile the late member's change arrives: it alone collected the prepares for A in
    // view 0 (the others sent theirs but missed some), so it claims A with a certificate.
    let block_a = make_block(Height(1), parent, &secret(late), 0xA, 0);
    deliver(&mut leader, late, Some((0, block_a.hash())), Some(block_a));
    let fresh = make_block(Height(1), parent, &secret(new_leader), 0xC, now_ms);
    let effects = leader
        .handle(BftInput::BlockContents {
            height: Height(1),
            view: 1,
            block: fresh.clone(),
            now_ms,
        })
        .unwrap();
    let Some(BftMessage::Proposal(proposal)) = broadcasts(&effects)
        .into_iter()
        .find(|message| matches!(message, BftMessage::Proposal(_)))
        .cloned()
    else {
        panic!("no proposal: {effects:?}");
    };
    assert_eq!(proposal.block.hash(), fresh.hash());
    assert!(proposal.certificate.is_none());
    assert!(
        proposal
            .justification
            .iter()
            .all(|change| change.prepared.is_none()),
        "{:?}",
        proposal.justification
    );
    // A replica accepts it: it follows the leader into view 1 and validates the block.
    let mut replica = start(replica);
    let effects = replica
        .handle(BftInput::Message {
            message: BftMessage::Proposal(proposal),
            now_ms,
        })
        .unwrap();
    assert_eq!(replica.view(), 1);
    assert!(effects.iter().any(
        |effect| matches!(effect, BftEffect::ValidateBlock { block, .. } if block.hash() == fresh.hash())
    ));
}

/// Height 1 of a four-member committee in which the view-0 proposal A was prepared by the
/// quorum, but only a faulty member (`faulty`) collected the prepares: `member` prepared A,
/// saw no certificate, and timed out into view 1. Returns the engine, A, and the faulty
/// member's view change into view 1, which claims A with its certificate but leaves the block
/// out.
fn prepared_a_then_timed_out(
    committee: &Committee,
    member: usize,
    faulty: usize,
) -> (BftEngine, Block, BftMessage) {
    let parent = BlockHash(Hash32([1; 32]));
    let old_leader = leader_index(committee, 1, 0, 4);
    let mut engine = engine_at_height_one(member, committee, parent);
    let block_a = make_block(Height(1), parent, &secret(old_leader), 0xA, 0);
    let effects = validated_view_zero_proposal(&mut engine, committee, old_leader, &block_a, 1);
    assert!(
        matches!(&broadcasts(&effects)[..], [BftMessage::Prepare(prepare)] if prepare.block_hash == block_a.hash()),
        "{effects:?}"
    );
    while engine.view() == 0 {
        let now_ms = engine.next_tick_ms().unwrap();
        engine.handle(BftInput::Tick { now_ms }).unwrap();
    }
    let quorum: Vec<usize> = [member, faulty, old_leader]
        .into_iter()
        .chain(0..4)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .take(3)
        .collect();
    let claim = Some((0, block_a.hash()));
    let withheld = BftMessage::ViewChange(Box::new(timecoin_consensus::ViewChangeMessage {
        view_change: view_change(faulty, committee, 1, claim),
        certificate: Some(prepared_certificate(&quorum, committee, 0, block_a.hash())),
        block: None,
    }));
    (engine, block_a, withheld)
}

/// Found by the simulator (seed 5000084): an equivocating member alone collected the quorum's
/// prepares for A, then claimed A in its view changes without sending the block. Every honest
/// member had dropped A on entering view 1 (nothing they held referred to it), so no leader
/// could re-propose A, none may propose anything else, and the height was stuck for good. A
/// member keeps the block of its own recent prepares, so a leader that prepared A proposes it.
#[test]
fn a_leader_re_proposes_a_block_it_prepared_when_the_claim_comes_without_it() {
    let committee = committee(&[1, 1, 1, 1]);
    let new_leader = leader_index(&committee, 1, 1, 4);
    assert_ne!(new_leader, leader_index(&committee, 1, 0, 4));
    let others: Vec<usize> = (0..4).filter(|&index| index != new_leader).collect();
    let faulty = others[0];
    let (mut leader, block_a, withheld) = prepared_a_then_timed_out(&committee, new_leader, faulty);
    let now_ms = leader.next_tick_ms().unwrap() - 1;
    let effects = leader
        .handle(BftInput::Message {
            message: withheld,
            now_ms,
        })
        .unwrap();
    assert!(broadcasts(&effects).is_empty(), "{effects:?}");
    // A third, claim-free change completes the quorum for view 1.
    let message = BftMessage::ViewChange(Box::new(timecoin_consensus::ViewChangeMessage {
        view_change: view_change(others[1], &committee, 1, None),
        certificate: None,
        block: None,
    }));
    let effects = leader
        .handle(BftInput::Message { message, now_ms })
        .unwrap();
    let proposals: Vec<&Proposal> = broadcasts(&effects)
        .into_iter()
        .filter_map(|message| match message {
            BftMessage::Proposal(proposal) => Some(&**proposal),
            _ => None,
        })
        .collect();
    assert!(
        matches!(&proposals[..], [proposal] if proposal.view == 1
            && proposal.block.hash() == block_a.hash()
            && proposal.certificate.as_ref().is_some_and(|c| c.block_hash == block_a.hash())),
        "{effects:?}"
    );
}

/// The same stuck height from a member that is not the next leader: it takes the faulty
/// member's certificate for the block it validated and prepared as its own claim, so its next
/// view change carries the certificate and the block to whoever leads then.
#[test]
fn a_member_takes_over_a_claim_made_without_its_block_and_carries_both_on() {
    let committee = committee(&[1, 1, 1, 1]);
    let new_leader = leader_index(&committee, 1, 1, 4);
    let others: Vec<usize> = (0..4).filter(|&index| index != new_leader).collect();
    let (member, faulty) = (others[0], others[1]);
    let (mut engine, block_a, withheld) = prepared_a_then_timed_out(&committee, member, faulty);
    let now_ms = engine.next_tick_ms().unwrap() - 1;
    engine
        .handle(BftInput::Message {
            message: withheld,
            now_ms,
        })
        .unwrap();
    // View 1 gets nowhere either.
    let mut sent = Vec::new();
    while engine.view() == 1 {
        let now_ms = engine.next_tick_ms().unwrap();
        let effects = engine.handle(BftInput::Tick { now_ms }).unwrap();
        sent.extend(broadcasts(&effects).into_iter().cloned());
    }
    let change = sent
        .iter()
        .find_map(|message| match message {
            BftMessage::ViewChange(change) if change.view_change.view == 2 => Some(change),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no view change into view 2: {sent:?}"));
    assert_eq!(change.view_change.prepared, Some((0, block_a.hash())));
    assert!(
        change
            .certificate
            .as_ref()
            .is_some_and(|certificate| certificate.verify(&committee).is_ok())
    );
    assert_eq!(change.block.as_ref().map(Block::hash), Some(block_a.hash()));
}

/// A deterministic generator for delivery order (xorshift64*), so runs are reproducible.
struct Lottery(u64);

impl Lottery {
    fn next(&mut self, bound: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % bound
    }
}

impl Net {
    /// Like `run`, but delivers a random queued message each step and drops one in
    /// `drop_one_in` (0: none).
    fn run_shuffled(
        &mut self,
        target_height: u64,
        deadline_ms: u64,
        lottery: &mut Lottery,
        drop_one_in: usize,
    ) {
        self.target_height = target_height;
        loop {
            let done = self
                .live()
                .all(|node| node.committed.contains_key(&Height(target_height)));
            if done || self.now_ms > deadline_ms {
                return;
            }
            if !self.queue.is_empty() {
                let pick = lottery.next(self.queue.len());
                let (_, to, message) = self.queue.remove(pick).unwrap();
                if drop_one_in == 0 || lottery.next(drop_one_in) != 0 {
                    let now_ms = self.now_ms;
                    self.input(to, BftInput::Message { message, now_ms });
                }
                continue;
            }
            let Some(next) = self
                .live()
                .filter_map(|node| node.engine.next_tick_ms())
                .min()
            else {
                return;
            };
            self.now_ms = self.now_ms.max(next);
            for index in 0..self.nodes.len() {
                if self.nodes[index]
                    .engine
                    .next_tick_ms()
                    .is_some_and(|at| at <= self.now_ms)
                {
                    let now_ms = self.now_ms;
                    self.input(index, BftInput::Tick { now_ms });
                }
            }
        }
    }
}

#[test]
fn random_delivery_order_keeps_agreement_and_progress() {
    let mut view_changes = 0;
    for seed in 1..=40u64 {
        let mut lottery = Lottery(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let mut net = Net::new(&[1, 1, 1, 1, 1]);
        if seed % 2 == 0 {
            net.nodes[(seed as usize / 2) % 5].silent = true;
        }
        net.start();
        net.run_shuffled(3, 3_600_000, &mut lottery, 0);
        assert!(
            net.peer_faults.is_empty(),
            "seed {seed}: {:?}",
            net.peer_faults
        );
        let decided = net.assert_agreement();
        assert!(
            net.live().all(|node| node.committed.len() == 3),
            "seed {seed}: no progress"
        );
        assert_eq!(decided.len(), 3);
        view_changes += decided
            .values()
            .filter(|certificate| certificate.view > 0)
            .count();
    }
    // The silent nodes led some heights, so the runs went through view changes.
    assert!(view_changes > 0);
}

#[test]
fn random_drops_never_break_agreement() {
    let mut decided_heights = 0;
    for seed in 1..=40u64 {
        let mut lottery = Lottery(seed.wrapping_mul(0xD1B5_4A32_D192_ED03) | 1);
        let mut net = Net::new(&[1, 1, 1, 1]);
        net.start();
        // Without sync, a node that lost a commit cannot catch up, so only safety is checked.
        net.run_shuffled(3, 600_000, &mut lottery, 5);
        assert!(
            net.peer_faults.is_empty(),
            "seed {seed}: {:?}",
            net.peer_faults
        );
        decided_heights += net.assert_agreement().len();
    }
    // Not vacuous: most runs still decided heights despite the losses.
    assert!(
        decided_heights > 40,
        "only {decided_heights} heights decided"
    );
}

#[test]
fn view_changes_are_checked_and_equivocating_ones_become_evidence() {
    let committee = committee(&[1, 1, 1, 1]);
    let parent = BlockHash(Hash32([1; 32]));
    let mut engine = BftEngine::new(CONFIG, Some(secret(0)), PersistedBftState::default());
    engine
        .handle(BftInput::StartHeight {
            height: Height(1),
            parent,
            committee: committee.clone(),
            now_ms: 0,
        })
        .unwrap();
    let send =
        |engine: &mut BftEngine, change: ViewChange, certificate: Option<PreparedCertificate>| {
            let message = BftMessage::ViewChange(Box::new(timecoin_consensus::ViewChangeMessage {
                view_change: change,
                certificate,
                block: None,
            }));
            engine.handle(BftInput::Message { message, now_ms: 1 })
        };
    let block_a = BlockHash(Hash32([0xA; 32]));
    // A claim without its certificate, or with one that does not match, is the sender's fault.
    let error = send(
        &mut engine,
        view_change(1, &committee, 1, Some((0, block_a))),
        None,
    )
    .unwrap_err();
    assert!(matches!(error, ConsensusError::InvalidViewChange(_)) && error.is_peer_fault());
    let other = prepared_certificate(&[0, 1, 2], &committee, 0, BlockHash(Hash32([0xB; 32])));
    let error = send(
        &mut engine,
        view_change(1, &committee, 1, Some((0, block_a))),
        Some(other),
    )
    .unwrap_err();
    assert!(matches!(error, ConsensusError::InvalidViewChange(_)));
    // There is no view change into view 0.
    let certificate = prepared_certificate(&[0, 1, 2], &committee, 0, block_a);
    let error = send(&mut engine, view_change(1, &committee, 0, None), None).unwrap_err();
    assert!(matches!(error, ConsensusError::InvalidViewChange(_)));
    // A valid claim is accepted; a second, different view change by the same member for the
    // same view is evidence.
    assert!(
        send(
            &mut engine,
            view_change(1, &committee, 1, Some((0, block_a))),
            Some(certificate)
        )
        .unwrap()
        .is_empty()
    );
    let effects = send(&mut engine, view_change(1, &committee, 1, None), None).unwrap();
    let [BftEffect::Evidence(evidence)] = &effects[..] else {
        panic!("expected evidence, got {effects:?}")
    };
    assert!(
        matches!(evidence, Evidence::ConflictingStatements { slot, .. } if slot.phase == Phase::ViewChange)
    );
    assert_eq!(evidence.verify(&committee), Ok(()));
    // A view change from more than f weight (here a second member) pulls us into view 1.
    assert_eq!(engine.view(), 0);
    let effects = send(&mut engine, view_change(2, &committee, 1, None), None).unwrap();
    assert_eq!(engine.view(), 1);
    assert!(broadcasts(&effects).iter().any(|message| matches!(message, BftMessage::ViewChange(m) if m.view_change.view == 1 && m.view_change.voter == secret(0).public_key())));
}

#[test]
fn restarted_node_resends_its_identical_view_change() {
    let committee = committee(&[1, 1, 1, 1]);
    let parent = BlockHash(Hash32([1; 32]));
    let mut engine = BftEngine::new(CONFIG, Some(secret(0)), PersistedBftState::default());
    engine
        .handle(BftInput::StartHeight {
            height: Height(1),
            parent,
            committee: committee.clone(),
            now_ms: 0,
        })
        .unwrap();
    let deadline = engine.next_tick_ms().unwrap();
    let effects = engine
        .handle(BftInput::Tick {
            now_ms: deadline.max(CONFIG.block_interval_ms + CONFIG.base_timeout_ms),
        })
        .unwrap();
    let sent: Vec<BftMessage> = broadcasts(&effects)
        .into_iter()
        .filter(|m| matches!(m, BftMessage::ViewChange(_)))
        .cloned()
        .collect();
    assert_eq!(sent.len(), 1);
    let mut restarted = BftEngine::new(CONFIG, Some(secret(0)), engine.persisted_state());
    let effects = restarted
        .handle(BftInput::StartHeight {
            height: Height(1),
            parent,
            committee,
            now_ms: 50_000,
        })
        .unwrap();
    assert_eq!(restarted.view(), 1);
    let resent: Vec<BftMessage> = broadcasts(&effects).into_iter().cloned().collect();
    assert_eq!(resent, sent);
}

#[test]
fn memory_stays_bounded_under_floods_and_long_outages() {
    let committee = committee(&[1, 1, 1, 1]);
    let parent = BlockHash(Hash32([1; 32]));
    let mut engine = BftEngine::new(CONFIG, Some(secret(0)), PersistedBftState::default());
    engine
        .handle(BftInput::StartHeight {
            height: Height(1),
            parent,
            committee: committee.clone(),
            now_ms: 0,
        })
        .unwrap();
    // Next-height messages are buffered up to the limit, then refused without blame.
    let early = vote(&secret(1), &committee, Phase::Prepare, 2, 0, parent);
    for _ in 0..timecoin_consensus::bft::MAX_FUTURE_MESSAGES {
        engine
            .handle(BftInput::Message {
                message: BftMessage::Prepare(early),
                now_ms: 1,
            })
            .unwrap();
    }
    let error = engine
        .handle(BftInput::Message {
            message: BftMessage::Prepare(early),
            now_ms: 1,
        })
        .unwrap_err();
    assert!(matches!(error, ConsensusError::Full { .. }) && !error.is_peer_fault());

    // A quorum-less cluster keeps changing views for hours: state stays within the windows.
    let mut net = Net::new(&[40, 30, 20, 10]);
    net.nodes[1].silent = true;
    net.nodes[3].silent = true;
    net.start();
    net.run(1, 4 * 3_600_000);
    let views = net.nodes[0].engine.view();
    assert!(views >= 8, "only reached view {views}");
    let window = (timecoin_consensus::bft::MAX_VIEWS_AHEAD
        + timecoin_consensus::bft::MAX_VIEWS_BEHIND
        + 1) as usize;
    for node in net.live() {
        assert!(
            node.engine.held_records() <= window * 4 * 4,
            "{} records",
            node.engine.held_records()
        );
    }
}

#[test]
fn committee_changes_at_an_epoch_boundary() {
    // Five nodes; epoch 3 (heights 1–2) has members 0–3, epoch 4 (from height 3) members 1–4.
    let mut net = Net::new(&[1, 1, 1, 1, 1]);
    let members = |range: std::ops::Range<usize>| -> Vec<Member> {
        net.committee
            .members()
            .iter()
            .filter(|m| range.clone().any(|i| secret(i).public_key() == m.node_key))
            .copied()
            .collect()
    };
    let epoch_three = Committee::new(NETWORK, Epoch(3), Hash32([5; 32]), members(0..4)).unwrap();
    let epoch_four = Committee::new(NETWORK, Epoch(4), Hash32([6; 32]), members(1..5)).unwrap();
    net.committee = epoch_three.clone();
    net.next_epoch = Some((3, epoch_four.clone()));
    net.start();
    net.run(5, 600_000);
    assert!(net.peer_faults.is_empty(), "{:?}", net.peer_faults);
    let decided = net.assert_agreement();
    assert_eq!(decided.len(), 5);
    for (height, certificate) in &decided {
        let (committee, outsider) = if height.0 < 3 {
            (&epoch_three, 4)
        } else {
            (&epoch_four, 0)
        };
        // Signed by the epoch's committee only, and not valid under the other epoch's.
        assert!(
            certificate
                .votes
                .iter()
                .all(|vote| committee.member(&vote.voter).is_some())
        );
        assert!(
            certificate
                .votes
                .iter()
                .all(|vote| vote.voter != secret(outsider).public_key())
        );
        let other = if height.0 < 3 {
            &epoch_four
        } else {
            &epoch_three
        };
        assert!(verify_commit_certificate(other, certificate).is_err());
    }
    // The non-member followed along and committed the same blocks.
    assert_eq!(net.nodes[4].committed.len(), 5);
    assert_eq!(net.nodes[0].committed.len(), 5);
}
