//! The finality feed behind the `waitforfinalized` RPC method: every transaction that became
//! final at this node, numbered in the order it did, so that a client watching many payments
//! (an exchange, a payment processor, `time-bench`) learns of each the moment the node does,
//! with one call for many, instead of polling `gettxfinality` for each payment in flight.
//!
//! The node loop records events after the step's durable sync, as it performs every other
//! action, so the feed never reports a finality the node could forget in a crash. RPC calls
//! read the feed directly, without a round trip through the node loop. Only the newest
//! [`FEED_CAPACITY`] events are kept; a client that falls further behind is told so
//! (`missed`) and checks what it waits for with `gettxfinality`.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use timecoin_node::NodeEvent;
use timecoin_primitives::hash::Txid;
use tokio::sync::watch;

/// Events kept: at 4,000 payments/s, the last 16 seconds.
pub const FEED_CAPACITY: usize = 65_536;
/// Most events one reply carries; the client asks again from the last one.
pub const MAX_FEED_REPLY: usize = 10_000;
/// The longest a call may wait for an event.
pub const MAX_FEED_WAIT: Duration = Duration::from_secs(60);

/// How a transaction became final.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinalStatus {
    /// Its finality certificate formed (or arrived): final, a block will carry it.
    Certified,
    /// A committed block carried it before this node saw its certificate.
    InBlock,
}

impl FinalStatus {
    /// The name `gettxfinality` uses for the same status.
    pub fn name(self) -> &'static str {
        match self {
            FinalStatus::Certified => "certified",
            FinalStatus::InBlock => "in_block",
        }
    }
}

/// One transaction that became final.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeedEvent {
    /// Its place in the feed: 1 for the first since the node started, then one more each.
    pub sequence: u64,
    /// The transaction.
    pub txid: Txid,
    /// How it became final.
    pub status: FinalStatus,
}

/// What one read of the feed found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeedPage {
    /// The events after the one asked from, oldest first, at most the limit asked for.
    pub events: Vec<FeedEvent>,
    /// The sequence to read from next: the last event's, or where the read started if none.
    pub last: u64,
    /// Whether events after the one asked from are no longer kept (or the sequence asked from
    /// is from before a restart: numbers start again at 1 in each process).
    pub missed: bool,
}

struct Ring {
    events: VecDeque<FeedEvent>,
    /// The sequence of the newest event, 0 before the first.
    newest: u64,
}

/// The feed, shared by the node loop (which records) and the RPC methods (which read).
pub struct FinalityFeed {
    /// Tells clients which process's numbering a sequence belongs to.
    id: u64,
    capacity: usize,
    ring: Mutex<Ring>,
    /// The newest sequence, for waiting readers.
    newest: watch::Sender<u64>,
}

impl FinalityFeed {
    /// An empty feed keeping the newest `capacity` events.
    pub fn new(capacity: usize) -> FinalityFeed {
        FinalityFeed {
            id: process_stamp(),
            capacity: capacity.max(1),
            ring: Mutex::new(Ring {
                events: VecDeque::new(),
                newest: 0,
            }),
            newest: watch::Sender::new(0),
        }
    }

    /// This process's feed identifier: a client that sees it change knows that sequence
    /// numbers started again.
    pub fn id(&self) -> u64 {
        self.id
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records the finality events among `events`, waking the readers waiting for one.
    pub fn record<'a>(&self, events: impl IntoIterator<Item = &'a NodeEvent>) {
        let newest = {
            let mut ring = self.ring();
            let before = ring.newest;
            for event in events {
                match event {
                    NodeEvent::TransactionFinalized { txid, .. } => {
                        self.push(&mut ring, *txid, FinalStatus::Certified)
                    }
                    NodeEvent::FinalInBlock { txids, .. } => {
                        for txid in txids {
                            self.push(&mut ring, *txid, FinalStatus::InBlock);
                        }
                    }
                    _ => {}
                }
            }
            if ring.newest == before {
                return;
            }
            ring.newest
        };
        self.newest.send_replace(newest);
    }

    fn push(&self, ring: &mut Ring, txid: Txid, status: FinalStatus) {
        ring.newest += 1;
        if ring.events.len() == self.capacity {
            ring.events.pop_front();
        }
        let sequence = ring.newest;
        ring.events.push_back(FeedEvent {
            sequence,
            txid,
            status,
        });
    }

    /// The events after sequence `since`, at most `limit`.
    pub fn read(&self, since: u64, limit: usize) -> FeedPage {
        let ring = self.ring();
        let oldest = ring.events.front().map_or(ring.newest + 1, |e| e.sequence);
        // A sequence beyond the newest comes from an earlier process: start over.
        let restarted = since > ring.newest;
        let since = if restarted { 0 } else { since };
        let missed = restarted || since + 1 < oldest;
        let skip = (since + 1).saturating_sub(oldest) as usize;
        let events: Vec<FeedEvent> = ring.events.iter().skip(skip).take(limit).copied().collect();
        let last = events.last().map_or(since, |e| e.sequence);
        FeedPage {
            events,
            last,
            missed,
        }
    }

