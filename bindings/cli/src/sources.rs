//! Readers for what `hivlp import` takes in: a folder of images with sidecar `.txt` captions, or a
//! JSONL / CSV file whose records name an image file and its caption.
//!
//! Every entry carries a stable *key* (the image's absolute path). Import stores the key as the
//! item's `uri`, which is what makes a re-run skip what is already there.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use crate::error::CliError;

/// File extensions read as images when importing a folder.
pub const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "webp", "gif", "bmp"];

/// Column names accepted for the image path, first match wins.
const IMAGE_COLUMNS: &[&str] = &["image", "image_path", "path", "file", "filename"];
/// Column names accepted for the caption, first match wins.
const CAPTION_COLUMNS: &[&str] = &["caption", "text", "description", "title"];

/// One image–caption pair to import.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Absolute path of the image; also the resume key stored as the item's uri.
    pub image: PathBuf,
    /// `None` when the image has no caption (it is then searchable by image only).
    pub caption: Option<String>,
    /// Other columns of a JSONL/CSV record, as a JSON object; empty when there are none.
    pub metadata: Vec<u8>,
}

impl Entry {
    /// The key under which import remembers this entry.
    pub fn key(&self) -> String {
        self.image.to_string_lossy().into_owned()
    }
}

/// Reads every entry of `source`: a folder, a `.jsonl`/`.ndjson` file or a `.csv` file.
pub fn read_source(source: &Path) -> Result<Vec<Entry>, CliError> {
    let meta = fs::metadata(source).map_err(|e| {
        CliError::usage(format!(
            "cannot read import source {}: {e}",
            source.display()
        ))
        .hint("give a folder of images with .txt captions, or a .jsonl / .csv file")
    })?;
    if meta.is_dir() {
        return read_folder(source);
    }
    let ext = extension(source);
    let text = fs::read_to_string(source)
        .map_err(|e| CliError::other(format!("cannot read {}: {e}", source.display())))?;
    let base = source.parent().unwrap_or(Path::new("."));
    match ext.as_str() {
        "jsonl" | "ndjson" => read_jsonl(&text, base, source),
        "csv" => read_csv(&text, base, source),
        _ => Err(CliError::usage(format!(
            "unsupported import source {}: expected a folder, .jsonl or .csv",
            source.display()
        ))
        .hint("name JSONL files *.jsonl and CSV files *.csv")),
    }
}

fn extension(path: &Path) -> String {
    path.extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase()
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Images in `dir` (not recursive), sorted by name; `name.txt` beside `name.png` is its caption.
fn read_folder(dir: &Path) -> Result<Vec<Entry>, CliError> {
    let listing = fs::read_dir(dir)
        .map_err(|e| CliError::other(format!("cannot list {}: {e}", dir.display())))?;
    let mut images = Vec::new();
    for item in listing {
        let path = item
            .map_err(|e| CliError::other(format!("cannot list {}: {e}", dir.display())))?
            .path();
        if path.is_file() && IMAGE_EXTENSIONS.contains(&extension(&path).as_str()) {
            images.push(path);
        }
    }
    images.sort();
    let mut entries = Vec::with_capacity(images.len());
    for image in images {
        let sidecar = image.with_extension("txt");
        let caption = match fs::read_to_string(&sidecar) {
            Ok(text) => non_empty(text.trim()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(CliError::other(format!(
                    "cannot read caption {}: {e}",
                    sidecar.display()
                )));
            }
        };
        entries.push(Entry {
            image: absolute(&image),
            caption,
            metadata: Vec::new(),
        });
    }
    Ok(entries)
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

fn pick<'a>(columns: &[&'a str], wanted: &[&str]) -> Option<&'a str> {
    wanted
        .iter()
        .find_map(|w| columns.iter().find(|c| c.eq_ignore_ascii_case(w)).copied())
}

fn format_error(source: &Path, line: usize, what: impl std::fmt::Display) -> CliError {
    CliError::invalid_input(format!("{}:{line}: {what}", source.display()))
}

fn missing_image_column(source: &Path, line: usize) -> CliError {
    format_error(source, line, "no image column").hint(format!(
        "name the image column one of: {}",
        IMAGE_COLUMNS.join(", ")
    ))
}

