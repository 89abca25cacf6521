//! The stateful target: a sequence of store operations decoded from the input, run on a
//! [`FaultyDir`] that fails an I/O call or cuts the power where the input says, checked after
//! every step against a plain model of the rows (like redb's `fuzz_redb`).
//!
//! Each step is two bytes, an operation and its argument (a delete with an argument of 128 or
//! more is a metadata update instead). Acknowledged writes must be there
//! bit-exact (the schema stores `f32`, so a row reads back as given); an operation that
//! failed may have happened whole or not at all, which the next reopen decides. (Search is
//! the engine's; storage's readers see exactly the model's rows.)

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hivlp_storage::io::{CrashMode, Dir, Fault, FaultyDir};
use hivlp_storage::{
    CommitError, DefaultMergePolicy, MergeAll, MetadataUpdate, Row, Schema, Store, StoreOptions,
    TierVectors, VerifyLevel, View, verify_in,
};

use crate::SCHEMAS;

const DB: &str = "/db";
/// Ids come from a small range, so that inserts collide and deletes hit.
const IDS: u64 = 48;
/// At most this many steps per input: each may reopen the store.
const MAX_STEPS: usize = 64;

/// What a reader sees of one row: caption, then per modality the (coarse, fine) vectors.
type Image = (Option<String>, [Option<(Vec<f32>, Vec<f32>)>; 2]);
type Model = BTreeMap<u64, Image>;

fn vector(id: u64, salt: u64, dim: usize) -> Vec<f32> {
    (0..dim)
        .map(|i| ((id * 31 + salt * 7 + i as u64) % 17) as f32 / 8.0 - 1.0)
        .collect()
}

/// Row `id` as inserted with `salt` (so a reinserted id can differ from its first life).
fn row(schema: &Schema, id: u64, salt: u64) -> (Row, Image) {
    let tier = |s: u64| TierVectors {
        coarse: vector(id, s, schema.coarse_dim),
        fine: vector(id, s + 1, schema.fine_dim),
    };
    let image = Some(tier(salt));
    let text = (id % 3 != 0).then(|| tier(salt + 2));
    let caption = (id % 2 == 0).then(|| format!("row {id} salt {salt}"));
    let pair = |t: &Option<TierVectors>| t.as_ref().map(|t| (t.coarse.clone(), t.fine.clone()));
    let model = (caption.clone(), [pair(&image), pair(&text)]);
    let row = Row {
        id,
        caption,
        image,
        text,
        ..Row::default()
    };
    (row, model)
}

fn read(view: &View) -> Model {
    let mut out = Model::new();
    let mut buf = Vec::new();
    for source in view.sources() {
        for r in 0..source.rows() {
            if source.is_deleted(r) {
                continue;
            }
            let vectors = hivlp_storage::Modality::ALL.map(|m| {
                (!source.skip(m).get(r)).then(|| {
                    source.coarse(m).row_to_f32(r, &mut buf);
                    let coarse = buf.clone();
                    source.fine(m).row_to_f32(r, &mut buf);
                    (coarse, buf.clone())
                })
            });
            let caption = source.meta(r).caption.map(str::to_owned);
            let before = out.insert(source.id(r), (caption, vectors));
            assert!(before.is_none(), "id {} live twice", source.id(r));
        }
    }
    assert_eq!(out.len(), view.len(), "view.len()");
    out
}

fn options(io: &Arc<FaultyDir>) -> StoreOptions {
    let io: Arc<dyn Dir> = io.clone();
    StoreOptions {
        memtable_rows: 6,
        verify: VerifyLevel::Full,
        io,
        ..StoreOptions::default()
    }
}

struct Run {
    io: Arc<FaultyDir>,
    schema: Schema,
    store: Option<Store>,
    model: Model,
    /// The model if the failed operation happened: the next reopen tells which it was.
    in_doubt: Option<Model>,
    snapshots: Vec<(PathBuf, Model)>,
    /// Snapshots attempted: each goes to a new destination (a failed one may leave its own).
    snapshot_attempts: usize,
    salt: u64,
}

impl Run {
    /// Restarts after a crash, reopens, and settles an operation in doubt.
    fn reopen(&mut self) {
        drop(self.store.take());
        self.io.disarm();
        self.io.restart();
        let store = Store::open(DB, options(&self.io)).expect("reopen after a fault");
        let found = read(&store.view());
        match self.in_doubt.take() {
            Some(done) if found == done => self.model = done,
            _ => assert_eq!(found, self.model, "reopen lost or half-applied a write"),
        }
        let io: Arc<dyn Dir> = self.io.clone();
        let report = verify_in(&io, Path::new(DB), VerifyLevel::Full).expect("verify");
        assert!(report.is_ok(), "verify after reopen: {:?}", report.problems);
        self.store = Some(store);
    }

