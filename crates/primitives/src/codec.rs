//! The one canonical binary encoding of every consensus value.
//!
//! We use borsh because its specification makes the encoding canonical: integers are fixed-width
//! little-endian, booleans and option tags accept only 0 and 1, enum tags only known variants, and
//! [`decode`] rejects trailing bytes. On top of it every variable-length field in a consensus type is
//! a [`BoundedVec`], [`BoundedBytes`] or [`BoundedString`], whose decoder checks the length prefix
//! against a named limit *before* allocating, so a 4-byte prefix claiming 4 GiB costs nothing.

use std::io::{Read, Write};
use std::ops::Deref;

use borsh::{BorshDeserialize, BorshSerialize};

/// Why bytes could not be decoded into a value. The peer that sent them is at fault.
#[derive(Debug, thiserror::Error)]
#[error("malformed encoding: {0}")]
pub struct DecodeError(#[from] std::io::Error);

/// Encodes a value in its canonical form.
pub fn encode<T: BorshSerialize + ?Sized>(value: &T) -> Vec<u8> {
    // Writing into a Vec cannot fail, and our types have no fallible serialisers.
    borsh::to_vec(value).expect("encoding into memory is infallible")
}

/// The length of a value's canonical encoding, counted without building it (a block can be
/// megabytes).
pub fn encoded_len<T: BorshSerialize + ?Sized>(value: &T) -> usize {
    borsh::object_length(value).expect("encoding into a counter is infallible")
}

/// Decodes exactly one value from `bytes`, rejecting trailing bytes.
pub fn decode<T: BorshDeserialize>(bytes: &[u8]) -> Result<T, DecodeError> {
    Ok(borsh::from_slice(bytes)?)
}

fn invalid(message: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message)
}

fn read_length<R: Read>(reader: &mut R, max: usize, what: &str) -> std::io::Result<usize> {
    let length = u32::deserialize_reader(reader)? as usize;
    if length > max {
        return Err(invalid(format!(
            "{what} length {length} exceeds the limit of {max}"
        )));
    }
    Ok(length)
}

/// How many elements a decoder reserves up front: enough to avoid reallocations for honest
/// input, small enough that a lying length prefix cannot make us allocate much before the input
/// runs out.
const PREALLOCATE_MAX: usize = 1024;

/// A vector of at most `MAX` elements, enforced when decoding and when constructing.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct BoundedVec<T, const MAX: usize>(Vec<T>);

/// The error returned when a collection would exceed its limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{length} elements exceed the limit of {max}")]
pub struct LengthError {
    /// The length that was asked for.
    pub length: usize,
    /// The limit.
    pub max: usize,
}

impl<T, const MAX: usize> BoundedVec<T, MAX> {
    /// The limit on the number of elements.
    pub const MAX: usize = MAX;

    /// Wraps `items` if there are at most `MAX` of them.
    pub fn new(items: Vec<T>) -> Result<Self, LengthError> {
        if items.len() > MAX {
            return Err(LengthError {
                length: items.len(),
                max: MAX,
            });
        }
        Ok(Self(items))
    }

    /// An empty vector.
    pub fn empty() -> Self {
        Self(Vec::new())
    }

    /// Appends an element, failing if the vector is full.
    pub fn push(&mut self, item: T) -> Result<(), LengthError> {
        if self.0.len() >= MAX {
            return Err(LengthError {
                length: self.0.len() + 1,
                max: MAX,
            });
        }
        self.0.push(item);
        Ok(())
    }

    /// Returns the inner vector.
    pub fn into_inner(self) -> Vec<T> {
        self.0
    }
}

impl<T, const MAX: usize> Deref for BoundedVec<T, MAX> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.0
    }
}

impl<T, const MAX: usize> TryFrom<Vec<T>> for BoundedVec<T, MAX> {
    type Error = LengthError;
    fn try_from(items: Vec<T>) -> Result<Self, LengthError> {
        Self::new(items)
    }
}

impl<'a, T, const MAX: usize> IntoIterator for &'a BoundedVec<T, MAX> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl<T: BorshSerialize, const MAX: usize> BorshSerialize for BoundedVec<T, MAX> {
    fn serialize<W: Write>(&self, writer: &mut W) -> std::io::Result<()> {
        self.0.serialize(writer)
    }
}

impl<T: BorshDeserialize, const MAX: usize> BorshDeserialize for BoundedVec<T, MAX> {
    fn deserialize_reader<R: Read>(reader: &mut R) -> std::io::Result<Self> {
        let length = read_length(reader, MAX, "list")?;
        let mut items = Vec::with_capacity(length.min(PREALLOCATE_MAX));
        for _ in 0..length {
            items.push(T::deserialize_reader(reader)?);
        }
        Ok(Self(items))
    }
}

