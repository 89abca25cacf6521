//! Arrow out, the native half: live ids, and a batch of rows as flat NumPy arrays that
//! `hivlp/_arrow.py` wraps into Arrow columns without another copy.

use engine::Record;
use numpy::PyArray1;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use crate::PyDatabase;
use crate::errors::map_error;

/// The ids of every live item, in storage order, as a uint64 array.
#[pyfunction]
pub fn _live_ids<'py>(
    py: Python<'py>,
    db: &Bound<'py, PyDatabase>,
) -> PyResult<Bound<'py, PyArray1<u64>>> {
    let db = db.get().db()?;
    let ids = py.detach(|| db.ids()).map_err(map_error)?;
    Ok(PyArray1::from_vec(py, ids))
}

/// The rows of `ids` still live: `id`, `caption`, `uri`, `metadata` (the stored bytes, None
/// when empty), and per modality `{m}_fine` / `{m}_coarse` as flat float32 arrays (zeros where
/// a row lacks the modality) with `{m}_present` as a bool array; `fine_dim`, `coarse_dim`.
#[pyfunction]
pub fn _export_rows<'py>(
    py: Python<'py>,
    db: &Bound<'py, PyDatabase>,
    ids: Vec<u64>,
) -> PyResult<Bound<'py, PyDict>> {
    let db = db.get().db()?;
    let records: Vec<Record> = py
        .detach(|| {
            ids.iter()
                .map(|&id| db.get(id))
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(map_error)?
        .into_iter()
        .flatten()
        .collect();
    let schema = db.schema();
    let out = PyDict::new(py);
    out.set_item("fine_dim", schema.fine_dim)?;
    out.set_item("coarse_dim", schema.coarse_dim)?;
    out.set_item("id", PyArray1::from_iter(py, records.iter().map(|r| r.id)))?;
    out.set_item(
        "caption",
        records
            .iter()
            .map(|r| r.caption.clone())
            .collect::<Vec<_>>(),
    )?;
    out.set_item(
        "uri",
        records.iter().map(|r| r.uri.clone()).collect::<Vec<_>>(),
    )?;
    let metadata: Vec<Option<Bound<'py, PyBytes>>> = records
        .iter()
        .map(|r| (!r.metadata.is_empty()).then(|| PyBytes::new(py, &r.metadata)))
        .collect();
    out.set_item("metadata", metadata)?;
    for (name, pick) in [
        (
            "image",
            (|r: &Record| r.image.as_ref()) as fn(&Record) -> Option<&engine::Embedding>,
        ),
        ("text", |r: &Record| r.text.as_ref()),
    ] {
        let mut fine = Vec::with_capacity(records.len() * schema.fine_dim);
        let mut coarse = Vec::with_capacity(records.len() * schema.coarse_dim);
        let mut present = Vec::with_capacity(records.len());
        for record in &records {
            match pick(record) {
                Some(e) => {
                    fine.extend_from_slice(&e.fine);
                    match &e.coarse {
                        Some(c) => coarse.extend_from_slice(c),
                        None => coarse.resize(coarse.len() + schema.coarse_dim, 0.0),
                    }
                    present.push(true);
                }
                None => {
                    fine.resize(fine.len() + schema.fine_dim, 0.0);
                    coarse.resize(coarse.len() + schema.coarse_dim, 0.0);
                    present.push(false);
                }
            }
        }
        out.set_item(format!("{name}_fine"), PyArray1::from_vec(py, fine))?;
        out.set_item(format!("{name}_coarse"), PyArray1::from_vec(py, coarse))?;
        out.set_item(format!("{name}_present"), PyArray1::from_vec(py, present))?;
    }
    Ok(out)
}
