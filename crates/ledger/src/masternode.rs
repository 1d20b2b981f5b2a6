//! Masternode registrations as the ledger sees them.
//!
//! The UTXO set knows only which outputs are collateral. Who registered them (node key, tier,
//! network address) lives in a registry that consumers keep beside it: the ledger reads it through
//! [`MasternodeView`] (to reject a node key that is already in use) and reports every change as a
//! [`MasternodeEvent`] when it applies a block, so storage and the consensus committee can update
//! their copy. [`MasternodeRegistry`] is a ready in-memory one.
//!
//! The registry holds every registration whose collateral is unspent, whether or not it is
//! active yet: the consensus crate decides, from each event's height, at which epoch boundary a
//! change takes effect. A node key stays taken until the block that deregisters it has been
//! applied, so a block cannot deregister a key and register it again.

use std::collections::BTreeMap;

use borsh::{BorshDeserialize, BorshSerialize};
use timecoin_primitives::transaction::MAX_NETWORK_ADDRESS_LEN;
use timecoin_primitives::{Address, BoundedString, Height, OutPoint, PublicKey, Tier};

use crate::utxo::BackendError;

/// One registered masternode.
#[derive(Clone, Debug, PartialEq, Eq, Hash, BorshSerialize, BorshDeserialize)]
pub struct MasternodeRegistration {
    /// The collateral output; it identifies the registration.
    pub collateral: OutPoint,
    /// Who owns the collateral (and receives it back on deregistration).
    pub owner: Address,
    /// The key the masternode votes with.
    pub node_key: PublicKey,
    /// The tier, which fixes the collateral and the voting weight.
    pub tier: Tier,
    /// Where peers reach it.
    pub network_address: BoundedString<MAX_NETWORK_ADDRESS_LEN>,
    /// The height of the block that registered it (0 for genesis masternodes).
    pub registered_at: Height,
}

/// A change to the registry made by one block.
#[derive(Clone, Debug, PartialEq, Eq, Hash, BorshSerialize, BorshDeserialize)]
pub enum MasternodeEvent {
    /// A masternode was registered.
    Registered(MasternodeRegistration),
    /// A masternode's collateral was spent by a deregistration at `height`.
    Deregistered {
        /// The registration that ended.
        registration: MasternodeRegistration,
        /// The height of the deregistering block.
        height: Height,
    },
}

/// Read access to the masternode registry as it was before the block being validated.
pub trait MasternodeView {
    /// The collateral of the registration using `node_key`, if any.
    fn collateral_of_node_key(
        &self,
        node_key: &PublicKey,
    ) -> Result<Option<OutPoint>, BackendError>;

    /// The registration whose collateral is `collateral`, if any.
    fn registration(
        &self,
        collateral: &OutPoint,
    ) -> Result<Option<MasternodeRegistration>, BackendError>;
}

impl<M: MasternodeView + ?Sized> MasternodeView for &M {
    fn collateral_of_node_key(
        &self,
        node_key: &PublicKey,
    ) -> Result<Option<OutPoint>, BackendError> {
        (**self).collateral_of_node_key(node_key)
    }
    fn registration(
        &self,
        collateral: &OutPoint,
    ) -> Result<Option<MasternodeRegistration>, BackendError> {
        (**self).registration(collateral)
    }
}

/// An in-memory registry, ordered so that iteration is deterministic.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MasternodeRegistry {
    by_collateral: BTreeMap<OutPoint, MasternodeRegistration>,
    by_node_key: BTreeMap<PublicKey, OutPoint>,
}

impl MasternodeRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many masternodes are registered.
    pub fn len(&self) -> usize {
        self.by_collateral.len()
    }

    /// Whether none is registered.
    pub fn is_empty(&self) -> bool {
        self.by_collateral.is_empty()
    }

    /// The registrations, ordered by collateral outpoint.
    pub fn iter(&self) -> impl Iterator<Item = &MasternodeRegistration> {
        self.by_collateral.values()
    }

    fn insert(&mut self, registration: MasternodeRegistration) {
        self.by_node_key
            .insert(registration.node_key, registration.collateral);
        self.by_collateral
            .insert(registration.collateral, registration);
    }

    fn remove(&mut self, collateral: &OutPoint) {
        if let Some(registration) = self.by_collateral.remove(collateral) {
            self.by_node_key.remove(&registration.node_key);
        }
    }

    /// Applies a block's events, in order.
    pub fn apply(&mut self, events: &[MasternodeEvent]) {
        for event in events {
            match event {
                MasternodeEvent::Registered(registration) => self.insert(registration.clone()),
                MasternodeEvent::Deregistered { registration, .. } => {
                    self.remove(&registration.collateral)
                }
            }
        }
    }

    /// Reverses [`MasternodeRegistry::apply`] of the same events.
    pub fn undo(&mut self, events: &[MasternodeEvent]) {
        for event in events.iter().rev() {
            match event {
                MasternodeEvent::Registered(registration) => self.remove(&registration.collateral),
                MasternodeEvent::Deregistered { registration, .. } => {
                    self.insert(registration.clone())
                }
            }
        }
    }
}

