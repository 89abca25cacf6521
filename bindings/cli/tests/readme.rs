//! Runs the README's command-line example (the fenced block tagged `sh example`) with the built
//! `hivlp` first on PATH, from a temporary folder where `data/demo` is reachable.

use std::path::Path;
use std::process::Command;

const HIVLP: &str = env!("CARGO_BIN_EXE_hivlp");

fn readme_block(tag: &str) -> String {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let readme = std::fs::read_to_string(repo.join("README.md")).expect("README.md");
    let fence = format!("```{tag}\n");
    let start = readme
        .find(&fence)
        .expect("the README has the tagged block")
        + fence.len();
    let len = readme[start..].find("```").expect("the block is closed");
    readme[start..start + len].to_string()
}

#[test]
fn readme_cli_example_runs() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let tmp = tempfile::tempdir().unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(repo.join("data"), tmp.path().join("data")).unwrap();
    let bin_dir = Path::new(HIVLP).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &readme_block("sh example")])
        .current_dir(tmp.path())
        .env("PATH", path)
        .output()
        .expect("bash runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(tmp.path().join("results.html").is_file());
    let hits: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("hits.json")).unwrap()).unwrap();
    assert!(
        hits["hits"][0]["uri"]
            .as_str()
            .unwrap()
            .ends_with("oc_a_boy_plays_soccer.png"),
        "an image query finds itself first: {hits}"
    );
    assert!(stdout.contains("items"), "{stdout}");
}
