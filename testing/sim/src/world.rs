//! The simulated world: nodes, network, disks, clock, clients and faults.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use timecoin_consensus::FinalityCertificate;
use timecoin_ledger::{
    ChainParams, GenesisAllocation, GenesisMasternode, GenesisSpec, ParamOverrides, build_genesis,
};
use timecoin_node::{
    Action, Command, Input, Node, NodeConfig, NodeEvent, NodeMessage, PeerId, Reply, RequestId,
    SubmitOutcome, init_store,
};
use timecoin_primitives::{
    Address, Amount, Block, BoundedString, BoundedVec, Height, Network, OutPoint, SecretKey, Tier,
    Transaction, TxBody, TxInput, TxKind, TxOut, Txid,
};
use timecoin_storage::{ChainDb, ChainStore, MemoryBackend, StoreConfig};

use crate::Rng;
use crate::byzantine::{Behaviour, Target, corrupt_outgoing, vote_for_anything};
use crate::checker::{Checker, Violation, total};

type SimStore = ChainDb<MemoryBackend>;

const NETWORK: Network = Network::Devnet;
const GENESIS_MS: u64 = 1_767_225_600_000;
const CLIENTS: usize = 6;
/// Most inputs the simulator hands a node in one step.
const MAX_STEP_INPUTS: usize = 64;
const CLIENT_BALANCE_TIME: u64 = 100_000;
const FEE_UNITS: u64 = 100_000;
/// How long before the end clients stop sending new transactions, so the last ones can finish.
const QUIET_TAIL_MS: u64 = 15_000;
/// How much longer than planned a run may go on for its liveness check to pass.
const LIVENESS_GRACE_MS: u64 = 90_000;

/// Network and process faults of the safety phase.
#[derive(Clone, Debug)]
pub struct Faults {
    /// Chance a message is lost, per mille.
    pub drop_per_mille: u64,
    /// Chance a message is delivered twice, per mille.
    pub duplicate_per_mille: u64,
    /// Smallest one-way delay.
    pub min_delay_ms: u64,
    /// Largest one-way delay (delays vary per message, so messages reorder).
    pub max_delay_ms: u64,
    /// Whether partitions form and heal.
    pub partitions: bool,
    /// Whether some partitions cut only one direction.
    pub one_way: bool,
    /// Whether nodes crash and restart.
    pub crashes: bool,
    /// Largest clock offset of a node.
    pub clock_skew_ms: u64,
}

impl Faults {
    /// No faults: a synchronous, reliable network.
    pub fn none() -> Faults {
        Faults {
            drop_per_mille: 0,
            duplicate_per_mille: 0,
            min_delay_ms: 5,
            max_delay_ms: 20,
            partitions: false,
            one_way: false,
            crashes: false,
            clock_skew_ms: 0,
        }
    }
}

/// A scripted step, for scenario tests.
#[derive(Clone, Debug)]
pub enum Step {
    /// Spend one fresh coin twice: the first transaction to `first`, the second `gap_ms` later
    /// to `second`.
    DoubleSpend {
        /// Node receiving the first spend.
        first: usize,
        /// Node receiving the second.
        second: usize,
        /// Delay between them.
        gap_ms: u64,
    },
    /// Cut `node` off from everyone for `duration_ms`.
    Isolate {
        /// The node.
        node: usize,
        /// For how long.
        duration_ms: u64,
    },
    /// Crash `node` now and restart it `down_ms` later.
    Crash {
        /// The node.
        node: usize,
        /// Downtime.
        down_ms: u64,
    },
}

/// One run's setup. [`SimConfig::random`] derives everything from the seed.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The seed of every random choice.
    pub seed: u64,
    /// Genesis masternodes (Bronze, weight 1 each), nodes `0..masternodes`.
    pub masternodes: usize,
    /// Behaviour of each genesis masternode (missing entries are honest).
    pub behaviours: Vec<Behaviour>,
    /// Faults during the safety phase.
    pub faults: Faults,
    /// Safety phase length.
    pub safety_ms: u64,
    /// Liveness phase length.
    pub liveness_ms: u64,
    /// Whether random client traffic runs.
    pub random_workload: bool,
    /// Whether a client registers (and later deregisters) a new masternode, which then runs.
    pub registrations: bool,
    /// Scripted steps at given times.
    pub script: Vec<(u64, Step)>,
    /// TEST ONLY: this node forgets its input locks when it restarts (broken on purpose).
    pub forget_locks_node: Option<usize>,
    /// TEST ONLY: this node sends block statements without persisting them (broken on purpose).
    pub skip_persistence_node: Option<usize>,
    /// Whether liveness is checked at the end (off for scenarios that break the fault bound).
    pub check_liveness: bool,
}

impl SimConfig {
    /// A random configuration within the fault bound: 4 to 7 Bronze masternodes, up to f of
    /// them Byzantine (one may be a Twin pair), and a random fault mix.
    pub fn random(seed: u64) -> SimConfig {
        let mut rng = Rng::new(seed.wrapping_mul(31).wrapping_add(7));
        let masternodes = rng.between(4, 7) as usize;
        let f = (masternodes - 1) / 3;
        let faulty = rng.between(0, f as u64) as usize;
        let mut behaviours = vec![Behaviour::Honest; masternodes];
        for slot in 0..faulty {
            let behaviour = if rng.chance(200) {
                Behaviour::Twin
            } else {
                Behaviour::FAULTY[rng.below(Behaviour::FAULTY.len() as u64) as usize]
            };
            behaviours[masternodes - 1 - slot] = behaviour;
        }
        let max_delay_ms = rng.between(10, 400);
        let faults = Faults {
            drop_per_mille: rng.below(150),
            duplicate_per_mille: rng.below(100),
            min_delay_ms: rng.between(1, 10),
            max_delay_ms,
            partitions: rng.chance(600),
            one_way: rng.chance(500),
            crashes: rng.chance(600),
            clock_skew_ms: rng.below(1_500),
        };
        SimConfig {
            seed,
            masternodes,
            behaviours,
            faults,
            safety_ms: 20_000,
            liveness_ms: 35_000,
            random_workload: true,
            registrations: rng.chance(500),
            script: Vec::new(),
            forget_locks_node: None,
            skip_persistence_node: None,
            check_liveness: true,
        }
    }

