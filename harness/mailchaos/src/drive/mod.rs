//! `mailchaos drive SCENARIO --target FILE`: a scenario's workload and faults played against a
//! real mail stack, judged from the outside.
//!
//! The driver runs the scenario's remote senders (the stack's own `sender`, with the scenario's
//! retry policies) and mail clients (`client`, `client_imap`, with their caches) in real time on
//! real sockets, against the endpoints a target file names (`target.rs`, `docs/target-file.md`).
//! Every connection goes through a link the driver owns (`net.rs`), so it partitions them as
//! the scenario says; crashes, stalls and storage faults run the target's hooks. A fault the
//! target gives no way to perform is reported as not fired, never skipped in silence. What the
//! senders and clients saw is the history; `check::check_black_box` judges it.
//!
//! Time is real time: a scenario's second is a second here, times `--time-scale` (0.01 plays a
//! four-hour slice in 144 s: arrivals, fault windows, retry policies, client polls and the
//! horizon all shrink together; the target's own timers do not). The seed draws the same plan
//! as in simulation: which messages, to whom, when, and when each fault comes.

mod net;
pub mod target;

use crate::bad_input::BadInput;
use crate::report::{say_explained, tally};
use crate::shared::say_line;
use disk::Disk;
use history::{Event, History, Journal, RunOutput};
use net::{DriveNet, Endpoints, Links};
use sim::scenario::{provider_domain, provider_host, FaultKind, Scenario};
use sim::seed::Seed;
use sim::world::plan::{self, PlannedFault};
use stack::client::ClientConfig;
use stack::client_imap::ImapClientConfig;
use stack::sender::ProviderConfig;
use stack::{Defects, Env};
use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use target::Target;

/// How long a hook may run before the driver gives up on it (and counts the fault not fired).
const HOOK_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the driver waits for a restarted host's endpoints to accept connections again.
const RESTART_WAIT: Duration = Duration::from_secs(60);

/// The shortest poll interval of a driven client, whatever the time scale.
const MIN_POLL: Duration = Duration::from_millis(500);

/// Violations explained with their evidence under the verdict line.
const EXPLAINED: usize = 10;

pub struct Args {
    pub scenario: PathBuf,
    pub target: PathBuf,
    pub seed: Option<String>,
    pub history: Option<PathBuf>,
    /// Scenario time × this = real time.
    pub time_scale: f64,
}

/// The time scales a drive accepts: from a thousandth (a day in 86 s) to a thousand.
const TIME_SCALES: std::ops::RangeInclusive<f64> = 0.001..=1000.0;

pub fn drive(args: &Args) -> Result<bool, BadInput> {
    let scenario = sim::scenario::load(&args.scenario).map_err(|error| BadInput(error.to_string()))?.scenario;
    let target = target::load(&args.target).map_err(|error| BadInput(error.to_string()))?;
    matches_target(&scenario, &target, &args.target)?;
    let seed = Seed::parse(args.seed.as_deref().unwrap_or("1")).map_err(BadInput)?;
    if !TIME_SCALES.contains(&args.time_scale) {
        return Err(BadInput(format!("--time-scale must be between {} and {}, got {}", TIME_SCALES.start(), TIME_SCALES.end(), args.time_scale)));
    }
    let sink = match &args.history {
        Some(path) => Some(std::fs::File::create(path).map_err(|error| BadInput(format!("--history {}: {error}", path.display())))?),
        None => None,
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|error| BadInput(format!("cannot start the runtime: {error}")))?;
    let local = tokio::task::LocalSet::new();
    let outcome = local.block_on(&runtime, run(&scenario, &target, seed, args.time_scale, sink)).map_err(BadInput)?;
    Ok(judge(&outcome, &args.target))
}

