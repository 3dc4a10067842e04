//! The world: turmoil hosts running the stack, the fault scheduler, and the phases of a run
//! (chaos → heal → quiesce → final sweep). The only module that knows turmoil.

pub mod net;
pub mod plan;
pub mod traffic;

use devices::sim::{FaultKind as DiskFaultKind, FaultWindow, SimDisk};
use devices::profile::Profile;
use devices::dir::DirDisk;
use disk::{Device, Disk};
use crate::ledger::Ledger;
use std::path::PathBuf;
use history::{Event, History, Journal};
use crate::scenario::{provider_domain, provider_host, FaultKind, Scenario};
use crate::seed::Seed;
use stack::client::ClientConfig;
use stack::client_imap::ImapClientConfig;
use stack::mx::MxConfig;
use mail::policy::RetryPolicy;
use stack::queue::RunnerConfig;
use stack::sender::ProviderConfig;
use stack::store::StoreConfig;
use stack::{self, Defects, Env};
use plan::{Plan, PlannedFault, EPOCH_UNIX_S};
use rand::RngCore;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

/// How long the store is down while a cohort is put back from its backup.
const COHORT_RESTART_MS: u64 = 10_000;

/// The hosts whose storage the stack depends on; only these get faults and crash semantics.
pub const DISK_HOSTS: [&str; 2] = ["mx", "store"];

pub use history::RunOutput;

/// How a run is set up beyond its scenario and seed.
#[derive(Clone)]
pub struct RunOptions {
    /// The persistence profile of the MX's and the store's disks; `None`: the scenario's, or
    /// the default.
    pub profile: Option<Rc<Profile>>,
    /// Record the crash frontier at every crash and at the first hits of every fail point
    /// (see `explore`).
    pub explore: bool,
    /// Run the store's disk on this real directory (a vendor's mount) instead of SimDisk.
    pub store_dir: Option<PathBuf>,
    /// Append every acknowledged message (and every expunge, before it happens) to this ledger.
    pub ledger: Option<Rc<RefCell<Ledger>>>,
    /// End the run abruptly at this simulated second, unjudged: a power cut of the harness.
    pub stop_after_s: Option<u64>,
    /// Record every connection's traffic here (for the benchmark's floor; never the history).
    pub traffic: Option<Rc<traffic::Traffic>>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions { profile: None, explore: false, store_dir: None, ledger: None, stop_after_s: None, traffic: None }
    }
}

/// The profile a scenario names (validated when it was loaded), or the default.
pub fn profile_of(scenario: &Scenario) -> Profile {
    scenario.profile.as_ref().and_then(|name| Profile::resolve(name.get_ref()).ok()).unwrap_or_default()
}

/// Runs one scenario with one seed on the default profile. Deterministic: same inputs, same history.
pub fn run(scenario: &Scenario, seed: Seed, defects: &Defects) -> RunOutput {
    run_with(scenario, seed, defects, &RunOptions::default())
}

pub fn run_with(scenario: &Scenario, seed: Seed, defects: &Defects, options: &RunOptions) -> RunOutput {
    // fail's registry is global to the process: start every run from a clean one.
    let fail_scenario = fail::FailScenario::setup();
    let output = World::new(scenario, seed, defects, options).run();
    fail_scenario.teardown();
    output
}

/// A scheduled change to the world.
#[derive(Clone, Debug)]
enum Action {
    Note(String),
    /// The end of the chaos phase: every fault is over, the run now waits for the queues to drain.
    Heal,
    /// Fault index, hosts.
    Partition(usize, String, String),
    Repair(String, String),
    /// Fault index (None for a crash that a fail point triggered), host.
    Crash(Option<usize>, String),
    Restart(String),
    /// Fault index, fail point.
    ArmPoint(usize, String),
    /// Fault index, from, to.
    PartitionOneway(usize, String, String),
    RepairOneway(String, String),
    /// Fault index: watch for the fault's stage and freeze the link when it comes.
    ArmCut(usize),
    Release(String, String),
    /// Fault index, host; and the end of it.
    DnsDown(usize, String),
    DnsUp(String),
    /// Fault index, host: its SMTP port refuses connections; and the end of it.
    ClosePort(usize, String),
    OpenPort(String),
    /// Fault index: the storage goes down and the operator answers as planned; and the end.
    OutageBegins(usize),
    OutageEnds,
    /// Fault index, host: the storage controller fails over.
    Failover(usize, String),
    /// Fault index, host: the backup is taken; later restored (the host crashes, the disk
    /// returns to the backup, the operator tells the store it was restored).
    Snapshot(String),
    Rollback(usize, String),
    /// A staged restore: every cohort's mailboxes go offline; cohort index: it comes back.
    CohortsOffline,
    CohortBack(usize),
}

struct World<'a> {
    scenario: &'a Scenario,
    sim: turmoil::Sim<'a>,
    history: Rc<RefCell<History>>,
    now_ms: Rc<Cell<u64>>,
    disks: BTreeMap<String, Rc<SimDisk>>,
    world_journal: Journal,
    /// (time, order, action), executed in time order.
    schedule: Vec<(u64, usize, Action)>,
    plan: Plan,
    /// Per armed fail point: its fault index and the restart delay of the crash it triggers.
    armed_points: BTreeMap<String, (usize, u64)>,
    /// How often each planned fault fired, for crashes and partitions (disk faults count in the disk).
    fired: Vec<u64>,
    net_faults: Rc<net::NetFaults>,
    operator: Rc<Cell<stack::mx::OperatorMode>>,
    /// Cuts waiting for their stage: fault indices.
    armed_cuts: Vec<usize>,
    /// Which provider host sent each message (to aim cuts at one provider's sessions).
    provider_of_msg: BTreeMap<String, String>,
    /// The operator's notice to the store that its storage was restored from a backup.
    restored: Rc<Cell<bool>>,
    /// The operator's notices to the store of a staged restore (offline and restored mailboxes).
    cohorts: Rc<stack::store::CohortNotices>,
    /// The staged restore's cohorts, resolved against the users.
    cohort_plan: Vec<crate::scenario::ResolvedCohort>,
    /// The store's real directory, when the run uses one.
    store_dir: Option<Rc<DirDisk>>,
    /// Why the run cannot go on (a real directory that cannot be opened, a ledger that fails).
    setup_failure: Rc<RefCell<Option<String>>>,
    stop_after_ms: Option<u64>,
    traffic: Option<Rc<traffic::Traffic>>,
}

