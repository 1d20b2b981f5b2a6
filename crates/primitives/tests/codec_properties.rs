//! Property tests of the canonical encoding: every value round-trips, and any byte string that
//! decodes at all is the one encoding of the value it decodes to.

use proptest::prelude::*;
use timecoin_primitives::block::{Block, BlockHeader, CommitCertificate, CommitVote};
use timecoin_primitives::codec::{BoundedString, BoundedVec, decode, encode, encoded_len};
use timecoin_primitives::hash::{BlockHash, Hash32, Txid};
use timecoin_primitives::{
    Address, Amount, Epoch, Height, OutPoint, PublicKey, Signature, Tier, Timestamp, Transaction,
    TxBody, TxInput, TxKind, TxOut,
};

fn hash32() -> impl Strategy<Value = Hash32> {
    any::<[u8; 32]>().prop_map(Hash32)
}

fn amount() -> impl Strategy<Value = Amount> {
    (0..=Amount::MAX.units()).prop_map(|units| Amount::from_units(units).unwrap())
}

fn outpoint() -> impl Strategy<Value = OutPoint> {
    (hash32(), any::<u32>()).prop_map(|(hash, index)| OutPoint {
        txid: Txid(hash),
        index,
    })
}

fn signature() -> impl Strategy<Value = Signature> {
    (any::<[u8; 32]>(), any::<[u8; 32]>()).prop_map(|(a, b)| {
        let mut bytes = [0u8; 64];
        bytes[..32].copy_from_slice(&a);
        bytes[32..].copy_from_slice(&b);
        Signature(bytes)
    })
}

fn kind() -> impl Strategy<Value = TxKind> {
    prop_oneof![
        Just(TxKind::Transfer),
        any::<u64>().prop_map(|h| TxKind::Reward { height: Height(h) }),
        (any::<u32>(), any::<[u8; 32]>(), 0..3u8, "[ -~]{0,40}").prop_map(
            |(collateral_output, key, tier, address)| TxKind::RegisterMasternode {
                collateral_output,
                node_key: PublicKey(key),
                tier: Tier::ALL[tier as usize],
                network_address: BoundedString::new(address).unwrap(),
            }
        ),
        outpoint().prop_map(|collateral| TxKind::DeregisterMasternode { collateral }),
    ]
}

fn transaction() -> impl Strategy<Value = Transaction> {
    let input = (outpoint(), any::<[u8; 32]>()).prop_map(|(prevout, key)| TxInput {
        prevout,
        public_key: PublicKey(key),
    });
    let output = (amount(), hash32()).prop_map(|(amount, hash)| TxOut {
        amount,
        address: Address(hash),
    });
    (
        kind(),
        prop::collection::vec(input, 0..4),
        prop::collection::vec(output, 0..4),
        prop::collection::vec(signature(), 0..5),
    )
        .prop_map(|(kind, inputs, outputs, signatures)| {
            Transaction::new(
                TxBody {
                    kind,
                    inputs: BoundedVec::new(inputs).unwrap(),
                    outputs: BoundedVec::new(outputs).unwrap(),
                },
                BoundedVec::new(signatures).unwrap(),
            )
        })
}

fn header() -> impl Strategy<Value = BlockHeader> {
    (
        any::<u32>(),
        any::<u64>(),
        hash32(),
        any::<u64>(),
        any::<u64>(),
        any::<[u8; 32]>(),
        hash32(),
        hash32(),
        hash32(),
    )
        .prop_map(
            |(version, height, previous, time, epoch, proposer, root, utxo, parent_commit)| {
                BlockHeader {
                    version,
                    height: Height(height),
                    previous_hash: BlockHash(previous),
                    timestamp: Timestamp(time),
                    epoch: Epoch(epoch),
                    proposer: PublicKey(proposer),
                    transactions_root: root,
                    utxo_commitment: utxo,
                    parent_commit_hash: parent_commit,
                }
            },
        )
}

fn block() -> impl Strategy<Value = Block> {
    (
        header(),
        prop::collection::vec(transaction(), 0..4),
        prop::option::of(certificate()),
    )
        .prop_map(|(header, transactions, parent_commit)| Block {
            header,
            transactions: BoundedVec::new(transactions).unwrap(),
            parent_commit: parent_commit.map(Box::new),
        })
}

fn certificate() -> impl Strategy<Value = CommitCertificate> {
    let vote = (any::<[u8; 32]>(), signature()).prop_map(|(key, signature)| CommitVote {
        voter: PublicKey(key),
        signature,
    });
    (
        any::<u64>(),
        any::<u32>(),
        hash32(),
        prop::collection::vec(vote, 0..5),
    )
        .prop_map(|(height, view, hash, votes)| CommitCertificate {
            height: Height(height),
            view,
            block_hash: BlockHash(hash),
            votes: BoundedVec::new(votes).unwrap(),
        })
}

/// A damaged copy of `bytes`: one byte changed, truncated, or extended.
fn mutate(bytes: &[u8], choice: u8, position: usize, value: u8) -> Vec<u8> {
    let mut out = bytes.to_vec();
    match choice % 3 {
        0 if !out.is_empty() => {
            let i = position % out.len();
            out[i] = out[i].wrapping_add(value.max(1));
        }
        1 if !out.is_empty() => out.truncate(position % out.len()),
        _ => out.push(value),
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn transactions_round_trip(tx in transaction()) {
        let bytes = encode(&tx);
        prop_assert_eq!(decode::<Transaction>(&bytes).unwrap(), tx.clone());
        prop_assert_eq!(tx.encoded_size(), bytes.len());
    }

    #[test]
    fn blocks_and_certificates_round_trip(block in block(), certificate in certificate()) {
        prop_assert_eq!(encoded_len(&block), encode(&block).len());
        prop_assert_eq!(decode::<Block>(&encode(&block)).unwrap(), block);
        prop_assert_eq!(decode::<CommitCertificate>(&encode(&certificate)).unwrap(), certificate);
    }

    #[test]
    fn damaged_transactions_are_rejected_or_canonical(
        tx in transaction(), choice in any::<u8>(), position in any::<usize>(), value in any::<u8>()
    ) {
        let damaged = mutate(&encode(&tx), choice, position, value);
        if let Ok(decoded) = decode::<Transaction>(&damaged) {
            prop_assert_eq!(encode(&decoded), damaged);
        }
    }

    #[test]
    fn damaged_blocks_are_rejected_or_canonical(
        block in block(), choice in any::<u8>(), position in any::<usize>(), value in any::<u8>()
    ) {
        let damaged = mutate(&encode(&block), choice, position, value);
        if let Ok(decoded) = decode::<Block>(&damaged) {
            prop_assert_eq!(encode(&decoded), damaged);
        }
    }

    #[test]
    fn signatures_do_not_change_the_txid(tx in transaction(), other in signature()) {
        let mut resigned = tx.clone();
        resigned.signatures = BoundedVec::new(vec![other]).unwrap();
        prop_assert_eq!(resigned.txid(), tx.txid());
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_decode_canonically(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(tx) = decode::<Transaction>(&bytes) {
            prop_assert_eq!(encode(&tx), bytes.clone());
        }
        if let Ok(header) = decode::<BlockHeader>(&bytes) {
            prop_assert_eq!(encode(&header), bytes);
        }
    }
}
