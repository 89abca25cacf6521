//! Concurrency stress of a `hivlp::Database` against a reference model. Writer threads insert
//! and delete, each in its own id range, so each writer's history is known exactly: every
//! operation it began, and how many of them returned. Reader threads run exact searches,
//! two-stage searches (with every row a candidate, which must then be exact too, and with the
//! default candidates) and `get`s; one thread flushes, compacts and snapshots in a loop.
//!
//! Each answer is checked against what the model allows at its moment, per id: a row whose
//! insert returned before the call started and whose delete had not begun by its end must be
//! there (in a search: if it scores above the last hit), with exact vectors, scores and
//! metadata; a row deleted before the call, or never inserted by its end, must not; a row
//! whose insert or delete was in flight may be either. Each snapshot is reopened and must
//! equal, per writer, the state after some prefix of its operations between the call and its
//! return, byte for byte. At the end the database, reopened, equals the whole history.
//!
//! Runs about 5 s; `HIVLP_STRESS_SECS` sets the duration.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use hivlp::{
    Database, Durability, ElemType, Embedding, Hit, Item, MAX_CANDIDATES, Options, Query,
    SearchParams, Target,
};
use hivlp_storage::{Row, Schema, Store, StoreOptions};
use hivlp_tests::{StoreImage, diff_images, expected_row, random_row, read_view, small_schema};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const SEED: u64 = 23;
const WRITERS: usize = 2;
const READERS: usize = 2;
/// Writer `w` uses ids from `w * ID_SPAN`; the row inserted before the threads start (which
/// fixes the database's coarse mode to "supplied") has its own range, index `WRITERS`.
const ID_SPAN: u64 = 1 << 40;
/// A writer deletes more once it holds this many live rows, so searches stay cheap however
/// long the run.
const LIVE_CAP: usize = 1_500;
const K: usize = 10;

fn schema() -> Schema {
    small_schema(ElemType::F32, ElemType::F32)
}

fn item(row: &Row) -> Item {
    let embedding = |t: &hivlp_storage::TierVectors| Embedding {
        fine: t.fine.clone(),
        coarse: Some(t.coarse.clone()),
    };
    Item {
        id: Some(row.id),
        caption: row.caption.clone(),
        uri: row.uri.clone(),
        metadata: row.metadata.clone(),
        image: row.image.as_ref().map(embedding),
        text: row.text.as_ref().map(embedding),
    }
}

#[derive(Debug, Clone)]
enum Op {
    Insert(Range<u64>),
    Delete(Vec<u64>),
}

/// Everything one writer began, in order, with indexes by id.
#[derive(Default)]
struct Log {
    ops: Vec<Op>,
    /// Index in `ops` of the insert of id `base + j`, by `j`.
    inserted_at: Vec<usize>,
    deleted_at: HashMap<u64, usize>,
    /// Rows inserted and not (yet) being deleted, after all of `ops`.
    live: HashMap<u64, Row>,
}

/// Whether a row must, must not or may be seen by a call during which the writer's first
/// `acked` operations had returned (when it started) and `begun` had started (when it ended).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Allowed {
    Present,
    Absent,
    Either,
}

impl Log {
    fn allowed(&self, base: u64, id: u64, acked: usize, begun: usize) -> Allowed {
        let inserted = usize::try_from(id - base)
            .ok()
            .and_then(|j| self.inserted_at.get(j).copied());
        let Some(i) = inserted.filter(|&i| i < begun) else {
            return Allowed::Absent;
        };
        match self.deleted_at.get(&id) {
            Some(&d) if d < acked => Allowed::Absent,
            Some(&d) if d < begun => Allowed::Either,
            _ if i < acked => Allowed::Present,
            _ => Allowed::Either,
        }
    }

