//! The crash test: a child process commits blocks and persists votes in a loop and is killed
//! with SIGKILL at a random moment; after each kill the store must reopen at a fully applied
//! block, with a UTXO set matching the tip header's commitment, and with every vote the child
//! reported as durable.
//!
//! The child is this test binary re-executed with `TIMECOIN_CRASH_CHILD` set. Rounds:
//! `TIMECOIN_CRASH_ROUNDS` (default 24); seed: `TIMECOIN_CRASH_SEED`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use timecoin_primitives::{BoundedBytes, Height};
use timecoin_storage::testing::{SplitMix, TestChain};
use timecoin_storage::{
    ChainStore, ConsensusLog, ConsensusRecord, LogKey, RedbChainDb, RedbOptions, StoreConfig,
};

const CHILD_DIRECTORY: &str = "TIMECOIN_CRASH_CHILD";
const CHILD_VOTE_BASE: &str = "TIMECOIN_CRASH_VOTE_BASE";
/// Whether the child commits with redb's quick repair (alternates by round: a node may run
/// either way, and may switch between restarts).
const CHILD_QUICK_REPAIR: &str = "TIMECOIN_CRASH_QUICK_REPAIR";
const SEED: u64 = 0x5eed;

fn chain() -> TestChain {
    TestChain::new(SEED, 3_000, 16)
}

/// A cache this small flushes every few blocks, so kills land inside flushes too.
fn config(chain: &TestChain) -> StoreConfig {
    let mut config = chain.config(256 << 10);
    config.max_unflushed_blocks = 7;
    config.prune_keep_blocks = Some(20);
    config
}

fn vote(number: u64) -> ConsensusRecord {
    ConsensusRecord {
        key: LogKey::BlockVote {
            height: Height(number),
            view: 1,
            phase: 2,
        },
        value: BoundedBytes::new(number.to_le_bytes().to_vec()).expect("short"),
    }
}

#[test]
#[ignore = "the child process of crash_test_survives_sigkill; does nothing on its own"]
fn crash_child() {
    let Ok(directory) = std::env::var(CHILD_DIRECTORY) else {
        return;
    };
    let mut vote_number: u64 = std::env::var(CHILD_VOTE_BASE)
        .expect("vote base")
        .parse()
        .expect("a number");
    let mut chain = chain();
    let path = std::path::Path::new(&directory).join("chain.redb");
    let quick_repair = std::env::var(CHILD_QUICK_REPAIR).is_ok_and(|value| value == "true");
    // Small UTXO log segments, so that crashes also land in compactions.
    let engine = RedbOptions {
        quick_repair,
        utxo_log_segment_bytes: 64 << 10,
        ..RedbOptions::default()
    };
    let mut store = RedbChainDb::open_path_with(&path, config(&chain), engine).expect("open");
    match store.tip() {
        None => store.commit_block(chain.genesis.commit()).expect("genesis"),
        Some(tip) => {
            let mut utxos = HashMap::new();
            store
                .for_each_utxo(|outpoint, entry| {
                    utxos.insert(*outpoint, *entry);
                })
                .expect("scan");
            chain.resume(
                utxos,
                (tip.height, tip.hash),
                store.utxo_commitment().clone(),
            );
        }
    }
    let mut rng = SplitMix::new(vote_number);
    loop {
        let block = chain.next_block(30);
        store.commit_block(block.commit()).expect("commit");
        println!("applied {}", block.block.header.height);
        let batch: Vec<ConsensusRecord> = (0..1 + rng.below(40))
            .map(|_| {
                vote_number += 1;
                vote(vote_number)
            })
            .collect();
        // Every other round goes through group commit as a node's step does: several deferred
        // batches, then one sync, and only then are the votes reported.
        let grouped = rng.below(2) == 1;
        store.set_group_commit(grouped);
        let parts = if grouped { 3 } else { 1 };
        let mut outcomes = Vec::new();
        for part in batch.chunks(batch.len().div_ceil(parts)) {
            outcomes.extend(store.persist(part).expect("persist"));
        }
        if grouped {
            store.sync().expect("sync");
            store.set_group_commit(false);
        }
        assert!(
            outcomes
                .iter()
                .all(|outcome| *outcome == timecoin_storage::LogOutcome::Written)
        );
        for record in &batch {
            let LogKey::BlockVote { height, .. } = record.key else {
                unreachable!()
            };
            println!("vote {} durable", height.0);
        }
    }
}

