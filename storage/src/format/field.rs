//! Typed metadata fields, bytes only: the value types, the one extraction rule that turns a
//! row's metadata JSON into typed top-level fields, and the timestamp spellings fields accept.
//!
//! Extraction (applied to every row's metadata, wherever rows are encoded: memtable batches at
//! insert and WAL replay, segment columns at flush and compaction): metadata that is a JSON
//! object gives each top-level key a value — `true`/`false` → [`FieldType::Bool`], an integer
//! that fits an `i64` → `Int`, any other number → `Float`, a string → `Timestamp` when
//! [`parse_timestamp`] accepts it, else `Str`, an array of strings only (empty included) →
//! `Tags`. Anything else (`null`, an object, an array holding a non-string) gives no value,
//! and metadata that is not a JSON object gives no fields. Each row keeps its own type, so a
//! field may take several types in one source; comparing across them is the engine's job.

use std::fmt;

/// The type of one metadata field value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FieldType {
    Bool,
    Int,
    Float,
    Str,
    /// Microseconds since 1970-01-01T00:00:00Z.
    Timestamp,
    /// A list of strings.
    Tags,
}

impl FieldType {
    /// Every type, in code order.
    pub const ALL: [FieldType; 6] = [
        FieldType::Bool,
        FieldType::Int,
        FieldType::Float,
        FieldType::Str,
        FieldType::Timestamp,
        FieldType::Tags,
    ];

    /// The type's code in column files (its bit in [`FieldTypes`]).
    pub(crate) fn code(self) -> u8 {
        self as u8
    }

    pub(crate) fn from_code(code: u8) -> Option<FieldType> {
        FieldType::ALL.get(usize::from(code)).copied()
    }

    /// Lower-case name, as error messages and predicate languages spell it.
    pub fn name(self) -> &'static str {
        match self {
            FieldType::Bool => "bool",
            FieldType::Int => "int",
            FieldType::Float => "float",
            FieldType::Str => "string",
            FieldType::Timestamp => "timestamp",
            FieldType::Tags => "tags",
        }
    }
}

impl fmt::Display for FieldType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of [`FieldType`]s, e.g. the types a field takes across the rows of a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FieldTypes(u8);

impl FieldTypes {
    /// The empty set.
    pub const EMPTY: FieldTypes = FieldTypes(0);

    /// Whether `t` is in the set.
    pub fn contains(self, t: FieldType) -> bool {
        self.0 & (1 << t.code()) != 0
    }

    /// Adds `t`.
    pub fn insert(&mut self, t: FieldType) {
        self.0 |= 1 << t.code();
    }

    /// Types in either set.
    pub fn union(self, other: FieldTypes) -> FieldTypes {
        FieldTypes(self.0 | other.0)
    }

    /// Whether no type is in the set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Number of types in the set.
    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// The types in the set, in code order.
    pub fn iter(self) -> impl Iterator<Item = FieldType> {
        FieldType::ALL
            .into_iter()
            .filter(move |t| self.contains(*t))
    }

    /// The bits as stored in column files.
    pub(crate) fn bits(self) -> u8 {
        self.0
    }

    /// From stored bits; `None` when a bit names no type.
    pub(crate) fn from_bits(bits: u8) -> Option<FieldTypes> {
        (bits >> FieldType::ALL.len() == 0).then_some(FieldTypes(bits))
    }
}

impl FromIterator<FieldType> for FieldTypes {
    fn from_iter<I: IntoIterator<Item = FieldType>>(iter: I) -> Self {
        let mut s = FieldTypes::EMPTY;
        for t in iter {
            s.insert(t);
        }
        s
    }
}

/// One typed value of a top-level metadata field of one row, borrowed from its source.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FieldValue<'a> {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(&'a str),
    /// Microseconds since 1970-01-01T00:00:00Z.
    Timestamp(i64),
    Tags(Tags<'a>),
}

impl FieldValue<'_> {
    /// The value's type.
    pub fn field_type(&self) -> FieldType {
        match self {
            FieldValue::Bool(_) => FieldType::Bool,
            FieldValue::Int(_) => FieldType::Int,
            FieldValue::Float(_) => FieldType::Float,
            FieldValue::Str(_) => FieldType::Str,
            FieldValue::Timestamp(_) => FieldType::Timestamp,
            FieldValue::Tags(_) => FieldType::Tags,
        }
    }
}

/// A row's list of strings (a [`FieldType::Tags`] value): dictionary codes into the column's
/// string dictionary.
#[derive(Clone, Copy)]
pub struct Tags<'a> {
    /// Little-endian `u32` codes, 4 bytes each.
    pub(crate) codes: &'a [u8],
    pub(crate) dict: Dictionary<'a>,
}

impl<'a> Tags<'a> {
    /// Number of strings (duplicates included, as the row listed them).
    pub fn len(&self) -> usize {
        self.codes.len() / 4
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.codes.is_empty()
    }

