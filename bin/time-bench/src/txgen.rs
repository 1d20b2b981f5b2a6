//! Keys and transactions: the fan-out that funds senders and the payments they make.

use timecoin_primitives::codec::BoundedVec;
use timecoin_primitives::{
    Address, Amount, Network, OutPoint, SecretKey, Signature, Transaction, TxBody, TxInput, TxKind,
    TxOut,
};

/// A payer with two addresses: each payment spends one coin from each, so the two input
/// signatures are by different keys (identical signatures would flatter a verifier that caches).
pub struct Sender {
    /// First key; receives change and incoming payments.
    pub a: SecretKey,
    /// Second key.
    pub b: SecretKey,
    /// Address of `a`.
    pub addr_a: Address,
    /// Address of `b`.
    pub addr_b: Address,
}

/// `count` senders derived from `seed`; a fresh seed per run keeps runs on one devnet apart.
pub fn senders(count: usize, seed: [u8; 32]) -> Vec<Sender> {
    let key = |i: usize| {
        let mut input = seed.to_vec();
        input.extend_from_slice(&(i as u64).to_le_bytes());
        SecretKey::from_bytes(*blake3::hash(&input).as_bytes())
    };
    (0..count)
        .map(|s| {
            let (a, b) = (key(2 * s), key(2 * s + 1));
            Sender {
                addr_a: Address::from_public_key(&a.public_key()),
                addr_b: Address::from_public_key(&b.public_key()),
                a,
                b,
            }
        })
        .collect()
}

fn body(inputs: &[(OutPoint, &SecretKey)], outputs: Vec<TxOut>) -> TxBody {
    TxBody {
        kind: TxKind::Transfer,
        inputs: BoundedVec::new(
            inputs
                .iter()
                .map(|(prevout, key)| TxInput {
                    prevout: *prevout,
                    public_key: key.public_key(),
                })
                .collect(),
        )
        .expect("few inputs"),
        outputs: BoundedVec::new(outputs).expect("outputs within the limit"),
    }
}

/// The encoded size of a transfer with these inputs and outputs once signed (signatures have a
/// fixed size, so this is exact before signing).
pub fn signed_size(inputs: &[(OutPoint, &SecretKey)], outputs: Vec<TxOut>) -> usize {
    let body = body(inputs, outputs);
    let signatures = BoundedVec::new(vec![Signature([0; 64]); body.inputs.len()]).expect("few");
    Transaction::new(body, signatures).encoded_size()
}

/// Signs a transfer.
pub fn transfer(
    inputs: &[(OutPoint, &SecretKey)],
    outputs: Vec<TxOut>,
    network: Network,
) -> Transaction {
    let keys: Vec<&SecretKey> = inputs.iter().map(|(_, k)| *k).collect();
    Transaction::sign(body(inputs, outputs), &keys, None, network).expect("keys match inputs")
}

/// `units` as an amount.
pub fn units(units: u64) -> Amount {
    Amount::from_units(units).expect("within supply")
}

/// The fee of a standard payment (two inputs, two outputs) at `fee_rate` units per byte.
pub fn payment_fee(fee_rate: u64) -> u64 {
    let key = SecretKey::from_bytes([1; 32]);
    let prevout = OutPoint {
        txid: Default::default(),
        index: 0,
    };
    let addr = Address::from_public_key(&key.public_key());
    let out = TxOut {
        amount: units(1),
        address: addr,
    };
    signed_size(&[(prevout, &key), (prevout, &key)], vec![out, out]) as u64 * fee_rate
}

/// A payment: one coin of `coin_units` from each of the sender's keys, `pay_units` to
/// `receiver`, the rest less the fee back to the sender's first address.
pub fn payment(
    sender: &Sender,
    coins: (OutPoint, OutPoint),
    coin_units: u64,
    pay_units: u64,
    fee: u64,
    receiver: Address,
    network: Network,
) -> Transaction {
    let change = 2 * coin_units - pay_units - fee;
    transfer(
        &[(coins.0, &sender.a), (coins.1, &sender.b)],
        vec![
            TxOut {
                amount: units(pay_units),
                address: receiver,
            },
            TxOut {
                amount: units(change),
                address: sender.addr_a,
            },
        ],
        network,
    )
}
