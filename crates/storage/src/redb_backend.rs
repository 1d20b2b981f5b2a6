//! The on-disk backend: two redb files (the chain file and the UTXO file, ADR 0019), every
//! table `&[u8] → &[u8]`, except the UTXO set itself, which is an append-only log beside them
//! ([`crate::utxo_log`], ADR 0029) whose extent each commit of the UTXO file records, and the
//! address index, which that log derives in memory (ADR 0030).

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use redb::{
    Database, Durability, ReadOnlyTable, ReadTransaction, ReadableDatabase, ReadableTableMetadata,
    TableDefinition,
};

use crate::backend::{
    AddressOf, KvBackend, Table, TableWriter, UNORDERED_CHUNK, UtxoFileWriter, Visit, WriteBatch,
    WriteFn, prefix_end,
};
use crate::error::{Result, StorageError};
use crate::utxo_log::{LogBatch, LogState, UtxoLog};

/// The key of [`Table::UtxoMeta`] under which each commit of the UTXO file records how far the
/// UTXO log goes.
const LOG_STATE: &[u8] = b"utxo_log_state";

type Bytes = TableDefinition<'static, &'static [u8], &'static [u8]>;

/// The length of an address, which starts every key of [`Table::AddressIndex`].
const ADDRESS_LEN: usize = std::mem::size_of::<timecoin_primitives::Address>();

fn not_derived() -> StorageError {
    StorageError::Io {
        context: "reading the address index".to_string(),
        message: "the address index is not derived on this store (a bug)".to_string(),
    }
}

fn definition(table: Table) -> Bytes {
    TableDefinition::new(table.name())
}

/// Maps any redb error to ours, recognising a full disk and the engine's own version check.
fn engine_error(context: &str, error: impl Into<redb::Error>) -> StorageError {
    match error.into() {
        redb::Error::Io(io) => StorageError::from_io(context, &io),
        redb::Error::Corrupted(what) => StorageError::Corrupt {
            what: format!("{context}: {what}"),
        },
        redb::Error::UpgradeRequired(version) => StorageError::ForeignData {
            what: format!(
                "the database file uses redb file format {version}, which this build cannot read"
            ),
        },
        redb::Error::DatabaseAlreadyOpen => StorageError::Io {
            context: context.to_string(),
            message: "the database is already open in another process (is another node running \
                      on this data directory?)"
                .to_string(),
        },
        other => StorageError::Io {
            context: context.to_string(),
            message: other.to_string(),
        },
    }
}

/// Settings of the redb engine.
#[derive(Clone, Debug)]
pub struct RedbOptions {
    /// Bytes of redb's page caches: three quarters for the UTXO file, whose flushed UTXOs and
    /// index entries are what a node reads most, a quarter for the chain file.
    pub page_cache_bytes: usize,
    /// Whether each commit also saves the allocator state, so that reopening after a crash
    /// needs no full repair scan. It costs a few pages per commit.
    pub quick_repair: bool,
    /// Size at which the UTXO log starts a new segment file; compaction copies one segment
    /// at a time. Tests make it small to compact often.
    pub utxo_log_segment_bytes: u64,
}

impl Default for RedbOptions {
    fn default() -> Self {
        RedbOptions {
            page_cache_bytes: 16 << 20,
            quick_repair: true,
            utxo_log_segment_bytes: crate::utxo_log::SEGMENT_BYTES,
        }
    }
}

struct RedbWriter<'txn> {
    /// The tables of the file being written, opened; indexed by [`Table::index`].
    tables: Vec<Option<redb::Table<'txn, &'static [u8], &'static [u8]>>>,
}

impl<'txn> RedbWriter<'txn> {
    /// Opens (and so creates, on the first commit) every table of `file` in `transaction`.
    fn open(transaction: &'txn redb::WriteTransaction, file: &[Table]) -> Result<Self> {
        let mut tables: Vec<_> = Table::ALL.iter().map(|_| None).collect();
        for table in file {
            tables[table.index()] = Some(
                transaction
                    .open_table(definition(*table))
                    .map_err(|error| engine_error("opening a table for writing", error))?,
            );
        }
        Ok(RedbWriter { tables })
    }

