//! The storage-fault defects are caught by their checkers on `scenarios/storage`, and the clean
//! stack passes the same scenarios and seeds.

use mailchaos::cli::judge;
use sim::scenario::{self, Loaded};
use sim::seed::Seed;
use stack::{Defect, Defects};
use std::collections::BTreeSet;
use std::path::Path;

fn storage(name: &str) -> Loaded {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../../scenarios/storage/{name}.toml"));
    scenario::load(&path).unwrap_or_else(|error| panic!("scenarios/storage/{name}.toml: {error:?}"))
}

/// Searches seeds 1..=50 for the first where the defect makes all of `expected` fire; asserts
/// that the clean stack is silent on every seed up to that one. Returns the seed.
fn caught(name: &str, defect: Defect, expected: &[&str]) -> u64 {
    let loaded = storage(name);
    for seed in 1..=50 {
        let clean = judge(&loaded, Seed(seed), &Defects::none()).violations;
        assert!(clean.is_empty(), "clean stack on {name} seed {seed}: {:?}", &clean[..clean.len().min(3)]);
        let fired: BTreeSet<&str> = judge(&loaded, Seed(seed), &Defects::of(&[defect])).violations.iter().map(|v| v.invariant).collect();
        if expected.iter().all(|invariant| fired.contains(invariant)) {
            return seed;
        }
    }
    panic!("{} on {name}: {expected:?} never all fired in seeds 1..=50", defect.name());
}

#[test]
fn an_fsync_error_retried_and_trusted_is_caught() {
    caught("fsync-fail", Defect::FsyncErrorIgnored, &["A2", "A15"]);
}

#[test]
fn a23_catches_a_damaged_message_served_without_a_checksum() {
    caught("bit-rot", Defect::NoChecksum, &["A23"]);
    caught("torn-and-lost", Defect::NoChecksum, &["A23"]);
}

#[test]
fn a17_a18_a19_catch_uidvalidity_kept_after_a_rollback() {
    caught("rollback", Defect::KeepUidvalidityOnRollback, &["A17", "A18", "A19"]);
}

#[test]
fn a25_and_a12_catch_mail_bounced_for_a_cohort_that_is_offline() {
    caught("cohort-restore", Defect::BounceOfflineCohort, &["A25", "A12"]);
}

/// The staged restore as the history shows it: the store refuses offline mailboxes with 4xx
/// only, publishes nothing into them, and gives a new UIDVALIDITY to exactly the mailboxes of
/// the cohort restored from its backup.
#[test]
fn a_cohort_restore_holds_mail_and_renews_uidvalidity_only_where_restored_from_backup() {
    let loaded = storage("cohort-restore");
    let cohorts = loaded.scenario.cohorts();
    let from_backup: BTreeSet<&str> = cohorts.iter().filter(|cohort| cohort.from_backup_at_s.is_some()).flat_map(|cohort| cohort.mailboxes.iter().map(String::as_str)).collect();
    assert_eq!(from_backup.len(), 4);
    for seed in 1..=3 {
        let output = sim::world::run(&loaded.scenario, Seed(seed), &Defects::none());
        let records = &output.history.records;
        let held = records.iter().filter(|r| matches!(&r.event, history::Event::StoreRefusal { reply, .. } if reply.starts_with("450 4.2.1"))).count();
        assert!(held > 0, "seed {seed}: no mail was held");
        let renewed: BTreeSet<&str> = records.iter().filter_map(|r| match &r.event {
            history::Event::StoreRecovered { mailbox, restored: true, .. } => Some(mailbox.as_str()),
            _ => None,
        }).collect();
        assert_eq!(renewed, from_backup, "seed {seed}");
    }
}

/// A clean run of the rollback scenario reports its losses instead of hiding them, and a
/// clean run of bit-rot reports the damage it refused to serve.
#[test]
fn losses_to_a_rollback_and_damage_are_reported_not_violations() {
    let (mut lost, mut damaged) = (0, 0);
    for seed in 1..=5 {
        for (name, counter) in [("rollback", &mut lost), ("bit-rot", &mut damaged)] {
            let judged = judge(&storage(name), Seed(seed), &Defects::none());
            assert!(judged.violations.is_empty(), "{name} seed {seed}: {:?}", &judged.violations[..judged.violations.len().min(3)]);
            let counts = mailchaos::report::counts(&judged.output.history.records);
            *counter += if name == "rollback" { counts.lost_to_rollback } else { counts.damaged_reported };
        }
    }
    assert!(lost > 0 && damaged > 0, "lost_to_rollback={lost} damaged_reported={damaged}");
}

