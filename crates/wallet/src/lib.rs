//! The TimeCoin wallet: an encrypted keystore, coin selection, and the building and signing of
//! transfers and masternode (de)registrations.
//!
//! The wallet holds keys and builds transactions; it does not track the chain. The caller (the
//! `time-cli` client) asks a node for the wallet's coins through the address index and passes them
//! in, so a wallet file never goes stale.

pub mod builder;
pub mod keystore;

pub use builder::{
    BuiltTransaction, Coin, DUST_LIMIT, build_deregistration, build_registration, build_transfer,
};
pub use keystore::{KdfParams, Keystore, WalletError};
