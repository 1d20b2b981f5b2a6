//! The key-value engine under the chain store: a handful of ordered byte tables and atomic,
//! durable write batches. Everything chain-specific lives above this trait, so the redb backend
//! and the in-memory backend share every line of caching, flushing and recovery logic.
//!
//! The tables live in two files (ADR 0019): the chain file (blocks, change records, metadata,
//! the consensus log) and the UTXO file (the UTXO set and the indexes the write-back cache
//! flushes into). A flush writes the UTXO file from a background thread through a
//! [`UtxoFileWriter`] while the node goes on reading both files and committing blocks to the
//! chain file: an engine with one writer per file would otherwise stop block commits for the
//! whole flush.

use crate::error::Result;

/// The tables of the chain database.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    /// Chain metadata: schema version, network, tip, flush point, commitment.
    Meta,
    /// Block hash → encoded header.
    Headers,
    /// Block hash → encoded transactions (removed by pruning), in chunks when large
    /// ([`crate::chunked`]).
    Bodies,
    /// Height (big-endian) → block hash.
    Heights,
    /// Height (big-endian) → encoded commit certificate.
    Certificates,
    /// Height (big-endian) → the block's UTXO changes, kept until the next flush so that
    /// recovery can replay them; in chunks when large ([`crate::chunked`]).
    Changes,
    /// Outpoint → encoded UTXO entry, as of the last flush.
    Utxos,
    /// Txid → height and position, as of the last flush.
    TxIndex,
    /// Address ‖ outpoint → nothing, as of the last flush. A backend may derive it from
    /// [`Table::Utxos`] instead of storing it ([`KvBackend::derives_address_index`]).
    AddressIndex,
    /// The UTXO file's own metadata: its identity (schema, network, genesis) and the height it
    /// is flushed to. Kept in the UTXO file so that a flush records its height atomically with
    /// its writes.
    UtxoMeta,
    /// Masternode node key → registry record.
    Masternodes,
    /// This node's consensus log: `2 ‖ sequence` → one appended batch of records (ADR 0021).
    /// Logs of earlier builds hold one record per encoded key; the first open moves them.
    ConsensusLog,
    /// Sequence number ‖ txid → a certified transaction not yet in a block, with its finality
    /// certificate (encoded by the node): final, so it must survive a restart of every node.
    /// Records written before sequence numbers are keyed by txid alone.
    Final,
}

impl Table {
    /// Every table, in declaration order.
    pub const ALL: [Table; 13] = [
        Table::Meta,
        Table::Headers,
        Table::Bodies,
        Table::Heights,
        Table::Certificates,
        Table::Changes,
        Table::Utxos,
        Table::TxIndex,
        Table::AddressIndex,
        Table::UtxoMeta,
        Table::Masternodes,
        Table::ConsensusLog,
        Table::Final,
    ];

    /// The tables of the chain file, written by [`KvBackend::write`].
    pub const CHAIN_FILE: [Table; 9] = [
        Table::Meta,
        Table::Headers,
        Table::Bodies,
        Table::Heights,
        Table::Certificates,
        Table::Changes,
        Table::Masternodes,
        Table::ConsensusLog,
        Table::Final,
    ];

    /// The tables of the UTXO file, written by [`UtxoFileWriter::write`].
    pub const UTXO_FILE: [Table; 4] = [
        Table::Utxos,
        Table::TxIndex,
        Table::AddressIndex,
        Table::UtxoMeta,
    ];

    /// Whether the table lives in the UTXO file.
    pub const fn in_utxo_file(self) -> bool {
        matches!(
            self,
            Table::Utxos | Table::TxIndex | Table::AddressIndex | Table::UtxoMeta
        )
    }

    /// The table's position in [`Table::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The table's name in the database file.
    pub const fn name(self) -> &'static str {
        match self {
            Table::Meta => "meta",
            Table::Headers => "headers",
            Table::Bodies => "bodies",
            Table::Heights => "heights",
            Table::Certificates => "certificates",
            Table::Changes => "changes",
            Table::Utxos => "utxos",
            Table::TxIndex => "tx_index",
            Table::AddressIndex => "address_index",
            Table::Masternodes => "masternodes",
            Table::ConsensusLog => "consensus_log",
            Table::Final => "final_unblocked",
            Table::UtxoMeta => "utxo_meta",
        }
    }
}

