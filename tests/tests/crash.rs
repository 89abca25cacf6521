//! Acknowledged writes survive `kill -9`: a child process (`storage-child crash-writer`) inserts,
//! deletes, updates metadata, flushes and compacts in `Sync` mode, printing each operation before it starts and
//! after it is acknowledged; the parent SIGKILLs it at random moments (some during recovery,
//! most while writing) and then checks the reopened database against a model built from the
//! acknowledgements: every acknowledged row is there with exact bytes, every acknowledged
//! delete stays deleted, every acknowledged update shows its metadata, caption and field
//! (with the row's vectors unchanged), and the one operation in flight is either wholly
//! applied or absent.
//!
//! Rounds: 50 by default, `HIVLP_CRASH_ROUNDS` for more; `HIVLP_CRASH_SEED` replays a run.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use hivlp_storage::{ElemType, Schema, Store, StoreOptions, VerifyLevel, verify};
use hivlp_tests::{
    StoreImage, check_tag_fields, diff_images, expected_row, random_row, read_view, small_schema,
    updated_meta,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[derive(Debug, Clone, PartialEq)]
enum Op {
    Insert { first: u64, count: u64 },
    Delete(Vec<u64>),
    Update { id: u64, tag: u32 },
    Flush,
    Compact,
}

fn parse_op(words: &[&str]) -> Op {
    let num = |w: &str| {
        w.parse::<u64>()
            .unwrap_or_else(|e| panic!("bad number {w:?}: {e}"))
    };
    match words {
        ["insert", first, count] => Op::Insert {
            first: num(first),
            count: num(count),
        },
        ["delete", ids @ ..] => Op::Delete(ids.iter().map(|w| num(w)).collect()),
        ["update", id, tag] => Op::Update {
            id: num(id),
            tag: num(tag) as u32,
        },
        ["flush"] => Op::Flush,
        ["compact"] => Op::Compact,
        _ => panic!("unknown operation {words:?}"),
    }
}

fn apply(model: &mut StoreImage, op: &Op, schema: &Schema, seed: u64) {
    match op {
        Op::Insert { first, count } => {
            for id in *first..first + count {
                let row = random_row(schema, seed, id);
                assert!(
                    model.insert(id, expected_row(schema, &row)).is_none(),
                    "id {id} reused"
                );
            }
        }
        Op::Delete(ids) => {
            for id in ids {
                model.remove(id);
            }
        }
        Op::Update { id, tag } => {
            let row = model
                .get_mut(id)
                .unwrap_or_else(|| panic!("update of id {id}, which is not live"));
            let (caption, metadata) = updated_meta(*tag);
            row.caption = Some(caption);
            row.metadata = metadata;
        }
        Op::Flush | Op::Compact => {}
    }
}

/// What one child run printed: the acknowledged operations and the one in flight, if any.
#[derive(Debug, Default)]
struct RunLog {
    opened: bool,
    acked: Vec<Op>,
    in_flight: Option<Op>,
    failed_maintenance: usize,
}

fn parse_log(lines: &[String]) -> RunLog {
    let mut log = RunLog::default();
    for line in lines {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["opened"] => log.opened = true,
            ["begin", op @ ..] => log.in_flight = Some(parse_op(op)),
            ["ack", op @ ..] => {
                let op = parse_op(op);
                assert_eq!(
                    log.in_flight.take().as_ref(),
                    Some(&op),
                    "ack without begin"
                );
                log.acked.push(op);
            }
            // A flush or compaction that failed changed nothing the model tracks.
            ["fail", op @ ..] => {
                let op = parse_op(op);
                assert_eq!(
                    log.in_flight.take().as_ref(),
                    Some(&op),
                    "fail without begin"
                );
                log.failed_maintenance += 1;
            }
            _ => panic!("unexpected child output {line:?}"),
        }
    }
    log
}

/// A running writer child and the thread collecting its complete stdout lines.
struct Writer {
    child: Child,
    lines: thread::JoinHandle<Vec<String>>,
    opened: mpsc::Receiver<()>,
}

fn spawn_writer(mut command: Command) -> Writer {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn storage-child");
    let stdout = child.stdout.take().expect("piped stdout");
    let (opened_tx, opened) = mpsc::channel();
    let lines = thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut lines = Vec::new();
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                // A line cut by the kill was not acknowledged: the child dies before finishing it.
                Ok(_) if buf.last() != Some(&b'\n') => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf).trim_end().to_owned();
                    if line == "opened" {
                        let _ = opened_tx.send(());
                    }
                    lines.push(line);
                }
            }
        }
        lines
    });
    Writer {
        child,
        lines,
        opened,
    }
}

fn writer_command(db: &Path, seed: u64) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_storage-child"));
    command.arg("crash-writer").arg(db).arg(seed.to_string());
    command
}