/// A byte string of at most `MAX` bytes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct BoundedBytes<const MAX: usize>(Vec<u8>);

impl<const MAX: usize> BoundedBytes<MAX> {
    /// Wraps `bytes` if there are at most `MAX` of them.
    pub fn new(bytes: Vec<u8>) -> Result<Self, LengthError> {
        if bytes.len() > MAX {
            return Err(LengthError {
                length: bytes.len(),
                max: MAX,
            });
        }
        Ok(Self(bytes))
    }
}

impl<const MAX: usize> Deref for BoundedBytes<MAX> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl<const MAX: usize> BorshSerialize for BoundedBytes<MAX> {
    fn serialize<W: Write>(&self, writer: &mut W) -> std::io::Result<()> {
        self.0.serialize(writer)
    }
}

impl<const MAX: usize> BorshDeserialize for BoundedBytes<MAX> {
    fn deserialize_reader<R: Read>(reader: &mut R) -> std::io::Result<Self> {
        let length = read_length(reader, MAX, "byte string")?;
        let mut bytes = vec![0u8; length.min(PREALLOCATE_MAX)];
        reader.read_exact(&mut bytes)?;
        while bytes.len() < length {
            // Grow in steps so that a short input fails before a large allocation.
            let start = bytes.len();
            let end = (start * 2).min(length);
            bytes.resize(end, 0);
            reader.read_exact(&mut bytes[start..])?;
        }
        Ok(Self(bytes))
    }
}

/// A UTF-8 string of at most `MAX` bytes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct BoundedString<const MAX: usize>(String);

impl<const MAX: usize> BoundedString<MAX> {
    /// Wraps `text` if it is at most `MAX` bytes long.
    pub fn new(text: impl Into<String>) -> Result<Self, LengthError> {
        let text = text.into();
        if text.len() > MAX {
            return Err(LengthError {
                length: text.len(),
                max: MAX,
            });
        }
        Ok(Self(text))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<const MAX: usize> Deref for BoundedString<MAX> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl<const MAX: usize> std::fmt::Display for BoundedString<MAX> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl<const MAX: usize> BorshSerialize for BoundedString<MAX> {
    fn serialize<W: Write>(&self, writer: &mut W) -> std::io::Result<()> {
        self.0.serialize(writer)
    }
}

impl<const MAX: usize> BorshDeserialize for BoundedString<MAX> {
    fn deserialize_reader<R: Read>(reader: &mut R) -> std::io::Result<Self> {
        let bytes = BoundedBytes::<MAX>::deserialize_reader(reader)?;
        String::from_utf8(bytes.0)
            .map(Self)
            .map_err(|_| invalid("string is not valid UTF-8".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_length_prefix_is_rejected_without_allocating() {
        // 0xFFFF_FFFF elements claimed, none present.
        let bytes = [0xFF, 0xFF, 0xFF, 0xFF];
        let error = decode::<BoundedVec<u64, 10>>(&bytes).unwrap_err();
        assert!(
            error.to_string().contains("exceeds the limit of 10"),
            "{error}"
        );
        let error = decode::<BoundedBytes<{ 1 << 20 }>>(&bytes).unwrap_err();
        assert!(error.to_string().contains("exceeds the limit"), "{error}");
    }

    #[test]
    fn length_within_limit_but_beyond_input_fails_cleanly() {
        let mut bytes = (1u32 << 20).to_le_bytes().to_vec();
        bytes.extend_from_slice(&[1, 2, 3]);
        assert!(decode::<BoundedBytes<{ 1 << 21 }>>(&bytes).is_err());
        assert!(decode::<BoundedVec<u8, { 1 << 21 }>>(&bytes).is_err());
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let mut bytes = encode(&7u32);
        bytes.push(0);
        assert!(decode::<u32>(&bytes).is_err());
    }

    #[test]
    fn bounded_constructors_enforce_limits() {
        assert!(BoundedVec::<u8, 2>::new(vec![1, 2, 3]).is_err());
        let mut list = BoundedVec::<u8, 2>::new(vec![1, 2]).unwrap();
        assert_eq!(list.push(3), Err(LengthError { length: 3, max: 2 }));
        assert!(BoundedString::<3>::new("four").is_err());
        assert!(BoundedBytes::<1>::new(vec![0, 0]).is_err());
    }

    #[test]
    fn invalid_utf8_is_rejected() {
        let bytes = [2, 0, 0, 0, 0xC3, 0x28];
        assert!(decode::<BoundedString<8>>(&bytes).is_err());
    }

    #[test]
    fn large_byte_string_round_trips() {
        let original =
            BoundedBytes::<10_000>::new((0..5000u32).map(|i| i as u8).collect()).unwrap();
        let decoded: BoundedBytes<10_000> = decode(&encode(&original)).unwrap();
        assert_eq!(decoded, original);
    }
}
