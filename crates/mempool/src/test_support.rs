//! Builders for test transactions and blocks. Signatures are dummies: the pool never checks them.

use timecoin_primitives::{
    Address, Amount, Block, BlockHash, BlockHeader, BoundedVec, Epoch, Hash32, Height, OutPoint,
    PublicKey, Signature, Timestamp, Transaction, TxBody, TxInput, TxKind, TxOut, Txid,
};

/// An outpoint of a made-up confirmed transaction `n`.
pub fn confirmed(n: u32) -> OutPoint {
    let mut bytes = [0xC0; 32];
    bytes[..4].copy_from_slice(&n.to_le_bytes());
    OutPoint {
        txid: Txid(Hash32(bytes)),
        index: 0,
    }
}

/// Output `index` of `txid`.
pub fn output(txid: Txid, index: u32) -> OutPoint {
    OutPoint { txid, index }
}

/// A transfer spending `inputs` into `outputs` outputs; `nonce` goes into the amounts, so
/// transactions differing only in it have different txids.
pub fn transfer(inputs: &[OutPoint], outputs: usize, nonce: u64) -> Transaction {
    let body = TxBody {
        kind: TxKind::Transfer,
        inputs: BoundedVec::new(
            inputs
                .iter()
                .map(|prevout| TxInput {
                    prevout: *prevout,
                    public_key: PublicKey([7; 32]),
                })
                .collect(),
        )
        .unwrap(),
        outputs: BoundedVec::new(
            (0..outputs as u64)
                .map(|i| TxOut {
                    amount: Amount::from_units(nonce * 16 + i).unwrap(),
                    address: Address(Hash32([9; 32])),
                })
                .collect(),
        )
        .unwrap(),
    };
    let signatures = BoundedVec::new(vec![Signature([0; 64]); inputs.len()]).unwrap();
    Transaction::new(body, signatures)
}

/// A reward transaction for `height`.
pub fn reward(height: u64) -> Transaction {
    Transaction::new(
        TxBody {
            kind: TxKind::Reward {
                height: Height(height),
            },
            inputs: BoundedVec::empty(),
            outputs: BoundedVec::new(vec![TxOut {
                amount: Amount::ONE_TIME,
                address: Address(Hash32([9; 32])),
            }])
            .unwrap(),
        },
        BoundedVec::empty(),
    )
}

/// A block holding a reward and then `transactions`; the header is a placeholder, since the
/// pool looks only at the transactions.
pub fn block(transactions: Vec<Transaction>) -> Block {
    let mut all = vec![reward(1)];
    all.extend(transactions);
    Block {
        header: BlockHeader {
            version: 1,
            height: Height(1),
            previous_hash: BlockHash::default(),
            timestamp: Timestamp(0),
            epoch: Epoch(0),
            proposer: PublicKey::default(),
            transactions_root: Hash32::ZERO,
            utxo_commitment: Hash32::ZERO,
            parent_commit_hash: Hash32::ZERO,
        },
        transactions: BoundedVec::new(all).unwrap(),
        parent_commit: None,
    }
}

/// `units` base units.
pub fn units(units: u64) -> Amount {
    Amount::from_units(units).unwrap()
}
