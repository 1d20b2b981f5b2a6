"""Drives a running devnet with python-bitcoinrpc's AuthServiceProxy, the client many exchange
and wallet scripts are written with, and asserts Bitcoin Core's result shapes and error codes.

Usage: rpc_clients.py CONFIG_JSON (written by bin/timed/tests/rpc_clients.rs). Exits non-zero
on the first failed check, naming it.
"""

import json
import os
import sys
import time
from decimal import Decimal

from bitcoinrpc.authproxy import AuthServiceProxy, JSONRPCException

CONFIG = json.loads(sys.argv[1])
CHECKS = 0


def check(condition, what):
    global CHECKS
    CHECKS += 1
    if not condition:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)


def cookie_proxy(node):
    with open(os.path.join(node["datadir"], ".cookie")) as f:
        user, password = f.read().strip().split(":", 1)
    return AuthServiceProxy(f"http://{user}:{password}@127.0.0.1:{node['rpc_port']}", timeout=30)


def expect_error(call, code, what):
    try:
        result = call()
    except JSONRPCException as e:
        check(e.code == code, f"{what}: expected code {code}, got {e.code} ({e.message})")
        return e
    check(False, f"{what}: expected error {code}, got result {result!r}")


def wait_for(predicate, seconds, what):
    deadline = time.time() + seconds
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    check(False, f"timed out waiting for {what}")


nodes = CONFIG["nodes"]
txid = CONFIG["txid"]
rpc = cookie_proxy(nodes[0])

# --- chain queries ---
info = rpc.getblockchaininfo()
check(info["chain"] == "devnet", f"getblockchaininfo chain: {info}")
check(isinstance(info["blocks"], int) and info["blocks"] >= 2, f"blocks: {info}")
check(isinstance(info["headers"], int) and info["headers"] >= info["blocks"], f"headers >= blocks: {info}")
sync = info["sync"]
check(sync["target_height"] == info["headers"], f"sync target is headers: {info}")
check(sync["blocks_per_second"] >= 0 and sync["peers_known"] >= 0, f"sync figures: {info}")
check(0 < info["verificationprogress"] <= 1, f"verificationprogress: {info}")
check(info["initialblockdownload"] == (info["headers"] > info["blocks"] + 1), f"initialblockdownload: {info}")
# A member of a running devnet keeps up: at most a block behind the best tip any peer announced.
caught_up = wait_for(lambda: (lambda i: not i["initialblockdownload"] and i)(rpc.getblockchaininfo()), 10,
                     "node 0 to be caught up")
check(caught_up["verificationprogress"] >= Decimal("0.5") and caught_up["sync"]["eta_seconds"] == 0,
      f"caught up: {caught_up}")
check(caught_up["sync"]["peers_known"] >= 1, f"peers announced their tips: {caught_up}")
best = rpc.getblockhash(info["blocks"])
check(best == info["bestblockhash"], "getblockhash(blocks) == bestblockhash")
check(rpc.getblockcount() >= info["blocks"], "getblockcount does not go backwards")

block1 = rpc.getblock(best)
for key in ("hash", "confirmations", "height", "version", "merkleroot", "time", "nTx", "tx",
            "size", "previousblockhash"):
    check(key in block1, f"getblock verbosity 1 has {key}: {block1}")
check(block1["hash"] == best and block1["height"] == info["blocks"], "getblock identifies the block")
check(all(isinstance(t, str) and len(t) == 64 for t in block1["tx"]), "verbosity 1 lists txids")
check(block1["nTx"] == len(block1["tx"]), "nTx counts tx")
# Confirmations and nextblockhash move on as blocks are committed between the two calls.
moving = ("confirmations", "nextblockhash")
same = lambda a, b: {k: v for k, v in a.items() if k not in moving} == {k: v for k, v in b.items() if k not in moving}
check(same(rpc.getblock(best, True), block1), "verbosity true is 1")
raw_block = rpc.getblock(best, 0)
check(isinstance(raw_block, str) and int(raw_block, 16) >= 0 and len(raw_block) == 2 * block1["size"],
      "verbosity 0 is the block's hex")
