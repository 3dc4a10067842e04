//! `mailchaos timeline`: a picture of one run, drawn from its recorded history alone (the
//! records and the checkers' violations with their record numbers), never from the stack's
//! memory.
//!
//! One SVG per run (plotters' SVG backend, no fonts or scripts to load): a lane per host of the
//! history (the MX, the store, each provider, the clients, and whatever host a later history
//! names: lanes are made from the hosts that recorded something), the fault windows and other
//! spans as bands on the lanes they touch (labelled with their kind: a storage fault, a
//! partition, the outage and the operator's answer, a host down after a crash, the hidden-limit
//! stall), instants as marks (a failover, a backup, a restore with the mailboxes it brought back,
//! a fail point), the violations at the record that proves each (`A12 #888`), then curves over
//! time: the pairs accepted, deferred, bounced and delivered per bucket (an hour on a long run),
//! the MX's queue depth and the open SMTP and LMTP sessions. `html` puts one or more of these
//! SVGs side by side in one self-contained page.
//!
//! Deterministic: the same history gives the same bytes (no clock, no randomness, ordered maps).

use check::Violation;
use history::{Event, Outcome, Record, RunOutput};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

/// Width of the picture in pixels (a 1400-pixel browser window shows it whole).
pub const WIDTH: u32 = 1380;
const LEFT: i32 = 150;
const RIGHT: i32 = 30;
const LANE_H: i32 = 44;
/// Buckets of the curves at most on a run shorter than a day: the bucket is the smallest of
/// `BUCKETS_S` that keeps under it. A run of a day or more is counted per hour (per 6 hours
/// beyond 60 days).
const MAX_BUCKETS: u64 = 250;
const BUCKETS_S: [u64; 9] = [1, 5, 10, 30, 60, 300, 600, 1800, 3600];
const DAY_MS: u64 = 86_400_000;
/// Violations listed by text under the curves; every one is marked on its lane.
const LISTED_VIOLATIONS: usize = 12;

/// A span on one or more lanes: a fault window, the outage, a host down, the hidden-limit stall.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Band {
    /// Lane indices it covers.
    pub lanes: Vec<usize>,
    pub start_ms: u64,
    pub end_ms: u64,
    /// What it is: the colour and the legend (`disk-stall`, `outage`, `down`, ...).
    pub kind: String,
    /// Written on the band.
    pub label: String,
}

/// An instant on a lane: a failover, a backup, a restore, a fail point that fired.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mark {
    pub lane: usize,
    pub t_ms: u64,
    pub label: String,
}

/// A violation where its first evidence record stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ViolationMark {
    pub lane: usize,
    pub t_ms: u64,
    pub invariant: &'static str,
    /// The record number (as `repro` prints it: `#888`), if the violation names one.
    pub record: Option<usize>,
    pub subject: String,
}

/// Per bucket of simulated time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Curves {
    /// (message, recipient) pairs the MX answered 2xx for at end of data.
    pub accepted: Vec<u64>,
    /// Transient failures senders saw: 4xx replies, lost or refused sessions.
    pub deferred: Vec<u64>,
    /// Recipients returned to their senders (5xx or expiry).
    pub bounced: Vec<u64>,
    /// Copies the store delivered.
    pub delivered: Vec<u64>,
    /// Files in the MX's queue (as the disk recorded its writes, renames and removals): the most
    /// in the bucket.
    pub queue_depth: Vec<u64>,
    /// Open connections to the MX's SMTP port (the wire tap's opens and closes): the most.
    pub smtp_sessions: Vec<u64>,
    /// Open LMTP connections to the store: the most.
    pub lmtp_sessions: Vec<u64>,
}

/// What the picture shows, computed from the history: testable without drawing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timeline {
    pub end_ms: u64,
    /// The Unix time at which the simulated clock reads 0 (the `clock` record).
    pub epoch_unix_s: Option<u64>,
    /// Lane names: the hosts of the history (the world's own records are bands and marks).
    pub lanes: Vec<String>,
    /// Records per lane per bucket: how busy each host was.
    pub activity: Vec<Vec<u64>>,
    pub bands: Vec<Band>,
    pub marks: Vec<Mark>,
    /// The world's phases as they began (chaos, heal, quiesce, final-sweep, end).
    pub phases: Vec<(u64, String)>,
    pub bucket_ms: u64,
    pub curves: Curves,
    pub violations: Vec<ViolationMark>,
}

/// Where a host stands among the lanes: the MX, the store, the providers, the clients, others.
fn rank(host: &str) -> u8 {
    match host {
        "mx" => 0,
        "store" => 1,
        _ if host.starts_with("provider") => 2,
        _ if host.starts_with("client") => 3,
        _ => 4,
    }
}

fn bucket_ms_for(end_ms: u64) -> u64 {
    match end_ms {
        ms if ms > 60 * DAY_MS => return 6 * 3_600_000,
        ms if ms >= DAY_MS => return 3_600_000,
        _ => {}
    }
    let end_s = end_ms.div_ceil(1000).max(1);
    let seconds = BUCKETS_S.iter().copied().find(|&bucket| end_s.div_ceil(bucket) <= MAX_BUCKETS).unwrap_or(BUCKETS_S[BUCKETS_S.len() - 1]);
    seconds * 1000
}

/// A fault the world noted, read back from its note: (kind, hosts, begins?, identity of its window).
struct Note {
    kind: String,
    hosts: Vec<String>,
    /// Some(true): a window begins; Some(false): it ends; None: an instant.
    begins: Option<bool>,
    key: String,
}

