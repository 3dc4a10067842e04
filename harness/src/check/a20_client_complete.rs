//! A20 client-complete: at the end every client holds every message delivered to its mailbox,
//! at most once per copy the mailbox had (duplicates only where A13 allows them: a copy
//! published just before a store crash counts), byte-identical to what the sender handed over.

use super::facts::Facts;
use super::Violation;
use std::collections::BTreeMap;

pub fn check(facts: &Facts, out: &mut Vec<Violation>) {
    // (mailbox, msg) → deliveries that the mailbox still holds or that its owner deleted.
    let mut held: BTreeMap<(String, String), Vec<usize>> = BTreeMap::new();
    for delivery in &facts.deliveries {
        let deleted = facts.deleted.contains_key(&(delivery.mailbox.clone(), delivery.uidl.clone()));
        if facts.survives(delivery) || deleted {
            held.entry((delivery.mailbox.clone(), delivery.msg.clone())).or_default().push(delivery.at);
        }
    }
    let mut fetched: BTreeMap<(String, String), Vec<usize>> = BTreeMap::new();
    for fetch in &facts.fetches {
        fetched.entry((fetch.mailbox.clone(), fetch.msg.clone())).or_default().push(fetch.at);
        let submitted = facts.submitted.get(&fetch.msg).map(|(_, _, _, digest)| digest);
        if submitted.is_some_and(|digest| digest != &fetch.digest) {
            out.push(Violation::new("A20", format!("msg {} mailbox {}", fetch.msg, fetch.mailbox), "the client received bytes that differ from what the sender submitted", vec![fetch.at]));
        }
    }
    for ((mailbox, msg), delivered) in &held {
        let copies = fetched.get(&(mailbox.clone(), msg.clone()));
        let subject = format!("msg {msg} mailbox {mailbox}");
        match copies.map(Vec::len).unwrap_or(0) {
            0 => out.push(Violation::new("A20", subject, "delivered to the mailbox but its client never downloaded it", delivered.clone())),
            count if count > facts.published_copies(mailbox, msg).max(delivered.len()) => out.push(Violation::new(
                "A20",
                subject,
                format!("the client downloaded {count} copies of {} in the mailbox", facts.published_copies(mailbox, msg)),
                copies.cloned().unwrap_or_default(),
            )),
            _ => {}
        }
    }
}
