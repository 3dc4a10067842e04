//! What the user hands us: scenario and profile files. This crate holds what both kinds of
//! input share — the error that names `file:line:col`, and the bounds every simulated span
//! must respect — so that the scenario model (in `sim`) and the persistence profiles (in
//! `devices`) report bad input alike without depending on each other.
//!
//! It must never know what a scenario or a profile contains: it is the common ground below
//! both.

use std::fmt;

/// The longest simulated span any input may name (a horizon, a stall): 30 days.
pub const MAX_HORIZON_S: u64 = 30 * 86_400;

/// A bad input file: where, and what was expected.
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
}

impl fmt::Display for InputError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}:{}:{}: {}", self.file, self.line, self.column, self.message)
    }
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
}