/// The world's fault notes (`Event::Fault`, see `sim::world`) read back into windows and instants.
fn read_note(action: &str) -> Option<Note> {
    let words: Vec<&str> = action.split_whitespace().collect();
    let note = |kind: &str, hosts: &[&str], begins: Option<bool>, key: String| Some(Note { kind: kind.into(), hosts: hosts.iter().map(|host| host.to_string()).collect(), begins, key });
    match words.as_slice() {
        // Storage windows: "begin <description>" / "end <description>" (PlannedFault::describe).
        ["begin", kind, host, ..] => note(kind, &[host], Some(true), action["begin ".len()..].to_string()),
        ["end", kind, host, ..] => note(kind, &[host], Some(false), action["end ".len()..].to_string()),
        ["partition", a, b] => note("partition", &[a, b], Some(true), format!("partition {a} {b}")),
        ["repair", a, b] => note("partition", &[a, b], Some(false), format!("partition {a} {b}")),
        ["partition-oneway", a, "->", b] => note("partition-oneway", &[a, b], Some(true), format!("oneway {a} {b}")),
        ["repair-oneway", a, "->", b] => note("partition-oneway", &[a, b], Some(false), format!("oneway {a} {b}")),
        ["cut", a, b, ..] => note("cut", &[a, b], Some(true), format!("cut {a} {b}")),
        ["release", a, b] => note("cut", &[a, b], Some(false), format!("cut {a} {b}")),
        ["dns-failure", "begins", "for", host] => note("dns-failure", &[host], Some(true), format!("dns {host}")),
        ["dns-failure", "ends", "for", host] => note("dns-failure", &[host], Some(false), format!("dns {host}")),
        ["port", _, "of", host, "closed"] => note("port-closed", &[host], Some(true), format!("port {host}")),
        ["port", _, "of", host, "open", "again"] => note("port-closed", &[host], Some(false), format!("port {host}")),
        ["failover", "of", owner, ..] => note("failover", &[owner.trim_end_matches("'s")], None, String::new()),
        ["backup", "of", owner, ..] => note("backup", &[owner.trim_end_matches("'s")], None, String::new()),
        [host, "restored", "from", "its", "backup"] => note("rollback", &[host], None, String::new()),
        _ => None,
    }
}

/// Builds the lanes, bands, marks and curves of a run from its history and its violations.
struct Builder<'a> {
    records: &'a [Record],
    lanes: Vec<String>,
    end_ms: u64,
    bands: Vec<Band>,
}

impl Builder<'_> {
    fn lane(&mut self, host: &str) -> usize {
        if let Some(index) = self.lanes.iter().position(|lane| lane == host) {
            return index;
        }
        self.lanes.push(host.to_string());
        self.lanes.len() - 1
    }

    /// A named host (a fault names providers and hosts as the history does) as a lane.
    fn lanes_of(&mut self, hosts: &[String]) -> Vec<usize> {
        hosts.iter().map(|host| self.lane(host)).collect()
    }

    fn band(&mut self, lanes: Vec<usize>, start_ms: u64, end_ms: u64, kind: &str, label: String) {
        self.bands.push(Band { lanes, start_ms, end_ms: end_ms.max(start_ms), kind: kind.to_string(), label });
    }
}

