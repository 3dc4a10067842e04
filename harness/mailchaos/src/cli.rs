//! The `mailchaos` command line. Exit codes: 0 every invariant held, 1 a violation (or a
//! divergence), 2 bad input.

use check::{self, Violation};
use crate::report;
use crate::results::{self, JsonWriter, JunitWriter, Line, RunRecord, Summary, Tally};
use crate::jobs;
use crate::progress::Progress;
use crate::shard::{self, Shard};
use crate::source::{self, Source};
use sim::scenario::Loaded;
pub use crate::bad_input::BadInput;
use sim::seed::Seed;
use stack::{Defect, Defects};
use devices::profile::Profile;
use sim::world::{self, RunOptions, RunOutput};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Prints a line to stdout. A closed stdout (`mailchaos run | head`) ends the program quietly
/// instead of panicking as `println!` would.
macro_rules! say {
    ($($arg:tt)*) => {{
        $crate::shared::say_line(&format!($($arg)*));
    }};
}

pub use crate::source::{EMBEDDED_FAST, EMBEDDED_STORAGE};
use crate::shared::{parse_defects, program};

/// What every help text ends with: the exit codes scripts and CI rely on.
pub const EXIT_CODES: &str = "Exit status: 0 every invariant held (or the command succeeded), 1 a violation (or a \
divergence), 2 bad input (the message names file:line:col, the flag or the path).";

#[derive(Parser, Debug)]
#[command(name = "mailchaos", version, about = "Deterministic simulation of a mail stack under storage, network and crash faults")]
#[command(disable_help_subcommand = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Running the store on real storage (one scenario, one seed).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct RealStore {
    /// The store's disk is this real directory (created; must be empty): a vendor's mount.
    #[arg(long, requires = "ledger")]
    pub store_dir: Option<PathBuf>,
    /// Every acknowledged message is appended here durably, for `verify-store` after a power cut.
    #[arg(long, requires = "store_dir")]
    pub ledger: Option<PathBuf>,
    /// End the run abruptly at this simulated second, unjudged (a power cut of the harness).
    #[arg(long, hide = true)]
    pub stop_after_s: Option<u64>,
}

#[derive(clap::Args, Debug, Clone, Default)]
pub struct Runs {
    /// First seed (decimal or 0x-hex). Alone, it runs just that seed.
    #[arg(long)]
    pub seed: Option<String>,
    /// How many consecutive seeds to run per scenario (default 20, or 1 with --seed).
    #[arg(long)]
    pub seeds: Option<u64>,
    /// Switch on a planted defect (see list-defects); repeatable.
    #[arg(long = "defect")]
    pub defects: Vec<String>,
    /// Persistence profile of the MX's and the store's disks: a shipped name (see list-profiles)
    /// or a profile file. Default: posix-strict.
    #[arg(long)]
    pub profile: Option<String>,
    /// Refuse (exit 2) unless the scenario and the profile still hash to this
    /// (`<scenario>-<profile>`, as a run line's `scenario=` and `profile=` print them), so that a
    /// replay never runs an edited file in place of what ran.
    #[arg(long, value_name = "SCENARIO-PROFILE")]
    pub expect_hash: Option<String>,
}

/// Splitting a sweep across processes or machines.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct Split {
    /// Run only shard K of N (1-based): pair i of the (scenario, seed) pairs, in the unsharded
    /// order, belongs to shard i % N + 1. Without it the shard comes from JOB_COMPLETION_INDEX
    /// (a Kubernetes Indexed Job, with --shards) or SLURM_ARRAY_TASK_ID (a Slurm job array).
    #[arg(long, value_name = "K/N", conflicts_with = "store_dir")]
    pub shard: Option<String>,
    /// N, the number of shards, for a Kubernetes Indexed Job (its completions).
    #[arg(long, value_name = "N")]
    pub shards: Option<u64>,
    /// Worker processes to run the sweep on (processes: fail points are global to a process).
    /// The output and the summary are the same for any number.
    #[arg(long, value_name = "N", default_value_t = 1, conflicts_with = "store_dir")]
    pub jobs: u64,
    /// A worker of --jobs: W/N, 0-based; its runs as JSON lines on stdout.
    #[arg(long, hide = true, value_name = "W/N")]
    pub worker: Option<String>,
    /// No progress bar on stderr (there is one only when stderr is a terminal).
    #[arg(long)]
    pub quiet: bool,
}

/// `--jobs`, `--quiet` and the hidden `--worker` of the commands that sweep without shards.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct Parallel {
    /// Worker processes to run the sweep on (processes: fail points are global to a process).
    /// The output is the same for any number.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub jobs: u64,
    /// A worker of --jobs: W/N, 0-based; its results as JSON lines on stdout.
    #[arg(long, hide = true, value_name = "W/N")]
    pub worker: Option<String>,
    /// No progress bar on stderr (there is one only when stderr is a terminal).
    #[arg(long)]
    pub quiet: bool,
}

