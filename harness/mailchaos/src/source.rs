//! Where a run's scenario and profile come from, and what exactly they said.
//!
//! A scenario is either a file or a copy built into the binary, and the two may differ (an
//! edited file next to a stale binary). So the built-in copies are used only when asked for by
//! name (`embedded:fast`, `embedded:fast/baseline`) or when no path is given at all, never in
//! place of a path; and every run names a short content hash of the scenario text and of the
//! profile text, which `--expect-hash` checks before a replay.

use crate::bad_input::BadInput;
use devices::profile::{self, Profile};
use sim::scenario::{self, Loaded};
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// The fast suite, embedded so that `mailchaos run` works from any directory.
pub const EMBEDDED_FAST: &[(&str, &str)] = &[
    ("scenarios/fast/baseline.toml", include_str!("../../../scenarios/fast/baseline.toml")),
    ("scenarios/fast/cuts.toml", include_str!("../../../scenarios/fast/cuts.toml")),
    ("scenarios/fast/network.toml", include_str!("../../../scenarios/fast/network.toml")),
    ("scenarios/fast/store-stall.toml", include_str!("../../../scenarios/fast/store-stall.toml")),
    ("scenarios/fast/mailbox-stall.toml", include_str!("../../../scenarios/fast/mailbox-stall.toml")),
    ("scenarios/fast/mx-queue-eio.toml", include_str!("../../../scenarios/fast/mx-queue-eio.toml")),
    ("scenarios/fast/partition-mx-store.toml", include_str!("../../../scenarios/fast/partition-mx-store.toml")),
    ("scenarios/fast/store-crash.toml", include_str!("../../../scenarios/fast/store-crash.toml")),
    ("scenarios/fast/mx-crash.toml", include_str!("../../../scenarios/fast/mx-crash.toml")),
    ("scenarios/fast/partition-sender-mx.toml", include_str!("../../../scenarios/fast/partition-sender-mx.toml")),
    ("scenarios/fast/imap-clients.toml", include_str!("../../../scenarios/fast/imap-clients.toml")),
];

/// The storage suite, embedded for `vendor-compare` (see scenarios/storage/).
pub const EMBEDDED_STORAGE: &[(&str, &str)] = &[
    ("scenarios/storage/bit-rot.toml", include_str!("../../../scenarios/storage/bit-rot.toml")),
    ("scenarios/storage/fsync-fail.toml", include_str!("../../../scenarios/storage/fsync-fail.toml")),
    ("scenarios/storage/read-only-and-full.toml", include_str!("../../../scenarios/storage/read-only-and-full.toml")),
    ("scenarios/storage/rollback.toml", include_str!("../../../scenarios/storage/rollback.toml")),
    ("scenarios/storage/torn-and-lost.toml", include_str!("../../../scenarios/storage/torn-and-lost.toml")),
    ("scenarios/storage/queue-damage.toml", include_str!("../../../scenarios/storage/queue-damage.toml")),
    ("scenarios/storage/cohort-restore.toml", include_str!("../../../scenarios/storage/cohort-restore.toml")),
];

/// The regression corpus (scenarios/regressions/): scenarios that once showed a bug or a false
/// alarm, shrunk ones among them; each passes on the clean stack.
pub const EMBEDDED_REGRESSIONS: &[(&str, &str)] = &[
    ("scenarios/regressions/latency-spike-under-load.toml", include_str!("../../../scenarios/regressions/latency-spike-under-load.toml")),
    ("scenarios/regressions/rollback-delete-under-new-uidvalidity.toml", include_str!("../../../scenarios/regressions/rollback-delete-under-new-uidvalidity.toml")),
    ("scenarios/regressions/shrunk-bounce-on-storage-error.toml", include_str!("../../../scenarios/regressions/shrunk-bounce-on-storage-error.toml")),
    ("scenarios/regressions/shrunk-drop-on-lmtp-4xx.toml", include_str!("../../../scenarios/regressions/shrunk-drop-on-lmtp-4xx.toml")),
    ("scenarios/regressions/shrunk-dup-rcpt-delivered-twice.toml", include_str!("../../../scenarios/regressions/shrunk-dup-rcpt-delivered-twice.toml")),
    ("scenarios/regressions/shrunk-fsync-error-ignored.toml", include_str!("../../../scenarios/regressions/shrunk-fsync-error-ignored.toml")),
    ("scenarios/regressions/shrunk-keep-uidvalidity-on-rollback.toml", include_str!("../../../scenarios/regressions/shrunk-keep-uidvalidity-on-rollback.toml")),
    ("scenarios/regressions/shrunk-mx-retry-without-backoff.toml", include_str!("../../../scenarios/regressions/shrunk-mx-retry-without-backoff.toml")),
    ("scenarios/regressions/shrunk-no-checksum.toml", include_str!("../../../scenarios/regressions/shrunk-no-checksum.toml")),
    ("scenarios/regressions/shrunk-no-queue-checksum.toml", include_str!("../../../scenarios/regressions/shrunk-no-queue-checksum.toml")),
    ("scenarios/regressions/shrunk-reuse-uid-after-restart.toml", include_str!("../../../scenarios/regressions/shrunk-reuse-uid-after-restart.toml")),
];

