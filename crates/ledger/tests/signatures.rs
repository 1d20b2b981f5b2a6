//! Parallel batch verification names exactly the bad transaction and agrees with single checks.

mod common;

use common::*;
use timecoin_ledger::{
    LedgerError, verify_block_signatures, verify_transaction, verify_transactions,
};
use timecoin_primitives::keys::SignatureError;
use timecoin_primitives::{Amount, BoundedVec, Network, OutPoint, Tier, Transaction, Txid};

/// `count` two-input transactions from distinct keys (valid signatures, fictitious inputs:
/// signature checks need no UTXO set).
fn transactions(count: usize) -> Vec<Transaction> {
    (0..count)
        .map(|i| {
            let a = key((i % 250) as u8);
            let b = timecoin_primitives::SecretKey::from_bytes([(i / 250) as u8 + 1; 32]);
            let prevout = |n: u32| OutPoint {
                txid: Txid(timecoin_primitives::Hash32([i as u8; 32])),
                index: n + 2 * i as u32,
            };
            transfer(
                &[(prevout(0), &a), (prevout(1), &b)],
                &[(address(&a), Amount::ONE_TIME)],
            )
        })
        .collect()
}

fn corrupt(tx: &mut Transaction, signature: usize) {
    let mut signatures = tx.signatures.clone().into_inner();
    signatures[signature].0[10] ^= 0x40;
    tx.signatures = BoundedVec::new(signatures).unwrap();
}

#[test]
fn valid_transactions_verify_in_batch_and_singly() {
    let txs = transactions(300);
    assert_eq!(verify_transactions(&txs, NETWORK), Ok(()));
    for (index, tx) in txs.iter().enumerate() {
        assert_eq!(verify_transaction(tx, index, NETWORK), Ok(()));
    }
    assert_eq!(verify_transactions::<Transaction>(&[], NETWORK), Ok(()));
}

#[test]
fn one_bad_signature_among_many_is_named() {
    for bad in [0usize, 1, 137, 299] {
        let mut txs = transactions(300);
        corrupt(&mut txs[bad], bad % 2);
        let expected = LedgerError::InvalidSignature {
            index: bad,
            txid: txs[bad].txid(),
            reason: SignatureError::InvalidSignature,
        };
        assert_eq!(
            verify_transactions(&txs, NETWORK),
            Err(expected.clone()),
            "bad index {bad}"
        );
        // Single verification agrees on every transaction.
        for (index, tx) in txs.iter().enumerate() {
            let single = verify_transaction(tx, index, NETWORK);
            assert_eq!(single.is_ok(), index != bad, "index {index}");
        }
        assert_eq!(verify_transaction(&txs[bad], bad, NETWORK), Err(expected));
    }
}

#[test]
fn the_first_of_several_bad_transactions_is_reported() {
    let mut txs = transactions(200);
    corrupt(&mut txs[150], 0);
    corrupt(&mut txs[20], 1);
    let error = verify_transactions(&txs, NETWORK).unwrap_err();
    assert!(
        matches!(error, LedgerError::InvalidSignature { index: 20, .. }),
        "{error}"
    );
}

#[test]
fn signatures_do_not_cross_networks() {
    let txs = transactions(10);
    let error = verify_transactions(&txs, Network::Testnet).unwrap_err();
    assert!(matches!(
        error,
        LedgerError::InvalidSignature { index: 0, .. }
    ));
}

#[test]
fn invalid_public_key_is_reported() {
    let mut txs = transactions(100);
    let mut inputs = txs[42].body.inputs.clone().into_inner();
    inputs[0].public_key.0 = [0; 32];
    inputs[0].public_key.0[0] = 2; // y = 2 is not on the curve
    txs[42].body_mut().inputs = BoundedVec::new(inputs).unwrap();
    let txid = txs[42].txid();
    assert_eq!(
        verify_transactions(&txs, NETWORK),
        Err(LedgerError::InvalidSignature {
            index: 42,
            txid,
            reason: SignatureError::InvalidPublicKey
        })
    );
}

#[test]
fn missing_signature_is_named() {
    let mut txs = transactions(100);
    txs[7].signatures = BoundedVec::new(vec![txs[7].signatures[0]]).unwrap();
    let error = verify_transactions(&txs, NETWORK).unwrap_err();
    assert!(
        matches!(error, LedgerError::BlockTransaction { index: 7, .. }),
        "{error}"
    );
    assert_eq!(
        error.root_cause(),
        &LedgerError::SignatureCount {
            expected: 2,
            found: 1
        }
    );
}

