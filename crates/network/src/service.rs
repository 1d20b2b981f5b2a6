//! The swarm task and its handle.
//!
//! One tokio task owns the libp2p swarm and all bookkeeping (scores, bans, known peers); the node
//! talks to it through a cloneable [`NetworkHandle`] (commands over a bounded channel) and hears
//! from it through a bounded [`NetworkEvent`] receiver. Nothing is shared but atomic counters.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use libp2p::futures::StreamExt;
use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance, MessageId, TopicHash};
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, allow_block_list, connection_limits, identify,
};
use tokio::sync::{mpsc, oneshot};

use crate::codec::{self, BytesCodec, is_too_large};
use crate::config::{
    MAX_BOOTSTRAP_ADDRESSES, NetworkConfig, Protocols, Topic, TopicLimits, socket_multiaddr,
};
use crate::error::{Error, Result};
use crate::identity::NodeIdentity;
use crate::persist::{
    BANS_FILE_NAME, BanList, KnownPeers, MAX_ADDRESSES_PER_PEER, PEERS_FILE_NAME,
};
use crate::scoring::{Admission, Misbehaviour, PeerScores, Verdict};
use crate::transport::{self, ByteCounters};

/// Capacity of the event queue to the node. When the node falls this far behind, further gossip
/// and requests are dropped (and counted) rather than stalling the swarm.
pub const EVENT_QUEUE_CAPACITY: usize = 4096;
/// Capacity of the queue that carries block-consensus gossip ahead of everything else
/// ([`NetworkEvents`]); consensus messages are few, so this is ample.
pub const CONSENSUS_QUEUE_CAPACITY: usize = 1024;

impl NetworkEvent {
    /// Whether this is block-consensus gossip ([`Topic::Consensus`]), which travels in the
    /// lane of its own that [`NetworkEvents`] empties first.
    pub fn is_consensus(&self) -> bool {
        matches!(
            self,
            NetworkEvent::Gossip {
                topic: Topic::Consensus,
                ..
            }
        )
    }
}

/// The events the network hands the node, in two lanes: block-consensus gossip
/// ([`Topic::Consensus`]) ahead of everything else. Under load the other lane holds seconds of
/// transaction and vote bundles; a proposal or a vote on a block that waited behind them made its
/// round late, the next block larger and slower, and a view change followed.
#[derive(Debug)]
pub struct NetworkEvents {
    consensus: mpsc::Receiver<NetworkEvent>,
    other: mpsc::Receiver<NetworkEvent>,
}

impl NetworkEvents {
    /// The next event, block-consensus gossip first; `None` once the network service stopped.
    pub async fn recv(&mut self) -> Option<NetworkEvent> {
        tokio::select! {
            biased;
            Some(event) = self.consensus.recv() => Some(event),
            event = self.other.recv() => event,
        }
    }

    /// The next event that is ready now, block-consensus gossip first.
    pub fn try_recv(&mut self) -> Result<NetworkEvent, mpsc::error::TryRecvError> {
        self.consensus.try_recv().or_else(|_| self.other.try_recv())
    }

    /// The next block-consensus event that is ready now, if any.
    pub fn try_recv_consensus(&mut self) -> Option<NetworkEvent> {
        self.consensus.try_recv().ok()
    }

    /// Whether block-consensus events are waiting.
    pub fn consensus_waiting(&self) -> bool {
        !self.consensus.is_empty()
    }
}
/// How long gossip remembers a message id, refusing to publish or deliver it again: gossipsub's
/// default, set explicitly because [`RecentIds`] mirrors it.
pub const GOSSIP_DUPLICATE_WINDOW: Duration = Duration::from_secs(60);
/// Capacity of the command queue from the handles.
pub const COMMAND_QUEUE_CAPACITY: usize = 1024;
/// Most of our own requests awaiting a response at once.
pub const MAX_PENDING_REQUESTS: usize = 1024;
/// Most of our own direct messages awaiting their acknowledgement at once.
pub const MAX_PENDING_DIRECT: usize = 1024;
/// Most request streams per connection and protocol at once. Small, because each may buffer a
/// message up to its size limit before the rate limit sees it.
pub const MAX_CONCURRENT_STREAMS: usize = 8;
/// Connections per peer. Two, so that two nodes dialling each other at the same moment keep one
/// of the connections instead of each refusing the other's.
pub const MAX_CONNECTIONS_PER_PEER: u32 = 2;
/// Incoming connections still in their handshake.
pub const MAX_PENDING_INCOMING: u32 = 32;
/// Outgoing dials in progress.
pub const MAX_PENDING_OUTGOING: u32 = 32;
/// Peers listed in one peer-exchange response.
pub const MAX_EXCHANGED_PEERS: usize = 64;
/// Peers asked for their peers in one discovery round.
pub const PEER_EXCHANGE_FANOUT: usize = 8;
/// Largest peer-exchange request (they are empty) and response.
pub const MAX_PEER_EXCHANGE_REQUEST_BYTES: usize = 64;
/// Largest peer-exchange response.
pub const MAX_PEER_EXCHANGE_RESPONSE_BYTES: usize = 64 * 1024;
/// Room for the gossipsub envelope (signature, key, sequence number, topic) around a payload.
pub const GOSSIP_ENVELOPE_OVERHEAD_BYTES: usize = 1024;
/// How often bans expire and scores decay.
pub const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(1);
/// How often the known-peers file is written (it is written on shutdown too).
pub const PEERS_SAVE_INTERVAL: Duration = Duration::from_secs(60);
/// Connections with nothing to do are closed after this long.
pub const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(300);
/// Time allowed to bind the listening socket at start.
pub const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed to resolve the host name of a peer address.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Addresses dialled per resolved host name (a name may have many records).
pub const MAX_RESOLVED_ADDRESSES: usize = 4;
/// Host names being resolved at once: every bootstrap address plus a few `addnode` dials.
pub const MAX_CONCURRENT_RESOLUTIONS: usize = MAX_BOOTSTRAP_ADDRESSES + 8;

#[derive(NetworkBehaviour)]
struct Behaviour {
    blocked: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    limits: connection_limits::Behaviour,
    identify: identify::Behaviour,
    gossipsub:
        gossipsub::Behaviour<gossipsub::IdentityTransform, gossipsub::WhitelistSubscriptionFilter>,
    sync: request_response::Behaviour<BytesCodec>,
    direct: request_response::Behaviour<BytesCodec>,
    peer_exchange: request_response::Behaviour<BytesCodec>,
}

/// Where to send the response to a peer's request. Hand it back to
/// [`NetworkHandle::respond`]; dropping it makes the peer's request fail.
#[derive(Debug)]
pub struct ResponseChannel {
    inner: request_response::ResponseChannel<Vec<u8>>,
}