impl<'a> World<'a> {
    fn new(scenario: &'a Scenario, seed: Seed, defects: &Defects, options: &RunOptions) -> World<'a> {
        let plan = plan::make(scenario, seed);
        let planned_messages: usize = plan.workload.iter().map(Vec::len).sum();
        // Room for a clean run's records from the start (fewer than 70 a message: see
        // EVENTS_PER_MESSAGE): growing a vector of a million records copies it, and for that
        // moment the old and the new both count in the peak memory. Pages not yet written are
        // not resident, so the room costs nothing until used.
        let records: Vec<history::Record> = Vec::with_capacity(planned_messages.saturating_mul(80).min(history::events_allowed(planned_messages)));
        let history = Rc::new(RefCell::new(History { records, max_events: Some(history::events_allowed(planned_messages)), ..History::default() }));
        let now_ms = Rc::new(Cell::new(0u64));
        let clock: history::Clock = {
            let now_ms = now_ms.clone();
            // Inside a host turmoil knows the time within the tick; outside, the world's step time.
            Rc::new(move || turmoil::sim_elapsed().map(|elapsed| elapsed.as_millis() as u64).unwrap_or(now_ms.get()))
        };
        let journal_of = |host: &str| Journal::new(history.clone(), host, clock.clone());
        let sim = build_sim(scenario, seed);
        let mut disks = BTreeMap::new();
        let profile = options.profile.clone().unwrap_or_else(|| Rc::new(profile_of(scenario)));
        // The hosts on the vendor's array share one (its hidden limit, its stall); without a
        // vendor_array every disk host has a disk of the profile of its own.
        let array = scenario.vendor_array.as_ref().map(|hosts| (hosts.get_ref().clone(), Rc::new(devices::sim::Array::default())));
        for host in scenario.hosts() {
            let rng = seed.stream(&format!("disk/{host}"));
            let disk = if DISK_HOSTS.contains(&host.as_str()) {
                let on_array = array.as_ref().is_none_or(|(hosts, _)| hosts.contains(&host));
                let host_profile = if on_array { profile.clone() } else { Rc::new(Profile::default()) };
                let disk = SimDisk::new(journal_of(&host), host_profile, disk_windows(&plan.faults, &host), rng);
                if let Some((hosts, shared)) = &array {
                    if hosts.contains(&host) {
                        disk.join_array(shared.clone());
                    }
                }
                disk
            } else {
                SimDisk::new(journal_of(&host), Rc::new(Profile::default()), Vec::new(), rng)
            };
            disks.insert(host.clone(), Rc::new(disk));
        }
        let world_journal = journal_of("world");
        let fired = vec![0; plan.faults.len()];
        let mut provider_of_msg = BTreeMap::new();
        for (provider, messages) in scenario.providers.iter().zip(&plan.workload) {
            for planned in messages {
                provider_of_msg.insert(planned.msg.to_string(), provider_host(provider.name.get_ref()));
            }
        }
        let setup_failure = Rc::new(RefCell::new(None));
        let store_dir = match &options.store_dir {
            Some(dir) => match DirDisk::new(dir, journal_of("store")) {
                Ok(disk) => Some(Rc::new(disk)),
                Err(error) => {
                    *setup_failure.borrow_mut() = Some(format!("{}: cannot use as the store's directory: {error}", dir.display()));
                    None
                }
            },
            None => None,
        };
        if let Some(ledger) = &options.ledger {
            history.borrow_mut().observer = Some(crate::ledger::observer(ledger.clone(), setup_failure.clone()));
        }
        if options.explore {
            let explored = DISK_HOSTS.iter().map(|host| (host.to_string(), disks[*host].clone())).collect();
            crate::explore::install(explored, history.clone());
        }
        let stop_after_ms = options.stop_after_s.map(|s| s * 1000);
        if let Some(traffic) = &options.traffic {
            traffic.start(clock.clone());
        }
        let mut world = World { traffic: options.traffic.clone(), store_dir, setup_failure, stop_after_ms, restored: Rc::new(Cell::new(false)), cohorts: Rc::default(), cohort_plan: scenario.cohorts(), scenario, sim, history: history.clone(), now_ms, disks, world_journal, schedule: Vec::new(), plan, armed_points: BTreeMap::new(), fired, net_faults: Rc::default(), operator: Rc::new(Cell::new(stack::mx::OperatorMode::Normal)), armed_cuts: Vec::new(), provider_of_msg };
        world.schedule_faults();
        world.install_hosts(defects, &journal_of);
        for link in &scenario.links {
            let (a, b) = (link.hosts.get_ref()[0].as_str(), link.hosts.get_ref()[1].as_str());
            world.sim.set_link_latency(a, b, Duration::from_millis(link.min_latency_ms));
            world.sim.set_link_max_message_latency(a, b, Duration::from_millis(*link.max_latency_ms.get_ref()));
        }
        world
    }

    fn env(&self, host: &str, defects: &Defects, journal: Journal) -> Env {
        let disk: Rc<dyn Device> = match (&self.store_dir, host) {
            (Some(real), "store") => real.clone(),
            _ => self.disks.get(host).cloned().expect("every host has a disk"),
        };
        // The wire of the stack under test is recorded; the peers (providers, clients) record
        // what they did themselves.
        let tapped = host == "mx" || host == "store";
        let net = net::SimNet { host: host.to_string(), faults: self.net_faults.clone(), journal: journal.clone(), tapped, traffic: self.traffic.clone() };
        Env { journal, disk: Disk::new(disk), net: Rc::new(net), defects: defects.clone() }
    }

    fn install_hosts(&mut self, defects: &Defects, journal_of: &dyn Fn(&str) -> Journal) {
        let scenario = self.scenario;
        let users: BTreeSet<String> = scenario.mx.users.get_ref().iter().cloned().collect();
        let mx_env = self.env("mx", defects, journal_of("mx"));
        let mx_config = MxConfig {
            operator: self.operator.clone(),
            hostname: "mx.libero.test".into(),
            domains: scenario.mx.domains.clone(),
            users: users.clone(),
            // The first mailbox of the scenario is the admin's: postmaster is its alias.
            postmaster: scenario.mx.users.get_ref().first().cloned().unwrap_or_default(),
            epoch_unix_s: EPOCH_UNIX_S,
            max_message_bytes: scenario.mx.max_message_bytes,
            max_recipients: scenario.mx.max_recipients,
            idle_timeout: Duration::from_secs(300),
            command_total_timeout: None,
            data_total_timeout: None,
            // The simulation's peers send no garbage; its digests predate the bound.
            max_command_errors: None,
            stress_waits: None,
            max_sessions: scenario.mx.max_sessions,
            max_sessions_per_client: scenario.mx.max_sessions_per_client.max(1),
            max_queue_files: scenario.mx.max_queue_files.max(1),
            tarpit: Duration::from_millis(scenario.mx.tarpit_ms),
            runner: RunnerConfig {
                store_host: "store".into(),
                hostname: "mx.libero.test".into(),
                scan_interval: Duration::from_secs(5),
                retry_base: Duration::from_secs(scenario.mx.retry_base_s),
                retry_max: Duration::from_secs(scenario.mx.retry_max_s),
                workers: scenario.mx.queue_workers.clamp(1, 16),
                // The providers' receiving MXs, which take the DSNs the MX returns.
                routes: scenario.providers.iter().map(|provider| (provider_domain(provider.name.get_ref()), provider_host(provider.name.get_ref()))).collect(),
                epoch_unix_s: EPOCH_UNIX_S,
            },
        };
        self.sim.host("mx", move || stack::mx::run(mx_env.clone(), mx_config.clone()).map_ok());

        let store_env = self.env("store", defects, journal_of("store"));
        let store_config = StoreConfig {
            hostname: "store.libero.test".into(),
            domains: scenario.mx.domains.clone(),
            users: users.clone(),
            max_message_bytes: scenario.mx.max_message_bytes + 4096,
            idle_timeout: Duration::from_secs(600),
            command_total_timeout: None,
            login_timeout: None,
            login_failure_delay: Duration::ZERO,
            max_login_failures: None,
            pop3_max_sessions: scenario.clients.pop3_max_sessions.max(1),
            // One bound for both protocols: a mailbox has one client, of one kind.
            imap_max_sessions: scenario.clients.pop3_max_sessions.max(1),
            restored: self.restored.clone(),
            cohorts: self.cohorts.clone(),
            mark_read_on_retr: scenario.clients.mark_read,
            record_served: false,
        };
        self.sim.host("store", move || stack::store_host::run(store_env.clone(), store_config.clone()).map_ok());

        for (provider, planned) in scenario.providers.iter().zip(self.plan.workload.clone()) {
            let name = provider.name.get_ref();
            let host = provider_host(name);
            let env = self.env(&host, defects, journal_of(&host));
            let policy = RetryPolicy::built_in(provider.policy.get_ref(), provider.time_scale).expect("validated policy");
            let config = ProviderConfig {
                hostname: format!("mta.{}", provider_domain(name)),
                domain: provider_domain(name),
                mx_host: "mx".into(),
                policy,
                time_scale: provider.time_scale,
                max_connections: provider.max_connections.clamp(1, 1000),
                chunking: provider.chunking,
                epoch_unix_s: EPOCH_UNIX_S,
                plan: planned,
            };
            self.sim.host(host.as_str(), move || stack::sender::run(env.clone(), config.clone()).map_ok());
        }

        let plans = scenario.clients.plans(scenario.mx.users.get_ref());
        let pop3_config = |plan: &crate::scenario::ClientPlan| ClientConfig {
            store_host: "store".into(),
            user: plan.user.clone(),
            password: stack::pop3::password_of(&plan.user),
            first_poll: plan.first_poll,
            poll_interval: plan.poll_interval,
            delete_after_fetch: plan.delete_after_fetch,
        };
        let clients_env = self.env("clients", defects, journal_of("clients"));
        let client_configs: Vec<ClientConfig> = plans.iter().filter(|plan| plan.host == "clients").map(pop3_config).collect();
        self.sim.host("clients", move || {
            let (env, configs) = (clients_env.clone(), client_configs.clone());
            async move {
                for config in configs {
                    tokio::task::spawn_local(stack::client::run(env.clone(), config));
                }
                std::future::pending::<()>().await;
                Ok(())
            }
        });
        for kind in &scenario.clients.types {
            let host = kind.host();
            let env = self.env(&host, defects, journal_of(&host));
            let mine: Vec<&crate::scenario::ClientPlan> = plans.iter().filter(|plan| plan.host == host).collect();
            let pop3: Vec<ClientConfig> = mine.iter().filter(|plan| plan.protocol == "pop3").map(|plan| pop3_config(plan)).collect();
            let imap: Vec<ImapClientConfig> = mine.iter().filter(|plan| plan.protocol != "pop3").map(|plan| ImapClientConfig::of(pop3_config(plan), plan.protocol == "imap")).collect();
            self.sim.host(host.as_str(), move || {
                let (env, pop3, imap) = (env.clone(), pop3.clone(), imap.clone());
                async move {
                    for config in pop3 {
                        tokio::task::spawn_local(stack::client::run(env.clone(), config));
                    }
                    for config in imap {
                        tokio::task::spawn_local(stack::client_imap::run(env.clone(), config));
                    }
                    std::future::pending::<()>().await;
                    Ok(())
                }
            });
        }
    }

    fn at(&mut self, t_ms: u64, action: Action) {
        let order = self.schedule.len();
        self.schedule.push((t_ms, order, action));
    }

    fn schedule_faults(&mut self) {
        for (index, fault) in self.plan.faults.clone().into_iter().enumerate() {
            let description = fault.describe();
            let hosts = fault.hosts.clone();
            match fault.kind {
                kind if kind.is_storage() => {
                    self.at(fault.start_ms, Action::Note(format!("begin {description}")));
                    self.at(fault.end_ms, Action::Note(format!("end {description}")));
                }
                FaultKind::Failover => self.at(fault.start_ms, Action::Failover(index, hosts[0].clone())),
                FaultKind::Rollback => {
                    self.at(fault.snapshot_ms.unwrap_or(0), Action::Snapshot(hosts[0].clone()));
                    self.at(fault.start_ms, Action::Rollback(index, hosts[0].clone()));
                    self.at(fault.end_ms, Action::Restart(hosts[0].clone()));
                }
                FaultKind::Partition => {
                    self.at(fault.start_ms, Action::Partition(index, hosts[0].clone(), hosts[1].clone()));
                    self.at(fault.end_ms, Action::Repair(hosts[0].clone(), hosts[1].clone()));
                }
                FaultKind::PartitionOneway => {
                    self.at(fault.start_ms, Action::PartitionOneway(index, hosts[0].clone(), hosts[1].clone()));
                    self.at(fault.end_ms, Action::RepairOneway(hosts[0].clone(), hosts[1].clone()));
                }
                FaultKind::Cut => self.at(fault.start_ms, Action::ArmCut(index)),
                FaultKind::Outage => {
                    self.at(fault.start_ms, Action::OutageBegins(index));
                    self.at(fault.end_ms, Action::OutageEnds);
                }
                FaultKind::DnsFailure => {
                    self.at(fault.start_ms, Action::DnsDown(index, hosts[0].clone()));
                    self.at(fault.end_ms, Action::DnsUp(hosts[0].clone()));
                }
                FaultKind::PortClosed => {
                    self.at(fault.start_ms, Action::ClosePort(index, hosts[0].clone()));
                    self.at(fault.end_ms, Action::OpenPort(hosts[0].clone()));
                }
                FaultKind::Crash => match &fault.point {
                    Some(point) => self.at(fault.start_ms, Action::ArmPoint(index, point.clone())),
                    None => {
                        self.at(fault.start_ms, Action::Crash(Some(index), hosts[0].clone()));
                        self.at(fault.end_ms, Action::Restart(hosts[0].clone()));
                    }
                },
                _ => {} // every storage fault is a window of the disk, scheduled above
            }
        }
        if let Some(restore) = &self.scenario.restore {
            self.at(*restore.offline_at_s.get_ref() * 1000, Action::CohortsOffline);
            // One backup serves every cohort restored from one (validation keeps them to one).
            if let Some(backup_s) = self.cohort_plan.iter().find_map(|cohort| cohort.from_backup_at_s) {
                self.at(backup_s * 1000, Action::Snapshot("store".into()));
            }
            for (index, cohort) in self.cohort_plan.clone().iter().enumerate() {
                self.at(cohort.at_s * 1000, Action::CohortBack(index));
                if cohort.from_backup_at_s.is_some() {
                    self.at(cohort.at_s * 1000 + COHORT_RESTART_MS, Action::Restart("store".into()));
                }
            }
        }
        self.at(*self.scenario.chaos_s.get_ref() * 1000, Action::Heal);
        self.schedule.sort_by_key(|(t_ms, order, _)| (*t_ms, *order));
        self.schedule.reverse(); // pop() takes the earliest
    }

    fn apply(&mut self, action: Action) {
        let note = |world: &World, text: String| world.world_journal.record(Event::Fault { action: text.into() });
        match action {
            Action::Note(text) => note(self, text),
            Action::Heal => {
                self.world_journal.record(Event::Phase { name: "heal".into() });
                self.world_journal.record(Event::Phase { name: "quiesce".into() });
            }
            Action::Partition(index, a, b) => {
                note(self, format!("partition {a} {b}"));
                self.fired[index] += 1;
                self.sim.partition(a.as_str(), b.as_str());
            }
            Action::Repair(a, b) => {
                note(self, format!("repair {a} {b}"));
                self.sim.repair(a.as_str(), b.as_str());
            }
            Action::Crash(index, host) => {
                if let Some(index) = index {
                    self.fired[index] += 1;
                }
                self.crash(&host);
            }
            Action::Restart(host) => {
                self.disks[&host].journal_restart();
                // A host still running is torn down first: its dropped streams are not closes.
                self.net_faults.teardown.set(true);
                self.sim.bounce(host.as_str());
                self.net_faults.teardown.set(false);
            }
            Action::PartitionOneway(index, from, to) => {
                note(self, format!("partition-oneway {from} -> {to}"));
                self.fired[index] += 1;
                self.sim.partition_oneway(from.as_str(), to.as_str());
            }
            Action::RepairOneway(from, to) => {
                note(self, format!("repair-oneway {from} -> {to}"));
                self.sim.repair_oneway(from.as_str(), to.as_str());
            }
            Action::ArmCut(index) => {
                note(self, format!("arm {}", self.plan.faults[index].describe()));
                self.armed_cuts.push(index);
            }
            Action::Release(a, b) => {
                note(self, format!("release {a} {b}"));
                self.sim.release(a.as_str(), b.as_str());
            }
            Action::DnsDown(index, host) => {
                note(self, format!("dns-failure begins for {host}"));
                self.fired[index] += 1;
                self.net_faults.dns_down.borrow_mut().insert(host);
            }
            Action::DnsUp(host) => {
                note(self, format!("dns-failure ends for {host}"));
                self.net_faults.dns_down.borrow_mut().remove(&host);
            }
            Action::ClosePort(index, host) => {
                note(self, format!("port {} of {host} closed", stack::SMTP_PORT));
                self.fired[index] += 1;
                self.net_faults.closed.borrow_mut().insert((host, stack::SMTP_PORT, net::Closer::Fault));
            }
            Action::OpenPort(host) => {
                note(self, format!("port {} of {host} open again", stack::SMTP_PORT));
                self.net_faults.closed.borrow_mut().remove(&(host, stack::SMTP_PORT, net::Closer::Fault));
            }
            Action::OutageBegins(index) => {
                self.fired[index] += 1;
                self.world_journal.record(Event::Outage { down: true });
                let answer = self.plan.faults[index].answer.clone().unwrap_or_default();
                self.set_operator(&answer);
            }
            Action::OutageEnds => {
                self.world_journal.record(Event::Outage { down: false });
                self.set_operator("normal");
            }
            Action::Failover(index, host) => {
                note(self, format!("failover of {host}'s storage controller"));
                self.fired[index] += 1;
                self.disks[&host].failover();
            }
            Action::Snapshot(host) => {
                note(self, format!("backup of {host}'s storage taken"));
                self.disks[&host].snapshot();
            }
            Action::Rollback(index, host) => {
                note(self, format!("{host} restored from its backup"));
                self.fired[index] += 1;
                self.crash(&host);
                self.disks[&host].rollback("");
                self.restored.set(true);
            }
            Action::CohortsOffline => {
                for (index, cohort) in self.cohort_plan.iter().enumerate() {
                    self.world_journal.record(Event::Cohort { cohort: index as u32 + 1, online: false, from_backup: false, mailboxes: cohort.mailboxes.clone() });
                    self.cohorts.offline.borrow_mut().extend(cohort.mailboxes.iter().cloned());
                }
            }
            Action::CohortBack(index) => {
                let cohort = self.cohort_plan[index].clone();
                let from_backup = cohort.from_backup_at_s.is_some();
                self.world_journal.record(Event::Cohort { cohort: index as u32 + 1, online: true, from_backup, mailboxes: cohort.mailboxes.clone() });
                if from_backup {
                    // The operator stops the store, puts the cohort's mailboxes back from the
                    // backup, tells the store which, and starts it again.
                    note(self, format!("store restored from its backup (cohort {})", index + 1));
                    self.crash("store");
                    for user in &cohort.mailboxes {
                        self.disks["store"].rollback(&format!("{}/", stack::store::mailbox_dir(user)));
                    }
                    self.cohorts.restored.borrow_mut().extend(cohort.mailboxes.iter().cloned());
                }
                let mut offline = self.cohorts.offline.borrow_mut();
                for user in &cohort.mailboxes {
                    offline.remove(user);
                }
            }
            Action::ArmPoint(index, point) => {
                note(self, format!("arm fail point {point}"));
                let fault = &self.plan.faults[index];
                self.armed_points.insert(point.clone(), (index, fault.end_ms - fault.start_ms));
                // Deterministic: fire on the first hit only. Never a p% action (unseeded RNG).
                let _ = fail::cfg(point.as_str(), "1*return");
            }
        }
    }

    /// Kills the host's software and loses what its disk had not made durable.
    fn crash(&mut self, host: &str) {
        crate::explore::capture(host, &format!("crash of {host}"));
        self.net_faults.teardown.set(true);
        self.sim.crash(host);
        self.net_faults.teardown.set(false);
        self.disks[host].crash();
        self.disks[host].journal_crash();
    }

    fn run(mut self) -> RunOutput {
        let horizon_ms = *self.scenario.horizon_s.get_ref() * 1000;
        let tick_ms = *self.scenario.tick_ms.get_ref();
        let chaos_end_ms = *self.scenario.chaos_s.get_ref() * 1000;
        // Validation bounds the poll interval by the horizon; saturation keeps an unvalidated one from wrapping.
        let sweep_ms = self.scenario.clients.longest_poll_s().saturating_mul(2000).saturating_add(10_000);
        let deleting = self.scenario.clients.deleting(self.scenario.mx.users.get_ref());
        let mut drain = Drain::new(self.plan.workload.iter().map(Vec::len).sum(), deleting);
        let mut scanned = 0usize;
        let mut drained_at_ms = None;
        let mut end_ms = horizon_ms;
        let mut aborted = None;
        self.world_journal.record(Event::Clock { tick_ms, epoch_unix_s: plan::EPOCH_UNIX_S });
        self.world_journal.record(Event::Phase { name: "chaos".into() });
        while self.now_ms.get() < end_ms {
            let now_ms = self.now_ms.get();
            if let Some(failure) = self.setup_failure.borrow().clone() {
                aborted = Some(failure);
                break;
            }
            if self.stop_after_ms.is_some_and(|stop_ms| now_ms >= stop_ms) {
                aborted = Some(format!("stopped at {}s as asked (a simulated power cut): not judged", now_ms / 1000));
                break;
            }
            while self.schedule.last().is_some_and(|(t_ms, _, _)| *t_ms <= now_ms) {
                let (_, _, action) = self.schedule.pop().expect("checked above");
                self.apply(action);
            }
            if let Err(error) = self.sim.step() {
                // A host's software returned an error: the run cannot be judged as complete.
                let reason = format!("simulation stopped: {error}");
                self.world_journal.record(Event::Phase { name: "aborted".into() });
                aborted = Some(reason);
                break;
            }
            self.now_ms.set(self.sim.elapsed().as_millis() as u64);
            scanned = self.react(scanned, &mut drain);
            if drained_at_ms.is_none() && self.now_ms.get() >= chaos_end_ms && self.schedule.is_empty() && drain.is_drained() {
                drained_at_ms = Some(self.now_ms.get());
                end_ms = self.now_ms.get().saturating_add(sweep_ms).min(horizon_ms);
                self.world_journal.record(Event::Phase { name: "final-sweep".into() });
            }
            // The final sweep lasts at least two polls, and until every client has caught up.
            if drained_at_ms.is_some() && self.now_ms.get() + tick_ms >= end_ms && !drain.clients_caught_up() {
                end_ms = (end_ms + tick_ms).min(horizon_ms);
            }
            if self.history.borrow().overflowed {
                break;
            }
        }
        self.world_journal.record(Event::Phase { name: if drained_at_ms.is_some() { "end".into() } else { "horizon".into() } });
        let waiting_for = drained_at_ms.is_none().then(|| drain.waiting_for());
        self.finish(drained_at_ms, aborted, waiting_for)
    }

    /// Reads the events since `scanned`: crashes at fail points, and drain bookkeeping.
    fn react(&mut self, scanned: usize, drain: &mut Drain) -> usize {
        // Only the records something here reacts to are copied out of the history (a copy of
        // every record was a tenth of a large run).
        let cuts_armed = !self.armed_cuts.is_empty();
        let (records, scanned_to): (Vec<(u64, std::sync::Arc<str>, Event)>, usize) = {
            let history = self.history.borrow();
            let new = history.records[scanned..].iter().zip(scanned as u64 + 1..);
            let wanted = new.filter(|(record, _)| reacts_to(&record.event, cuts_armed));
            (wanted.map(|(record, number)| (number, record.host.clone(), record.event.clone())).collect(), history.records.len())
        };
        for (number, host, event) in &records {
            if let Event::CrashPoint { point } = event {
                let (index, restart_ms) = self.armed_points.get(point.as_str()).copied().unwrap_or((usize::MAX, 60_000));
                if let Some(fired) = self.fired.get_mut(index) {
                    *fired += 1;
                }
                self.crash(host);
                self.at_sorted(self.now_ms.get() + restart_ms, Action::Restart(host.to_string()));
            }
            self.maybe_cut(host, event);
            drain.observe(*number, event);
            // After a restart, or a failover that dropped what the device had promised: a queue
            // file gone from the disk will never be finished (found by swarm: a run idling to
            // its horizon after a failover lost an acknowledged queue file).
            let failover = matches!(event, Event::DiskFault { fault, .. } if fault == "failover") && &**host == "mx";
            if matches!(event, Event::QueueRecovered { .. }) || failover {
                let queue = stack::queue::QUEUE_DIR;
                let present = self.disks.get(&**host).and_then(|disk| disk.list(queue).ok()).unwrap_or_default();
                drain.forget_missing_queue_files(&present.into_iter().map(|name| format!("{queue}/{name}")).collect());
            }
        }
        scanned_to
    }

    /// The operator turns the MX's control (or closes its port) to answer as `mode` says.
    fn set_operator(&mut self, mode: &str) {
        use stack::mx::OperatorMode;
        self.world_journal.record(Event::Operator { mode: mode.into() });
        self.operator.set(match mode {
            "4xx-tempfail" => OperatorMode::TempFail,
            "5xx-bounce" => OperatorMode::Bounce,
            _ => OperatorMode::Normal,
        });
        let port = ("mx".to_string(), stack::SMTP_PORT, net::Closer::Operator);
        if mode == "closed-port" {
            self.net_faults.closed.borrow_mut().insert(port);
        } else {
            self.net_faults.closed.borrow_mut().remove(&port);
        }
    }

    /// Freezes a link when an armed cut's stage has just happened on it.
    fn maybe_cut(&mut self, host: &str, event: &Event) {
        let Some(position) = self.armed_cuts.iter().position(|&index| self.cut_matches(index, host, event)) else { return };
        let index = self.armed_cuts.remove(position);
        let fault = self.plan.faults[index].clone();
        let (a, b) = (fault.hosts[0].clone(), fault.hosts[1].clone());
        self.fired[index] += 1;
        self.world_journal.record(Event::Fault { action: format!("cut {a} {b} after stage {}", fault.stage.clone().unwrap_or_default()).into() });
        self.sim.hold(a.as_str(), b.as_str());
        self.at_sorted(self.now_ms.get() + (fault.end_ms - fault.start_ms), Action::Release(a, b));
    }

    fn cut_matches(&self, index: usize, host: &str, event: &Event) -> bool {
        let fault = &self.plan.faults[index];
        let stage = fault.stage.as_deref().unwrap_or("");
        let provider = fault.hosts[0].as_str();
        let from_provider = |msg: &str| self.provider_of_msg.get(msg).is_some_and(|p| p == provider);
        match (provider, stage, event) {
            ("mx", "data-end", Event::StoreDelivered(_)) => host == "store",
            (_, "data-end", Event::MxDataEnd(end)) => host == "mx" && end.reply.starts_with('2') && from_provider(&end.msg),
            (_, _, Event::SmtpReply { stage: seen, .. }) => host == provider && stage_name(*seen) == stage,
            _ => false,
        }
    }

    fn at_sorted(&mut self, t_ms: u64, action: Action) {
        self.at(t_ms, action);
        self.schedule.sort_by_key(|(t_ms, order, _)| std::cmp::Reverse((*t_ms, *order)));
    }

    fn finish(self, drained_at_ms: Option<u64>, aborted: Option<String>, waiting_for: Option<String>) -> RunOutput {
        let mut faults = Vec::new();
        for (index, fault) in self.plan.faults.iter().enumerate() {
            let fired = match fault.kind {
                kind if kind.is_storage() => {
                    let disk = &self.disks[&fault.hosts[0]];
                    let windows_before = self.plan.faults[..index].iter().filter(|f| is_disk_fault(f) && f.hosts[0] == fault.hosts[0]).count();
                    disk.fired_counts().get(windows_before).copied().unwrap_or(0)
                }
                _ => self.fired[index],
            };
            faults.push((fault.describe(), fired));
        }
        let image_of = |host: &str| match (&self.store_dir, host) {
            (Some(real), "store") => real.image().into_iter().map(|(path, bytes)| (path, Rc::new(bytes))).collect(),
            _ => self.disks[host].durable_image(),
        };
        let images = DISK_HOSTS.iter().map(|host| (host.to_string(), image_of(host))).collect();
        let ended_at_ms = self.now_ms.get();
        self.net_faults.teardown.set(true);
        drop(self.sim);
        let history = std::mem::take(&mut *self.history.borrow_mut());
        let environment_failure = self.setup_failure.borrow().clone();
        RunOutput { history, images, faults, drained_at_ms, waiting_for, ended_at_ms, aborted, environment_failure, live: false, black_box: false }
    }
}

/// Whether `World::react` (crashes at fail points, cuts, the drain's bookkeeping) may need a
/// record. A list of what it never needs, the kinds most frequent in a large run, so that a new
/// kind of event is copied by default: leaving out one the drain reads would change the run.
fn reacts_to(event: &Event, cuts_armed: bool) -> bool {
    match event {
        Event::SmtpReply { .. } => cuts_armed,
        Event::WireOpen { .. } | Event::WireCommand { .. } | Event::WireReply { .. } | Event::WireClosed { .. } => false,
        Event::DiskWrite { .. } | Event::DiskSync { .. } | Event::DiskDirSync { .. } | Event::DiskRename { .. } | Event::DiskRemove { .. } => false,
        Event::SmtpAttempt { .. } | Event::SmtpFailure { .. } | Event::MxRefusal { .. } => false,
        Event::LmtpAttempt { .. } | Event::LmtpReply { .. } | Event::StoreRefusal { .. } | Event::ClientListing { .. } => false,
        _ => true,
    }
}

fn stage_name(stage: history::Stage) -> &'static str {
    use history::Stage;
    match stage {
        Stage::Connect => "connect",
        Stage::Greeting => "greeting",
        Stage::Ehlo => "ehlo",
        Stage::Mail => "mail",
        Stage::Rcpt => "rcpt",
        Stage::Data => "data",
        Stage::DataEnd => "data-end",
        Stage::Quit => "quit",
        Stage::Other => "other",
    }
}

