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
            Event::MxDataEnd(end) if end.reply.starts_with('2') => {
                accepted.extend(end.rcpts.iter().map(|rcpt| (end.msg.clone(), rcpt.clone())));
            }
            Event::StoreDelivered(stored) => {
                delivered.insert((stored.msg.clone(), stored.mailbox.clone()));
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

/// `A1:2,A2:5`: each invariant violated, in order, with how many times.
pub fn tally(violations: &[Violation]) -> String {
    let counted: Vec<String> = violated(violations).into_iter().map(|invariant| format!("{invariant}:{}", violations.iter().filter(|violation| violation.invariant == invariant).count())).collect();
    counted.join(",")
}

/// Prints the first `limit` violations with their evidence, indented under a verdict line.
pub fn say_explained(output: &RunOutput, violations: &[Violation], limit: usize) {
    for line in explain(output, violations, limit).lines() {
        crate::shared::say_line(&format!("  {line}"));
    }
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

/// What became of one (message, recipient) pair, from the history alone: its share of the
/// outcome accounting (`outcomes`, a `PolicyOutcomes` that counts this pair only), who sent it,
/// and when it was submitted and first reached the mailbox. The one accounting: the tables per
/// policy (`outcomes_by_policy`) and per provider (`outcomes_by_provider`) and `what-if`'s
/// message-by-message join are sums or reads of these.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PairAccount {
    /// The recipient as the sender named it (its first mention), else the mailbox.
    pub rcpt: String,
    /// The sending provider's host (`provider-<name>`), "?" when no submission names the message.
    pub host: String,
    /// The sender's policy, "?" when unknown.
    pub policy: String,
    /// When the workload handed the message to its sender.
    pub submitted_ms: Option<u64>,
    /// When the store first published a copy in the mailbox.
    pub first_copy_ms: Option<u64>,
    pub outcomes: PolicyOutcomes,
}

impl PairAccount {
    /// The provider's name: the host without its `provider-` prefix.
    pub fn provider(&self) -> &str {
        self.host.strip_prefix("provider-").unwrap_or(&self.host)
    }

    /// Submission to the first copy in the mailbox, when both happened.
    pub fn delay_ms(&self) -> Option<u64> {
        Some(self.first_copy_ms?.saturating_sub(self.submitted_ms?))
    }
}

/// Every (message, mailbox) pair the history mentions, with its account. Keyed by the message
/// and the recipient's mailbox (the local part, lower case), as the store names it.
pub fn pair_accounts(records: &[Record]) -> BTreeMap<(String, String), PairAccount> {
    let mut policy_of_host: BTreeMap<&str, &str> = BTreeMap::new();
    let mut sender_of_msg: BTreeMap<&str, (&str, &str, u64)> = BTreeMap::new();
    let mut accepted: BTreeSet<(&str, String)> = BTreeSet::new();
    let mut copies: BTreeMap<(&str, &str), (usize, u64)> = BTreeMap::new();
    let mut delivered_files: BTreeSet<&str> = BTreeSet::new();
    let mut pairs: BTreeMap<(String, String), PairAccount> = BTreeMap::new();
    let mentioned = |pairs: &mut BTreeMap<(String, String), PairAccount>, msg: &str, rcpt: &str| {
        let account = pairs.entry((msg.to_string(), mailbox_of(rcpt))).or_default();
        if account.rcpt.is_empty() {
            account.rcpt = rcpt.to_string();
        }
    };
    for record in records {
        match &record.event {
            Event::SenderPolicy { policy, .. } => {
                policy_of_host.insert(&record.host, policy);
            }
            Event::Submit(submit) => {
                let (msg, rcpts) = (&submit.msg, &submit.rcpts);
                sender_of_msg.insert(msg, (&record.host, policy_of_host.get(&*record.host).copied().unwrap_or("?"), record.t_ms));
                rcpts.iter().for_each(|rcpt| mentioned(&mut pairs, msg, rcpt));
            }
            Event::MxDataEnd(end) if end.reply.starts_with('2') => {
                for rcpt in &end.rcpts {
                    accepted.insert((&end.msg, mailbox_of(rcpt)));
                }
            }
            Event::StoreDelivered(stored) => {
                delivered_files.insert(&stored.file);
                copies.entry((&stored.msg, &stored.mailbox)).or_insert((0, record.t_ms)).0 += 1;
            }
            // The first 2xx for a copy published just before a store crash (as A2 counts it).
            Event::StoreRetryRecognised(stored) if !delivered_files.contains(stored.file.as_str()) => {
                delivered_files.insert(&stored.file);
                copies.entry((&stored.msg, &stored.mailbox)).or_insert((0, record.t_ms)).0 += 1;
            }
            // A delivered copy keeps being the same copy under the names the store moves it to
            // (read mail goes into cur/), as the disk recorded them.
            Event::DiskRename { from, to } if &*record.host == "store" && delivered_files.contains(from.as_str()) => {
                delivered_files.insert(to);
            }
            _ => {}
        }
    }
    add_expected_fates(records, &mut pairs);
    for record in records {
        match &record.event {
            Event::SenderOutcome { msg, rcpt, outcome, .. } => {
                mentioned(&mut pairs, msg, rcpt);
                let row = &mut pairs.entry((msg.to_string(), mailbox_of(rcpt))).or_default().outcomes;
                match outcome {
                    Outcome::Delivered => row.delivered += 1,
                    Outcome::Bounced => row.bounced_5xx += 1,
                    Outcome::Expired => row.bounced_expiry += 1,
                }
            }
            Event::DsnSent(sent) if sent.kind == "delay" => {
                let msg = &sent.msg;
                for rcpt in &sent.rcpts {
                    mentioned(&mut pairs, msg, rcpt);
                    pairs.entry((msg.to_string(), mailbox_of(rcpt))).or_default().outcomes.delay_notified += 1;
                }
            }
            _ => {}
        }
    }
    for ((msg, mailbox), (count, first_ms)) in &copies {
        let account = pairs.entry((msg.to_string(), mailbox.to_string())).or_default();
        account.first_copy_ms = Some(*first_ms);
        if *count > 1 {
            account.outcomes.duplicated += 1;
        }
    }
    let reported = ReportedLosses::of(records);
    let mut returned: BTreeSet<(String, String)> = BTreeSet::new();
    for dsn in check::dsns::read(records).into_iter().filter(|dsn| dsn.by == "mx") {
        for rcpt in &dsn.rcpts {
            if returned.insert((dsn.msg.to_string(), mailbox_of(rcpt))) {
                pairs.entry((dsn.msg.to_string(), mailbox_of(rcpt))).or_default().outcomes.returned += 1;
            }
        }
    }
    for (msg, mailbox) in &accepted {
        // A loss the run reported is counted under `reported:`, not as a silent one.
        let back = returned.contains(&(msg.to_string(), mailbox.clone()));
        if !copies.contains_key(&(*msg, mailbox.as_str())) && !reported.covers(mailbox, msg) && !back {
            pairs.entry((msg.to_string(), mailbox.clone())).or_default().outcomes.lost += 1;
        }
    }
    for (mailbox, msg) in &reported.lost_to_rollback {
        pairs.entry((msg.to_string(), mailbox.to_string())).or_default().outcomes.lost_to_rollback += 1;
    }
    for (mailbox, msg) in &reported.damaged {
        pairs.entry((msg.to_string(), mailbox.to_string())).or_default().outcomes.damaged_reported += 1;
    }
    for ((msg, mailbox), account) in pairs.iter_mut() {
        let (host, policy, submitted_ms) = sender_of_msg.get(msg.as_str()).copied().map_or(("?", "?", None), |(host, policy, at)| (host, policy, Some(at)));
        account.host = host.to_string();
        account.policy = policy.to_string();
        account.submitted_ms = submitted_ms;
        if account.rcpt.is_empty() {
            account.rcpt = mailbox.clone();
        }
    }
    pairs
}

/// Outcome accounting per sender policy, from the history alone (two providers with one policy
/// share a row: `outcomes_by_provider` tells them apart).
pub fn outcomes_by_policy(records: &[Record]) -> BTreeMap<String, PolicyOutcomes> {
    sum_by(&pair_accounts(records), |account| account.policy.clone())
}

/// Outcome accounting per sending provider (its name, without `provider-`).
pub fn outcomes_by_provider(records: &[Record]) -> BTreeMap<String, PolicyOutcomes> {
    sum_by(&pair_accounts(records), |account| account.provider().to_string())
}

/// The pairs' outcomes summed per key; a row only where some pair counted something.
pub fn sum_by(pairs: &BTreeMap<(String, String), PairAccount>, key: impl Fn(&PairAccount) -> String) -> BTreeMap<String, PolicyOutcomes> {
    let mut table: BTreeMap<String, PolicyOutcomes> = BTreeMap::new();
    for account in pairs.values().filter(|account| account.outcomes != PolicyOutcomes::default()) {
        table.entry(key(account)).or_default().add(&account.outcomes);
    }
    table
}

/// In an outage, what each sender's policy predicts for the mail sent while the store was down.
fn add_expected_fates(records: &[Record], pairs: &mut BTreeMap<(String, String), PairAccount>) {
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
            Event::Submit(submit) if (outage.down_ms..outage.up_ms).contains(&record.t_ms) => {
                let (msg, rcpts) = (&submit.msg, &submit.rcpts);
                let Some(policy) = policies.get(&*record.host) else { continue };
                let fate = expected_fate(policy, record.t_ms, outage);
                for rcpt in rcpts {
                    let row = &mut pairs.entry((msg.to_string(), mailbox_of(rcpt))).or_default().outcomes;
                    match fate {
                        Fate::Delivered => row.expected_delivered += 1,
                        Fate::Expired => row.expected_expired += 1,
                        Fate::Unclear => {}
                    }
                }
            }
            _ => {}
        }
    }
}

fn mailbox_of(rcpt: &str) -> String {
    rcpt.rsplit_once('@').map(|(local, _)| local).unwrap_or(rcpt).to_ascii_lowercase()
}
