//! Live mode: the same stack on real TCP sockets, for real SMTP, POP3 and IMAP clients.
//!
//! The storage is an in-memory SimDisk without faults (mail lives as long as the process); a
//! real-directory device belongs to the storage work. Time is real time here: nothing in live
//! mode is a simulation, so the wall clock is the right clock.

use devices::sim::SimDisk;
use disk::Disk;
use history::{History, Journal};
use stack::mx::MxConfig;
use stack::net::{BoxStream, Listener, LiveNet, Net, NetFuture};
use stack::queue::RunnerConfig;
use stack::store::StoreConfig;
use stack::{self, Defects, Env, IMAP_PORT, LMTP_PORT, POP3_PORT, SMTP_PORT};
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::rc::Rc;
use std::time::{Duration, Instant};

pub struct Options {
    pub bind: String,
    pub port_offset: u16,
    pub users: Vec<String>,
    pub domain: String,
    pub seconds: Option<u64>,
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
    // Live mode is not a simulation: real time is the right clock, and nothing here is replayed.
    let started = Instant::now();
    let history = Rc::new(RefCell::new(History::default()));
    let clock: history::Clock = Rc::new(move || started.elapsed().as_millis() as u64);
    let listens: Listens = Rc::default();
    // LMTP delivers into mailboxes unchecked: it listens on loopback only, for the MX beside it.
    let live_net = LiveNet { bind_ip: options.bind.clone(), port_offset: options.port_offset, loopback_only_ports: vec![LMTP_PORT] };
    let lmtp_ip = live_net.listen_ip(LMTP_PORT);
    let net = Rc::new(WatchedNet { inner: live_net, listens: listens.clone() });
    let env_of = |host: &str| {
        let journal = Journal::new(history.clone(), host, clock.clone());
        let rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0);
        let disk = Disk::new(Rc::new(SimDisk::new(journal.clone(), Rc::new(Default::default()), Vec::new(), rng)));
        Env { journal, disk, net: net.clone(), defects: Defects::none() }
    };
    // Live mode only (never a simulation): the journal's clock reads 0 now, and the dates the MX
    // writes count from the real time, as a real server's do.
    let epoch_unix_s = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |since| since.as_secs());
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
        max_sessions: 100,
        max_sessions_per_client: 20,
        max_queue_files: 10_000,
        tarpit: Duration::from_millis(500),
        runner: RunnerConfig {
            store_host: lmtp_ip.clone(),
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
    };
    tokio::task::spawn_local(stack::store_host::run(env_of("store"), store_config));
    tokio::task::spawn_local(stack::mx::run(env_of("mx"), mx_config));
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
    match options.seconds {
        Some(seconds) => tokio::time::sleep(Duration::from_secs(seconds)).await,
        None => std::future::pending::<()>().await,
    }
    let records = history.borrow().records.len();
    say(format_args!("stopped after {:.1}s with {records} events recorded", started.elapsed().as_secs_f64()));
    Ok(true)
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

/// Real TCP that remembers how each listen() went: the stack's servers give up quietly when
/// they cannot bind, and `serve` must say so instead of announcing ports it does not hold.
struct WatchedNet {
    inner: LiveNet,
    listens: Listens,
}

impl Net for WatchedNet {
    fn connect<'a>(&'a self, host: &'a str, port: u16) -> NetFuture<'a, BoxStream> {
        self.inner.connect(host, port)
    }

    fn listen(&self, port: u16) -> NetFuture<'_, Box<dyn Listener>> {
        Box::pin(async move {
            let result = self.inner.listen(port).await;
            self.listens.borrow_mut().push((port, result.as_ref().err().map(ToString::to_string)));
            result
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
