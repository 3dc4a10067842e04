//! The recorded history of a run: every observable event with its simulated time and host.
//!
//! The stack and the disk layer append to it through a [`Journal`]; checkers read it (and, where
//! they must, the final durable disk images), never the stack's memory. The digest of its JSON
//! lines identifies a run: the same seed must give the same digest on any machine.
//!
//! This crate is the language every layer speaks, and so it depends on no other crate of
//! ours: it must never know the stack, the devices, the simulator or the checkers. A
//! [`RunOutput`] — the history plus the final durable disk images — is all a checker is given.

use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::rc::Rc;
use std::sync::Arc;

/// Upper bound on the events of a run with little mail (see `events_allowed`). Reaching the bound
/// means a runaway loop (a retry storm, say),
/// so the run stops recording and the world reports it instead of exhausting memory.
pub const MAX_EVENTS: usize = 2_000_000;

/// Events a run may record per planned message beyond MAX_EVENTS: a clean run records fewer
/// than 70 per message (the 20,000-message surge: 66; the 4-day outage at 10,002: 63), so a
/// run past this is looping, whatever its size.
pub const EVENTS_PER_MESSAGE: usize = 300;

/// The bound on a run's events for this much planned mail.
pub fn events_allowed(planned_messages: usize) -> usize {
    MAX_EVENTS.max(planned_messages.saturating_mul(EVENTS_PER_MESSAGE))
}

/// The string of an event's fields: up to 23 bytes inline (a connection's name, a digest, most
/// replies), longer ones shared on clone (a session's or a message's name, recorded with every
/// reply of its transaction). A run keeps a million events, two or three strings each: as
/// `String`s they were one allocation apiece and more than half of the history's memory.
pub type Text = smol_str::SmolStr;

/// One event with when and where it happened.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub t_ms: u64,
    /// Shared with every other record of the host (a run has a dozen hosts and a million
    /// records: one string each was 56 bytes a record and an allocation).
    pub host: Arc<str>,
    #[serde(flatten)]
    pub event: Event,
}

/// Where in an SMTP or LMTP transaction a reply (or a failure) belongs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Connect,
    Greeting,
    Ehlo,
    Mail,
    Rcpt,
    Data,
    DataEnd,
    Quit,
    Other,
}

/// How a remote sender finished with one recipient of one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The MX answered 2xx at end of data for this recipient.
    Delivered,
    /// The MX answered 5xx; a failure DSN was sent to the envelope sender (unless it was <>).
    Bounced,
    /// The queue lifetime ran out, or the policy does not retry; a failure DSN was sent.
    Expired,
}

/// An SMTP parameter the workload sends wrong on purpose (invalid input a real client may send):
/// on MAIL (`rcpt` None) or on the RCPT of `rcpt`. RFC 5321 §4.1.1.11: the server refuses it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvalidParam {
    pub stage: Stage,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rcpt: Option<String>,
    /// The parameter as sent, `KEYWORD=value`.
    pub param: String,
}

