//! Live mode: the same stack on real TCP sockets, for real SMTP, POP3 and IMAP clients.
//!
//! With `--data-dir` the MX queue and the store live on real directories (`DIR/mx`, `DIR/store`,
//! the DirDisk device: fsync honoured), and a restart recovers them as a simulated restart
//! does; without it they live in memory (an in-memory SimDisk without faults) and a restart
//! loses them. `--history FILE` streams every record to FILE as JSON lines (never kept in
//! memory) for `mailchaos check`; `--ledger FILE` keeps the ledger of what the store
//! acknowledged for `verify-store`. Both go on across restarts: a restarted `serve` appends.
//!
//! Time is real time here: nothing in live mode is a simulation, so the wall clock is the right
//! clock. The history's clock reads milliseconds since the Unix epoch, so it runs on across
//! restarts and a fresh mailbox's UIDVALIDITY is the Unix time, as Dovecot's is.

use devices::dir::DirDisk;
use devices::sim::SimDisk;
use disk::{Device, Disk};
use history::{Event, History, Journal, Record};
use sim::ledger::Ledger;
use stack::mx::MxConfig;
use stack::net::tap::Tap;
use stack::net::{Accepted, BoxStream, Listener, LiveNet, Net, NetFuture};
use stack::queue::RunnerConfig;
use stack::store::StoreConfig;
use stack::{self, Defects, Env, IMAP_PORT, LMTP_PORT, POP3_PORT, SMTP_PORT};
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub struct Options {
    pub bind: String,
    pub port_offset: u16,
    pub users: Vec<String>,
    pub domain: String,
    pub seconds: Option<u64>,
    /// Where the MX queue (`mx/`) and the store (`store/`) live; None: in memory.
    pub data_dir: Option<PathBuf>,
    /// The history, streamed as JSON lines (appended to across restarts).
    pub history: Option<PathBuf>,
    /// The ledger of acknowledged and expunged messages (appended to across restarts).
    pub ledger: Option<PathBuf>,
    pub defects: Defects,
    pub limits: Limits,
}

/// What live mode bounds that the simulation does not (its peers never trickle or guess
/// passwords, and its digests predate these bounds): flags of `serve`.
#[derive(Clone, Debug)]
pub struct Limits {
    /// An SMTP, POP3 or IMAP command line, from its first octet.
    pub command_total_timeout: Duration,
    /// A whole DATA body or BDAT chunk.
    pub data_total_timeout: Duration,
    /// From connecting to logging in, POP3 and IMAP.
    pub login_timeout: Duration,
    /// The wait before the reply to the n-th failed login is n times this.
    pub login_failure_delay: Duration,
    pub max_login_failures: u32,
    /// Unrecognised, malformed or overlong SMTP commands after which a session is closed.
    pub max_command_errors: u32,
}

pub fn serve(options: &Options) -> Result<bool, String> {
    if options.port_offset > 65535 - IMAP_PORT.max(POP3_PORT) {
        return Err(format!("--port-offset {} puts IMAP beyond port 65535", options.port_offset));
    }
    if options.bind.parse::<std::net::IpAddr>().is_err() {
        return Err(format!("--bind {:?} is not an IP address (for example 127.0.0.1 or ::1)", input::clip(&options.bind)));
    }
    let users: BTreeSet<String> = options.users.iter().map(|user| user.trim().to_ascii_lowercase()).filter(|user| !user.is_empty()).collect();
    if users.is_empty() {
        return Err("--users must name at least one mailbox".into());
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|error| format!("cannot start the runtime: {error}"))?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, run(options, users))
}

