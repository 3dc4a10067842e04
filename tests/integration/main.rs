//! Integration tests of mailchaos: features, not code.

mod bad_input;
mod browser;
mod checkers;
mod digests;
mod docs;
mod drive;
mod cli;
mod help;
mod live;
mod mutations;
mod outage;
mod regressions;
mod shards;
mod shrink;
mod smtp;
mod snapshot;
mod sources;
mod storage;
mod storage_cli;
mod surge;
mod swarm;
mod support;
mod timeline;
mod whatif;