    /// Like [`FinalityFeed::read`], but when nothing is newer than `since`, waits up to
    /// `timeout` for an event, or until `stop` turns true (the node shuts down).
    pub async fn wait(
        &self,
        since: u64,
        limit: usize,
        timeout: Duration,
        mut stop: watch::Receiver<bool>,
    ) -> FeedPage {
        let deadline = tokio::time::Instant::now() + timeout.min(MAX_FEED_WAIT);
        // Subscribed before reading, so an event recorded in between still wakes us.
        let mut newest = self.newest.subscribe();
        loop {
            let page = self.read(since, limit);
            if !page.events.is_empty() || page.missed || *stop.borrow() {
                return page;
            }
            tokio::select! {
                changed = newest.changed() => {
                    if changed.is_err() {
                        return page;
                    }
                }
                _ = stop.changed() => return self.read(since, limit),
                () = tokio::time::sleep_until(deadline) => return page,
            }
        }
    }
}

/// Distinct for every start of the process: the start time in nanoseconds, mixed with the
/// process id in case two processes start within the clock's resolution.
fn process_stamp() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 40)
}

#[cfg(test)]
mod tests {
    use super::*;
    use timecoin_primitives::hash::Hash32;
    use timecoin_primitives::{BlockHash, Height};

    fn txid(n: u8) -> Txid {
        Txid(Hash32([n; 32]))
    }

    fn certified(n: u8) -> NodeEvent {
        NodeEvent::TransactionFinalized {
            txid: txid(n),
            latency_ms: 5,
        }
    }

    fn txids(page: &FeedPage) -> Vec<Txid> {
        page.events.iter().map(|e| e.txid).collect()
    }

    #[test]
    fn events_are_numbered_in_order_and_read_from_where_the_client_left_off() {
        let feed = FinalityFeed::new(100);
        assert_eq!(
            feed.read(0, 10),
            FeedPage {
                events: vec![],
                last: 0,
                missed: false
            }
        );
        feed.record(&[
            certified(1),
            NodeEvent::BlockCommitted {
                height: Height(3),
                hash: BlockHash(Hash32([0; 32])),
                view: 0,
                transactions: 3,
                synced: false,
            },
            NodeEvent::FinalInBlock {
                height: Height(3),
                txids: vec![txid(2), txid(3)],
            },
        ]);
        let page = feed.read(0, 10);
        assert_eq!(txids(&page), vec![txid(1), txid(2), txid(3)]);
        assert_eq!(
            page.events.iter().map(|e| e.sequence).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert_eq!(page.events[0].status, FinalStatus::Certified);
        assert_eq!(page.events[2].status, FinalStatus::InBlock);
        assert_eq!((page.last, page.missed), (3, false));

        let page = feed.read(1, 1);
        assert_eq!((txids(&page), page.last), (vec![txid(2)], 2));
        let page = feed.read(3, 10);
        assert_eq!((page.events.len(), page.last, page.missed), (0, 3, false));
    }

    #[test]
    fn a_reader_that_fell_behind_the_kept_events_or_comes_from_a_restart_is_told() {
        let feed = FinalityFeed::new(3);
        feed.record(&(1..=5).map(certified).collect::<Vec<_>>());
        // Events 1 and 2 are gone.
        let page = feed.read(0, 10);
        assert!(page.missed);
        assert_eq!(txids(&page), vec![txid(3), txid(4), txid(5)]);
        assert!(feed.read(1, 10).missed);
        let page = feed.read(2, 10);
        assert!(!page.missed, "nothing after 2 was dropped");
        assert_eq!(page.events.len(), 3);
        // A sequence this process never reached: numbering started again.
        let page = feed.read(9, 10);
        assert!(page.missed);
        assert_eq!(txids(&page), vec![txid(3), txid(4), txid(5)]);
    }

    #[tokio::test]
    async fn a_waiting_reader_wakes_at_the_next_event_or_at_its_timeout_or_at_shutdown() {
        let feed = std::sync::Arc::new(FinalityFeed::new(10));
        let (stop, stopped) = watch::channel(false);

        let waiting = {
            let feed = feed.clone();
            let stopped = stopped.clone();
            tokio::spawn(async move { feed.wait(0, 10, Duration::from_secs(30), stopped).await })
        };
        tokio::task::yield_now().await;
        feed.record(&[certified(7)]);
        let page = tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("woken by the event, not the 30 s timeout")
            .unwrap();
        assert_eq!(txids(&page), vec![txid(7)]);

        let started = tokio::time::Instant::now();
        let page = feed
            .wait(1, 10, Duration::from_millis(50), stopped.clone())
            .await;
        assert!(page.events.is_empty());
        assert!(started.elapsed() >= Duration::from_millis(50));

        let waiting = {
            let feed = feed.clone();
            tokio::spawn(async move { feed.wait(1, 10, Duration::from_secs(30), stopped).await })
        };
        tokio::task::yield_now().await;
        stop.send_replace(true);
        let page = tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("woken by the shutdown")
            .unwrap();
        assert!(page.events.is_empty());
    }
}
