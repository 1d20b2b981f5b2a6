//! The genesis block: built deterministically from a JSON spec, and applied under its own rules.
//!
//! Genesis has no inputs to spend, so its transactions are exempt from the input rules, at height
//! 0 only. It holds a reward transaction for height 0 whose outputs are the allocations, followed
//! by one input-less, signature-less registration per initial masternode, whose single output is
//! the tier's collateral and is marked as collateral in the UTXO set. Everything genesis creates
//! counts against [`ChainParams::genesis_allowance`], so total issuance never passes the cap.
//!
//! ```json
//! {
//!   "network": "devnet",
//!   "timestamp_ms": 1767225600000,
//!   "allocations": [{ "address": "ttime1…", "amount": "5000.5" }],
//!   "masternodes": [{ "owner": "ttime1…", "node_key": "<64 hex digits>", "tier": "bronze",
//!                     "network_address": "/ip4/127.0.0.1/tcp/24100" }],
//!   "overrides": { "epoch_length_blocks": 5 }
//! }
//! ```

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};
use timecoin_primitives::block::BLOCK_VERSION;
use timecoin_primitives::keys::ParsePublicKeyError;
use timecoin_primitives::merkle::merkle_root;
use timecoin_primitives::transaction::MAX_NETWORK_ADDRESS_LEN;
use timecoin_primitives::{
    Address, Amount, Block, BlockHash, BlockHeader, BoundedString, BoundedVec, Epoch, FastMap,
    Hash32, Height, Network, OutPoint, PublicKey, Tier, Timestamp, Transaction, TxBody, TxKind,
    TxOut,
};

use crate::apply::{
    BlockOutcome, BlockUndo, TxUndo, create_outputs, updated_commitment, write_changes,
};
use crate::check::{check_network_address, check_transaction, encoded_size};
use crate::commitment::UtxoCommitment;
use crate::error::LedgerError;
use crate::masternode::{MasternodeEvent, MasternodeRegistration};
use crate::params::ChainParams;
use crate::utxo::{UtxoCache, UtxoEntry, UtxoStore, UtxoView};

/// A genesis spec, as read from JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisSpec {
    /// `mainnet`, `testnet` or `devnet`.
    pub network: String,
    /// The genesis block's timestamp, in milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// Initial balances, in this order.
    #[serde(default)]
    pub allocations: Vec<GenesisAllocation>,
    /// Initial masternodes, in this order.
    #[serde(default)]
    pub masternodes: Vec<GenesisMasternode>,
    /// Parameter changes; accepted on devnet only, because the genesis hash does not commit to
    /// them and public networks must not be able to disagree on rules under one genesis.
    #[serde(default)]
    pub overrides: Option<ParamOverrides>,
}

/// An initial balance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisAllocation {
    /// The bech32m address of the network.
    pub address: String,
    /// Decimal TIME, e.g. `"1250.5"`; a string so that no float ever touches an amount.
    pub amount: String,
}

/// An initial masternode.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisMasternode {
    /// The bech32m address that owns the collateral.
    pub owner: String,
    /// The node key, 64 hexadecimal digits.
    pub node_key: String,
    /// `bronze`, `silver` or `gold`.
    pub tier: String,
    /// A multiaddress such as `/ip4/127.0.0.1/tcp/24100`.
    pub network_address: String,
}

/// Devnet parameter changes; unset fields keep the network's value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamOverrides {
    /// See [`ChainParams::epoch_length_blocks`].
    pub epoch_length_blocks: Option<u64>,
    /// See [`ChainParams::block_interval_ms`].
    pub block_interval_ms: Option<u64>,
    /// See [`ChainParams::min_fee_rate_units_per_byte`].
    pub min_fee_rate_units_per_byte: Option<u64>,
    /// See [`ChainParams::initial_subsidy`]; decimal TIME.
    pub initial_subsidy: Option<String>,
    /// See [`ChainParams::halving_interval_blocks`].
    pub halving_interval_blocks: Option<u64>,
    /// See [`ChainParams::max_transaction_bytes`].
    pub max_transaction_bytes: Option<usize>,
    /// See [`ChainParams::max_block_bytes`].
    pub max_block_bytes: Option<usize>,
}

fn invalid(message: impl Into<String>) -> LedgerError {
    LedgerError::InvalidGenesis(message.into())
}

impl GenesisSpec {
    /// Parses a spec from JSON text.
    pub fn from_json(text: &str) -> Result<GenesisSpec, LedgerError> {
        serde_json::from_str(text).map_err(|error| invalid(format!("not a genesis spec: {error}")))
    }

