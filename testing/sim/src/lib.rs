//! The deterministic TimeCoin simulator.
//!
//! It runs N nodes — the very `timecoin-node` state machine the daemon runs — over a simulated
//! network, clock and disk, all driven by one seed: the same seed gives the same run, event for
//! event. A run has two phases:
//!
//! 1. **Safety phase**: messages are delayed, dropped, duplicated and reordered; partitions
//!    (some one-way) form and heal; nodes crash (losing everything not yet durable on their
//!    [`timecoin_storage::MemoryBackend`]) and restart; clocks are skewed; up to f weight of
//!    masternodes is Byzantine ([`Behaviour`]), Twins included; clients send payments, chains
//!    of dependent payments, double-spend races, and register and deregister masternodes.
//! 2. **Liveness phase**: network faults heal and crashed nodes restart (at most f faulty
//!    weight remains); every valid submitted transaction must end up in a committed block and
//!    blocks must keep being committed.
//!
//! After every step the [`checker::Checker`] verifies the architecture's invariants: no two
//! conflicting transactions certified; one block per height; no block conflicting with a
//! certified transaction; value conserved with matching UTXO commitments; no honest masternode
//! signing two different statements for one slot or two conflicting transactions in one epoch
//! (across restarts), and every signed message durable on the sender's disk before it is sent.
//! A failure names its seed; `SIM_SEED=<seed> cargo test -p timecoin-sim --test sim replay`
//! replays it exactly.

pub mod byzantine;
pub mod checker;
pub mod world;

pub use byzantine::Behaviour;
pub use checker::{Checker, Violation};
pub use world::{Faults, SimConfig, SimFailure, SimReport, Step, run};

/// SplitMix64: small, fast, and the same on every platform.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x005e_ed0f_7153_c011)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A value in `0..bound` (0 if `bound` is 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        if bound == 0 {
            0
        } else {
            self.next_u64() % bound
        }
    }

    /// True with probability `per_mille`/1000.
    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }

    /// A value in `low..=high`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.below(high.saturating_sub(low) + 1)
    }
}
