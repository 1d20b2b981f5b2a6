//! Third-party clients against a real devnet: python-bitcoinrpc's `AuthServiceProxy` (cookie and
//! user/password authentication, a batch, error codes) and prometheus_client's OpenMetrics parser
//! on `/metrics`, with values checked against RPC. The checks live in `tests/python/*.py`; this
//! test starts the network, makes the transactions they look at, and runs them.
//!
//! Needs `python3` with `python-bitcoinrpc` and `prometheus-client` (installed by `.ci/run`).
//! Without `python3` at all the test is skipped with a message; with python3 but without the
//! packages it fails and says how to install them.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::Devnet;
use serde_json::{Value, json};
use timecoin_primitives::{Address, Amount, Network, OutPoint, SecretKey, Transaction, encode};
use timecoin_rpc::RpcClient;
use timecoin_wallet::{Coin, Keystore, build_transfer};

const RPC_USER: &str = "alice";
const RPC_PASSWORD: &str = "correct-horse-battery";

/// A payment of `amount` TIME to `recipient` from the development wallet, built from the coins
/// node `node` reports (certified change included) but not sent.
fn build_payment(net: &Devnet, node: usize, recipient: &Address, amount: &str) -> Transaction {
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
    build_transfer(
        &wallet,
        &coins,
        &[(*recipient, amount.parse().unwrap())],
        address,
        fee_rate,
    )
    .unwrap()
    .transaction
}

fn wait_final(net: &Devnet, node: usize, txid: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = net.rpc(node, "gettxfinality", json!([txid])).unwrap();
        if status["status"] == "certified" || status["status"] == "in_block" {
            return;
        }
        assert!(Instant::now() < deadline, "not final: {status}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn python_available() -> bool {
    Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success())
}

/// Runs `tests/python/<script>` with the config; fails the test with its output unless it exits 0.
fn run_python(net: &Devnet, script: &str, config: &Value) -> Duration {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(script);
    let started = Instant::now();
    let output = Command::new("python3")
        .arg(&path)
        .arg(config.to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if stderr.contains("No module named") {
        panic!(
            "{script} needs python packages: python3 -m pip install python-bitcoinrpc prometheus-client (as .ci/run does)\n{stderr}"
        );
    }
    assert!(
        output.status.success(),
        "{script} failed ({})\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n--- node 0 log\n{}",
        output.status,
        net.log(0)
    );
    eprint!("{stdout}");
    started.elapsed()
}

#[test]
fn python_bitcoinrpc_and_prometheus_parser_against_a_devnet() {
    if !python_available() {
        eprintln!(
            "SKIPPED python_bitcoinrpc_and_prometheus_parser_against_a_devnet: python3 is not installed"
        );
        return;
    }
    let started = Instant::now();
    let mut net = Devnet::start(4, 400);
    net.wait_height(2, Duration::from_secs(60));

    // Node 3 comes back with rpc.user/rpc.password instead of the cookie. SIGTERM, not SIGKILL,
    // so its old cookie is deleted and the script can check that none is left.
    assert_eq!(net.terminate(3, Duration::from_secs(10)), Some(0));
    let user = format!("--rpc.user={RPC_USER}");
    let password = format!("--rpc.password={RPC_PASSWORD}");
    net.children[3] = Some(net.spawn(3, &[&user, &password]));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = RpcClient::new(net.rpc_address(3), RPC_USER, RPC_PASSWORD);
    let deadline = Instant::now() + Duration::from_secs(60);
    while runtime
        .block_on(client.call("getblockcount", json!([])))
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "node 3 never answered\n{}",
            net.log(3)
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // One payment sent and final (for the chain, proof and finality checks), and a second one
    // built on its change but not sent (for testmempoolaccept, then sendrawtransaction).
    let recipient = Address::from_public_key(&SecretKey::from_bytes([7; 32]).public_key());
    let first = build_payment(&net, 0, &recipient, "1.5");
    let txid = net
        .rpc(
            0,
            "sendrawtransaction",
            json!([hex::encode(encode(&first))]),
        )
        .unwrap();
    let txid = txid.as_str().unwrap().to_string();
    assert_eq!(txid, first.txid().to_string());
    wait_final(&net, 0, &txid);
    let second = build_payment(&net, 0, &recipient, "0.25");
    let setup = started.elapsed();

    let nodes: Vec<Value> = (0..4)
        .map(|i| {
            json!({
                "rpc_port": net.rpc_address(i).port(),
                "metrics_port": net.metrics_address(i).port(),
                "datadir": net.data_dir(i),
            })
        })
        .collect();
    let config = json!({
        "nodes": nodes,
        "txid": txid,
        "unsent_hex": hex::encode(encode(&second)),
        "userpass": {"node": 3, "user": RPC_USER, "password": RPC_PASSWORD},
    });
    let rpc_time = run_python(&net, "rpc_clients.py", &config);
    let metrics_time = run_python(&net, "metrics.py", &config);
    eprintln!(
        "devnet and payments {setup:?}, rpc_clients.py {rpc_time:?}, metrics.py {metrics_time:?}"
    );
}
