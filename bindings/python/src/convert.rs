//! Conversions between Python values and engine types: images, float matrices, metadata, reports.

use std::path::PathBuf;

use engine::{ElemType, Filter, ImageInput, Predicate, Query, Target};
use numpy::{PyArray2, PyArrayMethods as _, PyReadonlyArray2, PyUntypedArrayMethods as _};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

use crate::errors::{InvalidInputError, ModelError, map_error};

pub fn parse_dtype(name: &str) -> PyResult<ElemType> {
    name.parse().map_err(|e: engine::UnknownElemType| {
        InvalidInputError::new_err(format!("coarse_dtype: {e}"))
    })
}

pub fn parse_target(name: &str) -> PyResult<Target> {
    match name {
        "image" => Ok(Target::Image),
        "text" => Ok(Target::Text),
        other => Err(InvalidInputError::new_err(format!(
            "unknown target {other:?}: use \"image\" (search the items' images) or \"text\" (their captions)"
        ))),
    }
}

/// A search filter from `allow_ids=` (only these) or `deny_ids=` (all but these).
pub fn filter(allow: Option<Vec<u64>>, deny: Option<Vec<u64>>) -> PyResult<Option<Filter>> {
    match (allow, deny) {
        (None, None) => Ok(None),
        (Some(ids), None) => Ok(Some(Filter::Allow(ids.into_iter().collect()))),
        (None, Some(ids)) => Ok(Some(Filter::Deny(ids.into_iter().collect()))),
        (Some(_), Some(_)) => Err(InvalidInputError::new_err(
            "give allow_ids= or deny_ids=, not both",
        )),
    }
}

