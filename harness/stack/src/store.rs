//! The store: an LMTP server (RFC 2033) that delivers into one maildir per mailbox.
//!
//! Delivery (maildir(5), as Dovecot and Postfix's local do it): write `tmp/NAME`, fsync it,
//! rename it into `new/NAME`, fsync `new/`, and only then answer 2xx for that recipient. The
//! file name carries the message's UID and a checksum (`,U=7,H=3fa9…`), so the index is rebuilt
//! from what is durable after a restart. UIDNEXT is kept durably in `uidlist` and never goes
//! back (RFC 3501 §2.3.1.1), even when the newest messages were deleted before a crash.
//!
//! Layout. Every mailbox is a whole maildir: `tmp/`, `new/` and `cur/` exist, made durable at
//! every start, so that other maildir readers (mutt, Python's `mailbox.Maildir`) open it. A
//! message its owner has read lives in `cur/` as `NAME:2,S` (see [`mark_read`]); recovery
//! indexes `new/` and `cur/` alike, under the UID and checksum in the base name.
//!
//! Concurrency. Each mailbox has its own lock, held while a delivery reserves its UID and
//! publishes the message: UIDs become visible in ascending order (a client that saw UID 14 never
//! later finds a new UID 4, RFC 3501 §2.3.1.1), and a mailbox whose storage stalls holds up
//! only its own deliveries. A delivery waits for a busy mailbox only so long (`MAILBOX_WAIT`,
//! per transaction), then answers 451 for that recipient, as a local delivery agent that cannot
//! lock a mailbox tempfails and lets the MTA retry; the other recipients go ahead.
//!
//! Retries. An MX that gives up waiting for a reply (a stalled disk, a lost reply) delivers the
//! same queue entry again. The store recognises it: per mailbox it remembers the deliveries in
//! progress and recently completed by the checksum of their bytes, and answers a retry with the
//! outcome of the delivery it repeats instead of making a second copy (see `Recent`).

use super::conn::{Conn, ConnError};
use super::net::Accepted;
use mail::message;
use super::wire::{self, Command, DataDecoder, Reply};
use super::{Defect, Env, StackError, LMTP_PORT};
use crate::crash_point;
use disk::DiskError;
use history::Event;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct StoreConfig {
    pub hostname: String,
    pub domains: Vec<String>,
    pub users: BTreeSet<String>,
    pub max_message_bytes: usize,
    /// Each read of the socket (LMTP, POP3; IMAP waits at least its 30-minute autologout).
    pub idle_timeout: Duration,
    /// A POP3 or IMAP command (IMAP: its first line, then its literals) must have arrived within
    /// this of its first octet. None: no bound but the idle timeout (the simulation).
    pub command_total_timeout: Option<Duration>,
    /// A POP3 or IMAP session that has not logged in within this of connecting is closed, however
    /// busy it keeps. None: never (the simulation).
    pub login_timeout: Option<Duration>,
    /// After the n-th failed PASS or LOGIN of a session, its reply waits n times this (a password
    /// guesser gets a few tries a minute, not thousands a second). Zero: no wait (the simulation).
    pub login_failure_delay: Duration,
    /// Failed logins after which a session is closed. None: never (the simulation).
    pub max_login_failures: Option<u32>,
    /// POP3 sessions at once; beyond it clients get -ERR [SYS/TEMP] and try again later.
    pub pop3_max_sessions: usize,
    /// IMAP sessions at once; beyond it clients are greeted with BYE and try again later.
    pub imap_max_sessions: usize,
    /// The operator's notice that the storage was restored from a backup: the next recovery
    /// starts a new UIDVALIDITY (RFC 3501 §2.3.1.1) and clears the notice.
    pub restored: Rc<Cell<bool>>,
    /// The operator's notices of a staged restore: which mailboxes are offline, and which came
    /// back from a backup. Only what an operator would tell the store, never why.
    pub cohorts: Rc<CohortNotices>,
    /// POP3 RETR marks the message read, as Dovecot does unless `pop3_no_flag_updates`: it
    /// moves from `new/` to `cur/` with the seen flag (`:2,S`).
    pub mark_read_on_retr: bool,
    /// Live mode: the POP3 server records what it sent each client (the UIDL listing, each
    /// message retrieved, the deletions carried out) as the client events a simulated client
    /// records, since no client of ours is there to record them. Off in simulation.
    pub record_served: bool,
}

/// The operator's control of a staged restore (mailboxes brought back cohort by cohort).
#[derive(Debug, Default)]
pub struct CohortNotices {
    /// Mailboxes that are offline: mail for them is answered 4xx per recipient (the MX keeps
    /// it queued), and their owners cannot log in, until the operator takes them off the list.
    pub offline: RefCell<BTreeSet<String>>,
    /// Mailboxes restored from a backup: the next recovery starts a new UIDVALIDITY for each
    /// (as `restored` does for the whole store) and then clears the list.
    pub restored: RefCell<BTreeSet<String>>,
}

impl CohortNotices {
    pub fn is_offline(&self, user: &str) -> bool {
        self.offline.borrow().contains(user)
    }
}

