//! One masternode alone (W = 1, quorum 1): the whole pipeline in one process — submission,
//! instant finality, a dependent payment before any block, block commit, queries, malformed
//! input, and a crash that loses everything not yet durable.

use timecoin_node::testing::{
    FEE_UNITS, FUNDED_SEED, MASTERNODE_SEED, NETWORK, START_MS, TestNode, address, command,
    genesis, genesis_coin, key, open_configured, open_on, pay, reply, spend_genesis, submit,
};
use timecoin_node::{
    Action, AdmissionConfig, Command, Input, NodeEvent, NodeMessage, PeerId, Reply, SubmitOutcome,
    TxStatus,
};
use timecoin_primitives::{
    Amount, BoundedVec, Height, OutPoint, Transaction, TxBody, TxInput, TxKind, TxOut, Txid,
};
use timecoin_storage::MemoryBackend;

fn open(disk: MemoryBackend, now: u64) -> TestNode {
    let (genesis, params) = genesis(Some(4));
    open_on(disk, &genesis, &params, Some(key(MASTERNODE_SEED)), now).0
}

fn status(node: &mut TestNode, txid: Txid) -> Reply {
    command(node, Command::TransactionStatus(txid))
}

/// A second spend of the genesis coin must be refused: its first spend is final.
fn assert_double_spend_refused(node: &mut TestNode) {
    let (coin, balance) = genesis_coin(&genesis(Some(4)).0);
    let funded = key(FUNDED_SEED);
    let conflict = pay(
        coin,
        balance,
        &funded,
        &key(4),
        Amount::from_time(7).unwrap(),
    );
    assert!(matches!(
        reply(&submit(node, &conflict)),
        Reply::Submitted(SubmitOutcome::Rejected(_))
    ));
}

fn run_until(node: &mut TestNode, now: &mut u64, until: u64) -> Vec<NodeEvent> {
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
    let disk = MemoryBackend::new();
    let mut now = START_MS + 1_000;
    let mut node = open(disk.clone(), now);

    // Blocks commit on their own, one per interval.
    let events = run_until(&mut node, &mut now, START_MS + 5_000);
    let committed = events
        .iter()
        .filter(|e| matches!(e, NodeEvent::BlockCommitted { .. }))
        .count();
    assert!(committed >= 2, "{events:?}");

    // A payment is final at once (quorum 1), and its output can be spent before any block.
    let (coin, balance) = genesis_coin(&genesis(Some(4)).0);
    let funded = key(FUNDED_SEED);
    let first = pay(
        coin,
        balance,
        &funded,
        &key(2),
        Amount::from_time(1_000).unwrap(),
    );
    let actions = submit(&mut node, &first);
    assert_eq!(
        reply(&actions),
        Reply::Submitted(SubmitOutcome::Accepted(first.txid()))
    );
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::Event(NodeEvent::TransactionFinalized { .. })))
    );
    let child_coin = OutPoint {
        txid: first.txid(),
        index: 0,
    };
    let child = pay(
        child_coin,
        first.body.outputs[0].amount,
        &key(2),
        &key(3),
        Amount::from_time(10).unwrap(),
    );
    assert_eq!(
        reply(&submit(&mut node, &child)),
        Reply::Submitted(SubmitOutcome::Accepted(child.txid()))
    );
    assert!(matches!(
        status(&mut node, child.txid()),
        Reply::TransactionStatus(TxStatus::Certified(_))
    ));

    // A conflicting spend of the same coin is refused.
    assert_double_spend_refused(&mut node);

    // Both enter the next block.
    let until = now + 2_000;
    run_until(&mut node, &mut now, until);
    for txid in [first.txid(), child.txid()] {
        assert!(
            matches!(
                status(&mut node, txid),
                Reply::TransactionStatus(TxStatus::Included { .. })
            ),
            "{txid}"
        );
    }
    let Reply::Utxos(utxos) = command(
        &mut node,
        Command::UtxosByAddress {
            address: address(&key(3)),
            limit: 10,
        },
    ) else {
        panic!("not a UTXO reply")
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
    let mut node = open(disk.crash(), now);
    assert_eq!(node.tip_height(), tip);
    assert!(matches!(
        status(&mut node, child.txid()),
        Reply::TransactionStatus(TxStatus::Included { .. })
    ));
    let until = now + 3_000;
    run_until(&mut node, &mut now, until);
    assert!(node.tip_height().get() > tip.get() + 1);
    node.store().verify_utxo_set().unwrap();
}

