//! Amounts of TIME, in base units.

use std::fmt;
use std::io::Read;
use std::str::FromStr;

use borsh::{BorshDeserialize, BorshSerialize};

/// Base units in one TIME.
pub const UNITS_PER_TIME: u64 = 100_000_000;

/// Decimal places of one TIME.
pub const DECIMALS: u32 = 8;

/// The most TIME that can ever exist, in whole TIME.
pub const MAX_SUPPLY_TIME: u64 = 1_000_000_000;

/// An amount of TIME in base units, never above [`Amount::MAX`].
///
/// There is deliberately no unchecked arithmetic: every sum or difference is a `checked_*` call, so
/// an overflow is an explicit rejection rather than a wrapped value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, BorshSerialize)]
pub struct Amount(u64);

/// Why a value is not a valid [`Amount`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    /// The value exceeds the supply cap.
    #[error("amount of {0} base units exceeds the supply cap of {max}", max = Amount::MAX.0)]
    AboveSupplyCap(u128),
    /// The text is not a decimal number of TIME.
    #[error("'{0}' is not an amount of TIME (expected e.g. 12.5)")]
    NotANumber(String),
    /// The text has more decimal places than a base unit allows.
    #[error("'{0}' has more than 8 decimal places")]
    TooManyDecimals(String),
    /// The amount is negative.
    #[error("'{0}' is negative")]
    Negative(String),
}

impl Amount {
    /// Zero.
    pub const ZERO: Amount = Amount(0);
    /// One base unit.
    pub const ONE_UNIT: Amount = Amount(1);
    /// One whole TIME.
    pub const ONE_TIME: Amount = Amount(UNITS_PER_TIME);
    /// The supply cap.
    pub const MAX: Amount = Amount(MAX_SUPPLY_TIME * UNITS_PER_TIME);

    /// An amount of base units, if within the supply cap.
    pub const fn from_units(units: u64) -> Result<Amount, AmountError> {
        if units > Self::MAX.0 {
            return Err(AmountError::AboveSupplyCap(units as u128));
        }
        Ok(Amount(units))
    }

    /// An amount of whole TIME, if within the supply cap.
    pub const fn from_time(time: u64) -> Result<Amount, AmountError> {
        if time > MAX_SUPPLY_TIME {
            return Err(AmountError::AboveSupplyCap(
                time as u128 * UNITS_PER_TIME as u128,
            ));
        }
        Ok(Amount(time * UNITS_PER_TIME))
    }

    /// The amount in base units.
    pub const fn units(self) -> u64 {
        self.0
    }

    /// Whether the amount is zero.
    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// The sum, if it stays within the supply cap.
    pub fn checked_add(self, other: Amount) -> Option<Amount> {
        Amount::from_units(self.0.checked_add(other.0)?).ok()
    }

    /// The difference, if not negative.
    pub fn checked_sub(self, other: Amount) -> Option<Amount> {
        self.0.checked_sub(other.0).map(Amount)
    }

    /// The product with a whole number, if it stays within the supply cap.
    pub fn checked_mul(self, factor: u64) -> Option<Amount> {
        Amount::from_units(self.0.checked_mul(factor)?).ok()
    }

    /// The sum of many amounts, if it stays within the supply cap.
    pub fn checked_sum<I: IntoIterator<Item = Amount>>(amounts: I) -> Option<Amount> {
        amounts
            .into_iter()
            .try_fold(Amount::ZERO, Amount::checked_add)
    }
}

impl BorshDeserialize for Amount {
    fn deserialize_reader<R: Read>(reader: &mut R) -> std::io::Result<Self> {
        let units = u64::deserialize_reader(reader)?;
        Amount::from_units(units)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))
    }
}

impl fmt::Display for Amount {
    /// Whole TIME with all eight decimals, e.g. `12.50000000`, as Bitcoin Core prints BTC.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{:08}",
            self.0 / UNITS_PER_TIME,
            self.0 % UNITS_PER_TIME
        )
    }
}

impl FromStr for Amount {
    type Err = AmountError;

