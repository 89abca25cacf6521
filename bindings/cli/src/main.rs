//! The `hivlp` binary: everything is in the library ([`hivlp_cli::run`]).

use std::process::ExitCode;

fn main() -> ExitCode {
    ExitCode::from(hivlp_cli::run(std::env::args_os()))
}
