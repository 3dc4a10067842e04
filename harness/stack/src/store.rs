//! The store: an LMTP server (RFC 2033) that delivers into one maildir per mailbox.
//!
//! Delivery (maildir(5), as Dovecot and Postfix's local do it): write `tmp/NAME`, fsync it,
//! rename it into `new/NAME`, fsync `new/`, and only then answer 2xx for that recipient. The
//! file name carries the message's UID and a checksum (`,U=7,H=3fa9…`), so the index is rebuilt
//! from what is durable after a restart. UIDNEXT is kept durably in `uidlist` and never goes
//! back (RFC 3501 §2.3.1.1), even when the newest messages were deleted before a crash.

use super::conn::{Conn, ConnError};
use mail::message;
use super::wire::{self, Command, DataDecoder, Reply};
use super::{Defect, Env, StackError, LMTP_PORT};
use crate::crash_point;
use disk::DiskError;
use history::Event;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct StoreConfig {
    pub hostname: String,
    pub domains: Vec<String>,
    pub users: BTreeSet<String>,
    pub max_message_bytes: usize,
    pub idle_timeout: Duration,
    /// POP3 sessions at once; beyond it clients get -ERR [SYS/TEMP] and try again later.
    pub pop3_max_sessions: usize,
    /// The operator's notice that the storage was restored from a backup: the next recovery
    /// starts a new UIDVALIDITY (RFC 3501 §2.3.1.1) and clears the notice.
    pub restored: Rc<Cell<bool>>,
}

/// One message as the index knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub file: String,
    pub size: u64,
    /// The checksum stored in the file name: blake3 of the bytes, first 16 hex digits.
    pub checksum: String,
}

#[derive(Clone, Debug, Default)]
pub struct Mailbox {
    pub uidvalidity: u64,
    pub uidnext: u64,
    pub messages: BTreeMap<u64, Entry>,
    /// A POP3 session holds the maildrop lock (RFC 1939 §8).
    pub locked: bool,
}

/// The in-memory state of one store, shared by its LMTP and POP3 servers.
#[derive(Default)]
pub struct StoreState {
    pub mailboxes: RefCell<BTreeMap<String, Mailbox>>,
    /// Serialises UID reservations, so that `uidlist` on disk never goes backwards when
    /// deliveries to one store overlap.
    uid_lock: tokio::sync::Mutex<()>,
}

pub type Index = Rc<StoreState>;

pub fn mailbox_dir(user: &str) -> String {
    format!("mail/{user}")
}

pub use mail::maildir::{checksum, parse_file_name};

/// Rebuilds the index from the durable state and removes tmp/ debris. Runs at every start.
pub async fn recover(env: &Env, config: &StoreConfig) -> Index {
    let restored = config.restored.replace(false);
    let mut index = BTreeMap::new();
    for user in &config.users {
        let mailbox = recover_mailbox(env, user, restored).await;
        index.insert(user.clone(), mailbox);
    }
    Rc::new(StoreState { mailboxes: RefCell::new(index), uid_lock: tokio::sync::Mutex::new(()) })
}

async fn recover_mailbox(env: &Env, user: &str, restored: bool) -> Mailbox {
    let dir = mailbox_dir(user);
    let debris_removed = remove_debris(env, &dir).await;
    let mut messages = BTreeMap::new();
    for name in env.disk.list(&format!("{dir}/new")).await.unwrap_or_default() {
        if let Some((uid, sum)) = parse_file_name(&name) {
            let file = format!("{dir}/new/{name}");
            let size = env.disk.read(&file).await.map(|bytes| bytes.len() as u64).unwrap_or(0);
            messages.insert(uid, Entry { file, size, checksum: sum });
        }
    }
    let stored = read_uidlist(env, &dir).await;
    let highest_uid = messages.keys().next_back().copied().unwrap_or(0);
    let fresh_uidvalidity = 1 + env.journal.now_ms() / 1000;
    let (mut uidvalidity, stored_uidnext) = stored.unwrap_or((fresh_uidvalidity, 1));
    let uidnext = if env.defects.has(Defect::ReuseUidAfterRestart) {
        // The planted bug: trust the files, forget the durable UIDNEXT.
        highest_uid + 1
    } else {
        stored_uidnext.max(highest_uid + 1)
    };
    // After a restore, UIDs issued since the backup may name other messages at clients: only a
    // new UIDVALIDITY keeps (mailbox, UIDVALIDITY, UID) naming one message (A17, A18).
    let renew = restored && !env.defects.has(Defect::KeepUidvalidityOnRollback);
    if renew {
        uidvalidity = fresh_uidvalidity.max(uidvalidity + 1);
    }
    if stored.is_none() || renew {
        let _ = write_uidlist(env, &dir, uidvalidity, uidnext).await;
    }
    env.journal.record(Event::StoreRecovered {
        mailbox: user.to_string(),
        uidvalidity,
        uidnext,
        messages: messages.len() as u64,
        debris_removed,
        restored,
    });
    Mailbox { uidvalidity, uidnext, messages, locked: false }
}

