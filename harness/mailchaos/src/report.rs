//! What a person reads: one line per run, a summary, and the explained history of a repro.

use check::facts::ReportedLosses;
use check::Violation;
use history::{render_record, Event, Outcome, Record};
use sim::world::RunOutput;
use std::collections::{BTreeMap, BTreeSet};
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
    /// (message, mailbox) pairs a restore from backup erased before anyone downloaded them: a
    /// loss the run reports (A18), not one it hides.
    pub lost_to_rollback: usize,
    /// (message, mailbox) pairs the store found damaged on storage and refused to serve (A23).
    pub damaged_reported: usize,
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
    let reported = ReportedLosses::of(records);
    counts.lost_to_rollback = reported.lost_to_rollback.len();
    counts.damaged_reported = reported.damaged.len();
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

/// What became of the (message, recipient) pairs of one sender policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PolicyOutcomes {
    pub delivered: usize,
    pub bounced_5xx: usize,
    pub bounced_expiry: usize,
    pub delay_notified: usize,
    /// Pairs with more than one copy in the mailbox.
    pub duplicated: usize,
    /// Pairs the MX accepted that never reached the mailbox, nor went back with its DSN.
    pub lost: usize,
    /// Pairs the MX accepted, then returned to their sender with a failure DSN (its queue file
    /// was damaged), as the sender's provider received it.
    pub returned: usize,
    /// In an outage: pairs whose sender's policy predicts delivery after recovery, or expiry.
    pub expected_delivered: usize,
    pub expected_expired: usize,
    /// Reported losses (see `Counts`): erased by a restore, or found damaged and not served.
    pub lost_to_rollback: usize,
    pub damaged_reported: usize,
}

impl PolicyOutcomes {
    pub fn add(&mut self, other: &PolicyOutcomes) {
        self.delivered += other.delivered;
        self.bounced_5xx += other.bounced_5xx;
        self.bounced_expiry += other.bounced_expiry;
        self.delay_notified += other.delay_notified;
        self.duplicated += other.duplicated;
        self.lost += other.lost;
        self.returned += other.returned;
        self.expected_delivered += other.expected_delivered;
        self.expected_expired += other.expected_expired;
        self.lost_to_rollback += other.lost_to_rollback;
        self.damaged_reported += other.damaged_reported;
    }

    pub fn render(&self) -> String {
        let mut text = format!(
            "delivered={} bounced_5xx={} bounced_expiry={} delay_notified={} duplicated={} lost={}",
            self.delivered, self.bounced_5xx, self.bounced_expiry, self.delay_notified, self.duplicated, self.lost
        );
        if self.returned > 0 {
            text.push_str(&format!(" returned_by_mx={}", self.returned));
        }
        if self.lost_to_rollback + self.damaged_reported > 0 {
            text.push_str(&format!(" | reported: lost_to_rollback={} damaged_reported={}", self.lost_to_rollback, self.damaged_reported));
        }
        if self.expected_delivered + self.expected_expired > 0 {
            text.push_str(&format!(" | sent during the outage: expected_delivered={} expected_expired={}", self.expected_delivered, self.expected_expired));
        }
        text
    }
}

