//! Applying blocks (`apply_*`): the only code that changes the UTXO set, and its exact inverse.
//!
//! A block is first validated and applied to an in-memory [`UtxoCache`] over the store, so that
//! a later transaction can spend an earlier one's outputs and a rejected block leaves the store
//! untouched. Only when every rule holds, including the header's UTXO commitment, are the changes
//! written to the store.

use borsh::{BorshDeserialize, BorshSerialize};
use timecoin_primitives::block::BLOCK_VERSION;
use timecoin_primitives::merkle::merkle_root;
use timecoin_primitives::{
    Amount, Block, BlockHash, BlockHeader, BoundedVec, CommitCertificate, FastMap, Hash32, Height,
    OutPoint, PublicKey, Timestamp, Transaction, TxBody, TxKind, TxOut, Txid,
};

use crate::check::{CheckedBlock, check_block, check_header};
use crate::commitment::UtxoCommitment;
use crate::error::LedgerError;
use crate::masternode::{MasternodeEvent, MasternodeView, RegistryOverlay};
use crate::params::ChainParams;
use crate::utxo::{BackendError, UtxoCache, UtxoEntry, UtxoStore, UtxoView};
use crate::validate::validate_with_overlay;

/// What one transaction changed: enough to reverse it exactly.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct TxUndo {
    /// The transaction; its outputs are `(txid, 0..created)`.
    pub txid: Txid,
    /// The outputs it spent, with their entries, in input order.
    pub spent: Vec<(OutPoint, UtxoEntry)>,
    /// How many outputs it created.
    pub created: u32,
}

/// What one block changed, for [`undo_block`]. It is local data (written by this node, never
/// received from a peer), so its lists are not bounded beyond what a valid block allows.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct BlockUndo {
    /// The block's height.
    pub height: Height,
    /// One entry per transaction, in block order.
    pub transactions: Vec<TxUndo>,
    /// The registry changes the block made, in block order.
    pub masternode_events: Vec<MasternodeEvent>,
}

/// What applying a block did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockOutcome {
    /// How to reverse it; also lists the masternode registrations and deregistrations, which the
    /// registry (storage, consensus committee) must apply in order.
    pub undo: BlockUndo,
    /// The sum of the fees of the block's transactions.
    pub fees: Amount,
    /// The new TIME the block was allowed to create.
    pub subsidy: Amount,
    /// What the reward transaction paid: at most `subsidy + fees` by the ledger's own rule, and
    /// exactly that once the node has checked the split ([`crate::check_reward_split`]).
    pub reward_paid: Amount,
    /// The UTXO commitment after the block, as in the header.
    pub utxo_commitment: Hash32,
}

impl BlockOutcome {
    /// The masternode registrations and deregistrations, in block order.
    pub fn masternode_events(&self) -> &[MasternodeEvent] {
        &self.undo.masternode_events
    }

    /// What the reward transaction had to pay out: the subsidy plus the fees, which
    /// [`crate::check_reward_split`] splits over the parent certificate's signers.
    pub fn allowed_reward(&self) -> Amount {
        self.subsidy.checked_add(self.fees).unwrap_or(Amount::MAX)
    }
}

/// A block validated against a UTXO view but not yet written.
pub(crate) struct StagedBlock {
    pub(crate) changes: FastMap<OutPoint, Option<UtxoEntry>>,
    pub(crate) commitment: UtxoCommitment,
    pub(crate) outcome: BlockOutcome,
}

/// The outputs `transaction` creates at `height`, marking a registration's collateral.
pub(crate) fn created_entries(
    transaction: &Transaction,
    txid: Txid,
    height: Height,
) -> impl Iterator<Item = (OutPoint, UtxoEntry)> + '_ {
    let collateral = match transaction.body.kind {
        TxKind::RegisterMasternode {
            collateral_output, ..
        } => Some(collateral_output),
        _ => None,
    };
    transaction
        .body
        .outputs
        .iter()
        .zip(0u32..)
        .map(move |(output, index)| {
            let entry = UtxoEntry {
                output: *output,
                height,
                is_collateral: collateral == Some(index),
            };
            (OutPoint { txid, index }, entry)
        })
}

