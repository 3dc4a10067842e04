//! Scenarios: plain data (TOML) describing the mail system, its workload and the faults of one
//! run. No behaviour lives here; the world interprets it. Every error names `file:line:col`.

use input::{line_column, Keys};
use serde::Deserialize;
use std::collections::BTreeSet;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// Limits that keep any scenario affordable and bounded.
pub const MAX_MESSAGES_PER_PROVIDER: u32 = 100_000;
pub const MAX_PROVIDERS: usize = 8;
pub const MAX_USERS: usize = 1000;
pub use input::MAX_HORIZON_S;

/// A bad scenario file: where, and what was expected.
pub type ScenarioError = input::InputError;

/// A number, or a `[low, high]` range from which each seed draws its own value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Draw {
    Fixed(u64),
    Range([u64; 2]),
}

/// What a `Draw` accepts, for its error messages (serde's untagged enums only say that no
/// variant matched).
const DRAW_FORMS: &str = "a non-negative integer or a [low, high] range of two non-negative integers";

impl<'de> Deserialize<'de> for Draw {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Draw, D::Error> {
        deserializer.deserialize_any(DrawVisitor)
    }
}

struct DrawVisitor;

impl<'de> serde::de::Visitor<'de> for DrawVisitor {
    type Value = Draw;

    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(DRAW_FORMS)
    }

    fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<Draw, E> {
        Ok(Draw::Fixed(value))
    }

    fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<Draw, E> {
        u64::try_from(value).map(Draw::Fixed).map_err(|_| E::custom(format!("{value} is negative; expected {DRAW_FORMS}")))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Draw, A::Error> {
        use serde::de::Error as _;
        let wrong = || A::Error::custom("a range must be [low, high]: exactly two non-negative integers");
        let low: u64 = seq.next_element()?.ok_or_else(wrong)?;
        let high: u64 = seq.next_element()?.ok_or_else(wrong)?;
        if seq.next_element::<serde::de::IgnoredAny>()?.is_some() {
            return Err(wrong());
        }
        Ok(Draw::Range([low, high]))
    }
}

impl Draw {
    pub fn bounds(self) -> (u64, u64) {
        match self {
            Draw::Fixed(value) => (value, value),
            Draw::Range([low, high]) => (low, high),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// The name run lines print.
    /// Unit: -. Range: any text. Default: the file name without `.toml`.
    #[serde(default)]
    pub name: String,
    /// What the scenario is about, for its readers.
    /// Unit: -. Range: any text. Default: `""`.
    #[serde(default)]
    pub description: String,
    /// Simulated time per step: 1000 makes multi-hour runs cheap. Waits shorter than a tick
    /// last a tick.
    /// Unit: ms. Range: `1` to `60000`. Default: required.
    pub tick_ms: Spanned<u64>,
    /// The run ends here at the latest, drained or not.
    /// Unit: s. Range: `1` to `2592000` (30 days). Default: required.
    pub horizon_s: Spanned<u64>,
    /// Faults happen in [0, chaos_s); then every fault is healed.
    /// Unit: s. Range: 0 to horizon_s. Default: required.
    pub chaos_s: Spanned<u64>,
    #[serde(default)]
    pub network: Network,
    pub mx: Mx,
    #[serde(rename = "provider")]
    pub providers: Vec<Provider>,
    pub workload: Workload,
    pub clients: Clients,
    #[serde(default, rename = "fault")]
    pub faults: Vec<Fault>,
    /// Per-link latency and jitter, beyond the [network] defaults.
    #[serde(default, rename = "link")]
    pub links: Vec<Link>,
    /// The persistence profile of the MX's and the store's disks (a shipped name), unless the
    /// command line names one.
    /// Unit: -. Range: a shipped profile (`mailchaos list-profiles`). Default: unset (posix-strict).
    #[serde(default)]
    pub profile: Option<Spanned<String>>,
    /// The hosts whose disks sit on the vendor's array: they run the scenario's profile (the
    /// other disk host runs posix-strict) and share one array, so the profile's hidden limit
    /// counts the writes of all of them and its stall stops them all.
    /// Unit: -. Range: `mx`, `store` or both. Default: unset (the MX and the store each on a disk of the profile, limits counted per disk).
    #[serde(default)]
    pub vendor_array: Option<Spanned<Vec<String>>>,
    /// Mailboxes going offline and coming back in cohorts (a staged restore).
    #[serde(default)]
    pub restore: Option<Restore>,
}

/// A staged restore: at `offline_at_s` the mailboxes of every cohort go offline (the storage
/// under them is lost); each cohort comes back at its own `at_s`, intact or from a backup. The
/// store learns of it as an operator tells it (a list of offline mailboxes), never of a fault.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Restore {
    /// When the mailboxes of every cohort go offline.
    /// Unit: s. Range: 0 to the first cohort's at_s. Default: required.
    pub offline_at_s: Spanned<u64>,
    #[serde(rename = "cohort")]
    pub cohorts: Vec<Cohort>,
}

/// One cohort of a staged restore.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cohort {
    /// Its mailboxes: a list of users, or a number (the next that many users of mx.users, in
    /// their order, after the earlier cohorts' counted ones).
    /// Unit: -. Range: users of mx.users (each in one cohort at most), or 1 to the users left. Default: required.
    pub mailboxes: Spanned<CohortMailboxes>,
    /// When the cohort comes back online.
    /// Unit: s. Range: after offline_at_s, within chaos_s. Default: required.
    pub at_s: Spanned<u64>,
    /// When set, the cohort comes back from the backup taken at this moment (mail delivered
    /// since is gone, and the store starts a new UIDVALIDITY); otherwise it comes back intact.
    /// Unit: s. Range: before offline_at_s. Default: unset (intact).
    #[serde(default)]
    pub from_backup_at_s: Option<Spanned<u64>>,
}

/// A cohort's mailboxes as a scenario gives them.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum CohortMailboxes {
    Count(u64),
    Names(Vec<String>),
}

/// A cohort resolved against mx.users.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedCohort {
    pub mailboxes: Vec<String>,
    pub at_s: u64,
    pub from_backup_at_s: Option<u64>,
}

/// One link's latency: each message takes between min and max (the spread is the jitter).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Link {
    /// The two ends of the link.
    /// Unit: -. Range: two different hosts (`mx`, `store`, `provider-<name>`, `clients`). Default: required.
    pub hosts: Spanned<Vec<String>>,
    /// The least time a message takes over this link.
    /// Unit: ms. Range: 0 or more. Default: required.
    pub min_latency_ms: u64,
    /// The most time a message takes over this link.
    /// Unit: ms. Range: min_latency_ms to 600000. Default: required.
    pub max_latency_ms: Spanned<u64>,
}

/// Every link's latency, unless a [[link]] table gives one its own.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// The least time a message takes over a link.
    /// Unit: ms. Range: 0 or more. Default: `1` (without a [network] table).
    pub min_latency_ms: u64,
    /// The most time a message takes over a link.
    /// Unit: ms. Range: min_latency_ms or more. Default: `50` (without a [network] table).
    pub max_latency_ms: Spanned<u64>,
}