impl Timeline {
    /// What the history shows. `violations` as the checkers returned them (`check::check_all`).
    pub fn of(output: &RunOutput, violations: &[Violation]) -> Timeline {
        let records = &output.history.records;
        let end_ms = records.iter().map(|record| record.t_ms).max().unwrap_or(0).max(output.ended_at_ms).max(1);
        let mut hosts: Vec<&str> = Vec::new();
        let named: Vec<String> = records
            .iter()
            .filter_map(|record| match &record.event {
                Event::Fault { action } => read_note(action).map(|note| note.hosts),
                _ => None,
            })
            .flatten()
            .collect();
        for host in records.iter().map(|record| &*record.host).chain(named.iter().map(String::as_str)) {
            if host != "world" && !hosts.contains(&host) {
                hosts.push(host);
            }
        }
        // Stable: within a rank, the order the hosts first appear in (providers as the scenario lists them).
        hosts.sort_by_key(|host| rank(host));
        let mut builder = Builder { records, lanes: hosts.iter().map(|host| host.to_string()).collect(), end_ms, bands: Vec::new() };
        let bucket_ms = bucket_ms_for(end_ms);
        let buckets = end_ms.div_ceil(bucket_ms).max(1) as usize;
        let bucket = |t_ms: u64| ((t_ms / bucket_ms) as usize).min(buckets - 1);
        let mut marks = Vec::new();
        let mut phases = Vec::new();
        let mut epoch_unix_s = None;
        let mut open: BTreeMap<String, (u64, Note)> = BTreeMap::new();
        let mut down_since: BTreeMap<String, u64> = BTreeMap::new();
        let mut outage_since = None;
        let mut operator: Option<(u64, String)> = None;
        let mut stalls: Vec<(String, u64)> = Vec::new();
        let mut restores: BTreeMap<u64, u64> = BTreeMap::new();
        for (at, record) in records.iter().enumerate() {
            let t_ms = record.t_ms;
            match &record.event {
                Event::Clock { epoch_unix_s: epoch, .. } => epoch_unix_s = Some(*epoch),
                Event::Phase { name } => phases.push((t_ms, name.to_string())),
                Event::Fault { action } => match read_note(action) {
                    Some(note) => match note.begins {
                        Some(true) => {
                            open.insert(note.key.clone(), (t_ms, note));
                        }
                        Some(false) => {
                            let (start_ms, begun) = open.remove(&note.key).unwrap_or((t_ms, note));
                            let lanes = builder.lanes_of(&begun.hosts);
                            builder.band(lanes, start_ms, t_ms, &begun.kind, begun.kind.clone());
                        }
                        None => {
                            let lane = builder.lane(&note.hosts[0]);
                            marks.push(Mark { lane, t_ms, label: note.kind });
                        }
                    },
                    None => {}
                },
                Event::Outage { down: true } => outage_since = Some(t_ms),
                Event::Outage { down: false } => {
                    let lane = builder.lane("store");
                    builder.band(vec![lane], outage_since.take().unwrap_or(t_ms), t_ms, "outage", "outage: storage down".into());
                }
                Event::Operator { mode } => {
                    if let Some((since, previous)) = operator.take() {
                        let lane = builder.lane("mx");
                        builder.band(vec![lane], since, t_ms, "answer", format!("answering {previous}"));
                    }
                    if mode != "normal" {
                        operator = Some((t_ms, mode.to_string()));
                    }
                }
                Event::Crash => {
                    down_since.insert(record.host.to_string(), t_ms);
                }
                Event::Restart => {
                    if let Some(since) = down_since.remove(&*record.host) {
                        let lane = builder.lane(&record.host);
                        builder.band(vec![lane], since, t_ms, "down", "down".into());
                    }
                }
                Event::CrashPoint { point } => {
                    let lane = builder.lane(&record.host);
                    marks.push(Mark { lane, t_ms, label: format!("fail point {point}") });
                }
                Event::DiskFault { fault, .. } if fault == "hidden-limit-stall" => stalls.push((record.host.to_string(), at as u64)),
                Event::DiskFault { fault, .. } if fault == "remount-read-only" => {
                    let lane = builder.lane(&record.host);
                    marks.push(Mark { lane, t_ms, label: "read-only".into() });
                }
                Event::StoreRecovered { restored: true, .. } => *restores.entry(t_ms).or_default() += 1,
                // A staged restore: each cohort's return is marked on the store's lane.
                Event::Cohort { cohort, online: true, from_backup, mailboxes } => {
                    let lane = builder.lane("store");
                    let how = if *from_backup { " from backup" } else { "" };
                    marks.push(Mark { lane, t_ms, label: format!("cohort {cohort} back{how}: {} mailboxes", mailboxes.len()) });
                }
                _ => {}
            }
        }
        // A window still open at the end lasts to the end.
        for (start_ms, note) in std::mem::take(&mut open).into_values() {
            let lanes = builder.lanes_of(&note.hosts);
            builder.band(lanes, start_ms, end_ms, &note.kind, note.kind.clone());
        }
        if let Some(since) = outage_since {
            let lane = builder.lane("store");
            builder.band(vec![lane], since, end_ms, "outage", "outage: storage down".into());
        }
        if let Some((since, mode)) = operator {
            let lane = builder.lane("mx");
            builder.band(vec![lane], since, end_ms, "answer", format!("answering {mode}"));
        }
        for (host, since) in std::mem::take(&mut down_since) {
            let lane = builder.lane(&host);
            builder.band(vec![lane], since, end_ms, "down", "down".into());
        }
        for (host, at) in stalls {
            // Every operation of the device waits until the stall ends: its next recorded
            // operation after the stall began is when it ended.
            let start_ms = records[at as usize].t_ms;
            let until = records[at as usize + 1..].iter().find(|record| *record.host == *host && record.t_ms > start_ms && is_disk_op(&record.event)).map_or(end_ms, |record| record.t_ms);
            let lane = builder.lane(&host);
            builder.band(vec![lane], start_ms, until, "hidden-limit stall", "hidden-limit stall".into());
        }
        let store = builder.lane("store");
        for (t_ms, mailboxes) in restores {
            let plural = if mailboxes == 1 { "" } else { "es" };
            marks.push(Mark { lane: store, t_ms, label: format!("restored: {mailboxes} mailbox{plural}") });
        }
        let violations = violation_marks(&mut builder, violations);
        let (curves, activity) = curves(records, &builder.lanes, buckets, &bucket);
        builder.bands.sort_by(|a, b| (a.start_ms, &a.kind, &a.lanes).cmp(&(b.start_ms, &b.kind, &b.lanes)));
        marks.sort_by(|a, b| (a.t_ms, a.lane, &a.label).cmp(&(b.t_ms, b.lane, &b.label)));
        Timeline { end_ms, epoch_unix_s, lanes: builder.lanes, activity, bands: builder.bands, marks, phases, bucket_ms, curves, violations }
    }

    /// The kinds of bands present, in a stable order (the legend).
    pub fn band_kinds(&self) -> Vec<String> {
        let kinds: BTreeSet<&str> = self.bands.iter().map(|band| band.kind.as_str()).collect();
        kinds.into_iter().map(str::to_string).collect()
    }
}

fn is_disk_op(event: &Event) -> bool {
    matches!(event, Event::DiskWrite { .. } | Event::DiskSync { .. } | Event::DiskDirSync { .. } | Event::DiskRename { .. } | Event::DiskRemove { .. } | Event::DiskError { .. })
}

fn violation_marks(builder: &mut Builder, violations: &[Violation]) -> Vec<ViolationMark> {
    let mut marks = Vec::new();
    for violation in violations {
        let first = violation.evidence.iter().copied().find(|&at| at < builder.records.len());
        let (t_ms, host) = match first {
            Some(at) => (builder.records[at].t_ms, &*builder.records[at].host),
            None => (builder.end_ms, "world"),
        };
        // A world record (a phase, a fault note) belongs to no host: it is marked on the first lane.
        let lane = if host == "world" { 0 } else { builder.lane(host) };
        marks.push(ViolationMark { lane, t_ms, invariant: violation.invariant, record: first, subject: violation.subject.clone() });
    }
    marks
}

