//! Python bindings for hivlp: the module `hivlp` (see `hivlp.pyi` for the documented surface).
//!
//! Every call that encodes, searches, writes or compacts releases the GIL (`Python::detach`), so
//! Python threads can search one database concurrently. NumPy inputs are read in place when
//! C-contiguous `float32`; other arrays are converted once.

mod cli;
mod compose;
mod convert;
mod errors;
mod export;
mod locations;

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use engine::{Database, Durability, Metric, ModelChoice, NewDatabase, Options, SearchParams};
use numpy::{PyArray1, PyArray2, PyArrayMethods as _};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::compose::{Images, Texts};
use crate::convert::{
    FloatRows, ImageArg, SearchCount, hit_metadata, metadata_bytes, parse_dtype, parse_target,
    query_from,
};
use crate::errors::{
    CorruptionError, ForkedError, HivlpError, InvalidInputError, LockedError, ModelError, map_error,
};

/// The id reported by `search_batch` where a query has fewer than `k` hits.
const NO_ID: u64 = u64::MAX;

/// Opens the database at `path`, creating it when the folder does not hold one yet.
#[pyfunction]
#[pyo3(signature = (
    path, model = Some("default".to_string()), coarse_dtype = "i8", durability = "sync", *,
    coarse_dim = None, fine_dim = None, metric = "cosine", read_only = false,
    memtable_rows = None, threads = None, allow_model_mismatch = false,
    auto_compaction = true, compaction_budget_bytes = None, partition_min_rows = None
))]
#[allow(clippy::too_many_arguments)]
fn open(
    py: Python<'_>,
    path: PathBuf,
    model: Option<String>,
    coarse_dtype: &str,
    durability: &str,
    coarse_dim: Option<usize>,
    fine_dim: Option<usize>,
    metric: &str,
    read_only: bool,
    memtable_rows: Option<usize>,
    threads: Option<usize>,
    allow_model_mismatch: bool,
    auto_compaction: bool,
    compaction_budget_bytes: Option<u64>,
    partition_min_rows: Option<usize>,
) -> PyResult<PyDatabase> {
    let coarse_type = parse_dtype(coarse_dtype)?;
    let metric: Metric = metric
        .parse()
        .map_err(|e: engine::UnknownMetric| InvalidInputError::new_err(e.to_string()))?;
    let durability = match durability {
        "sync" => Durability::Sync,
        "buffered" => Durability::Buffered,
        other => {
            return Err(InvalidInputError::new_err(format!(
                "unknown durability {other:?}: use \"sync\" (durable on return) or \"buffered\" (durable at flush())"
            )));
        }
    };
    let model = model
        .as_deref()
        .map_or(ModelChoice::None, ModelChoice::from);
    let mut options = Options {
        durability,
        read_only,
        model,
        allow_model_mismatch,
        threads,
        auto_compaction,
        ..Options::default()
    };
    if let Some(rows) = memtable_rows {
        options.memtable_rows = rows;
    }
    if let Some(bytes) = compaction_budget_bytes {
        options.compaction_budget_bytes = bytes;
    }
    if let Some(rows) = partition_min_rows {
        options.partition_min_rows = rows;
    }
    let new = NewDatabase {
        coarse_type,
        dims: match (fine_dim, coarse_dim) {
            (None, None) => None,
            (Some(fine), Some(coarse)) => Some((fine, coarse)),
            _ => {
                return Err(InvalidInputError::new_err(
                    "give both fine_dim= and coarse_dim=, or neither",
                ));
            }
        },
        metric,
    };
    let db = py
        .detach(|| Database::open_or_create(&path, &new, options))
        .map_err(map_error)?;
    Ok(PyDatabase {
        inner: RwLock::new(Some(Arc::new(db))),
        path,
    })
}

