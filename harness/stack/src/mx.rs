//! The MX: an SMTP server (RFC 5321) for its own domains, writing accepted mail to its durable
//! queue before it answers 250, and the queue runner beside it.
//!
//! Replies follow RFC 5321 §4.2 with RFC 3463 enhanced codes. A fault of its own storage is
//! always a 4xx (451 4.3.0, 452 4.3.1): the sender keeps the message and tries again.

use super::conn::{Conn, ConnError, Wait};
use super::net::{Accepted, Listener};
use super::queue::{self, QueuedMessage, RunnerConfig, INCOMING_DIR, QUEUE_DIR};
use super::wire::{self, Command, CommandError, DataDecoder, DataError, Reply};
use super::{Defect, Env, StackError, SMTP_PORT};
use crate::crash_point;
use disk::DiskError;
use history::{Event, Stage};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Duration;

/// What the MX's operator has told it to answer: the admin control of a real MX (Postfix's
/// `defer`/`reject` settings). The stack does not know why; an operator sets it during an outage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OperatorMode {
    Normal,
    /// 421 4.3.2 at the greeting: senders keep the mail and retry.
    TempFail,
    /// 550 5.2.1 at RCPT: senders bounce the mail at once (what was done in January 2023).
    Bounce,
}

#[derive(Clone, Debug)]
pub struct MxConfig {
    /// The operator's control; shared with whoever operates the MX.
    pub operator: Rc<std::cell::Cell<OperatorMode>>,
    pub hostname: String,
    pub domains: Vec<String>,
    /// Local parts that have a mailbox (the same in every local domain).
    pub users: BTreeSet<String>,
    /// The mailbox (one of `users`) that receives the mail for `postmaster` of every local domain
    /// and for the bare `<postmaster>`, which RFC 5321 §4.5.1 requires an MX to accept: the alias
    /// a real MTA ships (`postmaster: root`). The MX rewrites such a recipient to this mailbox.
    pub postmaster: String,
    /// Unix time (seconds) at which the journal's clock reads 0: the base of the dates the MX
    /// writes (the `Received:` field). The simulation passes its epoch, live mode the real time.
    pub epoch_unix_s: u64,
    pub max_message_bytes: usize,
    pub max_recipients: usize,
    /// At least 5 minutes (RFC 5321 §4.5.3.2.7): each read of the socket, while waiting for a
    /// command or inside one, and each read of a DATA body or BDAT chunk.
    pub idle_timeout: Duration,
    /// A command line must have arrived within this of its first octet, so that a client
    /// trickling an octet per idle period cannot keep a session with one line. None: no bound
    /// but `idle_timeout` (the simulation: its digests predate the bound).
    pub command_total_timeout: Option<Duration>,
    /// A whole DATA body, or a BDAT chunk, must have arrived within this of its start. None: no
    /// bound but `idle_timeout` per read (the simulation).
    pub data_total_timeout: Option<Duration>,
    /// Commands refused in one session as unrecognised, malformed or too long, after which the
    /// session gets 421 4.7.0 and is closed (Postfix's `smtpd_hard_error_limit`), so that a
    /// client cannot have garbage answered, and recorded, as fast as it sends it. None: no bound
    /// (the simulation: its peers send no garbage and its digests predate the bound).
    pub max_command_errors: Option<u32>,
    /// The waits a session gets while the MX is under stress (sessions at 80% of the limit),
    /// as Postfix's `${stress?…}` shortens its timeouts: slow, silent and trickling clients then
    /// give their slots back within seconds instead of holding every slot for minutes while
    /// honest senders are refused. None: the same waits under stress (the simulation).
    pub stress_waits: Option<StressWaits>,
    /// Sessions served at once; beyond it new connections get 421 4.7.0 and are closed.
    pub max_sessions: usize,
    /// Sessions from one client host at once (one address, whatever its ports); beyond it 421 4.7.0.
    pub max_sessions_per_client: usize,
    /// Files in the queue beyond which MAIL gets 452 4.3.1 (backpressure when the store is slow).
    pub max_queue_files: usize,
    /// Delay of the greeting while the MX is near its session limit (tarpitting).
    pub tarpit: Duration,
    pub runner: RunnerConfig,
}