/// The predicate of `where=`: the string language (`"year >= 2020 AND 'beach' IN tags"`) or a
/// dict in the style of Chroma and Qdrant (`{"year": {"$gte": 2020}}`), one tree either way.
pub fn predicate(where_: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Predicate>> {
    let Some(where_) = where_ else {
        return Ok(None);
    };
    let parsed = if let Ok(text) = where_.cast::<PyString>() {
        Predicate::parse(&text.to_cow()?)
    } else if where_.is_instance_of::<PyDict>() {
        Predicate::from_json(&json_value(where_, "where", 0)?)
    } else {
        return Err(InvalidInputError::new_err(format!(
            "where= takes a string such as \"year >= 2020\" or a dict such as {{\"year\": {{\"$gte\": 2020}}}}, not {}",
            where_.get_type().name()?
        )));
    };
    parsed
        .map(Some)
        .map_err(|e| InvalidInputError::new_err(format!("where=: {e}")))
}

/// A `where=` dict as JSON: dicts with string keys, lists and tuples, strings, bools, ints,
/// floats, None, and `datetime`/`date` values (as their ISO 8601 text, which compares with
/// timestamp fields). `depth` containers enclose `value`: deeper than a predicate may nest
/// (a level of it is a dict and a list) is refused here, before the recursion can overflow.
fn json_value(value: &Bound<'_, PyAny>, path: &str, depth: usize) -> PyResult<serde_json::Value> {
    use serde_json::Value;
    if depth > 2 * engine::filter::MAX_DEPTH + 2 {
        return Err(InvalidInputError::new_err(format!(
            "where= at {path}: nested more than {} deep",
            engine::filter::MAX_DEPTH
        )));
    }
    if value.is_none() {
        return Ok(Value::Null);
    }
    // Before ints: a Python bool is an int.
    if let Ok(b) = value.cast::<PyBool>() {
        return Ok(Value::Bool(b.is_true()));
    }
    if value.is_instance_of::<PyInt>() {
        return match value.extract::<i64>() {
            Ok(i) => Ok(i.into()),
            Err(_) => Err(InvalidInputError::new_err(format!(
                "where= at {path}: {value} is outside the 64-bit integer range"
            ))),
        };
    }
    if let Ok(x) = value.cast::<PyFloat>() {
        return serde_json::Number::from_f64(x.value())
            .map(Value::Number)
            .ok_or_else(|| {
                InvalidInputError::new_err(format!("where= at {path}: {value} is not finite"))
            });
    }
    if let Ok(s) = value.cast::<PyString>() {
        return Ok(Value::String(s.to_cow()?.into_owned()));
    }
    if let Ok(dict) = value.cast::<PyDict>() {
        let mut map = serde_json::Map::new();
        for (key, item) in dict.iter() {
            let key: String = key.extract().map_err(|_| {
                InvalidInputError::new_err(format!(
                    "where= at {path}: keys are field names or operators (strings), not {key}"
                ))
            })?;
            let item = json_value(&item, &format!("{path}.{key}"), depth + 1)?;
            map.insert(key, item);
        }
        return Ok(Value::Object(map));
    }
    if value.is_instance_of::<PyList>() || value.is_instance_of::<PyTuple>() {
        return value
            .try_iter()?
            .enumerate()
            .map(|(i, item)| json_value(&item?, &format!("{path}[{i}]"), depth + 1))
            .collect::<PyResult<Vec<_>>>()
            .map(Value::Array);
    }
    let datetime = value.py().import("datetime")?;
    if value.is_instance(&datetime.getattr("date")?)? {
        return Ok(Value::String(value.call_method0("isoformat")?.extract()?));
    }
    Err(InvalidInputError::new_err(format!(
        "where= at {path}: {} values cannot be compared (use bool, int, float, str or datetime)",
        value.get_type().name()?
    )))
}

/// Raises if an optional per-item list does not have one entry per item.
pub fn check_len(name: &str, len: Option<usize>, n: usize) -> PyResult<()> {
    match len {
        Some(len) if len != n => Err(InvalidInputError::new_err(format!(
            "{name} has {len} entries but there are {n} items"
        ))),
        _ => Ok(()),
    }
}

pub fn no_model() -> PyErr {
    ModelError::new_err(
        "this call encodes text or images but the database was opened without a model; \
         open it with model=\"default\" or a bundle folder",
    )
}

/// `k=` or `candidates=` of a search. Any Python int converts; one outside `u64` (a negative
/// one, say) is `InvalidInputError` here, and the engine checks the rest against
/// [`engine::MAX_CANDIDATES`], so a bad value never becomes an `OverflowError` or a panic.
pub struct SearchCount(pub usize);

impl<'a, 'py> FromPyObject<'a, 'py> for SearchCount {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        if obj.cast::<PyInt>().is_err() {
            return obj.extract::<usize>().map(SearchCount);
        }
        match obj.extract::<u64>() {
            // Beyond usize (32-bit targets) is beyond the limit too: the engine says so.
            Ok(n) => Ok(SearchCount(usize::try_from(n).unwrap_or(usize::MAX))),
            Err(_) => Err(InvalidInputError::new_err(format!(
                "k and candidates must be between 1 and {}, not {}",
                engine::MAX_CANDIDATES,
                obj.as_any()
            ))),
        }
    }
}

/// An image argument: a path (str or os.PathLike) or the encoded file's bytes.
pub enum ImageArg {
    Path(PathBuf),
    Bytes(Vec<u8>),
}

impl<'a, 'py> FromPyObject<'a, 'py> for ImageArg {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        if let Ok(bytes) = obj.cast::<PyBytes>() {
            return Ok(ImageArg::Bytes(bytes.as_bytes().to_vec()));
        }
        obj.extract::<PathBuf>().map(ImageArg::Path).map_err(|_| {
            InvalidInputError::new_err(format!(
                "an image must be a path (str or os.PathLike) or bytes, not {}",
                obj.get_type()
                    .name()
                    .map_or_else(|_| "?".to_string(), |n| n.to_string())
            ))
        })
    }
}