/// Machine-readable results of a sweep.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct Reports {
    /// Also write the results here as JSON lines: one object per run (scenario, seed, verdict,
    /// violations, digest, repro line), then the summary. `merge` reads these files.
    #[arg(long, value_name = "FILE", conflicts_with = "store_dir")]
    pub json: Option<PathBuf>,
    /// Also write a JUnit XML report here, as CI tools read it: one testcase per scenario x
    /// seed (classname the scenario, name the seed), a failure with the violations and the
    /// repro line.
    #[arg(long, value_name = "FILE", conflicts_with = "store_dir")]
    pub junit: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run scenario files or folders (default: the embedded fast suite) over seeds and judge them.
    Run {
        /// Scenario files, folders of them, or built-in copies (embedded:fast,
        /// embedded:storage, embedded:regressions, embedded:fast/<name>). None: the built-in fast suite.
        paths: Vec<PathBuf>,
        #[command(flatten)]
        runs: Runs,
        #[command(flatten)]
        real: RealStore,
        #[command(flatten)]
        split: Split,
        #[command(flatten)]
        reports: Reports,
    },
    /// Combine the --json files of a sweep's shards: every run in the unsharded order, then one
    /// summary, as the unsharded run prints them. Exit 1 if any run failed; 2 if a file is
    /// malformed or a shard is missing or given twice.
    Merge {
        /// The --json files of the shards (any order).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Also write one JUnit XML report of all the runs here.
        #[arg(long, value_name = "FILE")]
        junit: Option<PathBuf>,
    },
    /// Replay one run exactly, print its history, and explain each violation.
    Repro {
        /// The scenario file (or embedded:<suite>/<name>) the run line's repro names.
        scenario: PathBuf,
        #[command(flatten)]
        runs: Runs,
        /// Also write the history as JSON lines to this file.
        #[arg(long)]
        history: Option<PathBuf>,
        /// Also draw the run's timeline into this file (.svg, or .html: a page around it).
        #[arg(long, value_name = "FILE")]
        timeline: Option<PathBuf>,
    },
    /// Draw one run as a picture: a lane per host, fault windows and outages as bands, curves
    /// over time (pairs accepted, deferred, bounced, delivered; the MX's queue; open sessions),
    /// violations marked with their record numbers. Self-contained SVG, or an HTML page around
    /// it (inline, no script, nothing fetched). Exit 1 when the run violated an invariant (the
    /// picture is written all the same).
    Timeline {
        /// The scenario file (or embedded:<suite>/<name>) to run.
        scenario: PathBuf,
        #[command(flatten)]
        runs: Runs,
        /// Where to write it: FILE.svg or FILE.html.
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: PathBuf,
    },
    /// Replay an outage under each operator answer (default: 5xx-bounce, 4xx-tempfail,
    /// closed-port) with the same seed and workload, and join the runs message by message from
    /// their histories: per provider and per policy the (message, recipient) pairs delivered,
    /// bounced at once on 5xx, bounced on expiry, delay notices, lost, duplicated and the delay
    /// to the mailbox (p50, p90, max); what the 5xx answer cost against each other answer; the
    /// pairs whose fate changed. Prints the tables and writes report.json, report.csv and a
    /// self-contained report.html (the tables and the runs' timelines side by side) into -o.
    /// Exit 0 when every run kept every invariant except those its answer violates by design
    /// (5xx-bounce: A12 and A22), 1 otherwise.
    WhatIf {
        /// A scenario file (or embedded:<suite>/<name>) with a kind = "outage" fault; its own
        /// answer is replaced by each one asked for.
        scenario: PathBuf,
        /// The seed (decimal or 0x-hex; default 1).
        #[arg(long)]
        seed: Option<String>,
        /// An operator answer to run (5xx-bounce, 4xx-tempfail, closed-port); repeatable, in
        /// the order given. Default: all three.
        #[arg(long = "answer", value_name = "ANSWER")]
        answers: Vec<String>,
        /// Switch on a planted defect in every run (see list-defects); repeatable.
        #[arg(long = "defect")]
        defects: Vec<String>,
        /// The folder the reports are written into (created).
        #[arg(short = 'o', long = "output", value_name = "DIR", default_value = crate::whatif::DEFAULT_DIR)]
        output: PathBuf,
    },
    /// Run each seed twice, the second time in a fresh process, and compare history digests.
    CheckDeterminism {
        /// Scenario files, folders of them, or built-in copies (embedded:fast, ...). None: the
        /// built-in fast suite, in both processes.
        paths: Vec<PathBuf>,
        #[command(flatten)]
        runs: Runs,
        /// Check swarm seeds instead of scenario files: each seed's generated scenario (drawn
        /// from --profiles) is run here and in a fresh process.
        #[arg(long, conflicts_with_all = ["paths", "profile", "expect_hash"])]
        swarm: bool,
        /// With --swarm: the profile set the scenarios are drawn from.
        #[arg(long, default_value = "honest", requires = "swarm")]
        profiles: String,
        #[command(flatten)]
        parallel: Parallel,
    },
    /// Swarm testing: each seed draws a whole scenario (every fault kind on with probability
    /// 1/2, its targets and windows, the workload, a persistence profile of the set), runs it
    /// and judges it. Each run line shows `plan=`, the switches the seed turned on; the summary
    /// ends with the coverage table (per switch: runs enabled, fired, with a violation; per
    /// invariant: runs with anything to judge, runs violated).
    Swarm {
        /// First seed (decimal or 0x-hex). Alone, it runs just that seed.
        #[arg(long)]
        seed: Option<String>,
        /// How many consecutive seeds (default 100, or 1 with --seed).
        #[arg(long)]
        seeds: Option<u64>,
        /// The profile set: honest (profiles and faults that keep durability promises),
        /// dishonest (devices that break them, and every fault kind), all.
        #[arg(long, default_value = "honest")]
        profiles: String,
        /// Switch on a planted defect (see list-defects); repeatable.
        #[arg(long = "defect")]
        defects: Vec<String>,
        /// Write the scenario of --seed to this file instead of running it; `mailchaos run FILE
        /// --seed S` then replays the run with the identical digest.
        #[arg(long, value_name = "FILE")]
        emit_scenario: Option<PathBuf>,
        /// Run only shard K of N (1-based): seed number i (from 0) belongs to shard i % N + 1.
        /// Without it the shard comes from JOB_COMPLETION_INDEX (with --shards) or
        /// SLURM_ARRAY_TASK_ID, as for run.
        #[arg(long, value_name = "K/N", conflicts_with = "emit_scenario")]
        shard: Option<String>,
        /// N, the number of shards, for a Kubernetes Indexed Job (its completions).
        #[arg(long, value_name = "N", conflicts_with = "emit_scenario")]
        shards: Option<u64>,
        /// Also write the results here as JSON lines: one object per seed (seed, plan, verdict,
        /// violations, digest, repro lines, coverage), then the summary. `merge` reads these.
        #[arg(long, value_name = "FILE", conflicts_with = "emit_scenario")]
        json: Option<PathBuf>,
        #[command(flatten)]
        parallel: Parallel,
    },
    /// Crash at every crash moment of one run (the scenario's crashes and the first hits of
    /// every fail point of the stack), take every disk state the profile allows there, recover
    /// the host on each and judge it against what had been acknowledged.
    CrashExplore {
        /// The scenario file (or embedded:<suite>/<name>) whose run is explored.
        scenario: PathBuf,
        #[command(flatten)]
        runs: Runs,
        /// States per moment at most. Up to 12 unsynced operations every allowed state is
        /// taken; beyond, every prefix, single omission and single torn write, then samples.
        #[arg(long, default_value_t = 2000)]
        max_states: usize,
    },
    /// Run a suite (default: the built-in fast and storage suites) under a baseline and a
    /// candidate persistence profile and compare, invariant by invariant. Exit 1 when the
    /// candidate breaks an invariant that the baseline keeps.
    VendorCompare {
        /// Scenario files or folders (default: the built-in fast and storage suites).
        paths: Vec<PathBuf>,
        /// The profile the device is compared against: a shipped name or a file.
        #[arg(long)]
        baseline: String,
        /// The profile under test (a new device, a firmware update): a shipped name or a file.
        #[arg(long)]
        candidate: String,
        /// First seed (default 1).
        #[arg(long)]
        seed: Option<String>,
        /// Seeds per scenario (default 20).
        #[arg(long)]
        seeds: Option<u64>,
        /// Switch on a planted defect in both runs; repeatable.
        #[arg(long = "defect")]
        defects: Vec<String>,
        #[command(flatten)]
        parallel: Parallel,
    },
    /// Make a failing run small: remove faults, narrow their windows and move them earlier, lower
    /// the message, provider and mailbox counts, shorten the chaos phase and the horizon, drop
    /// optional workload knobs, keeping each change only while the same invariant still fails
    /// (and the clean stack still passes). Writes an ordinary scenario file whose header names
    /// the invariant, seed and defects, and prints its repro line. Deterministic: the same
    /// input gives the same file, unless the wall limit (30 s, a safety net) cuts it short,
    /// which it says.
    Shrink(ShrinkArgs),
    /// List the planted defects, one per line, name first.
    ListDefects,
    /// List the shipped sender retry policies, one per line, name first.
    ListPolicies,
    /// List the shipped persistence profiles, one per line, name first.
    ListProfiles,
    /// Live mode: run the MX (SMTP), store (LMTP), POP3 and IMAP servers on real sockets, so
    /// real clients can talk to the stack. Ports are 25, 24, 110 and 143 plus --port-offset.
    Serve {
        /// Address to listen on; loopback unless you mean it.
        #[arg(long, default_value = "127.0.0.1")]
        bind: String,
        /// Added to every port (2500 gives SMTP 2525, LMTP 2524, POP3 2610, IMAP 2643).
        #[arg(long, default_value_t = 2500)]
        port_offset: u16,
        /// Mailboxes (the local parts accepted at RCPT); each user's POP3 and IMAP password is
        /// pw-<user>.
        #[arg(long, value_delimiter = ',', default_value = "anna,bruno,carla")]
        users: Vec<String>,
        /// The mail domain the MX accepts mail for (RCPT TO:<user@DOMAIN>).
        #[arg(long, default_value = "libero.test")]
        domain: String,
        /// Stop after this many seconds (default: run until killed).
        #[arg(long)]
        seconds: Option<u64>,
        /// Seconds an SMTP, POP3 or IMAP command line may take from its first octet (a client
        /// trickling it an octet at a time is cut off).
        #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=86_400))]
        command_timeout_s: u64,
        /// Seconds a whole SMTP DATA body (or BDAT chunk) may take, however steadily it trickles.
        #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..=86_400))]
        data_timeout_s: u64,
        /// Seconds a POP3 or IMAP session has from connecting to logging in; then it is closed.
        #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
        login_timeout_s: u64,
        /// Milliseconds the reply to a failed POP3 PASS or IMAP LOGIN waits, times the failures
        /// so far in the session.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(0..=60_000))]
        login_failure_delay_ms: u64,
        /// Failed logins after which a POP3 or IMAP session is closed.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1000))]
        max_login_failures: u32,
        /// Unrecognised, malformed or overlong SMTP commands after which a session is closed
        /// with 421 (as Postfix's smtpd_hard_error_limit).
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
        max_command_errors: u32,
        /// Keep the MX queue and the store on real directories under DIR (DIR/mx, DIR/store:
        /// fsync honoured, recovered on start). Without it, mail is kept in memory only.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// Stream the history to FILE as JSON lines while serving (appended to by a restart),
        /// for `mailchaos check FILE`.
        #[arg(long, value_name = "FILE")]
        history: Option<PathBuf>,
        /// Keep the ledger of what the store acknowledged in FILE (appended to by a restart),
        /// for `mailchaos verify-store DIR/store --ledger FILE`.
        #[arg(long, value_name = "FILE")]
        ledger: Option<PathBuf>,
        /// Switch on a planted defect (see list-defects); repeatable.
        #[arg(long = "defect")]
        defects: Vec<String>,
    },
    /// Play a scenario's senders and mail clients, in real time, against a real mail stack named
    /// by a target file (docs/target-file.md), perform its faults (partitions on the driver's
    /// links, crashes, stalls and storage faults by the target's hooks), and judge what crossed
    /// the wire: exit 0 ok, 1 violation, 2 bad input.
    Drive {
        /// The scenario whose workload and faults are played.
        scenario: PathBuf,
        /// The target file: endpoints, users, hooks.
        #[arg(long)]
        target: PathBuf,
        /// The seed that draws the plan (decimal or 0x-hex; default 1).
        #[arg(long)]
        seed: Option<String>,
        /// Write the history (JSON lines) here as it is recorded.
        #[arg(long, value_name = "FILE")]
        history: Option<PathBuf>,
        /// Real time per scenario time (0.01: a four-hour slice in 144 s); between 0.001 and 1000.
        #[arg(long, default_value_t = 1.0)]
        time_scale: f64,
    },
    /// Judge a live history (`serve --history FILE`) with every checker that applies to one
    /// and print the verdict as `run` does: exit 0 ok, 1 violation, 2 bad input.
    Check {
        /// The history file, JSON lines.
        history: PathBuf,
    },
    /// Judge a real store directory against the ledger of what it acknowledged (after a power
    /// cut, say): lost or damaged messages, partial messages visible, UIDs used twice.
    VerifyStore {
        /// The store's directory (the one holding mail/).
        dir: PathBuf,
        /// The ledger the harness wrote while the store ran.
        #[arg(long)]
        ledger: PathBuf,
    },
    /// Print the scenario reference (Markdown): every field with its unit, range and default,
    /// the fault kinds and the values they take; docs/scenario-reference.md is its output.
    ScenarioReference,
    /// Print the help of mailchaos or of one of its commands.
    Help {
        /// The command to explain (none: the overview).
        command: Option<String>,
    },
    /// Measure one run against its floor (a turmoil world with the same hosts and traffic, and
    /// trivial hosts): CPU time of the run and of its checks, the floor's, their ratio,
    /// simulated seconds per CPU second, peak memory per history event. Used by `cargo xtask bench`.
    Bench {
        /// The scenario file or embedded:<suite>/<name>.
        scenario: PathBuf,
        /// The seed (decimal or 0x-hex; default 1).
        #[arg(long)]
        seed: Option<String>,
    },
    /// Print the history digest of one swarm seed (used by check-determinism --swarm).
    #[command(hide = true)]
    SwarmDigest {
        #[arg(long)]
        seed: String,
        #[arg(long)]
        profiles: String,
        #[arg(long = "defect")]
        defects: Vec<String>,
    },
    /// Print the history digest of one run (used by check-determinism).
    #[command(hide = true)]
    Digest {
        /// The scenario file or embedded:<suite>/<name>.
        scenario: PathBuf,
        #[command(flatten)]
        runs: Runs,
    },
}