    /// A one-line description of the fault mix, for reports.
    pub fn describe(&self) -> String {
        let byzantine: Vec<String> = self
            .behaviours
            .iter()
            .filter(|b| **b != Behaviour::Honest)
            .map(|b| format!("{b:?}"))
            .collect();
        format!(
            "n={} byzantine=[{}] drop={}‰ dup={}‰ delay={}..{}ms partitions={} one_way={} crashes={} skew≤{}ms registrations={}",
            self.masternodes,
            byzantine.join(","),
            self.faults.drop_per_mille,
            self.faults.duplicate_per_mille,
            self.faults.min_delay_ms,
            self.faults.max_delay_ms,
            self.faults.partitions,
            self.faults.one_way,
            self.faults.crashes,
            self.faults.clock_skew_ms,
            self.registrations,
        )
    }
}

/// What a successful run did.
#[derive(Clone, Debug, Default)]
pub struct SimReport {
    /// The seed.
    pub seed: u64,
    /// Highest committed height.
    pub height: u64,
    /// Transactions the clients expected to finalize (all did).
    pub expected_transactions: usize,
    /// Transactions certified (conflicting losers excluded, obviously).
    pub certified: usize,
    /// Messages sent, dropped by faults, and delivered.
    pub messages: (u64, u64, u64),
    /// Crashes injected.
    pub crashes: u64,
    /// Partitions injected.
    pub partitions: u64,
    /// Penalties honest nodes handed out.
    pub penalties: u64,
    /// View changes seen.
    pub view_changes: u64,
    /// The highest view any node entered at any height: how long the longest run of failed
    /// views was.
    pub max_view: u32,
    /// Evidence of equivocation reported.
    pub evidence: u64,
    /// Double-spend races run.
    pub double_spends: u64,
    /// Commit certificates signed by the masternode registered during the run.
    pub registered_masternode_signatures: u64,
}

/// A broken invariant, with what is needed to replay it.
#[derive(Clone, Debug)]
pub struct SimFailure {
    /// The seed.
    pub seed: u64,
    /// Simulated milliseconds since the start.
    pub time_ms: u64,
    /// What broke.
    pub message: String,
    /// The configuration's description.
    pub setup: String,
}

impl fmt::Display for SimFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "simulation failed at {} ms (seed {}, {}): {}\nreplay: SIM_SEED={} cargo test -p timecoin-sim --test sim replay -- --nocapture",
            self.time_ms, self.seed, self.setup, self.message, self.seed
        )
    }
}

#[derive(Clone, Debug)]
enum Event {
    Deliver {
        from: usize,
        to: usize,
        bytes: Vec<u8>,
    },
    Tick {
        node: usize,
    },
    Restart {
        node: usize,
    },
    Workload,
    Submit {
        node: usize,
        transaction: Box<Transaction>,
    },
    Script(Step),
    Partition,
    Heal,
    CrashSomeone,
    Resubmit,
    LivenessStart,
}

struct SimNode {
    key: Option<SecretKey>,
    behaviour: Behaviour,
    disk: MemoryBackend,
    node: Option<Node<SimStore>>,
    skew_ms: u64,
    pending_tick: Option<u64>,
    replay: Vec<Vec<u8>>,
    forget_locks: bool,
}

#[derive(Clone, Copy, Debug)]
struct Coin {
    outpoint: OutPoint,
    amount: Amount,
    owner: usize,
}

struct World {
    config: SimConfig,
    rng: Rng,
    now: u64,
    sequence: u64,
    events: BTreeMap<(u64, u64), Event>,
    nodes: Vec<SimNode>,
    params: ChainParams,
    genesis: Block,
    genesis_total: u128,
    clients: Vec<SecretKey>,
    coins: Vec<Coin>,
    expected: BTreeMap<Txid, Transaction>,
    checker: Checker,
    /// Directed links that are cut: (from, to).
    cut: BTreeSet<(usize, usize)>,
    report: SimReport,
    requests: u64,
    safety_end: u64,
    end: u64,
    liveness_height: u64,
    registered: Option<(usize, OutPoint, usize)>,
    deregistered: bool,
    deregistration: Option<Txid>,
    faulty_keys: BTreeSet<timecoin_primitives::PublicKey>,
    /// Print every node event (`SIM_TRACE=1`).
    trace: bool,
}

fn secret(rng: &mut Rng) -> SecretKey {
    let mut bytes = [0u8; 32];
    for chunk in bytes.chunks_exact_mut(8) {
        chunk.copy_from_slice(&rng.next_u64().to_le_bytes());
    }
    SecretKey::from_bytes(bytes)
}

fn address(key: &SecretKey) -> Address {
    Address::from_public_key(&key.public_key())
}

fn store_config(genesis: &Block) -> StoreConfig {
    let mut config = StoreConfig::new(NETWORK, genesis.hash());
    config.cache_bytes = 256 << 10;
    config.page_cache_bytes = 0;
    // A flush on another thread would finish at a different point in each run; inline, a
    // seed replays exactly.
    config.background_flush = false;
    config
}

/// Runs one simulation.
pub fn run(config: &SimConfig) -> Result<SimReport, SimFailure> {
    let mut world = World::new(config.clone());
    let outcome = world.run_all();
    let setup = config.describe();
    outcome.map_err(|Violation(message)| SimFailure {
        seed: config.seed,
        time_ms: world.now.saturating_sub(GENESIS_MS),
        message,
        setup,
    })?;
    Ok(world.report)
}

