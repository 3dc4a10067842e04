//! `scenarios/regressions/`: each hand-written scenario once showed a false alarm, a wrong
//! blame or a modelling fault of the harness, and each shrunk one (`shrunk-*.toml`, see
//! `shrink.rs`) is the smallest run a planted defect failed; the clean stack must pass every
//! one of them.

use mailchaos::cli::judge;
use sim::scenario;
use sim::seed::Seed;
use stack::Defects;
use std::path::Path;

#[test]
fn the_clean_stack_passes_every_regression_scenario() {
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios/regressions");
    let files = scenario::files_of(&folder).expect("the regressions folder");
    assert!(files.len() >= 2, "{files:?}");
    for file in files {
        let loaded = scenario::load(&file).unwrap_or_else(|error| panic!("{}: {error}", file.display()));
        for seed in 1..=8 {
            let judged = judge(&loaded, Seed(seed), &Defects::none());
            assert!(judged.violations.is_empty(), "{} seed {seed}: {:?}", file.display(), &judged.violations[..judged.violations.len().min(3)]);
            assert!(judged.output.drained_at_ms.is_some(), "{} seed {seed} idled to its horizon", file.display());
        }
    }
}
