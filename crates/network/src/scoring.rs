//! Per-peer rate limits, misbehaviour scores and bans. Pure bookkeeping: time comes in as an
//! argument, so the rules are unit-tested without sockets or sleeping.

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
/// Most peers with a score or rate bucket tracked; peers beyond it are not tracked until others
/// leave. Connection limits keep the real number far lower.
pub const MAX_TRACKED_PEERS: usize = 10_000;

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
    /// A message beyond the peer's rate limit.
    RateLimited,
    /// A protocol breach short of invalid content, e.g. an unsolicited or useless response.
    ProtocolViolation,
}

impl Misbehaviour {
    /// How much the score drops. Chosen so that a handful of invalid messages, two oversized
    /// ones, one bad signature pair or a sustained flood end in a ban.
    pub const fn penalty(self) -> i32 {
        match self {
            Misbehaviour::InvalidMessage => 20,
            Misbehaviour::BadSignature => 50,
            Misbehaviour::Oversized => 50,
            Misbehaviour::RateLimited => 2,
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
}

/// What happened after a penalty.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The peer stays, with this score.
    Scored(i32),
    /// The peer crossed the threshold and must be banned.
    Ban,
}

/// Scores and rate buckets of the peers we talk to.
#[derive(Debug)]
pub struct PeerScores {
    messages_per_second: u32,
    scores: HashMap<PeerId, i32>,
    buckets: HashMap<PeerId, TokenBucket>,
    last_decay: Instant,
}

impl PeerScores {
    /// Empty bookkeeping with the given rate limit.
    pub fn new(messages_per_second: u32, now: Instant) -> PeerScores {
        PeerScores {
            messages_per_second,
            scores: HashMap::new(),
            buckets: HashMap::new(),
            last_decay: now,
        }
    }

    /// Whether `peer` may send one more message now.
    pub fn allow_message(&mut self, peer: PeerId, now: Instant) -> bool {
        if !self.buckets.contains_key(&peer) && self.buckets.len() >= MAX_TRACKED_PEERS {
            // Untracked peers are refused rather than let through unmetered.
            return false;
        }
        self.buckets
            .entry(peer)
            .or_insert_with(|| TokenBucket::new(self.messages_per_second, now))
            .try_take(now)
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

    /// Forgets a peer that disconnected: its rate bucket goes, its score stays until it decays,
    /// so reconnecting does not wash a bad score clean.
    pub fn disconnected(&mut self, peer: &PeerId) {
        self.buckets.remove(peer);
    }

    /// Forgets a banned peer entirely; the ban itself is kept elsewhere.
    pub fn remove(&mut self, peer: &PeerId) {
        self.buckets.remove(peer);
        self.scores.remove(peer);
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

    #[test]
    fn rate_is_per_peer() {
        let now = Instant::now();
        let mut scores = PeerScores::new(2, now);
        let (flooder, honest) = (PeerId::random(), PeerId::random());
        assert!(scores.allow_message(flooder, now));
        assert!(scores.allow_message(flooder, now));
        assert!(!scores.allow_message(flooder, now));
        assert!(scores.allow_message(honest, now));
    }
}
