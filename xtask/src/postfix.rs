//! `cargo xtask postfix-interop`: a real MTA, Debian's Postfix, relays mail to `mailchaos serve`
//! and keeps what serve does not take. Postfix is installed with apt-get where missing (root
//! needed), configured with `postconf -e` to relay everything to serve's SMTP port on loopback
//! with short retry times, and started with `postfix start` (no systemd here). 20 messages go
//! through; then serve is stopped (SIGTERM) and 5 more are injected, which Postfix must defer
//! (`postqueue -j`: deferred, a delay reason); serve is restarted on the same data dir, the queue
//! flushed (`postqueue -f`), and all 25 must be fetched over POP3 exactly once, and `mailchaos
//! check` must pass the history of both runs. Postfix is stopped at the end and its main.cf put
//! back as it was. Not part of `ci`.

use crate::soak::{connect, pop3_fetch};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const USER: &str = "anna";
const MAIN_CF: &str = "/etc/postfix/main.cf";
const FIRST: usize = 20;
const SECOND: usize = 5;
/// Longest wait for mail to arrive or Postfix to defer it: its retries are seconds apart here.
const WAIT: Duration = Duration::from_secs(180);

pub fn interop(binary: &Path) -> Result<bool, String> {
    let uid = String::from_utf8_lossy(&Command::new("id").arg("-u").output().map_err(|error| format!("cannot run id: {error}"))?.stdout).trim().to_string();
    if uid != "0" {
        return Err(format!("postfix-interop installs and runs Postfix as root; this is uid {uid}: run it as root (in a container or VM)"));
    }
    install()?;
    let dir = std::env::temp_dir().join(format!("mailchaos-postfix-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|error| format!("{}: {error}", dir.display()))?;
    let offset = crate::shell::free_offset()?;
    // The machine's own main.cf is put back at the end: the relay to serve is this test's only.
    let saved = std::fs::read(MAIN_CF).map_err(|error| format!("{MAIN_CF}: {error}"))?;
    // A Postfix already running may be someone else's (the machine is shared): never stop it.
    if quiet(Command::new("postfix").arg("status")).is_ok() {
        return Err("Postfix is already running (`postfix status`); this task configures, starts and stops Postfix itself: stop it first (`postfix stop`) if it is not in use".into());
    }
    let result = configure(offset).and_then(|()| crate::shell::check(Command::new("postfix").arg("start"))).and_then(|()| scenario(binary, &dir, offset));
    let stopped = crate::shell::check(Command::new("postfix").arg("stop"));
    let restored = std::fs::write(MAIN_CF, &saved).map_err(|error| format!("{MAIN_CF}: {error}"));
    println!("postfix-interop: postfix stopped{}; {MAIN_CF} restored{}", stopped.as_ref().err().map_or(String::new(), |error| format!(" (failed: {error})")), restored.as_ref().err().map_or(String::new(), |error| format!(" (failed: {error})")));
    let ok = result? && stopped.is_ok() && restored.is_ok();
    match ok {
        true => {
            let _ = std::fs::remove_dir_all(&dir);
        }
        false => println!("postfix-interop: kept {} (history.jsonl, data/, serve-*.log; Postfix's log: /var/log/postfix-mailchaos.log)", dir.display()),
    }
    Ok(ok)
}

/// Installs Debian's postfix where `postfix` is missing.
fn install() -> Result<(), String> {
    if Path::new("/usr/sbin/postfix").is_file() {
        println!("postfix-interop: postfix is installed");
        return Ok(());
    }
    crate::shell::apt_install("postfix-interop", &["postfix"], true)?;
    match Path::new("/usr/sbin/postfix").is_file() {
        true => Ok(()),
        false => Err("apt-get installed postfix, but /usr/sbin/postfix is still missing".into()),
    }
}

/// Relay everything to serve; no local delivery; retries seconds apart, so the test takes a
/// minute rather than Postfix's default hours. The log goes to a file: there is no syslog here.
fn configure(offset: u16) -> Result<(), String> {
    let settings = [
        format!("relayhost = [127.0.0.1]:{}", 25 + offset),
        "myhostname = postfix-interop.example.org".into(),
        "mydestination =".into(),
        "inet_interfaces = loopback-only".into(),
        "inet_protocols = ipv4".into(),
        "mynetworks = 127.0.0.0/8".into(),
        "local_transport = error:local delivery is disabled".into(),
        "queue_run_delay = 5s".into(),
        "minimal_backoff_time = 5s".into(),
        "maximal_backoff_time = 10s".into(),
        "smtp_connect_timeout = 5s".into(),
        "smtp_tls_security_level = none".into(),
        "maillog_file = /var/log/postfix-mailchaos.log".into(),
    ];
    println!("postfix-interop: postconf -e {}", settings.iter().map(|setting| format!("'{setting}'")).collect::<Vec<_>>().join(" "));
    crate::shell::check(Command::new("postconf").arg("-e").args(&settings))
}

/// The steps; Ok(whether all 25 arrived exactly once and the history passed).
fn scenario(binary: &Path, dir: &Path, offset: u16) -> Result<bool, String> {
    let tag = format!("{}.{}", std::process::id(), std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |since| since.as_secs()));
    let ids: Vec<String> = (1..=FIRST + SECOND).map(|n| format!("<interop-{n}.{tag}@example.org>")).collect();
    let mut mailbox = Mailbox { port: 110 + offset, seen: BTreeSet::new(), copies: BTreeMap::new() };
    let mut serve = Serve::start(binary, dir, offset, 1)?;
    for (n, id) in ids[..FIRST].iter().enumerate() {
        inject(id, n + 1)?;
    }
    println!("postfix-interop: {FIRST} messages injected with sendmail; waiting for them over POP3");
    let first = mailbox.wait_for(&ids[..FIRST]);
    println!("postfix-interop: {first} of {FIRST} fetched");
    serve.stop();
    for (n, id) in ids[FIRST..].iter().enumerate() {
        inject(id, FIRST + n + 1)?;
    }
    println!("postfix-interop: serve stopped (SIGTERM); {SECOND} more injected");
    let reasons = deferred(&ids[FIRST..]);
    for reason in &reasons {
        println!("postfix-interop: deferred: {reason}");
    }
    let mut serve = Serve::start(binary, dir, offset, 2)?;
    crate::shell::check(Command::new("postqueue").arg("-f"))?;
    println!("postfix-interop: serve restarted on the same data dir; postqueue -f");
    let all = mailbox.wait_for(&ids);
    serve.stop();
    let check = Command::new(binary).arg("check").arg(dir.join("history.jsonl")).output().map_err(|error| format!("cannot run mailchaos check: {error}"))?;
    let check_text = String::from_utf8_lossy(&check.stdout).to_string() + &String::from_utf8_lossy(&check.stderr);
    summary(&ids, &mailbox, first, all, &reasons, check.status.success(), &check_text)
}

fn summary(ids: &[String], mailbox: &Mailbox, first: usize, all: usize, reasons: &[String], check_ok: bool, check_text: &str) -> Result<bool, String> {
    let once = ids.iter().filter(|id| mailbox.copies.get(*id) == Some(&1)).count();
    let twice: Vec<&String> = ids.iter().filter(|id| mailbox.copies.get(*id).is_some_and(|copies| *copies > 1)).collect();
    let missing: Vec<&String> = ids.iter().filter(|id| !mailbox.copies.contains_key(*id)).collect();
    println!("postfix-interop summary:");
    println!("  first batch: {first} of {FIRST} arrived before serve was stopped");
    println!("  while serve was down: {} of {SECOND} deferred by Postfix", reasons.len());
    println!("  after the restart and postqueue -f: {all} of {} arrived; exactly once: {once}; more than once: {}; missing: {}", ids.len(), twice.len(), missing.len());
    for id in twice.iter().chain(missing.iter()) {
        println!("    {id}: {} copies", mailbox.copies.get(*id).copied().unwrap_or(0));
    }
    println!("  mailchaos check: {} ({})", if check_ok { "ok" } else { "FAILED" }, check_text.lines().rev().find(|line| !line.trim().is_empty()).unwrap_or("").trim());
    let ok = once == ids.len() && reasons.len() == SECOND && check_ok;
    println!("postfix-interop: {}", if ok { "ok" } else { "FAILED" });
    Ok(ok)
}

/// `sendmail -f sender@example.org anna@libero.test` with a message on stdin.
fn inject(id: &str, n: usize) -> Result<(), String> {
    let text = format!("From: sender@example.org\nTo: {USER}@libero.test\nSubject: postfix interop {n}\nMessage-ID: {id}\n\nMessage {n}, relayed by Postfix.\n.a line with a leading dot\n");
    let mut child = Command::new("/usr/sbin/sendmail").args(["-f", "sender@example.org", &format!("{USER}@libero.test")]).stdin(Stdio::piped()).spawn().map_err(|error| format!("cannot run sendmail: {error}"))?;
    child.stdin.take().map(|mut stdin| stdin.write_all(text.as_bytes())).transpose().map_err(|error| format!("sendmail: {error}"))?;
    match wait(&mut child, Duration::from_secs(30)) {
        Some(true) => Ok(()),
        _ => Err(format!("sendmail did not take message {n}")),
    }
}

/// Waits until Postfix's queue holds every one of IDS deferred with a delay reason (bounded);
/// the reason of each so deferred.
fn deferred(ids: &[String]) -> Vec<String> {
    let started = Instant::now();
    let mut reasons = Vec::new();
    while started.elapsed() < WAIT {
        let queue = Command::new("postqueue").arg("-j").output().map(|out| String::from_utf8_lossy(&out.stdout).to_string()).unwrap_or_default();
        // One JSON object a line, without the Message-ID: ours are the deferred ones to our user.
        let ours = format!("\"address\": \"{USER}@libero.test\"");
        reasons = queue.lines().filter(|entry| entry.contains("\"queue_name\": \"deferred\"") && entry.contains(&ours)).filter_map(|entry| string_field(entry, "delay_reason")).collect();
        if reasons.len() >= ids.len() {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    reasons
}

/// The value of a JSON string field `"NAME": "..."` (escapes kept as written: enough to show it).
fn string_field(entry: &str, name: &str) -> Option<String> {
    let start = entry.find(&format!("\"{name}\": \""))? + name.len() + 5;
    let rest = &entry[start..];
    let mut end = 0;
    let bytes = rest.as_bytes();
    while end < bytes.len() && !(bytes[end] == b'"' && (end == 0 || bytes[end - 1] != b'\\')) {
        end += 1;
    }
    Some(rest[..end].to_string())
}

/// The mailbox as POP3 shows it: copies per Message-ID, each UID counted once.
struct Mailbox {
    port: u16,
    seen: BTreeSet<String>,
    copies: BTreeMap<String, usize>,
}

impl Mailbox {
    /// Fetches until every one of IDS has arrived or WAIT has passed; how many have.
    fn wait_for(&mut self, ids: &[String]) -> usize {
        let started = Instant::now();
        loop {
            for (_, id) in pop3_fetch(Ipv4Addr::LOCALHOST, USER, self.port, &mut self.seen).unwrap_or_default() {
                *self.copies.entry(id).or_default() += 1;
            }
            let arrived = ids.iter().filter(|id| self.copies.contains_key(*id)).count();
            if arrived == ids.len() || started.elapsed() > WAIT {
                return arrived;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

/// `serve --data-dir` (the same dir, history and ledger for both runs: the second recovers the first's).
struct Serve {
    child: Child,
}

impl Serve {
    fn start(binary: &Path, dir: &Path, offset: u16, run: u32) -> Result<Serve, String> {
        let log_path: PathBuf = dir.join(format!("serve-{run}.log"));
        let log = std::fs::File::create(&log_path).map_err(|error| format!("{}: {error}", log_path.display()))?;
        let err = log.try_clone().map_err(|error| error.to_string())?;
        let mut command = Command::new(binary);
        command.args(["serve", "--port-offset", &offset.to_string(), "--users", "anna,bruno", "--seconds", "900"]);
        command.arg("--data-dir").arg(dir.join("data")).arg("--history").arg(dir.join("history.jsonl")).arg("--ledger").arg(dir.join("ledger"));
        let mut child = command.stdout(log).stderr(err).stdin(Stdio::null()).spawn().map_err(|error| format!("cannot start serve: {error}"))?;
        let started = Instant::now();
        // Listening once POP3 answers (its port is the last of the four to matter here).
        while started.elapsed() < Duration::from_secs(15) {
            if std::fs::read_to_string(&log_path).unwrap_or_default().contains("listening:") && connect(Ipv4Addr::LOCALHOST, 25 + offset).is_ok() {
                println!("postfix-interop: serve started (run {run}, port offset {offset})");
                return Ok(Serve { child });
            }
            if wait(&mut child, Duration::ZERO).is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
        Err(format!("serve did not start: {}", std::fs::read_to_string(&log_path).unwrap_or_default().trim()))
    }

    /// SIGTERM (the `kill` program: xtask has no unsafe code), 10 s, then SIGKILL.
    fn stop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        if wait(&mut self.child, Duration::from_secs(10)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if wait(&mut self.child, Duration::ZERO).is_none() {
            self.stop();
        }
    }
}

/// Waits at most LIMIT for a child: Some(success) once it exited.
fn wait(child: &mut Child, limit: Duration) -> Option<bool> {
    let started = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status.success());
        }
        if started.elapsed() >= limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn quiet(command: &mut Command) -> Result<(), String> {
    crate::shell::check(command.stdout(Stdio::null()).stderr(Stdio::null()))
}
