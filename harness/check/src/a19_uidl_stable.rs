//! A19 uidl-stable: a POP3 UIDL value names one message forever: stable across sessions, never
//! reused for other content. Judged from what clients saw: a UIDL fetched with two contents,
//! listed with another size than it was fetched with, or listed again after its deletion.
//! RFC 1939 §7.

use super::facts::Facts;
use super::Violation;
use history::Event;
use std::collections::BTreeMap;

pub fn check(facts: &Facts, out: &mut Vec<Violation>) {
    // (mailbox, uidl) → (at, digest, size) of its first fetch.
    let mut first_fetch: BTreeMap<(String, String), (usize, String, u64)> = BTreeMap::new();
    for fetch in &facts.fetches {
        let key = (fetch.mailbox.clone(), fetch.uidl.clone());
        match first_fetch.get(&key) {
            None => {
                first_fetch.insert(key, (fetch.at, fetch.digest.clone(), fetch.size));
            }
            Some((at, digest, _)) if digest != &fetch.digest => out.push(Violation::new(
                "A19",
                format!("mailbox {} uidl {}", fetch.mailbox, fetch.uidl),
                "the same UIDL was retrieved with different contents",
                vec![*at, fetch.at],
            )),
            Some(_) => {}
        }
    }
    for (at, record) in facts.records.iter().enumerate() {
        let Event::ClientListing { mailbox, listed } = &record.event else { continue };
        for (uidl, size) in listed {
            let key = (mailbox.clone(), uidl.clone());
            if let Some(deleted_at) = facts.deleted_confirmed.get(&key).filter(|deleted_at| **deleted_at < at) {
                out.push(Violation::new("A19", format!("mailbox {mailbox} uidl {uidl}"), "a UIDL was listed again after the client deleted its message: the value was reused", vec![*deleted_at, at]));
                continue;
            }
            if let Some((fetched_at, _, fetched_size)) = first_fetch.get(&key) {
                if fetched_size != size && *fetched_at < at {
                    out.push(Violation::new("A19", format!("mailbox {mailbox} uidl {uidl}"), format!("listed with {size} octets but it was retrieved with {fetched_size}: the UIDL names other content now"), vec![*fetched_at, at]));
                }
            }
        }
    }
    out.dedup_by(|a, b| a.invariant == "A19" && a.subject == b.subject && a.explanation == b.explanation);
}
