//! The masternode committee of an epoch: who votes, with what weight, what a quorum is, and who
//! leads each (height, view).

use std::collections::BTreeMap;

use timecoin_primitives::block::MAX_COMMITTEE_SIZE;
use timecoin_primitives::{Epoch, Hash32, Height, Network, OutPoint, PublicKey, Tier};

use crate::error::ConsensusError;
use crate::signing::{leader_rotation_digest, leader_seed_digest};

/// Voting weight. A newtype so a weight is never confused with a count of members.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Weight(pub u64);

impl Weight {
    /// The weight as a plain integer.
    pub const fn get(self) -> u64 {
        self.0
    }
}

/// The voting weight of each tier, a chain parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TierWeights {
    /// Weight of a Bronze masternode.
    pub bronze: Weight,
    /// Weight of a Silver masternode.
    pub silver: Weight,
    /// Weight of a Gold masternode.
    pub gold: Weight,
}

impl Default for TierWeights {
    /// The founders' weights: proportional to collateral (1,000 / 10,000 / 100,000 TIME).
    fn default() -> Self {
        TierWeights {
            bronze: Weight(1),
            silver: Weight(10),
            gold: Weight(100),
        }
    }
}

impl TierWeights {
    /// The weight of `tier`.
    pub const fn of(&self, tier: Tier) -> Weight {
        match tier {
            Tier::Bronze => self.bronze,
            Tier::Silver => self.silver,
            Tier::Gold => self.gold,
        }
    }
}

/// A masternode registration as the chain records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Registration {
    /// The key the masternode signs consensus messages with.
    pub node_key: PublicKey,
    /// Its tier, which fixes its weight.
    pub tier: Tier,
    /// The collateral output; spending it deregisters the masternode.
    pub collateral: OutPoint,
}

/// Most registrations the registry tracks. More than the committee size, because only the
/// heaviest [`MAX_COMMITTEE_SIZE`] become the committee, but still bounded.
pub const MAX_REGISTRATIONS: usize = 4 * MAX_COMMITTEE_SIZE;

/// The registered masternodes as of the current block. The node applies registrations and
/// deregistrations as blocks commit; at an epoch boundary, [`MasternodeRegistry::committee_for`]
/// turns the registry *as it stood at the end of the previous epoch* into the new committee,
/// which is why a registration takes effect only at the next epoch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MasternodeRegistry {
    by_collateral: BTreeMap<OutPoint, Registration>,
    by_key: BTreeMap<PublicKey, OutPoint>,
}

impl MasternodeRegistry {
    /// An empty registry.
    pub fn new() -> MasternodeRegistry {
        MasternodeRegistry::default()
    }

    /// Records a registration. A node key or collateral may be registered only once.
    pub fn register(&mut self, registration: Registration) -> Result<(), ConsensusError> {
        if self.by_key.contains_key(&registration.node_key)
            || self.by_collateral.contains_key(&registration.collateral)
        {
            return Err(ConsensusError::AlreadyRegistered(registration.node_key));
        }
        if self.by_collateral.len() >= MAX_REGISTRATIONS {
            return Err(ConsensusError::Full {
                what: "masternode registry",
                limit: MAX_REGISTRATIONS,
            });
        }
        self.by_key
            .insert(registration.node_key, registration.collateral);
        self.by_collateral
            .insert(registration.collateral, registration);
        Ok(())
    }

    /// Removes the registration whose collateral is `collateral` (it was spent), returning it.
    pub fn deregister(&mut self, collateral: &OutPoint) -> Option<Registration> {
        let registration = self.by_collateral.remove(collateral)?;
        self.by_key.remove(&registration.node_key);
        Some(registration)
    }

    /// How many masternodes are registered.
    pub fn len(&self) -> usize {
        self.by_collateral.len()
    }

    /// Whether none is registered.
    pub fn is_empty(&self) -> bool {
        self.by_collateral.is_empty()
    }

    /// The committee of `epoch`, from this registry as it stood at the end of epoch `epoch − 1`.
    ///
    /// If more than [`MAX_COMMITTEE_SIZE`] masternodes are registered, the heaviest win, ties
    /// broken by node key, so the choice is a pure function of the registry. `seed` should be
    /// the hash of the last block of the previous epoch: known to everyone, fixed before the
    /// epoch starts (see `docs/consensus.md` on its grindability).
    pub fn committee_for(
        &self,
        network: Network,
        epoch: Epoch,
        seed: Hash32,
        weights: &TierWeights,
    ) -> Result<Committee, ConsensusError> {
        let mut members: Vec<Member> = self
            .by_collateral
            .values()
            .map(|registration| Member {
                node_key: registration.node_key,
                weight: weights.of(registration.tier),
                collateral: registration.collateral,
            })
            .collect();
        members.sort_by(|a, b| b.weight.cmp(&a.weight).then(a.node_key.cmp(&b.node_key)));
        members.truncate(MAX_COMMITTEE_SIZE);
        Committee::new(network, epoch, seed, members)
    }
}

