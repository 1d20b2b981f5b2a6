//! Transactions: transfers, block rewards, and masternode (de)registration.

use borsh::{BorshDeserialize, BorshSerialize};

use crate::address::Address;
use crate::amount::Amount;
use crate::codec::{BoundedString, BoundedVec, encode, encoded_len};
use crate::hash::{Domain, Txid};
use crate::keys::{PublicKey, SecretKey, Signature};
use crate::network::Network;
use crate::quantities::Height;

/// Most inputs in one transaction.
pub const MAX_INPUTS: usize = 2_000;
/// Most outputs in one transaction (a reward transaction pays every rewarded masternode).
pub const MAX_OUTPUTS: usize = 10_000;
/// Most signatures in one transaction: one per input plus the node-key proof of a registration.
pub const MAX_SIGNATURES: usize = MAX_INPUTS + 1;
/// Longest masternode network address, in bytes.
pub const MAX_NETWORK_ADDRESS_LEN: usize = 255;

/// A reference to one output of an earlier transaction.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, BorshSerialize, BorshDeserialize,
)]
pub struct OutPoint {
    /// The transaction that created the output.
    pub txid: Txid,
    /// The output's position in it.
    pub index: u32,
}

impl std::fmt::Display for OutPoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.txid, self.index)
    }
}

/// An output: an amount paid to an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, BorshSerialize, BorshDeserialize)]
pub struct TxOut {
    /// How much.
    pub amount: Amount,
    /// To whom.
    pub address: Address,
}

/// An input: the output it spends and the key that owns it. The signature is kept apart, in
/// [`Transaction::signatures`], so that the txid can commit to the key but not the signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, BorshSerialize, BorshDeserialize)]
pub struct TxInput {
    /// The output spent.
    pub prevout: OutPoint,
    /// The key whose hash is the spent output's address.
    pub public_key: PublicKey,
}

/// A masternode tier. Collateral and weight per tier are chain parameters.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, BorshSerialize, BorshDeserialize,
)]
#[borsh(use_discriminant = true)]
pub enum Tier {
    /// The smallest tier.
    Bronze = 0,
    /// The middle tier.
    Silver = 1,
    /// The largest tier.
    Gold = 2,
}

impl Tier {
    /// All tiers, smallest first.
    pub const ALL: [Tier; 3] = [Tier::Bronze, Tier::Silver, Tier::Gold];

    /// The lower-case name.
    pub const fn name(self) -> &'static str {
        match self {
            Tier::Bronze => "bronze",
            Tier::Silver => "silver",
            Tier::Gold => "gold",
        }
    }
}

impl std::str::FromStr for Tier {
    type Err = String;
    fn from_str(text: &str) -> Result<Tier, String> {
        Tier::ALL
            .into_iter()
            .find(|tier| tier.name().eq_ignore_ascii_case(text))
            .ok_or_else(|| format!("unknown tier '{text}' (expected bronze, silver or gold)"))
    }
}

/// What a transaction does beyond moving value.
#[derive(Clone, Debug, PartialEq, Eq, Hash, BorshSerialize, BorshDeserialize)]
pub enum TxKind {
    /// Spends inputs into outputs; the difference is the fee.
    Transfer,
    /// Creates the block reward; has no inputs and appears only as a block's first transaction.
    /// The height makes every reward transaction's txid unique.
    Reward {
        /// The height of the block that carries it.
        height: Height,
    },
    /// Locks one of its own outputs as collateral and registers a masternode, effective from the
    /// next epoch.
    RegisterMasternode {
        /// Which output of this transaction is the collateral.
        collateral_output: u32,
        /// The key the masternode signs votes with (and its network identity).
        node_key: PublicKey,
        /// The tier, which fixes the exact collateral amount and the voting weight.
        tier: Tier,
        /// Where peers can reach the masternode, e.g. `/ip4/203.0.113.5/tcp/24100`.
        network_address: BoundedString<MAX_NETWORK_ADDRESS_LEN>,
    },
    /// Spends a masternode's collateral, ending its registration from the next epoch.
    DeregisterMasternode {
        /// The collateral output; it must be one of this transaction's inputs.
        collateral: OutPoint,
    },
}

/// Everything a transaction says, without its signatures; its hash is the txid.
#[derive(Clone, Debug, PartialEq, Eq, Hash, BorshSerialize, BorshDeserialize)]
pub struct TxBody {
    /// What the transaction does.
    pub kind: TxKind,
    /// The outputs spent.
    pub inputs: BoundedVec<TxInput, MAX_INPUTS>,
    /// The outputs created.
    pub outputs: BoundedVec<TxOut, MAX_OUTPUTS>,
}

