//! `search()`'s composed queries: `text=` and `image=` given as one value or a list,
//! `minus_text=`, and `weights=` over the parts in a fixed order.

use engine::{DEFAULT_NEGATIVE_WEIGHT, Query, QueryPart};
use pyo3::prelude::*;
use pyo3::types::PyString;

use crate::convert::ImageArg;
use crate::errors::InvalidInputError;

/// `text=` or `minus_text=`: one string or a sequence of them.
pub struct Texts(pub Vec<String>);

impl<'a, 'py> FromPyObject<'a, 'py> for Texts {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        if let Ok(text) = obj.cast::<PyString>() {
            return Ok(Texts(vec![text.extract()?]));
        }
        obj.extract::<Vec<String>>().map(Texts).map_err(|_| {
            InvalidInputError::new_err("text= and minus_text= take a str or a sequence of str")
        })
    }
}

/// `image=`: one image (path or bytes) or a sequence of them.
pub struct Images(pub Vec<ImageArg>);

impl<'a, 'py> FromPyObject<'a, 'py> for Images {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        match obj.extract::<ImageArg>() {
            Ok(one) => Ok(Images(vec![one])),
            Err(not_one) => obj.extract::<Vec<ImageArg>>().map(Images).or(Err(not_one)),
        }
    }
}

/// The parts of a composed query, in the documented order (texts, images, the vector, then the
/// minus texts), with `weights` when given (one per part), else 1 for each part and
/// [`DEFAULT_NEGATIVE_WEIGHT`] for each minus text.
pub fn query_parts<'a>(
    texts: &'a [String],
    images: &'a [ImageArg],
    vector: Option<Query>,
    minus_texts: &'a [String],
    weights: Option<Vec<f32>>,
) -> PyResult<Vec<(QueryPart<'a>, f32)>> {
    let mut parts: Vec<(QueryPart<'a>, f32)> = texts
        .iter()
        .map(|t| (QueryPart::Text(t), 1.0))
        .chain(images.iter().map(|i| (QueryPart::Image(i.input()), 1.0)))
        .chain(vector.map(|v| (QueryPart::Vector(v), 1.0)))
        .chain(
            minus_texts
                .iter()
                .map(|t| (QueryPart::Text(t), DEFAULT_NEGATIVE_WEIGHT)),
        )
        .collect();
    if parts.is_empty() {
        return Err(InvalidInputError::new_err(
            "search() needs text=, image=, vector= or minus_text=",
        ));
    }
    if let Some(weights) = weights {
        if weights.len() != parts.len() {
            return Err(InvalidInputError::new_err(format!(
                "weights= has {} values but the query has {} parts (in order: {} text, {} image, {} vector, {} minus_text)",
                weights.len(),
                parts.len(),
                texts.len(),
                images.len(),
                parts.len() - texts.len() - images.len() - minus_texts.len(),
                minus_texts.len()
            )));
        }
        for ((_, w), given) in parts.iter_mut().zip(weights) {
            *w = given;
        }
    }
    Ok(parts)
}
