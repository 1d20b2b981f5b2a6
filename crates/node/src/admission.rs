//! Client admission under overload (ADR 0026).
//!
//! A payment is worth taking only if it can be final soon. Past what the masternodes can
//! finalize, every extra payment a node admits waits in the pool behind the others, so all of
//! them get slower, and the machines spend their time on queues instead of votes. So a node
//! refuses *new client* transactions while its backlog of transactions collecting votes is
//! longer than what the network has lately finalized in [`AdmissionConfig::backlog_ms`].
//! By Little's law that bounds the pool's mean wait near that figure, whatever the machine's
//! capacity. The client gets a "busy" answer at once and may retry; nothing is lost.
//!
//! Only a standing backlog counts: the pool must have stayed at or over the limit for
//! [`AdmissionConfig::standing_ms`]. Near capacity it passes the limit for moments (a block being
//! applied, a flush), and refusing then turned bursts the network absorbs into refusals: 0.18% of
//! the payments at this machine's knee (ADR 0026). The same test is CoDel's, on queue delay. And
//! as in CoDel, a backlog back over the limit soon after the last refusal is the same overload:
//! clients are refused again at once.
//!
//! Transactions from peers are never refused this way: another node admitted them, and
//! refusing to vote would only make them slower to finalize.

/// How long a window of finalizations lasts before the rate is taken from it.
const WINDOW_MS: u64 = 1_000;
/// A backlog back over the limit this soon after clients were last refused is the same
/// overload, not a new burst: they are refused again at once, without the standing wait.
const RECENT_MS: u64 = 5_000;

/// The admission settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdmissionConfig {
    /// Refuse new client transactions while more transactions are collecting votes than the
    /// network finalized in this many milliseconds of the last full second. 0 turns the limit
    /// off (the pool's own limits still apply).
    pub backlog_ms: u64,
    /// The limit never falls below this many transactions, so an idle node (which has lately
    /// finalized nothing) still takes a burst.
    pub min_backlog: usize,
    /// How long the backlog must have stayed at or over the limit before clients are refused.
    pub standing_ms: u64,
}

impl Default for AdmissionConfig {
    fn default() -> AdmissionConfig {
        AdmissionConfig {
            backlog_ms: 250,
            min_backlog: 1_000,
            standing_ms: 500,
        }
    }
}

/// Counts finalizations per window and decides whether a client transaction may enter.
#[derive(Clone, Debug)]
pub(crate) struct Admission {
    config: AdmissionConfig,
    window_start_ms: u64,
    finalized_in_window: u64,
    /// Finalizations per second in the last full window.
    rate_per_s: u64,
    /// Client transactions refused since the node started.
    refused: u64,
    /// Since when the backlog has been at or over the limit, at every look.
    over_since: Option<u64>,
    /// Whether clients are refused: the backlog has stood over the limit long enough.
    refusing: bool,
    /// When clients were last refused.
    last_refusal_ms: Option<u64>,
}

impl Admission {
    pub(crate) fn new(config: AdmissionConfig, now_ms: u64) -> Admission {
        Admission {
            config,
            window_start_ms: now_ms,
            finalized_in_window: 0,
            rate_per_s: 0,
            refused: 0,
            over_since: None,
            refusing: false,
            last_refusal_ms: None,
        }
    }

    /// Counts one transaction finalized at `now_ms`.
    pub(crate) fn finalized(&mut self, now_ms: u64) {
        self.roll(now_ms);
        self.finalized_in_window += 1;
    }

    /// Closes the window if it is over. A window that ran long (no finalization came to close
    /// it) gives its average over its whole length, which is what an idle spell deserves.
    fn roll(&mut self, now_ms: u64) {
        let elapsed = now_ms.saturating_sub(self.window_start_ms);
        if elapsed >= WINDOW_MS {
            self.rate_per_s = self.finalized_in_window.saturating_mul(1_000) / elapsed;
            self.finalized_in_window = 0;
            self.window_start_ms = now_ms;
        }
    }

    /// The most transactions that may be collecting votes when a client's arrives, or `None`
    /// when the limit is off.
    pub(crate) fn limit(&self) -> Option<usize> {
        if self.config.backlog_ms == 0 {
            return None;
        }
        let by_rate = self.rate_per_s.saturating_mul(self.config.backlog_ms) / 1_000;
        Some(
            usize::try_from(by_rate)
                .unwrap_or(usize::MAX)
                .max(self.config.min_backlog),
        )
    }

