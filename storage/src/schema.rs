//! What a database stores: dimensions, element types and metric, fixed at creation.

/// Element type of a stored vector tier.
///
/// Coarse vectors may use any of these; `I8` stores a per-row `f32` scale beside each row so
/// that `row_f32[j] ≈ row_i8[j] as f32 * scale`. Fine vectors are `F32` or `F16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ElemType {
    F32,
    F16,
    I8,
}

impl ElemType {
    /// Bytes of one element.
    pub const fn size(self) -> usize {
        match self {
            ElemType::F32 => 4,
            ElemType::F16 => 2,
            ElemType::I8 => 1,
        }
    }

    /// The short name used by the bindings and tools: `f32`, `f16` or `i8`.
    pub const fn name(self) -> &'static str {
        match self {
            ElemType::F32 => "f32",
            ElemType::F16 => "f16",
            ElemType::I8 => "i8",
        }
    }
}

/// An element type name that is none of `f32`, `f16`, `i8` (or numpy's `float32`, `float16`,
/// `int8`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown element type {0:?}: use \"i8\", \"f16\" or \"f32\"")]
pub struct UnknownElemType(pub String);

impl std::str::FromStr for ElemType {
    type Err = UnknownElemType;

    /// ```
    /// use hivlp_storage::ElemType;
    /// assert_eq!("float16".parse(), Ok(ElemType::F16));
    /// assert_eq!(ElemType::I8.name().parse(), Ok(ElemType::I8));
    /// assert!("i4".parse::<ElemType>().is_err());
    /// ```
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "f32" | "float32" => Ok(ElemType::F32),
            "f16" | "float16" => Ok(ElemType::F16),
            "i8" | "int8" => Ok(ElemType::I8),
            other => Err(UnknownElemType(other.to_owned())),
        }
    }
}

/// Largest vector dimension a schema or a model may declare: far beyond any embedding, small
/// enough that row sizes and tensor shapes cannot overflow.
pub const MAX_DIM: usize = 1 << 16;

/// How query and stored vectors are compared. Higher scores are better for both. The one
/// definition shared by databases, model bundles (`metric = "cosine"` in `model.toml`) and
/// the bindings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    /// Vectors are L2-normalised before insert (by the engine; storage stores them as
    /// given), so the score is their dot product.
    Cosine,
    /// Raw dot product.
    InnerProduct,
}

impl Metric {
    /// The name used in `model.toml`, the bindings and stats: `cosine` or `inner_product`.
    pub const fn name(self) -> &'static str {
        match self {
            Metric::Cosine => "cosine",
            Metric::InnerProduct => "inner_product",
        }
    }
}

impl std::fmt::Display for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A metric name that is neither `cosine` nor `inner_product` (nor its short form `ip`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown metric {0:?}: use \"cosine\" or \"inner_product\" (\"ip\")")]
pub struct UnknownMetric(pub String);

impl std::str::FromStr for Metric {
    type Err = UnknownMetric;

    /// ```
    /// use hivlp_storage::Metric;
    /// assert_eq!("ip".parse(), Ok(Metric::InnerProduct));
    /// assert_eq!(Metric::Cosine.name().parse(), Ok(Metric::Cosine));
    /// assert!("l2".parse::<Metric>().is_err());
    /// ```
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cosine" => Ok(Metric::Cosine),
            "inner_product" | "ip" => Ok(Metric::InnerProduct),
            other => Err(UnknownMetric(other.to_owned())),
        }
    }
}

/// Which of an item's two embeddings a vector belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Modality {
    Image,
    Text,
}

impl Modality {
    pub const ALL: [Modality; 2] = [Modality::Image, Modality::Text];

    /// Position in per-modality arrays (`[image, text]`), the order of [`Modality::ALL`].
    pub const fn index(self) -> usize {
        match self {
            Modality::Image => 0,
            Modality::Text => 1,
        }
    }

    /// Lower-case name, as in file names and the bindings' `target="image" | "text"`.
    pub const fn name(self) -> &'static str {
        match self {
            Modality::Image => "image",
            Modality::Text => "text",
        }
    }
}

/// Which of a modality's two vectors: the low-dimensional one scanned over the whole
/// collection, or the high-dimensional one used to re-rank candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tier {
    /// The low-dimensional vector scanned over the whole collection.
    Coarse,
    /// The high-dimensional vector used to re-rank candidates.
    Fine,
}

impl Tier {
    pub const ALL: [Tier; 2] = [Tier::Coarse, Tier::Fine];

    /// Position in per-tier arrays (`[coarse, fine]`), the order of [`Tier::ALL`].
    pub const fn index(self) -> usize {
        match self {
            Tier::Coarse => 0,
            Tier::Fine => 1,
        }
    }

    /// `coarse` or `fine`, as in file names and messages.
    pub const fn name(self) -> &'static str {
        match self {
            Tier::Coarse => "coarse",
            Tier::Fine => "fine",
        }
    }
}

impl std::fmt::Display for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The shape of every row of a database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schema {
    pub fine_dim: usize,
    pub coarse_dim: usize,
    pub fine_type: ElemType,
    pub coarse_type: ElemType,
    pub metric: Metric,
}

impl Schema {
    /// Element type and dimension of `tier`'s vectors.
    pub fn tier(&self, tier: Tier) -> (ElemType, usize) {
        match tier {
            Tier::Coarse => (self.coarse_type, self.coarse_dim),
            Tier::Fine => (self.fine_type, self.fine_dim),
        }
    }
}

/// The coarse and fine vector of one modality of one item, as `f32` before storage converts
/// them to the schema's element types.
#[derive(Debug, Clone, PartialEq)]
pub struct TierVectors {
    pub coarse: Vec<f32>,
    pub fine: Vec<f32>,
}

/// One item as the engine hands it to storage. Either modality may be absent.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Row {
    pub id: u64,
    pub caption: Option<String>,
    pub uri: Option<String>,
    pub metadata: Vec<u8>,
    pub image: Option<TierVectors>,
    pub text: Option<TierVectors>,
}

impl Row {
    pub fn vectors(&self, modality: Modality) -> Option<&TierVectors> {
        match modality {
            Modality::Image => self.image.as_ref(),
            Modality::Text => self.text.as_ref(),
        }
    }
}

/// Engine state kept in the manifest, opaque to storage: key → bytes (the coarse projection,
/// the model's name and hash, …).
pub type Properties = std::collections::BTreeMap<String, Vec<u8>>;
