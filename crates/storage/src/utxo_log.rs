//! The flushed UTXO set on disk: an append-only log of records with an in-memory hash index
//! (ADR 0029).
//!
//! A B-tree pays for every insert and delete with a walk down the tree and a rewrite of its
//! pages; at the rates a node flushes, that was most of the flush (`BENCHMARKS.md`). Here a
//! flush appends its records (a put, or a tombstone for a delete) to the newest segment file in
//! one sequential write, and the index, a map from a keyed 64-bit hash of the key to where its
//! record is, finds them again. The hash is not trusted: every lookup reads the record and
//! compares its key, and the rare key whose hash another key already holds goes to a small
//! overflow map.
//!
//! Durability comes from the redb transaction of the UTXO file that each batch rides in: the
//! log is synced first, and the transaction then records how far the log goes ([`LogState`]).
//! A crash before that commit leaves bytes past the recorded end; they are ignored on open and
//! cut off before the next append. Records are written in frames of up to 1 MiB, each with a
//! checksum, so a damaged file is reported instead of read as data.
//!
//! Readers never wait for a batch: it only reads the shared index, and keeps its changes to it
//! until [`UtxoLog::publish`], which the store calls from the node's own thread once the batch
//! has committed. A batch on the background flush thread, at the lowest CPU priority, could
//! otherwise hold the lock that the node's reads need while the scheduler keeps it waiting.
//!
//! Space is reclaimed by compaction: when the dead bytes (overwritten or deleted records and
//! tombstones) outgrow the live ones, the next batch copies the live records of the oldest
//! segment to the head, and the segment file is deleted once that batch has committed. Only the
//! oldest segment is ever compacted, so its tombstones can be dropped: no older record is left
//! for them to hide.
//!
//! The log can also index its records by a group key that their values carry (the address a
//! UTXO pays, for the store's address index, ADR 0030): a sorted array of (keyed hash of the
//! group key, location), 16 bytes per record, built from the records at open and kept by every
//! batch. A batch collects its additions and removals and sorts them before it commits, off the
//! node's thread; publishing merges them into the array in place. As with the main index the
//! hash is not trusted: a lookup reads each record and keeps those whose group key matches.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::hash::BuildHasher;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use timecoin_primitives::FastMap;

use crate::backend::Visit;
use crate::error::{Result, StorageError};

/// The default size at which a segment takes no more appends. Compaction rewrites a segment at
/// a time, so this also bounds what one flush may have to copy.
pub const SEGMENT_BYTES: u64 = 64 << 20;
/// Records are written to the file in frames of about this much.
const FRAME_BYTES: usize = 1 << 20;
/// A frame's header: the payload's length (`u32`) and the first 8 bytes of its BLAKE3 hash.
const FRAME_HEADER: usize = 12;
/// A record's header: the key's length (`u8`) and the value's (`u16`, [`TOMBSTONE`] for none).
const RECORD_HEADER: usize = 3;
/// The value length that marks a tombstone.
const TOMBSTONE: u16 = u16::MAX;
/// Bytes read at once when visiting the live records of a segment.
const VISIT_WINDOW: usize = 4 << 20;

const LEN_BITS: u32 = 12;
const OFFSET_BITS: u32 = 28;
const SEGMENT_BITS: u32 = 24;

/// The largest record (header, key and value) the log stores.
pub const MAX_RECORD: usize = (1 << LEN_BITS) - 1;

/// Where a record is: segment, offset and length packed into 8 bytes, so that the index costs
/// about 17 bytes per entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Loc(u64);

impl Loc {
    fn new(segment: u32, offset: u64, len: usize) -> Result<Loc> {
        if u64::from(segment) >= 1 << SEGMENT_BITS || offset >= 1 << OFFSET_BITS || len > MAX_RECORD
        {
            return Err(StorageError::Io {
                context: "appending to the UTXO log".to_string(),
                message: format!(
                    "segment {segment}, offset {offset} or record length {len} is out of range \
                     (a bug)"
                ),
            });
        }
        Ok(Loc((u64::from(segment) << (OFFSET_BITS + LEN_BITS))
            | (offset << LEN_BITS)
            | len as u64))
    }

    fn segment(self) -> u32 {
        (self.0 >> (OFFSET_BITS + LEN_BITS)) as u32
    }

    fn offset(self) -> u64 {
        (self.0 >> LEN_BITS) & ((1 << OFFSET_BITS) - 1)
    }

    fn len(self) -> usize {
        (self.0 & ((1 << LEN_BITS) - 1)) as usize
    }
}

/// How far the log goes, as the UTXO file's last commit recorded it: segments `first..=last`,
/// the last of them `last_len` bytes long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogState {
    /// The oldest segment still in use.
    pub first: u32,
    /// The segment appended to.
    pub last: u32,
    /// The committed length of the last segment.
    pub last_len: u64,
}

impl LogState {
    /// A log that holds nothing yet.
    pub const EMPTY: LogState = LogState {
        first: 1,
        last: 1,
        last_len: 0,
    };

    const VERSION: u8 = 1;

    /// The state as stored: a version byte, then `first`, `last` and `last_len` little-endian.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = vec![Self::VERSION];
        bytes.extend_from_slice(&self.first.to_le_bytes());
        bytes.extend_from_slice(&self.last.to_le_bytes());
        bytes.extend_from_slice(&self.last_len.to_le_bytes());
        bytes
    }

    /// Reads a stored state.
    pub fn decode(bytes: &[u8]) -> Result<LogState> {
        let bad = || corrupt("the UTXO log's recorded state is malformed".to_string());
        if bytes.len() != 17 || bytes[0] != Self::VERSION {
            return Err(bad());
        }
        let state = LogState {
            first: u32::from_le_bytes(bytes[1..5].try_into().map_err(|_| bad())?),
            last: u32::from_le_bytes(bytes[5..9].try_into().map_err(|_| bad())?),
            last_len: u64::from_le_bytes(bytes[9..17].try_into().map_err(|_| bad())?),
        };
        if state.first == 0 || state.first > state.last {
            return Err(bad());
        }
        Ok(state)
    }
}

fn corrupt(what: String) -> StorageError {
    StorageError::Corrupt { what }
}

fn io_error(context: String, error: &std::io::Error) -> StorageError {
    StorageError::from_io(&context, error)
}

/// What a record says about its key.
#[derive(Clone, Copy)]
enum Body<'a> {
    /// The key's value from here on.
    Value(&'a [u8]),
    /// The key is deleted. `killed` is where its record was when the tombstone was written, so
    /// that rebuilding the index can tell, without reading that record back, whether the slot
    /// it finds still holds it: a slot can only hold another key that shares the hash.
    Tombstone { killed: Loc },
}

/// One record, decoded.
struct Record<'a> {
    key: &'a [u8],
    body: Body<'a>,
}

impl Record<'_> {
    fn value(&self) -> Option<&[u8]> {
        match self.body {
            Body::Value(value) => Some(value),
            Body::Tombstone { .. } => None,
        }
    }
}

fn encode_record(key: &[u8], body: Body<'_>) -> Result<Vec<u8>> {
    let body_len = match body {
        Body::Value(value) => value.len(),
        Body::Tombstone { .. } => 8,
    };
    let len = RECORD_HEADER + key.len() + body_len;
    if key.len() > usize::from(u8::MAX) || len > MAX_RECORD {
        return Err(StorageError::Io {
            context: "appending to the UTXO log".to_string(),
            message: format!(
                "a record of {len} bytes (key {} bytes) is larger than the log stores (a bug)",
                key.len()
            ),
        });
    }
    let mut record = Vec::with_capacity(len);
    record.push(key.len() as u8);
    match body {
        Body::Value(value) => {
            record.extend_from_slice(&(value.len() as u16).to_le_bytes());
            record.extend_from_slice(key);
            record.extend_from_slice(value);
        }
        Body::Tombstone { killed } => {
            record.extend_from_slice(&TOMBSTONE.to_le_bytes());
            record.extend_from_slice(key);
            record.extend_from_slice(&killed.0.to_le_bytes());
        }
    }
    Ok(record)
}

