//! The bans and known-peers files in the data directory. Both are small JSON files, written to a
//! temporary file and renamed so a crash leaves either the old or the new version.

use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::identity::temporary_path;

/// The bans file name inside the data directory.
pub const BANS_FILE_NAME: &str = "bans.json";
/// The known-peers file name inside the data directory.
pub const PEERS_FILE_NAME: &str = "peers.json";
/// Most bans kept; when full, the ban closest to expiry makes room.
pub const MAX_BANS: usize = 10_000;
/// Most known peers remembered; when full, the least recently seen makes room.
pub const MAX_KNOWN_PEERS: usize = 1_000;
/// Most addresses remembered per peer.
pub const MAX_ADDRESSES_PER_PEER: usize = 8;
/// Largest state file read; anything bigger was not written by us.
pub const MAX_STATE_FILE_BYTES: u64 = 4 * 1024 * 1024;

#[derive(Serialize, Deserialize)]
struct BanRecord {
    peer: String,
    until_unix_secs: u64,
}

#[derive(Serialize, Deserialize)]
struct PeerRecord {
    peer: String,
    addresses: Vec<String>,
}

fn unix_secs(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn read_state(path: &Path) -> Result<Option<Vec<u8>>> {
    let io_error = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    match fs::metadata(path) {
        Ok(metadata) if metadata.len() > MAX_STATE_FILE_BYTES => Err(Error::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("larger than {MAX_STATE_FILE_BYTES} bytes"),
            ),
        }),
        Ok(_) => fs::read(path).map(Some).map_err(io_error),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(io_error(error)),
    }
}

fn write_state(path: &Path, bytes: &[u8]) -> Result<()> {
    let io_error = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let temporary = temporary_path(path);
    fs::write(&temporary, bytes).map_err(io_error)?;
    fs::rename(&temporary, path).map_err(io_error)
}

fn corrupt(path: &Path, error: impl std::fmt::Display) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, error.to_string()),
    }
}

/// Banned peers with their expiry times (wall clock, so bans survive restarts).
#[derive(Debug, Default)]
pub struct BanList {
    bans: HashMap<PeerId, SystemTime>,
}

impl BanList {
    /// Loads the bans file, dropping expired entries. A missing file is an empty list.
    pub fn load(path: &Path, now: SystemTime) -> Result<BanList> {
        let mut list = BanList::default();
        let Some(bytes) = read_state(path)? else {
            return Ok(list);
        };
        let records: Vec<BanRecord> =
            serde_json::from_slice(&bytes).map_err(|error| corrupt(path, error))?;
        for record in records.into_iter().take(MAX_BANS) {
            let peer: PeerId = record.peer.parse().map_err(|error| corrupt(path, error))?;
            let until = UNIX_EPOCH + Duration::from_secs(record.until_unix_secs);
            if until > now {
                list.bans.insert(peer, until);
            }
        }
        Ok(list)
    }

    /// Writes the list.
    pub fn save(&self, path: &Path) -> Result<()> {
        let records: Vec<BanRecord> = self
            .bans
            .iter()
            .map(|(peer, until)| BanRecord {
                peer: peer.to_string(),
                until_unix_secs: unix_secs(*until),
            })
            .collect();
        let bytes = serde_json::to_vec_pretty(&records).map_err(|error| corrupt(path, error))?;
        write_state(path, &bytes)
    }

    /// Bans `peer` until `until`.
    pub fn ban(&mut self, peer: PeerId, until: SystemTime) {
        if !self.bans.contains_key(&peer) && self.bans.len() >= MAX_BANS {
            let soonest = self
                .bans
                .iter()
                .min_by_key(|(_, until)| **until)
                .map(|(peer, _)| *peer);
            if let Some(soonest) = soonest {
                self.bans.remove(&soonest);
            }
        }
        self.bans.insert(peer, until);
    }

    /// Whether `peer` is banned.
    pub fn is_banned(&self, peer: &PeerId) -> bool {
        self.bans.contains_key(peer)
    }

    /// Removes and returns the bans that have expired.
    pub fn expire(&mut self, now: SystemTime) -> Vec<PeerId> {
        let expired: Vec<PeerId> = self
            .bans
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(peer, _)| *peer)
            .collect();
        for peer in &expired {
            self.bans.remove(peer);
        }
        expired
    }

    /// The banned peers and when their bans end.
    pub fn entries(&self) -> impl Iterator<Item = (PeerId, SystemTime)> + '_ {
        self.bans.iter().map(|(peer, until)| (*peer, *until))
    }

    /// How many peers are banned.
    pub fn len(&self) -> usize {
        self.bans.len()
    }
}

/// Peers we have talked to and where they listen, remembered across restarts.
#[derive(Debug, Default)]
pub struct KnownPeers {
    /// Addresses and a logical "last seen" stamp for eviction.
    peers: HashMap<PeerId, (Vec<Multiaddr>, u64)>,
    clock: u64,
}

