//! `mailchaos merge`: the `--json` files of a sweep's shards combined into what the unsharded
//! run prints: every run in the unsharded order, the outcomes and the summary (the same
//! `Tally` prints them), and optionally one JUnit report. Every pair of the sweep must be
//! there exactly once: a missing or doubled shard is bad input, not a smaller green sweep.
//! The shards of a `swarm` sweep merge the same way into the unsharded swarm's output (its
//! `SwarmTally` prints the summary and the coverage table).

use crate::bad_input::BadInput;
use crate::results::{JunitWriter, Line, RunRecord, Summary, Tally};
use crate::swarm::{SwarmLine, SwarmRecord, SwarmSummary, SwarmTally};
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

/// A results file larger than this is not one of ours (a shard of a million runs is ~1 GB).
pub const MAX_RESULTS_BYTES: u64 = 2 << 30;

/// More files than this is not a set of shards anyone launched.
pub const MAX_FILES: usize = 100_000;

/// One shard's file read back: its runs (`R`) and its summary (`S`).
struct ShardFile<R, S> {
    name: String,
    runs: Vec<R>,
    summary: S,
}

/// A line of a results file: a run, or the summary that ends the file.
trait ResultLine: DeserializeOwned {
    type Run: Ordered;
    type Summary: Finished;
    fn split(self) -> Result<Self::Run, Self::Summary>;
}

/// A run record, by its place in the unsharded order.
trait Ordered {
    fn index(&self) -> usize;
    /// The run, as an error message names it.
    fn describe(&self) -> String;
}

/// A shard's summary: the sweep's size, the shard's runs and wall time.
trait Finished {
    fn pairs(&self) -> usize;
    fn runs(&self) -> usize;
    fn wall_s(&self) -> f64;
}

impl ResultLine for Line {
    type Run = RunRecord;
    type Summary = Summary;
    fn split(self) -> Result<RunRecord, Summary> {
        match self {
            Line::Run(record) => Ok(record),
            Line::Summary(summary) => Err(summary),
        }
    }
}

impl Ordered for RunRecord {
    fn index(&self) -> usize {
        self.index
    }
    fn describe(&self) -> String {
        format!("{} seed {}", self.scenario, self.seed)
    }
}

impl Finished for Summary {
    fn pairs(&self) -> usize {
        self.pairs
    }
    fn runs(&self) -> usize {
        self.tally.runs
    }
    fn wall_s(&self) -> f64 {
        self.wall_s
    }
}

impl ResultLine for SwarmLine {
    type Run = SwarmRecord;
    type Summary = SwarmSummary;
    fn split(self) -> Result<SwarmRecord, SwarmSummary> {
        match self {
            SwarmLine::Swarm(record) => Ok(record),
            SwarmLine::SwarmSummary(summary) => Err(summary),
        }
    }
}

impl Ordered for SwarmRecord {
    fn index(&self) -> usize {
        self.index
    }
    fn describe(&self) -> String {
        format!("swarm seed {}", self.seed)
    }
}

impl Finished for SwarmSummary {
    fn pairs(&self) -> usize {
        self.pairs
    }
    fn runs(&self) -> usize {
        self.runs
    }
    fn wall_s(&self) -> f64 {
        self.wall_s
    }
}

/// Just the `type` of a line: which sweep (`run` or `swarm`) wrote the file.
#[derive(serde::Deserialize)]
struct Kind {
    #[serde(rename = "type")]
    kind: String,
}

pub fn merge(files: &[PathBuf], junit: Option<&Path>) -> Result<bool, BadInput> {
    if files.len() > MAX_FILES {
        return Err(BadInput(format!("merge takes at most {MAX_FILES} files, got {}", files.len())));
    }
    let junit = junit.map(JunitWriter::create).transpose()?;
    let texts = files.iter().map(|file| Ok((file.display().to_string(), input::read_input_file(file, MAX_RESULTS_BYTES).map_err(|error| BadInput(error.to_string()))?))).collect::<Result<Vec<_>, BadInput>>()?;
    // A swarm sweep's files start with a `swarm` line (or, for an empty shard, its summary).
    let swarm = |text: &str| text.lines().next().and_then(|line| serde_json::from_str::<Kind>(line).ok()).is_some_and(|kind| kind.kind.starts_with("swarm"));
    if let Some((first, _)) = texts.first().filter(|(_, text)| swarm(text)) {
        if let Some((other, _)) = texts.iter().find(|(_, text)| !swarm(text)) {
            return Err(BadInput(format!("{other}: not a swarm sweep's results, but {first} is: not the same sweep")));
        }
        return merge_swarm(texts, junit);
    }
    let shards = texts.iter().map(|(name, text)| read_shard::<Line>(name, text)).collect::<Result<Vec<_>, _>>()?;
    let wall_s: f64 = shards.iter().map(|shard| shard.summary.wall_s()).sum();
    let records = in_unsharded_order(shards)?;
    let mut tally = Tally::default();
    for record in &records {
        record.print();
        tally.add(record);
    }
    // The wall time is the shards' summed: the rate is per core-second of the whole sweep.
    tally.print(wall_s, None);
    if let Some(junit) = junit {
        junit.finish(&records)?;
    }
    Ok(tally.failed == 0)
}

