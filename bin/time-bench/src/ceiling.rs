//! The machine's ceiling for the dominant cost: Ed25519 batch verification of the run's own
//! signatures on every core.

use std::time::Instant;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use timecoin_primitives::keys::BatchVerifier;
use timecoin_primitives::{Network, PublicKey, Signature, Transaction};

/// Signatures per batch, about what a node verifies per batch under load.
pub const BATCH: usize = 64;

/// One signature to check.
pub type Item = (PublicKey, [u8; 32], Signature);

/// The signatures of `txs`, as a node checks them.
pub fn items(txs: &[Transaction], network: Network) -> Vec<Item> {
    txs.iter()
        .flat_map(|tx| {
            let message = Transaction::signing_message(&tx.txid(), network);
            tx.body
                .inputs
                .iter()
                .zip(tx.signatures.iter())
                .map(move |(input, sig)| (input.public_key, message, *sig))
        })
        .collect()
}

/// A ceiling measurement.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Ceiling {
    /// Signatures verified.
    pub signatures: usize,
    /// Threads used (every core).
    pub threads: usize,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Signatures verified per second on all cores.
    pub signatures_per_sec: f64,
    /// The payment rate this supports when `nodes` nodes each verify both signatures of every
    /// payment on these cores: `signatures_per_sec / (2 × nodes)`.
    pub payments_per_sec: f64,
    /// Nodes assumed in `payments_per_sec`.
    pub nodes: usize,
}

/// Verifies `count` signatures (cycling through `items`) in batches on every core.
pub fn measure(items: &[Item], count: usize, nodes: usize) -> Ceiling {
    assert!(!items.is_empty(), "no signatures to verify");
    let batches: Vec<Vec<&Item>> = (0..count)
        .map(|i| &items[i % items.len()])
        .collect::<Vec<_>>()
        .chunks(BATCH)
        .map(<[&Item]>::to_vec)
        .collect();
    let started = Instant::now();
    batches.par_iter().for_each(|batch| {
        let mut verifier = BatchVerifier::new();
        for (key, message, sig) in batch {
            verifier.queue(key, message, sig);
        }
        verifier
            .verify()
            .expect("the run's own signatures are valid");
    });
    let seconds = started.elapsed().as_secs_f64();
    let signatures_per_sec = count as f64 / seconds;
    Ceiling {
        signatures: count,
        threads: rayon::current_num_threads(),
        seconds,
        signatures_per_sec,
        payments_per_sec: signatures_per_sec / (2.0 * nodes as f64),
        nodes,
    }
}
