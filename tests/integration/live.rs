//! Live mode: a real TCP client talks SMTP to the MX and POP3 to the store, over loopback;
//! and an independent one, Python's standard library (`tests/interop/`), does the same, with
//! POP3 and with IMAP.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(port_offset: u16) -> Server {
    start_with(port_offset, "anna,bruno")
}

fn start_with(port_offset: u16, users: &str) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mailchaos"))
        .args(["serve", "--port-offset", &port_offset.to_string(), "--users", users, "--seconds", "120"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("a first line");
    assert!(line.starts_with("listening: smtp 127.0.0.1:"), "{line}");
    Server(child)
}

struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    fn connect(port: u16) -> Client {
        // The server announces itself as it starts listening; allow it a moment.
        let deadline = Instant::now() + Duration::from_secs(5);
        let stream = loop {
            match TcpStream::connect(("127.0.0.1", port)) {
                Ok(stream) => break stream,
                Err(error) if Instant::now() > deadline => panic!("cannot connect to {port}: {error}"),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Client { reader: BufReader::new(stream.try_clone().unwrap()), writer: stream }
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("a reply line");
        line
    }

    /// The last line of a (possibly multi-line) SMTP reply.
    fn reply(&mut self) -> String {
        loop {
            let line = self.line();
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return line;
            }
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).unwrap();
    }

    fn smtp(&mut self, command: &str) -> String {
        self.send(format!("{command}\r\n").as_bytes());
        self.reply()
    }
}

#[test]
fn a_real_client_sends_over_smtp_and_reads_over_pop3() {
    let offset = 30_000 + (std::process::id() % 20_000) as u16;
    let _server = start(offset);
    let mut smtp = Client::connect(offset + 25);
    assert!(smtp.reply().starts_with("220 "));
    assert!(smtp.smtp("EHLO client.example").starts_with("250 "));
    // Hostile input gets a reply, not a crash.
    assert!(smtp.smtp(&"X".repeat(700)).starts_with("500 5.5.6"));
    assert!(smtp.smtp("MAIL FROM:<sender@example.org> SIZE=999999999").starts_with("552 5.3.4"));
    assert!(smtp.smtp("RCPT TO:<anna@libero.test>").starts_with("503 "));
    assert!(smtp.smtp("MAIL FROM:<sender@example.org>").starts_with("250 "));
    assert!(smtp.smtp("RCPT TO:<someone@elsewhere.example>").starts_with("550 5.7.1"));
    assert!(smtp.smtp("RCPT TO:<nobody@libero.test>").starts_with("550 5.1.1"));
    assert!(smtp.smtp("RCPT TO:<anna@libero.test> NOTIFY=NEVER").starts_with("555 5.5.4"));
    assert!(smtp.smtp("RCPT TO:<anna@libero.test>").starts_with("250 "));
    // Postmaster is an alias of anna (the first mailbox): accepted, and one copy is delivered.
    assert!(smtp.smtp("RCPT TO:<Postmaster>").starts_with("250 "));
    assert!(smtp.smtp("DATA").starts_with("354 "));
    // A smuggling attempt (bare-LF dot lines) stays inside the message; "..x" is unstuffed to ".x".
    let body = "Message-ID: <live-1@example.org>\r\nSubject: live\r\n\r\nhello\n.\nnot the end\r\n..x\r\n";
    smtp.send(format!("{body}.\r\n").as_bytes());
    assert!(smtp.reply().starts_with("250 2.0.0"));
    assert!(smtp.smtp("QUIT").starts_with("221 "));

    let deadline = Instant::now() + Duration::from_secs(20);
    let message = loop {
        let mut pop = Client::connect(offset + 110);
        assert!(pop.line().starts_with("+OK"));
        assert!(pop.smtp("USER anna").starts_with("+OK"));
        assert!(pop.smtp("PASS pw-anna").starts_with("+OK"));
        let stat = pop.smtp("STAT");
        if stat.starts_with("+OK 1 ") {
            assert!(pop.smtp("RETR 1").starts_with("+OK"));
            let mut message = Vec::new();
            loop {
                let line = pop.line();
                if line == ".\r\n" {
                    break;
                }
                // RFC 1939 §3: a line that starts with the termination octet was stuffed.
                message.extend_from_slice(line.strip_prefix('.').unwrap_or(&line).as_bytes());
            }
            let _ = pop.smtp("QUIT");
            break String::from_utf8(message).unwrap();
        }
        let _ = pop.smtp("QUIT");
        assert!(Instant::now() < deadline, "the message never reached the mailbox");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(message.starts_with("Return-Path: <sender@example.org>\r\nReceived: from client.example ([127.0.0.1])\r\n\tby mx.libero.test with ESMTP id "), "{message}");
    // The bare-LF dot line did not end DATA. A bare LF ends a line (never DATA), so its dot was
    // a stuffing dot and is gone; relayed over LMTP the line ends became CRLF.
    assert!(message.ends_with("Subject: live\r\n\r\nhello\r\n\r\nnot the end\r\n.x\r\n"), "{message:?}");
}

/// A port offset whose SMTP, LMTP, POP3 and IMAP ports are free right now (`serve` announces its ports
/// even when a bind failed, so look first): one of 10,000..60,000, the first tried drawn from `seed`.
fn free_offset(seed: u32) -> u16 {
    (0..200u32)
        .map(|step| (10_000 + (seed + step * 211) % 50_000) as u16)
        .find(|offset| [25, 24, 110, 143].iter().all(|port| TcpListener::bind(("127.0.0.1", offset + port)).is_ok()))
        .expect("a free port offset")
}

/// Issue #8: Python's smtplib sends varied messages (multipart/alternative, 8-bit UTF-8 with
/// BODY=8BITMIME, dot-led lines, two recipients, a Bcc, 998-octet lines, no final newline) back
/// to back on one SMTP connection; poplib reads every mailbox (UIDL, LIST, RETR) and each
/// message must arrive exactly once per recipient, byte-identical apart from the trace fields.
#[test]
fn python_stdlib_clients_round_trip_mail_through_live_serve() {
    let offset = free_offset(std::process::id() % 50_000 + 7);
    let stdout = run_interop(offset, "smtp_pop3_roundtrip.py", &["--pop3-port", &(offset + 110).to_string()]);
    assert!(stdout.starts_with("interop: ok: 9 messages on one SMTP connection"), "{stdout}");
}

/// Issue #10: the same messages and the fixtures of `fixtures/messages/`, read back with
/// Python's imaplib: LOGIN, SELECT (EXISTS, UIDVALIDITY, UIDNEXT), UID SEARCH, UID FETCH
/// BODY.PEEK[] byte-identical apart from the trace fields, \Seen by BODY[] and by UID STORE,
/// \Deleted, EXPUNGE and a new SELECT, LOGOUT; and hostile input (an overlong line, garbage, an
/// unknown command, an oversized literal, invalid commands without end) answered BAD or BYE
/// with the server still serving the next client.
#[test]
fn python_imaplib_round_trips_mail_through_live_serve() {
    let offset = free_offset(std::process::id() % 50_000 + 13_001);
    let stdout = run_interop(offset, "smtp_imap_roundtrip.py", &["--imap-port", &(offset + 143).to_string()]);
    assert!(stdout.starts_with("interop: ok: imap: 15 messages on one SMTP connection"), "{stdout}");
}

/// Starts `serve` at `offset` with three mailboxes, runs `tests/interop/SCRIPT` against it with
/// the SMTP port and `args`, and returns its standard output once it succeeded.
fn run_interop(offset: u16, script: &str, args: &[&str]) -> String {
    let script = format!("{}/../../tests/interop/{script}", env!("CARGO_MANIFEST_DIR"));
    match Command::new("python3").arg("--version").output() {
        Ok(output) if output.status.success() => {}
        Ok(output) => panic!("python3 --version failed ({}): {}; this test needs Python 3 (its standard library is the independent client)", output.status, String::from_utf8_lossy(&output.stderr)),
        Err(error) => panic!("cannot run python3 ({error}): this test needs Python 3 on PATH (its standard library is the independent client); install it, the test is not skipped"),
    }
    let _server = start_with(offset, "anna,bruno,carla");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let stdout_path = dir.path().join("stdout");
    let stderr_path = dir.path().join("stderr");
    let mut child = Command::new("python3")
        .arg(&script)
        .args(["--smtp-port", &(offset + 25).to_string()])
        .args(args)
        .args(["--users", "anna,bruno,carla", "--domain", "libero.test"])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).expect("stdout file"))
        .stderr(std::fs::File::create(&stderr_path).expect("stderr file"))
        .spawn()
        .expect("python3 starts");
    // The script bounds its own waits (10 s socket timeouts, 30 s for delivery); this is the backstop.
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for python3") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = std::fs::read_to_string(&stdout_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    let shown = format!("--- stdout ---\n{stdout}--- stderr ---\n{stderr}");
    match status {
        None => panic!("{script} did not finish within 90 s\n{shown}"),
        Some(status) => assert!(status.success(), "{script} failed ({status})\n{shown}"),
    }
    println!("{stdout}");
    stdout
}

