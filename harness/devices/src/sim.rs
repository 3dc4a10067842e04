//! SimDisk: an in-memory device that behaves as a persistence profile says, with targeted faults.
//!
//! Three layers. The *view* is what the running system sees (names → inodes, inode contents).
//! The *media* is what survives any crash. Between them is the *log*: every operation not yet on
//! the media, in issue order. fsync, fsync_dir and background commit move operations from the log
//! to the media (with whatever the profile's ordering rules drag along); a crash keeps the media
//! plus a subset of the log that the profile allows (see [`crash`](crate::crash)); a lying fsync
//! or a write-back cache leaves operations in the log marked *promised*, and a crash or failover
//! that loses a promised operation is recorded as `DiskDropped`: the device broke its word, not
//! the stack.

use crate::crash::{self, Content, Frontier, Image, LogOp, OpBody};
use crate::profile::{FsyncErrorMode, Profile};
use disk::{parent, Device, DiskError, OpKind};
use history::{Clock, Event, Journal};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Duration;

/// Upper bound on files per disk: a runaway writer hits ENOSPC instead of exhausting memory.
pub const MAX_FILES: usize = 200_000;
/// Upper bound on the log: beyond it the oldest unsynced operation is forgotten, which every
/// profile allows (it was never synced) and keeps memory bounded.
pub const MAX_LOG_OPS: usize = 20_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// Every matching operation waits until the window ends.
    Stall,
    /// Matching operations fail with EIO.
    Eio,
    /// Operations that allocate fail with ENOSPC once the disk holds more than these
    /// (both 0: always).
    Full { max_bytes: u64, max_files: u64 },
    /// fsync fails with EIO; the file's dirty pages are dropped as the profile says.
    FsyncFail,
    /// fsync answers Ok and makes nothing durable.
    LyingFsync,
    /// The write is acknowledged and readable but never reaches the media.
    LostWrite,
    /// If a crash finds the write unsynced, it survives torn.
    TornWrite,
    /// The bytes land in another file of the same directory.
    MisdirectedWrite,
    /// The read finds a persistent bit flip (until the file is rewritten).
    BitRot,
    /// Mutating operations fail with EROFS.
    ReadOnly,
    /// The next crash loses one durable directory entry under the prefix.
    DirentLoss,
    /// Matching operations take this long but succeed.
    Latency { ms: u64 },
}

impl FaultKind {
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Stall => "stall",
            FaultKind::Eio => "eio",
            FaultKind::Full { .. } => "enospc",
            FaultKind::FsyncFail => "fsync-fail",
            FaultKind::LyingFsync => "lying-fsync",
            FaultKind::LostWrite => "lost-write",
            FaultKind::TornWrite => "torn-write",
            FaultKind::MisdirectedWrite => "misdirected-write",
            FaultKind::BitRot => "bit-rot",
            FaultKind::ReadOnly => "read-only",
            FaultKind::DirentLoss => "dirent-loss",
            FaultKind::Latency { .. } => "latency",
        }
    }

    /// The operations this kind of fault can act on at all.
    fn acts_on(self, op: OpKind) -> bool {
        match self {
            FaultKind::Stall | FaultKind::Eio | FaultKind::Latency { .. } => true,
            FaultKind::Full { .. } => op.allocates(),
            FaultKind::FsyncFail => op == OpKind::Fsync,
            FaultKind::LyingFsync => matches!(op, OpKind::Fsync | OpKind::FsyncDir),
            FaultKind::LostWrite | FaultKind::TornWrite | FaultKind::MisdirectedWrite => op == OpKind::Write,
            FaultKind::BitRot => op == OpKind::Read,
            FaultKind::ReadOnly => op.mutates(),
            FaultKind::DirentLoss => false,
        }
    }
}

/// A fault active on this disk in [start_ms, end_ms), aimed by path prefix, operation kinds and
/// optionally the Nth matching call only.
#[derive(Clone, Debug)]
pub struct FaultWindow {
    pub kind: FaultKind,
    pub start_ms: u64,
    pub end_ms: u64,
    pub path_prefix: String,
    /// Empty means every kind of operation.
    pub ops: Vec<OpKind>,
    /// When set, only the Nth matching call (1-based) is hit.
    pub nth: Option<u64>,
}

impl FaultWindow {
    pub fn new(kind: FaultKind, start_ms: u64, end_ms: u64) -> FaultWindow {
        FaultWindow { kind, start_ms, end_ms, path_prefix: String::new(), ops: Vec::new(), nth: None }
    }

    fn matches(&self, now_ms: u64, op: OpKind, path: &str) -> bool {
        (self.start_ms..self.end_ms).contains(&now_ms)
            && path.starts_with(&self.path_prefix)
            && self.kind.acts_on(op)
            && (self.ops.is_empty() || self.ops.contains(&op))
    }
}

#[derive(Default)]
struct State {
    names: BTreeMap<String, u64>,
    data: BTreeMap<u64, Content>,
    next_inode: u64,
    used_bytes: u64,
    log: Vec<LogOp>,
    next_seq: u64,
    media: Image,
    last_commit_ms: u64,
    next_failover_ms: u64,
    errors: u32,
    read_only: bool,
    bytes_written: u64,
    stalled_until_ms: Option<u64>,
    snapshot: Option<Image>,
}

/// The vendor's array that several hosts' disks sit on: the profile's hidden limit counts the
/// writes of every disk on it, and its stall stops them all.
#[derive(Debug, Default)]
pub struct Array {
    bytes_written: Cell<u64>,
    stalled_until_ms: Cell<Option<u64>>,
}

