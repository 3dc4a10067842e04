//! The test command of `cargo xtask mutants`: a short swarm sweep, then the fast suite over a
//! few seeds, both run by the `mailchaos` binary that cargo built with the mutated `stack`.
//!
//! cargo-mutants can only run `cargo test` or `cargo nextest`, never an arbitrary command, so the
//! sweep is this test. It is its own test target (not a module of `integration`): a mutant then
//! rebuilds only the binary and this small file, not the large integration binary. It is
//! `#[ignore]`d, so `cargo test` and `cargo xtask ci` list it as skipped; the xtask runs it with
//! `--ignored`. A mutant is caught when either run exits non-zero (a violation is 1, a bad
//! input 2, a panic 101) or the sweep hangs (cargo-mutants' own timeout).

use std::process::Command;

/// Runs the binary from the repository's root; panics, with its last lines, unless it exits 0.
fn passes(args: &[&str]) {
    let output = Command::new(env!("CARGO_BIN_EXE_mailchaos")).args(args).current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).output().expect("runs mailchaos");
    let stdout = String::from_utf8_lossy(&output.stdout);
    // The failing run lines and the summary say which invariant the mutant broke.
    let told: Vec<&str> = stdout.lines().filter(|line| line.contains("verdict=violation") || line.starts_with("summary:")).collect();
    assert!(output.status.success(), "mailchaos {args:?} exited {:?}\n{}\n{}", output.status.code(), told.join("\n"), String::from_utf8_lossy(&output.stderr));
}

#[test]
#[ignore = "the test command of `cargo xtask mutants`; run it with --ignored"]
fn a_short_swarm_sweep_and_the_fast_suite_pass() {
    passes(&["swarm", "--seeds", "40", "--profiles", "honest"]);
    passes(&["run", "scenarios/fast", "--seeds", "3"]);
}
