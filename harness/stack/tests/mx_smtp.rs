//! The MX as a real SMTP client meets it: one MX on an in-memory disk and in-memory pipes, driven
//! command by command, its queue files read back. Each test names the RFC detail it holds.

use disk::mem::MemDisk;
use disk::{Device, Disk};
use history::{History, Journal};
use stack::mx::{MxConfig, OperatorMode};
use stack::net::{Accepted, BoxStream, Listener, Net, NetFuture};
use stack::queue::{QueuedMessage, RunnerConfig, QUEUE_DIR};
use stack::{Defect, Defects, Env};
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::rc::Rc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream, ReadHalf, WriteHalf};
use tokio::sync::mpsc;

/// The wall time the journal's clock starts from: 2023-01-23 00:00:00 UTC.
const EPOCH_UNIX_S: u64 = 1_674_432_000;
/// What the journal's clock reads during every test.
const NOW_MS: u64 = 3_723_000;

/// The client's address as the listener reports it (live mode gives "ip:port").
const PEER: &str = "192.0.2.7:40125";

/// Connections handed over in memory; the MX's own outgoing connections (LMTP) are refused, so
/// what it accepts stays in its queue for the test to read.
struct PipeNet(RefCell<Option<mpsc::UnboundedReceiver<DuplexStream>>>);

struct PipeListener(tokio::sync::Mutex<mpsc::UnboundedReceiver<DuplexStream>>);

impl Listener for PipeListener {
    fn accept(&self) -> NetFuture<'_, Accepted> {
        Box::pin(async move {
            match self.0.lock().await.recv().await {
                Some(stream) => Ok(Accepted { stream: Box::new(stream), peer: PEER.to_string(), conn: "pipe".into() }),
                None => std::future::pending().await,
            }
        })
    }
}

impl Net for PipeNet {
    fn connect<'a>(&'a self, _host: &'a str, _port: u16) -> NetFuture<'a, BoxStream> {
        Box::pin(async { Err(io::Error::from(io::ErrorKind::ConnectionRefused)) })
    }
    fn listen(&self, _port: u16) -> NetFuture<'_, Box<dyn Listener>> {
        let incoming = self.0.borrow_mut().take();
        Box::pin(async move {
            let incoming = incoming.ok_or_else(|| io::Error::from(io::ErrorKind::AddrInUse))?;
            Ok(Box::new(PipeListener(tokio::sync::Mutex::new(incoming))) as Box<dyn Listener>)
        })
    }
}

fn config() -> MxConfig {
    MxConfig {
        operator: Rc::new(Cell::new(OperatorMode::Normal)),
        hostname: "mx.libero.test".into(),
        domains: vec!["libero.test".into(), "libero.example".into()],
        users: ["anna", "bruno", "carla"].into_iter().map(String::from).collect(),
        postmaster: "anna".into(),
        epoch_unix_s: EPOCH_UNIX_S,
        max_message_bytes: 100_000,
        max_recipients: 10,
        idle_timeout: Duration::from_secs(300),
        command_total_timeout: None,
        data_total_timeout: None,
        max_command_errors: Some(5),
        stress_waits: None,
        max_sessions: 10,
        max_sessions_per_client: 10,
        max_queue_files: 100,
        tarpit: Duration::ZERO,
        runner: RunnerConfig {
            store_host: "store".into(),
            hostname: "mx.libero.test".into(),
            scan_interval: Duration::from_secs(3600),
            retry_base: Duration::from_secs(3600),
            retry_max: Duration::from_secs(3600),
            workers: 1,
            routes: Default::default(),
            epoch_unix_s: EPOCH_UNIX_S,
        },
    }
}

struct Mx {
    connections: mpsc::UnboundedSender<DuplexStream>,
    disk: Rc<MemDisk>,
}

impl Mx {
    /// A new SMTP session, past the greeting.
    async fn connect(&self) -> Client {
        let (ours, theirs) = tokio::io::duplex(1 << 16);
        self.connections.send(theirs).expect("the MX listens");
        let (reader, writer) = tokio::io::split(ours);
        let mut client = Client { reader: BufReader::new(reader), writer };
        assert!(client.reply().await.starts_with("220 "));
        client
    }