impl World {
    fn new(config: SimConfig) -> World {
        let mut rng = Rng::new(config.seed);
        let keys: Vec<SecretKey> = (0..config.masternodes).map(|_| secret(&mut rng)).collect();
        let owners: Vec<SecretKey> = (0..config.masternodes).map(|_| secret(&mut rng)).collect();
        let clients: Vec<SecretKey> = (0..CLIENTS).map(|_| secret(&mut rng)).collect();
        let spec = GenesisSpec {
            network: "devnet".into(),
            timestamp_ms: GENESIS_MS,
            allocations: clients
                .iter()
                .map(|key| GenesisAllocation {
                    address: address(key).encode(NETWORK),
                    amount: CLIENT_BALANCE_TIME.to_string(),
                })
                .collect(),
            masternodes: keys
                .iter()
                .zip(&owners)
                .enumerate()
                .map(|(index, (key, owner))| GenesisMasternode {
                    owner: address(owner).encode(NETWORK),
                    node_key: key.public_key().to_string(),
                    tier: "bronze".into(),
                    network_address: format!("/ip4/10.0.0.{index}/tcp/24100"),
                })
                .collect(),
            overrides: Some(ParamOverrides {
                epoch_length_blocks: Some(6),
                block_interval_ms: Some(500),
                ..ParamOverrides::default()
            }),
        };
        let (genesis, params) = build_genesis(&spec).expect("the simulator's genesis is valid");
        let genesis_total = total(
            genesis
                .transactions
                .iter()
                .flat_map(|tx| tx.body.outputs.iter().map(|output| output.amount)),
        );
        let mut coins = Vec::new();
        let reward_txid = genesis.transactions[0].txid();
        for (index, output) in genesis.transactions[0].body.outputs.iter().enumerate() {
            coins.push(Coin {
                outpoint: OutPoint {
                    txid: reward_txid,
                    index: index as u32,
                },
                amount: output.amount,
                owner: index,
            });
        }
        let safety_end = GENESIS_MS + config.safety_ms;
        let end = safety_end + config.liveness_ms;
        let mut world = World {
            rng,
            now: GENESIS_MS,
            sequence: 0,
            events: BTreeMap::new(),
            nodes: Vec::new(),
            params,
            genesis,
            genesis_total,
            clients,
            coins,
            expected: BTreeMap::new(),
            checker: Checker::default(),
            cut: BTreeSet::new(),
            report: SimReport {
                seed: config.seed,
                ..SimReport::default()
            },
            requests: 0,
            safety_end,
            end,
            liveness_height: 0,
            registered: None,
            deregistered: false,
            deregistration: None,
            faulty_keys: BTreeSet::new(),
            trace: std::env::var_os("SIM_TRACE").is_some(),
            config,
        };
        for (index, key) in keys.iter().enumerate() {
            let behaviour = world
                .config
                .behaviours
                .get(index)
                .copied()
                .unwrap_or(Behaviour::Honest);
            if behaviour != Behaviour::Honest {
                world.faulty_keys.insert(key.public_key());
            }
            world.add_node(Some(key.clone()), behaviour);
            if behaviour == Behaviour::Twin {
                world.add_node(Some(key.clone()), Behaviour::Twin);
            }
        }
        if let Some(node) = world.config.forget_locks_node {
            world.nodes[node].forget_locks = true;
        }
        world
    }

    fn schedule(&mut self, at: u64, event: Event) {
        self.sequence += 1;
        self.events.insert((at.max(self.now), self.sequence), event);
    }

    fn node_config(&self, index: usize) -> NodeConfig {
        let mut config = NodeConfig::new(self.params.clone(), self.nodes[index].key.clone());
        config.base_timeout_ms = 1_000;
        config.max_timeout_ms = 8_000;
        config.resend_interval_ms = 700;
        config.heartbeat_interval_ms = 1_000;
        config.sync_timeout_ms = 1_500;
        // The simulator's blocks are small: odd nodes gossip every view change without its
        // block, so that leaders lacking a prepared block are exercised too.
        if index % 2 == 1 {
            config.gossip_block_limit_bytes = 0;
        }
        config.test_forget_locks_on_restart = self.nodes[index].forget_locks;
        config.test_skip_statement_persistence = self.config.skip_persistence_node == Some(index);
        config
    }

    fn add_node(&mut self, key: Option<SecretKey>, behaviour: Behaviour) -> usize {
        let index = self.nodes.len();
        let skew_ms = self.rng.below(self.config.faults.clock_skew_ms + 1);
        self.nodes.push(SimNode {
            key,
            behaviour,
            disk: MemoryBackend::new(),
            node: None,
            skew_ms,
            pending_tick: None,
            replay: Vec::new(),
            forget_locks: false,
        });
        let mut store = ChainDb::open(self.nodes[index].disk.clone(), store_config(&self.genesis))
            .expect("a fresh in-memory store opens");
        init_store(&mut store, &self.genesis, &self.params).expect("genesis applies");
        index
    }

    fn node_now(&self, index: usize) -> u64 {
        self.now + self.nodes[index].skew_ms
    }

    fn start_node(&mut self, index: usize) -> Result<(), Violation> {
        let store = ChainDb::open(self.nodes[index].disk.clone(), store_config(&self.genesis))
            .map_err(|e| Violation(format!("node {index} cannot reopen its store: {e}")))?;
        let config = self.node_config(index);
        let (node, actions) = Node::open(store, config, self.node_now(index))
            .map_err(|e| Violation(format!("node {index} cannot restart: {e}")))?;
        self.nodes[index].node = Some(node);
        self.nodes[index].pending_tick = None;
        self.perform(index, actions)?;
        for peer in 0..self.nodes.len() {
            if peer == index {
                continue;
            }
            self.step(
                index,
                Input::PeerConnected {
                    peer: PeerId(peer as u64),
                },
            )?;
            if self.nodes[peer].node.is_some() {
                self.step(
                    peer,
                    Input::PeerConnected {
                        peer: PeerId(index as u64),
                    },
                )?;
            }
        }
        Ok(())
    }

    fn crash(&mut self, index: usize, down_ms: u64) {
        if self.nodes[index].node.take().is_none() {
            return;
        }
        self.nodes[index].disk = self.nodes[index].disk.crash();
        self.nodes[index].pending_tick = None;
        self.report.crashes += 1;
        self.schedule(self.now + down_ms, Event::Restart { node: index });
    }

    fn honest(&self, index: usize) -> bool {
        matches!(self.nodes[index].behaviour, Behaviour::Honest)
    }

    fn run_all(&mut self) -> Result<(), Violation> {
        for index in 0..self.nodes.len() {
            self.start_node(index)?;
        }
        if self.config.random_workload {
            self.schedule(GENESIS_MS + 1_000, Event::Workload);
        }
        if self.config.faults.partitions {
            let at = GENESIS_MS + self.rng.between(1_000, self.config.safety_ms / 2);
            self.schedule(at, Event::Partition);
        }
        if self.config.faults.crashes {
            let at = GENESIS_MS + self.rng.between(1_000, self.config.safety_ms / 2);
            self.schedule(at, Event::CrashSomeone);
        }
        for (at, step) in self.config.script.clone() {
            self.schedule(GENESIS_MS + at, Event::Script(step));
        }
        self.schedule(self.safety_end, Event::LivenessStart);
        self.schedule(self.safety_end + 2_000, Event::Resubmit);
        // Liveness is "eventually": after the planned end the run goes on, in one-second steps
        // up to LIVENESS_GRACE_MS, while the check fails. An unlucky run of Byzantine leaders
        // can cost tens of seconds of back-off; a real stall never passes.
        let hard_end = self.end + LIVENESS_GRACE_MS;
        loop {
            while let Some((&(at, sequence), _)) = self.events.first_key_value() {
                if at > self.end {
                    break;
                }
                let event = self.events.remove(&(at, sequence)).expect("just seen");
                self.now = at;
                self.dispatch(event)?;
            }
            if !self.config.check_liveness {
                break;
            }
            match self.check_liveness() {
                Ok(()) => break,
                Err(violation) if self.end >= hard_end => return Err(violation),
                Err(_) => {
                    self.end += 1_000;
                    self.now = self.end;
                }
            }
        }
        self.report.height = self.checker.highest().get();
        self.report.certified = self.checker.certified.len();
        self.report.expected_transactions = self.expected.len();
        Ok(())
    }

