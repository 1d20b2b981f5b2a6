//! The keystore file: keys encrypted under a password with Argon2id and XChaCha20-Poly1305.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use timecoin_primitives::{Address, Amount, Network, PublicKey, SecretKey};
use zeroize::{Zeroize, Zeroizing};

/// The file format's name, so a wrong file is recognised as such.
const FORMAT: &str = "timecoin-wallet";
/// The newest file version this code reads and writes.
const FILE_VERSION: u32 = 1;
/// Most keys in one wallet; each address is one key.
pub const MAX_KEYS: usize = 100_000;
/// Longest key label, in bytes.
pub const MAX_LABEL_LEN: usize = 200;

/// Argon2id cost parameters. The defaults follow RFC 9106's second recommended option
/// (64 MiB, 3 passes), which takes a fraction of a second: unlocking is rare, guessing is not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Memory per guess, in KiB.
    pub memory_kib: u32,
    /// Passes over the memory.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl Default for KdfParams {
    fn default() -> Self {
        KdfParams {
            memory_kib: 64 * 1024,
            iterations: 3,
            parallelism: 1,
        }
    }
}

impl KdfParams {
    /// Cheap parameters for tests only: a wallet with them offers no protection.
    pub const INSECURE_FOR_TESTS: KdfParams = KdfParams {
        memory_kib: 8,
        iterations: 1,
        parallelism: 1,
    };
}

/// Everything that can go wrong with a wallet, worded for the person at the keyboard.
#[derive(Debug, thiserror::Error)]
pub enum WalletError {
    /// The password does not open the file.
    #[error("wrong password for wallet {0} (or the file was altered)")]
    WrongPassword(PathBuf),
    /// There is no wallet at the path.
    #[error("no wallet at {0}; create one with `time-cli createwallet`")]
    NotFound(PathBuf),
    /// A file is already there.
    #[error("a wallet already exists at {0}; refusing to overwrite it")]
    AlreadyExists(PathBuf),
    /// The file is not a wallet this version understands.
    #[error("{path} is not a usable wallet file: {reason}")]
    BadFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The wallet belongs to another network.
    #[error("wallet {path} is for {found}, but {expected} was asked for")]
    WrongNetwork {
        /// The file.
        path: PathBuf,
        /// Its network.
        found: Network,
        /// The network asked for.
        expected: Network,
    },
    /// Reading or writing the file failed.
    #[error("cannot access wallet file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The wallet is full or a label is too long.
    #[error("{0}")]
    Limit(String),
    /// An empty password was given.
    #[error("the password must not be empty")]
    EmptyPassword,
    /// Not enough spendable coins.
    #[error(
        "insufficient funds: {available} TIME available, {needed} TIME needed including the fee"
    )]
    InsufficientFunds {
        /// What the coins given add up to.
        available: Amount,
        /// What the payment and fee need.
        needed: Amount,
    },
    /// The wallet has no key for a coin it was asked to spend.
    #[error("the wallet has no key for address {0}")]
    MissingKey(String),
    /// The transaction asked for makes no sense.
    #[error("invalid transaction request: {0}")]
    InvalidRequest(String),
}

#[derive(Serialize, Deserialize)]
struct WalletFile {
    format: String,
    version: u32,
    network: String,
    kdf: KdfParams,
    salt: String,
    nonce: String,
    ciphertext: String,
}

#[derive(Serialize, Deserialize, Default)]
struct Plaintext {
    keys: Vec<StoredKey>,
}

#[derive(Serialize, Deserialize, Clone)]
struct StoredKey {
    secret: String,
    label: String,
}

impl Drop for StoredKey {
    fn drop(&mut self) {
        self.secret.zeroize();
    }
}

/// One key the wallet holds.
#[derive(Clone, Debug)]
pub struct KeyEntry {
    /// The key.
    pub secret: SecretKey,
    /// What the user called it.
    pub label: String,
}

/// An unlocked wallet: its keys in memory, and where and how to save them.
pub struct Keystore {
    path: PathBuf,
    network: Network,
    kdf: KdfParams,
    password: Zeroizing<Vec<u8>>,
    keys: Vec<KeyEntry>,
}

