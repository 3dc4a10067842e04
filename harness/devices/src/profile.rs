//! Persistence profiles: what a storage device keeps across a crash and how it misbehaves,
//! described as data (TOML) so that a storage vendor can describe its device without writing Rust.
//!
//! The dimensions follow the crash-consistency literature (ALICE, "All File Systems Are Not
//! Created Equal", OSDI 2014): the atomic write unit and the shape of a torn write, whether a new
//! name needs a directory fsync, the ordering of metadata and of data against metadata, how far
//! unsynced operations may be reordered, whether fsync is honest, what an fsync error does to
//! dirty pages, background commit, read faults, availability limits and failover.

use input::{line_column, InputError};
use serde::Deserialize;
use std::path::Path;
use toml::Spanned;

/// The shipped profiles, embedded so that `--profile NAME` works from any directory.
pub const SHIPPED: &[(&str, &str)] = &[
    ("posix-strict", include_str!("../../../fixtures/profiles/posix-strict.toml")),
    ("linux-ext4-ordered", include_str!("../../../fixtures/profiles/linux-ext4-ordered.toml")),
    ("linux-xfs", include_str!("../../../fixtures/profiles/linux-xfs.toml")),
    ("lying-fsync", include_str!("../../../fixtures/profiles/lying-fsync.toml")),
    ("array-writeback-unmirrored", include_str!("../../../fixtures/profiles/array-writeback-unmirrored.toml")),
    ("libero-2023", include_str!("../../../fixtures/profiles/libero-2023.toml")),
];

/// The profile a run uses when none is named: the strictest honest one.
pub const DEFAULT: &str = "posix-strict";

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub name: Spanned<String>,
    #[serde(default)]
    pub description: String,
    /// Whether the device keeps the promises of POSIX fsync (a vendor's claim, checked by runs).
    #[serde(default = "yes")]
    pub keeps_promises: bool,
    #[serde(default)]
    pub persistence: Persistence,
    #[serde(default)]
    pub fsync: Fsync,
    #[serde(default)]
    pub reads: Reads,
    #[serde(default)]
    pub availability: Availability,
    #[serde(default)]
    pub failover: Failover,
}