    /// Records the outcome of a write that would turn the model into `done`.
    fn settle<T, E: std::fmt::Display>(&mut self, result: Result<T, E>, done: Model) {
        match result {
            Ok(_) => self.model = done,
            Err(_) if self.io.fired() => {
                self.in_doubt = Some(done);
                self.reopen();
            }
            Err(e) => panic!("a write failed without a fault: {e}"),
        }
    }

    fn step(&mut self, op: u8, arg: u8) {
        let store = self.store.as_ref().expect("open");
        match op % 8 {
            0 => {
                let n = u64::from(arg % 4) + 1;
                let first = u64::from(arg) % IDS;
                self.salt += 1;
                let ids: Vec<u64> = (0..n).map(|i| (first + i * 7) % IDS).collect();
                let mut batch = Vec::new();
                let mut done = self.model.clone();
                for &id in &ids {
                    let (r, image) = row(&self.schema, id, self.salt);
                    batch.push(r);
                    done.insert(id, image);
                }
                let clash = ids.iter().any(|id| self.model.contains_key(id))
                    || (1..ids.len()).any(|i| ids[..i].contains(&ids[i]));
                let result = store.insert(batch);
                if clash && !self.io.fired() {
                    assert!(
                        matches!(result, Err(CommitError::InvalidInput(_))),
                        "an insert of an existing id was not refused: {result:?}"
                    );
                    return;
                }
                self.settle(result, done);
            }
            1 if arg >= 128 => {
                // A caption update (or removal) of one id, which may not be live.
                let id = u64::from(arg) % IDS;
                self.salt += 1;
                let caption = (arg % 2 == 0).then(|| format!("updated {id} salt {}", self.salt));
                let mut done = self.model.clone();
                let live = done
                    .get_mut(&id)
                    .map(|image| image.0 = caption.clone())
                    .is_some();
                let update = MetadataUpdate {
                    caption: Some(caption),
                    ..MetadataUpdate::default()
                };
                let result = store.update(id, update);
                if let Ok(found) = result {
                    assert_eq!(found, live, "update of id {id}: found {found}, live {live}");
                }
                self.settle(result, done);
            }
            1 => {
                let ids: Vec<u64> = (0..3).map(|i| (u64::from(arg) + i * 5) % IDS).collect();
                let mut done = self.model.clone();
                for id in &ids {
                    done.remove(id);
                }
                let result = store.delete(&ids);
                self.settle(result, done);
            }
            2 => {
                let result = store.flush();
                self.settle(result, self.model.clone());
            }
            3 => {
                let result = if arg % 2 == 0 {
                    store.compact(&MergeAll, None)
                } else {
                    store.compact(&DefaultMergePolicy::default(), None)
                };
                self.settle(result, self.model.clone());
            }
            4 => {
                let dest = PathBuf::from(format!("/snapshots/{}", self.snapshot_attempts));
                self.snapshot_attempts += 1;
                match store.snapshot(&dest) {
                    Ok(()) => self.snapshots.push((dest, self.model.clone())),
                    Err(_) if self.io.fired() => self.reopen(),
                    Err(e) => panic!("a snapshot failed without a fault: {e}"),
                }
            }
            5 => self.reopen(),
            6 => {
                let fault = Fault::ALL[usize::from(arg % 4)];
                self.io.fail(fault, u64::from(arg / 4) % 48);
            }
            _ => {
                let mode = CrashMode::ALL[usize::from(arg % 4)];
                self.io.crash_at(u64::from(arg / 4) % 64, mode);
            }
        }
        if let Some(store) = &self.store
            && !self.io.fired()
        {
            assert_eq!(
                read(&store.view()),
                self.model,
                "the view differs from the model"
            );
        }
    }

    /// Every acknowledged snapshot opens and holds the model of its moment, also after a
    /// power cut.
    fn check_snapshots(&mut self) {
        drop(self.store.take());
        self.io.disarm();
        self.io.restart();
        self.io.crash(CrashMode::DropUnsynced);
        self.io.restart();
        for (dest, model) in &self.snapshots {
            let store = Store::open(dest, options(&self.io)).expect("an acknowledged snapshot");
            assert_eq!(read(&store.view()), *model, "snapshot {}", dest.display());
        }
    }
}

/// Runs the steps in `data`; true when the input ran to its end (always, unless storage
/// broke an invariant, which panics).
pub fn store_ops(data: &[u8]) -> bool {
    // The `f32` schema: rows read back exactly as given.
    let schema = SCHEMAS[0].clone();
    let io = FaultyDir::new();
    let store = Store::create(DB, schema.clone(), options(&io)).expect("create");
    let mut run = Run {
        io,
        schema,
        store: Some(store),
        model: Model::new(),
        in_doubt: None,
        snapshots: Vec::new(),
        snapshot_attempts: 0,
        salt: 0,
    };
    for pair in data.chunks_exact(2).take(MAX_STEPS) {
        run.step(pair[0], pair[1]);
        if run.io.fired() {
            // A fault or crash that hit a best-effort call, or a read: settle it.
            run.reopen();
        }
    }
    run.reopen();
    run.check_snapshots();
    true
}
