//! The wheel's `hivlp` console command (`hivlp/_cli.py`): the Rust command line itself.

use pyo3::prelude::*;

/// Runs the `hivlp` command line on `argv` (program name first) and returns its exit code.
/// The GIL is released: the command may run for minutes (import) and never calls back.
#[pyfunction]
pub fn _cli_main(py: Python<'_>, argv: Vec<String>) -> u8 {
    py.detach(|| hivlp_cli::run(argv))
}
