//! The open-loop run: senders that submit each payment when it is due, watchers of each node's
//! finality feed (or pollers of `gettxfinality`), a block watcher, and a progress line.

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::devnet::Devnet;
use crate::plan::Slot;

/// How a run submits and watches.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// Offered payments per second (for the progress line).
    pub rate: f64,
    /// Length of the send schedule.
    pub duration: Duration,
    /// Most payments in one `sendrawtransaction` batch.
    pub max_batch: usize,
    /// Concurrent submitting connections per node.
    pub connections: usize,
    /// Pause between finality polls of one node (with `Finality::Poll`).
    pub poll: Duration,
    /// How the run learns that a payment is final.
    pub finality: Finality,
    /// Payments still unsent this long after the schedule ends are dropped.
    pub send_grace: Duration,
    /// How long after the schedule ends to keep waiting for certificates.
    pub drain: Duration,
    /// Print a progress line.
    pub progress: bool,
}

/// How a run learns that a payment is final at the node it was sent to.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Finality {
    /// `waitforfinalized`: one call per node returns every payment as soon as it is final, the
    /// way a payment processor watches many payments.
    Feed,
    /// `gettxfinality` for every payment in flight, every `--poll-ms` (the bench's method before
    /// the feed existed; each answer can be up to one interval late).
    Poll,
}

/// How long one `waitforfinalized` call may wait, so that a watcher still notices the end of
/// the run promptly.
const FEED_WAIT_MS: u64 = 200;

/// What happened to one payment; times are milliseconds from the start of the run.
#[derive(Clone, Debug, Default)]
pub struct Record {
    /// When it was handed to the node (start of the request that carried it).
    pub sent_ms: Option<f64>,
    /// The node accepted it.
    pub accepted: bool,
    /// The node's rejection message, or the transport failure that lost it.
    pub error: Option<String>,
    /// The failure was the transport's (or it was never sent), not a rejection.
    pub dropped: bool,
    /// When the submitting node was first seen to report it certified (or in a block).
    pub final_ms: Option<f64>,
}

/// The raw results of a run.
pub struct RunResult {
    /// One record per slot, in plan order.
    pub records: Vec<Record>,
    /// Milliseconds from the start until the last poller stopped.
    pub elapsed_ms: f64,
    /// Committed heights seen on node 0 during the run, with when they were first seen (ms).
    pub heights: Vec<(u64, f64)>,
}

struct Shared {
    start: Instant,
    slots: Vec<Slot>,
    params: Vec<Value>,
    txids: Vec<Value>,
    queues: Vec<Mutex<usize>>,
    by_node: Vec<Vec<usize>>,
    pending: Vec<Mutex<Vec<usize>>>,
    records: Mutex<Vec<Record>>,
    senders_left: AtomicUsize,
    stop: AtomicBool,
    sent: AtomicU64,
    accepted: AtomicU64,
    failed: AtomicU64,
    finalized: AtomicU64,
}

impl Shared {
    fn now_ms(&self) -> f64 {
        self.start.elapsed().as_secs_f64() * 1e3
    }
}

