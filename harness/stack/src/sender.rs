//! A remote provider's sending MTA: many queued messages as tasks inside one host, each
//! delivered to the MX over SMTP and retried by the provider's policy.
//!
//! Per recipient: 2xx at end of data → delivered; 5xx → bounced at once (A8); 4xx, a refused
//! or cut connection, or a timeout → retried (A5) until the queue lifetime runs out, then a
//! failure DSN (A7). DSNs go out with MAIL FROM:<> and are never sent for a message whose
//! reverse-path is <> (A9, RFC 5321 §6.1).

use super::conn::Conn;
use mail::message::{self, DsnKind, DsnRecipient, DsnRequest};
use mail::policy::RetryPolicy;
use super::wire::{self, Reply, ReplyParser};
use super::{Defect, Env, SMTP_PORT};
use history::{Event, InvalidParam, Outcome, Stage, Text};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// RFC 5321 §4.5.3.2 client timeouts.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);
const GREETING_TIMEOUT: Duration = Duration::from_secs(300);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);
const DATA_INIT_TIMEOUT: Duration = Duration::from_secs(120);
const DATA_END_TIMEOUT: Duration = Duration::from_secs(600);
/// Attempts per message, whatever the policy says: a bound against runaway loops.
const MAX_ATTEMPTS: u32 = 1000;

#[derive(Clone, Debug)]
pub struct PlannedMessage {
    pub at_ms: u64,
    /// Its name in every record about it (shared, not copied, by each).
    pub msg: Text,
    /// "" for the null reverse-path <>.
    pub from: String,
    pub rcpts: Vec<String>,
    /// Recipients (of `rcpts`) the client names a second time in the same transaction, as a
    /// client that merges To and Cc does; the MX must accept them once.
    pub repeated_rcpts: Vec<String>,
    /// A parameter this client gets wrong on MAIL or on one RCPT (invalid input real clients
    /// send); the MX must refuse that command, and the sender takes the 5xx as final.
    pub invalid_param: Option<InvalidParam>,
    pub bytes: Rc<Vec<u8>>,
    /// Messages of one provider with the same session number travel together: one SMTP
    /// session carries them one transaction after another, as an MTA with a connection cache
    /// does with mail queued for the same destination.
    pub session: u32,
}

#[derive(Clone, Debug)]
pub struct ProviderConfig {
    pub hostname: String,
    /// The provider's mail domain: its receiving MX (`inbound`) takes mail for it.
    pub domain: String,
    pub mx_host: String,
    pub policy: RetryPolicy,
    /// The factor the policy's durations were scaled by (recorded for the checkers).
    pub time_scale: f64,
    /// SMTP connections open at once from this provider.
    pub max_connections: usize,
    /// Send with BDAT (RFC 3030 CHUNKING) when the MX offers it, every transaction of a
    /// session pipelined into one flight (RFC 2920), as large providers do.
    pub chunking: bool,
    /// Unix time (seconds) at which the journal's clock reads 0: the base of DSN dates.
    pub epoch_unix_s: u64,
    pub plan: Vec<PlannedMessage>,
}

/// Transactions one session carries at most: a bound on a batch, whatever the plan says.
pub const MAX_MESSAGES_PER_SESSION: usize = 100;

