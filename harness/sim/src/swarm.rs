//! Swarm testing (Groce et al., ISSTA 2012): each seed draws a whole scenario. Every fault kind
//! of the taxonomy is switched on with probability ½, then its targets and window are drawn;
//! the workload shape and the persistence profile are drawn too. Runs that leave features out
//! reach states that "everything on" never does (one fault masks another).
//!
//! The generator is data-first: it builds a TOML table and serialises it, and the text is then
//! parsed by the ordinary `scenario::parse`. So a generated scenario is a scenario file like any
//! other; written out (`--emit-scenario`), it replays with the identical digest.
//!
//! Everything is drawn from the seed's own `swarm` stream (never an unseeded RNG), and the
//! table is a `toml::Table` (a BTreeMap: no hash order reaches the text).

use crate::scenario::{self, Scenario, ScenarioError, CUT_STAGES};
use crate::seed::Seed;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use toml::{Table, Value};

/// Which persistence profiles (and device faults) a sweep draws from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProfileSet {
    /// Profiles that keep their promises; no fault kind that breaks a device's promise.
    Honest,
    /// Profiles that break promises (lying fsync, an unmirrored write-back cache); every kind.
    Dishonest,
    /// Every shipped profile and every kind.
    All,
}

impl ProfileSet {
    pub const NAMES: &'static [&'static str] = &["honest", "dishonest", "all"];

    pub fn parse(text: &str) -> Result<ProfileSet, String> {
        match text {
            "honest" => Ok(ProfileSet::Honest),
            "dishonest" => Ok(ProfileSet::Dishonest),
            "all" => Ok(ProfileSet::All),
            other => Err(format!("unknown profile set '{}'; expected one of: {}", input::clip(other), Self::NAMES.join(", "))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ProfileSet::Honest => "honest",
            ProfileSet::Dishonest => "dishonest",
            ProfileSet::All => "all",
        }
    }

    /// The shipped profiles of this set, in their shipped order.
    pub fn profiles(self) -> Vec<String> {
        let shipped = devices::profile::Profile::shipped();
        let keep = |keeps: bool| match self {
            ProfileSet::Honest => keeps,
            ProfileSet::Dishonest => !keeps,
            ProfileSet::All => true,
        };
        shipped.iter().filter(|profile| keep(profile.keeps_promises)).map(|profile| profile.name().to_string()).collect()
    }

    /// Whether fault kinds that break a device's promise (an fsync that lies, a write that never
    /// lands, a durable name lost, stored data damaged) may be drawn: on an honest device they
    /// cannot happen, and a violation they cause is blamed on the device, never the stack.
    fn breaks_promises(self) -> bool {
        self != ProfileSet::Honest
    }
}

/// One switch of the swarm plan: its short name (what `plan=` prints) and, when it is a fault,
/// its index in the generated scenario's `[[fault]]` list (and so in `RunOutput::faults`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Feature {
    pub name: &'static str,
    pub fault: Option<usize>,
}

/// A generated scenario: its text and what the seed switched on.
#[derive(Clone, Debug)]
pub struct Generated {
    pub text: String,
    pub features: Vec<Feature>,
    pub profile: String,
}

impl Generated {
    /// `torn,partition2,crash,rollback` (or `none`).
    pub fn plan(&self) -> String {
        match self.features.is_empty() {
            true => "none".into(),
            false => self.features.iter().map(|feature| feature.name).collect::<Vec<_>>().join(","),
        }
    }

    /// The scenario as `scenario::parse` reads it (the same text a file would hold).
    pub fn scenario(&self) -> Result<Scenario, ScenarioError> {
        scenario::parse("swarm.toml", &self.text)
    }
}

