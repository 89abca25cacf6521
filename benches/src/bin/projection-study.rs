//! Which coarse derivation ranks best: the Matryoshka / PCA-style prefix, the engine's PCA
//! projection fitted on stored fine vectors, or a random orthogonal projection. Two data
//! sets: the synthetic clustered vectors of the search benchmark, and the demo image–caption
//! pairs encoded by the bundled model (text → image search). Reports two-stage recall@10
//! against exact fine search by candidates M. See benches/README.md, section "Search".
//!
//! `cargo run --release -p hivlp-benches --bin projection-study -- --n 100000`

use std::path::{Path, PathBuf};

use clap::Parser;
use hivlp::synthetic::recall;
use hivlp::{
    CoarseDerivation, Database, Durability, ElemType, Embedding, Encoder, EncoderOptions, Hit,
    ImageInput, Item, Metric, Options, Query, Schema, SearchParams,
};
use hivlp_benches::search::{generator, queries};

#[derive(Parser, Debug)]
struct Args {
    /// Synthetic rows.
    #[arg(long, default_value_t = 100_000)]
    n: u64,
    /// Rows the PCA projection is fitted on (synthetic set).
    #[arg(long, default_value_t = 4096)]
    fit_rows: usize,
    /// Directory of `*.png` images with `*.txt` captions (first line used), encoded with the
    /// default model bundle.
    #[arg(long)]
    pairs: Option<PathBuf>,
}

const MS: [usize; 6] = [10, 20, 50, 100, 200, 500];

#[derive(Clone, Copy, Debug)]
enum Derivation {
    Prefix,
    Pca,
    Random,
}

fn options(fit_rows: usize) -> Options {
    Options {
        durability: Durability::Buffered,
        threads: Some(2),
        memtable_rows: 1_000_000,
        projection_fit_rows: fit_rows,
        ..Options::default()
    }
}

fn ids(hits: &[Hit]) -> Vec<u64> {
    hits.iter().map(|h| h.id).collect()
}

/// Mean recall@10 of the two-stage search against exact search, for each M.
fn recall_by_m(db: &Database, queries: &[Query], max_m: usize) -> hivlp::Result<Vec<Option<f64>>> {
    let exact = db.search_batch(
        queries,
        &SearchParams {
            exact: true,
            ..SearchParams::default()
        },
    )?;
    MS.iter()
        .map(|&m| {
            if m > max_m {
                return Ok(None);
            }
            let found = db.search_batch(
                queries,
                &SearchParams {
                    candidates: Some(m),
                    ..SearchParams::default()
                },
            )?;
            Ok(Some(
                found
                    .iter()
                    .zip(&exact)
                    .map(|(f, e)| recall(&ids(f), &ids(e)))
                    .sum::<f64>()
                    / queries.len() as f64,
            ))
        })
        .collect()
}

fn print_row(
    data: &str,
    derivation: Derivation,
    stats: [CoarseDerivation; 2],
    recalls: &[Option<f64>],
) {
    let cells: Vec<String> = recalls
        .iter()
        .map(|r| r.map_or("–".into(), |r| format!("{r:.4}")))
        .collect();
    println!(
        "| {data} | {derivation:?} ({:?}) | {} |",
        stats[0],
        cells.join(" | ")
    );
}

/// Builds a database of `items` (fine vectors, coarse per `derivation`) and measures it.
fn study(
    dir: &Path,
    data: &str,
    schema: &Schema,
    items: &[(Embedding, u64)],
    queries: &[Query],
    fit_rows: usize,
) -> hivlp::Result<()> {
    for derivation in [Derivation::Prefix, Derivation::Pca, Derivation::Random] {
        let path = dir.join(format!("{data}-{derivation:?}").replace(' ', "_"));
        let fit = match derivation {
            Derivation::Pca => fit_rows,
            _ => usize::MAX,
        };
        let db = Database::create(&path, schema.clone(), options(fit))?;
        let supplied = matches!(derivation, Derivation::Prefix);
        for chunk in items.chunks(10_000) {
            db.insert(
                chunk
                    .iter()
                    .map(|(e, id)| Item {
                        id: Some(*id),
                        image: Some(Embedding {
                            fine: e.fine.clone(),
                            coarse: if supplied { e.coarse.clone() } else { None },
                        }),
                        ..Item::default()
                    })
                    .collect(),
            )?;
        }
        let queries: Vec<Query> = queries
            .iter()
            .map(|q| Query {
                fine: q.fine.clone(),
                coarse: if supplied { q.coarse.clone() } else { None },
            })
            .collect();
        let recalls = recall_by_m(&db, &queries, items.len())?;
        print_row(data, derivation, db.stats().unwrap().coarse, &recalls);
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let temp = tempfile::tempdir()?;
    println!(
        "| data | coarse derivation | {} |",
        MS.iter()
            .map(|m| format!("M={m}"))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    println!("|---|---|{}", "---|".repeat(MS.len()));

    // Synthetic clustered vectors; the prefix is the top of a decaying variance spectrum.
    let g = generator();
    let items: Vec<(Embedding, u64)> = g
        .pairs(0, 0..args.n)
        .into_iter()
        .zip(0..)
        .map(|(p, id)| {
            (
                Embedding {
                    fine: p.fine,
                    coarse: Some(p.coarse),
                },
                id,
            )
        })
        .collect();
    let schema = hivlp_benches::search::schema(ElemType::I8);
    study(
        temp.path(),
        &format!("synthetic {}k, 512→64, i8", args.n / 1000),
        &schema,
        &items,
        &queries(100),
        args.fit_rows,
    )?;
    drop(items);

    // Real model: captions search the images of the demo set (text → image).
    let dir = args
        .pairs
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/demo"));
    let encoder = Encoder::load(&Encoder::default_bundle_dir(), EncoderOptions::default())?;
    let mut images: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "png") && p.with_extension("txt").exists())
        .collect();
    images.sort();
    let captions: Vec<String> = images
        .iter()
        .map(|p| {
            std::fs::read_to_string(p.with_extension("txt"))
                .map(|t| t.lines().next().unwrap_or_default().to_owned())
        })
        .collect::<Result<_, _>>()?;
    let inputs: Vec<ImageInput<'_>> = images.iter().map(|p| ImageInput::Path(p)).collect();
    let image_vectors = encoder.encode_images(&inputs)?;
    let caption_refs: Vec<&str> = captions.iter().map(String::as_str).collect();
    let text_vectors = encoder.encode_texts(&caption_refs)?;
    let info = encoder.info();
    let schema = Schema {
        fine_dim: info.fine_dim,
        coarse_dim: info.coarse_dim.unwrap_or(64),
        fine_type: ElemType::F32,
        coarse_type: ElemType::I8,
        metric: Metric::Cosine,
    };
    let items: Vec<(Embedding, u64)> = image_vectors.into_iter().zip(0..).collect();
    let queries: Vec<Query> = text_vectors.into_iter().map(Query::from).collect();
    study(
        temp.path(),
        &format!(
            "{} {} pairs, text→image, {}→{}, i8",
            info.name,
            items.len(),
            schema.fine_dim,
            schema.coarse_dim
        ),
        &schema,
        &items,
        &queries,
        items.len(),
    )?;
    Ok(())
}
