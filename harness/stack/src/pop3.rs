//! The POP3 server (RFC 1939, CAPA from RFC 2449) on the store host.
//!
//! A user reads only their own mailbox; a session holds the maildrop lock. UIDL values are
//! `UIDVALIDITY.UID`, so they name one message forever as long as UIDs are never reused (A19).
//! A message whose bytes no longer match the checksum in its file name is never served as
//! if intact: RETR answers -ERR [SYS/TEMP] instead.
//!
//! Messages are served from `new/` and `cur/` alike. With `mark_read_on_retr` (Dovecot's
//! default), a message served by RETR is marked read: moved into `cur/` with the seen flag
//! (`store::mark_read`); DELE then removes it from wherever it is.

use super::conn::{Conn, ConnError, Wait};
use super::login::LoginGuard;
use super::net::Accepted;
use super::store::{self, checksum, Entry, Index, StoreConfig};
use super::wire::{self, Pop3Command};
use super::{Defect, Env, POP3_PORT};
use history::Event;
use disk::parent;
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::rc::Rc;

/// The password of each user in simulation: `pw-<user>`.
pub fn password_of(user: &str) -> String {
    format!("pw-{user}")
}

pub async fn serve(env: Env, config: Rc<StoreConfig>, index: Index) {
    let Ok(listener) = env.net.listen(POP3_PORT).await else { return };
    let sessions = Rc::new(std::cell::Cell::new(0usize));
    loop {
        let Ok(Accepted { stream, .. }) = listener.accept().await else { continue };
        let mut conn = Conn::new(stream);
        if sessions.get() >= config.pop3_max_sessions {
            // RFC 2449 §8.1.2: a temporary condition; the client should try again later.
            let _ = conn.send(&err("[SYS/TEMP] too many connections, try again later")).await;
            continue;
        }
        sessions.set(sessions.get() + 1);
        let (env, config, index, sessions) = (env.clone(), config.clone(), index.clone(), sessions.clone());
        tokio::task::spawn_local(async move {
            let mut session = Session::new(&env, &config, &index);
            session.run(conn).await;
            session.unlock();
            sessions.set(sessions.get() - 1);
        });
    }
}

struct Session<'a> {
    env: &'a Env,
    config: &'a StoreConfig,
    index: &'a Index,
    /// The name given by USER, before PASS.
    user: Option<String>,
    /// The mailbox this session has locked (TRANSACTION state).
    locked: Option<String>,
    /// The maildrop as it was at login: message number n is `view[n-1]` (uid, entry).
    view: Vec<(u64, Entry)>,
    deleted: BTreeSet<usize>,
    /// A crash point fired in this session: it stops at once, answering nothing.
    crashed: bool,
    /// Failed PASS commands and the deadline to log in by.
    login: LoginGuard,
}

fn ok(text: &str) -> Vec<u8> {
    format!("+OK {text}\r\n").into_bytes()
}

fn err(text: &str) -> Vec<u8> {
    format!("-ERR {text}\r\n").into_bytes()
}

