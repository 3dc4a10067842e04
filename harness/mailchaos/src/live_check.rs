//! `mailchaos check FILE`: a live history (`serve --history FILE`) judged by every checker that
//! applies to one (`check::LIVE_INVARIANTS`), with the verdict lines and exit codes of `run`.
//!
//! The file is read line by line with a bound on each line and on the number of records; a last
//! line without its newline (a kill -9 or power cut in the middle of a write) was never complete
//! and is left out, and said so. Any other line that is not a record is bad input, named by
//! `file:line:col`.

use crate::bad_input::BadInput;
use crate::report::{say_explained, tally};
use crate::shared::say_line;
use history::{History, Record, RunOutput};
use std::io::{BufRead as _, BufReader, Read as _};
use std::path::Path;

/// The longest record line read: a record names a few paths, a reply, a command line (at
/// most 1000 octets on the wire, escaped), never message bodies.
const MAX_LINE_BYTES: u64 = 1 << 20;

/// The most records judged in one go (about 5 GB of memory for the checkers' facts).
const MAX_RECORDS: usize = 20_000_000;

/// Violations explained with their evidence under the verdict line.
const EXPLAINED: usize = 10;

pub fn check(path: &Path) -> Result<bool, BadInput> {
    let (records, torn) = read_history(path)?;
    if records.is_empty() {
        return Err(BadInput(format!("{}: the history holds no record: nothing to judge", path.display())));
    }
    let count = records.len();
    let output = RunOutput::as_recorded(History { records, ..History::default() }, false);
    if torn {
        say_line(&format!("note: the last line of {} was cut off (a write interrupted by a kill or power cut) and is not judged", path.display()));
    }
    let violations = check::check_live(&output);
    let judged = check::LIVE_INVARIANTS.join(",");
    let verdict = if violations.is_empty() { "ok" } else { "violation" };
    say_line(&format!("{verdict} history={} records={count} judged={judged} violated=[{}]", path.display(), tally(&violations)));
    say_explained(&output, &violations, EXPLAINED);
    Ok(violations.is_empty())
}

/// The records of the file, and whether its last line was torn.
fn read_history(path: &Path) -> Result<(Vec<Record>, bool), BadInput> {
    let name = path.display();
    let file = match std::fs::metadata(path) {
        Ok(metadata) if !metadata.is_file() => return Err(BadInput(format!("{name}: not a regular file"))),
        Ok(_) => std::fs::File::open(path).map_err(|error| BadInput(format!("{name}: cannot open: {error}")))?,
        Err(error) => return Err(BadInput(format!("{name}: cannot open: {error}"))),
    };
    let mut reader = BufReader::with_capacity(256 * 1024, file);
    let mut records = Vec::new();
    let mut line = Vec::new();
    for number in 1.. {
        line.clear();
        let read = reader.by_ref().take(MAX_LINE_BYTES + 1).read_until(b'\n', &mut line).map_err(|error| BadInput(format!("{name}:{number}: cannot read: {error}")))?;
        if read == 0 {
            break;
        }
        if line.last() != Some(&b'\n') {
            if line.len() as u64 > MAX_LINE_BYTES {
                return Err(BadInput(format!("{name}:{number}:1: a line longer than {MAX_LINE_BYTES} bytes is not a history record")));
            }
            return Ok((records, true));
        }
        if records.len() == MAX_RECORDS {
            return Err(BadInput(format!("{name}:{number}: more than {MAX_RECORDS} records: split the history (each serve start is a good place)")));
        }
        let record = serde_json::from_slice::<Record>(&line).map_err(|error| {
            // serde_json ends its message with its own "at line 1 column N": the place is ours.
            let message = error.to_string();
            let message = message.split(" at line ").next().unwrap_or_default().to_string();
            BadInput(format!("{name}:{number}:{}: not a history record: {message}", error.column().max(1)))
        })?;
        records.push(record);
    }
    Ok((records, false))
}
