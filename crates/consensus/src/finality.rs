//! Transaction finality: input locks, votes and finality certificates.
//!
//! A masternode that is handed a valid transaction locks its inputs for the epoch and, once the
//! lock is durable, votes for it. Votes from the quorum weight form a [`FinalityCertificate`].
//! One signature covers many transactions: a [`VoteBatch`] signs the root of a Merkle tree over
//! its txids ([`vote_tree`]), and a certificate carries, per voter, that signature and the path
//! from the transaction to the root ([`VoteProof`]). Under load a node signs one batch per step
//! and checks one signature per batch it receives, instead of one per transaction.
//! Because an honest masternode votes for at most one transaction per input per epoch, and any
//! two quorums share more than the faulty weight, two conflicting transactions can never both be
//! certified.
//!
//! Persistence before send: [`FinalityEffect::PersistLock`] asks the runtime to store the lock;
//! the engine signs and emits the vote only when the runtime answers
//! [`FinalityInput::LockPersisted`]. The runtime can therefore batch many lock writes into one
//! fsync (group commit) without ever sending a vote whose lock could be lost in a crash.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use borsh::{BorshDeserialize, BorshSerialize};
use timecoin_primitives::block::MAX_COMMITTEE_SIZE;
use timecoin_primitives::transaction::MAX_INPUTS;
use timecoin_primitives::{
    BoundedVec, Epoch, FastMap, FastSet, Hash32, Network, OutPoint, PublicKey, SecretKey,
    Signature, Txid,
};

use timecoin_primitives::keys::BatchVerifier;

use crate::committee::{Committee, Weight};
use crate::error::ConsensusError;
use crate::evidence::Evidence;
use crate::signing::{
    MAX_VOTE_PATH, MAX_VOTE_TXIDS, transaction_vote_message, verify_quorum_signatures, vote_path,
    vote_root, vote_tree,
};

/// Most transactions with votes in flight per epoch (known or not).
pub const MAX_TRACKED_TRANSACTIONS: usize = 100_000;
/// Most tracked transactions whose body we have not seen: anyone in the committee can sign
/// votes for made-up txids, so these get a tighter budget.
pub const MAX_UNKNOWN_TRANSACTIONS: usize = 10_000;
/// Most votes one voter may have pending on transactions whose body we have not seen.
pub const MAX_UNKNOWN_VOTES_PER_VOTER: usize = 1_000;
/// Most individual votes held across all tallies.
pub const MAX_VOTE_RECORDS: usize = 2_000_000;
/// Most (input, voter) records kept to detect conflicting votes.
pub const MAX_SPEND_RECORDS: usize = 4_000_000;
/// Most transactions this node holds locks for in one epoch.
pub const MAX_LOCKED_TRANSACTIONS: usize = 200_000;
/// Most (voter, input) conflicts reported as evidence per epoch; every conflicting vote is
/// still refused beyond it.
pub const MAX_REPORTED_CONFLICTS: usize = 100_000;
/// Most vote signatures [`FinalityEngine::handle_votes`] checks as one batch.
pub const MAX_VOTE_BATCH: usize = 1_024;
/// How many certified or included txids are remembered, so that late votes for them are
/// dropped instead of starting a new tally.
pub const MAX_RECENTLY_SETTLED: usize = 200_000;

/// One masternode's vote that every transaction in `txids` should be final: one signature over
/// the root of [`vote_tree`]`(txids)`.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct VoteBatch {
    /// The epoch; a vote is only valid in it.
    pub epoch: Epoch,
    /// The masternode's node key.
    pub voter: PublicKey,
    /// The transactions voted for; at least one.
    pub txids: BoundedVec<Txid, MAX_VOTE_TXIDS>,
    /// Signature over [`transaction_vote_message`] of the tree's root.
    pub signature: Signature,
}

impl VoteBatch {
    /// Signs a vote for `txids` (at most [`MAX_VOTE_TXIDS`], at least one).
    pub fn sign(network: Network, epoch: Epoch, txids: Vec<Txid>, key: &SecretKey) -> VoteBatch {
        VoteBatch::sign_tree(network, epoch, txids, key).0
    }

    /// [`VoteBatch::sign`], also returning the tree it signed the root of.
    fn sign_tree(
        network: Network,
        epoch: Epoch,
        txids: Vec<Txid>,
        key: &SecretKey,
    ) -> (VoteBatch, Vec<Vec<Hash32>>) {
        let levels = vote_tree(&txids);
        let root = levels.last().expect("at least one txid")[0];
        let batch = VoteBatch {
            epoch,
            voter: key.public_key(),
            txids: BoundedVec::new(txids).expect("at most MAX_VOTE_TXIDS"),
            signature: key.sign(&transaction_vote_message(network, epoch, &root)),
        };
        (batch, levels)
    }

    /// Whether the signature is the voter's over these txids (membership is not checked).
    pub fn verify(&self, network: Network) -> bool {
        let Some(root) = vote_tree(&self.txids).last().map(|level| level[0]) else {
            return false;
        };
        self.voter
            .verify(
                &transaction_vote_message(network, self.epoch, &root),
                &self.signature,
            )
            .is_ok()
    }
}

/// A voter's signature over some batch's root, and the path from one transaction to that root:
/// proof that the voter voted for the transaction.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct VoteProof {
    /// The batch signature.
    pub signature: Signature,
    /// The siblings from the transaction's leaf up to the root ([`vote_path`]).
    pub path: BoundedVec<Hash32, MAX_VOTE_PATH>,
}

impl VoteProof {
    /// The message the signature must cover for this to be a vote for `txid` in `epoch`.
    pub fn message(&self, network: Network, epoch: Epoch, txid: &Txid) -> [u8; 32] {
        transaction_vote_message(network, epoch, &vote_root(txid, &self.path))
    }
}

/// One voter's part of a [`FinalityCertificate`].
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct FinalityVote {
    /// The masternode's node key.
    pub voter: PublicKey,
    /// Its vote for the certificate's transaction.
    pub proof: VoteProof,
}

/// A lock this node holds: what the runtime stores before the vote may be sent, and hands back
/// to [`FinalityEngine::restore`] after a restart.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct PersistedLock {
    /// The epoch the lock belongs to; it lapses at the epoch's end.
    pub epoch: Epoch,
    /// The transaction voted for.
    pub txid: Txid,
    /// Its inputs, sorted.
    pub inputs: Vec<OutPoint>,
}

/// Votes from at least the quorum weight for one transaction in one epoch: anyone with the
/// epoch's committee can check that the transaction is final.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct FinalityCertificate {
    /// The epoch of the votes.
    pub epoch: Epoch,
    /// The certified transaction.
    pub txid: Txid,
    /// The votes, strictly ascending by voter.
    pub votes: BoundedVec<FinalityVote, MAX_COMMITTEE_SIZE>,
}

impl FinalityCertificate {
    /// Checks the certificate against the committee of its epoch. Returns the signed weight.
    pub fn verify(&self, committee: &Committee) -> Result<Weight, ConsensusError> {
        if self.epoch != committee.epoch() {
            return Err(ConsensusError::WrongEpoch {
                expected: committee.epoch(),
                got: self.epoch,
            });
        }
        let network = committee.network();
        verify_quorum_signatures(
            committee,
            self.votes.iter().map(|vote| {
                (
                    vote.voter,
                    vote.proof.message(network, self.epoch, &self.txid),
                    vote.proof.signature,
                )
            }),
        )
    }
}

