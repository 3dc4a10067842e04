//! `mailchaos shrink` and the shrunk scenarios of `scenarios/regressions/`: each shrunk file
//! names in its header the invariant, seed, defects and profile it was shrunk under; under
//! them it must still fail with that invariant, and the clean stack must pass it. The header
//! is read here, so adding a file to the corpus needs no code change.

use crate::support::{mailchaos_within, Ran};
use mailchaos::cli::judge_with;
use sim::scenario::{self, Loaded};
use sim::seed::Seed;
use sim::world::RunOptions;
use stack::{Defect, Defects};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What a shrunk file's header says it was shrunk under.
struct Header {
    invariant: String,
    seed: Seed,
    defects: Vec<Defect>,
    /// `None`: the scenario's own profile.
    profile: Option<String>,
}

/// The `# key: value` line of a header, if any.
fn field<'t>(text: &'t str, key: &str) -> Option<&'t str> {
    let prefix = format!("# {key}: ");
    text.lines().take_while(|line| line.starts_with('#') || line.is_empty()).find_map(|line| line.strip_prefix(prefix.as_str()))
}

/// The header of a shrunk file; `None` for the hand-written regressions (no `# invariant:`).
fn header(file: &Path, text: &str) -> Option<Header> {
    let invariant = field(text, "invariant")?.trim().to_string();
    let missing = |key: &str| panic!("{}: the header has `# invariant:` but no `# {key}:`", file.display());
    let seed = Seed::parse(field(text, "seed").unwrap_or_else(|| missing("seed")).trim()).unwrap_or_else(|error| panic!("{}: {error}", file.display()));
    let names = field(text, "defects").unwrap_or_else(|| missing("defects")).trim();
    let defects = names.split_whitespace().filter(|name| *name != "none").map(|name| Defect::parse(name).unwrap_or_else(|| panic!("{}: unknown defect {name}", file.display()))).collect();
    let profile = field(text, "profile").unwrap_or_else(|| missing("profile")).trim();
    let profile = (!profile.starts_with('(')).then(|| profile.to_string());
    Some(Header { invariant, seed, defects, profile })
}

fn options(profile: Option<&str>) -> RunOptions {
    let Some(name) = profile else { return RunOptions::default() };
    let profile = devices::profile::Profile::resolve_with_text(name).unwrap_or_else(|error| panic!("{error}")).0;
    RunOptions { profile: Some(std::rc::Rc::new(profile)), ..RunOptions::default() }
}

fn regressions() -> Vec<PathBuf> {
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios/regressions");
    scenario::files_of(&folder).expect("the regressions folder")
}

#[test]
fn every_shrunk_regression_fails_under_its_defect_with_its_invariant_and_passes_clean() {
    let mut defects_seen = BTreeSet::new();
    for file in regressions() {
        let text = std::fs::read_to_string(&file).unwrap();
        let Some(header) = header(&file, &text) else { continue };
        let loaded = Loaded { path: file.clone(), scenario: scenario::parse(&file.display().to_string(), &text).unwrap_or_else(|error| panic!("{error}")) };
        check_reduction(&file, &text, &loaded.scenario);
        let options = options(header.profile.as_deref());
        let failing = judge_with(&loaded, header.seed, &Defects::of(&header.defects), &options);
        let violated: BTreeSet<&str> = failing.violations.iter().map(|violation| violation.invariant).collect();
        assert!(violated.contains(header.invariant.as_str()), "{}: under {:?} seed {} expected {} among {violated:?}", file.display(), header.defects, header.seed, header.invariant);
        // Without a defect the failure is the profile's (a dishonest device): the clean stack is
        // then judged by regressions.rs on the default profile only.
        if header.defects.is_empty() {
            continue;
        }
        let clean = judge_with(&loaded, header.seed, &Defects::none(), &options);
        assert!(clean.violations.is_empty(), "{}: the clean stack fails it: {:?}", file.display(), &clean.violations[..clean.violations.len().min(3)]);
        defects_seen.extend(header.defects.iter().map(|defect| defect.name()));
    }
    // The corpus is issue #9's: at least five planted defects, each with a shrunk scenario.
    assert!(defects_seen.len() >= 5, "shrunk regressions cover only {defects_seen:?}");
}

