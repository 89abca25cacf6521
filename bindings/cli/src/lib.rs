//! The `hivlp` command line: create, import into, search and maintain a hivlp database, and run
//! the demo on the bundled data.
//!
//! Exit codes: 0 success, 1 other failure, 2 usage or invalid input, 3 corruption, 4 locked,
//! 5 model problem (see [`error`]).
//!
//! A library with one entry point, [`run`], so that the `hivlp` binary and the Python wheel's
//! `hivlp` console command are the same code.

/// `println!` that does not panic when stdout is a closed pipe (`hivlp … | head`).
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::print_line(format_args!($($arg)*))
    };
}

mod commands;
mod demo;
mod error;
mod html;
mod import;
mod locations;
mod sources;

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use hivlp::{ElemType, Metric};

use crate::error::CliError;

#[derive(Parser)]
#[command(
    name = "hivlp",
    version,
    about = "Embedded vector database for coarse-to-fine image–text retrieval",
    after_help = "Exit codes: 0 ok, 1 other error, 2 usage/invalid input, 3 corruption, 4 locked, 5 model."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create an empty database.
    Create(CreateArgs),
    /// Import image–caption pairs from a folder (images + sidecar .txt captions), JSONL or CSV.
    /// Re-running skips images already imported.
    Import(ImportArgs),
    /// Search by text or by image; prints a table, JSON or an HTML page.
    Search(SearchArgs),
    /// Delete items by id.
    Delete {
        /// The database folder.
        db: PathBuf,
        /// Ids to delete.
        #[arg(required = true)]
        ids: Vec<u64>,
    },
    /// Replace an item's metadata and/or caption, keeping its vectors (nothing is re-encoded).
    ///
    /// Example: hivlp update photos.hivlp 42 --metadata '{"year": 2021, "tags": ["beach"]}'
    Update {
        /// The database folder.
        db: PathBuf,
        /// The item's id.
        id: u64,
        /// New metadata: a JSON value (an object's top-level keys become filterable fields).
        #[arg(long, value_name = "JSON")]
        metadata: Option<String>,
        /// New caption.
        #[arg(long, conflicts_with = "no_caption")]
        caption: Option<String>,
        /// Remove the caption.
        #[arg(long)]
        no_caption: bool,
    },
    /// Merge segments and drop deleted rows.
    Compact {
        /// The database folder.
        db: PathBuf,
    },
    /// Write a consistent copy of the database to DEST (a new folder).
    Snapshot {
        /// The database folder.
        db: PathBuf,
        /// Where the copy goes; must not exist yet.
        dest: PathBuf,
    },
    /// Show counts, sizes and the schema.
    Stats {
        /// The database folder.
        db: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Check every file's checksums and structure; exits 3 if anything is corrupt.
    Verify {
        /// The database folder.
        db: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Build a database from the bundled demo data in a temporary folder and query it.
    Demo(DemoArgs),
    /// Keep what an installed `hivlp` needs in the per-user data folder (`~/.local/share/hivlp`):
    /// the embedded default model and a copy of ONNX Runtime, so no checkout or Python is needed.
    Setup {
        /// The ONNX Runtime library to copy (default: `$ORT_DYLIB_PATH`, else the installed
        /// `onnxruntime` Python package's).
        #[arg(long, value_name = "FILE")]
        runtime: Option<PathBuf>,
    },
}

/// Which model encodes images and text.
#[derive(Args, Clone)]
struct ModelArg {
    /// "default" (the bundled model), a model bundle folder, or "none" (vectors only).
    #[arg(long, default_value = "default", value_name = "default|none|DIR")]
    model: String,
}

#[derive(Args)]
struct CreateArgs {
    /// The database folder.
    db: PathBuf,
    #[command(flatten)]
    model: ModelArg,
    /// Element type of the coarse vectors scanned on every query: i8, f16 or f32.
    #[arg(long, default_value = "i8")]
    coarse_dtype: ElemType,
    /// Fine dimension; required with --model none, otherwise taken from the model.
    #[arg(long)]
    fine_dim: Option<usize>,
    /// Coarse dimension; required with --model none, otherwise taken from the model.
    #[arg(long)]
    coarse_dim: Option<usize>,
    /// Similarity for --model none (a model bundle names its own): cosine or ip (inner product).
    #[arg(long, default_value = "cosine")]
    metric: Metric,
}

#[derive(Args)]
struct ImportArgs {
    /// The database folder.
    db: PathBuf,
    /// A folder of images with sidecar .txt captions, or a .jsonl / .csv file.
    source: PathBuf,
    #[command(flatten)]
    model: ModelArg,
    /// Pairs encoded and committed together.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=4096))]
    batch_size: u32,
    /// Do not add the images' EXIF capture time, camera and GPS position (`taken_at`,
    /// `camera`, `gps_lat`, `gps_lon`) to their metadata.
    #[arg(long)]
    no_exif: bool,
}

#[derive(Args)]
#[command(
    group(clap::ArgGroup::new("query").required(true).multiple(true)),
    after_help = "Example: hivlp search photos.hivlp --text \"a dog\" --where \"year >= 2020 AND 'beach' IN tags\""
)]
struct SearchArgs {
    /// The database folder.
    db: PathBuf,
    /// Query text (with --image, the two are combined).
    #[arg(long, group = "query")]
    text: Option<String>,
    /// Query image file.
    #[arg(long, group = "query")]
    image: Option<PathBuf>,
    /// Text to move the results away from (repeatable), e.g. --text beach --minus-text people;
    /// weight -0.5 unless --weights says otherwise.
    #[arg(long, value_name = "TEXT")]
    minus_text: Vec<String>,
    /// Weights of the query parts, comma-separated, in the order --text, --image, then each
    /// --minus-text (e.g. --weights 1,-0.3); default 1 for each part and -0.5 for minus texts.
    #[arg(
        long,
        value_delimiter = ',',
        allow_hyphen_values = true,
        value_name = "W,W,..."
    )]
    weights: Option<Vec<f32>>,
    /// Leave out hits scoring below this (fewer than k rather than unrelated results).
    #[arg(long, value_name = "SCORE", allow_hyphen_values = true)]
    min_score: Option<f32>,
    /// Count near-duplicates once: drop a hit whose cosine similarity to a better hit is at
    /// least this (e.g. 0.95).
    #[arg(long, value_name = "COSINE", allow_hyphen_values = true)]
    collapse: Option<f32>,
    /// Number of results.
    #[arg(short, long, default_value_t = 10)]
    k: usize,
    /// Candidates kept by the coarse scan for fine re-ranking (default: the engine's).
    #[arg(long)]
    candidates: Option<usize>,
    /// Which embeddings to search: the items' images or their captions.
    #[arg(long, value_enum, default_value_t = TargetArg::Image)]
    target: TargetArg,
    /// Exact fine search over every row instead of coarse-to-fine.
    #[arg(long)]
    exact: bool,
    /// Only items whose metadata matches this predicate, e.g. "year >= 2020 AND 'beach' IN
    /// tags" (=, !=, <, <=, >, >=, IN (..), NOT IN (..), CONTAINS, IS [NOT] NULL, AND, OR,
    /// NOT, id; strings in 'single quotes', timestamp '2021-07-01').
    #[arg(long = "where", value_name = "PREDICATE")]
    predicate: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Also write an HTML page with thumbnails and scores.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    #[command(flatten)]
    model: ModelArg,
}

