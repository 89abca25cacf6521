//! Model bundles: a directory holding `model.toml`, the two ONNX graphs and `tokenizer.json`.
//! The format is documented in `encoders/README.md`.

use std::fmt;
use std::fs;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use hivlp_storage::{MAX_DIM, UnknownMetric};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::error::BundleError;

/// The similarity a model's embeddings are trained for (with `Cosine` every vector the
/// encoder returns is L2-normalised): the storage crate's one definition.
pub use hivlp_storage::Metric;

/// The manifest's file name inside a bundle directory.
pub const MANIFEST: &str = "model.toml";

/// How the coarse and fine vectors come out of the graphs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// One output; the coarse vector is the L2-normalised prefix of `coarse_dim` dimensions.
    Matryoshka,
    /// Two outputs, `coarse_output` and `fine_output`.
    Separate,
    /// One output, no coarse vector (the engine derives one with its own projection).
    FineOnly,
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Layout::Matryoshka => "matryoshka",
            Layout::Separate => "separate",
            Layout::FineOnly => "fine_only",
        })
    }
}

/// How the image is brought to `size`×`size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResizeMode {
    /// Resize so the shorter side is `size` (aspect kept), then center-crop.
    ShorterSide,
    /// Resize both sides to `size` (aspect not kept), no crop.
    Stretch,
}

/// Resampling filter, with Pillow's semantics (antialiased when downscaling).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Interpolation {
    /// `PIL.Image.NEAREST`.
    Nearest,
    /// `PIL.Image.BILINEAR` (triangle filter).
    Triangle,
    /// `PIL.Image.BICUBIC` (Catmull-Rom, a = -0.5).
    CatmullRom,
}

/// Channel order of the image tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelOrder {
    /// Red, green, blue.
    Rgb,
    /// Blue, green, red.
    Bgr,
}

/// Names of the graph outputs holding the vectors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputNames {
    /// One output (layouts `matryoshka` and `fine_only`).
    Single(String),
    /// Layout `separate`.
    Separate {
        /// The coarse vector's output.
        coarse: String,
        /// The fine vector's output.
        fine: String,
    },
}

/// The `[image]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageSpec {
    /// The graph file.
    pub onnx: PathBuf,
    /// Input tensor name (float32 NCHW).
    pub input: String,
    /// Output tensor name(s).
    pub outputs: OutputNames,
    /// Side of the square input.
    pub size: u32,
    /// Resize mode.
    pub resize: ResizeMode,
    /// Resampling filter.
    pub interpolation: Interpolation,
    /// Per-channel mean subtracted after scaling to [0, 1] (in RGB order).
    pub mean: [f32; 3],
    /// Per-channel divisor (in RGB order).
    pub std: [f32; 3],
    /// Channel order of the tensor.
    pub channel_order: ChannelOrder,
    /// Colour that transparent pixels are composited onto.
    pub background: [u8; 3],
    /// Most images per graph run, if the graph's results depend on batch composition.
    pub max_batch_size: Option<usize>,
}

/// The `[text]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct TextSpec {
    /// The graph file.
    pub onnx: PathBuf,
    /// `tokenizer.json` (Hugging Face tokenizers format).
    pub tokenizer: PathBuf,
    /// Input name for token ids (int64 [N, L]).
    pub input_ids: String,
    /// Input name for the attention mask (int64 [N, L]).
    pub attention_mask: String,
    /// Input name for token type ids, if the graph takes them (zeros for single sentences).
    pub token_type_ids: Option<String>,
    /// Output tensor name(s).
    pub outputs: OutputNames,
    /// Longer texts are truncated to this many tokens (special tokens included).
    pub max_length: usize,
    /// Most texts per graph run, if the graph's results depend on batch composition (e.g. an
    /// int8 graph with per-tensor dynamic quantisation: `1` makes every caption's vector
    /// independent of its neighbours).
    pub max_batch_size: Option<usize>,
}

