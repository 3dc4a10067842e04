//! Where each kind of record is in a history: what lets every checker read only the kinds it
//! judges. A module of its own, below `facts` and `dsns`, which both use it.

use history::{EventKind, Record, EVENT_KINDS};

/// A record index in the history (as `facts::At`).
pub type At = usize;

/// Per kind of event, where its records are, in history order: each checker reads the kinds it
/// judges instead of every record. (A pass over a million records is a pass over a quarter of a
/// gigabyte of memory, and the checkers made some thirty.)
pub struct ByKind {
    lists: Vec<Vec<u32>>,
}

impl ByKind {
    pub fn of(records: &[Record]) -> ByKind {
        let mut lists = vec![Vec::new(); EVENT_KINDS];
        for (at, record) in records.iter().enumerate() {
            // A history is bounded far below 4 billion records (`history::events_allowed`).
            lists[EventKind::from(&record.event) as usize].push(at as u32);
        }
        ByKind { lists }
    }

    /// The records of these kinds, in history order.
    pub fn select<'s, 'r>(&'s self, records: &'r [Record], kinds: &[EventKind]) -> impl Iterator<Item = (At, &'r Record)> + use<'s, 'r> {
        let ats: std::borrow::Cow<'s, [u32]> = match kinds {
            [kind] => std::borrow::Cow::Borrowed(&self.lists[*kind as usize]),
            _ => {
                let mut merged: Vec<u32> = kinds.iter().flat_map(|kind| self.lists[*kind as usize].iter().copied()).collect();
                merged.sort_unstable();
                merged.dedup();
                std::borrow::Cow::Owned(merged)
            }
        };
        (0..ats.len()).map(move |i| {
            let at = ats[i] as usize;
            (at, &records[at])
        })
    }
}

