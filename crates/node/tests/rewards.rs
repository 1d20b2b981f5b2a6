//! The reward rule from the node's side (ADR 0009): a block carries its parent's commit
//! certificate and pays its reward to that certificate's signers by weight. A syncing node
//! accepts the honest chain and refuses, blaming the sender, a block whose reward goes elsewhere
//! or whose parent certificate does not verify, even when the block's own certificate is valid.

use timecoin_consensus::signing::statement_message;
use timecoin_consensus::{Phase, Slot};
use timecoin_ledger::{BlockTemplate, ChainParams, build_block};
use timecoin_node::testing::{NETWORK, START_MS, TestNode, address, genesis, key, open_on};
use timecoin_node::{Action, CertifiedBlock, Input, NodeEvent, NodeMessage, PeerId};
use timecoin_primitives::{
    Address, Block, BoundedVec, CommitCertificate, CommitVote, Height, SecretKey, Timestamp, TxOut,
};
use timecoin_storage::{ChainStore, MemoryBackend};

const PEER: PeerId = PeerId(7);

fn open(genesis: &Block, params: &ChainParams, node_key: Option<SecretKey>) -> TestNode {
    open_on(MemoryBackend::new(), genesis, params, node_key, START_MS).0
}

/// The masternode alone, after it has committed at least `blocks` blocks.
fn masternode_chain(genesis: &Block, params: &ChainParams, blocks: u64) -> TestNode {
    let mut node = open(genesis, params, Some(key(200)));
    let mut now = START_MS;
    while node.tip_height().get() < blocks {
        now += 100;
        node.handle(Input::Tick { now_ms: now }).unwrap();
        assert!(
            now < START_MS + 60_000,
            "the lone masternode stopped committing"
        );
    }
    node
}

fn certified(node: &TestNode, height: u64) -> CertifiedBlock {
    let store = node.store();
    let hash = store.block_hash(Height(height)).unwrap().unwrap();
    CertifiedBlock {
        block: store.block(&hash).unwrap().unwrap(),
        certificate: store.certificate(Height(height)).unwrap().unwrap(),
    }
}

/// A commit certificate for `block` signed by the lone masternode, as consensus would make it.
fn certify(block: &Block, params: &ChainParams) -> CommitCertificate {
    let height = block.header.height;
    let slot = Slot {
        height,
        view: 0,
        phase: Phase::Commit,
    };
    let message = statement_message(NETWORK, params.epoch_of(height), slot, &block.hash().0);
    CommitCertificate {
        height,
        view: 0,
        block_hash: block.hash(),
        votes: BoundedVec::new(vec![CommitVote {
            voter: key(200).public_key(),
            signature: key(200).sign(&message),
        }])
        .unwrap(),
    }
}

/// Hands `blocks` to `node` as a sync response from [`PEER`] and returns its actions.
fn sync(node: &mut TestNode, blocks: Vec<CertifiedBlock>) -> Vec<Action> {
    let bytes = NodeMessage::SyncResponse(BoundedVec::new(blocks).unwrap()).to_bytes();
    node.handle(Input::PeerMessage { peer: PEER, bytes })
        .unwrap()
}

fn penalty(actions: &[Action]) -> Option<&str> {
    actions.iter().find_map(|action| match action {
        Action::Penalize { peer, reason } if *peer == PEER => Some(reason.as_str()),
        _ => None,
    })
}

/// A ledger-valid block 2 on top of `node`'s tip (block 1), carrying `parent_commit` and
/// paying the whole reward to `payee`.
fn block_two(
    node: &TestNode,
    params: &ChainParams,
    parent_commit: CommitCertificate,
    payee: Address,
) -> Block {
    let store = node.store();
    let parent = store.header(&store.tip().unwrap().hash).unwrap().unwrap();
    let template = BlockTemplate {
        timestamp: Timestamp(parent.timestamp.as_millis() + params.block_interval_ms),
        parent,
        proposer: key(200).public_key(),
        transactions: Vec::new(),
        parent_commit: Some(parent_commit),
    };
    build_block(
        template,
        |allowed| {
            vec![TxOut {
                amount: allowed,
                address: payee,
            }]
        },
        store,
        store.utxo_commitment(),
        store,
        params,
    )
    .unwrap()
}