fn curves(records: &[Record], lanes: &[String], buckets: usize, bucket: &dyn Fn(u64) -> usize) -> (Curves, Vec<Vec<u64>>) {
    let mut curves = Curves {
        accepted: vec![0; buckets],
        deferred: vec![0; buckets],
        bounced: vec![0; buckets],
        delivered: vec![0; buckets],
        queue_depth: vec![0; buckets],
        smtp_sessions: vec![0; buckets],
        lmtp_sessions: vec![0; buckets],
    };
    let mut activity = vec![vec![0u64; buckets]; lanes.len()];
    let lane_of: BTreeMap<&str, usize> = lanes.iter().enumerate().map(|(index, lane)| (lane.as_str(), index)).collect();
    let queue_prefix = format!("{}/", stack::queue::QUEUE_DIR);
    let mut queue: BTreeSet<&str> = BTreeSet::new();
    // conn -> (host of the server's socket, protocol)
    let mut conns: BTreeMap<&str, (&str, &str)> = BTreeMap::new();
    let mut last = 0usize;
    let count = |conns: &BTreeMap<&str, (&str, &str)>, protocol: &str| conns.values().filter(|(_, p)| *p == protocol).count() as u64;
    for record in records {
        let at = bucket(record.t_ms);
        // Levels carry over the buckets nothing happened in.
        while last < at {
            last += 1;
            curves.queue_depth[last] = curves.queue_depth[last].max(queue.len() as u64);
            curves.smtp_sessions[last] = curves.smtp_sessions[last].max(count(&conns, "smtp"));
            curves.lmtp_sessions[last] = curves.lmtp_sessions[last].max(count(&conns, "lmtp"));
        }
        if let Some(&lane) = lane_of.get(&*record.host) {
            activity[lane][at] += 1;
        }
        let mx = &*record.host == "mx";
        match &record.event {
            Event::MxDataEnd(end) if end.reply.starts_with('2') => curves.accepted[at] += end.rcpts.len() as u64,
            Event::StoreDelivered(_) => curves.delivered[at] += 1,
            Event::SenderOutcome { outcome: Outcome::Bounced | Outcome::Expired, .. } => curves.bounced[at] += 1,
            Event::SmtpReply { reply, .. } if reply.starts_with('4') => curves.deferred[at] += 1,
            Event::SmtpFailure { .. } => curves.deferred[at] += 1,
            Event::DiskWrite { path, .. } if mx && path.starts_with(&queue_prefix) => {
                queue.insert(path);
            }
            Event::DiskRename { from, to } if mx => {
                queue.remove(from.as_str());
                if to.starts_with(&queue_prefix) {
                    queue.insert(to);
                }
            }
            Event::DiskRemove { path } if mx => {
                queue.remove(path.as_str());
            }
            Event::WireOpen { conn, protocol, .. } => {
                conns.insert(conn, (&record.host, protocol));
            }
            Event::WireClosed { conn, .. } => {
                conns.remove(conn.as_str());
            }
            // A crashed server's connections die with it, closed or not.
            Event::Crash => conns.retain(|_, (host, _)| *host != &*record.host),
            _ => {}
        }
        curves.queue_depth[at] = curves.queue_depth[at].max(queue.len() as u64);
        curves.smtp_sessions[at] = curves.smtp_sessions[at].max(count(&conns, "smtp"));
        curves.lmtp_sessions[at] = curves.lmtp_sessions[at].max(count(&conns, "lmtp"));
    }
    while last + 1 < buckets {
        last += 1;
        curves.queue_depth[last] = queue.len() as u64;
        curves.smtp_sessions[last] = count(&conns, "smtp");
        curves.lmtp_sessions[last] = count(&conns, "lmtp");
    }
    (curves, activity)
}

/// The unit of the time axis: hours on a long run, minutes, or seconds.
fn time_unit(end_ms: u64) -> (f64, &'static str) {
    match end_ms {
        ms if ms >= 3 * 3_600_000 => (3_600_000.0, "h"),
        ms if ms >= 3 * 60_000 => (60_000.0, "min"),
        _ => (1000.0, "s"),
    }
}

/// A tick of the time axis: whole units, or tenths on a short axis (its ticks step by less than one).
fn time_tick(x: f64, end_x: f64) -> String {
    if end_x < 20.0 { format!("{x:.1}") } else { format!("{x:.0}") }
}

fn bucket_name(bucket_ms: u64) -> String {
    match bucket_ms / 1000 {
        3600 => "hour".into(),
        86400 => "day".into(),
        60 => "minute".into(),
        s if s % 3600 == 0 => format!("{} h", s / 3600),
        s if s % 60 == 0 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

/// `2023-01-23 00:00 UTC` of a Unix time (the calendar of the DSN dates, `mail::message`).
pub fn utc(unix_s: u64) -> String {
    let (year, month, day) = mail::message::civil_from_days(unix_s / 86_400);
    let (hour, minute) = ((unix_s % 86_400) / 3600, (unix_s % 3600) / 60);
    format!("{year:04}-{month:02}-{day:02} {hour:02}:{minute:02} UTC")
}

/// The colour of a band kind: fixed for the kinds the world knows, a palette for the others.
fn colour(kind: &str, kinds: &[String]) -> RGBColor {
    match kind {
        "outage" => RGBColor(214, 39, 40),
        "answer" => RGBColor(255, 127, 14),
        "down" => RGBColor(90, 90, 90),
        "hidden-limit stall" => RGBColor(148, 103, 189),
        "partition" | "partition-oneway" | "cut" => RGBColor(31, 119, 180),
        "dns-failure" | "port-closed" => RGBColor(23, 190, 207),
        _ => {
            const PALETTE: [RGBColor; 6] = [RGBColor(140, 86, 75), RGBColor(188, 189, 34), RGBColor(227, 119, 194), RGBColor(44, 160, 44), RGBColor(127, 127, 127), RGBColor(174, 199, 232)];
            let index = kinds.iter().position(|other| other == kind).unwrap_or(0);
            PALETTE[index % PALETTE.len()]
        }
    }
}

const VIOLATION: RGBColor = RGBColor(200, 0, 0);
const MARK: RGBColor = RGBColor(0, 110, 60);
const SERIES: [(&str, RGBColor); 4] = [("accepted", RGBColor(31, 119, 180)), ("deferred", RGBColor(255, 127, 14)), ("bounced", RGBColor(214, 39, 40)), ("delivered", RGBColor(44, 160, 44))];
const LEVELS: [(&str, RGBColor); 3] = [("MX queue files", RGBColor(148, 103, 189)), ("open SMTP sessions", RGBColor(31, 119, 180)), ("open LMTP sessions", RGBColor(140, 86, 75))];

/// The picture of one run as an SVG document: `title` on top, then the lanes, the curves and
/// the first violations. Fed by the recorded history and the checkers' verdict only.
pub fn svg(output: &RunOutput, violations: &[Violation], title: &str) -> String {
    render(&Timeline::of(output, violations), violations, title)
}

/// The SVG of a timeline already computed.
pub fn render(timeline: &Timeline, violations: &[Violation], title: &str) -> String {
    let lanes_h = LANE_H * timeline.lanes.len().max(1) as i32;
    let listed = violations.len().min(LISTED_VIOLATIONS) as i32 + i32::from(violations.len() > LISTED_VIOLATIONS);
    let lanes_top = 84;
    let lanes_area_h = lanes_h + 50;
    let legend_top = lanes_top + lanes_area_h + 6;
    let counts_top = legend_top + 30;
    let counts_h = 220;
    let levels_top = counts_top + counts_h + 10;
    let levels_h = 170;
    let list_top = levels_top + 2 * levels_h + 26;
    let height = (list_top + 22 + 18 * listed + 16) as u32;
    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, (WIDTH, height)).into_drawing_area();
        if let Err(error) = draw(&root, timeline, violations, title, Layout { lanes_top, lanes_area_h, legend_top, counts_top, counts_h, levels_top, levels_h, list_top }) {
            let _ = root.draw(&Text::new(format!("drawing failed: {error}"), (10, 10), ("sans-serif", 16).into_font()));
        }
        let _ = root.present();
    }
    text
}

