//! Checkers: each judges one invariant of INVARIANTS.md from the recorded history and, where
//! it must, the final durable disk images. None reads the stack's memory.
//!
//! The compiler keeps it that way: this crate depends on `history` (events and the run's
//! output) and `mail` (the formats that crossed a boundary: DSNs, content digests, the
//! published retry policies) only. It must never know the stack, the disks or devices, or the
//! simulator: whatever a checker needs must be recorded as an event.
//!
//! A violation names its invariant, the message and recipient (or mailbox), and the history
//! records that prove it (their indices, rendered by the report).

mod a10_dsn_shape;
mod a11_dsn_cardinality;
mod a14_timeouts;
mod a16_handoff;
mod a17_uid_rules;
mod a18_restore_rule;
mod a1_durable_before_ack;
mod a3_one_reply;
mod a5_transient_requeued;
mod a6_retry_spacing;
mod a7_explicit_give_up;
mod a8_5xx_final;
mod a12_transient_for_infrastructure;
mod a13_justified_duplicates;
mod a15_atomic_publish;
mod a19_uidl_stable;
mod a20_client_complete;
mod a21_overload;
mod a23_no_silent_corruption;
mod a24_client_resync;
mod a25_staged_restore;
pub mod a22_outage_answer;
mod a26_conforming_mail_accepted;
mod a27_no_recipient_leak;
mod a28_invalid_input_refused;
mod a2_no_loss;
mod a4_no_deliver_after_refusal;
mod a9_no_bounce_of_bounce;
pub mod dsns;
pub mod facts;
mod kinds;
mod outside;
mod reply;
pub mod wire;


use history::RunOutput;
pub use facts::Facts;

/// The invariants this build judges, in report order.
pub const INVARIANTS: &[(&str, &str)] = &[
    ("A1", "durable-before-ack"),
    ("A2", "no-loss"),
    ("A3", "one-reply"),
    ("A4", "no-deliver-after-refusal"),
    ("A5", "transient-requeued"),
    ("A6", "retry-spacing"),
    ("A7", "explicit-give-up"),
    ("A8", "5xx-final"),
    ("A9", "no-bounce-of-bounce"),
    ("A10", "dsn-shape"),
    ("A11", "dsn-cardinality"),
    ("A12", "transient-for-infrastructure"),
    ("A13", "justified-duplicates"),
    ("A14", "timeouts"),
    ("A15", "atomic-publish"),
    ("A16", "handoff"),
    ("A17", "uid-rules"),
    ("A18", "restore-rule"),
    ("A19", "uidl-stable"),
    ("A20", "client-complete"),
    ("A21", "overload-degrades-to-4xx"),
    ("A22", "outage-answer"),
    ("A23", "no-silent-corruption"),
    ("A24", "client-resync"),
    ("A25", "staged-restore"),
    ("A26", "conforming-mail-accepted"),
    ("A27", "no-recipient-leak"),
    ("A28", "invalid-input-refused"),
    ("L1", "drains"),
];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub invariant: &'static str,
    /// What it is about: `msg <id> rcpt <address>`, `mailbox <name> uidl <uidl>`, a file.
    pub subject: String,
    pub explanation: String,
    /// Indices of the history records that prove it.
    pub evidence: Vec<usize>,
}

impl Violation {
    pub fn new(invariant: &'static str, subject: impl Into<String>, explanation: impl Into<String>, evidence: Vec<usize>) -> Violation {
        Violation { invariant, subject: subject.into(), explanation: explanation.into(), evidence }
    }
}