    fn table(
        &mut self,
        table: Table,
    ) -> Result<&mut redb::Table<'txn, &'static [u8], &'static [u8]>> {
        self.tables[table.index()]
            .as_mut()
            .ok_or_else(|| StorageError::Io {
                context: "writing".to_string(),
                message: format!(
                    "table {} is not in the file this transaction writes (a bug)",
                    table.name()
                ),
            })
    }
}

impl TableWriter for RedbWriter<'_> {
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<()> {
        self.table(table)?
            .insert(key, value)
            .map_err(|error| engine_error("writing", error))?;
        Ok(())
    }

    fn delete(&mut self, table: Table, key: &[u8]) -> Result<()> {
        self.table(table)?
            .remove(key)
            .map_err(|error| engine_error("deleting", error))?;
        Ok(())
    }
}

struct Reader {
    transaction: ReadTransaction,
    tables: HashMap<Table, ReadOnlyTable<&'static [u8], &'static [u8]>>,
}

/// One redb file with the read snapshot that lookups share.
struct File {
    database: Database,
    path: PathBuf,
    /// Renewed after every commit: opening a read transaction and a table per lookup would
    /// cost more than the lookup itself.
    reader: Mutex<Option<Reader>>,
}

impl File {
    fn open(path: &Path, cache_bytes: usize) -> Result<File> {
        let database = Database::builder()
            .set_cache_size(cache_bytes)
            .create(path)
            .map_err(|error| {
                engine_error(
                    &format!("opening the database file {}", path.display()),
                    error,
                )
            })?;
        Ok(File {
            database,
            path: path.to_path_buf(),
            reader: Mutex::new(None),
        })
    }

    /// Drops the shared read snapshot, so that the next read sees the latest commit (and the
    /// snapshot no longer pins pages a commit frees).
    fn renew_reader(&self) {
        *self
            .reader
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = None;
    }

    fn with_table<T>(
        &self,
        table: Table,
        read: impl FnOnce(Option<&ReadOnlyTable<&'static [u8], &'static [u8]>>) -> Result<T>,
    ) -> Result<T> {
        let mut guard = self
            .reader
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if guard.is_none() {
            let transaction = self
                .database
                .begin_read()
                .map_err(|error| engine_error("starting a read", error))?;
            *guard = Some(Reader {
                transaction,
                tables: HashMap::new(),
            });
        }
        let reader = guard.as_mut().expect("set above");
        if !reader.tables.contains_key(&table) {
            match reader.transaction.open_table(definition(table)) {
                Ok(opened) => {
                    reader.tables.insert(table, opened);
                }
                Err(redb::TableError::TableDoesNotExist(_)) => return read(None),
                Err(error) => return Err(engine_error("opening a table", error)),
            }
        }
        read(reader.tables.get(&table))
    }

    /// Runs `writes` in one durable transaction over the tables `file`.
    fn write(&self, file: &[Table], quick_repair: bool, writes: &mut WriteFn<'_>) -> Result<()> {
        let mut transaction = self
            .database
            .begin_write()
            .map_err(|error| engine_error("starting a write", error))?;
        transaction
            .set_durability(Durability::Immediate)
            .map_err(|error| StorageError::Io {
                context: "starting a write".to_string(),
                message: error.to_string(),
            })?;
        transaction.set_quick_repair(quick_repair);
        {
            // Every table is opened (and so created by the first commit), so that a database is
            // never mistaken for blank once anything was written. An error drops the
            // transaction uncommitted: nothing of it reaches the file.
            let mut writer = RedbWriter::open(&transaction, file)?;
            writes(&mut writer)?;
        }
        self.renew_reader();
        transaction
            .commit()
            .map_err(|error| engine_error("committing", error))?;
        // A snapshot taken while the commit ran predates it; readers must see the commit now
        // that it returned (the store drops its copy of the flushed changes next).
        self.renew_reader();
        Ok(())
    }

    fn allocated_bytes(&self) -> Result<u64> {
        let transaction = self
            .database
            .begin_write()
            .map_err(|error| engine_error("starting a write", error))?;
        let stats = transaction
            .stats()
            .map_err(|error| engine_error("reading statistics", error))?;
        // Dropped uncommitted: nothing is written.
        Ok(stats.allocated_pages() * stats.page_size() as u64)
    }

