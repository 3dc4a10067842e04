//! The MX's durable queue: one file per accepted message, and the runner that hands queued mail
//! to the store over LMTP (RFC 2033).
//!
//! Files are written in `incoming/`, fsynced, renamed into `queue/` and the directory fsynced
//! before the MX answers 250: only then does the runner see them. A recipient leaves the queue
//! only after the store's 2xx for it and a durable rewrite (or removal) of the file; on 4xx it
//! stays and is retried with backoff; after a restart the runner rescans `queue/`.

use super::conn::Conn;
use super::wire::{self, Reply, ReplyParser};
use super::returns;
use super::{Defect, Env, StackError, LMTP_PORT};
use crate::crash_point;
use disk::DiskError;
use history::{Event, Stage};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Duration;

pub const INCOMING_DIR: &str = "incoming";
pub const QUEUE_DIR: &str = "queue";
pub const CORRUPT_DIR: &str = "corrupt";
const MAGIC: &str = "MAILCHAOS-QUEUE/3";
/// Queue files the runner looks at per scan: bounds the work of one pass.
const MAX_FILES_PER_SCAN: usize = 1000;
const LMTP_TIMEOUT: Duration = Duration::from_secs(300);
/// The wait for each recipient's reply after the final dot: RFC 5321 §4.5.3.2.6's 10 minutes
/// (Postfix's `lmtp_data_done_timeout`). Giving up sooner makes the MX deliver again while the
/// store may still be writing the first copy. The store answers within its own mailbox-wait
/// budget (a minute) unless a disk operation it started hangs; a stall longer than this still
/// ends in a retry, which the store recognises (store.rs, `Recent`).
const LMTP_DATA_DONE_TIMEOUT: Duration = Duration::from_secs(600);
/// Each failed delivery of a queue file multiplies its next wait by this, from `retry_base` up to
/// `retry_max` (declared in the history as `QueueRetryPolicy`, and judged against it by A6).
const RETRY_FACTOR: u32 = 2;
/// A worker's connection idle longer than this is reopened (the store's idle timeout is longer).
const IDLE_RECONNECT_MS: u64 = 120_000;

/// A queued message: envelope and bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedMessage {
    pub msg: String,
    pub from: String,
    /// When the MX accepted it (journal clock): the Arrival-Date of a DSN that returns it.
    pub arrived_ms: u64,
    pub rcpts: Vec<String>,
    pub body: Vec<u8>,
}

/// Why a queue file cannot be relayed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Damage {
    /// Not a whole queue file: torn, truncated or foreign.
    Unreadable,
    /// The envelope does not match the checksum written with it: nobody can be told.
    Envelope,
    /// The envelope is intact, the body does not match its checksum: the sender can be told.
    Body,
}

impl Damage {
    pub fn describe(self) -> &'static str {
        match self {
            Damage::Unreadable => "not a whole queue file",
            Damage::Envelope => "envelope does not match its checksum",
            Damage::Body => "body does not match its checksum",
        }
    }
}

/// A queue file that cannot be relayed, and its envelope when that is intact (with the damaged
/// body), so the message can be returned to its sender.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damaged {
    pub damage: Damage,
    pub envelope: Option<QueuedMessage>,
}

impl From<Damage> for Damaged {
    fn from(damage: Damage) -> Damaged {
        Damaged { damage, envelope: None }
    }
}

/// blake3 of the bytes, first 16 hex digits.
fn checksum(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex()[..16].to_string()
}

impl QueuedMessage {
    /// `MAGIC`, `sum <envelope> <body>`, the envelope lines, an empty line, the body. The
    /// checksums let the runner refuse a file the device damaged instead of relaying it.
    pub fn encode(&self) -> Vec<u8> {
        let mut envelope = format!("msg {}\r\nfrom {}\r\narrived {}\r\n", self.msg, self.from, self.arrived_ms);
        for rcpt in &self.rcpts {
            envelope.push_str(&format!("rcpt {rcpt}\r\n"));
        }
        let mut bytes = format!("{MAGIC}\r\nsum {} {}\r\n{envelope}\r\n", checksum(envelope.as_bytes()), checksum(&self.body)).into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }

    /// The message of a whole, intact queue file. With `verify` false the checksums are
    /// read but not compared (the planted `no-queue-checksum` bug).
    pub fn decode(bytes: &[u8], verify: bool) -> Result<QueuedMessage, Damaged> {
        let split = bytes.windows(4).position(|window| window == b"\r\n\r\n").ok_or(Damage::Unreadable)?;
        let head = std::str::from_utf8(&bytes[..split + 2]).map_err(|_| Damage::Unreadable)?;
        let body = &bytes[split + 4..];
        let (magic, rest) = head.split_once("\r\n").ok_or(Damage::Unreadable)?;
        let (sums, envelope) = rest.split_once("\r\n").ok_or(Damage::Unreadable)?;
        if magic != MAGIC {
            return Err(Damage::Unreadable.into());
        }
        let (envelope_sum, body_sum) = sums.strip_prefix("sum ").and_then(|sums| sums.split_once(' ')).ok_or(Damage::Unreadable)?;
        if verify && checksum(envelope.as_bytes()) != envelope_sum {
            return Err(Damage::Envelope.into());
        }
        let queued = Self::parse_envelope(envelope, body).ok_or(Damage::Unreadable)?;
        if verify && checksum(body) != body_sum {
            return Err(Damaged { damage: Damage::Body, envelope: Some(queued) });
        }
        Ok(queued)
    }

    /// The envelope lines in order: msg, from, arrived, then one rcpt line per recipient.
    fn parse_envelope(envelope: &str, body: &[u8]) -> Option<QueuedMessage> {
        let mut lines = envelope.split("\r\n").filter(|line| !line.is_empty());
        let msg = lines.next()?.strip_prefix("msg ")?.to_string();
        let from = lines.next()?.strip_prefix("from")?.trim_start().to_string();
        let arrived_ms = lines.next()?.strip_prefix("arrived ")?.parse().ok()?;
        let rcpts: Vec<String> = lines.map(|line| line.strip_prefix("rcpt ").map(str::to_string)).collect::<Option<_>>()?;
        if rcpts.is_empty() {
            return None;
        }
        Some(QueuedMessage { msg, from, arrived_ms, rcpts, body: body.to_vec() })
    }
}

#[derive(Clone, Debug)]
pub struct RunnerConfig {
    pub store_host: String,
    pub hostname: String,
    pub scan_interval: Duration,
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// Delivery workers, each with its own LMTP connection.
    pub workers: usize,
    /// Where mail for a remote domain goes (a transport map: lower-case domain → host), for
    /// the DSNs the MX returns; a domain without a route is tried at its own name.
    pub routes: BTreeMap<String, String>,
    /// Unix time (seconds) at which the journal's clock reads 0: the base of DSN dates.
    pub epoch_unix_s: u64,
}

/// How many files the queue holds, as last counted (the MX reads it to push back).
pub type QueueGauge = Rc<Cell<usize>>;

/// Per-file retry state, kept in memory: after a restart every file is due at once.
#[derive(Default)]
struct Backoff {
    failures: u32,
    due_ms: u64,
}

#[derive(Default)]
struct RunnerState {
    /// Files handed to a worker and not finished yet.
    in_flight: BTreeSet<String>,
    backoff: BTreeMap<String, Backoff>,
    /// Damaged files whose DSN the sender's MX took, with its Message-ID: a failed move out of
    /// the queue is retried without sending the DSN again.
    returned: BTreeMap<String, String>,
}

type Pickup = Rc<tokio::sync::Mutex<tokio::sync::mpsc::Receiver<String>>>;

