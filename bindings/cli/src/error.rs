//! One error type for the command line: a one-line message, an optional hint, and an exit code
//! that tells scripts what kind of failure it was.

use std::fmt;

/// Something else went wrong (I/O, a failed import, an engine error without a closer class).
pub const EXIT_OTHER: i32 = 1;
/// The command line or its input files were wrong (clap uses 2 as well).
pub const EXIT_USAGE: i32 = 2;
/// The database failed a checksum or structural check.
pub const EXIT_CORRUPTION: i32 = 3;
/// Another process holds the database's write lock.
pub const EXIT_LOCKED: i32 = 4;
/// The model bundle is missing, broken or does not match the database.
pub const EXIT_MODEL: i32 = 5;

/// What kind of failure; decides the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Usage,
    InvalidInput,
    Corruption,
    Locked,
    Model,
    Other,
}

#[derive(Debug)]
pub struct CliError {
    pub kind: Kind,
    pub message: String,
    pub hint: Option<String>,
}

impl CliError {
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        CliError {
            kind,
            message: message.into(),
            hint: None,
        }
    }

    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(Kind::Usage, message)
    }

    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::new(Kind::InvalidInput, message)
    }

    pub fn other(message: impl Into<String>) -> Self {
        Self::new(Kind::Other, message)
    }

    /// Adds (or replaces) the hint printed under the message.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn exit_code(&self) -> i32 {
        match self.kind {
            Kind::Usage | Kind::InvalidInput => EXIT_USAGE,
            Kind::Corruption => EXIT_CORRUPTION,
            Kind::Locked => EXIT_LOCKED,
            Kind::Model => EXIT_MODEL,
            Kind::Other => EXIT_OTHER,
        }
    }

    /// Prints `error: …` and `hint: …` to stderr, one line each.
    pub fn report(&self) {
        eprintln!("error: {}", one_line(&self.message));
        if let Some(hint) = &self.hint {
            eprintln!("hint: {}", one_line(hint));
        }
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

/// Whether the engine rejected an input (a bad vector, an undecodable image, untokenizable
/// text) rather than failing itself.
pub fn is_input_error(error: &hivlp::Error) -> bool {
    matches!(
        error,
        hivlp::Error::InvalidInput(_)
            | hivlp::Error::Model(hivlp::ModelError::Encode(
                hivlp::EncodeError::Image { .. } | hivlp::EncodeError::Text { .. }
            ))
    )
}

impl From<hivlp::Error> for CliError {
    fn from(error: hivlp::Error) -> Self {
        let message = error.to_string();
        if let hivlp::Error::InvalidInput(hivlp::InvalidInput::Dimensions(_)) = error {
            return CliError::new(Kind::InvalidInput, message).hint(
                "a database without a model takes --fine-dim and --coarse-dim, e.g. \
                 `hivlp create DB --model none --fine-dim 512 --coarse-dim 64`; a model fixes them",
            );
        }
        if is_input_error(&error) {
            return CliError::new(Kind::InvalidInput, message);
        }
        match &error {
            hivlp::Error::Locked { .. } => CliError::new(Kind::Locked, message)
                .hint("another process has this database open for writing; close it or wait"),
            hivlp::Error::Corruption(_) => CliError::new(Kind::Corruption, message).hint(
                "run `hivlp verify DB` for a full report; restore from a snapshot if it fails",
            ),
            hivlp::Error::NotFound { path } => CliError::new(Kind::Usage, message)
                .hint(format!("create one with `hivlp create {}`", path.display())),
            hivlp::Error::AlreadyExists { .. } => CliError::new(Kind::Usage, message)
                .hint("choose a new path, or remove the old one first"),
            hivlp::Error::Model(hivlp::ModelError::Load(hivlp::EncoderError::Runtime(_))) => {
                CliError::new(Kind::Model, message).hint(
                    "run `pip install onnxruntime` (CUDA: onnxruntime-gpu) and then `hivlp setup`, \
                     or `hivlp setup --runtime /path/to/libonnxruntime.so`, or set ORT_DYLIB_PATH",
                )
            }
            hivlp::Error::Model(_) => CliError::new(Kind::Model, message).hint(
                "check --model (\"default\" is the model built into hivlp, a bundle folder, or \"none\")",
            ),
            _ => CliError::new(Kind::Other, message),
        }
    }
}

impl From<std::io::Error> for CliError {
    fn from(error: std::io::Error) -> Self {
        CliError::other(error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_distinct_per_class() {
        let codes = [
            EXIT_OTHER,
            EXIT_USAGE,
            EXIT_CORRUPTION,
            EXIT_LOCKED,
            EXIT_MODEL,
        ];
        for (i, a) in codes.iter().enumerate() {
            assert!(codes[i + 1..].iter().all(|b| a != b));
        }
    }

    #[test]
    fn messages_are_flattened_to_one_line() {
        assert_eq!(one_line("a\n  b\tc "), "a b c");
    }
}
