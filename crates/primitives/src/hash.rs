//! BLAKE3 hashes with domain separation, and the hash newtypes.

use std::fmt;
use std::str::FromStr;
use std::sync::LazyLock;

use borsh::{BorshDeserialize, BorshSerialize};

/// What a hash is of. Each purpose hashes in BLAKE3's key-derivation mode with its own context
/// string, so a value of one kind can never be passed off as the hash of another kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Domain {
    /// A transaction body, giving its txid.
    Txid,
    /// A block header, giving the block hash.
    BlockHeader,
    /// A leaf of the transaction Merkle tree.
    MerkleLeaf,
    /// An inner node of the transaction Merkle tree.
    MerkleNode,
    /// The message a transaction input signs.
    TransactionSignature,
    /// A public key, giving the address that pays to it.
    Address,
    /// A UTXO, expanded into its multiset-hash element.
    UtxoElement,
    /// The multiset-hash state, condensed into the header commitment.
    UtxoCommitment,
    /// The message a masternode signs to prove it holds its node key at registration.
    NodeKeyProof,
    /// A consensus vote (used by the consensus crate).
    ConsensusVote,
    /// The transcript that seeds a signature batch's random coefficients.
    BatchVerification,
    /// A commit certificate, as a block header commits to its parent's.
    CommitCertificate,
}

impl Domain {
    /// The BLAKE3 key-derivation context. Changing one is a hard fork.
    pub const fn context(self) -> &'static str {
        match self {
            Domain::Txid => "TimeCoin 2026-11 txid",
            Domain::BlockHeader => "TimeCoin 2026-11 block header",
            Domain::MerkleLeaf => "TimeCoin 2026-11 merkle leaf",
            Domain::MerkleNode => "TimeCoin 2026-11 merkle node",
            Domain::TransactionSignature => "TimeCoin 2026-11 transaction signature",
            Domain::Address => "TimeCoin 2026-11 address",
            Domain::UtxoElement => "TimeCoin 2026-11 utxo element",
            Domain::UtxoCommitment => "TimeCoin 2026-11 utxo commitment",
            Domain::NodeKeyProof => "TimeCoin 2026-11 node key proof",
            Domain::ConsensusVote => "TimeCoin 2026-11 consensus vote",
            Domain::BatchVerification => "TimeCoin 2026-11 batch verification",
            Domain::CommitCertificate => "TimeCoin 2026-11 commit certificate",
        }
    }

    /// Every domain, in declaration order (the order of [`Domain::index`]).
    const ALL: [Domain; 12] = [
        Domain::Txid,
        Domain::BlockHeader,
        Domain::MerkleLeaf,
        Domain::MerkleNode,
        Domain::TransactionSignature,
        Domain::Address,
        Domain::UtxoElement,
        Domain::UtxoCommitment,
        Domain::NodeKeyProof,
        Domain::ConsensusVote,
        Domain::BatchVerification,
        Domain::CommitCertificate,
    ];

    const fn index(self) -> usize {
        self as usize
    }

    /// A hasher for this domain, for inputs that arrive in pieces.
    pub fn hasher(self) -> blake3::Hasher {
        // Deriving the key hashes the context string: one more compression per hash, and most
        // hashed values (txids, Merkle nodes, signing messages) are only one or two blocks long.
        // A hasher with the key already derived is cloned instead; the result is the same.
        static DERIVED: LazyLock<[blake3::Hasher; 12]> = LazyLock::new(|| {
            Domain::ALL.map(|domain| blake3::Hasher::new_derive_key(domain.context()))
        });
        DERIVED[self.index()].clone()
    }

    /// Hashes `parts`, concatenated, in this domain.
    pub fn hash(self, parts: &[&[u8]]) -> Hash32 {
        let mut hasher = self.hasher();
        for part in parts {
            hasher.update(part);
        }
        Hash32(*hasher.finalize().as_bytes())
    }
}

/// A 32-byte hash.
#[derive(
    Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, BorshSerialize, BorshDeserialize,
)]
pub struct Hash32(pub [u8; 32]);

/// Why text is not a hash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a 64-digit hexadecimal hash")]
pub struct ParseHashError(pub String);

impl Hash32 {
    /// The all-zero hash, used as the parent of genesis.
    pub const ZERO: Hash32 = Hash32([0; 32]);

    /// The bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for Hash32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Hash32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Hash32 {
    type Err = ParseHashError;
    fn from_str(text: &str) -> Result<Self, ParseHashError> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text, &mut bytes).map_err(|_| ParseHashError(text.to_string()))?;
        Ok(Hash32(bytes))
    }
}

macro_rules! hash_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, BorshSerialize,
            BorshDeserialize,
        )]
        pub struct $name(pub Hash32);

        impl $name {
            /// The bytes.
            pub const fn as_bytes(&self) -> &[u8; 32] {
                &self.0 .0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl FromStr for $name {
            type Err = ParseHashError;
            fn from_str(text: &str) -> Result<Self, ParseHashError> {
                text.parse().map($name)
            }
        }
    };
}

hash_newtype!(
    /// A transaction's identifier: the hash of its body, signatures excluded.
    Txid
);
hash_newtype!(
    /// A block's identifier: the hash of its header.
    BlockHash
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_separate() {
        let a = Domain::Txid.hash(&[b"x"]);
        let b = Domain::BlockHeader.hash(&[b"x"]);
        assert_ne!(a, b);
        assert_eq!(a, Domain::Txid.hash(&[b"x"]));
        assert_eq!(
            Domain::Txid.hash(&[b"ab", b"c"]),
            Domain::Txid.hash(&[b"abc"])
        );
    }

    #[test]
    fn a_cloned_domain_hasher_hashes_as_a_freshly_derived_one() {
        for (position, domain) in Domain::ALL.into_iter().enumerate() {
            assert_eq!(
                domain.index(),
                position,
                "{domain:?} is out of order in Domain::ALL"
            );
            let fresh = blake3::Hasher::new_derive_key(domain.context())
                .update(b"payload")
                .finalize();
            assert_eq!(
                domain.hash(&[b"pay", b"load"]).0,
                *fresh.as_bytes(),
                "{domain:?}"
            );
        }
        // A known answer, so that a change to how hashers are made cannot change every hash
        // and every expected value with it unnoticed.
        assert_eq!(
            Domain::Txid.hash(&[b"x"]).to_string(),
            hex::encode(blake3::derive_key("TimeCoin 2026-11 txid", b"x"))
        );
    }

    #[test]
    fn hex_round_trip_and_errors() {
        let hash = Domain::Txid.hash(&[b"y"]);
        let txid = Txid(hash);
        assert_eq!(txid.to_string().parse::<Txid>().unwrap(), txid);
        assert!("zz".parse::<Hash32>().is_err());
        assert!("00".parse::<Hash32>().is_err());
    }
}
