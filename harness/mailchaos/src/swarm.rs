//! `mailchaos swarm`: each seed draws a whole scenario (`sim::swarm`), runs it and judges it;
//! the summary says, per switch of the plan, how often it was on, how often it took effect and
//! how often a violation came with it, and per invariant how often it had anything to judge.
//! A judged seed is a `SwarmRecord`: what `swarm` prints, `--json` writes, a worker of `--jobs`
//! sends and `merge` reads back; the `SwarmTally` of records prints the summary and the
//! coverage table, so a merged sweep's table is the unsharded one by construction.

use crate::bad_input::BadInput;
use crate::jobs;
use crate::progress::Progress;
use crate::results::{self, JsonWriter, ViolationRecord};
use crate::shared::{parse_defects, program, say_line};
use crate::report;
use serde::{Deserialize, Serialize};
use std::ffi::OsString;
use check::Violation;
use history::{Event, Record};
use sim::scenario::Scenario;
use sim::seed::Seed;
use sim::swarm::{self, Generated, ProfileSet, FEATURES};
use sim::world::{self, RunOptions, RunOutput};
use stack::Defects;
use std::collections::BTreeSet;
use std::path::Path;

/// What the command line asked for.
pub struct Request<'a> {
    /// The seeds of this shard, each with its number in the whole sweep.
    pub seeds: Vec<(usize, Seed)>,
    /// Seeds in the whole (unsharded) sweep.
    pub pairs: usize,
    pub profiles: ProfileSet,
    pub defect_names: &'a [String],
    /// `K/N` when the sweep is one shard of a larger one (the summary says so).
    pub shard: Option<String>,
    /// `--jobs`, checked; and this process's place when it is a worker of one.
    pub jobs: u64,
    pub worker: Option<jobs::Worker>,
    /// The command line a worker runs (command name first; `--worker` is appended).
    pub worker_args: Vec<OsString>,
    pub json: Option<&'a Path>,
    pub quiet: bool,
}

/// One seed's generated scenario, run and judged.
pub struct SwarmRun {
    pub generated: Generated,
    pub scenario: Scenario,
    pub output: RunOutput,
    pub violations: Vec<Violation>,
}

/// Generates, runs and judges one seed. The generator is ours: a scenario it draws that the
/// validator refuses is a generator bug, said as such (the tests keep it from happening).
pub fn run_seed(seed: Seed, profiles: ProfileSet, defects: &Defects) -> Result<SwarmRun, BadInput> {
    let generated = swarm::plan(seed, profiles);
    let scenario = generated.scenario().map_err(|error| BadInput(format!("swarm generator bug at seed {seed}: the scenario it drew is invalid: {error}")))?;
    let output = world::run_with(&scenario, seed, defects, &RunOptions::default());
    let violations = check::check_all(&output);
    Ok(SwarmRun { generated, scenario, output, violations })
}

/// `mailchaos swarm --seed S --emit-scenario FILE`: the generated scenario as a file.
pub fn emit(seed: Seed, profiles: ProfileSet, file: &Path) -> Result<bool, BadInput> {
    let generated = swarm::plan(seed, profiles);
    std::fs::write(file, &generated.text).map_err(|error| BadInput(format!("{}: cannot write the scenario: {error}", file.display())))?;
    say_line(&format!("wrote {} (seed={seed} profile={} plan={})", file.display(), generated.profile, generated.plan()));
    say_line(&format!("replay: {} run {} --seed {seed}", program(), file.display()));
    Ok(true)
}

/// One judged seed, as `--json` writes it and a worker of `--jobs` sends it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SwarmRecord {
    /// The seed's number in the whole (unsharded) sweep, which `merge` restores.
    pub index: usize,
    pub seed: String,
    /// The persistence profile the seed drew, and the switches its plan turned on.
    pub profile: String,
    pub plan: String,
    /// `ok` or `violation`.
    pub verdict: String,
    pub violated: Vec<String>,
    pub violation_count: usize,
    pub violations: Vec<ViolationRecord>,
    pub digest: String,
    /// The lines that replay it (the sweep of this seed; the scenario emitted as a file).
    pub repro: Vec<String>,
    /// The run line as `swarm` prints it.
    pub line: String,
    pub drained: bool,
    /// Each switch of the plan, with whether it took effect (the coverage table's rows).
    pub switches: Vec<(String, bool)>,
    /// The invariants that had anything to judge in the run.
    pub judgeable: Vec<String>,
}

