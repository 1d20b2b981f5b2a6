//! TimeCoin's transaction pool: a bounded set of unconfirmed transactions, ordered by fee rate.
//!
//! [`Mempool`] is a pure data structure (no I/O, no clock, no async, no threads), so the node owns
//! it and the simulator can drive it deterministically.
//!
//! # What the caller must do first
//!
//! The pool does not see the UTXO set and does not verify signatures. Before
//! [`Mempool::insert`], the caller validates the transaction (signatures, inputs that exist in
//! the UTXO set or among pooled transactions' outputs, amounts) and passes the resulting fee
//! along with it. Tests therefore build transactions with dummy signatures.
//!
//! # Rules
//!
//! * Limits: at most [`MempoolConfig::max_transactions`] transactions and
//!   [`MempoolConfig::max_bytes`] bytes of encoded transactions (defaults 10,000 and 300 MB).
//! * Order: by [`FeeRate`], an exact fraction compared without floats; ties go to the lower txid.
//! * When full, the lowest fee rates are evicted to make room; a newcomer whose rate is not above
//!   every rate it would evict is rejected instead ([`MempoolError::PoolFull`]).
//! * No two pooled transactions spend one outpoint ([`MempoolError::Conflict`] names the other).
//! * A transaction may spend outputs of pooled transactions. Whenever a transaction leaves for
//!   any reason other than inclusion in a block, its pooled descendants leave with it.
//! * [`Mempool::select_for_block`] puts parents before children, otherwise highest rate first.
//! * Reward transactions are never pooled.

mod error;
mod fee_rate;
mod pool;

pub use error::MempoolError;
pub use fee_rate::FeeRate;
pub use pool::{
    DEFAULT_MAX_BYTES, DEFAULT_MAX_TRANSACTIONS, Inserted, Mempool, MempoolConfig, MempoolEntry,
    MempoolInfo, RemovalReason, Removed,
};

#[cfg(test)]
mod test_support;

#[cfg(test)]
mod model_tests;
