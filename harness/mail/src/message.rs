//! Message formats for the mail-stack simulator: workload fixtures, composed
//! messages, content digests that survive trace fields, and RFC 3464 failure
//! DSNs (build and check).
//!
//! Everything here is a pure function of its inputs: no clock, no randomness,
//! no host name. mail-builder would otherwise insert a random MIME boundary,
//! the current date and a generated Message-ID, so all three are always set
//! explicitly (see `build_failure_dsn`).

use std::borrow::Cow;

use mail_builder::headers::address::Address;
use mail_builder::headers::content_type::ContentType;
use mail_builder::headers::message_id::MessageId;
use mail_builder::headers::raw::Raw;
use mail_builder::headers::text::Text;
use mail_builder::headers::{Header, HeaderType};
use mail_builder::mime::{BodyPart, MimePart};
use mail_builder::MessageBuilder;
use mail_parser::{Message, MessageParser, MessagePart, MimeHeaders};

/// RFC 5322 section 2.1.1: a line is at most 998 octets, CRLF excluded.
const MAX_LINE_OCTETS: usize = 998;

/// Header fields that `compose` writes; a fixture carrying them would
/// produce duplicates.
const COMPOSED_FIELDS: &[&str] = &["message-id", "date", "from", "to", "subject"];

/// Trace fields a receiving system prepends (RFC 5321 section 4.4); they are
/// ignored by `content_digest`. Extend here if a delivery agent adds others
/// (e.g. Delivered-To).
const TRACE_FIELDS: &[&str] = &["received", "return-path"];

/// 9999-12-31T23:59:59Z: beyond this the RFC 5322 year would need five digits.
const MAX_DATE_S: u64 = 253_402_300_799;

const WEEKDAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// The fixture files compiled into the binary, so that a workload never
/// depends on the working directory.
const EMBEDDED: &[(&str, &str)] = &[
    ("plain", include_str!("../../../fixtures/messages/plain.eml")),
    (
        "multipart-alternative",
        include_str!("../../../fixtures/messages/multipart-alternative.eml"),
    ),
    (
        "multipart-mixed-attachment",
        include_str!("../../../fixtures/messages/multipart-mixed-attachment.eml"),
    ),
    (
        "eight-bit",
        include_str!("../../../fixtures/messages/eight-bit.eml"),
    ),
    (
        "leading-dots",
        include_str!("../../../fixtures/messages/leading-dots.eml"),
    ),
    (
        "long-lines",
        include_str!("../../../fixtures/messages/long-lines.eml"),
    ),
];

// ---------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------

/// A fixture: an RFC 5322 message body part: its own MIME header fields
/// (MIME-Version, Content-Type, ...) and body, CRLF line ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fixture {
    pub name: String,
    pub bytes: Vec<u8>,
}

/// Loads fixtures from text whose lines end in LF or CRLF and normalises to
/// CRLF, because files are edited with LF but SMTP and the digests need CRLF.
/// A missing final line end is added, since a message sent over SMTP always
/// ends with CRLF. Returns Err(text) naming the problem (no blank line between
/// header and body, a line over 998 octets, a bare CR, a NUL, a malformed
/// header line, or a field that `compose` adds itself).
pub fn fixture_from_text(name: &str, text: &str) -> Result<Fixture, String> {
    let lines = split_text_lines(text).map_err(|e| format!("fixture {name}: {e}"))?;
    check_fixture_lines(&lines).map_err(|e| format!("fixture {name}: {e}"))?;
    let mut bytes = Vec::with_capacity(text.len() + lines.len());
    for line in &lines {
        bytes.extend_from_slice(line.as_bytes());
        bytes.extend_from_slice(b"\r\n");
    }
    Ok(Fixture {
        name: name.to_string(),
        bytes,
    })
}

/// The fixtures embedded in the binary. A fixture that fails to load is left
/// out rather than panicking; the tests check that none is.
pub fn embedded_fixtures() -> Vec<Fixture> {
    EMBEDDED
        .iter()
        .filter_map(|(name, text)| fixture_from_text(name, text).ok())
        .collect()
}

/// Splits text into lines without their LF or CRLF, rejecting bare CR and
/// NUL, which SMTP cannot carry faithfully.
fn split_text_lines(text: &str) -> Result<Vec<&str>, String> {
    let body = text.strip_suffix('\n').unwrap_or(text);
    let mut lines = Vec::new();
    for (index, raw) in body.split('\n').enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let number = index + 1;
        if line.contains('\r') {
            return Err(format!("line {number} contains a bare CR"));
        }
        if line.contains('\0') {
            return Err(format!("line {number} contains a NUL octet"));
        }
        if line.len() > MAX_LINE_OCTETS {
            return Err(format!(
                "line {number} is {} octets, over the {MAX_LINE_OCTETS}-octet limit",
                line.len()
            ));
        }
        lines.push(line);
    }
    Ok(lines)
}

/// Checks the header section: present, well-formed, separated from the body
/// by a blank line, and free of the fields `compose` writes.
fn check_fixture_lines(lines: &[&str]) -> Result<(), String> {
    let Some(blank) = lines.iter().position(|l| l.is_empty()) else {
        return Err("no blank line between header and body".to_string());
    };
    if blank == 0 {
        return Err("empty header section (the first line is blank)".to_string());
    }
    for (index, line) in lines.iter().take(blank).enumerate() {
        check_header_line(index, line)?;
    }
    Ok(())
}