async fn run(options: &Options, users: BTreeSet<String>) -> Result<bool, String> {
    let started = Instant::now();
    let sinks = Sinks::open(options)?;
    let history = Rc::new(RefCell::new(History { stream_only: true, observer: Some(sinks.observer()), ..History::default() }));
    // Live mode is not a simulation: real time is the right clock, and nothing here is replayed.
    let clock: history::Clock = Rc::new(unix_ms);
    let listens: Listens = Rc::default();
    let journal_of = |host: &str| Journal::new(history.clone(), host, clock.clone());
    // Connections are named by this start and their order, so names never repeat across restarts.
    let start = unix_ms();
    // LMTP delivers into mailboxes unchecked: it listens on loopback only, for the MX beside it.
    let live_net = || LiveNet { bind_ip: options.bind.clone(), port_offset: options.port_offset, loopback_only_ports: vec![LMTP_PORT] };
    let lmtp_ip = live_net().listen_ip(LMTP_PORT);
    let net_of = |host: &str| {
        let inner = live_net();
        Rc::new(WatchedNet { inner, listens: listens.clone(), journal: journal_of(host), start })
    };
    let disk_of = |host: &str| device(options.data_dir.as_deref(), host, journal_of(host));
    let env_of = |host: &str| -> Result<Env, String> { Ok(Env { journal: journal_of(host), disk: Disk::new(disk_of(host)?), net: net_of(host), defects: options.defects.clone() }) };
    let world = journal_of("world");
    // Dates count from the Unix epoch, as the clock does.
    world.record(Event::Clock { tick_ms: 1, epoch_unix_s: 0 });
    if sinks.resumed {
        // A history that goes on after a stop: whatever the servers held in memory is gone, as
        // in a simulated crash. Recorded at the restart (nothing happened in between).
        for host in ["mx", "store"] {
            journal_of(host).record(Event::Crash);
            journal_of(host).record(Event::Restart);
        }
    }
    let (mx_config, store_config) = configs(options, users, &lmtp_ip);
    tokio::task::spawn_local(stack::store_host::run(env_of("store")?, store_config));
    tokio::task::spawn_local(stack::mx::run(env_of("mx")?, mx_config));
    // Announce the ports only once all four servers hold them: a taken port is an error.
    all_listening(&listens, options, &lmtp_ip).await?;
    let port = |base: u16| base + options.port_offset;
    say(format_args!(
        "listening: smtp {bind}:{} lmtp {lmtp}:{} pop3 {bind}:{} imap {bind}:{}",
        port(SMTP_PORT),
        port(LMTP_PORT),
        port(POP3_PORT),
        port(IMAP_PORT),
        bind = options.bind,
        lmtp = lmtp_ip
    ));
    if options.data_dir.is_none() {
        // On stderr: a warning, and stdout's first line stays the listening line scripts wait for.
        let _ = writeln!(std::io::stderr(), "note: mail is kept in memory only: a restart loses it (keep it with --data-dir DIR)");
    }
    let deadline = options.seconds.map(|seconds| started + Duration::from_secs(seconds));
    // A record that cannot be written is a judgement lost: stop rather than go on unrecorded.
    while deadline.is_none_or(|deadline| Instant::now() < deadline) {
        if let Some(failure) = sinks.failure.borrow().clone() {
            return Err(failure);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let records = history.borrow().streamed;
    say(format_args!("stopped after {:.1}s with {records} events recorded", started.elapsed().as_secs_f64()));
    Ok(true)
}

/// Milliseconds since the Unix epoch: live mode's clock.
fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_millis() as u64)
}

/// A host's device: its directory under `--data-dir`, or memory.
fn device(data_dir: Option<&Path>, host: &str, journal: Journal) -> Result<Rc<dyn Device>, String> {
    match data_dir {
        Some(dir) => {
            let root = dir.join(host);
            let disk = DirDisk::new(&root, journal).map_err(|error| format!("--data-dir: cannot use {}: {error}", root.display()))?;
            Ok(Rc::new(disk))
        }
        None => {
            let rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0);
            Ok(Rc::new(SimDisk::new(journal, Rc::new(Default::default()), Vec::new(), rng)))
        }
    }
}