/// Whether `transaction`'s outputs are new by construction, so that nobody need look them up
/// before inserting them: true for a transaction with inputs. It spends at least one output
/// that no other transaction of the chain can spend, and its txid commits to its inputs, so its
/// outputs are new unless two different transactions share a txid (ADR 0017). Outputs of a
/// transaction without inputs (a reward, a genesis allocation) are checked.
pub fn outputs_are_new(transaction: &Transaction) -> bool {
    !transaction.body.inputs.is_empty()
}

/// Adds `transaction`'s outputs to `cache`, refusing to overwrite an existing output, which
/// would make the block impossible to undo exactly. Only outputs that are not new by
/// construction ([`outputs_are_new`]) are looked up: looking up the others cost a B-tree walk
/// per output on a node whose UTXO set is on disk, as Bitcoin Core found when it stopped doing
/// so for non-coinbase outputs.
pub(crate) fn create_outputs<V: UtxoView>(
    cache: &mut UtxoCache<V>,
    transaction: &Transaction,
    txid: Txid,
    height: Height,
) -> Result<(), LedgerError> {
    let unique_by_construction = outputs_are_new(transaction);
    for (outpoint, entry) in created_entries(transaction, txid, height) {
        if !unique_by_construction && cache.utxo(&outpoint)?.is_some() {
            return Err(LedgerError::OutputAlreadyExists { outpoint });
        }
        cache.insert_utxo(outpoint, entry)?;
    }
    Ok(())
}

/// The commitment after the changes recorded in `undo` for `transactions`.
pub(crate) fn updated_commitment(
    commitment: &UtxoCommitment,
    transactions: &[Transaction],
    undo: &BlockUndo,
) -> UtxoCommitment {
    let removed: Vec<(OutPoint, UtxoEntry)> = undo
        .transactions
        .iter()
        .flat_map(|tx| tx.spent.iter().copied())
        .collect();
    let inserted: Vec<(OutPoint, UtxoEntry)> = transactions
        .iter()
        .zip(&undo.transactions)
        .flat_map(|(transaction, tx)| created_entries(transaction, tx.txid, undo.height))
        .collect();
    let mut updated = commitment.clone();
    updated.update(&inserted, &removed);
    updated
}

/// Validates every transaction of `block` in order against `view` plus the block's earlier
/// transactions, and computes the resulting changes and commitment. The header and the block's
/// stateless rules must already have been checked, giving `checked`.
pub(crate) fn stage_block<V: UtxoView, M: MasternodeView>(
    block: &Block,
    checked: &CheckedBlock,
    view: &V,
    commitment: &UtxoCommitment,
    masternodes: &M,
    params: &ChainParams,
) -> Result<StagedBlock, LedgerError> {
    let height = block.header.height;
    let mut cache = UtxoCache::new(view);
    let mut registry = RegistryOverlay::new(masternodes);
    let mut fees = Amount::ZERO;
    let mut transactions = Vec::with_capacity(block.transactions.len());
    for (index, transaction) in block.transactions.iter().enumerate() {
        let txid = checked.txids[index];
        let in_block = |error| LedgerError::BlockTransaction {
            index,
            txid,
            error: Box::new(error),
        };
        let spent = if index == 0 {
            // check_block has made sure the first transaction, and only it, is the reward.
            Vec::new()
        } else {
            let validated = validate_with_overlay(
                transaction,
                txid,
                checked.sizes[index],
                &cache,
                &registry,
                params,
                height,
            )
            .map_err(in_block)?;
            fees = fees
                .checked_add(validated.fee)
                .ok_or(in_block(LedgerError::InputsOverflow))?;
            if let Some(event) = validated.masternode_event {
                registry.push(event);
            }
            for (outpoint, _) in &validated.spent {
                cache
                    .remove_utxo(outpoint)
                    .map_err(|e| in_block(e.into()))?;
            }
            validated.spent
        };
        create_outputs(&mut cache, transaction, txid, height).map_err(in_block)?;
        let created = transaction.body.outputs.len() as u32;
        transactions.push(TxUndo {
            txid,
            spent,
            created,
        });
    }

    let subsidy = params.subsidy(height);
    let reward_paid =
        Amount::checked_sum(block.transactions[0].body.outputs.iter().map(|o| o.amount))
            .ok_or(LedgerError::OutputsOverflow)?;
    let allowed = subsidy.checked_add(fees).unwrap_or(Amount::MAX);
    if reward_paid > allowed {
        return Err(LedgerError::RewardTooLarge {
            paid: reward_paid,
            allowed,
        });
    }

    let undo = BlockUndo {
        height,
        transactions,
        masternode_events: registry.into_events(),
    };
    let updated = updated_commitment(commitment, &block.transactions, &undo);
    let (_, changes) = cache.into_changes();
    let utxo_commitment = updated.digest();
    Ok(StagedBlock {
        changes,
        commitment: updated,
        outcome: BlockOutcome {
            undo,
            fees,
            subsidy,
            reward_paid,
            utxo_commitment,
        },
    })
}

