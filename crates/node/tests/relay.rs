//! Relay bundles: one gossip message carrying a round's transactions, votes and certified
//! transactions is handled as the separate messages would be.

use timecoin_node::testing::{
    FUNDED_SEED, MASTERNODE_SEED, START_MS, TestNode, command, genesis, genesis_coin, key, open_on,
    pay,
};
use timecoin_node::{Action, Command, Input, NodeMessage, PeerId, RelayBundle, Reply, TxStatus};
use timecoin_primitives::{Amount, BoundedVec, Transaction};
use timecoin_storage::MemoryBackend;

fn masternode() -> TestNode {
    let (genesis, params) = genesis(Some(4));
    open_on(
        MemoryBackend::new(),
        &genesis,
        &params,
        Some(key(MASTERNODE_SEED)),
        START_MS + 1_000,
    )
    .0
}

fn relay(node: &mut TestNode, transactions: Vec<Transaction>) -> Vec<Action> {
    let bundle = RelayBundle {
        transactions: BoundedVec::new(transactions).unwrap(),
        ..RelayBundle::default()
    };
    node.handle(Input::PeerMessage {
        peer: PeerId(5),
        bytes: NodeMessage::Relay(Box::new(bundle)).to_bytes(),
    })
    .unwrap()
}

#[test]
fn transactions_in_a_bundle_are_admitted_and_bad_ones_blamed() {
    let mut node = masternode();
    let (coin, balance) = genesis_coin(&genesis(Some(4)).0);
    let payment = pay(
        coin,
        balance,
        &key(FUNDED_SEED),
        &key(2),
        Amount::from_time(3).unwrap(),
    );
    let child = pay(
        timecoin_primitives::OutPoint {
            txid: payment.txid(),
            index: 0,
        },
        payment.body.outputs[0].amount,
        &key(2),
        &key(3),
        Amount::from_time(1).unwrap(),
    );
    let actions = relay(&mut node, vec![payment.clone(), child.clone()]);
    assert!(
        !actions
            .iter()
            .any(|action| matches!(action, Action::Penalize { .. })),
        "{actions:?}"
    );
    // A lone masternode is the whole quorum: both are final at once, the child spending
    // the first's output before any block.
    for transaction in [&payment, &child] {
        assert!(matches!(
            command(&mut node, Command::TransactionStatus(transaction.txid())),
            Reply::TransactionStatus(TxStatus::Certified(_))
        ));
    }

    let mut forged = pay(
        timecoin_primitives::OutPoint {
            txid: child.txid(),
            index: 1,
        },
        child.body.outputs[1].amount,
        &key(2),
        &key(4),
        Amount::from_time(1).unwrap(),
    );
    forged.signatures = pay(
        timecoin_primitives::OutPoint {
            txid: child.txid(),
            index: 1,
        },
        child.body.outputs[1].amount,
        &key(2),
        &key(5),
        Amount::from_time(1).unwrap(),
    )
    .signatures;
    let actions = relay(&mut node, vec![forged.clone()]);
    assert!(
        actions.iter().any(|action| matches!(
            action,
            Action::Penalize {
                peer: PeerId(5),
                ..
            }
        )),
        "a bundle carrying a forged transaction is its sender's fault"
    );
    assert!(!matches!(
        command(&mut node, Command::TransactionStatus(forged.txid())),
        Reply::TransactionStatus(TxStatus::Certified(_))
    ));
}
