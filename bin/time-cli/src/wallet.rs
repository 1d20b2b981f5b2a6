//! Wallet commands: keys live in the local keystore; coins, fee rates and broadcasting come from
//! the node.

use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use timecoin_primitives::hash::Txid;
use timecoin_primitives::{Address, Amount, OutPoint, SecretKey, Tier, encode};
use timecoin_wallet::{
    BuiltTransaction, Coin, KdfParams, Keystore, build_deregistration, build_registration,
    build_transfer,
};
use zeroize::Zeroizing;

use crate::args::Options;
use crate::{Failure, call, try_call};
use timecoin_rpc::{Error as RpcClientError, codes};

/// How long `sendtoaddress` waits for a finality certificate before giving up waiting (the
/// transaction may still finalize; `gettxfinality` tells).
const FINALITY_WAIT: Duration = Duration::from_secs(60);
/// How often it asks a node without the finality feed (`waitforfinalized`).
const FINALITY_POLL: Duration = Duration::from_millis(20);
/// The longest one `waitforfinalized` call waits, so progress is shown at least this often.
const FEED_WAIT: Duration = Duration::from_secs(1);
/// The first pause before offering a payment to a busy node again; it doubles up to the next.
const BUSY_FIRST_PAUSE: Duration = Duration::from_millis(100);
/// The longest pause between offers to a busy node.
const BUSY_MAX_PAUSE: Duration = Duration::from_secs(2);

/// Runs `method` if it is a wallet command; `None` if it is a plain RPC call.
pub fn run(options: &Options, method: &str, params: &[String]) -> Result<Option<Value>, Failure> {
    let arity = |min: usize, max: usize, usage: &str| {
        if params.len() < min || params.len() > max {
            Err(Failure::from(format!(
                "error: usage: time-cli {method} {usage}"
            )))
        } else {
            Ok(())
        }
    };
    let result = match method {
        "createwallet" => {
            arity(0, 0, "")?;
            let path = options.wallet_path();
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| format!("error: cannot create {}: {e}", parent.display()))?;
            }
            let password = password(options, true)?;
            let wallet = Keystore::create(&path, &password, options.network, KdfParams::default())?;
            json!({"wallet": wallet.path().display().to_string(), "network": options.network.name()})
        }
        "getnewaddress" => {
            arity(0, 1, "[label]")?;
            let mut wallet = open(options)?;
            let address = wallet.new_address(params.first().map(String::as_str).unwrap_or(""))?;
            Value::String(address.encode(options.network))
        }
        "importprivkey" => {
            arity(1, 2, "<hex secret key> [label]")?;
            let secret = parse_secret(&params[0])?;
            let mut wallet = open(options)?;
            let address = wallet.import_key(
                secret,
                params.get(1).map(String::as_str).unwrap_or("imported"),
            )?;
            Value::String(address.encode(options.network))
        }
        "listaddresses" => {
            arity(0, 0, "")?;
            let wallet = open(options)?;
            Value::Array(
                wallet
                    .addresses()
                    .into_iter()
                    .map(|(address, label)| json!({"address": address.encode(options.network), "label": label}))
                    .collect(),
            )
        }
        "getbalance" => {
            arity(0, 0, "")?;
            let wallet = open(options)?;
            let coins = coins(options, &wallet)?;
            let spendable =
                Amount::checked_sum(coins.iter().filter(|c| !c.is_collateral).map(|c| c.amount))
                    .ok_or("error: balance exceeds the supply cap")?;
            // Printed bare like bitcoin-cli's getbalance, with all eight decimals and exact.
            Value::String(spendable.to_string())
        }
        "listunspent" => {
            arity(0, 0, "")?;
            let wallet = open(options)?;
            Value::Array(
                coins(options, &wallet)?
                    .iter()
                    .map(|c| {
                        json!({
                            "txid": c.outpoint.txid.to_string(),
                            "vout": c.outpoint.index,
                            "address": c.address.encode(options.network),
                            "amount": amount_json(c.amount),
                            "units": c.amount.units(),
                            "collateral": c.is_collateral,
                        })
                    })
                    .collect(),
            )
        }
        "sendtoaddress" => {
            arity(2, 2, "<address> <amount>")?;
            let destination =
                Address::parse(&params[0], options.network).map_err(|e| format!("error: {e}"))?;
            let amount: Amount = params[1]
                .parse()
                .map_err(|e| format!("error: invalid amount: {e}"))?;
            if amount.is_zero() {
                return Err(Failure::from(
                    "error: invalid amount: must be more than zero".to_string(),
                ));
            }
            let mut wallet = open(options)?;
            let coins = coins(options, &wallet)?;
            let fee_rate = fee_rate(options)?;
            let change = wallet.new_address("change")?;
            let built =
                build_transfer(&wallet, &coins, &[(destination, amount)], change, fee_rate)?;
            send(options, built)?
        }
        "registermasternode" => {
            arity(
                3,
                3,
                "<bronze|silver|gold> <node-key-file> <network-address>",
            )?;
            let tier: Tier = params[0]
                .parse()
                .map_err(|e: String| format!("error: {e}"))?;
            let node_key = read_node_key(Path::new(&params[1]))?;
            let collateral = tier_collateral(options, tier)?;
            let mut wallet = open(options)?;
            let coins = coins(options, &wallet)?;
            let fee_rate = fee_rate(options)?;
            let owner = wallet.new_address("masternode collateral")?;
            let change = wallet.new_address("change")?;
            let built = build_registration(
                &wallet, &coins, tier, collateral, owner, &node_key, &params[2], change, fee_rate,
            )?;
            let txid = built.transaction.txid();
            let mut result = send(options, built)?;
            result["collateral"] = json!(format!("{txid}:0"));
            result["node_key"] = json!(node_key.public_key().to_string());
            result
        }
        "deregistermasternode" => {
            arity(1, 2, "<collateral txid:vout> [address]")?;
            let outpoint = parse_outpoint(&params[0])?;
            let mut wallet = open(options)?;
            let coin = coins(options, &wallet)?
                .into_iter()
                .find(|c| c.outpoint == outpoint)
                .ok_or_else(|| {
                    format!(
                        "error: {} is not an unspent output of this wallet",
                        params[0]
                    )
                })?;
            let destination = match params.get(1) {
                Some(text) => {
                    Address::parse(text, options.network).map_err(|e| format!("error: {e}"))?
                }
                None => wallet.new_address("deregistered collateral")?,
            };
            let built = build_deregistration(&wallet, coin, destination, fee_rate(options)?)?;
            send(options, built)?
        }
        _ => return Ok(None),
    };
    Ok(Some(result))
}

