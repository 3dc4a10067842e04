//! A17 uid-rules: within (mailbox, UIDVALIDITY), UIDs strictly increase in delivery order and are
//! never reused; UIDNEXT never decreases and stays above every UID issued; (mailbox,
//! UIDVALIDITY, UID) always names the same immutable message. RFC 3501/9051 §2.3.1.1.
//!
//! UIDs become visible in ascending order: a client that listed UID 14 never later finds a new
//! UID 4 in the same (mailbox, UIDVALIDITY), or an IMAP client that fetched "UID 15:*" misses it.
//!
//! Judged from the history only: the store's `StoreDelivered` (UID and digest), its
//! `StoreRecovered` (UIDNEXT), what clients fetched under one UIDL, and the order in which
//! UIDLs first appeared in the clients' listings (the UID each names is the one the store
//! delivered it under).

use history::EventKind as K;
use super::facts::{At, Facts};
use super::Violation;
use history::Event;
use rustc_hash::{FxHashMap, FxHashSet};
use std::collections::BTreeMap;

#[derive(Default)]
struct Validity {
    /// The highest UID issued, where.
    highest: Option<(u64, At)>,
    /// Per UID: (at, digest) of its first delivery.
    named: BTreeMap<u64, (At, String)>,
    /// The last UIDNEXT a recovery announced, where.
    uidnext: Option<(u64, At)>,
}

pub fn check(facts: &Facts, out: &mut Vec<Violation>) {
    let mut state: BTreeMap<(String, u64), Validity> = BTreeMap::new();
    for (at, record) in facts.records_of(&[K::StoreDelivered, K::StoreRecovered]) {
        match &record.event {
            Event::StoreDelivered(stored) => {
                let history::Stored { mailbox, uidvalidity, uid, digest, .. } = &**stored;
                let validity = state.entry((mailbox.to_string(), *uidvalidity)).or_default();
                let subject = || format!("mailbox {mailbox} uidl {uidvalidity}.{uid}");
                if let Some((first_at, first_digest)) = validity.named.get(uid) {
                    let what = if first_digest == digest { "the same message was delivered again under a UID already issued" } else { "a UID already issued was issued again, for other content" };
                    out.push(Violation::new("A17", subject(), format!("{what} (UIDVALIDITY {uidvalidity} unchanged)"), vec![*first_at, at]));
                } else if let Some((highest, highest_at)) = validity.highest.filter(|(highest, _)| uid < highest) {
                    out.push(Violation::new("A17", subject(), format!("UID {uid} issued after UID {highest}: UIDs must strictly increase"), vec![highest_at, at]));
                }
                validity.named.entry(*uid).or_insert((at, digest.to_string()));
                if validity.highest.is_none_or(|(highest, _)| *uid > highest) {
                    validity.highest = Some((*uid, at));
                }
            }
            Event::StoreRecovered { mailbox, uidvalidity, uidnext, .. } => {
                let validity = state.entry((mailbox.to_string(), *uidvalidity)).or_default();
                let subject = format!("mailbox {mailbox} uidvalidity {uidvalidity}");
                if let Some((previous, previous_at)) = validity.uidnext.filter(|(previous, _)| uidnext < previous) {
                    out.push(Violation::new("A17", subject.clone(), format!("UIDNEXT went down from {previous} to {uidnext} under the same UIDVALIDITY"), vec![previous_at, at]));
                }
                if let Some((highest, highest_at)) = validity.highest.filter(|(highest, _)| uidnext <= highest) {
                    out.push(Violation::new("A17", subject, format!("UIDNEXT {uidnext} is not above UID {highest}, already issued under this UIDVALIDITY"), vec![highest_at, at]));
                }
                if validity.uidnext.is_none_or(|(previous, _)| *uidnext > previous) {
                    validity.uidnext = Some((*uidnext, at));
                }
            }
            _ => {}
        }
    }
    visible_in_order(facts, out);
    // One UIDL, one content: what clients received under it.
    let mut first_fetch: FxHashMap<(&str, &str), (At, &str)> = FxHashMap::default();
    for fetch in &facts.fetches {
        match first_fetch.get(&(fetch.mailbox, fetch.uidl)) {
            None => {
                first_fetch.insert((&fetch.mailbox, &fetch.uidl), (fetch.at, &fetch.digest));
            }
            Some((first_at, digest)) if *digest != fetch.digest => out.push(Violation::new(
                "A17",
                format!("mailbox {} uidl {}", fetch.mailbox, fetch.uidl),
                "clients received two different messages under one (mailbox, UIDVALIDITY, UID)",
                vec![*first_at, fetch.at],
            )),
            Some(_) => {}
        }
    }
}

