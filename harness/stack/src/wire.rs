//! Wire formats of the mail stack: SMTP/LMTP commands, SMTP replies, DATA
//! framing (dot-stuffing) and POP3 commands.
//!
//! This module is hand-written on purpose instead of relying on a protocol
//! crate. The DATA framing rules are where the SMTP smuggling class of bugs
//! lives: a sender and a receiver that disagree about where a message ends
//! let an attacker hide a second message inside the first. Keeping the code
//! here puts those rules under our control, and the property tests at the
//! bottom of this file prove them: only the exact sequence CRLF "." CRLF
//! ends DATA. A bare LF ends a line for its length and its stuffing dot,
//! never DATA; a bare CR is text.
//!
//! Everything here is pure and I/O-free so that the simulator stays
//! deterministic, and no function panics on any input: the peer of a mail
//! server is by definition untrusted.

/// Longest SMTP command line, CRLF included (RFC 5321 4.5.3.1.4).
pub const MAX_COMMAND_LINE: usize = 512;

/// Longest SMTP text line in DATA, CRLF included (RFC 5321 4.5.3.1.6).
pub const MAX_TEXT_LINE: usize = 1000;

/// Longest POP3 command line, CRLF included (RFC 2449 section 4).
pub const POP3_MAX_COMMAND_LINE: usize = 255;

/// Longest mailbox address we accept (RFC 5321 4.5.3.1.3 limits a path to
/// 256 octets, which leaves 254 for the address between the brackets).
const MAX_ADDRESS: usize = 254;

/// Most lines a single reply may have; a peer that sends more is broken or
/// hostile, and an unbounded reply would be unbounded memory.
const MAX_REPLY_LINES: usize = 64;

// ---------------------------------------------------------------------------
// SMTP / LMTP commands
// ---------------------------------------------------------------------------

/// One SMTP or LMTP command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Ehlo(String),
    Helo(String),
    Lhlo(String),
    /// `from` is "" for the null reverse-path `<>`.
    Mail {
        from: String,
        params: Vec<(String, Option<String>)>,
    },
    Rcpt {
        to: String,
        params: Vec<(String, Option<String>)>,
    },
    Data,
    /// RFC 3030: a chunk of exactly `size` octets follows the command line; `last` ends the
    /// message.
    Bdat {
        size: usize,
        last: bool,
    },
    Rset,
    Noop,
    Quit,
    Vrfy(String),
    Help,
}

/// Why a command line was refused; the comment gives the reply code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandError {
    /// 500: the line is longer than `MAX_COMMAND_LINE`.
    TooLong,
    /// 500: the verb is unknown.
    Unrecognized,
    /// 501: the verb is known but its arguments are wrong.
    Syntax(&'static str),
}

/// Parses one command line given WITHOUT its CRLF.
///
/// Trailing spaces and tabs are ignored, because some clients pad their
/// lines and refusing them would gain nothing.
pub fn parse_command(line: &[u8]) -> Result<Command, CommandError> {
    if line.len() > MAX_COMMAND_LINE - 2 {
        return Err(CommandError::TooLong);
    }
    let text = checked_text(line).map_err(CommandError::Syntax)?;
    let text = text.trim_end_matches([' ', '\t']);
    let (verb, arg) = match text.split_once(' ') {
        Some((verb, arg)) => (verb, arg.trim_start_matches(' ')),
        None => (text, ""),
    };
    dispatch_command(&verb.to_ascii_uppercase(), arg)
}

/// Decodes a protocol line as UTF-8 and refuses control characters, which
/// have no business in a command and could corrupt logs or later framing.
fn checked_text(line: &[u8]) -> Result<&str, &'static str> {
    let text = std::str::from_utf8(line).map_err(|_| "line is not valid UTF-8")?;
    if text.chars().any(|c| c.is_control() && c != '\t') {
        return Err("control character in command line");
    }
    Ok(text)
}

/// Maps an upper-cased verb and its argument text to a command.
fn dispatch_command(verb: &str, arg: &str) -> Result<Command, CommandError> {
    match verb {
        "EHLO" => parse_domain(arg).map(Command::Ehlo),
        "HELO" => parse_domain(arg).map(Command::Helo),
        "LHLO" => parse_domain(arg).map(Command::Lhlo),
        "MAIL" => parse_mail(arg),
        "RCPT" => parse_rcpt(arg),
        "DATA" => no_argument(arg, Command::Data),
        "BDAT" => parse_bdat(arg),
        "RSET" => no_argument(arg, Command::Rset),
        "QUIT" => no_argument(arg, Command::Quit),
        // RFC 5321 4.1.1.9 and 4.1.1.8 allow an argument and say to ignore it.
        "NOOP" => Ok(Command::Noop),
        "HELP" => Ok(Command::Help),
        "VRFY" if arg.is_empty() => Err(CommandError::Syntax("VRFY needs an argument")),
        "VRFY" => Ok(Command::Vrfy(arg.to_string())),
        _ => Err(CommandError::Unrecognized),
    }
}

/// `BDAT <chunk-size> [LAST]` (RFC 3030 §3): the size is digits only.
fn parse_bdat(arg: &str) -> Result<Command, CommandError> {
    let mut words = arg.split(' ').filter(|word| !word.is_empty());
    let size = words.next().ok_or(CommandError::Syntax("BDAT needs a chunk size"))?;
    // 20 digits hold any usize; a longer number is a syntax error, not an overflow.
    if size.is_empty() || size.len() > 20 || !size.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CommandError::Syntax("the chunk size must be a decimal number"));
    }
    let size = size.parse::<usize>().map_err(|_| CommandError::Syntax("the chunk size is too large"))?;
    let last = match words.next() {
        None => false,
        Some(word) if word.eq_ignore_ascii_case("LAST") => true,
        Some(_) => return Err(CommandError::Syntax("BDAT takes a size and LAST only")),
    };
    if words.next().is_some() {
        return Err(CommandError::Syntax("BDAT takes a size and LAST only"));
    }
    Ok(Command::Bdat { size, last })
}

/// Returns `command` only when no argument was given.
fn no_argument(arg: &str, command: Command) -> Result<Command, CommandError> {
    if arg.is_empty() {
        Ok(command)
    } else {
        Err(CommandError::Syntax("this command takes no argument"))
    }
}

/// Checks the single domain (or address literal) argument of EHLO/HELO/LHLO.
fn parse_domain(arg: &str) -> Result<String, CommandError> {
    if arg.is_empty() {
        return Err(CommandError::Syntax("a domain argument is required"));
    }
    if !arg.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(CommandError::Syntax(
            "the domain must be one printable ASCII word",
        ));
    }
    Ok(arg.to_string())
}

/// Parses the argument of `MAIL FROM:<reverse-path> [params]`.
fn parse_mail(arg: &str) -> Result<Command, CommandError> {
    let (path, params) = split_path_argument(arg, "FROM:")?;
    // The null reverse-path is how bounces avoid bounce loops (RFC 5321 4.5.5).
    if !path.is_empty() {
        check_mailbox(path)?;
    }
    let params = parse_params(params)?;
    Ok(Command::Mail {
        from: path.to_string(),
        params,
    })
}

/// Parses the argument of `RCPT TO:<forward-path> [params]`.
fn parse_rcpt(arg: &str) -> Result<Command, CommandError> {
    let (path, params) = split_path_argument(arg, "TO:")?;
    if path.is_empty() {
        return Err(CommandError::Syntax(
            "the null path is not a valid recipient",
        ));
    }
    // RFC 5321 4.5.1 requires accepting the bare "Postmaster" recipient.
    if !path.eq_ignore_ascii_case("postmaster") {
        check_mailbox(path)?;
    }
    let params = parse_params(params)?;
    Ok(Command::Rcpt {
        to: path.to_string(),
        params,
    })
}

/// Splits `KEYWORD<path> params` into the path (without brackets) and the
/// parameter text. One space after the colon is tolerated because many real
/// clients send `MAIL FROM: <a@b>`; more than that is a syntax error.
fn split_path_argument<'a>(
    arg: &'a str,
    keyword: &str,
) -> Result<(&'a str, &'a str), CommandError> {
    let rest = strip_prefix_ignore_case(arg, keyword).ok_or(CommandError::Syntax(
        "expected FROM:<address> or TO:<address>",
    ))?;
    let rest = rest.strip_prefix(' ').unwrap_or(rest);
    let rest = rest
        .strip_prefix('<')
        .ok_or(CommandError::Syntax("the address must be enclosed in <>"))?;
    let (path, after) = rest
        .split_once('>')
        .ok_or(CommandError::Syntax("the address must be enclosed in <>"))?;
    if after.is_empty() {
        return Ok((path, ""));
    }
    let params = after
        .strip_prefix(' ')
        .ok_or(CommandError::Syntax("expected a space after the address"))?;
    Ok((path, params))
}

/// `str::strip_prefix` without regard to ASCII case; `get` keeps this safe
/// when the prefix length falls inside a multi-byte character.
fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix) {
        text.get(prefix.len()..)
    } else {
        None
    }
}

