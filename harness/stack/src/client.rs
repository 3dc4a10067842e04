//! A POP3 mail client that polls its mailbox, leaving mail on the server (or deleting what it
//! fetched, like a classic client) and remembering what it has by UIDL (RFC 1939 §7).

use super::conn::{Conn, ConnError};
use mail::message;
use super::wire::DataDecoder;
use super::{Env, POP3_PORT};
use history::Event;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(600);
/// Messages fetched per poll: bounds one session; the rest comes at the next poll.
const MAX_FETCH_PER_POLL: usize = 500;
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

#[derive(Clone, Debug)]
pub struct ClientConfig {
    pub store_host: String,
    pub user: String,
    pub password: String,
    pub first_poll: Duration,
    pub poll_interval: Duration,
    pub delete_after_fetch: bool,
}

#[derive(Default)]
struct Cache {
    /// UIDLs this client has downloaded.
    known: BTreeSet<String>,
    last_listing: Vec<(String, u64)>,
    /// UIDLs the server refused for good (`-ERR [SYS/PERM]`, RFC 3206: damaged on storage):
    /// skipped, so that one damaged message does not block the rest of the mailbox.
    refused: BTreeSet<String>,
}

/// The client host's software for one mailbox: poll forever.
pub async fn run(env: Env, config: ClientConfig) {
    let mut cache = Cache::default();
    tokio::time::sleep(config.first_poll).await;
    let mut failures = 0u32;
    loop {
        let wait = match poll(&env, &config, &mut cache).await {
            Ok(()) => {
                failures = 0;
                config.poll_interval
            }
            Err(error) => {
                env.journal.record(Event::ClientFailure { mailbox: config.user.as_str().into(), error: error.into() });
                failures += 1;
                retry_after(&config.user, config.poll_interval, failures)
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// After a failed poll (of any client, POP3 or IMAP): somewhere between a quarter and three quarters of the poll interval,
/// spread by user, so that clients refused together do not all come back together (a
/// reconnection storm that starves the same clients every round). Derived from the user name,
/// not a random number: the stack has no randomness of its own.
pub(crate) fn retry_after(user: &str, poll_interval: Duration, failures: u32) -> Duration {
    let interval_ms = poll_interval.as_millis() as u64;
    let hash = blake3::hash(format!("{user}/{failures}").as_bytes());
    let spread = u64::from_le_bytes(hash.as_bytes()[..8].try_into().unwrap_or([0; 8])) % (interval_ms / 2 + 1);
    Duration::from_millis(interval_ms / 4 + spread)
}

struct Session {
    conn: Conn,
}

impl Session {
    async fn status(&mut self) -> Result<String, String> {
        let line = self.conn.read_line(1000, TIMEOUT).await.map_err(|error| error.describe())?;
        let text = String::from_utf8_lossy(&line).to_string();
        match text.strip_prefix("+OK") {
            Some(rest) => Ok(rest.trim().to_string()),
            None => Err(text),
        }
    }

    async fn command(&mut self, line: &str) -> Result<String, String> {
        self.conn.send(format!("{line}\r\n").as_bytes()).await.map_err(|error| error.describe())?;
        self.status().await
    }

    /// A command whose +OK is followed by a dot-terminated body.
    async fn multi_line(&mut self, line: &str) -> Result<Vec<u8>, String> {
        self.command(line).await?;
        let mut decoder = DataDecoder::new(MAX_RESPONSE_BYTES);
        self.conn.read_data(&mut decoder, TIMEOUT).await.map_err(|error: ConnError| error.describe())?;
        decoder.finish().map_err(|error| format!("{error:?}"))
    }
}

/// "1 abc\r\n2 def\r\n" → [(1, "abc"), (2, "def")].
fn parse_listing(body: &[u8]) -> Vec<(u32, String)> {
    String::from_utf8_lossy(body)
        .lines()
        .filter_map(|line| {
            let (number, value) = line.trim().split_once(' ')?;
            Some((number.parse().ok()?, value.to_string()))
        })
        .collect()
}

async fn poll(env: &Env, config: &ClientConfig, cache: &mut Cache) -> Result<(), String> {
    let connect = env.net.connect(&config.store_host, POP3_PORT);
    let stream = match tokio::time::timeout(Duration::from_secs(60), connect).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => return Err(format!("connect: {}", error.kind())),
        Err(_) => return Err("connect: timed out".into()),
    };
    let mut session = Session { conn: Conn::new(stream) };
    session.status().await?;
    session.command(&format!("USER {}", config.user)).await?;
    session.command(&format!("PASS {}", config.password)).await?;
    let uidls = parse_listing(&session.multi_line("UIDL").await?);
    let sizes = parse_listing(&session.multi_line("LIST").await?);
    // Each message's size by number, the first line of a number winning (a search of the
    // LIST lines for every UIDL line was quadratic in the mailbox).
    let mut size_of: BTreeMap<u32, &str> = BTreeMap::new();
    for (number, size) in &sizes {
        size_of.entry(*number).or_insert(size);
    }
    let listing: Vec<(String, u64)> = uidls
        .iter()
        .map(|(number, uidl)| {
            let size = size_of.get(number).and_then(|size| size.parse().ok()).unwrap_or(0);
            (uidl.clone(), size)
        })
        .collect();
    if listing != cache.last_listing {
        env.journal.record(Event::ClientListing { mailbox: config.user.as_str().into(), listed: listing.clone() });
        cache.last_listing = listing.clone();
    }
    let mut deleted = Vec::new();
    let new: Vec<(u32, String)> = uidls.into_iter().filter(|(_, uidl)| !cache.known.contains(uidl) && !cache.refused.contains(uidl)).take(MAX_FETCH_PER_POLL).collect();
    for (number, uidl) in new {
        let bytes = match session.multi_line(&format!("RETR {number}")).await {
            Ok(bytes) => bytes,
            Err(error) if error.starts_with("-ERR [SYS/PERM]") => {
                env.journal.record(Event::ClientFailure { mailbox: config.user.as_str().into(), error: format!("RETR {uidl}: {}", error.trim_end()).into() });
                cache.refused.insert(uidl);
                continue;
            }
            Err(error) => return Err(error),
        };
        env.journal.record(Event::ClientFetched(Box::new(history::ClientFetched {
            mailbox: config.user.as_str().into(),
            uidl: uidl.as_str().into(),
            msg: message::message_id(&bytes).unwrap_or_default().into(),
            digest: message::content_digest(&bytes).into(),
            size: bytes.len() as u64,
            // What the owner can read about whom the copy was for (a Bcc leak shows here).
            trace_for: message::trace_recipients(&bytes),
        })));
        cache.known.insert(uidl.clone());
        if config.delete_after_fetch {
            session.command(&format!("DELE {number}")).await?;
            deleted.push(uidl);
        }
    }
    let quit = session.command("QUIT").await;
    if !deleted.is_empty() {
        // Recorded whatever the answer: the user asked for these deletions, and the server may
        // have carried out some of them before it failed.
        env.journal.record(Event::ClientDeleted { mailbox: config.user.as_str().into(), uidls: deleted, confirmed: quit.is_ok() });
    }
    quit.map(|_| ())
}
