//! A5 transient-requeued: a refused, reset or timed-out connection, and any 4xx, are treated
//! like 451: the message stays queued. A sender may return it only on a 5xx, or when its own
//! policy says so (its lifetime ran out, or it is a sender that never retries: A7 judges those).
//! RFC 5321 §3.8, §4.5.4.1, §5.1.

use history::EventKind as K;
use super::facts::Facts;
use super::Violation;
use history::{Event, Outcome};

pub fn check(facts: &Facts, out: &mut Vec<Violation>) {
    for (at, record) in facts.records_of(&[K::SenderOutcome]) {
        let Event::SenderOutcome { msg, rcpt, outcome: Outcome::Bounced, reply } = &record.event else { continue };
        if !reply.starts_with('5') {
            out.push(Violation::new("A5", format!("msg {msg} rcpt {rcpt}"), format!("returned to the sender as failed after a transient failure ({reply})"), vec![at]));
        }
    }
}
