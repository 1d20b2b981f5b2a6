//! Behaviour of the chain store on both backends: reads after commits, flushes and reopening,
//! open-time errors, pruning, write faults and the consensus log.

use timecoin_ledger::{
    MasternodeEvent, MasternodeRegistration, MasternodeView, UtxoCommitment, UtxoView,
};
use timecoin_primitives::{
    BlockHash, BoundedBytes, BoundedString, BoundedVec, CommitCertificate, Epoch, Hash32, Height,
    Network, OutPoint, PublicKey, Tier, Txid, encode,
};
use timecoin_storage::testing::{TestBlock, TestChain};
use timecoin_storage::{
    ChainDb, ChainStore, ConsensusLog, ConsensusRecord, Fault, KvBackend, LogKey, LogOutcome,
    MemoryBackend, RedbBackend, RedbChainDb, RedbOptions, SCHEMA_VERSION, StorageError, Table,
    WriteBatch,
};

const SMALL_CACHE: usize = 64 << 10;

/// Checks every read the store offers against the chain's model of the UTXO set.
fn check_against_model<B: KvBackend>(store: &ChainDb<B>, chain: &TestChain, blocks: &[TestBlock]) {
    let tip = store.tip().expect("a tip");
    assert_eq!((tip.height, tip.hash), chain.tip);
    assert_eq!(store.utxo_commitment(), &chain.commitment);
    store
        .verify_utxo_set()
        .expect("the UTXO set matches the tip header");
    let mut count = 0usize;
    store.for_each_utxo(|_, _| count += 1).unwrap();
    assert_eq!(count, chain.utxos.len());
    for (outpoint, entry) in chain.utxos.iter().take(500) {
        assert_eq!(store.utxo(outpoint).unwrap(), Some(*entry));
    }
    for block in blocks {
        let hash = block.block.hash();
        assert_eq!(
            store.block_hash(block.block.header.height).unwrap(),
            Some(hash)
        );
        assert_eq!(
            store.header(&hash).unwrap().as_ref(),
            Some(&block.block.header)
        );
        for (outpoint, _) in block.changes.spent.iter() {
            assert_eq!(
                store.utxo(outpoint).unwrap(),
                None,
                "spent outputs are gone"
            );
        }
        for (position, transaction) in block.block.transactions.iter().enumerate().take(20) {
            let location = store
                .transaction_location(&transaction.txid())
                .unwrap()
                .unwrap();
            assert_eq!(location.height, block.block.header.height);
            assert_eq!(location.position as usize, position);
        }
    }
    for address in &chain.addresses {
        let mut expected: Vec<OutPoint> = chain
            .utxos
            .iter()
            .filter(|(_, entry)| entry.output.address == *address)
            .map(|(outpoint, _)| *outpoint)
            .collect();
        expected.sort();
        assert_eq!(store.address_outpoints(address, 10_000).unwrap(), expected);
        // A limit keeps the first outpoints in order.
        let first = &expected[..expected.len().min(3)];
        assert_eq!(store.address_outpoints(address, 3).unwrap(), first);
    }
}

fn build(chain: &mut TestChain, count: usize, transfers: usize) -> Vec<TestBlock> {
    (0..count).map(|_| chain.next_block(transfers)).collect()
}

fn commit_all<B: KvBackend>(store: &mut ChainDb<B>, blocks: &[TestBlock]) {
    for block in blocks {
        store.commit_block(block.commit()).unwrap();
    }
}

#[test]
fn memory_store_serves_what_was_committed_across_flushes() {
    let mut chain = TestChain::new(1, 400, 8);
    let mut store = ChainDb::open(MemoryBackend::new(), chain.config(SMALL_CACHE)).unwrap();
    store.commit_block(chain.genesis.commit()).unwrap();
    let blocks = build(&mut chain, 40, 30);
    commit_all(&mut store, &blocks);
    assert!(
        store.stats().flushes > 0,
        "a 64 KiB cache must have flushed"
    );
    check_against_model(&store, &chain, &blocks);
    let block = store.block(&blocks[3].block.hash()).unwrap().unwrap();
    assert_eq!(block, blocks[3].block);
}

#[test]
fn a_utxo_read_from_the_file_is_not_served_once_a_block_spends_it() {
    let mut chain = TestChain::new(1, 400, 8);
    let mut store = ChainDb::open(MemoryBackend::new(), chain.config(SMALL_CACHE)).unwrap();
    store.commit_block(chain.genesis.commit()).unwrap();
    let mut spent = Vec::new();
    let mut blocks = Vec::new();
    for _ in 0..40 {
        // Every unspent output read, so the store holds on to what it read from the file.
        for (outpoint, entry) in chain.utxos.iter() {
            assert_eq!(store.utxo(outpoint).unwrap(), Some(*entry));
        }
        let block = chain.next_block(30);
        store.commit_block(block.commit()).unwrap();
        spent.extend(block.changes.spent.iter().map(|(outpoint, _)| *outpoint));
        // Flushes (a 64 KiB cache) take the spends out of the cache layers; the reads kept
        // from before must not answer for them.
        for outpoint in &spent {
            assert_eq!(
                store.utxo(outpoint).unwrap(),
                None,
                "{outpoint:?} was spent"
            );
        }
        blocks.push(block);
    }
    store.flush().unwrap();
    assert!(store.stats().flushes > 1, "the cache must have flushed");
    for outpoint in &spent {
        assert_eq!(
            store.utxo(outpoint).unwrap(),
            None,
            "{outpoint:?} was spent"
        );
    }
    check_against_model(&store, &chain, &blocks);
}

#[test]
fn redb_store_reopens_at_its_tip_by_replaying_unflushed_blocks() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("chain.redb");
    let mut chain = TestChain::new(2, 300, 5);
    let config = chain.config(16 << 20);
    let blocks = build(&mut chain, 30, 20);
    {
        let mut store = RedbChainDb::open_path(&path, config.clone()).unwrap();
        store.commit_block(chain.genesis.commit()).unwrap();
        commit_all(&mut store, &blocks[..10]);
        store.flush().unwrap();
        commit_all(&mut store, &blocks[10..]);
        assert_eq!(store.flushed_height(), Some(Height(10)));
        // Dropped without a flush: the last 20 blocks exist only as their change records.
    }
    let store = RedbChainDb::open_path(&path, config).unwrap();
    assert_eq!(store.stats().replayed_blocks, 20);
    check_against_model(&store, &chain, &blocks);
}

#[test]
fn the_first_block_must_be_the_configured_genesis_and_blocks_must_chain() {
    let mut chain = TestChain::new(3, 10, 2);
    let mut store = ChainDb::open(MemoryBackend::new(), chain.config(SMALL_CACHE)).unwrap();
    let first = chain.next_block(2);
    let error = store.commit_block(first.commit()).unwrap_err();
    assert!(
        matches!(error, StorageError::InvalidCommit { .. }),
        "{error}"
    );
    store.commit_block(chain.genesis.commit()).unwrap();
    let second = chain.next_block(2);
    // Height 2 cannot follow genesis.
    let error = store.commit_block(second.commit()).unwrap_err();
    assert!(
        matches!(error, StorageError::InvalidCommit { .. }),
        "{error}"
    );
    store.commit_block(first.commit()).unwrap();
    store.commit_block(second.commit()).unwrap();
    // A commitment that disagrees with the header is refused.
    let mut third = chain.next_block(2);
    third.commitment = UtxoCommitment::empty();
    let error = store.commit_block(third.commit()).unwrap_err();
    assert!(error.to_string().contains("commitment"), "{error}");
    assert_eq!(store.tip().unwrap().height, Height(2));
}