/// The prefix that names a built-in copy instead of a file.
pub const EMBEDDED: &str = "embedded:";

/// The built-in suites by name.
const SUITES: &[(&str, &[(&str, &str)])] = &[("fast", EMBEDDED_FAST), ("storage", EMBEDDED_STORAGE), ("regressions", EMBEDDED_REGRESSIONS)];

/// A scenario ready to run: what it says, how to name it again, and a hash of its text.
pub struct Source {
    pub loaded: Loaded,
    /// A path, or `embedded:<suite>/<name>`: what a repro line passes to replay this very text.
    pub origin: String,
    pub hash: String,
}

/// A short content hash: enough to tell an edited file from the text that ran.
pub fn short_hash(text: &str) -> String {
    blake3::hash(text.as_bytes()).to_hex()[..8].to_string()
}

/// Every built-in suite, by name, with its files (a test checks them against the folders).
pub fn suites() -> &'static [(&'static str, &'static [(&'static str, &'static str)])] {
    SUITES
}

/// The embedded name of a built-in scenario: `scenarios/fast/baseline.toml` -> `embedded:fast/baseline`.
fn embedded_name(path: &str) -> String {
    let trimmed = path.trim_start_matches("scenarios/").trim_end_matches(".toml");
    format!("{EMBEDDED}{trimmed}")
}

fn embedded_source(path: &str, text: &str) -> Result<Source, BadInput> {
    // Parsed under its repository path, so its default name and messages are the file's.
    let scenario = scenario::parse(path, text)?;
    let origin = embedded_name(path);
    Ok(Source { loaded: Loaded { path: PathBuf::from(&origin), scenario }, origin, hash: short_hash(text) })
}

/// The whole embedded fast suite: what `run` and `check-determinism` take without a path.
pub fn embedded_fast() -> Result<Vec<Source>, BadInput> {
    EMBEDDED_FAST.iter().map(|(path, text)| embedded_source(path, text)).collect()
}

/// `embedded:fast`, `embedded:storage` (a suite) or `embedded:fast/baseline` (one scenario).
fn embedded(name: &str) -> Result<Vec<Source>, BadInput> {
    let wanted = name.trim_start_matches(EMBEDDED);
    let (suite, scenario) = wanted.split_once('/').map_or((wanted, None), |(suite, one)| (suite, Some(one)));
    let known = || -> String {
        let suites = SUITES.iter().map(|(name, _)| format!("{EMBEDDED}{name}"));
        let scenarios = SUITES.iter().flat_map(|(_, files)| files.iter().map(|(path, _)| embedded_name(path)));
        suites.chain(scenarios).collect::<Vec<_>>().join(", ")
    };
    let files = SUITES.iter().find(|(suite_name, _)| *suite_name == suite).map(|(_, files)| *files);
    let files = files.ok_or_else(|| BadInput(format!("{name}: no such built-in suite; expected one of: {}", known())))?;
    let chosen: Vec<&(&str, &str)> = files.iter().filter(|(path, _)| scenario.is_none_or(|one| embedded_name(path) == format!("{EMBEDDED}{suite}/{one}"))).collect();
    if chosen.is_empty() {
        return Err(BadInput(format!("{name}: no such built-in scenario; expected one of: {}", known())));
    }
    chosen.into_iter().map(|(path, text)| embedded_source(path, text)).collect()
}

/// One scenario file, read once: the scenario that runs and the hash are of the same bytes.
fn file_source(path: &Path) -> Result<Source, BadInput> {
    // The bounded reader refuses what is not a regular file of sensible size, by name.
    let file = path.display().to_string();
    let text = input::read_input_file(path, input::MAX_INPUT_BYTES).map_err(|error| BadInput(error.to_string()))?;
    let scenario = scenario::parse(&file, &text)?;
    Ok(Source { loaded: Loaded { path: path.to_path_buf(), scenario }, origin: file, hash: short_hash(&text) })
}

/// The text of one scenario and the name to cite it by: a file (read by the bounded reader) or
/// a built-in copy (`embedded:fast/store-crash`, named by its repository path). For commands
/// that work on the text itself (`shrink`).
pub fn text_of(path: &Path) -> Result<(String, String), BadInput> {
    let name = path.to_string_lossy();
    if name.starts_with(EMBEDDED) {
        let copy = SUITES.iter().flat_map(|(_, files)| files.iter()).find(|(file, _)| embedded_name(file) == name);
        // Anything else (a whole suite, a typo) gets embedded()'s own message listing the copies.
        return match copy {
            Some((file, text)) => Ok(((*file).to_string(), (*text).to_string())),
            None => Err(one_of(path).err().unwrap_or_else(|| BadInput(format!("{name}: names a built-in suite; this command takes one scenario")))),
        };
    }
    if !path.exists() {
        return Err(missing(&name));
    }
    if path.is_dir() {
        return Err(BadInput(format!("{name}: a folder; this command takes one scenario file")));
    }
    let text = input::read_input_file(path, input::MAX_INPUT_BYTES).map_err(|error| BadInput(error.to_string()))?;
    Ok((path.display().to_string(), text))
}

