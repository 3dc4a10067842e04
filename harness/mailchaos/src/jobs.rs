//! `run --jobs N`: the sweep's runs spread over N worker processes (processes, not threads:
//! the `fail` crate's registry of fail points is global to a process). A worker is this
//! program run again with the same scenarios, seeds, defects and profile, a hidden
//! `--worker W/N`, and the JSON lines of its runs on stdout. The parent takes run number n
//! of its shard from worker n % N, in order, so the output and summary are the same for any N.

use crate::bad_input::BadInput;
use crate::results::{Line, RunRecord};
use crate::shard::Shard;
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
        (index as u64 / shard.count) % self.count == self.index
    }
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
    /// Starts `jobs` workers, each with `args` (the run's own arguments) and its `--worker`.
    pub fn spawn(args: &[OsString], shard: Shard, jobs: u64) -> Result<Workers, BadInput> {
        let exe = std::env::current_exe().map_err(|error| BadInput(format!("cannot find own executable: {error}")))?;
        // The same argv[0] as this process, so a worker's repro lines name the program alike.
        let arg0 = std::env::args_os().next().unwrap_or_else(|| exe.clone().into_os_string());
        let mut workers = Workers { children: Vec::new(), lines: Vec::new() };
        for index in 0..jobs {
            let mut command = Command::new(&exe);
            std::os::unix::process::CommandExt::arg0(&mut command, &arg0);
            command.arg("run").args(args).arg("--shard").arg(shard.label()).arg("--worker").arg(format!("{index}/{jobs}"));
            let mut child = command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().map_err(|error| BadInput(format!("cannot start worker {index}: {error}")))?;
            let stdout = child.stdout.take().ok_or_else(|| BadInput(format!("worker {index}: no stdout")))?;
            workers.children.push(child);
            workers.lines.push(BufReader::new(stdout).lines());
        }
        Ok(workers)
    }

    /// The record of pair `index` from the worker that runs it, which must send exactly that.
    pub fn next(&mut self, worker: usize, index: usize) -> Result<RunRecord, BadInput> {
        let sent = match self.line(worker)? {
            Line::Run(record) if record.index == index => return Ok(record),
            Line::Run(record) => format!("run {}", record.index),
            Line::Summary(_) => "its summary".to_string(),
        };
        Err(BadInput(format!("worker {worker} sent {sent} where run {index} was due (a bug of the worker protocol)")))
    }

    /// Waits for every worker to send its summary and end.
    pub fn finish(mut self) -> Result<(), BadInput> {
        for worker in 0..self.children.len() {
            if !matches!(self.line(worker)?, Line::Summary(_)) {
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

    fn line(&mut self, worker: usize) -> Result<Line, BadInput> {
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
