//! Catch-up from several peers at once: a node far behind asks different peers for different
//! ranges in parallel, applies them in order whatever order they arrive in, and replaces a peer
//! that serves an invalid block.

use timecoin_node::testing::{
    FUNDED_SEED, MASTERNODE_SEED, START_MS, TestNode, genesis, key, open_on, spend_genesis, submit,
};
use timecoin_node::{Action, CertifiedBlock, Input, NodeEvent, NodeMessage, PeerId};
use timecoin_primitives::hash::Txid;
use timecoin_primitives::{Amount, BoundedVec, Height};
use timecoin_storage::{ChainStore, MemoryBackend};

/// A lone masternode that has committed at least `blocks` blocks.
fn source_chain(blocks: u64) -> TestNode {
    let (genesis, params) = genesis(Some(4));
    let (mut node, _) = open_on(
        MemoryBackend::new(),
        &genesis,
        &params,
        Some(key(MASTERNODE_SEED)),
        START_MS,
    );
    let mut now = START_MS;
    while node.tip_height().get() < blocks {
        now += 100;
        node.handle(Input::Tick { now_ms: now }).unwrap();
        assert!(now < START_MS + 1_000_000, "the source stopped committing");
    }
    node
}

fn follower() -> TestNode {
    let (genesis, params) = genesis(Some(4));
    open_on(MemoryBackend::new(), &genesis, &params, None, START_MS).0
}

/// The sync requests among `actions`: (peer, first height).
fn requests(actions: &[Action]) -> Vec<(PeerId, Height)> {
    actions
        .iter()
        .filter_map(|action| match action {
            Action::Send {
                peer,
                message: NodeMessage::SyncRequest { from, .. },
            } => Some((*peer, *from)),
            _ => None,
        })
        .collect()
}

/// What `source` answers to a request for `from`, as bytes.
fn serve(source: &mut TestNode, from: Height) -> Vec<u8> {
    let request = NodeMessage::SyncRequest { from, count: 32 }.to_bytes();
    let actions = source
        .handle(Input::PeerMessage {
            peer: PeerId(99),
            bytes: request,
        })
        .unwrap();
    actions
        .into_iter()
        .find_map(|action| match action {
            Action::Send {
                message: message @ NodeMessage::SyncResponse(_),
                ..
            } => Some(message.to_bytes()),
            _ => None,
        })
        .expect("the source serves its blocks")
}

/// The blocks `source` serves from `from`, decoded, for a test to tamper with.
fn served_blocks(source: &mut TestNode, from: Height) -> Vec<CertifiedBlock> {
    let NodeMessage::SyncResponse(blocks) = NodeMessage::from_bytes(&serve(source, from)).unwrap()
    else {
        panic!("not a sync response")
    };
    blocks.into_inner()
}

/// A follower that peers 1 and 2 told of `source`'s tip.
fn follower_of_two(source: &TestNode) -> TestNode {
    let mut node = follower();
    let announce = heartbeat(source);
    for peer in 1..=2 {
        node.handle(Input::PeerMessage {
            peer: PeerId(peer),
            bytes: announce.clone(),
        })
        .unwrap();
    }
    node
}

fn heartbeat(source: &TestNode) -> Vec<u8> {
    let tip = source.store().tip().unwrap();
    NodeMessage::Heartbeat {
        height: tip.height,
        hash: tip.hash,
    }
    .to_bytes()
}

#[test]
fn a_node_far_behind_fetches_ranges_from_several_peers_in_parallel() {
    let mut source = source_chain(100);
    let mut node = follower();
    let announce = heartbeat(&source);
    let mut asked = Vec::new();
    for peer in 1..=3 {
        let actions = node
            .handle(Input::PeerMessage {
                peer: PeerId(peer),
                bytes: announce.clone(),
            })
            .unwrap();
        asked.extend(requests(&actions));
    }
    // Three peers, three consecutive ranges, one each.
    assert_eq!(
        asked,
        vec![
            (PeerId(1), Height(1)),
            (PeerId(2), Height(33)),
            (PeerId(3), Height(65)),
        ]
    );

    // The later ranges arrive first: buffered, nothing applied yet, and the freed peers are
    // already asked for the range after them.
    let mut next = Vec::new();
    for (peer, from) in [(PeerId(3), Height(65)), (PeerId(2), Height(33))] {
        let bytes = serve(&mut source, from);
        let actions = node.handle(Input::PeerMessage { peer, bytes }).unwrap();
        next.extend(requests(&actions));
        assert_eq!(node.tip_height(), Height(0));
    }
    assert_eq!(next.len(), 1, "{next:?}");
    assert_eq!(next[0].1, Height(97));
    assert_ne!(
        next[0].0,
        PeerId(1),
        "peer 1 is still busy with heights 1-32"
    );
    // The first range lets all three apply at once.
    let bytes = serve(&mut source, Height(1));
    node.handle(Input::PeerMessage {
        peer: PeerId(1),
        bytes,
    })
    .unwrap();
    assert_eq!(node.tip_height(), Height(96));
    assert_eq!(
        node.store().block_hash(Height(96)).unwrap(),
        source.store().block_hash(Height(96)).unwrap()
    );
}