struct Layout {
    lanes_top: i32,
    lanes_area_h: i32,
    legend_top: i32,
    counts_top: i32,
    counts_h: i32,
    levels_top: i32,
    levels_h: i32,
    list_top: i32,
}

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
type Failure<'a> = DrawingAreaErrorKind<<SVGBackend<'a> as DrawingBackend>::ErrorType>;

fn font(size: u32) -> TextStyle<'static> {
    ("sans-serif", size as f64 * 1.24).into_font().color(&BLACK)
}

fn bold(size: u32) -> TextStyle<'static> {
    ("sans-serif", size as f64 * 1.24, FontStyle::Bold).into_font().color(&BLACK)
}

fn draw<'a>(root: &Area<'a>, timeline: &Timeline, violations: &[Violation], title: &str, layout: Layout) -> Result<(), Failure<'a>> {
    root.fill(&WHITE)?;
    let (unit_ms, unit) = time_unit(timeline.end_ms);
    let end_x = timeline.end_ms as f64 / unit_ms;
    let x_of = |t_ms: u64| t_ms as f64 / unit_ms;
    root.draw(&Text::new(title.to_string(), (12, 22), bold(17)))?;
    let since = timeline.epoch_unix_s.map(|epoch| format!(" since {}", utc(epoch))).unwrap_or_default();
    let subtitle = format!(
        "{} lanes · {} bands · {} violations · simulated {:.1} {unit}{since} · curves per {}",
        timeline.lanes.len(),
        timeline.bands.len(),
        timeline.violations.len(),
        end_x,
        bucket_name(timeline.bucket_ms)
    );
    root.draw(&Text::new(subtitle, (12, 44), font(12).color(&RGBColor(60, 60, 60))))?;

    // ---- lanes ----
    let n = timeline.lanes.len().max(1) as f64;
    let lanes_area = root.clone().shrink((0, layout.lanes_top), (WIDTH, layout.lanes_area_h as u32));
    let time_label = move |x: &f64| time_tick(*x, end_x);
    let mut lanes_chart = ChartBuilder::on(&lanes_area)
        .margin_right(RIGHT)
        .x_label_area_size(36)
        .y_label_area_size(LEFT)
        .build_cartesian_2d(0f64..end_x, 0f64..n)?;
    let x_desc = match timeline.epoch_unix_s {
        Some(epoch) => format!("time ({unit} since {})", utc(epoch)),
        None => format!("time ({unit})"),
    };
    lanes_chart
        .configure_mesh()
        .disable_y_mesh()
        .max_light_lines(2)
        .x_desc(x_desc.as_str())
        .axis_desc_style(font(11))
        .y_labels(0)
        .x_labels(16)
        .x_label_formatter(&time_label)
        .light_line_style(RGBColor(235, 235, 235))
        .label_style(font(11))
        .draw()?;
    let row = |lane: usize| n - lane as f64 - 1.0;
    // Alternate lane backgrounds, and the lane names in the left margin.
    for (lane, name) in timeline.lanes.iter().enumerate() {
        let y = row(lane);
        if lane % 2 == 1 {
            lanes_chart.draw_series(std::iter::once(Rectangle::new([(0.0, y), (end_x, y + 1.0)], RGBColor(246, 246, 250).filled())))?;
        }
        let (_, py) = lanes_chart.backend_coord(&(0.0, y + 0.5));
        root.draw(&Text::new(name.clone(), (LEFT - 8, py), font(12).pos(Pos::new(HPos::Right, VPos::Center))))?;
    }
    // Activity: how many records a host made per bucket, as a strip at the bottom of its lane.
    let busiest = timeline.activity.iter().flatten().copied().max().unwrap_or(0).max(1) as f64;
    let bucket_x = timeline.bucket_ms as f64 / unit_ms;
    for (lane, counts) in timeline.activity.iter().enumerate() {
        let y = row(lane);
        let strips = counts.iter().enumerate().filter(|(_, count)| **count > 0).map(|(index, count)| {
            // In twentieths: a last-digit difference of a platform's logarithm changes no byte.
            let level = ((1.0 + *count as f64).ln() / (1.0 + busiest).ln() * 20.0).round() / 20.0;
            let x0 = index as f64 * bucket_x;
            Rectangle::new([(x0, y + 0.04), ((x0 + bucket_x).min(end_x), y + 0.04 + 0.22 * level.max(0.15))], RGBColor(70, 70, 110).mix(0.25 + 0.6 * level).filled())
        });
        lanes_chart.draw_series(strips)?;
    }
    // Phases: a thin line across the top with the phase names.
    for (index, (t_ms, name)) in timeline.phases.iter().enumerate() {
        let (px, _) = lanes_chart.backend_coord(&(x_of(*t_ms), n));
        let next = timeline.phases.get(index + 1).map_or(timeline.end_ms, |(t, _)| *t);
        let (next_px, _) = lanes_chart.backend_coord(&(x_of(next), n));
        root.draw(&PathElement::new(vec![(px, layout.lanes_top - 14), (px, layout.lanes_top + 4)], RGBColor(120, 120, 120)))?;
        if next_px - px > 40 || index + 1 == timeline.phases.len() {
            root.draw(&Text::new(name.clone(), (px + 3, layout.lanes_top - 8), font(10).color(&RGBColor(90, 90, 90))))?;
        }
    }
    root.draw(&Text::new("phases", (LEFT - 8, layout.lanes_top - 8), font(10).color(&RGBColor(90, 90, 90)).pos(Pos::new(HPos::Right, VPos::Center))))?;
    // Bands, each on the lanes it touches, with its label where there is room.
    let kinds = timeline.band_kinds();
    for band in &timeline.bands {
        let colour = colour(&band.kind, &kinds);
        for &lane in &band.lanes {
            let y = row(lane);
            let (p0, top) = lanes_chart.backend_coord(&(x_of(band.start_ms), y + 0.68));
            let (p1, bottom) = lanes_chart.backend_coord(&(x_of(band.end_ms), y + 0.30));
            // A short span (a crash whose host restarts in seconds) stays visible: 3 pixels at least.
            let p1 = p1.max(p0 + 3);
            root.draw(&Rectangle::new([(p0, top), (p1, bottom)], colour.mix(0.35).filled()))?;
            root.draw(&Rectangle::new([(p0, top), (p1, bottom)], colour.stroke_width(1)))?;
            let py = (top + bottom) / 2;
            if p1 - p0 >= 7 * band.label.len() as i32 / 2 + 8 {
                root.draw(&Text::new(band.label.clone(), (p0 + 4, py), font(10).pos(Pos::new(HPos::Left, VPos::Center))))?;
            }
        }
    }
    // Marks: a diamond and a short label.
    let mut last_label: BTreeMap<usize, i32> = BTreeMap::new();
    for mark in &timeline.marks {
        let y = row(mark.lane);
        // At the lane's top, above the bands.
        let (px, py) = lanes_chart.backend_coord(&(x_of(mark.t_ms), y + 0.85));
        root.draw(&Polygon::new(vec![(px, py - 5), (px + 4, py), (px, py + 5), (px - 4, py)], MARK.filled()))?;
        if last_label.get(&mark.lane).is_none_or(|&until| px > until) {
            root.draw(&Text::new(mark.label.clone(), (px + 7, py), font(10).color(&MARK).pos(Pos::new(HPos::Left, VPos::Center))))?;
            last_label.insert(mark.lane, px + 7 + 6 * mark.label.len() as i32);
        }
    }
    // Violations: a red tick across the lane of the record that proves each, labelled with the
    // invariant and the record number; ticks too close for a label of
    // their own share the label before them (`+N`).
    let mut ticks: Vec<(usize, i32, &ViolationMark)> = Vec::new();
    for violation in &timeline.violations {
        let (px, _) = lanes_chart.backend_coord(&(x_of(violation.t_ms), 0.0));
        ticks.push((violation.lane, px, violation));
        let y = row(violation.lane);
        let (_, top) = lanes_chart.backend_coord(&(0.0, y + 1.0));
        let (_, bottom) = lanes_chart.backend_coord(&(0.0, y));
        root.draw(&PathElement::new(vec![(px, top + 1), (px, bottom - 1)], VIOLATION.mix(0.8).stroke_width(2)))?;
    }
    ticks.sort_by_key(|(lane, px, _)| (*lane, *px));
    let mut groups: Vec<(usize, i32, Vec<&ViolationMark>)> = Vec::new();
    for (lane, px, violation) in ticks {
        match groups.last_mut() {
            Some((last_lane, start, members)) if *last_lane == lane && px < *start + label_width(members, Some(violation)) + 6 => members.push(violation),
            _ => groups.push((lane, px, vec![violation])),
        }
    }
    for (lane, px, members) in groups {
        // At the lane's bottom (over the activity strip, under the bands), on a light ground so
        // the ticks behind it do not hide it.
        let (_, bottom) = lanes_chart.backend_coord(&(0.0, row(lane)));
        root.draw(&Rectangle::new([(px + 1, bottom - 14), (px + 4 + label_width(&members, None), bottom - 2)], WHITE.mix(0.8).filled()))?;
        root.draw(&Text::new(violation_label(&members), (px + 3, bottom - 3), bold(10).color(&VIOLATION).pos(Pos::new(HPos::Left, VPos::Bottom))))?;
    }

    // ---- legend of the bands and marks ----
    let mut x = LEFT;
    let y = layout.legend_top + 10;
    for kind in &kinds {
        let colour = colour(kind, &kinds);
        root.draw(&Rectangle::new([(x, y - 6), (x + 18, y + 6)], colour.mix(0.35).filled()))?;
        root.draw(&Rectangle::new([(x, y - 6), (x + 18, y + 6)], colour.stroke_width(1)))?;
        root.draw(&Text::new(kind.clone(), (x + 24, y), font(11).pos(Pos::new(HPos::Left, VPos::Center))))?;
        x += 40 + 7 * kind.len() as i32;
    }
    root.draw(&Polygon::new(vec![(x + 6, y - 6), (x + 11, y), (x + 6, y + 6), (x + 1, y)], MARK.filled()))?;
    root.draw(&Text::new("event", (x + 16, y), font(11).pos(Pos::new(HPos::Left, VPos::Center))))?;
    x += 70;
    root.draw(&PathElement::new(vec![(x + 6, y - 7), (x + 6, y + 7)], VIOLATION.stroke_width(2)))?;
    root.draw(&Text::new("violation (invariant #record)", (x + 12, y), font(11).pos(Pos::new(HPos::Left, VPos::Center))))?;
    x += 210;
    root.draw(&Rectangle::new([(x, y - 2), (x + 18, y + 6)], RGBColor(70, 70, 110).mix(0.6).filled()))?;
    root.draw(&Text::new("records per bucket (activity)", (x + 24, y), font(11).pos(Pos::new(HPos::Left, VPos::Center))))?;

    // ---- curves ----
    let per = bucket_name(timeline.bucket_ms);
    let counts: Vec<(&str, RGBColor, &Vec<u64>)> = SERIES
        .iter()
        .zip([&timeline.curves.accepted, &timeline.curves.deferred, &timeline.curves.bounced, &timeline.curves.delivered])
        .map(|((name, colour), values)| (*name, *colour, values))
        .collect();
    let area = root.clone().shrink((0, layout.counts_top), (WIDTH, layout.counts_h as u32));
    series_chart(&area, timeline, &counts, &format!("per {per}"), &format!("pairs and replies per {per}"), end_x, unit_ms)?;
    // The queue (thousands of files in a stall) and the sessions (tens) each on their own scale.
    let queue = [(LEVELS[0].0, LEVELS[0].1, &timeline.curves.queue_depth)];
    let area = root.clone().shrink((0, layout.levels_top), (WIDTH, layout.levels_h as u32));
    series_chart(&area, timeline, &queue, "files", &format!("the MX's queue (the most in each {per})"), end_x, unit_ms)?;
    let sessions = [(LEVELS[1].0, LEVELS[1].1, &timeline.curves.smtp_sessions), (LEVELS[2].0, LEVELS[2].1, &timeline.curves.lmtp_sessions)];
    let area = root.clone().shrink((0, layout.levels_top + layout.levels_h + 10), (WIDTH, layout.levels_h as u32));
    series_chart(&area, timeline, &sessions, "sessions", &format!("open sessions (the most in each {per})"), end_x, unit_ms)?;

    // ---- the violations, listed ----
    let mut y = layout.list_top;
    let heading = match violations.len() {
        0 => "No violation: every invariant held.".to_string(),
        count => format!("Violations ({count}), each with the record that proves it (mailchaos repro prints the numbered history):"),
    };
    root.draw(&Text::new(heading, (12, y), bold(12)))?;
    // The first of each invariant, then the others in the checkers' order: no invariant hidden
    // behind many of another.
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    let firsts: Vec<usize> = (0..violations.len()).filter(|&index| seen.insert(violations[index].invariant)).collect();
    let first_set: BTreeSet<usize> = firsts.iter().copied().collect();
    let order: Vec<usize> = firsts.iter().copied().chain((0..violations.len()).filter(|index| !first_set.contains(index))).collect();
    let listed = order.iter().filter_map(|&index| Some((violations.get(index)?, timeline.violations.get(index)?)));
    for (violation, mark) in listed.take(LISTED_VIOLATIONS) {
        y += 18;
        let at = mark.record.map(|at| format!("#{at}")).unwrap_or_else(|| "-".into());
        let when = format!("{:.2} {unit}", x_of(mark.t_ms));
        let line = format!("{} {at} at {when} on {}: {} — {}", violation.invariant, timeline.lanes.get(mark.lane).map_or("?", String::as_str), violation.subject, violation.explanation);
        root.draw(&Text::new(clip(&line, 200), (24, y), font(11).color(&VIOLATION)))?;
    }
    if violations.len() > LISTED_VIOLATIONS {
        y += 18;
        root.draw(&Text::new(format!("… and {} more (each marked on its lane)", violations.len() - LISTED_VIOLATIONS), (24, y), font(11)))?;
    }
    Ok(())
}