#[derive(clap::Args, Debug)]
pub struct ShrinkArgs {
    /// The scenario file (or embedded:<suite>/<name>) of the failing run, as its repro line
    /// names it; or none, with --swarm-seed.
    pub scenario: Option<PathBuf>,
    /// The failing run's seed (decimal or 0x-hex); with --swarm-seed, that seed by default.
    #[arg(long)]
    pub seed: Option<String>,
    /// Shrink the scenario this swarm seed generates (instead of a file).
    #[arg(long)]
    pub swarm_seed: Option<String>,
    /// With --swarm-seed: the profile set the swarm drew from (honest, dishonest, all).
    #[arg(long, default_value = "honest")]
    pub profiles: String,
    /// A planted defect of the failing run; repeatable.
    #[arg(long = "defect")]
    pub defects: Vec<String>,
    /// The persistence profile of the failing run: a shipped name or a profile file.
    #[arg(long)]
    pub profile: Option<String>,
    /// The invariant that must keep failing (default: the first one the run violates).
    #[arg(long)]
    pub invariant: Option<String>,
    /// Where to write the shrunk scenario.
    #[arg(short = 'o', long = "output")]
    pub output: PathBuf,
    /// Candidate runs at most (1 to 100000): the budget that ends a long search, the same on
    /// every machine.
    #[arg(long, default_value_t = sim::shrink::DEFAULT_MAX_RUNS)]
    pub max_runs: usize,
}

/// The command line with the exit codes appended to every help text.
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command().after_help(EXIT_CODES).mut_subcommands(|sub| sub.after_help(EXIT_CODES))
}

/// Parses the process's arguments (clap's own errors exit 2, `--help` and `--version` 0).
pub fn parse() -> Result<Cli, clap::Error> {
    let matches = command().try_get_matches()?;
    <Cli as clap::FromArgMatches>::from_arg_matches(&matches)
}

/// `mailchaos help [COMMAND]`: a subcommand of ours (not clap's), so `help --help` works too.
fn help(topic: Option<&str>) -> Result<bool, BadInput> {
    let mut command = command();
    // Built first, so a command's usage line names the program (`mailchaos run ...`).
    command.build();
    let text = match topic {
        None => command.render_help(),
        Some(name) => {
            let names: Vec<String> = command.get_subcommands().filter(|sub| !sub.is_hide_set()).map(|sub| sub.get_name().to_string()).collect();
            let sub = command.find_subcommand_mut(name).ok_or_else(|| BadInput(format!("no command '{name}'; expected one of: {}", names.join(", "))))?;
            sub.render_help()
        }
    };
    say!("{}", text.to_string().trim_end());
    Ok(true)
}

pub fn main_with(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Help { command } => help(command.as_deref()),
        Command::ScenarioReference => {
            say!("{}", sim::reference::markdown().trim_end());
            Ok(true)
        }
        Command::Run { paths, runs, real, split, reports } => match real.store_dir.is_some() {
            true => run_on_real_store(&paths, &runs, &real),
            false => run(&paths, &runs, &split, &reports),
        },
        Command::Merge { files, junit } => crate::merge::merge(&files, junit.as_deref()),
        Command::Repro { scenario, runs, history, timeline } => repro(&scenario, &runs, history.as_deref(), timeline.as_deref()),
        Command::Timeline { scenario, runs, output } => timeline(&scenario, &runs, &output),
        Command::WhatIf { scenario, seed, answers, defects, output } => {
            crate::whatif::what_if(&crate::whatif::Request { scenario: &scenario, seed: seed.as_deref(), answers: &answers, defects: &defects, output: Some(&output) })
        }
        Command::CheckDeterminism { runs, swarm: true, profiles, parallel, .. } => check_swarm_determinism(&runs, &profiles, &parallel),
        Command::CheckDeterminism { paths, runs, parallel, .. } => check_determinism(&paths, &runs, &parallel),
        Command::Swarm { seed, seeds, profiles, defects, emit_scenario, shard, shards, json, parallel } => {
            // Without --seed a sweep of 100 seeds from seed 1; `--seed S` alone is that seed.
            let seeds = seeds.or_else(|| seed.is_none().then_some(100));
            let runs = Runs { seed, seeds, defects, profile: None, expect_hash: None };
            let split = Split { shard, shards, jobs: parallel.jobs, worker: parallel.worker, quiet: parallel.quiet };
            swarm(&runs, &profiles, emit_scenario.as_deref(), &split, json.as_deref())
        }
        Command::SwarmDigest { seed, profiles, defects } => swarm_digest(&seed, &profiles, &defects),
        Command::CrashExplore { scenario, runs, max_states } => crash_explore(&scenario, &runs, max_states),
        Command::VendorCompare { paths, baseline, candidate, seed, seeds, defects, parallel } => {
            let runs = Runs { seed, seeds, defects, profile: None, expect_hash: None };
            vendor_compare(&Compare { paths: &paths, baseline: &baseline, candidate: &candidate }, &runs, &parallel)
        }
        Command::Shrink(args) => shrink(&args),
        Command::ListDefects => {
            for defect in Defect::ALL {
                say!("{} {}", defect.name(), defect.description());
            }
            Ok(true)
        }
        Command::ListPolicies => {
            for policy in mail::policy::RetryPolicy::shipped() {
                let flag = if policy.misbehaving { " [misbehaving]" } else { "" };
                say!("{} lifetime={}s{flag} {}", policy.name, policy.lifetime_s, policy.description);
            }
            Ok(true)
        }
        Command::ListProfiles => {
            for profile in Profile::shipped() {
                say!("{} {}", profile.name(), profile.summary());
            }
            Ok(true)
        }
        Command::Digest { scenario, runs } => digest(&scenario, &runs),
        Command::Bench { scenario, seed } => crate::bench::bench(&scenario, seed.as_deref()),
        Command::VerifyStore { dir, ledger } => verify_store(&dir, &ledger),
        Command::Serve { bind, port_offset, users, domain, seconds, command_timeout_s, data_timeout_s, login_timeout_s, login_failure_delay_ms, max_login_failures, max_command_errors, data_dir, history, ledger, defects } => {
            let limits = crate::live::Limits {
                command_total_timeout: std::time::Duration::from_secs(command_timeout_s),
                data_total_timeout: std::time::Duration::from_secs(data_timeout_s),
                login_timeout: std::time::Duration::from_secs(login_timeout_s),
                login_failure_delay: std::time::Duration::from_millis(login_failure_delay_ms),
                max_login_failures,
                max_command_errors,
            };
            parse_defects(&defects).and_then(|defects| {
                let options = crate::live::Options { bind, port_offset, users, domain, seconds, limits, data_dir, history, ledger, defects };
                crate::live::serve(&options).map_err(BadInput)
            })
        }
        Command::Check { history } => crate::live_check::check(&history),
        Command::Drive { scenario, target, seed, history, time_scale } => crate::drive::drive(&crate::drive::Args { scenario, target, seed, history, time_scale }),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(BadInput(message)) => {
            eprintln!("mailchaos: {message}");
            ExitCode::from(2)
        }
    }
}


