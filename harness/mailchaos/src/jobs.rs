//! `--jobs N` (`run`, `swarm`, `check-determinism`, `vendor-compare`): a sweep's runs spread
//! over N worker processes (processes, not threads: the `fail` crate's registry of fail points
//! is global to a process). A worker is this program run again with the same command line
//! (scenarios, seeds, defects, profile), a hidden `--worker W/N`, and the JSON lines of its
//! runs on stdout. The parent takes run number n of its sweep (or shard) from worker n % N, in
//! order, so the output and summary are the same for any N. `run`'s workers send `results::Line`
//! (run records, then a summary); the other commands' send `Sent` (an item, then `Done`).

use crate::bad_input::BadInput;
use crate::results::Line;
use crate::shard::Shard;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Lines};
use std::process::{Child, ChildStdout, Command, Stdio};

/// More workers than this is not a machine this runs on.
pub const MAX_JOBS: u64 = 256;

/// A JSON line of a worker longer than this is not one of ours.
const MAX_LINE_BYTES: usize = 64 << 20;

/// `--worker W/N`: which worker this process is (0-based) of how many.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Worker {
    pub index: u64,
    pub count: u64,
}

impl Worker {
    pub fn parse(text: &str) -> Result<Worker, BadInput> {
        let parsed = text.split_once('/').and_then(|(w, n)| Some(Worker { index: w.parse().ok()?, count: n.parse().ok()? }));
        parsed.filter(|worker| worker.index < worker.count && worker.count <= MAX_JOBS).ok_or_else(|| BadInput(format!("--worker {}: expected W/N with W < N <= {MAX_JOBS}", input::clip(text))))
    }

    /// Whether pair `index`, one of the shard's, is this worker's: the shard's runs are dealt
    /// round-robin, run number n of the shard (pair n * count + its index) to worker n % N.
    pub fn owns(&self, shard: Shard, index: usize) -> bool {
        self.deals((index as u64 / shard.count) as usize)
    }
}

/// What a worker sends: one line per item of its share, then `Done`.
pub trait Sendable: DeserializeOwned {
    /// The item's place in the sweep, or None for the worker's last line.
    fn index(&self) -> Option<usize>;
}

impl Sendable for Line {
    fn index(&self) -> Option<usize> {
        match self {
            Line::Run(record) => Some(record.index),
            Line::Summary(_) => None,
        }
    }
}

/// A line of the workers of `swarm`, `check-determinism` and `vendor-compare`.
#[derive(Serialize, Deserialize)]
pub enum Sent<T> {
    /// The item at this place in the sweep (the place, 0-based, among the items of the sweep).
    Item(usize, T),
    Done,
}

impl<T: DeserializeOwned> Sendable for Sent<T> {
    fn index(&self) -> Option<usize> {
        match self {
            Sent::Item(index, _) => Some(*index),
            Sent::Done => None,
        }
    }
}

impl Worker {
    /// Whether item number `n` (0-based, in the order of the sweep or shard) is this worker's.
    pub fn deals(&self, n: usize) -> bool {
        n as u64 % self.count == self.index
    }

    /// A worker's whole life: computes each of its items, sends it as a JSON line, then `Done`.
    /// Ok(false) when an item failed (`failed` says which), as the parent will say too.
    pub fn serve<T: Serialize>(&self, total: usize, mut compute: impl FnMut(usize) -> Result<(T, bool), BadInput>) -> Result<bool, BadInput> {
        let mut clean = true;
        for n in (0..total).filter(|n| self.deals(*n)) {
            let (item, failed) = compute(n)?;
            clean &= !failed;
            send(&Sent::Item(n, item))?;
        }
        send(&Sent::<T>::Done)?;
        Ok(clean)
    }
}

fn send<T: Serialize>(line: &Sent<T>) -> Result<(), BadInput> {
    let text = serde_json::to_string(line).map_err(|error| BadInput(format!("cannot encode a result: {error}")))?;
    crate::shared::say_line(&text);
    Ok(())
}

