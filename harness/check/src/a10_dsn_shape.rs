//! A10 dsn-shape: a DSN is multipart/report; report-type=delivery-status, with a human part and
//! a message/delivery-status part (Reporting-MTA; per recipient Final-Recipient, Action,
//! Status), and Action and Status agree: failed → 5.x.x, delayed → 4.x.x. Judged by parsing
//! the DSN as sent. RFC 3464.

use super::facts::Facts;
use super::Violation;
use history::Event;
use mail::message;

pub fn check(facts: &Facts, out: &mut Vec<Violation>) {
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
    }
}
