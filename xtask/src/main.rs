//! Project tasks: `cargo xtask <task>`. Each calls cargo through $CARGO so the same toolchain
//! builds everything.
//!
//!   ci                 the layers, the determinism check, then the tests (what .ci/run does)
//!   layers             the crates keep their layers: no forbidden dependency, no module circle
//!   suite [SEEDS]      the fast suite over SEEDS seeds (default 50), release build
//!   check-determinism  every fast scenario, 10 seeds, second run in a fresh process
//!   crash-explore      every fast and storage scenario under every honest profile
//!   bench [SEEDS]      runs per second of the fast suite (default 20 seeds), release build
//!   defects [SEEDS]    every planted defect must be caught: by a suite, else by crash-explore
//!   surge              the 20,000-message surge, clean and with accept-beyond-capacity
//!   outage             the four-day outage under each operator answer

mod layers;

use std::process::{Command, ExitCode};
use std::time::Instant;

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn mailchaos(args: &[&str]) -> Command {
    let mut command = cargo();
    command.args(["run", "--quiet", "--release", "--package", "mailchaos", "--bin", "mailchaos", "--"]).args(args);
    command
}

fn status(mut command: Command) -> Result<bool, String> {
    command.status().map(|status| status.success()).map_err(|error| format!("cannot run {command:?}: {error}"))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let task = args.first().map(String::as_str).unwrap_or("help");
    let seeds = args.get(1).cloned();
    let result = match task {
        "ci" => ci(),
        "layers" => layers::check(),
        "suite" => status(mailchaos(&["run", "scenarios/fast", "--seeds", seeds.as_deref().unwrap_or("50")])),
        "check-determinism" => status(mailchaos(&["check-determinism", "scenarios/fast", "--seeds", seeds.as_deref().unwrap_or("10")])),
        "bench" => bench(seeds.as_deref().unwrap_or("20")),
        "defects" => defects(seeds.as_deref().unwrap_or("50")),
        "surge" => surge(),
        "crash-explore" => crash_explore(),
        "outage" => status(mailchaos(&["run", "scenarios/outage", "--seed", "1"])).map(|_| true),
        _ => {
            eprintln!("usage: cargo xtask ci | layers | suite [SEEDS] | check-determinism [SEEDS] | bench [SEEDS] | defects [SEEDS] | surge | outage | crash-explore");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::from(2)
        }
    }
}

fn ci() -> Result<bool, String> {
    if !layers::check()? {
        return Ok(false);
    }
    // The determinism check first, so that the test runner's summary closes the output.
    if !status(mailchaos(&["check-determinism", "scenarios/fast", "scenarios/storage", "scenarios/regressions", "--seeds", "5"]))? {
        return Ok(false);
    }
    // Crash states are drawn from the disk's own stream: prove that too, on a profile that
    // leaves many unsynced operations to choose from.
    let lying = ["check-determinism", "scenarios/fast/store-crash.toml", "scenarios/fast/mx-crash.toml", "--seeds", "3", "--profile", "lying-fsync"];
    if !status(mailchaos(&lying))? {
        return Ok(false);
    }
    let mut tests = cargo();
    tests.args(["nextest", "run", "--workspace", "--release"]);
    status(tests)
}

/// Runs the fast suite and reports runs per second as measured around the process (the
/// simulation itself never reads the wall clock).
fn bench(seeds: &str) -> Result<bool, String> {
    let mut build = cargo();
    build.args(["build", "--quiet", "--release", "--package", "mailchaos", "--bin", "mailchaos"]);
    if !status(build)? {
        return Ok(false);
    }
    let started = Instant::now();
    let output = mailchaos(&["run", "scenarios/fast", "--seeds", seeds]).output().map_err(|error| error.to_string())?;
    let seconds = started.elapsed().as_secs_f64();
    let text = String::from_utf8_lossy(&output.stdout);
    let runs = text.lines().filter(|line| line.contains(" verdict=")).count();
    println!("bench: fast suite, {runs} runs in {seconds:.2}s wall = {:.1} runs/s (seeds per scenario: {seeds})", runs as f64 / seconds);
    if let Some(summary) = text.lines().find(|line| line.starts_with("summary:")) {
        println!("{summary}");
    }
    Ok(output.status.success())
}

