//! The IMAP server (an IMAP4rev1 subset, RFC 3501; the same commands in RFC 9051) on the store
//! host, over the index the POP3 server and LMTP delivery share.
//!
//! Commands: CAPABILITY, NOOP, LOGOUT, LOGIN, SELECT, EXAMINE, CHECK, CLOSE, UNSELECT (RFC
//! 3691), EXPUNGE, SEARCH, FETCH and STORE, the last three by sequence number and as UID
//! commands. One mailbox, INBOX. Commands are parsed and responses written by `imap-codec`; the
//! framing around it (lines, literals) is ours and bounded: a line of at most `MAX_LINE` octets,
//! a literal of at most `MAX_LITERAL`, a command of at most `MAX_COMMAND` in all, at most
//! `MAX_COMMANDS` commands per session and `MAX_BAD` invalid ones in a row, then `* BYE`. A
//! hostile line gets BAD, never a panic.
//!
//! The mailbox is the store's maildir. UIDs and UIDVALIDITY are the store's (the file name's
//! `U=`, `uidlist`), so an IMAP client and a POP3 client (UIDL `UIDVALIDITY.UID`) name one
//! message alike. Flags live in the file name's info suffix (maildir(5)): `\Seen` is `S`,
//! `\Deleted` `T`, `\Answered` `R`, `\Flagged` `F`, `\Draft` `D`, in ASCII order (`:2,ST`);
//! a message still in `new/` has none and is `\Recent` (no mail reader has seen it; unlike
//! Dovecot, selecting the mailbox leaves it there, so every session sees it recent). A flag
//! change is a rename into `cur/` made durable as the store's other renames are
//! ([`store::set_flags`]); EXPUNGE removes the files durably, as POP3's UPDATE state does. A
//! body is served only when its bytes match the checksum in its file name; a damaged one is
//! reported (`StoreCorruption`) and answered NO [CORRUPTION] (RFC 5530).
//!
//! Sessions share the mailbox with each other, not with POP3: the first IMAP session to select
//! a mailbox takes the maildrop lock POP3 takes (RFC 1939 §8), the last to leave it gives it
//! back, and a mailbox a POP3 session holds is answered NO [INUSE]. Sessions never keep a file
//! name: each operation looks the message's UID up in the index, so another session's flag
//! change or expunge is never served stale.
//!
//! The protocol logic ([`Session::execute`]) knows no socket: it takes a parsed command and
//! returns the response octets, so a simulated client or a test can drive it directly.

use super::conn::{Conn, ConnError, Wait};
use super::login::LoginGuard;
use super::net::Accepted;
use super::pop3::password_of;
use super::store::{self, checksum, Entry, Index, StoreConfig};
use super::{Defect, Env, IMAP_PORT};
use history::Event;
use imap_codec::decode::{CommandDecodeError, Decoder};
use imap_codec::encode::Encoder;
use imap_codec::imap_types::command::{Command, CommandBody};
use imap_codec::imap_types::core::{LiteralMode, NonEmptyVec, Tag, Text};
use imap_codec::imap_types::fetch::{Macro, MacroOrMessageDataItemNames, MessageDataItem, MessageDataItemName, Section};
use imap_codec::imap_types::flag::{Flag, FlagFetch, FlagPerm, StoreResponse, StoreType};
use imap_codec::imap_types::mailbox::Mailbox as ImapMailbox;
use imap_codec::imap_types::response::{Capability, Code, CodeOther, CommandContinuationRequest, Data, Greeting, Response, Status};
use imap_codec::imap_types::search::SearchKey;
use imap_codec::imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};
use imap_codec::imap_types::core::{IString, Literal, NString};
use imap_codec::{CommandCodec, GreetingCodec, ResponseCodec};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroU32;
use std::rc::Rc;
use std::time::Duration;

/// The longest command line, without its CRLF (RFC 7162 §4 asks servers to take at least 8000).
pub const MAX_LINE: usize = 8192;
/// The longest literal a command may carry: this server has no APPEND, so literals are only
/// ever names and passwords.
pub const MAX_LITERAL: usize = 8192;
/// A whole command, lines and literals together.
pub const MAX_COMMAND: usize = 16 * 1024;
/// A non-synchronizing literal (`{n+}`, not offered) longer than `MAX_LITERAL` is read and
/// dropped up to this size; beyond it the connection is closed.
pub const MAX_DISCARD: usize = 64 * 1024;
/// Commands per session (Dovecot has no such limit; a bound keeps a session finite).
pub const MAX_COMMANDS: u64 = 100_000;
/// Invalid commands in a row before the server says BYE (Dovecot: 20).
pub const MAX_BAD: u32 = 20;
/// The inactivity autologout timer: at least 30 minutes (RFC 3501 §5.4).
pub const AUTOLOGOUT: Duration = Duration::from_secs(30 * 60);

/// The maildir letters of the system flags this server keeps (maildir(5)).
const KNOWN_LETTERS: &str = "DFRST";

/// The IMAP server's state shared by its sessions: per mailbox, how many sessions have it
/// selected (they hold the maildrop lock together), and one lock each for flag changes and
/// expunges, so two sessions never rename or remove one file at once.
#[derive(Default)]
pub struct Shared {
    selected: RefCell<BTreeMap<String, usize>>,
    changes: RefCell<BTreeMap<String, Rc<tokio::sync::Mutex<()>>>>,
}

impl Shared {
    fn change_lock(&self, user: &str) -> Rc<tokio::sync::Mutex<()>> {
        self.changes.borrow_mut().entry(user.to_string()).or_default().clone()
    }
}

/// Serves IMAP forever: one task per connection, at most `imap_max_sessions` at once.
pub async fn serve(env: Env, config: Rc<StoreConfig>, index: Index) {
    let Ok(listener) = env.net.listen(IMAP_PORT).await else { return };
    let sessions = Rc::new(std::cell::Cell::new(0usize));
    let shared = Rc::new(Shared::default());
    loop {
        let Ok(Accepted { stream, .. }) = listener.accept().await else { continue };
        let mut conn = Conn::new(stream);
        if sessions.get() >= config.imap_max_sessions {
            // RFC 3501 §7.1.5: a server that will not serve the client greets with BYE.
            let _ = conn.send(&encode_greeting(Greeting::bye(None, "too many connections, try again later"))).await;
            continue;
        }
        sessions.set(sessions.get() + 1);
        let (env, config, index, sessions, shared) = (env.clone(), config.clone(), index.clone(), sessions.clone(), shared.clone());
        tokio::task::spawn_local(async move {
            let mut session = Session::new(&env, &config, &index, &shared);
            session.run(conn).await;
            session.deselect();
            sessions.set(sessions.get() - 1);
        });
    }
}

/// One command as read off the connection, within the bounds.
#[derive(Debug, PartialEq, Eq)]
pub enum Framed {
    /// Lines and literals of one command, each line with its CRLF: hand it to the codec.
    Command(Vec<u8>),
    /// A line longer than `MAX_LINE`, a literal longer than `MAX_LITERAL`, or a command longer
    /// than `MAX_COMMAND`; the tag, if its start could be read. What was sent is discarded.
    TooLong(Option<String>),
    /// A non-synchronizing literal too long even to discard: the connection must close.
    Abusive,
}

/// The tag at the start of a (possibly malformed) command line, if it is a valid tag.
pub fn tag_of(line: &[u8]) -> Option<String> {
    let end = line.iter().position(|&byte| byte == b' ').unwrap_or(line.len());
    let tag = std::str::from_utf8(&line[..end]).ok()?;
    Tag::try_from(tag).ok().map(|_| tag.to_string())
}