fn seeds_of(runs: &Runs) -> Result<Vec<Seed>, BadInput> {
    let first = match &runs.seed {
        Some(text) => Seed::parse(text).map_err(BadInput)?,
        None => Seed(1),
    };
    let count = runs.seeds.unwrap_or(if runs.seed.is_some() { 1 } else { 20 });
    if count == 0 || count > 1_000_000 {
        return Err(BadInput(format!("--seeds must be between 1 and 1000000, got {count}")));
    }
    Ok((0..count).map(|n| first.nth(n)).collect())
}

pub struct Judged {
    pub output: RunOutput,
    pub violations: Vec<Violation>,
}

pub fn judge(loaded: &Loaded, seed: Seed, defects: &Defects) -> Judged {
    judge_with(loaded, seed, defects, &RunOptions::default())
}

pub fn judge_with(loaded: &Loaded, seed: Seed, defects: &Defects, options: &RunOptions) -> Judged {
    let output = world::run_with(&loaded.scenario, seed, defects, options);
    let violations = check::check_all(&output);
    Judged { output, violations }
}

/// The run options of a command line and the hash of the profile it names, if it names one.
struct Setup {
    options: RunOptions,
    profile_hash: Option<String>,
}

impl Setup {
    fn of(runs: &Runs) -> Result<Setup, BadInput> {
        let Some(name_or_file) = &runs.profile else { return Ok(Setup { options: RunOptions::default(), profile_hash: None }) };
        let named = source::profile_source(name_or_file)?;
        Ok(Setup { options: RunOptions { profile: Some(named.profile), ..RunOptions::default() }, profile_hash: Some(named.hash) })
    }

    /// The hash of the profile a scenario runs on: the named one, else the scenario's own.
    fn profile_hash(&self, loaded: &Loaded) -> String {
        self.profile_hash.clone().unwrap_or_else(|| source::default_profile_hash(loaded))
    }

    /// What `--expect-hash` must say for this scenario to be replayed.
    fn expected(&self, source: &Source) -> String {
        source::expected_form(&source.hash, &self.profile_hash(&source.loaded))
    }

    /// Refuses to run when the command line expects other texts than these.
    fn check(&self, runs: &Runs, sources: &[Source]) -> Result<(), BadInput> {
        let Some(expected) = &runs.expect_hash else { return Ok(()) };
        sources.iter().try_for_each(|source| source::check_expected(expected, source, &self.profile_hash(&source.loaded)))
    }
}


/// The command that replays one run: the same scenario text (refused if it changed since),
/// seed, defects and profile.
fn repro_line(source: &Source, seed: Seed, defects: &Defects, runs: &Runs, setup: &Setup) -> String {
    format!("{} repro {}", program(), replay_args(source, seed, defects, runs, setup).join(" "))
}

/// The arguments after the command name that replay one run exactly.
fn replay_args(source: &Source, seed: Seed, defects: &Defects, runs: &Runs, setup: &Setup) -> Vec<String> {
    let mut args = vec![source.origin.clone(), "--seed".into(), seed.to_string()];
    for defect in defects.iter() {
        args.extend(["--defect".into(), defect.name().to_string()]);
    }
    if let Some(profile) = &runs.profile {
        args.extend(["--profile".into(), profile.clone()]);
    }
    args.extend(["--expect-hash".into(), setup.expected(source)]);
    args
}

/// One run in one line. `scenario=` and `profile=` hash the texts that ran, so the line names
/// exactly what it judged.
fn run_line(source: &Source, seed: Seed, judged: &Judged, setup: &Setup) -> String {
    run_line_with(source, seed, judged, setup, &judged.output.history.digest())
}

/// The run line with its digest computed once by the caller (hashing a long history costs).
fn run_line_with(source: &Source, seed: Seed, judged: &Judged, setup: &Setup, digest: &str) -> String {
    let counts = report::counts(&judged.output.history.records);
    let verdict = if judged.violations.is_empty() { "ok".to_string() } else { format!("violation({})", report::violated(&judged.violations).join(",")) };
    format!(
        "{:<24} seed={seed} verdict={verdict} accepted={} delivered={} bounced={} deferred={} simulated_s={} scenario={} profile={} digest={digest}",
        source.loaded.scenario.name,
        counts.accepted,
        counts.delivered,
        counts.bounced,
        counts.deferred,
        judged.output.ended_at_ms / 1000,
        source.hash,
        setup.profile_hash(&source.loaded),
    )
}

/// What a sweep of `run` shares across its pairs.
struct Sweep<'a> {
    defects: Defects,
    setup: Setup,
    runs: &'a Runs,
}

impl Sweep<'_> {
    /// Runs and judges pair `index` of the unsharded order.
    fn record(&self, index: usize, source: &Source, seed: Seed) -> RunRecord {
        let judged = judge_with(&source.loaded, seed, &self.defects, &self.setup.options);
        let digest = judged.output.history.digest();
        let verdict = if judged.violations.is_empty() { "ok" } else { "violation" };
        RunRecord {
            index,
            scenario: source.loaded.scenario.name.clone(),
            origin: source.origin.clone(),
            seed: seed.to_string(),
            verdict: verdict.into(),
            violated: report::violated(&judged.violations).into_iter().map(String::from).collect(),
            violation_count: judged.violations.len(),
            violations: results::violation_records(&judged.violations),
            line: run_line_with(source, seed, &judged, &self.setup, &digest),
            digest,
            repro: repro_line(source, seed, &self.defects, self.runs, &self.setup),
            unfired_faults: judged.output.faults.iter().any(|(_, fired)| *fired == 0),
            outcomes: report::outcomes_by_policy(&judged.output.history.records),
        }
    }
}

/// The arguments that make a worker run the same sweep: scenarios, seeds, defects, profile.
fn worker_args(paths: &[PathBuf], runs: &Runs) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = paths.iter().map(|path| path.clone().into_os_string()).collect();
    let mut option = |name: &str, value: &str| args.extend([name.into(), value.into()]);
    runs.seed.iter().for_each(|seed| option("--seed", seed));
    runs.seeds.iter().for_each(|seeds| option("--seeds", &seeds.to_string()));
    runs.defects.iter().for_each(|defect| option("--defect", defect));
    runs.profile.iter().for_each(|profile| option("--profile", profile));
    runs.expect_hash.iter().for_each(|hash| option("--expect-hash", hash));
    args
}

/// A worker's record, if it ran the very text and seed this process loaded: a worker reads
/// the files again, and one edited meanwhile must not pass for what the parent named.
fn same_run(record: RunRecord, source: &Source, seed: Seed) -> Result<RunRecord, BadInput> {
    let same = record.origin == source.origin && record.seed == seed.to_string() && record.line.contains(&format!(" scenario={} ", source.hash));
    match same {
        true => Ok(record),
        false => Err(BadInput(format!("{}: a worker ran another text than this process loaded (scenario={} expected): the file changed during the sweep", source.origin, source.hash))),
    }
}

/// A worker of `--jobs`: its runs of the shard as JSON lines on stdout, then its summary.
fn work(sweep: &Sweep, owned: Vec<(usize, &Source, Seed)>, shard: Shard, worker: jobs::Worker) -> Result<bool, BadInput> {
    let mut tally = Tally::default();
    for (index, source, seed) in owned.into_iter().filter(|(index, _, _)| worker.owns(shard, *index)) {
        let record = sweep.record(index, source, seed);
        tally.add(&record);
        say!("{}", serde_json::to_string(&Line::Run(record)).map_err(|error| BadInput(error.to_string()))?);
    }
    let summary = Summary { shard: shard.label(), pairs: 0, wall_s: 0.0, tally };
    say!("{}", serde_json::to_string(&Line::Summary(summary.clone())).map_err(|error| BadInput(error.to_string()))?);
    Ok(summary.tally.failed == 0)
}

