//! A1 durable-before-ack: a 2xx at end of data (SMTP) or per recipient (LMTP) goes out only
//! after the message is durable: its last write fsynced, and its final name made durable by a
//! directory fsync after the file was created or renamed there. RFC 5321 §4.1.1.4, §6.1.

use super::facts::{At, DiskOp, Facts, HostDisk};
use super::Violation;
use history::parent;

pub fn check(facts: &Facts, out: &mut Vec<Violation>) {
    let empty = HostDisk::default();
    let mx_disk = facts.disks.get("mx").unwrap_or(&empty);
    for (at, msg, rcpts, queue_file, _) in facts.mx_acks() {
        let Some(file) = queue_file else { continue };
        if let Err((why, mut evidence)) = covered(mx_disk, file, *at) {
            evidence.push(*at);
            out.push(Violation::new("A1", format!("msg {msg} rcpts {}", rcpts.join(",")), format!("MX answered 250 but {why} (queue file {file})"), evidence));
        }
    }
    let store_disk = facts.disks.get("store").unwrap_or(&empty);
    for delivery in &facts.deliveries {
        if let Err((why, mut evidence)) = covered(store_disk, &delivery.file, delivery.at) {
            evidence.push(delivery.at);
            out.push(Violation::new(
                "A1",
                format!("msg {} mailbox {}", delivery.msg, delivery.mailbox),
                format!("store answered LMTP 250 but {why} ({})", delivery.file),
                evidence,
            ));
        }
    }
    // A retry the store recognised is answered 2xx for the copy it made before: that copy must
    // be durable by then too.
    for (at, record) in facts.records.iter().enumerate() {
        let history::Event::StoreRetryRecognised { mailbox, msg, file, .. } = &record.event else { continue };
        if let Err((why, mut evidence)) = covered(store_disk, file, at) {
            evidence.push(at);
            out.push(Violation::new("A1", format!("msg {msg} mailbox {mailbox}"), format!("store answered LMTP 250 to a retry but {why} ({file})"), evidence));
        }
    }
}

/// Ok when `file` was durable at `reply_at`; otherwise why not, with the records that show it.
pub fn covered(disk: &HostDisk, file: &str, reply_at: At) -> Result<(), (String, Vec<At>)> {
    // The file's contents may have been written under an earlier name and renamed here.
    let mut names = vec![file.to_string()];
    if let Some(sources) = disk.renamed_from.get(file) {
        if let Some((_, source)) = sources.iter().rev().find(|(at, _)| *at < reply_at) {
            names.push(source.clone());
        }
    }
    let ops: Vec<(At, DiskOp)> = {
        let mut ops: Vec<(At, DiskOp)> = names.iter().flat_map(|name| disk.by_path.get(name).cloned().unwrap_or_default()).filter(|(at, _)| *at < reply_at).collect();
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
    let dir_synced = disk.dir_syncs.get(dir).is_some_and(|syncs| syncs.iter().any(|&at| at > named && at < reply_at));
    if !dir_synced {
        return Err((format!("directory {dir} was not fsynced after the file got its name"), vec![named]));
    }
    Ok(())
}
