//! Property: whatever is done to a shipped scenario or profile (a key deleted, duplicated or
//! retyped, a number made extreme or zero, the file truncated, random bytes inserted), mailchaos
//! answers with exit 2 and a `file:line:col` location, or runs it cleanly (any verdict): never
//! a panic, never a run past a time bound.
//!
//! In-process, each case applies one mutation to every shipped file and loads the mutants with
//! the reader, parser and validation the CLI uses; the binary runs one mutant per case. Both
//! are deterministic (a fixed seed) and write nothing into the repository.
//! `MAILCHAOS_MUTATION_CASES` sets each test's case count (default 48).

use crate::support::mailchaos_within;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A mutated run that lasts longer than this is a hang.
const TIME_BOUND: Duration = Duration::from_secs(60);

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every shipped input: (is a profile, repository path, text).
fn shipped() -> Vec<(bool, String, String)> {
    let mut files = Vec::new();
    let mut add = |profile: bool, dir: PathBuf| {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|entry| entry.unwrap().path()).filter(|path| path.extension().is_some_and(|ext| ext == "toml")).collect();
        paths.sort();
        for path in paths {
            let relative = path.strip_prefix(root()).unwrap().display().to_string();
            files.push((profile, relative, std::fs::read_to_string(&path).unwrap()));
        }
    };
    let mut suites: Vec<PathBuf> = std::fs::read_dir(root().join("scenarios")).unwrap().map(|entry| entry.unwrap().path()).collect();
    suites.sort();
    for suite in suites {
        add(false, suite);
    }
    add(true, root().join("fixtures/profiles"));
    files
}

/// What is done to the file; the numbers pick the line, the value and the offset.
#[derive(Clone, Debug)]
enum Mutation {
    DeleteKey(usize),
    DuplicateKey(usize),
    Retype(usize, usize),
    Extreme(usize, usize),
    Truncate(usize),
    RandomBytes(usize, Vec<u8>),
}

const RETYPED: &[&str] = &["\"text\"", "true", "1.5", "[]", "{}", "2023-01-23", "[1, \"a\"]", "[[1, 2]]", "{ a = 1 }", "\"\""];
const EXTREME: &[&str] = &["0", "1", "-1", "9223372036854775807", "-9223372036854775808", "2305843009213693952", "4294967296", "18446744073709551615", "1e308", "nan", "-inf", "[0, 9223372036854775807]", "[9223372036854775807, 0]"];

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<usize>().prop_map(Mutation::DeleteKey),
        any::<usize>().prop_map(Mutation::DuplicateKey),
        (any::<usize>(), 0..RETYPED.len()).prop_map(|(line, value)| Mutation::Retype(line, value)),
        (any::<usize>(), 0..EXTREME.len()).prop_map(|(line, value)| Mutation::Extreme(line, value)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..16)).prop_map(|(at, bytes)| Mutation::RandomBytes(at, bytes)),
    ]
}

/// The lines of `text` that set a key (`name = value`).
fn key_lines(lines: &[&str]) -> Vec<usize> {
    let is_key = |line: &str| line.split_once('=').is_some_and(|(key, _)| !key.trim().is_empty() && key.trim().bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
    (0..lines.len()).filter(|&index| is_key(lines[index])).collect()
}

fn with_value(line: &str, value: &str) -> String {
    let (key, _) = line.split_once('=').unwrap_or((line, ""));
    format!("{key}= {value}")
}

fn apply(text: &str, mutation: &Mutation) -> Vec<u8> {
    let lines: Vec<&str> = text.lines().collect();
    let keys = key_lines(&lines);
    let edit = |pick: usize, change: &dyn Fn(&str) -> Vec<String>| {
        let target = keys[pick % keys.len()];
        let out: Vec<String> = lines.iter().enumerate().flat_map(|(index, line)| if index == target { change(line) } else { vec![line.to_string()] }).collect();
        (out.join("\n") + "\n").into_bytes()
    };
    match mutation {
        Mutation::DeleteKey(pick) => edit(*pick, &|_| Vec::new()),
        Mutation::DuplicateKey(pick) => edit(*pick, &|line| vec![line.to_string(), line.to_string()]),
        Mutation::Retype(pick, value) => edit(*pick, &|line| vec![with_value(line, RETYPED[*value])]),
        Mutation::Extreme(pick, value) => edit(*pick, &|line| vec![with_value(line, EXTREME[*value])]),
        Mutation::Truncate(at) => text.as_bytes()[..at % (text.len() + 1)].to_vec(),
        Mutation::RandomBytes(at, bytes) => {
            let at = at % (text.len() + 1);
            [&text.as_bytes()[..at], bytes, &text.as_bytes()[at..]].concat()
        }
    }
}

/// A mutant on disk. A profile is renamed first: a file may not take a shipped profile's name
/// unless it is that profile, and the mutant should be judged on its own merits.
fn write_mutant(dir: &Path, profile: bool, path: &str, text: &str, mutation: &Mutation) -> PathBuf {
    let file_name = Path::new(path).file_name().unwrap();
    let text = if profile { text.replacen("name = \"", "name = \"mutant-", 1) } else { text.to_string() };
    let target = dir.join(file_name);
    std::fs::write(&target, apply(&text, mutation)).unwrap();
    target
}

/// Whether `message` begins `file:line:col: ` for this file.
fn located(message: &str, file: &str) -> bool {
    let Some(rest) = message.strip_prefix(file).and_then(|rest| rest.strip_prefix(':')) else { return false };
    let mut parts = rest.splitn(3, ':');
    let number = |part: Option<&str>| part.is_some_and(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()));
    number(parts.next()) && number(parts.next()) && parts.next().is_some_and(|tail| tail.starts_with(' '))
}