/// Decodes the record at the start of `bytes`, with its length.
fn decode_record(bytes: &[u8]) -> Option<(Record<'_>, usize)> {
    let header = bytes.get(..RECORD_HEADER)?;
    let key_len = usize::from(header[0]);
    let value_len = u16::from_le_bytes([header[1], header[2]]);
    let key = bytes.get(RECORD_HEADER..RECORD_HEADER + key_len)?;
    let start = RECORD_HEADER + key_len;
    if value_len == TOMBSTONE {
        let killed = u64::from_le_bytes(bytes.get(start..start + 8)?.try_into().ok()?);
        let body = Body::Tombstone {
            killed: Loc(killed),
        };
        return Some((Record { key, body }, start + 8));
    }
    let end = start + usize::from(value_len);
    let body = Body::Value(bytes.get(start..end)?);
    Some((Record { key, body }, end))
}

fn checksum(payload: &[u8]) -> [u8; 8] {
    blake3::hash(payload).as_bytes()[..8]
        .try_into()
        .expect("8 bytes")
}

/// Calls `visit` with each frame's payload (and where it starts) in the first `len` bytes of
/// the segment file `file`, at `path`, once its length and checksum are checked.
fn each_frame(
    file: &File,
    path: &Path,
    len: u64,
    mut visit: impl FnMut(u64, &[u8]) -> Result<()>,
) -> Result<()> {
    let damaged = |offset: u64, what: &str| {
        corrupt(format!(
            "the UTXO log file {} is damaged at byte {offset}: {what}",
            path.display()
        ))
    };
    let read = |buffer: &mut [u8], offset: u64| {
        file.read_exact_at(buffer, offset)
            .map_err(|error| io_error(format!("reading {}", path.display()), &error))
    };
    let mut offset = 0u64;
    let mut payload = Vec::new();
    while offset < len {
        if len - offset < FRAME_HEADER as u64 {
            return Err(damaged(offset, "a frame header is cut off"));
        }
        let mut header = [0u8; FRAME_HEADER];
        read(&mut header, offset)?;
        let payload_len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as u64;
        let start = offset + FRAME_HEADER as u64;
        if payload_len == 0 || payload_len > len - start {
            return Err(damaged(offset, "a frame's length runs past the end"));
        }
        payload.resize(payload_len as usize, 0);
        read(&mut payload, start)?;
        if checksum(&payload) != header[4..] {
            return Err(damaged(offset, "a frame fails its checksum"));
        }
        visit(start, &payload)?;
        offset = start + payload_len;
    }
    Ok(())
}

/// Calls `visit` with each record of a frame's `payload`, which starts at `start` in segment
/// `id`, with its place and its bytes.
fn each_record(
    payload: &[u8],
    id: u32,
    start: u64,
    path: &Path,
    mut visit: impl FnMut(Record<'_>, Loc, &[u8]) -> Result<()>,
) -> Result<()> {
    let mut at = 0usize;
    while at < payload.len() {
        let (record, record_len) = decode_record(&payload[at..]).ok_or_else(|| {
            corrupt(format!(
                "the UTXO log file {} is damaged at byte {}: a record cannot be decoded",
                path.display(),
                start + at as u64
            ))
        })?;
        let loc = Loc::new(id, start + at as u64, record_len)?;
        visit(record, loc, &payload[at..at + record_len])?;
        at += record_len;
    }
    Ok(())
}

/// The bytes at `loc` within `tail`, the unwritten frame of a segment whose file ends at `base`.
fn tail_slice(tail: &[u8], base: u64, loc: Loc) -> Result<&[u8]> {
    let start = (loc.offset() - base) as usize;
    tail.get(start..start + loc.len())
        .ok_or_else(|| corrupt("a UTXO log location points past its end".to_string()))
}

/// Reads the record at `loc` from `source` and hands it, decoded, to `then`.
fn with_record<T>(
    log: &UtxoLog,
    loc: Loc,
    source: Source,
    then: impl FnOnce(Record<'_>) -> T,
) -> Result<T> {
    let path = || log.segment_path(loc.segment());
    let bytes = source.read(path)?;
    let (record, _) = decode_record(&bytes).ok_or_else(|| {
        corrupt(format!(
            "a UTXO log record in {} cannot be decoded",
            path().display()
        ))
    })?;
    Ok(then(record))
}

/// A segment file and what the index knows of it.
#[derive(Clone)]
struct Segment {
    /// `None` only for a last segment that nothing was appended to yet.
    file: Option<Arc<File>>,
    /// Bytes written to the file (for a batch's last segment, the frame not yet written sits
    /// in [`Staged::tail`]).
    len: u64,
    /// Bytes of the records in it that the index points to.
    live: u64,
}

/// Which map holds a key's location.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Slot {
    Main,
    Overflow,
}

/// Finds a record's group key in its value (for [`UtxoLog::group`]): `None` for a value in no
/// group.
pub type Grouper = fn(&[u8]) -> Option<&[u8]>;

/// Keys and values, as [`UtxoLog::group`] returns them.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// The records by group: what readers see.
struct Groups {
    of: Grouper,
    /// (keyed hash of the group key, location) of every live record in a group, sorted.
    members: Vec<(u64, Loc)>,
}

/// What a batch changes in the groups: sorted, and with every record that the batch both added
/// and removed left out of both (compaction can move a record written earlier in the batch),
/// once [`LogBatch::finish`] has prepared them.
struct Grouping {
    of: Grouper,
    added: Vec<(u64, Loc)>,
    removed: Vec<(u64, Loc)>,
}

impl Grouping {
    /// Sorts the changes and drops the pairs that cancel out, so that publishing has only a
    /// merge left to do.
    fn prepare(&mut self) {
        self.added.sort_unstable();
        self.removed.sort_unstable();
        let mut removals = std::mem::take(&mut self.removed).into_iter().peekable();
        let mut removed = Vec::with_capacity(removals.len());
        self.added.retain(|member| {
            while let Some(removal) = removals.next_if(|removal| removal < member) {
                removed.push(removal);
            }
            removals.next_if_eq(member).is_none()
        });
        removed.extend(removals);
        self.removed = removed;
    }

    /// Applies the prepared changes to `members` in place: the array is the index's largest
    /// after the main map (16 bytes per UTXO), and a merged copy beside it would double that at
    /// every flush.
    fn apply(self, members: &mut Vec<(u64, Loc)>) {
        if !self.removed.is_empty() {
            let mut removals = self.removed.iter().peekable();
            members.retain(|member| {
                while removals.next_if(|removal| *removal < member).is_some() {}
                removals.next_if_eq(&member).is_none()
            });
        }
        // Merged from the back, into the room made at the end.
        let old_len = members.len();
        members.resize(old_len + self.added.len(), (0, GONE));
        let (mut from, mut to) = (old_len, members.len());
        for addition in self.added.into_iter().rev() {
            while from > 0 && members[from - 1] > addition {
                members[to - 1] = members[from - 1];
                from -= 1;
                to -= 1;
            }
            members[to - 1] = addition;
            to -= 1;
        }
    }
}

/// A key's record, as a batch finds it.
#[derive(Clone, Copy)]
struct Found {
    slot: Slot,
    loc: Loc,
    /// The hashed group key of its value, when the log keeps groups.
    group: Option<u64>,
}

/// Where to read a record from, taken under the lock and read after it is released.
enum Source {
    Bytes(Vec<u8>),
    File(Arc<File>, Loc),
}

impl Source {
    fn read(self, path: impl FnOnce() -> PathBuf) -> Result<Vec<u8>> {
        match self {
            Source::Bytes(bytes) => Ok(bytes),
            Source::File(file, loc) => {
                let mut bytes = vec![0; loc.len()];
                file.read_exact_at(&mut bytes, loc.offset())
                    .map_err(|error| {
                        io_error(
                            format!("reading the UTXO log file {}", path().display()),
                            &error,
                        )
                    })?;
                Ok(bytes)
            }
        }
    }
}

/// How keys are hashed for the index: fixed when the log is opened.
struct Keys {
    hasher: foldhash::quality::RandomState,
    /// Bits dropped from every hash: 0, except in tests that make keys collide.
    shift: u32,
}

impl Keys {
    fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key) >> self.shift
    }
}