pub struct SimDisk {
    /// The array this disk shares with others; `None`: a disk of its own.
    array: RefCell<Option<Rc<Array>>>,
    state: RefCell<State>,
    profile: Rc<Profile>,
    faults: Vec<FaultWindow>,
    /// Per fault window: how often it hit an operation, and how many matching calls it saw.
    fired: RefCell<Vec<u64>>,
    seen: RefCell<Vec<u64>>,
    rng: RefCell<ChaCha8Rng>,
    journal: Journal,
    clock: Clock,
}

impl SimDisk {
    pub fn new(journal: Journal, profile: Rc<Profile>, faults: Vec<FaultWindow>, rng: ChaCha8Rng) -> SimDisk {
        let windows = faults.len();
        let mut state = State::default();
        state.next_failover_ms = failover_period_ms(&profile).unwrap_or(u64::MAX);
        SimDisk {
            array: RefCell::new(None),
            state: RefCell::new(state),
            clock: journal.clock(),
            profile,
            faults,
            fired: RefCell::new(vec![0; windows]),
            seen: RefCell::new(vec![0; windows]),
            rng: RefCell::new(rng),
            journal,
        }
    }

    /// A disk whose media holds `image` and nothing else: what a host restarts on.
    pub fn from_image(journal: Journal, profile: Rc<Profile>, image: Image, rng: ChaCha8Rng) -> SimDisk {
        let disk = SimDisk::new(journal, profile, Vec::new(), rng);
        disk.reset_to(image);
        disk
    }

    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// Puts this disk on a shared array (see `Array`).
    pub fn join_array(&self, array: Rc<Array>) {
        *self.array.borrow_mut() = Some(array);
    }

    /// A power cut or kernel crash: the disk keeps its media plus a subset of the log that the
    /// profile allows, drawn from the disk's own seeded stream.
    pub fn crash(&self) {
        self.background_work();
        let frontier = self.frontier();
        let choice = frontier.sample(&mut *self.rng.borrow_mut());
        let image = frontier.materialize(&choice);
        self.report_dropped(&frontier, &choice.survivors);
        self.report_torn_promise(&frontier, choice.torn);
        let image = self.lose_dirents(image);
        self.reset_to(image);
    }

    /// The controller fails over. When it holds what it promised but never wrote (a write-back
    /// cache, a lying fsync), everything not on the media is gone and the running system reads
    /// the older versions from now on. Otherwise the switch is transparent: what the host has
    /// not synced yet lives in its own page cache, above the controller, and a later sync still
    /// makes it durable (the swarm found the MX answering 250 after a directory sync that
    /// succeeded for a rename an honest device had silently undone).
    pub fn failover(&self) {
        self.journal.record(Event::DiskFault { fault: "failover".into(), op: "-".into(), path: "-".into() });
        if !self.state.borrow().log.iter().any(|op| op.promised) {
            return;
        }
        let frontier = self.frontier();
        self.report_dropped(&frontier, &[]);
        let media = self.state.borrow().media.clone();
        self.reset_to(media);
    }

    /// Remembers what a crash right now would keep for sure, as a backup would.
    pub fn snapshot(&self) {
        let image = self.durable_image_full();
        self.state.borrow_mut().snapshot = Some(image);
    }

    /// Restores the last snapshot: the whole disk, or only the paths under `prefix`.
    pub fn rollback(&self, prefix: &str) {
        let Some(snapshot) = self.state.borrow().snapshot.clone() else { return };
        let mut image = self.durable_image_full();
        image.names.retain(|path, _| !path.starts_with(prefix));
        for (path, inode) in snapshot.names.iter().filter(|(path, _)| path.starts_with(prefix)) {
            // Fresh inode numbers, so restored files never alias surviving ones.
            let fresh = u64::MAX / 2 + *inode;
            image.names.insert(path.clone(), fresh);
            image.contents.insert(fresh, snapshot.contents.get(inode).cloned().unwrap_or_default());
        }
        image.collect_garbage(&BTreeSet::new());
        self.journal.record(Event::DiskFault { fault: "rollback".into(), op: "-".into(), path: prefix.into() });
        self.reset_to(image);
    }

    /// The crash frontier right now: the media and the log, with the profile's rules.
    pub fn frontier(&self) -> Frontier {
        let state = self.state.borrow();
        Frontier::new(state.media.clone(), state.log.clone(), self.profile.clone())
    }

    fn reset_to(&self, image: Image) {
        let mut state = self.state.borrow_mut();
        state.used_bytes = image.names.values().map(|inode| image.contents.get(inode).map_or(0, |d| d.len() as u64)).sum();
        state.names = image.names.clone();
        state.data = image.names.values().map(|inode| (*inode, image.contents.get(inode).cloned().unwrap_or_default())).collect();
        state.next_inode = state.next_inode.max(image.contents.keys().filter(|i| **i < u64::MAX / 2).max().map_or(0, |i| i + 1));
        state.media = image;
        state.log.clear();
        state.read_only = false;
        state.errors = 0;
    }

    /// Records every promised operation the chosen crash state does not keep.
    fn report_dropped(&self, frontier: &Frontier, survivors: &[usize]) {
        for (index, op) in frontier.log.iter().enumerate() {
            if op.promised && !survivors.contains(&index) {
                self.journal.record(Event::DiskDropped { op: op.body.kind_name().into(), path: op.body.path().into() });
            }
        }
    }

    /// A crash that tears a write a sync had acknowledged (a lying or write-back device keeps it
    /// in its log, so it can be torn) broke a promise too: recorded like a dropped operation.
    fn report_torn_promise(&self, frontier: &Frontier, torn: Option<usize>) {
        let Some(op) = torn.and_then(|index| frontier.log.get(index)).filter(|op| op.promised) else { return };
        self.journal.record(Event::DiskDropped { op: "torn-write".into(), path: op.body.path().into() });
    }