/// tmp/ holds only deliveries that were never acknowledged (maildir(5)): remove them.
async fn remove_debris(env: &Env, dir: &str) -> u64 {
    let mut debris_removed = 0;
    for name in env.disk.list(&format!("{dir}/tmp")).await.unwrap_or_default() {
        let path = format!("{dir}/tmp/{name}");
        let gone = if env.defects.has(Defect::RecoverTmpIntoNew) {
            // The planted bug: "rescue" whatever tmp/ holds, complete or not.
            env.disk.rename(&path, &format!("{dir}/new/{name}")).await
        } else {
            env.disk.remove(&path).await
        };
        debris_removed += u64::from(gone.is_ok());
    }
    if debris_removed > 0 {
        let _ = env.disk.fsync_dir(&format!("{dir}/tmp")).await;
        let _ = env.disk.fsync_dir(&format!("{dir}/new")).await;
    }
    debris_removed
}

async fn read_uidlist(env: &Env, dir: &str) -> Option<(u64, u64)> {
    let bytes = env.disk.read(&format!("{dir}/uidlist")).await.ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let mut fields = text.split_whitespace().map(|field| field.parse::<u64>().ok());
    Some((fields.next()??, fields.next()??))
}

/// Replaces `uidlist` atomically and durably.
async fn write_uidlist(env: &Env, dir: &str, uidvalidity: u64, uidnext: u64) -> Result<(), DiskError> {
    let temporary = format!("{dir}/uidlist.tmp");
    env.disk.write(&temporary, format!("{uidvalidity} {uidnext}\n").as_bytes()).await?;
    env.disk.fsync(&temporary).await?;
    env.disk.rename(&temporary, &format!("{dir}/uidlist")).await?;
    env.disk.fsync_dir(dir).await
}

/// Serves LMTP forever.
pub async fn serve_lmtp(env: Env, config: Rc<StoreConfig>, index: Index) {
    let Ok(listener) = env.net.listen(LMTP_PORT).await else { return };
    let mut sequence = 0u64;
    loop {
        let Ok((stream, _peer)) = listener.accept().await else { continue };
        sequence += 1;
        let (env, config, index) = (env.clone(), config.clone(), index.clone());
        tokio::task::spawn_local(async move {
            let _ = lmtp_session(&env, &config, &index, Conn::new(stream), sequence).await;
        });
    }
}

