//! Per-peer rate limits, misbehaviour scores and bans. Pure bookkeeping: time comes in as an
//! argument, so the rules are unit-tested without sockets or sleeping.
//!
//! The rate policy (ADR 0010): every peer has one allowance of `messages_per_second` for the
//! messages it *originates*: gossip it published (charged to the gossip's named `source`,
//! whoever forwarded it), and direct messages and requests on its own connections. Gossip a peer
//! merely forwards is charged to its publisher, plus a much larger relay allowance of the
//! forwarding connection, so that one connection cannot push unbounded gossip under throwaway
//! names. Over an allowance a message is dropped (gossip is ignored: not delivered, not relayed)
//! at no cost to the peer's score; only a peer that goes on sending at least twice its allowance
//! for a whole [`RATE_WINDOW`], on its own connection, is scored down, so a sustained flood ends in
//! a ban while a burst, or traffic someone else published, never does.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::PeerId;

/// The score at or below which a peer is banned.
pub const BAN_THRESHOLD: i32 = -100;
/// How often scores recover towards zero.
pub const SCORE_DECAY_INTERVAL: Duration = Duration::from_secs(10);
/// The share of a negative score forgiven per decay interval, in percent. An honest peer that
/// once sent something odd recovers within minutes; a steady offender does not.
pub const SCORE_DECAY_PERCENT: i32 = 10;
/// Most peers with a score or rate allowance tracked (each kind); peers beyond it are not tracked
/// until others go idle or leave. Connection limits, and forgetting idle allowances, keep the
/// real number far lower.
pub const MAX_TRACKED_PEERS: usize = 10_000;
/// The span over which excess is counted: a peer whose dropped messages within one window reach
/// its whole allowance (it sent at least twice the rate) earns one [`Misbehaviour::RateLimited`].
pub const RATE_WINDOW: Duration = Duration::from_secs(1);
/// A connection may forward gossip published by others at this many times the per-peer rate.
/// Generous because a well-connected honest peer relays the traffic of many publishers; it only
/// has to bound what one connection can push with messages naming publishers made up for the
/// purpose.
pub const RELAY_ALLOWANCE_FACTOR: u32 = 10;

/// Something a peer did wrong. The network reports oversize and flooding itself; the node
/// reports content it found invalid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Misbehaviour {
    /// A message that does not decode or breaks a validation rule.
    InvalidMessage,
    /// A message with a signature that does not verify.
    BadSignature,
    /// A message over its size limit.
    Oversized,
    /// A whole [`RATE_WINDOW`] of messages beyond the peer's rate limit.
    RateLimited,
    /// A protocol breach short of invalid content, e.g. an unsolicited or useless response.
    ProtocolViolation,
}

impl Misbehaviour {
    /// How much the score drops. Chosen so that a handful of invalid messages, two oversized
    /// ones, one bad signature pair or about five seconds of flooding at twice the rate end in
    /// a ban.
    pub const fn penalty(self) -> i32 {
        match self {
            Misbehaviour::InvalidMessage => 20,
            Misbehaviour::BadSignature => 50,
            Misbehaviour::Oversized => 50,
            Misbehaviour::RateLimited => 20,
            Misbehaviour::ProtocolViolation => 10,
        }
    }
}

/// A token bucket: `capacity` tokens, refilled at `capacity` per second, so a peer may burst one
/// second's allowance and then sustain the configured rate.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    capacity: u32,
    /// Tokens scaled by 1000, so refills of a fraction of a token are not lost.
    milli_tokens: u64,
    last_refill: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(capacity: u32, now: Instant) -> TokenBucket {
        TokenBucket {
            capacity,
            milli_tokens: u64::from(capacity) * 1000,
            last_refill: now,
        }
    }

    /// Takes one token; `false` if the bucket is empty.
    pub fn try_take(&mut self, now: Instant) -> bool {
        let elapsed_ms = now.saturating_duration_since(self.last_refill).as_millis();
        let refill = u64::try_from(elapsed_ms)
            .unwrap_or(u64::MAX)
            .saturating_mul(u64::from(self.capacity));
        let full = u64::from(self.capacity) * 1000;
        self.milli_tokens = self.milli_tokens.saturating_add(refill).min(full);
        self.last_refill = now;
        if self.milli_tokens >= 1000 {
            self.milli_tokens -= 1000;
            true
        } else {
            false
        }
    }

    /// Whether the bucket has refilled completely by `now`: it then holds no memory of the
    /// past and can be dropped and recreated at will.
    pub fn is_full(&self, now: Instant) -> bool {
        let missing = (u64::from(self.capacity) * 1000).saturating_sub(self.milli_tokens);
        let elapsed_ms = now.saturating_duration_since(self.last_refill).as_millis();
        u128::from(missing) <= elapsed_ms.saturating_mul(u128::from(self.capacity))
    }
}

