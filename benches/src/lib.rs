//! Shared code of hivlp's benchmarks.

pub mod search;
