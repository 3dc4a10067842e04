//! `mailchaos bench SCENARIO [--seed N]`: one run measured against its floor, side by side in one
//! process. The floor (`sim::floor`) is a turmoil world with the run's hosts, tick, latencies and
//! length carrying the run's traffic (same connections, writes and bytes) between trivial hosts:
//! what the network simulation alone costs. The harness's cost over the floor's is what the
//! harness adds (the stack, the disks, the history, the checks).
//!
//! CPU time is the main thread's own (`/proc/thread-self/schedstat`, nanoseconds): the
//! simulation is single-threaded, and another process's load on a shared machine does not count.
//! Peak memory is the process's high-water mark (`VmHWM`), read after the run and its checks and
//! before the floor, which is far smaller.

use crate::bad_input::BadInput;
use crate::source;
use sim::seed::Seed;
use sim::world::{self, traffic::Traffic, RunOptions};
use stack::Defects;
use std::path::Path;

/// What one bench prints: the line `cargo xtask bench` reads back.
pub struct Measured {
    pub scenario: String,
    pub seed: Seed,
    pub messages: usize,
    pub events: usize,
    pub connections: usize,
    pub segments: usize,
    pub bytes: u64,
    pub simulated_s: f64,
    pub run_cpu_s: f64,
    pub check_cpu_s: f64,
    pub floor_cpu_s: f64,
    pub peak_rss_bytes: u64,
    pub verdict: String,
    pub digest: String,
    /// CPU seconds of each step of the check (`check::check_all_costed`), the digest last.
    pub check_costs: Vec<(&'static str, f64)>,
}

impl Measured {
    pub fn harness_cpu_s(&self) -> f64 {
        self.run_cpu_s + self.check_cpu_s
    }

    pub fn line(&self) -> String {
        let harness = self.harness_cpu_s();
        format!(
            "bench scenario={} seed={} messages={} events={} connections={} segments={} bytes={} simulated_s={:.0} \
             harness_cpu_s={harness:.3} run_cpu_s={:.3} check_cpu_s={:.3} floor_cpu_s={:.3} harness_over_floor={:.2} \
             check_share={:.3} simulated_s_per_cpu_s={:.0} peak_rss_mib={:.0} bytes_per_event={:.0} verdict={} digest={}",
            self.scenario,
            self.seed,
            self.messages,
            self.events,
            self.connections,
            self.segments,
            self.bytes,
            self.simulated_s,
            self.run_cpu_s,
            self.check_cpu_s,
            self.floor_cpu_s,
            harness / self.floor_cpu_s.max(1e-9),
            self.check_cpu_s / harness.max(1e-9),
            self.simulated_s / harness.max(1e-9),
            self.peak_rss_bytes as f64 / (1024.0 * 1024.0),
            self.peak_rss_bytes as f64 / self.events.max(1) as f64,
            self.verdict,
            self.digest,
        )
    }
}

impl Measured {
    /// `bench-check facts=0.412 A2=0.051 …`: the check's steps by CPU seconds, the costliest
    /// first (those above a millisecond): where to look when checking is too large a share.
    pub fn check_line(&self) -> String {
        let mut steps: Vec<&(&str, f64)> = self.check_costs.iter().filter(|(_, s)| *s >= 0.001).collect();
        steps.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
        let fields: Vec<String> = steps.iter().map(|(step, s)| format!("{step}={s:.3}")).collect();
        format!("bench-check {}", fields.join(" "))
    }
}

pub fn bench(path: &Path, seed: Option<&str>) -> Result<bool, BadInput> {
    let source = source::one_of(path)?;
    let seed = match seed {
        Some(text) => Seed::parse(text).map_err(BadInput)?,
        None => Seed(1),
    };
    let measured = measure(&source.loaded.scenario, seed).map_err(BadInput)?;
    crate::shared::say_line(&measured.line());
    crate::shared::say_line(&measured.check_line());
    Ok(true)
}

/// Runs the scenario (recording its traffic), judges it, then runs its floor.
pub fn measure(scenario: &sim::scenario::Scenario, seed: Seed) -> Result<Measured, String> {
    let traffic = Traffic::new();
    let options = RunOptions { traffic: Some(traffic.clone()), ..RunOptions::default() };
    let started = thread_cpu_ns()?;
    let output = world::run_with(scenario, seed, &Defects::default(), &options);
    let ran = thread_cpu_ns()?;
    let clock = || thread_cpu_ns().unwrap_or(0);
    let (violations, check_costs) = check::check_all_costed(&output, &clock);
    let digest_started = thread_cpu_ns()?;
    let digest = output.history.digest();
    let checked = thread_cpu_ns()?;
    let mut check_costs: Vec<(&'static str, f64)> = check_costs.into_iter().map(|(step, ns)| (step, seconds(ns))).collect();
    check_costs.push(("digest", seconds(checked.saturating_sub(digest_started))));
    let peak_rss_bytes = peak_rss_bytes()?;
    let connections = traffic.connections();
    let floor_started = thread_cpu_ns()?;
    sim::floor::run(scenario, seed, &connections, output.ended_at_ms);
    let floor_ended = thread_cpu_ns()?;
    let mut names: Vec<&str> = violations.iter().map(|violation| violation.invariant).collect();
    names.sort_unstable();
    names.dedup();
    let verdict = if names.is_empty() { "ok".to_string() } else { format!("violation({})", names.join(",")) };
    let measured = Measured {
        scenario: scenario.name.clone(),
        seed,
        messages: sim::world::plan::make(scenario, seed).workload.iter().map(Vec::len).sum(),
        events: output.history.records.len(),
        connections: connections.len(),
        segments: connections.iter().map(|connection| connection.writes.iter().map(Vec::len).sum::<usize>()).sum(),
        bytes: connections.iter().map(|connection| connection.bytes()).sum(),
        simulated_s: output.ended_at_ms as f64 / 1000.0,
        run_cpu_s: seconds(ran - started),
        check_cpu_s: seconds(checked - ran),
        floor_cpu_s: seconds(floor_ended - floor_started),
        peak_rss_bytes,
        verdict,
        digest,
        check_costs,
    };
    // The history is large and the process ends here: its drop is not the run's cost.
    std::mem::forget(output);
    Ok(measured)
}

fn seconds(nanoseconds: u64) -> f64 {
    nanoseconds as f64 / 1e9
}

/// The CPU time this thread has run, in nanoseconds (Linux's scheduler statistics).
fn thread_cpu_ns() -> Result<u64, String> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").map_err(|error| format!("bench needs Linux's /proc/thread-self/schedstat: {error}"))?;
    text.split_whitespace().next().and_then(|field| field.parse().ok()).ok_or_else(|| format!("/proc/thread-self/schedstat: unexpected content '{}'", text.trim()))
}

/// The process's peak resident memory (`VmHWM` of /proc/self/status), in bytes.
fn peak_rss_bytes() -> Result<u64, String> {
    let text = std::fs::read_to_string("/proc/self/status").map_err(|error| format!("bench needs Linux's /proc/self/status: {error}"))?;
    let kib = text.lines().find_map(|line| line.strip_prefix("VmHWM:")).and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
    kib.map(|kib| kib * 1024).ok_or_else(|| "/proc/self/status: no VmHWM line".to_string())
}