/// Every switch the generator knows, in the order it draws them: the coverage table's rows.
/// The first column is the plan name, the second the fault kind it adds (None: a workload or
/// MX setting, judged fired by what the history shows).
pub const FEATURES: &[(&str, Option<&str>)] = &[
    ("stall", Some("disk-stall")),
    ("eio", Some("disk-eio")),
    ("full", Some("disk-full")),
    ("partition2", Some("partition")),
    ("partition1", Some("partition-oneway")),
    ("cut", Some("cut")),
    ("dns", Some("dns-failure")),
    ("port", Some("port-closed")),
    ("outage", Some("outage")),
    ("crash", Some("crash")),
    ("crashpoint", Some("crash")),
    ("fsyncfail", Some("fsync-fail")),
    ("lyingfsync", Some("lying-fsync")),
    ("lostwrite", Some("lost-write")),
    ("torn", Some("torn-write")),
    ("misdirect", Some("misdirected-write")),
    ("bitrot", Some("bit-rot")),
    ("readonly", Some("read-only")),
    ("direntloss", Some("dirent-loss")),
    ("failover", Some("failover")),
    ("rollback", Some("rollback")),
    ("latency", Some("latency-spike")),
    ("overload", None),
    ("slowlink", None),
];

/// The plan names of faults that break a device's promise (see `ProfileSet::breaks_promises`):
/// an fsync that lies, a write that never lands, a durable name lost, and damage to data the
/// device had stored (a bit flipped on the media, a write landing in another file). A torn
/// write is not among them: an honest device may tear a write it never promised (unsynced).
const PROMISE_BREAKERS: &[&str] = &["lyingfsync", "lostwrite", "direntloss", "bitrot", "misdirect"];

/// Mailbox names, providers' names: the first n of each are used.
const USERS: &[&str] = &["anna", "bruno", "carla", "dario", "elena", "fabio", "gina", "ugo"];
const PROVIDERS: &[&str] = &["gmail", "outlook", "yahoo", "proton", "fastmail", "aruba", "tiscali", "gmx"];
/// Messages over all providers at most: keeps a run near the fast suite's cost (~10 runs/s).
const MAX_TOTAL_MESSAGES: u64 = 60;
/// After the chaos: room for the slowest honest policy's longest scaled wait, the MX's retries
/// and two client polls, so a clean run always drains well before the horizon.
const TAIL_S: u64 = 7200;

/// The text of the scenario seed `seed` draws from `profiles`.
pub fn generate(seed: Seed, profiles: ProfileSet) -> String {
    plan(seed, profiles).text
}

/// The scenario seed `seed` draws, with what it switched on.
pub fn plan(seed: Seed, profiles: ProfileSet) -> Generated {
    let mut draw = Draw { rng: seed.stream("swarm"), faults: Vec::new(), features: Vec::new() };
    let mut table = Table::new();
    let chaos_s = draw.range(600, 1800);
    let shape = draw.shape(chaos_s);
    let profile = draw.pick_string(&profiles.profiles());
    table.insert("name".into(), Value::String(format!("swarm-{seed}")));
    table.insert("tick_ms".into(), int(1000));
    table.insert("chaos_s".into(), int(chaos_s));
    table.insert("horizon_s".into(), int(chaos_s + TAIL_S));
    table.insert("profile".into(), Value::String(profile.clone()));
    table.insert("network".into(), draw.network());
    table.insert("mx".into(), draw.mx(&shape));
    table.insert("provider".into(), draw.providers(&shape));
    table.insert("workload".into(), draw.workload(&shape));
    table.insert("clients".into(), draw.clients(&shape));
    draw.faults(&shape, profiles);
    if let Some(link) = draw.slow_link(&shape) {
        table.insert("link".into(), Value::Array(vec![link]));
    }
    table.insert("fault".into(), Value::Array(std::mem::take(&mut draw.faults)));
    let description = format!("swarm seed {seed} profiles={}: plan={}", profiles.name(), names(&draw.features));
    table.insert("description".into(), Value::String(description));
    let text = format!("# Generated by `mailchaos swarm --seed {seed} --profiles {}`.\n{}", profiles.name(), toml::to_string(&table).expect("a table of plain values serialises"));
    Generated { text, features: draw.features, profile }
}

fn names(features: &[Feature]) -> String {
    features.iter().map(|feature| feature.name).collect::<Vec<_>>().join(",")
}

fn int(value: u64) -> Value {
    Value::Integer(i64::try_from(value).expect("generated values are small"))
}