/// Checks that `path` is a plain `local@domain` mailbox.
fn check_mailbox(path: &str) -> Result<(), CommandError> {
    if path.len() > MAX_ADDRESS {
        return Err(CommandError::Syntax("the address is too long"));
    }
    let printable = path
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b'<' && b != b'>');
    if !printable {
        return Err(CommandError::Syntax("the address has an invalid character"));
    }
    // Source routes (`@relay:user@host`) are obsolete (RFC 5321 appendix C);
    // refusing them keeps every accepted address a plain mailbox.
    if path.starts_with('@') {
        return Err(CommandError::Syntax("source routes are not supported"));
    }
    // The last '@' separates the domain, since a quoted local part may hold '@'.
    match path.rsplit_once('@') {
        Some((local, domain)) if !local.is_empty() && !domain.is_empty() => Ok(()),
        _ => Err(CommandError::Syntax("the address must be local@domain")),
    }
}

/// Parses space-separated ESMTP parameters (`KEY` or `KEY=VALUE`).
fn parse_params(text: &str) -> Result<Vec<(String, Option<String>)>, CommandError> {
    text.split(' ')
        .filter(|word| !word.is_empty())
        .map(parse_param)
        .collect()
}

/// Parses one ESMTP parameter; the key is upper-cased because keywords are
/// case-insensitive and callers should not have to care.
fn parse_param(word: &str) -> Result<(String, Option<String>), CommandError> {
    let (key, value) = match word.split_once('=') {
        Some((key, value)) => (key, Some(value)),
        None => (word, None),
    };
    // esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")  (RFC 5321 4.1.2)
    let key_ok = key
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric())
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if !key_ok {
        return Err(CommandError::Syntax("invalid parameter keyword"));
    }
    // esmtp-value = 1*(%d33-60 / %d62-126), widened to UTF-8 by RFC 6531.
    let value_ok = |v: &str| !v.is_empty() && v.chars().all(|c| !c.is_whitespace() && c != '=');
    match value {
        Some(v) if !value_ok(v) => Err(CommandError::Syntax("invalid parameter value")),
        _ => Ok((key.to_ascii_uppercase(), value.map(str::to_string))),
    }
}

// ---------------------------------------------------------------------------
// SMTP replies
// ---------------------------------------------------------------------------

/// An SMTP reply (RFC 5321 4.2) with an optional RFC 3463 enhanced code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub enhanced: Option<String>,
    pub lines: Vec<String>,
}

impl Reply {
    /// Builds a reply; `enhanced` "" means none, and `text` is split on '\n'
    /// into lines so that multi-line replies (EHLO) are easy to write.
    #[must_use]
    pub fn new(code: u16, enhanced: &str, text: &str) -> Reply {
        let enhanced = (!enhanced.is_empty()).then(|| enhanced.to_string());
        let lines = text
            .split('\n')
            .map(|line| line.strip_suffix('\r').unwrap_or(line).to_string())
            .collect();
        Reply {
            code,
            enhanced,
            lines,
        }
    }

    /// The reply class: 2 success, 3 intermediate, 4 transient, 5 permanent.
    #[must_use]
    pub fn class(&self) -> u16 {
        self.code / 100
    }

    /// Encodes the reply with CRLF line ends, `-` after the code on every
    /// line but the last, and the enhanced code in front of every line's text.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let last = self.lines.len().saturating_sub(1);
        if self.lines.is_empty() {
            // A reply always has at least one line on the wire.
            self.encode_line(&mut out, "", true);
        }
        for (index, line) in self.lines.iter().enumerate() {
            self.encode_line(&mut out, line, index == last);
        }
        out
    }

    /// "250 2.0.0 text" for the last line, used in session histories.
    #[must_use]
    pub fn summary(&self) -> String {
        let last = self.lines.last().map_or("", String::as_str);
        let text = self.line_text(last);
        if text.is_empty() {
            format!("{:03}", self.code)
        } else {
            format!("{:03} {}", self.code, text)
        }
    }

    /// Writes one reply line; the bare "250" form for an empty last line is
    /// what RFC 5321 4.2 grammar gives (`Reply-code [ SP textstring ]`).
    fn encode_line(&self, out: &mut Vec<u8>, line: &str, last: bool) {
        use std::io::Write as _;
        let text = self.line_text(line);
        let separator = if last { ' ' } else { '-' };
        // Written into `out` directly (a Vec cannot fail to take it): no string per line.
        let _ = if last && text.is_empty() {
            write!(out, "{:03}\r\n", self.code)
        } else {
            write!(out, "{:03}{}{}\r\n", self.code, separator, text)
        };
    }

    /// The text of one line as it goes on the wire. CR and LF become spaces
    /// so that no reply text can ever inject an extra reply line.
    fn line_text(&self, line: &str) -> String {
        let text = match self.enhanced.as_deref() {
            Some(code) if !code.is_empty() && line.is_empty() => code.to_string(),
            Some(code) if !code.is_empty() => [code, " ", line].concat(),
            _ => line.to_string(),
        };
        // Copied again only when there is something to replace (there seldom is).
        if text.contains(['\r', '\n']) {
            text.replace(['\r', '\n'], " ")
        } else {
            text
        }
    }
}

/// Why a reply line was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyError {
    Malformed(String),
    TooManyLines,
}

/// Incremental reply reader: feed it one line at a time (without CRLF); it
/// returns `Some(reply)` on the last line. After an error it forgets the
/// partial reply, so the next line starts a new one.
#[derive(Debug, Default)]
pub struct ReplyParser {
    pending: Option<Reply>,
}

/// One parsed reply line before it joins a reply.
struct ReplyLine {
    code: u16,
    last: bool,
    text: String,
}

impl ReplyParser {
    /// Feeds one line; see the type documentation.
    pub fn feed_line(&mut self, line: &[u8]) -> Result<Option<Reply>, ReplyError> {
        let result = self.accept_line(line);
        if result.is_err() {
            self.pending = None;
        }
        result
    }

    /// Adds a line to the pending reply and hands the reply out on its last line.
    fn accept_line(&mut self, line: &[u8]) -> Result<Option<Reply>, ReplyError> {
        let parsed = parse_reply_line(line)?;
        let reply = match self.pending.take() {
            None => start_reply(parsed.code, &parsed.text),
            Some(reply) => continue_reply(reply, &parsed)?,
        };
        if parsed.last {
            return Ok(Some(reply));
        }
        // Checked only for unfinished replies: the 64th line may be the last.
        if reply.lines.len() >= MAX_REPLY_LINES {
            return Err(ReplyError::TooManyLines);
        }
        self.pending = Some(reply);
        Ok(None)
    }
}

/// Begins a reply from its first line; the enhanced code, if any, is taken
/// from this line and decides how the following lines are read.
fn start_reply(code: u16, text: &str) -> Reply {
    let (enhanced, rest) = split_enhanced(text, code);
    Reply {
        code,
        enhanced,
        lines: vec![rest],
    }
}

/// Adds a continuation line, stripping the reply's enhanced code from it.
fn continue_reply(mut reply: Reply, line: &ReplyLine) -> Result<Reply, ReplyError> {
    if line.code != reply.code {
        return Err(ReplyError::Malformed(format!(
            "reply code changed from {} to {} inside one reply",
            reply.code, line.code
        )));
    }
    let text = match split_enhanced(&line.text, reply.code) {
        (Some(code), rest) if reply.enhanced.as_deref() == Some(code.as_str()) => rest,
        _ => line.text.clone(),
    };
    reply.lines.push(text);
    Ok(reply)
}

/// Parses `ddd`, `ddd text`, or `ddd-text` into its parts.
fn parse_reply_line(line: &[u8]) -> Result<ReplyLine, ReplyError> {
    let code = reply_code(line)?;
    let last = match line.get(3) {
        None | Some(b' ') => true,
        Some(b'-') => false,
        Some(_) => {
            return Err(ReplyError::Malformed(
                "expected ' ' or '-' after the code".into(),
            ))
        }
    };
    // Lossy decoding: a reader should survive a peer's odd text, and the
    // replacement is deterministic, so the simulation stays reproducible.
    let text = String::from_utf8_lossy(line.get(4..).unwrap_or(&[])).into_owned();
    Ok(ReplyLine { code, last, text })
}

/// Reads the three-digit reply code and checks it is 200..=599; the 1yz
/// class is unused by SMTP (RFC 5321 4.2.1).
fn reply_code(line: &[u8]) -> Result<u16, ReplyError> {
    let digits = line
        .get(..3)
        .filter(|d| d.iter().all(u8::is_ascii_digit))
        .ok_or_else(|| {
            ReplyError::Malformed("a reply line must start with a 3-digit code".into())
        })?;
    let code = digits
        .iter()
        .fold(0u16, |acc, d| acc * 10 + u16::from(d - b'0'));
    if (200..=599).contains(&code) {
        Ok(code)
    } else {
        Err(ReplyError::Malformed(format!(
            "reply code {code} is out of range"
        )))
    }
}

