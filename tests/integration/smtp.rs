//! SMTP details real clients hit, seen on whole simulated runs: the trace field, the dates of
//! DSNs, the From of bounces in the workload, postmaster, invalid parameters; and the planted
//! originals of these bugs, each caught by its invariant.

use crate::support::fast;
use history::{Event, InvalidParam, Record, Stage};
use mailchaos::cli::judge;
use mail::message::rfc5322_date;
use sim::seed::Seed;
use sim::world::plan::{self, EPOCH_UNIX_S};
use stack::{Defect, Defects};

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
    records.iter().find(|record| matches!(&record.event, Event::Submit(submit) if submit.msg == msg)).expect("every DSN is about a submitted message")
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
            let Event::DsnSent(sent) = &record.event else { continue };
            let (msg, content) = (&sent.msg, &sent.content);
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

// Issue #8 item 5: each original bug is a planted defect; the fast suite reaches it and only
// the named invariant fires, while the clean stack passes the same runs.
use crate::support::caught_exactly as caught;

/// A 998-octet line that starts with "." travels as 999 octets after stuffing; the stuffing
/// dot is no text (RFC 5321 §4.5.2), so the line is within the limit. The long-lines fixture
/// has one; a sender using DATA (not BDAT) stuffs it.
#[test]
fn a26_catches_a_stuffing_dot_counted_toward_the_line_limit() {
    caught("baseline", 2, Defect::StuffingDotCounted, &["A26"]);
}

#[test]
fn a26_catches_postmaster_refused() {
    caught("baseline", 2, Defect::PostmasterRefused, &["A26"]);
}

#[test]
fn a27_catches_a_received_field_that_names_the_first_recipient_in_every_copy() {
    caught("baseline", 2, Defect::ReceivedForFirstRcpt, &["A27"]);
}

#[test]
fn a28_catches_rcpt_parameters_left_unchecked() {
    caught("baseline", 2, Defect::RcptParamsUnchecked, &["A28"]);
}

#[test]
fn a28_catches_a_signed_mail_size_accepted() {
    caught("baseline", 2, Defect::MailSizeSignAccepted, &["A28"]);
}

/// Found by `cargo xtask mutants`: an MX that refused every DATA passed every invariant.
#[test]
fn a26_catches_data_refused_when_only_the_last_rcpt_was() {
    caught("baseline", 2, Defect::DataAfterRefusedLastRcpt, &["A26"]);
}

#[test]
fn a10_catches_dsns_dated_1970_with_their_own_time_as_arrival() {
    caught("baseline", 2, Defect::DsnDated1970, &["A10"]);
}

fn mailchaos(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_mailchaos")).args(args).current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).output().expect("runs")
}

/// The done-when of #8: every original of item 5 is listed by `list-defects`, a run of the
/// shipped fast suite with it exits 1, and the repro line it prints exits 1 too.
#[test]
fn each_smtp_detail_original_is_listed_and_its_repro_line_exits_1() {
    let listed = String::from_utf8_lossy(&mailchaos(&["list-defects"]).stdout).to_string();
    for defect in ITEM_5 {
        assert!(listed.lines().any(|line| line.split_whitespace().next() == Some(defect.name())), "{} is not listed", defect.name());
        let run = mailchaos(&["run", "scenarios/fast/baseline.toml", "--seed", "1", "--defect", defect.name()]);
        assert_eq!(run.status.code(), Some(1), "{}", defect.name());
        let text = String::from_utf8_lossy(&run.stdout).to_string();
        let repro = text.lines().find_map(|line| line.strip_prefix("repro: ")).expect("a repro line");
        let words: Vec<&str> = repro.split_whitespace().collect();
        assert_eq!(mailchaos(&words[1..]).status.code(), Some(1), "{repro}");
    }
}

const ITEM_5: [Defect; 7] = [
    Defect::StuffingDotCounted,
    Defect::PostmasterRefused,
    Defect::ReceivedForFirstRcpt,
    Defect::DupRcptDeliveredTwice,
    Defect::RcptParamsUnchecked,
    Defect::MailSizeSignAccepted,
    Defect::DsnDated1970,
];

/// The clean MX refuses the workload's invalid parameters as RFC 5321 §4.1.1.11 and RFC 1870
/// say (555 for SIZE on RCPT, 501 for a signed size on MAIL), accepts postmaster in both
/// spellings, and the clients see their own address at most in a FOR clause: each judge has
/// something to judge on the clean stack too.
#[test]
fn the_clean_mx_refuses_invalid_parameters_and_accepts_postmaster() {
    let judged = judge(&fast("baseline"), Seed(1), &Defects::none());
    assert!(judged.violations.is_empty(), "{:?}", judged.violations);
    let records = &judged.output.history.records;
    let invalid: Vec<(&str, &InvalidParam)> = records.iter().filter_map(|r| match &r.event {
        Event::Submit(submit) => Some((submit.msg.as_str(), submit.invalid_param.as_ref()?)),
        _ => None,
    }).collect();
    let reply_to = |msg: &str, stage: Stage, rcpt: Option<&str>| records.iter().find_map(|r| match &r.event {
        Event::SmtpReply { msg: m, stage: s, rcpt: r, reply, .. } if m == msg && *s == stage && r.as_deref() == rcpt => Some(reply.clone()),
        _ => None,
    });
    assert!(invalid.iter().any(|(_, i)| i.stage == Stage::Mail) && invalid.iter().any(|(_, i)| i.stage == Stage::Rcpt), "{invalid:?}");
    for (msg, param) in invalid {
        let reply = reply_to(msg, param.stage, param.rcpt.as_deref()).unwrap_or_default();
        let expected = if param.stage == Stage::Mail { "501 5.5.4" } else { "555 5.5.4" };
        assert!(reply.starts_with(expected), "{msg} {param:?}: {reply}");
    }
    let postmaster: Vec<&history::Text> = records.iter().filter_map(|r| match &r.event {
        Event::SmtpReply { stage: Stage::Rcpt, rcpt: Some(rcpt), reply, .. } if rcpt.starts_with("postmaster") => Some(reply),
        _ => None,
    }).collect();
    assert!(!postmaster.is_empty() && postmaster.iter().all(|reply| reply.starts_with("250")), "{postmaster:?}");
    let named: Vec<(&history::Text, &Vec<String>)> = records.iter().filter_map(|r| match &r.event {
        Event::ClientFetched(fetched) if !fetched.trace_for.is_empty() => Some((&fetched.mailbox, &fetched.trace_for)),
        _ => None,
    }).collect();
    assert!(!named.is_empty());
    for (mailbox, trace_for) in named {
        assert!(trace_for.iter().all(|address| address.starts_with(&format!("{mailbox}@"))), "{mailbox}: {trace_for:?}");
    }
}
