//! Throughput of the consensus engines on one core, next to the raw Ed25519 ceiling.
//!
//! - `finality/votes`: transaction votes handled per second by a `FinalityEngine`: signature
//!   checks, tallying, certificate assembly and bookkeeping included.
//! - `finality/votes_batched`: the same, handed over 256 at a time through
//!   `FinalityEngine::handle_votes`, which checks signatures as a batch.
//! - `finality/vote_batches`: each voter signs one vote over 256 transactions (as a node under
//!   load signs one per step); throughput counts (voter, transaction) votes.
//! - `finality/verify_certificate`: finality certificates (a quorum of a 100-member committee)
//!   verified per second.
//! - `ed25519/single` and `ed25519/batch`: the same quorum of signatures checked one by one
//!   with `PublicKey::verify` and as one `BatchVerifier` batch: the ceilings for the two above.
//! - `ed25519/batch_256_votes`: one 256-vote chunk of `votes_batched` as one batch, its ceiling.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use timecoin_consensus::finality::sign_transaction_vote;
use timecoin_consensus::signing::{transaction_vote_message, vote_leaf};
use timecoin_consensus::{
    Committee, FinalityCertificate, FinalityEffect, FinalityEngine, FinalityInput, FinalityVote,
    Member, VoteBatch, VoteProof, Weight,
};
use timecoin_primitives::keys::BatchVerifier;
use timecoin_primitives::{BoundedVec, Epoch, Hash32, Network, OutPoint, SecretKey, Txid};

const MEMBERS: u8 = 100;
const TRANSACTIONS: u8 = 20;
/// Transactions under one signature in `vote_batches`.
const BATCH: u16 = 256;

fn setup() -> (Committee, Vec<SecretKey>) {
    let keys: Vec<SecretKey> = (1..=MEMBERS)
        .map(|seed| SecretKey::from_bytes([seed; 32]))
        .collect();
    let members = keys
        .iter()
        .enumerate()
        .map(|(index, key)| Member {
            node_key: key.public_key(),
            weight: Weight(1),
            collateral: OutPoint {
                txid: Txid(Hash32([index as u8; 32])),
                index: 0,
            },
        })
        .collect();
    let committee = Committee::new(Network::Devnet, Epoch(1), Hash32::ZERO, members).unwrap();
    (committee, keys)
}

fn txid(seed: u8) -> Txid {
    Txid(Hash32([seed; 32]))
}

fn wide_txid(seed: u16) -> Txid {
    let mut bytes = [0u8; 32];
    bytes[..2].copy_from_slice(&seed.to_le_bytes());
    Txid(Hash32(bytes))
}

fn offer(engine: &mut FinalityEngine, txid: Txid) {
    let inputs = vec![OutPoint { txid, index: 1 }];
    engine
        .handle(FinalityInput::Transaction { txid, inputs })
        .unwrap();
}

