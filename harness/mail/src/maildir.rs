//! The names of the store's maildir files: `<unique>,U=<uid>,S=<size>,H=<checksum>`, in the
//! manner of Dovecot's `,S=` and `,W=` fields. The store writes them; `verify-store` and
//! crash exploration read them back from a directory without the store's memory. One
//! definition for both sides, so a change of spelling cannot split them.
//!
//! The layout is maildir(5)'s: `tmp/` (being written), `new/` (delivered, not yet seen by a
//! mail reader) and `cur/` (seen). A file in `cur/` carries the info suffix `:2,<flags>` after
//! its base name (`…,H=<checksum>:2,S` once read, flags in ASCII order), as Dovecot, mutt and
//! Python's `mailbox.Maildir` write and read it.

/// The subdirectories of every mailbox, all of which must exist (mutt and Python's
/// `mailbox.Maildir` refuse a maildir without `cur/`).
pub const SUBDIRS: [&str; 3] = ["tmp", "new", "cur"];

/// What separates a base name from its info (`:2,<flags>`): maildir(5) on POSIX.
pub const INFO_SEPARATOR: char = ':';

/// The flag of a message its owner has read (maildir(5) "S": seen).
pub const SEEN: char = 'S';

/// The checksum stored in a file name: blake3 of the bytes, first 16 hex digits.
pub fn checksum(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex()[..16].to_string()
}

/// The file name of a message with this unique part and UID.
pub fn file_name(unique: &str, uid: u64, bytes: &[u8]) -> String {
    format!("{unique},U={uid},S={},H={}", bytes.len(), checksum(bytes))
}

/// The base name of a maildir file name: everything before its info (`:2,S`), if any.
pub fn base_name(name: &str) -> &str {
    name.split_once(INFO_SEPARATOR).map_or(name, |(base, _)| base)
}

/// The flags of a file name's `:2,<flags>` info; empty when it has none.
pub fn flags(name: &str) -> &str {
    name.split_once(INFO_SEPARATOR).and_then(|(_, info)| info.strip_prefix("2,")).unwrap_or("")
}

/// The name a message gets in `cur/` with these flags added to those it has: base name, then
/// `:2,` and the flags in ASCII order, each once (maildir(5)).
pub fn with_flags(name: &str, added: &str) -> String {
    let mut all: Vec<char> = flags(name).chars().chain(added.chars()).collect();
    all.sort_unstable();
    all.dedup();
    format!("{}{INFO_SEPARATOR}2,{}", base_name(name), all.into_iter().collect::<String>())
}

/// The name a message gets in `cur/` with exactly these flags (an IMAP STORE replacing them):
/// base name, then `:2,` and the flags in ASCII order, each once.
pub fn set_flags(name: &str, flags: &str) -> String {
    let mut all: Vec<char> = flags.chars().collect();
    all.sort_unstable();
    all.dedup();
    format!("{}{INFO_SEPARATOR}2,{}", base_name(name), all.into_iter().collect::<String>())
}

/// Parses `…,U=<uid>,H=<checksum>` out of a maildir file name, in `new/` or in `cur/` (the info
/// suffix `:2,<flags>` is not part of the fields).
pub fn parse_file_name(name: &str) -> Option<(u64, String)> {
    let mut uid = None;
    let mut sum = None;
    for part in base_name(name).split(',') {
        if let Some(value) = part.strip_prefix("U=") {
            uid = value.parse::<u64>().ok();
        } else if let Some(value) = part.strip_prefix("H=") {
            sum = Some(value.to_string());
        }
    }
    Some((uid?, sum?))
}

/// The `S=<size>` of a maildir file name: the message's size as delivered, known without
/// reading the file (Dovecot's `,S=`), so a read that fails at recovery does not make it 0.
pub fn size_in_name(name: &str) -> Option<u64> {
    base_name(name).split(',').find_map(|part| part.strip_prefix("S=")).and_then(|value| value.parse::<u64>().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_in_new_and_in_cur_parse_alike() {
        let name = "1200.S1D1,U=7,S=42,H=00ff00ff00ff00ff";
        assert_eq!(parse_file_name(name), Some((7, "00ff00ff00ff00ff".to_string())));
        let read = with_flags(name, "S");
        assert_eq!(read, "1200.S1D1,U=7,S=42,H=00ff00ff00ff00ff:2,S");
        assert_eq!(parse_file_name(&read), parse_file_name(name), "the info suffix is not part of H=");
        assert_eq!(base_name(&read), name);
        assert_eq!(flags(&read), "S");
        assert_eq!(flags(name), "");
        // Flags in ASCII order, each once; a U= or H= in the info is not a field.
        assert_eq!(with_flags("a,U=1,H=ab:2,RF", "S"), "a,U=1,H=ab:2,FRS");
        assert_eq!(with_flags("a,U=1,H=ab:2,S", "S"), "a,U=1,H=ab:2,S");
        assert_eq!(parse_file_name("a,U=1,H=ab:2,U=9,H=cd"), Some((1, "ab".to_string())));
        assert_eq!(parse_file_name("a,S=3:2,U=1,H=ab"), None);
        assert_eq!(parse_file_name("1200.S1D1,S=42"), None);
        assert_eq!(parse_file_name("garbage,U=x,H=1"), None);
        assert_eq!(set_flags("a,U=1,H=ab:2,RS", "TS"), "a,U=1,H=ab:2,ST");
        assert_eq!(set_flags("a,U=1,H=ab", ""), "a,U=1,H=ab:2,");
    }

    #[test]
    fn the_size_is_read_from_the_name_in_new_and_in_cur() {
        assert_eq!(size_in_name("1200.S1D1,U=7,S=42,H=00ff00ff00ff00ff"), Some(42));
        assert_eq!(size_in_name("1200.S1D1,U=7,S=42,H=00ff00ff00ff00ff:2,S"), Some(42));
        assert_eq!(size_in_name("1200.S1D1,U=7,H=00ff"), None);
        assert_eq!(size_in_name("1200.S1D1,U=7,S=4x,H=00ff"), None);
    }
}
