//! Read-only views of a node's state for RPC and metrics, kept apart from the state machine so
//! that what operators can read grows without touching the consensus logic.

use std::collections::BTreeSet;

use timecoin_mempool::MempoolInfo;
use timecoin_primitives::{Amount, Height, Transaction, Txid};

use super::Node;
use crate::io::{MempoolSummary, PoolFinality, PoolStats, PoolTransaction, SyncStatus};
use crate::store::NodeStore;

impl<S: NodeStore> Node<S> {
    /// Where block sync stands: the tip, the best height known to exist and the request in
    /// flight. The target trusts peers' announcements (a peer that lies about its height only
    /// makes this node look behind until that peer disconnects; it cannot make it accept blocks
    /// without commit certificates).
    pub fn sync_status(&self) -> SyncStatus {
        let height = self.tip_height();
        let best_peer = self.sync.peers.values().copied().max();
        let decided = self.missing_block.as_ref().map(|c| c.height);
        let target_height = [Some(height), best_peer, decided]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or(height);
        SyncStatus {
            height,
            target_height,
            peers_known: self.sync.peers.values().filter(|h| **h > Height(0)).count(),
            in_flight: self.sync.in_flight.keys().next().copied(),
        }
    }

    /// While the node refuses clients' new transactions as busy (ADR 0026): how many
    /// transactions are collecting votes, and the limit they have stood over.
    pub fn refusing_clients(&self) -> Option<(usize, usize)> {
        self.admission.refusing().then(|| {
            (
                self.mempool.len(),
                self.admission.limit().unwrap_or(usize::MAX),
            )
        })
    }

    /// The counts [`crate::Command::MempoolInfo`] answers, with `info` the pool's own.
    pub(crate) fn mempool_summary(&self, info: &MempoolInfo) -> MempoolSummary {
        MempoolSummary {
            pending_transactions: info.transactions,
            pending_bytes: info.bytes,
            certified_transactions: self.certified.len(),
            awaiting_inputs: self.awaiting_inputs.len(),
            admission_limit: self.admission.limit(),
            finalized_per_s: self.admission.rate_per_s(),
            refused_busy: self.admission.refused(),
        }
    }

    /// The pools' counts, sizes, fees and limits.
    pub fn pool_stats(&self) -> PoolStats {
        let info = self.mempool.info();
        PoolStats {
            summary: self.mempool_summary(&info),
            pending_usage_bytes: info.usage_bytes,
            // Valid pending transactions spend distinct coins, so their fees stay below the
            // supply; saturate rather than rely on it here.
            pending_fees: Amount::checked_sum(self.mempool.iter().map(|entry| entry.fee()))
                .unwrap_or(Amount::MAX),
            max_bytes: info.max_bytes,
            max_transactions: info.max_transactions,
            entry_fee_rate: info.min_fee_rate,
        }
    }

    /// The transactions held in memory and not yet in a block: first those collecting votes
    /// (highest fee rate first), then the certified ones waiting for a block (in certification
    /// order, parents before children). Transactions waiting for their inputs are not listed:
    /// their fee is not known until the inputs are. Bounded by the pools' limits.
    pub fn pool_transactions(&self) -> Vec<PoolTransaction> {
        let held = |txid: &Txid| self.mempool.contains(txid) || self.certified.contains(txid);
        let depends = |tx: &Transaction| -> Vec<Txid> {
            tx.body
                .inputs
                .iter()
                .map(|input| input.prevout.txid)
                .filter(|parent| held(parent))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect()
        };
        let pending = self.mempool.iter().map(|entry| PoolTransaction {
            txid: entry.txid(),
            size_bytes: entry.size_bytes(),
            fee: entry.fee(),
            first_seen_ms: self.first_seen.get(&entry.txid()).copied(),
            depends: depends(entry.transaction()),
            finality: PoolFinality::Pending,
        });
        let certified = self.certified.iter().map(|entry| {
            let txid = entry.transaction.txid();
            PoolTransaction {
                txid,
                size_bytes: entry.size_bytes,
                fee: entry.fee,
                first_seen_ms: self.first_seen.get(&txid).copied(),
                depends: depends(&entry.transaction),
                finality: PoolFinality::Certified,
            }
        });
        pending.chain(certified).collect()
    }