fn redb_with_chain(path: &std::path::Path) -> TestChain {
    let mut chain = TestChain::new(4, 50, 3);
    let mut store = RedbChainDb::open_path(path, chain.config(SMALL_CACHE)).unwrap();
    store.commit_block(chain.genesis.commit()).unwrap();
    let blocks = build(&mut chain, 5, 5);
    commit_all(&mut store, &blocks);
    chain
}

fn overwrite_meta(path: &std::path::Path, key: &[u8], value: Vec<u8>) {
    let mut backend = timecoin_storage::RedbBackend::open(path, Default::default()).unwrap();
    let mut batch = WriteBatch::new();
    batch.put(Table::Meta, key.to_vec(), value);
    backend.commit(&batch).unwrap();
}

#[test]
fn open_refuses_a_database_from_an_older_layout() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("chain.redb");
    let chain = redb_with_chain(&path);
    overwrite_meta(&path, b"schema_version", borsh::to_vec(&1u32).unwrap());
    let error = RedbChainDb::open_path(&path, chain.config(SMALL_CACHE)).unwrap_err();
    assert!(
        matches!(error, StorageError::OlderVersion { found: 1, supported } if supported == SCHEMA_VERSION),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .contains("hint: move the old chain database aside"),
        "{error}"
    );
}

#[test]
fn open_refuses_a_database_from_a_newer_version() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("chain.redb");
    let chain = redb_with_chain(&path);
    overwrite_meta(&path, b"schema_version", borsh::to_vec(&99u32).unwrap());
    let error = RedbChainDb::open_path(&path, chain.config(SMALL_CACHE)).unwrap_err();
    assert!(
        matches!(
            error,
            StorageError::NewerVersion {
                found: 99,
                supported: SCHEMA_VERSION
            }
        ),
        "{error}"
    );
    assert!(
        error.to_string().contains("hint: run a newer release"),
        "{error}"
    );
}

#[test]
fn open_refuses_another_networks_database() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("chain.redb");
    let chain = redb_with_chain(&path);
    let mut config = chain.config(SMALL_CACHE);
    config.genesis_hash = BlockHash(Hash32([7; 32]));
    let error = RedbChainDb::open_path(&path, config).unwrap_err();
    assert!(
        matches!(error, StorageError::WrongNetwork { .. }),
        "{error}"
    );
    let mut config = chain.config(SMALL_CACHE);
    config.network = Network::Testnet;
    let error = RedbChainDb::open_path(&path, config).unwrap_err();
    assert!(
        error.to_string().contains("hint: check --network"),
        "{error}"
    );
    // The refusal changed nothing: the right configuration still opens the chain.
    let store = RedbChainDb::open_path(&path, chain.config(SMALL_CACHE)).unwrap();
    assert_eq!(store.tip().unwrap().hash, chain.tip.1);
}

#[test]
fn open_detects_a_commitment_that_does_not_match_the_tip_header() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("chain.redb");
    let chain = redb_with_chain(&path);
    let mut bytes = chain.commitment.to_bytes();
    bytes[17] ^= 1;
    overwrite_meta(&path, b"tip_utxo_commitment", bytes);
    let error = RedbChainDb::open_path(&path, chain.config(SMALL_CACHE)).unwrap_err();
    assert!(matches!(error, StorageError::Corrupt { .. }), "{error}");
    assert!(
        error.to_string().contains("does not match the tip header"),
        "{error}"
    );
}

#[test]
fn open_refuses_data_that_is_not_a_chain_database_and_leaves_it_alone() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("chain.redb");
    {
        let database = redb::Database::create(&path).unwrap();
        let transaction = database.begin_write().unwrap();
        {
            let definition: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("other");
            transaction
                .open_table(definition)
                .unwrap()
                .insert("x", 1)
                .unwrap();
        }
        transaction.commit().unwrap();
    }
    let chain = TestChain::new(5, 1, 1);
    let error = RedbChainDb::open_path(&path, chain.config(SMALL_CACHE)).unwrap_err();
    assert!(matches!(error, StorageError::ForeignData { .. }), "{error}");
    let database = redb::Database::open(&path).unwrap();
    let transaction = redb::ReadableDatabase::begin_read(&database).unwrap();
    let definition: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("other");
    let table = transaction.open_table(definition).unwrap();
    assert_eq!(
        table.get("x").unwrap().unwrap().value(),
        1,
        "foreign data untouched"
    );
}

#[test]
fn the_address_index_is_built_or_dropped_at_open_and_the_transaction_index_is_fixed() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("chain.redb");
    let mut chain = TestChain::new(12, 50, 3);
    let mut without = chain.config(SMALL_CACHE);
    without.index_addresses = false;
    let mut blocks = Vec::new();
    {
        let mut store = RedbChainDb::open_path(&path, without.clone()).unwrap();
        store.commit_block(chain.genesis.commit()).unwrap();
        blocks.extend(build(&mut chain, 5, 5));
        commit_all(&mut store, &blocks);
        let error = store
            .address_outpoints(&chain.addresses[0], 10)
            .unwrap_err();
        assert!(
            matches!(error, StorageError::IndexDisabled { index: "address" }),
            "{error}"
        );
        let txid = blocks[0].block.transactions[0].txid();
        assert!(store.transaction_location(&txid).unwrap().is_some());
        store.verify_utxo_set().unwrap();
        // Some blocks stay unflushed: the switch must count them too.
        assert!(store.stats().cached_utxos > 0);
    }
    // Turned on: built from the UTXO set, the blocks not yet flushed included.
    {
        let mut store = RedbChainDb::open_path(&path, chain.config(SMALL_CACHE)).unwrap();
        let switch = store.stats().address_index_switch.expect("built at open");
        assert!(switch.built);
        assert_eq!(switch.entries as usize, chain.utxos.len());
        check_against_model(&store, &chain, &blocks);
        // And kept from then on.
        let more = build(&mut chain, 3, 5);
        commit_all(&mut store, &more);
        blocks.extend(more);
        check_against_model(&store, &chain, &blocks);
    }
    let store = RedbChainDb::open_path(&path, chain.config(SMALL_CACHE)).unwrap();
    assert_eq!(store.stats().address_index_switch, None, "no switch needed");
    check_against_model(&store, &chain, &blocks);
    drop(store);
    // Turned off: dropped; and on again after more blocks, no entry of a spent output is left.
    {
        let mut store = RedbChainDb::open_path(&path, without.clone()).unwrap();
        let switch = store.stats().address_index_switch.expect("dropped at open");
        assert_eq!((switch.built, switch.entries), (false, 0));
        assert!(store.address_outpoints(&chain.addresses[0], 10).is_err());
        let more = build(&mut chain, 3, 5);
        commit_all(&mut store, &more);
        blocks.extend(more);
    }
    let store = RedbChainDb::open_path(&path, chain.config(SMALL_CACHE)).unwrap();
    check_against_model(&store, &chain, &blocks);
    drop(store);

    // The transaction index would need every block (pruning may have dropped some): a
    // changed setting is refused, and the data is left as it was.
    let mut no_transactions = chain.config(SMALL_CACHE);
    no_transactions.index_transactions = false;
    let error = RedbChainDb::open_path(&path, no_transactions).unwrap_err();
    assert!(
        matches!(error, StorageError::IndexesDiffer { .. }),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .contains("hint: use the same index settings"),
        "{error}"
    );
    let store = RedbChainDb::open_path(&path, chain.config(SMALL_CACHE)).unwrap();
    check_against_model(&store, &chain, &blocks);
}

