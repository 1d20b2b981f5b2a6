//! Stateless checks (`check_*`): what can be decided from a transaction or block alone.
//!
//! They are cheap and run first, so that a malformed value is rejected before any UTXO lookup or
//! signature verification is spent on it.

use std::collections::BTreeSet;

use rayon::prelude::*;

use timecoin_primitives::block::BLOCK_VERSION;
use timecoin_primitives::merkle::merkle_root;
use timecoin_primitives::{Amount, Block, BlockHeader, Transaction, TxKind, Txid};

use crate::error::LedgerError;
use crate::params::ChainParams;

/// The encoded size of a value, without building the encoding.
pub(crate) fn encoded_size<T: borsh::BorshSerialize>(value: &T) -> usize {
    borsh::object_length(value).expect("measuring an encoding is infallible")
}

/// The name of a transaction kind, for error messages.
pub(crate) fn kind_name(kind: &TxKind) -> &'static str {
    match kind {
        TxKind::Transfer => "transfer",
        TxKind::Reward { .. } => "reward",
        TxKind::RegisterMasternode { .. } => "registration",
        TxKind::DeregisterMasternode { .. } => "deregistration",
    }
}

/// Checks a masternode network address: a non-empty multiaddress such as
/// `/ip4/203.0.113.5/tcp/24100` made of printable ASCII. Anything looser would let a
/// registration carry text that the network layer cannot dial or that log viewers mangle.
pub fn check_network_address(address: &str) -> Result<(), LedgerError> {
    let invalid = |reason| {
        Err(LedgerError::InvalidNetworkAddress {
            address: address.into(),
            reason,
        })
    };
    if address.is_empty() {
        return invalid("it is empty");
    }
    if !address.bytes().all(|byte| byte.is_ascii_graphic()) {
        return invalid("it may only contain printable ASCII without spaces");
    }
    if !address.starts_with('/') {
        return invalid(
            "it must be a multiaddress starting with '/', e.g. /ip4/203.0.113.5/tcp/24100",
        );
    }
    if address.ends_with('/') || address.contains("//") {
        return invalid("it has an empty component");
    }
    Ok(())
}

/// Checks everything about `transaction` that needs no UTXO set: size, shape for its kind,
/// duplicate inputs, output amounts and the number of signatures. Returns the encoded size,
/// which the fee rule needs.
pub fn check_transaction(
    transaction: &Transaction,
    params: &ChainParams,
) -> Result<usize, LedgerError> {
    let size = encoded_size(transaction);
    if size > params.max_transaction_bytes {
        return Err(LedgerError::TransactionTooLarge {
            size,
            max: params.max_transaction_bytes,
        });
    }
    let body = &transaction.body;
    let kind = kind_name(&body.kind);
    match &body.kind {
        TxKind::Reward { .. } => {
            // A reward may have no outputs: once the subsidy has run out, an empty block has
            // nothing to pay.
            if !body.inputs.is_empty() {
                return Err(LedgerError::RewardHasInputs);
            }
        }
        TxKind::Transfer
        | TxKind::RegisterMasternode { .. }
        | TxKind::DeregisterMasternode { .. } => {
            if body.inputs.is_empty() {
                return Err(LedgerError::NoInputs { kind });
            }
            if body.outputs.is_empty() {
                return Err(LedgerError::NoOutputs { kind });
            }
        }
    }
    let mut seen = BTreeSet::new();
    for input in &body.inputs {
        if !seen.insert(input.prevout) {
            return Err(LedgerError::DuplicateInput {
                outpoint: input.prevout,
            });
        }
    }
    for (index, output) in body.outputs.iter().enumerate() {
        if output.amount.is_zero() {
            return Err(LedgerError::ZeroOutput { index });
        }
    }
    if Amount::checked_sum(body.outputs.iter().map(|output| output.amount)).is_none() {
        return Err(LedgerError::OutputsOverflow);
    }
    match &body.kind {
        TxKind::RegisterMasternode {
            collateral_output,
            network_address,
            ..
        } => {
            if *collateral_output as usize >= body.outputs.len() {
                return Err(LedgerError::CollateralOutputOutOfRange {
                    index: *collateral_output,
                    outputs: body.outputs.len(),
                });
            }
            check_network_address(network_address)?;
        }
        TxKind::DeregisterMasternode { collateral } => {
            if !body.inputs.iter().any(|input| input.prevout == *collateral) {
                return Err(LedgerError::CollateralNotSpent {
                    collateral: *collateral,
                });
            }
        }
        TxKind::Transfer | TxKind::Reward { .. } => {}
    }
    let expected = body.expected_signatures();
    if transaction.signatures.len() != expected {
        return Err(LedgerError::SignatureCount {
            expected,
            found: transaction.signatures.len(),
        });
    }
    Ok(size)
}

