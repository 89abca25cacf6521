//! Where an installed `hivlp` finds ONNX Runtime and the default model, with no checkout around.
//!
//! The default model is embedded in the binary (feature `embedded-model`, on by default) and
//! written once to the per-user data folder (`$XDG_DATA_HOME/hivlp`, else
//! `~/.local/share/hivlp`), under a name that carries its content hash; the Python wheel's
//! `hivlp` command is built without it, as the package registers its own copy. ONNX Runtime is looked for at `$ORT_DYLIB_PATH`, then at the per-user copy that
//! `hivlp setup` makes, then in an installed `onnxruntime` Python package (asked of `python3`),
//! then where the encoders look by themselves (next to the executable, `.ort/lib` of a parent).

use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use hivlp::Encoder;

use crate::CliResult;
use crate::error::CliError;

/// The file name of the runtime copy `hivlp setup` keeps in the data folder.
const RUNTIME_FILE: &str = "libonnxruntime.so";

/// Prepares what commands that encode need: the embedded model as the default bundle (unless
/// `$HIVLP_MODEL_DIR` is set) and the places ONNX Runtime may be (unless `$ORT_DYLIB_PATH` is).
pub fn prepare_model_use() -> CliResult {
    #[cfg(feature = "embedded-model")]
    if !is_set("HIVLP_MODEL_DIR") {
        Encoder::set_default_bundle_dir(embedded::extract(&data_dir()?)?);
    }
    if !is_set("ORT_DYLIB_PATH") {
        let user_copy = data_dir()?.join("lib").join(RUNTIME_FILE);
        if user_copy.is_file() {
            Encoder::add_runtime_candidate(user_copy);
        }
        if let Some(library) = python_onnxruntime() {
            Encoder::add_runtime_candidate(library);
        }
    }
    Ok(())
}

/// `hivlp setup`: writes the embedded model to the data folder and copies ONNX Runtime there
/// (from `runtime`, else `$ORT_DYLIB_PATH`, else an installed `onnxruntime` Python package), so
/// later runs need neither Python nor a checkout.
pub fn setup(runtime: Option<PathBuf>) -> CliResult {
    let data = data_dir()?;
    #[cfg(feature = "embedded-model")]
    out!("model: {}", embedded::extract(&data)?.display());
    let source = runtime
        .or_else(|| {
            std::env::var_os("ORT_DYLIB_PATH")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
        .or_else(python_onnxruntime)
        .ok_or_else(|| {
            CliError::usage("no ONNX Runtime library to copy").hint(
                "run `pip install onnxruntime` and then `hivlp setup` again, or \
                 `hivlp setup --runtime /path/to/libonnxruntime.so`",
            )
        })?;
    let lib = data.join("lib");
    fs::create_dir_all(&lib).map_err(|e| io_error("create", &lib, &e))?;
    let dest = lib.join(RUNTIME_FILE);
    // Copied under a temporary name and renamed, so a running `hivlp` never maps half a file.
    let partial = lib.join(format!(".{RUNTIME_FILE}.{}", std::process::id()));
    fs::copy(&source, &partial).map_err(|e| io_error("copy", &source, &e))?;
    fs::rename(&partial, &dest).map_err(|e| io_error("rename", &partial, &e))?;
    out!(
        "runtime: {} (copied from {})",
        dest.display(),
        source.display()
    );
    Ok(())
}

/// `$XDG_DATA_HOME/hivlp`, else `$HOME/.local/share/hivlp`.
fn data_dir() -> Result<PathBuf, CliError> {
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(xdg).join("hivlp"));
    }
    std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .map(|home| PathBuf::from(home).join(".local/share/hivlp"))
        .ok_or_else(|| {
            CliError::usage(
                "neither XDG_DATA_HOME nor HOME is set, so there is no per-user data folder",
            )
            .hint("set HOME, or set HIVLP_MODEL_DIR and ORT_DYLIB_PATH")
        })
}

/// `onnxruntime/capi/libonnxruntime.so*` of the `onnxruntime` (or `onnxruntime-gpu`) package
/// that `python3` on PATH imports, found without importing it; None without Python or package.
fn python_onnxruntime() -> Option<PathBuf> {
    let output = Command::new("python3")
        .args([
            "-c",
            "import importlib.util as u; s = u.find_spec('onnxruntime'); \
             print(s.submodule_search_locations[0] if s and s.submodule_search_locations else '')",
        ])
        .output()
        .ok()?;
    let package = String::from_utf8(output.stdout).ok()?;
    let capi = Path::new(package.trim()).join("capi");
    if package.trim().is_empty() {
        return None;
    }
    let mut libraries: Vec<OsString> = fs::read_dir(&capi)
        .ok()?
        .filter_map(|entry| entry.ok().map(|e| e.file_name()))
        .filter(|name| name.to_string_lossy().starts_with("libonnxruntime.so"))
        .collect();
    libraries.sort();
    libraries.pop().map(|name| capi.join(name))
}

fn is_set(var: &str) -> bool {
    std::env::var_os(var).is_some_and(|v| !v.is_empty())
}

fn io_error(op: &str, path: &Path, error: &io::Error) -> CliError {
    CliError::other(format!("cannot {op} {}: {error}", path.display()))
}

/// The default model compiled into the binary.
#[cfg(feature = "embedded-model")]
mod embedded {
    use std::fs;
    use std::hash::{Hash as _, Hasher as _};
    use std::path::{Path, PathBuf};

    use super::io_error;
    use crate::error::CliError;

    /// The files of `encoders/models/default`, compiled in.
    const FILES: [(&str, &[u8]); 5] = [
        (
            "model.toml",
            include_bytes!("../../../encoders/models/default/model.toml"),
        ),
        (
            "image.onnx",
            include_bytes!("../../../encoders/models/default/image.onnx"),
        ),
        (
            "text.onnx",
            include_bytes!("../../../encoders/models/default/text.onnx"),
        ),
        (
            "tokenizer.json",
            include_bytes!("../../../encoders/models/default/tokenizer.json"),
        ),
        (
            "MODEL_CARD.md",
            include_bytes!("../../../encoders/models/default/MODEL_CARD.md"),
        ),
    ];

    /// Writes the embedded bundle to `data/models/default-<hash>` unless it is there already;
    /// returns that folder. The hash names the content, so a rebuilt binary with another model
    /// never reads a stale copy.
    pub fn extract(data: &Path) -> Result<PathBuf, CliError> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        for (name, bytes) in FILES {
            name.hash(&mut hasher);
            bytes.hash(&mut hasher);
        }
        let models = data.join("models");
        let dir = models.join(format!("default-{:016x}", hasher.finish()));
        if FILES.iter().all(|(name, bytes)| {
            fs::metadata(dir.join(name)).is_ok_and(|m| m.len() == bytes.len() as u64)
        }) {
            return Ok(dir);
        }
        // Written beside and renamed into place, so two processes never see a partial bundle.
        let partial = models.join(format!(".partial-{}", std::process::id()));
        fs::create_dir_all(&partial).map_err(|e| io_error("create", &partial, &e))?;
        for (name, bytes) in FILES {
            let file = partial.join(name);
            fs::write(&file, bytes).map_err(|e| io_error("write", &file, &e))?;
        }
        if fs::rename(&partial, &dir).is_err() {
            // Another process won the race (or a damaged copy is in the way): keep one good copy.
            let _ = fs::remove_dir_all(&dir);
            fs::rename(&partial, &dir).map_err(|e| io_error("rename", &partial, &e))?;
        }
        Ok(dir)
    }
}