    /// Looks at the backlog, `pending` transactions collecting votes at `now_ms`: the node does
    /// after every step, and before every decision.
    pub(crate) fn observe(&mut self, pending: usize, now_ms: u64) {
        self.roll(now_ms);
        match self.limit() {
            Some(limit) if pending >= limit => {
                let since = *self.over_since.get_or_insert(now_ms);
                let recent = self
                    .last_refusal_ms
                    .is_some_and(|at| now_ms.saturating_sub(at) <= RECENT_MS);
                self.refusing = recent || now_ms.saturating_sub(since) >= self.config.standing_ms;
                if self.refusing {
                    self.last_refusal_ms = Some(now_ms);
                }
            }
            _ => {
                self.over_since = None;
                self.refusing = false;
            }
        }
    }

    /// Whether a client transaction may enter with `pending` transactions collecting votes;
    /// a refusal is counted.
    pub(crate) fn admits(&mut self, pending: usize, now_ms: u64) -> bool {
        self.observe(pending, now_ms);
        if self.refusing {
            self.refused += 1;
        }
        !self.refusing
    }

    /// Whether clients are refused, as of the last look.
    pub(crate) fn refusing(&self) -> bool {
        self.refusing
    }

    /// Finalizations per second in the last full window.
    pub(crate) fn rate_per_s(&self) -> u64 {
        self.rate_per_s
    }

    /// Client transactions refused so far.
    pub(crate) fn refused(&self) -> u64 {
        self.refused
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(backlog_ms: u64, min_backlog: usize, standing_ms: u64) -> AdmissionConfig {
        AdmissionConfig {
            backlog_ms,
            min_backlog,
            standing_ms,
        }
    }

    #[test]
    fn an_idle_node_admits_up_to_the_floor() {
        let mut admission = Admission::new(config(500, 100, 0), 0);
        assert!(admission.admits(99, 10));
        assert!(!admission.admits(100, 10));
        assert!(!admission.admits(5_000, 10));
        assert_eq!(admission.refused(), 2);
        assert_eq!(admission.limit(), Some(100));
    }

    #[test]
    fn the_limit_follows_the_rate_of_the_last_full_window() {
        let mut admission = Admission::new(config(500, 100, 0), 0);
        // 4,000 finalizations in the first second: the limit becomes half a second's worth.
        for i in 0..4_000u64 {
            admission.finalized(i / 4);
        }
        // Not yet rolled: the window is still open.
        assert_eq!(admission.limit(), Some(100));
        admission.finalized(1_000);
        assert_eq!(admission.rate_per_s(), 4_000);
        assert_eq!(admission.limit(), Some(2_000));
        assert!(admission.admits(1_999, 1_100));
        assert!(!admission.admits(2_000, 1_100));
        // A quiet spell: the next window closes with a low rate and the floor returns.
        assert!(!admission.admits(150, 5_000));
        assert_eq!(admission.rate_per_s(), 0);
        assert_eq!(admission.limit(), Some(100));
        assert!(admission.admits(99, 5_001));
    }

    #[test]
    fn only_a_backlog_that_stands_over_the_limit_refuses() {
        let mut admission = Admission::new(config(500, 100, 500), 0);
        // Over the limit for a moment, then back under: never refused.
        assert!(admission.admits(150, 100));
        admission.observe(400, 500);
        assert!(admission.admits(120, 599));
        admission.observe(80, 650);
        assert!(admission.admits(150, 1_000));
        assert!(!admission.refusing());
        // Over it from 1,000 on, at every look: refused from 1,500.
        admission.observe(200, 1_200);
        assert!(admission.admits(180, 1_499));
        assert!(!admission.admits(180, 1_500));
        assert!(admission.refusing());
        assert!(!admission.admits(101, 2_000));
        // Under it once: admitted again; back over it soon after, refused at once.
        assert!(admission.admits(99, 2_100));
        assert!(!admission.admits(300, 2_200));
        assert!(admission.admits(99, 2_300));
        // Long after the last refusal, a backlog over the limit must stand again.
        assert!(admission.admits(300, 7_301));
        assert!(admission.admits(300, 7_800));
        assert!(!admission.admits(300, 7_801));
        assert_eq!(admission.refused(), 4);
    }

    #[test]
    fn zero_turns_the_limit_off() {
        let mut admission = Admission::new(config(0, 100, 0), 0);
        assert_eq!(admission.limit(), None);
        assert!(admission.admits(usize::MAX, 1));
        assert!(!admission.refusing());
        assert_eq!(admission.refused(), 0);
    }

    #[test]
    fn observing_counts_no_refusal() {
        let mut admission = Admission::new(config(500, 10, 0), 0);
        admission.observe(10, 0);
        assert!(admission.refusing());
        assert_eq!(admission.refused(), 0);
        assert!(!admission.admits(10, 0));
        assert_eq!(admission.refused(), 1);
    }
}