/// One committee member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    /// Its node key.
    pub node_key: PublicKey,
    /// Its voting weight.
    pub weight: Weight,
    /// Its collateral, which identifies its registration.
    pub collateral: OutPoint,
}

/// The fixed, weighted masternode set of one epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committee {
    network: Network,
    epoch: Epoch,
    seed: Hash32,
    /// Sorted by node key, so positions are canonical.
    members: Vec<Member>,
    /// `cumulative[i]` is the total weight of `members[..=i]`; the leader lottery searches it.
    cumulative: Vec<u64>,
    index: BTreeMap<PublicKey, usize>,
    total: u64,
    /// Member positions in this epoch's rotation order (see [`Committee::leader`]).
    rotation: Vec<usize>,
    /// `rank[position]` is where `members[position]` stands in `rotation`.
    rank: Vec<usize>,
}

impl Committee {
    /// A committee of `members` (any order). Fails if it is empty, too large, has a zero weight
    /// or a repeated node key.
    pub fn new(
        network: Network,
        epoch: Epoch,
        seed: Hash32,
        mut members: Vec<Member>,
    ) -> Result<Committee, ConsensusError> {
        if members.is_empty() {
            return Err(ConsensusError::InvalidCommittee("no members"));
        }
        if members.len() > MAX_COMMITTEE_SIZE {
            return Err(ConsensusError::InvalidCommittee(
                "more members than MAX_COMMITTEE_SIZE",
            ));
        }
        members.sort_by_key(|member| member.node_key);
        let mut cumulative = Vec::with_capacity(members.len());
        let mut index = BTreeMap::new();
        let mut total: u64 = 0;
        for (position, member) in members.iter().enumerate() {
            if member.weight.0 == 0 {
                return Err(ConsensusError::InvalidCommittee("a member has zero weight"));
            }
            if index.insert(member.node_key, position).is_some() {
                return Err(ConsensusError::InvalidCommittee("a node key appears twice"));
            }
            // Quorum arithmetic multiplies the total by 2, so keep well clear of overflow.
            total = total
                .checked_add(member.weight.0)
                .filter(|total| *total <= u64::MAX / 4)
                .ok_or(ConsensusError::InvalidCommittee("total weight overflows"))?;
            cumulative.push(total);
        }
        let mut rotation: Vec<usize> = (0..members.len()).collect();
        rotation.sort_by_cached_key(|&position| {
            leader_rotation_digest(network, epoch, &seed, &members[position].node_key).0
        });
        let mut rank = vec![0; members.len()];
        for (place, &position) in rotation.iter().enumerate() {
            rank[position] = place;
        }
        Ok(Committee {
            network,
            epoch,
            seed,
            members,
            cumulative,
            index,
            total,
            rotation,
            rank,
        })
    }

    /// The network whose signatures this committee checks.
    pub fn network(&self) -> Network {
        self.network
    }

    /// The epoch.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// The leader-rotation seed.
    pub fn seed(&self) -> Hash32 {
        self.seed
    }

    /// The members, sorted by node key.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The member with `node_key`, if any.
    pub fn member(&self, node_key: &PublicKey) -> Option<&Member> {
        self.index
            .get(node_key)
            .map(|&position| &self.members[position])
    }

    /// The weight of `node_key` (zero for non-members).
    pub fn weight_of(&self, node_key: &PublicKey) -> Weight {
        self.member(node_key)
            .map_or(Weight(0), |member| member.weight)
    }

    /// W, the total weight.
    pub fn total_weight(&self) -> Weight {
        Weight(self.total)
    }

    /// ⌊2W/3⌋ + 1: any two sets of this weight share more than [`Self::max_faulty_weight`].
    pub fn quorum_weight(&self) -> Weight {
        Weight(2 * self.total / 3 + 1)
    }

    /// f, the most faulty weight the protocol tolerates: the largest f with 3f < W.
    pub fn max_faulty_weight(&self) -> Weight {
        Weight((self.total - 1) / 3)
    }

    /// Whether `weight` reaches the quorum.
    pub fn is_quorum(&self, weight: Weight) -> bool {
        weight >= self.quorum_weight()
    }

    /// Whether `weight` exceeds f, so at least one honest member is among its signers.
    pub fn exceeds_faulty(&self, weight: Weight) -> bool {
        weight > self.max_faulty_weight()
    }