/// What the node tells the finality engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FinalityInput {
    /// A transaction the node has validated against its UTXO view (the engine does not check
    /// validity): its inputs let the engine lock, vote, and spot conflicting votes.
    Transaction {
        /// The txid.
        txid: Txid,
        /// The outputs it spends.
        inputs: Vec<OutPoint>,
    },
    /// The runtime has durably stored the lock requested by [`FinalityEffect::PersistLock`].
    /// The vote it enables is signed at the next [`FinalityEngine::sign_votes`], together with
    /// every other vote ready by then.
    LockPersisted {
        /// The lock's epoch.
        epoch: Epoch,
        /// The lock's transaction.
        txid: Txid,
    },
    /// The transaction is in a committed block: the UTXO set now guards its inputs, so its
    /// bookkeeping and locks can go.
    Included {
        /// The transaction.
        txid: Txid,
    },
    /// A new epoch began; `Committee` is its committee. Unresolved locks lapse.
    NewEpoch(Committee),
}

/// The result of [`FinalityEngine::handle_votes`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VoteBatchOutcome {
    /// The effects, in order, as if the votes had been handled one by one.
    pub effects: Vec<FinalityEffect>,
    /// The votes refused, by voter, and why ([`ConsensusError::is_peer_fault`] says whether
    /// to blame whoever sent them).
    pub rejected: Vec<(PublicKey, ConsensusError)>,
}

/// What the finality engine asks of the node. Effects are listed in the order to perform them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FinalityEffect {
    /// Store this lock durably, then answer [`FinalityInput::LockPersisted`].
    PersistLock(PersistedLock),
    /// Gossip our vote (the locks of all its transactions are already durable).
    BroadcastVotes(VoteBatch),
    /// The transaction is final: its outputs may be spent at once.
    Certified(FinalityCertificate),
    /// We will not vote for this transaction (it conflicts with an input we locked for another
    /// one this epoch). Not a fault of whoever relayed it; the node can tell the client.
    Refused {
        /// The transaction.
        txid: Txid,
        /// Why.
        error: ConsensusError,
    },
    /// A masternode voted for two transactions that spend the same input.
    Evidence(Evidence),
    /// Delete persisted locks of epochs before this one.
    ReleaseLocksBefore(Epoch),
}

/// A verified batch signature with its Merkle tree, shared by the votes it carries so that
/// each holds a pointer rather than its own path.
#[derive(Debug)]
struct SignedBatch {
    signature: Signature,
    levels: Vec<Vec<Hash32>>,
}

/// One verified vote: the batch it came in and the transaction's position there.
#[derive(Clone, Debug)]
struct VoteRef {
    batch: Arc<SignedBatch>,
    index: u32,
}

impl VoteRef {
    fn proof(&self) -> VoteProof {
        VoteProof {
            signature: self.batch.signature,
            path: BoundedVec::new(vote_path(&self.batch.levels, self.index as usize))
                .expect("the tree of at most MAX_VOTE_TXIDS leaves is that shallow"),
        }
    }
}

#[derive(Clone, Debug, Default)]
struct Tally {
    /// `None` until the node hands us the transaction.
    inputs: Option<Vec<OutPoint>>,
    votes: BTreeMap<PublicKey, VoteRef>,
    weight: u64,
}

#[derive(Clone, Debug)]
struct OwnLock {
    inputs: Vec<OutPoint>,
    durable: bool,
}

/// The transaction-finality state machine of one node, for the current epoch.
#[derive(Debug)]
pub struct FinalityEngine {
    key: Option<SecretKey>,
    committee: Committee,
    /// Inputs this node locked this epoch, and for which transaction.
    locks: FastMap<OutPoint, Txid>,
    own_locks: FastMap<Txid, OwnLock>,
    tallies: FastMap<Txid, Tally>,
    unknown_tallies: usize,
    unknown_votes: FastMap<PublicKey, usize>,
    vote_records: usize,
    /// (input, voter) → the vote that voter cast for a transaction spending it.
    spends: FastMap<(OutPoint, PublicKey), (Txid, VoteRef)>,
    reported: FastSet<(PublicKey, OutPoint)>,
    settled: FastSet<Txid>,
    settled_order: VecDeque<Txid>,
    /// Own locks made durable since the last [`FinalityEngine::sign_votes`].
    unsigned: Vec<Txid>,
}

impl FinalityEngine {
    /// An engine for `committee`'s epoch. `key` is the node key if this node is a masternode;
    /// without one the engine only collects votes and certificates.
    pub fn new(committee: Committee, key: Option<SecretKey>) -> FinalityEngine {
        FinalityEngine {
            key,
            committee,
            locks: FastMap::default(),
            own_locks: FastMap::default(),
            tallies: FastMap::default(),
            unknown_tallies: 0,
            unknown_votes: FastMap::default(),
            vote_records: 0,
            spends: FastMap::default(),
            reported: FastSet::default(),
            settled: FastSet::default(),
            settled_order: VecDeque::new(),
            unsigned: Vec::new(),
        }
    }

    /// An engine restored after a restart from the locks the runtime persisted. Locks of the
    /// current epoch are re-established and their votes signed and sent again (a new batch may
    /// group them differently, but it votes for the same transactions, so it contradicts
    /// nothing sent before the crash); older locks are released.
    pub fn restore(
        committee: Committee,
        key: Option<SecretKey>,
        persisted: Vec<PersistedLock>,
    ) -> Result<(FinalityEngine, Vec<FinalityEffect>), ConsensusError> {
        let epoch = committee.epoch();
        let mut engine = FinalityEngine::new(committee, key);
        let mut effects = vec![FinalityEffect::ReleaseLocksBefore(epoch)];
        for lock in persisted.into_iter().filter(|lock| lock.epoch == epoch) {
            if engine.own_locks.len() >= MAX_LOCKED_TRANSACTIONS {
                return Err(ConsensusError::Full {
                    what: "locked transactions",
                    limit: MAX_LOCKED_TRANSACTIONS,
                });
            }
            for input in &lock.inputs {
                engine.locks.insert(*input, lock.txid);
            }
            engine.learn_inputs(lock.txid, lock.inputs.clone(), &mut effects)?;
            engine.own_locks.insert(
                lock.txid,
                OwnLock {
                    inputs: lock.inputs,
                    durable: true,
                },
            );
            engine.unsigned.push(lock.txid);
        }
        effects.extend(engine.sign_votes());
        engine.check_invariants();
        Ok((engine, effects))
    }

    /// The current committee.
    pub fn committee(&self) -> &Committee {
        &self.committee
    }

    /// How many transactions have votes in flight (tallies not yet certified or included).
    pub fn tracked_transactions(&self) -> usize {
        self.tallies.len()
    }

    /// How many individual votes are held.
    pub fn held_votes(&self) -> usize {
        self.vote_records
    }

    /// How many (input, voter) records are held for conflict detection.
    pub fn spend_records(&self) -> usize {
        self.spends.len()
    }

    /// How many inputs this node has locked this epoch.
    pub fn locked_inputs(&self) -> usize {
        self.locks.len()
    }

    /// The transaction that holds the lock on `outpoint`, if any.
    pub fn lock_holder(&self, outpoint: &OutPoint) -> Option<Txid> {
        self.locks.get(outpoint).copied()
    }

