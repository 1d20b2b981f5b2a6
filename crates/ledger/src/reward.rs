//! The reward rule: who a block's reward transaction pays, and how much each.
//!
//! Block `h` pays `subsidy(h) + fees(h)` to the masternodes whose commit votes appear in the
//! parent's certificate that the block carries, in proportion to their committee weight, each at
//! its collateral owner's address (ADR 0009). The split is a pure function of its inputs, so
//! every node computes the same outputs, and a block whose reward differs is invalid.
//!
//! The ledger does not know committees or verify consensus signatures (that is the consensus
//! crate's work, above this one in the dependency order); the node turns a verified certificate
//! into [`RewardShare`]s and calls [`check_reward_split`] beside [`crate::validate_block`].

use std::collections::BTreeMap;

use timecoin_primitives::{Address, Amount, Block, PublicKey, TxOut};

use crate::error::LedgerError;

/// One signer's claim on a reward: its committee weight and where it is paid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RewardShare {
    /// The masternode's node key; it orders the shares and breaks the rounding tie.
    pub node_key: PublicKey,
    /// Its weight in the committee that signed (the parent epoch's).
    pub weight: u64,
    /// Its collateral owner's address, which receives its part.
    pub owner: Address,
}

/// Splits `allowed` over `shares` in proportion to their weights and returns the reward outputs.
///
/// The rounding is exact and deterministic:
/// - each share gets `⌊allowed × weight / total_weight⌋` units (computed in 128 bits, so it
///   cannot overflow);
/// - the units lost to rounding (fewer than the number of shares) go to the share with the
///   lowest node key, so no unit is burned and the sum is exactly `allowed`;
/// - shares with the same owner are merged into one output, zero amounts are dropped (the
///   ledger refuses zero outputs), and the outputs are sorted by address.
///
/// The order of `shares` does not matter. Fails if `shares` is empty (while `allowed` is not
/// zero), has a zero weight, repeats a node key, or its weights overflow.
pub fn split_reward(allowed: Amount, shares: &[RewardShare]) -> Result<Vec<TxOut>, LedgerError> {
    if allowed.is_zero() {
        return Ok(Vec::new());
    }
    let mut by_key: BTreeMap<PublicKey, &RewardShare> = BTreeMap::new();
    let mut total: u128 = 0;
    for share in shares {
        if share.weight == 0 {
            return Err(LedgerError::InvalidRewardShares("a share has zero weight"));
        }
        if by_key.insert(share.node_key, share).is_some() {
            return Err(LedgerError::InvalidRewardShares("a node key appears twice"));
        }
        total += u128::from(share.weight);
    }
    let Some((_, first)) = by_key.first_key_value() else {
        return Err(LedgerError::InvalidRewardShares("no recipients"));
    };
    let lowest_owner = first.owner;
    let units = u128::from(allowed.units());
    let mut paid: BTreeMap<Address, u128> = BTreeMap::new();
    let mut distributed: u128 = 0;
    for share in by_key.values() {
        // units × weight < 2^64 × 2^64: fits in 128 bits; the quotient is at most `units`.
        let part = units * u128::from(share.weight) / total;
        distributed += part;
        *paid.entry(share.owner).or_default() += part;
    }
    *paid.entry(lowest_owner).or_default() += units - distributed;
    paid.into_iter()
        .filter(|(_, units)| *units > 0)
        .map(|(address, units)| {
            let units = u64::try_from(units).map_err(|_| LedgerError::OutputsOverflow)?;
            let amount = Amount::from_units(units).map_err(|_| LedgerError::OutputsOverflow)?;
            Ok(TxOut { amount, address })
        })
        .collect()
}

/// Checks that `block`'s reward transaction pays exactly [`split_reward`]`(allowed, shares)`,
/// where `allowed` is the subsidy plus fees that [`crate::validate_block`] reported in its
/// [`crate::BlockOutcome`]. Reports the first output that differs.
pub fn check_reward_split(
    block: &Block,
    allowed: Amount,
    shares: &[RewardShare],
) -> Result<(), LedgerError> {
    let expected = split_reward(allowed, shares)?;
    let found: &[TxOut] = block
        .transactions
        .first()
        .map_or(&[], |reward| &reward.body.outputs);
    let length = expected.len().max(found.len());
    if let Some(index) = (0..length).find(|&i| expected.get(i) != found.get(i)) {
        return Err(LedgerError::WrongRewardSplit {
            index,
            expected: expected.get(index).copied(),
            found: found.get(index).copied(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use timecoin_primitives::Hash32;

    fn share(key: u8, weight: u64, owner: u8) -> RewardShare {
        RewardShare {
            node_key: PublicKey([key; 32]),
            weight,
            owner: Address(Hash32([owner; 32])),
        }
    }

    fn units(outputs: &[TxOut]) -> Vec<(u8, u64)> {
        outputs
            .iter()
            .map(|o| (o.address.0.0[0], o.amount.units()))
            .collect()
    }

    #[test]
    fn splits_by_weight_with_the_remainder_to_the_lowest_key() {
        // 100 units over weights 1, 1, 1: 33 each, the 1 left over to key 1.
        let shares = [share(3, 1, 30), share(1, 1, 10), share(2, 1, 20)];
        let outputs = split_reward(Amount::from_units(100).unwrap(), &shares).unwrap();
        assert_eq!(units(&outputs), vec![(10, 34), (20, 33), (30, 33)]);
        // Gold 100, Silver 10, Bronze 1 sharing 1,110 units: exactly proportional.
        let shares = [share(1, 1, 1), share(2, 10, 2), share(3, 100, 3)];
        let outputs = split_reward(Amount::from_units(1_110).unwrap(), &shares).unwrap();
        assert_eq!(units(&outputs), vec![(1, 10), (2, 100), (3, 1_000)]);
    }

    #[test]
    fn merges_owners_drops_zero_and_sorts_by_address() {
        // Keys 1 and 3 share owner 9; key 2 (owner 5) earns nothing from 2 units at weight 1
        // of 1,001, so it gets no output at all.
        let shares = [share(1, 500, 9), share(2, 1, 5), share(3, 500, 9)];
        let outputs = split_reward(Amount::from_units(2).unwrap(), &shares).unwrap();
        assert_eq!(units(&outputs), vec![(9, 2)]);
        let outputs = split_reward(Amount::from_units(1_001).unwrap(), &shares).unwrap();
        assert_eq!(units(&outputs), vec![(5, 1), (9, 1_000)]);
    }

    #[test]
    fn nothing_to_pay_pays_no_one() {
        assert_eq!(split_reward(Amount::ZERO, &[]).unwrap(), Vec::new());
        assert_eq!(
            split_reward(Amount::ZERO, &[share(1, 1, 1)]).unwrap(),
            Vec::new()
        );
    }

    #[test]
    fn refuses_bad_shares() {
        let one = Amount::ONE_TIME;
        for shares in [
            vec![],
            vec![share(1, 0, 1)],
            vec![share(1, 1, 1), share(1, 2, 2)],
        ] {
            assert!(matches!(
                split_reward(one, &shares),
                Err(LedgerError::InvalidRewardShares(_))
            ));
        }
        // The largest amount and weights still split without overflow.
        let shares = [share(1, u64::MAX, 1), share(2, u64::MAX, 2)];
        let outputs = split_reward(Amount::MAX, &shares).unwrap();
        assert_eq!(
            Amount::checked_sum(outputs.iter().map(|o| o.amount)),
            Some(Amount::MAX)
        );
    }
}