/// The scenarios a command-line path names: a file, a folder's files, or a built-in copy.
pub fn sources_of(path: &Path) -> Result<Vec<Source>, BadInput> {
    let text = path.to_string_lossy();
    if text.starts_with(EMBEDDED) {
        return embedded(&text);
    }
    // Nothing at all under that name (a symlink, even a looping one, is something: the reader
    // names what is wrong with it).
    if std::fs::symlink_metadata(path).is_err() {
        return Err(missing(&text));
    }
    scenario::files_of(path)?.iter().map(|file| file_source(file)).collect()
}

/// A path that is not there is an error, even when a built-in copy has its name: that copy
/// may say something else than the file the user means. The message names the copy.
fn missing(path: &str) -> BadInput {
    let folder = path.trim_end_matches('/');
    let suite = SUITES.iter().find(|(suite, _)| folder.ends_with(&format!("scenarios/{suite}"))).map(|(suite, _)| format!("{EMBEDDED}{suite}"));
    let file = SUITES.iter().flat_map(|(_, files)| files.iter()).find(|(name, _)| path.ends_with(name)).map(|(name, _)| embedded_name(name));
    let hint = suite.or(file).map(|copy| format!("; the copy built into this binary is {copy}")).unwrap_or_default();
    BadInput(format!("{path}: no such file or folder{hint}"))
}

/// Every scenario the paths name, or the embedded fast suite when there are none.
pub fn all_of(paths: &[PathBuf]) -> Result<Vec<Source>, BadInput> {
    if paths.is_empty() {
        return embedded_fast();
    }
    let mut sources = Vec::new();
    for path in paths {
        sources.extend(sources_of(path)?);
    }
    Ok(sources)
}

/// Exactly one scenario (repro, crash-explore, a real store).
pub fn one_of(path: &Path) -> Result<Source, BadInput> {
    let mut sources = sources_of(path)?;
    match sources.len() {
        1 => Ok(sources.remove(0)),
        count => Err(BadInput(format!("{}: names {count} scenarios; this command takes one file (or embedded:<suite>/<name>)", path.display()))),
    }
}

/// The profile the command line names, with the hash of its text.
pub struct ProfileSource {
    pub profile: Rc<Profile>,
    pub hash: String,
}

/// A shipped profile by name, or a profile file, read once like a scenario file.
pub fn profile_source(name_or_file: &str) -> Result<ProfileSource, BadInput> {
    if let Some((name, text)) = profile::SHIPPED.iter().find(|(name, _)| *name == name_or_file) {
        let profile = profile::parse(&format!("fixtures/profiles/{name}.toml"), text).map_err(|error| BadInput(error.to_string()))?;
        return Ok(ProfileSource { profile: Rc::new(profile), hash: short_hash(text) });
    }
    // The profile crate resolves it: bad names and files are refused with their location.
    let (profile, text) = Profile::resolve_with_text(name_or_file).map_err(|error| BadInput(error.to_string()))?;
    Ok(ProfileSource { profile: Rc::new(profile), hash: short_hash(&text) })
}

/// The hash of the profile a run uses when the command line names none: the scenario's own
/// `profile`, or the default, both shipped.
pub fn default_profile_hash(loaded: &Loaded) -> String {
    let name = sim::world::profile_of(&loaded.scenario).name().to_string();
    profile::SHIPPED.iter().find(|(shipped, _)| *shipped == name).map_or_else(|| "unknown".into(), |(_, text)| short_hash(text))
}

/// What `--expect-hash` compares: `<scenario hash>-<profile hash>`.
pub fn expected_form(scenario: &str, profile: &str) -> String {
    format!("{scenario}-{profile}")
}

/// Refuses a replay whose scenario or profile no longer says what ran when the hash was printed.
pub fn check_expected(expected: &str, source: &Source, profile_hash: &str) -> Result<(), BadInput> {
    let Some((want_scenario, want_profile)) = expected.split_once('-') else {
        return Err(BadInput(format!("--expect-hash {expected}: expected <scenario hash>-<profile hash>, as a repro line prints it")));
    };
    if want_scenario != source.hash {
        return Err(BadInput(format!(
            "{}: the scenario's text hashes to {} but the run to replay had {want_scenario}: the file changed since (or names another copy); not replaying something else",
            source.origin, source.hash
        )));
    }
    if want_profile != profile_hash {
        return Err(BadInput(format!("the profile's text hashes to {profile_hash} but the run to replay had {want_profile}: the profile changed since; not replaying something else")));
    }
    Ok(())
}
