//! The one error type of the ledger crate.

use timecoin_primitives::keys::SignatureError;
use timecoin_primitives::{
    Amount, BlockHash, Epoch, Hash32, Height, OutPoint, PublicKey, Tier, TxOut, Txid,
};

use crate::utxo::BackendError;

/// Who caused a rejection, which decides what the node does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The data is invalid: whoever sent it is at fault and may be penalised; drop it.
    Peer,
    /// Our own storage, undo data or configuration failed: the data may be fine; stop or retry,
    /// and never penalise a peer for it.
    Local,
}

/// Why the ledger rejected a transaction, a block or a genesis spec.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    // ---- Stateless transaction checks -------------------------------------------------------
    /// The transaction's encoding is larger than the network allows.
    #[error("transaction is {size} bytes, above the limit of {max}; split it into smaller ones")]
    TransactionTooLarge {
        /// Encoded size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A transaction that must spend something spends nothing.
    #[error("a {kind} transaction must spend at least one input")]
    NoInputs {
        /// The transaction kind's name.
        kind: &'static str,
    },
    /// A transaction that must pay something pays nothing.
    #[error("a {kind} transaction must have at least one output")]
    NoOutputs {
        /// The transaction kind's name.
        kind: &'static str,
    },
    /// The same outpoint is spent twice by one transaction.
    #[error("input {outpoint} is spent twice in the same transaction")]
    DuplicateInput {
        /// The outpoint.
        outpoint: OutPoint,
    },
    /// An output pays nothing; such outputs only bloat the UTXO set.
    #[error("output {index} has a zero amount")]
    ZeroOutput {
        /// The output's position.
        index: usize,
    },
    /// The outputs together exceed the supply cap.
    #[error("the outputs add up to more than the supply cap")]
    OutputsOverflow,
    /// The inputs together exceed the supply cap (only a corrupt UTXO set could cause this).
    #[error("the spent outputs add up to more than the supply cap")]
    InputsOverflow,
    /// The number of signatures does not match the inputs (plus the node-key proof).
    #[error(
        "expected {expected} signatures (one per input, plus the node key's for a registration), found {found}"
    )]
    SignatureCount {
        /// How many the body requires.
        expected: usize,
        /// How many there are.
        found: usize,
    },
    /// A reward transaction spends inputs; rewards only create value.
    #[error("a reward transaction must not have inputs")]
    RewardHasInputs,
    /// A registration names a collateral output it does not have.
    #[error("collateral_output {index} is out of range: the transaction has {outputs} outputs")]
    CollateralOutputOutOfRange {
        /// The named index.
        index: u32,
        /// Outputs in the transaction.
        outputs: usize,
    },
    /// A registration's network address is not a usable multiaddress.
    #[error("network address '{address}' is not valid: {reason}")]
    InvalidNetworkAddress {
        /// The address given.
        address: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A deregistration does not spend the collateral it names.
    #[error("the deregistration names collateral {collateral} but does not spend it")]
    CollateralNotSpent {
        /// The named collateral.
        collateral: OutPoint,
    },

    // ---- Validation against the UTXO set ----------------------------------------------------
    /// An input spends an output that does not exist or is already spent.
    #[error("input {outpoint} does not exist or is already spent")]
    MissingInput {
        /// The outpoint.
        outpoint: OutPoint,
    },
    /// An input's public key is not the owner of the output it spends.
    #[error("input {index} declares a public key that does not own output {outpoint}")]
    InputKeyMismatch {
        /// The input's position.
        index: usize,
        /// The outpoint it spends.
        outpoint: OutPoint,
    },
    /// The outputs pay more than the inputs bring.
    #[error("outputs pay {outputs} TIME but inputs bring only {inputs} TIME")]
    OutputsExceedInputs {
        /// Sum of inputs.
        inputs: Amount,
        /// Sum of outputs.
        outputs: Amount,
    },
    /// The fee is below the minimum fee rate for the transaction's size.
    #[error("fee of {fee} TIME is below the {required} TIME required for {size_bytes} bytes")]
    FeeTooLow {
        /// The fee paid.
        fee: Amount,
        /// The least fee accepted.
        required: Amount,
        /// The transaction's encoded size.
        size_bytes: usize,
    },
    /// A transfer or registration tries to spend masternode collateral; only a deregistration
    /// naming it may.
    #[error("{outpoint} is masternode collateral; only a deregistration naming it may spend it")]
    SpendsCollateral {
        /// The collateral outpoint.
        outpoint: OutPoint,
    },
    /// A deregistration names an output that is not masternode collateral.
    #[error("{outpoint} is not masternode collateral, so there is nothing to deregister")]
    NotCollateral {
        /// The outpoint named.
        outpoint: OutPoint,
    },
    /// A registration locks a different amount than its tier requires.
    #[error("a {tier:?} masternode must lock exactly {expected} TIME, this one locks {found} TIME")]
    WrongCollateralAmount {
        /// The tier asked for.
        tier: Tier,
        /// The tier's collateral.
        expected: Amount,
        /// The amount locked.
        found: Amount,
    },
    /// A registration uses a node key that already belongs to a registered masternode.
    #[error("node key {node_key} is already registered; every masternode needs its own key")]
    NodeKeyAlreadyRegistered {
        /// The key.
        node_key: PublicKey,
    },
    /// A reward transaction where only ordinary transactions may appear.
    #[error("a reward transaction may only appear first in a block")]
    UnexpectedReward,
    /// A transaction would create an output that already exists.
    #[error("output {outpoint} already exists; a transaction may not be included twice")]
    OutputAlreadyExists {
        /// The outpoint.
        outpoint: OutPoint,
    },

    // ---- Signatures -------------------------------------------------------------------------
    /// A signature in a transaction does not verify.
    #[error("transaction {index} ({txid}) has an invalid signature: {reason}")]
    InvalidSignature {
        /// The transaction's position in the batch or block.
        index: usize,
        /// Its txid.
        txid: Txid,
        /// Why the signature failed.
        reason: SignatureError,
    },

    // ---- Blocks -----------------------------------------------------------------------------
    /// The block's encoding is larger than the network allows.
    #[error("block is {size} bytes, above the limit of {max}")]
    BlockTooLarge {
        /// Encoded size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The block does not start with a reward transaction.
    #[error("the first transaction of a block must be its reward")]
    MissingReward,
    /// The reward transaction names another height than its block.
    #[error("the reward transaction is for height {found}, but the block is at height {expected}")]
    RewardHeightMismatch {
        /// The block's height.
        expected: Height,
        /// The reward's height.
        found: Height,
    },
    /// The reward pays more than the subsidy plus the block's fees.
    #[error("the reward pays {paid} TIME but subsidy plus fees allow only {allowed} TIME")]
    RewardTooLarge {
        /// What the reward pays.
        paid: Amount,
        /// Subsidy plus fees.
        allowed: Amount,
    },
    /// Two transactions in one block have the same txid.
    #[error("transaction {txid} appears twice in the block")]
    DuplicateTransaction {
        /// The txid.
        txid: Txid,
    },
    /// A transaction of a block failed; the inner error says why.
    #[error("transaction {index} ({txid}) of the block is invalid: {error}")]
    BlockTransaction {
        /// Its position in the block.
        index: usize,
        /// Its txid.
        txid: Txid,
        /// Why it failed.
        error: Box<LedgerError>,
    },
    /// The header's version is unknown.
    #[error("block version {found} is unknown; this node understands version {expected}")]
    WrongVersion {
        /// The version we know.
        expected: u32,
        /// The version found.
        found: u32,
    },
    /// The header's height does not follow its parent.
    #[error("block height is {found}, but the parent is at {parent} so {expected} was expected")]
    WrongHeight {
        /// The parent's height plus one.
        expected: Height,
        /// The parent's height.
        parent: Height,
        /// The height found.
        found: Height,
    },
    /// The header does not point at the parent it is applied on.
    #[error("block's previous_hash is {found}, but the parent's hash is {expected}")]
    WrongPreviousHash {
        /// The parent's hash.
        expected: BlockHash,
        /// The hash found.
        found: BlockHash,
    },
    /// The header's timestamp is earlier than its parent's.
    #[error("block timestamp {found} is before its parent's {parent}")]
    TimestampBeforeParent {
        /// The parent's timestamp in ms.
        parent: u64,
        /// The block's timestamp in ms.
        found: u64,
    },
    /// The header's epoch is not the one its height belongs to.
    #[error("block at height {height} says epoch {found}, but that height is in epoch {expected}")]
    WrongEpoch {
        /// The block height.
        height: Height,
        /// The epoch of that height.
        expected: Epoch,
        /// The epoch found.
        found: Epoch,
    },
    /// The header's transactions root does not match the transactions.
    #[error("transactions_root {found} does not match the block's transactions ({expected})")]
    WrongTransactionsRoot {
        /// The root of the transactions.
        expected: Hash32,
        /// The header's root.
        found: Hash32,
    },
    /// The block carries a parent certificate where it must not, or lacks one where it must.
    #[error(
        "a block at height {height} must {} a parent commit certificate",
        if *expected { "carry" } else { "not carry" }
    )]
    ParentCommitPresence {
        /// The block's height.
        height: Height,
        /// Whether one was required (heights 2 and up).
        expected: bool,
    },
    /// The parent certificate the block carries certifies some other block.
    #[error(
        "the parent commit certificate is for block {found_hash} at height {found_height}, not the parent {expected_hash}"
    )]
    ParentCommitForOtherBlock {
        /// The parent's hash.
        expected_hash: BlockHash,
        /// The height the certificate names.
        found_height: Height,
        /// The block the certificate names.
        found_hash: BlockHash,
    },
    /// The header's `parent_commit_hash` does not match the certificate the block carries.
    #[error(
        "parent_commit_hash {found} does not match the block's parent certificate ({expected})"
    )]
    WrongParentCommitHash {
        /// The hash of the carried certificate (zero if none).
        expected: Hash32,
        /// The header's hash.
        found: Hash32,
    },
    /// The parent certificate's signatures or weight do not verify against the parent epoch's
    /// committee.
    #[error("the parent commit certificate does not verify: {reason}")]
    InvalidParentCommit {
        /// What the consensus check said.
        reason: String,
    },
    /// The reward's outputs are not the split of subsidy plus fees over the parent
    /// certificate's signers (see [`crate::split_reward`]).
    #[error(
        "reward output {index} is {found:?} but the split over the parent certificate's signers requires {expected:?}"
    )]
    WrongRewardSplit {
        /// The first output position where the reward and the rule differ.
        index: usize,
        /// What the rule requires there (`None`: no output).
        expected: Option<TxOut>,
        /// What the reward has there (`None`: no output).
        found: Option<TxOut>,
    },
    /// The reward rule was given no recipients, or recipients whose weights are zero or
    /// overflow: a caller error, since a verified certificate always has weight.
    #[error("cannot split a reward over recipients: {0}")]
    InvalidRewardShares(&'static str),
    /// The header's UTXO commitment is not the set the block leads to.
    #[error("utxo_commitment {found} does not match the UTXO set after the block ({expected})")]
    WrongUtxoCommitment {
        /// The commitment computed by applying the block.
        expected: Hash32,
        /// The header's commitment.
        found: Hash32,
    },

    // ---- Genesis ----------------------------------------------------------------------------
    /// The genesis spec cannot be turned into a block; fix the spec file.
    #[error("invalid genesis spec: {0}")]
    InvalidGenesis(String),
    /// A block at height 0 is not the genesis that the rules accept.
    #[error("invalid genesis block: {0}")]
    InvalidGenesisBlock(String),

    // ---- Our own failures -------------------------------------------------------------------
    /// The storage behind the UTXO view or masternode registry failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// Undo data does not fit the UTXO set it is applied to: the two come from different chains
    /// or the store is corrupt.
    #[error("undo data does not match the UTXO set at {outpoint}; the store may be corrupt")]
    UndoMismatch {
        /// Where the mismatch was found.
        outpoint: OutPoint,
    },
    /// The masternode registry disagrees with the UTXO set: a collateral UTXO has no
    /// registration.
    #[error(
        "collateral {collateral} has no masternode registration; the registry is out of sync with the UTXO set"
    )]
    RegistryOutOfSync {
        /// The collateral outpoint.
        collateral: OutPoint,
    },
}

