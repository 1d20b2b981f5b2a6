//! Sync progress is visible (issue 5): a node that joins a running devnet late reports, while it
//! catches up, a target above its height through RPC (`getblockchaininfo`), INFO log lines
//! with height, target, rate and ETA, and then "caught up" in the log, the metrics and `/ready`.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{Devnet, serial};
use serde_json::{Value, json};

/// `GET path` on the metrics port: (status code, body).
fn http_get(address: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The value of an unlabelled sample in metrics text.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

fn full_log(net: &Devnet, i: usize) -> String {
    std::fs::read_to_string(net.data_dir(i).join("timed.log")).unwrap_or_default()
}

fn eventually(what: &str, within: Duration, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_late_joiner_reports_its_sync_progress_then_caught_up() {
    let _serial = serial();
    let mut net = Devnet::start(4, 100);
    net.wait_height(200, Duration::from_secs(150));
    let late = net.add_node();
    let tip = net.height(0);
    net.restart(late);

    // Poll RPC while it catches up; every answer must be self-consistent.
    let mut behind_seen: Option<Value> = None;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let info = net.rpc(late, "getblockchaininfo", json!([])).unwrap();
        let blocks = info["blocks"].as_u64().unwrap();
        let headers = info["headers"].as_u64().unwrap();
        let progress = info["verificationprogress"].as_f64().unwrap();
        assert!(headers >= blocks, "{info}");
        assert_eq!(info["sync"]["target_height"], json!(headers), "{info}");
        assert!((0.0..=1.0).contains(&progress), "{info}");
        if info["initialblockdownload"] == json!(true) {
            assert!(headers > blocks + 1 && progress < 1.0, "{info}");
            let eta = &info["sync"]["eta_seconds"];
            assert!(eta.is_null() || eta.as_u64().is_some(), "{info}");
            behind_seen.get_or_insert_with(|| info.clone());
        } else if blocks >= tip {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the late node did not catch up: {info}\n{}",
            net.log(late)
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // The log tells the same story: progress lines while behind, then one "caught up".
    let progress_line = |log: &str| {
        log.lines()
            .find(|line| line.contains(" syncing ") && line.contains("target="))
            .map(str::to_string)
    };
    let log = full_log(&net, late);
    // A fast catch-up (200 blocks in 10 ms on CI) can slip between two RPC polls, but not past
    // the log: the daemon logs the moment it learns it is behind.
    let Some(line) = progress_line(&log) else {
        panic!(
            "the log never showed the late node behind (it synced {tip} blocks)\n{}",
            net.log(late)
        );
    };
    for field in ["height=", "target=", "blocks_per_s="] {
        assert!(line.contains(field), "{field} in {line}");
    }
    eventually(
        "the log says sync caught up",
        Duration::from_secs(10),
        || full_log(&net, late).contains("sync caught up"),
    );
    if let Some(info) = &behind_seen {
        println!("while syncing: {info}");
    }
    for line in full_log(&net, late)
        .lines()
        .filter(|line| line.contains(" syncing ") || line.contains("sync caught up"))
    {
        println!("{line}");
    }

    // Metrics and readiness agree once caught up (refreshed once a second).
    let metrics = net.metrics_address(late);
    eventually(
        "metrics show the late node caught up and /ready answers 200",
        Duration::from_secs(15),
        || {
            let (status, text) = http_get(metrics, "/metrics");
            let height = sample(&text, "timecoin_chain_height").unwrap_or(0.0);
            let target = sample(&text, "timecoin_sync_target_height").unwrap_or(0.0);
            status == 200
                && sample(&text, "timecoin_sync_in_progress") == Some(0.0)
                && target >= tip as f64
                && target >= height
                && http_get(metrics, "/ready").0 == 200
        },
    );
    let (_, text) = http_get(metrics, "/metrics");
    let commits = sample(&text, "timecoin_storage_commit_seconds_count").unwrap();
    let disk = sample(&text, "timecoin_storage_disk_bytes").unwrap();
    assert!(
        disk > 0.0,
        "the database's size on disk is reported: {disk}"
    );
    assert!(
        commits >= tip as f64,
        "every synced block is a durable commit: {commits} observed for {tip} blocks"
    );
    let (_, ready) = http_get(metrics, "/ready");
    let ready: Value = serde_json::from_str(&ready).unwrap();
    assert_eq!(ready["synced"], json!(true), "{ready}");
}
