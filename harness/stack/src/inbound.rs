//! A remote provider's receiving MX: the peer the mail stack returns mail to. It takes
//! messages for its own domain over SMTP (no BDAT, no extensions but PIPELINING-safe ordering)
//! and records each as it arrives (`MailReceived`), which is the provider handing it to its
//! user's mailbox. It keeps no queue and never fails on purpose: it is the far end the checkers
//! read the MX's DSNs from, so what it records is what crossed the wire into it.
//!
//! Hand-written rather than reusing the MX's session: the MX's rules (users, queue, limits,
//! planted defects) are the system under test, and a peer must not share its bugs.

use super::conn::{Conn, ConnError};
use super::net::Accepted;
use super::wire::{self, Command, DataDecoder, Reply};
use super::{Env, SMTP_PORT};
use history::Event;
use std::time::Duration;

/// Recipients one transaction may name; more get 452 (RFC 5321 §4.5.3.1.8 asks for 100).
const MAX_RECIPIENTS: usize = 100;
/// Largest message taken: a DSN with the original's header section is far smaller.
const MAX_MESSAGE_BYTES: usize = 10 * 1024 * 1024;
/// RFC 5321 §4.5.3.2.7: at least 5 minutes.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Serves SMTP on port 25 for `domain` until the host stops.
pub async fn run(env: Env, hostname: String, domain: String) {
    let Ok(listener) = env.net.listen(SMTP_PORT).await else { return };
    loop {
        let Ok(Accepted { stream, conn, .. }) = listener.accept().await else { continue };
        let (env, hostname, domain) = (env.clone(), hostname.clone(), domain.clone());
        tokio::task::spawn_local(async move {
            let mut session = Session { env: &env, domain: &domain, conn_name: conn, from: None, rcpts: Vec::new() };
            session.serve(Conn::new(stream), &hostname).await;
        });
    }
}

struct Session<'a> {
    env: &'a Env,
    domain: &'a str,
    conn_name: String,
    /// The open transaction's reverse-path ("" for `<>`) and recipients.
    from: Option<String>,
    rcpts: Vec<String>,
}

impl Session<'_> {
    async fn serve(&mut self, mut conn: Conn, hostname: &str) {
        if conn.send(&Reply::new(220, "", &format!("{hostname} ESMTP")).encode()).await.is_err() {
            return;
        }
        loop {
            let reply = match conn.read_line(wire::MAX_COMMAND_LINE - 2, IDLE_TIMEOUT).await {
                Ok(line) => match wire::parse_command(&line) {
                    Ok(Command::Quit) => {
                        let _ = conn.send(&Reply::new(221, "2.0.0", "bye").encode()).await;
                        return;
                    }
                    Ok(Command::Data) => match self.data(&mut conn).await {
                        Some(reply) => reply,
                        None => return,
                    },
                    Ok(command) => self.command(command, hostname),
                    Err(_) => Reply::new(500, "5.5.2", "command not recognized"),
                },
                Err(ConnError::TooLong) => Reply::new(500, "5.5.6", "line too long"),
                Err(_) => return,
            };
            if conn.send(&reply.encode()).await.is_err() {
                return;
            }
        }
    }

    fn command(&mut self, command: Command, hostname: &str) -> Reply {
        match command {
            Command::Ehlo(_) | Command::Helo(_) => {
                self.reset();
                Reply::new(250, "", hostname)
            }
            Command::Mail { from, .. } if self.from.is_none() => {
                self.from = Some(from);
                Reply::new(250, "2.1.0", "ok")
            }
            Command::Mail { .. } => Reply::new(503, "5.5.1", "nested MAIL"),
            Command::Rcpt { .. } if self.from.is_none() => Reply::new(503, "5.5.1", "need MAIL first"),
            Command::Rcpt { .. } if self.rcpts.len() >= MAX_RECIPIENTS => Reply::new(452, "4.5.3", "too many recipients"),
            Command::Rcpt { to, .. } if to.rsplit_once('@').is_some_and(|(_, domain)| domain.eq_ignore_ascii_case(self.domain)) => {
                self.rcpts.push(to);
                Reply::new(250, "2.1.5", "ok")
            }
            Command::Rcpt { .. } => Reply::new(550, "5.7.1", "relay access denied"),
            Command::Rset => {
                self.reset();
                Reply::new(250, "2.0.0", "ok")
            }
            Command::Noop => Reply::new(250, "2.0.0", "ok"),
            _ => Reply::new(502, "5.5.1", "command not implemented"),
        }
    }

    /// Reads the message and takes it: None when the connection is gone.
    async fn data(&mut self, conn: &mut Conn) -> Option<Reply> {
        let (Some(from), false) = (self.from.clone(), self.rcpts.is_empty()) else {
            return Some(Reply::new(503, "5.5.1", "need MAIL and RCPT first"));
        };
        conn.send(&Reply::new(354, "", "end data with <CR><LF>.<CR><LF>").encode()).await.ok()?;
        let mut decoder = DataDecoder::new(MAX_MESSAGE_BYTES);
        conn.read_data(&mut decoder, IDLE_TIMEOUT).await.ok()?;
        let rcpts = std::mem::take(&mut self.rcpts);
        self.from = None;
        let Ok(message) = decoder.finish() else {
            return Some(Reply::new(552, "5.3.4", "message refused"));
        };
        let content = String::from_utf8_lossy(&message).into_owned();
        self.env.journal.record(Event::MailReceived { conn: self.conn_name.as_str().into(), mail_from: from.into(), rcpts, content: content.into() });
        Some(Reply::new(250, "2.0.0", "delivered"))
    }

    fn reset(&mut self) {
        self.from = None;
        self.rcpts.clear();
    }
}
