//! Configuration, topics and the protocol names that keep networks apart.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;
use timecoin_primitives::network::Network;

use crate::error::{Error, Result};

/// Default maximum number of connected peers.
pub const DEFAULT_MAX_PEERS: u32 = 100;
/// Default maximum number of peers that connected to us.
pub const DEFAULT_MAX_INBOUND: u32 = 50;
/// Default number of messages a peer may originate per second (gossip it published, direct
/// messages and requests it sent).
pub const DEFAULT_MESSAGES_PER_SECOND: u32 = 100;
/// Default maximum transaction gossip size: the node relays transactions in batches (up to
/// 1,024 per message).
pub const DEFAULT_MAX_TRANSACTION_BYTES: usize = 2 * 1024 * 1024;
/// Default maximum finality-vote gossip size: vote batches (up to 1,024 votes) and finality
/// certificates (one signature per committee member).
pub const DEFAULT_MAX_VOTE_BYTES: usize = 2 * 1024 * 1024;
/// Largest node frame: a maximal block with its certificate (the node's limit is 17 MiB), plus
/// room for framing.
pub const MAX_NODE_FRAME_BYTES: usize = 18 * 1024 * 1024;
/// Default maximum consensus gossip size; proposals and committed blocks carry a whole block.
pub const DEFAULT_MAX_CONSENSUS_BYTES: usize = MAX_NODE_FRAME_BYTES;
/// Default maximum heartbeat gossip size.
pub const DEFAULT_MAX_HEARTBEAT_BYTES: usize = 4 * 1024;
/// Default maximum request size (requests name what they want, they carry little).
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Default maximum response size (a batch of blocks, or one maximal block).
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = MAX_NODE_FRAME_BYTES;
/// Default maximum direct (one-peer, fire-and-forget) message size: any node frame.
pub const DEFAULT_MAX_DIRECT_BYTES: usize = MAX_NODE_FRAME_BYTES;
/// Default time a misbehaving peer stays banned.
pub const DEFAULT_BAN_DURATION: Duration = Duration::from_secs(60 * 60);
/// Default time a request waits for its response.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Default interval between peer-exchange rounds.
pub const DEFAULT_DISCOVERY_INTERVAL: Duration = Duration::from_secs(30);
/// Most bootstrap addresses accepted, so a config cannot make us dial without bound.
pub const MAX_BOOTSTRAP_ADDRESSES: usize = 64;

/// A gossip topic. Each has its own size limit; the topic names carry the network name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Topic {
    /// Transactions submitted by clients.
    Transactions,
    /// Finality votes on transactions.
    Votes,
    /// Block consensus (PBFT) messages.
    Consensus,
    /// Masternode heartbeats.
    Heartbeats,
}

impl Topic {
    /// All topics.
    pub const ALL: [Topic; 4] = [
        Topic::Transactions,
        Topic::Votes,
        Topic::Consensus,
        Topic::Heartbeats,
    ];

    /// The short name used inside the topic string.
    pub const fn short_name(self) -> &'static str {
        match self {
            Topic::Transactions => "tx",
            Topic::Votes => "votes",
            Topic::Consensus => "consensus",
            Topic::Heartbeats => "heartbeats",
        }
    }

    /// The gossipsub topic string on `network`, e.g. `/timecoin/devnet/tx/1`.
    pub fn name(self, network: Network) -> String {
        format!("/timecoin/{}/{}/1", network.name(), self.short_name())
    }
}

/// Maximum gossip size per topic, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TopicLimits {
    /// Limit for [`Topic::Transactions`].
    pub transactions: usize,
    /// Limit for [`Topic::Votes`].
    pub votes: usize,
    /// Limit for [`Topic::Consensus`].
    pub consensus: usize,
    /// Limit for [`Topic::Heartbeats`].
    pub heartbeats: usize,
}

impl Default for TopicLimits {
    fn default() -> Self {
        TopicLimits {
            transactions: DEFAULT_MAX_TRANSACTION_BYTES,
            votes: DEFAULT_MAX_VOTE_BYTES,
            consensus: DEFAULT_MAX_CONSENSUS_BYTES,
            heartbeats: DEFAULT_MAX_HEARTBEAT_BYTES,
        }
    }
}

