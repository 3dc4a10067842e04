//! The ledger: the harness's durable account of what a store acknowledged, kept outside the
//! store so a real store directory can be judged after a power cut (see [`crate::verify`]).
//!
//! An append-only text file, one entry per line, fields separated by tabs (shown as `\t`):
//!
//! ```text
//! # mailchaos ledger v1
//! delivered\t<mailbox>\t<uidvalidity>\t<uid>\t<file>\t<checksum>
//! expunging\t<mailbox>\t<uidvalidity>\t<uid>\t<file>
//! ```
//!
//! `delivered` is written after the store acknowledged the message; `<file>` is relative to the
//! store directory and `<checksum>` is the store's (first 16 hex digits of blake3). `expunging`
//! is written before the store is asked to remove a message, so from that line on its absence is
//! expected; its `<file>` is where the message was then.
//!
//! A message does not stay where it was delivered: once its owner reads it, the store moves it
//! from `new/NAME` to `cur/NAME:2,S` (maildir(5)), and a mail reader on the same directory may
//! set other flags. The ledger does not follow it: a `delivered` message counts as present in
//! `new/` or `cur/` under the base name of its `<file>` with any info suffix (see
//! [`LedgerEntry::base_name`]). Each line is durable (`sync_data`) before the append returns; a power cut can only
//! leave a last line without its newline, which was never acknowledged and is ignored on reading.

use history::Event;
use std::cell::RefCell;
use std::fmt;
use std::rc::Rc;
use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Component, Path};

pub const HEADER: &str = "# mailchaos ledger v1";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// The store acknowledged the message; its bytes have this checksum.
    Delivered { checksum: String },
    /// A client deleted the message; the store may remove it from here on.
    Expunging,
}

/// One line of the ledger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerEntry {
    /// 1-based line number in the ledger file, for reports.
    pub line: usize,
    pub kind: EntryKind,
    pub mailbox: String,
    pub uidvalidity: u64,
    pub uid: u64,
    /// Path relative to the store directory, e.g. `mail/anna/new/…`, or `mail/anna/cur/…:2,S`
    /// for an expunge of a message read before.
    pub file: String,
}

impl LedgerEntry {
    /// The maildir base name of the file: its last component less any info (`:2,<flags>`), the
    /// same in `new/` and in `cur/`.
    pub fn base_name(&self) -> &str {
        mail::maildir::base_name(self.file.rsplit('/').next().unwrap_or(&self.file))
    }

    /// The message's identity: IMAP names a message by mailbox, UIDVALIDITY and UID.
    pub fn key(&self) -> (&str, u64, u64) {
        (&self.mailbox, self.uidvalidity, self.uid)
    }
}

/// Appends entries durably.
pub struct Ledger {
    file: File,
}

impl Ledger {
    /// Starts a new ledger at `path` (replacing any old one) and makes its name durable.
    /// Only a regular file (or a new one) is replaced: opening a named pipe to write would
    /// block until something reads it.
    pub fn create(path: &Path) -> io::Result<Ledger> {
        if let Ok(metadata) = std::fs::metadata(path) {
            if !metadata.is_file() {
                return Err(invalid("exists and is not a regular file".into()));
            }
        }
        let file = OpenOptions::new().write(true).create(true).truncate(true).open(path)?;
        let mut ledger = Ledger { file };
        ledger.append_line(HEADER)?;
        let dir = path.parent().filter(|dir| !dir.as_os_str().is_empty()).unwrap_or(Path::new("."));
        File::open(dir)?.sync_all()?;
        Ok(ledger)
    }

    /// Goes on with the ledger at `path` (a restarted `serve`), or starts one if there is none.
    /// A last line without its newline (a power cut or kill -9 in the middle of an append) was
    /// never acknowledged: it is cut off, so the next entry starts a line of its own.
    pub fn reopen(path: &Path) -> io::Result<Ledger> {
        let Ok(existing) = std::fs::read(path) else { return Ledger::create(path) };
        if existing.is_empty() {
            return Ledger::create(path);
        }
        if !existing.starts_with(format!("{HEADER}\n").as_bytes()) {
            return Err(invalid(format!("exists and does not start with the line {HEADER:?}: not a ledger")));
        }
        let whole_lines = existing.iter().rposition(|&byte| byte == b'\n').map_or(0, |at| at + 1);
        let file = OpenOptions::new().write(true).open(path)?;
        file.set_len(whole_lines as u64)?;
        file.sync_data()?;
        let file = OpenOptions::new().append(true).open(path)?;
        Ok(Ledger { file })
    }

