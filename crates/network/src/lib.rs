//! TimeCoin's peer-to-peer layer on libp2p: TCP + (optional pnet) + Noise + Yamux; gossipsub for
//! transactions, finality votes, consensus messages and heartbeats; request-response for sync
//! and a small peer-exchange protocol for discovery; identify; connection limits, per-peer rate
//! limits, misbehaviour scores and persistent bans.
//!
//! The node starts the network with [`start`], then talks to it through the cloneable
//! [`NetworkHandle`] and hears from it through a bounded receiver of [`NetworkEvent`]s. Payloads
//! are opaque bytes: the node encodes and decodes them with the project codec and reports peers
//! whose content is invalid with [`NetworkHandle::report`].
//!
//! A node's network identity is an Ed25519 key. For a masternode it is the key registered on
//! chain, so [`peer_id_from_public_key`] tells which peer a masternode must be.

mod codec;
mod config;
mod error;
mod identity;
mod persist;
mod scoring;
mod service;
mod transport;

pub use config::{
    DEFAULT_BAN_DURATION, DEFAULT_DISCOVERY_INTERVAL, DEFAULT_MAX_CONSENSUS_BYTES,
    DEFAULT_MAX_HEARTBEAT_BYTES, DEFAULT_MAX_INBOUND, DEFAULT_MAX_PEERS, DEFAULT_MAX_REQUEST_BYTES,
    DEFAULT_MAX_RESPONSE_BYTES, DEFAULT_MAX_TRANSACTION_BYTES, DEFAULT_MAX_VOTE_BYTES,
    DEFAULT_MESSAGES_PER_SECOND, DEFAULT_REQUEST_TIMEOUT, MAX_BOOTSTRAP_ADDRESSES, NetworkConfig,
    Topic, TopicLimits, socket_multiaddr,
};
pub use error::{Error, Result};
pub use identity::{
    IDENTITY_FILE_LEN, IDENTITY_FILE_NAME, NodeIdentity, load_or_create_identity, load_psk,
    peer_id_from_public_key, public_key_from_peer_id,
};
pub use libp2p::{Multiaddr, PeerId};
pub use persist::{
    BANS_FILE_NAME, MAX_ADDRESSES_PER_PEER, MAX_BANS, MAX_KNOWN_PEERS, PEERS_FILE_NAME,
};
pub use scoring::{BAN_THRESHOLD, Misbehaviour, SCORE_DECAY_INTERVAL, SCORE_DECAY_PERCENT};
pub use service::{
    COMMAND_QUEUE_CAPACITY, EVENT_QUEUE_CAPACITY, MAX_CONNECTIONS_PER_PEER, MAX_EXCHANGED_PEERS,
    MAX_PENDING_REQUESTS, NetworkEvent, NetworkHandle, NetworkStats, PeerInfo, ResponseChannel,
    start,
};
pub use timecoin_primitives::network::Network;
pub use transport::HANDSHAKE_TIMEOUT;
