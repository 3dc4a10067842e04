//! Judges a real store directory against the ledger, after the fact (typically after a power
//! cut on a vendor's storage): only the files and the ledger are evidence, never the store's
//! memory or its own account of itself.
//!
//! What must hold, with the store's layout (`mail/<user>/{tmp,new,cur}/NAME`, NAME carrying
//! `,U=<uid>` and `,H=<checksum>`, in `cur/` followed by the info `:2,<flags>` once the owner
//! read it; `mail/<user>/uidlist` holding "uidvalidity uidnext"):
//! - every mailbox is a whole maildir (`tmp/`, `new/` and `cur/`: mutt and Python's
//!   `mailbox.Maildir` refuse one without `cur/`);
//! - every acknowledged message not since expunged is there, with the bytes that were
//!   acknowledged: where the ledger says, or moved into `new/` or `cur/` under the same base
//!   name with any info suffix (a message read after its delivery);
//! - every message visible in `new/` or `cur/` is whole (its bytes match the checksum in its
//!   name); `tmp/` is the store's scratch space and never visible;
//! - a UID names one message: no two visible files of a mailbox share one, UIDNEXT is past every
//!   UID handed out (RFC 3501 §2.3.1.1), and the ledger never saw one UID with two contents.

use sim::ledger::{EntryKind, LedgerEntry};
use mail::maildir::{base_name, checksum, parse_file_name, SUBDIRS};
use std::collections::BTreeMap;
use std::fmt;
use std::io::ErrorKind;
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProblemKind {
    /// An acknowledged message is gone though no client deleted it.
    Lost,
    /// An acknowledged message is there with other bytes (or cannot be read).
    Damaged,
    /// A file in `new/` or `cur/` is not a whole message: a client could read a torn or corrupt
    /// message.
    VisibleDamaged,
    /// A mailbox directory lacks `tmp/`, `new/` or `cur/`: other maildir readers refuse it.
    IncompleteMaildir,
    /// Two visible files of one mailbox carry one UID.
    DuplicateUid,
    /// `uidlist` would hand out a UID already used.
    UidlistBehind,
    UidlistUnreadable,
    /// One (mailbox, uidvalidity, uid) was acknowledged with two different contents.
    UidReused,
    /// A directory of the store could not be listed, so part of it was not judged.
    Unreadable,
}

impl ProblemKind {
    pub fn name(self) -> &'static str {
        match self {
            ProblemKind::Lost => "lost acknowledged message",
            ProblemKind::Damaged => "damaged acknowledged message",
            ProblemKind::VisibleDamaged => "partial or damaged message visible",
            ProblemKind::IncompleteMaildir => "incomplete maildir",
            ProblemKind::DuplicateUid => "duplicate uid",
            ProblemKind::UidlistBehind => "uidlist behind",
            ProblemKind::UidlistUnreadable => "unreadable uidlist",
            ProblemKind::UidReused => "uid reused",
            ProblemKind::Unreadable => "unreadable store directory",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub kind: ProblemKind,
    /// The store file concerned, relative to the store directory.
    pub file: String,
    /// The ledger line that makes it a problem, if one does.
    pub line: Option<usize>,
    pub detail: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}: {}", self.kind.name(), self.file)?;
        if let Some(line) = self.line {
            write!(formatter, " (ledger line {line})")?;
        }
        write!(formatter, ": {}", self.detail)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    pub problems: Vec<Problem>,
    /// `delivered` entries in the ledger.
    pub checked: usize,
    /// Of those, not expunged and found on disk (with the right bytes or not).
    pub present: usize,
    /// Of those, expunged by a later `expunging` entry: their absence is fine.
    pub expunged: usize,
    /// Files in `new/` and `cur/` directories.
    pub visible: usize,
}

impl Verdict {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// The closing line: `verdict: ok …` or `verdict: violation …`, with the counts.
    pub fn summary(&self) -> String {
        let word = if self.is_ok() { "ok" } else { "violation" };
        format!(
            "verdict: {word} problems={} checked={} present={} expunged={} visible={}",
            self.problems.len(),
            self.checked,
            self.present,
            self.expunged,
            self.visible
        )
    }

    fn report(&mut self, kind: ProblemKind, file: &str, line: Option<usize>, detail: String) {
        self.problems.push(Problem { kind, file: file.to_string(), line, detail });
    }
}

