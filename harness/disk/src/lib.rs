//! The storage seen by the stack: a [`Disk`] handle over a [`Device`].
//!
//! Operations are whole-file and explicit about durability, as a mail store's are: `write`
//! creates or replaces a file's contents, `fsync` makes one file's contents durable, `fsync_dir`
//! makes the names in one directory durable (a new or renamed name survives a crash only after
//! it), `rename` is atomic in the running system. Directories are implicit: a path's directory
//! is everything before its last '/'.
//!
//! A device answers synchronously; the only asynchronous part is the wait a device may impose
//! before an operation (a stall that lasts days, a latency spike). That keeps devices simple and
//! lets the stack `await` storage like real I/O.
//!
//! This crate is all the stack knows of storage. It must never know the devices behind the
//! trait — persistence profiles, fault windows, crash states — which live in `devices`: the
//! stack sees errors and waits, never why.

pub use history::parent;

pub mod mem;

use std::fmt;
use std::rc::Rc;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    /// Writing a whole file.
    Write,
    /// Reading a whole file.
    Read,
    /// fsync of a file.
    Fsync,
    /// fsync of a directory (makes its entries durable). A scenario spells it `fsync-dir`, like
    /// its other multi-word values; `fsync_dir`, the first spelling, is still accepted. The
    /// history keeps `fsync_dir` (`name`), so recorded runs keep their digests.
    #[serde(rename = "fsync-dir", alias = "fsync_dir")]
    FsyncDir,
    /// Renaming a file.
    Rename,
    /// Removing (unlinking) a file.
    Remove,
    /// Listing a directory.
    List,
}

impl OpKind {
    pub const ALL: &'static [OpKind] = &[OpKind::Write, OpKind::Read, OpKind::Fsync, OpKind::FsyncDir, OpKind::Rename, OpKind::Remove, OpKind::List];

    /// How a scenario's `ops` spells it (see `FsyncDir`).
    pub fn scenario_name(self) -> &'static str {
        match self {
            OpKind::FsyncDir => "fsync-dir",
            other => other.name(),
        }
    }

    /// How the history records it.
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Write => "write",
            OpKind::Read => "read",
            OpKind::Fsync => "fsync",
            OpKind::FsyncDir => "fsync_dir",
            OpKind::Rename => "rename",
            OpKind::Remove => "remove",
            OpKind::List => "list",
        }
    }

    /// Whether the operation changes what is stored (a read-only device refuses these).
    pub fn mutates(self) -> bool {
        matches!(self, OpKind::Write | OpKind::Rename | OpKind::Remove)
    }

    /// Whether the operation needs free space (a full device refuses these; unlink frees space
    /// and succeeds on a full file system).
    pub fn allocates(self) -> bool {
        matches!(self, OpKind::Write | OpKind::Rename)
    }
}

/// What a storage operation can fail with, named as the errno a real file system returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskError {
    /// EIO: the device failed the operation.
    Io,
    /// ENOSPC: no room for the bytes or the name.
    NoSpace,
    /// EROFS: the file system went read-only.
    ReadOnly,
    /// ENOENT.
    NotFound,
}

impl fmt::Display for DiskError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            DiskError::Io => "EIO",
            DiskError::NoSpace => "ENOSPC",
            DiskError::ReadOnly => "EROFS",
            DiskError::NotFound => "ENOENT",
        })
    }
}

/// A storage device. Implementations live in the `devices` crate: `SimDisk` (in memory, a
/// persistence profile's crash semantics and targeted faults) and `DirDisk` (a real
/// directory, with errors injected by fail points).
pub trait Device {
    /// How long an operation must wait before it is carried out (a stall window, a latency
    /// spike), or `None` to go ahead now. Asked again after the wait with `waited` set: the
    /// wait granted to this operation is served, so only a state that still holds (a device
    /// stalled past its hidden limit) may make it wait again. Each operation asks for itself,
    /// so concurrent operations on one path never take each other's turn.
    fn wait_before(&self, op: OpKind, path: &str, waited: bool) -> Option<Duration>;
    fn write(&self, path: &str, bytes: &[u8]) -> Result<(), DiskError>;
    fn read(&self, path: &str) -> Result<Vec<u8>, DiskError>;
    fn fsync(&self, path: &str) -> Result<(), DiskError>;
    fn fsync_dir(&self, dir: &str) -> Result<(), DiskError>;
    fn rename(&self, from: &str, to: &str) -> Result<(), DiskError>;
    fn remove(&self, path: &str) -> Result<(), DiskError>;
    /// Names (not paths) directly inside `dir`, sorted.
    fn list(&self, dir: &str) -> Result<Vec<String>, DiskError>;
}

/// The stack's handle on its storage.
#[derive(Clone)]
pub struct Disk {
    device: Rc<dyn Device>,
}

/// Upper bound on consecutive waits of one operation: a device that keeps asking to wait after
/// this many rounds is treated as failing the operation rather than hanging the run forever.
const MAX_WAIT_ROUNDS: u32 = 64;

impl Disk {
    pub fn new(device: Rc<dyn Device>) -> Disk {
        Disk { device }
    }

    async fn gate(&self, op: OpKind, path: &str) -> Result<(), DiskError> {
        let mut waited = false;
        for _ in 0..MAX_WAIT_ROUNDS {
            match self.device.wait_before(op, path, waited) {
                None => return Ok(()),
                Some(wait) => tokio::time::sleep(wait).await,
            }
            waited = true;
        }
        Err(DiskError::Io)
    }

    pub async fn write(&self, path: &str, bytes: &[u8]) -> Result<(), DiskError> {
        self.gate(OpKind::Write, path).await?;
        self.device.write(path, bytes)
    }

    pub async fn read(&self, path: &str) -> Result<Vec<u8>, DiskError> {
        self.gate(OpKind::Read, path).await?;
        self.device.read(path)
    }

    pub async fn fsync(&self, path: &str) -> Result<(), DiskError> {
        self.gate(OpKind::Fsync, path).await?;
        self.device.fsync(path)
    }

    pub async fn fsync_dir(&self, dir: &str) -> Result<(), DiskError> {
        self.gate(OpKind::FsyncDir, dir).await?;
        self.device.fsync_dir(dir)
    }

    pub async fn rename(&self, from: &str, to: &str) -> Result<(), DiskError> {
        self.gate(OpKind::Rename, from).await?;
        self.device.rename(from, to)
    }

    pub async fn remove(&self, path: &str) -> Result<(), DiskError> {
        self.gate(OpKind::Remove, path).await?;
        self.device.remove(path)
    }

    pub async fn list(&self, dir: &str) -> Result<Vec<String>, DiskError> {
        self.gate(OpKind::List, dir).await?;
        self.device.list(dir)
    }
}
