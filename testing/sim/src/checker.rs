//! The architecture's invariants, checked as the simulation runs.

use std::collections::{BTreeMap, BTreeSet};

use timecoin_consensus::{BftMessage, FinalityCertificate, signing::view_change_digest};
use timecoin_ledger::{ChainParams, RewardShare, split_reward};
use timecoin_node::NodeMessage;
use timecoin_primitives::{
    Address, Amount, Block, BlockHash, Epoch, Hash32, Height, OutPoint, PublicKey, Transaction,
    TxKind, TxOut, Txid, encode,
};
use timecoin_storage::{ChainStore, ConsensusLog, LogKey};

/// A broken invariant, with the simulated time it was seen at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation(pub String);

/// What the checkers remember across the whole run (across crashes too: the point of the
/// signing checks is that a restarted node must not contradict its earlier self).
#[derive(Debug, Default)]
pub struct Checker {
    /// Height → the block committed there (by anyone).
    committed: BTreeMap<Height, BlockHash>,
    /// Input → the certified transaction spending it.
    certified_spends: BTreeMap<OutPoint, Txid>,
    /// Input → the committed transaction spending it.
    block_spends: BTreeMap<OutPoint, Txid>,
    /// Certified transactions.
    pub certified: BTreeSet<Txid>,
    /// (signer, height, view, phase) → digest, for keys that must never equivocate.
    statements: BTreeMap<(PublicKey, u64, u32, u8), Hash32>,
    /// (voter, epoch, input) → txid, for keys that must never vote for conflicting spends.
    tx_votes: BTreeMap<(PublicKey, Epoch, OutPoint), Txid>,
    /// Every transaction body the simulation created, by txid.
    pub bodies: BTreeMap<Txid, Transaction>,
    /// (epoch, txid) → distinct valid voters and their weight.
    tallies: BTreeMap<(Epoch, Txid), (BTreeSet<PublicKey>, u64)>,
    /// Node key → registered at → (tier weight, collateral owner), read from genesis and every
    /// committed block: the checker's own view of who a reward should pay, kept apart from the
    /// node's committee code.
    registrations: BTreeMap<PublicKey, BTreeMap<Height, (u64, Address)>>,
}

type Statement = (PublicKey, u64, u32, u8, Hash32);

/// The statement a message carries, if any. A compact proposal is signed by whoever sends it
/// (its header names the block's original proposer, which differs when a prepared block is
/// re-proposed in a later view), and signs the same block hash (its header's) as the whole one.
fn statement_in(message: &NodeMessage, sender: PublicKey) -> Option<Statement> {
    match message {
        NodeMessage::Bft(bft) => statement_of(bft),
        NodeMessage::CompactProposal(proposal) => Some((
            sender,
            proposal.height.get(),
            proposal.view,
            1,
            proposal.block_hash().0,
        )),
        _ => None,
    }
}

/// The signer, slot and digest of a block statement. None for a whole proposal: it goes on the
/// wire only as the answer to `GetProposal`, which serves the leader's proposal whoever
/// answers, so it is not the sender's statement. A node's own proposals always leave as
/// compact ones first, which [`statement_in`] checks.
fn statement_of(message: &BftMessage) -> Option<Statement> {
    match message {
        BftMessage::Proposal(_) => None,
        BftMessage::Prepare(vote) => Some((
            vote.voter,
            vote.height.get(),
            vote.view,
            2,
            vote.block_hash.0,
        )),
        BftMessage::Commit(vote) => Some((
            vote.voter,
            vote.height.get(),
            vote.view,
            3,
            vote.block_hash.0,
        )),
        BftMessage::ViewChange(message) => {
            let change = &message.view_change;
            Some((
                change.voter,
                change.height.get(),
                change.view,
                0,
                view_change_digest(change.prepared),
            ))
        }
    }
}

impl Checker {
    /// Records a transaction the workload created.
    pub fn learn(&mut self, transaction: &Transaction) {
        self.bodies.insert(transaction.txid(), transaction.clone());
    }

