//! The report: figures per run, the knee, the ceiling, as JSON and as a table.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ceiling::Ceiling;
use crate::load::Record;
use crate::stats::Summary;

/// p99 finality (ms) beyond which a rate is past the knee.
pub const KNEE_P99_MS: f64 = 1_000.0;

/// The whole benchmark.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Report {
    /// Where it ran.
    pub machine: Machine,
    /// Masternodes in the devnet.
    pub nodes: usize,
    /// Sender identities (two keys each).
    pub senders: usize,
    /// One entry per offered rate, in the order run.
    pub runs: Vec<RunReport>,
    /// The highest offered rate with p99 finality under 1 s and no losses, if any run was clean.
    pub knee_tps: Option<f64>,
    /// The signature-verification ceiling of this machine.
    pub ceiling: Option<Ceiling>,
    /// The large UTXO set created before the runs (`--utxos`), if any.
    pub utxo_set: Option<UtxoSet>,
    /// How finality was observed (`--finality`); absent in reports from before the feed.
    #[serde(default)]
    pub finality: Option<crate::load::Finality>,
}

/// Unspent outputs created before the runs and left unspent, so the runs measure nodes that
/// hold a large UTXO set.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct UtxoSet {
    /// Outputs created (beyond what the runs' own funding creates).
    pub created: usize,
    /// Seconds from the first fan-out until every node had them all in blocks.
    pub seconds: f64,
    /// Each node's resident set once they were in blocks, in MB (`VmRSS`).
    pub rss_mb: Vec<f64>,
    /// Each node's peak resident set by then, in MB (`VmHWM`).
    pub peak_rss_mb: Vec<f64>,
    /// Whether every node's peak was then reset, so that the runs' peaks exclude the creation.
    #[serde(default)]
    pub peak_reset: bool,
}

/// The machine and how busy it was.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Machine {
    /// Logical cores.
    pub cores: usize,
    /// CPU model.
    pub cpu: String,
    /// `/proc/loadavg` before the benchmark.
    pub loadavg_before: String,
    /// `/proc/loadavg` after it.
    pub loadavg_after: String,
}

/// The figures of one offered rate.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RunReport {
    /// Offered payments per second.
    pub offered_tps: f64,
    /// Length of the send schedule in seconds.
    pub duration_s: f64,
    /// Payments planned.
    pub planned: usize,
    /// Payments handed to a node.
    pub sent: usize,
    /// Payments a node accepted.
    pub accepted: usize,
    /// Payments a node refused (the node's reason is in `errors`).
    pub rejected: usize,
    /// Payments never delivered: unsent by the deadline, or lost to a transport failure.
    pub dropped: usize,
    /// Accepted payments whose certificate was not seen before the drain deadline.
    pub unfinalized: usize,
    /// Accepted payments per second of the send window.
    pub achieved_tps: f64,
    /// Payments seen final.
    pub finalized: usize,
    /// Payments seen final per second, over the schedule or until the last was final if later.
    pub finalized_tps: f64,
    /// Planned send time → certificate seen by the submitting node, in ms.
    pub latency_ms: Summary,
    /// Planned send time → request start, in ms: the generator's own lag (queueing behind a slow
    /// node included).
    pub send_lag_ms: Summary,
    /// Finality latency of the payments planned in each second of the schedule, in order: shows
    /// whether the tail comes from a few stalls (a flush, a view change) or from every second.
    #[serde(default)]
    pub latency_by_second: Vec<Summary>,
    /// Blocks committed during the run.
    pub blocks: BlockStats,
    /// Per node resources.
    pub node_stats: Vec<NodeStats>,
    /// The generator's own CPU use over the run, in percent of one core.
    pub bench_cpu_pct: f64,
    /// Error messages and how often each occurred.
    pub errors: BTreeMap<String, usize>,
    /// `finalized_tps` divided by the ceiling's payments per second.
    pub ceiling_ratio: Option<f64>,
    /// Seconds spent funding senders for this run (not part of the measurement).
    pub funding_s: f64,
    /// Seconds waited after funding and signing for the nodes' UTXO flushes to finish (not
    /// part of the measurement).
    #[serde(default)]
    pub settle_s: f64,
}

/// Blocks committed during a run.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct BlockStats {
    /// Blocks committed.
    pub count: u64,
    /// Blocks per second over the run.
    pub per_sec: f64,
    /// Gaps between consecutive block timestamps, in ms.
    pub gap_ms: Summary,
    /// Transactions in those blocks, rewards excluded.
    pub transactions: u64,
}

/// One node's resources over a run.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NodeStats {
    /// Node index.
    pub node: usize,
    /// Its process id, if found.
    pub pid: Option<u32>,
    /// CPU used, in percent of one core.
    pub cpu_pct: f64,
    /// Peak resident set (VmHWM) during the run's payment load, in MB: the peak is restarted
    /// once the run's coins are funded and signed.
    pub peak_rss_mb: f64,
    /// Peak resident set from the previous restart (the start, or the end of building the
    /// UTXO set, or the previous run's load) through funding this run's coins, in MB. Funding
    /// is a burst of large fan-out transactions that no payment load resembles, so it is kept
    /// apart instead of being reported as the run's peak.
    #[serde(default)]
    pub funding_peak_rss_mb: f64,
    /// Peer-to-peer bytes sent per second.
    pub bytes_out_per_s: f64,
}