/// Violations name who broke the promise.
#[test]
fn violations_carry_a_blame() {
    let judged = judge(&storage("fsync-fail"), Seed(1), &Defects::of(&[Defect::FsyncErrorIgnored]));
    let a2 = judged.violations.iter().find(|v| v.invariant == "A2").expect("A2 fires");
    assert!(a2.explanation.contains("[blame: stack"), "{}", a2.explanation);
}

/// A queue file the device damaged is set aside in `corrupt/` and reported, never relayed;
/// without the checksum check the damaged bytes reach the mailbox (A20) or a flipped
/// recipient is retried forever.
#[test]
fn a_damaged_queue_file_is_reported_not_relayed_and_its_absence_of_check_is_caught() {
    caught("queue-damage", Defect::NoQueueChecksum, &["A20"]);
    let mut damaged = 0;
    for seed in 1..=3 {
        let judged = judge(&storage("queue-damage"), Seed(seed), &Defects::none());
        assert!(judged.violations.is_empty(), "seed {seed}: {:?}", &judged.violations[..judged.violations.len().min(3)]);
        let set_aside = judged.output.history.records.iter().filter(|r| matches!(r.event, history::Event::QueueDamaged { .. })).count();
        assert!(set_aside > 0, "seed {seed}: no queue file was found damaged");
        damaged += mailchaos::report::counts(&judged.output.history.records).damaged_reported;
    }
    assert!(damaged > 0);
}

/// A damaged queue file whose envelope is intact goes back to its sender: the MX sets it aside
/// only once the sender's provider took a failure DSN over SMTP, from `<>` to the envelope's
/// reverse-path, reporting the recipients still queued. Sent from a postmaster address instead
/// (a DSN that can bounce and loop), A9 fires.
#[test]
fn a_damaged_queue_file_with_an_intact_envelope_is_returned_to_its_sender() {
    caught("queue-damage", Defect::DsnFromPostmaster, &["A9"]);
    let judged = judge(&storage("queue-damage"), Seed(1), &Defects::none());
    assert!(judged.violations.is_empty(), "{:?}", &judged.violations[..judged.violations.len().min(3)]);
    let records = &judged.output.history.records;
    let returned: Vec<&str> = records.iter().filter_map(|r| match &r.event {
        history::Event::QueueDamaged { dsn: Some(dsn), .. } => Some(dsn.as_str()),
        _ => None,
    }).collect();
    assert!(!returned.is_empty(), "no damaged queue file was returned to its sender");
    for dsn in returned {
        let received: Vec<(&history::Text, &Vec<String>, &history::Text)> = records.iter().filter_map(|r| match &r.event {
            history::Event::MailReceived { mail_from, rcpts, content, .. } if content.contains(&format!("Message-ID: <{dsn}>")) => Some((mail_from, rcpts, content)),
            _ => None,
        }).collect();
        assert_eq!(received.len(), 1, "{dsn} was received {} times", received.len());
        let (mail_from, rcpts, content) = received[0];
        assert_eq!((mail_from.as_str(), rcpts.len()), ("", 1), "{dsn}");
        let report = mail::message::parse_dsn(content.as_bytes()).expect("an RFC 3464 report");
        assert!(!report.recipients.is_empty() && report.recipients.iter().all(|(_, action, status)| action == "failed" && status.starts_with("5.")), "{dsn}: {:?}", report.recipients);
    }
    let counts = mailchaos::report::outcomes_by_policy(records);
    assert!(counts.values().map(|row| row.returned).sum::<usize>() > 0 && counts.values().all(|row| row.lost == 0));
}

/// The DSN is judged where it arrived, not by the MX's word: the same history with the DSNs
/// removed from the provider's wire (an MX that logs a return it never made) is a loss (A2).
#[test]
fn a_return_the_mx_claims_but_the_sender_never_received_is_a_loss() {
    let judged = judge(&storage("queue-damage"), Seed(1), &Defects::none());
    let mut output = judged.output;
    output.history.records.retain(|r| !matches!(&r.event, history::Event::MailReceived { .. }));
    let fired: BTreeSet<&str> = check::check_all(&output).iter().map(|v| v.invariant).collect();
    assert!(fired.contains("A2"), "{fired:?}");
}

/// A run ends when its work is done, not at its horizon: after a restore from backup the final
/// sweep no longer waits for messages the restore erased.
#[test]
fn a_rollback_run_drains_before_its_horizon() {
    let loaded = storage("rollback");
    let horizon_ms = loaded.scenario.horizon_s.get_ref() * 1000;
    for seed in 1..=3 {
        let judged = judge(&loaded, Seed(seed), &Defects::none());
        assert!(judged.violations.is_empty(), "seed {seed}: {:?}", &judged.violations[..judged.violations.len().min(3)]);
        assert!(judged.output.drained_at_ms.is_some() && judged.output.ended_at_ms < horizon_ms, "seed {seed} idled to its horizon");
    }
}
