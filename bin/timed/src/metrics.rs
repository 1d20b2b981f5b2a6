//! Prometheus metrics, and the HTTP endpoint that serves them with `/health` and `/ready`.
//!
//! The metrics library (prometheus-client) writes the OpenMetrics text format, so `/metrics` is
//! served with the OpenMetrics content type; Prometheus negotiates it, and a scraper that asks for
//! the classic format still parses it. (Served as classic text, its `# EOF` and `_total`
//! conventions make `promtool check metrics` complain.)

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The OpenMetrics content type Prometheus expects for this text.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Labels of the RPC request counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    /// The method called (unknown names are folded into one value by the RPC layer).
    pub method: String,
    /// `ok` or `error`.
    pub status: String,
}

/// Labels of the peer gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    /// `inbound` or `outbound`.
    pub direction: String,
}

/// Every metric the node exports. Cheap to update from any thread.
pub struct Metrics {
    registry: Registry,
    /// Transactions in the mempool.
    pub mempool_transactions: Gauge,
    /// Bytes of transactions in the mempool.
    pub mempool_bytes: Gauge,
    /// How many transactions may be collecting votes for a client's to be taken (ADR 0026);
    /// -1 when that limit is off.
    pub mempool_admission_limit: Gauge,
    /// Client transactions refused because the node was busy.
    pub mempool_refused_busy: Counter,
    /// Height of the chain tip.
    pub chain_height: Gauge,
    /// Transactions that reached a finality certificate.
    pub finalized_transactions: Counter,
    /// Seconds from first sight of a transaction to its certificate.
    pub finality_latency_seconds: Histogram,
    /// The current consensus view (round) at the tip height.
    pub consensus_view: Gauge,
    /// View changes since start.
    pub view_changes: Counter,
    /// Blocks committed since start.
    pub blocks_committed: Counter,
    /// Connected peers by direction.
    pub peers: Family<DirectionLabels, Gauge>,
    /// Peers currently banned.
    pub banned_peers: Gauge,
    /// Gossip messages and requests the network dropped for breaking a limit (rate or size).
    pub p2p_messages_rejected: Counter,
    /// Network events dropped because the node's queue was full.
    pub p2p_events_dropped: Counter,
    /// Raw bytes received on all connections.
    pub p2p_bytes_received: Counter,
    /// Raw bytes sent on all connections.
    pub p2p_bytes_sent: Counter,
    /// Heartbeats gossip had already seen, sent to each peer directly instead.
    pub p2p_repeats_sent_direct: Counter,
    /// Masternodes in the current committee.
    pub active_masternodes: Gauge,
    /// Their total voting weight.
    pub committee_weight: Gauge,
    /// The best height known to exist: the highest tip a peer announced (or a height consensus
    /// decided whose block we lack), never below our tip.
    pub sync_target_height: Gauge,
    /// Blocks committed per second over the last [`SYNC_RATE_WINDOW`], by sync or consensus.
    pub sync_blocks_per_second: Gauge<f64, AtomicU64>,
    /// 1 while a peer is more than [`SYNC_SLACK_BLOCKS`] ahead of our tip, else 0.
    pub sync_in_progress: Gauge,
    /// RPC requests by method and outcome.
    pub rpc_requests: Family<RpcLabels, Counter>,
    /// Seconds per durable storage write: block commits, consensus records and group-commit
    /// syncs (process-wide: [`storage_commit_histogram`]).
    pub storage_commit_seconds: Histogram,
    /// Seconds per node step: the node's handling of one batch of inputs, before its actions
    /// are performed. Everything the node owes waits while one runs, so the slow tail of this
    /// histogram is latency added to every payment in flight.
    pub node_step_seconds: Histogram,
    /// Flushes of the UTXO write-back cache to the database since start.
    pub storage_flushes: Counter,
    /// Seconds those flushes took to write, on the store's background thread (ADR 0019).
    pub storage_flush_seconds: Counter<f64, AtomicU64>,
    /// Seconds the node's own thread waited for a flush (the next cache layer filled before
    /// the previous one was written): the part of flushing that stalls the node.
    pub storage_flush_wait_seconds: Counter<f64, AtomicU64>,
    /// UTXO changes waiting in the write-back cache.
    pub storage_cached_utxos: Gauge,
    /// Bytes the chain database's files take on disk: the chain file, the UTXO file and the
    /// UTXO log's segments (ADR 0029), dead records not yet compacted included.
    pub storage_disk_bytes: Gauge,
    /// The sync tracker and its latest figures, for RPC (the gauges above export them). Kept
    /// here because the metrics are what both the node task and RPC hold.
    sync: Mutex<(SyncTracker, SyncReport)>,
    /// The origin of the tracker's clock (monotonic, unlike the node's wall clock).
    created: Instant,
}

