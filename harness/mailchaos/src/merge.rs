//! `mailchaos merge`: the `--json` files of a sweep's shards combined into what the unsharded
//! run prints: every run in the unsharded order, the outcomes and the summary (the same
//! `Tally` prints them), and optionally one JUnit report. Every pair of the sweep must be
//! there exactly once: a missing or doubled shard is bad input, not a smaller green sweep.

use crate::bad_input::BadInput;
use crate::results::{JunitWriter, Line, RunRecord, Summary, Tally};
use std::path::{Path, PathBuf};

/// A results file larger than this is not one of ours (a shard of a million runs is ~1 GB).
pub const MAX_RESULTS_BYTES: u64 = 2 << 30;

/// More files than this is not a set of shards anyone launched.
pub const MAX_FILES: usize = 100_000;

/// One shard's file read back.
struct ShardFile {
    name: String,
    runs: Vec<RunRecord>,
    summary: Summary,
}

pub fn merge(files: &[PathBuf], junit: Option<&Path>) -> Result<bool, BadInput> {
    if files.len() > MAX_FILES {
        return Err(BadInput(format!("merge takes at most {MAX_FILES} files, got {}", files.len())));
    }
    let junit = junit.map(JunitWriter::create).transpose()?;
    let shards = files.iter().map(|file| read_shard(file)).collect::<Result<Vec<_>, _>>()?;
    let wall_s: f64 = shards.iter().map(|shard| shard.summary.wall_s).sum();
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

/// A file's runs and its summary, which must be its last line (else the shard never finished).
fn read_shard(path: &Path) -> Result<ShardFile, BadInput> {
    let name = path.display().to_string();
    let text = input::read_input_file(path, MAX_RESULTS_BYTES).map_err(|error| BadInput(error.to_string()))?;
    let mut runs = Vec::new();
    let mut summary = None;
    for (number, line) in text.lines().enumerate() {
        let at = format!("{name}:{}", number + 1);
        if summary.is_some() {
            return Err(BadInput(format!("{at}:1: a line after the summary (two files joined?)")));
        }
        match serde_json::from_str::<Line>(line).map_err(|error| BadInput(format!("{at}:{}: {}", error.column().max(1), message_of(&error))))? {
            Line::Run(record) => runs.push(record),
            Line::Summary(last) => summary = Some(last),
        }
    }
    let summary = summary.ok_or_else(|| BadInput(format!("{name}: no summary line at the end: the shard did not finish (or the file was cut short)")))?;
    if summary.tally.runs != runs.len() {
        return Err(BadInput(format!("{name}: the summary counts {} runs but the file holds {}", summary.tally.runs, runs.len())));
    }
    Ok(ShardFile { name, runs, summary })
}

/// serde_json's message without its own "at line 1 column N" (the caller names file:line:col).
fn message_of(error: &serde_json::Error) -> String {
    let text = error.to_string();
    text.rsplit_once(" at line ").map_or(text.clone(), |(message, _)| message.to_string())
}

/// Every run of the shards by its place in the unsharded order; each of the sweep's pairs once.
fn in_unsharded_order(shards: Vec<ShardFile>) -> Result<Vec<RunRecord>, BadInput> {
    let Some(first) = shards.first() else { return Err(BadInput("merge needs at least one --json file".into())) };
    let (pairs, first_name) = (first.summary.pairs, first.name.clone());
    let mut runs: Vec<(RunRecord, String)> = Vec::new();
    for shard in shards {
        if shard.summary.pairs != pairs {
            return Err(BadInput(format!("{}: a shard of a sweep of {} runs, but {first_name} is of {pairs}: not the same sweep", shard.name, shard.summary.pairs)));
        }
        let name = shard.name;
        runs.extend(shard.runs.into_iter().map(|record| (record, name.clone())));
    }
    runs.sort_by_key(|(record, _)| record.index);
    for (expected, pair) in runs.iter().enumerate() {
        let (record, file) = pair;
        if record.index < expected {
            let (_, earlier) = &runs[expected - 1];
            return Err(BadInput(format!("run {} ({} seed {}) is in both {earlier} and {file}: a shard merged twice", record.index, record.scenario, record.seed)));
        }
        if record.index > expected || record.index >= pairs {
            return Err(BadInput(format!("run {expected} of the sweep's {pairs} is in none of the files: a shard is missing")));
        }
    }
    if runs.len() < pairs {
        return Err(BadInput(format!("runs {} to {} of the sweep's {pairs} are in none of the files: a shard is missing", runs.len(), pairs - 1)));
    }
    Ok(runs.into_iter().map(|(record, _)| record).collect())
}