/// What the rate policy decides about one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Within the allowances: deliver (and, for gossip, relay).
    Admit,
    /// Over an allowance: drop it (gossip: ignore, neither deliver nor relay); nobody's score
    /// changes.
    Drop,
    /// Over an allowance, and this peer has kept sending at least twice its rate for a whole
    /// [`RATE_WINDOW`]: drop it and score the peer down with [`Misbehaviour::RateLimited`].
    DropAndPenalise(PeerId),
}

/// One rate allowance: a token bucket and the count of messages dropped in the current window.
#[derive(Clone, Debug)]
struct Allowance {
    bucket: TokenBucket,
    window_start: Instant,
    dropped_in_window: u32,
}

impl Allowance {
    fn new(capacity: u32, now: Instant) -> Allowance {
        Allowance {
            bucket: TokenBucket::new(capacity, now),
            window_start: now,
            dropped_in_window: 0,
        }
    }

    /// Takes one token. `accountable` says whether the peer this allowance belongs to sent the
    /// message to us itself; only then does its excess count towards a penalty.
    fn charge(&mut self, now: Instant, accountable: bool) -> Charge {
        if self.bucket.try_take(now) {
            return Charge::Within;
        }
        if !accountable {
            return Charge::Over;
        }
        if now.saturating_duration_since(self.window_start) >= RATE_WINDOW {
            self.window_start = now;
            self.dropped_in_window = 0;
        }
        self.dropped_in_window = self.dropped_in_window.saturating_add(1);
        // Exactly once per window, when the excess reaches a whole second's allowance.
        if self.dropped_in_window == self.bucket.capacity {
            Charge::Sustained
        } else {
            Charge::Over
        }
    }

    fn is_idle(&self, now: Instant) -> bool {
        self.bucket.is_full(now) && now.saturating_duration_since(self.window_start) >= RATE_WINDOW
    }
}

enum Charge {
    Within,
    Over,
    Sustained,
}

/// Allowances of one kind (own messages or relayed gossip), bounded in number.
#[derive(Debug)]
struct Allowances {
    capacity: u32,
    by_peer: HashMap<PeerId, Allowance>,
}

impl Allowances {
    fn new(capacity: u32) -> Allowances {
        Allowances {
            capacity,
            by_peer: HashMap::new(),
        }
    }

    fn charge(&mut self, peer: PeerId, now: Instant, accountable: bool) -> Admission {
        if !self.by_peer.contains_key(&peer) && self.by_peer.len() >= MAX_TRACKED_PEERS {
            // Untracked peers are refused rather than let through unmetered.
            return Admission::Drop;
        }
        let capacity = self.capacity;
        let allowance = self
            .by_peer
            .entry(peer)
            .or_insert_with(|| Allowance::new(capacity, now));
        match allowance.charge(now, accountable) {
            Charge::Within => Admission::Admit,
            Charge::Over => Admission::Drop,
            Charge::Sustained => Admission::DropAndPenalise(peer),
        }
    }
}

/// What happened after a penalty.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The peer stays, with this score.
    Scored(i32),
    /// The peer crossed the threshold and must be banned.
    Ban,
}

/// Scores and rate allowances of the peers we talk to.
#[derive(Debug)]
pub struct PeerScores {
    scores: HashMap<PeerId, i32>,
    /// What each peer originates: gossip it published, direct messages and requests it sent.
    own: Allowances,
    /// Gossip each connection forwards on behalf of other publishers.
    relay: Allowances,
    last_decay: Instant,
}

