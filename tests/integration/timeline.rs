//! `mailchaos timeline`: the picture of a run is read from the history alone, is well-formed
//! SVG with a lane per host, marks each violation at the record that proves it, is the same
//! bytes for the same seed, and the command refuses bad paths with exit 2.

use crate::support::{fast, mailchaos_within, Ran};
use history::{Event, History, Record, RunOutput};
use mailchaos::cli::judge;
use mailchaos::timeline::{self, Timeline};
use sim::seed::Seed;
use stack::{Defect, Defects};
use std::collections::BTreeSet;
use std::time::Duration;

fn run(args: &[&str]) -> Ran {
    mailchaos_within(args, Duration::from_secs(120)).unwrap_or_else(|error| panic!("{error}"))
}

/// Every text of an SVG document, parsed as XML (a malformed document fails here).
fn texts(svg: &str) -> Vec<String> {
    let document = roxmltree::Document::parse(svg).unwrap_or_else(|error| panic!("the SVG is not well-formed XML: {error}"));
    let root = document.root_element();
    assert_eq!(root.tag_name().name(), "svg");
    assert_eq!(root.tag_name().namespace(), Some("http://www.w3.org/2000/svg"));
    document.descendants().filter(|node| node.has_tag_name("text")).filter_map(|node| node.text().map(|text| text.trim().to_string())).collect()
}

#[test]
fn the_svg_parses_as_xml_and_has_a_lane_per_host_and_each_violation_at_its_record() {
    let loaded = fast("store-crash");
    let judged = judge(&loaded, Seed(2), &Defects::of(&[Defect::ReuseUidAfterRestart]));
    assert!(!judged.violations.is_empty(), "the planted defect must show violations to mark");
    let svg = timeline::svg(&judged.output, &judged.violations, "store-crash seed=0x2");
    let texts = texts(&svg);
    // A lane per host that recorded something, named in the margin: hosts from the history, not a list.
    let hosts: BTreeSet<&str> = judged.output.history.records.iter().map(|record| &*record.host).filter(|host| *host != "world").collect();
    assert!(hosts.contains("mx") && hosts.contains("store") && hosts.contains("clients") && hosts.iter().any(|host| host.starts_with("provider-")), "{hosts:?}");
    for host in &hosts {
        assert!(texts.iter().any(|text| text == host), "no lane for {host}: {texts:?}");
    }
    let picture = Timeline::of(&judged.output, &judged.violations);
    assert_eq!(picture.lanes[..2], ["mx".to_string(), "store".to_string()]);
    // The store crashed: a band "down" on its lane, from the crash to the restart.
    let store = picture.lanes.iter().position(|lane| lane == "store").unwrap();
    assert!(picture.bands.iter().any(|band| band.kind == "down" && band.lanes == [store] && band.end_ms > band.start_ms), "{:?}", picture.bands);
    // Each violation sits at its first evidence record, and its label names that record.
    for (violation, mark) in judged.violations.iter().zip(&picture.violations) {
        assert_eq!(mark.record, violation.evidence.first().copied());
        let at = mark.record.expect("these violations name their records");
        assert_eq!(mark.t_ms, judged.output.history.records[at].t_ms);
        assert_eq!(picture.lanes[mark.lane], &*judged.output.history.records[at].host);
    }
    let first = &picture.violations[0];
    let label = format!("{} #{}", first.invariant, first.record.unwrap());
    assert!(texts.iter().any(|text| text.starts_with(&label)), "no label {label}: {texts:?}");
    // The curves: what the run line counts, bucket by bucket.
    let counts = mailchaos::report::counts(&judged.output.history.records);
    assert_eq!(picture.curves.accepted.iter().sum::<u64>(), counts.accepted as u64);
    assert_eq!(picture.curves.bounced.iter().sum::<u64>(), counts.bounced as u64);
    assert_eq!(picture.curves.deferred.iter().sum::<u64>(), counts.deferred as u64);
    assert!(picture.curves.queue_depth.iter().any(|&depth| depth > 0), "the MX queued mail");
    assert!(picture.curves.smtp_sessions.iter().any(|&open| open > 0));
    // Deterministic: the same run, the same bytes; no clock in them.
    let again = judge(&loaded, Seed(2), &Defects::of(&[Defect::ReuseUidAfterRestart]));
    assert_eq!(svg, timeline::svg(&again.output, &again.violations, "store-crash seed=0x2"));
}

fn record(t_ms: u64, host: &str, event: Event) -> Record {
    Record { t_ms, host: host.into(), event }
}