/// One message as the index knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Where the message is now: `new/NAME`, or `cur/NAME:2,S` once read.
    pub file: String,
    pub size: u64,
    /// The checksum stored in the file name: blake3 of the bytes, first 16 hex digits.
    pub checksum: String,
}

#[derive(Clone, Debug, Default)]
pub struct Mailbox {
    pub uidvalidity: u64,
    pub uidnext: u64,
    pub messages: BTreeMap<u64, Entry>,
    /// A POP3 session holds the maildrop lock (RFC 1939 §8).
    pub locked: bool,
}

/// How long one LMTP transaction waits, in all, for busy mailboxes (another delivery holding the
/// mailbox's lock, or an earlier delivery of the same message still in progress) before it
/// answers 451 for the recipients still waiting. Like a delivery agent's lock timeout (lockmail
/// gives up after three minutes; Dovecot's `mail_max_lock_timeout`): a slow mailbox costs the MX
/// a retry of that recipient later, and keeps the store's replies well inside the MX's
/// DATA-termination timeout (10 minutes, RFC 5321 §4.5.3.2.6). Only a disk operation already
/// under way can hold a reply longer.
pub const MAILBOX_WAIT: Duration = Duration::from_secs(60);

/// Completed deliveries remembered per mailbox to recognise retries: far more than an MX has
/// in flight to one mailbox between a lost reply and its retry (bounded, oldest forgotten first).
const REMEMBERED_PER_MAILBOX: usize = 4096;

/// The in-memory state of one store, shared by its LMTP and POP3 servers.
#[derive(Default)]
pub struct StoreState {
    pub mailboxes: RefCell<BTreeMap<String, Mailbox>>,
    /// One lock per mailbox: a UID is reserved (and `uidlist` written) and the message published
    /// under it, so that `uidlist` never goes backwards and UIDs become visible in order.
    locks: RefCell<BTreeMap<String, Rc<tokio::sync::Mutex<()>>>>,
    /// One lock for the whole store: only the planted `store-wide-uid-lock` takes it.
    store_lock: Rc<tokio::sync::Mutex<()>>,
    /// Per mailbox: deliveries in progress or recently completed (see `Recent`).
    recent: RefCell<BTreeMap<String, Recent>>,
}

/// What a mailbox remembers of its recent deliveries, to answer the MX's retries.
///
/// Why at the store, and why by checksum. LMTP gives the client no way to ask "did my last
/// transaction arrive?": an MX whose reply timed out (the disk stalled, the reply was lost)
/// must deliver again (RFC 5321 §4.5.3.2.6; RFC 1047). It could wait longer, but no timeout is
/// long enough for a stall of days, so only the store can tell a retry from new mail. Stores do:
/// Cyrus's lmtpd keeps a duplicate-delivery database (message and mailbox) and suppresses a
/// second delivery. The key here is stricter than a Message-ID: the checksum of the bytes as
/// stored (Return-Path, the MX's own `Received:` line naming its queue entry, the message).
/// A retry of one queue entry is byte-identical; a message the sender sent twice (it never saw
/// the MX's 250) is queued twice under two queue ids, so it stays two deliveries, as A13
/// expects of a copy with a cause; two different messages that share a Message-ID are never
/// merged.
///
/// In memory, rebuilt at every start from the checksums in the recovered files' names, so it
/// never outlives the files it speaks for (a restore from backup restarts the store) and never
/// forgets a copy that survived a restart. Bounded per mailbox.
#[derive(Default)]
struct Recent {
    by_checksum: BTreeMap<String, Attempt>,
    /// Completed deliveries, oldest first, to forget the oldest beyond the bound.
    completed: std::collections::VecDeque<String>,
}

#[derive(Clone)]
enum Attempt {
    /// A delivery of these bytes is under way; waiters are woken when it ends either way.
    InProgress(Rc<tokio::sync::Notify>),
    /// Delivered durably and answered 2xx.
    Done { uidvalidity: u64, uid: u64, file: String },
}

/// Removes an `InProgress` mark when the delivery ends (or its task is dropped) without
/// completing, and wakes whoever waits on it.
struct InProgressMark<'a> {
    index: &'a StoreState,
    user: String,
    key: String,
    notify: Rc<tokio::sync::Notify>,
    done: bool,
}

impl InProgressMark<'_> {
    fn complete(mut self, uidvalidity: u64, uid: u64, file: String) {
        let mut recent = self.index.recent.borrow_mut();
        let mailbox = recent.entry(self.user.clone()).or_default();
        mailbox.by_checksum.insert(self.key.clone(), Attempt::Done { uidvalidity, uid, file });
        mailbox.completed.push_back(self.key.clone());
        while mailbox.completed.len() > REMEMBERED_PER_MAILBOX {
            if let Some(old) = mailbox.completed.pop_front() {
                mailbox.by_checksum.remove(&old);
            }
        }
        self.done = true;
        self.notify.notify_waiters();
    }
}

impl Drop for InProgressMark<'_> {
    fn drop(&mut self) {
        if !self.done {
            if let Some(mailbox) = self.index.recent.borrow_mut().get_mut(&self.user) {
                mailbox.by_checksum.remove(&self.key);
            }
            self.notify.notify_waiters();
        }
    }
}

