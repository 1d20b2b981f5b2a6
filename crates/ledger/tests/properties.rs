//! Property tests: the overlay against a model, and random histories of blocks (transfers,
//! dependent payments, registrations, deregistrations, burned rewards) against full
//! recomputation, value conservation, and exact undo.

mod common;

use std::collections::HashMap;

use common::*;
use proptest::prelude::*;
use timecoin_ledger::{
    BlockTemplate, UtxoCache, UtxoCommitment, UtxoEntry, UtxoStore, UtxoView, build_block,
};
use timecoin_primitives::{
    Address, Amount, Hash32, Height, OutPoint, SecretKey, Tier, Timestamp, Transaction, TxKind,
    TxOut, Txid,
};

// ---- UtxoCache against a HashMap model --------------------------------------------------------

#[derive(Clone, Debug)]
enum CacheOp {
    Insert(u8, u64),
    Remove(u8),
    Get(u8),
    Flush,
}

fn outpoint(k: u8) -> OutPoint {
    OutPoint {
        txid: Txid(Hash32([k % 4; 32])),
        index: u32::from(k / 4),
    }
}

fn entry(value: u64) -> UtxoEntry {
    UtxoEntry {
        output: TxOut {
            amount: units(value + 1),
            address: Address(Hash32([value as u8; 32])),
        },
        height: Height(value),
        is_collateral: value.is_multiple_of(3),
    }
}

fn cache_op() -> impl Strategy<Value = CacheOp> {
    prop_oneof![
        4 => (0u8..16, 0u64..1000).prop_map(|(k, v)| CacheOp::Insert(k, v)),
        3 => (0u8..16).prop_map(CacheOp::Remove),
        3 => (0u8..16).prop_map(CacheOp::Get),
        1 => Just(CacheOp::Flush),
    ]
}

fn flush(cache: UtxoCache<HashMap<OutPoint, UtxoEntry>>) -> HashMap<OutPoint, UtxoEntry> {
    cache.flush().unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn cache_behaves_like_a_hash_map(
        initial in proptest::collection::vec((0u8..16, 0u64..1000), 0..10),
        ops in proptest::collection::vec(cache_op(), 0..60),
    ) {
        let mut model: HashMap<OutPoint, UtxoEntry> =
            initial.iter().map(|(k, v)| (outpoint(*k), entry(*v))).collect();
        let mut cache = UtxoCache::new(model.clone());
        for op in ops {
            match op {
                CacheOp::Insert(k, v) => {
                    cache.insert_utxo(outpoint(k), entry(v)).unwrap();
                    model.insert(outpoint(k), entry(v));
                }
                CacheOp::Remove(k) => {
                    prop_assert_eq!(cache.remove_utxo(&outpoint(k)).unwrap(), model.remove(&outpoint(k)));
                }
                CacheOp::Get(k) => {
                    prop_assert_eq!(cache.utxo(&outpoint(k)).unwrap(), model.get(&outpoint(k)).copied());
                }
                CacheOp::Flush => {
                    let base = flush(cache);
                    prop_assert_eq!(&base, &model);
                    cache = UtxoCache::new(base);
                }
            }
            prop_assert!(cache.change_count() <= 16);
        }
        for k in 0..16 {
            prop_assert_eq!(cache.utxo(&outpoint(k)).unwrap(), model.get(&outpoint(k)).copied());
        }
        prop_assert_eq!(flush(cache), model);
    }
}

// ---- Random block histories -------------------------------------------------------------------

#[derive(Clone, Debug)]
enum TxPlan {
    /// Spend one or two coins (picked by the selectors) into one or two outputs.
    Transfer {
        coins: Vec<u16>,
        recipients: Vec<u8>,
    },
    /// Register a Bronze masternode funded by a coin.
    Register { coin: u16 },
    /// Deregister one of the masternodes known at this point.
    Deregister { which: u16 },
}

#[derive(Clone, Debug)]
struct BlockPlan {
    transactions: Vec<TxPlan>,
    /// Pay only half the allowed reward, burning the rest.
    burn: bool,
}

fn tx_plan() -> impl Strategy<Value = TxPlan> {
    prop_oneof![
        6 => (proptest::collection::vec(any::<u16>(), 1..=2), proptest::collection::vec(0u8..8, 1..=2))
            .prop_map(|(coins, recipients)| TxPlan::Transfer { coins, recipients }),
        1 => any::<u16>().prop_map(|coin| TxPlan::Register { coin }),
        1 => any::<u16>().prop_map(|which| TxPlan::Deregister { which }),
    ]
}

