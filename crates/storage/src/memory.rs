//! The in-memory backend for tests and the simulator, with injectable faults.
//!
//! It models a disk whose only durable unit is a committed batch, as redb's is: a crash keeps
//! every committed batch and nothing else, and a failed commit leaves no trace. A deferred batch
//! ([`KvBackend::commit_deferred`]) is visible at once but is undone by a crash unless a sync or
//! a durable commit came after it.
//!
//! Its two files (ADR 0019) share one simulated disk but keep their own durability: a write to
//! the UTXO file ([`UtxoFileWriter`]) does not make the chain file's deferred batches durable,
//! as a commit of another redb file would not.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::backend::{KvBackend, Table, UtxoFileWriter, WriteBatch, WriteFn};
use crate::error::{Result, StorageError};

/// How a batch reaches the simulated disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Commit {
    /// A durable commit of the chain file, which makes its deferred batches durable too.
    Durable,
    /// A deferred batch of the chain file.
    Deferred,
    /// A durable commit of the UTXO file.
    UtxoFile,
}

/// A fault the next commits will meet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The disk has no room left.
    DiskFull,
    /// The device reports an I/O error.
    Io,
}

#[derive(Debug, Default)]
struct Disk {
    tables: BTreeMap<Table, BTreeMap<Vec<u8>, Vec<u8>>>,
    /// Bumped by a crash; handles from before it are dead.
    generation: u64,
    commits: u64,
    /// Commits still allowed to succeed before `fault` strikes; `None` = no fault armed.
    fault_after: Option<(u64, Fault)>,
    /// Whether an armed fault stays on after striking (a full disk stays full).
    sticky: bool,
    /// Earlier values of everything written by deferred batches since the last durable
    /// commit, oldest first: a crash replays it backwards.
    undo: Vec<(Table, Vec<u8>, Option<Vec<u8>>)>,
}

/// A simulated disk. Clones share the disk; see [`MemoryBackend::crash`].
#[derive(Clone, Debug, Default)]
pub struct MemoryBackend {
    disk: Arc<Mutex<Disk>>,
    generation: u64,
    /// Held by [`MemoryBackend::pause_utxo_file`]; every UTXO-file write takes it first.
    utxo_pause: Arc<Mutex<()>>,
}

impl MemoryBackend {
    /// An empty disk.
    pub fn new() -> MemoryBackend {
        MemoryBackend::default()
    }

    fn lock(&self) -> MutexGuard<'_, Disk> {
        self.disk
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn check_alive(&self, disk: &Disk, context: &str) -> Result<()> {
        if disk.generation != self.generation {
            return Err(StorageError::Io {
                context: context.to_string(),
                message: "the simulated node crashed; this handle is dead".to_string(),
            });
        }
        Ok(())
    }

    /// Crashes the process that uses this disk: every handle from before the crash fails from
    /// now on, so whatever its store held only in memory is lost. Returns a handle for the
    /// restarted process, which sees exactly the committed batches.
    pub fn crash(&self) -> MemoryBackend {
        let mut disk = self.lock();
        disk.generation += 1;
        while let Some((table, key, value)) = disk.undo.pop() {
            let entries = disk.tables.entry(table).or_default();
            match value {
                Some(value) => entries.insert(key, value),
                None => entries.remove(&key),
            };
        }
        MemoryBackend {
            disk: Arc::clone(&self.disk),
            generation: disk.generation,
            utxo_pause: Arc::clone(&self.utxo_pause),
        }
    }

    /// Lets `successes` more commits succeed, then fails the next one with `fault`. With
    /// `sticky`, every later commit fails too until [`MemoryBackend::clear_faults`].
    pub fn fail_commit_after(&self, successes: u64, fault: Fault, sticky: bool) {
        let mut disk = self.lock();
        disk.fault_after = Some((successes, fault));
        disk.sticky = sticky;
    }

    /// Disarms injected faults (the operator freed disk space).
    pub fn clear_faults(&self) {
        let mut disk = self.lock();
        disk.fault_after = None;
        disk.sticky = false;
    }

    /// Holds every write to the UTXO file until the guard is dropped, so that a test can look
    /// at a store while its background flush is in progress (or crash it then).
    pub fn pause_utxo_file(&self) -> MutexGuard<'_, ()> {
        self.utxo_pause
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// How many batches have been committed to this disk.
    pub fn commit_count(&self) -> u64 {
        self.lock().commits
    }