impl KnownPeers {
    /// Loads the peers file. A missing file is an empty set.
    pub fn load(path: &Path) -> Result<KnownPeers> {
        let mut known = KnownPeers::default();
        let Some(bytes) = read_state(path)? else {
            return Ok(known);
        };
        let records: Vec<PeerRecord> =
            serde_json::from_slice(&bytes).map_err(|error| corrupt(path, error))?;
        for record in records.into_iter().take(MAX_KNOWN_PEERS) {
            let peer: PeerId = record.peer.parse().map_err(|error| corrupt(path, error))?;
            let addresses = record
                .addresses
                .iter()
                .filter_map(|address| address.parse().ok())
                .collect();
            known.insert(peer, addresses);
        }
        Ok(known)
    }

    /// Writes the set.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut peers: Vec<_> = self.peers.iter().collect();
        // Most recently seen first, so a truncated reader keeps the freshest.
        peers.sort_by_key(|(_, (_, seen))| std::cmp::Reverse(*seen));
        let records: Vec<PeerRecord> = peers
            .into_iter()
            .map(|(peer, (addresses, _))| PeerRecord {
                peer: peer.to_string(),
                addresses: addresses.iter().map(ToString::to_string).collect(),
            })
            .collect();
        let bytes = serde_json::to_vec_pretty(&records).map_err(|error| corrupt(path, error))?;
        write_state(path, &bytes)
    }

    /// Records (or refreshes) `peer`'s addresses; an empty list is ignored.
    pub fn insert(&mut self, peer: PeerId, mut addresses: Vec<Multiaddr>) {
        addresses.dedup();
        addresses.truncate(MAX_ADDRESSES_PER_PEER);
        if addresses.is_empty() {
            return;
        }
        if !self.peers.contains_key(&peer) && self.peers.len() >= MAX_KNOWN_PEERS {
            let oldest = self
                .peers
                .iter()
                .min_by_key(|(_, (_, seen))| *seen)
                .map(|(peer, _)| *peer);
            if let Some(oldest) = oldest {
                self.peers.remove(&oldest);
            }
        }
        self.clock += 1;
        self.peers.insert(peer, (addresses, self.clock));
    }

    /// Forgets `peer`.
    pub fn remove(&mut self, peer: &PeerId) {
        self.peers.remove(peer);
    }

    /// `peer`'s addresses.
    #[cfg(test)]
    pub fn addresses(&self, peer: &PeerId) -> Option<&[Multiaddr]> {
        self.peers
            .get(peer)
            .map(|(addresses, _)| addresses.as_slice())
    }

    /// All known peers, most recently seen first.
    pub fn iter(&self) -> Vec<(PeerId, Vec<Multiaddr>)> {
        let mut peers: Vec<_> = self
            .peers
            .iter()
            .map(|(peer, (addresses, seen))| (*peer, addresses.clone(), *seen))
            .collect();
        peers.sort_by_key(|(_, _, seen)| std::cmp::Reverse(*seen));
        peers
            .into_iter()
            .map(|(peer, addresses, _)| (peer, addresses))
            .collect()
    }

    /// How many peers are known.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.peers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bans_round_trip_and_expire() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(BANS_FILE_NAME);
        let now = SystemTime::now();
        let (long, short) = (PeerId::random(), PeerId::random());
        let mut list = BanList::default();
        list.ban(long, now + Duration::from_secs(3600));
        list.ban(short, now + Duration::from_secs(10));
        list.save(&path).unwrap();
        let loaded = BanList::load(&path, now).unwrap();
        assert!(loaded.is_banned(&long) && loaded.is_banned(&short));
        let later = BanList::load(&path, now + Duration::from_secs(60)).unwrap();
        assert!(later.is_banned(&long) && !later.is_banned(&short));
        let mut list = loaded;
        assert_eq!(list.expire(now + Duration::from_secs(60)), vec![short]);
    }

    #[test]
    fn corrupt_bans_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(BANS_FILE_NAME);
        fs::write(&path, b"not json").unwrap();
        assert!(BanList::load(&path, SystemTime::now()).is_err());
    }

    #[test]
    fn known_peers_are_bounded_and_persist() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(PEERS_FILE_NAME);
        let mut known = KnownPeers::default();
        let address: Multiaddr = "/ip4/127.0.0.1/tcp/1".parse().unwrap();
        let first = PeerId::random();
        known.insert(first, vec![address.clone()]);
        for _ in 0..MAX_KNOWN_PEERS {
            known.insert(
                PeerId::random(),
                vec![address.clone(); MAX_ADDRESSES_PER_PEER + 3],
            );
        }
        assert_eq!(known.len(), MAX_KNOWN_PEERS);
        assert!(known.addresses(&first).is_none(), "the oldest made room");
        known.save(&path).unwrap();
        let loaded = KnownPeers::load(&path).unwrap();
        assert_eq!(loaded.len(), MAX_KNOWN_PEERS);
        assert!(
            loaded
                .iter()
                .iter()
                .all(|(_, a)| a.len() <= MAX_ADDRESSES_PER_PEER)
        );
    }
}