/// Items 0..total in order, each computed here (`jobs` 1) or taken from worker n % jobs, which
/// runs `args` (the command line, command name first) with `--worker W/jobs`; `each` gets
/// them in order. The output built from them is therefore the same for any number of jobs.
pub fn in_order<T: DeserializeOwned>(
    total: usize,
    jobs: u64,
    args: &[OsString],
    mut compute: impl FnMut(usize) -> Result<T, BadInput>,
    mut each: impl FnMut(usize, T) -> Result<(), BadInput>,
) -> Result<(), BadInput> {
    if jobs == 1 {
        return (0..total).try_for_each(|n| each(n, compute(n)?));
    }
    let mut workers = Workers::spawn(args, jobs)?;
    for n in 0..total {
        let item = match workers.next::<Sent<T>>((n as u64 % jobs) as usize, n)? {
            Sent::Item(_, item) => item,
            Sent::Done => return Err(BadInput(format!("worker {} ended before item {n}", n as u64 % jobs))),
        };
        each(n, item)?;
    }
    workers.finish::<Sent<T>>()
}

/// Checks `--jobs`: 1 to MAX_JOBS.
pub fn check_jobs(jobs: u64) -> Result<u64, BadInput> {
    match (1..=MAX_JOBS).contains(&jobs) {
        true => Ok(jobs),
        false => Err(BadInput(format!("--jobs must be from 1 to {MAX_JOBS}, got {jobs}"))),
    }
}

/// The running workers; dropped, it kills those still running (an error ended the sweep).
pub struct Workers {
    children: Vec<Child>,
    lines: Vec<Lines<BufReader<ChildStdout>>>,
}

impl Workers {
    /// Starts `jobs` workers, each with `args` (the command line, command name first) and its
    /// `--worker`.
    pub fn spawn(args: &[OsString], jobs: u64) -> Result<Workers, BadInput> {
        let exe = std::env::current_exe().map_err(|error| BadInput(format!("cannot find own executable: {error}")))?;
        // The same argv[0] as this process, so a worker's repro lines name the program alike.
        let arg0 = std::env::args_os().next().unwrap_or_else(|| exe.clone().into_os_string());
        let mut workers = Workers { children: Vec::new(), lines: Vec::new() };
        for index in 0..jobs {
            let mut command = Command::new(&exe);
            std::os::unix::process::CommandExt::arg0(&mut command, &arg0);
            command.args(args).arg("--worker").arg(format!("{index}/{jobs}"));
            let mut child = command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().map_err(|error| BadInput(format!("cannot start worker {index}: {error}")))?;
            let stdout = child.stdout.take().ok_or_else(|| BadInput(format!("worker {index}: no stdout")))?;
            workers.children.push(child);
            workers.lines.push(BufReader::new(stdout).lines());
        }
        Ok(workers)
    }

    /// The record of pair `index` from the worker that runs it, which must send exactly that.
    pub fn next<T: Sendable>(&mut self, worker: usize, index: usize) -> Result<T, BadInput> {
        let line = self.line::<T>(worker)?;
        let sent = match line.index() {
            Some(sent) if sent == index => return Ok(line),
            Some(sent) => format!("run {sent}"),
            None => "its summary".to_string(),
        };
        Err(BadInput(format!("worker {worker} sent {sent} where run {index} was due (a bug of the worker protocol)")))
    }

    /// Waits for every worker to send its summary and end.
    pub fn finish<T: Sendable>(mut self) -> Result<(), BadInput> {
        for worker in 0..self.children.len() {
            if self.line::<T>(worker)?.index().is_some() {
                return Err(BadInput(format!("worker {worker} sent more runs than it was dealt")));
            }
        }
        for (worker, child) in self.children.iter_mut().enumerate() {
            let status = child.wait().map_err(|error| BadInput(format!("worker {worker}: {error}")))?;
            // 1 is a violation, which the records already carry.
            if !matches!(status.code(), Some(0 | 1)) {
                return Err(BadInput(format!("worker {worker} ended with {status}")));
            }
        }
        self.children.clear();
        Ok(())
    }

    fn line<T: Sendable>(&mut self, worker: usize) -> Result<T, BadInput> {
        let lines = self.lines.get_mut(worker).ok_or_else(|| BadInput(format!("no worker {worker}")))?;
        let text = match lines.next() {
            Some(Ok(text)) => text,
            Some(Err(error)) => return Err(BadInput(format!("worker {worker}: cannot read: {error}"))),
            None => return Err(BadInput(format!("worker {worker} ended before its runs were done (its error is above)"))),
        };
        if text.len() > MAX_LINE_BYTES {
            return Err(BadInput(format!("worker {worker} sent a line of {} bytes", text.len())));
        }
        serde_json::from_str(&text).map_err(|error| BadInput(format!("worker {worker} sent what is not a result: {error}")))
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        // Only when an error ends the sweep early: our own children, by their handles.
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