/// A signed transaction.
#[derive(Clone, PartialEq, Eq, Hash, BorshSerialize, BorshDeserialize)]
pub struct Transaction {
    /// What it says. Change it through [`Transaction::body_mut`]: the txid is kept once
    /// computed (debug builds check that it still matches).
    pub body: TxBody,
    /// One signature per input, in order, by the input's key over
    /// [`Transaction::signing_message`]; a registration adds the node key's signature over
    /// [`Transaction::node_key_message`] last.
    pub signatures: BoundedVec<Signature, MAX_SIGNATURES>,
    #[borsh(skip)]
    txid: TxidCache,
}

impl std::fmt::Debug for Transaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transaction")
            .field("body", &self.body)
            .field("signatures", &self.signatures)
            .finish()
    }
}

/// A transaction's txid, kept once computed. A node asked for the txid of each transaction
/// about fifteen times on its way from the network to a block (pool, votes, certificate, block
/// checks, storage), each time encoding the body and hashing it: several per cent of its CPU
/// under load. Clones carry it; it takes no part in equality, hashing or the encoding.
#[derive(Clone, Default)]
struct TxidCache(std::sync::OnceLock<Txid>);

impl PartialEq for TxidCache {
    fn eq(&self, _: &TxidCache) -> bool {
        true
    }
}

impl Eq for TxidCache {}

impl std::hash::Hash for TxidCache {
    fn hash<H: std::hash::Hasher>(&self, _: &mut H) {}
}

/// Why a transaction could not be signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    /// The number of keys does not match the number of inputs.
    #[error("{inputs} inputs need {inputs} keys, got {keys}")]
    KeyCount {
        /// Inputs in the body.
        inputs: usize,
        /// Keys given.
        keys: usize,
    },
    /// A key does not own its input's declared public key.
    #[error("key for input {0} does not match the input's public key")]
    WrongKey(usize),
    /// A registration needs the node key, or a non-registration was given one.
    #[error("a node key must be given exactly when registering a masternode")]
    NodeKey,
}

impl TxBody {
    /// The txid: a hash of the body only, so signatures cannot change it (no malleability).
    pub fn txid(&self) -> Txid {
        Txid(Domain::Txid.hash(&[&encode(self)]))
    }

    /// The number of signatures a transaction with this body carries.
    pub fn expected_signatures(&self) -> usize {
        self.inputs.len() + usize::from(matches!(self.kind, TxKind::RegisterMasternode { .. }))
    }
}

impl Transaction {
    /// A transaction of `body` with `signatures`.
    pub fn new(body: TxBody, signatures: BoundedVec<Signature, MAX_SIGNATURES>) -> Transaction {
        Transaction {
            body,
            signatures,
            txid: TxidCache::default(),
        }
    }

    /// The body, to change it: the txid kept so far is dropped.
    pub fn body_mut(&mut self) -> &mut TxBody {
        self.txid = TxidCache::default();
        &mut self.body
    }

    /// The txid, computed the first time it is asked for.
    pub fn txid(&self) -> Txid {
        let txid = *self.txid.0.get_or_init(|| self.body.txid());
        debug_assert_eq!(
            txid,
            self.body.txid(),
            "a transaction's body changed after its txid was computed"
        );
        txid
    }

    /// The size of the canonical encoding in bytes, the basis of the fee rate.
    pub fn encoded_size(&self) -> usize {
        encoded_len(self)
    }

    /// Whether this is a block reward.
    pub fn is_reward(&self) -> bool {
        matches!(self.body.kind, TxKind::Reward { .. })
    }

    /// What every input signs: the txid and the network, so that a transaction signed for one
    /// network can never be replayed on another.
    pub fn signing_message(txid: &Txid, network: Network) -> [u8; 32] {
        Domain::TransactionSignature
            .hash(&[&[network.id()], txid.as_bytes()])
            .0
    }

    /// What a registering masternode's node key signs, proving the registrant holds that key.
    pub fn node_key_message(txid: &Txid, network: Network) -> [u8; 32] {
        Domain::NodeKeyProof
            .hash(&[&[network.id()], txid.as_bytes()])
            .0
    }