/// Splits an RFC 3463 enhanced code (`class.subject.detail`) off the front
/// of `text`. The class must match the reply class, as RFC 3463 requires, so
/// text that merely starts with numbers is not mistaken for a code.
fn split_enhanced(text: &str, code: u16) -> (Option<String>, String) {
    match enhanced_prefix_len(text.as_bytes(), code) {
        Some(end) => {
            let enhanced = text.get(..end).unwrap_or_default().to_string();
            let rest = text.get(end..).unwrap_or_default();
            let rest = rest.strip_prefix(' ').unwrap_or(rest);
            (Some(enhanced), rest.to_string())
        }
        None => (None, text.to_string()),
    }
}

/// Length of a leading `d.ddd.ddd` code followed by a space or the end.
fn enhanced_prefix_len(bytes: &[u8], code: u16) -> Option<usize> {
    let class = u8::try_from(code / 100).ok()?;
    if bytes.first() != Some(&(b'0' + class % 10)) || bytes.get(1) != Some(&b'.') {
        return None;
    }
    let subject_end = 2 + digit_run(bytes, 2)?;
    if bytes.get(subject_end) != Some(&b'.') {
        return None;
    }
    let detail_end = subject_end + 1 + digit_run(bytes, subject_end + 1)?;
    match bytes.get(detail_end) {
        None | Some(b' ') => Some(detail_end),
        Some(_) => None,
    }
}

/// Number of ASCII digits at `start`, when it is 1 to 3 as RFC 3463 allows.
fn digit_run(bytes: &[u8], start: usize) -> Option<usize> {
    let count = bytes
        .get(start..)?
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    (1..=3).contains(&count).then_some(count)
}

// ---------------------------------------------------------------------------
// DATA framing
// ---------------------------------------------------------------------------

/// Encodes a message (any bytes; lines should end in CRLF) for DATA / POP3
/// multi-line: doubles a leading '.' on every line, adds a CRLF if the
/// message does not end with one, and appends the terminator ".\r\n".
///
/// A bare CR or bare LF is sent as CRLF, as RFC 5321 2.3.8 requires of a
/// client: a lenient receiver downstream could otherwise read "\n.\n" in our
/// output as the end of the message, which is exactly the smuggling bug.
/// An empty message has no line to end and encodes as just ".\r\n".
#[must_use]
pub fn dot_stuff(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        message
            .len()
            .saturating_add(message.len() / 32)
            .saturating_add(5),
    );
    // Line by line rather than byte by byte (this runs for every message sent): the text up
    // to the next CR or LF is copied at once, a dot opening it doubled.
    let mut at_line_start = true;
    let mut rest = message;
    loop {
        let text_len = rest.iter().position(|&byte| byte == b'\r' || byte == b'\n').unwrap_or(rest.len());
        let (text, tail) = rest.split_at(text_len);
        if let Some(&first) = text.first() {
            if at_line_start && first == b'.' {
                out.push(b'.');
            }
            out.extend_from_slice(text);
            at_line_start = false;
        }
        rest = match tail {
            [] => break,
            // A CR directly followed by LF is one line break, not two.
            [b'\r', b'\n', after @ ..] => after,
            [_, after @ ..] => after,
        };
        out.extend_from_slice(b"\r\n");
        at_line_start = true;
    }
    if !at_line_start {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// Why a received message was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataError {
    /// 552: the unstuffed message is larger than the limit.
    TooBig,
    /// 500: a line holds more than `MAX_TEXT_LINE - 2` (998) octets of text, not counting its
    /// line end (CRLF or a bare LF) nor a stuffing dot.
    LineTooLong,
}

/// Where the decoder stands in the byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DataState {
    /// At the start of a line after CRLF, or at the start of DATA: ".\r\n" here ends DATA.
    LineStart,
    /// At the start of a line after a bare LF: a leading dot is stuffing, but ".\r\n" here
    /// never ends DATA (that would be the "\n.\r\n" smuggling terminator).
    LfLineStart,
    /// A '.' began a line after CRLF; it is held back until we know the line.
    Dot,
    /// ".\r" began a line after CRLF; only LF now makes the terminator.
    DotCr,
    /// Inside a line.
    Text,
    /// Inside a line, right after a CR; only LF now ends the line. The CR is already in the
    /// message but not yet counted against the line length: it is line content only when no
    /// LF follows.
    TextCr,
    /// The terminator has been consumed.
    Done,
}

/// Incremental DATA receiver. Only the exact sequence CRLF "." CRLF (with the start of DATA
/// counting as a preceding CRLF) ends the data; "\n.\n", "\r.\r", "\n.\r\n", "\r\n.\n" and so on
/// never do.
///
/// One rule says what a line is, for everything but the end of DATA: a line ends with CRLF or
/// with a bare LF (a bare CR is line content). Each line may hold 998 octets of text
/// (RFC 5321 §4.5.3.1.6: 1,000 with its CRLF), and a dot that begins a line is the sender's
/// stuffing (§4.5.2): it is removed and does not count toward the length. So a message whose
/// lines end in bare LF keeps its line lengths and has its doubled dots undone, exactly as
/// `dot_stuff` (which sends every bare LF as CRLF) would have framed it.
///
/// It keeps consuming until the end even after a limit was exceeded (so the session stays in
/// sync) and reports the error then.
#[derive(Debug, Clone)]
pub struct DataDecoder {
    state: DataState,
    max_size: usize,
    body: Vec<u8>,
    /// Octets of the unstuffed message so far, counted even once they are
    /// no longer stored, so the limit check stays exact.
    size: usize,
    /// Octets of text in the current line: no line end, no stuffing dot.
    line_len: usize,
    error: Option<DataError>,
    /// The planted bug `stuffing-dot-counted`: a line's stuffing dot counts as text.
    stuffing_dot_counts: bool,
}

impl DataDecoder {
    /// `max_size` is the maximum message size in octets after unstuffing.
    #[must_use]
    pub fn new(max_size: usize) -> Self {
        DataDecoder {
            state: DataState::LineStart,
            max_size,
            body: Vec::new(),
            size: 0,
            line_len: 0,
            error: None,
            stuffing_dot_counts: false,
        }
    }

    /// The planted bug `stuffing-dot-counted`: counts a line's stuffing dot toward its 998
    /// octets, as if the dot were text (RFC 5321 §4.5.2 says it is not).
    #[must_use]
    pub fn counting_stuffing_dots(mut self) -> Self {
        self.stuffing_dot_counts = true;
        self
    }

    /// Feeds bytes; returns the number of bytes consumed. When the
    /// terminator has been consumed, `is_done()` becomes true and the rest
    /// of `input` (after the terminator) is NOT consumed (it belongs to
    /// pipelined commands).
    pub fn feed(&mut self, input: &[u8]) -> usize {
        let mut index = 0;
        while index < input.len() {
            if self.state == DataState::Done {
                return index;
            }
            if self.state == DataState::Text {
                // Inside a line everything up to the next CR or LF is text: taken as one run
                // (what `step` would do octet by octet, for a fraction of the cost).
                let run = input[index..].iter().position(|&byte| byte == b'\r' || byte == b'\n').unwrap_or(input.len() - index);
                if run > 0 {
                    self.text_run(&input[index..index + run]);
                    index += run;
                    continue;
                }
            }
            self.step(input[index]);
            index += 1;
        }
        input.len()
    }

    /// Octets of line text (no CR, no LF) in state `Text`: exactly `emit` then
    /// `count_text_octet` for each, in one go. The first limit an octet crosses is the error
    /// (the size first when one octet crosses both, as `emit` comes first).
    fn text_run(&mut self, run: &[u8]) {
        if self.error.is_none() {
            // Without an error yet, neither count is past its limit: the octet at these
            // indices would be the first to cross one.
            let too_big_at = self.max_size - self.size;
            let too_long_at = (MAX_TEXT_LINE - 2) - self.line_len;
            if too_big_at < run.len() && too_big_at <= too_long_at {
                self.record(DataError::TooBig);
            } else if too_long_at < run.len() {
                self.record(DataError::LineTooLong);
            } else {
                self.body.extend_from_slice(run);
            }
        }
        self.size = self.size.saturating_add(run.len());
        self.line_len = self.line_len.saturating_add(run.len());
    }

    /// True once the terminator has been consumed.
    #[must_use]
    pub fn is_done(&self) -> bool {
        self.state == DataState::Done
    }

    /// After done: the message (without the terminator; the final CRLF
    /// before "." is part of the message), or the first limit error.
    ///
    /// Called before `is_done()`, it returns what was received so far; the
    /// caller must check `is_done()` first, since that data is incomplete.
    pub fn finish(self) -> Result<Vec<u8>, DataError> {
        match self.error {
            Some(error) => Err(error),
            None => Ok(self.body),
        }
    }

