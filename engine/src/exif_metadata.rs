//! EXIF as metadata fields: an inserted photo's capture time, camera and GPS position become
//! top-level fields of its JSON metadata, so "photos from last summer near Lisbon" is a filter
//! on `taken_at`, `gps_lat` and `gps_lon` away.
//!
//! Best effort by design: an image without EXIF, or with EXIF that cannot be read, is inserted
//! with its metadata unchanged.

use std::io::{BufRead, BufReader, Cursor, Seek};

use exif::{Exif, In, Rational, Tag, Value};
use serde_json::{Map, Value as Json};

use crate::ImageInput;

/// Capture time, `YYYY-MM-DDTHH:MM:SS` plus the offset (`+01:00`) when EXIF records one.
pub const TAKEN_AT: &str = "taken_at";
/// Make and model of the camera, e.g. `Canon EOS 5D`.
pub const CAMERA: &str = "camera";
/// Latitude in decimal degrees, negative south of the equator.
pub const GPS_LAT: &str = "gps_lat";
/// Longitude in decimal degrees, negative west of Greenwich.
pub const GPS_LON: &str = "gps_lon";

/// `metadata` with the EXIF fields of `image` added, for each field the image carries and
/// `metadata` does not already have (the caller's keys win). Metadata that is neither empty
/// nor a JSON object is returned unchanged, and so is metadata when nothing is added. The
/// caller's bytes are kept as written: the fields are spliced in before the closing brace.
pub(crate) fn with_exif_fields(image: ImageInput<'_>, metadata: Vec<u8>) -> Vec<u8> {
    let existing = if metadata.iter().all(u8::is_ascii_whitespace) {
        Map::new()
    } else {
        match serde_json::from_slice::<Json>(&metadata) {
            Ok(Json::Object(map)) => map,
            _ => return metadata,
        }
    };
    let Some(exif) = read_exif(image) else {
        return metadata;
    };
    let added: Vec<(&str, Json)> = exif_fields(&exif)
        .into_iter()
        .filter(|(key, _)| !existing.contains_key(*key))
        .collect();
    if added.is_empty() {
        return metadata;
    }
    splice(metadata, existing.is_empty(), &added)
}

/// `object` (a JSON object, or only whitespace) with `fields` appended.
fn splice(object: Vec<u8>, empty: bool, fields: &[(&str, Json)]) -> Vec<u8> {
    let body = fields
        .iter()
        .map(|(key, value)| format!("{}:{value}", Json::from(*key)))
        .collect::<Vec<_>>()
        .join(",");
    let Some(close) = object.iter().rposition(|&b| b == b'}') else {
        return format!("{{{body}}}").into_bytes();
    };
    let mut out = object[..close].to_vec();
    if !empty {
        out.push(b',');
    }
    out.extend_from_slice(body.as_bytes());
    out.extend_from_slice(&object[close..]);
    out
}

fn read_exif(image: ImageInput<'_>) -> Option<Exif> {
    fn from<R: BufRead + Seek>(mut reader: R) -> Option<Exif> {
        exif::Reader::new().read_from_container(&mut reader).ok()
    }
    match image {
        ImageInput::Bytes(bytes) => from(Cursor::new(bytes)),
        ImageInput::Path(path) => from(BufReader::new(std::fs::File::open(path).ok()?)),
    }
}

/// The fields this EXIF yields, in a fixed order.
fn exif_fields(exif: &Exif) -> Vec<(&'static str, Json)> {
    let mut fields = Vec::new();
    if let Some(taken) = taken_at(exif) {
        fields.push((TAKEN_AT, Json::from(taken)));
    }
    if let Some(camera) = camera(exif) {
        fields.push((CAMERA, Json::from(camera)));
    }
    let coordinate = |tag, reference, negative, max| {
        let degrees = degrees(exif, tag)?;
        let sign = match ascii(exif, reference)?.as_str() {
            r if r.eq_ignore_ascii_case(negative) => -1.0,
            _ => 1.0,
        };
        (degrees <= max).then(|| serde_json::Number::from_f64(sign * degrees))?
    };
    // A position needs both coordinates.
    if let (Some(lat), Some(lon)) = (
        coordinate(Tag::GPSLatitude, Tag::GPSLatitudeRef, "S", 90.0),
        coordinate(Tag::GPSLongitude, Tag::GPSLongitudeRef, "W", 180.0),
    ) {
        fields.push((GPS_LAT, Json::Number(lat)));
        fields.push((GPS_LON, Json::Number(lon)));
    }
    fields
}

