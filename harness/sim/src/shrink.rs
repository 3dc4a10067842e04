//! Shrinking: a failing run made small while the same invariant still fails.
//!
//! The input is scenario TOML text and a name (a file today; a generated swarm scenario can be
//! handed in the same way), a seed, the defects and the run options. The output is scenario
//! TOML text again, an ordinary scenario file: fewer faults, narrower and earlier windows,
//! fewer messages, providers and mailboxes, a shorter chaos phase and horizon, fewer optional
//! workload knobs.
//!
//! Why a hand-written greedy reducer and not proptest's `ValueTree::simplify`: the thing
//! shrunk is a structured document whose parts constrain each other (a fault names a host of
//! a provider, a window must lie within `chaos_s`, `delete_after_fetch` names users), and every
//! candidate must stay a valid scenario the normal `scenario::parse` accepts and must keep its
//! layout so the output reads like the file it came from. A `ValueTree` shrinks one value
//! along one axis at a time with `simplify`/`complicate` and has no notion of "this candidate
//! is invalid, skip it" other than rejecting it as passing, which would steer its binary
//! search wrong. Here each candidate is an edit of the TOML document; invalid ones are skipped
//! without a run; a kept edit becomes the new base (first improvement, delta-debugging style).
//!
//! Determinism: candidates come in a fixed order computed from the document alone, runs are
//! deterministic, and the run budget (a count) is what ends a long search. The wall limit is
//! only a safety net: when it ends the search the result says so, because output then depends
//! on the machine's speed.

use crate::scenario::{self, ScenarioError};
use crate::seed::Seed;
use crate::world::{self, RunOptions};
use stack::Defects;
use std::fmt;
use std::time::{Duration, Instant};
use toml_edit::{DocumentMut, Item, Value};

/// Candidate runs at most (runs under the defects and clean runs both count).
pub const DEFAULT_MAX_RUNS: usize = 400;
/// The safety net: past this much wall time the search stops and says so.
pub const DEFAULT_WALL_LIMIT: Duration = Duration::from_secs(30);
/// Passes over the candidate list at most; each pass that keeps nothing ends the search.
const MAX_PASSES: usize = 40;
/// Candidates considered at most, invalid ones included (they cost a parse, not a run).
const MAX_CANDIDATES: usize = 50_000;

/// What to shrink and how to judge a candidate.
pub struct Request<'a> {
    /// Used in parse errors of the input and as the scenario's default name.
    pub name: &'a str,
    pub text: &'a str,
    pub seed: Seed,
    pub defects: &'a Defects,
    pub options: &'a RunOptions,
    /// The invariant that must keep failing; `None`: the first one the original run violates.
    pub invariant: Option<&'a str>,
    pub max_runs: usize,
    pub wall_limit: Duration,
}

/// Why the search ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// No candidate of a whole pass kept the failure: as small as this reducer gets it.
    Fixpoint,
    /// The run budget ran out (deterministic).
    RunBudget,
    /// The wall limit ran out: the best so far, which depends on the machine's speed.
    WallLimit,
}

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stop::Fixpoint => "fixpoint",
            Stop::RunBudget => "run budget",
            Stop::WallLimit => "wall limit (result depends on machine speed)",
        })
    }
}

/// The shrunk scenario and what the search did.
pub struct Shrunk {
    /// The scenario text (without a header comment; see [`header`]).
    pub text: String,
    pub invariant: &'static str,
    pub faults: (usize, usize),
    /// Messages in all: messages per provider times providers, before and after.
    pub messages: (u64, u64),
    pub runs: usize,
    /// The edits kept, in order.
    pub steps: Vec<String>,
    pub stop: Stop,
    /// Whether every kept candidate also passed on the clean stack (not when there are no
    /// defects, or when the original failed on the clean stack too).
    pub clean_checked: bool,
}