/// The provider host's software: one task per planned session of messages.
pub async fn run(env: Env, config: ProviderConfig) {
    let config = Rc::new(config);
    let policy = &config.policy;
    env.journal.record(Event::SenderPolicy {
        policy: policy.name.as_str().into(),
        time_scale: config.time_scale,
        min_interval_s: policy.min_interval_s(),
        lifetime_s: policy.lifetime_s,
        retries: policy.retries,
        delay_notice_s: policy.delay_notice_s,
    });
    tokio::task::spawn_local(super::inbound::run(env.clone(), config.hostname.clone(), config.domain.clone()));
    let provider = Rc::new(Provider { connections: Semaphore::new(config.max_connections.max(1)), failing_since_ms: Cell::new(None), suspended: RefCell::new(None) });
    let mut tasks = Vec::new();
    for batch in batches(&config.plan) {
        let (env, config, provider) = (env.clone(), config.clone(), provider.clone());
        tasks.push(tokio::task::spawn_local(async move {
            let at_ms = batch.iter().map(|planned| planned.at_ms).max().unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(at_ms.saturating_sub(env.journal.now_ms()))).await;
            // Boxed: a task waits here from the start of the run, and a surge plans 20,000 of
            // them; unboxed, each would hold delivery's whole state (about 2 KB) while it sleeps.
            Box::pin(deliver(&env, &config, &provider, batch)).await;
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    std::future::pending::<()>().await;
}

/// The plan's messages grouped by session number, in plan order, at most
/// `MAX_MESSAGES_PER_SESSION` to a group.
fn batches(plan: &[PlannedMessage]) -> Vec<Vec<PlannedMessage>> {
    let mut groups: Vec<Vec<PlannedMessage>> = Vec::new();
    let mut index_of: std::collections::BTreeMap<u32, usize> = std::collections::BTreeMap::new();
    for planned in plan {
        match index_of.get(&planned.session) {
            Some(&index) if groups[index].len() < MAX_MESSAGES_PER_SESSION => groups[index].push(planned.clone()),
            _ => {
                index_of.insert(planned.session, groups.len());
                groups.push(vec![planned.clone()]);
            }
        }
    }
    groups
}

/// What the tasks of one provider share.
struct Provider {
    connections: Semaphore,
    /// Since when every attempt to the MX has failed transiently (None: the last one worked).
    failing_since_ms: Cell<Option<u64>>,
    /// The destination refused a session as a whole (no connection, a 4xx greeting): until
    /// this time no message is tried, each is deferred to its next retry with this error.
    suspended: RefCell<Option<(u64, String)>>,
}

impl Provider {
    /// Why the destination is not tried now, while a site failure suspends it.
    fn suspension(&self, now_ms: u64) -> Option<String> {
        let mut suspended = self.suspended.borrow_mut();
        match &*suspended {
            Some((until_ms, error)) if now_ms < *until_ms => Some(error.clone()),
            _ => {
                *suspended = None;
                None
            }
        }
    }
}

#[derive(Debug)]
enum Verdict {
    Delivered(String),
    Permanent(String),
    Transient(String),
}

/// One message's delivery state across the attempts of its session.
struct Pending<'a> {
    planned: &'a PlannedMessage,
    rcpts: Vec<String>,
    retried_permanent: Vec<String>,
    last_error: String,
    delay_notified: bool,
}

/// Delivers a batch of messages submitted together, retrying by the provider's policy. The
/// messages share their attempts (one session each time) and so their schedule, which the
/// policy computes from the age of the mail: all of a batch are of one age.
async fn deliver(env: &Env, config: &ProviderConfig, provider: &Provider, batch: Vec<PlannedMessage>) {
    for planned in &batch {
        env.journal.record(Event::Submit(Box::new(history::Submit {
            msg: planned.msg.clone(),
            from: planned.from.as_str().into(),
            rcpts: planned.rcpts.clone(),
            digest: message::content_digest(&planned.bytes).into(),
            size: planned.bytes.len() as u64,
            longest_line: message::longest_line(&planned.bytes) as u64,
            invalid_param: planned.invalid_param.clone(),
        })));
    }
    let policy = &config.policy;
    let started_ms = env.journal.now_ms();
    let age_s = || (env.journal.now_ms() - started_ms) as f64 / 1000.0;
    if let (Some(cutoff_s), Some(since_ms)) = (policy.dead_host_cutoff_s, provider.failing_since_ms.get()) {
        // Exim-style: a destination that has failed for long enough gets no new attempts.
        if (env.journal.now_ms() - since_ms) as f64 / 1000.0 >= cutoff_s {
            for planned in &batch {
                let failed: Vec<(String, String)> = planned.rcpts.iter().map(|rcpt| (rcpt.clone(), "destination host has been failing; not tried".to_string())).collect();
                give_up(env, config, planned, &failed, Outcome::Expired, started_ms).await;
            }
            return;
        }
    }
    let mut pending: Vec<Pending> = batch
        .iter()
        .map(|planned| Pending { planned, rcpts: planned.rcpts.clone(), retried_permanent: Vec::new(), last_error: String::new(), delay_notified: false })
        .collect();
    let (mut stage, mut attempts_in_stage) = (0usize, 0u32);
    // Attempts made on the wire; the loop also counts the turns a suspended destination skipped.
    let mut attempt = 0u32;
    for _turn in 1..=MAX_ATTEMPTS {
        let turn = {
            let Ok(_permit) = provider.connections.acquire().await else { return };
            // A message's first attempt is always made: a sender never gives up on mail it has
            // not tried once (A7), and a fresh message is the destination's probe.
            let suspension = provider.suspension(env.journal.now_ms());
            let suspended = suspension.is_some();
            match suspension.filter(|_| attempt > 0) {
                Some(error) => Turn::Skipped(error),
                None => {
                    attempt += 1;
                    let tries: Vec<Try> = pending
                        .iter()
                        .map(|p| Try { planned: p.planned, rcpts: p.rcpts.clone(), session: Text::from(format!("{}-{}-{attempt}", config.hostname, p.planned.msg)), attempt })
                        .collect();
                    let (verdicts, refused) = try_once(env, config, &tries).await;
                    match refused {
                        // Only a probe (an attempt made while the destination was not suspended)
                        // suspends it: fresh mail tried during a suspension does not prolong it.
                        Some(error) if !suspended => {
                            let until_ms = env.journal.now_ms() + (policy.min_interval_s() * 1000.0) as u64;
                            *provider.suspended.borrow_mut() = Some((until_ms, format!("delivery temporarily suspended: {error}")));
                        }
                        Some(_) => {}
                        // The destination talked: whatever came of the mail, it is alive.
                        None => *provider.suspended.borrow_mut() = None,
                    }
                    Turn::Tried(verdicts)
                }
            }
        };
        let (skipped, mut tried) = match turn {
            Turn::Skipped(error) => (Some(error), None),
            Turn::Tried(verdicts) => (None, Some(verdicts.into_iter())),
        };
        let mut all_transient = true;
        for state in pending.iter_mut() {
            let failed = match (&skipped, tried.as_mut().and_then(Iterator::next)) {
                (Some(error), _) => settle_skipped(env, state, error),
                (None, verdicts) => settle(env, state, verdicts.unwrap_or_default()),
            };
            all_transient &= !state.rcpts.is_empty() && failed.is_empty();
            give_up(env, config, state.planned, &failed, Outcome::Bounced, started_ms).await;
        }
        let now_ms = env.journal.now_ms();
        provider.failing_since_ms.set(if all_transient { provider.failing_since_ms.get().or(Some(now_ms)) } else { None });
        pending.retain(|state| !state.rcpts.is_empty());
        if pending.is_empty() || !policy.retries {
            break;
        }
        // The clock stands still between awaits: the reading above serves until the sleep.
        let age = (now_ms - started_ms) as f64 / 1000.0;
        let index = policy.stage_index(age);
        attempts_in_stage = if index == stage { attempts_in_stage + 1 } else { 1 };
        stage = index;
        let delay = if env.defects.has(Defect::RetryWithoutBackoff) {
            Duration::from_millis((60_000.0 * config.time_scale) as u64).max(Duration::from_secs(1))
        } else if env.defects.has(Defect::RetryScheduleTooEarly) {
            // The planted bug: half the policy's wait, but never below the stage's first interval.
            (policy.next_delay(age, attempts_in_stage) / 2).max(policy.next_delay(age, 1))
        } else {
            policy.next_delay(age, attempts_in_stage)
        };
        tokio::time::sleep(delay).await;
        let age = age_s();
        for state in pending.iter_mut() {
            if !state.delay_notified && policy.delay_notice_s.is_some_and(|notice_s| age >= notice_s) {
                state.delay_notified = true;
                let delayed: Vec<(String, String)> = state.rcpts.iter().map(|rcpt| (rcpt.clone(), state.last_error.clone())).collect();
                send_dsn(env, config, state.planned, &delayed, DsnKind::Delay, started_ms);
            }
        }
        let lifetime_s = if env.defects.has(Defect::GiveUpEarly) { policy.lifetime_s / 4.0 } else { policy.lifetime_s };
        if age >= lifetime_s {
            break;
        }
    }
    let reason = if policy.retries { "queue lifetime expired" } else { "this sender does not retry" };
    for state in pending {
        let expired: Vec<(String, String)> = state.rcpts.iter().map(|rcpt| (rcpt.clone(), format!("{reason}; last error: {}", state.last_error))).collect();
        give_up(env, config, state.planned, &expired, Outcome::Expired, started_ms).await;
    }
}

/// What one turn of a batch's delivery loop came to.
enum Turn {
    /// The destination is suspended: no attempt was made, for this reason.
    Skipped(String),
    /// An attempt was made: each message's verdicts, in batch order.
    Tried(Vec<Vec<(String, Verdict)>>),
}

/// `settle` of a turn the suspended destination skipped, as if every pending recipient had got
/// `error` as a transient verdict (a list of those copies, built every turn of a long
/// suspension for every pending message, was a large part of a run's cost).
fn settle_skipped(env: &Env, state: &mut Pending, error: &str) -> Vec<(String, String)> {
    if state.rcpts.is_empty() {
        return Vec::new();
    }
    if env.defects.has(Defect::BounceOn4xx) {
        return std::mem::take(&mut state.rcpts).into_iter().map(|rcpt| (rcpt, error.to_string())).collect();
    }
    error.clone_into(&mut state.last_error);
    Vec::new()
}

/// Records an attempt's verdicts for one message: delivered recipients leave, transient ones
/// stay pending. Returns the recipients that failed for good.
fn settle(env: &Env, state: &mut Pending, verdicts: Vec<(String, Verdict)>) -> Vec<(String, String)> {
    let mut failed = Vec::new();
    state.rcpts.clear();
    for (rcpt, verdict) in verdicts {
        match verdict {
            Verdict::Delivered(reply) => outcome(env, state.planned, &rcpt, Outcome::Delivered, reply),
            Verdict::Permanent(_) if env.defects.has(Defect::RetryAfter5xx) && !state.retried_permanent.contains(&rcpt) => {
                // The planted bug: one more try after a permanent refusal.
                state.retried_permanent.push(rcpt.clone());
                state.rcpts.push(rcpt);
            }
            Verdict::Permanent(reply) => failed.push((rcpt, reply)),
            Verdict::Transient(reply) if env.defects.has(Defect::BounceOn4xx) => failed.push((rcpt, reply)),
            Verdict::Transient(reply) => {
                state.last_error = reply;
                state.rcpts.push(rcpt);
            }
        }
    }
    failed
}

fn outcome(env: &Env, planned: &PlannedMessage, rcpt: &str, outcome: Outcome, reply: String) {
    env.journal.record(Event::SenderOutcome { msg: planned.msg.clone(), rcpt: rcpt.into(), outcome, reply: reply.into() });
}

/// Records the final failure of these recipients and returns the message to its sender.
/// `arrival_ms`: when this MTA took the message into its queue.
async fn give_up(env: &Env, config: &ProviderConfig, planned: &PlannedMessage, failed: &[(String, String)], how: Outcome, arrival_ms: u64) {
    if failed.is_empty() {
        return;
    }
    for (rcpt, reply) in failed {
        outcome(env, planned, rcpt, how, reply.clone());
    }
    send_dsn(env, config, planned, failed, DsnKind::Failure, arrival_ms);
    if env.defects.has(Defect::DuplicateDsn) {
        send_dsn(env, config, planned, failed, DsnKind::Failure, arrival_ms);
    }
}

/// Sends a DSN about these recipients to the message's sender (RFC 3464), with MAIL FROM:<>.
/// It is dated on the simulated clock from the wall-time base; its Arrival-Date is `arrival_ms`.
fn send_dsn(env: &Env, config: &ProviderConfig, planned: &PlannedMessage, rcpts: &[(String, String)], kind: DsnKind, arrival_ms: u64) {
    // RFC 5321 §6.1 / RFC 3464 §2: never a DSN for a message whose reverse-path is null.
    if rcpts.is_empty() || (planned.from.is_empty() && !env.defects.has(Defect::BounceABounce)) {
        return;
    }
    let recipients: Vec<DsnRecipient> = rcpts
        .iter()
        .map(|(rcpt, reply)| DsnRecipient { address: rcpt.clone(), status: dsn_status(kind, reply), diagnostic: reply.clone() })
        .collect();
    // RFC 3464 §2: to the envelope's reverse-path, whatever the header says.
    let to = match env.defects.has(Defect::DsnToHeaderFrom) {
        // The planted bug: the address a human would reply to.
        true => message::header_address(&planned.bytes, "Reply-To").or_else(|| message::header_address(&planned.bytes, "From")).unwrap_or_else(|| planned.from.clone()),
        false => planned.from.clone(),
    };
    let kind_name = if kind == DsnKind::Failure { "failure" } else { "delay" };
    // The planted bug `dsn-dated-1970`: the bare simulated clock, and the DSN's own time as
    // the original's arrival.
    let epoch_unix_s = if env.defects.has(Defect::DsnDated1970) { 0 } else { config.epoch_unix_s };
    let arrival_ms = if env.defects.has(Defect::DsnDated1970) { env.journal.now_ms() } else { arrival_ms };
    let dsn_id = format!("dsn.{kind_name}.{}.{}", env.journal.now_ms(), planned.msg);
    let request = DsnRequest {
        kind,
        reporting_mta: &config.hostname,
        dsn_message_id: &dsn_id,
        to: &to,
        original: &planned.bytes,
        recipients: &recipients,
        date_unix_s: epoch_unix_s + env.journal.now_ms() / 1000,
        arrival_unix_s: epoch_unix_s + arrival_ms / 1000,
    };
    let dsn = if env.defects.has(Defect::DsnNotMultipartReport) {
        // The planted bug: a human note only, which no program can read (RFC 3464 ignored).
        format!("Message-ID: <{dsn_id}>\r\nFrom: MAILER-DAEMON@{}\r\nSubject: failure notice\r\n\r\nSorry, your mail could not be delivered.\r\n", config.hostname).into_bytes()
    } else {
        message::build_dsn(&request)
    };
    env.journal.record(Event::DsnSent(Box::new(history::DsnSent {
        msg: planned.msg.clone(),
        dsn: message::message_id(&dsn).unwrap_or(dsn_id).into(),
        kind: kind_name.into(),
        mail_from: Default::default(),
        to: to.as_str().into(),
        rcpts: rcpts.iter().map(|(rcpt, _)| rcpt.clone()).collect(),
        status: recipients.first().map(|r| r.status.clone()).unwrap_or_default().into(),
        // The DSN moves into its record (its bytes are not needed after).
        content: String::from_utf8(dsn).unwrap_or_else(|error| String::from_utf8_lossy(error.as_bytes()).into_owned()).into(),
    })));
}

/// The RFC 3463 status of a DSN: a failure carries the reply's own 5.x.x when it has one, else
/// 5.4.7 (delivery time expired) or 5.0.0; a delay carries the reply's 4.x.x, else 4.4.7.
fn dsn_status(kind: DsnKind, reply: &str) -> String {
    let enhanced = reply.split_whitespace().nth(1).filter(|code| code.split('.').count() == 3 && code.split('.').all(|part| part.parse::<u16>().is_ok()));
    match (kind, enhanced) {
        (DsnKind::Failure, Some(code)) if code.starts_with("5.") => code.to_string(),
        (DsnKind::Failure, _) if reply.starts_with('5') => "5.0.0".to_string(),
        (DsnKind::Failure, _) => "5.4.7".to_string(),
        (DsnKind::Delay, Some(code)) if code.starts_with("4.") => code.to_string(),
        (DsnKind::Delay, _) => "4.4.7".to_string(),
    }
}

type Failure = (Stage, String);

/// One message's part of an attempt: which recipients it still tries, and the name its
/// records carry (one per message and attempt, whatever the connection carries besides).
struct Try<'a> {
    planned: &'a PlannedMessage,
    rcpts: Vec<String>,
    /// Shared by every record of this try (its attempt, each reply, its failure).
    session: Text,
    attempt: u32,
}

/// One SMTP session for a batch of messages. Every recipient of every message gets a verdict;
/// and when the destination refused the session as a whole (no connection, no greeting, a 4xx
/// greeting), why: a site failure, after which real MTAs stop trying the destination for a
/// while (Postfix's dead destination, Exim's host retry record) instead of trying every message.
async fn try_once(env: &Env, config: &ProviderConfig, tries: &[Try<'_>]) -> (Vec<Vec<(String, Verdict)>>, Option<String>) {
    for one in tries {
        env.journal.record(Event::SmtpAttempt { session: one.session.clone(), msg: one.planned.msg.clone(), attempt: one.attempt, rcpts: one.rcpts.clone() });
    }
    let mut verdicts: Vec<Vec<(String, Verdict)>> = tries.iter().map(|_| Vec::new()).collect();
    let outcome = session(env, config, tries, &mut verdicts).await;
    let refused = match &outcome {
        Ok(refused) => refused.clone(),
        Err((Stage::Connect | Stage::Greeting, error)) => Some(error.clone()),
        Err(_) => None,
    };
    if let Err((stage, error)) = outcome {
        for (one, verdicts) in tries.iter().zip(verdicts.iter_mut()) {
            let decided: Vec<String> = verdicts.iter().map(|(rcpt, _)| rcpt.clone()).collect();
            let undecided: Vec<&String> = one.rcpts.iter().filter(|rcpt| !decided.contains(rcpt)).collect();
            if undecided.is_empty() {
                continue;
            }
            env.journal.record(Event::SmtpFailure { session: one.session.clone(), msg: one.planned.msg.clone(), stage, error: error.as_str().into() });
            for rcpt in undecided {
                verdicts.push((rcpt.clone(), Verdict::Transient(error.clone())));
            }
        }
    }
    (verdicts, refused)
}

/// RFC 5321 §4.5.3.2 timeouts, or a tenth of them under the planted `impatient-sender` bug.
fn timeout(env: &Env, rfc: Duration) -> Duration {
    if env.defects.has(Defect::ImpatientSender) { rfc / 10 } else { rfc }
}

struct Client<'a> {
    env: &'a Env,
    conn: Conn,
}

impl Client<'_> {
    /// Reads one reply and records it for each of `tries` (a greeting or EHLO reply concerns
    /// every message the session carries).
    async fn reply(&mut self, tries: &[&Try<'_>], stage: Stage, rcpt: Option<&str>, rfc_timeout: Duration) -> Result<Reply, Failure> {
        let timeout = timeout(self.env, rfc_timeout);
        let mut parser = ReplyParser::default();
        let reply = loop {
            let line = self.conn.read_line(wire::MAX_TEXT_LINE, timeout).await.map_err(|error| (stage, error.describe()))?;
            match parser.feed_line(&line) {
                Ok(Some(reply)) => break reply,
                Ok(None) => continue,
                Err(error) => return Err((stage, format!("malformed reply: {error:?}"))),
            }
        };
        for one in tries {
            self.env.journal.record(Event::SmtpReply {
                session: one.session.clone(),
                msg: one.planned.msg.clone(),
                stage,
                rcpt: rcpt.map(Into::into),
                reply: reply.summary().into(),
            });
        }
        Ok(reply)
    }

    async fn send(&mut self, bytes: &[u8], stage: Stage) -> Result<(), Failure> {
        self.conn.send(bytes).await.map_err(|error| (stage, error.describe()))
    }

    async fn command(&mut self, one: &Try<'_>, line: &str, stage: Stage, rcpt: Option<&str>, timeout: Duration) -> Result<Reply, Failure> {
        self.send(format!("{line}\r\n").as_bytes(), stage).await?;
        self.reply(&[one], stage, rcpt, timeout).await
    }
}

fn verdict_of(reply: &Reply) -> Verdict {
    match reply.class() {
        2 => Verdict::Delivered(reply.summary()),
        5 => Verdict::Permanent(reply.summary()),
        _ => Verdict::Transient(reply.summary()),
    }
}

fn all(verdicts: &mut Vec<(String, Verdict)>, reply: &Reply, list: &[String]) {
    for rcpt in list {
        verdicts.push((rcpt.clone(), verdict_of(reply)));
    }
}

/// Connects, greets, and carries each message's transaction: one after another, or all in
/// one pipelined flight with BDAT when the provider chunks and the MX offers CHUNKING.
/// Returns the greeting when it was a 4xx (the destination refused the session as a whole).
async fn session(env: &Env, config: &ProviderConfig, tries: &[Try<'_>], verdicts: &mut [Vec<(String, Verdict)>]) -> Result<Option<String>, Failure> {
    let connect = env.net.connect(&config.mx_host, SMTP_PORT);
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => return Err((Stage::Connect, error.to_string())),
        Err(_) => return Err((Stage::Connect, "timed out".into())),
    };
    let mut client = Client { env, conn: Conn::new(stream) };
    let everyone: Vec<&Try> = tries.iter().collect();
    let greeting = client.reply(&everyone, Stage::Greeting, None, GREETING_TIMEOUT).await?;
    if greeting.class() != 2 {
        for (one, verdicts) in tries.iter().zip(verdicts.iter_mut()) {
            all(verdicts, &greeting, &one.rcpts);
        }
        return Ok((greeting.class() == 4).then(|| greeting.summary()));
    }
    client.send(format!("EHLO {}\r\n", config.hostname).as_bytes(), Stage::Ehlo).await?;
    let ehlo = client.reply(&everyone, Stage::Ehlo, None, COMMAND_TIMEOUT).await?;
    if ehlo.class() != 2 {
        for (one, verdicts) in tries.iter().zip(verdicts.iter_mut()) {
            all(verdicts, &ehlo, &one.rcpts);
        }
        return Ok(None);
    }
    let offers = |keyword: &str| ehlo.lines.iter().any(|line| line.split_whitespace().next().is_some_and(|word| word.eq_ignore_ascii_case(keyword)));
    let last = tries.len().saturating_sub(1);
    if config.chunking && offers("CHUNKING") && offers("PIPELINING") {
        chunked_flight(&mut client, tries, verdicts).await?;
        let _ = client.command(&tries[last], "QUIT", Stage::Quit, None, COMMAND_TIMEOUT).await;
        return Ok(None);
    }
    for (index, (one, verdicts)) in tries.iter().zip(verdicts.iter_mut()).enumerate() {
        let ended = transaction(&mut client, one, verdicts).await?;
        if index == last {
            if ended != Ended::Refused {
                let _ = client.command(one, "QUIT", Stage::Quit, None, COMMAND_TIMEOUT).await;
            }
        } else if ended != Ended::Delivered {
            // The transaction may still be open on the server (MAIL accepted, no recipient):
            // reset it before the next MAIL.
            client.command(one, "RSET", Stage::Other, None, COMMAND_TIMEOUT).await?;
        }
    }
    Ok(None)
}

/// How a transaction ended, for what the session sends next.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// The end of data was answered (whatever the answer).
    Delivered,
    /// Every recipient was refused.
    NoRecipient,
    /// MAIL or DATA was refused.
    Refused,
}