/// A failure between building the index and recording the setting leaves the old setting (and
/// the entries). If the node then runs without the index, blocks spend outputs those entries
/// list; turning the index on later must not keep them, so a build clears the table first.
#[test]
fn an_address_index_build_cut_short_leaves_nothing_stale_behind() {
    let mut chain = TestChain::new(14, 50, 3);
    let disk = MemoryBackend::new();
    let mut without = chain.config(SMALL_CACHE);
    without.index_addresses = false;
    let mut blocks = Vec::new();
    {
        let mut store = ChainDb::open(disk.clone(), without.clone()).unwrap();
        store.commit_block(chain.genesis.commit()).unwrap();
        blocks.extend(build(&mut chain, 4, 5));
        commit_all(&mut store, &blocks);
        store.flush().unwrap();
    }
    // The build commits to the UTXO file; recording the setting in the chain file then fails.
    disk.fail_commit_after(1, Fault::DiskFull, false);
    let Err(error) = ChainDb::open(disk.clone(), chain.config(SMALL_CACHE)) else {
        panic!("the open must fail")
    };
    assert!(matches!(error, StorageError::DiskFull { .. }), "{error}");
    {
        let mut store = ChainDb::open(disk.clone(), without).unwrap();
        assert_eq!(store.stats().address_index_switch, None);
        let more = build(&mut chain, 4, 5);
        commit_all(&mut store, &more);
        blocks.extend(more);
        store.flush().unwrap();
    }
    let store = ChainDb::open(disk, chain.config(SMALL_CACHE)).unwrap();
    check_against_model(&store, &chain, &blocks);
}

#[test]
fn a_block_whose_changes_do_not_match_its_outputs_is_refused() {
    let mut chain = TestChain::new(13, 50, 3);
    let mut store = ChainDb::open(MemoryBackend::new(), chain.config(SMALL_CACHE)).unwrap();
    store.commit_block(chain.genesis.commit()).unwrap();
    let block = chain.next_block(3);
    let mut changes = block.changes.clone();
    let mut created = changes.created.clone().into_inner();
    created[0].1.height = Height(99);
    changes.created = BoundedVec::new(created).unwrap();
    let mut commit = block.commit();
    commit.changes = &changes;
    let error = store.commit_block(commit).unwrap_err();
    assert!(
        matches!(error, StorageError::InvalidCommit { .. }),
        "{error}"
    );
    assert!(
        store.halted().is_none(),
        "a refused block is the caller's bug, not a disk failure"
    );
    store.commit_block(block.commit()).unwrap();
}

#[test]
fn pruning_drops_old_bodies_but_keeps_headers_certificates_and_utxos() {
    let mut chain = TestChain::new(6, 1_000, 4);
    let mut config = chain.config(SMALL_CACHE);
    config.prune_keep_blocks = Some(5);
    config.max_unflushed_blocks = 4;
    let mut store = ChainDb::open(MemoryBackend::new(), config).unwrap();
    store.commit_block(chain.genesis.commit()).unwrap();
    // Bodies of 100 payments take more than one chunk (ADR 0031).
    let blocks = build(&mut chain, 30, 100);
    for block in &blocks {
        let certificate = CommitCertificate {
            height: block.block.header.height,
            view: 0,
            block_hash: block.block.hash(),
            votes: BoundedVec::empty(),
        };
        let mut commit = block.commit();
        commit.certificate = Some(&certificate);
        store.commit_block(commit).unwrap();
    }
    assert_eq!(store.finalized_height(), Some(Height(30)));
    let pruned_below = store.pruned_below().0;
    let mut chunked = 0;
    assert!(
        pruned_below >= 20,
        "bodies below {pruned_below} pruned; expected at least 20"
    );
    for block in &blocks {
        let height = block.block.header.height;
        let hash = block.block.hash();
        assert!(
            store.header(&hash).unwrap().is_some(),
            "header kept at {height}"
        );
        assert!(
            store.certificate(height).unwrap().is_some(),
            "certificate kept at {height}"
        );
        let body = store.block(&hash).unwrap();
        // The body's own key and every `hash ‖ index` chunk key sort below `hash ‖ ff×5`.
        let mut after_chunks = hash.as_bytes().to_vec();
        after_chunks.extend_from_slice(&[0xff; 5]);
        let stored = store
            .backend()
            .scan(Table::Bodies, hash.as_bytes(), Some(&after_chunks), 100)
            .unwrap();
        if height.0 < pruned_below {
            assert!(body.is_none(), "body at {height} should be pruned");
            assert!(
                stored.is_empty(),
                "no chunk of the body at {height} is left"
            );
        } else {
            assert_eq!(body.as_ref(), Some(&block.block));
            let size = encode(&(&block.block.transactions, &block.block.parent_commit)).len();
            assert_eq!(
                stored.len(),
                size.div_ceil(timecoin_storage::chunked::CHUNK_BYTES).max(1),
                "chunks at {height}"
            );
            chunked += usize::from(stored.len() > 1);
        }
    }
    assert!(chunked > 0, "some kept body is in chunks");
    assert!(
        store.block(&blocks[29].block.hash()).unwrap().is_some(),
        "recent bodies kept"
    );
    check_against_model(&store, &chain, &blocks);
}

#[test]
fn a_failed_write_halts_the_store_at_a_block_boundary() {
    let disk = MemoryBackend::new();
    let mut chain = TestChain::new(7, 200, 4);
    let mut store = ChainDb::open(disk.clone(), chain.config(SMALL_CACHE)).unwrap();
    store.commit_block(chain.genesis.commit()).unwrap();
    let blocks = build(&mut chain, 12, 10);
    commit_all(&mut store, &blocks[..8]);
    disk.fail_commit_after(0, Fault::DiskFull, true);
    let error = store.commit_block(blocks[8].commit()).unwrap_err();
    assert!(matches!(error, StorageError::DiskFull { .. }), "{error}");
    assert!(
        error.to_string().contains("hint: free disk space"),
        "{error}"
    );
    assert_eq!(
        store.tip().unwrap().height,
        Height(8),
        "the failed block was not applied"
    );
    disk.clear_faults();
    let error = store.commit_block(blocks[8].commit()).unwrap_err();
    assert!(matches!(error, StorageError::Halted { .. }), "{error}");
    assert!(
        store.persist(&[]).is_err(),
        "the consensus log refuses writes too"
    );

    // Restart: the node resumes at block 8 with a consistent UTXO set.
    let mut store = ChainDb::open(disk.crash(), chain.config(SMALL_CACHE)).unwrap();
    assert_eq!(store.tip().unwrap().height, Height(8));
    store.verify_utxo_set().unwrap();
    commit_all(&mut store, &blocks[8..]);
    check_against_model(&store, &chain, &blocks);
}