    fn dispatch(&mut self, event: Event) -> Result<(), Violation> {
        match event {
            Event::Deliver { from, to, bytes } => {
                if self.nodes[to].node.is_none() {
                    return Ok(());
                }
                self.report.messages.2 += 1;
                self.before_delivery(to, from, &bytes)?;
                let mut inputs = vec![Input::PeerMessage {
                    peer: PeerId(from as u64),
                    bytes,
                }];
                // Whatever else reaches this node at the same instant is handled in the same
                // step, as the daemon does with a busy queue: one group commit, merged relays.
                let same_instant: Vec<(u64, u64)> = self
                    .events
                    .range((self.now, 0)..=(self.now, u64::MAX))
                    .filter(|(_, event)| matches!(event, Event::Deliver { to: t, .. } if *t == to))
                    .map(|(key, _)| *key)
                    .take(MAX_STEP_INPUTS - 1)
                    .collect();
                for key in same_instant {
                    if let Some(Event::Deliver { from, bytes, .. }) = self.events.remove(&key) {
                        self.report.messages.2 += 1;
                        self.before_delivery(to, from, &bytes)?;
                        inputs.push(Input::PeerMessage {
                            peer: PeerId(from as u64),
                            bytes,
                        });
                    }
                }
                self.step_batch(to, inputs)
            }
            Event::Tick { node } => {
                if self.nodes[node].pending_tick != Some(self.now) {
                    return Ok(());
                }
                self.nodes[node].pending_tick = None;
                if self.nodes[node].behaviour == Behaviour::Replay && self.rng.chance(300) {
                    let replay = &self.nodes[node].replay;
                    if !replay.is_empty() {
                        let bytes = replay[self.rng.below(replay.len() as u64) as usize].clone();
                        for to in 0..self.nodes.len() {
                            if to != node {
                                self.transmit(node, to, bytes.clone());
                            }
                        }
                    }
                }
                let now = self.node_now(node);
                self.step(node, Input::Tick { now_ms: now })
            }
            Event::Restart { node } => {
                if self.nodes[node].node.is_none() {
                    self.start_node(node)?;
                }
                Ok(())
            }
            Event::Workload => {
                if self.now + QUIET_TAIL_MS < self.safety_end + self.config.liveness_ms {
                    self.workload()?;
                    let next = self.now + self.rng.between(150, 600);
                    self.schedule(next, Event::Workload);
                }
                Ok(())
            }
            Event::Submit { node, transaction } => self.submit(node, *transaction),
            Event::Script(step) => self.script(step),
            Event::Partition => {
                if self.now >= self.safety_end {
                    return Ok(());
                }
                self.partition();
                let heal = self.now + self.rng.between(1_000, 6_000);
                self.schedule(heal.min(self.safety_end), Event::Heal);
                Ok(())
            }
            Event::Heal => {
                self.cut.clear();
                if self.now < self.safety_end && self.rng.chance(600) {
                    let at = self.now + self.rng.between(500, 4_000);
                    self.schedule(at, Event::Partition);
                }
                Ok(())
            }
            Event::CrashSomeone => {
                if self.now >= self.safety_end {
                    return Ok(());
                }
                let victim = self.rng.below(self.nodes.len() as u64) as usize;
                let down = self.rng.between(200, 4_000);
                self.crash(victim, down.min(self.safety_end - self.now));
                let next = self.now + self.rng.between(1_000, 5_000);
                self.schedule(next, Event::CrashSomeone);
                Ok(())
            }
            Event::LivenessStart => {
                self.cut.clear();
                for node in 0..self.nodes.len() {
                    if self.nodes[node].node.is_none() {
                        self.start_node(node)?;
                    }
                }
                self.liveness_height = self.honest_min_tip();
                Ok(())
            }
            Event::Resubmit => {
                self.resubmit()?;
                if self.now + 2_000 < self.safety_end + self.config.liveness_ms + LIVENESS_GRACE_MS
                {
                    self.schedule(self.now + 2_000, Event::Resubmit);
                }
                Ok(())
            }
        }
    }

    fn partition(&mut self) {
        let n = self.nodes.len();
        let mut side = vec![false; n];
        let mut size = 0;
        for entry in side.iter_mut() {
            if self.rng.chance(400) {
                *entry = true;
                size += 1;
            }
        }
        if size == 0 || size == n {
            side[self.rng.below(n as u64) as usize] ^= true;
        }
        let one_way = self.config.faults.one_way && self.rng.chance(400);
        for from in 0..n {
            for to in 0..n {
                if side[from] && !side[to] {
                    self.cut.insert((from, to));
                }
                if !one_way && !side[from] && side[to] {
                    self.cut.insert((from, to));
                }
            }
        }
        self.report.partitions += 1;
    }