/// Everything the checkers can see. Field names are the history's vocabulary: keep them stable,
/// the insta snapshot and every stored history depend on them.
///
/// `EventKind` names the variants without their fields (strum's `EnumDiscriminants`): what the
/// checkers index records by, so that each reads only the kinds it judges.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, strum::EnumDiscriminants)]
#[strum_discriminants(name(EventKind), derive(Hash, PartialOrd, Ord, strum::EnumCount))]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    // ----- world -----
    Phase { name: Text },
    /// The simulated clock advances in steps of `tick_ms`: every time in the history is a
    /// multiple of it, so a wait is seen to within one tick. Recorded once, before anything else.
    /// `epoch_unix_s`: the Unix time at which the clock reads 0, the base of every date a host
    /// writes into mail (trace fields, DSNs), so a checker can tell what date "now" was.
    Clock { tick_ms: u64, epoch_unix_s: u64 },
    Fault { action: Text },
    /// The MX's operator changes what it answers: normal, 4xx-tempfail, 5xx-bounce, closed-port.
    Operator { mode: Text },
    /// The store's storage is down (`down`) or back; what A22 judges the MX's answers against.
    Outage { down: bool },
    /// A staged restore: the operator takes a cohort of mailboxes offline (`online: false`), or
    /// brings it back (`online: true`), intact or from a backup (`from_backup`). What A25 judges
    /// the store's answers and the mailboxes against.
    Cohort { cohort: u32, online: bool, from_backup: bool, mailboxes: Vec<String> },
    Crash,
    Restart,
    /// A stack fail point fired and the world will crash the host now.
    CrashPoint { point: Text },

    // ----- disk layer (recorded by the disk, not by the stack) -----
    /// `digest` identifies the bytes written (`bytes_digest`): how checkers tell copies of one
    /// content apart from other files without reading the stack's file names.
    DiskWrite { path: Text, len: u64, digest: Text },
    DiskSync { path: Text },
    DiskDirSync { dir: Text },
    DiskRename { from: Text, to: Text },
    DiskRemove { path: Text },
    DiskError { op: Text, path: Text, error: Text },
    /// The device injected a fault into this operation (or did something by itself: a failover,
    /// a rollback, the hidden-limit stall).
    DiskFault { fault: Text, op: Text, path: Text },
    /// A crash or failover lost an operation a sync had acknowledged as durable: the device broke
    /// its promise (a lying fsync, a lost cache write), not the stack.
    DiskDropped { op: Text, path: Text },

    // ----- the wire (recorded by the network layer where the server's socket is, not by the stack) -----
    /// A connection to a server was accepted; `protocol` is what its port speaks (`smtp`,
    /// `lmtp`). `conn` names it for the events below and for the stack's own records of what
    /// it did on it.
    WireOpen { conn: Text, protocol: Text, peer: Text },
    /// A command line the server read (SMTP or LMTP; message data is not recorded: the end of
    /// a DATA block shows as the line `.`, a BDAT chunk as its command line).
    WireCommand { conn: Text, line: Text },
    /// A complete reply the server wrote (the last line of a multi-line reply).
    WireReply { conn: Text, reply: Text },
    /// The server read the end of the stream (`eof`: the client closed), or a read or write
    /// failed (`error: …`).
    WireClosed { conn: Text, how: Text },

    // ----- remote senders -----
    /// A provider's retry policy as it starts (durations already scaled by `time_scale`).
    SenderPolicy { policy: Text, time_scale: f64, min_interval_s: f64, lifetime_s: f64, retries: bool, delay_notice_s: Option<f64> },
    /// A sender starts an SMTP attempt for these recipients of a message.
    SmtpAttempt { session: Text, msg: Text, attempt: u32, rcpts: Vec<String> },
    /// A message enters a remote sender's queue: the workload hands it over. `longest_line`:
    /// octets of text in its longest line (before dot-stuffing, without the line end), what
    /// tells a conforming message (at most 998, RFC 5321 §4.5.3.1.6) from one a server may
    /// refuse. `invalid_param`: a parameter the workload deliberately gets wrong, which the
    /// MX must refuse.
    Submit(Box<Submit>),
    /// A reply as the SMTP client saw it. `rcpt` is set at the RCPT stage.
    SmtpReply { session: Text, msg: Text, stage: Stage, rcpt: Option<Text>, reply: Text },
    /// The SMTP client saw no reply: refused, reset or timed out.
    SmtpFailure { session: Text, msg: Text, stage: Stage, error: Text },
    SenderOutcome { msg: Text, rcpt: Text, outcome: Outcome, reply: Text },
    /// A provider's own receiving MX took a message for its users (what the mail stack sent it:
    /// the DSNs the MX returns), recorded as it crossed that peer's wire, before its 250.
    /// `mail_from` is "" for `<>`; `content` is the message as received (dot-stuffing undone).
    MailReceived { conn: Text, mail_from: Text, rcpts: Vec<String>, content: Text },
    /// A failure DSN handed to the original sender's mailbox at the provider.
    /// `kind` is "failure" or "delay"; `content` is the DSN as sent, for shape checks.
    DsnSent(Box<DsnSent>),

    // ----- MX (SMTP server and its queue) -----
    /// Server side: the reply the MX is about to send at end of data on connection `conn`, and
    /// the queue file it names. Its claim only: A1 times the reply by the wire.
    MxDataEnd(Box<MxDataEnd>),
    /// Server side: any other 4xx/5xx reply the MX sends.
    MxRefusal { session: Text, stage: Stage, reply: Text },
    /// The queue runner's retry schedule towards the store, declared as it starts: after its
    /// n-th failed delivery since this start a queue file waits at least
    /// min(base_ms × factor^(n-1), max_ms) before the next; due files are taken at scans
    /// `scan_interval_ms` apart (so a wait may be longer, never shorter).
    QueueRetryPolicy { base_ms: u64, max_ms: u64, factor: u32, scan_interval_ms: u64 },
    /// The queue runner starts delivering a queue file to the store (connecting first, or on a
    /// connection it holds open). `attempt` counts the file's attempts since this MX started.
    LmtpAttempt { queue_file: Text, msg: Text, attempt: u32 },
    /// LMTP reply per recipient as the queue runner saw it.
    LmtpReply { queue_file: Text, msg: Text, rcpt: Text, reply: Text },
    LmtpFailure { queue_file: Text, msg: Text, stage: Stage, error: Text },
    /// The queue has durably recorded that these recipients are done (file rewritten or removed).
    QueueRecorded { queue_file: Text, msg: Text, done: Vec<String>, remaining: Vec<String> },
    QueueRecovered { files: u64 },
    /// The MX found a queue file damaged (torn, or not matching its checksums) and moved it out
    /// of the queue instead of relaying it: a reported loss when the device damaged it. `dsn`:
    /// the Message-ID of the failure DSN the MX returned to the envelope sender (when the
    /// envelope was intact and not from `<>`), which the sender's provider took with 250.
    QueueDamaged {
        queue_file: Text,
        moved_to: Text,
        reason: Text,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dsn: Option<Text>,
    },

    /// A try to return a damaged queue file's message to its sender failed (`last`: the MX
    /// gives up returning it and sets the file aside without a DSN).
    ReturnFailed { queue_file: Text, error: Text, last: bool },

    // ----- store (LMTP server, maildir, POP3 server) -----
    /// The store is about to answer 2xx for this recipient on connection `conn`: the message
    /// sits at `file`.
    StoreDelivered(Box<Stored>),
    StoreRefusal { mailbox: Text, msg: Text, reply: Text },
    /// The store is about to answer 2xx for a retry of a delivery it had made already (the same
    /// bytes to the same mailbox): no second copy; the message sits at `file` under `uid`.
    /// `digest` as in `StoreDelivered`: the retry's bytes are the copy's.
    StoreRetryRecognised(Box<Stored>),
    /// `restored`: the operator said the storage came back from a backup.
    StoreRecovered { mailbox: Text, uidvalidity: u64, uidnext: u64, messages: u64, debris_removed: u64, restored: bool },
    /// The store is about to remove a message its owner deleted (POP3 UPDATE state).
    StoreExpunging { mailbox: Text, uidvalidity: u64, uid: u64, file: Text },
    /// The store marked a message read (POP3 RETR, as Dovecot does): it moved from `from_file`
    /// in new/ to `to_file` in cur/ (with the seen flag), and both directories were fsynced.
    /// Same UID, same bytes; the disk's own rename record is what checkers follow.
    StoreMarkedRead { mailbox: Text, uidvalidity: u64, uid: u64, from_file: Text, to_file: Text },
    /// An IMAP client changed a message's flags (STORE, or BODY[] setting \Seen): it moved from
    /// `from_file` to `to_file` in cur/ with the maildir flags `flags` (ASCII order), and the
    /// directories were fsynced. Same UID, same bytes.
    StoreFlagsChanged(Box<StoreFlagsChanged>),
    /// A read found a message's bytes differ from the checksum in its name: not served (A23).
    StoreCorruption { mailbox: Text, uid: u64, file: Text },

    // ----- POP3 clients -----
    /// The listing changed since this client's previous poll: (uidl, size) pairs in listing order.
    ClientListing { mailbox: Text, listed: Vec<(String, u64)> },
    /// `trace_for`: the addresses the `for` clauses of the downloaded copy's `Received:` fields
    /// name, as the client parsed them: what the mailbox's owner can read about who else got it.
    ClientFetched(Box<ClientFetched>),
    /// The client sent QUIT after DELE of these UIDLs; `confirmed` when the server answered +OK.
    ClientDeleted { mailbox: Text, uidls: Vec<String>, confirmed: bool },
    ClientFailure { mailbox: Text, error: Text },

    // ----- IMAP clients (their downloads, listings and deletions are the `Client*` events
    // above, a message named `<uidvalidity>.<uid>` where a POP3 client names its UIDL) -----
    /// An IMAP client selected its mailbox and read what the server said: UIDVALIDITY, UIDNEXT
    /// and EXISTS. Recorded when any of them changed since the client's previous SELECT.
    ClientSelected { mailbox: Text, uidvalidity: u64, uidnext: u64, exists: u64 },
    /// What an IMAP client shows its user after a sync: per UID (under `uidvalidity`, the
    /// UIDVALIDITY the server last gave it), the content digest of the local copy it shows for
    /// that UID, in UID order. Recorded when it changed. What A24 judges.
    ClientView { mailbox: Text, uidvalidity: u64, shown: Vec<(u64, String)> },
}