    /// The queued message with this Message-ID (each test gives every message its own).
    fn queued(&self, msg: &str) -> QueuedMessage {
        let queue = self.disk.list(QUEUE_DIR).expect("in memory");
        let mut found = queue.iter().filter_map(|name| self.disk.read(&format!("{QUEUE_DIR}/{name}")).ok()).filter_map(|bytes| QueuedMessage::decode(&bytes, true).ok()).filter(|queued| queued.msg == msg);
        let queued = found.next().unwrap_or_else(|| panic!("{msg} is not queued"));
        assert!(found.next().is_none(), "{msg} is queued twice");
        queued
    }
}

struct Client {
    reader: BufReader<ReadHalf<DuplexStream>>,
    writer: WriteHalf<DuplexStream>,
}

impl Client {
    /// The last line of the next reply, without its CRLF.
    async fn reply(&mut self) -> String {
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).await.expect("a reply");
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return line.trim_end().to_string();
            }
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).await.expect("sent");
    }

    async fn command(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.reply().await
    }

    /// EHLO, MAIL, every RCPT (each must get 2xx), DATA and the stuffed body: the final reply.
    async fn transaction(&mut self, rcpts: &[&str], stuffed_body: &[u8]) -> String {
        assert!(self.command("EHLO client.example").await.starts_with("250 "));
        assert!(self.command("MAIL FROM:<sender@example.org>").await.starts_with("250 "));
        for rcpt in rcpts {
            let reply = self.command(&format!("RCPT TO:<{rcpt}>")).await;
            assert!(reply.starts_with("250 "), "{rcpt}: {reply}");
        }
        assert!(self.command("DATA").await.starts_with("354 "));
        self.send(stuffed_body).await;
        self.reply().await
    }
}

/// Runs `test` against a fresh MX with these defects.
fn with_mx<F, Fut>(defects: &[Defect], test: F)
where
    F: FnOnce(Mx) -> Fut,
    Fut: Future<Output = ()>,
{
    with_mx_config(defects, config(), test)
}

/// A small message with this Message-ID, dot-stuffed and terminated.
fn body(msg: &str) -> Vec<u8> {
    format!("Message-ID: <{msg}>\r\nSubject: hi\r\n\r\nhello\r\n.\r\n").into_bytes()
}

fn text(queued: &QueuedMessage) -> String {
    String::from_utf8_lossy(&queued.body).into_owned()
}

/// The `Received:` field at the top of a queued message, unfolded.
fn received(queued: &QueuedMessage) -> String {
    let text = text(queued);
    let end = text.find("\r\nMessage-ID:").expect("the original follows the trace field");
    text[..end].replace("\r\n\t", " ")
}

/// RFC 5321 §4.5.1: <postmaster> (no domain) and postmaster@ every local domain, in any case,
/// are accepted and delivered: to the configured mailbox, once.
#[test]
fn postmaster_is_accepted_and_delivered_to_its_mailbox() {
    with_mx(&[], |mx| async move {
        let mut client = mx.connect().await;
        let reply = client.transaction(&["postmaster", "PostMaster@Libero.TEST", "anna@libero.test"], &body("pm1@x")).await;
        assert!(reply.starts_with("250 "), "{reply}");
        let mut other = mx.connect().await;
        assert!(other.transaction(&["POSTMASTER@libero.example"], &body("pm2@x")).await.starts_with("250 "));
        let (first, second) = (mx.queued("pm1@x"), mx.queued("pm2@x"));
        assert_eq!(first.rcpts, vec!["anna@libero.test".to_string()]);
        assert_eq!(second.rcpts, vec!["anna@libero.example".to_string()]);
        // Two names for one mailbox: no single recipient to name.
        assert!(!received(&first).contains(" for "), "{}", received(&first));
        assert!(received(&second).contains(" for <postmaster@libero.example>;"), "{}", received(&second));
        // Postmaster of a domain that is not ours is still relaying.
        assert!(client.command("MAIL FROM:<a@example.org>").await.starts_with("250 "));
        assert!(client.command("RCPT TO:<postmaster@elsewhere.example>").await.starts_with("550 5.7.1"));
    });
}