/// What a database records about the model that wrote its vectors.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BundleInfo {
    /// `name` from `model.toml`.
    pub name: String,
    /// `version` from `model.toml`.
    pub version: String,
    /// SHA-256 (lower-case hex) over `model.toml`, both graphs and the tokenizer; two bundles
    /// with the same hash produce the same vectors.
    pub content_hash: String,
    /// Width of the fine vector.
    pub fine_dim: usize,
    /// Width of the coarse vector; `None` for layout `fine_only`.
    pub coarse_dim: Option<usize>,
    /// How coarse and fine come out of the graphs.
    pub layout: Layout,
    /// The similarity the model is trained for.
    pub metric: Metric,
}

/// A parsed and validated bundle directory. Reading one needs no ONNX Runtime, so tools can
/// inspect a bundle cheaply.
#[derive(Debug, Clone, PartialEq)]
pub struct Bundle {
    dir: PathBuf,
    info: BundleInfo,
    image: ImageSpec,
    text: TextSpec,
}

impl Bundle {
    /// Reads `dir/model.toml`, validates it, checks that the files it names exist and computes
    /// the content hash. Every file, the manifest included, must resolve (symbolic links
    /// followed) to a regular file inside `dir`, else [`BundleError::OutsideBundle`]; the
    /// returned paths are those resolved ones, so loading reads exactly what was checked.
    ///
    /// ```
    /// use hivlp_encoders::{Bundle, Encoder};
    /// let bundle = Bundle::open(&Encoder::default_bundle_dir())?;
    /// let info = bundle.info();
    /// println!("{} v{}: {} + {:?} dims, {}", info.name, info.version, info.fine_dim, info.coarse_dim, info.layout);
    /// assert_eq!(info.content_hash.len(), 64);
    /// # Ok::<(), hivlp_encoders::BundleError>(())
    /// ```
    pub fn open(dir: &Path) -> Result<Bundle, BundleError> {
        let io_error = |path: &Path| {
            let path = path.to_path_buf();
            move |source| BundleError::Io { path, source }
        };
        let root = fs::canonicalize(dir).map_err(io_error(dir))?;
        let manifest_path = dir.join(MANIFEST);
        let real = fs::canonicalize(&manifest_path).map_err(io_error(&manifest_path))?;
        let manifest_path = confine(MANIFEST_KEY, &manifest_path, real, &root)?;
        let source = fs::read_to_string(&manifest_path).map_err(io_error(&manifest_path))?;
        let mut bundle = Bundle::parse(&source, dir)?;
        for (key, file) in [
            ("image.onnx", &mut bundle.image.onnx),
            ("text.onnx", &mut bundle.text.onnx),
            ("text.tokenizer", &mut bundle.text.tokenizer),
        ] {
            let real = fs::canonicalize(&*file).map_err(|source| BundleError::MissingFile {
                key,
                file: file.clone(),
                source,
            })?;
            *file = confine(key, file, real, &root)?;
            check_file(key, file)?;
        }
        bundle.info.content_hash = content_hash(&[
            (MANIFEST_KEY, manifest_path),
            ("image.onnx", bundle.image.onnx.clone()),
            ("text.onnx", bundle.text.onnx.clone()),
            ("text.tokenizer", bundle.text.tokenizer.clone()),
        ])?;
        Ok(bundle)
    }

