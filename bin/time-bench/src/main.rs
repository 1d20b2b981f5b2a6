//! `time-bench`: start or attach to a devnet, fund senders, submit payments open loop, report.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use rayon::prelude::*;
use serde_json::json;
use time_bench::devnet::Devnet;
use time_bench::load::RunConfig;
use time_bench::report::{BlockStats, Machine, NodeStats, Report, RunReport};
use time_bench::stats::Summary;
use time_bench::{ceiling, fund, load, plan, procfs, report, txgen};
use timecoin_primitives::Network;

/// End-to-end load generator for a TimeCoin devnet.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Attach to the running devnet in this directory (started by `timed devnet --dir DIR`).
    #[arg(long, value_name = "DIR")]
    attach: Option<PathBuf>,
    /// Otherwise start one here (created if new; a fresh temporary directory by default).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Masternodes of a new devnet.
    #[arg(long, default_value_t = 4)]
    nodes: usize,
    /// First port of a new devnet (node i uses base + 3i .. + 2). Below Linux's ephemeral range
    /// (32768 and up), where an outgoing connection may hold the port a node wants to bind.
    #[arg(long, default_value_t = 26100)]
    base_port: u16,
    /// Block interval of a new devnet, in ms.
    #[arg(long, default_value_t = 1000)]
    block_interval_ms: u64,
    /// The `timed` executable (default: next to this one).
    #[arg(long)]
    timed: Option<PathBuf>,
    /// For a devnet this bench starts: `messages_per_second_per_peer` in each node's config (0,
    /// the default, keeps the file's: 100). Nodes pace their relays (one merged round per 40 ms),
    /// so honest traffic stays inside the default limit; raise it only to study the limit.
    #[arg(long, default_value_t = 0)]
    peer_message_rate: u32,
    /// For a devnet this bench starts: run the nodes without the address index
    /// (`storage.address_index = false`), as masternodes that serve no wallet can. It halves the
    /// work of writing the UTXO set. Nodes of an existing `--dir` that kept the index drop it
    /// when they start (the setting then stays in their config files).
    #[arg(long)]
    no_address_index: bool,
    /// For a devnet this bench starts: `busy_backlog_ms` in each node's config (ADR 0026): a
    /// node refuses clients as busy while more payments wait for finality than the network
    /// finalized in this many ms of the last second. 0 turns the limit off; unset keeps the
    /// file's (default 250).
    #[arg(long)]
    busy_backlog_ms: Option<u64>,
    /// Leave the nodes this bench started running at the end.
    #[arg(long)]
    keep: bool,
    /// Offered rates in payments per second; one run each (repeat or comma-separate).
    #[arg(long, value_delimiter = ',', default_values_t = vec![500.0])]
    rate: Vec<f64>,
    /// Seconds of sending per run.
    #[arg(long, default_value_t = 20.0)]
    duration: f64,
    /// Raise the rate from --sweep-start by --sweep-factor until p99 > 1 s or losses.
    #[arg(long)]
    sweep: bool,
    /// First sweep rate.
    #[arg(long, default_value_t = 250.0)]
    sweep_start: f64,
    /// Factor between sweep rates.
    #[arg(long, default_value_t = 1.5)]
    sweep_factor: f64,
    /// Highest sweep rate.
    #[arg(long, default_value_t = 20000.0)]
    sweep_max: f64,
    /// Seconds of sending per sweep step.
    #[arg(long, default_value_t = 10.0)]
    sweep_duration: f64,
    /// Sender identities (two keys each).
    #[arg(long, default_value_t = 64)]
    senders: usize,
    /// Most payments per sendrawtransaction batch.
    #[arg(long, default_value_t = 200)]
    batch: usize,
    /// Submitting connections per node.
    #[arg(long, default_value_t = 2)]
    connections: usize,
    /// How to learn that a payment is final: `feed` follows each node's `waitforfinalized`
    /// (one call reports many payments, each as soon as the node has it), `poll` asks
    /// `gettxfinality` about every payment in flight every --poll-ms
    #[arg(long, value_enum, default_value_t = load::Finality::Feed)]
    finality: load::Finality,
    /// Milliseconds between finality polls of a node (with --finality poll; with the feed, the
    /// pause after a failed call)
    #[arg(long, default_value_t = 10)]
    poll_ms: u64,
    /// Seconds after the schedule to keep sending what is late.
    #[arg(long, default_value_t = 5.0)]
    send_grace: f64,
    /// Seconds after the schedule to wait for certificates.
    #[arg(long, default_value_t = 15.0)]
    drain: f64,
    /// Write the JSON report here.
    #[arg(long, default_value = "time-bench.json")]
    json: PathBuf,
    /// Skip the ceiling measurement.
    #[arg(long)]
    no_ceiling: bool,
    /// No progress line.
    #[arg(long)]
    quiet: bool,
    /// Before the runs, create this many extra unspent outputs (fan-outs to keys the runs never
    /// spend), so the runs measure nodes holding a large UTXO set: `--utxos 1000000`.
    #[arg(long, default_value_t = 0)]
    utxos: usize,
}

