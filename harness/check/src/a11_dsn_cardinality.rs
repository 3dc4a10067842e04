//! A11 dsn-cardinality: at most one failure DSN per (message, recipient), none for a recipient
//! that was delivered, and delay DSNs only where the sender's policy sends them (at most one).
//! RFC 3461.

use super::facts::Facts;
use super::Violation;
use history::{Event, Outcome};
use super::wire::At;
use std::collections::{BTreeMap, BTreeSet};

pub fn check(facts: &Facts, out: &mut Vec<Violation>) {
    let mut failures: BTreeMap<(String, String), Vec<usize>> = BTreeMap::new();
    let mut delays: BTreeMap<(String, String), Vec<usize>> = BTreeMap::new();
    for dsn in &facts.dsns {
        let table = if dsn.kind == "delay" { &mut delays } else { &mut failures };
        for rcpt in &dsn.rcpts {
            table.entry((dsn.msg.to_string(), rcpt.clone())).or_default().push(dsn.at);
        }
    }
    // The MX's own DSNs (by record), looked up for every failure pair below.
    let by_mx: BTreeSet<At> = facts.dsns.iter().filter(|dsn| dsn.by == "mx").map(|dsn| dsn.at).collect();
    for ((msg, rcpt), ats) in &failures {
        let subject = format!("msg {msg} rcpt {rcpt}");
        if ats.len() > 1 && !resent_after_crash(facts, &by_mx, ats) {
            out.push(Violation::new("A11", subject.clone(), format!("{} failure DSNs for one recipient", ats.len()), evidence(facts, ats)));
        }
        if delivered(facts, &by_mx, msg, rcpt, ats) {
            out.push(Violation::new("A11", subject, "a failure DSN for a recipient that was delivered", evidence(facts, ats)));
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

/// The DSNs' records, and for the MX's the `QueueDamaged` record that names its queue file: a
/// DSN the MX returned because the device damaged that file carries the device's blame.
fn evidence(facts: &Facts, ats: &[At]) -> Vec<At> {
    let mut evidence = ats.to_vec();
    evidence.extend(facts.dsns.iter().filter(|dsn| ats.contains(&dsn.at)).filter_map(|dsn| dsn.source));
    evidence.sort();
    evidence.dedup();
    evidence
}

/// Whether the recipient the DSNs at `ats` report was delivered after all: for a remote
/// sender's DSN, the MX took it (the sender's outcome); for the MX's own, the store did.
fn delivered(facts: &Facts, by_mx: &BTreeSet<At>, msg: &str, rcpt: &str, ats: &[At]) -> bool {
    if ats.iter().all(|at| by_mx.contains(at)) {
        let mailbox = Facts::mailbox_of(rcpt);
        return facts.deliveries_of(&mailbox, msg).next().is_some();
    }
    facts.outcomes.get(&(msg, rcpt)).is_some_and(|list| list.iter().any(|(_, outcome)| *outcome == Outcome::Delivered))
}

/// The MX sent the same DSN again because it crashed after the sender's MX took it and before
/// it recorded that (its queue file is the DSN's record): a crash between each two copies, and
/// every copy the MX's. One crash justifies one more copy, as A13 counts duplicates.
fn resent_after_crash(facts: &Facts, by_mx: &BTreeSet<At>, ats: &[At]) -> bool {
    ats.iter().all(|at| by_mx.contains(at)) && ats.windows(2).all(|pair| facts.records[pair[0]..pair[1]].iter().any(|record| &*record.host == "mx" && matches!(record.event, Event::Crash)))
}
