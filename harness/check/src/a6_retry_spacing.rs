//! A6 retry-spacing: a sender waits at least its policy's minimum between attempts, and does not
//! hammer: several waits in a row shorter than five minutes (the smallest minimum mainstream
//! MTAs use: Postfix's minimal_backoff_time), none longer than the one before, is a retry storm.
//! Both thresholds scale with the sender's `time_scale`. RFC 5321 §4.5.4.1.

use super::facts::{At, Facts};
use super::Violation;
use history::Event;
use std::collections::BTreeMap;

/// Waits in a row below the floor, without growth, that make a storm.
const STORM_RUN: usize = 4;
const FLOOR_S: f64 = 300.0;

struct Attempt {
    start: At,
    start_ms: u64,
    /// The time of the attempt's last event (its last reply or failure).
    end_ms: u64,
}

pub fn check(facts: &Facts, out: &mut Vec<Violation>) {
    for (msg, attempts) in attempts_by_message(facts) {
        let Some(policy) = facts.policy_of_message(&msg) else { continue };
        let waits: Vec<(f64, At)> = attempts.windows(2).map(|pair| ((pair[1].start_ms.saturating_sub(pair[0].end_ms)) as f64 / 1000.0, pair[1].start)).collect();
        let tolerance_s = 0.001 + policy.min_interval_s * 0.01;
        if let Some((wait, at)) = waits.iter().find(|(wait, _)| *wait + tolerance_s < policy.min_interval_s) {
            out.push(Violation::new("A6", format!("msg {msg}"), format!("retried after {wait:.1}s, sooner than the policy's minimum of {:.1}s", policy.min_interval_s), vec![*at]));
            continue;
        }
        let floor_s = FLOOR_S * policy.time_scale;
        let mut run: Vec<At> = Vec::new();
        let mut previous = f64::INFINITY;
        for (wait, at) in &waits {
            if *wait < floor_s && *wait <= previous * 1.01 {
                run.push(*at);
            } else {
                run.clear();
            }
            previous = *wait;
            if run.len() >= STORM_RUN {
                out.push(Violation::new(
                    "A6",
                    format!("msg {msg}"),
                    format!("retry storm: {STORM_RUN} retries in a row after waits under {floor_s:.1}s (5 minutes scaled) without backoff"),
                    run.clone(),
                ));
                break;
            }
        }
    }
}

fn attempts_by_message(facts: &Facts) -> BTreeMap<String, Vec<Attempt>> {
    let mut by_session: BTreeMap<&str, (String, Attempt)> = BTreeMap::new();
    for (at, record) in facts.records.iter().enumerate() {
        match &record.event {
            Event::SmtpAttempt { session, msg, .. } => {
                by_session.insert(session, (msg.clone(), Attempt { start: at, start_ms: record.t_ms, end_ms: record.t_ms }));
            }
            Event::SmtpReply { session, .. } | Event::SmtpFailure { session, .. } => {
                if let Some((_, attempt)) = by_session.get_mut(session.as_str()) {
                    attempt.end_ms = record.t_ms;
                }
            }
            _ => {}
        }
    }
    let mut by_message: BTreeMap<String, Vec<Attempt>> = BTreeMap::new();
    for (_, (msg, attempt)) in by_session {
        by_message.entry(msg).or_default().push(attempt);
    }
    for attempts in by_message.values_mut() {
        attempts.sort_by_key(|attempt| attempt.start);
    }
    by_message
}
