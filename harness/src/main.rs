//! `mailchaos`: the command line. Everything lives in the library (`harness::cli`).

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    match harness::cli::Cli::try_parse() {
        Ok(cli) => harness::cli::main_with(cli),
        Err(error) => {
            let code = if error.use_stderr() { 2 } else { 0 };
            let _ = error.print();
            ExitCode::from(code)
        }
    }
}