impl PeerScores {
    /// Empty bookkeeping with the given rate limit.
    pub fn new(messages_per_second: u32, now: Instant) -> PeerScores {
        PeerScores {
            scores: HashMap::new(),
            own: Allowances::new(messages_per_second),
            relay: Allowances::new(messages_per_second.saturating_mul(RELAY_ALLOWANCE_FACTOR)),
            last_decay: now,
        }
    }

    /// Rates a direct message, request or other non-gossip message that `peer` sent us on its
    /// own connection: charged to `peer`.
    pub fn admit_message(&mut self, peer: PeerId, now: Instant) -> Admission {
        self.own.charge(peer, now, true)
    }

    /// Rates one gossip message that `from` forwarded to us and `source` published (the
    /// authenticated signer; `None` only for unsigned gossip, which is then `from`'s own).
    /// Charged to the publisher; when `from` only relays it, also to `from`'s relay allowance.
    /// A publisher is only ever penalised for what it sent us itself: someone else relaying (or
    /// replaying) its messages can at most exhaust its allowance here, never get it banned.
    pub fn admit_gossip(
        &mut self,
        source: Option<PeerId>,
        from: PeerId,
        now: Instant,
    ) -> Admission {
        let publisher = source.unwrap_or(from);
        if publisher != from {
            let relayed = self.relay.charge(from, now, true);
            if relayed != Admission::Admit {
                return relayed;
            }
        }
        self.own.charge(publisher, now, publisher == from)
    }

    /// Lowers `peer`'s score.
    pub fn penalise(&mut self, peer: PeerId, misbehaviour: Misbehaviour) -> Verdict {
        if !self.scores.contains_key(&peer) && self.scores.len() >= MAX_TRACKED_PEERS {
            return Verdict::Ban;
        }
        let score = self.scores.entry(peer).or_insert(0);
        *score = score.saturating_sub(misbehaviour.penalty());
        if *score <= BAN_THRESHOLD {
            self.scores.remove(&peer);
            Verdict::Ban
        } else {
            Verdict::Scored(*score)
        }
    }

    /// `peer`'s current score (0 if it never misbehaved).
    pub fn score(&self, peer: &PeerId) -> i32 {
        self.scores.get(peer).copied().unwrap_or(0)
    }

    /// Forgets a peer that disconnected: its relay allowance goes, its score stays until it
    /// decays, so reconnecting does not wash a bad score clean. Its own allowance stays too, as
    /// its gossip may still reach us through others; [`PeerScores::forget_idle`] drops it once
    /// it is full again.
    pub fn disconnected(&mut self, peer: &PeerId) {
        self.relay.by_peer.remove(peer);
    }

    /// Forgets a banned peer entirely; the ban itself is kept elsewhere.
    pub fn remove(&mut self, peer: &PeerId) {
        self.own.by_peer.remove(peer);
        self.relay.by_peer.remove(peer);
        self.scores.remove(peer);
    }

    /// Drops the allowances that have refilled and have no excess pending: a new one would be
    /// the same. Publishers we are not connected to would otherwise pile up.
    pub fn forget_idle(&mut self, now: Instant) {
        for allowances in [&mut self.own, &mut self.relay] {
            allowances
                .by_peer
                .retain(|_, allowance| !allowance.is_idle(now));
        }
    }

    /// Number of allowances tracked (own and relay).
    #[cfg(test)]
    fn tracked_allowances(&self) -> usize {
        self.own.by_peer.len() + self.relay.by_peer.len()
    }

