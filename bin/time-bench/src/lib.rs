//! `time-bench`: an end-to-end load generator for a TimeCoin devnet.
//!
//! It funds sender keys from the devnet's development wallet, pre-signs two-input, two-output
//! payments, submits them open loop (at planned times, whatever the nodes answer) over JSON-RPC
//! to every node, and measures how long each takes to be certified final. The pieces are here so
//! that the pure parts (percentiles, the send plan, the report) can be tested without a network.

pub mod ceiling;
pub mod devnet;
pub mod fund;
pub mod http;
pub mod load;
pub mod plan;
pub mod procfs;
pub mod report;
pub mod stats;
pub mod txgen;
