//! What a seed makes of a scenario: fault times drawn from their ranges, and the workload.
//! Everything here is drawn from the seed's own streams, so a plan is a pure function of
//! (scenario, seed), and it is printed by `repro` for a person to read.

use disk::OpKind;
use crate::scenario::{provider_domain, provider_host, FaultKind, Scenario};
use crate::seed::Seed;
use mail::message::{self, Envelope};
use history::{InvalidParam, Stage};
use stack::sender::PlannedMessage;
use rand::Rng;
use std::rc::Rc;

/// Unix time of the simulation's start: the night the 2023 outage began.
pub const EPOCH_UNIX_S: u64 = 1_674_432_000;

#[derive(Clone, Debug)]
pub struct PlannedFault {
    pub kind: FaultKind,
    /// The host (disk faults, crashes) or the two hosts (partitions).
    pub hosts: Vec<String>,
    pub start_ms: u64,
    pub end_ms: u64,
    pub path_prefix: String,
    pub ops: Vec<OpKind>,
    pub point: Option<String>,
    pub stage: Option<String>,
    pub answer: Option<String>,
    pub nth: Option<u64>,
    pub bytes: Option<u64>,
    pub files: Option<u64>,
    pub latency_ms: Option<u64>,
    pub snapshot_ms: Option<u64>,
}

impl PlannedFault {
    pub fn describe(&self) -> String {
        let what = self.kind.name();
        let point = self.point.as_ref().map(|point| format!(" at fail point {point}")).unwrap_or_default();
        let point = point + &self.stage.as_ref().map(|stage| format!(" after stage {stage}")).unwrap_or_default();
        let point = point + &self.answer.as_ref().map(|answer| format!(" answered {answer}")).unwrap_or_default();
        let point = point + &self.nth.map(|nth| format!(" call #{nth}")).unwrap_or_default();
        let point = point + &self.snapshot_ms.map(|at| format!(" to the backup of {:.1}s", at as f64 / 1000.0)).unwrap_or_default();
        let ops = if self.ops.is_empty() { String::new() } else { format!(" ops={:?}", self.ops) };
        let prefix = if self.path_prefix.is_empty() { String::new() } else { format!(" path={}", self.path_prefix) };
        format!(
            "{what} {}{point}{ops}{prefix} from {:.1}s to {:.1}s",
            self.hosts.join("<->"),
            self.start_ms as f64 / 1000.0,
            self.end_ms as f64 / 1000.0
        )
    }
}

pub struct Plan {
    pub faults: Vec<PlannedFault>,
    /// Per provider (in scenario order): its messages.
    pub workload: Vec<Vec<PlannedMessage>>,
}

fn draw(rng: &mut impl Rng, (low, high): (u64, u64)) -> u64 {
    if low >= high { low } else { rng.random_range(low..=high) }
}

pub fn make(scenario: &Scenario, seed: Seed) -> Plan {
    Plan { faults: plan_faults(scenario, seed), workload: plan_workload(scenario, seed) }
}

