//! A sweep's results as data: one `RunRecord` per (scenario, seed) pair and the `Tally` that
//! sums them into the outcome and summary lines. `run` prints from these, and `merge` prints
//! the same lines from the records of shards read back from `--json` files, so a merged
//! summary is the unsharded one by construction, not by a second formatter kept in step.

use crate::report::PolicyOutcomes;
use crate::shared::say_line;
use crate::bad_input::BadInput;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;

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
    #[serde(rename = "violation")]
    pub failed: usize,
    #[serde(rename = "runs_with_unfired_faults")]
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

/// What a shard's sweep was: its last line in `--json`, which `merge` checks the shards against.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// `K/N`; `1/1` for an unsharded run.
    pub shard: String,
    /// The pairs of the whole (unsharded) sweep: what the merged shards must cover.
    pub pairs: usize,
    /// Wall time of the shard, for the rate only.
    pub wall_s: f64,
    #[serde(flatten)]
    pub tally: Tally,
}

/// One line of a `--json` file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Line {
    Run(RunRecord),
    Summary(Summary),
}

/// A `--json` file being written: created before the first run, so a bad path costs nothing.
pub struct JsonWriter {
    name: String,
    out: std::io::BufWriter<std::fs::File>,
}

impl JsonWriter {
    pub fn create(path: &Path) -> Result<JsonWriter, BadInput> {
        let name = path.display().to_string();
        let file = std::fs::File::create(path).map_err(|error| BadInput(format!("{name}: cannot create the --json file: {error}")))?;
        Ok(JsonWriter { name, out: std::io::BufWriter::new(file) })
    }

    pub fn write<T: Serialize>(&mut self, line: &T) -> Result<(), BadInput> {
        let text = serde_json::to_string(line).map_err(|error| BadInput(format!("{}: cannot encode a result: {error}", self.name)))?;
        writeln!(self.out, "{text}").map_err(|error| BadInput(format!("{}: cannot write: {error}", self.name)))
    }

    pub fn finish(mut self) -> Result<(), BadInput> {
        self.out.flush().map_err(|error| BadInput(format!("{}: cannot write: {error}", self.name)))
    }
}

/// A `--junit` file: created before the first run (a bad path costs nothing), written at the end.
pub struct JunitWriter {
    name: String,
    file: std::fs::File,
}

impl JunitWriter {
    pub fn create(path: &Path) -> Result<JunitWriter, BadInput> {
        let name = path.display().to_string();
        let file = std::fs::File::create(path).map_err(|error| BadInput(format!("{name}: cannot create the --junit file: {error}")))?;
        Ok(JunitWriter { name, file })
    }

    /// One testsuite per scenario (in the order of their first run), one testcase per run:
    /// classname the scenario, name the seed; a failing run's violations and repro line in
    /// its `<failure>`.
    pub fn finish(self, records: &[RunRecord]) -> Result<(), BadInput> {
        let mut suites: Vec<quick_junit::TestSuite> = Vec::new();
        for record in records {
            if suites.last().is_none_or(|suite| suite.name.as_str() != record.scenario) {
                suites.push(quick_junit::TestSuite::new(record.scenario.as_str()));
            }
            if let Some(suite) = suites.last_mut() {
                suite.add_test_case(test_case(record));
            }
        }
        let mut report = quick_junit::Report::new("mailchaos");
        report.add_test_suites(suites);
        let out = std::io::BufWriter::new(self.file);
        report.serialize(out).map_err(|error| BadInput(format!("{}: cannot write: {error}", self.name)))
    }
}

fn test_case(record: &RunRecord) -> quick_junit::TestCase {
    let status = match record.failed() {
        false => quick_junit::TestCaseStatus::success(),
        true => {
            let mut status = quick_junit::TestCaseStatus::non_success(quick_junit::NonSuccessKind::Failure);
            let mut text: String = record.violations.iter().map(|violation| format!("{} {}: {}\n", violation.invariant, violation.subject, violation.explanation)).collect();
            if record.violation_count > record.violations.len() {
                text += &format!("… and {} more violations\n", record.violation_count - record.violations.len());
            }
            text += &format!("repro: {}\n", record.repro);
            status.set_message(format!("violation({}) repro: {}", record.violated.join(","), record.repro));
            status.set_type(record.violated.join(","));
            status.set_description(text);
            status
        }
    };
    let mut case = quick_junit::TestCase::new(record.seed.as_str(), status);
    case.set_classname(record.scenario.as_str());
    case.set_system_out(record.line.as_str());
    case
}
