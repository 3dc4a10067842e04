//! A2 no-loss: every accepted (message, recipient) ends in exactly one terminal state: in the
//! mailbox (durably, or already downloaded by its owner), or a failure DSN to its sender.
//! Judged at the end of the run, which the world lets drain first. RFC 5321 §6.1, RFC 2033 §4.2.
//! A loss the run reported (erased by a restore from backup, or detected as damaged: see
//! `ReportedLosses`) is not hidden, and so not a violation here; the report counts it.

use super::facts::Facts;
use super::Violation;
use std::collections::BTreeSet;

pub fn check(facts: &Facts, out: &mut Vec<Violation>) {
    check_mx_acceptances(facts, out);
    check_sender_queues(facts, out);
}

fn check_mx_acceptances(facts: &Facts, out: &mut Vec<Violation>) {
    let mut judged = BTreeSet::new();
    for (at, msg, rcpts, _, _) in facts.mx_acks() {
        for rcpt in rcpts.iter() {
            if !judged.insert((*msg, rcpt.as_str())) {
                continue;
            }
            let mailbox = Facts::mailbox_of(rcpt);
            let deliveries: Vec<_> = facts.deliveries_of(&mailbox, msg).collect();
            let fetched = facts.fetched(&mailbox, msg);
            let kept = deliveries.iter().any(|delivery| facts.survives(delivery) || facts.deleted_message(&mailbox, msg) || expunged_live(facts, delivery));
            let bounced = dsn_covers(facts, msg, rcpt);
            let subject = format!("msg {msg} rcpt {rcpt}");
            if deliveries.is_empty() && !bounced && !facts.reported.covers(&mailbox, msg) && !still_queued_live(facts, *at) {
                out.push(Violation::new("A2", subject, "accepted by the MX (250) but never delivered to the mailbox nor returned with a DSN", vec![*at]));
            } else if !deliveries.is_empty() && !kept && !fetched && !bounced && !facts.reported.covers(&mailbox, msg) {
                let mut evidence = vec![*at];
                evidence.extend(deliveries.iter().map(|delivery| delivery.at));
                out.push(Violation::new("A2", subject, "delivered (LMTP 250) but gone from the durable store, and never downloaded", evidence));
            }
        }
    }
}

/// In a live history (no client of ours recorded its deletions) a message the store
/// removed at its owner's request (POP3 DELE and QUIT, IMAP EXPUNGE) reached its terminal state.
fn expunged_live(facts: &Facts, delivery: &super::facts::Delivery) -> bool {
    facts.live && facts.expunged.contains(&(delivery.mailbox, delivery.uidvalidity, delivery.uid))
}

/// In a live history a server stops whenever its operator stops it: a message still in its
/// queue file then (no removal of the file recorded) is held, not lost; the next start delivers it.
fn still_queued_live(facts: &Facts, ack: usize) -> bool {
    let Some(history::Event::MxDataEnd(end)) = facts.records.get(ack).map(|record| &record.event) else { return false };
    let Some(file) = &end.queue_file else { return false };
    facts.live && facts.disks.get("mx").is_some_and(|disk| disk.kept(file, ack))
}

fn dsn_covers(facts: &Facts, msg: &str, rcpt: &str) -> bool {
    !facts.failure_dsns(msg, rcpt).is_empty()
}

fn check_sender_queues(facts: &Facts, out: &mut Vec<Violation>) {
    for (msg, (at, _, rcpts, _)) in facts.submitted_in_order() {
        for rcpt in rcpts.iter() {
            let outcomes = facts.outcomes.get(&(msg, rcpt.as_str()));
            let subject = format!("msg {msg} rcpt {rcpt}");
            match outcomes.map(Vec::len).unwrap_or(0) {
                1 => {}
                0 => out.push(Violation::new("A2", subject, "still in the remote sender's queue at the end of the run (no terminal state)", vec![*at])),
                _ => {
                    let evidence = outcomes.map(|list| list.iter().map(|(at, _)| *at).collect()).unwrap_or_default();
                    out.push(Violation::new("A2", subject, "the remote sender reached more than one terminal state", evidence));
                }
            }
        }
    }
}
