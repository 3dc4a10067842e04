//! The one way an input file is read: only a regular file (symlinks followed), and never more
//! than a stated number of bytes. A named pipe would block the reader forever and `/dev/zero`
//! would fill memory, so the file's type is checked before it is opened and the read is capped.

use crate::InputError;
use std::fs::{File, Metadata};
use std::io::Read as _;
use std::path::Path;

/// The cap on a scenario or profile file: the largest shipped one is a few kilobytes.
pub const MAX_INPUT_BYTES: u64 = 4 * 1024 * 1024;

/// The text of an input file; its bytes must be UTF-8 (the error names the line and column of
/// the first byte that is not).
pub fn read_input_file(path: &Path, max_bytes: u64) -> Result<String, InputError> {
    let bytes = read_input_bytes(path, max_bytes)?;
    String::from_utf8(bytes).map_err(|error| {
        let valid = error.utf8_error().valid_up_to();
        let text = String::from_utf8_lossy(&error.as_bytes()[..valid]).into_owned();
        InputError::at(&path.display().to_string(), &text, valid, "not UTF-8 text")
    })
}

/// The bytes of an input file, at most `max_bytes` of them.
pub fn read_input_bytes(path: &Path, max_bytes: u64) -> Result<Vec<u8>, InputError> {
    let fail = |message: String| InputError::whole_file(path.display().to_string(), message);
    let metadata = std::fs::metadata(path).map_err(|error| fail(unreachable_because(path, &error)))?;
    regular(&metadata).map_err(fail)?;
    let file = File::open(path).map_err(|error| fail(format!("cannot open: {error}")))?;
    // The name may have been replaced between the two looks; the open file is what counts.
    let opened = file.metadata().map_err(|error| fail(format!("cannot read: {error}")))?;
    regular(&opened).map_err(fail)?;
    let too_big = || fail(format!("larger than the {} limit for this input ({} bytes)", human(max_bytes), opened.len()));
    if opened.len() > max_bytes {
        return Err(too_big());
    }
    let mut bytes = Vec::with_capacity(opened.len() as usize);
    // A file can grow while it is read (or report no length, as /proc does): the cap holds anyway.
    file.take(max_bytes + 1).read_to_end(&mut bytes).map_err(|error| fail(format!("cannot read: {error}")))?;
    if bytes.len() as u64 > max_bytes {
        return Err(too_big());
    }
    Ok(bytes)
}

/// Why `metadata` failed, in the user's terms: a dangling or looping symlink is not "no such
/// file".
fn unreachable_because(path: &Path, error: &std::io::Error) -> String {
    let is_link = std::fs::symlink_metadata(path).is_ok_and(|metadata| metadata.file_type().is_symlink());
    match (is_link, error.kind()) {
        (true, std::io::ErrorKind::NotFound) => {
            let target = std::fs::read_link(path).map(|target| target.display().to_string()).unwrap_or_default();
            format!("a symlink to {target}, which does not exist")
        }
        (true, _) => format!("a symlink that cannot be followed (a symlink loop?): {error}"),
        (false, std::io::ErrorKind::NotFound) => "no such file".to_string(),
        (false, _) => format!("cannot read: {error}"),
    }
}

/// Ok for a regular file; otherwise what the path is instead.
fn regular(metadata: &Metadata) -> Result<(), String> {
    let kind = metadata.file_type();
    if kind.is_file() {
        return Ok(());
    }
    let what = if kind.is_dir() { "a directory" } else { special_kind(&kind) };
    Err(format!("is {what}, not a regular file"))
}

#[cfg(unix)]
fn special_kind(kind: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt as _;
    match () {
        _ if kind.is_fifo() => "a named pipe (FIFO)",
        _ if kind.is_char_device() => "a character device",
        _ if kind.is_block_device() => "a block device",
        _ if kind.is_socket() => "a socket",
        _ => "not a file",
    }
}

#[cfg(not(unix))]
fn special_kind(_kind: &std::fs::FileType) -> &'static str {
    "a special file"
}

/// A byte count as a person states a limit.
fn human(bytes: u64) -> String {
    match bytes {
        bytes if bytes >= 1 << 20 && bytes % (1 << 20) == 0 => format!("{} MiB", bytes >> 20),
        bytes if bytes >= 1 << 10 && bytes % (1 << 10) == 0 => format!("{} KiB", bytes >> 10),
        bytes => format!("{bytes}-byte"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(path: &Path, cap: u64) -> String {
        read_input_bytes(path, cap).unwrap_err().to_string()
    }

    #[test]
    fn a_regular_file_within_the_cap_is_read() {
        let dir = std::env::temp_dir().join(format!("input-read-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("ok.toml");
        std::fs::write(&file, "name = \"x\"\n").unwrap();
        assert_eq!(read_input_file(&file, 64).unwrap(), "name = \"x\"\n");
        let error = error_of(&file, 4);
        assert!(error.ends_with("larger than the 4-byte limit for this input (11 bytes)"), "{error}");
        assert!(error_of(&dir, 64).ends_with(":1:1: is a directory, not a regular file"));
        assert!(error_of(&dir.join("none"), 64).ends_with(":1:1: no such file"));
        std::fs::write(&file, b"ok\n\xff").unwrap();
        let error = read_input_file(&file, 64).unwrap_err().to_string();
        assert!(error.ends_with("ok.toml:2:1: not UTF-8 text"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn devices_and_symlink_loops_are_named_for_what_they_are() {
        assert!(error_of(Path::new("/dev/zero"), MAX_INPUT_BYTES).ends_with("is a character device, not a regular file"));
        let dir = std::env::temp_dir().join(format!("input-loop-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::os::unix::fs::symlink(dir.join("b"), dir.join("a")).unwrap();
        std::os::unix::fs::symlink(dir.join("a"), dir.join("b")).unwrap();
        let error = error_of(&dir.join("a"), 64);
        assert!(error.contains("symlink loop"), "{error}");
        std::os::unix::fs::symlink(dir.join("gone"), dir.join("dangling")).unwrap();
        assert!(error_of(&dir.join("dangling"), 64).contains("gone, which does not exist"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