/// Checks every file of the database at `path`; raises `CorruptionError` if anything is wrong.
#[pyfunction]
fn verify<'py>(py: Python<'py>, path: PathBuf) -> PyResult<Bound<'py, PyDict>> {
    let report = py.detach(|| engine::verify(&path)).map_err(map_error)?;
    if !report.is_ok() {
        let problems: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
        return Err(CorruptionError::new_err(format!(
            "{} failed verification: {}; restore it from a snapshot",
            path.display(),
            problems.join("; ")
        )));
    }
    convert::verify_report(py, &report)
}

/// One search result.
#[pyclass(name = "Hit", module = "hivlp", frozen, get_all)]
struct PyHit {
    id: u64,
    score: f32,
    caption: Option<String>,
    uri: Option<String>,
    /// The item's metadata: a dict when it was stored as a JSON object, bytes otherwise, None
    /// when empty.
    metadata: Py<PyAny>,
}

#[pymethods]
impl PyHit {
    /// Python values: `caption='a flag'` or `caption=None`, as `repr()` writes them.
    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let caption = self.caption.as_deref().into_pyobject(py)?.repr()?;
        let uri = self.uri.as_deref().into_pyobject(py)?.repr()?;
        Ok(format!(
            "Hit(id={}, score={:.4}, caption={caption}, uri={uri})",
            self.id, self.score
        ))
    }
}

impl PyHit {
    fn from_hit(py: Python<'_>, hit: engine::Hit) -> PyResult<Self> {
        Ok(PyHit {
            id: hit.id,
            score: hit.score,
            caption: hit.caption,
            uri: hit.uri,
            metadata: hit_metadata(py, &hit.metadata)?,
        })
    }

    fn from_record(py: Python<'_>, record: engine::Record) -> PyResult<Self> {
        Ok(PyHit {
            id: record.id,
            score: 0.0,
            caption: record.caption,
            uri: record.uri,
            metadata: hit_metadata(py, &record.metadata)?,
        })
    }
}

/// An open database. Close it with `close()` or use it as a context manager.
#[pyclass(name = "Database", module = "hivlp", frozen)]
struct PyDatabase {
    inner: RwLock<Option<Arc<Database>>>,
    path: PathBuf,
}

impl PyDatabase {
    /// The open database; a `HivlpError` after `close()`, a `ForkedError` in a child of
    /// `os.fork()` (checked here too because some calls use the encoder directly).
    fn db(&self) -> PyResult<Arc<Database>> {
        let db = self
            .inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| {
                HivlpError::new_err(format!(
                    "the database {} is closed; open it again with hivlp.open()",
                    self.path.display()
                ))
            })?;
        db.check_process().map_err(map_error)?;
        Ok(db)
    }
}