/// Writes staged changes into `store`, in outpoint order: a store that injects faults at the
/// n-th write (as the simulator's does) then fails at the same place on every run. Outputs of
/// the transactions for which `new_outputs` holds are inserted as new
/// ([`UtxoStore::insert_new_utxo`]).
pub(crate) fn write_changes<S: UtxoStore>(
    store: &mut S,
    changes: FastMap<OutPoint, Option<UtxoEntry>>,
    new_outputs: impl Fn(&Txid) -> bool,
) -> Result<(), BackendError> {
    let mut changes: Vec<_> = changes.into_iter().collect();
    changes.sort_unstable_by_key(|(outpoint, _)| *outpoint);
    for (outpoint, change) in changes {
        match change {
            Some(entry) if new_outputs(&outpoint.txid) => store.insert_new_utxo(outpoint, entry)?,
            Some(entry) => store.insert_utxo(outpoint, entry)?,
            None => {
                store.remove_utxo(&outpoint)?;
            }
        }
    }
    Ok(())
}

/// Runs every rule of [`apply_block`] and returns the changes without writing them.
fn stage_and_check<V: UtxoView, M: MasternodeView>(
    block: &Block,
    parent: &BlockHeader,
    view: &V,
    commitment: &UtxoCommitment,
    masternodes: &M,
    params: &ChainParams,
) -> Result<StagedBlock, LedgerError> {
    check_header(&block.header, parent, params)?;
    let checked = check_block(block, params)?;
    let staged = stage_block(block, &checked, view, commitment, masternodes, params)?;
    if staged.outcome.utxo_commitment != block.header.utxo_commitment {
        return Err(LedgerError::WrongUtxoCommitment {
            expected: staged.outcome.utxo_commitment,
            found: block.header.utxo_commitment,
        });
    }
    Ok(staged)
}

/// Checks `block` on top of `parent` by every rule of [`apply_block`], including the UTXO
/// commitment, without changing anything: what a masternode runs on a proposal before voting
/// for it. Signatures are not verified here either.
pub fn validate_block<V: UtxoView, M: MasternodeView>(
    block: &Block,
    parent: &BlockHeader,
    view: &V,
    commitment: &UtxoCommitment,
    masternodes: &M,
    params: &ChainParams,
) -> Result<BlockOutcome, LedgerError> {
    stage_and_check(block, parent, view, commitment, masternodes, params)
        .map(|staged| staged.outcome)
}

/// Validates `block` on top of `parent` and applies it: every header, stateless and UTXO rule,
/// the reward limit, and that the header's UTXO commitment is the one the block leads to.
///
/// Signatures are **not** verified here; call [`crate::verify_block_signatures`] first (it is
/// kept apart because it needs no state, parallelises, and is skipped for blocks this node has
/// verified before). On `Err` nothing has been written, except that a [`LedgerError::Backend`]
/// failure while writing may leave the store partly updated: discard it (abort the database
/// transaction). `masternodes` is the registry as of `parent`; apply
/// [`BlockOutcome::masternode_events`] to it afterwards.
pub fn apply_block<S: UtxoStore, M: MasternodeView>(
    block: &Block,
    parent: &BlockHeader,
    store: &mut S,
    commitment: &mut UtxoCommitment,
    masternodes: &M,
    params: &ChainParams,
) -> Result<BlockOutcome, LedgerError> {
    let staged = stage_and_check(block, parent, &*store, commitment, masternodes, params)?;
    write_staged(staged, store, commitment)
}

/// A block that passed every rule of [`apply_block`] on top of one parent state, kept with the
/// changes it makes: what [`validate_block_for_apply`] returns, so that applying the block
/// once it is decided need not run the rules, look its inputs up and expand the commitment's
/// elements a second time.
pub struct ValidatedBlock {
    block: BlockHash,
    /// The digest of the UTXO commitment the block was validated on.
    base: Hash32,
    staged: StagedBlock,
}