/// Finds the address in a stored UTXO value (the [`Table::Utxos`] encoding is the store's), for
/// a backend that derives the address index: `None` for a value it cannot read.
pub type AddressOf = fn(&[u8]) -> Option<&[u8]>;

/// The least key above every key that starts with `prefix`, if there is one: the end of a scan
/// over that prefix.
pub(crate) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let position = prefix.iter().rposition(|byte| *byte != 0xff)?;
    let mut end = prefix[..=position].to_vec();
    end[position] += 1;
    Some(end)
}

/// What a whole-table visit calls with each key and value; an error stops the visit.
pub type Visit<'a> = dyn FnMut(&[u8], &[u8]) -> Result<()> + 'a;

/// Entries read at once when a table is visited whole in no particular order.
pub(crate) const UNORDERED_CHUNK: usize = 4096;

/// One write in a batch: `Some` puts the value, `None` deletes the key.
pub type WriteOp = (Table, Vec<u8>, Option<Vec<u8>>);

/// Writes applied together or not at all.
#[derive(Clone, Debug, Default)]
pub struct WriteBatch {
    ops: Vec<WriteOp>,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> WriteBatch {
        WriteBatch::default()
    }

    /// Adds a put.
    pub fn put(&mut self, table: Table, key: Vec<u8>, value: Vec<u8>) {
        self.ops.push((table, key, Some(value)));
    }

    /// Adds a delete.
    pub fn delete(&mut self, table: Table, key: Vec<u8>) {
        self.ops.push((table, key, None));
    }

    /// Adds every write of `other`, after this batch's own.
    pub fn extend(&mut self, other: WriteBatch) {
        self.ops.extend(other.ops);
    }

    /// How many writes the batch holds.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The writes, in the order added; a later write to the same key wins.
    pub fn ops(&self) -> &[WriteOp] {
        &self.ops
    }

    /// The writes, in the order added; a later write to the same key wins.
    pub fn into_ops(self) -> Vec<WriteOp> {
        self.ops
    }

    /// Hands every write to `writer`, in order.
    pub fn apply(&self, writer: &mut dyn TableWriter) -> Result<()> {
        for (table, key, value) in &self.ops {
            match value {
                Some(value) => writer.put(*table, key, value)?,
                None => writer.delete(*table, key)?,
            }
        }
        Ok(())
    }
}

/// The inside of an atomic write: puts and deletes that take effect together at the end.
pub trait TableWriter {
    /// Puts `value` at `key`.
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<()>;
    /// Deletes `key` if present.
    fn delete(&mut self, table: Table, key: &[u8]) -> Result<()>;
}

/// The body of an atomic write. Writes stream straight into the engine, so a flush of a
/// large cache needs no second copy of it in memory.
pub type WriteFn<'a> = dyn FnMut(&mut dyn TableWriter) -> Result<()> + 'a;

/// Writes the UTXO file from any thread, while the chain file is read and written.
pub trait UtxoFileWriter: Send + 'static {
    /// Runs `writes` inside one atomic, durable transaction of the UTXO file; only its tables
    /// ([`Table::UTXO_FILE`]) may be written. When this returns `Ok` every write survives a
    /// crash, and reads see it once the owner of the backend has called
    /// [`KvBackend::publish_utxo_writes`] (until then they may see the state before it); when
    /// it returns `Err`, none was applied.
    fn write(&self, writes: &mut WriteFn<'_>) -> Result<()>;
}

/// An ordered key-value engine with atomic, durable batches over two files: reads reach every
/// table, [`KvBackend::write`] writes the chain file, and [`KvBackend::utxo_writer`] the UTXO
/// file.
pub trait KvBackend {
    /// What writes the UTXO file.
    type UtxoWriter: UtxoFileWriter;

    /// A writer of the UTXO file that can be moved to another thread.
    fn utxo_writer(&self) -> Self::UtxoWriter;

    /// Makes the last successful write of a [`KvBackend::utxo_writer`] visible to reads. A
    /// backend may keep that write's effect out of sight until now, so that the writing
    /// thread, maybe a background flush at the lowest CPU priority, never holds a lock that
    /// readers wait for (the redb backend's UTXO log, ADR 0029). Called from the thread that
    /// reads; it may briefly block other readers. Does nothing by default.
    fn publish_utxo_writes(&self) {}

    /// Whether the backend answers reads of [`Table::AddressIndex`] from [`Table::Utxos`]
    /// itself once [`KvBackend::derive_address_index`] was called, so that nothing may be
    /// written to that table: every flushed UTXO is then indexed by the address in its value,
    /// with no write of its own (ADR 0030).
    fn derives_address_index(&self) -> bool {
        false
    }

