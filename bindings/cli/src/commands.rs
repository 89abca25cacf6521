//! The small commands: create, search, delete, compact, snapshot, stats, verify.

use std::io::Write as _;
use std::path::Path;

use hivlp::{
    DEFAULT_NEGATIVE_WEIGHT, Database, ModelChoice, NewDatabase, Options, Predicate, Query,
    QueryPart, SearchParams, StatValue, Target,
};

use crate::error::CliError;
use crate::html::{self, QueryResults, ShownHit};
use crate::{CliResult, CreateArgs, ModelArg, SearchArgs, TargetArg};

impl ModelArg {
    pub fn choice(&self) -> ModelChoice {
        ModelChoice::from(self.model.as_str())
    }
}

impl From<TargetArg> for Target {
    fn from(t: TargetArg) -> Self {
        match t {
            TargetArg::Image => Target::Image,
            TargetArg::Text => Target::Text,
        }
    }
}

/// Opens an existing database for writing with the given model (`ModelChoice::None` for
/// maintenance commands that never encode).
pub fn open(db: &Path, model: ModelChoice) -> Result<Database, CliError> {
    if !db.exists() {
        return Err(CliError::usage(format!("no database at {}", db.display()))
            .hint(format!("create one with `hivlp create {}`", db.display())));
    }
    let options = Options {
        model,
        ..Options::default()
    };
    Ok(Database::open(db, options)?)
}

pub fn create(args: CreateArgs) -> CliResult {
    let coarse_type = args.coarse_dtype;
    let options = Options {
        model: args.model.choice(),
        ..Options::default()
    };
    let new = NewDatabase {
        coarse_type,
        dims: match (args.fine_dim, args.coarse_dim) {
            (None, None) => None,
            (Some(fine), Some(coarse)) => Some((fine, coarse)),
            _ => {
                return Err(
                    CliError::usage("give both --fine-dim and --coarse-dim, or neither")
                        .hint("e.g. `hivlp create DB --model none --fine-dim 512 --coarse-dim 64`"),
                );
            }
        },
        metric: args.metric,
    };
    let db = Database::create_new(&args.db, &new, options)?;
    let schema = db.schema();
    out!(
        "created {} (fine {}-d {}, coarse {}-d {}, {})",
        args.db.display(),
        schema.fine_dim,
        name(schema.fine_type),
        schema.coarse_dim,
        name(schema.coarse_type),
        name(schema.metric)
    );
    Ok(())
}

pub fn search(args: SearchArgs) -> CliResult {
    let db = open(&args.db, args.model.choice())?;
    let params = SearchParams {
        target: args.target.into(),
        k: args.k,
        candidates: args.candidates,
        exact: args.exact,
        predicate: args
            .predicate
            .as_deref()
            .map(Predicate::parse)
            .transpose()
            .map_err(|e| CliError::invalid_input(format!("--where: {e}")))?,
        min_score: args.min_score,
        collapse: args.collapse,
        ..SearchParams::default()
    };
    let plain = args.minus_text.is_empty() && args.weights.is_none();
    let (label, query_image, query) = match (&args.text, &args.image, plain) {
        (Some(text), None, true) => (text.clone(), None, text_query(&db, text)?),
        (None, Some(image), true) => (
            format!("image: {}", image.display()),
            Some(image.to_string_lossy().into_owned()),
            image_query(&db, image)?,
        ),
        _ => composed_query(&db, &args)?,
    };
    let (hits, timing) = db.search_with_timing(&query, &params)?;
    let shown = QueryResults {
        label,
        query_image,
        hits: hits
            .iter()
            .map(|h| ShownHit {
                id: h.id,
                score: h.score,
                caption: h.caption.clone(),
                uri: h.uri.clone(),
            })
            .collect(),
        timing: Some((timing.coarse, timing.fine)),
    };
    if args.json {
        let json = serde_json::json!({
            "query": shown.label,
            "target": target_name(params.target),
            "k": params.k,
            "timing_ms": {
                "filter": ms(timing.filter),
                "coarse": ms(timing.coarse),
                "fine": ms(timing.fine),
            },
            "candidates": timing.candidates,
            "passes": timing.passes,
            "exact": timing.exact,
            "estimated_recall": timing.estimated_recall,
            "hits": hits.iter().enumerate().map(|(rank, h)| serde_json::json!({
                "rank": rank + 1,
                "id": h.id,
                "score": h.score,
                "caption": h.caption,
                "uri": h.uri,
                "metadata": metadata_json(&h.metadata),
            })).collect::<Vec<_>>(),
        });
        out!("{json:#}");
    } else {
        print_table(&shown);
    }
    if let Some(page) = &args.html {
        html::write_page(
            page,
            "hivlp search",
            &describe(&db, &args.db)?,
            std::slice::from_ref(&shown),
        )
        .map_err(|e| CliError::other(format!("cannot write {}: {e}", page.display())))?;
        eprintln!("wrote {}", page.display());
    }
    Ok(())
}

