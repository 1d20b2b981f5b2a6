//! The background flush's CPU priority (ADR 0019): the lowest while the node does not need the
//! flush, the node's own once the node waits for it.
//!
//! At the lowest priority a flush uses only the CPU the node leaves idle, so it never competes
//! with consensus. But when the next cache layer fills first, the node waits for the flush, and
//! a flush still at the lowest priority then finishes slowly on a busy machine: a priority
//! inversion. So the flush checks, every few hundred writes, whether it is being waited for, and
//! then asks for its normal priority back. That needs `CAP_SYS_NICE` or an `RLIMIT_NICE` of at
//! least 20 (systemd: `LimitNICE=+0`, nice 0 allowed); without either the flush stays at
//! the lowest priority, as before.

use std::sync::atomic::{AtomicBool, Ordering};

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
}

/// Lowers the calling thread to the lowest priority. Best effort: a failure leaves the flush at
/// normal priority, which is only slower for the node. On Linux a nice value belongs to a
/// thread, so this leaves the node's other threads alone.
pub(crate) fn lower_this_thread() {
    #[cfg(target_os = "linux")]
    let _ = rustix::process::setpriority_process(Some(rustix::thread::gettid()), LOWEST);
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

    fn nice_of_this_thread() -> i32 {
        rustix::process::getpriority_process(Some(rustix::thread::gettid()))
            .expect("reading this thread's nice value")
    }

    #[test]
    fn a_lowered_thread_gets_its_priority_back_where_the_system_allows_it() {
        std::thread::spawn(|| {
            lower_this_thread();
            assert_eq!(nice_of_this_thread(), LOWEST);
            let restored = restore_this_thread();
            // Privileged (or with RLIMIT_NICE) the thread is back at normal priority; otherwise
            // the request is refused and it stays where it was.
            let expected = if restored { NORMAL } else { LOWEST };
            assert_eq!(nice_of_this_thread(), expected);
        })
        .join()
        .expect("the test thread");
    }

    #[test]
    fn hurrying_is_seen_by_the_flush() {
        let priority = FlushPriority::default();
        assert!(!priority.is_urgent());
        priority.hurry();
        assert!(priority.is_urgent());
    }
}
