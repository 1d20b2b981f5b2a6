//! The node process: storage, network, RPC and metrics around the deterministic node.
//!
//! One task owns the [`Node`] and feeds it every input in turn (peer messages, RPC commands,
//! ticks); the node's own writes are synchronous, so that task runs them with
//! `block_in_place` and performs the returned actions in order. Everything else (the swarm, the
//! RPC server, the metrics endpoint) talks to it through bounded channels.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use timecoin_network::{
    Misbehaviour, NetworkConfig, NetworkEvent, NetworkEvents, NetworkHandle, NodeIdentity, Topic,
    load_or_create_identity, load_psk, socket_multiaddr,
};
use timecoin_node::coalesce::bundle_relays;
use timecoin_node::{
    Action, Command, Input, Node, NodeConfig, NodeEvent, NodeMessage, PeerId, Reply, RequestId,
    init_store,
};
use timecoin_primitives::Network;
use timecoin_rpc::{AuthConfig, RpcServer, ServerConfig};
use timecoin_storage::{ChainStore, RedbChainDb, RedbOptions, StoreConfig};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, error, info, warn};

use crate::config::{self, Config, Override};
use crate::feed::{FEED_CAPACITY, FinalityFeed};
use crate::metrics::{self, Metrics, Readiness};
use crate::{genesis, rpc_methods, runtime};

/// The chain database inside the data directory.
pub const CHAIN_DB_FILE: &str = "chain.redb";
/// The network identity of a node that is not a masternode.
pub const IDENTITY_FILE: &str = "identity.key";
/// Requests from RPC queued for the node task at most; beyond it RPC callers wait.
const REQUEST_QUEUE: usize = 1024;
/// The node gets a tick at least this often, so its clock never lags by more.
const MAX_TICK_GAP: Duration = Duration::from_millis(50);
/// Most inputs the node handles in one step (one group commit). Bounds the latency one step
/// adds to the inputs in it, and the memory of the step's actions.
const MAX_STEP_INPUTS: usize = 512;
/// Least time between two rounds of relay gossip. Relays of the steps in between are merged
/// into one bundle of all kinds (more only past 512 KB), so a node publishes about one relay
/// message per round however fast it steps: at most ~50 a second, inside its peers' default
/// limit of 100 messages per second per publisher (ADR 0010), with room for heartbeats and
/// block consensus. An idle node relays at once; under load a relay waits at most this long,
/// and a payment waits for two rounds (its transaction, then the votes).
const RELAY_INTERVAL: Duration = Duration::from_millis(20);
/// Least time between two syncs of the node's step records while it is busy (ADR 0015). The
/// steps in between run at once, but their actions wait for the sync. An idle node syncs after
/// every step; block consensus messages and direct sends are synced and sent at once; relays
/// are synced just before their gossip round, so pacing syncs adds nothing to them.
const SYNC_INTERVAL: Duration = RELAY_INTERVAL;
/// How long open RPC connections may take to finish at shutdown.
const RPC_STOP_GRACE: Duration = Duration::from_secs(2);
/// How often gauges are refreshed from the node and the network.
const METRICS_REFRESH: Duration = Duration::from_secs(1);

/// What `timed` was asked to run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The data directory.
    pub data_dir: PathBuf,
    /// The network, when given on the command line (else from the config file, else mainnet).
    pub network: Network,
    /// `--section.key=value` settings.
    pub overrides: Vec<Override>,
}

/// The node as the daemon runs it.
pub type DaemonNode = Node<RedbChainDb>;

/// A read-only look at the node, run on the node task between inputs.
pub type ReadFn = Box<dyn FnOnce(&DaemonNode) + Send>;

/// What RPC methods ask of the node task.
pub enum Request {
    /// A node command; the reply comes back on the channel.
    Command(Command, oneshot::Sender<Reply>),
    /// A read of the node's state or store.
    Read(ReadFn),
}

/// Milliseconds since the Unix epoch: the node's clock.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Which gossip topic carries a message kind.
fn topic_of(message: &NodeMessage) -> Topic {
    match message {
        NodeMessage::Transactions(_) | NodeMessage::Relay(_) => Topic::Transactions,
        NodeMessage::TxVotes(_) | NodeMessage::Certified { .. } | NodeMessage::CertifiedMany(_) => {
            Topic::Votes
        }
        NodeMessage::Heartbeat { .. } => Topic::Heartbeats,
        _ => Topic::Consensus,
    }
}

/// Stable small ids for libp2p peers, as the node wants them.
#[derive(Default)]
struct PeerMap {
    ids: HashMap<timecoin_network::PeerId, PeerId>,
    peers: HashMap<PeerId, timecoin_network::PeerId>,
}

