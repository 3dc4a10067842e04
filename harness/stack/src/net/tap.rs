//! The wire tap: what crossed a server's socket, recorded by the network layer beside the
//! stack, never by the stack itself. Checkers judge replies by these records (when a 2xx went
//! out, how many replies an LMTP data phase got), so a stack whose own log and wire disagree is
//! caught.
//!
//! It understands just enough SMTP/LMTP framing to leave message data out of the history: a
//! `354` reply starts a DATA block, which ends at the line `.`; a `BDAT n` command is followed
//! by n octets of data. Everything else the client sends is a command line.
//!
//! Network-layer code, not stack behaviour: it lives here so the simulated network and real
//! sockets (live mode) share it. No planted defect touches it.

use super::BoxStream;
use history::{Event, Journal};
use std::cell::Cell;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Longest line kept in a record; a longer one is cut (with `…`): the history stays bounded
/// whatever a client sends.
const MAX_RECORDED_LINE: usize = 200;
/// Longest partial line buffered while waiting for its end.
const MAX_PENDING_LINE: usize = 4096;

/// How the tap reads the client's bytes.
enum ClientMode {
    /// Command lines.
    Commands,
    /// A DATA block: skip lines until the one that is exactly `.`.
    Data { line_start: Vec<u8> },
    /// A BDAT chunk: skip this many octets.
    Chunk { remaining: u64 },
}

/// A server-side stream that records what crosses it.
pub struct Tap {
    inner: BoxStream,
    journal: Journal,
    conn: String,
    client_line: Vec<u8>,
    client_mode: ClientMode,
    server_line: Vec<u8>,
    closed: bool,
    /// Set while the world tears the server's host down (a crash, the end of a run): a stream
    /// dropped then was not closed by the server.
    teardown: Rc<Cell<bool>>,
}

impl Tap {
    /// Wraps an accepted stream, recording its opening.
    pub fn wrap(inner: BoxStream, journal: Journal, conn: String, protocol: &str, peer: &str, teardown: Rc<Cell<bool>>) -> BoxStream {
        journal.record(Event::WireOpen { conn: conn.as_str().into(), protocol: protocol.into(), peer: peer.into() });
        Box::new(Tap { inner, journal, conn, client_line: Vec::new(), client_mode: ClientMode::Commands, server_line: Vec::new(), closed: false, teardown })
    }

    fn closed(&mut self, how: String) {
        if !self.closed {
            self.closed = true;
            self.journal.record(Event::WireClosed { conn: self.conn.as_str().into(), how: how.into() });
        }
    }

    /// Feeds bytes the server read from the client.
    fn from_client(&mut self, mut bytes: &[u8]) {
        let limit = bytes.len() + 1;
        for _ in 0..limit {
            if bytes.is_empty() {
                return;
            }
            let consumed = match &mut self.client_mode {
                ClientMode::Chunk { remaining } => {
                    let skip = (*remaining).min(bytes.len() as u64);
                    *remaining -= skip;
                    if *remaining == 0 {
                        self.client_mode = ClientMode::Commands;
                    }
                    skip as usize
                }
                ClientMode::Data { line_start } => {
                    let (consumed, ended) = skip_data(line_start, bytes);
                    if ended {
                        self.client_mode = ClientMode::Commands;
                        self.record_command(b".");
                    }
                    consumed
                }
                ClientMode::Commands => {
                    let consumed = take_line(&mut self.client_line, bytes);
                    if self.client_line.last() == Some(&b'\n') {
                        let line = std::mem::take(&mut self.client_line);
                        self.record_command(&line);
                    }
                    consumed
                }
            };
            debug_assert!(consumed > 0, "each round consumes a byte");
            bytes = &bytes[consumed.max(1).min(bytes.len())..];
        }
    }

    fn record_command(&mut self, line: &[u8]) {
        let line = printable(line);
        if let Some(size) = bdat_size(&line) {
            self.client_mode = ClientMode::Chunk { remaining: size };
            if size == 0 {
                self.client_mode = ClientMode::Commands;
            }
        }
        self.journal.record(Event::WireCommand { conn: self.conn.as_str().into(), line: line.into() });
    }