#[test]
fn a_failed_flush_loses_nothing_that_was_committed() {
    let disk = MemoryBackend::new();
    let mut chain = TestChain::new(8, 200, 4);
    let mut store = ChainDb::open(disk.clone(), chain.config(16 << 20)).unwrap();
    store.commit_block(chain.genesis.commit()).unwrap();
    let blocks = build(&mut chain, 6, 10);
    commit_all(&mut store, &blocks);
    disk.fail_commit_after(0, Fault::Io, false);
    let error = store.flush().unwrap_err();
    assert!(matches!(error, StorageError::Io { .. }), "{error}");
    assert!(store.halted().is_some());
    let store = ChainDb::open(disk.crash(), chain.config(16 << 20)).unwrap();
    assert_eq!(
        store.stats().replayed_blocks,
        7,
        "genesis and six blocks replayed"
    );
    check_against_model(&store, &chain, &blocks);
}

#[test]
fn a_crash_loses_only_what_was_never_committed() {
    let disk = MemoryBackend::new();
    let mut chain = TestChain::new(9, 200, 4);
    let mut store = ChainDb::open(disk.clone(), chain.config(SMALL_CACHE)).unwrap();
    store.commit_block(chain.genesis.commit()).unwrap();
    let blocks = build(&mut chain, 10, 10);
    commit_all(&mut store, &blocks);
    let restarted = disk.crash();
    // The crashed process's handle is dead; nothing more reaches the disk through it.
    let late = chain.next_block(5);
    assert!(store.commit_block(late.commit()).is_err());
    let store = ChainDb::open(restarted, chain.config(SMALL_CACHE)).unwrap();
    assert_eq!(store.tip().unwrap().height, Height(10));
    store.verify_utxo_set().unwrap();
}

fn vote(height: u64, phase: u8, value: &[u8]) -> ConsensusRecord {
    ConsensusRecord {
        key: LogKey::BlockVote {
            height: Height(height),
            view: 0,
            phase,
        },
        value: BoundedBytes::new(value.to_vec()).unwrap(),
    }
}

#[test]
fn the_consensus_log_keeps_votes_across_restarts_and_refuses_contradictions() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("chain.redb");
    let chain = TestChain::new(10, 1, 1);
    let lock = ConsensusRecord {
        key: LogKey::InputLock {
            epoch: Epoch(3),
            outpoint: OutPoint {
                txid: Txid(Hash32([9; 32])),
                index: 2,
            },
        },
        value: BoundedBytes::new(b"tx-a".to_vec()).unwrap(),
    };
    {
        let mut store = RedbChainDb::open_path(&path, chain.config(SMALL_CACHE)).unwrap();
        let outcomes = store
            .persist(&[vote(5, 1, b"block-x"), lock.clone(), vote(5, 1, b"block-y")])
            .unwrap();
        assert_eq!(
            outcomes,
            vec![
                LogOutcome::Written,
                LogOutcome::Written,
                LogOutcome::Conflict(BoundedBytes::new(b"block-x".to_vec()).unwrap())
            ]
        );
    }
    let mut store = RedbChainDb::open_path(&path, chain.config(SMALL_CACHE)).unwrap();
    assert_eq!(store.record(&lock.key).unwrap(), Some(lock.clone()));
    let mut other_lock = lock.clone();
    other_lock.value = BoundedBytes::new(b"tx-b".to_vec()).unwrap();
    let outcomes = store
        .persist(&[vote(5, 1, b"block-x"), other_lock, vote(6, 1, b"z")])
        .unwrap();
    assert_eq!(outcomes[0], LogOutcome::AlreadyPresent);
    assert!(
        matches!(outcomes[1], LogOutcome::Conflict(_)),
        "a lock cannot be retaken"
    );
    assert_eq!(outcomes[2], LogOutcome::Written);
    assert_eq!(store.records(None, 100).unwrap().len(), 3);
    assert_eq!(store.prune_log(Height(6), Epoch(4)).unwrap(), 2);
    let left = store.records(None, 100).unwrap();
    assert_eq!(left, vec![vote(6, 1, b"z")]);
}

fn lock(epoch: u64, index: u32, value: &[u8]) -> ConsensusRecord {
    ConsensusRecord {
        key: LogKey::InputLock {
            epoch: Epoch(epoch),
            outpoint: OutPoint {
                txid: Txid(Hash32([7; 32])),
                index,
            },
        },
        value: BoundedBytes::new(value.to_vec()).unwrap(),
    }
}

fn log_table<B: KvBackend>(store: &ChainDb<B>) -> Vec<(Vec<u8>, Vec<u8>)> {
    store
        .backend()
        .scan(Table::ConsensusLog, &[], None, 1000)
        .unwrap()
}

#[test]
fn a_pruned_consensus_record_stays_pruned_while_its_batch_lives_on() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("chain.redb");
    let chain = TestChain::new(10, 1, 1);
    let open = || RedbChainDb::open_path(&path, chain.config(SMALL_CACHE)).unwrap();
    {
        let mut store = open();
        // One batch, so one entry on disk holds all three.
        store
            .persist(&[vote(5, 1, b"a"), lock(3, 0, b"tx"), vote(7, 1, b"b")])
            .unwrap();
        store.persist(&[lock(3, 1, b"tx")]).unwrap();
        assert_eq!(log_table(&store).len(), 2, "one entry per batch");
        assert_eq!(store.prune_log(Height(6), Epoch(0)).unwrap(), 1);
    }
    let mut store = open();
    assert_eq!(
        store.records(None, 100).unwrap(),
        vec![vote(7, 1, b"b"), lock(3, 0, b"tx"), lock(3, 1, b"tx")],
        "the vote pruned from a batch that still holds live records came back"
    );
    // The slot of the pruned vote is free again, as it was when records were deleted one by one.
    assert_eq!(
        store.persist(&[vote(5, 1, b"c")]).unwrap(),
        vec![LogOutcome::Written]
    );
    assert_eq!(store.prune_log(Height(8), Epoch(4)).unwrap(), 4);
    assert!(store.records(None, 100).unwrap().is_empty());
    assert!(
        log_table(&store).is_empty(),
        "batches with no live record are deleted"
    );
    drop(store);
    assert!(open().records(None, 100).unwrap().is_empty());
}

