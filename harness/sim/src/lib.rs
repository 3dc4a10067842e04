//! The simulator: it turns a scenario and a seed into a run of the stack and its history.
//!
//! - [`scenario`]: the scenario model (plain TOML data) and its validation;
//! - [`reference`]: the scenario reference, generated from the model's doc comments;
//! - [`seed`]: the root seed and its derived ChaCha streams;
//! - [`world`]: what a seed makes of a scenario (the plan), the turmoil world with one host per
//!   component, the fault scheduler, the phases chaos → heal → quiesce → final sweep;
//! - [`swarm`]: a whole scenario drawn from a seed (swarm testing);
//! - [`explore`]: crash states at every crash and fail-point hit, recovered and judged;
//! - [`shrink`]: a failing run made small while the same invariant still fails;
//! - [`ledger`]: the durable account of what a store on a real directory acknowledged.
//!
//! This is the only crate that knows turmoil and the fault schedule. It builds the stack's
//! hosts and devices and hands the recorded [`history::RunOutput`] to the checkers; the stack
//! never sees it, and the checkers never see it either (they get the run's output only).

pub mod explore;
pub mod floor;
pub mod ledger;
pub mod reference;
pub mod scenario;
pub mod seed;
pub mod shrink;
pub mod swarm;
pub mod world;