/// What the network tells the node.
#[derive(Debug)]
pub enum NetworkEvent {
    /// Gossip passed the network's checks (topic, size, rate). The node validates the content
    /// and reports the sender if it is invalid.
    Gossip {
        /// The peer that sent it to us (the one to report).
        from: PeerId,
        /// The peer it names as its publisher. Gossip is not signed (ADR 0025), so this is a
        /// claim, good for charging rate allowances but no proof of origin: the content's own
        /// signatures are that.
        source: Option<PeerId>,
        /// Its topic.
        topic: Topic,
        /// The payload.
        data: Vec<u8>,
    },
    /// A direct message from one peer (sent with [`NetworkHandle::send`]); already
    /// acknowledged, nothing to answer.
    Message {
        /// The sender.
        from: PeerId,
        /// The payload.
        data: Vec<u8>,
    },
    /// A peer's request; answer it with [`NetworkHandle::respond`].
    Request {
        /// The peer asking.
        from: PeerId,
        /// The request.
        data: Vec<u8>,
        /// Where the response goes.
        channel: ResponseChannel,
    },
    /// A peer of our network (verified by identify) is connected.
    PeerConnected {
        /// The peer.
        peer: PeerId,
        /// Whether it dialled us.
        inbound: bool,
    },
    /// A peer announced by [`NetworkEvent::PeerConnected`] has disconnected.
    PeerDisconnected {
        /// The peer.
        peer: PeerId,
    },
    /// A peer was banned and disconnected.
    PeerBanned {
        /// The peer.
        peer: PeerId,
        /// When the ban ends.
        until: SystemTime,
    },
}

/// A connected peer as seen by [`NetworkHandle::peers`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer.
    pub peer: PeerId,
    /// Whether it dialled us.
    pub inbound: bool,
    /// Its misbehaviour score (0 is clean, negative is worse; it is banned at the threshold).
    pub score: i32,
    /// The addresses it listens on, as it told us.
    pub addresses: Vec<Multiaddr>,
}

/// A snapshot of the network's counters, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetworkStats {
    /// Connected peers that dialled us.
    pub inbound_peers: u64,
    /// Connected peers we dialled.
    pub outbound_peers: u64,
    /// Peers currently banned.
    pub banned_peers: u64,
    /// Raw bytes received on all connections.
    pub bytes_in: u64,
    /// Raw bytes sent on all connections.
    pub bytes_out: u64,
    /// Gossip messages delivered to the node.
    pub gossip_received: u64,
    /// Gossip messages and requests dropped for breaking a limit (rate or size).
    pub messages_rejected: u64,
    /// Events dropped because the node's event queue was full.
    pub events_dropped: u64,
    /// Direct messages that were not acknowledged (peer gone, timeout, refused).
    pub send_failures: u64,
    /// Heartbeats that gossip had already seen recently, sent to each peer directly instead.
    pub repeats_sent_direct: u64,
}

#[derive(Debug, Default)]
struct SharedStats {
    inbound_peers: AtomicU64,
    outbound_peers: AtomicU64,
    banned_peers: AtomicU64,
    gossip_received: AtomicU64,
    messages_rejected: AtomicU64,
    events_dropped: AtomicU64,
    send_failures: AtomicU64,
    repeats_sent_direct: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

enum Command {
    Publish {
        topic: Topic,
        data: Vec<u8>,
        reply: oneshot::Sender<Result<()>>,
    },
    Request {
        peer: PeerId,
        data: Vec<u8>,
        reply: oneshot::Sender<Result<Vec<u8>>>,
    },
    Send {
        peer: PeerId,
        data: Vec<u8>,
        reply: oneshot::Sender<Result<()>>,
    },
    Respond {
        channel: ResponseChannel,
        data: Vec<u8>,
        reply: oneshot::Sender<Result<()>>,
    },
    Report {
        peer: PeerId,
        misbehaviour: Misbehaviour,
    },
    Dial {
        address: Multiaddr,
        reply: oneshot::Sender<Result<()>>,
    },
    Peers {
        reply: oneshot::Sender<Vec<PeerInfo>>,
    },
    Bans {
        reply: oneshot::Sender<Vec<(PeerId, SystemTime)>>,
    },
    ListenAddresses {
        reply: oneshot::Sender<Vec<Multiaddr>>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// The node's side of the network: cheap to clone, usable from any task.
#[derive(Clone, Debug)]
pub struct NetworkHandle {
    commands: mpsc::Sender<Command>,
    stats: Arc<SharedStats>,
    bytes: Arc<ByteCounters>,
    local_peer_id: PeerId,
    topic_limits: TopicLimits,
    max_request_bytes: usize,
    max_response_bytes: usize,
    max_direct_bytes: usize,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Command")
    }
}

impl NetworkHandle {
    async fn call<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(make(reply))
            .await
            .map_err(|_| Error::Stopped)?;
        answer.await.map_err(|_| Error::Stopped)
    }

    /// Our own peer id.
    pub fn local_peer_id(&self) -> PeerId {
        self.local_peer_id
    }

    /// Gossips `data` on `topic`. Fails if it exceeds the topic's limit or no peer subscribes
    /// to the topic yet.
    pub async fn publish(&self, topic: Topic, data: Vec<u8>) -> Result<()> {
        let max = self.topic_limits.max_bytes(topic);
        if data.len() > max {
            return Err(Error::MessageTooLarge {
                kind: topic.short_name(),
                size: data.len(),
                max,
            });
        }
        self.call(|reply| Command::Publish { topic, data, reply })
            .await?
    }

    /// Sends a request to `peer` and waits for its response (at most the configured request
    /// timeout).
    pub async fn request(&self, peer: PeerId, data: Vec<u8>) -> Result<Vec<u8>> {
        if data.len() > self.max_request_bytes {
            return Err(Error::MessageTooLarge {
                kind: "request",
                size: data.len(),
                max: self.max_request_bytes,
            });
        }
        self.call(|reply| Command::Request { peer, data, reply })
            .await?
    }

    /// Sends `data` to one peer without waiting for an answer (the peer's network layer
    /// acknowledges receipt; failures are counted in [`NetworkStats::send_failures`]). Returns
    /// once the message is queued.
    pub async fn send(&self, peer: PeerId, data: Vec<u8>) -> Result<()> {
        if data.len() > self.max_direct_bytes {
            return Err(Error::MessageTooLarge {
                kind: "direct message",
                size: data.len(),
                max: self.max_direct_bytes,
            });
        }
        self.call(|reply| Command::Send { peer, data, reply })
            .await?
    }

