//! `cargo xtask soak [SECONDS]`: the live server (`mailchaos serve --data-dir`) under hostile
//! load for SECONDS (default 600) while well-behaved clients send and fetch mail; then every
//! message the server acknowledged must have been fetched exactly once, serve's peak RSS must stay
//! under 100 MB, and `mailchaos check` and `verify-store` must pass. Not part of `ci`.
//!
//! Load (std threads, blocking sockets; a 2-core machine holds it): 1,000 hostile clients, each a
//! thread for the whole run that reconnects a few seconds after it is cut off or refused, in ten
//! behaviours (see `Hostile`); 50 well-behaved SMTP senders; one POP3 reader per mailbox. Every
//! client binds a source address of its own in 127.0.0.0/8 (the server limits sessions per client
//! address: on one address the hostile clients would hold its 20 slots and nothing else would be
//! measured), except the "hold many" group, which shares one address on purpose.

use socket2::{Domain, Socket, Type};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const HOSTILE: usize = 1000;
const SENDERS: usize = 50;
const USERS: [&str; 3] = ["anna", "bruno", "carla"];
const DOMAIN: &str = "libero.test";
/// How long after the senders stop every acknowledged message must have been fetched.
const DRAIN: Duration = Duration::from_secs(120);
const RSS_LIMIT_MB: f64 = 100.0;
/// Client threads do little but block on sockets: a small stack keeps 1,000 of them cheap.
const STACK: usize = 128 * 1024;

/// What the clients saw, shared by every thread.
#[derive(Default)]
struct Tally {
    stop_senders: AtomicBool,
    stop_all: AtomicBool,
    hostile_sessions: AtomicU64,
    hostile_refused: AtomicU64,
    refused_commands: AtomicU64,
    cut_off: AtomicU64,
    sender_sessions: AtomicU64,
    sender_refused: AtomicU64,
    sender_retries: AtomicU64,
    /// (mailbox, Message-ID) of each message a 250 acknowledged.
    acked: Mutex<BTreeSet<(String, String)>>,
    /// (mailbox, Message-ID) → distinct POP3 UIDs it was fetched under.
    fetched: Mutex<BTreeMap<(String, String), BTreeSet<String>>>,
    /// Message-IDs resent after a session broke between the final dot and its reply: a
    /// duplicate of these is the ambiguity SMTP has (RFC 1047), not the server's.
    ambiguous: Mutex<BTreeSet<String>>,
}

