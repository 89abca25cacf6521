//! The process-wide ONNX Runtime environment and session construction.
//!
//! `ort` is built with `load-dynamic`: the shared library is opened at run time. It is looked
//! for, in order, at `$ORT_DYLIB_PATH` (if set, nothing else is tried), at the paths the host
//! registered with [`add_library_candidate`] (the Python package hands over the installed
//! `onnxruntime` package's library, the CLI its per-user copy and that package's), next to the
//! running executable and in a `.ort/lib/` of any of its parent directories (what
//! `scripts/fetch-onnxruntime` installs in a checkout), and finally by bare name through the
//! dynamic loader's search path. No path of the build machine is compiled in: an installed
//! binary or wheel looks only where it runs.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::environment::Environment;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use parking_lot::Mutex;

use crate::error::RuntimeError;

static ENVIRONMENT: OnceLock<Environment> = OnceLock::new();
static INIT: Mutex<()> = Mutex::new(());
static HOST_CANDIDATES: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

const LIBRARY: &str = "libonnxruntime.so";

/// The one ONNX Runtime environment of this process, created on first use. A failed attempt is
/// not cached, so installing the library and retrying works without a restart.
pub(crate) fn environment() -> Result<&'static Environment, RuntimeError> {
    if let Some(env) = ENVIRONMENT.get() {
        return Ok(env);
    }
    let _guard = INIT.lock();
    if let Some(env) = ENVIRONMENT.get() {
        return Ok(env);
    }
    let path = locate_library()?;
    let builder = ort::init_from(&path).map_err(|e| RuntimeError::Load {
        path: path.clone(),
        message: e.to_string(),
    })?;
    let env = builder
        .with_name("hivlp")
        .with_telemetry(false)
        .build()
        .map_err(|e| RuntimeError::Environment {
            message: e.to_string(),
        })?;
    Ok(ENVIRONMENT.get_or_init(|| env))
}

/// Registers a place where the host found the library (tried in registration order, after
/// `$ORT_DYLIB_PATH`); only the path is kept, nothing loads until the first encoder needs it.
pub(crate) fn add_library_candidate(path: PathBuf) {
    let mut candidates = HOST_CANDIDATES.lock();
    if !candidates.contains(&path) {
        candidates.push(path);
    }
}

fn locate_library() -> Result<PathBuf, RuntimeError> {
    if let Some(path) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        return if path.exists() {
            Ok(path)
        } else {
            Err(RuntimeError::LibraryMissing { tried: vec![path] })
        };
    }
    let mut tried = HOST_CANDIDATES.lock().clone();
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        tried.push(dir.join(LIBRARY));
        tried.extend(dir.ancestors().map(|a| a.join(".ort/lib").join(LIBRARY)));
    }
    if let Some(found) = tried.iter().find(|p| p.is_file()) {
        return Ok(found.clone());
    }
    // Last resort: let the dynamic loader search LD_LIBRARY_PATH and the system directories.
    if library_on_loader_path() {
        return Ok(PathBuf::from(LIBRARY));
    }
    tried.push(PathBuf::from(LIBRARY));
    Err(RuntimeError::LibraryMissing { tried })
}

/// Whether `LD_LIBRARY_PATH` or the usual system directories hold the library (checked here so
/// a miss gives our message rather than the loader's).
fn library_on_loader_path() -> bool {
    let from_env = std::env::var_os("LD_LIBRARY_PATH")
        .map(|v| std::env::split_paths(&v).collect::<Vec<_>>())
        .unwrap_or_default();
    let system = [
        "/usr/local/lib",
        "/usr/lib",
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib64",
    ]
    .map(PathBuf::from);
    from_env
        .iter()
        .chain(system.iter())
        .any(|dir| dir.join(LIBRARY).is_file())
}

/// Which execution provider a session runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Provider {
    /// ONNX Runtime's CPU provider.
    Cpu,
    /// ONNX Runtime's CUDA provider (nodes it cannot run still fall back to CPU inside the graph).
    Cuda,
}

impl std::fmt::Display for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Provider::Cpu => "cpu",
            Provider::Cuda => "cuda",
        })
    }
}

/// Why a session could not be made.
pub(crate) enum SessionFailure {
    /// Registering the CUDA provider failed.
    Cuda(String),
    /// ONNX Runtime refused the graph or the options.
    Graph(String),
}

/// Builds a session for `file` on `provider`, with `intra_threads` intra-op threads (ONNX
/// Runtime's default when `None`).
pub(crate) fn session(
    env: &Environment,
    file: &Path,
    provider: Provider,
    intra_threads: Option<usize>,
) -> Result<Session, SessionFailure> {
    let graph = |e: &dyn std::fmt::Display| SessionFailure::Graph(e.to_string());
    let mut builder = Session::builder(env)
        .map_err(|e| graph(&e))?
        .with_optimization_level(GraphOptimizationLevel::All)
        .map_err(|e| graph(&e))?;
    if let Some(threads) = intra_threads {
        builder = builder.with_intra_threads(threads).map_err(|e| graph(&e))?;
    }
    if provider == Provider::Cuda {
        builder = register_cuda(builder)?;
    }
    builder.commit_from_file(file).map_err(|e| graph(&e))
}

#[cfg(feature = "cuda")]
fn register_cuda(
    builder: ort::session::builder::SessionBuilder,
) -> Result<ort::session::builder::SessionBuilder, SessionFailure> {
    builder
        .with_execution_providers([ort::ep::CUDA::default().build().error_on_failure()])
        .map_err(|e| SessionFailure::Cuda(e.to_string()))
}

#[cfg(not(feature = "cuda"))]
fn register_cuda(
    _builder: ort::session::builder::SessionBuilder,
) -> Result<ort::session::builder::SessionBuilder, SessionFailure> {
    Err(SessionFailure::Cuda(
        "hivlp-encoders was built without the `cuda` feature".into(),
    ))
}
