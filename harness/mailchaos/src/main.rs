//! `mailchaos`: the command line. Everything lives in the library (`mailchaos::cli`).

use std::process::ExitCode;

/// mimalloc instead of the system's malloc: a run makes millions of small allocations that live
/// briefly (wire lines, reply strings) or to the end (the history's strings), and glibc's
/// malloc spent about a fifth of a run's CPU on them (perf: `_int_malloc`, `malloc_consolidate`,
/// `unlink_chunk`, `_int_free`). Where memory comes from never reaches a history: the same
/// seed gives the same digest under either allocator (the digests test).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
