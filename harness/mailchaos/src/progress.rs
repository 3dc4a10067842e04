//! The progress bar of a long sweep: on stderr, and only when stderr is a terminal and the
//! command line did not say `--quiet`. It shows runs done of the total, the rate, the ETA and
//! the failures so far. It never touches stdout: every line the program prints goes through
//! `shared::say_line`, which hides the bar while it writes (`ProgressBar::suspend`), so the bar
//! and the output lines do not interleave on a terminal, and stdout is byte for byte what it
//! is without the bar. Wall time is read for the bar only; it never reaches a simulation.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal as _;
use std::sync::Mutex;
use std::time::Duration;

/// The bar being drawn, if any: `say_line` hides it while a line is written.
static ACTIVE: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Runs `write` with the bar (if one is drawn) hidden meanwhile.
pub fn suspended<R>(write: impl FnOnce() -> R) -> R {
    let active = ACTIVE.lock().ok().and_then(|active| active.clone());
    match active {
        Some(bar) => bar.suspend(write),
        None => write(),
    }
}

/// Takes the bar off the terminal for good (the program is about to exit without unwinding).
pub fn clear() {
    if let Some(bar) = ACTIVE.lock().ok().and_then(|mut active| active.take()) {
        bar.finish_and_clear();
    }
}

/// A sweep's progress; without a terminal on stderr (or with `--quiet`) it draws nothing.
pub struct Progress {
    bar: Option<ProgressBar>,
    failed: u64,
    /// What the runs are called on the bar: "runs", or "seeds" for check-determinism.
    failure_word: &'static str,
}

impl Progress {
    /// A bar of `total` runs, when stderr is a terminal and not `quiet`.
    pub fn start(total: usize, quiet: bool, failure_word: &'static str) -> Progress {
        let shown = !quiet && total > 0 && std::io::stderr().is_terminal();
        let bar = shown.then(|| {
            let bar = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
            let template = "{elapsed_precise} [{bar:30}] {pos}/{len} runs, {msg}, ETA {eta}";
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(format!("- runs/s, 0 {failure_word}"));
            // The elapsed time and the ETA move between runs too (an outage run takes minutes).
            bar.enable_steady_tick(Duration::from_millis(500));
            if let Ok(mut active) = ACTIVE.lock() {
                *active = Some(bar.clone());
            }
            bar
        });
        Progress { bar, failed: 0, failure_word }
    }

    /// One more run done; `failed` when it violated an invariant (or diverged).
    pub fn advance(&mut self, failed: bool) {
        self.failed += u64::from(failed);
        if let Some(bar) = &self.bar {
            bar.inc(1);
            let rate = bar.position() as f64 / bar.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!("{rate:.1} runs/s, {} {}", self.failed, self.failure_word));
        }
    }
}

impl Drop for Progress {
    /// The bar goes away when the sweep ends (or an error ends it): the summary stands alone.
    fn drop(&mut self) {
        if let Some(bar) = self.bar.take() {
            if let Ok(mut active) = ACTIVE.lock() {
                *active = None;
            }
            bar.finish_and_clear();
        }
    }
}