/// `A12 #888`, or for ticks that share a label `A12,A22 #888 +21`: the invariants of the group,
/// the first tick's record, how many more ticks.
fn violation_label(members: &[&ViolationMark]) -> String {
    let mut invariants: Vec<&str> = Vec::new();
    for member in members {
        if !invariants.contains(&member.invariant) {
            invariants.push(member.invariant);
        }
    }
    let record = members.first().and_then(|first| first.record).map(|at| format!(" #{at}")).unwrap_or_default();
    let more = if members.len() > 1 { format!(" +{}", members.len() - 1) } else { String::new() };
    format!("{}{record}{more}", invariants.join(","))
}

/// Pixels the label of `members` (and `next`, if it joins them) takes: a bold 10-pixel
/// sans-serif is about 6.5 pixels a character.
fn label_width(members: &[&ViolationMark], next: Option<&ViolationMark>) -> i32 {
    let mut all = members.to_vec();
    all.extend(next);
    (violation_label(&all).len() as i32 * 13 + 1) / 2
}

fn clip(text: &str, chars: usize) -> String {
    match text.char_indices().nth(chars) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// A chart of curves over the run's time, aligned with the lanes above it.
fn series_chart<'a>(area: &Area<'a>, timeline: &Timeline, series: &[(&str, RGBColor, &Vec<u64>)], y_desc: &str, caption: &str, end_x: f64, unit_ms: f64) -> Result<(), Failure<'a>> {
    let top = series.iter().flat_map(|(_, _, values)| values.iter().copied()).max().unwrap_or(0).max(1) as f64 * 1.1;
    let bucket_x = timeline.bucket_ms as f64 / unit_ms;
    let time_label = move |x: &f64| time_tick(*x, end_x);
    // Counts are whole: a label between two whole numbers is left out.
    let count_label = move |y: &f64| if (y - y.round()).abs() < 1e-6 { format!("{y:.0}") } else { String::new() };
    // The caption and the legend on one line above the plot, where they hide no curve.
    area.draw(&Text::new(caption.to_string(), (LEFT, 10), bold(12).pos(Pos::new(HPos::Left, VPos::Center))))?;
    let mut x = LEFT + 40 + 7 * caption.len() as i32;
    for (name, colour, _) in series {
        area.draw(&PathElement::new(vec![(x, 10), (x + 22, 10)], colour.stroke_width(3)))?;
        area.draw(&Text::new(name.to_string(), (x + 28, 10), font(11).pos(Pos::new(HPos::Left, VPos::Center))))?;
        x += 50 + 7 * name.len() as i32;
    }
    let mut chart = ChartBuilder::on(area)
        .margin_top(22)
        .margin_right(RIGHT)
        .x_label_area_size(26)
        .y_label_area_size(LEFT)
        .build_cartesian_2d(0f64..end_x, 0f64..top)?;
    chart
        .configure_mesh()
        .max_light_lines(2)
        .x_labels(16)
        .y_labels(5)
        .x_label_formatter(&time_label)
        .y_label_formatter(&count_label)
        .y_desc(y_desc)
        .light_line_style(RGBColor(238, 238, 238))
        .label_style(font(11))
        .axis_desc_style(font(11))
        .draw()?;
    for (_, colour, values) in series {
        let colour = *colour;
        // A step line: each bucket's value held across its width.
        let points: Vec<(f64, f64)> = values
            .iter()
            .enumerate()
            .flat_map(|(index, value)| {
                let x0 = index as f64 * bucket_x;
                [(x0, *value as f64), ((x0 + bucket_x).min(end_x), *value as f64)]
            })
            .collect();
        chart.draw_series(LineSeries::new(points, colour.stroke_width(2)))?;
    }
    Ok(())
}