/// Shorter waits under stress (see `MxConfig::stress_waits`).
#[derive(Clone, Debug)]
pub struct StressWaits {
    /// Each read of the socket.
    pub idle: Duration,
    /// A whole command line.
    pub command_total: Duration,
    /// A whole DATA body or BDAT chunk.
    pub data_total: Duration,
}

/// The MX host's software: recover, then serve SMTP and run the queue.
pub async fn run(env: Env, config: MxConfig) {
    let config = Rc::new(config);
    let gauge: queue::QueueGauge = Rc::new(std::cell::Cell::new(0));
    tokio::task::spawn_local(queue::run(env.clone(), config.runner.clone(), gauge.clone()));
    let load = Rc::new(Load { gauge, sessions: std::cell::Cell::new(0), per_client: RefCell::new(BTreeMap::new()) });
    let listener = match env.net.listen(SMTP_PORT).await {
        Ok(listener) => listener,
        Err(_) => return,
    };
    serve(env, config, listener, load).await;
}

/// What the MX knows about its own load.
struct Load {
    gauge: queue::QueueGauge,
    sessions: std::cell::Cell<usize>,
    per_client: RefCell<BTreeMap<String, usize>>,
}

impl Load {
    /// Takes a session slot for `peer`, or names the reply that refuses it.
    fn admit(&self, config: &MxConfig, peer: &str) -> Result<(), Reply> {
        if self.sessions.get() >= config.max_sessions {
            return Err(Reply::new(421, "4.7.0", "too many connections, try again later"));
        }
        let mut per_client = self.per_client.borrow_mut();
        let count = per_client.entry(client_of(peer)).or_default();
        if *count >= config.max_sessions_per_client {
            return Err(Reply::new(421, "4.7.0", "too many connections from your host, try again later"));
        }
        *count += 1;
        self.sessions.set(self.sessions.get() + 1);
        Ok(())
    }

    fn release(&self, peer: &str) {
        self.sessions.set(self.sessions.get().saturating_sub(1));
        let mut per_client = self.per_client.borrow_mut();
        let client = client_of(peer);
        if let Some(count) = per_client.get_mut(&client) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                // Forget the client: a map of every address ever seen would grow without bound.
                per_client.remove(&client);
            }
        }
    }

    fn stressed(&self, config: &MxConfig) -> bool {
        self.sessions.get() * 10 >= config.max_sessions * 8
    }

    fn queue_full(&self, config: &MxConfig) -> bool {
        self.gauge.get() >= config.max_queue_files
    }
}

async fn serve(env: Env, config: Rc<MxConfig>, listener: Box<dyn Listener>, load: Rc<Load>) {
    let mut session_number = 0u64;
    loop {
        let Ok(Accepted { stream, peer, conn: wire }) = listener.accept().await else { continue };
        session_number += 1;
        let id = format!("mx-{}-{session_number}", env.journal.now_ms());
        let mut conn = Conn::new(stream);
        if let Err(reply) = load.admit(&config, &peer) {
            env.journal.record(Event::MxRefusal { session: id.into(), stage: Stage::Greeting, reply: reply.summary().into() });
            let _ = conn.send(&reply.encode()).await;
            continue;
        }
        let (env, config, load) = (env.clone(), config.clone(), load.clone());
        tokio::task::spawn_local(async move {
            if load.stressed(&config) {
                tokio::time::sleep(config.tarpit).await;
            }
            let session = Session { env: &env, config: &config, load: &load, id, wire, peer: peer.clone(), helo: None, txn: None, chunks: Chunks::default(), accepted: 0 };
            let _ = session.run(conn).await;
            load.release(&peer);
        });
    }
}

struct Transaction {
    from: String,
    /// The mailboxes to deliver to, each once, in RCPT order.
    rcpts: Vec<String>,
    /// The recipients as the client named them (lower-cased, bare `postmaster` completed with
    /// the primary domain), each once: a `Received: ... for <addr>` clause names the only one.
    named: Vec<String>,
    /// The latest RCPT was refused: what the planted `data-after-refused-last-rcpt` looks at.
    last_rcpt_refused: bool,
}