/// Reads one command: a line, and for each literal it announces the literal's octets (after a
/// continuation request when it is synchronizing) and the line after it. With `wait.total`, the
/// first line must arrive within it of its first octet and the rest of the command within it
/// again: a literal a client never finishes, or endless `{0}` literals, cannot hold a session.
pub async fn read_command(conn: &mut Conn, wait: impl Into<Wait>) -> Result<Framed, ConnError> {
    let wait = wait.into();
    let first = conn.read_line_or_head(MAX_LINE, wait).await?;
    match wait.total {
        None => complete_command(conn, first, wait.idle).await,
        Some(total) => tokio::time::timeout(total, complete_command(conn, first, wait.idle)).await.unwrap_or(Err(ConnError::Timeout)),
    }
}

/// The command that starts with `line`: its literals and the lines after them.
async fn complete_command(conn: &mut Conn, mut line: Result<Vec<u8>, Vec<u8>>, idle: Duration) -> Result<Framed, ConnError> {
    let mut command = Vec::new();
    loop {
        match line {
            Ok(line) => {
                command.extend_from_slice(&line);
                command.extend_from_slice(b"\r\n");
            }
            Err(head) => {
                let start = if command.is_empty() { head } else { command };
                return Ok(Framed::TooLong(tag_of(&start)));
            }
        }
        if command.len() > MAX_COMMAND {
            return Ok(Framed::TooLong(tag_of(&command)));
        }
        let (length, mode) = match CommandCodec::default().decode(&command) {
            Err(CommandDecodeError::LiteralFound { length, mode, .. }) => (length as usize, mode),
            _ => return Ok(Framed::Command(command)),
        };
        if length > MAX_LITERAL || command.len() + length > MAX_COMMAND {
            if mode == LiteralMode::NonSync {
                // The client sends the octets unasked: read them into nothing, or give up.
                if length > MAX_DISCARD {
                    return Ok(Framed::Abusive);
                }
                conn.read_exact(length, None, idle).await?;
                let _ = conn.read_line_or_head(MAX_LINE, idle).await?;
            }
            return Ok(Framed::TooLong(tag_of(&command)));
        }
        if mode == LiteralMode::Sync {
            if let Ok(request) = CommandContinuationRequest::basic(None, "ready for literal") {
                conn.send(&ResponseCodec::default().encode(&Response::CommandContinuationRequest(request)).dump()).await?;
            }
        }
        conn.read_exact(length, Some(&mut command), idle).await?;
        line = conn.read_line_or_head(MAX_LINE, idle).await?;
    }
}

/// What a command did to the session.
pub struct Outcome {
    /// The responses, untagged and tagged, as octets.
    pub response: Vec<u8>,
    /// The session ends after these responses (LOGOUT, or a limit reached).
    pub close: bool,
}

/// The selected mailbox of a session.
struct Selected {
    user: String,
    read_only: bool,
    /// Message sequence number n is `uids[n - 1]`: what this session has been told exists.
    uids: Vec<u64>,
}

pub struct Session<'a> {
    env: &'a Env,
    config: &'a StoreConfig,
    index: &'a Index,
    shared: &'a Shared,
    user: Option<String>,
    selected: Option<Selected>,
    commands: u64,
    bad_in_a_row: u32,
    /// Failed LOGIN commands and the deadline to log in by.
    login: LoginGuard,
}

