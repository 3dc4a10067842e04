//! A connection with bounded, timed line and DATA reads. Hand-written rather than a codec crate
//! because DATA must leave pipelined bytes after the terminator in the buffer, and every read
//! needs its own RFC 5321 timeout.
//!
//! A [`Wait`] bounds each read() of the socket (`idle`) and, when `total` is set, the whole line
//! or body: a peer that trickles one octet per idle period would otherwise hold a session for
//! ever with a single command.

use super::net::BoxStream;
use super::wire::DataDecoder;
use bytes::BufMut;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
// tokio's clock, not the wall's: under turmoil it is the simulated clock, so deadlines replay.
use tokio::time::Instant;

const READ_CHUNK: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnError {
    /// The peer closed the connection.
    Closed,
    Timeout,
    Io(String),
    /// A line longer than the limit; the rest of it has been discarded.
    TooLong,
}

impl ConnError {
    pub fn describe(&self) -> String {
        match self {
            ConnError::Closed => "connection closed".into(),
            ConnError::Timeout => "timed out".into(),
            ConnError::Io(text) => text.clone(),
            ConnError::TooLong => "line too long".into(),
        }
    }
}

/// How long a read may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wait {
    /// Each read() of the socket must return within this.
    pub idle: Duration,
    /// The whole line must have arrived within this of its first octet; a DATA body or a chunk
    /// within this of the start of its read. None: no bound but `idle` (the simulation's peers
    /// never trickle, and its digests must not change).
    pub total: Option<Duration>,
}

impl From<Duration> for Wait {
    fn from(idle: Duration) -> Wait {
        Wait { idle, total: None }
    }
}

impl Wait {
    /// The deadline of a line or body whose first octet is here now.
    fn deadline(&self) -> Option<Instant> {
        self.total.map(|total| Instant::now() + total)
    }
}

pub struct Conn {
    stream: BoxStream,
    buffer: Vec<u8>,
}

impl Conn {
    pub fn new(stream: BoxStream) -> Conn {
        Conn { stream, buffer: Vec::with_capacity(READ_CHUNK) }
    }

    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), ConnError> {
        self.stream.write_all(bytes).await.map_err(|error| ConnError::Io(error.kind().to_string()))?;
        self.stream.flush().await.map_err(|error| ConnError::Io(error.kind().to_string()))
    }

    /// One read() within `idle`, and before `deadline` when there is one.
    async fn fill(&mut self, idle: Duration, deadline: Option<Instant>) -> Result<(), ConnError> {
        // Straight into the buffer's spare room, READ_CHUNK octets at most, as a read into a
        // READ_CHUNK array would (how much one read takes decides when the tap records what it
        // carried), but without zeroing and copying an array for every read.
        self.buffer.reserve(READ_CHUNK);
        let mut room = (&mut self.buffer).limit(READ_CHUNK);
        let read = match deadline {
            None => tokio::time::timeout(idle, self.stream.read_buf(&mut room)).await,
            Some(deadline) => tokio::time::timeout_at(deadline.min(Instant::now() + idle), self.stream.read_buf(&mut room)).await,
        };
        match read {
            Err(_) => Err(ConnError::Timeout),
            Ok(Err(error)) => Err(ConnError::Io(error.kind().to_string())),
            Ok(Ok(0)) => Err(ConnError::Closed),
            Ok(Ok(_)) => Ok(()),
        }
    }

    /// One line without its line end. LF alone is accepted as a line end for commands, as
    /// lenient servers do; DATA framing never goes through here.
    pub async fn read_line(&mut self, max_len: usize, wait: impl Into<Wait>) -> Result<Vec<u8>, ConnError> {
        let wait = wait.into();
        let mut deadline = self.line_deadline(&wait, None);
        let mut discarding = false;
        loop {
            if let Some(position) = self.buffer.iter().position(|&byte| byte == b'\n') {
                let mut line: Vec<u8> = self.buffer.drain(..=position).collect();
                if discarding {
                    return Err(ConnError::TooLong);
                }
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return if line.len() > max_len { Err(ConnError::TooLong) } else { Ok(line) };
            }
            if self.buffer.len() > max_len {
                // Keep memory bounded: drop what we have and remember to report the long line.
                self.buffer.clear();
                discarding = true;
            }
            self.fill(wait.idle, deadline).await?;
            deadline = self.line_deadline(&wait, deadline);
        }
    }

    /// As [`Conn::read_line`], but a line longer than the limit comes back as `Err(head)`: its
    /// first `max_len` octets, the rest read and discarded (memory stays bounded), so that a
    /// server can still answer the command's tag (IMAP).
    pub async fn read_line_or_head(&mut self, max_len: usize, wait: impl Into<Wait>) -> Result<Result<Vec<u8>, Vec<u8>>, ConnError> {
        let wait = wait.into();
        let mut deadline = self.line_deadline(&wait, None);
        let mut head: Option<Vec<u8>> = None;
        loop {
            if let Some(position) = self.buffer.iter().position(|&byte| byte == b'\n') {
                let mut line: Vec<u8> = self.buffer.drain(..=position).collect();
                if let Some(head) = head {
                    return Ok(Err(head));
                }
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                if line.len() > max_len {
                    line.truncate(max_len);
                    return Ok(Err(line));
                }
                return Ok(Ok(line));
            }
            if self.buffer.len() > max_len {
                if head.is_none() {
                    head = Some(self.buffer[..max_len].to_vec());
                }
                self.buffer.clear();
            }
            self.fill(wait.idle, deadline).await?;
            deadline = self.line_deadline(&wait, deadline);
        }
    }

    /// A line's deadline runs from its first octet: waiting for a command to begin is bounded
    /// by `idle` alone, as RFC 5321 §4.5.3.2.7's server timeout asks. A line too long to keep
    /// (its start dropped) keeps the deadline it had.
    fn line_deadline(&self, wait: &Wait, deadline: Option<Instant>) -> Option<Instant> {
        match deadline {
            Some(deadline) => Some(deadline),
            None if self.buffer.is_empty() => None,
            None => wait.deadline(),
        }
    }

    /// Reads exactly `len` octets (a BDAT chunk). With `into`, they are appended there;
    /// without, they are read and dropped, so a refused chunk costs no memory.
    pub async fn read_exact(&mut self, len: usize, mut into: Option<&mut Vec<u8>>, wait: impl Into<Wait>) -> Result<(), ConnError> {
        let wait = wait.into();
        let deadline = wait.deadline();
        let mut left = len;
        loop {
            let take = left.min(self.buffer.len());
            if let Some(sink) = into.as_deref_mut() {
                sink.extend_from_slice(&self.buffer[..take]);
            }
            self.buffer.drain(..take);
            left -= take;
            if left == 0 {
                return Ok(());
            }
            self.fill(wait.idle, deadline).await?;
        }
    }

    /// Feeds the connection into `decoder` until it has seen the terminator.
    pub async fn read_data(&mut self, decoder: &mut DataDecoder, wait: impl Into<Wait>) -> Result<(), ConnError> {
        let wait = wait.into();
        let deadline = wait.deadline();
        loop {
            let consumed = decoder.feed(&self.buffer);
            self.buffer.drain(..consumed);
            if decoder.is_done() {
                return Ok(());
            }
            self.fill(wait.idle, deadline).await?;
        }
    }
}
