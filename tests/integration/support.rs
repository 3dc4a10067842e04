//! Helpers shared by the integration tests.

use mailchaos::cli::{judge, EMBEDDED_FAST};
use sim::scenario::{self, Loaded};
use sim::seed::Seed;
use stack::{Defect, Defects};
use std::collections::BTreeSet;
use std::path::PathBuf;

/// A fast-suite scenario by its file stem, from the copy embedded in the binary.
pub fn fast(name: &str) -> Loaded {
    let wanted = format!("scenarios/fast/{name}.toml");
    let (path, text) = EMBEDDED_FAST.iter().find(|(path, _)| *path == wanted).unwrap_or_else(|| panic!("no fast scenario {name}"));
    Loaded { path: PathBuf::from(path), scenario: scenario::parse(path, text).expect("embedded scenarios are valid") }
}

/// The invariants violated in any of the seeds 1..=seeds of a scenario.
pub fn violated(name: &str, seeds: u64, defects: &[Defect]) -> BTreeSet<&'static str> {
    let loaded = fast(name);
    let defects = Defects::of(defects);
    (1..=seeds).flat_map(|seed| judge(&loaded, Seed(seed), &defects).violations).map(|violation| violation.invariant).collect()
}

pub fn set(names: &[&'static str]) -> BTreeSet<&'static str> {
    names.iter().copied().collect()
}