pub fn soak(binary: &Path, seconds: u64) -> Result<bool, String> {
    let dir = std::env::temp_dir().join(format!("mailchaos-soak-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|error| format!("{}: {error}", dir.display()))?;
    let offset = crate::shell::free_offset()?;
    println!("soak: {seconds} s; serve --port-offset {offset} in {}; {HOSTILE} hostile clients, {SENDERS} senders, {} POP3 readers", dir.display(), USERS.len());
    let mut server = start_serve(binary, &dir, offset, seconds)?;
    let pid = server.id();
    let tally = Arc::new(Tally::default());
    let started = Instant::now();
    let mut threads = Vec::new();
    for index in 0..HOSTILE {
        let tally = tally.clone();
        threads.push(spawn(move || hostile(index, offset, &tally))?);
    }
    for index in 0..SENDERS {
        let tally = tally.clone();
        threads.push(spawn(move || sender(index, offset, &tally))?);
    }
    for (index, user) in USERS.iter().enumerate() {
        let tally = tally.clone();
        threads.push(spawn(move || reader(index, user, offset, &tally))?);
    }
    let mut rss = Rss::default();
    while started.elapsed() < Duration::from_secs(seconds) && server_alive(&mut server) {
        rss.sample(pid, started);
        std::thread::sleep(Duration::from_secs(5).min(Duration::from_secs(seconds).saturating_sub(started.elapsed())));
    }
    tally.stop_senders.store(true, Relaxed);
    println!("soak: senders stopped at {:.0} s; waiting up to {} s for every acknowledged message to be fetched", started.elapsed().as_secs_f64(), DRAIN.as_secs());
    let drain_started = Instant::now();
    while drain_started.elapsed() < DRAIN && !drained(&tally) && server_alive(&mut server) {
        rss.sample(pid, started);
        std::thread::sleep(Duration::from_secs(1));
    }
    rss.sample(pid, started);
    let hwm = status_kb(pid, "VmHWM:").map(|kb| kb as f64 / 1024.0);
    let elapsed = started.elapsed();
    tally.stop_all.store(true, Relaxed);
    // Every thread watches the flag between reads of at most a few seconds.
    let joined = Instant::now();
    for thread in threads {
        if joined.elapsed() > Duration::from_secs(60) {
            break;
        }
        let _ = thread.join();
    }
    let serve_ok = stop(&mut server);
    let check = verdict(Command::new(binary).arg("check").arg(dir.join("history.jsonl")));
    let verify = verdict(Command::new(binary).arg("verify-store").arg(dir.join("data/store")).arg("--ledger").arg(dir.join("ledger")));
    let report = Report { elapsed, sending: seconds, rss, hwm, check, verify, serve_ok };
    let ok = report.print(&tally);
    if ok {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        println!("soak: kept {} (history.jsonl, ledger, data/, serve.log)", dir.display());
    }
    Ok(ok)
}

fn spawn(work: impl FnOnce() + Send + 'static) -> Result<std::thread::JoinHandle<()>, String> {
    std::thread::Builder::new().stack_size(STACK).spawn(work).map_err(|error| format!("cannot start a client thread: {error}"))
}

/// A port offset whose SMTP, LMTP, POP3 and IMAP ports are free on loopback right now.
/// Starts serve; its output goes to serve.log. `--seconds` is a safety net only (the drain and
/// a margin past it): serve never outlives a soak that dies.
fn start_serve(binary: &Path, dir: &Path, offset: u16, seconds: u64) -> Result<Child, String> {
    let log = std::fs::File::create(dir.join("serve.log")).map_err(|error| format!("serve.log: {error}"))?;
    let err = log.try_clone().map_err(|error| error.to_string())?;
    let mut command = Command::new(binary);
    command.arg("serve").arg("--port-offset").arg(offset.to_string()).arg("--users").arg(USERS.join(",")).arg("--domain").arg(DOMAIN);
    command.arg("--seconds").arg((seconds + DRAIN.as_secs() + 300).to_string());
    command.arg("--data-dir").arg(dir.join("data")).arg("--history").arg(dir.join("history.jsonl")).arg("--ledger").arg(dir.join("ledger"));
    let mut child = command.stdout(log).stderr(err).stdin(Stdio::null()).spawn().map_err(|error| format!("cannot start {}: {error}", binary.display()))?;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(15) {
        if std::fs::read_to_string(dir.join("serve.log")).unwrap_or_default().contains("listening:") {
            return Ok(child);
        }
        if !server_alive(&mut child) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    Err(format!("serve did not start listening within 15 s: {}", std::fs::read_to_string(dir.join("serve.log")).unwrap_or_default().trim()))
}

fn server_alive(child: &mut Child) -> bool {
    matches!(child.try_wait(), Ok(None))
}

/// SIGTERM (the `kill` program: no unsafe code here), then up to 10 s; then SIGKILL. Whether serve
/// was still running until we stopped it (it exiting on its own mid-soak is a failure).
fn stop(child: &mut Child) -> bool {
    if !server_alive(child) {
        println!("soak: serve had exited on its own: {:?}", child.try_wait());
        return false;
    }
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) && server_alive(child) {
        std::thread::sleep(Duration::from_millis(100));
    }
    if server_alive(child) {
        let _ = child.kill();
    }
    let _ = child.wait();
    true
}

/// A field of /proc/PID/status in kB.
fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines().find_map(|line| line.strip_prefix(field))?.split_whitespace().next()?.parse().ok()
}

/// serve's resident memory, sampled: (seconds into the run, MB).
#[derive(Default)]
struct Rss {
    samples: Vec<(f64, f64)>,
}

impl Rss {
    fn sample(&mut self, pid: u32, started: Instant) {
        if let Some(kb) = status_kb(pid, "VmRSS:") {
            self.samples.push((started.elapsed().as_secs_f64(), kb as f64 / 1024.0));
        }
    }

    fn peak(&self) -> f64 {
        self.samples.iter().map(|(_, mb)| *mb).fold(0.0, f64::max)
    }
}

/// Every acknowledged (mailbox, Message-ID) fetched at least once.
fn drained(tally: &Tally) -> bool {
    let acked = tally.acked.lock().unwrap().clone();
    let fetched = tally.fetched.lock().unwrap();
    acked.iter().all(|key| fetched.contains_key(key))
}

/// A mailchaos command's exit status and its last line.
fn verdict(command: &mut Command) -> (bool, String) {
    match command.output() {
        Ok(out) => {
            let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            (out.status.success(), text.lines().rev().find(|line| !line.trim().is_empty()).unwrap_or("").trim().to_string())
        }
        Err(error) => (false, format!("cannot run: {error}")),
    }
}

struct Report {
    elapsed: Duration,
    sending: u64,
    rss: Rss,
    hwm: Option<f64>,
    check: (bool, String),
    verify: (bool, String),
    serve_ok: bool,
}

impl Report {
    /// The summary; whether the soak passed (each failure named).
    fn print(&self, tally: &Tally) -> bool {
        let acked = tally.acked.lock().unwrap().clone();
        let fetched = tally.fetched.lock().unwrap().clone();
        let ambiguous = tally.ambiguous.lock().unwrap().clone();
        let missing: Vec<&(String, String)> = acked.iter().filter(|key| !fetched.contains_key(*key)).collect();
        let duplicated: Vec<(&(String, String), usize)> = fetched.iter().filter(|(_, uids)| uids.len() > 1).map(|(key, uids)| (key, uids.len())).collect();
        let unexplained: Vec<_> = duplicated.iter().filter(|((_, id), _)| !ambiguous.contains(id)).collect();
        let unacked = fetched.keys().filter(|key| !acked.contains(*key)).count();
        let peak = self.rss.peak().max(self.hwm.unwrap_or(0.0));
        let end = self.rss.samples.last().map_or(0.0, |(_, mb)| *mb);
        let load = |counter: &AtomicU64| counter.load(Relaxed);
        println!("soak summary:");
        println!("  duration: {:.0} s (sending {} s, then the drain)", self.elapsed.as_secs_f64(), self.sending);
        println!("  hostile clients: {HOSTILE}; sessions opened: {}; refused at connect (limits): {}; cut off by the server: {}", load(&tally.hostile_sessions), load(&tally.hostile_refused), load(&tally.cut_off));
        println!("  refused commands sent (garbage, overlong lines, wrong passwords): {}", load(&tally.refused_commands));
        println!("  well-behaved senders: {SENDERS}; sessions: {}; refused at connect: {}; messages carried over a refused or broken session (per attempt): {}", load(&tally.sender_sessions), load(&tally.sender_refused), load(&tally.sender_retries));
        println!("  messages (mailbox, Message-ID) acknowledged: {}; fetched: {}; missing: {}; duplicated: {} ({} after an ambiguous resend); fetched but never acknowledged: {unacked}", acked.len(), acked.len() - missing.len(), missing.len(), duplicated.len(), duplicated.len() - unexplained.len());
        let curve: Vec<String> = self.rss.samples.iter().step_by((self.rss.samples.len() / 12).max(1)).map(|(at, mb)| format!("{at:.0}s:{mb:.1}")).collect();
        println!("  serve RSS: peak {peak:.1} MB (VmHWM {}), at the end {end:.1} MB; samples {}", self.hwm.map_or("?".into(), |mb| format!("{mb:.1} MB")), curve.join(" "));
        println!("  mailchaos check: {} ({})", if self.check.0 { "ok" } else { "FAILED" }, self.check.1);
        println!("  mailchaos verify-store: {} ({})", if self.verify.0 { "ok" } else { "FAILED" }, self.verify.1);
        for (user, id) in missing.iter().take(10) {
            println!("  missing: {id} for {user}");
        }
        for ((user, id), copies) in unexplained.iter().take(10) {
            println!("  duplicated: {id} for {user}: {copies} copies");
        }
        let mut failed = Vec::new();
        if !missing.is_empty() {
            failed.push(format!("{} acknowledged messages never fetched", missing.len()));
        }
        if !unexplained.is_empty() {
            failed.push(format!("{} messages fetched more than once", unexplained.len()));
        }
        if peak >= RSS_LIMIT_MB {
            failed.push(format!("peak RSS {peak:.1} MB ≥ {RSS_LIMIT_MB} MB"));
        }
        if !self.check.0 {
            failed.push("mailchaos check".into());
        }
        if !self.verify.0 {
            failed.push("mailchaos verify-store".into());
        }
        if !self.serve_ok {
            failed.push("serve exited before the end".into());
        }
        match failed.is_empty() {
            true => println!("soak: ok"),
            false => println!("soak: FAILED: {}", failed.join("; ")),
        }
        failed.is_empty()
    }
}

/// A small deterministic generator per thread (no dependency for randomness).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// A connection from source address SOURCE to the server's PORT on loopback.
pub(crate) fn connect(source: Ipv4Addr, port: u16) -> std::io::Result<TcpStream> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    socket.bind(&SocketAddr::from((source, 0)).into())?;
    socket.connect_timeout(&SocketAddr::from((Ipv4Addr::LOCALHOST, port)).into(), Duration::from_secs(5))?;
    let stream: TcpStream = socket.into();
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    Ok(stream)
}

