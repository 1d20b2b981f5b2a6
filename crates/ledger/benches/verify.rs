//! Signature verification of a block of 1,000 two-input transactions (2,000 signatures, all
//! different keys): the parallel chunked verifier against one raw `BatchVerifier` holding the same
//! 2,000 signatures (the single-core ceiling) and against one-by-one verification; and one
//! two-input transaction, its two signatures as a batch against one by one.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use timecoin_ledger::{verify_transaction, verify_transactions};
use timecoin_primitives::keys::BatchVerifier;
use timecoin_primitives::{
    Address, Amount, BoundedVec, Hash32, Network, OutPoint, PublicKey, SecretKey, Signature,
    Transaction, TxBody, TxInput, TxKind, TxOut, Txid,
};

const TRANSACTIONS: usize = 1_000;
const NETWORK: Network = Network::Devnet;

fn secret(index: usize) -> SecretKey {
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&(index as u64).to_le_bytes());
    seed[31] = 0x5a;
    SecretKey::from_bytes(seed)
}

fn block_transactions() -> Vec<Transaction> {
    (0..TRANSACTIONS)
        .map(|i| {
            let keys = [secret(2 * i), secret(2 * i + 1)];
            let inputs = keys
                .iter()
                .enumerate()
                .map(|(n, key)| TxInput {
                    prevout: OutPoint {
                        txid: Txid(Hash32([(i % 256) as u8; 32])),
                        index: (2 * i + n) as u32,
                    },
                    public_key: key.public_key(),
                })
                .collect();
            let outputs = (0..2)
                .map(|n| TxOut {
                    amount: Amount::ONE_TIME,
                    address: Address::from_public_key(&keys[n].public_key()),
                })
                .collect();
            let body = TxBody {
                kind: TxKind::Transfer,
                inputs: BoundedVec::new(inputs).unwrap(),
                outputs: BoundedVec::new(outputs).unwrap(),
            };
            Transaction::sign(body, &[&keys[0], &keys[1]], None, NETWORK).unwrap()
        })
        .collect()
}

/// The raw batch's inputs, precomputed: what the ceiling measures is only the batch itself.
fn raw_items(transactions: &[Transaction]) -> Vec<(PublicKey, [u8; 32], Signature)> {
    transactions
        .iter()
        .flat_map(|tx| {
            let message = Transaction::signing_message(&tx.txid(), NETWORK);
            tx.body
                .inputs
                .iter()
                .zip(tx.signatures.iter())
                .map(move |(input, signature)| (input.public_key, message, *signature))
        })
        .collect()
}

fn raw_batch(items: &[(PublicKey, [u8; 32], Signature)]) {
    let mut batch = BatchVerifier::new();
    for (key, message, signature) in items {
        batch.queue(key, message, signature);
    }
    batch.verify().unwrap();
}

/// Median times of `a` and `b`, run alternately so that both see the same machine load.
fn interleaved_medians(
    runs: usize,
    mut a: impl FnMut(),
    mut b: impl FnMut(),
) -> (Duration, Duration) {
    let (mut times_a, mut times_b) = (Vec::with_capacity(runs), Vec::with_capacity(runs));
    for _ in 0..runs {
        let start = Instant::now();
        a();
        times_a.push(start.elapsed());
        let start = Instant::now();
        b();
        times_b.push(start.elapsed());
    }
    times_a.sort();
    times_b.sort();
    (times_a[runs / 2], times_b[runs / 2])
}

fn bench(c: &mut Criterion) {
    let transactions = block_transactions();
    let items = raw_items(&transactions);
    assert_eq!(items.len(), 2 * TRANSACTIONS);
    verify_transactions(&transactions, NETWORK).unwrap();

    let mut group = c.benchmark_group("verify_1000_tx_2000_signatures");
    group.throughput(Throughput::Elements(TRANSACTIONS as u64));
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8));
    group.bench_function("parallel_chunked_batches", |b| {
        b.iter(|| verify_transactions(black_box(&transactions), NETWORK).unwrap())
    });
    group.bench_function("raw_single_batch_ceiling", |b| {
        b.iter(|| raw_batch(black_box(&items)))
    });
    group.bench_function("one_by_one", |b| {
        b.iter(|| {
            for (index, tx) in transactions.iter().enumerate() {
                verify_transaction(black_box(tx), index, NETWORK).unwrap();
            }
        })
    });
    group.finish();

    // A node verifies a payment that arrives alone in its step as a batch of its two
    // signatures rather than one by one; this is what that choice rests on.
    let mut group = c.benchmark_group("one_tx_2_signatures");
    group
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let lone = &transactions[..1];
    group.bench_function("batch_of_two", |b| {
        b.iter(|| verify_transactions(black_box(lone), NETWORK).unwrap())
    });
    group.bench_function("one_by_one", |b| {
        b.iter(|| verify_transaction(black_box(&lone[0]), 0, NETWORK).unwrap())
    });
    group.finish();

    let (parallel, raw) = interleaved_medians(
        31,
        || verify_transactions(&transactions, NETWORK).unwrap(),
        || raw_batch(&items),
    );
    println!(
        "\nratio on {} rayon threads: parallel verifier {:.2} ms vs raw single batch {:.2} ms (medians, interleaved) = {:.2}x the single batch's speed\n",
        rayon::current_num_threads(),
        parallel.as_secs_f64() * 1e3,
        raw.as_secs_f64() * 1e3,
        raw.as_secs_f64() / parallel.as_secs_f64()
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
