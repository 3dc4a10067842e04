//! Crash-state exploration: stop the world at each crash moment, take every state the disk's
//! profile allows there, restart the host's recovery on it, and judge the result against what
//! had been acknowledged by then.
//!
//! Moments are the scenario's own crashes and the first hits of every fail point of the stack
//! (armed with a callback that only records, so the run itself goes on undisturbed). The oracle
//! is the history up to the moment: an acknowledged queue file or mailbox message that recovery
//! does not find intact is a violation (A1), a damaged file visible in new/ or cur/ is A15, and
//! a recovered UIDNEXT at or below an issued UID is A17. A message moved since its delivery
//! (read: new/ → cur/, as the disk recorded the rename) may come back under any of its names.

use devices::crash::{Frontier, Image};
use devices::profile::Profile;
use devices::sim::SimDisk;
use disk::Disk;
use history::{Event, History, Journal, Record};
use crate::scenario::Scenario;
use crate::seed::Seed;
use stack::net::{BoxStream, Listener, Net, NetFuture};
use stack::queue::QueuedMessage;
use stack::store::{self, StoreConfig};
use mail::message;
use stack::{self, Defects, Env};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Duration;

/// Each fail point is explored at its first hits only: later hits repeat the same shape.
pub const HITS_PER_POINT: u32 = 4;
/// Upper bound on moments per run, whatever the scenario does.
pub const MAX_MOMENTS: usize = 64;

/// The disk of one host at one moment where a crash could happen.
pub struct Moment {
    pub host: String,
    pub label: String,
    pub at_ms: u64,
    /// How many history records existed: the acknowledgements the oracle holds the disk to.
    pub history_len: usize,
    pub frontier: Frontier,
}

struct Explorer {
    disks: BTreeMap<String, Rc<SimDisk>>,
    history: Rc<RefCell<History>>,
    moments: Vec<Moment>,
    hits: BTreeMap<String, u32>,
}

thread_local! {
    // fail's callbacks must be `Send + Sync` and cannot capture the world's `Rc`s, so the
    // explorer lives beside the (single-threaded) simulation for the length of one run.
    static EXPLORER: RefCell<Option<Explorer>> = const { RefCell::new(None) };
}

/// Starts recording moments for this run: arms every fail point of the stack with a recorder.
pub fn install(disks: BTreeMap<String, Rc<SimDisk>>, history: Rc<RefCell<History>>) {
    EXPLORER.with(|explorer| *explorer.borrow_mut() = Some(Explorer { disks, history, moments: Vec::new(), hits: BTreeMap::new() }));
    for point in stack::CRASH_POINTS {
        let host = if point.starts_with("mx-") { "mx" } else { "store" };
        let _ = fail::cfg_callback(*point, move || capture(host, &format!("fail point {point}")));
    }
}

pub fn is_active() -> bool {
    EXPLORER.with(|explorer| explorer.borrow().is_some())
}

/// Records the crash frontier of `host` now (its first hits per label only).
pub fn capture(host: &str, label: &str) {
    EXPLORER.with(|explorer| {
        let mut explorer = explorer.borrow_mut();
        let Some(explorer) = explorer.as_mut() else { return };
        let hits = explorer.hits.entry(label.to_string()).or_default();
        *hits += 1;
        if *hits > HITS_PER_POINT || explorer.moments.len() >= MAX_MOMENTS {
            return;
        }
        let Some(disk) = explorer.disks.get(host) else { return };
        let history = explorer.history.borrow();
        let at_ms = history.records.last().map_or(0, |record| record.t_ms);
        let moment = Moment { host: host.to_string(), label: label.to_string(), at_ms, history_len: history.records.len(), frontier: disk.frontier() };
        drop(history);
        explorer.moments.push(moment);
    });
}

/// Ends recording and hands over the moments.
pub fn take() -> Vec<Moment> {
    EXPLORER.with(|explorer| explorer.borrow_mut().take().map(|explorer| explorer.moments).unwrap_or_default())
}

/// One violating crash state.
pub struct Finding {
    pub invariant: &'static str,
    pub subject: String,
    pub explanation: String,
    pub state: String,
}

/// The verdict on one moment.
pub struct MomentReport {
    pub states: usize,
    pub exhaustive: bool,
    pub findings: Vec<Finding>,
}

/// Explores every allowed crash state of one moment.
pub fn explore_moment(moment: &Moment, records: &[Record], scenario: &Scenario, defects: &Defects, max_states: usize, seed: Seed) -> MomentReport {
    let mut rng = seed.stream(&format!("explore/{}/{}", moment.label, moment.at_ms));
    let (states, exhaustive) = moment.frontier.enumerate(max_states, &mut rng);
    let acknowledged = &records[..moment.history_len.min(records.len())];
    let expected = Expected::from_history(&moment.host, acknowledged);
    let mut findings = Vec::new();
    for state in &states {
        let image = moment.frontier.materialize(state);
        for (invariant, subject, explanation) in judge_state(moment, &image, &expected, scenario, defects) {
            findings.push(Finding { invariant, subject, explanation, state: moment.frontier.describe(state) });
            break; // one finding per state is enough to show it
        }
    }
    MomentReport { states: states.len(), exhaustive, findings }
}

