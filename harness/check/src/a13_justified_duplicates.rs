//! A13 justified-duplicates: a second mailbox copy of the same (message, recipient) is allowed
//! only when the history shows its cause, one cause justifies at most one extra copy, and the
//! report names the cause's record. RFC 1047; RFC 5321 §4.5.3.2.6.
//!
//! A copy is a `StoreDelivered` (the store's 2xx for it). Copies are followed through the MX's
//! account of its LMTP transactions: a copy stays open until the MX sees a reply (`LmtpReply`
//! 2xx: the copy is seen, and then recorded by `QueueRecorded` for that queue file) or learns
//! it will see none. The causes, each usable once per recipient:
//!
//! - the MX never saw the store's reply to a copy: its transaction failed after the final dot
//!   (`LmtpFailure` at data-end: timed out, connection lost) while the copy was open; or it saw
//!   the copy's 2xx but the transaction failed before it was recorded (another reply never came);
//! - the MX crashed while a copy was open, between seeing its 2xx and recording it, or with
//!   the transaction in flight (the store completed the copy while the MX was down);
//! - the MX's queue could not record a seen 2xx (a `DiskError` on the queue file or directory);
//! - the MX's disk lost the acknowledged rewrite or unlink that recorded a copy as done
//!   (`DiskDropped`): the queue entry came back and was delivered again;
//! - an MX acknowledgement (end-of-data 2xx) that the sender never saw: it sent again, and the
//!   second queue entry made a second copy;
//! - a restore from backup erased a copy (made after the backup was taken): the mailbox no
//!   longer has it, and the MX's retry delivers it again.
//!
//! A copy the store made after the MX had already given up waiting on its transaction (and was
//! still up) has no cause: the MX's timeout came first, so no reply was lost; the store took
//! longer to answer than the MX waits (RFC 1047 puts that on the receiver) and then the retry
//! made another copy. That is how one stalled mailbox multiplies mail, and a store must
//! recognise the retry of a delivery it is still making.

use history::EventKind as K;
use super::facts::{At, Facts};
use super::Violation;
use history::{parent, Event, Stage};
use std::collections::BTreeMap;

/// A record that explains one extra copy.
struct Cause {
    at: At,
    what: String,
}

/// The copies of one (message, mailbox) as the walk over the history follows them.
#[derive(Default)]
struct Copies {
    all: Vec<At>,
    /// Copies the MX has not seen answered yet.
    open: Vec<At>,
    /// Copies whose 2xx the MX saw and has not recorded yet: (copy, queue file).
    seen: Vec<(At, String)>,
    /// Copies recorded done: (copy, queue file, whether the device already lost that record).
    recorded: Vec<(At, String, bool)>,
    /// An MX crash that found nothing of this pair in flight yet, until the MX restarts: a copy
    /// the store completes meanwhile belongs to a transaction the crash cut short.
    crash_unused: Option<At>,
    causes: Vec<Cause>,
}

impl Copies {
    fn take_open(&mut self) -> Option<At> {
        (!self.open.is_empty()).then(|| self.open.remove(0))
    }
}

pub fn check(facts: &Facts, out: &mut Vec<Violation>) {
    let mut count: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for delivery in &facts.deliveries {
        *count.entry((delivery.msg, delivery.mailbox)).or_default() += 1;
    }
    let mut pairs: BTreeMap<(String, String), Copies> =
        count.into_iter().filter(|(_, copies)| *copies > 1).map(|((msg, mailbox), _)| ((msg.to_string(), mailbox.to_string()), Copies::default())).collect();
    if pairs.is_empty() {
        return;
    }
    for (at, record) in facts.records_of(&[K::StoreDelivered, K::LmtpReply, K::LmtpFailure, K::QueueRecorded, K::Crash, K::Restart, K::DiskError, K::DiskDropped]) {
        follow(&mut pairs, at, &record.host, &record.event);
    }
    for ((msg, mailbox), mut copies) in pairs {
        sender_causes(facts, &msg, &mailbox, &mut copies.causes);
        erased_copies(facts, &copies.all.clone(), &mut copies.causes);
        let allowed = 1 + copies.causes.len();
        if copies.all.len() <= allowed {
            continue;
        }
        let mut evidence = copies.all.clone();
        evidence.extend(copies.causes.iter().map(|cause| cause.at));
        evidence.sort();
        evidence.dedup();
        let named = if copies.causes.is_empty() {
            "none".to_string()
        } else {
            copies.causes.iter().map(|cause| format!("#{}: {}", cause.at, cause.what)).collect::<Vec<_>>().join("; ")
        };
        let late = copies.open.iter().map(|at| format!("#{at}")).collect::<Vec<_>>();
        let late = if late.is_empty() { String::new() } else { format!("; copies no reply, failure or crash at the MX accounts for: {}", late.join(", ")) };
        out.push(Violation::new(
            "A13",
            format!("msg {msg} mailbox {mailbox}"),
            format!(
                "{} mailbox copies but {} cause(s) in the history (causes: {named}){late}: {} duplicate(s) without a cause",
                copies.all.len(),
                copies.causes.len(),
                copies.all.len() - allowed
            ),
            evidence,
        ));
    }
}