/// The index readers see: the log as the last published batch left it. Every location in it
/// is in a segment's written, committed bytes.
#[derive(Default)]
struct Index {
    main: FastMap<u64, Loc>,
    /// Keys whose hash another key holds in `main`.
    overflow: FastMap<Box<[u8]>, Loc>,
    segments: BTreeMap<u32, Segment>,
    /// The records by group, once [`UtxoLog::build_groups`] was called.
    groups: Option<Groups>,
}

impl Index {
    fn source(&self, loc: Loc) -> Result<Source> {
        let segment = self
            .segments
            .get(&loc.segment())
            .ok_or_else(|| corrupt(format!("UTXO log segment {} is gone", loc.segment())))?;
        let file = segment
            .file
            .clone()
            .filter(|_| loc.offset() + loc.len() as u64 <= segment.len)
            .ok_or_else(|| corrupt("a UTXO log location points past its end".to_string()))?;
        Ok(Source::File(file, loc))
    }

    fn live_bytes(&self) -> u64 {
        self.segments.values().map(|segment| segment.live).sum()
    }

    fn total_bytes(&self) -> u64 {
        self.segments.values().map(|segment| segment.len).sum()
    }

    /// Makes `staged` what readers see.
    fn publish(&mut self, staged: Staged) {
        if self.main.is_empty() && self.overflow.is_empty() {
            // Opening: the staged maps are the whole index (with nothing to remove, as
            // `Staged::unpoint` drops what the shared index does not hold), so they are taken
            // as they are instead of copied.
            self.main = staged.main;
            self.overflow = staged.overflow;
            self.main.retain(|_, loc| *loc != GONE);
            self.overflow.retain(|_, loc| *loc != GONE);
        } else {
            for (hash, loc) in staged.main {
                if loc == GONE {
                    self.main.remove(&hash);
                } else {
                    self.main.insert(hash, loc);
                }
            }
            for (key, loc) in staged.overflow {
                if loc == GONE {
                    self.overflow.remove(&key);
                } else {
                    self.overflow.insert(key, loc);
                }
            }
        }
        self.segments = staged.segments;
        if let (Some(groups), Some(grouping)) = (&mut self.groups, staged.grouping) {
            grouping.apply(&mut groups.members);
        }
    }
}

/// In a batch's maps, a key the batch removed. No record is at segment 0: segments are numbered
/// from 1.
const GONE: Loc = Loc(0);

/// What a batch (or the rebuild at open) changes, kept apart from the shared index until it is
/// published: readers never wait for the writer, which may be the background flush at the
/// lowest CPU priority. Holding the shared index's lock there, a flush that the scheduler put
/// aside for a while stalled every reader of the node's main thread with it (up to 216 ms, over
/// a second in all per minute of load).
struct Staged {
    /// Changes to the shared `main` map: a location, or [`GONE`].
    main: FastMap<u64, Loc>,
    /// Changes to the shared `overflow` map, likewise.
    overflow: FastMap<Box<[u8]>, Loc>,
    /// Every segment as the batch leaves it.
    segments: BTreeMap<u32, Segment>,
    /// The next frame of the last segment: a header to fill in, then records not yet written.
    tail: Vec<u8>,
    /// Segments compacted away, deleted once the batch is published.
    obsolete: Vec<u32>,
    /// What the batch changes in the groups, when the log keeps them.
    grouping: Option<Grouping>,
}

impl Staged {
    fn new(segments: BTreeMap<u32, Segment>) -> Staged {
        let mut tail = Vec::with_capacity(FRAME_HEADER + FRAME_BYTES);
        tail.resize(FRAME_HEADER, 0);
        Staged {
            main: FastMap::default(),
            overflow: FastMap::default(),
            segments,
            tail,
            obsolete: Vec::new(),
            grouping: None,
        }
    }

    /// The hashed group key of `value`, when the log keeps groups and the value is in one.
    fn group_of(&self, log: &UtxoLog, value: Option<&[u8]>) -> Option<u64> {
        let grouping = self.grouping.as_ref()?;
        (grouping.of)(value?).map(|group| log.keys.hash(group))
    }

    /// Records that the record at `loc`, in `group`, is live from now on.
    fn group_add(&mut self, group: Option<u64>, loc: Loc) {
        if let (Some(grouping), Some(group)) = (&mut self.grouping, group) {
            grouping.added.push((group, loc));
        }
    }

    /// Records that the record `found` is live no longer.
    fn group_remove(&mut self, found: Found) {
        if let (Some(grouping), Some(group)) = (&mut self.grouping, found.group) {
            grouping.removed.push((group, found.loc));
        }
    }

    fn last(&self) -> u32 {
        *self
            .segments
            .keys()
            .next_back()
            .expect("the log has a segment")
    }

    /// The location in `main` at `hash`, with this batch's changes.
    fn main_loc(&self, shared: &Index, hash: u64) -> Option<Loc> {
        match self.main.get(&hash) {
            Some(&loc) => (loc != GONE).then_some(loc),
            None => shared.main.get(&hash).copied(),
        }
    }

    /// The location in `overflow` of `key`, with this batch's changes.
    fn overflow_loc(&self, shared: &Index, key: &[u8]) -> Option<Loc> {
        match self.overflow.get(key) {
            Some(&loc) => (loc != GONE).then_some(loc),
            None => shared.overflow.get(key).copied(),
        }
    }

    fn source(&self, loc: Loc) -> Result<Source> {
        let segment = self
            .segments
            .get(&loc.segment())
            .ok_or_else(|| corrupt(format!("UTXO log segment {} is gone", loc.segment())))?;
        if loc.offset() >= segment.len {
            return Ok(Source::Bytes(
                tail_slice(&self.tail, segment.len, loc)?.to_vec(),
            ));
        }
        let file = segment
            .file
            .clone()
            .ok_or_else(|| corrupt("a UTXO log location points into no file".to_string()))?;
        Ok(Source::File(file, loc))
    }

    /// Where `key`'s record is, reading the candidate in `main` to check its key (and, when
    /// the log keeps groups, to learn the record's group).
    fn find(&self, log: &UtxoLog, shared: &Index, key: &[u8], hash: u64) -> Result<Option<Found>> {
        if let Some(loc) = self.overflow_loc(shared, key) {
            let group = match self.grouping {
                Some(_) => with_record(log, loc, self.source(loc)?, |record| {
                    self.group_of(log, record.value())
                })?,
                None => None,
            };
            return Ok(Some(Found {
                slot: Slot::Overflow,
                loc,
                group,
            }));
        }
        let Some(loc) = self.main_loc(shared, hash) else {
            return Ok(None);
        };
        let found = with_record(log, loc, self.source(loc)?, |record| {
            (record.key == key).then(|| self.group_of(log, record.value()))
        })?;
        Ok(found.map(|group| Found {
            slot: Slot::Main,
            loc,
            group,
        }))
    }

    /// Counts the record at `loc` as dead.
    fn forget(&mut self, loc: Loc) {
        if let Some(segment) = self.segments.get_mut(&loc.segment()) {
            segment.live -= loc.len() as u64;
        }
    }

    /// Points `key` at `loc`, a live record, in place of `previous`.
    fn point(
        &mut self,
        shared: &Index,
        key: &[u8],
        hash: u64,
        loc: Loc,
        previous: Option<(Slot, Loc)>,
    ) {
        match previous {
            Some((Slot::Main, old)) => {
                self.main.insert(hash, loc);
                self.forget(old);
            }
            Some((Slot::Overflow, old)) => {
                self.overflow.insert(key.into(), loc);
                self.forget(old);
            }
            None if self.main_loc(shared, hash).is_some() => {
                self.overflow.insert(key.into(), loc);
            }
            None => {
                self.main.insert(hash, loc);
            }
        }
        if let Some(segment) = self.segments.get_mut(&loc.segment()) {
            segment.live += loc.len() as u64;
        }
    }

