//! What a person reads: one line per run, a summary, and the explained history of a repro.

use crate::check::Violation;
use crate::history::{render_record, Event, Outcome, Record};
use crate::world::RunOutput;
use std::collections::BTreeSet;
use std::fmt::Write as _;

/// Counts that characterise a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// (message, recipient) pairs the MX answered 250 for.
    pub accepted: usize,
    /// Distinct (message, mailbox) pairs the store delivered.
    pub delivered: usize,
    /// Recipients returned to their senders (5xx or expiry).
    pub bounced: usize,
    /// Transient failures the senders saw (4xx, refused, cut or timed-out sessions).
    pub deferred: usize,
}

pub fn counts(records: &[Record]) -> Counts {
    let mut accepted = BTreeSet::new();
    let mut delivered = BTreeSet::new();
    let mut counts = Counts::default();
    for record in records {
        match &record.event {
            Event::MxDataEnd { msg, rcpts, reply, .. } if reply.starts_with('2') => {
                accepted.extend(rcpts.iter().map(|rcpt| (msg.clone(), rcpt.clone())));
            }
            Event::StoreDelivered { msg, mailbox, .. } => {
                delivered.insert((msg.clone(), mailbox.clone()));
            }
            Event::SenderOutcome { outcome: Outcome::Bounced | Outcome::Expired, .. } => counts.bounced += 1,
            Event::SmtpReply { reply, .. } if reply.starts_with('4') => counts.deferred += 1,
            Event::SmtpFailure { .. } => counts.deferred += 1,
            _ => {}
        }
    }
    counts.accepted = accepted.len();
    counts.delivered = delivered.len();
    counts
}

/// The invariants violated, each once, in order.
pub fn violated(violations: &[Violation]) -> Vec<&'static str> {
    let mut names: Vec<&'static str> = Vec::new();
    for violation in violations {
        if !names.contains(&violation.invariant) {
            names.push(violation.invariant);
        }
    }
    names
}

/// Each violation with the records that prove it.
pub fn explain(output: &RunOutput, violations: &[Violation], limit: usize) -> String {
    let mut text = String::new();
    for violation in violations.iter().take(limit) {
        let _ = writeln!(text, "{} {}: {}", violation.invariant, violation.subject, violation.explanation);
        for &at in &violation.evidence {
            if let Some(record) = output.history.records.get(at) {
                let _ = writeln!(text, "    #{at:<6} {}", render_record(record));
            }
        }
    }
    if violations.len() > limit {
        let _ = writeln!(text, "… and {} more violations", violations.len() - limit);
    }
    text
}

/// The history with record numbers, as `repro` prints it.
pub fn numbered_history(output: &RunOutput) -> String {
    let mut text = String::new();
    for (at, record) in output.history.records.iter().enumerate() {
        let _ = writeln!(text, "#{at:<6} {}", render_record(record));
    }
    text
}