#[derive(Debug)]
pub enum ShrinkError {
    /// The input is not a valid scenario.
    Scenario(ScenarioError),
    /// The original run violates nothing: there is no failure to keep.
    Passes,
    /// The invariant asked for is not among those the original run violates.
    NotViolated { wanted: String, violated: Vec<&'static str> },
}

impl fmt::Display for ShrinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShrinkError::Scenario(error) => write!(f, "{error}"),
            ShrinkError::Passes => f.write_str("the run passes (every invariant held): there is no failure to shrink; pick a failing seed or defect (a run line with verdict=violation)"),
            ShrinkError::NotViolated { wanted, violated } => write!(f, "--invariant {wanted}: the run does not violate it; it violates {}", violated.join(", ")),
        }
    }
}

/// Shrinks a failing run. The original must fail; each candidate must fail with the same
/// invariant and, when the original passes on the clean stack, pass there too (so a kept edit
/// never makes the failure the harness's own, and the result can sit in the regressions suite).
pub fn shrink(request: &Request) -> Result<Shrunk, ShrinkError> {
    let original = scenario::parse(request.name, request.text).map_err(ShrinkError::Scenario)?;
    let mut oracle = Oracle::new(request);
    let first = oracle.judge_defects(&original);
    let violated = distinct(&first);
    let invariant = match request.invariant {
        None => *violated.first().ok_or(ShrinkError::Passes)?,
        Some(wanted) => *violated.iter().find(|name| **name == wanted).ok_or_else(|| ShrinkError::NotViolated { wanted: wanted.to_string(), violated: violated.clone() })?,
    };
    oracle.invariant = invariant;
    oracle.clean_rule = oracle.clean_rule_of(&original);
    // The input parsed, so toml_edit parses it too (both are TOML 1.0 parsers of one text).
    let mut doc: DocumentMut = request.text.parse().map_err(|error: toml_edit::TomlError| ShrinkError::Scenario(ScenarioError { file: request.name.into(), line: 1, column: 1, message: error.to_string() }))?;
    let before = (fault_count(&doc), message_count(&doc));
    let (steps, stop) = search(&mut doc, &mut oracle);
    normalise(&mut doc);
    // The original's description tells of faults the result may no longer have.
    doc["description"] = toml_edit::value(describe(request, invariant));
    Ok(Shrunk { text: doc.to_string(), invariant, faults: (before.0, fault_count(&doc)), messages: (before.1, message_count(&doc)), runs: oracle.runs, steps, stop, clean_checked: oracle.clean_rule != CleanRule::Unchecked })
}

/// The shrunk scenario's description: the invariant and the planted bugs that made it fail.
fn describe(request: &Request, invariant: &str) -> String {
    let defects: Vec<&str> = request.defects.iter().map(|defect| defect.name()).collect();
    let under = if defects.is_empty() { "the clean stack".to_string() } else { defects.join(", ") };
    format!("shrunk from {}: {invariant} fails under {under} (seed {})", request.name, request.seed)
}

/// Passes over the candidates until a pass keeps nothing or a budget runs out. Within a pass a
/// kept candidate becomes the base and the pass goes on from the same position of the new
/// base's list, so early edits that failed are not retried until the next pass.
fn search(doc: &mut DocumentMut, oracle: &mut Oracle) -> (Vec<String>, Stop) {
    let mut steps = Vec::new();
    let mut considered = 0usize;
    for _pass in 0..MAX_PASSES {
        let mut kept_any = false;
        let mut position = 0usize;
        loop {
            let candidates = candidates(doc);
            let Some(candidate) = candidates.get(position) else { break };
            considered += 1;
            // Counted with the run budget: a count as well, so the same everywhere.
            if considered > MAX_CANDIDATES {
                return (steps, Stop::RunBudget);
            }
            if let Some(stop) = oracle.exhausted() {
                return (steps, stop);
            }
            match oracle.keeps(doc, candidate) {
                Some(next) => {
                    *doc = next;
                    steps.push(candidate.label.clone());
                    kept_any = true;
                }
                None => position += 1,
            }
        }
        if !kept_any {
            return (steps, Stop::Fixpoint);
        }
    }
    (steps, Stop::Fixpoint)
}