/// One line about a database for the results page: path, size, model, vector shapes.
pub fn describe(db: &Database, path: &Path) -> Result<String, CliError> {
    let schema = db.schema();
    let model = db.encoder().map_or_else(
        || "no model".to_string(),
        |e| format!("model {} v{}", e.info().name, e.info().version),
    );
    Ok(format!(
        "{} · {} items · {model} · coarse {}-d {} scanned, fine {}-d {} re-ranked",
        path.display(),
        db.len()?,
        schema.coarse_dim,
        name(schema.coarse_type),
        schema.fine_dim,
        name(schema.fine_type),
    ))
}

/// Encodes `text` with the database's model.
pub fn text_query(db: &Database, text: &str) -> Result<Query, CliError> {
    let encoder = require_encoder(db)?;
    let embedding = encoder
        .encode_texts(&[text])
        .map_err(|e| CliError::new(crate::error::Kind::Model, e.to_string()))?
        .pop()
        .expect("one embedding per text");
    Ok(Query {
        fine: embedding.fine,
        coarse: embedding.coarse,
    })
}

/// The query of several parts: `--text`, `--image` and each `--minus-text`, weighted by
/// `--weights` (in that order) or 1 each and [`DEFAULT_NEGATIVE_WEIGHT`] per minus text; with
/// a label such as `beach − people` and the image shown on the results page.
fn composed_query(
    db: &Database,
    args: &SearchArgs,
) -> Result<(String, Option<String>, Query), CliError> {
    require_encoder(db)?;
    if let Some(image) = args.image.as_deref().filter(|p| !p.is_file()) {
        return Err(CliError::usage(format!(
            "no image file at {}",
            image.display()
        )));
    }
    let mut parts: Vec<(QueryPart<'_>, f32)> = Vec::new();
    let mut label = Vec::new();
    if let Some(text) = &args.text {
        parts.push((QueryPart::Text(text), 1.0));
        label.push(text.clone());
    }
    if let Some(image) = &args.image {
        parts.push((QueryPart::Image(hivlp::ImageInput::Path(image)), 1.0));
        label.push(format!("image: {}", image.display()));
    }
    for text in &args.minus_text {
        parts.push((QueryPart::Text(text), DEFAULT_NEGATIVE_WEIGHT));
    }
    if let Some(weights) = &args.weights {
        if weights.len() != parts.len() {
            return Err(CliError::usage(format!(
                "--weights has {} values but the query has {} parts (--text, --image, then each --minus-text)",
                weights.len(),
                parts.len()
            )));
        }
        for ((_, w), &given) in parts.iter_mut().zip(weights) {
            *w = given;
        }
    }
    let mut label = label.join(" + ");
    for text in &args.minus_text {
        label.push_str(&format!(" − {text}"));
    }
    let query = db.compose_query(&parts)?;
    let image = args
        .image
        .as_ref()
        .map(|p| p.to_string_lossy().into_owned());
    Ok((label, image, query))
}

/// Encodes the image file at `path` with the database's model.
pub fn image_query(db: &Database, path: &Path) -> Result<Query, CliError> {
    let encoder = require_encoder(db)?;
    if !path.is_file() {
        return Err(CliError::usage(format!(
            "no image file at {}",
            path.display()
        )));
    }
    let embedding = encoder
        .encode_images(&[hivlp::ImageInput::Path(path)])
        .map_err(|e| CliError::invalid_input(e.to_string()))?
        .pop()
        .expect("one embedding per image");
    Ok(Query {
        fine: embedding.fine,
        coarse: embedding.coarse,
    })
}

fn require_encoder(db: &Database) -> Result<&hivlp::Encoder, CliError> {
    db.encoder().ok_or_else(|| {
        CliError::new(
            crate::error::Kind::Model,
            "this query needs a model, but none is loaded",
        )
        .hint("pass --model default or --model BUNDLE_DIR")
    })
}

fn target_name(target: Target) -> &'static str {
    match target {
        Target::Image => "image",
        Target::Text => "text",
    }
}