impl LedgerError {
    /// Who is at fault.
    pub fn fault(&self) -> Fault {
        match self {
            LedgerError::BlockTransaction { error, .. } => error.fault(),
            LedgerError::InvalidGenesis(_)
            | LedgerError::Backend(_)
            | LedgerError::UndoMismatch { .. }
            | LedgerError::InvalidRewardShares(_)
            | LedgerError::RegistryOutOfSync { .. } => Fault::Local,
            _ => Fault::Peer,
        }
    }

    /// Whether the sender of the data should be penalised.
    pub fn is_peer_fault(&self) -> bool {
        self.fault() == Fault::Peer
    }

    /// The underlying rule violation, looking through [`LedgerError::BlockTransaction`].
    pub fn root_cause(&self) -> &LedgerError {
        match self {
            LedgerError::BlockTransaction { error, .. } => error.root_cause(),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_are_classified() {
        let outpoint = OutPoint {
            txid: Txid::default(),
            index: 0,
        };
        assert!(LedgerError::MissingInput { outpoint }.is_peer_fault());
        assert_eq!(
            LedgerError::Backend(BackendError("disk".into())).fault(),
            Fault::Local
        );
        let wrapped = LedgerError::BlockTransaction {
            index: 3,
            txid: Txid::default(),
            error: Box::new(LedgerError::Backend(BackendError("disk".into()))),
        };
        assert_eq!(wrapped.fault(), Fault::Local);
        assert!(matches!(wrapped.root_cause(), LedgerError::Backend(_)));
        assert!(wrapped.to_string().contains("transaction 3"));
    }
}
