//! Error types: one enum per operation family (loading a bundle, encoding inputs), plus a
//! top-level [`Error`] for callers that handle both the same way.

use std::fmt;
use std::io;
use std::path::PathBuf;

use thiserror::Error;

/// What went wrong reading or validating a bundle's `model.toml` and the files it names.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum BundleError {
    /// `model.toml` (or the bundle directory) could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file that could not be read.
        path: PathBuf,
        /// The underlying I/O error.
        source: io::Error,
    },
    /// `model.toml` is not valid TOML, has an unknown key, lacks a key, or a value has the wrong
    /// type; `key` is the dotted key (e.g. `image.size`) when it can be located.
    #[error("{}: {}{message}", path.display(), key.as_deref().map(|k| format!("key `{k}`: ")).unwrap_or_default())]
    Parse {
        /// The manifest.
        path: PathBuf,
        /// The dotted key at fault, when known.
        key: Option<String>,
        /// The parser's explanation.
        message: String,
    },
    /// A value parses but is not acceptable (zero size, coarse_dim > fine_dim, missing output
    /// name for the layout, ...).
    #[error("{}: key `{key}`: {message}", path.display())]
    Invalid {
        /// The manifest.
        path: PathBuf,
        /// The dotted key at fault.
        key: &'static str,
        /// Why the value is refused.
        message: String,
    },
    /// A file of the bundle lies outside the bundle directory: `model.toml` names an absolute
    /// path or one with `..`, or a file (or `model.toml` itself) is a symbolic link leading out.
    /// Bundles may come from untrusted places, so they may only read their own files.
    #[error("key `{key}` names {}, outside the bundle directory: {message}", file.display())]
    OutsideBundle {
        /// The dotted key naming the file (`model.toml` for the manifest itself).
        key: &'static str,
        /// The path as named (joined to the bundle directory when relative).
        file: PathBuf,
        /// How it leaves the directory.
        message: String,
    },
    /// A file named by `model.toml` (ONNX graph, tokenizer) cannot be read.
    #[error("key `{key}` names {}, which cannot be read: {source}", file.display())]
    MissingFile {
        /// The dotted key naming the file.
        key: &'static str,
        /// The resolved path.
        file: PathBuf,
        /// The underlying I/O error.
        source: io::Error,
    },
}

/// The ONNX Runtime shared library could not be found, loaded or initialised.
#[derive(Debug, Error, Clone)]
#[non_exhaustive]
pub enum RuntimeError {
    /// No `libonnxruntime` was found in any of the places searched.
    #[error(
        "ONNX Runtime library not found (looked at: {}); install it with `pip install onnxruntime` \
         (CUDA: `pip install onnxruntime-gpu`), for the CLI then `hivlp setup` to keep a per-user copy, \
         in a checkout `scripts/fetch-onnxruntime`; or set ORT_DYLIB_PATH to libonnxruntime.so",
        list_paths(tried)
    )]
    LibraryMissing {
        /// Every candidate path that was tried, in order.
        tried: Vec<PathBuf>,
    },
    /// The library exists but could not be loaded (wrong version, wrong architecture, missing
    /// dependencies).
    #[error(
        "cannot load ONNX Runtime from {}: {message}; reinstall it with `scripts/fetch-onnxruntime`",
        path.display()
    )]
    Load {
        /// The library file.
        path: PathBuf,
        /// The loader's explanation.
        message: String,
    },
    /// The library loaded but the ONNX Runtime environment could not be created.
    #[error("cannot create the ONNX Runtime environment: {message}")]
    Environment {
        /// ONNX Runtime's explanation.
        message: String,
    },
}

fn list_paths(paths: &[PathBuf]) -> String {
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    names.join(", ")
}

/// Which of the two towers an error concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tower {
    /// The image encoder (`[image]` in `model.toml`).
    Image,
    /// The text encoder (`[text]` in `model.toml`).
    Text,
}

impl fmt::Display for Tower {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Tower::Image => "image",
            Tower::Text => "text",
        })
    }
}