#[test]
fn the_reward_goes_to_the_signers_of_the_parent_certificate() {
    let (genesis, params) = genesis(Some(4));
    let masternode = masternode_chain(&genesis, &params, 3);
    let blocks: Vec<CertifiedBlock> = (1..=3).map(|h| certified(&masternode, h)).collect();

    // Block 1 pays its proposer; blocks 2 and 3 carry their parent's certificate, whose one
    // signer is paid at its collateral owner's address, never at its node key's.
    assert!(blocks[0].block.parent_commit.is_none());
    for pair in blocks.windows(2) {
        let carried = pair[1].block.parent_commit.as_deref().unwrap();
        assert_eq!(carried.block_hash, pair[0].block.hash());
        assert_eq!(
            pair[1].block.header.parent_commit_hash,
            carried.hash(),
            "the header commits to the certificate it carries"
        );
    }
    for certified in &blocks {
        let outputs = &certified.block.transactions[0].body.outputs;
        assert!(!outputs.is_empty());
        assert!(
            outputs
                .iter()
                .all(|output| output.address == address(&key(201)))
        );
    }

    // An observer syncs the honest chain without complaint.
    let mut observer = open(&genesis, &params, None);
    let actions = sync(&mut observer, blocks);
    assert_eq!(penalty(&actions), None);
    assert_eq!(observer.tip_height(), Height(3));
}

#[test]
fn a_block_paying_someone_else_is_refused_from_sync() {
    let (genesis, params) = genesis(Some(4));
    let masternode = masternode_chain(&genesis, &params, 1);
    let mut observer = open(&genesis, &params, None);
    sync(&mut observer, vec![certified(&masternode, 1)]);
    assert_eq!(observer.tip_height(), Height(1));
    let parent_commit = certified(&masternode, 1).certificate;

    // The proposer keeps the reward (at its node key's address): every ledger rule holds and
    // the block's own certificate is valid, but the split is wrong.
    let greedy = block_two(&observer, &params, parent_commit, address(&key(200)));
    let certificate = certify(&greedy, &params);
    let actions = sync(
        &mut observer,
        vec![CertifiedBlock {
            block: greedy,
            certificate,
        }],
    );
    let reason = penalty(&actions).expect("the sender is penalised");
    assert!(reason.contains("reward output 0"), "{reason}");
    assert_eq!(observer.tip_height(), Height(1));
    assert!(
        !actions
            .iter()
            .any(|action| matches!(action, Action::Event(NodeEvent::BlockCommitted { .. })))
    );
}

#[test]
fn a_block_with_a_forged_parent_certificate_is_refused_from_sync() {
    let (genesis, params) = genesis(Some(4));
    let masternode = masternode_chain(&genesis, &params, 1);
    let mut observer = open(&genesis, &params, None);
    sync(&mut observer, vec![certified(&masternode, 1)]);
    let mut forged = certified(&masternode, 1).certificate;
    forged.votes = BoundedVec::new(vec![CommitVote {
        voter: key(200).public_key(),
        signature: key(200).sign(b"not the commit message"),
    }])
    .unwrap();

    // Paid correctly, committed to in the header, certified itself: only the carried parent
    // certificate is bad.
    let block = block_two(&observer, &params, forged, address(&key(201)));
    let certificate = certify(&block, &params);
    let actions = sync(&mut observer, vec![CertifiedBlock { block, certificate }]);
    let reason = penalty(&actions).expect("the sender is penalised");
    assert!(reason.contains("parent commit certificate"), "{reason}");
    assert_eq!(observer.tip_height(), Height(1));
}
