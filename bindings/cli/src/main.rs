//! The `hivlp` command line.

fn main() {}