    /// Advances the state machine by one received byte.
    fn step(&mut self, byte: u8) {
        self.state = match (self.state, byte) {
            (DataState::Done, _) => DataState::Done,
            (DataState::LineStart, b'.') => {
                self.count_stuffing_dot();
                DataState::Dot
            }
            // After a bare LF the dot is stuffing too; dropping it at once means no ".\r\n"
            // that follows can be mistaken for the terminator.
            (DataState::LfLineStart, b'.') => {
                self.count_stuffing_dot();
                DataState::Text
            }
            (DataState::Dot, b'\r') => DataState::DotCr,
            (DataState::DotCr, b'\n') => DataState::Done,
            // ".\r" not followed by LF: the dot was stuffing, the CR is data.
            (DataState::DotCr, _) => {
                self.emit(b'\r');
                self.count_text_octet();
                self.line_byte(byte)
            }
            (DataState::TextCr, b'\n') => {
                self.emit(byte);
                self.line_len = 0;
                DataState::LineStart
            }
            // The CR before was a bare CR: line content after all.
            (DataState::TextCr, _) => {
                self.count_text_octet();
                self.line_byte(byte)
            }
            // Everything else is line content; a dot held in `Dot` is dropped.
            _ => self.line_byte(byte),
        };
    }

    /// Takes one octet of a line (or its end) and names the state that follows.
    fn line_byte(&mut self, byte: u8) -> DataState {
        self.emit(byte);
        match byte {
            b'\r' => DataState::TextCr,
            b'\n' => {
                // A bare LF ends a line, for length and dot-stuffing, but never DATA.
                self.line_len = 0;
                DataState::LfLineStart
            }
            _ => {
                self.count_text_octet();
                DataState::Text
            }
        }
    }

    /// A stuffing dot is framing, not text: it counts only under the planted bug.
    fn count_stuffing_dot(&mut self) {
        if self.stuffing_dot_counts {
            self.count_text_octet();
        }
    }

    /// Counts one octet of text against the line length limit.
    fn count_text_octet(&mut self) {
        self.line_len = self.line_len.saturating_add(1);
        if self.line_len > MAX_TEXT_LINE - 2 {
            self.record(DataError::LineTooLong);
        }
    }

    /// Appends an unstuffed octet to the message, within the size limit.
    fn emit(&mut self, byte: u8) {
        self.size = self.size.saturating_add(1);
        if self.size > self.max_size {
            self.record(DataError::TooBig);
        }
        if self.error.is_none() {
            self.body.push(byte);
        }
    }

    /// Keeps the first error and drops the body: a refused message is never
    /// delivered, so holding on to it would only waste memory.
    fn record(&mut self, error: DataError) {
        if self.error.is_none() {
            self.error = Some(error);
            self.body = Vec::new();
        }
    }
}

// ---------------------------------------------------------------------------
// POP3 commands
// ---------------------------------------------------------------------------

/// One POP3 command (RFC 1939, plus CAPA from RFC 2449).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pop3Command {
    User(String),
    Pass(String),
    Stat,
    List(Option<u32>),
    Uidl(Option<u32>),
    Retr(u32),
    Dele(u32),
    Rset,
    Noop,
    Quit,
    Capa,
    /// Message number, then number of body lines.
    Top(u32, u32),
}

/// Parses one POP3 command line given WITHOUT its CRLF; the error is the
/// text for a "-ERR" reply.
pub fn parse_pop3_command(line: &[u8]) -> Result<Pop3Command, String> {
    if line.len() > POP3_MAX_COMMAND_LINE - 2 {
        return Err("command line too long".to_string());
    }
    let text = checked_text(line).map_err(str::to_string)?;
    let (keyword, rest) = text.split_once(' ').unwrap_or((text, ""));
    let keyword = keyword.to_ascii_uppercase();
    if keyword == "PASS" {
        return parse_pass(rest);
    }
    let args: Vec<&str> = rest.split(' ').filter(|arg| !arg.is_empty()).collect();
    dispatch_pop3(&keyword, &args)
}

/// RFC 1939 lets PASS treat spaces as part of the password, since it has
/// exactly one argument; so the rest of the line is taken verbatim.
fn parse_pass(rest: &str) -> Result<Pop3Command, String> {
    if rest.is_empty() {
        Err("PASS needs a password".to_string())
    } else {
        Ok(Pop3Command::Pass(rest.to_string()))
    }
}

/// Maps an upper-cased keyword and its arguments to a command.
fn dispatch_pop3(keyword: &str, args: &[&str]) -> Result<Pop3Command, String> {
    match (keyword, args) {
        ("USER", [name]) => Ok(Pop3Command::User((*name).to_string())),
        ("STAT", []) => Ok(Pop3Command::Stat),
        ("LIST", []) => Ok(Pop3Command::List(None)),
        ("LIST", [n]) => message_number(n).map(|n| Pop3Command::List(Some(n))),
        ("UIDL", []) => Ok(Pop3Command::Uidl(None)),
        ("UIDL", [n]) => message_number(n).map(|n| Pop3Command::Uidl(Some(n))),
        ("RETR", [n]) => message_number(n).map(Pop3Command::Retr),
        ("DELE", [n]) => message_number(n).map(Pop3Command::Dele),
        ("TOP", [n, lines]) => Ok(Pop3Command::Top(message_number(n)?, line_count(lines)?)),
        ("RSET", []) => Ok(Pop3Command::Rset),
        ("NOOP", []) => Ok(Pop3Command::Noop),
        ("QUIT", []) => Ok(Pop3Command::Quit),
        ("CAPA", []) => Ok(Pop3Command::Capa),
        (
            "USER" | "STAT" | "LIST" | "UIDL" | "RETR" | "DELE" | "TOP" | "RSET" | "NOOP" | "QUIT"
            | "CAPA",
            _,
        ) => Err(format!("wrong arguments for {keyword}")),
        _ => Err("unknown command".to_string()),
    }
}

/// A 1-based message number.
fn message_number(text: &str) -> Result<u32, String> {
    match decimal(text) {
        Some(0) | None => Err("invalid message number".to_string()),
        Some(n) => Ok(n),
    }
}

/// The line count of TOP, where 0 (headers only) is valid.
fn line_count(text: &str) -> Result<u32, String> {
    decimal(text).ok_or_else(|| "invalid line count".to_string())
}