/// The queue manager: rescans the queue and hands due files to the workers, fresh and retried
/// mail alternately, so that a backlog of deferred mail cannot starve new mail or the reverse.
pub async fn run(env: Env, config: RunnerConfig, gauge: QueueGauge) {
    env.journal.record(Event::QueueRetryPolicy {
        base_ms: config.retry_base.as_millis() as u64,
        max_ms: config.retry_max.as_millis() as u64,
        factor: RETRY_FACTOR,
        scan_interval_ms: config.scan_interval.as_millis() as u64,
    });
    recover(&env).await;
    let workers = config.workers.clamp(1, 64);
    let (handoff, pickup) = tokio::sync::mpsc::channel::<String>(workers * 2);
    let pickup: Pickup = Rc::new(tokio::sync::Mutex::new(pickup));
    let state = Rc::new(RefCell::new(RunnerState::default()));
    for _ in 0..workers {
        tokio::task::spawn_local(worker(env.clone(), config.clone(), pickup.clone(), state.clone()));
    }
    loop {
        if let Ok(names) = env.disk.list(QUEUE_DIR).await {
            let names: Vec<String> = names.into_iter().filter(|name| !name.ends_with(".tmp")).collect();
            gauge.set(names.len());
            for name in admission_order(&env, &state, names) {
                state.borrow_mut().in_flight.insert(name.clone());
                if handoff.send(name).await.is_err() {
                    return;
                }
            }
        }
        tokio::time::sleep(config.scan_interval).await;
    }
}

/// Due files not in flight, fresh and retried alternately, each group oldest first.
fn admission_order(env: &Env, state: &Rc<RefCell<RunnerState>>, names: Vec<String>) -> Vec<String> {
    let now_ms = env.journal.now_ms();
    let mut state = state.borrow_mut();
    let present: BTreeSet<&String> = names.iter().collect();
    state.backoff.retain(|name, _| present.contains(name));
    state.returned.retain(|name, _| present.contains(name));
    let (mut fresh, mut retried) = (Vec::new(), Vec::new());
    for name in names.iter().take(MAX_FILES_PER_SCAN) {
        if state.in_flight.contains(name) {
            continue;
        }
        match state.backoff.get(name) {
            None => fresh.push(name.clone()),
            Some(backoff) if backoff.due_ms <= now_ms => retried.push(name.clone()),
            Some(_) => {}
        }
    }
    let mut order = Vec::with_capacity(fresh.len() + retried.len());
    let (mut fresh, mut retried) = (fresh.into_iter(), retried.into_iter());
    loop {
        match (fresh.next(), retried.next()) {
            (None, None) => return order,
            (first, second) => order.extend(first.into_iter().chain(second)),
        }
    }
}

/// A delivery agent: takes files from the queue manager and delivers them over its own LMTP
/// connection, reopening it when it failed or sat idle.
async fn worker(env: Env, config: RunnerConfig, pickup: Pickup, state: Rc<RefCell<RunnerState>>) {
    let mut session: Option<(Conn, u64)> = None;
    loop {
        let Some(name) = pickup.lock().await.recv().await else { return };
        if session.as_ref().is_some_and(|(_, last_ms)| env.journal.now_ms().saturating_sub(*last_ms) > IDLE_RECONNECT_MS) {
            session = None; // the store may have timed the idle connection out
        }
        let attempt = state.borrow().backoff.get(&name).map_or(0, |backoff| backoff.failures).saturating_add(1);
        let delivered = deliver_one(&env, &config, &state, &name, attempt, &mut session).await;
        let mut state = state.borrow_mut();
        state.in_flight.remove(&name);
        match delivered {
            Ok(true) => {
                state.backoff.remove(&name);
            }
            Ok(false) => defer(&env, &config, &mut state.backoff, &name),
            Err(()) => return, // a crash point: the host is about to be crashed
        }
    }
}