/// Bucket bounds for durable storage commits: an fsync takes from well under a millisecond
/// (battery-backed cache) to tens of milliseconds (consumer disks).
fn storage_buckets() -> impl Iterator<Item = f64> {
    [
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    ]
    .into_iter()
}

/// The storage commit histogram, one per process: the store is opened, and its commit observer
/// set, before the node's [`Metrics`] exist, and a `timed` process runs one node. Every
/// [`Metrics`] registers this same histogram.
pub fn storage_commit_histogram() -> Histogram {
    static HISTOGRAM: OnceLock<Histogram> = OnceLock::new();
    HISTOGRAM
        .get_or_init(|| Histogram::new(storage_buckets()))
        .clone()
}

fn latency_buckets() -> impl Iterator<Item = f64> {
    [
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ]
    .into_iter()
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Copies the store's running totals into the metrics. Returns what is new since the last
    /// call (flushes, the seconds they took to write, the seconds the node waited for them),
    /// so that the caller can log it.
    pub fn set_storage_totals(&self, stats: &timecoin_storage::StoreStats) -> (u64, f64, f64) {
        let flushes = stats.flushes.saturating_sub(self.storage_flushes.get());
        self.storage_flushes.inc_by(flushes);
        let seconds =
            (stats.flush_duration.as_secs_f64() - self.storage_flush_seconds.get()).max(0.0);
        self.storage_flush_seconds.inc_by(seconds);
        let waited = (stats.flush_wait_duration.as_secs_f64()
            - self.storage_flush_wait_seconds.get())
        .max(0.0);
        self.storage_flush_wait_seconds.inc_by(waited);
        self.storage_cached_utxos
            .set(i64::try_from(stats.cached_utxos).unwrap_or(i64::MAX));
        (flushes, seconds, waited)
    }

    /// Copies the network's running totals into the counters (they only move forward).
    pub fn set_network_totals(&self, stats: &timecoin_network::NetworkStats) {
        for (counter, total) in [
            (&self.p2p_messages_rejected, stats.messages_rejected),
            (&self.p2p_events_dropped, stats.events_dropped),
            (&self.p2p_bytes_received, stats.bytes_in),
            (&self.p2p_bytes_sent, stats.bytes_out),
            (&self.p2p_repeats_sent_direct, stats.repeats_sent_direct),
        ] {
            counter.inc_by(total.saturating_sub(counter.get()));
        }
    }

    /// All metrics at zero, registered under the `timecoin` prefix.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("timecoin");
        let metrics = Metrics {
            mempool_transactions: Gauge::default(),
            mempool_bytes: Gauge::default(),
            mempool_admission_limit: Gauge::default(),
            mempool_refused_busy: Counter::default(),
            chain_height: Gauge::default(),
            finalized_transactions: Counter::default(),
            finality_latency_seconds: Histogram::new(latency_buckets()),
            consensus_view: Gauge::default(),
            view_changes: Counter::default(),
            blocks_committed: Counter::default(),
            peers: Family::default(),
            banned_peers: Gauge::default(),
            p2p_messages_rejected: Counter::default(),
            p2p_events_dropped: Counter::default(),
            p2p_bytes_received: Counter::default(),
            p2p_bytes_sent: Counter::default(),
            p2p_repeats_sent_direct: Counter::default(),
            active_masternodes: Gauge::default(),
            committee_weight: Gauge::default(),
            sync_target_height: Gauge::default(),
            sync_blocks_per_second: Gauge::default(),
            sync_in_progress: Gauge::default(),
            rpc_requests: Family::default(),
            storage_commit_seconds: storage_commit_histogram(),
            node_step_seconds: Histogram::new(storage_buckets()),
            storage_flushes: Counter::default(),
            storage_flush_seconds: Counter::default(),
            storage_flush_wait_seconds: Counter::default(),
            storage_cached_utxos: Gauge::default(),
            storage_disk_bytes: Gauge::default(),
            sync: Mutex::new(Default::default()),
            created: Instant::now(),
            registry: Registry::default(),
        };
        registry.register(
            "mempool_transactions",
            "Transactions in the mempool",
            metrics.mempool_transactions.clone(),
        );
        registry.register(
            "mempool_bytes",
            "Bytes of transactions in the mempool",
            metrics.mempool_bytes.clone(),
        );
        registry.register(
            "mempool_admission_limit",
            "Transactions that may be collecting votes for a client's to be taken; -1: no limit",
            metrics.mempool_admission_limit.clone(),
        );
        registry.register(
            "mempool_refused_busy",
            "Client transactions refused because too many were waiting for finality",
            metrics.mempool_refused_busy.clone(),
        );
        registry.register(
            "chain_height",
            "Height of the chain tip",
            metrics.chain_height.clone(),
        );
        registry.register(
            "finalized_transactions",
            "Transactions that reached a finality certificate",
            metrics.finalized_transactions.clone(),
        );
        registry.register(
            "finality_latency_seconds",
            "Time from first sight of a transaction to its finality certificate",
            metrics.finality_latency_seconds.clone(),
        );
        registry.register(
            "consensus_view",
            "Current consensus view at the tip height",
            metrics.consensus_view.clone(),
        );
        registry.register(
            "view_changes",
            "View changes since start",
            metrics.view_changes.clone(),
        );
        registry.register(
            "blocks_committed",
            "Blocks committed since start",
            metrics.blocks_committed.clone(),
        );
        registry.register(
            "peers",
            "Connected peers by direction",
            metrics.peers.clone(),
        );
        registry.register(
            "banned_peers",
            "Peers currently banned",
            metrics.banned_peers.clone(),
        );
        registry.register(
            "p2p_messages_rejected",
            "Gossip messages and requests dropped for breaking a rate or size limit",
            metrics.p2p_messages_rejected.clone(),
        );
        registry.register(
            "p2p_events_dropped",
            "Network events dropped because the node's queue was full",
            metrics.p2p_events_dropped.clone(),
        );
        registry.register(
            "p2p_bytes_received",
            "Raw bytes received on all peer connections",
            metrics.p2p_bytes_received.clone(),
        );
        registry.register(
            "p2p_bytes_sent",
            "Raw bytes sent on all peer connections",
            metrics.p2p_bytes_sent.clone(),
        );
        registry.register(
            "p2p_repeats_sent_direct",
            "Tip heartbeats gossip had seen within its duplicate window (another node announced the same tip first), sent to each peer directly",
            metrics.p2p_repeats_sent_direct.clone(),
        );
        registry.register(
            "active_masternodes",
            "Masternodes in the current committee",
            metrics.active_masternodes.clone(),
        );
        registry.register(
            "committee_weight",
            "Total voting weight of the current committee",
            metrics.committee_weight.clone(),
        );
        registry.register(
            "sync_target_height",
            "Best chain height known to exist (highest tip announced by a peer, at least our own)",
            metrics.sync_target_height.clone(),
        );
        registry.register(
            "sync_blocks_per_second",
            "Blocks committed per second, averaged over the last 10 seconds",
            metrics.sync_blocks_per_second.clone(),
        );
        registry.register(
            "sync_in_progress",
            "1 while a peer is more than one block ahead of this node, else 0",
            metrics.sync_in_progress.clone(),
        );
        registry.register(
            "rpc_requests",
            "RPC requests by method and outcome",
            metrics.rpc_requests.clone(),
        );
        registry.register(
            "storage_commit_seconds",
            "Time of each durable storage write (blocks, consensus records, group-commit syncs)",
            metrics.storage_commit_seconds.clone(),
        );
        registry.register(
            "node_step_seconds",
            "Time the node takes to handle one batch of inputs (one step)",
            metrics.node_step_seconds.clone(),
        );
        registry.register(
            "storage_flushes",
            "Flushes of the UTXO write-back cache to the database",
            metrics.storage_flushes.clone(),
        );
        registry.register(
            "storage_flush_seconds",
            "Seconds the UTXO write-back cache's flushes took to write (on a background thread)",
            metrics.storage_flush_seconds.clone(),
        );
        registry.register(
            "storage_flush_wait_seconds",
            "Seconds the node waited for a UTXO cache flush to finish (the flushing that stalls it)",
            metrics.storage_flush_wait_seconds.clone(),
        );
        registry.register(
            "storage_cached_utxos",
            "UTXO changes waiting in the write-back cache",
            metrics.storage_cached_utxos.clone(),
        );
        registry.register(
            "storage_disk_bytes",
            "Bytes the chain database's files take on disk (chain file, UTXO file, UTXO log)",
            metrics.storage_disk_bytes.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }

    /// Feeds the sync tracker the tip `height` and best known `target` now, publishes the
    /// figures (gauges and the copy RPC reads) and returns them with the log line due.
    pub fn observe_sync(&self, height: u64, target: u64) -> (SyncReport, Option<SyncLog>) {
        let at_ms = u64::try_from(self.created.elapsed().as_millis()).unwrap_or(u64::MAX);
        let mut sync = self.sync.lock().unwrap_or_else(|e| e.into_inner());
        let (report, log) = sync.0.observe(at_ms, height, target);
        sync.1 = report;
        self.sync_target_height
            .set(i64::try_from(report.target_height).unwrap_or(i64::MAX));
        self.sync_blocks_per_second.set(report.blocks_per_second);
        self.sync_in_progress.set(i64::from(report.behind));
        (report, log)
    }

    /// The sync figures last observed (all zero before the first observation).
    pub fn sync(&self) -> SyncReport {
        self.sync.lock().unwrap_or_else(|e| e.into_inner()).1
    }

    /// Counts one RPC request.
    pub fn record_rpc(&self, method: &str, ok: bool) {
        let labels = RpcLabels {
            method: method.to_string(),
            status: if ok { "ok" } else { "error" }.to_string(),
        };
        self.rpc_requests.get_or_create(&labels).inc();
    }

    /// Sets the peer gauges.
    pub fn set_peers(&self, inbound: i64, outbound: i64) {
        self.peers
            .get_or_create(&DirectionLabels {
                direction: "inbound".into(),
            })
            .set(inbound);
        self.peers
            .get_or_create(&DirectionLabels {
                direction: "outbound".into(),
            })
            .set(outbound);
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

/// How far back the block rate is averaged.
pub const SYNC_RATE_WINDOW_MS: u64 = 10_000;
/// Most rate samples kept, whatever the refresh frequency.
pub const MAX_SYNC_SAMPLES: usize = 64;
/// A peer this many blocks ahead does not make us "behind": a peer that committed a moment
/// earlier is normally one block ahead.
pub const SYNC_SLACK_BLOCKS: u64 = 1;
/// How often the "syncing" log line repeats while behind.
pub const SYNC_LOG_INTERVAL_MS: u64 = 5_000;

/// Whether a node at `height` is behind the best known height `target` (more than
/// [`SYNC_SLACK_BLOCKS`] below it).
pub fn is_behind(height: u64, target: u64) -> bool {
    target > height.saturating_add(SYNC_SLACK_BLOCKS)
}

/// `/ready`'s `synced`: at least one peer connected and none known to be more than
/// [`SYNC_SLACK_BLOCKS`] ahead. With no peer, nothing says the chain has not moved on.
pub fn is_synced(height: u64, target: u64, peers: usize) -> bool {
    peers > 0 && !is_behind(height, target)
}

/// Seconds until `height` reaches `target` when the gap closes at `closing_blocks_per_second`:
/// 0 when already there, `None` when the gap is not closing (or the rate is unknown).
pub fn eta_seconds(height: u64, target: u64, closing_blocks_per_second: f64) -> Option<f64> {
    let remaining = target.saturating_sub(height);
    if remaining == 0 {
        return Some(0.0);
    }
    (closing_blocks_per_second.is_finite() && closing_blocks_per_second > 0.0)
        .then(|| remaining as f64 / closing_blocks_per_second)
}

/// Bitcoin Core's `verificationprogress`, in blocks: `height / target`, 1 when there is nothing
/// to fetch.
pub fn verification_progress(height: u64, target: u64) -> f64 {
    if target == 0 || height >= target {
        1.0
    } else {
        height as f64 / target as f64
    }
}

/// The sync figures at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SyncReport {
    /// Our committed tip.
    pub height: u64,
    /// The best height known to exist.
    pub target_height: u64,
    /// Blocks committed per second over the window.
    pub blocks_per_second: f64,
    /// How fast the gap to the target shrinks: our rate minus the target's (the chain keeps
    /// growing while we catch up).
    pub closing_blocks_per_second: f64,
    /// Seconds until caught up at that pace; `None` while the gap is not closing.
    pub eta_seconds: Option<f64>,
    /// Whether we are behind ([`is_behind`]).
    pub behind: bool,
}

/// What the daemon should log after an observation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncLog {
    /// A progress line: behind, and the last line is [`SYNC_LOG_INTERVAL_MS`] old (or this is
    /// the first).
    Syncing,
    /// The node was behind and no longer is.
    CaughtUp,
}

