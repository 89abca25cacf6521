//! Acknowledged writes survive `kill -9`: a child process (`storage-child crash-writer`) inserts,
//! deletes, flushes and compacts in `Sync` mode, printing each operation before it starts and
//! after it is acknowledged; the parent SIGKILLs it at random moments (some during recovery,
//! most while writing) and then checks the reopened database against a model built from the
//! acknowledgements: every acknowledged row is there with exact bytes, every acknowledged
//! delete stays deleted, and the one operation in flight is either wholly applied or absent.
//!
//! Rounds: 50 by default, `HIVLP_CRASH_ROUNDS` for more; `HIVLP_CRASH_SEED` replays a run.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use hivlp_storage::{ElemType, Schema, Store, StoreOptions, VerifyLevel, verify};
use hivlp_tests::{StoreImage, diff_images, expected_row, random_row, read_view, small_schema};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[derive(Debug, Clone, PartialEq)]
enum Op {
    Insert { first: u64, count: u64 },
    Delete(Vec<u64>),
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
        Op::Flush | Op::Compact => {}
    }
}

/// What one child run printed: the acknowledged operations and the one in flight, if any.
#[derive(Debug, Default)]
struct RunLog {
    opened: bool,
    acked: Vec<Op>,
    in_flight: Option<Op>,
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
            _ => panic!("unexpected child output {line:?}"),
        }
    }
    log
}

/// Runs the writer until it is killed, `delay` after it printed `opened` (or after spawning when
/// `during_open`). Returns the complete lines it printed.
fn run_and_kill(db: &Path, seed: u64, during_open: bool, delay: Duration) -> Vec<String> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_storage-child"))
        .arg("crash-writer")
        .arg(db)
        .arg(seed.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn storage-child");
    let stdout = child.stdout.take().expect("piped stdout");
    let (opened_tx, opened_rx) = mpsc::channel();
    let reader = thread::spawn(move || {
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
    if !during_open {
        // The child may die on its own (a bug); then the channel closes and we go on to report it.
        let _ = opened_rx.recv_timeout(Duration::from_secs(60));
    }
    thread::sleep(delay);
    let _ = child.kill();
    let status = child.wait().expect("wait for child");
    let lines = reader.join().expect("stdout reader");
    if status.signal() != Some(9) {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        panic!("child ended on its own ({status}) before the kill: {err}\nstdout: {lines:?}");
    }
    lines
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
    let (mut in_flight_applied, mut in_flight_dropped) = (0usize, 0usize);
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
                Op::Delete(_) => {}
            }
            apply(&mut model, op, &schema, seed);
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
        let read_only = round % 2 == 0;
        let options = StoreOptions {
            read_only,
            ..StoreOptions::default()
        };
        let store = Store::open(&db, options)
            .unwrap_or_else(|e| panic!("round {round} (seed {seed}): open after kill: {e}"));
        let image =
            read_view(&store.view()).unwrap_or_else(|e| panic!("round {round} (seed {seed}): {e}"));
        if diff_images(&model, &image).is_none() {
            if matches!(log.in_flight, Some(Op::Insert { .. } | Op::Delete(_))) {
                in_flight_dropped += 1;
            }
        } else {
            let mut with_in_flight = model.clone();
            if let Some(op) = &log.in_flight {
                apply(&mut with_in_flight, op, &schema, seed);
            }
            if let Some(diff) = diff_images(&with_in_flight, &image) {
                panic!(
                    "round {round} (seed {seed}): recovered state matches neither the \
                     acknowledged writes nor them plus the write in flight ({:?}): {diff}",
                    log.in_flight
                );
            }
            in_flight_applied += 1;
            model = with_in_flight;
        }
        if let Some(max) = model.keys().next_back() {
            assert!(
                store.next_id() > *max,
                "round {round}: next_id would reuse ids"
            );
        }
    }
    let report = verify(&db, VerifyLevel::Full).expect("full verify after the last kill");
    println!(
        "crash test: {rounds} rounds in {:.1} s ({kills_in_open} killed during open); \
         {acked_ops} acknowledged operations ({acked_rows} rows inserted, {acked_maintenance} \
         flushes/compactions); in-flight writes recovered {in_flight_applied}, dropped \
         {in_flight_dropped}; final {} live rows in {} segments; full verify: {} files ok",
        started.elapsed().as_secs_f64(),
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
}
