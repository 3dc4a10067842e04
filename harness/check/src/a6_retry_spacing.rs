//! A6 retry-spacing (RFC 5321 §4.5.4.1): every wait before a retry is at least what the retrier's
//! own declared schedule gives for that attempt — per message for a remote sender, per queue file
//! for the MX retrying the store — and a sender does not hammer (a retry storm).
//!
//! Senders. A `SenderPolicy` names a shipped policy and its `time_scale`; `mail::policy` rebuilds
//! it. After attempt k of a message, ending at age a (from its `Submit`) as the n-th attempt of
//! the stage a falls in, the sender waits at least `next_delay(a, n)`. The end of an attempt is
//! its last recorded reply or failure; the sender may end it later (a QUIT never answered,
//! another message of the same connection still in flight), so the wait seen is longer than the
//! real one, never shorter — and when a stage boundary falls between that end and the next
//! attempt, the later stage's first interval, waited from the boundary on, is admitted too.
//! Attempts are counted from the history, so the count is never above the sender's own.
//!
//! The MX. `QueueRetryPolicy` declares, at each start of the MX, that after its n-th failed
//! attempt since then a queue file waits at least min(base × factor^(n-1), max). Attempts are the
//! `LmtpAttempt`s (counted here, not taken from the MX); an attempt ends at the last `LmtpReply`,
//! `LmtpFailure` or `QueueRecorded` for its file. A restart begins a new schedule (the backoff is
//! in memory: after a restart every file is due at once).
//!
//! A wait may be longer than its schedule (a connection limit, a queue scan, a busy worker), never
//! shorter by more than one tick of the simulated clock (`Clock`).
//!
//! The storm rule judges the sender's policy itself: several waits in a row shorter than five
//! minutes (the smallest minimum mainstream MTAs use: Postfix's minimal_backoff_time), none longer
//! than the one before, is a retry storm. The threshold scales with the sender's `time_scale`.

use super::facts::{At, Facts};
use super::Violation;
use history::Event;
use mail::policy::RetryPolicy;
use std::collections::BTreeMap;

/// Waits in a row below the floor, without growth, that make a storm.
const STORM_RUN: usize = 4;
const FLOOR_S: f64 = 300.0;
/// The clock's resolution when the history does not declare a tick (live mode: milliseconds).
const DEFAULT_TICK_MS: u64 = 1;

/// One attempt as the history shows it: where it started, and the time of its last event.
struct Attempt {
    start: At,
    start_ms: u64,
    end_ms: u64,
}

/// The MX's declared schedule towards the store.
#[derive(Clone, Copy)]
struct QueueSchedule {
    base_ms: u64,
    max_ms: u64,
    factor: u32,
}

impl QueueSchedule {
    /// The least wait after the n-th failed attempt (n ≥ 1).
    fn after(self, failures: usize) -> u64 {
        let exponent = failures.saturating_sub(1).min(63) as u32;
        self.base_ms.saturating_mul(u64::from(self.factor).saturating_pow(exponent)).min(self.max_ms)
    }
}

/// What one pass over the history yields.
struct Index<'a> {
    tick_ms: u64,
    /// Per message: the sender's attempts, in order.
    sender: BTreeMap<&'a str, Vec<Attempt>>,
    /// Per start of the MX: its schedule and, per queue file, its attempts in order.
    mx: Vec<(QueueSchedule, BTreeMap<&'a str, Vec<Attempt>>)>,
}

