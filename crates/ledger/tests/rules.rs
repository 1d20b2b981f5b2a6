//! Every ledger rule: the valid case is accepted, and each violation is rejected with its own
//! error variant.

mod common;

use common::*;
use timecoin_ledger::{
    Fault, LedgerError, MasternodeEvent, MasternodeView, UtxoCommitment, UtxoStore, UtxoView,
    ValidatedBlock, apply_block, apply_genesis, check_block, check_header, check_network_address,
    check_transaction, reward_transaction, validate_transaction,
};
use timecoin_primitives::merkle::merkle_root;
use timecoin_primitives::{
    Amount, Block, BlockHeader, BoundedVec, Epoch, Hash32, Height, OutPoint, Signature, Tier,
    Timestamp, Transaction, TxKind, TxOut, Txid,
};

fn first_coin(chain: &Chain, seed: u8) -> (OutPoint, Amount) {
    let (outpoint, entry) = chain.coins(&key(seed))[0];
    (outpoint, entry.output.amount)
}

/// A valid transfer of `amount` from key(1)'s genesis coin to key(9), change back to key(1).
fn valid_transfer(chain: &Chain, amount: Amount) -> Transaction {
    let (outpoint, value) = first_coin(chain, 1);
    let change = value
        .checked_sub(amount)
        .unwrap()
        .checked_sub(fee())
        .unwrap();
    transfer(
        &[(outpoint, &key(1))],
        &[(address(&key(9)), amount), (address(&key(1)), change)],
    )
}

fn validate(
    chain: &Chain,
    tx: &Transaction,
) -> Result<timecoin_ledger::ValidatedTransaction, LedgerError> {
    check_transaction(tx, &chain.params)?;
    validate_transaction(tx, &chain.utxos, &chain.registry, &chain.params, Height(1))
}

/// The error inside a block-level error, for matching.
fn root(result: Result<impl std::fmt::Debug, LedgerError>) -> LedgerError {
    result.expect_err("should be rejected").root_cause().clone()
}

// ---- Stateless checks -------------------------------------------------------------------------

#[test]
fn valid_transfer_passes_every_tier() {
    let chain = Chain::new(&[10_000]);
    let tx = valid_transfer(&chain, time(10));
    let size = check_transaction(&tx, &chain.params).unwrap();
    assert_eq!(size, tx.encoded_size());
    let validated = validate(&chain, &tx).unwrap();
    assert_eq!(validated.fee, fee());
    assert_eq!(validated.txid, tx.txid());
    assert_eq!(validated.masternode_event, None);
}

#[test]
fn transfer_without_inputs_or_outputs_is_rejected() {
    let chain = Chain::new(&[10_000]);
    let (outpoint, _) = first_coin(&chain, 1);
    let no_inputs = transfer(&[], &[(address(&key(9)), time(1))]);
    assert_eq!(
        check_transaction(&no_inputs, &chain.params),
        Err(LedgerError::NoInputs { kind: "transfer" })
    );
    let no_outputs = transfer(&[(outpoint, &key(1))], &[]);
    assert_eq!(
        check_transaction(&no_outputs, &chain.params),
        Err(LedgerError::NoOutputs { kind: "transfer" })
    );
}

#[test]
fn duplicate_input_is_rejected() {
    let chain = Chain::new(&[10_000]);
    let (outpoint, _) = first_coin(&chain, 1);
    let tx = transfer(
        &[(outpoint, &key(1)), (outpoint, &key(1))],
        &[(address(&key(9)), time(1))],
    );
    assert_eq!(
        check_transaction(&tx, &chain.params),
        Err(LedgerError::DuplicateInput { outpoint })
    );
}

#[test]
fn zero_and_overflowing_outputs_are_rejected() {
    let chain = Chain::new(&[10_000]);
    let (outpoint, _) = first_coin(&chain, 1);
    let zero = transfer(
        &[(outpoint, &key(1))],
        &[
            (address(&key(9)), time(1)),
            (address(&key(9)), Amount::ZERO),
        ],
    );
    assert_eq!(
        check_transaction(&zero, &chain.params),
        Err(LedgerError::ZeroOutput { index: 1 })
    );
    let overflow = transfer(
        &[(outpoint, &key(1))],
        &[
            (address(&key(9)), Amount::MAX),
            (address(&key(9)), Amount::ONE_UNIT),
        ],
    );
    assert_eq!(
        check_transaction(&overflow, &chain.params),
        Err(LedgerError::OutputsOverflow)
    );
}

#[test]
fn signature_count_must_match() {
    let chain = Chain::new(&[10_000]);
    let mut tx = valid_transfer(&chain, time(1));
    tx.signatures = BoundedVec::empty();
    assert_eq!(
        check_transaction(&tx, &chain.params),
        Err(LedgerError::SignatureCount {
            expected: 1,
            found: 0
        })
    );
    let mut tx = valid_transfer(&chain, time(1));
    let extra = tx.signatures[0];
    let mut signatures = tx.signatures.into_inner();
    signatures.push(extra);
    tx.signatures = BoundedVec::new(signatures).unwrap();
    assert_eq!(
        check_transaction(&tx, &chain.params),
        Err(LedgerError::SignatureCount {
            expected: 1,
            found: 2
        })
    );
}

#[test]
fn oversized_transaction_is_rejected() {
    let chain = Chain::new(&[10_000]);
    let tx = valid_transfer(&chain, time(1));
    let mut params = chain.params.clone();
    params.max_transaction_bytes = tx.encoded_size() - 1;
    assert_eq!(
        check_transaction(&tx, &params),
        Err(LedgerError::TransactionTooLarge {
            size: tx.encoded_size(),
            max: tx.encoded_size() - 1
        })
    );
    params.max_transaction_bytes = tx.encoded_size();
    assert!(check_transaction(&tx, &params).is_ok());
}

