//! The real `time-cli` binary against a real devnet: a new wallet receives funds from the
//! development wallet, pays a second wallet through another node, and every node sees the
//! balances change and the payment certified. Then bad input, each with a clear message and a
//! non-zero exit code.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::Devnet;
use serde_json::{Value, json};

/// The `time-cli` binary `cargo test --workspace` builds next to `timed`.
fn time_cli_binary() -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_timed")).with_file_name("time-cli");
    assert!(
        path.exists(),
        "{} is missing: build time-cli first (cargo build -p time-cli, or run cargo test --workspace)",
        path.display()
    );
    path
}

/// Runs time-cli against node `node` with `wallet` (file, password file) and `args`.
fn cli(net: &Devnet, node: usize, wallet: Option<(&Path, &Path)>, args: &[&str]) -> Output {
    let mut command = Command::new(time_cli_binary());
    command
        .arg("-devnet")
        .arg(format!("-datadir={}", net.data_dir(node).display()))
        .arg(format!("-rpcport={}", net.rpc_address(node).port()))
        .env_remove("TIME_WALLET_PASSWORD");
    if let Some((file, password)) = wallet {
        command
            .arg(format!("-wallet={}", file.display()))
            .arg(format!("-walletpasswordfile={}", password.display()));
    }
    command.args(args).output().unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Runs time-cli and returns its stdout, failing the test unless it exits 0.
fn ok(net: &Devnet, node: usize, wallet: Option<(&Path, &Path)>, args: &[&str]) -> String {
    let output = cli(net, node, wallet, args);
    assert!(
        output.status.success(),
        "time-cli {args:?} failed: {}",
        text(&output)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

/// Runs time-cli expecting failure: a non-zero exit and a message on stderr containing `needle`.
fn fails(net: &Devnet, node: usize, wallet: Option<(&Path, &Path)>, args: &[&str], needle: &str) {
    let output = cli(net, node, wallet, args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && output.status.code().is_some_and(|c| c != 0),
        "time-cli {args:?} should fail: {}",
        text(&output)
    );
    assert!(
        stderr.contains(needle),
        "time-cli {args:?}: expected '{needle}' in the message: {}",
        text(&output)
    );
    assert!(
        output.stdout.is_empty(),
        "a failure prints nothing on stdout: {}",
        text(&output)
    );
}

/// Units paid to `address` as node `node` sees it, through time-cli's RPC pass-through.
fn address_units(net: &Devnet, node: usize, address: &str) -> u64 {
    let reply = ok(
        net,
        node,
        None,
        &["getaddressbalance", &json!([address]).to_string()],
    );
    serde_json::from_str::<Value>(&reply).unwrap()["units"]
        .as_u64()
        .unwrap()
}

fn units(decimal: &str) -> u64 {
    let (whole, fraction) = decimal.split_once('.').unwrap_or((decimal, ""));
    whole.parse::<u64>().unwrap() * 100_000_000
        + format!("{fraction:0<8}")[..8].parse::<u64>().unwrap()
}

#[test]
fn time_cli_wallet_pays_across_a_devnet_and_rejects_bad_input() {
    let started = Instant::now();
    let binary = time_cli_binary();
    let net = Devnet::start(4, 400);
    net.wait_height(2, Duration::from_secs(60));
    let dir = tempfile::tempdir().unwrap();
    let secret = |name: &str, password: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, format!("{password}\n")).unwrap();
        path
    };
    let (dev_file, dev_password) = net.wallet();
    let dev_password = secret("dev.pw", dev_password);
    let dev = Some((dev_file.as_path(), dev_password.as_path()));
    let alice_file = dir.path().join("alice.wallet");
    let alice_password = secret("alice.pw", "alice's long password");
    let alice = Some((alice_file.as_path(), alice_password.as_path()));
    let bob_file = dir.path().join("bob.wallet");
    let bob_password = secret("bob.pw", "bob's long password");
    let bob = Some((bob_file.as_path(), bob_password.as_path()));

    // Two new wallets.
    let created: Value = serde_json::from_str(&ok(&net, 0, alice, &["createwallet"])).unwrap();
    assert_eq!(created["network"], "devnet", "{created}");
    assert!(alice_file.exists());
    ok(&net, 0, bob, &["createwallet"]);
    let alice_address = ok(&net, 0, alice, &["getnewaddress", "savings"]);
    let bob_address = ok(&net, 0, bob, &["getnewaddress"]);
    let valid: Value =
        serde_json::from_str(&ok(&net, 0, None, &["validateaddress", &alice_address])).unwrap();
    assert_eq!(valid["isvalid"], json!(true), "{alice_address}: {valid}");
    let listed: Value = serde_json::from_str(&ok(&net, 0, alice, &["listaddresses"])).unwrap();
    assert_eq!(listed[0]["address"], json!(alice_address), "{listed}");
    assert_eq!(ok(&net, 0, alice, &["getbalance"]), "0.00000000");

    // Alice receives 10 TIME from the development wallet through node 0; sendtoaddress waits for
    // the certificate.
    let funded: Value =
        serde_json::from_str(&ok(&net, 0, dev, &["sendtoaddress", &alice_address, "10"])).unwrap();
    assert!(
        funded["status"] == "certified" || funded["status"] == "in_block",
        "{funded}"
    );
    assert!(funded["finality_ms"].as_u64().is_some(), "{funded}");
    assert_eq!(ok(&net, 0, alice, &["getbalance"]), "10.00000000");
    let unspent: Value = serde_json::from_str(&ok(&net, 0, alice, &["listunspent"])).unwrap();
    assert_eq!(unspent.as_array().unwrap().len(), 1, "{unspent}");
    assert_eq!(unspent[0]["txid"], funded["txid"], "{unspent}");

    // Alice pays Bob 2.5 TIME through node 1.
    let paid: Value =
        serde_json::from_str(&ok(&net, 1, alice, &["sendtoaddress", &bob_address, "2.5"])).unwrap();
    assert!(
        paid["status"] == "certified" || paid["status"] == "in_block",
        "{paid}"
    );
    let txid = paid["txid"].as_str().unwrap().to_string();
    // A JSON number in TIME (it may print in exponent form): round to whole units.
    let fee = (paid["fee"].as_f64().unwrap() * 1e8).round() as u64;
    assert!(fee > 0, "{paid}");
    let alice_left = 1_000_000_000 - 250_000_000 - fee;
    // Node 1's finality feed, read through the CLI, names the payment sendtoaddress waited for.
    let feed: Value =
        serde_json::from_str(&ok(&net, 1, None, &["waitforfinalized", "0", "1000"])).unwrap();
    assert!(
        feed["transactions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|event| event["txid"] == txid.as_str()),
        "{feed}"
    );

    // Every node sees the payment final and both balances changed.
    let deadline = Instant::now() + Duration::from_secs(20);
    for node in 0..4 {
        loop {
            let finality: Value =
                serde_json::from_str(&ok(&net, node, None, &["gettxfinality", &txid])).unwrap();
            let certified = finality["status"] == "certified" || finality["status"] == "in_block";
            if certified && address_units(&net, node, &bob_address) == 250_000_000 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {node} does not see the payment: {finality}\n{}",
                net.log(node)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(
            units(&ok(&net, node, alice, &["getbalance"])),
            alice_left,
            "alice's balance on node {node}"
        );
        assert_eq!(
            ok(&net, node, bob, &["getbalance"]),
            "2.50000000",
            "bob's balance on node {node}"
        );
    }

    // Bad input: each fails with a clear message, a non-zero exit code, and changes nothing.
    let wrong_password = secret("wrong.pw", "not alice's password");
    fails(
        &net,
        0,
        Some((alice_file.as_path(), wrong_password.as_path())),
        &["getbalance"],
        "wrong password",
    );
    fails(
        &net,
        0,
        alice,
        &["sendtoaddress", "ttime1notanaddress", "1"],
        "error:",
    );
    fails(
        &net,
        0,
        alice,
        &["sendtoaddress", &bob_address, "1000000"],
        "insufficient funds",
    );
    fails(
        &net,
        0,
        alice,
        &["sendtoaddress", &bob_address, "0.000000001"],
        "invalid amount",
    );
    fails(
        &net,
        0,
        alice,
        &["sendtoaddress", &bob_address, "-1"],
        "invalid amount",
    );
    fails(&net, 0, None, &["nosuchmethod"], "Method not found");
    fails(&net, 0, None, &["nosuchmethod"], "error code: -32601");
    fails(
        &net,
        0,
        None,
        &["getblockhash", "\"ten\""],
        "JSON value of type string is not of expected type number",
    );
    fails(&net, 0, None, &["getblockhash", "ten"], "not valid JSON");
    fails(
        &net,
        0,
        None,
        &["gettxout", &txid, "\"zero\""],
        "error code: -3",
    );
    fails(&net, 0, None, &["getblock", "nothex"], "error code: -8");
    assert_eq!(ok(&net, 0, bob, &["getbalance"]), "2.50000000");
    assert_eq!(units(&ok(&net, 0, alice, &["getbalance"])), alice_left);
    eprintln!(
        "time-cli end to end with {} took {:?}",
        binary.display(),
        started.elapsed()
    );
}