/// The faults that become a window of the host's disk.
fn is_disk_fault(fault: &PlannedFault) -> bool {
    fault.kind.is_storage() || fault.kind == FaultKind::Outage
}

fn disk_windows(faults: &[PlannedFault], host: &str) -> Vec<FaultWindow> {
    faults
        .iter()
        .filter(|fault| is_disk_fault(fault) && fault.hosts[0] == host)
        .map(|fault| FaultWindow {
            kind: match fault.kind {
                FaultKind::DiskEio => DiskFaultKind::Eio,
                FaultKind::DiskFull => DiskFaultKind::Full { max_bytes: fault.bytes.unwrap_or(0), max_files: fault.files.unwrap_or(0) },
                FaultKind::FsyncFail => DiskFaultKind::FsyncFail,
                FaultKind::LyingFsync => DiskFaultKind::LyingFsync,
                FaultKind::LostWrite => DiskFaultKind::LostWrite,
                FaultKind::TornWrite => DiskFaultKind::TornWrite,
                FaultKind::MisdirectedWrite => DiskFaultKind::MisdirectedWrite,
                FaultKind::BitRot => DiskFaultKind::BitRot,
                FaultKind::ReadOnly => DiskFaultKind::ReadOnly,
                FaultKind::DirentLoss => DiskFaultKind::DirentLoss,
                FaultKind::LatencySpike => DiskFaultKind::Latency { ms: fault.latency_ms.unwrap_or(0) },
                _ => DiskFaultKind::Stall,
            },
            start_ms: fault.start_ms,
            end_ms: fault.end_ms,
            path_prefix: fault.path_prefix.clone(),
            ops: fault.ops.clone(),
            nth: fault.nth,
        })
        .collect()
}