#[test]
fn reward_shape_is_checked() {
    let chain = Chain::new(&[10_000]);
    let reward = reward_transaction(
        Height(1),
        vec![TxOut {
            amount: time(1),
            address: address(&miner()),
        }],
    )
    .unwrap();
    assert!(check_transaction(&reward, &chain.params).is_ok());
    let empty_reward = reward_transaction(Height(1), vec![]).unwrap();
    assert!(
        check_transaction(&empty_reward, &chain.params).is_ok(),
        "a reward may pay nothing"
    );
    let mut with_inputs = valid_transfer(&chain, time(1));
    with_inputs.body_mut().kind = TxKind::Reward { height: Height(1) };
    assert_eq!(
        check_transaction(&with_inputs, &chain.params),
        Err(LedgerError::RewardHasInputs)
    );
    let mut signed_reward = reward.clone();
    signed_reward.signatures = BoundedVec::new(vec![Signature([0; 64])]).unwrap();
    assert_eq!(
        check_transaction(&signed_reward, &chain.params),
        Err(LedgerError::SignatureCount {
            expected: 0,
            found: 1
        })
    );
    // A reward is never valid on its own, outside a block.
    assert_eq!(
        validate_transaction(
            &reward,
            &chain.utxos,
            &chain.registry,
            &chain.params,
            Height(1)
        ),
        Err(LedgerError::UnexpectedReward)
    );
}

#[test]
fn registration_shape_is_checked() {
    let chain = Chain::new(&[10_000]);
    let (outpoint, value) = first_coin(&chain, 1);
    let node = key(50);
    let change = value
        .checked_sub(time(1_000))
        .unwrap()
        .checked_sub(fee())
        .unwrap();
    let outputs = [(address(&key(1)), time(1_000)), (address(&key(1)), change)];
    let body = registration_body(
        &[(outpoint, &key(1))],
        &outputs,
        0,
        node.public_key(),
        Tier::Bronze,
    );
    let tx = sign(body.clone(), &[&key(1)], Some(&node));
    assert!(check_transaction(&tx, &chain.params).is_ok());

    let mut out_of_range = body.clone();
    if let TxKind::RegisterMasternode {
        collateral_output, ..
    } = &mut out_of_range.kind
    {
        *collateral_output = 2;
    }
    let tx = sign(out_of_range, &[&key(1)], Some(&node));
    assert_eq!(
        check_transaction(&tx, &chain.params),
        Err(LedgerError::CollateralOutputOutOfRange {
            index: 2,
            outputs: 2
        })
    );

    let mut bad_address = body.clone();
    if let TxKind::RegisterMasternode {
        network_address, ..
    } = &mut bad_address.kind
    {
        *network_address = timecoin_primitives::BoundedString::new("203.0.113.5:24100").unwrap();
    }
    let tx = sign(bad_address, &[&key(1)], Some(&node));
    assert!(matches!(
        check_transaction(&tx, &chain.params),
        Err(LedgerError::InvalidNetworkAddress { .. })
    ));

    // Without the node-key proof the signature count is one short.
    let mut unproven = sign(body, &[&key(1)], Some(&node));
    unproven.signatures = BoundedVec::new(vec![unproven.signatures[0]]).unwrap();
    assert_eq!(
        check_transaction(&unproven, &chain.params),
        Err(LedgerError::SignatureCount {
            expected: 2,
            found: 1
        })
    );
}

#[test]
fn network_addresses_must_be_sane() {
    assert!(check_network_address("/ip4/203.0.113.5/tcp/24100").is_ok());
    assert!(check_network_address("/dns4/node.example/tcp/1").is_ok());
    for bad in [
        "",
        "203.0.113.5:1",
        "/ip4/1.2.3.4 /tcp/1",
        "/ip4//tcp/1",
        "/ip4/1.2.3.4/",
        "/ip4/\u{e9}/tcp/1",
        "/a\nb",
    ] {
        assert!(
            matches!(
                check_network_address(bad),
                Err(LedgerError::InvalidNetworkAddress { .. })
            ),
            "{bad:?} should be rejected"
        );
    }
}

#[test]
fn deregistration_must_spend_its_collateral() {
    let chain = Chain::new(&[10_000]);
    let (outpoint, value) = first_coin(&chain, 1);
    let named = OutPoint {
        txid: Txid::default(),
        index: 7,
    };
    let mut body = transfer_body(
        &[(outpoint, &key(1))],
        &[(address(&key(1)), value.checked_sub(fee()).unwrap())],
    );
    body.kind = TxKind::DeregisterMasternode { collateral: named };
    let tx = sign(body, &[&key(1)], None);
    assert_eq!(
        check_transaction(&tx, &chain.params),
        Err(LedgerError::CollateralNotSpent { collateral: named })
    );
}

// ---- Validation against the UTXO set -----------------------------------------------------------

#[test]
fn unknown_and_spent_inputs_are_rejected() {
    let mut chain = Chain::new(&[10_000]);
    let unknown = OutPoint {
        txid: Txid::default(),
        index: 0,
    };
    let tx = transfer(&[(unknown, &key(1))], &[(address(&key(9)), time(1))]);
    assert_eq!(
        root(validate(&chain, &tx)),
        LedgerError::MissingInput { outpoint: unknown }
    );

    let spend = valid_transfer(&chain, time(10));
    let (spent, _) = first_coin(&chain, 1);
    chain.mine(vec![spend]);
    let double = transfer(&[(spent, &key(1))], &[(address(&key(8)), time(10))]);
    assert_eq!(
        root(validate(&chain, &double)),
        LedgerError::MissingInput { outpoint: spent }
    );
}

#[test]
fn input_key_must_own_the_output() {
    let chain = Chain::new(&[10_000, 5_000]);
    let (outpoint, _) = first_coin(&chain, 1);
    // key(2) signs correctly for its own key, but the coin belongs to key(1).
    let tx = transfer(&[(outpoint, &key(2))], &[(address(&key(2)), time(1))]);
    assert_eq!(
        root(validate(&chain, &tx)),
        LedgerError::InputKeyMismatch { index: 0, outpoint }
    );
}