    /// An armed dirent-loss fault takes one durable entry under its prefix away at this crash.
    fn lose_dirents(&self, mut image: Image) -> Image {
        let now_ms = self.now_ms();
        for (index, window) in self.faults.iter().enumerate() {
            if window.kind != FaultKind::DirentLoss || !(window.start_ms..window.end_ms).contains(&now_ms) {
                continue;
            }
            let candidates: Vec<String> = image.names.keys().filter(|path| path.starts_with(&window.path_prefix)).cloned().collect();
            if candidates.is_empty() {
                continue;
            }
            let victim = candidates[self.rng.borrow_mut().random_range(0..candidates.len())].clone();
            image.names.remove(&victim);
            self.fired.borrow_mut()[index] += 1;
            self.journal.record(Event::DiskFault { fault: "dirent-loss".into(), op: "crash".into(), path: victim.as_str().into() });
            self.journal.record(Event::DiskDropped { op: "link".into(), path: victim.into() });
        }
        image
    }

    /// Records the host's crash in the history (the world calls this after `crash`).
    pub fn journal_crash(&self) {
        self.journal.record(Event::Crash);
    }

    pub fn journal_restart(&self) {
        self.journal.record(Event::Restart);
    }

    /// The files the device has promised to keep, with their contents: the media plus every
    /// operation a (possibly lying) sync acknowledged. What checkers judge the stack against.
    pub fn durable_image(&self) -> BTreeMap<String, Content> {
        let image = self.durable_image_full();
        image.names.iter().map(|(path, inode)| (path.clone(), image.contents.get(inode).cloned().unwrap_or_default())).collect()
    }

    fn durable_image_full(&self) -> Image {
        let state = self.state.borrow();
        let mut image = state.media.clone();
        for op in state.log.iter().filter(|op| op.promised) {
            image.apply(&op.body, None);
        }
        image
    }

    /// What the running system sees now: every name with its current contents.
    pub fn view(&self) -> BTreeMap<String, Vec<u8>> {
        let state = self.state.borrow();
        state.names.iter().map(|(path, inode)| (path.clone(), state.data.get(inode).map(|content| content.to_vec()).unwrap_or_default())).collect()
    }

    /// How many operations each configured fault window touched.
    pub fn fired_counts(&self) -> Vec<u64> {
        self.fired.borrow().clone()
    }

    fn now_ms(&self) -> u64 {
        (self.clock)()
    }

    /// The first fault window that hits this call, counting calls for Nth-call faults.
    fn hit(&self, op: OpKind, path: &str, wanted: impl Fn(FaultKind) -> bool) -> Option<&FaultWindow> {
        // Most disks have no fault windows; the clock is not free, so it is read only for one that has.
        if self.faults.is_empty() {
            return None;
        }
        let now_ms = self.now_ms();
        for (index, window) in self.faults.iter().enumerate() {
            if !wanted(window.kind) || !window.matches(now_ms, op, path) {
                continue;
            }
            let seen = {
                let mut seen = self.seen.borrow_mut();
                seen[index] += 1;
                seen[index]
            };
            if window.nth.is_some_and(|nth| nth != seen) {
                continue;
            }
            self.fired.borrow_mut()[index] += 1;
            if !matches!(window.kind, FaultKind::Stall | FaultKind::Latency { .. }) {
                self.journal.record(Event::DiskFault { fault: window.kind.name().into(), op: op.name().into(), path: path.into() });
            }
            return Some(window);
        }
        None
    }

    /// The error this operation fails with before it reaches the model, if any.
    fn refusal(&self, op: OpKind, path: &str, len: u64) -> Option<DiskError> {
        if op.mutates() && self.state.borrow().read_only {
            return Some(DiskError::ReadOnly);
        }
        // A limited "disk full" window matches only the calls it refuses: a write that fits is
        // neither recorded as a fault nor counted as one that fired (nor as its Nth call).
        let over_limit = |max_bytes: u64, max_files: u64| {
            let state = self.state.borrow();
            let unlimited = max_bytes == 0 && max_files == 0; // a plain "disk full" window
            let over_bytes = max_bytes > 0 && state.used_bytes.saturating_add(len) > max_bytes;
            let over_files = max_files > 0 && state.names.len() as u64 >= max_files;
            unlimited || over_bytes || over_files
        };
        let window = self.hit(op, path, |kind| match kind {
            FaultKind::Eio | FaultKind::ReadOnly => true,
            FaultKind::Full { max_bytes, max_files } => over_limit(max_bytes, max_files),
            _ => false,
        })?;
        Some(match window.kind {
            FaultKind::Eio => DiskError::Io,
            FaultKind::ReadOnly => DiskError::ReadOnly,
            FaultKind::Full { .. } => DiskError::NoSpace,
            _ => return None,
        })
    }

    /// Runs one operation: refusals first, then the model; records the outcome.
    fn apply<T>(
        &self,
        op: OpKind,
        path: &str,
        len: u64,
        event: impl FnOnce() -> Option<Event>,
        body: impl FnOnce(&Self) -> Result<T, DiskError>,
    ) -> Result<T, DiskError> {
        self.background_work();
        let result = match self.refusal(op, path, len).or_else(|| self.capacity_refusal(op, len)) {
            Some(error) => Err(error),
            None => body(self),
        };
        match &result {
            Ok(_) => {
                if let Some(event) = event() {
                    self.journal.record(event);
                }
            }
            Err(error) => {
                self.journal.record(Event::DiskError { op: history::Text::new_static(op.name()), path: path.into(), error: error.to_string().into() });
                if *error == DiskError::Io {
                    self.count_error();
                }
            }
        }
        result
    }

