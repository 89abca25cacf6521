//! `hivlp demo`: builds a database from the bundled demo data in a temporary folder, runs the
//! queries of `queries.txt` (text lines, and `image: FILE` lines), prints the top results with
//! the coarse/fine timing split and writes an HTML page of them.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use hivlp::{Database, ElemType, Options, SearchParams, Target};

use crate::commands::{describe, image_query, ms, print_table, text_query};
use crate::error::{CliError, Kind};
use crate::html::{self, QueryResults, ShownHit};
use crate::import::{import_entries, print_summary};
use crate::sources::read_source;
use crate::{CliResult, DemoArgs};

/// Results shown per query.
const TOP_K: usize = 5;

/// One line of `queries.txt`.
#[derive(Debug, PartialEq)]
enum DemoQuery {
    Text(String),
    Image(PathBuf),
}

/// Text queries one per line, `image: FILE` for an image query (relative to the data folder);
/// blank lines and `#` comments are skipped.
fn parse_queries(text: &str, data: &Path) -> Vec<DemoQuery> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|line| match line.strip_prefix("image:") {
            Some(file) => DemoQuery::Image(data.join(file.trim())),
            None => DemoQuery::Text(line.to_string()),
        })
        .collect()
}

pub fn run(args: DemoArgs) -> CliResult {
    let started = Instant::now();
    // Canonical, so the relative default prints as a full path.
    let data = fs::canonicalize(&args.data).unwrap_or(args.data.clone());
    let queries_file = data.join("queries.txt");
    let queries_text = fs::read_to_string(&queries_file).map_err(|e| {
        CliError::usage(format!("cannot read {}: {e}", queries_file.display())).hint(
            "run it from the repository root (`scripts/demo`), or point --data at a folder \
                 with images, .txt captions and queries.txt",
        )
    })?;
    let queries = parse_queries(&queries_text, &data);
    let entries = read_source(&data)?;

    let workdir = tempfile::Builder::new()
        .prefix("hivlp-demo-")
        .tempdir()
        .map_err(|e| CliError::other(format!("cannot create a temporary folder: {e}")))?;
    let db_path = workdir.path().join("demo.hivlp");
    let options = Options {
        model: args.model.choice(),
        ..Options::default()
    };
    let load = Instant::now();
    let db = Database::create_with_model(&db_path, ElemType::I8, options)?;
    let encoder = db.encoder().ok_or_else(|| {
        CliError::new(Kind::Model, "the demo needs a model").hint("use --model default")
    })?;
    let info = encoder.info();
    let schema = db.schema();
    out!(
        "hivlp demo: model {} v{} ({:?}, loaded in {:.2} s), fine {}-d f32, coarse {}-d i8",
        info.name,
        info.version,
        encoder.provider(),
        load.elapsed().as_secs_f64(),
        schema.fine_dim,
        schema.coarse_dim,
    );
    out!(
        "database: {} (temporary)\nimporting {} image–caption pairs from {}",
        db_path.display(),
        entries.len(),
        data.display()
    );
    let summary = import_entries(&db, &entries, 32, true)?;
    print_summary(&summary);

    let mut shown = Vec::with_capacity(queries.len());
    for query in &queries {
        let encode = Instant::now();
        let (label, query_image, encoded, target) = match query {
            DemoQuery::Text(text) => (
                format!("text: \"{text}\" → images"),
                None,
                text_query(&db, text)?,
                Target::Image,
            ),
            DemoQuery::Image(path) => (
                format!(
                    "image: {} → images",
                    path.file_name().unwrap_or_default().to_string_lossy()
                ),
                Some(path.to_string_lossy().into_owned()),
                image_query(&db, path)?,
                Target::Image,
            ),
        };
        let encode = encode.elapsed();
        let params = SearchParams {
            target,
            k: TOP_K,
            ..SearchParams::default()
        };
        let (hits, timing) = db.search_with_timing(&encoded, &params)?;
        let results = QueryResults {
            label: format!("{label}  (encode {:.1} ms)", ms(encode)),
            query_image,
            hits: hits
                .into_iter()
                .map(|h| ShownHit {
                    id: h.id,
                    score: h.score,
                    caption: h.caption,
                    uri: h.uri,
                })
                .collect(),
            timing: Some((timing.coarse, timing.fine)),
        };
        out!("");
        print_table(&results);
        shown.push(results);
    }

    let about = describe(&db, Path::new("demo database"))?;
    html::write_page(&args.html, "hivlp demo results", &about, &shown)
        .map_err(|e| CliError::other(format!("cannot write {}: {e}", args.html.display())))?;
    let page = std::path::absolute(&args.html).unwrap_or(args.html.clone());
    out!("\nresults page: {}", page.display());
    out!("demo finished in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_file_has_text_and_image_lines() {
        let parsed = parse_queries("# demo\na red bicycle\n\nimage: cat.png\n", Path::new("/d"));
        assert_eq!(
            parsed,
            vec![
                DemoQuery::Text("a red bicycle".into()),
                DemoQuery::Image(PathBuf::from("/d/cat.png")),
            ]
        );
    }
}
