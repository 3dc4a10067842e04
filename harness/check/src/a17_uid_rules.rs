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

use super::facts::{At, Facts};
use super::Violation;
use history::Event;
use std::collections::{BTreeMap, BTreeSet};

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
    for (at, record) in facts.records.iter().enumerate() {
        match &record.event {
            Event::StoreDelivered { mailbox, uidvalidity, uid, digest, .. } => {
                let validity = state.entry((mailbox.clone(), *uidvalidity)).or_default();
                let subject = format!("mailbox {mailbox} uidl {uidvalidity}.{uid}");
                if let Some((first_at, first_digest)) = validity.named.get(uid) {
                    let what = if first_digest == digest { "the same message was delivered again under a UID already issued" } else { "a UID already issued was issued again, for other content" };
                    out.push(Violation::new("A17", subject, format!("{what} (UIDVALIDITY {uidvalidity} unchanged)"), vec![*first_at, at]));
                } else if let Some((highest, highest_at)) = validity.highest.filter(|(highest, _)| uid < highest) {
                    out.push(Violation::new("A17", subject, format!("UID {uid} issued after UID {highest}: UIDs must strictly increase"), vec![highest_at, at]));
                }
                validity.named.entry(*uid).or_insert((at, digest.clone()));
                if validity.highest.is_none_or(|(highest, _)| *uid > highest) {
                    validity.highest = Some((*uid, at));
                }
            }
            Event::StoreRecovered { mailbox, uidvalidity, uidnext, .. } => {
                let validity = state.entry((mailbox.clone(), *uidvalidity)).or_default();
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
    let mut first_fetch: BTreeMap<(&str, &str), (At, &str)> = BTreeMap::new();
    for fetch in &facts.fetches {
        match first_fetch.get(&(fetch.mailbox.as_str(), fetch.uidl.as_str())) {
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
    // (mailbox, uidl) → (uidvalidity, uid), from the store's deliveries.
    let mut named: BTreeMap<(&str, String), (u64, u64)> = BTreeMap::new();
    // Per mailbox: the UIDLs its client has listed, and per UIDVALIDITY the highest UID listed.
    let mut listed: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut highest: BTreeMap<(&str, u64), (u64, At)> = BTreeMap::new();
    for (at, record) in facts.records.iter().enumerate() {
        match &record.event {
            Event::StoreDelivered { mailbox, uidvalidity, uid, .. } => {
                named.insert((mailbox.as_str(), format!("{uidvalidity}.{uid}")), (*uidvalidity, *uid));
            }
            Event::ClientListing { mailbox, listed: listing } => {
                let before = listed.entry(mailbox.as_str()).or_default();
                let mut raised: Vec<(u64, u64)> = Vec::new();
                for (uidl, _) in listing {
                    let Some(&(uidvalidity, uid)) = named.get(&(mailbox.as_str(), uidl.clone())) else { continue };
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