    pub fn append_delivered(&mut self, mailbox: &str, uidvalidity: u64, uid: u64, file: &str, checksum: &str) -> io::Result<()> {
        check_entry(mailbox, uidvalidity, uid, file)?;
        if !is_checksum(checksum) {
            return Err(invalid(format!("checksum must be 16 lowercase hex digits, got '{checksum}'")));
        }
        self.append_line(&format!("delivered\t{mailbox}\t{uidvalidity}\t{uid}\t{file}\t{checksum}"))
    }

    pub fn append_expunging(&mut self, mailbox: &str, uidvalidity: u64, uid: u64, file: &str) -> io::Result<()> {
        check_entry(mailbox, uidvalidity, uid, file)?;
        self.append_line(&format!("expunging\t{mailbox}\t{uidvalidity}\t{uid}\t{file}"))
    }

    /// One write for the whole line, then `sync_data`: the entry is durable on return.
    fn append_line(&mut self, line: &str) -> io::Result<()> {
        self.file.write_all(format!("{line}\n").as_bytes())?;
        self.file.sync_data()
    }
}

/// Keeps the ledger one step ahead of the store: deliveries once durable and acknowledged,
/// expunges before the file goes. A write failure is kept in `failure` (the ledger must be
/// complete, so whoever runs the store stops it).
pub fn observer(ledger: Rc<RefCell<Ledger>>, failure: Rc<RefCell<Option<String>>>) -> Rc<dyn Fn(&history::Record)> {
    Rc::new(move |record| {
        let result = match &record.event {
            Event::StoreDelivered(stored) => {
                let history::Stored { mailbox, uidvalidity, uid, file, .. } = &**stored;
                let name = file.rsplit('/').next().unwrap_or_default();
                let checksum = mail::maildir::parse_file_name(name).map(|(_, sum)| sum).unwrap_or_default();
                ledger.borrow_mut().append_delivered(mailbox, *uidvalidity, *uid, file, &checksum)
            }
            Event::StoreExpunging { mailbox, uidvalidity, uid, file } => ledger.borrow_mut().append_expunging(mailbox, *uidvalidity, *uid, file),
            _ => Ok(()),
        };
        if let Err(error) = result {
            failure.borrow_mut().get_or_insert(format!("cannot append to the ledger: {error}"));
        }
    })
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

/// Refuses what the reader would reject, so the writer can never produce an unreadable ledger.
fn check_entry(mailbox: &str, uidvalidity: u64, uid: u64, file: &str) -> io::Result<()> {
    let problem = check_mailbox(mailbox)
        .or_else(|| (uidvalidity == 0).then(|| "uidvalidity must be positive".to_string()))
        .or_else(|| (uid == 0).then(|| "uid must be positive".to_string()))
        .or_else(|| check_file(file));
    problem.map_or(Ok(()), |message| Err(invalid(message)))
}

fn check_mailbox(mailbox: &str) -> Option<String> {
    let bad = mailbox.is_empty() || mailbox.contains(['\t', '\n', '\r', '/']);
    bad.then(|| format!("mailbox must be a non-empty name without tabs, line breaks or '/', got {mailbox:?}"))
}

/// A file must be a relative path inside the store: no root, no `..`, no tabs or line breaks.
fn check_file(file: &str) -> Option<String> {
    let inside = !file.is_empty() && Path::new(file).components().all(|part| matches!(part, Component::Normal(_)));
    let bad = !inside || file.contains(['\t', '\n', '\r']);
    bad.then(|| format!("file must be a relative path inside the store, got {file:?}"))
}

pub fn is_checksum(text: &str) -> bool {
    text.len() == 16 && text.bytes().all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f'))
}

/// Why a ledger could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LedgerError {
    Unreadable { file: String, error: String },
    /// `line` and `col` are 1-based; `col` counts characters.
    Malformed { file: String, line: usize, col: usize, what: String },
}

impl fmt::Display for LedgerError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LedgerError::Unreadable { file, error } => write!(formatter, "{file}: cannot read ledger: {error}"),
            LedgerError::Malformed { file, line, col, what } => write!(formatter, "{file}:{line}:{col}: {what}"),
        }
    }
}

impl std::error::Error for LedgerError {}

/// The cap on a ledger: a 20,000-message surge writes about 5 MB.
pub const MAX_LEDGER_BYTES: u64 = 256 * 1024 * 1024;

/// Reads a ledger (a regular file of at most `MAX_LEDGER_BYTES`: a named pipe would block).
pub fn read_ledger(path: &Path) -> Result<Vec<LedgerEntry>, LedgerError> {
    let name = path.display().to_string();
    let bytes = input::read_input_bytes(path, MAX_LEDGER_BYTES).map_err(|error| LedgerError::Unreadable { file: name.clone(), error: error.message })?;
    parse_ledger(&name, &bytes)
}

