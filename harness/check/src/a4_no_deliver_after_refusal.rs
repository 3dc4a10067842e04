//! A4 no-deliver-after-refusal: after a 4xx/5xx at end of data the sender keeps
//! responsibility, so the receiver must not deliver that copy. RFC 5321 §4.2.5.

use super::facts::Facts;
use super::Violation;

pub fn check(facts: &Facts, out: &mut Vec<Violation>) {
    for (at, msg, rcpts, queue_file, reply) in &facts.mx_data_ends {
        if reply.starts_with('2') {
            continue;
        }
        let Some(file) = queue_file else { continue };
        let Some(delivered) = facts.lmtp_ok_by_file.get(file) else { continue };
        let later: Vec<usize> = delivered.iter().copied().filter(|delivered_at| delivered_at > at).collect();
        if let Some(first) = later.first() {
            out.push(Violation::new(
                "A4",
                format!("msg {msg} rcpts {}", rcpts.join(",")),
                format!("the MX refused the message ({reply}) yet its queue file {file} was delivered"),
                vec![*at, *first],
            ));
        }
    }
}