fn run(paths: &[PathBuf], runs: &Runs, split: &Split, reports: &Reports) -> Result<bool, BadInput> {
    // The shard first: a misconfigured array task fails before loading anything.
    let shard = shard::resolve(split.shard.as_deref(), split.shards, &|name| std::env::var(name).ok())?;
    let jobs = jobs::check_jobs(split.jobs)?;
    let worker = split.worker.as_deref().map(jobs::Worker::parse).transpose()?;
    let suite = source::all_of(paths)?;
    let seeds = seeds_of(runs)?;
    let sweep = Sweep { defects: parse_defects(&runs.defects)?, setup: Setup::of(runs)?, runs };
    sweep.setup.check(runs, &suite)?;
    let pairs = suite.iter().flat_map(|source| seeds.iter().map(move |&seed| (source, seed)));
    let owned: Vec<(usize, &Source, Seed)> = pairs.enumerate().filter(|(index, _)| shard.owns(*index)).map(|(index, (source, seed))| (index, source, seed)).collect();
    if let Some(worker) = worker {
        return work(&sweep, owned, shard, worker);
    }
    let mut files = ResultFiles::create(reports)?;
    // Wall time is measured only for the rate in the summary; it never reaches a simulation.
    let started = std::time::Instant::now();
    let mut tally = Tally::default();
    let mut workers = match jobs {
        1 => None,
        _ => {
            let mut args: Vec<std::ffi::OsString> = vec!["run".into()];
            args.extend(worker_args(paths, runs));
            args.extend(["--shard".into(), shard.label().into()]);
            Some(jobs::Workers::spawn(&args, jobs)?)
        }
    };
    let mut progress = Progress::start(owned.len(), split.quiet, "failed");
    for (index, source, seed) in owned {
        let record = match &mut workers {
            // Run number n of the shard is worker n % jobs's (jobs::Worker::owns).
            Some(workers) => match workers.next::<Line>((index / shard.count as usize) % jobs as usize, index)? {
                Line::Run(record) => same_run(record, source, seed)?,
                Line::Summary(_) => return Err(BadInput(format!("a worker sent its summary where run {index} was due"))),
            },
            None => sweep.record(index, source, seed),
        };
        record.print();
        progress.advance(record.failed());
        tally.add(&record);
        files.add(record)?;
    }
    drop(progress);
    workers.map(jobs::Workers::finish::<Line>).transpose()?;
    let wall_s = started.elapsed().as_secs_f64();
    tally.print(wall_s, (shard != Shard::ALL).then(|| shard.label()).as_deref());
    let failed = tally.failed;
    files.finish(Summary { shard: shard.label(), pairs: suite.len() * seeds.len(), wall_s, tally })?;
    Ok(failed == 0)
}

/// The `--json` and `--junit` files of a run, created before the first run.
struct ResultFiles {
    json: Option<JsonWriter>,
    junit: Option<JunitWriter>,
    /// Kept only for the JUnit report, which is written whole at the end.
    kept: Vec<RunRecord>,
}

impl ResultFiles {
    fn create(reports: &Reports) -> Result<ResultFiles, BadInput> {
        let json = reports.json.as_deref().map(JsonWriter::create).transpose()?;
        let junit = reports.junit.as_deref().map(JunitWriter::create).transpose()?;
        Ok(ResultFiles { json, junit, kept: Vec::new() })
    }

    fn add(&mut self, record: RunRecord) -> Result<(), BadInput> {
        if let Some(json) = &mut self.json {
            json.write(&Line::Run(record.clone()))?;
        }
        if self.junit.is_some() {
            self.kept.push(record);
        }
        Ok(())
    }

    fn finish(self, summary: Summary) -> Result<(), BadInput> {
        if let Some(mut json) = self.json {
            json.write(&Line::Summary(summary))?;
            json.finish()?;
        }
        self.junit.map(|junit| junit.finish(&self.kept)).transpose()?;
        Ok(())
    }
}

/// One run with the store on a real directory and a ledger of what it acknowledged.
fn run_on_real_store(paths: &[PathBuf], runs: &Runs, real: &RealStore) -> Result<bool, BadInput> {
    let [path] = paths else { return Err(BadInput("--store-dir runs one scenario file".into())) };
    // One real directory holds one run's store: a sweep would need a directory per seed.
    if runs.seeds.is_some_and(|count| count != 1) {
        return Err(BadInput("--store-dir runs one seed (one directory, one ledger): drop --seeds, or pick the seed with --seed".into()));
    }
    let source = source::one_of(path)?;
    let seed = match &runs.seed {
        Some(_) => single_seed(runs)?,
        None => Seed(1),
    };
    let defects = parse_defects(&runs.defects)?;
    let (Some(dir), Some(ledger_path)) = (&real.store_dir, &real.ledger) else { return Err(BadInput("--store-dir needs --ledger".into())) };
    if std::fs::metadata(dir).is_ok_and(|metadata| !metadata.is_dir()) {
        return Err(BadInput(format!("{}: not a directory (the store directory must be empty or absent: a fresh mount)", dir.display())));
    }
    if std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some()) {
        return Err(BadInput(format!("{}: the store directory must be empty or absent (a fresh mount)", dir.display())));
    }
    let setup = Setup::of(runs)?;
    setup.check(runs, std::slice::from_ref(&source))?;
    let ledger = sim::ledger::Ledger::create(ledger_path).map_err(|error| BadInput(format!("{}: cannot create the ledger: {error}", ledger_path.display())))?;
    let options = RunOptions {
        store_dir: Some(dir.clone()),
        ledger: Some(std::rc::Rc::new(std::cell::RefCell::new(ledger))),
        stop_after_s: real.stop_after_s,
        ..setup.options.clone()
    };
    let judged = judge_with(&source.loaded, seed, &defects, &options);
    say!("{}", run_line(&source, seed, &judged, &setup));
    let verify = format!("{} verify-store {} --ledger {}", program(), dir.display(), ledger_path.display());
    if let Some(failure) = &judged.output.environment_failure {
        return Err(BadInput(failure.clone()));
    }
    match &judged.output.aborted {
        Some(reason) if real.stop_after_s.is_some() => {
            say!("note: {reason}; check what the store kept with: {verify}");
            return Ok(true);
        }
        _ => {}
    }
    for violation in judged.violations.iter().take(5) {
        say!("  {} {}: {}", violation.invariant, violation.subject, violation.explanation);
    }
    say!("after a power cut, check what the store kept with: {verify}");
    Ok(judged.violations.is_empty())
}

fn single_seed(runs: &Runs) -> Result<Seed, BadInput> {
    let text = runs.seed.as_ref().ok_or_else(|| BadInput("--seed is required".into()))?;
    if runs.seeds.is_some_and(|count| count != 1) {
        return Err(BadInput("this command replays one seed: drop --seeds".into()));
    }
    Seed::parse(text).map_err(BadInput)
}

fn repro(path: &Path, runs: &Runs, history_file: Option<&Path>, timeline_file: Option<&Path>) -> Result<bool, BadInput> {
    let source = source::one_of(path)?;
    let seed = single_seed(runs)?;
    let defects = parse_defects(&runs.defects)?;
    let setup = Setup::of(runs)?;
    setup.check(runs, std::slice::from_ref(&source))?;
    let format = timeline_file.map(timeline_format).transpose()?;
    let judged = judge_with(&source.loaded, seed, &defects, &setup.options);
    if let (Some(file), Some(format)) = (timeline_file, format) {
        write_timeline(file, format, &judged, &timeline_title(&source, seed, &defects, &judged))?;
    }
    say!("scenario {} ({}) seed={seed}", source.loaded.scenario.name, source.origin);
    let plan = world::plan::make(&source.loaded.scenario, seed);
    for fault in &plan.faults {
        say!("fault: {}", fault.describe());
    }
    for (description, fired) in &judged.output.faults {
        if *fired == 0 {
            say!("note: fault never fired: {description}");
        }
    }
    say!("{}", report::numbered_history(&judged.output).trim_end());
    if let Some(file) = history_file {
        let lines: String = judged.output.history.records.iter().map(|record| record.to_json() + "\n").collect();
        std::fs::write(file, lines).map_err(|error| BadInput(format!("{}: cannot write history: {error}", file.display())))?;
    }
    for (policy, row) in report::outcomes_by_policy(&judged.output.history.records) {
        say!("outcomes: policy={policy} {}", row.render());
    }
    say!("{}", run_line(&source, seed, &judged, &setup));
    if judged.violations.is_empty() {
        say!("verdict: ok — every invariant held");
        return Ok(true);
    }
    say!("verdict: violation");
    say!("{}", report::explain(&judged.output, &judged.violations, 50).trim_end());
    say!("repro: {}", repro_line(&source, seed, &defects, runs, &setup));
    Ok(false)
}

/// `-o` of `timeline` (and `repro --timeline`): its format by extension, and a folder to write
/// it into, refused before the run.
fn timeline_format(file: &Path) -> Result<crate::timeline::Format, BadInput> {
    let format = crate::timeline::Format::of(file).map_err(BadInput)?;
    check_output(file).map_err(|BadInput(message)| BadInput(message.replace("the scenario file", "the timeline file")))?;
    Ok(format)
}