/// The scenario's mailboxes must be the target's users, in its domain: the driver's clients log
/// in as them and the checkers map each recipient onto its mailbox.
fn matches_target(scenario: &Scenario, target: &Target, path: &Path) -> Result<(), BadInput> {
    let domain = scenario.mx.domains.first().cloned().unwrap_or_default();
    if !domain.eq_ignore_ascii_case(&target.domain) {
        return Err(BadInput(format!("{}: the target's domain {:?} is not the scenario's {:?}", path.display(), target.domain, domain)));
    }
    let missing: Vec<&String> = scenario.mx.users.get_ref().iter().filter(|user| target.password_of(user).is_none()).collect();
    if !missing.is_empty() {
        return Err(BadInput(format!("{}: the scenario's mailboxes {missing:?} are not users of the target ([[users]])", path.display())));
    }
    if target.pop3.is_none() && target.imap.is_none() {
        return Err(BadInput(format!("{}: the target names neither [pop3] nor [imap]: no client could read mail", path.display())));
    }
    Ok(())
}

/// Each fault performed so far, with why it did not fire (None: it fired).
type FaultOutcomes = Rc<RefCell<Vec<(String, Option<String>)>>>;

/// What a drive leaves for its judge.
struct Outcome {
    output: RunOutput,
    /// Each planned fault, and why it was not performed (None: fired).
    faults: Vec<(String, Option<String>)>,
    /// (message, recipient) pairs planned, and those that reached their end at their sender.
    pairs: usize,
    finished: usize,
}

async fn run(scenario: &Scenario, target: &Target, seed: Seed, scale: f64, sink: Option<std::fs::File>) -> Result<Outcome, String> {
    // A drive is not a simulation: it plays against real daemons, so real time is its clock
    // (and nothing it records is replayed; the seed fixes the plan, not the run).
    let started = Instant::now();
    let history = Rc::new(RefCell::new(History { max_events: Some(history::events_allowed(*scenario.workload.messages.get_ref() as usize)), ..History::default() }));
    // The first failure to write the history file: the drive goes on (the records are kept in
    // memory and judged), and says at the end that the file is incomplete.
    let sink_failure: Rc<RefCell<Option<String>>> = Rc::default();
    if let Some(file) = sink {
        let (file, failure) = (RefCell::new(file), sink_failure.clone());
        history.borrow_mut().observer = Some(Rc::new(move |record: &history::Record| {
            if let Err(error) = file.borrow_mut().write_all(format!("{}\n", record.to_json()).as_bytes()) {
                failure.borrow_mut().get_or_insert(format!("cannot write the history file: {error}"));
            }
        }));
    }
    let clock: history::Clock = Rc::new(move || started.elapsed().as_millis() as u64);
    let journal_of = |host: &str| Journal::new(history.clone(), host, clock.clone());
    let epoch_unix_s = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_secs());
    journal_of("world").record(Event::Clock { tick_ms: 1, epoch_unix_s });
    let links = Rc::new(Links::default());
    let endpoints = Endpoints {
        smtp: target.smtp.address,
        pop3: target.pop3.as_ref().map(|endpoint| endpoint.address),
        imap: target.imap.as_ref().map(|endpoint| endpoint.address),
        dsn: target.dsn.as_ref().map(|dsn| dsn.listen),
    };
    let dsn_taken = Rc::new(Cell::new(false));
    let env_of = |host: &str| Env {
        journal: journal_of(host),
        // The driver's hosts keep nothing on disk: a sender's queue lives as long as the drive.
        disk: Disk::new(Rc::new(disk::mem::MemDisk::default())),
        net: Rc::new(DriveNet { host: host.to_string(), links: links.clone(), endpoints: endpoints.clone(), dsn_taken: dsn_taken.clone() }),
        defects: Defects::none(),
    };
    if let Some(lmtp) = &target.lmtp {
        net::lmtp_proxy(lmtp.proxy, lmtp.address, links.clone()).await.map_err(|error| format!("the LMTP proxy cannot listen on {}: {error}", lmtp.proxy))?;
    }
    let plan = scaled(plan::make(scenario, seed), scale);
    let pairs: usize = plan.workload.iter().flatten().map(|message| message.rcpts.iter().collect::<BTreeSet<_>>().len()).sum();
    spawn_senders(scenario, &plan, scale, epoch_unix_s, &env_of);
    spawn_clients(scenario, target, scale, &env_of);
    let faults: FaultOutcomes = Rc::default();
    for fault in plan.faults.iter().cloned() {
        let (world, links, faults, target) = (journal_of("world"), links.clone(), faults.clone(), target_hooks(target));
        let journal_of = { let (history, clock) = (history.clone(), clock.clone()); move |host: &str| Journal::new(history.clone(), host, clock.clone()) };
        tokio::task::spawn_local(async move {
            let outcome = perform(&fault, &world, &links, &target, &journal_of).await;
            faults.borrow_mut().push((fault.describe(), outcome));
        });
    }
    let planned = plan.faults.len();
    let (ended_at_ms, finished) = wait_until_settled(scenario, scale, &history, (pairs, planned, &faults), started).await;
    // A fault still waiting for its time, or under way, when the horizon came was not performed
    // whole: said so, never left out.
    let mut faults = faults.borrow().clone();
    let performed: Vec<String> = faults.iter().map(|(fault, _)| fault.clone()).collect();
    for fault in plan.faults.iter().map(PlannedFault::describe).filter(|fault| !performed.contains(fault)) {
        faults.push((fault, Some("the drive reached its horizon before this fault was over".into())));
    }
    let history = std::mem::take(&mut *history.borrow_mut());
    let mut output = RunOutput::as_recorded(history, true);
    // The drive ends when it settles, not at its last record.
    (output.ended_at_ms, output.drained_at_ms) = (ended_at_ms, Some(ended_at_ms));
    if let Some(failure) = sink_failure.borrow().clone() {
        say_line(&format!("note: {failure}; the verdict below judges every record, the file lacks some"));
    }
    Ok(Outcome { output, faults, pairs, finished })
}