    /// Parses and validates the text of a `model.toml` without touching the file system: the
    /// files it names are resolved against `dir` but not checked (only that each is a relative
    /// path without `..`, else [`BundleError::OutsideBundle`]), and
    /// [`BundleInfo::content_hash`] is empty. [`Bundle::open`] is this plus those checks; use
    /// `parse` to vet a manifest from elsewhere (it is the fuzz target `bundle_manifest`).
    ///
    /// ```
    /// use std::path::Path;
    /// use hivlp_encoders::{Bundle, Layout};
    /// let toml = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/models/default/model.toml"))?;
    /// let bundle = Bundle::parse(&toml, Path::new("models/default"))?;
    /// assert_eq!(bundle.info().layout, Layout::Matryoshka);
    /// assert!(bundle.info().content_hash.is_empty());
    /// assert!(Bundle::parse("fine_dim = 0", Path::new(".")).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn parse(source: &str, dir: &Path) -> Result<Bundle, BundleError> {
        let manifest_path = dir.join(MANIFEST);
        let raw: RawManifest = toml::from_str(source).map_err(|e| BundleError::Parse {
            key: e.span().and_then(|span| key_at(source, span.start)),
            message: e.message().to_string(),
            path: manifest_path.clone(),
        })?;
        raw.validate(dir, &manifest_path)
    }

    /// The bundle directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Name, version, content hash, dimensions, layout, metric.
    pub fn info(&self) -> &BundleInfo {
        &self.info
    }

    /// The `[image]` table.
    pub fn image(&self) -> &ImageSpec {
        &self.image
    }

    /// The `[text]` table.
    pub fn text(&self) -> &TextSpec {
        &self.text
    }
}

const MANIFEST_KEY: &str = "model.toml";