    /// The leader of (`height`, `view`). View 0 goes by a weight-proportional lottery on
    /// hash(network, epoch, seed, height), so a member with weight w leads a fraction w/W of
    /// heights on average. Each later view passes the lead to the next member in the epoch's
    /// rotation order (members sorted by hash(network, epoch, seed, key)), so any n consecutive
    /// views of a height have n different leaders and a height waits through at most as many
    /// failed views as there are members down. A fresh lottery per view would let 1 height in
    /// 4^k wait through k dead views with a quarter of the members down, and view timeouts
    /// double. Every node computes the same answer.
    pub fn leader(&self, height: Height, view: u32) -> &Member {
        let digest = leader_seed_digest(self.network, self.epoch, &self.seed, height);
        let mut wide = [0u8; 16];
        wide.copy_from_slice(&digest.0[..16]);
        // 128 bits reduced mod W < 2^62 leaves a bias below 2^-66: immaterial.
        let ticket = (u128::from_le_bytes(wide) % u128::from(self.total)) as u64;
        let first = self.cumulative.partition_point(|&end| end <= ticket);
        let n = self.members.len();
        let place = (self.rank[first] + view as usize % n) % n;
        &self.members[self.rotation[place]]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use timecoin_primitives::Txid;

    fn key(seed: u8) -> PublicKey {
        PublicKey([seed; 32])
    }

    fn outpoint(seed: u8) -> OutPoint {
        OutPoint {
            txid: Txid(Hash32([seed; 32])),
            index: 0,
        }
    }

    fn committee(weights: &[u64]) -> Committee {
        let members = weights
            .iter()
            .enumerate()
            .map(|(i, &w)| Member {
                node_key: key(i as u8 + 1),
                weight: Weight(w),
                collateral: outpoint(i as u8),
            })
            .collect();
        Committee::new(Network::Devnet, Epoch(1), Hash32([9; 32]), members).unwrap()
    }

    #[test]
    fn quorum_math_at_edge_weights() {
        // (W, quorum, f)
        for (weights, quorum, faulty) in [
            (vec![1], 1, 0),
            (vec![1, 1], 2, 0),
            (vec![1, 1, 1], 3, 0),
            (vec![1, 1, 1, 1], 3, 1),
            (vec![1; 5], 4, 1),
            (vec![1; 6], 5, 1),
            (vec![1; 7], 5, 2),
            (vec![100, 10, 1], 75, 36),
            (vec![100, 100, 100, 1], 201, 100),
        ] {
            let committee = committee(&weights);
            let total = committee.total_weight().0;
            assert_eq!(committee.quorum_weight(), Weight(quorum), "W = {total}");
            assert_eq!(committee.max_faulty_weight(), Weight(faulty), "W = {total}");
            // Two quorums overlap in more than f, and a quorum is reachable without f.
            assert!(2 * quorum - total > faulty);
            assert!(total - faulty >= quorum);
            assert!(3 * faulty < total);
        }
        let committee = committee(&[1, 1, 1, 1]);
        assert!(!committee.is_quorum(Weight(2)));
        assert!(committee.is_quorum(Weight(3)));
        assert!(!committee.exceeds_faulty(Weight(1)));
        assert!(committee.exceeds_faulty(Weight(2)));
    }

    #[test]
    fn exhaustive_quorum_intersection_small_totals() {
        for total in 1..=400u64 {
            let quorum = 2 * total / 3 + 1;
            let faulty = (total - 1) / 3;
            assert!(2 * quorum > total + faulty, "W = {total}");
            assert!(quorum <= total - faulty, "W = {total}");
        }
    }

    #[test]
    fn rejects_bad_committees() {
        let member = Member {
            node_key: key(1),
            weight: Weight(1),
            collateral: outpoint(1),
        };
        let new = |members| Committee::new(Network::Devnet, Epoch(0), Hash32::ZERO, members);
        assert!(matches!(
            new(vec![]),
            Err(ConsensusError::InvalidCommittee(_))
        ));
        assert!(matches!(
            new(vec![member, member]),
            Err(ConsensusError::InvalidCommittee(_))
        ));
        let zero = Member {
            weight: Weight(0),
            ..member
        };
        assert!(matches!(
            new(vec![zero]),
            Err(ConsensusError::InvalidCommittee(_))
        ));
        let huge = Member {
            weight: Weight(u64::MAX / 2),
            ..member
        };
        assert!(matches!(
            new(vec![huge]),
            Err(ConsensusError::InvalidCommittee(_))
        ));
    }

    #[test]
    fn view_zero_leaders_are_deterministic_and_weight_proportional() {
        // Weights 100, 10, 1 … 1 (×10): W = 120.
        let mut weights = vec![100, 10];
        weights.extend([1; 10]);
        let committee = committee(&weights);
        let again = committee.clone();
        let mut counts: BTreeMap<PublicKey, u64> = BTreeMap::new();
        let rounds = 24_000u64;
        for height in 0..rounds {
            let leader = committee.leader(Height(height), 0);
            assert_eq!(leader, again.leader(Height(height), 0));
            *counts.entry(leader.node_key).or_default() += 1;
        }
        // Expected 20,000 / 2,000 / 200 each; allow 5 standard deviations (binomial σ ≤ √n).
        for member in committee.members() {
            let expected = rounds * member.weight.0 / committee.total_weight().0;
            let got = counts.get(&member.node_key).copied().unwrap_or(0);
            assert!(
                got.abs_diff(expected).pow(2) <= 25 * expected,
                "member with weight {} led {got} times, expected ≈ {expected}",
                member.weight.0
            );
        }
        // A different seed gives a different schedule.
        let other = Committee::new(
            Network::Devnet,
            Epoch(1),
            Hash32([8; 32]),
            committee.members().to_vec(),
        )
        .unwrap();
        let differs = (0..50).any(|h| other.leader(Height(h), 0) != committee.leader(Height(h), 0));
        assert!(differs);
    }

    #[test]
    fn later_views_pass_the_lead_to_every_member_in_turn() {
        let committee = committee(&[100, 10, 1, 1, 1, 1, 1]);
        let n = committee.members().len() as u32;
        let mut orders = BTreeSet::new();
        for height in 0..200 {
            let height = Height(height);
            let leaders: Vec<PublicKey> = (0..n)
                .map(|view| committee.leader(height, view).node_key)
                .collect();
            let distinct: BTreeSet<PublicKey> = leaders.iter().copied().collect();
            assert_eq!(distinct.len(), n as usize, "{height:?}: {leaders:?}");
            // Past n views the turn comes round again, in the same order (and the view
            // number's wrap-around stays in range).
            for view in [n, 2 * n + 3, u32::MAX] {
                assert_eq!(
                    committee.leader(height, view),
                    committee.leader(height, view % n)
                );
            }
            // The order is the epoch's, whoever starts it.
            let start = leaders.iter().min().copied().unwrap();
            let from = leaders.iter().position(|k| *k == start).unwrap();
            let mut order = leaders[from..].to_vec();
            order.extend_from_slice(&leaders[..from]);
            orders.insert(order);
        }
        assert_eq!(orders.len(), 1, "{orders:?}");
        // A different seed or epoch gives a different order (7! orders: a match is 1 in 5,040).
        let order = |epoch: u64, seed: u8| {
            let other = Committee::new(
                Network::Devnet,
                Epoch(epoch),
                Hash32([seed; 32]),
                committee.members().to_vec(),
            )
            .unwrap();
            other
                .rotation
                .iter()
                .map(|&position| other.members[position].node_key)
                .collect::<Vec<_>>()
        };
        assert_ne!(order(1, 9), order(1, 8));
        assert_ne!(order(1, 9), order(2, 9));
    }

    #[test]
    fn registry_changes_apply_to_the_next_committee_only() {
        let weights = TierWeights::default();
        let mut registry = MasternodeRegistry::new();
        let gold = Registration {
            node_key: key(1),
            tier: Tier::Gold,
            collateral: outpoint(1),
        };
        let bronze = Registration {
            node_key: key(2),
            tier: Tier::Bronze,
            collateral: outpoint(2),
        };
        registry.register(gold).unwrap();
        registry.register(bronze).unwrap();
        assert_eq!(
            registry.register(gold),
            Err(ConsensusError::AlreadyRegistered(key(1)))
        );
        let epoch_one = registry
            .committee_for(Network::Devnet, Epoch(1), Hash32::ZERO, &weights)
            .unwrap();
        assert_eq!(epoch_one.total_weight(), Weight(101));

        // During epoch 1 the gold node deregisters and a silver one joins: epoch 1's committee
        // is a value and does not change; epoch 2's reflects both.
        assert_eq!(registry.deregister(&outpoint(1)), Some(gold));
        registry
            .register(Registration {
                node_key: key(3),
                tier: Tier::Silver,
                collateral: outpoint(3),
            })
            .unwrap();
        assert_eq!(epoch_one.weight_of(&key(1)), Weight(100));
        let epoch_two = registry
            .committee_for(Network::Devnet, Epoch(2), Hash32::ZERO, &weights)
            .unwrap();
        assert_eq!(epoch_two.epoch(), Epoch(2));
        assert_eq!(epoch_two.weight_of(&key(1)), Weight(0));
        assert_eq!(epoch_two.weight_of(&key(3)), Weight(10));
        assert_eq!(epoch_two.total_weight(), Weight(11));
        assert!(registry.deregister(&outpoint(1)).is_none());
        assert!(
            MasternodeRegistry::new()
                .committee_for(Network::Devnet, Epoch(0), Hash32::ZERO, &weights)
                .is_err()
        );
    }
}