/// The picture's title: what ran, and its verdict (no timestamp: the same run, the same bytes).
fn timeline_title(source: &Source, seed: Seed, defects: &Defects, judged: &Judged) -> String {
    let verdict = if judged.violations.is_empty() { "ok".to_string() } else { format!("violation({})", report::violated(&judged.violations).join(",")) };
    let defects: Vec<&str> = defects.iter().map(|defect| defect.name()).collect();
    let defects = if defects.is_empty() { String::new() } else { format!(" defects={}", defects.join(",")) };
    format!("{} seed={seed}{defects} verdict={verdict} digest={}", source.loaded.scenario.name, judged.output.history.digest())
}

fn write_timeline(file: &Path, format: crate::timeline::Format, judged: &Judged, title: &str) -> Result<(), BadInput> {
    let text = crate::timeline::document(format, &judged.output, &judged.violations, title);
    std::fs::write(file, text).map_err(|error| BadInput(format!("{}: cannot write the timeline: {error}", file.display())))
}

/// `mailchaos timeline`: one run drawn into `-o`.
fn timeline(path: &Path, runs: &Runs, output: &Path) -> Result<bool, BadInput> {
    let format = timeline_format(output)?;
    let source = source::one_of(path)?;
    let seed = single_seed(runs)?;
    let defects = parse_defects(&runs.defects)?;
    let setup = Setup::of(runs)?;
    setup.check(runs, std::slice::from_ref(&source))?;
    let judged = judge_with(&source.loaded, seed, &defects, &setup.options);
    write_timeline(output, format, &judged, &timeline_title(&source, seed, &defects, &judged))?;
    say!("{}", run_line(&source, seed, &judged, &setup));
    say!("wrote {}", output.display());
    Ok(judged.violations.is_empty())
}

/// Per invariant: violations, failing runs, and the first failing run's repro line.
#[derive(Default, Clone)]
struct Column {
    runs: usize,
    failed_runs: usize,
    per_invariant: std::collections::BTreeMap<String, (usize, usize, String)>,
}

/// One run of `vendor-compare` (here or by a worker of `--jobs`): per invariant violated, its
/// violations; the repro line; the hash of the scenario text that ran.
#[derive(serde::Serialize, serde::Deserialize)]
struct Compared {
    hash: String,
    violated: Vec<(String, usize)>,
    repro: String,
}

/// What `vendor-compare` compares: the suite's paths and the two profiles.
struct Compare<'a> {
    paths: &'a [PathBuf],
    baseline: &'a str,
    candidate: &'a str,
}

fn vendor_compare(compare: &Compare, runs: &Runs, parallel: &Parallel) -> Result<bool, BadInput> {
    let (paths, baseline, candidate) = (compare.paths, compare.baseline, compare.candidate);
    let (jobs, worker) = parallel_of(parallel)?;
    let suite = if paths.is_empty() { load_storage_suite()? } else { source::all_of(paths)? };
    let seeds = seeds_of(runs)?;
    let defects = parse_defects(&runs.defects)?;
    // Both profiles are read before anything runs: a mistyped candidate must not cost a baseline.
    let mut setups = Vec::new();
    for name in [baseline, candidate] {
        let profile_runs = Runs { profile: Some(name.to_string()), ..runs.clone() };
        let setup = Setup::of(&profile_runs)?;
        setups.push((profile_runs, setup));
    }
    // Run n: the baseline's runs, then the candidate's; scenarios as listed, seeds within each.
    let per_column = suite.len() * seeds.len();
    let compare_one = |n: usize| {
        let ((profile_runs, setup), source, seed) = (&setups[n / per_column], &suite[(n % per_column) / seeds.len()], seeds[n % seeds.len()]);
        let judged = judge_with(&source.loaded, seed, &defects, &setup.options);
        let violated = report::violated(&judged.violations).into_iter().map(|invariant| (invariant.to_string(), judged.violations.iter().filter(|v| v.invariant == invariant).count())).collect();
        Ok(Compared { hash: source.hash.clone(), violated, repro: repro_line(source, seed, &defects, profile_runs, setup) })
    };
    if let Some(worker) = worker {
        return worker.serve(2 * per_column, |n| compare_one(n).map(|compared| {
            let failed = !compared.violated.is_empty();
            (compared, failed)
        }));
    }
    let mut args: Vec<std::ffi::OsString> = vec!["vendor-compare".into()];
    args.extend(paths.iter().map(|path| path.clone().into_os_string()));
    args.extend(["--baseline".into(), baseline.into(), "--candidate".into(), candidate.into()]);
    args.extend(worker_args(&[], runs));
    let mut columns = vec![Column::default(), Column::default()];
    let mut progress = Progress::start(2 * per_column, parallel.quiet, "failed");
    jobs::in_order(2 * per_column, jobs, &args, &compare_one, |n, compared: Compared| {
        let source = &suite[(n % per_column) / seeds.len()];
        if compared.hash != source.hash {
            return Err(BadInput(format!("{}: a worker ran another text than this process loaded (scenario={} expected): the file changed during the sweep", source.origin, source.hash)));
        }
        let column = &mut columns[n / per_column];
        column.runs += 1;
        column.failed_runs += usize::from(!compared.violated.is_empty());
        progress.advance(!compared.violated.is_empty());
        for (invariant, count) in compared.violated {
            let cell = column.per_invariant.entry(invariant).or_insert_with(|| (0, 0, compared.repro.clone()));
            cell.0 += count;
            cell.1 += 1;
        }
        Ok(())
    })?;
    drop(progress);
    let (base, cand) = (&columns[0], &columns[1]);
    say!("vendor-compare: {} scenarios x {} seeds; baseline={baseline} candidate={candidate}", suite.len(), seeds.len());
    say!("{:<36} | {:<34} | {}", "invariant", baseline, candidate);
    let cell = |column: &Column, invariant: &str| match column.per_invariant.get(invariant) {
        Some((violations, failed, _)) => format!("{violations} violations in {failed}/{} runs", column.runs),
        None => format!("kept in {} runs", column.runs),
    };
    let mut broken = Vec::new();
    for (invariant, name) in check::INVARIANTS {
        let label = format!("{invariant} {name}");
        say!("{label:<36} | {:<34} | {}", cell(base, invariant), cell(cand, invariant));
        if cand.per_invariant.contains_key(*invariant) && !base.per_invariant.contains_key(*invariant) {
            broken.push(*invariant);
        }
    }
    for (label, column) in [("baseline", base), ("candidate", cand)] {
        for (invariant, (_, _, repro)) in &column.per_invariant {
            say!("first {invariant} under the {label}: {repro}");
        }
    }
    if broken.is_empty() {
        say!("verdict: ok — the candidate keeps every invariant the baseline keeps ({} of {} candidate runs failed, {} of {} baseline runs)", cand.failed_runs, cand.runs, base.failed_runs, base.runs);
        return Ok(true);
    }
    say!("verdict: violation — the candidate breaks {} which the baseline keeps", broken.join(", "));
    Ok(false)
}

/// The default suite of storage comparisons: the embedded fast suite (its crashes) and the
/// storage scenarios.
fn load_storage_suite() -> Result<Vec<Source>, BadInput> {
    source::all_of(&[PathBuf::from("embedded:fast"), PathBuf::from("embedded:storage")])
}

fn crash_explore(path: &Path, runs: &Runs, max_states: usize) -> Result<bool, BadInput> {
    let source = source::one_of(path)?;
    // One seed unless --seeds asks for a sweep: every seed is a whole run plus its moments.
    let seeds = match (&runs.seed, runs.seeds) {
        (_, Some(_)) => seeds_of(runs)?,
        (Some(_), None) => vec![single_seed(runs)?],
        (None, None) => vec![Seed(1)],
    };
    if !(1..=1_000_000).contains(&max_states) {
        return Err(BadInput(format!("--max-states must be between 1 and 1000000, got {max_states}")));
    }
    let defects = parse_defects(&runs.defects)?;
    let setup = Setup::of(runs)?;
    setup.check(runs, std::slice::from_ref(&source))?;
    let options = RunOptions { explore: true, ..setup.options.clone() };
    // Wall time is measured only for the rate in the summary; it never reaches a simulation.
    let started = std::time::Instant::now();
    let mut totals = Explored::default();
    for &seed in &seeds {
        let explored = explore_seed(&source.loaded, seed, &defects, &options, max_states);
        if explored.violating > 0 {
            let args = replay_args(&source, seed, &defects, runs, &setup).join(" ");
            say!("repro: {} crash-explore {args} --max-states {max_states}", program());
        }
        totals.add(&explored);
    }
    let seconds = started.elapsed().as_secs_f64();
    say!(
        "summary: seeds={} moments={} states={} exhaustive_moments={} violating_states={} wall={seconds:.2}s exploring={:.2}s states_per_s={:.0}",
        seeds.len(),
        totals.moments,
        totals.states,
        totals.exhaustive,
        totals.violating,
        totals.exploring_s,
        totals.states as f64 / totals.exploring_s.max(1e-9)
    );
    Ok(totals.violating == 0)
}

