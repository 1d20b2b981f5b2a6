//! The node's own records: the node-state slot (replaced in place, durable across a crash,
//! bounded) and the certified transactions not yet in a block.

use timecoin_primitives::{Hash32, Txid};
use timecoin_storage::testing::TestChain;
use timecoin_storage::{
    ChainDb, ChainStore, KvBackend, MAX_NODE_STATE_BYTES, MemoryBackend, Table, WriteBatch,
};

#[test]
fn node_state_is_replaced_durably_and_bounded() {
    let chain = TestChain::new(5, 10, 2);
    let disk = MemoryBackend::new();
    let mut store = ChainDb::open(disk.clone(), chain.config(1 << 20)).unwrap();
    store.commit_block(chain.genesis.commit()).unwrap();
    assert_eq!(store.node_state("bft").unwrap(), None);
    store.put_node_state("bft", b"first").unwrap();
    store.put_node_state("bft", b"second").unwrap();
    store.put_node_state("other", b"x").unwrap();
    assert_eq!(
        store.node_state("bft").unwrap().as_deref(),
        Some(&b"second"[..])
    );
    assert!(
        store
            .put_node_state("bft", &vec![0; MAX_NODE_STATE_BYTES + 1])
            .is_err()
    );

    let restarted = ChainDb::open(disk.crash(), chain.config(1 << 20)).unwrap();
    assert_eq!(
        restarted.node_state("bft").unwrap().as_deref(),
        Some(&b"second"[..])
    );
    assert_eq!(
        restarted.node_state("other").unwrap().as_deref(),
        Some(&b"x"[..])
    );
    assert!(restarted.tip().is_some());
}

fn txid(byte: u8) -> Txid {
    Txid(Hash32([byte; 32]))
}

fn stored(store: &ChainDb<MemoryBackend>) -> Vec<(Txid, Vec<u8>)> {
    store.finals(100).unwrap()
}

/// Keys of the certified-transaction table on `disk` (entries have 8-byte keys).
fn final_keys(disk: &MemoryBackend) -> Vec<Vec<u8>> {
    disk.scan(Table::Final, &[], None, 1000)
        .unwrap()
        .into_iter()
        .map(|(key, _)| key)
        .collect()
}

#[test]
fn certified_transactions_come_back_in_the_order_stored_and_leave_by_txid() {
    let chain = TestChain::new(5, 10, 2);
    let mut disk = MemoryBackend::new();
    // Records as stored before entries: under the txid alone, and under a sequence number and
    // the txid.
    let legacy = txid(9);
    let numbered = txid(8);
    let mut batch = WriteBatch::new();
    batch.put(Table::Final, legacy.as_bytes().to_vec(), b"old".to_vec());
    let mut key = 5u64.to_be_bytes().to_vec();
    key.extend_from_slice(numbered.as_bytes());
    batch.put(Table::Final, key, b"numbered".to_vec());
    let mut store = ChainDb::open(disk.clone(), chain.config(1 << 20)).unwrap();
    store.commit_block(chain.genesis.commit()).unwrap();
    disk.clone().commit(&batch).unwrap();

    // At open they move into one entry.
    disk = disk.crash();
    let mut store = ChainDb::open(disk.clone(), chain.config(1 << 20)).unwrap();
    assert_eq!(final_keys(&disk).len(), 1);
    assert_eq!(final_keys(&disk)[0].len(), 8);
    // Stored in the opposite of txid order, so txid keys would list them backwards.
    for (byte, record) in [(3, "a"), (2, "b"), (1, "c")] {
        store.put_final(&txid(byte), record.as_bytes()).unwrap();
    }
    // Stored again, a txid keeps its first record.
    store.put_final(&txid(3), b"a again").unwrap();
    store.remove_final(&[txid(2), txid(7)]).unwrap();
    let listed = stored(&store);
    assert_eq!(listed.len(), 4);
    assert!(listed.contains(&(legacy, b"old".to_vec())));
    assert!(listed.contains(&(numbered, b"numbered".to_vec())));
    let new: Vec<_> = listed
        .into_iter()
        .filter(|(id, _)| *id != legacy && *id != numbered)
        .collect();
    assert_eq!(
        new,
        vec![(txid(3), b"a".to_vec()), (txid(1), b"c".to_vec())]
    );

    // After a restart, removal still finds each record, and new ones come after them.
    disk = disk.crash();
    let mut store = ChainDb::open(disk.clone(), chain.config(1 << 20)).unwrap();
    store.put_final(&txid(0), b"d").unwrap();
    store.remove_final(&[legacy, txid(3), numbered]).unwrap();
    assert_eq!(
        stored(&store),
        vec![(txid(1), b"c".to_vec()), (txid(0), b"d".to_vec())]
    );
    disk = disk.crash();
    let store = ChainDb::open(disk.clone(), chain.config(1 << 20)).unwrap();
    assert_eq!(
        stored(&store),
        vec![(txid(1), b"c".to_vec()), (txid(0), b"d".to_vec())]
    );
    // Outside group commit each record is its own entry; only live ones are left on disk.
    assert_eq!(final_keys(&disk).len(), 2);
}

