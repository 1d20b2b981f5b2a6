//! Chain parameters: the numbers each network's rules are built from.
//!
//! Everything here is an integer. The block reward halves on a fixed schedule so that the total
//! ever issued is a closed-form bound that [`ChainParams::total_subsidy`] computes exactly; genesis
//! may allocate at most [`ChainParams::genesis_allowance`], so issuance can never pass the cap.

use timecoin_primitives::{Amount, Epoch, Height, Network, Tier};

/// Hard limit on one transaction's canonical encoding, in bytes. Large enough for a reward paying
/// the maximum number of outputs or a transfer spending the maximum number of inputs.
pub const MAX_TRANSACTION_BYTES: usize = 1 << 20;

/// Hard limit on one block's canonical encoding, in bytes. Networks may choose less, never more.
pub const MAX_BLOCK_BYTES: usize = 16 << 20;

/// The collateral and voting weight of one masternode tier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TierParams {
    /// The exact amount a registration must lock.
    pub collateral: Amount,
    /// The voting weight a masternode of this tier carries.
    pub weight: u64,
}

/// The parameters of one network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainParams {
    /// The network these parameters belong to.
    pub network: Network,
    /// Bronze, Silver and Gold, in that order (indexed by `Tier as usize`).
    pub tiers: [TierParams; 3],
    /// The block subsidy at height 1, before any halving.
    pub initial_subsidy: Amount,
    /// Blocks between halvings of the subsidy.
    pub halving_interval_blocks: u64,
    /// The least fee a transaction pays per byte of its canonical encoding, in base units.
    pub min_fee_rate_units_per_byte: u64,
    /// Blocks per epoch: the committee changes only at multiples of this height.
    pub epoch_length_blocks: u64,
    /// The target time between blocks.
    pub block_interval_ms: u64,
    /// The largest transaction accepted, at most [`MAX_TRANSACTION_BYTES`].
    pub max_transaction_bytes: usize,
    /// The largest block accepted, at most [`MAX_BLOCK_BYTES`].
    pub max_block_bytes: usize,
}

fn time(whole: u64) -> Amount {
    Amount::from_time(whole).expect("parameter amounts are below the supply cap")
}

/// The tiers of the design document, shared by every network so that tests on devnet exercise
/// the production amounts.
fn standard_tiers() -> [TierParams; 3] {
    [
        TierParams {
            collateral: time(1_000),
            weight: 1,
        },
        TierParams {
            collateral: time(10_000),
            weight: 10,
        },
        TierParams {
            collateral: time(100_000),
            weight: 100,
        },
    ]
}

/// Four years of one-minute blocks.
const MAINNET_HALVING_INTERVAL_BLOCKS: u64 = 4 * 365 * 24 * 60;

impl ChainParams {
    /// The parameters of `network`.
    ///
    /// Mainnet and testnet: one-minute blocks, 100 TIME per block halving every four years (about
    /// 420 million TIME in total, leaving about 580 million for genesis), one-day epochs on
    /// mainnet. Devnet keeps the same tiers but has one-second blocks, ten-block epochs and a
    /// fast halving so that a laptop can watch the schedule run out.
    pub fn for_network(network: Network) -> ChainParams {
        match network {
            Network::Mainnet => ChainParams {
                network,
                tiers: standard_tiers(),
                initial_subsidy: time(100),
                halving_interval_blocks: MAINNET_HALVING_INTERVAL_BLOCKS,
                min_fee_rate_units_per_byte: 10,
                epoch_length_blocks: 24 * 60,
                block_interval_ms: 60_000,
                max_transaction_bytes: MAX_TRANSACTION_BYTES,
                max_block_bytes: 8 << 20,
            },
            Network::Testnet => ChainParams {
                network,
                epoch_length_blocks: 60,
                ..ChainParams::for_network(Network::Mainnet)
            },
            Network::Devnet => ChainParams {
                network,
                tiers: standard_tiers(),
                initial_subsidy: time(100),
                halving_interval_blocks: 1_000,
                min_fee_rate_units_per_byte: 1,
                epoch_length_blocks: 10,
                block_interval_ms: 1_000,
                max_transaction_bytes: MAX_TRANSACTION_BYTES,
                max_block_bytes: MAX_BLOCK_BYTES,
            },
        }
    }

