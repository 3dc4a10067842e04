//! The facts every checker needs, gathered in one pass over the history: who accepted what,
//! what the senders saw, what the store delivered, what clients fetched, and the disk
//! operations of each host indexed by path.

pub use super::kinds::ByKind;
use history::{Event, EventKind, Outcome, Record, Stage};
use mail::message;
use history::RunOutput;
use super::dsns::{self, Dsn};
use super::wire::Wire;
use rustc_hash::{FxHashMap, FxHashSet};
use std::collections::{BTreeMap, BTreeSet};

/// A record index in the history.
pub type At = usize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum DiskOp {
    Write,
    Sync,
    RenamedTo,
    RenamedFrom,
    Remove,
}

/// A host's disk operations, indexed. Paths are borrowed from the history's records (as are
/// every name and key of the facts): building the facts copies no string.
#[derive(Default)]
pub struct HostDisk<'a> {
    /// Per path: operations on it, in history order.
    pub by_path: FxHashMap<&'a str, Vec<(At, DiskOp)>>,
    /// Per directory: its fsyncs, in history order.
    pub dir_syncs: FxHashMap<&'a str, Vec<At>>,
    /// Per target path of a rename: the source path.
    pub renamed_from: FxHashMap<&'a str, Vec<(At, &'a str)>>,
    /// Per source path of a rename: the target path.
    pub renamed_to: FxHashMap<&'a str, Vec<(At, &'a str)>>,
}

/// Renames followed in one chain at most: a file moves tmp/ → new/ → cur/, a few steps.
const MAX_RENAME_CHAIN: usize = 16;

impl<'a> HostDisk<'a> {
    /// The names a file had from record `since` on, as the disk recorded its renames: `path`,
    /// then each later name it was renamed to (a message moved from new/ into cur/ once read).
    /// A crash may leave it under any of them until the rename was made durable.
    pub fn names_from<'p>(&self, path: &'p str, since: At) -> Vec<&'p str>
    where
        'a: 'p,
    {
        let mut names = vec![path];
        let mut at = since;
        while names.len() < MAX_RENAME_CHAIN {
            let current = names[names.len() - 1];
            let Some((moved_at, to)) = self.renamed_to.get(current).and_then(|moves| moves.iter().find(|(moved_at, _)| *moved_at > at)) else { break };
            at = *moved_at;
            names.push(to);
        }
        names
    }

    /// Whether the file at `path` since `since` is still there at the end of the history under
    /// its last name: no removal recorded after it got that name.
    pub fn kept(&self, path: &str, since: At) -> bool {
        let names = self.names_from(path, since);
        let Some(&last) = names.last() else { return false };
        let named_at = match names.len() {
            1 => since,
            _ => self.renamed_from.get(last).and_then(|moves| moves.iter().rev().map(|(at, _)| *at).next()).unwrap_or(since),
        };
        let operations = self.by_path.get(last).map(Vec::as_slice).unwrap_or(&[]);
        !operations.iter().any(|(at, op)| *at > named_at && matches!(op, DiskOp::Remove | DiskOp::RenamedFrom))
    }

    /// Every name a file had, before and after `path`, as the disk recorded its renames.
    pub fn lineage<'p>(&self, path: &'p str) -> BTreeSet<&'p str>
    where
        'a: 'p,
    {
        let mut names = BTreeSet::from([path]);
        let mut pending = vec![path];
        while let Some(name) = pending.pop() {
            let next = self.renamed_to.get(name).into_iter().chain(self.renamed_from.get(name)).flatten();
            for &(_, other) in next {
                if names.len() < MAX_RENAME_CHAIN && names.insert(other) {
                    pending.push(other);
                }
            }
        }
        names
    }
}

/// A message the store reported delivered, with the UID it gave (the store's numbers, which A17
/// and A18 judge; how a UID is spelt in a UIDL is the store's business and nobody else's).
pub struct Delivery<'a> {
    pub at: At,
    pub mailbox: &'a str,
    pub msg: &'a str,
    pub uidvalidity: u64,
    pub uid: u64,
    pub file: &'a str,
    pub digest: &'a str,
}

pub struct Fetch<'a> {
    pub at: At,
    pub mailbox: &'a str,
    pub uidl: &'a str,
    pub msg: &'a str,
    pub digest: &'a str,
    pub size: u64,
}

/// A sender's policy as its provider recorded it when it started.
#[derive(Clone, Debug)]
pub struct SenderPolicy {
    pub name: String,
    pub time_scale: f64,
    pub min_interval_s: f64,
    pub lifetime_s: f64,
    pub retries: bool,
    pub delay_notice_s: Option<f64>,
}

impl SenderPolicy {
    /// The policy a `SenderPolicy` event records.
    pub fn of(event: &Event) -> Option<SenderPolicy> {
        let Event::SenderPolicy { policy, time_scale, min_interval_s, lifetime_s, retries, delay_notice_s } = event else { return None };
        Some(SenderPolicy {
            name: policy.to_string(),
            time_scale: *time_scale,
            min_interval_s: *min_interval_s,
            lifetime_s: *lifetime_s,
            retries: *retries,
            delay_notice_s: *delay_notice_s,
        })
    }
}

