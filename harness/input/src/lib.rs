//! What the user hands us: scenario and profile files. This crate holds what both kinds of
//! input share — the error that names `file:line:col`, and the bounds every simulated span
//! must respect — so that the scenario model (in `sim`) and the persistence profiles (in
//! `devices`) report bad input alike without depending on each other.
//!
//! It must never know what a scenario or a profile contains: it is the common ground below
//! both.

mod read;
mod toml_keys;

pub use read::{read_input_bytes, read_input_file, MAX_INPUT_BYTES};
pub use toml_keys::Keys;

use std::fmt;

/// The longest simulated span any input may name (a horizon, a stall): 30 days.
pub const MAX_HORIZON_S: u64 = 30 * 86_400;

/// The most characters of a user's value an error message echoes: a 10 MB value is the
/// user's own, and printing it back whole buries the message.
pub const MAX_ECHOED_CHARS: usize = 80;

/// A bad input file: where, and what was expected. `line` 0 means the error has no place in a
/// file (a name that matches nothing, say): it is shown as `file: message`, or the message
/// alone when `file` is empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl InputError {
    /// An error about the file as a whole (it cannot be read, it is not a file): 1:1.
    pub fn whole_file(file: impl Into<String>, message: impl Into<String>) -> InputError {
        InputError { file: file.into(), line: 1, column: 1, message: message.into() }
    }

    /// An error at a byte offset of the file's text.
    pub fn at(file: &str, text: &str, offset: usize, message: impl Into<String>) -> InputError {
        let (line, column) = line_column(text, offset);
        InputError { file: file.to_string(), line, column, message: message.into() }
    }

    /// An error that names no place in a file (see the type's comment).
    pub fn unplaced(message: impl Into<String>) -> InputError {
        InputError { file: String::new(), line: 0, column: 0, message: message.into() }
    }
}

impl fmt::Display for InputError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.file.is_empty()) {
            (0, true) => write!(formatter, "{}", self.message),
            (0, false) => write!(formatter, "{}: {}", self.file, self.message),
            _ => write!(formatter, "{}:{}:{}: {}", self.file, self.line, self.column, self.message),
        }
    }
}

/// A value of the user's, shortened for an error message: at most `MAX_ECHOED_CHARS`
/// characters, then an ellipsis and how long it was.
pub fn clip(value: &str) -> String {
    match value.char_indices().nth(MAX_ECHOED_CHARS) {
        None => value.to_string(),
        Some((end, _)) => format!("{}… ({} bytes in all)", &value[..end], value.len()),
    }
}

/// A parser's message with every quoted stretch clipped: TOML's messages quote the offending
/// value (`invalid type: string "…"`) whatever its length.
pub fn clip_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len().min(1024));
    let mut rest = message;
    while let Some(open) = rest.find(['"', '`', '\'']) {
        let quote = rest[open..].chars().next().unwrap_or('"');
        out.push_str(&rest[..=open]);
        let after = &rest[open + 1..];
        let close = after.find(quote).unwrap_or(after.len());
        out.push_str(&clip(&after[..close]));
        rest = &after[close..];
        if let Some(stripped) = rest.strip_prefix(quote) {
            out.push(quote);
            rest = stripped;
        }
    }
    out.push_str(rest);
    out
}

/// A TOML parser's message about `text` at `span`, made fit to show: quoted values clipped,
/// and a date-time called one (the toml crate hands a date-time to serde as a map, so its
/// messages say "invalid type: map" for `horizon_s = 2023-01-23`).
pub fn toml_message(text: &str, span: Option<std::ops::Range<usize>>, message: &str) -> String {
    let at = span.and_then(|span| text.get(span.start..)).unwrap_or("");
    let message = match at.trim_start().starts_with(|c: char| c.is_ascii_digit()) {
        true => message.replacen("invalid type: map", "invalid type: date-time", 1),
        false => message.to_string(),
    };
    clip_quoted(&message)
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..floor_char_boundary(text, offset)];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map(|tail| tail.chars().count()).unwrap_or(0) + 1;
    (line, column)
}

/// The largest char boundary at or before `offset` (a span may point inside a character of
/// hostile input; slicing there would panic).
fn floor_char_boundary(text: &str, offset: usize) -> usize {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_count_characters_and_survive_offsets_inside_a_character() {
        assert_eq!(line_column("ab\ncd", 4), (2, 2));
        assert_eq!(line_column("é\nx", 1), (1, 1));
        assert_eq!(line_column("x", 99), (1, 2));
    }

    #[test]
    fn long_values_are_clipped_and_short_ones_kept() {
        assert_eq!(clip("anna"), "anna");
        let long = "x".repeat(10_000);
        let clipped = clip(&long);
        assert!(clipped.starts_with(&"x".repeat(MAX_ECHOED_CHARS)) && clipped.ends_with("… (10000 bytes in all)"), "{clipped}");
        let message = clip_quoted(&format!("invalid type: string \"{long}\", expected u64"));
        assert!(message.len() < 200 && message.ends_with("in all)\", expected u64"), "{message}");
        assert_eq!(clip_quoted("unknown field `x`, expected `y`"), "unknown field `x`, expected `y`");
    }

    #[test]
    fn an_unplaced_error_shows_no_fake_location() {
        assert_eq!(InputError::unplaced("no profile named 'ext5'").to_string(), "no profile named 'ext5'");
        assert_eq!(InputError::whole_file("p.toml", "empty").to_string(), "p.toml:1:1: empty");
    }
}