    /// ENOSPC from the profile's own limits.
    fn capacity_refusal(&self, op: OpKind, len: u64) -> Option<DiskError> {
        let limits = &self.profile.availability;
        let state = self.state.borrow();
        let bytes_full = limits.max_bytes > 0 && state.used_bytes + len > limits.max_bytes;
        let files_full = limits.max_files > 0 && state.names.len() as u64 >= limits.max_files;
        (op == OpKind::Write && (bytes_full || files_full)).then_some(DiskError::NoSpace)
    }

    /// ext4 errors=remount-ro: enough I/O errors and every later mutation gets EROFS.
    fn count_error(&self) {
        let limit = self.profile.availability.read_only_after_errors;
        let mut state = self.state.borrow_mut();
        state.errors += 1;
        if limit > 0 && state.errors >= limit && !state.read_only {
            state.read_only = true;
            drop(state);
            self.journal.record(Event::DiskFault { fault: "remount-read-only".into(), op: "-".into(), path: "-".into() });
        }
    }

    /// What the device does by itself as time passes: background commit and failovers.
    fn background_work(&self) {
        let commit_ms = self.profile.persistence.background_commit_ms;
        // Every operation comes here: without background commits or failovers nothing can be
        // due, and the clock (not free) need not be read.
        if commit_ms == 0 && self.state.borrow().next_failover_ms == u64::MAX {
            return;
        }
        let now_ms = self.now_ms();
        let commit_due = {
            let state = self.state.borrow();
            commit_ms > 0 && now_ms >= state.last_commit_ms + commit_ms && !state.log.is_empty()
        };
        if commit_due {
            let mut state = self.state.borrow_mut();
            state.last_commit_ms = now_ms;
            let everything: Vec<usize> = (0..state.log.len()).collect();
            persist(&mut state, &everything, &self.profile);
        }
        let failover_due = self.state.borrow().next_failover_ms <= now_ms;
        if failover_due {
            let period = failover_period_ms(&self.profile).unwrap_or(u64::MAX);
            self.state.borrow_mut().next_failover_ms = now_ms.saturating_add(period);
            self.failover();
        }
    }

    fn push(&self, state: &mut State, body: OpBody, lost: bool, torn: bool) {
        if state.log.len() >= MAX_LOG_OPS {
            state.log.remove(0);
        }
        let seq = state.next_seq;
        state.next_seq += 1;
        state.log.push(LogOp { seq, body, promised: false, lost, torn });
    }

    /// Whether this sync lies: a lying-fsync fault, or the profile's share of lies.
    fn lies(&self, op: OpKind, path: &str) -> bool {
        if self.hit(op, path, |kind| kind == FaultKind::LyingFsync).is_some() {
            return true;
        }
        let per_mille = *self.profile.fsync.lie_per_mille.get_ref();
        per_mille > 0 && self.rng.borrow_mut().random_range(0..1000) < per_mille
    }

    /// Moves the chosen log entries to the media, or marks them promised when the device lies
    /// or only caches them.
    fn sync(&self, chosen: Vec<usize>, lying: bool) {
        let mut state = self.state.borrow_mut();
        // Everything this sync acknowledges: the closure, and the lost writes it claims too.
        let mut acknowledged = crash::closure(&state.log, &chosen, &self.profile);
        acknowledged.extend(chosen.iter().copied().filter(|&index| state.log[index].lost));
        for &index in &acknowledged {
            state.log[index].promised = true;
        }
        if !lying && !self.profile.failover.write_back_cache {
            persist(&mut state, &acknowledged, &self.profile); // lost writes stay in the log
        }
    }

    fn corrupt(&self, inode: u64) {
        let mut state = self.state.borrow_mut();
        let Some(data) = state.data.get_mut(&inode) else { return };
        if data.is_empty() {
            return;
        }
        let bit = self.rng.borrow_mut().random_range(0..data.len() * 8);
        // Copy-on-write: the log's write and the media keep the bytes as written.
        Rc::make_mut(data)[bit / 8] ^= 1 << (bit % 8);
        let damaged = Rc::clone(data);
        // Persistent: the media holds the flipped bit too, until the file is rewritten.
        if state.media.contents.contains_key(&inode) {
            state.media.contents.insert(inode, damaged);
        }
    }
}

/// Applies the chosen log entries (in log order) to the media and removes them from the log.
fn persist(state: &mut State, chosen: &[usize], profile: &Profile) {
    let closed = crash::closure(&state.log, chosen, profile);
    if closed.is_empty() {
        return;
    }
    let log = std::mem::take(&mut state.log);
    for (index, op) in log.into_iter().enumerate() {
        // A lost write stays in the log, never applied: a crash then reports it if it was promised.
        if closed.binary_search(&index).is_ok() && !op.lost {
            state.media.apply(&op.body, None);
        } else {
            state.log.push(op);
        }
    }
    if state.media.contents.len() > 2 * state.media.names.len() + 64 {
        let pending: BTreeSet<u64> = state.log.iter().map(|op| op.body.inode()).collect();
        state.media.collect_garbage(&pending);
    }
}

fn failover_period_ms(profile: &Profile) -> Option<u64> {
    (profile.failover.every_s > 0).then(|| profile.failover.every_s.saturating_mul(1000))
}

impl Device for SimDisk {
    fn wait_before(&self, op: OpKind, path: &str, waited: bool) -> Option<Duration> {
        let now_ms = self.now_ms();
        if let Some(until_ms) = self.hidden_limit_stall(now_ms) {
            return Some(Duration::from_millis(until_ms - now_ms));
        }
        if waited {
            // This operation served the stall or spike it was granted: it goes ahead now.
            return None;
        }
        let window = self.hit(op, path, |kind| matches!(kind, FaultKind::Stall | FaultKind::Latency { .. }))?;
        let until_ms = match window.kind {
            FaultKind::Latency { ms } => now_ms + ms,
            _ => window.end_ms,
        };
        (until_ms > now_ms).then(|| Duration::from_millis(until_ms - now_ms))
    }

