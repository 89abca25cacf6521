//! The encoding of one metadata field over the rows of a segment or memtable batch: the body
//! of a column file `seg-<id>.field-<n>`, also kept in memory for memtable batches, and
//! [`FieldColumn`], its borrowed reader.
//!
//! Body (little-endian, every section starting 8-byte aligned):
//!
//! ```text
//! rows u64, dict_count u64, tag_code_count u64, types u8 (FieldTypes bits), layout u8, 2 pad,
//! entries u32 (sparse layout: rows with a value; else 0)
//! presence   layout 0, dense, one type: ceil(rows/64) u64 words, bit set = the row has a value
//!            layout 1, dense, several types: rows u8, 0 = no value, 1 + type code; pad to 8
//!            layout 2, sparse: entries × u32 rows, strictly ascending; pad to 8; then
//!            entries × u8 type codes (1 + type code); pad to 8
//! slots      one u64 per row (dense) or per entry (sparse): Bool 0/1, Int and Timestamp i64,
//!            Float f64 bits, Str dictionary code, Tags (first tag code index u32, count u32);
//!            0 for dense rows without a value
//! tag codes  tag_code_count × u32 dictionary codes; pad to 8
//! dict       (dict_count + 1) × u32 offsets into the bytes that follow; pad to 8; UTF-8 bytes
//! ```
//!
//! A field that at most a quarter of the rows have is written sparse, so that metadata with
//! many rarely used keys costs space in proportion to the values, not to rows × fields. The
//! dictionary holds the distinct strings of `Str` and `Tags` values, sorted, so code order is
//! string order.

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::CorruptionError;
use crate::format::field::{Dictionary, FieldType, FieldTypes, FieldValue, OwnedValue, Tags};

const HEADER_LEN: usize = 32;
const LAYOUT_SINGLE: u8 = 0;
const LAYOUT_MIXED: u8 = 1;
const LAYOUT_SPARSE: u8 = 2;

fn pad8(n: usize) -> usize {
    n.div_ceil(8) * 8
}

fn push_pad(buf: &mut Vec<u8>) {
    buf.resize(pad8(buf.len()), 0);
}

/// Whether `entries` values over `rows` rows are written sparse.
fn is_sparse(entries: usize, rows: usize) -> bool {
    entries.saturating_mul(4) <= rows && rows > 0
}

/// Encodes the values of one field over `rows` rows; `values` lists `(row, value)` by
/// ascending row, each row at most once.
pub(crate) fn encode_column(rows: usize, values: &[(usize, OwnedValue)]) -> Vec<u8> {
    let types: FieldTypes = values.iter().map(|(_, v)| v.field_type()).collect();
    let mut dict: BTreeMap<&str, u32> = BTreeMap::new();
    for (_, v) in values {
        match v {
            OwnedValue::Str(s) => {
                dict.insert(s, 0);
            }
            OwnedValue::Tags(tags) => dict.extend(tags.iter().map(|t| (t.as_str(), 0))),
            _ => {}
        }
    }
    for (code, slot) in dict.values_mut().enumerate() {
        *slot = code as u32;
    }
    let sparse = is_sparse(values.len(), rows);
    let mut slots = vec![0u64; if sparse { values.len() } else { rows }];
    let mut tag_codes: Vec<u32> = Vec::new();
    for (i, (row, v)) in values.iter().enumerate() {
        slots[if sparse { i } else { *row }] = match v {
            OwnedValue::Bool(b) => u64::from(*b),
            OwnedValue::Int(i) | OwnedValue::Timestamp(i) => *i as u64,
            OwnedValue::Float(f) => f.to_bits(),
            OwnedValue::Str(s) => u64::from(dict[s.as_str()]),
            OwnedValue::Tags(tags) => {
                let start = tag_codes.len() as u64;
                tag_codes.extend(tags.iter().map(|t| dict[t.as_str()]));
                start | ((tags.len() as u64) << 32)
            }
        };
    }
    let layout = match (sparse, types.len() <= 1) {
        (true, _) => LAYOUT_SPARSE,
        (false, true) => LAYOUT_SINGLE,
        (false, false) => LAYOUT_MIXED,
    };
    let mut buf = Vec::with_capacity(HEADER_LEN + slots.len() * 9 + tag_codes.len() * 4);
    buf.extend_from_slice(&(rows as u64).to_le_bytes());
    buf.extend_from_slice(&(dict.len() as u64).to_le_bytes());
    buf.extend_from_slice(&(tag_codes.len() as u64).to_le_bytes());
    buf.push(types.bits());
    buf.push(layout);
    buf.extend_from_slice(&[0, 0]);
    let entries = if sparse { values.len() as u32 } else { 0 };
    buf.extend_from_slice(&entries.to_le_bytes());
    let type_code = |v: &OwnedValue| 1 + v.field_type().code();
    match layout {
        LAYOUT_SPARSE => {
            values
                .iter()
                .for_each(|(row, _)| buf.extend_from_slice(&(*row as u32).to_le_bytes()));
            push_pad(&mut buf);
            buf.extend(values.iter().map(|(_, v)| type_code(v)));
            push_pad(&mut buf);
        }
        LAYOUT_SINGLE => {
            let mut words = vec![0u64; rows.div_ceil(64)];
            for (row, _) in values {
                words[row / 64] |= 1 << (row % 64);
            }
            words
                .iter()
                .for_each(|w| buf.extend_from_slice(&w.to_le_bytes()));
        }
        _ => {
            let mut codes = vec![0u8; rows];
            for (row, v) in values {
                codes[*row] = type_code(v);
            }
            buf.extend_from_slice(&codes);
            push_pad(&mut buf);
        }
    }
    slots
        .iter()
        .for_each(|s| buf.extend_from_slice(&s.to_le_bytes()));
    tag_codes
        .iter()
        .for_each(|c| buf.extend_from_slice(&c.to_le_bytes()));
    push_pad(&mut buf);
    let mut offset = 0u32;
    buf.extend_from_slice(&offset.to_le_bytes());
    for s in dict.keys() {
        offset += s.len() as u32;
        buf.extend_from_slice(&offset.to_le_bytes());
    }
    push_pad(&mut buf);
    for s in dict.keys() {
        buf.extend_from_slice(s.as_bytes());
    }
    buf
}