#[test]
fn outputs_may_not_exceed_inputs() {
    let chain = Chain::new(&[10_000]);
    let (outpoint, value) = first_coin(&chain, 1);
    let tx = transfer(
        &[(outpoint, &key(1))],
        &[(
            address(&key(9)),
            value.checked_add(Amount::ONE_UNIT).unwrap(),
        )],
    );
    assert_eq!(
        root(validate(&chain, &tx)),
        LedgerError::OutputsExceedInputs {
            inputs: value,
            outputs: value.checked_add(Amount::ONE_UNIT).unwrap()
        }
    );
}

#[test]
fn fee_must_meet_the_minimum_rate() {
    let chain = Chain::new(&[10_000]);
    let (outpoint, value) = first_coin(&chain, 1);
    let pay = |fee: Amount| {
        transfer(
            &[(outpoint, &key(1))],
            &[(address(&key(9)), value.checked_sub(fee).unwrap())],
        )
    };
    let size = pay(Amount::ZERO).encoded_size();
    let required = chain.params.min_fee(size).unwrap();
    let short = required.checked_sub(Amount::ONE_UNIT).unwrap();
    assert_eq!(
        root(validate(&chain, &pay(short))),
        LedgerError::FeeTooLow {
            fee: short,
            required,
            size_bytes: size
        }
    );
    assert_eq!(validate(&chain, &pay(required)).unwrap().fee, required);
}

#[test]
fn transfers_cannot_spend_collateral() {
    let chain = Chain::new(&[10_000]);
    let (collateral, entry) = chain.coins(&genesis_node_owner())[0];
    assert!(entry.is_collateral);
    let tx = transfer(
        &[(collateral, &genesis_node_owner())],
        &[(
            address(&key(9)),
            entry.output.amount.checked_sub(fee()).unwrap(),
        )],
    );
    assert_eq!(
        root(validate(&chain, &tx)),
        LedgerError::SpendsCollateral {
            outpoint: collateral
        }
    );
}

fn deregistration(
    collateral: OutPoint,
    amount: Amount,
    extra: Option<(OutPoint, Amount)>,
) -> Transaction {
    let owner = genesis_node_owner();
    let mut inputs = vec![(collateral, &owner)];
    let mut total = amount;
    let funder = key(1);
    if let Some((outpoint, value)) = extra {
        inputs.push((outpoint, &funder));
        total = total.checked_add(value).unwrap();
    }
    let mut body = transfer_body(
        &inputs,
        &[(address(&owner), total.checked_sub(fee()).unwrap())],
    );
    body.kind = TxKind::DeregisterMasternode { collateral };
    let keys: Vec<_> = inputs.iter().map(|(_, key)| *key).collect();
    sign(body, &keys, None)
}

#[test]
fn deregistration_spends_exactly_the_named_collateral() {
    let mut chain = Chain::new(&[10_000]);
    let (collateral, entry) = chain.coins(&genesis_node_owner())[0];
    let registration = chain.registry.registration(&collateral).unwrap().unwrap();

    // Naming an ordinary output is rejected.
    let (plain, plain_value) = first_coin(&chain, 1);
    let mut body = transfer_body(
        &[(plain, &key(1))],
        &[(address(&key(1)), plain_value.checked_sub(fee()).unwrap())],
    );
    body.kind = TxKind::DeregisterMasternode { collateral: plain };
    let not_collateral = sign(body, &[&key(1)], None);
    assert_eq!(
        root(validate(&chain, &not_collateral)),
        LedgerError::NotCollateral { outpoint: plain }
    );

    // The valid case, with an extra ordinary input, deregisters and frees the key.
    let valid = deregistration(collateral, entry.output.amount, Some((plain, plain_value)));
    let validated = validate(&chain, &valid).unwrap();
    assert_eq!(
        validated.masternode_event,
        Some(MasternodeEvent::Deregistered {
            registration: registration.clone(),
            height: Height(1)
        })
    );
    let outcome = chain.mine(vec![valid]);
    assert_eq!(
        outcome.masternode_events(),
        &[MasternodeEvent::Deregistered {
            registration,
            height: Height(1)
        }]
    );
    assert!(chain.registry.is_empty());
    assert_eq!(chain.utxos.utxo(&collateral).unwrap(), None);
    let returned = chain.coins(&genesis_node_owner());
    assert_eq!(returned.len(), 1);
    assert!(
        !returned[0].1.is_collateral,
        "returned collateral is an ordinary coin"
    );
}

#[test]
fn deregistration_may_not_spend_a_second_collateral() {
    // Two masternodes owned by the same key: deregistering one may not also spend the other.
    let mut spec = spec(&[10_000]);
    let mut second = spec.masternodes[0].clone();
    second.node_key = key(202).public_key().to_string();
    spec.masternodes.push(second);
    let chain = Chain::from_spec(&spec);
    let coins = chain.coins(&genesis_node_owner());
    assert_eq!(coins.len(), 2);
    let owner = genesis_node_owner();
    let total = coins[0]
        .1
        .output
        .amount
        .checked_add(coins[1].1.output.amount)
        .unwrap();
    let mut body = transfer_body(
        &[(coins[0].0, &owner), (coins[1].0, &owner)],
        &[(address(&owner), total.checked_sub(fee()).unwrap())],
    );
    body.kind = TxKind::DeregisterMasternode {
        collateral: coins[0].0,
    };
    let tx = sign(body, &[&owner, &owner], None);
    assert_eq!(
        root(validate(&chain, &tx)),
        LedgerError::SpendsCollateral {
            outpoint: coins[1].0
        }
    );
}

fn registration(
    chain: &Chain,
    funder_seed: u8,
    node: &timecoin_primitives::SecretKey,
    tier: Tier,
    amount: Amount,
) -> Transaction {
    let (outpoint, value) = first_coin(chain, funder_seed);
    let funder = key(funder_seed);
    let change = value
        .checked_sub(amount)
        .unwrap()
        .checked_sub(fee())
        .unwrap();
    let body = registration_body(
        &[(outpoint, &funder)],
        &[(address(&funder), amount), (address(&funder), change)],
        0,
        node.public_key(),
        tier,
    );
    sign(body, &[&funder], Some(node))
}

