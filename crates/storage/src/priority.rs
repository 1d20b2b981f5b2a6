//! The background flush's CPU priority (ADR 0019): the lowest while the node does not need the
//! flush, the node's own once the node waits for it or the flush falls behind the fresh layer.
//!
//! At the lowest priority a flush uses only the CPU the node leaves idle, so it never competes
//! with consensus. But when the next cache layer fills first, the node waits for the flush, and
//! a flush still at the lowest priority then finishes slowly on a busy machine: a priority
//! inversion. So the flush checks, every few hundred writes, whether it is being waited for, and
//! then asks for its normal priority back. That needs `CAP_SYS_NICE` or an `RLIMIT_NICE` of at
//! least 20 (systemd: `LimitNICE=+0`, nice 0 allowed); without either the flush stays at
//! the lowest priority, as before.
//!
//! Waiting for the flush is the last resort, and on a saturated machine it came often: at
//! the lowest priority the flush got almost no CPU for the whole layer's fill time, and every
//! node of a devnet then stalled for over a second at the same layer switch, long enough for
//! a view change. So the flush also keeps pace with the fresh layer: while its share of writes
//! done trails how full the fresh layer is ([`FlushPriority::behind`]), it takes its normal
//! priority, and once it is well ahead it lowers itself again. What idle CPU does not do of the
//! flush is then spread over the layer's fill time instead of demanded all at once.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// Writes between two checks of whether the node waits: a fraction of a millisecond of work.
pub(crate) const CHECK_EVERY: usize = 256;

/// The lowest CPU priority (Linux nice value), where a flush starts.
#[cfg(target_os = "linux")]
const LOWEST: i32 = 19;

/// The node's own priority.
#[cfg(target_os = "linux")]
const NORMAL: i32 = 0;

/// Shared by the store and its flush thread.
#[derive(Debug, Default)]
pub(crate) struct FlushPriority {
    /// Set when the node waits for the flush (or asks it to hurry).
    urgent: AtomicBool,
    /// How full the fresh layer is, in thousandths: the flush is due when it reaches 1,000.
    fill: AtomicU32,
}

/// Thousandths of its writes a flush should have done when the fresh layer is `fill`
/// thousandths full: in step with the fill, so as to be done at four fifths, leaving a margin
/// for bursts. (A lazier schedule, the square of the fill's share of nine tenths, which left
/// more of the flush to idle CPU, was no better in alternated runs: ADR 0019.)
fn due_progress(fill: u32) -> u64 {
    (u64::from(fill) * 5 / 4).min(1_000)
}

/// Thousandths of its `total` writes a flush has done after `done`; all of them when it has none.
fn progress(done: usize, total: usize) -> u64 {
    (done as u64 * 1_000)
        .checked_div(total as u64)
        .unwrap_or(1_000)
}

impl FlushPriority {
    /// Tells the flush that the node waits for it.
    pub(crate) fn hurry(&self) {
        self.urgent.store(true, Ordering::Release);
    }

    /// Whether the node waits for the flush.
    pub(crate) fn is_urgent(&self) -> bool {
        self.urgent.load(Ordering::Acquire)
    }

    /// Records how full the fresh layer is, in thousandths (capped at 1,000).
    pub(crate) fn set_fill(&self, thousandths: u32) {
        self.fill.store(thousandths.min(1_000), Ordering::Release);
    }

    /// Whether a flush that has done `done` of its `total` writes trails the fresh layer's
    /// fill, so that at its present pace the node would wait for it.
    pub(crate) fn behind(&self, done: usize, total: usize) -> bool {
        progress(done, total) < self.due()
    }

    /// Whether the flush is so far ahead of the fresh layer's fill (a tenth of its writes)
    /// that it can go back to the lowest priority.
    pub(crate) fn well_ahead(&self, done: usize, total: usize) -> bool {
        progress(done, total) >= self.due() + 100
    }

    /// Thousandths of its writes the flush should have done by now.
    fn due(&self) -> u64 {
        due_progress(self.fill.load(Ordering::Acquire))
    }
}

/// A flush's writes, counted on the flush's own thread, which it moves between priorities.
pub(crate) struct Pacer<'a> {
    priority: &'a FlushPriority,
    total: usize,
    done: usize,
    /// Whether the thread started at the lowest priority (a background flush): only such a
    /// thread moves. An inline flush runs on the node's own thread, which it must never lower.
    movable: bool,
    /// Whether the thread runs at the lowest priority now.
    lowered: bool,
    /// Whether it may still ask for its normal priority: refused once, it would be again.
    may_raise: bool,
}