    fn write(&self, path: &str, bytes: &[u8]) -> Result<(), DiskError> {
        let event = || Some(Event::DiskWrite { path: path.into(), len: bytes.len() as u64, digest: history::bytes_digest(bytes).into() });
        self.apply(OpKind::Write, path, bytes.len() as u64, event, |disk| {
            let misdirected = disk.hit(OpKind::Write, path, |kind| kind == FaultKind::MisdirectedWrite).is_some();
            let lost = disk.hit(OpKind::Write, path, |kind| kind == FaultKind::LostWrite).is_some();
            let torn = disk.hit(OpKind::Write, path, |kind| kind == FaultKind::TornWrite).is_some();
            let mut state = disk.state.borrow_mut();
            state.bytes_written += bytes.len() as u64;
            if let Some(array) = &*self.array.borrow() {
                array.bytes_written.set(array.bytes_written.get() + bytes.len() as u64);
            }
            let inode = match state.names.get(path).copied() {
                Some(inode) => inode,
                None => {
                    if state.names.len() >= MAX_FILES {
                        return Err(DiskError::NoSpace);
                    }
                    let inode = state.next_inode;
                    state.next_inode += 1;
                    state.names.insert(path.to_string(), inode);
                    state.data.insert(inode, Content::default());
                    disk.push(&mut state, OpBody::Link { path: path.to_string(), inode }, false, false);
                    inode
                }
            };
            // A misdirected write lands on another file of the directory (or nowhere).
            let target = if misdirected { misdirection_target(&state.names, path) } else { Some((path.to_string(), inode)) };
            let Some((target_path, target_inode)) = target else { return Ok(()) };
            if misdirected {
                // The victim's name too, so that a checker can tell whose bytes the device moved.
                disk.journal.record(Event::DiskFault { fault: "misdirected-write".into(), op: "write".into(), path: target_path.as_str().into() });
            }
            let old_len = state.data.get(&target_inode).map_or(0, |data| data.len() as u64);
            state.used_bytes = state.used_bytes + bytes.len() as u64 - old_len.min(state.used_bytes);
            // One copy of the bytes, shared by the live view, the log and (once durable) the media.
            let content: Content = Rc::new(bytes.to_vec());
            state.data.insert(target_inode, Rc::clone(&content));
            disk.push(&mut state, OpBody::Write { path: target_path, inode: target_inode, bytes: content }, lost, torn);
            Ok(())
        })
    }

    fn read(&self, path: &str) -> Result<Vec<u8>, DiskError> {
        self.apply(OpKind::Read, path, 0, || None, |disk| {
            let inode = *disk.state.borrow().names.get(path).ok_or(DiskError::NotFound)?;
            let per_million = *disk.profile.reads.bit_rot_per_million.get_ref();
            let profile_rot = per_million > 0 && disk.rng.borrow_mut().random_range(0..1_000_000) < per_million;
            if disk.hit(OpKind::Read, path, |kind| kind == FaultKind::BitRot).is_some() || profile_rot {
                if profile_rot {
                    disk.journal.record(Event::DiskFault { fault: "bit-rot".into(), op: "read".into(), path: path.into() });
                }
                disk.corrupt(inode);
            }
            disk.state.borrow().data.get(&inode).map(|content| content.to_vec()).ok_or(DiskError::NotFound)
        })
    }

    fn fsync(&self, path: &str) -> Result<(), DiskError> {
        let event = || Some(Event::DiskSync { path: path.into() });
        self.apply(OpKind::Fsync, path, 0, event, |disk| {
            let inode = *disk.state.borrow().names.get(path).ok_or(DiskError::NotFound)?;
            if disk.hit(OpKind::Fsync, path, |kind| kind == FaultKind::FsyncFail).is_some() {
                if disk.profile.fsync.on_error == FsyncErrorMode::DropDirty {
                    // fsyncgate: the dirty pages are marked clean without reaching the media.
                    disk.state.borrow_mut().log.retain(|op| !matches!(op.body, OpBody::Write { inode: i, .. } if i == inode));
                }
                return Err(DiskError::Io);
            }
            let names_too = !disk.profile.persistence.new_name_needs_dir_fsync;
            let chosen: Vec<usize> = disk.state.borrow().log.iter().enumerate().filter(|(_, op)| op.body.is_data_of(inode) || (names_too && op.body.names_inode(inode))).map(|(index, _)| index).collect();
            let lying = disk.lies(OpKind::Fsync, path);
            disk.sync(chosen, lying);
            Ok(())
        })
    }

    fn fsync_dir(&self, dir: &str) -> Result<(), DiskError> {
        let event = || Some(Event::DiskDirSync { dir: dir.into() });
        self.apply(OpKind::FsyncDir, dir, 0, event, |disk| {
            let chosen: Vec<usize> = disk.state.borrow().log.iter().enumerate().filter(|(_, op)| op.body.touches_dir(dir)).map(|(index, _)| index).collect();
            let lying = disk.lies(OpKind::FsyncDir, dir);
            disk.sync(chosen, lying);
            Ok(())
        })
    }

    fn rename(&self, from: &str, to: &str) -> Result<(), DiskError> {
        let event = || Some(Event::DiskRename { from: from.into(), to: to.into() });
        self.apply(OpKind::Rename, from, 0, event, |disk| {
            let mut state = disk.state.borrow_mut();
            let inode = state.names.remove(from).ok_or(DiskError::NotFound)?;
            if let Some(replaced) = state.names.insert(to.to_string(), inode) {
                let freed = state.data.remove(&replaced).map_or(0, |data| data.len() as u64);
                state.used_bytes = state.used_bytes.saturating_sub(freed);
            }
            disk.push(&mut state, OpBody::Rename { from: from.to_string(), to: to.to_string(), inode }, false, false);
            Ok(())
        })
    }

