//! Proof that a masternode signed two statements an honest one never would. Evidence is
//! self-contained enough for anyone holding the epoch's committee to check the signatures; the
//! node decides what to do with it (gossip, slashing, banning).

use borsh::{BorshDeserialize, BorshSerialize};
use timecoin_primitives::{Epoch, Hash32, OutPoint, PublicKey, Signature, Txid};

use crate::committee::Committee;
use crate::error::ConsensusError;
use crate::finality::VoteProof;
use crate::signing::{Slot, statement_message};

/// Two conflicting signed statements by one masternode.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum Evidence {
    /// Two different digests signed for one block-consensus slot: two proposals, prepares,
    /// commits or view changes for the same (height, view).
    ConflictingStatements {
        /// The equivocating masternode.
        signer: PublicKey,
        /// The epoch whose committee it belonged to.
        epoch: Epoch,
        /// The slot signed twice.
        slot: Slot,
        /// The first digest and its signature.
        first: (Hash32, Signature),
        /// The second digest and its signature.
        second: (Hash32, Signature),
    },
    /// Votes in one epoch for two different transactions that spend the same input. The
    /// signatures cover only the txids; whoever checks this must also confirm from the two
    /// transaction bodies that both spend `outpoint` (the engine only emits it when they do).
    ConflictingTransactionVotes {
        /// The equivocating masternode.
        voter: PublicKey,
        /// The epoch of both votes.
        epoch: Epoch,
        /// The input both transactions spend.
        outpoint: OutPoint,
        /// The first transaction and the vote for it.
        first: (Txid, VoteProof),
        /// The second transaction and the vote for it.
        second: (Txid, VoteProof),
    },
}

impl Evidence {
    /// The masternode the evidence incriminates.
    pub fn offender(&self) -> PublicKey {
        match self {
            Evidence::ConflictingStatements { signer, .. } => *signer,
            Evidence::ConflictingTransactionVotes { voter, .. } => *voter,
        }
    }

    /// Checks both signatures against `committee` and that the two statements really differ.
    pub fn verify(&self, committee: &Committee) -> Result<(), ConsensusError> {
        let network = committee.network();
        let (offender, epoch, messages, signatures) = match self {
            Evidence::ConflictingStatements {
                signer,
                epoch,
                slot,
                first,
                second,
            } => {
                if first.0 == second.0 {
                    return Err(ConsensusError::InvalidEvidence(
                        "evidence digests are equal",
                    ));
                }
                (
                    *signer,
                    *epoch,
                    [
                        statement_message(network, *epoch, *slot, &first.0),
                        statement_message(network, *epoch, *slot, &second.0),
                    ],
                    [first.1, second.1],
                )
            }
            Evidence::ConflictingTransactionVotes {
                voter,
                epoch,
                first,
                second,
                ..
            } => {
                if first.0 == second.0 {
                    return Err(ConsensusError::InvalidEvidence("evidence txids are equal"));
                }
                (
                    *voter,
                    *epoch,
                    [
                        first.1.message(network, *epoch, &first.0),
                        second.1.message(network, *epoch, &second.0),
                    ],
                    [first.1.signature, second.1.signature],
                )
            }
        };
        if epoch != committee.epoch() {
            return Err(ConsensusError::WrongEpoch {
                expected: committee.epoch(),
                got: epoch,
            });
        }
        if committee.member(&offender).is_none() {
            return Err(ConsensusError::NotAMember(offender));
        }
        for (message, signature) in messages.iter().zip(&signatures) {
            offender
                .verify(message, signature)
                .map_err(|_| ConsensusError::BadSignature(offender))?;
        }
        Ok(())
    }
}