/// Judges the store in `dir` against the ledger's entries.
pub fn verify_store(dir: &Path, entries: &[LedgerEntry]) -> Verdict {
    let mut verdict = Verdict::default();
    check_acknowledged(dir, entries, &mut verdict);
    let visible = check_visible(dir, &mut verdict);
    check_duplicates(&visible, &mut verdict);
    check_uidlists(dir, entries, &visible, &mut verdict);
    verdict
}

type Key<'a> = (&'a str, u64, u64);

fn check_acknowledged(dir: &Path, entries: &[LedgerEntry], verdict: &mut Verdict) {
    let mut last_expunging: BTreeMap<Key<'_>, usize> = BTreeMap::new();
    for entry in entries.iter().filter(|entry| entry.kind == EntryKind::Expunging) {
        let line = last_expunging.entry(entry.key()).or_default();
        *line = (*line).max(entry.line);
    }
    let mut first_checksum: BTreeMap<Key<'_>, (&str, usize)> = BTreeMap::new();
    for entry in entries {
        let EntryKind::Delivered { checksum: acknowledged } = &entry.kind else { continue };
        verdict.checked += 1;
        let (first, first_line) = *first_checksum.entry(entry.key()).or_insert((acknowledged, entry.line));
        if first != acknowledged {
            let detail = format!("uid {} of {} was acknowledged as {first} at ledger line {first_line}, now as {acknowledged}", entry.uid, entry.mailbox);
            verdict.report(ProblemKind::UidReused, &entry.file, Some(entry.line), detail);
        }
        if last_expunging.get(&entry.key()).is_some_and(|&line| line > entry.line) {
            verdict.expunged += 1;
            continue;
        }
        check_one_acknowledged(dir, entry, acknowledged, verdict);
    }
}

/// Where an acknowledged message is now: the file the ledger names, or else a file of the same
/// base name in the mailbox's `new/` or `cur/`, whatever its info suffix (`:2,S` once read).
fn locate(dir: &Path, entry: &LedgerEntry) -> String {
    if dir.join(&entry.file).exists() {
        return entry.file.clone();
    }
    for sub in ["cur", "new"] {
        let relative = format!("mail/{}/{sub}", entry.mailbox);
        let Ok(found) = std::fs::read_dir(dir.join(&relative)) else { continue };
        let mut moved: Vec<String> = found.flatten().map(|file| file.file_name().to_string_lossy().into_owned()).filter(|found| base_name(found) == entry.base_name()).collect();
        moved.sort();
        if let Some(found) = moved.first() {
            return format!("{relative}/{found}");
        }
    }
    entry.file.clone()
}

fn check_one_acknowledged(dir: &Path, entry: &LedgerEntry, acknowledged: &str, verdict: &mut Verdict) {
    let line = Some(entry.line);
    let file = locate(dir, entry);
    match read_message(&dir.join(&file)) {
        Err(None) => {
            let detail = format!("uid {} of {} is gone and was never expunged", entry.uid, entry.mailbox);
            verdict.report(ProblemKind::Lost, &entry.file, line, detail);
        }
        Err(Some(error)) => {
            verdict.present += 1;
            verdict.report(ProblemKind::Damaged, &file, line, format!("cannot read: {error}"));
        }
        Ok(bytes) => {
            verdict.present += 1;
            let found = checksum(&bytes);
            if found != acknowledged {
                let detail = format!("{} bytes with checksum {found}, acknowledged as {acknowledged}", bytes.len());
                verdict.report(ProblemKind::Damaged, &file, line, detail);
            }
        }
    }
}

/// Visible UIDs: mailbox → uid → files claiming it.
type Visible = BTreeMap<String, BTreeMap<u64, Vec<String>>>;

