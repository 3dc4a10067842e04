//! A16 handoff: the MX queue drops a recipient only after the next hop's 2xx for it; on a 4xx
//! it stays queued. Postfix qmgr.

use super::facts::Facts;
use super::Violation;
use history::Event;

pub fn check(facts: &Facts, out: &mut Vec<Violation>) {
    for (at, record) in facts.records.iter().enumerate() {
        let Event::QueueRecorded { queue_file, msg, done, .. } = &record.event else { continue };
        for rcpt in done {
            let acknowledged = facts.first_lmtp_ok.get(&(queue_file.clone(), rcpt.clone())).is_some_and(|&ok_at| ok_at < at);
            if !acknowledged {
                out.push(Violation::new("A16", format!("msg {msg} rcpt {rcpt}"), format!("dropped from queue file {queue_file} without a 2xx from the store"), vec![at]));
            }
        }
    }
}