impl StoreState {
    /// Where the message with this UID is now, if the index holds it.
    fn current_file(&self, user: &str, uid: u64) -> Option<String> {
        self.mailboxes.borrow().get(user).and_then(|mailbox| mailbox.messages.get(&uid)).map(|entry| entry.file.clone())
    }

    fn mailbox_lock(&self, user: &str) -> Rc<tokio::sync::Mutex<()>> {
        self.locks.borrow_mut().entry(user.to_string()).or_default().clone()
    }

    fn attempt(&self, user: &str, key: &str) -> Option<Attempt> {
        self.recent.borrow().get(user).and_then(|mailbox| mailbox.by_checksum.get(key)).cloned()
    }

    fn mark_in_progress(&self, user: &str, key: &str) -> InProgressMark<'_> {
        let notify = Rc::new(tokio::sync::Notify::new());
        let mut recent = self.recent.borrow_mut();
        recent.entry(user.to_string()).or_default().by_checksum.insert(key.to_string(), Attempt::InProgress(notify.clone()));
        InProgressMark { index: self, user: user.to_string(), key: key.to_string(), notify, done: false }
    }
}

pub type Index = Rc<StoreState>;

pub fn mailbox_dir(user: &str) -> String {
    format!("{MAIL_DIR}/{user}")
}

pub use mail::maildir::{checksum, parse_file_name};

/// Rebuilds the index from the durable state and removes tmp/ debris. Runs at every start.
pub async fn recover(env: &Env, config: &StoreConfig) -> Index {
    // The operator's notice of a restore is read here and withdrawn only once every mailbox has
    // been recovered under it: a crash in the middle of this recovery (a sick disk makes it
    // slow) must not leave the next start believing nothing was restored, which kept the old
    // UIDVALIDITY with a UIDNEXT below UIDs already issued (A17, A19; found by swarm).
    let restored = config.restored.get();
    let mut index = BTreeMap::new();
    for user in &config.users {
        let from_backup = restored || config.cohorts.restored.borrow().contains(user);
        let mailbox = recover_mailbox(env, user, from_backup).await;
        index.insert(user.clone(), mailbox);
    }
    config.restored.set(false);
    config.cohorts.restored.borrow_mut().clear();
    // The mailboxes' own names in mail/ (created with their first subdirectory).
    let _ = env.disk.fsync_dir(MAIL_DIR).await;
    let recent = remembered(&index);
    Rc::new(StoreState { mailboxes: RefCell::new(index), recent: RefCell::new(recent), ..StoreState::default() })
}

/// The retry memory a restart rebuilds from the files it recovered: each message's checksum is
/// in its name, so a delivery completed before the restart (its reply lost to an MX that had
/// stopped waiting, or to the crash) still answers the MX's retry instead of becoming a second
/// copy (swarm found it: a copy made after the MX's timeout, the store crashed before the retry
/// came, the retry made another). It speaks only for files that are there: what a restore from
/// backup erased is forgotten with them. The newest `REMEMBERED_PER_MAILBOX` per mailbox.
fn remembered(index: &BTreeMap<String, Mailbox>) -> BTreeMap<String, Recent> {
    let mut recent = BTreeMap::new();
    for (user, mailbox) in index {
        let mut memory = Recent::default();
        for (uid, entry) in mailbox.messages.iter().rev().take(REMEMBERED_PER_MAILBOX).rev() {
            let done = Attempt::Done { uidvalidity: mailbox.uidvalidity, uid: *uid, file: entry.file.clone() };
            if memory.by_checksum.insert(entry.checksum.clone(), done).is_none() {
                memory.completed.push_back(entry.checksum.clone());
            }
        }
        recent.insert(user.clone(), memory);
    }
    recent
}