impl ValidatedBlock {
    /// What the block does, as [`validate_block`] reports it.
    pub fn outcome(&self) -> &BlockOutcome {
        &self.staged.outcome
    }

    /// Whether this is `block` validated on `parent` with the UTXO set at `commitment`: only
    /// then may its changes be written in place of applying the block. Validation checked
    /// that the block extends the parent it was given, so its header names that parent.
    pub fn fits(&self, block: &Block, parent: &BlockHeader, commitment: &UtxoCommitment) -> bool {
        self.block == block.hash()
            && block.header.previous_hash == parent.hash()
            && self.base == commitment.digest()
    }
}

/// [`validate_block`], keeping the changes for [`apply_validated_block`].
pub fn validate_block_for_apply<V: UtxoView, M: MasternodeView>(
    block: &Block,
    parent: &BlockHeader,
    view: &V,
    commitment: &UtxoCommitment,
    masternodes: &M,
    params: &ChainParams,
) -> Result<ValidatedBlock, LedgerError> {
    let staged = stage_and_check(block, parent, view, commitment, masternodes, params)?;
    Ok(ValidatedBlock {
        block: block.hash(),
        base: commitment.digest(),
        staged,
    })
}

/// [`apply_block`], writing the changes `validated` kept if it [`fits`](ValidatedBlock::fits)
/// this block, parent and UTXO set (the state it was validated on: nothing else was applied
/// since), and running every rule again otherwise. Either way the store ends up the same.
pub fn apply_validated_block<S: UtxoStore, M: MasternodeView>(
    validated: Option<ValidatedBlock>,
    block: &Block,
    parent: &BlockHeader,
    store: &mut S,
    commitment: &mut UtxoCommitment,
    masternodes: &M,
    params: &ChainParams,
) -> Result<BlockOutcome, LedgerError> {
    match validated {
        Some(validated) if validated.fits(block, parent, commitment) => {
            write_staged(validated.staged, store, commitment)
        }
        _ => apply_block(block, parent, store, commitment, masternodes, params),
    }
}

/// Writes a staged block's changes into `store` and moves `commitment` to the block's.
fn write_staged<S: UtxoStore>(
    staged: StagedBlock,
    store: &mut S,
    commitment: &mut UtxoCommitment,
) -> Result<BlockOutcome, LedgerError> {
    // A transaction's undo lists one spent output per input; only the reward has none.
    let without_inputs: Vec<Txid> = staged
        .outcome
        .undo
        .transactions
        .iter()
        .filter(|tx| tx.spent.is_empty())
        .map(|tx| tx.txid)
        .collect();
    write_changes(store, staged.changes, |txid| !without_inputs.contains(txid))?;
    *commitment = staged.commitment;
    Ok(staged.outcome)
}

/// Verifies `block`'s signatures on all cores, then [`apply_block`]s it: the whole of accepting
/// a block from a peer, for callers that have not verified its transactions before.
pub fn connect_block<S: UtxoStore, M: MasternodeView>(
    block: &Block,
    parent: &BlockHeader,
    store: &mut S,
    commitment: &mut UtxoCommitment,
    masternodes: &M,
    params: &ChainParams,
) -> Result<BlockOutcome, LedgerError> {
    crate::verify::verify_block_signatures(block, params.network)?;
    apply_block(block, parent, store, commitment, masternodes, params)
}

/// Reverses [`apply_block`] (or [`crate::apply_genesis`]): afterwards the store and commitment
/// are exactly as before the block. Apply the undo's masternode events in reverse to the registry
/// too (see [`crate::MasternodeRegistry::undo`]). Fails with [`LedgerError::UndoMismatch`],
/// writing nothing, if the store is not the one the block was applied to.
pub fn undo_block<S: UtxoStore>(
    undo: &BlockUndo,
    store: &mut S,
    commitment: &mut UtxoCommitment,
) -> Result<(), LedgerError> {
    let mut cache = UtxoCache::new(&*store);
    let mut removed = Vec::new();
    let mut restored = Vec::new();
    for tx in undo.transactions.iter().rev() {
        for index in (0..tx.created).rev() {
            let outpoint = OutPoint {
                txid: tx.txid,
                index,
            };
            let entry = cache
                .remove_utxo(&outpoint)?
                .ok_or(LedgerError::UndoMismatch { outpoint })?;
            removed.push((outpoint, entry));
        }
        for (outpoint, entry) in tx.spent.iter().rev() {
            if cache.utxo(outpoint)?.is_some() {
                return Err(LedgerError::UndoMismatch {
                    outpoint: *outpoint,
                });
            }
            cache.insert_utxo(*outpoint, *entry)?;
            restored.push((*outpoint, *entry));
        }
    }
    let (_, changes) = cache.into_changes();
    write_changes(store, changes, |_| false)?;
    commitment.update(&restored, &removed);
    Ok(())
}

