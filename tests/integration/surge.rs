//! The surge after recovery, at a tenth of `scenarios/surge/reintegration-20k.toml` so that it
//! fits the test run (the full one: `cargo xtask surge`).

use mailchaos::cli::judge;
use sim::scenario::{self, Loaded};
use sim::seed::Seed;
use stack::{Defect, Defects};
use std::path::{Path, PathBuf};

fn small_surge() -> Loaded {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios/surge/reintegration-20k.toml");
    let text = std::fs::read_to_string(&path).unwrap().replace("messages = 5000", "messages = 500").replace("max_queue_files = 4000", "max_queue_files = 400");
    Loaded { path: PathBuf::from("surge-2k.toml"), scenario: scenario::parse("surge-2k.toml", &text).unwrap() }
}

#[test]
fn the_mx_pushes_back_with_4xx_and_loses_nothing() {
    let judged = judge(&small_surge(), Seed(1), &Defects::none());
    assert!(judged.violations.is_empty(), "{:?}", &judged.violations[..judged.violations.len().min(3)]);
    let records = &judged.output.history.records;
    let pushed_back = records.iter().filter(|r| matches!(&r.event, history::Event::MxRefusal { reply, .. } if reply.starts_with("452 4.3.1") || reply.starts_with("421 4.7.0"))).count();
    assert!(pushed_back > 0, "the surge should have made the MX push back");
    assert!(judged.output.drained_at_ms.is_some());
}

#[test]
fn accepting_beyond_capacity_is_caught() {
    let judged = judge(&small_surge(), Seed(1), &Defects::of(&[Defect::AcceptBeyondCapacity]));
    let fired: std::collections::BTreeSet<&str> = judged.violations.iter().map(|v| v.invariant).collect();
    assert!(fired.contains("A21") && fired.contains("A2"), "{fired:?}");
}

/// 400 clients in lockstep reconnect at once after a store stall, against 50 POP3 sessions: many
/// are refused, and still every client ends up with every message of its mailbox once.
#[test]
fn a_pop3_reconnection_storm_loses_and_repeats_nothing() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios/surge/pop3-reconnect-storm.toml");
    let judged = judge(&scenario::load(&path).unwrap(), Seed(1), &Defects::none());
    assert!(judged.violations.is_empty(), "{:?}", &judged.violations[..judged.violations.len().min(3)]);
    let refused = judged
        .output
        .history
        .records
        .iter()
        .filter(|r| matches!(&r.event, history::Event::ClientFailure { error, .. } if error.contains("too many connections")))
        .count();
    assert!(refused > 100, "the scenario should produce a reconnection storm, saw {refused} refusals");
}