/// Advances every followed pair over one record.
fn follow(pairs: &mut BTreeMap<(String, String), Copies>, at: At, host: &str, event: &Event) {
    match event {
        Event::StoreDelivered(stored) => {
            let (mailbox, msg) = (&stored.mailbox, &stored.msg);
            if let Some(copies) = pairs.get_mut(&(msg.to_string(), mailbox.to_string())) {
                copies.all.push(at);
                match copies.crash_unused.take() {
                    Some(crash) => copies.causes.push(Cause { at: crash, what: format!("the MX crashed with the transaction in flight; the store completed the copy at #{at} while the MX was down") }),
                    None => copies.open.push(at),
                }
            }
        }
        Event::LmtpReply { queue_file, msg, rcpt, reply } if reply.starts_with('2') => {
            if let Some(copies) = pairs.get_mut(&(msg.to_string(), Facts::mailbox_of(rcpt))) {
                if let Some(copy) = copies.take_open() {
                    copies.seen.push((copy, queue_file.to_string()));
                }
            }
        }
        Event::LmtpFailure { msg, stage: Stage::DataEnd, error, queue_file } => {
            for copies in of_message(pairs, msg) {
                if let Some(copy) = copies.take_open() {
                    copies.causes.push(Cause { at, what: format!("the MX never saw the store's reply to the copy at #{copy} ({queue_file}: {error})") });
                } else if let Some(position) = copies.seen.iter().position(|(_, file)| file == queue_file) {
                    // The MX saw this copy's 2xx, but it records a transaction once every reply is
                    // in, and this one failed first (another recipient's reply never came): the
                    // retry delivers the seen copy again (found by swarm: a false alarm).
                    let (copy, _) = copies.seen.remove(position);
                    copies.causes.push(Cause { at, what: format!("the MX saw the store's 2xx for the copy at #{copy}, but the transaction failed before it was recorded ({queue_file}: {error})") });
                }
            }
        }
        Event::QueueRecorded { queue_file, msg, done, .. } => {
            for rcpt in done {
                let Some(copies) = pairs.get_mut(&(msg.to_string(), Facts::mailbox_of(rcpt))) else { continue };
                if let Some(position) = copies.seen.iter().position(|(_, file)| file == queue_file) {
                    let (copy, file) = copies.seen.remove(position);
                    copies.recorded.push((copy, file, false));
                }
            }
        }
        Event::Crash if host == "mx" => {
            for copies in pairs.values_mut() {
                if !copies.seen.is_empty() {
                    let (copy, file) = copies.seen.remove(0);
                    copies.causes.push(Cause { at, what: format!("the MX crashed between the store's 2xx for the copy at #{copy} and recording it in {file}") });
                } else if let Some(copy) = copies.take_open() {
                    copies.causes.push(Cause { at, what: format!("the MX crashed before it saw the store's reply to the copy at #{copy}") });
                } else {
                    copies.crash_unused = Some(at);
                }
            }
        }
        Event::Restart if host == "mx" => {
            for copies in pairs.values_mut() {
                copies.crash_unused = None;
            }
        }
        Event::DiskError { op, path, error } if host == "mx" => {
            for copies in pairs.values_mut() {
                if let Some(position) = copies.seen.iter().position(|(_, file)| touches(path, file)) {
                    let (copy, file) = copies.seen.remove(position);
                    copies.causes.push(Cause { at, what: format!("the queue could not record the store's 2xx for the copy at #{copy} in {file} ({op} {path}: {error})") });
                }
            }
        }
        Event::DiskDropped { op, path } if host == "mx" => {
            for copies in pairs.values_mut() {
                if let Some(recorded) = copies.recorded.iter_mut().find(|(_, file, lost)| !lost && touches(path, file)) {
                    recorded.2 = true;
                    let copy = recorded.0;
                    copies.causes.push(Cause { at, what: format!("the MX's disk lost the acknowledged {op} {path} that recorded the copy at #{copy} as done") });
                }
            }
        }
        _ => {}
    }
}