/// One transaction with DATA, waiting for each reply in turn.
async fn transaction(client: &mut Client<'_>, one: &Try<'_>, verdicts: &mut Vec<(String, Verdict)>) -> Result<Ended, Failure> {
    let mail = client.command(one, &mail_line(one.planned), Stage::Mail, None, COMMAND_TIMEOUT).await?;
    if mail.class() != 2 {
        all(verdicts, &mail, &one.rcpts);
        return Ok(Ended::Refused);
    }
    let mut accepted = Vec::new();
    for rcpt in &one.rcpts {
        let reply = client.command(one, &rcpt_line(one.planned, rcpt), Stage::Rcpt, Some(rcpt), COMMAND_TIMEOUT).await?;
        if reply.class() == 2 {
            accepted.push(rcpt.clone());
        } else {
            verdicts.push((rcpt.clone(), verdict_of(&reply)));
        }
    }
    // Named again (To and Cc merged): the first RCPT's verdict stands, whatever this one gets.
    for rcpt in one.planned.repeated_rcpts.iter().filter(|rcpt| accepted.contains(rcpt)) {
        client.command(one, &format!("RCPT TO:<{rcpt}>"), Stage::Rcpt, Some(rcpt), COMMAND_TIMEOUT).await?;
    }
    if accepted.is_empty() {
        return Ok(Ended::NoRecipient);
    }
    let data = client.command(one, "DATA", Stage::Data, None, DATA_INIT_TIMEOUT).await?;
    if data.code != 354 {
        all(verdicts, &data, &accepted);
        return Ok(Ended::Refused);
    }
    client.send(&wire::dot_stuff(&one.planned.bytes), Stage::DataEnd).await?;
    let end = client.reply(&[one], Stage::DataEnd, None, DATA_END_TIMEOUT).await?;
    all(verdicts, &end, &accepted);
    Ok(Ended::Delivered)
}