fn engines(c: &mut Criterion) {
    let (committee, keys) = setup();
    let quorum = committee.quorum_weight().get() as usize;
    let votes: Vec<VoteBatch> = (0..TRANSACTIONS)
        .flat_map(|tx| {
            keys.iter()
                .take(quorum)
                .map(move |key| sign_transaction_vote(Network::Devnet, Epoch(1), txid(tx), key))
        })
        .collect();

    let mut group = c.benchmark_group("finality");
    group.throughput(Throughput::Elements(votes.len() as u64));
    group.bench_function("votes", |b| {
        b.iter(|| {
            let mut engine = FinalityEngine::new(committee.clone(), None);
            for tx in 0..TRANSACTIONS {
                offer(&mut engine, txid(tx));
            }
            let mut certified = 0;
            for vote in &votes {
                let outcome = engine.handle_votes(vec![vote.clone()]);
                assert!(outcome.rejected.is_empty());
                certified += outcome
                    .effects
                    .iter()
                    .filter(|e| matches!(e, FinalityEffect::Certified(_)))
                    .count();
            }
            assert_eq!(certified, TRANSACTIONS as usize);
            black_box(engine)
        })
    });

    group.bench_function("votes_batched", |b| {
        b.iter(|| {
            let mut engine = FinalityEngine::new(committee.clone(), None);
            for tx in 0..TRANSACTIONS {
                offer(&mut engine, txid(tx));
            }
            // As a node would hand them over: whatever arrived since the last batch.
            let mut certified = 0;
            for chunk in votes.chunks(256) {
                let outcome = engine.handle_votes(chunk.to_vec());
                assert!(outcome.rejected.is_empty());
                certified += outcome
                    .effects
                    .iter()
                    .filter(|e| matches!(e, FinalityEffect::Certified(_)))
                    .count();
            }
            assert_eq!(certified, TRANSACTIONS as usize);
            black_box(engine)
        })
    });

    let batch_txids: Vec<Txid> = (0..BATCH).map(wide_txid).collect();
    let batches: Vec<VoteBatch> = keys
        .iter()
        .take(quorum)
        .map(|key| VoteBatch::sign(Network::Devnet, Epoch(1), batch_txids.clone(), key))
        .collect();
    group.throughput(Throughput::Elements(BATCH as u64 * quorum as u64));
    let mut batch_certificate = None;
    group.bench_function("vote_batches", |b| {
        b.iter(|| {
            let mut engine = FinalityEngine::new(committee.clone(), None);
            for txid in &batch_txids {
                offer(&mut engine, *txid);
            }
            let outcome = engine.handle_votes(batches.clone());
            assert!(outcome.rejected.is_empty());
            let certificates: Vec<&FinalityCertificate> = outcome
                .effects
                .iter()
                .filter_map(|e| match e {
                    FinalityEffect::Certified(certificate) => Some(certificate),
                    _ => None,
                })
                .collect();
            assert_eq!(certificates.len(), BATCH as usize);
            batch_certificate = Some(certificates[0].clone());
            black_box(engine)
        })
    });
    let batch_certificate = batch_certificate.expect("the benchmark ran");

    let certificate = FinalityCertificate {
        epoch: Epoch(1),
        txid: txid(0),
        votes: {
            let mut quorum_votes: Vec<FinalityVote> = votes[..quorum]
                .iter()
                .map(|vote| FinalityVote {
                    voter: vote.voter,
                    proof: VoteProof {
                        signature: vote.signature,
                        path: BoundedVec::default(),
                    },
                })
                .collect();
            quorum_votes.sort_by_key(|vote| vote.voter);
            BoundedVec::new(quorum_votes).unwrap()
        },
    };
    group.throughput(Throughput::Elements(1));
    group.bench_function("verify_certificate", |b| {
        b.iter(|| black_box(certificate.verify(&committee).unwrap()))
    });
    // The same with a path of 8 hashes per vote, as certificates from 256-transaction votes
    // carry.
    group.bench_function("verify_batch_certificate", |b| {
        b.iter(|| black_box(batch_certificate.verify(&committee).unwrap()))
    });
    group.finish();

    let message = transaction_vote_message(Network::Devnet, Epoch(1), &vote_leaf(&txid(0)));
    let mut group = c.benchmark_group("ed25519");
    group.throughput(Throughput::Elements(certificate.votes.len() as u64));
    group.bench_function("single", |b| {
        b.iter(|| {
            for vote in certificate.votes.iter() {
                vote.voter.verify(&message, &vote.proof.signature).unwrap();
            }
        })
    });
    group.bench_function("batch", |b| {
        b.iter(|| {
            let mut batch = BatchVerifier::new();
            for vote in certificate.votes.iter() {
                batch.queue(&vote.voter, &message, &vote.proof.signature);
            }
            batch.verify().unwrap();
        })
    });

    // The ceiling for `votes_batched`: one of its 256-vote chunks (many signatures per key,
    // which ed25519-zebra's batch equation merges) as a single batch.
    let chunk = &votes[..256];
    let messages: Vec<[u8; 32]> = chunk
        .iter()
        .map(|vote| transaction_vote_message(Network::Devnet, Epoch(1), &vote_leaf(&vote.txids[0])))
        .collect();
    group.throughput(Throughput::Elements(chunk.len() as u64));
    group.bench_function("batch_256_votes", |b| {
        b.iter(|| {
            let mut batch = BatchVerifier::new();
            for (vote, message) in chunk.iter().zip(&messages) {
                batch.queue(&vote.voter, message, &vote.signature);
            }
            batch.verify().unwrap();
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(10);
    targets = engines
}
criterion_main!(benches);
