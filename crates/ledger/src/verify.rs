//! Signature verification for many transactions at once.
//!
//! The transactions are cut into chunks, one per rayon thread; each chunk checks all
//! its signatures in one [`BatchVerifier`], about twice as fast as checking them singly, and the
//! chunks run on all cores. Only a chunk whose batch fails is re-checked signature by signature,
//! to name the first bad transaction. ZIP-215 makes single and batch verification accept exactly
//! the same signatures, so the outcome does not depend on how the work was split.

use std::borrow::Borrow;
use std::collections::HashSet;

use rayon::prelude::*;
use timecoin_primitives::keys::BatchVerifier;
use timecoin_primitives::{Block, Network, PublicKey, Signature, Transaction, TxKind, Txid};

use crate::error::LedgerError;

/// Fewest signatures worth a batch of their own: smaller chunks lose the batch speed-up to the
/// fixed cost of a multiscalar multiplication.
const MIN_SIGNATURES_PER_CHUNK: usize = 64;

/// Chunks per rayon thread. One: a batch's cost per signature falls as it grows, so equal
/// chunks, one per thread, do the least total work; finer chunks (for work stealing) measured
/// about 10% slower on a two-core machine shared with other jobs.
const CHUNKS_PER_THREAD: usize = 1;

/// The (key, message, signature) checks one transaction needs.
///
/// Every input signs the same message, and Ed25519 signing is deterministic, so the inputs a
/// wallet spends from one address carry identical (key, signature) pairs: each distinct pair is
/// checked once. A consolidation of a hundred coins of one address costs one check, not a
/// hundred; whether the transaction is valid does not change, since an identical check has an
/// identical outcome.
fn queue_transaction(
    transaction: &Transaction,
    txid: &Txid,
    network: Network,
    mut each: impl FnMut(&PublicKey, &[u8; 32], &Signature),
) -> Result<(), LedgerError> {
    let body = &transaction.body;
    let expected = body.expected_signatures();
    if transaction.signatures.len() != expected {
        return Err(LedgerError::SignatureCount {
            expected,
            found: transaction.signatures.len(),
        });
    }
    if !body.inputs.is_empty() {
        let message = Transaction::signing_message(txid, network);
        let mut queued: HashSet<(&PublicKey, &Signature)> = HashSet::new();
        for (input, signature) in body.inputs.iter().zip(transaction.signatures.iter()) {
            if queued.insert((&input.public_key, signature)) {
                each(&input.public_key, &message, signature);
            }
        }
    }
    if let TxKind::RegisterMasternode { node_key, .. } = &body.kind {
        let message = Transaction::node_key_message(txid, network);
        each(
            node_key,
            &message,
            &transaction.signatures[body.inputs.len()],
        );
    }
    Ok(())
}

/// Verifies one transaction's signatures singly; `index` only labels the error.
pub fn verify_transaction(
    transaction: &Transaction,
    index: usize,
    network: Network,
) -> Result<(), LedgerError> {
    let txid = transaction.txid();
    let mut failure = None;
    queue_transaction(transaction, &txid, network, |key, message, signature| {
        if failure.is_none() {
            failure = key.verify(message, signature).err();
        }
    })
    .map_err(|error| LedgerError::BlockTransaction {
        index,
        txid,
        error: Box::new(error),
    })?;
    match failure {
        None => Ok(()),
        Some(reason) => Err(LedgerError::InvalidSignature {
            index,
            txid,
            reason,
        }),
    }
}

/// Verifies one chunk in a single batch, falling back to single checks to name the culprit.
fn verify_chunk<T: Borrow<Transaction>>(
    transactions: &[T],
    txids: &[Txid],
    first_index: usize,
    network: Network,
) -> Result<(), LedgerError> {
    let mut batch = BatchVerifier::new();
    // A transaction with the wrong number of signatures cannot be queued; everything before it
    // is still verified, so that the error reported is always the first in block order.
    let mut malformed = None;
    for (offset, (transaction, txid)) in transactions.iter().zip(txids).enumerate() {
        let queued = queue_transaction(
            transaction.borrow(),
            txid,
            network,
            |key, message, signature| batch.queue(key, message, signature),
        );
        if let Err(error) = queued {
            malformed = Some((offset, error));
            break;
        }
    }
    let queued = malformed
        .as_ref()
        .map_or(transactions.len(), |(offset, _)| *offset);
    if batch.verify().is_err() {
        for (offset, transaction) in transactions[..queued].iter().enumerate() {
            verify_transaction(transaction.borrow(), first_index + offset, network)?;
        }
        // Under ZIP-215 a failing batch always holds a failing signature, so the loop returns;
        // were it ever not to, single verification is the rule's definition.
    }
    match malformed {
        None => Ok(()),
        Some((offset, error)) => Err(LedgerError::BlockTransaction {
            index: first_index + offset,
            txid: txids[offset],
            error: Box::new(error),
        }),
    }
}