impl<'a> Session<'a> {
    pub fn new(env: &'a Env, config: &'a StoreConfig, index: &'a Index, shared: &'a Shared) -> Session<'a> {
        Session { env, config, index, shared, user: None, selected: None, commands: 0, bad_in_a_row: 0, login: LoginGuard::new(config) }
    }

    /// The greeting: OK with the capabilities.
    pub fn greeting() -> Vec<u8> {
        encode_greeting(Greeting::ok(Some(Code::Capability(capabilities())), "mailchaos IMAP4rev1 ready"))
    }

    async fn run(&mut self, mut conn: Conn) {
        if conn.send(&Session::greeting()).await.is_err() {
            return;
        }
        let wait = Wait { idle: self.config.idle_timeout.max(AUTOLOGOUT), total: self.config.command_total_timeout };
        loop {
            let outcome = match self.read_command(&mut conn, wait).await {
                Ok(Framed::Command(bytes)) => {
                    let failures = self.login.failures();
                    let mut outcome = self.execute_bytes(&bytes).await;
                    if self.login.failures() > failures && self.login.throttle(self.config).await {
                        push(&mut outcome.response, &Response::Status(bye("too many failed logins")));
                        outcome.close = true;
                    }
                    outcome
                }
                Ok(Framed::TooLong(tag)) => self.too_long(tag.as_deref()),
                Ok(Framed::Abusive) => {
                    let mut response = Vec::new();
                    push(&mut response, &Response::Status(bye("literal too long")));
                    Outcome { response, close: true }
                }
                Err(ConnError::Timeout) => {
                    let text = if self.login.expired(self.user.is_some()) { "no login within the time allowed" } else { "autologout: idle for too long" };
                    let mut response = Vec::new();
                    push(&mut response, &Response::Status(bye(text)));
                    let _ = conn.send(&response).await;
                    return;
                }
                Err(_) => return,
            };
            if conn.send(&outcome.response).await.is_err() || outcome.close {
                return;
            }
        }
    }

    /// The next command; before login, also bounded by the login deadline, so that a client
    /// cannot stay unauthenticated for ever by keeping busy.
    async fn read_command(&self, conn: &mut Conn, wait: Wait) -> Result<Framed, ConnError> {
        self.login.bounded(self.user.is_some(), read_command(conn, wait)).await
    }

    /// Answers a command that was too long to read: BAD, tagged when the tag could be read.
    pub fn too_long(&mut self, tag: Option<&str>) -> Outcome {
        let tag = tag.and_then(|tag| Tag::try_from(tag).ok());
        self.bad(tag, "command line or literal too long")
    }

    fn bad(&mut self, tag: Option<Tag<'_>>, text: &str) -> Outcome {
        self.bad_in_a_row += 1;
        let mut response = Vec::new();
        push(&mut response, &Response::Status(Status::Bad { tag, code: None, text: text_of(text) }));
        let close = self.bad_in_a_row >= MAX_BAD;
        if close {
            push(&mut response, &Response::Status(bye("too many invalid commands")));
        }
        Outcome { response, close }
    }

    /// Parses one framed command (lines with their CRLF, literals in place) and executes it.
    pub async fn execute_bytes(&mut self, bytes: &[u8]) -> Outcome {
        match CommandCodec::default().decode(bytes) {
            Ok((&[], command)) => self.execute(command).await,
            _ => {
                let tag = tag_of(bytes);
                let tag = tag.as_deref().and_then(|tag| Tag::try_from(tag).ok());
                self.bad(tag, "syntax error or command not understood")
            }
        }
    }

    /// Executes one parsed command.
    pub async fn execute(&mut self, command: Command<'_>) -> Outcome {
        self.commands += 1;
        if self.commands > MAX_COMMANDS {
            let mut response = Vec::new();
            push(&mut response, &Response::Status(bye("too many commands in one session")));
            return Outcome { response, close: true };
        }
        let tag = command.tag;
        let mut out = Vec::new();
        let result = match command.body {
            CommandBody::Capability => {
                push(&mut out, &Response::Data(Data::Capability(capabilities())));
                Done::Ok(None, "CAPABILITY completed")
            }
            CommandBody::Noop | CommandBody::Check => {
                self.sync(&mut out);
                Done::Ok(None, "NOOP completed")
            }
            CommandBody::Logout => {
                push(&mut out, &Response::Status(bye("logging out")));
                self.deselect();
                push(&mut out, &Response::Status(Status::Ok { tag: Some(tag), code: None, text: text_of("LOGOUT completed") }));
                self.bad_in_a_row = 0;
                return Outcome { response: out, close: true };
            }
            CommandBody::Login { username, password } => self.login(username.as_ref(), password.declassify().as_ref()),
            CommandBody::Authenticate { .. } => Done::No(None, "AUTHENTICATE is not supported, use LOGIN"),
            CommandBody::Select { mailbox } => self.select(&mailbox, false, &mut out),
            CommandBody::Examine { mailbox } => self.select(&mailbox, true, &mut out),
            CommandBody::Unselect => match self.selected {
                Some(_) => {
                    self.deselect();
                    Done::Ok(None, "UNSELECT completed")
                }
                None => Done::Bad("no mailbox selected"),
            },
            CommandBody::Close => match &self.selected {
                Some(selected) => {
                    if !selected.read_only {
                        // RFC 3501 §6.4.2: expunge silently; a failure leaves the files there.
                        let _ = self.expunge(&mut Vec::new()).await;
                    }
                    self.deselect();
                    Done::Ok(None, "CLOSE completed")
                }
                None => Done::Bad("no mailbox selected"),
            },
            CommandBody::Expunge => match &self.selected {
                Some(selected) if selected.read_only => Done::No(Some(Code::ReadOnly), "mailbox is read-only"),
                Some(_) => match self.expunge(&mut out).await {
                    Ok(()) => {
                        self.sync(&mut out);
                        Done::Ok(None, "EXPUNGE completed")
                    }
                    Err(text) => Done::No(Some(code("UNAVAILABLE")), text),
                },
                None => Done::Bad("no mailbox selected"),
            },
            CommandBody::Search { criteria, uid, .. } => match &self.selected {
                Some(_) => self.search(&criteria, uid, &mut out),
                None => Done::Bad("no mailbox selected"),
            },
            CommandBody::Fetch { sequence_set, macro_or_item_names, uid } => match &self.selected {
                Some(_) => self.fetch(&sequence_set, macro_or_item_names, uid, &mut out).await,
                None => Done::Bad("no mailbox selected"),
            },
            CommandBody::Store { sequence_set, kind, response, flags, uid } => match &self.selected {
                Some(selected) if selected.read_only => Done::No(Some(Code::ReadOnly), "mailbox is read-only"),
                Some(_) => self.store(&sequence_set, &kind, &response, &flags, uid, &mut out).await,
                None => Done::Bad("no mailbox selected"),
            },
            _ => Done::Bad("command not supported by this server"),
        };
        let status = match result {
            Done::Ok(code, text) => Status::Ok { tag: Some(tag), code, text: text_of(text) },
            Done::No(code, text) => Status::No { tag: Some(tag), code, text: text_of(text) },
            Done::Bad(text) => return self.bad_after(out, tag, text),
        };
        self.bad_in_a_row = 0;
        push(&mut out, &Response::Status(status));
        Outcome { response: out, close: false }
    }

    fn bad_after(&mut self, mut out: Vec<u8>, tag: Tag<'_>, text: &str) -> Outcome {
        let mut bad = self.bad(Some(tag), text);
        out.append(&mut bad.response);
        Outcome { response: out, close: bad.close }
    }

    fn login(&mut self, username: &[u8], password: &[u8]) -> Done {
        if self.user.is_some() {
            return Done::Bad("already authenticated");
        }
        let user = String::from_utf8_lossy(username).to_ascii_lowercase();
        let known = self.index.mailboxes.borrow().contains_key(&user);
        if !known || password != password_of(&user).as_bytes() {
            self.login.failed();
            return Done::No(Some(code("AUTHENTICATIONFAILED")), "invalid user or password");
        }
        if self.config.cohorts.is_offline(&user) {
            return Done::No(Some(code("UNAVAILABLE")), "mailbox offline while it is restored, try again later");
        }
        self.user = Some(user);
        Done::Ok(Some(Code::Capability(capabilities())), "LOGIN completed")
    }

    /// Leaves the selected mailbox, giving the maildrop lock back when no session is left in it.
    pub fn deselect(&mut self) {
        let Some(selected) = self.selected.take() else { return };
        let mut counts = self.shared.selected.borrow_mut();
        let count = counts.entry(selected.user.clone()).or_default();
        *count = count.saturating_sub(1);
        if *count == 0 {
            counts.remove(&selected.user);
            if let Some(mailbox) = self.index.mailboxes.borrow_mut().get_mut(&selected.user) {
                mailbox.locked = false;
            }
        }
    }

    fn select(&mut self, mailbox: &ImapMailbox<'_>, read_only: bool, out: &mut Vec<u8>) -> Done {
        // RFC 3501 §6.3.1: a SELECT, even a failing one, first leaves the selected mailbox.
        self.deselect();
        let Some(user) = self.user.clone() else { return Done::Bad("authenticate first") };
        if !matches!(mailbox, ImapMailbox::Inbox) {
            return Done::No(Some(code("NONEXISTENT")), "no such mailbox: only INBOX");
        }
        {
            let mut mailboxes = self.index.mailboxes.borrow_mut();
            let Some(stored) = mailboxes.get_mut(&user) else { return Done::No(Some(code("NONEXISTENT")), "no such mailbox") };
            let mut counts = self.shared.selected.borrow_mut();
            let count = counts.entry(user.clone()).or_default();
            if *count == 0 {
                if stored.locked {
                    counts.remove(&user);
                    return Done::No(Some(code("INUSE")), "a POP3 session holds the mailbox, try again later");
                }
                stored.locked = true;
            }
            *count += 1;
        }
        let (uidvalidity, uidnext, uids, recent, first_unseen) = {
            let mailboxes = self.index.mailboxes.borrow();
            let stored = &mailboxes[&user];
            let uids: Vec<u64> = stored.messages.keys().copied().collect();
            let recent = stored.messages.values().filter(|entry| is_recent(entry)).count();
            let first_unseen = stored.messages.values().position(|entry| !letters(entry).contains('S'));
            (stored.uidvalidity, stored.uidnext, uids, recent, first_unseen)
        };
        push(out, &Response::Data(Data::Flags(vec![Flag::Answered, Flag::Flagged, Flag::Deleted, Flag::Seen, Flag::Draft])));
        push(out, &Response::Data(Data::Exists(uids.len() as u32)));
        push(out, &Response::Data(Data::Recent(recent as u32)));
        if let Some(seq) = first_unseen.and_then(|position| NonZeroU32::new(position as u32 + 1)) {
            push(out, &untagged_ok(Code::Unseen(seq), "first unseen"));
        }
        let permanent = vec![Flag::Answered, Flag::Flagged, Flag::Deleted, Flag::Seen, Flag::Draft].into_iter().map(FlagPerm::Flag).collect();
        push(out, &untagged_ok(Code::PermanentFlags(permanent), "flags kept in the maildir"));
        if let Some(value) = nonzero(uidvalidity) {
            push(out, &untagged_ok(Code::UidValidity(value), "UIDs valid"));
        }
        if let Some(value) = nonzero(uidnext) {
            push(out, &untagged_ok(Code::UidNext(value), "predicted next UID"));
        }
        self.selected = Some(Selected { user, read_only, uids });
        if read_only {
            Done::Ok(Some(Code::ReadOnly), "EXAMINE completed")
        } else {
            Done::Ok(Some(Code::ReadWrite), "SELECT completed")
        }
    }

    /// Tells the session what changed in its mailbox since it last looked: messages gone (another
    /// session's EXPUNGE) and messages delivered since. Only where RFC 3501 §7.4.1 allows it.
    fn sync(&mut self, out: &mut Vec<u8>) {
        let Some(selected) = self.selected.as_mut() else { return };
        let mailboxes = self.index.mailboxes.borrow();
        let Some(stored) = mailboxes.get(&selected.user) else { return };
        // Highest first, so that no number changes under a later EXPUNGE response.
        for position in (0..selected.uids.len()).rev() {
            if !stored.messages.contains_key(&selected.uids[position]) {
                selected.uids.remove(position);
                if let Some(seq) = NonZeroU32::new(position as u32 + 1) {
                    push(out, &Response::Data(Data::Expunge(seq)));
                }
            }
        }
        let last = selected.uids.last().copied().unwrap_or(0);
        let new: Vec<u64> = stored.messages.range(last + 1..).map(|(uid, _)| *uid).collect();
        if !new.is_empty() {
            selected.uids.extend(new);
            push(out, &Response::Data(Data::Exists(selected.uids.len() as u32)));
        }
    }

    /// (sequence number, uid) of the messages a set names, in sequence order.
    fn resolve(&self, set: &SequenceSet, by_uid: bool) -> Vec<(u32, u64)> {
        let Some(selected) = &self.selected else { return Vec::new() };
        let largest = if by_uid { selected.uids.last().copied().unwrap_or(0) } else { selected.uids.len() as u64 };
        selected
            .uids
            .iter()
            .enumerate()
            .map(|(position, uid)| (position as u32 + 1, *uid))
            .filter(|(seq, uid)| contains(set, if by_uid { *uid } else { u64::from(*seq) }, largest))
            .collect()
    }

    fn entry(&self, uid: u64) -> Option<Entry> {
        let selected = self.selected.as_ref()?;
        self.index.mailboxes.borrow().get(&selected.user)?.messages.get(&uid).cloned()
    }

    fn search(&mut self, criteria: &SearchKey<'_>, by_uid: bool, out: &mut Vec<u8>) -> Done {
        let Some(selected) = &self.selected else { return Done::Bad("no mailbox selected") };
        let largest_uid = selected.uids.last().copied().unwrap_or(0);
        let count = selected.uids.len() as u64;
        let mut found = Vec::new();
        for (position, uid) in selected.uids.iter().enumerate() {
            let Some(entry) = self.entry(*uid) else { continue };
            let seq = position as u64 + 1;
            let message = Candidate { seq, uid: *uid, count, largest_uid, entry: &entry };
            match matches(criteria, &message) {
                Ok(true) => found.extend(u32::try_from(if by_uid { *uid } else { seq }).ok().and_then(NonZeroU32::new)),
                Ok(false) => {}
                Err(()) => return Done::No(Some(code("CANNOT")), "search key not supported"),
            }
        }
        push(out, &Response::Data(Data::Search(found)));
        Done::Ok(None, "SEARCH completed")
    }

    async fn fetch(&mut self, set: &SequenceSet, names: MacroOrMessageDataItemNames<'_>, by_uid: bool, out: &mut Vec<u8>) -> Done {
        let mut names = match names {
            MacroOrMessageDataItemNames::Macro(Macro::Fast) => vec![MessageDataItemName::Flags, MessageDataItemName::Rfc822Size],
            MacroOrMessageDataItemNames::Macro(_) => return Done::Bad("only the FAST macro is supported"),
            MacroOrMessageDataItemNames::MessageDataItemNames(names) => names,
        };
        if by_uid && !names.contains(&MessageDataItemName::Uid) {
            // RFC 3501 §6.4.8: UID FETCH always returns the UID.
            names.insert(0, MessageDataItemName::Uid);
        }
        for name in &names {
            let supported = match name {
                MessageDataItemName::Uid | MessageDataItemName::Flags | MessageDataItemName::Rfc822Size | MessageDataItemName::Rfc822 => true,
                MessageDataItemName::BodyExt { section, .. } => matches!(section, None | Some(Section::Header(None)) | Some(Section::Text(None))),
                _ => false,
            };
            if !supported {
                return Done::Bad("fetch item not supported: UID, FLAGS, RFC822.SIZE, RFC822, BODY[], BODY[HEADER], BODY[TEXT] and their PEEK");
            }
        }
        let read_only = self.selected.as_ref().is_some_and(|selected| selected.read_only);
        let needs_body = names.iter().any(|name| matches!(name, MessageDataItemName::BodyExt { .. } | MessageDataItemName::Rfc822));
        let sets_seen = !read_only && names.iter().any(|name| matches!(name, MessageDataItemName::BodyExt { peek: false, .. } | MessageDataItemName::Rfc822));
        let mut failure: Option<Done> = None;
        for (seq, uid) in self.resolve(set, by_uid) {
            let Some(mut entry) = self.entry(uid) else { continue };
            let mut body = None;
            if needs_body {
                match self.read_verified(uid, &entry).await {
                    Ok(bytes) => body = Some(bytes),
                    Err(done) => {
                        failure = Some(done);
                        continue;
                    }
                }
            }
            let mut flags_changed = false;
            if sets_seen && !letters(&entry).contains('S') {
                let flags = format!("{}S", letters(&entry));
                match self.change_flags(uid, &entry, &flags).await {
                    Ok(now) => {
                        entry = now;
                        flags_changed = true;
                    }
                    Err(()) => failure = Some(Done::No(Some(code("UNAVAILABLE")), "storage error setting \\Seen, try again later")),
                }
            }
            let mut items = Vec::new();
            for name in &names {
                let item = match name {
                    MessageDataItemName::Uid => nonzero(uid).map(MessageDataItem::Uid),
                    MessageDataItemName::Flags => Some(MessageDataItem::Flags(fetch_flags(&entry))),
                    MessageDataItemName::Rfc822Size => u32::try_from(entry.size).ok().map(MessageDataItem::Rfc822Size),
                    MessageDataItemName::Rfc822 => body.as_deref().and_then(literal).map(MessageDataItem::Rfc822),
                    MessageDataItemName::BodyExt { section, partial, .. } => body.as_deref().and_then(|bytes| {
                        let part = section_of(bytes, section.as_ref());
                        let (origin, part) = match partial {
                            Some((start, length)) => {
                                let start_at = (*start as usize).min(part.len());
                                let end = start_at.saturating_add(length.get() as usize).min(part.len());
                                (Some(*start), &part[start_at..end])
                            }
                            None => (None, part),
                        };
                        literal(part).map(|data| MessageDataItem::BodyExt { section: section.clone(), origin, data })
                    }),
                    _ => None,
                };
                let is_body = matches!(name, MessageDataItemName::BodyExt { .. } | MessageDataItemName::Rfc822);
                if item.is_none() && is_body && body.is_some() {
                    failure = Some(Done::No(Some(code("CANNOT")), "a message holds a NUL octet, which no IMAP4rev1 string carries"));
                }
                items.extend(item);
            }
            if flags_changed && !names.contains(&MessageDataItemName::Flags) {
                // RFC 3501 §6.4.5: the implicit \Seen is reported.
                items.push(MessageDataItem::Flags(fetch_flags(&entry)));
            }
            if let (Some(seq), Ok(items)) = (NonZeroU32::new(seq), NonEmptyVec::try_from(items)) {
                push(out, &Response::Data(Data::Fetch { seq, items }));
            }
        }
        failure.unwrap_or(Done::Ok(None, "FETCH completed"))
    }

    /// A message's bytes, read and checked against the checksum in its name.
    async fn read_verified(&self, uid: u64, entry: &Entry) -> Result<Vec<u8>, Done> {
        let trust = self.env.defects.has(Defect::NoChecksum);
        match self.env.disk.read(&entry.file).await {
            Ok(bytes) if trust || checksum(&bytes) == entry.checksum => Ok(bytes),
            Ok(_) => {
                let mailbox = self.selected.as_ref().map(|selected| selected.user.clone()).unwrap_or_default();
                self.env.journal.record(Event::StoreCorruption { mailbox: mailbox.into(), uid, file: entry.file.as_str().into() });
                Err(Done::No(Some(code("CORRUPTION")), "a message is damaged on storage and was not served"))
            }
            Err(_) => Err(Done::No(Some(code("UNAVAILABLE")), "storage error, try again later")),
        }
    }

    /// Gives one message these maildir flags, durably, under the mailbox's change lock; the
    /// message is looked up again under the lock, as another session may have moved it.
    async fn change_flags(&self, uid: u64, entry: &Entry, flags: &str) -> Result<Entry, ()> {
        let Some(user) = self.selected.as_ref().map(|selected| selected.user.clone()) else { return Err(()) };
        let lock = self.shared.change_lock(&user);
        let _guard = lock.lock().await;
        let current = self.entry(uid).unwrap_or_else(|| entry.clone());
        store::set_flags(self.env, self.index, &user, uid, &current, flags).await.map_err(|_| ())
    }

    async fn store(&mut self, set: &SequenceSet, kind: &StoreType, response: &StoreResponse, flags: &[Flag<'_>], by_uid: bool, out: &mut Vec<u8>) -> Done {
        let mut asked = String::new();
        for flag in flags {
            match letter(flag) {
                Some(letter) => asked.push(letter),
                None => return Done::No(Some(code("CANNOT")), "only \\Seen, \\Deleted, \\Answered, \\Flagged and \\Draft can be stored"),
            }
        }
        let mut failed = false;
        for (seq, uid) in self.resolve(set, by_uid) {
            let Some(entry) = self.entry(uid) else { continue };
            let old = letters(&entry);
            let kept: String = old.chars().filter(|letter| !KNOWN_LETTERS.contains(*letter)).collect();
            let new = match kind {
                StoreType::Replace => format!("{kept}{asked}"),
                StoreType::Add => format!("{old}{asked}"),
                StoreType::Remove => old.chars().filter(|letter| !asked.contains(*letter)).collect(),
            };
            let normalised = |letters: &str| letters.chars().collect::<BTreeSet<char>>();
            // Unchanged flags move nothing: a message in new/ stays there (and \Recent).
            let entry = if normalised(&new) == normalised(&old) {
                entry
            } else {
                match self.change_flags(uid, &entry, &new).await {
                    Ok(now) => now,
                    Err(()) => {
                        failed = true;
                        continue;
                    }
                }
            };
            if *response == StoreResponse::Answer {
                let mut items = vec![MessageDataItem::Flags(fetch_flags(&entry))];
                if by_uid {
                    items.extend(nonzero(uid).map(MessageDataItem::Uid));
                }
                if let (Some(seq), Ok(items)) = (NonZeroU32::new(seq), NonEmptyVec::try_from(items)) {
                    push(out, &Response::Data(Data::Fetch { seq, items }));
                }
            }
        }
        if failed {
            return Done::No(Some(code("UNAVAILABLE")), "storage error, some flags not changed, try again later");
        }
        Done::Ok(None, "STORE completed")
    }

    /// Removes every message of the view flagged \Deleted, durably, as POP3's UPDATE state does;
    /// reports each with an EXPUNGE response.
    async fn expunge(&mut self, out: &mut Vec<u8>) -> Result<(), &'static str> {
        let Some(user) = self.selected.as_ref().map(|selected| selected.user.clone()) else { return Ok(()) };
        let lock = self.shared.change_lock(&user);
        let _guard = lock.lock().await;
        let uidvalidity = self.index.mailboxes.borrow().get(&user).map_or(0, |mailbox| mailbox.uidvalidity);
        let doomed: Vec<(u64, Entry)> = {
            let uids = self.selected.as_ref().map(|selected| selected.uids.clone()).unwrap_or_default();
            uids.into_iter().filter_map(|uid| self.entry(uid).map(|entry| (uid, entry))).filter(|(_, entry)| letters(entry).contains('T')).collect()
        };
        let mut removed = Vec::new();
        let mut failed = false;
        for (uid, entry) in doomed {
            // Said before the file goes, so that an account of the store is never behind it.
            self.env.journal.record(Event::StoreExpunging { mailbox: user.as_str().into(), uidvalidity, uid, file: entry.file.as_str().into() });
            match self.env.disk.remove(&entry.file).await {
                Ok(()) => removed.push((uid, entry)),
                Err(_) => failed = true,
            }
        }
        let directories: BTreeSet<String> = removed.iter().map(|(_, entry)| disk::parent(&entry.file).to_string()).collect();
        for dir in directories {
            failed |= self.env.disk.fsync_dir(&dir).await.is_err();
        }
        if let Some(mailbox) = self.index.mailboxes.borrow_mut().get_mut(&user) {
            for (uid, _) in &removed {
                mailbox.messages.remove(uid);
            }
        }
        if let Some(selected) = self.selected.as_mut() {
            for (uid, _) in &removed {
                if let Some(position) = selected.uids.iter().position(|known| known == uid) {
                    selected.uids.remove(position);
                    if let Some(seq) = NonZeroU32::new(position as u32 + 1) {
                        push(out, &Response::Data(Data::Expunge(seq)));
                    }
                }
            }
        }
        if failed {
            return Err("storage error, some messages not removed, try again later");
        }
        Ok(())
    }
}

