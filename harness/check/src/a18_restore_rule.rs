//! A18 restore-rule: after a restore from an older backup, either UIDVALIDITY grows, or it stays
//! and UIDNEXT is set above every UID ever issued under it; and mail acknowledged after the
//! backup is delivered again from whatever still holds it (here: the MX queue), or its loss is
//! reported (see `ReportedLosses`, counted by the report).
//!
//! A restore is the world's `Fault` note "store restored from its backup" followed, per mailbox,
//! by the store's `StoreRecovered { restored: true }`.

use super::facts::{At, Facts};
use super::Violation;
use history::Event;
use std::collections::BTreeMap;

pub fn check(facts: &Facts, out: &mut Vec<Violation>) {
    for &(snapshot, rollback) in &facts.rollbacks {
        check_uids(facts, rollback, out);
        check_redelivery(facts, snapshot, rollback, out);
    }
}

fn check_uids(facts: &Facts, rollback: At, out: &mut Vec<Violation>) {
    // Per mailbox: the UIDVALIDITY in use before the restore.
    let mut current: BTreeMap<&str, (u64, At)> = BTreeMap::new();
    for (at, record) in facts.records.iter().enumerate().take(rollback) {
        match &record.event {
            Event::StoreRecovered { mailbox, uidvalidity, .. } => current.insert(mailbox, (*uidvalidity, at)),
            Event::StoreDelivered(stored) => current.insert(&stored.mailbox, (stored.uidvalidity, at)),
            _ => None,
        };
    }
    let mut judged = std::collections::BTreeSet::new();
    for recovery in facts.recoveries.iter().filter(|r| r.restored && r.at > rollback) {
        if !judged.insert(recovery.mailbox) {
            continue;
        }
        let Some(&(before, before_at)) = current.get(recovery.mailbox) else { continue };
        let subject = format!("mailbox {} uidvalidity {}", recovery.mailbox, recovery.uidvalidity);
        if recovery.uidvalidity > before {
            continue;
        }
        if recovery.uidvalidity < before {
            out.push(Violation::new("A18", subject, format!("after the restore UIDVALIDITY went down from {before} to {}", recovery.uidvalidity), vec![before_at, rollback, recovery.at]));
            continue;
        }
        // Any UID issued under it, even after the restore's recovery, counts: "ever issued".
        let highest = facts
            .deliveries
            .iter()
            .filter(|d| d.mailbox == recovery.mailbox && d.at < recovery.at && d.uidvalidity == before)
            .map(|d| (d.uid, d.at))
            .max();
        if let Some((uid, uid_at)) = highest.filter(|(uid, _)| recovery.uidnext <= *uid) {
            out.push(Violation::new(
                "A18",
                subject,
                format!("the restore kept UIDVALIDITY {before} but set UIDNEXT to {}, not above UID {uid} already issued: the UIDs will name other messages", recovery.uidnext),
                vec![uid_at, rollback, recovery.at],
            ));
        }
    }
}

/// (msg, rcpt) delivered after the backup and erased by the restore, while the MX queue still
/// held it (the queue had not recorded it done): the queue must deliver it again (or bounce it).
fn check_redelivery(facts: &Facts, snapshot: Option<At>, rollback: At, out: &mut Vec<Violation>) {
    let mut judged = std::collections::BTreeSet::new();
    for delivery in facts.deliveries.iter().filter(|d| snapshot.is_none_or(|s| s < d.at) && d.at < rollback) {
        let mailbox = delivery.mailbox;
        for (ack_at, msg, rcpts, ..) in facts.acks_of_message(&delivery.msg).filter(|(at, ..)| *at < rollback) {
            for rcpt in rcpts.iter().filter(|rcpt| Facts::mailbox_of(rcpt) == mailbox) {
                let key = (*msg, rcpt.as_str());
                if !judged.insert(key) {
                    continue;
                }
                // The queue let go of it on the store's 2xx — before the restore, or after it when
                // that reply was still in flight as the store went down (A16 judges that a 2xx
                // came first). Nothing holds it any more: a reported loss, not a violation.
                if facts.queue_recorded.contains_key(&key) {
                    continue;
                }
                let again = facts.deliveries_of(mailbox, msg).any(|d| d.at > rollback);
                let bounced = facts.failure_dsns(msg, rcpt).iter().any(|at| *at > rollback);
                if !again && !bounced {
                    out.push(Violation::new(
                        "A18",
                        format!("msg {msg} rcpt {rcpt}"),
                        "the restore erased the store's copy while the MX queue still held the message, and it was never delivered again",
                        vec![*ack_at, delivery.at, rollback],
                    ));
                }
            }
        }
    }
}