/// The distinct invariants of a run's violations, in the checkers' order.
fn distinct(violations: &[check::Violation]) -> Vec<&'static str> {
    let mut names: Vec<&'static str> = Vec::new();
    for violation in violations {
        if !names.contains(&violation.invariant) {
            names.push(violation.invariant);
        }
    }
    names
}

/// What a candidate's clean run must show (see `Oracle::clean_rule_of`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum CleanRule {
    /// Nothing: no defects (the defect run is the clean run), or the original fails clean too.
    Unchecked,
    /// No violation, drained before the horizon.
    Passes,
    /// No violation, drained before half the horizon: a margin, so that other seeds of the
    /// shrunk scenario drain too (CI runs the regressions suite over 20 seeds).
    PassesWithMargin,
}

/// Runs candidates and counts the runs.
struct Oracle<'a> {
    request: &'a Request<'a>,
    invariant: &'static str,
    clean_rule: CleanRule,
    runs: usize,
    // Wall time only decides when the safety net stops the search, never what is kept.
    started: Instant,
}

impl<'a> Oracle<'a> {
    fn new(request: &'a Request<'a>) -> Oracle<'a> {
        Oracle { request, invariant: "", clean_rule: CleanRule::Unchecked, runs: 0, started: Instant::now() }
    }

    fn exhausted(&self) -> Option<Stop> {
        if self.runs >= self.request.max_runs {
            return Some(Stop::RunBudget);
        }
        (self.started.elapsed() >= self.request.wall_limit).then_some(Stop::WallLimit)
    }

    fn run(&mut self, scenario: &scenario::Scenario, defects: &Defects) -> history::RunOutput {
        self.runs += 1;
        world::run_with(scenario, self.request.seed, defects, self.request.options)
    }

    fn judge_defects(&mut self, scenario: &scenario::Scenario) -> Vec<check::Violation> {
        let output = self.run(scenario, self.request.defects);
        check::check_all(&output)
    }

    /// How strict the clean check of candidates is: as strict as the original allows.
    fn clean_rule_of(&mut self, original: &scenario::Scenario) -> CleanRule {
        if self.request.defects.is_empty() {
            return CleanRule::Unchecked;
        }
        match self.clean_drain(original) {
            Some(true) => CleanRule::PassesWithMargin,
            Some(false) => CleanRule::Passes,
            None => CleanRule::Unchecked,
        }
    }

    /// The clean run: `None` if it violates something or never drains; else whether it drained
    /// before half the horizon.
    fn clean_drain(&mut self, scenario: &scenario::Scenario) -> Option<bool> {
        let output = self.run(scenario, &Defects::none());
        let drained = output.drained_at_ms?;
        if !check::check_all(&output).is_empty() {
            return None;
        }
        Some(drained.saturating_mul(2) <= scenario.horizon_s.get_ref().saturating_mul(1000))
    }

    /// The candidate applied to `doc`, if it is a valid scenario that still fails as wanted.
    fn keeps(&mut self, doc: &DocumentMut, candidate: &Candidate) -> Option<DocumentMut> {
        let next = candidate.apply(doc)?;
        // Invalid candidates (a window beyond chaos_s, a fault on a removed provider) are
        // skipped by the normal validation, without a run.
        let scenario = scenario::parse(self.request.name, &next.to_string()).ok()?;
        if !self.judge_defects(&scenario).iter().any(|violation| violation.invariant == self.invariant) {
            return None;
        }
        let clean_ok = match self.clean_rule {
            CleanRule::Unchecked => true,
            CleanRule::Passes => self.clean_drain(&scenario).is_some(),
            CleanRule::PassesWithMargin => self.clean_drain(&scenario) == Some(true),
        };
        clean_ok.then_some(next)
    }
}