#[test]
fn a_committed_block_frees_the_input_locks_of_its_transactions_in_every_epoch() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("chain.redb");
    let mut chain = TestChain::new(10, 20, 2);
    let config = chain.config(SMALL_CACHE);
    let open = || RedbChainDb::open_path(&path, config.clone()).unwrap();
    let lock_on = |epoch: u64, outpoint: OutPoint, holder: &Txid| ConsensusRecord {
        key: LogKey::InputLock {
            epoch: Epoch(epoch),
            outpoint,
        },
        value: BoundedBytes::new(encode(holder)).unwrap(),
    };
    let mut store = open();
    store.commit_block(chain.genesis.commit()).unwrap();
    let block = chain.next_block(3);
    // The block's transfers (the first transaction is its reward) and an input of each.
    let spends: Vec<(Txid, OutPoint)> = block
        .block
        .transactions
        .iter()
        .skip(1)
        .map(|transaction| (transaction.txid(), transaction.body.inputs[0].prevout))
        .collect();
    assert!(spends.len() >= 3, "the block has three transfers");
    let (first, first_input) = spends[0];
    let (second, second_input) = spends[1];
    let loser = Txid(Hash32([8; 32]));
    let unspent = OutPoint {
        txid: Txid(Hash32([7; 32])),
        index: 0,
    };
    // One entry the block frees entirely (a lock carried into a new epoch is logged again),
    // and one that keeps live locks: on an unspent output, and on a spent one held for a
    // conflicting transaction that lost (the finality engine keeps that one too).
    store
        .persist(&[
            lock_on(4, first_input, &first),
            lock_on(5, first_input, &first),
        ])
        .unwrap();
    store
        .persist(&[
            lock_on(5, second_input, &second),
            lock_on(5, unspent, &loser),
            lock_on(4, spends[2].1, &loser),
        ])
        .unwrap();
    assert_eq!(log_table(&store).len(), 2);
    store.commit_block(block.commit()).unwrap();
    let mut expected = vec![lock_on(5, unspent, &loser), lock_on(4, spends[2].1, &loser)];
    expected.sort_by_key(|record| record.key);
    assert_eq!(store.records(None, 100).unwrap(), expected);
    drop(store);
    // The freed entry is gone from disk; the other one still holds the included
    // transaction's lock, which comes back at open and stays harmless (its input is spent).
    let store = open();
    assert_eq!(log_table(&store).len(), 1);
    expected.push(lock_on(5, second_input, &second));
    expected.sort_by_key(|record| record.key);
    assert_eq!(store.records(None, 100).unwrap(), expected);
}

#[test]
fn consensus_records_of_the_one_per_key_layout_are_kept_and_moved_at_open() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("chain.redb");
    let chain = TestChain::new(10, 1, 1);
    drop(RedbChainDb::open_path(&path, chain.config(SMALL_CACHE)).unwrap());
    {
        // What an earlier build wrote: one record per encoded key.
        let mut backend = RedbBackend::open(&path, RedbOptions::default()).unwrap();
        let mut batch = WriteBatch::new();
        let mut vote_key = vec![0];
        vote_key.extend_from_slice(&9u64.to_be_bytes());
        vote_key.extend_from_slice(&0u32.to_be_bytes());
        vote_key.push(1);
        batch.put(Table::ConsensusLog, vote_key, b"old-vote".to_vec());
        let mut lock_key = vec![1];
        lock_key.extend_from_slice(&3u64.to_be_bytes());
        lock_key.extend_from_slice(&[7; 32]);
        lock_key.extend_from_slice(&2u32.to_be_bytes());
        batch.put(Table::ConsensusLog, lock_key, b"old-tx".to_vec());
        backend.commit(&batch).unwrap();
    }
    let expected = vec![vote(9, 1, b"old-vote"), lock(3, 2, b"old-tx")];
    let mut store = RedbChainDb::open_path(&path, chain.config(SMALL_CACHE)).unwrap();
    assert_eq!(store.records(None, 100).unwrap(), expected);
    assert_eq!(log_table(&store).len(), 1, "moved into one entry");
    assert!(
        matches!(
            store.persist(&[lock(3, 2, b"new-tx")]).unwrap()[0],
            LogOutcome::Conflict(_)
        ),
        "an old lock still refuses a contradiction"
    );
    drop(store);
    let store = RedbChainDb::open_path(&path, chain.config(SMALL_CACHE)).unwrap();
    assert_eq!(store.records(None, 100).unwrap(), expected);
}

#[test]
fn the_masternode_registry_follows_block_commits_and_survives_reopening() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("chain.redb");
    let mut chain = TestChain::new(11, 20, 2);
    let registration = MasternodeRegistration {
        collateral: OutPoint {
            txid: Txid(Hash32([3; 32])),
            index: 1,
        },
        owner: chain.addresses[0],
        node_key: PublicKey([4; 32]),
        tier: Tier::Gold,
        network_address: BoundedString::new("/ip4/203.0.113.5/tcp/24100").unwrap(),
        registered_at: Height(1),
    };
    let events = [MasternodeEvent::Registered(registration.clone())];
    {
        let mut store = RedbChainDb::open_path(&path, chain.config(SMALL_CACHE)).unwrap();
        store.commit_block(chain.genesis.commit()).unwrap();
        let block = chain.next_block(2);
        let mut commit = block.commit();
        commit.masternode_events = &events;
        store.commit_block(commit).unwrap();
        assert_eq!(
            store.registration(&registration.collateral).unwrap(),
            Some(registration.clone())
        );
    }
    let mut store = RedbChainDb::open_path(&path, chain.config(SMALL_CACHE)).unwrap();
    assert_eq!(store.masternodes().len(), 1);
    assert_eq!(
        store
            .collateral_of_node_key(&registration.node_key)
            .unwrap(),
        Some(registration.collateral)
    );
    let events = [MasternodeEvent::Deregistered {
        registration: registration.clone(),
        height: Height(2),
    }];
    let block = chain.next_block(2);
    let mut commit = block.commit();
    commit.masternode_events = &events;
    store.commit_block(commit).unwrap();
    assert!(store.masternodes().is_empty());
    drop(store);
    let store = RedbChainDb::open_path(&path, chain.config(SMALL_CACHE)).unwrap();
    assert_eq!(store.registration(&registration.collateral).unwrap(), None);
}

#[test]
fn prefetched_utxos_read_the_same_and_never_outlive_a_commit() {
    let directory = tempfile::tempdir().unwrap();
    let mut chain = TestChain::new(14, 2_000, 8);
    let mut store =
        RedbChainDb::open_path(&directory.path().join("chain.redb"), chain.config(16 << 20))
            .unwrap();
    store.commit_block(chain.genesis.commit()).unwrap();
    store.flush().unwrap();
    let before = chain.utxos.clone();
    let block = chain.next_block(300);
    let mut inputs: Vec<OutPoint> = block
        .block
        .transactions
        .iter()
        .flat_map(|transaction| transaction.body.inputs.iter().map(|input| input.prevout))
        .collect();
    assert!(inputs.len() >= 128, "enough to take the parallel path");
    let missing = OutPoint {
        txid: Txid(Hash32([0xee; 32])),
        index: 0,
    };
    inputs.push(missing);
    store.prefetch_utxos(&inputs).unwrap();
    for outpoint in &inputs[..inputs.len() - 1] {
        assert_eq!(store.utxo(outpoint).unwrap(), before.get(outpoint).copied());
        assert!(store.utxo(outpoint).unwrap().is_some());
    }
    assert_eq!(store.utxo(&missing).unwrap(), None);
    store.commit_block(block.commit()).unwrap();
    for outpoint in &inputs {
        assert_eq!(
            store.utxo(outpoint).unwrap(),
            None,
            "spent by the committed block"
        );
    }
    store.verify_utxo_set().unwrap();
}

