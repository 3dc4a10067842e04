//! A14 timeouts: a sender waits at least RFC 5321 §4.5.3.2's timeouts before it gives up on a
//! reply: 5 minutes for the greeting, MAIL and RCPT, 2 minutes for DATA's 354, 10 minutes
//! after the final dot (giving up sooner there makes duplicates, RFC 1047). Judged from the
//! time between a session's last event and its timeout.

use history::EventKind as K;
use super::facts::Facts;
use super::Violation;
use history::{Event, Stage};

fn rfc_minimum_s(stage: Stage) -> Option<f64> {
    match stage {
        Stage::Greeting | Stage::Ehlo | Stage::Mail | Stage::Rcpt => Some(300.0),
        Stage::Data => Some(120.0),
        Stage::DataEnd => Some(600.0),
        _ => None,
    }
}

pub fn check(facts: &Facts, out: &mut Vec<Violation>) {
    // Per sender session: the time and index of its latest event.
    let mut last: rustc_hash::FxHashMap<&str, (u64, usize)> = rustc_hash::FxHashMap::default();
    for (at, record) in facts.records_of(&[K::SmtpAttempt, K::SmtpReply, K::SmtpFailure]) {
        match &record.event {
            Event::SmtpAttempt { session, .. } | Event::SmtpReply { session, .. } => {
                last.insert(session, (record.t_ms, at));
            }
            Event::SmtpFailure { session, msg, stage, error } if error == "timed out" => {
                let (Some(minimum_s), Some(&(since_ms, since_at))) = (rfc_minimum_s(*stage), last.get(session.as_str())) else { continue };
                let waited_s = record.t_ms.saturating_sub(since_ms) as f64 / 1000.0;
                if waited_s < minimum_s * 0.95 {
                    out.push(Violation::new("A14", format!("msg {msg} session {session}"), format!("gave up waiting after {waited_s:.0}s at stage {stage:?}; RFC 5321 §4.5.3.2 asks for at least {minimum_s:.0}s"), vec![since_at, at]));
                }
            }
            _ => {}
        }
    }
}