fn block_plan() -> impl Strategy<Value = BlockPlan> {
    (
        proptest::collection::vec(tx_plan(), 0..5),
        proptest::bool::weighted(0.2),
    )
        .prop_map(|(transactions, burn)| BlockPlan { transactions, burn })
}

/// The keys that own coins in these histories, by address.
fn wallet() -> HashMap<Address, SecretKey> {
    let mut keys: Vec<SecretKey> = (0..8).map(key).collect();
    keys.push(genesis_node_owner());
    keys.push(miner());
    keys.into_iter().map(|key| (address(&key), key)).collect()
}

/// Turns a plan into valid signed transactions for the next block of `chain`.
fn realise(
    chain: &Chain,
    plan: &BlockPlan,
    wallet: &HashMap<Address, SecretKey>,
    next_node_key: &mut u8,
) -> Vec<Transaction> {
    // Coins spendable in this block: the UTXO set, then outputs of this block's earlier
    // transactions (dependent payments).
    let mut coins: Vec<(OutPoint, UtxoEntry)> = chain
        .utxos
        .iter()
        .filter(|(_, e)| !e.is_collateral)
        .map(|(o, e)| (*o, *e))
        .collect();
    coins.sort_by_key(|(outpoint, _)| *outpoint);
    let mut masternodes: Vec<(OutPoint, UtxoEntry)> = chain
        .utxos
        .iter()
        .filter(|(_, e)| e.is_collateral)
        .map(|(o, e)| (*o, *e))
        .collect();
    masternodes.sort_by_key(|(outpoint, _)| *outpoint);
    let mut transactions = Vec::new();
    for tx in &plan.transactions {
        let built = match tx {
            TxPlan::Transfer {
                coins: selectors,
                recipients,
            } => {
                let mut inputs = Vec::new();
                for selector in selectors {
                    if coins.is_empty() {
                        break;
                    }
                    inputs.push(coins.remove(*selector as usize % coins.len()));
                }
                let total =
                    Amount::checked_sum(inputs.iter().map(|(_, e)| e.output.amount)).unwrap();
                let Some(spendable) = total.checked_sub(fee()).filter(|a| a.units() >= 2) else {
                    continue;
                };
                let share = spendable.units() / recipients.len() as u64;
                let mut outputs: Vec<(Address, Amount)> = recipients
                    .iter()
                    .map(|r| (address(&key(*r)), units(share)))
                    .collect();
                let rest = spendable.units() - share * recipients.len() as u64;
                outputs[0].1 = units(share + rest);
                let signers: Vec<(OutPoint, &SecretKey)> = inputs
                    .iter()
                    .map(|(o, e)| (*o, &wallet[&e.output.address]))
                    .collect();
                transfer(&signers, &outputs)
            }
            TxPlan::Register { coin } => {
                let needed = time(1_000).checked_add(fee()).unwrap();
                let Some(position) = (0..coins.len())
                    .map(|i| (i + *coin as usize) % coins.len())
                    .find(|&i| coins[i].1.output.amount > needed)
                else {
                    continue;
                };
                let (outpoint, entry) = coins.remove(position);
                let owner = &wallet[&entry.output.address];
                let node = key(*next_node_key);
                *next_node_key = next_node_key.wrapping_add(1).max(100);
                let change = entry.output.amount.checked_sub(needed).unwrap();
                let body = registration_body(
                    &[(outpoint, owner)],
                    &[
                        (entry.output.address, time(1_000)),
                        (entry.output.address, change),
                    ],
                    0,
                    node.public_key(),
                    Tier::Bronze,
                );
                let tx = sign(body, &[owner], Some(&node));
                masternodes.push((
                    OutPoint {
                        txid: tx.txid(),
                        index: 0,
                    },
                    UtxoEntry {
                        output: tx.body.outputs[0],
                        height: Height(0),
                        is_collateral: true,
                    },
                ));
                tx
            }
            TxPlan::Deregister { which } => {
                if masternodes.is_empty() {
                    continue;
                }
                let (collateral, entry) = masternodes.remove(*which as usize % masternodes.len());
                let owner = &wallet[&entry.output.address];
                let mut body = transfer_body(
                    &[(collateral, owner)],
                    &[(
                        entry.output.address,
                        entry.output.amount.checked_sub(fee()).unwrap(),
                    )],
                );
                body.kind = TxKind::DeregisterMasternode { collateral };
                sign(body, &[owner], None)
            }
        };
        let txid = built.txid();
        for (index, output) in built.body.outputs.iter().enumerate() {
            let is_collateral =
                matches!(built.body.kind, TxKind::RegisterMasternode { .. }) && index == 0;
            if !is_collateral {
                coins.push((
                    OutPoint {
                        txid,
                        index: index as u32,
                    },
                    UtxoEntry {
                        output: *output,
                        height: Height(0),
                        is_collateral,
                    },
                ));
            }
        }
        transactions.push(built);
    }
    transactions
}

