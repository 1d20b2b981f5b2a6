//! The TimeCoin daemon's runtime pieces: configuration, logging, process control, the node
//! runtime with its RPC methods, and the local devnet launcher. The node's logic lives in the
//! library crates; this crate wires it to the outside world.

pub mod config;
pub mod daemon;
pub mod devnet;
pub mod feed;
pub mod genesis;
pub mod metrics;
pub mod rpc_methods;
pub mod runtime;