    /// Ids live after the first `k` operations.
    fn state_at(&self, k: usize) -> BTreeSet<u64> {
        let mut ids: BTreeSet<u64> = self.live.keys().copied().collect();
        for op in self.ops[k..].iter().rev() {
            match op {
                Op::Insert(range) => range.clone().for_each(|id| {
                    ids.remove(&id);
                }),
                Op::Delete(deleted) => ids.extend(deleted),
            }
        }
        ids
    }

    /// Ids that must be present for a call within `(acked, begun)`, with their rows.
    fn must_be_present(&self, base: u64, acked: usize, begun: usize) -> Vec<Row> {
        let schema = schema();
        // Live now, or deleted by an operation that began after the call ended.
        let deleted_since = self.ops[begun..].iter().flat_map(|op| match op {
            Op::Delete(ids) => ids.clone(),
            Op::Insert(_) => Vec::new(),
        });
        self.live
            .keys()
            .copied()
            .chain(deleted_since)
            .filter(|&id| self.allowed(base, id, acked, begun) == Allowed::Present)
            .map(|id| {
                self.live
                    .get(&id)
                    .cloned()
                    .unwrap_or_else(|| random_row(&schema, SEED, id))
            })
            .collect()
    }
}

/// One writer's history as readers see it.
#[derive(Default)]
struct History {
    log: Mutex<Log>,
    /// How many of `log.ops` returned `Ok`.
    acked: AtomicUsize,
}

impl History {
    /// Records `op` as begun; the caller runs it, then calls [`History::ack`].
    fn begin(&self, op: Op, rows: &[Row]) {
        let mut log = self.log.lock().unwrap();
        let index = log.ops.len();
        match &op {
            Op::Insert(range) => {
                log.inserted_at.extend(range.clone().map(|_| index));
                log.live.extend(rows.iter().map(|r| (r.id, r.clone())));
            }
            Op::Delete(ids) => {
                for id in ids {
                    log.deleted_at.insert(*id, index);
                    log.live.remove(id);
                }
            }
        }
        log.ops.push(op);
    }

    fn ack(&self) {
        self.acked.fetch_add(1, Ordering::SeqCst);
    }
}

/// Every writer's history plus the counts of what was checked.
struct Model {
    histories: Vec<History>,
    counts: Mutex<Vec<(&'static str, u64)>>,
}

impl Model {
    /// Acknowledged operations per writer, read before a call.
    fn acked(&self) -> Vec<usize> {
        self.histories
            .iter()
            .map(|h| h.acked.load(Ordering::SeqCst))
            .collect()
    }

    /// Begun operations per writer, read after a call.
    fn begun(&self) -> Vec<usize> {
        self.histories
            .iter()
            .map(|h| h.log.lock().unwrap().ops.len())
            .collect()
    }

    fn log(&self, id: u64) -> (usize, u64, MutexGuard<'_, Log>) {
        let w = usize::try_from(id / ID_SPAN).unwrap();
        let history = self
            .histories
            .get(w)
            .unwrap_or_else(|| panic!("id {id} is in no writer's range"));
        (w, w as u64 * ID_SPAN, history.log.lock().unwrap())
    }

    fn count(&self, kind: &'static str, n: u64) {
        let mut counts = self.counts.lock().unwrap();
        match counts.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, c)) => *c += n,
            None => counts.push((kind, n)),
        }
    }
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum()
}

fn close_enough(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-4 * b.abs().max(1.0)
}