/// The first string of an ASCII field, without the padding cameras leave.
fn ascii(exif: &Exif, tag: Tag) -> Option<String> {
    let field = exif.get_field(tag, In::PRIMARY)?;
    let Value::Ascii(strings) = &field.value else {
        return None;
    };
    let text = String::from_utf8_lossy(strings.first()?);
    let text = text.trim_matches(|c: char| c == '\0' || c.is_whitespace());
    (!text.is_empty()).then(|| text.to_owned())
}

/// `DateTimeOriginal` (`YYYY:MM:DD HH:MM:SS`) as ISO 8601, with `OffsetTimeOriginal` if valid.
fn taken_at(exif: &Exif) -> Option<String> {
    let raw = ascii(exif, Tag::DateTimeOriginal)?;
    let b = raw.as_bytes();
    let digits = |range: std::ops::Range<usize>| b[range].iter().all(u8::is_ascii_digit);
    let shaped = b.len() == 19
        && [(0..4), (5..7), (8..10), (11..13), (14..16), (17..19)]
            .into_iter()
            .all(digits)
        && b[4] == b':'
        && b[7] == b':'
        && b[10] == b' '
        && b[13] == b':'
        && b[16] == b':';
    if !shaped {
        return None;
    }
    let mut iso = format!(
        "{}-{}-{}T{}",
        &raw[0..4],
        &raw[5..7],
        &raw[8..10],
        &raw[11..19]
    );
    if let Some(offset) = ascii(exif, Tag::OffsetTimeOriginal) {
        let o = offset.as_bytes();
        let valid = o.len() == 6
            && (o[0] == b'+' || o[0] == b'-')
            && o[1..3].iter().all(u8::is_ascii_digit)
            && o[3] == b':'
            && o[4..6].iter().all(u8::is_ascii_digit);
        if valid {
            iso.push_str(&offset);
        }
    }
    Some(iso)
}

/// `Make Model`, or the model alone when it already names the make.
fn camera(exif: &Exif) -> Option<String> {
    match (ascii(exif, Tag::Make), ascii(exif, Tag::Model)) {
        (Some(make), Some(model))
            if model
                .to_ascii_lowercase()
                .starts_with(&make.to_ascii_lowercase()) =>
        {
            Some(model)
        }
        (Some(make), Some(model)) => Some(format!("{make} {model}")),
        (one, other) => one.or(other),
    }
}

/// Degrees, minutes and seconds as decimal degrees; `None` unless finite and non-negative.
fn degrees(exif: &Exif, tag: Tag) -> Option<f64> {
    let field = exif.get_field(tag, In::PRIMARY)?;
    let Value::Rational(parts) = &field.value else {
        return None;
    };
    let part = |i: usize| parts.get(i).map_or(0.0, Rational::to_f64);
    let value = part(0) + part(1) / 60.0 + part(2) / 3600.0;
    (!parts.is_empty() && value.is_finite() && value >= 0.0).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> Vec<(&'static str, Json)> {
        vec![
            (TAKEN_AT, Json::from("2024-07-01T10:00:00")),
            (GPS_LAT, Json::from(38.5)),
        ]
    }

    #[test]
    fn splice_keeps_the_callers_bytes_and_appends() {
        let out = splice(br#"{ "b": 1,  "a": [2] }"#.to_vec(), false, &fields());
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{ "b": 1,  "a": [2] ,"taken_at":"2024-07-01T10:00:00","gps_lat":38.5}"#
        );
    }

    #[test]
    fn splice_into_nothing_or_an_empty_object() {
        let expected = r#"{"taken_at":"2024-07-01T10:00:00","gps_lat":38.5}"#;
        assert_eq!(splice(Vec::new(), true, &fields()), expected.as_bytes());
        let out = splice(b"{}".to_vec(), true, &fields());
        assert_eq!(out, expected.as_bytes());
        let parsed: Json = serde_json::from_slice(&splice(b" {\n} ".to_vec(), true, &fields()))
            .expect("valid JSON");
        assert_eq!(parsed["gps_lat"], 38.5);
    }

    #[test]
    fn metadata_that_is_not_an_object_is_left_alone() {
        // Bytes without EXIF never reach the reader's result; what matters is that the
        // metadata is returned as given whatever the image holds.
        let image = ImageInput::Bytes(b"not an image");
        for metadata in [
            &b"[1, 2]"[..],
            b"\"text\"",
            b"\xff\x00binary",
            b"{\"a\": 1}",
        ] {
            assert_eq!(with_exif_fields(image, metadata.to_vec()), metadata);
        }
    }
}