    /// The txids [`Node::pool_transactions`] lists, in the same order, without building the
    /// entries.
    pub fn pool_txids(&self) -> Vec<Txid> {
        self.mempool
            .txids()
            .chain(self.certified.iter().map(|entry| entry.transaction.txid()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use timecoin_primitives::{Amount, BlockHash, Hash32, OutPoint, SecretKey};
    use timecoin_storage::MemoryBackend;

    use super::*;
    use crate::testing::{
        FEE_UNITS, MASTERNODE_SEED, START_MS, TestNode, command, genesis, genesis_coin, key,
        open_on,
    };
    use crate::{Command, Input, NodeMessage, PeerId, Reply, SubmitOutcome};

    /// A node on the one-masternode genesis: with `masternode` it is that masternode (quorum
    /// 1, so what it accepts is certified at once), without it only pools and relays.
    fn open(masternode: bool) -> (TestNode, timecoin_primitives::Block) {
        let (genesis, params) = genesis(None);
        let node_key = masternode.then(|| key(MASTERNODE_SEED));
        let (node, _) = open_on(
            MemoryBackend::new(),
            &genesis,
            &params,
            node_key,
            START_MS + 1_000,
        );
        (node, genesis)
    }

    /// Pays 10 TIME from `owner`'s `coin` to `to`.
    fn pay(coin: OutPoint, amount: Amount, owner: &SecretKey, to: &SecretKey) -> Transaction {
        crate::testing::pay(coin, amount, owner, to, Amount::from_time(10).unwrap())
    }

    #[test]
    fn a_pending_transaction_is_listed_with_fee_size_and_first_sight() {
        let (mut node, genesis) = open(false);
        assert!(node.pool_transactions().is_empty());
        let (coin, amount) = genesis_coin(&genesis);
        let tx = pay(coin, amount, &key(1), &key(2));
        assert_eq!(
            command(&mut node, Command::SubmitTransaction(tx.clone())),
            Reply::Submitted(SubmitOutcome::Accepted(tx.txid()))
        );
        let listed = node.pool_transactions();
        assert_eq!(
            listed,
            vec![PoolTransaction {
                txid: tx.txid(),
                size_bytes: tx.encoded_size(),
                fee: Amount::from_units(FEE_UNITS).unwrap(),
                first_seen_ms: Some(START_MS + 1_000),
                depends: vec![],
                finality: PoolFinality::Pending,
            }]
        );
        assert_eq!(node.pool_txids(), vec![tx.txid()]);
        let stats = node.pool_stats();
        let Reply::Mempool(summary) = command(&mut node, Command::MempoolInfo) else {
            panic!("not a mempool reply");
        };
        assert_eq!(
            stats.summary, summary,
            "the same counts as the MempoolInfo command"
        );
        let PoolStats {
            summary:
                MempoolSummary {
                    pending_transactions,
                    pending_bytes,
                    ..
                },
            pending_usage_bytes,
            pending_fees,
            entry_fee_rate,
            max_bytes,
            ..
        } = stats.clone();
        assert_eq!(
            (pending_transactions, pending_bytes),
            (1, tx.encoded_size())
        );
        assert!(pending_usage_bytes > pending_bytes, "{stats:?}");
        assert_eq!(pending_fees.units(), FEE_UNITS);
        assert_eq!(
            entry_fee_rate, None,
            "an almost empty pool admits at the relay minimum"
        );
        assert_eq!(max_bytes, node.config.mempool.max_bytes.get());
    }

    #[test]
    fn certified_transactions_are_listed_after_pending_ones_with_their_parents() {
        let (mut node, genesis) = open(true);
        let (coin, amount) = genesis_coin(&genesis);
        let parent = pay(coin, amount, &key(1), &key(2));
        command(&mut node, Command::SubmitTransaction(parent.clone()));
        // The parent's change (output 1) pays key 1 again.
        let child = pay(
            OutPoint {
                txid: parent.txid(),
                index: 1,
            },
            parent.body.outputs[1].amount,
            &key(1),
            &key(3),
        );
        command(&mut node, Command::SubmitTransaction(child.clone()));
        let listed = node.pool_transactions();
        assert_eq!(
            listed.iter().map(|t| t.txid).collect::<Vec<_>>(),
            vec![parent.txid(), child.txid()]
        );
        assert_eq!(node.pool_txids(), vec![parent.txid(), child.txid()]);
        assert!(listed.iter().all(|t| t.finality == PoolFinality::Certified));
        assert_eq!(listed[0].depends, vec![]);
        assert_eq!(listed[1].depends, vec![parent.txid()]);
        // The node forgets first sight at certification (it fed the latency metric).
        assert_eq!(listed[1].first_seen_ms, None);
    }

    #[test]
    fn sync_status_follows_peer_announcements() {
        let (mut node, _) = open(false);
        let idle = SyncStatus {
            height: Height(0),
            target_height: Height(0),
            peers_known: 0,
            in_flight: None,
        };
        assert_eq!(node.sync_status(), idle);
        let peer = PeerId(7);
        node.handle(Input::PeerConnected { peer }).unwrap();
        assert_eq!(
            node.sync_status(),
            idle,
            "connected, but no tip announced yet"
        );
        let heartbeat = NodeMessage::Heartbeat {
            height: Height(50),
            hash: BlockHash(Hash32::ZERO),
        };
        node.handle(Input::PeerMessage {
            peer,
            bytes: heartbeat.to_bytes(),
        })
        .unwrap();
        assert_eq!(
            node.sync_status(),
            SyncStatus {
                height: Height(0),
                target_height: Height(50),
                peers_known: 1,
                in_flight: Some(Height(1)),
            }
        );
        node.handle(Input::PeerDisconnected { peer }).unwrap();
        assert_eq!(
            node.sync_status(),
            idle,
            "a departed peer's tip no longer counts"
        );
    }
}
