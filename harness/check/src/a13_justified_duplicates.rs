//! A13 justified-duplicates: a second mailbox copy of the same (message, recipient) is allowed
//! only when the history shows its cause. RFC 1047; RFC 5321 §4.5.3.2.6.
//!
//! Copies that the queue never durably recorded as done are explained (the store's 2xx was not
//! seen, or a crash or a storage error came between the 2xx and the record). What remains is
//! the number of queue entries completed for the pair; each entry beyond the first needs an
//! MX acknowledgement that the sender never saw (a cut after the final dot, a timeout), which
//! made the sender send again.

use super::facts::Facts;
use super::Violation;
use std::collections::BTreeMap;

pub fn check(facts: &Facts, out: &mut Vec<Violation>) {
    let mut copies: BTreeMap<(String, String), Vec<usize>> = BTreeMap::new();
    for delivery in &facts.deliveries {
        copies.entry((delivery.msg.clone(), delivery.mailbox.clone())).or_default().push(delivery.at);
    }
    for ((msg, mailbox), ats) in copies {
        if ats.len() < 2 {
            continue;
        }
        let rcpt_key = |rcpt: &String| Facts::mailbox_of(rcpt) == mailbox;
        let acks = facts.acks_of_message(&msg).filter(|(_, _, rcpts, ..)| rcpts.iter().any(rcpt_key)).count();
        let of_msg = |key: &(String, String)| key.0 == msg;
        let range = (msg.clone(), String::new())..;
        let seen: usize = facts.sender_saw_ack.range(range.clone()).take_while(|(key, _)| of_msg(key)).filter(|((_, rcpt), _)| rcpt_key(rcpt)).map(|(_, count)| count).sum();
        let recorded: Vec<usize> =
            facts.queue_recorded.range(range).take_while(|(key, _)| of_msg(key)).filter(|((_, rcpt), _)| rcpt_key(rcpt)).flat_map(|(_, ats)| ats.clone()).collect();
        let unseen_acks = acks.saturating_sub(seen);
        if recorded.len() > 1 + unseen_acks {
            let mut evidence = ats.clone();
            evidence.extend(recorded.iter().copied());
            evidence.sort();
            out.push(Violation::new(
                "A13",
                format!("msg {msg} mailbox {mailbox}"),
                format!(
                    "{} mailbox copies; {} queue entries completed, but only {} MX acknowledgement(s) went unseen by the sender: the duplicate has no cause in the history",
                    ats.len(),
                    recorded.len(),
                    unseen_acks
                ),
                evidence,
            ));
        }
    }
}
