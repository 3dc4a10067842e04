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
use history::{Event, Outcome, Stage};
use std::cell::Cell;
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
    pub msg: String,
    /// "" for the null reverse-path <>.
    pub from: String,
    pub rcpts: Vec<String>,
    /// Recipients (of `rcpts`) the client names a second time in the same transaction, as a
    /// client that merges To and Cc does; the MX must accept them once.
    pub repeated_rcpts: Vec<String>,
    pub bytes: Rc<Vec<u8>>,
}

#[derive(Clone, Debug)]
pub struct ProviderConfig {
    pub hostname: String,
    pub mx_host: String,
    pub policy: RetryPolicy,
    /// The factor the policy's durations were scaled by (recorded for the checkers).
    pub time_scale: f64,
    /// SMTP connections open at once from this provider.
    pub max_connections: usize,
    /// Unix time (seconds) at which the journal's clock reads 0: the base of DSN dates.
    pub epoch_unix_s: u64,
    pub plan: Vec<PlannedMessage>,
}

/// The provider host's software: one task per planned message.
pub async fn run(env: Env, config: ProviderConfig) {
    let config = Rc::new(config);
    let policy = &config.policy;
    env.journal.record(Event::SenderPolicy {
        policy: policy.name.clone(),
        time_scale: config.time_scale,
        min_interval_s: policy.min_interval_s(),
        lifetime_s: policy.lifetime_s,
        retries: policy.retries,
        delay_notice_s: policy.delay_notice_s,
    });
    let provider = Rc::new(Provider { connections: Semaphore::new(config.max_connections.max(1)), failing_since_ms: Cell::new(None) });
    let mut tasks = Vec::new();
    for planned in config.plan.clone() {
        let (env, config, provider) = (env.clone(), config.clone(), provider.clone());
        tasks.push(tokio::task::spawn_local(async move {
            let wait = planned.at_ms.saturating_sub(env.journal.now_ms());
            tokio::time::sleep(Duration::from_millis(wait)).await;
            deliver(&env, &config, &provider, &planned).await;
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    std::future::pending::<()>().await;
}

/// What the tasks of one provider share.
struct Provider {
    connections: Semaphore,
    /// Since when every attempt to the MX has failed transiently (None: the last one worked).
    failing_since_ms: Cell<Option<u64>>,
}

#[derive(Debug)]
enum Verdict {
    Delivered(String),
    Permanent(String),
    Transient(String),
}

async fn deliver(env: &Env, config: &ProviderConfig, provider: &Provider, planned: &PlannedMessage) {
    env.journal.record(Event::Submit {
        msg: planned.msg.clone(),
        from: planned.from.clone(),
        rcpts: planned.rcpts.clone(),
        digest: message::content_digest(&planned.bytes),
        size: planned.bytes.len() as u64,
    });
    let policy = &config.policy;
    let started_ms = env.journal.now_ms();
    let age_s = || (env.journal.now_ms() - started_ms) as f64 / 1000.0;
    if let (Some(cutoff_s), Some(since_ms)) = (policy.dead_host_cutoff_s, provider.failing_since_ms.get()) {
        // Exim-style: a destination that has failed for long enough gets no new attempts.
        if (env.journal.now_ms() - since_ms) as f64 / 1000.0 >= cutoff_s {
            let failed: Vec<(String, String)> = planned.rcpts.iter().map(|rcpt| (rcpt.clone(), "destination host has been failing; not tried".to_string())).collect();
            give_up(env, config, planned, &failed, Outcome::Expired, started_ms).await;
            return;
        }
    }
    let mut pending = planned.rcpts.clone();
    let mut retried_permanent: Vec<String> = Vec::new();
    let mut last_error = String::new();
    let mut delay_notified = false;
    let (mut stage, mut attempts_in_stage) = (0usize, 0u32);
    for attempt in 1..=MAX_ATTEMPTS {
        let session = format!("{}-{}-{attempt}", config.hostname, planned.msg);
        let verdicts = {
            let Ok(_permit) = provider.connections.acquire().await else { return };
            env.journal.record(Event::SmtpAttempt { session: session.clone(), msg: planned.msg.clone(), attempt, rcpts: pending.clone() });
            try_once(env, config, planned, &pending, &session).await
        };
        let mut failed = Vec::new();
        pending.clear();
        for (rcpt, verdict) in verdicts {
            match verdict {
                Verdict::Delivered(reply) => outcome(env, planned, &rcpt, Outcome::Delivered, reply),
                Verdict::Permanent(_) if env.defects.has(Defect::RetryAfter5xx) && !retried_permanent.contains(&rcpt) => {
                    // The planted bug: one more try after a permanent refusal.
                    retried_permanent.push(rcpt.clone());
                    pending.push(rcpt);
                }
                Verdict::Permanent(reply) => failed.push((rcpt, reply)),
                Verdict::Transient(reply) if env.defects.has(Defect::BounceOn4xx) => failed.push((rcpt, reply)),
                Verdict::Transient(reply) => {
                    last_error = reply;
                    pending.push(rcpt);
                }
            }
        }
        let all_transient = !pending.is_empty() && failed.is_empty();
        let now_ms = env.journal.now_ms();
        provider.failing_since_ms.set(if all_transient { provider.failing_since_ms.get().or(Some(now_ms)) } else { None });
        give_up(env, config, planned, &failed, Outcome::Bounced, started_ms).await;
        if pending.is_empty() || !policy.retries {
            break;
        }
        let index = policy.stage_index(age_s());
        attempts_in_stage = if index == stage { attempts_in_stage + 1 } else { 1 };
        stage = index;
        let delay = if env.defects.has(Defect::RetryWithoutBackoff) {
            Duration::from_millis((60_000.0 * config.time_scale) as u64).max(Duration::from_secs(1))
        } else {
            policy.next_delay(age_s(), attempts_in_stage)
        };
        tokio::time::sleep(delay).await;
        if !delay_notified && policy.delay_notice_s.is_some_and(|notice_s| age_s() >= notice_s) {
            delay_notified = true;
            let delayed: Vec<(String, String)> = pending.iter().map(|rcpt| (rcpt.clone(), last_error.clone())).collect();
            send_dsn(env, config, planned, &delayed, DsnKind::Delay, started_ms);
        }
        let lifetime_s = if env.defects.has(Defect::GiveUpEarly) { policy.lifetime_s / 4.0 } else { policy.lifetime_s };
        if age_s() >= lifetime_s {
            break;
        }
    }
    if pending.is_empty() {
        return;
    }
    let reason = if policy.retries { "queue lifetime expired" } else { "this sender does not retry" };
    let expired: Vec<(String, String)> = pending.into_iter().map(|rcpt| (rcpt, format!("{reason}; last error: {last_error}"))).collect();
    give_up(env, config, planned, &expired, Outcome::Expired, started_ms).await;
}

fn outcome(env: &Env, planned: &PlannedMessage, rcpt: &str, outcome: Outcome, reply: String) {
    env.journal.record(Event::SenderOutcome { msg: planned.msg.clone(), rcpt: rcpt.to_string(), outcome, reply });
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
    let kind_name = if kind == DsnKind::Failure { "failure" } else { "delay" };
    let dsn_id = format!("dsn.{kind_name}.{}.{}", env.journal.now_ms(), planned.msg);
    let request = DsnRequest {
        kind,
        reporting_mta: &config.hostname,
        dsn_message_id: &dsn_id,
        to: &planned.from,
        original: &planned.bytes,
        recipients: &recipients,
        date_unix_s: config.epoch_unix_s + env.journal.now_ms() / 1000,
        arrival_unix_s: config.epoch_unix_s + arrival_ms / 1000,
    };
    let dsn = if env.defects.has(Defect::DsnNotMultipartReport) {
        // The planted bug: a human note only, which no program can read (RFC 3464 ignored).
        format!("Message-ID: <{dsn_id}>\r\nFrom: MAILER-DAEMON@{}\r\nSubject: failure notice\r\n\r\nSorry, your mail could not be delivered.\r\n", config.hostname).into_bytes()
    } else {
        message::build_dsn(&request)
    };
    env.journal.record(Event::DsnSent {
        msg: planned.msg.clone(),
        dsn: message::message_id(&dsn).unwrap_or(dsn_id),
        kind: kind_name.to_string(),
        mail_from: String::new(),
        to: planned.from.clone(),
        rcpts: rcpts.iter().map(|(rcpt, _)| rcpt.clone()).collect(),
        status: recipients.first().map(|r| r.status.clone()).unwrap_or_default(),
        content: String::from_utf8_lossy(&dsn).to_string(),
    });
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

/// One SMTP session for `rcpts`. Every recipient gets a verdict.
async fn try_once(env: &Env, config: &ProviderConfig, planned: &PlannedMessage, rcpts: &[String], session: &str) -> Vec<(String, Verdict)> {
    let mut verdicts = Vec::new();
    let result = transaction(env, config, planned, rcpts, session, &mut verdicts).await;
    if let Err((stage, error)) = result {
        env.journal.record(Event::SmtpFailure { session: session.to_string(), msg: planned.msg.clone(), stage, error: error.clone() });
        let decided: Vec<String> = verdicts.iter().map(|(rcpt, _)| rcpt.clone()).collect();
        for rcpt in rcpts.iter().filter(|rcpt| !decided.contains(rcpt)) {
            verdicts.push((rcpt.clone(), Verdict::Transient(error.clone())));
        }
    }
    verdicts
}

/// RFC 5321 §4.5.3.2 timeouts, or a tenth of them under the planted `impatient-sender` bug.
fn timeout(env: &Env, rfc: Duration) -> Duration {
    if env.defects.has(Defect::ImpatientSender) { rfc / 10 } else { rfc }
}

struct Client<'a> {
    env: &'a Env,
    conn: Conn,
    session: &'a str,
    msg: &'a str,
}

impl Client<'_> {
    async fn reply(&mut self, stage: Stage, rcpt: Option<&str>, rfc_timeout: Duration) -> Result<Reply, Failure> {
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
        self.env.journal.record(Event::SmtpReply {
            session: self.session.to_string(),
            msg: self.msg.to_string(),
            stage,
            rcpt: rcpt.map(str::to_string),
            reply: reply.summary(),
        });
        Ok(reply)
    }

    async fn command(&mut self, line: &str, stage: Stage, rcpt: Option<&str>, timeout: Duration) -> Result<Reply, Failure> {
        self.conn.send(format!("{line}\r\n").as_bytes()).await.map_err(|error| (stage, error.describe()))?;
        self.reply(stage, rcpt, timeout).await
    }
}

fn verdict_of(reply: &Reply) -> Verdict {
    match reply.class() {
        2 => Verdict::Delivered(reply.summary()),
        5 => Verdict::Permanent(reply.summary()),
        _ => Verdict::Transient(reply.summary()),
    }
}

async fn transaction(
    env: &Env,
    config: &ProviderConfig,
    planned: &PlannedMessage,
    rcpts: &[String],
    session: &str,
    verdicts: &mut Vec<(String, Verdict)>,
) -> Result<(), Failure> {
    let connect = env.net.connect(&config.mx_host, SMTP_PORT);
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => return Err((Stage::Connect, error.to_string())),
        Err(_) => return Err((Stage::Connect, "timed out".into())),
    };
    let mut client = Client { env, conn: Conn::new(stream), session, msg: &planned.msg };
    let all = |verdicts: &mut Vec<(String, Verdict)>, reply: &Reply, list: &[String]| {
        for rcpt in list {
            verdicts.push((rcpt.clone(), verdict_of(reply)));
        }
    };
    let greeting = client.reply(Stage::Greeting, None, GREETING_TIMEOUT).await?;
    if greeting.class() != 2 {
        all(verdicts, &greeting, rcpts);
        return Ok(());
    }
    let ehlo = client.command(&format!("EHLO {}", config.hostname), Stage::Ehlo, None, COMMAND_TIMEOUT).await?;
    if ehlo.class() != 2 {
        all(verdicts, &ehlo, rcpts);
        return Ok(());
    }
    let mail_line = format!("MAIL FROM:<{}> SIZE={}", planned.from, planned.bytes.len());
    let mail = client.command(&mail_line, Stage::Mail, None, COMMAND_TIMEOUT).await?;
    if mail.class() != 2 {
        all(verdicts, &mail, rcpts);
        return Ok(());
    }
    let mut accepted = Vec::new();
    for rcpt in rcpts {
        let reply = client.command(&format!("RCPT TO:<{rcpt}>"), Stage::Rcpt, Some(rcpt), COMMAND_TIMEOUT).await?;
        if reply.class() == 2 {
            accepted.push(rcpt.clone());
        } else {
            verdicts.push((rcpt.clone(), verdict_of(&reply)));
        }
    }
    // Named again (To and Cc merged): the first RCPT's verdict stands, whatever this one gets.
    for rcpt in planned.repeated_rcpts.iter().filter(|rcpt| accepted.contains(rcpt)) {
        client.command(&format!("RCPT TO:<{rcpt}>"), Stage::Rcpt, Some(rcpt), COMMAND_TIMEOUT).await?;
    }
    if accepted.is_empty() {
        let _ = client.command("QUIT", Stage::Quit, None, COMMAND_TIMEOUT).await;
        return Ok(());
    }
    let data = client.command("DATA", Stage::Data, None, DATA_INIT_TIMEOUT).await?;
    if data.code != 354 {
        all(verdicts, &data, &accepted);
        return Ok(());
    }
    client.conn.send(&wire::dot_stuff(&planned.bytes)).await.map_err(|error| (Stage::DataEnd, error.describe()))?;
    let end = client.reply(Stage::DataEnd, None, DATA_END_TIMEOUT).await?;
    all(verdicts, &end, &accepted);
    let _ = client.command("QUIT", Stage::Quit, None, COMMAND_TIMEOUT).await;
    Ok(())
}
