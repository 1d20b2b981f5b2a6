//! One masternode alone (W = 1, quorum 1): the whole pipeline in one process — submission,
//! instant finality, a dependent payment before any block, block commit, queries, malformed
//! input, and a crash that loses everything not yet durable.

use timecoin_ledger::{
    GenesisAllocation, GenesisMasternode, GenesisSpec, ParamOverrides, build_genesis,
};
use timecoin_node::{
    Action, Command, Input, Node, NodeConfig, NodeEvent, NodeMessage, PeerId, Reply, RequestId,
    SubmitOutcome, TxStatus, init_store,
};
use timecoin_primitives::{
    Address, Amount, Block, BoundedVec, Height, Network, OutPoint, SecretKey, Transaction, TxBody,
    TxInput, TxKind, TxOut,
};
use timecoin_storage::{ChainDb, ChainStore, MemoryBackend, StoreConfig};

const NETWORK: Network = Network::Devnet;
const START_MS: u64 = 1_767_225_600_000;

fn key(seed: u8) -> SecretKey {
    SecretKey::from_bytes([seed; 32])
}

fn address(key: &SecretKey) -> Address {
    Address::from_public_key(&key.public_key())
}

fn genesis() -> (Block, timecoin_ledger::ChainParams) {
    let spec = GenesisSpec {
        network: "devnet".into(),
        timestamp_ms: START_MS,
        allocations: vec![GenesisAllocation {
            address: address(&key(1)).encode(NETWORK),
            amount: "5000".into(),
        }],
        masternodes: vec![GenesisMasternode {
            owner: address(&key(201)).encode(NETWORK),
            node_key: key(200).public_key().to_string(),
            tier: "bronze".into(),
            network_address: "/ip4/127.0.0.1/tcp/24100".into(),
        }],
        overrides: Some(ParamOverrides {
            epoch_length_blocks: Some(4),
            ..ParamOverrides::default()
        }),
    };
    build_genesis(&spec).unwrap()
}

fn open(
    disk: MemoryBackend,
    genesis: &Block,
    params: &timecoin_ledger::ChainParams,
    now: u64,
) -> (Node<ChainDb<MemoryBackend>>, Vec<Action>) {
    let mut config = StoreConfig::new(NETWORK, genesis.hash());
    config.cache_bytes = 1 << 20;
    let mut store = ChainDb::open(disk, config).unwrap();
    if store.tip().is_none() {
        init_store(&mut store, genesis, params).unwrap();
    }
    Node::open(store, NodeConfig::new(params.clone(), Some(key(200))), now).unwrap()
}

fn pay(
    coin: OutPoint,
    amount: Amount,
    owner: &SecretKey,
    to: &SecretKey,
    value: Amount,
) -> Transaction {
    let fee = Amount::from_units(100_000).unwrap();
    let change = amount.checked_sub(value).unwrap().checked_sub(fee).unwrap();
    let body = TxBody {
        kind: TxKind::Transfer,
        inputs: BoundedVec::new(vec![TxInput {
            prevout: coin,
            public_key: owner.public_key(),
        }])
        .unwrap(),
        outputs: BoundedVec::new(vec![
            TxOut {
                amount: value,
                address: address(to),
            },
            TxOut {
                amount: change,
                address: address(owner),
            },
        ])
        .unwrap(),
    };
    Transaction::sign(body, &[owner], None, NETWORK).unwrap()
}

fn reply(actions: &[Action]) -> Reply {
    actions
        .iter()
        .find_map(|action| match action {
            Action::Reply { reply, .. } => Some(reply.clone()),
            _ => None,
        })
        .expect("a reply")
}

fn run_until(node: &mut Node<ChainDb<MemoryBackend>>, now: &mut u64, until: u64) -> Vec<NodeEvent> {
    let mut events = Vec::new();
    while *now < until {
        *now += 100;
        for action in node.handle(Input::Tick { now_ms: *now }).unwrap() {
            if let Action::Event(event) = action {
                events.push(event);
            }
        }
    }
    events
}

