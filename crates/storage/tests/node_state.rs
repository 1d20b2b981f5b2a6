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

#[test]
fn certified_transactions_come_back_in_the_order_stored_and_leave_by_txid() {
    let chain = TestChain::new(5, 10, 2);
    let disk = MemoryBackend::new();
    // A record as stored before sequence keys: under its txid alone.
    let legacy = txid(9);
    let mut batch = WriteBatch::new();
    batch.put(Table::Final, legacy.as_bytes().to_vec(), b"old".to_vec());
    let mut store = ChainDb::open(disk.clone(), chain.config(1 << 20)).unwrap();
    store.commit_block(chain.genesis.commit()).unwrap();
    disk.clone().commit(&batch).unwrap();

    let mut store = ChainDb::open(disk.crash(), chain.config(1 << 20)).unwrap();
    // Stored in the opposite of txid order, so txid keys would list them backwards.
    for (byte, record) in [(3, "a"), (2, "b"), (1, "c")] {
        store.put_final(&txid(byte), record.as_bytes()).unwrap();
    }
    store.put_final(&txid(3), b"a again").unwrap();
    store.remove_final(&[txid(2), txid(7)]).unwrap();
    let listed = stored(&store);
    assert_eq!(listed.len(), 3);
    assert!(listed.contains(&(legacy, b"old".to_vec())));
    let new: Vec<_> = listed.into_iter().filter(|(id, _)| *id != legacy).collect();
    assert_eq!(
        new,
        vec![(txid(3), b"a again".to_vec()), (txid(1), b"c".to_vec())]
    );

    // After a restart, removal still finds each record, and numbering goes on after them.
    let mut store = ChainDb::open(disk.crash(), chain.config(1 << 20)).unwrap();
    store.put_final(&txid(0), b"d").unwrap();
    store.remove_final(&[legacy, txid(3)]).unwrap();
    assert_eq!(
        stored(&store),
        vec![(txid(1), b"c".to_vec()), (txid(0), b"d".to_vec())]
    );
    let store = ChainDb::open(disk.crash(), chain.config(1 << 20)).unwrap();
    assert_eq!(
        stored(&store),
        vec![(txid(1), b"c".to_vec()), (txid(0), b"d".to_vec())]
    );
}