    /// Runs `writes` into a buffer and commits it as `commit` says. Buffering first means a
    /// failing body leaves the disk untouched.
    fn write_buffered(&self, writes: &mut WriteFn<'_>, commit: Commit) -> Result<()> {
        {
            let disk = self.lock();
            self.check_alive(&disk, "committing")?;
        }
        let mut batch = WriteBatch::new();
        writes(&mut batch)?;
        self.apply(batch, commit)
    }

    /// Commits `batch` to the file and in the way `commit` says.
    fn apply(&self, batch: WriteBatch, commit: Commit) -> Result<()> {
        let mut disk = self.lock();
        self.check_alive(&disk, "committing")?;
        if let Some((successes, fault)) = disk.fault_after {
            if successes == 0 {
                if !disk.sticky {
                    disk.fault_after = None;
                }
                return Err(match fault {
                    Fault::DiskFull => StorageError::DiskFull {
                        context: "committing".to_string(),
                    },
                    Fault::Io => StorageError::Io {
                        context: "committing".to_string(),
                        message: "injected I/O error".to_string(),
                    },
                });
            }
            disk.fault_after = Some((successes - 1, fault));
        }
        let file = if commit == Commit::UtxoFile {
            &Table::UTXO_FILE[..]
        } else {
            &Table::CHAIN_FILE[..]
        };
        if let Some((table, _, _)) = batch
            .ops()
            .iter()
            .find(|(table, _, _)| !file.contains(table))
        {
            return Err(StorageError::Io {
                context: "committing".to_string(),
                message: format!(
                    "table {} is not in the file this commit writes (a bug)",
                    table.name()
                ),
            });
        }
        for table in file {
            disk.tables.entry(*table).or_default();
        }
        let deferred = commit == Commit::Deferred;
        let disk = &mut *disk;
        for (table, key, value) in batch.into_ops() {
            let entries = disk.tables.entry(table).or_default();
            let previous = match value {
                Some(value) => entries.insert(key.clone(), value),
                None => entries.remove(&key),
            };
            if deferred {
                disk.undo.push((table, key, previous));
            }
        }
        if commit == Commit::Durable {
            disk.undo.clear();
        }
        disk.commits += 1;
        Ok(())
    }
}

impl UtxoFileWriter for MemoryBackend {
    fn write(&self, writes: &mut WriteFn<'_>) -> Result<()> {
        let _paused = self
            .utxo_pause
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.write_buffered(writes, Commit::UtxoFile)
    }
}

impl KvBackend for MemoryBackend {
    type UtxoWriter = MemoryBackend;

    fn utxo_writer(&self) -> MemoryBackend {
        self.clone()
    }

    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let disk = self.lock();
        self.check_alive(&disk, "reading")?;
        Ok(disk
            .tables
            .get(&table)
            .and_then(|entries| entries.get(key))
            .cloned())
    }

    fn scan(
        &self,
        table: Table,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let disk = self.lock();
        self.check_alive(&disk, "scanning")?;
        let Some(entries) = disk.tables.get(&table) else {
            return Ok(Vec::new());
        };
        Ok(entries
            .range(start.to_vec()..)
            .take_while(|(key, _)| end.is_none_or(|end| key.as_slice() < end))
            .take(limit)
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect())
    }

    fn write(&mut self, writes: &mut WriteFn<'_>) -> Result<()> {
        self.write_buffered(writes, Commit::Durable)
    }

    fn commit_deferred(&mut self, batch: &WriteBatch) -> Result<()> {
        self.apply(batch.clone(), Commit::Deferred)
    }

    fn sync(&mut self) -> Result<()> {
        if self.lock().undo.is_empty() {
            return Ok(());
        }
        self.apply(WriteBatch::new(), Commit::Durable)
    }

    fn is_blank(&self) -> Result<bool> {
        let disk = self.lock();
        self.check_alive(&disk, "opening")?;
        Ok(!Table::CHAIN_FILE
            .iter()
            .any(|table| disk.tables.contains_key(table)))
    }

    fn size_on_disk(&self) -> u64 {
        0
    }
}