impl PeerMap {
    fn id(&mut self, peer: timecoin_network::PeerId) -> PeerId {
        if let Some(id) = self.ids.get(&peer) {
            return *id;
        }
        let id = PeerId(self.ids.len() as u64 + 1);
        self.ids.insert(peer, id);
        self.peers.insert(id, peer);
        id
    }

    fn peer(&self, id: PeerId) -> Option<timecoin_network::PeerId> {
        self.peers.get(&id).copied()
    }
}

/// Whether the node refuses clients' transactions as busy (ADR 0026), as of its last step. The
/// RPC server answers such a client at once from it, instead of after the queue of work the node
/// is too busy for; the node still decides for every transaction that reaches it.
#[derive(Debug, Default)]
pub struct BusyGate {
    refusing: AtomicBool,
    pending: AtomicUsize,
    limit: AtomicUsize,
    refused: AtomicU64,
}

impl BusyGate {
    fn update(&self, node: &DaemonNode) {
        let refusing = node.refusing_clients();
        if let Some((pending, limit)) = refusing {
            self.pending.store(pending, Ordering::Relaxed);
            self.limit.store(limit, Ordering::Relaxed);
        }
        self.refusing.store(refusing.is_some(), Ordering::Relaxed);
    }

    /// `(pending, limit)` if a client's transaction is to be refused now; the refusal is
    /// counted.
    pub fn refuse(&self) -> Option<(usize, usize)> {
        self.refusing.load(Ordering::Relaxed).then(|| {
            self.refused.fetch_add(1, Ordering::Relaxed);
            (
                self.pending.load(Ordering::Relaxed),
                self.limit.load(Ordering::Relaxed),
            )
        })
    }

