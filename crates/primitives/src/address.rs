//! Addresses: who an output pays, as the hash of the owner's public key, shown as bech32m.

use std::fmt;

use bech32::primitives::decode::CheckedHrpstring;
use bech32::{Bech32m, Hrp};
use borsh::{BorshDeserialize, BorshSerialize};

use crate::hash::{Domain, Hash32};
use crate::keys::PublicKey;
use crate::network::Network;

/// The only address version so far: pay to the hash of one Ed25519 key.
const VERSION_KEY_HASH: u8 = 0;

/// Bytes in an encoded address's data part: the version and the 32-byte key hash.
const PAYLOAD_LEN: usize = 33;

/// The owner of an output: the BLAKE3 hash of its public key. On chain it is just the hash; the
/// network appears only in the text form, which is what people copy and paste.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, BorshSerialize, BorshDeserialize,
)]
pub struct Address(pub Hash32);

/// Why text is not an address of the expected network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// Not bech32m at all, or the checksum does not match (a typo).
    #[error("'{text}' is not a valid address: {reason}")]
    Malformed {
        /// The text.
        text: String,
        /// What is wrong.
        reason: String,
    },
    /// A valid address of another network.
    #[error(
        "'{text}' is an address for prefix '{found}', but this node runs {network} (prefix '{expected}')"
    )]
    WrongNetwork {
        /// The text.
        text: String,
        /// The prefix found.
        found: String,
        /// The prefix expected.
        expected: &'static str,
        /// The network expected.
        network: Network,
    },
    /// The data part has the wrong length or an unknown version.
    #[error("'{text}' has a {length}-byte payload; a version-0 address has {PAYLOAD_LEN}")]
    BadLength {
        /// The text.
        text: String,
        /// Bytes found.
        length: usize,
    },
    /// A version this node does not know.
    #[error("'{text}' has address version {version}; only version 0 exists")]
    UnknownVersion {
        /// The text.
        text: String,
        /// The version found.
        version: u8,
    },
}

impl Address {
    /// The address that pays to `key`.
    pub fn from_public_key(key: &PublicKey) -> Address {
        Address(Domain::Address.hash(&[&key.0]))
    }

    /// Whether `key` is the key this address pays to.
    pub fn is_owned_by(&self, key: &PublicKey) -> bool {
        *self == Address::from_public_key(key)
    }

    /// The text form on `network`.
    pub fn encode(&self, network: Network) -> String {
        let hrp = Hrp::parse(network.address_prefix()).expect("static prefixes are valid");
        let mut payload = [0u8; PAYLOAD_LEN];
        payload[0] = VERSION_KEY_HASH;
        payload[1..].copy_from_slice(&self.0.0);
        bech32::encode_lower::<Bech32m>(hrp, &payload).expect("33 bytes fit in a bech32m string")
    }

    /// Parses the text form, requiring it to belong to `network`.
    pub fn parse(text: &str, network: Network) -> Result<Address, AddressError> {
        let malformed = |reason: String| AddressError::Malformed {
            text: text.to_string(),
            reason,
        };
        let checked =
            CheckedHrpstring::new::<Bech32m>(text).map_err(|e| malformed(e.to_string()))?;
        let expected = network.address_prefix();
        let found = checked.hrp().to_lowercase();
        if found != expected {
            return Err(AddressError::WrongNetwork {
                text: text.to_string(),
                found,
                expected,
                network,
            });
        }
        let payload: Vec<u8> = checked.byte_iter().collect();
        if payload.len() != PAYLOAD_LEN {
            return Err(AddressError::BadLength {
                text: text.to_string(),
                length: payload.len(),
            });
        }
        if payload[0] != VERSION_KEY_HASH {
            return Err(AddressError::UnknownVersion {
                text: text.to_string(),
                version: payload[0],
            });
        }
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&payload[1..]);
        let address = Address(Hash32(hash));
        // Non-zero padding bits would give a second spelling of the same address.
        if address.encode(network) != text.to_ascii_lowercase() {
            return Err(malformed("non-canonical padding".to_string()));
        }
        Ok(address)
    }
}

impl fmt::Display for Address {
    /// The raw hash; use [`Address::encode`] for the form people use.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SecretKey;
    use bech32::Bech32;

    fn address() -> Address {
        Address::from_public_key(&SecretKey::from_bytes([3; 32]).public_key())
    }

    #[test]
    fn round_trip_on_each_network() {
        let address = address();
        for network in Network::ALL {
            let text = address.encode(network);
            assert!(text.starts_with(network.address_prefix()), "{text}");
            assert_eq!(Address::parse(&text, network), Ok(address));
            assert_eq!(Address::parse(&text.to_uppercase(), network), Ok(address));
        }
        assert!(address.encode(Network::Mainnet).starts_with("time1"));
        assert!(address.encode(Network::Devnet).starts_with("ttime1"));
    }

    #[test]
    fn wrong_network_is_named() {
        let text = address().encode(Network::Mainnet);
        let error = Address::parse(&text, Network::Testnet).unwrap_err();
        assert!(
            matches!(error, AddressError::WrongNetwork { .. }),
            "{error}"
        );
        assert!(error.to_string().contains("testnet"));
    }

    #[test]
    fn typo_fails_the_checksum() {
        let mut text = address().encode(Network::Mainnet);
        let last = text.pop().unwrap();
        text.push(if last == 'q' { 'p' } else { 'q' });
        assert!(matches!(
            Address::parse(&text, Network::Mainnet),
            Err(AddressError::Malformed { .. })
        ));
    }

    #[test]
    fn bech32_checksum_is_not_bech32m() {
        let hrp = Hrp::parse("time").unwrap();
        let mut payload = vec![0u8];
        payload.extend_from_slice(&address().0.0);
        let text = bech32::encode::<Bech32>(hrp, &payload).unwrap();
        assert!(matches!(
            Address::parse(&text, Network::Mainnet),
            Err(AddressError::Malformed { .. })
        ));
    }

    #[test]
    fn bad_length_and_version_are_rejected() {
        let hrp = Hrp::parse("time").unwrap();
        let short = bech32::encode::<Bech32m>(hrp, &[0u8; 21]).unwrap();
        assert!(matches!(
            Address::parse(&short, Network::Mainnet),
            Err(AddressError::BadLength { length: 21, .. })
        ));
        let mut payload = vec![1u8];
        payload.extend_from_slice(&[9u8; 32]);
        let versioned = bech32::encode::<Bech32m>(hrp, &payload).unwrap();
        assert!(matches!(
            Address::parse(&versioned, Network::Mainnet),
            Err(AddressError::UnknownVersion { version: 1, .. })
        ));
    }

    #[test]
    fn ownership() {
        let key = SecretKey::from_bytes([3; 32]).public_key();
        assert!(address().is_owned_by(&key));
        assert!(!address().is_owned_by(&SecretKey::from_bytes([4; 32]).public_key()));
    }
}