/// Runs `slots` against `devnet`: `hexes[i]` is slot `i`'s signed payment and `txids[i]` its id.
pub async fn run(
    devnet: &Devnet,
    slots: Vec<Slot>,
    hexes: Vec<String>,
    txids: Vec<String>,
    config: &RunConfig,
) -> Result<RunResult, String> {
    let nodes = devnet.len();
    let mut by_node = vec![Vec::new(); nodes];
    for (i, slot) in slots.iter().enumerate() {
        by_node[slot.node].push(i);
    }
    let count = slots.len();
    // Parameters are built before the clock starts so that the senders only do I/O.
    let shared = Arc::new(Shared {
        start: Instant::now(),
        params: hexes.into_iter().map(|h| json!([h])).collect(),
        txids: txids.into_iter().map(|t| json!([t])).collect(),
        slots,
        queues: (0..nodes).map(|_| Mutex::new(0)).collect(),
        by_node,
        pending: (0..nodes).map(|_| Mutex::new(Vec::new())).collect(),
        records: Mutex::new(vec![Record::default(); count]),
        senders_left: AtomicUsize::new(nodes * config.connections),
        stop: AtomicBool::new(false),
        sent: AtomicU64::new(0),
        accepted: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        finalized: AtomicU64::new(0),
    });
    // Open connections before the clock starts, so connection setup is not charged to the first
    // payments; then restart the clock.
    let mut clients = Vec::new();
    for node in 0..nodes {
        for _ in 0..config.connections {
            let mut c = devnet.client(node)?;
            c.call("getblockcount", json!([])).await?;
            clients.push((node, c));
        }
    }
    let mut pollers = Vec::new();
    for node in 0..nodes {
        let mut c = devnet.client(node)?;
        // Where the node's finality feed stands before the first payment, so that no payment
        // that becomes final during the run is missed.
        let feed = match config.finality {
            Finality::Feed => Some(FeedPosition::of(
                &c.call("waitforfinalized", json!([0])).await?,
            )?),
            Finality::Poll => {
                c.call("getblockcount", json!([])).await?;
                None
            }
        };
        pollers.push((node, c, feed));
    }
    let mut watcher = devnet.client(0)?;
    let shared = {
        let mut s = Arc::into_inner(shared).expect("not shared yet");
        s.start = Instant::now();
        Arc::new(s)
    };

    let mut tasks = Vec::new();
    for (node, client) in clients {
        tasks.push(tokio::spawn(sender(
            shared.clone(),
            node,
            client,
            config.clone(),
        )));
    }
    let mut poll_tasks = Vec::new();
    for (node, client, feed) in pollers {
        poll_tasks.push(match feed {
            Some(position) => tokio::spawn(feed_watcher(
                shared.clone(),
                node,
                client,
                position,
                config.clone(),
            )),
            None => tokio::spawn(poller(shared.clone(), node, client, config.clone())),
        });
    }
    let heights = Arc::new(Mutex::new(Vec::new()));
    let watch_task = {
        let (shared, heights) = (shared.clone(), heights.clone());
        tokio::spawn(async move {
            let mut last = 0;
            while !shared.stop.load(Ordering::Relaxed) {
                if let Ok(h) = watcher.call("getblockcount", json!([])).await {
                    let h = h.as_u64().unwrap_or(0);
                    if h != last {
                        last = h;
                        heights.lock().unwrap().push((h, shared.now_ms()));
                    }
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
    };
    let progress_task = {
        let (shared, config) = (shared.clone(), config.clone());
        tokio::spawn(async move {
            while config.progress && !shared.stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let sent = shared.sent.load(Ordering::Relaxed);
                let finalized = shared.finalized.load(Ordering::Relaxed);
                eprint!(
                    "\r  [{:>5.1}/{:.0}s] offered {:.0}/s  sent {sent}/{}  accepted {}  failed {}  final {finalized}  in flight {}   ",
                    shared.start.elapsed().as_secs_f64(),
                    config.duration.as_secs_f64(),
                    config.rate,
                    shared.slots.len(),
                    shared.accepted.load(Ordering::Relaxed),
                    shared.failed.load(Ordering::Relaxed),
                    shared
                        .accepted
                        .load(Ordering::Relaxed)
                        .saturating_sub(finalized),
                );
                let _ = std::io::stderr().flush();
            }
        })
    };
    for t in tasks {
        t.await.map_err(|e| e.to_string())?;
    }
    for t in poll_tasks {
        t.await.map_err(|e| e.to_string())?;
    }
    let elapsed_ms = shared.now_ms();
    shared.stop.store(true, Ordering::Relaxed);
    let _ = watch_task.await;
    let _ = progress_task.await;
    if config.progress {
        eprintln!();
    }
    let records = shared.records.lock().unwrap().clone();
    let heights = heights.lock().unwrap().clone();
    Ok(RunResult {
        records,
        elapsed_ms,
        heights,
    })
}

/// Takes every due payment of `node` (up to a batch) and submits it; sleeps until the next is due.
async fn sender(
    shared: Arc<Shared>,
    node: usize,
    mut client: crate::http::Client,
    config: RunConfig,
) {
    let mine = &shared.by_node[node];
    loop {
        let now = shared.start.elapsed();
        let (batch, next_due) = {
            let mut cursor = shared.queues[node].lock().unwrap();
            if *cursor >= mine.len() {
                break;
            }
            if now > config.duration + config.send_grace {
                // Open loop: what could not be sent in time is lost, not sent late forever.
                let mut records = shared.records.lock().unwrap();
                for &i in &mine[*cursor..] {
                    records[i].dropped = true;
                    records[i].error = Some("not sent before the send deadline".into());
                }
                shared
                    .failed
                    .fetch_add((mine.len() - *cursor) as u64, Ordering::Relaxed);
                *cursor = mine.len();
                break;
            }
            let begin = *cursor;
            let mut end = begin;
            while end < mine.len()
                && end - begin < config.max_batch
                && shared.slots[mine[end]].due <= now
            {
                end += 1;
            }
            *cursor = end;
            (
                mine[begin..end].to_vec(),
                mine.get(end).map(|&i| shared.slots[i].due),
            )
        };
        if batch.is_empty() {
            if let Some(due) = next_due {
                tokio::time::sleep_until((shared.start + due).into()).await;
            }
            continue;
        }
        let params: Vec<Value> = batch.iter().map(|&i| shared.params[i].clone()).collect();
        let sent_ms = shared.now_ms();
        shared.sent.fetch_add(batch.len() as u64, Ordering::Relaxed);
        let results = client.batch("sendrawtransaction", &params).await;
        let mut accepted = 0;
        let mut now_pending = Vec::new();
        {
            let mut records = shared.records.lock().unwrap();
            match results {
                Ok(results) => {
                    for (&i, result) in batch.iter().zip(results) {
                        records[i].sent_ms = Some(sent_ms);
                        match result {
                            Ok(_) => {
                                records[i].accepted = true;
                                accepted += 1;
                                // The feed can report a payment final before its submission's
                                // answer arrives.
                                if records[i].final_ms.is_none() {
                                    now_pending.push(i);
                                }
                            }
                            Err(e) => {
                                records[i].error = Some(e);
                                shared.failed.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                }
                Err(e) => {
                    for &i in &batch {
                        records[i].sent_ms = Some(sent_ms);
                        records[i].dropped = true;
                        records[i].error = Some(format!("transport: {e}"));
                    }
                    shared
                        .failed
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                }
            }
        }
        shared.accepted.fetch_add(accepted, Ordering::Relaxed);
        shared.pending[node].lock().unwrap().extend(now_pending);
    }
    shared.senders_left.fetch_sub(1, Ordering::Relaxed);
}

/// Whether the run is over for a finality watcher: past the drain deadline, or everything sent
/// and nothing left pending on any node.
fn watching_done(shared: &Shared, config: &RunConfig) -> bool {
    if shared.start.elapsed() > config.duration + config.send_grace + config.drain {
        return true;
    }
    let all_sent = shared.senders_left.load(Ordering::Relaxed) == 0;
    all_sent && shared.pending.iter().all(|p| p.lock().unwrap().is_empty())
}

/// Marks the payments `done` final now (those not already), and no longer pending on `node`.
fn mark_final(shared: &Shared, node: usize, done: &[usize]) {
    if done.is_empty() {
        return;
    }
    let now = shared.now_ms();
    let mut newly = 0;
    {
        let mut records = shared.records.lock().unwrap();
        for &i in done {
            if records[i].final_ms.is_none() {
                records[i].final_ms = Some(now);
                newly += 1;
            }
        }
    }
    shared.finalized.fetch_add(newly, Ordering::Relaxed);
    let done: std::collections::HashSet<usize> = done.iter().copied().collect();
    shared.pending[node]
        .lock()
        .unwrap()
        .retain(|i| !done.contains(i));
}

/// Polls `node` for the finality of the payments it accepted, in batches.
async fn poller(
    shared: Arc<Shared>,
    node: usize,
    mut client: crate::http::Client,
    config: RunConfig,
) {
    loop {
        tokio::time::sleep(config.poll).await;
        if watching_done(&shared, &config) {
            break;
        }
        poll_once(&shared, node, &mut client).await;
    }
}

/// Asks `node` once about (up to 1,000 of) the payments pending there.
async fn poll_once(shared: &Shared, node: usize, client: &mut crate::http::Client) {
    let waiting: Vec<usize> = shared.pending[node]
        .lock()
        .unwrap()
        .iter()
        .take(1000)
        .copied()
        .collect();
    if waiting.is_empty() {
        return;
    }
    let params: Vec<Value> = waiting.iter().map(|&i| shared.txids[i].clone()).collect();
    let Ok(results) = client.batch("gettxfinality", &params).await else {
        return;
    };
    let mut done = Vec::new();
    for (&i, result) in waiting.iter().zip(results) {
        let status = result
            .ok()
            .and_then(|v| v["status"].as_str().map(str::to_owned));
        if matches!(status.as_deref(), Some("certified" | "in_block")) {
            done.push(i);
        }
    }
    mark_final(shared, node, &done);
}

/// Where a client stands in a node's finality feed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeedPosition {
    /// The node process's feed identifier.
    pub feed: String,
    /// The last sequence read.
    pub last: u64,
}

impl FeedPosition {
    /// The position after a `waitforfinalized` reply.
    pub fn of(reply: &Value) -> Result<FeedPosition, String> {
        match (reply["feed"].as_str(), reply["last"].as_u64()) {
            (Some(feed), Some(last)) => Ok(FeedPosition {
                feed: feed.to_string(),
                last,
            }),
            _ => Err(format!("not a waitforfinalized reply: {reply}")),
        }
    }
}

/// What a `waitforfinalized` reply says to a client at `position`.
#[derive(Debug, PartialEq, Eq)]
pub struct FeedReply {
    /// The txids it names.
    pub txids: Vec<String>,
    /// Whether the client must check its pending payments another way: the feed lost events
    /// it had not read, or the node restarted.
    pub gap: bool,
    /// Where the client stands after it.
    pub next: FeedPosition,
}

/// Reads a `waitforfinalized` reply to a client at `position`.
pub fn feed_reply(reply: &Value, position: &FeedPosition) -> Result<FeedReply, String> {
    let next = FeedPosition::of(reply)?;
    let gap = reply["missed"].as_bool().unwrap_or(true) || next.feed != position.feed;
    let txids = reply["transactions"]
        .as_array()
        .ok_or_else(|| format!("no transactions in {reply}"))?
        .iter()
        .filter_map(|event| event["txid"].as_str().map(str::to_owned))
        .collect();
    Ok(FeedReply { txids, gap, next })
}

/// Follows `node`'s finality feed and marks the payments it names final the moment the node
/// reports them. When the feed lost events (or the node restarted), asks about what is
/// pending once with `gettxfinality` and goes on.
async fn feed_watcher(
    shared: Arc<Shared>,
    node: usize,
    mut client: crate::http::Client,
    mut position: FeedPosition,
    config: RunConfig,
) {
    let mine: HashMap<&str, usize> = shared.by_node[node]
        .iter()
        .filter_map(|&i| shared.txids[i][0].as_str().map(|txid| (txid, i)))
        .collect();
    while !watching_done(&shared, &config) {
        let reply = client
            .call("waitforfinalized", json!([position.last, FEED_WAIT_MS]))
            .await;
        let Ok(read) = reply.and_then(|reply| feed_reply(&reply, &position)) else {
            tokio::time::sleep(config.poll).await;
            continue;
        };
        let done: Vec<usize> = read
            .txids
            .iter()
            .filter_map(|txid| mine.get(txid.as_str()).copied())
            .collect();
        mark_final(&shared, node, &done);
        if read.gap {
            poll_once(&shared, node, &mut client).await;
        }
        position = read.next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_feed_reply_names_its_txids_and_flags_a_gap_or_a_restart() {
        let position = FeedPosition {
            feed: "00aa".into(),
            last: 7,
        };
        let reply = json!({"feed": "00aa", "last": 9, "missed": false, "transactions": [
            {"sequence": 8, "txid": "t8", "status": "certified"},
            {"sequence": 9, "txid": "t9", "status": "in_block"}]});
        assert_eq!(
            feed_reply(&reply, &position).unwrap(),
            FeedReply {
                txids: vec!["t8".to_string(), "t9".to_string()],
                gap: false,
                next: FeedPosition {
                    feed: "00aa".into(),
                    last: 9
                }
            }
        );
        let missed = json!({"feed": "00aa", "last": 9, "missed": true, "transactions": []});
        assert!(feed_reply(&missed, &position).unwrap().gap);
        let restarted = json!({"feed": "00bb", "last": 2, "missed": false, "transactions": []});
        assert!(feed_reply(&restarted, &position).unwrap().gap);
        assert!(feed_reply(&json!({"error": "x"}), &position).is_err());
    }
}
