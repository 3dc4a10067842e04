//! Helpers shared by the integration tests.

use mailchaos::cli::{judge, EMBEDDED_FAST};
use sim::scenario::{self, Loaded};
use sim::seed::Seed;
use stack::{Defect, Defects};
use std::collections::BTreeSet;
use std::path::PathBuf;

/// A fast-suite scenario by its file stem, from the copy embedded in the binary.
pub fn fast(name: &str) -> Loaded {
    let wanted = format!("scenarios/fast/{name}.toml");
    let (path, text) = EMBEDDED_FAST.iter().find(|(path, _)| *path == wanted).unwrap_or_else(|| panic!("no fast scenario {name}"));
    Loaded { path: PathBuf::from(path), scenario: scenario::parse(path, text).expect("embedded scenarios are valid") }
}

/// The invariants violated in any of the seeds 1..=seeds of a scenario.
pub fn violated(name: &str, seeds: u64, defects: &[Defect]) -> BTreeSet<&'static str> {
    let loaded = fast(name);
    let defects = Defects::of(defects);
    (1..=seeds).flat_map(|seed| judge(&loaded, Seed(seed), &defects).violations).map(|violation| violation.invariant).collect()
}

pub fn set(names: &[&'static str]) -> BTreeSet<&'static str> {
    names.iter().copied().collect()
}

/// What a run of the binary printed, and how it ended.
pub struct Ran {
    /// `None` when a signal ended it.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the `mailchaos` binary from the repository's root, killing it past `limit`: an input
/// that hangs the program (a named pipe read forever) is then an error, not a stuck test.
pub fn mailchaos_within(args: &[&str], limit: std::time::Duration) -> Result<Ran, String> {
    mailchaos_with_env(args, &[], limit)
}

/// The variables a batch engine sets that choose a shard of `run`: removed, so that a test run
/// inside a Slurm array or an Indexed Job runs what it asks for, then set as the test says.
pub const SHARD_VARIABLES: &[&str] = &["JOB_COMPLETION_INDEX", "SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_COUNT"];

/// `mailchaos_within` with these environment variables set.
pub fn mailchaos_with_env(args: &[&str], env: &[(&str, &str)], limit: std::time::Duration) -> Result<Ran, String> {
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().map_err(|error| error.to_string())?;
    let (out, err) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let file = |path: &std::path::Path| std::fs::File::create(path).map_err(|error| error.to_string());
    let mut command = Command::new(env!("CARGO_BIN_EXE_mailchaos"));
    for variable in SHARD_VARIABLES {
        command.env_remove(variable);
    }
    let mut child = command
        .envs(env.iter().copied())
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .stdin(Stdio::null())
        .stdout(file(&out)?)
        .stderr(file(&err)?)
        .spawn()
        .map_err(|error| error.to_string())?;
    // Wall time bounds the test, never a simulation.
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|error| error.to_string())? {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("mailchaos {args:?} still ran after {limit:?}"));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let read = |path: &std::path::Path| String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned();
    Ok(Ran { code: status.code(), stdout: read(&out), stderr: read(&err) })
}

/// Asserts that the defect makes exactly these invariants fire somewhere in the seeds, and that
/// the same scenario and seeds are clean without it.
pub fn caught_exactly(scenario: &str, seeds: u64, defect: Defect, expected: &[&'static str]) {
    assert_eq!(violated(scenario, seeds, &[]), set(&[]), "clean stack on {scenario}");
    assert_eq!(violated(scenario, seeds, &[defect]), set(expected), "{} on {scenario}", defect.name());
}

/// A port offset whose SMTP, LMTP, POP3 and IMAP ports are free right now (`serve` announces its ports
/// even when a bind failed, so look first): one of 10,000..60,000, the first tried drawn from `seed`.
pub fn free_offset(seed: u32) -> u16 {
    (0..200u32)
        .map(|step| (10_000 + (seed + step * 211) % 50_000) as u16)
        .find(|offset| [25, 24, 110, 143].iter().all(|port| std::net::TcpListener::bind(("127.0.0.1", offset + port)).is_ok()))
        .expect("a free port offset")
}

/// Runs the mailchaos binary to its end: its exit code and its stdout and stderr together.
pub fn mailchaos_output(args: &[&str]) -> (i32, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_mailchaos")).args(args).output().expect("mailchaos runs");
    (output.status.code().unwrap_or(-1), format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr)))
}
