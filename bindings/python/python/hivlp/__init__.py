"""hivlp: an embedded vector database for coarse-to-fine image–text retrieval.

The native module `hivlp._hivlp` holds the whole API; this package re-exports it and tells it,
before any encoder is made, where this installation keeps the default model (`models/default`
beside this file) and where the installed `onnxruntime` package keeps its library. Nothing is
loaded here: a vectors-only user never touches ONNX Runtime. `HIVLP_MODEL_DIR` and
`ORT_DYLIB_PATH` still override both.
"""

import importlib.util as _importlib_util
from pathlib import Path as _Path

from . import _hivlp
from ._hivlp import (
    NO_ID,
    CorruptionError,
    Database,
    ForkedError,
    Hit,
    HivlpError,
    InvalidInputError,
    LockedError,
    ModelError,
    __version__,
    open,
    verify,
)

__all__ = [
    "NO_ID",
    "CorruptionError",
    "Database",
    "ForkedError",
    "Hit",
    "HivlpError",
    "InvalidInputError",
    "LockedError",
    "ModelError",
    "__version__",
    "open",
    "verify",
]


def _onnxruntime_library() -> "_Path | None":
    """`onnxruntime/capi/libonnxruntime.so*` of the installed `onnxruntime` (or
    `onnxruntime-gpu`) package, found without importing it (importing loads the library)."""
    spec = _importlib_util.find_spec("onnxruntime")
    if spec is None or not spec.submodule_search_locations:
        return None
    for package in spec.submodule_search_locations:
        libraries = sorted((_Path(package) / "capi").glob("libonnxruntime.so*"))
        if libraries:
            return libraries[-1]
    return None


def _register_locations() -> None:
    manifest = _Path(__file__).resolve().parent / "models" / "default" / "model.toml"
    if manifest.is_file():
        # In a source checkout the bundle's files are links into encoders/models/default, and a
        # bundle may not read files outside its folder: register the folder they lead to.
        _hivlp._set_default_model_dir(str(manifest.resolve().parent))
    library = _onnxruntime_library()
    if library is not None:
        _hivlp._add_runtime_candidate(str(library))


_register_locations()