#[test]
fn registration_node_key_proof_is_verified() {
    let chain = Chain::new(&[10_000]);
    let (outpoint, entry) = chain.coins(&key(1))[0];
    let node = key(80);
    let change = entry
        .output
        .amount
        .checked_sub(time(1_000))
        .unwrap()
        .checked_sub(fee())
        .unwrap();
    let body = registration_body(
        &[(outpoint, &key(1))],
        &[(address(&key(1)), time(1_000)), (address(&key(1)), change)],
        0,
        node.public_key(),
        Tier::Bronze,
    );
    let good = sign(body.clone(), &[&key(1)], Some(&node));
    assert_eq!(verify_transaction(&good, 0, NETWORK), Ok(()));

    // The node key signing the input message instead of the proof message does not count.
    let mut wrong_message = good.clone();
    let mut signatures = wrong_message.signatures.clone().into_inner();
    signatures[1] = node.sign(&Transaction::signing_message(&good.txid(), NETWORK));
    wrong_message.signatures = BoundedVec::new(signatures).unwrap();
    let mut block = chain.build(vec![good.clone()]).unwrap();
    let mut transactions = block.transactions.clone().into_inner();
    transactions[1] = wrong_message.clone();
    block.transactions = BoundedVec::new(transactions).unwrap();
    assert_eq!(
        verify_block_signatures(&block, NETWORK),
        Err(LedgerError::InvalidSignature {
            index: 1,
            txid: good.txid(),
            reason: SignatureError::InvalidSignature
        })
    );
}

#[test]
fn rewards_carry_no_signatures() {
    let chain = Chain::new(&[10_000]);
    let block = chain.build(vec![]).unwrap();
    assert!(block.transactions[0].signatures.is_empty());
    assert_eq!(verify_block_signatures(&block, NETWORK), Ok(()));
}

mod agreement {
    use super::*;
    use proptest::prelude::*;
    use std::sync::OnceLock;

    fn signed() -> &'static Vec<Transaction> {
        static SIGNED: OnceLock<Vec<Transaction>> = OnceLock::new();
        SIGNED.get_or_init(|| transactions(160))
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        /// Whatever signatures are corrupted, the parallel verifier reports the lowest corrupted
        /// transaction, and single verification flags exactly the corrupted ones.
        #[test]
        fn batch_and_single_verification_agree(
            corrupted in proptest::collection::btree_set((0usize..160, 0usize..2), 0..4),
        ) {
            let mut txs = signed().clone();
            for (index, signature) in &corrupted {
                corrupt(&mut txs[*index], *signature);
            }
            let bad: std::collections::BTreeSet<usize> = corrupted.iter().map(|(index, _)| *index).collect();
            match (verify_transactions(&txs, NETWORK), bad.first()) {
                (Ok(()), None) => {}
                (Err(LedgerError::InvalidSignature { index, txid, .. }), Some(first)) => {
                    prop_assert_eq!(index, *first);
                    prop_assert_eq!(txid, txs[*first].txid());
                }
                (other, expected) => prop_assert!(false, "got {:?}, expected first bad {:?}", other, expected),
            }
            for (index, tx) in txs.iter().enumerate() {
                prop_assert_eq!(verify_transaction(tx, index, NETWORK).is_err(), bad.contains(&index));
            }
        }
    }
}

#[test]
fn a_bad_signature_before_a_malformed_transaction_is_reported_first() {
    let mut txs = transactions(100);
    txs[60].signatures = BoundedVec::empty();
    corrupt(&mut txs[59], 0);
    let error = verify_transactions(&txs, NETWORK).unwrap_err();
    assert!(
        matches!(error, LedgerError::InvalidSignature { index: 59, .. }),
        "{error}"
    );
}

#[test]
fn connect_block_refuses_a_forged_signature_and_writes_nothing() {
    let mut chain = Chain::new(&[10_000]);
    let (outpoint, entry) = chain.coins(&key(1))[0];
    let tx = transfer(
        &[(outpoint, &key(1))],
        &[(
            address(&key(9)),
            entry.output.amount.checked_sub(fee()).unwrap(),
        )],
    );
    let block = chain.build(vec![tx.clone()]).unwrap();
    let mut forged = block.clone();
    let mut transactions = forged.transactions.clone().into_inner();
    corrupt(&mut transactions[1], 0);
    forged.transactions = BoundedVec::new(transactions).unwrap();
    let before = chain.utxos.clone();
    let params = chain.params.clone();
    let result = timecoin_ledger::connect_block(
        &forged,
        &chain.tip,
        &mut chain.utxos,
        &mut chain.commitment,
        &chain.registry,
        &params,
    );
    assert_eq!(
        result.unwrap_err(),
        LedgerError::InvalidSignature {
            index: 1,
            txid: tx.txid(),
            reason: SignatureError::InvalidSignature
        }
    );
    assert_eq!(chain.utxos, before);
    let outcome = timecoin_ledger::connect_block(
        &block,
        &chain.tip,
        &mut chain.utxos,
        &mut chain.commitment,
        &chain.registry,
        &params,
    )
    .unwrap();
    assert_eq!(outcome.fees, fee());
}
