//! Checkers: each judges one invariant of INVARIANTS.md from the recorded history and, where
//! it must, the final durable disk images. None reads the stack's memory.
//!
//! A violation names its invariant, the message and recipient (or mailbox), and the history
//! records that prove it (their indices, rendered by the report).

mod a1_durable_before_ack;
mod a12_transient_for_infrastructure;
mod a13_justified_duplicates;
mod a15_atomic_publish;
mod a19_uidl_stable;
mod a20_client_complete;
mod a2_no_loss;
mod a4_no_deliver_after_refusal;
mod a9_no_bounce_of_bounce;
pub mod facts;

use crate::world::RunOutput;
pub use facts::Facts;

/// The invariants this build judges, in report order.
pub const INVARIANTS: &[(&str, &str)] = &[
    ("A1", "durable-before-ack"),
    ("A2", "no-loss"),
    ("A4", "no-deliver-after-refusal"),
    ("A9", "no-bounce-of-bounce"),
    ("A12", "transient-for-infrastructure"),
    ("A13", "justified-duplicates"),
    ("A15", "atomic-publish"),
    ("A19", "uidl-stable"),
    ("A20", "client-complete"),
];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub invariant: &'static str,
    /// What it is about: `msg <id> rcpt <address>`, `mailbox <name> uidl <uidl>`, a file.
    pub subject: String,
    pub explanation: String,
    /// Indices of the history records that prove it.
    pub evidence: Vec<usize>,
}

impl Violation {
    pub fn new(invariant: &'static str, subject: impl Into<String>, explanation: impl Into<String>, evidence: Vec<usize>) -> Violation {
        Violation { invariant, subject: subject.into(), explanation: explanation.into(), evidence }
    }
}

/// Runs every checker. Violations come out grouped by invariant, in a stable order.
pub fn check_all(output: &RunOutput) -> Vec<Violation> {
    let facts = Facts::build(output);
    let mut violations = Vec::new();
    a1_durable_before_ack::check(&facts, &mut violations);
    a2_no_loss::check(&facts, &mut violations);
    a4_no_deliver_after_refusal::check(&facts, &mut violations);
    a9_no_bounce_of_bounce::check(&facts, &mut violations);
    a12_transient_for_infrastructure::check(&facts, &mut violations);
    a13_justified_duplicates::check(&facts, &mut violations);
    a15_atomic_publish::check(&facts, &mut violations);
    a19_uidl_stable::check(&facts, &mut violations);
    a20_client_complete::check(&facts, &mut violations);
    if let Some(reason) = &output.aborted {
        violations.push(Violation::new("L1", "simulation", reason.clone(), vec![]));
    }
    if output.history.overflowed {
        violations.push(Violation::new("L1", "history", format!("the run produced more than {} events (a runaway loop)", crate::history::MAX_EVENTS), vec![]));
    }
    violations
}
