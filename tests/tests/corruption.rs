//! Damaged files never panic, hang or silently return wrong data. For every file kind of a
//! database (WAL, MANIFEST, CURRENT, coarse and fine vectors, metadata, tombstones, partitions) the test
//! truncates the file at many lengths and flips bits at many offsets, then opens the copy
//! read-only (cheap and full checks) and read-write. Each attempt must either fail with an
//! error that names the damaged file, or return exactly the original data — where cheap
//! checks let damage in a vector file through, `verify(Full)` must name the file.
//!
//! The WAL is special: a damaged or cut final record is a torn write, which recovery drops,
//! so a damaged WAL may also yield the state after any prefix of its records.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use hivlp_storage::{ElemType, FOOTER_LEN, OpenError, Store, StoreOptions, VerifyLevel, verify};
use hivlp_tests::{StoreImage, copy_dir, random_rows, read_view, small_schema};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const SEED: u64 = 0xC0FFEE;
const PROPERTY: &str = "engine.state";
/// Damaged copies checked at once.
const WORKERS: usize = 8;

/// What a successful open may show: rows and the one property the fixture sets.
#[derive(Debug, Clone, PartialEq)]
struct State {
    rows: StoreImage,
    property: Option<Vec<u8>>,
}

fn state_of(store: &Store) -> Result<State, String> {
    Ok(State {
        rows: read_view(&store.view())?,
        property: store.property(PROPERTY),
    })
}

/// Builds the fixture: two segments with tombstones, a property, and a WAL holding inserts and
/// a delete. Returns the states after each prefix of the final WAL's records (the last one is
/// the full state).
fn build_fixture(dir: &Path) -> Vec<State> {
    // f16 fine and i8 coarse: vector files with scales after the rows, padded rows.
    let schema = small_schema(ElemType::F16, ElemType::I8);
    // Both segments are partitioned (one partition each at this size): `.parts` files too.
    let options = StoreOptions {
        partition_min_rows: 16,
        ..StoreOptions::default()
    };
    let store = Store::create(dir, schema.clone(), options).unwrap();
    store.insert(random_rows(&schema, SEED, 0..30)).unwrap();
    store.insert(random_rows(&schema, SEED, 30..50)).unwrap();
    store.flush().unwrap();
    store.insert(random_rows(&schema, SEED, 50..90)).unwrap();
    store.flush().unwrap();
    assert_eq!(store.delete(&[3, 4, 31, 60, 61, 89]).unwrap(), 6);
    store
        .set_property(PROPERTY, b"projection v1".to_vec())
        .unwrap();
    store.flush().unwrap();
    // From here on the operations live only in the WAL.
    let mut states = vec![state_of(&store).unwrap()];
    store.insert(random_rows(&schema, SEED, 90..100)).unwrap();
    states.push(state_of(&store).unwrap());
    store.delete(&[5, 62, 95]).unwrap();
    states.push(state_of(&store).unwrap());
    store
        .set_property(PROPERTY, b"projection v2".to_vec())
        .unwrap();
    states.push(state_of(&store).unwrap());
    store.insert(random_rows(&schema, SEED, 100..103)).unwrap();
    states.push(state_of(&store).unwrap());
    drop(store);
    // Reopening must give the same state (and removes nothing the fixture needs).
    let store = Store::open(dir, StoreOptions::default()).unwrap();
    assert_eq!(&state_of(&store).unwrap(), states.last().unwrap());
    states
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Wal,
    Manifest,
    Current,
    Coarse,
    Fine,
    Meta,
    Tombstones,
    Partitions,
}

fn kind_of(name: &str) -> Option<Kind> {
    Some(match name {
        "CURRENT" => Kind::Current,
        n if n.starts_with("MANIFEST-") => Kind::Manifest,
        n if n.starts_with("wal-") => Kind::Wal,
        n if n.ends_with(".coarse") => Kind::Coarse,
        n if n.ends_with(".fine") => Kind::Fine,
        n if n.ends_with(".meta") => Kind::Meta,
        n if n.contains(".del-") => Kind::Tombstones,
        n if n.ends_with(".parts") => Kind::Partitions,
        _ => return None,
    })
}

#[derive(Debug, Clone, Copy)]
enum Damage {
    Truncate(usize),
    Flip { offset: usize, mask: u8 },
}

