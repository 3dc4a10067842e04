//! `mailchaos what-if`: one outage scenario run under each operator answer (5xx-bounce,
//! 4xx-tempfail, closed-port) with the same seed, hence the same workload, and the runs joined
//! message by message from their recorded histories (`report::pair_accounts`, the one outcome
//! accounting). It prints a table per provider and per policy, what the 5xx answer cost against
//! each other answer, and the (message, recipient) pairs whose fate changed; it writes
//! `report.json`, `report.csv` and `report.html` (the three timelines side by side and the
//! tables, self-contained) into the output folder.
//!
//! Exit 0 when every answer's run kept every invariant except those the answer violates by
//! design (`by_design`: answering 5xx during a storage outage violates A12 and A22), 1
//! otherwise, 2 on bad input.

use crate::bad_input::BadInput;
use crate::report::{self, PairAccount, PolicyOutcomes};
use crate::source::{self, Source};
use check::Violation;
use serde::Serialize;
use sim::scenario::{FaultKind, Scenario, OUTAGE_ANSWERS};
use sim::seed::Seed;
use sim::world::{self, RunOptions, RunOutput};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Where the reports go without `-o`: a folder of the current directory.
pub const DEFAULT_DIR: &str = "what-if-out";

/// The invariants an answer violates on purpose. Answering 5xx while the storage is down turns
/// an infrastructure fault into a permanent refusal (A12) and bounces mail that the senders'
/// policies would have delivered after recovery (A22): what January 2023 did.
pub fn by_design(answer: &str) -> &'static [&'static str] {
    match answer {
        "5xx-bounce" => &["A12", "A22"],
        _ => &[],
    }
}

/// A short name of an answer for column names: `4xx`, `5xx`, `closed`.
fn short(answer: &str) -> &str {
    answer.split('-').next().unwrap_or(answer)
}

/// What the command line asks for.
pub struct Request<'a> {
    pub scenario: &'a Path,
    pub seed: Option<&'a str>,
    pub answers: &'a [String],
    /// Planted defects switched on in every run (see list-defects).
    pub defects: &'a [String],
    pub output: Option<&'a Path>,
}

/// One answer's run: its verdict and the accounts of its pairs.
pub struct AnswerRun {
    pub answer: String,
    pub output: RunOutput,
    pub violations: Vec<Violation>,
    pub accounts: BTreeMap<(String, String), PairAccount>,
}

impl AnswerRun {
    fn violated(&self) -> Vec<&'static str> {
        report::violated(&self.violations)
    }

    /// Only what the answer violates by design.
    fn kept(&self) -> bool {
        self.violated().iter().all(|invariant| by_design(&self.answer).contains(invariant))
    }

    fn verdict(&self) -> String {
        match self.violated() {
            names if names.is_empty() => "ok".into(),
            names => format!("violation({})", names.join(",")),
        }
    }
}

/// What became of a pair under one answer, in one word.
pub fn fate(account: &PairAccount) -> &'static str {
    let outcomes = &account.outcomes;
    if outcomes.duplicated > 0 {
        "duplicated"
    } else if account.first_copy_ms.is_some() {
        "delivered"
    } else if outcomes.bounced_5xx > 0 {
        "bounced-5xx"
    } else if outcomes.bounced_expiry > 0 {
        "bounced-expiry"
    } else if outcomes.returned > 0 {
        "returned-by-mx"
    } else if outcomes.lost_to_rollback + outcomes.damaged_reported > 0 {
        "lost-reported"
    } else if outcomes.lost > 0 {
        "lost"
    } else {
        "pending"
    }
}

fn reached_mailbox(fate: &str) -> bool {
    matches!(fate, "delivered" | "duplicated")
}

/// The numbers of one group of pairs (a provider or a policy) under one answer.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Row {
    pub answer: String,
    /// (message, recipient) pairs the workload submitted.
    pub pairs: usize,
    /// Pairs with a copy in the mailbox.
    pub delivered: usize,
    pub bounced_5xx: usize,
    pub bounced_expiry: usize,
    /// Delay notices (DSNs) the senders sent, per recipient.
    pub delay_notices: usize,
    pub lost: usize,
    pub duplicated: usize,
    /// Submission to the first copy in the mailbox, over the delivered pairs (nearest rank).
    pub delay_p50_ms: Option<u64>,
    pub delay_p90_ms: Option<u64>,
    pub delay_max_ms: Option<u64>,
    /// The whole outcome accounting of these pairs, as `run` and `repro` print it per policy.
    pub outcomes: PolicyOutcomes,
}