    /// Answers a peer's request.
    pub async fn respond(&self, channel: ResponseChannel, data: Vec<u8>) -> Result<()> {
        if data.len() > self.max_response_bytes {
            return Err(Error::MessageTooLarge {
                kind: "response",
                size: data.len(),
                max: self.max_response_bytes,
            });
        }
        self.call(|reply| Command::Respond {
            channel,
            data,
            reply,
        })
        .await?
    }

    /// Reports a peer that sent something wrong; enough reports ban it.
    pub async fn report(&self, peer: PeerId, misbehaviour: Misbehaviour) -> Result<()> {
        self.commands
            .send(Command::Report { peer, misbehaviour })
            .await
            .map_err(|_| Error::Stopped)
    }

    /// Dials an address (e.g. from an `addnode` RPC). A `/dns*` address is resolved first, in
    /// the background: the call then returns before the dial starts, and a name that does not
    /// resolve is logged, not returned.
    pub async fn dial(&self, address: Multiaddr) -> Result<()> {
        self.call(|reply| Command::Dial { address, reply }).await?
    }

    /// The connected peers of our network.
    pub async fn peers(&self) -> Result<Vec<PeerInfo>> {
        self.call(|reply| Command::Peers { reply }).await
    }

    /// The banned peers and when their bans end.
    pub async fn bans(&self) -> Result<Vec<(PeerId, SystemTime)>> {
        self.call(|reply| Command::Bans { reply }).await
    }

    /// The addresses we listen on (with the real port when configured with port 0).
    pub async fn listen_addresses(&self) -> Result<Vec<Multiaddr>> {
        self.call(|reply| Command::ListenAddresses { reply }).await
    }

    /// The current counters.
    pub fn stats(&self) -> NetworkStats {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        NetworkStats {
            inbound_peers: load(&self.stats.inbound_peers),
            outbound_peers: load(&self.stats.outbound_peers),
            banned_peers: load(&self.stats.banned_peers),
            bytes_in: load(&self.bytes.bytes_in),
            bytes_out: load(&self.bytes.bytes_out),
            gossip_received: load(&self.stats.gossip_received),
            messages_rejected: load(&self.stats.messages_rejected),
            events_dropped: load(&self.stats.events_dropped),
            send_failures: load(&self.stats.send_failures),
            repeats_sent_direct: load(&self.stats.repeats_sent_direct),
        }
    }

    /// Saves the peers and bans files, closes all connections and stops the task. Returns when
    /// the listening socket is closed.
    pub async fn shutdown(&self) -> Result<()> {
        self.call(|reply| Command::Shutdown { reply }).await
    }
}

/// Which of our request-response protocols an event belongs to.
#[derive(Clone, Copy, Debug)]
enum RequestProtocol {
    /// Sync requests and their responses.
    Sync,
    /// Direct messages and their (empty) acknowledgements.
    Direct,
    /// Peer exchange.
    PeerExchange,
}

/// What a connected peer looks like to us.
struct PeerState {
    inbound: bool,
    /// Set once identify confirmed it speaks our network; only then does the node hear of it.
    identified: bool,
    addresses: Vec<Multiaddr>,
}

struct Service {
    swarm: Swarm<Behaviour>,
    config: NetworkConfig,
    protocols: Protocols,
    topics: HashMap<TopicHash, Topic>,
    events: mpsc::Sender<NetworkEvent>,
    /// Block-consensus gossip, which the node takes ahead of `events`.
    consensus_events: mpsc::Sender<NetworkEvent>,
    commands: mpsc::Receiver<Command>,
    scores: PeerScores,
    bans: BanList,
    known: KnownPeers,
    connected: HashMap<PeerId, PeerState>,
    pending_requests: HashMap<OutboundRequestId, oneshot::Sender<Result<Vec<u8>>>>,
    pending_direct: HashSet<OutboundRequestId>,
    recent_ids: RecentIds,
    stats: Arc<SharedStats>,
    listen_addresses: Vec<Multiaddr>,
    bans_path: PathBuf,
    peers_path: PathBuf,
    last_peers_save: Instant,
    /// Host-name addresses being resolved, so a redial does not start a second lookup.
    resolving: HashSet<Multiaddr>,
    resolved_sender: mpsc::Sender<Resolved>,
    resolved: mpsc::Receiver<Resolved>,
}

/// The outcome of resolving a `/dns*` peer address.
struct Resolved {
    name: Multiaddr,
    addresses: std::result::Result<Vec<Multiaddr>, String>,
}

/// Whether `address` names its host by DNS (and so must be resolved before we can dial it: the
/// transport is plain TCP, without libp2p's DNS layer).
fn is_dns_address(address: &Multiaddr) -> bool {
    matches!(
        address.iter().next(),
        Some(Protocol::Dns(_) | Protocol::Dns4(_) | Protocol::Dns6(_))
    )
}

/// Resolves a `/dns*/host/tcp/port[/p2p/id]` address with the system resolver (tokio's
/// `lookup_host`) into at most [`MAX_RESOLVED_ADDRESSES`] IP addresses with the same suffix.
async fn resolve(address: &Multiaddr) -> std::result::Result<Vec<Multiaddr>, String> {
    let mut parts = address.iter();
    let (host, want_v4, want_v6) = match parts.next() {
        Some(Protocol::Dns(host)) => (host, true, true),
        Some(Protocol::Dns4(host)) => (host, true, false),
        Some(Protocol::Dns6(host)) => (host, false, true),
        _ => return Err("not a DNS address".into()),
    };
    let Some(Protocol::Tcp(port)) = parts.next() else {
        return Err("no TCP port".into());
    };
    let suffix: Vec<Protocol<'_>> = parts.collect();
    let found = tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((&*host, port)))
        .await
        .map_err(|_| format!("no answer within {RESOLVE_TIMEOUT:?}"))?
        .map_err(|error| error.to_string())?;
    let mut addresses = Vec::new();
    for socket in found {
        if (socket.is_ipv4() && !want_v4) || (socket.is_ipv6() && !want_v6) {
            continue;
        }
        let mut resolved = socket_multiaddr(socket);
        for protocol in &suffix {
            resolved.push(protocol.clone());
        }
        if !addresses.contains(&resolved) {
            addresses.push(resolved);
        }
        if addresses.len() == MAX_RESOLVED_ADDRESSES {
            break;
        }
    }
    if addresses.is_empty() {
        return Err("the name has no address of the requested family".into());
    }
    Ok(addresses)
}

fn message_id(message: &gossipsub::Message) -> MessageId {
    content_id(message.topic.as_str(), &message.data)
}

/// Content addressing: the same transaction or vote from two sources is one message.
fn content_id(topic: &str, data: &[u8]) -> MessageId {
    let mut hasher = blake3::Hasher::new();
    hasher.update(topic.as_bytes());
    hasher.update(&[0]);
    hasher.update(data);
    MessageId::from(hasher.finalize().as_bytes().to_vec())
}

