//! What crossed the servers' sockets, as the network layer recorded it (`Wire*` events), read
//! back into replies with the command each answers. A1 times acknowledgements by these records
//! and A3 counts LMTP's replies on them, so neither believes the stack's own account.
//!
//! Replies answer commands in order (RFC 5321 §4.3, RFC 2920 keeps that order when pipelining),
//! one each, except the end of an LMTP data phase: one reply per recipient accepted in that
//! transaction, in RCPT order (RFC 2033 §4.2). The server reads its next command only after it
//! has answered the data phase, so reading on (or reading the client's close) while replies are
//! still owed means they will never come.

use history::{Event, Record};
use rustc_hash::FxHashMap;
use std::collections::VecDeque;

/// A record index in the history (as `facts::At`; not imported, so this module stands alone).
pub type At = usize;

/// A reply to an end of data ("." after DATA, or BDAT … LAST).
pub struct DataReply {
    pub at: At,
    pub conn: String,
    /// On an LMTP connection (the store's), else SMTP (the MX's).
    pub lmtp: bool,
    /// LMTP: the recipient this reply is for (the accepted RCPT it answers, in order).
    pub rcpt: Option<String>,
    pub reply: String,
}

/// An LMTP data phase the server stopped answering: it read on (or let go of the connection)
/// with replies still owed.
pub struct ShortPhase {
    pub conn: String,
    pub end_at: At,
    pub read_on_at: At,
    pub accepted: Vec<String>,
    pub replies: Vec<(At, String)>,
}

#[derive(Default)]
pub struct Wire {
    pub data_replies: Vec<DataReply>,
    /// LMTP data phases with fewer replies than accepted recipients.
    pub short_phases: Vec<ShortPhase>,
    /// LMTP replies that answer no command (more replies than the data phase owed), or a
    /// reply that names another recipient than the one it answers in RCPT order.
    pub misplaced: Vec<(At, String, String)>,
}

enum Awaiting {
    Greeting,
    Mail,
    Rcpt(String),
    Rset,
    DataEnd,
    Other,
}

struct Pending {
    at: At,
    what: Awaiting,
    /// LMTP data end: the accepted recipients it owes a reply each, fixed once every earlier
    /// command is answered; and the replies it got.
    owed: Option<Vec<String>>,
    got: Vec<(At, String)>,
}

struct Connection<'a> {
    /// The server's host.
    host: &'a str,
    lmtp: bool,
    pending: VecDeque<Pending>,
    /// Recipients the open transaction accepted (2xx to RCPT), in order.
    accepted: Vec<String>,
    /// Set once the replies and commands no longer line up: nothing more is judged here.
    lost_step: bool,
}

/// Bound on commands awaiting replies on one connection: a client may pipeline, not flood.
const MAX_PENDING: usize = 10_000;

impl Wire {
    pub fn read(records: &[Record]) -> Wire {
        Wire::read_among(records.iter().enumerate())
    }

    /// The same, from the records that matter here: `Wire*`, crashes, restarts, fail points.
    pub fn read_among<'r>(records: impl Iterator<Item = (At, &'r Record)>) -> Wire {
        let mut wire = Wire::default();
        // Open connections only: a closed one is judged no further, and a crash looks at those
        // still open (a run opens tens of thousands).
        let mut connections: FxHashMap<&str, Connection> = FxHashMap::default();
        for (at, record) in records {
            match &record.event {
                Event::WireOpen { conn, protocol, .. } => {
                    let mut pending = VecDeque::new();
                    pending.push_back(Pending { at, what: Awaiting::Greeting, owed: None, got: Vec::new() });
                    connections.insert(conn, Connection { host: &record.host, lmtp: protocol == "lmtp", pending, accepted: Vec::new(), lost_step: false });
                }
                // A fail point fired (the world crashes the host next), the host crashed or was
                // restarted: what its connections do from now on is the world's doing, not an answer.
                Event::CrashPoint { .. } | Event::Crash | Event::Restart => {
                    for connection in connections.values_mut().filter(|c| c.host == &*record.host) {
                        connection.lost_step = true;
                    }
                }
                Event::WireCommand { conn, line } => {
                    if let Some(connection) = connections.get_mut(conn.as_str()).filter(|c| !c.lost_step) {
                        connection.command(&mut wire, conn, at, line);
                    }
                }
                Event::WireReply { conn, reply } => {
                    if let Some(connection) = connections.get_mut(conn.as_str()).filter(|c| !c.lost_step) {
                        connection.reply(&mut wire, conn, at, reply);
                    }
                }
                Event::WireClosed { conn, how } => {
                    if let Some(connection) = connections.get_mut(conn.as_str()).filter(|c| !c.lost_step) {
                        // The client closed while the server read on, or the server let go:
                        // either way it had stopped answering. A failure is no one's fault.
                        if how == "eof" || how == "closed by server" {
                            connection.read_on(&mut wire, conn, at);
                        }
                    }
                    connections.remove(conn.as_str());
                }
                _ => {}
            }
        }
        wire
    }
}

