//! TimeCoin's UTXO ledger rules.
//!
//! Three validation tiers with fixed names, as in Bitcoin Core: `check_*` looks at a value alone,
//! `validate_*` against a [`UtxoView`], and `apply_*` changes a [`UtxoStore`] and returns the undo
//! data that reverses it.

pub mod commitment;
pub mod utxo;

pub use commitment::UtxoCommitment;
pub use utxo::{BackendError, UtxoCache, UtxoEntry, UtxoStore, UtxoView};