/// The gossip message ids seen (published or received) within a window, mirroring gossipsub's
/// duplicate cache. gossipsub refuses to publish an id it has seen, with a warning: with
/// content-addressed ids that is every repeat (a node announcing the same tip as a peer did a
/// moment before, or re-sending its own consensus statement), and the repeat then reaches
/// nobody. Knowing the ids lets the service send a repeated heartbeat to each peer directly and
/// refuse other repeats without the warning (ADR 0018).
struct RecentIds {
    window: Duration,
    ids: HashSet<MessageId>,
    order: VecDeque<(Instant, MessageId)>,
}

impl RecentIds {
    fn new(window: Duration) -> RecentIds {
        RecentIds {
            window,
            ids: HashSet::new(),
            order: VecDeque::new(),
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some((at, _)) = self.order.front() {
            if now.saturating_duration_since(*at) < self.window {
                break;
            }
            if let Some((_, id)) = self.order.pop_front() {
                self.ids.remove(&id);
            }
        }
    }

    fn contains(&mut self, id: &MessageId, now: Instant) -> bool {
        self.expire(now);
        self.ids.contains(id)
    }

    fn insert(&mut self, id: MessageId, now: Instant) {
        self.expire(now);
        if self.ids.insert(id.clone()) {
            self.order.push_back((now, id));
        }
    }
}

fn build_behaviour(
    config: &NetworkConfig,
    protocols: &Protocols,
    identity: &NodeIdentity,
    topics: &HashMap<TopicHash, Topic>,
) -> Result<Behaviour> {
    let keypair = identity.keypair();
    let setup = |error: String| Error::Setup(error);

    // Gossip names its publisher but is not signed (ADR 0025): connections are authenticated by
    // Noise and every payload carries its own signatures, and signing and checking each message
    // again cost about a tenth of a node's CPU under load.
    let gossip_config = gossipsub::ConfigBuilder::default()
        .protocol_id_prefix(protocols.gossipsub_prefix.clone())
        .max_transmit_size(config.topic_limits.largest() + GOSSIP_ENVELOPE_OVERHEAD_BYTES)
        .validation_mode(gossipsub::ValidationMode::Permissive)
        .validate_messages()
        .message_id_fn(message_id)
        .duplicate_cache_time(GOSSIP_DUPLICATE_WINDOW)
        .build()
        .map_err(|error| setup(error.to_string()))?;
    let filter = gossipsub::WhitelistSubscriptionFilter(topics.keys().cloned().collect());
    let mut gossipsub = gossipsub::Behaviour::new_with_subscription_filter(
        gossipsub::MessageAuthenticity::Author(identity.peer_id()),
        gossip_config,
        filter,
    )
    .map_err(|error| setup(error.to_string()))?;
    for topic in Topic::ALL {
        gossipsub
            .subscribe(&IdentTopic::new(topic.name(config.network)))
            .map_err(|error| setup(error.to_string()))?;
    }

    let protocol = |name: &str| {
        StreamProtocol::try_from_owned(name.to_string()).map_err(|error| setup(error.to_string()))
    };
    let request_config = request_response::Config::default()
        .with_request_timeout(config.request_timeout)
        .with_max_concurrent_streams(MAX_CONCURRENT_STREAMS);
    let sync = request_response::Behaviour::with_codec(
        BytesCodec {
            max_request_bytes: config.max_request_bytes,
            max_response_bytes: config.max_response_bytes,
        },
        [(protocol(&protocols.sync)?, ProtocolSupport::Full)],
        request_config.clone(),
    );
    let direct = request_response::Behaviour::with_codec(
        BytesCodec {
            max_request_bytes: config.max_direct_bytes,
            // The acknowledgement is empty.
            max_response_bytes: 0,
        },
        [(protocol(&protocols.direct)?, ProtocolSupport::Full)],
        request_config.clone(),
    );
    let peer_exchange = request_response::Behaviour::with_codec(
        BytesCodec {
            max_request_bytes: MAX_PEER_EXCHANGE_REQUEST_BYTES,
            max_response_bytes: MAX_PEER_EXCHANGE_RESPONSE_BYTES,
        },
        [(protocol(&protocols.peer_exchange)?, ProtocolSupport::Full)],
        request_config,
    );

    let limits = connection_limits::ConnectionLimits::default()
        .with_max_established(Some(config.max_peers))
        .with_max_established_incoming(Some(config.max_inbound))
        .with_max_established_per_peer(Some(MAX_CONNECTIONS_PER_PEER))
        .with_max_pending_incoming(Some(MAX_PENDING_INCOMING))
        .with_max_pending_outgoing(Some(MAX_PENDING_OUTGOING));

    let identify = identify::Behaviour::new(
        identify::Config::new(protocols.identify.clone(), keypair.public())
            .with_agent_version(format!("timecoin/{}", env!("CARGO_PKG_VERSION"))),
    );

    Ok(Behaviour {
        blocked: allow_block_list::Behaviour::default(),
        limits: connection_limits::Behaviour::new(limits),
        identify,
        gossipsub,
        sync,
        direct,
        peer_exchange,
    })
}

/// Starts the network: binds the listening socket, dials the bootstrap and remembered peers and
/// spawns the swarm task on the current tokio runtime. Returns once listening.
pub async fn start(
    config: NetworkConfig,
    identity: &NodeIdentity,
) -> Result<(NetworkHandle, NetworkEvents)> {
    config.validate()?;
    let protocols = Protocols::new(config.network);
    let topics: HashMap<TopicHash, Topic> = Topic::ALL
        .into_iter()
        .map(|topic| (IdentTopic::new(topic.name(config.network)).hash(), topic))
        .collect();
    let bytes = Arc::new(ByteCounters::default());
    let transport = transport::build(&identity.keypair(), config.psk, bytes.clone())?;
    let behaviour = build_behaviour(&config, &protocols, identity, &topics)?;
    let mut swarm = Swarm::new(
        transport,
        behaviour,
        identity.peer_id(),
        libp2p::swarm::Config::with_tokio_executor()
            .with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT),
    );

    let bans_path = config.data_dir.join(BANS_FILE_NAME);
    let peers_path = config.data_dir.join(PEERS_FILE_NAME);
    std::fs::create_dir_all(&config.data_dir).map_err(|source| Error::Io {
        path: config.data_dir.clone(),
        source,
    })?;
    let bans = BanList::load(&bans_path, SystemTime::now())?;
    let known = KnownPeers::load(&peers_path)?;
    for (peer, _) in bans.entries() {
        swarm.behaviour_mut().blocked.block_peer(peer);
    }