/// The plan with its times multiplied by `scale`.
fn scaled(mut plan: plan::Plan, scale: f64) -> plan::Plan {
    let times = |ms: u64| (ms as f64 * scale).round() as u64;
    for message in plan.workload.iter_mut().flatten() {
        message.at_ms = times(message.at_ms);
    }
    for fault in &mut plan.faults {
        (fault.start_ms, fault.end_ms) = (times(fault.start_ms), times(fault.end_ms));
    }
    plan
}

fn spawn_senders(scenario: &Scenario, plan: &plan::Plan, scale: f64, epoch_unix_s: u64, env_of: &impl Fn(&str) -> Env) {
    for (provider, planned) in scenario.providers.iter().zip(plan.workload.clone()) {
        let name = provider.name.get_ref();
        let time_scale = provider.time_scale * scale;
        let Some(policy) = mail::policy::RetryPolicy::built_in(provider.policy.get_ref(), time_scale) else { continue };
        let config = ProviderConfig {
            hostname: format!("mta.{}", provider_domain(name)),
            domain: provider_domain(name),
            mx_host: "mx".into(),
            policy,
            time_scale,
            max_connections: provider.max_connections.clamp(1, 1000),
            chunking: provider.chunking,
            epoch_unix_s,
            plan: planned,
        };
        tokio::task::spawn_local(stack::sender::run(env_of(&provider_host(name)), config));
    }
}

/// One client per mailbox, as the simulation runs them (`Clients::plans`), its times scaled,
/// reading over the protocol it speaks if the target offers it, else over the other.
fn spawn_clients(scenario: &Scenario, target: &Target, scale: f64, env_of: &impl Fn(&str) -> Env) {
    for plan in scenario.clients.plans(scenario.mx.users.get_ref()) {
        let password = target.password_of(&plan.user).unwrap_or_default().to_string();
        let first_poll = plan.first_poll.mul_f64(scale);
        // A client polls at least every half second of real time, however small the scale.
        let poll_interval = plan.poll_interval.mul_f64(scale).max(MIN_POLL);
        let env = env_of(&plan.host);
        let config = ClientConfig { store_host: "store".into(), user: plan.user, password, first_poll, poll_interval, delete_after_fetch: plan.delete_after_fetch };
        if (plan.protocol != "pop3" && target.imap.is_some()) || target.pop3.is_none() {
            tokio::task::spawn_local(stack::client_imap::run(env, ImapClientConfig::of(config, plan.protocol != "webmail")));
        } else {
            tokio::task::spawn_local(stack::client::run(env, config));
        }
    }
}