impl MasternodeView for MasternodeRegistry {
    fn collateral_of_node_key(
        &self,
        node_key: &PublicKey,
    ) -> Result<Option<OutPoint>, BackendError> {
        Ok(self.by_node_key.get(node_key).copied())
    }
    fn registration(
        &self,
        collateral: &OutPoint,
    ) -> Result<Option<MasternodeRegistration>, BackendError> {
        Ok(self.by_collateral.get(collateral).cloned())
    }
}

/// The registry as a block sees it while it is being validated: the view from before the block
/// plus the registrations and deregistrations of the block's earlier transactions.
pub(crate) struct RegistryOverlay<'a, M> {
    base: &'a M,
    events: Vec<MasternodeEvent>,
}

impl<'a, M: MasternodeView> RegistryOverlay<'a, M> {
    pub(crate) fn new(base: &'a M) -> Self {
        RegistryOverlay {
            base,
            events: Vec::new(),
        }
    }

    /// Whether `node_key` is taken, before or earlier in this block. Deregistrations earlier in
    /// the block do not free a key (see the module documentation).
    pub(crate) fn node_key_taken(&self, node_key: &PublicKey) -> Result<bool, BackendError> {
        let registered_here = self.events.iter().any(|event| {
            matches!(event, MasternodeEvent::Registered(registration) if registration.node_key == *node_key)
        });
        Ok(registered_here || self.base.collateral_of_node_key(node_key)?.is_some())
    }

    /// The registration of `collateral`, considering this block's earlier events.
    pub(crate) fn registration(
        &self,
        collateral: &OutPoint,
    ) -> Result<Option<MasternodeRegistration>, BackendError> {
        for event in self.events.iter().rev() {
            match event {
                MasternodeEvent::Registered(registration)
                    if registration.collateral == *collateral =>
                {
                    return Ok(Some(registration.clone()));
                }
                MasternodeEvent::Deregistered { registration, .. }
                    if registration.collateral == *collateral =>
                {
                    return Ok(None);
                }
                _ => {}
            }
        }
        self.base.registration(collateral)
    }

    pub(crate) fn push(&mut self, event: MasternodeEvent) {
        self.events.push(event);
    }

    pub(crate) fn into_events(self) -> Vec<MasternodeEvent> {
        self.events
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use timecoin_primitives::{SecretKey, Txid};

    fn registration(seed: u8) -> MasternodeRegistration {
        let node_key = SecretKey::from_bytes([seed; 32]).public_key();
        MasternodeRegistration {
            collateral: OutPoint {
                txid: Txid::default(),
                index: u32::from(seed),
            },
            owner: Address::from_public_key(&node_key),
            node_key,
            tier: Tier::Bronze,
            network_address: BoundedString::new("/ip4/127.0.0.1/tcp/1").unwrap(),
            registered_at: Height(0),
        }
    }

    #[test]
    fn apply_and_undo_round_trip() {
        let mut registry = MasternodeRegistry::new();
        registry.apply(&[MasternodeEvent::Registered(registration(1))]);
        let before = registry.clone();
        let events = [
            MasternodeEvent::Registered(registration(2)),
            MasternodeEvent::Deregistered {
                registration: registration(1),
                height: Height(5),
            },
        ];
        registry.apply(&events);
        assert_eq!(registry.len(), 1);
        let key2 = registration(2).node_key;
        assert_eq!(
            registry.collateral_of_node_key(&key2).unwrap(),
            Some(registration(2).collateral)
        );
        assert_eq!(
            registry
                .collateral_of_node_key(&registration(1).node_key)
                .unwrap(),
            None
        );
        registry.undo(&events);
        assert_eq!(registry, before);
    }

    #[test]
    fn overlay_sees_earlier_events_of_the_block() {
        let base = MasternodeRegistry::new();
        let mut overlay = RegistryOverlay::new(&base);
        let first = registration(1);
        assert!(!overlay.node_key_taken(&first.node_key).unwrap());
        overlay.push(MasternodeEvent::Registered(first.clone()));
        assert!(overlay.node_key_taken(&first.node_key).unwrap());
        assert_eq!(
            overlay.registration(&first.collateral).unwrap(),
            Some(first.clone())
        );
        overlay.push(MasternodeEvent::Deregistered {
            registration: first.clone(),
            height: Height(1),
        });
        assert_eq!(overlay.registration(&first.collateral).unwrap(), None);
        // Still taken: keys free up only once the block is applied.
        assert!(overlay.node_key_taken(&first.node_key).unwrap());
    }
}