    /// Starts deriving [`Table::AddressIndex`] from the UTXO set, `address_of` finding the
    /// address in each value, and returns how many UTXOs it indexes. Only for a backend that
    /// [`KvBackend::derives_address_index`].
    fn derive_address_index(&mut self, address_of: AddressOf) -> Result<u64> {
        let _ = address_of;
        Err(crate::error::StorageError::Io {
            context: "deriving the address index".to_string(),
            message: "this backend stores the address index (a bug)".to_string(),
        })
    }

    /// The value at `key`.
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// The values at `keys`, in the same order. Backends may read in parallel.
    fn get_many(&self, table: Table, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>> {
        keys.iter().map(|key| self.get(table, key)).collect()
    }

    /// Up to `limit` entries with `start <= key < end` (no upper bound if `end` is `None`), in
    /// key order.
    fn scan(
        &self,
        table: Table,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;

    /// Calls `visit` with every entry of `table`, in key order, reading `chunk` entries at a time
    /// so that memory stays bounded whatever the table's size. Stops at the first error.
    fn scan_all(
        &self,
        table: Table,
        chunk: usize,
        mut visit: impl FnMut(&[u8], &[u8]) -> Result<()>,
    ) -> Result<()>
    where
        Self: Sized,
    {
        let mut start = Vec::new();
        loop {
            let entries = self.scan(table, &start, None, chunk)?;
            for (key, value) in &entries {
                visit(key, value)?;
            }
            match entries.last() {
                Some((key, _)) if entries.len() == chunk => {
                    start = key.clone();
                    start.push(0);
                }
                _ => return Ok(()),
            }
        }
    }

    /// Calls `visit` with every entry of `table` in no particular order, which lets an engine
    /// that keeps no key order (the redb backend's UTXO log) read in file order. Stops at the
    /// first error.
    fn for_each_unordered(&self, table: Table, visit: &mut Visit<'_>) -> Result<()>
    where
        Self: Sized,
    {
        self.scan_all(table, UNORDERED_CHUNK, |key, value| visit(key, value))
    }

    /// Runs `writes` inside one atomic transaction of the chain file (only its tables,
    /// [`Table::CHAIN_FILE`], may be written). When this returns `Ok` every write survives a
    /// crash; when it (or `writes`) returns `Err`, none was applied.
    fn write(&mut self, writes: &mut WriteFn<'_>) -> Result<()>;

    /// Applies `batch` atomically and durably, like [`KvBackend::write`].
    fn commit(&mut self, batch: &WriteBatch) -> Result<()> {
        self.write(&mut |writer| batch.apply(writer))
    }

    /// Applies `batch` atomically but without waiting for the disk: it is visible to reads at
    /// once and becomes durable with the next [`KvBackend::sync`] or durable write; a crash
    /// before then loses it whole (never part of it). This is what makes group commit cheap:
    /// many small writes, one fsync. Backends without a cheaper path write durably.
    fn commit_deferred(&mut self, batch: &WriteBatch) -> Result<()> {
        self.commit(batch)
    }

    /// Makes every deferred write durable. A no-op when nothing is pending.
    fn sync(&mut self) -> Result<()> {
        Ok(())
    }

    /// Whether the chain file holds no table at all: a brand-new database.
    fn is_blank(&self) -> Result<bool>;

    /// The bytes both files occupy on disk (0 in memory).
    fn size_on_disk(&self) -> u64;
}

impl TableWriter for WriteBatch {
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<()> {
        WriteBatch::put(self, table, key.to_vec(), value.to_vec());
        Ok(())
    }

    fn delete(&mut self, table: Table, key: &[u8]) -> Result<()> {
        WriteBatch::delete(self, table, key.to_vec());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_is_in_exactly_one_file_and_indexed_by_its_position() {
        for (position, table) in Table::ALL.iter().enumerate() {
            assert_eq!(table.index(), position, "{table:?}");
            let in_chain = Table::CHAIN_FILE.contains(table);
            let in_utxo = Table::UTXO_FILE.contains(table);
            assert!(in_chain != in_utxo, "{table:?} must be in one file");
            assert_eq!(table.in_utxo_file(), in_utxo, "{table:?}");
        }
        assert_eq!(
            Table::CHAIN_FILE.len() + Table::UTXO_FILE.len(),
            Table::ALL.len()
        );
    }
}