    /// Refusals made here, without the node (it counts its own).
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

/// Everything RPC methods share.
pub struct RpcContext {
    /// The node task's queue.
    pub requests: mpsc::Sender<Request>,
    /// The swarm.
    pub network: NetworkHandle,
    /// The network the node runs.
    pub chain: Network,
    /// The chain parameters.
    pub params: timecoin_ledger::ChainParams,
    /// When the process started.
    pub started: Instant,
    /// Flipping it to true stops the node (the `stop` method).
    pub shutdown: watch::Sender<bool>,
    /// The metrics, for RPC request counts.
    pub metrics: Arc<Metrics>,
    /// The transactions that became final, for `waitforfinalized`.
    pub feed: Arc<FinalityFeed>,
    /// Whether the store keeps the address index (`storage.address_index`).
    pub address_index: bool,
    /// Whether clients' transactions are refused as the node is busy.
    pub busy: Arc<BusyGate>,
}

/// Sizes the pool that checks signatures in parallel (rayon's global pool, used by the ledger).
/// It can be sized once per process: a second node run in the same process (tests) keeps the
/// first one's pool, which only changes how fast it verifies.
fn init_verify_threads(threads: u32) {
    let mut builder =
        rayon::ThreadPoolBuilder::new().thread_name(|index| format!("verify-{index}"));
    if threads > 0 {
        builder = builder.num_threads(threads as usize);
    }
    match builder.build_global() {
        Ok(()) => info!(
            threads = rayon::current_num_threads(),
            "signature check threads"
        ),
        Err(error) => warn!(%error, "signature check threads were already set up"),
    }
}

/// Runs a node until SIGINT/SIGTERM or the `stop` RPC.
pub async fn run(options: RunOptions) -> Result<(), String> {
    let (config, config_path) =
        config::load(&options.data_dir, options.network, &options.overrides)
            .map_err(|e| e.to_string())?;
    runtime::init_logging(&config.log.filter, config.log.format)?;
    let network = config.network();
    if network != options.network {
        return Err(format!(
            "{} says network = \"{network}\", but the command line asked for {}; use another data directory per network",
            config_path.display(),
            options.network
        ));
    }
    info!(network = %network, data_dir = %options.data_dir.display(), config = %config_path.display(), "starting timed");
    init_verify_threads(config.node.verify_threads);
    let shutdown_signal =
        runtime::shutdown_signal().map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let (shutdown_sender, mut shutdown) = watch::channel(false);
    {
        let sender = shutdown_sender.clone();
        let mut signal = shutdown_signal;
        tokio::spawn(async move {
            if signal.wait_for(|stop| *stop).await.is_ok() {
                let _ = sender.send(true);
            }
        });
    }

    let (genesis, params) = genesis::load(&options.data_dir, network)?;
    let store = open_store(&options, &config, network, &genesis, &params)?;
    let node_key = if config.masternode.enabled {
        let path = options.data_dir.join(&config.masternode.key_file);
        let identity = load_or_create_identity(&path)
            .map_err(|e| format!("masternode key {}: {e}", path.display()))?;
        info!(node_key = %identity.public_key(), "running as a masternode");
        Some(identity.secret_key())
    } else {
        None
    };
    let identity = match &node_key {
        // A masternode's peer id is its registered key, so peers can tell it is who it claims.
        Some(key) => NodeIdentity::from_secret_key(key),
        None => load_or_create_identity(&options.data_dir.join(IDENTITY_FILE))
            .map_err(|e| e.to_string())?,
    };
    let mut node_config = NodeConfig::new(params.clone(), node_key);
    node_config.base_timeout_ms = config.consensus.round_timeout_ms;
    node_config.max_timeout_ms = config.consensus.max_round_timeout_ms;
    node_config.mempool = timecoin_mempool::MempoolConfig {
        max_transactions: NonZeroUsize::new(config.mempool.max_transactions as usize)
            .expect("validated"),
        max_bytes: NonZeroUsize::new((config.mempool.max_mb as usize) << 20).expect("validated"),
    };
    node_config.admission = timecoin_node::AdmissionConfig {
        backlog_ms: config.mempool.busy_backlog_ms,
        min_backlog: usize::try_from(config.mempool.busy_min_backlog).unwrap_or(usize::MAX),
        ..timecoin_node::AdmissionConfig::default()
    };
    let (mut node, initial_actions) =
        tokio::task::block_in_place(|| Node::open(store, node_config, now_ms()))
            .map_err(|e| format!("cannot open the node: {e}"))?;
    info!(height = node.tip_height().get(), "chain loaded");

    let (net, mut events) = start_network(&options, &config, network, &identity).await?;
    info!(peer_id = %net.local_peer_id(), listen = %config.node.listen_address, "network up");

    let metrics = Arc::new(Metrics::new());
    let (readiness_sender, readiness) = watch::channel(Readiness::default());
    let metrics_task = if config.metrics.enabled {
        let listener = metrics::bind(config.metrics.bind).await.map_err(|e| {
            format!(
                "cannot listen for metrics on {} (metrics.bind): {e}",
                config.metrics.bind
            )
        })?;
        info!(address = %config.metrics.bind, "metrics at /metrics, /health, /ready");
        Some(tokio::spawn(metrics::serve(
            listener,
            metrics.clone(),
            readiness,
            shutdown.clone(),
        )))
    } else {
        None
    };

    let busy = Arc::new(BusyGate::default());
    busy.update(&node);
    let (request_sender, mut requests) = mpsc::channel::<Request>(REQUEST_QUEUE);
    let feed = Arc::new(FinalityFeed::new(FEED_CAPACITY));
    let context = Arc::new(RpcContext {
        requests: request_sender,
        network: net.clone(),
        chain: network,
        params: params.clone(),
        started: Instant::now(),
        shutdown: shutdown_sender.clone(),
        metrics: metrics.clone(),
        feed: feed.clone(),
        address_index: config.storage.address_index,
        busy: busy.clone(),
    });
    let rpc = if config.rpc.enabled {
        let auth = if config.rpc.user.is_empty() {
            AuthConfig::Cookie {
                dir: options.data_dir.clone(),
            }
        } else {
            AuthConfig::UserPassword {
                user: config.rpc.user.clone(),
                password: config.rpc.password.clone(),
            }
        };
        let mut server_config = ServerConfig::new(config.rpc.bind.port(), auth);
        server_config.bind = config.rpc.bind;
        server_config.max_body_bytes = config.rpc.max_request_bytes as usize;
        server_config.max_connections = config.rpc.max_concurrent_requests as usize;
        let server = RpcServer::start(server_config, rpc_methods::methods(context.clone()))
            .await
            .map_err(|e| format!("cannot start RPC (rpc.bind = {}): {e}", config.rpc.bind))?;
        info!(address = %server.local_addr(), "RPC listening");
        Some(server)
    } else {
        None
    };

    let mut state = LoopState::new(feed);
    state.perform(&net, &metrics, initial_actions).await;
    let mut last_metrics = Instant::now() - METRICS_REFRESH;
    let outcome: Result<(), String> = loop {
        let deadline = {
            let gap = state
                .next_tick_ms
                .map(|at| Duration::from_millis(at.saturating_sub(now_ms())))
                .unwrap_or(MAX_TICK_GAP)
                .min(MAX_TICK_GAP);
            let tick = tokio::time::Instant::now() + gap;
            let tick = state.relay_due().map_or(tick, |due| tick.min(due.into()));
            state.sync_due().map_or(tick, |due| tick.min(due.into()))
        };
        // Whether the input that starts this step is block-consensus gossip (`drain_ready`).
        let mut consensus_first = false;
        let input = tokio::select! {
            biased;
            _ = shutdown.changed() => break Ok(()),
            event = events.recv() => match event {
                Some(event) => {
                    consensus_first = event.is_consensus();
                    state.network_input(event, &net).await
                }
                None => break Err("the network stopped unexpectedly".to_string()),
            },
            request = requests.recv() => match request {
                Some(Request::Command(command, reply)) => {
                    state.next_request += 1;
                    let id = RequestId(state.next_request);
                    state.pending.insert(id, reply);
                    Some(Input::Command { id, command })
                }
                Some(Request::Read(read)) => {
                    read(&node);
                    None
                }
                None => None,
            },
            _ = tokio::time::sleep_until(deadline) => {
                state.next_tick_ms = None;
                Some(Input::Tick { now_ms: now_ms() })
            },
        };
        let mut prompt = false;
        if let Some(input) = input {
            // Keep the node's clock current before it handles anything else.
            let mut inputs = vec![Input::Tick { now_ms: now_ms() }];
            if !matches!(input, Input::Tick { .. }) {
                inputs.push(input);
            }
            // Take whatever else is already queued into the same step: under load one fsync
            // and one merged relay then serve many payments, instead of one each.
            state
                .drain_ready(
                    &mut inputs,
                    consensus_first,
                    &mut events,
                    &mut requests,
                    &net,
                    &node,
                )
                .await;
            let started = Instant::now();
            let result = tokio::task::block_in_place(|| node.handle_batch_unsynced(inputs));
            metrics
                .node_step_seconds
                .observe(started.elapsed().as_secs_f64());
            busy.update(&node);
            match result {
                Ok(actions) => {
                    prompt = actions.iter().any(wants_prompt_sync);
                    let unheld = state.hold(actions);
                    state.perform(&net, &metrics, unheld).await;
                }
                Err(e) => {
                    break Err(format!(
                        "the node stopped: {e} (nothing of the failed step was sent; restart to recover from the last committed block)"
                    ));
                }
            }
        }
        let now = Instant::now();
        let due = |at: Option<Instant>| at.is_some_and(|at| at <= now);
        // A relay round takes the relays of every step so far, synced first.
        if (prompt || due(state.sync_due()) || due(state.relay_due()))
            && let Err(e) = state.sync_and_perform(&mut node, &net, &metrics).await
        {
            break Err(e);
        }
        if due(state.relay_due()) {
            state.flush_relays(&net).await;
        }
        // A fast catch-up can start and end between two refreshes (200 blocks took 10 ms on
        // CI), so falling behind or catching up refreshes at once: the first "syncing" line,
        // the "caught up" line and `/ready` then never miss it.
        let status = node.sync_status();
        let behind = metrics::is_behind(status.height.get(), status.target_height.get());
        if last_metrics.elapsed() >= METRICS_REFRESH || behind != metrics.sync().behind {
            last_metrics = Instant::now();
            refresh_metrics(&mut node, &net, &metrics, &readiness_sender, &busy);
        }
    };

    // Votes and certificates of the last steps are owed to the peers once durable.
    if outcome.is_ok()
        && let Err(e) = state.sync_and_perform(&mut node, &net, &metrics).await
    {
        warn!("{e}");
    }
    state.flush_relays(&net).await;
    info!("stopping: RPC, network, then storage");
    // The node task no longer serves requests: fail the queued and in-flight ones now, or the
    // RPC server's graceful stop would wait for their replies forever (it did, under load).
    requests.close();
    while requests.try_recv().is_ok() {}
    state.pending.clear();
    if let Some(server) = rpc {
        // Bounded all the same: a client that never reads its answer must not hold up the exit.
        if tokio::time::timeout(RPC_STOP_GRACE, server.shutdown())
            .await
            .is_err()
        {
            warn!("RPC connections still open after {RPC_STOP_GRACE:?}; closing them");
        }
    }
    let _ = shutdown_sender.send(true);
    let _ = net.shutdown().await;
    if let Some(task) = metrics_task {
        let _ = task.await;
    }
    let mut store = node.into_store();
    tokio::task::block_in_place(|| store.flush())
        .map_err(|e| format!("flushing storage at shutdown failed: {e}"))?;
    info!("stopped cleanly");
    outcome
}

fn open_store(
    options: &RunOptions,
    config: &Config,
    network: Network,
    genesis: &timecoin_primitives::Block,
    params: &timecoin_ledger::ChainParams,
) -> Result<RedbChainDb, String> {
    let path = options.data_dir.join(CHAIN_DB_FILE);
    let mut store_config = StoreConfig::new(network, genesis.hash());
    if config.storage.utxo_cache_mb > 0 {
        store_config.cache_bytes = (config.storage.utxo_cache_mb as usize) << 20;
    }
    if config.storage.prune_keep_blocks > 0 {
        store_config.prune_keep_blocks = Some(config.storage.prune_keep_blocks);
    }
    store_config.index_addresses = config.storage.address_index;
    let engine = RedbOptions {
        page_cache_bytes: store_config.page_cache_bytes,
        quick_repair: config.storage.quick_repair,
        ..RedbOptions::default()
    };
    let mut store =
        tokio::task::block_in_place(|| RedbChainDb::open_path_with(&path, store_config, engine))
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    if let Some(switch) = store.stats().address_index_switch {
        if switch.built {
            info!(
                entries = switch.entries,
                seconds = switch.duration.as_secs_f64(),
                "built the address index from the UTXO set (storage.address_index turned on)"
            );
        } else {
            info!(
                seconds = switch.duration.as_secs_f64(),
                "dropped the address index (storage.address_index turned off)"
            );
        }
    }
    let histogram = metrics::storage_commit_histogram();
    store.set_commit_observer(Box::new(move |took| histogram.observe(took.as_secs_f64())));
    if store.tip().is_none() {
        tokio::task::block_in_place(|| init_store(&mut store, genesis, params))
            .map_err(|e| format!("cannot write the genesis block: {e}"))?;
        info!(hash = %genesis.hash(), "genesis written");
    }
    Ok(store)
}

async fn start_network(
    options: &RunOptions,
    config: &Config,
    network: Network,
    identity: &NodeIdentity,
) -> Result<(NetworkHandle, NetworkEvents), String> {
    let mut net_config = NetworkConfig::new(
        network,
        socket_multiaddr(config.node.listen_address),
        options.data_dir.clone(),
    );
    net_config.bootstrap = config.node.bootstrap_addresses()?;
    net_config.max_peers = config.node.max_peers;
    net_config.max_inbound = config.node.max_inbound_peers;
    net_config.messages_per_second = config.node.messages_per_second_per_peer;
    net_config.ban_duration = Duration::from_secs(config.node.ban_duration_secs);
    if !config.node.network_key_file.is_empty() {
        let path = options.data_dir.join(&config.node.network_key_file);
        net_config.psk = Some(
            load_psk(&path)
                .map_err(|e| format!("node.network_key_file {}: {e}", path.display()))?,
        );
    }
    timecoin_network::start(net_config, identity)
        .await
        .map_err(|e| {
            format!(
                "cannot start the network (node.listen_address = {}): {e}",
                config.node.listen_address
            )
        })
}

struct LoopState {
    peers: PeerMap,
    pending: HashMap<RequestId, oneshot::Sender<Reply>>,
    next_request: u64,
    next_tick_ms: Option<u64>,
    /// Relays (transactions, votes, certificates) waiting for the next gossip round.
    relays: Vec<Action>,
    /// When relays were last published.
    last_relay: Instant,
    /// Actions of steps whose records are not durable yet: performed after the next sync.
    held: Vec<Action>,
    /// Whether steps ran since the last sync.
    unsynced: bool,
    /// Where performed finality events go, for RPC clients.
    feed: Arc<FinalityFeed>,
    /// When the step records were last synced.
    last_sync: Instant,
}

/// Whether an action must wait for the sync of its step: a message to peers may carry a vote or
/// a block statement whose record must be durable before it leaves. Replies, events, penalties
/// and tick requests commit this node to nothing: a reply reports a certificate (valid whatever
/// happens to this node, a quorum signed it) or an admission (a mempool, which no node keeps
/// across a crash), so they go at once, and RPC clients do not wait for the pacing.
fn needs_durability(action: &Action) -> bool {
    matches!(action, Action::Broadcast(_) | Action::Send { .. })
}

/// Whether an action should not wait for the paced sync: block consensus and direct messages
/// (a handful per block, and a block's latency is the sum of its phases). Relays wait for
/// their gossip round anyway.
fn wants_prompt_sync(action: &Action) -> bool {
    match action {
        Action::Broadcast(message) => !is_relay(message),
        Action::Send { .. } => true,
        Action::Penalize { .. }
        | Action::Reply { .. }
        | Action::ScheduleTick { .. }
        | Action::Event(_) => false,
    }
}

/// The messages published in paced gossip rounds.
fn is_relay(message: &NodeMessage) -> bool {
    matches!(
        message,
        NodeMessage::Transactions(_)
            | NodeMessage::TxVotes(_)
            | NodeMessage::Certified { .. }
            | NodeMessage::CertifiedMany(_)
    )
}

impl LoopState {
    /// A loop that has relayed and synced nothing yet: the first relay and sync go at once.
    fn new(feed: Arc<FinalityFeed>) -> LoopState {
        LoopState {
            feed,
            peers: PeerMap::default(),
            pending: HashMap::new(),
            next_request: 0,
            next_tick_ms: None,
            relays: Vec::new(),
            last_relay: Instant::now() - RELAY_INTERVAL,
            held: Vec::new(),
            unsynced: false,
            last_sync: Instant::now() - SYNC_INTERVAL,
        }
    }

