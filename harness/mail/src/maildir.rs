//! The names of the store's maildir files: `<unique>,U=<uid>,S=<size>,H=<checksum>`, in the
//! manner of Dovecot's `,S=` and `,W=` fields. The store writes them; `verify-store` and
//! crash exploration read them back from a directory without the store's memory. One
//! definition for both sides, so a change of spelling cannot split them.

/// The checksum stored in a file name: blake3 of the bytes, first 16 hex digits.
pub fn checksum(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex()[..16].to_string()
}

/// The file name of a message with this unique part and UID.
pub fn file_name(unique: &str, uid: u64, bytes: &[u8]) -> String {
    format!("{unique},U={uid},S={},H={}", bytes.len(), checksum(bytes))
}

/// Parses `…,U=<uid>,H=<checksum>` out of a maildir file name.
pub fn parse_file_name(name: &str) -> Option<(u64, String)> {
    let mut uid = None;
    let mut sum = None;
    for part in name.split(',') {
        if let Some(value) = part.strip_prefix("U=") {
            uid = value.parse::<u64>().ok();
        } else if let Some(value) = part.strip_prefix("H=") {
            sum = Some(value.to_string());
        }
    }
    Some((uid?, sum?))
}
