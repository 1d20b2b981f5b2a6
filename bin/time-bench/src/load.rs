//! The open-loop run: senders that submit each payment when it is due, pollers that watch for
//! certificates, a block watcher, and a progress line.

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
    /// Pause between finality polls of one node.
    pub poll: Duration,
    /// Payments still unsent this long after the schedule ends are dropped.
    pub send_grace: Duration,
    /// How long after the schedule ends to keep waiting for certificates.
    pub drain: Duration,
    /// Print a progress line.
    pub progress: bool,
}

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
        c.call("getblockcount", json!([])).await?;
        pollers.push((node, c));
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
    for (node, client) in pollers {
        poll_tasks.push(tokio::spawn(poller(
            shared.clone(),
            node,
            client,
            config.clone(),
        )));
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
        let mut accepted = Vec::new();
        {
            let mut records = shared.records.lock().unwrap();
            match results {
                Ok(results) => {
                    for (&i, result) in batch.iter().zip(results) {
                        records[i].sent_ms = Some(sent_ms);
                        match result {
                            Ok(_) => {
                                records[i].accepted = true;
                                accepted.push(i);
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
        shared
            .accepted
            .fetch_add(accepted.len() as u64, Ordering::Relaxed);
        shared.pending[node].lock().unwrap().extend(accepted);
    }
    shared.senders_left.fetch_sub(1, Ordering::Relaxed);
}

/// Polls `node` for the finality of the payments it accepted, in batches.
async fn poller(
    shared: Arc<Shared>,
    node: usize,
    mut client: crate::http::Client,
    config: RunConfig,
) {
    let deadline = config.duration + config.send_grace + config.drain;
    loop {
        tokio::time::sleep(config.poll).await;
        if shared.start.elapsed() > deadline {
            break;
        }
        let waiting: Vec<usize> = shared.pending[node]
            .lock()
            .unwrap()
            .iter()
            .take(1000)
            .copied()
            .collect();
        if waiting.is_empty() {
            let all_sent = shared.senders_left.load(Ordering::Relaxed) == 0;
            let none_pending = shared.pending.iter().all(|p| p.lock().unwrap().is_empty());
            if all_sent && none_pending {
                break;
            }
            continue;
        }
        let params: Vec<Value> = waiting.iter().map(|&i| shared.txids[i].clone()).collect();
        let Ok(results) = client.batch("gettxfinality", &params).await else {
            continue;
        };
        let now = shared.now_ms();
        let mut done = Vec::new();
        for (&i, result) in waiting.iter().zip(results) {
            let status = result
                .ok()
                .and_then(|v| v["status"].as_str().map(str::to_owned));
            if matches!(status.as_deref(), Some("certified" | "in_block")) {
                done.push(i);
            }
        }
        if done.is_empty() {
            continue;
        }
        {
            let mut records = shared.records.lock().unwrap();
            for &i in &done {
                records[i].final_ms = Some(now);
            }
        }
        shared
            .finalized
            .fetch_add(done.len() as u64, Ordering::Relaxed);
        let done: std::collections::HashSet<usize> = done.into_iter().collect();
        shared.pending[node]
            .lock()
            .unwrap()
            .retain(|i| !done.contains(i));
    }
}