/// Delivers one queue file. Ok(true) when nothing is left to retry, Ok(false) to retry later.
/// `attempt`: this file's attempt number since the MX started.
async fn deliver_one(
    env: &Env,
    config: &RunnerConfig,
    state: &Rc<RefCell<RunnerState>>,
    name: &str,
    attempt: u32,
    session: &mut Option<(Conn, u64)>,
) -> Result<bool, ()> {
    let path = format!("{QUEUE_DIR}/{name}");
    let Ok(bytes) = env.disk.read(&path).await else { return Ok(false) };
    let queued = match QueuedMessage::decode(&bytes, !env.defects.has(Defect::NoQueueChecksum)) {
        Ok(queued) => queued,
        // Never relayed damaged, never retried for long: returned when it can be, set aside
        // and reported.
        Err(damaged) => return Ok(set_aside(env, config, state, name, damaged, attempt).await),
    };
    env.journal.record(Event::LmtpAttempt { queue_file: path.as_str().into(), msg: queued.msg.as_str().into(), attempt });
    if session.is_none() {
        *session = open_lmtp(env, config, &path, &queued.msg).await.map(|conn| (conn, 0));
    }
    let Some((conn, last_ms)) = session.as_mut() else { return Ok(false) };
    *last_ms = env.journal.now_ms();
    let Some(replies) = transact(env, conn, &path, &queued).await else {
        *session = None;
        return Ok(false);
    };
    // Unrecorded (the queue's disk refused the rewrite) is not done: back off like after a 4xx,
    // rather than deliver again at the next scan. The store recognises the retry either way.
    let Ok(recorded) = record_outcome(env, &path, &queued, &replies).await else { return Err(()) };
    Ok(recorded && replies.values().all(|reply| reply.class() == 2))
}

/// A damaged queue file leaves the queue, reported. When its envelope is intact and not from
/// `<>` (RFC 3464 §2: no DSN about a DSN), its message is first returned to the sender with a
/// failure DSN; a transient failure keeps the file queued for another try, at most
/// `MAX_RETURN_TRIES`. True once the file is out of the queue.
async fn set_aside(env: &Env, config: &RunnerConfig, state: &Rc<RefCell<RunnerState>>, name: &str, damaged: Damaged, attempt: u32) -> bool {
    const MAX_RETURN_TRIES: u32 = 8;
    let reason = returns::Reason { status: "5.3.0", diagnostic: "554 5.3.0 the message was damaged on storage in the queue and cannot be delivered" };
    let path = format!("{QUEUE_DIR}/{name}");
    let already = state.borrow().returned.get(name).cloned();
    let dsn = match (already, damaged.envelope) {
        (Some(dsn), _) => Some(dsn),
        (None, Some(queued)) if !queued.from.is_empty() => match try_return(env, config, name, &queued, &reason).await {
            returns::Returned::Taken(dsn) => {
                state.borrow_mut().returned.insert(name.to_string(), dsn.clone());
                Some(dsn)
            }
            returns::Returned::Transient(error) if attempt < MAX_RETURN_TRIES => {
                env.journal.record(Event::ReturnFailed { queue_file: path.into(), error: error.into(), last: false });
                return false;
            }
            returns::Returned::Transient(error) | returns::Returned::Refused(error) => {
                env.journal.record(Event::ReturnFailed { queue_file: path.into(), error: error.into(), last: true });
                None
            }
        },
        _ => None,
    };
    let moved = quarantine(env, name, damaged.damage, dsn).await;
    if moved {
        state.borrow_mut().returned.remove(name);
    }
    moved
}

async fn try_return(env: &Env, config: &RunnerConfig, name: &str, queued: &QueuedMessage, reason: &returns::Reason<'_>) -> returns::Returned {
    let mta = returns::Mta { hostname: &config.hostname, routes: &config.routes, epoch_unix_s: config.epoch_unix_s };
    let envelope = returns::Envelope { msg: &queued.msg, from: &queued.from, rcpts: &queued.rcpts, arrived_ms: queued.arrived_ms };
    returns::try_return(env, &mta, name, &envelope, reason).await
}

/// Moves a damaged queue file out of the queue into `corrupt/` (as Postfix does), durably, and
/// reports it: the message is lost and an operator must know. True once it is out of the queue.
async fn quarantine(env: &Env, name: &str, damage: Damage, dsn: Option<String>) -> bool {
    let (from, to) = (format!("{QUEUE_DIR}/{name}"), format!("{CORRUPT_DIR}/{name}"));
    let moved = async {
        env.disk.rename(&from, &to).await?;
        env.disk.fsync_dir(CORRUPT_DIR).await?;
        env.disk.fsync_dir(QUEUE_DIR).await
    };
    if moved.await.is_err() {
        return false;
    }
    env.journal.record(Event::QueueDamaged { queue_file: from.into(), moved_to: to.into(), reason: history::Text::new_static(damage.describe()), dsn: dsn.map(Into::into) });
    true
}

