//! The write path: row validation, insert, delete, properties, and appending their WAL
//! records.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{
    Durability, MAX_CAPTION_BYTES, MAX_ID, MAX_METADATA_BYTES, MAX_PROPERTY_KEY_BYTES,
    MAX_URI_BYTES, MetadataUpdate, Store, Writer, poison,
};
use crate::data::bitmap::Bitmap;
use crate::data::segment::RowMeta;
use crate::data::source::{Backing, MemBatch, Source};
use crate::error::{CommitError, InvalidInput, Tier};
use crate::format::codec::Encoder;
use crate::format::wal::{self, KIND_INSERT, KIND_UPDATE};
use crate::io::wal::WalWriter;
use crate::schema::{ElemType, Modality, Row, Schema};

impl Store {
    /// Inserts a batch of rows: all of them or none. Rows are validated first (dimensions,
    /// finite values, f16 range, sizes, ids unique in the batch, not live in the database and
    /// at most [`MAX_ID`] unless from [`allocate_ids`](Self::allocate_ids); see
    /// [`InvalidInput`]), then written as one WAL record, made durable per
    /// [`Durability`], then made visible. Vectors are stored as given (Cosine databases
    /// expect the caller to have normalised them).
    pub fn insert(&self, rows: Vec<Row>) -> Result<(), CommitError> {
        self.insert_with_properties(rows, Vec::new())
    }

    /// [`insert`](Self::insert), first setting engine properties the rows depend on (such as
    /// how their coarse vectors were derived). Nothing is written unless the rows are valid;
    /// the property records precede the insert record in the WAL, so a crash between them
    /// can leave the properties set without the rows, never the rows without them.
    pub fn insert_with_properties(
        &self,
        rows: Vec<Row>,
        properties: Vec<(String, Vec<u8>)>,
    ) -> Result<(), CommitError> {
        if self.options.read_only {
            return Err(CommitError::ReadOnly);
        }
        // `next_id` only grows, so an id below it now stays below it.
        validate_rows(&self.schema, &rows, self.next_id())?;
        let mut records = properties
            .iter()
            .map(|(key, value)| property_record(key, value))
            .collect::<Result<Vec<_>, _>>()?;
        let n = rows.len();
        let batch = Arc::new(MemBatch::from_rows(&self.schema, &rows));
        let source = Source::new(
            Backing::Batch(batch),
            self.schema.clone(),
            Arc::new(Bitmap::new(n)),
        );
        records.push(encode_rows(KIND_INSERT, &source));
        wal::check_body_len(records.last().map_or(0, Vec::len))?;
        let max_id = rows.iter().map(|r| r.id).max().unwrap_or(0);
        drop(rows);
        let _no_compaction = (!properties.is_empty()).then(|| self.compaction.lock());
        let mut w = self.writer()?;
        for r in 0..n {
            let id = source.id(r);
            if w.find_live(id).is_some() {
                return Err(InvalidInput::IdExists { id, row: r }.into());
            }
        }
        self.append(&mut w, &records, self.options.durability)?;
        w.set_properties(properties);
        w.push_mem(&self.schema, source);
        self.next_id.fetch_max(max_id + 1, Ordering::SeqCst);
        self.publish(&w);
        self.maybe_flush(w);
        Ok(())
    }

    /// Deletes rows by id; ids not present are ignored. Returns how many rows were deleted.
    /// One WAL record, durable per [`Durability`]: more ids than one record can hold are
    /// refused whole ([`InvalidInput::BatchTooLarge`]), however many of them are live.
    pub fn delete(&self, ids: &[u64]) -> Result<usize, CommitError> {
        if self.options.read_only {
            return Err(CommitError::ReadOnly);
        }
        wal::check_body_len(wal::delete_body_len(ids.len()))?;
        let mut w = self.writer()?;
        let mut found: Vec<u64> = ids
            .iter()
            .copied()
            .filter(|&id| w.find_live(id).is_some())
            .collect();
        found.sort_unstable();
        found.dedup();
        if found.is_empty() {
            return Ok(0);
        }
        let record = wal::encode_delete(&found);
        self.append(&mut w, &[record], self.options.durability)?;
        let n = w.apply_delete(&self.schema, &found);
        self.publish(&w);
        self.maybe_flush(w);
        Ok(n)
    }