/// One step of a path into the document.
#[derive(Clone, Debug)]
enum Seg {
    Key(&'static str),
    Index(usize),
}

use Seg::{Index, Key};

/// One change of a candidate.
#[derive(Clone, Debug)]
enum Change {
    /// Remove a key, an array element or an array-of-tables entry.
    Remove(Vec<Seg>),
    /// Set an integer.
    Int(Vec<Seg>, i64),
    /// Set a `[low, high]` range.
    Range(Vec<Seg>, i64, i64),
}

/// An edit of the document: its changes apply in order (removals of several entries of one
/// array come last index first, so indices stay valid).
#[derive(Clone, Debug)]
struct Candidate {
    label: String,
    changes: Vec<Change>,
}

impl Candidate {
    fn one(label: String, change: Change) -> Candidate {
        Candidate { label, changes: vec![change] }
    }

    fn apply(&self, doc: &DocumentMut) -> Option<DocumentMut> {
        let mut next = doc.clone();
        for change in &self.changes {
            apply(&mut next, change)?;
        }
        Some(next)
    }
}

fn get<'d>(doc: &'d DocumentMut, path: &[Seg]) -> Option<&'d Item> {
    let mut item = doc.as_item();
    for seg in path {
        item = match seg {
            Key(key) => item.get(*key)?,
            Index(index) => item.get(*index)?,
        };
    }
    Some(item)
}

fn get_mut<'d>(doc: &'d mut DocumentMut, path: &[Seg]) -> Option<&'d mut Item> {
    let mut item = doc.as_item_mut();
    for seg in path {
        item = match seg {
            Key(key) => item.get_mut(*key)?,
            Index(index) => item.get_mut(*index)?,
        };
    }
    Some(item)
}

fn apply(doc: &mut DocumentMut, change: &Change) -> Option<()> {
    match change {
        Change::Remove(path) => {
            let (last, parent) = path.split_last()?;
            let parent = get_mut(doc, parent)?;
            match (last, parent) {
                (Key(key), parent) => parent.as_table_like_mut()?.remove(key).map(|_| ()),
                (Index(index), Item::ArrayOfTables(tables)) if *index < tables.len() => Some(tables.remove(*index)),
                (Index(index), Item::Value(Value::Array(array))) if *index < array.len() => {
                    array.remove(*index);
                    // The removed element's spacing went with it: lay the rest out afresh.
                    array.fmt();
                    Some(())
                }
                _ => None,
            }
        }
        Change::Int(path, value) => {
            *get_mut(doc, path)? = toml_edit::value(*value);
            Some(())
        }
        Change::Range(path, low, high) => {
            *get_mut(doc, path)? = toml_edit::value(toml_edit::Array::from_iter([*low, *high]));
            Some(())
        }
    }
}

fn int_at(doc: &DocumentMut, path: &[Seg]) -> Option<i64> {
    get(doc, path)?.as_integer()
}

/// An integer, or the two ends of a `[low, high]` range.
fn draw_at(doc: &DocumentMut, path: &[Seg]) -> Option<(i64, Option<i64>)> {
    let item = get(doc, path)?;
    if let Some(value) = item.as_integer() {
        return Some((value, None));
    }
    let array = item.as_array()?;
    Some((array.get(0)?.as_integer()?, Some(array.get(1)?.as_integer()?)))
}

fn len_at(doc: &DocumentMut, path: &[Seg]) -> usize {
    match get(doc, path) {
        Some(Item::ArrayOfTables(tables)) => tables.len(),
        Some(item) => item.as_array().map_or(0, |array| array.len()),
        None => 0,
    }
}

fn fault_count(doc: &DocumentMut) -> usize {
    len_at(doc, &[Key("fault")])
}