#[pymethods]
impl PyDatabase {
    /// Encodes images (paths or encoded bytes) and captions with the model and inserts them.
    /// With `exif`, an image's EXIF capture time, camera and GPS position are added to its
    /// metadata (see `engine::exif_metadata`).
    #[pyo3(signature = (images = None, captions = None, metadata = None, ids = None, uris = None, exif = true))]
    #[allow(clippy::too_many_arguments)]
    fn insert(
        &self,
        py: Python<'_>,
        images: Option<Vec<ImageArg>>,
        captions: Option<Vec<Option<String>>>,
        metadata: Option<Vec<Option<Bound<'_, PyAny>>>>,
        ids: Option<Vec<u64>>,
        uris: Option<Vec<Option<String>>>,
        exif: bool,
    ) -> PyResult<Vec<u64>> {
        let db = self.db()?;
        let n = match (&images, &captions) {
            (Some(images), _) => images.len(),
            (None, Some(captions)) => captions.len(),
            (None, None) => {
                return Err(InvalidInputError::new_err(
                    "insert() needs images=, captions= or both",
                ));
            }
        };
        convert::check_len("captions", captions.as_ref().map(Vec::len), n)?;
        convert::check_len("metadata", metadata.as_ref().map(Vec::len), n)?;
        convert::check_len("ids", ids.as_ref().map(Vec::len), n)?;
        convert::check_len("uris", uris.as_ref().map(Vec::len), n)?;
        let captions = captions.unwrap_or_else(|| vec![None; n]);
        let metadata = match metadata {
            Some(list) => list
                .iter()
                .map(|m| metadata_bytes(py, m.as_ref()))
                .collect::<PyResult<Vec<_>>>()?,
            None => vec![Vec::new(); n],
        };
        let mut uris = uris.unwrap_or_else(|| vec![None; n]);
        match images {
            Some(images) => {
                for (image, uri) in images.iter().zip(uris.iter_mut()) {
                    image.check_exists()?;
                    if uri.is_none() {
                        *uri = image.default_uri();
                    }
                }
                py.detach(|| {
                    let pairs: Vec<engine::Pair<'_>> = (0..n)
                        .map(|i| engine::Pair {
                            id: ids.as_ref().map(|ids| ids[i]),
                            image: images[i].input(),
                            caption: captions[i].as_deref(),
                            uri: uris[i].clone(),
                            metadata: metadata[i].clone(),
                            exif,
                        })
                        .collect();
                    db.insert_pairs(&pairs)
                })
            }
            None => {
                let texts: Vec<&str> = captions
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        c.as_deref().ok_or_else(|| {
                            InvalidInputError::new_err(format!(
                                "captions[{i}] is None and there is no image to insert instead"
                            ))
                        })
                    })
                    .collect::<PyResult<_>>()?;
                let encoder = db.encoder().ok_or_else(convert::no_model)?;
                py.detach(|| {
                    let embeddings = encoder
                        .encode_texts(&texts)
                        .map_err(|e| engine::Error::from(engine::ModelError::Encode(e)))?;
                    let items = embeddings
                        .into_iter()
                        .enumerate()
                        .map(|(i, text)| engine::Item {
                            id: ids.as_ref().map(|ids| ids[i]),
                            caption: Some(texts[i].to_string()),
                            uri: uris[i].clone(),
                            metadata: metadata[i].clone(),
                            image: None,
                            text: Some(text),
                        })
                        .collect();
                    db.insert(items)
                })
            }
        }
        .map_err(map_error)
    }

    /// Inserts precomputed vectors (rows of 2-D float32 arrays; one 1-D array is one row).
    #[pyo3(signature = (
        image_fine = None, image_coarse = None, text_fine = None, text_coarse = None,
        captions = None, ids = None, uris = None, metadata = None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn insert_vectors(
        &self,
        py: Python<'_>,
        image_fine: Option<Bound<'_, PyAny>>,
        image_coarse: Option<Bound<'_, PyAny>>,
        text_fine: Option<Bound<'_, PyAny>>,
        text_coarse: Option<Bound<'_, PyAny>>,
        captions: Option<Vec<Option<String>>>,
        ids: Option<Vec<u64>>,
        uris: Option<Vec<Option<String>>>,
        metadata: Option<Vec<Option<Bound<'_, PyAny>>>>,
    ) -> PyResult<Vec<u64>> {
        let db = self.db()?;
        let image_fine = FloatRows::optional("image_fine", image_fine.as_ref())?;
        let image_coarse = FloatRows::optional("image_coarse", image_coarse.as_ref())?;
        let text_fine = FloatRows::optional("text_fine", text_fine.as_ref())?;
        let text_coarse = FloatRows::optional("text_coarse", text_coarse.as_ref())?;
        if image_coarse.is_some() && image_fine.is_none() {
            return Err(InvalidInputError::new_err(
                "image_coarse= needs image_fine=",
            ));
        }
        if text_coarse.is_some() && text_fine.is_none() {
            return Err(InvalidInputError::new_err("text_coarse= needs text_fine="));
        }
        let n = match (&image_fine, &text_fine) {
            (Some(a), _) | (None, Some(a)) => a.rows(),
            (None, None) => {
                return Err(InvalidInputError::new_err(
                    "insert_vectors() needs image_fine=, text_fine= or both",
                ));
            }
        };
        for (name, a) in [
            ("image_fine", &image_fine),
            ("image_coarse", &image_coarse),
            ("text_fine", &text_fine),
            ("text_coarse", &text_coarse),
        ] {
            convert::check_len(name, a.as_ref().map(FloatRows::rows), n)?;
        }
        convert::check_len("captions", captions.as_ref().map(Vec::len), n)?;
        convert::check_len("ids", ids.as_ref().map(Vec::len), n)?;
        convert::check_len("uris", uris.as_ref().map(Vec::len), n)?;
        convert::check_len("metadata", metadata.as_ref().map(Vec::len), n)?;
        let metadata = match metadata {
            Some(list) => list
                .iter()
                .map(|m| metadata_bytes(py, m.as_ref()))
                .collect::<PyResult<Vec<_>>>()?,
            None => vec![Vec::new(); n],
        };
        let image_fine = image_fine.as_ref().map(|a| a.view()).transpose()?;
        let image_coarse = image_coarse.as_ref().map(|a| a.view()).transpose()?;
        let text_fine = text_fine.as_ref().map(|a| a.view()).transpose()?;
        let text_coarse = text_coarse.as_ref().map(|a| a.view()).transpose()?;
        py.detach(|| {
            let embedding = |fine: &Option<convert::RowsView<'_>>,
                             coarse: &Option<convert::RowsView<'_>>,
                             i: usize| {
                fine.as_ref().map(|fine| engine::Embedding {
                    fine: fine.row(i).to_vec(),
                    coarse: coarse.as_ref().map(|c| c.row(i).to_vec()),
                })
            };
            let items = (0..n)
                .map(|i| engine::Item {
                    id: ids.as_ref().map(|ids| ids[i]),
                    caption: captions.as_ref().and_then(|c| c[i].clone()),
                    uri: uris.as_ref().and_then(|u| u[i].clone()),
                    metadata: metadata[i].clone(),
                    image: embedding(&image_fine, &image_coarse, i),
                    text: embedding(&text_fine, &text_coarse, i),
                })
                .collect();
            db.insert(items)
        })
        .map_err(map_error)
    }

    /// Inserts a pyarrow Table / RecordBatch / RecordBatchReader in batches (`hivlp/_arrow.py`).
    #[pyo3(signature = (data, **columns))]
    fn insert_arrow<'py>(
        slf: &Bound<'py, Self>,
        data: &Bound<'py, PyAny>,
        columns: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        call_arrow(slf, "insert_arrow", data, columns)
    }

    /// Inserts a pandas DataFrame in batches (`hivlp/_arrow.py`).
    #[pyo3(signature = (frame, **columns))]
    fn insert_pandas<'py>(
        slf: &Bound<'py, Self>,
        frame: &Bound<'py, PyAny>,
        columns: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        call_arrow(slf, "insert_pandas", frame, columns)
    }

    /// The live items as a `pyarrow.Table` (`hivlp/_arrow.py`).
    #[pyo3(signature = (*args, **kwargs))]
    fn to_arrow<'py>(
        slf: &Bound<'py, Self>,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        call_export(slf, "to_arrow", args, kwargs)
    }

    /// The live items as a `pyarrow.RecordBatchReader`, fetched a batch at a time (`hivlp/_arrow.py`).
    #[pyo3(signature = (*args, **kwargs))]
    fn to_arrow_reader<'py>(
        slf: &Bound<'py, Self>,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        call_export(slf, "to_arrow_reader", args, kwargs)
    }

    /// The live items as a pandas DataFrame (`hivlp/_arrow.py`).
    #[pyo3(signature = (*args, **kwargs))]
    fn to_pandas<'py>(
        slf: &Bound<'py, Self>,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        call_export(slf, "to_pandas", args, kwargs)
    }

    /// The live items as a polars DataFrame (`hivlp/_arrow.py`).
    #[pyo3(signature = (*args, **kwargs))]
    fn to_polars<'py>(
        slf: &Bound<'py, Self>,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        call_export(slf, "to_polars", args, kwargs)
    }

    /// Searches by one of `text=`, `image=` (path or bytes) or `vector=` (fine, 1-D), or by a
    /// query composed of several (`text`/`image` may be lists, `minus_text=` subtracts, and
    /// `weights=` weighs the parts in the order texts, images, vector, minus texts).
    #[pyo3(signature = (
        text = None, image = None, vector = None, k = SearchCount(10), candidates = None, target = "image",
        exact = false, coarse_vector = None, allow_ids = None, deny_ids = None,
        min_score = None, collapse = None, minus_text = None, weights = None, r#where = None,
        probe = None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn search(
        &self,
        py: Python<'_>,
        text: Option<Texts>,
        image: Option<Images>,
        vector: Option<Bound<'_, PyAny>>,
        k: SearchCount,
        candidates: Option<SearchCount>,
        target: &str,
        exact: bool,
        coarse_vector: Option<Bound<'_, PyAny>>,
        allow_ids: Option<Vec<u64>>,
        deny_ids: Option<Vec<u64>>,
        min_score: Option<f32>,
        collapse: Option<f32>,
        minus_text: Option<Texts>,
        weights: Option<Vec<f32>>,
        r#where: Option<Bound<'_, PyAny>>,
        probe: Option<f64>,
    ) -> PyResult<Vec<PyHit>> {
        let db = self.db()?;
        let params = SearchParams {
            target: parse_target(target)?,
            k: k.0,
            candidates: candidates.map(|c| c.0),
            probe,
            exact,
            filter: convert::filter(allow_ids, deny_ids)?,
            min_score,
            collapse,
            predicate: convert::predicate(r#where.as_ref())?,
        };
        let texts = text.map_or_else(Vec::new, |t| t.0);
        let images = image.map_or_else(Vec::new, |i| i.0);
        let minus_texts = minus_text.map_or_else(Vec::new, |t| t.0);
        for image in &images {
            image.check_exists()?;
        }
        let vector = vector
            .map(|v| query_from(&v, coarse_vector.as_ref()))
            .transpose()?;
        let plain = minus_texts.is_empty() && weights.is_none();
        // One part without weights is searched as given: the query the model or the caller
        // made, coarse vector included.
        let hits = match (texts.as_slice(), images.as_slice(), vector, plain) {
            ([text], [], None, true) => py.detach(|| db.search_text(text, &params)),
            ([], [image], None, true) => py.detach(|| db.search_image(image.input(), &params)),
            ([], [], Some(query), true) => py.detach(|| db.search(&query, &params)),
            (_, _, vector, _) => {
                let parts = compose::query_parts(&texts, &images, vector, &minus_texts, weights)?;
                py.detach(|| db.search_parts(&parts, &params))
            }
        }
        .map_err(map_error)?;
        hits.into_iter().map(|h| PyHit::from_hit(py, h)).collect()
    }

    /// `search(vector=...)`, also returning a dict of what the search did: `filter_ms`,
    /// `coarse_ms`, `fine_ms` (stage times), `candidates` (rows re-ranked; chosen per query unless given),
    /// `passes` (coarse passes), `exact` (the fine scan ran), `estimated_recall` and `probe`
    /// (the share of each partitioned segment's rows read; 1: every row).
    #[pyo3(signature = (
        vector, k = SearchCount(10), candidates = None, target = "image", exact = false,
        coarse_vector = None, allow_ids = None, deny_ids = None, r#where = None, probe = None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn search_with_timing<'py>(
        &self,
        py: Python<'py>,
        vector: Bound<'py, PyAny>,
        k: SearchCount,
        candidates: Option<SearchCount>,
        target: &str,
        exact: bool,
        coarse_vector: Option<Bound<'py, PyAny>>,
        allow_ids: Option<Vec<u64>>,
        deny_ids: Option<Vec<u64>>,
        r#where: Option<Bound<'py, PyAny>>,
        probe: Option<f64>,
    ) -> PyResult<(Vec<PyHit>, Bound<'py, PyDict>)> {
        let db = self.db()?;
        let params = SearchParams {
            target: parse_target(target)?,
            k: k.0,
            candidates: candidates.map(|c| c.0),
            probe,
            exact,
            filter: convert::filter(allow_ids, deny_ids)?,
            predicate: convert::predicate(r#where.as_ref())?,
            ..SearchParams::default()
        };
        let query = query_from(&vector, coarse_vector.as_ref())?;
        let (hits, timing) = py
            .detach(|| db.search_with_timing(&query, &params))
            .map_err(map_error)?;
        let stats = PyDict::new(py);
        stats.set_item("filter_ms", timing.filter.as_secs_f64() * 1e3)?;
        stats.set_item("coarse_ms", timing.coarse.as_secs_f64() * 1e3)?;
        stats.set_item("fine_ms", timing.fine.as_secs_f64() * 1e3)?;
        stats.set_item("candidates", timing.candidates)?;
        stats.set_item("passes", timing.passes)?;
        stats.set_item("exact", timing.exact)?;
        stats.set_item("estimated_recall", timing.estimated_recall)?;
        stats.set_item("probe", timing.probe)?;
        let hits = hits
            .into_iter()
            .map(|h| PyHit::from_hit(py, h))
            .collect::<PyResult<_>>()?;
        Ok((hits, stats))
    }

    /// Searches many fine query vectors at once; returns `(ids, scores)` as `(q, min(k, rows))`
    /// arrays of uint64 and float32 (`rows`: live items). Rows with fewer hits are padded with
    /// id `NO_ID` and score `-inf`.
    #[pyo3(signature = (
        vectors, target = "image", k = SearchCount(10), candidates = None, exact = false,
        coarse_vectors = None,
        allow_ids = None, deny_ids = None, min_score = None, collapse = None, r#where = None,
        probe = None
    ))]
    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    fn search_batch<'py>(
        &self,
        py: Python<'py>,
        vectors: Bound<'py, PyAny>,
        target: &str,
        k: SearchCount,
        candidates: Option<SearchCount>,
        exact: bool,
        coarse_vectors: Option<Bound<'py, PyAny>>,
        allow_ids: Option<Vec<u64>>,
        deny_ids: Option<Vec<u64>>,
        min_score: Option<f32>,
        collapse: Option<f32>,
        r#where: Option<Bound<'py, PyAny>>,
        probe: Option<f64>,
    ) -> PyResult<(Bound<'py, PyArray2<u64>>, Bound<'py, PyArray2<f32>>)> {
        let db = self.db()?;
        let params = SearchParams {
            target: parse_target(target)?,
            k: k.0,
            candidates: candidates.map(|c| c.0),
            probe,
            exact,
            filter: convert::filter(allow_ids, deny_ids)?,
            min_score,
            collapse,
            predicate: convert::predicate(r#where.as_ref())?,
        };
        let fine = FloatRows::new("vectors", &vectors)?;
        let coarse = FloatRows::optional("coarse_vectors", coarse_vectors.as_ref())?;
        convert::check_len(
            "coarse_vectors",
            coarse.as_ref().map(FloatRows::rows),
            fine.rows(),
        )?;
        let fine = fine.view()?;
        let coarse = coarse.as_ref().map(|c| c.view()).transpose()?;
        let (ids, scores, width) = py
            .detach(|| {
                let queries: Vec<engine::Query> = (0..fine.rows())
                    .map(|i| engine::Query {
                        fine: fine.row(i).to_vec(),
                        coarse: coarse.as_ref().map(|c| c.row(i).to_vec()),
                    })
                    .collect();
                let results = db.search_batch(&queries, &params)?;
                // One column per hit, but never more than there are rows: the padding is sized
                // by the data, not by `k` (rows deleted during the search still fit).
                let longest = results.iter().map(Vec::len).max().unwrap_or(0);
                let width = params.k.min(db.len()?.max(longest));
                let mut ids = vec![NO_ID; queries.len() * width];
                let mut scores = vec![f32::NEG_INFINITY; queries.len() * width];
                for (q, hits) in results.iter().enumerate() {
                    for (j, hit) in hits.iter().enumerate() {
                        ids[q * width + j] = hit.id;
                        scores[q * width + j] = hit.score;
                    }
                }
                Ok::<_, engine::Error>((ids, scores, width))
            })
            .map_err(map_error)?;
        let shape = [fine.rows(), width];
        let ids = PyArray1::from_vec(py, ids).reshape(shape)?;
        let scores = PyArray1::from_vec(py, scores).reshape(shape)?;
        Ok((ids, scores))
    }

    /// The item with this id, as a `Hit` with score 0.0, or None.
    fn get(&self, py: Python<'_>, id: u64) -> PyResult<Option<PyHit>> {
        let db = self.db()?;
        match py.detach(|| db.get(id)).map_err(map_error)? {
            Some(record) => PyHit::from_record(py, record).map(Some),
            None => Ok(None),
        }
    }

    /// Deletes items by id; returns how many existed.
    fn delete(&self, py: Python<'_>, ids: Vec<u64>) -> PyResult<usize> {
        let db = self.db()?;
        py.detach(|| db.delete(&ids)).map_err(map_error)
    }

    /// Replaces the metadata, caption and/or URI of item `id`, keeping its vectors (nothing is
    /// re-encoded); a keyword not given is kept, `None` removes the value. Durable like an
    /// insert and visible to `get`, search hits and filters at once. Returns False when no
    /// live item has `id`.
    #[pyo3(signature = (id, **changes), text_signature = "(self, id, *, metadata=None, caption=None, uri=None)")]
    fn update(
        &self,
        py: Python<'_>,
        id: u64,
        changes: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<bool> {
        let db = self.db()?;
        let mut update = engine::MetadataUpdate::default();
        for (key, value) in changes.into_iter().flat_map(|c| c.iter()) {
            let text = |what: &str| {
                value.extract::<Option<String>>().map_err(|_| {
                    pyo3::exceptions::PyTypeError::new_err(format!(
                        "update(): {what} must be a str or None"
                    ))
                })
            };
            match key.extract::<String>()?.as_str() {
                "metadata" => update.metadata = Some(metadata_bytes(py, Some(&value))?),
                "caption" => update.caption = Some(text("caption")?),
                "uri" => update.uri = Some(text("uri")?),
                other => {
                    return Err(pyo3::exceptions::PyTypeError::new_err(format!(
                        "update() got an unexpected keyword argument '{other}'"
                    )));
                }
            }
        }
        py.detach(|| db.update(id, update)).map_err(map_error)
    }

    /// Makes buffered writes durable and moves the in-memory rows into a segment on disk.
    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        let db = self.db()?;
        py.detach(|| db.flush()).map_err(map_error)
    }

    /// Merges segments and drops deleted rows; returns a report dict.
    fn compact<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let db = self.db()?;
        let report = py.detach(|| db.compact()).map_err(map_error)?;
        convert::compaction_report(py, &report)
    }

    /// Stops background compaction until `resume_compaction()`, waiting for a running merge.
    fn pause_compaction(&self, py: Python<'_>) -> PyResult<()> {
        let db = self.db()?;
        py.detach(|| db.pause_compaction()).map_err(map_error)
    }

    /// Lets background compaction run again.
    fn resume_compaction(&self) -> PyResult<()> {
        self.db()?.resume_compaction().map_err(map_error)
    }

    /// Writes a consistent copy of the database to the new folder `dest`.
    fn snapshot(&self, py: Python<'_>, dest: PathBuf) -> PyResult<()> {
        let db = self.db()?;
        py.detach(|| db.snapshot(&dest)).map_err(map_error)
    }

    /// Counts, sizes and the schema as a dict.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let db = self.db()?;
        convert::stats(py, &db)
    }

    /// The database's folder.
    #[getter]
    fn path(&self) -> PathBuf {
        self.path.clone()
    }

    /// Whether `close()` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_none()
    }

    /// Makes every write durable (fsync); what `durability="buffered"` defers.
    fn sync(&self, py: Python<'_>) -> PyResult<()> {
        let db = self.db()?;
        py.detach(|| db.sync()).map_err(map_error)
    }

    /// Makes the writes durable, closes the database and releases its write lock; raises if
    /// the writes could not be made durable. The handle is closed either way: further calls
    /// raise `HivlpError`.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let Some(db) = self.inner.write().unwrap_or_else(|e| e.into_inner()).take() else {
            return Ok(());
        };
        py.detach(|| match Arc::try_unwrap(db) {
            Ok(db) => db.close(),
            // A call on another thread still holds the handle and drops it when it returns:
            // make everything written so far durable now.
            Err(shared) => shared.sync(),
        })
        .map_err(map_error)
    }

    fn __len__(&self) -> PyResult<usize> {
        self.db()?.len().map_err(map_error)
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// Closes the database; a failure to make the writes durable raises here.
    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, pyo3::types::PyTuple>) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        let state = if self.closed() { "closed" } else { "open" };
        format!("<hivlp.Database {} ({state})>", self.path.display())
    }
}