    /// Removes `key`, found at `previous`. A key the shared index does not hold is simply
    /// dropped from the batch's changes.
    fn unpoint(&mut self, shared: &Index, key: &[u8], hash: u64, previous: (Slot, Loc)) {
        match previous.0 {
            Slot::Main => {
                if shared.main.contains_key(&hash) {
                    self.main.insert(hash, GONE);
                } else {
                    self.main.remove(&hash);
                }
            }
            Slot::Overflow => {
                if shared.overflow.contains_key(key) {
                    self.overflow.insert(key.into(), GONE);
                } else {
                    self.overflow.remove(key);
                }
            }
        }
        self.forget(previous.1);
    }

    /// Applies the record at `loc` while rebuilding the index at open.
    fn replay(
        &mut self,
        log: &UtxoLog,
        shared: &Index,
        record: Record<'_>,
        loc: Loc,
    ) -> Result<()> {
        let hash = log.keys.hash(record.key);
        match record.body {
            Body::Value(_) => {
                let previous = self.find(log, shared, record.key, hash)?;
                let previous = previous.map(|found| (found.slot, found.loc));
                self.point(shared, record.key, hash, loc, previous);
            }
            Body::Tombstone { killed } => {
                // What the tombstone killed is still indexed unless a compaction dropped it;
                // any other record in the slot belongs to another key.
                if self.main_loc(shared, hash) == Some(killed) {
                    self.unpoint(shared, record.key, hash, (Slot::Main, killed));
                } else if self.overflow_loc(shared, record.key) == Some(killed) {
                    self.unpoint(shared, record.key, hash, (Slot::Overflow, killed));
                }
            }
        }
        Ok(())
    }

    fn live_bytes(&self) -> u64 {
        self.segments.values().map(|segment| segment.live).sum()
    }

    fn total_bytes(&self) -> u64 {
        self.segments
            .values()
            .map(|segment| segment.len)
            .sum::<u64>()
            + (self.tail.len() - FRAME_HEADER) as u64
    }

    /// Adds `record` to the tail, writing the tail out first if it is full.
    fn append(&mut self, log: &UtxoLog, record: &[u8]) -> Result<Loc> {
        if self.tail.len() + record.len() > FRAME_HEADER + FRAME_BYTES {
            self.write_frame(log)?;
        }
        let last = self.last();
        let offset = self.segments[&last].len + self.tail.len() as u64;
        let loc = Loc::new(last, offset, record.len())?;
        self.tail.extend_from_slice(record);
        Ok(loc)
    }

    /// Writes the tail to the last segment as one frame, and starts a new segment when the
    /// last one is full. The sync waits for [`LogBatch::finish`].
    fn write_frame(&mut self, log: &UtxoLog) -> Result<()> {
        let payload_len = self.tail.len() - FRAME_HEADER;
        if payload_len == 0 {
            return Ok(());
        }
        let sum = checksum(&self.tail[FRAME_HEADER..]);
        self.tail[..4].copy_from_slice(&(payload_len as u32).to_le_bytes());
        self.tail[4..FRAME_HEADER].copy_from_slice(&sum);
        let last = self.last();
        let path = log.segment_path(last);
        let segment = self.segments.get_mut(&last).expect("the last segment");
        let file = segment
            .file
            .as_ref()
            .expect("prepared before the first append");
        file.write_all_at(&self.tail, segment.len)
            .map_err(|error| io_error(format!("writing {}", path.display()), &error))?;
        segment.len += self.tail.len() as u64;
        let full = segment.len >= log.segment_bytes;
        self.tail.truncate(FRAME_HEADER);
        if full {
            let next = last + 1;
            let file = log.open_for_appends(next, 0)?;
            self.segments.insert(
                next,
                Segment {
                    file: Some(Arc::new(file)),
                    len: 0,
                    live: 0,
                },
            );
        }
        Ok(())
    }
}

/// What only the writer touches.
struct WriterState {
    /// The state the UTXO file's last commit recorded.
    committed: LogState,
    /// Whether files the committed state does not cover were removed and the last segment cut
    /// to its committed length: done before the first append after opening.
    prepared: bool,
    /// Set when a batch did not commit. Readers never saw it (it was not published), but its
    /// frames and segments may lie past the committed state after a write error, so no further
    /// batch is allowed until the log is opened again and cuts them off (the store halts
    /// anyway).
    failed: bool,
}

/// The UTXO log of one data directory.
pub struct UtxoLog {
    /// Segment `n` is `{prefix}{n:08}.log`.
    prefix: PathBuf,
    /// A segment takes no more appends once it is this long.
    segment_bytes: u64,
    keys: Keys,
    index: RwLock<Index>,
    writer: Mutex<WriterState>,
    /// A batch that committed and is not yet published.
    pending: Mutex<Option<Staged>>,
}

