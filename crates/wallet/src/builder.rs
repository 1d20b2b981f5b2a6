//! Coin selection and the building and signing of transactions.

use timecoin_primitives::codec::{BoundedString, BoundedVec};
use timecoin_primitives::transaction::MAX_INPUTS;
use timecoin_primitives::{
    Address, Amount, OutPoint, SecretKey, Signature, Tier, Transaction, TxBody, TxInput, TxKind,
    TxOut,
};

use crate::keystore::{Keystore, WalletError};

/// Change smaller than this many base units is left to the fee rather than creating an output
/// that costs more to spend than it is worth.
pub const DUST_LIMIT: u64 = 10_000;

/// A spendable output the wallet owns, as a node's address index reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Coin {
    /// Where it is.
    pub outpoint: OutPoint,
    /// How much.
    pub amount: Amount,
    /// Which of the wallet's addresses owns it.
    pub address: Address,
    /// Whether it is masternode collateral (never spent by a transfer).
    pub is_collateral: bool,
}

/// A signed transaction with what it costs.
#[derive(Clone, Debug)]
pub struct BuiltTransaction {
    /// The transaction, ready to send.
    pub transaction: Transaction,
    /// The fee it pays.
    pub fee: Amount,
    /// The change it returns to the wallet, if any.
    pub change: Option<Amount>,
}

/// The fee for a transaction of `size` bytes at `fee_rate` base units per byte, rounded up.
fn fee_for(size: usize, fee_rate: u64) -> Result<Amount, WalletError> {
    (size as u64)
        .checked_mul(fee_rate)
        .and_then(|units| Amount::from_units(units).ok())
        .ok_or_else(|| WalletError::InvalidRequest("fee rate too high".into()))
}

/// The encoded size of a body once signed. Signatures have a fixed size and amounts a fixed width,
/// so this is exact before the amounts are known.
fn signed_size(body: &TxBody) -> usize {
    let signatures = vec![Signature([0; 64]); body.expected_signatures()];
    Transaction::new(body.clone(), BoundedVec::new(signatures).expect("bounded")).encoded_size()
}

fn sum(amounts: impl IntoIterator<Item = Amount>) -> Result<Amount, WalletError> {
    Amount::checked_sum(amounts)
        .ok_or_else(|| WalletError::InvalidRequest("amounts exceed the supply cap".into()))
}

struct Funded {
    inputs: Vec<Coin>,
    fee: Amount,
    change: Option<Amount>,
}

/// Picks coins, largest first, until they pay `outputs` plus the fee of the transaction that
/// spends them. `make_body` builds the body for given inputs and optional change so its exact
/// size can be measured.
fn fund(
    coins: &[Coin],
    payments_total: Amount,
    fee_rate: u64,
    make_body: &dyn Fn(&[Coin], Option<Amount>) -> TxBody,
) -> Result<Funded, WalletError> {
    let mut candidates: Vec<Coin> = coins.iter().copied().filter(|c| !c.is_collateral).collect();
    // Largest first keeps transactions small; ties by outpoint keep the choice reproducible.
    candidates.sort_by(|a, b| b.amount.cmp(&a.amount).then(a.outpoint.cmp(&b.outpoint)));
    let available = sum(candidates.iter().map(|c| c.amount))?;
    let mut chosen: Vec<Coin> = Vec::new();
    let mut total = Amount::ZERO;
    let mut needed = payments_total;
    for coin in candidates.into_iter().take(MAX_INPUTS) {
        chosen.push(coin);
        total = sum([total, coin.amount])?;
        let fee_with_change = fee_for(
            signed_size(&make_body(&chosen, Some(Amount::ZERO))),
            fee_rate,
        )?;
        let fee_without = fee_for(signed_size(&make_body(&chosen, None)), fee_rate)?;
        needed = sum([payments_total, fee_without])?;
        let Some(excess) = total.checked_sub(needed) else {
            continue;
        };
        // Excess beyond the fee of a change output goes back to us, unless it is dust.
        let change = excess
            .checked_sub(
                fee_with_change
                    .checked_sub(fee_without)
                    .unwrap_or(Amount::ZERO),
            )
            .filter(|c| c.units() >= DUST_LIMIT);
        return Ok(match change {
            Some(change) => Funded {
                inputs: chosen,
                fee: fee_with_change,
                change: Some(change),
            },
            None => Funded {
                inputs: chosen,
                fee: excess.checked_add(fee_without).expect("≤ total"),
                change: None,
            },
        });
    }
    Err(WalletError::InsufficientFunds { available, needed })
}