fn message_count(doc: &DocumentMut) -> u64 {
    let per_provider = int_at(doc, &[Key("workload"), Key("messages")]).unwrap_or(0);
    u64::try_from(per_provider).unwrap_or(0) * len_at(doc, &[Key("provider")]) as u64
}

/// Smaller values to try for an integer above `floor`: the floor first (the biggest cut),
/// then halfway and a quarter of the way down. Three tries per knob and pass keep a pass
/// affordable; a kept cut is cut again in the next pass, so values fall geometrically.
fn smaller(value: i64, floor: i64) -> Vec<i64> {
    let mut values = Vec::new();
    for candidate in [floor, floor + (value - floor) / 2, value - (value - floor) / 4] {
        if candidate < value && candidate >= floor && !values.contains(&candidate) {
            values.push(candidate);
        }
    }
    values
}

/// Candidates that make an integer or range at `path` smaller: a range becomes its low end
/// (narrowed and as early as it goes) or its lower half; an integer goes down.
fn shrink_draw(doc: &DocumentMut, path: Vec<Seg>, floor: i64, what: &str) -> Vec<Candidate> {
    let Some((value, high)) = draw_at(doc, &path) else { return Vec::new() };
    match high {
        Some(high) => {
            let mut out = vec![Candidate::one(format!("{what} = {value} (was [{value}, {high}])"), Change::Int(path.clone(), value))];
            let middle = value + (high - value) / 2;
            if middle > value && middle < high {
                out.push(Candidate::one(format!("{what} = [{value}, {middle}] (was [{value}, {high}])"), Change::Range(path, value, middle)));
            }
            out
        }
        None => smaller(value, floor).into_iter().map(|to| Candidate::one(format!("{what} = {to} (was {value})"), Change::Int(path.clone(), to))).collect(),
    }
}

/// Every candidate edit of `doc`, in a fixed order: the big cuts first (whole faults,
/// providers, mailboxes, messages), then optional knobs, then windows and times.
fn candidates(doc: &DocumentMut) -> Vec<Candidate> {
    let mut out = fault_removals(doc);
    out.extend(entry_removals(doc, "provider", "provider"));
    out.extend(user_removals(doc));
    out.extend(shrink_draw(doc, vec![Key("workload"), Key("messages")], 1, "workload.messages"));
    out.extend(knob_removals(doc));
    out.extend(entry_removals(doc, "link", "link"));
    out.extend(window_cuts(doc));
    out.extend(shrink_draw(doc, vec![Key("chaos_s")], 0, "chaos_s"));
    let chaos = int_at(doc, &[Key("chaos_s")]).unwrap_or(0).max(1);
    out.extend(shrink_draw(doc, vec![Key("horizon_s")], chaos, "horizon_s"));
    out.extend(shrink_draw(doc, vec![Key("workload"), Key("spread_s")], 1, "workload.spread_s"));
    out.extend(shrink_draw(doc, vec![Key("workload"), Key("max_rcpts")], 1, "workload.max_rcpts"));
    out
}

/// Every fault at once, each half (from four faults on), then each fault.
fn fault_removals(doc: &DocumentMut) -> Vec<Candidate> {
    let count = fault_count(doc);
    let mut out = Vec::new();
    if count >= 2 {
        out.push(Candidate::one(format!("remove all {count} faults"), Change::Remove(vec![Key("fault")])));
    }
    if count >= 4 {
        let half = count / 2;
        for (from, to) in [(0, half), (half, count)] {
            let changes = (from..to).rev().map(|index| Change::Remove(vec![Key("fault"), Index(index)])).collect();
            out.push(Candidate { label: format!("remove faults {}..={}", from + 1, to), changes });
        }
    }
    for index in 0..count {
        let kind = get(doc, &[Key("fault"), Index(index), Key("kind")]).and_then(Item::as_str).unwrap_or("?");
        out.push(Candidate::one(format!("remove fault {} ({kind})", index + 1), Change::Remove(vec![Key("fault"), Index(index)])));
    }
    out
}

