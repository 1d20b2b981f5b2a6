//! Relay bundles: one gossip message carrying a round's transactions, votes and certified
//! transactions is handled as the separate messages would be.

use timecoin_node::testing::{
    MASTERNODE_SEED, START_MS, TestNode, command, genesis, key, open_on, pay, spend_genesis, submit,
};
use timecoin_node::{Action, Command, Input, NodeMessage, PeerId, RelayBundle, Reply, TxStatus};
use timecoin_primitives::{Amount, BoundedVec, OutPoint, Transaction};
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

/// Spends output `index` of `parent` (owned by key 2) to `to`.
fn spend(parent: &Transaction, index: u32, to: u8) -> Transaction {
    pay(
        OutPoint {
            txid: parent.txid(),
            index,
        },
        parent.body.outputs[index as usize].amount,
        &key(2),
        &key(to),
        Amount::from_time(1).unwrap(),
    )
}

#[test]
fn transactions_in_a_bundle_are_admitted_and_bad_ones_blamed() {
    let mut node = masternode();
    let payment = spend_genesis(&key(2), Amount::from_time(3).unwrap());
    let child = spend(&payment, 0, 3);
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

    // Key 2 owns the child's change; a signature over another body does not authorise this one.
    let mut forged = spend(&child, 1, 4);
    forged.signatures = spend(&child, 1, 5).signatures;
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

#[test]
fn a_certificate_formed_from_votes_is_not_relayed_and_a_non_member_forms_it_from_the_votes() {
    let mut member = masternode();
    let (genesis, params) = genesis(Some(4));
    let mut observer = open_on(
        MemoryBackend::new(),
        &genesis,
        &params,
        None,
        START_MS + 1_000,
    )
    .0;
    let payment = spend_genesis(&key(2), Amount::from_time(3).unwrap());
    let txid = payment.txid();
    let actions = submit(&mut member, &payment);
    let certified = |node: &mut TestNode| {
        matches!(
            command(node, Command::TransactionStatus(txid)),
            Reply::TransactionStatus(TxStatus::Certified(_))
        )
    };
    // A lone masternode is the whole quorum: its own vote certifies the payment.
    assert!(certified(&mut member));
    let broadcasts: Vec<&NodeMessage> = actions
        .iter()
        .filter_map(|action| match action {
            Action::Broadcast(message) => Some(message),
            _ => None,
        })
        .collect();
    assert!(
        !broadcasts.iter().any(|message| matches!(
            message,
            NodeMessage::Certified { .. } | NodeMessage::CertifiedMany(_)
        )),
        "{broadcasts:?}"
    );
    assert!(!certified(&mut observer));
    for message in broadcasts {
        let actions = observer
            .handle(Input::PeerMessage {
                peer: PeerId(1),
                bytes: message.to_bytes(),
            })
            .unwrap();
        assert!(
            !actions
                .iter()
                .any(|action| matches!(action, Action::Penalize { .. })),
            "{actions:?}"
        );
    }
    assert!(certified(&mut observer));
}

fn publishes(actions: &[Action], transaction: &Transaction) -> bool {
    let txid = transaction.txid();
    actions.iter().any(|action| match action {
        Action::Broadcast(NodeMessage::Transactions(list)) => {
            list.iter().any(|tx| tx.txid() == txid)
        }
        _ => false,
    })
}

#[test]
fn a_transaction_from_a_peer_is_not_published_again_and_a_clients_is() {
    let mut node = masternode();
    let from_peer = spend_genesis(&key(2), Amount::from_time(3).unwrap());
    let actions = relay(&mut node, vec![from_peer.clone()]);
    // The gossip layer forwarded the peer's message already; the node only pools and votes.
    assert!(!publishes(&actions, &from_peer), "{actions:?}");
    assert!(matches!(
        command(&mut node, Command::TransactionStatus(from_peer.txid())),
        Reply::TransactionStatus(TxStatus::Certified(_))
    ));

    let from_client = spend(&from_peer, 0, 3);
    let actions = submit(&mut node, &from_client);
    assert!(publishes(&actions, &from_client), "{actions:?}");
}
