//! A21 overload-degrades-to-4xx: under load the MX may delay, tarpit, or answer 421 4.7.0 /
//! 452 4.3.1 / 451 4.3.2; it never answers 5xx because of load and never acknowledges mail it
//! did not queue. Postfix STRESS_README ("no mail should be lost").

use history::EventKind as K;
use super::facts::Facts;
use super::Violation;
use history::Event;

/// Enhanced codes that name load or resource shortage (RFC 3463).
fn is_load_code(enhanced: &str) -> bool {
    let mut parts = enhanced.splitn(2, '.');
    let _class = parts.next();
    matches!(parts.next(), Some("3.1" | "3.2" | "4.5" | "7.0"))
}

pub fn check(facts: &Facts, out: &mut Vec<Violation>) {
    for (at, record) in facts.records_of(&[K::MxRefusal, K::MxDataEnd]) {
        match &record.event {
            Event::MxRefusal { reply, session, .. } => {
                let enhanced = reply.split_whitespace().nth(1).unwrap_or("");
                if reply.starts_with('5') && is_load_code(enhanced) {
                    out.push(Violation::new("A21", format!("MX session {session}"), format!("answered '{reply}': load must be answered with 4xx, never 5xx"), vec![at]));
                }
            }
            Event::MxDataEnd(end) if end.queue_file.is_none() && end.reply.starts_with('2') => {
                out.push(Violation::new("A21", format!("msg {} rcpts {}", end.msg, end.rcpts.join(",")), format!("acknowledged ({}) without writing a queue file: accepted and dropped", end.reply), vec![at]));
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_codes_are_recognised() {
        assert!(is_load_code("4.7.0") && is_load_code("5.3.2") && is_load_code("4.3.1"));
        assert!(!is_load_code("5.7.1") && !is_load_code("5.1.1"));
    }
}