/// Amounts are JSON numbers in TIME, as Bitcoin Core shows BTC; exact integer `units` go beside
/// them wherever a script may compute with the value.
fn amount_json(amount: Amount) -> Value {
    serde_json::from_str(&amount.to_string()).expect("a decimal is a JSON number")
}

fn password(options: &Options, confirm: bool) -> Result<Zeroizing<Vec<u8>>, Failure> {
    if let Some(file) = &options.wallet_password_file {
        let text = std::fs::read_to_string(file).map_err(|e| {
            format!(
                "error: cannot read -walletpasswordfile {}: {e}",
                file.display()
            )
        })?;
        return Ok(Zeroizing::new(
            text.lines().next().unwrap_or("").as_bytes().to_vec(),
        ));
    }
    if let Ok(text) = std::env::var("TIME_WALLET_PASSWORD") {
        return Ok(Zeroizing::new(text.into_bytes()));
    }
    if !std::io::stdin().is_terminal() {
        return Err(Failure::from(
            "error: no wallet password: use -walletpasswordfile=<file> or TIME_WALLET_PASSWORD, or run on a terminal"
                .to_string(),
        ));
    }
    let first = Zeroizing::new(
        rpassword::prompt_password("Wallet password: ")
            .map_err(|e| format!("error: cannot read the password: {e}"))?,
    );
    if confirm {
        let second = Zeroizing::new(
            rpassword::prompt_password("Repeat password: ")
                .map_err(|e| format!("error: cannot read the password: {e}"))?,
        );
        if *first != *second {
            return Err(Failure::from("error: the passwords differ".to_string()));
        }
    }
    Ok(Zeroizing::new(first.as_bytes().to_vec()))
}

