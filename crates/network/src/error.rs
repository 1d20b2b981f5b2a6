//! The one error type of the network crate.

use std::path::PathBuf;

use libp2p::PeerId;

/// Everything that can go wrong in the network layer. Each variant says whose fault it is: a
/// local problem (files, configuration, our own message too large) or a remote one (a peer that
/// failed to answer).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file in the data directory could not be read or written.
    #[error("cannot access {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The identity file exists but does not hold a 32-byte Ed25519 secret. It is never
    /// overwritten, since that would silently change the node's (and masternode's) identity.
    #[error(
        "identity file {path} is corrupt: expected exactly 32 bytes, found {length}; restore it \
         from a backup or delete it to create a new identity"
    )]
    CorruptIdentity {
        /// The file.
        path: PathBuf,
        /// How many bytes it holds.
        length: usize,
    },
    /// The pre-shared key file is in neither accepted format.
    #[error(
        "pre-shared key file {path} is invalid: expected `/key/swarm/psk/1.0.0/`, `/base16/` and \
         64 hex digits on three lines, or 64 hex digits alone"
    )]
    InvalidPsk {
        /// The file.
        path: PathBuf,
    },
    /// The configuration cannot work (a zero limit, a bad address, ...).
    #[error("invalid network configuration: {0}")]
    InvalidConfig(String),
    /// Setting up the libp2p transport or a behaviour failed.
    #[error("cannot set up the libp2p stack: {0}")]
    Setup(String),
    /// The node could not listen on its configured address.
    #[error("cannot listen on {address}: {reason}")]
    Listen {
        /// The configured address.
        address: String,
        /// Why.
        reason: String,
    },
    /// A message we were asked to send exceeds the configured limit for its kind.
    #[error("{kind} of {size} bytes exceeds the limit of {max} bytes")]
    MessageTooLarge {
        /// Which kind of message.
        kind: &'static str,
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// Gossip could not be published (for example, no peer subscribes to the topic yet).
    #[error("cannot publish: {0}")]
    Publish(String),
    /// A request to a peer failed: it timed out, the connection closed, the peer does not speak
    /// the protocol, or its response broke the limits.
    #[error("request to {peer} failed: {reason}")]
    RequestFailed {
        /// The peer asked.
        peer: PeerId,
        /// Why.
        reason: String,
    },
    /// A dial could not even be started (bad address, peer banned, limits reached).
    #[error("cannot dial: {0}")]
    Dial(String),
    /// The response channel was already used or its request has expired.
    #[error("cannot respond: the request has expired or its connection closed")]
    ResponseFailed,
    /// A peer id does not hold an Ed25519 public key.
    #[error("peer id {0} does not hold an Ed25519 public key")]
    NotEd25519(PeerId),
    /// The network task has stopped (after `shutdown`, or because it failed).
    #[error("the network task has stopped")]
    Stopped,
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
