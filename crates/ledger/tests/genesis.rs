//! Genesis: deterministic, checked against the supply cap, and applied under its own rules.

mod common;

use std::collections::HashMap;

use common::*;
use timecoin_ledger::{
    ChainParams, GenesisSpec, LedgerError, MasternodeEvent, ParamOverrides, UtxoCommitment,
    apply_genesis, build_genesis,
};
use timecoin_primitives::{Amount, BoundedVec, Hash32, Height, Network, Tier, TxKind};

#[test]
fn same_spec_gives_the_same_block() {
    let (a, _) = build_genesis(&spec(&[10_000, 5_000])).unwrap();
    let (b, _) = build_genesis(&spec(&[10_000, 5_000])).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.hash(), b.hash());
    // Through JSON and back, too.
    let json = spec(&[10_000, 5_000]).to_json();
    let parsed = GenesisSpec::from_json(&json).unwrap();
    assert_eq!(build_genesis(&parsed).unwrap().0.hash(), a.hash());
    // Any change changes the hash.
    let (c, _) = build_genesis(&spec(&[10_000, 5_001])).unwrap();
    assert_ne!(c.hash(), a.hash());
    let mut later = spec(&[10_000, 5_000]);
    later.timestamp_ms += 1;
    assert_ne!(build_genesis(&later).unwrap().0.hash(), a.hash());
}

#[test]
fn genesis_block_has_allocations_and_collateral() {
    let (block, params) = build_genesis(&spec(&[10_000, 5_000])).unwrap();
    assert_eq!(block.header.height, Height(0));
    assert_eq!(block.transactions.len(), 2);
    assert_eq!(
        block.transactions[0].body.kind,
        TxKind::Reward { height: Height(0) }
    );
    assert_eq!(block.transactions[0].body.outputs.len(), 2);
    assert_eq!(block.transactions[0].body.outputs[1].amount, time(5_000));

    let mut utxos = HashMap::new();
    let mut commitment = UtxoCommitment::empty();
    let outcome = apply_genesis(&block, &mut utxos, &mut commitment, &params).unwrap();
    assert_eq!(utxos.len(), 3);
    assert_eq!(commitment.digest(), block.header.utxo_commitment);
    assert_eq!(commitment, UtxoCommitment::from_utxos(utxos.iter()));
    let collateral: Vec<_> = utxos.values().filter(|entry| entry.is_collateral).collect();
    assert_eq!(collateral.len(), 1);
    assert_eq!(collateral[0].output.amount, time(1_000));
    assert_eq!(collateral[0].output.address, address(&genesis_node_owner()));
    let [MasternodeEvent::Registered(registration)] = outcome.masternode_events() else {
        panic!("one registration expected")
    };
    assert_eq!(registration.node_key, genesis_node_key().public_key());
    assert_eq!(registration.tier, Tier::Bronze);
    assert_eq!(registration.registered_at, Height(0));
}

#[test]
fn json_spec_is_read() {
    let owner = address(&genesis_node_owner()).encode(Network::Devnet);
    let rich = address(&key(1)).encode(Network::Devnet);
    let node_key = genesis_node_key().public_key();
    let json = format!(
        r#"{{
          "network": "devnet",
          "timestamp_ms": 1767225600000,
          "allocations": [{{ "address": "{rich}", "amount": "1250.5" }}],
          "masternodes": [{{ "owner": "{owner}", "node_key": "{node_key}", "tier": "gold",
                             "network_address": "/ip4/127.0.0.1/tcp/24100" }}],
          "overrides": {{ "epoch_length_blocks": 5, "min_fee_rate_units_per_byte": 3 }}
        }}"#
    );
    let spec = GenesisSpec::from_json(&json).unwrap();
    let (block, params) = build_genesis(&spec).unwrap();
    assert_eq!(params.epoch_length_blocks, 5);
    assert_eq!(params.min_fee_rate_units_per_byte, 3);
    assert_eq!(
        block.transactions[0].body.outputs[0].amount,
        "1250.5".parse::<Amount>().unwrap()
    );
    assert_eq!(block.transactions[1].body.outputs[0].amount, time(100_000));
    assert!(matches!(
        GenesisSpec::from_json(r#"{"network":"devnet","timestamp_ms":1,"bogus":1}"#),
        Err(LedgerError::InvalidGenesis(_))
    ));
}

fn rejected(spec: &GenesisSpec) -> String {
    match build_genesis(spec) {
        Err(LedgerError::InvalidGenesis(message)) => message,
        other => panic!("expected InvalidGenesis, got {other:?}"),
    }
}

