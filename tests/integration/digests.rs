//! The verdict and history digest of every shipped scenario at seeds 1 and 2, against the list
//! recorded in `digests.txt`: speed work must not change what a run does nor what it concludes.
//! A change that means to alter histories re-records the list:
//! `MAILCHAOS_RECORD_DIGESTS=1 cargo nextest run --release -p mailchaos --test integration digests`
//! and the diff of `digests.txt` shows which runs moved.

use std::path::Path;
use std::process::Command;

const RECORDED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/integration/digests.txt");

/// "scenario seed verdict digest" per run line, in output order.
fn current() -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_mailchaos"))
        .args(["run", "scenarios/fast", "scenarios/storage", "scenarios/regressions", "--seeds", "2"])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .output()
        .expect("runs mailchaos");
    let text = String::from_utf8_lossy(&output.stdout);
    let mut lines = String::new();
    for line in text.lines().filter(|line| line.contains(" seed=0x") && line.contains(" digest=")) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let field = |key: &str| words.iter().find_map(|word| word.strip_prefix(key)).unwrap_or("?");
        lines.push_str(&format!("{} {} {} {}\n", words[0], field("seed="), field("verdict="), field("digest=")));
    }
    lines
}

#[test]
fn every_shipped_run_keeps_its_recorded_verdict_and_digest() {
    let now = current();
    assert!(now.lines().count() >= 50, "too few runs read:\n{now}");
    if std::env::var_os("MAILCHAOS_RECORD_DIGESTS").is_some() {
        std::fs::write(RECORDED, &now).expect("writes digests.txt");
        return;
    }
    let recorded = std::fs::read_to_string(Path::new(RECORDED)).expect("tests/integration/digests.txt exists");
    let moved: Vec<String> = recorded.lines().zip(now.lines()).filter(|(a, b)| a != b).map(|(a, b)| format!("  was {a}\n  now {b}")).collect();
    assert!(moved.is_empty() && recorded.lines().count() == now.lines().count(), "runs changed (re-record if meant, see the module comment):\n{}", moved.join("\n"));
}