/// Checks a header against its parent: version, height, parent hash, timestamp order and epoch.
/// The transactions root and UTXO commitment need the block body and the UTXO set; they are
/// checked by [`check_block`] and [`crate::apply_block`].
pub fn check_header(
    header: &BlockHeader,
    parent: &BlockHeader,
    params: &ChainParams,
) -> Result<(), LedgerError> {
    if header.version != BLOCK_VERSION {
        return Err(LedgerError::WrongVersion {
            expected: BLOCK_VERSION,
            found: header.version,
        });
    }
    let expected_height = parent
        .height
        .checked_next()
        .ok_or(LedgerError::WrongHeight {
            expected: parent.height,
            parent: parent.height,
            found: header.height,
        })?;
    if header.height != expected_height {
        return Err(LedgerError::WrongHeight {
            expected: expected_height,
            parent: parent.height,
            found: header.height,
        });
    }
    let parent_hash = parent.hash();
    if header.previous_hash != parent_hash {
        return Err(LedgerError::WrongPreviousHash {
            expected: parent_hash,
            found: header.previous_hash,
        });
    }
    if header.timestamp < parent.timestamp {
        return Err(LedgerError::TimestampBeforeParent {
            parent: parent.timestamp.as_millis(),
            found: header.timestamp.as_millis(),
        });
    }
    let epoch = params.epoch_of(header.height);
    if header.epoch != epoch {
        return Err(LedgerError::WrongEpoch {
            height: header.height,
            expected: epoch,
            found: header.epoch,
        });
    }
    Ok(())
}

/// What [`check_block`] learned, so later tiers need not recompute it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckedBlock {
    /// The txids, in block order.
    pub txids: Vec<Txid>,
    /// The encoded sizes of the transactions, in block order.
    pub sizes: Vec<usize>,
}

/// Checks a block's body alone: size, the reward first and only first and for the block's
/// height, each transaction's stateless rules, distinct txids, the parent certificate's
/// presence, target and hash (not its signatures: see [`check_parent_commit`]), and the
/// transactions root.
pub fn check_block(block: &Block, params: &ChainParams) -> Result<CheckedBlock, LedgerError> {
    let size = encoded_size(block);
    if size > params.max_block_bytes {
        return Err(LedgerError::BlockTooLarge {
            size,
            max: params.max_block_bytes,
        });
    }
    match block.transactions.first().map(|tx| &tx.body.kind) {
        Some(TxKind::Reward { height }) if *height == block.header.height => {}
        Some(TxKind::Reward { height }) => {
            return Err(LedgerError::RewardHeightMismatch {
                expected: block.header.height,
                found: *height,
            });
        }
        _ => return Err(LedgerError::MissingReward),
    }
    // Hashing and measuring every transaction is independent work: spread it over all cores,
    // then look at the results in block order so that the first violation is the one reported.
    let results: Vec<(Txid, Result<usize, LedgerError>)> = block
        .transactions
        .par_iter()
        .enumerate()
        .map(|(index, transaction)| {
            let result = if index > 0 && transaction.is_reward() {
                Err(LedgerError::UnexpectedReward)
            } else {
                check_transaction(transaction, params)
            };
            (transaction.txid(), result)
        })
        .collect();
    let mut txids = Vec::with_capacity(results.len());
    let mut sizes = Vec::with_capacity(results.len());
    let mut seen = BTreeSet::new();
    for (index, (txid, result)) in results.into_iter().enumerate() {
        let size = result.map_err(|error| LedgerError::BlockTransaction {
            index,
            txid,
            error: Box::new(error),
        })?;
        if !seen.insert(txid) {
            return Err(LedgerError::DuplicateTransaction { txid });
        }
        txids.push(txid);
        sizes.push(size);
    }
    check_parent_commit(block)?;
    let root = merkle_root(&txids);
    if block.header.transactions_root != root {
        return Err(LedgerError::WrongTransactionsRoot {
            expected: root,
            found: block.header.transactions_root,
        });
    }
    Ok(CheckedBlock { txids, sizes })
}

/// Checks the parent commit certificate a block carries, as far as the block alone allows: a
/// block at height 2 or more carries one (its parent, at height 1 or more, was committed by a
/// certificate), heights 0 and 1 carry none (genesis has no certificate), it names the parent's
/// height and hash, and the header commits to it. Its signatures and weight need the parent
/// epoch's committee, so the node verifies them (ADR 0009).
pub fn check_parent_commit(block: &Block) -> Result<(), LedgerError> {
    let height = block.header.height;
    let expected = height.get() >= 2;
    match block.parent_commit.as_deref() {
        None if expected => return Err(LedgerError::ParentCommitPresence { height, expected }),
        Some(_) if !expected => {
            return Err(LedgerError::ParentCommitPresence { height, expected });
        }
        Some(certificate)
            if certificate.height.checked_next() != Some(height)
                || certificate.block_hash != block.header.previous_hash =>
        {
            return Err(LedgerError::ParentCommitForOtherBlock {
                expected_hash: block.header.previous_hash,
                found_height: certificate.height,
                found_hash: certificate.block_hash,
            });
        }
        _ => {}
    }
    let hash = block.compute_parent_commit_hash();
    if block.header.parent_commit_hash != hash {
        return Err(LedgerError::WrongParentCommitHash {
            expected: hash,
            found: block.header.parent_commit_hash,
        });
    }
    Ok(())
}
