//! Databases written before coarse rows were packed (every row padded to 64 bytes) still open
//! and search correctly. The fixtures under `tests/fixtures/` were written by that code: 24
//! items (fine 32-d `f32`, coarse 16-d `i8` or `f16`) in one segment, and for each item's own
//! vectors as the query, the ids of its top 3 hits with 3 candidates (so the coarse scan
//! alone picks which rows are re-ranked).

use std::path::Path;

use hivlp::synthetic::Clustered;
use hivlp::{Database, Embedding, Item, Options, Query, SearchParams};

const ITEMS: u64 = 24;

/// Copies a fixture into a temporary directory (opening a database may write to it).
fn open_copy(name: &str, tmp: &Path) -> Database {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let dir = tmp.join(name);
    std::fs::create_dir(&dir).unwrap();
    for entry in std::fs::read_dir(&fixture).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    Database::open(&dir, Options::default()).expect("open fixture")
}

fn expected_hits(name: &str) -> Vec<Vec<u64>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("{name}.expected"));
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| l.split(' ').map(|id| id.parse().unwrap()).collect())
        .collect()
}

fn pairs() -> Vec<hivlp::synthetic::Pair> {
    Clustered::new(32, 16, 50, 1.0, 11).pairs(0, 0..ITEMS)
}

fn hits(db: &Database) -> Vec<Vec<u64>> {
    let params = SearchParams {
        k: 3,
        candidates: Some(3),
        ..SearchParams::default()
    };
    pairs()
        .into_iter()
        .map(|p| {
            let query = Query {
                fine: p.fine,
                coarse: Some(p.coarse),
            };
            let hits = db.search(&query, &params).unwrap();
            hits.iter().map(|h| h.id).collect()
        })
        .collect()
}

#[test]
fn padded_fixtures_search_as_written() {
    let tmp = tempfile::tempdir().unwrap();
    for name in ["padded_rows_i8", "padded_rows_f16"] {
        let db = open_copy(name, tmp.path());
        assert_eq!(db.len().unwrap(), ITEMS as usize, "{name}");
        assert_eq!(hits(&db), expected_hits(name), "{name}");
        let path = db.path().to_path_buf();
        db.close().unwrap();
        let report = hivlp::verify(&path).expect("verify");
        assert_eq!(report.segment_rows, ITEMS, "{name}");
    }
}

/// Bytes of the one coarse image vector file in `dir`.
fn coarse_file_len(dir: &Path) -> u64 {
    let files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".image.coarse"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    std::fs::metadata(&files[0]).unwrap().len()
}

#[test]
fn compaction_rewrites_padded_rows_packed() {
    let tmp = tempfile::tempdir().unwrap();
    for name in ["padded_rows_i8", "padded_rows_f16"] {
        let db = open_copy(name, tmp.path());
        let padded_len = coarse_file_len(db.path());
        // A second segment, so compaction merges both into one new segment; its row is
        // deleted afterwards so the searches see only the fixture's rows.
        let extra = pairs().swap_remove(0);
        let item = Item {
            id: Some(1000),
            image: Some(Embedding {
                fine: extra.fine,
                coarse: Some(extra.coarse),
            }),
            ..Item::default()
        };
        db.insert(vec![item]).unwrap();
        db.flush().unwrap();
        db.compact().unwrap();
        db.delete(&[1000]).unwrap();
        let packed_len = coarse_file_len(db.path());
        assert!(
            packed_len < padded_len,
            "{name}: {packed_len} vs {padded_len}"
        );
        assert_eq!(hits(&db), expected_hits(name), "{name}");
    }
}