impl Default for Network {
    fn default() -> Self {
        Network { min_latency_ms: 1, max_latency_ms: Spanned::new(0..0, 50) }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mx {
    /// The mail domains the MX accepts mail for.
    /// Unit: -. Range: a list of domain names. Default: required.
    pub domains: Vec<String>,
    /// The mailboxes (local parts) the MX accepts at RCPT; the store keeps one maildir each.
    /// Unit: -. Range: 1 to 1000 lowercase local parts. Default: required.
    pub users: Spanned<Vec<String>>,
    /// The largest message the MX accepts (SIZE); larger ones get 552.
    /// Unit: bytes. Range: 0 or more. Default: `10485760`.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// Recipients per message at most; further RCPTs get 452.
    /// Unit: recipients. Range: 0 or more. Default: `100`.
    #[serde(default = "default_max_recipients")]
    pub max_recipients: usize,
    /// SMTP sessions at once at most; beyond, connections get 421.
    /// Unit: sessions. Range: 0 or more. Default: `100`.
    #[serde(default = "default_max_sessions")]
    pub max_sessions: usize,
    /// SMTP sessions at once from one client host at most; beyond, 421.
    /// Unit: sessions. Range: 0 or more. Default: `50`.
    #[serde(default = "default_max_sessions_per_client")]
    pub max_sessions_per_client: usize,
    /// Queue files at most (backpressure): beyond, new mail gets 452 4.3.1.
    /// Unit: files. Range: 0 or more. Default: `20000`.
    #[serde(default = "default_max_queue_files")]
    pub max_queue_files: usize,
    /// Greeting delay while the MX is near its session limit.
    /// Unit: ms. Range: 0 or more. Default: `1000`.
    #[serde(default = "default_tarpit_ms")]
    pub tarpit_ms: u64,
    /// Queue delivery workers (LMTP connections to the store) at once.
    /// Unit: workers. Range: 0 or more. Default: `4`.
    #[serde(default = "default_queue_workers")]
    pub queue_workers: usize,
    /// The MX's first wait before retrying a queue file the store deferred; it doubles per
    /// failed attempt up to retry_max_s.
    /// Unit: s. Range: 0 or more. Default: `10`.
    #[serde(default = "default_retry_base_s")]
    pub retry_base_s: u64,
    /// The longest wait between the MX's retries of one queue file.
    /// Unit: s. Range: 0 or more. Default: `300`.
    #[serde(default = "default_retry_max_s")]
    pub retry_max_s: u64,
}

fn default_max_message_bytes() -> usize {
    10 * 1024 * 1024
}
fn default_max_recipients() -> usize {
    100
}
fn default_max_sessions() -> usize {
    100
}
fn default_max_sessions_per_client() -> usize {
    50
}
fn default_max_queue_files() -> usize {
    20_000
}
fn default_tarpit_ms() -> u64 {
    1000
}
fn default_queue_workers() -> usize {
    4
}
fn default_retry_base_s() -> u64 {
    10
}
fn default_retry_max_s() -> u64 {
    300
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provider {
    /// The sending provider; its host is `provider-<name>`, its domain `<name>.test`.
    /// Unit: -. Range: lowercase letters, digits and '-', unique. Default: required.
    pub name: Spanned<String>,
    /// Its retry policy (`mailchaos list-policies`).
    /// Unit: -. Range: a shipped policy name. Default: required.
    pub policy: Spanned<String>,
    /// Multiplies every interval of the policy: fast scenarios compress days into hours.
    /// Unit: factor. Range: above 0, at most 100. Default: `1.0`.
    #[serde(default = "default_time_scale")]
    pub time_scale: f64,
    /// SMTP connections to the MX at once at most.
    /// Unit: connections. Range: 0 or more. Default: `8`.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Send with BDAT (RFC 3030 CHUNKING), each session's transactions pipelined into one
    /// flight, as large providers do; otherwise DATA, one reply at a time.
    /// Unit: -. Range: true or false. Default: `false`.
    #[serde(default)]
    pub chunking: bool,
}

fn default_time_scale() -> f64 {
    1.0
}
fn default_max_connections() -> usize {
    8
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// Messages each provider sends.
    /// Unit: messages. Range: `0` to `100000`. Default: required.
    pub messages: Spanned<u32>,
    /// Arrival times are drawn uniformly from [0, spread_s).
    /// Unit: s. Range: 1 to horizon_s. Default: required.
    pub spread_s: Spanned<u64>,
    /// Recipients per message at most; each message draws 1 to this many of mx.users.
    /// Unit: recipients. Range: 0 or more. Default: `2`.
    #[serde(default = "default_max_rcpts")]
    pub max_rcpts: usize,
    /// Every n-th message of a provider has the null reverse-path `<>` (a bounce); 0 = never.
    /// Unit: messages. Range: 0 or more. Default: `0`.
    #[serde(default)]
    pub null_sender_every: u32,
    /// Every n-th message of a provider also names a recipient the MX does not know; 0 = never.
    /// Unit: messages. Range: 0 or more. Default: `0`.
    #[serde(default)]
    pub unknown_rcpt_every: u32,
    /// Messages one SMTP session carries (a number, or a `[low, high]` range each session
    /// draws from). Messages of a session are sent together when the last of them is due.
    /// Unit: messages. Range: `1` to `100`. Default: `1`.
    #[serde(default = "one_per_session")]
    pub messages_per_session: Spanned<Draw>,
    /// Every n-th message of a provider names its first recipient twice in one transaction (a
    /// client that merges To and Cc); the MX must deliver it once. 0 = never.
    /// Unit: messages. Range: 0 or more. Default: `0`.
    #[serde(default)]
    pub duplicate_rcpt_every: u32,
    /// Every n-th message of a provider is sent as a mailing list sends: the envelope sender is
    /// the list's bounce address, the header From the author, with Sender and Reply-To; a DSN
    /// must go to the envelope sender. 0 = never.
    /// Unit: messages. Range: 0 or more. Default: `0`.
    #[serde(default)]
    pub list_mail_every: u32,
    /// Every n-th message of a provider is also for postmaster, alternately `<postmaster>` and
    /// `postmaster@` the MX's first domain: an MX must accept both (RFC 5321 §4.5.1). 0 = never.
    /// Unit: messages. Range: 0 or more. Default: `0`.
    #[serde(default)]
    pub postmaster_every: u32,
    /// Every n-th message of a provider carries a parameter the MX must refuse, alternately on
    /// its first RCPT (`SIZE=+5`: SIZE belongs to MAIL, and has no sign) and on MAIL
    /// (`SIZE=+<size>`): invalid input real clients send. 0 = never.
    /// Unit: messages. Range: 0 or more. Default: `0`.
    #[serde(default)]
    pub invalid_param_every: u32,
}

fn one_per_session() -> Spanned<Draw> {
    Spanned::new(0..0, Draw::Fixed(1))
}

/// The most messages one planned SMTP session carries: the sender's own bound.
pub const MAX_MESSAGES_PER_SESSION: u64 = stack::sender::MAX_MESSAGES_PER_SESSION as u64;

fn no_users() -> Spanned<Vec<String>> {
    Spanned::new(0..0, Vec::new())
}

fn default_max_rcpts() -> usize {
    2
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Clients {
    /// How often each user's POP3 client checks its mailbox.
    /// Unit: s. Range: `1` or more. Default: required.
    pub poll_interval_s: Spanned<u64>,
    /// Users whose client deletes what it fetched (the others leave mail on the server).
    /// Unit: -. Range: users of mx.users. Default: `[]`.
    #[serde(default = "no_users")]
    pub delete_after_fetch: Spanned<Vec<String>>,
    /// When set, every client polls first at this moment and then in lockstep (a reconnection
    /// storm); otherwise first polls are spread over one interval.
    /// Unit: s. Range: 0 or more. Default: unset (spread).
    #[serde(default)]
    pub first_poll_s: Option<u64>,
    /// The store's POP3 session limit.
    /// Unit: sessions. Range: 0 or more. Default: `200`.
    #[serde(default = "default_pop3_max_sessions")]
    pub pop3_max_sessions: usize,
    /// A message a client retrieves is marked read, as Dovecot's POP3 server does on RETR:
    /// moved from new/ into cur/ with the seen flag (`:2,S`).
    /// Unit: -. Range: true or false. Default: `false`.
    #[serde(default)]
    pub mark_read: bool,
    /// Client types (`[[clients.type]]`), each used by `count` mailboxes and run on a host of
    /// its own; the mailboxes no type takes keep the POP3 clients the fields above describe.
    #[serde(default, rename = "type")]
    pub types: Vec<ClientType>,
}

fn default_pop3_max_sessions() -> usize {
    200
}

/// A kind of mail client as data (`[[clients.type]]` under `[clients]`): the webmail, Android
/// and iOS clients of a provider's users. Mailboxes are assigned in the order of mx.users: the
/// first type takes the first `count` users, the next type the next ones; users no type takes
/// keep the classic POP3 clients of `[clients]` (host `clients`). A type's clients run on the
/// host `clients-<name>`, each polling its own mailbox.
///
/// `protocol`: `pop3` is the classic client with a UIDL cache (leave on the server, or
/// delete); `imap` keeps a UID cache keyed by UIDVALIDITY (dropped and resynced when the
/// server's UIDVALIDITY changes, RFC 4549) and skips a poll whose SELECT shows nothing new (iOS;
/// Android set to IMAP); `webmail` is the provider's own web view, an IMAP client with no
/// persistent cache: it re-lists the whole mailbox at every poll and shows what the server holds.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientType {
    /// The type's name; its clients run on the host `clients-<name>`.
    /// Unit: -. Range: lowercase letters, digits and '-', unique. Default: required.
    pub name: Spanned<String>,
    /// What the clients speak: `pop3`, `imap` (a UID cache keyed by UIDVALIDITY) or `webmail`
    /// (IMAP, re-listing at every poll).
    /// Unit: -. Range: `pop3`, `imap`, `webmail`. Default: required.
    pub protocol: Spanned<String>,
    /// How many mailboxes use this type (the next ones of mx.users, in order).
    /// Unit: mailboxes. Range: `1` to the users no earlier type took. Default: required.
    pub count: Spanned<usize>,
    /// The moment the type's clients may come back (after an outage, a new app version): none
    /// polls before it; first polls are spread over one interval after it.
    /// Unit: s. Range: 0 to horizon_s (two polls must fit after it). Default: `0`.
    #[serde(default = "zero_s")]
    pub returns_at_s: Spanned<u64>,
    /// How often each client of the type polls.
    /// Unit: s. Range: `1` or more (two polls must fit before horizon_s). Default: [clients] poll_interval_s.
    #[serde(default)]
    pub poll_interval_s: Option<Spanned<u64>>,
    /// The clients delete what they fetched (POP3 DELE; IMAP `\Deleted` and EXPUNGE); otherwise
    /// they leave mail on the server.
    /// Unit: -. Range: true or false. Default: `false`.
    #[serde(default)]
    pub delete_after_fetch: bool,
}

fn zero_s() -> Spanned<u64> {
    Spanned::new(0..0, 0)
}

/// The protocols a client type may speak.
pub const CLIENT_PROTOCOLS: &[&str] = &["pop3", "imap", "webmail"];

impl ClientType {
    /// The host its clients run on.
    pub fn host(&self) -> String {
        format!("clients-{}", self.name.get_ref())
    }

    /// Its poll interval: its own, or the scenario's.
    pub fn poll_s(&self, clients: &Clients) -> u64 {
        self.poll_interval_s.as_ref().map_or(*clients.poll_interval_s.get_ref(), |poll| *poll.get_ref())
    }
}

/// One mailbox's client, as `Clients::plans` lays it out.
#[derive(Clone, Debug)]
pub struct ClientPlan {
    pub user: String,
    /// The host it runs on: `clients`, or `clients-<type>`.
    pub host: String,
    /// `pop3`, `imap` (a UID cache) or `webmail` (IMAP, re-listing every poll).
    pub protocol: String,
    pub first_poll: Duration,
    pub poll_interval: Duration,
    pub delete_after_fetch: bool,
}

impl Clients {
    /// Per user of `users` (in order): the client type that user's mailbox uses, if any.
    pub fn type_of<'a>(&'a self, users: &[String]) -> Vec<(String, Option<&'a ClientType>)> {
        let mut types = self.types.iter().flat_map(|kind| std::iter::repeat(kind).take(*kind.count.get_ref()));
        users.iter().map(|user| (user.clone(), types.next())).collect()
    }

    /// Every mailbox's client: where it runs, what it speaks, when it first polls and how often
    /// (the simulation and `mailchaos drive` both run these). The classic POP3 clients (mailboxes
    /// no type takes) come first, numbered in name order as they always were, so a scenario
    /// without types runs as it did; then each type's, in the order of `users`. First polls are
    /// spread over one interval so that clients do not all arrive in one tick, unless the
    /// scenario wants the classic ones in lockstep (`first_poll_s`); a type polls only from its
    /// return on.
    pub fn plans(&self, users: &[String]) -> Vec<ClientPlan> {
        let typed = self.type_of(users);
        let spread = |index: usize, poll_s: u64| (index as u64 * 997) % poll_s.saturating_mul(1000).max(1);
        let poll_s = *self.poll_interval_s.get_ref();
        let deleting = self.delete_after_fetch.get_ref();
        let sorted: std::collections::BTreeSet<&String> = users.iter().collect();
        let classic = sorted.into_iter().enumerate().filter(|(_, user)| typed.iter().any(|(typed_user, kind)| typed_user == *user && kind.is_none()));
        let mut plans: Vec<ClientPlan> = classic
            .map(|(index, user)| ClientPlan {
                user: user.clone(),
                host: "clients".into(),
                protocol: "pop3".into(),
                first_poll: match self.first_poll_s {
                    Some(first_s) => Duration::from_secs(first_s),
                    None => Duration::from_millis(1000 + spread(index, poll_s)),
                },
                poll_interval: Duration::from_secs(poll_s),
                delete_after_fetch: deleting.contains(user),
            })
            .collect();
        for kind in &self.types {
            let mine = typed.iter().filter(|(_, of)| of.is_some_and(|of| of.name.get_ref() == kind.name.get_ref()));
            let poll_s = kind.poll_s(self);
            plans.extend(mine.enumerate().map(|(index, (user, _))| ClientPlan {
                user: user.clone(),
                host: kind.host(),
                protocol: kind.protocol.get_ref().clone(),
                first_poll: Duration::from_millis(kind.returns_at_s.get_ref().saturating_mul(1000) + 1000 + spread(index, poll_s)),
                poll_interval: Duration::from_secs(poll_s),
                delete_after_fetch: kind.delete_after_fetch,
            }));
        }
        plans
    }

    /// The longest poll interval of any client.
    pub fn longest_poll_s(&self) -> u64 {
        self.types.iter().map(|kind| kind.poll_s(self)).chain([*self.poll_interval_s.get_ref()]).max().unwrap_or(1)
    }

    /// The mailboxes whose client deletes what it fetched.
    pub fn deleting(&self, users: &[String]) -> std::collections::BTreeSet<String> {
        self.type_of(users)
            .into_iter()
            .filter(|(user, kind)| match kind {
                Some(kind) => kind.delete_after_fetch,
                None => self.delete_after_fetch.get_ref().contains(user),
            })
            .map(|(user, _)| user)
            .collect()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// Matching operations of `host`'s disk hang until the window ends, then all resume.
    DiskStall,
    /// Matching operations of `host`'s disk fail with EIO.
    DiskEio,
    /// Matching operations that need space fail with ENOSPC (past `bytes` / `files` if given).
    DiskFull,
    /// No traffic between `hosts` in either direction.
    Partition,
    /// Traffic from `hosts[0]` to `hosts[1]` is lost; the other way works.
    PartitionOneway,
    /// The link between `hosts` freezes right after `stage` of a transaction, for `duration_s`:
    /// with a duration past the client's timeout the reply is never read (RFC 1047).
    Cut,
    /// `host` (a provider) cannot resolve the MX: connections fail like a SERVFAIL.
    DnsFailure,
    /// The MX's SMTP port refuses connections, as the 2023 operator did.
    PortClosed,
    /// The store's storage stalls for `duration_s` (every operation hangs, then all resumes)
    /// and the MX's operator answers as `answer` says meanwhile: the 2023 incident.
    Outage,
    /// `host` (mx or store) crashes at `at_s` (or at the first hit of fail point `point`
    /// after it) and restarts `restart_after_s` later.
    Crash,
    /// fsync of matching files fails with EIO and drops the dirty pages (fsyncgate).
    FsyncFail,
    /// fsync answers Ok and makes nothing durable.
    LyingFsync,
    /// Writes are acknowledged and readable but never reach the media.
    LostWrite,
    /// Writes that a crash finds unsynced survive torn.
    TornWrite,
    /// Writes land in another file of the same directory.
    MisdirectedWrite,
    /// Reads find a persistent bit flip.
    BitRot,
    /// Mutating operations fail with EROFS (errors=remount-ro) until the window ends.
    ReadOnly,
    /// A crash inside the window loses one durable directory entry under the prefix.
    DirentLoss,
    /// The storage controller fails over at `at_s`: unflushed writes are lost, reads go stale.
    Failover,
    /// The store is restored from the backup taken at `snapshot_s`: crash, restore, restart.
    Rollback,
    /// Matching operations take `latency_ms` longer.
    LatencySpike,
}

impl FaultKind {
    /// Every kind, in the order the scenario reference lists them.
    pub const ALL: &'static [FaultKind] = &[
        FaultKind::DiskStall,
        FaultKind::DiskEio,
        FaultKind::DiskFull,
        FaultKind::Partition,
        FaultKind::PartitionOneway,
        FaultKind::Cut,
        FaultKind::DnsFailure,
        FaultKind::PortClosed,
        FaultKind::Outage,
        FaultKind::Crash,
        FaultKind::FsyncFail,
        FaultKind::LyingFsync,
        FaultKind::LostWrite,
        FaultKind::TornWrite,
        FaultKind::MisdirectedWrite,
        FaultKind::BitRot,
        FaultKind::ReadOnly,
        FaultKind::DirentLoss,
        FaultKind::Failover,
        FaultKind::Rollback,
        FaultKind::LatencySpike,
    ];

    /// The storage faults: aimed at the disk of `host`, by path prefix, operations and `nth`.
    pub fn is_storage(self) -> bool {
        matches!(
            self,
            FaultKind::DiskStall
                | FaultKind::DiskEio
                | FaultKind::DiskFull
                | FaultKind::FsyncFail
                | FaultKind::LyingFsync
                | FaultKind::LostWrite
                | FaultKind::TornWrite
                | FaultKind::MisdirectedWrite
                | FaultKind::BitRot
                | FaultKind::ReadOnly
                | FaultKind::DirentLoss
                | FaultKind::LatencySpike
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::DiskStall => "disk-stall",
            FaultKind::DiskEio => "disk-eio",
            FaultKind::DiskFull => "disk-full",
            FaultKind::Partition => "partition",
            FaultKind::PartitionOneway => "partition-oneway",
            FaultKind::Cut => "cut",
            FaultKind::DnsFailure => "dns-failure",
            FaultKind::PortClosed => "port-closed",
            FaultKind::Outage => "outage",
            FaultKind::Crash => "crash",
            FaultKind::FsyncFail => "fsync-fail",
            FaultKind::LyingFsync => "lying-fsync",
            FaultKind::LostWrite => "lost-write",
            FaultKind::TornWrite => "torn-write",
            FaultKind::MisdirectedWrite => "misdirected-write",
            FaultKind::BitRot => "bit-rot",
            FaultKind::ReadOnly => "read-only",
            FaultKind::DirentLoss => "dirent-loss",
            FaultKind::Failover => "failover",
            FaultKind::Rollback => "rollback",
            FaultKind::LatencySpike => "latency-spike",
        }
    }
}

/// The stages after which a `cut` can freeze a link.
pub const CUT_STAGES: &[&str] = &["greeting", "ehlo", "mail", "rcpt", "data", "data-end"];

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// What goes wrong (see the fault kinds); each kind takes only its own fields.
    /// Unit: -. Range: a fault kind. Default: required.
    pub kind: FaultKind,
    /// The host it hits: mx or store for disk faults, failovers and crashes (store for a
    /// rollback), `provider-<name>` for dns-failure, mx for port-closed.
    /// Unit: -. Range: a host of the scenario. Default: unset.
    #[serde(default)]
    pub host: Option<Spanned<String>>,
    /// The two hosts of a partition or a cut.
    /// Unit: -. Range: two different hosts of the scenario. Default: unset.
    #[serde(default)]
    pub hosts: Option<Spanned<Vec<String>>>,
    /// When it begins: fixed, or a `[low, high]` range each seed draws from.
    /// Unit: s. Range: the fault must begin and end within chaos_s. Default: required.
    pub at_s: Spanned<Draw>,
    /// How long a disk fault, partition, cut or outage lasts: fixed or `[low, high]`.
    /// Unit: s. Range: at_s + duration_s within chaos_s. Default: unset.
    #[serde(default)]
    pub duration_s: Option<Spanned<Draw>>,
    /// Disk faults: only paths starting with this.
    /// Unit: -. Range: a path prefix such as `queue/` or `mail/anna/`. Default: unset (every path).
    #[serde(default)]
    pub path_prefix: Option<Spanned<String>>,
    /// Disk faults: only these operations.
    /// Unit: -. Range: op names (see the operations). Default: unset (every operation).
    #[serde(default)]
    pub ops: Option<Spanned<Vec<disk::OpKind>>>,
    /// Crashes: when set, the host crashes at the first hit of this fail point after `at_s`.
    /// Unit: -. Range: a crash point (see the crash points). Default: unset (crash at at_s).
    #[serde(default)]
    pub point: Option<Spanned<String>>,
    /// Crashes and rollbacks: down time before the host restarts.
    /// Unit: s. Range: the restart must fall within chaos_s. Default: unset.
    #[serde(default)]
    pub restart_after_s: Option<Spanned<u64>>,
    /// Cuts: the stage after which the link freezes (see CUT_STAGES).
    /// Unit: -. Range: a cut stage (see the cut stages). Default: unset.
    #[serde(default)]
    pub stage: Option<Spanned<String>>,
    /// Outages: what the MX's operator answers meanwhile (see OUTAGE_ANSWERS).
    /// Unit: -. Range: an outage answer (see the outage answers). Default: unset.
    #[serde(default)]
    pub answer: Option<Spanned<String>>,
    /// Storage faults: hit only the Nth matching call (1-based) inside the window.
    /// Unit: calls. Range: 1 or more. Default: unset (every matching call).
    #[serde(default)]
    pub nth: Option<Spanned<u64>>,
    /// disk-full: ENOSPC once the disk holds more bytes than this.
    /// Unit: bytes. Range: 0 or more. Default: unset (always full).
    #[serde(default)]
    pub bytes: Option<Spanned<u64>>,
    /// disk-full: ENOSPC once the disk holds more files than this.
    /// Unit: files. Range: 0 or more. Default: unset (always full).
    #[serde(default)]
    pub files: Option<Spanned<u64>>,
    /// latency-spike: how much longer each matching operation takes.
    /// Unit: ms. Range: 1 to 3600000. Default: unset (required by latency-spike).
    #[serde(default)]
    pub latency_ms: Option<Spanned<u64>>,
    /// rollback: when the backup that is restored was taken.
    /// Unit: s. Range: before at_s. Default: unset (required by rollback).
    #[serde(default)]
    pub snapshot_s: Option<Spanned<u64>>,
}

/// The operator's choices during an outage.
pub const OUTAGE_ANSWERS: &[&str] = &["5xx-bounce", "4xx-tempfail", "closed-port"];

/// A scenario and where it came from.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub path: PathBuf,
    pub scenario: Scenario,
}