/// Sleeps up to DURATION in short steps, returning early (false) once FLAG is set.
fn nap(duration: Duration, flag: &AtomicBool) -> bool {
    let until = Instant::now() + duration;
    while Instant::now() < until {
        if flag.load(Relaxed) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200).min(until.saturating_duration_since(Instant::now())));
    }
    !flag.load(Relaxed)
}

/// A reply line read within TIMEOUT; None when the connection closed, failed or stayed silent.
fn line(reader: &mut BufReader<TcpStream>, timeout: Duration) -> Option<String> {
    reader.get_ref().set_read_timeout(Some(timeout)).ok()?;
    let mut text = String::new();
    // A line is bounded: a server that never ends one is not ours to wait for forever.
    match reader.by_ref().take(4096).read_line(&mut text) {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(text),
    }
}

/// An SMTP reply (the last line of a multi-line one), its code first.
fn reply(reader: &mut BufReader<TcpStream>, timeout: Duration) -> Option<String> {
    for _ in 0..100 {
        let text = line(reader, timeout)?;
        if text.as_bytes().get(3) != Some(&b'-') {
            return Some(text);
        }
    }
    None
}

/// The hostile behaviours, by client index modulo 10.
#[derive(Clone, Copy, Debug)]
enum Hostile {
    /// An SMTP command line one octet every 3 s (the command deadline cuts it).
    TrickleCommand,
    /// DATA opened, then a body line every 5 s, never ended.
    TrickleData,
    /// Unknown commands and overlong lines, each sent as soon as the last was answered.
    Garbage,
    /// Connect to SMTP and never say a word.
    SilentSmtp,
    /// POP3 USER/PASS with a wrong password, again and again.
    WrongPop3,
    /// IMAP LOGIN with a wrong password, again and again.
    WrongImap,
    /// Connect to POP3 or IMAP and never log in.
    SilentLogin,
    /// Many SMTP sessions from one address (all clients of this kind share it): the per-address limit.
    HoldMany,
}

