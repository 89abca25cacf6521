//! Field columns derived in memory from rows' metadata: what a memtable batch answers
//! [`Source::field`](crate::Source::field) from (built once when the batch is built, at
//! insert or WAL replay), and what a segment written without column files falls back to.

use std::collections::BTreeMap;
use std::path::Path;

use crate::format::field::{OwnedValue, extract_fields};
use crate::format::field_column::{FieldColumn, encode_column};

/// Every field of some rows, each encoded as a column body (the layout of a column file).
#[derive(Debug, Default)]
pub(crate) struct OwnedFields {
    columns: BTreeMap<String, Vec<u8>>,
}

/// The values of every field over rows, by field name, each `(row, value)` by ascending row:
/// the one application of the extraction rule to a set of rows.
pub(crate) fn field_values<'m>(
    metadata: impl Iterator<Item = &'m [u8]>,
) -> BTreeMap<String, Vec<(usize, OwnedValue)>> {
    let mut fields: BTreeMap<String, Vec<(usize, OwnedValue)>> = BTreeMap::new();
    for (row, m) in metadata.enumerate() {
        for (name, value) in extract_fields(m) {
            fields.entry(name).or_default().push((row, value));
        }
    }
    fields
}

impl OwnedFields {
    /// Extracts and encodes the fields of `rows` rows from their metadata.
    pub(crate) fn derive<'m>(rows: usize, metadata: impl Iterator<Item = &'m [u8]>) -> Self {
        let columns = field_values(metadata)
            .into_iter()
            .map(|(name, values)| {
                let body = encode_column(rows, &values);
                (name, body)
            })
            .collect();
        OwnedFields { columns }
    }

    /// The column of field `name`, `None` when no row has it.
    pub(crate) fn column(&self, name: &str) -> Option<FieldColumn<'_>> {
        let body = self.columns.get(name)?;
        // Bytes this process encoded: parsing cannot fail.
        FieldColumn::parse(body, Path::new("memtable")).ok()
    }

    /// Names of the fields, sorted.
    pub(crate) fn names(&self) -> impl Iterator<Item = &str> {
        self.columns.keys().map(String::as_str)
    }
}
