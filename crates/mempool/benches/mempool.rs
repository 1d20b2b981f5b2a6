//! Throughput of the operations a node runs most: admitting a transaction into a full pool
//! (which evicts one), and choosing a block's transactions.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use timecoin_mempool::{Mempool, MempoolConfig};
use timecoin_primitives::{
    Address, Amount, BoundedVec, Hash32, OutPoint, PublicKey, Signature, Transaction, TxBody,
    TxInput, TxKind, TxOut, Txid,
};

const POOL_TRANSACTIONS: u64 = 10_000;

/// A one-input, two-output transfer (a typical payment), spending `prevout`; `nonce` makes the
/// txid unique. Signatures are dummies: the pool never checks them.
fn payment(prevout: OutPoint, nonce: u64) -> Transaction {
    let body = TxBody {
        kind: TxKind::Transfer,
        inputs: BoundedVec::new(vec![TxInput {
            prevout,
            public_key: PublicKey([7; 32]),
        }])
        .unwrap(),
        outputs: BoundedVec::new(
            (0..2)
                .map(|i| TxOut {
                    amount: Amount::from_units(nonce * 2 + i).unwrap(),
                    address: Address(Hash32([9; 32])),
                })
                .collect(),
        )
        .unwrap(),
    };
    Transaction::new(body, BoundedVec::new(vec![Signature([0; 64])]).unwrap())
}

fn confirmed(n: u64) -> OutPoint {
    let mut bytes = [0xC0; 32];
    bytes[..8].copy_from_slice(&n.to_le_bytes());
    OutPoint {
        txid: Txid(Hash32(bytes)),
        index: 0,
    }
}

/// A full default-sized pool (10,000 transactions). One in four spends an output of the
/// transaction before it, so selection has to respect dependencies. Fees grow with `n`, so
/// later transactions outrank earlier ones.
fn full_pool() -> Mempool {
    let mut pool = Mempool::new(MempoolConfig::default());
    let mut previous: Option<Txid> = None;
    for n in 0..POOL_TRANSACTIONS {
        let prevout = match previous {
            Some(txid) if n % 4 == 3 => OutPoint { txid, index: 1 },
            _ => confirmed(n),
        };
        let fee = Amount::from_units(1_000 + (n * 7_919) % 100_000).unwrap();
        let inserted = pool
            .insert(payment(prevout, n), fee)
            .expect("room in the pool");
        previous = Some(inserted.txid);
    }
    assert_eq!(pool.len() as u64, POOL_TRANSACTIONS);
    pool
}

fn insert_into_full_pool(c: &mut Criterion) {
    let mut pool = full_pool();
    // Each newcomer pays more than anything pooled, so every insert evicts the lowest entry.
    let mut next = POOL_TRANSACTIONS;
    c.bench_function("insert into full 10k pool (evicts one)", |b| {
        b.iter_batched(
            || {
                next += 1;
                let fee = Amount::from_units(1_000_000 + next).unwrap();
                (payment(confirmed(next), next), fee)
            },
            |(transaction, fee)| {
                let inserted = pool.insert(transaction, fee).expect("outbids the lowest");
                black_box(inserted.evicted.len())
            },
            BatchSize::SmallInput,
        )
    });
}

fn select_from_full_pool(c: &mut Criterion) {
    let pool = full_pool();
    c.bench_function("select_for_block(1000, 1 MB) from full 10k pool", |b| {
        b.iter(|| black_box(pool.select_for_block(black_box(1_000), 1_000_000).len()))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = insert_into_full_pool, select_from_full_pool
}
criterion_main!(benches);