#[test]
fn a_certified_payment_not_yet_in_a_block_survives_a_crash() {
    let disk = MemoryBackend::new();
    let mut now = START_MS + 1_000;
    let mut node = open(disk.clone(), now);
    run_until(&mut node, &mut now, START_MS + 3_000);
    let (coin, balance) = genesis_coin(&genesis(Some(4)).0);
    let funded = key(FUNDED_SEED);
    let payment = pay(
        coin,
        balance,
        &funded,
        &key(2),
        Amount::from_time(5).unwrap(),
    );
    let actions = submit(&mut node, &payment);
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::Event(NodeEvent::TransactionFinalized { .. })))
    );
    let tip = node.tip_height();

    // Crash before any block includes it: it was reported final, so it must still be.
    drop(node);
    let mut node = open(disk.crash(), now);
    assert_eq!(node.tip_height(), tip, "no block may have come in between");
    let certified = status(&mut node, payment.txid());
    assert!(
        matches!(certified, Reply::TransactionStatus(TxStatus::Certified(_))),
        "{certified:?}"
    );
    assert_eq!(node.store().finals(10).unwrap().len(), 1);
    // A conflicting spend is refused after the restart too.
    assert_double_spend_refused(&mut node);

    // The next block includes it, and the stored record goes.
    let until = now + 2_000;
    run_until(&mut node, &mut now, until);
    assert!(matches!(
        status(&mut node, payment.txid()),
        Reply::TransactionStatus(TxStatus::Included { .. })
    ));
    assert!(node.store().finals(10).unwrap().is_empty());
}

/// A payment alone in its step has its two signatures checked as a batch of two. When that
/// batch fails, the payment must still be refused as a signature failure, whichever of the
/// two is bad, and a correctly signed copy must still be accepted afterwards.
#[test]
fn a_lone_two_signature_payment_with_one_bad_signature_is_refused() {
    let mut now = START_MS + 1_000;
    let mut node = open(MemoryBackend::new(), now);
    run_until(&mut node, &mut now, START_MS + 2_000);
    let (coin, balance) = genesis_coin(&genesis(Some(4)).0);
    let funded = key(FUNDED_SEED);
    let single = pay(
        coin,
        balance,
        &funded,
        &key(2),
        Amount::from_time(5).unwrap(),
    );
    // Both of its outputs, owned by two keys, spent together once it is certified.
    assert!(matches!(
        reply(&submit(&mut node, &single)),
        Reply::Submitted(SubmitOutcome::Accepted(_))
    ));
    let fee = Amount::from_units(FEE_UNITS).unwrap();
    let sent = Amount::from_time(5).unwrap();
    let change = balance.checked_sub(sent).unwrap().checked_sub(fee).unwrap();
    let body = TxBody {
        kind: TxKind::Transfer,
        inputs: BoundedVec::new(vec![
            TxInput {
                prevout: OutPoint {
                    txid: single.txid(),
                    index: 0,
                },
                public_key: key(2).public_key(),
            },
            TxInput {
                prevout: OutPoint {
                    txid: single.txid(),
                    index: 1,
                },
                public_key: funded.public_key(),
            },
        ])
        .unwrap(),
        outputs: BoundedVec::new(vec![
            TxOut {
                amount: sent,
                address: address(&key(3)),
            },
            TxOut {
                amount: change.checked_sub(fee).unwrap(),
                address: address(&funded),
            },
        ])
        .unwrap(),
    };
    let good = Transaction::sign(body, &[&key(2), &funded], None, NETWORK).unwrap();
    for bad_index in 0..2 {
        let mut bad = good.clone();
        let mut signatures = bad.signatures.to_vec();
        signatures[bad_index].0[5] ^= 1;
        bad.signatures = BoundedVec::new(signatures).unwrap();
        match reply(&submit(&mut node, &bad)) {
            Reply::Submitted(SubmitOutcome::Rejected(reason)) => {
                assert!(reason.contains("invalid signature"), "{reason}")
            }
            other => panic!("signature {bad_index} tampered with, yet {other:?}"),
        }
    }
    assert!(matches!(
        reply(&submit(&mut node, &good)),
        Reply::Submitted(SubmitOutcome::Accepted(_))
    ));
}