impl ImageArg {
    pub fn input(&self) -> ImageInput<'_> {
        match self {
            ImageArg::Path(path) => ImageInput::Path(path),
            ImageArg::Bytes(bytes) => ImageInput::Bytes(bytes),
        }
    }

    /// A missing file is the caller's mistake; say which one before encoding anything.
    pub fn check_exists(&self) -> PyResult<()> {
        match self {
            ImageArg::Path(path) if !path.is_file() => Err(InvalidInputError::new_err(format!(
                "image file not found: {}; check the path",
                path.display()
            ))),
            _ => Ok(()),
        }
    }

    /// The uri recorded for an item inserted from this image when none is given: its path.
    pub fn default_uri(&self) -> Option<String> {
        match self {
            ImageArg::Path(path) => Some(
                std::path::absolute(path)
                    .unwrap_or_else(|_| path.clone())
                    .to_string_lossy()
                    .into_owned(),
            ),
            ImageArg::Bytes(_) => None,
        }
    }
}

/// A 2-D float32 matrix from any array-like: C-contiguous float32 arrays are used in place,
/// anything else is converted once with `numpy.ascontiguousarray`. A 1-D array is one row.
pub struct FloatRows<'py> {
    array: PyReadonlyArray2<'py, f32>,
}

impl<'py> FloatRows<'py> {
    pub fn new(name: &str, value: &Bound<'py, PyAny>) -> PyResult<Self> {
        let py = value.py();
        let array = match value.cast::<PyArray2<f32>>() {
            Ok(a) if a.is_c_contiguous() => a.clone(),
            _ => {
                let numpy = py.import("numpy")?;
                let converted = numpy
                    .call_method1("ascontiguousarray", (value, numpy.getattr("float32")?))
                    .map_err(|e| {
                        InvalidInputError::new_err(format!(
                            "{name} must be a float32 array of shape (n, dim): {e}"
                        ))
                    })?;
                let converted = match converted.getattr("ndim")?.extract::<usize>()? {
                    1 => converted.call_method1("reshape", ((1, -1),))?,
                    2 => converted,
                    ndim => {
                        return Err(InvalidInputError::new_err(format!(
                            "{name} must be 1-D or 2-D, got {ndim} dimensions"
                        )));
                    }
                };
                converted.cast_into::<PyArray2<f32>>()?
            }
        };
        Ok(FloatRows {
            array: array.readonly(),
        })
    }

    /// `new` for an optional argument.
    pub fn optional(name: &str, value: Option<&Bound<'py, PyAny>>) -> PyResult<Option<Self>> {
        value.map(|v| Self::new(name, v)).transpose()
    }

    pub fn rows(&self) -> usize {
        self.array.shape()[0]
    }

    /// A borrowed view that can cross `Python::detach`.
    pub fn view(&self) -> PyResult<RowsView<'_>> {
        let (rows, dim) = (self.array.shape()[0], self.array.shape()[1]);
        let data = self
            .array
            .as_slice()
            .map_err(|e| InvalidInputError::new_err(e.to_string()))?;
        Ok(RowsView { data, rows, dim })
    }
}

/// Rows of a contiguous float32 matrix.
pub struct RowsView<'a> {
    data: &'a [f32],
    rows: usize,
    dim: usize,
}

impl RowsView<'_> {
    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }
}

/// A single query from a 1-D fine vector (and optionally its coarse vector).
pub fn query_from(vector: &Bound<'_, PyAny>, coarse: Option<&Bound<'_, PyAny>>) -> PyResult<Query> {
    let one_row = |name: &str, value: &Bound<'_, PyAny>| -> PyResult<Vec<f32>> {
        let rows = FloatRows::new(name, value)?;
        if rows.rows() != 1 {
            return Err(InvalidInputError::new_err(format!(
                "{name} must be one vector (1-D); use search_batch() for many"
            )));
        }
        Ok(rows.view()?.row(0).to_vec())
    };
    Ok(Query {
        fine: one_row("vector", vector)?,
        coarse: coarse.map(|c| one_row("coarse_vector", c)).transpose()?,
    })
}