impl<'a> Pacer<'a> {
    /// A pacer for a flush of `total` writes on a thread that starts `lowered` or not.
    pub(crate) fn new(priority: &'a FlushPriority, total: usize, lowered: bool) -> Pacer<'a> {
        Pacer {
            priority,
            total,
            done: 0,
            movable: lowered,
            lowered,
            may_raise: true,
        }
    }

    /// Called before each write. Every [`CHECK_EVERY`] writes it looks whether the node waits
    /// or the flush has fallen behind the fresh layer (then it asks for normal priority), or is
    /// far enough ahead to go back to the lowest.
    pub(crate) fn step(&mut self) {
        if self.movable && self.done.is_multiple_of(CHECK_EVERY) {
            let urgent = self.priority.is_urgent();
            if self.lowered
                && self.may_raise
                && (urgent || self.priority.behind(self.done, self.total))
            {
                self.may_raise = restore_this_thread();
                self.lowered = !self.may_raise;
            } else if !self.lowered && !urgent && self.priority.well_ahead(self.done, self.total) {
                self.lowered = lower_this_thread();
            }
        }
        self.done += 1;
    }

    /// Whether the thread runs at the lowest priority now.
    #[cfg(test)]
    fn lowered(&self) -> bool {
        self.lowered
    }
}

/// Lowers the calling thread to the lowest priority; returns whether it has it now. Best
/// effort: a failure leaves the flush at normal priority, which is only slower for the node. On
/// Linux a nice value belongs to a thread, so this leaves the node's other threads alone.
pub(crate) fn lower_this_thread() -> bool {
    #[cfg(target_os = "linux")]
    {
        rustix::process::setpriority_process(Some(rustix::thread::gettid()), LOWEST).is_ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

/// Asks for the calling thread's normal priority back; returns whether it has it now.
pub(crate) fn restore_this_thread() -> bool {
    #[cfg(target_os = "linux")]
    {
        rustix::process::setpriority_process(Some(rustix::thread::gettid()), NORMAL).is_ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        true
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// Runs `test` on a thread of its own: a nice value belongs to one thread, and a test must
    /// not leave the harness's thread lowered.
    fn on_its_own_thread(test: impl FnOnce() + Send + 'static) {
        std::thread::spawn(test).join().expect("the test thread");
    }

    fn nice_of_this_thread() -> i32 {
        rustix::process::getpriority_process(Some(rustix::thread::gettid()))
            .expect("reading this thread's nice value")
    }

    #[test]
    fn a_lowered_thread_gets_its_priority_back_where_the_system_allows_it() {
        on_its_own_thread(|| {
            assert!(lower_this_thread());
            assert_eq!(nice_of_this_thread(), LOWEST);
            let restored = restore_this_thread();
            // Privileged (or with RLIMIT_NICE) the thread is back at normal priority; otherwise
            // the request is refused and it stays where it was.
            let expected = if restored { NORMAL } else { LOWEST };
            assert_eq!(nice_of_this_thread(), expected);
        });
    }

    #[test]
    fn an_inline_flush_never_moves_the_thread_it_runs_on() {
        on_its_own_thread(|| {
            let before = nice_of_this_thread();
            let priority = FlushPriority::default();
            // Far ahead of an empty fresh layer: a background flush would lower itself here.
            let mut pacer = Pacer::new(&priority, 1_000, false);
            for _ in 0..1_000 {
                pacer.step();
            }
            assert!(!pacer.lowered());
            assert_eq!(nice_of_this_thread(), before);
        });
    }

    #[test]
    fn a_background_flush_rises_while_behind_and_lowers_itself_once_ahead() {
        on_its_own_thread(|| {
            let priority = FlushPriority::default();
            assert!(lower_this_thread());
            let mut pacer = Pacer::new(&priority, 10 * CHECK_EVERY, true);
            // The fresh layer is already full: everything is due, so the first check rises.
            priority.set_fill(1_000);
            pacer.step();
            let raised = !pacer.lowered();
            // Raising needs the privilege to; without it the flush stays lowered for good.
            assert_eq!(nice_of_this_thread(), if raised { NORMAL } else { LOWEST });
            if !raised {
                return;
            }
            // The layer emptied (a new one began): at the next check the flush is well ahead.
            priority.set_fill(0);
            for _ in 0..CHECK_EVERY {
                pacer.step();
            }
            assert!(pacer.lowered());
            assert_eq!(nice_of_this_thread(), LOWEST);
            // The node waits: back to normal priority at the next check.
            priority.hurry();
            for _ in 0..CHECK_EVERY {
                pacer.step();
            }
            assert!(!pacer.lowered());
            assert_eq!(nice_of_this_thread(), NORMAL);
        });
    }

    #[test]
    fn a_flush_is_behind_while_its_progress_trails_the_fresh_layers_fill() {
        let priority = FlushPriority::default();
        // An empty fresh layer: nothing is due yet.
        assert!(!priority.behind(0, 1_000));
        assert!(priority.well_ahead(100, 1_000));
        assert!(!priority.well_ahead(99, 1_000));
        priority.set_fill(400);
        // Half the writes are due at two fifths full.
        assert!(priority.behind(499, 1_000));
        assert!(!priority.behind(500, 1_000));
        assert!(!priority.well_ahead(599, 1_000));
        assert!(priority.well_ahead(600, 1_000));
        // From four fifths on, everything is due.
        priority.set_fill(800);
        assert!(priority.behind(999, 1_000));
        priority.set_fill(2_000);
        assert!(priority.behind(999, 1_000));
        assert!(!priority.behind(1_000, 1_000));
        assert!(!priority.well_ahead(1_000, 1_000));
        // A flush with nothing to write is never behind.
        assert!(!priority.behind(0, 0));
    }

    #[test]
    fn hurrying_is_seen_by_the_flush() {
        let priority = FlushPriority::default();
        assert!(!priority.is_urgent());
        priority.hurry();
        assert!(priority.is_urgent());
    }
}
