//! A15 atomic-publish: the store writes under a unique name in tmp/, fsyncs, renames into new/,
//! fsyncs the directory, and only then replies 2xx; never writes straight into new/. In the
//! final durable image every file in new/ and cur/ is byte-identical to an accepted message,
//! and every 2xx'd message is there unless its owner deleted it: under its name in new/, or
//! under a name the disk renamed it to since (read mail moves into cur/). maildir(5).

use super::facts::{DiskOp, Facts};
use super::Violation;

fn in_published_dir(path: &str) -> bool {
    path.starts_with("mail/") && (path.contains("/new/") || path.contains("/cur/"))
}

pub fn check(facts: &Facts, out: &mut Vec<Violation>) {
    check_writes(facts, out);
    check_image(facts, out);
    check_acknowledged_present(facts, out);
}

fn check_writes(facts: &Facts, out: &mut Vec<Violation>) {
    let Some(disk) = facts.disks.get("store") else { return };
    // In path order: `by_path` is a hash map, and a report must not depend on its order.
    let mut published: Vec<_> = disk.by_path.iter().filter(|(path, _)| in_published_dir(path)).collect();
    published.sort_unstable_by_key(|(path, _)| **path);
    for (path, ops) in published {
        if let Some((at, _)) = ops.iter().find(|(_, op)| *op == DiskOp::Write) {
            out.push(Violation::new("A15", format!("file {path}"), "written straight into new/ instead of tmp/ then rename", vec![*at]));
        }
    }
}

fn check_image(facts: &Facts, out: &mut Vec<Violation>) {
    let Some(image) = facts.image("store") else { return };
    let accepted = facts.accepted_digests();
    // Files the device damaged behind the store's back (it recorded the fault on the name):
    // A23 judges whether they were served. Damage the stack caused itself stays here.
    let name = |path: &str| path.rsplit('/').next().unwrap_or(path).to_string();
    let damaged = &facts.device_damaged;
    for (path, bytes) in image.iter().filter(|(path, _)| in_published_dir(path) && !damaged.contains(&name(path))) {
        let digest = Facts::digest_of_file(bytes);
        if !accepted.contains(digest.as_str()) {
            let evidence = facts.deliveries.iter().filter(|d| &d.file == path).map(|d| d.at).collect();
            out.push(Violation::new(
                "A15",
                format!("file {path}"),
                format!("after the final crash image, this file ({} bytes) is not byte-identical to any accepted message", bytes.len()),
                evidence,
            ));
        }
    }
}

fn check_acknowledged_present(facts: &Facts, out: &mut Vec<Violation>) {
    if facts.image("store").is_none() {
        return;
    }
    for delivery in &facts.deliveries {
        let deleted = facts.deleted_message(&delivery.mailbox, &delivery.msg);
        // A restore from backup took it away: A18 judges that (re-delivery or reported loss).
        let erased = facts.erased_by_rollback(delivery);
        if !deleted && !erased && !facts.survives(delivery) {
            out.push(Violation::new(
                "A15",
                format!("msg {} mailbox {}", delivery.msg, delivery.mailbox),
                format!("the store answered 2xx for {} but the file is not in the durable image", delivery.file),
                vec![delivery.at],
            ));
        }
    }
}