struct Session<'a> {
    env: &'a Env,
    config: &'a MxConfig,
    load: &'a Load,
    id: String,
    /// The network's name of the connection, for the records A1 lays beside the wire's.
    wire: String,
    /// The client as the listener named it: a host name, or an address.
    peer: String,
    /// The name the client gave in EHLO or HELO, and the protocol that makes ("ESMTP", "SMTP").
    helo: Option<(String, &'static str)>,
    txn: Option<Transaction>,
    /// The BDAT chunks of the open transaction.
    chunks: Chunks,
    /// Messages this session has queued: part of each queue file's name.
    accepted: u32,
}

/// A message arriving in BDAT chunks (RFC 3030), bounded by the maximum message size.
#[derive(Default)]
struct Chunks {
    bytes: Vec<u8>,
    /// The chunks outgrew the maximum size: read and dropped, the transaction will be refused.
    too_big: bool,
}

impl Session<'_> {
    async fn run(mut self, mut conn: Conn) -> Result<(), StackError> {
        if self.config.operator.get() == OperatorMode::TempFail {
            self.send(&mut conn, Stage::Greeting, Reply::new(421, "4.3.2", "mail system temporarily unavailable, try again later")).await;
            return Ok(());
        }
        let greeting = Reply::new(220, "", &format!("{} ESMTP mailchaos", self.config.hostname));
        if conn.send(&greeting.encode()).await.is_err() {
            return Ok(());
        }
        let mut errors = 0u32;
        loop {
            let line = match conn.read_line(wire::MAX_COMMAND_LINE - 2, self.command_wait()).await {
                Ok(line) => line,
                Err(ConnError::TooLong) => {
                    if !self.refuse_command(&mut conn, &mut errors, Reply::new(500, "5.5.6", "line too long")).await {
                        return Ok(());
                    }
                    continue;
                }
                Err(ConnError::Timeout) => {
                    self.send(&mut conn, Stage::Other, Reply::new(421, "4.4.2", "idle timeout")).await;
                    return Ok(());
                }
                Err(_) => return Ok(()),
            };
            let command = wire::parse_command(&line);
            let quit = command == Ok(Command::Quit);
            let (stage, reply) = match command {
                Ok(Command::Data) => match self.data(&mut conn).await? {
                    Some(staged_reply) => staged_reply,
                    None => return Ok(()),
                },
                Ok(Command::Bdat { size, last }) => match self.bdat(&mut conn, size, last).await? {
                    Some(staged_reply) => staged_reply,
                    None => return Ok(()),
                },
                Ok(command) => self.command(command),
                Err(error) => {
                    if !self.refuse_command(&mut conn, &mut errors, command_error_reply(error)).await {
                        return Ok(());
                    }
                    continue;
                }
            };
            if !self.send(&mut conn, stage, reply).await || quit {
                return Ok(());
            }
        }
    }

    /// Refuses a command that could not be read or parsed, counting it in ERRORS; past
    /// `max_command_errors` the session is told 421 instead. False: the session is over.
    async fn refuse_command(&self, conn: &mut Conn, errors: &mut u32, reply: Reply) -> bool {
        *errors += 1;
        if self.config.max_command_errors.is_some_and(|max| *errors > max) {
            self.send(conn, Stage::Other, Reply::new(421, "4.7.0", "too many errors, closing the session")).await;
            return false;
        }
        self.send(conn, Stage::Other, reply).await
    }

    fn command_wait(&self) -> Wait {
        match self.stress_waits() {
            Some(stress) => Wait { idle: stress.idle, total: Some(stress.command_total) },
            None => Wait { idle: self.config.idle_timeout, total: self.config.command_total_timeout },
        }
    }

    fn data_wait(&self) -> Wait {
        match self.stress_waits() {
            Some(stress) => Wait { idle: stress.idle, total: Some(stress.data_total) },
            None => Wait { idle: self.config.idle_timeout, total: self.config.data_total_timeout },
        }
    }

    /// The stress waits, when the MX has them and is under stress now.
    fn stress_waits(&self) -> Option<&StressWaits> {
        self.config.stress_waits.as_ref().filter(|_| self.load.stressed(self.config))
    }

    /// Sends a reply, recording refusals; false when the connection is gone.
    async fn send(&self, conn: &mut Conn, stage: Stage, reply: Reply) -> bool {
        if reply.class() >= 4 && stage != Stage::DataEnd {
            self.env.journal.record(Event::MxRefusal { session: self.id.as_str().into(), stage, reply: reply.summary().into() });
        }
        conn.send(&reply.encode()).await.is_ok()
    }

    fn command(&mut self, command: Command) -> (Stage, Reply) {
        match command {
            Command::Ehlo(name) => {
                self.helo = Some((name, "ESMTP"));
                self.txn = None;
                self.chunks = Chunks::default();
                let lines = [
                    self.config.hostname.clone(),
                    "PIPELINING".into(),
                    "CHUNKING".into(),
                    format!("SIZE {}", self.config.max_message_bytes),
                    "8BITMIME".into(),
                    "ENHANCEDSTATUSCODES".into(),
                ];
                (Stage::Ehlo, Reply { code: 250, enhanced: None, lines: lines.to_vec() })
            }
            Command::Helo(name) => {
                self.helo = Some((name, "SMTP"));
                self.txn = None;
                (Stage::Ehlo, Reply::new(250, "", &self.config.hostname))
            }
            Command::Lhlo(_) => (Stage::Ehlo, Reply::new(500, "5.5.1", "this is an SMTP server, not LMTP")),
            Command::Mail { from, params } => (Stage::Mail, self.mail(from, &params)),
            Command::Rcpt { to, params } => {
                let reply = self.rcpt(&to, &params);
                if let Some(txn) = self.txn.as_mut() {
                    txn.last_rcpt_refused = reply.class() != 2;
                }
                (Stage::Rcpt, reply)
            }
            Command::Rset => {
                self.txn = None;
                self.chunks = Chunks::default();
                (Stage::Other, Reply::new(250, "2.0.0", "reset"))
            }
            Command::Noop => (Stage::Other, Reply::new(250, "2.0.0", "ok")),
            Command::Help => (Stage::Other, Reply::new(214, "2.0.0", "see RFC 5321")),
            Command::Vrfy(_) => (Stage::Other, Reply::new(252, "2.1.5", "cannot VRFY user, but will accept message")),
            Command::Quit => (Stage::Quit, Reply::new(221, "2.0.0", "bye")),
            Command::Data | Command::Bdat { .. } => unreachable!("DATA and BDAT are handled by the session loop"),
        }
    }

    fn mail(&mut self, from: String, params: &[(String, Option<String>)]) -> Reply {
        if self.helo.is_none() {
            return Reply::new(503, "5.5.1", "send EHLO or HELO first");
        }
        if self.txn.is_some() {
            return Reply::new(503, "5.5.1", "nested MAIL command");
        }
        if self.load.queue_full(self.config) && !self.env.defects.has(Defect::AcceptBeyondCapacity) {
            // Backpressure: the sender keeps the message until the queue has room (RFC 5321 §4.5.3.1.10).
            return Reply::new(452, "4.3.1", "insufficient system storage, try again later");
        }
        for (key, value) in params {
            match (key.as_str(), value.as_deref()) {
                // RFC 1870: size-value = 1*20DIGIT; `str::parse` alone would also take "+5"
                // (the planted bug `mail-size-sign-accepted` trusts it).
                ("SIZE", Some(size)) if !size.bytes().all(|b| b.is_ascii_digit()) && !self.env.defects.has(Defect::MailSizeSignAccepted) => {
                    return Reply::new(501, "5.5.4", "invalid SIZE parameter: decimal digits only");
                }
                // Digits that overflow are a size beyond any maximum.
                ("SIZE", Some(size)) => match size.parse::<usize>() {
                    Ok(size) if size <= self.config.max_message_bytes => {}
                    _ => return Reply::new(552, "5.3.4", "message size exceeds fixed maximum message size"),
                },
                ("BODY", Some(body)) if body.eq_ignore_ascii_case("8BITMIME") || body.eq_ignore_ascii_case("7BIT") => {}
                _ => return Reply::new(555, "5.5.4", "unsupported MAIL parameter"),
            }
        }
        self.txn = Some(Transaction { from, rcpts: Vec::new(), named: Vec::new(), last_rcpt_refused: false });
        Reply::new(250, "2.1.0", "sender ok")
    }

    fn rcpt(&mut self, to: &str, params: &[(String, Option<String>)]) -> Reply {
        if self.txn.is_none() {
            return Reply::new(503, "5.5.1", "need MAIL before RCPT");
        }
        // None of the extensions we offer defines a RCPT parameter (RFC 5321 §4.1.1.3).
        // The planted bug `rcpt-params-unchecked` looks at them no more than at a comment.
        if let Some((key, _)) = params.first().filter(|_| !self.env.defects.has(Defect::RcptParamsUnchecked)) {
            return Reply::new(555, "5.5.4", &format!("unsupported RCPT parameter {key}"));
        }
        if self.config.operator.get() == OperatorMode::Bounce {
            return Reply::new(550, "5.2.1", "mailbox unavailable");
        }
        let (named, mailbox) = match self.resolve(to) {
            Ok(resolved) => resolved,
            Err(reply) => return reply,
        };
        let twice = self.env.defects.has(Defect::DupRcptDeliveredTwice);
        let Some(txn) = self.txn.as_mut() else {
            return Reply::new(503, "5.5.1", "need MAIL before RCPT");
        };
        // A recipient named twice (or postmaster and its mailbox) gets one copy: accepted again,
        // not added again. Unless the planted bug is on.
        let duplicate = txn.rcpts.contains(&mailbox) && !twice;
        if !duplicate && txn.rcpts.len() >= self.config.max_recipients {
            return Reply::new(452, "4.5.3", "too many recipients");
        }
        if !txn.named.contains(&named) {
            txn.named.push(named);
        }
        if duplicate {
            return Reply::new(250, "2.1.5", "recipient ok (already named: one copy is delivered)");
        }
        txn.rcpts.push(mailbox);
        Reply::new(250, "2.1.5", "recipient ok")
    }

    /// The recipient as named (lower-cased; a bare postmaster completed with the primary domain)
    /// and the local mailbox address it is delivered to, or the refusal.
    fn resolve(&self, to: &str) -> Result<(String, String), Reply> {
        let address = to.to_ascii_lowercase();
        let (local, domain) = address.rsplit_once('@').unwrap_or((address.as_str(), ""));
        // The planted bug `postmaster-refused`: postmaster is a user like any other.
        let alias = !self.env.defects.has(Defect::PostmasterRefused);
        // RFC 5321 §4.5.1: <postmaster>, without a domain, is always accepted.
        let domain = match (local, domain) {
            ("postmaster", "") if alias => self.config.domains.first().map(|primary| primary.to_ascii_lowercase()).unwrap_or_default(),
            _ => domain.to_string(),
        };
        if domain.is_empty() || !self.config.domains.iter().any(|own| own.eq_ignore_ascii_case(&domain)) {
            return Err(Reply::new(550, "5.7.1", "relaying denied"));
        }
        let user = if local == "postmaster" && alias { self.config.postmaster.to_ascii_lowercase() } else { local.to_string() };
        if !self.config.users.contains(&user) {
            return Err(Reply::new(550, "5.1.1", "no such user here"));
        }
        Ok((format!("{local}@{domain}"), format!("{user}@{domain}")))
    }

    /// DATA: 354, the message, then one reply for the whole transaction (RFC 5321 §4.1.1.4).
    /// None when the connection is gone.
    async fn data(&mut self, conn: &mut Conn) -> Result<Option<(Stage, Reply)>, StackError> {
        if !self.chunks.bytes.is_empty() || self.chunks.too_big {
            // RFC 3030 §2: DATA may not follow BDAT in one transaction.
            return Ok(Some((Stage::Data, Reply::new(503, "5.5.1", "DATA after BDAT"))));
        }
        let Some(txn) = self.txn.take() else {
            return Ok(Some((Stage::Data, Reply::new(503, "5.5.1", "need MAIL before DATA"))));
        };
        // The planted bug judges the transaction by its last RCPT alone (RFC 5321 §3.3: DATA
        // goes on once any recipient was accepted).
        let last_only = self.env.defects.has(Defect::DataAfterRefusedLastRcpt) && txn.last_rcpt_refused;
        if txn.rcpts.is_empty() || last_only {
            self.txn = Some(txn);
            return Ok(Some((Stage::Data, Reply::new(554, "5.5.1", "no valid recipients"))));
        }
        if !self.send(conn, Stage::Data, Reply::new(354, "", "end data with <CR><LF>.<CR><LF>")).await {
            return Ok(None);
        }
        let mut decoder = DataDecoder::new(self.config.max_message_bytes);
        if self.env.defects.has(Defect::StuffingDotCounted) {
            decoder = decoder.counting_stuffing_dots();
        }
        // RFC 5321 §4.5.3.2.5: the server waits at least 3 minutes for each data block.
        // Plus a bound on the whole body (`data_total_timeout`), whatever the pace of its blocks.
        if conn.read_data(&mut decoder, self.data_wait()).await.is_err() {
            return Ok(None);
        }
        let reply = match decoder.finish() {
            Ok(message) => self.accept(&txn, message).await?,
            Err(DataError::TooBig) => Reply::new(552, "5.3.4", "message too big"),
            // One rule, told to the sender: CRLF or a bare LF ends a line; a stuffing dot is not text.
            Err(DataError::LineTooLong) => {
                Reply::new(500, "5.5.2", "line too long in message: over 998 octets of text before its CRLF or bare LF")
            }
        };
        Ok(Some((Stage::DataEnd, reply)))
    }

    /// BDAT: read the chunk whatever happens (RFC 3030 §2: the octets follow the command),
    /// keep it while the transaction is valid and within the size limit, and on LAST queue the
    /// message. None when the connection is gone.
    async fn bdat(&mut self, conn: &mut Conn, size: usize, last: bool) -> Result<Option<(Stage, Reply)>, StackError> {
        let open = self.txn.as_ref().is_some_and(|txn| !txn.rcpts.is_empty());
        let fits = self.chunks.bytes.len().saturating_add(size) <= self.config.max_message_bytes;
        let keep = open && fits && !self.chunks.too_big;
        // RFC 5321 §4.5.3.2.5's data block timeout applies to each chunk as a whole.
        let wait = self.data_wait();
        if conn.read_exact(size, keep.then_some(&mut self.chunks.bytes), wait).await.is_err() {
            return Ok(None);
        }
        if !open {
            self.chunks = Chunks::default();
            // RFC 3030 §2: a refused BDAT fails the transaction. Kept open (MAIL accepted, every
            // RCPT refused), it made the next pipelined transaction's MAIL a "nested MAIL" and
            // took that transaction's RCPTs and chunks under the failed one's envelope (found
            // by swarm: A8 on the clean stack).
            self.txn = None;
            return Ok(Some((Stage::Data, Reply::new(503, "5.5.1", "need MAIL and a valid RCPT before BDAT"))));
        }
        self.chunks.too_big |= !keep;
        if !last {
            return Ok(Some((Stage::Data, Reply::new(250, "2.0.0", &format!("{size} octets received")))));
        }
        let chunks = std::mem::take(&mut self.chunks);
        let txn = self.txn.take().expect("an open transaction was checked above");
        if chunks.too_big {
            return Ok(Some((Stage::DataEnd, Reply::new(552, "5.3.4", "message too big"))));
        }
        let reply = self.accept(&txn, chunks.bytes).await?;
        Ok(Some((Stage::DataEnd, reply)))
    }

    /// The name of the next queue file. Unique within the MX's life: the clock alone does not
    /// separate two messages of one session (a pipelined flight arrives within one
    /// millisecond), so the session's own count of messages is part of it; after a restart the
    /// clock has moved on.
    fn queue_name(&mut self, now_ms: u64) -> String {
        let session = self.id.rsplit('-').next().unwrap_or("0");
        if self.env.defects.has(Defect::QueueNamePerMs) {
            // The planted bug: the millisecond and the session only.
            return format!("{now_ms:012}-{session}");
        }
        self.accepted += 1;
        format!("{now_ms:012}-{session}-{}", self.accepted)
    }

    /// Queues the message durably, then names the reply for end of data.
    async fn accept(&mut self, txn: &Transaction, message: Vec<u8>) -> Result<Reply, StackError> {
        let now_ms = self.env.journal.now_ms();
        let name = self.queue_name(now_ms);
        let msg = mail::message::message_id(&message).unwrap_or_else(|| format!("<none>{name}"));
        let mut body = self.received(txn, &name, now_ms).into_bytes();
        body.extend_from_slice(&message);
        let queued = QueuedMessage { msg: msg.clone(), from: txn.from.clone(), arrived_ms: now_ms, rcpts: txn.rcpts.clone(), body };
        let (queue_file, result) = if self.load.queue_full(self.config) && self.env.defects.has(Defect::AcceptBeyondCapacity) {
            // The planted bug: no room, so the message is acknowledged and silently dropped.
            (None, Ok(()))
        } else {
            self.enqueue(&name, &queued).await
        };
        if result.is_ok() && queue_file.is_some() {
            self.load.gauge.set(self.load.gauge.get() + 1);
        }
        let reply = match result {
            Ok(()) => Reply::new(250, "2.0.0", &format!("Ok: queued as {name}")),
            Err(StackError::CrashPoint(point)) => return Err(StackError::CrashPoint(point)),
            Err(StackError::Disk(error)) => storage_error_reply(error, self.env.defects.has(Defect::BounceOnStorageError)),
        };
        let claim = Event::MxDataEnd(Box::new(history::MxDataEnd { session: self.id.as_str().into(), conn: self.wire.as_str().into(), msg: msg.into(), rcpts: txn.rcpts.clone(), queue_file: queue_file.map(Into::into), reply: reply.summary().into() }));
        let log_late = reply.class() == 2 && self.env.defects.has(Defect::AckLoggedLate);
        let claim = if log_late {
            Some(claim)
        } else {
            self.env.journal.record(claim);
            None
        };
        if reply.class() == 2 {
            // The 250 is decided and recorded; a crash here loses only the reply, which the
            // sender sees as a cut connection (a justified duplicate later, A13).
            crash_point!(self.env, "mx-after-fsync-before-250");
        }
        if reply.class() == 2 && (self.env.defects.has(Defect::AckBeforeFsync) || log_late) {
            // The planted bugs: the reply goes out first, the syncs follow "later"; and with
            // `ack-logged-late` the log says the 250 came after them.
            let path = format!("{QUEUE_DIR}/{name}");
            let env = self.env.clone();
            let later = Duration::from_secs(if log_late { 1 } else { 30 });
            tokio::task::spawn_local(async move {
                tokio::time::sleep(later).await;
                let _ = env.disk.fsync(&path).await;
                let _ = env.disk.fsync_dir(QUEUE_DIR).await;
                if let Some(claim) = claim {
                    env.journal.record(claim);
                }
            });
        }
        Ok(reply)
    }

    /// The trace field (RFC 5321 §4.4): the client's HELO name and address, this host, the
    /// protocol, the queue id, the recipient only when there is one (naming one of several in
    /// every copy would show each recipient the others, the Bcc ones included), and the date on
    /// the simulated clock.
    fn received(&self, txn: &Transaction, id: &str, now_ms: u64) -> String {
        let (helo, protocol) = self.helo.as_ref().map_or(("unknown", "ESMTP"), |(name, protocol)| (name.as_str(), *protocol));
        let date = mail::message::rfc5322_date(self.config.epoch_unix_s + now_ms / 1000);
        let for_clause = match txn.named.as_slice() {
            [only] => format!("\r\n\tfor <{only}>"),
            // The planted bug `received-for-first-rcpt`: the first recipient in every copy.
            [first, ..] if self.env.defects.has(Defect::ReceivedForFirstRcpt) => format!("\r\n\tfor <{first}>"),
            _ => String::new(),
        };
        format!("Received: from {helo} ({})\r\n\tby {} with {protocol} id {id}{for_clause};\r\n\t{date}\r\n", tcp_info(&self.peer), self.config.hostname)
    }

    /// Writes `incoming/NAME`, fsyncs it, renames it to `queue/NAME` and fsyncs the directory.
    /// Returns the queue file that may hold the message (for the history) and the outcome.
    async fn enqueue(&self, name: &str, queued: &QueuedMessage) -> (Option<String>, Result<(), StackError>) {
        let disk = &self.env.disk;
        let bytes = queued.encode();
        let final_path = format!("{QUEUE_DIR}/{name}");
        if self.env.defects.has(Defect::DeliverAfterRefusal) {
            // The planted bug: written straight into the queue and never unlinked on error.
            let result = async {
                disk.write(&final_path, &bytes).await?;
                disk.fsync(&final_path).await?;
                disk.fsync_dir(QUEUE_DIR).await?;
                Ok(())
            };
            return (Some(final_path.clone()), result.await);
        }
        let incoming = format!("{INCOMING_DIR}/{name}");
        let skip_syncs = self.env.defects.has(Defect::AckBeforeFsync) || self.env.defects.has(Defect::AckLoggedLate);
        let staged = async {
            disk.write(&incoming, &bytes).await?;
            crash_point!(self.env, "mx-after-queue-write");
            if !skip_syncs {
                crate::fsync_file(&self.env, &incoming).await?;
            }
            Ok::<(), StackError>(())
        };
        if let Err(error) = staged.await {
            let _ = disk.remove(&incoming).await;
            return (None, Err(error));
        }
        if let Err(error) = disk.rename(&incoming, &final_path).await {
            let _ = disk.remove(&incoming).await;
            return (None, Err(error.into()));
        }
        if !skip_syncs {
            if let Err(error) = disk.fsync_dir(QUEUE_DIR).await {
                // Take the message back out of the queue: we are about to refuse it, and the
                // runner must never deliver a refused copy (A4).
                if disk.rename(&final_path, &incoming).await.is_err() {
                    let _ = disk.remove(&final_path).await;
                }
                return (Some(final_path), Err(error.into()));
            }
        }
        (Some(final_path), Ok(()))
    }
}