    fn size_on_disk(&self) -> u64 {
        std::fs::metadata(&self.path)
            .map(|metadata| metadata.len())
            .unwrap_or(0)
    }
}

/// The redb backend: the chain file, and the UTXO file and UTXO log beside it.
pub struct RedbBackend {
    chain: File,
    utxo: Arc<File>,
    log: Arc<UtxoLog>,
    options: RedbOptions,
    /// Deferred writes (`None` deletes), newest per key, that the next durable commit writes
    /// first. Reads look here before the file. A redb commit, even one without fsync, flushes
    /// pages, checksums and opens every table: a node stepping hundreds of times a second spent
    /// a tenth of its CPU on those small commits, so a whole step now costs one commit.
    pending: BTreeMap<Table, BTreeMap<Vec<u8>, Option<Vec<u8>>>>,
    /// Set once the log indexes the UTXOs by address ([`KvBackend::derive_address_index`]).
    address_of: Option<AddressOf>,
}

impl std::fmt::Debug for RedbBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbBackend")
            .field("path", &self.chain.path)
            .field("utxo_path", &self.utxo.path)
            .finish_non_exhaustive()
    }
}

/// Writes the UTXO file of a [`RedbBackend`] from another thread.
pub struct RedbUtxoWriter {
    file: Arc<File>,
    log: Arc<UtxoLog>,
    quick_repair: bool,
}

fn derived_written() -> StorageError {
    StorageError::Io {
        context: "writing the UTXO file".to_string(),
        message: "the address index is derived from the UTXO set, not written (a bug)".to_string(),
    }
}

/// Sends the UTXO set's writes to the log and the rest to the UTXO file's transaction.
struct SplitWriter<'a, 'b> {
    file: &'a mut dyn TableWriter,
    log: &'a mut LogBatch<'b>,
}

impl TableWriter for SplitWriter<'_, '_> {
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<()> {
        match table {
            Table::Utxos => self.log.put(key, value),
            Table::AddressIndex => Err(derived_written()),
            _ => self.file.put(table, key, value),
        }
    }

    fn delete(&mut self, table: Table, key: &[u8]) -> Result<()> {
        match table {
            Table::Utxos => self.log.delete(key),
            Table::AddressIndex => Err(derived_written()),
            _ => self.file.delete(table, key),
        }
    }
}

impl UtxoFileWriter for RedbUtxoWriter {
    fn write(&self, writes: &mut WriteFn<'_>) -> Result<()> {
        // The log is synced first and the transaction then records its new extent: a crash
        // between the two leaves log bytes that no commit covers, which the next open ignores.
        let mut batch = self.log.batch()?;
        self.file
            .write(&Table::UTXO_FILE, self.quick_repair, &mut |file| {
                writes(&mut SplitWriter {
                    file: &mut *file,
                    log: &mut batch,
                })?;
                let state = batch.finish()?;
                file.put(Table::UtxoMeta, LOG_STATE, &state.encode())
            })?;
        batch.committed();
        Ok(())
    }
}

impl RedbBackend {
    /// Opens the chain file at `path` and the UTXO file beside it
    /// ([`RedbBackend::utxo_path`]), creating empty ones that do not exist. Repairs after an
    /// unclean shutdown happen here.
    pub fn open(path: &Path, options: RedbOptions) -> Result<RedbBackend> {
        if let Some(parent) = path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
        {
            std::fs::create_dir_all(parent)
                .map_err(|error| StorageError::from_io("creating the data directory", &error))?;
        }
        let chain_cache = options.page_cache_bytes / 4;
        let chain = File::open(path, chain_cache)?;
        let utxo = File::open(
            &Self::utxo_path(path),
            options.page_cache_bytes - chain_cache,
        )?;
        let state = utxo.with_table(Table::UtxoMeta, |opened| {
            let Some(opened) = opened else {
                return Ok(None);
            };
            let value = opened
                .get(LOG_STATE)
                .map_err(|error| engine_error("reading", error))?;
            value
                .map(|guard| LogState::decode(guard.value()))
                .transpose()
        })?;
        let log = UtxoLog::open(
            Self::utxo_log_prefix(path),
            state.unwrap_or(LogState::EMPTY),
            options.utxo_log_segment_bytes,
        )?;
        Self::drop_stored_address_index(&utxo)?;
        Ok(RedbBackend {
            chain,
            utxo: Arc::new(utxo),
            log: Arc::new(log),
            options,
            pending: BTreeMap::new(),
            address_of: None,
        })
    }