async fn lmtp_session(env: &Env, config: &StoreConfig, index: &Index, mut conn: Conn, session: u64) -> Result<(), StackError> {
    let send = |reply: Reply| reply.encode();
    if conn.send(&send(Reply::new(220, "", &format!("{} LMTP mailchaos", config.hostname)))).await.is_err() {
        return Ok(());
    }
    let mut lhlo = false;
    let mut from: Option<String> = None;
    let mut rcpts: Vec<String> = Vec::new();
    let mut delivery = 0u64;
    loop {
        let line = match conn.read_line(wire::MAX_COMMAND_LINE - 2, config.idle_timeout).await {
            Ok(line) => line,
            Err(ConnError::TooLong) => {
                let _ = conn.send(&send(Reply::new(500, "5.5.6", "line too long"))).await;
                continue;
            }
            Err(_) => return Ok(()),
        };
        let reply = match wire::parse_command(&line) {
            Ok(Command::Lhlo(_)) => {
                lhlo = true;
                let lines = vec![config.hostname.clone(), "PIPELINING".into(), "ENHANCEDSTATUSCODES".into(), "8BITMIME".into()];
                Reply { code: 250, enhanced: None, lines }
            }
            Ok(Command::Mail { from: sender, .. }) if lhlo && from.is_none() => {
                from = Some(sender);
                Reply::new(250, "2.1.0", "sender ok")
            }
            Ok(Command::Mail { .. }) => Reply::new(503, "5.5.1", "bad sequence of commands"),
            Ok(Command::Rcpt { to, .. }) if from.is_some() => match local_user(config, &to) {
                Some(_) => {
                    rcpts.push(to.to_ascii_lowercase());
                    Reply::new(250, "2.1.5", "recipient ok")
                }
                None => Reply::new(550, "5.1.1", "no such mailbox"),
            },
            Ok(Command::Rcpt { .. }) => Reply::new(503, "5.5.1", "need MAIL before RCPT"),
            Ok(Command::Data) if rcpts.is_empty() => Reply::new(503, "5.5.1", "no valid recipients"),
            Ok(Command::Data) => {
                if conn.send(&send(Reply::new(354, "", "go ahead"))).await.is_err() {
                    return Ok(());
                }
                let mut decoder = DataDecoder::new(config.max_message_bytes);
                if conn.read_data(&mut decoder, config.idle_timeout).await.is_err() {
                    return Ok(());
                }
                let message = decoder.finish();
                let sender = from.take().unwrap_or_default();
                // RFC 2033 §4.2: exactly one reply per accepted recipient, in RCPT order.
                let accepted = std::mem::take(&mut rcpts);
                let single_reply = env.defects.has(Defect::LmtpSingleReply);
                let mut replied = Vec::new();
                let mut connection_lost = false;
                for (position, rcpt) in accepted.iter().enumerate() {
                    delivery += 1;
                    let reply = match &message {
                        Ok(bytes) => {
                            let unique = format!("{}.S{session}D{delivery}", env.journal.now_ms());
                            deliver(env, config, index, rcpt, &sender, bytes, &unique).await?
                        }
                        Err(_) => Reply::new(552, "5.3.4", "message too big or malformed"),
                    };
                    if single_reply && position > 0 {
                        continue; // the planted bug: one reply for the whole transaction
                    }
                    if conn.send(&send(reply)).await.is_err() {
                        connection_lost = true;
                        break;
                    }
                    replied.push(rcpt.clone());
                }
                let session = format!("lmtp-{session}");
                env.journal.record(Event::LmtpDataEnd { session, accepted, replied, connection_lost });
                if connection_lost {
                    return Ok(());
                }
                continue;
            }
            Ok(Command::Rset) => {
                from = None;
                rcpts.clear();
                Reply::new(250, "2.0.0", "reset")
            }
            Ok(Command::Noop) => Reply::new(250, "2.0.0", "ok"),
            Ok(Command::Quit) => {
                let _ = conn.send(&send(Reply::new(221, "2.0.0", "bye"))).await;
                return Ok(());
            }
            Ok(_) => Reply::new(500, "5.5.1", "command not supported by this LMTP server"),
            Err(_) => Reply::new(500, "5.5.2", "syntax error"),
        };
        if conn.send(&send(reply)).await.is_err() {
            return Ok(());
        }
    }
}

fn local_user(config: &StoreConfig, address: &str) -> Option<String> {
    let (local, domain) = address.rsplit_once('@')?;
    let local = local.to_ascii_lowercase();
    let own_domain = config.domains.iter().any(|own| own.eq_ignore_ascii_case(domain));
    (own_domain && config.users.contains(&local)).then_some(local)
}

