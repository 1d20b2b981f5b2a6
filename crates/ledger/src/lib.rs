//! TimeCoin's UTXO ledger rules.
//!
//! Three validation tiers with fixed names, as in Bitcoin Core: `check_*` looks at a value alone
//! ([`check_transaction`], [`check_header`], [`check_block`]), `validate_*` against a
//! [`UtxoView`] ([`validate_transaction`], [`validate_block`]), and `apply_*` changes a [`UtxoStore`] and returns the
//! undo data that reverses it ([`apply_block`], [`undo_block`], [`apply_genesis`]). Signatures
//! need no state and are verified in bulk, on all cores, by [`verify_transactions`].
//!
//! A node accepting a block runs, in order ([`connect_block`] does both steps):
//! [`verify_block_signatures`], then [`apply_block`]
//! (which checks the header against its parent, every stateless and UTXO rule, the reward and the
//! header's UTXO commitment, and writes nothing unless all hold), then applies the returned
//! [`MasternodeEvent`]s to its registry. The reward's split over the parent certificate's
//! signers needs the committee, which this crate does not know: the node verifies the
//! certificate and calls [`check_reward_split`] with the signers' [`RewardShare`]s. Everything here is deterministic: no clocks, no
//! randomness, no floats.

pub mod apply;
pub mod check;
pub mod commitment;
pub mod error;
pub mod genesis;
pub mod masternode;
pub mod params;
pub mod reward;
pub mod utxo;
pub mod validate;
pub mod verify;

pub use apply::{
    BlockOutcome, BlockTemplate, BlockUndo, TxUndo, ValidatedBlock, apply_block,
    apply_validated_block, build_block, connect_block, outputs_are_new, reward_transaction,
    undo_block, validate_block, validate_block_for_apply,
};
pub use check::{
    CheckedBlock, check_block, check_header, check_network_address, check_parent_commit,
    check_transaction,
};
pub use commitment::UtxoCommitment;
pub use error::{Fault, LedgerError};
pub use genesis::{
    GenesisAllocation, GenesisMasternode, GenesisSpec, ParamOverrides, apply_genesis, build_genesis,
};
pub use masternode::{MasternodeEvent, MasternodeRegistration, MasternodeRegistry, MasternodeView};
pub use params::{ChainParams, MAX_BLOCK_BYTES, MAX_TRANSACTION_BYTES, TierParams};
pub use reward::{RewardShare, check_reward_split, split_reward};
pub use utxo::{BackendError, UtxoCache, UtxoEntry, UtxoStore, UtxoView};
pub use validate::{ValidatedTransaction, validate_transaction};
pub use verify::{verify_block_signatures, verify_transaction, verify_transactions};