fn of_message<'a>(pairs: &'a mut BTreeMap<(String, String), Copies>, msg: &str) -> impl Iterator<Item = &'a mut Copies> {
    let from = (msg.to_string(), String::new());
    let msg = msg.to_string();
    pairs.range_mut(from..).take_while(move |((of, _), _)| *of == msg).map(|(_, copies)| copies)
}

/// Whether a disk operation on `path` was part of recording `queue_file`: the file itself, its
/// temporary rewrite, or its directory's fsync.
fn touches(path: &str, queue_file: &str) -> bool {
    path == queue_file || path.strip_prefix(queue_file).is_some_and(|rest| rest.starts_with('.')) || path == parent(queue_file)
}

/// Copies a restore from backup erased (made after the backup, before the restore): the
/// mailbox lost them, so the MX's retry delivering the message again adds no copy to what the
/// owner has (swarm found it: a false alarm after a rollback).
fn erased_copies(facts: &Facts, all: &[At], causes: &mut Vec<Cause>) {
    for &copy in all {
        let erased_by = facts.rollbacks.iter().find(|(snapshot, rollback)| snapshot.is_none_or(|at| at < copy) && copy < *rollback);
        if let Some(&(_, rollback)) = erased_by {
            causes.push(Cause { at: rollback, what: format!("the restore from backup at #{rollback} erased the copy at #{copy}") });
        }
    }
}

/// MX acknowledgements of the message for this mailbox that its sender never saw: each made the
/// sender send again, and so one more queue entry.
fn sender_causes(facts: &Facts, msg: &str, mailbox: &str, causes: &mut Vec<Cause>) {
    let for_mailbox = |rcpt: &str| Facts::mailbox_of(rcpt) == mailbox;
    let acks: Vec<At> = facts.acks_of_message(msg).filter(|(_, _, rcpts, ..)| rcpts.iter().any(|rcpt| for_mailbox(rcpt))).map(|(at, ..)| *at).collect();
    let seen: usize = facts.sender_saw_ack.range((msg, "")..).take_while(|((of, _), _)| *of == msg).filter(|((_, rcpt), _)| for_mailbox(rcpt)).map(|(_, count)| count).sum();
    // The sender stops at the acknowledgement it sees: the ones it missed came first.
    for at in acks.iter().take(acks.len().saturating_sub(seen)) {
        causes.push(Cause { at: *at, what: "the MX acknowledged the message but the sender never saw the 2xx and sent it again".to_string() });
    }
    unanswered_causes(facts, msg, causes);
}

/// Queue entries the MX made durable but never answered for (it crashed between queueing and
/// its 2xx: no end-of-data record names them), paired with the sender's end of data that got
/// no reply: the sender rightly sent again (RFC 1047), and the entry its restart found made one
/// more copy. Each unanswered entry excuses one copy, and only with such a failure to pair it.
fn unanswered_causes(facts: &Facts, msg: &str, causes: &mut Vec<Cause>) {
    let answered: Vec<&str> = facts.records.iter().filter_map(|record| match &record.event {
        Event::MxDataEnd(end) if end.msg == *msg => end.queue_file.as_deref(),
        _ => None,
    }).collect();
    let mut unanswered: Vec<&str> = facts.records.iter().filter_map(|record| match &record.event {
        Event::LmtpAttempt { msg: of, queue_file, .. } if of == msg && !answered.contains(&queue_file.as_str()) => Some(queue_file.as_str()),
        _ => None,
    }).collect();
    unanswered.sort_unstable();
    unanswered.dedup();
    let failures = facts.records.iter().enumerate().filter(|(_, record)| matches!(&record.event, Event::SmtpFailure { msg: of, stage: Stage::DataEnd, .. } if of == msg));
    for ((at, _), file) in failures.zip(unanswered) {
        causes.push(Cause { at, what: format!("the sender's end of data got no reply, but the MX had queued the message ({file}) before it went down, and delivered it after its restart") });
    }
}
