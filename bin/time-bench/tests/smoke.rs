//! The bench's own logic, without a network: percentiles, the send plan, the report's shape.

use std::time::Duration;

use time_bench::load::Record;
use time_bench::plan::{plan, sweep_rates};
use time_bench::report::{Report, RunReport, knee, table};
use time_bench::stats::{Summary, percentile};

#[test]
fn nearest_rank_percentiles() {
    let v: Vec<f64> = (1..=100).map(f64::from).collect();
    assert_eq!(percentile(&v, 50.0), Some(50.0));
    assert_eq!(percentile(&v, 99.0), Some(99.0));
    assert_eq!(percentile(&v, 100.0), Some(100.0));
    assert_eq!(percentile(&v, 0.0), Some(1.0));
    assert_eq!(percentile(&[], 50.0), None);
    let s = Summary::of(vec![3.0, 1.0, 2.0]);
    assert_eq!((s.count, s.p50, s.max, s.mean), (3, 2.0, 3.0, 2.0));
}

#[test]
fn plan_is_even_and_round_robin() {
    let slots = plan(100.0, Duration::from_secs(2), 4);
    assert_eq!(slots.len(), 200);
    assert_eq!(slots[0].due, Duration::ZERO);
    assert_eq!(slots[10].due, Duration::from_millis(100));
    assert!(slots.windows(2).all(|w| w[0].due <= w[1].due));
    for n in 0..4 {
        assert_eq!(slots.iter().filter(|s| s.node == n).count(), 50);
    }
    assert_eq!(
        sweep_rates(250.0, 2.0, 2000.0),
        vec![250.0, 500.0, 1000.0, 2000.0]
    );
}

#[test]
fn report_counts_latency_from_the_planned_time_and_finds_the_knee() {
    let records = vec![
        Record {
            sent_ms: Some(5.0),
            accepted: true,
            final_ms: Some(30.0),
            ..Default::default()
        },
        Record {
            sent_ms: Some(15.0),
            accepted: true,
            final_ms: None,
            ..Default::default()
        },
        Record {
            sent_ms: Some(20.0),
            error: Some("rejected: spent".into()),
            ..Default::default()
        },
        Record {
            dropped: true,
            error: Some("not sent".into()),
            ..Default::default()
        },
    ];
    let run = RunReport::from_records(4.0, 1.0, &records, &[0.0, 10.0, 20.0, 30.0]);
    assert_eq!((run.planned, run.sent, run.accepted), (4, 3, 2));
    assert_eq!(
        (run.rejected, run.dropped, run.unfinalized, run.finalized),
        (1, 1, 1, 1)
    );
    assert_eq!(run.latency_ms.p50, 30.0);
    assert_eq!(run.losses(), 3);
    assert!(!run.clean());

    let mut clean = RunReport::from_records(2.0, 1.0, &records[..1], &[0.0]);
    clean.offered_tps = 500.0;
    assert!(clean.clean());
    let report = Report {
        runs: vec![clean, run],
        knee_tps: None,
        ..Default::default()
    };
    assert_eq!(knee(&report.runs), Some(500.0));
    let json = serde_json::to_value(&report).unwrap();
    for key in [
        "offered_tps",
        "achieved_tps",
        "finalized_tps",
        "latency_ms",
        "blocks",
        "node_stats",
        "rejected",
        "dropped",
    ] {
        assert!(json["runs"][0].get(key).is_some(), "{key}");
    }
    assert!(json["runs"][0]["latency_ms"]["p99"].is_number());
    assert!(table(&report).contains("offered/s"));
}

#[test]
fn latency_is_also_summarised_per_second_of_the_schedule() {
    let finals = [
        (0.0, 40.0),
        (500.0, 560.0),
        (1_200.0, 2_100.0),
        (3_100.0, 3_130.0),
    ];
    let records: Vec<Record> = finals
        .iter()
        .map(|&(_, final_ms)| Record {
            sent_ms: Some(0.0),
            accepted: true,
            final_ms: Some(final_ms),
            ..Default::default()
        })
        .collect();
    let dues: Vec<f64> = finals.iter().map(|&(due, _)| due).collect();
    let run = RunReport::from_records(1.0, 4.0, &records, &dues);
    let by_second: Vec<(usize, f64)> = run
        .latency_by_second
        .iter()
        .map(|second| (second.count, second.max))
        .collect();
    // Second 2 had no payment due; second 1's stall stands out.
    assert_eq!(by_second, vec![(2, 60.0), (1, 900.0), (0, 0.0), (1, 30.0)]);
    let report = Report {
        runs: vec![run],
        ..Default::default()
    };
    assert!(
        table(&report).contains("slowest second 1 s (p99 900 ms, 1 payments)"),
        "{}",
        table(&report)
    );
}