/// What a proposer puts in a new block, apart from the reward.
#[derive(Clone, Debug)]
pub struct BlockTemplate {
    /// The header of the block to build on.
    pub parent: BlockHeader,
    /// The new block's timestamp.
    pub timestamp: Timestamp,
    /// The proposer's node key.
    pub proposer: PublicKey,
    /// The transactions after the reward, in the order they are applied.
    pub transactions: Vec<Transaction>,
    /// The parent's commit certificate (required from height 2 on, absent below).
    pub parent_commit: Option<CommitCertificate>,
}

/// The reward transaction of the block at `height`.
pub fn reward_transaction(height: Height, outputs: Vec<TxOut>) -> Result<Transaction, LedgerError> {
    let outputs = BoundedVec::new(outputs).map_err(|_| LedgerError::OutputsOverflow)?;
    Ok(Transaction::new(
        TxBody {
            kind: TxKind::Reward { height },
            inputs: BoundedVec::empty(),
            outputs,
        },
        BoundedVec::empty(),
    ))
}

fn assemble(
    header: &BlockHeader,
    transactions: Vec<Transaction>,
    parent_commit: Option<Box<CommitCertificate>>,
) -> Result<Block, LedgerError> {
    let transactions =
        BoundedVec::new(transactions).map_err(|error| LedgerError::BlockTooLarge {
            size: error.length,
            max: error.max,
        })?;
    let mut block = Block {
        header: header.clone(),
        transactions,
        parent_commit,
    };
    block.header.transactions_root = merkle_root(&block.txids());
    block.header.parent_commit_hash = block.compute_parent_commit_hash();
    Ok(block)
}

/// Builds the next block from `template`: validates its transactions against `view` (which is
/// not changed), asks `pay_reward` how to split the allowed reward (subsidy plus fees) and fills
/// in the header's epoch, transactions root and UTXO commitment. The result passes
/// [`apply_block`] on the same state, given valid signatures.
pub fn build_block<V: UtxoView, M: MasternodeView>(
    template: BlockTemplate,
    pay_reward: impl FnOnce(Amount) -> Vec<TxOut>,
    view: &V,
    commitment: &UtxoCommitment,
    masternodes: &M,
    params: &ChainParams,
) -> Result<Block, LedgerError> {
    let parent = &template.parent;
    let height = parent
        .height
        .checked_next()
        .ok_or(LedgerError::WrongHeight {
            expected: parent.height,
            parent: parent.height,
            found: parent.height,
        })?;
    let header = BlockHeader {
        version: BLOCK_VERSION,
        height,
        previous_hash: parent.hash(),
        timestamp: template.timestamp,
        epoch: params.epoch_of(height),
        proposer: template.proposer,
        transactions_root: Hash32::ZERO,
        utxo_commitment: Hash32::ZERO,
        parent_commit_hash: Hash32::ZERO,
    };
    check_header(&header, parent, params)?;

    // First pass with an empty reward, to learn the fees.
    let mut transactions = Vec::with_capacity(template.transactions.len() + 1);
    transactions.push(reward_transaction(height, Vec::new())?);
    transactions.extend(template.transactions);
    let draft = assemble(&header, transactions, template.parent_commit.map(Box::new))?;
    let checked = check_block(&draft, params)?;
    let staged = stage_block(&draft, &checked, view, commitment, masternodes, params)?;
    let allowed = staged
        .outcome
        .subsidy
        .checked_add(staged.outcome.fees)
        .unwrap_or(Amount::MAX);

    let Block {
        transactions,
        parent_commit,
        ..
    } = draft;
    let mut transactions = transactions.into_inner();
    transactions[0] = reward_transaction(height, pay_reward(allowed))?;
    let mut block = assemble(&header, transactions, parent_commit)?;
    let checked = check_block(&block, params)?;
    let staged = stage_block(&block, &checked, view, commitment, masternodes, params)?;
    block.header.utxo_commitment = staged.outcome.utxo_commitment;
    Ok(block)
}