    /// Keeps a step's messages to peers until its records are durable, and returns the
    /// actions that need not wait (see [`needs_durability`]), in order.
    fn hold(&mut self, actions: Vec<Action>) -> Vec<Action> {
        self.unsynced = true;
        let (held, unheld): (Vec<Action>, Vec<Action>) =
            actions.into_iter().partition(needs_durability);
        self.held.extend(held);
        unheld
    }

    /// When the unsynced steps must be synced: at once if the last sync was long enough ago
    /// (an idle node adds no delay), else one [`SYNC_INTERVAL`] after it. `None` when every
    /// step is synced.
    fn sync_due(&self) -> Option<Instant> {
        self.unsynced.then(|| self.last_sync + SYNC_INTERVAL)
    }

    /// Syncs the steps handled since the last sync, then performs their actions in order.
    async fn sync_and_perform(
        &mut self,
        node: &mut DaemonNode,
        net: &NetworkHandle,
        metrics: &Metrics,
    ) -> Result<(), String> {
        if !self.unsynced {
            return Ok(());
        }
        tokio::task::block_in_place(|| node.sync_steps()).map_err(|e| {
            format!(
                "the node stopped: {e} (nothing of the unsynced steps was sent; restart to recover from the last committed block)"
            )
        })?;
        self.unsynced = false;
        self.last_sync = Instant::now();
        let actions = std::mem::take(&mut self.held);
        self.perform(net, metrics, actions).await;
        Ok(())
    }