#[test]
fn registration_locks_exactly_the_tier_collateral() {
    let mut chain = Chain::new(&[20_000]);
    let node = key(60);
    let wrong = registration(&chain, 1, &node, Tier::Silver, time(1_000));
    assert_eq!(
        root(validate(&chain, &wrong)),
        LedgerError::WrongCollateralAmount {
            tier: Tier::Silver,
            expected: time(10_000),
            found: time(1_000)
        }
    );
    let right = registration(&chain, 1, &node, Tier::Silver, time(10_000));
    let txid = right.txid();
    let outcome = chain.mine(vec![right]);
    let [MasternodeEvent::Registered(registered)] = outcome.masternode_events() else {
        panic!(
            "expected one registration, got {:?}",
            outcome.masternode_events()
        );
    };
    assert_eq!(registered.collateral, OutPoint { txid, index: 0 });
    assert_eq!(registered.node_key, node.public_key());
    assert_eq!(registered.owner, address(&key(1)));
    assert_eq!(registered.tier, Tier::Silver);
    assert_eq!(registered.registered_at, Height(1));
    assert_eq!(
        registered.network_address.as_str(),
        "/dns4/node.example/tcp/24100"
    );
    let entry = chain.utxos.utxo(&registered.collateral).unwrap().unwrap();
    assert!(entry.is_collateral);
    assert!(
        !chain
            .utxos
            .utxo(&OutPoint { txid, index: 1 })
            .unwrap()
            .unwrap()
            .is_collateral
    );
    assert_eq!(chain.registry.len(), 2);
}

#[test]
fn node_keys_cannot_be_reused() {
    let mut chain = Chain::new(&[20_000, 20_000]);
    // Already registered at genesis.
    let reused = registration(&chain, 1, &genesis_node_key(), Tier::Bronze, time(1_000));
    assert_eq!(
        root(validate(&chain, &reused)),
        LedgerError::NodeKeyAlreadyRegistered {
            node_key: genesis_node_key().public_key()
        }
    );
    // Twice in one block: the second is rejected, naming its index.
    let node = key(61);
    let first = registration(&chain, 1, &node, Tier::Bronze, time(1_000));
    let second = registration(&chain, 2, &node, Tier::Bronze, time(1_000));
    let error = chain
        .build(vec![first.clone(), second.clone()])
        .unwrap_err();
    assert!(
        matches!(error, LedgerError::BlockTransaction { index: 2, .. }),
        "{error}"
    );
    assert_eq!(
        error.root_cause(),
        &LedgerError::NodeKeyAlreadyRegistered {
            node_key: node.public_key()
        }
    );
    // In a later block too.
    chain.mine(vec![first]);
    assert_eq!(
        root(validate_transaction(
            &second,
            &chain.utxos,
            &chain.registry,
            &chain.params,
            Height(2)
        )),
        LedgerError::NodeKeyAlreadyRegistered {
            node_key: node.public_key()
        }
    );
}

// ---- Blocks ------------------------------------------------------------------------------------

#[test]
fn dependent_payment_in_one_block_is_accepted() {
    let mut chain = Chain::new(&[10_000]);
    let first = valid_transfer(&chain, time(100));
    let paid = OutPoint {
        txid: first.txid(),
        index: 0,
    };
    let second = transfer(
        &[(paid, &key(9))],
        &[(address(&key(10)), time(100).checked_sub(fee()).unwrap())],
    );
    let before = chain.total_value();
    let outcome = chain.mine(vec![first, second]);
    assert_eq!(outcome.fees, units(2 * fee().units()));
    assert_eq!(outcome.subsidy, time(100));
    assert_eq!(
        outcome.reward_paid,
        time(100).checked_add(outcome.fees).unwrap()
    );
    assert_eq!(chain.balance(&key(9)), Amount::ZERO);
    assert_eq!(
        chain.balance(&key(10)),
        time(100).checked_sub(fee()).unwrap()
    );
    assert_eq!(chain.total_value(), before + u128::from(time(100).units()));
    assert_eq!(
        chain.commitment,
        UtxoCommitment::from_utxos(chain.utxos.iter())
    );
}

#[test]
fn double_spend_within_a_block_is_rejected() {
    let chain = Chain::new(&[10_000]);
    let (outpoint, _) = first_coin(&chain, 1);
    let a = valid_transfer(&chain, time(1));
    let b = transfer(&[(outpoint, &key(1))], &[(address(&key(8)), time(2))]);
    let error = chain.build(vec![a, b]).unwrap_err();
    assert!(matches!(
        error,
        LedgerError::BlockTransaction { index: 2, .. }
    ));
    assert_eq!(error.root_cause(), &LedgerError::MissingInput { outpoint });
    assert!(error.is_peer_fault());
}

/// A valid block and the chain it applies to, for the header and body rules below.
fn chain_and_block() -> (Chain, Block) {
    let chain = Chain::new(&[10_000]);
    let block = chain.build(vec![valid_transfer(&chain, time(5))]).unwrap();
    (chain, block)
}

fn apply(chain: &mut Chain, block: &Block) -> Result<timecoin_ledger::BlockOutcome, LedgerError> {
    apply_block(
        block,
        &chain.tip,
        &mut chain.utxos,
        &mut chain.commitment,
        &chain.registry,
        &chain.params,
    )
}

/// Runs every rule of `apply_block` for `block` on the chain's tip, changing nothing.
fn validate_on_tip(
    chain: &Chain,
    block: &Block,
) -> Result<timecoin_ledger::BlockOutcome, LedgerError> {
    timecoin_ledger::validate_block(
        block,
        &chain.tip,
        &chain.utxos,
        &chain.commitment,
        &chain.registry,
        &chain.params,
    )
}

/// Re-roots a tampered block so that only the intended rule fails.
fn reroot(mut block: Block) -> Block {
    block.header.transactions_root = merkle_root(&block.txids());
    block
}