/// A UIDL that first appears in a client's listing names a UID above every UID of the same
/// (mailbox, UIDVALIDITY) that an earlier listing of that client showed.
fn visible_in_order(facts: &Facts, out: &mut Vec<Violation>) {
    // (mailbox, uidl) → (uidvalidity, uid): the UIDL names the message the client fetched under
    // it, and that message's delivery (the copy with the bytes fetched) carries the UID.
    // Copies that look alike (a duplicate of the same bytes) cannot be told apart from outside,
    // so their UIDLs are not judged here (A13 and A20 judge the duplicate itself).
    // A restore renumbers what it brings back without a new delivery, so a UIDL fetched after a
    // restore is not judged by the UID of a delivery before it (A18 judges the restore).
    let mut copies: FxHashMap<(&str, &str, &str), Vec<(At, u64, u64)>> = FxHashMap::default();
    for d in &facts.deliveries {
        copies.entry((&d.mailbox, &d.msg, &d.digest)).or_default().push((d.at, d.uidvalidity, d.uid));
    }
    let mut named: FxHashMap<(&str, &str), (u64, u64)> = FxHashMap::default();
    for fetch in &facts.fetches {
        let Some([(delivered_at, uidvalidity, uid)]) = copies.get(&(fetch.mailbox, fetch.msg, fetch.digest)).map(Vec::as_slice) else { continue };
        // A copy published just before a crash has no delivery record of its own: with two
        // copies in the mailbox, which UIDL is which cannot be told, so neither is judged.
        if facts.published_copies(&fetch.mailbox, &fetch.msg) > 1 {
            continue;
        }
        if !facts.restored_between(&fetch.mailbox, *delivered_at, fetch.at) {
            named.entry((fetch.mailbox, fetch.uidl)).or_insert((*uidvalidity, *uid));
        }
    }
    // Per mailbox: the UIDLs its client has listed, and per UIDVALIDITY the highest UID listed.
    let mut listed: FxHashMap<&str, FxHashSet<&str>> = FxHashMap::default();
    let mut highest: BTreeMap<(&str, u64), (u64, At)> = BTreeMap::new();
    for (at, record) in facts.records_of(&[K::ClientListing]) {
        match &record.event {
            Event::ClientListing { mailbox, listed: listing } => {
                let before = listed.entry(mailbox.as_str()).or_default();
                let mut raised: Vec<(u64, u64)> = Vec::new();
                for (uidl, _) in listing {
                    let Some(&(uidvalidity, uid)) = named.get(&(mailbox.as_str(), uidl.as_str())) else { continue };
                    if !before.contains(uidl.as_str()) {
                        if let Some(&(above, above_at)) = highest.get(&(mailbox.as_str(), uidvalidity)).filter(|(above, _)| *above > uid) {
                            out.push(Violation::new(
                                "A17",
                                format!("mailbox {mailbox} uidl {uidl}"),
                                format!("UID {uid} became visible after UID {above} had been listed (UIDVALIDITY {uidvalidity}): UIDs must become visible in ascending order"),
                                vec![above_at, at],
                            ));
                        }
                    }
                    raised.push((uidvalidity, uid));
                }
                before.extend(listing.iter().map(|(uidl, _)| uidl.as_str()));
                for (uidvalidity, uid) in raised {
                    let entry = highest.entry((mailbox.as_str(), uidvalidity)).or_insert((uid, at));
                    if uid > entry.0 {
                        *entry = (uid, at);
                    }
                }
            }
            _ => {}
        }
    }
}