#[derive(Args)]
struct DemoArgs {
    /// The demo data folder (images, .txt captions, queries.txt); the default is the checkout's,
    /// relative to the working folder (`scripts/demo` runs from the repository root), as no
    /// path of the build machine is compiled in.
    #[arg(long, default_value = "data/demo")]
    data: PathBuf,
    /// Where to write the results page.
    #[arg(long, default_value = "results.html")]
    html: PathBuf,
    #[command(flatten)]
    model: ModelArg,
}

#[derive(Clone, Copy, ValueEnum)]
enum TargetArg {
    Image,
    Text,
}

impl Command {
    /// The model a command encodes with, when it may load one.
    fn model(&self) -> Option<&ModelArg> {
        match self {
            Command::Create(args) => Some(&args.model),
            Command::Import(args) => Some(&args.model),
            Command::Search(args) => Some(&args.model),
            Command::Demo(args) => Some(&args.model),
            _ => None,
        }
    }
}

/// Runs the command line `args` (the program name first) and returns the exit code; usage
/// errors, `--help` and `--version` print as clap prints them.
pub fn run<I, T>(args: I) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(usage) => {
            // Printing fails only when stdout/stderr are gone; the exit code still tells.
            let _ = usage.print();
            return u8::try_from(usage.exit_code()).unwrap_or(1);
        }
    };
    let prepared = match cli.command.model() {
        Some(model) if model.model != "none" => locations::prepare_model_use(),
        _ => Ok(()),
    };
    let result = prepared.and_then(|()| match cli.command {
        Command::Create(args) => commands::create(args),
        Command::Import(args) => import::run(args),
        Command::Search(args) => commands::search(args),
        Command::Delete { db, ids } => commands::delete(&db, &ids),
        Command::Update {
            db,
            id,
            metadata,
            caption,
            no_caption,
        } => commands::update(&db, id, metadata, caption, no_caption),
        Command::Compact { db } => commands::compact(&db),
        Command::Snapshot { db, dest } => commands::snapshot(&db, &dest),
        Command::Stats { db, json } => commands::stats(&db, json),
        Command::Verify { db, json } => commands::verify(&db, json),
        Command::Demo(args) => demo::run(args),
        Command::Setup { runtime } => locations::setup(runtime),
    });
    match result {
        Ok(()) => 0,
        Err(error) => {
            error.report();
            u8::try_from(error.exit_code()).unwrap_or(1)
        }
    }
}

/// Writes one line to stdout; exits (successfully: the reader has what it wanted) if the
/// reader went away, and ignores other write errors as `println!` cannot report them either.
fn print_line(args: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    let written = stdout
        .write_fmt(args)
        .and_then(|()| stdout.write_all(b"\n"));
    if matches!(&written, Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe) {
        std::process::exit(0);
    }
}

/// Result of a command; the error is printed by `main`.
type CliResult = Result<(), CliError>;