fn yes() -> bool {
    true
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Torn {
    /// A write is all or nothing.
    None,
    /// A prefix of its sectors survives.
    Prefix,
    /// Any subset of its sectors survives.
    AnySubset,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reorder {
    /// Unsynced operations reach the media in the order they were issued.
    None,
    /// In order per file (and per directory for names), in any order across files.
    PerFile,
    /// In any order.
    Any,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MetadataOrder {
    /// Name operations (create, rename, unlink) reach the media in issue order (a journal).
    Ordered,
    Unordered,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FsyncErrorMode {
    /// Linux since 4.13 ("fsyncgate"): the error is reported once, the dirty pages are dropped
    /// and the next fsync succeeds without making them durable.
    DropDirty,
    /// The dirty pages stay; a later fsync may still write them.
    KeepDirty,
}

// A listing shows each value as a profile file spells it (`prefix`, not Rust's `Prefix`).
impl Torn {
    pub fn spelling(self) -> &'static str {
        match self {
            Torn::None => "none",
            Torn::Prefix => "prefix",
            Torn::AnySubset => "any-subset",
        }
    }
}

impl Reorder {
    pub fn spelling(self) -> &'static str {
        match self {
            Reorder::None => "none",
            Reorder::PerFile => "per-file",
            Reorder::Any => "any",
        }
    }
}

impl MetadataOrder {
    pub fn spelling(self) -> &'static str {
        match self {
            MetadataOrder::Ordered => "ordered",
            MetadataOrder::Unordered => "unordered",
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Persistence {
    /// The atomic write unit in bytes.
    #[serde(default = "default_sector_bytes")]
    pub sector_bytes: Spanned<u64>,
    #[serde(default = "default_torn")]
    pub torn: Torn,
    /// A new or renamed name survives a crash only after its directory is fsynced.
    #[serde(default = "yes")]
    pub new_name_needs_dir_fsync: bool,
    #[serde(default = "default_metadata")]
    pub metadata: MetadataOrder,
    /// A name that points at a file reaches the media only after the file's earlier data did
    /// (ext4 data=ordered).
    #[serde(default)]
    pub data_before_metadata: bool,
    #[serde(default = "default_reorder")]
    pub reorder: Reorder,
    /// Every unsynced operation reaches the media this often; 0 = only when fsynced.
    #[serde(default)]
    pub background_commit_ms: u64,
}

fn default_sector_bytes() -> Spanned<u64> {
    Spanned::new(0..0, 512)
}
fn default_torn() -> Torn {
    Torn::Prefix
}
fn default_metadata() -> MetadataOrder {
    MetadataOrder::Unordered
}
fn default_reorder() -> Reorder {
    Reorder::Any
}

impl Default for Persistence {
    fn default() -> Self {
        Persistence {
            sector_bytes: default_sector_bytes(),
            torn: default_torn(),
            new_name_needs_dir_fsync: true,
            metadata: default_metadata(),
            data_before_metadata: false,
            reorder: default_reorder(),
            background_commit_ms: 0,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fsync {
    /// Per mille of fsyncs that answer Ok without making anything durable (1000: every one).
    #[serde(default = "zero_u32")]
    pub lie_per_mille: Spanned<u32>,
    #[serde(default = "default_on_error")]
    pub on_error: FsyncErrorMode,
}

fn default_on_error() -> FsyncErrorMode {
    FsyncErrorMode::DropDirty
}

impl Default for Fsync {
    fn default() -> Self {
        Fsync { lie_per_mille: Spanned::new(0..0, 0), on_error: default_on_error() }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reads {
    /// Per million reads that find a persistent bit flip (latent corruption).
    #[serde(default = "zero_u32")]
    pub bit_rot_per_million: Spanned<u32>,
}

impl Default for Reads {
    fn default() -> Self {
        Reads { bit_rot_per_million: zero_u32() }
    }
}

fn zero_u32() -> Spanned<u32> {
    Spanned::new(0..0, 0)
}

fn zero_u64() -> Spanned<u64> {
    Spanned::new(0..0, 0)
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Availability {
    /// A hidden limit: once this many bytes were written, every operation stalls for `stall_s`
    /// and then all resumes with nothing lost (the 2023 vendor bug). 0 = no such limit.
    #[serde(default)]
    pub hidden_limit_bytes: u64,
    #[serde(default = "zero_u64")]
    pub stall_s: Spanned<u64>,
    /// After this many I/O errors the file system remounts read-only (ext4 errors=remount-ro)
    /// until the host restarts. 0 = never.
    #[serde(default)]
    pub read_only_after_errors: u32,
    /// ENOSPC beyond these (0 = unlimited).
    #[serde(default)]
    pub max_bytes: u64,
    #[serde(default)]
    pub max_files: u64,
}

impl Default for Availability {
    fn default() -> Self {
        Availability { hidden_limit_bytes: 0, stall_s: zero_u64(), read_only_after_errors: 0, max_bytes: 0, max_files: 0 }
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Failover {
    /// fsync is acknowledged from a controller cache that survives a host crash but not a
    /// controller failover; the cache reaches the media at each background commit.
    #[serde(default)]
    pub write_back_cache: bool,
    /// The controller fails over this often (0 = never): unflushed cache writes are lost and
    /// reads return the older versions on the media.
    #[serde(default)]
    pub every_s: u64,
}

impl Profile {
    pub fn name(&self) -> &str {
        self.name.get_ref()
    }

    /// The names of the shipped profiles, in listing order.
    pub fn shipped_names() -> Vec<&'static str> {
        SHIPPED.iter().map(|(name, _)| *name).collect()
    }

    pub fn shipped() -> Vec<Profile> {
        SHIPPED.iter().filter_map(|(name, text)| parse(&format!("fixtures/profiles/{name}.toml"), text).ok()).collect()
    }

    /// A shipped profile by name, or a profile file by path.
    pub fn resolve(name_or_file: &str) -> Result<Profile, InputError> {
        Profile::resolve_with_text(name_or_file).map(|(profile, _)| profile)
    }

    /// As `resolve`, with the text the profile was read from (what a run line's hash is of):
    /// one read, so the hash and the profile that runs are of the same bytes.
    pub fn resolve_with_text(name_or_file: &str) -> Result<(Profile, String), InputError> {
        if let Some((name, text)) = SHIPPED.iter().find(|(name, _)| *name == name_or_file) {
            return Ok((parse(&format!("fixtures/profiles/{name}.toml"), text)?, text.to_string()));
        }
        // A bare word is meant as a name; anything like a path is meant as a file.
        let looks_like_a_file = name_or_file.contains(['/', '.']);
        if !looks_like_a_file && std::fs::symlink_metadata(name_or_file).is_err() {
            let shipped = Profile::shipped_names().join(", ");
            return Err(InputError::unplaced(format!("no profile named '{}'; shipped: {shipped} (or give a profile file's path)", input::clip(name_or_file))));
        }
        load_with_text(Path::new(name_or_file))
    }

    /// What a listing shows after the name.
    pub fn summary(&self) -> String {
        let p = &self.persistence;
        let promise = if self.keeps_promises { "keeps-promises" } else { "breaks-promises" };
        format!(
            "{promise} sector={} torn={} dir-fsync-for-new-names={} metadata={} reorder={} lie={}‰ commit={}ms — {}",
            p.sector_bytes.get_ref(),
            p.torn.spelling(),
            p.new_name_needs_dir_fsync,
            p.metadata.spelling(),
            p.reorder.spelling(),
            self.fsync.lie_per_mille.get_ref(),
            p.background_commit_ms,
            self.description
        )
    }
}

impl Default for Profile {
    fn default() -> Self {
        Profile::resolve(DEFAULT).expect("the default profile is shipped and valid")
    }
}

/// Reads and validates a profile file (a regular file of at most `input::MAX_INPUT_BYTES`). A
/// file may not take a shipped profile's name unless it is that profile, word for word: two
/// devices under one name would make a run line ambiguous.
pub fn load(path: &Path) -> Result<Profile, InputError> {
    load_with_text(path).map(|(profile, _)| profile)
}

/// As `load`, with the text read.
pub fn load_with_text(path: &Path) -> Result<(Profile, String), InputError> {
    let file = path.display().to_string();
    let text = input::read_input_file(path, input::MAX_INPUT_BYTES)?;
    let profile = parse(&file, &text)?;
    let shipped = SHIPPED.iter().find(|(name, _)| *name == profile.name());
    if shipped.is_some_and(|(_, shipped_text)| *shipped_text != text) {
        let message = format!("name '{}' is a shipped profile's; give this device a name of its own", profile.name());
        return Err(InputError::at(&file, &text, profile.name.span().start, message));
    }
    Ok((profile, text))
}

/// Parses and validates a profile; every error names `file:line:col`.
pub fn parse(file: &str, text: &str) -> Result<Profile, InputError> {
    let locate = |span: Option<std::ops::Range<usize>>, message: String| {
        let (line, column) = line_column(text, span.map(|span| span.start).unwrap_or(0));
        InputError { file: file.to_string(), line, column, message }
    };
    let profile: Profile = toml::from_str(text).map_err(|error| locate(error.span(), input::toml_message(text, error.span(), error.message())))?;
    let name = &profile.name;
    let good_name = !name.get_ref().is_empty() && name.get_ref().len() <= 64 && name.get_ref().bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if !good_name {
        return Err(locate(Some(name.span()), "name must be 1 to 64 lowercase letters, digits, '-' or '.'".into()));
    }
    validate_numbers(&profile, &input::Keys::parse(text)).map_err(|(span, message)| locate(Some(span), message))?;
    let sector = &profile.persistence.sector_bytes;
    if !sector.get_ref().is_power_of_two() || !(512..=65_536).contains(sector.get_ref()) {
        return Err(locate(Some(sector.span()), "sector_bytes must be a power of two from 512 to 65536".into()));
    }
    let lie = &profile.fsync.lie_per_mille;
    if *lie.get_ref() > 1000 {
        return Err(locate(Some(lie.span()), "lie_per_mille must be at most 1000".into()));
    }
    let rot = &profile.reads.bit_rot_per_million;
    if *rot.get_ref() > 1_000_000 {
        return Err(locate(Some(rot.span()), "bit_rot_per_million must be at most 1000000".into()));
    }
    let stall = &profile.availability.stall_s;
    if (*stall.get_ref() > 0) != (profile.availability.hidden_limit_bytes > 0) {
        return Err(locate(Some(stall.span()), "hidden_limit_bytes and stall_s go together: set both or neither".into()));
    }
    if *stall.get_ref() > input::MAX_HORIZON_S {
        return Err(locate(Some(stall.span()), format!("stall_s must be at most {}", input::MAX_HORIZON_S)));
    }
    Ok(profile)
}

/// Spans that simulated time is counted in are bounded by `input::MAX_HORIZON_S`: beyond it a
/// period in milliseconds could wrap (a failover every 0 ms).
fn validate_numbers(profile: &Profile, keys: &input::Keys) -> Result<(), (std::ops::Range<usize>, String)> {
    let horizon_ms = input::MAX_HORIZON_S * 1000;
    let checks = [
        (profile.persistence.background_commit_ms <= horizon_ms, ["persistence", "background_commit_ms"], format!("background_commit_ms must be at most {horizon_ms} (0 = only when fsynced)")),
        (profile.failover.every_s <= input::MAX_HORIZON_S, ["failover", "every_s"], format!("every_s must be at most {} (0 = never)", input::MAX_HORIZON_S)),
    ];
    for (ok, path, message) in checks {
        if !ok {
            return Err((keys.value(&path), message));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_profile_parses_under_its_own_name() {
        for (name, text) in SHIPPED {
            let profile = parse(name, text).unwrap_or_else(|error| panic!("{error}"));
            assert_eq!(profile.name(), *name);
        }
        assert_eq!(Profile::shipped().len(), SHIPPED.len());
    }

    #[test]
    fn bad_profiles_name_line_and_column() {
        let error = parse("p.toml", "name = \"x\"\n[persistence]\nsector_bytes = 1000\n").unwrap_err().to_string();
        assert!(error.starts_with("p.toml:3:16: sector_bytes must be a power of two"), "{error}");
        let error = parse("p.toml", "name = \"x\"\n[fsync]\nlie = 3\n").unwrap_err().to_string();
        assert!(error.starts_with("p.toml:3:1: unknown field `lie`"), "{error}");
        let error = parse("p.toml", "name = \"x\"\n[persistence]\nreorder = \"sometimes\"\n").unwrap_err().to_string();
        assert!(error.starts_with("p.toml:3:11: unknown variant `sometimes`"), "{error}");
        let error = Profile::resolve("ext5").unwrap_err().to_string();
        assert!(error.starts_with("no profile named 'ext5'; shipped: posix-strict, "), "{error}");
        let error = parse("p.toml", "name = \"\"\n").unwrap_err().to_string();
        assert!(error.starts_with("p.toml:1:8: name must be 1 to 64"), "{error}");
        let error = parse("p.toml", "name = \"x\"\n[failover]\nevery_s = 18446744073709551\n").unwrap_err().to_string();
        assert!(error.starts_with("p.toml:3:11: every_s must be at most 2592000"), "{error}");
    }

    #[test]
    fn a_listing_spells_values_as_the_files_do() {
        let libero = Profile::resolve("libero-2023").unwrap().summary();
        assert!(libero.contains("torn=prefix ") && libero.contains("metadata=ordered reorder=per-file "), "{libero}");
    }

    #[test]
    fn a_file_may_not_take_a_shipped_name_unless_it_is_that_profile() {
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join("strict.toml");
        std::fs::write(&copy, SHIPPED[0].1).unwrap();
        assert_eq!(load(&copy).unwrap().name(), "posix-strict");
        std::fs::write(&copy, format!("{}\n# edited\n", SHIPPED[0].1)).unwrap();
        let error = load(&copy).unwrap_err().to_string();
        assert!(error.contains("is a shipped profile's"), "{error}");
    }
}