/// Issue #12: `serve --data-dir` killed with SIGKILL in the middle of a DATA block and started
/// again. Python's smtplib sends 50 messages (one to three recipients each, five per connection)
/// and poplib reads every mailbox before the kill and after the restart
/// (`tests/interop/live_restart.py`): every message that got a 250 arrives exactly once, byte
/// for byte, and UIDLs seen before the kill are kept and never reused. Then `mailchaos check`
/// judges the streamed history and `verify-store` the directory against the ledger: both ok.
#[test]
fn serve_with_a_data_dir_keeps_acknowledged_mail_across_kill_9() {
    let offset = free_offset(std::process::id() % 50_000 + 21_011);
    let work = tempfile::tempdir().expect("a temporary directory");
    let stdout = run_restart_script(offset, work.path(), &[]);
    assert!(stdout.starts_with("live-restart: ok: 50 messages acknowledged"), "{stdout}");
    let history = work.path().join("history.jsonl");
    let (code, out) = mailchaos(&["check", history.to_str().expect("utf-8 path")]);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("ok history=") && out.contains("judged=A1,A2,A3"), "{out}");
    // The kill and the restart are in the history, and mail was in the queue across them.
    let text = std::fs::read_to_string(&history).expect("the history");
    assert!(text.contains(r#""host":"mx","event":"crash""#), "no crash recorded");
    assert!(text.lines().any(|line| line.contains("queue_recovered") && !line.contains(r#""files":0"#)), "no queue file was recovered: the kill did not catch mail in the queue");
    let store = work.path().join("data/store");
    let ledger = work.path().join("ledger");
    let (code, out) = mailchaos(&["verify-store", store.to_str().expect("utf-8"), "--ledger", ledger.to_str().expect("utf-8")]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("verdict: ok"), "{out}");
}

/// Issue #12: the same run with the planted defect `ack-before-fsync` given to `serve`: the
/// client sees nothing wrong (no power was cut), and `mailchaos check` exits 1 naming A1 from
/// what the tapped wire and the disk recorded.
#[test]
fn check_names_a1_when_serve_answers_before_fsync() {
    let offset = free_offset(std::process::id() % 50_000 + 29_017);
    let work = tempfile::tempdir().expect("a temporary directory");
    let stdout = run_restart_script(offset, work.path(), &["--messages", "10", "--defect", "ack-before-fsync"]);
    assert!(stdout.starts_with("live-restart: ok: 10 messages acknowledged"), "{stdout}");
    let (code, out) = mailchaos(&["check", work.path().join("history.jsonl").to_str().expect("utf-8")]);
    assert_eq!(code, 1, "{out}");
    assert!(out.starts_with("violation history=") && out.contains("violated=[A1:"), "{out}");
    assert!(out.contains("not fsynced"), "{out}");
}

/// Runs `tests/interop/live_restart.py` (it starts, kills and restarts `serve` itself) in `work`.
fn run_restart_script(offset: u16, work: &std::path::Path, args: &[&str]) -> String {
    let script = format!("{}/../../tests/interop/live_restart.py", env!("CARGO_MANIFEST_DIR"));
    let output = Command::new("python3")
        .arg(&script)
        .args(["--mailchaos", env!("CARGO_BIN_EXE_mailchaos"), "--workdir", work.to_str().expect("utf-8 path"), "--port-offset", &offset.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("python3 runs (this test needs Python 3: its standard library is the independent client)");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let log = std::fs::read_to_string(work.join("serve.log")).unwrap_or_default();
    assert!(output.status.success(), "live_restart.py failed ({})\n{stdout}{}\n--- serve.log ---\n{log}", output.status, String::from_utf8_lossy(&output.stderr));
    stdout
}

fn mailchaos(args: &[&str]) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_mailchaos")).args(args).output().expect("mailchaos runs");
    (output.status.code().unwrap_or(-1), format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr)))
}
