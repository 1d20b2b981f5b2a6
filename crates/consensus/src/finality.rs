//! Transaction finality: input locks, votes and finality certificates.
//!
//! A masternode that is handed a valid transaction locks its inputs for the epoch and, once the
//! lock is durable, signs a vote. Votes from the quorum weight form a [`FinalityCertificate`].
//! Because an honest masternode votes for at most one transaction per input per epoch, and any
//! two quorums share more than the faulty weight, two conflicting transactions can never both be
//! certified.
//!
//! Persistence before send: [`FinalityEffect::PersistLock`] asks the runtime to store the lock;
//! the engine signs and emits the vote only when the runtime answers
//! [`FinalityInput::LockPersisted`]. The runtime can therefore batch many lock writes into one
//! fsync (group commit) without ever sending a vote whose lock could be lost in a crash.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use borsh::{BorshDeserialize, BorshSerialize};
use timecoin_primitives::block::MAX_COMMITTEE_SIZE;
use timecoin_primitives::transaction::MAX_INPUTS;
use timecoin_primitives::{
    BoundedVec, CommitVote, Epoch, Network, OutPoint, PublicKey, SecretKey, Signature, Txid,
};

use timecoin_primitives::keys::BatchVerifier;

use crate::committee::{Committee, Weight};
use crate::error::ConsensusError;
use crate::evidence::Evidence;
use crate::signing::{transaction_vote_message, verify_quorum_votes};

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
/// Most votes whose signatures [`FinalityEngine::handle_votes`] checks as one batch.
pub const MAX_VOTE_BATCH: usize = 1_024;
/// How many certified or included txids are remembered, so that late votes for them are
/// dropped instead of starting a new tally.
pub const MAX_RECENTLY_SETTLED: usize = 200_000;

/// One masternode's vote that a transaction should be final.
#[derive(Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct TxVote {
    /// The epoch; a vote is only valid in it.
    pub epoch: Epoch,
    /// The transaction.
    pub txid: Txid,
    /// The masternode's node key.
    pub voter: PublicKey,
    /// Signature over [`transaction_vote_message`].
    pub signature: Signature,
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
    pub votes: BoundedVec<CommitVote, MAX_COMMITTEE_SIZE>,
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
        let message = transaction_vote_message(committee.network(), self.epoch, &self.txid);
        verify_quorum_votes(committee, &message, &self.votes)
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
    /// A vote received from a peer (or relayed).
    Vote(TxVote),
    /// The runtime has durably stored the lock requested by [`FinalityEffect::PersistLock`].
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
    /// The votes refused and why ([`ConsensusError::is_peer_fault`] says whom to blame).
    pub rejected: Vec<(TxVote, ConsensusError)>,
}

/// What the finality engine asks of the node. Effects are listed in the order to perform them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FinalityEffect {
    /// Store this lock durably, then answer [`FinalityInput::LockPersisted`].
    PersistLock(PersistedLock),
    /// Gossip our vote (its lock is already durable).
    BroadcastVote(TxVote),
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

#[derive(Clone, Debug, Default)]
struct Tally {
    /// `None` until the node hands us the transaction.
    inputs: Option<Vec<OutPoint>>,
    votes: BTreeMap<PublicKey, Signature>,
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
    locks: BTreeMap<OutPoint, Txid>,
    own_locks: BTreeMap<Txid, OwnLock>,
    tallies: BTreeMap<Txid, Tally>,
    unknown_tallies: usize,
    unknown_votes: BTreeMap<PublicKey, usize>,
    vote_records: usize,
    /// (input, voter) → the vote that voter cast for a transaction spending it.
    spends: BTreeMap<(OutPoint, PublicKey), (Txid, Signature)>,
    reported: BTreeSet<(PublicKey, OutPoint)>,
    settled: BTreeSet<Txid>,
    settled_order: VecDeque<Txid>,
}