/// Which rows have a value, and of which type.
#[derive(Debug, Clone, Copy)]
enum Presence<'a> {
    /// Dense, one type; bitmap words of the rows with a value.
    Single(Option<FieldType>, &'a [u8]),
    /// Dense, several types: per row `0` (no value) or `1 + type code`.
    Mixed(&'a [u8]),
    /// The rows with a value (`u32`, ascending) and their `1 + type code`s.
    Sparse { rows: &'a [u8], codes: &'a [u8] },
}

/// One metadata field over the rows of a source (a column file or a memtable batch's
/// in-memory column), borrowed. Values are decoded on access.
#[derive(Debug, Clone, Copy)]
pub struct FieldColumn<'a> {
    rows: usize,
    types: FieldTypes,
    presence: Presence<'a>,
    slots: &'a [u8],
    tag_codes: &'a [u8],
    dict: Dictionary<'a>,
}

fn read_u64(bytes: &[u8], at: usize) -> Option<u64> {
    let b = bytes.get(at..at + 8)?;
    Some(u64::from_le_bytes(b.try_into().ok()?))
}

fn read_u32(bytes: &[u8], index: usize) -> Option<u32> {
    let b = bytes.get(index * 4..index * 4 + 4)?;
    Some(u32::from_le_bytes(b.try_into().ok()?))
}