block2 = rpc.getblock(best, 2)
check([t["txid"] for t in block2["tx"]] == block1["tx"], "verbosity 2 has the same transactions")
check(all("hex" in t and "vout" in t and "vin" in t for t in block2["tx"]), "verbosity 2 decodes them")
genesis = rpc.getblock(rpc.getblockhash(0))
check("previousblockhash" not in genesis and genesis["height"] == 0, "genesis has no previous block")
header = rpc.getblockheader(best)
check(header["hash"] == best and "tx" not in header, "getblockheader")
check(isinstance(rpc.getblockheader(best, False), str), "getblockheader verbose=false is hex")

# --- the payment the test made ---
final = wait_for(lambda: rpc.gettxfinality(txid)["status"] == "in_block" and rpc.gettxfinality(txid),
                 20, "the payment to be in a block")
tx = rpc.getrawtransaction(txid, True)
check(tx["txid"] == txid and tx["blockhash"] == final["blockhash"], f"getrawtransaction verbose: {tx}")
check(rpc.decoderawtransaction(tx["hex"])["txid"] == txid, "decoderawtransaction round trip")
check(rpc.getrawtransaction(txid) == tx["hex"], "getrawtransaction non-verbose is the hex")
out = rpc.gettxout(txid, 0)
check(out is not None and isinstance(out["value"], Decimal) and out["value"] > 0, f"gettxout: {out}")
check(out["confirmations"] >= 1 and out["coinbase"] is False and out["bestblock"], f"gettxout: {out}")
check(rpc.gettxout(txid, 99) is None, "gettxout of a missing output is null")
reward = rpc.getblock(final["blockhash"])["tx"][0]
reward_out = rpc.gettxout(reward, 0)
check(reward_out is None or reward_out["coinbase"] is True, f"reward output is coinbase: {reward_out}")

proof = rpc.gettxoutproof([txid])
check(rpc.verifytxoutproof(proof) == [txid], "verifytxoutproof returns the proven txid")
check(rpc.gettxoutproof([txid], final["blockhash"]) == proof, "gettxoutproof with the block hash")
# Flip a byte in the last sibling hash: the proof no longer reaches the root.
tampered = proof[:-2] + ("00" if proof[-2:] != "00" else "01")
check(rpc.verifytxoutproof(tampered) == [], "a tampered proof proves nothing")
expect_error(lambda: rpc.gettxoutproof([]), -8, "gettxoutproof of nothing")
expect_error(lambda: rpc.gettxoutproof([txid, txid]), -8, "gettxoutproof with a duplicate")
expect_error(lambda: rpc.gettxoutproof(["11" * 32]), -5, "gettxoutproof of an unknown tx")
expect_error(lambda: rpc.verifytxoutproof("zz"), -22, "verifytxoutproof of non-hex")

# --- testmempoolaccept, then send what it accepted ---
known = rpc.testmempoolaccept([tx["hex"]])
check(len(known) == 1 and known[0]["allowed"] is False and known[0]["txid"] == txid,
      f"testmempoolaccept of a mined tx: {known}")
check(known[0]["reject-reason"] == "txn-already-known", f"reason: {known}")
fresh = rpc.testmempoolaccept([CONFIG["unsent_hex"]])[0]
check(fresh["allowed"] is True and fresh["fees"]["base"] > 0 and fresh["vsize"] > 0,
      f"testmempoolaccept of a valid unsent tx: {fresh}")