/// Hashes each file's key, length and bytes, in the given order.
fn content_hash(files: &[(&'static str, PathBuf)]) -> Result<String, BundleError> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    for (key, path) in files {
        let open_error = |source| BundleError::MissingFile {
            key,
            file: path.clone(),
            source,
        };
        let mut file = fs::File::open(path).map_err(open_error)?;
        let len = file.metadata().map_err(open_error)?.len();
        hasher.update(key.as_bytes());
        hasher.update([0]);
        hasher.update(len.to_le_bytes());
        loop {
            let n = file.read(&mut buf).map_err(open_error)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// The dotted key (`table.key`) on the line holding byte `offset` of a TOML document, for error
/// messages. Only understands the flat `[table]` / `key = value` shape of `model.toml`.
fn key_at(source: &str, offset: usize) -> Option<String> {
    let offset = offset.min(source.len());
    let before = source.get(..offset)?;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line_end = source[line_start..]
        .find('\n')
        .map_or(source.len(), |i| line_start + i);
    let line = source[line_start..line_end].trim();
    let table = before[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('[') && !l.starts_with("[["))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    let key = if line.starts_with('[') {
        None
    } else {
        line.split('=')
            .next()
            .map(str::trim)
            .filter(|k| !k.is_empty())
    };
    match (table, key) {
        (Some(t), Some(k)) => Some(format!("{t}.{k}")),
        (None, Some(k)) => Some(k.to_string()),
        (Some(t), None) => Some(t),
        (None, None) => None,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    name: String,
    version: String,
    fine_dim: usize,
    coarse_dim: Option<usize>,
    layout: Layout,
    /// A [`Metric`] name; parsed in `validate` so a bad one is reported with its key.
    metric: String,
    image: RawImage,
    text: RawText,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawImage {
    onnx: String,
    input: String,
    output: Option<String>,
    coarse_output: Option<String>,
    fine_output: Option<String>,
    size: u32,
    resize: ResizeMode,
    interpolation: Interpolation,
    mean: [f32; 3],
    std: [f32; 3],
    #[serde(default = "default_channel_order")]
    channel_order: ChannelOrder,
    #[serde(default = "default_background")]
    background: [u8; 3],
    max_batch_size: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawText {
    onnx: String,
    tokenizer: String,
    input_ids: String,
    attention_mask: String,
    token_type_ids: Option<String>,
    output: Option<String>,
    coarse_output: Option<String>,
    fine_output: Option<String>,
    max_length: usize,
    max_batch_size: Option<usize>,
}

fn default_channel_order() -> ChannelOrder {
    ChannelOrder::Rgb
}

fn default_background() -> [u8; 3] {
    [255, 255, 255]
}

/// Largest accepted image side and token count: far beyond any sensible model, small enough
/// that tensor sizes cannot overflow.
const MAX_IMAGE_SIZE: u32 = 4096;
const MAX_TOKENS: usize = 8192;

/// The output table keys of one tower, for error messages.
struct OutputKeys {
    output: &'static str,
    coarse: &'static str,
    fine: &'static str,
}

impl RawManifest {
    fn validate(self, dir: &Path, manifest: &Path) -> Result<Bundle, BundleError> {
        let invalid = |key: &'static str, message: String| BundleError::Invalid {
            path: manifest.to_path_buf(),
            key,
            message,
        };
        if self.name.trim().is_empty() {
            return Err(invalid("name", "must not be empty".into()));
        }
        let metric: Metric = self
            .metric
            .parse()
            .map_err(|e: UnknownMetric| invalid("metric", e.to_string()))?;
        if self.fine_dim == 0 || self.fine_dim > MAX_DIM {
            return Err(invalid(
                "fine_dim",
                format!("must be in 1..={MAX_DIM}, not {}", self.fine_dim),
            ));
        }
        let coarse_dim = match (self.layout, self.coarse_dim) {
            (Layout::FineOnly, None) => None,
            (Layout::FineOnly, Some(_)) => {
                return Err(invalid(
                    "coarse_dim",
                    "must be absent for layout \"fine_only\"".into(),
                ));
            }
            (layout, None) => {
                return Err(invalid(
                    "coarse_dim",
                    format!("is required for layout \"{layout}\""),
                ));
            }
            (Layout::Matryoshka, Some(d)) if d == 0 || d > self.fine_dim => {
                return Err(invalid(
                    "coarse_dim",
                    format!(
                        "must be in 1..={} (a prefix of the fine vector), not {d}",
                        self.fine_dim
                    ),
                ));
            }
            (_, Some(d)) if d == 0 || d > MAX_DIM => {
                return Err(invalid(
                    "coarse_dim",
                    format!("must be in 1..={MAX_DIM}, not {d}"),
                ));
            }
            (_, Some(d)) => Some(d),
        };

        let image = self.image;
        if image.size == 0 || image.size > MAX_IMAGE_SIZE {
            return Err(invalid(
                "image.size",
                format!("must be in 1..={MAX_IMAGE_SIZE}, not {}", image.size),
            ));
        }
        if let Some(c) = image.std.iter().position(|s| !s.is_normal()) {
            return Err(invalid(
                "image.std",
                format!("component {c} must be a non-zero finite number"),
            ));
        }
        if image.mean.iter().any(|m| !m.is_finite()) {
            return Err(invalid("image.mean", "must be finite".into()));
        }
        // The tensor holds (x - mean) / std for pixels x in [0, 1]; both ends must stay finite.
        if let Some(c) = (0..3).find(|&c| {
            [0.0f32, 1.0]
                .iter()
                .any(|x| !((x - image.mean[c]) / image.std[c]).is_finite())
        }) {
            return Err(invalid(
                "image.std",
                format!("component {c}: (x - mean) / std overflows for pixel values x in [0, 1]"),
            ));
        }
        if image.input.is_empty() {
            return Err(invalid("image.input", "must not be empty".into()));
        }
        let image_outputs = output_names(
            self.layout,
            image.output,
            image.coarse_output,
            image.fine_output,
            &OutputKeys {
                output: "image.output",
                coarse: "image.coarse_output",
                fine: "image.fine_output",
            },
        )
        .map_err(|(key, message)| invalid(key, message))?;

        let text = self.text;
        if text.max_length < 2 || text.max_length > MAX_TOKENS {
            return Err(invalid(
                "text.max_length",
                format!(
                    "must be in 2..={MAX_TOKENS} (room for the special tokens), not {}",
                    text.max_length
                ),
            ));
        }
        for (key, name) in [
            ("text.input_ids", &text.input_ids),
            ("text.attention_mask", &text.attention_mask),
        ] {
            if name.is_empty() {
                return Err(invalid(key, "must not be empty".into()));
            }
        }
        let text_outputs = output_names(
            self.layout,
            text.output,
            text.coarse_output,
            text.fine_output,
            &OutputKeys {
                output: "text.output",
                coarse: "text.coarse_output",
                fine: "text.fine_output",
            },
        )
        .map_err(|(key, message)| invalid(key, message))?;

        for (key, value) in [
            ("image.max_batch_size", image.max_batch_size),
            ("text.max_batch_size", text.max_batch_size),
        ] {
            if value == Some(0) {
                return Err(invalid(key, "must be at least 1".into()));
            }
        }
        let file = |key: &'static str, value: &str| {
            bundle_file(dir, value).map_err(|why| BundleError::OutsideBundle {
                key,
                file: dir.join(value),
                message: why.into(),
            })
        };
        let image_spec = ImageSpec {
            onnx: file("image.onnx", &image.onnx)?,
            input: image.input,
            outputs: image_outputs,
            size: image.size,
            resize: image.resize,
            interpolation: image.interpolation,
            mean: image.mean,
            std: image.std,
            channel_order: image.channel_order,
            background: image.background,
            max_batch_size: image.max_batch_size,
        };
        let text_spec = TextSpec {
            onnx: file("text.onnx", &text.onnx)?,
            tokenizer: file("text.tokenizer", &text.tokenizer)?,
            input_ids: text.input_ids,
            attention_mask: text.attention_mask,
            token_type_ids: text.token_type_ids.filter(|n| !n.is_empty()),
            outputs: text_outputs,
            max_length: text.max_length,
            max_batch_size: text.max_batch_size,
        };
        Ok(Bundle {
            dir: dir.to_path_buf(),
            info: BundleInfo {
                name: self.name,
                version: self.version,
                content_hash: String::new(),
                fine_dim: self.fine_dim,
                coarse_dim,
                layout: self.layout,
                metric,
            },
            image: image_spec,
            text: text_spec,
        })
    }
}

/// Picks the output key(s) the layout needs and refuses the ones it does not use.
fn output_names(
    layout: Layout,
    output: Option<String>,
    coarse: Option<String>,
    fine: Option<String>,
    keys: &OutputKeys,
) -> Result<OutputNames, (&'static str, String)> {
    let required = |key: &'static str, value: Option<String>| match value {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err((key, format!("is required for layout \"{layout}\""))),
    };
    let unused = |key: &'static str, value: &Option<String>| match value {
        Some(_) => Err((key, format!("is not used by layout \"{layout}\""))),
        None => Ok(()),
    };
    match layout {
        Layout::Matryoshka | Layout::FineOnly => {
            unused(keys.coarse, &coarse)?;
            unused(keys.fine, &fine)?;
            Ok(OutputNames::Single(required(keys.output, output)?))
        }
        Layout::Separate => {
            unused(keys.output, &output)?;
            Ok(OutputNames::Separate {
                coarse: required(keys.coarse, coarse)?,
                fine: required(keys.fine, fine)?,
            })
        }
    }
}

/// `dir` joined with a file name from the manifest, which must stay inside `dir` by its
/// spelling: relative, with at least one name and no `..` (the error says why not).
fn bundle_file(dir: &Path, value: &str) -> Result<PathBuf, &'static str> {
    let path = Path::new(value);
    let mut names = 0;
    for component in path.components() {
        match component {
            Component::Normal(_) => names += 1,
            Component::CurDir => {}
            Component::ParentDir => return Err("the path contains `..`"),
            Component::RootDir | Component::Prefix(_) => return Err("the path is absolute"),
        }
    }
    if names == 0 {
        return Err("the path names no file");
    }
    Ok(dir.join(path))
}

/// `real`, the canonical form of the bundle file `file`, if it lies inside the canonical
/// bundle directory `root`: a symbolic link in the bundle must not lead out of it.
fn confine(
    key: &'static str,
    file: &Path,
    real: PathBuf,
    root: &Path,
) -> Result<PathBuf, BundleError> {
    if real.starts_with(root) {
        Ok(real)
    } else {
        Err(BundleError::OutsideBundle {
            key,
            file: file.to_path_buf(),
            message: format!("it resolves to {}", real.display()),
        })
    }
}

/// Checks that a file named in the manifest is a readable regular file.
fn check_file(key: &'static str, path: &Path) -> Result<(), BundleError> {
    match fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => Err(BundleError::MissingFile {
            key,
            file: path.to_path_buf(),
            source: std::io::Error::other("not a regular file"),
        }),
        Err(source) => Err(BundleError::MissingFile {
            key,
            file: path.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "hivlp-default"
version = "1"
fine_dim = 256
coarse_dim = 64
layout = "matryoshka"
metric = "cosine"
[image]
onnx = "image.onnx"
input = "pixel_values"
output = "embedding"
size = 96
resize = "shorter_side"
interpolation = "triangle"
mean = [0.5, 0.5, 0.5]
std = [0.5, 0.5, 0.5]
channel_order = "rgb"
background = [255, 255, 255]
[text]
onnx = "text.onnx"
tokenizer = "tokenizer.json"
input_ids = "input_ids"
attention_mask = "attention_mask"
token_type_ids = "token_type_ids"
output = "embedding"
max_length = 64
"#;

    fn bundle_with(toml: &str) -> (tempfile::TempDir, Result<Bundle, BundleError>) {
        let dir = tempfile::tempdir().unwrap();
        for f in ["image.onnx", "text.onnx", "tokenizer.json"] {
            fs::write(dir.path().join(f), f.as_bytes()).unwrap();
        }
        fs::write(dir.path().join(MANIFEST), toml).unwrap();
        let result = Bundle::open(dir.path());
        (dir, result)
    }

    #[test]
    fn parses_the_documented_example() {
        let (dir, bundle) = bundle_with(GOOD);
        let bundle = bundle.unwrap();
        let info = bundle.info();
        assert_eq!(info.name, "hivlp-default");
        assert_eq!(info.version, "1");
        assert_eq!((info.fine_dim, info.coarse_dim), (256, Some(64)));
        assert_eq!(info.layout, Layout::Matryoshka);
        assert_eq!(info.metric, Metric::Cosine);
        assert_eq!(info.content_hash.len(), 64);
        assert!(info.content_hash.bytes().all(|b| b.is_ascii_hexdigit()));
        let image = bundle.image();
        let root = fs::canonicalize(dir.path()).unwrap();
        assert_eq!(image.onnx, root.join("image.onnx"));
        assert_eq!(image.outputs, OutputNames::Single("embedding".into()));
        assert_eq!(image.size, 96);
        assert_eq!(image.interpolation, Interpolation::Triangle);
        assert_eq!(image.background, [255, 255, 255]);
        let text = bundle.text();
        assert_eq!(text.token_type_ids.as_deref(), Some("token_type_ids"));
        assert_eq!(text.max_length, 64);
        assert_eq!((image.max_batch_size, text.max_batch_size), (None, None));
    }

    #[test]
    fn content_hash_follows_file_contents() {
        let (dir, first) = bundle_with(GOOD);
        let first = first.unwrap().info().content_hash.clone();
        assert_eq!(
            Bundle::open(dir.path()).unwrap().info().content_hash,
            first,
            "hash is deterministic"
        );
        fs::write(dir.path().join("text.onnx"), b"other graph").unwrap();
        assert_ne!(Bundle::open(dir.path()).unwrap().info().content_hash, first);
    }

    fn expect_key(toml: &str, key: &str) {
        let (_dir, result) = bundle_with(toml);
        let err = result.expect_err("manifest must be refused");
        let found = match &err {
            BundleError::Invalid { key, .. }
            | BundleError::MissingFile { key, .. }
            | BundleError::OutsideBundle { key, .. } => Some(key.to_string()),
            BundleError::Parse { key, .. } => key.clone(),
            BundleError::Io { .. } => None,
        };
        assert_eq!(found.as_deref(), Some(key), "{err}");
        assert!(
            err.to_string().contains(key),
            "message names the key: {err}"
        );
    }

    #[test]
    fn typed_errors_name_the_bad_key() {
        expect_key(&GOOD.replace("size = 96", "size = 0"), "image.size");
        expect_key(&GOOD.replace("size = 96", "size = \"big\""), "image.size");
        expect_key(
            &GOOD.replace("coarse_dim = 64", "coarse_dim = 300"),
            "coarse_dim",
        );
        expect_key(
            &GOOD.replace("layout = \"matryoshka\"", "layout = \"pyramid\""),
            "layout",
        );
        expect_key(
            &GOOD.replace("metric = \"cosine\"", "metric = \"l2\""),
            "metric",
        );
        expect_key(
            &GOOD.replace("std = [0.5, 0.5, 0.5]", "std = [0.5, 0.0, 0.5]"),
            "image.std",
        );
        expect_key(
            &GOOD
                .replace("mean = [0.5, 0.5, 0.5]", "mean = [0.5, -3e38, 0.5]")
                .replace("std = [0.5, 0.5, 0.5]", "std = [0.5, 0.01, 0.5]"),
            "image.std",
        );
        expect_key(
            &GOOD.replace("max_length = 64", "max_length = 1"),
            "text.max_length",
        );
        expect_key(
            &GOOD.replace("max_length = 64", "max_length = 64\nmax_batch_size = 0"),
            "text.max_batch_size",
        );
        expect_key(
            &GOOD.replace(
                "tokenizer = \"tokenizer.json\"",
                "tokenizer = \"nope.json\"",
            ),
            "text.tokenizer",
        );
        expect_key(
            &GOOD.replace("size = 96", "size = 96\nsharpen = true"),
            "image.sharpen",
        );
        expect_key(
            &GOOD.replace("layout = \"matryoshka\"", "layout = \"separate\""),
            "image.output",
        );
        expect_key(
            &GOOD.replace("layout = \"matryoshka\"", "layout = \"fine_only\""),
            "coarse_dim",
        );
    }

    fn expect_outside(result: Result<Bundle, BundleError>, expected: &str) {
        match result {
            Err(BundleError::OutsideBundle { key, .. }) if key == expected => {}
            other => panic!("{expected}: expected OutsideBundle, got {other:?}"),
        }
    }

    /// Bundles may be untrusted: `model.toml` may not make hivlp read files outside the bundle
    /// directory, by spelling (checked by `parse` too) or through a symbolic link.
    #[test]
    fn paths_leaving_the_bundle_are_refused() {
        let outside = tempfile::tempdir().unwrap();
        let secret = outside.path().join("secret.json");
        fs::write(&secret, b"not the bundle's").unwrap();
        let absolute = format!("tokenizer = {:?}", secret.display().to_string());
        for (key, from, to) in [
            (
                "text.tokenizer",
                "tokenizer = \"tokenizer.json\"",
                absolute.as_str(),
            ),
            (
                "image.onnx",
                "onnx = \"image.onnx\"",
                "onnx = \"../image.onnx\"",
            ),
            (
                "text.onnx",
                "onnx = \"text.onnx\"",
                "onnx = \"sub/../text.onnx\"",
            ),
            (
                "text.tokenizer",
                "tokenizer = \"tokenizer.json\"",
                "tokenizer = \".\"",
            ),
        ] {
            let toml = GOOD.replacen(from, to, 1);
            assert_ne!(toml, GOOD);
            let (_dir, result) = bundle_with(&toml);
            expect_outside(result, key);
            expect_outside(Bundle::parse(&toml, Path::new("bundle")), key);
        }
    }

    #[cfg(unix)]
    #[test]
    fn symbolic_links_leading_out_of_the_bundle_are_refused() {
        use std::os::unix::fs::symlink;
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("secret.json"), b"not the bundle's").unwrap();
        fs::write(outside.path().join(MANIFEST), GOOD).unwrap();

        let (dir, _) = bundle_with(GOOD);
        fs::remove_file(dir.path().join("tokenizer.json")).unwrap();
        symlink(
            outside.path().join("secret.json"),
            dir.path().join("tokenizer.json"),
        )
        .unwrap();
        expect_outside(Bundle::open(dir.path()), "text.tokenizer");

        // A linked directory: `sub/image.onnx` is the outside folder's file.
        let (dir, _) =
            bundle_with(&GOOD.replacen("onnx = \"image.onnx\"", "onnx = \"sub/secret.json\"", 1));
        symlink(outside.path(), dir.path().join("sub")).unwrap();
        expect_outside(Bundle::open(dir.path()), "image.onnx");

        // The manifest itself.
        let (dir, _) = bundle_with(GOOD);
        fs::remove_file(dir.path().join(MANIFEST)).unwrap();
        symlink(outside.path().join(MANIFEST), dir.path().join(MANIFEST)).unwrap();
        expect_outside(Bundle::open(dir.path()), MANIFEST_KEY);

        // Links that stay inside are fine, and so is a bundle directory reached by a link.
        let (dir, _) =
            bundle_with(&GOOD.replacen("onnx = \"text.onnx\"", "onnx = \"graphs/text.onnx\"", 1));
        fs::create_dir(dir.path().join("graphs")).unwrap();
        symlink("../text.onnx", dir.path().join("graphs/text.onnx")).unwrap();
        let linked = outside.path().join("bundle");
        symlink(dir.path(), &linked).unwrap();
        let bundle = Bundle::open(&linked).unwrap();
        let root = fs::canonicalize(dir.path()).unwrap();
        assert_eq!(bundle.text().onnx, root.join("text.onnx"));
    }

    #[test]
    fn the_default_bundle_opens() {
        let bundle = Bundle::open(&crate::Encoder::default_bundle_dir()).unwrap();
        assert_eq!(bundle.info().content_hash.len(), 64);
    }

    #[test]
    fn missing_key_is_reported() {
        let (_dir, result) = bundle_with(&GOOD.replace("fine_dim = 256\n", ""));
        let err = result.unwrap_err();
        assert!(err.to_string().contains("fine_dim"), "{err}");
    }

    #[test]
    fn separate_and_fine_only_layouts() {
        let separate = GOOD
            .replace("layout = \"matryoshka\"", "layout = \"separate\"")
            .replace(
                "output = \"embedding\"",
                "coarse_output = \"coarse\"\nfine_output = \"fine\"",
            );
        let (_dir, bundle) = bundle_with(&separate);
        let bundle = bundle.unwrap();
        assert_eq!(
            bundle.text().outputs,
            OutputNames::Separate {
                coarse: "coarse".into(),
                fine: "fine".into()
            }
        );
        let fine_only = GOOD
            .replace("layout = \"matryoshka\"", "layout = \"fine_only\"")
            .replace("coarse_dim = 64\n", "");
        let (_dir, bundle) = bundle_with(&fine_only);
        assert_eq!(bundle.unwrap().info().coarse_dim, None);
    }

    #[test]
    fn optional_keys_default() {
        let minimal = GOOD
            .replace("channel_order = \"rgb\"\n", "")
            .replace("background = [255, 255, 255]\n", "")
            .replace("token_type_ids = \"token_type_ids\"\n", "");
        let (_dir, bundle) = bundle_with(&minimal);
        let bundle = bundle.unwrap();
        assert_eq!(bundle.image().channel_order, ChannelOrder::Rgb);
        assert_eq!(bundle.image().background, [255, 255, 255]);
        assert_eq!(bundle.text().token_type_ids, None);
    }

    #[test]
    fn missing_directory_is_an_io_error() {
        let err = Bundle::open(Path::new("/nonexistent/bundle")).unwrap_err();
        assert!(matches!(err, BundleError::Io { .. }), "{err}");
    }
}