/// An MX end-of-data decision: (at, msg, rcpts, queue file, reply).
pub type DataEnd<'a> = (At, &'a str, &'a [String], Option<&'a str>, &'a str);

/// A pair of names borrowed from the history: (msg, rcpt), (mailbox, msg), (mailbox, uidl), …
pub type Pair<'a> = (&'a str, &'a str);

pub struct Facts<'a> {
    pub records: &'a [Record],
    /// Where each kind of record is (`records_of`).
    by_kind: ByKind,
    /// What crossed the servers' sockets: replies paired with the commands they answer.
    pub wire: Wire,
    /// Per provider host: its policy.
    pub policies: BTreeMap<&'a str, SenderPolicy>,
    /// Per message: the host that submitted it.
    pub submitted_by: FxHashMap<&'a str, &'a str>,
    pub images: &'a BTreeMap<String, BTreeMap<String, std::rc::Rc<Vec<u8>>>>,
    /// A live history (see `RunOutput::live`).
    pub live: bool,
    /// Judged from the outside (see `RunOutput::black_box`).
    pub black_box: bool,
    /// Submit per message: (at, from, rcpts, digest). A hash map (every reply is looked up in
    /// it): `submitted_in_order` walks it by message.
    pub submitted: FxHashMap<&'a str, (At, &'a str, &'a [String], &'a str)>,
    /// Every MX end-of-data decision, in history order.
    pub mx_data_ends: Vec<DataEnd<'a>>,
    pub disks: BTreeMap<&'a str, HostDisk<'a>>,
    pub deliveries: Vec<Delivery<'a>>,
    pub fetches: Vec<Fetch<'a>>,
    /// (mailbox, uidl) → where the client asked for its deletion (DELE, then QUIT).
    pub deleted: FxHashMap<Pair<'a>, At>,
    /// The same, where the server answered the QUIT with +OK.
    pub deleted_confirmed: FxHashMap<Pair<'a>, At>,
    /// (mailbox, msg) whose copy the client deleted: the UIDL it deleted is the one it had
    /// fetched the message under (identity from what crossed the wire, not from a UIDL spelling).
    pub deleted_messages: FxHashSet<Pair<'a>>,
    /// (mailbox, uidvalidity, uid) the store removed at its owner's request (`StoreExpunging`):
    /// in a live history, where no client of ours records its DELE, the server's record of it.
    pub expunged: FxHashSet<(&'a str, u64, u64)>,
    /// Sender's terminal outcomes per (msg, rcpt).
    pub outcomes: FxHashMap<Pair<'a>, Vec<(At, Outcome)>>,
    /// Per (msg, rcpt): sender sessions in which the RCPT and the end of data both got 2xx.
    pub sender_saw_ack: BTreeMap<Pair<'a>, usize>,
    /// Per (msg, rcpt): completions the queue runner durably recorded.
    pub queue_recorded: FxHashMap<Pair<'a>, Vec<At>>,
    /// Per queue file: LMTP 2xx replies for it.
    pub lmtp_ok_by_file: FxHashMap<&'a str, Vec<At>>,
    /// Every DSN, the remote senders' and the MX's (`dsns.rs`).
    pub dsns: Vec<Dsn>,
    /// Per (msg, rcpt): the failure DSNs sent about it (owned: a DSN's names are read from its
    /// content, not borrowed from a record).
    failure_dsns_of: BTreeMap<(String, String), Vec<At>>,
    /// Per message: its sender's attempts (where, and for which recipients).
    pub attempts_of: FxHashMap<&'a str, Vec<(At, &'a [String])>>,
    /// Per (queue file, rcpt): where the store's first 2xx for it was seen.
    pub first_lmtp_ok: FxHashMap<Pair<'a>, At>,
    /// Per message: indices into `mx_data_ends` of its 2xx acknowledgements.
    pub acks_of: FxHashMap<&'a str, Vec<usize>>,
    /// Per (directory, digest of the bytes): files of the store that appeared in that directory
    /// by rename or write, acknowledged or not, as the disk recorded them. A store that crashes
    /// after publishing a file but before its 2xx leaves such a copy (and the sender's retry
    /// makes a justified duplicate). A later move into another directory (read mail, into
    /// cur/) is the same copy, not another publication in the first.
    pub published: FxHashMap<Pair<'a>, BTreeSet<&'a str>>,
    /// Per path on the store's disk: the digest of the bytes it holds (by write, or carried by
    /// a rename).
    pub store_bytes: FxHashMap<&'a str, &'a str>,
    /// msg → indices into `deliveries`, in history order: the checkers look copies up per
    /// accepted (mailbox, msg), and a scan per pair was quadratic (half the CPU of a 20k surge).
    deliveries_by_msg: FxHashMap<&'a str, Vec<usize>>,
    /// (mailbox, msg) its owner's client downloaded at least once.
    fetched_pairs: FxHashSet<Pair<'a>>,
    /// Every name a delivered copy had on the store's disk (its file, then where the store
    /// renamed it: read mail moves into cur/).
    pub delivered_files: FxHashSet<&'a str>,
    /// Every `StoreRecovered`, in history order.
    pub recoveries: Vec<Recovery<'a>>,
    /// Every `StoreCorruption`: (at, mailbox, uid, file).
    pub corruptions: Vec<(At, &'a str, u64, &'a str)>,
    /// Every `DiskDropped`: (at, host, op, path): a promise the device broke.
    pub dropped: Vec<(At, &'a str, &'a str, &'a str)>,
    /// (at, host, fault, path): the device damaged a file's bytes by an injected fault (a torn,
    /// lost or misdirected write, bit rot) — damage no sync could have prevented.
    pub device_damage: Vec<(At, &'a str, &'a str, &'a str)>,
    /// Rollbacks of the store: (snapshot at, rollback at), both world `Fault` records.
    pub rollbacks: Vec<(Option<At>, At)>,
    /// Losses the run reported instead of hiding, per (mailbox, msg).
    pub reported: ReportedLosses,
    /// `device_damaged_names` of the history, once.
    pub device_damaged: BTreeSet<String>,
    /// `pipelining_consequences` of the history, once (A8 and A26 both need them).
    pub pipelining_consequences: BTreeSet<At>,
}

pub struct Recovery<'a> {
    pub at: At,
    pub mailbox: &'a str,
    pub uidvalidity: u64,
    pub uidnext: u64,
    pub restored: bool,
}