/// Verifies the signatures of all `transactions` (input signatures over
/// [`Transaction::signing_message`], a registration's node-key proof over
/// [`Transaction::node_key_message`]; rewards have none) on every core. On failure the error
/// names the first bad transaction by its index in `transactions` and its txid, whatever the
/// chunking. Takes transactions or references to them, so a caller verifying some of the
/// transactions it holds need not copy them.
pub fn verify_transactions<T: Borrow<Transaction> + Sync>(
    transactions: &[T],
    network: Network,
) -> Result<(), LedgerError> {
    let signatures: usize = transactions
        .iter()
        .map(|tx| tx.borrow().signatures.len())
        .sum();
    if signatures == 0 {
        return transactions
            .iter()
            .enumerate()
            .try_for_each(|(index, tx)| verify_transaction(tx.borrow(), index, network));
    }
    let chunks = (rayon::current_num_threads() * CHUNKS_PER_THREAD)
        .min(signatures.div_ceil(MIN_SIGNATURES_PER_CHUNK))
        .max(1);
    if chunks == 1 {
        // A single chunk runs on this thread: handing it to the pool would only add two thread
        // switches and leave the pool's idle workers spinning, on cores that the network (or,
        // on a devnet, the other nodes) could use.
        let txids: Vec<Txid> = transactions.iter().map(|tx| tx.borrow().txid()).collect();
        return verify_chunk(transactions, &txids, 0, network);
    }
    let txids: Vec<Txid> = transactions
        .par_iter()
        .map(|tx| tx.borrow().txid())
        .collect();
    let chunk_len = transactions.len().div_ceil(chunks).max(1);
    let results: Vec<Result<(), LedgerError>> = transactions
        .par_chunks(chunk_len)
        .zip(txids.par_chunks(chunk_len))
        .enumerate()
        .map(|(chunk, (transactions, txids))| {
            verify_chunk(transactions, txids, chunk * chunk_len, network)
        })
        .collect();
    // Collected in order, so the first error is the lowest index whatever finished first.
    results.into_iter().collect()
}

/// Verifies every signature in `block`; see [`verify_transactions`].
pub fn verify_block_signatures(block: &Block, network: Network) -> Result<(), LedgerError> {
    verify_transactions(&block.transactions, network)
}

#[cfg(test)]
mod tests {
    use super::*;
    use timecoin_primitives::{
        Address, Amount, BoundedVec, Hash32, OutPoint, SecretKey, TxBody, TxInput, TxOut,
    };

    /// A transfer spending `coins` coins of each of `owners`, signed.
    fn spending(owners: &[&SecretKey], coins: u32) -> Transaction {
        let mut inputs = Vec::new();
        let mut keys = Vec::new();
        for (n, owner) in owners.iter().enumerate() {
            for index in 0..coins {
                inputs.push(TxInput {
                    prevout: OutPoint {
                        txid: Txid(Hash32([n as u8 + 1; 32])),
                        index,
                    },
                    public_key: owner.public_key(),
                });
                keys.push(*owner);
            }
        }
        let body = TxBody {
            kind: TxKind::Transfer,
            inputs: BoundedVec::new(inputs).expect("few inputs"),
            outputs: BoundedVec::new(vec![TxOut {
                amount: Amount::ONE_TIME,
                address: Address::from_public_key(&owners[0].public_key()),
            }])
            .expect("one output"),
        };
        Transaction::sign(body, &keys, None, Network::Devnet).expect("keys match inputs")
    }

    /// The signature checks `transaction` is queued for.
    fn checks(transaction: &Transaction) -> usize {
        let mut count = 0;
        queue_transaction(
            transaction,
            &transaction.txid(),
            Network::Devnet,
            |_, _, _| count += 1,
        )
        .expect("well formed");
        count
    }

    fn with_signatures(
        transaction: &Transaction,
        edit: impl FnOnce(&mut [Signature]),
    ) -> Transaction {
        let mut signatures = transaction.signatures.clone().into_inner();
        edit(&mut signatures);
        Transaction::new(
            transaction.body.clone(),
            BoundedVec::new(signatures).expect("same count"),
        )
    }

    #[test]
    fn coins_of_one_key_cost_one_check_and_any_altered_copy_is_caught() {
        let alice = SecretKey::from_bytes([7; 32]);
        let bob = SecretKey::from_bytes([8; 32]);
        let transaction = spending(&[&alice, &bob], 3);
        assert_eq!(transaction.signatures.len(), 6);
        assert_eq!(checks(&transaction), 2, "one check per key");
        assert_eq!(verify_transaction(&transaction, 0, Network::Devnet), Ok(()));
        assert_eq!(
            verify_transactions(&[&transaction], Network::Devnet),
            Ok(())
        );

        // One copy altered is a pair of its own: checked, and the transaction fails.
        let one_altered = with_signatures(&transaction, |signatures| signatures[1].0[10] ^= 0x40);
        assert_eq!(checks(&one_altered), 3);
        assert!(verify_transaction(&one_altered, 0, Network::Devnet).is_err());
        assert!(verify_transactions(&[&one_altered], Network::Devnet).is_err());

        // All of a key's copies altered alike: still one check, and it fails.
        let all_altered = with_signatures(&transaction, |signatures| {
            for signature in &mut signatures[..3] {
                signature.0[10] ^= 0x40;
            }
        });
        assert_eq!(checks(&all_altered), 2);
        assert!(verify_transaction(&all_altered, 0, Network::Devnet).is_err());
        assert!(verify_transactions(&[&all_altered], Network::Devnet).is_err());
    }
}
