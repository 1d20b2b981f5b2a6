//! Fee rates as exact fractions.

use std::cmp::Ordering;
use std::fmt;

use timecoin_primitives::Amount;

/// A fee per byte of canonical encoding, kept as the exact fraction `fee / size_bytes`.
///
/// Rates are compared by cross-multiplication in `u128` rather than by dividing: a fee is at most
/// the supply cap (< 2^57 base units) and a size fits in a `u64`, so each product is below 2^121
/// and the comparison is exact on every platform. Two fractions of equal value (1/2 and 2/4) are
/// equal, so ordering never depends on how a rate happened to be written. No floats are involved,
/// so every node orders its pool identically.
#[derive(Clone, Copy, Debug)]
pub struct FeeRate {
    fee: Amount,
    size_bytes: u64,
}

impl FeeRate {
    /// The rate of paying `fee` for `size_bytes` bytes, or `None` for a size of zero, which has no
    /// rate.
    pub fn new(fee: Amount, size_bytes: usize) -> Option<FeeRate> {
        let size_bytes = u64::try_from(size_bytes).ok()?;
        (size_bytes > 0).then_some(FeeRate { fee, size_bytes })
    }

    /// The fee (numerator).
    pub fn fee(&self) -> Amount {
        self.fee
    }

    /// The size in bytes (denominator, never zero).
    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    /// Base units per 1,000 bytes, rounded down: a whole number for RPC replies and logs.
    /// Saturates at `u64::MAX`, which only a fee near the supply cap on a few bytes reaches.
    pub fn units_per_kilobyte(&self) -> u64 {
        u64::try_from(self.milli_units_per_byte()).unwrap_or(u64::MAX)
    }

    fn milli_units_per_byte(&self) -> u128 {
        // fee < 2^57, so fee * 1000 < 2^67: no overflow in u128.
        u128::from(self.fee.units()) * 1000 / u128::from(self.size_bytes)
    }
}

impl PartialEq for FeeRate {
    fn eq(&self, other: &FeeRate) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for FeeRate {}

impl PartialOrd for FeeRate {
    fn partial_cmp(&self, other: &FeeRate) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for FeeRate {
    fn cmp(&self, other: &FeeRate) -> Ordering {
        let left = u128::from(self.fee.units()) * u128::from(other.size_bytes);
        let right = u128::from(other.fee.units()) * u128::from(self.size_bytes);
        left.cmp(&right)
    }
}

impl fmt::Display for FeeRate {
    /// Base units per byte with three decimals, rounded down, e.g. `12.345 units/byte`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let per_kilobyte = self.milli_units_per_byte();
        write!(
            f,
            "{}.{:03} units/byte",
            per_kilobyte / 1000,
            per_kilobyte % 1000
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(fee: u64, size_bytes: usize) -> FeeRate {
        FeeRate::new(Amount::from_units(fee).unwrap(), size_bytes).unwrap()
    }

    #[test]
    fn compares_exactly() {
        assert_eq!(rate(1, 2), rate(2, 4));
        assert!(rate(1, 3) > rate(333_333, 1_000_000));
        assert!(rate(1, 3) < rate(333_334, 1_000_000));
        // Values whose float quotients are equal but whose exact values differ.
        let big = Amount::MAX.units();
        assert!(rate(big, 1_000_000_007) > rate(big - 1, 1_000_000_007));
        assert!(rate(big, usize::MAX) < rate(1, 1));
        assert!(rate(0, 1) < rate(1, usize::MAX));
        assert_eq!(rate(0, 1), rate(0, 1000));
    }

    proptest::proptest! {
        #[test]
        fn equal_fractions_are_equal_rates(
            fee in 0u64..1_000_000_000,
            size in 1usize..1_000_000,
            factor in 1u64..1_000,
        ) {
            proptest::prop_assert_eq!(rate(fee, size), rate(fee * factor, size * factor as usize));
            proptest::prop_assert!(rate(fee + 1, size) > rate(fee, size));
            proptest::prop_assert!(rate(fee, size + 1) < rate(fee + 1, size));
        }
    }

    #[test]
    fn zero_size_has_no_rate() {
        assert!(FeeRate::new(Amount::ONE_UNIT, 0).is_none());
    }

    #[test]
    fn displays_units_per_byte() {
        assert_eq!(rate(12_345, 1000).to_string(), "12.345 units/byte");
        assert_eq!(rate(1, 3).to_string(), "0.333 units/byte");
        assert_eq!(rate(1, 3).units_per_kilobyte(), 333);
        assert_eq!(rate(Amount::MAX.units(), 1).units_per_kilobyte(), u64::MAX);
        assert_eq!(
            rate(Amount::MAX.units(), 1).to_string(),
            "100000000000000000.000 units/byte"
        );
    }
}
