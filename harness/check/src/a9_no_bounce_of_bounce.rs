//! A9 no-bounce-of-bounce: every DSN goes out with MAIL FROM:<> to the original's envelope
//! reverse-path (never to a header address such as From or Reply-To), and nothing generates a
//! DSN for a message whose reverse-path is <>. RFC 5321 §4.5.5, §6.1, RFC 3464 §2.

use super::facts::Facts;
use super::Violation;

pub fn check(facts: &Facts, out: &mut Vec<Violation>) {
    for dsn in &facts.dsns {
        let (at, msg, mail_from, to) = (dsn.at, &dsn.msg, &dsn.mail_from, &dsn.to);
        if !mail_from.is_empty() {
            out.push(Violation::new("A9", format!("msg {msg}"), format!("a DSN was sent with MAIL FROM:<{mail_from}> instead of <>"), vec![at]));
        }
        let original = facts.submitted.get(msg.as_str());
        if let Some((submitted, from, ..)) = original.filter(|(_, from, ..)| !from.is_empty() && !to.is_empty() && to != from) {
            out.push(Violation::new("A9", format!("msg {msg}"), format!("a DSN went to <{to}>, not to the original's envelope reverse-path <{from}>"), vec![*submitted, at]));
        }
        let original_is_bounce = original.map(|(_, from, ..)| from.is_empty());
        if original_is_bounce == Some(true) || to.is_empty() {
            let mut evidence = vec![at];
            evidence.extend(facts.submitted.get(msg.as_str()).map(|(submitted, ..)| *submitted));
            evidence.sort();
            out.push(Violation::new("A9", format!("msg {msg}"), "a DSN was generated for a message whose reverse-path is <> (a bounce of a bounce)", evidence));
        }
    }
}