/// Block rate, ETA and log pacing from periodic observations of (time, height, target). Pure:
/// the caller supplies the time, so tests need no clock.
#[derive(Clone, Debug, Default)]
pub struct SyncTracker {
    /// (milliseconds, height, target), oldest first, spanning at most the window.
    samples: VecDeque<(u64, u64, u64)>,
    behind: bool,
    last_log_ms: Option<u64>,
}

impl SyncTracker {
    /// Records an observation at `at_ms` (any monotonic origin) and returns the figures, with
    /// the log line due, if any.
    pub fn observe(
        &mut self,
        at_ms: u64,
        height: u64,
        target: u64,
    ) -> (SyncReport, Option<SyncLog>) {
        let target = target.max(height);
        let behind = is_behind(height, target);
        let went_back = self
            .samples
            .back()
            .is_some_and(|&(at, h, _)| at_ms < at || height < h);
        if went_back {
            self.samples.clear();
        }
        // Falling behind usually means peers just announced their tips: that jump of the target
        // is news, not a rate the chain grows at, so the window's earlier samples take the
        // current target (our own heights in them still measure how fast we commit).
        if behind && !self.behind {
            for sample in &mut self.samples {
                sample.2 = target;
            }
        }
        self.samples.push_back((at_ms, height, target));
        while self.samples.len() > MAX_SYNC_SAMPLES
            || self
                .samples
                .front()
                .is_some_and(|&(at, _, _)| at_ms - at > SYNC_RATE_WINDOW_MS)
        {
            self.samples.pop_front();
        }
        let (blocks_per_second, target_per_second) =
            match (self.samples.front(), self.samples.back()) {
                (Some(&(t0, h0, g0)), Some(&(t1, h1, g1))) if t1 > t0 => {
                    let seconds = (t1 - t0) as f64 / 1000.0;
                    (
                        (h1 - h0) as f64 / seconds,
                        g1.saturating_sub(g0) as f64 / seconds,
                    )
                }
                _ => (0.0, 0.0),
            };
        let closing = blocks_per_second - target_per_second;
        let log = if behind {
            let due = self.last_log_ms.is_none_or(|last| {
                !self.behind || at_ms.saturating_sub(last) >= SYNC_LOG_INTERVAL_MS
            });
            if due {
                self.last_log_ms = Some(at_ms);
            }
            due.then_some(SyncLog::Syncing)
        } else {
            self.behind.then_some(SyncLog::CaughtUp)
        };
        self.behind = behind;
        let report = SyncReport {
            height,
            target_height: target,
            blocks_per_second,
            closing_blocks_per_second: closing,
            // Within the slack there is nothing to catch up on, whatever the rates say.
            eta_seconds: if behind {
                eta_seconds(height, target, closing)
            } else {
                Some(0.0)
            },
            behind,
        };
        (report, log)
    }
}

