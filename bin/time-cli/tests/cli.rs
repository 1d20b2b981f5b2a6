//! time-cli against a stand-in node: an RPC server from `timecoin-rpc` answering the methods the
//! wallet uses (docs/rpc.md) from an in-memory UTXO list. It checks what the CLI sends for real:
//! transactions are decoded, their signatures verified with the ledger's rules, and their value
//! balanced, so a CLI that built a bad transaction fails these tests.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use timecoin_primitives::hash::{Hash32, Txid};
use timecoin_primitives::{Address, Amount, Network, OutPoint, SecretKey, Transaction, decode};
use timecoin_rpc::{AuthConfig, Methods, RpcError, RpcServer, ServerConfig};

const MIN_FEE_RATE: u64 = 5;

#[derive(Default)]
struct FakeNode {
    /// (address text, outpoint, units, collateral)
    utxos: Vec<(String, OutPoint, u64, bool)>,
    received: Vec<Transaction>,
    /// How many more submissions to answer "busy" (RPC error -50) before taking one.
    busy_left: u32,
    /// Submissions answered "busy" so far.
    busy_answers: u32,
}

struct Harness {
    _runtime: tokio::runtime::Runtime,
    _server: RpcServer,
    address: SocketAddr,
    node: Arc<Mutex<FakeNode>>,
    dir: tempfile::TempDir,
}

fn units_of(node: &FakeNode, outpoint: &OutPoint) -> Option<u64> {
    node.utxos.iter().find(|u| u.1 == *outpoint).map(|u| u.2)
}

fn start() -> Harness {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let node = Arc::new(Mutex::new(FakeNode::default()));
    let mut methods = Methods::new();
    let n = node.clone();
    methods.register_blocking("getaddressutxos", "", move |params| {
        let args = params.bind(&["query"])?;
        let query: serde_json::Map<String, Value> = args.required(0)?;
        let wanted: Vec<String> = query["addresses"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()).collect();
        let node = n.lock().unwrap();
        Ok(Value::Array(
            node.utxos
                .iter()
                .filter(|u| wanted.contains(&u.0))
                .map(|(address, outpoint, units, collateral)| {
                    json!({"address": address, "txid": outpoint.txid.to_string(), "vout": outpoint.index,
                           "units": units, "collateral": collateral, "status": "in_block", "height": 1})
                })
                .collect(),
        ))
    });
    methods.register_blocking("getmempoolinfo", "", |_| {
        Ok(json!({"size": 0, "min_fee_rate_units_per_byte": MIN_FEE_RATE}))
    });
    methods.register_blocking("getconsensusinfo", "", |_| {
        Ok(json!({"tiers": {"bronze": {"units": 1000u64 * 100_000_000, "weight": 1}}}))
    });
    let n = node.clone();
    methods.register_blocking("sendrawtransaction", "", move |params| {
        let args = params.bind(&["hexstring"])?;
        let text: String = args.required(0)?;
        let bytes = hex::decode(text).map_err(|_| RpcError::new(-22, "TX decode failed"))?;
        let tx: Transaction = decode(&bytes).map_err(|_| RpcError::new(-22, "TX decode failed"))?;
        timecoin_ledger::verify_transaction(&tx, 0, Network::Devnet)
            .map_err(|e| RpcError::new(-26, e.to_string()))?;
        let mut node = n.lock().unwrap();
        if node.busy_left > 0 {
            node.busy_left -= 1;
            node.busy_answers += 1;
            return Err(RpcError::new(
                timecoin_rpc::codes::RPC_NODE_BUSY,
                "node busy: 1000 transactions are waiting for finality (limit 1000); send again shortly",
            ));
        }
        let mut spent = 0u64;
        for input in tx.body.inputs.iter() {
            spent += units_of(&node, &input.prevout)
                .ok_or_else(|| RpcError::new(-25, "missing inputs"))?;
        }
        let paid: u64 = tx.body.outputs.iter().map(|o| o.amount.units()).sum();
        let fee = spent
            .checked_sub(paid)
            .ok_or_else(|| RpcError::new(-26, "outputs exceed inputs"))?;
        if fee < tx.encoded_size() as u64 * MIN_FEE_RATE {
            return Err(RpcError::new(-26, "fee below the minimum"));
        }
        let txid = tx.txid();
        node.received.push(tx);
        Ok(Value::String(txid.to_string()))
    });
    let n = node.clone();
    methods.register_blocking("gettxfinality", "", move |params| {
        let args = params.bind(&["txid"])?;
        let txid: String = args.required(0)?;
        let node = n.lock().unwrap();
        let known = node.received.iter().any(|tx| tx.txid().to_string() == txid);
        Ok(json!({"txid": txid, "status": if known { "certified" } else { "unknown" }}))
    });
    let config = ServerConfig::new(
        0,
        AuthConfig::Cookie {
            dir: dir.path().to_path_buf(),
        },
    );
    let server = runtime.block_on(RpcServer::start(config, methods)).unwrap();
    let address = server.local_addr();
    Harness {
        _runtime: runtime,
        _server: server,
        address,
        node,
        dir,
    }
}