impl RunReport {
    /// Payments lost one way or another.
    pub fn losses(&self) -> usize {
        self.rejected + self.dropped + self.unfinalized
    }

    /// Whether this rate is within the knee criterion.
    pub fn clean(&self) -> bool {
        self.planned > 0 && self.losses() == 0 && self.latency_ms.p99 < KNEE_P99_MS
    }

    /// Fills the counts and latency figures from the run's records; `elapsed_ms` is how long
    /// the run lasted in all, `dues_ms[i]` record `i`'s planned time.
    pub fn from_records(
        offered_tps: f64,
        duration_s: f64,
        records: &[Record],
        dues_ms: &[f64],
    ) -> RunReport {
        let mut report = RunReport {
            offered_tps,
            duration_s,
            planned: records.len(),
            ..Default::default()
        };
        let mut latencies = Vec::new();
        let mut by_second: Vec<Vec<f64>> = Vec::new();
        let mut lags = Vec::new();
        let mut last_sent: f64 = 0.0;
        let mut last_final: f64 = 0.0;
        for (record, &due) in records.iter().zip(dues_ms) {
            if let Some(sent) = record.sent_ms {
                lags.push((sent - due).max(0.0));
                last_sent = last_sent.max(sent);
            }
            if record.accepted {
                report.accepted += 1;
                match record.final_ms {
                    Some(f) => {
                        report.finalized += 1;
                        latencies.push(f - due);
                        let second = (due / 1e3).max(0.0) as usize;
                        if by_second.len() <= second {
                            by_second.resize_with(second + 1, Vec::new);
                        }
                        by_second[second].push(f - due);
                        last_final = last_final.max(f);
                    }
                    None => report.unfinalized += 1,
                }
            } else if record.dropped {
                report.dropped += 1;
            } else if record.error.is_some() {
                report.rejected += 1;
            }
            if let Some(e) = &record.error {
                *report.errors.entry(error_kind(e)).or_default() += 1;
            }
        }
        report.sent = records.iter().filter(|r| r.sent_ms.is_some()).count();
        let window = duration_s.max(last_sent / 1e3).max(1e-9);
        report.achieved_tps = report.accepted as f64 / window;
        report.finalized_tps = report.finalized as f64 / duration_s.max(last_final / 1e3).max(1e-9);
        report.latency_ms = Summary::of(latencies);
        report.latency_by_second = by_second.into_iter().map(Summary::of).collect();
        report.send_lag_ms = Summary::of(lags);
        report
    }
}

/// The knee: the highest offered rate among clean runs.
pub fn knee(runs: &[RunReport]) -> Option<f64> {
    runs.iter()
        .filter(|r| r.clean())
        .map(|r| r.offered_tps)
        .max_by(f64::total_cmp)
}

/// One figure per node, rounded and joined with `/`.
fn per_node(stats: &[NodeStats], figure: impl Fn(&NodeStats) -> f64) -> String {
    stats
        .iter()
        .map(|n| format!("{:.0}", figure(n)))
        .collect::<Vec<_>>()
        .join("/")
}