/// What `/ready` reports: whether the node is synced and connected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Readiness {
    /// At least one peer is connected and none is known to be more than
    /// [`SYNC_SLACK_BLOCKS`] ahead ([`is_synced`]).
    pub synced: bool,
    /// Connected peers.
    pub peers: usize,
    /// The tip height.
    pub height: u64,
}

/// Serves `/metrics`, `/health` and `/ready` on `listener` until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    readiness: watch::Receiver<Readiness>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    tracing::warn!(%error, "metrics endpoint: accept failed");
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let metrics = metrics.clone();
        let readiness = readiness.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let response = respond(&request, &metrics, *readiness.borrow());
                async move { Ok::<_, Infallible>(response) }
            });
            // One scrape per connection is the norm; errors are the client's business.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn respond(
    request: &Request<Incoming>,
    metrics: &Metrics,
    readiness: Readiness,
) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, content_type: &str, body: String| {
        Response::builder()
            .status(status)
            .header("content-type", content_type)
            .body(Full::new(Bytes::from(body)))
            .expect("static headers are valid")
    };
    if request.method() != Method::GET {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        );
    }
    match request.uri().path() {
        "/metrics" => reply(StatusCode::OK, OPENMETRICS_CONTENT_TYPE, metrics.encode()),
        "/health" => reply(
            StatusCode::OK,
            "application/json",
            json!({"status": "alive"}).to_string(),
        ),
        "/ready" => {
            let ready = readiness.synced && readiness.peers > 0;
            let status = if ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            let body = json!({
                "ready": ready,
                "synced": readiness.synced,
                "peers": readiness.peers,
                "height": readiness.height,
            });
            reply(status, "application/json", body.to_string())
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "try /metrics, /health or /ready\n".into(),
        ),
    }
}

