//! mailchaos: a deterministic simulation harness for a miniature but real mail stack.
//!
//! Layers, with one-way dependencies (see ARCHITECTURE.md):
//! `scenario` (data) → `world` (turmoil, phases, faults) → `history` (events) → `check` → `report`.
//! The `stack` is the system under test; it sees only a [`disk::Disk`], sockets ([`stack::net::Net`])
//! and time, and never imports `world`, `check` or `scenario`.

pub mod check;
pub mod cli;
pub mod disk;
pub mod explore;
pub mod history;
pub mod ledger;
pub mod live;
pub mod report;
pub mod scenario;
pub mod seed;
pub mod stack;
pub mod verify;
pub mod world;