/// How one damaged copy behaved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    /// Every open failed with an error naming the file.
    Rejected,
    /// Some open returned the original data.
    Intact,
    /// The WAL lost its damaged tail: an earlier state.
    TornTail,
    /// A cheap open returned different data, and `verify(Full)` named the file.
    CaughtByVerify,
}

fn damaged_copy(pristine: &Path, work: &Path, file: &str, damage: Damage) {
    copy_dir(pristine, work).unwrap();
    let path = work.join(file);
    let mut bytes = fs::read(&path).unwrap();
    match damage {
        Damage::Truncate(len) => bytes.truncate(len),
        Damage::Flip { offset, mask } => bytes[offset] ^= mask,
    }
    fs::write(&path, bytes).unwrap();
}

fn names(err: &OpenError, file: &str) -> bool {
    match err {
        OpenError::Corruption(c) => c.file.file_name().is_some_and(|n| n == file),
        other => other.to_string().contains(file),
    }
}

/// Opens the damaged copy three ways and classifies the result; `Err` describes a failure.
fn check_copy(
    work: &Path,
    file: &str,
    damage: Damage,
    states: &[State],
) -> Result<Outcome, String> {
    let full = states.len() - 1;
    // Which of the allowed states `state` is: the full one, or for the WAL the state before
    // the damaged record (a cut file may lose several records; a flipped byte only the last
    // one, as any earlier damaged record is followed by valid ones).
    let which = |state: &State| -> Option<usize> {
        let allowed: Vec<usize> = match (kind_of(file), damage) {
            (Some(Kind::Wal), Damage::Truncate(_)) => (0..=full).collect(),
            (Some(Kind::Wal), Damage::Flip { .. }) => vec![full - 1, full],
            _ => vec![full],
        };
        allowed.into_iter().rev().find(|&i| &states[i] == state)
    };
    let mut outcomes = Vec::new();
    let opens = [
        ("read-only, cheap checks", true, VerifyLevel::Cheap),
        ("read-only, full checks", true, VerifyLevel::Full),
        ("read-write, cheap checks", false, VerifyLevel::Cheap),
    ];
    let verify_names_file = || match verify(work, VerifyLevel::Full) {
        Err(e) => Ok(names(&e, file)),
        Ok(r) if r.is_ok() => Ok(false),
        Ok(r) => {
            if r.problems
                .iter()
                .any(|p| p.file.file_name().is_some_and(|n| n == file))
            {
                Ok(true)
            } else {
                Err(format!("verify(Full) blames other files: {:?}", r.problems))
            }
        }
    };
    for (how, read_only, level) in opens {
        let options = StoreOptions {
            read_only,
            verify: level,
            ..StoreOptions::default()
        };
        let outcome = match Store::open(work, options) {
            Err(e) if names(&e, file) => Outcome::Rejected,
            Err(e) => return Err(format!("{how}: error does not name {file}: {e}")),
            Ok(store) => {
                let state = state_of(&store).map_err(|e| format!("{how}: {e}"))?;
                match which(&state) {
                    Some(i) if i == full => Outcome::Intact,
                    Some(_) => Outcome::TornTail,
                    None if level == VerifyLevel::Cheap => {
                        drop(store);
                        if !verify_names_file()? {
                            return Err(format!(
                                "{how}: opened with wrong data, and verify(Full) does not name \
                                 {file}"
                            ));
                        }
                        Outcome::CaughtByVerify
                    }
                    None => return Err(format!("{how}: opened with wrong data")),
                }
            }
        };
        // `verify(Full)` agrees with a full-check open (before a writer repairs anything).
        if level == VerifyLevel::Full {
            let flagged = verify_names_file()?;
            if flagged != (outcome == Outcome::Rejected) {
                return Err(format!(
                    "{how} gave {outcome:?} but verify(Full) {} {file}",
                    if flagged { "names" } else { "does not name" }
                ));
            }
        }
        outcomes.push(outcome);
    }
    Ok(outcomes.into_iter().max().unwrap_or(Outcome::Rejected))
}

/// Runs `check_copy` on a thread so that a hang or a panic is reported as a failure of this
/// damage (the panic message itself goes to stderr).
fn check_with_deadline(
    work: PathBuf,
    file: String,
    damage: Damage,
    states: Vec<State>,
) -> Result<Outcome, String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(check_copy(&work, &file, damage, &states));
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(result) => result,
        Err(mpsc::RecvTimeoutError::Timeout) => Err("hang: no answer within 30 s".into()),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err("panicked".into()),
    }
}

