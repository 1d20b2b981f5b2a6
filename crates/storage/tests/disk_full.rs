//! A real full disk under the redb backend. Needs a small, otherwise empty filesystem, which a
//! test cannot create portably, so it runs only on request:
//!
//! ```text
//! mkdir -p /tmp/tinyfs && mount -t tmpfs -o size=3m tmpfs /tmp/tinyfs
//! TIMECOIN_TINY_FS=/tmp/tinyfs cargo test -p timecoin-storage --test disk_full -- --ignored
//! ```

use timecoin_primitives::Height;
use timecoin_storage::testing::TestChain;
use timecoin_storage::{ChainStore, RedbChainDb, StorageError};

#[test]
#[ignore = "needs a small filesystem in TIMECOIN_TINY_FS (see the file's documentation)"]
fn a_full_disk_stops_the_store_at_the_last_committed_block() {
    let directory =
        std::env::var("TIMECOIN_TINY_FS").expect("TIMECOIN_TINY_FS names a small filesystem");
    let directory = std::path::Path::new(&directory).join("disk-full-test");
    let _ = std::fs::remove_dir_all(&directory);
    std::fs::create_dir_all(&directory).unwrap();
    // Ballast to delete later, standing for the operator freeing space.
    let ballast = directory.join("ballast");
    std::fs::write(&ballast, vec![1u8; 512 << 10]).unwrap();
    let path = directory.join("chain.redb");
    let mut chain = TestChain::new(31, 500, 8);
    let mut config = chain.config(64 << 10);
    config.page_cache_bytes = 1 << 20;
    let mut store = RedbChainDb::open_path(&path, config.clone()).unwrap();
    store.commit_block(chain.genesis.commit()).unwrap();
    let mut last_good = Height(0);
    let error = loop {
        let block = chain.next_block(40);
        match store.commit_block(block.commit()) {
            Ok(()) => last_good = block.block.header.height,
            Err(error) => break error,
        }
        assert!(last_good.0 < 100_000, "the filesystem never filled up");
    };
    eprintln!("failed after height {last_good}: {error}");
    assert!(matches!(error, StorageError::DiskFull { .. }), "{error}");
    assert!(
        error.to_string().contains("hint: free disk space"),
        "{error}"
    );
    assert_eq!(
        store.tip().unwrap().height,
        last_good,
        "the failed block was not applied"
    );
    let next = chain.next_block(1);
    let refused = store.commit_block(next.commit()).unwrap_err();
    assert!(matches!(refused, StorageError::Halted { .. }), "{refused}");
    drop(store);

    std::fs::remove_file(&ballast).unwrap();
    let store = RedbChainDb::open_path(&path, config).unwrap();
    assert_eq!(store.tip().unwrap().height, last_good);
    store.verify_utxo_set().unwrap();
    std::fs::remove_dir_all(&directory).unwrap();
}