    /// Processes one input. `Err` means the input was rejected and changed nothing;
    /// [`ConsensusError::is_peer_fault`] says whether to penalise its sender.
    pub fn handle(&mut self, input: FinalityInput) -> Result<Vec<FinalityEffect>, ConsensusError> {
        let mut effects = Vec::new();
        match input {
            FinalityInput::Transaction { txid, inputs } => {
                self.on_transaction(txid, inputs, &mut effects)?
            }
            FinalityInput::LockPersisted { epoch, txid } => self.on_lock_persisted(epoch, txid)?,
            FinalityInput::Included { txid } => self.on_included(txid),
            FinalityInput::NewEpoch(committee) => {
                if committee.epoch() <= self.committee.epoch() {
                    return Err(ConsensusError::OutOfOrder(
                        "new epoch is not after the current one",
                    ));
                }
                let epoch = committee.epoch();
                *self = FinalityEngine::new(committee, self.key.take());
                effects.push(FinalityEffect::ReleaseLocksBefore(epoch));
            }
        }
        self.check_invariants();
        Ok(effects)
    }

    fn on_transaction(
        &mut self,
        txid: Txid,
        mut inputs: Vec<OutPoint>,
        effects: &mut Vec<FinalityEffect>,
    ) -> Result<(), ConsensusError> {
        inputs.sort();
        inputs.dedup();
        if inputs.is_empty() || inputs.len() > MAX_INPUTS {
            return Err(ConsensusError::UnvotableTransaction(txid));
        }
        if self.settled.contains(&txid) {
            return Ok(());
        }
        let voting = self.is_voting_member();
        let conflict = if voting {
            inputs.iter().find_map(|input| {
                self.locks
                    .get(input)
                    .filter(|holder| **holder != txid)
                    .map(|holder| (*input, *holder))
            })
        } else {
            None
        };
        if voting
            && conflict.is_none()
            && !self.own_locks.contains_key(&txid)
            && self.own_locks.len() >= MAX_LOCKED_TRANSACTIONS
        {
            return Err(ConsensusError::Full {
                what: "locked transactions",
                limit: MAX_LOCKED_TRANSACTIONS,
            });
        }
        // Tracked even when we refuse to vote for it: a double spend is exactly where other
        // masternodes' conflicting votes (evidence) show up.
        self.learn_inputs(txid, inputs.clone(), effects)?;
        if let Some((outpoint, locked_by)) = conflict {
            effects.push(FinalityEffect::Refused {
                txid,
                error: ConsensusError::ConflictsWithLock {
                    outpoint,
                    locked_by,
                },
            });
            return Ok(());
        }
        if voting && !self.own_locks.contains_key(&txid) {
            for input in &inputs {
                self.locks.insert(*input, txid);
            }
            effects.push(FinalityEffect::PersistLock(PersistedLock {
                epoch: self.committee.epoch(),
                txid,
                inputs: inputs.clone(),
            }));
            self.own_locks.insert(
                txid,
                OwnLock {
                    inputs,
                    durable: false,
                },
            );
        }
        Ok(())
    }

    fn is_voting_member(&self) -> bool {
        self.voting_key().is_some()
    }

    /// Records that `txid` spends `inputs`, checking votes already held for it for conflicts.
    fn learn_inputs(
        &mut self,
        txid: Txid,
        inputs: Vec<OutPoint>,
        effects: &mut Vec<FinalityEffect>,
    ) -> Result<(), ConsensusError> {
        match self.tallies.get(&txid) {
            Some(tally) if tally.inputs.is_some() => return Ok(()),
            Some(_) => {}
            None => {
                if self.tallies.len() >= MAX_TRACKED_TRANSACTIONS {
                    return Err(ConsensusError::Full {
                        what: "tracked transactions",
                        limit: MAX_TRACKED_TRANSACTIONS,
                    });
                }
                self.tallies.insert(
                    txid,
                    Tally {
                        inputs: Some(inputs),
                        ..Tally::default()
                    },
                );
                return Ok(());
            }
        }
        let held = self.tallies.get(&txid).map_or(0, |tally| tally.votes.len());
        if self.spends.len() + held * inputs.len() > MAX_SPEND_RECORDS {
            return Err(ConsensusError::Full {
                what: "spend records",
                limit: MAX_SPEND_RECORDS,
            });
        }
        let tally = self.tallies.get_mut(&txid).expect("checked above");
        tally.inputs = Some(inputs.clone());
        self.unknown_tallies -= 1;
        let votes = std::mem::take(&mut tally.votes);
        tally.weight = 0;
        self.vote_records -= votes.len();
        for (voter, vote) in votes {
            decrement(&mut self.unknown_votes, &voter);
            if let Some(evidence) = self.find_conflict(voter, txid, &vote, &inputs) {
                effects.extend(evidence.map(FinalityEffect::Evidence));
                continue;
            }
            self.record_vote(txid, voter, vote, Some(&inputs));
        }
        self.maybe_certify(txid, effects);
        Ok(())
    }

    /// Whether `voter` already voted this epoch for a different transaction spending one of
    /// `inputs`. `Some(evidence)` the first time such a conflict is seen for that (voter,
    /// input), `Some(None)` afterwards; `None` if there is no conflict.
    fn find_conflict(
        &mut self,
        voter: PublicKey,
        txid: Txid,
        vote: &VoteRef,
        inputs: &[OutPoint],
    ) -> Option<Option<Evidence>> {
        for input in inputs {
            if let Some((other, other_vote)) = self.spends.get(&(*input, voter))
                && *other != txid
            {
                // A conflicting vote is never counted; it is reported once per input, and once
                // the report budget is spent only the first reports stand.
                if self.reported.len() >= MAX_REPORTED_CONFLICTS
                    || !self.reported.insert((voter, *input))
                {
                    return Some(None);
                }
                return Some(Some(Evidence::ConflictingTransactionVotes {
                    voter,
                    epoch: self.committee.epoch(),
                    outpoint: *input,
                    first: (*other, other_vote.proof()),
                    second: (txid, vote.proof()),
                }));
            }
        }
        None
    }

    fn record_vote(
        &mut self,
        txid: Txid,
        voter: PublicKey,
        vote: VoteRef,
        inputs: Option<&[OutPoint]>,
    ) {
        let weight = self.committee.weight_of(&voter).0;
        if let Some(inputs) = inputs {
            for input in inputs {
                self.spends.insert((*input, voter), (txid, vote.clone()));
            }
        } else {
            *self.unknown_votes.entry(voter).or_default() += 1;
        }
        let tally = self
            .tallies
            .get_mut(&txid)
            .expect("tally exists before a vote is recorded");
        tally.votes.insert(voter, vote);
        tally.weight += weight;
        self.vote_records += 1;
    }

    /// The checks of a batch that need no signature verification. Returns the positions of
    /// the txids that would count: not settled, not already voted for by this voter, and not
    /// named twice. Empty means the batch is a harmless no-op (a duplicate, say) and its
    /// signature need not be checked.
    fn precheck_votes(&self, batch: &VoteBatch) -> Result<Vec<usize>, ConsensusError> {
        if batch.epoch != self.committee.epoch() {
            return Err(ConsensusError::WrongEpoch {
                expected: self.committee.epoch(),
                got: batch.epoch,
            });
        }
        if self.committee.member(&batch.voter).is_none() {
            return Err(ConsensusError::NotAMember(batch.voter));
        }
        if batch.txids.is_empty() {
            return Err(ConsensusError::EmptyVote(batch.voter));
        }
        let mut named = FastSet::default();
        // Checked before the signature: a duplicate costs a map lookup, not a verification.
        Ok((0..batch.txids.len())
            .filter(|&index| {
                let txid = batch.txids[index];
                named.insert(txid)
                    && !self.settled.contains(&txid)
                    && !self
                        .tallies
                        .get(&txid)
                        .is_some_and(|tally| tally.votes.contains_key(&batch.voter))
            })
            .collect())
    }

