//! Group commit: consensus records written in group-commit mode are visible at once, lost whole
//! by a crash before `sync`, and durable after it (or after a block commit), on both backends.

use timecoin_primitives::{BoundedBytes, Height};
use timecoin_storage::testing::TestChain;
use timecoin_storage::{
    ChainDb, ChainStore, ConsensusLog, ConsensusRecord, LogKey, LogOutcome, MemoryBackend,
};

fn vote(height: u64, value: &[u8]) -> ConsensusRecord {
    ConsensusRecord {
        key: LogKey::BlockVote {
            height: Height(height),
            view: 0,
            phase: 1,
        },
        value: BoundedBytes::new(value.to_vec()).unwrap(),
    }
}

fn has(store: &impl ConsensusLog, height: u64) -> bool {
    store.record(&vote(height, b"").key).unwrap().is_some()
}

#[test]
fn deferred_records_are_visible_lost_by_a_crash_and_durable_after_sync() {
    let chain = TestChain::new(7, 10, 2);
    let disk = MemoryBackend::new();
    let mut store = ChainDb::open(disk.clone(), chain.config(1 << 20)).unwrap();
    store.commit_block(chain.genesis.commit()).unwrap();
    store.set_group_commit(true);

    assert_eq!(
        store.persist(&[vote(1, b"a")]).unwrap(),
        vec![LogOutcome::Written]
    );
    store.put_node_state("bft", b"deferred").unwrap();
    // Visible (and enforced) before it is durable: a conflicting record is refused at once.
    assert!(matches!(
        store.persist(&[vote(1, b"b")]).unwrap()[0],
        LogOutcome::Conflict(_)
    ));
    let lost = ChainDb::open(disk.crash(), chain.config(1 << 20)).unwrap();
    assert!(!has(&lost, 1), "an unsynced record survived a crash");
    assert_eq!(lost.node_state("bft").unwrap(), None);
    assert!(lost.tip().is_some(), "the durable block was lost");
    drop(lost);

    let disk = disk.crash();
    let mut store = ChainDb::open(disk.clone(), chain.config(1 << 20)).unwrap();
    store.set_group_commit(true);
    let before = disk.commit_count();
    for height in 2..12 {
        store.persist(&[vote(height, b"v")]).unwrap();
    }
    store.sync().unwrap();
    // Deferred writes plus exactly one durable commit for the sync.
    assert_eq!(disk.commit_count(), before + 11);
    store.sync().unwrap();
    assert_eq!(disk.commit_count(), before + 11, "an idle sync wrote");
    let kept = ChainDb::open(disk.crash(), chain.config(1 << 20)).unwrap();
    assert!((2..12).all(|height| has(&kept, height)));
}

#[test]
fn a_block_commit_makes_earlier_deferred_records_durable() {
    let mut chain = TestChain::new(8, 10, 2);
    let disk = MemoryBackend::new();
    let mut store = ChainDb::open(disk.clone(), chain.config(1 << 20)).unwrap();
    store.commit_block(chain.genesis.commit()).unwrap();
    store.set_group_commit(true);
    store.persist(&[vote(1, b"a")]).unwrap();
    let block = chain.next_block(3);
    store.commit_block(block.commit()).unwrap();
    let reopened = ChainDb::open(disk.crash(), chain.config(1 << 20)).unwrap();
    assert!(has(&reopened, 1));
    assert_eq!(reopened.tip().unwrap().height, Height(1));
}

#[test]
fn redb_group_commit_survives_reopen_after_sync() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("chain.redb");
    let chain = TestChain::new(9, 10, 2);
    let observed = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    {
        let mut store = ChainDb::open_path(&path, chain.config(1 << 20)).unwrap();
        let counter = observed.clone();
        store.set_commit_observer(Box::new(move |_| {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }));
        store.commit_block(chain.genesis.commit()).unwrap();
        store.set_group_commit(true);
        for height in 1..50 {
            store.persist(&[vote(height, b"v")]).unwrap();
        }
        store.sync().unwrap();
    }
    // One durable commit for the block, one for the group; none for the deferred records.
    assert_eq!(observed.load(std::sync::atomic::Ordering::Relaxed), 2);
    let store = ChainDb::open_path(&path, chain.config(1 << 20)).unwrap();
    assert!((1..50).all(|height| has(&store, height)));
}

#[test]
fn a_failed_sync_halts_the_store() {
    let chain = TestChain::new(10, 10, 2);
    let disk = MemoryBackend::new();
    let mut store = ChainDb::open(disk.clone(), chain.config(1 << 20)).unwrap();
    store.commit_block(chain.genesis.commit()).unwrap();
    store.set_group_commit(true);
    store.persist(&[vote(1, b"a")]).unwrap();
    disk.fail_commit_after(0, timecoin_storage::Fault::Io, false);
    assert!(store.sync().is_err());
    assert!(store.halted().is_some());
    assert!(store.persist(&[vote(2, b"a")]).is_err());
    let reopened = ChainDb::open(disk.crash(), chain.config(1 << 20)).unwrap();
    assert!(!has(&reopened, 1));
}