impl Connection<'_> {
    fn command(&mut self, wire: &mut Wire, conn: &str, at: At, line: &str) {
        self.read_on(wire, conn, at);
        if self.lost_step {
            return;
        }
        let verb = line.split_ascii_whitespace().next().unwrap_or("");
        let is = |name: &str| verb.eq_ignore_ascii_case(name);
        let last_chunk = is("BDAT") && line.split_ascii_whitespace().nth(2).is_some_and(|word| word.eq_ignore_ascii_case("LAST"));
        let what = if verb == "." || last_chunk {
            Awaiting::DataEnd
        } else if is("MAIL") {
            Awaiting::Mail
        } else if is("RCPT") {
            Awaiting::Rcpt(angle_address(line).unwrap_or_default())
        } else if is("RSET") {
            Awaiting::Rset
        } else {
            Awaiting::Other
        };
        if self.pending.len() >= MAX_PENDING {
            self.lost_step = true;
            return;
        }
        self.pending.push_back(Pending { at, what, owed: None, got: Vec::new() });
        self.settle_head();
    }

    /// The server read on (a command, or the client's close): an LMTP data phase at the head
    /// that still owes replies never gets them.
    fn read_on(&mut self, wire: &mut Wire, conn: &str, at: At) {
        // (Also called for the server closing the connection: it will never answer either.)
        let Some(head) = self.pending.front() else { return };
        let Some(owed) = &head.owed else { return };
        if head.got.len() < owed.len() {
            wire.short_phases.push(ShortPhase { conn: conn.to_string(), end_at: head.at, read_on_at: at, accepted: owed.clone(), replies: head.got.clone() });
            self.lost_step = true;
        }
    }

    /// Fixes what an LMTP data end at the head owes: every earlier command is answered now.
    fn settle_head(&mut self) {
        if let Some(head) = self.pending.front_mut() {
            if self.lmtp && matches!(head.what, Awaiting::DataEnd) && head.owed.is_none() {
                head.owed = Some(self.accepted.clone());
            }
        }
    }

    fn reply(&mut self, wire: &mut Wire, conn: &str, at: At, reply: &str) {
        let Some(head) = self.pending.front_mut() else {
            if self.lmtp {
                wire.misplaced.push((at, conn.to_string(), format!("reply {reply:?} answers no command")));
                self.lost_step = true;
            }
            return;
        };
        let positive = reply.starts_with('2');
        match (&head.what, &head.owed) {
            (Awaiting::DataEnd, Some(owed)) => {
                let rcpt = owed.get(head.got.len()).cloned();
                if let (Some(expected), Some(named)) = (&rcpt, angle_address(reply)) {
                    if !named.eq_ignore_ascii_case(expected) {
                        wire.misplaced.push((at, conn.to_string(), format!("reply {reply:?} answers RCPT <{expected}> in RCPT order")));
                    }
                }
                wire.data_replies.push(DataReply { at, conn: conn.to_string(), lmtp: true, rcpt, reply: reply.to_string() });
                head.got.push((at, reply.to_string()));
                if head.got.len() < owed.len() {
                    return;
                }
                self.accepted.clear();
            }
            (Awaiting::DataEnd, None) => {
                wire.data_replies.push(DataReply { at, conn: conn.to_string(), lmtp: self.lmtp, rcpt: None, reply: reply.to_string() });
                self.accepted.clear();
            }
            (Awaiting::Mail | Awaiting::Rset, _) => self.accepted.clear(),
            (Awaiting::Rcpt(address), _) if positive => self.accepted.push(address.clone()),
            _ => {}
        }
        self.pending.pop_front();
        self.settle_head();
    }
}

