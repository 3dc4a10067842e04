//! The MX returns a message it cannot deliver to its sender: a failure DSN (RFC 3464) from
//! `<>` to the envelope's reverse-path, sent over SMTP to the sender's domain (RFC 5321 §6.1:
//! a server that accepted a message and then cannot deliver it must say so). Today the only
//! such message is one whose queue file the device damaged while its envelope stayed intact.
//!
//! The DSN is built afresh on every try from the queue file, which stays in the queue until the
//! DSN was taken: the queue file is the return's durable record, so no second queue is needed.
//! Its Message-ID is derived from the queue file's name, so a DSN sent again after a crash is
//! recognisably the same notice.

use super::conn::Conn;
use super::wire::{self, Reply, ReplyParser};
use super::{Defect, Env, SMTP_PORT};
use mail::message::{self, DsnKind, DsnRecipient, DsnRequest};
use std::collections::BTreeMap;
use std::time::Duration;

/// RFC 5321 §4.5.3.2: 5 minutes for the greeting and each command, 10 after the final dot.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);
const DATA_DONE_TIMEOUT: Duration = Duration::from_secs(600);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);

/// How a try to return a message ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Returned {
    /// The sender's MX took the DSN (250 at the final dot): its Message-ID.
    Taken(String),
    /// Try again later: no connection, a 4xx, a timeout.
    Transient(String),
    /// The sender's MX refused the DSN for good (5xx): no DSN can reach this sender.
    Refused(String),
}

/// The reporting MTA: its name, its routes (lower-case domain → host), its clock's base.
pub struct Mta<'a> {
    pub hostname: &'a str,
    pub routes: &'a BTreeMap<String, String>,
    pub epoch_unix_s: u64,
}

/// The message to return, as its intact envelope gives it.
pub struct Envelope<'a> {
    /// Its Message-ID.
    pub msg: &'a str,
    /// The reverse-path: where the DSN goes.
    pub from: &'a str,
    pub rcpts: &'a [String],
    /// When the MX took it (journal clock).
    pub arrived_ms: u64,
}

/// Why the message is returned, as the DSN states it for each recipient.
pub struct Reason<'a> {
    pub status: &'a str,
    pub diagnostic: &'a str,
}

/// One try to return a message (queue file `name`) to its envelope sender.
pub async fn try_return(env: &Env, mta: &Mta<'_>, name: &str, envelope: &Envelope<'_>, reason: &Reason<'_>) -> Returned {
    let dsn_id = format!("{name}.returned@{}", mta.hostname);
    let dsn = build(env, mta, &dsn_id, envelope, reason);
    let Some((_, domain)) = envelope.from.rsplit_once('@') else {
        return Returned::Refused(format!("no domain in <{}>", envelope.from));
    };
    // A route (transport map) when the operator gave one, else the domain's own host name.
    let host = mta.routes.get(&domain.to_ascii_lowercase()).map_or(domain, String::as_str);
    let mail_from = if env.defects.has(Defect::DsnFromPostmaster) { format!("postmaster@{}", mta.hostname) } else { String::new() };
    match send(env, host, mta.hostname, &mail_from, envelope.from, &dsn).await {
        Ok(()) => Returned::Taken(dsn_id),
        Err(reply) if reply.starts_with('5') => Returned::Refused(reply),
        Err(error) => Returned::Transient(error),
    }
}

/// The DSN: the header section attached is only the Message-ID the envelope kept, since the
/// message's own bytes are what the device damaged.
fn build(env: &Env, mta: &Mta<'_>, dsn_id: &str, envelope: &Envelope<'_>, reason: &Reason<'_>) -> Vec<u8> {
    let recipients: Vec<DsnRecipient> = envelope
        .rcpts
        .iter()
        .map(|rcpt| DsnRecipient { address: rcpt.clone(), status: reason.status.to_string(), diagnostic: reason.diagnostic.to_string() })
        .collect();
    let original = format!("Message-ID: {}\r\n\r\n", bracketed(envelope.msg));
    message::build_dsn(&DsnRequest {
        kind: DsnKind::Failure,
        reporting_mta: mta.hostname,
        dsn_message_id: dsn_id,
        to: envelope.from,
        original: original.as_bytes(),
        recipients: &recipients,
        date_unix_s: mta.epoch_unix_s + env.journal.now_ms() / 1000,
        arrival_unix_s: mta.epoch_unix_s + envelope.arrived_ms / 1000,
    })
}

fn bracketed(id: &str) -> String {
    if id.starts_with('<') { id.to_string() } else { format!("<{id}>") }
}

/// One SMTP transaction carrying `message`; Err names the failing reply or error.
async fn send(env: &Env, host: &str, hostname: &str, mail_from: &str, rcpt: &str, message: &[u8]) -> Result<(), String> {
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, env.net.connect(host, SMTP_PORT)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => return Err(format!("connect to {host}: {error}")),
        Err(_) => return Err(format!("connect to {host}: timed out")),
    };
    let mut conn = Conn::new(stream);
    expect(&mut conn, None, 2, COMMAND_TIMEOUT).await?;
    expect(&mut conn, Some(&format!("EHLO {hostname}")), 2, COMMAND_TIMEOUT).await?;
    expect(&mut conn, Some(&format!("MAIL FROM:<{mail_from}>")), 2, COMMAND_TIMEOUT).await?;
    expect(&mut conn, Some(&format!("RCPT TO:<{rcpt}>")), 2, COMMAND_TIMEOUT).await?;
    expect(&mut conn, Some("DATA"), 3, COMMAND_TIMEOUT).await?;
    conn.send(&wire::dot_stuff(message)).await.map_err(|error| error.describe())?;
    expect(&mut conn, None, 2, DATA_DONE_TIMEOUT).await?;
    // The DSN is taken; a failing QUIT changes nothing.
    let _ = expect(&mut conn, Some("QUIT"), 2, COMMAND_TIMEOUT).await;
    Ok(())
}

/// Sends `line` (if any) and reads one reply of the expected class.
async fn expect(conn: &mut Conn, line: Option<&str>, class: u16, timeout: Duration) -> Result<Reply, String> {
    if let Some(line) = line {
        conn.send(format!("{line}\r\n").as_bytes()).await.map_err(|error| error.describe())?;
    }
    let mut parser = ReplyParser::default();
    let reply = loop {
        let line = conn.read_line(wire::MAX_TEXT_LINE, timeout).await.map_err(|error| error.describe())?;
        match parser.feed_line(&line) {
            Ok(Some(reply)) => break reply,
            Ok(None) => continue,
            Err(error) => return Err(format!("{error:?}")),
        }
    };
    if reply.class() == class { Ok(reply) } else { Err(reply.summary()) }
}