fn defer(env: &Env, config: &RunnerConfig, backoff: &mut BTreeMap<String, Backoff>, name: &str) {
    let entry = backoff.entry(name.to_string()).or_default();
    entry.failures += 1;
    let factor = RETRY_FACTOR.saturating_pow(entry.failures.saturating_sub(1).min(16));
    let delay = if env.defects.has(Defect::MxRetryWithoutBackoff) {
        // The planted bug: due again at once, so taken at the next scan.
        Duration::ZERO
    } else {
        config.retry_base.saturating_mul(factor).min(config.retry_max)
    };
    entry.due_ms = env.journal.now_ms() + delay.as_millis() as u64;
}

/// After a restart: `incoming/` holds only files that were never acknowledged; remove them.
pub async fn recover(env: &Env) {
    let mut files = 0;
    if let Ok(names) = env.disk.list(INCOMING_DIR).await {
        for name in names {
            let _ = env.disk.remove(&format!("{INCOMING_DIR}/{name}")).await;
        }
        let _ = env.disk.fsync_dir(INCOMING_DIR).await;
    }
    if env.defects.has(Defect::RecoverQueueAsDebris) {
        // The planted bug: acknowledged mail taken for debris.
        for name in env.disk.list(QUEUE_DIR).await.unwrap_or_default() {
            let _ = env.disk.remove(&format!("{QUEUE_DIR}/{name}")).await;
        }
    }
    if let Ok(names) = env.disk.list(QUEUE_DIR).await {
        files = names.len() as u64;
    }
    env.journal.record(Event::QueueRecovered { files });
}

fn wire_line(text: &str) -> Vec<u8> {
    format!("{text}\r\n").into_bytes()
}

async fn read_reply(conn: &mut Conn) -> Result<Reply, String> {
    read_reply_within(conn, LMTP_TIMEOUT).await
}

async fn read_reply_within(conn: &mut Conn, timeout: Duration) -> Result<Reply, String> {
    let mut parser = ReplyParser::default();
    loop {
        let line = conn.read_line(wire::MAX_TEXT_LINE, timeout).await.map_err(|error| error.describe())?;
        match parser.feed_line(&line) {
            Ok(Some(reply)) => return Ok(reply),
            Ok(None) => continue,
            Err(error) => return Err(format!("{error:?}")),
        }
    }
}

async fn open_lmtp(env: &Env, config: &RunnerConfig, path: &str, msg: &str) -> Option<Conn> {
    match try_open_lmtp(env, config).await {
        Ok(conn) => Some(conn),
        Err((stage, error)) => {
            env.journal.record(Event::LmtpFailure { queue_file: path.into(), msg: msg.into(), stage, error: error.into() });
            None
        }
    }
}

type Failure = (Stage, String);

async fn try_open_lmtp(env: &Env, config: &RunnerConfig) -> Result<Conn, Failure> {
    let connect = env.net.connect(&config.store_host, LMTP_PORT);
    let stream = match tokio::time::timeout(Duration::from_secs(60), connect).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => return Err((Stage::Connect, error.to_string())),
        Err(_) => return Err((Stage::Connect, "timed out".into())),
    };
    let mut conn = Conn::new(stream);
    let greeting = read_reply(&mut conn).await.map_err(|error| (Stage::Greeting, error))?;
    if greeting.code != 220 {
        return Err((Stage::Greeting, greeting.summary()));
    }
    expect(&mut conn, format!("LHLO {}", config.hostname), Stage::Ehlo, 2).await?;
    Ok(conn)
}

/// Sends one command and reads its reply; Err unless the reply has the expected class.
async fn expect(conn: &mut Conn, line: String, stage: Stage, class: u16) -> Result<Reply, Failure> {
    let reply = command(conn, line).await.map_err(|error| (stage, error))?;
    if reply.class() == class { Ok(reply) } else { Err((stage, reply.summary())) }
}

async fn command(conn: &mut Conn, line: String) -> Result<Reply, String> {
    conn.send(&wire_line(&line)).await.map_err(|error| error.describe())?;
    read_reply(conn).await
}

