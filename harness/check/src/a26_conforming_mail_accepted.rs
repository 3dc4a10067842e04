//! A26 conforming-mail-accepted: what a conforming client sends is not refused permanently for
//! its form. The rules real clients hit:
//! - postmaster: RCPT TO:<postmaster>, and RCPT TO:<postmaster@domain> for a domain the MX
//!   takes mail for, get no 5xx (RFC 5321 §4.5.1: the reserved mailbox postmaster must be
//!   supported, and <postmaster> without a domain accepted). Except while the operator has
//!   turned the MX to refuse all mail: A22 judges that answer.
//! - the end of data: a message with at most 998 octets of text in every line (RFC 5321
//!   §4.5.3.1.6; the stuffing dot of §4.5.2 is framing, not text) gets no 5xx refusing its form
//!   (x.5.x protocol, x.6.x content; or a bare 500/501) once MAIL and a RCPT were accepted.
//! - DATA (or a BDAT chunk) once MAIL and any RCPT were accepted gets no 5xx: the transaction
//!   has a valid recipient (RFC 5321 §3.3, §4.1.1.4; RFC 3030 §2).
//! - the size: a message no larger than the SIZE its accepted MAIL declared gets no 552 (x.3.4)
//!   at the end of data (RFC 1870 §6: the server that took the SIZE has room for it).
//!
//! Each holds except while the operator has turned the MX to refuse all mail (A22 judges that).
//! (Found by `cargo xtask mutants`: an MX refusing every DATA passed every invariant.)
//!
//! Judged from the replies as the sender read them off the wire (`SmtpReply`) and what the
//! workload submitted (`Submit`: the longest line, a parameter it got wrong on purpose), never
//! from the MX's own account of its replies.

use history::EventKind as K;
use super::facts::Facts;
use super::reply::{codes, subject};
use super::Violation;
use history::{Event, InvalidParam, Stage};
use std::collections::BTreeSet;

/// A sender's transaction so far: MAIL accepted, some RCPT accepted.
#[derive(Default)]
struct Open {
    mail: bool,
    rcpt: bool,
}