#[test]
fn header_must_follow_its_parent() {
    let (mut chain, block) = chain_and_block();
    let mut bad = block.clone();
    bad.header.version = 2;
    assert_eq!(
        apply(&mut chain, &bad).unwrap_err(),
        LedgerError::WrongVersion {
            expected: 1,
            found: 2
        }
    );
    let mut bad = block.clone();
    bad.header.height = Height(2);
    assert_eq!(
        check_header(&bad.header, &chain.tip, &chain.params),
        Err(LedgerError::WrongHeight {
            expected: Height(1),
            parent: Height(0),
            found: Height(2)
        })
    );
    let mut bad = block.clone();
    bad.header.previous_hash = timecoin_primitives::BlockHash(Hash32([1; 32]));
    assert!(matches!(
        apply(&mut chain, &bad),
        Err(LedgerError::WrongPreviousHash { .. })
    ));
    let mut bad = block.clone();
    bad.header.timestamp = Timestamp(chain.tip.timestamp.as_millis() - 1);
    assert!(matches!(
        apply(&mut chain, &bad),
        Err(LedgerError::TimestampBeforeParent { .. })
    ));
    let mut bad = block.clone();
    bad.header.epoch = Epoch(1);
    assert_eq!(
        apply(&mut chain, &bad).unwrap_err(),
        LedgerError::WrongEpoch {
            height: Height(1),
            expected: Epoch(0),
            found: Epoch(1)
        }
    );
    let mut bad = block.clone();
    bad.header.transactions_root = Hash32([2; 32]);
    assert!(matches!(
        apply(&mut chain, &bad),
        Err(LedgerError::WrongTransactionsRoot { .. })
    ));
    let mut bad = block.clone();
    bad.header.utxo_commitment = Hash32([3; 32]);
    let error = apply(&mut chain, &bad).unwrap_err();
    assert_eq!(
        error,
        LedgerError::WrongUtxoCommitment {
            expected: block.header.utxo_commitment,
            found: Hash32([3; 32])
        }
    );
    // None of the rejections touched the state; the original block still applies.
    assert_eq!(
        chain.commitment,
        UtxoCommitment::from_utxos(chain.utxos.iter())
    );
    let outcome = apply(&mut chain, &block).unwrap();
    assert_eq!(outcome.utxo_commitment, block.header.utxo_commitment);
}

#[test]
fn epoch_follows_the_height() {
    let mut chain = Chain::new(&[10_000]);
    for _ in 0..chain.params.epoch_length_blocks {
        chain.mine(vec![]);
    }
    assert_eq!(chain.tip.height, Height(chain.params.epoch_length_blocks));
    assert_eq!(chain.tip.epoch, Epoch(1));
}

#[test]
fn block_needs_exactly_one_reward_first() {
    let (mut chain, block) = chain_and_block();
    let mut empty = block.clone();
    empty.transactions = BoundedVec::empty();
    assert_eq!(
        apply(&mut chain, &reroot(empty)).unwrap_err(),
        LedgerError::MissingReward
    );

    let mut no_reward = block.clone();
    no_reward.transactions = BoundedVec::new(block.transactions[1..].to_vec()).unwrap();
    assert_eq!(
        check_block(&reroot(no_reward), &chain.params).unwrap_err(),
        LedgerError::MissingReward
    );

    let mut wrong_height = block.clone();
    let mut transactions = block.transactions.clone().into_inner();
    transactions[0].body_mut().kind = TxKind::Reward { height: Height(7) };
    wrong_height.transactions = BoundedVec::new(transactions).unwrap();
    assert_eq!(
        apply(&mut chain, &reroot(wrong_height)).unwrap_err(),
        LedgerError::RewardHeightMismatch {
            expected: Height(1),
            found: Height(7)
        }
    );

    let mut two_rewards = block.clone();
    let mut transactions = block.transactions.clone().into_inner();
    let mut second = transactions[0].clone();
    second.body_mut().outputs = BoundedVec::new(vec![TxOut {
        amount: time(1),
        address: address(&key(3)),
    }])
    .unwrap();
    transactions.push(second);
    two_rewards.transactions = BoundedVec::new(transactions).unwrap();
    let error = apply(&mut chain, &reroot(two_rewards)).unwrap_err();
    assert!(
        matches!(error, LedgerError::BlockTransaction { index: 2, .. }),
        "{error}"
    );
    assert_eq!(error.root_cause(), &LedgerError::UnexpectedReward);
}

#[test]
fn reward_is_limited_to_subsidy_plus_fees() {
    let chain = Chain::new(&[10_000]);
    let tx = valid_transfer(&chain, time(5));
    let allowed = time(100).checked_add(fee()).unwrap();
    let block = chain.build(vec![tx]).unwrap();
    assert_eq!(block.transactions[0].body.outputs[0].amount, allowed);

    let mut greedy = block.clone();
    let mut transactions = block.transactions.clone().into_inner();
    transactions[0].body_mut().outputs = BoundedVec::new(vec![TxOut {
        amount: allowed.checked_add(Amount::ONE_UNIT).unwrap(),
        address: address(&miner()),
    }])
    .unwrap();
    greedy.transactions = BoundedVec::new(transactions).unwrap();
    let mut chain2 = Chain::new(&[10_000]);
    assert_eq!(
        apply(&mut chain2, &reroot(greedy)).unwrap_err(),
        LedgerError::RewardTooLarge {
            paid: allowed.checked_add(Amount::ONE_UNIT).unwrap(),
            allowed
        }
    );

    // Paying less is allowed; the rest is burned.
    let mut chain3 = Chain::new(&[10_000]);
    let before = chain3.total_value();
    let block = chain3
        .build(vec![valid_transfer(&chain3, time(5))])
        .map(|mut block| {
            let mut transactions = block.transactions.clone().into_inner();
            transactions[0].body_mut().outputs = BoundedVec::new(vec![TxOut {
                amount: time(1),
                address: address(&miner()),
            }])
            .unwrap();
            block.transactions = BoundedVec::new(transactions).unwrap();
            block
        })
        .unwrap();
    let mut block = reroot(block);
    // Recompute the commitment for the modified reward by building on a scratch copy.
    let error = apply(&mut chain3, &block).unwrap_err();
    let LedgerError::WrongUtxoCommitment { expected, .. } = error else {
        panic!("{error}")
    };
    block.header.utxo_commitment = expected;
    let outcome = chain3.apply(&block).unwrap();
    assert_eq!(outcome.reward_paid, time(1));
    assert_eq!(
        chain3.total_value(),
        before + u128::from(time(1).units()) - u128::from(fee().units())
    );
}