#[test]
fn open_refuses_a_file_that_is_not_a_database_and_leaves_it_alone() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("chain.redb");
    let garbage: Vec<u8> = (0..100_000u32).map(|index| (index * 7 + 3) as u8).collect();
    std::fs::write(&path, &garbage).unwrap();
    let chain = TestChain::new(15, 1, 1);
    let error = RedbChainDb::open_path(&path, chain.config(SMALL_CACHE)).unwrap_err();
    assert!(error.to_string().contains("hint:"), "{error}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        garbage,
        "the file was not touched"
    );
}

#[test]
fn node_state_slots_are_overwritten_durably_and_bounded() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("chain.redb");
    let chain = TestChain::new(16, 1, 1);
    {
        let mut store = RedbChainDb::open_path(&path, chain.config(SMALL_CACHE)).unwrap();
        assert_eq!(store.node_state("bft").unwrap(), None);
        store.put_node_state("bft", b"round 1").unwrap();
        store.put_node_state("bft", b"round 2").unwrap();
        let oversized = vec![0u8; timecoin_storage::MAX_NODE_STATE_BYTES + 1];
        let error = store.put_node_state("bft", &oversized).unwrap_err();
        assert!(
            matches!(error, StorageError::InvalidCommit { .. }),
            "{error}"
        );
    }
    let store = RedbChainDb::open_path(&path, chain.config(SMALL_CACHE)).unwrap();
    assert_eq!(
        store.node_state("bft").unwrap().as_deref(),
        Some(&b"round 2"[..])
    );
    assert!(store.tip().is_none(), "node state is not chain metadata");
}

#[test]
fn a_fault_at_any_commit_leaves_a_store_that_reopens_at_a_block_boundary() {
    for seed in 0..40u64 {
        let disk = MemoryBackend::new();
        let mut chain = TestChain::new(100 + seed, 300, 6);
        let mut config = chain.config(96 << 10);
        config.prune_keep_blocks = Some(3 + seed % 4);
        config.max_unflushed_blocks = 2 + seed % 5;
        let blocks = build(&mut chain, 25, 12);
        // Half the seeds flush on a background thread, whose failure the next commit reports.
        config.background_flush = seed % 2 == 1;
        let mut store = ChainDb::open(disk.clone(), config.clone()).unwrap();
        store.commit_block(chain.genesis.commit()).unwrap();
        // Flushes and prunes are commits too, so the fault lands on any kind of write.
        let fault = if seed % 2 == 0 {
            Fault::DiskFull
        } else {
            Fault::Io
        };
        disk.fail_commit_after(seed % 23, fault, seed % 3 == 0);
        let mut failed_at = None;
        for (index, block) in blocks.iter().enumerate() {
            if let Err(error) = store.commit_block(block.commit()) {
                assert!(error.is_write_failure(), "seed {seed}: {error}");
                failed_at = Some(index);
                break;
            }
        }
        if failed_at.is_none() {
            // A background flush started by the last commit may have met the fault; waiting
            // for it reports that.
            let error = store.flush().unwrap_err();
            assert!(error.is_write_failure(), "seed {seed}: {error}");
            failed_at = Some(blocks.len());
        }
        assert!(
            failed_at.is_some(),
            "seed {seed}: the armed fault never struck"
        );
        assert!(
            store.halted().is_some(),
            "seed {seed}: a failed write halts the store"
        );
        let tip_before_crash = store.tip().unwrap().height;
        disk.clear_faults();
        let mut store = ChainDb::open(disk.crash(), config).unwrap();
        let tip = store.tip().unwrap();
        assert_eq!(
            tip.height, tip_before_crash,
            "seed {seed}: committed blocks survive"
        );
        let expected = if tip.height.0 == 0 {
            chain.genesis.block.hash()
        } else {
            blocks[tip.height.0 as usize - 1].block.hash()
        };
        assert_eq!(tip.hash, expected, "seed {seed}");
        store
            .verify_utxo_set()
            .unwrap_or_else(|error| panic!("seed {seed}: {error}"));
        commit_all(&mut store, &blocks[tip.height.0 as usize..]);
        check_against_model(&store, &chain, &blocks);
    }
}

/// Commits new blocks of `chain` until a background flush is in progress (it cannot finish
/// while the disk's UTXO file is paused), then `more` blocks into the fresh cache layer.
fn commit_into_a_paused_flush(
    store: &mut ChainDb<MemoryBackend>,
    chain: &mut TestChain,
    blocks: &mut Vec<TestBlock>,
    more: usize,
) {
    assert!(
        !store.stats().flush_in_progress,
        "a flush that started before the pause may already be past it"
    );
    while !store.stats().flush_in_progress {
        assert!(blocks.len() < 200, "no flush started");
        let block = chain.next_block(30);
        store.commit_block(block.commit()).unwrap();
        blocks.push(block);
    }
    for _ in 0..more {
        let block = chain.next_block(30);
        store.commit_block(block.commit()).unwrap();
        blocks.push(block);
    }
    assert!(
        store.stats().flush_in_progress,
        "the paused flush is still running"
    );
}

#[test]
fn reads_during_a_background_flush_see_every_committed_block() {
    let disk = MemoryBackend::new();
    let mut chain = TestChain::new(31, 400, 8);
    // Each layer holds about a dozen blocks of 30 transfers.
    let config = chain.config(256 << 10);
    assert!(config.background_flush, "the default");
    let mut store = ChainDb::open(disk.clone(), config).unwrap();
    store.commit_block(chain.genesis.commit()).unwrap();
    let mut blocks = Vec::new();
    // A first flush completes, so that the file holds outputs that later layers spend. None may
    // be running when the pause is taken: one already inside its write would not be held.
    while store.stats().flushes == 0 || store.stats().flush_in_progress {
        let block = chain.next_block(30);
        store.commit_block(block.commit()).unwrap();
        blocks.push(block);
    }
    let flushed = store.flushed_height().expect("flushed once");
    let paused = disk.pause_utxo_file();
    commit_into_a_paused_flush(&mut store, &mut chain, &mut blocks, 4);
    // Three sources now answer: the fresh layer, the layer being written, and the file.
    assert_eq!(store.flushed_height(), Some(flushed), "not written yet");
    check_against_model(&store, &chain, &blocks);
    drop(paused);
    for _ in 0..30 {
        let block = chain.next_block(30);
        store.commit_block(block.commit()).unwrap();
        blocks.push(block);
    }
    assert!(
        store.flushed_height() > Some(flushed),
        "{:?}",
        store.stats()
    );
    check_against_model(&store, &chain, &blocks);
    store.flush().unwrap();
    assert_eq!(store.flushed_height(), Some(chain.tip.0));
    assert!(!store.stats().flush_in_progress);
    check_against_model(&store, &chain, &blocks);
    // The flush records that the change records it covers are gone: a reopened store
    // replays nothing.
    let store = ChainDb::open(disk.crash(), chain.config(256 << 10)).unwrap();
    assert_eq!(store.stats().replayed_blocks, 0);
    check_against_model(&store, &chain, &blocks);
}