    fn remove(&self, path: &str) -> Result<(), DiskError> {
        let event = || Some(Event::DiskRemove { path: path.into() });
        self.apply(OpKind::Remove, path, 0, event, |disk| {
            let mut state = disk.state.borrow_mut();
            let inode = state.names.remove(path).ok_or(DiskError::NotFound)?;
            let freed = state.data.remove(&inode).map_or(0, |data| data.len() as u64);
            state.used_bytes = state.used_bytes.saturating_sub(freed);
            disk.push(&mut state, OpBody::Unlink { path: path.to_string(), inode }, false, false);
            Ok(())
        })
    }

    fn list(&self, dir: &str) -> Result<Vec<String>, DiskError> {
        self.apply(OpKind::List, dir, 0, || None, |disk| {
            let state = disk.state.borrow();
            let prefix = format!("{dir}/");
            let names = state
                .names
                .range(prefix.clone()..)
                .take_while(|(path, _)| path.starts_with(&prefix))
                .filter_map(|(path, _)| path.strip_prefix(&prefix))
                .filter(|name| !name.contains('/'))
                .map(str::to_string)
                .collect();
            Ok(names)
        })
    }
}

impl SimDisk {
    /// The hidden limit of the profile: once reached, every operation waits until the stall ends.
    fn hidden_limit_stall(&self, now_ms: u64) -> Option<u64> {
        let limits = &self.profile.availability;
        let array = self.array.borrow().clone();
        let mut state = self.state.borrow_mut();
        if state.stalled_until_ms.is_none() {
            // On a shared array: the writes of every disk count, and a stall another disk's
            // writes started stops this one too (it records it when it first meets it).
            let written = array.as_ref().map_or(state.bytes_written, |array| array.bytes_written.get());
            let started = array.as_ref().and_then(|array| array.stalled_until_ms.get());
            let reached = limits.hidden_limit_bytes > 0 && written >= limits.hidden_limit_bytes;
            let until = started.or_else(|| reached.then(|| now_ms + limits.stall_s.get_ref() * 1000));
            if let Some(until_ms) = until {
                state.stalled_until_ms = Some(until_ms);
                if let Some(array) = &array {
                    array.stalled_until_ms.set(Some(until_ms));
                }
            }
            // One stall per array: a disk that first meets it once it is over has nothing to record.
            if until.is_some_and(|until_ms| until_ms > now_ms) {
                drop(state);
                self.journal.record(Event::DiskFault { fault: "hidden-limit-stall".into(), op: "-".into(), path: "-".into() });
                state = self.state.borrow_mut();
            }
        }
        state.stalled_until_ms.filter(|until_ms| *until_ms > now_ms)
    }
}

/// Another file in the same directory, the first in name order (a misdirected write's victim).
fn misdirection_target(names: &BTreeMap<String, u64>, path: &str) -> Option<(String, u64)> {
    let dir = parent(path);
    names.iter().find(|(other, _)| other.as_str() != path && parent(other) == dir).map(|(other, inode)| (other.clone(), *inode))
}

#[cfg(test)]
mod tests {
    use super::*;
    use history::History;
    use rand::SeedableRng;
    use std::cell::Cell;

    fn disk_with(now: Rc<Cell<u64>>, profile: &str, faults: Vec<FaultWindow>) -> (SimDisk, Rc<RefCell<History>>) {
        let history = Rc::new(RefCell::new(History::default()));
        let journal = Journal::new(history.clone(), "h", Rc::new(move || now.get()));
        let profile = Rc::new(Profile::resolve(profile).unwrap());
        (SimDisk::new(journal, profile, faults, ChaCha8Rng::seed_from_u64(7)), history)
    }

    fn disk_at(now: Rc<Cell<u64>>, faults: Vec<FaultWindow>) -> SimDisk {
        disk_with(now, "posix-strict", faults).0
    }

    /// The pessimistic crash: only the media survives.
    fn crash_to_media(disk: &SimDisk) {
        let media = disk.state.borrow().media.clone();
        disk.reset_to(media);
    }

    #[test]
    fn on_a_shared_array_either_disks_writes_reach_the_hidden_limit_and_the_stall_stops_both() {
        let now = Rc::new(Cell::new(1000));
        let (mx, _) = disk_with(now.clone(), "libero-2023", vec![]);
        let (store, _) = disk_with(now.clone(), "libero-2023", vec![]);
        let limit = mx.profile().availability.hidden_limit_bytes as usize;
        // Apart, half the limit each stalls neither.
        let half = vec![0u8; limit / 2 + 1];
        mx.write("q/a", &half).unwrap();
        store.write("m/a", &half).unwrap();
        assert_eq!(mx.wait_before(OpKind::Write, "q/b", false), None);
        assert_eq!(store.wait_before(OpKind::Write, "m/b", false), None);
        // On one array the same writes together pass the limit: both stall, once each.
        let (mx, _) = disk_with(now.clone(), "libero-2023", vec![]);
        let (store, store_history) = disk_with(now.clone(), "libero-2023", vec![]);
        let array = Rc::new(Array::default());
        mx.join_array(array.clone());
        store.join_array(array);
        mx.write("q/a", &half).unwrap();
        assert_eq!(store.wait_before(OpKind::Write, "m/a", false), None);
        store.write("m/a", &half).unwrap();
        let stall = mx.wait_before(OpKind::Write, "q/b", false).expect("the MX stalls on the store's writes");
        assert_eq!(store.wait_before(OpKind::Write, "m/b", false), Some(stall));
        let stalls = |history: &Rc<RefCell<History>>| history.borrow().records.iter().filter(|r| matches!(&r.event, Event::DiskFault { fault, .. } if fault == "hidden-limit-stall")).count();
        assert_eq!(stalls(&store_history), 1);
        // After the stall, the array never stalls again.
        now.set(now.get() + stall.as_millis() as u64 + 1);
        store.write("m/c", &half).unwrap();
        assert_eq!(mx.wait_before(OpKind::Write, "q/c", false), None);
        assert_eq!(store.wait_before(OpKind::Write, "m/d", false), None);
    }