/// Messages whose loss is reported rather than hidden: erased by a restore from backup (and never
/// downloaded nor delivered again), or found damaged on storage by the device's doing — by the
/// store (`StoreCorruption`) or by the MX in its queue (`QueueDamaged`). Both sets hold
/// (mailbox, msg); the checkers of loss (A2, A20) exclude exactly these.
#[derive(Default, Debug, Clone)]
pub struct ReportedLosses {
    pub lost_to_rollback: BTreeSet<(String, String)>,
    pub damaged: BTreeSet<(String, String)>,
}

impl ReportedLosses {
    pub fn covers(&self, mailbox: &str, msg: &str) -> bool {
        // Most runs report no loss at all: no key to build then.
        if self.lost_to_rollback.is_empty() && self.damaged.is_empty() {
            return false;
        }
        let key = (mailbox.to_string(), msg.to_string());
        self.lost_to_rollback.contains(&key) || self.damaged.contains(&key)
    }

    /// From the history alone (the report uses it too).
    pub fn of(records: &[Record]) -> ReportedLosses {
        let by_kind = ByKind::of(records);
        ReportedLosses::with_damage(records, &by_kind, &damaged_names(records, &by_kind))
    }

    /// The same, given where each kind of record is and the names of the files the device
    /// damaged (`device_damaged_names`).
    fn with_damage(records: &[Record], by_kind: &ByKind, by_device: &BTreeSet<String>) -> ReportedLosses {
        let mut reported = ReportedLosses::default();
        let mut snapshot_at = None;
        let mut rollbacks = Vec::new();
        // (mailbox, file) → msg, following the store's renames of the file (read mail moves
        // into cur/); (mailbox, msg) → delivery and fetch positions.
        let mut msg_of_file: BTreeMap<(&str, &str), &str> = BTreeMap::new();
        let mut delivered_file: BTreeMap<&str, (&str, &str)> = BTreeMap::new();
        let mut delivered: BTreeMap<(&str, &str), Vec<At>> = BTreeMap::new();
        let mut fetched: BTreeSet<(&str, &str)> = BTreeSet::new();
        let mut corrupt: Vec<(&str, &str)> = Vec::new();
        // Queue file → (msg, recipients not yet delivered); queue files found damaged.
        let mut queued: BTreeMap<&str, (&str, Vec<&str>)> = BTreeMap::new();
        let mut damaged_queue_files: Vec<&str> = Vec::new();
        use EventKind as K;
        let kinds = [K::Fault, K::StoreDelivered, K::StoreRetryRecognised, K::DiskRename, K::ClientFetched, K::StoreCorruption, K::MxDataEnd, K::QueueRecorded, K::QueueDamaged];
        for (at, record) in by_kind.select(records, &kinds) {
            match &record.event {
                Event::Fault { action } if is_snapshot(action) => snapshot_at = Some(at),
                Event::Fault { action } if is_rollback(action) => rollbacks.push((snapshot_at, at)),
                // A recognised retry is the first 2xx of a copy published just before a crash.
                Event::StoreDelivered(stored) | Event::StoreRetryRecognised(stored) if !delivered_file.contains_key(stored.file.as_str()) => {
                    let history::Stored { mailbox, msg, file, .. } = &**stored;
                    msg_of_file.insert((mailbox, file), msg);
                    delivered_file.insert(file, (mailbox, msg));
                    delivered.entry((mailbox, msg)).or_default().push(at);
                }
                Event::DiskRename { from, to } if &*record.host == "store" => {
                    if let Some(&(mailbox, msg)) = delivered_file.get(from.as_str()) {
                        msg_of_file.insert((mailbox, to), msg);
                        delivered_file.insert(to, (mailbox, msg));
                    }
                }
                Event::ClientFetched(fetch) => {
                    fetched.insert((&fetch.mailbox, &fetch.msg));
                }
                Event::StoreCorruption { mailbox, file, .. } => corrupt.push((mailbox, file)),
                Event::MxDataEnd(end) if end.reply.starts_with('2') && end.queue_file.is_some() => {
                    let Some(file) = &end.queue_file else { continue };
                    queued.insert(file, (&end.msg, end.rcpts.iter().map(String::as_str).collect()));
                }
                Event::QueueRecorded { queue_file, remaining, .. } => {
                    if let Some((_, pending)) = queued.get_mut(queue_file.as_str()) {
                        pending.retain(|rcpt| remaining.iter().any(|left| left == rcpt));
                    }
                }
                // A file returned with a DSN is no loss to report: the DSN must cover it (A2).
                Event::QueueDamaged { queue_file, dsn: None, .. } => damaged_queue_files.push(queue_file),
                _ => {}
            }
        }
        // Damage is a reported loss only when the device caused it; damage the stack caused
        // itself (a partial file it published) stays a violation.
        for file in damaged_queue_files {
            let Some((msg, pending)) = queued.get(file).filter(|_| by_device.contains(file_name(file))) else { continue };
            for rcpt in pending {
                reported.damaged.insert((Facts::mailbox_of(rcpt), msg.to_string()));
            }
        }
        for key in corrupt {
            if !by_device.contains(file_name(key.1)) {
                continue;
            }
            if let Some(msg) = msg_of_file.get(&key) {
                reported.damaged.insert((key.0.to_string(), msg.to_string()));
            }
        }
        if rollbacks.is_empty() {
            return reported;
        }
        for (key, ats) in &delivered {
            if fetched.contains(key) {
                continue;
            }
            // Every copy was delivered after a backup and erased by the restore to it.
            let erased = |at: &At| rollbacks.iter().any(|(snapshot, rollback)| snapshot.is_none_or(|s| s < *at) && at < rollback);
            if ats.iter().all(erased) {
                reported.lost_to_rollback.insert((key.0.to_string(), key.1.to_string()));
            }
        }
        reported
    }
}