/// Owners of the `--utxos` outputs (two keys each): spread over many addresses, as a real
/// UTXO set is, rather than a million entries under one address.
const UTXO_OWNERS: usize = 500;
/// Units in each `--utxos` output.
const UTXO_UNITS: u64 = 1_000;

/// Units in each funded coin, and paid by each payment: small against the wallet, large
/// against fees.
const COIN_UNITS: u64 = 1_000_000;
const PAY_UNITS: u64 = 100_000;

/// Longest wait for the nodes' UTXO flushes before a run (the run starts anyway after it).
const SETTLE_LIMIT: Duration = Duration::from_secs(60);

fn main() {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    match runtime.block_on(bench(args)) {
        Ok(()) => {}
        Err(e) => {
            eprintln!("time-bench: {e}");
            std::process::exit(1);
        }
    }
}

/// The config settings `args` asks of the nodes this bench starts.
fn settings(args: &Args) -> Vec<(&'static str, String)> {
    let mut settings = Vec::new();
    if args.peer_message_rate > 0 {
        settings.push((
            "messages_per_second_per_peer",
            args.peer_message_rate.to_string(),
        ));
    }
    if args.no_address_index {
        settings.push(("address_index", "false".to_string()));
    }
    if let Some(ms) = args.busy_backlog_ms {
        settings.push(("busy_backlog_ms", ms.to_string()));
    }
    settings
}

async fn bench(args: Args) -> Result<(), String> {
    let network = Network::Devnet;
    let mut devnet = match &args.attach {
        Some(dir) => Devnet::attach(dir)?,
        None => {
            let dir = args.dir.clone().unwrap_or_else(|| {
                std::env::temp_dir().join(format!("time-bench-{}", std::process::id()))
            });
            let exe = match &args.timed {
                Some(p) => p.clone(),
                None => std::env::current_exe()
                    .map_err(|e| e.to_string())?
                    .with_file_name("timed"),
            };
            eprintln!("starting {} masternodes in {}", args.nodes, dir.display());
            Devnet::start(
                &timed::devnet::DevnetOptions {
                    dir,
                    nodes: args.nodes,
                    base_port: args.base_port,
                    block_interval_ms: args.block_interval_ms,
                },
                &exe,
                &settings(&args),
            )?
        }
    };
    // Stopped by a signal (Ctrl-C, `kill`, a CI timeout), the bench still stops the nodes it
    // started: left running, they would hold the ports the next run needs.
    let result = tokio::select! {
        result = async {
            devnet.wait_ready(1, Duration::from_secs(90)).await?;
            measure(&args, &devnet, network).await
        } => result,
        signal = stop_signal() => Err(format!("stopped by {signal}")),
    };
    if !args.keep && !devnet.children.is_empty() {
        eprintln!("stopping the nodes");
        devnet.stop();
    }
    let report = result?;
    let text = serde_json::to_string_pretty(&report).expect("serialises");
    std::fs::write(&args.json, text)
        .map_err(|e| format!("cannot write {}: {e}", args.json.display()))?;
    println!("{}", report::table(&report));
    println!("JSON report: {}", args.json.display());
    Ok(())
}

/// Waits for SIGINT or SIGTERM and names it.
async fn stop_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut interrupt), Ok(mut terminate)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        // Without handlers the default actions stay in place; never resolve.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = interrupt.recv() => "SIGINT",
        _ = terminate.recv() => "SIGTERM",
    }
}

