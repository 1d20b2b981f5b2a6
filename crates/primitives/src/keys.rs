//! Ed25519 keys and signatures under the ZIP-215 validity rule.
//!
//! Whether a signature is valid is a consensus rule, so it must not depend on whether it was checked
//! alone or in a batch. ed25519-zebra implements ZIP-215, whose single and batch equations are both
//! cofactored and accept exactly the same signatures; ed25519-dalek's `verify_strict` and its batch
//! check disagree on some inputs. See `docs/adr/0002-signatures-zip215.md`.

use std::fmt;
use std::str::FromStr;

use borsh::{BorshDeserialize, BorshSerialize};
use ed25519_zebra::{SigningKey, VerificationKey, VerificationKeyBytes};
use rand_core::{CryptoRng, Infallible, TryCryptoRng, TryRng};

use crate::hash::Domain;

/// An Ed25519 public key as it appears on the wire. Any 32 bytes decode; whether they are a valid
/// curve point is found out when a signature is verified against them.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, BorshSerialize, BorshDeserialize, Default,
)]
pub struct PublicKey(pub [u8; 32]);

/// An Ed25519 signature as it appears on the wire.
#[derive(Clone, Copy, PartialEq, Eq, Hash, BorshSerialize, BorshDeserialize)]
pub struct Signature(pub [u8; 64]);

/// A secret signing key. Its `Debug` output never shows the key.
#[derive(Clone)]
pub struct SecretKey(SigningKey);

/// Why a signature was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The public key is not a point on the curve.
    #[error("public key is not a valid Ed25519 point")]
    InvalidPublicKey,
    /// The signature does not verify.
    #[error("signature does not verify")]
    InvalidSignature,
}

/// Why text is not a public key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a 64-digit hexadecimal public key")]
pub struct ParsePublicKeyError(pub String);

impl PublicKey {
    /// Verifies `signature` over `message` under ZIP-215.
    pub fn verify(&self, message: &[u8], signature: &Signature) -> Result<(), SignatureError> {
        let key =
            VerificationKey::try_from(self.0).map_err(|_| SignatureError::InvalidPublicKey)?;
        key.verify(&ed25519_zebra::Signature::from_bytes(&signature.0), message)
            .map_err(|_| SignatureError::InvalidSignature)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl FromStr for PublicKey {
    type Err = ParsePublicKeyError;
    fn from_str(text: &str) -> Result<Self, ParsePublicKeyError> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text, &mut bytes)
            .map_err(|_| ParsePublicKeyError(text.to_string()))?;
        Ok(PublicKey(bytes))
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({})", hex::encode(self.0))
    }
}

impl SecretKey {
    /// A fresh key from a cryptographically secure generator.
    pub fn generate<R: CryptoRng>(rng: &mut R) -> SecretKey {
        SecretKey(SigningKey::new(rng))
    }

    /// The key with these 32 secret bytes (the Ed25519 seed).
    pub fn from_bytes(bytes: [u8; 32]) -> SecretKey {
        SecretKey(SigningKey::from(bytes))
    }

    /// The 32 secret bytes. Handle with care.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.into()
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(VerificationKeyBytes::from(self.0.verification_key()).into())
    }

    /// Signs `message`.
    pub fn sign(&self, message: &[u8]) -> Signature {
        Signature(self.0.sign(message).to_bytes())
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey(public {})", self.public_key())
    }
}

/// Checks many signatures at once, about twice as fast as one by one.
///
/// The random coefficients of the batch equation come from a BLAKE3 transcript of every queued
/// item rather than from the operating system: an attacker who changes any item changes every
/// coefficient, which is what the security argument needs, and the outcome becomes a pure
/// function of the input, so the simulator stays reproducible.
#[derive(Default)]
pub struct BatchVerifier {
    inner: ed25519_zebra::batch::Verifier,
    transcript: Option<blake3::Hasher>,
    len: usize,
}

