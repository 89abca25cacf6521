//! `hivlp import`: encodes and inserts image–caption pairs in batches, with a progress bar.
//!
//! Resumable: each item's uri is its source key (the image's absolute path); a re-run lists the
//! uris already in the database and skips those entries. A batch that fails because of one bad
//! input is retried item by item, so a broken image is reported and the rest still imported.

use std::collections::HashSet;
use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

use hivlp::{Database, ImageInput, Pair};
use indicatif::{ProgressBar, ProgressStyle};

use crate::commands::open;
use crate::error::{CliError, Kind};
use crate::sources::{Entry, read_source};
use crate::{CliResult, ImportArgs};

/// What an import did.
#[derive(Debug, Default)]
pub struct ImportSummary {
    pub imported: usize,
    pub skipped: usize,
    /// Source key and reason of every entry that could not be imported.
    pub failed: Vec<(String, String)>,
    pub elapsed: Duration,
}

pub fn run(args: ImportArgs) -> CliResult {
    let entries = read_source(&args.source)?;
    let db = open(&args.db, args.model.choice())?;
    if db.encoder().is_none() {
        return Err(
            CliError::new(Kind::Model, "import encodes images and needs a model")
                .hint("pass --model default or --model BUNDLE_DIR"),
        );
    }
    let summary = import_entries(&db, &entries, args.batch_size as usize, !args.no_exif)?;
    print_summary(&summary);
    if summary.imported == 0 && !summary.failed.is_empty() {
        return Err(CliError::invalid_input("nothing could be imported")
            .hint("check that the source's image files exist and are readable images"));
    }
    Ok(())
}

/// Prints the totals (failures were reported as they happened).
pub fn print_summary(summary: &ImportSummary) {
    let secs = summary.elapsed.as_secs_f64();
    let rate = if secs > 0.0 {
        summary.imported as f64 / secs
    } else {
        0.0
    };
    out!(
        "imported {} pairs in {secs:.1} s ({rate:.0}/s), skipped {} already present, {} failed",
        summary.imported,
        summary.skipped,
        summary.failed.len()
    );
}

/// Imports the entries not yet in `db` in batches of `batch_size`; with `exif`, the images'
/// EXIF fields are added to their metadata.
pub fn import_entries(
    db: &Database,
    entries: &[Entry],
    batch_size: usize,
    exif: bool,
) -> Result<ImportSummary, CliError> {
    let start = Instant::now();
    let present = existing_uris(db)?;
    let pending: Vec<&Entry> = entries
        .iter()
        .filter(|e| !present.contains(&e.key()))
        .collect();
    let mut summary = ImportSummary {
        skipped: entries.len() - pending.len(),
        ..ImportSummary::default()
    };
    let progress = Progress::new(pending.len() as u64);
    for batch in pending.chunks(batch_size.max(1)) {
        match insert_batch(db, batch, exif) {
            Ok(n) => summary.imported += n,
            Err(error) if is_item_error(&error) => {
                // One bad input rejects the whole batch; find it by inserting one at a time.
                for entry in batch {
                    match insert_batch(db, std::slice::from_ref(entry), exif) {
                        Ok(n) => summary.imported += n,
                        Err(error) if is_item_error(&error) => {
                            progress.note(&format!("failed: {}: {error}", entry.key()));
                            summary.failed.push((entry.key(), error.to_string()));
                        }
                        Err(error) => return Err(error.into()),
                    }
                }
            }
            Err(error) => return Err(error.into()),
        }
        progress.advance(batch.len() as u64);
    }
    db.flush()?;
    progress.finish();
    summary.elapsed = start.elapsed();
    Ok(summary)
}

/// Errors caused by one input (unreadable or undecodable image, bad caption), as opposed to the
/// database failing.
fn is_item_error(error: &hivlp::Error) -> bool {
    crate::error::is_input_error(error)
}

fn insert_batch(db: &Database, batch: &[&Entry], exif: bool) -> hivlp::Result<usize> {
    let keys: Vec<String> = batch.iter().map(|e| e.key()).collect();
    let pairs: Vec<Pair<'_>> = batch
        .iter()
        .zip(keys)
        .map(|(entry, key)| Pair {
            id: None,
            image: ImageInput::Path(&entry.image),
            caption: entry.caption.as_deref(),
            uri: Some(key),
            metadata: entry.metadata.clone(),
            exif,
        })
        .collect();
    Ok(db.insert_pairs(&pairs)?.len())
}

/// Every uri stored in `db`: the source keys of earlier imports.
///
/// The engine has no iteration API, so this looks up every id below the store's next id —
/// cheap for the dense ids that imports assign. A database whose ids were chosen by hand may
/// be sparse; then nothing is skipped rather than scanning billions of ids.
fn existing_uris(db: &Database) -> Result<HashSet<String>, CliError> {
    let next_id = db.stats()?.store.next_id;
    let dense_enough = next_id
        <= (db.len()? as u64)
            .saturating_mul(16)
            .saturating_add(1 << 16);
    if !dense_enough {
        eprintln!("note: this database's ids are sparse; already-imported images are not skipped");
        return Ok(HashSet::new());
    }
    let mut uris = HashSet::new();
    for id in 0..next_id {
        uris.extend(db.get(id)?.and_then(|record| record.uri));
    }
    Ok(uris)
}

/// A progress bar with rate and ETA on a terminal; occasional plain lines otherwise (logs, CI,
/// the demo's captured output).
struct Progress {
    bar: Option<ProgressBar>,
    total: u64,
    done: std::cell::Cell<u64>,
    last_line: std::cell::Cell<Instant>,
    start: Instant,
}

impl Progress {
    fn new(total: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template(
                    "importing [{bar:32.cyan/blue}] {pos}/{len} pairs  {rate}  ETA {eta}",
                )
                .expect("a valid template")
                .with_key(
                    "rate",
                    |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                        let _ = write!(w, "{:.0}/s", state.per_sec());
                    },
                )
                .progress_chars("=> "),
            );
            bar
        });
        let now = Instant::now();
        Progress {
            bar,
            total,
            done: 0.into(),
            last_line: now.into(),
            start: now,
        }
    }

    fn advance(&self, n: u64) {
        self.done.set(self.done.get() + n);
        if let Some(bar) = &self.bar {
            bar.inc(n);
        } else if self.last_line.get().elapsed() >= Duration::from_secs(2)
            || self.done.get() == self.total
        {
            self.last_line.set(Instant::now());
            self.line();
        }
    }

    fn line(&self) {
        let done = self.done.get();
        let secs = self.start.elapsed().as_secs_f64();
        let rate = if secs > 0.0 { done as f64 / secs } else { 0.0 };
        let eta = if rate > 0.0 {
            (self.total - done) as f64 / rate
        } else {
            0.0
        };
        eprintln!(
            "importing {done}/{} pairs  {rate:.0}/s  ETA {eta:.0}s",
            self.total
        );
    }

    fn note(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
