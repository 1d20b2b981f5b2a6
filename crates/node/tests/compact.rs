//! Compact proposals: a leader broadcasts its block's transactions by txid; a node holding them
//! rebuilds the block, and a node lacking one asks the sender for the whole proposal.

use timecoin_consensus::BftMessage;
use timecoin_node::node::MAX_SYNC_RESPONSES_PER_SECOND;
use timecoin_node::testing::{
    MASTERNODE_SEED, START_MS, TestNode, genesis, key, open_on, spend_genesis, submit,
};
use timecoin_node::{
    Action, Command, CompactTransaction, Input, NodeMessage, PeerId, Reply, RequestId, TxStatus,
};
use timecoin_primitives::{Amount, Txid};
use timecoin_storage::{ChainStore, MemoryBackend};

const LEADER: PeerId = PeerId(1);

fn node(masternode: bool) -> TestNode {
    let (genesis, params) = genesis(Some(4));
    let node_key = masternode.then(|| key(MASTERNODE_SEED));
    open_on(MemoryBackend::new(), &genesis, &params, node_key, START_MS).0
}

fn deliver(node: &mut TestNode, from: PeerId, message: &NodeMessage) -> Vec<Action> {
    node.handle(Input::PeerMessage {
        peer: from,
        bytes: message.to_bytes(),
    })
    .unwrap()
}