    /// When the waiting relays go out: at once if the last round was long enough ago, else
    /// one [`RELAY_INTERVAL`] after it. `None` when nothing waits.
    fn relay_due(&self) -> Option<Instant> {
        (!self.relays.is_empty()).then(|| self.last_relay + RELAY_INTERVAL)
    }

    /// Publishes the waiting relays, all kinds merged into bundles (one message per round
    /// unless the round is large).
    async fn flush_relays(&mut self, net: &NetworkHandle) {
        self.last_relay = Instant::now();
        let messages = std::mem::take(&mut self.relays)
            .into_iter()
            .filter_map(|action| match action {
                Action::Broadcast(message) => Some(message),
                _ => None,
            })
            .collect();
        for message in bundle_relays(messages) {
            let topic = topic_of(&message);
            if let Err(e) = net.publish(topic, message.to_bytes()).await {
                debug!(kind = message.kind(), error = %e, "relay not sent");
            }
        }
    }

    /// Moves inputs that are ready now (network events and RPC requests, alternately, so
    /// neither starves) into `inputs`, up to [`MAX_STEP_INPUTS`], without waiting.
    ///
    /// Block-consensus messages come first, and a step that has any (`consensus_first`: the
    /// step's first input is one) takes nothing else: under load a step of transaction and
    /// vote bundles takes a long while, and the block round would wait for it (then grow the
    /// next block, which takes longer still).
    async fn drain_ready(
        &mut self,
        inputs: &mut Vec<Input>,
        consensus_first: bool,
        events: &mut NetworkEvents,
        requests: &mut mpsc::Receiver<Request>,
        net: &NetworkHandle,
        node: &DaemonNode,
    ) {
        let mut consensus = consensus_first;
        while inputs.len() < MAX_STEP_INPUTS {
            let Some(event) = events.try_recv_consensus() else {
                break;
            };
            consensus = true;
            if let Some(input) = self.network_input(event, net).await {
                inputs.push(input);
            }
        }
        if consensus {
            return;
        }
        let mut events_open = true;
        let mut requests_open = true;
        while inputs.len() < MAX_STEP_INPUTS && (events_open || requests_open) {
            if events_open {
                match events.try_recv() {
                    Ok(event) => {
                        if let Some(input) = self.network_input(event, net).await {
                            inputs.push(input);
                        }
                    }
                    Err(_) => events_open = false,
                }
            }
            if requests_open {
                match requests.try_recv() {
                    Ok(Request::Command(command, reply)) => {
                        self.next_request += 1;
                        let id = RequestId(self.next_request);
                        self.pending.insert(id, reply);
                        inputs.push(Input::Command { id, command });
                    }
                    Ok(Request::Read(read)) => read(node),
                    Err(_) => requests_open = false,
                }
            }
        }
    }