/// Device faults that damage a file's bytes behind the store's back.
pub const DAMAGING_FAULTS: &[&str] = &["bit-rot", "misdirected-write", "torn-write", "lost-write"];

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Names of the store's and the MX's files whose bytes the device damaged or dropped after
/// acknowledging them. A damaged file stays damaged under every name the disk renamed it to or
/// from (a message read after the damage moves from new/ into cur/ under a longer name).
pub fn device_damaged_names(records: &[Record]) -> BTreeSet<String> {
    damaged_names(records, &ByKind::of(records))
}

fn damaged_names(records: &[Record], by_kind: &ByKind) -> BTreeSet<String> {
    let on_disk = |kinds: &[EventKind]| by_kind.select(records, kinds).map(|(_, record)| record).filter(|record| &*record.host == "store" || &*record.host == "mx");
    let mut damaged: BTreeSet<&str> = BTreeSet::new();
    for record in on_disk(&[EventKind::DiskFault, EventKind::DiskDropped]) {
        match &record.event {
            Event::DiskFault { fault, path, .. } if DAMAGING_FAULTS.contains(&fault.as_str()) => {
                damaged.insert(damaged_name(path));
            }
            Event::DiskDropped { path, .. } => {
                damaged.insert(damaged_name(path));
            }
            _ => {}
        }
    }
    // Most runs damage nothing: the renames need following only when something was damaged.
    if damaged.is_empty() {
        return BTreeSet::new();
    }
    let mut renamed: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for record in on_disk(&[EventKind::DiskRename]) {
        if let Event::DiskRename { from, to } = &record.event {
            let (from, to) = (damaged_name(from), damaged_name(to));
            if from != to {
                renamed.entry(from).or_default().insert(to);
                renamed.entry(to).or_default().insert(from);
            }
        }
    }
    let mut pending: Vec<&str> = damaged.iter().copied().collect();
    while let Some(name) = pending.pop() {
        for &other in renamed.get(name).into_iter().flatten() {
            if damaged.insert(other) {
                pending.push(other);
            }
        }
    }
    damaged.into_iter().map(str::to_string).collect()
}

/// The name a damaged file keeps: its last component, less the `.tmp` of a queue file being
/// rewritten (renamed over the queue file once written). Maildir names and queue names never
/// meet, so one set serves both hosts.
fn damaged_name(path: &str) -> &str {
    let name = file_name(path);
    name.strip_suffix(".tmp").unwrap_or(name)
}

/// The sender replies that are only consequences of an earlier failure in the same pipelined
/// transaction (RFC 2920 §3.1): once MAIL was refused, each pipelined RCPT gets 503 (bad
/// sequence), and once no RCPT was accepted, so does DATA or BDAT. Such a 503 says nothing about
/// the recipient or the message; the sender must act on the first failure (a 4xx at MAIL: try
/// again later), so a checker that read the 503 as a permanent refusal would raise a false alarm.
pub fn pipelining_consequences(records: &[Record]) -> BTreeSet<At> {
    consequences_among(records.iter().enumerate())
}