/// A payment that arrives before its parent waits, among hundreds of transactions spending
/// outputs that never appear (anyone can sign those for free), and is admitted and final the
/// moment its parent is; the others keep waiting. Each certification retries only the
/// transactions that spend its outputs: retrying the whole room made a node with 1,000 such
/// transactions about 20 times slower per payment.
#[test]
fn a_payment_that_arrives_before_its_parent_is_final_as_soon_as_the_parent_is() {
    let now = START_MS + 1_000;
    let mut node = open(MemoryBackend::new(), now);
    let parent = spend_genesis(&key(2), Amount::from_time(1_000).unwrap());
    let child = pay(
        OutPoint {
            txid: parent.txid(),
            index: 0,
        },
        parent.body.outputs[0].amount,
        &key(2),
        &key(3),
        Amount::from_time(10).unwrap(),
    );
    assert_eq!(
        reply(&submit(&mut node, &child)),
        Reply::Submitted(SubmitOutcome::AwaitingInputs(child.txid()))
    );
    let orphans: Vec<Transaction> = (0..500u32)
        .map(|index| {
            let mut bytes = [7u8; 32];
            bytes[..4].copy_from_slice(&index.to_le_bytes());
            let coin = OutPoint {
                txid: Txid(timecoin_primitives::Hash32(bytes)),
                index: 0,
            };
            pay(
                coin,
                Amount::from_time(10).unwrap(),
                &key(5),
                &key(6),
                Amount::from_time(1).unwrap(),
            )
        })
        .collect();
    for orphan in &orphans {
        assert_eq!(
            reply(&submit(&mut node, orphan)),
            Reply::Submitted(SubmitOutcome::AwaitingInputs(orphan.txid()))
        );
    }
    assert_eq!(
        status(&mut node, child.txid()),
        Reply::TransactionStatus(TxStatus::AwaitingInputs)
    );
    let actions = submit(&mut node, &parent);
    assert_eq!(
        reply(&actions),
        Reply::Submitted(SubmitOutcome::Accepted(parent.txid()))
    );
    // The child's vote is signed with the next step's batch (votes are signed once per step,
    // after the step's locks are durable), so it is final one step later.
    let mut events = actions;
    events.extend(node.handle(Input::Tick { now_ms: now + 1 }).unwrap());
    let finalized: Vec<Txid> = events
        .iter()
        .filter_map(|action| match action {
            Action::Event(NodeEvent::TransactionFinalized { txid, .. }) => Some(*txid),
            _ => None,
        })
        .collect();
    assert_eq!(finalized, vec![parent.txid(), child.txid()]);
    assert!(matches!(
        status(&mut node, child.txid()),
        Reply::TransactionStatus(TxStatus::Certified(_))
    ));
    for orphan in [&orphans[0], &orphans[499]] {
        assert_eq!(
            status(&mut node, orphan.txid()),
            Reply::TransactionStatus(TxStatus::AwaitingInputs)
        );
    }
}

