//! Where this installation keeps the default model and ONNX Runtime: the Python package
//! (`python/hivlp/__init__.py`) finds both at import and hands them over here, before any
//! encoder is made. Only paths are recorded; nothing loads until a model is used.

use std::path::PathBuf;

use engine::Encoder;
use pyo3::prelude::*;

/// Makes `dir` (the wheel's `hivlp/models/default`) the default bundle; `$HIVLP_MODEL_DIR`
/// still overrides.
#[pyfunction]
pub fn _set_default_model_dir(dir: PathBuf) {
    Encoder::set_default_bundle_dir(dir);
}

/// Adds `library` (the installed `onnxruntime` package's `libonnxruntime.so`) to the places
/// ONNX Runtime is looked for; `$ORT_DYLIB_PATH` still overrides.
#[pyfunction]
pub fn _add_runtime_candidate(library: PathBuf) {
    Encoder::add_runtime_candidate(library);
}