#[test]
fn a_lone_masternode_finalizes_commits_and_survives_a_crash() {
    let (genesis, params) = genesis();
    let disk = MemoryBackend::new();
    let mut now = START_MS + 1_000;
    let (mut node, _) = open(disk.clone(), &genesis, &params, now);

    // Blocks commit on their own, one per interval.
    let events = run_until(&mut node, &mut now, START_MS + 5_000);
    let committed = events
        .iter()
        .filter(|e| matches!(e, NodeEvent::BlockCommitted { .. }))
        .count();
    assert!(committed >= 2, "{events:?}");

    // A payment is final at once (quorum 1), and its output can be spent before any block.
    let coin = OutPoint {
        txid: genesis.transactions[0].txid(),
        index: 0,
    };
    let balance = genesis.transactions[0].body.outputs[0].amount;
    let first = pay(
        coin,
        balance,
        &key(1),
        &key(2),
        Amount::from_time(1_000).unwrap(),
    );
    let actions = node
        .handle(Input::Command {
            id: RequestId(1),
            command: Command::SubmitTransaction(first.clone()),
        })
        .unwrap();
    assert_eq!(
        reply(&actions),
        Reply::Submitted(SubmitOutcome::Accepted(first.txid()))
    );
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::Event(NodeEvent::TransactionFinalized { .. })))
    );
    let child = pay(
        OutPoint {
            txid: first.txid(),
            index: 0,
        },
        first.body.outputs[0].amount,
        &key(2),
        &key(3),
        Amount::from_time(10).unwrap(),
    );
    let actions = node
        .handle(Input::Command {
            id: RequestId(2),
            command: Command::SubmitTransaction(child.clone()),
        })
        .unwrap();
    assert_eq!(
        reply(&actions),
        Reply::Submitted(SubmitOutcome::Accepted(child.txid()))
    );
    let actions = node
        .handle(Input::Command {
            id: RequestId(3),
            command: Command::TransactionStatus(child.txid()),
        })
        .unwrap();
    assert!(matches!(
        reply(&actions),
        Reply::TransactionStatus(TxStatus::Certified(_))
    ));

    // A conflicting spend of the same coin is refused.
    let conflict = pay(
        coin,
        balance,
        &key(1),
        &key(4),
        Amount::from_time(7).unwrap(),
    );
    let actions = node
        .handle(Input::Command {
            id: RequestId(4),
            command: Command::SubmitTransaction(conflict),
        })
        .unwrap();
    assert!(matches!(
        reply(&actions),
        Reply::Submitted(SubmitOutcome::Rejected(_))
    ));

    // Both enter the next block.
    let until = now + 2_000;
    run_until(&mut node, &mut now, until);
    for txid in [first.txid(), child.txid()] {
        let actions = node
            .handle(Input::Command {
                id: RequestId(5),
                command: Command::TransactionStatus(txid),
            })
            .unwrap();
        assert!(
            matches!(
                reply(&actions),
                Reply::TransactionStatus(TxStatus::Included { .. })
            ),
            "{txid}"
        );
    }
    let actions = node
        .handle(Input::Command {
            id: RequestId(6),
            command: Command::UtxosByAddress {
                address: address(&key(3)),
                limit: 10,
            },
        })
        .unwrap();
    let Reply::Utxos(utxos) = reply(&actions) else {
        panic!()
    };
    assert_eq!(utxos.len(), 1);
    assert_eq!(utxos[0].1.output.amount, Amount::from_time(10).unwrap());

    // Garbage from a peer is its fault.
    let actions = node
        .handle(Input::PeerMessage {
            peer: PeerId(9),
            bytes: vec![0xff, 1, 2],
        })
        .unwrap();
    assert!(actions.iter().any(|a| matches!(
        a,
        Action::Penalize {
            peer: PeerId(9),
            ..
        }
    )));

    // Sync: a peer gets committed blocks with certificates, but a flood is cut off.
    let request = NodeMessage::SyncRequest {
        from: Height(1),
        count: 1_000,
    }
    .to_bytes();
    let mut served = 0;
    for _ in 0..30 {
        for action in node
            .handle(Input::PeerMessage {
                peer: PeerId(7),
                bytes: request.clone(),
            })
            .unwrap()
        {
            if let Action::Send {
                peer: PeerId(7),
                message: NodeMessage::SyncResponse(blocks),
            } = action
            {
                assert_eq!(blocks[0].block.header.height, Height(1));
                assert_eq!(blocks.len() as u64, node.tip_height().get());
                served += 1;
            }
        }
    }
    assert_eq!(served, timecoin_node::node::MAX_SYNC_RESPONSES_PER_SECOND);

    // Crash: the restarted node has every committed block and goes on committing.
    let tip = node.tip_height();
    drop(node);
    let restarted_disk = disk.crash();
    let (mut node, _) = open(restarted_disk, &genesis, &params, now);
    assert_eq!(node.tip_height(), tip);
    let actions = node
        .handle(Input::Command {
            id: RequestId(7),
            command: Command::TransactionStatus(child.txid()),
        })
        .unwrap();
    assert!(matches!(
        reply(&actions),
        Reply::TransactionStatus(TxStatus::Included { .. })
    ));
    let until = now + 3_000;
    run_until(&mut node, &mut now, until);
    assert!(node.tip_height().get() > tip.get() + 1);
    node.store().verify_utxo_set().unwrap();
}