/// One header line: a continuation (after a field) or `name: value` with an
/// RFC 5322 field name.
fn check_header_line(index: usize, line: &str) -> Result<(), String> {
    let number = index + 1;
    if line.starts_with([' ', '\t']) {
        return match index {
            0 => Err("the first header line is a continuation line".to_string()),
            _ => Ok(()),
        };
    }
    let name = line.split_once(':').map(|(n, _)| n).unwrap_or("");
    let valid = !name.is_empty() && name.bytes().all(|b| (33..=126).contains(&b));
    if !valid {
        return Err(format!("line {number} is not a header field: {line:?}"));
    }
    if COMPOSED_FIELDS.iter().any(|f| f.eq_ignore_ascii_case(name)) {
        return Err(format!("line {number}: {name} is added by compose"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Composing workload messages
// ---------------------------------------------------------------------------

/// The envelope-derived header fields `compose` prepends to a fixture.
#[derive(Debug, Clone, Copy)]
pub struct Envelope<'a> {
    /// Without the angle brackets.
    pub message_id: &'a str,
    /// The envelope sender; "" for the null reverse-path <> (the From field then names
    /// MAILER-DAEMON, see `compose`).
    pub from: &'a str,
    pub to: &'a [String],
    pub subject: &'a str,
    pub date_unix_s: u64,
    /// The header addresses where they differ from the envelope, as mailing lists send: the
    /// author in From (default: the envelope sender), an address for replies, the agent that
    /// sent it. A DSN goes to the envelope sender, never to any of these (RFC 3464 §2).
    pub header_from: Option<&'a str>,
    pub reply_to: Option<&'a str>,
    pub sender: Option<&'a str>,
}

/// Builds a whole message for the workload: prepends Message-ID, Date, From,
/// To (all recipients, comma-separated) and Subject to the fixture. The date
/// comes from `date_unix_s` (no clock) so runs are byte-identical. mail-builder
/// writes the fields so that long recipient lists are folded and a non-ASCII
/// subject is RFC 2047-encoded; CR and LF in inputs become spaces so no input
/// can inject a header field. An empty `from` (a bounce, sent with the null
/// reverse-path) gives `From: MAILER-DAEMON@<the Message-ID's domain>`, as MTAs
/// sign their bounces: `From: <>` is no mailbox (RFC 5322 §3.4, §3.6.2). An
/// empty `to` gives `To: undisclosed-recipients:;`.
pub fn compose(envelope: &Envelope, fixture: &Fixture) -> Vec<u8> {
    let mut out = Vec::with_capacity(fixture.bytes.len() + 256);
    let id = MessageId::new(id_text(envelope.message_id));
    write_field(&mut out, "Message-ID", &HeaderType::from(id));
    let date = Raw::new(rfc5322_date(envelope.date_unix_s));
    write_field(&mut out, "Date", &HeaderType::from(date));
    let from = match (envelope.header_from, envelope.from) {
        (Some(author), _) => author.to_string(),
        (None, "") => format!("MAILER-DAEMON@{}", id_domain(envelope.message_id)),
        (None, from) => from.to_string(),
    };
    let from = Address::from(one_line(&from));
    write_field(&mut out, "From", &HeaderType::from(from));
    if let Some(sender) = envelope.sender {
        write_field(&mut out, "Sender", &HeaderType::from(Address::from(one_line(sender))));
    }
    if let Some(reply_to) = envelope.reply_to {
        write_field(&mut out, "Reply-To", &HeaderType::from(Address::from(one_line(reply_to))));
    }
    write_field(&mut out, "To", &recipients_header(envelope.to));
    let subject = Text::new(one_line(envelope.subject));
    write_field(&mut out, "Subject", &HeaderType::from(subject));
    out.extend_from_slice(&fixture.bytes);
    out
}

/// The To field value: every recipient as an angle-addr, or an empty group
/// when there is none (RFC 5322 requires a value).
fn recipients_header(to: &[String]) -> HeaderType<'static> {
    if to.is_empty() {
        return Raw::new("undisclosed-recipients:;").into();
    }
    let list = to
        .iter()
        .map(|addr| Address::new_address(None::<String>, one_line(addr)))
        .collect();
    Address::new_list(list).into()
}

/// Writes `name: value` CRLF with mail-builder's encoder and folder.
fn write_field(out: &mut Vec<u8>, name: &str, value: &HeaderType<'_>) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    // Writing into a Vec<u8> cannot fail, so the io::Result carries nothing.
    let _ = value.write_header(&mut *out, name.len() + 2);
}

/// Replaces control characters (CR and LF above all) with spaces so that a
/// value stays on its header line.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() && c != '\t' { ' ' } else { c })
        .collect()
}

/// The domain of a Message-ID (after its last '@'), or "localhost" when it has none.
fn id_domain(message_id: &str) -> String {
    match id_text(message_id).rsplit_once('@') {
        Some((_, domain)) if !domain.is_empty() => domain.to_string(),
        _ => "localhost".to_string(),
    }
}

/// A msg-id without brackets, whitespace or controls, which would break the
/// `<id>` form.
fn id_text(text: &str) -> String {
    text.chars()
        .filter(|c| !matches!(c, '<' | '>') && !c.is_whitespace() && !c.is_control())
        .collect()
}

/// The Unix time (seconds) of an RFC 5322 date-time, as mail-parser reads it; None when it
/// is not one.
pub fn rfc5322_date_unix_s(value: &str) -> Option<i64> {
    mail_parser::DateTime::parse_rfc822(value.trim()).map(|date| date.to_timestamp())
}

/// An RFC 5322 date-time in UTC, computed from seconds since the epoch
/// (clamped to year 9999), e.g. "Thu, 01 Jan 1970 00:00:00 +0000".
pub fn rfc5322_date(unix_s: u64) -> String {
    let s = unix_s.min(MAX_DATE_S);
    let days = s / 86_400;
    let secs = s % 86_400;
    let (year, month, day) = civil_from_days(days);
    // 1970-01-01 was a Thursday.
    let weekday = WEEKDAYS
        .get(((days + 4) % 7) as usize)
        .copied()
        .unwrap_or("Thu");
    let month = MONTHS.get((month - 1) as usize).copied().unwrap_or("Jan");
    let (h, m, sec) = (secs / 3600, secs / 60 % 60, secs % 60);
    format!("{weekday}, {day:02} {month} {year:04} {h:02}:{m:02}:{sec:02} +0000")
}

/// (year, month 1..=12, day 1..=31) of a day count since 1970-01-01, after
/// Howard Hinnant's civil_from_days, restricted to non-negative days.
pub fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

// ---------------------------------------------------------------------------
// Digests and identifiers
// ---------------------------------------------------------------------------

/// The digest of a message as received, with the trace header fields a
/// receiving system prepends (leading Received: and Return-Path: fields,
/// including folded continuation lines) removed, so the sender's bytes and the
/// mailbox's bytes compare equal when nothing else changed. blake3, hex, first
/// 16 hex chars.
pub fn content_digest(message: &[u8]) -> String {
    let hash = blake3::hash(strip_leading_trace(message));
    hex(&hash.as_bytes()[..8])
}

/// The message without its leading trace fields (LF or CRLF line ends).
fn strip_leading_trace(message: &[u8]) -> &[u8] {
    let mut offset = 0;
    let mut in_trace = false;
    for line in message.split_inclusive(|&b| b == b'\n') {
        let continuation = matches!(line.first(), Some(b' ' | b'\t'));
        if continuation && in_trace {
            offset += line.len();
        } else if !continuation && is_trace_field(line) {
            in_trace = true;
            offset += line.len();
        } else {
            break;
        }
    }
    message.get(offset..).unwrap_or(message)
}

/// Whether a header line starts a trace field (name compared without case,
/// optional white space before the colon as RFC 5322's obsolete syntax allows).
fn is_trace_field(line: &[u8]) -> bool {
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return false;
    };
    let name = line.get(..colon).unwrap_or_default().trim_ascii_end();
    TRACE_FIELDS
        .iter()
        .any(|f| f.as_bytes().eq_ignore_ascii_case(name))
}