impl Scenario {
    /// The cohorts of the staged restore with their mailboxes named (counts taken in mx.users
    /// order, skipping users a cohort names), in the scenario's order; empty without a restore.
    pub fn cohorts(&self) -> Vec<ResolvedCohort> {
        let Some(restore) = &self.restore else { return Vec::new() };
        let named: BTreeSet<&String> = restore.cohorts.iter().filter_map(|cohort| match cohort.mailboxes.get_ref() {
            CohortMailboxes::Names(names) => Some(names.iter()),
            CohortMailboxes::Count(_) => None,
        }).flatten().collect();
        let mut free = self.mx.users.get_ref().iter().filter(|user| !named.contains(user));
        restore
            .cohorts
            .iter()
            .map(|cohort| ResolvedCohort {
                mailboxes: match cohort.mailboxes.get_ref() {
                    CohortMailboxes::Names(names) => names.clone(),
                    CohortMailboxes::Count(count) => free.by_ref().take(*count as usize).cloned().collect(),
                },
                at_s: *cohort.at_s.get_ref(),
                from_backup_at_s: cohort.from_backup_at_s.as_ref().map(|at| *at.get_ref()),
            })
            .collect()
    }

    /// Every host name of the scenario's world, in a fixed order.
    pub fn hosts(&self) -> Vec<String> {
        let mut hosts = vec!["mx".to_string(), "store".to_string()];
        hosts.extend(self.providers.iter().map(|provider| provider_host(provider.name.get_ref())));
        hosts.push("clients".to_string());
        hosts.extend(self.clients.types.iter().map(ClientType::host));
        hosts
    }
}

