//! The node's network identity and the binding between masternode keys and peer ids.
//!
//! A masternode registers an Ed25519 public key on chain. Its libp2p identity is derived from the
//! very same secret, so its `PeerId` is a function of the registered key: a message that claims
//! to come from masternode X can be checked against the peer that sent it, and nobody
//! without X's secret can hold X's peer id (Noise proves possession of the key on every
//! connection).

use std::fmt;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use libp2p::PeerId;
use libp2p::identity::{self, Keypair, ed25519};
use timecoin_primitives::keys::{PublicKey, SecretKey};

use crate::error::{Error, Result};

/// The length of an Ed25519 secret (seed) and of the identity file.
pub const IDENTITY_FILE_LEN: usize = 32;

/// The file name of the identity inside the data directory.
pub const IDENTITY_FILE_NAME: &str = "network_key";

/// The multihash code under which libp2p inlines small public keys in a peer id.
const IDENTITY_MULTIHASH_CODE: u64 = 0x00;

/// A node's Ed25519 network identity. `Debug` never shows the secret.
#[derive(Clone)]
pub struct NodeIdentity {
    secret: [u8; IDENTITY_FILE_LEN],
}

impl NodeIdentity {
    /// A fresh random identity.
    pub fn generate() -> NodeIdentity {
        let secret = ed25519::SecretKey::generate();
        let mut bytes = [0u8; IDENTITY_FILE_LEN];
        bytes.copy_from_slice(secret.as_ref());
        NodeIdentity { secret: bytes }
    }

    /// The identity of a masternode key: its peer id is bound to the registered public key.
    pub fn from_secret_key(key: &SecretKey) -> NodeIdentity {
        NodeIdentity {
            secret: key.to_bytes(),
        }
    }

    /// The same secret as a TimeCoin signing key (for a masternode, its registered node key).
    pub fn secret_key(&self) -> SecretKey {
        SecretKey::from_bytes(self.secret)
    }

    /// The Ed25519 public key, as registered on chain.
    pub fn public_key(&self) -> PublicKey {
        self.secret_key().public_key()
    }

    /// The libp2p key pair for this identity.
    pub fn keypair(&self) -> Keypair {
        let mut bytes = self.secret;
        Keypair::ed25519_from_bytes(&mut bytes)
            .expect("any 32 bytes are a valid Ed25519 secret key")
    }

    /// The peer id under which this node is known on the network.
    pub fn peer_id(&self) -> PeerId {
        self.keypair().public().to_peer_id()
    }
}

impl fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeIdentity")
            .field("peer_id", &self.peer_id())
            .finish_non_exhaustive()
    }
}

/// Loads the identity kept at `path`, creating a random one (file mode 0600) if the file does not
/// exist. A file of the wrong size is reported, never replaced.
pub fn load_or_create_identity(path: &Path) -> Result<NodeIdentity> {
    let io_error = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    match fs::read(path) {
        Ok(bytes) => {
            let secret: [u8; IDENTITY_FILE_LEN] =
                bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| Error::CorruptIdentity {
                        path: path.to_path_buf(),
                        length: bytes.len(),
                    })?;
            Ok(NodeIdentity { secret })
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let identity = NodeIdentity::generate();
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                fs::create_dir_all(parent).map_err(io_error)?;
            }
            // Written to a private temporary file and renamed, so a crash never leaves a
            // half-written key behind and the secret is never readable by others.
            let temporary = temporary_path(path);
            let _ = fs::remove_file(&temporary);
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&temporary)
                .map_err(io_error)?;
            file.write_all(&identity.secret).map_err(io_error)?;
            file.sync_all().map_err(io_error)?;
            fs::set_permissions(&temporary, fs::Permissions::from_mode(0o600)).map_err(io_error)?;
            fs::rename(&temporary, path).map_err(io_error)?;
            Ok(identity)
        }
        Err(error) => Err(io_error(error)),
    }
}

/// `path` with `.tmp` appended, for write-then-rename.
pub(crate) fn temporary_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(".tmp");
    PathBuf::from(name)
}

/// The peer id of the node whose Ed25519 public key is `key`. Fails if the 32 bytes are not a
/// valid curve point (such a key could never have signed anything).
pub fn peer_id_from_public_key(key: &PublicKey) -> Result<PeerId> {
    let public = ed25519::PublicKey::try_from_bytes(&key.0)
        .map_err(|error| Error::InvalidConfig(format!("invalid Ed25519 public key: {error}")))?;
    Ok(identity::PublicKey::from(public).to_peer_id())
}

