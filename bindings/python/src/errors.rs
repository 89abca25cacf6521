//! The exception hierarchy and the mapping from engine errors to it. Messages end with what to do.

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

create_exception!(
    hivlp,
    HivlpError,
    PyException,
    "Base class of every error raised by hivlp."
);
create_exception!(
    hivlp,
    LockedError,
    HivlpError,
    "Another handle or process has the database open for writing."
);
create_exception!(
    hivlp,
    CorruptionError,
    HivlpError,
    "A database file failed its checksum or structure checks."
);
create_exception!(
    hivlp,
    InvalidInputError,
    HivlpError,
    "An argument was rejected: wrong dimension, NaN, duplicate id, unreadable image, ..."
);
create_exception!(
    hivlp,
    ForkedError,
    HivlpError,
    "The handle was opened by another process: this is a child of os.fork() (multiprocessing's \
     default on Linux), which must open the database itself."
);
create_exception!(
    hivlp,
    ModelError,
    HivlpError,
    "The model bundle is missing, broken, or does not match the database."
);

/// Converts an engine error into the matching Python exception, with a hint on what to do.
pub fn map_error(error: engine::Error) -> PyErr {
    let message = error.to_string();
    match error {
        engine::Error::Locked { .. } => LockedError::new_err(format!(
            "{message}; close the other handle (db.close()) or process first, or open with read_only=True"
        )),
        engine::Error::Forked(_) => ForkedError::new_err(format!(
            "{message} (read_only=True beside the parent's writer), or use multiprocessing's \
             \"spawn\" or \"forkserver\" start method"
        )),
        engine::Error::Corruption(_) => CorruptionError::new_err(format!(
            "{message}; run hivlp.verify(path) for a full report and restore from a snapshot"
        )),
        engine::Error::InvalidInput(_)
        | engine::Error::NotFound { .. }
        | engine::Error::AlreadyExists { .. }
        | engine::Error::ReadOnly => InvalidInputError::new_err(message),
        // An undecodable image or untokenizable text is the caller's input, not the model.
        engine::Error::Model(engine::ModelError::Encode(
            engine::EncodeError::Image { .. } | engine::EncodeError::Text { .. },
        )) => InvalidInputError::new_err(message),
        engine::Error::Model(_) => ModelError::new_err(format!(
            "{message}; pass model=\"default\", a bundle folder, or None for vectors only"
        )),
        _ => HivlpError::new_err(message),
    }
}