    /// The spec as pretty-printed JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a genesis spec always serialises")
    }

    /// The network named by the spec.
    pub fn network(&self) -> Result<Network, LedgerError> {
        self.network
            .parse()
            .map_err(|error| invalid(format!("{error}")))
    }

    /// The chain parameters: the network's, with the overrides applied and checked.
    pub fn params(&self) -> Result<ChainParams, LedgerError> {
        let network = self.network()?;
        let mut params = ChainParams::for_network(network);
        if let Some(overrides) = &self.overrides {
            if network != Network::Devnet {
                return Err(invalid(format!(
                    "parameter overrides are only allowed on devnet, not {network}"
                )));
            }
            let set = |target: &mut u64, value: Option<u64>| *target = value.unwrap_or(*target);
            set(
                &mut params.epoch_length_blocks,
                overrides.epoch_length_blocks,
            );
            set(&mut params.block_interval_ms, overrides.block_interval_ms);
            set(
                &mut params.min_fee_rate_units_per_byte,
                overrides.min_fee_rate_units_per_byte,
            );
            set(
                &mut params.halving_interval_blocks,
                overrides.halving_interval_blocks,
            );
            if let Some(subsidy) = &overrides.initial_subsidy {
                params.initial_subsidy = subsidy
                    .parse()
                    .map_err(|error| invalid(format!("initial_subsidy: {error}")))?;
            }
            params.max_transaction_bytes = overrides
                .max_transaction_bytes
                .unwrap_or(params.max_transaction_bytes);
            params.max_block_bytes = overrides.max_block_bytes.unwrap_or(params.max_block_bytes);
        }
        params
            .check()
            .map_err(|error| invalid(format!("overrides: {error}")))?;
        Ok(params)
    }
}

/// Builds the genesis block of `spec` and returns it with the chain parameters. The same spec
/// always gives the same block, byte for byte; apply it with [`apply_genesis`].
pub fn build_genesis(spec: &GenesisSpec) -> Result<(Block, ChainParams), LedgerError> {
    let params = spec.params()?;
    let network = params.network;

    let mut allocations = Vec::with_capacity(spec.allocations.len());
    for (index, allocation) in spec.allocations.iter().enumerate() {
        let address = Address::parse(&allocation.address, network)
            .map_err(|error| invalid(format!("allocation {index}: {error}")))?;
        let amount: Amount = allocation
            .amount
            .parse()
            .map_err(|error| invalid(format!("allocation {index}: {error}")))?;
        allocations.push(TxOut { amount, address });
    }
    let outputs = BoundedVec::new(allocations)
        .map_err(|error| invalid(format!("too many allocations: {error}")))?;
    let mut transactions = vec![Transaction::new(
        TxBody {
            kind: TxKind::Reward { height: Height(0) },
            inputs: BoundedVec::empty(),
            outputs,
        },
        BoundedVec::empty(),
    )];

    for (index, masternode) in spec.masternodes.iter().enumerate() {
        let context = |error: String| invalid(format!("masternode {index}: {error}"));
        let owner =
            Address::parse(&masternode.owner, network).map_err(|e| context(e.to_string()))?;
        let node_key: PublicKey = masternode
            .node_key
            .parse()
            .map_err(|e: ParsePublicKeyError| context(e.to_string()))?;
        let tier: Tier = masternode.tier.parse().map_err(context)?;
        let network_address =
            BoundedString::<MAX_NETWORK_ADDRESS_LEN>::new(masternode.network_address.clone())
                .map_err(|e| context(format!("network address: {e}")))?;
        let collateral = TxOut {
            amount: params.tier(tier).collateral,
            address: owner,
        };
        transactions.push(Transaction::new(
            TxBody {
                kind: TxKind::RegisterMasternode {
                    collateral_output: 0,
                    node_key,
                    tier,
                    network_address,
                },
                inputs: BoundedVec::empty(),
                outputs: BoundedVec::new(vec![collateral]).expect("one output fits"),
            },
            BoundedVec::empty(),
        ));
    }

    let transactions = BoundedVec::new(transactions)
        .map_err(|error| invalid(format!("too many masternodes: {error}")))?;
    let mut block = Block {
        header: BlockHeader {
            version: BLOCK_VERSION,
            height: Height(0),
            previous_hash: BlockHash(Hash32::ZERO),
            timestamp: Timestamp(spec.timestamp_ms),
            epoch: Epoch(0),
            proposer: PublicKey::default(),
            transactions_root: Hash32::ZERO,
            utxo_commitment: Hash32::ZERO,
            parent_commit_hash: Hash32::ZERO,
        },
        transactions,
        parent_commit: None,
    };
    block.header.transactions_root = block.compute_transactions_root();
    let empty = HashMap::new();
    let (_, _, outcome) = stage_genesis(&block, &empty, &UtxoCommitment::empty(), &params)
        .map_err(|error| invalid(error.to_string()))?;
    block.header.utxo_commitment = outcome.utxo_commitment;
    Ok((block, params))
}

type StagedGenesis = (
    FastMap<OutPoint, Option<UtxoEntry>>,
    UtxoCommitment,
    BlockOutcome,
);