/// Offsets to damage in a file of `len` bytes: all of a small file; otherwise the first 16 and
/// last 64 bytes (headers, descriptors, footers) and `samples` random offsets in between.
fn offsets(len: usize, samples: usize, rng: &mut StdRng) -> Vec<usize> {
    if len <= 256 {
        return (0..len).collect();
    }
    let mut out: Vec<usize> = (0..16).chain(len - 64..len).collect();
    out.extend((0..samples).map(|_| rng.random_range(16..len - 64)));
    out.sort_unstable();
    out.dedup();
    out
}

fn truncations(len: usize, rng: &mut StdRng) -> Vec<usize> {
    let mut out = vec![0, 1, len / 2, len.saturating_sub(1)];
    out.extend([FOOTER_LEN, FOOTER_LEN + 1, FOOTER_LEN + 8].map(|f| len.saturating_sub(f)));
    out.extend((0..12).map(|_| rng.random_range(0..len.max(1))));
    out.sort_unstable();
    out.dedup();
    out.retain(|&l| l < len);
    out
}

#[test]
fn damaged_files_are_reported_never_misread() {
    let tmp = tempfile::tempdir().unwrap();
    let pristine = tmp.path().join("pristine");
    let states = build_fixture(&pristine);
    let mut rng = StdRng::seed_from_u64(SEED);
    let samples: usize = std::env::var("HIVLP_CORRUPTION_SAMPLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24);
    let started = Instant::now();
    let mut files: Vec<(Kind, String)> = fs::read_dir(&pristine)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            kind_of(&name).map(|k| (k, name))
        })
        .collect();
    files.sort();
    let mut cases: Vec<(Kind, String, Damage)> = Vec::new();
    for (kind, file) in &files {
        let len = fs::metadata(pristine.join(file)).unwrap().len() as usize;
        for len in truncations(len, &mut rng) {
            cases.push((*kind, file.clone(), Damage::Truncate(len)));
        }
        // The WAL's frames are where torn-tail and corruption logic meet: sample it more.
        let n = if *kind == Kind::Wal {
            samples * 4
        } else {
            samples
        };
        for offset in offsets(len, n, &mut rng) {
            let mask = if rng.random_bool(0.5) {
                1 << rng.random_range(0..8)
            } else {
                0xFF
            };
            cases.push((*kind, file.clone(), Damage::Flip { offset, mask }));
        }
    }
    // Rejections are mostly waiting (a read-only open retries, in case a writer was swapping
    // files), so the cases run on more threads than there are cores.
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Result<(Kind, Outcome), String>>> = Mutex::new(Vec::new());
    thread::scope(|scope| {
        for _ in 0..WORKERS {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((kind, file, damage)) = cases.get(i) else {
                        break;
                    };
                    let work = tmp.path().join(format!("case-{i}"));
                    damaged_copy(&pristine, &work, file, *damage);
                    let result =
                        check_with_deadline(work.clone(), file.clone(), *damage, states.clone())
                            .map(|outcome| (*kind, outcome))
                            .map_err(|e| format!("{file} {damage:?}: {e}"));
                    results.lock().unwrap().push(result);
                    let _ = fs::remove_dir_all(&work);
                }
            });
        }
    });
    let mut tally: BTreeMap<(Kind, Outcome), usize> = BTreeMap::new();
    let mut failures = Vec::new();
    for result in results.into_inner().unwrap() {
        match result {
            Ok(key) => *tally.entry(key).or_default() += 1,
            Err(e) => failures.push(e),
        }
    }
    let case = cases.len();
    println!(
        "corruption test: {case} damaged copies of {} files in {:.1} s",
        files.len(),
        started.elapsed().as_secs_f64()
    );
    for ((kind, outcome), n) in &tally {
        println!("  {kind:?}: {outcome:?} ×{n}");
    }
    for kind in [
        Kind::Wal,
        Kind::Manifest,
        Kind::Current,
        Kind::Coarse,
        Kind::Fine,
        Kind::Meta,
        Kind::Tombstones,
        Kind::Partitions,
    ] {
        assert!(
            tally.keys().any(|(k, _)| *k == kind),
            "fixture has no {kind:?} file: {files:?}"
        );
    }
    assert!(
        failures.is_empty(),
        "{} of {case} damaged copies misbehaved:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
