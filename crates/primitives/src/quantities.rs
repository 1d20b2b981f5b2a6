//! Heights, epochs and timestamps: distinct types so that one is never passed for another.

use std::fmt;

use borsh::{BorshDeserialize, BorshSerialize};

macro_rules! counter {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, BorshSerialize,
            BorshDeserialize,
        )]
        pub struct $name(pub u64);

        impl $name {
            /// The value as a plain integer.
            pub const fn get(self) -> u64 {
                self.0
            }

            /// The next value, or `None` at the end of the range.
            pub fn checked_next(self) -> Option<Self> {
                self.0.checked_add(1).map(Self)
            }

            /// The previous value, or `None` at zero.
            pub fn checked_prev(self) -> Option<Self> {
                self.0.checked_sub(1).map(Self)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

counter!(
    /// A block's distance from genesis (genesis is height 0).
    Height
);
counter!(
    /// A period of blocks with one fixed masternode committee.
    Epoch
);

/// Milliseconds since the Unix epoch, as set by a block's proposer.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    BorshSerialize,
    BorshDeserialize,
)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// Milliseconds since the Unix epoch.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// The timestamp `millis` later, saturating at the end of time.
    pub const fn saturating_add_millis(self, millis: u64) -> Timestamp {
        Timestamp(self.0.saturating_add(millis))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_step_without_wrapping() {
        assert_eq!(Height(0).checked_prev(), None);
        assert_eq!(Height(u64::MAX).checked_next(), None);
        assert_eq!(Epoch(4).checked_next(), Some(Epoch(5)));
        assert_eq!(
            Timestamp(u64::MAX).saturating_add_millis(5),
            Timestamp(u64::MAX)
        );
    }
}