#[test]
fn duplicate_transactions_and_oversized_blocks_are_rejected() {
    let (mut chain, block) = chain_and_block();
    let mut duplicated = block.clone();
    let mut transactions = block.transactions.clone().into_inner();
    transactions.push(transactions[1].clone());
    duplicated.transactions = BoundedVec::new(transactions).unwrap();
    assert_eq!(
        apply(&mut chain, &reroot(duplicated)).unwrap_err(),
        LedgerError::DuplicateTransaction {
            txid: block.transactions[1].txid()
        }
    );
    let size = timecoin_primitives::encode(&block).len();
    let mut small = chain.params.clone();
    small.max_block_bytes = size - 1;
    assert_eq!(
        check_block(&block, &small).unwrap_err(),
        LedgerError::BlockTooLarge {
            size,
            max: size - 1
        }
    );
}

/// A UTXO set that records which outpoints were looked up and how outputs were inserted.
#[derive(Default)]
struct Recording {
    utxos: std::collections::HashMap<OutPoint, timecoin_ledger::UtxoEntry>,
    looked_up: std::cell::RefCell<Vec<OutPoint>>,
    inserted: Vec<(OutPoint, bool)>,
}

impl UtxoView for Recording {
    fn utxo(
        &self,
        outpoint: &OutPoint,
    ) -> Result<Option<timecoin_ledger::UtxoEntry>, timecoin_ledger::BackendError> {
        self.looked_up.borrow_mut().push(*outpoint);
        Ok(self.utxos.get(outpoint).copied())
    }
}

impl Recording {
    fn record(&mut self, outpoint: OutPoint, entry: timecoin_ledger::UtxoEntry, new: bool) {
        self.inserted.push((outpoint, new));
        self.utxos.insert(outpoint, entry);
    }
}

impl UtxoStore for Recording {
    fn insert_utxo(
        &mut self,
        outpoint: OutPoint,
        entry: timecoin_ledger::UtxoEntry,
    ) -> Result<(), timecoin_ledger::BackendError> {
        self.record(outpoint, entry, false);
        Ok(())
    }
    fn insert_new_utxo(
        &mut self,
        outpoint: OutPoint,
        entry: timecoin_ledger::UtxoEntry,
    ) -> Result<(), timecoin_ledger::BackendError> {
        self.record(outpoint, entry, true);
        Ok(())
    }
    fn remove_utxo(
        &mut self,
        outpoint: &OutPoint,
    ) -> Result<Option<timecoin_ledger::UtxoEntry>, timecoin_ledger::BackendError> {
        Ok(self.utxos.remove(outpoint))
    }
}

#[test]
fn only_outputs_of_transactions_without_inputs_are_checked_for_duplicates() {
    let mut chain = Chain::new(&[10_000]);
    let payment = valid_transfer(&chain, time(5));
    let block = chain.build(vec![payment.clone()]).unwrap();
    let reward = block.transactions[0].txid();
    let mut store = Recording {
        utxos: chain.utxos.clone(),
        ..Recording::default()
    };
    let mut commitment = chain.commitment.clone();
    apply_block(
        &block,
        &chain.tip,
        &mut store,
        &mut commitment,
        &chain.registry,
        &chain.params,
    )
    .unwrap();
    // The payment's outputs are new by construction: never looked up, inserted as new.
    let looked_up = store.looked_up.borrow().clone();
    assert!(
        !looked_up
            .iter()
            .any(|outpoint| outpoint.txid == payment.txid())
    );
    assert!(looked_up.contains(&OutPoint {
        txid: reward,
        index: 0
    }));
    assert!(looked_up.contains(&payment.body.inputs[0].prevout));
    let mut inserted = store.inserted.clone();
    inserted.sort_unstable();
    let mut expected: Vec<(OutPoint, bool)> = (0..2)
        .map(|index| {
            let outpoint = OutPoint {
                txid: payment.txid(),
                index,
            };
            (outpoint, true)
        })
        .chain(std::iter::once((
            OutPoint {
                txid: reward,
                index: 0,
            },
            false,
        )))
        .collect();
    expected.sort_unstable();
    assert_eq!(inserted, expected);
    // The result is the same as through a plain map.
    chain.apply(&block).unwrap();
    assert_eq!(store.utxos, chain.utxos);
    assert_eq!(commitment, chain.commitment);
}

#[test]
fn a_reward_over_an_existing_output_is_refused() {
    let mut chain = Chain::new(&[10_000]);
    let block = chain.build(vec![valid_transfer(&chain, time(5))]).unwrap();
    let taken = OutPoint {
        txid: block.transactions[0].txid(),
        index: 0,
    };
    let (_, squatter) = chain.coins(&key(1))[0];
    chain.utxos.insert(taken, squatter);
    let before = chain.utxos.clone();
    assert_eq!(
        root(apply(&mut chain, &block)),
        LedgerError::OutputAlreadyExists { outpoint: taken }
    );
    assert_eq!(chain.utxos, before);
}

#[test]
fn existing_outputs_are_never_overwritten() {
    let chain = Chain::new(&[10_000]);
    let mut store = chain.utxos.clone();
    let mut commitment = chain.commitment.clone();
    let error =
        apply_genesis(&chain.genesis, &mut store, &mut commitment, &chain.params).unwrap_err();
    assert!(
        matches!(error, LedgerError::OutputAlreadyExists { .. }),
        "{error}"
    );
    assert_eq!(store, chain.utxos);
}

