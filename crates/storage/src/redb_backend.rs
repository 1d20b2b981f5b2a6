//! The on-disk backend: one redb file, every table `&[u8] → &[u8]`.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use redb::{
    Database, Durability, ReadOnlyTable, ReadTransaction, ReadableDatabase, TableDefinition,
};

use crate::backend::{KvBackend, Table, TableWriter, WriteBatch, WriteFn};
use crate::error::{Result, StorageError};

type Bytes = TableDefinition<'static, &'static [u8], &'static [u8]>;

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
    /// Bytes of redb's own page cache. It serves reads of flushed UTXOs and index entries.
    pub page_cache_bytes: usize,
    /// Whether each commit also saves the allocator state, so that reopening after a crash
    /// needs no full repair scan. It costs a few pages per commit.
    pub quick_repair: bool,
}

impl Default for RedbOptions {
    fn default() -> Self {
        RedbOptions {
            page_cache_bytes: 16 << 20,
            quick_repair: true,
        }
    }
}

struct RedbWriter<'txn> {
    /// Open tables, indexed like [`Table::ALL`].
    tables: Vec<redb::Table<'txn, &'static [u8], &'static [u8]>>,
}

fn table_index(table: Table) -> usize {
    Table::ALL
        .iter()
        .position(|candidate| *candidate == table)
        .expect("every table is listed")
}

impl TableWriter for RedbWriter<'_> {
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<()> {
        self.tables[table_index(table)]
            .insert(key, value)
            .map_err(|error| engine_error("writing", error))?;
        Ok(())
    }

    fn delete(&mut self, table: Table, key: &[u8]) -> Result<()> {
        self.tables[table_index(table)]
            .remove(key)
            .map_err(|error| engine_error("deleting", error))?;
        Ok(())
    }
}

struct Reader {
    transaction: ReadTransaction,
    tables: HashMap<Table, ReadOnlyTable<&'static [u8], &'static [u8]>>,
}

/// The redb backend.
///
/// Reads share one read snapshot that is renewed after every commit: opening a read
/// transaction and a table per lookup would cost more than the lookup itself.
pub struct RedbBackend {
    database: Database,
    path: PathBuf,
    options: RedbOptions,
    reader: Mutex<Option<Reader>>,
    /// Deferred writes (`None` deletes), newest per key, that the next durable commit writes
    /// first. Reads look here before the file. A redb commit, even one without fsync, flushes
    /// pages, checksums and opens every table: a node stepping hundreds of times a second spent
    /// a tenth of its CPU on those small commits, so a whole step now costs one commit.
    pending: BTreeMap<Table, BTreeMap<Vec<u8>, Option<Vec<u8>>>>,
}

impl std::fmt::Debug for RedbBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbBackend")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl RedbBackend {
    /// Opens the database file at `path`, creating an empty one if it does not exist. Repairs
    /// after an unclean shutdown happen here.
    pub fn open(path: &Path, options: RedbOptions) -> Result<RedbBackend> {
        if let Some(parent) = path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
        {
            std::fs::create_dir_all(parent)
                .map_err(|error| StorageError::from_io("creating the data directory", &error))?;
        }
        let database = Database::builder()
            .set_cache_size(options.page_cache_bytes)
            .create(path)
            .map_err(|error| engine_error("opening the database file", error))?;
        Ok(RedbBackend {
            database,
            path: path.to_path_buf(),
            options,
            reader: Mutex::new(None),
            pending: BTreeMap::new(),
        })
    }

    /// The bytes of the pages in use, as opposed to the file's size: redb grows the file in
    /// large steps and keeps freed pages for reuse instead of shrinking it.
    pub fn allocated_bytes(&self) -> Result<u64> {
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

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
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

    /// Reads `keys` from the file on up to `threads` threads, ignoring deferred writes.
    fn get_many_from_file(
        &self,
        table: Table,
        keys: &[Vec<u8>],
        threads: usize,
    ) -> Result<Vec<Option<Vec<u8>>>> {
        // Lookups that miss the page cache wait on the disk; with one read snapshot per thread
        // they overlap.
        let chunk = keys.len().div_ceil(threads);
        let database = &self.database;
        let results: Vec<Result<Vec<Option<Vec<u8>>>>> = std::thread::scope(|scope| {
            let workers: Vec<_> = keys
                .chunks(chunk)
                .map(|part| {
                    scope.spawn(move || {
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
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if let Some(value) = self.pending_value(table, key) {
            return Ok(value);
        }
        self.with_table(table, |opened| {
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
        if keys.len() < PARALLEL_FROM || threads < 2 {
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
        // Deferred deletes can hide at most as many file entries as there are deferred writes
        // in the range, so reading that many more from the file is always enough.
        let overlay = self.pending_range(table, start, end);
        let from_file = self.with_table(table, |opened| {
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
        self.write_durably(writes)
    }

    fn commit_deferred(&mut self, batch: &WriteBatch) -> Result<()> {
        // Kept in memory until the next durable commit writes it first, in the same
        // transaction: a crash before then loses the batch whole, never part of it.
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
        self.is_blank_inner()
    }

    fn size_on_disk(&self) -> u64 {
        std::fs::metadata(&self.path)
            .map(|metadata| metadata.len())
            .unwrap_or(0)
    }
}

impl RedbBackend {
    fn write_durably(&mut self, writes: &mut WriteFn<'_>) -> Result<()> {
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
        transaction.set_quick_repair(self.options.quick_repair);
        {
            // Every table is opened (and so created by the first commit), so that a database is
            // never mistaken for blank once anything was written.
            let mut tables = Vec::with_capacity(Table::ALL.len());
            for table in Table::ALL {
                tables.push(
                    transaction
                        .open_table(definition(table))
                        .map_err(|error| engine_error("opening a table for writing", error))?,
                );
            }
            let mut writer = RedbWriter { tables };
            // Deferred writes came first, so they go first. An error here drops the
            // transaction uncommitted: nothing of it reaches the file, and the deferred writes
            // stay pending.
            for (table, writes) in &self.pending {
                for (key, value) in writes {
                    match value {
                        Some(value) => writer.put(*table, key, value)?,
                        None => writer.delete(*table, key)?,
                    }
                }
            }
            writes(&mut writer)?;
        }
        // Drop the read snapshot first: it would pin the pages this commit frees.
        *self
            .reader
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = None;
        transaction
            .commit()
            .map_err(|error| engine_error("committing", error))?;
        self.pending.clear();
        Ok(())
    }

    fn is_blank_inner(&self) -> Result<bool> {
        let transaction = self
            .database
            .begin_read()
            .map_err(|error| engine_error("starting a read", error))?;
        let mut tables = transaction
            .list_tables()
            .map_err(|error| engine_error("listing tables", error))?;
        Ok(tables.next().is_none())
    }
}