/// MAIL with the message's size (RFC 1870), or the invalid parameter the plan gives MAIL.
fn mail_line(planned: &PlannedMessage) -> String {
    match &planned.invalid_param {
        Some(InvalidParam { stage: Stage::Mail, param, .. }) => format!("MAIL FROM:<{}> {param}", planned.from),
        _ => format!("MAIL FROM:<{}> SIZE={}", planned.from, planned.bytes.len()),
    }
}

/// RCPT for one recipient, with the invalid parameter the plan gives that recipient's RCPT.
fn rcpt_line(planned: &PlannedMessage, rcpt: &str) -> String {
    match &planned.invalid_param {
        Some(InvalidParam { stage: Stage::Rcpt, rcpt: Some(bad), param }) if bad == rcpt => format!("RCPT TO:<{rcpt}> {param}"),
        _ => format!("RCPT TO:<{rcpt}>"),
    }
}

/// The recipients this attempt names twice (only those it still tries).
fn repeated<'a>(one: &'a Try<'_>) -> impl Iterator<Item = &'a String> {
    one.planned.repeated_rcpts.iter().filter(|rcpt| one.rcpts.contains(rcpt))
}

/// Every transaction in one flight: MAIL, RCPTs and `BDAT <size> LAST` with the message for
/// each (RFC 3030 §4.2 with RFC 2920), then the replies in order. A refused MAIL or RCPT makes
/// the server refuse the BDAT too (503), so the verdicts follow from the replies alone.
async fn chunked_flight(client: &mut Client<'_>, tries: &[Try<'_>], verdicts: &mut [Vec<(String, Verdict)>]) -> Result<(), Failure> {
    let mut flight = Vec::new();
    for one in tries {
        flight.extend_from_slice(format!("{}\r\n", mail_line(one.planned)).as_bytes());
        for rcpt in &one.rcpts {
            flight.extend_from_slice(format!("{}\r\n", rcpt_line(one.planned, rcpt)).as_bytes());
        }
        for rcpt in repeated(one) {
            flight.extend_from_slice(format!("RCPT TO:<{rcpt}>\r\n").as_bytes());
        }
        flight.extend_from_slice(format!("BDAT {} LAST\r\n", one.planned.bytes.len()).as_bytes());
        flight.extend_from_slice(&one.planned.bytes);
    }
    client.send(&flight, Stage::Mail).await?;
    for (one, verdicts) in tries.iter().zip(verdicts.iter_mut()) {
        let mail = client.reply(&[one], Stage::Mail, None, COMMAND_TIMEOUT).await?;
        let mut accepted = Vec::new();
        for rcpt in &one.rcpts {
            let reply = client.reply(&[one], Stage::Rcpt, Some(rcpt), COMMAND_TIMEOUT).await?;
            if mail.class() != 2 {
                continue;
            }
            if reply.class() == 2 {
                accepted.push(rcpt.clone());
            } else {
                verdicts.push((rcpt.clone(), verdict_of(&reply)));
            }
        }
        // Named again: the first RCPT's verdict stands.
        for rcpt in repeated(one) {
            client.reply(&[one], Stage::Rcpt, Some(rcpt), COMMAND_TIMEOUT).await?;
        }
        let end = client.reply(&[one], Stage::DataEnd, None, DATA_END_TIMEOUT).await?;
        if mail.class() != 2 {
            all(verdicts, &mail, &one.rcpts);
        } else {
            all(verdicts, &end, &accepted);
        }
    }
    Ok(())
}