/// Delivers one copy into `rcpt`'s maildir and names the LMTP reply for that recipient.
async fn deliver(
    env: &Env,
    config: &StoreConfig,
    index: &Index,
    rcpt: &str,
    sender: &str,
    message: &[u8],
    unique: &str,
) -> Result<Reply, StackError> {
    let Some(user) = local_user(config, rcpt) else {
        return Ok(Reply::new(550, "5.1.1", "no such mailbox"));
    };
    let mut bytes = format!("Return-Path: <{sender}>\r\n").into_bytes();
    bytes.extend_from_slice(message);
    let msg = message::message_id(message).unwrap_or_default();
    match publish(env, index, &user, &bytes, unique).await {
        Ok((uidvalidity, uid, file)) => {
            let digest = message::content_digest(&bytes);
            env.journal.record(Event::StoreDelivered { mailbox: user, msg, uidvalidity, uid, file, digest });
            Ok(Reply::new(250, "2.0.0", &format!("<{rcpt}> delivered")))
        }
        Err(StackError::Disk(error)) => {
            let reply = match error {
                DiskError::NoSpace => Reply::new(452, "4.3.1", "insufficient system storage"),
                _ => Reply::new(451, "4.3.0", "temporary storage error"),
            };
            env.journal.record(Event::StoreRefusal { mailbox: user, msg, reply: reply.summary() });
            Ok(reply)
        }
        Err(crash) => Err(crash),
    }
}

/// tmp/ → fsync → new/ → fsync dir. Returns (uidvalidity, uid, file) once durable.
async fn publish(env: &Env, index: &Index, user: &str, bytes: &[u8], unique: &str) -> Result<(u64, u64, String), StackError> {
    let dir = mailbox_dir(user);
    let (uidvalidity, uid) = reserve_uid(env, index, user, &dir).await?;
    let name = mail::maildir::file_name(unique, uid, bytes);
    let final_path = format!("{dir}/new/{name}");
    if env.defects.has(Defect::WriteIntoNew) {
        // The planted bug: the file is visible in new/ while it is still being written.
        env.disk.write(&final_path, bytes).await?;
        env.disk.fsync(&final_path).await?;
    } else {
        let temporary = format!("{dir}/tmp/{name}");
        if let Err(error) = stage_file(env, &temporary, bytes).await {
            let _ = env.disk.remove(&temporary).await;
            return Err(error.into());
        }
        env.disk.rename(&temporary, &final_path).await?;
    }
    crash_point!(env, "store-after-rename-before-dirsync");
    if !env.defects.has(Defect::NoDirFsync) {
        env.disk.fsync_dir(&format!("{dir}/new")).await?;
    }
    let size = bytes.len() as u64;
    let entry = Entry { file: final_path.clone(), size, checksum: checksum(bytes) };
    if let Some(mailbox) = index.mailboxes.borrow_mut().get_mut(user) {
        mailbox.messages.insert(uid, entry);
    }
    Ok((uidvalidity, uid, final_path))
}

async fn stage_file(env: &Env, path: &str, bytes: &[u8]) -> Result<(), DiskError> {
    env.disk.write(path, bytes).await?;
    crate::fsync_file(env, path).await
}

/// Takes the next UID and makes the new UIDNEXT durable before the UID is used, so no crash can
/// hand the same UID to another message.
async fn reserve_uid(env: &Env, index: &Index, user: &str, dir: &str) -> Result<(u64, u64), StackError> {
    let _guard = index.uid_lock.lock().await;
    let (uidvalidity, uid) = {
        let mut mailboxes = index.mailboxes.borrow_mut();
        let mailbox = mailboxes.get_mut(user).ok_or(StackError::Disk(DiskError::NotFound))?;
        let uid = mailbox.uidnext;
        mailbox.uidnext += 1;
        (mailbox.uidvalidity, uid)
    };
    write_uidlist(env, dir, uidvalidity, uid + 1).await?;
    Ok((uidvalidity, uid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_carry_uid_and_checksum() {
        assert_eq!(parse_file_name("1200.S1D1,U=7,S=42,H=00ff00ff00ff00ff"), Some((7, "00ff00ff00ff00ff".to_string())));
        assert_eq!(parse_file_name("1200.S1D1,S=42"), None);
        assert_eq!(parse_file_name("garbage,U=x,H=1"), None);
    }
}
