//! `mailchaos`: the command line. Everything lives in the library (`mailchaos::cli`).

use std::process::ExitCode;

fn main() -> ExitCode {
    match mailchaos::cli::parse() {
        Ok(cli) => mailchaos::cli::main_with(cli),
        Err(error) => {
            let code = if error.use_stderr() { 2 } else { 0 };
            let _ = error.print();
            ExitCode::from(code)
        }
    }
}
