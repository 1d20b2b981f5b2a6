"""Scrapes a node's /metrics with prometheus_client's OpenMetrics parser (the format the node
serves) and checks the values against what RPC reports.

Usage: metrics.py CONFIG_JSON (written by bin/timed/tests/rpc_clients.rs). Exits non-zero on the
first failed check.
"""

import json
import os
import sys
import time
import urllib.error
import urllib.request

from bitcoinrpc.authproxy import AuthServiceProxy, JSONRPCException
from prometheus_client.openmetrics.parser import text_string_to_metric_families

CONFIG = json.loads(sys.argv[1])
CHECKS = 0


def check(condition, what):
    global CHECKS
    CHECKS += 1
    if not condition:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)


node = CONFIG["nodes"][0]
base = f"http://127.0.0.1:{node['metrics_port']}"
with open(os.path.join(node["datadir"], ".cookie")) as f:
    user, password = f.read().strip().split(":", 1)
rpc = AuthServiceProxy(f"http://{user}:{password}@127.0.0.1:{node['rpc_port']}", timeout=30)


def scrape():
    with urllib.request.urlopen(base + "/metrics", timeout=10) as response:
        check(response.status == 200, "/metrics answers 200")
        check(response.headers["Content-Type"].startswith("application/openmetrics-text"),
              f"OpenMetrics content type: {response.headers['Content-Type']}")
        text = response.read().decode()
    # The parser raises on anything malformed, including a missing "# EOF".
    samples = {}
    families = {}
    for family in text_string_to_metric_families(text):
        families[family.name] = family
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return families, samples


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))))


families, samples = scrape()
for name, kind in [("timecoin_mempool_transactions", "gauge"), ("timecoin_mempool_bytes", "gauge"),
                   ("timecoin_mempool_admission_limit", "gauge"), ("timecoin_mempool_refused_busy", "counter"),
                   ("timecoin_chain_height", "gauge"), ("timecoin_finalized_transactions", "counter"),
                   ("timecoin_finality_latency_seconds", "histogram"), ("timecoin_consensus_view", "gauge"),
                   ("timecoin_view_changes", "counter"), ("timecoin_peers", "gauge"),
                   ("timecoin_banned_peers", "gauge"), ("timecoin_active_masternodes", "gauge"),
                   ("timecoin_committee_weight", "gauge"), ("timecoin_rpc_requests", "counter"),
                   ("timecoin_storage_commit_seconds", "histogram"), ("timecoin_node_step_seconds", "histogram"),
                   ("timecoin_sync_target_height", "gauge"), ("timecoin_sync_blocks_per_second", "gauge"),
                   ("timecoin_sync_in_progress", "gauge"),
                   ("timecoin_p2p_messages_rejected", "counter"), ("timecoin_p2p_events_dropped", "counter"),
                   ("timecoin_p2p_bytes_received", "counter"), ("timecoin_p2p_bytes_sent", "counter"),
                   ("timecoin_p2p_repeats_sent_direct", "counter"),
                   ("timecoin_storage_flushes", "counter"), ("timecoin_storage_flush_seconds", "counter"),
                   ("timecoin_storage_flush_wait_seconds", "counter"),
                   ("timecoin_storage_cached_utxos", "gauge")]:
    check(name in families and families[name].type == kind, f"{name} is a {kind}")

# Chain height: the gauge follows every committed block, so it trails RPC by under a block or two.
height = value(samples, "timecoin_chain_height")
count = rpc.getblockcount()
check(height is not None and 0 <= count - height <= 2, f"chain height {height} vs getblockcount {count}")

consensus = rpc.getconsensusinfo()
check(value(samples, "timecoin_active_masternodes") == consensus["committee_size"],
      f"active masternodes vs committee_size {consensus['committee_size']}")
check(value(samples, "timecoin_committee_weight") == consensus["total_weight"], "committee weight")