fn writer(db: &Database, model: &Model, w: usize, stop: &AtomicBool) {
    let schema = schema();
    let history = &model.histories[w];
    let mut rng = StdRng::seed_from_u64(SEED + w as u64);
    let mut next = w as u64 * ID_SPAN;
    let mut live: Vec<u64> = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        if live.len() > LIVE_CAP || (!live.is_empty() && rng.random_bool(0.3)) {
            let ids: Vec<u64> = (0..rng.random_range(1..=8).min(live.len()))
                .map(|_| live.swap_remove(rng.random_range(0..live.len())))
                .collect();
            history.begin(Op::Delete(ids.clone()), &[]);
            assert_eq!(db.delete(&ids).unwrap(), ids.len(), "delete {ids:?}");
            model.count("deletes", 1);
            model.count("rows deleted", ids.len() as u64);
        } else {
            let n = rng.random_range(1..=6);
            let rows: Vec<Row> = (next..next + n)
                .map(|id| random_row(&schema, SEED, id))
                .collect();
            history.begin(Op::Insert(next..next + n), &rows);
            db.insert(rows.iter().map(item).collect()).unwrap();
            live.extend(next..next + n);
            next += n;
            model.count("inserts", 1);
            model.count("rows inserted", n);
        }
        history.ack();
    }
}

/// Checks one search's hits against the model; `complete`: the search must be exact.
fn check_search(
    model: &Model,
    query: &Query,
    params: &SearchParams,
    hits: &[Hit],
    window: (&[usize], &[usize]),
    complete: bool,
) {
    let schema = schema();
    let (acked, begun) = window;
    let mut seen = HashSet::new();
    for (rank, hit) in hits.iter().enumerate() {
        assert!(seen.insert(hit.id), "hit {} twice", hit.id);
        let (w, base, log) = model.log(hit.id);
        let allowed = log.allowed(base, hit.id, acked[w], begun[w]);
        assert_ne!(
            allowed,
            Allowed::Absent,
            "hit {} must not exist: {hit:?}",
            hit.id
        );
        drop(log);
        let row = random_row(&schema, SEED, hit.id);
        let vectors = row
            .vectors(params.target)
            .unwrap_or_else(|| panic!("hit {} has no {:?} vectors", hit.id, params.target));
        let want = dot(&query.fine, &vectors.fine);
        assert!(
            close_enough(f64::from(hit.score), want),
            "hit {}: score {} but the fine vectors give {want}",
            hit.id,
            hit.score
        );
        assert_eq!(
            (&hit.caption, &hit.uri, &hit.metadata),
            (&row.caption, &row.uri, &row.metadata),
            "hit {} metadata",
            hit.id
        );
        if rank > 0 {
            assert!(hits[rank - 1].score >= hit.score, "hits out of order");
        }
    }
    if !complete {
        return;
    }
    // Every row that must be there and beats the last hit is a hit.
    let bar = match hits.last() {
        Some(last) if hits.len() == params.k => f64::from(last.score),
        _ => f64::NEG_INFINITY,
    };
    let mut checked = 0;
    for (w, history) in model.histories.iter().enumerate() {
        let log = history.log.lock().unwrap();
        for row in log.must_be_present(w as u64 * ID_SPAN, acked[w], begun[w]) {
            let Some(vectors) = row.vectors(params.target) else {
                continue;
            };
            let score = dot(&query.fine, &vectors.fine);
            checked += 1;
            if score > bar + 1e-4 * bar.abs().max(1.0) {
                assert!(
                    seen.contains(&row.id),
                    "row {} (score {score}) must be among the hits {:?} ({} search, exact \
                     {})",
                    row.id,
                    hits.iter().map(|h| (h.id, h.score)).collect::<Vec<_>>(),
                    params.target.name(),
                    params.exact
                );
            }
        }
    }
    model.count("rows ranked against the hits", checked);
}

