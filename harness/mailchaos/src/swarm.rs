//! `mailchaos swarm`: each seed draws a whole scenario (`sim::swarm`), runs it and judges it;
//! the summary says, per switch of the plan, how often it was on, how often it took effect and
//! how often a violation came with it, and per invariant how often it had anything to judge.

use crate::bad_input::BadInput;
use crate::shared::{parse_defects, program, say_line};
use crate::report;
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
    pub seeds: Vec<Seed>,
    pub profiles: ProfileSet,
    pub defect_names: &'a [String],
    /// `K/N` when the sweep is one shard of a larger one (the summary says so).
    pub shard: Option<String>,
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

/// The sweep: a run line per seed, the violations and repro lines of failing runs, then the
/// summary and the coverage table. Ok(true) when every run kept every invariant.
pub fn sweep(request: &Request) -> Result<bool, BadInput> {
    let defects = parse_defects(request.defect_names)?;
    // Wall time is measured only for the rate in the summary; it never reaches a simulation.
    let started = std::time::Instant::now();
    let mut coverage = Coverage::default();
    let (mut failed, mut undrained) = (0usize, 0usize);
    for &seed in &request.seeds {
        let run = run_seed(seed, request.profiles, &defects)?;
        say_line(&run_line(seed, &run));
        coverage.add(&run);
        undrained += usize::from(run.output.drained_at_ms.is_none());
        if run.violations.is_empty() {
            continue;
        }
        failed += 1;
        for violation in run.violations.iter().take(3) {
            say_line(&format!("  {} {}: {}", violation.invariant, violation.subject, violation.explanation));
        }
        for line in repro_lines(seed, request) {
            say_line(&line);
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let total = request.seeds.len();
    say_line(&format!(
        "summary: runs={total} ok={} violation={failed} violated=[{}] undrained={undrained} profiles={}{} wall={seconds:.1}s runs_per_s={:.2}",
        total - failed,
        coverage.violated_listing(),
        request.profiles.name(),
        request.shard.as_ref().map(|label| format!(" shard={label}")).unwrap_or_default(),
        total as f64 / seconds.max(1e-9)
    ));
    for line in coverage.table() {
        say_line(&line);
    }
    Ok(failed == 0)
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
    fn add(&mut self, run: &SwarmRun) {
        let violating = !run.violations.is_empty();
        for feature in &run.generated.features {
            let Some(index) = FEATURES.iter().position(|(name, _)| *name == feature.name) else { continue };
            let row = &mut self.features[index];
            let took_effect = fired(feature, run);
            row.enabled += 1;
            row.fired += usize::from(took_effect);
            row.violations += usize::from(took_effect && violating);
        }
        if self.invariants.is_empty() {
            self.invariants = vec![Judged::default(); check::INVARIANTS.len()];
        }
        let judgeable = judgeable(&run.output);
        let violated = report::violated(&run.violations);
        for (index, (invariant, _)) in check::INVARIANTS.iter().enumerate() {
            self.invariants[index].judgeable += usize::from(judgeable.contains(invariant));
            self.invariants[index].violated += usize::from(violated.contains(invariant));
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
            records.iter().any(|record| record.host == provider && matches!(record.event, Event::SmtpAttempt { .. }))
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
        Event::MxDataEnd { reply, .. } if reply.starts_with('2') => &["A1", "A2"],
        // A refused transaction must not be delivered.
        Event::MxDataEnd { .. } | Event::MxRefusal { .. } => &["A4", "A21"],
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
        Event::Submit { invalid_param: Some(_), .. } => &["A26", "A28"],
        Event::Submit { from, .. } if from.is_empty() => &["A9", "A26"],
        Event::Submit { .. } => &["A26"],
        Event::DsnSent { .. } => &["A10", "A11"],
        // A DSN the MX returned, as the sender's provider received it.
        Event::MailReceived { .. } => &["A9", "A10", "A11"],
        Event::StoreDelivered { .. } | Event::StoreRetryRecognised { .. } => &["A13", "A15", "A17"],
        Event::StoreRecovered { restored: true, .. } => &["A18"],
        Event::ClientListing { .. } => &["A19"],
        Event::ClientFetched { .. } => &["A20", "A23", "A27"],
        Event::Outage { down: true } => &["A22"],
        _ => &[],
    }
}
