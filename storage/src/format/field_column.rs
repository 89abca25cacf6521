//! The encoding of one metadata field over the rows of a segment or memtable batch: the body
//! of a column file `seg-<id>.field-<n>`, also kept in memory for memtable batches, and
//! [`FieldColumn`], its borrowed reader.
//!
//! Body (little-endian, every section starting 8-byte aligned):
//!
//! ```text
//! rows u64, dict_count u64, tag_code_count u64, types u8 (FieldTypes bits), layout u8, 6 pad
//! presence   layout 0 (one type): ceil(rows/64) u64 words, bit set = the row has a value
//!            layout 1 (several types): rows u8, 0 = no value, 1 + type code; pad to 8
//! slots      rows × u64: Bool 0/1, Int and Timestamp i64, Float f64 bits, Str dictionary code,
//!            Tags (first tag code index u32, count u32); 0 for rows without a value
//! tag codes  tag_code_count × u32 dictionary codes; pad to 8
//! dict       (dict_count + 1) × u32 offsets into the bytes that follow; pad to 8; UTF-8 bytes
//! ```
//!
//! The dictionary holds the distinct strings of `Str` and `Tags` values, sorted, so code
//! order is string order.

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::CorruptionError;
use crate::format::field::{Dictionary, FieldType, FieldTypes, FieldValue, OwnedValue, Tags};

const HEADER_LEN: usize = 32;
const LAYOUT_SINGLE: u8 = 0;
const LAYOUT_MIXED: u8 = 1;

fn pad8(n: usize) -> usize {
    n.div_ceil(8) * 8
}

fn push_pad(buf: &mut Vec<u8>) {
    buf.resize(pad8(buf.len()), 0);
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
    let mut slots = vec![0u64; rows];
    let mut tag_codes: Vec<u32> = Vec::new();
    for (row, v) in values {
        slots[*row] = match v {
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
    let single = types.len() <= 1;
    let mut buf = Vec::with_capacity(HEADER_LEN + rows * 9 + tag_codes.len() * 4);
    buf.extend_from_slice(&(rows as u64).to_le_bytes());
    buf.extend_from_slice(&(dict.len() as u64).to_le_bytes());
    buf.extend_from_slice(&(tag_codes.len() as u64).to_le_bytes());
    buf.push(types.bits());
    buf.push(if single { LAYOUT_SINGLE } else { LAYOUT_MIXED });
    buf.resize(HEADER_LEN, 0);
    if single {
        let mut words = vec![0u64; rows.div_ceil(64)];
        for (row, _) in values {
            words[row / 64] |= 1 << (row % 64);
        }
        words
            .iter()
            .for_each(|w| buf.extend_from_slice(&w.to_le_bytes()));
    } else {
        let mut codes = vec![0u8; rows];
        for (row, v) in values {
            codes[*row] = 1 + v.field_type().code();
        }
        buf.extend_from_slice(&codes);
        push_pad(&mut buf);
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
    /// One type; bitmap words of the rows with a value.
    Single(Option<FieldType>, &'a [u8]),
    /// Several types: per row `0` (no value) or `1 + type code`.
    Mixed(&'a [u8]),
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
        let types = FieldTypes::from_bits(body[24])
            .ok_or_else(|| corrupt(24, format!("unknown type bits {:#x}", body[24])))?;
        let layout = body[25];
        let presence_len = match layout {
            LAYOUT_SINGLE if types.len() <= 1 => rows.div_ceil(64).checked_mul(8),
            LAYOUT_MIXED if types.len() > 1 => Some(pad8(rows)),
            _ => {
                return Err(corrupt(
                    25,
                    format!("layout {layout} for {} types", types.len()),
                ));
            }
        };
        let sizes = [
            presence_len,
            rows.checked_mul(8),
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
                        "column of {rows} rows, {tag_count} tags, {dict_count} strings is longer than its {}-byte body",
                        body.len()
                    ),
                ));
            };
            *section = &body[at..end];
            at = end;
        }
        let [presence, slots, tag_codes, offsets] = sections;
        let presence = if layout == LAYOUT_SINGLE {
            Presence::Single(types.iter().next(), presence)
        } else {
            Presence::Mixed(&presence[..rows])
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

    /// Checks every value (O(rows + strings)): type codes, dictionary offsets, UTF-8 and
    /// order, codes and tag ranges in bounds, and that `types` lists exactly the types used.
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
        let mut used = FieldTypes::EMPTY;
        for row in 0..self.rows {
            let ty = match self.presence {
                Presence::Single(ty, _) => self.has_bit(row).then_some(ty).flatten(),
                Presence::Mixed(codes) => match codes[row] {
                    0 => None,
                    c => Some(
                        FieldType::from_code(c - 1)
                            .ok_or_else(|| corrupt(format!("row {row} has type code {c}")))?,
                    ),
                },
            };
            let slot = read_u64(self.slots, row * 8).unwrap_or(0);
            let Some(ty) = ty else {
                if self.has_bit(row) && matches!(self.presence, Presence::Single(None, _)) {
                    return Err(corrupt(format!("row {row} has a value in an empty column")));
                }
                continue;
            };
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

    fn has_bit(&self, row: usize) -> bool {
        match self.presence {
            Presence::Single(_, words) => words
                .get(row / 8)
                .is_some_and(|b| b & (1 << (row % 8)) != 0),
            Presence::Mixed(codes) => codes.get(row).is_some_and(|&c| c != 0),
        }
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
        match self.presence {
            Presence::Single(ty, _) => self.has_bit(row).then_some(ty).flatten(),
            Presence::Mixed(codes) => FieldType::from_code(codes.get(row)?.checked_sub(1)?),
        }
    }

    /// The value of `row`; `None` when the row has no value (absent key, JSON null, nested
    /// object, mixed array) or is out of range.
    pub fn get(&self, row: usize) -> Option<FieldValue<'a>> {
        let ty = self.type_of(row)?;
        let slot = read_u64(self.slots, row.checked_mul(8)?)?;
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
    }

    #[test]
    fn damaged_columns_are_errors_never_panics() {
        let values = vec![
            (0, OwnedValue::Str("beach".into())),
            (2, OwnedValue::Tags(vec!["x".into(), "y".into()])),
            (3, OwnedValue::Int(1)),
        ];
        let body = encode_column(4, &values);
        let p = Path::new("c");
        let mut caught = 0;
        for i in 0..body.len() {
            for bit in [0x01, 0x80] {
                let mut bad = body.clone();
                bad[i] ^= bit;
                match FieldColumn::parse(&bad, p) {
                    Ok(col) => {
                        caught += usize::from(col.validate(p).is_err());
                        (0..6).for_each(|r| {
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
                (0..6).for_each(|r| {
                    let _ = col.get(r);
                });
            }
        }
    }
}