/// One LMTP transaction. Returns the reply for every recipient (RCPT refusals included), or
/// None when the session failed before every accepted recipient had its reply.
async fn transact(env: &Env, conn: &mut Conn, path: &str, queued: &QueuedMessage) -> Option<BTreeMap<String, Reply>> {
    let mut replies = BTreeMap::new();
    match try_transact(env, conn, path, queued, &mut replies).await {
        Ok(()) => Some(replies),
        Err((stage, error)) => {
            env.journal.record(Event::LmtpFailure { queue_file: path.into(), msg: queued.msg.as_str().into(), stage, error: error.into() });
            None
        }
    }
}

async fn try_transact(
    env: &Env,
    conn: &mut Conn,
    path: &str,
    queued: &QueuedMessage,
    replies: &mut BTreeMap<String, Reply>,
) -> Result<(), Failure> {
    let record = |rcpt: &str, reply: &Reply| {
        env.journal.record(Event::LmtpReply {
            queue_file: path.into(),
            msg: queued.msg.as_str().into(),
            rcpt: rcpt.into(),
            reply: reply.summary().into(),
        });
    };
    // PIPELINING (RFC 2920; every LMTP server supports it, RFC 2033 §4.1): MAIL, every RCPT
    // and DATA go out together, and their replies come back in order.
    let mut batch = format!("MAIL FROM:<{}>\r\n", queued.from);
    for rcpt in &queued.rcpts {
        batch.push_str(&format!("RCPT TO:<{rcpt}>\r\n"));
    }
    batch.push_str("DATA\r\n");
    conn.send(batch.as_bytes()).await.map_err(|error| (Stage::Mail, error.describe()))?;
    let mail = read_reply(conn).await.map_err(|error| (Stage::Mail, error))?;
    let mut accepted = Vec::new();
    for rcpt in &queued.rcpts {
        let reply = read_reply(conn).await.map_err(|error| (Stage::Rcpt, error))?;
        if reply.class() == 2 && mail.class() == 2 {
            accepted.push(rcpt.clone());
        } else if mail.class() == 2 {
            record(rcpt, &reply);
            replies.insert(rcpt.clone(), reply);
        }
    }
    let data = read_reply(conn).await.map_err(|error| (Stage::Data, error))?;
    if mail.class() != 2 {
        return Err((Stage::Mail, mail.summary()));
    }
    if accepted.is_empty() {
        return Ok(());
    }
    if data.code != 354 {
        return Err((Stage::Data, data.summary()));
    }
    conn.send(&wire::dot_stuff(&queued.body)).await.map_err(|error| (Stage::DataEnd, error.describe()))?;
    // RFC 2033 §4.2: one reply per accepted recipient, in RCPT order.
    for rcpt in &accepted {
        let reply = read_reply_within(conn, LMTP_DATA_DONE_TIMEOUT).await.map_err(|error| (Stage::DataEnd, error))?;
        record(rcpt, &reply);
        replies.insert(rcpt.clone(), reply);
    }
    Ok(())
}

/// Makes the outcome durable: the recipients the store took leave the queue. Ok(false) when
/// the queue file could not be rewritten or removed.
async fn record_outcome(env: &Env, path: &str, queued: &QueuedMessage, replies: &BTreeMap<String, Reply>) -> Result<bool, StackError> {
    crash_point!(env, "mx-after-lmtp-2xx-before-record");
    let drop_transient = env.defects.has(Defect::DropOnLmtp4xx);
    let (done, remaining): (Vec<String>, Vec<String>) = queued.rcpts.iter().cloned().partition(|rcpt| {
        let class = replies.get(rcpt).map(Reply::class);
        // The store answers 5xx only for a mailbox that does not exist, which the MX already
        // refused at RCPT; such a recipient is kept and retried rather than bounced here.
        class == Some(2) || (drop_transient && class == Some(4))
    });
    if done.is_empty() {
        return Ok(true);
    }
    let written = if remaining.is_empty() {
        remove_file(env, path).await
    } else {
        let rest = QueuedMessage { rcpts: remaining.clone(), ..queued.clone() };
        rewrite_file(env, path, &rest.encode()).await
    };
    if written.is_ok() {
        env.journal.record(Event::QueueRecorded { queue_file: path.into(), msg: queued.msg.as_str().into(), done, remaining });
    }
    Ok(written.is_ok())
}