pub(crate) fn build_sim<'a>(scenario: &Scenario, seed: Seed) -> turmoil::Sim<'a> {
    let horizon = Duration::from_secs(*scenario.horizon_s.get_ref());
    turmoil::Builder::new()
        .simulation_duration(horizon * 2 + Duration::from_secs(60))
        .tick_duration(Duration::from_millis(*scenario.tick_ms.get_ref()))
        .min_message_latency(Duration::from_millis(scenario.network.min_latency_ms))
        .max_message_latency(Duration::from_millis(*scenario.network.max_latency_ms.get_ref()))
        .epoch(UNIX_EPOCH + Duration::from_secs(EPOCH_UNIX_S))
        .rng_seed(seed.stream("turmoil").next_u64())
        .tcp_capacity(4096)
        .build()
}

/// When the run may end: every planned message submitted and settled at the sender, every queue
/// file the MX acknowledged finished, and (for the final sweep) every delivered message fetched
/// by its mailbox's client. Bookkeeping only, from the history; it judges nothing.
struct Drain {
    planned_messages: usize,
    submitted: usize,
    sender_open: usize,
    /// Queue files the MX acknowledged and has not finished.
    mx_open: BTreeSet<String>,
    /// Queue files finished (or set aside): an acknowledgement logged after its file was done
    /// (a log that lags the wire) opens nothing to wait for.
    mx_finished: BTreeSet<String>,
    /// (mailbox, msg) delivered and not yet downloaded by the mailbox's client, with the
    /// observation number of its latest delivery. Keyed by message, not UIDL: the UIDL's
    /// spelling is the store's business, and a restore gives the same message a new one.
    unfetched: BTreeMap<(String, String), u64>,
    /// (mailbox, uid) → msg: which message a damaged file held.
    msg_of_uid: BTreeMap<(String, u64), String>,
    /// Events observed so far, and the number at the latest backup of the store.
    observed: u64,
    backup_at: Option<u64>,
    /// Mailboxes whose client deletes what it fetched, and those whose client has fetched and
    /// not yet told (`ClientDeleted`, or a failure) how its QUIT went: the run must not end
    /// between the server's expunge and the client's record of it (swarm found a run cut there:
    /// a false A15 for a message its owner had deleted).
    deleting: BTreeSet<String>,
    deletes_in_flight: BTreeSet<String>,
}

