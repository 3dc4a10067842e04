//! A8 5xx-final: a 5xx is not retried against the same server, and a failure DSN follows
//! (unless the message itself is a bounce). RFC 5321 §4.2.1, §4.5.4.1.

use history::EventKind as K;
use super::facts::Facts;
use super::Violation;
use history::{Event, Stage};
use std::collections::BTreeMap;

pub fn check(facts: &Facts, out: &mut Vec<Violation>) {
    // Per sender session: its message and the recipients it tried.
    let mut sessions: BTreeMap<&str, (&str, &[String])> = BTreeMap::new();
    // A pipelined 503 after a refused MAIL is no refusal of its own (RFC 2920 §3.1).
    let consequences = &facts.pipelining_consequences;
    for (at, record) in facts.records_of(&[K::SmtpAttempt, K::SmtpReply]) {
        match &record.event {
            Event::SmtpAttempt { session, msg, rcpts, .. } => {
                sessions.insert(session, (msg, rcpts));
            }
            Event::SmtpReply { session, msg, stage, rcpt, reply } if reply.starts_with('5') && !consequences.contains(&at) => {
                let refused: Vec<String> = match (stage, rcpt) {
                    (Stage::Rcpt, Some(rcpt)) => vec![rcpt.to_string()],
                    (Stage::Mail | Stage::DataEnd, _) => sessions.get(session.as_str()).map(|(_, rcpts)| rcpts.to_vec()).unwrap_or_default(),
                    _ => continue,
                };
                for rcpt in refused {
                    judge(facts, at, msg, &rcpt, reply, out);
                }
            }
            _ => {}
        }
    }
}

fn judge(facts: &Facts, at: usize, msg: &str, rcpt: &str, reply: &str, out: &mut Vec<Violation>) {
    let subject = format!("msg {msg} rcpt {rcpt}");
    if let Some(retried_at) = facts.attempted_between(msg, rcpt, at, usize::MAX) {
        out.push(Violation::new("A8", subject.clone(), format!("retried after a permanent failure ({reply})"), vec![at, retried_at]));
    }
    let is_bounce = facts.submitted.get(msg).is_some_and(|(_, from, ..)| from.is_empty());
    if !is_bounce && facts.failure_dsns(msg, rcpt).is_empty() {
        out.push(Violation::new("A8", subject, format!("no failure DSN followed the permanent failure ({reply})"), vec![at]));
    }
}