impl std::fmt::Debug for UtxoLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UtxoLog")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl UtxoLog {
    /// Opens the log whose segments are named `{prefix}00000001.log` and on, as `state`
    /// records it, and builds the index by reading it. Nothing on disk is changed: files past
    /// the committed state are dealt with before the first append. New segments are started
    /// once the last reaches `segment_bytes` (64 KiB to 192 MiB: a record's offset has 28 bits,
    /// and a segment may pass the limit by a frame).
    pub fn open(prefix: PathBuf, state: LogState, segment_bytes: u64) -> Result<UtxoLog> {
        Self::open_with(prefix, state, segment_bytes, 0)
    }

    /// [`UtxoLog::open`] with `shift` bits dropped from every hash, so that tests can make
    /// keys collide.
    fn open_with(
        prefix: PathBuf,
        state: LogState,
        segment_bytes: u64,
        shift: u32,
    ) -> Result<UtxoLog> {
        let segment_bytes = segment_bytes.clamp(64 << 10, 192 << 20);
        let log = UtxoLog {
            prefix,
            segment_bytes,
            keys: Keys {
                hasher: foldhash::quality::RandomState::default(),
                shift,
            },
            index: RwLock::new(Index::default()),
            writer: Mutex::new(WriterState {
                committed: state,
                prepared: false,
                failed: false,
            }),
            pending: Mutex::new(None),
        };
        let empty = Index::default();
        let mut staged = Staged::new(BTreeMap::new());
        for id in state.first..=state.last {
            let path = log.segment_path(id);
            let last = id == state.last;
            let file = match File::open(&path) {
                Ok(file) => Some(Arc::new(file)),
                // Only a last segment that nothing was committed to may not exist yet.
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                    if last && state.last_len == 0 {
                        None
                    } else {
                        return Err(corrupt(format!(
                            "the UTXO log file {} is missing",
                            path.display()
                        )));
                    }
                }
                Err(error) => {
                    return Err(io_error(format!("opening {}", path.display()), &error));
                }
            };
            let on_disk = match &file {
                Some(file) => file
                    .metadata()
                    .map_err(|error| io_error(format!("reading {}", path.display()), &error))?
                    .len(),
                None => 0,
            };
            let len = if last { state.last_len } else { on_disk };
            if on_disk < len {
                return Err(corrupt(format!(
                    "the UTXO log file {} is {on_disk} bytes long, shorter than the {len} its \
                     last commit recorded",
                    path.display()
                )));
            }
            staged.segments.insert(
                id,
                Segment {
                    file: file.clone(),
                    len,
                    live: 0,
                },
            );
            if let Some(file) = file {
                each_frame(&file, &path, len, |start, payload| {
                    each_record(payload, id, start, &path, |record, loc, _| {
                        staged.replay(&log, &empty, record, loc)
                    })
                })?;
            }
        }
        log.write_index().publish(staged);
        Ok(log)
    }

    /// The path of segment `id`.
    pub fn segment_path(&self, id: u32) -> PathBuf {
        let mut name = self.prefix.as_os_str().to_owned();
        name.push(format!("{id:08}.log"));
        PathBuf::from(name)
    }

    /// The directory the segments are in.
    fn directory(&self) -> &Path {
        self.prefix
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
    }

    /// Opens segment `id` for appends, creating it if need be, cut to `len` bytes.
    fn open_for_appends(&self, id: u32, len: u64) -> Result<File> {
        let path = self.segment_path(id);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|error| io_error(format!("opening {}", path.display()), &error))?;
        file.set_len(len)
            .map_err(|error| io_error(format!("truncating {}", path.display()), &error))?;
        Ok(file)
    }

    fn read_index(&self) -> RwLockReadGuard<'_, Index> {
        self.index
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write_index(&self) -> RwLockWriteGuard<'_, Index> {
        self.index
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn pending(&self) -> MutexGuard<'_, Option<Staged>> {
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Makes the last committed batch visible to readers, and deletes the segments it
    /// compacted away. Until then readers see the log as it was before that batch. Call it
    /// from a thread that readers do not wait for anyway (the node's own): it holds the index's
    /// write lock while it applies the batch's changes.
    pub fn publish(&self) {
        let Some(mut staged) = self.pending().take() else {
            return;
        };
        let obsolete = std::mem::take(&mut staged.obsolete);
        self.write_index().publish(staged);
        // A reader may still hold one of these files open; it reads on until it lets go.
        // A failure to delete one is left for the next open.
        for id in obsolete {
            let _ = std::fs::remove_file(self.segment_path(id));
        }
    }

    /// The value stored at `key`.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        // The overflow map holds whole keys, so a key found there is the answer; a key found
        // by its hash alone is the answer only if the record says so.
        let (loc, source) = {
            let index = self.read_index();
            let hash = self.keys.hash(key);
            let Some(loc) = index
                .overflow
                .get(key)
                .or_else(|| index.main.get(&hash))
                .copied()
            else {
                return Ok(None);
            };
            (loc, index.source(loc)?)
        };
        with_record(self, loc, source, |record| {
            record
                .value()
                .filter(|_| record.key == key)
                .map(<[u8]>::to_vec)
        })
    }

    /// Calls `visit` with every live key and value, in no particular order. A snapshot of the
    /// index is taken first, so a concurrent batch changes nothing of what is visited.
    pub fn for_each(&self, visit: &mut Visit<'_>) -> Result<()> {
        self.for_each_record(|_, record| match record.value() {
            Some(value) => visit(record.key, value),
            None => Ok(()),
        })
    }

    /// Calls `visit` with every record the index points to, and where it is, in file order.
    fn for_each_record(&self, mut visit: impl FnMut(Loc, Record<'_>) -> Result<()>) -> Result<()> {
        let (mut locs, files) = {
            let index = self.read_index();
            let locs: Vec<Loc> = index
                .main
                .values()
                .chain(index.overflow.values())
                .copied()
                .collect();
            // With their lengths as committed: a file may be longer (a batch that never
            // committed, or one not yet published).
            let files: BTreeMap<u32, (Option<Arc<File>>, u64)> = index
                .segments
                .iter()
                .map(|(id, segment)| (*id, (segment.file.clone(), segment.len)))
                .collect();
            (locs, files)
        };
        locs.sort_unstable();
        let mut window: Vec<u8> = Vec::new();
        let mut window_at = (0u32, 0u64);
        for loc in locs {
            let (segment, base) = window_at;
            let inside = segment == loc.segment()
                && loc.offset() >= base
                && loc.offset() + loc.len() as u64 <= base + window.len() as u64;
            if !inside {
                let (file, size) = match files.get(&loc.segment()) {
                    Some((Some(file), size)) => (file, *size),
                    _ => {
                        return Err(corrupt(format!(
                            "UTXO log segment {} is gone",
                            loc.segment()
                        )));
                    }
                };
                let path = self.segment_path(loc.segment());
                let end = size.min(loc.offset() + VISIT_WINDOW as u64);
                window.resize(end.saturating_sub(loc.offset()) as usize, 0);
                file.read_exact_at(&mut window, loc.offset())
                    .map_err(|error| io_error(format!("reading {}", path.display()), &error))?;
                window_at = (loc.segment(), loc.offset());
            }
            let start = (loc.offset() - window_at.1) as usize;
            let bytes = window.get(start..start + loc.len()).ok_or_else(|| {
                corrupt("a UTXO log location points past its file's end".to_string())
            })?;
            let (record, _) = decode_record(bytes)
                .ok_or_else(|| corrupt("a UTXO log record cannot be decoded".to_string()))?;
            visit(loc, record)?;
        }
        Ok(())
    }

    /// Starts keeping the records by the group key that `of` finds in their values, from the
    /// records as they are now: every later batch keeps the groups up to date. Returns how many
    /// records are in a group.
    pub fn build_groups(&self, of: Grouper) -> Result<usize> {
        // No batch may run meanwhile: it would not know of the groups.
        let _writer = self
            .writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.publish();
        let mut members = Vec::with_capacity(self.len());
        self.for_each_record(|loc, record| {
            if let Some(group) = record.value().and_then(of) {
                members.push((self.keys.hash(group), loc));
            }
            Ok(())
        })?;
        members.sort_unstable();
        let count = members.len();
        self.write_index().groups = Some(Groups { of, members });
        Ok(count)
    }

    /// Every live key and value whose group key is `group`, in no particular order; `None` if
    /// the log keeps no groups ([`UtxoLog::build_groups`]).
    pub fn group(&self, group: &[u8]) -> Result<Option<Entries>> {
        let (of, sources) = {
            let index = self.read_index();
            let Some(groups) = &index.groups else {
                return Ok(None);
            };
            let hash = self.keys.hash(group);
            let start = groups.members.partition_point(|(member, _)| *member < hash);
            let sources = groups.members[start..]
                .iter()
                .take_while(|(member, _)| *member == hash)
                .map(|(_, loc)| Ok((*loc, index.source(*loc)?)))
                .collect::<Result<Vec<_>>>()?;
            (groups.of, sources)
        };
        let mut entries = Vec::new();
        for (loc, source) in sources {
            // Another group key may share the hash: the record decides.
            let entry = with_record(self, loc, source, |record| {
                let value = record.value()?;
                (of(value) == Some(group)).then(|| (record.key.to_vec(), value.to_vec()))
            })?;
            entries.extend(entry);
        }
        Ok(Some(entries))
    }

    /// How many live records are in a group (0 if the log keeps no groups).
    pub fn grouped(&self) -> usize {
        self.read_index()
            .groups
            .as_ref()
            .map_or(0, |groups| groups.members.len())
    }

    /// Up to `limit` entries with `start <= key < end`, in key order. Costs a pass over the
    /// whole log: the index keeps no order (a node never asks for this; tests and tools do).
    pub fn scan(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut entries = Vec::new();
        self.for_each(&mut |key, value| {
            if key >= start && end.is_none_or(|end| key < end) {
                entries.push((key.to_vec(), value.to_vec()));
            }
            Ok(())
        })?;
        entries.sort_unstable();
        entries.truncate(limit);
        Ok(entries)
    }

    /// How many keys the log holds.
    pub fn len(&self) -> usize {
        let index = self.read_index();
        index.main.len() + index.overflow.len()
    }

    /// Whether the log holds no key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes of the segment files, live records and dead ones.
    pub fn bytes_on_disk(&self) -> u64 {
        self.read_index().total_bytes()
    }

    /// The bytes of the live records.
    pub fn live_bytes(&self) -> u64 {
        self.read_index().live_bytes()
    }

    /// Starts the next batch, publishing the last one first if nobody did. One batch at a
    /// time: a second caller waits.
    pub fn batch(&self) -> Result<LogBatch<'_>> {
        let mut writer = self
            .writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if writer.failed {
            return Err(StorageError::Io {
                context: "appending to the UTXO log".to_string(),
                message: "an earlier write to it failed; restart the node to recover from the \
                          last commit"
                    .to_string(),
            });
        }
        self.publish();
        if !writer.prepared {
            self.prepare(writer.committed)?;
            writer.prepared = true;
        }
        let (segments, grouper) = {
            let index = self.read_index();
            let grouper = index.groups.as_ref().map(|groups| groups.of);
            (index.segments.clone(), grouper)
        };
        let mut staged = Staged::new(segments);
        staged.grouping = grouper.map(|of| Grouping {
            of,
            added: Vec::new(),
            removed: Vec::new(),
        });
        Ok(LogBatch {
            log: self,
            writer,
            start_last: staged.last(),
            staged: Some(staged),
            finished: None,
            done: false,
        })
    }

    /// Removes the files the committed state does not cover (left by a crash before a commit,
    /// or compacted away before a crash) and cuts the last segment to its committed length.
    fn prepare(&self, state: LogState) -> Result<()> {
        let directory = self.directory();
        let stem = self
            .prefix
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        let entries = std::fs::read_dir(directory)
            .map_err(|error| io_error(format!("listing {}", directory.display()), &error))?;
        for entry in entries {
            let entry = entry
                .map_err(|error| io_error(format!("listing {}", directory.display()), &error))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(id) = name
                .strip_prefix(&stem)
                .and_then(|rest| rest.strip_suffix(".log"))
                .filter(|digits| digits.len() == 8)
                .and_then(|digits| digits.parse::<u32>().ok())
            else {
                continue;
            };
            if id < state.first || id > state.last {
                std::fs::remove_file(entry.path()).map_err(|error| {
                    io_error(format!("removing {}", entry.path().display()), &error)
                })?;
            }
        }
        let file = self.open_for_appends(state.last, state.last_len)?;
        let mut index = self.write_index();
        let segment = index
            .segments
            .get_mut(&state.last)
            .expect("the last segment is loaded");
        segment.file = Some(Arc::new(file));
        Ok(())
    }
}