/// How a command ended.
enum Done {
    Ok(Option<Code<'static>>, &'static str),
    No(Option<Code<'static>>, &'static str),
    Bad(&'static str),
}

/// A message as a search key sees it.
struct Candidate<'e> {
    seq: u64,
    uid: u64,
    count: u64,
    largest_uid: u64,
    entry: &'e Entry,
}

/// Whether a message matches a search key; `Err` for keys this server does not evaluate (text,
/// dates, sizes, keywords).
fn matches(key: &SearchKey<'_>, message: &Candidate<'_>) -> Result<bool, ()> {
    let flags = letters(message.entry);
    let has = |letter: char| flags.contains(letter);
    Ok(match key {
        SearchKey::All => true,
        SearchKey::And(keys) => {
            let mut all = true;
            for key in keys.as_ref() {
                all &= matches(key, message)?;
            }
            all
        }
        SearchKey::Or(left, right) => matches(left, message)? | matches(right, message)?,
        SearchKey::Not(key) => !matches(key, message)?,
        SearchKey::SequenceSet(set) => contains(set, message.seq, message.count),
        SearchKey::Uid(set) => contains(set, message.uid, message.largest_uid),
        SearchKey::Seen => has('S'),
        SearchKey::Unseen => !has('S'),
        SearchKey::Deleted => has('T'),
        SearchKey::Undeleted => !has('T'),
        SearchKey::Answered => has('R'),
        SearchKey::Unanswered => !has('R'),
        SearchKey::Flagged => has('F'),
        SearchKey::Unflagged => !has('F'),
        SearchKey::Draft => has('D'),
        SearchKey::Undraft => !has('D'),
        SearchKey::Recent => is_recent(message.entry),
        SearchKey::Old => !is_recent(message.entry),
        SearchKey::New => is_recent(message.entry) && !has('S'),
        SearchKey::Larger(size) => message.entry.size > u64::from(*size),
        SearchKey::Smaller(size) => message.entry.size < u64::from(*size),
        _ => return Err(()),
    })
}