fn consequences_among<'r>(records: impl Iterator<Item = (At, &'r Record)>) -> BTreeSet<At> {
    let mut consequences = BTreeSet::new();
    // Per sender session: (MAIL accepted, some RCPT accepted) in the current transaction.
    let mut open: FxHashMap<&str, (bool, bool)> = FxHashMap::default();
    for (at, record) in records {
        let Event::SmtpReply { session, stage, reply, .. } = &record.event else { continue };
        let state = open.entry(session.as_str()).or_insert((false, false));
        let ok = reply.starts_with('2');
        let consequence = reply.starts_with("503") && match stage {
            Stage::Rcpt => !state.0,
            Stage::DataEnd | Stage::Data => !state.0 || !state.1,
            _ => false,
        };
        if consequence {
            consequences.insert(at);
        }
        match stage {
            Stage::Mail => *state = (ok, false),
            Stage::Rcpt => state.1 |= ok,
            _ => {}
        }
    }
    consequences
}

/// The world's note of a backup (`Action::Snapshot`).
pub fn is_snapshot(action: &str) -> bool {
    action.starts_with("backup of store")
}

/// The world's note of a restore from backup (`Action::Rollback`).
pub fn is_rollback(action: &str) -> bool {
    action.starts_with("store restored from its backup")
}