fn defects(seeds: &str) -> Result<bool, String> {
    let listing = mailchaos(&["list-defects"]).output().map_err(|error| error.to_string())?;
    let mut all_caught = true;
    for name in String::from_utf8_lossy(&listing.stdout).lines().filter_map(|line| line.split_whitespace().next()) {
        // The fast suite first, then the storage faults; load defects only show under the surge suite.
        let mut verdict = None;
        for (suite, suite_seeds) in [("scenarios/fast", seeds), ("scenarios/storage", seeds), ("scenarios/surge", "1")] {
            let output = mailchaos(&["run", suite, "--seeds", suite_seeds, "--defect", name]).output().map_err(|error| error.to_string())?;
            let text = String::from_utf8_lossy(&output.stdout).to_string();
            let summary = text.lines().find(|line| line.starts_with("summary:")).unwrap_or("no summary").to_string();
            verdict = Some((suite, output.status.code() == Some(1), summary));
            if output.status.code() == Some(1) {
                break;
            }
        }
        // A bug that shows only in some crash state (an unsynced unlink, say) is crash-explore's
        // to find: the crash moments of the two crash scenarios, every state each allows.
        if !verdict.as_ref().is_some_and(|(_, caught, _)| *caught) {
            for scenario in ["scenarios/fast/mx-crash.toml", "scenarios/fast/store-crash.toml"] {
                let output = mailchaos(&["crash-explore", scenario, "--seeds", "3", "--defect", name]).output().map_err(|error| error.to_string())?;
                let text = String::from_utf8_lossy(&output.stdout).to_string();
                let summary = text.lines().find(|line| line.starts_with("summary:")).unwrap_or("no summary").to_string();
                verdict = Some(("crash-explore", output.status.code() == Some(1), format!("{scenario}: {summary}")));
                if output.status.code() == Some(1) {
                    break;
                }
            }
        }
        let (suite, caught, summary) = verdict.unwrap_or(("none", false, String::new()));
        all_caught &= caught;
        println!("{name:<26} {} by {suite}: {summary}", if caught { "caught" } else { "MISSED" });
    }
    Ok(all_caught)
}

/// Every fast and storage scenario under every honest profile: crash-explore must find no
/// violating state. Prints the states explored and the rate.
fn crash_explore() -> Result<bool, String> {
    let mut files = Vec::new();
    for folder in ["scenarios/fast", "scenarios/storage"] {
        let entries = std::fs::read_dir(folder).map_err(|error| format!("{folder}: {error}"))?;
        let mut names: Vec<String> = entries.flatten().map(|entry| entry.path().display().to_string()).filter(|path| path.ends_with(".toml")).collect();
        names.sort();
        files.extend(names);
    }
    let mut all_clean = true;
    // The honest profiles must leave no violating state; lying-fsync leaves long logs of
    // unsynced operations, which makes it the throughput measure (its violations are expected).
    for profile in ["posix-strict", "linux-ext4-ordered", "linux-xfs", "libero-2023", "lying-fsync"] {
        let (mut states, mut seconds, mut failing) = (0u64, 0f64, 0usize);
        for file in &files {
            let output = mailchaos(&["crash-explore", file, "--profile", profile]).output().map_err(|error| error.to_string())?;
            let text = String::from_utf8_lossy(&output.stdout).to_string();
            let summary = text.lines().find(|line| line.starts_with("summary:")).unwrap_or("no summary").to_string();
            let field = |name: &str| summary.split_whitespace().find_map(|word| word.strip_prefix(name)).map(|value| value.trim_end_matches('s').to_string());
            states += field("states=").and_then(|value| value.parse().ok()).unwrap_or(0);
            seconds += field("exploring=").and_then(|value| value.parse().ok()).unwrap_or(0.0);
            failing += usize::from(!output.status.success());
        }
        let honest = profile != "lying-fsync";
        all_clean &= !honest || failing == 0;
        let rate = if seconds > 0.0 { format!("{:.0} states/s", states as f64 / seconds) } else { "too fast to time".into() };
        println!("crash-explore {profile:<20} {} scenarios: {states} states, {seconds:.2}s exploring ({rate}), {failing} scenarios with violating states{}", files.len(), if honest { "" } else { " (expected)" });
    }
    Ok(all_clean)
}

/// The surge must pass on the clean stack and fail with the MX that accepts beyond capacity.
fn surge() -> Result<bool, String> {
    let scenario = "scenarios/surge/reintegration-20k.toml";
    let started = Instant::now();
    let clean = status(mailchaos(&["run", scenario, "--seed", "1"]))?;
    println!("surge: clean run {} in {:.1}s wall", if clean { "passed" } else { "FAILED" }, started.elapsed().as_secs_f64());
    let planted = mailchaos(&["run", scenario, "--seed", "1", "--defect", "accept-beyond-capacity"]).output().map_err(|error| error.to_string())?;
    let caught = planted.status.code() == Some(1);
    println!("surge: accept-beyond-capacity {}", if caught { "caught" } else { "MISSED" });
    Ok(clean && caught)
}