fn output_of(records: Vec<Record>) -> RunOutput {
    RunOutput { live: false, ..RunOutput::as_recorded(History { records, ..History::default() }, false) }
}

/// Bands and marks come from the world's records: the outage and the operator's answer, the
/// hidden-limit stall (until the device's next operation), fault windows from the world's
/// notes, restores of several mailboxes at once (a cohort), and hosts no list names.
#[test]
fn bands_and_marks_are_read_from_the_worlds_records() {
    let hour = 3_600_000;
    let write = |path: &str| Event::DiskWrite { path: path.into(), len: 1, digest: "d".into() };
    let restored = |mailbox: &str| Event::StoreRecovered { mailbox: mailbox.into(), uidvalidity: 2, uidnext: 1, messages: 0, debris_removed: 0, restored: true };
    let records = vec![
        record(0, "world", Event::Clock { tick_ms: 1000, epoch_unix_s: 1_674_432_000 }),
        record(0, "world", Event::Phase { name: "chaos".into() }),
        record(hour, "mx", write("queue/1")),
        record(2 * hour, "world", Event::Outage { down: true }),
        record(2 * hour, "world", Event::Operator { mode: "5xx-bounce".into() }),
        record(3 * hour, "store", Event::DiskFault { fault: "hidden-limit-stall".into(), op: "-".into(), path: "-".into() }),
        record(4 * hour, "world", Event::Fault { action: "begin disk-stall mx ops=[\"fsync\"] from 14400.0s to 18000.0s".into() }),
        record(4 * hour, "world", Event::Fault { action: "partition provider-gmail mx".into() }),
        record(5 * hour, "world", Event::Fault { action: "end disk-stall mx ops=[\"fsync\"] from 14400.0s to 18000.0s".into() }),
        record(5 * hour, "world", Event::Fault { action: "repair provider-gmail mx".into() }),
        record(30 * hour, "store", write("mail/anna/tmp/1")),
        record(96 * hour, "world", Event::Outage { down: false }),
        record(96 * hour, "world", Event::Operator { mode: "normal".into() }),
        record(97 * hour, "store", restored("anna")),
        record(97 * hour, "store", restored("bruno")),
        record(97 * hour + hour / 2, "mx", Event::DiskRemove { path: "queue/1".into() }),
        record(99 * hour, "client-ios", Event::ClientFailure { mailbox: "anna".into(), error: "uidvalidity changed".into() }),
    ];
    let picture = Timeline::of(&output_of(records), &[]);
    assert_eq!(picture.lanes, ["mx", "store", "provider-gmail", "client-ios"], "a host a later history brings gets a lane of its own");
    let band = |kind: &str| picture.bands.iter().find(|band| band.kind == kind).unwrap_or_else(|| panic!("no {kind} band: {:?}", picture.bands));
    assert_eq!((band("outage").start_ms, band("outage").end_ms, band("outage").lanes.clone()), (2 * hour, 96 * hour, vec![1]));
    assert_eq!((band("answer").label.as_str(), band("answer").lanes.clone()), ("answering 5xx-bounce", vec![0]));
    assert_eq!((band("hidden-limit stall").start_ms, band("hidden-limit stall").end_ms), (3 * hour, 30 * hour));
    assert_eq!((band("disk-stall").start_ms, band("disk-stall").end_ms, band("disk-stall").lanes.clone()), (4 * hour, 5 * hour, vec![0]));
    assert_eq!(band("partition").lanes, [2, 0]);
    assert!(picture.marks.iter().any(|mark| mark.label == "restored: 2 mailboxes" && mark.t_ms == 97 * hour && mark.lane == 1), "{:?}", picture.marks);
    assert_eq!(picture.bucket_ms, hour, "a run of days is counted per hour");
    assert_eq!(picture.curves.queue_depth[1], 1);
    assert_eq!(picture.curves.queue_depth[50], 1, "a level holds over the hours nothing happened in");
    assert_eq!(picture.curves.queue_depth.last(), Some(&0), "the queue file was removed in hour 97: the most in each later hour is 0");
    let svg = timeline::svg(&output_of(Vec::new()), &[], "an empty history");
    texts(&svg);
    assert_eq!(timeline::utc(1_674_432_000), "2023-01-23 00:00 UTC");
}