    /// Replaces the caption, URI and/or metadata of the live row `id`, keeping its id and
    /// vectors (copied as stored, not re-encoded). Returns `false`, writing nothing, when no
    /// live row has `id` (never inserted, or deleted); an update that changes nothing (every
    /// field `None`) writes nothing either. Sizes are checked as for an insert.
    /// One WAL record, durable per [`Durability`] like an insert; the change is visible to
    /// views taken afterwards (the row moves to the memtable: the old version is tombstoned,
    /// and compaction drops it like any deleted row).
    pub fn update(&self, id: u64, update: MetadataUpdate) -> Result<bool, CommitError> {
        if self.options.read_only {
            return Err(CommitError::ReadOnly);
        }
        let sizes = [
            (
                "caption",
                update
                    .caption
                    .as_ref()
                    .and_then(Option::as_ref)
                    .map_or(0, String::len),
                MAX_CAPTION_BYTES,
            ),
            (
                "uri",
                update
                    .uri
                    .as_ref()
                    .and_then(Option::as_ref)
                    .map_or(0, String::len),
                MAX_URI_BYTES,
            ),
            (
                "metadata",
                update.metadata.as_ref().map_or(0, Vec::len),
                MAX_METADATA_BYTES,
            ),
        ];
        for (field, len, max) in sizes {
            if len > max {
                return Err(InvalidInput::TooLarge {
                    row: 0,
                    id,
                    field,
                    len,
                    max,
                }
                .into());
            }
        }
        let mut w = self.writer()?;
        let Some((slot, row)) = w.find_live(id) else {
            return Ok(false);
        };
        if update == MetadataUpdate::default() {
            // Nothing to replace: no record, and the row stays where it is.
            return Ok(true);
        }
        let old = w.source(slot);
        let meta = old.meta(row);
        let replaced = RowMeta {
            caption: update
                .caption
                .as_ref()
                .map_or(meta.caption, Option::as_deref),
            uri: update.uri.as_ref().map_or(meta.uri, Option::as_deref),
            metadata: update.metadata.as_deref().unwrap_or(meta.metadata),
        };
        let batch = MemBatch::replacing(&self.schema, old, row, replaced);
        let source = Source::new(
            Backing::Batch(Arc::new(batch)),
            self.schema.clone(),
            Arc::new(Bitmap::new(1)),
        );
        let record = encode_rows(KIND_UPDATE, &source);
        wal::check_body_len(record.len())?;
        self.append(&mut w, &[record], self.options.durability)?;
        w.apply_delete(&self.schema, &[id]);
        w.push_mem(&self.schema, source);
        self.publish(&w);
        self.maybe_flush(w);
        Ok(true)
    }

    /// The value of an engine property, as last set.
    pub fn property(&self, key: &str) -> Option<Vec<u8>> {
        self.view().properties().get(key).cloned()
    }

    /// Sets an engine property (kept in the manifest; opaque to storage). Always fsynced
    /// before returning, whatever the durability mode. Waits for a running compaction.
    pub fn set_property(&self, key: &str, value: Vec<u8>) -> Result<(), CommitError> {
        let record = property_record(key, &value)?;
        let _no_compaction = self.compaction.lock();
        let mut w = self.writer()?;
        self.append(&mut w, &[record], Durability::Sync)?;
        w.set_properties(vec![(key.to_owned(), value)]);
        self.publish(&w);
        Ok(())
    }

    /// Makes every acknowledged write durable (fsyncs the WAL). A no-op on read-only handles,
    /// which acknowledge no writes.
    pub fn sync(&self) -> Result<(), CommitError> {
        self.check_process()?;
        if self.options.read_only {
            return Ok(());
        }
        let mut w = self.writer()?;
        let result = w.wal.as_mut().map_or(Ok(()), WalWriter::sync);
        result.map_err(|e| poison(&mut w, e))
    }

    /// Appends WAL records (bodies starting with their kind byte), then makes them durable
    /// per `durability`: one fsync for all of them.
    fn append(
        &self,
        w: &mut Writer,
        records: &[Vec<u8>],
        durability: Durability,
    ) -> Result<(), CommitError> {
        let Some(wal) = w.wal.as_mut() else {
            return Err(CommitError::ReadOnly);
        };
        let result = records
            .iter()
            .try_for_each(|body| wal.append(body))
            .and_then(|()| match durability {
                Durability::Sync => wal.sync(),
                Durability::Buffered if wal.since_sync() >= self.options.buffered_sync_interval => {
                    wal.sync()
                }
                Durability::Buffered => Ok(()),
            });
        result.map_err(|e| poison(w, e))
    }
}

