//! `--shard K/N`: which of a sweep's (scenario, seed) pairs this process runs. Pair `i` (in the
//! unsharded order: scenarios as listed, seeds in order within each) belongs to shard
//! `i % N + 1`, so the N shards together run every pair exactly once and each gets an even
//! mix of scenarios. Without the flag the shard comes from the batch engine's environment: a
//! Kubernetes Indexed Job (`JOB_COMPLETION_INDEX`, N from `--shards`) or a Slurm job array
//! (`SLURM_ARRAY_TASK_ID` - `SLURM_ARRAY_TASK_MIN` of `SLURM_ARRAY_TASK_COUNT`).

use crate::bad_input::BadInput;

/// More shards than this is a typo, not a cluster (and keeps every count in range).
pub const MAX_SHARDS: u64 = 1_000_000;

/// One shard of N: `index` is 0-based, `count` at least 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: u64,
    pub count: u64,
}

impl Shard {
    /// The whole sweep.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// Whether pair `i` of the unsharded order is this shard's.
    pub fn owns(&self, pair: usize) -> bool {
        pair as u64 % self.count == self.index
    }

    /// `K/N`, 1-based, as the flag takes it.
    pub fn label(&self) -> String {
        format!("{}/{}", self.index + 1, self.count)
    }
}

/// The shard of a command line: `--shard K/N` first, else the engine's environment (read
/// through `env`, so tests need not set the process's own), else the whole sweep.
pub fn resolve(flag: Option<&str>, shards: Option<u64>, env: &dyn Fn(&str) -> Option<String>) -> Result<Shard, BadInput> {
    if let Some(text) = flag {
        return parse_flag(text);
    }
    if let Some(index) = env("JOB_COMPLETION_INDEX") {
        return kubernetes(&index, shards);
    }
    if let Some(task) = env("SLURM_ARRAY_TASK_ID") {
        return slurm(&task, shards, env);
    }
    match shards {
        // Silently running everything N times over would be the costly mistake.
        Some(_) => Err(BadInput("--shards N takes this shard's index from JOB_COMPLETION_INDEX (a Kubernetes Indexed Job), which is not set; use --shard K/N".into())),
        None => Ok(Shard::ALL),
    }
}

/// `--shard K/N`, K from 1 to N.
fn parse_flag(text: &str) -> Result<Shard, BadInput> {
    let bad = |why: &str| BadInput(format!("--shard {}: {why}", input::clip(text)));
    let (k, n) = text.split_once('/').ok_or_else(|| bad("expected K/N, as in --shard 2/4"))?;
    let k: u64 = k.trim().parse().map_err(|_| bad("K is not a whole number (expected K/N, as in --shard 2/4)"))?;
    let count = shard_count(n.trim()).map_err(|why| bad(&why))?;
    if k == 0 || k > count {
        return Err(bad(&format!("K must be from 1 to {count} (shards are numbered from 1)")));
    }
    Ok(Shard { index: k - 1, count })
}

/// N, from 1 to MAX_SHARDS.
fn shard_count(text: &str) -> Result<u64, String> {
    match text.parse::<u64>() {
        Ok(count) if (1..=MAX_SHARDS).contains(&count) => Ok(count),
        Ok(count) => Err(format!("the number of shards must be from 1 to {MAX_SHARDS}, got {count}")),
        Err(_) => Err(format!("the number of shards '{}' is not a whole number", input::clip(text))),
    }
}

/// A Kubernetes Indexed Job: a 0-based index; N is the Job's completions, given as --shards.
fn kubernetes(index: &str, shards: Option<u64>) -> Result<Shard, BadInput> {
    let Some(count) = shards else {
        return Err(BadInput("JOB_COMPLETION_INDEX is set (a Kubernetes Indexed Job): pass --shards N, the Job's completions, or --shard K/N".into()));
    };
    let count = shard_count(&count.to_string()).map_err(|why| BadInput(format!("--shards {count}: {why}")))?;
    let index = number("JOB_COMPLETION_INDEX", index)?;
    if index >= count {
        return Err(BadInput(format!("JOB_COMPLETION_INDEX={index} is out of range for --shards {count} (0-based: 0 to {})", count - 1)));
    }
    Ok(Shard { index, count })
}

/// A Slurm job array: the task's place is its id minus the array's first id, of
/// SLURM_ARRAY_TASK_COUNT tasks. Arrays with a step (`--array=0-15:4`) are not dense and are refused.
fn slurm(task: &str, shards: Option<u64>, env: &dyn Fn(&str) -> Option<String>) -> Result<Shard, BadInput> {
    let task = number("SLURM_ARRAY_TASK_ID", task)?;
    let first = number("SLURM_ARRAY_TASK_MIN", &env("SLURM_ARRAY_TASK_MIN").unwrap_or_default())?;
    let count_text = env("SLURM_ARRAY_TASK_COUNT").unwrap_or_default();
    let count = number("SLURM_ARRAY_TASK_COUNT", &count_text)?;
    let count = shard_count(&count.to_string()).map_err(|why| BadInput(format!("SLURM_ARRAY_TASK_COUNT={count}: {why}")))?;
    if shards.is_some_and(|shards| shards != count) {
        return Err(BadInput(format!("--shards {} disagrees with SLURM_ARRAY_TASK_COUNT={count}", shards.unwrap_or_default())));
    }
    let index = task.checked_sub(first).filter(|index| *index < count).ok_or_else(|| {
        BadInput(format!("SLURM_ARRAY_TASK_ID={task} is not one of the {count} tasks from SLURM_ARRAY_TASK_MIN={first} (use a dense array, --array=0-{})", count - 1))
    })?;
    Ok(Shard { index, count })
}

/// A variable's value as a whole number; a missing or junk value names the variable.
fn number(variable: &str, text: &str) -> Result<u64, BadInput> {
    text.trim().parse().map_err(|_| match text.is_empty() {
        true => BadInput(format!("{variable} is not set (a Slurm job array sets SLURM_ARRAY_TASK_ID, _MIN and _COUNT together)")),
        false => BadInput(format!("{variable}='{}' is not a whole number", input::clip(text))),
    })
}
