//! No loss (A2) and justified duplicates (A13) judged from the outside (`mailchaos drive`): the
//! history holds only the driver's side of the wire (its senders' transactions, its clients'
//! downloads, the DSNs that came back), never the target's own account.
//!
//! - A2: every (message, recipient) the target accepted (the sender saw 2xx for the RCPT and at
//!   the end of data) is downloaded by a client of the recipient's mailbox, or returned to its
//!   sender by a failure DSN that came back.
//! - A13: a mailbox's clients get a message under as many distinct UIDLs (copies in the mailbox)
//!   as the sender handed it over for that recipient: each acknowledged transaction, and each
//!   one whose reply the sender never saw after its final dot (RFC 1047: it must send again).

use history::EventKind as K;
use super::facts::{At, Facts};
use super::Violation;
use history::{Event, Stage};
use std::collections::{BTreeMap, BTreeSet};

pub fn no_loss(facts: &Facts, out: &mut Vec<Violation>) {
    for ((msg, rcpt), _) in facts.sender_saw_ack.iter() {
        let mailbox = Facts::mailbox_of(rcpt);
        if facts.fetched(&mailbox, msg) || !facts.failure_dsns(msg, rcpt).is_empty() {
            continue;
        }
        let evidence = acknowledgements(facts, msg, rcpt);
        out.push(Violation::new("A2", format!("msg {msg} rcpt {rcpt}"), "the target accepted it (2xx for the RCPT and at the end of data) but no client of the mailbox ever downloaded it, and no DSN came back", evidence));
    }
}

pub fn duplicates(facts: &Facts, out: &mut Vec<Violation>) {
    // (mailbox, msg) → the distinct UIDLs it was downloaded under, with the first download of each.
    let mut copies: BTreeMap<(&str, &str), BTreeMap<&str, At>> = BTreeMap::new();
    for fetch in &facts.fetches {
        copies.entry((fetch.mailbox, fetch.msg)).or_default().entry(fetch.uidl).or_insert(fetch.at);
    }
    let handed = handed_over(facts);
    for ((mailbox, msg), uidls) in copies.into_iter().filter(|(_, uidls)| uidls.len() > 1) {
        let allowed = handed.get(&(msg.to_string(), mailbox.to_string())).copied().unwrap_or(0).max(1);
        if uidls.len() > allowed {
            let explanation = format!("the mailbox's clients got the message under {} UIDLs, but the sender handed it over {allowed} time(s) for this recipient", uidls.len());
            out.push(Violation::new("A13", format!("msg {msg} mailbox {mailbox}"), explanation, uidls.values().copied().collect()));
        }
    }
}

/// Records of the sender's 2xx at the end of data for (msg, rcpt).
fn acknowledgements(facts: &Facts, msg: &str, rcpt: &str) -> Vec<At> {
    let mailbox = Facts::mailbox_of(rcpt);
    let rcpts_of = attempts(facts);
    let mut evidence = Vec::new();
    for (at, record) in facts.records_of(&[K::SmtpReply]) {
        if let Event::SmtpReply { session, msg: replied, stage: Stage::DataEnd, reply, .. } = &record.event {
            let names_rcpt = rcpts_of.get(&(session.as_str(), replied.as_str())).is_some_and(|rcpts| rcpts.contains(&mailbox));
            if replied == msg && reply.starts_with('2') && names_rcpt {
                evidence.push(at);
            }
        }
    }
    evidence
}

/// (session, msg) → the mailboxes of the recipients the attempt carried.
fn attempts<'a>(facts: &Facts<'a>) -> BTreeMap<(&'a str, &'a str), BTreeSet<String>> {
    let mut rcpts_of = BTreeMap::new();
    for (_, record) in facts.records_of(&[K::SmtpAttempt]) {
        if let Event::SmtpAttempt { session, msg, rcpts, .. } = &record.event {
            rcpts_of.insert((session.as_str(), msg.as_str()), rcpts.iter().map(|rcpt| Facts::mailbox_of(rcpt)).collect());
        }
    }
    rcpts_of
}

/// (msg, mailbox) → how often the sender handed the message over for that recipient: its
/// acknowledged transactions, and those that failed after the final dot (reply never seen).
fn handed_over(facts: &Facts) -> BTreeMap<(String, String), usize> {
    let rcpts_of = attempts(facts);
    let mut handed: BTreeMap<(String, String), usize> = BTreeMap::new();
    for ((msg, rcpt), acks) in &facts.sender_saw_ack {
        *handed.entry((msg.to_string(), Facts::mailbox_of(rcpt))).or_default() += acks;
    }
    for (_, record) in facts.records_of(&[K::SmtpFailure]) {
        if let Event::SmtpFailure { session, msg, stage: Stage::DataEnd, .. } = &record.event {
            for mailbox in rcpts_of.get(&(session.as_str(), msg.as_str())).into_iter().flatten() {
                *handed.entry((msg.to_string(), mailbox.clone())).or_default() += 1;
            }
        }
    }
    handed
}
