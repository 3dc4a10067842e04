//! A23 no-silent-corruption: a message whose bytes were damaged on storage is never served as if
//! intact: it is detected (the checksum in its name) and reported (`StoreCorruption`) or repaired.
//!
//! Judged from what clients received, whether or not the disk injected a fault (bit rot,
//! misdirected or torn writes): the bytes of a `ClientFetched` must be one of the copies the
//! store delivered of that message to that mailbox, and their size the size the server listed
//! for that UIDL (RFC 1939 LIST) — another message's bytes served under a UIDL show there. No
//! UIDL spelling is assumed: identities come from what was listed and fetched.

use history::EventKind as K;
use super::facts::{At, Facts};
use super::Violation;
use history::Event;
use std::collections::{BTreeMap, BTreeSet};

pub fn check(facts: &Facts, out: &mut Vec<Violation>) {
    // (mailbox, msg) → (at, digest) of every delivery so far: the client's bytes must be one of
    // the copies the store delivered (identity from the message, not from a UIDL spelling).
    let mut delivered: BTreeMap<(&str, &str), Vec<(At, &str)>> = BTreeMap::new();
    // (mailbox, uidl) → (at, size) the server last listed, before each fetch.
    let listed = listed_sizes(facts);
    let (mut deliveries, mut fetches) = (facts.deliveries.iter().peekable(), facts.fetches.iter());
    for fetch in fetches.by_ref() {
        while let Some(delivery) = deliveries.next_if(|d| d.at < fetch.at) {
            delivered.entry((&delivery.mailbox, &delivery.msg)).or_default().push((delivery.at, &delivery.digest));
        }
        let listed_size = listed.get(&(fetch.mailbox, fetch.uidl)).and_then(|sizes| sizes.iter().rev().find(|(at, _)| *at < fetch.at));
        if let Some(&(listed_at, size)) = listed_size.filter(|(_, size)| *size != fetch.size) {
            out.push(Violation::new(
                "A23",
                format!("mailbox {} uidl {}", fetch.mailbox, fetch.uidl),
                format!("the server listed this UIDL at {size} octets and served {} octets under it, and nothing detected it", fetch.size),
                vec![listed_at, fetch.at],
            ));
            continue;
        }
        let Some(copies) = delivered.get(&(fetch.mailbox, fetch.msg)) else { continue };
        if copies.iter().any(|(_, digest)| *digest == fetch.digest) {
            continue;
        }
        let &(delivered_at, digest) = copies.last().expect("an entry holds at least one copy");
        let mut evidence = vec![delivered_at];
        // The device's faults on that file, for the reader.
        let file = facts.deliveries.iter().find(|d| d.at == delivered_at).map(|d| d.file).unwrap_or_default();
        // Under any name the file had (read mail moves from new/ into cur/).
        let last = |path: &str| path.rsplit('/').next().unwrap_or(path).to_string();
        let names: BTreeSet<String> = facts.disks.get("store").map(|disk| disk.lineage(file)).unwrap_or_default().iter().map(|path| last(path)).chain([last(file)]).collect();
        evidence.extend(facts.records.iter().enumerate().filter(|(at, record)| *at < fetch.at && matches!(&record.event, Event::DiskFault { path, .. } if names.contains(&last(path)))).map(|(at, _)| at).take(3));
        evidence.push(fetch.at);
        out.push(Violation::new(
            "A23",
            format!("mailbox {} uidl {}", fetch.mailbox, fetch.uidl),
            format!("the client received bytes (digest {}) that differ from what the store delivered (digest {digest}), and nothing detected it", fetch.digest),
            evidence,
        ));
    }
}

/// Per (mailbox, UIDL): every (at, size) a listing of the server gave it.
fn listed_sizes<'a>(facts: &Facts<'a>) -> BTreeMap<(&'a str, &'a str), Vec<(At, u64)>> {
    let mut listed: BTreeMap<(&str, &str), Vec<(At, u64)>> = BTreeMap::new();
    for (at, record) in facts.records_of(&[K::ClientListing]) {
        if let Event::ClientListing { mailbox, listed: listing } = &record.event {
            for (uidl, size) in listing {
                listed.entry((mailbox, uidl)).or_default().push((at, *size));
            }
        }
    }
    listed
}
