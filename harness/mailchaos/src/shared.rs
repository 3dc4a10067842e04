//! What every command shares: printing a line (a closed stdout ends the program quietly, so
//! `mailchaos run | head` is no error), the program's name for repro lines, and the defects a
//! command line names. Its own module so the commands (`cli`, `swarm`) use it without using
//! each other.

use crate::bad_input::BadInput;
use stack::{Defect, Defects};
use std::io::Write as _;

/// Prints one line; when stdout is closed (a pipe's reader went away) the program exits 0.
/// A progress bar on the terminal is hidden while the line is written (`progress::suspended`).
pub fn say_line(line: &str) {
    let written = crate::progress::suspended(|| {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{line}").is_ok() && stdout.flush().is_ok()
    });
    if !written {
        crate::progress::clear();
        std::process::exit(0);
    }
}

/// The program as the user invoked it when that was a path (./target/release/mailchaos), so the
/// repro line can be pasted as it is; otherwise plain `mailchaos`.
pub fn program() -> String {
    std::env::args().next().filter(|arg0| arg0.contains('/') && !arg0.contains("/deps/")).unwrap_or_else(|| "mailchaos".into())
}

pub fn parse_defects(names: &[String]) -> Result<Defects, BadInput> {
    let mut defects = Vec::new();
    for name in names {
        let defect = Defect::parse(name).ok_or_else(|| {
            let known: Vec<&str> = Defect::ALL.iter().map(|d| d.name()).collect();
            BadInput(format!("unknown defect '{name}'; expected one of: {}", known.join(", ")))
        })?;
        defects.push(defect);
    }
    Ok(Defects::of(&defects))
}