fn strings(values: &[&str]) -> Value {
    Value::Array(values.iter().map(|value| Value::String(value.to_string())).collect())
}

/// The workload's shape, drawn first: the faults aim at its hosts and mailboxes.
struct Shape {
    chaos_s: u64,
    users: Vec<&'static str>,
    providers: Vec<&'static str>,
    /// Whether the MX's limits are drawn tight (the `overload` switch).
    overload: bool,
}

struct Draw {
    rng: ChaCha8Rng,
    faults: Vec<Value>,
    features: Vec<Feature>,
}

impl Draw {
    fn range(&mut self, low: u64, high: u64) -> u64 {
        self.rng.random_range(low..=high)
    }

    fn coin(&mut self) -> bool {
        self.rng.random_bool(0.5)
    }

    fn chance(&mut self, p: f64) -> bool {
        self.rng.random_bool(p)
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.rng.random_range(0..items.len())]
    }

    fn pick_string(&mut self, items: &[String]) -> String {
        self.pick(items).clone()
    }

    fn shape(&mut self, chaos_s: u64) -> Shape {
        let users = USERS[..self.range(1, USERS.len() as u64) as usize].to_vec();
        let providers = PROVIDERS[..self.range(1, PROVIDERS.len() as u64) as usize].to_vec();
        let overload = self.coin();
        Shape { chaos_s, users, providers, overload }
    }

    fn network(&mut self) -> Value {
        let mut network = Table::new();
        network.insert("min_latency_ms".into(), int(1));
        network.insert("max_latency_ms".into(), int(self.range(5, 100)));
        Value::Table(network)
    }

    fn mx(&mut self, shape: &Shape) -> Value {
        let mut mx = Table::new();
        mx.insert("domains".into(), strings(&["libero.test"]));
        mx.insert("users".into(), strings(&shape.users));
        mx.insert("queue_workers".into(), int(self.range(1, 4)));
        mx.insert("retry_base_s".into(), int(self.range(5, 30)));
        mx.insert("retry_max_s".into(), int(self.range(60, 600)));
        if shape.overload {
            // Tight limits: 421 beyond the sessions, 452 4.3.1 beyond the queue; senders come back.
            mx.insert("max_sessions".into(), int(self.range(1, 4)));
            mx.insert("max_sessions_per_client".into(), int(self.range(1, 2)));
            mx.insert("max_queue_files".into(), int(self.range(2, 12)));
            mx.insert("tarpit_ms".into(), int(self.range(0, 3000)));
        }
        Value::Table(mx)
    }

    fn providers(&mut self, shape: &Shape) -> Value {
        // The honest policies only: a misbehaving sender's violations are the sender's.
        let honest: Vec<String> = mail::policy::RetryPolicy::shipped().into_iter().filter(|policy| !policy.misbehaving).map(|policy| policy.name).collect();
        let mut providers = Vec::new();
        for name in &shape.providers {
            let mut provider = Table::new();
            provider.insert("name".into(), Value::String(name.to_string()));
            provider.insert("policy".into(), Value::String(self.pick_string(&honest)));
            provider.insert("time_scale".into(), Value::Float(*self.pick(&[0.01, 0.02, 0.05])));
            provider.insert("chunking".into(), Value::Boolean(self.chance(0.3)));
            if self.coin() {
                provider.insert("max_connections".into(), int(self.range(1, 4)));
            }
            providers.push(Value::Table(provider));
        }
        Value::Array(providers)
    }

    /// `every` knobs: off, or every 2nd to 8th message.
    fn every(&mut self) -> Value {
        int(if self.coin() { self.range(2, 8) } else { 0 })
    }

    fn workload(&mut self, shape: &Shape) -> Value {
        let mut workload = Table::new();
        let total = self.range(4, MAX_TOTAL_MESSAGES);
        let per_provider = (total / shape.providers.len() as u64).max(1);
        workload.insert("messages".into(), int(per_provider));
        workload.insert("spread_s".into(), int(self.range(60, shape.chaos_s)));
        workload.insert("max_rcpts".into(), int(self.range(1, 4)));
        let per_session = match self.coin() {
            true => int(self.range(1, 3)),
            false => Value::Array(vec![int(1), int(self.range(2, 5))]),
        };
        workload.insert("messages_per_session".into(), per_session);
        for knob in ["null_sender_every", "unknown_rcpt_every", "duplicate_rcpt_every", "list_mail_every", "postmaster_every", "invalid_param_every"] {
            let value = self.every();
            workload.insert(knob.into(), value);
        }
        Value::Table(workload)
    }

    fn clients(&mut self, shape: &Shape) -> Value {
        let mut clients = Table::new();
        clients.insert("poll_interval_s".into(), int(self.range(30, 240)));
        let deleters: Vec<&str> = shape.users.iter().copied().filter(|_| self.rng.random_bool(0.4)).collect();
        clients.insert("delete_after_fetch".into(), strings(&deleters));
        clients.insert("mark_read".into(), Value::Boolean(self.coin()));
        if self.chance(0.25) {
            // Lockstep polls from this moment: a reconnection storm.
            clients.insert("first_poll_s".into(), int(self.range(0, shape.chaos_s)));
        }
        if shape.overload {
            clients.insert("pop3_max_sessions".into(), int(self.range(1, 3)));
        }
        Value::Table(clients)
    }

    fn slow_link(&mut self, shape: &Shape) -> Option<Value> {
        if !self.coin() {
            return None;
        }
        self.features.push(Feature { name: "slowlink", fault: None });
        let provider = format!("provider-{}", self.pick(&shape.providers));
        let mut link = Table::new();
        link.insert("hosts".into(), Value::Array(vec![Value::String(provider), Value::String("mx".into())]));
        let min = self.range(100, 2000);
        link.insert("min_latency_ms".into(), int(min));
        link.insert("max_latency_ms".into(), int(min + self.range(0, 6000)));
        Some(Value::Table(link))
    }

    /// Each fault switch on with probability ½, in `FEATURES` order; the overload switch was
    /// drawn with the shape (the MX's limits) and is only recorded here.
    fn faults(&mut self, shape: &Shape, profiles: ProfileSet) {
        for (name, kind) in FEATURES {
            let Some(kind) = kind else { continue };
            let on = self.coin();
            if !on || (PROMISE_BREAKERS.contains(name) && !profiles.breaks_promises()) {
                continue;
            }
            let mut fault = Table::new();
            fault.insert("kind".into(), Value::String(kind.to_string()));
            self.fill(name, &mut fault, shape);
            self.features.push(Feature { name, fault: Some(self.faults.len()) });
            self.faults.push(Value::Table(fault));
        }
        if shape.overload {
            self.features.push(Feature { name: "overload", fault: None });
        }
    }

    /// The targets and window of one fault switch.
    fn fill(&mut self, name: &str, fault: &mut Table, shape: &Shape) {
        match name {
            "partition2" | "partition1" => self.partition(fault, shape),
            "cut" => self.cut(fault, shape),
            "dns" => {
                fault.insert("host".into(), Value::String(format!("provider-{}", self.pick(&shape.providers))));
                self.window(fault, shape, 30, 600);
            }
            "port" => {
                fault.insert("host".into(), Value::String("mx".into()));
                self.window(fault, shape, 30, 600);
            }
            "outage" => {
                // 5xx-bounce is left out: it is the operator's error of 2023, which A12 and A22
                // flag by design (`cargo xtask outage`), not something the stack can survive.
                fault.insert("answer".into(), Value::String(self.pick(&["4xx-tempfail", "closed-port"]).to_string()));
                self.window(fault, shape, 60, shape.chaos_s / 2);
            }
            "crash" | "crashpoint" => self.crash(name == "crashpoint", fault, shape),
            "failover" => {
                fault.insert("host".into(), Value::String(self.pick(&["mx", "store"]).to_string()));
                fault.insert("at_s".into(), int(self.range(60, shape.chaos_s - 60)));
            }
            "rollback" => self.rollback(fault, shape),
            _ => self.storage(name, fault, shape),
        }
    }

    /// `at_s` and `duration_s` within the chaos, each fixed or a range the run draws from.
    fn window(&mut self, fault: &mut Table, shape: &Shape, shortest: u64, longest: u64) {
        let longest = longest.clamp(shortest, shape.chaos_s / 2);
        let low = self.range(shortest, longest);
        let high = if self.coin() { low } else { self.range(low, longest) };
        let latest = shape.chaos_s - high;
        let at = self.range(10, latest.max(10));
        let at_high = if self.coin() { at } else { self.range(at, latest.max(at)) };
        fault.insert("at_s".into(), if at == at_high { int(at) } else { Value::Array(vec![int(at), int(at_high)]) });
        fault.insert("duration_s".into(), if low == high { int(low) } else { Value::Array(vec![int(low), int(high)]) });
    }

    fn partition(&mut self, fault: &mut Table, shape: &Shape) {
        let provider = format!("provider-{}", self.pick(&shape.providers));
        let pairs = [[provider.as_str(), "mx"], ["mx", "store"], ["store", "clients"]];
        let mut pair = *self.pick(&pairs);
        if self.coin() {
            pair.reverse();
        }
        fault.insert("hosts".into(), strings(&pair));
        self.window(fault, shape, 30, 600);
    }

    fn cut(&mut self, fault: &mut Table, shape: &Shape) {
        // Between the MX and the store only after the final dot; a provider's at any stage.
        let (hosts, stage) = match self.coin() {
            true => (vec![format!("provider-{}", self.pick(&shape.providers)), "mx".to_string()], self.pick(CUT_STAGES).to_string()),
            false => (vec!["mx".to_string(), "store".to_string()], "data-end".to_string()),
        };
        fault.insert("hosts".into(), Value::Array(hosts.into_iter().map(Value::String).collect()));
        fault.insert("stage".into(), Value::String(stage));
        // Past the client's timeout (5 to 10 minutes) the reply is never read.
        self.window(fault, shape, 30, 900);
    }

    fn crash(&mut self, at_point: bool, fault: &mut Table, shape: &Shape) {
        let restart = self.range(5, 120);
        let host = match at_point {
            true => {
                let point = self.pick(stack::CRASH_POINTS).to_string();
                let host = if point.starts_with("mx-") { "mx" } else { "store" };
                fault.insert("point".into(), Value::String(point));
                host
            }
            false => self.pick(&["mx", "store"]),
        };
        fault.insert("host".into(), Value::String(host.to_string()));
        // A fail point is armed from at_s on: early, so the traffic still reaches it.
        let latest = if at_point { shape.chaos_s / 3 } else { shape.chaos_s - restart - 1 };
        fault.insert("at_s".into(), int(self.range(10, latest)));
        fault.insert("restart_after_s".into(), int(restart));
    }

    fn rollback(&mut self, fault: &mut Table, shape: &Shape) {
        let restart = self.range(5, 120);
        let at = self.range(120, shape.chaos_s - restart - 1);
        fault.insert("host".into(), Value::String("store".into()));
        fault.insert("snapshot_s".into(), int(self.range(0, at - 60)));
        fault.insert("at_s".into(), int(at));
        fault.insert("restart_after_s".into(), int(restart));
    }

    /// A disk fault: host, an optional path prefix (a mailbox, its tmp/ or new/, the queue),
    /// optional operations and `nth`, and the kind's own fields.
    fn storage(&mut self, name: &str, fault: &mut Table, shape: &Shape) {
        let host = *self.pick(&["mx", "store"]);
        fault.insert("host".into(), Value::String(host.into()));
        if let Some(prefix) = self.prefix(host, shape) {
            fault.insert("path_prefix".into(), Value::String(prefix));
        }
        if self.chance(0.3) {
            let ops = self.ops(name);
            fault.insert("ops".into(), strings(&ops));
        }
        if self.chance(0.3) {
            fault.insert("nth".into(), int(self.range(1, 3)));
        }
        match name {
            // Full from the start half the time; else past a threshold the run's few dozen
            // messages reach (a larger one would never fire: a generator bug, not a test).
            "full" => match self.range(0, 3) {
                0 => {
                    fault.insert("bytes".into(), int(self.range(1_000, 20_000)));
                }
                1 => {
                    fault.insert("files".into(), int(self.range(1, 10)));
                }
                _ => {}
            },
            "latency" => {
                fault.insert("latency_ms".into(), int(self.range(100, 20_000)));
            }
            _ => {}
        }
        self.window(fault, shape, 30, 600);
    }

    fn prefix(&mut self, host: &str, shape: &Shape) -> Option<String> {
        if self.chance(0.3) {
            return None;
        }
        match host {
            "mx" => Some(self.pick(&["queue/", "incoming/"]).to_string()),
            _ => {
                let user = self.pick(&shape.users);
                let sub = self.pick(&["", "tmp/", "new/", "cur/"]);
                Some(format!("mail/{user}/{sub}"))
            }
        }
    }

    /// Operations the kind acts on: a sync kind its syncs, a read kind reads, the rest any.
    fn ops(&mut self, name: &str) -> Vec<&'static str> {
        match name {
            "fsyncfail" | "lyingfsync" => vec![*self.pick(&["fsync", "fsync-dir"])],
            "bitrot" => vec!["read"],
            "torn" | "misdirect" | "lostwrite" | "full" => vec!["write"],
            _ => vec![*self.pick(&["write", "read", "fsync", "fsync-dir", "rename", "remove", "list"])],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_generated_scenario_validates() {
        for set in [ProfileSet::Honest, ProfileSet::Dishonest, ProfileSet::All] {
            for n in 0..1000 {
                let generated = plan(Seed(n), set);
                if let Err(error) = generated.scenario() {
                    panic!("seed {n} {}: {error}\n{}", set.name(), generated.text);
                }
            }
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_text_and_seeds_differ() {
        assert_eq!(generate(Seed(7), ProfileSet::All), generate(Seed(7), ProfileSet::All));
        assert_ne!(generate(Seed(7), ProfileSet::All), generate(Seed(8), ProfileSet::All));
    }

    #[test]
    fn honest_sweeps_draw_honest_profiles_and_no_promise_breakers() {
        for n in 0..300 {
            let generated = plan(Seed(n), ProfileSet::Honest);
            assert!(ProfileSet::Honest.profiles().contains(&generated.profile), "{}", generated.profile);
            assert!(generated.features.iter().all(|feature| !PROMISE_BREAKERS.contains(&feature.name)), "{}", generated.plan());
        }
        let dishonest = (0..50).map(|n| plan(Seed(n), ProfileSet::Dishonest).profile).collect::<Vec<_>>();
        assert!(dishonest.iter().all(|profile| ProfileSet::Dishonest.profiles().contains(profile)));
    }

    #[test]
    fn each_switch_is_on_in_about_half_the_seeds() {
        let seeds = 400;
        for (name, _) in FEATURES {
            let on = (0..seeds).filter(|&n| plan(Seed(n), ProfileSet::All).features.iter().any(|f| f.name == *name)).count();
            assert!((140..=260).contains(&on), "{name} on in {on} of {seeds} seeds");
        }
    }

    #[test]
    fn a_feature_names_its_own_fault() {
        let generated = plan(Seed(3), ProfileSet::All);
        let scenario = generated.scenario().unwrap();
        for feature in &generated.features {
            let kind = FEATURES.iter().find(|(name, _)| *name == feature.name).and_then(|(_, kind)| *kind);
            match (feature.fault, kind) {
                (Some(index), Some(kind)) => assert_eq!(scenario.faults[index].kind.name(), kind),
                (None, None) => {}
                other => panic!("{} {other:?}", feature.name),
            }
        }
    }

    #[test]
    fn profile_sets_parse_and_refuse_unknown_names() {
        assert_eq!(ProfileSet::parse("honest"), Ok(ProfileSet::Honest));
        assert!(ProfileSet::parse("nice").unwrap_err().contains("expected one of: honest, dishonest, all"));
        assert!(ProfileSet::Honest.profiles().contains(&"posix-strict".to_string()));
        assert!(ProfileSet::Dishonest.profiles().contains(&"lying-fsync".to_string()));
    }
}
