//! The node's JSON-RPC methods: Bitcoin Core's names and shapes where one exists, TimeCoin's
//! own for finality, masternodes and the address index (see `docs/rpc.md`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};
use timecoin_ledger::{
    LedgerError, UtxoView, check_transaction, validate_transaction, verify_transaction,
};
use timecoin_node::io::{PoolFinality, PoolStats, PoolTransaction, SyncStatus};
use timecoin_node::{CertifiedView, Command, Reply, SubmitOutcome, TxStatus};
use timecoin_primitives::hash::{BlockHash, Txid};
use timecoin_primitives::merkle::MerkleProof;
use timecoin_primitives::{
    Address, Amount, Block, BlockHeader, BoundedVec, Height, OutPoint, Tier, Transaction, TxKind,
    decode, encode, encoded_len,
};
use timecoin_rpc::{FromParam, Methods, Params, RpcError, codes};
use timecoin_storage::ChainStore;
use tokio::sync::oneshot;

use crate::daemon::{DaemonNode, Request, RpcContext};
use crate::feed::{MAX_FEED_REPLY, MAX_FEED_WAIT};
use crate::metrics::{self, SyncReport};

/// Most outputs `getaddressutxos` returns per address.
const MAX_UTXOS_PER_ADDRESS: usize = 10_000;
/// Most addresses one `getaddressutxos`/`getaddressbalance` call may name.
const MAX_ADDRESSES_PER_CALL: usize = 1_000;
/// Most transactions one `testmempoolaccept` call may test (Bitcoin Core's package limit).
const MAX_TEST_ACCEPT: usize = 25;
/// Most txids one `gettxoutproof` proof may cover.
pub const MAX_PROOF_TXIDS: usize = 1_000;

/// What `gettxoutproof` returns and `verifytxoutproof` reads, hex-encoded with the canonical
/// (borsh) encoding: the block header, then for each proven transaction its txid and its Merkle
/// branch up to the header's `transactions_root`. Bitcoin's partial-Merkle-tree format cannot be
/// used: TimeCoin's tree hashes leaves and nodes in separate domains and promotes a lone node
/// instead of duplicating it. The header lets a light client check the proof against a header
/// chain it already trusts, exactly as Bitcoin's proof does.
pub type TxOutProof = (
    BlockHeader,
    BoundedVec<(Txid, MerkleProof), MAX_PROOF_TXIDS>,
);

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

/// The answer to a client whose transaction the node is too busy to take (ADR 0026).
fn busy_error(pending: usize, limit: usize) -> RpcError {
    RpcError::new(
        codes::RPC_NODE_BUSY,
        format!(
            "node busy: {pending} transactions are waiting for finality (limit {limit}); send \
             again shortly"
        ),
    )
}

/// A transaction from a committed block, found through the transaction index, with the block's
/// hash and height.
fn committed_transaction(
    node: &DaemonNode,
    txid: &Txid,
) -> Result<Option<(Transaction, BlockHash, Height)>, RpcError> {
    let store = node.store();
    let Some(location) = store.transaction_location(txid).map_err(storage_error)? else {
        return Ok(None);
    };
    let Some(hash) = store.block_hash(location.height).map_err(storage_error)? else {
        return Ok(None);
    };
    let Some(block) = store.block(&hash).map_err(storage_error)? else {
        return Ok(None);
    };
    Ok(block
        .transactions
        .get(location.position as usize)
        .cloned()
        .map(|tx| (tx, hash, location.height)))
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
    let mut value = json!({
        "hash": header.hash().to_string(),
        "confirmations": tip.get().saturating_sub(header.height.get()) + 1,
        "height": header.height.get(),
        "version": header.version,
        "time": header.timestamp.as_millis() / 1000,
        "time_ms": header.timestamp.as_millis(),
        "epoch": header.epoch.get(),
        "proposer": header.proposer.to_string(),
        "merkleroot": header.transactions_root.to_string(),
        "utxocommitment": header.utxo_commitment.to_string(),
    });
    // Bitcoin Core leaves the field out for the genesis block, which has no parent.
    if header.height.get() > 0 {
        value["previousblockhash"] = json!(header.previous_hash.to_string());
    }
    value
}