    /// Feeds bytes the server wrote to the client.
    fn from_server(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let consumed = take_line(&mut self.server_line, bytes);
            bytes = &bytes[consumed..];
            if self.server_line.last() != Some(&b'\n') {
                continue;
            }
            let line = printable(&std::mem::take(&mut self.server_line));
            // "250-..." continues a multi-line reply; its last line ("250 ...") completes it.
            if line.as_bytes().get(3) == Some(&b'-') {
                continue;
            }
            if line.starts_with("354") {
                self.client_mode = ClientMode::Data { line_start: Vec::new() };
            }
            self.journal.record(Event::WireReply { conn: self.conn.as_str().into(), reply: line.into() });
        }
    }
}

/// Appends `bytes` up to and including the first `\n` to `line` (keeping at most
/// MAX_PENDING_LINE of it); returns how many bytes it consumed.
fn take_line(line: &mut Vec<u8>, bytes: &[u8]) -> usize {
    let consumed = bytes.iter().position(|&b| b == b'\n').map_or(bytes.len(), |end| end + 1);
    let room = MAX_PENDING_LINE.saturating_sub(line.len());
    line.extend_from_slice(&bytes[..consumed.min(room)]);
    if consumed > room && bytes[consumed - 1] == b'\n' {
        line.push(b'\n'); // a cut line still ends, so the framing stays in step
    }
    consumed
}

/// Skips DATA bytes; `line_start` keeps the first bytes of the current line across reads.
/// Returns how many bytes were consumed and whether the terminating `.` line ended.
fn skip_data(line_start: &mut Vec<u8>, bytes: &[u8]) -> (usize, bool) {
    for (index, &byte) in bytes.iter().enumerate() {
        if byte == b'\n' {
            let terminator = matches!(line_start.as_slice(), b"." | b".\r");
            line_start.clear();
            if terminator {
                return (index + 1, true);
            }
        } else if line_start.len() < 3 {
            line_start.push(byte);
        } else if line_start.len() == 3 {
            line_start.push(b'x'); // long enough to be no terminator; stop growing
        }
    }
    (bytes.len(), false)
}

/// `BDAT <size> [LAST]` → the size of the chunk that follows.
fn bdat_size(line: &str) -> Option<u64> {
    let mut words = line.split_ascii_whitespace();
    if !words.next()?.eq_ignore_ascii_case("BDAT") {
        return None;
    }
    words.next()?.parse().ok()
}

/// A line as text for the history: no line ending, control bytes shown as `?`, cut to
/// MAX_RECORDED_LINE characters.
fn printable(line: &[u8]) -> String {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    // The usual line, short and printable ASCII, is its own text (what the general case
    // below would make of it, without decoding it character by character).
    if line.len() <= MAX_RECORDED_LINE && line.iter().all(|&byte| (b' '..=b'~').contains(&byte)) {
        return String::from_utf8_lossy(line).into_owned();
    }
    let mut text: String = String::from_utf8_lossy(line).chars().map(|c| if c.is_control() { '?' } else { c }).take(MAX_RECORDED_LINE).collect();
    if line.len() > MAX_RECORDED_LINE {
        text.push('…');
    }
    text
}

impl Drop for Tap {
    /// The server let go of the connection (an idle timeout, the end of its session) without
    /// the client closing it or a failure.
    fn drop(&mut self) {
        if !self.teardown.get() {
            self.closed("closed by server".into());
        }
    }
}

impl AsyncRead for Tap {
    fn poll_read(mut self: Pin<&mut Self>, context: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(context, buf);
        match &result {
            Poll::Ready(Ok(())) if buf.filled().len() == before => self.closed("eof".into()),
            Poll::Ready(Ok(())) => self.from_client(&buf.filled()[before..]),
            Poll::Ready(Err(error)) => self.closed(format!("error: {}", error.kind())),
            Poll::Pending => {}
        }
        result
    }
}