    /// Signs `body`: `input_keys[i]` signs input `i`; `node_key` is given exactly for a
    /// registration.
    pub fn sign(
        body: TxBody,
        input_keys: &[&SecretKey],
        node_key: Option<&SecretKey>,
        network: Network,
    ) -> Result<Transaction, SignError> {
        if input_keys.len() != body.inputs.len() {
            return Err(SignError::KeyCount {
                inputs: body.inputs.len(),
                keys: input_keys.len(),
            });
        }
        let registering = matches!(body.kind, TxKind::RegisterMasternode { .. });
        if registering != node_key.is_some() {
            return Err(SignError::NodeKey);
        }
        let txid = body.txid();
        let message = Self::signing_message(&txid, network);
        let mut signatures = Vec::with_capacity(body.expected_signatures());
        for (index, (input, key)) in body.inputs.iter().zip(input_keys).enumerate() {
            if key.public_key() != input.public_key {
                return Err(SignError::WrongKey(index));
            }
            signatures.push(key.sign(&message));
        }
        if let (
            TxKind::RegisterMasternode {
                node_key: declared, ..
            },
            Some(node_key),
        ) = (&body.kind, node_key)
        {
            if node_key.public_key() != *declared {
                return Err(SignError::NodeKey);
            }
            signatures.push(node_key.sign(&Self::node_key_message(&txid, network)));
        }
        let signatures = BoundedVec::new(signatures).expect("one signature per bounded input");
        Ok(Transaction::new(body, signatures))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::Hash32;

    fn key(seed: u8) -> SecretKey {
        SecretKey::from_bytes([seed; 32])
    }

    fn transfer(keys: &[&SecretKey]) -> TxBody {
        let inputs = keys
            .iter()
            .enumerate()
            .map(|(i, k)| TxInput {
                prevout: OutPoint {
                    txid: Txid(Hash32([i as u8; 32])),
                    index: 0,
                },
                public_key: k.public_key(),
            })
            .collect();
        TxBody {
            kind: TxKind::Transfer,
            inputs: BoundedVec::new(inputs).unwrap(),
            outputs: BoundedVec::new(vec![TxOut {
                amount: Amount::ONE_TIME,
                address: Address::from_public_key(&key(9).public_key()),
            }])
            .unwrap(),
        }
    }

    #[test]
    fn signatures_commit_to_txid_and_network() {
        let (a, b) = (key(1), key(2));
        let tx = Transaction::sign(transfer(&[&a, &b]), &[&a, &b], None, Network::Testnet).unwrap();
        let txid = tx.txid();
        let message = Transaction::signing_message(&txid, Network::Testnet);
        assert!(a.public_key().verify(&message, &tx.signatures[0]).is_ok());
        assert!(b.public_key().verify(&message, &tx.signatures[1]).is_ok());
        let other_network = Transaction::signing_message(&txid, Network::Mainnet);
        assert!(
            a.public_key()
                .verify(&other_network, &tx.signatures[0])
                .is_err()
        );
        assert_ne!(
            message,
            Transaction::node_key_message(&txid, Network::Testnet)
        );
    }

    #[test]
    fn the_kept_txid_follows_the_body_and_stays_out_of_equality_and_encoding() {
        let (a, b) = (key(1), key(2));
        let mut tx = Transaction::sign(transfer(&[&a]), &[&a], None, Network::Devnet).unwrap();
        let fresh = tx.clone();
        let txid = tx.txid();
        assert_eq!(txid, tx.body.txid());
        // One with its txid kept and one without are the same transaction, byte for byte.
        assert_eq!(tx, fresh);
        assert_eq!(encode(&tx), encode(&fresh));
        let decoded: Transaction = crate::decode(&encode(&tx)).unwrap();
        assert_eq!(decoded.txid(), txid);
        // A clone carries the kept txid; changing the body through body_mut drops it.
        assert_eq!(tx.clone().txid(), txid);
        tx.body_mut().inputs = transfer(&[&b]).inputs;
        assert_ne!(tx.txid(), txid);
        assert_eq!(tx.txid(), tx.body.txid());
    }

    #[test]
    fn signing_checks_keys() {
        let (a, b) = (key(1), key(2));
        assert_eq!(
            Transaction::sign(transfer(&[&a, &b]), &[&a], None, Network::Devnet),
            Err(SignError::KeyCount { inputs: 2, keys: 1 })
        );
        assert_eq!(
            Transaction::sign(transfer(&[&a, &b]), &[&b, &a], None, Network::Devnet),
            Err(SignError::WrongKey(0))
        );
        assert_eq!(
            Transaction::sign(transfer(&[&a]), &[&a], Some(&b), Network::Devnet),
            Err(SignError::NodeKey)
        );
    }

    #[test]
    fn registration_carries_a_node_key_proof() {
        let (owner, node) = (key(1), key(2));
        let mut body = transfer(&[&owner]);
        body.kind = TxKind::RegisterMasternode {
            collateral_output: 0,
            node_key: node.public_key(),
            tier: Tier::Bronze,
            network_address: BoundedString::new("/ip4/127.0.0.1/tcp/1").unwrap(),
        };
        assert_eq!(body.expected_signatures(), 2);
        assert_eq!(
            Transaction::sign(body.clone(), &[&owner], None, Network::Devnet),
            Err(SignError::NodeKey)
        );
        assert_eq!(
            Transaction::sign(body.clone(), &[&owner], Some(&owner), Network::Devnet),
            Err(SignError::NodeKey)
        );
        let tx = Transaction::sign(body, &[&owner], Some(&node), Network::Devnet).unwrap();
        let proof = Transaction::node_key_message(&tx.txid(), Network::Devnet);
        assert!(node.public_key().verify(&proof, &tx.signatures[1]).is_ok());
    }

    #[test]
    fn tier_names_parse() {
        assert_eq!("Gold".parse::<Tier>(), Ok(Tier::Gold));
        assert!("platinum".parse::<Tier>().is_err());
    }
}
