//! An IMAP mail client (RFC 3501) that polls its INBOX: LOGIN, SELECT (UIDVALIDITY, UIDNEXT,
//! EXISTS), `UID FETCH 1:* (UID RFC822.SIZE)` for the listing, `UID FETCH <uid> (UID
//! BODY.PEEK[])` for each UID it does not show yet, and for a deleting client `UID STORE <uid>
//! +FLAGS.SILENT (\Deleted)` and EXPUNGE; then LOGOUT. A peer of the system under test, bounded
//! like the POP3 client: timeouts on every read, a line limit, a literal limit, a fetch limit
//! per poll.
//!
//! What it shows its user is a UID cache: UID → the content of the local copy, valid under one
//! UIDVALIDITY. When the server's UIDVALIDITY changes the cache means nothing (RFC 3501
//! §2.3.1.1; RFC 4549 §4.1: the client must empty it and resync), so the client drops it and
//! downloads the mailbox again. With `uid_cache` (the iOS and Android kind) it also skips a poll
//! whose SELECT shows the same UIDVALIDITY, UIDNEXT and EXISTS as the last completed sync; a
//! webmail view (`uid_cache` false) keeps no such shortcut and re-lists at every poll.
//!
//! Commands are checked and serialised by `imap-codec` (`CommandCodec`), responses decoded by it
//! (`GreetingCodec`, `ResponseCodec`) from frames our reader bounds. Downloads are recorded as
//! the POP3 client's are (`ClientListing`, `ClientFetched`, `ClientDeleted`), a message named
//! `<uidvalidity>.<uid>` (the name Dovecot's POP3 UIDL gives it too); plus what the server said
//! at SELECT (`ClientSelected`) and what the client shows (`ClientView`, what A24 judges).

use super::conn::{Conn, ConnError};
use super::{Defect, Env, IMAP_PORT};
use history::Event;
use imap_codec::decode::{Decoder, GreetingDecodeError, ResponseDecodeError};
use imap_codec::encode::Encoder;
use imap_codec::imap_types::core::NString;
use imap_codec::imap_types::fetch::MessageDataItem;
use imap_codec::imap_types::response::{Code, Data, Response, Status};
use imap_codec::{CommandCodec, GreetingCodec, ResponseCodec};
use mail::message;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(600);
/// A response line outside literals.
const MAX_LINE: usize = 16 * 1024;
/// A literal (a message body) at most.
const MAX_LITERAL: usize = 64 * 1024 * 1024;
/// Literals in one response at most, and untagged responses to one command at most.
const MAX_LITERALS: usize = 4;
const MAX_RESPONSES: usize = 200_000;
/// Message bodies fetched per poll: bounds one session; the rest comes at the next poll.
const MAX_FETCH_PER_POLL: usize = 500;

#[derive(Clone, Debug)]
pub struct ImapClientConfig {
    pub store_host: String,
    pub user: String,
    pub password: String,
    pub first_poll: Duration,
    pub poll_interval: Duration,
    pub delete_after_fetch: bool,
    /// Keeps its UID cache between polls and skips a poll whose SELECT shows nothing new (the
    /// iOS and Android kind); false: a webmail view that re-lists the mailbox at every poll.
    pub uid_cache: bool,
}

impl ImapClientConfig {
    /// The same mailbox, account and polling as a POP3 client's, read over IMAP: how the world
    /// and `drive` set up either kind of client from one plan.
    pub fn of(client: super::client::ClientConfig, uid_cache: bool) -> ImapClientConfig {
        let super::client::ClientConfig { store_host, user, password, first_poll, poll_interval, delete_after_fetch } = client;
        ImapClientConfig { store_host, user, password, first_poll, poll_interval, delete_after_fetch, uid_cache }
    }
}

#[derive(Default)]
struct State {
    /// The UIDVALIDITY the cache is valid under.
    uidvalidity: Option<u64>,
    /// (UIDVALIDITY, UIDNEXT, EXISTS) of the last completed sync.
    synced: Option<(u64, u64, u64)>,
    /// What SELECT said last time (recorded when it changes).
    selected: Option<(u64, u64, u64)>,
    /// UID → content digest of the local copy shown for it.
    cache: BTreeMap<u64, String>,
    /// (UIDVALIDITY, UID) the server refused for good (NO: damaged on storage).
    refused: BTreeSet<(u64, u64)>,
    last_listing: Vec<(String, u64)>,
    last_view: Option<(u64, Vec<(u64, String)>)>,
}

