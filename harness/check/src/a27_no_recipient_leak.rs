//! A27 no-recipient-leak: a copy of a message names in its trace fields no recipient but the
//! one it was delivered for. RFC 5321 §4.4: a `Received:` field's FOR clause names exactly one
//! path, and §7.2: naming the others would show each recipient the rest, the blind copies
//! included. A per-recipient copy may name its own recipient; a copy for several names none.
//!
//! Judged from what the client downloaded (`ClientFetched.trace_for`: the FOR addresses the
//! client parsed from the copy) against the recipients the workload submitted the message for.
//! A copy fetched from mailbox M is for the recipients whose local part is M, or, when none is,
//! for postmaster (the MX's alias of one of its mailboxes, RFC 5321 §4.5.1).

use history::EventKind as K;
use super::facts::Facts;
use super::Violation;
use history::Event;

pub fn check(facts: &Facts, out: &mut Vec<Violation>) {
    for (at, record) in facts.records_of(&[K::ClientFetched]) {
        let Event::ClientFetched(fetched) = &record.event else { continue };
        let history::ClientFetched { mailbox, msg, trace_for, .. } = &**fetched;
        let Some((submitted, _, rcpts, _)) = facts.submitted.get(msg.as_str()) else { continue };
        let delivered = deliverable(&facts.records[*submitted].event, rcpts);
        for named in trace_for.iter().filter(|named| leaks(mailbox, named, &delivered)) {
            let why = format!("the copy in mailbox {mailbox} names another recipient, <{named}>, in a Received field's FOR clause");
            out.push(Violation::new("A27", format!("msg {msg} mailbox {mailbox}"), why, vec![*submitted, at]));
        }
    }
}

/// The recipients a copy can be for: those submitted, less one the workload named with an
/// invalid RCPT parameter on purpose, which the MX must refuse (A28). Without this, a message
/// for `anna` (refused so) and `postmaster` (anna's alias) would count anna's own copy, which is
/// postmaster's, as one for anna that names postmaster: a false alarm swarm runs met.
fn deliverable(submit: &Event, rcpts: &[String]) -> Vec<String> {
    let refused = match submit {
        Event::Submit(submit) => submit.invalid_param.as_ref().filter(|invalid| invalid.stage == history::Stage::Rcpt).and_then(|invalid| invalid.rcpt.clone()),
        _ => None,
    };
    rcpts.iter().filter(|rcpt| refused.as_ref() != Some(*rcpt)).cloned().collect()
}

/// Whether `named` is a recipient of the message other than those the copy in `mailbox` is for.
fn leaks(mailbox: &str, named: &str, rcpts: &[String]) -> bool {
    let local = |address: &str| address.rsplit_once('@').map_or(address, |(local, _)| local).to_ascii_lowercase();
    let mailbox = mailbox.to_ascii_lowercase();
    let is_recipient = rcpts.iter().any(|rcpt| same_address(rcpt, named));
    let for_mailbox = rcpts.iter().any(|rcpt| local(rcpt) == mailbox);
    let own = local(named) == mailbox || (local(named) == "postmaster" && !for_mailbox);
    is_recipient && !own
}

/// Same address, without case; a bare `postmaster` matches postmaster at any domain (the MX
/// completes it with its own).
fn same_address(rcpt: &str, named: &str) -> bool {
    let (rcpt, named) = (rcpt.to_ascii_lowercase(), named.to_ascii_lowercase());
    rcpt == named || (rcpt == "postmaster" && named.starts_with("postmaster@")) || (named == "postmaster" && rcpt.starts_with("postmaster@"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rcpts(list: &[&str]) -> Vec<String> {
        list.iter().map(|rcpt| rcpt.to_string()).collect()
    }

    #[test]
    fn a_copy_may_name_its_own_recipient_only() {
        let two = rcpts(&["anna@l.test", "bruno@l.test"]);
        assert!(!leaks("anna", "anna@l.test", &two));
        assert!(leaks("bruno", "anna@l.test", &two));
        assert!(!leaks("bruno", "someone@else.test", &two));
    }

    #[test]
    fn postmaster_is_its_mailbox_own_unless_the_mailbox_is_named_too() {
        let with_postmaster = rcpts(&["postmaster", "bruno@l.test"]);
        assert!(!leaks("anna", "postmaster@l.test", &with_postmaster));
        assert!(leaks("bruno", "postmaster@l.test", &with_postmaster));
        let both = rcpts(&["anna@l.test", "postmaster@l.test"]);
        assert!(!leaks("anna", "anna@l.test", &both));
    }

    #[test]
    fn a_recipient_refused_for_its_invalid_parameter_is_no_recipient_of_the_copy() {
        let invalid = history::InvalidParam { stage: history::Stage::Rcpt, rcpt: Some("anna@l.test".into()), param: "SIZE=+5".into() };
        let submit = Event::Submit(Box::new(history::Submit { msg: "m".into(), from: "s@x.test".into(), rcpts: rcpts(&["anna@l.test", "postmaster"]), digest: Default::default(), size: 1, longest_line: 1, invalid_param: Some(invalid) }));
        let delivered = deliverable(&submit, &rcpts(&["anna@l.test", "postmaster"]));
        assert_eq!(delivered, rcpts(&["postmaster"]));
        assert!(!leaks("anna", "postmaster@l.test", &delivered));
        assert!(leaks("anna", "postmaster@l.test", &rcpts(&["anna@l.test", "postmaster"])));
    }
}
