//! A25 staged-restore: while a cohort of mailboxes is offline (the operator has taken it off
//! and not yet brought it back), mail for it is held — answered 4xx by the store, kept in the
//! MX's queue — and never refused for good, returned, lost, or put into the offline mailbox;
//! once the cohort is back, the held mail is delivered.
//!
//! Judged from the world's `Cohort` records (when each cohort went offline and came back), the
//! store's LMTP replies as the wire tap saw them, the store's deliveries, the MX's
//! acknowledgements and the DSNs the senders' providers received. Whether held mail comes back
//! in arrival order is not judged: an MX's queue retries each file on its own schedule (as
//! Postfix's deferred queue does), so order after a restore is not a promise the stack makes.

use history::EventKind as K;
use super::facts::{At, Facts};
use super::reply::codes;
use super::Violation;
use history::Event;
use std::collections::BTreeMap;

/// Per mailbox: the record where it went offline, and where it came back (if it did).
type Windows = BTreeMap<String, Vec<(At, Option<At>)>>;

fn windows(facts: &Facts) -> Windows {
    let mut windows: Windows = BTreeMap::new();
    for (at, record) in facts.records_of(&[K::Cohort]) {
        let Event::Cohort { online, mailboxes, .. } = &record.event else { continue };
        for mailbox in mailboxes {
            let list = windows.entry(mailbox.clone()).or_default();
            match (online, list.last_mut()) {
                (false, _) => list.push((at, None)),
                (true, Some(last)) if last.1.is_none() => last.1 = Some(at),
                _ => {}
            }
        }
    }
    windows
}

/// The window in which `mailbox` was offline at record `at`.
fn offline_at(windows: &Windows, mailbox: &str, at: At) -> Option<(At, Option<At>)> {
    windows.get(mailbox)?.iter().copied().find(|(off, on)| *off < at && on.is_none_or(|on| at < on))
}

pub fn check(facts: &Facts, out: &mut Vec<Violation>) {
    let windows = windows(facts);
    if windows.is_empty() {
        return;
    }
    for reply in facts.wire.data_replies.iter().filter(|reply| reply.lmtp) {
        let Some(rcpt) = &reply.rcpt else { continue };
        let mailbox = Facts::mailbox_of(rcpt);
        let Some((off, _)) = offline_at(&windows, &mailbox, reply.at) else { continue };
        if codes(&reply.reply).0.is_some_and(|code| code >= 500) {
            out.push(Violation::new(
                "A25",
                format!("mailbox {mailbox}"),
                format!("the store refused mail for {rcpt} for good ('{}') while its cohort was offline: it must be held (4xx) until the cohort is back", reply.reply),
                vec![off, reply.at],
            ));
        }
    }
    let renamed_to = facts.disks.get("store").map(|disk| &disk.renamed_to);
    for delivery in &facts.deliveries {
        if let Some((off, _)) = offline_at(&windows, &delivery.mailbox, delivery.at) {
            // Published (renamed into its final name) before the mailbox went offline, and
            // acknowledged once the storage let the directory sync finish: made in time.
            let published_before = renamed_to.and_then(|renamed| renamed.get(&delivery.file)).is_some_and(|renames| renames.iter().any(|(at, _)| *at < off));
            if published_before {
                continue;
            }
            out.push(Violation::new("A25", format!("msg {} rcpt {}", delivery.msg, delivery.mailbox), "delivered into a mailbox while its cohort was offline (the restore would overwrite it)", vec![off, delivery.at]));
        }
    }
    check_held_mail(facts, &windows, out);
}

/// Mail the MX accepted for a mailbox that was, or later went, offline before it was delivered:
/// never returned while held, and delivered once the cohort is back.
fn check_held_mail(facts: &Facts, windows: &Windows, out: &mut Vec<Violation>) {
    let mut judged = std::collections::BTreeSet::new();
    for (ack_at, msg, rcpts, _, _) in facts.mx_acks() {
        for rcpt in rcpts.iter() {
            let mailbox = Facts::mailbox_of(rcpt);
            let Some(list) = windows.get(&mailbox) else { continue };
            if !judged.insert((*msg, rcpt.as_str())) {
                continue;
            }
            let first_delivery = facts.deliveries_of(&mailbox, msg).map(|delivery| delivery.at).min();
            // The window that held it: open at the acceptance, or opened before its delivery.
            let held = list.iter().copied().find(|(off, on)| on.is_none_or(|on| *ack_at < on) && first_delivery.is_none_or(|delivered| *off < delivered));
            let Some((off, on)) = held else { continue };
            let subject = format!("msg {msg} rcpt {rcpt}");
            if let Some(&dsn) = facts.failure_dsns(msg, rcpt).iter().find(|dsn| on.is_none_or(|on| **dsn < on)) {
                out.push(Violation::new("A25", subject, "returned to its sender while its mailbox's cohort was offline: it must be held until the cohort is back", vec![*ack_at, off, dsn]));
                continue;
            }
            let Some(on) = on else { continue };
            let delivered_after = facts.deliveries_of(&mailbox, msg).any(|delivery| delivery.at > on);
            let returned = !facts.failure_dsns(msg, rcpt).is_empty();
            if !delivered_after && !returned && !facts.reported.covers(&mailbox, msg) {
                out.push(Violation::new("A25", subject, "held for an offline mailbox and never delivered once its cohort was back", vec![*ack_at, off, on]));
            }
        }
    }
}