impl<'a> Facts<'a> {
    pub fn build(output: &'a RunOutput) -> Facts<'a> {
        let records = &output.history.records;
        let by_kind = ByKind::of(records);
        let device_damaged = damaged_names(records, &by_kind);
        let mut facts = Facts {
            records,
            wire: Wire::read_among(by_kind.select(records, &[EventKind::WireOpen, EventKind::CrashPoint, EventKind::Crash, EventKind::Restart, EventKind::WireCommand, EventKind::WireReply, EventKind::WireClosed])),
            policies: BTreeMap::new(),
            submitted_by: FxHashMap::default(),
            images: &output.images,
            live: output.live,
            black_box: output.black_box,
            submitted: FxHashMap::default(),
            mx_data_ends: Vec::new(),
            disks: BTreeMap::new(),
            deliveries: Vec::new(),
            fetches: Vec::new(),
            deleted: FxHashMap::default(),
            deleted_confirmed: FxHashMap::default(),
            deleted_messages: FxHashSet::default(),
            expunged: FxHashSet::default(),
            outcomes: FxHashMap::default(),
            sender_saw_ack: BTreeMap::new(),
            queue_recorded: FxHashMap::default(),
            lmtp_ok_by_file: FxHashMap::default(),
            published: FxHashMap::default(),
            store_bytes: FxHashMap::default(),
            dsns: dsns::read_with(records, &by_kind),
            failure_dsns_of: BTreeMap::new(),
            attempts_of: FxHashMap::default(),
            first_lmtp_ok: FxHashMap::default(),
            acks_of: FxHashMap::default(),
            recoveries: Vec::new(),
            delivered_files: FxHashSet::default(),
            deliveries_by_msg: FxHashMap::default(),
            fetched_pairs: FxHashSet::default(),
            corruptions: Vec::new(),
            dropped: Vec::new(),
            device_damage: Vec::new(),
            rollbacks: Vec::new(),
            reported: ReportedLosses::with_damage(records, &by_kind, &device_damaged),
            device_damaged,
            pipelining_consequences: consequences_among(by_kind.select(records, &[EventKind::SmtpReply])),
            by_kind,
        };
        // Per sender session: recipients that got 2xx at RCPT.
        let mut session_rcpts: FxHashMap<&'a str, Vec<&'a str>> = FxHashMap::default();
        for (at, record) in records.iter().enumerate() {
            facts.observe(at, record, &mut session_rcpts);
        }
        facts.index_dsns();
        for (index, delivery) in facts.deliveries.iter().enumerate() {
            facts.deliveries_by_msg.entry(delivery.msg).or_default().push(index);
        }
        facts.fetched_pairs = facts.fetches.iter().map(|fetch| (fetch.mailbox, fetch.msg)).collect();
        facts.rollbacks.retain(|(_, rollback)| *rollback != usize::MAX);
        facts.deleted_messages = facts.messages_deleted();
        facts
    }

    fn index_dsns(&mut self) {
        for dsn in self.dsns.iter().filter(|dsn| dsn.kind == "failure") {
            for rcpt in &dsn.rcpts {
                self.failure_dsns_of.entry((dsn.msg.to_string(), rcpt.clone())).or_default().push(dsn.at);
            }
        }
    }

    fn observe(&mut self, at: At, record: &'a Record, session_rcpts: &mut FxHashMap<&'a str, Vec<&'a str>>) {
        match &record.event {
            Event::Submit(submit) => {
                let history::Submit { msg, from, rcpts, digest, .. } = &**submit;
                self.submitted.insert(msg, (at, from, rcpts, digest));
                self.submitted_by.insert(msg, &record.host);
            }
            Event::SenderPolicy { .. } => {
                if let Some(policy) = SenderPolicy::of(&record.event) {
                    self.policies.insert(&record.host, policy);
                }
            }
            Event::SmtpReply { session, msg, stage, rcpt, reply } => {
                let ok = reply.starts_with('2');
                match (stage, rcpt) {
                    (Stage::Rcpt, Some(rcpt)) if ok => {
                        // A client that names a recipient twice still sees one acknowledgement.
                        let accepted = session_rcpts.entry(session).or_default();
                        if !accepted.contains(&rcpt.as_str()) {
                            accepted.push(rcpt);
                        }
                    }
                    (Stage::DataEnd, _) if ok => {
                        for &rcpt in session_rcpts.get(session.as_str()).into_iter().flatten() {
                            *self.sender_saw_ack.entry((msg, rcpt)).or_default() += 1;
                        }
                    }
                    _ => {}
                }
            }
            Event::SenderOutcome { msg, rcpt, outcome, .. } => {
                self.outcomes.entry((msg, rcpt)).or_default().push((at, *outcome));
            }
            Event::MxDataEnd(end) => {
                let history::MxDataEnd { msg, rcpts, queue_file, reply, .. } = &**end;
                if reply.starts_with('2') {
                    self.acks_of.entry(msg).or_default().push(self.mx_data_ends.len());
                }
                self.mx_data_ends.push((at, msg, rcpts, queue_file.as_deref(), reply));
            }
            Event::LmtpReply { queue_file, rcpt, reply, .. } if reply.starts_with('2') => {
                self.lmtp_ok_by_file.entry(queue_file).or_default().push(at);
                self.first_lmtp_ok.entry((queue_file, rcpt)).or_insert(at);
            }
            Event::SmtpAttempt { msg, rcpts, .. } => {
                self.attempts_of.entry(msg).or_default().push((at, rcpts));
            }
            Event::QueueRecorded { msg, done, .. } => {
                for rcpt in done {
                    self.queue_recorded.entry((msg, rcpt)).or_default().push(at);
                }
            }
            Event::StoreDelivered(stored) => {
                let history::Stored { mailbox, msg, uidvalidity, uid, file, digest, .. } = &**stored;
                self.delivered_files.insert(file);
                self.deliveries.push(Delivery { at, mailbox, msg, uidvalidity: *uidvalidity, uid: *uid, file, digest });
            }
            // The first 2xx for a copy the store published just before a crash (its reply never
            // went out) comes when it recognises the MX's retry after the restart: that 2xx is
            // the copy's delivery. A retry of a copy already delivered adds nothing.
            Event::StoreRetryRecognised(stored) if !self.delivered_files.contains(stored.file.as_str()) => {
                let history::Stored { mailbox, msg, uidvalidity, uid, file, digest, .. } = &**stored;
                self.delivered_files.insert(file);
                self.deliveries.push(Delivery { at, mailbox, msg, uidvalidity: *uidvalidity, uid: *uid, file, digest });
            }
            Event::ClientFetched(fetch) => {
                let history::ClientFetched { mailbox, uidl, msg, digest, size, .. } = &**fetch;
                self.fetches.push(Fetch { at, mailbox, uidl, msg, digest, size: *size });
            }
            Event::ClientDeleted { mailbox, uidls, confirmed } => {
                for uidl in uidls {
                    self.deleted.insert((mailbox, uidl), at);
                    if *confirmed {
                        self.deleted_confirmed.insert((mailbox, uidl), at);
                    }
                }
            }
            Event::StoreRecovered { mailbox, uidvalidity, uidnext, restored, .. } => {
                self.recoveries.push(Recovery { at, mailbox, uidvalidity: *uidvalidity, uidnext: *uidnext, restored: *restored })
            }
            Event::StoreExpunging { mailbox, uidvalidity, uid, .. } => {
                self.expunged.insert((mailbox, *uidvalidity, *uid));
            }
            Event::StoreCorruption { mailbox, uid, file } => self.corruptions.push((at, mailbox, *uid, file)),
            Event::DiskDropped { op, path } => self.dropped.push((at, &record.host, op, path)),
            Event::DiskFault { fault, path, .. } if DAMAGING_FAULTS.contains(&fault.as_str()) => {
                self.device_damage.push((at, &record.host, fault, path));
            }
            Event::Fault { action } if is_snapshot(action) => self.rollbacks.push((Some(at), usize::MAX)),
            Event::Fault { action } if is_rollback(action) => match self.rollbacks.last_mut() {
                Some(last) if last.1 == usize::MAX => last.1 = at,
                _ => self.rollbacks.push((None, at)),
            },
            _ => self.observe_disk(at, record),
        }
    }

    /// Follows the store's bytes by digest: identities from what the disk saw, not file names.
    fn observe_store_bytes(&mut self, event: &'a Event) {
        let (path, digest): (&'a str, &'a str) = match event {
            Event::DiskWrite { path, digest, .. } => (path, digest),
            Event::DiskRename { from, to } => match self.store_bytes.get(from.as_str()) {
                Some(&digest) => (to, digest),
                None => return,
            },
            _ => return,
        };
        self.published.entry((history::parent(path), digest)).or_default().insert(path);
        self.store_bytes.insert(path, digest);
    }

    fn observe_disk(&mut self, at: At, record: &'a Record) {
        if !matches!(record.event, Event::DiskWrite { .. } | Event::DiskSync { .. } | Event::DiskRemove { .. } | Event::DiskRename { .. } | Event::DiskDirSync { .. }) {
            return;
        }
        if &*record.host == "store" {
            self.observe_store_bytes(&record.event);
            if let Event::DiskRename { from, to } = &record.event {
                if self.delivered_files.contains(from.as_str()) {
                    self.delivered_files.insert(to);
                }
            }
        }
        let disk = self.disks.entry(&record.host).or_default();
        let mut op = |path: &'a str, kind: DiskOp| disk.by_path.entry(path).or_default().push((at, kind));
        match &record.event {
            Event::DiskWrite { path, .. } => op(path, DiskOp::Write),
            Event::DiskSync { path } => op(path, DiskOp::Sync),
            Event::DiskRemove { path } => op(path, DiskOp::Remove),
            Event::DiskRename { from, to } => {
                op(from, DiskOp::RenamedFrom);
                op(to, DiskOp::RenamedTo);
                disk.renamed_from.entry(to).or_default().push((at, from));
                disk.renamed_to.entry(from).or_default().push((at, to));
            }
            Event::DiskDirSync { dir } => disk.dir_syncs.entry(dir).or_default().push(at),
            _ => {}
        }
    }

    /// Every submitted message, in message order (a report must not depend on a hash map's).
    pub fn submitted_in_order(&self) -> Vec<(&'a str, &(At, &'a str, &'a [String], &'a str))> {
        let mut all: Vec<_> = self.submitted.iter().map(|(msg, submit)| (*msg, submit)).collect();
        all.sort_unstable_by_key(|(msg, _)| *msg);
        all
    }

