//! Integration tests of mailchaos: features, not code.

mod checkers;
mod cli;
mod snapshot;
mod support;