    /// The strings, in the row's order.
    pub fn iter(&self) -> impl Iterator<Item = &'a str> + use<'a> {
        let dict = self.dict;
        self.codes.chunks_exact(4).map(move |c| {
            dict.get(u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .unwrap_or("")
        })
    }

    /// Whether `s` is one of the strings.
    pub fn contains(&self, s: &str) -> bool {
        self.iter().any(|t| t == s)
    }
}

impl PartialEq for Tags<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl fmt::Debug for Tags<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// The sorted, distinct strings of one column: `count + 1` little-endian `u32` offsets into
/// UTF-8 bytes. Code order is string (byte) order.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dictionary<'a> {
    pub(crate) offsets: &'a [u8],
    pub(crate) bytes: &'a [u8],
}

impl<'a> Dictionary<'a> {
    pub(crate) fn len(&self) -> usize {
        (self.offsets.len() / 4).saturating_sub(1)
    }

    fn offset(&self, i: usize) -> Option<usize> {
        let b = self.offsets.get(i * 4..i * 4 + 4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }

    /// String `code`; `None` when out of range or not UTF-8 (only damaged bytes, which the
    /// column's validation reports).
    pub(crate) fn get(&self, code: u32) -> Option<&'a str> {
        let i = code as usize;
        let (start, end) = (self.offset(i)?, self.offset(i + 1)?);
        std::str::from_utf8(self.bytes.get(start..end)?).ok()
    }
}

/// A field value owned by its builder (extraction output, before a column is encoded).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum OwnedValue {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Timestamp(i64),
    Tags(Vec<String>),
}

impl OwnedValue {
    pub(crate) fn field_type(&self) -> FieldType {
        match self {
            OwnedValue::Bool(_) => FieldType::Bool,
            OwnedValue::Int(_) => FieldType::Int,
            OwnedValue::Float(_) => FieldType::Float,
            OwnedValue::Str(_) => FieldType::Str,
            OwnedValue::Timestamp(_) => FieldType::Timestamp,
            OwnedValue::Tags(_) => FieldType::Tags,
        }
    }
}

/// The typed top-level fields of one row's metadata (see the module docs for the rule), in
/// key order. Keys without a value (null, nested objects, mixed arrays) are left out.
pub(crate) fn extract_fields(metadata: &[u8]) -> Vec<(String, OwnedValue)> {
    use serde_json::Value;
    if metadata.is_empty() {
        return Vec::new();
    }
    let Ok(object) = serde_json::from_slice::<serde_json::Map<String, Value>>(metadata) else {
        return Vec::new();
    };
    let mut fields: Vec<(String, OwnedValue)> = object
        .into_iter()
        .filter_map(|(key, value)| {
            let v = match value {
                Value::Bool(b) => OwnedValue::Bool(b),
                Value::Number(n) => match n.as_i64() {
                    Some(i) => OwnedValue::Int(i),
                    None => OwnedValue::Float(n.as_f64()?),
                },
                Value::String(s) => match parse_timestamp(&s) {
                    Some(t) => OwnedValue::Timestamp(t),
                    None => OwnedValue::Str(s),
                },
                Value::Array(items) => OwnedValue::Tags(
                    items
                        .into_iter()
                        .map(|v| match v {
                            Value::String(s) => Some(s),
                            _ => None,
                        })
                        .collect::<Option<Vec<_>>>()?,
                ),
                Value::Null | Value::Object(_) => return None,
            };
            Some((key, v))
        })
        .collect();
    // Key order whatever map serde_json was built with (features unify across a workspace).
    fields.sort_by(|a, b| a.0.cmp(&b.0));
    fields
}

