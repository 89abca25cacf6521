//! Queries made of several weighted parts ("beach" minus "people", an example image plus a
//! caption): combined in the fine space, with the coarse vector then derived from the sum the
//! way the coarse vectors of stored rows are, so the two stages rank by the same direction.

use hivlp_storage::{Metric, Tier, l2_norm, l2_normalize};

use crate::database::{check_vector, normalized};
use crate::error::{Error, InvalidInput, ModelError};
use crate::params::{Hit, Query, SearchParams};
use crate::{Database, Embedding, EncodeError, ImageInput, Result};

/// The weight the bindings give a part that is subtracted (Python `minus_text=`, the CLI's
/// `--minus-text`) when the caller names no weights: half a positive part, which moves
/// results away from it without turning the query into its opposite.
pub const DEFAULT_NEGATIVE_WEIGHT: f32 = -0.5;

/// One part of a composed query ([`Database::compose_query`]).
#[derive(Debug, Clone)]
pub enum QueryPart<'a> {
    /// A text, encoded by the database's model.
    Text(&'a str),
    /// An image, encoded by the database's model.
    Image(ImageInput<'a>),
    /// A vector; its coarse vector is used only where the database stores supplied ones.
    Vector(Query),
}

impl Database {
    /// One query from weighted parts: the weighted sum of the parts' fine vectors, each part
    /// first normalised as the metric requires (unit length for cosine, so weights compare
    /// directions; as given for inner product), and the sum normalised likewise. Weights may be
    /// negative, to move results away from a part. Texts are encoded in one batch and images
    /// in another.
    ///
    /// The result has `coarse: None`, so the search derives its coarse vector from the sum as
    /// it derives those of stored rows (the Matryoshka prefix, or the fitted projection). A
    /// database of supplied coarse vectors derives none: there the parts' coarse vectors are
    /// combined the same way, and every part needs one.
    ///
    /// Errors: no parts, a weight that is not finite, a part that would be refused as a query
    /// alone ([`InvalidInput::QueryPart`]), or parts that cancel out
    /// ([`InvalidInput::ComposedQueryZero`]).
    pub fn compose_query(&self, parts: &[(QueryPart<'_>, f32)]) -> Result<Query> {
        self.check_process()?;
        if parts.is_empty() {
            return Err(InvalidInput::NoQueryParts.into());
        }
        if let Some((part, &(_, weight))) =
            parts.iter().enumerate().find(|(_, (_, w))| !w.is_finite())
        {
            return Err(InvalidInput::PartWeightNotFinite { part, weight }.into());
        }
        let vectors = self.encode_parts(parts)?;
        let schema = self.schema();
        let supplied = self.coarse_supplied()?;
        let mut fine = Combination::new(schema.fine_dim);
        let mut coarse = supplied.then(|| Combination::new(schema.coarse_dim));
        for (part, (query, &(_, weight))) in vectors.iter().zip(parts).enumerate() {
            let in_part = |e: Error| match e {
                Error::InvalidInput(reason) => InvalidInput::QueryPart {
                    part,
                    reason: Box::new(reason),
                }
                .into(),
                other => other,
            };
            check_vector(&query.fine, schema.fine_dim, Tier::Fine, None).map_err(in_part)?;
            let values =
                normalized(&query.fine, schema.metric, Tier::Fine, None).map_err(in_part)?;
            fine.add(&values, weight);
            if let Some(coarse) = &mut coarse {
                let given = query
                    .coarse
                    .as_deref()
                    .ok_or_else(|| in_part(InvalidInput::QueryCoarseRequired.into()))?;
                check_vector(given, schema.coarse_dim, Tier::Coarse, None).map_err(in_part)?;
                let values =
                    normalized(given, schema.metric, Tier::Coarse, None).map_err(in_part)?;
                coarse.add(&values, weight);
            }
        }
        Ok(Query {
            fine: fine.finish(schema.metric)?,
            coarse: coarse.map(|c| c.finish(schema.metric)).transpose()?,
        })
    }

    /// [`search`](Self::search) with the query [`compose_query`](Self::compose_query) makes of
    /// `parts`.
    pub fn search_parts(
        &self,
        parts: &[(QueryPart<'_>, f32)],
        params: &SearchParams,
    ) -> Result<Vec<Hit>> {
        params.checked_candidates()?;
        let query = self.compose_query(parts)?;
        self.search(&query, params)
    }

    /// Each part's vectors, in order: texts encoded in one batch, images in another.
    fn encode_parts(&self, parts: &[(QueryPart<'_>, f32)]) -> Result<Vec<Query>> {
        let texts: Vec<&str> = parts
            .iter()
            .filter_map(|(p, _)| match p {
                QueryPart::Text(t) => Some(*t),
                _ => None,
            })
            .collect();
        let images: Vec<ImageInput<'_>> = parts
            .iter()
            .filter_map(|(p, _)| match p {
                QueryPart::Image(i) => Some(*i),
                _ => None,
            })
            .collect();
        let queries = |encoded: std::result::Result<Vec<Embedding>, EncodeError>| {
            encoded
                .map(|e| e.into_iter().map(Query::from).collect::<Vec<_>>())
                .map_err(|e| Error::from(ModelError::Encode(e)))
        };
        let mut texts = if texts.is_empty() {
            Vec::new()
        } else {
            queries(self.require_encoder()?.encode_texts(&texts))?
        }
        .into_iter();
        let mut images = if images.is_empty() {
            Vec::new()
        } else {
            queries(self.require_encoder()?.encode_images(&images))?
        }
        .into_iter();
        Ok(parts
            .iter()
            .map(|(p, _)| match p {
                QueryPart::Text(_) => texts.next(),
                QueryPart::Image(_) => images.next(),
                QueryPart::Vector(q) => Some(q.clone()),
            })
            .map(Option::unwrap_or_default)
            .collect())
    }
}

/// A running weighted sum of vectors of one tier.
struct Combination {
    sum: Vec<f64>,
    /// Σ |weight| · |part|: what the sum's norm is compared with to tell cancellation.
    scale: f64,
}

/// A sum whose norm is below this share of [`Combination::scale`] is the parts cancelling
/// out (up to rounding), with no direction left to rank by.
const CANCELLED: f64 = 1e-6;

impl Combination {
    fn new(dim: usize) -> Self {
        Self {
            sum: vec![0.0; dim],
            scale: 0.0,
        }
    }

    fn add(&mut self, values: &[f32], weight: f32) {
        let weight = f64::from(weight);
        for (s, &v) in self.sum.iter_mut().zip(values) {
            *s += weight * f64::from(v);
        }
        self.scale += weight.abs() * l2_norm(values);
    }

    fn finish(self, metric: Metric) -> Result<Vec<f32>> {
        let norm = self.sum.iter().map(|v| v * v).sum::<f64>().sqrt();
        if norm <= CANCELLED * self.scale {
            return Err(InvalidInput::ComposedQueryZero.into());
        }
        let mut out: Vec<f32> = self.sum.iter().map(|&v| v as f32).collect();
        if metric == Metric::Cosine {
            l2_normalize(&mut out);
        }
        Ok(out)
    }
}