#[test]
fn undo_restores_the_exact_state() {
    let mut chain = Chain::new(&[10_000, 20_000]);
    let utxos = chain.utxos.clone();
    let commitment = chain.commitment.clone();
    let registry = chain.registry.clone();
    let first = valid_transfer(&chain, time(100));
    let paid = OutPoint {
        txid: first.txid(),
        index: 0,
    };
    let second = transfer(&[(paid, &key(9))], &[(address(&key(10)), time(50))]);
    let node = key(70);
    let register = registration(&chain, 2, &node, Tier::Bronze, time(1_000));
    chain.mine(vec![first, second, register]);
    assert_ne!(chain.utxos, utxos);
    assert_eq!(chain.registry.len(), 2);
    chain.undo_tip();
    assert_eq!(chain.utxos, utxos);
    assert_eq!(chain.commitment, commitment);
    assert_eq!(chain.registry, registry);
}

#[test]
fn undo_on_the_wrong_state_is_refused() {
    let mut chain = Chain::new(&[10_000]);
    chain.mine(vec![valid_transfer(&chain, time(1))]);
    let undo = chain.undos.last().unwrap().clone();
    timecoin_ledger::undo_block(&undo, &mut chain.utxos, &mut chain.commitment).unwrap();
    let state = chain.utxos.clone();
    let error =
        timecoin_ledger::undo_block(&undo, &mut chain.utxos, &mut chain.commitment).unwrap_err();
    assert!(matches!(error, LedgerError::UndoMismatch { .. }));
    assert_eq!(error.fault(), Fault::Local);
    assert_eq!(chain.utxos, state, "a refused undo writes nothing");
}

#[test]
fn backend_failures_are_our_fault() {
    struct Broken;
    impl UtxoView for Broken {
        fn utxo(
            &self,
            _: &OutPoint,
        ) -> Result<Option<timecoin_ledger::UtxoEntry>, timecoin_ledger::BackendError> {
            Err(timecoin_ledger::BackendError("disk on fire".into()))
        }
    }
    let chain = Chain::new(&[10_000]);
    let tx = valid_transfer(&chain, time(1));
    let error =
        validate_transaction(&tx, &Broken, &chain.registry, &chain.params, Height(1)).unwrap_err();
    assert!(matches!(error, LedgerError::Backend(_)));
    assert!(!error.is_peer_fault());
    assert!(error.to_string().contains("disk on fire"));
}

#[test]
fn zero_subsidy_block_may_have_an_empty_reward() {
    let mut spec = spec(&[10_000]);
    spec.overrides = Some(timecoin_ledger::ParamOverrides {
        initial_subsidy: Some("0".into()),
        ..Default::default()
    });
    let mut chain = Chain::from_spec(&spec);
    let outcome = chain.mine(vec![]);
    assert_eq!(outcome.reward_paid, Amount::ZERO);
    assert_eq!(chain.tip.height, Height(1));
}

#[test]
fn masternode_view_of_genesis() {
    let chain = Chain::new(&[]);
    let collateral = chain
        .registry
        .collateral_of_node_key(&genesis_node_key().public_key())
        .unwrap()
        .unwrap();
    let entry = chain.utxos.utxo(&collateral).unwrap().unwrap();
    assert!(entry.is_collateral);
    assert_eq!(entry.output.amount, time(1_000));
    assert_eq!(entry.height, Height(0));
}

#[test]
fn validate_block_checks_everything_and_changes_nothing() {
    let (mut chain, block) = chain_and_block();
    let before = chain.utxos.clone();
    let outcome = validate_on_tip(&chain, &block).unwrap();
    assert_eq!(chain.utxos, before);
    let mut bad = block.clone();
    bad.header.utxo_commitment = Hash32([4; 32]);
    assert!(matches!(
        validate_on_tip(&chain, &bad),
        Err(LedgerError::WrongUtxoCommitment { .. })
    ));
    assert_eq!(apply(&mut chain, &block).unwrap(), outcome);
}

#[test]
fn inputs_above_the_supply_cap_are_rejected() {
    // Only a corrupt UTXO set can hold this much; the sum must still not wrap.
    let chain = Chain::new(&[]);
    let owner = key(1);
    let mut utxos = std::collections::HashMap::new();
    let outpoints: Vec<OutPoint> = (0..2)
        .map(|index| OutPoint {
            txid: Txid(Hash32([5; 32])),
            index,
        })
        .collect();
    for outpoint in &outpoints {
        let output = TxOut {
            amount: Amount::MAX,
            address: address(&owner),
        };
        utxos.insert(
            *outpoint,
            timecoin_ledger::UtxoEntry {
                output,
                height: Height(0),
                is_collateral: false,
            },
        );
    }
    let tx = transfer(
        &[(outpoints[0], &owner), (outpoints[1], &owner)],
        &[(address(&key(2)), time(1))],
    );
    assert_eq!(
        validate_transaction(&tx, &utxos, &chain.registry, &chain.params, Height(1)),
        Err(LedgerError::InputsOverflow)
    );
}

#[test]
fn registry_out_of_sync_is_our_fault() {
    let chain = Chain::new(&[]);
    let (collateral, entry) = chain.coins(&genesis_node_owner())[0];
    let tx = deregistration(collateral, entry.output.amount, None);
    let empty = timecoin_ledger::MasternodeRegistry::new();
    let error =
        validate_transaction(&tx, &chain.utxos, &empty, &chain.params, Height(1)).unwrap_err();
    assert_eq!(error, LedgerError::RegistryOutOfSync { collateral });
    assert_eq!(error.fault(), Fault::Local);
    // With the right registry it is valid.
    assert!(
        validate_transaction(&tx, &chain.utxos, &chain.registry, &chain.params, Height(1)).is_ok()
    );
}

