//! A remote provider's sending MTA: many queued messages as tasks inside one host, each
//! delivered to the MX over SMTP and retried by the provider's policy.
//!
//! Per recipient: 2xx at end of data → delivered; 5xx → bounced at once (A8); 4xx, a refused
//! or cut connection, or a timeout → retried (A5) until the queue lifetime runs out, then a
//! failure DSN (A7). DSNs go out with MAIL FROM:<> and are never sent for a message whose
//! reverse-path is <> (A9, RFC 5321 §6.1).

use super::conn::Conn;
use super::message::{self, DsnRecipient, DsnRequest};
use super::policy::RetryPolicy;
use super::wire::{self, Reply, ReplyParser};
use super::{Defect, Env, SMTP_PORT};
use crate::history::{Event, Outcome, Stage};
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
    pub bytes: Rc<Vec<u8>>,
}

#[derive(Clone, Debug)]
pub struct ProviderConfig {
    pub hostname: String,
    pub mx_host: String,
    pub policy: RetryPolicy,
    /// SMTP connections open at once from this provider.
    pub max_connections: usize,
    pub plan: Vec<PlannedMessage>,
}

/// The provider host's software: one task per planned message.
pub async fn run(env: Env, config: ProviderConfig) {
    let config = Rc::new(config);
    let connections = Rc::new(Semaphore::new(config.max_connections.max(1)));
    let mut tasks = Vec::new();
    for planned in config.plan.clone() {
        let (env, config, connections) = (env.clone(), config.clone(), connections.clone());
        tasks.push(tokio::task::spawn_local(async move {
            let wait = planned.at_ms.saturating_sub(env.journal.now_ms());
            tokio::time::sleep(Duration::from_millis(wait)).await;
            deliver(&env, &config, &connections, &planned).await;
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    std::future::pending::<()>().await;
}

#[derive(Debug)]
enum Verdict {
    Delivered(String),
    Permanent(String),
    Transient(String),
}

async fn deliver(env: &Env, config: &ProviderConfig, connections: &Semaphore, planned: &PlannedMessage) {
    env.journal.record(Event::Submit {
        msg: planned.msg.clone(),
        from: planned.from.clone(),
        rcpts: planned.rcpts.clone(),
        digest: message::content_digest(&planned.bytes),
        size: planned.bytes.len() as u64,
    });
    let started_ms = env.journal.now_ms();
    let mut pending = planned.rcpts.clone();
    let mut last_error = String::new();
    for attempt in 1..=MAX_ATTEMPTS {
        let session = format!("{}-{}-{attempt}", config.hostname, planned.msg);
        let verdicts = {
            let Ok(_permit) = connections.acquire().await else { return };
            try_once(env, config, planned, &pending, &session).await
        };
        let mut failed = Vec::new();
        pending.clear();
        for (rcpt, verdict) in verdicts {
            match verdict {
                Verdict::Delivered(reply) => outcome(env, planned, &rcpt, Outcome::Delivered, reply),
                Verdict::Permanent(reply) => failed.push((rcpt, reply)),
                Verdict::Transient(reply) => {
                    last_error = reply;
                    pending.push(rcpt);
                }
            }
        }
        give_up(env, config, planned, &failed, Outcome::Bounced).await;
        if pending.is_empty() {
            return;
        }
        if !config.policy.retries {
            break;
        }
        tokio::time::sleep(config.policy.delay_after(attempt)).await;
        let age = Duration::from_millis(env.journal.now_ms() - started_ms);
        if age >= config.policy.lifetime() {
            break;
        }
    }
    let expired: Vec<(String, String)> =
        pending.into_iter().map(|rcpt| (rcpt, format!("queue lifetime expired; last error: {last_error}"))).collect();
    give_up(env, config, planned, &expired, Outcome::Expired).await;
}

fn outcome(env: &Env, planned: &PlannedMessage, rcpt: &str, outcome: Outcome, reply: String) {
    env.journal.record(Event::SenderOutcome { msg: planned.msg.clone(), rcpt: rcpt.to_string(), outcome, reply });
}

/// Records the final failure of these recipients and returns the message to its sender.
async fn give_up(env: &Env, config: &ProviderConfig, planned: &PlannedMessage, failed: &[(String, String)], how: Outcome) {
    if failed.is_empty() {
        return;
    }
    for (rcpt, reply) in failed {
        outcome(env, planned, rcpt, how, reply.clone());
    }
    // RFC 5321 §6.1 / RFC 3464 §2: never a DSN for a message whose reverse-path is null.
    if planned.from.is_empty() && !env.defects.has(Defect::BounceABounce) {
        return;
    }
    let recipients: Vec<DsnRecipient> = failed
        .iter()
        .map(|(rcpt, reply)| DsnRecipient { address: rcpt.clone(), status: failure_status(how, reply), diagnostic: reply.clone() })
        .collect();
    let dsn_id = format!("dsn.{}.{}", env.journal.now_ms(), planned.msg);
    let request = DsnRequest {
        reporting_mta: &config.hostname,
        dsn_message_id: &dsn_id,
        to: &planned.from,
        original: &planned.bytes,
        recipients: &recipients,
        date_unix_s: env.journal.now_ms() / 1000,
    };
    let dsn = message::build_failure_dsn(&request);
    let status = recipients.first().map(|r| r.status.clone()).unwrap_or_default();
    env.journal.record(Event::DsnSent {
        msg: planned.msg.clone(),
        dsn: message::message_id(&dsn).unwrap_or(dsn_id),
        mail_from: String::new(),
        to: planned.from.clone(),
        rcpts: failed.iter().map(|(rcpt, _)| rcpt.clone()).collect(),
        status,
    });
}

/// The RFC 3463 status of a failure: the reply's own 5.x.x when it has one; 5.4.7 (delivery
/// time expired) for an expiry.
fn failure_status(how: Outcome, reply: &str) -> String {
    let enhanced = reply.split_whitespace().nth(1).filter(|code| code.starts_with("5.") && code.split('.').count() == 3);
    match (how, enhanced) {
        (Outcome::Bounced, Some(code)) => code.to_string(),
        (Outcome::Bounced, None) => "5.0.0".to_string(),
        _ => "5.4.7".to_string(),
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

struct Client<'a> {
    env: &'a Env,
    conn: Conn,
    session: &'a str,
    msg: &'a str,
}

impl Client<'_> {
    async fn reply(&mut self, stage: Stage, rcpt: Option<&str>, timeout: Duration) -> Result<Reply, Failure> {
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
        Ok(Err(error)) => return Err((Stage::Connect, error.kind().to_string())),
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