#[test]
fn a_crash_during_a_background_flush_replays_every_block_it_was_writing() {
    let disk = MemoryBackend::new();
    let mut chain = TestChain::new(32, 400, 8);
    let config = chain.config(256 << 10);
    let mut store = ChainDb::open(disk.clone(), config.clone()).unwrap();
    store.commit_block(chain.genesis.commit()).unwrap();
    let mut blocks = Vec::new();
    let paused = disk.pause_utxo_file();
    commit_into_a_paused_flush(&mut store, &mut chain, &mut blocks, 3);
    let flushed = store.flushed_height();
    let restarted = disk.crash();
    drop(paused);
    // Dropping the crashed store waits for its flush thread, whose write fails: the process
    // it belonged to is dead.
    drop(store);
    // The replay at open caches as many blocks as before the crash, so it starts a flush of
    // its own; held back, that flush cannot be mistaken for the crashed one.
    let paused = restarted.pause_utxo_file();
    let store = ChainDb::open(restarted.clone(), config).unwrap();
    assert_eq!(store.flushed_height(), flushed, "the flush never landed");
    assert_eq!(
        store.stats().replayed_blocks,
        chain.tip.0.0 - flushed.map_or(0, |height| height.0 + 1) + 1,
        "every block above the last flush is replayed"
    );
    drop(paused);
    check_against_model(&store, &chain, &blocks);
}

#[test]
fn a_failed_background_flush_halts_the_store_and_its_reads_stay_right() {
    let disk = MemoryBackend::new();
    let mut chain = TestChain::new(33, 400, 8);
    let config = chain.config(256 << 10);
    let mut store = ChainDb::open(disk.clone(), config.clone()).unwrap();
    store.commit_block(chain.genesis.commit()).unwrap();
    let mut blocks = Vec::new();
    let paused = disk.pause_utxo_file();
    commit_into_a_paused_flush(&mut store, &mut chain, &mut blocks, 2);
    // The paused flush's write is the next commit to reach the disk.
    disk.fail_commit_after(0, Fault::Io, false);
    drop(paused);
    let error = store.flush().unwrap_err();
    assert!(matches!(error, StorageError::Io { .. }), "{error}");
    assert!(store.halted().is_some());
    // The layer that failed to be written still answers reads.
    check_against_model(&store, &chain, &blocks);
    let next = chain.next_block(30);
    let error = store.commit_block(next.commit()).unwrap_err();
    assert!(matches!(error, StorageError::Halted { .. }), "{error}");
    let mut store = ChainDb::open(disk.crash(), config).unwrap();
    assert_eq!(
        store.tip().unwrap().hash,
        blocks.last().unwrap().block.hash()
    );
    store.commit_block(next.commit()).unwrap();
    blocks.push(next);
    check_against_model(&store, &chain, &blocks);
}

fn utxo_path(path: &std::path::Path) -> std::path::PathBuf {
    timecoin_storage::RedbBackend::utxo_path(path)
}

/// The UTXO file of the chain file at `path` and the UTXO log's segments beside it, as pairs
/// of where each is and its name with `to`'s prefix instead.
fn utxo_files(
    path: &std::path::Path,
    to: &std::path::Path,
) -> Vec<(std::path::PathBuf, std::path::PathBuf)> {
    let prefix = RedbBackend::utxo_log_prefix(path);
    let name = prefix.file_name().unwrap().to_string_lossy().into_owned();
    let to_prefix = RedbBackend::utxo_log_prefix(to);
    let mut files = vec![(utxo_path(path), utxo_path(to))];
    for entry in std::fs::read_dir(path.parent().unwrap()).unwrap() {
        let file = entry.unwrap().file_name().to_string_lossy().into_owned();
        if let Some(rest) = file.strip_prefix(&name) {
            let mut target = to_prefix.as_os_str().to_owned();
            target.push(rest);
            files.push((prefix.with_file_name(&file), target.into()));
        }
    }
    files
}

#[test]
fn the_utxo_log_sits_beside_the_utxo_file_and_holds_the_flushed_set() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("chain.redb");
    let chain = redb_with_chain(&path);
    {
        let mut store = RedbChainDb::open_path(&path, chain.config(SMALL_CACHE)).unwrap();
        store.flush().unwrap();
    }
    let files = utxo_files(&path, &path);
    assert!(
        files
            .iter()
            .any(|(file, _)| file == &directory.path().join("chain-utxos-00000001.log")),
        "{files:?}"
    );
    let backend = RedbBackend::open(&path, RedbOptions::default()).unwrap();
    let mut flushed = 0;
    backend
        .for_each_unordered(Table::Utxos, &mut |_, _| {
            flushed += 1;
            Ok(())
        })
        .unwrap();
    assert!(flushed > 0, "the flush wrote the UTXO set to the log");
    let first = backend.scan(Table::Utxos, &[], None, 1).unwrap();
    assert_eq!(
        backend.get(Table::Utxos, &first[0].0).unwrap(),
        Some(first[0].1.clone())
    );
}

#[test]
fn the_utxo_set_lives_in_its_own_file_beside_the_chain_file() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("chain.redb");
    assert_eq!(utxo_path(&path), directory.path().join("chain-utxos.redb"));
    redb_with_chain(&path);
    assert!(path.exists() && utxo_path(&path).exists());
}

#[test]
fn open_refuses_a_chain_whose_utxo_file_was_deleted_after_a_flush() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("chain.redb");
    let chain = redb_with_chain(&path);
    {
        let mut store = RedbChainDb::open_path(&path, chain.config(SMALL_CACHE)).unwrap();
        store.flush().unwrap();
    }
    let utxos = utxo_path(&path);
    let saved = directory.path().join("saved-utxos.redb");
    std::fs::rename(&utxos, &saved).unwrap();
    let error = RedbChainDb::open_path(&path, chain.config(SMALL_CACHE)).unwrap_err();
    assert!(matches!(error, StorageError::Corrupt { .. }), "{error}");
    assert!(error.to_string().contains("replaced or deleted"), "{error}");
    // Nothing was overwritten: with its UTXO file back, the chain opens at its tip.
    std::fs::remove_file(&utxos).unwrap();
    std::fs::rename(&saved, &utxos).unwrap();
    let store = RedbChainDb::open_path(&path, chain.config(SMALL_CACHE)).unwrap();
    assert_eq!(store.tip().unwrap().hash, chain.tip.1);
    store.verify_utxo_set().unwrap();
}