fn stage_genesis<V: UtxoView>(
    block: &Block,
    view: &V,
    commitment: &UtxoCommitment,
    params: &ChainParams,
) -> Result<StagedGenesis, LedgerError> {
    let bad = |message: String| LedgerError::InvalidGenesisBlock(message);
    let header = &block.header;
    if header.version != BLOCK_VERSION {
        return Err(LedgerError::WrongVersion {
            expected: BLOCK_VERSION,
            found: header.version,
        });
    }
    if header.height != Height(0) || header.epoch != Epoch(0) {
        return Err(bad("genesis must be at height 0 in epoch 0".into()));
    }
    if header.previous_hash != BlockHash(Hash32::ZERO) || header.proposer != PublicKey::default() {
        return Err(bad(
            "genesis must have an all-zero previous_hash and proposer".into(),
        ));
    }
    if block.parent_commit.is_some() || header.parent_commit_hash != Hash32::ZERO {
        return Err(bad(
            "genesis must carry no parent certificate and an all-zero parent_commit_hash".into(),
        ));
    }
    let size = encoded_size(block);
    if size > params.max_block_bytes {
        return Err(LedgerError::BlockTooLarge {
            size,
            max: params.max_block_bytes,
        });
    }
    let Some(first) = block.transactions.first() else {
        return Err(LedgerError::MissingReward);
    };
    match first.body.kind {
        TxKind::Reward { height: Height(0) } => {}
        TxKind::Reward { height } => {
            return Err(LedgerError::RewardHeightMismatch {
                expected: Height(0),
                found: height,
            });
        }
        _ => return Err(LedgerError::MissingReward),
    }
    check_transaction(first, params)?;

    let mut node_keys = BTreeSet::new();
    let mut events = Vec::new();
    let mut undo = Vec::with_capacity(block.transactions.len());
    let mut cache = UtxoCache::new(view);
    let txids = block.txids();
    for (index, (transaction, txid)) in block.transactions.iter().zip(&txids).enumerate() {
        if index > 0 {
            let body = &transaction.body;
            let TxKind::RegisterMasternode {
                collateral_output: 0,
                node_key,
                tier,
                network_address,
            } = &body.kind
            else {
                return Err(bad(format!(
                    "transaction {index} must be a masternode registration with collateral_output 0"
                )));
            };
            if !body.inputs.is_empty()
                || !transaction.signatures.is_empty()
                || body.outputs.len() != 1
            {
                return Err(bad(format!(
                    "registration {index} must have no inputs, no signatures and one output"
                )));
            }
            let expected = params.tier(*tier).collateral;
            if body.outputs[0].amount != expected {
                return Err(LedgerError::WrongCollateralAmount {
                    tier: *tier,
                    expected,
                    found: body.outputs[0].amount,
                });
            }
            check_network_address(network_address)?;
            if !node_keys.insert(*node_key) {
                return Err(LedgerError::NodeKeyAlreadyRegistered {
                    node_key: *node_key,
                });
            }
            events.push(MasternodeEvent::Registered(MasternodeRegistration {
                collateral: OutPoint {
                    txid: *txid,
                    index: 0,
                },
                owner: body.outputs[0].address,
                node_key: *node_key,
                tier: *tier,
                network_address: network_address.clone(),
                registered_at: Height(0),
            }));
        }
        create_outputs(&mut cache, transaction, *txid, Height(0))?;
        undo.push(TxUndo {
            txid: *txid,
            spent: Vec::new(),
            created: transaction.body.outputs.len() as u32,
        });
    }
    let root = merkle_root(&txids);
    if header.transactions_root != root {
        return Err(LedgerError::WrongTransactionsRoot {
            expected: root,
            found: header.transactions_root,
        });
    }
    let total = Amount::checked_sum(
        block
            .transactions
            .iter()
            .flat_map(|tx| tx.body.outputs.iter().map(|output| output.amount)),
    );
    let allowance = params.genesis_allowance().unwrap_or(Amount::ZERO);
    match total {
        Some(total) if total <= allowance => {}
        _ => {
            return Err(bad(format!(
                "genesis creates more than the {allowance} TIME the supply cap leaves beside the block subsidies"
            )));
        }
    }

    let undo = BlockUndo {
        height: Height(0),
        transactions: undo,
        masternode_events: events,
    };
    let updated = updated_commitment(commitment, &block.transactions, &undo);
    let (_, changes) = cache.into_changes();
    let utxo_commitment = updated.digest();
    let outcome = BlockOutcome {
        undo,
        fees: Amount::ZERO,
        subsidy: Amount::ZERO,
        reward_paid: total.unwrap_or(Amount::ZERO),
        utxo_commitment,
    };
    Ok((changes, updated, outcome))
}

/// Applies the genesis block to an (empty) store: the genesis rules above instead of the input
/// rules, then the same commitment check and undo data as [`crate::apply_block`]. Apply the
/// returned masternode events to the registry.
pub fn apply_genesis<S: UtxoStore>(
    block: &Block,
    store: &mut S,
    commitment: &mut UtxoCommitment,
    params: &ChainParams,
) -> Result<BlockOutcome, LedgerError> {
    let (changes, updated, outcome) = stage_genesis(block, &*store, commitment, params)?;
    if outcome.utxo_commitment != block.header.utxo_commitment {
        return Err(LedgerError::WrongUtxoCommitment {
            expected: outcome.utxo_commitment,
            found: block.header.utxo_commitment,
        });
    }
    write_changes(store, changes, |_| false)?;
    *commitment = updated;
    Ok(outcome)
}
