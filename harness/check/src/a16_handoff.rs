//! A16 handoff: the MX queue drops a recipient only after the next hop's 2xx for it; on a 4xx
//! it stays queued; and once it has recorded a recipient as done it never hands that recipient
//! over again from the same queue file (a crash must not bring a finished queue entry back: the
//! unlink or rewrite that recorded it is synced first). Postfix qmgr.

use history::EventKind as K;
use super::facts::Facts;
use super::Violation;
use history::Event;
use std::collections::BTreeMap;

pub fn check(facts: &Facts, out: &mut Vec<Violation>) {
    // (queue file, rcpt) → where the queue recorded it done.
    let mut finished: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for (at, record) in facts.records_of(&[K::QueueRecorded, K::LmtpReply]) {
        match &record.event {
            Event::QueueRecorded { queue_file, msg, done, .. } => {
                for rcpt in done {
                    let acknowledged = facts.first_lmtp_ok.get(&(queue_file.as_str(), rcpt.as_str())).is_some_and(|&ok_at| ok_at < at);
                    if !acknowledged {
                        out.push(Violation::new("A16", format!("msg {msg} rcpt {rcpt}"), format!("dropped from queue file {queue_file} without a 2xx from the store"), vec![at]));
                    }
                    finished.entry((queue_file, rcpt)).or_insert(at);
                }
            }
            // Found by `cargo xtask swarm-power`: once the store recognised retries across its
            // own restarts, a finished queue file that an MX crash brought back no longer made
            // a second copy (A13), and nothing else saw the queue hand the recipient over again.
            Event::LmtpReply { queue_file, msg, rcpt, .. } => {
                if let Some(&done_at) = finished.get(&(queue_file.as_str(), rcpt.as_str())) {
                    let why = format!("handed to the store again from queue file {queue_file} after the queue had recorded it done (record #{done_at}): the finished entry came back");
                    out.push(Violation::new("A16", format!("msg {msg} rcpt {rcpt}"), why, vec![done_at, at]));
                    finished.remove(&(queue_file.as_str(), rcpt.as_str()));
                }
            }
            _ => {}
        }
    }
}