impl FinalityEngine {
    /// An engine for `committee`'s epoch. `key` is the node key if this node is a masternode;
    /// without one the engine only collects votes and certificates.
    pub fn new(committee: Committee, key: Option<SecretKey>) -> FinalityEngine {
        FinalityEngine {
            key,
            committee,
            locks: BTreeMap::new(),
            own_locks: BTreeMap::new(),
            tallies: BTreeMap::new(),
            unknown_tallies: 0,
            unknown_votes: BTreeMap::new(),
            vote_records: 0,
            spends: BTreeMap::new(),
            reported: BTreeSet::new(),
            settled: BTreeSet::new(),
            settled_order: VecDeque::new(),
        }
    }

    /// An engine restored after a restart from the locks the runtime persisted. Locks of the
    /// current epoch are re-established and their votes re-sent (Ed25519 signing is
    /// deterministic, so the vote is identical to any sent before the crash); older locks are
    /// released.
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
            engine.cast_own_vote(lock.txid, &mut effects)?;
        }
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
            FinalityInput::Vote(vote) => self.on_vote(vote, &mut effects)?,
            FinalityInput::LockPersisted { epoch, txid } => {
                self.on_lock_persisted(epoch, txid, &mut effects)?
            }
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
        self.key
            .as_ref()
            .is_some_and(|key| self.committee.member(&key.public_key()).is_some())
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
        for (voter, signature) in votes {
            decrement(&mut self.unknown_votes, &voter);
            if let Some(evidence) = self.find_conflict(voter, txid, signature, &inputs) {
                effects.extend(evidence.map(FinalityEffect::Evidence));
                continue;
            }
            self.record_vote(txid, voter, signature, Some(&inputs));
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
        signature: Signature,
        inputs: &[OutPoint],
    ) -> Option<Option<Evidence>> {
        for input in inputs {
            if let Some(&(other, other_signature)) = self.spends.get(&(*input, voter))
                && other != txid
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
                    first: (other, other_signature),
                    second: (txid, signature),
                }));
            }
        }
        None
    }

    fn record_vote(
        &mut self,
        txid: Txid,
        voter: PublicKey,
        signature: Signature,
        inputs: Option<&[OutPoint]>,
    ) {
        let weight = self.committee.weight_of(&voter).0;
        if let Some(inputs) = inputs {
            for input in inputs {
                self.spends.insert((*input, voter), (txid, signature));
            }
        } else {
            *self.unknown_votes.entry(voter).or_default() += 1;
        }
        let tally = self
            .tallies
            .get_mut(&txid)
            .expect("tally exists before a vote is recorded");
        tally.votes.insert(voter, signature);
        tally.weight += weight;
        self.vote_records += 1;
    }

    /// The checks that need no signature verification. `Ok(false)` means the vote is a
    /// harmless no-op (duplicate, or for a transaction already settled).
    fn precheck_vote(&self, vote: &TxVote) -> Result<bool, ConsensusError> {
        if vote.epoch != self.committee.epoch() {
            return Err(ConsensusError::WrongEpoch {
                expected: self.committee.epoch(),
                got: vote.epoch,
            });
        }
        if self.committee.member(&vote.voter).is_none() {
            return Err(ConsensusError::NotAMember(vote.voter));
        }
        if self.settled.contains(&vote.txid) {
            return Ok(false);
        }
        // Checked before the signature: a duplicate costs a map lookup, not a verification.
        Ok(!self
            .tallies
            .get(&vote.txid)
            .is_some_and(|tally| tally.votes.contains_key(&vote.voter)))
    }

    fn on_vote(
        &mut self,
        vote: TxVote,
        effects: &mut Vec<FinalityEffect>,
    ) -> Result<(), ConsensusError> {
        if !self.precheck_vote(&vote)? {
            return Ok(());
        }
        let message = transaction_vote_message(self.committee.network(), vote.epoch, &vote.txid);
        vote.voter
            .verify(&message, &vote.signature)
            .map_err(|_| ConsensusError::BadSignature(vote.voter))?;
        self.accept_verified_vote(vote.txid, vote.voter, vote.signature, effects)
    }

    /// Processes many votes at once, checking their signatures as one batch (about twice as
    /// fast as one by one; if the batch fails, each is checked alone to find the culprits).
    /// The outcome is the same as handling the votes one by one in order.
    pub fn handle_votes(&mut self, votes: Vec<TxVote>) -> VoteBatchOutcome {
        let mut outcome = VoteBatchOutcome::default();
        for chunk in votes.chunks(MAX_VOTE_BATCH) {
            let mut fresh = Vec::with_capacity(chunk.len());
            let mut in_batch = BTreeSet::new();
            for vote in chunk {
                match self.precheck_vote(vote) {
                    Err(error) => outcome.rejected.push((*vote, error)),
                    Ok(true) if in_batch.insert((vote.txid, vote.voter)) => fresh.push(*vote),
                    Ok(_) => {}
                }
            }
            let network = self.committee.network();
            let messages: Vec<[u8; 32]> = fresh
                .iter()
                .map(|vote| transaction_vote_message(network, vote.epoch, &vote.txid))
                .collect();
            let mut batch = BatchVerifier::new();
            for (vote, message) in fresh.iter().zip(&messages) {
                batch.queue(&vote.voter, message, &vote.signature);
            }
            let all_valid = batch.verify().is_ok();
            for (vote, message) in fresh.iter().zip(&messages) {
                if !all_valid && vote.voter.verify(message, &vote.signature).is_err() {
                    outcome
                        .rejected
                        .push((*vote, ConsensusError::BadSignature(vote.voter)));
                    continue;
                }
                // Earlier votes of this batch may have settled the transaction meanwhile.
                if self.settled.contains(&vote.txid) {
                    continue;
                }
                if let Err(error) = self.accept_verified_vote(
                    vote.txid,
                    vote.voter,
                    vote.signature,
                    &mut outcome.effects,
                ) {
                    outcome.rejected.push((*vote, error));
                }
            }
        }
        self.check_invariants();
        outcome
    }

    fn accept_verified_vote(
        &mut self,
        txid: Txid,
        voter: PublicKey,
        signature: Signature,
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
                if let Some(evidence) = self.find_conflict(voter, txid, signature, inputs) {
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
                if let std::collections::btree_map::Entry::Vacant(entry) = self.tallies.entry(txid)
                {
                    entry.insert(Tally::default());
                    self.unknown_tallies += 1;
                }
            }
        }
        self.record_vote(txid, voter, signature, inputs.as_deref());
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
        let votes: Vec<CommitVote> = tally
            .votes
            .iter()
            .map(|(voter, signature)| CommitVote {
                voter: *voter,
                signature: *signature,
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

    fn on_lock_persisted(
        &mut self,
        epoch: Epoch,
        txid: Txid,
        effects: &mut Vec<FinalityEffect>,
    ) -> Result<(), ConsensusError> {
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
        self.cast_own_vote(txid, effects)
    }

    fn cast_own_vote(
        &mut self,
        txid: Txid,
        effects: &mut Vec<FinalityEffect>,
    ) -> Result<(), ConsensusError> {
        let Some(key) = &self.key else { return Ok(()) };
        let voter = key.public_key();
        if self.committee.member(&voter).is_none() {
            return Ok(());
        }
        let epoch = self.committee.epoch();
        let signature = key.sign(&transaction_vote_message(
            self.committee.network(),
            epoch,
            &txid,
        ));
        effects.push(FinalityEffect::BroadcastVote(TxVote {
            epoch,
            txid,
            voter,
            signature,
        }));
        if self.settled.contains(&txid)
            || self
                .tallies
                .get(&txid)
                .is_some_and(|tally| tally.votes.contains_key(&voter))
        {
            return Ok(());
        }
        self.accept_verified_vote(txid, voter, signature, effects)
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
        let mut unknown_votes: BTreeMap<PublicKey, usize> = BTreeMap::new();
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

fn decrement(counts: &mut BTreeMap<PublicKey, usize>, key: &PublicKey) {
    if let Some(count) = counts.get_mut(key) {
        *count -= 1;
        if *count == 0 {
            counts.remove(key);
        }
    }
}

/// Signs a transaction vote; a convenience for tests, tools and the simulator's Byzantine nodes.
pub fn sign_transaction_vote(
    network: Network,
    epoch: Epoch,
    txid: Txid,
    key: &SecretKey,
) -> TxVote {
    TxVote {
        epoch,
        txid,
        voter: key.public_key(),
        signature: key.sign(&transaction_vote_message(network, epoch, &txid)),
    }
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

    fn vote(seed: u8, tx: Txid, epoch: u64) -> TxVote {
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

    /// Tells `engine` that its lock for `txid(tx)` in `epoch` is durable.
    fn lock_persisted(engine: &mut FinalityEngine, epoch: u64, tx: u8) -> Vec<FinalityEffect> {
        engine
            .handle(FinalityInput::LockPersisted {
                epoch: Epoch(epoch),
                txid: txid(tx),
            })
            .unwrap()
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
            vec![FinalityEffect::BroadcastVote(vote(1, txid(1), 1))]
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
        engine
            .handle(FinalityInput::Vote(vote(2, txid(1), 1)))
            .unwrap();
        let effects = engine
            .handle(FinalityInput::Vote(vote(2, txid(2), 1)))
            .unwrap();
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
        assert!(
            engine
                .handle(FinalityInput::Vote(vote(1, txid(1), 1)))
                .unwrap()
                .is_empty()
        );
        assert!(
            engine
                .handle(FinalityInput::Vote(vote(2, txid(1), 1)))
                .unwrap()
                .is_empty()
        );
        // A duplicate neither counts nor costs memory.
        assert!(
            engine
                .handle(FinalityInput::Vote(vote(2, txid(1), 1)))
                .unwrap()
                .is_empty()
        );
        assert_eq!(engine.held_votes(), 2);
        assert_eq!(engine.spend_records(), 4);
        let effects = engine
            .handle(FinalityInput::Vote(vote(3, txid(1), 1)))
            .unwrap();
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
        assert!(
            engine
                .handle(FinalityInput::Vote(vote(4, txid(1), 1)))
                .unwrap()
                .is_empty()
        );
        assert_eq!(engine.tracked_transactions(), 0);
    }

    #[test]
    fn votes_for_an_unknown_transaction_certify_it_too() {
        let mut engine = observer();
        for seed in 1..=2 {
            assert!(
                engine
                    .handle(FinalityInput::Vote(vote(seed, txid(5), 1)))
                    .unwrap()
                    .is_empty()
            );
        }
        assert_eq!(engine.tracked_transactions(), 1);
        let effects = engine
            .handle(FinalityInput::Vote(vote(3, txid(5), 1)))
            .unwrap();
        assert_eq!(certificates(&effects).len(), 1);
        assert_eq!((engine.tracked_transactions(), engine.held_votes()), (0, 0));
    }

    #[test]
    fn conflicting_votes_become_evidence_and_do_not_count() {
        let mut engine = observer();
        offer(&mut engine, 1, &[1]);
        offer(&mut engine, 2, &[1, 2]);
        engine
            .handle(FinalityInput::Vote(vote(1, txid(1), 1)))
            .unwrap();
        let effects = engine
            .handle(FinalityInput::Vote(vote(1, txid(2), 1)))
            .unwrap();
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
        again
            .handle(FinalityInput::Vote(vote(1, txid(1), 1)))
            .unwrap();
        assert_eq!(
            again
                .handle(FinalityInput::Vote(vote(1, txid(2), 1)))
                .unwrap()
                .len(),
            1
        );
        assert!(
            engine
                .handle(FinalityInput::Vote(vote(1, txid(2), 1)))
                .unwrap()
                .is_empty()
        );
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

    #[test]
    fn conflict_is_found_when_the_transaction_arrives_after_its_votes() {
        let mut engine = observer();
        offer(&mut engine, 1, &[1]);
        engine
            .handle(FinalityInput::Vote(vote(2, txid(1), 1)))
            .unwrap();
        engine
            .handle(FinalityInput::Vote(vote(2, txid(2), 1)))
            .unwrap();
        engine
            .handle(FinalityInput::Vote(vote(3, txid(2), 1)))
            .unwrap();
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
        let error = engine.handle(FinalityInput::Vote(forged)).unwrap_err();
        assert_eq!(error, ConsensusError::BadSignature(secret(1).public_key()));
        assert!(error.is_peer_fault());
        let error = engine
            .handle(FinalityInput::Vote(vote(9, txid(1), 1)))
            .unwrap_err();
        assert!(matches!(error, ConsensusError::NotAMember(_)) && error.is_peer_fault());
        let error = engine
            .handle(FinalityInput::Vote(vote(1, txid(1), 2)))
            .unwrap_err();
        assert!(matches!(error, ConsensusError::WrongEpoch { .. }) && !error.is_peer_fault());
        // A vote signed for another network does not verify here.
        let foreign = sign_transaction_vote(Network::Testnet, Epoch(1), txid(1), &secret(1));
        assert!(engine.handle(FinalityInput::Vote(foreign)).is_err());
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
        let votes = |seeds: &[u8]| -> BoundedVec<CommitVote, MAX_COMMITTEE_SIZE> {
            let mut votes: Vec<CommitVote> = seeds
                .iter()
                .map(|&seed| {
                    let vote = vote(seed, txid(1), 1);
                    CommitVote {
                        voter: vote.voter,
                        signature: vote.signature,
                    }
                })
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
        inner[1].signature.0[5] ^= 0x40;
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
        doubled.insert(1, doubled[0]);
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
        outsider.push(CommitVote {
            voter: stranger.voter,
            signature: stranger.signature,
        });
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
        engine
            .handle(FinalityInput::Vote(vote(2, txid(7), 1)))
            .unwrap();
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
            engine.handle(FinalityInput::Vote(vote(2, txid(1), 1))),
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
                FinalityEffect::BroadcastVote(vote(1, txid(2), 1))
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
        engine
            .handle(FinalityInput::Vote(vote(2, txid(1), 1)))
            .unwrap();
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
        assert!(
            engine
                .handle(FinalityInput::Vote(vote(3, txid(1), 1)))
                .unwrap()
                .is_empty()
        );
        assert_eq!(engine.tracked_transactions(), 0);
    }

    #[test]
    fn votes_on_unknown_transactions_are_capped_per_voter() {
        let mut engine = observer();
        for index in 0..MAX_UNKNOWN_VOTES_PER_VOTER {
            let mut bytes = [0u8; 32];
            bytes[..8].copy_from_slice(&(index as u64).to_le_bytes());
            engine
                .handle(FinalityInput::Vote(vote(1, Txid(Hash32(bytes)), 1)))
                .unwrap();
        }
        let error = engine
            .handle(FinalityInput::Vote(vote(1, txid(1), 1)))
            .unwrap_err();
        assert!(matches!(error, ConsensusError::Full { .. }) && !error.is_peer_fault());
        // Other voters are unaffected, and learning a transaction lifts it out of the budget.
        engine
            .handle(FinalityInput::Vote(vote(2, txid(1), 1)))
            .unwrap();
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
            match single.handle(FinalityInput::Vote(vote)) {
                Ok(more) => effects.extend(more),
                Err(error) => rejected.push((vote, error)),
            }
        }
        assert_eq!(outcome.effects, effects);
        assert_eq!(certificates(&outcome.effects).len(), 1);
        let mut outcome_rejected = outcome.rejected.clone();
        outcome_rejected.sort_by_key(|(vote, _)| vote.voter);
        rejected.sort_by_key(|(vote, _)| vote.voter);
        assert_eq!(outcome_rejected, rejected);
        assert_eq!(rejected.len(), 2);
        assert!(rejected.iter().all(|(_, error)| error.is_peer_fault()));
        assert_eq!(batched.held_votes(), single.held_votes());
    }
}
