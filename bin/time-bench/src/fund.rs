//! Pre-funding: the development wallet's coin is split into many small coins per sender key, in
//! two fan-out stages, and the bench waits until every node has certified them.

use std::str::FromStr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use timecoin_primitives::{Address, Network, OutPoint, SecretKey, Transaction, TxOut, Txid};

use crate::devnet::Devnet;
use crate::http::Client;
use crate::txgen::{self, Sender};

/// Outputs per second-stage fan-out transaction (about 45 kB each, well under the transaction
/// and gossip size limits).
pub const FANOUT_OUTPUTS: usize = 1_000;

/// The coins prepared for a run.
pub struct Funding {
    /// `coins[s][0][r]` and `coins[s][1][r]`: sender `s`'s `r`-th coin on its first and second key.
    pub coins: Vec<[Vec<OutPoint>; 2]>,
    /// Units in each coin.
    pub coin_units: u64,
    /// Fan-out transactions used.
    pub transactions: usize,
    /// How long funding took.
    pub elapsed: Duration,
}

fn hex_of(tx: &Transaction) -> Value {
    json!([hex::encode(timecoin_primitives::encode(tx))])
}

/// Sends `txs` spread over the nodes, then waits until every node reports each certified.
async fn submit_and_wait(devnet: &Devnet, txs: &[Transaction]) -> Result<(), String> {
    let nodes = devnet.len();
    for node in 0..nodes {
        let mine: Vec<Value> = txs.iter().skip(node).step_by(nodes).map(hex_of).collect();
        for chunk in mine.chunks(50) {
            let results = devnet
                .client(node)?
                .batch("sendrawtransaction", chunk)
                .await?;
            if let Some(Err(e)) = results.into_iter().find(|r| r.is_err()) {
                return Err(format!(
                    "a funding transaction was refused by node {node}: {e}"
                ));
            }
        }
    }
    let ids: Vec<Value> = txs.iter().map(|t| json!([t.txid().to_string()])).collect();
    wait_final(devnet, &ids, Duration::from_secs(60)).await
}