fn plan_faults(scenario: &Scenario, seed: Seed) -> Vec<PlannedFault> {
    let mut rng = seed.stream("faults");
    scenario
        .faults
        .iter()
        .map(|fault| {
            let start_s = draw(&mut rng, fault.at_s.get_ref().bounds());
            let length_s = match (&fault.duration_s, &fault.restart_after_s) {
                (Some(duration), _) => draw(&mut rng, duration.get_ref().bounds()),
                (None, Some(restart)) => *restart.get_ref(),
                (None, None) => 0,
            };
            let hosts = match (&fault.host, &fault.hosts) {
                _ if fault.kind == FaultKind::Outage => vec!["store".to_string()],
                (Some(host), _) => vec![host.get_ref().clone()],
                (None, Some(pair)) => pair.get_ref().clone(),
                (None, None) => Vec::new(),
            };
            PlannedFault {
                kind: fault.kind,
                hosts,
                // Validation keeps every fault within chaos_s; saturation keeps an unvalidated one from wrapping.
                start_ms: start_s.saturating_mul(1000),
                end_ms: start_s.saturating_add(length_s).saturating_mul(1000),
                path_prefix: fault.path_prefix.as_ref().map(|prefix| prefix.get_ref().clone()).unwrap_or_default(),
                ops: fault.ops.as_ref().map(|ops| ops.get_ref().clone()).unwrap_or_default(),
                point: fault.point.as_ref().map(|point| point.get_ref().clone()),
                stage: fault.stage.as_ref().map(|stage| stage.get_ref().clone()),
                answer: fault.answer.as_ref().map(|answer| answer.get_ref().clone()),
                nth: fault.nth.as_ref().map(|nth| *nth.get_ref()),
                bytes: fault.bytes.as_ref().map(|bytes| *bytes.get_ref()),
                files: fault.files.as_ref().map(|files| *files.get_ref()),
                latency_ms: fault.latency_ms.as_ref().map(|latency| *latency.get_ref()),
                snapshot_ms: fault.snapshot_s.as_ref().map(|at| at.get_ref() * 1000),
            }
        })
        .collect()
}

fn plan_workload(scenario: &Scenario, seed: Seed) -> Vec<Vec<PlannedMessage>> {
    let fixtures = message::embedded_fixtures();
    let workload = &scenario.workload;
    let users = scenario.mx.users.get_ref();
    let local_domain = scenario.mx.domains.first().cloned().unwrap_or_else(|| "localhost".into());
    // Recipients are distinct mailboxes: asking for more than there are would never end.
    let distinct_users = users.iter().collect::<std::collections::BTreeSet<_>>().len();
    scenario
        .providers
        .iter()
        .map(|provider| {
            let name = provider.name.get_ref();
            let mut rng = seed.stream(&format!("workload/{name}"));
            let domain = provider_domain(name);
            (1..=*workload.messages.get_ref())
                .map(|number| {
                    let at_ms = rng.random_range(0..workload.spread_s.get_ref() * 1000);
                    let is_bounce = workload.null_sender_every > 0 && number % workload.null_sender_every == 0;
                    let author = if is_bounce { String::new() } else { format!("s{}@{domain}", rng.random_range(0..5)) };
                    // List mail: the envelope names the list's bounce address, the header the
                    // author, and replies go to the list (no draw: the stream stays as it was).
                    let list_mail = !is_bounce && workload.list_mail_every > 0 && number % workload.list_mail_every == 0;
                    let from = if list_mail { format!("owner-list+{number}@{domain}") } else { author.clone() };
                    let list = format!("list@{domain}");
                    let owner = format!("owner-list@{domain}");
                    let wanted = rng.random_range(1..=workload.max_rcpts.max(1)).min(distinct_users);
                    let mut rcpts: Vec<String> = Vec::new();
                    while rcpts.len() < wanted {
                        let user = &users[rng.random_range(0..users.len())];
                        let address = format!("{user}@{local_domain}");
                        if !rcpts.contains(&address) {
                            rcpts.push(address);
                        }
                    }
                    if let Some(postmaster) = postmaster_rcpt(workload.postmaster_every, number, &local_domain) {
                        rcpts.push(postmaster);
                    }
                    if workload.unknown_rcpt_every > 0 && number % workload.unknown_rcpt_every == 0 {
                        rcpts.push(format!("nobody{number}@{local_domain}"));
                    }
                    let invalid = workload.invalid_param_every > 0 && number % workload.invalid_param_every == 0;
                    // A recipient refused for its parameter is not named again: a second, plain
                    // RCPT would be accepted and make a copy of a recipient the sender bounced.
                    let repeated_rcpts = match workload.duplicate_rcpt_every {
                        every if every > 0 && number % every == 0 && !invalid => rcpts.first().cloned().into_iter().collect(),
                        _ => Vec::new(),
                    };
                    let fixture = &fixtures[rng.random_range(0..fixtures.len())];
                    let msg = format!("{number}.{}@{domain}", provider_host(name));
                    let subject = format!("message {number} from {name} ({})", fixture.name);
                    let envelope = Envelope {
                        message_id: &msg,
                        from: &from,
                        to: &rcpts,
                        subject: &subject,
                        date_unix_s: EPOCH_UNIX_S + at_ms / 1000,
                        header_from: list_mail.then_some(author.as_str()),
                        reply_to: list_mail.then_some(list.as_str()),
                        sender: list_mail.then_some(owner.as_str()),
                    };
                    let bytes = Rc::new(message::compose(&envelope, fixture));
                    let invalid_param = invalid.then(|| invalid_param(number / workload.invalid_param_every, &rcpts, bytes.len()));
                    PlannedMessage { at_ms, msg: msg.into(), from, rcpts, repeated_rcpts, invalid_param, bytes, session: number }
                })
                .collect::<Vec<_>>()
        })
        .zip(&scenario.providers)
        .map(|(messages, provider)| group_into_sessions(messages, workload.messages_per_session.get_ref().bounds(), seed, provider.name.get_ref()))
        .collect()
}