fn open(options: &Options) -> Result<Keystore, Failure> {
    let path = options.wallet_path();
    if !path.exists() {
        return Err(Failure::from(format!(
            "error: no wallet at {}; create one with `time-cli createwallet` (or pass -wallet=<file>)",
            path.display()
        )));
    }
    Ok(Keystore::open(
        &path,
        &password(options, false)?,
        options.network,
    )?)
}

fn parse_secret(text: &str) -> Result<SecretKey, Failure> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(text.trim(), bytes.as_mut())
        .map_err(|_| "error: a secret key is 64 hexadecimal digits".to_string())?;
    Ok(SecretKey::from_bytes(*bytes))
}

/// A node key file holds the 32-byte secret, raw or as 64 hex digits.
fn read_node_key(path: &Path) -> Result<SecretKey, Failure> {
    let bytes = Zeroizing::new(
        std::fs::read(path)
            .map_err(|e| format!("error: cannot read node key file {}: {e}", path.display()))?,
    );
    if bytes.len() == 32 {
        let mut secret = [0u8; 32];
        secret.copy_from_slice(&bytes);
        return Ok(SecretKey::from_bytes(secret));
    }
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| format!("error: {} is not a node key file", path.display()))?;
    parse_secret(text)
        .map_err(|_| Failure::from(format!("error: {} is not a node key file", path.display())))
}

fn parse_outpoint(text: &str) -> Result<OutPoint, Failure> {
    let bad = || Failure::from(format!("error: '{text}' is not txid:vout"));
    let (txid, index) = text.split_once(':').ok_or_else(bad)?;
    Ok(OutPoint {
        txid: txid.parse::<Txid>().map_err(|_| bad())?,
        index: index.parse().map_err(|_| bad())?,
    })
}

fn field<'a>(value: &'a Value, name: &str, method: &str) -> Result<&'a Value, Failure> {
    value
        .get(name)
        .ok_or_else(|| Failure::from(format!("error: the node's {method} reply has no '{name}'")))
}

fn coins(options: &Options, wallet: &Keystore) -> Result<Vec<Coin>, Failure> {
    let addresses: Vec<String> = wallet
        .addresses()
        .iter()
        .map(|(a, _)| a.encode(options.network))
        .collect();
    if addresses.is_empty() {
        return Ok(Vec::new());
    }
    let reply = call(
        options,
        "getaddressutxos",
        json!([{"addresses": addresses}]),
    )?;
    let items = reply
        .as_array()
        .ok_or("error: getaddressutxos did not return an array")?;
    items
        .iter()
        .map(|item| {
            let text = |name| {
                field(item, name, "getaddressutxos")
                    .map(|v| v.as_str().unwrap_or_default().to_string())
            };
            let number = |name| field(item, name, "getaddressutxos").map(|v| v.as_u64());
            let malformed = || Failure::from("error: malformed getaddressutxos reply".to_string());
            Ok(Coin {
                outpoint: OutPoint {
                    txid: text("txid")?.parse().map_err(|_| malformed())?,
                    index: number("vout")?
                        .and_then(|v| u32::try_from(v).ok())
                        .ok_or_else(malformed)?,
                },
                amount: number("units")?
                    .and_then(|u| Amount::from_units(u).ok())
                    .ok_or_else(malformed)?,
                address: Address::parse(&text("address")?, options.network)
                    .map_err(|_| malformed())?,
                is_collateral: field(item, "collateral", "getaddressutxos")?
                    .as_bool()
                    .unwrap_or(false),
            })
        })
        .collect()
}

fn fee_rate(options: &Options) -> Result<u64, Failure> {
    let info = call(options, "getmempoolinfo", json!([]))?;
    field(&info, "min_fee_rate_units_per_byte", "getmempoolinfo")?
        .as_u64()
        .ok_or_else(|| Failure::from("error: malformed getmempoolinfo reply".to_string()))
}

fn tier_collateral(options: &Options, tier: Tier) -> Result<Amount, Failure> {
    let info = call(options, "getconsensusinfo", json!([]))?;
    field(&info, "tiers", "getconsensusinfo")?
        .get(tier.name())
        .and_then(|t| t.get("units"))
        .and_then(Value::as_u64)
        .and_then(|u| Amount::from_units(u).ok())
        .ok_or_else(|| Failure::from("error: malformed getconsensusinfo reply".to_string()))
}