/// Plain decimal digits only: `str::parse` alone would also accept a '+'.
fn decimal(text: &str) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // -- helpers ------------------------------------------------------------

    fn cmd(line: &str) -> Result<Command, CommandError> {
        parse_command(line.as_bytes())
    }

    fn syntax(line: &str) -> bool {
        matches!(cmd(line), Err(CommandError::Syntax(_)))
    }

    fn pop3(line: &str) -> Result<Pop3Command, String> {
        parse_pop3_command(line.as_bytes())
    }

    /// Feeds `input` in chunks whose sizes cycle through `chunks`, stopping
    /// once done, and returns the decoder and the total bytes consumed.
    fn feed_chunked(
        mut decoder: DataDecoder,
        input: &[u8],
        chunks: &[usize],
    ) -> (DataDecoder, usize) {
        let mut pos = 0;
        for size in chunks.iter().cycle().take(input.len() + 1) {
            if pos >= input.len() || decoder.is_done() {
                break;
            }
            let chunk = &input[pos..input.len().min(pos + (*size).max(1))];
            let consumed = decoder.feed(chunk);
            // Only the terminator may stop a decoder from taking a whole chunk.
            assert!(consumed == chunk.len() || decoder.is_done());
            pos += consumed;
        }
        (decoder, pos)
    }

    fn decode_all(input: &[u8], max_size: usize) -> (bool, usize, Result<Vec<u8>, DataError>) {
        let mut decoder = DataDecoder::new(max_size);
        let consumed = decoder.feed(input);
        let done = decoder.is_done();
        (done, consumed, decoder.finish())
    }

    fn params(list: &[(&str, Option<&str>)]) -> Vec<(String, Option<String>)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
            .collect()
    }

    fn parse_reply(bytes: &[u8]) -> Result<Option<Reply>, ReplyError> {
        let mut parser = ReplyParser::default();
        let text = bytes.strip_suffix(b"\r\n").unwrap_or(bytes);
        let mut last = Ok(None);
        for line in text.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            last = parser.feed_line(line);
        }
        last
    }

    // -- SMTP commands ------------------------------------------------------

    #[test]
    fn hello_commands_take_a_domain_case_insensitively() {
        assert_eq!(
            cmd("EHLO mx.example"),
            Ok(Command::Ehlo("mx.example".into()))
        );
        assert_eq!(
            cmd("ehlo [192.0.2.1]"),
            Ok(Command::Ehlo("[192.0.2.1]".into()))
        );
        assert_eq!(cmd("HeLo a.b"), Ok(Command::Helo("a.b".into())));
        assert_eq!(cmd("lhlo client"), Ok(Command::Lhlo("client".into())));
    }

    #[test]
    fn hello_commands_without_a_single_domain_are_syntax_errors() {
        assert!(syntax("EHLO"));
        assert!(syntax("EHLO   "));
        assert!(syntax("HELO"));
        assert!(syntax("LHLO"));
        assert!(syntax("EHLO two words"));
        assert!(syntax("EHLO d\u{e9}j\u{e0}.example"));
    }

    #[test]
    fn mail_from_plain_address() {
        assert_eq!(
            cmd("MAIL FROM:<alice@example.org>"),
            Ok(Command::Mail {
                from: "alice@example.org".into(),
                params: vec![]
            })
        );
        assert_eq!(
            cmd("mail from:<a@b>"),
            Ok(Command::Mail {
                from: "a@b".into(),
                params: vec![]
            })
        );
    }

    #[test]
    fn mail_from_accepts_one_space_after_the_colon_only() {
        assert_eq!(
            cmd("MAIL FROM: <a@b>"),
            Ok(Command::Mail {
                from: "a@b".into(),
                params: vec![]
            })
        );
        assert!(syntax("MAIL FROM:  <a@b>"));
    }

    #[test]
    fn mail_from_null_path_is_empty_string() {
        assert_eq!(
            cmd("MAIL FROM:<>"),
            Ok(Command::Mail {
                from: String::new(),
                params: vec![]
            })
        );
    }

    #[test]
    fn mail_from_parameters_are_parsed_and_keys_uppercased() {
        assert_eq!(
            cmd("MAIL FROM:<a@b> size=1234 BODY=8BITMIME  SMTPUTF8"),
            Ok(Command::Mail {
                from: "a@b".into(),
                params: params(&[
                    ("SIZE", Some("1234")),
                    ("BODY", Some("8BITMIME")),
                    ("SMTPUTF8", None)
                ]),
            })
        );
    }

    #[test]
    fn bad_parameters_are_syntax_errors() {
        assert!(syntax("MAIL FROM:<a@b> SIZE="));
        assert!(syntax("MAIL FROM:<a@b> SI_ZE=1"));
        assert!(syntax("MAIL FROM:<a@b> -SIZE=1"));
        assert!(syntax("MAIL FROM:<a@b> =1"));
        assert!(syntax("MAIL FROM:<a@b> A=b=c"));
        assert!(syntax("MAIL FROM:<a@b>SIZE=1"));
        assert!(syntax("MAIL FROM:<a@b> SIZE=1\tBODY=7BIT"));
    }

    #[test]
    fn mail_without_brackets_or_keyword_is_syntax_error() {
        assert!(syntax("MAIL FROM:a@b"));
        assert!(syntax("MAIL FROM:<a@b"));
        assert!(syntax("MAIL TO:<a@b>"));
        assert!(syntax("MAIL"));
        assert!(syntax("MAIL FROM"));
        assert!(syntax("MAIL F\u{e9}OM:<a@b>"));
    }

    #[test]
    fn rcpt_to_address_and_params() {
        assert_eq!(
            cmd("RCPT TO:<bob@example.net> NOTIFY=NEVER"),
            Ok(Command::Rcpt {
                to: "bob@example.net".into(),
                params: params(&[("NOTIFY", Some("NEVER"))])
            })
        );
        assert_eq!(
            cmd("rcpt to: <b@c>"),
            Ok(Command::Rcpt {
                to: "b@c".into(),
                params: vec![]
            })
        );
    }

    #[test]
    fn rcpt_to_null_path_is_syntax_error() {
        assert!(syntax("RCPT TO:<>"));
        assert!(syntax("RCPT TO:b@c"));
        assert!(syntax("RCPT FROM:<b@c>"));
    }

    #[test]
    fn rcpt_to_bare_postmaster_is_accepted() {
        assert_eq!(
            cmd("RCPT TO:<Postmaster>"),
            Ok(Command::Rcpt {
                to: "Postmaster".into(),
                params: vec![]
            })
        );
        assert!(syntax("MAIL FROM:<postmaster>"));
    }

    #[test]
    fn addresses_must_be_printable_local_at_domain() {
        for bad in [
            "MAIL FROM:<nodomain>",
            "MAIL FROM:<@example.org>",
            "MAIL FROM:<user@>",
            "MAIL FROM:<us er@example.org>",
            "MAIL FROM:<a<b@c>",
            "MAIL FROM:<@relay:user@host>",
            "MAIL FROM:<j\u{f6}rg@example.org>",
            "RCPT TO:<a\tb@c>",
        ] {
            assert!(syntax(bad), "{bad}");
        }
        assert!(cmd("MAIL FROM:<\"a@b\"@example.org>").is_ok());
    }

    #[test]
    fn addresses_are_limited_to_254_octets() {
        let domain = "d".repeat(250);
        let ok = format!("RCPT TO:<abc@{domain}>");
        assert!(cmd(&ok).is_ok());
        let too_long = format!("RCPT TO:<abcd@{domain}>");
        assert_eq!(
            cmd(&too_long),
            Err(CommandError::Syntax("the address is too long"))
        );
    }

    #[test]
    fn commands_without_arguments() {
        assert_eq!(cmd("DATA"), Ok(Command::Data));
        assert_eq!(cmd("rset"), Ok(Command::Rset));
        assert_eq!(cmd("Quit"), Ok(Command::Quit));
        assert_eq!(cmd("QUIT  "), Ok(Command::Quit));
        assert!(syntax("DATA now"));
        assert!(syntax("RSET x"));
        assert!(syntax("QUIT bye"));
    }

    #[test]
    fn noop_and_help_ignore_their_argument() {
        assert_eq!(cmd("NOOP"), Ok(Command::Noop));
        assert_eq!(cmd("noop anything\there"), Ok(Command::Noop));
        assert_eq!(cmd("HELP"), Ok(Command::Help));
        assert_eq!(cmd("HELP MAIL"), Ok(Command::Help));
    }

    #[test]
    fn vrfy_needs_an_argument() {
        assert_eq!(cmd("VRFY alice"), Ok(Command::Vrfy("alice".into())));
        assert_eq!(
            cmd("vrfy Alice Smith"),
            Ok(Command::Vrfy("Alice Smith".into()))
        );
        assert!(syntax("VRFY"));
    }

    #[test]
    fn bdat_takes_a_size_and_an_optional_last() {
        assert_eq!(parse_command(b"BDAT 42 LAST"), Ok(Command::Bdat { size: 42, last: true }));
        assert_eq!(parse_command(b"bdat 0"), Ok(Command::Bdat { size: 0, last: false }));
        assert!(matches!(parse_command(b"BDAT"), Err(CommandError::Syntax(_))));
        assert!(matches!(parse_command(b"BDAT +5"), Err(CommandError::Syntax(_))));
        assert!(matches!(parse_command(b"BDAT 5 FIRST"), Err(CommandError::Syntax(_))));
        assert!(matches!(parse_command(b"BDAT 99999999999999999999999"), Err(CommandError::Syntax(_))));
        assert!(matches!(parse_command(b"BDAT 5 LAST x"), Err(CommandError::Syntax(_))));
    }

    #[test]
    fn unknown_verbs_are_unrecognized() {
        assert_eq!(cmd("EXPN list"), Err(CommandError::Unrecognized));
        assert_eq!(cmd(""), Err(CommandError::Unrecognized));
        assert_eq!(cmd(" QUIT"), Err(CommandError::Unrecognized));
        assert_eq!(cmd("QUITX"), Err(CommandError::Unrecognized));
        assert_eq!(cmd("GET / HTTP/1.1"), Err(CommandError::Unrecognized));
    }

    #[test]
    fn command_line_length_limit() {
        let fits = format!("NOOP {}", "x".repeat(MAX_COMMAND_LINE - 2 - 5));
        assert_eq!(fits.len(), 510);
        assert_eq!(cmd(&fits), Ok(Command::Noop));
        let long = format!("{fits}x");
        assert_eq!(cmd(&long), Err(CommandError::TooLong));
    }

    #[test]
    fn non_utf8_and_control_characters_are_syntax_errors() {
        assert!(matches!(
            parse_command(b"NOOP \xff"),
            Err(CommandError::Syntax(_))
        ));
        assert!(matches!(
            parse_command(b"QUIT\r"),
            Err(CommandError::Syntax(_))
        ));
        assert!(matches!(
            parse_command(b"RSET\x00"),
            Err(CommandError::Syntax(_))
        ));
        assert!(matches!(
            parse_command(b"NOOP \x7f"),
            Err(CommandError::Syntax(_))
        ));
        assert!(matches!(
            parse_command("NOOP \u{85}".as_bytes()),
            Err(CommandError::Syntax(_))
        ));
        assert_eq!(parse_command(b"QUIT\t"), Ok(Command::Quit));
    }

    // -- replies ------------------------------------------------------------

    #[test]
    fn reply_encodes_single_line_with_enhanced_code() {
        let reply = Reply::new(250, "2.1.0", "Sender OK");
        assert_eq!(reply.encode(), b"250 2.1.0 Sender OK\r\n");
        assert_eq!(reply.class(), 2);
        assert_eq!(reply.summary(), "250 2.1.0 Sender OK");
    }

    #[test]
    fn reply_encodes_multiple_lines_with_enhanced_code_on_each() {
        let reply = Reply::new(250, "2.0.0", "first\nsecond\r\nlast");
        assert_eq!(reply.lines, vec!["first", "second", "last"]);
        assert_eq!(
            reply.encode(),
            b"250-2.0.0 first\r\n250-2.0.0 second\r\n250 2.0.0 last\r\n"
        );
        assert_eq!(reply.summary(), "250 2.0.0 last");
    }

    #[test]
    fn reply_without_enhanced_code() {
        let reply = Reply::new(354, "", "End data with <CR><LF>.<CR><LF>");
        assert_eq!(reply.enhanced, None);
        assert_eq!(reply.encode(), b"354 End data with <CR><LF>.<CR><LF>\r\n");
        assert_eq!(reply.class(), 3);
        assert_eq!(Reply::new(550, "", "").encode(), b"550\r\n");
        assert_eq!(Reply::new(550, "", "").summary(), "550");
        assert_eq!(Reply::new(550, "5.0.0", "").encode(), b"550 5.0.0\r\n");
    }

    #[test]
    fn reply_with_no_lines_still_encodes_one_line() {
        let reply = Reply {
            code: 221,
            enhanced: Some("2.0.0".into()),
            lines: vec![],
        };
        assert_eq!(reply.encode(), b"221 2.0.0\r\n");
        assert_eq!(reply.summary(), "221 2.0.0");
    }

    #[test]
    fn reply_encode_never_injects_lines() {
        let reply = Reply {
            code: 250,
            enhanced: None,
            lines: vec!["a\r\n550 evil".into()],
        };
        assert_eq!(reply.encode(), b"250 a  550 evil\r\n");
    }

    #[test]
    fn parser_reads_single_and_multi_line_replies() {
        let mut parser = ReplyParser::default();
        assert_eq!(parser.feed_line(b"250-mx.example"), Ok(None));
        assert_eq!(parser.feed_line(b"250-PIPELINING"), Ok(None));
        assert_eq!(
            parser.feed_line(b"250 8BITMIME"),
            Ok(Some(Reply {
                code: 250,
                enhanced: None,
                lines: vec!["mx.example".into(), "PIPELINING".into(), "8BITMIME".into()]
            }))
        );
        assert_eq!(
            parser.feed_line(b"221"),
            Ok(Some(Reply {
                code: 221,
                enhanced: None,
                lines: vec![String::new()]
            }))
        );
    }

    #[test]
    fn parser_splits_enhanced_codes() {
        assert_eq!(
            parse_reply(b"550 5.7.1 Relaying denied"),
            Ok(Some(Reply::new(550, "5.7.1", "Relaying denied")))
        );
        assert_eq!(
            parse_reply(b"451-4.3.0 a\n451 4.3.0 b"),
            Ok(Some(Reply::new(451, "4.3.0", "a\nb")))
        );
        assert_eq!(
            parse_reply(b"250 2.100.999"),
            Ok(Some(Reply::new(250, "2.100.999", "")))
        );
        // The class must match the reply code and the fields are 1 to 3 digits.
        assert_eq!(
            parse_reply(b"250 5.0.0 x"),
            Ok(Some(Reply::new(250, "", "5.0.0 x")))
        );
        assert_eq!(
            parse_reply(b"250 2.0.1000 x"),
            Ok(Some(Reply::new(250, "", "2.0.1000 x")))
        );
        assert_eq!(
            parse_reply(b"250 2.0.0x"),
            Ok(Some(Reply::new(250, "", "2.0.0x")))
        );
        assert_eq!(
            parse_reply(b"250 2..0 x"),
            Ok(Some(Reply::new(250, "", "2..0 x")))
        );
    }

    #[test]
    fn parser_keeps_other_enhanced_looking_text_on_continuation_lines() {
        let reply = parse_reply(b"250-2.0.0 a\n250 2.1.0 b");
        assert_eq!(
            reply,
            Ok(Some(Reply {
                code: 250,
                enhanced: Some("2.0.0".into()),
                lines: vec!["a".into(), "2.1.0 b".into()]
            }))
        );
    }

    #[test]
    fn parser_rejects_malformed_lines() {
        for bad in [
            &b""[..],
            b"25",
            b"2x0 ok",
            b"199 no",
            b"600 no",
            b"250x",
            b"250\tok",
            b"-250 ok",
        ] {
            let mut parser = ReplyParser::default();
            assert!(
                matches!(parser.feed_line(bad), Err(ReplyError::Malformed(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn parser_rejects_code_changes_and_recovers() {
        let mut parser = ReplyParser::default();
        assert_eq!(parser.feed_line(b"250-a"), Ok(None));
        assert!(matches!(
            parser.feed_line(b"251 b"),
            Err(ReplyError::Malformed(_))
        ));
        assert_eq!(
            parser.feed_line(b"354 go"),
            Ok(Some(Reply::new(354, "", "go")))
        );
    }

    #[test]
    fn parser_limits_replies_to_64_lines() {
        let mut parser = ReplyParser::default();
        for _ in 0..63 {
            assert_eq!(parser.feed_line(b"250-x"), Ok(None));
        }
        let reply = parser
            .feed_line(b"250 x")
            .ok()
            .flatten()
            .map(|r| r.lines.len());
        assert_eq!(reply, Some(64));
        for _ in 0..63 {
            assert_eq!(parser.feed_line(b"250-x"), Ok(None));
        }
        assert_eq!(parser.feed_line(b"250-x"), Err(ReplyError::TooManyLines));
        assert_eq!(
            parser.feed_line(b"250 fresh"),
            Ok(Some(Reply::new(250, "", "fresh")))
        );
    }

    #[test]
    fn parser_decodes_invalid_utf8_lossily() {
        let reply = parse_reply(b"250 caf\xe9");
        assert_eq!(reply, Ok(Some(Reply::new(250, "", "caf\u{fffd}"))));
    }

    // -- DATA framing -------------------------------------------------------

    #[test]
    fn dot_stuff_examples() {
        assert_eq!(dot_stuff(b""), b".\r\n");
        assert_eq!(dot_stuff(b"a\r\n"), b"a\r\n.\r\n");
        assert_eq!(dot_stuff(b"a"), b"a\r\n.\r\n");
        assert_eq!(
            dot_stuff(b".a\r\n.\r\n..\r\nb.c\r\n"),
            b"..a\r\n..\r\n...\r\nb.c\r\n.\r\n"
        );
        assert_eq!(dot_stuff(b"\r\n"), b"\r\n.\r\n");
    }

    #[test]
    fn dot_stuff_turns_bare_cr_and_lf_into_crlf() {
        assert_eq!(dot_stuff(b"a\n.\nb"), b"a\r\n..\r\nb\r\n.\r\n");
        assert_eq!(dot_stuff(b"a\r.\r"), b"a\r\n..\r\n.\r\n");
        assert_eq!(dot_stuff(b"a\r\r\n"), b"a\r\n\r\n.\r\n");
    }

    #[test]
    fn decoder_reads_simple_message() {
        let (done, consumed, body) = decode_all(b"Subject: x\r\n\r\nhi\r\n.\r\n", 100);
        assert!(done);
        assert_eq!(consumed, 21);
        assert_eq!(body, Ok(b"Subject: x\r\n\r\nhi\r\n".to_vec()));
    }

    #[test]
    fn decoder_treats_start_of_data_as_line_start() {
        assert_eq!(decode_all(b".\r\n", 0), (true, 3, Ok(vec![])));
        assert_eq!(
            decode_all(b"..\r\n.\r\n", 10),
            (true, 7, Ok(b".\r\n".to_vec()))
        );
    }

    #[test]
    fn decoder_removes_one_leading_dot() {
        let (_, _, body) = decode_all(b"..hidden\r\n...\r\n.x\r\na.b\r\n.\r\n", 100);
        assert_eq!(body, Ok(b".hidden\r\n..\r\nx\r\na.b\r\n".to_vec()));
        let (_, _, body) = decode_all(b".\rx\r\n.\r\r\n.\r\n", 100);
        assert_eq!(body, Ok(b"\rx\r\n\r\r\n".to_vec()));
    }

    #[test]
    fn decoder_ignores_smuggling_terminators() {
        for fake in [
            &b"a\n.\nb"[..],
            b"a\r.\rb",
            b"a\n.\r\nb",
            b"a\r\n.\nb",
            b"a\r.\r\nb",
            b"a\r\n.\rb",
            b"a\n.\n",
            b".\n",
            b".\r",
            b"\n.\r\n",
            b"a\r\n\r.\r\n",
            b"a\r\n .\r\n",
            b"a\r\n..\r\n",
            b"a\r\r\n.\r",
        ] {
            let (done, consumed, _) = decode_all(fake, 1000);
            assert!(!done, "{fake:?}");
            assert_eq!(consumed, fake.len());
        }
    }

    #[test]
    fn decoder_finds_terminator_split_across_feeds() {
        let input = b"x\r\n.\r\nQUIT\r\n";
        let mut decoder = DataDecoder::new(100);
        let mut consumed = 0;
        for byte in input.chunks(1) {
            consumed += decoder.feed(byte);
        }
        assert!(decoder.is_done());
        assert_eq!(consumed, 6);
        assert_eq!(decoder.feed(b"more"), 0);
        assert_eq!(decoder.finish(), Ok(b"x\r\n".to_vec()));
    }

    #[test]
    fn decoder_leaves_pipelined_commands_unconsumed() {
        let input = b"x\r\n.\r\nMAIL FROM:<a@b>\r\n";
        let (done, consumed, body) = decode_all(input, 100);
        assert!(done);
        assert_eq!(&input[consumed..], b"MAIL FROM:<a@b>\r\n");
        assert_eq!(body, Ok(b"x\r\n".to_vec()));
    }

    #[test]
    fn decoder_size_limit_is_exact_and_reported_at_the_end() {
        assert_eq!(decode_all(b"abc\r\n.\r\n", 5).2, Ok(b"abc\r\n".to_vec()));
        let mut decoder = DataDecoder::new(4);
        assert_eq!(decoder.feed(b"abc\r\n"), 5);
        assert!(!decoder.is_done());
        assert_eq!(decoder.feed(b"more\r\n.\r\nQUIT"), 9);
        assert!(decoder.is_done());
        assert_eq!(decoder.finish(), Err(DataError::TooBig));
    }

    #[test]
    fn decoder_size_counts_after_unstuffing() {
        assert_eq!(decode_all(b"..\r\n.\r\n", 3).2, Ok(b".\r\n".to_vec()));
    }

    #[test]
    fn decoder_line_limit_counts_text_octets() {
        let line = |content: usize| {
            let mut input = vec![b'a'; content];
            input.extend_from_slice(b"\r\n.\r\n");
            input
        };
        assert!(decode_all(&line(998), 10_000).2.is_ok());
        assert_eq!(
            decode_all(&line(999), 10_000),
            (true, 1004, Err(DataError::LineTooLong))
        );
        // A bare CR is text, so it counts; the CR of CRLF does not.
        let mut bare_cr = vec![b'a'; 997];
        bare_cr.extend_from_slice(b"\rb\r\n.\r\n");
        assert_eq!(decode_all(&bare_cr, 10_000).2, Err(DataError::LineTooLong));
    }

    /// RFC 5321 §4.5.3.1.6: the stuffing dot is not part of the line, so a 998-octet line that
    /// starts with "." (1,001 octets on the wire with its CRLF) is accepted.
    #[test]
    fn decoder_line_limit_ignores_the_stuffing_dot() {
        let stuffed = |content: &[u8], after: &[u8]| {
            let mut input = after.to_vec();
            input.push(b'.');
            input.extend_from_slice(content);
            input.extend_from_slice(b"\r\n.\r\n");
            input
        };
        let mut dotted = vec![b'.'];
        dotted.extend(vec![b'a'; 997]);
        for after in [&b""[..], b"x\r\n", b"x\n"] {
            let mut expected = after.to_vec();
            expected.extend_from_slice(&dotted);
            expected.extend_from_slice(b"\r\n");
            assert_eq!(decode_all(&stuffed(&dotted, after), 10_000).2, Ok(expected), "{after:?}");
            let mut longer = dotted.clone();
            longer.push(b'a');
            assert_eq!(decode_all(&stuffed(&longer, after), 10_000).2, Err(DataError::LineTooLong));
        }
    }

    /// A bare LF ends a line for the length limit and for dot-stuffing (never DATA itself).
    #[test]
    fn decoder_treats_bare_lf_as_a_line_end() {
        let mut input = Vec::new();
        for _ in 0..30 {
            input.extend_from_slice(&[b'a'; 100]);
            input.push(b'\n');
        }
        input.extend_from_slice(&[b'a'; 998]);
        input.extend_from_slice(b"\n..dot\n...two\n.\n\r\n.\r\n");
        let (done, consumed, body) = decode_all(&input, 100_000);
        assert!(done);
        assert_eq!(consumed, input.len());
        let mut expected = input[..30 * 101 + 998].to_vec();
        expected.extend_from_slice(b"\n.dot\n..two\n\n\r\n");
        assert_eq!(body, Ok(expected));
        let mut long = vec![b'a'; 999];
        long.extend_from_slice(b"\nb\r\n.\r\n");
        assert_eq!(decode_all(&long, 10_000).2, Err(DataError::LineTooLong));
    }

    #[test]
    fn decoder_reports_the_first_error() {
        let mut input = vec![b'a'; 2000];
        input.extend_from_slice(b"\r\n.\r\n");
        assert_eq!(decode_all(&input, 10).2, Err(DataError::TooBig));
        assert_eq!(decode_all(&input, 1500).2, Err(DataError::LineTooLong));
    }

    #[test]
    fn decoder_accepts_any_octets() {
        let mut input: Vec<u8> = (0u8..=255).filter(|b| *b != b'\r' && *b != b'\n').collect();
        input.extend_from_slice(b"\r\n.\r\n");
        let (done, _, body) = decode_all(&input, 1000);
        assert!(done);
        assert_eq!(body.map(|b| b.len()), Ok(256));
    }

    #[test]
    fn finish_before_done_returns_partial_data() {
        let mut decoder = DataDecoder::new(100);
        decoder.feed(b"partial");
        assert!(!decoder.is_done());
        assert_eq!(decoder.finish(), Ok(b"partial".to_vec()));
    }

    // -- POP3 ---------------------------------------------------------------

    #[test]
    fn pop3_commands_without_arguments() {
        assert_eq!(pop3("STAT"), Ok(Pop3Command::Stat));
        assert_eq!(pop3("list"), Ok(Pop3Command::List(None)));
        assert_eq!(pop3("Uidl"), Ok(Pop3Command::Uidl(None)));
        assert_eq!(pop3("RSET"), Ok(Pop3Command::Rset));
        assert_eq!(pop3("noop"), Ok(Pop3Command::Noop));
        assert_eq!(pop3("QUIT"), Ok(Pop3Command::Quit));
        assert_eq!(pop3("capa"), Ok(Pop3Command::Capa));
        assert!(pop3("STAT 1").is_err());
        assert!(pop3("QUIT now").is_err());
    }

    #[test]
    fn pop3_message_number_commands() {
        assert_eq!(pop3("LIST 2"), Ok(Pop3Command::List(Some(2))));
        assert_eq!(pop3("UIDL 7"), Ok(Pop3Command::Uidl(Some(7))));
        assert_eq!(pop3("retr 1"), Ok(Pop3Command::Retr(1)));
        assert_eq!(pop3("DELE 4294967295"), Ok(Pop3Command::Dele(u32::MAX)));
        assert_eq!(pop3("TOP 3 0"), Ok(Pop3Command::Top(3, 0)));
        assert_eq!(pop3("top 3 10"), Ok(Pop3Command::Top(3, 10)));
    }

    #[test]
    fn pop3_rejects_bad_message_numbers() {
        for bad in [
            "RETR 0",
            "RETR -1",
            "RETR +1",
            "RETR 1.5",
            "RETR x",
            "DELE 4294967296",
            "RETR",
            "RETR 1 2",
            "TOP 1",
            "TOP 0 1",
            "TOP 1 -1",
            "LIST 1 2",
        ] {
            assert!(pop3(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pop3_user_and_pass() {
        assert_eq!(pop3("USER alice"), Ok(Pop3Command::User("alice".into())));
        assert_eq!(
            pop3("PASS secret with spaces "),
            Ok(Pop3Command::Pass("secret with spaces ".into()))
        );
        assert_eq!(pop3("pass x"), Ok(Pop3Command::Pass("x".into())));
        assert!(pop3("USER").is_err());
        assert!(pop3("USER a b").is_err());
        assert!(pop3("PASS").is_err());
        assert!(pop3("PASS ").is_err());
    }

    #[test]
    fn pop3_rejects_unknown_long_and_invalid_lines() {
        assert_eq!(pop3("APOP a b"), Err("unknown command".into()));
        assert_eq!(pop3(""), Err("unknown command".into()));
        let fits = format!("PASS {}", "x".repeat(POP3_MAX_COMMAND_LINE - 2 - 5));
        assert!(pop3(&fits).is_ok());
        assert!(pop3(&format!("{fits}x")).is_err());
        assert!(parse_pop3_command(b"USER \xff").is_err());
        assert!(parse_pop3_command(b"USER a\x00").is_err());
    }

    // -- properties ---------------------------------------------------------

    /// One message line: any bytes but CR and LF, often starting with a dot.
    fn message_line() -> impl Strategy<Value = Vec<u8>> {
        let byte = any::<u8>().prop_map(|b| if b == b'\r' || b == b'\n' { b'.' } else { b });
        (any::<bool>(), prop::collection::vec(byte, 0..898)).prop_map(|(dot, mut line)| {
            if dot {
                line.insert(0, b'.');
            }
            line.extend_from_slice(b"\r\n");
            line
        })
    }

    fn message() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(message_line(), 0..12).prop_map(|lines| lines.concat())
    }

    fn chunk_sizes() -> impl Strategy<Value = Vec<usize>> {
        prop::collection::vec(1usize..80, 1..20)
    }

    /// Byte strings built to look like terminators without being one.
    fn smuggling_input() -> impl Strategy<Value = Vec<u8>> {
        let fragment = prop_oneof![
            prop::collection::vec(any::<u8>(), 0..20),
            Just(b"\n.\n".to_vec()),
            Just(b"\r.\r".to_vec()),
            Just(b"\n.\r\n".to_vec()),
            Just(b"\r\n.\n".to_vec()),
            Just(b"\r.\r\n".to_vec()),
            Just(b"\r\n.\r".to_vec()),
            Just(b".\n".to_vec()),
            Just(b".\r".to_vec()),
            Just(b".\r\n".to_vec()),
            Just(b"\r\n".to_vec()),
            Just(b"\r".to_vec()),
            Just(b"\n".to_vec()),
            Just(b".".to_vec()),
        ];
        prop::collection::vec(fragment, 0..40).prop_map(|parts| defuse(parts.concat()))
    }

    /// Breaks every real terminator by putting an 'x' after its dot; an 'x'
    /// cannot complete a new one, so the result contains none.
    fn defuse(mut input: Vec<u8>) -> Vec<u8> {
        if input.starts_with(b".\r\n") {
            input.insert(1, b'x');
        }
        while let Some(pos) = find(&input, b"\r\n.\r\n") {
            input.insert(pos + 3, b'x');
        }
        input
    }

    fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
        haystack.windows(needle.len()).position(|w| w == needle)
    }

    proptest! {
        #[test]
        fn prop_dot_stuffing_round_trips(msg in message(), chunks in chunk_sizes()) {
            let stuffed = dot_stuff(&msg);
            let (decoder, consumed) = feed_chunked(DataDecoder::new(msg.len()), &stuffed, &chunks);
            prop_assert!(decoder.is_done());
            prop_assert_eq!(consumed, stuffed.len());
            prop_assert_eq!(decoder.finish(), Ok(msg));
        }

        /// A client that ends lines with bare LF but stuffs its dots the same way gets its
        /// message back exactly.
        #[test]
        fn prop_bare_lf_lines_unstuff(lines in prop::collection::vec(message_line(), 0..12), chunks in chunk_sizes()) {
            let lines: Vec<Vec<u8>> = lines.into_iter().map(|mut line| { line.truncate(line.len() - 2); line }).collect();
            let mut msg = lines.join(&b'\n');
            msg.extend_from_slice(b"\r\n");
            let mut framed = Vec::new();
            for (index, line) in lines.iter().enumerate() {
                if index > 0 {
                    framed.push(b'\n');
                }
                if line.first() == Some(&b'.') {
                    framed.push(b'.');
                }
                framed.extend_from_slice(line);
            }
            framed.extend_from_slice(b"\r\n.\r\n");
            let (decoder, consumed) = feed_chunked(DataDecoder::new(usize::MAX), &framed, &chunks);
            prop_assert!(decoder.is_done());
            prop_assert_eq!(consumed, framed.len());
            prop_assert_eq!(decoder.finish(), Ok(msg));
        }

        #[test]
        fn prop_one_octet_over_the_limit_is_too_big(msg in message()) {
            prop_assume!(!msg.is_empty());
            let stuffed = dot_stuff(&msg);
            let (done, consumed, body) = decode_all(&stuffed, msg.len() - 1);
            prop_assert!(done);
            prop_assert_eq!(consumed, stuffed.len());
            prop_assert_eq!(body, Err(DataError::TooBig));
        }

        #[test]
        fn prop_fake_terminators_never_end_data(input in smuggling_input(), chunks in chunk_sizes()) {
            prop_assert!(find(&input, b"\r\n.\r\n").is_none() && !input.starts_with(b".\r\n"));
            let (decoder, consumed) = feed_chunked(DataDecoder::new(usize::MAX), &input, &chunks);
            prop_assert!(!decoder.is_done());
            prop_assert_eq!(consumed, input.len());
        }

        #[test]
        fn prop_done_exactly_at_first_real_terminator(input in prop::collection::vec(
            prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'.'), any::<u8>()], 0..200)) {
            let mut framed = b"\r\n".to_vec();
            framed.extend_from_slice(&input);
            let expected = find(&framed, b"\r\n.\r\n").map(|pos| pos + 5 - 2);
            let (done, consumed, _) = decode_all(&input, usize::MAX);
            prop_assert_eq!(done, expected.is_some());
            prop_assert_eq!(consumed, expected.unwrap_or(input.len()));
        }

        #[test]
        fn prop_bytes_after_terminator_are_not_consumed(
            msg in prop::collection::vec(any::<u8>(), 0..2000),
            tail in prop::collection::vec(any::<u8>(), 0..200),
            chunks in chunk_sizes(),
        ) {
            let stuffed = dot_stuff(&msg);
            let mut input = stuffed.clone();
            input.extend_from_slice(&tail);
            let (decoder, consumed) = feed_chunked(DataDecoder::new(usize::MAX), &input, &chunks);
            prop_assert!(decoder.is_done());
            prop_assert_eq!(consumed, stuffed.len());
        }

        #[test]
        fn prop_parsers_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..700)) {
            let _ = parse_command(&bytes);
            let _ = parse_pop3_command(&bytes);
            let _ = ReplyParser::default().feed_line(&bytes);
        }

        #[test]
        fn prop_parse_command_never_panics_on_near_valid_lines(
            verb in "(?i)(MAIL FROM:|RCPT TO:|EHLO |HELO |LHLO |VRFY |DATA|NOOP |QUIT)",
            rest in "[ <>@=.a-zA-Z0-9\u{e9}\u{4e2d}\t]{0,600}",
        ) {
            let _ = parse_command(format!("{verb}{rest}").as_bytes());
        }

        #[test]
        fn prop_reply_round_trips(
            code in 200u16..600,
            enhanced in prop::option::of((0u16..1000, 0u16..1000)),
            first in "([A-Za-z\u{e9}][ -~\u{e9}\u{4e2d}]{0,60})?",
            more in prop::collection::vec("([A-Za-z][ -~]{0,60})?", 0..63),
        ) {
            let enhanced = enhanced.map(|(s, d)| format!("{}.{s}.{d}", code / 100));
            let mut lines = vec![first];
            lines.extend(more);
            let reply = Reply { code, enhanced, lines };
            let encoded = reply.encode();
            prop_assert!(encoded.ends_with(b"\r\n"));
            let mut parser = ReplyParser::default();
            let mut result = None;
            for line in encoded.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                prop_assert!(result.is_none());
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                result = parser.feed_line(line).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
            }
            prop_assert_eq!(result, Some(reply));
        }
    }

    /// The octet-at-a-time reference the run-at-a-time code must match: `dot_stuff` and
    /// `DataDecoder::feed` as they were written first.
    fn dot_stuff_bytewise(message: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut at_line_start = true;
        let mut bytes = message.iter().copied().peekable();
        while let Some(byte) = bytes.next() {
            if byte == b'\r' || byte == b'\n' {
                if byte == b'\r' && bytes.peek() == Some(&b'\n') {
                    bytes.next();
                }
                out.extend_from_slice(b"\r\n");
                at_line_start = true;
                continue;
            }
            if at_line_start && byte == b'.' {
                out.push(b'.');
            }
            out.push(byte);
            at_line_start = false;
        }
        if !at_line_start {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        out
    }

    fn feed_bytewise(decoder: &mut DataDecoder, input: &[u8]) -> usize {
        for (index, &byte) in input.iter().enumerate() {
            if decoder.is_done() {
                return index;
            }
            decoder.step(byte);
        }
        input.len()
    }

    /// Lines of text, dots, bare CRs and LFs, long lines: what the limits and the state
    /// machine's corners are made of.
    fn framing_soup() -> impl Strategy<Value = Vec<u8>> {
        let fragment = prop_oneof![
            prop::collection::vec(any::<u8>(), 0..40),
            prop::collection::vec(Just(b'a'), 990..1005),
            Just(b"\r\n".to_vec()),
            Just(b"\r".to_vec()),
            Just(b"\n".to_vec()),
            Just(b".".to_vec()),
            Just(b"\r\n.\r\n".to_vec()),
            Just(b"\r\n..".to_vec()),
        ];
        prop::collection::vec(fragment, 0..30).prop_map(|fragments| fragments.concat())
    }

    proptest! {
        #[test]
        fn prop_dot_stuff_matches_the_bytewise_reference(msg in framing_soup()) {
            prop_assert_eq!(dot_stuff(&msg), dot_stuff_bytewise(&msg));
        }

        #[test]
        fn prop_feed_matches_the_bytewise_reference(
            input in framing_soup(),
            chunks in chunk_sizes(),
            max_size in prop_oneof![0usize..3000, Just(usize::MAX)],
            dots_count in any::<bool>(),
        ) {
            let new = || if dots_count { DataDecoder::new(max_size).counting_stuffing_dots() } else { DataDecoder::new(max_size) };
            let (mut fast, mut slow) = (new(), new());
            let mut pos = 0;
            for size in chunks.iter().cycle().take(input.len() + 1) {
                if pos >= input.len() {
                    break;
                }
                let chunk = &input[pos..input.len().min(pos + size)];
                let consumed = fast.feed(chunk);
                prop_assert_eq!(consumed, feed_bytewise(&mut slow, chunk));
                prop_assert_eq!(format!("{fast:?}"), format!("{slow:?}"));
                pos += consumed.max(1);
            }
            prop_assert_eq!(fast.finish(), slow.finish());
        }
    }
}
