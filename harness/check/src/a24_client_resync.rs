//! A24 client-resync: a client whose cached state (UIDVALIDITY, UIDs) went stale — after a
//! restore from backup, a failover, a cohort coming back — ends with exactly the server's set:
//! it misses no message and shows none twice. RFC 4549 §4.1 (a disconnected IMAP client whose
//! UIDVALIDITY changed empties its cache and resyncs); RFC 3501 §2.3.1.1.
//!
//! Judged from what the client recorded and the store's final durable image only: the last
//! `ClientView` of each mailbox (per UID, the content of the copy the client shows for it) must
//! hold every message of the mailbox's final image (its `new/` and `cur/`) as many times as the
//! image holds it, and nothing else. Content is compared by digest (trace fields aside), never
//! by a UID or a file name. A mailbox the store changed after the client's last view (a
//! delivery, a restore) is not judged: its client had no chance to see it. Files
//! the device damaged, or the store found damaged and refused to serve, are left out (A23).
//! POP3 clients keep what they download rather than mirror the server: A19 and A20 judge them.

use history::EventKind as K;
use super::facts::{At, Facts};
use super::Violation;
use history::Event;
use std::collections::{BTreeMap, BTreeSet};

pub fn check(facts: &Facts, out: &mut Vec<Violation>) {
    let Some(image) = facts.image("store") else { return };
    let mut last_view: BTreeMap<&str, (At, u64, &[(u64, String)])> = BTreeMap::new();
    let mut last_change: BTreeMap<&str, At> = BTreeMap::new();
    // Per mailbox: each UIDVALIDITY its client was told at SELECT, where first.
    let mut validities: BTreeMap<&str, Vec<(At, u64)>> = BTreeMap::new();
    let mut corrupt: BTreeSet<&str> = BTreeSet::new();
    for (at, record) in facts.records_of(&[K::ClientView, K::ClientSelected, K::StoreDelivered, K::StoreRecovered, K::StoreCorruption]) {
        match &record.event {
            Event::ClientView { mailbox, uidvalidity, shown } => {
                last_view.insert(mailbox, (at, *uidvalidity, shown));
            }
            Event::ClientSelected { mailbox, uidvalidity, .. } => {
                let seen = validities.entry(mailbox).or_default();
                if seen.last().is_none_or(|(_, last)| last != uidvalidity) {
                    seen.push((at, *uidvalidity));
                }
            }
            // A plain restart changes nothing a client shows (what a crash loses changes EXISTS,
            // and the client's next SELECT resyncs); a restore from backup does. An expunge is
            // the client's own (one client per mailbox): it records its view right after.
            Event::StoreDelivered(stored) => {
                last_change.insert(&stored.mailbox, at);
            }
            Event::StoreRecovered { mailbox, restored: true, .. } => {
                last_change.insert(mailbox, at);
            }
            Event::StoreCorruption { file, .. } => {
                corrupt.insert(name(file));
            }
            _ => {}
        }
    }
    let damaged = &facts.device_damaged;
    // digest → a message id, for the reader.
    let msg_of: BTreeMap<&str, &str> = facts.deliveries.iter().map(|d| (d.digest, d.msg)).chain(facts.fetches.iter().map(|f| (f.digest, f.msg))).collect();
    for (mailbox, (view_at, uidvalidity, shown)) in last_view {
        if last_change.get(mailbox).is_some_and(|changed| *changed > view_at) {
            continue;
        }
        let prefix = format!("mail/{mailbox}/");
        let mut held: BTreeMap<String, usize> = BTreeMap::new();
        for (path, bytes) in image.iter().filter(|(path, _)| path.starts_with(&prefix) && (path.contains("/new/") || path.contains("/cur/"))) {
            if damaged.contains(name(path)) || corrupt.contains(name(path)) {
                continue;
            }
            *held.entry(Facts::digest_of_file(bytes)).or_default() += 1;
        }
        let mut showing: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for (uid, digest) in shown {
            showing.entry(digest.clone()).or_default().push(*uid);
        }
        // Where the client learnt the UIDVALIDITY its view claims, and the one before it.
        let told = validities.get(mailbox).map(Vec::as_slice).unwrap_or(&[]);
        let mut context: Vec<At> = told.iter().rev().take(2).map(|(at, _)| *at).filter(|at| *at < view_at).collect();
        context.reverse();
        let digests: BTreeSet<&String> = held.keys().chain(showing.keys()).collect();
        for digest in digests {
            let (copies, uids) = (held.get(digest).copied().unwrap_or(0), showing.get(digest).cloned().unwrap_or_default());
            if copies == uids.len() {
                continue;
            }
            let msg = msg_of.get(digest.as_str()).copied().unwrap_or("?");
            let mut evidence = context.clone();
            // The client's download of that content, if any: what it shows it from.
            evidence.extend(facts.fetches.iter().rev().find(|f| f.mailbox == mailbox && &f.digest == digest && f.at < view_at).map(|f| f.at));
            evidence.push(view_at);
            let listed = |uids: &[u64]| uids.iter().map(u64::to_string).collect::<Vec<_>>().join(", ");
            let why = match (copies, uids.len()) {
                (_, 0) => format!("the mailbox holds {copies} copy(ies) of this message (digest {digest}) and its client, synced under UIDVALIDITY {uidvalidity}, shows none: it missed it"),
                (0, _) => format!("its client shows this message (digest {digest}) under UID {} of UIDVALIDITY {uidvalidity}, and the mailbox no longer holds it: a stale cache shown as the server's", listed(&uids)),
                (_, shown) => format!("its client shows this message (digest {digest}) {shown} times (UIDs {} of UIDVALIDITY {uidvalidity}) and the mailbox holds {copies} copy(ies)", listed(&uids)),
            };
            out.push(Violation::new("A24", format!("msg {msg} mailbox {mailbox}"), why, evidence));
        }
    }
}

fn name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}