// The largest events, behind a Box: an `Event` is as large as its largest variant, and a run
// keeps a million of them, most of them small (a wire line, a disk operation). Boxed, these few
// (at most one or two per message) cost a pointer inline and an `Event` is 104 bytes, not 192.
// The JSON is the same: an internally tagged newtype variant writes its struct's fields beside
// the tag, as a struct variant does.

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Submit {
    pub msg: Text,
    pub from: Text,
    pub rcpts: Vec<String>,
    pub digest: Text,
    pub size: u64,
    pub longest_line: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid_param: Option<InvalidParam>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DsnSent {
    pub msg: Text,
    pub dsn: Text,
    pub kind: Text,
    pub mail_from: Text,
    pub to: Text,
    pub rcpts: Vec<String>,
    pub status: Text,
    pub content: Text,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MxDataEnd {
    pub session: Text,
    pub conn: Text,
    pub msg: Text,
    pub rcpts: Vec<String>,
    pub queue_file: Option<Text>,
    pub reply: Text,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stored {
    pub conn: Text,
    pub mailbox: Text,
    pub msg: Text,
    pub uidvalidity: u64,
    pub uid: u64,
    pub file: Text,
    pub digest: Text,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoreFlagsChanged {
    pub mailbox: Text,
    pub uidvalidity: u64,
    pub uid: u64,
    pub from_file: Text,
    pub to_file: Text,
    pub flags: Text,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClientFetched {
    pub mailbox: Text,
    pub uidl: Text,
    pub msg: Text,
    pub digest: Text,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trace_for: Vec<String>,
}

// A run keeps up to millions of records: an event that outgrows this (a new variant with many
// strings inline) belongs behind a Box like those above.
const _: () = assert!(std::mem::size_of::<Event>() <= 104);

/// How many kinds of event there are (`EventKind` counts 0 to this, less one).
pub const EVENT_KINDS: usize = <EventKind as strum::EnumCount>::COUNT;

impl Record {
    /// One JSON line (the history's file format, and what the digest hashes).
    pub fn to_json(&self) -> String {
        // Serialising these plain structs cannot fail: no maps with non-string keys, no floats.
        serde_json::to_string(self).unwrap_or_else(|error| format!("{{\"unserialisable\":\"{error}\"}}"))
    }
}

/// The shared event log of one run. Single-threaded: the whole simulation runs on one thread.
#[derive(Default)]
pub struct History {
    pub records: Vec<Record>,
    /// The most events this run may record (None: MAX_EVENTS): the world scales it with the
    /// planned mail (`events_allowed`).
    pub max_events: Option<usize>,
    /// Set when the bound was reached; later events are dropped and the run is judged broken.
    pub overflowed: bool,
    /// Called with each record as it is appended, before the recording host goes on: how the
    /// ledger of a real store directory stays ahead of the store.
    pub observer: Option<Rc<dyn Fn(&Record)>>,
    /// Live mode: records go to the observer only (a file of JSON lines) and are counted, not
    /// kept, so a server that runs for weeks, or a hostile client's millions of refused commands,
    /// cannot grow memory. Nothing is judged in process then; `mailchaos check` reads the file.
    pub stream_only: bool,
    /// Records handed to the observer and not kept (`stream_only`).
    pub streamed: u64,
}

impl History {
    /// The most events this run may record.
    pub fn limit(&self) -> usize {
        self.max_events.unwrap_or(MAX_EVENTS)
    }

    /// blake3 over the JSON lines, as hex: the identity of a run.
    pub fn digest(&self) -> String {
        // The same bytes as `to_json` and a newline per record, streamed into the hasher through
        // a buffer instead of a string per record.
        let mut hasher = blake3::Hasher::new();
        {
            let mut buffered = std::io::BufWriter::with_capacity(64 * 1024, &mut hasher);
            for record in &self.records {
                if serde_json::to_writer(&mut buffered, record).is_err() {
                    let _ = buffered.write_all(record.to_json().as_bytes());
                }
                let _ = buffered.write_all(b"\n");
            }
            let _ = buffered.flush();
        }
        hasher.finalize().to_hex()[..16].to_string()
    }

    /// A person-readable rendering, one event per line.
    pub fn render(&self) -> String {
        let mut text = String::new();
        for record in &self.records {
            let _ = writeln!(text, "{}", render_record(record));
        }
        text
    }
}

/// `   12.345s mx          mx_data_end {...}`.
pub fn render_record(record: &Record) -> String {
    let json = serde_json::to_value(&record.event).unwrap_or_default();
    let kind = json.get("event").and_then(|v| v.as_str()).unwrap_or("?").to_string();
    let mut fields = String::new();
    if let Some(object) = json.as_object() {
        for (key, value) in object.iter().filter(|(key, _)| key.as_str() != "event") {
            let _ = write!(fields, " {key}={value}");
        }
    }
    format!("{:>10.3}s {:<12} {kind}{fields}", record.t_ms as f64 / 1000.0, record.host)
}

/// Milliseconds of simulated time since the start of the run.
pub type Clock = Rc<dyn Fn() -> u64>;

/// A host's handle on the shared history: it stamps each event with the time and the host name.
#[derive(Clone)]
pub struct Journal {
    history: Rc<RefCell<History>>,
    host: Arc<str>,
    clock: Clock,
}

impl Journal {
    pub fn new(history: Rc<RefCell<History>>, host: &str, clock: Clock) -> Journal {
        Journal { history, host: host.into(), clock }
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn now_ms(&self) -> u64 {
        (self.clock)()
    }

    pub fn clock(&self) -> Clock {
        self.clock.clone()
    }

    pub fn record(&self, event: Event) {
        let t_ms = self.now_ms();
        let mut history = self.history.borrow_mut();
        if history.stream_only {
            history.streamed += 1;
            let observer = history.observer.clone();
            drop(history);
            if let Some(observer) = observer {
                observer(&Record { t_ms, host: self.host.clone(), event });
            }
            return;
        }
        if history.records.len() >= history.limit() {
            history.overflowed = true;
            return;
        }
        history.records.push(Record { t_ms, host: self.host.clone(), event });
        if let Some(observer) = history.observer.clone() {
            let record = history.records.last().cloned();
            drop(history);
            if let Some(record) = record {
                observer(&record);
            }
        }
    }
}

/// What a run leaves behind for its judges: the history and the final durable disk images,
/// plain data with no handle on the stack or the world that made them.
pub struct RunOutput {
    pub history: History,
    /// Per host with a disk: the files a crash at the end would leave (the durable image).
    /// A file's bytes are shared with the simulated disk that holds them, not copied.
    pub images: BTreeMap<String, BTreeMap<String, Rc<Vec<u8>>>>,
    /// Each configured fault, described, with how often it touched the system.
    pub faults: Vec<(String, u64)>,
    /// When every queue had drained (None: the horizon came first).
    pub drained_at_ms: Option<u64>,
    /// What the run was still waiting for when it ended, if it had not drained: what L1 names.
    pub waiting_for: Option<String>,
    pub ended_at_ms: u64,
    /// Why the simulation stopped before its end, if it did.
    pub aborted: Option<String>,
    /// The run's real storage (a store directory, the ledger) failed: a fault of the machine,
    /// not a verdict on the stack.
    pub environment_failure: Option<String>,
    /// A live history (`serve --history`, judged by `mailchaos check`): no images (the data
    /// directory is `verify-store`'s to judge), a server stopped whenever its operator pleased,
    /// real clients that come and go; the checkers that apply judge it with that in mind.
    pub live: bool,
    /// Judged from the outside (`mailchaos drive`): only what crossed the driver's side of the
    /// wire (its senders' and clients' records, the DSNs that came back) is in the history.
    pub black_box: bool,
}

impl RunOutput {
    /// A recorded history judged as it stands: a live run (`serve --history`) or, with
    /// `black_box`, a driven one. No images, no drain: it ends where its last record stands.
    pub fn as_recorded(history: History, black_box: bool) -> RunOutput {
        let ended_at_ms = history.records.iter().map(|record| record.t_ms).max().unwrap_or(0);
        RunOutput {
            history,
            images: BTreeMap::new(),
            faults: Vec::new(),
            drained_at_ms: Some(ended_at_ms),
            waiting_for: None,
            ended_at_ms,
            aborted: None,
            environment_failure: None,
            live: true,
            black_box,
        }
    }
}

/// A short digest of bytes a disk wrote (blake3, 16 hex digits).
pub fn bytes_digest(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex()[..16].to_string()
}

/// The directory part of a path ("" for a bare name). Paths in the history are `/`-separated
/// and relative to a host's disk.
pub fn parent(path: &str) -> &str {
    path.rsplit_once('/').map(|(dir, _)| dir).unwrap_or("")
}

#[cfg(test)]
mod bound_tests {
    use super::*;

    #[test]
    fn a_run_past_its_event_bound_stops_recording_and_says_so() {
        let history = Rc::new(RefCell::new(History { max_events: Some(3), ..History::default() }));
        let journal = Journal::new(history.clone(), "mx", Rc::new(|| 0));
        for _ in 0..5 {
            journal.record(Event::Phase { name: "chaos".into() });
        }
        assert_eq!(history.borrow().records.len(), 3);
        assert!(history.borrow().overflowed);
    }

    #[test]
    fn the_bound_grows_with_the_planned_mail_and_never_falls_below_the_floor() {
        assert_eq!(events_allowed(0), MAX_EVENTS);
        assert_eq!(events_allowed(100_000), 100_000 * EVENTS_PER_MESSAGE);
        assert_eq!(History::default().limit(), MAX_EVENTS);
    }
}