/// Waits until every node says each txid (as `[txid]` parameter lists) is certified or in a block.
pub async fn wait_final(devnet: &Devnet, ids: &[Value], within: Duration) -> Result<(), String> {
    let deadline = Instant::now() + within;
    for node in 0..devnet.len() {
        let mut client = devnet.client(node)?;
        let mut waiting: Vec<Value> = ids.to_vec();
        while !waiting.is_empty() {
            let mut still = Vec::new();
            for chunk in waiting.chunks(500) {
                let results = client.batch("gettxfinality", chunk).await?;
                for (id, result) in chunk.iter().zip(results) {
                    let status = result
                        .ok()
                        .and_then(|v| v["status"].as_str().map(str::to_owned));
                    if !matches!(status.as_deref(), Some("certified" | "in_block")) {
                        still.push(id.clone());
                    }
                }
            }
            waiting = still;
            if waiting.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} funding transactions not final on node {node} after {within:?}",
                    waiting.len()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

/// The development wallet's largest spendable coin: from the address index, or from the genesis
/// block where the nodes keep none.
async fn largest_coin(
    devnet: &Devnet,
    dev_addr: &Address,
    network: Network,
) -> Result<(OutPoint, u64), String> {
    let mut client = devnet.client(0)?;
    let coins = match client
        .call(
            "getaddressutxos",
            json!([{"addresses": [dev_addr.encode(network)]}]),
        )
        .await
    {
        Ok(utxos) => utxos.as_array().cloned().unwrap_or_default(),
        Err(e) if e.contains("no address index") => {
            genesis_coins(&mut client, dev_addr, network).await?
        }
        Err(e) => return Err(e),
    };
    let source = coins
        .iter()
        .filter(|u| u["collateral"] != json!(true))
        .max_by_key(|u| u["units"].as_u64().unwrap_or(0))
        .ok_or(
            "the development wallet has no spendable coin (nodes without the address index \
             are searched for genesis coins only: use a fresh --dir)",
        )?;
    let outpoint = OutPoint {
        txid: Txid::from_str(source["txid"].as_str().unwrap_or_default())
            .map_err(|e| format!("bad txid for the wallet's coin: {e:?}"))?,
        index: source["vout"].as_u64().unwrap_or(0) as u32,
    };
    Ok((outpoint, source["units"].as_u64().unwrap_or(0)))
}

/// The development wallet's unspent coins from the genesis block, for nodes that keep no
/// address index: `gettxout` answers, each with the `txid` and `vout` that `getaddressutxos`
/// entries carry.
async fn genesis_coins(
    client: &mut Client,
    dev_addr: &Address,
    network: Network,
) -> Result<Vec<Value>, String> {
    let hash = client.call("getblockhash", json!([0])).await?;
    let genesis = client.call("getblock", json!([hash, 2])).await?;
    let address = json!(dev_addr.encode(network));
    let mut coins = Vec::new();
    for tx in genesis["tx"].as_array().into_iter().flatten() {
        for out in tx["vout"].as_array().into_iter().flatten() {
            if out["address"] != address {
                continue;
            }
            let mut coin = client
                .call("gettxout", json!([tx["txid"], out["n"]]))
                .await?;
            if !coin.is_null() {
                coin["txid"] = tx["txid"].clone();
                coin["vout"] = out["n"].clone();
                coins.push(coin);
            }
        }
    }
    Ok(coins)
}

/// The development wallet's coin that the next funding spends: its change from the last one.
#[derive(Clone, Copy, Debug)]
pub struct WalletCoin {
    /// The coin.
    pub outpoint: OutPoint,
    /// Its units.
    pub units: u64,
}

/// Gives every sender `per_key` coins of `coin_units` on each of its two keys, paid from
/// `wallet` (the change of the previous funding), or the first time from the development
/// wallet's largest spendable coin. Leaves this funding's change in `wallet`.
pub async fn fund(
    devnet: &Devnet,
    senders: &[Sender],
    per_key: usize,
    coin_units: u64,
    fee_rate: u64,
    network: Network,
    wallet: &mut Option<WalletCoin>,
) -> Result<Funding, String> {
    let started = Instant::now();
    let dev_key: SecretKey = devnet.dev_key()?;
    let dev_addr = Address::from_public_key(&dev_key.public_key());
    let (source_out, source_units) = match *wallet {
        Some(coin) => (coin.outpoint, coin.units),
        None => largest_coin(devnet, &dev_addr, network).await?,
    };

    // Output g pays sender (g / 2) % K, key g % 2, coin g / 2K: round-robin so each fan-out
    // transaction pays many senders.
    let keys = senders.len() * 2;
    let total = keys * per_key;
    let chunks = total.div_ceil(FANOUT_OUTPUTS);
    let address_of = |g: usize| {
        let s = &senders[(g % keys) / 2];
        if g.is_multiple_of(2) {
            s.addr_a
        } else {
            s.addr_b
        }
    };
    let dummy = OutPoint {
        txid: Txid::default(),
        index: 0,
    };
    let out = |amount: u64, address: Address| TxOut {
        amount: txgen::units(amount),
        address,
    };
    // The second stage has no change: its input carries exactly its outputs plus a fee margin.
    let stage2_fee = txgen::signed_size(
        &[(dummy, &dev_key)],
        vec![out(coin_units, dev_addr); FANOUT_OUTPUTS],
    ) as u64
        * fee_rate;
    let chunk_units: Vec<u64> = (0..chunks)
        .map(|c| {
            let n = FANOUT_OUTPUTS.min(total - c * FANOUT_OUTPUTS) as u64;
            n * coin_units + stage2_fee
        })
        .collect();
    let mut outputs: Vec<TxOut> = chunk_units.iter().map(|&u| out(u, dev_addr)).collect();
    outputs.push(out(1, dev_addr));
    let stage1_fee = txgen::signed_size(&[(dummy, &dev_key)], outputs.clone()) as u64 * fee_rate;
    let needed: u64 = chunk_units.iter().sum::<u64>() + stage1_fee;
    let change = source_units
        .checked_sub(needed)
        .filter(|c| *c > 0)
        .ok_or_else(|| {
            format!("the development wallet has {source_units} units, {needed} needed")
        })?;
    outputs.last_mut().expect("change").amount = txgen::units(change);
    let stage1 = txgen::transfer(&[(source_out, &dev_key)], outputs, network);
    let stage1_id = stage1.txid();
    submit_and_wait(devnet, std::slice::from_ref(&stage1)).await?;
    *wallet = Some(WalletCoin {
        outpoint: OutPoint {
            txid: stage1_id,
            index: chunks as u32,
        },
        units: change,
    });

    let stage2: Vec<Transaction> = (0..chunks)
        .map(|c| {
            let range = c * FANOUT_OUTPUTS..total.min((c + 1) * FANOUT_OUTPUTS);
            let outputs = range.map(|g| out(coin_units, address_of(g))).collect();
            let input = OutPoint {
                txid: stage1_id,
                index: c as u32,
            };
            txgen::transfer(&[(input, &dev_key)], outputs, network)
        })
        .collect();
    submit_and_wait(devnet, &stage2).await?;

    let mut coins: Vec<[Vec<OutPoint>; 2]> = senders
        .iter()
        .map(|_| [Vec::with_capacity(per_key), Vec::with_capacity(per_key)])
        .collect();
    for g in 0..total {
        let outpoint = OutPoint {
            txid: stage2[g / FANOUT_OUTPUTS].txid(),
            index: (g % FANOUT_OUTPUTS) as u32,
        };
        coins[(g % keys) / 2][g % 2].push(outpoint);
    }
    Ok(Funding {
        coins,
        coin_units,
        transactions: 1 + stage2.len(),
        elapsed: started.elapsed(),
    })
}
