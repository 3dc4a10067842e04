//! One short history, pinned: any change to what the stack does or records shows up here.

use mailchaos::cli::judge;
use sim::scenario::{self, Loaded};
use sim::seed::Seed;
use stack::Defects;
use std::path::PathBuf;

const TINY: &str = r#"
description = "one provider, one message to two mailboxes, one client"
tick_ms = 1000
horizon_s = 600
chaos_s = 1
[mx]
domains = ["libero.test"]
users = ["anna", "bruno"]
[[provider]]
name = "gmail"
policy = "postfix"
time_scale = 0.01
[workload]
messages = 1
spread_s = 10
max_rcpts = 2
[clients]
poll_interval_s = 60
"#;

#[test]
fn a_tiny_run_has_a_stable_history() {
    let loaded = Loaded { path: PathBuf::from("tiny.toml"), scenario: scenario::parse("tiny.toml", TINY).unwrap() };
    let judged = judge(&loaded, Seed(7), &Defects::none());
    assert!(judged.violations.is_empty(), "{:?}", judged.violations);
    insta::assert_snapshot!(judged.output.history.render());
}
