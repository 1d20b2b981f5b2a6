//! Multi-process tests of `timed`: real processes on 127.0.0.1.

mod common;

use std::time::Duration;

use common::Devnet;
use serde_json::json;
use timecoin_primitives::{Address, Amount, Network, OutPoint, SecretKey, encode};
use timecoin_wallet::{Coin, Keystore, build_transfer};

/// Pays `amount` TIME to `recipient` from the development wallet through node `node`'s RPC;
/// returns the txid.
fn pay(net: &Devnet, node: usize, recipient: &str, amount: &str) -> String {
    let (path, password) = net.wallet();
    let wallet = Keystore::open(&path, password.as_bytes(), Network::Devnet).unwrap();
    let (address, _) = wallet.addresses()[0];
    let utxos = net
        .rpc(
            node,
            "getaddressutxos",
            json!([[address.encode(Network::Devnet)]]),
        )
        .unwrap();
    let coins: Vec<Coin> = utxos
        .as_array()
        .unwrap()
        .iter()
        .map(|u| Coin {
            outpoint: OutPoint {
                txid: u["txid"].as_str().unwrap().parse().unwrap(),
                index: u["vout"].as_u64().unwrap() as u32,
            },
            amount: Amount::from_units(u["units"].as_u64().unwrap()).unwrap(),
            address,
            is_collateral: u["collateral"].as_bool().unwrap(),
        })
        .collect();
    let fee_rate =
        net.rpc(node, "getmempoolinfo", json!([])).unwrap()["min_fee_rate_units_per_byte"]
            .as_u64()
            .unwrap();
    let recipient = Address::parse(recipient, Network::Devnet).unwrap();
    let built = build_transfer(
        &wallet,
        &coins,
        &[(recipient, amount.parse().unwrap())],
        address,
        fee_rate,
    )
    .unwrap();
    let txid = net
        .rpc(
            node,
            "sendrawtransaction",
            json!([hex::encode(encode(&built.transaction))]),
        )
        .unwrap();
    txid.as_str().unwrap().to_string()
}

#[test]
fn four_masternodes_finalize_and_agree_and_stop_cleanly() {
    let mut net = Devnet::start(4, 500);
    net.wait_height(3, Duration::from_secs(60));

    // A payment from the development wallet, submitted to node 2, is certified and reaches every node.
    let recipient = Address::from_public_key(&SecretKey::from_bytes([9; 32]).public_key())
        .encode(Network::Devnet);
    let txid = pay(&net, 2, &recipient, "3.25");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let status = net.rpc(2, "gettxfinality", json!([txid])).unwrap();
        if status["status"] == "certified" || status["status"] == "in_block" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not final: {status}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let target = net.height(0) + 2;
    net.wait_height(target, Duration::from_secs(60));
    for i in 0..4 {
        let balance = net
            .rpc(i, "getaddressbalance", json!([[recipient]]))
            .unwrap();
        assert_eq!(balance["units"], json!(325_000_000u64), "node {i}");
    }
    let hashes: Vec<_> = (0..4)
        .map(|i| net.rpc(i, "getblockhash", json!([target])).unwrap())
        .collect();
    assert!(hashes.windows(2).all(|w| w[0] == w[1]), "{hashes:?}");

    for i in 0..4 {
        assert_eq!(
            net.terminate(i, Duration::from_secs(10)),
            Some(0),
            "node {i}\n{}",
            net.log(i)
        );
    }
}
