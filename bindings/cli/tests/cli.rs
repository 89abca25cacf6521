//! Drives the built `hivlp` binary through a database's life in a temporary folder: create,
//! import (with a broken image among good ones), search --json / --html, delete, compact,
//! snapshot, verify, and the exit codes of usage errors, locks and corruption.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const HIVLP: &str = env!("CARGO_BIN_EXE_hivlp");

fn hivlp(args: &[&str]) -> Output {
    Command::new(HIVLP)
        .args(args)
        .output()
        .expect("the hivlp binary runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs and asserts success, returning stdout.
fn ok(args: &[&str]) -> String {
    let out = hivlp(args);
    assert!(
        out.status.success(),
        "hivlp {args:?} failed ({:?}):\n{}{}",
        out.status.code(),
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

fn s(p: &Path) -> &str {
    p.to_str().expect("temporary paths are UTF-8")
}

/// A solid-colour PNG with a caption file beside it.
fn write_pair(dir: &Path, name: &str, rgb: [u8; 3], caption: &str) -> PathBuf {
    let path = dir.join(format!("{name}.png"));
    image::RgbImage::from_pixel(48, 48, image::Rgb(rgb))
        .save(&path)
        .expect("PNG written");
    fs::write(dir.join(format!("{name}.txt")), caption).unwrap();
    path
}

fn source_folder(root: &Path) -> PathBuf {
    let dir = root.join("source");
    fs::create_dir(&dir).unwrap();
    write_pair(&dir, "red", [220, 20, 20], "a red square");
    write_pair(&dir, "green", [20, 200, 30], "a green square");
    write_pair(&dir, "blue", [20, 30, 220], "a blue square");
    write_pair(&dir, "black", [5, 5, 5], "a black square");
    // Looks like a PNG by name, but is not one.
    fs::write(
        dir.join("broken.png"),
        b"\x89PNG\r\n\x1a\n truncated garbage",
    )
    .unwrap();
    fs::write(dir.join("broken.txt"), "a broken image").unwrap();
    dir
}

fn largest_file(dir: &Path) -> PathBuf {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for entry in fs::read_dir(d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
        .into_iter()
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .expect("a database has files")
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}):\n{text}"))
}

#[test]
fn create_import_search_compact_snapshot_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("db.hivlp");
    let source = source_folder(tmp.path());

    let created = ok(&["create", s(&db)]);
    assert!(created.contains("created"), "{created}");

    // Import: the broken image is reported, the other four are imported.
    let out = hivlp(&["import", s(&db), s(&source)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("broken.png"), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("imported 4 pairs"),
        "{}",
        stdout(&out)
    );
    assert!(stdout(&out).contains("1 failed"), "{}", stdout(&out));

    // Re-running skips what is there and retries only the broken one.
    let again = hivlp(&["import", s(&db), s(&source)]);
    assert!(
        stdout(&again).contains("imported 0 pairs"),
        "{}",
        stdout(&again)
    );
    assert!(stdout(&again).contains("skipped 4"), "{}", stdout(&again));

    // Search by text, as JSON.
    let found = json(&ok(&[
        "search",
        s(&db),
        "--text",
        "a red square",
        "-k",
        "3",
        "--json",
    ]));
    let hits = found["hits"].as_array().unwrap();
    assert_eq!(hits.len(), 3);
    for (rank, hit) in hits.iter().enumerate() {
        assert_eq!(hit["rank"], rank + 1);
        assert!(hit["id"].is_u64());
        assert!(hit["score"].is_f64());
        assert!(hit["uri"].as_str().unwrap().ends_with(".png"));
    }
    assert!(hits[0]["score"].as_f64() >= hits[2]["score"].as_f64());
    assert!(found["timing_ms"]["coarse"].is_f64());
    // A handful of rows: every one is a candidate, so the estimate is certain.
    assert_eq!(found["estimated_recall"], 1.0);
    assert!(found["candidates"].is_u64());

    // Search by image: the image itself comes first; the page embeds thumbnails.
    let page = tmp.path().join("results.html");
    let red = source.join("red.png");
    let by_image = json(&ok(&[
        "search",
        s(&db),
        "--image",
        s(&red),
        "--json",
        "--html",
        s(&page),
        "--candidates",
        "10",
    ]));
    let top = &by_image["hits"][0];
    assert!(
        top["uri"].as_str().unwrap().ends_with("red.png"),
        "{by_image}"
    );
    assert_eq!(top["caption"], "a red square");
    let html = fs::read_to_string(&page).unwrap();
    assert!(html.contains("data:image/png;base64,"));
    assert!(html.contains("a red square"));

    // Caption search and the table output.
    let table = ok(&[
        "search",
        s(&db),
        "--text",
        "a blue square",
        "--target",
        "text",
    ]);
    assert!(table.contains("a blue square"), "{table}");
    assert!(table.contains("coarse scan"), "{table}");

    let stats = ok(&["stats", s(&db)]);
    assert!(stats.contains("4 items"), "{stats}");
    // `--json` shows the engine's fields under the engine's names (the Python keys too).
    let stats = json(&ok(&["stats", s(&db), "--json"]));
    assert_eq!(stats["items"], 4);
    assert_eq!(stats["coarse_dtype"], "i8");
    for key in ["dropped_wal_tail", "model", "next_id", "image_coarse"] {
        assert!(stats.get(key).is_some(), "{key} missing from {stats}");
    }

    // Delete the top hit, compact, and it is gone.
    let id = top["id"].as_u64().unwrap().to_string();
    assert!(ok(&["delete", s(&db), &id]).contains("deleted 1"));
    ok(&["compact", s(&db)]);
    let after = json(&ok(&["search", s(&db), "--image", s(&red), "--json"]));
    assert_eq!(after["hits"].as_array().unwrap().len(), 3);
    assert_ne!(after["hits"][0]["id"].as_u64().unwrap().to_string(), id);

    // Snapshot, then verify both.
    let snap = tmp.path().join("snap.hivlp");
    ok(&["snapshot", s(&db), s(&snap)]);
    ok(&["verify", s(&db)]);
    let report = json(&ok(&["verify", s(&snap), "--json"]));
    assert_eq!(report["ok"], true);
    assert!(ok(&["stats", s(&snap)]).contains("3 items"));
}

#[test]
fn import_from_jsonl_and_csv_keeps_extra_columns() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("db.hivlp");
    let img = tmp.path().join("img");
    fs::create_dir(&img).unwrap();
    write_pair(&img, "a", [200, 200, 0], "a yellow square");
    write_pair(&img, "b", [0, 200, 200], "a cyan square");
    let jsonl = tmp.path().join("pairs.jsonl");
    fs::write(
        &jsonl,
        "{\"image\": \"img/a.png\", \"caption\": \"a yellow square\", \"license\": \"CC0\"}\n",
    )
    .unwrap();
    let csv = tmp.path().join("pairs.csv");
    fs::write(&csv, "image,caption\nimg/b.png,\"a cyan square, flat\"\n").unwrap();

    ok(&["create", s(&db), "--coarse-dtype", "f16"]);
    assert!(ok(&["import", s(&db), s(&jsonl)]).contains("imported 1 pairs"));
    assert!(ok(&["import", s(&db), s(&csv)]).contains("imported 1 pairs"));
    let found = json(&ok(&[
        "search",
        s(&db),
        "--image",
        s(&img.join("a.png")),
        "--json",
    ]));
    assert_eq!(found["hits"][0]["metadata"]["license"], "CC0");
    assert_eq!(found["hits"][1]["caption"], "a cyan square, flat");
}

#[test]
fn usage_errors_exit_2_with_a_hint() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nothing-here");

    let out = hivlp(&["search", s(&missing), "--text", "x"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.starts_with("error: no database at"), "{err}");
    assert!(err.contains("hint: create one with"), "{err}");
    assert_eq!(
        err.lines().count(),
        2,
        "one line of error, one of hint: {err}"
    );

    // clap's own usage errors.
    assert_eq!(hivlp(&["frobnicate"]).status.code(), Some(2));
    assert_eq!(hivlp(&["search", s(&missing)]).status.code(), Some(2));
    assert_eq!(
        hivlp(&["search", s(&missing), "--text", "a", "--weights", "one"])
            .status
            .code(),
        Some(2)
    );

    let out = hivlp(&["create", s(&missing), "--model", "none"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--fine-dim"));
}

#[test]
fn vectors_only_database_and_model_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("vec.hivlp");
    ok(&[
        "create",
        s(&db),
        "--model",
        "none",
        "--fine-dim",
        "16",
        "--coarse-dim",
        "4",
    ]);
    assert!(ok(&["stats", s(&db)]).contains("0 items"));
    // Creating over an existing database fails.
    assert_ne!(hivlp(&["create", s(&db)]).status.code(), Some(0));
    // A bundle folder that does not exist is a model error.
    let out = hivlp(&[
        "search",
        s(&db),
        "--text",
        "x",
        "--model",
        s(&tmp.path().join("no-bundle")),
    ]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
}

#[test]
fn locked_database_exits_4() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("db.hivlp");
    ok(&[
        "create",
        s(&db),
        "--model",
        "none",
        "--fine-dim",
        "8",
        "--coarse-dim",
        "4",
    ]);
    let options = hivlp::Options {
        model: hivlp::ModelChoice::None,
        ..hivlp::Options::default()
    };
    let holder = hivlp::Database::open(&db, options).expect("opened for writing");
    let out = hivlp(&["delete", s(&db), "1"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("hint:"));
    drop(holder);
    assert!(ok(&["delete", s(&db), "1"]).contains("deleted 0"));
}

#[test]
fn corrupted_database_exits_3() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("db.hivlp");
    let source = source_folder(tmp.path());
    ok(&["create", s(&db)]);
    ok(&["import", s(&db), s(&source)]);
    // Flip bytes in the middle of the largest file.
    let victim = largest_file(&db);
    let mut bytes = fs::read(&victim).unwrap();
    let middle = bytes.len() / 2;
    for b in &mut bytes[middle..middle + 8] {
        *b ^= 0xFF;
    }
    fs::write(&victim, bytes).unwrap();
    let out = hivlp(&["verify", s(&db)]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(stderr(&out).contains("hint:"));
}

#[test]
fn search_where_filters_on_metadata_and_points_at_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("db.hivlp");
    let img = tmp.path().join("img");
    fs::create_dir(&img).unwrap();
    write_pair(&img, "a", [200, 20, 20], "a red square");
    write_pair(&img, "b", [210, 30, 30], "a dark red square");
    let jsonl = tmp.path().join("pairs.jsonl");
    fs::write(
        &jsonl,
        "{\"image\": \"img/a.png\", \"caption\": \"a red square\", \"year\": 2019}\n\
         {\"image\": \"img/b.png\", \"caption\": \"a dark red square\", \"year\": 2021}\n",
    )
    .unwrap();
    ok(&["create", s(&db)]);
    assert!(ok(&["import", s(&db), s(&jsonl)]).contains("imported 2 pairs"));
    let found = json(&ok(&[
        "search",
        s(&db),
        "--text",
        "a red square",
        "--where",
        "year >= 2020",
        "--json",
    ]));
    let hits = found["hits"].as_array().unwrap();
    assert_eq!(hits.len(), 1, "{found}");
    assert_eq!(hits[0]["metadata"]["year"], 2021);
    assert!(found["timing_ms"]["filter"].is_f64());

    let bad = hivlp(&["search", s(&db), "--text", "x", "--where", "year >= AND"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        stderr(&bad).contains("syntax error at 8: expected a value after '>='"),
        "{}",
        stderr(&bad)
    );
    let unknown = hivlp(&["search", s(&db), "--text", "x", "--where", "yeer = 1"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(
        stderr(&unknown).contains("unknown field yeer at 0"),
        "{}",
        stderr(&unknown)
    );
    let help = ok(&["search", "--help"]);
    assert!(
        help.contains("--where \"year >= 2020 AND 'beach' IN tags\""),
        "{help}"
    );
}

#[test]
fn update_replaces_metadata_and_caption() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("db.hivlp");
    ok(&[
        "create",
        s(&db),
        "--model",
        "none",
        "--fine-dim",
        "8",
        "--coarse-dim",
        "4",
    ]);
    let options = || hivlp::Options {
        model: hivlp::ModelChoice::None,
        ..hivlp::Options::default()
    };
    let writer = hivlp::Database::open(&db, options()).unwrap();
    let item = hivlp::Item {
        id: Some(7),
        caption: Some("old".into()),
        image: Some(hivlp::Embedding {
            fine: vec![1.0; 8],
            coarse: None,
        }),
        ..hivlp::Item::default()
    };
    writer.insert(vec![item]).unwrap();
    writer.close().unwrap();
    let out = ok(&[
        "update",
        s(&db),
        "7",
        "--metadata",
        r#"{"year": 2021}"#,
        "--caption",
        "new",
    ]);
    assert!(out.contains("updated 7"), "{out}");
    let record = hivlp::Database::open(&db, options())
        .unwrap()
        .get(7)
        .unwrap()
        .unwrap();
    assert_eq!(record.caption.as_deref(), Some("new"));
    assert_eq!(record.metadata, br#"{"year": 2021}"#);
    ok(&["update", s(&db), "7", "--no-caption"]);
    let record = hivlp::Database::open(&db, options())
        .unwrap()
        .get(7)
        .unwrap()
        .unwrap();
    assert_eq!(record.caption, None);
    assert_eq!(record.metadata, br#"{"year": 2021}"#, "kept");
    // Bad JSON, a missing id and nothing to do are input errors (exit 2).
    for args in [
        vec!["update", s(&db), "7", "--metadata", "{year"],
        vec!["update", s(&db), "8", "--caption", "x"],
        vec!["update", s(&db), "7"],
    ] {
        let out = hivlp(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn search_composes_parts_drops_low_scores_and_collapses() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("db.hivlp");
    let source = source_folder(tmp.path());
    ok(&["create", s(&db)]);
    ok(&["import", s(&db), s(&source)]);
    let search = |extra: &[&str]| {
        let mut args = vec!["search", s(&db), "--target", "text", "--json"];
        args.extend_from_slice(extra);
        json(&ok(&args))
    };
    let ids = |found: &serde_json::Value| -> Vec<u64> {
        found["hits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["id"].as_u64().unwrap())
            .collect()
    };
    let plain = search(&["--text", "a red square"]);
    assert_eq!(plain["hits"][0]["caption"], "a red square");
    assert_eq!(ids(&plain).len(), 4);

    // A minus text changes the query (and the label says so); explicit weights equal to the
    // defaults give the same hits.
    let minus = search(&["--text", "a red square", "--minus-text", "red"]);
    assert_eq!(minus["query"], "a red square − red");
    assert_ne!(minus["hits"][0]["score"], plain["hits"][0]["score"]);
    let weighted = search(&[
        "--text",
        "a red square",
        "--minus-text",
        "red",
        "--weights",
        "1,-0.5",
    ]);
    assert_eq!(weighted["hits"], minus["hits"]);

    // Text and image together.
    let red = source.join("red.png");
    let both = search(&[
        "--text",
        "a square",
        "--image",
        s(&red),
        "--weights",
        "0.2,1",
    ]);
    assert_eq!(both["hits"][0]["caption"], "a red square");

    // min_score: nothing scores above 1.
    assert_eq!(
        ids(&search(&["--text", "a", "--min-score", "1.01"])).len(),
        0
    );
    let top = plain["hits"][1]["score"].as_f64().unwrap() as f32;
    let min = top.to_string();
    assert_eq!(
        ids(&search(&["--text", "a red square", "--min-score", &min])).len(),
        2
    );
    // collapse at -1: every hit is a near-duplicate of the first.
    assert_eq!(
        ids(&search(&["--text", "a red square", "--collapse", "-1"])),
        ids(&plain)[..1]
    );

    let out = hivlp(&["search", s(&db), "--text", "a", "--weights", "1,2"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--weights has 2 values"),
        "{}",
        stderr(&out)
    );
    let out = hivlp(&["search", s(&db), "--text", "a", "--collapse", "2"]);
    assert_eq!(out.status.code(), Some(2));
}
