//! The TimeCoin daemon's runtime pieces: configuration, logging and process control. The node's
//! logic lives in the library crates; this crate wires it to the outside world.

pub mod config;
pub mod metrics;
pub mod runtime;