fn behaviour(index: usize) -> Hostile {
    match index % 10 {
        0 | 8 => Hostile::TrickleCommand,
        1 => Hostile::TrickleData,
        2 => Hostile::Garbage,
        3 => Hostile::SilentSmtp,
        4 => Hostile::WrongPop3,
        5 => Hostile::WrongImap,
        6 | 9 => Hostile::SilentLogin,
        _ => Hostile::HoldMany,
    }
}

/// One hostile client for the whole run: a session, then a pause of 2–6 s, until the end.
fn hostile(index: usize, offset: u16, tally: &Tally) {
    let kind = behaviour(index);
    let source = match kind {
        Hostile::HoldMany => Ipv4Addr::new(127, 66, 0, 1),
        _ => Ipv4Addr::new(127, 10 + (index / 250) as u8, 0, (index % 250) as u8 + 1),
    };
    let mut rng = Rng::new(index as u64 + 1);
    // Spread the first connections over 10 s rather than 1,000 at once.
    let mut pause = Duration::from_millis(rng.below(10_000));
    while nap(pause, &tally.stop_all) {
        let _ = hostile_session(kind, index, source, offset, tally);
        pause = Duration::from_millis(2000 + rng.below(4000));
    }
}

fn hostile_session(kind: Hostile, index: usize, source: Ipv4Addr, offset: u16, tally: &Tally) -> Option<()> {
    let port = match kind {
        Hostile::WrongPop3 => 110,
        Hostile::WrongImap => 143,
        Hostile::SilentLogin if index % 20 < 10 => 110,
        Hostile::SilentLogin => 143,
        _ => 25,
    } + offset;
    let stream = connect(source, port).ok()?;
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let greeting = line(&mut reader, Duration::from_secs(30))?;
    // A server at its limit says so in its greeting and closes.
    if greeting.starts_with("421") || greeting.starts_with("-ERR") || greeting.starts_with("* BYE") {
        tally.hostile_refused.fetch_add(1, Relaxed);
        return None;
    }
    tally.hostile_sessions.fetch_add(1, Relaxed);
    let mut stream = stream;
    let cut = match kind {
        Hostile::TrickleCommand => trickle(&mut stream, &mut reader, b"EHLO trickle.example\r\n", Duration::from_secs(3), tally),
        Hostile::TrickleData => trickle_data(&mut stream, &mut reader, tally),
        Hostile::Garbage => garbage(&mut stream, &mut reader, index, tally),
        Hostile::WrongPop3 => wrong_logins(&mut stream, &mut reader, |n| format!("USER anna\r\nPASS wrong-{n}\r\n"), 2, tally),
        Hostile::WrongImap => wrong_logins(&mut stream, &mut reader, |n| format!("a{n} LOGIN bruno wrong-{n}\r\n"), 1, tally),
        Hostile::SilentSmtp | Hostile::SilentLogin | Hostile::HoldMany => silent(&mut reader, tally),
    };
    if cut {
        tally.cut_off.fetch_add(1, Relaxed);
    }
    Some(())
}