/// Metadata to store: dicts and other JSON values are stored as JSON, bytes as they are, str as
/// UTF-8, None as empty.
pub fn metadata_bytes(py: Python<'_>, value: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<u8>> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    if value.is_none() {
        return Ok(Vec::new());
    }
    if let Ok(bytes) = value.cast::<PyBytes>() {
        return Ok(bytes.as_bytes().to_vec());
    }
    if let Ok(text) = value.cast::<PyString>() {
        return Ok(text.extract::<String>()?.into_bytes());
    }
    let json = py.import("json")?;
    let text = json.call_method1("dumps", (value,)).map_err(|e| {
        InvalidInputError::new_err(format!(
            "metadata must be a JSON-serialisable dict, bytes, str or None: {e}"
        ))
    })?;
    Ok(text.extract::<String>()?.into_bytes())
}

/// Stored metadata back to Python: a JSON object or array is decoded, other bytes are returned as
/// bytes, empty metadata is None.
pub fn hit_metadata(py: Python<'_>, bytes: &[u8]) -> PyResult<Py<PyAny>> {
    if bytes.is_empty() {
        return Ok(py.None());
    }
    let looks_json = matches!(
        bytes.iter().find(|b| !b.is_ascii_whitespace()),
        Some(b'{' | b'[')
    );
    if looks_json
        && let Ok(text) = std::str::from_utf8(bytes)
        && let Ok(value) = py.import("json")?.call_method1("loads", (text,))
    {
        return Ok(value.unbind());
    }
    Ok(PyBytes::new(py, bytes).into_any().unbind())
}

pub fn verify_report<'py>(
    py: Python<'py>,
    report: &engine::VerifyReport,
) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    dict.set_item("ok", report.is_ok())?;
    dict.set_item("files_checked", report.files_checked.len())?;
    dict.set_item("segments", report.segments)?;
    dict.set_item("segment_rows", report.segment_rows)?;
    dict.set_item("wal_records", report.wal_records)?;
    dict.set_item(
        "dropped_wal_tail",
        dropped_wal_tail(py, report.dropped_wal_tail.as_ref())?,
    )?;
    Ok(dict)
}

/// What an open drops from the end of the WAL, as a dict (`None`: nothing).
fn dropped_wal_tail<'py>(
    py: Python<'py>,
    tail: Option<&engine::DroppedWalTail>,
) -> PyResult<Option<Bound<'py, PyDict>>> {
    let Some(t) = tail else { return Ok(None) };
    let dict = PyDict::new(py);
    dict.set_item("file", &t.file)?;
    dict.set_item("offset", t.offset)?;
    dict.set_item("bytes", t.bytes)?;
    dict.set_item("records", t.records)?;
    Ok(Some(dict))
}

pub fn compaction_report<'py>(
    py: Python<'py>,
    report: &engine::CompactionReport,
) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    dict.set_item("segments_merged", report.segments_merged)?;
    dict.set_item("segments_written", report.segments_written)?;
    dict.set_item("rows_written", report.rows_written)?;
    dict.set_item("rows_dropped", report.rows_dropped)?;
    dict.set_item("bytes_before", report.bytes_before)?;
    dict.set_item("bytes_after", report.bytes_after)?;
    Ok(dict)
}

pub fn stats<'py>(py: Python<'py>, db: &engine::Database) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for (key, value) in db.stats().map_err(map_error)?.fields() {
        match value {
            engine::StatValue::Count(n) => dict.set_item(key, n)?,
            engine::StatValue::Name(name) => dict.set_item(key, name)?,
            engine::StatValue::DroppedTail(tail) => {
                dict.set_item(key, dropped_wal_tail(py, Some(&tail))?)?
            }
            engine::StatValue::Absent => dict.set_item(key, py.None())?,
        }
    }
    Ok(dict)
}