/// The address between the first `<` and the following `>`, if any.
fn angle_address(text: &str) -> Option<String> {
    let start = text.find('<')? + 1;
    let end = start + text[start..].find('>')?;
    Some(text[start..end].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(events: Vec<Event>) -> Vec<Record> {
        events.into_iter().map(|event| Record { t_ms: 0, host: "store".into(), event }).collect()
    }

    fn open(protocol: &str) -> Event {
        Event::WireOpen { conn: "c".into(), protocol: protocol.into(), peer: "mx".into() }
    }
    fn cmd(line: &str) -> Event {
        Event::WireCommand { conn: "c".into(), line: line.into() }
    }
    fn rep(reply: &str) -> Event {
        Event::WireReply { conn: "c".into(), reply: reply.into() }
    }

    fn lmtp_phase(replies: &[&str], then: Event) -> Wire {
        let mut events = vec![open("lmtp"), rep("220 hi"), cmd("LHLO mx"), rep("250 ok"), cmd("MAIL FROM:<s@x>"), cmd("RCPT TO:<a@d>"), cmd("RCPT TO:<nobody@d>"), cmd("RCPT TO:<b@d>"), cmd("DATA")];
        events.extend([rep("250 ok"), rep("250 ok"), rep("550 no such mailbox"), rep("250 ok"), rep("354 go"), cmd(".")]);
        events.extend(replies.iter().map(|reply| rep(reply)));
        events.push(then);
        Wire::read(&records(events))
    }

    #[test]
    fn an_lmtp_data_phase_owes_one_reply_per_accepted_recipient() {
        let wire = lmtp_phase(&["250 <a@d> delivered", "451 <b@d> busy"], cmd("QUIT"));
        assert!(wire.short_phases.is_empty() && wire.misplaced.is_empty());
        let rcpts: Vec<_> = wire.data_replies.iter().map(|reply| reply.rcpt.clone().unwrap()).collect();
        assert_eq!(rcpts, ["a@d", "b@d"]);
    }

    #[test]
    fn reading_on_with_replies_owed_is_a_short_phase() {
        let wire = lmtp_phase(&["250 <a@d> delivered"], Event::WireClosed { conn: "c".into(), how: "eof".into() });
        assert_eq!(wire.short_phases.len(), 1);
        assert_eq!(wire.short_phases[0].accepted, ["a@d", "b@d"]);
        // A write that failed cuts the phase short without blame.
        let cut = lmtp_phase(&["250 <a@d> delivered"], Event::WireClosed { conn: "c".into(), how: "error: broken pipe".into() });
        assert!(cut.short_phases.is_empty());
    }

    #[test]
    fn extra_or_out_of_order_replies_are_misplaced() {
        let extra = lmtp_phase(&["250 <a@d> delivered", "250 <b@d> delivered", "250 <b@d> delivered"], cmd("QUIT"));
        assert_eq!(extra.misplaced.len(), 1, "one reply too many");
        let swapped = lmtp_phase(&["250 <b@d> delivered", "250 <a@d> delivered"], cmd("QUIT"));
        assert_eq!(swapped.misplaced.len(), 2);
    }

    #[test]
    fn smtp_pipelined_replies_pair_in_order() {
        let events = vec![open("smtp"), rep("220 hi"), cmd("EHLO p"), rep("250 ok"), cmd("MAIL FROM:<s@x>"), cmd("RCPT TO:<a@d>"), cmd("BDAT 10 LAST"), cmd("QUIT"), rep("250 ok"), rep("250 ok"), rep("250 queued as Q"), rep("221 bye")];
        let wire = Wire::read(&records(events));
        assert_eq!(wire.data_replies.len(), 1);
        assert_eq!(wire.data_replies[0].reply, "250 queued as Q");
        assert_eq!(wire.data_replies[0].rcpt, None);
    }
}