    /// Lets scores recover once per [`SCORE_DECAY_INTERVAL`].
    pub fn decay(&mut self, now: Instant) {
        if now.saturating_duration_since(self.last_decay) < SCORE_DECAY_INTERVAL {
            return;
        }
        self.last_decay = now;
        for score in self.scores.values_mut() {
            // Rounds towards zero but always moves, so small scores reach zero too.
            let forgiven = (-*score * SCORE_DECAY_PERCENT / 100).max(1);
            *score = (*score + forgiven).min(0);
        }
        self.scores.retain(|_, score| *score < 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_a_burst_then_the_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10, start);
        assert_eq!((0..20).filter(|_| bucket.try_take(start)).count(), 10);
        // A tenth of a second refills one token.
        let later = start + Duration::from_millis(100);
        assert!(bucket.try_take(later));
        assert!(!bucket.try_take(later));
        // A long pause never fills beyond capacity.
        let much_later = later + Duration::from_secs(60);
        assert_eq!((0..20).filter(|_| bucket.try_take(much_later)).count(), 10);
    }

    #[test]
    fn repeated_invalid_messages_ban() {
        let now = Instant::now();
        let mut scores = PeerScores::new(10, now);
        let peer = PeerId::random();
        for expected in [-20, -40, -60, -80] {
            assert_eq!(
                scores.penalise(peer, Misbehaviour::InvalidMessage),
                Verdict::Scored(expected)
            );
        }
        assert_eq!(
            scores.penalise(peer, Misbehaviour::InvalidMessage),
            Verdict::Ban
        );
        assert_eq!(scores.score(&peer), 0, "a banned peer's score is dropped");
    }

    #[test]
    fn scores_decay_to_zero() {
        let mut now = Instant::now();
        let mut scores = PeerScores::new(10, now);
        let peer = PeerId::random();
        scores.penalise(peer, Misbehaviour::BadSignature);
        scores.decay(now);
        assert_eq!(scores.score(&peer), -50, "no decay before the interval");
        now += SCORE_DECAY_INTERVAL;
        scores.decay(now);
        assert_eq!(scores.score(&peer), -45);
        for _ in 0..100 {
            now += SCORE_DECAY_INTERVAL;
            scores.decay(now);
        }
        assert_eq!(scores.score(&peer), 0);
    }

    /// Sends `count` messages from `peer` at `now`, returning how many were admitted and the
    /// penalties earned.
    fn burst(
        scores: &mut PeerScores,
        count: u32,
        mut rate: impl FnMut(&mut PeerScores) -> Admission,
    ) -> (u32, Vec<PeerId>) {
        let (mut admitted, mut penalised) = (0, Vec::new());
        for _ in 0..count {
            match rate(scores) {
                Admission::Admit => admitted += 1,
                Admission::Drop => {}
                Admission::DropAndPenalise(peer) => penalised.push(peer),
            }
        }
        (admitted, penalised)
    }

    #[test]
    fn rate_is_per_peer() {
        let now = Instant::now();
        let mut scores = PeerScores::new(2, now);
        let (flooder, honest) = (PeerId::random(), PeerId::random());
        assert_eq!(scores.admit_message(flooder, now), Admission::Admit);
        assert_eq!(scores.admit_message(flooder, now), Admission::Admit);
        assert_eq!(scores.admit_message(flooder, now), Admission::Drop);
        assert_eq!(scores.admit_message(honest, now), Admission::Admit);
    }

    #[test]
    fn excess_is_dropped_and_only_a_window_of_double_rate_is_penalised() {
        let start = Instant::now();
        let mut scores = PeerScores::new(10, start);
        let peer = PeerId::random();
        // The burst allowance, then nine drops that cost nothing, then the tenth: the peer has
        // now sent twice its rate within the window.
        let (admitted, penalised) = burst(&mut scores, 19, |s| s.admit_message(peer, start));
        assert_eq!((admitted, penalised.len()), (10, 0));
        assert_eq!(
            scores.admit_message(peer, start),
            Admission::DropAndPenalise(peer)
        );
        // Once per window, however much more it sends.
        let (_, penalised) = burst(&mut scores, 1000, |s| s.admit_message(peer, start));
        assert!(penalised.is_empty());
        // The next window counts afresh.
        let next = start + RATE_WINDOW;
        let (admitted, penalised) = burst(&mut scores, 20, |s| s.admit_message(peer, next));
        assert_eq!((admitted, penalised), (10, vec![peer]));
    }