    /// Processes received votes, checking one signature per batch, and the signatures of many
    /// batches as one batch verification (about twice as fast as one by one; if it fails, each
    /// is checked alone to find the culprits). The outcome is the same as handling the batches
    /// one by one in order.
    pub fn handle_votes(&mut self, batches: Vec<VoteBatch>) -> VoteBatchOutcome {
        let mut outcome = VoteBatchOutcome::default();
        let network = self.committee.network();
        let mut pending = batches.into_iter().peekable();
        while pending.peek().is_some() {
            // (batch, its tree, the message signed, the positions that count)
            let mut fresh = Vec::new();
            let mut counted = FastSet::default();
            for batch in pending.by_ref().take(MAX_VOTE_BATCH) {
                let positions = match self.precheck_votes(&batch) {
                    Err(error) => {
                        outcome.rejected.push((batch.voter, error));
                        continue;
                    }
                    Ok(positions) => positions,
                };
                // Earlier batches of this chunk may already carry the same votes.
                let positions: Vec<usize> = positions
                    .into_iter()
                    .filter(|&index| counted.insert((batch.txids[index], batch.voter)))
                    .collect();
                if positions.is_empty() {
                    continue;
                }
                let levels = vote_tree(&batch.txids);
                let root = levels.last().expect("prechecked: not empty")[0];
                let message = transaction_vote_message(network, batch.epoch, &root);
                fresh.push((batch, levels, message, positions));
            }
            let mut verifier = BatchVerifier::new();
            for (batch, _, message, _) in &fresh {
                verifier.queue(&batch.voter, message, &batch.signature);
            }
            let all_valid = verifier.verify().is_ok();
            for (batch, levels, message, positions) in fresh {
                if !all_valid && batch.voter.verify(&message, &batch.signature).is_err() {
                    outcome
                        .rejected
                        .push((batch.voter, ConsensusError::BadSignature(batch.voter)));
                    continue;
                }
                let refused = self.count_batch(&batch, levels, positions, &mut outcome.effects);
                outcome
                    .rejected
                    .extend(refused.into_iter().map(|error| (batch.voter, error)));
            }
        }
        self.check_invariants();
        outcome
    }

    fn accept_verified_vote(
        &mut self,
        txid: Txid,
        voter: PublicKey,
        vote: VoteRef,
        effects: &mut Vec<FinalityEffect>,
    ) -> Result<(), ConsensusError> {
        if self.vote_records >= MAX_VOTE_RECORDS {
            return Err(ConsensusError::Full {
                what: "vote records",
                limit: MAX_VOTE_RECORDS,
            });
        }
        let inputs = match self.tallies.get(&txid) {
            Some(tally) => tally.inputs.clone(),
            None => {
                if self.tallies.len() >= MAX_TRACKED_TRANSACTIONS {
                    return Err(ConsensusError::Full {
                        what: "tracked transactions",
                        limit: MAX_TRACKED_TRANSACTIONS,
                    });
                }
                if self.unknown_tallies >= MAX_UNKNOWN_TRANSACTIONS {
                    return Err(ConsensusError::Full {
                        what: "unknown transactions",
                        limit: MAX_UNKNOWN_TRANSACTIONS,
                    });
                }
                None
            }
        };
        match &inputs {
            Some(inputs) => {
                if self.spends.len() + inputs.len() > MAX_SPEND_RECORDS {
                    return Err(ConsensusError::Full {
                        what: "spend records",
                        limit: MAX_SPEND_RECORDS,
                    });
                }
                if let Some(evidence) = self.find_conflict(voter, txid, &vote, inputs) {
                    effects.extend(evidence.map(FinalityEffect::Evidence));
                    return Ok(());
                }
            }
            None => {
                if self.unknown_votes.get(&voter).copied().unwrap_or(0)
                    >= MAX_UNKNOWN_VOTES_PER_VOTER
                {
                    return Err(ConsensusError::Full {
                        what: "votes per voter on unknown transactions",
                        limit: MAX_UNKNOWN_VOTES_PER_VOTER,
                    });
                }
                if let std::collections::hash_map::Entry::Vacant(entry) = self.tallies.entry(txid) {
                    entry.insert(Tally::default());
                    self.unknown_tallies += 1;
                }
            }
        }
        self.record_vote(txid, voter, vote, inputs.as_deref());
        self.maybe_certify(txid, effects);
        Ok(())
    }

    fn maybe_certify(&mut self, txid: Txid, effects: &mut Vec<FinalityEffect>) {
        let Some(tally) = self.tallies.get(&txid) else {
            return;
        };
        if !self.committee.is_quorum(Weight(tally.weight)) {
            return;
        }
        let votes: Vec<FinalityVote> = tally
            .votes
            .iter()
            .map(|(voter, vote)| FinalityVote {
                voter: *voter,
                proof: vote.proof(),
            })
            .collect();
        let votes = BoundedVec::new(votes).expect("one vote per committee member");
        effects.push(FinalityEffect::Certified(FinalityCertificate {
            epoch: self.committee.epoch(),
            txid,
            votes,
        }));
        self.forget(txid);
    }

    /// Frees the tally of a certified or included transaction and remembers it as settled.
    fn forget(&mut self, txid: Txid) {
        if let Some(tally) = self.tallies.remove(&txid) {
            self.vote_records -= tally.votes.len();
            match &tally.inputs {
                None => {
                    self.unknown_tallies -= 1;
                    for voter in tally.votes.keys() {
                        decrement(&mut self.unknown_votes, voter);
                    }
                }
                Some(inputs) => {
                    for voter in tally.votes.keys() {
                        for input in inputs {
                            if self
                                .spends
                                .get(&(*input, *voter))
                                .is_some_and(|(held, _)| *held == txid)
                            {
                                self.spends.remove(&(*input, *voter));
                            }
                        }
                    }
                }
            }
        }
        if self.settled.insert(txid) {
            self.settled_order.push_back(txid);
            if self.settled_order.len() > MAX_RECENTLY_SETTLED
                && let Some(oldest) = self.settled_order.pop_front()
            {
                self.settled.remove(&oldest);
            }
        }
    }

    fn on_lock_persisted(&mut self, epoch: Epoch, txid: Txid) -> Result<(), ConsensusError> {
        if epoch != self.committee.epoch() {
            // The lock lapsed with its epoch; voting now would be voting in the wrong epoch.
            return Ok(());
        }
        let Some(lock) = self.own_locks.get_mut(&txid) else {
            if self.settled.contains(&txid) {
                return Ok(());
            }
            return Err(ConsensusError::OutOfOrder(
                "lock persisted that was never requested",
            ));
        };
        if lock.durable {
            return Ok(());
        }
        lock.durable = true;
        self.unsigned.push(txid);
        Ok(())
    }

    /// Signs one vote over every transaction whose lock became durable since the last call
    /// (in batches of at most [`MAX_VOTE_TXIDS`]) and counts it. The runtime calls this once
    /// per step, after the step's locks are persisted: one signature for the whole step.
    pub fn sign_votes(&mut self) -> Vec<FinalityEffect> {
        let mut effects = Vec::new();
        let unsigned = std::mem::take(&mut self.unsigned);
        let ready: Vec<Txid> = unsigned
            .into_iter()
            .filter(|txid| self.own_locks.get(txid).is_some_and(|lock| lock.durable))
            .collect();
        let Some(key) = self.voting_key().cloned() else {
            return effects;
        };
        let network = self.committee.network();
        let epoch = self.committee.epoch();
        for chunk in ready.chunks(MAX_VOTE_TXIDS) {
            let (batch, levels) = VoteBatch::sign_tree(network, epoch, chunk.to_vec(), &key);
            // Our own vote is sent either way; if a tally limit refuses to count it here, the
            // transaction still certifies from the quorum's votes or a relay.
            let mut counted = Vec::new();
            let _refused = self.count_batch(&batch, levels, 0..chunk.len(), &mut counted);
            // The broadcast comes before the certificates our vote completes, as the node
            // expects: it forgets a transaction's vote once it is certified.
            effects.push(FinalityEffect::BroadcastVotes(batch));
            effects.extend(counted);
        }
        self.check_invariants();
        effects
    }