impl SwarmRecord {
    pub fn of(index: usize, seed: Seed, run: &SwarmRun, repro: Vec<String>) -> SwarmRecord {
        let violated: Vec<String> = report::violated(&run.violations).into_iter().map(String::from).collect();
        let switches = run.generated.features.iter().map(|feature| (feature.name.to_string(), fired(feature, run))).collect();
        SwarmRecord {
            index,
            seed: seed.to_string(),
            profile: run.generated.profile.to_string(),
            plan: run.generated.plan(),
            verdict: if violated.is_empty() { "ok" } else { "violation" }.into(),
            violated,
            violation_count: run.violations.len(),
            violations: results::violation_records(&run.violations),
            digest: run.output.history.digest(),
            repro,
            line: run_line(seed, run),
            drained: run.output.drained_at_ms.is_some(),
            switches,
            judgeable: judgeable(&run.output).into_iter().map(String::from).collect(),
        }
    }

    pub fn failed(&self) -> bool {
        self.violation_count > 0
    }

    /// What `swarm` prints for it: the run line, and for a failure its first violations and
    /// the repro lines.
    pub fn print(&self) {
        say_line(&self.line);
        if !self.failed() {
            return;
        }
        for violation in self.violations.iter().take(3) {
            say_line(&format!("  {} {}: {}", violation.invariant, violation.subject, violation.explanation));
        }
        self.repro.iter().for_each(|line| say_line(line));
    }

    /// The record as a `run` record, for a JUnit report (`merge --junit` of swarm shards):
    /// classname `swarm`, name the seed.
    pub fn as_run_record(&self) -> results::RunRecord {
        results::RunRecord {
            index: self.index,
            scenario: "swarm".into(),
            origin: format!("swarm seed {} ({})", self.seed, self.profile),
            seed: self.seed.clone(),
            verdict: self.verdict.clone(),
            violated: self.violated.clone(),
            violation_count: self.violation_count,
            violations: self.violations.clone(),
            digest: self.digest.clone(),
            repro: self.repro.first().map(|line| line.trim_start_matches("repro: ").to_string()).unwrap_or_default(),
            line: self.line.clone(),
            unfired_faults: false,
            outcomes: Default::default(),
        }
    }
}

/// The last line of a swarm sweep's `--json` file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SwarmSummary {
    /// `K/N`; `1/1` for an unsharded sweep.
    pub shard: String,
    /// Seeds in the whole sweep: what the merged shards must cover.
    pub pairs: usize,
    /// The profile set the scenarios were drawn from.
    pub profiles: String,
    pub runs: usize,
    /// Wall time of the shard, for the rate only.
    pub wall_s: f64,
}

/// One line of a swarm sweep's `--json` file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SwarmLine {
    Swarm(SwarmRecord),
    SwarmSummary(SwarmSummary),
}

/// Swarm records summed in sweep order: the summary line and the coverage table.
#[derive(Default)]
pub struct SwarmTally {
    runs: usize,
    failed: usize,
    undrained: usize,
    coverage: Coverage,
}

impl SwarmTally {
    pub fn add(&mut self, record: &SwarmRecord) {
        self.runs += 1;
        self.failed += usize::from(record.failed());
        self.undrained += usize::from(!record.drained);
        self.coverage.add(record);
    }

    pub fn failed(&self) -> usize {
        self.failed
    }

    /// The summary and the coverage table. `seconds` is wall time, for the rate only.
    pub fn print(&self, profiles: &str, shard: Option<&str>, seconds: f64) {
        say_line(&format!(
            "summary: runs={} ok={} violation={} violated=[{}] undrained={} profiles={profiles}{} wall={seconds:.1}s runs_per_s={:.2}",
            self.runs,
            self.runs - self.failed,
            self.failed,
            self.coverage.violated_listing(),
            self.undrained,
            shard.map(|label| format!(" shard={label}")).unwrap_or_default(),
            self.runs as f64 / seconds.max(1e-9)
        ));
        for line in self.coverage.table() {
            say_line(&line);
        }
    }
}

