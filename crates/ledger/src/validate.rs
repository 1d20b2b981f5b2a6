//! Validation against the UTXO set (`validate_*`): inputs, ownership, fees, collateral and the
//! masternode registry.
//!
//! Signatures are not checked here: they are verified once, in bulk, by [`crate::verify`], and
//! need no state. A transaction is accepted only if it passes [`crate::check_transaction`],
//! [`crate::verify_transactions`] and [`validate_transaction`].

use timecoin_primitives::{Amount, Height, OutPoint, Transaction, TxKind, Txid};

use crate::check::encoded_size;
use crate::error::LedgerError;
use crate::masternode::{MasternodeEvent, MasternodeRegistration, MasternodeView, RegistryOverlay};
use crate::params::ChainParams;
use crate::utxo::{UtxoEntry, UtxoView};

/// What validation learned about an accepted transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidatedTransaction {
    /// The txid.
    pub txid: Txid,
    /// Inputs minus outputs; it goes to the block's reward.
    pub fee: Amount,
    /// The canonical encoding's size, which the fee rate is measured against.
    pub size_bytes: usize,
    /// The outputs it spends, in input order.
    pub spent: Vec<(OutPoint, UtxoEntry)>,
    /// The registry change it makes, if it (de)registers a masternode.
    pub masternode_event: Option<MasternodeEvent>,
}

/// Validates a non-reward transaction against `view` and `masternodes`, as if included in a block
/// at `height`. The transaction must already have passed [`crate::check_transaction`].
///
/// For the mempool: pass a [`crate::UtxoCache`] holding the outputs of transactions that are
/// already accepted but not yet in a block, so that dependent payments validate.
pub fn validate_transaction<V: UtxoView, M: MasternodeView>(
    transaction: &Transaction,
    view: &V,
    masternodes: &M,
    params: &ChainParams,
    height: Height,
) -> Result<ValidatedTransaction, LedgerError> {
    let overlay = RegistryOverlay::new(masternodes);
    validate_with_overlay(
        transaction,
        transaction.txid(),
        encoded_size(transaction),
        view,
        &overlay,
        params,
        height,
    )
}

pub(crate) fn validate_with_overlay<V: UtxoView, M: MasternodeView>(
    transaction: &Transaction,
    txid: Txid,
    size_bytes: usize,
    view: &V,
    registry: &RegistryOverlay<'_, M>,
    params: &ChainParams,
    height: Height,
) -> Result<ValidatedTransaction, LedgerError> {
    let body = &transaction.body;
    if transaction.is_reward() {
        return Err(LedgerError::UnexpectedReward);
    }
    let deregistered = match &body.kind {
        TxKind::DeregisterMasternode { collateral } => Some(*collateral),
        _ => None,
    };

    let mut spent = Vec::with_capacity(body.inputs.len());
    let mut inputs_total = Amount::ZERO;
    for (index, input) in body.inputs.iter().enumerate() {
        let outpoint = input.prevout;
        let entry = view
            .utxo(&outpoint)?
            .ok_or(LedgerError::MissingInput { outpoint })?;
        if !entry.output.address.is_owned_by(&input.public_key) {
            return Err(LedgerError::InputKeyMismatch { index, outpoint });
        }
        if deregistered == Some(outpoint) {
            if !entry.is_collateral {
                return Err(LedgerError::NotCollateral { outpoint });
            }
        } else if entry.is_collateral {
            return Err(LedgerError::SpendsCollateral { outpoint });
        }
        inputs_total = inputs_total
            .checked_add(entry.output.amount)
            .ok_or(LedgerError::InputsOverflow)?;
        spent.push((outpoint, entry));
    }

    let outputs_total = Amount::checked_sum(body.outputs.iter().map(|output| output.amount))
        .ok_or(LedgerError::OutputsOverflow)?;
    let fee = inputs_total
        .checked_sub(outputs_total)
        .ok_or(LedgerError::OutputsExceedInputs {
            inputs: inputs_total,
            outputs: outputs_total,
        })?;
    let required = params.min_fee(size_bytes).unwrap_or(Amount::MAX);
    if fee < required {
        return Err(LedgerError::FeeTooLow {
            fee,
            required,
            size_bytes,
        });
    }

    let masternode_event = match &body.kind {
        TxKind::RegisterMasternode {
            collateral_output,
            node_key,
            tier,
            network_address,
        } => {
            let output = body.outputs.get(*collateral_output as usize).ok_or(
                LedgerError::CollateralOutputOutOfRange {
                    index: *collateral_output,
                    outputs: body.outputs.len(),
                },
            )?;
            let expected = params.tier(*tier).collateral;
            if output.amount != expected {
                return Err(LedgerError::WrongCollateralAmount {
                    tier: *tier,
                    expected,
                    found: output.amount,
                });
            }
            if registry.node_key_taken(node_key)? {
                return Err(LedgerError::NodeKeyAlreadyRegistered {
                    node_key: *node_key,
                });
            }
            Some(MasternodeEvent::Registered(MasternodeRegistration {
                collateral: OutPoint {
                    txid,
                    index: *collateral_output,
                },
                owner: output.address,
                node_key: *node_key,
                tier: *tier,
                network_address: network_address.clone(),
                registered_at: height,
            }))
        }
        TxKind::DeregisterMasternode { collateral } => {
            if !spent.iter().any(|(outpoint, _)| outpoint == collateral) {
                return Err(LedgerError::CollateralNotSpent {
                    collateral: *collateral,
                });
            }
            let registration =
                registry
                    .registration(collateral)?
                    .ok_or(LedgerError::RegistryOutOfSync {
                        collateral: *collateral,
                    })?;
            Some(MasternodeEvent::Deregistered {
                registration,
                height,
            })
        }
        TxKind::Transfer | TxKind::Reward { .. } => None,
    };

    Ok(ValidatedTransaction {
        txid,
        fee,
        size_bytes,
        spent,
        masternode_event,
    })
}
