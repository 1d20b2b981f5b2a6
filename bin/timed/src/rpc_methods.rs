//! The node's JSON-RPC methods: Bitcoin Core's names and shapes where one exists, TimeCoin's
//! own for finality, masternodes and the address index (see `docs/rpc.md`).

use std::sync::Arc;

use serde_json::{Map, Value, json};
use timecoin_node::{Command, Reply, SubmitOutcome, TxStatus};
use timecoin_primitives::hash::{BlockHash, Txid};
use timecoin_primitives::{
    Address, Amount, Block, BlockHeader, Height, Tier, Transaction, TxKind, decode, encode,
};
use timecoin_rpc::{Methods, Params, RpcError, codes};
use timecoin_storage::ChainStore;
use tokio::sync::oneshot;

use crate::daemon::{DaemonNode, Request, RpcContext};

/// Most outputs `getaddressutxos` returns per address.
const MAX_UTXOS_PER_ADDRESS: usize = 10_000;
/// Most addresses one `getaddressutxos`/`getaddressbalance` call may name.
const MAX_ADDRESSES_PER_CALL: usize = 1_000;

type Ctx = Arc<RpcContext>;

fn unavailable() -> RpcError {
    RpcError::new(codes::RPC_IN_WARMUP, "the node is shutting down")
}

async fn command(ctx: &Ctx, command: Command) -> Result<Reply, RpcError> {
    let (sender, receiver) = oneshot::channel();
    ctx.requests
        .send(Request::Command(command, sender))
        .await
        .map_err(|_| unavailable())?;
    match receiver.await.map_err(|_| unavailable())? {
        Reply::Error(message) => Err(RpcError::internal(message)),
        reply => Ok(reply),
    }
}

async fn read<T: Send + 'static>(
    ctx: &Ctx,
    f: impl FnOnce(&DaemonNode) -> Result<T, RpcError> + Send + 'static,
) -> Result<T, RpcError> {
    let (sender, receiver) = oneshot::channel();
    let job = Box::new(move |node: &DaemonNode| {
        let _ = sender.send(f(node));
    });
    ctx.requests
        .send(Request::Read(job))
        .await
        .map_err(|_| unavailable())?;
    receiver.await.map_err(|_| unavailable())?
}

fn storage_error(error: impl std::fmt::Display) -> RpcError {
    RpcError::internal(format!("storage: {error}"))
}

fn amount(value: Amount) -> Value {
    serde_json::from_str(&value.to_string()).expect("a decimal is a JSON number")
}

fn parse_hash<T: std::str::FromStr>(text: &str, what: &str) -> Result<T, RpcError> {
    text.parse().map_err(|_| {
        RpcError::invalid_parameter(format!(
            "{what} must be 64 hexadecimal digits, got '{text}'"
        ))
    })
}

fn parse_address(ctx: &Ctx, text: &str) -> Result<Address, RpcError> {
    Address::parse(text, ctx.chain)
        .map_err(|e| RpcError::new(codes::RPC_INVALID_ADDRESS_OR_KEY, e.to_string()))
}

fn transaction_json(ctx: &Ctx, tx: &Transaction) -> Value {
    let kind = match &tx.body.kind {
        TxKind::Transfer => json!({"type": "transfer"}),
        TxKind::Reward { height } => json!({"type": "reward", "height": height.get()}),
        TxKind::RegisterMasternode {
            collateral_output,
            node_key,
            tier,
            network_address,
        } => json!({
            "type": "register_masternode", "collateral_output": collateral_output,
            "node_key": node_key.to_string(), "tier": tier.name(), "network_address": network_address.as_str(),
        }),
        TxKind::DeregisterMasternode { collateral } => {
            json!({"type": "deregister_masternode", "collateral": collateral.to_string()})
        }
    };
    json!({
        "txid": tx.txid().to_string(),
        "size": tx.encoded_size(),
        "kind": kind,
        "vin": tx.body.inputs.iter().map(|i| json!({
            "txid": i.prevout.txid.to_string(), "vout": i.prevout.index, "pubkey": i.public_key.to_string(),
        })).collect::<Vec<_>>(),
        "vout": tx.body.outputs.iter().enumerate().map(|(n, o)| json!({
            "n": n, "value": amount(o.amount), "units": o.amount.units(), "address": o.address.encode(ctx.chain),
        })).collect::<Vec<_>>(),
    })
}