#[test]
fn a_peer_serving_a_bad_range_is_penalised_and_the_range_asked_of_another() {
    let mut source = source_chain(40);
    let mut node = follower_of_two(&source);
    // Peer 1 answers its range with a block whose certificate belongs to another height.
    let mut blocks = served_blocks(&mut source, Height(1));
    blocks[0].certificate = blocks[1].certificate.clone();
    let forged = NodeMessage::SyncResponse(BoundedVec::new(blocks).unwrap());
    let actions = node
        .handle(Input::PeerMessage {
            peer: PeerId(1),
            bytes: forged.to_bytes(),
        })
        .unwrap();
    assert_eq!(node.tip_height(), Height(0));
    assert!(actions.iter().any(|action| matches!(
        action,
        Action::Penalize {
            peer: PeerId(1),
            ..
        }
    )));
    // Height 1 is asked again, of the other peer once it is free.
    let bytes = serve(&mut source, Height(33));
    let actions = node
        .handle(Input::PeerMessage {
            peer: PeerId(2),
            bytes,
        })
        .unwrap();
    assert!(
        requests(&actions).contains(&(PeerId(2), Height(1))),
        "{:?}",
        requests(&actions)
    );
    let bytes = serve(&mut source, Height(1));
    node.handle(Input::PeerMessage {
        peer: PeerId(2),
        bytes,
    })
    .unwrap();
    assert_eq!(node.tip_height(), Height(40));
}

/// A txid does not cover signatures, so a block whose payment carries a forged signature still
/// matches its header and commit certificate: only verifying the signatures catches it, and a
/// syncing node must, even though it skips the check for copies it verified itself.
#[test]
fn a_synced_block_with_a_forged_signature_is_refused_and_its_sender_penalised() {
    let (mut source, txid, _) = source_with_a_payment_in_a_block();
    let mut node = follower_of_two(&source);
    let mut blocks = served_blocks(&mut source, Height(1));
    let mut forged_height = None;
    for certified in &mut blocks {
        let mut transactions = certified.block.transactions.clone().into_inner();
        if let Some(forged) = transactions.iter_mut().find(|tx| tx.txid() == txid) {
            // The owner's valid signature over another message: well-formed, wrong.
            let mut signatures = forged.signatures.clone().into_inner();
            signatures[0] = key(FUNDED_SEED).sign(b"not this payment");
            forged.signatures = BoundedVec::new(signatures).unwrap();
            forged_height = Some(certified.block.header.height);
        }
        let before = certified.block.hash();
        certified.block.transactions = BoundedVec::new(transactions).unwrap();
        assert_eq!(
            certified.block.hash(),
            before,
            "the forgery keeps the block hash"
        );
    }
    let forged_height = forged_height.expect("the payment is in the served range");
    let actions = node
        .handle(Input::PeerMessage {
            peer: PeerId(1),
            bytes: NodeMessage::SyncResponse(BoundedVec::new(blocks).unwrap()).to_bytes(),
        })
        .unwrap();
    assert!(node.tip_height() < forged_height);
    assert!(node.store().transaction_location(&txid).unwrap().is_none());
    assert!(actions.iter().any(|action| matches!(
        action,
        Action::Penalize {
            peer: PeerId(1),
            ..
        }
    )));
    // The genuine blocks, from the other peer, apply.
    let bytes = serve(&mut source, Height(node.tip_height().get() + 1));
    node.handle(Input::PeerMessage {
        peer: PeerId(2),
        bytes,
    })
    .unwrap();
    assert!(node.tip_height() >= forged_height);
    assert!(node.store().transaction_location(&txid).unwrap().is_some());
}

/// A lone masternode that took a payment and committed it in a block; with the payment's txid
/// and every action from the submission on.
fn source_with_a_payment_in_a_block() -> (TestNode, Txid, Vec<Action>) {
    let mut source = source_chain(1);
    let payment = spend_genesis(&key(7), Amount::from_units(1_000_000).unwrap());
    let txid = payment.txid();
    let mut actions = submit(&mut source, &payment);
    let mut now = START_MS + 60_000;
    while source
        .store()
        .transaction_location(&txid)
        .unwrap()
        .is_none()
    {
        now += 100;
        actions.extend(source.handle(Input::Tick { now_ms: now }).unwrap());
        assert!(
            now < START_MS + 600_000,
            "the payment never reached a block"
        );
    }
    (source, txid, actions)
}

/// Every event that says a transaction became final at `actions`' node: (txid, by block height
/// or None for a certificate).
fn finality_events(actions: &[Action]) -> Vec<(Txid, Option<Height>)> {
    let mut events = Vec::new();
    for action in actions {
        match action {
            Action::Event(NodeEvent::TransactionFinalized { txid, .. }) => {
                events.push((*txid, None))
            }
            Action::Event(NodeEvent::FinalInBlock { height, txids }) => {
                events.extend(txids.iter().map(|txid| (*txid, Some(*height))))
            }
            _ => {}
        }
    }
    events
}

#[test]
fn a_payment_learnt_from_a_synced_block_is_reported_final_once_by_its_block() {
    let (mut source, txid, actions) = source_with_a_payment_in_a_block();
    // The masternode certified it first: one certificate event, and its block adds none.
    assert_eq!(finality_events(&actions), vec![(txid, None)]);

    let height = source
        .store()
        .transaction_location(&txid)
        .unwrap()
        .unwrap()
        .height;
    let mut node = follower_of_two(&source);
    let blocks = served_blocks(&mut source, Height(1));
    let actions = node
        .handle(Input::PeerMessage {
            peer: PeerId(1),
            bytes: NodeMessage::SyncResponse(BoundedVec::new(blocks).unwrap()).to_bytes(),
        })
        .unwrap();
    assert!(node.tip_height() >= height);
    // The follower never saw its votes: final by its block, at that block's height.
    assert_eq!(finality_events(&actions), vec![(txid, Some(height))]);
}
