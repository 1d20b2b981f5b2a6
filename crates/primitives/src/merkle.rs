//! The transaction Merkle tree of a block, and inclusion proofs for light clients.
//!
//! Leaves and inner nodes hash in different domains, and a node without a sibling is promoted
//! unchanged instead of being paired with itself: Bitcoin's duplication rule let two different
//! transaction lists share a root (CVE-2012-2459).

use borsh::{BorshDeserialize, BorshSerialize};

use crate::codec::BoundedVec;
use crate::hash::{Domain, Hash32, Txid};

/// Deepest proof: enough for 2^32 leaves.
pub const MAX_PROOF_DEPTH: usize = 32;

/// The root over `txids` in order; the all-zero hash for none.
pub fn merkle_root(txids: &[Txid]) -> Hash32 {
    if txids.is_empty() {
        return Hash32::ZERO;
    }
    let mut level: Vec<Hash32> = txids.iter().map(leaf).collect();
    while level.len() > 1 {
        level = next_level(&level);
    }
    level[0]
}

/// Pairs up a level; a last node without a partner moves up unchanged.
fn next_level(level: &[Hash32]) -> Vec<Hash32> {
    level
        .chunks(2)
        .map(|pair| {
            if let [l, r] = pair {
                node(l, r)
            } else {
                pair[0]
            }
        })
        .collect()
}

fn leaf(txid: &Txid) -> Hash32 {
    Domain::MerkleLeaf.hash(&[txid.as_bytes()])
}

fn node(left: &Hash32, right: &Hash32) -> Hash32 {
    Domain::MerkleNode.hash(&[&left.0, &right.0])
}

/// A proof that a txid is the `index`-th leaf of a tree with `leaf_count` leaves.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct MerkleProof {
    /// The leaf's position.
    pub index: u32,
    /// The number of leaves in the tree.
    pub leaf_count: u32,
    /// The sibling hashes from the leaf upwards, skipping levels where the node had none.
    pub siblings: BoundedVec<Hash32, MAX_PROOF_DEPTH>,
}

impl MerkleProof {
    /// The proof for leaf `index` of `txids`, or `None` if out of range.
    pub fn build(txids: &[Txid], index: usize) -> Option<MerkleProof> {
        if index >= txids.len() || txids.len() > u32::MAX as usize {
            return None;
        }
        let mut level: Vec<Hash32> = txids.iter().map(leaf).collect();
        let mut position = index;
        let mut siblings = BoundedVec::empty();
        while level.len() > 1 {
            let sibling = position ^ 1;
            if sibling < level.len() {
                siblings.push(level[sibling]).ok()?;
            }
            level = next_level(&level);
            position /= 2;
        }
        Some(MerkleProof {
            index: index as u32,
            leaf_count: txids.len() as u32,
            siblings,
        })
    }

    /// Whether the proof shows `txid` under `root`.
    pub fn verify(&self, txid: &Txid, root: &Hash32) -> bool {
        if self.index >= self.leaf_count {
            return false;
        }
        let mut hash = leaf(txid);
        let mut position = self.index as u64;
        let mut width = self.leaf_count as u64;
        let mut siblings = self.siblings.iter();
        while width > 1 {
            let sibling = position ^ 1;
            if sibling < width {
                let Some(other) = siblings.next() else {
                    return false;
                };
                hash = if position.is_multiple_of(2) {
                    node(&hash, other)
                } else {
                    node(other, &hash)
                };
            }
            position /= 2;
            width = width.div_ceil(2);
        }
        siblings.next().is_none() && hash == *root
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn txids(n: usize) -> Vec<Txid> {
        (0..n)
            .map(|i| Txid(Domain::Txid.hash(&[&(i as u64).to_le_bytes()])))
            .collect()
    }

    #[test]
    fn every_leaf_proves_and_nothing_else_does() {
        for n in 1..20 {
            let ids = txids(n);
            let root = merkle_root(&ids);
            for i in 0..n {
                let proof = MerkleProof::build(&ids, i).unwrap();
                assert!(proof.verify(&ids[i], &root), "n={n} i={i}");
                let other = ids[(i + 1) % n];
                if n > 1 {
                    assert!(!proof.verify(&other, &root));
                }
                let mut bad = proof.clone();
                bad.index = (bad.index + 1) % n as u32;
                if n > 1 {
                    assert!(!bad.verify(&ids[i], &root));
                }
            }
            assert!(MerkleProof::build(&ids, n).is_none());
        }
    }

    #[test]
    fn odd_duplication_does_not_collide() {
        let ids = txids(3);
        let mut duplicated = ids.clone();
        duplicated.push(ids[2]);
        assert_ne!(merkle_root(&ids), merkle_root(&duplicated));
        assert_eq!(merkle_root(&[]), Hash32::ZERO);
        assert_ne!(merkle_root(&ids[..1]), Hash32(*ids[0].as_bytes()));
    }
}
