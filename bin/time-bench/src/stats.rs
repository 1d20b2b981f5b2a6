//! Order statistics over latency samples.

use serde::{Deserialize, Serialize};

/// The nearest-rank percentile `p` (0–100) of `sorted` (ascending), or `None` if it is empty.
///
/// Nearest rank rather than interpolation: every reported figure is a latency some transaction
/// actually had.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// The usual summary of a distribution, in the samples' unit (milliseconds here).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Number of samples.
    pub count: usize,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest sample.
    pub max: f64,
    /// Arithmetic mean.
    pub mean: f64,
}

impl Summary {
    /// Summarises `samples` (in any order); all zero when empty.
    pub fn of(mut samples: Vec<f64>) -> Summary {
        if samples.is_empty() {
            return Summary::default();
        }
        samples.sort_by(f64::total_cmp);
        let at = |p| percentile(&samples, p).expect("not empty");
        Summary {
            count: samples.len(),
            p50: at(50.0),
            p90: at(90.0),
            p99: at(99.0),
            max: *samples.last().expect("not empty"),
            mean: samples.iter().sum::<f64>() / samples.len() as f64,
        }
    }
}