fn block_json(ctx: &Ctx, block: &Block, tip: Height, verbosity: u64) -> Value {
    let mut value = header_json(&block.header, tip);
    value["size"] = json!(encoded_len(block));
    value["nTx"] = json!(block.transactions.len());
    value["tx"] = if verbosity >= 2 {
        block
            .transactions
            .iter()
            .map(|tx| {
                let mut value = transaction_json(ctx, tx);
                value["hex"] = json!(hex::encode(encode(tx)));
                value
            })
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
            // The signed weight is only known against the certificate's own committee. The
            // node verified the certificate when it took it; verifying its signatures again
            // on every poll cost the node task ~80 µs per certified payment.
            let committee = node.finality().committee();
            if certificate.epoch == committee.epoch() {
                let weight: u64 = certificate
                    .votes
                    .iter()
                    .map(|vote| committee.weight_of(&vote.voter).get())
                    .sum();
                value["certificate"]["weight"] = json!(weight);
                value["certificate"]["quorum_weight"] = json!(committee.quorum_weight().get());
            }
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
    if !ctx.address_index {
        return Err(RpcError::misc(
            "this node keeps no address index (storage.address_index = false); ask a node that \
             keeps one, or enable it in the configuration of a new data directory",
        ));
    }
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

fn decode_transaction(text: &str) -> Result<Transaction, RpcError> {
    let bytes = hex::decode(text.trim()).map_err(|_| {
        RpcError::new(
            codes::RPC_DESERIALIZATION_ERROR,
            "TX decode failed: not hex",
        )
    })?;
    decode(&bytes).map_err(|e| {
        RpcError::new(
            codes::RPC_DESERIALIZATION_ERROR,
            format!("TX decode failed: {e}"),
        )
    })
}

/// `getblock`'s verbosity as Bitcoin Core reads it: a number, or a bool (true = 1).
fn verbosity(value: Option<&Value>) -> Result<u64, RpcError> {
    match value {
        None => Ok(1),
        Some(Value::Bool(verbose)) => Ok(u64::from(*verbose)),
        Some(other) => u64::from_param(other, "verbosity"),
    }
}

/// `testmempoolaccept`'s verdict on one transaction, computed as `sendrawtransaction` would
/// admit it, without changing anything: known already, stateless rules, signatures, conflicts
/// with certified transactions and with inputs this node has locked (voted to spend), then the
/// UTXO rules against the committed set seen through the certified pool.
///
/// What it cannot see: a conflict with a pending transaction this node has pooled but not voted
/// on (a node that is not a masternode votes on nothing), and a full pool's eviction threshold;
/// the node does not expose its mempool's contents.
fn test_accept(node: &DaemonNode, tx: &Transaction) -> Result<Value, RpcError> {
    let txid = tx.txid();
    let size = tx.encoded_size();
    let mut verdict = json!({"txid": txid.to_string(), "wtxid": txid.to_string()});
    let reject = |mut verdict: Value, reason: String| {
        verdict["allowed"] = json!(false);
        verdict["reject-reason"] = json!(reason);
        Ok(verdict)
    };
    match node.status(&txid).map_err(storage_error)? {
        TxStatus::Unknown => {}
        TxStatus::Included { .. } => return reject(verdict, "txn-already-known".into()),
        _ => return reject(verdict, "txn-already-in-mempool".into()),
    }
    if tx.is_reward() {
        return reject(verdict, "reward transactions are not relayed".into());
    }
    let params = node.params();
    if let Err(error) =
        check_transaction(tx, params).and_then(|_| verify_transaction(tx, 0, params.network))
    {
        return reject(verdict, error.to_string());
    }
    for input in &tx.body.inputs {
        if let Some(other) = node.certified().spender_of(&input.prevout) {
            return reject(
                verdict,
                format!("conflicts with certified transaction {other}"),
            );
        }
        if let Some(other) = node.finality().lock_holder(&input.prevout)
            && other != txid
        {
            return reject(
                verdict,
                format!(
                    "input {}:{} is locked by transaction {other}",
                    input.prevout.txid, input.prevout.index
                ),
            );
        }
    }
    let view = CertifiedView {
        base: node.store(),
        pool: node.certified(),
    };
    let next = Height(node.tip_height().get() + 1);
    match validate_transaction(tx, &view, node.store(), params, next) {
        Ok(validated) => {
            verdict["allowed"] = json!(true);
            verdict["vsize"] = json!(size);
            verdict["fees"] =
                json!({"base": amount(validated.fee), "units": validated.fee.units()});
            Ok(verdict)
        }
        Err(LedgerError::MissingInput { .. }) => reject(verdict, "missing-inputs".into()),
        Err(LedgerError::Backend(error)) => Err(storage_error(error)),
        Err(error) => reject(verdict, error.to_string()),
    }
}

/// A fee rate in base units per byte as Bitcoin Core states rates: coin per 1,000 bytes.
fn per_kilobyte(units_per_kilobyte: u64) -> Value {
    amount(Amount::from_units(units_per_kilobyte).unwrap_or(Amount::MAX))
}

/// `getmempoolinfo`'s reply. `size`, `bytes`, `usage` and `total_fee` describe the transactions
/// collecting votes; certified ones waiting for a block are counted apart (`certified`).
fn mempool_info_json(stats: &PoolStats, min_fee_rate_units_per_byte: u64) -> Value {
    let info = &stats.summary;
    let relay_per_kb = min_fee_rate_units_per_byte.saturating_mul(1000);
    // A full pool admits only rates above its eviction threshold: the least whole rate per kB
    // that exceeds it is the threshold rounded down, plus one.
    let pool_per_kb = stats
        .entry_fee_rate
        .map_or(0, |rate| rate.units_per_kilobyte().saturating_add(1));
    json!({
        "loaded": true,
        "size": info.pending_transactions,
        "bytes": info.pending_bytes,
        "usage": stats.pending_usage_bytes,
        "total_fee": amount(stats.pending_fees),
        "total_fee_units": stats.pending_fees.units(),
        "maxmempool": stats.max_bytes,
        "max_transactions": stats.max_transactions,
        "mempoolminfee": per_kilobyte(relay_per_kb.max(pool_per_kb)),
        "minrelaytxfee": per_kilobyte(relay_per_kb),
        "certified": info.certified_transactions,
        "awaiting_inputs": info.awaiting_inputs,
        "admission_limit": info.admission_limit,
        "finalized_per_s": info.finalized_per_s,
        "refused_busy": info.refused_busy,
        "min_fee_rate_units_per_byte": min_fee_rate_units_per_byte,
    })
}

/// `getrawmempool true`: txid -> Bitcoin Core's entry fields that apply here, plus `finality`.
fn raw_mempool_verbose(entries: &[PoolTransaction]) -> Value {
    let mut spent_by: BTreeMap<Txid, Vec<Txid>> = BTreeMap::new();
    for entry in entries {
        for parent in &entry.depends {
            spent_by.entry(*parent).or_default().push(entry.txid);
        }
    }
    let mut out = Map::new();
    for entry in entries {
        let fee = amount(entry.fee);
        let children = spent_by.get(&entry.txid).map(Vec::as_slice).unwrap_or(&[]);
        out.insert(
            entry.txid.to_string(),
            json!({
                "vsize": entry.size_bytes,
                "size": entry.size_bytes,
                "fee": fee,
                "fees": {"base": fee, "modified": fee, "units": entry.fee.units()},
                "time": entry.first_seen_ms.map(|ms| ms / 1000),
                "wtxid": entry.txid.to_string(),
                "depends": entry.depends.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
                "spentby": children.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
                "finality": match entry.finality {
                    PoolFinality::Pending => "pending",
                    PoolFinality::Certified => "certified",
                },
            }),
        );
    }
    Value::Object(out)
}

/// `getblockchaininfo`'s `sync` object: the node's fresh heights with the rates of the last
/// metrics refresh (at most a second old).
fn sync_json(status: &SyncStatus, rates: &SyncReport) -> Value {
    let (height, target) = (status.height.get(), status.target_height.get());
    let eta = if metrics::is_behind(height, target) {
        metrics::eta_seconds(height, target, rates.closing_blocks_per_second)
    } else {
        Some(0.0)
    };
    json!({
        "target_height": target,
        "blocks_per_second": (rates.blocks_per_second * 1000.0).round() / 1000.0,
        "eta_seconds": eta.map(|s| s.ceil() as u64),
        "peers_known": status.peers_known,
        "in_flight_from": status.in_flight.map(|h| h.get()),
    })
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
            let verbosity = verbosity(args.get(1))?;
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
        "getblockchaininfo: chain state, with sync progress",
        |c, p| {
            p.bind(&[])?;
            let chain = c.chain;
            let rates = c.metrics.sync();
            read(&c, move |node| {
                let tip = node.store().tip();
                let status = node.sync_status();
                Ok(json!({
                    "chain": chain.name(),
                    "blocks": status.height.get(),
                    "headers": status.target_height.get(),
                    "bestblockhash": tip.map(|t| t.hash.to_string()),
                    "utxocommitment": node.store().utxo_commitment().digest().to_string(),
                    "epoch": node.params().epoch_of(node.tip_height()).get(),
                    "initialblockdownload": metrics::is_behind(status.height.get(), status.target_height.get()),
                    "verificationprogress": metrics::verification_progress(status.height.get(), status.target_height.get()),
                    "pruned": false,
                    "sync": sync_json(&status, &rates),
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
                let mut found = committed_transaction(node, &txid)?
                    .map(|(tx, hash, height)| (tx, Some((hash, height))));
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
            let tx = decode_transaction(&text)?;
            Ok(transaction_json(&c, &tx))
        }
    );
    method!(
        "sendrawtransaction",
        "sendrawtransaction hex: validate, relay and vote; returns the txid",
        |c, p| {
            let text: String = p.bind(&["hexstring"])?.required(0)?;
            let tx = decode_transaction(&text)?;
            if let Some((pending, limit)) = c.busy.refuse() {
                return Err(busy_error(pending, limit));
            }
            let Reply::Submitted(outcome) = command(&c, Command::SubmitTransaction(tx)).await?
            else {
                return Err(RpcError::internal("unexpected reply"));
            };
            match outcome {
                SubmitOutcome::AlreadyKnown(txid) => {
                    // Core answers a resubmission of a pooled transaction with its txid, and one
                    // already in a block with RPC_VERIFY_ALREADY_IN_CHAIN.
                    let in_block = read(&c, move |node| {
                        Ok(matches!(
                            node.status(&txid).map_err(storage_error)?,
                            TxStatus::Included { .. }
                        ))
                    })
                    .await?;
                    if in_block {
                        Err(RpcError::new(
                            codes::RPC_VERIFY_ALREADY_IN_CHAIN,
                            "Transaction already in block chain",
                        ))
                    } else {
                        Ok(json!(txid.to_string()))
                    }
                }
                SubmitOutcome::Accepted(txid) | SubmitOutcome::AwaitingInputs(txid) => {
                    Ok(json!(txid.to_string()))
                }
                SubmitOutcome::Rejected(reason) => {
                    Err(RpcError::new(codes::RPC_VERIFY_REJECTED, reason))
                }
                SubmitOutcome::Busy { pending, limit } => Err(busy_error(pending, limit)),
            }
        }
    );
    method!(
        "gettxfinality",
        "gettxfinality txid: unknown, pending, certified (with certificate) or in_block",
        |c, p| {
            let txid: Txid = parse_hash(&p.bind(&["txid"])?.required::<String>(0)?, "txid")?;
            // A read, not a command: payment processors poll this for every payment in
            // flight, and a command is an input of the node's next step.
            read(&c, move |node| {
                let status = node.status(&txid).map_err(storage_error)?;
                Ok(status_json(&txid, &status, node))
            })
            .await
        }
    );
    method!(
        "waitforfinalized",
        "waitforfinalized since ( timeout_ms ): transactions final at this node after sequence `since`, waiting up to timeout_ms (at most 60000) for one",
        |c, p| {
            let args = p.bind(&["since", "timeout_ms"])?;
            let since: u64 = args.required(0)?;
            let timeout_ms: u64 = args.optional(1)?.unwrap_or(0);
            let most = MAX_FEED_WAIT.as_millis() as u64;
            if timeout_ms > most {
                return Err(RpcError::invalid_parameter(format!(
                    "timeout_ms must be at most {most}, got {timeout_ms}"
                )));
            }
            let page = c
                .feed
                .wait(
                    since,
                    MAX_FEED_REPLY,
                    Duration::from_millis(timeout_ms),
                    c.shutdown.subscribe(),
                )
                .await;
            let transactions: Vec<Value> = page
                .events
                .iter()
                .map(|event| {
                    json!({
                        "sequence": event.sequence,
                        "txid": event.txid.to_string(),
                        "status": event.status.name(),
                    })
                })
                .collect();
            Ok(json!({
                "feed": format!("{:016x}", c.feed.id()),
                "last": page.last,
                "missed": page.missed,
                "transactions": transactions,
            }))
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
            let rate = c.params.min_fee_rate_units_per_byte;
            let busy = c.busy.clone();
            read(&c, move |node| {
                let mut stats = node.pool_stats();
                // The RPC server's own refusals, which never reached the node.
                stats.summary.refused_busy += busy.refused();
                Ok(mempool_info_json(&stats, rate))
            })
            .await
        }
    );
    method!(
        "getrawmempool",
        "getrawmempool ( verbose ): txids of the transactions not yet in a block (pending and certified), or with verbose=true an object of their details",
        |c, p| {
            let args = p.bind(&["verbose", "mempool_sequence"])?;
            let verbose: bool = args.optional(0)?.unwrap_or(false);
            if args.optional::<bool>(1)?.unwrap_or(false) {
                // Core's error for the combination; the sequence form itself is not offered.
                return Err(RpcError::invalid_parameter(if verbose {
                    "Verbose results cannot contain mempool sequence values."
                } else {
                    "mempool_sequence is not supported by this node"
                }));
            }
            read(&c, move |node| {
                Ok(if verbose {
                    raw_mempool_verbose(&node.pool_transactions())
                } else {
                    Value::Array(
                        node.pool_txids()
                            .iter()
                            .map(|txid| json!(txid.to_string()))
                            .collect(),
                    )
                })
            })
            .await
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
    method!(
        "testmempoolaccept",
        "testmempoolaccept [\"hex\",...] ( maxfeerate ): would sendrawtransaction accept these? (each alone; nothing is sent)",
        |c, p| {
            let args = p.bind(&["rawtxs", "maxfeerate"])?;
            let raw: Vec<Value> = args.required(0)?;
            if raw.is_empty() || raw.len() > MAX_TEST_ACCEPT {
                return Err(RpcError::invalid_parameter(format!(
                    "Array must contain between 1 and {MAX_TEST_ACCEPT} transactions."
                )));
            }
            // TIME per kB, as Core's BTC/kvB; 0 (Core's "no limit") when omitted.
            let max_fee_rate: Option<Value> = args.optional(1)?;
            let max_units_per_kb = match max_fee_rate {
                None => None,
                Some(Value::Number(n)) => {
                    let units = n.to_string().parse::<Amount>().map_err(|e| {
                        RpcError::invalid_parameter(format!("Invalid maxfeerate: {e}"))
                    })?;
                    (!units.is_zero()).then_some(units.units())
                }
                Some(other) => {
                    return Err(RpcError::type_error(format!(
                        "JSON value of type {} is not of expected type number",
                        timecoin_rpc::params::json_type_name(&other)
                    )));
                }
            };
            let transactions = raw
                .iter()
                .map(|value| {
                    value
                        .as_str()
                        .ok_or_else(|| RpcError::type_error("rawtxs must be hex strings"))
                        .and_then(decode_transaction)
                })
                .collect::<Result<Vec<_>, _>>()?;
            read(&c, move |node| {
                transactions
                    .iter()
                    .map(|tx| {
                        let mut verdict = test_accept(node, tx)?;
                        if let (Some(max), Some(fee)) =
                            (max_units_per_kb, verdict["fees"]["units"].as_u64())
                        {
                            let size = verdict["vsize"].as_u64().unwrap_or(1).max(1);
                            if u128::from(fee) * 1000 > u128::from(max) * u128::from(size) {
                                verdict = json!({
                                    "txid": verdict["txid"], "wtxid": verdict["wtxid"],
                                    "allowed": false, "reject-reason": "max-fee-exceeded",
                                });
                            }
                        }
                        Ok(verdict)
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map(Value::Array)
            })
            .await
        }
    );
    method!(
        "gettxout",
        "gettxout txid n ( include_mempool ): an unspent output, or null (include_mempool counts certified transactions not yet in a block)",
        |c, p| {
            let args = p.bind(&["txid", "n", "include_mempool"])?;
            let txid: Txid = parse_hash(&args.required::<String>(0)?, "txid")?;
            let index: u32 = args.required(1)?;
            let include_pool: bool = args.optional(2)?.unwrap_or(true);
            let chain = c.chain;
            read(&c, move |node| {
                let outpoint = OutPoint { txid, index };
                let entry = if include_pool {
                    let view = CertifiedView {
                        base: node.store(),
                        pool: node.certified(),
                    };
                    view.utxo(&outpoint).map_err(storage_error)?
                } else {
                    UtxoView::utxo(node.store(), &outpoint).map_err(storage_error)?
                };
                let Some(entry) = entry else {
                    return Ok(Value::Null);
                };
                let tip = node.store().tip();
                let unblocked = include_pool && node.certified().contains(&txid);
                let confirmations = if unblocked {
                    0
                } else {
                    node.tip_height().get().saturating_sub(entry.height.get()) + 1
                };
                // A reward output is Core's "coinbase"; only a block holds one.
                let mut coinbase = false;
                if !unblocked && let Some((tx, _, _)) = committed_transaction(node, &txid)? {
                    coinbase = tx.is_reward();
                }
                let address = entry.output.address.encode(chain);
                Ok(json!({
                    "bestblock": tip.map(|t| t.hash.to_string()),
                    "confirmations": confirmations,
                    "value": amount(entry.output.amount),
                    "units": entry.output.amount.units(),
                    "scriptPubKey": {"address": address, "type": "timecoin"},
                    "address": address,
                    "coinbase": coinbase,
                    "collateral": entry.is_collateral,
                    "status": if unblocked { "certified" } else { "in_block" },
                }))
            })
            .await
        }
    );
    method!(
        "gettxoutproof",
        "gettxoutproof [\"txid\",...] ( blockhash ): hex proof that the transactions are in a block",
        |c, p| {
            let args = p.bind(&["txids", "blockhash"])?;
            let list: Vec<Value> = args.required(0)?;
            if list.is_empty() {
                return Err(RpcError::invalid_parameter(
                    "Parameter 'txids' cannot be empty",
                ));
            }
            if list.len() > MAX_PROOF_TXIDS {
                return Err(RpcError::invalid_parameter(format!(
                    "at most {MAX_PROOF_TXIDS} txids per proof"
                )));
            }
            let mut txids: Vec<Txid> = Vec::with_capacity(list.len());
            for value in &list {
                let text = value
                    .as_str()
                    .ok_or_else(|| RpcError::type_error("txids must be strings"))?;
                let txid: Txid = parse_hash(text, "txid")?;
                if txids.contains(&txid) {
                    return Err(RpcError::invalid_parameter(format!(
                        "Invalid parameter, duplicated txid: {text}"
                    )));
                }
                txids.push(txid);
            }
            let block_hash: Option<BlockHash> = args
                .optional::<String>(1)?
                .map(|text| parse_hash(&text, "blockhash"))
                .transpose()?;
            read(&c, move |node| {
                let store = node.store();
                let hash = match block_hash {
                    Some(hash) => hash,
                    None => {
                        let location = store
                            .transaction_location(&txids[0])
                            .map_err(storage_error)?
                            .ok_or_else(|| {
                                RpcError::new(
                                    codes::RPC_INVALID_ADDRESS_OR_KEY,
                                    "Transaction not yet in block",
                                )
                            })?;
                        store
                            .block_hash(location.height)
                            .map_err(storage_error)?
                            .ok_or_else(|| RpcError::internal("indexed block is missing"))?
                    }
                };
                let block = store.block(&hash).map_err(storage_error)?.ok_or_else(|| {
                    RpcError::new(codes::RPC_INVALID_ADDRESS_OR_KEY, "Block not found")
                })?;
                let ids: Vec<Txid> = block.transactions.iter().map(Transaction::txid).collect();
                let mut proofs = Vec::with_capacity(txids.len());
                for txid in &txids {
                    let proof = ids
                        .iter()
                        .position(|id| id == txid)
                        .and_then(|index| MerkleProof::build(&ids, index))
                        .ok_or_else(|| {
                            RpcError::new(
                                codes::RPC_INVALID_ADDRESS_OR_KEY,
                                "Not all transactions found in specified or retrieved block",
                            )
                        })?;
                    proofs.push((*txid, proof));
                }
                let proof: TxOutProof = (
                    block.header,
                    BoundedVec::new(proofs).expect("bounded by MAX_PROOF_TXIDS"),
                );
                Ok(json!(hex::encode(encode(&proof))))
            })
            .await
        }
    );
    method!(
        "verifytxoutproof",
        "verifytxoutproof proof: the txids a gettxoutproof proof commits to, if its block is in our chain",
        |c, p| {
            let text: String = p.bind(&["proof"])?.required(0)?;
            let bytes = hex::decode(text.trim()).map_err(|_| {
                RpcError::new(
                    codes::RPC_DESERIALIZATION_ERROR,
                    "Proof decode failed: not hex",
                )
            })?;
            let (header, proofs): TxOutProof = decode(&bytes).map_err(|e| {
                RpcError::new(
                    codes::RPC_DESERIALIZATION_ERROR,
                    format!("Proof decode failed: {e}"),
                )
            })?;
            read(&c, move |node| {
                let hash = header.hash();
                if node
                    .store()
                    .block_hash(header.height)
                    .map_err(storage_error)?
                    != Some(hash)
                {
                    return Err(RpcError::new(
                        codes::RPC_INVALID_ADDRESS_OR_KEY,
                        "Block not found in chain",
                    ));
                }
                // As Core: a proof that does not reach the header's root proves nothing.
                if !proofs
                    .iter()
                    .all(|(txid, proof)| proof.verify(txid, &header.transactions_root))
                {
                    return Ok(json!([]));
                }
                Ok(Value::Array(
                    proofs
                        .iter()
                        .map(|(txid, _)| json!(txid.to_string()))
                        .collect(),
                ))
            })
            .await
        }
    );
    method!(
        "getmasternodestatus",
        "getmasternodestatus: this node's masternode key, registration, committee membership and weight",
        |c, p| {
            p.bind(&[])?;
            let Reply::Consensus(info) = command(&c, Command::ConsensusInfo).await? else {
                return Err(RpcError::internal("unexpected reply"));
            };
            let Some((key, _)) = info.node_key else {
                return Ok(json!({
                    "masternode": false,
                    "status": "not_a_masternode",
                }));
            };
            let chain = c.chain;
            read(&c, move |node| {
                let registrations: Vec<Value> = node
                    .store()
                    .masternodes()
                    .iter()
                    .filter(|r| r.node_key == key)
                    .map(|r| {
                        json!({
                            "collateral": r.collateral.to_string(), "owner": r.owner.encode(chain),
                            "tier": r.tier.name(), "network_address": r.network_address.as_str(),
                            "registered_at": r.registered_at.get(),
                        })
                    })
                    .collect();
                let committee = node.finality().committee();
                let member = committee.member(&key);
                // Committees are fixed per epoch: a new registration waits for the next one, and
                // a deregistered member serves out its epoch.
                let status = match (member.is_some(), registrations.is_empty()) {
                    (true, false) => "active",
                    (true, true) => "active_deregistered",
                    (false, false) => "registered_waiting_for_epoch",
                    (false, true) => "not_registered",
                };
                Ok(json!({
                    "masternode": true,
                    "node_key": key.to_string(),
                    "status": status,
                    "registered": !registrations.is_empty(),
                    "registrations": registrations,
                    "in_committee": member.is_some(),
                    "weight": member.map(|m| m.weight.get()).unwrap_or(0),
                    "epoch": committee.epoch().get(),
                    "committee_size": committee.members().len(),
                    "total_weight": committee.total_weight().get(),
                }))
            })
            .await
        }
    );
    // A batch of payments reaches the node together, which verifies their signatures as one
    // batch; one at a time, each waited for the node's reply and was verified alone. A child
    // that arrives before its parent waits for the parent's certificate either way.
    m.concurrent_in_batches("sendrawtransaction");
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use timecoin_mempool::FeeRate;
    use timecoin_node::MempoolSummary;
    use timecoin_primitives::merkle::merkle_root;
    use timecoin_primitives::{Hash32, Network, SecretKey};

    #[test]
    fn verbosity_reads_numbers_and_bools_like_core() {
        assert_eq!(verbosity(None).unwrap(), 1);
        assert_eq!(verbosity(Some(&json!(false))).unwrap(), 0);
        assert_eq!(verbosity(Some(&json!(true))).unwrap(), 1);
        assert_eq!(verbosity(Some(&json!(2))).unwrap(), 2);
        assert_eq!(
            verbosity(Some(&json!("2"))).unwrap_err().code,
            codes::RPC_TYPE_ERROR
        );
        assert_eq!(
            verbosity(Some(&json!(-1))).unwrap_err().code,
            codes::RPC_INVALID_PARAMETER
        );
    }

    /// A valid header to dress up: a devnet genesis block's (built, so the test does not spell
    /// out every header field).
    fn any_header() -> BlockHeader {
        use timecoin_ledger::{GenesisAllocation, GenesisMasternode, GenesisSpec, build_genesis};
        let key = SecretKey::from_bytes([3; 32]);
        let address = Address::from_public_key(&key.public_key()).encode(Network::Devnet);
        let spec = GenesisSpec {
            network: "devnet".into(),
            timestamp_ms: 1_000,
            allocations: vec![GenesisAllocation {
                address: address.clone(),
                amount: "10".into(),
            }],
            masternodes: vec![GenesisMasternode {
                owner: address,
                node_key: key.public_key().to_string(),
                tier: "bronze".into(),
                network_address: "/ip4/127.0.0.1/tcp/1".into(),
            }],
            overrides: None,
        };
        build_genesis(&spec).unwrap().0.header
    }

    fn units(n: u64) -> Amount {
        Amount::from_units(n).unwrap()
    }

    #[test]
    fn mempool_info_has_core_fields_and_the_higher_of_the_two_minimum_fees() {
        let mut stats = PoolStats {
            summary: MempoolSummary {
                pending_transactions: 2,
                pending_bytes: 500,
                certified_transactions: 3,
                awaiting_inputs: 1,
                admission_limit: Some(1_500),
                finalized_per_s: 3_000,
                refused_busy: 7,
            },
            pending_usage_bytes: 1_400,
            pending_fees: units(700),
            max_bytes: 300 << 20,
            max_transactions: 10_000,
            entry_fee_rate: None,
        };
        let info = mempool_info_json(&stats, 1);
        assert_eq!(info["loaded"], json!(true));
        assert_eq!(
            (info["size"].clone(), info["bytes"].clone()),
            (json!(2), json!(500))
        );
        assert_eq!(info["usage"], json!(1_400));
        assert_eq!(info["maxmempool"], json!(300 << 20));
        assert_eq!(info["total_fee"], amount(units(700)));
        assert_eq!(info["total_fee_units"], json!(700));
        assert_eq!(
            (info["certified"].clone(), info["awaiting_inputs"].clone()),
            (json!(3), json!(1))
        );
        assert_eq!(
            [
                &info["admission_limit"],
                &info["finalized_per_s"],
                &info["refused_busy"]
            ],
            [&json!(1_500), &json!(3_000), &json!(7)]
        );
        // 1 unit per byte is 1,000 units per kB.
        assert_eq!(info["minrelaytxfee"], amount(units(1_000)));
        assert_eq!(info["mempoolminfee"], info["minrelaytxfee"]);
        // A full pool evicting 5 units/byte: the least whole rate above it is 5,001 units/kB.
        stats.entry_fee_rate = FeeRate::new(units(5_000), 1_000);
        assert_eq!(
            mempool_info_json(&stats, 1)["mempoolminfee"],
            amount(units(5_001))
        );
        // Below the relay minimum the minimum wins.
        stats.entry_fee_rate = FeeRate::new(units(1), 1_000);
        assert_eq!(
            mempool_info_json(&stats, 2)["mempoolminfee"],
            amount(units(2_000))
        );
    }

    #[test]
    fn verbose_raw_mempool_links_parents_and_children() {
        use timecoin_primitives::hash::Domain;
        let id = |i: u8| Txid(Domain::Txid.hash(&[&[i]]));
        let entries = [
            PoolTransaction {
                txid: id(1),
                size_bytes: 200,
                fee: units(300),
                first_seen_ms: Some(1_700_000_000_999),
                depends: vec![],
                finality: PoolFinality::Pending,
            },
            PoolTransaction {
                txid: id(2),
                size_bytes: 250,
                fee: units(400),
                first_seen_ms: None,
                depends: vec![id(1)],
                finality: PoolFinality::Certified,
            },
        ];
        let pool = raw_mempool_verbose(&entries);
        let parent = &pool[id(1).to_string()];
        let child = &pool[id(2).to_string()];
        assert_eq!(pool.as_object().unwrap().len(), 2);
        assert_eq!(parent["spentby"], json!([id(2).to_string()]));
        assert_eq!(parent["depends"], json!([]));
        assert_eq!(child["depends"], json!([id(1).to_string()]));
        assert_eq!(child["spentby"], json!([]));
        assert_eq!(
            (parent["vsize"].clone(), parent["size"].clone()),
            (json!(200), json!(200))
        );
        assert_eq!(parent["fee"], amount(units(300)));
        assert_eq!(parent["fees"]["base"], parent["fee"]);
        assert_eq!(parent["fees"]["units"], json!(300));
        assert_eq!(parent["time"], json!(1_700_000_000));
        assert_eq!(child["time"], Value::Null);
        assert_eq!(parent["finality"], json!("pending"));
        assert_eq!(child["finality"], json!("certified"));
        assert_eq!(child["wtxid"], json!(id(2).to_string()));
    }

    #[test]
    fn sync_object_gives_an_eta_only_while_behind_and_closing() {
        let behind = SyncStatus {
            height: Height(100),
            target_height: Height(400),
            peers_known: 3,
            in_flight: Some(Height(101)),
        };
        let rates = SyncReport {
            blocks_per_second: 52.3456,
            closing_blocks_per_second: 50.0,
            ..SyncReport::default()
        };
        let sync = sync_json(&behind, &rates);
        assert_eq!(sync["target_height"], json!(400));
        assert_eq!(sync["eta_seconds"], json!(6));
        assert_eq!(sync["blocks_per_second"], json!(52.346));
        assert_eq!(sync["in_flight_from"], json!(101));
        assert_eq!(sync["peers_known"], json!(3));
        let stalled = SyncReport {
            closing_blocks_per_second: 0.0,
            ..rates
        };
        assert_eq!(sync_json(&behind, &stalled)["eta_seconds"], Value::Null);
        let caught_up = SyncStatus {
            height: Height(399),
            in_flight: None,
            ..behind
        };
        let sync = sync_json(&caught_up, &stalled);
        assert_eq!(sync["eta_seconds"], json!(0));
        assert_eq!(sync["in_flight_from"], Value::Null);
    }

    /// The proof format round-trips through its hex encoding, proves every listed txid against
    /// the header's root, and proves nothing once a sibling is altered.
    #[test]
    fn txout_proof_round_trips_and_verifies() {
        use timecoin_primitives::hash::Domain;
        let txids: Vec<Txid> = (0u8..5).map(|i| Txid(Domain::Txid.hash(&[&[i]]))).collect();
        let mut header = any_header();
        header.height = Height(7);
        header.transactions_root = merkle_root(&txids);
        let entries = [1usize, 4]
            .iter()
            .map(|&i| (txids[i], MerkleProof::build(&txids, i).unwrap()))
            .collect();
        let proof: TxOutProof = (header.clone(), BoundedVec::new(entries).unwrap());
        let text = hex::encode(encode(&proof));
        let (decoded_header, decoded): TxOutProof = decode(&hex::decode(&text).unwrap()).unwrap();
        assert_eq!(decoded_header, header);
        assert!(
            decoded
                .iter()
                .all(|(txid, p)| p.verify(txid, &header.transactions_root))
        );
        assert_eq!(decoded[1].0, txids[4]);
        let (_, mut tampered) = decoded.clone().into_inner().remove(0);
        let mut siblings = tampered.siblings.clone().into_inner();
        siblings[0] = Hash32::ZERO;
        tampered.siblings = BoundedVec::new(siblings).unwrap();
        assert!(!tampered.verify(&txids[1], &header.transactions_root));
    }
}