#[test]
fn bad_specs_are_rejected_with_a_reason() {
    let mut bad = spec(&[10]);
    bad.allocations[0].address = address(&key(1)).encode(Network::Mainnet);
    assert!(rejected(&bad).contains("allocation 0"));

    let mut bad = spec(&[10]);
    bad.allocations[0].amount = "1.5e3".into();
    assert!(rejected(&bad).contains("allocation 0"));

    let mut bad = spec(&[10]);
    bad.masternodes[0].node_key = "xyz".into();
    assert!(rejected(&bad).contains("masternode 0"));

    let mut bad = spec(&[10]);
    bad.masternodes[0].tier = "platinum".into();
    assert!(rejected(&bad).contains("platinum"));

    let mut bad = spec(&[10]);
    bad.network = "moonnet".into();
    assert!(rejected(&bad).contains("moonnet"));

    let mut bad = spec(&[10]);
    bad.network = "mainnet".into();
    bad.allocations.clear();
    bad.masternodes.clear();
    bad.overrides = Some(ParamOverrides {
        epoch_length_blocks: Some(2),
        ..Default::default()
    });
    assert!(rejected(&bad).contains("only allowed on devnet"));

    let mut bad = spec(&[10]);
    bad.overrides = Some(ParamOverrides {
        initial_subsidy: Some("1000000".into()),
        ..Default::default()
    });
    assert!(rejected(&bad).contains("supply cap"));

    let mut bad = spec(&[10]);
    bad.masternodes[0].network_address = "localhost".into();
    assert!(rejected(&bad).contains("network address"));

    let mut duplicate = spec(&[10]);
    duplicate.masternodes.push(duplicate.masternodes[0].clone());
    assert!(rejected(&duplicate).contains("already registered"));
}

#[test]
fn genesis_cannot_exceed_what_the_subsidies_leave() {
    let params = ChainParams::for_network(Network::Devnet);
    let allowance = params.genesis_allowance().unwrap();
    // Everything allowed, minus the one Bronze collateral, is fine...
    let whole = allowance.checked_sub(time(1_000)).unwrap();
    let mut exact = spec(&[]);
    exact.allocations.push(timecoin_ledger::GenesisAllocation {
        address: address(&key(1)).encode(Network::Devnet),
        amount: whole.to_string(),
    });
    let (block, params) = build_genesis(&exact).unwrap();
    let total: u128 = block
        .transactions
        .iter()
        .flat_map(|tx| tx.body.outputs.iter())
        .map(|output| u128::from(output.amount.units()))
        .sum();
    assert_eq!(
        total + params.total_subsidy_units(),
        u128::from(Amount::MAX.units())
    );
    // ...one unit more is not.
    exact.allocations.push(timecoin_ledger::GenesisAllocation {
        address: address(&key(2)).encode(Network::Devnet),
        amount: "0.00000001".into(),
    });
    assert!(rejected(&exact).contains("supply cap"));
}

#[test]
fn tampered_genesis_blocks_are_rejected() {
    let (block, params) = build_genesis(&spec(&[10_000])).unwrap();
    let apply = |block: &timecoin_primitives::Block| {
        let mut utxos = HashMap::new();
        let mut commitment = UtxoCommitment::empty();
        let result = apply_genesis(block, &mut utxos, &mut commitment, &params);
        if result.is_err() {
            assert!(utxos.is_empty(), "a rejected genesis writes nothing");
        }
        result
    };
    assert!(apply(&block).is_ok());

    let mut bad = block.clone();
    bad.header.utxo_commitment = Hash32([9; 32]);
    assert!(matches!(
        apply(&bad),
        Err(LedgerError::WrongUtxoCommitment { .. })
    ));

    let mut bad = block.clone();
    bad.header.height = Height(1);
    assert!(matches!(
        apply(&bad),
        Err(LedgerError::InvalidGenesisBlock(_))
    ));

    // More collateral than the tier locks.
    let mut bad = block.clone();
    let mut transactions = bad.transactions.clone().into_inner();
    let mut outputs = transactions[1].body.outputs.clone().into_inner();
    outputs[0].amount = time(1_001);
    transactions[1].body_mut().outputs = BoundedVec::new(outputs).unwrap();
    bad.transactions = BoundedVec::new(transactions).unwrap();
    bad.header.transactions_root = bad.compute_transactions_root();
    assert!(matches!(
        apply(&bad),
        Err(LedgerError::WrongCollateralAmount { .. })
    ));

    // Forged transactions root.
    let mut bad = block.clone();
    bad.header.transactions_root = Hash32([1; 32]);
    assert!(matches!(
        apply(&bad),
        Err(LedgerError::WrongTransactionsRoot { .. })
    ));
}