/// Binds the metrics endpoint, so that a taken port is reported at start rather than later.
pub async fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(address).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn storage_totals_move_forward_and_report_what_is_new() {
        let metrics = Metrics::new();
        let mut stats = timecoin_storage::StoreStats {
            flushes: 2,
            flush_duration: std::time::Duration::from_millis(3_500),
            flush_wait_duration: std::time::Duration::from_millis(250),
            cached_utxos: 40,
            ..Default::default()
        };
        let (flushes, seconds, waited) = metrics.set_storage_totals(&stats);
        assert_eq!(flushes, 2);
        assert!((seconds - 3.5).abs() < 1e-9, "{seconds}");
        assert!((waited - 0.25).abs() < 1e-9, "{waited}");
        stats.flushes = 3;
        stats.flush_duration = std::time::Duration::from_millis(4_000);
        stats.cached_utxos = 0;
        let (flushes, seconds, waited) = metrics.set_storage_totals(&stats);
        assert_eq!(flushes, 1);
        assert!((seconds - 0.5).abs() < 1e-9, "{seconds}");
        assert_eq!(waited, 0.0);
        assert_eq!(metrics.set_storage_totals(&stats), (0, 0.0, 0.0));
        let text = metrics.encode();
        assert!(text.contains("timecoin_storage_flushes_total 3"), "{text}");
        assert!(
            text.contains("timecoin_storage_flush_seconds_total 4.0"),
            "{text}"
        );
        assert!(text.contains("timecoin_storage_cached_utxos 0"), "{text}");
    }

    #[test]
    fn encodes_every_metric() {
        let metrics = Metrics::new();
        metrics.chain_height.set(42);
        metrics.record_rpc("getblockcount", true);
        metrics.set_peers(2, 3);
        metrics.finality_latency_seconds.observe(0.03);
        let text = metrics.encode();
        assert!(text.contains("timecoin_chain_height 42"), "{text}");
        assert!(
            text.contains("timecoin_rpc_requests_total{method=\"getblockcount\",status=\"ok\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("timecoin_peers{direction=\"outbound\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("timecoin_finality_latency_seconds_bucket{le=\"0.05\"} 1"),
            "{text}"
        );
        assert!(text.trim_end().ends_with("# EOF"));
    }

    #[test]
    fn behind_and_synced_allow_one_block_of_slack() {
        assert!(!is_behind(10, 10));
        assert!(!is_behind(10, 11));
        assert!(is_behind(10, 12));
        assert!(!is_behind(u64::MAX, u64::MAX));
        assert!(is_synced(10, 11, 1));
        assert!(!is_synced(10, 12, 3), "a peer two blocks ahead");
        assert!(!is_synced(10, 10, 0), "no peer at all");
    }

    #[test]
    fn eta_and_progress() {
        assert_eq!(eta_seconds(10, 110, 20.0), Some(5.0));
        assert_eq!(eta_seconds(110, 110, 0.0), Some(0.0));
        assert_eq!(eta_seconds(10, 110, 0.0), None);
        assert_eq!(eta_seconds(10, 110, -3.0), None, "falling further behind");
        assert_eq!(eta_seconds(10, 110, f64::NAN), None);
        assert_eq!(eta_seconds(10, 110, f64::INFINITY), None);
        assert_eq!(verification_progress(0, 0), 1.0);
        assert_eq!(verification_progress(50, 100), 0.5);
        assert_eq!(verification_progress(100, 90), 1.0);
    }

    #[test]
    fn tracker_reports_rate_eta_and_paces_its_log_lines() {
        let mut tracker = SyncTracker::default();
        let (report, log) = tracker.observe(0, 100, 100);
        assert!(!report.behind && log.is_none());
        assert_eq!(report.eta_seconds, Some(0.0));
        // Peers announce 400 while we commit 50 blocks/s: behind, one line at once, and the
        // target's jump is not taken for growth.
        let (report, log) = tracker.observe(1_000, 150, 400);
        assert_eq!(log, Some(SyncLog::Syncing));
        assert!(report.behind && report.target_height == 400);
        assert_eq!(report.blocks_per_second, 50.0);
        assert_eq!(report.closing_blocks_per_second, 50.0);
        assert_eq!(report.eta_seconds, Some(5.0));
        // 100 blocks in two seconds while the target grew by 2: the gap closes at 49 blocks/s.
        let (report, log) = tracker.observe(2_000, 200, 402);
        assert_eq!(log, None, "the next line is due 5 s after the first");
        assert_eq!(report.blocks_per_second, 50.0);
        assert_eq!(report.closing_blocks_per_second, 49.0);
        assert_eq!(report.eta_seconds, Some(202.0 / 49.0));
        let (_, log) = tracker.observe(5_000, 350, 408);
        assert_eq!(log, None);
        let (report, log) = tracker.observe(6_000, 400, 410);
        assert_eq!(log, Some(SyncLog::Syncing));
        assert_eq!(report.blocks_per_second, 50.0);
        // A target that outruns us: no ETA rather than a wrong one.
        let mut stalled = tracker.clone();
        let (report, _) = stalled.observe(7_000, 400, 1_000);
        assert!(report.closing_blocks_per_second < 0.0);
        assert_eq!(report.eta_seconds, None);
        // One block short is caught up (the slack); the line says so once.
        let (report, log) = tracker.observe(7_000, 409, 410);
        assert_eq!(log, Some(SyncLog::CaughtUp));
        assert!(!report.behind);
        assert_eq!(report.eta_seconds, Some(0.0));
        assert_eq!(tracker.observe(8_000, 410, 410).1, None);
    }

    #[test]
    fn tracker_rate_covers_only_the_window_and_survives_a_clock_step_back() {
        let mut tracker = SyncTracker::default();
        let mut height = 0;
        // 10 blocks/s for 10 s, then 20 blocks/s for 10 s; never behind.
        for second in 1..=20u64 {
            height += if second <= 10 { 10 } else { 20 };
            tracker.observe(second * 1_000, height, height);
        }
        let (report, _) = tracker.observe(20_000, height, height);
        assert_eq!(report.blocks_per_second, 20.0);
        // The clock stepped back: start over instead of computing a negative span.
        let (report, _) = tracker.observe(5_000, height + 1, height + 1);
        assert_eq!(report.blocks_per_second, 0.0);
        let (report, _) = tracker.observe(6_000, height + 3, height + 3);
        assert_eq!(report.blocks_per_second, 2.0);
    }

    #[test]
    fn sync_figures_reach_the_gauges_and_rpc() {
        let metrics = Metrics::new();
        assert_eq!(metrics.sync(), SyncReport::default());
        let (report, log) = metrics.observe_sync(100, 400);
        assert_eq!(log, Some(SyncLog::Syncing));
        assert!(report.behind && report.height == 100 && report.target_height == 400);
        let text = metrics.encode();
        assert!(text.contains("timecoin_sync_target_height 400"), "{text}");
        assert!(
            text.contains("timecoin_sync_blocks_per_second 0.0"),
            "{text}"
        );
        assert!(text.contains("timecoin_sync_in_progress 1"), "{text}");
        assert_eq!(metrics.sync(), report);
        let (_, log) = metrics.observe_sync(400, 400);
        assert_eq!(log, Some(SyncLog::CaughtUp));
        assert!(metrics.encode().contains("timecoin_sync_in_progress 0"));
    }

    async fn get(address: SocketAddr, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes(),
            )
            .await
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    }

    #[tokio::test]
    async fn serves_metrics_health_and_ready() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let address = listener.local_addr().unwrap();
        let metrics = Arc::new(Metrics::new());
        metrics.chain_height.set(7);
        let (ready_tx, ready_rx) = watch::channel(Readiness::default());
        let (stop_tx, stop_rx) = watch::channel(false);
        let server = tokio::spawn(serve(listener, metrics, ready_rx, stop_rx));

        let response = get(address, "/metrics").await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.contains(OPENMETRICS_CONTENT_TYPE));
        assert!(response.contains("timecoin_chain_height 7"));
        assert!(get(address, "/health").await.contains("\"alive\""));
        let not_ready = get(address, "/ready").await;
        assert!(not_ready.starts_with("HTTP/1.1 503"), "{not_ready}");
        ready_tx
            .send(Readiness {
                synced: true,
                peers: 3,
                height: 7,
            })
            .unwrap();
        let ready = get(address, "/ready").await;
        assert!(
            ready.starts_with("HTTP/1.1 200") && ready.contains("\"ready\":true"),
            "{ready}"
        );
        assert!(get(address, "/nope").await.starts_with("HTTP/1.1 404"));

        stop_tx.send(true).unwrap();
        server.await.unwrap();
    }
}