impl Drain {
    fn new(planned_messages: usize, deleting: BTreeSet<String>) -> Drain {
        Drain {
            planned_messages,
            submitted: 0,
            sender_open: 0,
            mx_open: BTreeSet::new(),
            mx_finished: BTreeSet::new(),
            unfetched: BTreeMap::new(),
            msg_of_uid: BTreeMap::new(),
            observed: 0,
            backup_at: None,
            deleting,
            deletes_in_flight: BTreeSet::new(),
        }
    }

    /// `number`: the record's place in the history, counted from 1.
    fn observe(&mut self, number: u64, event: &Event) {
        self.observed = number;
        match event {
            Event::Submit(submit) => {
                self.submitted += 1;
                self.sender_open += submit.rcpts.len();
            }
            Event::SenderOutcome { .. } => self.sender_open = self.sender_open.saturating_sub(1),
            Event::MxDataEnd(end) if end.reply.starts_with('2') && end.queue_file.as_ref().is_some_and(|file| !self.mx_finished.contains(file.as_str())) => {
                self.mx_open.extend(end.queue_file.as_ref().map(|file| file.to_string()));
            }
            // Finished; or damaged, set aside and reported: nothing more will come of it.
            Event::QueueRecorded { queue_file, remaining, .. } if remaining.is_empty() => self.finish(queue_file),
            Event::QueueDamaged { queue_file, .. } => self.finish(queue_file),
            Event::StoreDelivered(stored) => {
                let history::Stored { mailbox, msg, uid, .. } = &**stored;
                self.unfetched.insert((mailbox.to_string(), msg.to_string()), self.observed);
                self.msg_of_uid.insert((mailbox.to_string(), *uid), msg.to_string());
            }
            Event::ClientFetched(fetched) => {
                let (mailbox, msg) = (&fetched.mailbox, &fetched.msg);
                self.unfetched.remove(&(mailbox.to_string(), msg.to_string()));
                if self.deleting.contains(mailbox.as_str()) {
                    self.deletes_in_flight.insert(mailbox.to_string());
                }
            }
            Event::ClientDeleted { mailbox, .. } | Event::ClientFailure { mailbox, .. } => {
                self.deletes_in_flight.remove(mailbox.as_str());
            }
            // A damaged message is reported, not served: no client will ever fetch it.
            Event::StoreCorruption { mailbox, uid, .. } => {
                if let Some(msg) = self.msg_of_uid.get(&(mailbox.to_string(), *uid)) {
                    self.unfetched.remove(&(mailbox.to_string(), msg.clone()));
                }
            }
            Event::Fault { action } if action.starts_with("backup of store") => self.backup_at = Some(self.observed),
            // The restore erased what was delivered after the backup: no client will fetch it.
            // A cohort put back from the backup: what its mailboxes got since is gone.
            Event::Cohort { online: true, from_backup: true, mailboxes, .. } => {
                let backup_at = self.backup_at.unwrap_or(0);
                self.unfetched.retain(|(mailbox, _), delivered_at| *delivered_at <= backup_at || !mailboxes.contains(mailbox));
            }
            Event::Fault { action } if action.starts_with("store restored from its backup") && !action.contains("(cohort") => {
                let backup_at = self.backup_at.unwrap_or(0);
                self.unfetched.retain(|_, delivered_at| *delivered_at <= backup_at);
            }
            _ => {}
        }
    }