pub fn ms(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// Metadata as JSON when it is JSON, as a string otherwise, `null` when empty.
fn metadata_json(bytes: &[u8]) -> serde_json::Value {
    if bytes.is_empty() {
        return serde_json::Value::Null;
    }
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

/// A terminal table: rank, score, id, caption, uri (file name only).
pub fn print_table(results: &QueryResults) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", results.label);
    if let Some((coarse, fine)) = results.timing {
        let _ = writeln!(
            out,
            "  coarse scan {:.2} ms, fine re-rank {:.2} ms",
            ms(coarse),
            ms(fine)
        );
    }
    let _ = writeln!(out, "  {:>4}  {:>7}  {:>6}  caption", "rank", "score", "id");
    for (rank, hit) in results.hits.iter().enumerate() {
        let caption = hit.caption.as_deref().unwrap_or("-");
        let file = hit
            .uri
            .as_deref()
            .map(|u| {
                Path::new(u)
                    .file_name()
                    .map_or(u.into(), |f| f.to_string_lossy())
            })
            .map(|f| format!("  [{f}]"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {:>4}  {:>7.4}  {:>6}  {}{}",
            rank + 1,
            hit.score,
            hit.id,
            html::shorten(caption, 60),
            file
        );
    }
}

pub fn delete(db: &Path, ids: &[u64]) -> CliResult {
    let db = open(db, ModelChoice::None)?;
    let removed = db.delete(ids)?;
    out!("deleted {removed} of {} ids", ids.len());
    Ok(())
}

pub fn update(
    db: &Path,
    id: u64,
    metadata: Option<String>,
    caption: Option<String>,
    no_caption: bool,
) -> CliResult {
    if metadata.is_none() && caption.is_none() && !no_caption {
        return Err(CliError::usage(
            "nothing to update: give --metadata, --caption or --no-caption",
        ));
    }
    if let Some(text) = &metadata
        && let Err(e) = serde_json::from_str::<serde_json::Value>(text)
    {
        return Err(CliError::invalid_input(format!(
            "--metadata is not valid JSON: {e}"
        )));
    }
    let update = hivlp::MetadataUpdate {
        caption: if no_caption {
            Some(None)
        } else {
            caption.map(Some)
        },
        metadata: metadata.map(String::into_bytes),
        ..hivlp::MetadataUpdate::default()
    };
    let db = open(db, ModelChoice::None)?;
    if !db.update(id, update)? {
        return Err(CliError::invalid_input(format!("no live item has id {id}")));
    }
    out!("updated {id}");
    Ok(())
}

pub fn compact(db: &Path) -> CliResult {
    let db = open(db, ModelChoice::None)?;
    db.flush()?;
    let r = db.compact()?;
    out!(
        "compacted: {} segments merged into {}, {} rows written, {} deleted rows dropped, {} → {}",
        r.segments_merged,
        r.segments_written,
        r.rows_written,
        r.rows_dropped,
        bytes(r.bytes_before),
        bytes(r.bytes_after)
    );
    Ok(())
}

pub fn snapshot(db: &Path, dest: &Path) -> CliResult {
    let handle = open(db, ModelChoice::None)?;
    handle.snapshot(dest)?;
    out!("snapshot of {} written to {}", db.display(), dest.display());
    Ok(())
}

/// `1.5 MiB`-style sizes.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Lower-case name of an enum value printed with `Debug` (`I8` → `i8`, `Pca` → `pca`).
fn name(value: impl std::fmt::Debug) -> String {
    format!("{value:?}").to_ascii_lowercase()
}

pub fn stats(db: &Path, json: bool) -> CliResult {
    let handle = open(db, ModelChoice::None)?;
    let schema = handle.schema().clone();
    let stats = handle.stats()?;
    let store = &stats.store;
    if json {
        let fields = stats.fields().into_iter().map(|(key, value)| {
            let value = match value {
                StatValue::Count(n) => serde_json::json!(n),
                StatValue::Name(name) => serde_json::json!(name),
                StatValue::DroppedTail(t) => serde_json::json!({
                    "file": t.file, "offset": t.offset, "bytes": t.bytes, "records": t.records,
                }),
                StatValue::Absent => serde_json::Value::Null,
            };
            (key.to_owned(), value)
        });
        out!("{:#}", serde_json::Value::Object(fields.collect()));
    } else {
        out!(
            "{}: {} items ({} deleted, not yet compacted)",
            db.display(),
            store.live_rows,
            store.deleted_rows
        );
        out!(
            "  vectors: fine {}-d {}, coarse {}-d {}, {}; coarse derivation: image {}, text {}",
            schema.fine_dim,
            name(schema.fine_type),
            schema.coarse_dim,
            name(schema.coarse_type),
            name(schema.metric),
            name(stats.coarse[0]),
            name(stats.coarse[1])
        );
        out!(
            "  storage: {} segments ({} rows), {} rows in memory, WAL {}, {} on disk",
            store.segments,
            store.segment_rows,
            store.memtable_rows,
            bytes(store.wal_bytes),
            bytes(store.disk_bytes)
        );
    }
    Ok(())
}

pub fn verify(db: &Path, json: bool) -> CliResult {
    if !db.exists() {
        return Err(CliError::usage(format!("no database at {}", db.display())));
    }
    let report = hivlp::verify(db)?;
    if json {
        let value = serde_json::json!({
            "ok": report.is_ok(),
            "files_checked": report.files_checked.len(),
            "segments": report.segments,
            "segment_rows": report.segment_rows,
            "wal_records": report.wal_records,
            "dropped_wal_tail": report.dropped_wal_tail.as_ref().map(|t| serde_json::json!({
                "file": t.file.display().to_string(),
                "offset": t.offset,
                "bytes": t.bytes,
                "records": t.records,
            })),
            "problems": report.problems.iter().map(ToString::to_string).collect::<Vec<_>>(),
        });
        out!("{value:#}");
    } else {
        for problem in &report.problems {
            out!("problem: {problem}");
        }
        out!(
            "{}: {} files checked, {} segments ({} rows), {} WAL records{}",
            db.display(),
            report.files_checked.len(),
            report.segments,
            report.segment_rows,
            report.wal_records,
            match &report.dropped_wal_tail {
                Some(t) => format!(
                    ", a WAL tail past the last fsync that open drops ({} bytes, {} intact records)",
                    t.bytes, t.records
                ),
                None => String::new(),
            }
        );
    }
    if report.is_ok() {
        if !json {
            out!("ok");
        }
        Ok(())
    } else {
        Err(CliError::new(
            crate::error::Kind::Corruption,
            format!("{}: {} problems found", db.display(), report.problems.len()),
        )
        .hint("restore the database from a snapshot (`hivlp snapshot`)"))
    }
}
