//! A23 no-silent-corruption: a message whose bytes were damaged on storage is never served as if
//! intact: it is detected (the checksum in its name) and reported (`StoreCorruption`) or repaired.
//!
//! Judged from what clients received: the digest of a `ClientFetched` must equal the digest the
//! store recorded when it delivered that (mailbox, UIDL), whether or not the disk injected a
//! fault (bit-rot, misdirected or torn writes) into it.

use super::facts::{At, Facts};
use super::Violation;
use history::Event;
use std::collections::{BTreeMap, BTreeSet};

pub fn check(facts: &Facts, out: &mut Vec<Violation>) {
    // (mailbox, uidl) → (at, digest) of its latest delivery so far.
    let mut delivered: BTreeMap<(&str, &str), (At, &str)> = BTreeMap::new();
    let (mut deliveries, mut fetches) = (facts.deliveries.iter().peekable(), facts.fetches.iter());
    for fetch in fetches.by_ref() {
        while let Some(delivery) = deliveries.next_if(|d| d.at < fetch.at) {
            delivered.insert((&delivery.mailbox, &delivery.uidl), (delivery.at, &delivery.digest));
        }
        let Some(&(delivered_at, digest)) = delivered.get(&(fetch.mailbox.as_str(), fetch.uidl.as_str())) else { continue };
        if digest == fetch.digest {
            continue;
        }
        let mut evidence = vec![delivered_at];
        // The device's faults on that file, for the reader.
        let file = facts.deliveries.iter().find(|d| d.at == delivered_at).map(|d| d.file.as_str()).unwrap_or_default();
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