fn penalties(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|action| match action {
            Action::Penalize { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .collect()
}

fn included(node: &mut TestNode, txid: Txid) -> bool {
    let actions = node
        .handle(Input::Command {
            id: RequestId(1),
            command: Command::TransactionStatus(txid),
        })
        .unwrap();
    actions.iter().any(|action| {
        matches!(
            action,
            Action::Reply {
                reply: Reply::TransactionStatus(TxStatus::Included { .. }),
                ..
            }
        )
    })
}

#[test]
fn followers_rebuild_compact_proposals_or_fetch_the_whole_one() {
    let mut leader = node(true);
    // `holder` receives every broadcast; `lacker` misses the payment's relays.
    let mut holder = node(false);
    let mut lacker = node(false);
    let payment = spend_genesis(&key(2), Amount::from_time(5).unwrap());
    let txid = payment.txid();

    let mut now = START_MS + 1_000;
    let mut submitted = false;
    let mut compact_seen = false;
    let mut fetched = false;
    while now < START_MS + 20_000 && !(included(&mut holder, txid) && included(&mut lacker, txid)) {
        now += 100;
        let mut actions = leader.handle(Input::Tick { now_ms: now }).unwrap();
        if !submitted && leader.tip_height().get() >= 2 {
            submitted = true;
            actions.extend(submit(&mut leader, &payment));
        }
        for follower in [&mut holder, &mut lacker] {
            follower.handle(Input::Tick { now_ms: now }).unwrap();
        }
        for action in actions {
            let Action::Broadcast(message) = action else {
                continue;
            };
            assert!(
                !matches!(message, NodeMessage::Bft(BftMessage::Proposal(_))),
                "proposals are broadcast compact"
            );
            let carries_payment = match &message {
                NodeMessage::Transactions(list) => list.iter().any(|tx| tx.txid() == txid),
                NodeMessage::Certified { transaction, .. } => transaction.txid() == txid,
                NodeMessage::CertifiedMany(list) => {
                    list.iter().any(|item| item.transaction.txid() == txid)
                }
                _ => false,
            };
            let names_payment = match &message {
                NodeMessage::CompactProposal(compact) => {
                    compact.transactions.contains(&CompactTransaction::Id(txid))
                }
                _ => false,
            };
            let full_size = match &message {
                NodeMessage::CompactProposal(compact) if names_payment => {
                    compact_seen = true;
                    let whole = compact
                        .reconstruct(|id| (*id == txid).then(|| payment.clone()))
                        .expect("only the payment is named by txid");
                    Some(
                        NodeMessage::Bft(BftMessage::Proposal(Box::new(whole)))
                            .to_bytes()
                            .len(),
                    )
                }
                _ => None,
            };
            if let Some(full_size) = full_size {
                assert!(message.to_bytes().len() < full_size);
            }

            let actions = deliver(&mut holder, LEADER, &message);
            assert!(penalties(&actions).is_empty(), "{:?}", penalties(&actions));
            if names_payment {
                assert!(
                    !actions.iter().any(|action| matches!(
                        action,
                        Action::Send {
                            message: NodeMessage::GetProposal { .. },
                            ..
                        }
                    )),
                    "a node holding every transaction rebuilds the block itself"
                );
            }
            if carries_payment {
                continue;
            }
            let actions = deliver(&mut lacker, LEADER, &message);
            assert!(penalties(&actions).is_empty(), "{:?}", penalties(&actions));
            for action in actions {
                let Action::Send {
                    peer,
                    message: request @ NodeMessage::GetProposal { .. },
                } = action
                else {
                    continue;
                };
                assert_eq!(peer, LEADER, "the sender of the compact form is asked");
                assert!(names_payment, "only a block naming the payment is fetched");
                let answer = deliver(&mut leader, PeerId(3), &request);
                // A lone masternode decides its block in the step that proposes it, so the
                // answer is the committed block; in a larger committee, the whole proposal.
                let whole = answer
                    .into_iter()
                    .find_map(|action| match action {
                        Action::Send {
                            peer: PeerId(3),
                            message:
                                whole @ (NodeMessage::Bft(BftMessage::Proposal(_))
                                | NodeMessage::Committed(_)),
                        } => Some(whole),
                        _ => None,
                    })
                    .expect("the leader answers with the block");
                let actions = deliver(&mut lacker, LEADER, &whole);
                assert!(penalties(&actions).is_empty(), "{:?}", penalties(&actions));
                fetched = true;
            }
        }
    }
    assert!(compact_seen, "the leader proposed the payment");
    assert!(fetched, "the node lacking the payment fetched the proposal");
    assert!(included(&mut holder, txid));
    assert!(included(&mut lacker, txid));
    assert_eq!(lacker.tip_height(), leader.tip_height());
}

#[test]
fn a_request_for_an_unknown_proposal_is_ignored() {
    let mut leader = node(true);
    let request = NodeMessage::GetProposal {
        height: timecoin_primitives::Height(1),
        view: 0,
        block: timecoin_primitives::BlockHash(timecoin_primitives::Hash32([7; 32])),
    };
    let actions = deliver(&mut leader, PeerId(3), &request);
    assert!(!actions.iter().any(|a| matches!(a, Action::Send { .. })));
    assert!(penalties(&actions).is_empty());
}

#[test]
fn requests_for_whole_blocks_are_limited_per_peer() {
    let mut leader = node(true);
    let mut now = START_MS + 1_000;
    while leader.tip_height().get() < 3 {
        now += 100;
        leader.handle(Input::Tick { now_ms: now }).unwrap();
    }
    let height = timecoin_primitives::Height(2);
    let block = leader
        .store()
        .block_hash(height)
        .unwrap()
        .expect("committed");
    let request = NodeMessage::GetProposal {
        height,
        view: 0,
        block,
    };
    let answers = |leader: &mut TestNode, peer: PeerId| {
        (0..MAX_SYNC_RESPONSES_PER_SECOND + 5)
            .map(|_| deliver(leader, peer, &request))
            .filter(|actions| {
                actions.iter().any(|action| {
                    matches!(
                        action,
                        Action::Send {
                            message: NodeMessage::Committed(_),
                            ..
                        }
                    )
                })
            })
            .count() as u32
    };
    assert_eq!(
        answers(&mut leader, PeerId(3)),
        MAX_SYNC_RESPONSES_PER_SECOND
    );
    // Another peer has its own allowance, and the first gets a new one a second later.
    assert_eq!(
        answers(&mut leader, PeerId(4)),
        MAX_SYNC_RESPONSES_PER_SECOND
    );
    leader
        .handle(Input::Tick {
            now_ms: now + 1_000,
        })
        .unwrap();
    assert_eq!(
        answers(&mut leader, PeerId(3)),
        MAX_SYNC_RESPONSES_PER_SECOND
    );
}