impl std::fmt::Debug for Keystore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keystore")
            .field("path", &self.path)
            .field("network", &self.network)
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).expect("the operating system's random source is available");
    bytes
}

fn derive_key(password: &[u8], salt: &[u8], kdf: KdfParams) -> Result<Zeroizing<[u8; 32]>, String> {
    let params = Params::new(kdf.memory_kib, kdf.iterations, kdf.parallelism, Some(32))
        .map_err(|e| format!("bad key-derivation parameters: {e}"))?;
    let mut key = Zeroizing::new([0u8; 32]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(password, salt, key.as_mut())
        .map_err(|e| format!("key derivation failed: {e}"))?;
    Ok(key)
}

/// The header fields are authenticated with the ciphertext, so nobody can, say, relabel the
/// network or weaken the parameters without the password failing.
fn associated_data(network: &str, kdf: &KdfParams, salt: &str) -> Vec<u8> {
    format!(
        "{FORMAT} v{FILE_VERSION} {network} {} {} {} {salt}",
        kdf.memory_kib, kdf.iterations, kdf.parallelism
    )
    .into_bytes()
}

impl Keystore {
    /// Creates an empty wallet file at `path`; fails if one exists.
    pub fn create(
        path: &Path,
        password: &[u8],
        network: Network,
        kdf: KdfParams,
    ) -> Result<Keystore, WalletError> {
        if password.is_empty() {
            return Err(WalletError::EmptyPassword);
        }
        if path.exists() {
            return Err(WalletError::AlreadyExists(path.to_path_buf()));
        }
        let keystore = Keystore {
            path: path.to_path_buf(),
            network,
            kdf,
            password: Zeroizing::new(password.to_vec()),
            keys: Vec::new(),
        };
        keystore.save()?;
        Ok(keystore)
    }

    /// Opens and decrypts the wallet at `path`, which must be for `network`.
    pub fn open(path: &Path, password: &[u8], network: Network) -> Result<Keystore, WalletError> {
        let bad = |reason: &str| WalletError::BadFile {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        };
        let text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(WalletError::NotFound(path.to_path_buf()));
            }
            Err(source) => {
                return Err(WalletError::Io {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        let file: WalletFile =
            serde_json::from_str(&text).map_err(|e| bad(&format!("not a wallet: {e}")))?;
        if file.format != FORMAT {
            return Err(bad("not a TimeCoin wallet"));
        }
        if file.version > FILE_VERSION {
            return Err(bad(&format!(
                "written by a newer version (file version {}, this program reads up to {FILE_VERSION}); upgrade time-cli",
                file.version
            )));
        }
        let found: Network = file.network.parse().map_err(|_| bad("unknown network"))?;
        if found != network {
            return Err(WalletError::WrongNetwork {
                path: path.to_path_buf(),
                found,
                expected: network,
            });
        }
        let salt = hex::decode(&file.salt).map_err(|_| bad("salt is not hex"))?;
        let nonce: [u8; 24] = hex::decode(&file.nonce)
            .ok()
            .and_then(|n| n.try_into().ok())
            .ok_or_else(|| bad("nonce is not 24 hex bytes"))?;
        let ciphertext = hex::decode(&file.ciphertext).map_err(|_| bad("ciphertext is not hex"))?;
        let key = derive_key(password, &salt, file.kdf).map_err(|e| bad(&e))?;
        let cipher = XChaCha20Poly1305::new(&chacha20poly1305::Key::from(*key));
        let aad = associated_data(&file.network, &file.kdf, &file.salt);
        let plaintext = Zeroizing::new(
            cipher
                .decrypt(
                    &XNonce::from(nonce),
                    Payload {
                        msg: &ciphertext,
                        aad: &aad,
                    },
                )
                .map_err(|_| WalletError::WrongPassword(path.to_path_buf()))?,
        );
        let stored: Plaintext = serde_json::from_slice(&plaintext)
            .map_err(|_| bad("decrypted contents are malformed"))?;
        let mut keys = Vec::with_capacity(stored.keys.len());
        for key in &stored.keys {
            let bytes: Zeroizing<[u8; 32]> = Zeroizing::new(
                hex::decode(&key.secret)
                    .ok()
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| bad("a stored key is malformed"))?,
            );
            keys.push(KeyEntry {
                secret: SecretKey::from_bytes(*bytes),
                label: key.label.clone(),
            });
        }
        Ok(Keystore {
            path: path.to_path_buf(),
            network,
            kdf: file.kdf,
            password: Zeroizing::new(password.to_vec()),
            keys,
        })
    }

    /// The network this wallet is for.
    pub fn network(&self) -> Network {
        self.network
    }

    /// The wallet file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Generates a key, saves the wallet, and returns the key's address.
    pub fn new_address(&mut self, label: &str) -> Result<Address, WalletError> {
        self.add_key(SecretKey::from_bytes(random_bytes()), label)
    }

    /// Adds an existing key (e.g. the devnet's funded key), saves, and returns its address.
    /// Adding a key already held only returns its address.
    pub fn import_key(&mut self, secret: SecretKey, label: &str) -> Result<Address, WalletError> {
        self.add_key(secret, label)
    }

    fn add_key(&mut self, secret: SecretKey, label: &str) -> Result<Address, WalletError> {
        if label.len() > MAX_LABEL_LEN {
            return Err(WalletError::Limit(format!(
                "labels are at most {MAX_LABEL_LEN} bytes"
            )));
        }
        let address = Address::from_public_key(&secret.public_key());
        if self.key_for(&address).is_some() {
            return Ok(address);
        }
        if self.keys.len() >= MAX_KEYS {
            return Err(WalletError::Limit(format!(
                "a wallet holds at most {MAX_KEYS} keys"
            )));
        }
        self.keys.push(KeyEntry {
            secret,
            label: label.to_string(),
        });
        if let Err(error) = self.save() {
            self.keys.pop();
            return Err(error);
        }
        Ok(address)
    }

    /// Every key's address with its label, oldest first.
    pub fn addresses(&self) -> Vec<(Address, &str)> {
        self.keys
            .iter()
            .map(|k| {
                (
                    Address::from_public_key(&k.secret.public_key()),
                    k.label.as_str(),
                )
            })
            .collect()
    }

    /// The key that owns `address`, if the wallet holds it.
    pub fn key_for(&self, address: &Address) -> Option<&SecretKey> {
        self.keys
            .iter()
            .map(|k| &k.secret)
            .find(|secret| address.is_owned_by(&secret.public_key()))
    }

    /// The key with this public key, if the wallet holds it.
    pub fn key_for_public(&self, public_key: &PublicKey) -> Option<&SecretKey> {
        self.keys
            .iter()
            .map(|k| &k.secret)
            .find(|secret| secret.public_key() == *public_key)
    }

    /// Writes the wallet atomically: a crash leaves either the old file or the new one.
    fn save(&self) -> Result<(), WalletError> {
        let io = |source| WalletError::Io {
            path: self.path.clone(),
            source,
        };
        let salt = hex::encode(random_bytes::<16>());
        let nonce = random_bytes::<24>();
        let key = derive_key(
            &self.password,
            &hex::decode(&salt).expect("just encoded"),
            self.kdf,
        )
        .map_err(WalletError::InvalidRequest)?;
        let plaintext = Zeroizing::new(
            serde_json::to_vec(&Plaintext {
                keys: self
                    .keys
                    .iter()
                    .map(|k| StoredKey {
                        secret: hex::encode(k.secret.to_bytes()),
                        label: k.label.clone(),
                    })
                    .collect(),
            })
            .expect("plain data serialises"),
        );
        let network = self.network.name().to_string();
        let aad = associated_data(&network, &self.kdf, &salt);
        let ciphertext = XChaCha20Poly1305::new(&chacha20poly1305::Key::from(*key))
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: &plaintext,
                    aad: &aad,
                },
            )
            .expect("encryption into memory cannot fail");
        let file = WalletFile {
            format: FORMAT.to_string(),
            version: FILE_VERSION,
            network,
            kdf: self.kdf,
            salt,
            nonce: hex::encode(nonce),
            ciphertext: hex::encode(ciphertext),
        };
        let text = serde_json::to_string_pretty(&file).expect("plain data serialises");
        let temporary = self.path.with_extension("tmp");
        {
            let mut options = fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut out = options.open(&temporary).map_err(io)?;
            out.write_all(text.as_bytes()).map_err(io)?;
            out.sync_all().map_err(io)?;
        }
        fs::rename(&temporary, &self.path).map_err(io)?;
        if let Some(parent) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
            // The rename is durable only once the directory entry is.
            fs::File::open(parent)
                .and_then(|d| d.sync_all())
                .map_err(io)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(dir: &Path) -> Keystore {
        Keystore::create(
            &dir.join("wallet.json"),
            b"correct horse",
            Network::Devnet,
            KdfParams::INSECURE_FOR_TESTS,
        )
        .unwrap()
    }

    #[test]
    fn keys_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut wallet = create(dir.path());
        let first = wallet.new_address("first").unwrap();
        let second = wallet.new_address("second").unwrap();
        assert_ne!(first, second);
        let reopened = Keystore::open(
            &dir.path().join("wallet.json"),
            b"correct horse",
            Network::Devnet,
        )
        .unwrap();
        assert_eq!(
            reopened.addresses(),
            vec![(first, "first"), (second, "second")]
        );
        assert!(reopened.key_for(&first).is_some());
    }

    #[test]
    fn wrong_password_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        create(dir.path()).new_address("a").unwrap();
        let error =
            Keystore::open(&dir.path().join("wallet.json"), b"wrong", Network::Devnet).unwrap_err();
        assert!(matches!(error, WalletError::WrongPassword(_)), "{error}");
    }

    #[test]
    fn file_does_not_contain_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        let mut wallet = create(dir.path());
        let secret = SecretKey::from_bytes([5; 32]);
        wallet.import_key(secret.clone(), "imported").unwrap();
        let text = fs::read_to_string(dir.path().join("wallet.json")).unwrap();
        assert!(!text.contains(&hex::encode(secret.to_bytes())));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join("wallet.json"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn tampered_header_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        create(dir.path()).new_address("a").unwrap();
        let path = dir.path().join("wallet.json");
        let text = fs::read_to_string(&path).unwrap();
        let mut file: serde_json::Value = serde_json::from_str(&text).unwrap();
        file["kdf"]["iterations"] = serde_json::json!(2);
        fs::write(&path, file.to_string()).unwrap();
        assert!(matches!(
            Keystore::open(&path, b"correct horse", Network::Devnet),
            Err(WalletError::WrongPassword(_))
        ));
    }

    #[test]
    fn open_errors_are_specific() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wallet.json");
        assert!(matches!(
            Keystore::open(&path, b"x", Network::Devnet),
            Err(WalletError::NotFound(_))
        ));
        create(dir.path());
        assert!(matches!(
            Keystore::open(&path, b"correct horse", Network::Mainnet),
            Err(WalletError::WrongNetwork {
                found: Network::Devnet,
                ..
            })
        ));
        assert!(matches!(
            Keystore::create(&path, b"p", Network::Devnet, KdfParams::INSECURE_FOR_TESTS),
            Err(WalletError::AlreadyExists(_))
        ));
        assert!(matches!(
            Keystore::create(
                &dir.path().join("other"),
                b"",
                Network::Devnet,
                KdfParams::default()
            ),
            Err(WalletError::EmptyPassword)
        ));
        fs::write(&path, "{\"format\":\"timecoin-wallet\",\"version\":99}").unwrap();
        assert!(matches!(
            Keystore::open(&path, b"correct horse", Network::Devnet),
            Err(WalletError::BadFile { .. })
        ));
        fs::write(&path, "not json").unwrap();
        assert!(matches!(
            Keystore::open(&path, b"correct horse", Network::Devnet),
            Err(WalletError::BadFile { .. })
        ));
    }

    #[test]
    fn importing_twice_keeps_one_key() {
        let dir = tempfile::tempdir().unwrap();
        let mut wallet = create(dir.path());
        let a = wallet
            .import_key(SecretKey::from_bytes([1; 32]), "x")
            .unwrap();
        let b = wallet
            .import_key(SecretKey::from_bytes([1; 32]), "y")
            .unwrap();
        assert_eq!(a, b);
        assert_eq!(wallet.addresses().len(), 1);
        assert!(matches!(
            wallet.new_address(&"l".repeat(MAX_LABEL_LEN + 1)),
            Err(WalletError::Limit(_))
        ));
    }
}