    /// Empties the address-index table of the UTXO file, which builds before ADR 0030 filled:
    /// the index is derived from the UTXO set now, and entries left there would only go stale.
    /// One write, once: the table stays empty from then on.
    fn drop_stored_address_index(utxo: &File) -> Result<()> {
        let stored = utxo.with_table(Table::AddressIndex, |opened| match opened {
            Some(opened) => Ok(!opened
                .is_empty()
                .map_err(|error| engine_error("reading the address index", error))?),
            None => Ok(false),
        })?;
        if !stored {
            return Ok(());
        }
        let transaction = utxo
            .database
            .begin_write()
            .map_err(|error| engine_error("starting a write", error))?;
        transaction
            .delete_table(definition(Table::AddressIndex))
            .map_err(|error| engine_error("dropping the stored address index", error))?;
        utxo.renew_reader();
        transaction
            .commit()
            .map_err(|error| engine_error("committing", error))?;
        utxo.renew_reader();
        Ok(())
    }

    /// The derived address index's keys (address ‖ outpoint key) with `start <= key < end`,
    /// in key order, at most `limit`. A range within one address reads that address's UTXOs
    /// alone; any other range costs a pass over the whole UTXO set (the store never asks one).
    fn scan_address_index(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let address_of = self.address_of.ok_or_else(not_derived)?;
        let one_address = start.len() >= ADDRESS_LEN
            && match (prefix_end(&start[..ADDRESS_LEN]), end) {
                (Some(address_end), Some(end)) => end <= address_end.as_slice(),
                (Some(_), None) => false,
                (None, _) => true,
            };
        let mut keys: Vec<Vec<u8>> = Vec::new();
        if one_address {
            let address = &start[..ADDRESS_LEN];
            for (key, _) in self.log.group(address)?.ok_or_else(not_derived)? {
                keys.push([address, &key].concat());
            }
        } else {
            self.log.for_each(&mut |key, value| {
                if let Some(address) = address_of(value) {
                    keys.push([address, key].concat());
                }
                Ok(())
            })?;
        }
        keys.retain(|key| key.as_slice() >= start && end.is_none_or(|end| key.as_slice() < end));
        keys.sort_unstable();
        keys.truncate(limit);
        Ok(keys.into_iter().map(|key| (key, Vec::new())).collect())
    }

    /// What the UTXO log's segment files beside the chain file at `path` start with:
    /// `chain.redb` has `chain-utxos-00000001.log` and on.
    pub fn utxo_log_prefix(path: &Path) -> PathBuf {
        path.with_file_name(format!("{}-", Self::utxo_stem(path)))
    }

    /// What the UTXO files' names start with: `chain.redb` gives `chain-utxos`.
    fn utxo_stem(path: &Path) -> String {
        let stem = path
            .file_stem()
            .map(|stem| stem.to_string_lossy().into_owned())
            .unwrap_or_default();
        format!("{stem}-utxos")
    }

    /// The UTXO file that goes with the chain file at `path`: `chain.redb` has
    /// `chain-utxos.redb` beside it.
    pub fn utxo_path(path: &Path) -> PathBuf {
        let stem = Self::utxo_stem(path);
        let name = match path.extension() {
            Some(extension) => format!("{stem}.{}", extension.to_string_lossy()),
            None => stem,
        };
        path.with_file_name(name)
    }

    /// The bytes of the pages in use in both files, as opposed to their sizes: redb grows a
    /// file in large steps and keeps freed pages for reuse instead of shrinking it. Waits for
    /// a flush in progress.
    pub fn allocated_bytes(&self) -> Result<u64> {
        Ok(self.chain.allocated_bytes()? + self.utxo.allocated_bytes()? + self.log.live_bytes())
    }

    /// The chain file.
    pub fn path(&self) -> &Path {
        &self.chain.path
    }

    /// The file that holds `table`.
    fn file(&self, table: Table) -> &File {
        if table.in_utxo_file() {
            &self.utxo
        } else {
            &self.chain
        }
    }