pub fn provider_host(name: &str) -> String {
    format!("provider-{name}")
}

pub fn provider_domain(name: &str) -> String {
    format!("{name}.test")
}

/// The smallest valid scenario: every table but `[[link]]` and `[[fault]]`, with only its
/// required fields (what tests start from).
macro_rules! minimal_scenario {
    () => {
        r#"tick_ms = 1000
horizon_s = 3600
chaos_s = 1200
[mx]
domains = ["libero.test"]
users = ["anna"]
[[provider]]
name = "gmail"
policy = "postfix"
[workload]
messages = 3
spread_s = 600
[clients]
poll_interval_s = 60
"#
    };
}
pub const MINIMAL_SCENARIO: &str = minimal_scenario!();

/// Reads and validates one scenario file (a regular file of at most `input::MAX_INPUT_BYTES`).
pub fn load(path: &Path) -> Result<Loaded, ScenarioError> {
    let text = input::read_input_file(path, input::MAX_INPUT_BYTES)?;
    let scenario = parse(&path.display().to_string(), &text)?;
    Ok(Loaded { path: path.to_path_buf(), scenario })
}

/// Parses and validates scenario text; `file` is used in error messages and as default name.
pub fn parse(file: &str, text: &str) -> Result<Scenario, ScenarioError> {
    let locate = |span: Option<Range<usize>>, message: String| {
        let (line, column) = line_column(text, span.map(|span| span.start).unwrap_or(0));
        ScenarioError { file: file.to_string(), line, column, message }
    };
    let mut scenario: Scenario = toml::from_str(text).map_err(|error| locate(error.span(), input::toml_message(text, error.span(), error.message())))?;
    if scenario.name.is_empty() {
        let stem = Path::new(file).file_stem().map(|stem| stem.to_string_lossy().to_string());
        scenario.name = stem.unwrap_or_else(|| "scenario".into());
    }
    let keys = Keys::parse(text);
    validate(&scenario, &keys).map_err(|(span, message)| locate(Some(span), message))?;
    Ok(scenario)
}

type Invalid = (Range<usize>, String);

fn check(condition: bool, span: Range<usize>, message: impl FnOnce() -> String) -> Result<(), Invalid> {
    if condition { Ok(()) } else { Err((span, message())) }
}

/// `value` lies in `range`, or the error names the key at `path` and the range.
fn within<T: PartialOrd + std::fmt::Display>(keys: &Keys, path: &[&str], value: T, range: std::ops::RangeInclusive<T>, why: &str) -> Result<(), Invalid> {
    check(range.contains(&value), keys.value(path), || format!("{} must be between {} and {}{why}", path.last().unwrap_or(&""), range.start(), range.end()))
}

/// The most a link or the network may delay one message: ten minutes.
pub const MAX_LATENCY_MS: u64 = 600_000;
/// The MX's queue runs at most this many delivery workers.
pub const MAX_QUEUE_WORKERS: usize = 16;
/// The most sessions (SMTP at the MX, POP3 at the store) or connections any limit may allow.
pub const MAX_SESSIONS: usize = 10_000;

fn validate(scenario: &Scenario, keys: &Keys) -> Result<(), Invalid> {
    let tick = &scenario.tick_ms;
    check((1..=60_000).contains(tick.get_ref()), tick.span(), || "tick_ms must be between 1 and 60000".into())?;
    let horizon = &scenario.horizon_s;
    check((1..=MAX_HORIZON_S).contains(horizon.get_ref()), horizon.span(), || format!("horizon_s must be between 1 and {MAX_HORIZON_S}"))?;
    let chaos = &scenario.chaos_s;
    check(chaos.get_ref() <= horizon.get_ref(), chaos.span(), || "chaos_s must not exceed horizon_s".into())?;
    let latency = &scenario.network.max_latency_ms;
    within(keys, &["network", "min_latency_ms"], scenario.network.min_latency_ms, 0..=MAX_LATENCY_MS, "")?;
    check(*latency.get_ref() >= scenario.network.min_latency_ms && *latency.get_ref() <= MAX_LATENCY_MS, latency.span(), || format!("max_latency_ms must be at least min_latency_ms and at most {MAX_LATENCY_MS}"))?;
    validate_mx(scenario, keys)?;
    validate_providers(scenario, keys)?;
    validate_workload(scenario, keys)?;
    validate_clients(scenario, keys)?;
    if let Some(profile) = &scenario.profile {
        let shipped = devices::profile::Profile::shipped_names();
        check(shipped.contains(&profile.get_ref().as_str()), profile.span(), || format!("unknown profile '{}'; expected one of: {}", input::clip(profile.get_ref()), shipped.join(", ")))?;
    }
    for fault in &scenario.faults {
        validate_fault(scenario, fault)?;
    }
    validate_vendor_array(scenario)?;
    validate_restore(scenario)?;
    let hosts = scenario.hosts();
    for link in &scenario.links {
        let pair = link.hosts.get_ref();
        check(pair.len() == 2 && pair[0] != pair[1] && pair.iter().all(|h| hosts.contains(h)), link.hosts.span(), || format!("a link names two different hosts of: {}", hosts.join(", ")))?;
        let max = &link.max_latency_ms;
        check(*max.get_ref() >= link.min_latency_ms && *max.get_ref() <= MAX_LATENCY_MS, max.span(), || format!("max_latency_ms must be at least min_latency_ms and at most {MAX_LATENCY_MS}"))?;
    }
    Ok(())
}

fn is_local_part(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.bytes().all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-' || byte == b'.')
}