    /// What a Byzantine node does on receiving a frame, before its honest core sees it.
    fn before_delivery(&mut self, to: usize, from: usize, bytes: &[u8]) -> Result<(), Violation> {
        match self.nodes[to].behaviour {
            Behaviour::Replay => {
                if self.nodes[to].replay.len() < 64 {
                    self.nodes[to].replay.push(bytes.to_vec());
                } else {
                    let slot = self.rng.below(64) as usize;
                    self.nodes[to].replay[slot] = bytes.to_vec();
                }
            }
            Behaviour::DoubleVote => {
                if let Ok(NodeMessage::Transactions(transactions)) = NodeMessage::from_bytes(bytes)
                {
                    let key = self.nodes[to].key.clone().expect("masternodes have keys");
                    let epoch = self.nodes[to]
                        .node
                        .as_ref()
                        .expect("running")
                        .finality()
                        .committee()
                        .epoch();
                    // Each relayer hears a vote for what it relayed and nothing else, so no
                    // honest node sees both of two conflicting votes and refuses the second.
                    for transaction in transactions.iter() {
                        let message = vote_for_anything(&key, NETWORK, epoch, transaction);
                        if let NodeMessage::TxVotes(votes) = &message {
                            self.tally(to, votes.iter().cloned().collect())?;
                        }
                        self.transmit(to, from, message.to_bytes());
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn step(&mut self, index: usize, input: Input) -> Result<(), Violation> {
        self.step_batch(index, vec![input])
    }

    /// One step of a node: a tick to the current time, then `inputs`, handled as one batch.
    fn step_batch(&mut self, index: usize, inputs: Vec<Input>) -> Result<(), Violation> {
        let now = self.now + self.nodes[index].skew_ms;
        let Some(node) = self.nodes[index].node.as_mut() else {
            return Ok(());
        };
        let mut batch = Vec::with_capacity(inputs.len() + 1);
        if !inputs
            .iter()
            .all(|input| matches!(input, Input::Tick { .. }))
        {
            batch.push(Input::Tick { now_ms: now });
        }
        batch.extend(inputs);
        let actions = node
            .handle_batch(batch)
            .map_err(|e| Violation(format!("node {index} failed: {e}")))?;
        self.perform(index, actions)
    }

    fn perform(&mut self, index: usize, actions: Vec<Action>) -> Result<(), Violation> {
        for action in actions {
            match action {
                Action::Broadcast(message) => self.send(index, None, message)?,
                Action::Send { peer, message } => {
                    self.send(index, Some(peer.0 as usize), message)?
                }
                Action::Penalize { peer, reason } => {
                    if self.honest(index) {
                        self.report.penalties += 1;
                        let culprit = peer.0 as usize;
                        if self.honest(culprit) {
                            return Err(Violation(format!(
                                "honest node {index} penalised honest node {culprit}: {reason}"
                            )));
                        }
                    }
                }
                Action::Reply { id: _, reply } => {
                    if let Reply::Submitted(SubmitOutcome::Rejected(reason)) = reply {
                        // Only double-spends may be refused; the workload checks the rest at
                        // the end (an expected transaction must still make it into a block).
                        let _ = reason;
                    }
                }
                Action::ScheduleTick { at_ms } => {
                    let at = at_ms
                        .saturating_sub(self.nodes[index].skew_ms)
                        .max(self.now + 1);
                    let pending = self.nodes[index].pending_tick;
                    if pending.is_none_or(|p| at < p) {
                        self.nodes[index].pending_tick = Some(at);
                        self.schedule(at, Event::Tick { node: index });
                    }
                }
                Action::Event(event) => self.on_event(index, event)?,
            }
        }
        Ok(())
    }

    fn on_event(&mut self, index: usize, event: NodeEvent) -> Result<(), Violation> {
        if self.trace {
            let mut extra = String::new();
            if let NodeEvent::ViewChanged { leader, .. } = &event {
                let leader = *leader;
                let who: Vec<usize> = (0..self.nodes.len())
                    .filter(|i| {
                        self.nodes[*i].key.as_ref().map(SecretKey::public_key) == Some(leader)
                    })
                    .collect();
                extra = format!(" leader {who:?}");
            }
            eprintln!(
                "{:>6} node {index}: {event:?}{extra}",
                self.now - GENESIS_MS
            );
        }
        match event {
            NodeEvent::BlockCommitted { height, .. } => {
                let node = self.nodes[index].node.as_ref().expect("running");
                let store = node.store();
                let hash = store
                    .block_hash(height)
                    .ok()
                    .flatten()
                    .ok_or_else(|| Violation("a committed block is not stored".into()))?;
                let block = store
                    .block(&hash)
                    .ok()
                    .flatten()
                    .ok_or_else(|| Violation("a committed block has no body".into()))?;
                let deep = index == 0 || height.get() % 4 == 0;
                self.checker.on_commit(
                    &block,
                    store,
                    self.genesis_total,
                    &self.params,
                    deep,
                    |store| {
                        if std::env::var("SIM_DEBUG").is_ok() {
                            let mut sum = 0u128;
                            let mut count = 0;
                            let _ = store.for_each_utxo(|_, entry| {
                                sum += u128::from(entry.output.amount.units());
                                count += 1;
                            });
                            eprintln!(
                                "node {index} height {} flushed {:?} utxos {count} sum {sum} stats {:?}",
                                height.get(),
                                store.flushed_height(),
                                store.stats()
                            );
                        }
                        store
                            .verify_utxo_set()
                            .map_err(|e| format!("UTXO commitment mismatch: {e}"))?;
                        let mut sum = 0u128;
                        store
                            .for_each_utxo(|_, entry| sum += u128::from(entry.output.amount.units()))
                            .map_err(|e| e.to_string())?;
                        Ok(sum)
                    },
                )?;
            }
            NodeEvent::ViewChanged { view, .. } => {
                self.report.view_changes += 1;
                self.report.max_view = self.report.max_view.max(view);
            }
            NodeEvent::Evidence(_) => self.report.evidence += 1,
            _ => {}
        }
        Ok(())
    }

    fn send(
        &mut self,
        from: usize,
        to: Option<usize>,
        message: NodeMessage,
    ) -> Result<(), Violation> {
        let behaviour = self.nodes[from].behaviour;
        let key = self.nodes[from].key.clone();
        if self.trace
            && let NodeMessage::Bft(bft) = &message
        {
            let what = match bft {
                timecoin_consensus::BftMessage::Proposal(p) => format!(
                    "proposal v{} block {} cert {:?} just {}",
                    p.view,
                    p.block.hash(),
                    p.certificate.as_ref().map(|c| (c.view, c.block_hash)),
                    p.justification.len()
                ),
                timecoin_consensus::BftMessage::Prepare(v) => {
                    format!("prepare v{} {}", v.view, v.block_hash)
                }
                timecoin_consensus::BftMessage::Commit(v) => {
                    format!("commit v{} {}", v.view, v.block_hash)
                }
                timecoin_consensus::BftMessage::ViewChange(c) => format!(
                    "viewchange v{} claim {:?} cert {} block {}",
                    c.view_change.view,
                    c.view_change.prepared,
                    c.certificate.is_some(),
                    c.block.is_some()
                ),
            };
            eprintln!(
                "{:>6} node {from} sends h{} {what}",
                self.now - GENESIS_MS,
                bft.height().get()
            );
        }
        if self.trace
            && let NodeMessage::CompactProposal(p) = &message
        {
            eprintln!(
                "{:>6} node {from} sends h{} compact proposal v{} block {} cert {:?} just {}",
                self.now - GENESIS_MS,
                p.height.get(),
                p.view,
                p.block_hash(),
                p.certificate.as_ref().map(|c| (c.view, c.block_hash)),
                p.justification.len()
            );
        }
        {
            let node = self.nodes[from].node.as_ref().expect("running");
            let public = key.as_ref().map(SecretKey::public_key);
            let honest = behaviour == Behaviour::Honest;
            self.checker
                .on_send(
                    public,
                    honest,
                    node.store(),
                    node.finality().committee().epoch(),
                    node.tip_height(),
                    &message,
                )
                .map_err(|Violation(text)| {
                    Violation(format!(
                        "{text} [node {from} ({behaviour:?}) at tip {}, finality epoch {}]",
                        node.tip_height().get(),
                        node.finality().committee().epoch().get()
                    ))
                })?;
        }
        let certified: Vec<(&Transaction, &FinalityCertificate)> = match &message {
            NodeMessage::Certified {
                transaction,
                certificate,
            } => vec![(transaction, certificate)],
            NodeMessage::CertifiedMany(batch) => batch
                .iter()
                .map(|item| (&item.transaction, &item.certificate))
                .collect(),
            _ => Vec::new(),
        };
        for (transaction, certificate) in certified {
            let node = self.nodes[from].node.as_mut().expect("running");
            if let Ok(committee) = node.committee(certificate.epoch)
                && certificate.verify(&committee).is_ok()
            {
                self.checker.on_certificate(transaction, certificate)?;
            }
        }
        if let NodeMessage::TxVotes(votes) = &message {
            self.tally(from, votes.iter().cloned().collect())?;
        }
        let outgoing = match (&key, behaviour) {
            (Some(key), b) if b != Behaviour::Honest && b != Behaviour::Twin => corrupt_outgoing(
                b,
                key,
                NETWORK,
                self.params.epoch_length_blocks,
                message,
                &mut self.rng,
            ),
            _ => vec![(Target::All, message)],
        };
        for (target, message) in outgoing {
            let bytes = message.to_bytes();
            let destinations: Vec<usize> = match to {
                Some(peer) => vec![peer],
                None => (0..self.nodes.len()).filter(|peer| *peer != from).collect(),
            };
            for peer in destinations {
                let included = match target {
                    Target::All => true,
                    Target::EvenHalf => peer % 2 == 0,
                    Target::OddHalf => peer % 2 == 1,
                };
                if included {
                    self.transmit(from, peer, bytes.clone());
                }
            }
        }
        Ok(())
    }

    /// Feeds votes seen on the wire to the checker's own tallies, each checked once.
    fn tally(
        &mut self,
        from: usize,
        votes: Vec<timecoin_consensus::VoteBatch>,
    ) -> Result<(), Violation> {
        for vote in votes {
            let unseen: Vec<Txid> = vote
                .txids
                .iter()
                .filter(|txid| !self.checker.vote_seen(vote.epoch, **txid, vote.voter))
                .copied()
                .collect();
            if unseen.is_empty() {
                continue;
            }
            let Some(node) = self.nodes[from].node.as_mut() else {
                return Ok(());
            };
            let Ok(committee) = node.committee(vote.epoch) else {
                continue;
            };
            let Some(member) = committee.member(&vote.voter) else {
                continue;
            };
            if !vote.verify(NETWORK) {
                continue;
            }
            let weight = member.weight.get();
            let quorum = committee.quorum_weight().get();
            for txid in unseen {
                self.checker
                    .on_vote(vote.epoch, txid, vote.voter, weight, quorum)?;
            }
        }
        Ok(())
    }

    fn transmit(&mut self, from: usize, to: usize, bytes: Vec<u8>) {
        self.report.messages.0 += 1;
        let faulty_phase = self.now < self.safety_end;
        if self.cut.contains(&(from, to)) {
            self.report.messages.1 += 1;
            return;
        }
        let faults = self.config.faults.clone();
        if faulty_phase && self.rng.chance(faults.drop_per_mille) {
            self.report.messages.1 += 1;
            return;
        }
        let (low, high) = if faulty_phase {
            (faults.min_delay_ms, faults.max_delay_ms)
        } else {
            (1, 20)
        };
        let delay = self.rng.between(low, high);
        if faulty_phase && self.rng.chance(faults.duplicate_per_mille) {
            let again = self.rng.between(low, high * 2);
            self.schedule(
                self.now + again,
                Event::Deliver {
                    from,
                    to,
                    bytes: bytes.clone(),
                },
            );
        }
        self.schedule(self.now + delay, Event::Deliver { from, to, bytes });
    }

    // ----- clients -----

    fn live_node(&mut self) -> Option<usize> {
        let live: Vec<usize> = (0..self.nodes.len())
            .filter(|i| self.nodes[*i].node.is_some())
            .collect();
        if live.is_empty() {
            return None;
        }
        Some(live[self.rng.below(live.len() as u64) as usize])
    }

    fn take_coin(&mut self, at_least: Amount) -> Option<Coin> {
        let candidates: Vec<usize> = (0..self.coins.len())
            .filter(|i| self.coins[*i].amount > at_least)
            .collect();
        if candidates.is_empty() {
            return None;
        }
        let pick = candidates[self.rng.below(candidates.len() as u64) as usize];
        Some(self.coins.swap_remove(pick))
    }

    fn sign(&self, body: TxBody, owners: &[usize], node_key: Option<&SecretKey>) -> Transaction {
        let keys: Vec<&SecretKey> = owners.iter().map(|o| &self.clients[*o]).collect();
        Transaction::sign(body, &keys, node_key, NETWORK).expect("the workload signs correctly")
    }

    fn payment(&mut self, coin: Coin, to: usize, fraction_per_mille: u64) -> Transaction {
        let fee = Amount::from_units(FEE_UNITS).expect("small");
        let spendable = coin.amount.checked_sub(fee).expect("coin above fee");
        let paid = Amount::from_units((spendable.units() / 1000 * fraction_per_mille).max(1))
            .expect("below supply");
        let change = spendable.checked_sub(paid).expect("paid ≤ spendable");
        let mut outputs = vec![TxOut {
            amount: paid,
            address: address(&self.clients[to]),
        }];
        if !change.is_zero() {
            outputs.push(TxOut {
                amount: change,
                address: address(&self.clients[coin.owner]),
            });
        }
        let body = TxBody {
            kind: TxKind::Transfer,
            inputs: BoundedVec::new(vec![TxInput {
                prevout: coin.outpoint,
                public_key: self.clients[coin.owner].public_key(),
            }])
            .expect("one input"),
            outputs: BoundedVec::new(outputs).expect("two outputs"),
        };
        self.sign(body, &[coin.owner], None)
    }

    /// Adds an expected transaction's outputs to the clients' coins.
    fn expect(&mut self, transaction: &Transaction, owners: &[usize]) {
        let txid = transaction.txid();
        for (index, (output, owner)) in transaction.body.outputs.iter().zip(owners).enumerate() {
            self.coins.push(Coin {
                outpoint: OutPoint {
                    txid,
                    index: index as u32,
                },
                amount: output.amount,
                owner: *owner,
            });
        }
        self.expected.insert(txid, transaction.clone());
    }

    fn workload(&mut self) -> Result<(), Violation> {
        let fee = Amount::from_units(FEE_UNITS * 4).expect("small");
        if self.config.registrations && self.registered.is_none() && self.now > GENESIS_MS + 2_000 {
            return self.register();
        }
        if let Some((_, collateral, owner)) = self.registered
            && !self.deregistered
            && self.now > self.safety_end + 2_000
        {
            return self.deregister(collateral, owner);
        }
        let roll = self.rng.below(100);
        let Some(coin) = self.take_coin(fee) else {
            return Ok(());
        };
        let to = self.rng.below(CLIENTS as u64) as usize;
        let Some(node) = self.live_node() else {
            return Ok(());
        };
        if roll < 12 && self.now < self.safety_end {
            // A double-spend race: the same coin to two nodes at about the same time. At most
            // one may finalize; neither is expected to.
            self.report.double_spends += 1;
            let first = self.payment(coin, to, 500);
            let second = self.payment(coin, (to + 1) % CLIENTS, 400);
            let other = self.live_node().unwrap_or(node);
            self.checker.learn(&first);
            self.checker.learn(&second);
            self.submit(node, first)?;
            let gap = self.rng.below(30);
            self.schedule(
                self.now + gap,
                Event::Submit {
                    node: other,
                    transaction: Box::new(second),
                },
            );
            return Ok(());
        }
        let fraction = self.rng.between(100, 900);
        let transaction = self.payment(coin, to, fraction);
        let owners = [to, coin.owner];
        self.checker.learn(&transaction);
        if roll < 40 {
            // A chain: the recipient spends what it got at once, to a different node, before
            // any block can have included the parent.
            let txid = transaction.txid();
            let child_coin = Coin {
                outpoint: OutPoint { txid, index: 0 },
                amount: transaction.body.outputs[0].amount,
                owner: to,
            };
            self.expected.insert(txid, transaction.clone());
            if transaction.body.outputs.len() > 1 {
                self.coins.push(Coin {
                    outpoint: OutPoint { txid, index: 1 },
                    amount: transaction.body.outputs[1].amount,
                    owner: coin.owner,
                });
            }
            self.submit(node, transaction)?;
            if child_coin.amount > fee {
                let next = self.rng.below(CLIENTS as u64) as usize;
                let child = self.payment(child_coin, next, 500);
                let child_owners = [next, to];
                self.checker.learn(&child);
                self.expect(&child, &child_owners);
                let target = self.live_node().unwrap_or(node);
                let delay = self.rng.between(5, 200);
                self.schedule(
                    self.now + delay,
                    Event::Submit {
                        node: target,
                        transaction: Box::new(child),
                    },
                );
            } else {
                self.coins.push(child_coin);
            }
            return Ok(());
        }
        self.expect(&transaction, &owners);
        self.submit(node, transaction)
    }

    fn register(&mut self) -> Result<(), Violation> {
        let collateral = self.params.tier(Tier::Bronze).collateral;
        let needed = collateral
            .checked_add(Amount::from_units(FEE_UNITS * 4).expect("small"))
            .expect("small");
        let Some(coin) = self.take_coin(needed) else {
            return Ok(());
        };
        let node_key = secret(&mut self.rng);
        let fee = Amount::from_units(FEE_UNITS).expect("small");
        let change = coin
            .amount
            .checked_sub(collateral)
            .and_then(|rest| rest.checked_sub(fee))
            .expect("enough");
        let owner_address = address(&self.clients[coin.owner]);
        let body = TxBody {
            kind: TxKind::RegisterMasternode {
                collateral_output: 0,
                node_key: node_key.public_key(),
                tier: Tier::Bronze,
                network_address: BoundedString::new("/ip4/10.0.1.1/tcp/24100").expect("short"),
            },
            inputs: BoundedVec::new(vec![TxInput {
                prevout: coin.outpoint,
                public_key: self.clients[coin.owner].public_key(),
            }])
            .expect("one"),
            outputs: BoundedVec::new(vec![
                TxOut {
                    amount: collateral,
                    address: owner_address,
                },
                TxOut {
                    amount: change,
                    address: owner_address,
                },
            ])
            .expect("two"),
        };
        let transaction = self.sign(body, &[coin.owner], Some(&node_key));
        let txid = transaction.txid();
        self.checker.learn(&transaction);
        self.expected.insert(txid, transaction.clone());
        self.coins.push(Coin {
            outpoint: OutPoint { txid, index: 1 },
            amount: change,
            owner: coin.owner,
        });
        // The new masternode starts now, from genesis, and syncs.
        let index = self.add_node(Some(node_key), Behaviour::Honest);
        self.start_node(index)?;
        self.registered = Some((index, OutPoint { txid, index: 0 }, coin.owner));
        let Some(node) = self.live_node() else {
            return Ok(());
        };
        self.submit(node, transaction)
    }

    fn deregister(&mut self, collateral: OutPoint, owner: usize) -> Result<(), Violation> {
        self.deregistered = true;
        let amount = self.params.tier(Tier::Bronze).collateral;
        let fee = Amount::from_units(FEE_UNITS).expect("small");
        let body = TxBody {
            kind: TxKind::DeregisterMasternode { collateral },
            inputs: BoundedVec::new(vec![TxInput {
                prevout: collateral,
                public_key: self.clients[owner].public_key(),
            }])
            .expect("one"),
            outputs: BoundedVec::new(vec![TxOut {
                amount: amount.checked_sub(fee).expect("collateral above fee"),
                address: address(&self.clients[owner]),
            }])
            .expect("one"),
        };
        let transaction = self.sign(body, &[owner], None);
        self.deregistration = Some(transaction.txid());
        self.checker.learn(&transaction);
        self.expect(&transaction, &[owner]);
        let Some(node) = self.live_node() else {
            return Ok(());
        };
        self.submit(node, transaction)
    }

    fn submit(&mut self, node: usize, transaction: Transaction) -> Result<(), Violation> {
        self.requests += 1;
        let id = RequestId(self.requests);
        self.step(
            node,
            Input::Command {
                id,
                command: Command::SubmitTransaction(transaction),
            },
        )
    }

    fn script(&mut self, step: Step) -> Result<(), Violation> {
        match step {
            Step::DoubleSpend {
                first,
                second,
                gap_ms,
            } => {
                let fee = Amount::from_units(FEE_UNITS * 4).expect("small");
                let Some(coin) = self.take_coin(fee) else {
                    return Ok(());
                };
                let a = self.payment(coin, 1, 500);
                let b = self.payment(coin, 2, 400);
                self.checker.learn(&a);
                self.checker.learn(&b);
                self.report.double_spends += 1;
                self.submit(first, a)?;
                self.schedule(
                    self.now + gap_ms,
                    Event::Submit {
                        node: second,
                        transaction: Box::new(b),
                    },
                );
                Ok(())
            }
            Step::Isolate { node, duration_ms } => {
                for peer in 0..self.nodes.len() {
                    if peer != node {
                        self.cut.insert((node, peer));
                        self.cut.insert((peer, node));
                    }
                }
                self.schedule(self.now + duration_ms, Event::Heal);
                Ok(())
            }
            Step::Crash { node, down_ms } => {
                self.crash(node, down_ms);
                Ok(())
            }
        }
    }

    /// Clients re-send what has not made it into a block yet (a crashed node loses its pool,
    /// as a real one would), to a random node.
    fn resubmit(&mut self) -> Result<(), Violation> {
        let Some(reference) = self.honest_reference() else {
            return Ok(());
        };
        let missing: Vec<Transaction> = {
            let store = self.nodes[reference]
                .node
                .as_ref()
                .expect("running")
                .store();
            self.expected
                .values()
                .filter(|tx| {
                    store
                        .transaction_location(&tx.txid())
                        .ok()
                        .flatten()
                        .is_none()
                })
                .cloned()
                .collect()
        };
        for transaction in missing {
            if let Some(node) = self.live_node() {
                self.submit(node, transaction)?;
            }
        }
        Ok(())
    }

    /// The running honest node with the highest tip.
    fn honest_reference(&self) -> Option<usize> {
        (0..self.nodes.len())
            .filter(|i| self.honest(*i) && self.nodes[*i].node.is_some())
            .max_by_key(|i| {
                (
                    self.nodes[*i].node.as_ref().expect("running").tip_height(),
                    std::cmp::Reverse(*i),
                )
            })
    }

    fn honest_min_tip(&self) -> u64 {
        (0..self.nodes.len())
            .filter(|i| self.honest(*i))
            .filter_map(|i| self.nodes[i].node.as_ref().map(|n| n.tip_height().get()))
            .min()
            .unwrap_or(0)
    }

    /// A registration takes effect at the next epoch boundary and a deregistration likewise:
    /// the new masternode's commit signatures appear only in epochs after its registration's
    /// and up to its deregistration's.
    fn check_registration_epochs(&mut self, reference: usize) -> Result<(), Violation> {
        let Some((index, collateral, _)) = self.registered else {
            return Ok(());
        };
        let store = self.nodes[reference]
            .node
            .as_ref()
            .expect("running")
            .store();
        let located = |txid: &Txid| store.transaction_location(txid).ok().flatten();
        let Some(registered) = located(&collateral.txid) else {
            return Ok(());
        };
        let key = self.nodes[index]
            .key
            .as_ref()
            .expect("a masternode")
            .public_key();
        let first = self.params.epoch_of(registered.height).get() + 1;
        let last = self
            .deregistration
            .as_ref()
            .and_then(located)
            .map(|location| self.params.epoch_of(location.height).get());
        let tip = store.tip().map_or(0, |tip| tip.height.get());
        for height in 1..=tip {
            let Some(certificate) = store.certificate(Height(height)).ok().flatten() else {
                continue;
            };
            if certificate.votes.iter().any(|vote| vote.voter == key) {
                self.report.registered_masternode_signatures += 1;
                let epoch = self.params.epoch_of(Height(height)).get();
                if epoch < first || last.is_some_and(|last| epoch > last) {
                    return Err(Violation(format!(
                        "masternode registered at height {} (deregistered in epoch {last:?}) \
                         signed the commit of height {height} in epoch {epoch}",
                        registered.height.get()
                    )));
                }
            }
        }
        Ok(())
    }

    fn check_liveness(&mut self) -> Result<(), Violation> {
        let reference = self
            .honest_reference()
            .ok_or_else(|| Violation("no honest node is running at the end".into()))?;
        let top = self.nodes[reference]
            .node
            .as_ref()
            .expect("running")
            .tip_height();
        // With f silent members the back-off can eat several seconds per height (the quorum is
        // then every honest member), so "blocks keep committing" asks for a modest rate.
        let wanted_blocks = self.config.liveness_ms / self.params.block_interval_ms / 10;
        if top.get() < self.liveness_height + wanted_blocks {
            return Err(Violation(format!(
                "liveness: only {} blocks committed in the liveness phase (from {} to {}), wanted {wanted_blocks}",
                top.get().saturating_sub(self.liveness_height),
                self.liveness_height,
                top.get()
            )));
        }
        for index in 0..self.nodes.len() {
            if !self.honest(index) {
                continue;
            }
            let node = self.nodes[index]
                .node
                .as_ref()
                .expect("restarted for liveness");
            if node.tip_height().get() + 3 < top.get() {
                return Err(Violation(format!(
                    "liveness: honest node {index} is stuck at height {} while the chain is at {}",
                    node.tip_height().get(),
                    top.get()
                )));
            }
        }
        self.check_registration_epochs(reference)?;
        let store = self.nodes[reference]
            .node
            .as_ref()
            .expect("running")
            .store();
        for txid in self.expected.keys() {
            if store.transaction_location(txid).ok().flatten().is_none() {
                let status = self.nodes[reference]
                    .node
                    .as_ref()
                    .expect("running")
                    .status(txid)
                    .map_err(|e| Violation(e.to_string()))?;
                return Err(Violation(format!(
                    "liveness: valid transaction {txid} never made it into a block (status at \
                     node {reference}: {status:?})"
                )));
            }
        }
        Ok(())
    }
}