async fn measure(args: &Args, devnet: &Devnet, network: Network) -> Result<Report, String> {
    for (i, pid) in devnet.pids.iter().enumerate() {
        if pid.is_none() {
            eprintln!("warning: node {i}'s process not found; no CPU or memory figures for it");
        }
    }
    let mut report = Report {
        machine: Machine {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu: procfs::cpu_model(),
            loadavg_before: procfs::loadavg(),
            loadavg_after: String::new(),
        },
        nodes: devnet.len(),
        senders: args.senders,
        finality: Some(args.finality),
        ..Default::default()
    };
    let fee_rate =
        devnet.client(0)?.call("getmempoolinfo", json!([])).await?["min_fee_rate_units_per_byte"]
            .as_u64()
            .unwrap_or(1);
    let fee = txgen::payment_fee(fee_rate);
    // Each funding spends the change of the one before, so no run needs the address index.
    let mut wallet = None;
    if args.utxos > 0 {
        report.utxo_set = Some(create_utxos(args, devnet, fee_rate, network, &mut wallet).await?);
    }
    let mut steps: Vec<(f64, f64, bool)> = args
        .rate
        .iter()
        .map(|&r| (r, args.duration, false))
        .collect();
    if args.sweep {
        steps.extend(
            plan::sweep_rates(args.sweep_start, args.sweep_factor, args.sweep_max)
                .into_iter()
                .map(|r| (r, args.sweep_duration, true)),
        );
    }
    let mut last_txs = Vec::new();
    for (step, &(rate, duration, sweeping)) in steps.iter().enumerate() {
        let duration = Duration::from_secs_f64(duration);
        let slots = plan::plan(rate, duration, devnet.len());
        if slots.is_empty() {
            continue;
        }
        eprintln!(
            "run {}: {rate:.0} payments/s for {:.0} s ({} payments){}",
            step + 1,
            duration.as_secs_f64(),
            slots.len(),
            if sweeping { ", sweep" } else { "" }
        );
        // A fresh seed per run: the coins of earlier runs are spent.
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&(step as u64).to_le_bytes());
        seed[8..16].copy_from_slice(&(timed::daemon::now_ms()).to_le_bytes());
        let senders = txgen::senders(args.senders, seed);
        let per_key = slots.len().div_ceil(args.senders);
        let funding = fund::fund(
            devnet,
            &senders,
            per_key,
            COIN_UNITS,
            fee_rate,
            network,
            &mut wallet,
        )
        .await?;
        eprintln!(
            "  funded {} coins with {} fan-out transactions in {:.1} s",
            per_key * 2 * args.senders,
            funding.transactions,
            funding.elapsed.as_secs_f64()
        );
        // Let the funding transactions reach a block, so the run starts from a quiet pool.
        tokio::time::sleep(Duration::from_millis(2 * args.block_interval_ms.max(500))).await;
        let k = args.senders;
        let signing = Instant::now();
        let txs: Vec<_> = (0..slots.len())
            .into_par_iter()
            .map(|i| {
                let (s, r) = (i % k, i / k);
                txgen::payment(
                    &senders[s],
                    (funding.coins[s][0][r], funding.coins[s][1][r]),
                    funding.coin_units,
                    PAY_UNITS,
                    fee,
                    senders[(s + 1) % k].addr_a,
                    network,
                )
            })
            .collect();
        let hexes: Vec<String> = txs
            .par_iter()
            .map(|t| hex::encode(timecoin_primitives::encode(t)))
            .collect();
        let txids: Vec<String> = txs.iter().map(|t| t.txid().to_string()).collect();
        eprintln!(
            "  signed {} payments in {:.1} s",
            txs.len(),
            signing.elapsed().as_secs_f64()
        );
        let dues_ms: Vec<f64> = slots.iter().map(|s| s.due.as_secs_f64() * 1e3).collect();

        // Funding creates hundreds of thousands of outputs in a few seconds, which a node's
        // UTXO cache writes out on a background thread for several seconds more. That is the
        // setup's cost, not the load's: the run starts once no node is flushing.
        let settle = settle_flushes(devnet, SETTLE_LIMIT).await;
        if settle > Duration::from_millis(100) {
            eprintln!(
                "  waited {:.1} s for the nodes to write the funding's outputs",
                settle.as_secs_f64()
            );
        }

        // The peak so far covers the funding burst; the run's own peak starts now.
        let funded = node_readings(devnet).await;
        for pid in devnet.pids.iter().flatten() {
            if let Err(error) = procfs::reset_peak_rss(*pid) {
                eprintln!("  could not restart node {pid}'s peak RSS: {error}");
            }
        }
        let before = node_readings(devnet).await;
        let bench_before = procfs::sample_self().unwrap_or_default();
        let started = Instant::now();
        let config = RunConfig {
            rate,
            duration,
            max_batch: args.batch,
            connections: args.connections,
            poll: Duration::from_millis(args.poll_ms),
            finality: args.finality,
            send_grace: Duration::from_secs_f64(args.send_grace),
            drain: Duration::from_secs_f64(args.drain),
            progress: !args.quiet,
        };
        let result = load::run(devnet, slots, hexes, txids, &config).await?;
        let wall = started.elapsed().as_secs_f64();
        let after = node_readings(devnet).await;
        let bench_after = procfs::sample_self().unwrap_or_default();

        let mut run =
            RunReport::from_records(rate, duration.as_secs_f64(), &result.records, &dues_ms);
        run.funding_s = funding.elapsed.as_secs_f64();
        run.settle_s = settle.as_secs_f64();
        run.bench_cpu_pct = ticks_pct(bench_before.cpu_ticks, bench_after.cpu_ticks, wall);
        run.node_stats = (0..devnet.len())
            .map(|i| {
                let (b, a) = (&before[i], &after[i]);
                NodeStats {
                    node: i,
                    pid: devnet.pids[i],
                    cpu_pct: match (b.0, a.0) {
                        (Some(b), Some(a)) => ticks_pct(b.cpu_ticks, a.cpu_ticks, wall),
                        _ => 0.0,
                    },
                    peak_rss_mb: a.0.map_or(0.0, |s| s.peak_rss_kb as f64 / 1024.0),
                    funding_peak_rss_mb: funded[i].0.map_or(0.0, |s| s.peak_rss_kb as f64 / 1024.0),
                    bytes_out_per_s: a.1.saturating_sub(b.1) as f64 / wall,
                }
            })
            .collect();
        run.blocks = block_stats(devnet, &result.heights, result.elapsed_ms).await;
        let clean = run.clean();
        eprintln!(
            "  finalized {}/{} at {:.0}/s, p50 {:.1} ms, p99 {:.1} ms, losses {}",
            run.finalized,
            run.planned,
            run.finalized_tps,
            run.latency_ms.p50,
            run.latency_ms.p99,
            run.losses()
        );
        report.runs.push(run);
        last_txs = txs;
        if sweeping && !clean {
            eprintln!("  past the knee; sweep stops");
            break;
        }
        // Give the nodes a moment to settle before the next rate.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    report.knee_tps = report::knee(&report.runs);
    if !args.no_ceiling && !last_txs.is_empty() {
        // The same number of signatures the nodes checked in the largest run: two per payment
        // per node, capped to keep the measurement short.
        let finalized = report.runs.iter().map(|r| r.finalized).max().unwrap_or(0);
        let count = (finalized * 2 * devnet.len()).clamp(10_000, 400_000);
        let items = ceiling::items(&last_txs, network);
        let c = tokio::task::block_in_place(|| ceiling::measure(&items, count, devnet.len()));
        for run in &mut report.runs {
            run.ceiling_ratio = Some(run.finalized_tps / c.payments_per_sec);
        }
        report.ceiling = Some(c);
    }
    report.machine.loadavg_after = procfs::loadavg();
    Ok(report)
}