/// One self-contained HTML page with the given pictures (`(caption, svg)`; an empty caption is
/// left out), side by side when there are several (a `what-if` shows one per operator answer):
/// inline SVG and CSS, no script, nothing fetched.
pub fn html(heading: &str, pages: &[(String, String)]) -> String {
    html_with(heading, "", pages)
}

/// `html` with more of the page (HTML, self-contained as well) after the heading, before the
/// legend and the pictures: `what-if`'s tables.
pub fn html_with(heading: &str, before: &str, pages: &[(String, String)]) -> String {
    let mut page = String::new();
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{}</title>\n<style>\n{}\n</style>\n</head>\n<body>\n<h1>{}</h1>\n",
        escape(heading),
        CSS,
        escape(heading)
    );
    page.push_str(before);
    page.push_str(LEGEND);
    let _ = writeln!(page, "<div class=\"runs runs-{}\">", pages.len());
    for (title, svg) in pages {
        let caption = if title.is_empty() { String::new() } else { format!("<figcaption>{}</figcaption>\n", escape(title)) };
        let _ = writeln!(page, "<figure>\n{caption}{}\n</figure>", inline(svg));
    }
    page.push_str("</div>\n</body>\n</html>\n");
    page
}

/// An SVG document as an element of an HTML page (no XML declaration), scaled to its column.
fn inline(svg: &str) -> String {
    let body = match svg.find("<svg") {
        Some(start) => &svg[start..],
        None => svg,
    };
    body.trim_end().to_string()
}