    /// The collateral and weight of `tier`.
    pub fn tier(&self, tier: Tier) -> TierParams {
        self.tiers[tier as usize]
    }

    /// The new TIME a block at `height` may create. Genesis (height 0) has no subsidy: its
    /// allocations are counted separately. Shifting instead of dividing repeatedly makes the
    /// schedule exact: halving `n` pays `initial >> n` per block, zero from the 64th on.
    pub fn subsidy(&self, height: Height) -> Amount {
        if height.get() == 0 || self.halving_interval_blocks == 0 {
            return Amount::ZERO;
        }
        let halvings = (height.get() - 1) / self.halving_interval_blocks;
        if halvings >= 64 {
            return Amount::ZERO;
        }
        Amount::from_units(self.initial_subsidy.units() >> halvings)
            .expect("a halved subsidy stays below the cap")
    }

    /// Everything the subsidy schedule will ever issue, in base units; `u128` because a bad
    /// override could exceed `u64`.
    pub fn total_subsidy_units(&self) -> u128 {
        (0..64u32)
            .map(|halving| {
                u128::from(self.initial_subsidy.units() >> halving)
                    * u128::from(self.halving_interval_blocks)
            })
            .sum()
    }

    /// Everything the subsidy schedule will ever issue, if that fits under the supply cap.
    pub fn total_subsidy(&self) -> Option<Amount> {
        u64::try_from(self.total_subsidy_units())
            .ok()
            .and_then(|units| Amount::from_units(units).ok())
    }

    /// The most genesis may allocate (balances plus masternode collateral) so that genesis plus
    /// every future subsidy stays within the supply cap; `None` if the schedule alone exceeds it.
    pub fn genesis_allowance(&self) -> Option<Amount> {
        Amount::MAX.checked_sub(self.total_subsidy()?)
    }

    /// The least fee for a transaction of `size_bytes`, or `None` if it would exceed the cap.
    pub fn min_fee(&self, size_bytes: usize) -> Option<Amount> {
        Amount::from_units(self.min_fee_rate_units_per_byte)
            .ok()?
            .checked_mul(size_bytes as u64)
    }

    /// The epoch a block at `height` belongs to: heights `[k·L, (k+1)·L)` form epoch `k`.
    pub fn epoch_of(&self, height: Height) -> Epoch {
        Epoch(height.get() / self.epoch_length_blocks.max(1))
    }