impl Harness {
    fn cli(&self, args: &[&str]) -> Output {
        self.cli_with_password(args, "secret words")
    }

    fn cli_with_password(&self, args: &[&str], password: &str) -> Output {
        Command::new(env!("CARGO_BIN_EXE_time-cli"))
            .arg("-devnet")
            .arg(format!("-datadir={}", self.dir.path().display()))
            .arg(format!("-rpcport={}", self.address.port()))
            .args(args)
            .env("TIME_WALLET_PASSWORD", password)
            .output()
            .unwrap()
    }

    fn fund(&self, address: &str, units: u64, seed: u8) {
        let outpoint = OutPoint {
            txid: Txid(Hash32([seed; 32])),
            index: 0,
        };
        self.node
            .lock()
            .unwrap()
            .utxos
            .push((address.to_string(), outpoint, units, false));
    }
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).trim().to_string()
}

fn assert_fails(output: &Output, needle: &str) {
    assert!(
        !output.status.success(),
        "expected failure, got {}",
        stdout(output)
    );
    assert!(
        stderr(output).contains(needle),
        "stderr {:?} lacks {needle:?}",
        stderr(output)
    );
}

#[test]
fn wallet_lifecycle_and_payment() {
    let h = start();
    let created = h.cli(&["createwallet"]);
    assert!(created.status.success(), "{}", stderr(&created));
    assert!(h.dir.path().join("wallet.json").exists());
    let address = stdout(&h.cli(&["getnewaddress", "savings"]));
    assert!(
        Address::parse(&address, Network::Devnet).is_ok(),
        "{address}"
    );
    let listed: Value = serde_json::from_str(&stdout(&h.cli(&["listaddresses"]))).unwrap();
    assert_eq!(listed[0]["address"], address.as_str());
    assert_eq!(listed[0]["label"], "savings");

    h.fund(&address, 5 * 100_000_000, 1);
    h.fund(&address, 3 * 100_000_000, 2);
    assert_eq!(stdout(&h.cli(&["getbalance"])), "8.00000000");
    let unspent: Value = serde_json::from_str(&stdout(&h.cli(&["listunspent"]))).unwrap();
    assert_eq!(unspent.as_array().unwrap().len(), 2);

    let recipient = Address::from_public_key(&SecretKey::from_bytes([42; 32]).public_key())
        .encode(Network::Devnet);
    let sent = h.cli(&["sendtoaddress", &recipient, "6.5"]);
    assert!(sent.status.success(), "{}", stderr(&sent));
    let result: Value = serde_json::from_str(&stdout(&sent)).unwrap();
    assert_eq!(result["status"], "certified");
    assert!(result["finality_ms"].is_u64());
    let node = h.node.lock().unwrap();
    let tx = &node.received[0];
    assert_eq!(result["txid"], tx.txid().to_string());
    assert_eq!(tx.body.inputs.len(), 2);
    assert_eq!(tx.body.outputs[0].amount, "6.5".parse::<Amount>().unwrap());
    assert_eq!(
        tx.body.outputs[0].address.encode(Network::Devnet),
        recipient
    );
}