/// Ends the drive once every fault is over (a crashed daemon restarted), every (message,
/// recipient) has reached its end at its sender and the clients have had three polls since, or
/// at the scenario's horizon. Returns the end in ms and how many pairs reached their end.
async fn wait_until_settled(scenario: &Scenario, scale: f64, history: &Rc<RefCell<History>>, (pairs, planned_faults, faults): (usize, usize, &FaultOutcomes), started: Instant) -> (u64, usize) {
    let horizon = Duration::from_secs(*scenario.horizon_s.get_ref()).mul_f64(scale);
    let settle = Duration::from_secs(scenario.clients.longest_poll_s()).mul_f64(scale).max(MIN_POLL) * 3;
    let mut settled_since: Option<Instant> = None;
    let mut finished = 0;
    while started.elapsed() < horizon {
        tokio::time::sleep(Duration::from_millis(250)).await;
        finished = history.borrow().records.iter().filter(|record| matches!(record.event, Event::SenderOutcome { .. })).count();
        let done = finished >= pairs && faults.borrow().len() >= planned_faults;
        match (done, settled_since) {
            (true, None) => settled_since = Some(Instant::now()),
            (true, Some(since)) if since.elapsed() >= settle => break,
            (false, _) => settled_since = None,
            _ => {}
        }
    }
    (started.elapsed().as_millis() as u64, finished)
}

/// The hooks a fault task needs, owned.
fn target_hooks(target: &Target) -> Rc<Hooks> {
    Rc::new(Hooks {
        commands: target.hooks.clone(),
        smtp: target.smtp.address,
        store: target.pop3.as_ref().or(target.imap.as_ref()).map(|endpoint| endpoint.address),
        lmtp_proxy: target.lmtp.is_some(),
    })
}

struct Hooks {
    commands: std::collections::BTreeMap<String, String>,
    smtp: std::net::SocketAddr,
    store: Option<std::net::SocketAddr>,
    lmtp_proxy: bool,
}

impl Hooks {
    fn has(&self, name: &str) -> bool {
        self.commands.get(name).is_some_and(|command| !command.trim().is_empty())
    }

    /// Runs a hook (sh -c) with a bounded wait; its output goes into the history.
    async fn run(&self, name: &str, world: &Journal) -> Result<(), String> {
        let Some(command) = self.commands.get(name) else { return Err(format!("the target has no {name} hook")) };
        let child = tokio::process::Command::new("sh").arg("-c").arg(command).kill_on_drop(true).stdin(std::process::Stdio::null()).output();
        let output = match tokio::time::timeout(HOOK_TIMEOUT, child).await {
            Err(_) => return Err(format!("hook {name} ran past {}s", HOOK_TIMEOUT.as_secs())),
            Ok(Err(error)) => return Err(format!("hook {name} could not run: {error}")),
            Ok(Ok(output)) => output,
        };
        let said = String::from_utf8_lossy(&output.stdout).to_string() + &String::from_utf8_lossy(&output.stderr);
        world.record(Event::Fault { action: format!("hook {name}: {} {}", output.status, input::clip(said.trim())).into() });
        if output.status.success() { Ok(()) } else { Err(format!("hook {name} failed ({})", output.status)) }
    }

    /// Waits until the host's endpoint accepts connections (a restarted daemon is up).
    async fn wait_up(&self, host: &str) -> Result<(), String> {
        let Some(address) = (if host == "mx" { Some(self.smtp) } else { self.store }) else { return Ok(()) };
        let deadline = Instant::now() + RESTART_WAIT;
        while Instant::now() < deadline {
            if tokio::net::TcpStream::connect(address).await.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!("{host} did not accept connections at {address} within {}s of its restart", RESTART_WAIT.as_secs()))
    }
}

