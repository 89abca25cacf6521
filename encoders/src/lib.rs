//! `hivlp-encoders`: the image and text towers of a hivlp model bundle, run with ONNX Runtime.
//!
//! An [`Encoder`] loads a bundle directory (`model.toml`, `image.onnx`, `text.onnx`,
//! `tokenizer.json`; the format is in `encoders/README.md`) and turns images and captions into
//! [`Embedding`]s: a fine vector and, unless the bundle is `fine_only`, a coarse one. With metric
//! `cosine` both are L2-normalised.
//!
//! ```
//! use hivlp_encoders::{Encoder, EncoderOptions, ImageInput};
//! use std::path::Path;
//!
//! let encoder = Encoder::load(&Encoder::default_bundle_dir(), EncoderOptions::default())?;
//! let texts = encoder.encode_texts(&["a red bicycle", "a cat on a sofa"])?;
//! # let bike = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/image_wide.png");
//! let images = encoder.encode_images(&[ImageInput::Path(Path::new(bike))])?;
//! let score: f32 = texts[0].fine.iter().zip(&images[0].fine).map(|(a, b)| a * b).sum();
//! println!("{} on {}: {score}", encoder.info().name, encoder.provider());
//! # Ok::<(), hivlp_encoders::Error>(())
//! ```
//!
//! Behaviour on awkward inputs: texts longer than the bundle's `max_length` tokens are truncated;
//! the empty text encodes to the embedding of the special tokens alone; an image that cannot be
//! read, is not JPEG/PNG/WebP/GIF/BMP, is corrupt or truncated, or whose header declares more
//! than [`EncoderOptions::max_pixels`] pixels yields [`EncodeError::Image`] naming its index (and
//! path), and no embeddings for the rest of the call.

mod bundle;
mod error;
mod preprocess;
mod resample;
mod runtime;
mod text;

use std::path::{Path, PathBuf};

use ort::session::Session;
use ort::value::TensorRef;
use parking_lot::Mutex;
use rayon::prelude::*;

pub use crate::bundle::{
    Bundle, BundleInfo, ChannelOrder, ImageSpec, Interpolation, Layout, MANIFEST, Metric,
    OutputNames, ResizeMode, TextSpec,
};
pub use crate::error::{
    BundleError, EncodeError, EncoderError, Error, ImageFailure, RuntimeError, Tower,
};
pub use crate::preprocess::image_tensor;
pub use crate::runtime::Provider;

use crate::runtime::SessionFailure;
use crate::text::{TextTokenizer, TokenBatch};

/// The default bundle the host registered ([`Encoder::set_default_bundle_dir`]).
static DEFAULT_BUNDLE: Mutex<Option<PathBuf>> = Mutex::new(None);

/// The vectors of one image or text.
#[derive(Debug, Clone, PartialEq)]
pub struct Embedding {
    /// The fine (full-width) vector, `fine_dim` long.
    pub fine: Vec<f32>,
    /// The coarse vector, `coarse_dim` long; `None` for `fine_only` bundles.
    pub coarse: Option<Vec<f32>>,
}

/// An image to encode: a file, or encoded bytes already in memory (JPEG, PNG, WebP, GIF, BMP).
#[derive(Debug, Clone, Copy)]
pub enum ImageInput<'a> {
    /// A file to read.
    Path(&'a Path),
    /// The bytes of an encoded image.
    Bytes(&'a [u8]),
}

/// Default for [`EncoderOptions::max_pixels`]: 100 megapixels.
pub const DEFAULT_MAX_PIXELS: u64 = 100_000_000;

/// How an [`Encoder`] runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncoderOptions {
    /// Inputs per graph run; longer slices are split. Default 32.
    pub batch_size: usize,
    /// ONNX Runtime intra-op threads per graph; `None` lets ONNX Runtime choose (one per core).
    pub intra_threads: Option<usize>,
    /// Images whose header declares more pixels are refused before decoding (decompression-bomb
    /// guard). Default [`DEFAULT_MAX_PIXELS`].
    pub max_pixels: u64,
    /// Run on CUDA (needs the `cuda` feature and the GPU build of ONNX Runtime). Defaults to
    /// whether the `cuda` feature is on.
    pub cuda: bool,
    /// If CUDA cannot be used, run on CPU instead of failing. Default false.
    pub cpu_fallback: bool,
}

