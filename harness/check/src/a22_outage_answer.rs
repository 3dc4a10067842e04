//! A22 outage-answer: while its storage is down an MX refuses connections or answers 4xx, never
//! 5xx (January 2023 answered 5xx, and every sender bounced what it held). And given each
//! sender's policy and the outage's length, the fate of every message is predictable: delivered
//! after recovery if the sender was still retrying then, returned on expiry otherwise. Under a
//! 4xx or closed-port answer the actual fate must match the prediction.

use history::EventKind as K;
use super::facts::{Facts, SenderPolicy};
use super::reply::subject;
use super::Violation;
use history::{Event, Outcome, Stage};
use mail::policy::RetryPolicy;
use std::collections::BTreeMap;

/// The outage as the history shows it: [down_ms, up_ms).
#[derive(Clone, Copy, Debug)]
pub struct Outage {
    pub down_ms: u64,
    pub up_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    Delivered,
    Expired,
    /// Too close to the boundary to call: within one retry interval of the lifetime.
    Unclear,
}

/// The first outage of a history, if any.
pub fn outage(facts_records: &[history::Record]) -> Option<Outage> {
    let down = facts_records.iter().find(|r| matches!(r.event, Event::Outage { down: true }))?;
    let up = facts_records.iter().find(|r| matches!(r.event, Event::Outage { down: false }) && r.t_ms >= down.t_ms);
    Some(Outage { down_ms: down.t_ms, up_ms: up.map(|r| r.t_ms).unwrap_or(u64::MAX) })
}

/// What a sender with this policy does with a message submitted at `submitted_ms` when the MX
/// is unreachable (4xx or refused) throughout the outage.
pub fn expected_fate(policy: &SenderPolicy, submitted_ms: u64, outage: Outage) -> Fate {
    if submitted_ms >= outage.up_ms {
        return Fate::Delivered;
    }
    if submitted_ms < outage.down_ms {
        // Sent before the outage: most got through in time, the last ones met it; not judged.
        return Fate::Unclear;
    }
    if !policy.retries {
        return Fate::Expired;
    }
    let Some(shape) = RetryPolicy::built_in(&policy.name, policy.time_scale) else { return Fate::Unclear };
    // The sender must still be retrying when the MX comes back.
    let wait_s = outage.up_ms.saturating_sub(submitted_ms) as f64 / 1000.0;
    let stage = shape.stages.get(shape.stage_index(wait_s));
    // The message's next turn after recovery may come one interval late, and later still when
    // the destination was suspended then (a site failure just before the MX came back keeps a
    // sender away for its smallest interval: Postfix's dead destination).
    let suspension_s = shape.min_interval_s();
    let slack_s = stage.map(|stage| stage.max_interval_s.unwrap_or(stage.interval_s)).unwrap_or(0.0) + suspension_s + 0.01 * shape.lifetime_s;
    if wait_s + slack_s < shape.lifetime_s {
        Fate::Delivered
    } else if wait_s > shape.lifetime_s + slack_s {
        Fate::Expired
    } else {
        Fate::Unclear
    }
}

pub fn check(facts: &Facts, out: &mut Vec<Violation>) {
    let Some(outage) = outage(facts.records) else { return };
    let mut answered_5xx = false;
    for (at, record) in facts.records_of(&[K::MxRefusal, K::MxDataEnd]) {
        if !(outage.down_ms..outage.up_ms).contains(&record.t_ms) {
            continue;
        }
        let reply = match &record.event {
            Event::MxRefusal { reply, .. } => reply,
            Event::MxDataEnd(end) => &end.reply,
            _ => continue,
        };
        if reply.starts_with('5') && !about_the_mail(reply) && !answered_5xx {
            answered_5xx = true;
            out.push(Violation::new("A22", "MX", format!("answered '{reply}' while its storage was down: senders bounce what they hold (the January 2023 choice); an outage must be answered with 4xx or a closed port"), vec![at]));
        }
    }
    if answered_5xx {
        return;
    }
    let failures_elsewhere = failures_outside(facts.records, outage);
    for (msg, (submitted, _, rcpts, _)) in facts.submitted_in_order() {
        let Some(policy) = facts.policy_of_message(msg) else { continue };
        let expected = expected_fate(policy, facts.records[*submitted].t_ms, outage);
        for rcpt in rcpts.iter() {
            let Some(outcomes) = facts.outcomes.get(&(msg, rcpt.as_str())) else { continue };
            let Some(&(at, actual)) = outcomes.first() else { continue };
            let mismatch = match (expected, actual) {
                (Fate::Delivered, Outcome::Expired) if !delayed_elsewhere(&failures_elsewhere, &facts.records[*submitted], at) => Some("returned on expiry, but its sender's policy outlives the outage"),
                (Fate::Expired, Outcome::Delivered) => Some("delivered, but its sender's policy should have given up before the outage ended"),
                _ => None,
            };
            if let Some(why) = mismatch {
                out.push(Violation::new("A22", format!("msg {msg} rcpt {rcpt}"), format!("{why} (policy {})", policy.name), vec![*submitted, at]));
            }
        }
    }
}

