//! SimDisk: an in-memory device with POSIX-strict crash semantics and scheduled faults.
//!
//! Model: names point to inodes; an inode has its current contents and the contents of its last
//! successful fsync. The durable namespace changes only by `fsync_dir` of a directory. A crash
//! keeps exactly the durable namespace, and each surviving name shows the contents of its inode's
//! last fsync (an empty file when it was never synced: the name survived, the data did not).
//! This is the `posix-strict` profile; the richer profiles (reordering, torn and lost writes,
//! lying fsync, rollback) extend this state with an ordered log of unsynced operations.

use super::{parent, Device, DiskError, OpKind};
use crate::history::{Clock, Event, Journal};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::Duration;

/// Upper bound on files per disk: a runaway writer hits ENOSPC instead of exhausting memory.
pub const MAX_FILES: usize = 200_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// Every matching operation waits until the window ends.
    Stall,
    /// Matching operations fail with EIO.
    Eio,
    /// Operations that allocate (write, rename) fail with ENOSPC.
    Full,
}

/// A fault active on this disk in [start_ms, end_ms), aimed by path prefix and operation kinds.
#[derive(Clone, Debug)]
pub struct FaultWindow {
    pub kind: FaultKind,
    pub start_ms: u64,
    pub end_ms: u64,
    pub path_prefix: String,
    /// Empty means every kind of operation.
    pub ops: Vec<OpKind>,
}

impl FaultWindow {
    fn matches(&self, now_ms: u64, op: OpKind, path: &str) -> bool {
        (self.start_ms..self.end_ms).contains(&now_ms)
            && path.starts_with(&self.path_prefix)
            && (self.ops.is_empty() || self.ops.contains(&op))
    }
}

#[derive(Default)]
struct Inode {
    data: Vec<u8>,
    /// Contents at the last successful fsync; `None` if never synced.
    synced: Option<Vec<u8>>,
}

#[derive(Default)]
struct State {
    inodes: BTreeMap<u64, Inode>,
    next_inode: u64,
    names: BTreeMap<String, u64>,
    durable_names: BTreeMap<String, u64>,
}

pub struct SimDisk {
    state: RefCell<State>,
    faults: Vec<FaultWindow>,
    /// How often each fault window made an operation wait or fail, by index in `faults`.
    fired: RefCell<Vec<u64>>,
    journal: Journal,
    clock: Clock,
}

impl SimDisk {
    pub fn new(journal: Journal, faults: Vec<FaultWindow>) -> SimDisk {
        let fired = RefCell::new(vec![0; faults.len()]);
        SimDisk { state: RefCell::default(), clock: journal.clock(), faults, fired, journal }
    }

    /// Loses everything that was not made durable, as a power cut or kernel crash would.
    pub fn crash(&self) {
        let mut state = self.state.borrow_mut();
        let survivors = state.durable_names.clone();
        let mut inodes = BTreeMap::new();
        for inode_id in survivors.values() {
            let synced = state.inodes.get(inode_id).and_then(|inode| inode.synced.clone());
            let data = synced.clone().unwrap_or_default();
            inodes.insert(*inode_id, Inode { data, synced: Some(synced.unwrap_or_default()) });
        }
        state.inodes = inodes;
        state.names = survivors;
    }

    /// Records the host's crash in the history (the world calls this after `crash`).
    pub fn journal_crash(&self) {
        self.journal.record(Event::Crash);
    }

    pub fn journal_restart(&self) {
        self.journal.record(Event::Restart);
    }

    /// The files a crash right now would leave, with their contents: what checkers judge.
    pub fn durable_image(&self) -> BTreeMap<String, Vec<u8>> {
        let state = self.state.borrow();
        state
            .durable_names
            .iter()
            .map(|(path, inode_id)| {
                let data = state.inodes.get(inode_id).and_then(|inode| inode.synced.clone());
                (path.clone(), data.unwrap_or_default())
            })
            .collect()
    }