    #[test]
    fn only_synced_data_under_synced_names_survives_a_pessimistic_crash() {
        let disk = disk_at(Rc::new(Cell::new(0)), vec![]);
        disk.write("q/a", b"alpha").unwrap();
        disk.fsync("q/a").unwrap();
        disk.fsync_dir("q").unwrap();
        disk.write("q/c", b"gamma").unwrap();
        disk.fsync_dir("q").unwrap(); // name durable, data never synced
        disk.write("q/b", b"beta").unwrap();
        disk.fsync("q/b").unwrap(); // data synced, but the name was never made durable
        disk.write("q/a", b"alpha2").unwrap(); // an unsynced overwrite
        crash_to_media(&disk);
        assert_eq!(disk.list("q").unwrap(), vec!["a", "c"]);
        assert_eq!(disk.read("q/a").unwrap(), b"alpha");
        assert_eq!(disk.read("q/c").unwrap(), b"");
        assert_eq!(disk.read("q/b"), Err(DiskError::NotFound));
    }

    #[test]
    fn a_rename_survives_only_after_the_directory_sync() {
        let disk = disk_at(Rc::new(Cell::new(0)), vec![]);
        disk.write("m/tmp/x", b"msg").unwrap();
        disk.fsync("m/tmp/x").unwrap();
        disk.fsync_dir("m/tmp").unwrap();
        disk.rename("m/tmp/x", "m/new/x").unwrap();
        crash_to_media(&disk);
        assert_eq!(disk.list("m/new").unwrap(), Vec::<String>::new());
        assert_eq!(disk.read("m/tmp/x").unwrap(), b"msg");
        disk.rename("m/tmp/x", "m/new/x").unwrap();
        disk.fsync_dir("m/new").unwrap();
        crash_to_media(&disk);
        assert_eq!(disk.read("m/new/x").unwrap(), b"msg");
        assert_eq!(disk.list("m/tmp").unwrap(), Vec::<String>::new());
    }

    #[test]
    fn ext4_fsync_of_a_new_file_also_keeps_its_name() {
        let (disk, _) = disk_with(Rc::new(Cell::new(0)), "linux-ext4-ordered", vec![]);
        disk.write("q/a", b"alpha").unwrap();
        disk.fsync("q/a").unwrap();
        crash_to_media(&disk);
        assert_eq!(disk.read("q/a").unwrap(), b"alpha");
    }

    #[test]
    fn fault_windows_apply_only_inside_their_time_path_and_ops() {
        let now = Rc::new(Cell::new(0));
        let eio = FaultWindow { kind: FaultKind::Eio, start_ms: 10, end_ms: 20, path_prefix: "q/".into(), ops: vec![OpKind::Fsync], nth: None };
        let stall = FaultWindow::new(FaultKind::Stall, 30, 45);
        let disk = disk_at(now.clone(), vec![eio, stall]);
        disk.write("q/a", b"x").unwrap();
        now.set(15);
        assert_eq!(disk.write("q/a", b"y"), Ok(()));
        assert_eq!(disk.fsync("q/a"), Err(DiskError::Io));
        assert_eq!(disk.fsync_dir("q"), Ok(()));
        now.set(20);
        assert_eq!(disk.fsync("q/a"), Ok(()));
        now.set(31);
        assert_eq!(disk.wait_before(OpKind::Read, "q/a", false), Some(Duration::from_millis(14)));
        now.set(45);
        assert_eq!(disk.wait_before(OpKind::Read, "q/a", true), None);
        assert_eq!(disk.fired_counts(), vec![1, 1]);
    }

    #[test]
    fn a_failed_fsync_drops_the_dirty_pages_and_the_next_one_succeeds_without_them() {
        let fail = FaultWindow { nth: Some(1), ..FaultWindow::new(FaultKind::FsyncFail, 0, 1000) };
        let disk = disk_at(Rc::new(Cell::new(0)), vec![fail]);
        disk.write("q/a", b"alpha").unwrap();
        disk.fsync_dir("q").unwrap();
        assert_eq!(disk.fsync("q/a"), Err(DiskError::Io));
        assert_eq!(disk.fsync("q/a"), Ok(())); // fsyncgate: Ok, but nothing was written
        assert_eq!(disk.read("q/a").unwrap(), b"alpha"); // the page cache still shows it
        crash_to_media(&disk);
        assert_eq!(disk.read("q/a").unwrap(), b"");
    }

    #[test]
    fn a_lying_fsync_is_reported_when_a_crash_drops_what_it_promised() {
        let (disk, history) = disk_with(Rc::new(Cell::new(0)), "lying-fsync", vec![]);
        disk.write("q/a", b"alpha").unwrap();
        disk.fsync("q/a").unwrap();
        disk.fsync_dir("q").unwrap();
        assert_eq!(disk.durable_image().get("q/a").map(|bytes| bytes.as_slice()), Some(&b"alpha"[..]));
        disk.failover(); // drops everything not on the media, like the worst crash
        assert_eq!(disk.list("q").unwrap(), Vec::<String>::new());
        let dropped = history.borrow().records.iter().filter(|r| matches!(r.event, Event::DiskDropped { .. })).count();
        assert_eq!(dropped, 2, "the name and the data were promised");
    }

