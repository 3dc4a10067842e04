//! The devices behind a [`disk::Disk`]: what storage does with what the stack asks of it.
//!
//! - [`sim::SimDisk`]: in memory, under a persistence [`profile::Profile`] (what survives a
//!   crash, whether fsync tells the truth) and scheduled fault windows (the storage fault
//!   taxonomy);
//! - [`crash`]: which states a crash may leave, under a profile's rules, for crash exploration;
//! - [`dir::DirDisk`]: a real directory, with errors injected by fail points.
//!
//! The simulator and the CLI build devices; the stack never sees this crate (it sees only the
//! `disk` trait), so it cannot know which faults exist or when they strike. Devices record
//! what they did (writes, syncs, drops) in the history, so a stack that skips a sync cannot
//! hide it.

pub mod crash;
pub mod dir;
pub mod profile;
pub mod sim;