    #[test]
    fn a_peer_somewhat_over_its_rate_loses_messages_but_is_never_penalised() {
        let mut now = Instant::now();
        let mut scores = PeerScores::new(100, now);
        let peer = PeerId::random();
        let mut admitted = 0;
        // A minute at 1.5 times the rate, in bursts every 100 ms.
        for _ in 0..600 {
            let (taken, penalised) = burst(&mut scores, 15, |s| s.admit_message(peer, now));
            assert!(penalised.is_empty(), "penalised for a moderate excess");
            admitted += taken;
            now += Duration::from_millis(100);
        }
        // The burst plus the rate: the excess was dropped.
        assert!((6000..=6100).contains(&admitted), "{admitted} admitted");
    }

    #[test]
    fn gossip_is_charged_to_its_publisher_not_to_the_peer_relaying_it() {
        let now = Instant::now();
        let mut scores = PeerScores::new(10, now);
        let relay = PeerId::random();
        let publishers: Vec<PeerId> = (0..5).map(|_| PeerId::random()).collect();
        // Five publishers each within their rate, all forwarded by one peer: five times the
        // per-peer rate through one connection, all of it admitted.
        for publisher in &publishers {
            let (admitted, penalised) = burst(&mut scores, 10, |s| {
                s.admit_gossip(Some(*publisher), relay, now)
            });
            assert_eq!((admitted, penalised.len()), (10, 0));
        }
        // The relay's own allowance is untouched by what it forwarded.
        let (admitted, _) = burst(&mut scores, 10, |s| s.admit_gossip(Some(relay), relay, now));
        assert_eq!(admitted, 10);
        let (admitted, _) = burst(&mut scores, 1, |s| s.admit_message(relay, now));
        assert_eq!(
            admitted, 0,
            "gossip and direct messages share the peer's own allowance"
        );
    }

    #[test]
    fn a_publisher_is_penalised_for_what_it_sent_itself_never_for_what_others_relay() {
        let now = Instant::now();
        let mut scores = PeerScores::new(10, now);
        let (publisher, relay) = (PeerId::random(), PeerId::random());
        // Far over the publisher's rate, but all of it relayed (or replayed) by someone else:
        // dropped, and nobody is penalised (the relay stays within its larger allowance).
        let (admitted, penalised) = burst(&mut scores, 90, |s| {
            s.admit_gossip(Some(publisher), relay, now)
        });
        assert_eq!((admitted, penalised.len()), (10, 0));
        // The same publisher flooding us itself is penalised.
        let (admitted, penalised) = burst(&mut scores, 10, |s| {
            s.admit_gossip(Some(publisher), publisher, now)
        });
        assert_eq!((admitted, penalised), (0, vec![publisher]));
    }

    #[test]
    fn one_connection_cannot_relay_without_bound_for_throwaway_publishers() {
        let now = Instant::now();
        let mut scores = PeerScores::new(10, now);
        let relay = PeerId::random();
        // Every message names a fresh publisher: each is within its rate, so only the
        // relay allowance stops it.
        let relay_capacity = 10 * RELAY_ALLOWANCE_FACTOR;
        let (admitted, penalised) = burst(&mut scores, 2 * relay_capacity, |s| {
            s.admit_gossip(Some(PeerId::random()), relay, now)
        });
        assert_eq!((admitted, penalised), (relay_capacity, vec![relay]));
    }

    #[test]
    fn refilled_allowances_are_forgotten() {
        let start = Instant::now();
        let mut scores = PeerScores::new(10, start);
        let (quiet, busy) = (PeerId::random(), PeerId::random());
        scores.admit_gossip(Some(quiet), PeerId::random(), start);
        burst(&mut scores, 15, |s| s.admit_message(busy, start));
        assert_eq!(scores.tracked_allowances(), 3);
        // 100 ms later the quiet publisher's one token is back, but its relay's window of
        // excess counting is still open, and the busy peer is still short of tokens.
        scores.forget_idle(start + Duration::from_millis(100));
        assert_eq!(scores.tracked_allowances(), 3);
        scores.forget_idle(start + RATE_WINDOW);
        assert_eq!(scores.tracked_allowances(), 0);
    }
}