/// Performs one planned fault at its times; None when it fired, else why not.
async fn perform(fault: &PlannedFault, world: &Journal, links: &Links, hooks: &Hooks, journal_of: &impl Fn(&str) -> Journal) -> Option<String> {
    let (start, end) = (Duration::from_millis(fault.start_ms), Duration::from_millis(fault.end_ms.max(fault.start_ms)));
    let begun = Instant::now() - Duration::from_millis(journal_of("world").now_ms());
    let until = |at: Duration| tokio::time::sleep_until(tokio::time::Instant::from_std(begun + at));
    let hosts: Vec<&str> = fault.hosts.iter().map(String::as_str).collect();
    if fault.point.is_some() {
        return Some("the driver cannot trigger a fault at a fail point of a real stack".into());
    }
    match (&fault.kind, hosts.as_slice()) {
        (FaultKind::Cut, [a, b]) => {
            if fault.stage.as_deref() != Some("data-end") {
                return Some(format!("the driver cuts a link after the final dot (stage data-end) only, not after {}", fault.stage.as_deref().unwrap_or("?")));
            }
            if (*a, *b) == ("mx", "store") && !hooks.lmtp_proxy {
                return Some("the target names no [lmtp] proxy between the MTA and the store".into());
            }
            until(start).await;
            let fired = Rc::new(Cell::new(false));
            world.record(Event::Fault { action: format!("arm cut {a} {b} after stage data-end").into() });
            links.arm_cut(a, b, end - start, fired.clone());
            // A cut is armed until a message triggers it; none did by the end of the chaos phase.
            until(end.max(start + Duration::from_secs(1))).await;
            match fired.get() {
                true => None,
                false => {
                    links.disarm_cut(&fired);
                    Some("no message ended its data on the link while the cut was armed".into())
                }
            }
        }
        (FaultKind::Partition | FaultKind::PartitionOneway, [a, b]) => {
            if [*a, *b] == ["mx", "store"] || [*a, *b] == ["store", "mx"] {
                if !hooks.lmtp_proxy {
                    return Some("the target names no [lmtp] proxy between the MTA and the store".into());
                }
            }
            until(start).await;
            world.record(Event::Fault { action: format!("partition {a} {b}").into() });
            links.partition(a, b);
            until(end).await;
            links.repair(a, b);
            world.record(Event::Fault { action: format!("repair {a} {b}").into() });
            None
        }
        (FaultKind::Crash, [host @ ("mx" | "store")]) => {
            let (crash, restart) = (format!("crash_{host}"), format!("restart_{host}"));
            if !hooks.has(&crash) || !hooks.has(&restart) {
                return Some(format!("the target has no {crash} and {restart} hooks"));
            }
            until(start).await;
            if let Err(why) = hooks.run(&crash, world).await {
                return Some(why);
            }
            journal_of(host).record(Event::Crash);
            until(end).await;
            if let Err(why) = hooks.run(&restart, world).await {
                return Some(why);
            }
            let up = hooks.wait_up(host).await;
            journal_of(host).record(Event::Restart);
            up.err()
        }
        (kind, [host @ ("mx" | "store")]) => match window_hooks(kind, host, hooks) {
            None => Some(format!("the driver cannot perform {} on a real stack", kind.name())),
            Some((begin, finish)) if !hooks.has(&begin) || !hooks.has(&finish) => Some(format!("the target has no {begin} and {finish} hooks")),
            Some((begin, finish)) => {
                until(start).await;
                if let Err(why) = hooks.run(&begin, world).await {
                    return Some(why);
                }
                let outage = matches!(kind, FaultKind::Outage);
                if outage {
                    world.record(Event::Outage { down: true });
                }
                until(end).await;
                let resumed = hooks.run(&finish, world).await;
                if outage {
                    world.record(Event::Outage { down: false });
                }
                resumed.err()
            }
        },
        (kind, _) => Some(format!("the driver cannot perform {} between {}", kind.name(), fault.hosts.join(" and "))),
    }
}