/// A node that answers "busy" gets the payment again after a pause, as long as -busywait
/// allows; then the CLI gives up with the node's answer, and nothing was taken.
#[test]
fn sendtoaddress_offers_a_payment_again_while_the_node_is_busy() {
    let h = start();
    assert!(h.cli(&["createwallet"]).status.success());
    let address = stdout(&h.cli(&["getnewaddress"]));
    h.fund(&address, 5 * 100_000_000, 1);
    let recipient = Address::from_public_key(&SecretKey::from_bytes([42; 32]).public_key())
        .encode(Network::Devnet);

    h.node.lock().unwrap().busy_left = 2;
    let sent = h.cli(&["sendtoaddress", &recipient, "1"]);
    assert!(sent.status.success(), "{}", stderr(&sent));
    let result: Value = serde_json::from_str(&stdout(&sent)).unwrap();
    assert_eq!(result["status"], "certified");
    assert_eq!(
        stderr(&sent).matches("node busy").count(),
        2,
        "{}",
        stderr(&sent)
    );
    {
        let node = h.node.lock().unwrap();
        assert_eq!((node.busy_answers, node.received.len()), (2, 1));
        assert_eq!(result["txid"], node.received[0].txid().to_string());
    }

    // Busy for longer than -busywait: the node's error, after a bounded number of offers.
    h.node.lock().unwrap().busy_left = u32::MAX;
    let refused = h.cli(&["-busywait=0.5", "sendtoaddress", &recipient, "1"]);
    assert_fails(&refused, "error code: -50");
    let node = h.node.lock().unwrap();
    // Pauses of 100 and 200 ms fit in 0.5 s, the next one of 400 ms would not: at most three
    // offers (fewer if the calls themselves were slow).
    let offers = node.busy_answers - 2;
    assert!((1..=3).contains(&offers), "{offers} offers");
    assert_eq!(node.received.len(), 1);
    drop(node);
    assert_fails(
        &h.cli(&["-busywait=soon", "sendtoaddress", &recipient, "1"]),
        "-busywait=soon is not a number of seconds",
    );
}

#[test]
fn bad_input_gets_clear_errors() {
    let h = start();
    assert!(h.cli(&["createwallet"]).status.success());
    let address = stdout(&h.cli(&["getnewaddress"]));
    h.fund(&address, 100_000_000, 1);

    assert_fails(
        &h.cli_with_password(&["listaddresses"], "not it"),
        "wrong password",
    );
    assert_fails(
        &h.cli(&["sendtoaddress", "ttime1notanaddress", "1"]),
        "not a valid address",
    );
    let mainnet = Address::from_public_key(&SecretKey::from_bytes([1; 32]).public_key())
        .encode(Network::Mainnet);
    assert_fails(&h.cli(&["sendtoaddress", &mainnet, "1"]), "devnet");
    assert_fails(
        &h.cli(&["sendtoaddress", &address, "0.123456789"]),
        "more than 8 decimal places",
    );
    assert_fails(&h.cli(&["sendtoaddress", &address, "-1"]), "negative");
    assert_fails(
        &h.cli(&["sendtoaddress", &address, "5"]),
        "insufficient funds",
    );
    assert_fails(&h.cli(&["sendtoaddress", &address]), "usage");
    assert_fails(&h.cli(&["nosuchmethod"]), "error code: -32601");
    assert_fails(&h.cli(&["createwallet"]), "already exists");
    assert!(h.node.lock().unwrap().received.is_empty());
}

#[test]
fn unreachable_node_and_missing_wallet() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_time-cli"))
            .arg("-devnet")
            .arg(format!("-datadir={}", dir.path().display()))
            .args(args)
            .env("TIME_WALLET_PASSWORD", "x")
            .output()
            .unwrap()
    };
    assert_fails(&run(&["getblockcount"]), "cookie");
    assert_fails(
        &run(&[
            "-rpcuser=u",
            "-rpcpassword=p",
            "-rpcport=1",
            "getblockcount",
        ]),
        "error",
    );
    assert_fails(&run(&["getnewaddress"]), "createwallet");
    assert_fails(&run(&["-bogus", "x"]), "unknown option");
    let help = run(&["-help"]);
    assert!(help.status.success());
    assert!(stdout(&help).contains("sendtoaddress"));
    assert!(Path::new(dir.path()).exists());
}
