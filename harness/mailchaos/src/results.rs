//! A sweep's results as data: one `RunRecord` per (scenario, seed) pair and the `Tally` that
//! sums them into the outcome and summary lines. `run` prints from these, and `merge` prints
//! the same lines from the records of shards read back from `--json` files, so a merged
//! summary is the unsharded one by construction, not by a second formatter kept in step.

use crate::report::PolicyOutcomes;
use crate::shared::say_line;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Violations kept per run: the run line already names every invariant violated, and a run
/// with a runaway checker must not make a JSON line of gigabytes.
pub const MAX_VIOLATIONS_KEPT: usize = 100;

/// Violations printed under a failing run line.
const VIOLATIONS_PRINTED: usize = 3;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViolationRecord {
    pub invariant: String,
    pub subject: String,
    pub explanation: String,
}

/// One judged run, as `--json` writes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The pair's place in the unsharded order, which `merge` restores.
    pub index: usize,
    pub scenario: String,
    /// The scenario file or `embedded:<suite>/<name>`.
    pub origin: String,
    pub seed: String,
    /// `ok` or `violation`.
    pub verdict: String,
    /// The invariants violated, each once, in order.
    pub violated: Vec<String>,
    /// How many violations the run had (`violations` keeps at most MAX_VIOLATIONS_KEPT).
    pub violation_count: usize,
    pub violations: Vec<ViolationRecord>,
    pub digest: String,
    /// The command that replays this run exactly.
    pub repro: String,
    /// The run line as `run` prints it.
    pub line: String,
    /// Whether a fault of its plan never fired.
    pub unfired_faults: bool,
    pub outcomes: BTreeMap<String, PolicyOutcomes>,
}

impl RunRecord {
    pub fn failed(&self) -> bool {
        self.violation_count > 0
    }

    /// What `run` prints for it: the run line, and for a failure its first violations and
    /// the repro line.
    pub fn print(&self) {
        say_line(&self.line);
        if !self.failed() {
            return;
        }
        for violation in self.violations.iter().take(VIOLATIONS_PRINTED) {
            say_line(&format!("  {} {}: {}", violation.invariant, violation.subject, violation.explanation));
        }
        say_line(&format!("repro: {}", self.repro));
    }
}

/// The violations of a run as records, at most MAX_VIOLATIONS_KEPT.
pub fn violation_records(violations: &[check::Violation]) -> Vec<ViolationRecord> {
    let kept = violations.iter().take(MAX_VIOLATIONS_KEPT);
    kept.map(|violation| ViolationRecord { invariant: violation.invariant.to_string(), subject: violation.subject.clone(), explanation: violation.explanation.clone() }).collect()
}

/// Outcomes, counts and the invariants violated, summed over runs in the unsharded order.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Tally {
    pub runs: usize,
    pub failed: usize,
    pub unfired: usize,
    /// Per invariant, runs that violated it, in the order of first violation.
    pub violated: Vec<(String, usize)>,
    pub outcomes: BTreeMap<String, PolicyOutcomes>,
}

impl Tally {
    pub fn add(&mut self, record: &RunRecord) {
        self.runs += 1;
        self.unfired += usize::from(record.unfired_faults);
        for (policy, row) in &record.outcomes {
            self.outcomes.entry(policy.clone()).or_default().add(row);
        }
        if !record.failed() {
            return;
        }
        self.failed += 1;
        for name in &record.violated {
            match self.violated.iter_mut().find(|(known, _)| known == name) {
                Some((_, count)) => *count += 1,
                None => self.violated.push((name.clone(), 1)),
            }
        }
    }

    /// The outcome lines and the summary line. `seconds` is wall time, for the rate only.
    pub fn print(&self, seconds: f64, shard: Option<&str>) {
        for (policy, row) in &self.outcomes {
            say_line(&format!("outcomes: policy={policy} {}", row.render()));
        }
        let listing: Vec<String> = self.violated.iter().map(|(name, count)| format!("{name}:{count}")).collect();
        let shard = shard.map(|label| format!(" shard={label}")).unwrap_or_default();
        say_line(&format!(
            "summary: runs={} ok={} violation={} violated=[{}] runs_with_unfired_faults={}{shard} wall={seconds:.1}s runs_per_s={:.2}",
            self.runs,
            self.runs - self.failed,
            self.failed,
            listing.join(" "),
            self.unfired,
            self.runs as f64 / seconds.max(1e-9)
        ));
    }
}