fn inputs_of(coins: &[Coin], keystore: &Keystore) -> Result<Vec<TxInput>, WalletError> {
    coins
        .iter()
        .map(|coin| {
            let key = keystore
                .key_for(&coin.address)
                .ok_or_else(|| WalletError::MissingKey(coin.address.encode(keystore.network())))?;
            Ok(TxInput {
                prevout: coin.outpoint,
                public_key: key.public_key(),
            })
        })
        .collect()
}

fn body(kind: TxKind, inputs: Vec<TxInput>, outputs: Vec<TxOut>) -> Result<TxBody, WalletError> {
    Ok(TxBody {
        kind,
        inputs: BoundedVec::new(inputs)
            .map_err(|e| WalletError::InvalidRequest(format!("too many inputs: {e}")))?,
        outputs: BoundedVec::new(outputs)
            .map_err(|e| WalletError::InvalidRequest(format!("too many outputs: {e}")))?,
    })
}

fn sign(
    body: TxBody,
    keystore: &Keystore,
    node_key: Option<&SecretKey>,
) -> Result<Transaction, WalletError> {
    let keys: Vec<&SecretKey> = body
        .inputs
        .iter()
        .map(|input| {
            keystore.key_for_public(&input.public_key).ok_or_else(|| {
                WalletError::MissingKey(
                    Address::from_public_key(&input.public_key).encode(keystore.network()),
                )
            })
        })
        .collect::<Result<_, _>>()?;
    Transaction::sign(body, &keys, node_key, keystore.network())
        .map_err(|e| WalletError::InvalidRequest(e.to_string()))
}

/// Funds a transaction of `kind` paying `outputs` (worth `total`) from `coins`, adds change to
/// `change_address` when it is worth keeping, and signs it.
#[allow(clippy::too_many_arguments)]
fn fund_and_sign(
    keystore: &Keystore,
    coins: &[Coin],
    kind: TxKind,
    outputs: Vec<TxOut>,
    total: Amount,
    change_address: Address,
    fee_rate: u64,
    node_key: Option<&SecretKey>,
) -> Result<BuiltTransaction, WalletError> {
    let with_change = |change: Option<Amount>| {
        let mut all = outputs.clone();
        all.extend(change.map(|amount| TxOut {
            amount,
            address: change_address,
        }));
        all
    };
    let make_body = |chosen: &[Coin], change: Option<Amount>| {
        // Keys do not change the size, so placeholders measure the same as the real inputs.
        let inputs = chosen
            .iter()
            .map(|c| TxInput {
                prevout: c.outpoint,
                public_key: Default::default(),
            })
            .collect();
        body(kind.clone(), inputs, with_change(change)).expect("bounded by construction")
    };
    let funded = fund(coins, total, fee_rate, &make_body)?;
    let body = body(
        kind.clone(),
        inputs_of(&funded.inputs, keystore)?,
        with_change(funded.change),
    )?;
    Ok(BuiltTransaction {
        transaction: sign(body, keystore, node_key)?,
        fee: funded.fee,
        change: funded.change,
    })
}

