//! A3 one-reply: LMTP gives exactly one reply per accepted RCPT, in RCPT order, after the data
//! (RFC 2033 §4.2); a client that counts replies otherwise attributes them to the wrong
//! recipients. Judged on the wire as the network layer recorded it (`wire.rs`): a data phase
//! whose server read on (or let go of the connection) with replies still owed, a reply that answers nothing, a reply naming
//! another recipient than the one it answers. A phase cut short by a failed read or write is
//! judged on the replies that went out.

use super::facts::Facts;
use super::Violation;

pub fn check(facts: &Facts, out: &mut Vec<Violation>) {
    for phase in &facts.wire.short_phases {
        let replies: Vec<&str> = phase.replies.iter().map(|(_, reply)| reply.as_str()).collect();
        let mut evidence = vec![phase.end_at];
        evidence.extend(phase.replies.iter().map(|(at, _)| *at));
        evidence.push(phase.read_on_at);
        out.push(Violation::new(
            "A3",
            format!("store connection {}", phase.conn),
            format!("{} reply(ies) for {} accepted recipient(s) ({}) before the store read on or let go of the connection: {replies:?}", replies.len(), phase.accepted.len(), phase.accepted.join(",")),
            evidence,
        ));
    }
    for (at, conn, what) in &facts.wire.misplaced {
        out.push(Violation::new("A3", format!("store connection {conn}"), what.clone(), vec![*at]));
    }
}