    /// How many operations each configured fault window touched.
    pub fn fired_counts(&self) -> Vec<u64> {
        self.fired.borrow().clone()
    }

    fn now_ms(&self) -> u64 {
        (self.clock)()
    }

    /// The error an active EIO/full window imposes on this operation, if any.
    fn injected_error(&self, op: OpKind, path: &str) -> Option<DiskError> {
        let now_ms = self.now_ms();
        for (index, window) in self.faults.iter().enumerate() {
            let error = match window.kind {
                FaultKind::Eio => DiskError::Io,
                FaultKind::Full if op.allocates() => DiskError::NoSpace,
                _ => continue,
            };
            if window.matches(now_ms, op, path) {
                self.fired.borrow_mut()[index] += 1;
                return Some(error);
            }
        }
        None
    }

    /// Runs one operation: injected faults first, then the model; records the outcome.
    fn apply<T>(
        &self,
        op: OpKind,
        path: &str,
        event: impl FnOnce() -> Option<Event>,
        body: impl FnOnce(&mut State) -> Result<T, DiskError>,
    ) -> Result<T, DiskError> {
        let result = match self.injected_error(op, path) {
            Some(error) => Err(error),
            None => body(&mut self.state.borrow_mut()),
        };
        match &result {
            Ok(_) => {
                if let Some(event) = event() {
                    self.journal.record(event);
                }
            }
            Err(error) => self.journal.record(Event::DiskError {
                op: op.name().to_string(),
                path: path.to_string(),
                error: error.to_string(),
            }),
        }
        result
    }
}

impl Device for SimDisk {
    fn wait_before(&self, op: OpKind, path: &str) -> Option<Duration> {
        let now_ms = self.now_ms();
        let (index, window) = self
            .faults
            .iter()
            .enumerate()
            .find(|(_, window)| window.kind == FaultKind::Stall && window.matches(now_ms, op, path))?;
        self.fired.borrow_mut()[index] += 1;
        Some(Duration::from_millis(window.end_ms - now_ms))
    }

    fn write(&self, path: &str, bytes: &[u8]) -> Result<(), DiskError> {
        let event = || Some(Event::DiskWrite { path: path.to_string(), len: bytes.len() as u64 });
        self.apply(OpKind::Write, path, event, |state| {
            if let Some(inode_id) = state.names.get(path).copied() {
                if let Some(inode) = state.inodes.get_mut(&inode_id) {
                    inode.data = bytes.to_vec();
                    return Ok(());
                }
            }
            if state.names.len() >= MAX_FILES {
                return Err(DiskError::NoSpace);
            }
            let inode_id = state.next_inode;
            state.next_inode += 1;
            state.inodes.insert(inode_id, Inode { data: bytes.to_vec(), synced: None });
            state.names.insert(path.to_string(), inode_id);
            Ok(())
        })
    }

    fn read(&self, path: &str) -> Result<Vec<u8>, DiskError> {
        self.apply(OpKind::Read, path, || None, |state| {
            let inode_id = state.names.get(path).ok_or(DiskError::NotFound)?;
            state.inodes.get(inode_id).map(|inode| inode.data.clone()).ok_or(DiskError::NotFound)
        })
    }

    fn fsync(&self, path: &str) -> Result<(), DiskError> {
        let event = || Some(Event::DiskSync { path: path.to_string() });
        self.apply(OpKind::Fsync, path, event, |state| {
            let inode_id = *state.names.get(path).ok_or(DiskError::NotFound)?;
            let inode = state.inodes.get_mut(&inode_id).ok_or(DiskError::NotFound)?;
            inode.synced = Some(inode.data.clone());
            Ok(())
        })
    }

    fn fsync_dir(&self, dir: &str) -> Result<(), DiskError> {
        let event = || Some(Event::DiskDirSync { dir: dir.to_string() });
        self.apply(OpKind::FsyncDir, dir, event, |state| {
            state.durable_names.retain(|path, _| parent(path) != dir);
            let entries: Vec<(String, u64)> = state
                .names
                .iter()
                .filter(|(path, _)| parent(path) == dir)
                .map(|(path, inode_id)| (path.clone(), *inode_id))
                .collect();
            state.durable_names.extend(entries);
            Ok(())
        })
    }

