//! Shared code of hivlp's benchmarks.