/// A directory's names at recovery. An I/O error is no empty directory: taken for one, the
/// mailbox's messages stayed on disk but were never listed again (swarm found it: A20 after a
/// restart inside an EIO window). Retried every second for at most an hour of the disk's
/// failure (LMTP waits meanwhile, so the MX keeps the mail queued); then recovered empty.
async fn list_at_recovery(env: &Env, dir: &str) -> Vec<String> {
    const TRIES: u32 = 3600;
    for _ in 0..TRIES {
        match env.disk.list(dir).await {
            Ok(names) => return names,
            Err(disk::DiskError::NotFound) => return Vec::new(),
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
    Vec::new()
}

/// A UIDVALIDITY the store serves under must be durable first: served while its `uidlist`
/// write failed (a sick disk at recovery), a crash brings back the old one below UIDs already
/// issued under the new (swarm found it: A19 after a restore, a failing fsync, then a crash).
/// Retried every second for at most an hour of the disk's failure, as `list_at_recovery`.
async fn uidlist_at_recovery(env: &Env, dir: &str, uidvalidity: u64, uidnext: u64) {
    const TRIES: u32 = 3600;
    for _ in 0..TRIES {
        if write_uidlist(env, dir, uidvalidity, uidnext).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The directory holding one maildir per mailbox.
pub const MAIL_DIR: &str = "mail";

/// Makes the mailbox a whole maildir, durably: `tmp/`, `new/` and `cur/` exist (a device creates
/// a directory it is asked to sync) with their contents' names durable, and their own names are
/// durable in the mailbox's directory. Idempotent; errors are left to the next start, as a
/// missing subdirectory only hides the mailbox from other maildir readers.
async fn ensure_layout(env: &Env, dir: &str) {
    for sub in mail::maildir::SUBDIRS {
        let _ = env.disk.fsync_dir(&format!("{dir}/{sub}")).await;
    }
    let _ = env.disk.fsync_dir(dir).await;
}

async fn recover_mailbox(env: &Env, user: &str, restored: bool) -> Mailbox {
    let dir = mailbox_dir(user);
    ensure_layout(env, &dir).await;
    let debris_removed = remove_debris(env, &dir).await;
    let mut messages = BTreeMap::new();
    // Read mail is as much the mailbox's as unread mail. The planted `recover-new-only` forgets
    // cur/: what the owner has read vanishes from the index at every restart.
    let subdirs: &[&str] = if env.defects.has(Defect::RecoverNewOnly) { &["new"] } else { &["new", "cur"] };
    for sub in subdirs {
        for name in list_at_recovery(env, &format!("{dir}/{sub}")).await {
            if let Some((uid, sum)) = parse_file_name(&name) {
                let file = format!("{dir}/{sub}/{name}");
                // The size the name carries: a read here may fail (EIO while the disk is sick)
                // and must not list the message at 0 octets (swarm found that: A19, A23).
                let size = match mail::maildir::size_in_name(&name) {
                    Some(size) => size,
                    None => env.disk.read(&file).await.map(|bytes| bytes.len() as u64).unwrap_or(0),
                };
                // A UID in both (only a hand-made copy can do that: a move is one rename): the
                // read one, as the owner last saw it.
                messages.insert(uid, Entry { file, size, checksum: sum });
            }
        }
    }
    let stored = read_uidlist(env, &dir).await;
    let highest_uid = messages.keys().next_back().copied().unwrap_or(0);
    let fresh_uidvalidity = 1 + env.journal.now_ms() / 1000;
    let (mut uidvalidity, stored_uidnext) = stored.unwrap_or((fresh_uidvalidity, 1));
    let uidnext = if env.defects.has(Defect::ReuseUidAfterRestart) {
        // The planted bug: trust the files, forget the durable UIDNEXT.
        highest_uid + 1
    } else {
        stored_uidnext.max(highest_uid + 1)
    };
    // After a restore, UIDs issued since the backup may name other messages at clients: only a
    // new UIDVALIDITY keeps (mailbox, UIDVALIDITY, UID) naming one message (A17, A18).
    let renew = restored && !env.defects.has(Defect::KeepUidvalidityOnRollback);
    if renew {
        uidvalidity = fresh_uidvalidity.max(uidvalidity + 1);
    }
    if stored.is_none() || renew {
        uidlist_at_recovery(env, &dir, uidvalidity, uidnext).await;
    }
    env.journal.record(Event::StoreRecovered {
        mailbox: user.into(),
        uidvalidity,
        uidnext,
        messages: messages.len() as u64,
        debris_removed,
        restored,
    });
    Mailbox { uidvalidity, uidnext, messages, locked: false }
}

/// tmp/ holds only deliveries that were never acknowledged (maildir(5)): remove them.
async fn remove_debris(env: &Env, dir: &str) -> u64 {
    let mut debris_removed = 0;
    for name in env.disk.list(&format!("{dir}/tmp")).await.unwrap_or_default() {
        let path = format!("{dir}/tmp/{name}");
        let gone = if env.defects.has(Defect::RecoverTmpIntoNew) {
            // The planted bug: "rescue" whatever tmp/ holds, complete or not.
            env.disk.rename(&path, &format!("{dir}/new/{name}")).await
        } else {
            env.disk.remove(&path).await
        };
        debris_removed += u64::from(gone.is_ok());
    }
    if debris_removed > 0 {
        let _ = env.disk.fsync_dir(&format!("{dir}/tmp")).await;
        let _ = env.disk.fsync_dir(&format!("{dir}/new")).await;
    }
    debris_removed
}

async fn read_uidlist(env: &Env, dir: &str) -> Option<(u64, u64)> {
    let bytes = env.disk.read(&format!("{dir}/uidlist")).await.ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let mut fields = text.split_whitespace().map(|field| field.parse::<u64>().ok());
    Some((fields.next()??, fields.next()??))
}

/// Replaces `uidlist` atomically and durably.
async fn write_uidlist(env: &Env, dir: &str, uidvalidity: u64, uidnext: u64) -> Result<(), DiskError> {
    let temporary = format!("{dir}/uidlist.tmp");
    env.disk.write(&temporary, format!("{uidvalidity} {uidnext}\n").as_bytes()).await?;
    env.disk.fsync(&temporary).await?;
    env.disk.rename(&temporary, &format!("{dir}/uidlist")).await?;
    env.disk.fsync_dir(dir).await
}

/// Serves LMTP forever.
pub async fn serve_lmtp(env: Env, config: Rc<StoreConfig>, index: Index) {
    let Ok(listener) = env.net.listen(LMTP_PORT).await else { return };
    let mut sequence = 0u64;
    loop {
        let Ok(Accepted { stream, conn: wire, .. }) = listener.accept().await else { continue };
        sequence += 1;
        let (env, config, index) = (env.clone(), config.clone(), index.clone());
        tokio::task::spawn_local(async move {
            let _ = lmtp_session(&env, &config, &index, Conn::new(stream), Session { number: sequence, wire }).await;
        });
    }
}

/// An LMTP connection: its number (part of unique file names) and the network's name for it
/// (in the store's records of what it answered there).
struct Session {
    number: u64,
    wire: String,
}

async fn lmtp_session(env: &Env, config: &StoreConfig, index: &Index, mut conn: Conn, session: Session) -> Result<(), StackError> {
    let send = |reply: Reply| reply.encode();
    if conn.send(&send(Reply::new(220, "", &format!("{} LMTP mailchaos", config.hostname)))).await.is_err() {
        return Ok(());
    }
    let mut lhlo = false;
    let mut from: Option<String> = None;
    let mut rcpts: Vec<String> = Vec::new();
    let mut delivery = 0u64;
    loop {
        let line = match conn.read_line(wire::MAX_COMMAND_LINE - 2, config.idle_timeout).await {
            Ok(line) => line,
            Err(ConnError::TooLong) => {
                let _ = conn.send(&send(Reply::new(500, "5.5.6", "line too long"))).await;
                continue;
            }
            Err(_) => return Ok(()),
        };
        let reply = match wire::parse_command(&line) {
            Ok(Command::Lhlo(_)) => {
                lhlo = true;
                let lines = vec![config.hostname.clone(), "PIPELINING".into(), "ENHANCEDSTATUSCODES".into(), "8BITMIME".into()];
                Reply { code: 250, enhanced: None, lines }
            }
            Ok(Command::Mail { from: sender, .. }) if lhlo && from.is_none() => {
                from = Some(sender);
                Reply::new(250, "2.1.0", "sender ok")
            }
            Ok(Command::Mail { .. }) => Reply::new(503, "5.5.1", "bad sequence of commands"),
            Ok(Command::Rcpt { to, .. }) if from.is_some() => match local_user(config, &to) {
                Some(_) => {
                    rcpts.push(to.to_ascii_lowercase());
                    Reply::new(250, "2.1.5", "recipient ok")
                }
                None => Reply::new(550, "5.1.1", "no such mailbox"),
            },
            Ok(Command::Rcpt { .. }) => Reply::new(503, "5.5.1", "need MAIL before RCPT"),
            Ok(Command::Data) if rcpts.is_empty() => Reply::new(503, "5.5.1", "no valid recipients"),
            Ok(Command::Data) => {
                if conn.send(&send(Reply::new(354, "", "go ahead"))).await.is_err() {
                    return Ok(());
                }
                let mut decoder = DataDecoder::new(config.max_message_bytes);
                if conn.read_data(&mut decoder, config.idle_timeout).await.is_err() {
                    return Ok(());
                }
                let message = decoder.finish();
                let sender = from.take().unwrap_or_default();
                // RFC 2033 §4.2: exactly one reply per accepted recipient, in RCPT order.
                let accepted = std::mem::take(&mut rcpts);
                let single_reply = env.defects.has(Defect::LmtpSingleReply);
                // One budget of waiting for busy mailboxes for the whole transaction.
                let deadline_ms = env.journal.now_ms() + MAILBOX_WAIT.as_millis() as u64;
                for (position, rcpt) in accepted.iter().enumerate() {
                    delivery += 1;
                    let reply = match &message {
                        Ok(bytes) => {
                            let unique = format!("{}.S{}D{delivery}", env.journal.now_ms(), session.number);
                            // A retry is a later transaction; a recipient named twice in this
                            // one is delivered as asked (deduplicating is the client's job).
                            let retry_possible = !accepted[..position].contains(rcpt);
                            let target = Target { rcpt, wire: &session.wire, unique: &unique, deadline_ms, retry_possible };
                            deliver(env, config, index, &target, &sender, bytes).await?
                        }
                        Err(_) => Reply::new(552, "5.3.4", "message too big or malformed"),
                    };
                    if single_reply && position > 0 {
                        continue; // the planted bug: one reply for the whole transaction
                    }
                    if conn.send(&send(reply)).await.is_err() {
                        return Ok(());
                    }
                }
                continue;
            }
            Ok(Command::Rset) => {
                from = None;
                rcpts.clear();
                Reply::new(250, "2.0.0", "reset")
            }
            Ok(Command::Noop) => Reply::new(250, "2.0.0", "ok"),
            Ok(Command::Quit) => {
                let _ = conn.send(&send(Reply::new(221, "2.0.0", "bye"))).await;
                return Ok(());
            }
            Ok(_) => Reply::new(500, "5.5.1", "command not supported by this LMTP server"),
            Err(_) => Reply::new(500, "5.5.2", "syntax error"),
        };
        if conn.send(&send(reply)).await.is_err() {
            return Ok(());
        }
    }
}

fn local_user(config: &StoreConfig, address: &str) -> Option<String> {
    let (local, domain) = address.rsplit_once('@')?;
    let local = local.to_ascii_lowercase();
    let own_domain = config.domains.iter().any(|own| own.eq_ignore_ascii_case(domain));
    (own_domain && config.users.contains(&local)).then_some(local)
}

/// One recipient of an LMTP data phase: who, on which connection, the unique part of its file
/// name, how long a busy mailbox may be waited for, and whether the MX may be retrying it.
struct Target<'a> {
    rcpt: &'a str,
    wire: &'a str,
    unique: &'a str,
    deadline_ms: u64,
    retry_possible: bool,
}

/// Delivers one copy into the recipient's maildir and names the LMTP reply for it. A retry of a
/// delivery in progress or done gets that delivery's outcome instead of a second copy.
async fn deliver(env: &Env, config: &StoreConfig, index: &Index, target: &Target<'_>, sender: &str, message: &[u8]) -> Result<Reply, StackError> {
    let Target { rcpt, wire, unique, deadline_ms, retry_possible } = *target;
    let Some(user) = local_user(config, rcpt) else {
        return Ok(Reply::new(550, "5.1.1", "no such mailbox"));
    };
    let mut bytes = format!("Return-Path: <{sender}>\r\n").into_bytes();
    bytes.extend_from_slice(message);
    let msg = message::message_id(message).unwrap_or_default();
    let refuse = |reply: Reply| {
        env.journal.record(Event::StoreRefusal { mailbox: user.as_str().into(), msg: msg.as_str().into(), reply: reply.summary().into() });
        Ok(reply)
    };
    // A mailbox the operator has taken offline (a cohort not yet restored): try again later.
    // The planted `bounce-offline-cohort` refuses it for good.
    if config.cohorts.is_offline(&user) {
        return refuse(match env.defects.has(Defect::BounceOfflineCohort) {
            true => Reply::new(550, "5.2.1", "mailbox unavailable"),
            false => Reply::new(450, "4.2.1", "mailbox offline while it is restored, try again later"),
        });
    }
    // The planted `store-wide-uid-lock` does not recognise retries.
    let mark = if env.defects.has(Defect::StoreWideUidLock) || !retry_possible {
        None
    } else {
        let key = checksum(&bytes);
        match recognise(env, index, &user, &key, deadline_ms).await {
            Recognised::New => Some(index.mark_in_progress(&user, &key)),
            Recognised::Done { uidvalidity, uid, file } => {
                // Where the copy is now: its owner may have read it (moved into cur/) since.
                let file = index.current_file(&user, uid).unwrap_or(file);
                // The 2xx promises that copy is durable under the name it has now: a move into
                // cur/ whose directory sync failed is not (swarm found it: A1 on a retry).
                if env.disk.fsync_dir(disk::parent(&file)).await.is_err() {
                    return refuse(Reply::new(451, "4.3.0", "temporary storage error"));
                }
                let digest = message::content_digest(&bytes);
                env.journal.record(Event::StoreRetryRecognised(Box::new(history::Stored { conn: wire.into(), mailbox: user.as_str().into(), msg: msg.into(), uidvalidity, uid, file: file.into(), digest: digest.into() })));
                return Ok(Reply::new(250, "2.0.0", &format!("<{rcpt}> delivered")));
            }
            Recognised::StillInProgress => return refuse(Reply::new(451, "4.2.0", "an earlier delivery of this message is still in progress, try again later")),
        }
    };
    match publish(env, index, &config.cohorts, &user, &bytes, unique, deadline_ms).await {
        Ok((uidvalidity, uid, file)) => {
            let digest = message::content_digest(&bytes);
            env.journal.record(Event::StoreDelivered(Box::new(history::Stored { conn: wire.into(), mailbox: user.as_str().into(), msg: msg.into(), uidvalidity, uid, file: file.as_str().into(), digest: digest.into() })));
            if let Some(mark) = mark {
                mark.complete(uidvalidity, uid, file);
            }
            Ok(Reply::new(250, "2.0.0", &format!("<{rcpt}> delivered")))
        }
        Err(PublishError::Busy) => refuse(Reply::new(451, "4.2.0", "mailbox busy, try again later")),
        Err(PublishError::Offline) => refuse(Reply::new(450, "4.2.1", "mailbox offline while it is restored, try again later")),
        Err(PublishError::Stack(StackError::Disk(error))) => refuse(match error {
            DiskError::NoSpace => Reply::new(452, "4.3.1", "insufficient system storage"),
            _ => Reply::new(451, "4.3.0", "temporary storage error"),
        }),
        Err(PublishError::Stack(crash)) => Err(crash),
    }
}

enum Recognised {
    /// Nothing delivered or under way with these bytes: deliver.
    New,
    /// Delivered already: answer 2xx, make no second copy.
    Done { uidvalidity: u64, uid: u64, file: String },
    /// Still under way after the transaction's waiting budget: answer 451, the MX tries again.
    StillInProgress,
}

/// Whether these bytes were delivered to `user`'s mailbox recently or are being delivered now;
/// waits (within the budget) for a delivery under way to end.
async fn recognise(env: &Env, index: &Index, user: &str, key: &str, deadline_ms: u64) -> Recognised {
    loop {
        match index.attempt(user, key) {
            None => return Recognised::New,
            Some(Attempt::Done { uidvalidity, uid, file }) => return Recognised::Done { uidvalidity, uid, file },
            Some(Attempt::InProgress(notify)) => {
                // Registered before the wait: the end of the delivery cannot slip past it.
                let ended = notify.notified();
                let remaining = Duration::from_millis(deadline_ms.saturating_sub(env.journal.now_ms()));
                if tokio::time::timeout(remaining, ended).await.is_err() {
                    return Recognised::StillInProgress;
                }
            }
        }
    }
}

/// Why a publication did not happen.
enum PublishError {
    /// The mailbox stayed busy beyond the transaction's waiting budget: nothing was done.
    Busy,
    /// The mailbox went offline (a staged restore) before the message was published.
    Offline,
    Stack(StackError),
}

impl From<DiskError> for PublishError {
    fn from(error: DiskError) -> Self {
        PublishError::Stack(StackError::Disk(error))
    }
}

impl From<StackError> for PublishError {
    fn from(error: StackError) -> Self {
        PublishError::Stack(error)
    }
}

/// Under the mailbox's lock: reserve a UID, then tmp/ → fsync → new/ → fsync dir, then show the
/// message in the index. Returns (uidvalidity, uid, file) once durable.
async fn publish(env: &Env, index: &Index, cohorts: &CohortNotices, user: &str, bytes: &[u8], unique: &str, deadline_ms: u64) -> Result<(u64, u64, String), PublishError> {
    let dir = mailbox_dir(user);
    if env.defects.has(Defect::StoreWideUidLock) {
        // The planted bug: one lock for the whole store, held across the disk I/O of every
        // delivery and waited for without bound. One mailbox whose storage stalls freezes every
        // delivery; the MX times out and delivers again, and nothing recognises the retry.
        let lock = index.store_lock.clone();
        let _guard = lock.lock().await;
        let (uidvalidity, uid) = reserve_uid(env, index, user, &dir).await?;
        return write_and_show(env, index, cohorts, user, &dir, bytes, unique, uidvalidity, uid).await;
    }
    let lock = index.mailbox_lock(user);
    let remaining = Duration::from_millis(deadline_ms.saturating_sub(env.journal.now_ms()));
    // A free lock is taken even when the budget is spent: `timeout` polls the lock first.
    let Ok(guard) = tokio::time::timeout(remaining, lock.lock()).await else {
        return Err(PublishError::Busy);
    };
    let mut guard = Some(guard);
    let (uidvalidity, uid) = reserve_uid(env, index, user, &dir).await?;
    if env.defects.has(Defect::UidVisibleOutOfOrder) {
        // The planted bug: the lock covers the reservation only. A delivery whose storage is
        // slow publishes its UID after later deliveries published higher ones.
        guard = None;
    }
    let published = write_and_show(env, index, cohorts, user, &dir, bytes, unique, uidvalidity, uid).await;
    drop(guard);
    published
}

/// tmp/ → fsync → new/ → fsync dir, then the index shows the message.
#[allow(clippy::too_many_arguments)]
async fn write_and_show(
    env: &Env,
    index: &Index,
    cohorts: &CohortNotices,
    user: &str,
    dir: &str,
    bytes: &[u8],
    unique: &str,
    uidvalidity: u64,
    uid: u64,
) -> Result<(u64, u64, String), PublishError> {
    let name = mail::maildir::file_name(unique, uid, bytes);
    let final_path = format!("{dir}/new/{name}");
    if env.defects.has(Defect::WriteIntoNew) {
        // The planted bug: the file is visible in new/ while it is still being written.
        env.disk.write(&final_path, bytes).await?;
        env.disk.fsync(&final_path).await?;
    } else {
        let temporary = format!("{dir}/tmp/{name}");
        if let Err(error) = stage_file(env, &temporary, bytes).await {
            let _ = env.disk.remove(&temporary).await;
            return Err(error.into());
        }
        // The operator took the mailbox offline while this delivery waited on its storage:
        // nothing is published into it (the MX is told to try again later).
        if cohorts.is_offline(user) {
            let _ = env.disk.remove(&temporary).await;
            return Err(PublishError::Offline);
        }
        env.disk.rename(&temporary, &final_path).await?;
    }
    after_rename_before_dirsync(env)?;
    if !env.defects.has(Defect::NoDirFsync) {
        env.disk.fsync_dir(&format!("{dir}/new")).await?;
    }
    let size = bytes.len() as u64;
    let entry = Entry { file: final_path.clone(), size, checksum: checksum(bytes) };
    if let Some(mailbox) = index.mailboxes.borrow_mut().get_mut(user) {
        mailbox.messages.insert(uid, entry);
    }
    Ok((uidvalidity, uid, final_path))
}

fn after_rename_before_dirsync(env: &Env) -> Result<(), StackError> {
    crash_point!(env, "store-after-rename-before-dirsync");
    Ok(())
}

async fn stage_file(env: &Env, path: &str, bytes: &[u8]) -> Result<(), StackError> {
    env.disk.write(path, bytes).await?;
    // The moment between the write and its fsync: a crash here leaves tmp/ debris at most.
    crash_point!(env, "store-after-tmp-write-before-fsync");
    Ok(crate::fsync_file(env, path).await?)
}

/// Marks a retrieved message read, as Dovecot's POP3 server does on RETR: the file moves from
/// `new/NAME` to `cur/NAME:2,S` (maildir(5): `cur/` holds what the mail reader has seen, the
/// info suffix its flags), then `cur/` and `new/` are fsynced, so that the move survives a
/// crash (before the syncs, a crash may leave the message in either place, whole: recovery
/// indexes both). The UID, the checksum and the bytes stay; the index follows the file at once.
/// Returns the entry as it is now (unchanged when it is not in `new/`, or the move failed), or
/// the crash of the fail point `store-after-mark-read-rename` (between the rename and the syncs).
pub async fn mark_read(env: &Env, index: &Index, user: &str, uid: u64, entry: &Entry) -> Result<Entry, StackError> {
    let dir = mailbox_dir(user);
    let (new_dir, cur_dir) = (format!("{dir}/new"), format!("{dir}/cur"));
    let Some(name) = entry.file.strip_prefix(&format!("{new_dir}/")) else { return Ok(entry.clone()) };
    let to = format!("{cur_dir}/{}", mail::maildir::with_flags(name, &mail::maildir::SEEN.to_string()));
    if env.disk.rename(&entry.file, &to).await.is_err() {
        return Ok(entry.clone());
    }
    let moved = Entry { file: to.clone(), ..entry.clone() };
    let Some(uidvalidity) = index_follows(index, user, uid, &entry.file, &to) else { return Ok(moved) };
    after_mark_read_rename(env)?;
    let synced = env.disk.fsync_dir(&cur_dir).await.is_ok() & env.disk.fsync_dir(&new_dir).await.is_ok();
    if synced {
        env.journal.record(Event::StoreMarkedRead { mailbox: user.into(), uidvalidity, uid, from_file: entry.file.as_str().into(), to_file: to.into() });
    }
    Ok(moved)
}

/// The index follows a file the store renamed (`from` → `to`), if it still names it there.
/// Returns the mailbox's UIDVALIDITY; None when the mailbox is no longer indexed.
fn index_follows(index: &Index, user: &str, uid: u64, from: &str, to: &str) -> Option<u64> {
    let mut mailboxes = index.mailboxes.borrow_mut();
    let mailbox = mailboxes.get_mut(user)?;
    if let Some(indexed) = mailbox.messages.get_mut(&uid).filter(|indexed| indexed.file == from) {
        indexed.file = to.to_string();
    }
    Some(mailbox.uidvalidity)
}

/// Gives a message exactly these maildir flags (`flags`: letters such as `S`, `T`, `DS`), as an
/// IMAP STORE does: the file moves from `new/NAME` or `cur/NAME:2,OLD` to `cur/NAME:2,FLAGS`,
/// then `cur/` (and `new/` when it came from there) is fsynced, so the change survives a crash
/// as the other renames of the store do. The UID, the checksum and the bytes stay; the index
/// follows the file at once. Unchanged flags move nothing. Returns the entry as it is now, or
/// the disk's error (after a failed sync the index already names the new place, where the file
/// is, but the change may not be durable).
pub async fn set_flags(env: &Env, index: &Index, user: &str, uid: u64, entry: &Entry, flags: &str) -> Result<Entry, DiskError> {
    let dir = mailbox_dir(user);
    let (new_dir, cur_dir) = (format!("{dir}/new"), format!("{dir}/cur"));
    let from_new = entry.file.starts_with(&format!("{new_dir}/"));
    let name = entry.file.rsplit('/').next().unwrap_or_default();
    let to = format!("{cur_dir}/{}", mail::maildir::set_flags(name, flags));
    if to == entry.file {
        return Ok(entry.clone());
    }
    env.disk.rename(&entry.file, &to).await?;
    let moved = Entry { file: to.clone(), ..entry.clone() };
    let Some(uidvalidity) = index_follows(index, user, uid, &entry.file, &to) else { return Ok(moved) };
    env.disk.fsync_dir(&cur_dir).await?;
    if from_new {
        env.disk.fsync_dir(&new_dir).await?;
    }
    let flags = mail::maildir::flags(&to).to_string();
    env.journal.record(Event::StoreFlagsChanged(Box::new(history::StoreFlagsChanged { mailbox: user.into(), uidvalidity, uid, from_file: entry.file.as_str().into(), to_file: to.into(), flags: flags.into() })));
    Ok(moved)
}

fn after_mark_read_rename(env: &Env) -> Result<(), StackError> {
    crash_point!(env, "store-after-mark-read-rename");
    Ok(())
}

/// Takes the next UID and makes the new UIDNEXT durable before the UID is used, so no crash can
/// hand the same UID to another message. The caller holds the mailbox's lock.
async fn reserve_uid(env: &Env, index: &Index, user: &str, dir: &str) -> Result<(u64, u64), StackError> {
    let (uidvalidity, uid) = {
        let mut mailboxes = index.mailboxes.borrow_mut();
        let mailbox = mailboxes.get_mut(user).ok_or(StackError::Disk(DiskError::NotFound))?;
        let uid = mailbox.uidnext;
        mailbox.uidnext += 1;
        (mailbox.uidvalidity, uid)
    };
    write_uidlist(env, dir, uidvalidity, uid + 1).await?;
    Ok((uidvalidity, uid))
}
