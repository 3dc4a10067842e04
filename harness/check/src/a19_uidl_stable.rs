//! A19 uidl-stable: a POP3 UIDL value (or an IMAP client's `<uidvalidity>.<uid>`) names one message forever: stable across sessions, never
//! reused for other content. Judged from what clients saw: a UIDL fetched with two contents,
//! listed with another size than it was fetched with, or listed again after its deletion.
//! RFC 1939 §7.
//!
//! And it persists across sessions (RFC 1939 §7: the unique-id "persists across sessions"): a
//! message listed under a UIDL is listed under it in every later session until its owner
//! deletes it. A UIDL that drops out of the listing though its client never deleted it is a
//! message that vanished from the mailbox (a store that forgot what its owner had read, say),
//! unless a restore from backup lay between the listings (a new UIDVALIDITY renames every
//! message; A18 judges the restore).

use history::EventKind as K;
use super::facts::Facts;
use super::Violation;
use history::Event;
use std::collections::BTreeMap;

pub fn check(facts: &Facts, out: &mut Vec<Violation>) {
    // (mailbox, uidl) → (at, digest, size) of its first fetch.
    let mut first_fetch: BTreeMap<(&str, &str), (usize, &str, u64)> = BTreeMap::new();
    for fetch in &facts.fetches {
        let key = (fetch.mailbox, fetch.uidl);
        match first_fetch.get(&key) {
            None => {
                first_fetch.insert(key, (fetch.at, fetch.digest, fetch.size));
            }
            Some((at, digest, _)) if *digest != fetch.digest => out.push(Violation::new(
                "A19",
                format!("mailbox {} uidl {}", fetch.mailbox, fetch.uidl),
                "the same UIDL was retrieved with different contents",
                vec![*at, fetch.at],
            )),
            Some(_) => {}
        }
    }
    for (at, record) in facts.records_of(&[K::ClientListing]) {
        let Event::ClientListing { mailbox, listed } = &record.event else { continue };
        for (uidl, size) in listed {
            let key = (mailbox.as_str(), uidl.as_str());
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
    persists(facts, out);
    out.dedup_by(|a, b| a.invariant == "A19" && a.subject == b.subject && a.explanation == b.explanation);
}

/// A UIDL listed in one session and missing from a later listing of the same mailbox, never
/// deleted by its client, no restore between.
fn persists(facts: &Facts, out: &mut Vec<Violation>) {
    // Per mailbox: the previous listing its client recorded, and where.
    let mut previous: BTreeMap<&str, (usize, Vec<&str>)> = BTreeMap::new();
    for (at, record) in facts.records_of(&[K::ClientListing]) {
        let Event::ClientListing { mailbox, listed } = &record.event else { continue };
        let now: Vec<&str> = listed.iter().map(|(uidl, _)| uidl.as_str()).collect();
        if let Some((before_at, before)) = previous.insert(mailbox, (at, now.clone())) {
            if facts.restored_between(mailbox, before_at, at) {
                continue;
            }
            // A set: a listing holds every message the mailbox keeps, and a scan of it per
            // UIDL was quadratic in the mailbox's size.
            let listed_now: rustc_hash::FxHashSet<&str> = now.iter().copied().collect();
            for uidl in before.into_iter().filter(|uidl| !listed_now.contains(uidl)) {
                if facts.deleted.contains_key(&(mailbox.as_str(), uidl)) {
                    continue;
                }
                // Where the client fetched it, if it did (what the UIDL named, seen on the wire).
                let mut evidence: Vec<usize> = facts.fetches.iter().filter(|f| f.mailbox == mailbox && f.uidl == uidl).map(|f| f.at).take(1).collect();
                evidence.extend([before_at, at]);
                out.push(Violation::new(
                    "A19",
                    format!("mailbox {mailbox} uidl {uidl}"),
                    "listed to its client, then missing from a later listing though the client never deleted it: the UIDL did not persist across sessions (the message vanished from the mailbox)",
                    evidence,
                ));
            }
        }
    }
}
