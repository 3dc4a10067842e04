//! A16 handoff: the MX queue drops a recipient only after the next hop's 2xx for it; on a 4xx
//! it stays queued. Postfix qmgr.

use super::facts::Facts;
use super::Violation;
use crate::history::Event;

pub fn check(facts: &Facts, out: &mut Vec<Violation>) {
    for (at, record) in facts.records.iter().enumerate() {
        let Event::QueueRecorded { queue_file, msg, done, .. } = &record.event else { continue };
        for rcpt in done {
            let acknowledged = facts.records[..at].iter().any(|r| {
                matches!(&r.event, Event::LmtpReply { queue_file: f, rcpt: r, reply, .. } if f == queue_file && r == rcpt && reply.starts_with('2'))
            });
            if !acknowledged {
                out.push(Violation::new("A16", format!("msg {msg} rcpt {rcpt}"), format!("dropped from queue file {queue_file} without a 2xx from the store"), vec![at]));
            }
        }
    }
}