/// A lowercase domain name of dot-separated labels.
fn is_domain(name: &str) -> bool {
    name.len() <= 253 && name.split('.').all(|label| !label.is_empty() && label.len() <= 63 && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'))
}

/// The index of the first entry that repeats an earlier one.
fn first_repeat(names: &[String]) -> Option<usize> {
    (1..names.len()).find(|&index| names[..index].contains(&names[index]))
}

fn validate_mx(scenario: &Scenario, keys: &Keys) -> Result<(), Invalid> {
    let mx = &scenario.mx;
    let domains = &mx.domains;
    check(!domains.is_empty() && domains.len() <= 16, keys.value(&["mx", "domains"]), || "mx.domains must list 1 to 16 domains (mail to any other is refused)".into())?;
    for (index, domain) in domains.iter().enumerate() {
        check(is_domain(domain), keys.value(&["mx", "domains", &index.to_string()]), || format!("domain '{}' is not a lowercase domain name", input::clip(domain)))?;
    }
    if let Some(index) = first_repeat(domains) {
        return Err((keys.value(&["mx", "domains", &index.to_string()]), format!("domain '{}' appears twice in mx.domains", domains[index])));
    }
    let users = &mx.users;
    check(!users.get_ref().is_empty() && users.get_ref().len() <= MAX_USERS, users.span(), || format!("mx.users must list 1 to {MAX_USERS} users"))?;
    for (index, user) in users.get_ref().iter().enumerate() {
        check(is_local_part(user), keys.value(&["mx", "users", &index.to_string()]), || format!("user '{}' is not a lowercase local part", input::clip(user)))?;
    }
    // A repeated user would be one mailbox listed twice: the workload could never find as many
    // distinct recipients as it counts.
    if let Some(index) = first_repeat(users.get_ref()) {
        return Err((keys.value(&["mx", "users", &index.to_string()]), format!("user '{}' appears twice in mx.users", users.get_ref()[index])));
    }
    let at = |key: &'static str| ["mx", key];
    within(keys, &at("max_message_bytes"), mx.max_message_bytes, 1..=64 << 20, "")?;
    within(keys, &at("max_recipients"), mx.max_recipients, 1..=1000, "")?;
    within(keys, &at("max_sessions"), mx.max_sessions, 1..=MAX_SESSIONS, " (0 would refuse every sender: nothing could drain)")?;
    within(keys, &at("max_sessions_per_client"), mx.max_sessions_per_client, 1..=MAX_SESSIONS, "")?;
    within(keys, &at("max_queue_files"), mx.max_queue_files, 1..=1_000_000, "")?;
    within(keys, &at("tarpit_ms"), mx.tarpit_ms, 0..=300_000, " (an SMTP client waits 5 minutes for the greeting)")?;
    within(keys, &at("queue_workers"), mx.queue_workers, 1..=MAX_QUEUE_WORKERS, "")?;
    within(keys, &at("retry_base_s"), mx.retry_base_s, 1..=MAX_HORIZON_S, "")?;
    // After the chaos the queue must get at least one retry in before the horizon.
    let after_chaos = scenario.horizon_s.get_ref() - scenario.chaos_s.get_ref();
    within(keys, &at("retry_max_s"), mx.retry_max_s, mx.retry_base_s..=after_chaos.max(mx.retry_base_s), " (from retry_base_s to horizon_s - chaos_s: the queue must retry once after the chaos)")
}

fn validate_providers(scenario: &Scenario, keys: &Keys) -> Result<(), Invalid> {
    check(!scenario.providers.is_empty() && scenario.providers.len() <= MAX_PROVIDERS, keys.key(&["provider"]), || format!("a scenario needs 1 to {MAX_PROVIDERS} [[provider]] tables"))?;
    let mut names = Vec::new();
    for (index, provider) in scenario.providers.iter().enumerate() {
        let name = &provider.name;
        check(is_local_part(name.get_ref()), name.span(), || "provider name must be lowercase letters, digits, '-'".into())?;
        check(!names.contains(name.get_ref()), name.span(), || format!("provider '{}' appears twice", name.get_ref()))?;
        names.push(name.get_ref().clone());
        let policy = &provider.policy;
        let known = mail::policy::RetryPolicy::names();
        check(known.contains(policy.get_ref()), policy.span(), || format!("unknown policy '{}'; expected one of: {}", input::clip(policy.get_ref()), known.join(", ")))?;
        let index = index.to_string();
        // Below a thousandth a policy's minutes become milliseconds: a retry storm, not a policy.
        let scale = provider.time_scale;
        check((0.001..=100.0).contains(&scale), keys.value(&["provider", &index, "time_scale"]), || "time_scale must be between 0.001 and 100".into())?;
        within(keys, &["provider", &index, "max_connections"], provider.max_connections, 1..=1000, "")?;
    }
    Ok(())
}

fn validate_workload(scenario: &Scenario, keys: &Keys) -> Result<(), Invalid> {
    let workload = &scenario.workload;
    let messages = &workload.messages;
    check(*messages.get_ref() <= MAX_MESSAGES_PER_PROVIDER, messages.span(), || format!("workload.messages must be at most {MAX_MESSAGES_PER_PROVIDER}"))?;
    let spread = &workload.spread_s;
    check(*spread.get_ref() >= 1 && spread.get_ref() <= scenario.horizon_s.get_ref(), spread.span(), || "spread_s must be between 1 and horizon_s".into())?;
    within(keys, &["workload", "max_rcpts"], workload.max_rcpts, 1..=100, "")?;
    let per_session = &workload.messages_per_session;
    let (low, high) = per_session.get_ref().bounds();
    check(1 <= low && low <= high && high <= MAX_MESSAGES_PER_SESSION, per_session.span(), || format!("messages_per_session must be a number or a [low, high] range within 1..={MAX_MESSAGES_PER_SESSION}"))
}

fn validate_clients(scenario: &Scenario, keys: &Keys) -> Result<(), Invalid> {
    let clients = &scenario.clients;
    let users = scenario.mx.users.get_ref();
    for user in clients.delete_after_fetch.get_ref() {
        let span = clients.delete_after_fetch.span();
        check(users.contains(user), span, || format!("delete_after_fetch names '{}', who is not in mx.users", input::clip(user)))?;
    }
    within(keys, &["clients", "pop3_max_sessions"], clients.pop3_max_sessions, 1..=MAX_SESSIONS, " (0 would refuse every client: nothing could drain)")?;
    let horizon = *scenario.horizon_s.get_ref();
    let first = clients.first_poll_s.unwrap_or(0);
    within(keys, &["clients", "first_poll_s"], first, 0..=horizon, " (horizon_s)")?;
    // The final sweep waits two polls after the chaos, the first poll and the last message's
    // arrival: both must fit before the horizon, or no run of this scenario could drain.
    let poll = &clients.poll_interval_s;
    let latest_start = (*scenario.chaos_s.get_ref()).max(first).max(*scenario.workload.spread_s.get_ref());
    let room = horizon.saturating_sub(latest_start) / 2;
    let between = "two polls must fit between max(chaos_s, first_poll_s, spread_s) and horizon_s";
    check((1..=room).contains(poll.get_ref()), poll.span(), || match room {
        0 => format!("no poll interval fits: {between}"),
        _ => format!("poll_interval_s must be between 1 and {room}: {between}"),
    })?;
    validate_client_types(scenario)
}

fn validate_client_types(scenario: &Scenario) -> Result<(), Invalid> {
    let clients = &scenario.clients;
    let users = scenario.mx.users.get_ref();
    let horizon = *scenario.horizon_s.get_ref();
    let mut names: Vec<&String> = Vec::new();
    let mut taken = 0usize;
    for kind in &clients.types {
        let name = &kind.name;
        check(is_local_part(name.get_ref()), name.span(), || "a client type's name must be lowercase letters, digits, '-'".into())?;
        check(!names.contains(&name.get_ref()), name.span(), || format!("client type '{}' appears twice", name.get_ref()))?;
        names.push(name.get_ref());
        let protocol = &kind.protocol;
        check(CLIENT_PROTOCOLS.contains(&protocol.get_ref().as_str()), protocol.span(), || format!("unknown protocol '{}'; expected one of: {}", input::clip(protocol.get_ref()), CLIENT_PROTOCOLS.join(", ")))?;
        let count = &kind.count;
        let left = users.len() - taken;
        check((1..=left).contains(count.get_ref()), count.span(), || format!("count must be between 1 and {left}: the users of mx.users no earlier client type took"))?;
        taken += *count.get_ref();
        let returns = &kind.returns_at_s;
        check(*returns.get_ref() <= horizon, returns.span(), || "returns_at_s must be between 0 and horizon_s".into())?;
        // As for [clients]: two polls must fit after the type's return, the chaos and the
        // last arrival, or no run could drain.
        let latest_start = (*scenario.chaos_s.get_ref()).max(*returns.get_ref()).max(*scenario.workload.spread_s.get_ref());
        let room = horizon.saturating_sub(latest_start) / 2;
        let poll = kind.poll_s(clients);
        let span = kind.poll_interval_s.as_ref().map_or(returns.span(), Spanned::span);
        check((1..=room).contains(&poll), span, || format!("poll_interval_s must be between 1 and {room}: two polls must fit between max(chaos_s, returns_at_s, spread_s) and horizon_s"))?;
    }
    // A user a type takes has that type's behaviour: naming it in delete_after_fetch too would
    // be ignored.
    for (user, kind) in clients.type_of(users) {
        check(kind.is_none() || !clients.delete_after_fetch.get_ref().contains(&user), clients.delete_after_fetch.span(), || format!("delete_after_fetch names '{}', whose mailbox a client type takes (set delete_after_fetch in its [[clients.type]])", input::clip(&user)))?;
    }
    Ok(())
}

fn validate_vendor_array(scenario: &Scenario) -> Result<(), Invalid> {
    let Some(array) = &scenario.vendor_array else { return Ok(()) };
    let hosts = array.get_ref();
    check(!hosts.is_empty() && hosts.iter().all(|host| host == "mx" || host == "store") && first_repeat(hosts).is_none(), array.span(), || "vendor_array lists the hosts on the vendor's array: \"mx\", \"store\" or both, each once".into())
}

fn validate_restore(scenario: &Scenario) -> Result<(), Invalid> {
    let Some(restore) = &scenario.restore else { return Ok(()) };
    let chaos = *scenario.chaos_s.get_ref();
    let offline = &restore.offline_at_s;
    let users = scenario.mx.users.get_ref();
    let first = restore.cohorts.first().ok_or((offline.span(), "a restore needs at least one [[restore.cohort]]".to_string()))?;
    check(restore.cohorts.len() <= MAX_USERS, first.at_s.span(), || format!("at most {MAX_USERS} cohorts"))?;
    let mut taken: BTreeSet<&str> = BTreeSet::new();
    let mut counted = 0u64;
    let named: usize = restore.cohorts.iter().map(|cohort| match cohort.mailboxes.get_ref() {
        CohortMailboxes::Names(names) => names.len(),
        CohortMailboxes::Count(_) => 0,
    }).sum();
    for cohort in &restore.cohorts {
        let at = &cohort.at_s;
        check(*at.get_ref() > *offline.get_ref() && *at.get_ref() <= chaos, at.span(), || format!("a cohort comes back after offline_at_s ({}) and within chaos_s ({chaos})", offline.get_ref()))?;
        if let Some(backup) = &cohort.from_backup_at_s {
            check(backup.get_ref() < offline.get_ref(), backup.span(), || "from_backup_at_s must come before offline_at_s (the backup is of the mailboxes before they went offline)".into())?;
            let first_backup = restore.cohorts.iter().find_map(|cohort| cohort.from_backup_at_s.as_ref()).map(|at| *at.get_ref());
            check(first_backup == Some(*backup.get_ref()), backup.span(), || "every cohort restored from a backup uses the same one (one from_backup_at_s)".into())?;
        }
        let span = cohort.mailboxes.span();
        match cohort.mailboxes.get_ref() {
            CohortMailboxes::Names(names) => {
                check(!names.is_empty(), span.clone(), || "a cohort needs at least one mailbox".into())?;
                for name in names {
                    check(users.contains(name), span.clone(), || format!("cohort mailbox '{}' is not in mx.users", input::clip(name)))?;
                    check(taken.insert(name), span.clone(), || format!("mailbox '{}' is in two cohorts", input::clip(name)))?;
                }
            }
            CohortMailboxes::Count(count) => {
                counted = counted.saturating_add(*count);
                check(*count >= 1 && counted.saturating_add(named as u64) <= users.len() as u64, span, || format!("a cohort counts 1 or more mailboxes, and the cohorts together at most the {} users of mx.users", users.len()))?;
            }
        }
    }
    let overlaps = scenario.faults.iter().any(|fault| fault.kind == FaultKind::Rollback);
    check(!overlaps, offline.span(), || "a staged restore and a rollback fault cannot be combined (both restore the store from a backup)".into())
}

/// The optional fields a fault kind reads; any other one given is a mistake (it would be
/// silently ignored, or worse, used where the writer did not mean it).
pub fn fields_of(kind: FaultKind) -> &'static [&'static str] {
    match kind {
        FaultKind::DiskFull => &["host", "duration_s", "path_prefix", "ops", "nth", "bytes", "files"],
        FaultKind::LatencySpike => &["host", "duration_s", "path_prefix", "ops", "nth", "latency_ms"],
        kind if kind.is_storage() => &["host", "duration_s", "path_prefix", "ops", "nth"],
        FaultKind::Failover => &["host"],
        FaultKind::Rollback => &["host", "snapshot_s", "restart_after_s"],
        FaultKind::Cut => &["hosts", "duration_s", "stage"],
        FaultKind::Outage => &["duration_s", "answer"],
        FaultKind::DnsFailure | FaultKind::PortClosed => &["host", "duration_s"],
        FaultKind::Partition | FaultKind::PartitionOneway => &["hosts", "duration_s"],
        FaultKind::Crash => &["host", "point", "restart_after_s"],
        _ => &[],
    }
}

