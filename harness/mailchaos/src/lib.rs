//! mailchaos: a deterministic simulation harness for a miniature but real mail stack. This
//! crate is the top of the layers: the command line, the reports, live mode (the stack on real
//! sockets) and `verify-store` (a real store directory judged against its ledger). It may use
//! every other crate; none may use it.
//!
//! The layers below, with one-way dependencies (ARCHITECTURE.md draws them):
//! `history` ← `mail` ← `disk` ← `stack`, `devices`; `check` (history and mail only);
//! `sim` (scenario, world, explore) over all of them.

pub mod bad_input;
pub mod bench;
pub mod cli;
pub mod drive;
pub mod jobs;
pub mod live;
pub mod live_check;
pub mod merge;
pub mod progress;
pub mod report;
pub mod results;
pub mod shard;
pub mod shared;
pub mod source;
pub mod swarm;
pub mod timeline;
pub mod verify;
pub mod whatif;