/// The sweep: a run line per seed, the violations and repro lines of failing runs, then the
/// summary and the coverage table. Ok(true) when every run kept every invariant.
pub fn sweep(request: &Request) -> Result<bool, BadInput> {
    let defects = parse_defects(request.defect_names)?;
    let record = |n: usize| {
        let (index, seed) = request.seeds[n];
        let run = run_seed(seed, request.profiles, &defects)?;
        Ok(SwarmRecord::of(index, seed, &run, repro_lines(seed, request)))
    };
    if let Some(worker) = request.worker {
        return worker.serve(request.seeds.len(), |n| record(n).map(|record| {
            let failed = record.failed();
            (record, failed)
        }));
    }
    let mut json = request.json.map(JsonWriter::create).transpose()?;
    // Wall time is measured only for the rate in the summary; it never reaches a simulation.
    let started = std::time::Instant::now();
    let mut tally = SwarmTally::default();
    let mut progress = Progress::start(request.seeds.len(), request.quiet, "failed");
    jobs::in_order(request.seeds.len(), request.jobs, &request.worker_args, &record, |n, record: SwarmRecord| {
        if record.index != request.seeds[n].0 {
            return Err(BadInput(format!("a worker sent seed number {} where {} was due", record.index, request.seeds[n].0)));
        }
        record.print();
        progress.advance(record.failed());
        tally.add(&record);
        json.as_mut().map(|json| json.write(&SwarmLine::Swarm(record))).transpose()?;
        Ok(())
    })?;
    drop(progress);
    let seconds = started.elapsed().as_secs_f64();
    tally.print(request.profiles.name(), request.shard.as_deref(), seconds);
    if let Some(mut json) = json {
        let shard = request.shard.clone().unwrap_or_else(|| "1/1".into());
        json.write(&SwarmLine::SwarmSummary(SwarmSummary { shard, pairs: request.pairs, profiles: request.profiles.name().into(), runs: tally.runs, wall_s: seconds }))?;
        json.finish()?;
    }
    Ok(tally.failed == 0)
}

fn run_line(seed: Seed, run: &SwarmRun) -> String {
    let counts = report::counts(&run.output.history.records);
    let verdict = match run.violations.is_empty() {
        true => "ok".to_string(),
        false => format!("violation({})", report::violated(&run.violations).join(",")),
    };
    let drained = run.output.drained_at_ms.map_or_else(|| "no".to_string(), |at| format!("{}s", at / 1000));
    format!(
        "swarm seed={seed} profile={} plan={} verdict={verdict} accepted={} delivered={} bounced={} deferred={} drained={drained} horizon_s={} digest={}",
        run.generated.profile,
        run.generated.plan(),
        counts.accepted,
        counts.delivered,
        counts.bounced,
        counts.deferred,
        run.scenario.horizon_s.get_ref(),
        run.output.history.digest()
    )
}

/// Two ways to replay a failing seed: the sweep itself, and the scenario as a file (for
/// `repro`, which prints the history and explains each violation).
fn repro_lines(seed: Seed, request: &Request) -> Vec<String> {
    let defects: String = request.defect_names.iter().map(|name| format!(" --defect {name}")).collect();
    let program = program();
    let profiles = request.profiles.name();
    let file = format!("swarm-{seed}.toml");
    vec![
        format!("repro: {program} swarm --seed {seed} --profiles {profiles}{defects}"),
        format!("   or: {program} swarm --seed {seed} --profiles {profiles} --emit-scenario {file} && {program} repro {file} --seed {seed}{defects}"),
    ]
}

/// One row of the coverage table.
#[derive(Clone, Copy, Default)]
struct Row {
    /// Runs whose plan switched it on.
    enabled: usize,
    /// Runs in which it took effect (a fault: its fired count; a setting: see `fired`).
    fired: usize,
    /// Violating runs in which it was on and took effect.
    violations: usize,
}

/// Per invariant: runs with something to judge, and runs that violated it.
#[derive(Clone, Copy, Default)]
struct Judged {
    judgeable: usize,
    violated: usize,
}

#[derive(Default)]
struct Coverage {
    features: [Row; FEATURES.len()],
    invariants: Vec<Judged>,
}

impl Coverage {
    fn add(&mut self, record: &SwarmRecord) {
        let violating = record.failed();
        for (name, took_effect) in &record.switches {
            let Some(index) = FEATURES.iter().position(|(known, _)| known == name) else { continue };
            let row = &mut self.features[index];
            row.enabled += 1;
            row.fired += usize::from(*took_effect);
            row.violations += usize::from(*took_effect && violating);
        }
        if self.invariants.is_empty() {
            self.invariants = vec![Judged::default(); check::INVARIANTS.len()];
        }
        for (index, (invariant, _)) in check::INVARIANTS.iter().enumerate() {
            self.invariants[index].judgeable += usize::from(record.judgeable.iter().any(|name| name == invariant));
            self.invariants[index].violated += usize::from(record.violated.iter().any(|name| name == invariant));
        }
    }

    fn violated_listing(&self) -> String {
        let cells = check::INVARIANTS.iter().zip(&self.invariants).filter(|(_, judged)| judged.violated > 0);
        cells.map(|((invariant, _), judged)| format!("{invariant}:{}", judged.violated)).collect::<Vec<_>>().join(" ")
    }

