//! A28 invalid-input-refused: a MAIL or RCPT command with a parameter the server cannot take is
//! refused, never accepted as if it were not there. RFC 5321 §4.1.1.11: a parameter the server
//! does not recognise or cannot implement gets 555 (a malformed one 501). The workload sends
//! two that no server may accept: `SIZE=+<n>` on MAIL (RFC 1870's size-value is digits only)
//! and `SIZE=+5` on RCPT (SIZE is a MAIL parameter, and has no sign either).
//!
//! Judged from what the workload submitted (`Submit.invalid_param`) and the reply the sender
//! read for that command (`SmtpReply`): a 2xx is a violation. A 4xx is no acceptance (the MX
//! may defer before it reads parameters, under backpressure); the refusal comes on a later try.

use history::EventKind as K;
use super::facts::Facts;
use super::Violation;
use history::{Event, InvalidParam, Stage};

pub fn check(facts: &Facts, out: &mut Vec<Violation>) {
    for (at, record) in facts.records_of(&[K::SmtpReply]) {
        let Event::SmtpReply { msg, stage, rcpt, reply, .. } = &record.event else { continue };
        let Some(&(submitted, ..)) = facts.submitted.get(msg.as_str()) else { continue };
        let Event::Submit(submit) = &facts.records[submitted].event else { continue };
        let Some(invalid) = &submit.invalid_param else { continue };
        if reply.starts_with('2') && answers(invalid, *stage, rcpt.as_deref()) {
            let command = if invalid.stage == Stage::Mail { "MAIL".to_string() } else { format!("RCPT TO:<{}>", rcpt.as_deref().unwrap_or_default()) };
            let why = format!("{command} with the invalid parameter {} was accepted: '{reply}' (RFC 5321 §4.1.1.11: 555 or 501)", invalid.param);
            out.push(Violation::new("A28", format!("msg {msg}"), why, vec![submitted, at]));
        }
    }
}

/// Whether a reply at `stage` (for `rcpt`) answers the command that carried the parameter.
fn answers(invalid: &InvalidParam, stage: Stage, rcpt: Option<&str>) -> bool {
    match invalid.stage {
        Stage::Mail => stage == Stage::Mail,
        _ => stage == invalid.stage && rcpt.is_some() && rcpt == invalid.rcpt.as_deref(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_reply_to_the_command_with_the_parameter_counts() {
        let on_rcpt = InvalidParam { stage: Stage::Rcpt, rcpt: Some("anna@l.test".into()), param: "SIZE=+5".into() };
        assert!(answers(&on_rcpt, Stage::Rcpt, Some("anna@l.test")));
        assert!(!answers(&on_rcpt, Stage::Rcpt, Some("bruno@l.test")));
        assert!(!answers(&on_rcpt, Stage::Mail, None));
        let on_mail = InvalidParam { stage: Stage::Mail, rcpt: None, param: "SIZE=+10".into() };
        assert!(answers(&on_mail, Stage::Mail, None));
        assert!(!answers(&on_mail, Stage::Rcpt, Some("anna@l.test")));
    }
}