/// A fault of the MX's own storage: 4xx, so that the sender keeps the message (A12).
fn storage_error_reply(error: DiskError, planted_bounce: bool) -> Reply {
    if planted_bounce {
        return Reply::new(554, "5.3.0", "storage error");
    }
    match error {
        DiskError::NoSpace => Reply::new(452, "4.3.1", "insufficient system storage"),
        _ => Reply::new(451, "4.3.0", "local error in processing, try again later"),
    }
}

/// The client a session counts against: the address alone when the listener gave "ip:port"
/// (live mode: each connection has a port of its own, so keying on it let one host take every
/// slot), else the name it gave (the simulated network's host names).
fn client_of(peer: &str) -> String {
    match peer.parse::<std::net::SocketAddr>() {
        Ok(address) => address.ip().to_string(),
        Err(_) => peer.to_string(),
    }
}

/// The client's address for a `Received:` field: an address literal when the listener gave an
/// address (live mode: "ip:port"), else the name it gave (the simulated network's host names).
fn tcp_info(peer: &str) -> String {
    let ip = peer.parse::<std::net::SocketAddr>().map(|address| address.ip()).or_else(|_| peer.parse::<std::net::IpAddr>());
    match ip {
        Ok(std::net::IpAddr::V4(ip)) => format!("[{ip}]"),
        Ok(std::net::IpAddr::V6(ip)) => format!("[IPv6:{ip}]"),
        Err(_) => peer.to_string(),
    }
}

fn command_error_reply(error: CommandError) -> Reply {
    match error {
        CommandError::TooLong => Reply::new(500, "5.5.6", "line too long"),
        CommandError::Unrecognized => Reply::new(500, "5.5.2", "command not recognized"),
        CommandError::Syntax(what) => Reply::new(501, "5.5.4", &format!("syntax error: {what}")),
    }
}
