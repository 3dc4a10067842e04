//! What ran is what a run line names: built-in copies only when asked for, a content hash of
//! the scenario and the profile on every run line, and replays that refuse edited files.

use std::path::Path;
use std::process::{Command, Output};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

fn mailchaos_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mailchaos")).args(args).current_dir(dir).output().expect("runs")
}

fn mailchaos(args: &[&str]) -> Output {
    mailchaos_in(Path::new(ROOT), args)
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).to_string()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).to_string()
}

fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    line.split_whitespace().find_map(|word| word.strip_prefix(name))
}

fn baseline_text() -> String {
    std::fs::read_to_string(format!("{ROOT}/scenarios/fast/baseline.toml")).unwrap()
}

#[test]
fn a_missing_path_is_refused_even_where_a_built_in_copy_has_its_name() {
    let output = mailchaos(&["run", "no/such/scenarios/fast/baseline.toml", "--seeds", "1"]);
    assert_eq!(output.status.code(), Some(2), "{}", stdout(&output));
    assert!(stdout(&output).is_empty(), "nothing ran: {}", stdout(&output));
    let error = stderr(&output);
    assert!(error.contains("no such file or folder") && error.contains("embedded:fast/baseline"), "{error}");
    let folder = mailchaos(&["run", "elsewhere/scenarios/storage/", "--seeds", "1"]);
    assert_eq!(folder.status.code(), Some(2));
    assert!(stderr(&folder).contains("embedded:storage"), "{}", stderr(&folder));
    let repro = mailchaos(&["repro", "no/such/scenarios/fast/baseline.toml", "--seed", "1"]);
    assert_eq!(repro.status.code(), Some(2), "{}", stdout(&repro));
}

#[test]
fn a_run_line_names_the_hashes_of_the_scenario_and_profile_texts() {
    let output = mailchaos(&["run", "scenarios/fast/baseline.toml", "--seeds", "1"]);
    let line = stdout(&output).lines().find(|line| line.contains(" verdict=")).unwrap_or_default().to_string();
    assert_eq!(field(&line, "scenario="), Some(mailchaos::source::short_hash(&baseline_text()).as_str()), "{line}");
    let posix = std::fs::read_to_string(format!("{ROOT}/fixtures/profiles/posix-strict.toml")).unwrap();
    assert_eq!(field(&line, "profile="), Some(mailchaos::source::short_hash(&posix).as_str()), "{line}");
    // The built-in copy of an unchanged file is the same text, hence the same hash and run.
    let embedded = stdout(&mailchaos(&["run", "embedded:fast/baseline", "--seeds", "1"]));
    let embedded_line = embedded.lines().find(|line| line.contains(" verdict=")).unwrap_or_default();
    assert_eq!(field(embedded_line, "scenario="), field(&line, "scenario="));
    assert_eq!(field(embedded_line, "digest="), field(&line, "digest="));
}

#[test]
fn a_built_in_run_replays_the_built_in_copy() {
    let output = mailchaos(&["run", "embedded:fast/baseline", "--seed", "5", "--defect", "write-into-new"]);
    assert_eq!(output.status.code(), Some(1));
    let repro = stdout(&output).lines().find_map(|line| line.strip_prefix("repro: ").map(str::to_string)).expect("a repro line");
    let words: Vec<&str> = repro.split_whitespace().collect();
    assert_eq!(words[2], "embedded:fast/baseline", "{repro}");
    assert!(words.contains(&"--expect-hash"), "{repro}");
    assert_eq!(mailchaos(&words[1..]).status.code(), Some(1), "the repro line reproduces it");
}

#[test]
fn repro_refuses_a_scenario_or_profile_edited_since_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("baseline.toml");
    std::fs::write(&scenario, baseline_text()).unwrap();
    let profile = dir.path().join("vendor.toml");
    // A vendor's own device under its own name (a shipped name is only for the shipped text).
    let xfs = std::fs::read_to_string(format!("{ROOT}/fixtures/profiles/linux-xfs.toml")).unwrap();
    assert!(xfs.contains("name = \"linux-xfs\""));
    std::fs::write(&profile, xfs.replacen("name = \"linux-xfs\"", "name = \"vendor-xfs\"", 1)).unwrap();
    let args = ["run", scenario.to_str().unwrap(), "--seed", "5", "--defect", "write-into-new", "--profile", profile.to_str().unwrap()];
    let output = mailchaos(&args);
    assert_eq!(output.status.code(), Some(1), "{}{}", stdout(&output), stderr(&output));
    let repro = stdout(&output).lines().find_map(|line| line.strip_prefix("repro: ").map(str::to_string)).expect("a repro line");
    let words: Vec<&str> = repro.split_whitespace().collect();
    assert_eq!(mailchaos(&words[1..]).status.code(), Some(1), "unchanged files replay: {repro}");
    // An edit that changes nothing the run reads still changes the text: refused all the same.
    std::fs::write(&profile, std::fs::read_to_string(&profile).unwrap() + "\n# firmware 2.2\n").unwrap();
    let refused = mailchaos(&words[1..]);
    assert_eq!(refused.status.code(), Some(2), "{}", stdout(&refused));
    assert!(stderr(&refused).contains("the profile changed since"), "{}", stderr(&refused));
    std::fs::write(&scenario, baseline_text().replace("spread_s", "# edited\nspread_s")).unwrap();
    let refused = mailchaos(&words[1..]);
    assert_eq!(refused.status.code(), Some(2), "{}", stdout(&refused));
    assert!(stderr(&refused).contains("the file changed since"), "{}", stderr(&refused));
    assert!(stdout(&refused).is_empty(), "nothing ran: {}", stdout(&refused));
}

#[test]
fn check_determinism_without_a_path_runs_the_built_in_copies_in_both_processes() {
    // An edited scenario where the built-in copy's path would be: the child must not read it.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("scenarios/fast")).unwrap();
    let edited = baseline_text().replacen("\nmessages = ", "\nmessages = 7\n# was: ", 1);
    assert_ne!(edited, baseline_text());
    std::fs::write(dir.path().join("scenarios/fast/baseline.toml"), edited).unwrap();
    let output = mailchaos_in(dir.path(), &["check-determinism", "--seeds", "1"]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{text}{}", stderr(&output));
    assert!(text.contains("diverged=0") && !text.contains("DIVERGED"), "{text}");
}

/// Each built-in suite holds exactly the files of its folder, byte for byte: a scenario added
/// to a folder and forgotten here (or edited without a rebuild) is caught.
#[test]
fn every_built_in_suite_is_its_folder() {
    for (suite, files) in mailchaos::source::suites() {
        let folder = format!("{ROOT}/scenarios/{suite}");
        let mut on_disk: Vec<String> = std::fs::read_dir(&folder).unwrap().map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned()).filter(|name| name.ends_with(".toml")).collect();
        on_disk.sort();
        let mut built_in: Vec<String> = files.iter().map(|(path, _)| path.rsplit('/').next().unwrap().to_string()).collect();
        built_in.sort();
        assert_eq!(built_in, on_disk, "scenarios/{suite}");
        for (path, text) in files.iter() {
            assert_eq!(std::fs::read_to_string(format!("{ROOT}/{path}")).unwrap(), *text, "{path}");
        }
    }
}