/// What the history had acknowledged by the moment, and the disk must therefore keep.
struct Expected {
    /// Queue files the MX answered 250 for and had not finished: file → message id.
    queue_files: BTreeMap<String, String>,
    /// Queue files the MX finished (every recipient recorded done, the file removed): a crash
    /// must not bring them back, or their mail would be delivered again.
    finished_queue_files: BTreeMap<String, String>,
    /// Store deliveries answered 2xx and not since removed by a client: file as delivered →
    /// (mailbox, uid, digest, every name it has had since: a crash may keep any of them).
    mailbox_files: BTreeMap<String, (String, u64, String, Vec<String>)>,
    /// The highest UID issued per (mailbox, uidvalidity).
    highest_uid: BTreeMap<(String, u64), u64>,
    /// Files whose bytes the device itself damaged or dropped (an injected fault): not the
    /// stack's doing, and A23 judges how the store serves them.
    damaged_by_device: BTreeSet<String>,
}

impl Expected {
    fn from_history(host: &str, records: &[Record]) -> Expected {
        let damaged_by_device = check::facts::device_damaged_names(records);
        let mut expected = Expected { queue_files: BTreeMap::new(), finished_queue_files: BTreeMap::new(), mailbox_files: BTreeMap::new(), highest_uid: BTreeMap::new(), damaged_by_device };
        let mut removed = BTreeSet::new();
        let mut unlinked = BTreeSet::new();
        let mut moved: BTreeMap<String, String> = BTreeMap::new();
        let mut delivered: BTreeMap<String, (String, u64, String)> = BTreeMap::new();
        for record in records {
            match &record.event {
                Event::MxDataEnd(end) if end.reply.starts_with('2') && end.queue_file.is_some() => {
                    expected.queue_files.insert(end.queue_file.as_deref().unwrap_or_default().to_string(), end.msg.to_string());
                }
                Event::QueueRecorded { queue_file, msg, remaining, .. } if remaining.is_empty() => {
                    expected.queue_files.remove(queue_file.as_str());
                    expected.finished_queue_files.insert(queue_file.to_string(), msg.to_string());
                }
                Event::StoreDelivered(stored) => {
                    let history::Stored { mailbox, uidvalidity, uid, file, digest, .. } = &**stored;
                    delivered.insert(file.to_string(), (mailbox.to_string(), *uid, digest.to_string()));
                    let highest = expected.highest_uid.entry((mailbox.to_string(), *uidvalidity)).or_default();
                    *highest = (*highest).max(*uid);
                }
                Event::DiskRemove { path } if &*record.host == host => {
                    removed.insert(path.to_string());
                    unlinked.insert(path.to_string());
                }
                Event::DiskRename { from, to } if &*record.host == host => {
                    removed.insert(from.to_string());
                    moved.insert(from.to_string(), to.to_string());
                }
                _ => {}
            }
        }
        // A file the stack itself removed (a delivered queue file, a message its owner deleted)
        // may be gone in any state.
        expected.queue_files.retain(|file, _| !removed.contains(file));
        for (file, (mailbox, uid, digest)) in delivered {
            let mut names = vec![file.clone()];
            while let Some(next) = moved.get(&names[names.len() - 1]).filter(|_| names.len() < 16) {
                names.push(next.clone());
            }
            if !names.last().is_some_and(|name| unlinked.contains(name)) {
                expected.mailbox_files.insert(file, (mailbox, uid, digest, names));
            }
        }
        expected
    }
}

