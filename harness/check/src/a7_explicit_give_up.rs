//! A7 explicit-give-up: on transient failures a sender retries until its queue lifetime has
//! passed, then sends exactly one failure DSN. Giving up sooner (or without trying) breaks it;
//! a sender whose policy never retries may give up after its one attempt.

use history::EventKind as K;
use super::facts::Facts;
use super::Violation;
use history::{Event, Outcome};

pub fn check(facts: &Facts, out: &mut Vec<Violation>) {
    for (at, record) in facts.records_of(&[K::SenderOutcome]) {
        let Event::SenderOutcome { msg, rcpt, outcome: Outcome::Expired, .. } = &record.event else { continue };
        let Some(policy) = facts.policy_of_message(msg) else { continue };
        let Some((submitted, ..)) = facts.submitted.get(msg.as_str()) else { continue };
        let age_s = record.t_ms.saturating_sub(facts.records[*submitted].t_ms) as f64 / 1000.0;
        let subject = format!("msg {msg} rcpt {rcpt}");
        if policy.retries && age_s + 1.0 < policy.lifetime_s {
            out.push(Violation::new("A7", subject.clone(), format!("gave up after {age_s:.0}s, before the policy's queue lifetime of {:.0}s", policy.lifetime_s), vec![*submitted, at]));
        }
        let tried = facts.attempted_between(msg, rcpt, 0, at).is_some();
        if !tried {
            out.push(Violation::new("A7", subject.clone(), "gave up without a single delivery attempt", vec![*submitted, at]));
        }
        let is_bounce = facts.submitted.get(msg.as_str()).is_some_and(|(_, from, ..)| from.is_empty());
        if !is_bounce && facts.failure_dsns(msg, rcpt).is_empty() {
            out.push(Violation::new("A7", subject, "gave up silently: no failure DSN went to the sender", vec![at]));
        }
    }
}
