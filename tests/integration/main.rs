//! Integration tests of mailchaos: features, not code.

mod bad_input;
mod checkers;
mod cli;
mod live;
mod mutations;
mod outage;
mod regressions;
mod smtp;
mod snapshot;
mod storage;
mod storage_cli;
mod surge;
mod support;