    /// The records of these kinds, in history order: what a checker reads instead of every
    /// record.
    pub fn records_of(&self, kinds: &[EventKind]) -> impl Iterator<Item = (At, &'a Record)> + '_ {
        self.by_kind.select(self.records, kinds)
    }

    /// Messages the MX acknowledged (2xx at end of data): (at, msg, rcpts, queue file, reply).
    pub fn mx_acks(&self) -> impl Iterator<Item = &DataEnd<'a>> {
        self.mx_data_ends.iter().filter(|(_, _, _, _, reply)| reply.starts_with('2'))
    }

    /// The durable file image of a host (empty when the host has no disk).
    pub fn image(&self, host: &str) -> Option<&BTreeMap<String, std::rc::Rc<Vec<u8>>>> {
        self.images.get(host)
    }

    /// Whether the mailbox's client deleted (its copy of) this message.
    pub fn deleted_message(&self, mailbox: &str, msg: &str) -> bool {
        self.deleted_messages.contains(&(mailbox, msg))
    }

    /// (mailbox, msg) of every deletion: a deleted UIDL names the message last fetched under it.
    fn messages_deleted(&self) -> FxHashSet<Pair<'a>> {
        let mut fetched_under: FxHashMap<Pair<'a>, Vec<(At, &'a str)>> = FxHashMap::default();
        for fetch in &self.fetches {
            fetched_under.entry((fetch.mailbox, fetch.uidl)).or_default().push((fetch.at, fetch.msg));
        }
        let mut deleted = FxHashSet::default();
        for (&(mailbox, uidl), deleted_at) in &self.deleted {
            let fetches = fetched_under.get(&(mailbox, uidl));
            if let Some(&(_, msg)) = fetches.and_then(|list| list.iter().rev().find(|(at, _)| at < deleted_at)) {
                deleted.insert((mailbox, msg));
            }
        }
        deleted
    }

    /// Whether a store delivery's file survives in the final durable image: under the name it
    /// was delivered as, or one the disk renamed it to since (read mail moves into cur/).
    /// A live history comes without images (the data directory is `verify-store`'s to judge):
    /// there the file survives unless the disk recorded the removal of its last name, or its
    /// rename away from it (a kill -9 keeps what the process wrote; a power cut is not judged).
    pub fn survives(&self, delivery: &Delivery) -> bool {
        if self.live {
            return self.disks.get("store").is_some_and(|disk| disk.kept(delivery.file, delivery.at));
        }
        let Some(image) = self.image("store") else { return false };
        match self.disks.get("store") {
            Some(disk) => disk.names_from(delivery.file, delivery.at).iter().any(|&name| image.contains_key(name)),
            None => image.contains_key(delivery.file),
        }
    }

    /// The retry policy of the sender that submitted this message.
    pub fn policy_of_message(&self, msg: &str) -> Option<&SenderPolicy> {
        self.submitted_by.get(msg).and_then(|host| self.policies.get(host))
    }

    /// Failure DSNs sent about (msg, rcpt).
    pub fn failure_dsns(&self, msg: &str, rcpt: &str) -> &[At] {
        if self.failure_dsns_of.is_empty() {
            return &[];
        }
        self.failure_dsns_of.get(&(msg.to_string(), rcpt.to_string())).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Whether the sender attempted (msg, rcpt) in [from, to).
    pub fn attempted_between(&self, msg: &str, rcpt: &str, from: At, to: At) -> Option<At> {
        let attempts = self.attempts_of.get(msg)?;
        attempts.iter().find(|(at, rcpts)| (from..to).contains(at) && rcpts.iter().any(|r| r == rcpt)).map(|(at, _)| *at)
    }

    /// The MX's 2xx acknowledgements of a message.
    pub fn acks_of_message(&self, msg: &str) -> impl Iterator<Item = &DataEnd<'a>> {
        self.acks_of.get(msg).into_iter().flatten().filter_map(|&index| self.mx_data_ends.get(index))
    }

    /// Mailbox of a local recipient address.
    pub fn mailbox_of(rcpt: &str) -> String {
        rcpt.rsplit_once('@').map(|(local, _)| local).unwrap_or(rcpt).to_ascii_lowercase()
    }

    /// The digests of everything the MX accepted, for byte-identity checks.
    pub fn accepted_digests(&self) -> BTreeSet<&'a str> {
        let accepted: BTreeSet<&str> = self.mx_acks().map(|(_, msg, ..)| *msg).collect();
        self.submitted.iter().filter(|(msg, _)| accepted.contains(*msg)).map(|(_, (_, _, _, digest))| *digest).collect()
    }

    pub fn digest_of_file(bytes: &[u8]) -> String {
        message::content_digest(bytes)
    }

    /// Whether a restore from backup erased this delivery: it came after the backup the store
    /// was restored to, and before the restore.
    pub fn erased_by_rollback(&self, delivery: &Delivery) -> bool {
        self.rollbacks.iter().any(|(snapshot, rollback)| snapshot.is_none_or(|s| s < delivery.at) && delivery.at < *rollback)
    }

    /// Whether a restore from backup (a `StoreRecovered{restored}` of this mailbox) lies between
    /// two records.
    pub fn restored_between(&self, mailbox: &str, from: At, to: At) -> bool {
        self.recoveries.iter().any(|r| r.restored && r.mailbox == mailbox && from < r.at && r.at < to)
    }

    /// Whether the owner of `mailbox` downloaded `msg` at least once.
    pub fn fetched(&self, mailbox: &str, msg: &str) -> bool {
        self.fetched_pairs.contains(&(mailbox, msg))
    }

    /// The copies the store delivered of `msg` into `mailbox`, in history order.
    pub fn deliveries_of<'s, 'm>(&'s self, mailbox: &'m str, msg: &str) -> impl Iterator<Item = &'s Delivery<'a>> + use<'s, 'm, 'a> {
        let indices: &[usize] = self.deliveries_by_msg.get(msg).map(Vec::as_slice).unwrap_or(&[]);
        indices.iter().map(|&index| &self.deliveries[index]).filter(move |delivery| delivery.mailbox == mailbox)
    }

    /// How many distinct files of this message were published into the mailbox: at least the
    /// acknowledged deliveries, plus copies of the same bytes published into the same directory
    /// just before a crash.
    pub fn published_copies(&self, mailbox: &str, msg: &str) -> usize {
        let mut files: BTreeSet<&str> = BTreeSet::new();
        for delivery in self.deliveries_of(mailbox, msg) {
            files.insert(delivery.file);
            let Some(&digest) = self.store_bytes.get(delivery.file) else { continue };
            if let Some(same) = self.published.get(&(history::parent(delivery.file), digest)) {
                files.extend(same.iter().copied());
            }
        }
        files.len()
    }
}