/// Sends the transaction, again and again with growing pauses while the node answers that it
/// is busy (ADR 0026) and -busywait allows; any other answer is final.
fn submit(options: &Options, hex: &str) -> Result<(), Failure> {
    let started = Instant::now();
    let mut pause = BUSY_FIRST_PAUSE;
    loop {
        match try_call(options, "sendrawtransaction", json!([hex]))? {
            Ok(_) => return Ok(()),
            Err(RpcClientError::Rpc(error))
                if error.code == codes::RPC_NODE_BUSY
                    && started.elapsed() + pause <= options.busy_wait =>
            {
                eprintln!(
                    "{}; sending again in {} ms",
                    error.message,
                    pause.as_millis()
                );
                std::thread::sleep(pause);
                pause = (pause * 2).min(BUSY_MAX_PAUSE);
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// Broadcasts, then (unless -nowait) waits for the finality certificate, showing progress.
fn send(options: &Options, built: BuiltTransaction) -> Result<Value, Failure> {
    let txid = built.transaction.txid();
    let hex = hex::encode(encode(&built.transaction));
    // Where the node's finality feed stands before the payment, so its event cannot be missed.
    // A node without the feed (older than this client) is polled instead.
    let mut feed = if options.no_wait {
        None
    } else {
        call(options, "waitforfinalized", json!([0]))
            .ok()
            .and_then(|reply| reply["last"].as_u64())
    };
    let started = Instant::now();
    submit(options, &hex)?;
    let mut result = json!({"txid": txid.to_string(), "fee": amount_json(built.fee)});
    if options.no_wait {
        return Ok(result);
    }
    let progress = std::io::stderr().is_terminal();
    let txid_text = txid.to_string();
    loop {
        let status = match feed {
            Some(since) => {
                let wait = FINALITY_WAIT
                    .saturating_sub(started.elapsed())
                    .min(FEED_WAIT);
                let (next, status) = feed_status(options, since, wait, &txid_text)?;
                feed = next;
                status
            }
            None => finality_status(options, &txid_text)?,
        };
        if status == "certified" || status == "in_block" {
            result["status"] = json!(status);
            result["finality_ms"] = json!(started.elapsed().as_millis() as u64);
            return Ok(result);
        }
        if started.elapsed() > FINALITY_WAIT {
            return Err(Failure::from(format!(
                "error: {txid} was sent but is still {status} after {} s; check later with `time-cli gettxfinality {txid}`",
                FINALITY_WAIT.as_secs()
            )));
        }
        if progress {
            eprint!(
                "\rwaiting for the finality certificate of {txid}: {status}, {} ms",
                started.elapsed().as_millis()
            );
        }
        if feed.is_none() {
            std::thread::sleep(FINALITY_POLL);
        }
    }
}

/// Waits up to `wait` on the node's finality feed from `since`: where the feed stands next
/// (`None` if the node has no feed, so the caller polls instead) and `txid`'s status.
fn feed_status(
    options: &Options,
    since: u64,
    wait: Duration,
    txid: &str,
) -> Result<(Option<u64>, String), Failure> {
    let Ok(reply) = call(
        options,
        "waitforfinalized",
        json!([since, wait.as_millis() as u64]),
    ) else {
        return Ok((None, finality_status(options, txid)?));
    };
    let next = reply["last"].as_u64();
    let named = reply["transactions"]
        .as_array()
        .and_then(|events| events.iter().find(|event| event["txid"] == txid));
    let status = match named {
        Some(event) => event["status"].as_str().unwrap_or("certified").to_string(),
        // Events were lost before we read them: ask about the payment.
        None if reply["missed"] == json!(true) => finality_status(options, txid)?,
        None => "pending".to_string(),
    };
    Ok((next, status))
}

/// What `gettxfinality` says of `txid`.
fn finality_status(options: &Options, txid: &str) -> Result<String, Failure> {
    let finality = call(options, "gettxfinality", json!([txid]))?;
    Ok(finality
        .get("status")
        .and_then(Value::as_str)
        .unwrap_or("unknown")
        .to_string())
}