impl BatchVerifier {
    /// An empty batch.
    pub fn new() -> BatchVerifier {
        BatchVerifier::default()
    }

    /// Adds one signature to check.
    pub fn queue(&mut self, key: &PublicKey, message: &[u8], signature: &Signature) {
        let transcript = self
            .transcript
            .get_or_insert_with(|| Domain::BatchVerification.hasher());
        transcript.update(&key.0);
        transcript.update(&signature.0);
        transcript.update(&(message.len() as u64).to_le_bytes());
        transcript.update(message);
        self.inner.queue((
            VerificationKeyBytes::from(key.0),
            ed25519_zebra::Signature::from_bytes(&signature.0),
            message,
        ));
        self.len += 1;
    }

    /// How many signatures are queued.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no signature is queued.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// `Ok` if every queued signature is valid. It does not say which one failed: check them
    /// singly to find out.
    pub fn verify(self) -> Result<(), SignatureError> {
        let Some(transcript) = self.transcript else {
            return Ok(());
        };
        let rng = TranscriptRng(transcript.finalize_xof());
        self.inner
            .verify(rng)
            .map_err(|_| SignatureError::InvalidSignature)
    }
}

/// A deterministic generator reading BLAKE3's extendable output.
struct TranscriptRng(blake3::OutputReader);

impl TryRng for TranscriptRng {
    type Error = Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut bytes = [0u8; 4];
        self.0.fill(&mut bytes);
        Ok(u32::from_le_bytes(bytes))
    }
    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut bytes = [0u8; 8];
        self.0.fill(&mut bytes);
        Ok(u64::from_le_bytes(bytes))
    }
    fn try_fill_bytes(&mut self, destination: &mut [u8]) -> Result<(), Infallible> {
        self.0.fill(destination);
        Ok(())
    }
}

impl TryCryptoRng for TranscriptRng {}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SecretKey {
        SecretKey::from_bytes([seed; 32])
    }

    #[test]
    fn sign_and_verify() {
        let secret = key(1);
        let signature = secret.sign(b"hello");
        assert_eq!(secret.public_key().verify(b"hello", &signature), Ok(()));
        assert_eq!(
            secret.public_key().verify(b"hellO", &signature),
            Err(SignatureError::InvalidSignature)
        );
        assert_eq!(
            key(2).public_key().verify(b"hello", &signature),
            Err(SignatureError::InvalidSignature)
        );
    }

    #[test]
    fn secret_round_trips_and_debug_hides_it() {
        let secret = key(7);
        assert_eq!(
            SecretKey::from_bytes(secret.to_bytes()).public_key(),
            secret.public_key()
        );
        assert!(!format!("{secret:?}").contains(&hex::encode(secret.to_bytes())));
    }

    #[test]
    fn batch_agrees_with_single() {
        let mut batch = BatchVerifier::new();
        for seed in 0..8u8 {
            let secret = key(seed);
            let message = [seed; 10];
            batch.queue(&secret.public_key(), &message, &secret.sign(&message));
        }
        assert_eq!(batch.len(), 8);
        assert_eq!(batch.verify(), Ok(()));

        let mut batch = BatchVerifier::new();
        for seed in 0..8u8 {
            let secret = key(seed);
            let message = [seed; 10];
            let mut signature = secret.sign(&message);
            if seed == 5 {
                signature.0[0] ^= 1;
            }
            batch.queue(&secret.public_key(), &message, &signature);
        }
        assert!(batch.verify().is_err());
        assert!(BatchVerifier::new().verify().is_ok());
    }

    #[test]
    fn invalid_point_is_rejected() {
        // y = 2 is not on the curve.
        let mut bytes = [0u8; 32];
        bytes[0] = 2;
        let signature = key(1).sign(b"m");
        assert_eq!(
            PublicKey(bytes).verify(b"m", &signature),
            Err(SignatureError::InvalidPublicKey)
        );
    }
}