/// One batch of appends: the writes of one flush. [`LogBatch::finish`] makes it durable and
/// says what to record in the commit that completes it; [`LogBatch::committed`] is called once
/// that commit succeeded, and [`UtxoLog::publish`] then shows the batch to readers. A batch
/// dropped before it committed leaves the log refusing later batches.
///
/// The batch only reads the shared index: its changes, its new records and the frame it has not
/// written yet are its own until published.
pub struct LogBatch<'a> {
    log: &'a UtxoLog,
    writer: MutexGuard<'a, WriterState>,
    /// The last segment when the batch began: it and every later one are synced at the end.
    start_last: u32,
    /// Taken by [`LogBatch::committed`].
    staged: Option<Staged>,
    finished: Option<LogState>,
    /// Set by [`LogBatch::committed`]; a batch dropped without it fails the log.
    done: bool,
}

impl LogBatch<'_> {
    fn staged(&mut self) -> &mut Staged {
        self.staged
            .as_mut()
            .expect("a batch's changes until it commits")
    }

    /// Puts `value` at `key`.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        let log = self.log;
        let record = encode_record(key, Body::Value(value))?;
        let hash = log.keys.hash(key);
        let shared = log.read_index();
        let staged = self.staged();
        let previous = staged.find(log, &shared, key, hash)?;
        let loc = staged.append(log, &record)?;
        if let Some(found) = previous {
            staged.group_remove(found);
        }
        let group = staged.group_of(log, Some(value));
        staged.group_add(group, loc);
        let previous = previous.map(|found| (found.slot, found.loc));
        staged.point(&shared, key, hash, loc, previous);
        Ok(())
    }

    /// Deletes `key` if present.
    pub fn delete(&mut self, key: &[u8]) -> Result<()> {
        let log = self.log;
        let hash = log.keys.hash(key);
        let shared = log.read_index();
        let staged = self.staged();
        let Some(previous) = staged.find(log, &shared, key, hash)? else {
            return Ok(());
        };
        let record = encode_record(
            key,
            Body::Tombstone {
                killed: previous.loc,
            },
        )?;
        staged.append(log, &record)?;
        staged.group_remove(previous);
        staged.unpoint(&shared, key, hash, (previous.slot, previous.loc));
        Ok(())
    }

    /// Copies the live records of the oldest segment to the head while dead bytes outweigh
    /// live ones, so the log stays within about twice its live size. A log with less than a
    /// segment of dead bytes is left alone.
    fn compact(&mut self) -> Result<()> {
        let log = self.log;
        loop {
            let staged = self.staged();
            let live = staged.live_bytes();
            let dead = staged.total_bytes() - live;
            let oldest = *staged.segments.keys().next().expect("a segment");
            if oldest == staged.last() || dead <= live.max(log.segment_bytes) {
                return Ok(());
            }
            let segment = &staged.segments[&oldest];
            let Some(file) = segment.file.clone() else {
                return Ok(());
            };
            let len = segment.len;
            self.move_live_records(oldest, &file, len)?;
            let staged = self.staged();
            staged.segments.remove(&oldest);
            staged.obsolete.push(oldest);
        }
    }

    /// Appends a copy of every record of segment `id` that the index still points to.
    fn move_live_records(&mut self, id: u32, file: &File, len: u64) -> Result<()> {
        let log = self.log;
        let path = log.segment_path(id);
        let shared = log.read_index();
        let staged = self.staged();
        each_frame(file, &path, len, |start, payload| {
            each_record(payload, id, start, &path, |record, loc, bytes| {
                if record.value().is_none() {
                    return Ok(());
                }
                let hash = log.keys.hash(record.key);
                let slot = if staged.main_loc(&shared, hash) == Some(loc) {
                    Slot::Main
                } else if staged.overflow_loc(&shared, record.key) == Some(loc) {
                    Slot::Overflow
                } else {
                    return Ok(());
                };
                let moved = staged.append(log, bytes)?;
                let group = staged.group_of(log, record.value());
                staged.group_remove(Found { slot, loc, group });
                staged.group_add(group, moved);
                staged.point(&shared, record.key, hash, moved, Some((slot, loc)));
                Ok(())
            })
        })
    }

    /// Compacts if due, writes what is left of the tail, and syncs every segment the batch
    /// wrote (and the directory, if it made or will remove files). Returns the state that the
    /// completing commit must record.
    pub fn finish(&mut self) -> Result<LogState> {
        self.compact()?;
        let log = self.log;
        let start_last = self.start_last;
        let staged = self.staged();
        staged.write_frame(log)?;
        if let Some(grouping) = &mut staged.grouping {
            // Sorted here, on the writer's thread: publishing, on the node's, only merges.
            grouping.prepare();
        }
        let first = *staged.segments.keys().next().expect("a segment");
        let last = staged.last();
        let state = LogState {
            first,
            last,
            last_len: staged.segments[&last].len,
        };
        for (id, segment) in staged.segments.range(start_last..) {
            if let Some(file) = &segment.file {
                file.sync_data().map_err(|error| {
                    io_error(
                        format!("syncing {}", log.segment_path(*id).display()),
                        &error,
                    )
                })?;
            }
        }
        if state.last != self.writer.committed.last || state.first != self.writer.committed.first {
            self.sync_directory()?;
        }
        self.finished = Some(state);
        Ok(state)
    }

    fn sync_directory(&self) -> Result<()> {
        let directory = self.log.directory();
        File::open(directory)
            .and_then(|directory| directory.sync_all())
            .map_err(|error| io_error(format!("syncing {}", directory.display()), &error))
    }

    /// Records that the commit carrying [`LogBatch::finish`]'s state succeeded. The batch
    /// waits for [`UtxoLog::publish`] (or the next batch) to be seen by readers.
    pub fn committed(mut self) {
        let Some(state) = self.finished.take() else {
            return;
        };
        self.writer.committed = state;
        // `batch` published the one before, so nothing is pending that this could replace.
        *self.log.pending() = self.staged.take();
        self.done = true;
    }
}

