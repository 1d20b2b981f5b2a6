//! How a background flush spreads its work over the time the next cache layer takes to fill
//! (ADR 0019).
//!
//! A flush that runs flat out on a busy machine takes a core from the node for seconds; the four
//! nodes of a devnet flush at the same height, so they took both cores from consensus at once.
//! A flush at the lowest CPU priority instead starved under load, and the node then waited for
//! it with the flush still at that priority. So the flush runs at normal priority but keeps
//! only as far ahead as the fresh layer's fill requires: it is done well before that layer is
//! full, and runs flat out as soon as the node waits for it.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

/// Operations written between two checks of the schedule: a fraction of a millisecond of work.
pub(crate) const PACE_CHUNK: usize = 256;

/// How long a flush that is ahead of its schedule sleeps before looking again.
const PACE_NAP: Duration = Duration::from_millis(5);

/// The flush is due to be complete when the fresh layer is this full (two thirds), so that a
/// layer filling faster than expected still finds the previous flush done.
const FINISH_AT_FILL: f64 = 2.0 / 3.0;

/// Work a flush may do before the fresh layer holds anything: the sort and the first chunks.
const HEAD_START: f64 = 0.05;

/// A flush never takes longer than this while the chain is idle, so that a written layer does
/// not stay in memory, and its blocks in the replay window, indefinitely.
const LONGEST_SPREAD: Duration = Duration::from_secs(60);

/// Shared by the store and its flush thread.
#[derive(Debug, Default)]
pub(crate) struct FlushPace {
    /// Set when the node waits for the flush or drops the store: no more naps.
    urgent: AtomicBool,
    /// How full the fresh layer is, in thousandths of its budget or block limit.
    fill_permille: AtomicU32,
}

impl FlushPace {
    /// Tells the flush that the node is waiting for it.
    pub(crate) fn hurry(&self) {
        self.urgent.store(true, Ordering::Release);
    }

    /// Records how full the fresh layer is (`fill` in 0..=1; more is taken as 1).
    pub(crate) fn set_fill(&self, fill: f64) {
        let permille = (fill.clamp(0.0, 1.0) * 1000.0) as u32;
        self.fill_permille.store(permille, Ordering::Release);
    }

    /// Blocks the flush thread, which has written `done` of its `total` operations after
    /// `elapsed`, until its schedule lets it write the next chunk.
    pub(crate) fn wait_turn(&self, done: usize, total: usize, elapsed: impl Fn() -> Duration) {
        while !self.urgent.load(Ordering::Acquire) {
            let fill = f64::from(self.fill_permille.load(Ordering::Acquire)) / 1000.0;
            if may_proceed(done, total, fill, elapsed()) {
                return;
            }
            std::thread::sleep(PACE_NAP);
        }
    }
}

/// Whether a flush that has written `done` of `total` operations after `elapsed`, while the
/// fresh layer is `fill` full, is behind (or on) its schedule.
pub(crate) fn may_proceed(done: usize, total: usize, fill: f64, elapsed: Duration) -> bool {
    let by_fill = HEAD_START + fill / FINISH_AT_FILL;
    let by_time = elapsed.as_secs_f64() / LONGEST_SPREAD.as_secs_f64();
    let scheduled = by_fill.max(by_time);
    scheduled >= 1.0 || (done as f64) < scheduled * total as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flush_starts_at_once_and_keeps_ahead_of_the_fill_only_so_far() {
        let total = 100_000;
        // The head start: the first chunks go at once, with nothing in the fresh layer.
        assert!(may_proceed(0, total, 0.0, Duration::ZERO));
        assert!(!may_proceed(total / 10, total, 0.0, Duration::ZERO));
        // A third of the way to two-thirds full allows half of the work (plus the head start).
        assert!(may_proceed(total / 2, total, 1.0 / 3.0, Duration::ZERO));
        assert!(!may_proceed(
            total * 6 / 10,
            total,
            1.0 / 3.0,
            Duration::ZERO
        ));
        // At two-thirds full, everything.
        assert!(may_proceed(
            total - 1,
            total,
            FINISH_AT_FILL,
            Duration::ZERO
        ));
    }

    #[test]
    fn an_idle_chain_does_not_hold_a_flush_back_past_the_longest_spread() {
        let total = 100_000;
        assert!(!may_proceed(total / 2, total, 0.0, LONGEST_SPREAD / 4));
        assert!(may_proceed(total / 2, total, 0.0, LONGEST_SPREAD * 3 / 4));
        assert!(may_proceed(total - 1, total, 0.0, LONGEST_SPREAD));
    }

    /// Runs `wait_turn` for a flush far ahead of a schedule that neither fill nor time moves,
    /// on a thread of its own, and reports whether it returned within a generous bound (it
    /// never returns on its own).
    fn returns_after(pace: &std::sync::Arc<FlushPace>, nudge: impl FnOnce(&FlushPace)) -> bool {
        let (done, returned) = std::sync::mpsc::channel();
        let waiter = {
            let pace = std::sync::Arc::clone(pace);
            std::thread::spawn(move || {
                pace.wait_turn(99_999, 100_000, || Duration::ZERO);
                let _ = done.send(());
            })
        };
        std::thread::sleep(Duration::from_millis(20));
        let early = returned.try_recv().is_ok();
        nudge(pace);
        let late = returned.recv_timeout(Duration::from_secs(30)).is_ok();
        if late {
            waiter.join().expect("the waiting thread");
        } else {
            // Unblock it so the test process can end.
            pace.hurry();
        }
        !early && late
    }

    #[test]
    fn a_flush_ahead_of_its_schedule_waits_until_hurried() {
        let pace = std::sync::Arc::new(FlushPace::default());
        assert!(returns_after(&pace, FlushPace::hurry));
    }

    #[test]
    fn a_flush_ahead_of_its_schedule_resumes_when_the_fresh_layer_fills() {
        let pace = std::sync::Arc::new(FlushPace::default());
        assert!(returns_after(&pace, |pace| pace.set_fill(1.5)));
        assert_eq!(pace.fill_permille.load(Ordering::Acquire), 1000);
    }
}