/// Failure of [`Encoder::load`](crate::Encoder::load).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum EncoderError {
    /// The bundle's manifest or files are wrong.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// ONNX Runtime is missing or unusable.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// ONNX Runtime refused a graph (not ONNX, unsupported operator, ...).
    #[error("{tower} graph {}: {message}", file.display())]
    Session {
        /// Which tower.
        tower: Tower,
        /// The `.onnx` file.
        file: PathBuf,
        /// ONNX Runtime's explanation.
        message: String,
    },
    /// The graph does not match what `model.toml` says (a named input/output is missing, the
    /// output width differs from `fine_dim`/`coarse_dim`).
    #[error("{tower} graph {}: key `{key}`: {message}", file.display())]
    Graph {
        /// Which tower.
        tower: Tower,
        /// The `.onnx` file.
        file: PathBuf,
        /// The dotted `model.toml` key at fault.
        key: &'static str,
        /// What does not match.
        message: String,
    },
    /// `tokenizer.json` could not be parsed or configured.
    #[error("tokenizer {}: {message}", path.display())]
    Tokenizer {
        /// The tokenizer file.
        path: PathBuf,
        /// The explanation.
        message: String,
    },
    /// The default bundle was asked for, but this process knows none: `$HIVLP_MODEL_DIR` is
    /// unset and the host (Python package, CLI) registered no bundle directory.
    #[error(
        "no default model bundle is known: set HIVLP_MODEL_DIR to a bundle folder, or install the \
         Python package (`pip install hivlp`, which ships it) or the CLI (`cargo install --path bindings/cli`, \
         which embeds it)"
    )]
    NoDefaultBundle,
    /// CUDA was asked for, but this build of `hivlp-encoders` lacks the `cuda` cargo feature.
    #[error("CUDA requested but hivlp-encoders was built without the `cuda` feature")]
    CudaNotBuilt,
    /// The CUDA execution provider failed to register and CPU fallback was not allowed.
    #[error(
        "CUDA execution provider unavailable: {message} (install the GPU runtime with \
         `ORT_FLAVOR=gpu scripts/fetch-onnxruntime` and put the CUDA 13 / cuDNN 9 libraries on \
         LD_LIBRARY_PATH, or set cpu_fallback)"
    )]
    Cuda {
        /// ONNX Runtime's explanation.
        message: String,
    },
    /// An [`EncoderOptions`](crate::EncoderOptions) field is out of range.
    #[error("invalid encoder option `{field}`: {message}")]
    InvalidOptions {
        /// The option's field name.
        field: &'static str,
        /// Why it is refused.
        message: String,
    },
}

/// Why one image could not be turned into a model input.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ImageFailure {
    /// The file could not be read.
    #[error("cannot read file: {0}")]
    Read(#[source] io::Error),
    /// Zero bytes.
    #[error("empty input (0 bytes)")]
    Empty,
    /// The bytes are not a known image format (supported: JPEG, PNG, WebP, GIF, BMP).
    #[error("unrecognised image format (supported: JPEG, PNG, WebP, GIF, BMP)")]
    UnknownFormat,
    /// A known format, but a feature of it this build cannot decode.
    #[error("unsupported image: {0}")]
    Unsupported(String),
    /// Corrupt or truncated image data.
    #[error("corrupt or truncated image data: {0}")]
    Corrupt(String),
    /// The header announces more pixels than
    /// [`EncoderOptions::max_pixels`](crate::EncoderOptions::max_pixels); refused before decoding.
    #[error("image of {width}x{height} pixels exceeds the limit of {max_pixels} pixels")]
    TooLarge {
        /// Width from the header.
        width: u32,
        /// Height from the header.
        height: u32,
        /// The configured limit.
        max_pixels: u64,
    },
    /// The decoder hit a memory limit while decoding.
    #[error("decoder memory limit exceeded: {0}")]
    LimitExceeded(String),
}

/// Failure of [`Encoder::encode_images`](crate::Encoder::encode_images) or
/// [`Encoder::encode_texts`](crate::Encoder::encode_texts). Nothing is returned for any item of
/// the call when one fails.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// Input `index` of the slice could not be decoded.
    #[error("image #{index}{}: {reason}", path.as_ref().map(|p| format!(" ({})", p.display())).unwrap_or_default())]
    Image {
        /// Position in the slice passed to `encode_images`.
        index: usize,
        /// The file, for [`ImageInput::Path`](crate::ImageInput::Path).
        path: Option<PathBuf>,
        /// What is wrong with it.
        reason: ImageFailure,
    },
    /// Text `index` could not be tokenized.
    #[error("text #{index}: {message}")]
    Text {
        /// Position in the slice passed to `encode_texts`.
        index: usize,
        /// The tokenizer's explanation.
        message: String,
    },
    /// ONNX Runtime failed while running a graph.
    #[error("{tower} inference failed: {message}")]
    Inference {
        /// Which tower.
        tower: Tower,
        /// ONNX Runtime's explanation.
        message: String,
    },
    /// The graph produced something unusable (wrong shape, NaN or infinity).
    #[error("{tower} graph output is unusable: {message}")]
    Output {
        /// Which tower.
        tower: Tower,
        /// What is wrong.
        message: String,
    },
}

impl EncodeError {
    /// The index of the failing input, when the failure is tied to one.
    pub fn index(&self) -> Option<usize> {
        match self {
            EncodeError::Image { index, .. } | EncodeError::Text { index, .. } => Some(*index),
            EncodeError::Inference { .. } | EncodeError::Output { .. } => None,
        }
    }
}

/// Any error of this crate.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// Loading a bundle failed.
    #[error(transparent)]
    Load(#[from] EncoderError),
    /// Encoding failed.
    #[error(transparent)]
    Encode(#[from] EncodeError),
}
