//! The 2023 incident replayed in real time: a four-day store outage under each operator answer.

use mailchaos::cli::judge;
use mailchaos::report::outcomes_by_policy;
use sim::scenario;
use sim::seed::Seed;
use stack::Defects;
use std::path::Path;

fn outage(answer: &str) -> mailchaos::cli::Judged {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../../scenarios/outage/libero-2023-{answer}.toml"));
    judge(&scenario::load(&path).expect("valid scenario"), Seed(1), &Defects::none())
}

#[test]
fn answering_4xx_keeps_every_message_of_rfc_abiding_senders() {
    let judged = outage("4xx-tempfail");
    assert!(judged.violations.is_empty(), "{:?}", judged.violations);
    let outcomes = outcomes_by_policy(&judged.output.history.records);
    for policy in ["rfc5321", "postfix"] {
        let row = outcomes[policy];
        assert_eq!((row.lost, row.bounced_5xx, row.bounced_expiry), (0, 0, 0), "{policy}: {}", row.render());
        assert!(row.delivered > 0 && row.expected_delivered > 0, "{policy}: {}", row.render());
    }
    let short = outcomes["exchange-online"];
    assert!(short.bounced_expiry > 0 && short.expected_expired > 0, "a 24-hour lifetime cannot outlive a 4-day outage: {}", short.render());
}

#[test]
fn a_closed_port_is_as_safe_as_4xx() {
    let judged = outage("closed-port");
    assert!(judged.violations.is_empty(), "{:?}", judged.violations);
    assert_eq!(outcomes_by_policy(&judged.output.history.records)["postfix"].bounced_expiry, 0);
}

#[test]
fn answering_5xx_as_in_2023_is_flagged() {
    let judged = outage("5xx-bounce");
    assert!(judged.violations.iter().any(|v| v.invariant == "A22"), "{:?}", judged.violations);
    let bounced: usize = outcomes_by_policy(&judged.output.history.records).values().map(|row| row.bounced_5xx).sum();
    assert!(bounced > 100, "every sender bounces what it holds: {bounced}");
}

#[test]
fn the_libero_2023_device_stalls_for_days_at_its_hidden_limit_and_loses_nothing() {
    use history::Event;
    let judged = outage("hidden-limit");
    assert!(judged.violations.is_empty(), "{:?}", judged.violations);
    let records = &judged.output.history.records;
    let stall = records.iter().find(|r| matches!(&r.event, Event::DiskFault { fault, .. } if fault == "hidden-limit-stall")).expect("the hidden limit was reached");
    assert!(judged.output.ended_at_ms >= stall.t_ms + 4 * 86_400_000, "the stall lasted four days");
    let delivered = records.iter().filter(|r| matches!(r.event, Event::StoreDelivered(_))).count();
    assert!(delivered > 5000, "the backlog drained after the stall: {delivered}");
}