# Peers and the pool are refreshed once a second: compare until they agree (the devnet is stable).
deadline = time.time() + 5
while True:
    families, samples = scrape()
    peers = (value(samples, "timecoin_peers", direction="inbound") or 0) + \
        (value(samples, "timecoin_peers", direction="outbound") or 0)
    connections = rpc.getconnectioncount()
    pool = rpc.getmempoolinfo()
    if peers == connections and value(samples, "timecoin_mempool_transactions") == pool["size"] \
            and value(samples, "timecoin_mempool_bytes") == pool["bytes"] \
            and value(samples, "timecoin_mempool_admission_limit") == pool["admission_limit"] \
            and value(samples, "timecoin_mempool_refused_busy_total") == pool["refused_busy"]:
        break
    check(time.time() < deadline, f"peers {peers} vs getconnectioncount {connections}, mempool "
          f"{value(samples, 'timecoin_mempool_transactions')} vs {pool}")
    time.sleep(0.2)
check(peers >= 1, "connected peers")
# A connected node has talked to its peers, and an honest devnet breaks no limit.
check((value(samples, "timecoin_p2p_bytes_received_total") or 0) > 0, "p2p bytes received")
check((value(samples, "timecoin_p2p_bytes_sent_total") or 0) > 0, "p2p bytes sent")
check(value(samples, "timecoin_p2p_messages_rejected_total") == 0, "no honest message rejected")

# Storage: every committed block is at least one durable write, observed by the histogram.
commits = value(samples, "timecoin_storage_commit_seconds_count")
check(commits is not None and commits >= height, f"storage commits observed {commits} >= height {height}")
check(value(samples, "timecoin_storage_commit_seconds_bucket", le="+Inf") == commits,
      "the +Inf bucket counts every commit")
check(value(samples, "timecoin_storage_commit_seconds_sum") > 0, "storage commit time adds up")

# Sync: the target is the best height known, never below our own (nor below the height RPC
# reported earlier); a devnet member keeps up, and blocks keep coming. The gauges are refreshed
# once a second, so compare until they agree with RPC.
deadline = time.time() + 10
while True:
    families, samples = scrape()
    target = value(samples, "timecoin_sync_target_height")
    own = value(samples, "timecoin_chain_height")
    rate = value(samples, "timecoin_sync_blocks_per_second")
    syncing = value(samples, "timecoin_sync_in_progress")
    chain = rpc.getblockchaininfo()
    if target is not None and max(own - 2, count) <= target <= chain["headers"] \
            and chain["blocks"] <= chain["headers"] \
            and syncing == 0 and not chain["initialblockdownload"] and rate > 0 \
            and chain["sync"]["blocks_per_second"] > 0:
        break
    check(time.time() < deadline, f"sync gauges target={target} height={own} rate={rate} "
          f"in_progress={syncing} vs getblockchaininfo {chain}")
    time.sleep(0.2)

check(value(samples, "timecoin_finalized_transactions_total") >= 1, "a transaction was finalized")
check(value(samples, "timecoin_finality_latency_seconds_count") >= 1, "finality latency observed")
# Every tick is a step, so a running node has timed many.
check(value(samples, "timecoin_node_step_seconds_count") >= 1, "node steps timed")

# RPC counters move with calls, by method and outcome.
ok_before = value(samples, "timecoin_rpc_requests_total", method="getblockcount", status="ok") or 0
error_before = value(samples, "timecoin_rpc_requests_total", method="getblockhash", status="error") or 0
for _ in range(3):
    rpc.getblockcount()
try:
    rpc.getblockhash(10 ** 9)
except JSONRPCException:
    pass
_, samples = scrape()
ok_after = value(samples, "timecoin_rpc_requests_total", method="getblockcount", status="ok")
error_after = value(samples, "timecoin_rpc_requests_total", method="getblockhash", status="error")
check(ok_after >= ok_before + 3, f"getblockcount ok counter {ok_before} -> {ok_after}")
check(error_after == error_before + 1, f"getblockhash error counter {error_before} -> {error_after}")

with urllib.request.urlopen(base + "/health", timeout=10) as response:
    check(json.loads(response.read())["status"] == "alive", "/health")
with urllib.request.urlopen(base + "/ready", timeout=10) as response:
    ready = json.loads(response.read())
    check(response.status == 200 and ready["ready"] is True and ready["peers"] >= 1, f"/ready: {ready}")
try:
    urllib.request.urlopen(base + "/nothing", timeout=10)
    check(False, "an unknown path is not found")
except urllib.error.HTTPError as e:
    check(e.code == 404, "an unknown path is 404")

print(f"metrics.py: {CHECKS} checks passed")