    /// Reads `keys` from the file on up to `threads` threads, ignoring deferred writes.
    fn get_many_from_file(
        &self,
        table: Table,
        keys: &[Vec<u8>],
        threads: usize,
    ) -> Result<Vec<Option<Vec<u8>>>> {
        // Lookups that miss the page cache wait on the disk; on several threads they overlap.
        let chunk = keys.len().div_ceil(threads);
        let database = &self.file(table).database;
        let log = &self.log;
        let results: Vec<Result<Vec<Option<Vec<u8>>>>> = std::thread::scope(|scope| {
            let workers: Vec<_> = keys
                .chunks(chunk)
                .map(|part| {
                    scope.spawn(move || {
                        if table == Table::Utxos {
                            return part.iter().map(|key| log.get(key)).collect();
                        }
                        // One read snapshot per thread.
                        let transaction = database
                            .begin_read()
                            .map_err(|error| engine_error("starting a read", error))?;
                        let opened = match transaction.open_table(definition(table)) {
                            Ok(opened) => opened,
                            Err(redb::TableError::TableDoesNotExist(_)) => {
                                return Ok(vec![None; part.len()]);
                            }
                            Err(error) => return Err(engine_error("opening a table", error)),
                        };
                        part.iter()
                            .map(|key| {
                                let value = opened
                                    .get(key.as_slice())
                                    .map_err(|error| engine_error("reading", error))?;
                                Ok(value.map(|guard| guard.value().to_vec()))
                            })
                            .collect()
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|worker| worker.join().expect("a read thread panicked"))
                .collect()
        });
        let mut values = Vec::with_capacity(keys.len());
        for part in results {
            values.extend(part?);
        }
        Ok(values)
    }

    /// The deferred write at `key`, if any: `Some(None)` is a deferred delete.
    fn pending_value(&self, table: Table, key: &[u8]) -> Option<Option<Vec<u8>>> {
        self.pending.get(&table)?.get(key).cloned()
    }

    /// The deferred writes to `table` with `start <= key < end`, in key order.
    fn pending_range(
        &self,
        table: Table,
        start: &[u8],
        end: Option<&[u8]>,
    ) -> Vec<(&Vec<u8>, &Option<Vec<u8>>)> {
        let Some(writes) = self.pending.get(&table) else {
            return Vec::new();
        };
        let upper = end.map_or(Bound::Unbounded, Bound::Excluded);
        writes
            .range::<[u8], _>((Bound::Included(start), upper))
            .collect()
    }
}

impl KvBackend for RedbBackend {
    type UtxoWriter = RedbUtxoWriter;

    fn utxo_writer(&self) -> RedbUtxoWriter {
        RedbUtxoWriter {
            file: Arc::clone(&self.utxo),
            log: Arc::clone(&self.log),
            quick_repair: self.options.quick_repair,
        }
    }

    fn publish_utxo_writes(&self) {
        self.log.publish();
    }

    fn derives_address_index(&self) -> bool {
        true
    }

    fn derive_address_index(&mut self, address_of: AddressOf) -> Result<u64> {
        let indexed = self.log.build_groups(address_of)?;
        self.address_of = Some(address_of);
        Ok(indexed as u64)
    }

    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if let Some(value) = self.pending_value(table, key) {
            return Ok(value);
        }
        match table {
            Table::Utxos => return self.log.get(key),
            Table::AddressIndex => {
                let address_of = self.address_of.ok_or_else(not_derived)?;
                let Some((address, outpoint)) = key.split_at_checked(ADDRESS_LEN) else {
                    return Ok(None);
                };
                let value = self.log.get(outpoint)?;
                let pays = value.is_some_and(|value| address_of(&value) == Some(address));
                return Ok(pays.then(Vec::new));
            }
            _ => {}
        }
        self.file(table).with_table(table, |opened| {
            let Some(opened) = opened else {
                return Ok(None);
            };
            let value = opened
                .get(key)
                .map_err(|error| engine_error("reading", error))?;
            Ok(value.map(|guard| guard.value().to_vec()))
        })
    }

    fn get_many(&self, table: Table, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>> {
        /// Below this, threads cost more than they save.
        const PARALLEL_FROM: usize = 128;
        let threads = std::thread::available_parallelism()
            .map_or(1, |count| count.get())
            .min(4);
        if keys.len() < PARALLEL_FROM || threads < 2 || table == Table::AddressIndex {
            return keys.iter().map(|key| self.get(table, key)).collect();
        }
        let mut values = self.get_many_from_file(table, keys, threads)?;
        if !self.pending.is_empty() {
            for (key, value) in keys.iter().zip(values.iter_mut()) {
                if let Some(pending) = self.pending_value(table, key) {
                    *value = pending;
                }
            }
        }
        Ok(values)
    }

    fn scan(
        &self,
        table: Table,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        match table {
            Table::Utxos => return self.log.scan(start, end, limit),
            Table::AddressIndex => return self.scan_address_index(start, end, limit),
            _ => {}
        }
        // Deferred deletes can hide at most as many file entries as there are deferred writes
        // in the range, so reading that many more from the file is always enough.
        let overlay = self.pending_range(table, start, end);
        let from_file = self.file(table).with_table(table, |opened| {
            let Some(opened) = opened else {
                return Ok(Vec::new());
            };
            let range = match end {
                Some(end) => opened.range::<&[u8]>(start..end),
                None => opened.range::<&[u8]>(start..),
            }
            .map_err(|error| engine_error("scanning", error))?;
            let mut entries = Vec::new();
            for item in range.take(limit.saturating_add(overlay.len())) {
                let (key, value) = item.map_err(|error| engine_error("scanning", error))?;
                entries.push((key.value().to_vec(), value.value().to_vec()));
            }
            Ok(entries)
        })?;
        if overlay.is_empty() {
            return Ok(from_file);
        }
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = from_file.into_iter().collect();
        for (key, value) in overlay {
            match value {
                Some(value) => merged.insert(key.clone(), value.clone()),
                None => merged.remove(key),
            };
        }
        Ok(merged.into_iter().take(limit).collect())
    }

    fn write(&mut self, writes: &mut WriteFn<'_>) -> Result<()> {
        let pending = &self.pending;
        self.chain.write(
            &Table::CHAIN_FILE,
            self.options.quick_repair,
            &mut |writer| {
                // Deferred writes came first, so they go first. On an error they stay pending.
                for (table, writes) in pending {
                    for (key, value) in writes {
                        match value {
                            Some(value) => writer.put(*table, key, value)?,
                            None => writer.delete(*table, key)?,
                        }
                    }
                }
                writes(writer)
            },
        )?;
        self.pending.clear();
        Ok(())
    }

    fn commit_deferred(&mut self, batch: &WriteBatch) -> Result<()> {
        // Kept in memory until the next durable commit writes it first, in the same
        // transaction: a crash before then loses the batch whole, never part of it.
        for (table, _, _) in batch.ops() {
            if table.in_utxo_file() {
                return Err(StorageError::Io {
                    context: "deferring a write".to_string(),
                    message: format!("table {} is in the UTXO file (a bug)", table.name()),
                });
            }
        }
        for (table, key, value) in batch.ops() {
            self.pending
                .entry(*table)
                .or_default()
                .insert(key.clone(), value.clone());
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.write(&mut |_| Ok(()))
    }

    fn is_blank(&self) -> Result<bool> {
        let transaction = self
            .chain
            .database
            .begin_read()
            .map_err(|error| engine_error("starting a read", error))?;
        let mut tables = transaction
            .list_tables()
            .map_err(|error| engine_error("listing tables", error))?;
        Ok(tables.next().is_none())
    }

    fn size_on_disk(&self) -> u64 {
        self.chain.size_on_disk() + self.utxo.size_on_disk() + self.log.bytes_on_disk()
    }

    fn for_each_unordered(&self, table: Table, visit: &mut Visit<'_>) -> Result<()> {
        match table {
            Table::Utxos => return self.log.for_each(visit),
            Table::AddressIndex => {
                for (key, value) in self.scan_address_index(&[], None, usize::MAX)? {
                    visit(&key, &value)?;
                }
                return Ok(());
            }
            _ => {}
        }
        self.scan_all(table, UNORDERED_CHUNK, |key, value| visit(key, value))
    }
}