/// Whether `value` is in the set; `*` is `largest` (RFC 3501 §9: "n:*" and "*:n" are ranges
/// either way round).
pub fn contains(set: &SequenceSet, value: u64, largest: u64) -> bool {
    let number = |item: &SeqOrUid| match item {
        SeqOrUid::Value(value) => u64::from(value.get()),
        SeqOrUid::Asterisk => largest,
    };
    set.0.as_ref().iter().any(|sequence| match sequence {
        Sequence::Single(item) => number(item) == value,
        Sequence::Range(from, to) => {
            let (low, high) = (number(from).min(number(to)), number(from).max(number(to)));
            (low..=high).contains(&value)
        }
    })
}

/// The maildir flags of a message: the letters of its file name's info (none in `new/`).
fn letters(entry: &Entry) -> String {
    let name = entry.file.rsplit('/').next().unwrap_or_default();
    mail::maildir::flags(name).to_string()
}

/// A message no mail reader has seen yet: still in `new/`.
fn is_recent(entry: &Entry) -> bool {
    entry.file.rsplit('/').nth(1) == Some("new")
}

/// The maildir letter of a system flag (maildir(5)).
fn letter(flag: &Flag<'_>) -> Option<char> {
    match flag {
        Flag::Answered => Some('R'),
        Flag::Deleted => Some('T'),
        Flag::Draft => Some('D'),
        Flag::Flagged => Some('F'),
        Flag::Seen => Some('S'),
        _ => None,
    }
}

