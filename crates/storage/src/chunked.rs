//! Large values stored as chunks of at most [`CHUNK_BYTES`] (ADR 0031).
//!
//! redb keeps a value in its B-tree leaf: a value larger than a page gets a leaf of its own,
//! sized to it. A B-tree insert next to such a leaf reads the whole leaf and writes it again, so
//! a block body of several megabytes was copied, and held in memory, whenever another body's key
//! landed beside it: the genesis body of the storage benchmark (a million outputs) made the
//! first commits after loading each read a 64 MiB page. Chunks of 16,000 bytes bound what one
//! insert can copy.
//!
//! A value of up to [`CHUNK_BYTES`] is stored whole under its key, as before. A larger one is
//! stored under `key ‖ index` (index big-endian, from 0), and the first chunk starts with the
//! number of chunks (`u32`, little-endian), so that deleting the value reads one chunk, not all.
//! Values stored whole by earlier builds read as before.

use crate::backend::{KvBackend, Table, WriteBatch};
use crate::error::{Result, StorageError};

/// The most bytes of a value one chunk holds: with its key and the leaf's own header, a chunk
/// fills one 16 KiB redb page. Chunks of exactly 16 KiB each took a 32 KiB page, which doubled
/// the file's growth and made a block's write 40% slower (measured with 350 KB bodies).
pub const CHUNK_BYTES: usize = 16_000;

/// The most chunks a value may have (1 GiB): a larger count is read as corruption.
const MAX_CHUNKS: u32 = 1 << 16;

fn chunk_key(key: &[u8], index: u32) -> Vec<u8> {
    let mut chunk = Vec::with_capacity(key.len() + 4);
    chunk.extend_from_slice(key);
    chunk.extend_from_slice(&index.to_be_bytes());
    chunk
}

fn corrupt(table: Table, what: &str) -> StorageError {
    StorageError::Corrupt {
        what: format!("a chunked value in table {}: {what}", table.name()),
    }
}

/// The number of chunks that the first chunk `first` announces, checked.
fn chunk_count(table: Table, first: &[u8]) -> Result<u32> {
    let count = first
        .get(..4)
        .map(|bytes| u32::from_le_bytes(bytes.try_into().expect("4 bytes")))
        .ok_or_else(|| corrupt(table, "the first chunk is cut short"))?;
    if !(2..=MAX_CHUNKS).contains(&count) {
        return Err(corrupt(table, &format!("it claims {count} chunks")));
    }
    Ok(count)
}

/// Adds to `batch` the puts that store `value` at `key`. Nothing else may be stored at a key
/// that extends `key` by 4 bytes.
pub fn put(batch: &mut WriteBatch, table: Table, key: &[u8], value: Vec<u8>) {
    if value.len() <= CHUNK_BYTES {
        batch.put(table, key.to_vec(), value);
        return;
    }
    let count = value.len().div_ceil(CHUNK_BYTES) as u32;
    for (index, chunk) in value.chunks(CHUNK_BYTES).enumerate() {
        let bytes = if index == 0 {
            let mut first = Vec::with_capacity(4 + chunk.len());
            first.extend_from_slice(&count.to_le_bytes());
            first.extend_from_slice(chunk);
            first
        } else {
            chunk.to_vec()
        };
        batch.put(table, chunk_key(key, index as u32), bytes);
    }
}

/// The value stored at `key` by [`put`] (or whole, by an earlier build).
pub fn get(backend: &impl KvBackend, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
    if let Some(whole) = backend.get(table, key)? {
        return Ok(Some(whole));
    }
    let Some(first) = backend.get(table, &chunk_key(key, 0))? else {
        return Ok(None);
    };
    let count = chunk_count(table, &first)?;
    let rest = backend.scan(
        table,
        &chunk_key(key, 1),
        Some(&chunk_key(key, count)),
        count as usize - 1,
    )?;
    if rest.len() != count as usize - 1 {
        return Err(corrupt(
            table,
            &format!(
                "{} of its {count} chunks are missing",
                count as usize - 1 - rest.len()
            ),
        ));
    }
    let mut value = Vec::with_capacity(count as usize * CHUNK_BYTES);
    value.extend_from_slice(&first[4..]);
    for (index, (chunk_at, chunk)) in (1..count).zip(rest) {
        if chunk_at != chunk_key(key, index) {
            return Err(corrupt(table, "its chunks are out of order"));
        }
        value.extend_from_slice(&chunk);
    }
    Ok(Some(value))
}