/// What exploring the crash moments of one or more runs found.
#[derive(Default)]
struct Explored {
    moments: usize,
    states: usize,
    exhaustive: usize,
    violating: usize,
    exploring_s: f64,
}

impl Explored {
    fn add(&mut self, other: &Explored) {
        self.moments += other.moments;
        self.states += other.states;
        self.exhaustive += other.exhaustive;
        self.violating += other.violating;
        self.exploring_s += other.exploring_s;
    }
}

/// Runs one seed recording its crash moments, then explores every state of each moment.
fn explore_seed(loaded: &Loaded, seed: Seed, defects: &Defects, options: &RunOptions, max_states: usize) -> Explored {
    let output = world::run_with(&loaded.scenario, seed, defects, options);
    let moments = sim::explore::take();
    let exploring = std::time::Instant::now();
    let profile = options.profile.as_ref().map_or_else(|| world::profile_of(&loaded.scenario).name().to_string(), |profile| profile.name().to_string());
    say!("crash-explore {} seed={seed} profile={profile} moments={}", loaded.scenario.name, moments.len());
    let mut explored = Explored { moments: moments.len(), ..Explored::default() };
    for (number, moment) in moments.iter().enumerate() {
        let report = sim::explore::explore_moment(moment, &output.history.records, &loaded.scenario, defects, max_states, seed);
        explored.states += report.states;
        explored.exhaustive += usize::from(report.exhaustive);
        explored.violating += report.findings.len();
        let how = if report.exhaustive { "exhaustive" } else { "sampled" };
        say!(
            "moment {}: {} at {} t={:.1}s unsynced_ops={} states={} {how} violating={}",
            number + 1,
            moment.host,
            moment.label,
            moment.at_ms as f64 / 1000.0,
            moment.frontier.log.len(),
            report.states,
            report.findings.len()
        );
        for finding in report.findings.iter().take(2) {
            say!("  {} {}: {}", finding.invariant, finding.subject, finding.explanation);
            say!("  state {}", finding.state);
        }
    }
    explored.exploring_s = exploring.elapsed().as_secs_f64();
    explored
}

fn digest(path: &Path, runs: &Runs) -> Result<bool, BadInput> {
    let source = source::one_of(path)?;
    let seed = single_seed(runs)?;
    let defects = parse_defects(&runs.defects)?;
    let setup = Setup::of(runs)?;
    setup.check(runs, std::slice::from_ref(&source))?;
    let output = world::run_with(&source.loaded.scenario, seed, &defects, &setup.options);
    say!("{}", output.history.digest());
    Ok(true)
}

/// One seed of `check-determinism` checked (here or by a worker of `--jobs`): the lines it
/// prints, whether the fresh process diverged, and the hash of the text that ran (a worker
/// reads the files again; one edited meanwhile must not pass for what this process loaded).
#[derive(serde::Serialize, serde::Deserialize)]
struct Checked {
    hash: String,
    lines: Vec<String>,
    diverged: bool,
}

/// The worker of `--jobs`, if this process is one; `--jobs` checked.
fn parallel_of(parallel: &Parallel) -> Result<(u64, Option<jobs::Worker>), BadInput> {
    let jobs = jobs::check_jobs(parallel.jobs)?;
    Ok((jobs, parallel.worker.as_deref().map(jobs::Worker::parse).transpose()?))
}

/// Runs `check` on items 0..total, here or on the workers of `--jobs` (or as one of them), and
/// hands each `Checked` to the caller in order, with the progress bar moving.
fn checked_in_order(total: usize, parallel: &Parallel, args: Vec<std::ffi::OsString>, check: impl Fn(usize) -> Result<Checked, BadInput>, mut each: impl FnMut(usize, &Checked) -> Result<(), BadInput>) -> Result<bool, BadInput> {
    let (jobs, worker) = parallel_of(parallel)?;
    if let Some(worker) = worker {
        return worker.serve(total, |n| check(n).map(|checked| {
            let diverged = checked.diverged;
            (checked, diverged)
        }));
    }
    let mut progress = Progress::start(total, parallel.quiet, "diverged");
    let mut diverged = 0;
    jobs::in_order(total, jobs, &args, &check, |n, checked: Checked| {
        each(n, &checked)?;
        checked.lines.iter().for_each(|line| say!("{line}"));
        diverged += usize::from(checked.diverged);
        progress.advance(checked.diverged);
        Ok(())
    })?;
    drop(progress);
    say!("summary: runs={total} diverged={diverged}");
    Ok(diverged == 0)
}

fn check_determinism(paths: &[PathBuf], runs: &Runs, parallel: &Parallel) -> Result<bool, BadInput> {
    let suite = source::all_of(paths)?;
    let seeds = seeds_of(runs)?;
    let defects = parse_defects(&runs.defects)?;
    let setup = Setup::of(runs)?;
    setup.check(runs, &suite)?;
    let exe = std::env::current_exe().map_err(|error| BadInput(format!("cannot find own executable: {error}")))?;
    let check = |n: usize| {
        let (source, seed) = (&suite[n / seeds.len()], seeds[n % seeds.len()]);
        let here = world::run_with(&source.loaded.scenario, seed, &defects, &setup.options).history.digest();
        let there = fresh_digest(&exe, &replay_args(source, seed, &defects, runs, &setup))?;
        let same = there == here;
        let mut lines = vec![format!("{:<24} seed={seed} first={here} fresh_process={there} {}", source.loaded.scenario.name, if same { "same" } else { "DIVERGED" })];
        if !same {
            lines.push(format!("repro: {}", repro_line(source, seed, &defects, runs, &setup)));
        }
        Ok(Checked { hash: source.hash.clone(), lines, diverged: !same })
    };
    let mut args: Vec<std::ffi::OsString> = vec!["check-determinism".into()];
    args.extend(worker_args(paths, runs));
    checked_in_order(suite.len() * seeds.len(), parallel, args, check, |n, checked| {
        let source = &suite[n / seeds.len()];
        match checked.hash == source.hash {
            true => Ok(()),
            false => Err(BadInput(format!("{}: a worker ran another text than this process loaded (scenario={} expected): the file changed during the sweep", source.origin, source.hash))),
        }
    })
}

/// The digest a fresh process computes for the same run. The arguments name the same copy
/// (a file or `embedded:`) and carry `--expect-hash`, so the child runs the very texts this
/// process ran or refuses; a refusal (a file edited meanwhile) is bad input, not a divergence.
fn fresh_digest(exe: &Path, args: &[String]) -> Result<String, BadInput> {
    let child = std::process::Command::new(exe).arg("digest").args(args).output().map_err(|error| BadInput(format!("cannot start a fresh process: {error}")))?;
    if child.status.code() == Some(2) {
        return Err(BadInput(format!("the fresh process refused the run: {}", String::from_utf8_lossy(&child.stderr).trim())));
    }
    let digest = String::from_utf8_lossy(&child.stdout).trim().to_string();
    Ok(if child.status.success() { digest } else { format!("failed({})", child.status) })
}

fn profile_set(name: &str) -> Result<sim::swarm::ProfileSet, BadInput> {
    sim::swarm::ProfileSet::parse(name).map_err(|error| BadInput(format!("--profiles: {error}")))
}

fn swarm(runs: &Runs, profiles: &str, emit: Option<&Path>, split: &Split, json: Option<&Path>) -> Result<bool, BadInput> {
    let profiles = profile_set(profiles)?;
    if let Some(file) = emit {
        return crate::swarm::emit(single_seed(runs)?, profiles, file);
    }
    let shard = shard::resolve(split.shard.as_deref(), split.shards, &|name| std::env::var(name).ok())?;
    let jobs = jobs::check_jobs(split.jobs)?;
    let worker = split.worker.as_deref().map(jobs::Worker::parse).transpose()?;
    let all = seeds_of(runs)?;
    let pairs = all.len();
    let seeds = all.into_iter().enumerate().filter(|(index, _)| shard.owns(*index)).collect();
    let mut args: Vec<std::ffi::OsString> = vec!["swarm".into(), "--profiles".into(), profiles.name().into()];
    args.extend(worker_args(&[], runs));
    args.extend(["--shard".into(), shard.label().into()]);
    let label = (shard != Shard::ALL).then(|| shard.label());
    let request = crate::swarm::Request { seeds, pairs, profiles, defect_names: &runs.defects, shard: label, jobs, worker, worker_args: args, json, quiet: split.quiet };
    crate::swarm::sweep(&request)
}