expect_error(lambda: rpc.testmempoolaccept(["zz"]), -22, "testmempoolaccept of non-hex")
expect_error(lambda: rpc.testmempoolaccept("notalist"), -3, "testmempoolaccept of a string")
# The calls of a batch run in order, so the pool is listed right after the node took the
# transaction: before any block can hold it (that needs votes and a consensus round).
sent, pool_verbose, pool_ids, pool_info = rpc.batch_(
    [["sendrawtransaction", CONFIG["unsent_hex"]], ["getrawmempool", True], ["getrawmempool"],
     ["getmempoolinfo"]])
check(sent == fresh["txid"], "sendrawtransaction returns the tested txid")
check(isinstance(pool_ids, list) and all(isinstance(t, str) and len(t) == 64 for t in pool_ids),
      f"getrawmempool lists txids: {pool_ids}")
check(sent in pool_ids and sent in pool_verbose, f"the sent transaction is listed: {pool_ids}")
check(len(set(pool_ids)) == len(pool_ids), "getrawmempool lists each txid once")
entry = pool_verbose[sent]
check(entry["vsize"] == fresh["vsize"] and entry["size"] == entry["vsize"], f"sizes: {entry}")
check(entry["fees"]["base"] == fresh["fees"]["base"] and entry["fee"] == entry["fees"]["base"]
      and entry["fees"]["units"] == fresh["fees"]["units"], f"fees: {entry} vs {fresh}")
check(entry["finality"] in ("pending", "certified") and entry["wtxid"] == sent, f"finality: {entry}")
# Its input is the change of the first payment, already in a block: no pooled parent.
check(entry["depends"] == [] and isinstance(entry["spentby"], list), f"depends: {entry}")
check(entry["finality"] == "certified" or isinstance(entry["time"], int),
      f"a pending entry has its first-seen time: {entry}")
for listed, details in pool_verbose.items():
    check(details["finality"] in ("pending", "certified") and details["vsize"] > 0
          and details["fees"]["base"] >= 0 and all(d in pool_verbose for d in details["depends"]),
          f"getrawmempool entry {listed}: {details}")
check(pool_info["loaded"] is True and pool_info["usage"] >= pool_info["bytes"], f"{pool_info}")
expect_error(lambda: rpc.getrawmempool("yes"), -3, "getrawmempool verbose of the wrong type")
expect_error(lambda: rpc.getrawmempool(True, True), -8, "getrawmempool verbose with mempool_sequence")
expect_error(lambda: rpc.getrawmempool(False, False, 1), -8, "getrawmempool with too many parameters")
again = rpc.testmempoolaccept([CONFIG["unsent_hex"]])[0]
check(again["allowed"] is False, f"after sending it is known: {again}")
wait_for(lambda: rpc.gettxfinality(sent)["status"] in ("certified", "in_block"), 20, "the second payment")

# --- pool, consensus, masternodes, network ---
pool = rpc.getmempoolinfo()
check(isinstance(pool["size"], int) and isinstance(pool["bytes"], int), f"getmempoolinfo: {pool}")
for key in ("loaded", "size", "bytes", "usage", "total_fee", "maxmempool", "mempoolminfee",
            "minrelaytxfee", "certified", "awaiting_inputs"):
    check(key in pool, f"getmempoolinfo has {key}: {pool}")
check(pool["loaded"] is True, f"loaded: {pool}")
# mempool.max_mb is configured in MB (default 300).
check(pool["maxmempool"] > 0 and pool["maxmempool"] % (1 << 20) == 0, f"maxmempool: {pool}")
check(pool["usage"] >= pool["bytes"] and (pool["usage"] == 0) == (pool["size"] == 0),
      f"usage estimates at least the encoded bytes: {pool}")
check(isinstance(pool["total_fee"], Decimal) and pool["total_fee"] >= 0
      and (pool["size"] > 0 or pool["total_fee"] == 0), f"total_fee: {pool}")
check(pool["minrelaytxfee"] == Decimal(pool["min_fee_rate_units_per_byte"] * 1000) / Decimal(10 ** 8),
      f"minrelaytxfee is the configured rate per kB: {pool}")