/// `get` of a row some writer touched: present exactly when the model says so, bit-exact.
fn check_get(db: &Database, model: &Model, rng: &mut StdRng) {
    let w = rng.random_range(0..WRITERS);
    let id = {
        let log = model.histories[w].log.lock().unwrap();
        let inserted = log.inserted_at.len() as u64;
        if inserted == 0 {
            return;
        }
        w as u64 * ID_SPAN + rng.random_range(0..inserted + 2)
    };
    let acked = model.acked();
    let got = db.get(id).unwrap();
    let begun = model.begun();
    let (w, base, log) = model.log(id);
    let allowed = log.allowed(base, id, acked[w], begun[w]);
    drop(log);
    match (&got, allowed) {
        (None, Allowed::Present) => panic!("get({id}): acknowledged row missing"),
        (Some(_), Allowed::Absent) => panic!("get({id}): row must not exist"),
        (None, _) => {}
        (Some(record), _) => {
            let row = random_row(&schema(), SEED, id);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            for (got, want) in [(&record.image, &row.image), (&record.text, &row.text)] {
                let got = got
                    .as_ref()
                    .map(|e| (bits(&e.fine), bits(e.coarse.as_deref().unwrap_or_default())));
                let want = want.as_ref().map(|t| (bits(&t.fine), bits(&t.coarse)));
                assert_eq!(got, want, "get({id}): vectors differ");
            }
            assert_eq!(
                (&record.caption, &record.uri, &record.metadata),
                (&row.caption, &row.uri, &row.metadata)
            );
        }
    }
    model.count("gets", 1);
}

fn reader(db: &Database, model: &Model, r: usize, stop: &AtomicBool) {
    let schema = schema();
    let mut rng = StdRng::seed_from_u64(SEED ^ (0xBEEF + r as u64));
    for round in 0u64.. {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let query = Query {
            fine: (0..schema.fine_dim)
                .map(|_| rng.random_range(-1.0..1.0))
                .collect(),
            coarse: Some(
                (0..schema.coarse_dim)
                    .map(|_| rng.random_range(-1.0..1.0))
                    .collect(),
            ),
        };
        let target = Target::ALL[rng.random_range(0..2)];
        // Exact; two-stage with every row a candidate (so exact too); two-stage as usual.
        let (kind, params, complete) = match round % 3 {
            0 => (
                "exact searches",
                SearchParams {
                    target,
                    k: K,
                    exact: true,
                    ..SearchParams::default()
                },
                true,
            ),
            1 => (
                "two-stage searches, all rows candidates",
                SearchParams {
                    target,
                    k: K,
                    candidates: Some(MAX_CANDIDATES),
                    ..SearchParams::default()
                },
                true,
            ),
            _ => (
                "two-stage searches, default candidates",
                SearchParams {
                    target,
                    k: K,
                    ..SearchParams::default()
                },
                false,
            ),
        };
        let acked = model.acked();
        let hits = db.search(&query, &params).unwrap();
        let begun = model.begun();
        check_search(model, &query, &params, &hits, (&acked, &begun), complete);
        model.count(kind, 1);
        model.count("hits checked", hits.len() as u64);
        check_get(db, model, &mut rng);
    }
}

/// Checks a reopened snapshot: per writer, the state after a prefix of its operations
/// between `acked` (before the call) and `begun` (after it), byte for byte.
fn check_snapshot(model: &Model, image: &StoreImage, acked: &[usize], begun: &[usize]) {
    let schema = schema();
    for (w, history) in model.histories.iter().enumerate() {
        let range = w as u64 * ID_SPAN..(w as u64 + 1) * ID_SPAN;
        let part: StoreImage = image
            .range(range)
            .map(|(id, row)| (*id, row.clone()))
            .collect();
        let ids: BTreeSet<u64> = part.keys().copied().collect();
        let log = history.log.lock().unwrap();
        let prefix = (acked[w]..=begun[w]).find(|&k| log.state_at(k) == ids);
        drop(log);
        let Some(k) = prefix else {
            panic!(
                "snapshot: writer {w}'s {} rows equal no state after {}..={} of its operations",
                ids.len(),
                acked[w],
                begun[w]
            );
        };
        let want: StoreImage = ids
            .iter()
            .map(|&id| (id, expected_row(&schema, &random_row(&schema, SEED, id))))
            .collect();
        if let Some(diff) = diff_images(&want, &part) {
            panic!("snapshot: writer {w} after {k} operations: {diff}");
        }
        model.count("snapshot rows compared", ids.len() as u64);
    }
}

