//! Applying a 1,000-transaction block (each 2 inputs, 2 outputs) to a 1,000,000-entry in-memory
//! UTXO set, including validation and the incremental UTXO commitment. The set is built once;
//! each iteration times `apply_block` and then, untimed, `undo_block` restores the set.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use timecoin_ledger::{
    BlockTemplate, ChainParams, MasternodeRegistry, UtxoCommitment, UtxoEntry, apply_block,
    build_block, undo_block,
};
use timecoin_primitives::block::BLOCK_VERSION;
use timecoin_primitives::hash::Domain;
use timecoin_primitives::{
    Address, Amount, BlockHash, BlockHeader, BoundedVec, CommitCertificate, Hash32, Height,
    Network, OutPoint, PublicKey, SecretKey, Timestamp, Transaction, TxBody, TxInput, TxKind,
    TxOut, Txid,
};

const SET_SIZE: usize = 1_000_000;
const TRANSACTIONS: usize = 1_000;

fn secret(index: usize) -> SecretKey {
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&(index as u64).to_le_bytes());
    seed[31] = 0xa5;
    SecretKey::from_bytes(seed)
}

fn bench(c: &mut Criterion) {
    let params = ChainParams::for_network(Network::Devnet);
    let keys: Vec<SecretKey> = (0..2 * TRANSACTIONS).map(secret).collect();
    let funded = |i: usize| OutPoint {
        txid: Txid(Domain::Txid.hash(&[b"funding", &(i as u64).to_le_bytes()])),
        index: 0,
    };
    let value = Amount::from_time(10).unwrap();

    // 2,000 outputs the block spends, plus filler up to one million.
    let mut utxos: HashMap<OutPoint, UtxoEntry> =
        HashMap::with_capacity(SET_SIZE + 4 * TRANSACTIONS);
    for (i, key) in keys.iter().enumerate() {
        let output = TxOut {
            amount: value,
            address: Address::from_public_key(&key.public_key()),
        };
        utxos.insert(
            funded(i),
            UtxoEntry {
                output,
                height: Height(1),
                is_collateral: false,
            },
        );
    }
    for i in utxos.len()..SET_SIZE {
        let outpoint = OutPoint {
            txid: Txid(Domain::Txid.hash(&[b"filler", &(i as u64).to_le_bytes()])),
            index: (i % 3) as u32,
        };
        let output = TxOut {
            amount: Amount::ONE_TIME,
            address: Address(Hash32([(i % 251) as u8; 32])),
        };
        utxos.insert(
            outpoint,
            UtxoEntry {
                output,
                height: Height(1),
                is_collateral: false,
            },
        );
    }
    let started = Instant::now();
    let mut commitment = UtxoCommitment::from_utxos(utxos.iter());
    println!(
        "built a {}-entry set; its commitment from scratch took {:.2?}",
        utxos.len(),
        started.elapsed()
    );

    let transactions: Vec<Transaction> = (0..TRANSACTIONS)
        .map(|i| {
            let (a, b) = (&keys[2 * i], &keys[2 * i + 1]);
            let inputs = vec![
                TxInput {
                    prevout: funded(2 * i),
                    public_key: a.public_key(),
                },
                TxInput {
                    prevout: funded(2 * i + 1),
                    public_key: b.public_key(),
                },
            ];
            let half = Amount::from_time(9).unwrap();
            let rest = Amount::from_time(11)
                .unwrap()
                .checked_sub(Amount::from_units(10_000).unwrap())
                .unwrap();
            let outputs = vec![
                TxOut {
                    amount: half,
                    address: Address::from_public_key(&b.public_key()),
                },
                TxOut {
                    amount: rest,
                    address: Address::from_public_key(&a.public_key()),
                },
            ];
            let body = TxBody {
                kind: TxKind::Transfer,
                inputs: BoundedVec::new(inputs).unwrap(),
                outputs: BoundedVec::new(outputs).unwrap(),
            };
            Transaction::sign(body, &[a, b], None, Network::Devnet).unwrap()
        })
        .collect();

    let parent = BlockHeader {
        version: BLOCK_VERSION,
        height: Height(41),
        previous_hash: BlockHash(Hash32([7; 32])),
        timestamp: Timestamp(1_767_225_600_000),
        epoch: params.epoch_of(Height(41)),
        proposer: PublicKey::default(),
        transactions_root: Hash32::ZERO,
        utxo_commitment: commitment.digest(),
        parent_commit_hash: Hash32::ZERO,
    };
    let registry = MasternodeRegistry::new();
    let miner = Address::from_public_key(&secret(usize::MAX >> 1).public_key());
    let template = BlockTemplate {
        parent: parent.clone(),
        timestamp: Timestamp(1_767_225_601_000),
        proposer: PublicKey::default(),
        transactions,
        // The signatures of a parent certificate are the node's to verify, not the ledger's.
        parent_commit: Some(CommitCertificate {
            height: parent.height,
            view: 0,
            block_hash: parent.hash(),
            votes: BoundedVec::empty(),
        }),
    };
    let block = build_block(
        template,
        |allowed| {
            vec![TxOut {
                amount: allowed,
                address: miner,
            }]
        },
        &utxos,
        &commitment,
        &registry,
        &params,
    )
    .unwrap();
    let before = commitment.clone();

    let mut group = c.benchmark_group("apply_block_1000_tx_on_1m_utxos");
    group.throughput(Throughput::Elements(TRANSACTIONS as u64));
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10));
    group.bench_function("apply_incl_commitment", |b| {
        b.iter_custom(|iterations| {
            let mut timed = Duration::ZERO;
            for _ in 0..iterations {
                let start = Instant::now();
                let outcome = apply_block(
                    black_box(&block),
                    &parent,
                    &mut utxos,
                    &mut commitment,
                    &registry,
                    &params,
                )
                .unwrap();
                timed += start.elapsed();
                undo_block(&outcome.undo, &mut utxos, &mut commitment).unwrap();
            }
            timed
        })
    });
    group.finish();
    assert_eq!(commitment, before, "apply + undo restored the commitment");
    assert_eq!(utxos.len(), SET_SIZE);

    let runs = 20u32;
    let mut timed = Duration::ZERO;
    for _ in 0..runs {
        let start = Instant::now();
        let outcome = apply_block(
            &block,
            &parent,
            &mut utxos,
            &mut commitment,
            &registry,
            &params,
        )
        .unwrap();
        timed += start.elapsed();
        undo_block(&outcome.undo, &mut utxos, &mut commitment).unwrap();
    }
    let per_block = timed / runs;
    println!(
        "\napply: {:.2} ms per 1,000-tx block = {:.0} transactions/s (on {} rayon threads)\n",
        per_block.as_secs_f64() * 1e3,
        TRANSACTIONS as f64 / per_block.as_secs_f64(),
        rayon::current_num_threads()
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