/// The readable table.
pub fn table(report: &Report) -> String {
    let mut t = String::new();
    t.push_str(&format!(
        "time-bench: {} masternodes, {} senders, {} cores ({}){}\n\n",
        report.nodes,
        report.senders,
        report.machine.cores,
        report.machine.cpu,
        match report.finality {
            Some(crate::load::Finality::Feed) =>
                ", finality from each node's waitforfinalized feed",
            Some(crate::load::Finality::Poll) => ", finality polled with gettxfinality",
            None => "",
        }
    ));
    t.push_str(
        "offered/s achieved/s final/s |  p50 ms   p90 ms   p99 ms   max ms | lag p99 | rej  drop unfin | blk/s gap max ms | node CPU %        | peak RSS MB     | KB out/s/node | bench CPU% | ceil\n",
    );
    for r in &report.runs {
        let cpu = per_node(&r.node_stats, |n| n.cpu_pct);
        let rss = per_node(&r.node_stats, |n| n.peak_rss_mb);
        let out: f64 = r.node_stats.iter().map(|n| n.bytes_out_per_s).sum::<f64>()
            / r.node_stats.len().max(1) as f64
            / 1e3;
        t.push_str(&format!(
            "{:>9.0} {:>10.0} {:>7.0} | {:>7.1} {:>8.1} {:>8.1} {:>8.1} | {:>7.1} | {:>3} {:>5} {:>5} | {:>5.2} {:>10.0} | {:<17} | {:<15} | {:>13.0} | {:>10.0} | {}\n",
            r.offered_tps,
            r.achieved_tps,
            r.finalized_tps,
            r.latency_ms.p50,
            r.latency_ms.p90,
            r.latency_ms.p99,
            r.latency_ms.max,
            r.send_lag_ms.p99,
            r.rejected,
            r.dropped,
            r.unfinalized,
            r.blocks.per_sec,
            r.blocks.gap_ms.max,
            cpu,
            rss,
            out,
            r.bench_cpu_pct,
            r.ceiling_ratio.map(|c| format!("{:.3}", c)).unwrap_or_else(|| "-".into()),
        ));
    }
    for r in &report.runs {
        let slowest = r
            .latency_by_second
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.p99.total_cmp(&b.1.p99));
        if let Some((second, summary)) = slowest {
            let median = Summary::of(r.latency_by_second.iter().map(|s| s.p99).collect()).p50;
            t.push_str(&format!(
                "  at {:.0}/s: slowest second {second} s (p99 {:.0} ms, {} payments); median of the per-second p99s {median:.0} ms\n",
                r.offered_tps, summary.p99, summary.count
            ));
        }
    }
    for r in &report.runs {
        t.push_str(&format!(
            "  at {:.0}/s: peak RSS MB while funding the run's coins (not part of the run's peak): {}\n",
            r.offered_tps,
            per_node(&r.node_stats, |n| n.funding_peak_rss_mb)
        ));
    }
    for r in &report.runs {
        for (e, n) in &r.errors {
            t.push_str(&format!("  at {:.0}/s: {n} × {e}\n", r.offered_tps));
        }
    }
    if let Some(c) = &report.ceiling {
        t.push_str(&format!(
            "\nceiling: {:.0} Ed25519 signatures/s in batches of {} on {} threads ({} signatures in {:.2} s) = {:.0} payments/s with {} nodes each checking 2 signatures per payment\n",
            c.signatures_per_sec, crate::ceiling::BATCH, c.threads, c.signatures, c.seconds, c.payments_per_sec, c.nodes
        ));
    }
    match report.knee_tps {
        Some(k) => t.push_str(&format!(
            "knee: {k:.0} payments/s offered (highest rate with p99 finality < 1 s and no losses)\n"
        )),
        None => t.push_str("knee: none of the runs met p99 < 1 s with no losses\n"),
    }
    if let Some(u) = &report.utxo_set {
        let mb = |v: &[f64]| {
            v.iter()
                .map(|m| format!("{m:.0}"))
                .collect::<Vec<_>>()
                .join("/")
        };
        t.push_str(&format!(
            "UTXO set: {} extra unspent outputs created in {:.0} s before the runs; RSS per node then {} MB (peak while creating {} MB); {}\n",
            u.created,
            u.seconds,
            mb(&u.rss_mb),
            mb(&u.peak_rss_mb),
            if u.peak_reset {
                "the peaks were then reset, so the runs' peak RSS is theirs alone, with the set in place"
            } else {
                "the peaks could not be reset, so the runs' peak RSS includes the creation"
            }
        ));
    }
    t.push_str(&format!(
        "load average before: {}; after: {}\n",
        report.machine.loadavg_before, report.machine.loadavg_after
    ));
    t
}

/// What groups `error` with others of its kind: its first 80 characters with every txid, key
/// or other long hexadecimal run replaced by `…`, since refusals name the transaction.
fn error_kind(error: &str) -> String {
    // A busy node's answer (ADR 0026) names its pool's length and limit, which change from one
    // refusal to the next; it is one kind.
    if let Some((busy @ "node busy", _)) = error.split_once(':') {
        return format!("{busy}: too many payments waiting for finality");
    }
    let mut kind = String::new();
    let mut hex = String::new();
    let flush = |hex: &mut String, kind: &mut String| {
        if hex.len() >= 16 {
            kind.push('…');
        } else {
            kind.push_str(hex);
        }
        hex.clear();
    };
    for c in error.chars().take(80) {
        if c.is_ascii_hexdigit() {
            hex.push(c);
        } else {
            flush(&mut hex, &mut kind);
            kind.push(c);
        }
    }
    flush(&mut hex, &mut kind);
    kind
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_of_different_transactions_group_as_one_kind() {
        let first = "the pool is full: to admit transaction 00010840c4ab3d37527f456b488a63398f2131b92e at 3";
        let second = "the pool is full: to admit transaction ffffe39976ff333ce7c00f28dabb066d24c7795df0 at 3";
        assert_eq!(error_kind(first), error_kind(second));
        assert_eq!(
            error_kind(first),
            "the pool is full: to admit transaction …"
        );
        // Short numbers stay: they tell kinds apart.
        assert_eq!(
            error_kind("fee rate 1000 below 2000"),
            "fee rate 1000 below 2000"
        );
        assert_ne!(error_kind("transport: timed out"), error_kind(first));
        assert_eq!(
            error_kind("node busy: 1019 transactions are waiting for finality (limit 1000); …"),
            error_kind("node busy: 2546 transactions are waiting for finality (limit 2037); …"),
        );
    }
}