/// The optional fields this fault sets, with where.
fn fields_set(fault: &Fault) -> Vec<(&'static str, Range<usize>)> {
    let mut set = Vec::new();
    let mut add = |name: &'static str, span: Option<Range<usize>>| {
        if let Some(span) = span {
            set.push((name, span));
        }
    };
    add("host", fault.host.as_ref().map(Spanned::span));
    add("hosts", fault.hosts.as_ref().map(Spanned::span));
    add("duration_s", fault.duration_s.as_ref().map(Spanned::span));
    add("path_prefix", fault.path_prefix.as_ref().map(Spanned::span));
    add("ops", fault.ops.as_ref().map(Spanned::span));
    add("point", fault.point.as_ref().map(Spanned::span));
    add("restart_after_s", fault.restart_after_s.as_ref().map(Spanned::span));
    add("stage", fault.stage.as_ref().map(Spanned::span));
    add("answer", fault.answer.as_ref().map(Spanned::span));
    add("nth", fault.nth.as_ref().map(Spanned::span));
    add("bytes", fault.bytes.as_ref().map(Spanned::span));
    add("files", fault.files.as_ref().map(Spanned::span));
    add("latency_ms", fault.latency_ms.as_ref().map(Spanned::span));
    add("snapshot_s", fault.snapshot_s.as_ref().map(Spanned::span));
    set
}

fn validate_fault(scenario: &Scenario, fault: &Fault) -> Result<(), Invalid> {
    let allowed = fields_of(fault.kind);
    for (field, span) in fields_set(fault) {
        check(allowed.contains(&field), span, || {
            let kind = fault.kind.name();
            match allowed.is_empty() {
                true => format!("kind = \"{kind}\" takes no {field}"),
                false => format!("kind = \"{kind}\" takes no {field}; it takes at_s, {}", allowed.join(", ")),
            }
        })?;
    }
    let hosts = scenario.hosts();
    let at = &fault.at_s;
    let (low, high) = at.get_ref().bounds();
    check(low <= high, at.span(), || "at_s range must be [low, high] with low <= high".into())?;
    let longest = fault.duration_s.as_ref().map(|duration| duration.get_ref().bounds().1).unwrap_or(0);
    check(high.saturating_add(longest) <= *scenario.chaos_s.get_ref(), at.span(), || "this fault must begin and end within chaos_s".into())?;
    if let Some(duration) = &fault.duration_s {
        let (low, high) = duration.get_ref().bounds();
        check(low <= high, duration.span(), || "duration_s range must be [low, high] with low <= high".into())?;
    }
    let known_host = |host: &Spanned<String>, allowed: &[&str]| {
        check(allowed.contains(&host.get_ref().as_str()), host.span(), || format!("unknown host '{}' for this fault; expected one of: {}", input::clip(host.get_ref()), allowed.join(", ")))
    };
    match fault.kind {
        kind if kind.is_storage() => {
            let host = fault.host.as_ref().ok_or((at.span(), "a storage fault needs host = \"mx\" or \"store\"".to_string()))?;
            known_host(host, &["mx", "store"])?;
            check(fault.duration_s.is_some(), at.span(), || "a storage fault needs duration_s (its window)".into())?;
            if let Some(nth) = &fault.nth {
                check(*nth.get_ref() >= 1, nth.span(), || "nth counts from 1".into())?;
            }
            if kind == FaultKind::LatencySpike {
                let latency = fault.latency_ms.as_ref().ok_or((at.span(), "a latency-spike needs latency_ms".to_string()))?;
                check((1..=3_600_000).contains(latency.get_ref()), latency.span(), || "latency_ms must be between 1 and 3600000".into())?;
            }
        }
        FaultKind::Failover => {
            let host = fault.host.as_ref().ok_or((at.span(), "a failover needs host = \"mx\" or \"store\"".to_string()))?;
            known_host(host, &["mx", "store"])?;
        }
        FaultKind::Rollback => {
            let host = fault.host.as_ref().ok_or((at.span(), "a rollback needs host = \"store\"".to_string()))?;
            // A restore is modelled for the mail store; restoring the MX queue would need the
            // senders to learn which acknowledgements were undone.
            known_host(host, &["store"])?;
            let snapshot = fault.snapshot_s.as_ref().ok_or((at.span(), "a rollback needs snapshot_s (when the restored backup was taken)".to_string()))?;
            check(*snapshot.get_ref() < low, snapshot.span(), || "snapshot_s must come before at_s".into())?;
            let restart = fault.restart_after_s.as_ref().ok_or((at.span(), "a rollback needs restart_after_s".to_string()))?;
            check(high.saturating_add(*restart.get_ref()) <= *scenario.chaos_s.get_ref(), restart.span(), || "the store must restart within chaos_s".into())?;
        }
        FaultKind::Cut => {
            let pair = fault.hosts.as_ref().ok_or((at.span(), "a cut needs hosts = [\"provider-x\", \"mx\"] or [\"mx\", \"store\"]".to_string()))?;
            let first = pair.get_ref().first().map(String::as_str).unwrap_or("");
            let smtp = first.starts_with("provider-") && pair.get_ref().get(1).is_some_and(|h| h == "mx") && hosts.iter().any(|h| h == first);
            let lmtp = pair.get_ref() == &["mx".to_string(), "store".to_string()];
            check(smtp || lmtp, pair.span(), || "a cut is between a provider and the MX ([\"provider-x\", \"mx\"]) or the MX and the store ([\"mx\", \"store\"])".into())?;
            let stage = fault.stage.as_ref().ok_or((at.span(), format!("a cut needs stage = one of: {}", CUT_STAGES.join(", "))))?;
            check(CUT_STAGES.contains(&stage.get_ref().as_str()), stage.span(), || format!("unknown stage '{}'; expected one of: {}", input::clip(stage.get_ref()), CUT_STAGES.join(", ")))?;
            check(smtp || stage.get_ref() == "data-end", stage.span(), || "between the MX and the store only stage = \"data-end\" is supported".into())?;
            check(fault.duration_s.is_some(), at.span(), || "a cut needs duration_s (how long the link stays frozen)".into())?;
        }
        FaultKind::Outage => {
            let answer = fault.answer.as_ref().ok_or((at.span(), format!("an outage needs answer = one of: {}", OUTAGE_ANSWERS.join(", "))))?;
            check(OUTAGE_ANSWERS.contains(&answer.get_ref().as_str()), answer.span(), || format!("unknown answer '{}'; expected one of: {}", input::clip(answer.get_ref()), OUTAGE_ANSWERS.join(", ")))?;
            check(fault.duration_s.is_some(), at.span(), || "an outage needs duration_s".into())?;
        }
        FaultKind::DnsFailure => {
            let host = fault.host.as_ref().ok_or((at.span(), "an MX lookup failure needs host = \"provider-x\"".to_string()))?;
            let providers: Vec<&str> = hosts.iter().map(String::as_str).filter(|h| h.starts_with("provider-")).collect();
            known_host(host, &providers)?;
            check(fault.duration_s.is_some(), at.span(), || "an MX lookup failure needs duration_s".into())?;
        }
        FaultKind::PortClosed => {
            let host = fault.host.as_ref().ok_or((at.span(), "a closed port needs host = \"mx\"".to_string()))?;
            known_host(host, &["mx"])?;
            check(fault.duration_s.is_some(), at.span(), || "a closed port needs duration_s".into())?;
        }
        FaultKind::Partition | FaultKind::PartitionOneway => {
            let pair = fault.hosts.as_ref().ok_or((at.span(), "a partition needs hosts = [\"a\", \"b\"]".to_string()))?;
            check(pair.get_ref().len() == 2 && pair.get_ref()[0] != pair.get_ref()[1], pair.span(), || "hosts must name two different hosts".into())?;
            for host in pair.get_ref() {
                check(hosts.contains(host), pair.span(), || format!("unknown host '{}'; expected one of: {}", input::clip(host), hosts.join(", ")))?;
            }
            check(fault.duration_s.is_some(), at.span(), || "a partition needs duration_s".into())?;
        }
        FaultKind::Crash => {
            let host = fault.host.as_ref().ok_or((at.span(), "a crash needs host = \"mx\" or \"store\"".to_string()))?;
            known_host(host, &["mx", "store"])?;
            if let Some(point) = &fault.point {
                let points = stack::CRASH_POINTS;
                check(points.contains(&point.get_ref().as_str()), point.span(), || format!("unknown fail point '{}'; expected one of: {}", input::clip(point.get_ref()), points.join(", ")))?;
            }
            let restart = fault.restart_after_s.as_ref().ok_or((at.span(), "a crash needs restart_after_s".to_string()))?;
            check(high.saturating_add(*restart.get_ref()) <= *scenario.chaos_s.get_ref(), restart.span(), || "the host must restart within chaos_s".into())?;
        }
        _ => {}
    }
    Ok(())
}