/// Builds and signs a payment of `payments` from `coins`, paying `fee_rate` base units per byte
/// and returning change to `change_address`.
pub fn build_transfer(
    keystore: &Keystore,
    coins: &[Coin],
    payments: &[(Address, Amount)],
    change_address: Address,
    fee_rate: u64,
) -> Result<BuiltTransaction, WalletError> {
    if payments.is_empty() {
        return Err(WalletError::InvalidRequest("no payment given".into()));
    }
    if payments.iter().any(|(_, amount)| amount.is_zero()) {
        return Err(WalletError::InvalidRequest(
            "amounts must be positive".into(),
        ));
    }
    let payment_outputs: Vec<TxOut> = payments
        .iter()
        .map(|&(address, amount)| TxOut { amount, address })
        .collect();
    let total = sum(payments.iter().map(|p| p.1))?;
    fund_and_sign(
        keystore,
        coins,
        TxKind::Transfer,
        payment_outputs,
        total,
        change_address,
        fee_rate,
        None,
    )
}

/// Builds and signs a masternode registration: output 0 locks `collateral` (which must be the
/// tier's exact collateral) to `owner`; the node key signs the proof that it agrees.
#[allow(clippy::too_many_arguments)]
pub fn build_registration(
    keystore: &Keystore,
    coins: &[Coin],
    tier: Tier,
    collateral: Amount,
    owner: Address,
    node_key: &SecretKey,
    network_address: &str,
    change_address: Address,
    fee_rate: u64,
) -> Result<BuiltTransaction, WalletError> {
    let network_address = BoundedString::new(network_address)
        .map_err(|e| WalletError::InvalidRequest(format!("network address too long: {e}")))?;
    let kind = TxKind::RegisterMasternode {
        collateral_output: 0,
        node_key: node_key.public_key(),
        tier,
        network_address,
    };
    let collateral_output = TxOut {
        amount: collateral,
        address: owner,
    };
    fund_and_sign(
        keystore,
        coins,
        kind,
        vec![collateral_output],
        collateral,
        change_address,
        fee_rate,
        Some(node_key),
    )
}