fn stderr_of(child: &mut Child) -> String {
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    err
}

/// Runs the writer until it is killed, `delay` after it printed `opened` (or after spawning when
/// `during_open`). Returns the complete lines it printed.
fn run_and_kill(db: &Path, seed: u64, during_open: bool, delay: Duration) -> Vec<String> {
    let mut w = spawn_writer(writer_command(db, seed));
    if !during_open {
        // The child may die on its own (a bug); then the channel closes and we go on to report it.
        let _ = w.opened.recv_timeout(Duration::from_secs(60));
    }
    thread::sleep(delay);
    let _ = w.child.kill();
    let status = w.child.wait().expect("wait for child");
    let lines = w.lines.join().expect("stdout reader");
    if status.signal() != Some(9) {
        let err = stderr_of(&mut w.child);
        panic!("child ended on its own ({status}) before the kill: {err}\nstdout: {lines:?}");
    }
    lines
}

/// Counts of what recovery did with the write in flight.
#[derive(Debug, Default)]
struct InFlight {
    applied: usize,
    dropped: usize,
}

/// Opens the database after a child died and checks it against `model` (the acknowledged
/// writes so far, updated with this run's `log`): equal to it, or to it plus the write that was
/// in flight. `model` becomes whichever matched.
fn check_recovery(
    db: &Path,
    what: &str,
    read_only: bool,
    (schema, seed): (&Schema, u64),
    model: &mut StoreImage,
    log: &RunLog,
    in_flight: &mut InFlight,
) {
    for op in &log.acked {
        apply(model, op, schema, seed);
    }
    let options = StoreOptions {
        read_only,
        ..StoreOptions::default()
    };
    let store = Store::open(db, options).unwrap_or_else(|e| panic!("{what}: open: {e}"));
    let image = read_view(&store.view()).unwrap_or_else(|e| panic!("{what}: {e}"));
    check_tag_fields(&store.view()).unwrap_or_else(|e| panic!("{what}: {e}"));
    if diff_images(model, &image).is_none() {
        if matches!(
            log.in_flight,
            Some(Op::Insert { .. } | Op::Delete(_) | Op::Update { .. })
        ) {
            in_flight.dropped += 1;
        }
    } else {
        let mut with_in_flight = model.clone();
        if let Some(op) = &log.in_flight {
            apply(&mut with_in_flight, op, schema, seed);
        }
        if let Some(diff) = diff_images(&with_in_flight, &image) {
            panic!(
                "{what}: recovered state matches neither the acknowledged writes nor them plus \
                 the write in flight ({:?}): {diff}",
                log.in_flight
            );
        }
        in_flight.applied += 1;
        *model = with_in_flight;
    }
    if let Some(max) = model.keys().next_back() {
        assert!(store.next_id() > *max, "{what}: next_id would reuse ids");
    }
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let rounds: usize = std::env::var("HIVLP_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let seed: u64 = std::env::var("HIVLP_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random);
    println!("crash test: {rounds} rounds, HIVLP_CRASH_SEED={seed}");
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("db");
    let schema = small_schema(ElemType::F32, ElemType::F32);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut model = StoreImage::new();
    let started = Instant::now();
    let (mut acked_ops, mut acked_rows, mut kills_in_open) = (0usize, 0u64, 0usize);
    let mut acked_updates = 0usize;
    let mut in_flight = InFlight::default();
    let mut acked_maintenance = 0usize;
    for round in 0..rounds {
        let during_open = round > 0 && rng.random_bool(0.15);
        let delay = if during_open {
            Duration::from_micros(rng.random_range(0..20_000))
        } else {
            Duration::from_micros(rng.random_range(0..150_000))
        };
        let lines = run_and_kill(&db, seed, during_open, delay);
        let log = parse_log(&lines);
        if !log.opened {
            kills_in_open += 1;
        }
        for op in &log.acked {
            acked_ops += 1;
            match op {
                Op::Insert { count, .. } => acked_rows += count,
                Op::Flush | Op::Compact => acked_maintenance += 1,
                Op::Update { .. } => acked_updates += 1,
                Op::Delete(_) => {}
            }
        }
        if !db.join("CURRENT").exists() {
            // Killed before `create` finished: nothing was acknowledged, so there is nothing
            // to check yet (the next child creates the database again).
            assert!(
                model.is_empty() && !log.opened,
                "round {round}: database vanished"
            );
            continue;
        }
        check_recovery(
            &db,
            &format!("round {round} (seed {seed})"),
            round % 2 == 0,
            (&schema, seed),
            &mut model,
            &log,
            &mut in_flight,
        );
    }
    let report = verify(&db, VerifyLevel::Full).expect("full verify after the last kill");
    println!(
        "crash test: {rounds} rounds in {:.1} s ({kills_in_open} killed during open); \
         {acked_ops} acknowledged operations ({acked_rows} rows inserted, {acked_updates} \
         updates, {acked_maintenance} flushes/compactions); in-flight writes recovered {}, dropped {}; final {} live rows \
         in {} segments; full verify: {} files ok",
        started.elapsed().as_secs_f64(),
        in_flight.applied,
        in_flight.dropped,
        model.len(),
        report.segments,
        report.files_checked.len()
    );
    assert!(
        report.is_ok(),
        "verify found problems: {:?}",
        report.problems
    );
    assert!(acked_rows > 0, "the child never got to write");
    assert!(acked_updates > 0, "the child never got to update");
    assert!(
        report
            .files_checked
            .iter()
            .any(|f| f.extension().is_some_and(|e| e == "parts")),
        "no partition file was written: the kills did not cover them"
    );
}