pub fn check(facts: &Facts, out: &mut Vec<Violation>) {
    let index = index(facts);
    let mut policies: BTreeMap<&str, Option<RetryPolicy>> = BTreeMap::new();
    for (msg, attempts) in &index.sender {
        let Some(host) = facts.submitted_by.get(msg) else { continue };
        let Some(declared) = facts.policies.get(host) else { continue };
        let policy = policies.entry(host).or_insert_with(|| RetryPolicy::built_in(&declared.name, declared.time_scale)).as_ref();
        let submit_ms = facts.submitted.get(msg).map(|(at, ..)| facts.records[*at].t_ms).unwrap_or(0);
        let early = match policy {
            Some(policy) => too_early(policy, submit_ms, attempts, index.tick_ms),
            // Not a shipped policy: only the minimum it declared can be judged.
            None => attempts.windows(2).enumerate().find_map(|(k, pair)| {
                let (wait_ms, required_ms) = (pair[1].start_ms.saturating_sub(pair[0].end_ms), (declared.min_interval_s * 1000.0) as u64);
                (wait_ms + index.tick_ms < required_ms).then(|| Early { attempt: k + 1, wait_ms, required_ms, why: "the policy's minimum".into() })
            }),
        };
        if let Some(early) = early {
            out.push(Violation::new(
                "A6",
                format!("msg {msg}"),
                format!(
                    "retry {} came {:.1}s after attempt {} ended, sooner than the {} policy's {:.1}s for it ({})",
                    early.attempt + 1,
                    early.wait_ms as f64 / 1000.0,
                    early.attempt,
                    declared.name,
                    early.required_ms as f64 / 1000.0,
                    early.why
                ),
                vec![attempts[early.attempt].start],
            ));
            continue;
        }
        let waits: Vec<(f64, At)> = attempts.windows(2).map(|pair| (pair[1].start_ms.saturating_sub(pair[0].end_ms) as f64 / 1000.0, pair[1].start)).collect();
        if let Some(run) = storm(&waits, FLOOR_S * declared.time_scale) {
            out.push(Violation::new(
                "A6",
                format!("msg {msg}"),
                format!("retry storm: {STORM_RUN} retries in a row after waits under {:.1}s (5 minutes scaled) without backoff", FLOOR_S * declared.time_scale),
                run,
            ));
        }
    }
    for (schedule, files) in &index.mx {
        for (file, attempts) in files {
            let early = attempts.windows(2).enumerate().find_map(|(k, pair)| {
                let (wait_ms, required_ms) = (pair[1].start_ms.saturating_sub(pair[0].end_ms), schedule.after(k + 1));
                (wait_ms + index.tick_ms < required_ms).then_some((k + 1, wait_ms, required_ms, pair[1].start))
            });
            if let Some((attempt, wait_ms, required_ms, at)) = early {
                out.push(Violation::new(
                    "A6",
                    format!("queue file {file}"),
                    format!(
                        "the MX retried the store (attempt {}) {:.1}s after attempt {attempt} ended, sooner than its declared schedule's {:.1}s after {attempt} failure(s) ({:.1}s × {}^{}, at most {:.1}s)",
                        attempt + 1,
                        wait_ms as f64 / 1000.0,
                        required_ms as f64 / 1000.0,
                        schedule.base_ms as f64 / 1000.0,
                        schedule.factor,
                        attempt - 1,
                        schedule.max_ms as f64 / 1000.0
                    ),
                    vec![at],
                ));
            }
        }
    }
}

/// A wait shorter than the schedule allows.
struct Early {
    /// The attempt after which the wait began (1-based).
    attempt: usize,
    wait_ms: u64,
    required_ms: u64,
    why: String,
}

/// The first wait of a message shorter than its sender's policy gives for that attempt.
fn too_early(policy: &RetryPolicy, submit_ms: u64, attempts: &[Attempt], tick_ms: u64) -> Option<Early> {
    let age_s = |ms: u64| ms.saturating_sub(submit_ms) as f64 / 1000.0;
    let ms = |delay: std::time::Duration| delay.as_millis() as u64;
    // The stage of the previous attempt and the attempts counted in it (a lower bound of the
    // sender's own count: where the stage is in doubt, the earlier one is taken).
    let (mut stage, mut in_stage) = (usize::MAX, 0u32);
    for (k, pair) in attempts.windows(2).enumerate() {
        let (end_ms, next_ms) = (pair[0].end_ms, pair[1].start_ms);
        let wait_ms = next_ms.saturating_sub(end_ms);
        let lo = policy.stage_index(age_s(end_ms));
        let hi = policy.stage_index(age_s(next_ms)).max(lo);
        let n = if lo == stage { in_stage.saturating_add(1) } else { 1 };
        let required_ms = ms(policy.next_delay(age_s(end_ms), n));
        // The sender may have ended the attempt in a later stage, whose count starts afresh.
        let later_stage_fits = || {
            (lo + 1..=hi).any(|j| {
                let until_s = policy.stages[j - 1].until_s;
                let from_ms = end_ms.max(submit_ms + (until_s * 1000.0).ceil() as u64);
                next_ms.saturating_sub(from_ms) + tick_ms >= ms(policy.next_delay(until_s, 1))
            })
        };
        (stage, in_stage) = (lo, n);
        if wait_ms + tick_ms < required_ms && !later_stage_fits() {
            let why = format!("attempt {n} of stage {} of {}, message age {:.0}s", lo + 1, policy.stages.len().max(1), age_s(end_ms));
            return Some(Early { attempt: k + 1, wait_ms, required_ms, why });
        }
    }
    None
}

/// STORM_RUN waits in a row under the floor, none longer than the one before.
fn storm(waits: &[(f64, At)], floor_s: f64) -> Option<Vec<At>> {
    let mut run: Vec<At> = Vec::new();
    let mut previous = f64::INFINITY;
    for (wait, at) in waits {
        if *wait < floor_s && *wait <= previous * 1.01 {
            run.push(*at);
        } else {
            run.clear();
        }
        previous = *wait;
        if run.len() >= STORM_RUN {
            return Some(run);
        }
    }
    None
}