pub fn check(facts: &Facts, out: &mut Vec<Violation>) {
    let served = served_domains(facts);
    let mut refusing_all = false;
    let mut open: rustc_hash::FxHashMap<&str, Open> = rustc_hash::FxHashMap::default();
    // A pipelined 503 after a refused MAIL refuses the sequence, not the postmaster (RFC 2920).
    let consequences = &facts.pipelining_consequences;
    for (at, record) in facts.records_of(&[K::Operator, K::SmtpReply]) {
        match &record.event {
            Event::Operator { mode } => refusing_all = mode == "5xx-bounce",
            Event::SmtpReply { session, msg, stage, rcpt, reply } => {
                let transaction = open.entry(session.as_str()).or_default();
                let ok = reply.starts_with('2');
                match stage {
                    Stage::Mail => transaction.mail = ok,
                    Stage::Rcpt => {
                        transaction.rcpt |= ok;
                        let postmaster = rcpt.as_deref().filter(|rcpt| is_postmaster_of(rcpt, &served));
                        if let Some(rcpt) = postmaster.filter(|rcpt| reply.starts_with('5') && !refusing_all && !consequences.contains(&at) && !has_invalid_param(facts, msg, rcpt)) {
                            out.push(Violation::new("A26", format!("msg {msg} rcpt {rcpt}"), format!("postmaster was refused permanently: '{reply}' (RFC 5321 §4.5.1: an MX must accept it)"), vec![at]));
                        }
                    }
                    Stage::DataEnd if transaction.mail && transaction.rcpt && refuses_form(reply) => judge_data_end(facts, at, msg, reply, out),
                    Stage::DataEnd if transaction.mail && transaction.rcpt && refuses_size(reply) && !refusing_all => judge_size(facts, at, msg, reply, out),
                    Stage::Data if transaction.mail && transaction.rcpt && reply.starts_with('5') && !refusing_all && !consequences.contains(&at) => {
                        let why = format!("DATA was refused permanently after MAIL and a RCPT were accepted: '{reply}' (RFC 5321 §3.3: the transaction has a valid recipient)");
                        out.push(Violation::new("A26", format!("msg {msg}"), why, vec![at]));
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
}

/// A refusal of the message's form at the end of data.
fn refuses_form(reply: &str) -> bool {
    match (codes(reply).0, subject(reply)) {
        (basic, Some(subject)) => basic.is_some_and(|code| (500..600).contains(&code)) && matches!(subject, "5" | "6"),
        (basic, None) => matches!(basic, Some(500 | 501)),
    }
}

/// A refusal for the message's size.
fn refuses_size(reply: &str) -> bool {
    let (basic, enhanced) = codes(reply);
    basic == Some(552) || enhanced.as_deref() == Some("5.3.4")
}

/// The MAIL the MX accepted declared the message's size (the workload always sends SIZE, and a
/// MAIL whose SIZE the MX cannot take is refused at MAIL).
fn judge_size(facts: &Facts, at: usize, msg: &str, reply: &str, out: &mut Vec<Violation>) {
    let Some(&(submitted, ..)) = facts.submitted.get(msg) else { return };
    let Event::Submit(submit) = &facts.records[submitted].event else { return };
    let size = submit.size;
    let why = format!("a message of {size} octets, the SIZE its accepted MAIL declared, was refused as too big at the end of data: '{reply}' (RFC 1870 §6)");
    out.push(Violation::new("A26", format!("msg {msg}"), why, vec![submitted, at]));
}

fn judge_data_end(facts: &Facts, at: usize, msg: &str, reply: &str, out: &mut Vec<Violation>) {
    let Some(&(submitted, ..)) = facts.submitted.get(msg) else { return };
    let Event::Submit(submit) = &facts.records[submitted].event else { return };
    let longest_line = submit.longest_line;
    if longest_line <= 998 {
        let why = format!("a message whose longest line holds {longest_line} octets (at most 998: RFC 5321 §4.5.3.1.6) was refused at the end of data: '{reply}'");
        out.push(Violation::new("A26", format!("msg {msg}"), why, vec![submitted, at]));
    }
}

/// Domains the MX took mail for: some recipient there got a 2xx at RCPT.
fn served_domains(facts: &Facts) -> BTreeSet<String> {
    let mut served = BTreeSet::new();
    for (_, record) in facts.records_of(&[K::SmtpReply]) {
        let Event::SmtpReply { stage: Stage::Rcpt, rcpt: Some(rcpt), reply, .. } = &record.event else { continue };
        let Some((_, domain)) = rcpt.rsplit_once('@').filter(|_| reply.starts_with('2')) else { continue };
        // A few domains, tens of thousands of recipients: lowercase a domain only when new.
        if !served.contains(domain) {
            served.insert(domain.to_ascii_lowercase());
        }
    }
    served
}

/// `postmaster` without a domain, or at a domain the MX serves (case does not matter).
fn is_postmaster_of(rcpt: &str, served: &BTreeSet<String>) -> bool {
    match rcpt.rsplit_once('@') {
        Some((local, domain)) => local.eq_ignore_ascii_case("postmaster") && served.contains(&domain.to_ascii_lowercase()),
        None => rcpt.eq_ignore_ascii_case("postmaster"),
    }
}

/// The workload gave this recipient's RCPT (or the MAIL) a wrong parameter: A28's case.
fn has_invalid_param(facts: &Facts, msg: &str, rcpt: &str) -> bool {
    let Some(&(submitted, ..)) = facts.submitted.get(msg) else { return false };
    let Event::Submit(submit) = &facts.records[submitted].event else { return false };
    match &submit.invalid_param {
        Some(InvalidParam { stage: Stage::Mail, .. }) => true,
        Some(InvalidParam { rcpt: Some(bad), .. }) => bad == rcpt,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_refusals_are_told_from_others() {
        assert!(refuses_form("500 5.5.2 line too long in message"));
        assert!(refuses_form("554 5.6.0 bad content"));
        assert!(refuses_form("501"));
        assert!(!refuses_form("552 5.3.4 message too big"));
        assert!(!refuses_form("451 4.3.0 try again later"));
        assert!(!refuses_form("250 2.0.0 Ok"));
    }

    #[test]
    fn postmaster_is_recognised_with_and_without_a_served_domain() {
        let served: BTreeSet<String> = ["libero.test".to_string()].into();
        assert!(is_postmaster_of("postmaster", &served));
        assert!(is_postmaster_of("PostMaster@Libero.test", &served));
        assert!(!is_postmaster_of("postmaster@elsewhere.test", &served));
        assert!(!is_postmaster_of("anna@libero.test", &served));
    }
}