#[test]
fn in_group_commit_a_sync_writes_its_certified_transactions_as_one_entry() {
    let mut chain = TestChain::new(5, 10, 2);
    let mut disk = MemoryBackend::new();
    let mut store = ChainDb::open(disk.clone(), chain.config(1 << 20)).unwrap();
    store.commit_block(chain.genesis.commit()).unwrap();
    store.set_group_commit(true);
    let record = |byte: u8| vec![byte; 100];
    for byte in 0..10 {
        store.put_final(&txid(byte), &record(byte)).unwrap();
    }
    store.sync().unwrap();
    for byte in 10..20 {
        store.put_final(&txid(byte), &record(byte)).unwrap();
    }
    store.sync().unwrap();
    assert_eq!(final_keys(&disk).len(), 2, "one entry per sync");
    // Waits in memory until the next sync.
    store.put_final(&txid(20), &record(20)).unwrap();
    // Empties the first entry (deleted) and leaves the second with two live records (rewritten
    // without the others, so that nothing removed comes back at the next open).
    let removed: Vec<Txid> = (0..18).map(txid).collect();
    store.remove_final(&removed).unwrap();
    store.sync().unwrap();
    // Never synced: lost at the crash below.
    store.put_final(&txid(21), &record(21)).unwrap();
    let listed: Vec<(Txid, Vec<u8>)> = [18, 19, 20, 21]
        .into_iter()
        .map(|byte| (txid(byte), record(byte)))
        .collect();
    assert_eq!(stored(&store), listed, "the unsynced one lists last");
    assert_eq!(store.finals(2).unwrap(), listed[..2].to_vec());

    disk = disk.crash();
    let mut store = ChainDb::open(disk.clone(), chain.config(1 << 20)).unwrap();
    assert_eq!(stored(&store), listed[..3].to_vec());
    let keys = final_keys(&disk);
    assert_eq!(keys.len(), 2, "the emptied entry is gone: {keys:?}");
    let entry = disk.get(Table::Final, &keys[0]).unwrap().unwrap();
    assert!(
        entry.len() < 2 * 100 + 100,
        "the partly emptied entry holds its two live records only ({} bytes)",
        entry.len()
    );
    // Removing the last live records deletes the entries; a record stored again in group
    // commit becomes durable with the next block too.
    store.set_group_commit(true);
    store.remove_final(&[txid(18), txid(19), txid(20)]).unwrap();
    store.put_final(&txid(22), &record(22)).unwrap();
    let next = chain.next_block(1);
    store.commit_block(next.commit()).unwrap();
    disk = disk.crash();
    let store = ChainDb::open(disk.clone(), chain.config(1 << 20)).unwrap();
    assert_eq!(stored(&store), vec![(txid(22), record(22))]);
    assert_eq!(final_keys(&disk).len(), 1);
}