/// Parses a ledger's bytes; `name` is used in errors.
pub fn parse_ledger(name: &str, bytes: &[u8]) -> Result<Vec<LedgerEntry>, LedgerError> {
    let malformed = |line: usize, col: usize, what: String| LedgerError::Malformed { file: name.to_string(), line, col, what };
    // An editor may have added a byte-order mark and CRLF line ends; neither changes an entry.
    let bytes = bytes.strip_prefix("\u{feff}".as_bytes()).unwrap_or(bytes);
    // Only newline-terminated lines were acknowledged: a torn last append is not part of it.
    let complete = match bytes.iter().rposition(|&byte| byte == b'\n') {
        Some(end) => &bytes[..end],
        // A header torn by a power cut during `create`; anything else is not a ledger.
        None if HEADER.as_bytes().starts_with(bytes) => return Ok(Vec::new()),
        None => {
            let found = input::clip(&String::from_utf8_lossy(bytes));
            return Err(malformed(1, 1, format!("expected the header '{HEADER}' and a line end, found {found:?}")));
        }
    };
    let mut entries = Vec::new();
    for (index, raw) in complete.split(|&byte| byte == b'\n').enumerate() {
        let number = index + 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let text = std::str::from_utf8(raw).map_err(|error| {
            let col = String::from_utf8_lossy(&raw[..error.valid_up_to()]).chars().count() + 1;
            malformed(number, col, "not UTF-8".into())
        })?;
        if number == 1 {
            if text != HEADER {
                return Err(malformed(1, 1, format!("expected the header '{HEADER}', found {:?}", input::clip(text))));
            }
            continue;
        }
        if text.starts_with('#') {
            continue;
        }
        let entry = parse_line(number, text).map_err(|(col, what)| malformed(number, col, what))?;
        entries.push(entry);
    }
    Ok(entries)
}

/// One tab-separated field and the column (1-based, in characters) where it starts.
struct Field<'a> {
    text: &'a str,
    col: usize,
}

fn fields_of(line: &str) -> Vec<Field<'_>> {
    let mut col = 1;
    line.split('\t')
        .map(|text| {
            let field = Field { text, col };
            col += text.chars().count() + 1;
            field
        })
        .collect()
}

fn parse_line(line: usize, text: &str) -> Result<LedgerEntry, (usize, String)> {
    let fields = fields_of(text);
    let wanted = match fields[0].text {
        "delivered" => 6,
        "expunging" => 5,
        "" => return Err((1, "empty line".into())),
        other => return Err((1, format!("unknown entry '{other}'; expected 'delivered' or 'expunging'"))),
    };
    if fields.len() != wanted {
        let col = fields.get(wanted).map_or(text.chars().count() + 1, |extra| extra.col);
        return Err((col, format!("'{}' needs {wanted} tab-separated fields, found {}", fields[0].text, fields.len())));
    }
    let mailbox = &fields[1];
    if let Some(what) = check_mailbox(mailbox.text) {
        return Err((mailbox.col, what));
    }
    let uidvalidity = positive(&fields[2], "uidvalidity")?;
    let uid = positive(&fields[3], "uid")?;
    let file = &fields[4];
    if let Some(what) = check_file(file.text) {
        return Err((file.col, what));
    }
    let kind = match fields.get(5) {
        Some(sum) if is_checksum(sum.text) => EntryKind::Delivered { checksum: sum.text.to_string() },
        Some(sum) => return Err((sum.col, format!("checksum must be 16 lowercase hex digits, got {:?}", sum.text))),
        None => EntryKind::Expunging,
    };
    Ok(LedgerEntry { line, kind, mailbox: mailbox.text.to_string(), uidvalidity, uid, file: file.text.to_string() })
}