    /// A message `key`'s node is about to send. `honest` keys must never contradict
    /// themselves; `store` is the sender's disk, which must already hold what the message
    /// depends on (persistence before send); `current_epoch` is the sender's finality epoch and
    /// `tip` its committed height.
    pub fn on_send<S: ConsensusLog + ChainStore>(
        &mut self,
        key: Option<PublicKey>,
        honest: bool,
        store: &S,
        current_epoch: Epoch,
        tip: Height,
        message: &NodeMessage,
    ) -> Result<(), Violation> {
        let Some(key) = key else { return Ok(()) };
        match message {
            NodeMessage::Bft(_) | NodeMessage::CompactProposal(_) => {
                let Some((signer, height, view, phase, digest)) = statement_in(message, key) else {
                    return Ok(());
                };
                if signer != key {
                    return Ok(());
                }
                let record = store
                    .record(&LogKey::BlockVote {
                        height: Height(height),
                        view,
                        phase,
                    })
                    .map_err(|e| Violation(format!("reading the log: {e}")))?;
                // A statement for a height the sender has since committed may leave in the
                // step that committed it, after an epoch change pruned its record: harmless,
                // since the node never signs at a committed height again.
                if height >= tip.get() && record.map(|r| r.value.to_vec()) != Some(encode(&digest))
                {
                    return Err(Violation(format!(
                        "persist-before-send broken: {key} sent a statement at height {height} \
                         view {view} phase {phase} that its disk does not hold"
                    )));
                }
                if honest
                    && let Some(previous) =
                        self.statements.insert((key, height, view, phase), digest)
                    && previous != digest
                {
                    return Err(Violation(format!(
                        "honest masternode {key} signed two different statements for height \
                         {height} view {view} phase {phase}"
                    )));
                }
            }
            NodeMessage::TxVotes(votes) => {
                let voted = votes
                    .iter()
                    .filter(|vote| vote.voter == key)
                    .flat_map(|vote| vote.txids.iter().map(|txid| (vote.epoch, *txid)));
                for (epoch, txid) in voted {
                    let Some(body) = self.bodies.get(&txid) else {
                        continue;
                    };
                    for input in &body.body.inputs {
                        // A vote of an epoch that has ended may leave in the same step that
                        // ended it, after its lock was released: harmless, since the node
                        // never signs for that epoch again.
                        if epoch < current_epoch {
                            continue;
                        }
                        let record = store
                            .record(&LogKey::InputLock {
                                epoch,
                                outpoint: input.prevout,
                            })
                            .map_err(|e| Violation(format!("reading the log: {e}")))?;
                        // A vote for a transaction that a block committed in the same step (the
                        // vote was resent earlier in it) may leave after the block freed its
                        // locks: harmless, since no transaction conflicting with one in the
                        // chain can ever be valid to this node again. Looked up only when the
                        // lock is missing.
                        if record.map(|r| r.value.to_vec()) != Some(encode(&txid))
                            && store
                                .transaction_location(&txid)
                                .map_err(|e| Violation(format!("reading the chain: {e}")))?
                                .is_none()
                        {
                            return Err(Violation(format!(
                                "persist-before-send broken: {key} sent a vote for {} (epoch {}) \
                                 whose lock on {:?} is not on its disk",
                                txid,
                                epoch.get(),
                                input.prevout
                            )));
                        }
                        if honest
                            && let Some(previous) =
                                self.tx_votes.insert((key, epoch, input.prevout), txid)
                            && previous != txid
                        {
                            return Err(Violation(format!(
                                "honest masternode {key} signed two conflicting transactions \
                                 ({previous} and {}) in epoch {}",
                                txid,
                                epoch.get()
                            )));
                        }
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// A valid vote seen on the wire (signature and membership checked by the caller, with
    /// the voter's weight in the vote's epoch). A certificate exists as soon as valid votes
    /// reach the quorum, whether or not any node assembles it, so the checker tallies votes
    /// itself rather than trusting nodes to announce certificates.
    pub fn on_vote(
        &mut self,
        epoch: Epoch,
        txid: Txid,
        voter: PublicKey,
        weight: u64,
        quorum: u64,
    ) -> Result<(), Violation> {
        let tally = self.tallies.entry((epoch, txid)).or_default();
        if tally.0.insert(voter) {
            tally.1 += weight;
        }
        if tally.1 >= quorum
            && let Some(transaction) = self.bodies.get(&txid).cloned()
        {
            self.on_certified(&transaction)?;
        }
        Ok(())
    }

    /// Whether this exact vote was already checked.
    pub fn vote_seen(&self, epoch: Epoch, txid: Txid, voter: PublicKey) -> bool {
        self.tallies
            .get(&(epoch, txid))
            .is_some_and(|tally| tally.0.contains(&voter))
    }

    /// A certificate verified against its epoch's committee.
    pub fn on_certificate(
        &mut self,
        transaction: &Transaction,
        certificate: &FinalityCertificate,
    ) -> Result<(), Violation> {
        if certificate.txid != transaction.txid() {
            return Ok(());
        }
        self.on_certified(transaction)
    }

    /// `transaction` holds a finality certificate.
    pub fn on_certified(&mut self, transaction: &Transaction) -> Result<(), Violation> {
        let txid = transaction.txid();
        if !self.certified.insert(txid) {
            return Ok(());
        }
        for input in &transaction.body.inputs {
            if let Some(other) = self.certified_spends.insert(input.prevout, txid)
                && other != txid
            {
                return Err(Violation(format!(
                    "two conflicting transactions are both certified: {other} and {txid}"
                )));
            }
            if let Some(other) = self.block_spends.get(&input.prevout)
                && *other != txid
            {
                return Err(Violation(format!(
                    "certified {txid} conflicts with committed {other}"
                )));
            }
        }
        Ok(())
    }

    /// A node committed `block` and its store is now at it: agreement, no conflict with a
    /// certified transaction, conservation of value and the UTXO commitment.
    pub fn on_commit<S: ChainStore>(
        &mut self,
        block: &Block,
        store: &S,
        genesis_total: u128,
        params: &timecoin_ledger::ChainParams,
        deep: bool,
        verify_set: impl FnOnce(&S) -> Result<u128, String>,
    ) -> Result<(), Violation> {
        let height = block.header.height;
        let hash = block.hash();
        match self.committed.insert(height, hash) {
            Some(previous) if previous != hash => {
                return Err(Violation(format!(
                    "two different blocks committed at height {}: {previous} and {hash}",
                    height.get()
                )));
            }
            Some(_) => {}
            // The first commit of this height (agreement makes later ones the same block).
            None => self.check_reward(block, store, params)?,
        }
        for transaction in block.transactions.iter().skip(1) {
            let txid = transaction.txid();
            for input in &transaction.body.inputs {
                if let Some(other) = self.certified_spends.get(&input.prevout)
                    && *other != txid
                {
                    return Err(Violation(format!(
                        "block {} contains {txid}, which conflicts with certified {other}",
                        height.get()
                    )));
                }
                self.block_spends.insert(input.prevout, txid);
            }
        }
        if deep {
            // The store may already be past `block` (a sync response applies several blocks
            // in one step): check it at its own tip.
            let tip = store.tip().map_or(height, |tip| tip.height);
            let issued: u128 = (1..=tip.get())
                .map(|h| u128::from(params.subsidy(Height(h)).units()))
                .sum();
            let total = verify_set(store).map_err(Violation)?;
            if total != genesis_total + issued {
                return Err(Violation(format!(
                    "value not conserved at height {}: UTXO total {total}, expected genesis \
                     {genesis_total} + rewards {issued}",
                    tip.get()
                )));
            }
        }
        Ok(())
    }

    /// Records the registrations `block` (committed at its height) makes.
    fn learn_registrations(&mut self, block: &Block, params: &ChainParams) {
        for transaction in block.transactions.iter() {
            if let TxKind::RegisterMasternode {
                collateral_output,
                node_key,
                tier,
                ..
            } = &transaction.body.kind
                && let Some(output) = transaction.body.outputs.get(*collateral_output as usize)
            {
                self.registrations.entry(*node_key).or_default().insert(
                    block.header.height,
                    (params.tier(*tier).weight, output.address),
                );
            }
        }
    }

    /// The reward rule (ADR 0009): block `h` ≥ 2 carries the certificate of block `h − 1`, and
    /// its reward pays subsidy plus fees split by [`split_reward`] over that certificate's
    /// signers, weighted by their tier and paid to their collateral owners as registered by the
    /// end of the epoch before the parent's; block 1 pays its proposer alone. Called once per
    /// height, on its first commit, when every lower height has been seen committed.
    fn check_reward<S: ChainStore>(
        &mut self,
        block: &Block,
        store: &S,
        params: &ChainParams,
    ) -> Result<(), Violation> {
        let height = block.header.height;
        let read = |e: timecoin_storage::StorageError| Violation(format!("reading the store: {e}"));
        if self.registrations.is_empty() {
            let genesis = store
                .block_hash(Height(0))
                .map_err(read)?
                .and_then(|hash| store.block(&hash).transpose())
                .transpose()
                .map_err(read)?
                .ok_or_else(|| Violation("the genesis block is not stored".into()))?;
            self.learn_registrations(&genesis, params);
        }
        let signers: Vec<PublicKey> = match block.parent_commit.as_deref() {
            None if height.get() <= 1 => vec![block.header.proposer],
            Some(certificate)
                if height.get() >= 2
                    && certificate.height.get() + 1 == height.get()
                    && certificate.block_hash == block.header.previous_hash =>
            {
                certificate.votes.iter().map(|vote| vote.voter).collect()
            }
            _ => {
                return Err(Violation(format!(
                    "block {} carries a wrong parent certificate",
                    height.get()
                )));
            }
        };
        // Registrations count from the epoch after the one they were made in: the committee of
        // epoch e is the registry at the last block of epoch e − 1.
        let epoch = params.epoch_of(Height(height.get().saturating_sub(1).max(1)));
        let boundary = (epoch.get() * params.epoch_length_blocks.max(1)).saturating_sub(1);
        let mut shares = Vec::with_capacity(signers.len());
        for signer in signers {
            let Some((_, &(weight, owner))) = self
                .registrations
                .get(&signer)
                .and_then(|by_height| by_height.range(..=Height(boundary)).next_back())
            else {
                return Err(Violation(format!(
                    "block {} pays a reward share to {signer}, which was not registered in time",
                    height.get()
                )));
            };
            shares.push(RewardShare {
                node_key: signer,
                weight,
                owner,
            });
        }
        let outputs: &[TxOut] = block
            .transactions
            .first()
            .map_or(&[], |reward| &reward.body.outputs);
        let paid = Amount::checked_sum(outputs.iter().map(|output| output.amount))
            .ok_or_else(|| Violation("a reward overflows".into()))?;
        // The total is held to subsidy plus fees by the conservation check; here, who gets it.
        let expected = split_reward(paid, &shares)
            .map_err(|e| Violation(format!("splitting the reward: {e}")))?;
        if expected != outputs {
            return Err(Violation(format!(
                "block {} pays its reward as {outputs:?}, not split by weight over the parent \
                 certificate's signers as {expected:?}",
                height.get()
            )));
        }
        self.learn_registrations(block, params);
        Ok(())
    }

    /// The committed block at `height`, if any node committed one.
    pub fn committed_at(&self, height: Height) -> Option<BlockHash> {
        self.committed.get(&height).copied()
    }

    /// The highest committed height.
    pub fn highest(&self) -> Height {
        self.committed
            .keys()
            .next_back()
            .copied()
            .unwrap_or(Height(0))
    }
}

/// The sum of a list of amounts, wide.
pub fn total(amounts: impl IntoIterator<Item = Amount>) -> u128 {
    amounts.into_iter().map(|a| u128::from(a.units())).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use timecoin_ledger::{
        BlockTemplate, GenesisAllocation, GenesisMasternode, GenesisSpec, ParamOverrides,
        build_block, build_genesis,
    };
    use timecoin_primitives::{BoundedVec, CommitCertificate, CommitVote, Network, SecretKey};
    use timecoin_storage::{ChainDb, MemoryBackend, StoreConfig};

    const NETWORK: Network = Network::Devnet;

    fn key(seed: u8) -> SecretKey {
        SecretKey::from_bytes([seed; 32])
    }

    fn address(seed: u8) -> Address {
        Address::from_public_key(&key(seed).public_key())
    }

    /// A store at genesis with masternodes of node keys 200 (Bronze, owner 201) and 210 (Silver,
    /// owner 211).
    fn chain() -> (ChainDb<MemoryBackend>, Block, ChainParams) {
        let masternode = |node: u8, owner: u8, tier: &str| GenesisMasternode {
            owner: address(owner).encode(NETWORK),
            node_key: key(node).public_key().to_string(),
            tier: tier.into(),
            network_address: "/ip4/127.0.0.1/tcp/24100".into(),
        };
        let spec = GenesisSpec {
            network: "devnet".into(),
            timestamp_ms: 1_767_225_600_000,
            allocations: vec![GenesisAllocation {
                address: address(1).encode(NETWORK),
                amount: "5000".into(),
            }],
            masternodes: vec![
                masternode(200, 201, "bronze"),
                masternode(210, 211, "silver"),
            ],
            overrides: Some(ParamOverrides {
                epoch_length_blocks: Some(4),
                ..ParamOverrides::default()
            }),
        };
        let (genesis, params) = build_genesis(&spec).unwrap();
        let mut store = ChainDb::open(
            MemoryBackend::new(),
            StoreConfig::new(NETWORK, genesis.hash()),
        )
        .unwrap();
        timecoin_node::init_store(&mut store, &genesis, &params).unwrap();
        (store, genesis, params)
    }

    /// A block at the height after `parent`, carrying `parent_commit` and paying
    /// `pay(allowed)`. It is built on genesis's state and then relabelled: the reward rule
    /// looks only at the block and the registrations, not at the UTXO set.
    fn block(
        store: &ChainDb<MemoryBackend>,
        params: &ChainParams,
        parent: &Block,
        parent_commit: Option<CommitCertificate>,
        pay: impl FnOnce(Amount) -> Vec<TxOut>,
    ) -> Block {
        let genesis = store.header(&store.tip().unwrap().hash).unwrap().unwrap();
        let mut block = build_block(
            BlockTemplate {
                timestamp: genesis.timestamp,
                parent: genesis,
                proposer: key(200).public_key(),
                transactions: Vec::new(),
                parent_commit: None,
            },
            pay,
            store,
            store.utxo_commitment(),
            store,
            params,
        )
        .unwrap();
        block.header.height = Height(parent.header.height.get() + 1);
        block.header.previous_hash = parent.hash();
        block.parent_commit = parent_commit.map(Box::new);
        block
    }

    fn commit(
        checker: &mut Checker,
        block: &Block,
        store: &ChainDb<MemoryBackend>,
        params: &ChainParams,
    ) -> Result<(), Violation> {
        checker.on_commit(block, store, 0, params, false, |_| Ok(0))
    }

    #[test]
    fn rewards_must_follow_the_parent_certificate_by_weight() {
        let (store, genesis, params) = chain();
        // Block 1 pays its proposer's owner alone; anything else is caught.
        let pay_to = |to: Address| {
            move |allowed: Amount| {
                vec![TxOut {
                    amount: allowed,
                    address: to,
                }]
            }
        };
        let greedy = block(&store, &params, &genesis, None, pay_to(address(200)));
        let error = commit(&mut Checker::default(), &greedy, &store, &params).unwrap_err();
        assert!(error.0.contains("not split by weight"), "{error:?}");
        let mut checker = Checker::default();
        let first = block(&store, &params, &genesis, None, pay_to(address(201)));
        commit(&mut checker, &first, &store, &params).unwrap();

        // Block 2 carries the certificate of block 1, signed by both: Bronze (weight 1) and
        // Silver (weight 10) share the reward 1 : 10, the remainder to the lower node key.
        let votes = [200u8, 210]
            .map(|seed| CommitVote {
                voter: key(seed).public_key(),
                signature: key(seed).sign(b"the checker does not verify signatures"),
            })
            .into_iter()
            .collect::<Vec<_>>();
        let certificate = CommitCertificate {
            height: Height(1),
            view: 0,
            block_hash: first.hash(),
            votes: BoundedVec::new(votes).unwrap(),
        };
        let shares = [
            RewardShare {
                node_key: key(200).public_key(),
                weight: 1,
                owner: address(201),
            },
            RewardShare {
                node_key: key(210).public_key(),
                weight: 10,
                owner: address(211),
            },
        ];
        let honest = |allowed| split_reward(allowed, &shares).unwrap();
        let second = block(&store, &params, &first, Some(certificate.clone()), honest);
        let paid: Vec<Address> = second.transactions[0]
            .body
            .outputs
            .iter()
            .map(|o| o.address)
            .collect();
        assert_eq!(paid.len(), 2, "both signers are paid");

        // Paying only the heavier signer, or the right split to someone else, is caught.
        let heavy_only = block(
            &store,
            &params,
            &first,
            Some(certificate.clone()),
            pay_to(address(211)),
        );
        let mut fork = Checker::default();
        commit(&mut fork, &first, &store, &params).unwrap();
        assert!(commit(&mut fork, &heavy_only, &store, &params).is_err());
        // A certificate for another block is caught too.
        let mut wrong = certificate.clone();
        wrong.block_hash = genesis.hash();
        let misplaced = block(&store, &params, &first, Some(wrong), honest);
        let mut fork = Checker::default();
        commit(&mut fork, &first, &store, &params).unwrap();
        assert!(commit(&mut fork, &misplaced, &store, &params).is_err());

        commit(&mut checker, &second, &store, &params).unwrap();
    }
}