/// Outcome accounting per sender policy, from the history alone.
pub fn outcomes_by_policy(records: &[Record]) -> BTreeMap<String, PolicyOutcomes> {
    let mut policy_of_host: BTreeMap<&str, &str> = BTreeMap::new();
    let mut policy_of_msg: BTreeMap<&str, &str> = BTreeMap::new();
    let mut accepted: BTreeSet<(&str, String)> = BTreeSet::new();
    let mut copies: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    let mut delivered_files: BTreeSet<&str> = BTreeSet::new();
    let mut table: BTreeMap<String, PolicyOutcomes> = BTreeMap::new();
    for record in records {
        match &record.event {
            Event::SenderPolicy { policy, .. } => {
                policy_of_host.insert(&record.host, policy);
            }
            Event::Submit { msg, .. } => {
                policy_of_msg.insert(msg, policy_of_host.get(record.host.as_str()).copied().unwrap_or("?"));
            }
            Event::MxDataEnd { msg, rcpts, reply, .. } if reply.starts_with('2') => {
                for rcpt in rcpts {
                    accepted.insert((msg, mailbox_of(rcpt)));
                }
            }
            Event::StoreDelivered { msg, mailbox, file, .. } => {
                delivered_files.insert(file);
                *copies.entry((msg, mailbox)).or_default() += 1;
            }
            // The first 2xx for a copy published just before a store crash (as A2 counts it).
            Event::StoreRetryRecognised { msg, mailbox, file, .. } if !delivered_files.contains(file.as_str()) => {
                delivered_files.insert(file);
                *copies.entry((msg, mailbox)).or_default() += 1;
            }
            // A delivered copy keeps being the same copy under the names the store moves it to
            // (read mail goes into cur/), as the disk recorded them.
            Event::DiskRename { from, to } if record.host == "store" && delivered_files.contains(from.as_str()) => {
                delivered_files.insert(to);
            }
            _ => {}
        }
    }
    let policy = |msg: &str| policy_of_msg.get(msg).copied().unwrap_or("?").to_string();
    add_expected_fates(records, &mut table);
    for record in records {
        match &record.event {
            Event::SenderOutcome { msg, outcome, .. } => {
                let row = table.entry(policy(msg)).or_default();
                match outcome {
                    Outcome::Delivered => row.delivered += 1,
                    Outcome::Bounced => row.bounced_5xx += 1,
                    Outcome::Expired => row.bounced_expiry += 1,
                }
            }
            Event::DsnSent { msg, kind, rcpts, .. } if kind == "delay" => table.entry(policy(msg)).or_default().delay_notified += rcpts.len(),
            _ => {}
        }
    }
    for ((msg, _), count) in &copies {
        if *count > 1 {
            table.entry(policy(msg)).or_default().duplicated += 1;
        }
    }
    let reported = ReportedLosses::of(records);
    let mut returned: BTreeSet<(String, String)> = BTreeSet::new();
    for dsn in check::dsns::read(records).into_iter().filter(|dsn| dsn.by == "mx") {
        for rcpt in &dsn.rcpts {
            if returned.insert((dsn.msg.clone(), mailbox_of(rcpt))) {
                table.entry(policy(&dsn.msg)).or_default().returned += 1;
            }
        }
    }
    for (msg, mailbox) in &accepted {
        // A loss the run reported is counted under `reported:`, not as a silent one.
        let back = returned.contains(&(msg.to_string(), mailbox.clone()));
        if !copies.contains_key(&(*msg, mailbox.as_str())) && !reported.covers(mailbox, msg) && !back {
            table.entry(policy(msg)).or_default().lost += 1;
        }
    }
    for (_, msg) in &reported.lost_to_rollback {
        table.entry(policy(msg)).or_default().lost_to_rollback += 1;
    }
    for (_, msg) in &reported.damaged {
        table.entry(policy(msg)).or_default().damaged_reported += 1;
    }
    table
}

/// In an outage, what each sender's policy predicts for the mail sent while the store was down.
fn add_expected_fates(records: &[Record], table: &mut BTreeMap<String, PolicyOutcomes>) {
    use check::a22_outage_answer::{expected_fate, outage, Fate};
    let Some(outage) = outage(records) else { return };
    let mut policies: BTreeMap<&str, check::facts::SenderPolicy> = BTreeMap::new();
    for record in records {
        match &record.event {
            Event::SenderPolicy { .. } => {
                if let Some(policy) = check::facts::SenderPolicy::of(&record.event) {
                    policies.insert(&record.host, policy);
                }
            }
            Event::Submit { rcpts, .. } if (outage.down_ms..outage.up_ms).contains(&record.t_ms) => {
                let Some(policy) = policies.get(record.host.as_str()) else { continue };
                let row = table.entry(policy.name.clone()).or_default();
                match expected_fate(policy, record.t_ms, outage) {
                    Fate::Delivered => row.expected_delivered += rcpts.len(),
                    Fate::Expired => row.expected_expired += rcpts.len(),
                    Fate::Unclear => {}
                }
            }
            _ => {}
        }
    }
}

fn mailbox_of(rcpt: &str) -> String {
    rcpt.rsplit_once('@').map(|(local, _)| local).unwrap_or(rcpt).to_ascii_lowercase()
}
