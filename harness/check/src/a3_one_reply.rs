//! A3 one-reply: LMTP gives exactly one reply per accepted RCPT, in RCPT order, after the data
//! (RFC 2033 §4.2); a client that counts replies otherwise attributes them to the wrong
//! recipients. Judged from the store's own account of each data phase; a phase cut short by a
//! lost connection is judged on the replies it did send.

use super::facts::Facts;
use super::Violation;
use history::Event;

pub fn check(facts: &Facts, out: &mut Vec<Violation>) {
    for (at, record) in facts.records.iter().enumerate() {
        let Event::LmtpDataEnd { session, accepted, replied, connection_lost } = &record.event else { continue };
        let in_order = replied.iter().zip(accepted).all(|(sent, expected)| sent == expected);
        let complete = replied.len() == accepted.len() || (*connection_lost && replied.len() < accepted.len());
        if !in_order || !complete {
            out.push(Violation::new(
                "A3",
                format!("store {session}"),
                format!("{} reply(ies) for {} accepted recipient(s) ({} replied, {} accepted)", replied.len(), accepted.len(), replied.join(","), accepted.join(",")),
                vec![at],
            ));
        }
    }
}
