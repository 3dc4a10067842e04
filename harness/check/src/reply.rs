//! SMTP and LMTP reply codes as the checkers read them off a reply line: the basic code
//! (RFC 5321 §4.2) and the enhanced status code (RFC 3463), whose middle number is the subject
//! (1 addressing, 2 mailbox, 3 mail system, 4 network, 5 protocol, 6 content, 7 security).
//! One parser, so every checker reads a reply the same way.

/// Splits "554 5.3.0 text" into (554, Some("5.3.0")); an enhanced code is three numbers.
pub fn codes(reply: &str) -> (Option<u16>, Option<&str>) {
    let mut words = reply.split_whitespace();
    let basic = words.next().and_then(|word| word.parse().ok());
    let enhanced = words.next().filter(|word| word.split('.').count() == 3 && word.split('.').all(|part| part.parse::<u16>().is_ok()));
    (basic, enhanced)
}

/// The subject of a reply's enhanced status code ("5.1.1" → "1"), if it has one.
pub fn subject(reply: &str) -> Option<&str> {
    codes(reply).1.and_then(|enhanced| enhanced.split('.').nth(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_line_gives_its_basic_and_enhanced_codes() {
        assert_eq!(codes("554 5.3.0 storage error"), (Some(554), Some("5.3.0")));
        assert_eq!(codes("250 ok"), (Some(250), None));
        assert_eq!(codes("501 a.b.c"), (Some(501), None));
        assert_eq!(subject("550 5.1.1 no such user"), Some("1"));
        assert_eq!(subject("550 mailbox unavailable"), None);
    }
}