/// Calls `hivlp._arrow.<function>(db, data, **columns)`: the Arrow layer is Python over
/// `insert_vectors`, so this module links no Arrow implementation.
fn call_arrow<'py>(
    db: &Bound<'py, PyDatabase>,
    function: &str,
    data: &Bound<'py, PyAny>,
    columns: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyAny>> {
    db.py()
        .import("hivlp._arrow")?
        .getattr(function)?
        .call((db, data), columns)
}

/// Calls `hivlp._arrow.<function>(db, *args, **kwargs)`.
fn call_export<'py>(
    db: &Bound<'py, PyDatabase>,
    function: &str,
    args: &Bound<'py, PyTuple>,
    kwargs: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyAny>> {
    let mut all = vec![db.clone().into_any()];
    all.extend(args.iter());
    db.py()
        .import("hivlp._arrow")?
        .getattr(function)?
        .call(PyTuple::new(db.py(), all)?, kwargs)
}

/// hivlp: an embedded vector database for coarse-to-fine image–text retrieval.
#[pymodule]
#[pyo3(name = "_hivlp")]
fn hivlp_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_function(wrap_pyfunction!(open, m)?)?;
    m.add_function(wrap_pyfunction!(verify, m)?)?;
    m.add_function(wrap_pyfunction!(locations::_set_default_model_dir, m)?)?;
    m.add_function(wrap_pyfunction!(locations::_add_runtime_candidate, m)?)?;
    m.add_function(wrap_pyfunction!(cli::_cli_main, m)?)?;
    m.add_function(wrap_pyfunction!(export::_live_ids, m)?)?;
    m.add_function(wrap_pyfunction!(export::_export_rows, m)?)?;
    m.add_class::<PyDatabase>()?;
    m.add_class::<PyHit>()?;
    m.add("HivlpError", py.get_type::<HivlpError>())?;
    m.add("LockedError", py.get_type::<LockedError>())?;
    m.add("CorruptionError", py.get_type::<CorruptionError>())?;
    m.add("InvalidInputError", py.get_type::<InvalidInputError>())?;
    m.add("ModelError", py.get_type::<ModelError>())?;
    m.add("ForkedError", py.get_type::<ForkedError>())?;
    m.add("NO_ID", NO_ID)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