#[test]
fn parent_certificate_is_required_from_height_two_and_committed_to() {
    let mut chain = Chain::new(&[10_000]);
    // Height 1: the parent is genesis, which has no certificate, so none may be carried.
    let first = chain.build(vec![]).unwrap();
    assert_eq!(first.parent_commit, None);
    assert_eq!(first.header.parent_commit_hash, Hash32::ZERO);
    let mut bad = first.clone();
    bad.parent_commit = parent_commit(&first.header).map(Box::new);
    bad.header.parent_commit_hash = bad.compute_parent_commit_hash();
    assert_eq!(
        apply(&mut chain, &bad).unwrap_err(),
        LedgerError::ParentCommitPresence {
            height: Height(1),
            expected: false
        }
    );
    apply(&mut chain, &first).unwrap();
    chain.tip = first.header.clone();

    // Height 2 must carry the certificate of block 1.
    let block = chain.build(vec![]).unwrap();
    let certificate = *block.parent_commit.clone().unwrap();
    assert_eq!(certificate.block_hash, first.hash());
    assert_eq!(block.header.parent_commit_hash, certificate.hash());
    check_block(&block, &chain.params).unwrap();

    let mut bad = block.clone();
    bad.parent_commit = None;
    assert_eq!(
        check_block(&bad, &chain.params).unwrap_err(),
        LedgerError::ParentCommitPresence {
            height: Height(2),
            expected: true
        }
    );
    // A certificate for another block, even with the header updated to match it.
    let mut bad = block.clone();
    let mut other = certificate.clone();
    other.block_hash = timecoin_primitives::BlockHash(Hash32([7; 32]));
    bad.parent_commit = Some(Box::new(other));
    bad.header.parent_commit_hash = bad.compute_parent_commit_hash();
    assert!(matches!(
        check_block(&bad, &chain.params),
        Err(LedgerError::ParentCommitForOtherBlock { .. })
    ));
    // A relayer swapping the certificate (here: another view) without the header noticing.
    let mut bad = block.clone();
    let mut swapped = certificate.clone();
    swapped.view += 1;
    bad.parent_commit = Some(Box::new(swapped));
    assert_eq!(
        check_block(&bad, &chain.params).unwrap_err(),
        LedgerError::WrongParentCommitHash {
            expected: bad.compute_parent_commit_hash(),
            found: certificate.hash()
        }
    );
    // Changing the header to match changes the block hash: the swap cannot go unseen.
    bad.header.parent_commit_hash = bad.compute_parent_commit_hash();
    assert_ne!(bad.hash(), block.hash());
    apply(&mut chain, &block).unwrap();
}

#[test]
fn reward_split_is_checked_output_by_output() {
    use timecoin_ledger::{RewardShare, check_reward_split, split_reward};
    let (chain, block) = chain_and_block();
    let outcome = validate_on_tip(&chain, &block).unwrap();
    let allowed = outcome.subsidy.checked_add(outcome.fees).unwrap();
    // The test chain pays everything to the miner: right for a lone miner share, wrong for two.
    let miner_share = RewardShare {
        node_key: genesis_node_key().public_key(),
        weight: 1,
        owner: address(&miner()),
    };
    check_reward_split(&block, allowed, &[miner_share]).unwrap();
    let other = RewardShare {
        node_key: key(77).public_key(),
        weight: 1,
        owner: address(&key(77)),
    };
    let error = check_reward_split(&block, allowed, &[miner_share, other]).unwrap_err();
    let expected = split_reward(allowed, &[miner_share, other]).unwrap();
    assert_eq!(expected.len(), 2);
    assert!(matches!(error, LedgerError::WrongRewardSplit { .. }));
    assert!(error.is_peer_fault());
    // No recipients is the caller's mistake, not the block's.
    let error = check_reward_split(&block, allowed, &[]).unwrap_err();
    assert!(!error.is_peer_fault());
}

/// `block` validated on `parent` with the chain's current UTXO set and registry.
fn validate_on(chain: &Chain, block: &Block, parent: &BlockHeader) -> ValidatedBlock {
    timecoin_ledger::validate_block_for_apply(
        block,
        parent,
        &chain.utxos,
        &chain.commitment,
        &chain.registry,
        &chain.params,
    )
    .unwrap()
}

/// Applies `block` on the chain's tip through `validated`, to copies of its UTXO set and
/// commitment, which are returned with the outcome.
fn apply_on_copies(
    chain: &Chain,
    validated: ValidatedBlock,
    block: &Block,
) -> (
    Result<timecoin_ledger::BlockOutcome, LedgerError>,
    std::collections::HashMap<OutPoint, timecoin_ledger::UtxoEntry>,
    UtxoCommitment,
) {
    let (mut utxos, mut commitment) = (chain.utxos.clone(), chain.commitment.clone());
    let outcome = timecoin_ledger::apply_validated_block(
        Some(validated),
        block,
        &chain.tip,
        &mut utxos,
        &mut commitment,
        &chain.registry,
        &chain.params,
    );
    (outcome, utxos, commitment)
}

#[test]
fn a_validated_block_applies_as_the_block_itself_and_only_on_the_state_it_was_validated_on() {
    let mut chain = Chain::new(&[100, 50]);
    let block = chain.build(vec![valid_transfer(&chain, time(10))]).unwrap();
    let validated = validate_on(&chain, &block, &chain.tip);
    assert!(validated.fits(&block, &chain.tip, &chain.commitment));

    // Applied from what validation kept, or by the rules again: the same UTXO set, the same
    // commitment and the same outcome.
    let (kept, kept_utxos, kept_commitment) = apply_on_copies(&chain, validated, &block);
    let kept = kept.unwrap();
    let direct = chain.apply(&block).unwrap();
    assert_eq!(kept_utxos, chain.utxos);
    assert_eq!(kept_commitment, chain.commitment);
    assert_eq!(kept.utxo_commitment, direct.utxo_commitment);
    assert_eq!(kept.undo, direct.undo);

    // Validated on one state, it does not fit another: the next block validated on the tip
    // before a block was applied on top of it is checked again, and refused there.
    let stale_parent = chain.tip.clone();
    let next = chain.build(vec![]).unwrap();
    let validated = validate_on(&chain, &next, &stale_parent);
    chain.mine(vec![]);
    assert!(!validated.fits(&next, &chain.tip, &chain.commitment));
    let (again, utxos, commitment) = apply_on_copies(&chain, validated, &next);
    assert!(again.is_err(), "a block for a replaced tip must be refused");
    assert_eq!(utxos, chain.utxos);
    assert_eq!(commitment, chain.commitment);
}
