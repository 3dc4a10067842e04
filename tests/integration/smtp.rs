//! SMTP details real clients hit, seen on whole simulated runs: the trace field, the dates of
//! DSNs, the From of bounces in the workload.

use crate::support::fast;
use history::{Event, Record};
use mailchaos::cli::judge;
use mail::message::rfc5322_date;
use sim::seed::Seed;
use sim::world::plan::{self, EPOCH_UNIX_S};
use stack::Defects;

/// The copies of a multi-recipient message must not show one another's recipients: a
/// `Received: ... for <addr>` clause, when there is one, names the mailbox it sits in. The
/// fields name the sending MTA's HELO name and carry a date of the simulated year.
#[test]
fn received_fields_name_the_client_and_never_another_recipient() {
    let judged = judge(&fast("baseline"), Seed(1), &Defects::none());
    let store = &judged.output.images["store"];
    let (mut with_for, mut without_for) = (0, 0);
    for (path, bytes) in store.iter().filter(|(path, _)| path.contains("/new/") || path.contains("/cur/")) {
        let mailbox = path.trim_start_matches("mail/").split('/').next().unwrap_or_default();
        let text = String::from_utf8_lossy(bytes);
        let start = text.find("Received: ").unwrap_or_else(|| panic!("{path} has no Received field"));
        let field: String = text[start..].split("\r\n").take_while(|line| !line.is_empty()).enumerate().take_while(|(index, line)| *index == 0 || line.starts_with('\t')).map(|(_, line)| line.trim_start()).collect::<Vec<_>>().join(" ");
        assert!(field.starts_with("Received: from mta.") && field.contains(" by mx.libero.test with ESMTP id "), "{path}: {field}");
        assert!(field.contains(" Jan 2023 "), "{path}: {field}");
        match field.split_once(" for <") {
            Some((_, rest)) => {
                with_for += 1;
                let address = rest.split('>').next().unwrap_or_default();
                assert_eq!(address.split('@').next(), Some(mailbox), "{path}: {field}");
            }
            None => without_for += 1,
        }
    }
    assert!(with_for > 0 && without_for > 0, "{with_for} fields with a recipient, {without_for} without");
}

fn submitted_at<'a>(records: &'a [Record], msg: &str) -> &'a Record {
    records.iter().find(|record| matches!(&record.event, Event::Submit { msg: m, .. } if m == msg)).expect("every DSN is about a submitted message")
}

/// A DSN is dated on the simulated clock from the run's wall-time base (not 1970), and its
/// Arrival-Date is when the sender took the original into its queue, not the DSN's own time.
#[test]
fn dsns_are_dated_now_and_name_the_arrival_of_the_original() {
    let (mut checked, mut later) = (0, 0);
    for scenario in ["baseline", "partition-sender-mx"] {
        let judged = judge(&fast(scenario), Seed(1), &Defects::none());
        let records = &judged.output.history.records;
        for record in records {
            let Event::DsnSent { msg, content, .. } = &record.event else { continue };
            let date = rfc5322_date(EPOCH_UNIX_S + record.t_ms / 1000);
            let arrival = rfc5322_date(EPOCH_UNIX_S + submitted_at(records, msg).t_ms / 1000);
            assert!(content.contains(&format!("\r\nDate: {date}\r\n")), "{scenario} {msg}: {content}");
            assert!(content.contains(&format!("\r\nArrival-Date: {arrival}\r\n")), "{scenario} {msg}: {content}");
            checked += 1;
            later += usize::from(date != arrival);
        }
    }
    assert!(checked > 0 && later > 0, "{checked} DSNs, {later} of them written after the arrival's second");
}

/// Workload messages sent with the null reverse-path (bounces) carry a valid From: the
/// provider's MAILER-DAEMON, never `From: <>`.
#[test]
fn null_sender_workload_messages_have_a_valid_from() {
    let loaded = fast("baseline");
    let plan = plan::make(&loaded.scenario, Seed(1));
    let bounces: Vec<_> = plan.workload.iter().flatten().filter(|planned| planned.from.is_empty()).collect();
    assert!(!bounces.is_empty());
    for planned in bounces {
        let text = String::from_utf8_lossy(&planned.bytes);
        let domain = planned.msg.rsplit_once('@').map(|(_, domain)| domain).unwrap_or_default();
        let from = text.split("\r\n").find(|line| line.starts_with("From: ")).expect("a From field");
        assert!(from == format!("From: <MAILER-DAEMON@{domain}>") || from == format!("From: MAILER-DAEMON@{domain}"), "{from}");
    }
}
