//! Child process for the cross-process storage tests (`tests/tests/crash.rs`,
//! `tests/tests/concurrency.rs`, `tests/tests/multiprocess.rs`). Every line it prints is flushed before it goes on, so a parent
//! that kills it knows exactly which operations were acknowledged.
//!
//! ```text
//! storage-child crash-writer <dir> <seed>   open (or create) and write until killed
//! storage-child try-open <dir>              open for writing once; print `opened` or `locked`
//! storage-child hold-lock <dir>             open for writing, print `opened`, wait for stdin EOF
//! storage-child read-loop <dir> <seed> <ms> open read-only and check every row, again and
//!                                           again for <ms> milliseconds; print
//!                                           `read <opens> <rows>`
//! ```
//!
//! `crash-writer` protocol, one line per step: `opened`, then for each operation
//! `begin <op>` before the call and `ack <op>` after it returned `Ok`, where `<op>` is
//! `insert <first id> <count>`, `delete <id>…`, `update <id> <tag>`, `flush` or `compact`; a
//! flush or compaction that fails prints `fail <op>` and the writer goes on. Rows are
//! [`hivlp_tests::random_row`]`(schema, seed, id)`; an update sets the metadata and caption
//! [`hivlp_tests::updated_meta`]`(tag)`.

use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use hivlp_storage::{
    Durability, ElemType, MergeAll, MetadataUpdate, OpenError, Store, StoreOptions,
};
use hivlp_tests::{
    check_tag_fields, is_written_row, random_rows, read_view, small_schema, updated_meta,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Rows per memtable before an automatic flush: small, so that kills also land in flushes.
pub const CRASH_MEMTABLE_ROWS: usize = 48;

/// Rows of a modality from which a written segment gets a partition file: below the memtable
/// size, so that kills also land while flushes and compactions write `.parts` files.
pub const CRASH_PARTITION_MIN_ROWS: usize = 16;

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    // A parent that stopped reading is gone; nothing useful to do with the error.
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

/// A failed flush or compaction changes no data, so the writer reports it and goes on (an
/// I/O failure poisons the handle: the next insert or delete then fails and ends the run).
fn failed(op: &str, e: &dyn std::fmt::Display) {
    eprintln!("storage-child: {op}: {e}");
    say(&format!("fail {op}"));
}

fn writer_options() -> StoreOptions {
    StoreOptions {
        durability: Durability::Sync,
        memtable_rows: CRASH_MEMTABLE_ROWS,
        partition_min_rows: CRASH_PARTITION_MIN_ROWS,
        ..StoreOptions::default()
    }
}

fn crash_writer(dir: &Path, seed: u64) -> Result<(), String> {
    let schema = small_schema(ElemType::F32, ElemType::F32);
    let store = if dir.join("CURRENT").exists() {
        Store::open(dir, writer_options())
    } else {
        Store::create(dir, schema.clone(), writer_options())
    }
    .map_err(|e| format!("open: {e}"))?;
    say("opened");
    let mut rng = StdRng::seed_from_u64(seed ^ store.next_id());
    loop {
        let roll = rng.random_range(0..100u32);
        if roll < 70 {
            let first = store.next_id();
            let count = rng.random_range(1..=6u64);
            say(&format!("begin insert {first} {count}"));
            store
                .insert(random_rows(&schema, seed, first..first + count))
                .map_err(|e| format!("insert: {e}"))?;
            say(&format!("ack insert {first} {count}"));
        } else if roll < 90 {
            let view = store.view();
            let delete = roll < 80;
            let live: Vec<u64> = view
                .sources()
                .iter()
                .flat_map(|s| (0..s.rows()).filter(|&r| !s.is_deleted(r)).map(|r| s.id(r)))
                .collect();
            if live.is_empty() {
                continue;
            }
            if !delete {
                let id = live[rng.random_range(0..live.len())];
                let tag: u32 = rng.random();
                let (caption, metadata) = updated_meta(tag);
                let update = MetadataUpdate {
                    caption: Some(Some(caption)),
                    metadata: Some(metadata),
                    ..MetadataUpdate::default()
                };
                say(&format!("begin update {id} {tag}"));
                match store.update(id, update) {
                    Ok(true) => say(&format!("ack update {id} {tag}")),
                    Ok(false) => return Err(format!("update: live id {id} not found")),
                    Err(e) => return Err(format!("update: {e}")),
                }
                continue;
            }
            let ids: Vec<u64> = (0..rng.random_range(1..=3))
                .map(|_| live[rng.random_range(0..live.len())])
                .collect();
            let list = ids.iter().map(u64::to_string).collect::<Vec<_>>().join(" ");
            say(&format!("begin delete {list}"));
            store.delete(&ids).map_err(|e| format!("delete: {e}"))?;
            say(&format!("ack delete {list}"));
        } else if roll < 97 {
            say("begin flush");
            match store.flush() {
                Ok(()) => say("ack flush"),
                Err(e) => failed("flush", &e),
            }
        } else {
            say("begin compact");
            match store.compact(&MergeAll, None) {
                Ok(_) => say("ack compact"),
                Err(e) => failed("compact", &e),
            }
        }
    }
}

fn try_open(dir: &Path) -> Result<(), String> {
    match Store::open(dir, StoreOptions::default()) {
        Ok(_) => say("opened"),
        Err(OpenError::Locked { .. }) => say("locked"),
        Err(e) => return Err(format!("open: {e}")),
    }
    Ok(())
}

fn hold_lock(dir: &Path) -> Result<(), String> {
    let _store = Store::open(dir, StoreOptions::default()).map_err(|e| format!("open: {e}"))?;
    say("opened");
    let mut sink = Vec::new();
    std::io::stdin()
        .read_to_end(&mut sink)
        .map_err(|e| format!("stdin: {e}"))?;
    Ok(())
}

/// A reader beside a writer (of [`crash_writer`] rows): each read-only open must succeed and
/// show rows that are exactly [`hivlp_tests::random_row`]`(schema, seed, id)` (with an update's caption and
/// metadata, [`is_written_row`]) and fields that match them, whatever the writer flushes,
/// compacts, updates and deletes meanwhile (its compactions delete the field column files of
/// segments this reader maps).
fn read_loop(dir: &Path, seed: u64, run_for: Duration) -> Result<(), String> {
    let options = StoreOptions {
        read_only: true,
        ..StoreOptions::default()
    };
    let (started, mut opens, mut rows) = (Instant::now(), 0u64, 0u64);
    while opens == 0 || started.elapsed() < run_for {
        let store = Store::open(dir, options.clone())
            .map_err(|e| format!("read-only open {}: {e}", opens + 1))?;
        let image = read_view(&store.view()).map_err(|e| format!("open {}: {e}", opens + 1))?;
        check_tag_fields(&store.view()).map_err(|e| format!("open {}: {e}", opens + 1))?;
        for (&id, got) in &image {
            if !is_written_row(store.schema(), seed, id, got) {
                return Err(format!(
                    "open {}: row {id} is not the row written",
                    opens + 1
                ));
            }
        }
        opens += 1;
        rows += image.len() as u64;
    }
    say(&format!("read {opens} {rows}"));
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["crash-writer", dir, seed] => match seed.parse() {
            Ok(seed) => crash_writer(Path::new(dir), seed),
            Err(e) => Err(format!("seed: {e}")),
        },
        ["try-open", dir] => try_open(Path::new(dir)),
        ["hold-lock", dir] => hold_lock(Path::new(dir)),
        ["read-loop", dir, seed, ms] => match (seed.parse(), ms.parse()) {
            (Ok(seed), Ok(ms)) => read_loop(Path::new(dir), seed, Duration::from_millis(ms)),
            _ => Err(format!("read-loop: bad seed {seed:?} or duration {ms:?}")),
        },
        _ => Err(
            "usage: storage-child crash-writer <dir> <seed> | try-open <dir> | \
                  hold-lock <dir> | read-loop <dir> <seed> <ms>"
                .into(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("storage-child: {e}");
            ExitCode::FAILURE
        }
    }
}