/// The client host's software for one mailbox: poll forever.
pub async fn run(env: Env, config: ImapClientConfig) {
    let mut state = State::default();
    tokio::time::sleep(config.first_poll).await;
    let mut failures = 0u32;
    loop {
        let wait = match poll(&env, &config, &mut state).await {
            Ok(()) => {
                failures = 0;
                config.poll_interval
            }
            Err(error) => {
                env.journal.record(Event::ClientFailure { mailbox: config.user.as_str().into(), error: error.into() });
                failures += 1;
                crate::client::retry_after(&config.user, config.poll_interval, failures)
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// What one command got back: its untagged responses and whether the tagged one was OK.
struct Answer {
    untagged: Vec<Untagged>,
    ok: bool,
    /// The tagged status line's text, for errors.
    text: String,
}

struct Session {
    conn: Conn,
    tag: u32,
}

impl Session {
    /// Reads one response: a line, and for each literal it announces the literal and the rest
    /// of the line after it, then hands the frame to the codec.
    async fn read_frame(&mut self) -> Result<Vec<u8>, String> {
        let mut frame = Vec::new();
        let mut literals = 0;
        loop {
            let line = self.conn.read_line(MAX_LINE, TIMEOUT).await.map_err(|error: ConnError| error.describe())?;
            frame.extend_from_slice(&line);
            frame.extend_from_slice(b"\r\n");
            let Some(length) = literal_at_end(&line) else { return Ok(frame) };
            literals += 1;
            if length > MAX_LITERAL || literals > MAX_LITERALS {
                return Err(format!("response literal of {length} octets (or more than {MAX_LITERALS} literals): refused"));
            }
            self.conn.read_exact(length, Some(&mut frame), TIMEOUT).await.map_err(|error| error.describe())?;
        }
    }

    async fn greeting(&mut self) -> Result<(), String> {
        let frame = self.read_frame().await?;
        match GreetingCodec::default().decode(&frame) {
            Ok((_, greeting)) if greeting.kind == imap_codec::imap_types::response::GreetingKind::Ok => Ok(()),
            Ok(_) => Err(format!("greeting: {}", String::from_utf8_lossy(&frame).trim_end())),
            Err(GreetingDecodeError::Incomplete | GreetingDecodeError::Failed) => Err("greeting: undecodable".into()),
        }
    }

    /// Sends one command (its text after the tag, checked and serialised by the codec) and
    /// reads until its tagged answer.
    async fn command(&mut self, text: &str) -> Result<Answer, String> {
        self.tag += 1;
        let tag = format!("c{}", self.tag);
        let line = format!("{tag} {text}\r\n");
        let command = match CommandCodec::default().decode(line.as_bytes()) {
            Ok((_, command)) => command,
            Err(error) => return Err(format!("cannot encode command {text:?}: {error:?}")),
        };
        let bytes = CommandCodec::default().encode(&command).dump();
        self.conn.send(&bytes).await.map_err(|error| error.describe())?;
        let mut untagged = Vec::new();
        loop {
            let frame = self.read_frame().await?;
            let response = match ResponseCodec::default().decode(&frame) {
                Ok((_, response)) => response,
                Err(ResponseDecodeError::Incomplete | ResponseDecodeError::LiteralFound { .. } | ResponseDecodeError::Failed) => {
                    return Err(format!("{text}: undecodable response {:?}", String::from_utf8_lossy(&frame[..frame.len().min(200)])));
                }
            };
            match &response {
                Response::Status(Status::Ok { tag: Some(got), text: said, .. }) if got.inner() == tag => {
                    return Ok(Answer { untagged, ok: true, text: said.inner().to_string() });
                }
                Response::Status(Status::No { tag: Some(got), code, text: said } | Status::Bad { tag: Some(got), code, text: said }) if got.inner() == tag => {
                    let code = code.as_ref().map(|code| format!("[{code:?}] ")).unwrap_or_default();
                    return Ok(Answer { untagged, ok: false, text: format!("{code}{}", said.inner()) });
                }
                // LOGOUT's BYE comes before its tagged OK; any other BYE ends the session.
                Response::Status(Status::Bye { .. }) if text == "LOGOUT" => {}
                Response::Status(Status::Bye { text: said, .. }) => return Err(format!("{text}: BYE {}", said.inner())),
                _ => {}
            }
            if untagged.len() >= MAX_RESPONSES {
                return Err(format!("{text}: more than {MAX_RESPONSES} responses"));
            }
            untagged.push(Untagged::of(&response));
        }
    }

    async fn ok(&mut self, text: &str) -> Result<Answer, String> {
        let answer = self.command(text).await?;
        if answer.ok {
            Ok(answer)
        } else {
            let shown = if text.starts_with("LOGIN") { "LOGIN" } else { text };
            Err(format!("{shown}: {}", answer.text))
        }
    }
}

/// `... {123}` at the end of a line: the length of the literal that follows.
fn literal_at_end(line: &[u8]) -> Option<usize> {
    let body = line.strip_suffix(b"}")?;
    let open = body.iter().rposition(|&byte| byte == b'{')?;
    let digits = &body[open + 1..];
    let digits = digits.strip_suffix(b"+").unwrap_or(digits);
    if digits.is_empty() || digits.len() > 12 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// What the client reads of an untagged response.
enum Untagged {
    Exists(u64),
    UidValidity(u64),
    UidNext(u64),
    /// UID, RFC822.SIZE, BODY[].
    Fetch(u64, Option<u64>, Option<Vec<u8>>),
    Other,
}

impl Untagged {
    fn of(response: &Response<'_>) -> Untagged {
        match response {
            Response::Data(Data::Exists(count)) => Untagged::Exists(u64::from(*count)),
            Response::Status(Status::Ok { code: Some(Code::UidValidity(value)), .. }) => Untagged::UidValidity(u64::from(value.get())),
            Response::Status(Status::Ok { code: Some(Code::UidNext(value)), .. }) => Untagged::UidNext(u64::from(value.get())),
            Response::Data(Data::Fetch { items, .. }) => {
                let (mut uid, mut size, mut body) = (None, None, None);
                for item in items.as_ref() {
                    match item {
                        MessageDataItem::Uid(value) => uid = Some(u64::from(value.get())),
                        MessageDataItem::Rfc822Size(value) => size = Some(u64::from(*value)),
                        MessageDataItem::BodyExt { data: NString(Some(data)), .. } => body = Some(data.as_ref().to_vec()),
                        _ => {}
                    }
                }
                match uid {
                    Some(uid) => Untagged::Fetch(uid, size, body),
                    None => Untagged::Other,
                }
            }
            _ => Untagged::Other,
        }
    }
}

/// UID, size and body of each FETCH response.
fn fetched(untagged: &[Untagged]) -> Vec<(u64, Option<u64>, Option<Vec<u8>>)> {
    untagged
        .iter()
        .filter_map(|response| match response {
            Untagged::Fetch(uid, size, body) => Some((*uid, *size, body.clone())),
            _ => None,
        })
        .collect()
}

fn uidl(uidvalidity: u64, uid: u64) -> String {
    format!("{uidvalidity}.{uid}")
}

async fn poll(env: &Env, config: &ImapClientConfig, state: &mut State) -> Result<(), String> {
    let connect = env.net.connect(&config.store_host, IMAP_PORT);
    let stream = match tokio::time::timeout(Duration::from_secs(60), connect).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => return Err(format!("connect: {}", error.kind())),
        Err(_) => return Err("connect: timed out".into()),
    };
    let mut session = Session { conn: Conn::new(stream), tag: 0 };
    session.greeting().await?;
    session.ok(&format!("LOGIN {} {}", config.user, config.password)).await?;
    let selected = session.ok("SELECT INBOX").await?;
    let (mut uidvalidity, mut uidnext, mut exists) = (None, 0u64, 0u64);
    for response in &selected.untagged {
        match response {
            Untagged::Exists(count) => exists = *count,
            Untagged::UidValidity(value) => uidvalidity = Some(*value),
            Untagged::UidNext(value) => uidnext = *value,
            _ => {}
        }
    }
    let uidvalidity = uidvalidity.ok_or("SELECT: no UIDVALIDITY")?;
    let now = (uidvalidity, uidnext, exists);
    if state.selected != Some(now) {
        env.journal.record(Event::ClientSelected { mailbox: config.user.as_str().into(), uidvalidity, uidnext, exists });
        state.selected = Some(now);
    }
    if state.uidvalidity != Some(uidvalidity) {
        // The cache names other messages now: drop it and resync, unless the planted defect
        // keeps it (a client with a persistent cache only).
        let keep = config.uid_cache && env.defects.has(Defect::IosKeepsUidCacheAcrossUidvalidity);
        if !keep {
            state.cache.clear();
        }
        state.uidvalidity = Some(uidvalidity);
    }
    if config.uid_cache && state.synced == Some(now) {
        return logout(&mut session).await;
    }
    // The listing: every UID with its size.
    let listing: Vec<(u64, u64)> = match exists {
        0 => Vec::new(),
        _ => fetched(&session.ok("UID FETCH 1:* (UID RFC822.SIZE)").await?.untagged).into_iter().map(|(uid, size, _)| (uid, size.unwrap_or(0))).collect(),
    };
    let listed: Vec<(String, u64)> = listing.iter().map(|(uid, size)| (uidl(uidvalidity, *uid), *size)).collect();
    if listed != state.last_listing {
        env.journal.record(Event::ClientListing { mailbox: config.user.as_str().into(), listed: listed.clone() });
        state.last_listing = listed;
    }
    // What the server no longer lists is no longer shown.
    let uids: BTreeSet<u64> = listing.iter().map(|(uid, _)| *uid).collect();
    state.cache.retain(|uid, _| uids.contains(uid));
    let new: Vec<u64> = uids.iter().copied().filter(|uid| !state.cache.contains_key(uid) && !state.refused.contains(&(uidvalidity, *uid))).take(MAX_FETCH_PER_POLL).collect();
    let mut to_delete = Vec::new();
    let mut fetched_any = false;
    for uid in new {
        let answer = session.command(&format!("UID FETCH {uid} (UID BODY.PEEK[])")).await?;
        let body = fetched(&answer.untagged).into_iter().find(|(got, _, _)| *got == uid).and_then(|(_, _, body)| body);
        let Some(bytes) = body.filter(|_| answer.ok) else {
            // Refused (damaged on storage), or gone meanwhile: skip it, as the POP3 client does.
            env.journal.record(Event::ClientFailure { mailbox: config.user.as_str().into(), error: format!("UID FETCH {}: {}", uidl(uidvalidity, uid), answer.text).into() });
            state.refused.insert((uidvalidity, uid));
            continue;
        };
        let digest = message::content_digest(&bytes);
        env.journal.record(Event::ClientFetched(Box::new(history::ClientFetched {
            mailbox: config.user.as_str().into(),
            uidl: uidl(uidvalidity, uid).into(),
            msg: message::message_id(&bytes).unwrap_or_default().into(),
            digest: digest.as_str().into(),
            size: bytes.len() as u64,
            trace_for: message::trace_recipients(&bytes),
        })));
        state.cache.insert(uid, digest);
        fetched_any = true;
        if config.delete_after_fetch {
            to_delete.push(uid);
        }
    }
    let deleted_any = !to_delete.is_empty();
    if deleted_any {
        let mut result = Ok(());
        for uid in &to_delete {
            if let Err(error) = session.ok(&format!("UID STORE {uid} +FLAGS.SILENT (\\Deleted)")).await {
                result = Err(error);
                break;
            }
        }
        let expunged = match result {
            Ok(()) => session.ok("EXPUNGE").await.map(|_| ()),
            Err(error) => Err(error),
        };
        // Recorded whatever the answer: the server may have expunged before it failed.
        let uidls = to_delete.iter().map(|uid| uidl(uidvalidity, *uid)).collect();
        env.journal.record(Event::ClientDeleted { mailbox: config.user.as_str().into(), uidls, confirmed: expunged.is_ok() });
        expunged?;
        for uid in &to_delete {
            state.cache.remove(uid);
        }
    }
    let shown: Vec<(u64, String)> = state.cache.iter().map(|(uid, digest)| (*uid, digest.clone())).collect();
    // Recorded when it changed, and after a sync that downloaded or deleted something (a
    // deleting client's view stays empty: it still shows that it caught up).
    let acted = fetched_any || deleted_any;
    if acted || state.last_view.as_ref() != Some(&(uidvalidity, shown.clone())) {
        env.journal.record(Event::ClientView { mailbox: config.user.as_str().into(), uidvalidity, shown: shown.clone() });
        state.last_view = Some((uidvalidity, shown));
    }
    // Only a sync that saw every listed message through counts as complete.
    let complete = uids.iter().all(|uid| state.cache.contains_key(uid) || state.refused.contains(&(uidvalidity, *uid)));
    let deleted_all = config.delete_after_fetch;
    if complete || deleted_all {
        // After deletions EXISTS changed: the next SELECT differs and syncs again, harmlessly.
        state.synced = Some(now);
    }
    logout(&mut session).await
}

async fn logout(session: &mut Session) -> Result<(), String> {
    session.ok("LOGOUT").await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_literal_is_announced_only_at_the_end_of_a_line() {
        assert_eq!(literal_at_end(b"* 1 FETCH (UID 4 BODY[] {123}"), Some(123));
        assert_eq!(literal_at_end(b"* 1 FETCH (UID 4 BODY[] {12+}"), Some(12));
        assert_eq!(literal_at_end(b"* OK [UIDNEXT 5] {x}"), None);
        assert_eq!(literal_at_end(b"* OK done"), None);
        assert_eq!(literal_at_end(b"{}"), None);
        assert_eq!(literal_at_end(b"{9999999999999}"), None);
    }
}