    let listen_error = |reason: String| Error::Listen {
        address: config.listen.to_string(),
        reason,
    };
    swarm
        .listen_on(config.listen.clone())
        .map_err(|error| listen_error(error.to_string()))?;
    let first_address = tokio::time::timeout(LISTEN_TIMEOUT, async {
        loop {
            match swarm.select_next_some().await {
                SwarmEvent::NewListenAddr { address, .. } => return Ok(address),
                SwarmEvent::ListenerError { error, .. } => return Err(error.to_string()),
                SwarmEvent::ListenerClosed { reason, .. } => {
                    return Err(match reason {
                        Ok(()) => "listener closed".to_string(),
                        Err(error) => error.to_string(),
                    });
                }
                _ => {}
            }
        }
    })
    .await
    .map_err(|_| listen_error("timed out".to_string()))?
    .map_err(listen_error)?;

    let stats = Arc::new(SharedStats::default());
    stats
        .banned_peers
        .store(bans.len() as u64, Ordering::Relaxed);
    let (command_sender, commands) = mpsc::channel(COMMAND_QUEUE_CAPACITY);
    let (events, event_receiver) = mpsc::channel(EVENT_QUEUE_CAPACITY);
    let (consensus_events, consensus_receiver) = mpsc::channel(CONSENSUS_QUEUE_CAPACITY);
    // Never full: no more lookups run than it holds answers.
    let (resolved_sender, resolved) = mpsc::channel(MAX_CONCURRENT_RESOLUTIONS);
    let handle = NetworkHandle {
        commands: command_sender,
        stats: stats.clone(),
        bytes,
        local_peer_id: identity.peer_id(),
        topic_limits: config.topic_limits,
        max_request_bytes: config.max_request_bytes,
        max_response_bytes: config.max_response_bytes,
        max_direct_bytes: config.max_direct_bytes,
    };
    let mut service = Service {
        swarm,
        scores: PeerScores::new(config.messages_per_second, Instant::now()),
        config,
        protocols,
        topics,
        events,
        consensus_events,
        commands,
        bans,
        known,
        connected: HashMap::new(),
        pending_requests: HashMap::new(),
        pending_direct: HashSet::new(),
        recent_ids: RecentIds::new(GOSSIP_DUPLICATE_WINDOW),
        stats,
        listen_addresses: vec![first_address],
        bans_path,
        peers_path,
        last_peers_save: Instant::now(),
        resolving: HashSet::new(),
        resolved_sender,
        resolved,
    };
    service.dial_bootstrap();
    tokio::spawn(service.run());
    Ok((
        handle,
        NetworkEvents {
            consensus: consensus_receiver,
            other: event_receiver,
        },
    ))
}

/// `address` without a trailing `/p2p/<peer id>`: how a peer's listen address and a configured
/// address compare.
fn without_peer_id(address: &Multiaddr) -> Multiaddr {
    address
        .iter()
        .filter(|protocol| !matches!(protocol, Protocol::P2p(_)))
        .collect()
}

