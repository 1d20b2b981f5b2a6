//! The networks a node can run on. They never cross-talk: each has its own magic, address prefix
//! and signature domain.

use std::fmt;
use std::str::FromStr;

use borsh::{BorshDeserialize, BorshSerialize};

/// A TimeCoin network.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, BorshSerialize, BorshDeserialize,
)]
#[borsh(use_discriminant = true)]
pub enum Network {
    /// The production network.
    Mainnet = 0,
    /// The public test network.
    Testnet = 1,
    /// A local development network.
    Devnet = 2,
}

/// Why text does not name a network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown network '{0}' (expected mainnet, testnet or devnet)")]
pub struct ParseNetworkError(pub String);

impl Network {
    /// All networks.
    pub const ALL: [Network; 3] = [Network::Mainnet, Network::Testnet, Network::Devnet];

    /// The byte that signatures commit to, so a transaction signed for one network is invalid on
    /// every other.
    pub const fn id(self) -> u8 {
        self as u8
    }

    /// Four bytes that open every peer connection's handshake.
    pub const fn magic(self) -> [u8; 4] {
        match self {
            Network::Mainnet => *b"TIME",
            Network::Testnet => *b"TTST",
            Network::Devnet => *b"TDEV",
        }
    }

    /// The bech32m human-readable part of this network's addresses.
    pub const fn address_prefix(self) -> &'static str {
        match self {
            Network::Mainnet => "time",
            Network::Testnet | Network::Devnet => "ttime",
        }
    }

    /// The lower-case name.
    pub const fn name(self) -> &'static str {
        match self {
            Network::Mainnet => "mainnet",
            Network::Testnet => "testnet",
            Network::Devnet => "devnet",
        }
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Network {
    type Err = ParseNetworkError;
    fn from_str(text: &str) -> Result<Self, ParseNetworkError> {
        Network::ALL
            .into_iter()
            .find(|network| network.name().eq_ignore_ascii_case(text))
            .ok_or_else(|| ParseNetworkError(text.to_string()))
    }
}
