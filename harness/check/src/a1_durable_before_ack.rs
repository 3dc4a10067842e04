//! A1 durable-before-ack: a 2xx at end of data (SMTP) or per recipient (LMTP) goes out only
//! after the message is durable: its last write fsynced, and its final name made durable by a
//! directory fsync after the file was created or renamed there. RFC 5321 §4.1.1.4, §6.1.
//!
//! The moment a 2xx went out is where the network layer saw it cross the server's socket
//! (`wire.rs`), not when the stack says it answered. Which file holds the message is the
//! stack's claim (`MxDataEnd`, `StoreDelivered`, `StoreRetryRecognised` on that connection),
//! and a 2xx on the wire with no claim before it is itself a violation: a server whose log and
//! wire disagree is caught, not believed.

use history::EventKind as K;
use super::facts::{At, DiskOp, Facts, HostDisk};
use super::Violation;
use history::{parent, Event};
use std::collections::{BTreeMap, VecDeque};

/// A stack's claim of where an acknowledged message sits: (at, file, what it is about).
type Claim<'a> = (At, Option<&'a str>, String);

pub fn check(facts: &Facts, out: &mut Vec<Violation>) {
    let (mut mx_claims, mut store_claims) = claims(facts);
    let empty = HostDisk::default();
    for reply in facts.wire.data_replies.iter().filter(|reply| reply.reply.starts_with('2')) {
        let (server, claims) = if reply.lmtp { ("store", &mut store_claims) } else { ("mx", &mut mx_claims) };
        let queue = claims.entry(reply.conn.as_str()).or_default();
        let Some((claim_at, file, subject)) = queue.front().filter(|(claim_at, ..)| *claim_at < reply.at).cloned() else {
            let answered = reply.rcpt.as_ref().map_or(String::from("at end of data"), |rcpt| format!("for <{rcpt}>"));
            let evidence = queue.front().map_or(vec![reply.at], |(claim_at, ..)| vec![reply.at, *claim_at]);
            out.push(Violation::new("A1", format!("{server} connection {}", reply.conn), format!("{server} answered {:?} {answered} on the wire before it named where the message is durable (its log and the wire disagree)", reply.reply), evidence));
            continue;
        };
        queue.pop_front();
        let Some(file) = file else { continue }; // a 2xx for a message it dropped: A21 judges that
        let disk = facts.disks.get(server).unwrap_or(&empty);
        if let Err((why, mut evidence)) = covered(disk, file, reply.at) {
            evidence.extend([claim_at, reply.at]);
            out.push(Violation::new("A1", subject, format!("{server} answered {:?} on the wire but {why} ({file})", reply.reply), evidence));
        }
    }
}

/// Per connection, in order: the MX's 2xx claims at end of data, and the store's per recipient.
fn claims<'a>(facts: &'a Facts) -> (BTreeMap<&'a str, VecDeque<Claim<'a>>>, BTreeMap<&'a str, VecDeque<Claim<'a>>>) {
    let (mut mx, mut store): (BTreeMap<_, VecDeque<_>>, BTreeMap<_, VecDeque<_>>) = (BTreeMap::new(), BTreeMap::new());
    for (at, record) in facts.records_of(&[K::MxDataEnd, K::StoreDelivered, K::StoreRetryRecognised]) {
        match &record.event {
            Event::MxDataEnd(end) if end.reply.starts_with('2') => {
                mx.entry(end.conn.as_str()).or_default().push_back((at, end.queue_file.as_deref(), format!("msg {} rcpts {}", end.msg, end.rcpts.join(","))));
            }
            Event::StoreDelivered(stored) | Event::StoreRetryRecognised(stored) => {
                store.entry(stored.conn.as_str()).or_default().push_back((at, Some(stored.file.as_str()), format!("msg {} mailbox {}", stored.msg, stored.mailbox)));
            }
            _ => {}
        }
    }
    (mx, store)
}