impl Service {
    async fn run(mut self) {
        let mut maintenance = tokio::time::interval(MAINTENANCE_INTERVAL);
        // The first round waits a full interval: the bootstrap dials of `start` are in flight.
        let period = self.config.discovery_interval;
        let mut discovery = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        for timer in [&mut maintenance, &mut discovery] {
            timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        let shutdown_reply = loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                command = self.commands.recv() => match command {
                    None => break None,
                    Some(Command::Shutdown { reply }) => break Some(reply),
                    Some(command) => self.on_command(command),
                },
                Some(resolved) = self.resolved.recv() => self.on_resolved(resolved),
                _ = maintenance.tick() => self.maintain(),
                _ = discovery.tick() => self.discover(),
            }
        };
        self.save_peers();
        self.save_bans();
        // The swarm (and with it every socket) is gone before the caller hears we stopped.
        drop(self);
        if let Some(reply) = shutdown_reply {
            let _ = reply.send(());
        }
    }

    /// Gossips `data`. If gossip has seen the same message within its duplicate window (see
    /// [`RecentIds`]), a heartbeat goes to each connected peer directly, and anything else is
    /// not sent again (an error, without asking gossipsub, which would log a warning).
    fn publish(&mut self, kind: Topic, data: Vec<u8>) -> Result<()> {
        let topic = IdentTopic::new(kind.name(self.config.network));
        let id = content_id(topic.hash().as_str(), &data);
        let now = Instant::now();
        if self.recent_ids.contains(&id, now) {
            if kind != Topic::Heartbeats {
                // Sending repeated relays and consensus statements directly made a network
                // under sustained overload degrade further (ADR 0018): they are the bulk of the
                // traffic, and direct messages filled peers' inbound stream limits.
                return Err(Error::Publish(
                    "already gossiped within the duplicate window".into(),
                ));
            }
            let peers: Vec<PeerId> = self
                .connected
                .iter()
                .filter(|(_, state)| state.identified)
                .map(|(peer, _)| *peer)
                .collect();
            for peer in peers {
                self.send_direct(peer, data.clone())?;
            }
            bump(&self.stats.repeats_sent_direct);
            return Ok(());
        }
        self.swarm
            .behaviour_mut()
            .gossipsub
            .publish(topic, data)
            .map_err(|error| Error::Publish(error.to_string()))?;
        // Like gossipsub, remember only what went out: a message no peer took can be retried.
        self.recent_ids.insert(id, now);
        Ok(())
    }

    /// Queues a direct message to `peer`, unless too many are pending.
    fn send_direct(&mut self, peer: PeerId, data: Vec<u8>) -> Result<()> {
        if self.pending_direct.len() >= MAX_PENDING_DIRECT {
            bump(&self.stats.send_failures);
            return Err(Error::RequestFailed {
                peer,
                reason: format!("{MAX_PENDING_DIRECT} direct messages already pending"),
            });
        }
        let id = self
            .swarm
            .behaviour_mut()
            .direct
            .send_request(&peer, codec::Request::Data(data));
        self.pending_direct.insert(id);
        Ok(())
    }

    fn emit(&self, event: NetworkEvent) {
        let lane = if event.is_consensus() {
            &self.consensus_events
        } else {
            &self.events
        };
        if let Err(mpsc::error::TrySendError::Full(_)) = lane.try_send(event) {
            bump(&self.stats.events_dropped);
        }
    }

    fn save_peers(&mut self) {
        self.last_peers_save = Instant::now();
        if let Err(error) = self.known.save(&self.peers_path) {
            tracing::warn!(%error, "cannot save known peers");
        }
    }

    fn save_bans(&self) {
        if let Err(error) = self.bans.save(&self.bans_path) {
            tracing::warn!(%error, "cannot save bans");
        }
    }

    fn outbound_target(&self) -> usize {
        (self
            .config
            .max_peers
            .saturating_sub(self.config.max_inbound))
        .max(1) as usize
    }

    fn outbound_count(&self) -> usize {
        self.connected
            .values()
            .filter(|state| !state.inbound)
            .count()
    }

    /// Dials an address; a host name is resolved first (in a task: the answer comes back to
    /// [`Service::on_resolved`]), afresh on every dial, so a peer whose address changed is
    /// found again.
    fn dial_address(&mut self, address: Multiaddr) -> Result<()> {
        if !is_dns_address(&address) {
            return self
                .swarm
                .dial(address)
                .map_err(|error| Error::Dial(error.to_string()));
        }
        if self.resolving.len() >= MAX_CONCURRENT_RESOLUTIONS {
            return Err(Error::Dial("too many host names being resolved".into()));
        }
        if !self.resolving.insert(address.clone()) {
            return Ok(());
        }
        let sender = self.resolved_sender.clone();
        tokio::spawn(async move {
            let addresses = resolve(&address).await;
            let _ = sender
                .send(Resolved {
                    name: address,
                    addresses,
                })
                .await;
        });
        Ok(())
    }

    fn on_resolved(&mut self, resolved: Resolved) {
        self.resolving.remove(&resolved.name);
        match resolved.addresses {
            Ok(addresses) => {
                tracing::debug!(name = %resolved.name, ?addresses, "peer address resolved");
                for address in addresses {
                    if let Err(error) = self.swarm.dial(address.clone()) {
                        tracing::debug!(%address, %error, "dial failed");
                    }
                }
            }
            Err(error) => {
                tracing::warn!(address = %resolved.name, %error, "cannot resolve peer address");
            }
        }
    }

    /// Dials the configured bootstrap addresses and the remembered peers.
    fn dial_bootstrap(&mut self) {
        for address in self.config.bootstrap.clone() {
            if let Err(error) = self.dial_address(address.clone()) {
                tracing::debug!(%address, %error, "bootstrap dial failed");
            }
        }
        let remembered: Vec<_> = self
            .known
            .iter()
            .into_iter()
            .take(self.outbound_target())
            .collect();
        for (peer, addresses) in remembered {
            self.dial_peer(peer, addresses);
        }
    }

    /// Peer exchange alone cannot heal a split: nodes started together can pair off when some
    /// first dials are refused (a 4-node devnet came up as 0–3 and 1–2 and stayed so), and a
    /// pair's peers only ever name each other. Bootstrap addresses are configured to be reached.
    fn redial_unconnected_bootstrap(&mut self) {
        let listening: HashSet<Multiaddr> = self
            .connected
            .values()
            .flat_map(|state| state.addresses.iter().map(without_peer_id))
            .collect();
        let unconnected: Vec<Multiaddr> = self
            .config
            .bootstrap
            .iter()
            .filter(|address| !listening.contains(&without_peer_id(address)))
            .cloned()
            .collect();
        for address in unconnected {
            if let Err(error) = self.dial_address(address.clone()) {
                tracing::debug!(%address, %error, "bootstrap redial failed");
            }
        }
    }

    fn dial_peer(&mut self, peer: PeerId, addresses: Vec<Multiaddr>) {
        if peer == *self.swarm.local_peer_id()
            || self.bans.is_banned(&peer)
            || self.connected.contains_key(&peer)
        {
            return;
        }
        let options = DialOpts::peer_id(peer)
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .addresses(addresses)
            .build();
        if let Err(error) = self.swarm.dial(options) {
            tracing::debug!(%peer, %error, "dial failed");
        }
    }

    fn penalise(&mut self, peer: PeerId, misbehaviour: Misbehaviour) {
        if self.bans.is_banned(&peer) {
            return;
        }
        match self.scores.penalise(peer, misbehaviour) {
            Verdict::Scored(score) => {
                tracing::debug!(%peer, ?misbehaviour, score, "peer scored down");
            }
            Verdict::Ban => self.ban(peer),
        }
    }

    fn ban(&mut self, peer: PeerId) {
        let until = SystemTime::now() + self.config.ban_duration;
        tracing::info!(%peer, "banning peer");
        self.bans.ban(peer, until);
        self.scores.remove(&peer);
        self.known.remove(&peer);
        // Blocking closes every connection to the peer and refuses new ones both ways.
        self.swarm.behaviour_mut().blocked.block_peer(peer);
        self.stats
            .banned_peers
            .store(self.bans.len() as u64, Ordering::Relaxed);
        self.save_bans();
        self.emit(NetworkEvent::PeerBanned { peer, until });
    }

    fn maintain(&mut self) {
        self.scores.decay(Instant::now());
        self.scores.forget_idle(Instant::now());
        let expired = self.bans.expire(SystemTime::now());
        if !expired.is_empty() {
            for peer in &expired {
                self.swarm.behaviour_mut().blocked.unblock_peer(*peer);
            }
            self.stats
                .banned_peers
                .store(self.bans.len() as u64, Ordering::Relaxed);
            self.save_bans();
        }
        if self.last_peers_save.elapsed() >= PEERS_SAVE_INTERVAL {
            self.save_peers();
        }
    }

    /// One discovery round: with no peers, start over from bootstrap; otherwise ask a few
    /// peers for theirs and, below the outbound target, redial the bootstrap addresses that no
    /// connected peer listens on.
    fn discover(&mut self) {
        if self.connected.is_empty() {
            self.dial_bootstrap();
            return;
        }
        if self.connected.len() < self.outbound_target() {
            self.redial_unconnected_bootstrap();
        }
        let asked: Vec<PeerId> = self
            .connected
            .iter()
            .filter(|(_, state)| state.identified)
            .map(|(peer, _)| *peer)
            .take(PEER_EXCHANGE_FANOUT)
            .collect();
        for peer in asked {
            self.swarm
                .behaviour_mut()
                .peer_exchange
                .send_request(&peer, codec::Request::Data(Vec::new()));
        }
    }

    fn peer_exchange_response(&self, requester: &PeerId) -> Vec<u8> {
        let entries: Vec<(Vec<u8>, Vec<Vec<u8>>)> = self
            .known
            .iter()
            .into_iter()
            .filter(|(peer, _)| peer != requester && !self.bans.is_banned(peer))
            .take(MAX_EXCHANGED_PEERS)
            .map(|(peer, addresses)| {
                (
                    peer.to_bytes(),
                    addresses.into_iter().map(|a| a.to_vec()).collect(),
                )
            })
            .collect();
        let mut entries = entries;
        loop {
            let bytes = borsh::to_vec(&entries).expect("encoding into memory cannot fail");
            // Addresses are bounded in count, not length; never send what the peer must refuse.
            if bytes.len() <= MAX_PEER_EXCHANGE_RESPONSE_BYTES || entries.pop().is_none() {
                return bytes;
            }
        }
    }

    fn on_peer_exchange_response(&mut self, from: PeerId, response: &[u8]) {
        let Ok(entries) = borsh::from_slice::<Vec<(Vec<u8>, Vec<Vec<u8>>)>>(response) else {
            self.penalise(from, Misbehaviour::InvalidMessage);
            return;
        };
        if entries.len() > MAX_EXCHANGED_PEERS {
            self.penalise(from, Misbehaviour::ProtocolViolation);
            return;
        }
        for (peer, addresses) in entries {
            if self.outbound_count() >= self.outbound_target() {
                break;
            }
            let Ok(peer) = PeerId::from_bytes(&peer) else {
                self.penalise(from, Misbehaviour::InvalidMessage);
                return;
            };
            let addresses: Vec<Multiaddr> = addresses
                .into_iter()
                .take(MAX_ADDRESSES_PER_PEER)
                .filter_map(|bytes| Multiaddr::try_from(bytes).ok())
                .collect();
            // Second-hand addresses are only dialled, not remembered: a peer is remembered once
            // we identified it ourselves, so nobody can fill our peers file with junk.
            if !addresses.is_empty() {
                self.dial_peer(peer, addresses);
            }
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Publish { topic, data, reply } => {
                let _ = reply.send(self.publish(topic, data));
            }
            Command::Request { peer, data, reply } => {
                if self.pending_requests.len() >= MAX_PENDING_REQUESTS {
                    let _ = reply.send(Err(Error::RequestFailed {
                        peer,
                        reason: format!("{MAX_PENDING_REQUESTS} requests already pending"),
                    }));
                    return;
                }
                let id = self
                    .swarm
                    .behaviour_mut()
                    .sync
                    .send_request(&peer, codec::Request::Data(data));
                self.pending_requests.insert(id, reply);
            }
            Command::Send { peer, data, reply } => {
                let _ = reply.send(self.send_direct(peer, data));
            }
            Command::Respond {
                channel,
                data,
                reply,
            } => {
                let result = self
                    .swarm
                    .behaviour_mut()
                    .sync
                    .send_response(channel.inner, data)
                    .map_err(|_| Error::ResponseFailed);
                let _ = reply.send(result);
            }
            Command::Report { peer, misbehaviour } => self.penalise(peer, misbehaviour),
            Command::Dial { address, reply } => {
                let _ = reply.send(self.dial_address(address));
            }
            Command::Peers { reply } => {
                let peers = self
                    .connected
                    .iter()
                    .filter(|(_, state)| state.identified)
                    .map(|(peer, state)| PeerInfo {
                        peer: *peer,
                        inbound: state.inbound,
                        score: self.scores.score(peer),
                        addresses: state.addresses.clone(),
                    })
                    .collect();
                let _ = reply.send(peers);
            }
            Command::Bans { reply } => {
                let _ = reply.send(self.bans.entries().collect());
            }
            Command::ListenAddresses { reply } => {
                let _ = reply.send(self.listen_addresses.clone());
            }
            Command::Shutdown { .. } => unreachable!("handled by the run loop"),
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Identify(event)) => self.on_identify(event),
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(event)) => self.on_gossip(event),
            SwarmEvent::Behaviour(BehaviourEvent::Sync(event)) => {
                self.on_request_response(RequestProtocol::Sync, event)
            }
            SwarmEvent::Behaviour(BehaviourEvent::Direct(event)) => {
                self.on_request_response(RequestProtocol::Direct, event)
            }
            SwarmEvent::Behaviour(BehaviourEvent::PeerExchange(event)) => {
                self.on_request_response(RequestProtocol::PeerExchange, event)
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                endpoint,
                num_established,
                ..
            } if num_established.get() == 1 => {
                self.connected.insert(
                    peer_id,
                    PeerState {
                        inbound: endpoint.is_listener(),
                        identified: false,
                        addresses: Vec::new(),
                    },
                );
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => {
                self.scores.disconnected(&peer_id);
                if let Some(state) = self.connected.remove(&peer_id)
                    && state.identified
                {
                    let gauge = if state.inbound {
                        &self.stats.inbound_peers
                    } else {
                        &self.stats.outbound_peers
                    };
                    gauge.fetch_sub(1, Ordering::Relaxed);
                    self.emit(NetworkEvent::PeerDisconnected { peer: peer_id });
                }
            }
            SwarmEvent::NewListenAddr { address, .. }
                if !self.listen_addresses.contains(&address) =>
            {
                self.listen_addresses.push(address);
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.listen_addresses.retain(|known| *known != address);
            }
            _ => {}
        }
    }

    fn on_identify(&mut self, event: identify::Event) {
        let identify::Event::Received { peer_id, info, .. } = event else {
            return;
        };
        if info.protocol_version != self.protocols.identify {
            // Another network (or another chain): not malicious, just not ours.
            tracing::debug!(peer = %peer_id, version = %info.protocol_version, "foreign network");
            self.known.remove(&peer_id);
            let _ = self.swarm.disconnect_peer_id(peer_id);
            return;
        }
        let mut addresses = info.listen_addrs;
        addresses.truncate(MAX_ADDRESSES_PER_PEER);
        self.known.insert(peer_id, addresses.clone());
        let Some(state) = self.connected.get_mut(&peer_id) else {
            return;
        };
        state.addresses = addresses;
        if state.identified {
            return;
        }
        state.identified = true;
        let inbound = state.inbound;
        let gauge = if inbound {
            &self.stats.inbound_peers
        } else {
            &self.stats.outbound_peers
        };
        bump(gauge);
        self.emit(NetworkEvent::PeerConnected {
            peer: peer_id,
            inbound,
        });
        // A new peer is the best moment to learn about more.
        self.swarm
            .behaviour_mut()
            .peer_exchange
            .send_request(&peer_id, codec::Request::Data(Vec::new()));
    }

    fn on_gossip(&mut self, event: gossipsub::Event) {
        let gossipsub::Event::Message {
            propagation_source: from,
            message_id,
            message,
        } = event
        else {
            return;
        };
        // gossipsub has recorded the id before asking us, whatever we answer.
        self.recent_ids.insert(message_id.clone(), Instant::now());
        let acceptance = match self.topics.get(&message.topic).copied() {
            None => {
                self.penalise(from, Misbehaviour::ProtocolViolation);
                MessageAcceptance::Reject
            }
            // Charged to the named publisher, so that relaying others' gossip costs the relay
            // nothing of its own allowance (a relay naming someone else pays its relay allowance).
            Some(_) if !self.gossip_admitted(message.source, from) => {
                // Ignored, not rejected: the message may be fine, there is just too much of it;
                // gossipsub neither delivers nor relays it and scores nobody for it.
                MessageAcceptance::Ignore
            }
            Some(topic) if message.data.len() > self.config.topic_limits.max_bytes(topic) => {
                bump(&self.stats.messages_rejected);
                self.penalise(from, Misbehaviour::Oversized);
                MessageAcceptance::Reject
            }
            Some(topic) => {
                bump(&self.stats.gossip_received);
                self.emit(NetworkEvent::Gossip {
                    from,
                    source: message.source,
                    topic,
                    data: message.data,
                });
                MessageAcceptance::Accept
            }
        };
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(&message_id, &from, acceptance);
    }

    fn gossip_admitted(&mut self, source: Option<PeerId>, from: PeerId) -> bool {
        let admission = self.scores.admit_gossip(source, from, Instant::now());
        self.admitted(admission)
    }

    /// Applies the rate policy's decision: counts what it drops and penalises sustained
    /// excess. Returns whether the message may pass.
    fn admitted(&mut self, admission: Admission) -> bool {
        match admission {
            Admission::Admit => true,
            Admission::Drop => {
                bump(&self.stats.messages_rejected);
                false
            }
            Admission::DropAndPenalise(peer) => {
                bump(&self.stats.messages_rejected);
                self.penalise(peer, Misbehaviour::RateLimited);
                false
            }
        }
    }

    /// The payload of a peer's request on `protocol`, if it is within the size limit and the
    /// peer's rate; otherwise `None` (dropping the channel then closes the stream unanswered).
    fn inbound_payload(
        &mut self,
        protocol: RequestProtocol,
        peer: PeerId,
        request: codec::Request,
    ) -> Option<Vec<u8>> {
        let data = match request {
            codec::Request::Data(data) => data,
            codec::Request::Oversized(length) => {
                tracing::debug!(%peer, length, ?protocol, "oversized request");
                bump(&self.stats.messages_rejected);
                self.penalise(peer, Misbehaviour::Oversized);
                return None;
            }
        };
        let admission = self.scores.admit_message(peer, Instant::now());
        self.admitted(admission).then_some(data)
    }

    /// The events of the three request-response protocols: inbound requests pass the same
    /// size and rate checks, then each protocol does its own thing.
    fn on_request_response(
        &mut self,
        protocol: RequestProtocol,
        event: request_response::Event<codec::Request, Vec<u8>>,
    ) {
        match event {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                let Some(data) = self.inbound_payload(protocol, peer, request) else {
                    return;
                };
                match protocol {
                    RequestProtocol::Sync => self.emit(NetworkEvent::Request {
                        from: peer,
                        data,
                        channel: ResponseChannel { inner: channel },
                    }),
                    RequestProtocol::Direct => {
                        let _ = self
                            .swarm
                            .behaviour_mut()
                            .direct
                            .send_response(channel, Vec::new());
                        self.emit(NetworkEvent::Message { from: peer, data });
                    }
                    RequestProtocol::PeerExchange => {
                        let response = self.peer_exchange_response(&peer);
                        let _ = self
                            .swarm
                            .behaviour_mut()
                            .peer_exchange
                            .send_response(channel, response);
                    }
                }
            }
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => match protocol {
                RequestProtocol::Sync => {
                    if let Some(reply) = self.pending_requests.remove(&request_id) {
                        let _ = reply.send(Ok(response));
                    }
                }
                RequestProtocol::Direct => {
                    self.pending_direct.remove(&request_id);
                }
                RequestProtocol::PeerExchange => self.on_peer_exchange_response(peer, &response),
            },
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                if let request_response::OutboundFailure::Io(io_error) = &error
                    && is_too_large(io_error)
                {
                    bump(&self.stats.messages_rejected);
                    self.penalise(peer, Misbehaviour::Oversized);
                }
                match protocol {
                    RequestProtocol::Sync => {
                        if let Some(reply) = self.pending_requests.remove(&request_id) {
                            let _ = reply.send(Err(Error::RequestFailed {
                                peer,
                                reason: error.to_string(),
                            }));
                        }
                    }
                    RequestProtocol::Direct => {
                        self.pending_direct.remove(&request_id);
                        bump(&self.stats.send_failures);
                        tracing::debug!(%peer, %error, "direct message failed");
                    }
                    RequestProtocol::PeerExchange => {}
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gossip(topic: Topic, tag: u8) -> NetworkEvent {
        NetworkEvent::Gossip {
            from: PeerId::random(),
            source: None,
            topic,
            data: vec![tag],
        }
    }

    fn tag(event: NetworkEvent) -> u8 {
        match event {
            NetworkEvent::Gossip { data, .. } => data[0],
            other => panic!("not gossip: {other:?}"),
        }
    }

    #[tokio::test]
    async fn block_consensus_events_overtake_the_queued_others() {
        let (other_sender, other) = mpsc::channel(8);
        let (consensus_sender, consensus) = mpsc::channel(8);
        let mut events = NetworkEvents { consensus, other };
        for n in 0..3 {
            other_sender
                .try_send(gossip(Topic::Transactions, n))
                .unwrap();
        }
        consensus_sender
            .try_send(gossip(Topic::Consensus, 10))
            .unwrap();
        consensus_sender
            .try_send(gossip(Topic::Consensus, 11))
            .unwrap();
        assert!(events.consensus_waiting());
        assert_eq!(tag(events.recv().await.unwrap()), 10);
        assert_eq!(tag(events.try_recv().unwrap()), 11);
        assert!(!events.consensus_waiting());
        assert!(events.try_recv_consensus().is_none());
        // Then the others, in their order.
        assert_eq!(tag(events.recv().await.unwrap()), 0);
        assert_eq!(tag(events.try_recv().unwrap()), 1);
        assert_eq!(tag(events.recv().await.unwrap()), 2);
        // Closed lanes end the stream.
        drop(other_sender);
        drop(consensus_sender);
        assert!(events.recv().await.is_none());
    }

    #[test]
    fn recent_ids_forget_after_the_window() {
        let start = Instant::now();
        let mut recent = RecentIds::new(Duration::from_secs(60));
        let first = content_id("topic", b"one");
        recent.insert(first.clone(), start);
        recent.insert(first.clone(), start + Duration::from_secs(30));
        let second = content_id("topic", b"two");
        recent.insert(second.clone(), start + Duration::from_secs(40));
        assert!(recent.contains(&first, start + Duration::from_secs(59)));
        assert!(!recent.contains(&content_id("other", b"one"), start));
        // The window runs from the first sighting, as in gossipsub's duplicate cache.
        assert!(!recent.contains(&first, start + Duration::from_secs(60)));
        assert!(recent.contains(&second, start + Duration::from_secs(99)));
        assert!(!recent.contains(&second, start + Duration::from_secs(100)));
        assert!(recent.ids.is_empty() && recent.order.is_empty());
    }
}
