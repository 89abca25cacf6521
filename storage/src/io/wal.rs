//! The WAL on disk: the writer a store appends to, and the one replay shared by open and
//! verify (the record format is in [`crate::format::wal`]).

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::error::{CorruptionError, IoError, StorageError};
use crate::format::file_name::FileName;
use crate::format::wal::{
    DroppedWalTail, HEADER_LEN, PAYLOAD_PREFIX, WalRecord, crc_extend, decode_log, wal_file_name,
};
use crate::io::dir::{Dir, DirFile};
use crate::schema::Schema;

/// Numbers of the `wal-<n>.log` files in `dir`, ascending.
fn log_numbers(io: &dyn Dir, dir: &Path) -> Result<Vec<u64>, IoError> {
    let mut out = Vec::new();
    for entry in io.list(dir).map_err(|e| IoError::at(dir, "list", e))? {
        if let Some(FileName::Wal(n)) = entry.name.to_str().and_then(FileName::parse) {
            out.push(n);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// What [`replay_logs`] replayed.
#[derive(Debug)]
pub(crate) struct Replay {
    /// Numbers of the files replayed, ascending.
    pub numbers: Vec<u64>,
    /// Records applied.
    pub records: usize,
    /// Sequence number of the next record.
    pub next_seq: u64,
    /// Bytes of the last file's valid prefix (a writer appends after it).
    pub valid_len: u64,
    /// What replay dropped from the end of the last file.
    pub dropped_tail: Option<DroppedWalTail>,
}

/// Replays the files `wal-<n>.log`, `n >= log_number`, of `dir` in order, starting at
/// sequence number `next_seq` (the manifest's WAL position), handing each record to `apply`.
/// Open and verify both replay through here, so they accept and refuse the same logs. Only
/// the last file may end in a dropped tail: a writer fsyncs a file whole before it creates
/// the next one.
pub(crate) fn replay_logs(
    io: &dyn Dir,
    dir: &Path,
    schema: &Schema,
    log_number: u64,
    next_seq: u64,
    mut apply: impl FnMut(&Path, WalRecord<'_>) -> Result<(), CorruptionError>,
) -> Result<Replay, StorageError> {
    let mut numbers = log_numbers(io, dir)?;
    numbers.retain(|&n| n >= log_number);
    // The manifest's own WAL is deleted only after a newer manifest is installed: when a
    // later WAL exists without it, reading it fails (missing) rather than replaying the
    // later WAL alone, which would drop its acknowledged writes. Beside a writer, that is a
    // manifest superseded since it was read, and readers retry from the new one.
    if numbers.first().is_some_and(|&n| n > log_number) {
        numbers.insert(0, log_number);
    }
    let mut replay = Replay {
        numbers: Vec::new(),
        records: 0,
        next_seq,
        valid_len: 0,
        dropped_tail: None,
    };
    for (i, &n) in numbers.iter().enumerate() {
        let path = dir.join(wal_file_name(n));
        let bytes = io.read(&path).map_err(|e| IoError::at(&path, "read", e))?;
        let log = decode_log(&bytes, schema, &path, Some(replay.next_seq))?;
        if let Some(tail) = &log.dropped
            && i + 1 < numbers.len()
        {
            return Err(CorruptionError::new(
                &path,
                tail.offset,
                "damaged record in a WAL file that is not the last (it was fsynced whole)",
            )
            .into());
        }
        replay.records += log.records.len();
        for (_, record) in log.records {
            apply(&path, record)?;
        }
        replay.next_seq = log.next_seq.unwrap_or(replay.next_seq);
        replay.valid_len = log.valid_len;
        replay.dropped_tail = log.dropped;
    }
    replay.numbers = numbers;
    Ok(replay)
}

/// The open WAL file a writer appends to.
#[derive(Debug)]
pub(crate) struct WalWriter {
    file: Box<dyn DirFile>,
    path: PathBuf,
    number: u64,
    len: u64,
    /// Bytes of the file fsynced so far; every record appended carries it (see the module
    /// documentation).
    durable_len: u64,
    next_seq: u64,
    last_sync: Instant,
}

impl WalWriter {
    /// Creates a new, empty log (the caller fsyncs the directory).
    pub fn create(io: &dyn Dir, dir: &Path, number: u64, next_seq: u64) -> Result<Self, IoError> {
        let path = dir.join(wal_file_name(number));
        let file = io
            .create_new(&path)
            .map_err(|e| IoError::at(&path, "create", e))?;
        Ok(Self::from_parts(file, path, number, 0, next_seq))
    }

    /// Reopens an existing log for appending after its first `valid_len` bytes: a dropped
    /// tail past them is cut off, and the rest fsynced (after a killed process it may exist
    /// only in the page cache, and the records appended next claim it durable).
    pub fn reopen(
        io: &dyn Dir,
        dir: &Path,
        number: u64,
        valid_len: u64,
        next_seq: u64,
    ) -> Result<Self, IoError> {
        let path = dir.join(wal_file_name(number));
        let mut file = io
            .open_append(&path)
            .map_err(|e| IoError::at(&path, "open", e))?;
        let len = file.size().map_err(|e| IoError::at(&path, "stat", e))?;
        if len != valid_len {
            file.set_len(valid_len)
                .map_err(|e| IoError::at(&path, "truncate the dropped tail of", e))?;
        }
        file.sync_all()
            .map_err(|e| IoError::at(&path, "fsync", e))?;
        Ok(Self::from_parts(file, path, number, valid_len, next_seq))
    }

    /// A writer at the end of a file whose `len` bytes are durable.
    fn from_parts(
        file: Box<dyn DirFile>,
        path: PathBuf,
        number: u64,
        len: u64,
        next_seq: u64,
    ) -> Self {
        Self {
            file,
            path,
            number,
            len,
            durable_len: len,
            next_seq,
            last_sync: Instant::now(),
        }
    }

    pub fn number(&self) -> u64 {
        self.number
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    /// Sequence number the next record will carry.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Appends one record (`body` starts with the kind byte, and passed
    /// [`check_body_len`](crate::format::wal::check_body_len)) in a single write.
    pub fn append(&mut self, body: &[u8]) -> Result<(), IoError> {
        let len = PAYLOAD_PREFIX + body.len();
        let mut frame = Vec::with_capacity(HEADER_LEN + len);
        frame.extend_from_slice(&(len as u32).to_le_bytes());
        frame.extend_from_slice(&[0; 4]);
        frame.extend_from_slice(&self.next_seq.to_le_bytes());
        frame.extend_from_slice(&self.durable_len.to_le_bytes());
        frame.extend_from_slice(body);
        let crc = crc_extend(crc_extend(0, &frame[..4]), &frame[HEADER_LEN..]);
        frame[4..8].copy_from_slice(&crc.to_le_bytes());
        self.file
            .append(&frame)
            .map_err(|e| IoError::at(&self.path, "append to", e))?;
        self.len += frame.len() as u64;
        self.next_seq += 1;
        Ok(())
    }

    /// fsyncs the log if anything was appended since the last sync.
    pub fn sync(&mut self) -> Result<(), IoError> {
        if self.len > self.durable_len {
            self.file
                .sync_data()
                .map_err(|e| IoError::at(&self.path, "fsync", e))?;
            self.durable_len = self.len;
        }
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Time since the last fsync.
    pub fn since_sync(&self) -> std::time::Duration {
        self.last_sync.elapsed()
    }
}