/// Sorted names of the entries of `dir` that are directories (`want_dirs`) or regular files.
/// A missing directory is empty; an unlistable one is reported.
fn names_in(dir: &Path, relative: &str, want_dirs: bool, verdict: &mut Verdict) -> Vec<String> {
    let entries = match std::fs::read_dir(dir.join(relative)) {
        Ok(entries) => entries,
        Err(error) if error.kind() == ErrorKind::NotFound => return Vec::new(),
        Err(error) => {
            verdict.report(ProblemKind::Unreadable, relative, None, format!("cannot list: {error}"));
            return Vec::new();
        }
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter(|entry| entry.file_type().is_ok_and(|kind| if want_dirs { kind.is_dir() } else { kind.is_file() }))
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn check_visible(dir: &Path, verdict: &mut Verdict) -> Visible {
    let mut visible = Visible::new();
    for user in names_in(dir, "mail", true, verdict) {
        let subdirs = names_in(dir, &format!("mail/{user}"), true, verdict);
        let missing: Vec<&str> = SUBDIRS.into_iter().filter(|sub| !subdirs.iter().any(|found| found == sub)).collect();
        if !missing.is_empty() {
            let detail = format!("no {} (a maildir has tmp/, new/ and cur/)", missing.iter().map(|sub| format!("{sub}/")).collect::<Vec<_>>().join(", "));
            verdict.report(ProblemKind::IncompleteMaildir, &format!("mail/{user}"), None, detail);
        }
        let uids = visible.entry(user.clone()).or_default();
        for sub in ["new", "cur"] {
            check_visible_in(dir, &format!("mail/{user}/{sub}"), uids, verdict);
        }
    }
    visible
}

/// The messages of one `new/` or `cur/`: each whole, under its UID.
fn check_visible_in(dir: &Path, visible_dir: &str, uids: &mut BTreeMap<u64, Vec<String>>, verdict: &mut Verdict) {
    for name in names_in(dir, visible_dir, false, verdict) {
        verdict.visible += 1;
        let file = format!("{visible_dir}/{name}");
        let Some((uid, named)) = parse_file_name(&name) else {
            verdict.report(ProblemKind::VisibleDamaged, &file, None, "the name carries no U=<uid> and H=<checksum>".into());
            continue;
        };
        uids.entry(uid).or_default().push(file.clone());
        match read_message(&dir.join(&file)) {
            Err(error) => verdict.report(ProblemKind::VisibleDamaged, &file, None, format!("cannot read: {}", error.unwrap_or_else(|| "gone".into()))),
            Ok(bytes) if checksum(&bytes) != named => {
                let detail = format!("{} bytes with checksum {}, the name says {named}", bytes.len(), checksum(&bytes));
                verdict.report(ProblemKind::VisibleDamaged, &file, None, detail);
            }
            Ok(_) => {}
        }
    }
}

fn check_duplicates(visible: &Visible, verdict: &mut Verdict) {
    for (user, uids) in visible {
        for (uid, files) in uids {
            if let [first, others @ ..] = files.as_slice() {
                if !others.is_empty() {
                    let detail = format!("uid {uid} of {user} is also used by {}", others.join(", "));
                    verdict.report(ProblemKind::DuplicateUid, first, None, detail);
                }
            }
        }
    }
}

/// The largest message file the store can have written (the MX's largest message plus the
/// store's own header), with room to spare; a bigger file is read no further.
const MAX_MESSAGE_FILE_BYTES: u64 = 128 * 1024 * 1024;

/// A message file's bytes; `Err(None)` when there is no such file, `Err(Some(why))` when it
/// cannot be read (a named pipe or a device where a message should be is never opened).
fn read_message(path: &Path) -> Result<Vec<u8>, Option<String>> {
    match std::fs::symlink_metadata(path) {
        Err(error) if error.kind() == ErrorKind::NotFound => Err(None),
        _ => input::read_input_bytes(path, MAX_MESSAGE_FILE_BYTES).map_err(|error| Some(error.message)),
    }
}

/// Reads "uidvalidity uidnext"; `Ok(None)` when there is no uidlist.
fn read_uidlist(path: &Path) -> Result<Option<(u64, u64)>, String> {
    if std::fs::symlink_metadata(path).is_err_and(|error| error.kind() == ErrorKind::NotFound) {
        return Ok(None);
    }
    let text = input::read_input_file(path, 4096).map_err(|error| format!("cannot read: {}", error.message))?;
    let numbers: Vec<Option<u64>> = text.split_whitespace().map(|field| field.parse().ok()).collect();
    match numbers.as_slice() {
        [Some(uidvalidity), Some(uidnext)] => Ok(Some((*uidvalidity, *uidnext))),
        _ => Err(format!("expected 'uidvalidity uidnext', found {:?}", input::clip(&text))),
    }
}

fn check_uidlists(dir: &Path, entries: &[LedgerEntry], visible: &Visible, verdict: &mut Verdict) {
    let mut users: Vec<&str> = visible.keys().map(String::as_str).collect();
    users.extend(entries.iter().map(|entry| entry.mailbox.as_str()));
    users.sort_unstable();
    users.dedup();
    for user in users {
        let file = format!("mail/{user}/uidlist");
        let (uidvalidity, uidnext) = match read_uidlist(&dir.join(&file)) {
            Ok(Some(stored)) => stored,
            Ok(None) => continue,
            Err(detail) => {
                verdict.report(ProblemKind::UidlistUnreadable, &file, None, detail);
                continue;
            }
        };
        // Files in new/ and cur/ carry no UIDVALIDITY: they belong to the mailbox's current one.
        let highest_visible = visible.get(user).and_then(|uids| uids.keys().next_back());
        if let Some(&uid) = highest_visible.filter(|&&uid| uid >= uidnext) {
            verdict.report(ProblemKind::UidlistBehind, &file, None, format!("uidnext is {uidnext} but uid {uid} is visible"));
        }
        let same_validity = entries.iter().filter(|entry| entry.mailbox == user && entry.uidvalidity == uidvalidity);
        if let Some(entry) = same_validity.max_by_key(|entry| (entry.uid, std::cmp::Reverse(entry.line))).filter(|entry| entry.uid >= uidnext) {
            let detail = format!("uidnext is {uidnext} but the ledger has uid {} (uidvalidity {uidvalidity})", entry.uid);
            verdict.report(ProblemKind::UidlistBehind, &file, Some(entry.line), detail);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sim::ledger::{read_ledger, Ledger};
    use std::fs;

    /// A store directory written as the store writes it, with the harness's ledger beside it.
    struct Store {
        dir: tempfile::TempDir,
        ledger: Ledger,
    }

    impl Store {
        fn new() -> Store {
            let dir = tempfile::tempdir().unwrap();
            let ledger = Ledger::create(&dir.path().join("ledger")).unwrap();
            Store { dir, ledger }
        }

        fn path(&self, file: &str) -> std::path::PathBuf {
            self.dir.path().join("store").join(file)
        }

        /// Publishes a message in new/ without acknowledging it; returns its file.
        fn publish(&self, user: &str, uid: u64, body: &str) -> String {
            let file = format!("mail/{user}/new/1000.S1D{uid},U={uid},S={},H={}", body.len(), checksum(body.as_bytes()));
            for sub in SUBDIRS {
                fs::create_dir_all(self.path(&format!("mail/{user}/{sub}"))).unwrap();
            }
            fs::write(self.path(&file), body).unwrap();
            file
        }

        /// Marks a message read as the store does: new/NAME → cur/NAME:2,S; returns its file.
        fn read(&self, file: &str) -> String {
            let name = file.rsplit('/').next().unwrap();
            let user = file.split('/').nth(1).unwrap();
            let moved = format!("mail/{user}/cur/{}", mail::maildir::with_flags(name, "S"));
            fs::rename(self.path(file), self.path(&moved)).unwrap();
            moved
        }

        fn deliver(&mut self, user: &str, uid: u64, body: &str) -> String {
            let file = self.publish(user, uid, body);
            self.ledger.append_delivered(user, 7, uid, &file, &checksum(body.as_bytes())).unwrap();
            file
        }

        fn uidlist(&self, user: &str, uidnext: u64) {
            fs::write(self.path(&format!("mail/{user}/uidlist")), format!("7 {uidnext}\n")).unwrap();
        }

        fn verdict(&self) -> Verdict {
            let entries = read_ledger(&self.dir.path().join("ledger")).unwrap();
            verify_store(&self.dir.path().join("store"), &entries)
        }
    }

    fn kinds(verdict: &Verdict) -> Vec<(ProblemKind, Option<usize>)> {
        verdict.problems.iter().map(|problem| (problem.kind, problem.line)).collect()
    }

    /// anna: uid 1 kept, uid 2 expunged and removed, uid 3 expunged but not yet removed;
    /// bruno: uid 1 kept, with torn debris in tmp/.
    fn consistent() -> Store {
        let mut store = Store::new();
        store.deliver("anna", 1, "first");
        let second = store.deliver("anna", 2, "second");
        let third = store.deliver("anna", 3, "third");
        store.ledger.append_expunging("anna", 7, 2, &second).unwrap();
        store.ledger.append_expunging("anna", 7, 3, &third).unwrap();
        fs::remove_file(store.path(&second)).unwrap();
        store.deliver("bruno", 1, "hello bruno");
        fs::create_dir_all(store.path("mail/bruno/tmp")).unwrap();
        fs::write(store.path("mail/bruno/tmp/1000.S9D9,U=2,S=99,H=0000000000000000"), "torn").unwrap();
        store.uidlist("anna", 4);
        store.uidlist("bruno", 2);
        store
    }

    #[test]
    fn a_consistent_store_passes_and_expunged_messages_may_be_gone() {
        let verdict = consistent().verdict();
        assert_eq!(verdict.problems, vec![]);
        assert_eq!(verdict.summary(), "verdict: ok problems=0 checked=4 present=2 expunged=2 visible=3");
    }

    #[test]
    fn messages_read_into_cur_are_present_and_judged_like_new_ones() {
        let mut store = consistent();
        let read = store.read(&("mail/anna/new/1000.S1D1,U=1,S=5,H=".to_string() + &checksum(b"first")));
        assert!(read.starts_with("mail/anna/cur/") && read.ends_with(":2,S"), "{read}");
        let fourth = store.deliver("anna", 4, "fourth");
        store.read(&fourth);
        store.uidlist("anna", 5);
        let verdict = store.verdict();
        assert_eq!(verdict.problems, vec![]);
        assert_eq!(verdict.summary(), "verdict: ok problems=0 checked=5 present=3 expunged=2 visible=4");
        // Read and then damaged: the same problems as in new/, named by the file in cur/.
        fs::write(store.path(&read), "firsT").unwrap();
        let verdict = store.verdict();
        assert_eq!(kinds(&verdict), vec![(ProblemKind::Damaged, Some(2)), (ProblemKind::VisibleDamaged, None)]);
        assert!(verdict.problems.iter().all(|problem| problem.file == read), "{:?}", verdict.problems);
        // Read and then gone: lost.
        fs::remove_file(store.path(&read)).unwrap();
        assert_eq!(kinds(&store.verdict()), vec![(ProblemKind::Lost, Some(2))]);
    }

    #[test]
    fn a_mailbox_without_cur_is_an_incomplete_maildir() {
        let store = consistent();
        fs::remove_dir(store.path("mail/bruno/cur")).unwrap();
        let verdict = store.verdict();
        assert_eq!(kinds(&verdict), vec![(ProblemKind::IncompleteMaildir, None)]);
        assert_eq!(verdict.problems[0].to_string(), "incomplete maildir: mail/bruno: no cur/ (a maildir has tmp/, new/ and cur/)");
    }

    #[test]
    fn a_missing_acknowledged_message_is_lost() {
        let mut store = consistent();
        let file = store.deliver("bruno", 2, "vanishes");
        store.uidlist("bruno", 3);
        fs::remove_file(store.path(&file)).unwrap();
        let verdict = store.verdict();
        assert_eq!(kinds(&verdict), vec![(ProblemKind::Lost, Some(8))]);
        assert_eq!(verdict.problems[0].to_string(), format!("lost acknowledged message: {file} (ledger line 8): uid 2 of bruno is gone and was never expunged"));
    }

    #[test]
    fn a_message_changed_in_new_is_damaged_and_visible() {
        let store = consistent();
        let file = "mail/anna/new/1000.S1D1,U=1,S=5,H=".to_string() + &checksum(b"first");
        fs::write(store.path(&file), "firsT").unwrap();
        let verdict = store.verdict();
        assert_eq!(kinds(&verdict), vec![(ProblemKind::Damaged, Some(2)), (ProblemKind::VisibleDamaged, None)]);
        assert!(verdict.summary().starts_with("verdict: violation problems=2 "));
    }

    #[test]
    fn a_partial_message_visible_in_new_is_caught_without_any_ledger_entry() {
        let store = consistent();
        let file = store.publish("bruno", 2, "whole message");
        fs::write(store.path(&file), "whole").unwrap();
        store.uidlist("bruno", 3);
        assert_eq!(kinds(&store.verdict()), vec![(ProblemKind::VisibleDamaged, None)]);
    }

    #[test]
    fn two_visible_files_with_one_uid_are_a_duplicate() {
        let mut store = consistent();
        let other = store.publish("bruno", 1, "another message");
        store.ledger.append_delivered("bruno", 7, 1, &other, &checksum(b"another message")).unwrap();
        let verdict = store.verdict();
        assert_eq!(kinds(&verdict), vec![(ProblemKind::UidReused, Some(8)), (ProblemKind::DuplicateUid, None)]);
    }

    #[test]
    fn a_uidlist_behind_the_files_or_the_ledger_is_caught() {
        let store = consistent();
        store.uidlist("anna", 2); // uid 3 is still visible; the ledger handed out 3
        store.uidlist("bruno", 1);
        let verdict = store.verdict();
        assert_eq!(
            kinds(&verdict),
            vec![
                (ProblemKind::UidlistBehind, None),
                (ProblemKind::UidlistBehind, Some(4)),
                (ProblemKind::UidlistBehind, None),
                (ProblemKind::UidlistBehind, Some(7)),
            ]
        );
        fs::write(store.path("mail/anna/uidlist"), "garbage").unwrap();
        assert_eq!(store.verdict().problems[0].kind, ProblemKind::UidlistUnreadable);
    }
}
