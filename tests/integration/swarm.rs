//! `mailchaos swarm`: generated scenarios that replay as files, run lines with their plan, the
//! coverage table, determinism across processes, and bad input.

use std::collections::BTreeMap;
use std::process::{Command, Output};

fn mailchaos(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mailchaos")).args(args).current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).output().expect("runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).to_string()
}

fn word<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace().find_map(|word| word.strip_prefix(key)).unwrap_or_else(|| panic!("no {key} in {line}"))
}

/// seed -> digest, from the run lines of a sweep or of `run`.
fn digests(text: &str) -> BTreeMap<String, String> {
    text.lines().filter(|line| line.contains(" verdict=")).map(|line| (word(line, "seed=").to_string(), word(line, "digest=").to_string())).collect()
}

#[test]
fn an_emitted_scenario_replays_with_the_digest_of_its_swarm_run_over_50_seeds() {
    let sweep = mailchaos(&["swarm", "--seed", "1", "--seeds", "50", "--profiles", "all"]);
    assert_ne!(sweep.status.code(), Some(2), "{}", String::from_utf8_lossy(&sweep.stderr));
    let swarmed = digests(&stdout(&sweep));
    assert_eq!(swarmed.len(), 50);
    let dir = tempfile::tempdir().unwrap();
    for (seed, digest) in &swarmed {
        let file = dir.path().join(format!("swarm-{seed}.toml"));
        let file = file.to_str().unwrap();
        let emitted = mailchaos(&["swarm", "--seed", seed, "--profiles", "all", "--emit-scenario", file]);
        assert_eq!(emitted.status.code(), Some(0), "{}", String::from_utf8_lossy(&emitted.stderr));
        let replay = mailchaos(&["run", file, "--seed", seed]);
        let replayed = digests(&stdout(&replay));
        assert_eq!(replayed.get(seed), Some(digest), "seed {seed}: the file replays another run\n{}", stdout(&replay));
    }
}

#[test]
fn run_lines_show_the_plan_and_the_summary_ends_with_the_coverage_table() {
    let output = mailchaos(&["swarm", "--seed", "1", "--seeds", "12", "--profiles", "all"]);
    let text = stdout(&output);
    let lines: Vec<&str> = text.lines().filter(|line| line.starts_with("swarm seed=")).collect();
    assert_eq!(lines.len(), 12, "{text}");
    assert!(lines.iter().all(|line| !word(line, "plan=").is_empty() && line.contains(" drained=")), "{text}");
    // Every switch has its row, then every invariant.
    for kind in ["disk-stall", "partition-oneway", "cut", "crash", "rollback", "latency-spike", "lying-fsync"] {
        assert!(text.lines().any(|line| line.starts_with("coverage: ") && line.contains(kind)), "no row for {kind}\n{text}");
    }
    assert!(text.lines().any(|line| line.starts_with("coverage: A2 no-loss")), "{text}");
    assert!(text.lines().any(|line| line.starts_with("summary: runs=12 ")), "{text}");
}

#[test]
fn a_planted_defect_fails_the_sweep_with_repro_lines_that_reproduce_it() {
    let output = mailchaos(&["swarm", "--seed", "1", "--seeds", "3", "--defect", "write-into-new"]);
    assert_eq!(output.status.code(), Some(1), "{}", stdout(&output));
    let text = stdout(&output);
    let repro = text.lines().find_map(|line| line.strip_prefix("repro: ")).expect("a repro line");
    let words: Vec<&str> = repro.split_whitespace().collect();
    assert_eq!(&words[1..], ["swarm", "--seed", "0x1", "--profiles", "honest", "--defect", "write-into-new"]);
    let again = mailchaos(&words[1..]);
    assert_eq!(again.status.code(), Some(1));
    let first = text.lines().find(|line| line.starts_with("swarm seed=0x1 ")).unwrap();
    assert_eq!(stdout(&again).lines().next(), Some(first), "the repro reruns the very run");
}

#[test]
fn check_determinism_covers_swarm_seeds_in_a_fresh_process() {
    let output = mailchaos(&["check-determinism", "--swarm", "--profiles", "all", "--seeds", "3"]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{text}");
    assert_eq!(text.lines().filter(|line| line.ends_with(" same")).count(), 3, "{text}");
}

#[test]
fn bad_swarm_input_exits_2_with_a_clear_message() {
    let cases: [(&[&str], &str); 4] = [
        (&["swarm", "--profiles", "nice"], "unknown profile set 'nice'; expected one of: honest, dishonest, all"),
        (&["swarm", "--emit-scenario", "x.toml"], "--seed is required"),
        (&["swarm", "--seed", "zz"], "invalid seed 'zz'"),
        (&["swarm", "--seeds", "0"], "--seeds must be between 1 and 1000000"),
    ];
    for (args, message) in cases {
        let output = mailchaos(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
}

/// Seeds whose runs once failed on the clean stack: each a false alarm of a checker, a world
/// fault or a stack bug that swarm found and that is fixed (see the commit log).
#[test]
fn swarm_seeds_that_once_failed_on_the_clean_stack_pass() {
    let fixed = [
        ("0x13", "A8: a pipelined 503 after a refused MAIL read as a permanent refusal"),
        ("0x17", "A22: a port-closed fault's end reopened the port an outage kept closed"),
        ("0x92", "A27: a recipient refused for its invalid parameter counted as the copy's own"),
        ("0x84", "A19/A23: recovery listed a message it could not read at 0 octets"),
        ("0x161", "A13: a queue entry the MX crashed before answering for"),
        ("0x16e", "A17: a crash during the recovery after a restore forgot the restore"),
        ("0x455", "A8: a refused BDAT left its transaction open; the next MAIL was nested"),
        ("0x1fc", "A13: a seen 2xx its failed LMTP transaction never recorded"),
        ("0x6b6", "A20: recovery took an EIO on listing new/ for an empty mailbox"),
        ("0x155", "A13: a copy made after the MX's timeout, then a store crash that forgot it"),
        ("0x201", "A13: a copy a restore from backup erased, delivered again"),
        ("0x68d", "A2/L1: a failover of an honest device undid an unsynced rename the MX then acknowledged"),
        ("0x1d1", "A15: the run ended between the store's expunge and the client's record of its QUIT"),
    ];
    for (seed, was) in fixed {
        let output = mailchaos(&["swarm", "--seed", seed, "--profiles", "honest"]);
        assert_eq!(output.status.code(), Some(0), "seed {seed} ({was}):\n{}", stdout(&output));
    }
}