/// A recipient named twice in one transaction gets 250 both times and one copy.
#[test]
fn a_duplicate_recipient_is_accepted_and_queued_once() {
    with_mx(&[], |mx| async move {
        let mut client = mx.connect().await;
        let reply = client.transaction(&["bruno@libero.test", "carla@libero.test", "Bruno@LIBERO.test"], &body("dup@x")).await;
        assert!(reply.starts_with("250 "), "{reply}");
        assert_eq!(mx.queued("dup@x").rcpts, vec!["bruno@libero.test".to_string(), "carla@libero.test".to_string()]);
    });
}

/// The planted bug `dup-rcpt-delivered-twice` queues the duplicate: the test above fails with it.
#[test]
fn the_planted_duplicate_recipient_bug_queues_it_twice() {
    with_mx(&[Defect::DupRcptDeliveredTwice], |mx| async move {
        let mut client = mx.connect().await;
        assert!(client.transaction(&["bruno@libero.test", "bruno@libero.test"], &body("dup@x")).await.starts_with("250 "));
        assert_eq!(mx.queued("dup@x").rcpts, vec!["bruno@libero.test".to_string(), "bruno@libero.test".to_string()]);
    });
}

/// RFC 5321 §4.4: the trace field names the client's HELO name and address, the protocol, and
/// a real date on the simulated clock; `for <addr>` only for a single recipient, so that no copy
/// of a message to several recipients shows one of them (a Bcc leak).
#[test]
fn the_received_field_names_the_client_and_the_date_and_leaks_no_recipient() {
    with_mx(&[], |mx| async move {
        let mut client = mx.connect().await;
        assert!(client.transaction(&["bruno@libero.test", "carla@libero.test"], &body("many@x")).await.starts_with("250 "));
        let mut single = mx.connect().await;
        assert!(single.transaction(&["carla@libero.test"], &body("one@x")).await.starts_with("250 "));
        let mut helo = mx.connect().await;
        assert!(helo.command("HELO old.example").await.starts_with("250 "));
        assert!(helo.command("MAIL FROM:<>").await.starts_with("250 "));
        assert!(helo.command("RCPT TO:<bruno@libero.test>").await.starts_with("250 "));
        assert!(helo.command("DATA").await.starts_with("354 "));
        helo.send(&body("helo@x")).await;
        assert!(helo.reply().await.starts_with("250 "));
        let date = "Mon, 23 Jan 2023 01:02:03 +0000";
        let many = received(&mx.queued("many@x"));
        assert!(many.starts_with("Received: from client.example ([192.0.2.7]) by mx.libero.test with ESMTP id "), "{many}");
        assert!(many.ends_with(&format!("; {date}")), "{many}");
        assert!(!many.contains("bruno") && !many.contains("carla") && !many.contains(" for "), "{many}");
        let one = received(&mx.queued("one@x"));
        assert!(one.contains(" for <carla@libero.test>; "), "{one}");
        assert!(one.ends_with(date), "{one}");
        let old = received(&mx.queued("helo@x"));
        assert!(old.starts_with("Received: from old.example ([192.0.2.7]) by mx.libero.test with SMTP id "), "{old}");
        // The field is a valid RFC 5322 header: mail-parser reads the date back.
        let one = mx.queued("one@x");
        let parsed = mail_parser::MessageParser::new().parse(&one.body).expect("parses");
        let stamp = parsed.received().and_then(|received| received.date()).map(|date| date.to_timestamp());
        assert_eq!(stamp, Some((EPOCH_UNIX_S + NOW_MS / 1000) as i64));
    });
}