/// The scenario files of a path: the file itself, or the *.toml files of a folder, sorted.
/// Whether a file is one that can be read is `load`'s to say (with the same words).
pub fn files_of(path: &Path) -> Result<Vec<PathBuf>, ScenarioError> {
    let error = |message: String| ScenarioError::whole_file(path.display().to_string(), message);
    if !std::fs::metadata(path).is_ok_and(|metadata| metadata.is_dir()) {
        return Ok(vec![path.to_path_buf()]);
    }
    let entries = std::fs::read_dir(path).map_err(|e| error(format!("cannot read folder: {e}")))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(error("no *.toml scenario files in this folder".into()));
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    /// MINIMAL_SCENARIO after a blank first line (the line numbers below count it).
    const MINIMAL: &str = concat!("\n", minimal_scenario!());

    #[test]
    fn a_minimal_scenario_parses() {
        let scenario = parse("minimal.toml", MINIMAL).unwrap();
        assert_eq!(scenario.name, "minimal");
        assert_eq!(scenario.hosts(), vec!["mx", "store", "provider-gmail", "clients"]);
    }

    fn error_of(text: &str) -> String {
        parse("bad.toml", text).unwrap_err().to_string()
    }

    #[test]
    fn syntax_errors_name_line_and_column() {
        let text = MINIMAL.replace("messages = 3", "messages = = 3");
        let error = error_of(&text);
        assert!(error.starts_with("bad.toml:12:12:"), "{error}");
    }

    #[test]
    fn network_faults_are_validated() {
        let cut = |hosts: &str, stage: &str| error_of(&format!("{MINIMAL}[[fault]]\nkind = \"cut\"\nhosts = {hosts}\nstage = \"{stage}\"\nat_s = 10\nduration_s = 60\n"));
        assert!(cut("[\"provider-gmail\", \"store\"]", "rcpt").contains("a cut is between a provider and the MX"));
        assert!(cut("[\"provider-gmail\", \"mx\"]", "helo").contains("unknown stage 'helo'"));
        assert!(cut("[\"mx\", \"store\"]", "rcpt").contains("only stage = \"data-end\""));
        let ok = format!("{MINIMAL}[[fault]]\nkind = \"cut\"\nhosts = [\"provider-gmail\", \"mx\"]\nstage = \"data-end\"\nat_s = 10\nduration_s = 660\n");
        assert!(parse("ok.toml", &ok).is_ok());
        let dns = error_of(&format!("{MINIMAL}[[fault]]\nkind = \"dns-failure\"\nhost = \"mx\"\nat_s = 10\nduration_s = 60\n"));
        assert!(dns.contains("unknown host 'mx'"), "{dns}");
    }

    #[test]
    fn a_field_the_fault_kind_ignores_is_refused_where_it_stands() {
        let fault = |body: &str| error_of(&format!("{MINIMAL}[[fault]]\n{body}\n"));
        // The fault table's first key stands on line 17.
        let outage = fault("kind = \"outage\"\nanswer = \"4xx-tempfail\"\nhost = \"mx\"\nat_s = 10\nduration_s = 60");
        assert!(outage.contains(":19:8: kind = \"outage\" takes no host; it takes at_s, duration_s, answer"), "{outage}");
        let partition = fault("kind = \"partition\"\nhosts = [\"mx\", \"store\"]\npath_prefix = \"q/\"\nat_s = 10\nduration_s = 60");
        assert!(partition.contains(":19:15: kind = \"partition\" takes no path_prefix"), "{partition}");
        let partition = fault("kind = \"partition\"\nhosts = [\"mx\", \"store\"]\nnth = 2\nat_s = 10\nduration_s = 60");
        assert!(partition.contains("takes no nth"), "{partition}");
        let stall = fault("kind = \"disk-stall\"\nhost = \"store\"\nanswer = \"5xx-bounce\"\nat_s = 10\nduration_s = 60");
        assert!(stall.contains("kind = \"disk-stall\" takes no answer"), "{stall}");
        let crash = fault("kind = \"crash\"\nhost = \"mx\"\nrestart_after_s = 30\nduration_s = 300\nat_s = 10");
        assert!(crash.contains("kind = \"crash\" takes no duration_s"), "{crash}");
        let failover = fault("kind = \"failover\"\nhost = \"store\"\nrestart_after_s = 30\nat_s = 10");
        assert!(failover.contains("kind = \"failover\" takes no restart_after_s"), "{failover}");
        let eio = fault("kind = \"disk-eio\"\nhost = \"mx\"\nbytes = 100\nat_s = 10\nduration_s = 60");
        assert!(eio.contains("kind = \"disk-eio\" takes no bytes"), "{eio}");
        let full = format!("{MINIMAL}[[fault]]\nkind = \"disk-full\"\nhost = \"mx\"\nbytes = 100\nfiles = 3\nops = [\"write\"]\npath_prefix = \"queue/\"\nat_s = 10\nduration_s = 60\n");
        assert!(parse("ok.toml", &full).is_ok());
    }

    #[test]
    fn cohorts_resolve_counts_around_named_mailboxes_and_are_validated() {
        let text = MINIMAL.replace("users = [\"anna\"]", "users = [\"anna\", \"bob\", \"cleo\", \"dan\"]");
        let restore = |body: &str| format!("{text}[restore]\noffline_at_s = 100\n{body}");
        let scenario = parse("c.toml", &restore("[[restore.cohort]]\nmailboxes = 2\nat_s = 200\n[[restore.cohort]]\nmailboxes = [\"bob\"]\nat_s = 300\nfrom_backup_at_s = 50\n")).unwrap();
        let cohorts = scenario.cohorts();
        assert_eq!(cohorts[0].mailboxes, ["anna", "cleo"]);
        assert_eq!((cohorts[1].mailboxes.clone(), cohorts[1].from_backup_at_s), (vec!["bob".to_string()], Some(50)));
        let error = |body: &str| parse("c.toml", &restore(body)).unwrap_err().to_string();
        assert!(error("[[restore.cohort]]\nmailboxes = 5\nat_s = 200\n").contains("at most the 4 users"));
        assert!(error("[[restore.cohort]]\nmailboxes = [\"eve\"]\nat_s = 200\n").contains("'eve' is not in mx.users"));
        assert!(error("[[restore.cohort]]\nmailboxes = 1\nat_s = 90\n").contains("after offline_at_s"));
        assert!(error("[[restore.cohort]]\nmailboxes = 1\nat_s = 200\nfrom_backup_at_s = 150\n").contains("before offline_at_s"));
        assert!(error("[[restore.cohort]]\nmailboxes = [\"bob\"]\nat_s = 200\n[[restore.cohort]]\nmailboxes = [\"bob\"]\nat_s = 300\n").contains("in two cohorts"));
        let array = parse("a.toml", &format!("vendor_array = [\"mx\", \"store\"]\n{MINIMAL}")).unwrap();
        assert_eq!(array.vendor_array.map(|hosts| hosts.into_inner()), Some(vec!["mx".to_string(), "store".to_string()]));
        assert!(parse("a.toml", &format!("vendor_array = [\"clients\"]\n{MINIMAL}")).unwrap_err().to_string().contains("vendor_array lists"));
    }

    #[test]
    fn client_types_take_mailboxes_in_order_and_are_validated() {
        let two = MINIMAL.replace("users = [\"anna\"]", "users = [\"anna\", \"bruno\", \"carla\"]");
        let typed = |body: &str| format!("{two}[[clients.type]]\n{body}\n");
        let scenario = parse("t.toml", &typed("name = \"ios\"\nprotocol = \"imap\"\ncount = 2\nreturns_at_s = 600\ndelete_after_fetch = true")).unwrap();
        assert_eq!(scenario.hosts(), vec!["mx", "store", "provider-gmail", "clients", "clients-ios"]);
        let kinds: Vec<(String, Option<String>)> = scenario.clients.type_of(scenario.mx.users.get_ref()).into_iter().map(|(user, kind)| (user, kind.map(|k| k.name.get_ref().clone()))).collect();
        assert_eq!(kinds, vec![("anna".into(), Some("ios".into())), ("bruno".into(), Some("ios".into())), ("carla".into(), None)]);
        assert_eq!(scenario.clients.deleting(scenario.mx.users.get_ref()).into_iter().collect::<Vec<_>>(), vec!["anna", "bruno"]);
        let error = parse("t.toml", &typed("name = \"ios\"\nprotocol = \"imap\"\ncount = 4")).unwrap_err().to_string();
        assert!(error.contains("count must be between 1 and 3"), "{error}");
        let error = parse("t.toml", &typed("name = \"ios\"\nprotocol = \"jmap\"\ncount = 1")).unwrap_err().to_string();
        assert!(error.contains("unknown protocol 'jmap'; expected one of: pop3, imap, webmail"), "{error}");
        let error = parse("t.toml", &typed("name = \"ios\"\nprotocol = \"imap\"\ncount = 1\nreturns_at_s = 3500")).unwrap_err().to_string();
        assert!(error.contains("poll_interval_s must be between 1 and 50"), "{error}");
        let error = parse("t.toml", &typed("name = \"ios\"\nprotocol = \"imap\"\ncount = 1").replace("poll_interval_s = 60", "poll_interval_s = 60\ndelete_after_fetch = [\"anna\"]")).unwrap_err().to_string();
        assert!(error.contains("whose mailbox a client type takes"), "{error}");
    }

    #[test]
    fn links_are_validated() {
        let link = |body: &str| parse("l.toml", &format!("{MINIMAL}[[link]]\n{body}\n"));
        assert!(link("hosts = [\"provider-gmail\", \"mx\"]\nmin_latency_ms = 10\nmax_latency_ms = 900").is_ok());
        let error = link("hosts = [\"provider-gmail\", \"dns\"]\nmin_latency_ms = 10\nmax_latency_ms = 900").unwrap_err().to_string();
        assert!(error.contains(":17:9: a link names two different hosts"), "{error}");
        let error = link("hosts = [\"mx\", \"store\"]\nmin_latency_ms = 10\nmax_latency_ms = 5").unwrap_err().to_string();
        assert!(error.contains(":19:18: max_latency_ms must be at least"), "{error}");
    }

    #[test]
    fn unknown_fields_and_bad_values_are_located() {
        let error = error_of(&MINIMAL.replace("poll_interval_s = 60", "poll_interval_s = 60\npoll_jitter = 3"));
        // toml reports an unknown key at the start of its table's body.
        assert!(error.starts_with("bad.toml:16:1: unknown field `poll_jitter`"), "{error}");
        let error = error_of(&MINIMAL.replace("\"postfix\"", "\"sendmail\""));
        assert!(error.starts_with("bad.toml:10:10: unknown policy 'sendmail'"), "{error}");
        let error = error_of(&format!("{MINIMAL}[[fault]]\nkind = \"crash\"\nhost = \"dns\"\nat_s = 10\nrestart_after_s = 5\n"));
        assert!(error.starts_with("bad.toml:18:8: unknown host 'dns'"), "{error}");
        let error = error_of(&format!("{MINIMAL}[[fault]]\nkind = \"disk-stall\"\nhost = \"store\"\nat_s = [100, 1190]\nduration_s = 60\n"));
        assert!(error.contains(":19:8: this fault must begin and end within chaos_s"), "{error}");
    }

    #[test]
    fn every_shipped_scenario_validates() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios");
        let mut count = 0;
        for suite in std::fs::read_dir(&root).unwrap() {
            for file in files_of(&suite.unwrap().path()).unwrap() {
                load(&file).unwrap_or_else(|error| panic!("{error}"));
                count += 1;
            }
        }
        assert!(count >= 20, "{count}");
    }

    #[test]
    fn values_that_could_never_drain_or_would_overflow_are_refused_where_they_stand() {
        let mx = |line: &str| error_of(&MINIMAL.replace("users = [\"anna\"]", &format!("users = [\"anna\"]\n{line}")));
        assert!(mx("max_sessions = 0").starts_with("bad.toml:8:16: max_sessions must be between 1 and 10000 (0 would refuse"), "{}", mx("max_sessions = 0"));
        assert!(mx("queue_workers = 0").starts_with("bad.toml:8:17: queue_workers must be between 1 and 16"));
        assert!(mx("retry_base_s = 0").contains(":8:16: retry_base_s must be between 1 and"));
        assert!(mx("retry_max_s = 9223372036854775807").contains(":8:15: retry_max_s must be between 10 and 2400"));
        let error = error_of(&MINIMAL.replace("users = [\"anna\"]", "users = [\"anna\", \"bob\", \"anna\"]"));
        assert!(error.starts_with("bad.toml:7:25: user 'anna' appears twice in mx.users"), "{error}");
        let error = error_of(&MINIMAL.replace("domains = [\"libero.test\"]", "domains = []"));
        assert!(error.starts_with("bad.toml:6:11: mx.domains must list 1 to 16"), "{error}");
        let error = error_of(&MINIMAL.replace("poll_interval_s = 60", "poll_interval_s = 2305843009213693952"));
        assert!(error.starts_with("bad.toml:15:19: poll_interval_s must be between 1 and 1200"), "{error}");
        let error = error_of(&MINIMAL.replace("spread_s = 600", "spread_s = 3600"));
        assert!(error.starts_with("bad.toml:15:19: no poll interval fits: two polls must fit between max(chaos_s, first_poll_s, spread_s)"), "{error}");
        let error = error_of(&MINIMAL.replace("poll_interval_s = 60", "poll_interval_s = 60\nfirst_poll_s = 99999"));
        assert!(error.starts_with("bad.toml:16:16: first_poll_s must be between 0 and 3600"), "{error}");
        let error = error_of(&MINIMAL.replace("spread_s = 600", "spread_s = 600\nmax_rcpts = 0"));
        assert!(error.starts_with("bad.toml:14:13: max_rcpts must be between 1 and 100"), "{error}");
        let error = error_of(&MINIMAL.replace("policy = \"postfix\"", "policy = \"postfix\"\ntime_scale = 0.0"));
        assert!(error.starts_with("bad.toml:11:14: time_scale must be between 0.001 and 100"), "{error}");
        let error = error_of(&format!("{MINIMAL}[network]\nmin_latency_ms = 1\nmax_latency_ms = 9223372036854775807\n"));
        assert!(error.contains(":18:18: max_latency_ms must be at least min_latency_ms and at most 600000"), "{error}");
        let crash = format!("{MINIMAL}[[fault]]\nkind = \"crash\"\nhost = \"mx\"\nat_s = 10\nrestart_after_s = 9223372036854775807\n");
        assert!(error_of(&crash).contains(":20:19: the host must restart within chaos_s"), "{}", error_of(&crash));
    }

    #[test]
    fn a_bad_range_or_date_says_what_is_accepted() {
        let error = error_of(&format!("{MINIMAL}[[fault]]\nkind = \"crash\"\nhost = \"mx\"\nat_s = \"soon\"\nrestart_after_s = 5\n"));
        assert!(error.contains("expected a non-negative integer or a [low, high] range"), "{error}");
        let error = error_of(&format!("{MINIMAL}[[fault]]\nkind = \"crash\"\nhost = \"mx\"\nat_s = [1, 2, 3]\nrestart_after_s = 5\n"));
        assert!(error.contains("a range must be [low, high]: exactly two"), "{error}");
        let error = error_of(&MINIMAL.replace("horizon_s = 3600", "horizon_s = 2023-01-23"));
        assert!(error.contains("invalid type: date-time, expected u64"), "{error}");
        let error = error_of(&MINIMAL.replace("[[provider]]\nname = \"gmail\"\npolicy = \"postfix\"\n", "").replace("[mx]", "provider = []\n[mx]"));
        assert!(error.starts_with("bad.toml:5:1: a scenario needs 1 to 8 [[provider]] tables"), "{error}");
        let long = "x".repeat(10 << 20);
        let error = error_of(&MINIMAL.replace("\"postfix\"", &format!("\"{long}\"")));
        assert!(error.len() < 400 && error.contains("… (10485760 bytes in all)"), "{}", &error[..400.min(error.len())]);
    }
}
