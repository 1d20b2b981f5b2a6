//! The store driven by the real ledger rules, as the node will drive it: genesis from a spec,
//! a signed transfer in a built block, each applied through a `ChangeRecorder` over the store.

use timecoin_ledger::{
    BlockTemplate, GenesisAllocation, GenesisMasternode, GenesisSpec, MasternodeView,
    UtxoCommitment, UtxoView, apply_block, apply_genesis, build_block, build_genesis,
    verify_block_signatures,
};
use timecoin_primitives::{
    Address, Amount, BoundedVec, Network, SecretKey, Transaction, TxBody, TxInput, TxKind, TxOut,
};
use timecoin_storage::{BlockCommit, ChainStore, ChangeRecorder, RedbChainDb, StoreConfig};

fn key(seed: u8) -> SecretKey {
    SecretKey::from_bytes([seed; 32])
}

fn address(key: &SecretKey) -> Address {
    Address::from_public_key(&key.public_key())
}

#[test]
fn blocks_applied_by_the_ledger_are_committed_and_reopened() {
    let network = Network::Devnet;
    let spec = GenesisSpec {
        network: "devnet".into(),
        timestamp_ms: 1_767_225_600_000,
        allocations: vec![GenesisAllocation {
            address: address(&key(1)).encode(network),
            amount: "10000".into(),
        }],
        masternodes: vec![GenesisMasternode {
            owner: address(&key(201)).encode(network),
            node_key: key(200).public_key().to_string(),
            tier: "bronze".into(),
            network_address: "/ip4/127.0.0.1/tcp/24100".into(),
        }],
        overrides: None,
    };
    let (genesis, params) = build_genesis(&spec).unwrap();
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("chain.redb");
    let config = StoreConfig::new(network, genesis.hash());

    let mut store = RedbChainDb::open_path(&path, config.clone()).unwrap();
    let mut commitment = UtxoCommitment::empty();
    let mut recorder = ChangeRecorder::new(&store);
    let outcome = apply_genesis(&genesis, &mut recorder, &mut commitment, &params).unwrap();
    let changes = recorder.into_changes().unwrap();
    store
        .commit_block(BlockCommit {
            block: &genesis,
            certificate: None,
            changes: &changes,
            commitment: &commitment,
            masternode_events: outcome.masternode_events(),
        })
        .unwrap();
    assert_eq!(
        store.masternodes().len(),
        1,
        "the genesis masternode is registered"
    );
    assert!(
        store
            .collateral_of_node_key(&key(200).public_key())
            .unwrap()
            .is_some()
    );

    // Spend the allocation: 9,000 TIME to key 2, the change back, minus a fee.
    let coins = store.address_outpoints(&address(&key(1)), 10).unwrap();
    assert_eq!(coins.len(), 1);
    let coin = store.utxo(&coins[0]).unwrap().unwrap();
    let fee = Amount::from_units(100_000).unwrap();
    let sent = Amount::from_time(9_000).unwrap();
    let change = coin
        .output
        .amount
        .checked_sub(sent)
        .unwrap()
        .checked_sub(fee)
        .unwrap();
    let body = TxBody {
        kind: TxKind::Transfer,
        inputs: BoundedVec::new(vec![TxInput {
            prevout: coins[0],
            public_key: key(1).public_key(),
        }])
        .unwrap(),
        outputs: BoundedVec::new(vec![
            TxOut {
                amount: sent,
                address: address(&key(2)),
            },
            TxOut {
                amount: change,
                address: address(&key(1)),
            },
        ])
        .unwrap(),
    };
    let transfer = Transaction::sign(body, &[&key(1)], None, network).unwrap();
    let template = BlockTemplate {
        parent: genesis.header.clone(),
        timestamp: genesis
            .header
            .timestamp
            .saturating_add_millis(params.block_interval_ms),
        proposer: key(200).public_key(),
        transactions: vec![transfer.clone()],
        parent_commit: None,
    };
    let miner = address(&key(250));
    let block = build_block(
        template,
        |allowed| {
            vec![TxOut {
                amount: allowed,
                address: miner,
            }]
        },
        &store,
        store.utxo_commitment(),
        &store,
        &params,
    )
    .unwrap();
    verify_block_signatures(&block, network).unwrap();
    let mut recorder = ChangeRecorder::new(&store);
    let outcome = apply_block(
        &block,
        &genesis.header,
        &mut recorder,
        &mut commitment,
        &store,
        &params,
    )
    .unwrap();
    let changes = recorder.into_changes().unwrap();
    assert_eq!(changes.spent.len(), 1);
    assert_eq!(
        changes.created.len(),
        3,
        "two transfer outputs and the reward"
    );
    store
        .commit_block(BlockCommit {
            block: &block,
            certificate: None,
            changes: &changes,
            commitment: &commitment,
            masternode_events: outcome.masternode_events(),
        })
        .unwrap();
    drop(store);

    let store = RedbChainDb::open_path(&path, config).unwrap();
    assert_eq!(store.tip().unwrap().hash, block.hash());
    store.verify_utxo_set().unwrap();
    assert_eq!(
        store.utxo(&coins[0]).unwrap(),
        None,
        "the allocation is spent"
    );
    let received = store.address_outpoints(&address(&key(2)), 10).unwrap();
    assert_eq!(
        store.utxo(&received[0]).unwrap().unwrap().output.amount,
        sent
    );
    let location = store
        .transaction_location(&transfer.txid())
        .unwrap()
        .unwrap();
    assert_eq!((location.height.0, location.position), (1, 1));
    assert_eq!(store.masternodes().len(), 1);
}