impl TopicLimits {
    /// The limit for `topic`.
    pub const fn max_bytes(&self, topic: Topic) -> usize {
        match topic {
            Topic::Transactions => self.transactions,
            Topic::Votes => self.votes,
            Topic::Consensus => self.consensus,
            Topic::Heartbeats => self.heartbeats,
        }
    }

    /// The largest limit of any topic.
    pub fn largest(&self) -> usize {
        Topic::ALL
            .into_iter()
            .map(|topic| self.max_bytes(topic))
            .max()
            .unwrap_or(0)
    }
}

/// Everything the network layer needs to start.
#[derive(Clone, Debug)]
pub struct NetworkConfig {
    /// Which network; its name is part of every protocol id and topic, so networks never
    /// exchange messages.
    pub network: Network,
    /// Where to listen, e.g. `/ip4/0.0.0.0/tcp/24100` (port 0 picks a free port).
    pub listen: Multiaddr,
    /// Peers to dial at start (and again when we have no peers left).
    pub bootstrap: Vec<Multiaddr>,
    /// Maximum connected peers.
    pub max_peers: u32,
    /// Maximum peers that connected to us.
    pub max_inbound: u32,
    /// Messages each peer may originate per second: gossip it published (wherever it came
    /// from) plus direct messages and requests it sent. The excess is dropped; sending twice
    /// the rate for a whole second is scored down (ADR 0010).
    pub messages_per_second: u32,
    /// Maximum gossip size per topic.
    pub topic_limits: TopicLimits,
    /// Maximum request size.
    pub max_request_bytes: usize,
    /// Maximum response size.
    pub max_response_bytes: usize,
    /// Maximum direct message size.
    pub max_direct_bytes: usize,
    /// How long a misbehaving peer stays banned.
    pub ban_duration: Duration,
    /// How long a request waits for its response.
    pub request_timeout: Duration,
    /// Interval between peer-exchange rounds.
    pub discovery_interval: Duration,
    /// Directory for the peers and bans files.
    pub data_dir: PathBuf,
    /// Private-network key: only nodes holding the same key can connect.
    pub psk: Option<[u8; 32]>,
}

impl NetworkConfig {
    /// A configuration with default limits.
    pub fn new(network: Network, listen: Multiaddr, data_dir: PathBuf) -> NetworkConfig {
        NetworkConfig {
            network,
            listen,
            bootstrap: Vec::new(),
            max_peers: DEFAULT_MAX_PEERS,
            max_inbound: DEFAULT_MAX_INBOUND,
            messages_per_second: DEFAULT_MESSAGES_PER_SECOND,
            topic_limits: TopicLimits::default(),
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            max_direct_bytes: DEFAULT_MAX_DIRECT_BYTES,
            ban_duration: DEFAULT_BAN_DURATION,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            discovery_interval: DEFAULT_DISCOVERY_INTERVAL,
            data_dir,
            psk: None,
        }
    }

    /// Refuses settings that cannot work, with a message naming the setting.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("max_peers", self.max_peers as usize),
            ("messages_per_second", self.messages_per_second as usize),
            ("max_request_bytes", self.max_request_bytes),
            ("max_response_bytes", self.max_response_bytes),
            ("max_direct_bytes", self.max_direct_bytes),
            ("topic_limits.transactions", self.topic_limits.transactions),
            ("topic_limits.votes", self.topic_limits.votes),
            ("topic_limits.consensus", self.topic_limits.consensus),
            ("topic_limits.heartbeats", self.topic_limits.heartbeats),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(Error::InvalidConfig(format!("{name} must be positive")));
            }
        }
        if self.max_inbound > self.max_peers {
            return Err(Error::InvalidConfig(format!(
                "max_inbound ({}) exceeds max_peers ({})",
                self.max_inbound, self.max_peers
            )));
        }
        if self.bootstrap.len() > MAX_BOOTSTRAP_ADDRESSES {
            return Err(Error::InvalidConfig(format!(
                "{} bootstrap addresses exceed the limit of {MAX_BOOTSTRAP_ADDRESSES}",
                self.bootstrap.len()
            )));
        }
        for address in &self.bootstrap {
            check_dialable(address).map_err(|reason| {
                Error::InvalidConfig(format!("bootstrap address {address}: {reason}"))
            })?;
        }
        for (name, duration) in [
            ("request_timeout", self.request_timeout),
            ("discovery_interval", self.discovery_interval),
        ] {
            if duration.is_zero() {
                return Err(Error::InvalidConfig(format!("{name} must be positive")));
            }
        }
        Ok(())
    }
}