/// Builds and signs a deregistration that spends `collateral` and pays it, less the fee, to
/// `destination`.
pub fn build_deregistration(
    keystore: &Keystore,
    collateral: Coin,
    destination: Address,
    fee_rate: u64,
) -> Result<BuiltTransaction, WalletError> {
    if !collateral.is_collateral {
        return Err(WalletError::InvalidRequest(format!(
            "{} is not masternode collateral",
            collateral.outpoint
        )));
    }
    let kind = TxKind::DeregisterMasternode {
        collateral: collateral.outpoint,
    };
    let inputs = inputs_of(&[collateral], keystore)?;
    let draft = body(
        kind.clone(),
        inputs.clone(),
        vec![TxOut {
            amount: Amount::ZERO,
            address: destination,
        }],
    )?;
    let fee = fee_for(signed_size(&draft), fee_rate)?;
    let amount = collateral
        .amount
        .checked_sub(fee)
        .filter(|a| !a.is_zero())
        .ok_or(WalletError::InsufficientFunds {
            available: collateral.amount,
            needed: fee,
        })?;
    let body = body(
        kind,
        inputs,
        vec![TxOut {
            amount,
            address: destination,
        }],
    )?;
    Ok(BuiltTransaction {
        transaction: sign(body, keystore, None)?,
        fee,
        change: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keystore::KdfParams;
    use timecoin_primitives::hash::{Hash32, Txid};
    use timecoin_primitives::{Network, SecretKey};

    const RATE: u64 = 10;

    struct Fixture {
        _dir: tempfile::TempDir,
        wallet: Keystore,
        address: Address,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let mut wallet = Keystore::create(
            &dir.path().join("w.json"),
            b"pw",
            Network::Devnet,
            KdfParams::INSECURE_FOR_TESTS,
        )
        .unwrap();
        let address = wallet
            .import_key(SecretKey::from_bytes([7; 32]), "main")
            .unwrap();
        Fixture {
            _dir: dir,
            wallet,
            address,
        }
    }

    fn coin(n: u8, time: u64, address: Address) -> Coin {
        Coin {
            outpoint: OutPoint {
                txid: Txid(Hash32([n; 32])),
                index: 0,
            },
            amount: Amount::from_time(time).unwrap(),
            address,
            is_collateral: false,
        }
    }

    fn other() -> Address {
        Address::from_public_key(&SecretKey::from_bytes([8; 32]).public_key())
    }

    #[test]
    fn transfer_balances_and_signs() {
        let f = fixture();
        let coins = [
            coin(1, 5, f.address),
            coin(2, 20, f.address),
            coin(3, 1, f.address),
        ];
        let pay = Amount::from_time(12).unwrap();
        let built = build_transfer(&f.wallet, &coins, &[(other(), pay)], f.address, RATE).unwrap();
        let tx = &built.transaction;
        // Largest coin first: the 20 TIME coin alone pays.
        assert_eq!(tx.body.inputs.len(), 1);
        assert_eq!(tx.body.inputs[0].prevout, coins[1].outpoint);
        let outputs = Amount::checked_sum(tx.body.outputs.iter().map(|o| o.amount)).unwrap();
        assert_eq!(outputs.checked_add(built.fee).unwrap(), coins[1].amount);
        assert_eq!(built.fee.units(), tx.encoded_size() as u64 * RATE);
        assert_eq!(built.change, Some(tx.body.outputs[1].amount));
        let message = Transaction::signing_message(&tx.txid(), Network::Devnet);
        assert!(
            tx.body.inputs[0]
                .public_key
                .verify(&message, &tx.signatures[0])
                .is_ok()
        );
    }

    #[test]
    fn several_coins_when_needed_and_collateral_never() {
        let f = fixture();
        let mut locked = coin(9, 1000, f.address);
        locked.is_collateral = true;
        let coins = [coin(1, 5, f.address), coin(2, 6, f.address), locked];
        let pay = Amount::from_time(10).unwrap();
        let built = build_transfer(&f.wallet, &coins, &[(other(), pay)], f.address, RATE).unwrap();
        assert_eq!(built.transaction.body.inputs.len(), 2);
        assert!(
            built
                .transaction
                .body
                .inputs
                .iter()
                .all(|i| i.prevout != locked.outpoint)
        );
    }

    #[test]
    fn dust_change_goes_to_the_fee() {
        let f = fixture();
        let coins = [coin(1, 1, f.address)];
        // Leave less than DUST_LIMIT after a change-less fee.
        let probe = build_transfer(
            &f.wallet,
            &coins,
            &[(other(), Amount::from_units(1000).unwrap())],
            f.address,
            RATE,
        )
        .unwrap();
        // A change output is 40 bytes: an 8-byte amount and a 32-byte address.
        assert!(probe.change.is_some());
        let fee_without_change = (probe.transaction.encoded_size() as u64 - 40) * RATE;
        let pay = Amount::from_units(Amount::ONE_TIME.units() - fee_without_change - 5).unwrap();
        let built = build_transfer(&f.wallet, &coins, &[(other(), pay)], f.address, RATE).unwrap();
        assert_eq!(built.change, None);
        assert_eq!(built.transaction.body.outputs.len(), 1);
        assert_eq!(built.fee.checked_add(pay).unwrap(), Amount::ONE_TIME);
        assert!(built.fee.units() >= built.transaction.encoded_size() as u64 * RATE);
    }

    #[test]
    fn insufficient_funds_and_bad_requests() {
        let f = fixture();
        let coins = [coin(1, 5, f.address)];
        let error = build_transfer(
            &f.wallet,
            &coins,
            &[(other(), Amount::from_time(5).unwrap())],
            f.address,
            RATE,
        )
        .unwrap_err();
        assert!(
            matches!(error, WalletError::InsufficientFunds { .. }),
            "{error}"
        );
        assert!(matches!(
            build_transfer(&f.wallet, &coins, &[], f.address, RATE),
            Err(WalletError::InvalidRequest(_))
        ));
        assert!(matches!(
            build_transfer(
                &f.wallet,
                &coins,
                &[(other(), Amount::ZERO)],
                f.address,
                RATE
            ),
            Err(WalletError::InvalidRequest(_))
        ));
        let foreign = [coin(4, 50, other())];
        assert!(matches!(
            build_transfer(
                &f.wallet,
                &foreign,
                &[(other(), Amount::ONE_TIME)],
                f.address,
                RATE
            ),
            Err(WalletError::MissingKey(_))
        ));
    }

    #[test]
    fn registration_and_deregistration() {
        let f = fixture();
        let node = SecretKey::from_bytes([11; 32]);
        let coins = [coin(1, 1500, f.address)];
        let collateral = Amount::from_time(1000).unwrap();
        let built = build_registration(
            &f.wallet,
            &coins,
            Tier::Bronze,
            collateral,
            f.address,
            &node,
            "/ip4/127.0.0.1/tcp/9",
            f.address,
            RATE,
        )
        .unwrap();
        let tx = &built.transaction;
        assert_eq!(tx.body.outputs[0].amount, collateral);
        assert_eq!(tx.signatures.len(), 2);
        let proof = Transaction::node_key_message(&tx.txid(), Network::Devnet);
        assert!(node.public_key().verify(&proof, &tx.signatures[1]).is_ok());

        let collateral_coin = Coin {
            outpoint: OutPoint {
                txid: tx.txid(),
                index: 0,
            },
            amount: collateral,
            address: f.address,
            is_collateral: true,
        };
        let back = build_deregistration(&f.wallet, collateral_coin, f.address, RATE).unwrap();
        assert_eq!(
            back.transaction.body.inputs[0].prevout,
            collateral_coin.outpoint
        );
        assert_eq!(
            back.transaction.body.outputs[0]
                .amount
                .checked_add(back.fee)
                .unwrap(),
            collateral
        );
        assert!(build_deregistration(&f.wallet, coins[0], f.address, RATE).is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        #[test]
        fn built_transfers_conserve_value(
            amounts in proptest::collection::vec(1u64..5_000_000_000, 1..8),
            pay in 1u64..20_000_000_000,
            rate in 0u64..50,
        ) {
            let f = fixture();
            let coins: Vec<Coin> = amounts
                .iter()
                .enumerate()
                .map(|(i, &units)| Coin {
                    outpoint: OutPoint { txid: Txid(Hash32([i as u8; 32])), index: i as u32 },
                    amount: Amount::from_units(units).unwrap(),
                    address: f.address,
                    is_collateral: false,
                })
                .collect();
            let pay = Amount::from_units(pay).unwrap();
            match build_transfer(&f.wallet, &coins, &[(other(), pay)], f.address, rate) {
                Ok(built) => {
                    let tx = &built.transaction;
                    let spent = Amount::checked_sum(tx.body.inputs.iter().map(|i| {
                        coins.iter().find(|c| c.outpoint == i.prevout).unwrap().amount
                    }))
                    .unwrap();
                    let paid = Amount::checked_sum(tx.body.outputs.iter().map(|o| o.amount)).unwrap();
                    proptest::prop_assert_eq!(paid.checked_add(built.fee).unwrap(), spent);
                    proptest::prop_assert!(built.fee.units() >= tx.encoded_size() as u64 * rate);
                    proptest::prop_assert_eq!(tx.body.outputs[0].amount, pay);
                    if let Some(change) = built.change {
                        proptest::prop_assert!(change.units() >= DUST_LIMIT);
                    }
                }
                Err(WalletError::InsufficientFunds { available, .. }) => {
                    let total = Amount::checked_sum(coins.iter().map(|c| c.amount)).unwrap();
                    proptest::prop_assert_eq!(available, total);
                    // The most a transaction spending every coin could cost, with change:
                    // ~100 bytes of frame and outputs, under 140 bytes per signed input.
                    let max_fee = Amount::from_units((100 + 140 * coins.len() as u64) * rate).unwrap();
                    proptest::prop_assert!(total < pay.checked_add(max_fee).unwrap());
                }
                Err(other) => proptest::prop_assert!(false, "unexpected error {other}"),
            }
        }
    }
}
