//! A10 dsn-shape: a DSN is multipart/report; report-type=delivery-status, with a human part and
//! a message/delivery-status part (Reporting-MTA; per recipient Final-Recipient, Action,
//! Status), and Action and Status agree: failed → 5.x.x, delayed → 4.x.x. Judged by parsing
//! the DSN as sent. RFC 3464.
//!
//! Its dates are true: the DSN's Date is when it was sent (RFC 5322 §3.6.1: the moment the
//! message was ready to go, here the sender's simulated now on the run's wall-time base), and
//! its Arrival-Date is when the reporting MTA received the original (RFC 3464 §2.2.5), here the
//! moment the workload handed it to the sender (`Submit`), not the DSN's own time.

use super::facts::Facts;
use super::Violation;
use history::{Event, Record};
use mail::message::{self, DsnReport};

pub fn check(facts: &Facts, out: &mut Vec<Violation>) {
    let epoch_unix_s = facts.records.iter().find_map(|record| match record.event {
        Event::Clock { epoch_unix_s, .. } => Some(epoch_unix_s),
        _ => None,
    });
    for (at, record) in facts.records.iter().enumerate() {
        let Event::DsnSent { msg, kind, rcpts, content, .. } = &record.event else { continue };
        let subject = format!("msg {msg} dsn ({kind})");
        let report = match message::parse_dsn(content.as_bytes()) {
            Ok(report) => report,
            Err(why) => {
                out.push(Violation::new("A10", subject, format!("not an RFC 3464 delivery status notification: {why}"), vec![at]));
                continue;
            }
        };
        let expected_action = if kind == "delay" { "delayed" } else { "failed" };
        for (recipient, action, _) in &report.recipients {
            if !action.eq_ignore_ascii_case(expected_action) {
                out.push(Violation::new("A10", subject.clone(), format!("recipient {recipient} has Action: {action}, expected {expected_action}"), vec![at]));
            }
        }
        let reported: Vec<String> = report.recipients.iter().map(|(recipient, ..)| recipient.to_ascii_lowercase()).collect();
        for rcpt in rcpts.iter().filter(|rcpt| !reported.contains(&rcpt.to_ascii_lowercase())) {
            out.push(Violation::new("A10", subject.clone(), format!("recipient {rcpt} is missing from the delivery-status part"), vec![at]));
        }
        if let Some(epoch_unix_s) = epoch_unix_s {
            check_dates(facts, (at, record), &report, epoch_unix_s, &subject, out);
        }
    }
}

/// The DSN's Date against the moment it was sent, its Arrival-Date against the original's
/// submission: both on the run's wall-time base, to the second as RFC 5322 dates go.
fn check_dates(facts: &Facts, (at, record): (usize, &Record), report: &DsnReport, epoch_unix_s: u64, subject: &str, out: &mut Vec<Violation>) {
    let Event::DsnSent { msg, .. } = &record.event else { return };
    let sent = message::rfc5322_date(epoch_unix_s + record.t_ms / 1000);
    if report.date.as_deref() != Some(sent.as_str()) {
        let date = report.date.as_deref().unwrap_or("(none)");
        out.push(Violation::new("A10", subject, format!("the DSN is dated {date}, but it was sent at {sent}"), vec![at]));
    }
    let Some(&(submitted, ..)) = facts.submitted.get(msg) else { return };
    let arrived = message::rfc5322_date(epoch_unix_s + facts.records[submitted].t_ms / 1000);
    if report.arrival_date.as_deref() != Some(arrived.as_str()) {
        let arrival = report.arrival_date.as_deref().unwrap_or("(none)");
        out.push(Violation::new("A10", subject, format!("Arrival-Date is {arrival}, but the original entered the sender's queue at {arrived}"), vec![submitted, at]));
    }
}