/// The WAL record setting one property, if its sizes are within limits.
fn property_record(key: &str, value: &[u8]) -> Result<Vec<u8>, InvalidInput> {
    if key.len() > MAX_PROPERTY_KEY_BYTES {
        return Err(InvalidInput::PropertyTooLarge {
            len: key.len(),
            max: MAX_PROPERTY_KEY_BYTES,
        });
    }
    let record = wal::encode_set_property(key, value);
    wal::check_body_len(record.len())?;
    Ok(record)
}

/// Payload body (from the kind byte on) of an insert or update (`kind`) of all rows of
/// `batch`.
pub(crate) fn encode_rows(kind: u8, batch: &Source) -> Vec<u8> {
    let mut e = Encoder::default();
    e.u8(kind);
    e.u32(batch.rows() as u32);
    for r in 0..batch.rows() {
        e.u64(batch.id(r));
        let m = batch.meta(r);
        e.opt_str(m.caption);
        e.opt_str(m.uri);
        e.bytes(m.metadata);
        let mask = Modality::ALL
            .iter()
            .enumerate()
            .filter(|(_, m)| batch.has(**m).get(r))
            .fold(0u8, |acc, (i, _)| acc | (1 << i));
        e.u8(mask);
        for m in Modality::ALL {
            if !batch.has(m).get(r) {
                continue;
            }
            for col in [batch.coarse(m), batch.fine(m)] {
                if let Some(s) = col.scales() {
                    e.u32(s[r].to_bits());
                }
                e.buf.extend_from_slice(col.row_bytes(r));
            }
        }
    }
    e.buf
}

/// Checks a batch for [`Store::insert`]; `next_id`: ids below it were used or handed out.
fn validate_rows(schema: &Schema, rows: &[Row], next_id: u64) -> Result<(), InvalidInput> {
    if rows.is_empty() {
        return Err(InvalidInput::EmptyBatch);
    }
    let mut seen: HashMap<u64, usize> = HashMap::with_capacity(rows.len());
    for (i, r) in rows.iter().enumerate() {
        let id = r.id;
        if id == u64::MAX {
            return Err(InvalidInput::ReservedId { id, row: i });
        }
        // Chosen ids near the top of the range would leave no room for automatic ones.
        if id > MAX_ID && id >= next_id {
            return Err(InvalidInput::IdTooLarge {
                id,
                row: i,
                max: MAX_ID,
            });
        }
        if let Some(first) = seen.insert(id, i) {
            return Err(InvalidInput::DuplicateId {
                id,
                first,
                second: i,
            });
        }
        let sizes = [
            (
                "caption",
                r.caption.as_ref().map_or(0, String::len),
                MAX_CAPTION_BYTES,
            ),
            ("uri", r.uri.as_ref().map_or(0, String::len), MAX_URI_BYTES),
            ("metadata", r.metadata.len(), MAX_METADATA_BYTES),
        ];
        for (field, len, max) in sizes {
            if len > max {
                return Err(InvalidInput::TooLarge {
                    row: i,
                    id,
                    field,
                    len,
                    max,
                });
            }
        }
        if r.image.is_none() && r.text.is_none() {
            return Err(InvalidInput::NoVectors { row: i, id });
        }
        for m in Modality::ALL {
            let Some(v) = r.vectors(m) else { continue };
            let tiers = [
                (
                    Tier::Coarse,
                    &v.coarse,
                    schema.coarse_dim,
                    schema.coarse_type,
                ),
                (Tier::Fine, &v.fine, schema.fine_dim, schema.fine_type),
            ];
            for (tier, values, dim, elem) in tiers {
                if values.len() != dim {
                    return Err(InvalidInput::Dimension {
                        row: i,
                        id,
                        modality: m,
                        tier,
                        expected: dim,
                        got: values.len(),
                    });
                }
                for (index, &value) in values.iter().enumerate() {
                    if !value.is_finite() {
                        return Err(InvalidInput::NonFinite {
                            row: i,
                            id,
                            modality: m,
                            tier,
                            index,
                            value,
                        });
                    }
                    if elem == ElemType::F16 && value.abs() > f32::from(half::f16::MAX) {
                        return Err(InvalidInput::OutOfRange {
                            row: i,
                            id,
                            modality: m,
                            tier,
                            index,
                            value,
                        });
                    }
                }
            }
        }
    }
    Ok(())
}