const CSS: &str = "body { font-family: sans-serif; margin: 16px; color: #222; background: #fff; }
h1 { font-size: 20px; margin: 0 0 8px 0; }
p.legend { font-size: 13px; margin: 4px 0 12px 0; max-width: 1380px; color: #444; }
div.runs { display: flex; flex-direction: row; gap: 12px; align-items: flex-start; }
figure { margin: 0; flex: 1 1 0; min-width: 0; }
figcaption { font-weight: bold; font-size: 14px; margin-bottom: 4px; }
figure svg { width: 100%; height: auto; display: block; border: 1px solid #ddd; }";

const LEGEND: &str = "<p class=\"legend\">A lane per host of the recorded history. Bands are spans: fault \
windows (with their kind), the outage and the operator's answer, a host down after a crash, the \
hidden-limit stall. Green diamonds are instants (failover, backup, restore, fail point). Red ticks are \
violations, labelled with the invariant and the number of the history record that proves it \
(<code>mailchaos repro</code> prints the numbered history). The curves below count per bucket what the \
senders, the MX and the store recorded.</p>\n";

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// What `-o` names: an SVG or an HTML page, by its extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Svg,
    Html,
}

impl Format {
    pub fn of(path: &std::path::Path) -> Result<Format, String> {
        match path.extension().and_then(|ext| ext.to_str()).map(str::to_ascii_lowercase).as_deref() {
            Some("svg") => Ok(Format::Svg),
            Some("html" | "htm") => Ok(Format::Html),
            _ => Err(format!("{}: the timeline is written as .svg or .html; name a file ending in one of them", path.display())),
        }
    }
}

/// The file's contents: the SVG alone, or a page around it.
pub fn document(format: Format, output: &RunOutput, violations: &[Violation], title: &str) -> String {
    let svg = svg(output, violations, title);
    match format {
        Format::Svg => svg,
        // The picture carries the run's title: no caption repeats it.
        Format::Html => html("mailchaos timeline", &[(String::new(), svg)]),
    }
}