/// Adds to `batch` the deletes that remove the value stored at `key`, if any. Reads the first
/// chunk of a chunked value to learn how many there are.
pub fn delete(
    backend: &impl KvBackend,
    batch: &mut WriteBatch,
    table: Table,
    key: &[u8],
) -> Result<()> {
    batch.delete(table, key.to_vec());
    if let Some(first) = backend.get(table, &chunk_key(key, 0))? {
        for index in 0..chunk_count(table, &first)? {
            batch.delete(table, chunk_key(key, index));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryBackend;

    fn value(len: usize) -> Vec<u8> {
        (0..len).map(|at| (at * 7 % 251) as u8).collect()
    }

    #[test]
    fn values_of_every_size_read_back_and_delete_whole() {
        let mut backend = MemoryBackend::new();
        let sizes = [
            0,
            1,
            CHUNK_BYTES,
            CHUNK_BYTES + 1,
            3 * CHUNK_BYTES,
            5 * CHUNK_BYTES + 17,
        ];
        for (at, len) in sizes.into_iter().enumerate() {
            let key = [at as u8; 32];
            let mut batch = WriteBatch::new();
            put(&mut batch, Table::Bodies, &key, value(len));
            // A neighbour that shares the key's first bytes must not be mistaken for a chunk.
            batch.put(
                Table::Bodies,
                [at as u8 + 100; 32].to_vec(),
                b"other".to_vec(),
            );
            backend.commit(&batch).unwrap();
            assert_eq!(batch.len(), 1 + len.div_ceil(CHUNK_BYTES).max(1));
            assert_eq!(
                get(&backend, Table::Bodies, &key).unwrap(),
                Some(value(len))
            );
            let mut deletes = WriteBatch::new();
            delete(&backend, &mut deletes, Table::Bodies, &key).unwrap();
            backend.commit(&deletes).unwrap();
            assert_eq!(get(&backend, Table::Bodies, &key).unwrap(), None);
            let left = backend
                .scan(Table::Bodies, &key, Some(&[at as u8 + 1]), 10)
                .unwrap();
            assert!(left.is_empty(), "a chunk of {len} bytes was left: {left:?}");
        }
        assert_eq!(
            backend.scan(Table::Bodies, &[], None, 100).unwrap().len(),
            sizes.len()
        );
    }

    #[test]
    fn a_large_value_stored_whole_by_an_earlier_build_reads_and_deletes() {
        let mut backend = MemoryBackend::new();
        let key = [9u8; 8];
        let mut batch = WriteBatch::new();
        batch.put(Table::Changes, key.to_vec(), value(4 * CHUNK_BYTES));
        backend.commit(&batch).unwrap();
        assert_eq!(
            get(&backend, Table::Changes, &key).unwrap(),
            Some(value(4 * CHUNK_BYTES))
        );
        let mut deletes = WriteBatch::new();
        delete(&backend, &mut deletes, Table::Changes, &key).unwrap();
        backend.commit(&deletes).unwrap();
        assert_eq!(get(&backend, Table::Changes, &key).unwrap(), None);
    }

    #[test]
    fn a_missing_chunk_or_a_wild_count_is_corruption() {
        let mut backend = MemoryBackend::new();
        let key = [1u8; 32];
        let mut batch = WriteBatch::new();
        put(&mut batch, Table::Bodies, &key, value(3 * CHUNK_BYTES));
        backend.commit(&batch).unwrap();
        let mut damage = WriteBatch::new();
        damage.delete(Table::Bodies, chunk_key(&key, 1));
        backend.commit(&damage).unwrap();
        let error = get(&backend, Table::Bodies, &key).unwrap_err();
        assert!(matches!(error, StorageError::Corrupt { .. }), "{error}");

        let mut damage = WriteBatch::new();
        damage.put(
            Table::Bodies,
            chunk_key(&key, 0),
            u32::MAX.to_le_bytes().to_vec(),
        );
        backend.commit(&damage).unwrap();
        let error = get(&backend, Table::Bodies, &key).unwrap_err();
        assert!(error.to_string().contains("claims"), "{error}");
        let mut deletes = WriteBatch::new();
        assert!(delete(&backend, &mut deletes, Table::Bodies, &key).is_err());
    }
}