fn build(chain: &Chain, transactions: Vec<Transaction>, burn: bool) -> timecoin_primitives::Block {
    let template = BlockTemplate {
        parent: chain.tip.clone(),
        timestamp: Timestamp(chain.tip.timestamp.as_millis() + 1_000),
        proposer: genesis_node_key().public_key(),
        transactions,
        parent_commit: parent_commit(&chain.tip),
    };
    let pay = |allowed: Amount| {
        let amount = if burn {
            units(allowed.units() / 2)
        } else {
            allowed
        };
        if amount.is_zero() {
            vec![]
        } else {
            vec![TxOut {
                amount,
                address: address(&miner()),
            }]
        }
    };
    build_block(
        template,
        pay,
        &chain.utxos,
        &chain.commitment,
        &chain.registry,
        &chain.params,
    )
    .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_histories_keep_every_invariant(plans in proptest::collection::vec(block_plan(), 1..7)) {
        let wallet = wallet();
        let mut chain = Chain::new(&[5_000, 5_000, 3_000, 2_000]);
        let genesis_value = chain.total_value();
        let mut snapshots = vec![(chain.utxos.clone(), chain.commitment.clone(), chain.registry.clone())];
        let mut next_node_key = 100u8;
        let mut issued: i128 = 0;
        let mut subsidies: u128 = 0;
        for plan in &plans {
            let transactions = realise(&chain, plan, &wallet, &mut next_node_key);
            let count = transactions.len();
            // Transfers always find a coin (amounts only halve a few times), so none is skipped.
            let transfers = plan.transactions.iter().filter(|t| matches!(t, TxPlan::Transfer { .. })).count();
            prop_assert!(count >= transfers);
            let block = build(&chain, transactions, plan.burn);
            prop_assert_eq!(block.transactions.len(), count + 1);
            let outcome = chain.apply(&block).unwrap();

            // The incremental commitment equals a recomputation over the whole set.
            prop_assert_eq!(&chain.commitment, &UtxoCommitment::from_utxos(chain.utxos.iter()));
            prop_assert_eq!(chain.commitment.digest(), block.header.utxo_commitment);

            // Value: genesis plus what rewards created beyond the fees they recycled.
            issued += i128::from(outcome.reward_paid.units()) - i128::from(outcome.fees.units());
            subsidies += u128::from(outcome.subsidy.units());
            prop_assert_eq!(chain.total_value() as i128, genesis_value as i128 + issued);
            prop_assert!(chain.total_value() <= genesis_value + subsidies);
            if !plan.burn {
                prop_assert_eq!(outcome.reward_paid, outcome.subsidy.checked_add(outcome.fees).unwrap());
            }

            // The registry matches the collateral in the UTXO set.
            let collateral = chain.utxos.values().filter(|e| e.is_collateral).count();
            prop_assert_eq!(chain.registry.len(), collateral);
            snapshots.push((chain.utxos.clone(), chain.commitment.clone(), chain.registry.clone()));
        }
        // Undo everything, checking each intermediate state exactly.
        snapshots.pop();
        while let Some((utxos, commitment, registry)) = snapshots.pop() {
            chain.undo_tip();
            prop_assert_eq!(&chain.utxos, &utxos);
            prop_assert_eq!(&chain.commitment, &commitment);
            prop_assert_eq!(&chain.registry, &registry);
        }
        prop_assert_eq!(chain.tip.height, Height(0));
    }
}