impl<'a> Session<'a> {
    fn new(env: &'a Env, config: &'a StoreConfig, index: &'a Index) -> Session<'a> {
        Session { env, config, index, user: None, locked: None, view: Vec::new(), deleted: BTreeSet::new(), crashed: false, login: LoginGuard::new(config) }
    }

    async fn run(&mut self, mut conn: Conn) {
        if conn.send(&ok("POP3 server ready")).await.is_err() {
            return;
        }
        loop {
            let line = match self.read_command(&mut conn).await {
                Ok(line) => line,
                Err(ConnError::TooLong) => {
                    let _ = conn.send(&err("line too long")).await;
                    continue;
                }
                Err(ConnError::Timeout) if self.login.expired(self.locked.is_some()) => {
                    let _ = conn.send(&err("[AUTH] no login within the time allowed, closing")).await;
                    return;
                }
                Err(_) => return,
            };
            let failures = self.login.failures();
            let response = match wire::parse_pop3_command(&line) {
                Ok(Pop3Command::Quit) => {
                    let response = self.quit().await;
                    let _ = conn.send(&response).await;
                    return;
                }
                Ok(command) => self.respond(command).await,
                Err(text) => err(&text),
            };
            if self.crashed {
                return;
            }
            let close = self.login.failures() > failures && self.login.throttle(self.config).await;
            if conn.send(&response).await.is_err() || close {
                return;
            }
        }
    }

    /// The next command line; before login, also bounded by the login deadline, so that a
    /// client cannot stay unauthenticated for ever by keeping busy.
    async fn read_command(&self, conn: &mut Conn) -> Result<Vec<u8>, ConnError> {
        let wait = Wait { idle: self.config.idle_timeout, total: self.config.command_total_timeout };
        self.login.bounded(self.locked.is_some(), conn.read_line(253, wait)).await
    }

    fn unlock(&mut self) {
        if let Some(user) = self.locked.take() {
            if let Some(mailbox) = self.index.mailboxes.borrow_mut().get_mut(&user) {
                mailbox.locked = false;
            }
        }
    }

    async fn respond(&mut self, command: Pop3Command) -> Vec<u8> {
        if self.locked.is_none() {
            return self.authorize(command);
        }
        match command {
            Pop3Command::Stat => {
                let live = self.live();
                let size: u64 = live.iter().map(|(_, (_, entry))| entry.size).sum();
                ok(&format!("{} {size}", live.len()))
            }
            Pop3Command::List(None) => self.listing(|_, entry| entry.size.to_string()),
            Pop3Command::Uidl(None) => {
                let uidvalidity = self.uidvalidity();
                self.record_listing(uidvalidity);
                self.listing(move |uid, _| format!("{uidvalidity}.{uid}"))
            }
            Pop3Command::List(Some(number)) => match self.message(number) {
                Some((_, entry)) => ok(&format!("{number} {}", entry.size)),
                None => err("no such message"),
            },
            Pop3Command::Uidl(Some(number)) => match self.message(number) {
                Some((uid, _)) => ok(&format!("{number} {}.{uid}", self.uidvalidity())),
                None => err("no such message"),
            },
            Pop3Command::Retr(number) => self.retrieve(number).await,
            Pop3Command::Top(number, lines) => self.top(number, lines).await,
            Pop3Command::Dele(number) => match self.message(number) {
                Some(_) => {
                    self.deleted.insert(number as usize);
                    ok("message deleted")
                }
                None => err("no such message"),
            },
            Pop3Command::Rset => {
                self.deleted.clear();
                ok("maildrop reset")
            }
            Pop3Command::Noop => ok(""),
            Pop3Command::Capa => capabilities(),
            Pop3Command::User(_) | Pop3Command::Pass(_) => err("already authenticated"),
            Pop3Command::Quit => err("unreachable"),
        }
    }

    fn authorize(&mut self, command: Pop3Command) -> Vec<u8> {
        match command {
            Pop3Command::Capa => capabilities(),
            Pop3Command::User(name) => {
                self.user = Some(name.to_ascii_lowercase());
                ok("send PASS")
            }
            Pop3Command::Pass(password) => {
                let Some(user) = self.user.take() else { return err("send USER first") };
                if self.config.cohorts.is_offline(&user) {
                    return err("[SYS/TEMP] mailbox offline while it is restored, try again later");
                }
                let mut mailboxes = self.index.mailboxes.borrow_mut();
                let Some(mailbox) = mailboxes.get_mut(&user).filter(|_| password == password_of(&user)) else {
                    self.login.failed();
                    return err("[AUTH] invalid user or password");
                };
                if mailbox.locked {
                    return err("[IN-USE] maildrop already locked");
                }
                mailbox.locked = true;
                self.view = mailbox.messages.iter().map(|(uid, entry)| (*uid, entry.clone())).collect();
                self.locked = Some(user);
                ok("maildrop locked and ready")
            }
            Pop3Command::Noop => ok(""),
            _ => err("authenticate first"),
        }
    }

    fn uidvalidity(&self) -> u64 {
        let mailboxes = self.index.mailboxes.borrow();
        self.locked.as_ref().and_then(|user| mailboxes.get(user)).map(|mailbox| mailbox.uidvalidity).unwrap_or(0)
    }

    /// Messages not marked deleted, with their 1-based numbers.
    fn live(&self) -> Vec<(usize, &(u64, Entry))> {
        self.view.iter().enumerate().map(|(i, item)| (i + 1, item)).filter(|(n, _)| !self.deleted.contains(n)).collect()
    }

    fn message(&self, number: u32) -> Option<(u64, &Entry)> {
        let number = number as usize;
        if number == 0 || self.deleted.contains(&number) {
            return None;
        }
        self.view.get(number - 1).map(|(uid, entry)| (*uid, entry))
    }

    fn listing(&self, column: impl Fn(u64, &Entry) -> String) -> Vec<u8> {
        let mut body = String::new();
        for (number, (uid, entry)) in self.live() {
            // Written in place: no string of its own for every line of a large mailbox.
            let _ = write!(body, "{number} {}\r\n", column(*uid, entry));
        }
        let mut response = ok("listing follows");
        body.push_str(".\r\n");
        response.extend_from_slice(body.as_bytes());
        response
    }

    /// TOP (RFC 1939 §7): the header, the blank line and the first `lines` lines of the body,
    /// checksum-verified as RETR is, and unlike RETR never marking the message read (a client
    /// previewing its mail has not read it).
    async fn top(&mut self, number: u32, lines: u32) -> Vec<u8> {
        let Some((uid, entry)) = self.message(number).map(|(uid, entry)| (uid, entry.clone())) else { return err("no such message") };
        match self.verified(uid, &entry).await {
            Ok(bytes) => {
                let mut response = ok("top of message follows");
                response.extend_from_slice(&wire::dot_stuff(head_of(&bytes, lines)));
                response
            }
            Err(response) => response,
        }
    }

    /// The message's bytes when they match its checksum, else the -ERR to answer (the damage
    /// reported to the history).
    async fn verified(&self, uid: u64, entry: &Entry) -> Result<Vec<u8>, Vec<u8>> {
        let trust = self.env.defects.has(Defect::NoChecksum); // the planted bug: serve unchecked
        match self.env.disk.read(&entry.file).await {
            Ok(bytes) if trust || checksum(&bytes) == entry.checksum => Ok(bytes),
            Ok(_) => {
                let mailbox = self.locked.clone().unwrap_or_default();
                self.env.journal.record(Event::StoreCorruption { mailbox: mailbox.into(), uid, file: entry.file.as_str().into() });
                Err(err("[SYS/PERM] message damaged on storage, not served"))
            }
            Err(_) => Err(err("[SYS/TEMP] storage error, try again later")),
        }
    }

    async fn retrieve(&mut self, number: u32) -> Vec<u8> {
        let Some((uid, entry)) = self.message(number).map(|(uid, entry)| (uid, entry.clone())) else { return err("no such message") };
        match self.verified(uid, &entry).await {
            Ok(bytes) => {
                if self.config.mark_read_on_retr {
                    let user = self.locked.clone().unwrap_or_default();
                    let Ok(now) = store::mark_read(self.env, self.index, &user, uid, &entry).await else {
                        // A crash point fired: the host is going down, answer nothing more.
                        self.crashed = true;
                        return Vec::new();
                    };
                    if let Some(seen) = self.view.get_mut(number as usize - 1) {
                        seen.1 = now;
                    }
                }
                self.record_sent(uid, &bytes);
                let mut response = ok(&format!("{} octets", bytes.len()));
                response.extend_from_slice(&wire::dot_stuff(&bytes));
                response
            }
            Err(response) => response,
        }
    }

    /// UPDATE state (RFC 1939 §6): remove the messages marked deleted, durably, then answer.
    async fn quit(&mut self) -> Vec<u8> {
        if self.locked.is_none() {
            return ok("bye");
        }
        // Remove what can be removed; the index forgets exactly what is gone.
        let mut removed = Vec::new();
        let mut failed = false;
        let user = self.locked.clone().unwrap_or_default();
        let uidvalidity = self.index.mailboxes.borrow().get(&user).map_or(0, |mailbox| mailbox.uidvalidity);
        for number in self.deleted.clone() {
            let Some((uid, entry)) = self.view.get(number - 1).cloned() else { continue };
            // Said before the file goes, so that an account of the store is never behind it.
            self.env.journal.record(Event::StoreExpunging { mailbox: user.as_str().into(), uidvalidity, uid, file: entry.file.as_str().into() });
            match self.env.disk.remove(&entry.file).await {
                Ok(()) => removed.push((uid, entry)),
                Err(_) => failed = true,
            }
        }
        let directories: BTreeSet<String> = removed.iter().map(|(_, entry)| parent(&entry.file).to_string()).collect();
        for dir in directories {
            failed |= self.env.disk.fsync_dir(&dir).await.is_err();
        }
        if let Some(user) = self.locked.clone() {
            if let Some(mailbox) = self.index.mailboxes.borrow_mut().get_mut(&user) {
                for (uid, _) in &removed {
                    mailbox.messages.remove(uid);
                }
            }
        }
        if self.config.record_served && !removed.is_empty() {
            let uidls = removed.iter().map(|(uid, _)| format!("{uidvalidity}.{uid}")).collect();
            self.env.journal.record(Event::ClientDeleted { mailbox: user.as_str().into(), uidls, confirmed: !failed });
        }
        if failed {
            return err("[SYS/TEMP] some deleted messages not removed");
        }
        ok("bye")
    }

    /// Live mode (`record_served`): the UIDL listing as the client is sent it.
    fn record_listing(&self, uidvalidity: u64) {
        if !self.config.record_served {
            return;
        }
        let listed = self.live().into_iter().map(|(_, (uid, entry))| (format!("{uidvalidity}.{uid}"), entry.size)).collect();
        self.env.journal.record(Event::ClientListing { mailbox: self.locked.clone().unwrap_or_default().into(), listed });
    }

    /// Live mode (`record_served`): a message as the client is sent it, recorded as a
    /// simulated client records its download.
    fn record_sent(&self, uid: u64, bytes: &[u8]) {
        if !self.config.record_served {
            return;
        }
        self.env.journal.record(Event::ClientFetched(Box::new(history::ClientFetched {
            mailbox: self.locked.clone().unwrap_or_default().into(),
            uidl: format!("{}.{uid}", self.uidvalidity()).into(),
            msg: mail::message::message_id(bytes).unwrap_or_default().into(),
            digest: mail::message::content_digest(bytes).into(),
            size: bytes.len() as u64,
            trace_for: mail::message::trace_recipients(bytes),
        })));
    }
}

/// RFC 2449 §6. PIPELINING is true: commands are read from the connection's buffer, so several
/// in one packet are each answered in turn. No LOGIN-DELAY: it announces a wait between
/// logins, which this server does not impose (it slows failed logins only).
fn capabilities() -> Vec<u8> {
    let mut response = ok("capability list follows");
    response.extend_from_slice(b"USER\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\n.\r\n");
    response
}

/// The header, the blank line after it and the first `lines` lines of the body (a line ends at
/// LF, CRLF included). A message without a blank line is all header, and comes whole.
fn head_of(message: &[u8], lines: u32) -> &[u8] {
    let mut ends = message.iter().enumerate().filter(|(_, &byte)| byte == b'\n').map(|(at, _)| at + 1);
    let mut start = 0;
    let body = loop {
        // The end of the blank line that ends the header.
        let Some(end) = ends.next() else { return message };
        let line = &message[start..end];
        start = end;
        if line == b"\r\n" || line == b"\n" {
            break end;
        }
    };
    if lines == 0 {
        return &message[..body];
    }
    // Fewer lines than asked for: the whole body, its last line even without a line end.
    let end = ends.nth(lines as usize - 1).unwrap_or(message.len());
    &message[..end]
}

#[cfg(test)]
mod tests {
    use super::head_of;

    #[test]
    fn top_takes_the_header_the_blank_line_and_n_body_lines() {
        let message = b"Subject: a\r\nFrom: b\r\n\r\none\r\ntwo\nthree";
        assert_eq!(head_of(message, 0), b"Subject: a\r\nFrom: b\r\n\r\n");
        assert_eq!(head_of(message, 1), b"Subject: a\r\nFrom: b\r\n\r\none\r\n");
        assert_eq!(head_of(message, 2), b"Subject: a\r\nFrom: b\r\n\r\none\r\ntwo\n");
        assert_eq!(head_of(message, 3), message, "the last line without its line end");
        assert_eq!(head_of(message, u32::MAX), message);
        assert_eq!(head_of(b"Subject: only a header\r\n", 5), b"Subject: only a header\r\n");
        assert_eq!(head_of(b"", 1), b"");
        assert_eq!(head_of(b"\n\nbody\n", 0), b"\n", "an empty header: the blank line alone");
    }
}