impl Default for EncoderOptions {
    fn default() -> Self {
        EncoderOptions {
            batch_size: 32,
            intra_threads: None,
            max_pixels: DEFAULT_MAX_PIXELS,
            cuda: cfg!(feature = "cuda"),
            cpu_fallback: false,
        }
    }
}

/// A loaded bundle: both towers, the tokenizer and the preprocessing. `Send + Sync`; graph runs
/// of one tower are serialised (ONNX Runtime sessions are not re-entrant), while decoding and
/// tokenizing of concurrent calls proceed in parallel.
pub struct Encoder {
    bundle: Bundle,
    options: EncoderOptions,
    provider: Provider,
    fallback_reason: Option<String>,
    tokenizer: TextTokenizer,
    image: Mutex<Session>,
    text: Mutex<Session>,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder")
            .field("info", self.info())
            .field("provider", &self.provider)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Encoder {
    /// Loads the bundle in `bundle_dir`: parses `model.toml`, hashes the files, loads ONNX
    /// Runtime (once per process), opens both graphs and checks their inputs and outputs
    /// against the manifest.
    ///
    /// ```
    /// use hivlp_encoders::{Encoder, EncoderOptions};
    /// let options = EncoderOptions { batch_size: 64, intra_threads: Some(2), ..Default::default() };
    /// let encoder = Encoder::load(&Encoder::default_bundle_dir(), options)?;
    /// let info = encoder.info();
    /// println!("{} v{} ({}) on {}", info.name, info.version, info.content_hash, encoder.provider());
    /// # Ok::<(), hivlp_encoders::EncoderError>(())
    /// ```
    pub fn load(bundle_dir: &Path, opts: EncoderOptions) -> Result<Encoder, EncoderError> {
        if bundle_dir.as_os_str().is_empty() {
            return Err(EncoderError::NoDefaultBundle);
        }
        if opts.batch_size == 0 {
            return Err(EncoderError::InvalidOptions {
                field: "batch_size",
                message: "must be at least 1".into(),
            });
        }
        if opts.intra_threads == Some(0) {
            return Err(EncoderError::InvalidOptions {
                field: "intra_threads",
                message: "must be at least 1 (or None for ONNX Runtime's default)".into(),
            });
        }
        if opts.max_pixels == 0 {
            return Err(EncoderError::InvalidOptions {
                field: "max_pixels",
                message: "must be at least 1".into(),
            });
        }
        if opts.cuda && !cfg!(feature = "cuda") {
            return Err(EncoderError::CudaNotBuilt);
        }
        let bundle = Bundle::open(bundle_dir)?;
        let tokenizer = TextTokenizer::load(&bundle.text().tokenizer, bundle.text().max_length)
            .map_err(|message| EncoderError::Tokenizer {
                path: bundle.text().tokenizer.clone(),
                message,
            })?;
        let env = runtime::environment()?;

        let open = |tower: Tower, file: &Path, provider: Provider| {
            runtime::session(env, file, provider, opts.intra_threads).map_err(|f| match f {
                SessionFailure::Cuda(message) => OpenFailure::Cuda(message),
                SessionFailure::Graph(message) => OpenFailure::Fatal(EncoderError::Session {
                    tower,
                    file: file.to_path_buf(),
                    message,
                }),
            })
        };
        let open_both = |provider: Provider| -> Result<(Session, Session), OpenFailure> {
            Ok((
                open(Tower::Image, &bundle.image().onnx, provider)?,
                open(Tower::Text, &bundle.text().onnx, provider)?,
            ))
        };
        let wanted = if opts.cuda {
            Provider::Cuda
        } else {
            Provider::Cpu
        };
        let (provider, fallback_reason, (image, text)) = match open_both(wanted) {
            Ok(sessions) => (wanted, None, sessions),
            Err(OpenFailure::Cuda(reason)) if opts.cpu_fallback => (
                Provider::Cpu,
                Some(reason),
                open_both(Provider::Cpu).map_err(OpenFailure::into_error)?,
            ),
            Err(failure) => return Err(failure.into_error()),
        };
        check_graph(&bundle, Tower::Image, &image)?;
        check_graph(&bundle, Tower::Text, &text)?;
        Ok(Encoder {
            bundle,
            options: opts,
            provider,
            fallback_reason,
            tokenizer,
            image: Mutex::new(image),
            text: Mutex::new(text),
        })
    }

    /// `$HIVLP_MODEL_DIR` when set, else the bundle the host registered with
    /// [`Encoder::set_default_bundle_dir`] (the Python package's copy, the CLI's extracted
    /// one); empty when neither is known, which [`Encoder::load`] refuses with
    /// [`EncoderError::NoDefaultBundle`]. Nothing of the build machine is compiled in: cargo
    /// runs in a checkout get `HIVLP_MODEL_DIR` from `.cargo/config.toml`.
    pub fn default_bundle_dir() -> PathBuf {
        match std::env::var_os("HIVLP_MODEL_DIR") {
            Some(dir) if !dir.is_empty() => PathBuf::from(dir),
            _ => DEFAULT_BUNDLE.lock().clone().unwrap_or_default(),
        }
    }

    /// Makes `dir` the default bundle of this process (`$HIVLP_MODEL_DIR` still overrides).
    pub fn set_default_bundle_dir(dir: PathBuf) {
        *DEFAULT_BUNDLE.lock() = Some(dir);
    }

    /// Registers a place where the host found the ONNX Runtime library; tried after
    /// `$ORT_DYLIB_PATH`, in registration order. Nothing loads until an encoder is made.
    pub fn add_runtime_candidate(library: PathBuf) {
        runtime::add_library_candidate(library);
    }

    /// Name, version, content hash, dimensions, layout and metric of the loaded bundle.
    pub fn info(&self) -> &BundleInfo {
        self.bundle.info()
    }

    /// The whole parsed bundle (preprocessing and tensor names included).
    pub fn bundle(&self) -> &Bundle {
        &self.bundle
    }

    /// The execution provider the sessions really run on.
    pub fn provider(&self) -> Provider {
        self.provider
    }

    /// When CUDA was asked for but the encoder fell back to CPU (`cpu_fallback`), why.
    pub fn fallback_reason(&self) -> Option<&str> {
        self.fallback_reason.as_deref()
    }

    /// The options the encoder was loaded with.
    pub fn options(&self) -> &EncoderOptions {
        &self.options
    }

    /// Token ids the text tower sees for `text` (special tokens included, truncated to
    /// `max_length`).
    pub fn token_ids(&self, text: &str) -> Result<Vec<u32>, EncodeError> {
        self.tokenizer
            .ids(text)
            .map_err(|message| EncodeError::Text { index: 0, message })
    }

    /// Encodes captions, `batch_size` at a time (at most the bundle's `[text] max_batch_size`).
    /// Texts longer than `max_length` tokens are truncated; the empty string is valid.
    pub fn encode_texts(&self, texts: &[&str]) -> Result<Vec<Embedding>, EncodeError> {
        let mut out = Vec::with_capacity(texts.len());
        let batch_size = batch_size(&self.options, self.bundle.text().max_batch_size);
        for (chunk_index, chunk) in texts.chunks(batch_size).enumerate() {
            let batch = self
                .tokenizer
                .batch(chunk)
                .map_err(|(i, message)| EncodeError::Text {
                    index: chunk_index * batch_size + i,
                    message,
                })?;
            out.extend(self.run_text(&batch)?);
        }
        Ok(out)
    }

    /// Encodes images, `batch_size` at a time (at most the bundle's `[image] max_batch_size`),
    /// decoding each batch in parallel. If any image fails, the error names the first failing
    /// index and nothing is returned.
    pub fn encode_images(&self, images: &[ImageInput<'_>]) -> Result<Vec<Embedding>, EncodeError> {
        let mut out = Vec::with_capacity(images.len());
        let batch_size = batch_size(&self.options, self.bundle.image().max_batch_size);
        for (chunk_index, chunk) in images.chunks(batch_size).enumerate() {
            let base = chunk_index * batch_size;
            let pixels = self.batch_tensor(chunk, base)?;
            out.extend(self.run_image(&pixels, chunk.len())?);
        }
        Ok(out)
    }

    /// The preprocessed float32 NCHW tensor of one image, exactly as the image graph receives
    /// it (for debugging and parity checks against other pipelines).
    pub fn preprocess_image(&self, image: ImageInput<'_>) -> Result<Vec<f32>, EncodeError> {
        self.batch_tensor(std::slice::from_ref(&image), 0)
    }

    /// Decodes and preprocesses `images` (global indices from `base`) into one NCHW tensor.
    fn batch_tensor(
        &self,
        images: &[ImageInput<'_>],
        base: usize,
    ) -> Result<Vec<f32>, EncodeError> {
        let spec = self.bundle.image();
        let per_image = 3 * spec.size as usize * spec.size as usize;
        let mut pixels = vec![0f32; images.len() * per_image];
        let results: Vec<Result<(), EncodeError>> = pixels
            .par_chunks_mut(per_image)
            .zip(images.par_iter())
            .enumerate()
            .map(|(i, (out, input))| {
                let image_error = |reason| EncodeError::Image {
                    index: base + i,
                    path: match input {
                        ImageInput::Path(p) => Some(p.to_path_buf()),
                        ImageInput::Bytes(_) => None,
                    },
                    reason,
                };
                let owned;
                let bytes = match input {
                    ImageInput::Path(path) => {
                        owned =
                            std::fs::read(path).map_err(|e| image_error(ImageFailure::Read(e)))?;
                        &owned[..]
                    }
                    ImageInput::Bytes(bytes) => bytes,
                };
                preprocess::prepare_into(bytes, spec, self.options.max_pixels, out)
                    .map_err(image_error)
            })
            .collect();
        // The first failing index, whichever thread met it first.
        if let Some(error) = results.into_iter().find_map(Result::err) {
            return Err(error);
        }
        Ok(pixels)
    }

    fn run_image(&self, pixels: &[f32], rows: usize) -> Result<Vec<Embedding>, EncodeError> {
        let spec = self.bundle.image();
        let size = spec.size as usize;
        let inference = |e: ort::Error| EncodeError::Inference {
            tower: Tower::Image,
            message: e.to_string(),
        };
        let input =
            TensorRef::from_array_view(([rows, 3, size, size], pixels)).map_err(inference)?;
        let mut session = self.image.lock();
        let outputs = session
            .run(ort::inputs![spec.input.as_str() => input])
            .map_err(inference)?;
        self.embeddings(Tower::Image, &spec.outputs, rows, |name| {
            outputs
                .get(name)
                .ok_or_else(|| format!("no output named `{name}`"))?
                .try_extract_tensor::<f32>()
                .map(|(shape, data)| (shape.to_vec(), data.to_vec()))
                .map_err(|e| e.to_string())
        })
    }

    fn run_text(&self, batch: &TokenBatch) -> Result<Vec<Embedding>, EncodeError> {
        if batch.rows == 0 {
            return Ok(Vec::new());
        }
        let spec = self.bundle.text();
        let inference = |e: ort::Error| EncodeError::Inference {
            tower: Tower::Text,
            message: e.to_string(),
        };
        let shape = [batch.rows, batch.len];
        let ids = TensorRef::from_array_view((shape, &batch.input_ids[..])).map_err(inference)?;
        let mask =
            TensorRef::from_array_view((shape, &batch.attention_mask[..])).map_err(inference)?;
        let mut inputs = ort::inputs![
            spec.input_ids.as_str() => ids,
            spec.attention_mask.as_str() => mask,
        ];
        if let Some(name) = &spec.token_type_ids {
            let types = TensorRef::from_array_view((shape, &batch.token_type_ids[..]))
                .map_err(inference)?;
            inputs.push((name.as_str().into(), types.into()));
        }
        let mut session = self.text.lock();
        let outputs = session.run(inputs).map_err(inference)?;
        self.embeddings(Tower::Text, &spec.outputs, batch.rows, |name| {
            outputs
                .get(name)
                .ok_or_else(|| format!("no output named `{name}`"))?
                .try_extract_tensor::<f32>()
                .map(|(shape, data)| (shape.to_vec(), data.to_vec()))
                .map_err(|e| e.to_string())
        })
    }

    /// Splits graph outputs into per-row embeddings according to the layout and metric.
    fn embeddings(
        &self,
        tower: Tower,
        names: &OutputNames,
        rows: usize,
        fetch: impl Fn(&str) -> Result<(Vec<i64>, Vec<f32>), String>,
    ) -> Result<Vec<Embedding>, EncodeError> {
        let info = self.info();
        let output_error = |message| EncodeError::Output { tower, message };
        let matrix = |name: &str, dim: usize| -> Result<Vec<f32>, EncodeError> {
            let (shape, data) = fetch(name).map_err(output_error)?;
            if shape != [rows as i64, dim as i64] {
                return Err(output_error(format!(
                    "`{name}` has shape {shape:?}, expected [{rows}, {dim}]"
                )));
            }
            if let Some(bad) = data.iter().position(|v| !v.is_finite()) {
                return Err(output_error(format!(
                    "`{name}` holds a non-finite value for input #{}",
                    bad / dim
                )));
            }
            Ok(data)
        };
        let normalise = info.metric == Metric::Cosine;
        let finish = |mut v: Vec<f32>, force: bool| {
            if normalise || force {
                // An all-zero output stays as it is (the engine refuses it on insert).
                hivlp_storage::l2_normalize(&mut v);
            }
            v
        };
        let fine_dim = info.fine_dim;
        match (names, info.layout, info.coarse_dim) {
            (OutputNames::Separate { coarse, fine }, _, Some(coarse_dim)) => {
                let fine = matrix(fine, fine_dim)?;
                let coarse = matrix(coarse, coarse_dim)?;
                Ok(fine
                    .chunks_exact(fine_dim)
                    .zip(coarse.chunks_exact(coarse_dim))
                    .map(|(f, c)| Embedding {
                        fine: finish(f.to_vec(), false),
                        coarse: Some(finish(c.to_vec(), false)),
                    })
                    .collect())
            }
            (OutputNames::Single(name), Layout::Matryoshka, Some(coarse_dim)) => {
                let fine = matrix(name, fine_dim)?;
                Ok(fine
                    .chunks_exact(fine_dim)
                    .map(|f| Embedding {
                        coarse: Some(finish(f[..coarse_dim].to_vec(), true)),
                        fine: finish(f.to_vec(), false),
                    })
                    .collect())
            }
            (OutputNames::Single(name), _, _) => {
                let fine = matrix(name, fine_dim)?;
                Ok(fine
                    .chunks_exact(fine_dim)
                    .map(|f| Embedding {
                        fine: finish(f.to_vec(), false),
                        coarse: None,
                    })
                    .collect())
            }
            (OutputNames::Separate { .. }, _, None) => {
                Err(output_error("layout separate without coarse_dim".into()))
            }
        }
    }
}

/// Why the sessions of a bundle could not be opened on a provider.
enum OpenFailure {
    /// The CUDA provider did not register (a CPU fallback may be allowed).
    Cuda(String),
    /// Anything else.
    Fatal(EncoderError),
}

impl OpenFailure {
    fn into_error(self) -> EncoderError {
        match self {
            OpenFailure::Cuda(message) => EncoderError::Cuda { message },
            OpenFailure::Fatal(error) => error,
        }
    }
}

/// Inputs per graph run: the caller's batch size, capped by the bundle's `max_batch_size`.
fn batch_size(options: &EncoderOptions, bundle_cap: Option<usize>) -> usize {
    bundle_cap.map_or(options.batch_size, |cap| cap.min(options.batch_size))
}

/// Checks that the graph has the inputs and outputs `model.toml` names, with compatible widths.
fn check_graph(bundle: &Bundle, tower: Tower, session: &Session) -> Result<(), EncoderError> {
    let info = bundle.info();
    let (file, inputs, outputs): (&Path, Vec<NamedTensor<'_>>, Vec<OutputCheck<'_>>) = match tower {
        Tower::Image => {
            let spec = bundle.image();
            (
                &spec.onnx,
                vec![("image.input", spec.input.as_str())],
                output_checks(
                    &spec.outputs,
                    info,
                    ["image.output", "image.coarse_output", "image.fine_output"],
                ),
            )
        }
        Tower::Text => {
            let spec = bundle.text();
            let mut inputs = vec![
                ("text.input_ids", spec.input_ids.as_str()),
                ("text.attention_mask", spec.attention_mask.as_str()),
            ];
            if let Some(name) = &spec.token_type_ids {
                inputs.push(("text.token_type_ids", name.as_str()));
            }
            (
                &spec.onnx,
                inputs,
                output_checks(
                    &spec.outputs,
                    info,
                    ["text.output", "text.coarse_output", "text.fine_output"],
                ),
            )
        }
    };
    let graph_error = |key, message| EncoderError::Graph {
        tower,
        file: file.to_path_buf(),
        key,
        message,
    };
    let names = |outlets: &[ort::value::Outlet]| {
        outlets
            .iter()
            .map(|o| format!("`{}`", o.name()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    for (key, name) in inputs {
        if !session.inputs().iter().any(|o| o.name() == name) {
            return Err(graph_error(
                key,
                format!(
                    "graph has no input `{name}` (inputs: {})",
                    names(session.inputs())
                ),
            ));
        }
    }
    for OutputCheck { key, name, dim } in outputs {
        let Some(outlet) = session.outputs().iter().find(|o| o.name() == name) else {
            return Err(graph_error(
                key,
                format!(
                    "graph has no output `{name}` (outputs: {})",
                    names(session.outputs())
                ),
            ));
        };
        if let Some(&last) = outlet.dtype().tensor_shape().and_then(|s| s.last())
            && last >= 0
            && last as usize != dim
        {
            return Err(graph_error(
                key,
                format!("output `{name}` is {last} wide, but model.toml implies {dim}"),
            ));
        }
    }
    Ok(())
}

/// A `model.toml` key and the graph tensor name it holds.
type NamedTensor<'a> = (&'static str, &'a str);

/// A graph output `model.toml` names, and the width it must have.
struct OutputCheck<'a> {
    key: &'static str,
    name: &'a str,
    dim: usize,
}

fn output_checks<'a>(
    names: &'a OutputNames,
    info: &BundleInfo,
    [single, coarse_key, fine_key]: [&'static str; 3],
) -> Vec<OutputCheck<'a>> {
    let check = |key, name: &'a String, dim| OutputCheck {
        key,
        name: name.as_str(),
        dim,
    };
    match names {
        OutputNames::Single(name) => vec![check(single, name, info.fine_dim)],
        OutputNames::Separate { coarse, fine } => vec![
            check(coarse_key, coarse, info.coarse_dim.unwrap_or(0)),
            check(fine_key, fine, info.fine_dim),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoder_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Encoder>();
    }

    #[test]
    fn bad_options_are_refused_before_loading() {
        let dir = Path::new("/nonexistent");
        let zero_batch = EncoderOptions {
            batch_size: 0,
            ..Default::default()
        };
        assert!(matches!(
            Encoder::load(dir, zero_batch),
            Err(EncoderError::InvalidOptions {
                field: "batch_size",
                ..
            })
        ));
        let zero_threads = EncoderOptions {
            intra_threads: Some(0),
            ..Default::default()
        };
        assert!(matches!(
            Encoder::load(dir, zero_threads),
            Err(EncoderError::InvalidOptions {
                field: "intra_threads",
                ..
            })
        ));
    }
}