#[test]
fn crash_test_survives_sigkill() {
    let rounds: u64 = std::env::var("TIMECOIN_CRASH_ROUNDS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(24);
    let seed: u64 = std::env::var("TIMECOIN_CRASH_SEED")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(7);
    let mut rng = SplitMix::new(seed);
    let directory = tempfile::tempdir().unwrap();
    let chain = chain();
    let mut durable_votes: Vec<u64> = Vec::new();
    let mut highest_applied: Option<u64> = None;
    let started = Instant::now();
    for round in 0..rounds {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "crash_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIRECTORY, directory.path())
            .env(CHILD_VOTE_BASE, ((round + 1) * 1_000_000_000).to_string())
            .env(CHILD_QUICK_REPAIR, (round % 2 == 0).to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (sender, lines) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        // Wait until the child has applied at least one block, then a random while longer.
        let mut received = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !received
            .iter()
            .any(|line: &String| line.starts_with("applied "))
        {
            let line = lines
                .recv_timeout(deadline - Instant::now())
                .expect("the child applies");
            received.push(line);
        }
        std::thread::sleep(Duration::from_millis(rng.below(400)));
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert!(!status.success(), "the child was killed, it did not finish");
        reader.join().unwrap();
        received.extend(lines.try_iter());

        let mut round_applied = None;
        for line in &received {
            if let Some(height) = line.strip_prefix("applied ") {
                round_applied = Some(height.parse::<u64>().unwrap());
            } else if let Some(rest) = line.strip_prefix("vote ") {
                let number = rest.trim_end_matches(" durable").parse::<u64>().unwrap();
                durable_votes.push(number);
            }
        }
        highest_applied = round_applied.max(highest_applied);

        let store = RedbChainDb::open_path(&directory.path().join("chain.redb"), config(&chain))
            .unwrap_or_else(|error| panic!("round {round}: reopening failed: {error}"));
        let tip = store.tip().expect("a tip");
        let applied = highest_applied.unwrap();
        // The child may have committed one more block than it reported before dying.
        assert!(
            tip.height.0 == applied || tip.height.0 == applied + 1,
            "round {round}: tip {} but the child reported {applied}",
            tip.height
        );
        highest_applied = Some(tip.height.0);
        let header = store.header(&tip.hash).unwrap().expect("tip header");
        let parent = store
            .block_hash(Height(tip.height.0 - 1))
            .unwrap()
            .expect("parent hash");
        assert_eq!(
            header.previous_hash, parent,
            "round {round}: the tip extends its parent"
        );
        store
            .verify_utxo_set()
            .unwrap_or_else(|error| panic!("round {round}: UTXO set wrong after crash: {error}"));
        // The address index, flushed from the same cache slots as the UTXOs, must list
        // exactly the unspent outputs of every address.
        let mut by_address: HashMap<_, Vec<_>> = HashMap::new();
        store
            .for_each_utxo(|outpoint, entry| {
                by_address
                    .entry(entry.output.address)
                    .or_default()
                    .push(*outpoint);
            })
            .unwrap();
        for address in &chain.addresses {
            let mut expected = by_address.remove(address).unwrap_or_default();
            expected.sort_unstable();
            assert_eq!(
                store.address_outpoints(address, 10_000).unwrap(),
                expected,
                "round {round}: the address index disagrees with the UTXO set"
            );
        }
        for number in &durable_votes {
            let record = store.record(&vote(*number).key).unwrap();
            assert_eq!(
                record,
                Some(vote(*number)),
                "round {round}: vote {number} lost"
            );
        }
        eprintln!(
            "round {round}: tip {} (flushed to {:?}, {} blocks replayed), {} votes checked",
            tip.height,
            store.flushed_height(),
            store.stats().replayed_blocks,
            durable_votes.len()
        );
    }
    eprintln!(
        "{rounds} SIGKILL rounds, {} blocks, {} votes, {:?}",
        highest_applied.unwrap_or(0),
        durable_votes.len(),
        started.elapsed()
    );
    let compacted = !directory.path().join("chain-utxos-00000001.log").exists();
    assert!(
        compacted,
        "the UTXO log's first segment was compacted away during the rounds"
    );
}
