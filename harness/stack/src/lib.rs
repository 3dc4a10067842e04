//! The system under test: a miniature but real mail stack.
//!
//! It knows nothing about faults, seeds or checks. Each component gets an [`Env`]: a journal to
//! report what it did (like a log), its host's [`Disk`], a [`net::Net`] to open sockets, and the
//! set of planted [`Defect`]s (off unless a run switches them on). Time is tokio's.
//!
//! The compiler keeps it that way: this crate depends on `history`, `disk` (the trait, not the
//! devices behind it) and `mail` (formats) only. It must never know turmoil, the scenario, the
//! simulator, the devices or the checkers; live mode and the simulator both drive it as it is.

pub mod client;
pub mod client_imap;
pub mod conn;
pub mod defects;
pub mod imap;
pub mod inbound;
pub mod login;
pub mod mx;
pub mod net;
pub mod pop3;
pub mod queue;
pub mod returns;
pub mod sender;
pub mod store;
pub mod store_host;
pub mod wire;

pub use defects::{Defect, Defects};

use disk::{Disk, DiskError};
use history::Journal;
use std::rc::Rc;

pub const SMTP_PORT: u16 = 25;
pub const LMTP_PORT: u16 = 24;
pub const POP3_PORT: u16 = 110;
pub const IMAP_PORT: u16 = 143;

/// What a component of the stack may touch.
#[derive(Clone)]
pub struct Env {
    pub journal: Journal,
    pub disk: Disk,
    pub net: Rc<dyn net::Net>,
    pub defects: Defects,
}

/// Why a step of the stack stopped.
#[derive(Debug)]
pub enum StackError {
    Disk(DiskError),
    /// A fail point was armed to simulate a crash here: stop at once, answer nothing.
    CrashPoint(&'static str),
}

impl From<DiskError> for StackError {
    fn from(error: DiskError) -> Self {
        StackError::Disk(error)
    }
}

/// A fail point at a critical step of the stack. When the world arms it (deterministically:
/// `1*return`, never `p%`), the step records the hit and returns `StackError::CrashPoint`, and the
/// world crashes the host before anything else happens on it.
#[macro_export]
macro_rules! crash_point {
    ($env:expr, $name:literal) => {
        fail::fail_point!($name, |_| {
            $env.journal.record(::history::Event::CrashPoint { point: $name.into() });
            Err($crate::StackError::CrashPoint($name))
        })
    };
}

/// fsync of one file. An error means the data may never reach the disk — Linux drops the dirty
/// pages and the next fsync answers Ok ("fsyncgate", PostgreSQL 2018) — so the caller must fail
/// its transaction, never retry the fsync and trust it.
pub async fn fsync_file(env: &Env, path: &str) -> Result<(), disk::DiskError> {
    match env.disk.fsync(path).await {
        Err(_) if env.defects.has(Defect::FsyncErrorIgnored) => env.disk.fsync(path).await,
        result => result,
    }
}

/// Every fail point of the stack, for the CLI and for scenarios to name.
pub const CRASH_POINTS: &[&str] = &[
    "mx-after-queue-write",
    "mx-after-fsync-before-250",
    "mx-after-lmtp-2xx-before-record",
    "store-after-rename-before-dirsync",
    "store-after-tmp-write-before-fsync",
    "store-after-mark-read-rename",
];