impl AsyncWrite for Tap {
    fn poll_write(mut self: Pin<&mut Self>, context: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(context, buf);
        match &result {
            Poll::Ready(Ok(written)) => self.from_server(&buf[..*written]),
            Poll::Ready(Err(error)) => self.closed(format!("error: {}", error.kind())),
            Poll::Pending => {}
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(context)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(context)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;

    fn tap() -> (Tap, Rc<RefCell<history::History>>) {
        let history = Rc::new(RefCell::new(history::History::default()));
        let journal = Journal::new(history.clone(), "mx", Rc::new(|| 0));
        let (inner, _other) = tokio::io::duplex(64);
        let tap = Tap { inner: Box::new(inner), journal, conn: "mx:25#1".into(), client_line: Vec::new(), client_mode: ClientMode::Commands, server_line: Vec::new(), closed: false, teardown: Rc::default() };
        (tap, history)
    }

    fn recorded(history: &Rc<RefCell<history::History>>) -> Vec<String> {
        history.borrow().records.iter().map(|r| match &r.event {
            Event::WireCommand { line, .. } => format!("C {line}"),
            Event::WireReply { reply, .. } => format!("S {reply}"),
            other => format!("{other:?}"),
        }).collect()
    }

    #[test]
    fn data_is_left_out_and_its_end_is_a_dot_line() {
        let (mut tap, history) = tap();
        tap.from_server(b"220 hi\r\n");
        tap.from_client(b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDA");
        tap.from_client(b"TA\r\n");
        tap.from_server(b"250 ok\r\n250 ok\r\n354 go\r\n");
        // A line "..x" (stuffed) and a split terminator are data, then the end.
        tap.from_client(b"Subject: x\r\n..not the end\r\n.");
        tap.from_client(b"\r\nQUIT\r\n");
        tap.from_server(b"250-first\r\n250 2.0.0 <c@d> delivered\r\n");
        assert_eq!(recorded(&history), ["S 220 hi", "C MAIL FROM:<a@b>", "C RCPT TO:<c@d>", "C DATA", "S 250 ok", "S 250 ok", "S 354 go", "C .", "C QUIT", "S 250 2.0.0 <c@d> delivered"]);
    }

    #[test]
    fn a_bdat_chunk_is_skipped_by_its_size_whatever_it_contains() {
        let (mut tap, history) = tap();
        tap.from_client(b"BDAT 11 LAST\r\nQUIT\r\n.\r\n\r\nRSET\r\n");
        assert_eq!(recorded(&history), ["C BDAT 11 LAST", "C RSET"]);
    }

    #[test]
    fn printable_ascii_takes_the_short_way_to_the_same_text() {
        let general = |line: &[u8]| {
            let line = line.strip_suffix(b"\n").unwrap_or(line);
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let mut text: String = String::from_utf8_lossy(line).chars().map(|c| if c.is_control() { '?' } else { c }).take(MAX_RECORDED_LINE).collect();
            if line.len() > MAX_RECORDED_LINE {
                text.push('…');
            }
            text
        };
        let mut lines: Vec<Vec<u8>> = vec![b"MAIL FROM:<a@b> SIZE=12\r\n".to_vec(), b"\r\n".to_vec(), b"NOOP\x7f\r\n".to_vec(), b"x\ty\n".to_vec(), "caf\u{e9}\r\n".as_bytes().to_vec()];
        lines.extend([199, 200, 201].map(|len| [vec![b'~'; len], b"\r\n".to_vec()].concat()));
        lines.extend((0u8..=255).map(|byte| vec![b'a', byte, b'\r', b'\n']));
        for line in lines {
            assert_eq!(printable(&line), general(&line), "{line:?}");
        }
    }

    #[test]
    fn hostile_lines_are_cut_and_control_bytes_shown() {
        let (mut tap, history) = tap();
        let mut long = vec![b'A'; 10_000];
        long.extend_from_slice(b"\r\nNOOP\x00\r\n");
        tap.from_client(&long);
        let lines = recorded(&history);
        assert_eq!(lines.len(), 2);
        assert!(lines[0].chars().count() <= MAX_RECORDED_LINE + 3, "{}", lines[0].len());
        assert_eq!(lines[1], "C NOOP?");
    }
}
