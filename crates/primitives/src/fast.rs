//! Hash maps for the hot paths, keyed by hashes, outpoints and keys.
//!
//! A node looks txids and outpoints up in many maps for every transaction it handles. std's
//! `BTreeMap` compares 32-byte keys at every level of a deep tree and std's `HashMap` hashes
//! with SipHash; both showed up as several per cent of a node's CPU under load. foldhash is
//! much cheaper, and it is seeded per process, as std's hasher is, so a peer cannot choose
//! txids that collide in our maps. Iteration order therefore differs from run to run: code
//! whose output depends on order must sort or keep an ordered map.

/// A hash map with the per-process seeded foldhash hasher.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// A hash set with the per-process seeded foldhash hasher.
pub type FastSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;