/// Unlinks a finished queue file and makes the unlink durable before it is recorded: a crash
/// must not bring the file back, or its mail would be delivered again. Once unlinked the file
/// is out of every later scan, so a failing directory sync is retried here (every second, at
/// most UNLINK_SYNC_TRIES times) rather than left to a retry that would never come (swarm
/// found a run idling to its horizon on one such file).
async fn remove_file(env: &Env, path: &str) -> Result<(), DiskError> {
    const UNLINK_SYNC_TRIES: u32 = 3600;
    env.disk.remove(path).await?;
    if env.defects.has(Defect::NoFsyncAfterUnlink) {
        return Ok(()); // the planted bug: the unlink waits for whatever syncs the directory next
    }
    let mut result = env.disk.fsync_dir(QUEUE_DIR).await;
    for _ in 1..UNLINK_SYNC_TRIES {
        if result.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        result = env.disk.fsync_dir(QUEUE_DIR).await;
    }
    result
}

/// Atomic replacement: write a temporary file, fsync it, rename it over, fsync the directory.
async fn rewrite_file(env: &Env, path: &str, bytes: &[u8]) -> Result<(), DiskError> {
    let temporary = format!("{path}.tmp");
    env.disk.write(&temporary, bytes).await?;
    env.disk.fsync(&temporary).await?;
    env.disk.rename(&temporary, path).await?;
    env.disk.fsync_dir(QUEUE_DIR).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_files_round_trip_and_torn_files_are_rejected() {
        let queued = QueuedMessage { msg: "m1@x".into(), from: String::new(), arrived_ms: 7, rcpts: vec!["a@l".into(), "b@l".into()], body: b"Subject: x\r\n\r\nhi\r\n".to_vec() };
        let bytes = queued.encode();
        assert_eq!(QueuedMessage::decode(&bytes, true), Ok(queued));
        assert_eq!(QueuedMessage::decode(&bytes[..20], true), Err(Damage::Unreadable.into()));
        assert_eq!(QueuedMessage::decode(b"", true), Err(Damage::Unreadable.into()));
    }

    #[test]
    fn a_flipped_bit_anywhere_in_a_queue_file_is_found() {
        let queued = QueuedMessage { msg: "m1@x".into(), from: "s@r".into(), arrived_ms: 7, rcpts: vec!["anna@l".into()], body: b"Subject: x\r\n\r\nhi\r\n".to_vec() };
        let bytes = queued.encode();
        for at in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x01;
            assert!(QueuedMessage::decode(&damaged, true).is_err(), "a flip at byte {at} went unnoticed");
        }
        // Without verification (the planted bug) a flipped recipient is read as another one.
        let at = bytes.windows(4).position(|w| w == b"anna").unwrap();
        let mut damaged = bytes.clone();
        damaged[at] ^= 0x01;
        assert_eq!(QueuedMessage::decode(&damaged, false).map(|q| q.rcpts), Ok(vec!["`nna@l".to_string()]));
    }

    #[test]
    fn a_damaged_body_keeps_its_envelope_and_a_damaged_envelope_keeps_nothing() {
        let queued = QueuedMessage { msg: "m1@x".into(), from: "s@r".into(), arrived_ms: 7, rcpts: vec!["anna@l".into()], body: b"Subject: x\r\n\r\nhi\r\n".to_vec() };
        let bytes = queued.encode();
        let mut in_body = bytes.clone();
        *in_body.last_mut().unwrap() ^= 0x01;
        let damaged = QueuedMessage::decode(&in_body, true).unwrap_err();
        assert_eq!(damaged.damage, Damage::Body);
        assert_eq!(damaged.envelope.map(|envelope| (envelope.from, envelope.rcpts, envelope.arrived_ms)), Some(("s@r".to_string(), vec!["anna@l".to_string()], 7)));
        let mut in_envelope = bytes.clone();
        let at = bytes.windows(4).position(|w| w == b"anna").unwrap();
        in_envelope[at] ^= 0x01;
        assert_eq!(QueuedMessage::decode(&in_envelope, true), Err(Damage::Envelope.into()));
    }
}
