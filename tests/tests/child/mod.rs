//! Runs the `storage-child` binary (`tests/src/bin/storage-child.rs`), the other process of the
//! multi-process tests.

use std::process::Command;

/// `storage-child` with `args`, not yet started.
pub fn child(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_storage-child"));
    c.args(args);
    c
}

/// Runs `storage-child` to the end and returns what it printed; panics if it failed.
pub fn child_says(args: &[&str]) -> String {
    let out = child(args).output().expect("run storage-child");
    assert!(
        out.status.success(),
        "storage-child {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}