fn header_json(header: &BlockHeader, tip: Height) -> Value {
    json!({
        "hash": header.hash().to_string(),
        "confirmations": tip.get().saturating_sub(header.height.get()) + 1,
        "height": header.height.get(),
        "version": header.version,
        "previousblockhash": header.previous_hash.to_string(),
        "time": header.timestamp.as_millis() / 1000,
        "time_ms": header.timestamp.as_millis(),
        "epoch": header.epoch.get(),
        "proposer": header.proposer.to_string(),
        "merkleroot": header.transactions_root.to_string(),
        "utxocommitment": header.utxo_commitment.to_string(),
    })
}

fn block_json(ctx: &Ctx, block: &Block, tip: Height, verbosity: u64) -> Value {
    let mut value = header_json(&block.header, tip);
    value["size"] = json!(encode(block).len());
    value["nTx"] = json!(block.transactions.len());
    value["tx"] = if verbosity >= 2 {
        block
            .transactions
            .iter()
            .map(|tx| transaction_json(ctx, tx))
            .collect()
    } else {
        block
            .transactions
            .iter()
            .map(|tx| Value::String(tx.txid().to_string()))
            .collect()
    };
    value
}

fn status_json(txid: &Txid, status: &TxStatus, node: &DaemonNode) -> Value {
    let mut value = json!({"txid": txid.to_string()});
    match status {
        TxStatus::Unknown => value["status"] = json!("unknown"),
        TxStatus::AwaitingInputs | TxStatus::Pending => value["status"] = json!("pending"),
        TxStatus::Certified(certificate) => {
            value["status"] = json!("certified");
            value["certificate"] =
                json!({"epoch": certificate.epoch.get(), "votes": certificate.votes.len()});
        }
        TxStatus::Included { height, position } => {
            value["status"] = json!("in_block");
            value["height"] = json!(height.get());
            value["position"] = json!(position);
            if let Ok(Some(hash)) = node.store().block_hash(*height) {
                value["blockhash"] = json!(hash.to_string());
            }
        }
    }
    value
}

fn addresses_param(ctx: &Ctx, params: Params) -> Result<Vec<Address>, RpcError> {
    let args = params.bind(&["query"])?;
    let query: Value = args.required(0)?;
    // Accept {"addresses": [...]}, a bare array, or one address string.
    let list = match &query {
        Value::Object(map) => map.get("addresses").cloned().unwrap_or(Value::Null),
        other => other.clone(),
    };
    let texts: Vec<String> = match list {
        Value::String(one) => vec![one],
        Value::Array(items) => items
            .into_iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| RpcError::type_error("addresses must be strings"))
            })
            .collect::<Result<_, _>>()?,
        _ => {
            return Err(RpcError::invalid_parameter(
                "expected {\"addresses\": [...]}",
            ));
        }
    };
    if texts.len() > MAX_ADDRESSES_PER_CALL {
        return Err(RpcError::invalid_parameter(format!(
            "at most {MAX_ADDRESSES_PER_CALL} addresses per call"
        )));
    }
    texts.iter().map(|t| parse_address(ctx, t)).collect()
}