#[test]
fn open_refuses_a_utxo_file_of_another_chain_or_without_its_chain_file() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("chain.redb");
    let chain = redb_with_chain(&path);
    let other_path = directory.path().join("other.redb");
    let mut other = TestChain::new(40, 50, 3);
    {
        let mut store = RedbChainDb::open_path(&other_path, other.config(SMALL_CACHE)).unwrap();
        store.commit_block(other.genesis.commit()).unwrap();
        let block = other.next_block(3);
        store.commit_block(block.commit()).unwrap();
        store.flush().unwrap();
    }
    assert_ne!(other.genesis.block.hash(), chain.genesis.block.hash());
    let saved = directory.path().join("saved.redb");
    for (file, target) in utxo_files(&path, &saved) {
        std::fs::rename(file, target).unwrap();
    }
    for (file, target) in utxo_files(&other_path, &path) {
        std::fs::copy(file, target).unwrap();
    }
    let error = RedbChainDb::open_path(&path, chain.config(SMALL_CACHE)).unwrap_err();
    assert!(
        matches!(error, StorageError::WrongNetwork { .. }),
        "{error}"
    );
    for (file, _) in utxo_files(&path, &path) {
        std::fs::remove_file(file).unwrap();
    }
    for (file, target) in utxo_files(&saved, &path) {
        std::fs::rename(file, target).unwrap();
    }
    RedbChainDb::open_path(&path, chain.config(SMALL_CACHE))
        .unwrap()
        .verify_utxo_set()
        .unwrap();

    // A UTXO file whose chain file is gone is not started over.
    std::fs::remove_file(&other_path).unwrap();
    let error = RedbChainDb::open_path(&other_path, other.config(SMALL_CACHE)).unwrap_err();
    assert!(matches!(error, StorageError::ForeignData { .. }), "{error}");
    assert!(error.to_string().contains("UTXO"), "{error}");
}

#[test]
fn redb_store_reads_right_across_background_flushes() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("chain.redb");
    let mut chain = TestChain::new(34, 400, 8);
    let mut store = RedbChainDb::open_path(&path, chain.config(256 << 10)).unwrap();
    store.commit_block(chain.genesis.commit()).unwrap();
    let mut blocks = Vec::new();
    for round in 0..4 {
        for _ in 0..20 {
            let block = chain.next_block(30);
            store.commit_block(block.commit()).unwrap();
            blocks.push(block);
        }
        // Whether a flush is running now or has just finished, every read must agree.
        check_against_model(&store, &chain, &blocks);
        assert!(
            round == 0 || store.stats().flushes > 0,
            "{:?}",
            store.stats()
        );
    }
}

#[test]
fn redb_reads_made_while_a_background_flush_writes_do_not_outlive_its_commit() {
    // A lookup that misses the cache while the flush thread writes opens the UTXO file's shared
    // read snapshot as it was before the flush. Once the flush is taken note of, the frozen
    // layer is gone and the file alone answers for its outputs: that old snapshot must not.
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("chain.redb");
    // Enough genesis outputs that many outputs of the flushed blocks are still unspent.
    let mut chain = TestChain::new(35, 4_000, 8);
    let mut store = RedbChainDb::open_path(&path, chain.config(4 << 20)).unwrap();
    store.commit_block(chain.genesis.commit()).unwrap();
    let mut blocks = Vec::new();
    while !store.stats().flush_in_progress {
        let block = chain.next_block(200);
        store.commit_block(block.commit()).unwrap();
        blocks.push(block);
    }
    // The flush covers every block but the last, which went to the fresh layer.
    let (_, flushed_blocks) = blocks.split_last().expect("blocks were committed");
    let written: Vec<OutPoint> = flushed_blocks
        .iter()
        .flat_map(|block| block.changes.created.iter())
        .map(|(outpoint, _)| *outpoint)
        .filter(|outpoint| chain.utxos.contains_key(outpoint))
        .collect();
    assert!(written.len() > 100, "{}", written.len());
    let never_created = OutPoint {
        txid: Txid(Hash32([0xee; 32])),
        index: 0,
    };
    // Misses go to the file; keep missing until well after the flush has committed, so that
    // some lookup lands while it writes whatever the threads' timing. At the lowest priority
    // the flush could otherwise take long on a busy machine.
    store.hurry_flush();
    let until = std::time::Instant::now() + std::time::Duration::from_millis(500);
    while std::time::Instant::now() < until {
        assert_eq!(store.utxo(&never_created).unwrap(), None);
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    store.finish_background_flush().unwrap();
    assert!(!store.stats().flush_in_progress);
    assert_eq!(store.stats().flushes, 1);
    assert_eq!(
        store.flushed_height(),
        flushed_blocks.last().map(|block| block.block.header.height)
    );
    let missing = written
        .iter()
        .filter(|outpoint| store.utxo(outpoint).unwrap() != chain.utxos.get(*outpoint).copied())
        .count();
    assert_eq!(
        missing,
        0,
        "of {} unspent outputs of the flushed blocks",
        written.len()
    );
    check_against_model(&store, &chain, &blocks);
}

/// Builds before ADR 0030 stored the address index in the UTXO file. The index is derived from
/// the UTXO set now: entries left in that table are dropped at the first open, and the answers
/// come from the UTXO set alone.
#[test]
fn an_address_index_stored_by_an_earlier_build_is_dropped_and_derived_instead() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("chain.redb");
    let mut chain = TestChain::new(15, 50, 3);
    let mut blocks = Vec::new();
    {
        let mut store = RedbChainDb::open_path(&path, chain.config(SMALL_CACHE)).unwrap();
        store.commit_block(chain.genesis.commit()).unwrap();
        blocks.extend(build(&mut chain, 4, 5));
        commit_all(&mut store, &blocks);
        store.flush().unwrap();
    }
    let utxo_path = RedbBackend::utxo_path(&path);
    let table: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("address_index");
    let stale_outpoint = OutPoint {
        txid: Txid(Hash32([9; 32])),
        index: 3,
    };
    {
        // What an earlier build left: an entry for an outpoint the UTXO set does not hold.
        let database = redb::Database::open(&utxo_path).unwrap();
        let transaction = database.begin_write().unwrap();
        {
            let mut opened = transaction.open_table(table).unwrap();
            let mut key = chain.addresses[0].0.0.to_vec();
            key.extend_from_slice(&encode(&stale_outpoint));
            opened.insert(key.as_slice(), &[][..]).unwrap();
        }
        transaction.commit().unwrap();
    }
    let mut store = RedbChainDb::open_path(&path, chain.config(SMALL_CACHE)).unwrap();
    check_against_model(&store, &chain, &blocks);
    let more = build(&mut chain, 3, 5);
    commit_all(&mut store, &more);
    blocks.extend(more);
    store.flush().unwrap();
    check_against_model(&store, &chain, &blocks);
    drop(store);
    let database = redb::Database::open(&utxo_path).unwrap();
    let transaction = redb::ReadableDatabase::begin_read(&database).unwrap();
    let opened = transaction.open_table(table).unwrap();
    assert_eq!(
        redb::ReadableTableMetadata::len(&opened).unwrap(),
        0,
        "nothing is written to the table any more"
    );
}