#[test]
fn the_html_page_is_self_contained_and_holds_each_picture() {
    let svg = timeline::svg(&output_of(Vec::new()), &[], "a & b <run>");
    let page = timeline::html("what if", &[("5xx-bounce".into(), svg.clone()), ("4xx-tempfail".into(), svg)]);
    assert_eq!(page.matches("<svg").count(), 2);
    assert!(page.contains("<figcaption>5xx-bounce</figcaption>") && page.contains("<figcaption>4xx-tempfail</figcaption>"));
    assert!(!page.contains("<script") && !page.contains("<?xml") && !page.contains("src=") && !page.contains("href="));
    // The only URL is the SVG namespace, which names and fetches nothing.
    let urls: BTreeSet<&str> = page.match_indices("http").map(|(at, _)| page[at..].split(['"', ' ', '<']).next().unwrap_or("")).collect();
    assert_eq!(urls, BTreeSet::from(["http://www.w3.org/2000/svg"]));
}

#[test]
fn timeline_writes_the_same_file_for_the_same_seed_and_repro_writes_one_too() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second, svg) = (dir.path().join("a.html"), dir.path().join("b.html"), dir.path().join("c.svg"));
    let args = |out: &std::path::Path| vec!["timeline".to_string(), "scenarios/fast/store-crash.toml".into(), "--seed".into(), "2".into(), "--defect".into(), "reuse-uid-after-restart".into(), "-o".into(), out.display().to_string()];
    let ran = run(&args(&first).iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(ran.code, Some(1), "a violating run exits 1, the picture written all the same: {}", ran.stderr);
    assert!(ran.stdout.contains("verdict=violation(A17,A19,A20)") && ran.stdout.contains(&format!("wrote {}", first.display())), "{}", ran.stdout);
    run(&args(&second).iter().map(String::as_str).collect::<Vec<_>>());
    let page = std::fs::read_to_string(&first).unwrap();
    assert_eq!(page, std::fs::read_to_string(&second).unwrap(), "the same seed, the same bytes");
    assert!(page.starts_with("<!DOCTYPE html>") && page.contains("store-crash seed=0x2 defects=reuse-uid-after-restart verdict=violation(A17,A19,A20)"));
    run(&args(&svg).iter().map(String::as_str).collect::<Vec<_>>());
    texts(&std::fs::read_to_string(&svg).unwrap());
    // repro --timeline: the picture of the failing seed a run line names.
    let repro = dir.path().join("repro.svg");
    let ran = run(&["repro", "scenarios/fast/store-crash.toml", "--seed", "0x2", "--defect", "reuse-uid-after-restart", "--timeline", repro.to_str().unwrap()]);
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    assert_eq!(std::fs::read_to_string(&repro).unwrap(), std::fs::read_to_string(&svg).unwrap());
}

#[test]
fn bad_timeline_paths_and_flags_exit_2_before_running() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&[&str], &str); 5] = [
        (&["timeline", "scenarios/fast/baseline.toml", "--seed", "1", "-o", "x.png"], "x.png: the timeline is written as .svg or .html"),
        (&["timeline", "scenarios/fast/baseline.toml", "--seed", "1", "-o", "/no/such/folder/x.svg"], "/no/such/folder: no such folder to write /no/such/folder/x.svg into"),
        (&["timeline", "scenarios/fast/baseline.toml", "-o", "x.svg"], "--seed is required"),
        (&["timeline", "scenarios/fast/no-such.toml", "--seed", "1", "-o", "x.svg"], "no-such.toml"),
        (&["repro", "scenarios/fast/baseline.toml", "--seed", "1", "--timeline", "x.txt"], "x.txt: the timeline is written as .svg or .html"),
    ];
    for (args, expected) in cases {
        let ran = run(args);
        assert_eq!(ran.code, Some(2), "{args:?}: {}", ran.stderr);
        assert!(ran.stderr.contains(expected), "{args:?}: expected {expected:?} in {}", ran.stderr);
        assert!(!ran.stderr.contains("panicked"), "{}", ran.stderr);
    }
    let folder = dir.path().to_str().unwrap();
    let ran = run(&["timeline", "scenarios/fast/baseline.toml", "--seed", "1", "-o", folder]);
    assert_eq!(ran.code, Some(2), "{}", ran.stderr);
    assert!(ran.stderr.contains("the timeline is written as .svg or .html"), "{}", ran.stderr);
    let missing = run(&["timeline", "scenarios/fast/baseline.toml", "--seed", "1"]);
    assert_eq!(missing.code, Some(2));
    assert!(missing.stderr.contains("--output <FILE>"), "{}", missing.stderr);
}