/// The flags of a message as FETCH reports them, in a fixed order.
fn fetch_flags(entry: &Entry) -> Vec<FlagFetch<'static>> {
    let letters = letters(entry);
    let mut flags: Vec<FlagFetch<'static>> = [('S', Flag::Seen), ('R', Flag::Answered), ('F', Flag::Flagged), ('T', Flag::Deleted), ('D', Flag::Draft)]
        .into_iter()
        .filter(|(letter, _)| letters.contains(*letter))
        .map(|(_, flag)| FlagFetch::Flag(flag))
        .collect();
    if is_recent(entry) {
        flags.push(FlagFetch::Recent);
    }
    flags
}

/// The part of a message a section names: all of it, its header (through the empty line), or
/// its text (after it).
fn section_of<'b>(bytes: &'b [u8], section: Option<&Section<'_>>) -> &'b [u8] {
    let split = bytes.windows(4).position(|window| window == b"\r\n\r\n").map_or(bytes.len(), |at| at + 4);
    match section {
        Some(Section::Header(None)) => &bytes[..split],
        Some(Section::Text(None)) => &bytes[split..],
        _ => bytes,
    }
}

/// Octets as an IMAP literal; `None` when they hold a NUL, which no IMAP4rev1 string carries.
fn literal(bytes: &[u8]) -> Option<NString<'static>> {
    Literal::try_from(bytes.to_vec()).ok().map(|literal| NString(Some(IString::Literal(literal))))
}

fn nonzero(value: u64) -> Option<NonZeroU32> {
    u32::try_from(value).ok().and_then(NonZeroU32::new)
}

fn capabilities() -> NonEmptyVec<Capability<'static>> {
    let mut list = vec![Capability::Imap4Rev1];
    list.extend(Capability::try_from("UNSELECT").ok());
    NonEmptyVec::try_from(list).unwrap_or_else(|_| NonEmptyVec::from(Capability::Imap4Rev1))
}

/// A response code this codec has no variant for (RFC 5530's), from our own constants.
fn code(name: &'static str) -> Code<'static> {
    Code::Other(CodeOther::unvalidated(name.as_bytes()))
}

fn text_of(text: &str) -> Text<'static> {
    Text::try_from(text.to_string()).unwrap_or_else(|_| Text::unvalidated("error"))
}

fn bye(text: &str) -> Status<'static> {
    Status::Bye { code: None, text: text_of(text) }
}