/// A valid scenario whose runs are short enough for a test (the outage and surge suites are
/// not): few simulated steps and few messages. Larger valid mutants are judged in-process only.
fn cheap(scenario: &sim::scenario::Scenario) -> bool {
    let steps = scenario.horizon_s.get_ref() * 1000 / scenario.tick_ms.get_ref();
    let messages = u64::from(*scenario.workload.messages.get_ref()) * scenario.providers.len() as u64;
    steps <= 20_000 && messages <= 400
}

fn config(cases: u32) -> Config {
    Config { cases, failure_persistence: None, rng_seed: RngSeed::Fixed(14), max_shrink_iters: 256, ..Config::default() }
}

fn binary_cases() -> u32 {
    std::env::var("MAILCHAOS_MUTATION_CASES").ok().and_then(|cases| cases.parse().ok()).unwrap_or(48)
}

fn fail(message: String) -> Result<(), TestCaseError> {
    Err(TestCaseError::fail(message))
}

/// Loads a mutant as the CLI does; `Ok(Some(cheap))` when it is valid.
fn load(profile: bool, path: &Path) -> Result<bool, String> {
    match profile {
        true => devices::profile::load(path).map(|_| true).map_err(|error| error.to_string()),
        false => sim::scenario::load(path).map(|loaded| cheap(&loaded.scenario)).map_err(|error| error.to_string()),
    }
}

/// Each case applies one mutation to every shipped file, so every file is mutated every way.
#[test]
fn mutated_inputs_load_to_a_located_error_or_a_valid_model() {
    let files = shipped();
    let seen = Outcomes::default();
    let mut runner = TestRunner::new(config(binary_cases()));
    let result = runner.run(&mutation(), |mutation| {
        let dir = tempfile::tempdir().unwrap();
        for (profile, path, text) in &files {
            load_one_mutant(dir.path(), *profile, path, text, &mutation, &seen)?;
        }
        Ok(())
    });
    result.unwrap_or_else(|error| panic!("{error}"));
    seen.assert_both();
}

fn load_one_mutant(dir: &Path, profile: bool, path: &str, text: &str, mutation: &Mutation, seen: &Outcomes) -> Result<(), TestCaseError> {
    let mutant = write_mutant(dir, profile, path, text, mutation);
    let file = mutant.display().to_string();
    let loaded = load(profile, &mutant);
    seen.count(loaded.is_ok());
    match loaded {
        Err(message) if !located(&message, &file) => fail(format!("{path} {mutation:?}: not located: {}", input::clip(&message))),
        Ok(true) if !profile => {
            // A valid cheap mutant is also planned: the planner must end on whatever passes.
            let loaded = sim::scenario::load(&mutant).unwrap();
            sim::world::plan::make(&loaded.scenario, sim::seed::Seed(1));
            Ok(())
        }
        _ => Ok(()),
    }
}

#[test]
fn the_binary_answers_a_mutant_with_a_location_or_a_run_within_the_time_bound() {
    let files = shipped();
    let seen = Outcomes::default();
    let mut runner = TestRunner::new(config(binary_cases()));
    let result = runner.run(&(0..files.len(), mutation()), |(index, mutation)| {
        let (profile, path, text) = &files[index];
        let dir = tempfile::tempdir().unwrap();
        let mutant = write_mutant(dir.path(), *profile, path, text, &mutation);
        let file = mutant.display().to_string();
        // An expensive valid scenario (an outage, a surge) is the in-process test's to judge.
        if load(*profile, &mutant) == Ok(false) {
            return Ok(());
        }
        let args: Vec<&str> = match profile {
            true => vec!["run", "scenarios/fast/baseline.toml", "--seed", "1", "--profile", &file],
            false => vec!["run", &file, "--seed", "1"],
        };
        let ran = match mailchaos_within(&args, TIME_BOUND) {
            Ok(ran) => ran,
            Err(error) => return fail(format!("{path} {mutation:?}: {error}")),
        };
        let error = ran.stderr.strip_prefix("mailchaos: ").unwrap_or(&ran.stderr);
        seen.count(ran.code != Some(2));
        match ran.code {
            _ if ran.stderr.contains("panicked") => fail(format!("{path} {mutation:?}: panicked: {}", input::clip(&ran.stderr))),
            Some(0 | 1) => Ok(()),
            Some(2) if located(error, &file) => Ok(()),
            code => fail(format!("{path} {mutation:?}: exit {code:?}: {}", input::clip(&ran.stderr))),
        }
    });
    result.unwrap_or_else(|error| panic!("{error}"));
    seen.assert_both();
}

/// How many mutants were accepted and how many refused: a property that saw only one kind
/// tested less than it claims.
#[derive(Default)]
struct Outcomes {
    accepted: std::cell::Cell<u32>,
    refused: std::cell::Cell<u32>,
}

impl Outcomes {
    fn count(&self, accepted: bool) {
        let cell = if accepted { &self.accepted } else { &self.refused };
        cell.set(cell.get() + 1);
    }

    fn assert_both(&self) {
        let (accepted, refused) = (self.accepted.get(), self.refused.get());
        eprintln!("mutants: {accepted} accepted, {refused} refused");
        assert!(accepted > 0 && refused > 0, "accepted={accepted} refused={refused}");
    }
}