    fn rename(&self, from: &str, to: &str) -> Result<(), DiskError> {
        let event = || Some(Event::DiskRename { from: from.to_string(), to: to.to_string() });
        self.apply(OpKind::Rename, from, event, |state| {
            let inode_id = state.names.remove(from).ok_or(DiskError::NotFound)?;
            state.names.insert(to.to_string(), inode_id);
            Ok(())
        })
    }

    fn remove(&self, path: &str) -> Result<(), DiskError> {
        let event = || Some(Event::DiskRemove { path: path.to_string() });
        self.apply(OpKind::Remove, path, event, |state| {
            state.names.remove(path).map(|_| ()).ok_or(DiskError::NotFound)
        })
    }

    fn list(&self, dir: &str) -> Result<Vec<String>, DiskError> {
        self.apply(OpKind::List, dir, || None, |state| {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::History;
    use std::cell::Cell;
    use std::rc::Rc;

    fn disk_at(now: Rc<Cell<u64>>, faults: Vec<FaultWindow>) -> SimDisk {
        let history = Rc::new(RefCell::new(History::default()));
        SimDisk::new(Journal::new(history, "h", Rc::new(move || now.get())), faults)
    }

    #[test]
    fn only_synced_data_under_synced_names_survives_a_crash() {
        let disk = disk_at(Rc::new(Cell::new(0)), vec![]);
        disk.write("q/a", b"alpha").unwrap();
        disk.fsync("q/a").unwrap();
        disk.fsync_dir("q").unwrap();
        disk.write("q/c", b"gamma").unwrap();
        disk.fsync_dir("q").unwrap(); // name durable, data never synced
        disk.write("q/b", b"beta").unwrap();
        disk.fsync("q/b").unwrap(); // data synced, but the name was never made durable
        disk.write("q/a", b"alpha2").unwrap(); // an unsynced overwrite
        disk.crash();
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
        disk.crash();
        assert_eq!(disk.list("m/new").unwrap(), Vec::<String>::new());
        assert_eq!(disk.read("m/tmp/x").unwrap(), b"msg");
        disk.rename("m/tmp/x", "m/new/x").unwrap();
        disk.fsync_dir("m/new").unwrap();
        disk.fsync_dir("m/tmp").unwrap();
        disk.crash();
        assert_eq!(disk.read("m/new/x").unwrap(), b"msg");
        assert_eq!(disk.list("m/tmp").unwrap(), Vec::<String>::new());
    }

    #[test]
    fn fault_windows_apply_only_inside_their_time_path_and_ops() {
        let now = Rc::new(Cell::new(0));
        let eio = FaultWindow { kind: FaultKind::Eio, start_ms: 10, end_ms: 20, path_prefix: "q/".into(), ops: vec![OpKind::Fsync] };
        let stall = FaultWindow { kind: FaultKind::Stall, start_ms: 30, end_ms: 45, path_prefix: String::new(), ops: vec![] };
        let disk = disk_at(now.clone(), vec![eio, stall]);
        disk.write("q/a", b"x").unwrap();
        now.set(15);
        assert_eq!(disk.write("q/a", b"y"), Ok(()));
        assert_eq!(disk.fsync("q/a"), Err(DiskError::Io));
        assert_eq!(disk.fsync_dir("q"), Ok(()));
        now.set(20);
        assert_eq!(disk.fsync("q/a"), Ok(()));
        now.set(31);
        assert_eq!(disk.wait_before(OpKind::Read, "q/a"), Some(Duration::from_millis(14)));
        now.set(45);
        assert_eq!(disk.wait_before(OpKind::Read, "q/a"), None);
        assert_eq!(disk.fired_counts(), vec![1, 1]);
    }
}
