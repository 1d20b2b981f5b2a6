//! Group commit: consensus records written in group-commit mode are visible at once, lost whole
//! by a crash before `sync`, and durable after it (or after a block commit), on both backends.

use timecoin_primitives::{BoundedBytes, Height};
use timecoin_storage::testing::TestChain;
use timecoin_storage::{
    ChainDb, ChainStore, ConsensusLog, ConsensusRecord, KvBackend, LogKey, LogOutcome,
    MemoryBackend, RedbBackend, RedbOptions, Table, WriteBatch,
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

fn key(number: u32) -> Vec<u8> {
    number.to_be_bytes().to_vec()
}

#[test]
fn redb_deferred_writes_are_read_before_the_file_and_lost_whole_without_a_sync() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("kv.redb");
    let mut backend = RedbBackend::open(&path, RedbOptions::default()).unwrap();
    // Durable: keys 0, 2, 4, ... 398 in the log table, and one key of a later table.
    let mut durable = WriteBatch::new();
    for number in (0..400).step_by(2) {
        durable.put(Table::ConsensusLog, key(number), b"file".to_vec());
    }
    durable.put(Table::Final, key(1), b"other table".to_vec());
    backend.commit(&durable).unwrap();

    // Deferred: overwrite 0, delete 2 and 4, add 1, then overwrite the new 1 again.
    let mut first = WriteBatch::new();
    first.put(Table::ConsensusLog, key(0), b"pending".to_vec());
    first.delete(Table::ConsensusLog, key(2));
    first.put(Table::ConsensusLog, key(1), b"old".to_vec());
    backend.commit_deferred(&first).unwrap();
    let mut second = WriteBatch::new();
    second.delete(Table::ConsensusLog, key(4));
    second.put(Table::ConsensusLog, key(1), b"pending".to_vec());
    backend.commit_deferred(&second).unwrap();

    let get = |backend: &RedbBackend, number| backend.get(Table::ConsensusLog, &key(number));
    assert_eq!(get(&backend, 0).unwrap().as_deref(), Some(&b"pending"[..]));
    assert_eq!(get(&backend, 1).unwrap().as_deref(), Some(&b"pending"[..]));
    assert_eq!(get(&backend, 2).unwrap(), None);
    assert_eq!(get(&backend, 6).unwrap().as_deref(), Some(&b"file"[..]));
    // Enough keys for the parallel read path.
    let keys: Vec<Vec<u8>> = (0..300).map(key).collect();
    let many = backend.get_many(Table::ConsensusLog, &keys).unwrap();
    for (number, value) in many.iter().enumerate() {
        let expected = get(&backend, number as u32).unwrap();
        assert_eq!(value, &expected, "key {number}");
    }
    // A limited scan must not come up short because deletes hid file entries.
    let scanned = backend.scan(Table::ConsensusLog, &key(0), None, 4).unwrap();
    let scanned_keys: Vec<Vec<u8>> = scanned.iter().map(|(key, _)| key.clone()).collect();
    assert_eq!(scanned_keys, vec![key(0), key(1), key(6), key(8)]);
    let bounded = backend
        .scan(Table::ConsensusLog, &key(1), Some(&key(7)), 100)
        .unwrap();
    assert_eq!(bounded.len(), 2, "1 (pending) and 6 (file): {bounded:?}");
    let whole = backend
        .scan(Table::ConsensusLog, &key(0), None, usize::MAX)
        .unwrap();
    assert_eq!(whole.len(), 200 - 2 + 1);

    // Dropped without a sync: the deferred writes are lost, all of them.
    drop(backend);
    let mut backend = RedbBackend::open(&path, RedbOptions::default()).unwrap();
    assert_eq!(get(&backend, 0).unwrap().as_deref(), Some(&b"file"[..]));
    assert_eq!(get(&backend, 1).unwrap(), None);
    assert_eq!(get(&backend, 2).unwrap().as_deref(), Some(&b"file"[..]));

    // Deferred again, then made durable by an unrelated durable commit, in order.
    backend.commit_deferred(&first).unwrap();
    let mut later = WriteBatch::new();
    later.delete(Table::ConsensusLog, key(1));
    later.put(Table::ConsensusLog, key(3), b"durable".to_vec());
    backend.commit(&later).unwrap();
    backend.commit_deferred(&second).unwrap();
    backend.sync().unwrap();
    drop(backend);
    let backend = RedbBackend::open(&path, RedbOptions::default()).unwrap();
    assert_eq!(get(&backend, 0).unwrap().as_deref(), Some(&b"pending"[..]));
    assert_eq!(get(&backend, 1).unwrap().as_deref(), Some(&b"pending"[..]));
    assert_eq!(get(&backend, 2).unwrap(), None);
    assert_eq!(get(&backend, 3).unwrap().as_deref(), Some(&b"durable"[..]));
    assert_eq!(get(&backend, 4).unwrap(), None);
    assert_eq!(
        backend.get(Table::Final, &key(1)).unwrap().as_deref(),
        Some(&b"other table"[..])
    );
}