/// RCPT parameters are checked like MAIL's: none of our extensions defines one (RFC 5321
/// §4.1.1.3: 555 for an unrecognized parameter); SIZE is decimal digits only (RFC 1870).
#[test]
fn parameters_are_checked_on_rcpt_and_size_is_digits_only() {
    with_mx(&[], |mx| async move {
        let mut client = mx.connect().await;
        assert!(client.command("EHLO client.example").await.starts_with("250 "));
        for bad in ["+5", "-5", "5.0", "0x10"] {
            let reply = client.command(&format!("MAIL FROM:<a@example.org> SIZE={bad}")).await;
            assert!(reply.starts_with("501 5.5.4"), "SIZE={bad}: {reply}");
        }
        let huge = client.command("MAIL FROM:<a@example.org> SIZE=99999999999999999999999").await;
        assert!(huge.starts_with("552 5.3.4"), "{huge}");
        assert!(client.command("MAIL FROM:<a@example.org> SIZE=5").await.starts_with("250 "));
        for bad in ["NOTIFY=NEVER", "SIZE=5", "X-UNKNOWN", "ORCPT=rfc822;a@b"] {
            let reply = client.command(&format!("RCPT TO:<anna@libero.test> {bad}")).await;
            assert!(reply.starts_with("555 5.5.4"), "{bad}: {reply}");
        }
        assert!(client.command("RCPT TO:<anna@libero.test>").await.starts_with("250 "));
    });
}

/// One line rule in DATA, as the reply text states it: a stuffing dot is not text, and a bare LF
/// ends a line (never DATA).
#[test]
fn data_lines_follow_one_rule() {
    with_mx(&[], |mx| async move {
        let mut body = b"Message-ID: <dots@example.org>\r\n\r\n".to_vec();
        // A 998-octet line that starts with a dot: 999 octets once stuffed.
        body.push(b'.');
        body.extend_from_slice(format!(".{}\r\n", "d".repeat(997)).as_bytes());
        // More than 1,000 octets of short lines ended by bare LF, with a stuffed dot after one.
        for _ in 0..20 {
            body.extend_from_slice(format!("{}\n", "x".repeat(80)).as_bytes());
        }
        body.extend_from_slice(b"..after a bare LF\n\r\n.\r\n");
        let mut client = mx.connect().await;
        let reply = client.transaction(&["anna@libero.test"], &body).await;
        assert!(reply.starts_with("250 "), "{reply}");
        let queued = text(&mx.queued("dots@example.org"));
        assert!(queued.contains(&format!("\r\n\r\n.{}\r\n", "d".repeat(997))));
        assert!(queued.contains("\n.after a bare LF\n\r\n"), "{queued:?}");
        let mut long = b"Message-ID: <long@example.org>\r\n\r\n".to_vec();
        long.extend_from_slice(format!("{}\nshort\r\n.\r\n", "y".repeat(999)).as_bytes());
        let reply = client.transaction(&["anna@libero.test"], &long).await;
        assert!(reply.starts_with("500 5.5.2") && reply.contains("998") && reply.contains("bare LF"), "{reply}");
    });
}

/// The planted originals of the rules above (issue #8 item 5), each seen on the wire: what the
/// clean MX accepts it refuses, what it refuses it accepts, or a copy shows another recipient.
#[test]
fn the_planted_postmaster_bug_refuses_both_spellings() {
    with_mx(&[Defect::PostmasterRefused], |mx| async move {
        let mut client = mx.connect().await;
        assert!(client.command("EHLO client.example").await.starts_with("250 "));
        assert!(client.command("MAIL FROM:<a@example.org>").await.starts_with("250 "));
        assert!(client.command("RCPT TO:<postmaster>").await.starts_with("550 5.7.1"));
        assert!(client.command("RCPT TO:<postmaster@libero.test>").await.starts_with("550 5.1.1"));
    });
}

#[test]
fn the_planted_received_bug_names_the_first_recipient_in_a_shared_copy() {
    with_mx(&[Defect::ReceivedForFirstRcpt], |mx| async move {
        let mut client = mx.connect().await;
        assert!(client.transaction(&["bruno@libero.test", "carla@libero.test"], &body("leak@x")).await.starts_with("250 "));
        let field = received(&mx.queued("leak@x"));
        assert!(field.contains(" for <bruno@libero.test>;"), "{field}");
    });
}

#[test]
fn the_planted_parameter_bugs_accept_size_on_rcpt_and_a_signed_size_on_mail() {
    with_mx(&[Defect::RcptParamsUnchecked, Defect::MailSizeSignAccepted], |mx| async move {
        let mut client = mx.connect().await;
        assert!(client.command("EHLO client.example").await.starts_with("250 "));
        assert!(client.command("MAIL FROM:<a@example.org> SIZE=+5").await.starts_with("250 "));
        assert!(client.command("RCPT TO:<anna@libero.test> SIZE=+5").await.starts_with("250 "));
    });
}