fn maintainer(db: &Database, model: &Model, snapshots: &std::path::Path, stop: &AtomicBool) {
    let read_only = StoreOptions {
        read_only: true,
        ..StoreOptions::default()
    };
    for round in 0u64.. {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        db.flush().unwrap();
        model.count("flushes", 1);
        db.compact().unwrap();
        model.count("compactions", 1);
        let dest = snapshots.join(format!("snapshot-{round}"));
        let acked = model.acked();
        db.snapshot(&dest).unwrap();
        let begun = model.begun();
        let image = read_view(&Store::open(&dest, read_only.clone()).unwrap().view()).unwrap();
        check_snapshot(model, &image, &acked, &begun);
        std::fs::remove_dir_all(&dest).unwrap();
        model.count("snapshots reopened and compared", 1);
    }
}

/// Stops every thread when one fails a check, instead of letting the others run on.
struct StopOnPanic<'a>(&'a AtomicBool);

impl Drop for StopOnPanic<'_> {
    fn drop(&mut self) {
        if thread::panicking() {
            self.0.store(true, Ordering::SeqCst);
        }
    }
}

#[test]
fn concurrent_writers_readers_and_maintenance_agree_with_the_model() {
    let secs: f64 = std::env::var("HIVLP_STRESS_SECS")
        .ok()
        .map_or(5.0, |s| s.parse().expect("HIVLP_STRESS_SECS: seconds"));
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let options = Options {
        durability: Durability::Buffered,
        // Automatic flushes between the maintainer's, so views mix segments and memtable.
        memtable_rows: 300,
        threads: Some(1),
        ..Options::default()
    };
    let db = Database::create(&dir, schema(), options).unwrap();
    let model = Model {
        histories: (0..=WRITERS).map(|_| History::default()).collect(),
        counts: Mutex::new(Vec::new()),
    };
    let first = random_row(&schema(), SEED, WRITERS as u64 * ID_SPAN);
    let seeded = &model.histories[WRITERS];
    seeded.begin(
        Op::Insert(first.id..first.id + 1),
        std::slice::from_ref(&first),
    );
    db.insert(vec![item(&first)]).unwrap();
    seeded.ack();

    let stop = AtomicBool::new(false);
    let started = Instant::now();
    thread::scope(|s| {
        let (db, model, stop) = (&db, &model, &stop);
        let snapshots = tmp.path();
        for w in 0..WRITERS {
            s.spawn(move || {
                let _stop_all = StopOnPanic(stop);
                writer(db, model, w, stop)
            });
        }
        for r in 0..READERS {
            s.spawn(move || {
                let _stop_all = StopOnPanic(stop);
                reader(db, model, r, stop)
            });
        }
        s.spawn(move || {
            let _stop_all = StopOnPanic(stop);
            maintainer(db, model, snapshots, stop)
        });
        while !stop.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs_f64(secs) {
            thread::sleep(Duration::from_millis(20));
        }
        stop.store(true, Ordering::SeqCst);
    });
    let ran = started.elapsed();

    // The end state, reopened from disk: every writer's whole history.
    db.close().unwrap();
    let store = Store::open(
        &dir,
        StoreOptions {
            read_only: true,
            ..StoreOptions::default()
        },
    )
    .unwrap();
    let image = read_view(&store.view()).unwrap();
    let all: Vec<usize> = model.begun();
    check_snapshot(&model, &image, &all, &all);
    let counts = model.counts.into_inner().unwrap();
    println!("stress ran {:.1} s; operations checked:", ran.as_secs_f64());
    for (kind, n) in &counts {
        println!("  {kind}: {n}");
    }
    println!("  rows at the end: {}", image.len());
    for kind in [
        "inserts",
        "deletes",
        "exact searches",
        "gets",
        "snapshots reopened and compared",
    ] {
        assert!(
            counts.iter().any(|(k, n)| *k == kind && *n > 0),
            "no {kind} in {secs} s"
        );
    }
}