/// Postmaster for every `every`-th message (no draw: the stream stays as it was): bare and
/// with the domain in turn, since RFC 5321 §4.5.1 requires both.
fn postmaster_rcpt(every: u32, number: u32, domain: &str) -> Option<String> {
    match every {
        0 => None,
        every if number % every != 0 => None,
        every if (number / every) % 2 == 1 => Some("postmaster".to_string()),
        _ => Some(format!("postmaster@{domain}")),
    }
}

/// The `nth` invalid parameter of a provider: on the first RCPT, then on MAIL, in turn. The
/// first recipient is always a mailbox the MX has, so only the parameter can be refused.
fn invalid_param(nth: u32, rcpts: &[String], size: usize) -> InvalidParam {
    match (nth % 2, rcpts.first()) {
        (1, Some(first)) => InvalidParam { stage: Stage::Rcpt, rcpt: Some(first.clone()), param: "SIZE=+5".to_string() },
        _ => InvalidParam { stage: Stage::Mail, rcpt: None, param: format!("SIZE=+{size}") },
    }
}

/// Groups a provider's messages into SMTP sessions of drawn sizes, in order of arrival; a
/// session leaves when its last message has arrived. Sizes come from a stream of their own,
/// so the messages themselves are the same whatever the grouping.
fn group_into_sessions(mut messages: Vec<PlannedMessage>, sizes: (u64, u64), seed: Seed, provider: &str) -> Vec<PlannedMessage> {
    if sizes == (1, 1) {
        return messages;
    }
    let mut rng = seed.stream(&format!("sessions/{provider}"));
    let mut order: Vec<usize> = (0..messages.len()).collect();
    order.sort_by_key(|&index| (messages[index].at_ms, index));
    let (mut session, mut start) = (0u32, 0usize);
    while start < order.len() {
        session += 1;
        let size = (draw(&mut rng, sizes) as usize).max(1);
        let members = &order[start..(start + size).min(order.len())];
        let leaves_ms = members.iter().map(|&index| messages[index].at_ms).max().unwrap_or(0);
        for &index in members {
            messages[index].at_ms = leaves_ms;
            messages[index].session = session;
        }
        start += members.len();
    }
    messages
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipients_are_drawn_from_the_distinct_mailboxes_even_of_an_unvalidated_scenario() {
        let text = include_str!("../../../../scenarios/fast/baseline.toml");
        let mut scenario = crate::scenario::parse("baseline.toml", text).unwrap();
        // Validation refuses this; the planner must still end if handed it.
        *scenario.mx.users.get_mut() = vec!["anna".into(), "anna".into(), "anna".into()];
        let plan = make(&scenario, Seed(1));
        let rcpts: Vec<&Vec<String>> = plan.workload.iter().flatten().map(|message| &message.rcpts).collect();
        assert!(!rcpts.is_empty() && rcpts.iter().all(|rcpts| rcpts.iter().filter(|rcpt| rcpt.starts_with("anna@")).count() == 1));
    }
}