/// Each entry of an array of tables (providers, links); one provider always stays.
fn entry_removals(doc: &DocumentMut, key: &'static str, what: &str) -> Vec<Candidate> {
    let count = len_at(doc, &[Key(key)]);
    let keep = usize::from(key == "provider");
    (0..count)
        .filter(|_| count > keep)
        .map(|index| {
            let name = get(doc, &[Key(key), Index(index), Key("name")]).and_then(Item::as_str).map(|name| format!(" {name}")).unwrap_or_default();
            Candidate::one(format!("remove {what} {}{name}", index + 1), Change::Remove(vec![Key(key), Index(index)]))
        })
        .collect()
}

/// Each mailbox (one always stays), with its mention in `clients.delete_after_fetch`.
fn user_removals(doc: &DocumentMut) -> Vec<Candidate> {
    let users = &[Key("mx"), Key("users")];
    let count = len_at(doc, users);
    let deleting = |name: &str| -> Option<usize> {
        let array = get(doc, &[Key("clients"), Key("delete_after_fetch")])?.as_array()?;
        array.iter().position(|value| value.as_str() == Some(name))
    };
    (0..count)
        .filter(|_| count > 1)
        .filter_map(|index| {
            let name = get(doc, &[Key("mx"), Key("users"), Index(index)])?.as_str()?.to_string();
            let mut changes = vec![Change::Remove(vec![Key("mx"), Key("users"), Index(index)])];
            if let Some(position) = deleting(&name) {
                changes.push(Change::Remove(vec![Key("clients"), Key("delete_after_fetch"), Index(position)]));
            }
            Some(Candidate { label: format!("remove mailbox {name}"), changes })
        })
        .collect()
}

/// Optional workload and client knobs, back to their defaults (by removing the key).
const OPTIONAL_KNOBS: &[(&str, &str)] = &[
    ("workload", "null_sender_every"),
    ("workload", "unknown_rcpt_every"),
    ("workload", "duplicate_rcpt_every"),
    ("workload", "list_mail_every"),
    ("workload", "postmaster_every"),
    ("workload", "invalid_param_every"),
    ("workload", "messages_per_session"),
    ("clients", "delete_after_fetch"),
    ("clients", "first_poll_s"),
    ("clients", "mark_read"),
];

fn knob_removals(doc: &DocumentMut) -> Vec<Candidate> {
    let mut out: Vec<Candidate> = OPTIONAL_KNOBS
        .iter()
        .filter(|(table, key)| get(doc, &[Key(table), Key(key)]).is_some())
        .map(|(table, key)| Candidate::one(format!("drop {table}.{key}"), Change::Remove(vec![Key(table), Key(key)])))
        .collect();
    for index in 0..len_at(doc, &[Key("provider")]) {
        if get(doc, &[Key("provider"), Index(index), Key("chunking")]).is_some() {
            out.push(Candidate::one(format!("drop provider {} chunking", index + 1), Change::Remove(vec![Key("provider"), Index(index), Key("chunking")])));
        }
    }
    out
}

/// Each fault's window: earlier (`at_s`), narrower (`duration_s`), a shorter down time.
fn window_cuts(doc: &DocumentMut) -> Vec<Candidate> {
    let mut out = Vec::new();
    for index in 0..fault_count(doc) {
        let path = |key: &'static str| vec![Key("fault"), Index(index), Key(key)];
        let what = |key: &str| format!("fault {} {key}", index + 1);
        out.extend(shrink_draw(doc, path("at_s"), 0, &what("at_s")));
        out.extend(shrink_draw(doc, path("duration_s"), 1, &what("duration_s")));
        out.extend(shrink_draw(doc, path("restart_after_s"), 1, &what("restart_after_s")));
    }
    out
}