/// The servers' settings; dates count from the Unix epoch (`epoch_unix_s` 0), as the clock does.
fn configs(options: &Options, users: BTreeSet<String>, lmtp_ip: &str) -> (MxConfig, StoreConfig) {
    let epoch_unix_s = 0;
    let mx_config = MxConfig {
        operator: Rc::new(std::cell::Cell::new(stack::mx::OperatorMode::Normal)),
        hostname: format!("mx.{}", options.domain),
        domains: vec![options.domain.clone()],
        // postmaster is an alias of the alphabetically first mailbox of --users.
        postmaster: users.iter().next().cloned().unwrap_or_default(),
        epoch_unix_s,
        users: users.clone(),
        max_message_bytes: 10 * 1024 * 1024,
        max_recipients: 100,
        idle_timeout: Duration::from_secs(300),
        command_total_timeout: Some(options.limits.command_total_timeout),
        data_total_timeout: Some(options.limits.data_total_timeout),
        // As Postfix's smtpd_hard_error_limit: garbage is not answered (and recorded) forever.
        max_command_errors: Some(options.limits.max_command_errors),
        // Postfix's stress values: under 80% load, silent or trickling clients let go in seconds.
        stress_waits: Some(stack::mx::StressWaits { idle: Duration::from_secs(10), command_total: Duration::from_secs(10), data_total: Duration::from_secs(120) }),
        max_sessions: 100,
        max_sessions_per_client: 20,
        max_queue_files: 10_000,
        tarpit: Duration::from_millis(500),
        runner: RunnerConfig {
            store_host: lmtp_ip.to_string(),
            hostname: format!("mx.{}", options.domain),
            scan_interval: Duration::from_millis(500),
            retry_base: Duration::from_secs(2),
            retry_max: Duration::from_secs(60),
            workers: 1,
            // DSNs go to the sender's domain by its own name (no MX lookup in live mode).
            routes: Default::default(),
            epoch_unix_s,
        },
    };
    let store_config = StoreConfig {
        restored: Rc::default(),
        cohorts: Rc::default(),
        hostname: format!("store.{}", options.domain),
        domains: vec![options.domain.clone()],
        users,
        max_message_bytes: 10 * 1024 * 1024 + 4096,
        idle_timeout: Duration::from_secs(600),
        command_total_timeout: Some(options.limits.command_total_timeout),
        login_timeout: Some(options.limits.login_timeout),
        login_failure_delay: options.limits.login_failure_delay,
        max_login_failures: Some(options.limits.max_login_failures),
        pop3_max_sessions: 100,
        imap_max_sessions: 100,
        // As Dovecot by default: a message a POP3 client retrieves is marked read (moved to cur/).
        mark_read_on_retr: true,
        // No client of ours records what a real client was sent: the server does.
        record_served: true,
    };
    (mx_config, store_config)
}

/// Where the records go: the history file and the ledger, each opened to go on where a
/// previous `serve` stopped. The first failure to write is kept in `failure`.
struct Sinks {
    history: Option<Rc<RefCell<File>>>,
    ledger: Option<Rc<RefCell<Ledger>>>,
    failure: Rc<RefCell<Option<String>>>,
    /// The history file already held records: this `serve` is a restart.
    resumed: bool,
}

impl Sinks {
    fn open(options: &Options) -> Result<Sinks, String> {
        let (history, resumed) = match &options.history {
            Some(path) => {
                let (file, resumed) = open_history(path).map_err(|error| format!("--history {}: {error}", path.display()))?;
                (Some(Rc::new(RefCell::new(file))), resumed)
            }
            None => (None, false),
        };
        let ledger = match &options.ledger {
            Some(path) => Some(Rc::new(RefCell::new(Ledger::reopen(path).map_err(|error| format!("--ledger {}: {error}", path.display()))?))),
            None => None,
        };
        Ok(Sinks { history, ledger, failure: Rc::default(), resumed })
    }

    /// One observer for both: each record is one write(2) of its JSON line, before the host
    /// that recorded it goes on (a kill -9 keeps what was written: the page cache survives
    /// the process); the ledger's entries are durable before the store answers.
    fn observer(&self) -> Rc<dyn Fn(&Record)> {
        let ledger = self.ledger.clone().map(|ledger| sim::ledger::observer(ledger, self.failure.clone()));
        let history = self.history.clone();
        let failure = self.failure.clone();
        Rc::new(move |record| {
            if let Some(file) = &history {
                let mut line = record.to_json();
                line.push('\n');
                if let Err(error) = file.borrow_mut().write_all(line.as_bytes()) {
                    failure.borrow_mut().get_or_insert(format!("cannot append to the history: {error}"));
                }
            }
            if let Some(ledger) = &ledger {
                ledger(record);
            }
        })
    }
}

/// Opens the history to append; a last line without its newline (a power cut in the middle of
/// a write) is cut off. Returns whether it already held records.
fn open_history(path: &Path) -> std::io::Result<(File, bool)> {
    if let Ok(metadata) = std::fs::metadata(path) {
        if !metadata.is_file() {
            return Err(std::io::Error::other("exists and is not a regular file"));
        }
    }
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    let length = file.metadata()?.len();
    let whole_lines = match length {
        0 => 0,
        _ => last_newline_end(path)?,
    };
    if whole_lines < length {
        file.set_len(whole_lines)?;
    }
    Ok((file, whole_lines > 0))
}