fn untagged_ok(code: Code<'static>, text: &str) -> Response<'static> {
    Response::Status(Status::Ok { tag: None, code: Some(code), text: text_of(text) })
}

fn push(out: &mut Vec<u8>, response: &Response<'_>) {
    out.extend_from_slice(&ResponseCodec::default().encode(response).dump());
}

fn encode_greeting(greeting: Result<Greeting<'_>, impl std::fmt::Debug>) -> Vec<u8> {
    match greeting {
        Ok(greeting) => GreetingCodec::default().encode(&greeting).dump(),
        Err(_) => b"* OK IMAP4rev1\r\n".to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Mailbox, StoreState};
    use crate::Defects;
    use disk::mem::MemDisk;
    use disk::{Device, Disk};
    use history::{History, Journal};
    use proptest::prelude::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};


    struct NoNet;

    impl crate::net::Net for NoNet {
        fn connect<'a>(&'a self, _host: &'a str, _port: u16) -> crate::net::NetFuture<'a, crate::net::BoxStream> {
            Box::pin(async { Err(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)) })
        }
        fn listen(&self, _port: u16) -> crate::net::NetFuture<'_, Box<dyn crate::net::Listener>> {
            Box::pin(async { Err(std::io::Error::from(std::io::ErrorKind::AddrInUse)) })
        }
    }

    const FIRST: &[u8] = b"Return-Path: <a@example.org>\r\nSubject: one\r\n\r\nfirst body\r\n";
    const SECOND: &[u8] = b"Return-Path: <b@example.org>\r\nSubject: two\r\n\r\n.leading dot\r\nsecond\r\n";

    struct Fixture {
        env: Env,
        config: StoreConfig,
        index: Index,
        shared: Shared,
        disk: Rc<MemDisk>,
        history: Rc<RefCell<History>>,
    }

    /// anna's mailbox: UID 3 in new/ and UID 7 in cur/ (read), UIDVALIDITY 1700, UIDNEXT 8.
    fn fixture(defects: &[Defect]) -> Fixture {
        let history = Rc::new(RefCell::new(History::default()));
        let journal = Journal::new(history.clone(), "store", Rc::new(|| 5_000));
        let disk = Rc::new(MemDisk::default());
        let mut messages = BTreeMap::new();
        for (uid, bytes, sub, info) in [(3u64, FIRST, "new", ""), (7, SECOND, "cur", ":2,S")] {
            let name = mail::maildir::file_name(&format!("100.S1D{uid}"), uid, bytes);
            let file = format!("mail/anna/{sub}/{name}{info}");
            disk.write(&file, bytes).expect("in memory");
            messages.insert(uid, Entry { file, size: bytes.len() as u64, checksum: checksum(bytes) });
        }
        let index: Index = Rc::new(StoreState::default());
        index.mailboxes.borrow_mut().insert("anna".into(), Mailbox { uidvalidity: 1700, uidnext: 8, messages, locked: false });
        index.mailboxes.borrow_mut().insert("bruno".into(), Mailbox { uidvalidity: 1701, uidnext: 1, ..Mailbox::default() });
        let config = StoreConfig {
            hostname: "store.libero.test".into(),
            domains: vec!["libero.test".into()],
            users: ["anna", "bruno"].into_iter().map(String::from).collect(),
            max_message_bytes: 100_000,
            idle_timeout: Duration::from_secs(600),
            command_total_timeout: None,
            login_timeout: None,
            login_failure_delay: Duration::ZERO,
            max_login_failures: None,
            pop3_max_sessions: 4,
            imap_max_sessions: 4,
            restored: Rc::default(),
            cohorts: Rc::default(),
            mark_read_on_retr: true,
            record_served: false,
        };
        let env = Env { journal, disk: Disk::new(disk.clone()), net: Rc::new(NoNet), defects: Defects::of(defects) };
        Fixture { env, config, index, shared: Shared::default(), disk, history }
    }

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime").block_on(future)
    }

    async fn say(session: &mut Session<'_>, command: &str) -> String {
        let outcome = session.execute_bytes(format!("{command}\r\n").as_bytes()).await;
        String::from_utf8_lossy(&outcome.response).into_owned()
    }

    fn files(fixture: &Fixture) -> Vec<String> {
        fixture.disk.paths()
    }

    #[test]
    fn tags_are_read_off_malformed_lines_only_when_valid() {
        assert_eq!(tag_of(b"a1 FROB"), Some("a1".into()));
        assert_eq!(tag_of(b"a1"), Some("a1".into()));
        assert_eq!(tag_of(b"a{1 NOOP"), None);
        assert_eq!(tag_of(b"+ NOOP"), None);
        assert_eq!(tag_of(b"\xff\xfe NOOP"), None);
        assert_eq!(tag_of(b""), None);
    }

    #[test]
    fn sets_with_asterisk_and_reversed_ranges() {
        let set = |text: &str| SequenceSet::try_from(text).expect("a set");
        assert!(contains(&set("1:*"), 9, 9));
        assert!(contains(&set("*"), 9, 9));
        assert!(!contains(&set("*"), 8, 9));
        assert!(contains(&set("5:2"), 3, 9));
        assert!(contains(&set("20:*"), 9, 9), "n:* with n above the largest names the largest");
        assert!(contains(&set("1,4:5"), 4, 9));
        assert!(!contains(&set("1,4:5"), 3, 9));
    }

    /// Reads one framed command from what a client wrote (and closed), and what the server sent.
    fn frame(input: Vec<u8>) -> (Result<Framed, ConnError>, Vec<u8>, Result<Framed, ConnError>) {
        block_on(async move {
            let (client, server) = tokio::io::duplex(1 << 20);
            let (mut from_server, mut to_server) = tokio::io::split(client);
            to_server.write_all(&input).await.expect("write");
            to_server.write_all(b"z9 NOOP\r\n").await.expect("write");
            drop(to_server);
            let mut conn = Conn::new(Box::new(server));
            let first = read_command(&mut conn, Duration::from_secs(5)).await;
            let second = read_command(&mut conn, Duration::from_secs(5)).await;
            drop(conn);
            let mut sent = Vec::new();
            let _ = from_server.read_to_end(&mut sent).await;
            (first, sent, second)
        })
    }

    #[test]
    fn framing_is_bounded_and_keeps_the_tag() {
        let (first, sent, second) = frame(b"a1 NOOP\r\n".to_vec());
        assert_eq!(first, Ok(Framed::Command(b"a1 NOOP\r\n".to_vec())));
        assert!(sent.is_empty());
        assert_eq!(second, Ok(Framed::Command(b"z9 NOOP\r\n".to_vec())));
        // A line far beyond the limit: its tag is kept, the rest dropped, the next command read.
        let mut long = b"a2 LOGIN ".to_vec();
        long.extend(std::iter::repeat_n(b'x', 5 * MAX_LINE));
        long.extend_from_slice(b"\r\n");
        let (first, _, second) = frame(long);
        assert_eq!(first, Ok(Framed::TooLong(Some("a2".into()))));
        assert_eq!(second, Ok(Framed::Command(b"z9 NOOP\r\n".to_vec())));
        // A synchronizing literal within the bound: a continuation request, then its octets.
        let (first, sent, _) = frame(b"a3 LOGIN {4}\r\nanna pw-anna\r\n".to_vec());
        assert_eq!(first, Ok(Framed::Command(b"a3 LOGIN {4}\r\nanna pw-anna\r\n".to_vec())));
        assert!(sent.starts_with(b"+ "), "{:?}", String::from_utf8_lossy(&sent));
        // One beyond it: refused before the client sends it (no continuation request).
        let (first, sent, second) = frame(format!("a4 LOGIN {{{}}}\r\n", MAX_LITERAL + 1).into_bytes());
        assert_eq!(first, Ok(Framed::TooLong(Some("a4".into()))));
        assert!(sent.is_empty());
        assert_eq!(second, Ok(Framed::Command(b"z9 NOOP\r\n".to_vec())));
        // A non-synchronizing one (not offered) is read into nothing, up to a point.
        let mut unasked = format!("a5 LOGIN {{{}+}}\r\n", MAX_LITERAL + 1).into_bytes();
        unasked.extend(std::iter::repeat_n(b'y', MAX_LITERAL + 1));
        unasked.extend_from_slice(b" pw\r\n");
        let (first, _, second) = frame(unasked);
        assert_eq!(first, Ok(Framed::TooLong(Some("a5".into()))));
        assert_eq!(second, Ok(Framed::Command(b"z9 NOOP\r\n".to_vec())));
        let (first, _, _) = frame(b"a6 LOGIN {4294967295+}\r\n".to_vec());
        assert_eq!(first, Ok(Framed::Abusive));
        // Literals that add up beyond a whole command's bound.
        let mut many = format!("a7 LOGIN {{{}}}\r\n", MAX_LITERAL).into_bytes();
        many.extend(std::iter::repeat_n(b'q', MAX_LITERAL));
        many.extend(format!(" {{{}}}\r\n", MAX_LITERAL).into_bytes());
        let (first, _, _) = frame(many);
        assert_eq!(first, Ok(Framed::TooLong(Some("a7".into()))));
    }

    #[test]
    fn hostile_input_gets_bad_and_too_much_of_it_bye() {
        let fixture = fixture(&[]);
        block_on(async {
            let mut session = Session::new(&fixture.env, &fixture.config, &fixture.index, &fixture.shared);
            assert!(say(&mut session, "a1 FROB").await.starts_with("a1 BAD "));
            assert!(say(&mut session, "\u{7f}\u{1} garbage").await.starts_with("* BAD "));
            assert!(say(&mut session, "a2 FETCH 1 BODY[]").await.starts_with("a2 BAD "), "not selected");
            assert!(say(&mut session, "a3 SELECT INBOX").await.starts_with("a3 BAD "), "not authenticated");
            assert!(say(&mut session, "a4 NOOP").await.starts_with("a4 OK "));
            let mut last = Outcome { response: Vec::new(), close: false };
            for _ in 0..MAX_BAD {
                last = session.execute_bytes(b"a5 FROB\r\n").await;
            }
            assert!(last.close);
            assert!(String::from_utf8_lossy(&last.response).contains("* BYE "));
            assert!(session.too_long(Some("a6")).response.starts_with(b"a6 BAD "));
        });
    }

    proptest! {
        #[test]
        fn any_bytes_get_an_answer_never_a_panic(line in proptest::collection::vec(any::<u8>(), 0..300), selected in any::<bool>()) {
            let fixture = fixture(&[]);
            block_on(async {
                let mut session = Session::new(&fixture.env, &fixture.config, &fixture.index, &fixture.shared);
                if selected {
                    say(&mut session, "s1 LOGIN anna pw-anna").await;
                    say(&mut session, "s2 SELECT INBOX").await;
                }
                let mut bytes = line.clone();
                bytes.extend_from_slice(b"\r\n");
                let outcome = session.execute_bytes(&bytes).await;
                prop_assert!(!outcome.response.is_empty());
                Ok(())
            })?;
        }
    }

    #[test]
    fn login_select_fetch_store_expunge() {
        let fixture = fixture(&[]);
        block_on(async {
            let mut session = Session::new(&fixture.env, &fixture.config, &fixture.index, &fixture.shared);
            let capability = say(&mut session, "c1 CAPABILITY").await;
            assert!(capability.to_ascii_uppercase().starts_with("* CAPABILITY IMAP4REV1 UNSELECT\r\n"), "{capability}");
            assert!(say(&mut session, "a1 LOGIN anna wrong").await.starts_with("a1 NO [AUTHENTICATIONFAILED]"));
            assert!(say(&mut session, "a1 LOGIN nobody pw-nobody").await.starts_with("a1 NO "));
            assert!(say(&mut session, "a2 LOGIN Anna pw-anna").await.starts_with("a2 OK "));
            assert!(say(&mut session, "a3 SELECT Trash").await.starts_with("a3 NO [NONEXISTENT]"));
            let select = say(&mut session, "a4 SELECT inbox").await;
            for line in ["* 2 EXISTS\r\n", "* 1 RECENT\r\n", "* OK [UIDVALIDITY 1700]", "* OK [UIDNEXT 8]", "* OK [UNSEEN 1]", "a4 OK [READ-WRITE]"] {
                assert!(select.contains(line), "{line} in {select}");
            }
            assert!(fixture.index.mailboxes.borrow()["anna"].locked, "POP3 is kept out while IMAP has the mailbox");

            let search = say(&mut session, "a5 UID SEARCH ALL").await;
            assert!(search.starts_with("* SEARCH 3 7\r\na5 OK"), "{search}");
            assert!(say(&mut session, "a6 UID SEARCH UNSEEN").await.starts_with("* SEARCH 3\r\n"));
            assert!(say(&mut session, "a6 SEARCH SEEN").await.starts_with("* SEARCH 2\r\n"));
            assert!(say(&mut session, "a6 UID SEARCH UID 4:*").await.starts_with("* SEARCH 7\r\n"));
            assert!(say(&mut session, "a6 UID SEARCH SUBJECT x").await.starts_with("a6 NO "));
            // Removing a flag it does not have leaves a message in new/ where it is.
            assert!(say(&mut session, "a6 UID STORE 3 -FLAGS (\\Seen)").await.starts_with("* 1 FETCH (FLAGS (\\Recent) UID 3)\r\n"));
            assert!(files(&fixture).iter().any(|file| file.starts_with("mail/anna/new/") && file.contains(",U=3,")));

            // PEEK: the bytes as stored, no flag changes.
            let peek = say(&mut session, "a7 UID FETCH 3 (UID FLAGS RFC822.SIZE BODY.PEEK[])").await;
            let expected = format!("* 1 FETCH (UID 3 FLAGS (\\Recent) RFC822.SIZE {} BODY[] {{{}}}\r\n{}", FIRST.len(), FIRST.len(), String::from_utf8_lossy(FIRST));
            assert!(peek.starts_with(&expected), "{peek}");
            assert!(files(&fixture).iter().any(|file| file.starts_with("mail/anna/new/")));
            // BODY[] sets \Seen: the file moves to cur/ with S, and FLAGS are reported.
            let body = say(&mut session, "a8 UID FETCH 3 BODY[]").await;
            assert!(body.contains("FLAGS (\\Seen)") && body.contains("a8 OK"), "{body}");
            assert!(files(&fixture).iter().any(|file| file.starts_with("mail/anna/cur/") && file.contains(",U=3,") && file.ends_with(":2,S")), "{:?}", files(&fixture));
            // STORE by UID and by number; \Deleted is T, after S.
            let store = say(&mut session, "a9 UID STORE 3 +FLAGS (\\Deleted)").await;
            assert!(store.starts_with("* 1 FETCH (FLAGS (\\Seen \\Deleted) UID 3)\r\na9 OK"), "{store}");
            assert!(files(&fixture).iter().any(|file| file.contains(",U=3,") && file.ends_with(":2,ST")), "{:?}", files(&fixture));
            assert_eq!(say(&mut session, "b1 STORE 2 +FLAGS.SILENT (\\Flagged)").await, "b1 OK STORE completed\r\n");
            assert!(files(&fixture).iter().any(|file| file.contains(",U=7,") && file.ends_with(":2,FS")));
            assert!(say(&mut session, "b2 STORE 2 FLAGS (\\Seen $Junk)").await.starts_with("b2 NO "), "keywords are refused");
            assert!(say(&mut session, "b3 FETCH 1:* (FLAGS)").await.starts_with("* 1 FETCH (FLAGS (\\Seen \\Deleted))\r\n* 2 FETCH (FLAGS (\\Seen \\Flagged))\r\n"));
            // EXPUNGE removes the file and renumbers.
            let expunge = say(&mut session, "b4 EXPUNGE").await;
            assert!(expunge.starts_with("* 1 EXPUNGE\r\nb4 OK"), "{expunge}");
            assert!(!files(&fixture).iter().any(|file| file.contains(",U=3,")));
            assert!(fixture.index.mailboxes.borrow()["anna"].messages.keys().eq([7].iter()));
            assert!(say(&mut session, "b5 UID FETCH 1:* UID").await.starts_with("* 1 FETCH (UID 7)\r\n"));
            // A second session sees it gone; EXAMINE is read-only.
            let mut other = Session::new(&fixture.env, &fixture.config, &fixture.index, &fixture.shared);
            say(&mut other, "o1 LOGIN anna pw-anna").await;
            let examine = say(&mut other, "o2 EXAMINE INBOX").await;
            assert!(examine.contains("* 1 EXISTS\r\n") && examine.contains("o2 OK [READ-ONLY]"), "{examine}");
            assert!(say(&mut other, "o3 STORE 1 +FLAGS (\\Deleted)").await.starts_with("o3 NO [READ-ONLY]"));
            let logout = say(&mut session, "b6 LOGOUT").await;
            assert!(logout.starts_with("* BYE ") && logout.contains("b6 OK"));
            assert!(fixture.index.mailboxes.borrow()["anna"].locked, "the other session still has it");
            other.deselect();
            assert!(!fixture.index.mailboxes.borrow()["anna"].locked);
            let history = fixture.history.borrow().render();
            assert!(history.contains("StoreExpunging") || history.contains("store_expunging"), "{history}");
        });
    }

    #[test]
    fn a_message_with_a_nul_octet_is_refused_not_cut() {
        let fixture = fixture(&[Defect::NoChecksum]);
        block_on(async {
            let file = fixture.index.mailboxes.borrow()["anna"].messages[&3].file.clone();
            fixture.disk.write(&file, b"Subject: x\r\n\r\na\0b\r\n").expect("in memory");
            let mut session = Session::new(&fixture.env, &fixture.config, &fixture.index, &fixture.shared);
            say(&mut session, "a1 LOGIN anna pw-anna").await;
            say(&mut session, "a2 SELECT INBOX").await;
            let fetch = say(&mut session, "a3 UID FETCH 3 BODY.PEEK[]").await;
            assert!(fetch.starts_with("* 1 FETCH (UID 3)\r\na3 NO [CANNOT]"), "{fetch}");
        });
    }

    #[test]
    fn a_pop3_session_keeps_imap_out_and_damage_is_never_served() {
        let fixture = fixture(&[]);
        block_on(async {
            fixture.index.mailboxes.borrow_mut().get_mut("anna").expect("anna").locked = true;
            let mut session = Session::new(&fixture.env, &fixture.config, &fixture.index, &fixture.shared);
            say(&mut session, "a1 LOGIN anna pw-anna").await;
            assert!(say(&mut session, "a2 SELECT INBOX").await.starts_with("a2 NO [INUSE]"));
            fixture.index.mailboxes.borrow_mut().get_mut("anna").expect("anna").locked = false;
            assert!(say(&mut session, "a3 SELECT INBOX").await.contains("a3 OK"));
            // Damage one stored copy: never served, reported, and PEEK of the other still works.
            let damaged = fixture.index.mailboxes.borrow()["anna"].messages[&7].file.clone();
            fixture.disk.write(&damaged, b"garbage").expect("in memory");
            let fetch = say(&mut session, "a4 UID FETCH 1:* BODY.PEEK[]").await;
            assert!(fetch.starts_with("* 1 FETCH (UID 3 BODY[] {") && fetch.contains("a4 NO [CORRUPTION]") && !fetch.contains("garbage"), "{fetch}");
            assert!(fixture.history.borrow().render().contains("StoreCorruption") || fixture.history.borrow().render().contains("store_corruption"));
        });
    }
}