/// Comments of the original describe the original (faults it no longer has), so they go;
/// the layout is toml_edit's default: one key per line, a blank line before each table.
fn normalise(doc: &mut DocumentMut) {
    normalise_table(doc.as_table_mut());
    doc.set_trailing("");
}

fn normalise_table(table: &mut toml_edit::Table) {
    table.decor_mut().clear();
    // Resets the decor (comments, spacing) of every key and value of this table.
    table.fmt();
    for (_, item) in table.iter_mut() {
        match item {
            Item::Table(inner) => normalise_table(inner),
            Item::ArrayOfTables(tables) => tables.iter_mut().for_each(normalise_table),
            Item::Value(_) | Item::None => {}
        }
    }
}

/// The comment the shrunk file starts with: one `# key: value` per line, which the regression
/// tests read back (invariant, seed, defects, profile).
pub struct Header<'a> {
    pub origin: &'a str,
    pub seed: Seed,
    pub defects: &'a Defects,
    /// The `--profile` given, if any.
    pub profile: Option<&'a str>,
    /// The command that replays the shrunk file.
    pub repro: &'a str,
}

impl Shrunk {
    /// What the header may claim of the clean stack: only what the search checked.
    fn clean_note(&self, defects: &Defects) -> &'static str {
        match (defects.is_empty(), self.clean_checked) {
            (true, _) => "with no planted defect (under the profile below).",
            (false, true) => "under the defects below; the clean stack passes it.",
            (false, false) => "under the defects below (the original failed on the clean stack too).",
        }
    }

    /// The file to write: the header comment, then the scenario.
    pub fn file_text(&self, header: &Header) -> String {
        let defects: Vec<&str> = header.defects.iter().map(|defect| defect.name()).collect();
        let defects = if defects.is_empty() { "none".to_string() } else { defects.join(" ") };
        let mut lines = vec![
            format!("# Shrunk by `mailchaos shrink` from {}: the smallest scenario this search found", header.origin),
            format!("# in which {} still fails {}", self.invariant, self.clean_note(header.defects)),
            format!("# invariant: {}", self.invariant),
            format!("# seed: {}", header.seed),
            format!("# defects: {defects}"),
        ];
        // What each planted bug is, so a reader of the regressions suite knows what it caught.
        lines.extend(header.defects.iter().map(|defect| format!("# bug: {}: {}", defect.name(), defect.description())));
        lines.extend([
            format!("# profile: {}", header.profile.unwrap_or("(the scenario's own)")),
            format!("# reduction: faults {} -> {}, messages {} -> {} (all providers), {} runs, stopped at {}", self.faults.0, self.faults.1, self.messages.0, self.messages.1, self.runs, self.stop),
            format!("# repro: {}", header.repro),
            String::new(),
            String::new(),
        ]);
        lines.join("\n") + &self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: &str = r#"# a comment about the original
description = "two faults"
tick_ms = 1000
horizon_s = 3600
chaos_s = 600

[mx]
domains = ["libero.test"]
users = ["anna", "bruno", "carla"]

[[provider]]
name = "gmail"
policy = "postfix"

[workload]
messages = 10
spread_s = 300

[clients]
poll_interval_s = 120
delete_after_fetch = ["bruno"]

# the first fault
[[fault]]
kind = "crash"
host = "store"
at_s = [100, 200]
restart_after_s = 30

[[fault]]
kind = "disk-stall"
host = "store"
at_s = 50
duration_s = 100
"#;

    fn doc() -> DocumentMut {
        SMALL.parse().unwrap()
    }

    fn labelled<'c>(candidates: &'c [Candidate], label: &str) -> &'c Candidate {
        candidates.iter().find(|candidate| candidate.label == label).unwrap_or_else(|| panic!("no candidate {label}: {:?}", candidates.iter().map(|c| &c.label).collect::<Vec<_>>()))
    }

    #[test]
    fn the_wall_limit_stops_the_search_and_the_file_says_so() {
        let text = include_str!("../../../scenarios/fast/store-crash.toml");
        let defects = Defects::of(&[stack::Defect::parse("reuse-uid-after-restart").unwrap()]);
        let options = RunOptions::default();
        let request = Request { name: "store-crash.toml", text, seed: Seed(1), defects: &defects, options: &options, invariant: None, max_runs: 100, wall_limit: Duration::ZERO };
        let shrunk = shrink(&request).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(shrunk.stop, Stop::WallLimit);
        assert!(shrunk.steps.is_empty(), "{:?}", shrunk.steps);
        assert_eq!(shrunk.runs, 2, "the original under the defect, then clean");
        let header = Header { origin: "store-crash.toml", seed: Seed(1), defects: &defects, profile: None, repro: "-" };
        assert!(shrunk.file_text(&header).contains("stopped at wall limit (result depends on machine speed)"));
        scenario::parse("out.toml", &shrunk.text).unwrap();
    }

    #[test]
    fn a_passing_run_or_an_invariant_it_keeps_is_refused() {
        let text = include_str!("../../../scenarios/fast/store-crash.toml");
        let options = RunOptions::default();
        let clean = Defects::none();
        let request = Request { name: "store-crash.toml", text, seed: Seed(1), defects: &clean, options: &options, invariant: None, max_runs: 100, wall_limit: DEFAULT_WALL_LIMIT };
        assert!(matches!(shrink(&request), Err(ShrinkError::Passes)));
        let defects = Defects::of(&[stack::Defect::parse("reuse-uid-after-restart").unwrap()]);
        let request = Request { defects: &defects, invariant: Some("A1"), ..request };
        assert!(matches!(shrink(&request), Err(ShrinkError::NotViolated { .. })));
    }

    #[test]
    fn smaller_values_go_down_from_the_floor_up_and_never_repeat() {
        assert_eq!(smaller(100, 0), vec![0, 50, 75]);
        assert_eq!(smaller(2, 1), vec![1]);
        assert!(smaller(1, 1).is_empty());
        assert!(smaller(5, 9).is_empty());
    }

    #[test]
    fn removing_a_mailbox_removes_it_from_delete_after_fetch_and_stays_a_valid_scenario() {
        let next = labelled(&candidates(&doc()), "remove mailbox bruno").apply(&doc()).unwrap();
        let scenario = scenario::parse("small.toml", &next.to_string()).unwrap();
        assert_eq!(scenario.mx.users.get_ref(), &vec!["anna".to_string(), "carla".to_string()]);
        assert!(scenario.clients.delete_after_fetch.get_ref().is_empty(), "{next}");
    }

    #[test]
    fn a_range_is_first_narrowed_to_its_low_end_and_faults_come_off_all_at_once_first() {
        let all = candidates(&doc());
        assert_eq!(all[0].label, "remove all 2 faults");
        let next = labelled(&all, "fault 1 at_s = 100 (was [100, 200])").apply(&doc()).unwrap();
        assert_eq!(draw_at(&next, &[Key("fault"), Index(0), Key("at_s")]), Some((100, None)));
        assert_eq!(fault_count(&labelled(&all, "remove fault 2 (disk-stall)").apply(&doc()).unwrap()), 1);
    }

    #[test]
    fn the_order_of_candidates_is_a_function_of_the_document_alone() {
        let labels = |doc: &DocumentMut| candidates(doc).into_iter().map(|candidate| candidate.label).collect::<Vec<_>>();
        assert_eq!(labels(&doc()), labels(&doc()));
    }

    #[test]
    fn normalising_drops_the_originals_comments_and_keeps_a_valid_scenario() {
        let mut doc = doc();
        normalise(&mut doc);
        let text = doc.to_string();
        assert!(!text.contains('#'), "{text}");
        scenario::parse("small.toml", &text).unwrap();
        assert_eq!(message_count(&doc), 10);
    }
}
