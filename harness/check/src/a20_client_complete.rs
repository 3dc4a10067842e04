//! A20 client-complete: at the end every client holds every message delivered to its mailbox,
//! at most once per copy the mailbox had (duplicates only where A13 allows them: a copy
//! published just before a store crash counts), byte-identical to what the sender handed over.
//! After a restore from backup with a new UIDVALIDITY, a POP3 client downloads the mailbox again
//! under the new UIDLs: such a second copy is justified. A reported loss is not a violation.
//! A live history (the server records what it sent) has clients that come and go
//! as their users please: there a message is owed to a mailbox's client only once the server
//! listed the mailbox after the message was delivered; and a real client may fetch a message
//! it keeps on the server as often as it likes, so copies there count the UIDLs it got it under.

use history::EventKind as K;
use super::facts::Facts;
use super::Violation;
use std::collections::BTreeMap;

pub fn check(facts: &Facts, out: &mut Vec<Violation>) {
    // (mailbox, msg) → deliveries that the mailbox still holds or that its owner deleted.
    let mut held: BTreeMap<(&str, &str), Vec<usize>> = BTreeMap::new();
    let listed_last = last_listings(facts);
    for delivery in &facts.deliveries {
        let deleted = facts.deleted_message(delivery.mailbox, delivery.msg);
        let owed = !facts.live || listed_last.get(delivery.mailbox).is_some_and(|&at| at > delivery.at);
        if owed && (facts.survives(delivery) || deleted) {
            held.entry((delivery.mailbox, delivery.msg)).or_default().push(delivery.at);
        }
    }
    let mut fetched: BTreeMap<(&str, &str), Vec<usize>> = BTreeMap::new();
    // (mailbox, msg) → (at, uidl) of every fetch, to recognise re-downloads after a restore.
    let mut earlier: BTreeMap<(&str, &str), Vec<(usize, &str)>> = BTreeMap::new();
    for fetch in &facts.fetches {
        let key = (fetch.mailbox, fetch.msg);
        let before = earlier.entry(key).or_default();
        // The same message under another UIDL after a restore: the store had to renumber it.
        let justified = before.iter().any(|(at, uidl)| *uidl != fetch.uidl && facts.restored_between(fetch.mailbox, *at, fetch.at));
        let again_live = facts.live && before.iter().any(|(_, uidl)| *uidl == fetch.uidl);
        before.push((fetch.at, fetch.uidl));
        if again_live {
            continue;
        }
        if !justified {
            fetched.entry(key).or_default().push(fetch.at);
        }
        let submitted = facts.submitted.get(fetch.msg).map(|(_, _, _, digest)| *digest);
        if submitted.is_some_and(|digest| digest != fetch.digest) {
            out.push(Violation::new("A20", format!("msg {} mailbox {}", fetch.msg, fetch.mailbox), "the client received bytes that differ from what the sender submitted", vec![fetch.at]));
        }
    }
    for ((mailbox, msg), delivered) in &held {
        let copies = fetched.get(&(*mailbox, *msg));
        let subject = format!("msg {msg} mailbox {mailbox}");
        match copies.map(Vec::len).unwrap_or(0) {
            0 if facts.reported.covers(mailbox, msg) => {}
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


/// Per mailbox, the record of the last listing its client was given.
fn last_listings<'a>(facts: &'a Facts) -> BTreeMap<&'a str, usize> {
    let mut last = BTreeMap::new();
    for (at, record) in facts.records_of(&[K::ClientListing]) {
        if let history::Event::ClientListing { mailbox, .. } = &record.event {
            last.insert(mailbox.as_str(), at);
        }
    }
    last
}
