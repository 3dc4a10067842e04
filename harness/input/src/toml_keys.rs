//! Where a key stands in a TOML file. The serde models keep spans only for some fields; a
//! validation error about any other one (a range, a count) still has to name `file:line:col`,
//! so the text is looked up again, by the key's path, when a message needs a place.

use std::ops::Range;
use toml_edit::{ImDocument, Item};

/// A parsed TOML text that answers "where is this key".
pub struct Keys {
    document: Option<ImDocument<String>>,
}

impl Keys {
    pub fn parse(text: &str) -> Keys {
        Keys { document: ImDocument::parse(text.to_string()).ok() }
    }

    /// The span of the value at `path` (a segment that is a number indexes an array or an
    /// array of tables); failing that, of the deepest key found on the way; else 0..0.
    pub fn value(&self, path: &[&str]) -> Range<usize> {
        self.find(path, false)
    }

    /// The span of the key at `path` itself (for an error about the key's presence, say
    /// `provider = []`); else as `value`.
    pub fn key(&self, path: &[&str]) -> Range<usize> {
        self.find(path, true)
    }

    fn find(&self, path: &[&str], want_key: bool) -> Range<usize> {
        let Some(document) = &self.document else { return 0..0 };
        let mut item: &Item = document.as_item();
        let mut best = 0..0;
        for (depth, segment) in path.iter().enumerate() {
            let last = depth + 1 == path.len();
            let key_span = item.as_table_like().and_then(|table| table.get_key_value(segment)).and_then(|(key, _)| key.span());
            if let Some(span) = key_span.clone() {
                best = span;
            }
            // toml_edit indexes arrays and arrays of tables alike by number.
            let next = match segment.parse::<usize>() {
                Ok(index) => item.get(index),
                Err(_) => item.get(*segment),
            };
            let Some(next) = next else { return best };
            if last && want_key && key_span.is_some() {
                return best;
            }
            item = next;
            if let Some(span) = item.span() {
                best = span;
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "[mx]\nusers = [\"anna\", \"anna\"]\nmax_sessions = 0\n[[provider]]\nname = \"a\"\n[[provider]]\nname = \"b\"\ntime_scale = 0.0\n";

    fn place(span: Range<usize>) -> (usize, usize) {
        crate::line_column(TEXT, span.start)
    }

    #[test]
    fn keys_are_found_in_tables_arrays_and_arrays_of_tables() {
        let keys = Keys::parse(TEXT);
        assert_eq!(place(keys.value(&["mx", "max_sessions"])), (3, 16));
        assert_eq!(place(keys.key(&["mx", "max_sessions"])), (3, 1));
        assert_eq!(place(keys.value(&["mx", "users", "1"])), (2, 18));
        assert_eq!(place(keys.value(&["provider", "1", "time_scale"])), (8, 14));
        assert_eq!(place(keys.value(&["mx", "absent"])), (1, 1));
        assert_eq!(Keys::parse("= broken").value(&["x"]), 0..0);
    }
}