/// A 5xx that judges the mail itself, not the MX's state: an unknown address (x.1.x) or a
/// command the client got wrong (x.5.x, such as an invalid parameter). It is as right during an
/// outage as outside one; the 2023 answer refused good mail (550 5.2.1 mailbox unavailable).
fn about_the_mail(reply: &str) -> bool {
    matches!(subject(reply), Some("1" | "5"))
}

/// Messages whose sender met a transient failure outside the outage (a partition, an MX lookup
/// failure, a closed port, a crash before or after it): the outage alone no longer predicts when
/// the sender's lifetime runs out, so an expiry is not held against the prediction.
/// A sender's transient failure outside the outage: record number, time, message, and whether
/// the destination refused the session as a whole (no connection, a 4xx greeting).
struct Failure<'a> {
    at: usize,
    t_ms: u64,
    msg: &'a str,
    site: bool,
}

/// Per sender host, its transient failures outside the outage.
fn failures_outside(records: &[history::Record], outage: Outage) -> BTreeMap<&str, Vec<Failure<'_>>> {
    let outside = |t_ms: u64| !(outage.down_ms..outage.up_ms).contains(&t_ms);
    let mut failures: BTreeMap<&str, Vec<Failure>> = BTreeMap::new();
    for (at, record) in records.iter().enumerate().filter(|(_, record)| outside(record.t_ms)) {
        let (msg, site) = match &record.event {
            Event::SmtpReply { msg, reply, stage, .. } if reply.starts_with('4') => (msg, *stage == Stage::Greeting),
            Event::SmtpFailure { msg, stage, .. } => (msg, matches!(stage, Stage::Connect | Stage::Greeting)),
            _ => continue,
        };
        failures.entry(&*record.host).or_default().push(Failure { at, t_ms: record.t_ms, msg, site });
    }
    failures
}

/// Whether a message was delayed by something besides the outage before its outcome at
/// `until`: a transient failure of its own outside the outage, or a site failure of its sender
/// after it was submitted (a destination that refused a session is suspended for every message,
/// as Postfix's dead destination is, so one message's failure delays the others' turns).
fn delayed_elsewhere(failures: &BTreeMap<&str, Vec<Failure>>, submitted: &history::Record, until: usize) -> bool {
    let (Some(of_sender), Event::Submit(submit)) = (failures.get(&*submitted.host), &submitted.event) else { return false };
    let msg = &submit.msg;
    of_sender.iter().any(|failure| failure.at < until && (failure.msg == msg.as_str() || (failure.site && failure.t_ms >= submitted.t_ms)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_5xx_about_the_address_or_the_syntax_is_not_an_outage_answer() {
        assert!(about_the_mail("550 5.1.1 no such user here"));
        assert!(about_the_mail("555 5.5.4 unsupported RCPT parameter SIZE"));
        assert!(!about_the_mail("550 5.2.1 mailbox unavailable"));
        assert!(!about_the_mail("554 5.3.0 storage error"));
        assert!(!about_the_mail("550 mailbox unavailable"));
    }

    #[test]
    fn only_failures_outside_the_outage_count_as_delay_elsewhere() {
        let record = |t_ms: u64, msg: &str, event: &str| history::Record {
            t_ms,
            host: "provider-a".into(),
            event: match event {
                "submit" => Event::Submit(Box::new(history::Submit { msg: msg.into(), from: "s@a.test".into(), rcpts: vec![], digest: Default::default(), size: 0, longest_line: 0, invalid_param: None })),
                "site" => Event::SmtpFailure { session: "s".into(), msg: msg.into(), stage: history::Stage::Connect, error: "refused".into() },
                _ => Event::SmtpFailure { session: "s".into(), msg: msg.into(), stage: history::Stage::Rcpt, error: "timed out".into() },
            },
        };
        let outage = Outage { down_ms: 100, up_ms: 1_000 };
        // A message of its own failed inside the outage only; another's site failure came after.
        let records = vec![record(200, "mine", "submit"), record(500, "mine", "site"), record(2_000, "other", "site"), record(3_000, "other", "rcpt")];
        let failures = failures_outside(&records, outage);
        assert!(delayed_elsewhere(&failures, &records[0], 4), "the sender's site failure after the outage suspends every message");
        assert!(!delayed_elsewhere(&failures, &records[0], 2), "a failure inside the outage is the outage's");
        let later = vec![records[0].clone(), record(3_000, "other", "rcpt")];
        assert!(!delayed_elsewhere(&failures_outside(&later, outage), &later[0], 2), "another message's recipient failure delays only that message");
    }
}