    /// Whether the parameters are usable: limits within the hard caps, non-zero epoch length,
    /// positive ordered tier collateral, and an issuance schedule within the supply cap.
    pub fn check(&self) -> Result<(), String> {
        if self.max_transaction_bytes == 0 || self.max_transaction_bytes > MAX_TRANSACTION_BYTES {
            return Err(format!(
                "max_transaction_bytes must be between 1 and {MAX_TRANSACTION_BYTES}"
            ));
        }
        if self.max_block_bytes < self.max_transaction_bytes
            || self.max_block_bytes > MAX_BLOCK_BYTES
        {
            return Err(format!(
                "max_block_bytes must be between max_transaction_bytes and {MAX_BLOCK_BYTES}"
            ));
        }
        if self.epoch_length_blocks == 0 {
            return Err("epoch_length_blocks must be at least 1".into());
        }
        if self.block_interval_ms == 0 {
            return Err("block_interval_ms must be at least 1".into());
        }
        if self
            .tiers
            .iter()
            .any(|tier| tier.collateral.is_zero() || tier.weight == 0)
        {
            return Err("every tier needs a non-zero collateral and weight".into());
        }
        if self.total_subsidy().is_none() {
            return Err(format!(
                "the subsidy schedule issues {} base units, above the supply cap of {}",
                self.total_subsidy_units(),
                Amount::MAX.units()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_match_the_design() {
        for network in Network::ALL {
            let params = ChainParams::for_network(network);
            assert_eq!(
                params.tier(Tier::Bronze).collateral,
                Amount::from_time(1_000).unwrap()
            );
            assert_eq!(
                params.tier(Tier::Silver).collateral,
                Amount::from_time(10_000).unwrap()
            );
            assert_eq!(
                params.tier(Tier::Gold).collateral,
                Amount::from_time(100_000).unwrap()
            );
            assert_eq!(
                [Tier::Bronze, Tier::Silver, Tier::Gold].map(|t| params.tier(t).weight),
                [1, 10, 100]
            );
            assert_eq!(params.check(), Ok(()));
        }
    }

    #[test]
    fn subsidy_halves_and_ends() {
        let params = ChainParams::for_network(Network::Devnet);
        assert_eq!(params.subsidy(Height(0)), Amount::ZERO);
        assert_eq!(params.subsidy(Height(1)), Amount::from_time(100).unwrap());
        assert_eq!(
            params.subsidy(Height(1_000)),
            Amount::from_time(100).unwrap()
        );
        assert_eq!(
            params.subsidy(Height(1_001)),
            Amount::from_time(50).unwrap()
        );
        assert_eq!(
            params.subsidy(Height(2_001)),
            Amount::from_time(25).unwrap()
        );
        assert_eq!(params.subsidy(Height(64_001)), Amount::ZERO);
        assert_eq!(params.subsidy(Height(u64::MAX)), Amount::ZERO);
    }

    /// Sums the schedule block by block (in runs of equal subsidy) rather than with the closed
    /// form, and checks that genesis's allowance plus everything issued is exactly the cap.
    #[test]
    fn subsidies_plus_genesis_never_exceed_the_cap() {
        for network in Network::ALL {
            let params = ChainParams::for_network(network);
            let mut issued: u128 = 0;
            let mut height = 1u64;
            loop {
                let subsidy = params.subsidy(Height(height));
                if subsidy.is_zero() {
                    break;
                }
                // Every block of this halving pays the same; check the run's last block too.
                let run_end = height - 1 + params.halving_interval_blocks;
                assert_eq!(params.subsidy(Height(run_end)), subsidy);
                issued += u128::from(subsidy.units()) * u128::from(params.halving_interval_blocks);
                height = run_end + 1;
            }
            assert_eq!(issued, params.total_subsidy_units());
            let allowance = params.genesis_allowance().expect("schedule within the cap");
            assert_eq!(
                issued + u128::from(allowance.units()),
                u128::from(Amount::MAX.units())
            );
            assert!(
                allowance >= Amount::from_time(500_000_000).unwrap() || network == Network::Devnet
            );
        }
    }

    #[test]
    fn bad_overrides_are_rejected() {
        let mut params = ChainParams::for_network(Network::Devnet);
        params.initial_subsidy = Amount::MAX;
        params.halving_interval_blocks = 1_000_000;
        assert!(params.check().unwrap_err().contains("supply cap"));
        let mut params = ChainParams::for_network(Network::Devnet);
        params.epoch_length_blocks = 0;
        assert!(params.check().is_err());
        let mut params = ChainParams::for_network(Network::Devnet);
        params.max_block_bytes = MAX_BLOCK_BYTES + 1;
        assert!(params.check().is_err());
    }

    #[test]
    fn fees_and_epochs() {
        let params = ChainParams::for_network(Network::Mainnet);
        assert_eq!(
            params.min_fee(300),
            Some(Amount::from_units(3_000).unwrap())
        );
        assert_eq!(params.epoch_of(Height(0)), Epoch(0));
        assert_eq!(params.epoch_of(Height(1_439)), Epoch(0));
        assert_eq!(params.epoch_of(Height(1_440)), Epoch(1));
    }
}
