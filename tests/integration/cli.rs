//! The command line as CI and developers use it: exit codes, repro lines, bad input.

use std::process::{Command, Output};

fn mailchaos(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mailchaos")).args(args).current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).output().expect("runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).to_string()
}

#[test]
fn a_clean_run_exits_0_and_prints_a_summary() {
    let output = mailchaos(&["run", "scenarios/fast/baseline.toml", "--seeds", "2"]);
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
    let text = stdout(&output);
    assert_eq!(text.lines().filter(|line| line.contains("verdict=ok")).count(), 2);
    assert!(text.lines().any(|line| line.starts_with("summary: runs=2 ok=2 violation=0")), "{text}");
}

#[test]
fn a_violation_exits_1_and_its_repro_line_reproduces_it() {
    let output = mailchaos(&["run", "scenarios/fast/baseline.toml", "--seed", "5", "--defect", "write-into-new"]);
    assert_eq!(output.status.code(), Some(1));
    let text = stdout(&output);
    let repro = text.lines().find_map(|line| line.strip_prefix("repro: ")).expect("a repro line");
    let words: Vec<&str> = repro.split_whitespace().collect();
    assert_eq!(&words[1..7], ["repro", "scenarios/fast/baseline.toml", "--seed", "0x5", "--defect", "write-into-new"]);
    assert_eq!(words[7], "--expect-hash", "the repro line pins the scenario and profile texts: {repro}");
    let replay = mailchaos(&words[1..]);
    assert_eq!(replay.status.code(), Some(1));
    let replayed = stdout(&replay);
    assert!(replayed.contains("A15 file mail/"), "{replayed}");
    let digest = |text: &str| text.lines().find(|line| line.contains(" verdict=")).and_then(|line| line.split("digest=").nth(1)).map(str::to_string);
    assert_eq!(digest(&text), digest(&replayed), "the replay is the same run");
}

#[test]
fn two_processes_print_the_same_digest_for_one_seed() {
    let first = stdout(&mailchaos(&["run", "scenarios/fast/mx-crash.toml", "--seed", "9"]));
    let second = stdout(&mailchaos(&["run", "scenarios/fast/mx-crash.toml", "--seed", "9"]));
    let digest = |text: &str| text.lines().next().and_then(|line| line.split("digest=").nth(1)).map(str::to_string);
    assert!(digest(&first).is_some());
    assert_eq!(digest(&first), digest(&second));
}

#[test]
fn check_determinism_runs_a_fresh_process_and_passes() {
    let output = mailchaos(&["check-determinism", "scenarios/fast/store-crash.toml", "scenarios/fast/partition-sender-mx.toml", "--seeds", "2"]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{text}");
    assert!(text.contains("summary: runs=4 diverged=0"), "{text}");
}

#[test]
fn list_defects_prints_one_name_per_line() {
    let text = stdout(&mailchaos(&["list-defects"]));
    let names: Vec<&str> = text.lines().filter_map(|line| line.split_whitespace().next()).collect();
    assert!(names.contains(&"ack-before-fsync") && names.contains(&"reuse-uid-after-restart"), "{names:?}");
    assert_eq!(names.len(), stack::Defect::ALL.len());
}

#[test]
fn a_malformed_scenario_names_file_line_and_column_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.toml");
    std::fs::write(&path, "tick_ms = 1000\nhorizon_s = 3600\nchaos_s = = 1\n").unwrap();
    let output = mailchaos(&["run", path.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(error.contains("broken.toml:3:11:"), "{error}");
    assert!(!error.contains("panicked"), "{error}");
}

#[test]
fn bad_flags_and_missing_files_exit_2_without_a_panic() {
    for args in [
        vec!["run", "--defect", "no-such-defect"],
        vec!["run", "--seeds", "many"],
        vec!["run", "--seeds", "0"],
        vec!["run", "no/such/place"],
        vec!["repro", "scenarios/fast/baseline.toml"],
        vec!["repro", "scenarios/fast/baseline.toml", "--seed", "0xzz"],
        vec!["frobnicate"],
    ] {
        let output = mailchaos(&args);
        let error = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {error}");
        assert!(!error.contains("panicked"), "{args:?}: {error}");
    }
}

#[test]
fn list_policies_prints_the_nine_shipped_policies() {
    let text = stdout(&mailchaos(&["list-policies"]));
    let names: Vec<&str> = text.lines().filter_map(|line| line.split_whitespace().next()).collect();
    assert_eq!(names, ["rfc5321", "postfix", "exim", "exchange-server", "exchange-online", "gmail-like", "no-retry", "hammer", "dead-host-cutoff"]);
}

#[test]
fn crash_explore_sweeps_the_seeds_it_is_given() {
    let output = mailchaos(&["crash-explore", "scenarios/fast/store-crash.toml", "--seeds", "2"]);
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
    let text = stdout(&output);
    assert!(text.contains("seed=0x1 ") && text.contains("seed=0x2 "), "{text}");
    assert!(text.lines().any(|line| line.starts_with("summary: seeds=2 ")), "{text}");
}

#[test]
fn a_fault_field_its_kind_ignores_is_bad_input_with_its_location() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outage-on-mx.toml");
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../scenarios/fast/baseline.toml")).unwrap();
    std::fs::write(&path, format!("{text}\n[[fault]]\nkind = \"outage\"\nhost = \"mx\"\nanswer = \"4xx-tempfail\"\nat_s = 100\nduration_s = 100\n")).unwrap();
    let output = mailchaos(&["run", path.to_str().unwrap(), "--seeds", "1"]);
    assert_eq!(output.status.code(), Some(2));
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(error.contains("outage-on-mx.toml:") && error.contains("kind = \"outage\" takes no host"), "{error}");
}

/// crash-explore stops between a store's tmp/ write and its fsync, and checks that a queue file
/// the MX finished stays removed after any crash: without the directory fsync after the unlink
/// a crash brings it back (a duplicate delivery), and the clean stack never does.
#[test]
fn crash_explore_finds_a_finished_queue_file_that_a_crash_brings_back() {
    let clean = mailchaos(&["crash-explore", "scenarios/fast/mx-crash.toml", "--seeds", "2"]);
    assert_eq!(clean.status.code(), Some(0), "{}", stdout(&clean));
    let store = stdout(&mailchaos(&["crash-explore", "scenarios/fast/store-crash.toml", "--seed", "1"]));
    assert!(store.contains("at fail point store-after-tmp-write-before-fsync"), "{store}");
    let planted = mailchaos(&["crash-explore", "scenarios/fast/mx-crash.toml", "--seeds", "2", "--defect", "no-fsync-after-unlink"]);
    assert_eq!(planted.status.code(), Some(1), "{}", stdout(&planted));
    let text = stdout(&planted);
    assert!(text.contains("A13 msg") && text.contains("the recovered queue holds it again"), "{text}");
}