    async fn network_input(&mut self, event: NetworkEvent, net: &NetworkHandle) -> Option<Input> {
        match event {
            NetworkEvent::Gossip { from, data, .. } | NetworkEvent::Message { from, data } => {
                Some(Input::PeerMessage {
                    peer: self.peers.id(from),
                    bytes: data,
                })
            }
            NetworkEvent::Request { channel, .. } => {
                // The node speaks in messages, not requests; answer so the peer is not left waiting.
                let _ = net.respond(channel, Vec::new()).await;
                None
            }
            NetworkEvent::PeerConnected { peer, inbound } => {
                debug!(%peer, inbound, "peer connected");
                Some(Input::PeerConnected {
                    peer: self.peers.id(peer),
                })
            }
            NetworkEvent::PeerDisconnected { peer } => {
                debug!(%peer, "peer disconnected");
                Some(Input::PeerDisconnected {
                    peer: self.peers.id(peer),
                })
            }
            NetworkEvent::PeerBanned { peer, until } => {
                warn!(%peer, ?until, "peer banned");
                None
            }
        }
    }

    async fn perform(&mut self, net: &NetworkHandle, metrics: &Metrics, actions: Vec<Action>) {
        // The feed takes its events together after the loop: one lock and one wake-up of
        // waiting clients per batch of actions rather than per transaction.
        let mut events = Vec::new();
        for action in actions {
            match action {
                Action::Broadcast(message) if is_relay(&message) => {
                    self.relays.push(Action::Broadcast(message))
                }
                Action::Broadcast(message) => {
                    let topic = topic_of(&message);
                    if let Err(e) = net.publish(topic, message.to_bytes()).await {
                        debug!(kind = message.kind(), error = %e, "broadcast not sent");
                    }
                }
                Action::Send { peer, message } => {
                    if let Some(peer) = self.peers.peer(peer) {
                        let net = net.clone();
                        // Direct sends wait for the peer's acknowledgement; do not hold up the node.
                        tokio::spawn(async move {
                            if let Err(e) = net.send(peer, message.to_bytes()).await {
                                debug!(%peer, kind = message.kind(), error = %e, "direct message not sent");
                            }
                        });
                    }
                }
                Action::Penalize { peer, reason } => {
                    if let Some(peer) = self.peers.peer(peer) {
                        warn!(%peer, %reason, "peer misbehaved");
                        let _ = net.report(peer, Misbehaviour::InvalidMessage).await;
                    }
                }
                Action::Reply { id, reply } => {
                    if let Some(sender) = self.pending.remove(&id) {
                        let _ = sender.send(reply);
                    }
                }
                Action::ScheduleTick { at_ms } => {
                    self.next_tick_ms = Some(self.next_tick_ms.map_or(at_ms, |t| t.min(at_ms)));
                }
                Action::Event(event) => {
                    log_event(&event, metrics);
                    events.push(event);
                }
            }
        }
        self.feed.record(&events);
    }
}

fn log_event(event: &NodeEvent, metrics: &Metrics) {
    match event {
        NodeEvent::TransactionFinalized { txid, latency_ms } => {
            metrics.finalized_transactions.inc();
            metrics
                .finality_latency_seconds
                .observe(*latency_ms as f64 / 1000.0);
            debug!(%txid, latency_ms, "transaction final");
        }
        NodeEvent::BlockCommitted {
            height,
            hash,
            view,
            transactions,
            synced,
        } => {
            metrics.blocks_committed.inc();
            metrics.chain_height.set(height.get() as i64);
            info!(height = height.get(), %hash, view, transactions, synced, "block committed");
        }
        NodeEvent::FinalInBlock { height, txids } => {
            debug!(
                height = height.get(),
                transactions = txids.len(),
                "final by their block, not certified here first"
            );
        }
        NodeEvent::ViewChanged {
            height,
            view,
            leader,
        } => {
            metrics.view_changes.inc();
            metrics.consensus_view.set(i64::from(*view));
            info!(height = height.get(), view, %leader, "view change");
        }
        NodeEvent::Evidence(evidence) => {
            warn!(offender = %evidence.offender(), "equivocation evidence")
        }
        NodeEvent::ProposalRejected {
            height,
            view,
            reason,
        } => {
            warn!(height = height.get(), view, %reason, "proposal rejected")
        }
        NodeEvent::RefusedToEquivocate(what) => {
            error!(%what, "refused to sign a conflicting statement")
        }
        NodeEvent::EpochStarted { epoch, members } => {
            info!(epoch = epoch.get(), members, "epoch started")
        }
    }
}

fn refresh_metrics(
    node: &mut DaemonNode,
    net: &NetworkHandle,
    metrics: &Metrics,
    readiness: &watch::Sender<Readiness>,
    busy: &BusyGate,
) {
    let stats = net.stats();
    metrics.set_peers(stats.inbound_peers as i64, stats.outbound_peers as i64);
    metrics.banned_peers.set(stats.banned_peers as i64);
    metrics.set_network_totals(&stats);
    let (flushes, seconds, waited) = metrics.set_storage_totals(node.store().stats());
    metrics
        .storage_disk_bytes
        .set(i64::try_from(node.store().size_on_disk()).unwrap_or(i64::MAX));
    if flushes > 0 {
        // Flushes run beside the node (ADR 0019); the wait is what stalled it, and under load
        // a long one shows as a pause in finality and can cost a view change.
        info!(
            flushes,
            seconds = format!("{seconds:.2}"),
            waited = format!("{waited:.2}"),
            "UTXO cache flushed to the database"
        );
    }
    let height = node.tip_height().get();
    metrics.chain_height.set(height as i64);
    let committee = node.finality().committee();
    metrics
        .active_masternodes
        .set(committee.members().len() as i64);
    metrics
        .committee_weight
        .set(committee.total_weight().0 as i64);
    metrics.consensus_view.set(i64::from(node.bft().view()));
    // The node keeps its pool private; the MempoolInfo command is its read-only summary. It
    // changes no state, so the only other action it returns, a ScheduleTick, repeats the time the
    // previous input already scheduled and can be dropped.
    let command = Input::Command {
        id: RequestId(u64::MAX),
        command: Command::MempoolInfo,
    };
    if let Ok(actions) = node.handle(command) {
        for action in actions {
            if let Action::Reply {
                reply: Reply::Mempool(info),
                ..
            } = action
            {
                metrics
                    .mempool_transactions
                    .set(i64::try_from(info.pending_transactions).unwrap_or(i64::MAX));
                metrics
                    .mempool_bytes
                    .set(i64::try_from(info.pending_bytes).unwrap_or(i64::MAX));
                metrics.mempool_admission_limit.set(
                    info.admission_limit
                        .map_or(-1, |limit| i64::try_from(limit).unwrap_or(i64::MAX)),
                );
                // Refusals are counted by the node and by the RPC server's gate; the counter
                // catches up to their sum.
                let refused = info.refused_busy + busy.refused();
                let counted = metrics.mempool_refused_busy.get();
                if refused > counted {
                    metrics.mempool_refused_busy.inc_by(refused - counted);
                }
            }
        }
    }
    let peers = (stats.inbound_peers + stats.outbound_peers) as usize;
    let status = node.sync_status();
    let target = status.target_height.get();
    let (report, log) = metrics.observe_sync(height, target);
    match log {
        Some(metrics::SyncLog::Syncing) => {
            let blocks_per_s = (report.blocks_per_second * 10.0).round() / 10.0;
            match report.eta_seconds {
                Some(eta) => info!(
                    height,
                    target,
                    blocks_per_s,
                    eta_s = eta.ceil() as u64,
                    peers_known = status.peers_known,
                    "syncing"
                ),
                // Not gaining on the target yet (or the rate is not measured yet).
                None => info!(
                    height,
                    target,
                    blocks_per_s,
                    peers_known = status.peers_known,
                    "syncing"
                ),
            }
        }
        Some(metrics::SyncLog::CaughtUp) => info!(height, target, "sync caught up"),
        None => {}
    }
    let _ = readiness.send(Readiness {
        synced: metrics::is_synced(height, target, peers),
        peers,
        height,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use timecoin_node::io::{Reply, RequestId as Id};

    #[test]
    fn an_idle_node_syncs_at_once_and_a_busy_one_once_per_interval() {
        let mut state = LoopState::new(Arc::new(FinalityFeed::new(16)));
        assert_eq!(state.sync_due(), None, "nothing to sync");
        let reply = Action::Reply {
            id: Id(1),
            reply: Reply::Tip(None),
        };
        let vote = Action::Broadcast(NodeMessage::TxVotes(
            timecoin_primitives::BoundedVec::new(Vec::new()).unwrap(),
        ));
        let unheld = state.hold(vec![vote, reply]);
        assert!(
            matches!(&unheld[..], [Action::Reply { .. }]),
            "a reply need not wait"
        );
        assert!(
            matches!(&state.held[..], [Action::Broadcast(_)]),
            "a vote waits for the sync"
        );
        assert!(
            state.sync_due().unwrap() <= Instant::now(),
            "idle: due at once"
        );
        // Just synced: the next steps wait for one interval.
        state.last_sync = Instant::now();
        let due = state.sync_due().unwrap();
        assert!(due > Instant::now() && due <= Instant::now() + SYNC_INTERVAL);
    }

    #[test]
    fn block_consensus_and_direct_sends_are_synced_at_once_relays_wait_for_their_round() {
        let relay = Action::Broadcast(NodeMessage::TxVotes(
            timecoin_primitives::BoundedVec::new(Vec::new()).unwrap(),
        ));
        assert!(!wants_prompt_sync(&relay));
        let heartbeat = NodeMessage::Heartbeat {
            height: timecoin_primitives::Height(1),
            hash: Default::default(),
        };
        assert!(wants_prompt_sync(&Action::Broadcast(heartbeat.clone())));
        assert!(wants_prompt_sync(&Action::Send {
            peer: timecoin_node::PeerId(1),
            message: heartbeat,
        }));
        assert!(!wants_prompt_sync(&Action::Reply {
            id: Id(2),
            reply: Reply::Tip(None),
        }));
    }
}