    #[test]
    fn a_lost_write_that_fsync_acknowledged_is_reported_as_dropped_by_the_device() {
        let lost = FaultWindow { nth: Some(1), ..FaultWindow::new(FaultKind::LostWrite, 0, 1000) };
        let (disk, history) = disk_with(Rc::new(Cell::new(0)), "posix-strict", vec![lost]);
        disk.write("q/a", b"alpha").unwrap();
        disk.fsync("q/a").unwrap();
        disk.fsync_dir("q").unwrap();
        assert_eq!(disk.read("q/a").unwrap(), b"alpha"); // readable from the cache
        disk.crash();
        assert_eq!(disk.read("q/a").unwrap(), b"", "the name survived, the data never reached the media");
        let dropped: Vec<String> = history.borrow().records.iter().filter_map(|r| match &r.event { Event::DiskDropped { op, path } => Some(format!("{op} {path}")), _ => None }).collect();
        assert_eq!(dropped, ["write q/a"]);
    }

    #[test]
    fn bit_rot_persists_until_rewritten_and_misdirected_writes_hit_a_neighbour() {
        let rot = FaultWindow { nth: Some(1), ..FaultWindow::new(FaultKind::BitRot, 0, 1000) };
        let misdirect = FaultWindow { nth: Some(3), ..FaultWindow::new(FaultKind::MisdirectedWrite, 0, 1000) };
        let disk = disk_at(Rc::new(Cell::new(0)), vec![rot, misdirect]);
        disk.write("d/a", b"alpha").unwrap();
        disk.write("d/b", b"beta").unwrap();
        let damaged = disk.read("d/a").unwrap();
        assert_ne!(damaged, b"alpha");
        assert_eq!(disk.read("d/a").unwrap(), damaged);
        disk.write("d/c", b"gamma").unwrap(); // lands on d/a
        assert_eq!(disk.read("d/a").unwrap(), b"gamma");
        assert_eq!(disk.read("d/c").unwrap(), b"");
    }

    #[test]
    fn profile_limits_give_enospc_and_errors_remount_read_only() {
        let eio = FaultWindow { ops: vec![OpKind::Fsync], ..FaultWindow::new(FaultKind::Eio, 0, 1000) };
        let full = FaultWindow::new(FaultKind::Full { max_bytes: 8, max_files: 0 }, 0, 1000);
        let disk = disk_at(Rc::new(Cell::new(0)), vec![eio, full]);
        assert_eq!(disk.write("d/a", b"12345"), Ok(()));
        assert_eq!(disk.write("d/b", b"12345"), Err(DiskError::NoSpace));
        assert_eq!(disk.remove("d/a"), Ok(()));
        assert_eq!(disk.write("d/b", b"12345"), Ok(()));
        let ro = FaultWindow::new(FaultKind::ReadOnly, 0, 1000);
        let disk = disk_at(Rc::new(Cell::new(0)), vec![ro]);
        assert_eq!(disk.write("d/a", b"x"), Err(DiskError::ReadOnly));
        assert!(disk.list("d").is_ok());
    }

    #[test]
    fn a_rollback_restores_the_snapshot_under_its_prefix() {
        let disk = disk_at(Rc::new(Cell::new(0)), vec![]);
        for (path, bytes) in [("m/a", &b"one"[..]), ("q/x", b"queue")] {
            disk.write(path, bytes).unwrap();
            disk.fsync(path).unwrap();
            disk.fsync_dir(parent(path)).unwrap();
        }
        disk.snapshot();
        disk.write("m/b", b"two").unwrap();
        disk.fsync("m/b").unwrap();
        disk.fsync_dir("m").unwrap();
        disk.remove("q/x").unwrap();
        disk.fsync_dir("q").unwrap();
        disk.rollback("m/");
        assert_eq!(disk.list("m").unwrap(), vec!["a"]);
        assert_eq!(disk.list("q").unwrap(), Vec::<String>::new());
    }

    #[test]
    fn a_latency_spike_delays_once_and_then_lets_the_operation_through() {
        let now = Rc::new(Cell::new(0));
        let disk = disk_at(now.clone(), vec![FaultWindow::new(FaultKind::Latency { ms: 250 }, 0, 1000)]);
        assert_eq!(disk.wait_before(OpKind::Write, "a", false), Some(Duration::from_millis(250)));
        now.set(250);
        assert_eq!(disk.wait_before(OpKind::Write, "a", true), None);
    }

    #[test]
    fn concurrent_operations_on_one_path_each_wait_one_spike_only() {
        // Three fsyncs of one directory ask at once: each waits its own 15 s, none takes
        // another's turn (a shared grant once turned a 15 s spike into minutes, then EIO).
        let now = Rc::new(Cell::new(0));
        let disk = disk_at(now.clone(), vec![FaultWindow::new(FaultKind::Latency { ms: 15_000 }, 0, 100_000)]);
        for _ in 0..3 {
            assert_eq!(disk.wait_before(OpKind::FsyncDir, "q", false), Some(Duration::from_millis(15_000)));
        }
        now.set(15_000);
        for _ in 0..3 {
            assert_eq!(disk.wait_before(OpKind::FsyncDir, "q", true), None);
        }
    }

    #[test]
    fn a_limited_disk_full_fires_only_on_the_writes_it_refuses() {
        let full = FaultWindow::new(FaultKind::Full { max_bytes: 10, max_files: 0 }, 0, 1000);
        let disk = disk_at(Rc::new(Cell::new(0)), vec![full]);
        assert_eq!(disk.write("q/a", b"12345"), Ok(()));
        assert_eq!(disk.fired_counts(), vec![0]);
        assert_eq!(disk.write("q/b", b"1234567890"), Err(DiskError::NoSpace));
        assert_eq!(disk.fired_counts(), vec![1]);
    }
}