/// A fixed history through the same harness, so that the kinds the random ones mix are known to
/// be exercised: a registration deregistered in its own block, one deregistered later, the
/// genesis masternode deregistered, and dependent payments.
#[test]
fn fixed_history_covers_registrations_and_deregistrations() {
    let wallet = wallet();
    let mut chain = Chain::new(&[5_000, 5_000, 3_000, 2_000]);
    let mut next_node_key = 100u8;
    let transfer = |coins: Vec<u16>, recipients: Vec<u8>| TxPlan::Transfer { coins, recipients };
    let plans = [
        BlockPlan {
            transactions: vec![
                TxPlan::Register { coin: 0 },
                TxPlan::Register { coin: 1 },
                TxPlan::Deregister { which: 1 },
            ],
            burn: false,
        },
        BlockPlan {
            transactions: vec![
                transfer(vec![0, 1], vec![1, 2]),
                transfer(vec![9999], vec![3]),
            ],
            burn: true,
        },
        BlockPlan {
            transactions: vec![
                TxPlan::Deregister { which: 0 },
                TxPlan::Deregister { which: 0 },
            ],
            burn: false,
        },
    ];
    let mut registry_sizes = Vec::new();
    let mut counts = Vec::new();
    for plan in &plans {
        let transactions = realise(&chain, plan, &wallet, &mut next_node_key);
        counts.push(transactions.len());
        let block = build(&chain, transactions, plan.burn);
        chain.apply(&block).unwrap();
        assert_eq!(
            chain.commitment,
            UtxoCommitment::from_utxos(chain.utxos.iter())
        );
        registry_sizes.push(chain.registry.len());
    }
    assert_eq!(counts, [3, 2, 2]);
    // Genesis node + 2 registered - 1 deregistered in the same block; then both remaining go.
    assert_eq!(registry_sizes, [2, 2, 0]);
    for _ in &plans {
        chain.undo_tip();
    }
    assert_eq!(chain.registry.len(), 1);
    assert_eq!(
        chain.commitment,
        UtxoCommitment::from_utxos(chain.utxos.iter())
    );
}

fn reward_shares() -> impl Strategy<Value = Vec<timecoin_ledger::RewardShare>> {
    // Up to 40 signers with tier-like or arbitrary weights, owners drawn from a small set so
    // that some share one.
    proptest::collection::btree_map(
        any::<[u8; 32]>(),
        (
            prop_oneof![Just(1u64), Just(10), Just(100), 1u64..1_000_000],
            0u8..8,
        ),
        1..40,
    )
    .prop_map(|signers| {
        signers
            .into_iter()
            .map(|(node_key, (weight, owner))| timecoin_ledger::RewardShare {
                node_key: timecoin_primitives::PublicKey(node_key),
                weight,
                owner: Address(timecoin_primitives::Hash32([owner; 32])),
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// The split pays exactly what is allowed, the same whatever the order of the shares, in
    /// sorted outputs with one per owner, each owner within one rounding remainder of its exact
    /// proportional part.
    #[test]
    fn reward_split_sums_exactly_and_is_proportional(
        allowed in 0u64..=timecoin_primitives::Amount::MAX.units(),
        shares in reward_shares(),
        rotation in any::<usize>(),
    ) {
        let allowed = units(allowed);
        let outputs = timecoin_ledger::split_reward(allowed, &shares).unwrap();
        let total = Amount::checked_sum(outputs.iter().map(|o| o.amount)).unwrap();
        prop_assert_eq!(total, allowed);
        let mut rotated = shares.clone();
        rotated.rotate_left(rotation % shares.len());
        rotated.reverse();
        prop_assert_eq!(&timecoin_ledger::split_reward(allowed, &rotated).unwrap(), &outputs);
        prop_assert!(outputs.windows(2).all(|pair| pair[0].address < pair[1].address));
        prop_assert!(outputs.iter().all(|o| !o.amount.is_zero()));

        let weight_total: u128 = shares.iter().map(|s| u128::from(s.weight)).sum();
        let lowest = shares.iter().min_by_key(|s| s.node_key).unwrap().owner;
        let mut owners: HashMap<Address, (u128, u128)> = HashMap::new();
        for share in &shares {
            let entry = owners.entry(share.owner).or_default();
            entry.0 += u128::from(share.weight);
            entry.1 += 1;
        }
        for (owner, (weight, count)) in owners {
            let paid = outputs.iter().find(|o| o.address == owner).map_or(0, |o| o.amount.units());
            let exact = u128::from(allowed.units()) * weight / weight_total;
            let paid = u128::from(paid);
            // Each share loses less than one unit to rounding; only the lowest key's owner
            // gets the lost units back (fewer than the number of shares).
            prop_assert!(paid + count > exact, "owner underpaid: {} < {}", paid, exact);
            if owner != lowest {
                prop_assert!(paid <= exact, "owner overpaid: {} > {}", paid, exact);
            } else {
                prop_assert!(paid <= exact + shares.len() as u128);
            }
        }
    }
}