/// The shards of a swarm sweep: its seeds in order, the summary and the coverage table.
fn merge_swarm(texts: Vec<(String, String)>, junit: Option<JunitWriter>) -> Result<bool, BadInput> {
    let shards = texts.iter().map(|(name, text)| read_shard::<SwarmLine>(name, text)).collect::<Result<Vec<_>, _>>()?;
    let profiles = shards.first().map(|shard| shard.summary.profiles.clone()).unwrap_or_default();
    if let Some(other) = shards.iter().find(|shard| shard.summary.profiles != profiles) {
        return Err(BadInput(format!("{}: a sweep of --profiles {}, but the first file's is of {profiles}: not the same sweep", other.name, other.summary.profiles)));
    }
    let wall_s: f64 = shards.iter().map(|shard| shard.summary.wall_s()).sum();
    let records = in_unsharded_order(shards)?;
    let mut tally = SwarmTally::default();
    for record in &records {
        record.print();
        tally.add(record);
    }
    tally.print(&profiles, None, wall_s);
    if let Some(junit) = junit {
        junit.finish(&records.iter().map(SwarmRecord::as_run_record).collect::<Vec<_>>())?;
    }
    Ok(tally.failed() == 0)
}

/// A file's runs and its summary, which must be its last line (else the shard never finished).
fn read_shard<L: ResultLine>(name: &str, text: &str) -> Result<ShardFile<L::Run, L::Summary>, BadInput> {
    let mut runs = Vec::new();
    let mut summary = None;
    for (number, line) in text.lines().enumerate() {
        let at = format!("{name}:{}", number + 1);
        if summary.is_some() {
            return Err(BadInput(format!("{at}:1: a line after the summary (two files joined?)")));
        }
        match serde_json::from_str::<L>(line).map_err(|error| BadInput(format!("{at}:{}: {}", error.column().max(1), message_of(&error))))?.split() {
            Ok(record) => runs.push(record),
            Err(last) => summary = Some(last),
        }
    }
    let summary = summary.ok_or_else(|| BadInput(format!("{name}: no summary line at the end: the shard did not finish (or the file was cut short)")))?;
    if summary.runs() != runs.len() {
        return Err(BadInput(format!("{name}: the summary counts {} runs but the file holds {}", summary.runs(), runs.len())));
    }
    Ok(ShardFile { name: name.to_string(), runs, summary })
}

/// serde_json's message without its own "at line 1 column N" (the caller names file:line:col).
fn message_of(error: &serde_json::Error) -> String {
    let text = error.to_string();
    text.rsplit_once(" at line ").map_or(text.clone(), |(message, _)| message.to_string())
}

/// Every run of the shards by its place in the unsharded order; each of the sweep's pairs once.
fn in_unsharded_order<R: Ordered, S: Finished>(shards: Vec<ShardFile<R, S>>) -> Result<Vec<R>, BadInput> {
    let Some(first) = shards.first() else { return Err(BadInput("merge needs at least one --json file".into())) };
    let (pairs, first_name) = (first.summary.pairs(), first.name.clone());
    let mut runs: Vec<(R, String)> = Vec::new();
    for shard in shards {
        if shard.summary.pairs() != pairs {
            return Err(BadInput(format!("{}: a shard of a sweep of {} runs, but {first_name} is of {pairs}: not the same sweep", shard.name, shard.summary.pairs())));
        }
        let name = shard.name;
        runs.extend(shard.runs.into_iter().map(|record| (record, name.clone())));
    }
    runs.sort_by_key(|(record, _)| record.index());
    for (expected, pair) in runs.iter().enumerate() {
        let (record, file) = pair;
        if record.index() < expected {
            let (_, earlier) = &runs[expected - 1];
            return Err(BadInput(format!("run {} ({}) is in both {earlier} and {file}: a shard merged twice", record.index(), record.describe())));
        }
        if record.index() > expected || record.index() >= pairs {
            return Err(BadInput(format!("run {expected} of the sweep's {pairs} is in none of the files: a shard is missing")));
        }
    }
    if runs.len() < pairs {
        return Err(BadInput(format!("runs {} to {} of the sweep's {pairs} are in none of the files: a shard is missing", runs.len(), pairs - 1)));
    }
    Ok(runs.into_iter().map(|(record, _)| record).collect())
}