/// Ok when `file` was durable at `reply_at`; otherwise why not, with the records that show it.
pub fn covered(disk: &HostDisk, file: &str, reply_at: At) -> Result<(), (String, Vec<At>)> {
    // The file's contents may have been written under earlier names and renamed here (tmp/ →
    // new/, and new/ → cur/ once its owner read it): follow the renames back.
    let mut names = vec![file];
    let mut before = reply_at;
    while names.len() < 16 {
        let current = names[names.len() - 1];
        let Some(&(at, source)) = disk.renamed_from.get(current).and_then(|sources| sources.iter().rev().find(|(at, _)| *at < before)) else { break };
        before = at;
        names.push(source);
    }
    let ops: Vec<(At, DiskOp)> = {
        let mut ops: Vec<(At, DiskOp)> = names.iter().filter_map(|&name| disk.by_path.get(name)).flatten().copied().filter(|(at, _)| *at < reply_at).collect();
        ops.sort();
        ops
    };
    let Some(&(written, _)) = ops.iter().rev().find(|(_, op)| *op == DiskOp::Write) else {
        return Err(("the message was never written".into(), vec![]));
    };
    if !ops.iter().any(|&(at, op)| op == DiskOp::Sync && at > written) {
        return Err(("the file was not fsynced after its last write".into(), vec![written]));
    }
    let named = disk
        .by_path
        .get(file)
        .and_then(|ops| ops.iter().rev().find(|(at, op)| *at < reply_at && matches!(op, DiskOp::Write | DiskOp::RenamedTo)).map(|(at, _)| *at))
        .unwrap_or(written);
    let dir = parent(file);
    // A directory's fsyncs are in history order: the first after `named` decides (a queue
    // directory is synced once per message, so a scan per reply was quadratic).
    let dir_synced = disk.dir_syncs.get(dir).is_some_and(|syncs| syncs.get(syncs.partition_point(|&at| at <= named)).is_some_and(|&at| at < reply_at));
    if !dir_synced {
        return Err((format!("directory {dir} was not fsynced after the file got its name"), vec![named]));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// tmp/X written and synced (0, 1), renamed into new/ (2), new/ synced (3); read later:
    /// renamed into cur/ (5), cur/ synced (6).
    fn read_message() -> HostDisk<'static> {
        let mut disk = HostDisk::default();
        let (tmp, new, cur) = ("mail/anna/tmp/X", "mail/anna/new/X", "mail/anna/cur/X:2,S");
        disk.by_path.insert(tmp.into(), vec![(0, DiskOp::Write), (1, DiskOp::Sync), (2, DiskOp::RenamedFrom)]);
        disk.by_path.insert(new.into(), vec![(2, DiskOp::RenamedTo), (5, DiskOp::RenamedFrom)]);
        disk.by_path.insert(cur.into(), vec![(5, DiskOp::RenamedTo)]);
        disk.renamed_from.insert(new.into(), vec![(2, tmp.into())]);
        disk.renamed_from.insert(cur.into(), vec![(5, new.into())]);
        disk.renamed_to.insert(tmp.into(), vec![(2, new.into())]);
        disk.renamed_to.insert(new.into(), vec![(5, cur.into())]);
        disk.dir_syncs.insert("mail/anna/new".into(), vec![3]);
        disk.dir_syncs.insert("mail/anna/cur".into(), vec![6]);
        disk
    }

    #[test]
    fn a_message_read_into_cur_is_followed_through_its_renames() {
        let disk = read_message();
        assert_eq!(covered(&disk, "mail/anna/new/X", 4), Ok(()));
        // Where a retry's 2xx finds it once read: written under tmp/, two renames back.
        assert_eq!(covered(&disk, "mail/anna/cur/X:2,S", 7), Ok(()));
        assert!(covered(&disk, "mail/anna/cur/X:2,S", 6).is_err(), "cur/ not yet synced");
        assert_eq!(disk.names_from("mail/anna/new/X", 4), ["mail/anna/new/X", "mail/anna/cur/X:2,S"]);
        assert_eq!(disk.names_from("mail/anna/new/X", 5), ["mail/anna/new/X"]);
        let lineage: Vec<&str> = disk.lineage("mail/anna/cur/X:2,S").into_iter().collect();
        assert_eq!(lineage, ["mail/anna/cur/X:2,S", "mail/anna/new/X", "mail/anna/tmp/X"]);
    }
}