/// Parses the timestamp spellings fields accept, as microseconds since 1970-01-01T00:00:00Z:
/// an RFC 3339 date-time with an offset or `Z` (`2024-06-01T12:30:00+02:00`, fractional
/// seconds allowed), a date-time without an offset, taken as UTC (`2024-06-01T12:30:00`), and a
/// date (`2024-06-01`, its midnight UTC). `T` may also be `t` or a space. Years 0000–9999;
/// anything else (other spellings, impossible dates such as February 30th) is `None`. One
/// definition, shared by field extraction and predicate literals.
pub fn parse_timestamp(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(range)?;
        part.iter().all(u8::is_ascii_digit).then(|| {
            part.iter()
                .fold(0i64, |acc, d| acc * 10 + i64::from(d - b'0'))
        })
    };
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    let days = days_from_civil(year, month, day);
    if b.len() == 10 {
        return Some(days * 86_400_000_000);
    }
    if !matches!(b[10], b'T' | b't' | b' ') || b.len() < 19 || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (hour, minute, second) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let mut pos = 19;
    let mut micros = 0i64;
    if b.get(pos) == Some(&b'.') {
        let start = pos + 1;
        let end = start + b[start..].iter().take_while(|c| c.is_ascii_digit()).count();
        if end == start {
            return None;
        }
        // Digits past microseconds are truncated.
        for (i, d) in b[start..end].iter().enumerate().take(6) {
            micros += i64::from(d - b'0') * 10i64.pow(5 - i as u32);
        }
        pos = end;
    }
    let offset_seconds = match b.get(pos) {
        None => 0,
        Some(b'Z' | b'z') if pos + 1 == b.len() => 0,
        Some(&sign @ (b'+' | b'-')) if b.len() == pos + 6 && b[pos + 3] == b':' => {
            let (oh, om) = (digits(pos + 1..pos + 3)?, digits(pos + 4..pos + 6)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let off = oh * 3600 + om * 60;
            if sign == b'+' { off } else { -off }
        }
        _ => return None,
    };
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_seconds;
    Some(seconds * 1_000_000 + micros)
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(json: &str) -> Vec<(String, OwnedValue)> {
        extract_fields(json.as_bytes())
    }

    #[test]
    fn every_type_is_extracted() {
        let got = fields(
            r#"{"b": true, "i": -3, "big": 18446744073709551615, "f": 2.5, "e": 1e3,
                "s": "beach", "t": "2024-06-01", "tags": ["a", "b"], "none": []}"#,
        );
        let want = vec![
            ("b".into(), OwnedValue::Bool(true)),
            ("big".into(), OwnedValue::Float(18446744073709551615.0)),
            ("e".into(), OwnedValue::Float(1000.0)),
            ("f".into(), OwnedValue::Float(2.5)),
            ("i".into(), OwnedValue::Int(-3)),
            ("none".into(), OwnedValue::Tags(vec![])),
            ("s".into(), OwnedValue::Str("beach".into())),
            ("t".into(), OwnedValue::Timestamp(1_717_200_000_000_000)),
            (
                "tags".into(),
                OwnedValue::Tags(vec!["a".into(), "b".into()]),
            ),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn nested_null_and_mixed_values_are_ignored() {
        let got = fields(r#"{"n": null, "o": {"x": 1}, "m": ["a", 1], "aa": [["a"]], "k": 1}"#);
        assert_eq!(got, vec![("k".into(), OwnedValue::Int(1))]);
    }

    #[test]
    fn non_object_metadata_has_no_fields() {
        for m in [
            "",
            "not json",
            "[1, 2]",
            "3",
            "\"s\"",
            "null",
            "{\"a\": 1",
            "\u{0}",
        ] {
            assert!(fields(m).is_empty(), "{m:?}");
        }
        assert!(extract_fields(&[0xff, 0xfe]).is_empty());
    }

    #[test]
    fn timestamps_in_every_accepted_spelling() {
        let day = 1_717_200_000_000_000i64; // 2024-06-01T00:00:00Z
        let hour = 3_600_000_000i64;
        let cases = [
            ("2024-06-01", Some(day)),
            ("2024-06-01T00:00:00", Some(day)),
            ("2024-06-01 00:00:00", Some(day)),
            ("2024-06-01T00:00:00Z", Some(day)),
            ("2024-06-01t00:00:00z", Some(day)),
            ("2024-06-01T02:00:00+02:00", Some(day)),
            ("2024-05-31T22:00:00-02:00", Some(day)),
            ("2024-06-01T01:00:00.5Z", Some(day + hour + 500_000)),
            ("2024-06-01T00:00:00.1234567", Some(day + 123_456)),
            ("1970-01-01", Some(0)),
            ("1969-12-31T23:59:59Z", Some(-1_000_000)),
            ("2000-02-29", Some(951_782_400_000_000)),
            ("0000-01-01", Some(-62_167_219_200_000_000)),
            ("1900-02-29", None),
            ("2024-02-30", None),
            ("2024-13-01", None),
            ("2024-00-10", None),
            ("2024-06-01T24:00:00", None),
            ("2024-06-01T00:60:00", None),
            ("2024-06-01T00:00", None),
            ("2024-06-01T00:00:00.", None),
            ("2024-06-01T00:00:00+0200", None),
            ("2024-06-01T00:00:00Zjunk", None),
            ("2024-6-1", None),
            ("+2024-06-01", None),
            ("beach", None),
            ("", None),
            ("２０２４-06-01", None),
        ];
        for (s, want) in cases {
            assert_eq!(parse_timestamp(s), want, "{s}");
        }
        assert_eq!(
            fields(r#"{"t": "2024-06-01T00:00:00Z", "s": "2024-02-30"}"#),
            vec![
                ("s".into(), OwnedValue::Str("2024-02-30".into())),
                ("t".into(), OwnedValue::Timestamp(day)),
            ]
        );
    }

    #[test]
    fn type_sets() {
        let mut s = FieldTypes::EMPTY;
        assert!(s.is_empty());
        s.insert(FieldType::Int);
        s.insert(FieldType::Tags);
        assert!(s.contains(FieldType::Int) && !s.contains(FieldType::Str));
        assert_eq!(
            s.iter().collect::<Vec<_>>(),
            [FieldType::Int, FieldType::Tags]
        );
        let u = s.union([FieldType::Str].into_iter().collect());
        assert_eq!(u.len(), 3);
        assert_eq!(FieldTypes::from_bits(u.bits()), Some(u));
        assert_eq!(FieldTypes::from_bits(0x40), None);
    }
}