fn swarm_digest(seed: &str, profiles: &str, defects: &[String]) -> Result<bool, BadInput> {
    let seed = Seed::parse(seed).map_err(BadInput)?;
    let run = crate::swarm::run_seed(seed, profile_set(profiles)?, &parse_defects(defects)?)?;
    say!("{}", run.output.history.digest());
    Ok(true)
}

/// Every swarm seed run here and again in a fresh process (`swarm-digest`), digests compared.
fn check_swarm_determinism(runs: &Runs, profiles: &str, parallel: &Parallel) -> Result<bool, BadInput> {
    let set = profile_set(profiles)?;
    let seeds = seeds_of(runs)?;
    let defects = parse_defects(&runs.defects)?;
    let exe = std::env::current_exe().map_err(|error| BadInput(format!("cannot find own executable: {error}")))?;
    let check = |n: usize| {
        let seed = seeds[n];
        let run = crate::swarm::run_seed(seed, set, &defects)?;
        let here = run.output.history.digest();
        let mut args = vec!["--seed".to_string(), seed.to_string(), "--profiles".into(), set.name().into()];
        args.extend(runs.defects.iter().flat_map(|name| ["--defect".to_string(), name.clone()]));
        let child = std::process::Command::new(&exe).arg("swarm-digest").args(&args).output().map_err(|error| BadInput(format!("cannot start a fresh process: {error}")))?;
        let there = String::from_utf8_lossy(&child.stdout).trim().to_string();
        let same = child.status.success() && there == here;
        let mut lines = vec![format!("swarm seed={seed} plan={} first={here} fresh_process={there} {}", run.generated.plan(), if same { "same" } else { "DIVERGED" })];
        if !same {
            lines.push(format!("repro: {} swarm --seed {seed} --profiles {}", program(), set.name()));
        }
        Ok(Checked { hash: String::new(), lines, diverged: !same })
    };
    let mut args: Vec<std::ffi::OsString> = vec!["check-determinism".into(), "--swarm".into(), "--profiles".into(), set.name().into()];
    args.extend(worker_args(&[], runs));
    checked_in_order(seeds.len(), parallel, args, check, |_, _| Ok(()))
}

/// One line per problem, then the verdict with its counts.
fn verify_store(dir: &Path, ledger: &Path) -> Result<bool, BadInput> {
    match std::fs::metadata(dir) {
        Ok(metadata) if metadata.is_dir() => {}
        Ok(_) => return Err(BadInput(format!("{}: not a directory (a store directory holds mail/)", dir.display()))),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Err(BadInput(format!("{}: no such store directory", dir.display()))),
        Err(error) => return Err(BadInput(format!("{}: cannot open the store directory: {error}", dir.display()))),
    }
    let entries = sim::ledger::read_ledger(ledger).map_err(|error| BadInput(error.to_string()))?;
    // No entry: the store acknowledged nothing, and "ok" would claim a check that never happened.
    if entries.is_empty() {
        return Err(BadInput(format!("{}: the ledger records no acknowledged message: nothing to judge", ledger.display())));
    }
    let verdict = crate::verify::verify_store(dir, &entries);
    for problem in &verdict.problems {
        say!("{problem}");
    }
    say!("{}", verdict.summary());
    Ok(verdict.is_ok())
}

/// `mailchaos shrink`: the failing run's scenario made small, written to `-o`, replayed once
/// from the written file to prove it still fails.
fn shrink(args: &ShrinkArgs) -> Result<bool, BadInput> {
    let (origin, text) = shrink_input(args)?;
    let seed_text = shrink_seed(args)?;
    let seed = Seed::parse(&seed_text).map_err(BadInput)?;
    let defects = parse_defects(&args.defects)?;
    let runs = Runs { seed: Some(seed_text), seeds: None, defects: args.defects.clone(), profile: args.profile.clone(), expect_hash: None };
    let setup = Setup::of(&runs)?;
    check_output(&args.output)?;
    if !(1..=100_000).contains(&args.max_runs) {
        return Err(BadInput(format!("--max-runs must be between 1 and 100000, got {}", args.max_runs)));
    }
    let request = sim::shrink::Request {
        name: &origin,
        text: &text,
        seed,
        defects: &defects,
        options: &setup.options,
        invariant: args.invariant.as_deref(),
        max_runs: args.max_runs,
        wall_limit: sim::shrink::DEFAULT_WALL_LIMIT,
    };
    // Wall time is measured for the report only; the shrinker's own limit is its safety net.
    let started = std::time::Instant::now();
    let shrunk = sim::shrink::shrink(&request).map_err(|error| match error {
        sim::shrink::ShrinkError::Scenario(error) => BadInput(error.to_string()),
        other => BadInput(format!("{origin} seed {seed}: {other}")),
    })?;
    let seconds = started.elapsed().as_secs_f64();
    let header = sim::shrink::Header { origin: &origin, seed, defects: &defects, profile: args.profile.as_deref(), repro: &plain_repro(args, seed, &defects) };
    std::fs::write(&args.output, shrunk.file_text(&header)).map_err(|error| BadInput(format!("{}: cannot write: {error}", args.output.display())))?;
    report_shrink(&shrunk, seconds, &args.output);
    // Replayed as `repro` will replay it: the file on disk, not the text in memory.
    let written = source::one_of(&args.output)?;
    let judged = judge_with(&written.loaded, seed, &defects, &setup.options);
    say!("repro: {}", repro_line(&written, seed, &defects, &runs, &setup));
    if judged.violations.iter().any(|violation| violation.invariant == shrunk.invariant) {
        return Ok(true);
    }
    say!("error: the written file does not fail with {} when replayed (a bug of the shrinker)", shrunk.invariant);
    Ok(false)
}

/// The scenario text to shrink and the name the output cites. The one place another source
/// (a generated swarm scenario: `--swarm-seed`) joins.
fn shrink_input(args: &ShrinkArgs) -> Result<(String, String), BadInput> {
    match (&args.scenario, &args.swarm_seed) {
        (Some(path), None) => source::text_of(path),
        (None, Some(seed)) => {
            let (seed, profiles) = (Seed::parse(seed).map_err(BadInput)?, profile_set(&args.profiles)?);
            Ok((format!("swarm seed {seed} ({})", profiles.name()), sim::swarm::plan(seed, profiles).text))
        }
        _ => Err(BadInput("shrink takes a scenario file or --swarm-seed S, exactly one".into())),
    }
}

/// The failing run's seed: --seed, or the swarm seed (a swarm run uses its own seed).
fn shrink_seed(args: &ShrinkArgs) -> Result<String, BadInput> {
    args.seed.clone().or_else(|| args.swarm_seed.clone()).ok_or_else(|| BadInput("shrink needs --seed N (the failing run's seed)".into()))
}

/// A bad `-o` is refused before minutes of runs, not after.
fn check_output(output: &Path) -> Result<(), BadInput> {
    if output.is_dir() {
        return Err(BadInput(format!("{}: a folder; -o names the scenario file to write", output.display())));
    }
    let parent = output.parent().filter(|parent| !parent.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !parent.is_dir() {
        return Err(BadInput(format!("{}: no such folder to write {} into", parent.display(), output.display())));
    }
    Ok(())
}

/// The repro line the file's header carries: without `--expect-hash`, which would hash the
/// header itself.
fn plain_repro(args: &ShrinkArgs, seed: Seed, defects: &Defects) -> String {
    let mut line = format!("mailchaos repro {} --seed {seed}", args.output.display());
    for defect in defects.iter() {
        line += &format!(" --defect {}", defect.name());
    }
    if let Some(profile) = &args.profile {
        line += &format!(" --profile {profile}");
    }
    line
}

fn report_shrink(shrunk: &sim::shrink::Shrunk, seconds: f64, output: &Path) {
    for step in &shrunk.steps {
        say!("kept: {step}");
    }
    say!(
        "shrink: invariant={} faults {} -> {} messages {} -> {} runs={} stopped={} wall={seconds:.1}s",
        shrunk.invariant,
        shrunk.faults.0,
        shrunk.faults.1,
        shrunk.messages.0,
        shrunk.messages.1,
        shrunk.runs,
        shrunk.stop
    );
    if shrunk.stop == sim::shrink::Stop::WallLimit {
        say!("note: the wall limit ({}s) stopped the search before its run budget: this is the best so far, and another machine may get further (lower --max-runs for a result that is the same everywhere)", sim::shrink::DEFAULT_WALL_LIMIT.as_secs());
    }
    say!("wrote {}", output.display());
}