impl<'a> FieldColumn<'a> {
    /// Splits a body into its sections, checking the lengths (O(1)); `file` names it in
    /// errors. Values are checked by [`validate`](Self::validate).
    pub(crate) fn parse(body: &'a [u8], file: &Path) -> Result<FieldColumn<'a>, CorruptionError> {
        let corrupt = |at: usize, what: String| CorruptionError::new(file, at as u64, what);
        if body.len() < HEADER_LEN {
            return Err(corrupt(0, format!("column body of {} bytes", body.len())));
        }
        let header = |at| read_u64(body, at).map_or(usize::MAX, |v| v as usize);
        let (rows, dict_count, tag_count) = (header(0), header(8), header(16));
        let entries = read_u32(body, 7).unwrap_or(0) as usize;
        let types = FieldTypes::from_bits(body[24])
            .ok_or_else(|| corrupt(24, format!("unknown type bits {:#x}", body[24])))?;
        let layout = body[25];
        let (presence_len, slot_count) = match layout {
            LAYOUT_SINGLE if types.len() <= 1 && entries == 0 => {
                (rows.div_ceil(64).checked_mul(8), Some(rows))
            }
            LAYOUT_MIXED if types.len() > 1 && entries == 0 => (Some(pad8(rows)), Some(rows)),
            LAYOUT_SPARSE if entries <= rows => {
                (Some(pad8(entries * 4) + pad8(entries)), Some(entries))
            }
            _ => {
                return Err(corrupt(
                    25,
                    format!(
                        "layout {layout} for {} types, {entries} entries",
                        types.len()
                    ),
                ));
            }
        };
        let sizes = [
            presence_len,
            slot_count.and_then(|n| n.checked_mul(8)),
            tag_count.checked_mul(4).map(pad8),
            dict_count
                .checked_add(1)
                .and_then(|n| n.checked_mul(4))
                .map(pad8),
        ];
        let mut at = HEADER_LEN;
        let mut sections = [&body[..0]; 4];
        for (section, size) in sections.iter_mut().zip(sizes) {
            let end = size
                .and_then(|s| at.checked_add(s))
                .filter(|&e| e <= body.len());
            let Some(end) = end else {
                return Err(corrupt(
                    at,
                    format!(
                        "column of {rows} rows, {tag_count} tags, {dict_count} strings is longer \
                         than its {}-byte body",
                        body.len()
                    ),
                ));
            };
            *section = &body[at..end];
            at = end;
        }
        let [presence, slots, tag_codes, offsets] = sections;
        let presence = match layout {
            LAYOUT_SINGLE => Presence::Single(types.iter().next(), presence),
            LAYOUT_MIXED => Presence::Mixed(&presence[..rows]),
            _ => {
                let codes_at = pad8(entries * 4);
                Presence::Sparse {
                    rows: &presence[..entries * 4],
                    codes: &presence[codes_at..codes_at + entries],
                }
            }
        };
        Ok(FieldColumn {
            rows,
            types,
            presence,
            slots,
            tag_codes: &tag_codes[..tag_count * 4],
            dict: Dictionary {
                offsets: &offsets[..(dict_count + 1) * 4],
                bytes: &body[at..],
            },
        })
    }

    /// Checks every value (O(rows + strings)): type codes, sparse rows ascending and in range,
    /// dictionary offsets, UTF-8 and order, codes and tag ranges in bounds, and that `types`
    /// lists exactly the types used.
    pub(crate) fn validate(&self, file: &Path) -> Result<(), CorruptionError> {
        let corrupt = |what: String| CorruptionError::new(file, 0, what);
        let mut prev: Option<&str> = None;
        for code in 0..self.dict.len() as u32 {
            let s = self.dict.get(code).ok_or_else(|| {
                corrupt(format!(
                    "dictionary string {code} is out of bounds or not UTF-8"
                ))
            })?;
            if prev.is_some_and(|p| p >= s) {
                return Err(corrupt(format!("dictionary string {code} is out of order")));
            }
            prev = Some(s);
        }
        let in_dict = |code: u64| code < self.dict.len() as u64;
        for c in self.tag_codes.chunks_exact(4) {
            if !in_dict(u64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]]))) {
                return Err(corrupt("a tag code is beyond the dictionary".into()));
            }
        }
        if let Presence::Sparse { rows, .. } = self.presence {
            let mut prev: Option<u32> = None;
            for row in rows
                .chunks_exact(4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            {
                if prev.is_some_and(|p| p >= row) || row as usize >= self.rows {
                    return Err(corrupt(format!(
                        "sparse row {row} is out of order or range"
                    )));
                }
                prev = Some(row);
            }
        }
        if let Presence::Single(None, words) = self.presence
            && words.iter().any(|&b| b != 0)
        {
            return Err(corrupt(
                "a row has a value in a column without types".into(),
            ));
        }
        let mut used = FieldTypes::EMPTY;
        for entry in 0..self.entries() {
            let (row, code) = self.entry(entry);
            let ty = match code {
                Some(c) => FieldType::from_code(c.wrapping_sub(1))
                    .ok_or_else(|| corrupt(format!("row {row} has type code {c}")))?,
                None => continue,
            };
            let slot = read_u64(self.slots, entry * 8).unwrap_or(0);
            used.insert(ty);
            let ok = match ty {
                FieldType::Bool => slot <= 1,
                FieldType::Str => in_dict(slot),
                FieldType::Tags => {
                    let (start, len) = (slot & 0xffff_ffff, slot >> 32);
                    start + len <= (self.tag_codes.len() / 4) as u64
                }
                FieldType::Int | FieldType::Float | FieldType::Timestamp => true,
            };
            if !ok {
                return Err(corrupt(format!("row {row} holds an invalid {ty} value")));
            }
        }
        if used != self.types {
            return Err(corrupt(format!(
                "column lists types {:?}, its rows use {:?}",
                self.types, used
            )));
        }
        Ok(())
    }

    /// Number of slots: rows (dense) or entries (sparse).
    fn entries(&self) -> usize {
        match self.presence {
            Presence::Sparse { codes, .. } => codes.len(),
            _ => self.rows,
        }
    }

    /// Slot `entry`'s row and its `1 + type code` (`None`: the dense row has no value).
    fn entry(&self, entry: usize) -> (usize, Option<u8>) {
        let type_code = |ty: FieldType| 1 + ty.code();
        match self.presence {
            Presence::Single(ty, words) => {
                let set = words
                    .get(entry / 8)
                    .is_some_and(|b| b & (1 << (entry % 8)) != 0);
                (entry, ty.filter(|_| set).map(type_code))
            }
            Presence::Mixed(codes) => (entry, codes.get(entry).copied().filter(|&c| c != 0)),
            Presence::Sparse { rows, codes } => (
                read_u32(rows, entry).map_or(usize::MAX, |r| r as usize),
                codes.get(entry).copied(),
            ),
        }
    }

    /// The type of `row`'s value and the index of its slot.
    fn locate(&self, row: usize) -> Option<(FieldType, usize)> {
        let entry = match self.presence {
            Presence::Sparse { rows, .. } => {
                let row = u32::try_from(row).ok()?;
                let (mut lo, mut hi) = (0, rows.len() / 4);
                loop {
                    if lo >= hi {
                        return None;
                    }
                    let mid = lo + (hi - lo) / 2;
                    match read_u32(rows, mid)?.cmp(&row) {
                        std::cmp::Ordering::Less => lo = mid + 1,
                        std::cmp::Ordering::Greater => hi = mid,
                        std::cmp::Ordering::Equal => break mid,
                    }
                }
            }
            _ => row,
        };
        let (_, code) = self.entry(entry);
        Some((FieldType::from_code(code?.checked_sub(1)?)?, entry))
    }

    /// Number of rows (those without a value included).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The types the field takes in this source.
    pub fn types(&self) -> FieldTypes {
        self.types
    }

    /// The type of `row`'s value; `None` when the row has none.
    pub fn type_of(&self, row: usize) -> Option<FieldType> {
        self.locate(row).map(|(ty, _)| ty)
    }

    /// The value of `row`; `None` when the row has no value (absent key, JSON null, nested
    /// object, mixed array) or is out of range.
    pub fn get(&self, row: usize) -> Option<FieldValue<'a>> {
        let (ty, entry) = self.locate(row)?;
        let slot = read_u64(self.slots, entry.checked_mul(8)?)?;
        Some(match ty {
            FieldType::Bool => FieldValue::Bool(slot != 0),
            FieldType::Int => FieldValue::Int(slot as i64),
            FieldType::Timestamp => FieldValue::Timestamp(slot as i64),
            FieldType::Float => FieldValue::Float(f64::from_bits(slot)),
            FieldType::Str => FieldValue::Str(self.dict.get(u32::try_from(slot).ok()?)?),
            FieldType::Tags => {
                let start = (slot & 0xffff_ffff) as usize * 4;
                let end = start.checked_add((slot >> 32) as usize * 4)?;
                FieldValue::Tags(Tags {
                    codes: self.tag_codes.get(start..end)?,
                    dict: self.dict,
                })
            }
        })
    }

    /// Number of distinct strings among the `Str` and `Tags` values.
    pub fn dictionary_len(&self) -> usize {
        self.dict.len()
    }

    /// Dictionary string `code` (codes are in string order: the engine can compare codes
    /// instead of strings); `None` past the end.
    pub fn dictionary_string(&self, code: u32) -> Option<&'a str> {
        self.dict.get(code)
    }

    /// The dictionary code of `s`, if some value of this column is or contains `s`
    /// (binary search).
    pub fn dictionary_code(&self, s: &str) -> Option<u32> {
        let (mut lo, mut hi) = (0u32, self.dict.len() as u32);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.dict.get(mid)?.cmp(s) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(mid),
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(rows: usize, values: Vec<(usize, OwnedValue)>) {
        let body = encode_column(rows, &values);
        let p = Path::new("c");
        let col = FieldColumn::parse(&body, p).unwrap();
        col.validate(p).unwrap();
        assert_eq!(col.rows(), rows);
        let mut next = values.iter().peekable();
        for row in 0..rows + 2 {
            let want = next.next_if(|(r, _)| *r == row).map(|(_, v)| v);
            let got = col.get(row);
            match (want, got) {
                (None, None) => {}
                (Some(OwnedValue::Bool(a)), Some(FieldValue::Bool(b))) => assert_eq!(*a, b),
                (Some(OwnedValue::Int(a)), Some(FieldValue::Int(b))) => assert_eq!(*a, b),
                (Some(OwnedValue::Timestamp(a)), Some(FieldValue::Timestamp(b))) => {
                    assert_eq!(*a, b)
                }
                (Some(OwnedValue::Float(a)), Some(FieldValue::Float(b))) => {
                    assert_eq!(a.to_bits(), b.to_bits())
                }
                (Some(OwnedValue::Str(a)), Some(FieldValue::Str(b))) => {
                    assert_eq!(a, b);
                    assert_eq!(
                        col.dictionary_string(col.dictionary_code(b).unwrap()),
                        Some(b)
                    );
                }
                (Some(OwnedValue::Tags(a)), Some(FieldValue::Tags(b))) => {
                    assert_eq!(
                        a.iter().map(String::as_str).collect::<Vec<_>>(),
                        b.iter().collect::<Vec<_>>()
                    );
                    assert!(a.iter().all(|t| b.contains(t)));
                }
                (w, g) => panic!("row {row}: want {w:?}, got {g:?}"),
            }
        }
    }

    #[test]
    fn columns_round_trip() {
        round_trip(0, vec![]);
        round_trip(3, vec![]);
        round_trip(
            130,
            (0..130)
                .step_by(3)
                .map(|r| (r, OwnedValue::Int(r as i64 - 50)))
                .collect(),
        );
        round_trip(
            5,
            vec![(0, OwnedValue::Bool(true)), (4, OwnedValue::Bool(false))],
        );
        round_trip(
            4,
            vec![
                (1, OwnedValue::Float(-0.0)),
                (2, OwnedValue::Float(f64::MAX)),
            ],
        );
        round_trip(
            6,
            vec![
                (0, OwnedValue::Str("b".into())),
                (
                    1,
                    OwnedValue::Tags(vec!["a".into(), "b".into(), "a".into()]),
                ),
                (2, OwnedValue::Tags(vec![])),
                (3, OwnedValue::Int(7)),
                (4, OwnedValue::Timestamp(-5)),
                (5, OwnedValue::Str("é".into())),
            ],
        );
        // Sparse (a quarter of the rows or fewer): one type, and several.
        let one_type: Vec<_> = (0..100)
            .step_by(9)
            .map(|r| (r, OwnedValue::Float(r as f64)))
            .collect();
        assert_eq!(encode_column(100, &one_type)[25], LAYOUT_SPARSE);
        round_trip(100, one_type);
        round_trip(
            40,
            vec![
                (3, OwnedValue::Str("x".into())),
                (17, OwnedValue::Tags(vec!["x".into(), "y".into()])),
                (39, OwnedValue::Bool(true)),
            ],
        );
    }

    #[test]
    fn a_rare_field_costs_space_per_value_not_per_row() {
        let body = encode_column(1 << 20, &[(123_456, OwnedValue::Int(1))]);
        assert!(body.len() < 128, "{} bytes", body.len());
    }

    #[test]
    fn damaged_columns_are_errors_never_panics() {
        let values = vec![
            (0, OwnedValue::Str("beach".into())),
            (2, OwnedValue::Tags(vec!["x".into(), "y".into()])),
            (3, OwnedValue::Int(1)),
        ];
        let dense = encode_column(4, &values);
        let sparse = encode_column(13, &values);
        assert_eq!(sparse[25], LAYOUT_SPARSE);
        for body in [dense, sparse] {
            check_damage(&body);
        }
    }

    fn check_damage(body: &[u8]) {
        let p = Path::new("c");
        let mut caught = 0;
        for i in 0..body.len() {
            for bit in [0x01, 0x80] {
                let mut bad = body.to_vec();
                bad[i] ^= bit;
                match FieldColumn::parse(&bad, p) {
                    Ok(col) => {
                        caught += usize::from(col.validate(p).is_err());
                        (0..20).for_each(|r| {
                            let _ = col.get(r);
                        });
                    }
                    Err(_) => caught += 1,
                }
            }
        }
        assert!(caught > 0);
        for n in 0..body.len() {
            if let Ok(col) = FieldColumn::parse(&body[..n], p) {
                let _ = col.validate(p);
                (0..20).for_each(|r| {
                    let _ = col.get(r);
                });
            }
        }
    }
}
