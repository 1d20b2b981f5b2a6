//! Prometheus metrics, and the HTTP endpoint that serves them with `/health` and `/ready`.
//!
//! The metrics library (prometheus-client) writes the OpenMetrics text format, so `/metrics` is
//! served with the OpenMetrics content type; Prometheus negotiates it, and a scraper that asks for
//! the classic format still parses it. (Served as classic text, its `# EOF` and `_total`
//! conventions make `promtool check metrics` complain.)

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

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
    /// Masternodes in the current committee.
    pub active_masternodes: Gauge,
    /// Their total voting weight.
    pub committee_weight: Gauge,
    /// The height sync is heading for (equal to the tip when synced).
    pub sync_target_height: Gauge,
    /// RPC requests by method and outcome.
    pub rpc_requests: Family<RpcLabels, Counter>,
    /// Seconds to commit a block to storage.
    pub storage_commit_seconds: Histogram,
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
    /// All metrics at zero, registered under the `timecoin` prefix.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("timecoin");
        let metrics = Metrics {
            mempool_transactions: Gauge::default(),
            mempool_bytes: Gauge::default(),
            chain_height: Gauge::default(),
            finalized_transactions: Counter::default(),
            finality_latency_seconds: Histogram::new(latency_buckets()),
            consensus_view: Gauge::default(),
            view_changes: Counter::default(),
            blocks_committed: Counter::default(),
            peers: Family::default(),
            banned_peers: Gauge::default(),
            active_masternodes: Gauge::default(),
            committee_weight: Gauge::default(),
            sync_target_height: Gauge::default(),
            rpc_requests: Family::default(),
            storage_commit_seconds: Histogram::new(latency_buckets()),
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
            "Height sync is heading for",
            metrics.sync_target_height.clone(),
        );
        registry.register(
            "rpc_requests",
            "RPC requests by method and outcome",
            metrics.rpc_requests.clone(),
        );
        registry.register(
            "storage_commit_seconds",
            "Time to commit a block to storage",
            metrics.storage_commit_seconds.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
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

/// What `/ready` reports: whether the node is synced and connected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Readiness {
    /// The tip has reached the best height any peer announced.
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