/// Without the address index, an address query is refused with the reason, and the node (which
/// treats a storage error as fatal) carries on.
#[test]
fn a_node_without_the_address_index_refuses_address_queries_and_carries_on() {
    let (genesis, params) = genesis(Some(4));
    let (mut node, _) = open_configured(
        MemoryBackend::new(),
        &genesis,
        &params,
        Some(key(MASTERNODE_SEED)),
        START_MS,
        |config, _| config.index_addresses = false,
    );
    let Reply::Error(error) = command(
        &mut node,
        Command::UtxosByAddress {
            address: address(&key(FUNDED_SEED)),
            limit: 10,
        },
    ) else {
        panic!("an address query must be refused")
    };
    assert!(error.contains("address index"), "{error}");
    let payment = spend_genesis(&key(3), Amount::from_time(10).unwrap());
    assert_eq!(
        reply(&submit(&mut node, &payment)),
        Reply::Submitted(SubmitOutcome::Accepted(payment.txid()))
    );
}

/// With its backlog limit reached, a node refuses a client's transaction without looking at it,
/// still takes transactions from peers, and takes clients again once finalizations show it
/// has room. A floor of 0 makes an idle node (nothing finalized lately) refuse every client.
#[test]
fn a_busy_node_refuses_clients_but_not_peers_and_recovers_as_payments_finalize() {
    let (genesis, params) = genesis(Some(4));
    let mut now = START_MS;
    let (mut node, _) = open_configured(
        MemoryBackend::new(),
        &genesis,
        &params,
        Some(key(MASTERNODE_SEED)),
        now,
        |_, config| {
            config.admission = AdmissionConfig {
                backlog_ms: 1_000,
                min_backlog: 0,
                standing_ms: 0,
            }
        },
    );
    let first = spend_genesis(&key(3), Amount::from_time(10).unwrap());
    assert_eq!(
        reply(&submit(&mut node, &first)),
        Reply::Submitted(SubmitOutcome::Busy {
            pending: 0,
            limit: 0
        })
    );
    // Refused unseen: the node does not know the transaction.
    assert_eq!(
        command(&mut node, Command::TransactionStatus(first.txid())),
        Reply::TransactionStatus(TxStatus::Unknown)
    );
    let Reply::Mempool(summary) = command(&mut node, Command::MempoolInfo) else {
        panic!("not a mempool reply")
    };
    assert_eq!(
        (summary.admission_limit, summary.refused_busy),
        (Some(0), 1)
    );

    // The same payment from a peer is taken, and final at once (quorum 1).
    let actions = node
        .handle(Input::PeerMessage {
            peer: PeerId(5),
            bytes: NodeMessage::Transactions(BoundedVec::new(vec![first.clone()]).unwrap())
                .to_bytes(),
        })
        .unwrap();
    assert!(
        actions.iter().any(|a| matches!(
            a,
            Action::Event(NodeEvent::TransactionFinalized { txid, .. }) if *txid == first.txid()
        )),
        "{actions:?}"
    );
    assert!(!actions.iter().any(|a| matches!(a, Action::Penalize { .. })));

    // A second later the window closes with one finalization: room for one client payment.
    now += 1_000;
    node.handle(Input::Tick { now_ms: now }).unwrap();
    let (change, change_value) = (
        OutPoint {
            txid: first.txid(),
            index: 1,
        },
        first.body.outputs[1].amount,
    );
    let second = pay(
        change,
        change_value,
        &key(FUNDED_SEED),
        &key(4),
        Amount::from_time(5).unwrap(),
    );
    assert_eq!(
        reply(&submit(&mut node, &second)),
        Reply::Submitted(SubmitOutcome::Accepted(second.txid()))
    );
    let Reply::Mempool(summary) = command(&mut node, Command::MempoolInfo) else {
        panic!("not a mempool reply")
    };
    assert_eq!(
        (
            summary.admission_limit,
            summary.finalized_per_s,
            summary.refused_busy
        ),
        (Some(1), 1, 1)
    );
}