/// One pass over the history: the clock's tick, the sender's attempts per message, the MX's
/// schedule and attempts per queue file for each of its starts.
fn index<'a>(facts: &Facts<'a>) -> Index<'a> {
    let mut tick_ms = None;
    // Sessions in a hash map: each message's attempts are sorted by where they start below.
    let mut by_session: rustc_hash::FxHashMap<&str, (&str, Attempt)> = rustc_hash::FxHashMap::default();
    let mut mx: Vec<(QueueSchedule, BTreeMap<&str, Vec<Attempt>>)> = Vec::new();
    for (at, record) in facts.records.iter().enumerate() {
        let t_ms = record.t_ms;
        match &record.event {
            Event::Clock { tick_ms: tick, .. } => {
                tick_ms.get_or_insert(*tick);
            }
            Event::SmtpAttempt { session, msg, .. } => {
                by_session.insert(session, (msg, Attempt { start: at, start_ms: t_ms, end_ms: t_ms }));
            }
            Event::SmtpReply { session, .. } | Event::SmtpFailure { session, .. } => {
                if let Some((_, attempt)) = by_session.get_mut(session.as_str()) {
                    attempt.end_ms = t_ms;
                }
            }
            Event::QueueRetryPolicy { base_ms, max_ms, factor, .. } => {
                mx.push((QueueSchedule { base_ms: *base_ms, max_ms: *max_ms, factor: *factor }, BTreeMap::new()));
            }
            Event::LmtpAttempt { queue_file, .. } => {
                if let Some((_, files)) = mx.last_mut() {
                    files.entry(queue_file).or_default().push(Attempt { start: at, start_ms: t_ms, end_ms: t_ms });
                }
            }
            Event::LmtpReply { queue_file, .. } | Event::LmtpFailure { queue_file, .. } | Event::QueueRecorded { queue_file, .. } => {
                if let Some(attempt) = mx.last_mut().and_then(|(_, files)| files.get_mut(queue_file.as_str())).and_then(|attempts| attempts.last_mut()) {
                    attempt.end_ms = t_ms;
                }
            }
            _ => {}
        }
    }
    let mut sender: BTreeMap<&str, Vec<Attempt>> = BTreeMap::new();
    for (_, (msg, attempt)) in by_session {
        sender.entry(msg).or_default().push(attempt);
    }
    for attempts in sender.values_mut() {
        attempts.sort_by_key(|attempt| attempt.start);
    }
    Index { tick_ms: tick_ms.unwrap_or(DEFAULT_TICK_MS), sender, mx }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Attempts that each end where they start, at these ages in seconds (submitted at 0).
    fn attempts(ages_s: &[f64]) -> Vec<Attempt> {
        ages_s.iter().enumerate().map(|(start, age)| Attempt { start, start_ms: (age * 1000.0) as u64, end_ms: (age * 1000.0) as u64 }).collect()
    }

    #[test]
    fn each_wait_is_judged_against_the_schedule_for_its_attempt() {
        let postfix = RetryPolicy::built_in("postfix", 1.0).unwrap();
        // 300, 600, 1200 s: on schedule, and a wait may be longer.
        assert!(too_early(&postfix, 0, &attempts(&[0.0, 300.0, 900.0, 2200.0]), 1000).is_none());
        // The third wait is above the policy's minimum (300 s) but below its 1200 s for attempt 3.
        let early = too_early(&postfix, 0, &attempts(&[0.0, 300.0, 900.0, 1500.0]), 1000).unwrap();
        assert_eq!((early.attempt, early.wait_ms, early.required_ms), (3, 600_000, 1_200_000));
        // One tick short is within the clock's resolution; two are not.
        assert!(too_early(&postfix, 0, &attempts(&[0.0, 299.0]), 1000).is_none());
        assert!(too_early(&postfix, 0, &attempts(&[0.0, 298.0]), 1000).is_some());
    }

    /// Exim's second stage grows to 57,600 s and its third waits 21,600 s. The sender may have
    /// ended its last attempt of the second stage later than its last recorded reply, past the
    /// stage boundary (57,600 s of age): a wait that fits the third stage from there is admitted.
    #[test]
    fn a_stage_boundary_before_the_next_attempt_admits_the_later_stage() {
        let exim = RetryPolicy::built_in("exim", 1.0).unwrap();
        // Second stage from 7,200 s: 3,600 × 1.5^(n-1) after its n-th attempt.
        let second_stage = [7200.0, 10800.0, 16200.0, 24300.0, 36450.0, 54675.0];
        let with_next = |next: f64| attempts(&second_stage.iter().copied().chain([next]).collect::<Vec<_>>());
        assert!(too_early(&exim, 0, &with_next(54675.0 + 27337.5), 1000).is_none());
        // 25,325 s after the last reply: short of 27,337.5 s, but 22,400 s after the boundary.
        assert!(too_early(&exim, 0, &with_next(80000.0), 1000).is_none());
        // 19,075 s after the boundary: short for either stage.
        let early = too_early(&exim, 0, &with_next(76675.0), 1000).unwrap();
        assert_eq!((early.attempt, early.required_ms), (6, 27_337_500));
    }

    #[test]
    fn the_mx_schedule_doubles_up_to_its_maximum() {
        let schedule = QueueSchedule { base_ms: 10_000, max_ms: 300_000, factor: 2 };
        let waits: Vec<u64> = (1..=7).map(|failures| schedule.after(failures)).collect();
        assert_eq!(waits, vec![10_000, 20_000, 40_000, 80_000, 160_000, 300_000, 300_000]);
        assert_eq!(schedule.after(1000), 300_000);
    }
}