/// One checker: what it judges, and the function that judges it.
pub type Checker = (&'static str, fn(&Facts, &mut Vec<Violation>));

/// Every checker, in report order.
const CHECKERS: &[Checker] = &[
    ("A1", a1_durable_before_ack::check),
    ("A2", a2_no_loss::check),
    ("A3", a3_one_reply::check),
    ("A4", a4_no_deliver_after_refusal::check),
    ("A5", a5_transient_requeued::check),
    ("A6", a6_retry_spacing::check),
    ("A7", a7_explicit_give_up::check),
    ("A8", a8_5xx_final::check),
    ("A9", a9_no_bounce_of_bounce::check),
    ("A10", a10_dsn_shape::check),
    ("A11", a11_dsn_cardinality::check),
    ("A12", a12_transient_for_infrastructure::check),
    ("A13", a13_justified_duplicates::check),
    ("A14", a14_timeouts::check),
    ("A15", a15_atomic_publish::check),
    ("A16", a16_handoff::check),
    ("A17", a17_uid_rules::check),
    ("A18", a18_restore_rule::check),
    ("A19", a19_uidl_stable::check),
    ("A20", a20_client_complete::check),
    ("A21", a21_overload::check),
    ("A22", a22_outage_answer::check),
    ("A23", a23_no_silent_corruption::check),
    ("A24", a24_client_resync::check),
    ("A25", a25_staged_restore::check),
    ("A26", a26_conforming_mail_accepted::check),
    ("A27", a27_no_recipient_leak::check),
    ("A28", a28_invalid_input_refused::check),
];

/// What a live history (`serve --history`) can be judged on: what the server recorded of its
/// own wire, disks and store. The senders' side (A5–A8, A12, A14, A22, A26, A28), the world's
/// schedule (A16, A18, A21, A25) and clients of ours (A24, A27) are not in it.
pub const LIVE_INVARIANTS: &[&str] = &["A1", "A2", "A3", "A4", "A9", "A10", "A11", "A13", "A15", "A17", "A19", "A20", "A23"];

/// What a black-box run (`mailchaos drive`) is judged on, each from what crossed the driver's
/// side of the wire: no loss and duplicates from its senders' acknowledgements and its clients'
/// downloads (`outside.rs`), the DSNs that came back (A9–A11), UIDL stability (A19), conforming
/// mail accepted and invalid input refused (A26, A28), no recipient leaked (A27).
pub const BLACK_BOX_CHECKERS: &[Checker] = &[
    ("A2", outside::no_loss),
    ("A9", a9_no_bounce_of_bounce::check),
    ("A10", a10_dsn_shape::check),
    ("A11", a11_dsn_cardinality::check),
    ("A13", outside::duplicates),
    ("A19", a19_uidl_stable::check),
    ("A26", a26_conforming_mail_accepted::check),
    ("A27", a27_no_recipient_leak::check),
    ("A28", a28_invalid_input_refused::check),
];

/// Judges a black-box history (`RunOutput::black_box`) with `BLACK_BOX_CHECKERS`.
pub fn check_black_box(output: &RunOutput) -> Vec<Violation> {
    let facts = Facts::build(output);
    let mut violations = Vec::new();
    for (_, check) in BLACK_BOX_CHECKERS {
        check(&facts, &mut violations);
    }
    violations
}

/// Runs every checker. Violations come out grouped by invariant, in a stable order.
pub fn check_all(output: &RunOutput) -> Vec<Violation> {
    check_these(output, |_| true)
}

/// Runs the checkers of `LIVE_INVARIANTS` on a live history: no drain (a server does not
/// stop when its queue is empty), no images (the data directory is `verify-store`'s to judge).
pub fn check_live(output: &RunOutput) -> Vec<Violation> {
    check_these(output, |invariant| LIVE_INVARIANTS.contains(&invariant))
}

/// `check_all`, with the cost of each step as `clock` measures it (the bench's thread CPU time,
/// in nanoseconds): building the facts, then each checker, then the blame, in that order.
pub fn check_all_costed(output: &RunOutput, clock: &dyn Fn() -> u64) -> (Vec<Violation>, Vec<(&'static str, u64)>) {
    let mut costs = Vec::new();
    let violations = check_costed(output, |_| true, clock, &mut costs);
    (violations, costs)
}

fn check_these(output: &RunOutput, judged: impl Fn(&str) -> bool) -> Vec<Violation> {
    check_costed(output, judged, &|| 0, &mut Vec::new())
}

fn check_costed(output: &RunOutput, judged: impl Fn(&str) -> bool, clock: &dyn Fn() -> u64, costs: &mut Vec<(&'static str, u64)>) -> Vec<Violation> {
    let mut last = clock();
    let mut step = |name: &'static str| {
        let now = clock();
        costs.push((name, now.saturating_sub(last)));
        last = now;
    };
    let facts = Facts::build(output);
    step("facts");
    let mut violations = Vec::new();
    for (invariant, check) in CHECKERS.iter().filter(|(invariant, _)| judged(invariant)) {
        check(&facts, &mut violations);
        step(invariant);
    }
    if output.drained_at_ms.is_none() && output.aborted.is_none() {
        // L1 drains: every queue must be empty and every message terminal within the horizon.
        let waiting = output.waiting_for.as_deref().map(|what| format!("; still waiting for: {what}")).unwrap_or_default();
        violations.push(Violation::new("L1", "queues", format!("the backlog had not drained when the run reached its horizon at {}s{waiting}", output.ended_at_ms / 1000), vec![]));
    }
    if let Some(reason) = &output.aborted {
        violations.push(Violation::new("L1", "simulation", reason.clone(), vec![]));
    }
    if output.history.overflowed {
        violations.push(Violation::new("L1", "history", format!("the run produced more than {} events (a runaway loop)", output.history.limit()), vec![]));
    }
    // Last, so that every violation that may be the device's doing says who broke the chain.
    blame(&facts, &mut violations);
    step("blame");
    drop(facts);
    step("drop");
    violations
}

/// The invariants whose violation may be the device's doing rather than the stack's.
/// A6 and A18 too: the MX's retry schedule and the restore rule rest on what the disks kept (a
/// failover that reverts a queue file's record of its attempts makes the MX retry "early").
/// A11 too: the MX returns a message whose queue file the device damaged, and a damaged file
/// may hold a recipient whose delivery the MX never saw confirmed.
/// A16 too: a device that drops the acknowledged unlink of a finished queue file brings it back.
const BLAMEABLE: &[&str] = &["A1", "A2", "A6", "A11", "A13", "A15", "A16", "A17", "A18", "A19", "A20", "A23", "L1"];

/// Says who broke a durability promise: the device, when it dropped an operation on one of the
/// violation's files that a sync had acknowledged (`DiskDropped`); unclear when it dropped
/// others; the stack when the device kept every promise.
fn blame(facts: &Facts, violations: &mut [Violation]) {
    for violation in violations.iter_mut().filter(|v| BLAMEABLE.contains(&v.invariant)) {
        let files = files_of(facts, violation);
        let on_file = |path: &str| files.iter().any(|file| same_file(file, path));
        let dropped = facts.dropped.iter().find(|(_, _, _, path)| on_file(path));
        let damaged = facts.device_damage.iter().find(|(_, _, _, path)| on_file(path));
        let (at, note) = match (dropped, damaged) {
            (Some((at, _, op, path)), _) => (Some(*at), format!(" [blame: device — it acknowledged {op} {path} as durable (record #{at}) and lost it]")),
            (None, Some((at, _, fault, path))) => (Some(*at), format!(" [blame: device — an injected {fault} damaged {path} (record #{at}); a stack that checks its data reports such a loss instead]")),
            (None, None) if !facts.dropped.is_empty() => (None, format!(" [blame: unclear — the device broke {} promise(s) in this run]", facts.dropped.len())),
            (None, None) => (None, " [blame: stack — the device kept every promise]".to_string()),
        };
        if let Some(at) = at.filter(|at| !violation.evidence.contains(at)) {
            violation.evidence.push(at);
        }
        violation.explanation.push_str(&note);
    }
}

/// The files a violation is about: those its evidence records name (under every name the disk
/// gave each: a message read moves from new/ into cur/), and a mailbox's uidlist.
fn files_of(facts: &Facts, violation: &Violation) -> Vec<String> {
    let mut files = files_named_by(facts, violation);
    if let Some(disk) = facts.disks.get("store") {
        let renamed: Vec<String> = files.iter().flat_map(|file| disk.lineage(file)).map(str::to_string).collect();
        files.extend(renamed);
        files.sort();
        files.dedup();
    }
    files
}

fn files_named_by(facts: &Facts, violation: &Violation) -> Vec<String> {
    let mut files: Vec<String> = Vec::new();
    for record in violation.evidence.iter().filter_map(|&at| facts.records.get(at)) {
        match &record.event {
            history::Event::MxDataEnd(end) => files.extend(end.queue_file.as_ref().map(|file| file.to_string())),
            history::Event::QueueRecorded { queue_file: file, .. } => files.push(file.to_string()),
            history::Event::QueueDamaged { queue_file, .. }
            | history::Event::LmtpAttempt { queue_file, .. }
            | history::Event::LmtpReply { queue_file, .. }
            | history::Event::LmtpFailure { queue_file, .. } => files.push(queue_file.to_string()),
            history::Event::StoreDelivered(stored) => files.push(stored.file.to_string()),
            history::Event::StoreCorruption { file, .. } => files.push(file.to_string()),
            _ => {}
        }
    }
    let mut words = violation.subject.split_whitespace();
    let mut mailbox = None;
    while let Some(word) = words.next() {
        match (word, words.next()) {
            ("mailbox", Some(name)) => {
                files.push(format!("mail/{name}/uidlist"));
                mailbox = Some(name);
            }
            // A UIDL names the message its client fetched under it (identity from the wire, not
            // from the UIDL's spelling), and so the files the store delivered it in.
            ("uidl", Some(uidl)) => {
                let Some(mailbox) = mailbox else { continue };
                let fetched = facts.fetches.iter().filter(|fetch| fetch.mailbox == mailbox && fetch.uidl == uidl);
                for fetch in fetched {
                    files.extend(facts.deliveries_of(mailbox, fetch.msg).map(|d| d.file.to_string()));
                }
            }
            _ => {}
        }
    }
    files
}

/// Same file: equal last path components (a file keeps its name from tmp/ to new/; its other
/// names, in cur/, come from the disk's renames, see `files_of`), except for
/// a mailbox's `uidlist`, which only its own path names.
fn same_file(file: &str, path: &str) -> bool {
    let last = |p: &str| p.rsplit('/').next().unwrap_or(p).to_string();
    let (a, b) = (last(file), last(path));
    if a.starts_with("uidlist") || b.starts_with("uidlist") {
        return history::parent(file) == history::parent(path) && a.starts_with("uidlist") && b.starts_with("uidlist");
    }
    a == b
}