#[cfg(test)]
mod pipelining_tests {
    use super::*;

    fn reply(stage: Stage, rcpt: Option<&str>, text: &str) -> Record {
        let event = Event::SmtpReply { session: "s1".into(), msg: "m1".into(), stage, rcpt: rcpt.map(Into::into), reply: text.into() };
        Record { t_ms: 0, host: "provider-a".into(), event }
    }

    #[test]
    fn a_503_after_a_refused_mail_is_a_consequence_and_a_503_in_an_open_transaction_is_not() {
        let records = vec![
            reply(Stage::Mail, None, "452 4.3.1 insufficient system storage, try again later"),
            reply(Stage::Rcpt, Some("anna@x.test"), "503 5.5.1 need MAIL before RCPT"),
            reply(Stage::DataEnd, None, "503 5.5.1 need MAIL and a valid RCPT before BDAT"),
            reply(Stage::Mail, None, "250 2.1.0 sender ok"),
            reply(Stage::Rcpt, Some("anna@x.test"), "503 5.5.1 bad sequence"),
            reply(Stage::Rcpt, Some("bruno@x.test"), "550 5.1.1 no such user"),
            reply(Stage::DataEnd, None, "503 5.5.1 need a valid RCPT"),
        ];
        assert_eq!(pipelining_consequences(&records), BTreeSet::from([1, 2, 6]));
    }
}
