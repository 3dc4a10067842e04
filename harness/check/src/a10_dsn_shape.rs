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
use super::dsns::Dsn;
use super::wire::At;
use history::Event;
use mail::message::{self, DsnReport};

pub fn check(facts: &Facts, out: &mut Vec<Violation>) {
    let epoch_unix_s = facts.records.iter().find_map(|record| match record.event {
        Event::Clock { epoch_unix_s, .. } => Some(epoch_unix_s),
        _ => None,
    });
    for dsn in &facts.dsns {
        let (at, kind) = (dsn.at, &dsn.kind);
        let subject = format!("msg {} dsn ({kind})", dsn.msg);
        let report = match message::parse_dsn(dsn.content.as_bytes()) {
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
        for rcpt in dsn.rcpts.iter().filter(|rcpt| !reported.contains(&rcpt.to_ascii_lowercase())) {
            out.push(Violation::new("A10", subject.clone(), format!("recipient {rcpt} is missing from the delivery-status part"), vec![at]));
        }
        if let Some(epoch_unix_s) = epoch_unix_s {
            check_dates(facts, dsn, &report, epoch_unix_s, &subject, out);
        }
    }
}

/// The DSN's Date against when it was written, its Arrival-Date against when the reporting MTA
/// took the original: both on the run's wall-time base, to the second as RFC 5322 dates go.
/// A remote sender's notice is judged to the second (it is written where it is recorded); the
/// MX's, seen where it arrived, within the span between its earliest and latest possible moment.
fn check_dates(facts: &Facts, dsn: &Dsn, report: &DsnReport, epoch_unix_s: u64, subject: &str, out: &mut Vec<Violation>) {
    let second = |at: At| epoch_unix_s + facts.records[at].t_ms / 1000;
    let within = |value: Option<&str>, (from, to): (At, At)| {
        let parsed = value.and_then(message::rfc5322_date_unix_s);
        parsed.is_some_and(|unix_s| (second(from) as i64..=second(to) as i64).contains(&unix_s))
    };
    let span = |(from, to): (At, At)| match from == to {
        true => message::rfc5322_date(second(from)),
        false => format!("{} … {}", message::rfc5322_date(second(from)), message::rfc5322_date(second(to))),
    };
    if !within(report.date.as_deref(), dsn.written) {
        let date = report.date.as_deref().unwrap_or("(none)");
        out.push(Violation::new("A10", subject, format!("the DSN is dated {date}, but it was written at {}", span(dsn.written)), vec![dsn.at]));
    }
    let Some(arrived) = dsn.arrived else { return };
    if !within(report.arrival_date.as_deref(), arrived) {
        let arrival = report.arrival_date.as_deref().unwrap_or("(none)");
        let what = if dsn.by == "mx" { "the MX took the original" } else { "the original entered the sender's queue" };
        out.push(Violation::new("A10", subject, format!("Arrival-Date is {arrival}, but {what} at {}", span(arrived)), vec![arrived.0, dsn.at]));
    }
}
