//! Transaction finality across several engines with random delivery order and a Byzantine
//! voter: conflicting transactions are never both certified, and uncontested ones always are.

use std::collections::{BTreeMap, BTreeSet};

use timecoin_consensus::{
    Committee, FinalityEffect, FinalityEngine, FinalityInput, Member, VoteBatch, Weight,
};
use timecoin_primitives::{Epoch, Hash32, Network, OutPoint, SecretKey, Txid};

const NETWORK: Network = Network::Devnet;

fn secret(index: usize) -> SecretKey {
    SecretKey::from_bytes([index as u8 + 1; 32])
}

fn committee() -> Committee {
    let members = (0..4)
        .map(|index| Member {
            node_key: secret(index).public_key(),
            weight: Weight(1),
            collateral: OutPoint {
                txid: Txid(Hash32([index as u8; 32])),
                index: 0,
            },
        })
        .collect();
    Committee::new(NETWORK, Epoch(1), Hash32::ZERO, members).unwrap()
}

fn outpoint(seed: u8) -> OutPoint {
    OutPoint {
        txid: Txid(Hash32([seed; 32])),
        index: 0,
    }
}

struct Lottery(u64);

impl Lottery {
    fn next(&mut self, bound: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % bound
    }
}

enum Delivery {
    Transaction(usize, Txid, Vec<OutPoint>),
    Vote(usize, VoteBatch),
    /// The runtime reports the lock durable (delayed like any delivery).
    LockPersisted(usize, Txid),
}

#[test]
fn conflicting_transactions_are_never_both_certified() {
    let committee = committee();
    let byzantine = 3;
    let mut settled = 0;
    let mut evidence_runs = 0;
    for seed in 1..=200u64 {
        let mut lottery = Lottery(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let mut engines: Vec<FinalityEngine> = (0..3)
            .map(|index| FinalityEngine::new(committee.clone(), Some(secret(index))))
            .collect();
        // A and B both spend x; C spends only y and is uncontested.
        let txs = [
            (Txid(Hash32([0xA; 32])), vec![outpoint(1), outpoint(2)]),
            (Txid(Hash32([0xB; 32])), vec![outpoint(1)]),
            (Txid(Hash32([0xC; 32])), vec![outpoint(3)]),
        ];
        let mut pending: Vec<Delivery> = Vec::new();
        for node in 0..3 {
            for (txid, inputs) in &txs {
                pending.push(Delivery::Transaction(node, *txid, inputs.clone()));
            }
        }
        // The Byzantine member votes for everything, to everyone, with one signature.
        let vote = VoteBatch::sign(
            NETWORK,
            Epoch(1),
            txs.iter().map(|(txid, _)| *txid).collect(),
            &secret(byzantine),
        );
        for node in 0..3 {
            pending.push(Delivery::Vote(node, vote.clone()));
        }
        let mut certified: BTreeMap<Txid, BTreeSet<usize>> = BTreeMap::new();
        let mut evidence = 0;
        while !pending.is_empty() {
            let delivery = pending.swap_remove(lottery.next(pending.len()));
            let (node, result) = match delivery {
                Delivery::Transaction(node, txid, inputs) => (
                    node,
                    engines[node].handle(FinalityInput::Transaction { txid, inputs }),
                ),
                Delivery::Vote(node, vote) => {
                    let outcome = engines[node].handle_votes(vec![vote]);
                    assert!(outcome.rejected.is_empty(), "{:?}", outcome.rejected);
                    (node, Ok(outcome.effects))
                }
                // The engine signs at the end of the runtime's step; here every step is one
                // delivery.
                Delivery::LockPersisted(node, txid) => (
                    node,
                    engines[node]
                        .handle(FinalityInput::LockPersisted {
                            epoch: Epoch(1),
                            txid,
                        })
                        .map(|mut effects| {
                            effects.extend(engines[node].sign_votes());
                            effects
                        }),
                ),
            };
            let Ok(effects) = result else { continue };
            for effect in effects {
                match effect {
                    FinalityEffect::PersistLock(lock) => {
                        pending.push(Delivery::LockPersisted(node, lock.txid))
                    }
                    FinalityEffect::BroadcastVotes(vote) => {
                        for to in (0..3).filter(|&to| to != node) {
                            pending.push(Delivery::Vote(to, vote.clone()));
                        }
                    }
                    FinalityEffect::Certified(certificate) => {
                        assert!(certificate.verify(&committee).is_ok());
                        certified.entry(certificate.txid).or_default().insert(node);
                    }
                    FinalityEffect::Evidence(item) => {
                        assert_eq!(item.offender(), secret(byzantine).public_key());
                        evidence += 1;
                    }
                    FinalityEffect::ReleaseLocksBefore(_) | FinalityEffect::Refused { .. } => {}
                }
            }
        }
        let a = certified.contains_key(&txs[0].0);
        let b = certified.contains_key(&txs[1].0);
        assert!(
            !(a && b),
            "seed {seed}: both conflicting transactions certified"
        );
        // Three honest voters split over two transactions give one side two honest votes; with
        // the Byzantine vote that is a quorum, unless an engine already caught the Byzantine
        // member voting for the other side and so refused to count it: then the double spend
        // stays frozen until the epoch ends.
        settled += usize::from(a || b);
        // The uncontested transaction is certified by every honest engine.
        assert_eq!(
            certified.get(&txs[2].0).map(BTreeSet::len),
            Some(3),
            "seed {seed}"
        );
        // The Byzantine member voted for both A and B: whoever saw both reports it.
        evidence_runs += usize::from(evidence > 0);
    }
    // Delivery order decides between a winner and a freeze; both occur across seeds.
    assert!(settled > 0 && settled < 200, "{settled} of 200 settled");
    assert!(evidence_runs > 0);
}