/// Longest host name accepted in a peer address (the DNS limit).
pub const MAX_HOST_NAME_BYTES: usize = 253;

/// Parses a peer address as a person writes it in a config file or an `addnode` call:
/// `ip:port`, `[ipv6]:port`, `host.name:port`, or a libp2p multiaddress such as
/// `/dns4/seed.example.org/tcp/24100/p2p/12D3KooW...`. Host names become `/dns/...` addresses,
/// resolved each time they are dialled (so a seed that moves is found again on redial).
pub fn parse_peer_address(text: &str) -> Result<Multiaddr> {
    let invalid = |reason: String| Error::InvalidConfig(format!("'{text}': {reason}"));
    let text = text.trim();
    if text.starts_with('/') {
        let address: Multiaddr = text
            .parse()
            .map_err(|error| invalid(format!("not a multiaddress ({error})")))?;
        check_dialable(&address).map_err(|reason| invalid(reason.to_string()))?;
        return Ok(address);
    }
    if let Ok(address) = text.parse::<SocketAddr>() {
        if address.port() == 0 {
            return Err(invalid("port 0 cannot be dialled".into()));
        }
        return Ok(socket_multiaddr(address));
    }
    let (host, port) = text
        .rsplit_once(':')
        .ok_or_else(|| invalid("no port (write host:port)".into()))?;
    let port: u16 = port
        .parse()
        .ok()
        .filter(|port| *port != 0)
        .ok_or_else(|| invalid(format!("'{port}' is not a port (1 to 65535)")))?;
    if !is_host_name(host) {
        return Err(invalid(format!(
            "'{host}' is neither an IP address nor a host name"
        )));
    }
    Ok(Multiaddr::empty()
        .with(Protocol::Dns(host.to_ascii_lowercase().into()))
        .with(Protocol::Tcp(port)))
}

/// Whether `host` is a DNS name: dot-separated labels of letters, digits and inner hyphens.
fn is_host_name(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    !host.is_empty()
        && host.len() <= MAX_HOST_NAME_BYTES
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Whether we can dial `address`: an IP or a DNS name, a TCP port, and optionally the peer id
/// (`/p2p/...`), nothing else (our transport speaks TCP only).
pub(crate) fn check_dialable(address: &Multiaddr) -> std::result::Result<(), &'static str> {
    let mut parts = address.iter();
    match parts.next() {
        Some(Protocol::Ip4(_) | Protocol::Ip6(_)) => {}
        Some(Protocol::Dns(host) | Protocol::Dns4(host) | Protocol::Dns6(host))
            if is_host_name(&host) => {}
        _ => return Err("must start with /ip4, /ip6, /dns, /dns4 or /dns6 and a valid host"),
    }
    match parts.next() {
        Some(Protocol::Tcp(port)) if port != 0 => {}
        _ => return Err("must name a TCP port (/tcp/PORT, not 0) after the host"),
    }
    match (parts.next(), parts.next()) {
        (None, _) | (Some(Protocol::P2p(_)), None) => Ok(()),
        _ => Err("only /p2p/PEER_ID may follow the TCP port"),
    }
}

/// The libp2p address of a TCP socket address, e.g. `/ip4/127.0.0.1/tcp/24100`.
pub fn socket_multiaddr(address: SocketAddr) -> Multiaddr {
    let ip = match address.ip() {
        std::net::IpAddr::V4(ip) => Protocol::Ip4(ip),
        std::net::IpAddr::V6(ip) => Protocol::Ip6(ip),
    };
    Multiaddr::empty()
        .with(ip)
        .with(Protocol::Tcp(address.port()))
}