/// Builds an entry from one record's fields; extra fields become JSON metadata.
fn entry_from_fields(
    fields: BTreeMap<String, serde_json::Value>,
    base: &Path,
    source: &Path,
    line: usize,
) -> Result<Entry, CliError> {
    let names: Vec<&str> = fields.keys().map(String::as_str).collect();
    let image_col =
        pick(&names, IMAGE_COLUMNS).ok_or_else(|| missing_image_column(source, line))?;
    let caption_col = pick(&names, CAPTION_COLUMNS);
    let (image_col, caption_col) = (image_col.to_string(), caption_col.map(str::to_string));
    let mut fields = fields;
    let image = match fields.remove(&image_col) {
        Some(serde_json::Value::String(s)) if !s.is_empty() => s,
        _ => return Err(format_error(source, line, "the image field is not a path")),
    };
    let caption = match caption_col.and_then(|c| fields.remove(&c)) {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => non_empty(s.trim()),
        Some(_) => return Err(format_error(source, line, "the caption field is not text")),
    };
    let image = Path::new(&image);
    let image = if image.is_absolute() {
        image.to_path_buf()
    } else {
        base.join(image)
    };
    let metadata = if fields.is_empty() {
        Vec::new()
    } else {
        serde_json::to_vec(&fields).expect("a map of JSON values serialises")
    };
    Ok(Entry {
        image: absolute(&image),
        caption,
        metadata,
    })
}

/// One JSON object per line; blank lines are skipped. Relative image paths are relative to the
/// JSONL file's folder.
fn read_jsonl(text: &str, base: &Path, source: &Path) -> Result<Vec<Entry>, CliError> {
    let mut entries = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let fields: BTreeMap<String, serde_json::Value> = serde_json::from_str(line)
            .map_err(|e| format_error(source, index + 1, format!("not a JSON object: {e}")))?;
        entries.push(entry_from_fields(fields, base, source, index + 1)?);
    }
    Ok(entries)
}

/// A CSV file with a header row. Relative image paths are relative to the CSV file's folder.
fn read_csv(text: &str, base: &Path, source: &Path) -> Result<Vec<Entry>, CliError> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(false)
        .from_reader(text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| format_error(source, 1, e))?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    let mut entries = Vec::new();
    for (index, record) in reader.records().enumerate() {
        let line = index + 2;
        let record = record.map_err(|e| format_error(source, line, e))?;
        let fields = header
            .iter()
            .zip(record.iter())
            .map(|(h, v)| (h.clone(), serde_json::Value::String(v.to_string())))
            .collect();
        entries.push(entry_from_fields(fields, base, source, line)?);
    }
    if entries.is_empty()
        && pick(
            &header.iter().map(String::as_str).collect::<Vec<_>>(),
            IMAGE_COLUMNS,
        )
        .is_none()
    {
        return Err(missing_image_column(source, 1));
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_pairs_images_with_sidecar_captions_sorted() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("b.png"), b"x").unwrap();
        fs::write(dir.path().join("b.txt"), "  a dog \n").unwrap();
        fs::write(dir.path().join("a.JPG"), b"x").unwrap();
        fs::write(dir.path().join("notes.md"), b"x").unwrap();
        let entries = read_source(dir.path()).unwrap();
        assert_eq!(entries.len(), 2);
        assert!(entries[0].image.ends_with("a.JPG"));
        assert_eq!(entries[0].caption, None);
        assert!(entries[1].image.is_absolute());
        assert_eq!(entries[1].caption.as_deref(), Some("a dog"));
    }

    #[test]
    fn jsonl_resolves_relative_paths_and_keeps_extra_fields() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pairs.jsonl");
        fs::write(
            &file,
            "{\"image\": \"img/x.png\", \"caption\": \"a cat\", \"license\": \"CC0\"}\n\n\
             {\"path\": \"/abs/y.png\", \"text\": null}\n",
        )
        .unwrap();
        let entries = read_source(&file).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].image, dir.path().join("img/x.png"));
        assert_eq!(entries[0].caption.as_deref(), Some("a cat"));
        assert_eq!(entries[0].metadata, br#"{"license":"CC0"}"#);
        assert_eq!(entries[1].image, PathBuf::from("/abs/y.png"));
        assert_eq!(entries[1].caption, None);
    }

    #[test]
    fn jsonl_errors_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pairs.jsonl");
        fs::write(
            &file,
            "{\"image\": \"a.png\"}\n{\"caption\": \"no image\"}\n",
        )
        .unwrap();
        let err = read_source(&file).unwrap_err();
        assert!(err.to_string().contains(":2: no image column"), "{err}");
    }

    #[test]
    fn csv_with_quoted_captions() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pairs.csv");
        fs::write(&file, "Image,Caption\nx.png,\"a cat, sitting\"\ny.png,\n").unwrap();
        let entries = read_source(&file).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].caption.as_deref(), Some("a cat, sitting"));
        assert_eq!(entries[1].caption, None);
        assert!(entries[1].metadata.is_empty());
    }

    #[test]
    fn unknown_file_type_is_a_usage_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pairs.parquet");
        fs::write(&file, "x").unwrap();
        let err = read_source(&file).unwrap_err();
        assert_eq!(err.exit_code(), crate::error::EXIT_USAGE);
    }
}