impl Drop for LogBatch<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.writer.failed = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn key(number: u32) -> Vec<u8> {
        let mut key = blake3::hash(&number.to_le_bytes()).as_bytes().to_vec();
        key.extend_from_slice(&number.to_le_bytes());
        key
    }

    fn value(number: u32, round: u32) -> Vec<u8> {
        let mut value = vec![(number % 251) as u8; 45];
        value.extend_from_slice(&round.to_le_bytes());
        value
    }

    fn commit(log: &UtxoLog, writes: impl FnOnce(&mut LogBatch<'_>)) -> LogState {
        let mut batch = log.batch().unwrap();
        writes(&mut batch);
        let state = batch.finish().unwrap();
        batch.committed();
        log.publish();
        state
    }

    #[test]
    fn puts_deletes_and_overwrites_survive_a_reopen() {
        let directory = tempfile::tempdir().unwrap();
        let prefix = directory.path().join("chain-utxos-");
        let log = UtxoLog::open(prefix.clone(), LogState::EMPTY, SEGMENT_BYTES).unwrap();
        assert_eq!(log.get(&key(1)).unwrap(), None);
        commit(&log, |batch| {
            for number in 0..1000 {
                batch.put(&key(number), &value(number, 0)).unwrap();
            }
        });
        let state = commit(&log, |batch| {
            for number in 0..500 {
                batch.delete(&key(number)).unwrap();
            }
            for number in 500..600 {
                batch.put(&key(number), &value(number, 1)).unwrap();
            }
            batch.delete(&key(5000)).unwrap();
        });
        let check = |log: &UtxoLog| {
            assert_eq!(log.len(), 500);
            assert_eq!(log.get(&key(3)).unwrap(), None);
            assert_eq!(log.get(&key(550)).unwrap(), Some(value(550, 1)));
            assert_eq!(log.get(&key(700)).unwrap(), Some(value(700, 0)));
            let mut seen = 0;
            log.for_each(&mut |key, value| {
                let number = u32::from_le_bytes(key[32..].try_into().unwrap());
                let round = u32::from(number < 600);
                assert_eq!(value, self::value(number, round).as_slice());
                seen += 1;
                Ok(())
            })
            .unwrap();
            assert_eq!(seen, 500);
        };
        check(&log);
        drop(log);
        let reopened = UtxoLog::open(prefix, state, SEGMENT_BYTES).unwrap();
        check(&reopened);
        let scanned = reopened.scan(&key(0)[..0], None, 3).unwrap();
        assert_eq!(scanned.len(), 3);
        assert!(scanned[0].0 < scanned[1].0 && scanned[1].0 < scanned[2].0);
    }

    #[test]
    fn an_uncommitted_batch_is_cut_off_on_reopen() {
        let directory = tempfile::tempdir().unwrap();
        let prefix = directory.path().join("u-");
        let log = UtxoLog::open(prefix.clone(), LogState::EMPTY, SEGMENT_BYTES).unwrap();
        let state = commit(&log, |batch| batch.put(&key(1), &value(1, 0)).unwrap());
        {
            let mut batch = log.batch().unwrap();
            batch.put(&key(2), &value(2, 0)).unwrap();
            batch.delete(&key(1)).unwrap();
            batch.finish().unwrap();
            // Dropped: its commit never happened.
        }
        assert!(log.batch().is_err(), "a failed batch stops later ones");
        drop(log);
        let reopened = UtxoLog::open(prefix.clone(), state, SEGMENT_BYTES).unwrap();
        assert_eq!(reopened.get(&key(1)).unwrap(), Some(value(1, 0)));
        assert_eq!(reopened.get(&key(2)).unwrap(), None);
        let next = commit(&reopened, |batch| batch.put(&key(3), &value(3, 0)).unwrap());
        drop(reopened);
        let again = UtxoLog::open(prefix, next, SEGMENT_BYTES).unwrap();
        assert_eq!(again.len(), 2);
        assert_eq!(again.get(&key(2)).unwrap(), None);
        assert_eq!(again.get(&key(3)).unwrap(), Some(value(3, 0)));
    }

    #[test]
    fn a_damaged_frame_is_reported_as_corruption() {
        let directory = tempfile::tempdir().unwrap();
        let prefix = directory.path().join("u-");
        let log = UtxoLog::open(prefix.clone(), LogState::EMPTY, SEGMENT_BYTES).unwrap();
        let state = commit(&log, |batch| {
            for number in 0..100 {
                batch.put(&key(number), &value(number, 0)).unwrap();
            }
        });
        let path = log.segment_path(1);
        drop(log);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[200] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        let error = UtxoLog::open(prefix.clone(), state, SEGMENT_BYTES).unwrap_err();
        assert!(matches!(error, StorageError::Corrupt { .. }), "{error}");
        assert!(error.to_string().contains("checksum"), "{error}");
        std::fs::remove_file(&path).unwrap();
        let error = UtxoLog::open(prefix, state, SEGMENT_BYTES).unwrap_err();
        assert!(error.to_string().contains("missing"), "{error}");
    }

    #[test]
    fn keys_sharing_a_hash_are_kept_apart() {
        let directory = tempfile::tempdir().unwrap();
        let log =
            UtxoLog::open(directory.path().join("u-"), LogState::EMPTY, SEGMENT_BYTES).unwrap();
        // Two keys forced into the same main slot: the second must go to the overflow map.
        commit(&log, |batch| batch.put(&key(1), &value(1, 0)).unwrap());
        {
            let mut index = log.write_index();
            let hash = log.keys.hash(key(2).as_slice());
            let first = log.keys.hash(key(1).as_slice());
            let loc = index.main.remove(&first).unwrap();
            index.main.insert(hash, loc);
        }
        // Key 1 now sits in key 2's slot: a lookup of key 2 reads it and must answer "absent".
        assert_eq!(log.get(&key(2)).unwrap(), None);
        commit(&log, |batch| batch.put(&key(2), &value(2, 0)).unwrap());
        assert_eq!(log.read_index().overflow.len(), 1);
        assert_eq!(log.get(&key(2)).unwrap(), Some(value(2, 0)));
        commit(&log, |batch| batch.delete(&key(2)).unwrap());
        assert_eq!(log.get(&key(2)).unwrap(), None);
        assert!(log.read_index().overflow.is_empty());
    }

    #[test]
    fn readers_see_a_batch_once_it_is_published() {
        let directory = tempfile::tempdir().unwrap();
        let log =
            UtxoLog::open(directory.path().join("u-"), LogState::EMPTY, SEGMENT_BYTES).unwrap();
        commit(&log, |batch| {
            for number in 0..100 {
                batch.put(&key(number), &value(number, 0)).unwrap();
            }
        });
        let mut batch = log.batch().unwrap();
        batch.delete(&key(0)).unwrap();
        batch.put(&key(1), &value(1, 1)).unwrap();
        batch.put(&key(100), &value(100, 1)).unwrap();
        // The batch sees its own changes; readers do not, written out and synced or not.
        batch.put(&key(1), &value(1, 2)).unwrap();
        batch.finish().unwrap();
        let unchanged = |log: &UtxoLog| {
            assert_eq!(log.get(&key(0)).unwrap(), Some(value(0, 0)));
            assert_eq!(log.get(&key(1)).unwrap(), Some(value(1, 0)));
            assert_eq!(log.get(&key(100)).unwrap(), None);
            assert_eq!(log.len(), 100);
        };
        unchanged(&log);
        batch.committed();
        unchanged(&log);
        log.publish();
        assert_eq!(log.get(&key(0)).unwrap(), None);
        assert_eq!(log.get(&key(1)).unwrap(), Some(value(1, 2)));
        assert_eq!(log.get(&key(100)).unwrap(), Some(value(100, 1)));
        assert_eq!(log.len(), 100);
        // A batch that is never published is published by the next one.
        commit(&log, |batch| batch.delete(&key(1)).unwrap());
        let batch = log.batch().unwrap();
        assert_eq!(log.get(&key(1)).unwrap(), None);
        drop(batch);
    }

    #[test]
    fn a_batch_never_waits_for_readers_nor_they_for_it() {
        let directory = tempfile::tempdir().unwrap();
        let log = Arc::new(
            UtxoLog::open(directory.path().join("u-"), LogState::EMPTY, 64 << 10).unwrap(),
        );
        // The first batch after opening prepares the files, under the write lock.
        commit(&log, |batch| batch.put(&key(0), &value(0, 0)).unwrap());
        // A reader holds the index for as long as the whole batch takes. A batch that took the
        // write lock at any point (puts, deletes, a frame written, a new segment, compaction,
        // the sync) would wait here forever.
        let reading = log.read_index();
        let (done, finished) = std::sync::mpsc::channel();
        let writer = Arc::clone(&log);
        let batch = std::thread::spawn(move || {
            let mut batch = writer.batch().unwrap();
            for round in 0..20 {
                for number in 0..1_000 {
                    batch.put(&key(number), &value(number, round)).unwrap();
                }
            }
            for number in 0..500 {
                batch.delete(&key(number)).unwrap();
            }
            let state = batch.finish().unwrap();
            batch.committed();
            done.send(state).unwrap();
        });
        let state = finished
            .recv_timeout(Duration::from_secs(120))
            .expect("the batch finished while a reader held the index");
        batch.join().unwrap();
        assert!(state.last > 2, "the batch filled segments: {state:?}");
        assert!(state.first > 1, "and compacted the oldest: {state:?}");
        // The reader saw nothing of it meanwhile.
        assert_eq!(reading.main.len(), 1);
        drop(reading);
        assert_eq!(log.get(&key(999)).unwrap(), None);
        log.publish();
        assert_eq!(log.get(&key(999)).unwrap(), Some(value(999, 19)));
        assert_eq!(log.get(&key(1)).unwrap(), None);
        assert_eq!(log.len(), 500);
    }

    #[test]
    fn compaction_keeps_the_log_near_its_live_size_across_reopens() {
        let directory = tempfile::tempdir().unwrap();
        let prefix = directory.path().join("u-");
        const SEGMENT: u64 = 512 << 10;
        let open = |state| UtxoLog::open(prefix.clone(), state, SEGMENT).unwrap();
        let mut log = open(LogState::EMPTY);
        let mut state = LogState::EMPTY;
        // 5,000 live keys (~440 KB) rewritten 40 times: ~18 MB written in all, so segments
        // fill and the oldest are compacted away.
        let keys = 5_000u32;
        let rounds = 40u32;
        for round in 0..rounds {
            // A quarter of the keys keep their first record, which compaction must move.
            state = commit(&log, |batch| {
                for number in (0..keys).filter(|number| round == 0 || !number.is_multiple_of(4)) {
                    batch.put(&key(number), &value(number, round)).unwrap();
                }
            });
            if round % 15 == 14 {
                drop(log);
                log = open(state);
            }
        }
        assert!(
            state.first > 1,
            "compaction removed old segments: {state:?}"
        );
        assert!(!log.segment_path(1).exists(), "segment 1 was deleted");
        let live = log.live_bytes();
        let total = log.bytes_on_disk();
        assert!(
            total <= live.max(SEGMENT) * 2 + SEGMENT + FRAME_BYTES as u64,
            "{total} bytes on disk for {live} live"
        );
        assert_eq!(log.len(), keys as usize);
        let expected = |number: u32| {
            value(
                number,
                if number.is_multiple_of(4) {
                    0
                } else {
                    rounds - 1
                },
            )
        };
        for number in 0..keys {
            assert_eq!(log.get(&key(number)).unwrap(), Some(expected(number)));
        }
        drop(log);
        let reopened = open(state);
        assert_eq!(reopened.len(), keys as usize);
        let mut seen = 0;
        reopened
            .for_each(&mut |key, value| {
                let number = u32::from_le_bytes(key[32..].try_into().unwrap());
                assert_eq!(value, expected(number).as_slice());
                seen += 1;
                Ok(())
            })
            .unwrap();
        assert_eq!(seen, keys);
    }

    /// A repeatable stream of pseudo-random numbers.
    fn xorshift(mut seed: u64) -> impl FnMut() -> u64 {
        move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        }
    }

    #[test]
    fn group_changes_merge_in_place_as_a_set_would() {
        fn by_nothing(_: &[u8]) -> Option<&[u8]> {
            None
        }
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
        let mut members: Vec<(u64, Loc)> = Vec::new();
        let mut model = std::collections::BTreeSet::new();
        let mut fresh = 1u64;
        for round in 0..50 {
            let mut grouping = Grouping {
                of: by_nothing,
                added: Vec::new(),
                removed: Vec::new(),
            };
            let mut expected = model.clone();
            for _ in 0..(next() % 200) {
                // Few group hashes, so that groups hold many members.
                let member = (next() % 8, Loc(fresh));
                fresh += 1;
                grouping.added.push(member);
                expected.insert(member);
                // Some records are moved again by the same batch (compaction).
                if next().is_multiple_of(5) {
                    grouping.removed.push(member);
                    expected.remove(&member);
                }
            }
            for member in model.iter() {
                if next().is_multiple_of(3) {
                    grouping.removed.push(*member);
                    expected.remove(member);
                }
            }
            // The batch records its changes in no particular order.
            grouping.added.reverse();
            grouping.prepare();
            grouping.apply(&mut members);
            model = expected;
            assert_eq!(
                members,
                model.iter().copied().collect::<Vec<_>>(),
                "round {round}"
            );
        }
        assert!(!members.is_empty());
    }

    /// The group of a test value: the low byte of the round that wrote it, so an overwrite in
    /// a later round moves its key to another group.
    fn by_round(value: &[u8]) -> Option<&[u8]> {
        value.get(45..46)
    }

    /// Checks every group the model's rounds can have against the model.
    fn check_groups(log: &UtxoLog, model: &std::collections::BTreeMap<u32, u32>, rounds: u32) {
        let mut total = 0;
        for round in 0..rounds {
            let mut found: Vec<u32> = log
                .group(&[round as u8])
                .unwrap()
                .expect("groups are kept")
                .into_iter()
                .map(|(key, value)| {
                    let number = u32::from_le_bytes(key[32..].try_into().unwrap());
                    assert_eq!(value, self::value(number, round), "a member's value");
                    number
                })
                .collect();
            found.sort_unstable();
            let expected: Vec<u32> = model
                .iter()
                .filter(|(_, written)| **written == round)
                .map(|(number, _)| *number)
                .collect();
            assert_eq!(found, expected, "group of round {round}");
            total += expected.len();
        }
        assert_eq!(log.grouped(), total, "no stale member is kept");
    }

    /// Random puts and deletes checked against a model map, with reopens and compaction, for
    /// keys hashed with `shift` bits dropped (60: sixteen slots, so nearly every key collides,
    /// and so do the groups).
    fn churn_matches_a_model(shift: u32) {
        let directory = tempfile::tempdir().unwrap();
        let prefix = directory.path().join("u-");
        let open = |state| {
            let log = UtxoLog::open_with(prefix.clone(), state, 64 << 10, shift).unwrap();
            log.build_groups(by_round).unwrap();
            log
        };
        let mut log = open(LogState::EMPTY);
        let mut state = LogState::EMPTY;
        let mut model = std::collections::BTreeMap::new();
        let mut next = xorshift(0x2545_f491_4f6c_dd1d);
        for round in 0..30u32 {
            state = commit(&log, |batch| {
                for _ in 0..1_500 {
                    let roll = next();
                    let number = (roll % 3_000) as u32;
                    if roll >> 32 & 3 == 0 {
                        batch.delete(&key(number)).unwrap();
                        model.remove(&number);
                    } else {
                        batch.put(&key(number), &value(number, round)).unwrap();
                        model.insert(number, round);
                    }
                }
            });
            if round % 7 == 6 {
                drop(log);
                log = open(state);
            }
            for number in 0..3_000u32 {
                let expected = model.get(&number).map(|round| value(number, *round));
                assert_eq!(log.get(&key(number)).unwrap(), expected, "round {round}");
            }
            check_groups(&log, &model, round + 1);
        }
        assert!(state.first > 1, "compaction ran: {state:?}");
        drop(log);
        let reopened = open(state);
        let mut seen = std::collections::BTreeMap::new();
        reopened
            .for_each(&mut |key, value| {
                seen.insert(
                    u32::from_le_bytes(key[32..].try_into().unwrap()),
                    value.to_vec(),
                );
                Ok(())
            })
            .unwrap();
        let expected: std::collections::BTreeMap<u32, Vec<u8>> = model
            .iter()
            .map(|(number, round)| (*number, value(*number, *round)))
            .collect();
        assert_eq!(seen, expected);
    }

    #[test]
    fn random_puts_and_deletes_match_a_model_across_reopens_and_compactions() {
        churn_matches_a_model(0);
    }

    #[test]
    fn colliding_hashes_give_the_same_answers() {
        churn_matches_a_model(60);
    }
}