/// Creates `--utxos` unspent outputs and waits until every node holds them in blocks.
async fn create_utxos(
    args: &Args,
    devnet: &Devnet,
    fee_rate: u64,
    network: Network,
    wallet: &mut Option<fund::WalletCoin>,
) -> Result<report::UtxoSet, String> {
    let started = Instant::now();
    let owners = txgen::senders(
        UTXO_OWNERS,
        *blake3::hash(b"time-bench utxo set").as_bytes(),
    );
    let per_key = args.utxos.div_ceil(2 * UTXO_OWNERS);
    let created = per_key * 2 * UTXO_OWNERS;
    eprintln!("creating {created} unspent outputs before the runs");
    let funding = fund::fund(
        devnet, &owners, per_key, UTXO_UNITS, fee_rate, network, wallet,
    )
    .await?;
    // Certified is not enough: the set under test is the one in blocks (and on disk).
    let deadline = Instant::now() + Duration::from_secs(600);
    for node in 0..devnet.len() {
        let mut client = devnet.client(node)?;
        loop {
            let pool = client.call("getrawmempool", json!([])).await?;
            if pool.as_array().is_some_and(|txids| txids.is_empty()) {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "node {node} still holds {} unblocked transactions after creating the UTXO set",
                    pool.as_array().map_or(0, Vec::len)
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let readings = node_readings(devnet).await;
    let mb = |kb: u64| kb as f64 / 1024.0;
    let set = report::UtxoSet {
        created,
        seconds: started.elapsed().as_secs_f64(),
        rss_mb: readings
            .iter()
            .map(|(s, _)| s.as_ref().map_or(0.0, |s| mb(s.rss_kb)))
            .collect(),
        peak_rss_mb: readings
            .iter()
            .map(|(s, _)| s.as_ref().map_or(0.0, |s| mb(s.peak_rss_kb)))
            .collect(),
        // Creating the set is a burst no payment load resembles (a thousand 45 KB fan-outs);
        // the target is the memory of nodes that hold the set, so the runs get a fresh peak.
        peak_reset: devnet
            .pids
            .iter()
            .all(|pid| pid.is_some_and(|pid| procfs::reset_peak_rss(pid).is_ok())),
    };
    eprintln!(
        "  {created} outputs with {} fan-out transactions, in blocks on every node after {:.1} s",
        funding.transactions, set.seconds
    );
    Ok(set)
}

fn ticks_pct(before: u64, after: u64, wall: f64) -> f64 {
    after.saturating_sub(before) as f64 / procfs::CLOCK_TICKS_PER_SEC / wall * 100.0
}

/// Waits until no node runs its UTXO flush thread ([`timecoin_storage::FLUSH_THREAD_NAME`]), at
/// most `limit`; returns how long it waited. Nodes whose process is unknown are not waited for.
async fn settle_flushes(devnet: &Devnet, limit: Duration) -> Duration {
    let started = Instant::now();
    while started.elapsed() < limit
        && devnet
            .pids
            .iter()
            .flatten()
            .any(|pid| procfs::has_thread_named(*pid, timecoin_storage::FLUSH_THREAD_NAME))
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    started.elapsed()
}

/// Each node's process reading and P2P bytes sent so far.
async fn node_readings(devnet: &Devnet) -> Vec<(Option<procfs::ProcSample>, u64)> {
    let mut out = Vec::new();
    for i in 0..devnet.len() {
        let sample = devnet.pids[i].and_then(procfs::sample);
        let bytes = match devnet.client(i) {
            Ok(mut c) => c
                .call("getnetworkinfo", json!([]))
                .await
                .ok()
                .and_then(|v| v["bytes_out"].as_u64())
                .unwrap_or(0),
            Err(_) => 0,
        };
        out.push((sample, bytes));
    }
    out
}

/// Block figures from the heights seen during the run and the blocks' own timestamps.
async fn block_stats(devnet: &Devnet, heights: &[(u64, f64)], elapsed_ms: f64) -> BlockStats {
    let (Some(first), Some(last)) = (heights.first(), heights.last()) else {
        return BlockStats::default();
    };
    let range: Vec<u64> = (first.0..=last.0).collect();
    let mut stats = BlockStats {
        count: last.0 - first.0,
        per_sec: (last.0 - first.0) as f64 / (elapsed_ms / 1e3).max(1e-9),
        ..Default::default()
    };
    let Ok(mut client) = devnet.client(0) else {
        return stats;
    };
    let params: Vec<_> = range.iter().map(|h| json!([h])).collect();
    let mut times = Vec::new();
    let mut first_block = true;
    for chunk in params.chunks(500) {
        let Ok(hashes) = client.batch("getblockhash", chunk).await else {
            return stats;
        };
        let params: Vec<_> = hashes
            .into_iter()
            .filter_map(Result::ok)
            .map(|h| json!([h, 1]))
            .collect();
        let Ok(blocks) = client.batch("getblock", &params).await else {
            return stats;
        };
        for block in blocks.into_iter().filter_map(Result::ok) {
            times.push(block["time_ms"].as_f64().unwrap_or(0.0));
            // The first block of the range was committed before the run; only its time counts.
            if !std::mem::take(&mut first_block) {
                stats.transactions += block["nTx"].as_u64().unwrap_or(1).saturating_sub(1);
            }
        }
    }
    stats.gap_ms = Summary::of(times.windows(2).map(|w| w[1] - w[0]).collect());
    stats
}
