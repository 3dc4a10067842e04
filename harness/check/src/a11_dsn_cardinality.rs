//! A11 dsn-cardinality: at most one failure DSN per (message, recipient), none for a recipient
//! that was delivered, and delay DSNs only where the sender's policy sends them (at most one).
//! RFC 3461.

use super::facts::Facts;
use super::Violation;
use history::{Event, Outcome};
use std::collections::BTreeMap;

pub fn check(facts: &Facts, out: &mut Vec<Violation>) {
    let mut failures: BTreeMap<(String, String), Vec<usize>> = BTreeMap::new();
    let mut delays: BTreeMap<(String, String), Vec<usize>> = BTreeMap::new();
    for (at, record) in facts.records.iter().enumerate() {
        let Event::DsnSent { msg, kind, rcpts, .. } = &record.event else { continue };
        let table = if kind == "delay" { &mut delays } else { &mut failures };
        for rcpt in rcpts {
            table.entry((msg.clone(), rcpt.clone())).or_default().push(at);
        }
    }
    for ((msg, rcpt), ats) in &failures {
        let subject = format!("msg {msg} rcpt {rcpt}");
        if ats.len() > 1 {
            out.push(Violation::new("A11", subject.clone(), format!("{} failure DSNs for one recipient", ats.len()), ats.clone()));
        }
        let delivered = facts.outcomes.get(&(msg.clone(), rcpt.clone())).is_some_and(|list| list.iter().any(|(_, outcome)| *outcome == Outcome::Delivered));
        if delivered {
            out.push(Violation::new("A11", subject, "a failure DSN for a recipient that was delivered", ats.clone()));
        }
    }
    for ((msg, rcpt), ats) in &delays {
        let subject = format!("msg {msg} rcpt {rcpt}");
        let allowed = facts.policy_of_message(msg).is_some_and(|policy| policy.delay_notice_s.is_some());
        if !allowed {
            out.push(Violation::new("A11", subject, "a delay DSN from a sender whose policy sends none", ats.clone()));
        } else if ats.len() > 1 {
            out.push(Violation::new("A11", subject, format!("{} delay DSNs for one recipient", ats.len()), ats.clone()));
        }
    }
}