async fn address_utxos(ctx: &Ctx, addresses: Vec<Address>) -> Result<Vec<Value>, RpcError> {
    let mut out = Vec::new();
    for address in addresses {
        let Reply::Utxos(utxos) = command(
            ctx,
            Command::UtxosByAddress {
                address,
                limit: MAX_UTXOS_PER_ADDRESS,
            },
        )
        .await?
        else {
            return Err(RpcError::internal("unexpected reply"));
        };
        let chain = ctx.chain;
        let described = read(ctx, move |node| {
            Ok(utxos
                .into_iter()
                .map(|(outpoint, entry)| {
                    let certified = node.certified().contains(&outpoint.txid);
                    json!({
                        "address": entry.output.address.encode(chain),
                        "txid": outpoint.txid.to_string(),
                        "vout": outpoint.index,
                        "amount": amount(entry.output.amount),
                        "units": entry.output.amount.units(),
                        "height": if certified { Value::Null } else { json!(entry.height.get()) },
                        "collateral": entry.is_collateral,
                        "status": if certified { "certified" } else { "in_block" },
                    })
                })
                .collect::<Vec<_>>())
        })
        .await?;
        out.extend(described);
    }
    Ok(out)
}

/// The method table.
pub fn methods(ctx: Ctx) -> Methods {
    let mut m = Methods::new();
    macro_rules! method {
        ($name:literal, $summary:literal, |$c:ident, $p:ident| $body:expr) => {{
            let ctx = ctx.clone();
            m.register($name, $summary, move |$p: Params| {
                let $c = ctx.clone();
                async move {
                    let result: Result<Value, RpcError> = $body;
                    $c.metrics.record_rpc($name, result.is_ok());
                    result
                }
            });
        }};
    }

    method!(
        "getblockcount",
        "getblockcount: height of the committed tip",
        |c, p| {
            p.bind(&[])?;
            let Reply::Tip(tip) = command(&c, Command::Tip).await? else {
                return Err(RpcError::internal("unexpected reply"));
            };
            Ok(json!(tip.map(|t| t.height.get()).unwrap_or(0)))
        }
    );
    method!(
        "getbestblockhash",
        "getbestblockhash: hash of the committed tip",
        |c, p| {
            p.bind(&[])?;
            let Reply::Tip(tip) = command(&c, Command::Tip).await? else {
                return Err(RpcError::internal("unexpected reply"));
            };
            Ok(json!(tip.map(|t| t.hash.to_string())))
        }
    );
    method!(
        "getblockhash",
        "getblockhash height: hash of the block at a height",
        |c, p| {
            let height: u64 = p.bind(&["height"])?.required(0)?;
            read(&c, move |node| {
                node.store()
                    .block_hash(Height(height))
                    .map_err(storage_error)?
                    .map(|h| json!(h.to_string()))
                    .ok_or_else(|| RpcError::invalid_parameter("Block height out of range"))
            })
            .await
        }
    );
    method!(
        "getblock",
        "getblock hash ( verbosity ): a block as hex (0), JSON (1) or JSON with transactions (2)",
        |c, p| {
            let args = p.bind(&["blockhash", "verbosity"])?;
            let hash: BlockHash = parse_hash(&args.required::<String>(0)?, "blockhash")?;
            let verbosity: u64 = args.optional(1)?.unwrap_or(1);
            let ctx2 = c.clone();
            read(&c, move |node| {
                let block = node
                    .store()
                    .block(&hash)
                    .map_err(storage_error)?
                    .ok_or_else(|| {
                        RpcError::new(codes::RPC_INVALID_ADDRESS_OR_KEY, "Block not found")
                    })?;
                if verbosity == 0 {
                    return Ok(json!(hex::encode(encode(&block))));
                }
                let mut value = block_json(&ctx2, &block, node.tip_height(), verbosity);
                if let Ok(Some(certificate)) = node.store().certificate(block.header.height) {
                    value["certificate"] =
                        json!({"view": certificate.view, "votes": certificate.votes.len()});
                }
                if let Ok(Some(next)) = node
                    .store()
                    .block_hash(Height(block.header.height.get() + 1))
                {
                    value["nextblockhash"] = json!(next.to_string());
                }
                Ok(value)
            })
            .await
        }
    );
    method!(
        "getblockheader",
        "getblockheader hash ( verbose ): a block header",
        |c, p| {
            let args = p.bind(&["blockhash", "verbose"])?;
            let hash: BlockHash = parse_hash(&args.required::<String>(0)?, "blockhash")?;
            let verbose: bool = args.optional(1)?.unwrap_or(true);
            read(&c, move |node| {
                let header = node
                    .store()
                    .header(&hash)
                    .map_err(storage_error)?
                    .ok_or_else(|| {
                        RpcError::new(codes::RPC_INVALID_ADDRESS_OR_KEY, "Block not found")
                    })?;
                Ok(if verbose {
                    header_json(&header, node.tip_height())
                } else {
                    json!(hex::encode(encode(&header)))
                })
            })
            .await
        }
    );
    method!(
        "getblockchaininfo",
        "getblockchaininfo: chain state",
        |c, p| {
            p.bind(&[])?;
            let chain = c.chain;
            read(&c, move |node| {
                let tip = node.store().tip();
                Ok(json!({
                    "chain": chain.name(),
                    "blocks": tip.map(|t| t.height.get()).unwrap_or(0),
                    "headers": tip.map(|t| t.height.get()).unwrap_or(0),
                    "bestblockhash": tip.map(|t| t.hash.to_string()),
                    "utxocommitment": node.store().utxo_commitment().digest().to_string(),
                    "epoch": node.params().epoch_of(node.tip_height()).get(),
                    "initialblockdownload": node.bft().height().get() < node.tip_height().get() + 1,
                    "pruned": false,
                }))
            })
            .await
        }
    );
    method!(
        "getrawtransaction",
        "getrawtransaction txid ( verbose ): a transaction from a block or the certified pool",
        |c, p| {
            let args = p.bind(&["txid", "verbose"])?;
            let txid: Txid = parse_hash(&args.required::<String>(0)?, "txid")?;
            let verbose: bool = args.optional(1)?.unwrap_or(false);
            let ctx2 = c.clone();
            read(&c, move |node| {
                let mut found = None;
                if let Some(location) = node
                    .store()
                    .transaction_location(&txid)
                    .map_err(storage_error)?
                    && let Some(hash) = node
                        .store()
                        .block_hash(location.height)
                        .map_err(storage_error)?
                    && let Some(block) = node.store().block(&hash).map_err(storage_error)?
                {
                    found = block
                        .transactions
                        .get(location.position as usize)
                        .cloned()
                        .map(|tx| (tx, Some((hash, location.height))));
                }
                if found.is_none() {
                    found = node
                        .certified()
                        .get(&txid)
                        .map(|entry| (entry.transaction.clone(), None));
                }
                let (tx, place) = found.ok_or_else(|| {
                    RpcError::new(
                        codes::RPC_INVALID_ADDRESS_OR_KEY,
                        "No such transaction in a block or the certified pool",
                    )
                })?;
                if !verbose {
                    return Ok(json!(hex::encode(encode(&tx))));
                }
                let mut value = transaction_json(&ctx2, &tx);
                value["hex"] = json!(hex::encode(encode(&tx)));
                if let Some((hash, height)) = place {
                    value["blockhash"] = json!(hash.to_string());
                    value["confirmations"] = json!(node.tip_height().get() - height.get() + 1);
                }
                Ok(value)
            })
            .await
        }
    );
    method!(
        "decoderawtransaction",
        "decoderawtransaction hex: decode without sending",
        |c, p| {
            let text: String = p.bind(&["hexstring"])?.required(0)?;
            let bytes = hex::decode(text.trim()).map_err(|_| {
                RpcError::new(
                    codes::RPC_DESERIALIZATION_ERROR,
                    "TX decode failed: not hex",
                )
            })?;
            let tx: Transaction = decode(&bytes).map_err(|e| {
                RpcError::new(
                    codes::RPC_DESERIALIZATION_ERROR,
                    format!("TX decode failed: {e}"),
                )
            })?;
            Ok(transaction_json(&c, &tx))
        }
    );
    method!(
        "sendrawtransaction",
        "sendrawtransaction hex: validate, relay and vote; returns the txid",
        |c, p| {
            let text: String = p.bind(&["hexstring"])?.required(0)?;
            let bytes = hex::decode(text.trim()).map_err(|_| {
                RpcError::new(
                    codes::RPC_DESERIALIZATION_ERROR,
                    "TX decode failed: not hex",
                )
            })?;
            let tx: Transaction = decode(&bytes).map_err(|e| {
                RpcError::new(
                    codes::RPC_DESERIALIZATION_ERROR,
                    format!("TX decode failed: {e}"),
                )
            })?;
            let Reply::Submitted(outcome) = command(&c, Command::SubmitTransaction(tx)).await?
            else {
                return Err(RpcError::internal("unexpected reply"));
            };
            match outcome {
                SubmitOutcome::Accepted(txid)
                | SubmitOutcome::AlreadyKnown(txid)
                | SubmitOutcome::AwaitingInputs(txid) => Ok(json!(txid.to_string())),
                SubmitOutcome::Rejected(reason) => {
                    Err(RpcError::new(codes::RPC_VERIFY_REJECTED, reason))
                }
            }
        }
    );
    method!(
        "gettxfinality",
        "gettxfinality txid: unknown, pending, certified (with certificate) or in_block",
        |c, p| {
            let txid: Txid = parse_hash(&p.bind(&["txid"])?.required::<String>(0)?, "txid")?;
            let Reply::TransactionStatus(status) =
                command(&c, Command::TransactionStatus(txid)).await?
            else {
                return Err(RpcError::internal("unexpected reply"));
            };
            read(&c, move |node| Ok(status_json(&txid, &status, node))).await
        }
    );
    method!(
        "getaddressutxos",
        "getaddressutxos {\"addresses\": [...]}: unspent outputs from the address index",
        |c, p| {
            let addresses = addresses_param(&c, p)?;
            Ok(Value::Array(address_utxos(&c, addresses).await?))
        }
    );
    method!(
        "getaddressbalance",
        "getaddressbalance {\"addresses\": [...]}: balance from the address index",
        |c, p| {
            let addresses = addresses_param(&c, p)?;
            let utxos = address_utxos(&c, addresses).await?;
            let units: u64 = utxos.iter().filter_map(|u| u["units"].as_u64()).sum();
            let locked: u64 = utxos
                .iter()
                .filter(|u| u["collateral"] == json!(true))
                .filter_map(|u| u["units"].as_u64())
                .sum();
            let total = Amount::from_units(units).map_err(|e| RpcError::internal(e.to_string()))?;
            Ok(
                json!({"balance": amount(total), "units": units, "locked_units": locked, "utxos": utxos.len()}),
            )
        }
    );
    method!(
        "getmempoolinfo",
        "getmempoolinfo: transaction pool state",
        |c, p| {
            p.bind(&[])?;
            let Reply::Mempool(info) = command(&c, Command::MempoolInfo).await? else {
                return Err(RpcError::internal("unexpected reply"));
            };
            let rate = c.params.min_fee_rate_units_per_byte;
            // Bitcoin Core states fee rates in coin per kilo-virtual-byte.
            let per_kb = Amount::from_units(rate.saturating_mul(1000)).unwrap_or(Amount::MAX);
            Ok(json!({
                "loaded": true,
                "size": info.pending_transactions,
                "bytes": info.pending_bytes,
                "certified": info.certified_transactions,
                "awaiting_inputs": info.awaiting_inputs,
                "mempoolminfee": amount(per_kb),
                "minrelaytxfee": amount(per_kb),
                "min_fee_rate_units_per_byte": rate,
            }))
        }
    );
    method!(
        "getconsensusinfo",
        "getconsensusinfo: height, view, epoch, committee and tiers",
        |c, p| {
            p.bind(&[])?;
            let Reply::Consensus(info) = command(&c, Command::ConsensusInfo).await? else {
                return Err(RpcError::internal("unexpected reply"));
            };
            let mut tiers = Map::new();
            for tier in Tier::ALL {
                let t = c.params.tier(tier);
                tiers.insert(tier.name().into(), json!({"collateral": amount(t.collateral), "units": t.collateral.units(), "weight": t.weight}));
            }
            Ok(json!({
                "network": c.chain.name(),
                "height": info.height.get(),
                "view": info.view,
                "epoch": info.epoch.get(),
                "leader": info.leader.to_string(),
                "committee_size": info.committee_members,
                "total_weight": info.total_weight,
                "quorum_weight": info.quorum_weight,
                "node_key": info.node_key.map(|(k, _)| k.to_string()),
                "in_committee": info.node_key.map(|(_, member)| member).unwrap_or(false),
                "locked_inputs": info.locked_inputs,
                "tiers": tiers,
            }))
        }
    );
    method!(
        "listmasternodes",
        "listmasternodes: registered masternodes",
        |c, p| {
            p.bind(&[])?;
            let chain = c.chain;
            read(&c, move |node| {
            Ok(Value::Array(
                node.store()
                    .masternodes()
                    .iter()
                    .map(|r| json!({
                        "collateral": r.collateral.to_string(), "owner": r.owner.encode(chain),
                        "node_key": r.node_key.to_string(), "tier": r.tier.name(),
                        "network_address": r.network_address.as_str(), "registered_at": r.registered_at.get(),
                    }))
                    .collect(),
            ))
        })
        .await
        }
    );
    method!(
        "getconnectioncount",
        "getconnectioncount: connected peers",
        |c, p| {
            p.bind(&[])?;
            let stats = c.network.stats();
            Ok(json!(stats.inbound_peers + stats.outbound_peers))
        }
    );
    method!("getpeerinfo", "getpeerinfo: connected peers", |c, p| {
        p.bind(&[])?;
        let peers = c
            .network
            .peers()
            .await
            .map_err(|e| RpcError::internal(e.to_string()))?;
        Ok(Value::Array(peers.iter().enumerate().map(|(id, peer)| json!({
            "id": id, "peer_id": peer.peer.to_string(), "inbound": peer.inbound, "score": peer.score,
            "addr": peer.addresses.first().map(|a| a.to_string()),
        })).collect()))
    });
    method!("getnetworkinfo", "getnetworkinfo: network state", |c, p| {
        p.bind(&[])?;
        let stats = c.network.stats();
        let listening = c.network.listen_addresses().await.unwrap_or_default();
        Ok(json!({
            "version": env!("CARGO_PKG_VERSION"), "subversion": format!("/timed:{}/", env!("CARGO_PKG_VERSION")),
            "network": c.chain.name(), "peer_id": c.network.local_peer_id().to_string(),
            "connections": stats.inbound_peers + stats.outbound_peers,
            "connections_in": stats.inbound_peers, "connections_out": stats.outbound_peers,
            "banned": stats.banned_peers, "bytes_in": stats.bytes_in, "bytes_out": stats.bytes_out,
            "localaddresses": listening.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        }))
    });
    method!(
        "validateaddress",
        "validateaddress address: whether it is a valid address of this network",
        |c, p| {
            let text: String = p.bind(&["address"])?.required(0)?;
            Ok(match Address::parse(&text, c.chain) {
                Ok(_) => json!({"isvalid": true, "address": text}),
                Err(e) => json!({"isvalid": false, "error": e.to_string()}),
            })
        }
    );
    method!(
        "uptime",
        "uptime: seconds since the node started",
        |c, p| {
            p.bind(&[])?;
            Ok(json!(c.started.elapsed().as_secs()))
        }
    );
    method!("stop", "stop: shut the node down cleanly", |c, p| {
        p.bind(&[])?;
        let _ = c.shutdown.send(true);
        Ok(json!("TimeCoin server stopping"))
    });
    m
}