#[test]
fn a_certified_payment_not_yet_in_a_block_survives_a_crash() {
    let (genesis, params) = genesis();
    let disk = MemoryBackend::new();
    let mut now = START_MS + 1_000;
    let (mut node, _) = open(disk.clone(), &genesis, &params, now);
    run_until(&mut node, &mut now, START_MS + 3_000);
    let coin = OutPoint {
        txid: genesis.transactions[0].txid(),
        index: 0,
    };
    let balance = genesis.transactions[0].body.outputs[0].amount;
    let payment = pay(
        coin,
        balance,
        &key(1),
        &key(2),
        Amount::from_time(5).unwrap(),
    );
    let actions = node
        .handle(Input::Command {
            id: RequestId(1),
            command: Command::SubmitTransaction(payment.clone()),
        })
        .unwrap();
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::Event(NodeEvent::TransactionFinalized { .. })))
    );
    let tip = node.tip_height();

    // Crash before any block includes it: it was reported final, so it must still be.
    drop(node);
    let (mut node, _) = open(disk.crash(), &genesis, &params, now);
    assert_eq!(node.tip_height(), tip, "no block may have come in between");
    let status = |node: &mut Node<ChainDb<MemoryBackend>>| {
        let actions = node
            .handle(Input::Command {
                id: RequestId(2),
                command: Command::TransactionStatus(payment.txid()),
            })
            .unwrap();
        reply(&actions)
    };
    assert!(
        matches!(
            status(&mut node),
            Reply::TransactionStatus(TxStatus::Certified(_))
        ),
        "{:?}",
        status(&mut node)
    );
    assert_eq!(node.store().finals(10).unwrap().len(), 1);
    // A conflicting spend is refused after the restart too.
    let conflict = pay(
        coin,
        balance,
        &key(1),
        &key(4),
        Amount::from_time(7).unwrap(),
    );
    let actions = node
        .handle(Input::Command {
            id: RequestId(3),
            command: Command::SubmitTransaction(conflict),
        })
        .unwrap();
    assert!(matches!(
        reply(&actions),
        Reply::Submitted(SubmitOutcome::Rejected(_))
    ));

    // The next block includes it, and the stored record goes.
    let until = now + 2_000;
    run_until(&mut node, &mut now, until);
    assert!(matches!(
        status(&mut node),
        Reply::TransactionStatus(TxStatus::Included { .. })
    ));
    assert!(node.store().finals(10).unwrap().is_empty());
}