/// The hooks that begin and end a window fault on a host's storage: a stall freezes the file
/// system, or else stops the daemon (from outside, a stalled disk and a stopped process look
/// the same: nothing answers until it resumes).
fn window_hooks(kind: &FaultKind, host: &str, hooks: &Hooks) -> Option<(String, String)> {
    let pair = |begin: &str, finish: &str| Some((begin.to_string(), finish.to_string()));
    match kind {
        FaultKind::DiskStall | FaultKind::Outage if hooks.has("freeze") => pair("freeze", "thaw"),
        FaultKind::DiskStall | FaultKind::Outage => Some((format!("stall_{host}"), format!("resume_{host}"))),
        FaultKind::ReadOnly => pair("storage_readonly", "storage_writable"),
        FaultKind::DiskFull => pair("storage_full", "storage_free"),
        _ => None,
    }
}

/// A drive that never settled, or in which the target accepted nothing, judged nothing: an ok
/// then would be worse than no verdict (L1).
fn unfinished(outcome: &Outcome) -> Vec<check::Violation> {
    let mut violations = Vec::new();
    let records = &outcome.output.history.records;
    let accepted = records.iter().any(|record| matches!(&record.event, Event::SmtpReply { stage: history::Stage::DataEnd, reply, .. } if reply.starts_with('2')));
    if outcome.pairs > 0 && !accepted {
        violations.push(check::Violation::new("L1", "target", "the target accepted no message: nothing was judged (is it up, and are the target file's addresses right?)", vec![]));
    }
    if outcome.output.history.overflowed {
        let explanation = format!("the drive recorded more than {} events (a runaway loop in the target or the driver)", outcome.output.history.limit());
        violations.push(check::Violation::new("L1", "history", explanation, vec![]));
    }
    if outcome.finished < outcome.pairs {
        let explanation = format!("the drive reached the scenario's horizon with {} of {} (message, recipient) pairs not at their end at their senders", outcome.pairs - outcome.finished, outcome.pairs);
        violations.push(check::Violation::new("L1", "senders", explanation, vec![]));
    }
    violations
}

/// What each black-box invariant had to judge: a verdict over nothing is no verdict.
fn judged_counts(records: &[history::Record]) -> String {
    let count = |matches: &dyn Fn(&Event) -> bool| records.iter().filter(|record| matches(&record.event)).count();
    let accepted = count(&|event| matches!(event, Event::SmtpReply { stage: history::Stage::DataEnd, reply, .. } if reply.starts_with('2')));
    let outcomes = count(&|event| matches!(event, Event::SenderOutcome { .. }));
    let downloads = count(&|event| matches!(event, Event::ClientFetched { .. }));
    let listings = count(&|event| matches!(event, Event::ClientListing { .. }));
    let dsns = count(&|event| matches!(event, Event::MailReceived { .. }));
    let submitted = count(&|event| matches!(event, Event::Submit { .. }));
    format!(
        "A2,A13 {accepted} transactions accepted, {outcomes} (message, recipient) ends at the senders, {downloads} downloads; A9-A11 {dsns} DSNs came back; A19 {listings} listings; A26,A28 {submitted} messages submitted; A27 {downloads} downloads' trace fields"
    )
}

/// Prints the verdict of a drive; true when ok.
fn judge(outcome: &Outcome, target: &Path) -> bool {
    let mut violations = check::check_black_box(&outcome.output);
    violations.extend(unfinished(outcome));
    for (fault, why_not) in &outcome.faults {
        match why_not {
            None => say_line(&format!("fault fired: {fault}")),
            Some(why) => say_line(&format!("fault not fired: {fault}: {why}")),
        }
    }
    let judged: Vec<&str> = check::BLACK_BOX_CHECKERS.iter().map(|(invariant, _)| *invariant).collect();
    let verdict = if violations.is_empty() { "ok" } else { "violation" };
    say_line(&format!(
        "{verdict} target={} records={} judged={} violated=[{}] faults_not_fired={} seconds={:.1}",
        target.display(),
        outcome.output.history.records.len(),
        judged.join(","),
        tally(&violations),
        outcome.faults.iter().filter(|(_, why_not)| why_not.is_some()).count(),
        outcome.output.ended_at_ms as f64 / 1000.0
    ));
    say_line(&format!("judged: {}", judged_counts(&outcome.output.history.records)));
    say_explained(&outcome.output, &violations, EXPLAINED);
    violations.is_empty()
}