    fn finish(&mut self, queue_file: &str) {
        self.mx_open.remove(queue_file);
        self.mx_finished.insert(queue_file.to_string());
    }

    /// After the MX restarted (or its device failed over): a queue file it acknowledged that is
    /// no longer in its queue will never be finished (the device lost it; the checkers judge that). Waiting for it
    /// would idle the run to its horizon.
    fn forget_missing_queue_files(&mut self, present: &BTreeSet<String>) {
        self.mx_open.retain(|file| present.contains(file));
    }

    /// What is not yet done, for a person: why a run that never drained did not (L1).
    fn waiting_for(&self) -> String {
        let mut parts = Vec::new();
        if self.submitted < self.planned_messages {
            parts.push(format!("{} of {} planned messages not yet handed to their senders", self.planned_messages - self.submitted, self.planned_messages));
        }
        if self.sender_open > 0 {
            parts.push(format!("{} (message, recipient) pairs without a final outcome at their sender", self.sender_open));
        }
        if !self.mx_open.is_empty() {
            let files: Vec<&str> = self.mx_open.iter().take(5).map(String::as_str).collect();
            parts.push(format!("{} acknowledged queue file(s) not finished ({}{})", self.mx_open.len(), files.join(", "), if self.mx_open.len() > 5 { ", …" } else { "" }));
        }
        if parts.is_empty() { "nothing (drained only as the horizon came)".into() } else { parts.join("; ") }
    }

    fn is_drained(&self) -> bool {
        self.submitted == self.planned_messages && self.sender_open == 0 && self.mx_open.is_empty()
    }

    fn clients_caught_up(&self) -> bool {
        self.unfetched.is_empty() && self.deletes_in_flight.is_empty()
    }
}

/// Adapts the stack's never-ending host futures to turmoil's `Result` output.
trait MapOk {
    fn map_ok(self) -> impl std::future::Future<Output = turmoil::Result> + 'static;
}

impl<F: std::future::Future<Output = ()> + 'static> MapOk for F {
    fn map_ok(self) -> impl std::future::Future<Output = turmoil::Result> + 'static {
        async move {
            self.await;
            Ok(())
        }
    }
}