/// The protocol names of one network.
#[derive(Clone, Debug)]
pub(crate) struct Protocols {
    pub identify: String,
    pub gossipsub_prefix: String,
    pub sync: String,
    pub direct: String,
    pub peer_exchange: String,
}

impl Protocols {
    pub fn new(network: Network) -> Protocols {
        let base = format!("/timecoin/{}", network.name());
        Protocols {
            identify: format!("{base}/1"),
            gossipsub_prefix: format!("{base}/meshsub"),
            sync: format!("{base}/sync/1"),
            direct: format!("{base}/direct/1"),
            peer_exchange: format!("{base}/peers/1"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::PeerId;

    #[test]
    fn names_carry_the_network() {
        assert_eq!(
            Topic::Transactions.name(Network::Devnet),
            "/timecoin/devnet/tx/1"
        );
        assert_ne!(
            Topic::Votes.name(Network::Devnet),
            Topic::Votes.name(Network::Testnet)
        );
        let protocols = Protocols::new(Network::Mainnet);
        assert_eq!(protocols.sync, "/timecoin/mainnet/sync/1");
    }

    #[test]
    fn peer_addresses_take_ips_host_names_and_multiaddresses() {
        let parse = |text: &str| parse_peer_address(text).map(|a| a.to_string());
        assert_eq!(
            parse("127.0.0.1:24100").unwrap(),
            "/ip4/127.0.0.1/tcp/24100"
        );
        assert_eq!(parse("[::1]:24100").unwrap(), "/ip6/::1/tcp/24100");
        assert_eq!(
            parse("localhost:24100").unwrap(),
            "/dns/localhost/tcp/24100"
        );
        assert_eq!(
            parse("Seed-1.Example.org:44100").unwrap(),
            "/dns/seed-1.example.org/tcp/44100"
        );
        let peer = PeerId::random();
        let full = format!("/dns4/seed.example.org/tcp/44100/p2p/{peer}");
        assert_eq!(parse(&full).unwrap(), full);
        assert_eq!(parse("/ip4/10.0.0.1/tcp/1").unwrap(), "/ip4/10.0.0.1/tcp/1");
    }

    #[test]
    fn bad_peer_addresses_say_what_is_wrong() {
        for (text, expected) in [
            ("seed.example.org", "no port"),
            ("seed.example.org:0", "not a port"),
            ("seed.example.org:70000", "not a port"),
            ("127.0.0.1:0", "port 0"),
            ("bad_host:24100", "neither an IP address nor a host name"),
            (
                "-bad.example:24100",
                "neither an IP address nor a host name",
            ),
            (":24100", "neither an IP address nor a host name"),
            ("/dns4/seed.example.org", "TCP port"),
            ("/dns4/seed.example.org/udp/1", "TCP port"),
            ("/tcp/1", "must start with"),
            ("/ip4/1.2.3.4/tcp/1/ws", "only /p2p"),
            ("/not/a/multiaddr", "not a multiaddress"),
        ] {
            let error = parse_peer_address(text).unwrap_err().to_string();
            assert!(error.contains(text.trim()), "{error} does not name {text}");
            assert!(error.contains(expected), "{text}: {error}");
        }
    }

    #[test]
    fn bad_limits_are_refused() {
        let mut config = NetworkConfig::new(
            Network::Devnet,
            socket_multiaddr("127.0.0.1:0".parse().unwrap()),
            PathBuf::from("/tmp"),
        );
        config.validate().unwrap();
        config.max_inbound = config.max_peers + 1;
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("max_inbound")
        );
        config.max_inbound = 1;
        config.topic_limits.votes = 0;
        assert!(config.validate().unwrap_err().to_string().contains("votes"));
        config.topic_limits.votes = 1;
        config.bootstrap = vec!["/ip4/127.0.0.1/udp/1".parse().unwrap()];
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("bootstrap address /ip4/127.0.0.1/udp/1")
        );
    }
}