impl Row {
    fn of<'a>(answer: &str, accounts: impl Iterator<Item = &'a PairAccount>) -> Row {
        let mut row = Row { answer: answer.to_string(), ..Row::default() };
        let mut delays = Vec::new();
        for account in accounts {
            row.pairs += usize::from(account.submitted_ms.is_some());
            row.delivered += usize::from(account.first_copy_ms.is_some());
            row.outcomes.add(&account.outcomes);
            delays.extend(account.delay_ms());
        }
        row.bounced_5xx = row.outcomes.bounced_5xx;
        row.bounced_expiry = row.outcomes.bounced_expiry;
        row.delay_notices = row.outcomes.delay_notified;
        row.lost = row.outcomes.lost;
        row.duplicated = row.outcomes.duplicated;
        delays.sort_unstable();
        row.delay_p50_ms = percentile(&delays, 50);
        row.delay_p90_ms = percentile(&delays, 90);
        row.delay_max_ms = delays.last().copied();
        row
    }
}

/// The nearest-rank percentile of sorted values.
fn percentile(sorted: &[u64], percent: usize) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (percent * sorted.len()).div_ceil(100).max(1);
    sorted.get(rank - 1).copied()
}

/// A group of pairs (one provider, or one policy) across the answers.
#[derive(Clone, Debug, Serialize)]
pub struct Group {
    /// The provider's name, or the policy's for a policy group.
    pub name: String,
    /// The provider's policy (a policy group: its own name).
    pub policy: String,
    /// One row per answer, in the order the answers ran.
    pub answers: Vec<Row>,
    /// Per other answer X: pairs the 5xx answer bounced that X delivered, keyed
    /// `5xx_bounced_<X>_delivered` (`4xx`, `closed`). Empty without a 5xx-bounce run.
    pub costs: Vec<Cost>,
    /// Pairs whose fate differs between the answers.
    pub fate_changed: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct Cost {
    pub column: String,
    pub pairs: usize,
}

/// A pair whose fate differs between answers.
#[derive(Clone, Debug, Serialize)]
pub struct Changed {
    pub msg: String,
    pub rcpt: String,
    pub provider: String,
    pub policy: String,
    pub submitted_ms: Option<u64>,
    /// Per answer, in order: the fate and the delay to the mailbox.
    pub fates: Vec<ChangedFate>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ChangedFate {
    pub answer: String,
    pub fate: String,
    pub delay_ms: Option<u64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct RunSummary {
    pub answer: String,
    pub verdict: String,
    pub violated: Vec<String>,
    pub by_design: Vec<String>,
    /// Only what the answer violates by design.
    pub as_designed: bool,
    pub violations: usize,
    pub digest: String,
    pub ended_at_ms: u64,
}

/// Everything `report.json` holds; the table, the CSV and the HTML are views of it.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub scenario: String,
    pub origin: String,
    pub seed: String,
    /// Planted defects of every run (none: the clean stack).
    pub defects: Vec<String>,
    pub answers: Vec<String>,
    pub ok: bool,
    pub runs: Vec<RunSummary>,
    pub providers: Vec<Group>,
    pub policies: Vec<Group>,
    pub changed: Vec<Changed>,
}

/// The answers asked for, checked: known, each once. None: all three.
pub fn answers_of(asked: &[String]) -> Result<Vec<String>, BadInput> {
    if asked.is_empty() {
        return Ok(OUTAGE_ANSWERS.iter().map(|answer| answer.to_string()).collect());
    }
    let mut answers: Vec<String> = Vec::new();
    for answer in asked {
        if !OUTAGE_ANSWERS.contains(&answer.as_str()) {
            return Err(BadInput(format!("--answer '{}': unknown answer; expected one of: {}", input::clip(answer), OUTAGE_ANSWERS.join(", "))));
        }
        if answers.contains(answer) {
            return Err(BadInput(format!("--answer '{answer}' is given twice")));
        }
        answers.push(answer.clone());
    }
    Ok(answers)
}

/// The scenario with every outage answered `answer`; refused without an outage.
pub fn with_answer(source: &Source, answer: &str) -> Result<Scenario, BadInput> {
    let mut scenario = source.loaded.scenario.clone();
    let mut outages = 0;
    for fault in scenario.faults.iter_mut().filter(|fault| fault.kind == FaultKind::Outage) {
        let span = fault.answer.as_ref().map(|answer| answer.span()).unwrap_or(0..0);
        fault.answer = Some(toml::Spanned::new(span, answer.to_string()));
        outages += 1;
    }
    match outages {
        0 => Err(BadInput(format!("{}: no [[fault]] with kind = \"outage\": what-if replays an outage under each operator answer ({})", source.origin, OUTAGE_ANSWERS.join(", ")))),
        _ => Ok(scenario),
    }
}

/// The output folder, created, and proven writable before minutes of runs.
fn prepare_dir(dir: &Path) -> Result<(), BadInput> {
    if dir.exists() && !dir.is_dir() {
        return Err(BadInput(format!("{}: not a folder; -o names the folder the reports are written into", dir.display())));
    }
    std::fs::create_dir_all(dir).map_err(|error| BadInput(format!("{}: cannot create the output folder: {error}", dir.display())))?;
    let probe = dir.join(".what-if-probe");
    std::fs::write(&probe, b"").map_err(|error| BadInput(format!("{}: cannot write into the output folder: {error}", dir.display())))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// `mailchaos what-if`.
pub fn what_if(request: &Request) -> Result<bool, BadInput> {
    let source = source::one_of(request.scenario)?;
    let answers = answers_of(request.answers)?;
    let seed = match request.seed {
        Some(text) => Seed::parse(text).map_err(BadInput)?,
        None => Seed(1),
    };
    let defects = crate::shared::parse_defects(request.defects)?;
    let scenarios = answers.iter().map(|answer| with_answer(&source, answer)).collect::<Result<Vec<_>, _>>()?;
    let dir = request.output.map_or_else(|| PathBuf::from(DEFAULT_DIR), Path::to_path_buf);
    prepare_dir(&dir)?;
    let runs: Vec<AnswerRun> = answers
        .iter()
        .zip(&scenarios)
        .map(|(answer, scenario)| {
            let output = world::run_with(scenario, seed, &defects, &RunOptions::default());
            let violations = check::check_all(&output);
            let accounts = report::pair_accounts(&output.history.records);
            AnswerRun { answer: answer.clone(), output, violations, accounts }
        })
        .collect();
    let mut report = join(&source, seed, &runs);
    report.defects = request.defects.to_vec();
    let table = table(&report);
    let write = |name: &str, text: &str| std::fs::write(dir.join(name), text).map_err(|error| BadInput(format!("{}: cannot write: {error}", dir.join(name).display())));
    let json = serde_json::to_string_pretty(&report).map_err(|error| BadInput(error.to_string()))?;
    write("report.json", &(json + "\n"))?;
    write("report.csv", &csv(&report))?;
    write("report.html", &html(&report, &runs))?;
    for line in table.lines() {
        crate::shared::say_line(line);
    }
    crate::shared::say_line(&format!("wrote {0}/report.json, {0}/report.csv, {0}/report.html", dir.display()));
    Ok(report.ok)
}

/// The runs joined pair by pair.
pub fn join(source: &Source, seed: Seed, runs: &[AnswerRun]) -> Report {
    let keys: BTreeSet<&(String, String)> = runs.iter().flat_map(|run| run.accounts.keys()).collect();
    // Who sent a pair and when: the same in every run (the same workload), from the first run
    // that names it.
    let sender = |key: &(String, String)| runs.iter().find_map(|run| run.accounts.get(key).filter(|account| account.submitted_ms.is_some())).or_else(|| runs.iter().find_map(|run| run.accounts.get(key)));
    let empty = PairAccount::default();
    let mut changed = Vec::new();
    let mut fates_of: BTreeMap<&(String, String), Vec<&'static str>> = BTreeMap::new();
    for key in &keys {
        let fates: Vec<&'static str> = runs.iter().map(|run| fate(run.accounts.get(*key).unwrap_or(&empty))).collect();
        if fates.iter().any(|fate| *fate != fates[0]) {
            let account = sender(key).unwrap_or(&empty);
            changed.push(Changed {
                msg: key.0.clone(),
                rcpt: account.rcpt.clone(),
                provider: account.provider().to_string(),
                policy: account.policy.clone(),
                submitted_ms: account.submitted_ms,
                fates: runs
                    .iter()
                    .zip(&fates)
                    .map(|(run, fate)| ChangedFate { answer: run.answer.clone(), fate: fate.to_string(), delay_ms: run.accounts.get(*key).and_then(PairAccount::delay_ms) })
                    .collect(),
            });
        }
        fates_of.insert(*key, fates);
    }
    // Providers in the scenario's order (a message nobody submitted, if any, last as "?").
    let mut providers: Vec<(String, String)> = source.loaded.scenario.providers.iter().map(|provider| (provider.name.get_ref().clone(), provider.policy.get_ref().clone())).collect();
    for key in &keys {
        let account = sender(key).unwrap_or(&empty);
        if !providers.iter().any(|(name, _)| name == account.provider()) {
            providers.push((account.provider().to_string(), account.policy.clone()));
        }
    }
    let policies: BTreeSet<String> = providers.iter().map(|(_, policy)| policy.clone()).collect();
    let group = |name: &str, policy: &str, member: &dyn Fn(&PairAccount) -> bool| {
        let members: Vec<&(String, String)> = keys.iter().copied().filter(|key| member(sender(key).unwrap_or(&empty))).collect();
        let answers = runs.iter().map(|run| Row::of(&run.answer, members.iter().filter_map(|key| run.accounts.get(*key)))).collect();
        let bounced_at = runs.iter().position(|run| run.answer == "5xx-bounce");
        let costs = match bounced_at {
            None => Vec::new(),
            Some(at) => (0..runs.len())
                .filter(|&other| other != at)
                .map(|other| Cost {
                    column: format!("5xx_bounced_{}_delivered", short(&runs[other].answer)),
                    pairs: members.iter().filter(|key| fates_of[**key][at] == "bounced-5xx" && reached_mailbox(fates_of[**key][other])).count(),
                })
                .collect(),
        };
        let fate_changed = members.iter().filter(|key| fates_of[**key].iter().any(|fate| *fate != fates_of[**key][0])).count();
        Group { name: name.to_string(), policy: policy.to_string(), answers, costs, fate_changed }
    };
    let provider_groups = providers.iter().map(|(name, policy)| group(name, policy, &|account| account.provider() == name)).collect();
    let policy_groups = policies.iter().map(|policy| group(policy, policy, &|account| &account.policy == policy)).collect();
    let summaries: Vec<RunSummary> = runs
        .iter()
        .map(|run| RunSummary {
            answer: run.answer.clone(),
            verdict: run.verdict(),
            violated: run.violated().into_iter().map(String::from).collect(),
            by_design: by_design(&run.answer).iter().map(|name| name.to_string()).collect(),
            as_designed: run.kept(),
            violations: run.violations.len(),
            digest: run.output.history.digest(),
            ended_at_ms: run.output.ended_at_ms,
        })
        .collect();
    Report {
        scenario: source.loaded.scenario.name.clone(),
        origin: source.origin.clone(),
        seed: seed.to_string(),
        defects: Vec::new(),
        answers: runs.iter().map(|run| run.answer.clone()).collect(),
        ok: summaries.iter().all(|summary| summary.as_designed),
        runs: summaries,
        providers: provider_groups,
        policies: policy_groups,
        changed,
    }
}

/// A duration as a person reads it: `45s`, `12m05s`, `3h07m`, `2d04h`; `-` for none.
pub fn duration(ms: Option<u64>) -> String {
    let Some(ms) = ms else { return "-".into() };
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86_400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// Columns aligned: the first `text` columns to the left, numbers to the right.
fn aligned(header: &[String], rows: &[Vec<String>], text: usize) -> String {
    let mut widths: Vec<usize> = header.iter().map(|cell| cell.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let parts: Vec<String> = cells.iter().zip(&widths).enumerate().map(|(column, (cell, width))| if column < text { format!("{cell:<width$}") } else { format!("{cell:>width$}") }).collect();
        parts.join("  ").trim_end().to_string() + "\n"
    };
    let mut out = line(header);
    rows.iter().for_each(|row| out += &line(row));
    out
}

/// The column names of the outcome tables (after the group's own columns).
pub const ROW_COLUMNS: &[&str] = &["answer", "pairs", "delivered", "bounced_5xx", "bounced_expiry", "delay_notices", "lost", "duplicated", "delay_p50", "delay_p90", "delay_max"];

fn row_cells(row: &Row) -> Vec<String> {
    vec![
        row.answer.clone(),
        row.pairs.to_string(),
        row.delivered.to_string(),
        row.bounced_5xx.to_string(),
        row.bounced_expiry.to_string(),
        row.delay_notices.to_string(),
        row.lost.to_string(),
        row.duplicated.to_string(),
        duration(row.delay_p50_ms),
        duration(row.delay_p90_ms),
        duration(row.delay_max_ms),
    ]
}

fn outcome_table(first: &[&str], groups: &[Group], cells: impl Fn(&Group) -> Vec<String>) -> String {
    let header: Vec<String> = first.iter().chain(ROW_COLUMNS).map(|name| name.to_string()).collect();
    let rows: Vec<Vec<String>> = groups.iter().flat_map(|group| group.answers.iter().map(|row| cells(group).into_iter().chain(row_cells(row)).collect()).collect::<Vec<_>>()).collect();
    aligned(&header, &rows, first.len() + 1)
}

/// What the 5xx answer cost, per group: pairs it bounced that another answer delivered.
fn cost_table(first: &[&str], groups: &[Group], cells: impl Fn(&Group) -> Vec<String>) -> String {
    let Some(sample) = groups.first() else { return String::new() };
    let mut header: Vec<String> = first.iter().map(|name| name.to_string()).collect();
    header.push("pairs".into());
    header.extend(sample.costs.iter().map(|cost| cost.column.clone()));
    header.push("fate_changed".into());
    let rows: Vec<Vec<String>> = groups
        .iter()
        .map(|group| {
            let mut row = cells(group);
            row.push(group.answers.first().map_or(0, |row| row.pairs).to_string());
            row.extend(group.costs.iter().map(|cost| cost.pairs.to_string()));
            row.push(group.fate_changed.to_string());
            row
        })
        .collect();
    aligned(&header, &rows, first.len())
}

/// How many changed pairs the printed table lists (report.json lists them all).
pub const CHANGED_SHOWN: usize = 20;

/// The text `what-if` prints.
pub fn table(report: &Report) -> String {
    let defects = if report.defects.is_empty() { String::new() } else { format!(" defects={}", report.defects.join(",")) };
    let mut out = format!("what-if {} seed={}{defects} ({}): answers {}\n", report.scenario, report.seed, report.origin, report.answers.join(", "));
    let width = report.answers.iter().map(String::len).max().unwrap_or(0);
    for run in &report.runs {
        let design = if run.by_design.is_empty() { "none".to_string() } else { run.by_design.join(",") };
        let judged = if run.as_designed { "as designed" } else { "UNEXPECTED" };
        let _ = writeln!(out, "run {:<width$}  verdict={} by_design={design} {judged} digest={}", run.answer, run.verdict, run.digest);
    }
    let provider = |group: &Group| vec![group.name.clone(), group.policy.clone()];
    let policy = |group: &Group| vec![group.name.clone()];
    out += "\nper provider ((message, recipient) pairs; delay: submission to the mailbox)\n";
    out += &outcome_table(&["provider", "policy"], &report.providers, provider);
    out += "\nper policy\n";
    out += &outcome_table(&["policy"], &report.policies, policy);
    if report.providers.first().is_some_and(|group| !group.costs.is_empty()) {
        out += "\nwhat answering 5xx cost, per provider (pairs the 5xx answer bounced that the other answer delivered)\n";
        out += &cost_table(&["provider", "policy"], &report.providers, provider);
    }
    let _ = writeln!(out, "\nfate changed between answers: {} pairs", report.changed.len());
    if !report.changed.is_empty() {
        let mut header: Vec<String> = ["msg", "rcpt", "provider"].iter().map(|name| name.to_string()).collect();
        header.extend(report.answers.iter().cloned());
        let rows: Vec<Vec<String>> = report
            .changed
            .iter()
            .take(CHANGED_SHOWN)
            .map(|changed| {
                let mut row = vec![changed.msg.clone(), changed.rcpt.clone(), changed.provider.clone()];
                row.extend(changed.fates.iter().map(|fate| match fate.delay_ms {
                    Some(ms) if reached_mailbox(&fate.fate) => format!("{} {}", fate.fate, duration(Some(ms))),
                    _ => fate.fate.clone(),
                }));
                row
            })
            .collect();
        out += &aligned(&header, &rows, header.len());
        if report.changed.len() > CHANGED_SHOWN {
            let _ = writeln!(out, "… and {} more (report.json lists every one)", report.changed.len() - CHANGED_SHOWN);
        }
    }
    let verdict = if report.ok { "ok — every run kept every invariant its answer does not violate by design" } else { "violation — a run broke an invariant its answer does not violate by design" };
    let _ = writeln!(out, "verdict: {verdict}");
    out
}

/// The CSV header of `report.csv`: one row per provider and answer.
pub const CSV_HEADER: &str = "provider,policy,answer,pairs,delivered,bounced_5xx,bounced_expiry,delay_notices,lost,duplicated,delay_p50_s,delay_p90_s,delay_max_s";

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

pub fn csv(report: &Report) -> String {
    let mut out = format!("{CSV_HEADER}\n");
    let seconds = |ms: Option<u64>| ms.map(|ms| format!("{}", ms / 1000)).unwrap_or_default();
    for group in &report.providers {
        for row in &group.answers {
            let _ = writeln!(
                out,
                "{},{},{},{},{},{},{},{},{},{},{},{},{}",
                csv_field(&group.name),
                csv_field(&group.policy),
                csv_field(&row.answer),
                row.pairs,
                row.delivered,
                row.bounced_5xx,
                row.bounced_expiry,
                row.delay_notices,
                row.lost,
                row.duplicated,
                seconds(row.delay_p50_ms),
                seconds(row.delay_p90_ms),
                seconds(row.delay_max_ms)
            );
        }
    }
    out
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// An aligned text table as an HTML table (the first row its header).
/// Its cells hold no spaces (names, numbers, durations).
fn html_table(text: &str) -> String {
    let mut out = String::from("<table>\n");
    for (number, line) in text.lines().enumerate() {
        let cells: Vec<&str> = line.split_whitespace().collect();
        let tag = if number == 0 { "th" } else { "td" };
        // Names to the left, numbers and durations to the right.
        let class = |cell: &str| if number == 0 || cell == "-" || cell.chars().all(|c| c.is_ascii_digit() || "dhms".contains(c)) { "" } else { " class=\"t\"" };
        let row: String = cells.iter().map(|cell| format!("<{tag}{}>{}</{tag}>", class(cell), escape(cell))).collect();
        let _ = writeln!(out, "<tr>{row}</tr>");
    }
    out + "</table>\n"
}

const TABLE_CSS: &str = "<style>\ntable { border-collapse: collapse; font-size: 13px; margin: 4px 0 16px 0; }\nth, td { border: 1px solid #ccc; padding: 2px 6px; text-align: right; }\nth { background: #f2f2f2; text-align: center; }\ntd.t, th.t { text-align: left; }
summary { font-size: 16px; font-weight: bold; margin: 16px 0 4px 0; cursor: pointer; }\nh2 { font-size: 16px; margin: 16px 0 4px 0; }\np.runs { font-family: monospace; font-size: 12px; }\n</style>\n";

/// `report.html`: the tables, then the runs' timelines side by side; self-contained.
pub fn html(report: &Report, runs: &[AnswerRun]) -> String {
    let provider = |group: &Group| vec![group.name.clone(), group.policy.clone()];
    let policy = |group: &Group| vec![group.name.clone()];
    let mut body = String::from(TABLE_CSS);
    body += "<p class=\"runs\">";
    for run in &report.runs {
        let design = if run.by_design.is_empty() { "none".to_string() } else { run.by_design.join(",") };
        let _ = writeln!(body, "{}: verdict={} by_design={design} {} digest={}<br>", escape(&run.answer), escape(&run.verdict), if run.as_designed { "as designed" } else { "UNEXPECTED" }, run.digest);
    }
    body += "</p>\n<h2>Per provider</h2>\n";
    body += &html_table(&outcome_table(&["provider", "policy"], &report.providers, provider));
    body += "<h2>Per policy</h2>\n";
    body += &html_table(&outcome_table(&["policy"], &report.policies, policy));
    if report.providers.first().is_some_and(|group| !group.costs.is_empty()) {
        body += "<h2>What answering 5xx cost</h2>\n";
        body += &html_table(&cost_table(&["provider", "policy"], &report.providers, provider));
    }
    // The list can be long: folded (no script), the timelines below it.
    let _ = writeln!(body, "<details>\n<summary>Fate changed between answers: {} pairs</summary>", report.changed.len());
    if !report.changed.is_empty() {
        body += "<table>\n<tr><th class=\"t\">msg</th><th class=\"t\">rcpt</th><th class=\"t\">provider</th>";
        report.answers.iter().for_each(|answer| body += &format!("<th class=\"t\">{}</th>", escape(answer)));
        body += "</tr>\n";
        for changed in &report.changed {
            let _ = write!(body, "<tr><td class=\"t\">{}</td><td class=\"t\">{}</td><td class=\"t\">{}</td>", escape(&changed.msg), escape(&changed.rcpt), escape(&changed.provider));
            for fate in &changed.fates {
                let delay = if reached_mailbox(&fate.fate) { format!(" {}", duration(fate.delay_ms)) } else { String::new() };
                let _ = write!(body, "<td class=\"t\">{}{}</td>", escape(&fate.fate), delay);
            }
            body += "</tr>\n";
        }
        body += "</table>\n";
    }
    body += "</details>\n";
    body += "<h2>Timelines</h2>\n";
    let pages: Vec<(String, String)> = runs
        .iter()
        .zip(&report.runs)
        .map(|(run, summary)| {
            let title = format!("{} answer={} seed={} verdict={} digest={}", report.scenario, run.answer, report.seed, summary.verdict, summary.digest);
            (format!("{} ({})", run.answer, summary.verdict), crate::timeline::svg(&run.output, &run.violations, &title))
        })
        .collect();
    crate::timeline::html_with(&format!("mailchaos what-if: {} seed={}", report.scenario, report.seed), &body, &pages)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let values: Vec<u64> = (1..=10).collect();
        assert_eq!((percentile(&values, 50), percentile(&values, 90)), (Some(5), Some(9)));
        assert_eq!((percentile(&[7], 50), percentile(&[7], 90)), (Some(7), Some(7)));
        assert_eq!(percentile(&[], 50), None);
    }

    #[test]
    fn durations_read_as_a_person_reads_them() {
        let cases = [(None, "-"), (Some(45_000), "45s"), (Some(725_000), "12m05s"), (Some(11_220_000), "3h07m"), (Some(187_200_000), "2d04h")];
        for (ms, text) in cases {
            assert_eq!(duration(ms), text);
        }
    }

    #[test]
    fn a_pair_has_one_fate_and_a_copy_wins() {
        let mut account = PairAccount { submitted_ms: Some(0), ..PairAccount::default() };
        assert_eq!(fate(&account), "pending");
        account.outcomes.bounced_expiry = 1;
        assert_eq!(fate(&account), "bounced-expiry");
        account.outcomes.bounced_5xx = 1;
        assert_eq!(fate(&account), "bounced-5xx");
        account.first_copy_ms = Some(10);
        assert_eq!(fate(&account), "delivered");
        account.outcomes.duplicated = 1;
        assert_eq!(fate(&account), "duplicated");
    }

    #[test]
    fn answers_are_checked_and_default_to_all_three() {
        assert_eq!(answers_of(&[]).ok(), Some(vec!["5xx-bounce".to_string(), "4xx-tempfail".into(), "closed-port".into()]));
        assert!(answers_of(&["6xx".into()]).is_err());
        assert!(answers_of(&["closed-port".into(), "closed-port".into()]).is_err());
        assert_eq!(by_design("5xx-bounce"), ["A12", "A22"]);
        assert!(by_design("4xx-tempfail").is_empty() && by_design("closed-port").is_empty());
    }
}