check(pool["mempoolminfee"] >= pool["minrelaytxfee"] > 0, f"mempoolminfee: {pool}")
consensus = rpc.getconsensusinfo()
check(consensus["committee_size"] == len(nodes) and consensus["in_committee"] is True, f"{consensus}")
check(len(rpc.listmasternodes()) == len(nodes), "listmasternodes lists every masternode")
status = rpc.getmasternodestatus()
check(status["masternode"] is True and status["status"] == "active" and status["in_committee"] is True,
      f"getmasternodestatus: {status}")
check(status["weight"] > 0 and status["registered"] is True and status["node_key"] == consensus["node_key"],
      f"getmasternodestatus: {status}")
check(rpc.getconnectioncount() >= 1, "connected")
check(len(rpc.getpeerinfo()) >= 1, "getpeerinfo")
check(rpc.getnetworkinfo()["network"] == "devnet", "getnetworkinfo")
check(rpc.validateaddress("nonsense")["isvalid"] is False, "validateaddress rejects nonsense")
check(isinstance(rpc.uptime(), int), "uptime")
check("gettxoutproof" in rpc.help(), "help lists the methods")

# --- errors with Core's codes ---
expect_error(lambda: rpc.getblockhash(10 ** 9), -8, "height out of range")
expect_error(lambda: rpc.getblockhash("1"), -3, "height of the wrong type")
expect_error(lambda: rpc.getblock("00" * 32), -5, "unknown block")
expect_error(lambda: rpc.getblock("xyz"), -8, "malformed block hash")
expect_error(lambda: rpc.getrawtransaction("11" * 32), -5, "unknown transaction")
expect_error(lambda: rpc.sendrawtransaction("zz"), -22, "undecodable transaction")
expect_error(lambda: rpc.decoderawtransaction("00"), -22, "truncated transaction")
expect_error(lambda: rpc.gettxout(txid, -1), -8, "negative output index")
expect_error(lambda: rpc.nosuchmethod(), -32601, "unknown method")
expect_error(lambda: rpc.getblockcount(1), -8, "too many parameters")

# --- a batch (JSON-RPC 2.0 inside, as batch_ sends it) ---
count, besthash, genesis_hash, connections = rpc.batch_(
    [["getblockcount"], ["getbestblockhash"], ["getblockhash", 0], ["getconnectioncount"]])
check(isinstance(count, int) and len(besthash) == 64 and genesis_hash == rpc.getblockhash(0)
      and connections >= 1, "batch results")
expect_error(lambda: rpc.batch_([["getblockcount"], ["nosuchmethod"]]), -32601, "a batch with an error")

# --- user/password authentication on the node started with rpc.user/rpc.password ---
up = CONFIG["userpass"]
node = nodes[up["node"]]
check(not os.path.exists(os.path.join(node["datadir"], ".cookie")), "no cookie with rpc.user set")
urpc = AuthServiceProxy(f"http://{up['user']}:{up['password']}@127.0.0.1:{node['rpc_port']}", timeout=30)
check(urpc.getblockcount() >= 1, "user/password call")
check(urpc.getconsensusinfo()["committee_size"] == len(nodes), "user/password consensus")
wait_for(lambda: urpc.gettxfinality(txid)["status"] == "in_block", 10, "the payment on the user/password node")
h0, h1 = urpc.batch_([["getblockhash", 0], ["getblockhash", 1]])
check(h0 == genesis_hash and h1 == rpc.getblockhash(1), "user/password batch agrees with node 0")
bad = AuthServiceProxy(f"http://{up['user']}:wrong@127.0.0.1:{node['rpc_port']}", timeout=30)
try:
    bad.getblockcount()
    check(False, "a wrong password was accepted")
except JSONRPCException as e:
    # python-bitcoinrpc turns the non-JSON 401 into its own code -342.
    check(e.code == -342 and "401" in e.message, f"wrong password gets HTTP 401: {e}")

print(f"rpc_clients.py: {CHECKS} checks passed")