/// The header's `reduction:` line says the file never grew, and says true of the file.
fn check_reduction(file: &Path, text: &str, scenario: &scenario::Scenario) {
    let line = field(text, "reduction").unwrap_or_else(|| panic!("{}: no `# reduction:` line", file.display()));
    let numbers: Vec<u64> = line.split([' ', ',']).filter_map(|word| word.parse().ok()).collect();
    let [faults_before, faults_after, messages_before, messages_after, ..] = numbers[..] else { panic!("{}: {line}", file.display()) };
    assert!(faults_after <= faults_before && messages_after <= messages_before, "{}: grew: {line}", file.display());
    let messages = u64::from(*scenario.workload.messages.get_ref()) * scenario.providers.len() as u64;
    assert_eq!((scenario.faults.len() as u64, messages), (faults_after, messages_after), "{}: the header's reduction is not the file's", file.display());
}

fn run(args: &[&str]) -> Ran {
    mailchaos_within(args, Duration::from_secs(120)).unwrap_or_else(|error| panic!("{error}"))
}

/// Faults and messages (per provider times providers) of a scenario file.
fn size(path: &Path) -> (usize, u64) {
    let scenario = scenario::load(path).unwrap_or_else(|error| panic!("{error}")).scenario;
    (scenario.faults.len(), u64::from(*scenario.workload.messages.get_ref()) * scenario.providers.len() as u64)
}

const SMALL_CASE: &[&str] = &["scenarios/storage/fsync-fail.toml", "--seed", "1", "--defect", "bounce-on-storage-error"];

fn shrink_to(output: &Path, extra: &[&str]) -> (Ran, String) {
    let mut args = vec!["shrink"];
    args.extend_from_slice(SMALL_CASE);
    args.extend_from_slice(&["-o", output.to_str().unwrap()]);
    args.extend_from_slice(extra);
    let ran = run(&args);
    assert_eq!(ran.code, Some(0), "{args:?}: {}{}", ran.stdout, ran.stderr);
    let text = std::fs::read_to_string(output).unwrap();
    (ran, text)
}

#[test]
fn shrink_is_deterministic_never_grows_and_its_repro_line_fails_with_the_invariant() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("shrunk.toml");
    let (first_run, first) = shrink_to(&output, &[]);
    let (_, second) = shrink_to(&output, &[]);
    assert_eq!(first, second, "two shrinks of the same input wrote different files");
    let (before, after) = (size(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../scenarios/storage/fsync-fail.toml"))), size(&output));
    assert!(after.0 <= before.0 && after.1 <= before.1, "grew: {before:?} -> {after:?}");
    assert!(after.0 < before.0 || after.1 < before.1, "shrank nothing: {before:?} -> {after:?}");
    assert!(first.starts_with("# Shrunk by `mailchaos shrink` from scenarios/storage/fsync-fail.toml"), "{first}");
    assert_eq!(field(&first, "invariant"), Some("A12"), "{first}");
    // The printed repro line, run as printed (minus the program path), fails with A12.
    let repro = first_run.stdout.lines().find_map(|line| line.strip_prefix("repro: ")).unwrap_or_else(|| panic!("no repro line: {}", first_run.stdout));
    let args: Vec<&str> = repro.split_whitespace().skip(1).collect();
    assert_eq!(args[0], "repro", "{repro}");
    let replay = run(&args);
    assert_eq!(replay.code, Some(1), "{repro}: {}", replay.stderr);
    assert!(replay.stdout.contains("verdict=violation(A12"), "{}", replay.stdout);
}

#[test]
fn a_run_budget_stops_the_search_with_a_smaller_failing_file_all_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("budget.toml");
    let (ran, text) = shrink_to(&output, &["--max-runs", "6"]);
    assert!(ran.stdout.contains("stopped=run budget"), "{}", ran.stdout);
    assert!(text.contains("stopped at run budget"), "{text}");
    let (_, again) = shrink_to(&output, &["--max-runs", "6"]);
    assert_eq!(text, again, "a run budget must give the same file every time");
    let loaded = scenario::load(&output).unwrap();
    let judged = judge_with(&loaded, Seed(1), &Defects::of(&[Defect::parse("bounce-on-storage-error").unwrap()]), &RunOptions::default());
    assert!(judged.violations.iter().any(|violation| violation.invariant == "A12"), "{text}");
}