    /// Parses a decimal number of TIME (`12`, `12.5`, `0.00000001`); never rounds.
    fn from_str(text: &str) -> Result<Amount, AmountError> {
        let not_a_number = || AmountError::NotANumber(text.to_string());
        let trimmed = text.trim();
        if trimmed.starts_with('-') {
            return Err(AmountError::Negative(text.to_string()));
        }
        let (whole, fraction) = match trimmed.split_once('.') {
            Some((whole, fraction)) => (whole, fraction),
            None => (trimmed, ""),
        };
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if (whole.is_empty() && fraction.is_empty()) || !digits(whole) || !digits(fraction) {
            return Err(not_a_number());
        }
        if fraction.len() > DECIMALS as usize {
            return Err(AmountError::TooManyDecimals(text.to_string()));
        }
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole
                .parse()
                .map_err(|_| AmountError::AboveSupplyCap(u128::MAX))?
        };
        let mut fraction_units: u128 = if fraction.is_empty() {
            0
        } else {
            fraction.parse().map_err(|_| not_a_number())?
        };
        fraction_units *= 10u128.pow(DECIMALS - fraction.len() as u32);
        let units = whole
            .checked_mul(UNITS_PER_TIME as u128)
            .and_then(|w| w.checked_add(fraction_units))
            .ok_or(AmountError::AboveSupplyCap(u128::MAX))?;
        if units > Amount::MAX.0 as u128 {
            return Err(AmountError::AboveSupplyCap(units));
        }
        Ok(Amount(units as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode, encode};
    use proptest::prelude::*;

    #[test]
    fn parses_and_prints() {
        assert_eq!("12.5".parse::<Amount>().unwrap().units(), 1_250_000_000);
        assert_eq!("0.00000001".parse::<Amount>().unwrap(), Amount::ONE_UNIT);
        assert_eq!(".5".parse::<Amount>().unwrap().units(), 50_000_000);
        assert_eq!("7".parse::<Amount>().unwrap().to_string(), "7.00000000");
        assert!(matches!(
            "0.000000001".parse::<Amount>(),
            Err(AmountError::TooManyDecimals(_))
        ));
        assert!(matches!(
            "-1".parse::<Amount>(),
            Err(AmountError::Negative(_))
        ));
        assert!(matches!(
            "1e5".parse::<Amount>(),
            Err(AmountError::NotANumber(_))
        ));
        assert!(matches!(
            ".".parse::<Amount>(),
            Err(AmountError::NotANumber(_))
        ));
        assert!(matches!(
            "1000000001".parse::<Amount>(),
            Err(AmountError::AboveSupplyCap(_))
        ));
        assert!(matches!(
            "99999999999999999999999999999999999999".parse::<Amount>(),
            Err(AmountError::AboveSupplyCap(_))
        ));
    }

    #[test]
    fn arithmetic_is_checked() {
        assert_eq!(Amount::MAX.checked_add(Amount::ONE_UNIT), None);
        assert_eq!(Amount::ZERO.checked_sub(Amount::ONE_UNIT), None);
        assert_eq!(Amount::ONE_TIME.checked_mul(u64::MAX), None);
        assert_eq!(Amount::checked_sum([Amount::MAX, Amount::MAX]), None);
        assert_eq!(
            Amount::checked_sum([Amount::ONE_TIME, Amount::ONE_UNIT])
                .unwrap()
                .units(),
            UNITS_PER_TIME + 1
        );
        assert!(Amount::from_units(Amount::MAX.units() + 1).is_err());
        assert!(Amount::from_time(MAX_SUPPLY_TIME + 1).is_err());
    }

    #[test]
    fn decoding_rejects_amounts_above_the_cap() {
        let bytes = encode(&(Amount::MAX.units() + 1));
        assert!(decode::<Amount>(&bytes).is_err());
        assert_eq!(
            decode::<Amount>(&encode(&Amount::MAX)).unwrap(),
            Amount::MAX
        );
    }

    proptest! {
        #[test]
        fn display_parse_round_trip(units in 0..=Amount::MAX.units()) {
            let amount = Amount::from_units(units).unwrap();
            prop_assert_eq!(amount.to_string().parse::<Amount>().unwrap(), amount);
            prop_assert_eq!(decode::<Amount>(&encode(&amount)).unwrap(), amount);
        }
    }
}
