//! Every DSN of the run, wherever it was seen, in one shape for A2, A9, A10 and A11:
//! - a remote sender's notice to its own user (`DsnSent`, the provider's record);
//! - a DSN the MX returned to a sender, as the sender's provider received it over SMTP
//!   (`MailReceived`, what crossed that peer's wire), tied to the message by the MX's
//!   `QueueDamaged` record naming the DSN's Message-ID. Its envelope and bytes are the
//!   receiver's, not the MX's account of them.

use super::wire::At;
use super::kinds::ByKind;
use history::{Event, EventKind, Record, Text};
use mail::message;
use std::collections::BTreeMap;

pub struct Dsn {
    pub at: At,
    /// Who wrote it: "mx", or the provider host that sent it.
    pub by: String,
    pub msg: Text,
    /// "failure" or "delay".
    pub kind: Text,
    /// The DSN's own envelope: reverse-path ("" for `<>`) and recipient.
    pub mail_from: Text,
    pub to: Text,
    /// The recipients it must report.
    pub rcpts: Vec<String>,
    /// Shared with the record it came from (a DSN is a whole message: no copy).
    pub content: Text,
    /// Records between which the DSN was written: its Date must fall in that span.
    pub written: (At, At),
    /// Records between which the reporting MTA took the original: its Arrival-Date span.
    pub arrived: Option<(At, At)>,
    /// For the MX's: its `QueueDamaged` record (which names the queue file, for blame).
    pub source: Option<At>,
}

/// What the MX said it returned: DSN Message-ID → (message, recipients, arrival span, the
/// `QueueDamaged` record).
type Returned<'a> = BTreeMap<&'a str, (&'a str, Vec<String>, (At, At), At)>;

/// All DSNs in history order.
pub fn read(records: &[Record]) -> Vec<Dsn> {
    read_with(records, &ByKind::of(records))
}

/// The same, given where each kind of record is.
pub(crate) fn read_with(records: &[Record], by_kind: &ByKind) -> Vec<Dsn> {
    let submits: BTreeMap<&str, At> = by_kind
        .select(records, &[EventKind::Submit])
        .filter_map(|(at, record)| match &record.event {
            Event::Submit(submit) => Some((submit.msg.as_str(), at)),
            _ => None,
        })
        .collect();
    let returned = returned_by_mx(records, by_kind, &submits);
    let mut dsns = Vec::new();
    for (at, record) in by_kind.select(records, &[EventKind::DsnSent, EventKind::MailReceived]) {
        match &record.event {
            Event::DsnSent(sent) => {
                let history::DsnSent { msg, kind, mail_from, to, rcpts, content, .. } = &**sent;
                let submitted = submits.get(msg.as_str()).copied();
                dsns.push(Dsn {
                    at,
                    by: record.host.to_string(),
                    msg: msg.clone(),
                    kind: kind.clone(),
                    mail_from: mail_from.clone(),
                    to: to.clone(),
                    rcpts: rcpts.clone(),
                    content: content.clone(),
                    written: (at, at),
                    arrived: submitted.map(|submitted| (submitted, submitted)),
                    source: None,
                });
            }
            Event::MailReceived { mail_from, rcpts: to, content, .. } => {
                let id = message::message_id(content.as_bytes()).unwrap_or_default();
                let Some((msg, rcpts, arrived, source)) = returned.get(id.as_str()) else { continue };
                dsns.push(Dsn {
                    at,
                    by: "mx".into(),
                    msg: Text::from(*msg),
                    kind: Text::new_static("failure"),
                    mail_from: mail_from.clone(),
                    to: to.join(",").into(),
                    rcpts: rcpts.clone(),
                    content: content.clone(),
                    written: (arrived.1, at),
                    arrived: Some(*arrived),
                    source: Some(*source),
                });
            }
            _ => {}
        }
    }
    dsns
}

/// The MX's returns: for each damaged queue file it names a DSN for, the message, the
/// recipients still queued when it was found damaged, and when the MX took the message
/// (between the sender's submission and the MX's 2xx claim).
fn returned_by_mx<'a>(records: &'a [Record], by_kind: &ByKind, submits: &BTreeMap<&str, At>) -> Returned<'a> {
    let mut queued: BTreeMap<&str, (&str, Vec<String>, At)> = BTreeMap::new();
    let mut returned = Returned::new();
    for (at, record) in by_kind.select(records, &[EventKind::MxDataEnd, EventKind::QueueRecorded, EventKind::QueueDamaged]) {
        match &record.event {
            Event::MxDataEnd(end) if end.reply.starts_with('2') => {
                let Some(file) = &end.queue_file else { continue };
                queued.insert(file, (&end.msg, end.rcpts.clone(), at));
            }
            Event::QueueRecorded { queue_file, remaining, .. } => {
                if let Some((_, pending, _)) = queued.get_mut(queue_file.as_str()) {
                    pending.retain(|rcpt| remaining.contains(rcpt));
                }
            }
            Event::QueueDamaged { queue_file, dsn: Some(dsn), .. } => {
                if let Some((msg, pending, acked)) = queued.get(queue_file.as_str()) {
                    let submitted = submits.get(msg).copied().unwrap_or(*acked);
                    returned.insert(dsn, (msg, pending.clone(), (submitted, *acked), at));
                }
            }
            _ => {}
        }
    }
    returned
}