/// The offset just after the file's last newline (0 if it has none), read from the end in
/// blocks so a long history is not read whole.
fn last_newline_end(path: &Path) -> std::io::Result<u64> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let mut file = File::open(path)?;
    let mut end = file.metadata()?.len();
    let mut block = vec![0u8; 64 * 1024];
    while end > 0 {
        let start = end.saturating_sub(block.len() as u64);
        file.seek(SeekFrom::Start(start))?;
        let part = &mut block[..(end - start) as usize];
        file.read_exact(part)?;
        if let Some(at) = part.iter().rposition(|&byte| byte == b'\n') {
            return Ok(start + at as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

/// Prints a line; a closed stdout (`mailchaos serve | head`) ends the program quietly, as the
/// other commands do, instead of panicking as `println!` would.
fn say(line: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    if writeln!(stdout, "{line}").is_err() || stdout.flush().is_err() {
        std::process::exit(0);
    }
}

/// The outcome of each listen() the servers made: (port, error if it failed).
type Listens = Rc<RefCell<Vec<(u16, Option<String>)>>>;

/// Real TCP that remembers how each listen() went (the stack's servers give up quietly when
/// they cannot bind, and `serve` must say so instead of announcing ports it does not hold), and
/// taps the SMTP and LMTP servers' connections as the simulated network does: what crossed the
/// wire is what A1 and A3 judge, not the servers' own account.
struct WatchedNet {
    inner: LiveNet,
    listens: Listens,
    /// The journal of the host that listens (the tap records on its behalf).
    journal: Journal,
    /// This start's Unix time in milliseconds, part of every connection's name.
    start: u64,
}

/// The ports whose traffic the tap records, and what they speak.
const TAPPED_PORTS: [(u16, &str); 2] = [(SMTP_PORT, "smtp"), (LMTP_PORT, "lmtp")];

struct TappedListener {
    inner: Box<dyn Listener>,
    protocol: Option<&'static str>,
    journal: Journal,
    start: u64,
    /// Never set: a live server is not torn down by a world (a kill leaves no record anyway).
    teardown: Rc<std::cell::Cell<bool>>,
}

impl Listener for TappedListener {
    fn accept(&self) -> NetFuture<'_, Accepted> {
        Box::pin(async move {
            let accepted = self.inner.accept().await?;
            let conn = format!("{}@{}", accepted.conn, self.start);
            let stream = match self.protocol {
                Some(protocol) => Tap::wrap(accepted.stream, self.journal.clone(), conn.clone(), protocol, &accepted.peer, self.teardown.clone()),
                None => accepted.stream,
            };
            Ok(Accepted { stream, peer: accepted.peer, conn })
        })
    }
}

impl Net for WatchedNet {
    fn connect<'a>(&'a self, host: &'a str, port: u16) -> NetFuture<'a, BoxStream> {
        self.inner.connect(host, port)
    }

    fn listen(&self, port: u16) -> NetFuture<'_, Box<dyn Listener>> {
        Box::pin(async move {
            let result = self.inner.listen(port).await;
            self.listens.borrow_mut().push((port, result.as_ref().err().map(ToString::to_string)));
            let protocol = TAPPED_PORTS.iter().find(|(tapped, _)| *tapped == port).map(|(_, protocol)| *protocol);
            let (journal, start, teardown) = (self.journal.clone(), self.start, Rc::default());
            result.map(|inner| Box::new(TappedListener { inner, protocol, journal, start, teardown }) as Box<dyn Listener>)
        })
    }
}

/// The servers `serve` runs, each of which must listen: SMTP, LMTP, POP3 and IMAP.
const SERVERS: usize = 4;

/// Waits (real time, at most 10 s) until the SMTP, LMTP, POP3 and IMAP servers have each tried
/// to listen; the first failure is the error.
async fn all_listening(listens: &Listens, options: &Options, lmtp_ip: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while listens.borrow().len() < SERVERS && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let listens = listens.borrow();
    if let Some((port, Some(error))) = listens.iter().find(|(_, error)| error.is_some()) {
        let ip = if *port == LMTP_PORT { lmtp_ip } else { options.bind.as_str() };
        return Err(format!("cannot listen on {ip}:{}: {error}", port + options.port_offset));
    }
    match listens.len() {
        SERVERS => Ok(()),
        count => Err(format!("only {count} of the {SERVERS} servers were listening after 10 s")),
    }
}