#[test]
fn shrink_refuses_what_it_cannot_shrink_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out.toml");
    let out = output.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["shrink", "scenarios/fast/baseline.toml", "--seed", "1", "-o", out], "the run passes"),
        (&["shrink", "scenarios/storage/fsync-fail.toml", "--seed", "1", "--defect", "bounce-on-storage-error", "--invariant", "A17", "-o", out], "does not violate it; it violates A12"),
        (&["shrink", "scenarios/fast/baseline.toml", "--seed", "1", "-o", "/nonexistent-folder/x.toml"], "no such folder"),
        (&["shrink", "scenarios/fast", "--seed", "1", "-o", out], "a folder"),
        (&["shrink", "scenarios/fast/missing.toml", "--seed", "1", "-o", out], "no such file"),
        (&["shrink", "scenarios/fast/baseline.toml", "--seed", "1", "--defect", "no-such-bug", "-o", out], "unknown defect"),
        (&["shrink", "scenarios/fast/baseline.toml", "--seed", "1", "--max-runs", "0", "-o", out], "--max-runs"),
        (&["shrink", "scenarios/fast/baseline.toml", "-o", out], "--seed"),
    ];
    for (args, expected) in cases {
        let ran = run(args);
        assert_eq!(ran.code, Some(2), "{args:?}: {}", ran.stderr);
        assert!(ran.stderr.contains(expected), "{args:?}: expected {expected:?} in {}", ran.stderr);
    }
    assert!(!output.exists(), "a refused shrink wrote its output");
}

/// A failing swarm seed shrinks straight from its seed: the generated scenario is the input,
/// and the result fails as the swarm run did, with fewer faults and messages.
#[test]
fn a_failing_swarm_seed_shrinks_from_its_seed() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("swarm.toml");
    let args = ["shrink", "--swarm-seed", "1", "--defect", "write-into-new", "-o", output.to_str().unwrap()];
    let ran = run(&args);
    assert_eq!(ran.code, Some(0), "{}{}", ran.stdout, ran.stderr);
    let text = std::fs::read_to_string(&output).unwrap();
    assert!(text.starts_with("# Shrunk by `mailchaos shrink` from swarm seed 0x1 (honest)"), "{text}");
    assert_eq!(field(&text, "invariant"), Some("A15"), "{text}");
    let generated = dir.path().join("generated.toml");
    let emitted = run(&["swarm", "--seed", "1", "--emit-scenario", generated.to_str().unwrap()]);
    assert_eq!(emitted.code, Some(0), "{}", emitted.stderr);
    let (before, after) = (size(&generated), size(&output));
    assert!(after.0 <= before.0 && after.1 < before.1, "{before:?} -> {after:?}");
    let replay = run(&["repro", output.to_str().unwrap(), "--seed", "1", "--defect", "write-into-new"]);
    assert_eq!(replay.code, Some(1), "{}", replay.stderr);
    // Neither a file nor a swarm seed, or both: refused.
    assert_eq!(run(&["shrink", "--seed", "1", "-o", output.to_str().unwrap()]).code, Some(2));
    assert_eq!(run(&["shrink", "scenarios/fast/baseline.toml", "--swarm-seed", "1", "-o", output.to_str().unwrap()]).code, Some(2));
}