type Judgement = (&'static str, String, String);

fn judge_state(moment: &Moment, image: &Image, expected: &Expected, scenario: &Scenario, defects: &Defects) -> Vec<Judgement> {
    let (recovered, history) = recover(moment, image, scenario, defects);
    let mut findings = Vec::new();
    if moment.host == "mx" {
        for (file, msg) in &expected.queue_files {
            let intact = recovered.get(file).and_then(|bytes| QueuedMessage::decode(bytes, true).ok()).is_some_and(|queued| &queued.msg == msg);
            if !intact {
                findings.push(("A1", format!("msg {msg} queue file {file}"), "acknowledged with 250, but the recovered queue does not hold it intact".to_string()));
            }
        }
        for (file, msg) in expected.finished_queue_files.iter().filter(|(file, _)| !expected.damaged_by_device.contains(file.rsplit('/').next().unwrap_or(file))) {
            if recovered.contains_key(file) {
                findings.push(("A13", format!("msg {msg} queue file {file}"), "delivered and removed from the queue, but the recovered queue holds it again: its mail would be delivered twice".to_string()));
            }
        }
        return findings;
    }
    let by_device = |path: &str| expected.damaged_by_device.contains(path.rsplit('/').next().unwrap_or(path));
    for (file, (mailbox, uid, digest, names)) in expected.mailbox_files.iter().filter(|(_, (.., names))| !names.iter().any(|name| by_device(name))) {
        let found: Vec<&Vec<u8>> = names.iter().filter_map(|name| recovered.get(name)).collect();
        if found.iter().any(|bytes| &message::content_digest(bytes) == digest) {
            continue;
        }
        let what = if found.is_empty() { "is gone after recovery" } else { "came back damaged" };
        findings.push(("A1", format!("mailbox {mailbox} uid {uid}"), format!("delivered (LMTP 250), but {file} {what}")));
    }
    for (path, bytes) in &recovered {
        let Some((dir, name)) = path.rsplit_once('/') else { continue };
        let Some(sub) = ["new", "cur"].into_iter().find(|sub| dir.ends_with(&format!("/{sub}"))) else { continue };
        if by_device(path) {
            continue;
        }
        if let Some((_, sum)) = store::parse_file_name(name) {
            if store::checksum(bytes) != sum {
                findings.push(("A15", path.clone(), format!("a partial or damaged message ({} bytes) is visible in {sub}/ after recovery", bytes.len())));
            }
        }
    }
    for record in &history.records {
        if let Event::StoreRecovered { mailbox, uidvalidity, uidnext, .. } = &record.event {
            let issued = expected.highest_uid.get(&(mailbox.to_string(), *uidvalidity)).copied().unwrap_or(0);
            if *uidnext <= issued {
                findings.push(("A17", format!("mailbox {mailbox}"), format!("recovery set UIDNEXT {uidnext} under UIDVALIDITY {uidvalidity}, but UID {issued} was already issued")));
            }
        }
    }
    findings
}

/// Restarts the host's recovery on a crash state; returns what it leaves and what it recorded.
fn recover(moment: &Moment, image: &Image, scenario: &Scenario, defects: &Defects) -> (BTreeMap<String, Vec<u8>>, History) {
    let history = Rc::new(RefCell::new(History::default()));
    let at_ms = moment.at_ms;
    let journal = Journal::new(history.clone(), &moment.host, Rc::new(move || at_ms));
    let rng = Seed(at_ms).stream("explore/recovery");
    let disk = Rc::new(SimDisk::from_image(journal.clone(), Rc::new(honest_for_recovery()), image.clone(), rng));
    let env = Env { journal, disk: Disk::new(disk.clone()), net: Rc::new(NoNet), defects: defects.clone() };
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build() else {
        return (BTreeMap::new(), History::default());
    };
    let local = tokio::task::LocalSet::new();
    let host = moment.host.clone();
    let config = store_config(scenario);
    local.block_on(&runtime, async move {
        let recovery = async {
            if host == "mx" {
                stack::queue::recover(&env).await;
            } else {
                let _ = store::recover(&env, &config).await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(3600), recovery).await;
    });
    let recovered = disk.view();
    let history = std::mem::take(&mut *history.borrow_mut());
    (recovered, history)
}

/// Recovery runs on an honest disk: the state under judgement is already the crash's outcome.
fn honest_for_recovery() -> Profile {
    Profile::default()
}

fn store_config(scenario: &Scenario) -> StoreConfig {
    StoreConfig {
        hostname: "store.libero.test".into(),
        domains: scenario.mx.domains.clone(),
        users: scenario.mx.users.get_ref().iter().cloned().collect(),
        max_message_bytes: scenario.mx.max_message_bytes + 4096,
        idle_timeout: Duration::from_secs(600),
        command_total_timeout: None,
        login_timeout: None,
        login_failure_delay: Duration::ZERO,
        max_login_failures: None,
        pop3_max_sessions: 1,
        imap_max_sessions: 1,
        restored: Rc::default(),
        cohorts: Rc::default(),
        mark_read_on_retr: scenario.clients.mark_read,
        record_served: false,
    }
}

/// Recovery needs no network; any attempt is an error rather than a hang.
struct NoNet;

impl Net for NoNet {
    fn connect<'a>(&'a self, _host: &'a str, _port: u16) -> NetFuture<'a, BoxStream> {
        Box::pin(async { Err(std::io::Error::other("no network during crash recovery")) })
    }

    fn listen(&self, _port: u16) -> NetFuture<'_, Box<dyn Listener>> {
        Box::pin(async { Err(std::io::Error::other("no network during crash recovery")) })
    }
}
