//! A12 transient-for-infrastructure: a fault of the receiver's own infrastructure (storage
//! error, disk full, store unreachable) gets a 4xx, never a 5xx; and a reply's basic and
//! enhanced codes agree in class. RFC 3463.

use history::EventKind as K;
use super::facts::Facts;
use super::reply::codes;
use super::Violation;
use history::Event;

/// Permanent enhanced codes that a mail system may legitimately give for its own reasons.
fn is_policy_code(enhanced: &str) -> bool {
    // x.1.x addressing, x.5.x protocol, x.6.x content, x.7.x security, and 5.3.4 (too big).
    let subject = enhanced.split('.').nth(1).unwrap_or("");
    matches!(subject, "1" | "5" | "6" | "7") || enhanced == "5.3.4"
}

pub fn check(facts: &Facts, out: &mut Vec<Violation>) {
    for (at, record) in facts.records_of(&[K::MxDataEnd, K::MxRefusal, K::StoreRefusal]) {
        let (who, reply) = match &record.event {
            Event::MxDataEnd(end) => (format!("MX end of data for msg {}", end.msg), &end.reply),
            Event::MxRefusal { session, reply, .. } => (format!("MX session {session}"), reply),
            Event::StoreRefusal { mailbox, msg, reply } => (format!("store delivery of msg {msg} to {mailbox}"), reply),
            _ => continue,
        };
        let (Some(basic), enhanced) = codes(reply) else { continue };
        if let Some(enhanced) = enhanced {
            if enhanced.starts_with(|c: char| c.to_digit(10) != Some(u32::from(basic / 100))) {
                out.push(Violation::new("A12", who.clone(), format!("reply '{reply}': basic and enhanced codes disagree in class"), vec![at]));
                continue;
            }
        }
        if basic >= 500 && !enhanced.is_some_and(is_policy_code) {
            out.push(Violation::new("A12", who, format!("reply '{reply}': a permanent failure for what is not a policy decision (an infrastructure fault must be 4xx)"), vec![at]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_codes_are_told_from_infrastructure_codes() {
        assert!(is_policy_code("5.1.1"));
        assert!(is_policy_code("5.7.1"));
        assert!(is_policy_code("5.3.4"));
        assert!(!is_policy_code("5.3.0"));
        assert!(!is_policy_code("5.2.2"));
    }
}