/// The Ed25519 public key a peer id was derived from. Ed25519 peer ids inline the key, so this
/// needs no lookup; peer ids of other key types are refused.
pub fn public_key_from_peer_id(peer: &PeerId) -> Result<PublicKey> {
    let multihash = peer.as_ref();
    if multihash.code() != IDENTITY_MULTIHASH_CODE {
        return Err(Error::NotEd25519(*peer));
    }
    let public = identity::PublicKey::try_decode_protobuf(multihash.digest())
        .map_err(|_| Error::NotEd25519(*peer))?
        .try_into_ed25519()
        .map_err(|_| Error::NotEd25519(*peer))?;
    Ok(PublicKey(public.to_bytes()))
}

/// Whether `peer` is the network identity of the holder of `key`: the check that stops a peer
/// from passing off a masternode's signed message as its own or relaying under its name.
pub fn peer_matches_key(peer: &PeerId, key: &PublicKey) -> bool {
    public_key_from_peer_id(peer).is_ok_and(|derived| derived == *key)
}

/// Loads a 32-byte network pre-shared key from the standard `/key/swarm/psk/1.0.0/` key file or
/// from a file holding just 64 hex digits.
pub fn load_psk(path: &Path) -> Result<[u8; 32]> {
    let text = fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_psk(&text).ok_or_else(|| Error::InvalidPsk {
        path: path.to_path_buf(),
    })
}

fn parse_psk(text: &str) -> Option<[u8; 32]> {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let hex_digits = match lines.as_slice() {
        ["/key/swarm/psk/1.0.0/", "/base16/", key] => *key,
        [key] => *key,
        _ => return None,
    };
    let mut key = [0u8; 32];
    hex::decode_to_slice(hex_digits, &mut key).ok()?;
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_created_private_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join(IDENTITY_FILE_NAME);
        let created = load_or_create_identity(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(fs::read(&path).unwrap().len(), IDENTITY_FILE_LEN);
        let reloaded = load_or_create_identity(&path).unwrap();
        assert_eq!(created.peer_id(), reloaded.peer_id());
        assert_eq!(created.public_key(), reloaded.public_key());
    }

    #[test]
    fn corrupt_identity_is_reported_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(IDENTITY_FILE_NAME);
        fs::write(&path, [7u8; 31]).unwrap();
        let error = load_or_create_identity(&path).unwrap_err();
        assert!(
            matches!(error, Error::CorruptIdentity { length: 31, .. }),
            "{error}"
        );
        assert!(error.to_string().contains("expected exactly 32 bytes"));
        assert_eq!(fs::read(&path).unwrap(), vec![7u8; 31], "never overwritten");
    }

    #[test]
    fn peer_id_is_bound_to_the_masternode_key() {
        let key = SecretKey::from_bytes([42u8; 32]);
        let identity = NodeIdentity::from_secret_key(&key);
        assert_eq!(identity.public_key(), key.public_key());
        let peer = peer_id_from_public_key(&key.public_key()).unwrap();
        assert_eq!(peer, identity.peer_id());
        assert_eq!(public_key_from_peer_id(&peer).unwrap(), key.public_key());
        assert!(peer_matches_key(&peer, &key.public_key()));
        let other = SecretKey::from_bytes([43u8; 32]).public_key();
        assert!(!peer_matches_key(&peer, &other));
        assert_ne!(peer_id_from_public_key(&other).unwrap(), peer);
        // Signatures made by the libp2p key verify under the TimeCoin key and vice versa, so
        // both libraries agree on the key pair.
        let signature = identity.keypair().sign(b"bound").unwrap();
        let signature = timecoin_primitives::keys::Signature(signature.try_into().unwrap());
        key.public_key().verify(b"bound", &signature).unwrap();
    }

    #[test]
    fn foreign_peer_ids_have_no_public_key() {
        // A random peer id inlines bytes that encode no public key at all.
        let peer = PeerId::random();
        assert!(matches!(
            public_key_from_peer_id(&peer),
            Err(Error::NotEd25519(_))
        ));
    }

    #[test]
    fn psk_formats() {
        let hex_key = "ab".repeat(32);
        let standard = format!("/key/swarm/psk/1.0.0/\n/base16/\n{hex_key}\n");
        assert_eq!(parse_psk(&standard), Some([0xab; 32]));
        assert_eq!(parse_psk(&hex_key), Some([0xab; 32]));
        assert_eq!(parse_psk("/key/swarm/psk/1.0.0/\n/base64/\nabc"), None);
        assert_eq!(parse_psk(&"ab".repeat(31)), None);
    }
}
