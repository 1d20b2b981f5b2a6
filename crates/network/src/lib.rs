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
//! chain, so [`peer_id_from_public_key`] tells which peer a masternode must be and
//! [`peer_matches_key`] checks a message's sender against a claimed key.
//!
//! # Design
//!
//! - **Networks never cross-talk.** The network name is in every protocol id
//!   (`/timecoin/devnet/sync/1`, `/timecoin/devnet/meshsub/1.1.0`, identify's protocol version)
//!   and topic (`/timecoin/devnet/tx/1`). A peer whose identify says another network is
//!   disconnected and forgotten; the node only hears of peers that passed identify.
//! - **Identity binding.** The libp2p key pair is built from the same 32-byte Ed25519 secret as
//!   the masternode key, and Ed25519 peer ids inline the public key, so peer id and registered key
//!   map to each other without a lookup. Every connection is authenticated by Noise. Gossip
//!   names its publisher but is not signed by it (ADR 0025): [`NetworkEvent::Gossip`] carries
//!   that `source` for rate accounting, and consensus messages and transactions carry their own
//!   signatures, which the node checks.
//! - **Discovery** is a small request-response protocol (`/timecoin/<network>/peers/1`) rather
//!   than Kademlia: a new peer, and every `discovery_interval` a few peers, are asked for the
//!   peers they know (at most [`MAX_EXCHANGED_PEERS`]), and we dial them while below our outbound
//!   target (`max_peers - max_inbound`). Only peers we identified ourselves are remembered in the
//!   peers file, so a liar cannot fill it. With no peers left, the bootstrap and remembered peers
//!   are dialled again.
//! - **Limits.** Connection counts come from libp2p's connection-limits behaviour. Every peer has
//!   one token bucket (`messages_per_second`, with a one-second burst) for what it originates:
//!   gossip it published (charged to the named `source`, whoever forwarded it) and direct
//!   messages and requests on its connections. Gossip a peer only relays costs it nothing of
//!   that allowance, just a ten-times larger relay allowance, so honest relaying under load
//!   never gets a peer banned (ADR 0010). Excess is dropped (gossip is ignored: not delivered,
//!   not forwarded) without a penalty; a peer that keeps sending at least twice its rate for a
//!   whole second is scored down, so a sustained flood ends in a ban within seconds. Gossip size
//!   is checked per topic before delivery; request and response sizes are checked from the
//!   length prefix before allocating.
//! - **Scores and bans.** Penalties ([`Misbehaviour::penalty`]) accumulate; at
//!   [`BAN_THRESHOLD`] the peer is blocked (all its connections close, dials both ways are
//!   refused) for `ban_duration`. Scores recover slowly ([`SCORE_DECAY_PERCENT`] per
//!   [`SCORE_DECAY_INTERVAL`]). Bans are written to the bans file with wall-clock expiry times
//!   and reloaded at start.
//! - **Gossip is forwarded once it passes the network's checks** (topic, size, rate), before the
//!   node has looked at its content. The node reports invalid content, which bans its sender
//!   quickly; the rate limit bounds what a bad peer can push through meanwhile.
//! - **Three kinds of traffic.** Gossip ([`NetworkHandle::publish`]) for what every node needs;
//!   request-response ([`NetworkHandle::request`] / [`NetworkHandle::respond`]) for sync and
//!   missing data; direct messages ([`NetworkHandle::send`], received as
//!   [`NetworkEvent::Message`]) for a message-based node that addresses one peer without
//!   expecting an answer (the receiving network layer acknowledges them itself).
//! - **Back-pressure.** The event queue is bounded ([`EVENT_QUEUE_CAPACITY`]); when the node
//!   falls behind, further gossip and requests are dropped and counted in
//!   [`NetworkStats::events_dropped`] rather than stalling the swarm.
//! - **Consensus first.** Block-consensus gossip travels in a lane of its own
//!   ([`CONSENSUS_QUEUE_CAPACITY`]), which [`NetworkEvents`] empties before the other.

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
    DEFAULT_MAX_DIRECT_BYTES, DEFAULT_MAX_HEARTBEAT_BYTES, DEFAULT_MAX_INBOUND, DEFAULT_MAX_PEERS,
    DEFAULT_MAX_REQUEST_BYTES, DEFAULT_MAX_RESPONSE_BYTES, DEFAULT_MAX_TRANSACTION_BYTES,
    DEFAULT_MAX_VOTE_BYTES, DEFAULT_MESSAGES_PER_SECOND, DEFAULT_REQUEST_TIMEOUT,
    MAX_BOOTSTRAP_ADDRESSES, MAX_HOST_NAME_BYTES, MAX_NODE_FRAME_BYTES, NetworkConfig, Topic,
    TopicLimits, parse_peer_address, socket_multiaddr,
};
pub use error::{Error, Result};
pub use identity::{
    IDENTITY_FILE_LEN, IDENTITY_FILE_NAME, NodeIdentity, load_or_create_identity, load_psk,
    peer_id_from_public_key, peer_matches_key, public_key_from_peer_id,
};
pub use libp2p::{Multiaddr, PeerId};
pub use persist::{
    BANS_FILE_NAME, MAX_ADDRESSES_PER_PEER, MAX_BANS, MAX_KNOWN_PEERS, PEERS_FILE_NAME,
};
pub use scoring::{BAN_THRESHOLD, Misbehaviour, SCORE_DECAY_INTERVAL, SCORE_DECAY_PERCENT};
pub use service::{
    COMMAND_QUEUE_CAPACITY, CONSENSUS_QUEUE_CAPACITY, EVENT_QUEUE_CAPACITY,
    MAX_CONNECTIONS_PER_PEER, MAX_EXCHANGED_PEERS, MAX_PENDING_DIRECT, MAX_PENDING_REQUESTS,
    NetworkEvent, NetworkEvents, NetworkHandle, NetworkStats, PeerInfo, ResponseChannel, start,
};
pub use timecoin_primitives::network::Network;
pub use transport::HANDSHAKE_TIMEOUT;