    fn table(&self) -> Vec<String> {
        let mut lines = vec![format!("coverage: {:<12} {:<18} {:>7} {:>7} {:>10}", "switch", "fault kind", "enabled", "fired", "violations")];
        for ((name, kind), row) in FEATURES.iter().zip(&self.features) {
            let never = if row.enabled > 0 && row.fired == 0 { "  <- never fired" } else { "" };
            lines.push(format!("coverage: {name:<12} {:<18} {:>7} {:>7} {:>10}{never}", kind.unwrap_or("(setting)"), row.enabled, row.fired, row.violations));
        }
        lines.push(format!("coverage: {:<31} {:>7} {:>7}", "invariant", "judged", "violated"));
        for ((invariant, name), judged) in check::INVARIANTS.iter().zip(&self.invariants) {
            lines.push(format!("coverage: {:<31} {:>7} {:>7}", format!("{invariant} {name}"), judged.judgeable, judged.violated));
        }
        lines
    }
}

/// Whether a switch took effect in a run. A fault: the world counted it firing. `overload`:
/// the MX refused for its limits (421 4.7.0 for sessions, 452 4.3.1 "try again later" for the
/// queue). `slowlink`: the provider at its end tried to send at all.
fn fired(feature: &swarm::Feature, run: &SwarmRun) -> bool {
    if let Some(index) = feature.fault {
        return run.output.faults.get(index).is_some_and(|(_, count)| *count > 0);
    }
    let records = &run.output.history.records;
    match feature.name {
        "overload" => records.iter().any(|record| matches!(&record.event, Event::MxRefusal { reply, .. } if reply.contains("4.7.0") || (reply.starts_with("452") && reply.contains("try again later")))),
        "slowlink" => {
            let provider = run.scenario.links.first().and_then(|link| link.hosts.get_ref().first().cloned()).unwrap_or_default();
            records.iter().any(|record| *record.host == *provider && matches!(record.event, Event::SmtpAttempt { .. }))
        }
        _ => false,
    }
}

/// The invariants that had something to judge in a run: the events each one's checker reads
/// were present. A judge with nothing before it passes vacuously; this tells those runs apart.
/// The measure is deliberately coarse (presence, not amount) and errs towards "judged".
fn judgeable(output: &RunOutput) -> BTreeSet<&'static str> {
    let mut set = BTreeSet::new();
    // L1 judges every run: the horizon or the drain comes.
    set.insert("L1");
    for record in &output.history.records {
        for invariant in judged_by(record) {
            set.insert(*invariant);
        }
    }
    set
}

/// What one record gives the checkers to judge.
fn judged_by(record: &Record) -> &'static [&'static str] {
    match &record.event {
        // An acknowledged message: it must have been durable (A1) and must arrive (A2).
        Event::MxDataEnd(end) if end.reply.starts_with('2') => &["A1", "A2"],
        // A refused transaction must not be delivered.
        Event::MxDataEnd(_) | Event::MxRefusal { .. } => &["A4", "A21"],
        Event::LmtpReply { .. } => &["A3", "A16"],
        // A transient failure: the sender must keep the mail (A5) and retry on time or give up
        // explicitly (A7); the MX must have answered 4xx for its infrastructure (A12).
        Event::SmtpReply { reply, .. } if reply.starts_with('4') => &["A5", "A7", "A12"],
        Event::SmtpFailure { .. } => &["A5", "A7", "A14"],
        Event::SmtpReply { reply, .. } if reply.starts_with('5') => &["A8"],
        Event::SmtpAttempt { attempt, .. } if *attempt > 1 => &["A6"],
        Event::LmtpAttempt { attempt, .. } if *attempt > 1 => &["A6"],
        // Submitted mail must be accepted when it conforms (A26) and refused when a parameter
        // is invalid (A28); a bounce (null sender) must never be bounced (A9).
        Event::Submit(submit) if submit.invalid_param.is_some() => &["A26", "A28"],
        Event::Submit(submit) if submit.from.is_empty() => &["A9", "A26"],
        Event::Submit(_) => &["A26"],
        Event::DsnSent(_) => &["A10", "A11"],
        // A DSN the MX returned, as the sender's provider received it.
        Event::MailReceived { .. } => &["A9", "A10", "A11"],
        Event::StoreDelivered { .. } | Event::StoreRetryRecognised { .. } => &["A13", "A15", "A17"],
        Event::StoreRecovered { restored: true, .. } => &["A18"],
        Event::ClientListing { .. } => &["A19"],
        Event::ClientFetched { .. } => &["A20", "A23", "A27"],
        Event::Outage { down: true } => &["A22"],
        Event::Cohort { online: false, .. } => &["A25"],
        _ => &[],
    }
}
