//! The node-state slot: replaced in place, durable across a crash, bounded.

use timecoin_storage::testing::TestChain;
use timecoin_storage::{ChainDb, ChainStore, MAX_NODE_STATE_BYTES, MemoryBackend};

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