/// Lower-case hex of some bytes.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The first address of a header field (From, Reply-To, Sender), as mail-parser reads it.
pub fn header_address(message: &[u8], field: &str) -> Option<String> {
    let parsed = MessageParser::new().parse_headers(message)?;
    let address = match field.to_ascii_lowercase().as_str() {
        "from" => parsed.from(),
        "reply-to" => parsed.reply_to(),
        "sender" => parsed.sender(),
        _ => None,
    }?;
    address.first()?.address().map(str::to_string)
}

/// The Message-ID (without <>) of a message, parsed with mail-parser; None
/// when absent or empty.
pub fn message_id(message: &[u8]) -> Option<String> {
    // Every delivery asks this of a message: a parser that reads Message-ID alone and skips
    // every other field (each field still ends where the full parse ends it, at a line break
    // not followed by white space) answers the same for a fraction of the cost.
    static PARSER: std::sync::OnceLock<MessageParser> = std::sync::OnceLock::new();
    let parser = PARSER.get_or_init(|| MessageParser::new().header_id(mail_parser::HeaderName::MessageId).default_header_ignore());
    message_id_with(parser, message)
}

fn message_id_with(parser: &MessageParser, message: &[u8]) -> Option<String> {
    let parsed = parser.parse_headers(message)?;
    parsed
        .message_id()
        .filter(|id| !id.is_empty())
        .map(str::to_string)
}

/// Octets of text in the longest line of a message: what RFC 5321 §4.5.3.1.6 limits to 998.
/// A line ends with CRLF or a bare LF; neither is text, and a message is measured as its
/// author wrote it (before any dot-stuffing, which is transport framing).
pub fn longest_line(message: &[u8]) -> usize {
    message
        .split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line).len())
        .max()
        .unwrap_or(0)
}

/// The addresses the `for` clauses of a message's `Received:` fields name (RFC 5321 §4.4),
/// lower-cased and without angle brackets, in field order: what a reader of the copy learns
/// about whom the message was delivered for.
pub fn trace_recipients(message: &[u8]) -> Vec<String> {
    header_fields(message)
        .iter()
        .filter_map(|field| field.split_once(':').filter(|(name, _)| name.trim().eq_ignore_ascii_case("received")))
        .filter_map(|(_, value)| for_clause(value))
        .collect()
}

/// The address after `for` in a Received field's value (its clauses end at the `;` before
/// the date).
fn for_clause(value: &str) -> Option<String> {
    let clauses = value.rsplit_once(';').map_or(value, |(clauses, _)| clauses);
    let mut words = clauses.split_whitespace();
    words.find(|word| word.eq_ignore_ascii_case("for"))?;
    let path = words.next()?.trim_matches(|c| c == '<' || c == '>' || c == ';');
    Some(path.to_ascii_lowercase())
}

/// The header section's fields, each unfolded onto one line (LF or CRLF line ends).
fn header_fields(message: &[u8]) -> Vec<String> {
    let mut fields: Vec<String> = Vec::new();
    for line in message.split(|&b| b == b'\n') {
        let line = String::from_utf8_lossy(line.strip_suffix(b"\r").unwrap_or(line)).into_owned();
        if line.is_empty() {
            break;
        }
        match (line.starts_with([' ', '\t']), fields.last_mut()) {
            (true, Some(field)) => {
                field.push(' ');
                field.push_str(line.trim_start());
            }
            _ => fields.push(line),
        }
    }
    fields
}

// ---------------------------------------------------------------------------
// Building failure DSNs
// ---------------------------------------------------------------------------

/// One failed recipient of a DSN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DsnRecipient {
    pub address: String,
    /// An RFC 3463 status, e.g. "5.1.1"; a failure DSN needs 5.x.x.
    pub status: String,
    /// The remote reply, e.g. "550 5.1.1 no such user", or "" for none.
    pub diagnostic: String,
}

/// What a DSN reports (RFC 3464 §2.3.3 Action): the MTA gave up, or it is still trying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DsnKind {
    /// Action: failed, with 5.x.x statuses.
    Failure,
    /// Action: delayed, with 4.x.x statuses: a warning while retries go on.
    Delay,
}

/// What a reporting MTA knows when it gives up on a message (or warns that it is late).
#[derive(Debug, Clone, Copy)]
pub struct DsnRequest<'a> {
    pub kind: DsnKind,
    pub reporting_mta: &'a str,
    /// Without the angle brackets.
    pub dsn_message_id: &'a str,
    /// The original envelope sender.
    pub to: &'a str,
    pub original: &'a [u8],
    pub recipients: &'a [DsnRecipient],
    /// When the DSN is written: its Date field.
    pub date_unix_s: u64,
    /// When the reporting MTA accepted the original message: the Arrival-Date field
    /// (RFC 3464 §2.2.5), which is not the DSN's own date.
    pub arrival_unix_s: u64,
}

/// An RFC 3464 failure DSN, built with mail-builder: multipart/report;
/// report-type=delivery-status with (1) a text/plain human-readable part,
/// (2) message/delivery-status (Reporting-MTA, Arrival-Date (when the original
/// arrived: `arrival_unix_s`), then one block per
/// recipient with Final-Recipient, Action: failed, Status, Diagnostic-Code when
/// given), (3) text/rfc822-headers with the original's header section.
/// CRLF line ends; From: MAILER-DAEMON@<reporting_mta>.
///
/// Deterministic: mail-builder would pick a boundary from the clock and thread
/// id, add the current Date and generate a Message-ID, so the boundary is a
/// blake3 digest of the inputs and Date and Message-ID are set explicitly.
/// Every recipient gets Action: failed as given; a status that is not 5.x.x
/// (or no recipient at all) yields a DSN that `parse_dsn` rejects.
pub fn build_dsn(request: &DsnRequest) -> Vec<u8> {
    let human = human_readable_text(request);
    let status = delivery_status_text(request);
    let headers = header_section(request.original);
    let boundary = report_boundary(request, &[human.as_bytes(), status.as_bytes(), &headers]);
    let report = ContentType::new("multipart/report")
        .attribute("report-type", "delivery-status")
        .attribute("boundary", boundary);
    let parts = vec![
        MimePart::new("text/plain", human),
        verbatim_part("message/delivery-status", status.into_bytes()),
        verbatim_part("text/rfc822-headers", headers),
    ];
    dsn_headers(request)
        .body(MimePart::new(report, parts))
        .write_to_vec()
        // Writing into a Vec<u8> cannot fail.
        .unwrap_or_default()
}