#[test]
fn the_planted_stuffing_dot_bug_refuses_a_998_octet_line_that_starts_with_a_dot() {
    with_mx(&[Defect::StuffingDotCounted], |mx| async move {
        let mut body = b"Message-ID: <dot998@example.org>\r\n\r\n".to_vec();
        body.extend_from_slice(format!("..{}\r\n.\r\n", "d".repeat(997)).as_bytes());
        let mut client = mx.connect().await;
        let reply = client.transaction(&["anna@libero.test"], &body).await;
        assert!(reply.starts_with("500 5.5.2"), "{reply}");
    });
}

/// Commands the MX cannot read or parse are refused, and past `max_command_errors` (5 here) the
/// session is told 421 and closed, as Postfix's `smtpd_hard_error_limit` does: a client sending
/// garbage as fast as it is answered found no end before (the soak of issue #12). Valid
/// commands in between do not reset the count; a fresh session starts from zero.
#[test]
fn a_session_that_sends_garbage_is_closed_after_the_error_limit() {
    with_mx(&[], |mx| async move {
        let mut client = mx.connect().await;
        for n in 0..5 {
            let line = if n == 2 { "X".repeat(2000) } else { format!("XYZZY {n}") };
            let reply = client.command(&line).await;
            assert!(reply.starts_with("500 "), "{n}: {reply}");
            assert!(client.command("NOOP").await.starts_with("250 "));
        }
        assert!(client.command("XYZZY again").await.starts_with("421 4.7.0"));
        let mut rest = String::new();
        assert_eq!(client.reader.read_line(&mut rest).await.expect("closed cleanly"), 0, "the session is closed: {rest}");
        let mut fresh = mx.connect().await;
        assert!(fresh.command("XYZZY").await.starts_with("500 "));
        assert!(fresh.transaction(&["anna@libero.test"], &body("after@x")).await.starts_with("250 "));
    });
}

/// Issue #12 (the soak): under stress (sessions at 80% of the limit) a session gets the short
/// stress waits, as Postfix's `${stress?…}` gives, so a silent client lets its slot go in
/// seconds, not minutes; a client that talks is served as before.
#[test]
fn under_stress_a_silent_session_is_closed_after_the_short_wait() {
    let stress = stack::mx::StressWaits { idle: Duration::from_millis(300), command_total: Duration::from_millis(300), data_total: Duration::from_secs(1) };
    let config = MxConfig { stress_waits: Some(stress), ..config() };
    with_mx_config(&[], config, |mx| async move {
        let mut held = Vec::new();
        for _ in 0..8 {
            held.push(mx.connect().await);
        }
        // 8 of 10 sessions: stressed. A ninth that says nothing is let go within the short wait.
        let mut silent = mx.connect().await;
        let started = std::time::Instant::now();
        let closed = tokio::time::timeout(Duration::from_secs(5), silent.reply()).await.expect("closed within 5 s, not after 300 s");
        assert!(closed.starts_with("421 "), "{closed}");
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
        let mut talking = mx.connect().await;
        assert!(talking.transaction(&["anna@libero.test"], &body("stressed@x")).await.starts_with("250 "));
        drop(held);
    });
}

fn with_mx_config<F, Fut>(defects: &[Defect], config: MxConfig, test: F)
where
    F: FnOnce(Mx) -> Fut,
    Fut: Future<Output = ()>,
{
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let history = Rc::new(RefCell::new(History::default()));
        let journal = Journal::new(history, "mx", Rc::new(|| NOW_MS));
        let disk = Rc::new(MemDisk::default());
        let (connections, incoming) = mpsc::unbounded_channel();
        let net = Rc::new(PipeNet(RefCell::new(Some(incoming))));
        let env = Env { journal, disk: Disk::new(disk.clone()), net, defects: Defects::of(defects) };
        tokio::task::spawn_local(stack::mx::run(env, config));
        test(Mx { connections, disk }).await;
    });
}