    /// Counts the votes of a verified `batch` (whose tree is `levels`) for the txids at
    /// `positions`, skipping those settled or already counted for its voter meanwhile (by an
    /// earlier batch of the same call). Returns why the others were refused, if any were.
    fn count_batch(
        &mut self,
        batch: &VoteBatch,
        levels: Vec<Vec<Hash32>>,
        positions: impl IntoIterator<Item = usize>,
        effects: &mut Vec<FinalityEffect>,
    ) -> Vec<ConsensusError> {
        let shared = Arc::new(SignedBatch {
            signature: batch.signature,
            levels,
        });
        let mut refused = Vec::new();
        for index in positions {
            let txid = batch.txids[index];
            if self.settled.contains(&txid)
                || self
                    .tallies
                    .get(&txid)
                    .is_some_and(|tally| tally.votes.contains_key(&batch.voter))
            {
                continue;
            }
            let vote = VoteRef {
                batch: shared.clone(),
                index: index as u32,
            };
            if let Err(error) = self.accept_verified_vote(txid, batch.voter, vote, effects) {
                refused.push(error);
            }
        }
        refused
    }

    /// Our votes again for those of `txids` we hold durable locks for this epoch, for a
    /// resend: signing is all it costs, and a vote for a transaction we already voted for
    /// contradicts nothing.
    pub fn votes_again(&self, txids: &[Txid]) -> Vec<VoteBatch> {
        let Some(key) = self.voting_key() else {
            return Vec::new();
        };
        let ours: Vec<Txid> = txids
            .iter()
            .filter(|txid| self.own_locks.get(*txid).is_some_and(|lock| lock.durable))
            .copied()
            .collect();
        ours.chunks(MAX_VOTE_TXIDS)
            .map(|chunk| {
                VoteBatch::sign(
                    self.committee.network(),
                    self.committee.epoch(),
                    chunk.to_vec(),
                    key,
                )
            })
            .collect()
    }

    fn voting_key(&self) -> Option<&SecretKey> {
        self.key
            .as_ref()
            .filter(|key| self.committee.member(&key.public_key()).is_some())
    }

    fn on_included(&mut self, txid: Txid) {
        self.forget(txid);
        if let Some(lock) = self.own_locks.remove(&txid) {
            for input in &lock.inputs {
                self.locks.remove(input);
            }
        }
    }

    /// Asserts the engine's internal consistency. Runs after every step in debug builds (and so
    /// in the simulator); compiled out of release builds.
    pub fn check_invariants(&self) {
        if !cfg!(debug_assertions) {
            return;
        }
        for (input, txid) in &self.locks {
            let lock = self
                .own_locks
                .get(txid)
                .expect("every lock belongs to an own lock");
            assert!(lock.inputs.contains(input));
        }
        for (txid, lock) in &self.own_locks {
            for input in &lock.inputs {
                assert_eq!(
                    self.locks.get(input),
                    Some(txid),
                    "own lock input not locked"
                );
            }
        }
        let mut unknown = 0;
        let mut records = 0;
        let mut unknown_votes: FastMap<PublicKey, usize> = FastMap::default();
        for (txid, tally) in &self.tallies {
            let weight: u64 = tally
                .votes
                .keys()
                .map(|voter| self.committee.weight_of(voter).0)
                .sum();
            assert_eq!(weight, tally.weight, "tally weight of {txid}");
            assert!(
                !self.committee.is_quorum(Weight(weight)),
                "quorum tally not certified"
            );
            assert!(
                !self.settled.contains(txid),
                "settled transaction still tallied"
            );
            records += tally.votes.len();
            match &tally.inputs {
                None => {
                    unknown += 1;
                    for voter in tally.votes.keys() {
                        *unknown_votes.entry(*voter).or_default() += 1;
                    }
                }
                Some(inputs) => {
                    for voter in tally.votes.keys() {
                        for input in inputs {
                            assert_eq!(
                                self.spends.get(&(*input, *voter)).map(|s| s.0),
                                Some(*txid)
                            );
                        }
                    }
                }
            }
        }
        assert_eq!(unknown, self.unknown_tallies);
        assert_eq!(records, self.vote_records);
        assert_eq!(unknown_votes, self.unknown_votes);
        assert_eq!(self.settled.len(), self.settled_order.len());
        assert!(self.tallies.len() <= MAX_TRACKED_TRANSACTIONS);
        assert!(self.unknown_tallies <= MAX_UNKNOWN_TRANSACTIONS);
        assert!(self.vote_records <= MAX_VOTE_RECORDS);
        assert!(self.spends.len() <= MAX_SPEND_RECORDS);
        assert!(self.own_locks.len() <= MAX_LOCKED_TRANSACTIONS);
        assert!(self.settled.len() <= MAX_RECENTLY_SETTLED);
        assert!(self.reported.len() <= MAX_REPORTED_CONFLICTS);
    }
}

fn decrement(counts: &mut FastMap<PublicKey, usize>, key: &PublicKey) {
    if let Some(count) = counts.get_mut(key) {
        *count -= 1;
        if *count == 0 {
            counts.remove(key);
        }
    }
}