/// The DSN's own header fields, all given explicitly (see above).
fn dsn_headers<'x>(request: &DsnRequest) -> MessageBuilder<'x> {
    let from = format!("MAILER-DAEMON@{}", one_line(request.reporting_mta));
    let to: HeaderType<'x> = match request.to.is_empty() {
        true => Raw::new("undisclosed-recipients:;").into(),
        false => Address::from(one_line(request.to)).into(),
    };
    MessageBuilder::new()
        .header("From", Raw::new(from))
        .header("To", to)
        .subject(match request.kind {
            DsnKind::Failure => "Undelivered Mail Returned to Sender",
            DsnKind::Delay => "Delayed Mail (still being retried)",
        })
        .message_id(id_text(request.dsn_message_id))
        .header("Date", Raw::new(rfc5322_date(request.date_unix_s)))
        .header("MIME-Version", Raw::new("1.0"))
        .header("Auto-Submitted", Raw::new("auto-replied"))
}

/// A part written byte for byte: declaring Content-Transfer-Encoding stops
/// mail-builder from re-encoding it (base64 for non-text types, or
/// quoted-printable for long lines), which would hide the fields from readers.
fn verbatim_part(content_type: &'static str, bytes: Vec<u8>) -> MimePart<'static> {
    let encoding = if bytes.is_ascii() { "7bit" } else { "8bit" };
    MimePart::new(content_type, BodyPart::Binary(Cow::Owned(bytes))).transfer_encoding(encoding)
}

/// The human-readable first part.
fn human_readable_text(request: &DsnRequest) -> String {
    let mut text = format!(
        "This is the mail system at host {}.\r\n\r\n\
         {}\r\n\
         Its header section is attached below.\r\n\r\n",
        one_line(request.reporting_mta),
        match request.kind {
            DsnKind::Failure => "Your message could not be delivered to one or more recipients.",
            DsnKind::Delay => "Your message has not been delivered yet; the mail system keeps trying.",
        }
    );
    for r in request.recipients {
        let reason = match r.diagnostic.is_empty() {
            true => format!("status {}", one_line(&r.status)),
            false => one_line(&r.diagnostic),
        };
        text.push_str(&format!("<{}>: {}\r\n", one_line(&r.address), reason));
    }
    text
}

/// The message/delivery-status body: per-message fields, then one block per
/// recipient, each block preceded by a blank line (RFC 3464 section 2.1).
fn delivery_status_text(request: &DsnRequest) -> String {
    let mut text = String::new();
    push_field(
        &mut text,
        "Reporting-MTA",
        &format!("dns; {}", request.reporting_mta),
    );
    push_field(
        &mut text,
        "Arrival-Date",
        &rfc5322_date(request.arrival_unix_s),
    );
    for r in request.recipients {
        text.push_str("\r\n");
        push_field(
            &mut text,
            "Final-Recipient",
            &format!("rfc822; {}", r.address),
        );
        let action = match request.kind {
            DsnKind::Failure => "failed",
            DsnKind::Delay => "delayed",
        };
        push_field(&mut text, "Action", action);
        push_field(&mut text, "Status", &r.status);
        if !r.diagnostic.is_empty() {
            push_field(
                &mut text,
                "Diagnostic-Code",
                &format!("smtp; {}", r.diagnostic),
            );
        }
    }
    text
}

/// Appends `name: value` CRLF, folding before a space once the line passes 76
/// characters so long diagnostics stay within line limits; unfolding (removing
/// the CRLF) restores the value exactly.
fn push_field(text: &mut String, name: &str, value: &str) {
    text.push_str(name);
    text.push_str(": ");
    let mut column = name.len() + 2;
    for c in one_line(value).chars() {
        if c == ' ' && column >= 76 {
            text.push_str("\r\n");
            column = 0;
        }
        text.push(c);
        column += 1;
    }
    text.push_str("\r\n");
}

/// The original's header section (up to the blank line, or everything when
/// there is none) with CRLF line ends, ending in CRLF when not empty.
fn header_section(original: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for line in original.split_inclusive(|&b| b == b'\n') {
        let content = trim_line_end(line);
        if content.is_empty() {
            break;
        }
        out.extend_from_slice(content);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// A line without its LF or CRLF.
fn trim_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// A MIME boundary derived from the inputs (blake3), re-derived in the
/// practically impossible case that it occurs inside a part.
fn report_boundary(request: &DsnRequest, bodies: &[&[u8]]) -> String {
    let mut seed = blake3::Hasher::new();
    let date = request.date_unix_s.to_le_bytes();
    let fields = [
        request.reporting_mta.as_bytes(),
        request.dsn_message_id.as_bytes(),
        request.to.as_bytes(),
        &date,
    ];
    for chunk in fields.iter().chain(bodies) {
        seed.update(&(chunk.len() as u64).to_le_bytes());
        seed.update(chunk);
    }
    let mut boundary = String::new();
    for attempt in 0u32..64 {
        let mut hasher = seed.clone();
        hasher.update(&attempt.to_le_bytes());
        boundary = format!("mc-report-{}", hex(&hasher.finalize().as_bytes()[..12]));
        if !bodies.iter().any(|b| contains(b, boundary.as_bytes())) {
            break;
        }
    }
    boundary
}

/// Whether `needle` occurs in `haystack`.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

// ---------------------------------------------------------------------------
// Checking DSNs
// ---------------------------------------------------------------------------

/// What `parse_dsn` found in a well-formed DSN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DsnReport {
    /// From the returned header section (text/rfc822-headers or
    /// message/rfc822), when present.
    pub original_message_id: Option<String>,
    /// (recipient address, action, status), in order; action lower-case.
    pub recipients: Vec<(String, String, String)>,
    /// The DSN's own Date field, unfolded, as written.
    pub date: Option<String>,
    /// The per-message Arrival-Date of the delivery-status part (RFC 3464 §2.2.5): when the
    /// reporting MTA received the original message.
    pub arrival_date: Option<String>,
}

/// Parses a DSN (mail-parser) and checks its shape: multipart/report with
/// report-type=delivery-status, a message/delivery-status part with a
/// Reporting-MTA and recipient blocks that each have Final-Recipient, Action
/// and Status, where Action=failed needs Status 5.x.x and Action=delayed needs
/// 4.x.x. Returns the (recipient address, action, status) triples, or Err(text)
/// saying what is wrong.
pub fn parse_dsn(message: &[u8]) -> Result<DsnReport, String> {
    let parsed = MessageParser::new()
        .parse(message)
        .ok_or("not a message: no header fields")?;
    check_report_type(&parsed)?;
    let children = report_children(&parsed);
    let status = children
        .iter()
        .find(|p| has_type(p.content_type(), "message", "delivery-status"))
        .ok_or("no message/delivery-status part")?;
    let recipients = parse_delivery_status(status.contents())?;
    let original_message_id = children.iter().find_map(|p| returned_message_id(p));
    let date = header_fields(message).into_iter().find_map(|field| {
        let (name, value) = field.split_once(':')?;
        name.trim().eq_ignore_ascii_case("date").then(|| value.trim().to_string())
    });
    let per_message = field_blocks(&String::from_utf8_lossy(status.contents())).into_iter().next();
    let arrival_date = per_message.and_then(|block| field(&block, "Arrival-Date").map(str::to_string));
    Ok(DsnReport {
        original_message_id,
        recipients,
        date,
        arrival_date,
    })
}

/// The top level must be multipart/report; report-type=delivery-status.
fn check_report_type(message: &Message<'_>) -> Result<(), String> {
    let Some(ct) = message.content_type() else {
        return Err("no Content-Type: text/plain, not multipart/report".to_string());
    };
    if !has_type(Some(ct), "multipart", "report") {
        let subtype = ct.subtype().unwrap_or("");
        return Err(format!(
            "Content-Type is {}/{subtype}, not multipart/report",
            ct.ctype()
        ));
    }
    match ct.attribute("report-type") {
        Some(t) if t.eq_ignore_ascii_case("delivery-status") => Ok(()),
        Some(t) => Err(format!("report-type is {t}, not delivery-status")),
        None => Err("multipart/report without report-type".to_string()),
    }
}

/// The direct children of the top-level multipart.
fn report_children<'m, 'x>(message: &'m Message<'x>) -> Vec<&'m MessagePart<'x>> {
    let ids = message.root_part().sub_parts().unwrap_or_default();
    ids.iter().filter_map(|&id| message.part(id)).collect()
}

/// Whether a (mail-parser, already lower-cased) Content-Type is type/subtype.
fn has_type(ct: Option<&mail_parser::ContentType<'_>>, ctype: &str, subtype: &str) -> bool {
    ct.is_some_and(|ct| ct.ctype() == ctype && ct.subtype() == Some(subtype))
}

/// The Message-ID in a returned header section or returned message.
fn returned_message_id(part: &MessagePart<'_>) -> Option<String> {
    let ct = part.content_type();
    if has_type(ct, "text", "rfc822-headers") || has_type(ct, "message", "global-headers") {
        return message_id(part.contents());
    }
    let nested = part.message()?;
    nested
        .message_id()
        .filter(|id| !id.is_empty())
        .map(str::to_string)
}

/// The recipient triples of a delivery-status body, checked.
fn parse_delivery_status(body: &[u8]) -> Result<Vec<(String, String, String)>, String> {
    let text = String::from_utf8_lossy(body);
    let blocks = field_blocks(&text);
    let Some((per_message, per_recipient)) = blocks.split_first() else {
        return Err("empty message/delivery-status part".to_string());
    };
    if field(per_message, "Reporting-MTA").is_none() {
        return Err("per-message fields lack Reporting-MTA".to_string());
    }
    if per_recipient.is_empty() {
        return Err("no per-recipient fields".to_string());
    }
    per_recipient
        .iter()
        .enumerate()
        .map(|(i, block)| recipient_triple(i + 1, block))
        .collect()
}

/// A recipient block's (address, action, status), checked against RFC 3464.
fn recipient_triple(
    number: usize,
    block: &[(String, String)],
) -> Result<(String, String, String), String> {
    let need = |name: &str| {
        field(block, name).ok_or_else(|| format!("recipient block {number} lacks {name}"))
    };
    let recipient = need("Final-Recipient")?;
    let address = match recipient.split_once(';') {
        Some((_, addr)) if !addr.trim().is_empty() => addr.trim().to_string(),
        _ => {
            return Err(format!(
                "recipient block {number}: bad Final-Recipient {recipient:?}"
            ))
        }
    };
    let action = first_word(need("Action")?).to_ascii_lowercase();
    let status = first_word(need("Status")?).to_string();
    check_action_status(&address, &action, &status)?;
    Ok((address, action, status))
}

/// RFC 3464 section 2.3.3 actions and their status classes.
fn check_action_status(address: &str, action: &str, status: &str) -> Result<(), String> {
    let class = status_class(status)
        .ok_or_else(|| format!("{address}: Status {status:?} is not an x.y.z status code"))?;
    let wanted = match action {
        "failed" => '5',
        "delayed" => '4',
        "delivered" | "relayed" | "expanded" => return Ok(()),
        _ => return Err(format!("{address}: unknown Action {action:?}")),
    };
    if class != wanted {
        return Err(format!(
            "{address}: Action {action} needs Status {wanted}.x.x, got {status}"
        ));
    }
    Ok(())
}

/// The class digit of an RFC 3463 status code (2, 4 or 5 "." 1-3 digits "."
/// 1-3 digits), or None when the code is malformed.
fn status_class(status: &str) -> Option<char> {
    let mut parts = status.split('.');
    let (class, subject, detail) = (parts.next()?, parts.next()?, parts.next()?);
    let digits = |s: &str| (1..=3).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit());
    let ok = parts.next().is_none()
        && matches!(class, "2" | "4" | "5")
        && digits(subject)
        && digits(detail);
    ok.then(|| class.chars().next()).flatten()
}

/// The first white-space-separated word (drops trailing comments).
fn first_word(value: &str) -> &str {
    value.split_whitespace().next().unwrap_or("")
}

/// The value of a field in a block; names compare without case.
fn field<'b>(block: &'b [(String, String)], name: &str) -> Option<&'b str> {
    block
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Splits delivery-status text into blank-line-separated blocks of unfolded
/// (name, trimmed value) fields.
fn field_blocks(text: &str) -> Vec<Vec<(String, String)>> {
    let mut blocks = Vec::new();
    let mut current: Vec<(String, String)> = Vec::new();
    for line in text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)) {
        if line.trim().is_empty() {
            if !current.is_empty() {
                blocks.push(std::mem::take(&mut current));
            }
        } else if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = current.last_mut() {
                value.push_str(line);
            }
        } else if let Some((name, value)) = line.split_once(':') {
            current.push((name.trim().to_string(), value.to_string()));
        }
    }
    if !current.is_empty() {
        blocks.push(current);
    }
    for (_, value) in blocks.iter_mut().flatten() {
        *value = value.trim().to_string();
    }
    blocks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope<'a>(to: &'a [String]) -> Envelope<'a> {
        Envelope {
            message_id: "m1.42@sim.test",
            from: "alice@a.test",
            to,
            subject: "Hello città",
            date_unix_s: 1_700_000_000,
            header_from: None,
            reply_to: None,
            sender: None,
        }
    }

    fn plain() -> Fixture {
        embedded_fixtures()
            .into_iter()
            .find(|f| f.name == "plain")
            .expect("plain fixture")
    }

    fn two_recipients() -> Vec<DsnRecipient> {
        vec![
            DsnRecipient {
                address: "bob@b.test".into(),
                status: "5.1.1".into(),
                diagnostic: "550 5.1.1 no such user".into(),
            },
            DsnRecipient {
                address: "carol@c.test".into(),
                status: "5.2.2".into(),
                diagnostic: String::new(),
            },
        ]
    }

    fn dsn(original: &[u8], recipients: &[DsnRecipient]) -> Vec<u8> {
        build_dsn(&DsnRequest {
            kind: DsnKind::Failure,
            reporting_mta: "mx.b.test",
            dsn_message_id: "dsn.1@mx.b.test",
            to: "alice@a.test",
            original,
            recipients,
            date_unix_s: 1_700_000_100,
            arrival_unix_s: 1_700_000_000,
        })
    }

    #[test]
    fn dates_are_rfc5322() {
        assert_eq!(rfc5322_date(0), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(rfc5322_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 +0000");
        assert_eq!(
            rfc5322_date(1_700_000_000),
            "Tue, 14 Nov 2023 22:13:20 +0000"
        );
        assert_eq!(rfc5322_date(u64::MAX), "Fri, 31 Dec 9999 23:59:59 +0000");
    }

    #[test]
    fn compose_message_id_and_digest_agree() {
        let to = vec!["bob@b.test".to_string(), "carol@c.test".to_string()];
        let message = compose(&envelope(&to), &plain());
        assert_eq!(message_id(&message).as_deref(), Some("m1.42@sim.test"));
        assert_eq!(compose(&envelope(&to), &plain()), message);
        let parsed = MessageParser::new().parse(&message).expect("parses");
        assert_eq!(parsed.subject(), Some("Hello città"));
        assert_eq!(parsed.to().map(|a| a.iter().count()), Some(2));
        assert!(message.starts_with(b"Message-ID: <m1.42@sim.test>\r\nDate: Tue, 14 Nov 2023"));
        assert_eq!(content_digest(&message).len(), 16);
        assert_eq!(content_digest(&message), content_digest(&message.clone()));
    }

    #[test]
    fn digest_ignores_only_leading_trace_fields() {
        let to = vec!["bob@b.test".to_string()];
        let message = compose(&envelope(&to), &plain());
        let digest = content_digest(&message);
        let mut received =
            b"Return-Path: <a@b>\r\nReceived: from x\r\n by y\r\n\tfor <bob@b.test>\r\n".to_vec();
        received.extend_from_slice(&message);
        assert_eq!(content_digest(&received), digest);
        let mut lf = b"received : from x\n by y\n".to_vec();
        lf.extend_from_slice(&message);
        assert_eq!(content_digest(&lf), digest);
        let mut other = b"X-Spam: yes\r\n".to_vec();
        other.extend_from_slice(&message);
        assert_ne!(content_digest(&other), digest);
        let mut changed = message.clone();
        changed.extend_from_slice(b"more\r\n");
        assert_ne!(content_digest(&changed), digest);
        // A continuation line with no trace field before it is content.
        let mut folded = b" stray\r\n".to_vec();
        folded.extend_from_slice(&message);
        assert_ne!(content_digest(&folded), digest);
    }

    #[test]
    fn every_fixture_loads_and_composes() {
        let fixtures = embedded_fixtures();
        assert_eq!(fixtures.len(), EMBEDDED.len());
        let to = vec!["bob@b.test".to_string()];
        for fixture in &fixtures {
            assert!(fixture.bytes.ends_with(b"\r\n"), "{}", fixture.name);
            assert!(!fixture
                .bytes
                .windows(2)
                .any(|w| w[1] == b'\n' && w[0] != b'\r'));
            let message = compose(&envelope(&to), fixture);
            let parsed = MessageParser::new().parse(&message).expect("parses");
            assert_eq!(
                parsed.message_id(),
                Some("m1.42@sim.test"),
                "{}",
                fixture.name
            );
            assert!(parsed.content_type().is_some(), "{}", fixture.name);
        }
    }

    #[test]
    fn fixture_contents_survive() {
        let fixtures = embedded_fixtures();
        let get = |n: &str| {
            fixtures
                .iter()
                .find(|f| f.name == n)
                .expect(n)
                .bytes
                .clone()
        };
        let eight = String::from_utf8(get("eight-bit")).expect("utf-8");
        assert!(eight.contains("perché la città"));
        let dots = get("leading-dots");
        assert!(dots.windows(5).any(|w| w == b"\r\n.\r\n"));
        let long = get("long-lines");
        let lengths: Vec<usize> = long
            .split(|&b| b == b'\n')
            .map(|l| l.len().saturating_sub(1))
            .collect();
        assert!(lengths.contains(&998) && lengths.contains(&997));
        // A 998-octet line that starts with a dot: 999 octets once stuffed, still allowed.
        assert!(long.split(|&b| b == b'\n').any(|l| l.len() == 999 && l.starts_with(b".")));
        let mixed = compose(&envelope(&[]), &fixtures[2]);
        let parsed = MessageParser::new().parse(&mixed).expect("parses");
        let attachment = parsed.attachment(0).expect("attachment");
        assert_eq!(attachment.contents().len(), 300);
    }

    #[test]
    fn fixture_errors_are_named() {
        let err = |t: &str| fixture_from_text("x", t).expect_err(t);
        assert!(err("Content-Type: text/plain\nno blank line\n").contains("no blank line"));
        assert!(err(&format!("A: b\n\n{}\n", "x".repeat(999))).contains("998"));
        assert!(err("A: b\r\r\n\nbody\n").contains("bare CR"));
        assert!(err("Subject: hi\n\nbody\n").contains("compose"));
        assert!(err("not a header\n\nbody\n").contains("not a header"));
        assert!(err("\nbody\n").contains("empty header"));
        let ok = fixture_from_text("x", "A: b\r\n c\n\nbody").expect("loads");
        assert_eq!(ok.bytes, b"A: b\r\n c\r\n\r\nbody\r\n");
    }

    #[test]
    fn dsn_round_trip_two_recipients() {
        let to = vec!["bob@b.test".to_string(), "carol@c.test".to_string()];
        let mut original = b"Received: from x by y\r\n".to_vec();
        original.extend(compose(&envelope(&to), &plain()));
        let bytes = dsn(&original, &two_recipients());
        assert!(
            !bytes.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r'),
            "CRLF only"
        );
        assert!(bytes.starts_with(b"From: MAILER-DAEMON@mx.b.test\r\n"));
        let report = parse_dsn(&bytes).expect("valid DSN");
        assert_eq!(
            report.original_message_id.as_deref(),
            Some("m1.42@sim.test")
        );
        let triple = |a: &str, s: &str| (a.to_string(), "failed".to_string(), s.to_string());
        assert_eq!(
            report.recipients,
            vec![
                triple("bob@b.test", "5.1.1"),
                triple("carol@c.test", "5.2.2")
            ]
        );
        assert_eq!(message_id(&bytes).as_deref(), Some("dsn.1@mx.b.test"));
    }

    #[test]
    fn null_sender_mail_has_a_valid_from() {
        let to = vec!["bob@b.test".to_string()];
        let bounce = Envelope { from: "", ..envelope(&to) };
        let bytes = compose(&bounce, &plain());
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("\r\nFrom: <MAILER-DAEMON@sim.test>\r\n") || text.contains("\r\nFrom: MAILER-DAEMON@sim.test\r\n"), "{text}");
        let parsed = MessageParser::new().parse(&bytes).expect("parses");
        let from = parsed.from().and_then(|from| from.first()).and_then(|from| from.address());
        assert_eq!(from, Some("MAILER-DAEMON@sim.test"));
    }

    #[test]
    fn list_mail_names_its_author_its_agent_and_where_replies_go() {
        let to = vec!["bob@b.test".to_string()];
        let list = Envelope { from: "owner-list+7@a.test", header_from: Some("alice@a.test"), reply_to: Some("list@a.test"), sender: Some("owner-list@a.test"), ..envelope(&to) };
        let bytes = compose(&list, &plain());
        assert_eq!(header_address(&bytes, "From").as_deref(), Some("alice@a.test"));
        assert_eq!(header_address(&bytes, "Reply-To").as_deref(), Some("list@a.test"));
        assert_eq!(header_address(&bytes, "Sender").as_deref(), Some("owner-list@a.test"));
    }

    /// The DSN's Date is when it was written; its Arrival-Date is when the original arrived.
    #[test]
    fn dsn_dates_itself_and_the_arrival_apart() {
        let original = compose(&envelope(&["bob@b.test".to_string()]), &plain());
        let text = String::from_utf8(dsn(&original, &two_recipients())).expect("ascii");
        assert!(text.contains("\r\nDate: Tue, 14 Nov 2023 22:15:00 +0000\r\n"), "{text}");
        assert!(text.contains("\r\nArrival-Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n"), "{text}");
    }

    #[test]
    fn dsn_is_deterministic() {
        let original = compose(&envelope(&["bob@b.test".to_string()]), &plain());
        let first = dsn(&original, &two_recipients());
        assert_eq!(dsn(&original, &two_recipients()), first);
        let text = String::from_utf8_lossy(&first);
        assert!(text.contains("boundary=\"mc-report-"), "{text}");
    }

    #[test]
    fn dsn_folds_long_diagnostics() {
        let long = vec![DsnRecipient {
            address: "bob@b.test".into(),
            status: "5.7.1".into(),
            diagnostic: format!("550 5.7.1 {}", "rejected by policy ".repeat(20)),
        }];
        let bytes = dsn(b"Message-ID: <o@a.test>\r\n\r\nbody\r\n", &long);
        assert!(bytes.split(|&b| b == b'\n').all(|l| l.len() <= 100));
        let report = parse_dsn(&bytes).expect("valid DSN");
        assert_eq!(report.recipients[0].2, "5.7.1");
        assert_eq!(report.original_message_id.as_deref(), Some("o@a.test"));
    }

    #[test]
    fn parse_dsn_rejects_plain_text() {
        let message = compose(&envelope(&["bob@b.test".to_string()]), &plain());
        let err = parse_dsn(&message).expect_err("not a DSN");
        assert!(err.contains("text/plain"), "{err}");
        assert!(parse_dsn(b"").is_err());
        assert!(parse_dsn(b"garbage without structure").is_err());
    }

    #[test]
    fn parse_dsn_rejects_failed_with_4xx() {
        let bytes = b"From: MAILER-DAEMON@mx.test\r\n\
Message-ID: <bad@mx.test>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/report; report-type=delivery-status; boundary=\"b1\"\r\n\
\r\n\
--b1\r\n\
Content-Type: text/plain\r\n\
\r\n\
Temporary trouble reported as a failure.\r\n\
--b1\r\n\
Content-Type: message/delivery-status\r\n\
\r\n\
Reporting-MTA: dns; mx.test\r\n\
\r\n\
Final-Recipient: rfc822; bob@b.test\r\n\
Action: failed\r\n\
Status: 4.4.1\r\n\
--b1--\r\n";
        let err = parse_dsn(bytes).expect_err("failed needs 5.x.x");
        assert!(err.contains("5.x.x"), "{err}");
        let delayed = String::from_utf8_lossy(bytes).replace("Action: failed", "Action: delayed");
        let report = parse_dsn(delayed.as_bytes()).expect("delayed with 4.4.1 is fine");
        assert_eq!(report.recipients[0].1, "delayed");
        assert_eq!(report.original_message_id, None);
    }

    #[test]
    fn parse_dsn_rejects_missing_fields() {
        let good = String::from_utf8(dsn(b"A: b\r\n\r\n", &two_recipients())).expect("ascii");
        let no_status = good.replacen("Status: 5.2.2", "X-Status: 5.2.2", 1);
        assert!(parse_dsn(no_status.as_bytes())
            .expect_err("no Status")
            .contains("Status"));
        let wrong_type = good.replace("delivery-status\"", "disposition-notification\"");
        assert!(parse_dsn(wrong_type.as_bytes()).is_err());
    }

    #[test]
    fn hostile_inputs_do_not_inject_or_panic() {
        let to = vec!["a@b\r\nBcc: evil@x".to_string()];
        let env = Envelope {
            message_id: "<id>\r\nX: y",
            from: "",
            to: &to,
            subject: "s\r\nX-Evil: 1",
            date_unix_s: u64::MAX,
            header_from: None,
            reply_to: Some("r@x\r\nX-Evil: 2"),
            sender: None,
        };
        let message = compose(&env, &plain());
        assert!(!message.windows(7).any(|w| w == b"\nX-Evil"));
        assert!(!message.windows(5).any(|w| w == b"\nBcc:"));
        let bad = vec![DsnRecipient {
            address: "x\r\ny".into(),
            status: "".into(),
            diagnostic: "\n".into(),
        }];
        let bytes = build_dsn(&DsnRequest {
            kind: DsnKind::Failure,
            reporting_mta: "",
            dsn_message_id: "",
            to: "",
            original: &[0xff, b'\n', b'\r'],
            recipients: &bad,
            date_unix_s: 0,
            arrival_unix_s: 0,
        });
        assert!(parse_dsn(&bytes).is_err());
        let _ = content_digest(b"Received:\n \n");
        let _ = message_id(b"\xff\xfe");
    }

    /// A tiny deterministic generator for the mutation test (no extra crates).
    fn next(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    /// Flips, deletes and inserts octets (CR, LF, '-', ':' favoured).
    fn mutate(seed: &[u8], state: &mut u64) -> Vec<u8> {
        let mut bytes = seed.to_vec();
        for _ in 0..1 + next(state) % 8 {
            let at = (next(state) as usize) % (bytes.len() + 1);
            let byte = b"\r\n-:; \xff.a"[(next(state) % 9) as usize];
            match next(state) % 4 {
                0 if at < bytes.len() => bytes[at] = byte,
                1 if at < bytes.len() => {
                    bytes.remove(at);
                }
                2 => bytes.truncate(at),
                _ => bytes.insert(at, byte),
            }
        }
        bytes
    }

    #[test]
    fn mutated_inputs_do_not_panic() {
        let original = compose(&envelope(&["bob@b.test".to_string()]), &plain());
        let mut seeds = vec![dsn(&original, &two_recipients())];
        seeds.extend(
            embedded_fixtures()
                .iter()
                .map(|f| compose(&envelope(&[]), f)),
        );
        let mut state = 0x9e37_79b9_7f4a_7c15;
        for seed in &seeds {
            for _ in 0..400 {
                let input = mutate(seed, &mut state);
                let _ = parse_dsn(&input);
                let _ = message_id(&input);
                let _ = content_digest(&input);
                let _ = fixture_from_text("m", &String::from_utf8_lossy(&input));
            }
        }
    }

    /// The Message-ID-only parser against the full one, on the mutated seeds and on field soup
    /// (folds, quotes, comments, encoded words, repeated and broken Message-IDs).
    #[test]
    fn message_id_reads_what_the_full_parse_reads() {
        let full = |input: &[u8]| message_id_with(&MessageParser::new(), input);
        let original = compose(&envelope(&["bob@b.test".to_string()]), &plain());
        let mut seeds = vec![original.clone(), dsn(&original, &two_recipients())];
        seeds.extend(embedded_fixtures().iter().map(|f| compose(&envelope(&[]), f)));
        let mut state = 0x2545_f491_4f6c_dd1d;
        for seed in &seeds {
            assert_eq!(message_id(seed), full(seed));
            for _ in 0..3000 {
                let input = mutate(seed, &mut state);
                assert_eq!(message_id(&input), full(&input), "{:?}", String::from_utf8_lossy(&input));
            }
        }
        let fragments: &[&[u8]] = &[
            b"Message-ID: <a@b>\r\n", b"message-id:<c@d>\n", b"Message-Id: (comment) <e@f> (x)\r\n", b"Message-ID:\r\n <folded@x>\r\n",
            b"Message-ID: no-brackets@x\r\n", b"Message-ID: <a@b> <c@d>\r\n", b"Message-ID: <unterminated\r\n", b"Message-ID: \"q<x>\" <q@x>\r\n",
            b"From: \"Quoted\r\n name\" <a@b>\r\n", b"To: group: a@b, (c\r\n) d@e;\r\n", b"From: =?utf-8?q?=C3=A9t=C3=A9?= <x@y>\r\n",
            b"Subject: =?utf-8?b?w6l0w6k=?=\r\n =?utf-8?q?more?=\r\n", b"Received: from a.test ([10.0.0.1])\r\n by b.test with ESMTP id 1;\r\n Mon, 1 Jan 2024 00:00:00 +0000\r\n",
            b"Received: (\r\n", b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n", b"Date: (x\r\n", b"Content-Type: multipart/mixed;\r\n boundary=\"b\r\n\"\r\n",
            b"Content-Type: text/plain; charset=\"\r\n", b"Keywords: a, \"b\r\n c\", d\r\n", b"References: <a@b>\r\n\t<c@d>\r\n", b"X-Other: anything\r\n",
            b"no colon here\r\n", b" leading space\r\n", b"\tx\r\n", b"\r\n", b"\n", b"\r", b"(", b"\"", b"<", b">", b"=?", b"?=", b"Message-ID:", b"\xff\xfe",
        ];
        for _ in 0..20_000 {
            let mut input = Vec::new();
            for _ in 0..next(&mut state) % 9 {
                input.extend_from_slice(fragments[(next(&mut state) % fragments.len() as u64) as usize]);
            }
            assert_eq!(message_id(&input), full(&input), "{:?}", String::from_utf8_lossy(&input));
        }
    }

    #[test]
    fn a_dsn_report_names_its_date_and_the_arrival_of_the_original() {
        let original = compose(&envelope(&["bob@b.test".to_string()]), &plain());
        let report = parse_dsn(&dsn(&original, &two_recipients())).unwrap();
        assert_eq!(report.date.as_deref(), Some(rfc5322_date(1_700_000_100).as_str()));
        assert_eq!(report.arrival_date.as_deref(), Some(rfc5322_date(1_700_000_000).as_str()));
    }

    #[test]
    fn the_longest_line_is_measured_without_line_ends() {
        assert_eq!(longest_line(b"ab\r\n.cde\r\n"), 4);
        assert_eq!(longest_line(b"abc\nde\n"), 3);
        let fixture = embedded_fixtures().into_iter().find(|f| f.name == "long-lines").unwrap();
        assert_eq!(longest_line(&fixture.bytes), MAX_LINE_OCTETS);
    }

    #[test]
    fn trace_recipients_are_the_for_clauses_of_received_fields() {
        let message = b"Received: from a (b)\r\n\tby mx id 1\r\n\tfor <Anna@L.test>;\r\n\tMon, 23 Jan 2023 00:00:00 +0000\r\n\
Received: from c by mx id 2; Mon, 23 Jan 2023 00:00:00 +0000\r\n\
Subject: for <nobody@x.test>\r\n\r\nReceived: for <body@x.test>;\r\n";
        assert_eq!(trace_recipients(message), vec!["anna@l.test".to_string()]);
        assert!(trace_recipients(b"Subject: x\r\n\r\n").is_empty());
    }
}