fn positive(field: &Field<'_>, what: &str) -> Result<u64, (usize, String)> {
    match field.text.parse::<u64>() {
        Ok(value) if value > 0 && !field.text.starts_with('+') => Ok(value),
        _ => Err((field.col, format!("{what} must be a positive integer, got {:?}", field.text))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUM: &str = "00ff00ff00ff00ff";

    #[test]
    fn entries_written_are_read_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger");
        let mut ledger = Ledger::create(&path).unwrap();
        ledger.append_delivered("anna", 7, 1, "mail/anna/new/a,U=1,H=00ff00ff00ff00ff", SUM).unwrap();
        ledger.append_expunging("anna", 7, 1, "mail/anna/new/a,U=1,H=00ff00ff00ff00ff").unwrap();
        let entries = read_ledger(&path).unwrap();
        let file = "mail/anna/new/a,U=1,H=00ff00ff00ff00ff".to_string();
        let delivered = EntryKind::Delivered { checksum: SUM.into() };
        assert_eq!(
            entries,
            vec![
                LedgerEntry { line: 2, kind: delivered, mailbox: "anna".into(), uidvalidity: 7, uid: 1, file: file.clone() },
                LedgerEntry { line: 3, kind: EntryKind::Expunging, mailbox: "anna".into(), uidvalidity: 7, uid: 1, file },
            ]
        );
    }

    #[test]
    fn a_message_read_into_cur_keeps_its_base_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger");
        let mut ledger = Ledger::create(&path).unwrap();
        ledger.append_delivered("anna", 7, 1, "mail/anna/new/a,U=1,H=00ff00ff00ff00ff", SUM).unwrap();
        ledger.append_expunging("anna", 7, 1, "mail/anna/cur/a,U=1,H=00ff00ff00ff00ff:2,S").unwrap();
        let entries = read_ledger(&path).unwrap();
        assert_eq!(entries[1].file, "mail/anna/cur/a,U=1,H=00ff00ff00ff00ff:2,S");
        assert_eq!(entries[0].base_name(), "a,U=1,H=00ff00ff00ff00ff");
        assert_eq!(entries[1].base_name(), entries[0].base_name());
    }

    #[test]
    fn the_writer_refuses_what_the_reader_would_reject() {
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = Ledger::create(&dir.path().join("ledger")).unwrap();
        assert!(ledger.append_delivered("an\tna", 7, 1, "mail/x", SUM).is_err());
        assert!(ledger.append_delivered("anna", 7, 1, "../x", SUM).is_err());
        assert!(ledger.append_delivered("anna", 7, 1, "mail/x", "XYZ").is_err());
        assert!(ledger.append_expunging("anna", 0, 1, "mail/x").is_err());
        assert_eq!(read_ledger(&dir.path().join("ledger")).unwrap(), vec![]);
    }

    #[test]
    fn a_torn_last_line_was_never_acknowledged_and_is_ignored() {
        let text = format!("{HEADER}\ndelivered\tanna\t7\t1\tmail/a\t{SUM}\ndelivered\tanna\t7\t2\tmail/");
        let entries = parse_ledger("l", text.as_bytes()).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(parse_ledger("l", b"").unwrap(), vec![]);
        assert_eq!(parse_ledger("l", b"# mailchaos le").unwrap(), vec![]);
        assert!(parse_ledger("l", b"not a ledger").is_err());
    }

    #[test]
    fn a_malformed_line_is_reported_with_line_and_column() {
        let error = |text: String| parse_ledger("ledger.txt", text.as_bytes()).unwrap_err().to_string();
        assert_eq!(
            error(format!("{HEADER}\ndelivered\tanna\t7\tseven\tmail/a\t{SUM}\n")),
            "ledger.txt:2:18: uid must be a positive integer, got \"seven\""
        );
        assert_eq!(error(format!("{HEADER}\n# note\ndelivred\tanna\n")), "ledger.txt:3:1: unknown entry 'delivred'; expected 'delivered' or 'expunging'");
        assert_eq!(error(format!("{HEADER}\nexpunging\tanna\t7\t1\n")), "ledger.txt:2:19: 'expunging' needs 5 tab-separated fields, found 4");
        assert_eq!(error(format!("{HEADER}\ndelivered\tanna\t7\t1\tmail/a\tABC\n")), "ledger.txt:2:27: checksum must be 16 lowercase hex digits, got \"ABC\"");
        assert_eq!(error(format!("{HEADER}\nexpunging\tanna\t7\t1\t/etc/passwd\n")), "ledger.txt:2:20: file must be a relative path inside the store, got \"/etc/passwd\"");
        assert_eq!(error("delivered\n".into()), "ledger.txt:1:1: expected the header '# mailchaos ledger v1', found \"delivered\"");
        let not_utf8 = [format!("{HEADER}\nexpunging\tann\u{e9}\t").as_bytes(), b"\xff\n"].concat();
        assert_eq!(parse_ledger("ledger.txt", &not_utf8).unwrap_err().to_string(), "ledger.txt:2:16: not UTF-8");
        assert_eq!(error(format!("{HEADER}\n\n")), "ledger.txt:2:1: empty line");
    }

    #[test]
    fn a_byte_order_mark_and_crlf_line_ends_are_accepted() {
        let text = format!("\u{feff}{HEADER}\r\ndelivered\tanna\t7\t1\tmail/a\t{SUM}\r\n");
        let entries = parse_ledger("l", text.as_bytes()).unwrap();
        assert_eq!((entries.len(), entries[0].file.as_str()), (1, "mail/a"));
    }

    #[cfg(unix)]
    #[test]
    fn a_ledger_that_is_not_a_regular_file_is_refused_unread_and_unwritten() {
        let error = read_ledger(Path::new("/dev/zero")).unwrap_err().to_string();
        assert_eq!(error, "/dev/zero: cannot read ledger: is a character device, not a regular file");
        let error = Ledger::create(Path::new("/dev/null")).err().unwrap().to_string();
        assert_eq!(error, "exists and is not a regular file");
    }
}
