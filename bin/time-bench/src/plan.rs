//! The open-loop send plan: when each payment is due and which node gets it.

use std::time::Duration;

/// One planned submission.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Slot {
    /// When it is due, from the start of the run. Latency is measured from here, so time a
    /// payment spends queued in the generator (because a node answers slowly) counts against the
    /// network, as it would for a real client: no coordinated omission.
    pub due: Duration,
    /// The node it is sent to.
    pub node: usize,
}

/// Evenly spaced submissions at `rate` per second for `duration`, dealt round-robin to `nodes`
/// nodes. Even spacing (rather than Poisson arrivals) keeps runs reproducible; bursts still
/// arise from batching and block commits.
pub fn plan(rate: f64, duration: Duration, nodes: usize) -> Vec<Slot> {
    assert!(nodes > 0, "at least one node");
    // NaN and non-positive rates plan nothing.
    if rate.is_nan() || rate <= 0.0 {
        return Vec::new();
    }
    let count = (rate * duration.as_secs_f64()).floor() as usize;
    (0..count)
        .map(|i| Slot {
            due: Duration::from_secs_f64(i as f64 / rate),
            node: i % nodes,
        })
        .collect()
}

/// The rates a sweep tries: from `start`, multiplying by `factor`, up to `max` inclusive.
pub fn sweep_rates(start: f64, factor: f64, max: f64) -> Vec<f64> {
    assert!(factor > 1.0 && start > 0.0, "a sweep must rise");
    let mut rates = Vec::new();
    let mut rate = start;
    while rate <= max * (1.0 + 1e-9) {
        rates.push(rate.round());
        rate *= factor;
    }
    rates
}