/// Writes that fail with an I/O error (here: a file size limit, `ulimit -f`, so a WAL append, a
/// segment write or a manifest write fails part-way, like a full disk) lose nothing that was
/// acknowledged, and the child reports the error instead of panicking. Rounds:
/// `HIVLP_IO_ERROR_ROUNDS` (default 20).
#[test]
fn failed_writes_lose_nothing_acknowledged() {
    let rounds: usize = std::env::var("HIVLP_IO_ERROR_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("HIVLP_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random);
    println!("I/O error test: {rounds} rounds, HIVLP_CRASH_SEED={seed}");
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("db");
    let schema = small_schema(ElemType::F32, ElemType::F32);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut model = StoreImage::new();
    let mut in_flight = InFlight::default();
    let (mut failed, mut timed_out, mut acked) = (0usize, 0usize, 0usize);
    let mut failed_maintenance = 0;
    let mut failed_ops: BTreeMap<&'static str, usize> = BTreeMap::new();
    for round in 0..rounds {
        // File size limit in 512-byte blocks, 1 KiB to 128 KiB: small limits fail WAL appends
        // and flushes, larger ones compactions (which the child survives and goes on).
        let blocks = if rng.random_bool(0.5) {
            rng.random_range(2..=48u32)
        } else {
            rng.random_range(48..=256u32)
        };
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg("trap '' XFSZ; ulimit -f \"$1\" && exec \"$2\" crash-writer \"$3\" \"$4\"")
            .arg("sh")
            .arg(blocks.to_string())
            .arg(env!("CARGO_BIN_EXE_storage-child"))
            .arg(&db)
            .arg(seed.to_string());
        let mut w = spawn_writer(command);
        let deadline = Instant::now() + Duration::from_secs(1);
        let status = loop {
            if let Some(status) = w.child.try_wait().unwrap() {
                break Some(status);
            }
            if Instant::now() > deadline {
                let _ = w.child.kill();
                w.child.wait().unwrap();
                break None;
            }
            thread::sleep(Duration::from_millis(5));
        };
        let lines = w.lines.join().expect("stdout reader");
        let err = stderr_of(&mut w.child);
        match status {
            None => timed_out += 1,
            Some(s) => {
                assert!(
                    s.code() == Some(1) && err.contains("File too large"),
                    "round {round}: the writer should fail with the I/O error, got {s}: {err}"
                );
                failed += 1;
            }
        }
        let log = parse_log(&lines);
        acked += log.acked.len();
        failed_maintenance += log.failed_maintenance;
        if status.is_some() {
            let kind = match log.in_flight {
                None => "open",
                Some(Op::Insert { .. }) => "insert",
                Some(Op::Delete(_)) => "delete",
                Some(Op::Update { .. }) => "update",
                Some(Op::Flush) => "flush",
                Some(Op::Compact) => "compact",
            };
            *failed_ops.entry(kind).or_default() += 1;
        }
        if !db.join("CURRENT").exists() {
            assert!(
                model.is_empty() && log.acked.is_empty(),
                "round {round}: database vanished"
            );
            continue;
        }
        check_recovery(
            &db,
            &format!(
                "I/O error round {round} (limit {} KiB, seed {seed}): {err}",
                blocks / 2
            ),
            false,
            (&schema, seed),
            &mut model,
            &log,
            &mut in_flight,
        );
    }
    let report = verify(&db, VerifyLevel::Full).expect("full verify");
    println!(
        "I/O error test: {rounds} rounds, {failed} ended by the I/O error (failing operation: \
         {failed_ops:?}), {timed_out} ran to the time limit; {failed_maintenance} failed \
         flushes/compactions survived; {acked} acknowledged operations; failed writes \
         recovered {}, dropped {}; final {} live rows",
        in_flight.applied,
        in_flight.dropped,
        model.len()
    );
    assert!(
        report.is_ok(),
        "verify found problems: {:?}",
        report.problems
    );
    assert!(failed > 0, "no round hit the file size limit");
}