/// Whether the server has closed or answered (checked without waiting long).
fn answered(reader: &mut BufReader<TcpStream>) -> bool {
    if reader.get_ref().set_read_timeout(Some(Duration::from_millis(20))).is_err() {
        return true;
    }
    match reader.fill_buf() {
        // Data (a reply) or the end of the stream (closed): either way the server has spoken.
        Ok(_) => true,
        Err(error) => !matches!(error.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
    }
}

/// Sends TEXT one octet every STEP, cycling, until the server answers or closes (true: it cut
/// us off) or the run ends (false).
fn trickle(stream: &mut TcpStream, reader: &mut BufReader<TcpStream>, text: &[u8], step: Duration, tally: &Tally) -> bool {
    for octet in text.iter().cycle() {
        if stream.write_all(&[*octet]).is_err() || answered(reader) {
            return true;
        }
        if !nap(step, &tally.stop_all) {
            return false;
        }
    }
    false
}

fn trickle_data(stream: &mut TcpStream, reader: &mut BufReader<TcpStream>, tally: &Tally) -> bool {
    let steps = ["EHLO data.example\r\n", "MAIL FROM:<slow@data.example>\r\n", "RCPT TO:<carla@libero.test>\r\n", "DATA\r\n"];
    for step in steps {
        if stream.write_all(step.as_bytes()).is_err() {
            return true;
        }
        match reply(reader, Duration::from_secs(30)) {
            Some(text) if text.starts_with('2') || text.starts_with('3') => {}
            _ => return true,
        }
    }
    trickle(stream, reader, b"X-Trickle: never ending\r\n", Duration::from_secs(5), tally)
}

/// Refused commands as fast as the server answers them; overlong lines every third.
fn garbage(stream: &mut TcpStream, reader: &mut BufReader<TcpStream>, index: usize, tally: &Tally) -> bool {
    let long = format!("{}\r\n", "X".repeat(2000 + index));
    for n in 0u64.. {
        if tally.stop_all.load(Relaxed) {
            return false;
        }
        let command = if n % 3 == 2 { long.clone() } else { format!("XYZZY {n} \u{7f}garbage\r\n") };
        if stream.write_all(command.as_bytes()).is_err() {
            return true;
        }
        match reply(reader, Duration::from_secs(30)) {
            Some(text) if text.starts_with('5') || text.starts_with('4') => {
                tally.refused_commands.fetch_add(1, Relaxed);
                if text.starts_with("421") {
                    return true;
                }
            }
            Some(_) => {}
            None => return true,
        }
    }
    false
}

/// A wrong login (LINES reply lines each), again and again, until closed.
fn wrong_logins(stream: &mut TcpStream, reader: &mut BufReader<TcpStream>, login: impl Fn(u64) -> String, lines: usize, tally: &Tally) -> bool {
    for n in 0u64.. {
        if tally.stop_all.load(Relaxed) {
            return false;
        }
        if stream.write_all(login(n).as_bytes()).is_err() {
            return true;
        }
        for _ in 0..lines {
            // The server slows each failure down: up to several seconds.
            match line(reader, Duration::from_secs(60)) {
                Some(text) if text.starts_with("-ERR") || text.contains(" NO ") || text.contains(" BAD ") => {
                    tally.refused_commands.fetch_add(1, Relaxed);
                }
                Some(text) if text.starts_with("* BYE") => return true,
                Some(_) => {}
                None => return true,
            }
        }
    }
    false
}

/// Says nothing; reads until the server closes (true) or the run ends.
fn silent(reader: &mut BufReader<TcpStream>, tally: &Tally) -> bool {
    while !tally.stop_all.load(Relaxed) {
        match line(reader, Duration::from_secs(2)) {
            Some(_) => continue,
            None if answered(reader) => return true,
            None => continue,
        }
    }
    false
}

/// A well-behaved sender: a session every 10–20 s with one to three messages, each to one to
/// three mailboxes; a message not acknowledged (4xx, a broken session, no session) is sent again
/// in the next session, as an MTA's queue would, with a backoff of 1 s doubling to 16 s.
fn sender(index: usize, offset: u16, tally: &Tally) {
    let source = Ipv4Addr::new(127, 20, 0, index as u8 + 1);
    let mut rng = Rng::new(10_000 + index as u64);
    let mut queue: Vec<Message> = Vec::new();
    let mut next_id = 0u64;
    let mut backoff = Duration::from_secs(1);
    if !nap(Duration::from_millis(rng.below(5000)), &tally.stop_senders) {
        return;
    }
    loop {
        while queue.len() < 3 && queue.iter().filter(|message| message.attempts == 0).count() < 1 + rng.below(3) as usize {
            next_id += 1;
            queue.push(Message::new(index, next_id, &mut rng));
        }
        let before = queue.len();
        match smtp_session(source, offset, &mut queue, tally) {
            Ok(()) => {
                backoff = Duration::from_secs(1);
                let pause = Duration::from_millis(10_000 + rng.below(10_000));
                if !nap(pause, &tally.stop_senders) {
                    return;
                }
            }
            Err(_) => {
                tally.sender_retries.fetch_add(queue.len().min(before) as u64, Relaxed);
                if !nap(backoff, &tally.stop_senders) {
                    return;
                }
                backoff = (backoff * 2).min(Duration::from_secs(16));
            }
        }
    }
}

struct Message {
    id: String,
    recipients: Vec<&'static str>,
    attempts: u32,
}

impl Message {
    fn new(sender: usize, n: u64, rng: &mut Rng) -> Message {
        let first = rng.below(3) as usize;
        let count = 1 + rng.below(3) as usize;
        let recipients = (0..count).map(|k| USERS[(first + k) % USERS.len()]).collect();
        Message { id: format!("<soak-{sender}-{n}@sender{sender}.example>"), recipients, attempts: 0 }
    }

    fn text(&self, sender: usize) -> String {
        let to: Vec<String> = self.recipients.iter().map(|user| format!("{user}@{DOMAIN}")).collect();
        format!("From: sender{sender}@sender{sender}.example\r\nTo: {}\r\nSubject: soak {}\r\nMessage-ID: {}\r\n\r\nA well-behaved message.\r\n.leading dot\r\n", to.join(", "), self.id, self.id).replace("\r\n.leading", "\r\n..leading")
    }
}

/// One SMTP session sending the queue in order; acknowledged messages leave the queue. Err when
/// the session could not be had or broke (what is left is retried).
fn smtp_session(source: Ipv4Addr, offset: u16, queue: &mut Vec<Message>, tally: &Tally) -> Result<(), String> {
    let sender = source.octets()[3] as usize - 1;
    let mut stream = connect(source, 25 + offset).map_err(|error| error.to_string())?;
    let mut reader = BufReader::new(stream.try_clone().map_err(|error| error.to_string())?);
    let timeout = Duration::from_secs(60);
    let say = |stream: &mut TcpStream, reader: &mut BufReader<TcpStream>, text: &str| -> Result<String, String> {
        if !text.is_empty() {
            stream.write_all(text.as_bytes()).map_err(|error| error.to_string())?;
        }
        reply(reader, timeout).ok_or_else(|| "no reply".to_string())
    };
    let greeting = say(&mut stream, &mut reader, "")?;
    if !greeting.starts_with("220") {
        tally.sender_refused.fetch_add(1, Relaxed);
        return Err(greeting);
    }
    tally.sender_sessions.fetch_add(1, Relaxed);
    expect(&say(&mut stream, &mut reader, &format!("EHLO sender{sender}.example\r\n"))?, '2')?;
    while let Some(message) = queue.first_mut() {
        message.attempts += 1;
        expect(&say(&mut stream, &mut reader, &format!("MAIL FROM:<sender{sender}@sender{sender}.example>\r\n"))?, '2')?;
        let mut accepted = Vec::new();
        for user in &message.recipients {
            let answer = say(&mut stream, &mut reader, &format!("RCPT TO:<{user}@{DOMAIN}>\r\n"))?;
            if answer.starts_with('2') {
                accepted.push(*user);
            }
        }
        if accepted.is_empty() {
            let _ = say(&mut stream, &mut reader, "RSET\r\n");
            return Err("no recipient accepted".into());
        }
        expect(&say(&mut stream, &mut reader, "DATA\r\n")?, '3')?;
        let body = format!("{}.\r\n", message.text(sender));
        stream.write_all(body.as_bytes()).map_err(|error| error.to_string())?;
        let Some(answer) = reply(&mut reader, timeout) else {
            // Sent but unanswered: the server may have taken it; the resend may duplicate it.
            tally.ambiguous.lock().unwrap().insert(message.id.clone());
            return Err("no reply to the final dot".into());
        };
        expect(&answer, '2')?;
        let mut acked = tally.acked.lock().unwrap();
        for user in &accepted {
            acked.insert((user.to_string(), message.id.clone()));
        }
        drop(acked);
        // Recipients refused with 4xx would be retried by an MTA; ours are all valid, so a refused
        // one is resent with the message (a second copy to the others is then ambiguous, not lost).
        if accepted.len() < message.recipients.len() {
            message.recipients.retain(|user| !accepted.contains(user));
            tally.ambiguous.lock().unwrap().insert(message.id.clone());
            return Err("a recipient refused".into());
        }
        queue.remove(0);
    }
    let _ = say(&mut stream, &mut reader, "QUIT\r\n");
    Ok(())
}

fn expect(reply: &str, class: char) -> Result<(), String> {
    match reply.starts_with(class) {
        true => Ok(()),
        false => Err(reply.trim().to_string()),
    }
}

/// One POP3 reader per mailbox: UIDL, RETR of each new UID, DELE, QUIT, every 2 s. A UID is
/// counted once (a UIDL cache, as a real client keeps), so a second UID with one Message-ID is a
/// second copy in the store, not a second download.
fn reader(index: usize, user: &'static str, offset: u16, tally: &Tally) {
    let source = Ipv4Addr::new(127, 30, 0, index as u8 + 1);
    let mut seen: BTreeSet<String> = BTreeSet::new();
    while !tally.stop_all.load(Relaxed) {
        let _ = pop3_session(source, user, offset, &mut seen, tally);
        if !nap(Duration::from_secs(2), &tally.stop_all) {
            return;
        }
    }
}

fn pop3_session(source: Ipv4Addr, user: &str, offset: u16, seen: &mut BTreeSet<String>, tally: &Tally) -> Option<()> {
    for (uid, id) in pop3_fetch(source, user, 110 + offset, seen)? {
        tally.fetched.lock().unwrap().entry((user.to_string(), id)).or_default().insert(uid);
    }
    Some(())
}

/// One POP3 session of USER from SOURCE: the (UID, Message-ID) of each message whose UID is not in
/// SEEN, each deleted; the UIDs are added to SEEN once QUIT is answered. None when the session
/// failed before that (its messages are then fetched again, under the same UIDs, next time).
pub(crate) fn pop3_fetch(source: Ipv4Addr, user: &str, port: u16, seen: &mut BTreeSet<String>) -> Option<Vec<(String, String)>> {
    let mut stream = connect(source, port).ok()?;
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let timeout = Duration::from_secs(30);
    let ok = |stream: &mut TcpStream, reader: &mut BufReader<TcpStream>, command: &str| -> Option<()> {
        if !command.is_empty() {
            stream.write_all(command.as_bytes()).ok()?;
        }
        line(reader, timeout).filter(|text| text.starts_with("+OK")).map(|_| ())
    };
    ok(&mut stream, &mut reader, "")?;
    ok(&mut stream, &mut reader, &format!("USER {user}\r\n"))?;
    ok(&mut stream, &mut reader, &format!("PASS pw-{user}\r\n"))?;
    ok(&mut stream, &mut reader, "UIDL\r\n")?;
    let listing = multiline(&mut reader, timeout)?;
    let mut fetched = Vec::new();
    for entry in listing.lines() {
        let mut words = entry.split_whitespace();
        let (Some(number), Some(uid)) = (words.next(), words.next()) else { continue };
        if !seen.contains(uid) {
            ok(&mut stream, &mut reader, &format!("RETR {number}\r\n"))?;
            let text = multiline(&mut reader, timeout)?;
            let header = text.split("\n\n").next().unwrap_or_default();
            let id = header.lines().find_map(|field| field.split_once(':').filter(|(name, _)| name.eq_ignore_ascii_case("message-id")).map(|(_, value)| value.trim().to_string()));
            fetched.push((uid.to_string(), id.unwrap_or_else(|| "(none)".into())));
        }
        ok(&mut stream, &mut reader, &format!("DELE {number}\r\n"))?;
    }
    // Counted only once the QUIT committed the deletions: a session cut before it is fetched
    // again in full next time, under the same UIDs.
    ok(&mut stream, &mut reader, "QUIT\r\n")?;
    seen.extend(fetched.iter().map(|(uid, _)| uid.clone()));
    Some(fetched)
}

/// A POP3 multi-line answer up to its terminating dot, dot-unstuffed; bounded in lines.
fn multiline(reader: &mut BufReader<TcpStream>, timeout: Duration) -> Option<String> {
    let mut text = String::new();
    for _ in 0..200_000 {
        let part = line(reader, timeout)?;
        let part = part.trim_end_matches(['\r', '\n']);
        if part == "." {
            return Some(text);
        }
        text.push_str(part.strip_prefix('.').unwrap_or(part));
        text.push('\n');
    }
    None
}