/// Signs a vote for one transaction; a convenience for tests, tools and the simulator's
/// Byzantine nodes.
pub fn sign_transaction_vote(
    network: Network,
    epoch: Epoch,
    txid: Txid,
    key: &SecretKey,
) -> VoteBatch {
    VoteBatch::sign(network, epoch, vec![txid], key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::committee::Member;
    use timecoin_primitives::{Hash32, Network};

    const NETWORK: Network = Network::Devnet;

    fn secret(seed: u8) -> SecretKey {
        SecretKey::from_bytes([seed; 32])
    }

    fn committee(epoch: u64) -> Committee {
        let members = (1..=4u8)
            .map(|seed| Member {
                node_key: secret(seed).public_key(),
                weight: Weight(1),
                collateral: outpoint(100 + seed),
            })
            .collect();
        Committee::new(NETWORK, Epoch(epoch), Hash32([7; 32]), members).unwrap()
    }

    fn outpoint(seed: u8) -> OutPoint {
        OutPoint {
            txid: Txid(Hash32([seed; 32])),
            index: 0,
        }
    }

    fn txid(seed: u8) -> Txid {
        Txid(Hash32([200u8.wrapping_add(seed); 32]))
    }

    /// Hands the engine one received vote, the way the node does.
    trait CastVote {
        fn cast(&mut self, vote: VoteBatch) -> Result<Vec<FinalityEffect>, ConsensusError>;
    }

    impl CastVote for FinalityEngine {
        fn cast(&mut self, vote: VoteBatch) -> Result<Vec<FinalityEffect>, ConsensusError> {
            let outcome = self.handle_votes(vec![vote]);
            match outcome.rejected.into_iter().next() {
                Some((_, error)) => Err(error),
                None => Ok(outcome.effects),
            }
        }
    }

    /// A certificate's part for a vote on one transaction (its tree is just the leaf).
    fn single_vote(vote: VoteBatch) -> FinalityVote {
        FinalityVote {
            voter: vote.voter,
            proof: VoteProof {
                signature: vote.signature,
                path: BoundedVec::default(),
            },
        }
    }

    fn vote(seed: u8, tx: Txid, epoch: u64) -> VoteBatch {
        sign_transaction_vote(NETWORK, Epoch(epoch), tx, &secret(seed))
    }

    /// Hands `engine` transaction `txid(tx)` spending `outpoint(i)` for each `i` of `inputs`.
    fn offer(engine: &mut FinalityEngine, tx: u8, inputs: &[u8]) -> Vec<FinalityEffect> {
        engine
            .handle(FinalityInput::Transaction {
                txid: txid(tx),
                inputs: inputs.iter().map(|&seed| outpoint(seed)).collect(),
            })
            .unwrap()
    }

    /// Tells `engine` that its lock for `txid(tx)` in `epoch` is durable, and lets it sign, as
    /// the node does at the end of the step.
    fn lock_persisted(engine: &mut FinalityEngine, epoch: u64, tx: u8) -> Vec<FinalityEffect> {
        let mut effects = engine
            .handle(FinalityInput::LockPersisted {
                epoch: Epoch(epoch),
                txid: txid(tx),
            })
            .unwrap();
        effects.extend(engine.sign_votes());
        effects
    }

    fn observer() -> FinalityEngine {
        FinalityEngine::new(committee(1), None)
    }

    fn certificates(effects: &[FinalityEffect]) -> Vec<&FinalityCertificate> {
        effects
            .iter()
            .filter_map(|effect| match effect {
                FinalityEffect::Certified(certificate) => Some(certificate),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn vote_is_sent_only_after_the_lock_is_durable() {
        let mut engine = FinalityEngine::new(committee(1), Some(secret(1)));
        let effects = offer(&mut engine, 1, &[1]);
        assert_eq!(
            effects,
            vec![FinalityEffect::PersistLock(PersistedLock {
                epoch: Epoch(1),
                txid: txid(1),
                inputs: vec![outpoint(1)]
            })]
        );
        assert_eq!(engine.lock_holder(&outpoint(1)), Some(txid(1)));
        // Handing the same transaction again does not lock or persist twice.
        assert!(offer(&mut engine, 1, &[1]).is_empty());
        let effects = lock_persisted(&mut engine, 1, 1);
        assert_eq!(
            effects,
            vec![FinalityEffect::BroadcastVotes(vote(1, txid(1), 1))]
        );
        // Our own vote is counted.
        assert_eq!(engine.held_votes(), 1);
        // A second acknowledgement changes nothing.
        assert!(lock_persisted(&mut engine, 1, 1).is_empty());
        let error = engine
            .handle(FinalityInput::LockPersisted {
                epoch: Epoch(1),
                txid: txid(9),
            })
            .unwrap_err();
        assert!(matches!(error, ConsensusError::OutOfOrder(_)));
    }

    #[test]
    fn transaction_conflicting_with_a_lock_is_refused() {
        let mut engine = FinalityEngine::new(committee(1), Some(secret(1)));
        offer(&mut engine, 1, &[1]);
        let effects = offer(&mut engine, 2, &[2, 1]);
        let [
            FinalityEffect::Refused {
                txid: refused,
                error,
            },
        ] = &effects[..]
        else {
            panic!("expected a refusal and nothing else, got {effects:?}")
        };
        assert_eq!(*refused, txid(2));
        assert_eq!(
            *error,
            ConsensusError::ConflictsWithLock {
                outpoint: outpoint(1),
                locked_by: txid(1)
            }
        );
        assert!(!error.is_peer_fault());
        // Nothing of the refused transaction was locked, and no acknowledgement can make us
        // vote for it.
        assert_eq!(engine.lock_holder(&outpoint(2)), None);
        assert_eq!(engine.locked_inputs(), 1);
        assert!(
            engine
                .handle(FinalityInput::LockPersisted {
                    epoch: Epoch(1),
                    txid: txid(2)
                })
                .is_err()
        );
        // It is still tracked, so a member voting for both is caught.
        engine.cast(vote(2, txid(1), 1)).unwrap();
        let effects = engine.cast(vote(2, txid(2), 1)).unwrap();
        assert!(
            matches!(&effects[..], [FinalityEffect::Evidence(e)] if e.offender() == secret(2).public_key())
        );
        // A non-conflicting one is fine.
        let effects = offer(&mut engine, 3, &[3]);
        assert!(matches!(effects[..], [FinalityEffect::PersistLock(_)]));
    }

    #[test]
    fn quorum_certifies_duplicates_are_ignored_and_bookkeeping_is_freed() {
        let mut engine = observer();
        offer(&mut engine, 1, &[1, 2]);
        assert!(engine.cast(vote(1, txid(1), 1)).unwrap().is_empty());
        assert!(engine.cast(vote(2, txid(1), 1)).unwrap().is_empty());
        // A duplicate neither counts nor costs memory.
        assert!(engine.cast(vote(2, txid(1), 1)).unwrap().is_empty());
        assert_eq!(engine.held_votes(), 2);
        assert_eq!(engine.spend_records(), 4);
        let effects = engine.cast(vote(3, txid(1), 1)).unwrap();
        let certified = certificates(&effects);
        assert_eq!(certified.len(), 1);
        assert_eq!(certified[0].txid, txid(1));
        assert_eq!(certified[0].verify(engine.committee()), Ok(Weight(3)));
        assert_eq!(
            (
                engine.tracked_transactions(),
                engine.held_votes(),
                engine.spend_records()
            ),
            (0, 0, 0)
        );
        // A late vote neither re-certifies nor starts a new tally.
        assert!(engine.cast(vote(4, txid(1), 1)).unwrap().is_empty());
        assert_eq!(engine.tracked_transactions(), 0);
    }

    #[test]
    fn votes_for_an_unknown_transaction_certify_it_too() {
        let mut engine = observer();
        for seed in 1..=2 {
            assert!(engine.cast(vote(seed, txid(5), 1)).unwrap().is_empty());
        }
        assert_eq!(engine.tracked_transactions(), 1);
        let effects = engine.cast(vote(3, txid(5), 1)).unwrap();
        assert_eq!(certificates(&effects).len(), 1);
        assert_eq!((engine.tracked_transactions(), engine.held_votes()), (0, 0));
    }

    #[test]
    fn conflicting_votes_become_evidence_and_do_not_count() {
        let mut engine = observer();
        offer(&mut engine, 1, &[1]);
        offer(&mut engine, 2, &[1, 2]);
        engine.cast(vote(1, txid(1), 1)).unwrap();
        let effects = engine.cast(vote(1, txid(2), 1)).unwrap();
        let [FinalityEffect::Evidence(evidence)] = &effects[..] else {
            panic!("expected evidence, got {effects:?}")
        };
        assert_eq!(evidence.offender(), secret(1).public_key());
        assert!(
            matches!(evidence, Evidence::ConflictingTransactionVotes { outpoint: o, .. } if *o == outpoint(1))
        );
        assert_eq!(evidence.verify(engine.committee()), Ok(()));
        assert_eq!(
            engine.held_votes(),
            1,
            "the conflicting vote is not counted"
        );
        // The same conflict again is not reported twice.
        let mut again = observer();
        offer(&mut again, 1, &[1]);
        offer(&mut again, 2, &[1]);
        again.cast(vote(1, txid(1), 1)).unwrap();
        assert_eq!(again.cast(vote(1, txid(2), 1)).unwrap().len(), 1);
        assert!(engine.cast(vote(1, txid(2), 1)).unwrap().is_empty());
        // Evidence whose second vote is forged does not verify.
        let Evidence::ConflictingTransactionVotes {
            voter,
            epoch,
            outpoint,
            first,
            second,
        } = evidence.clone()
        else {
            unreachable!()
        };
        let forged = Evidence::ConflictingTransactionVotes {
            voter,
            epoch,
            outpoint,
            first,
            second: (txid(3), second.1),
        };
        assert_eq!(
            forged.verify(engine.committee()),
            Err(ConsensusError::BadSignature(voter))
        );
    }

    /// One vote of `seed` over `txid(tx)` for each `tx` of `txs`.
    fn batch(seed: u8, txs: &[u8]) -> VoteBatch {
        let txids = txs.iter().map(|&tx| txid(tx)).collect();
        VoteBatch::sign(NETWORK, Epoch(1), txids, &secret(seed))
    }

    #[test]
    fn one_signature_per_voter_certifies_a_whole_batch() {
        let mut engine = observer();
        let txs: Vec<u8> = (1..=20).collect();
        for &tx in &txs {
            offer(&mut engine, tx, &[tx]);
        }
        let outcome = engine.handle_votes(vec![batch(1, &txs), batch(2, &txs), batch(3, &txs)]);
        assert!(outcome.rejected.is_empty(), "{:?}", outcome.rejected);
        let certified = certificates(&outcome.effects);
        assert_eq!(certified.len(), txs.len());
        for certificate in certified {
            assert_eq!(certificate.verify(engine.committee()), Ok(Weight(3)));
            // A 20-transaction tree is five levels deep: each vote carries its path.
            assert!(
                certificate
                    .votes
                    .iter()
                    .all(|vote| !vote.proof.path.is_empty())
            );
            // The path proves this transaction only.
            let moved = FinalityCertificate {
                txid: txid(99),
                ..certificate.clone()
            };
            assert_eq!(
                moved.verify(engine.committee()),
                Err(ConsensusError::BadSignatureSet)
            );
        }
        assert_eq!(engine.held_votes(), 0);
        assert_eq!(engine.tracked_transactions(), 0);
    }

    #[test]
    fn forged_empty_and_repeated_batches() {
        let mut engine = observer();
        offer(&mut engine, 1, &[1]);
        offer(&mut engine, 2, &[2]);
        let mut forged = batch(1, &[1, 2]);
        forged.txids = BoundedVec::new(vec![txid(1), txid(3)]).unwrap();
        assert_eq!(
            engine.cast(forged),
            Err(ConsensusError::BadSignature(secret(1).public_key()))
        );
        assert_eq!(engine.held_votes(), 0, "nothing of a forged batch counts");
        let mut empty = batch(1, &[1]);
        empty.txids = BoundedVec::default();
        let error = engine.cast(empty).unwrap_err();
        assert!(error.is_peer_fault(), "{error}");

        engine.cast(batch(1, &[1, 2])).unwrap();
        assert_eq!(engine.held_votes(), 2);
        // A batch that adds nothing is dropped before its signature is even checked.
        let mut stale = batch(1, &[2, 1]);
        stale.signature.0[0] ^= 1;
        assert_eq!(engine.cast(stale), Ok(Vec::new()));
        // A txid named twice in one batch counts once.
        engine.cast(batch(2, &[1, 1])).unwrap();
        assert_eq!(engine.held_votes(), 3);
    }

    #[test]
    fn a_step_of_durable_locks_is_voted_with_one_signature() {
        let mut engine = FinalityEngine::new(committee(1), Some(secret(1)));
        for tx in 1..=5 {
            offer(&mut engine, tx, &[tx]);
            let effects = engine
                .handle(FinalityInput::LockPersisted {
                    epoch: Epoch(1),
                    txid: txid(tx),
                })
                .unwrap();
            assert!(effects.is_empty(), "nothing is signed before the step ends");
        }
        let effects = engine.sign_votes();
        assert_eq!(
            effects,
            vec![FinalityEffect::BroadcastVotes(batch(1, &[1, 2, 3, 4, 5]))]
        );
        assert_eq!(engine.held_votes(), 5);
        assert!(engine.sign_votes().is_empty(), "each lock is voted once");
        // A resend signs again only what we locked.
        assert_eq!(
            engine.votes_again(&[txid(2), txid(9), txid(4)]),
            vec![batch(1, &[2, 4])]
        );
        assert!(observer().votes_again(&[txid(2)]).is_empty());
    }

    #[test]
    fn conflicting_votes_in_batches_are_evidence_with_their_paths() {
        let mut engine = observer();
        offer(&mut engine, 1, &[1]);
        offer(&mut engine, 2, &[1]);
        engine.cast(batch(3, &[5, 1, 6])).unwrap();
        let effects = engine.cast(batch(3, &[7, 8, 9, 2])).unwrap();
        let [FinalityEffect::Evidence(evidence)] = &effects[..] else {
            panic!("expected evidence, got {effects:?}")
        };
        assert_eq!(evidence.offender(), secret(3).public_key());
        assert_eq!(evidence.verify(engine.committee()), Ok(()));
    }

    #[test]
    fn conflict_is_found_when_the_transaction_arrives_after_its_votes() {
        let mut engine = observer();
        offer(&mut engine, 1, &[1]);
        engine.cast(vote(2, txid(1), 1)).unwrap();
        engine.cast(vote(2, txid(2), 1)).unwrap();
        engine.cast(vote(3, txid(2), 1)).unwrap();
        assert_eq!(engine.held_votes(), 3);
        let effects = offer(&mut engine, 2, &[1]);
        assert!(
            matches!(&effects[..], [FinalityEffect::Evidence(e)] if e.offender() == secret(2).public_key())
        );
        assert_eq!(engine.held_votes(), 2);
    }

    #[test]
    fn rejections_say_who_is_at_fault() {
        let mut engine = observer();
        let mut forged = vote(1, txid(1), 1);
        forged.signature.0[0] ^= 1;
        let error = engine.cast(forged).unwrap_err();
        assert_eq!(error, ConsensusError::BadSignature(secret(1).public_key()));
        assert!(error.is_peer_fault());
        let error = engine.cast(vote(9, txid(1), 1)).unwrap_err();
        assert!(matches!(error, ConsensusError::NotAMember(_)) && error.is_peer_fault());
        let error = engine.cast(vote(1, txid(1), 2)).unwrap_err();
        assert!(matches!(error, ConsensusError::WrongEpoch { .. }) && !error.is_peer_fault());
        // A vote signed for another network does not verify here.
        let foreign = sign_transaction_vote(Network::Testnet, Epoch(1), txid(1), &secret(1));
        assert!(engine.cast(foreign).is_err());
        assert_eq!(engine.tracked_transactions(), 0);
        let error = engine
            .handle(FinalityInput::Transaction {
                txid: txid(1),
                inputs: vec![],
            })
            .unwrap_err();
        assert!(matches!(error, ConsensusError::UnvotableTransaction(_)));
    }

    #[test]
    fn certificate_verification_rejects_forged_insufficient_duplicate_and_wrong_epoch() {
        let committee = committee(1);
        let votes = |seeds: &[u8]| -> BoundedVec<FinalityVote, MAX_COMMITTEE_SIZE> {
            let mut votes: Vec<FinalityVote> = seeds
                .iter()
                .map(|&seed| single_vote(vote(seed, txid(1), 1)))
                .collect();
            votes.sort_by_key(|vote| vote.voter);
            BoundedVec::new(votes).unwrap()
        };
        let good = FinalityCertificate {
            epoch: Epoch(1),
            txid: txid(1),
            votes: votes(&[1, 2, 3]),
        };
        assert_eq!(good.verify(&committee), Ok(Weight(3)));

        let mut forged = good.clone();
        let mut inner = forged.votes.clone().into_inner();
        inner[1].proof.signature.0[5] ^= 0x40;
        forged.votes = BoundedVec::new(inner).unwrap();
        assert_eq!(
            forged.verify(&committee),
            Err(ConsensusError::BadSignatureSet)
        );

        let other_tx = FinalityCertificate {
            txid: txid(2),
            ..good.clone()
        };
        assert_eq!(
            other_tx.verify(&committee),
            Err(ConsensusError::BadSignatureSet)
        );

        let short = FinalityCertificate {
            votes: votes(&[1, 2]),
            ..good.clone()
        };
        assert_eq!(
            short.verify(&committee),
            Err(ConsensusError::InsufficientWeight { have: 2, need: 3 })
        );

        let mut doubled = good.votes.clone().into_inner();
        doubled.insert(1, doubled[0].clone());
        doubled.truncate(3);
        let duplicate = FinalityCertificate {
            votes: BoundedVec::new(doubled).unwrap(),
            ..good.clone()
        };
        assert_eq!(
            duplicate.verify(&committee),
            Err(ConsensusError::UnsortedVoters)
        );

        let mut outsider = good.votes.clone().into_inner();
        let stranger = sign_transaction_vote(NETWORK, Epoch(1), txid(1), &secret(9));
        outsider.push(single_vote(stranger.clone()));
        outsider.sort_by_key(|vote| vote.voter);
        let with_outsider = FinalityCertificate {
            votes: BoundedVec::new(outsider).unwrap(),
            ..good.clone()
        };
        assert_eq!(
            with_outsider.verify(&committee),
            Err(ConsensusError::NotAMember(stranger.voter))
        );

        // Same members next epoch: the certificate names epoch 1, so it is refused outright …
        let next = self::committee(2);
        assert!(matches!(
            good.verify(&next),
            Err(ConsensusError::WrongEpoch { .. })
        ));
        // … and relabelling it as epoch 2 breaks every signature.
        let relabelled = FinalityCertificate {
            epoch: Epoch(2),
            ..good
        };
        assert_eq!(
            relabelled.verify(&next),
            Err(ConsensusError::BadSignatureSet)
        );
    }

    #[test]
    fn epoch_boundary_releases_locks_and_drops_old_votes() {
        let mut engine = FinalityEngine::new(committee(1), Some(secret(1)));
        offer(&mut engine, 1, &[1]);
        engine.cast(vote(2, txid(7), 1)).unwrap();
        let effects = engine
            .handle(FinalityInput::NewEpoch(committee(2)))
            .unwrap();
        assert_eq!(effects, vec![FinalityEffect::ReleaseLocksBefore(Epoch(2))]);
        assert_eq!(
            (
                engine.locked_inputs(),
                engine.tracked_transactions(),
                engine.held_votes()
            ),
            (0, 0, 0)
        );
        // The lapsed lock's late acknowledgement does not produce a vote.
        assert!(lock_persisted(&mut engine, 1, 1).is_empty());
        // The input is free for another transaction in the new epoch.
        let effects = offer(&mut engine, 2, &[1]);
        assert!(
            matches!(&effects[..], [FinalityEffect::PersistLock(lock)] if lock.epoch == Epoch(2))
        );
        assert!(matches!(
            engine.cast(vote(2, txid(1), 1)),
            Err(ConsensusError::WrongEpoch { .. })
        ));
        assert!(matches!(
            engine.handle(FinalityInput::NewEpoch(committee(2))),
            Err(ConsensusError::OutOfOrder(_))
        ));
    }

    #[test]
    fn restore_reinstates_current_locks_and_resends_their_votes() {
        let persisted = vec![
            PersistedLock {
                epoch: Epoch(0),
                txid: txid(1),
                inputs: vec![outpoint(1)],
            },
            PersistedLock {
                epoch: Epoch(1),
                txid: txid(2),
                inputs: vec![outpoint(2)],
            },
        ];
        let (mut engine, effects) =
            FinalityEngine::restore(committee(1), Some(secret(1)), persisted).unwrap();
        assert_eq!(
            effects,
            vec![
                FinalityEffect::ReleaseLocksBefore(Epoch(1)),
                FinalityEffect::BroadcastVotes(vote(1, txid(2), 1))
            ]
        );
        let effects = offer(&mut engine, 3, &[2]);
        assert!(matches!(
            &effects[..],
            [FinalityEffect::Refused { error: ConsensusError::ConflictsWithLock { locked_by, .. }, .. }]
                if *locked_by == txid(2)
        ));
        assert_eq!(engine.lock_holder(&outpoint(1)), None);
    }

    #[test]
    fn inclusion_frees_tallies_and_locks() {
        let mut engine = FinalityEngine::new(committee(1), Some(secret(1)));
        offer(&mut engine, 1, &[1]);
        lock_persisted(&mut engine, 1, 1);
        engine.cast(vote(2, txid(1), 1)).unwrap();
        assert_eq!((engine.tracked_transactions(), engine.held_votes()), (1, 2));
        engine
            .handle(FinalityInput::Included { txid: txid(1) })
            .unwrap();
        assert_eq!(
            (
                engine.tracked_transactions(),
                engine.held_votes(),
                engine.spend_records(),
                engine.locked_inputs()
            ),
            (0, 0, 0, 0)
        );
        assert!(engine.cast(vote(3, txid(1), 1)).unwrap().is_empty());
        assert_eq!(engine.tracked_transactions(), 0);
    }

    #[test]
    fn votes_on_unknown_transactions_are_capped_per_voter() {
        let mut engine = observer();
        for index in 0..MAX_UNKNOWN_VOTES_PER_VOTER {
            let mut bytes = [0u8; 32];
            bytes[..8].copy_from_slice(&(index as u64).to_le_bytes());
            engine.cast(vote(1, Txid(Hash32(bytes)), 1)).unwrap();
        }
        let error = engine.cast(vote(1, txid(1), 1)).unwrap_err();
        assert!(matches!(error, ConsensusError::Full { .. }) && !error.is_peer_fault());
        // Other voters are unaffected, and learning a transaction lifts it out of the budget.
        engine.cast(vote(2, txid(1), 1)).unwrap();
        assert_eq!(
            engine.tracked_transactions(),
            MAX_UNKNOWN_VOTES_PER_VOTER + 1
        );
    }

    #[test]
    fn batched_votes_match_one_by_one_and_single_out_forgeries() {
        let mut votes = vec![
            vote(1, txid(1), 1),
            vote(2, txid(1), 1),
            vote(2, txid(1), 1),
        ];
        let mut forged = vote(3, txid(2), 1);
        forged.signature.0[1] ^= 1;
        votes.push(forged);
        votes.push(vote(9, txid(1), 1));
        votes.push(vote(3, txid(1), 1));
        votes.push(vote(4, txid(1), 1));
        let mut batched = observer();
        offer(&mut batched, 1, &[1]);
        let outcome = batched.handle_votes(votes.clone());
        let mut single = observer();
        offer(&mut single, 1, &[1]);
        let mut effects = Vec::new();
        let mut rejected = Vec::new();
        for vote in votes {
            let voter = vote.voter;
            match single.cast(vote) {
                Ok(more) => effects.extend(more),
                Err(error) => rejected.push((voter, error)),
            }
        }
        assert_eq!(outcome.effects, effects);
        assert_eq!(certificates(&outcome.effects).len(), 1);
        let mut outcome_rejected = outcome.rejected.clone();
        outcome_rejected.sort_by_key(|(voter, _)| *voter);
        rejected.sort_by_key(|(voter, _)| *voter);
        assert_eq!(outcome_rejected, rejected);
        assert_eq!(rejected.len(), 2);
        assert!(rejected.iter().all(|(_, error)| error.is_peer_fault()));
        assert_eq!(batched.held_votes(), single.held_votes());
    }
}
