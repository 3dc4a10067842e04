//! Crash states: which of the operations not yet on the media a crash may keep.
//!
//! A crash keeps the media plus a subset of the log that is *closed* under the profile's rules:
//! an operation survives only with its prerequisites — the previous operation (no reordering),
//! the previous one on the same file or directory (per-file reordering), the previous name
//! operation (ordered metadata), the file's earlier data (data before metadata), and the
//! operation that created the name it renames or unlinks. A surviving unsynced write may be torn
//! at a sector boundary. Enumeration follows ALICE (Pillai et al., OSDI 2014): every closed subset
//! while the log is small, otherwise every prefix, every single omission and every single torn
//! write, then seeded samples.

use disk::parent;
use crate::profile::{MetadataOrder, Profile, Reorder, Torn};
use rand::Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

/// Logs up to this many operations are enumerated exhaustively (2^12 subsets at most).
pub const EXHAUSTIVE_LIMIT: usize = 12;

/// A file's contents, shared: the live view, the write in the log and the media hold one copy
/// between them, and an image (a crash state, a snapshot) clones the handle, not the bytes.
/// Changed only by replacing it (a write) or copy-on-write (`Rc::make_mut`, a flipped bit).
pub type Content = Rc<Vec<u8>>;

/// A disk's names and file contents.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Image {
    pub names: BTreeMap<String, u64>,
    pub contents: BTreeMap<u64, Content>,
}

impl Image {
    /// Applies one operation; `torn` keeps only part of a write's sectors.
    pub fn apply(&mut self, body: &OpBody, torn: Option<(Torn, u64)>) {
        match body {
            OpBody::Write { inode, bytes, .. } => {
                let kept = match torn {
                    Some((shape, sector_bytes)) => Rc::new(tear(bytes, shape, sector_bytes)),
                    None => Rc::clone(bytes),
                };
                self.contents.insert(*inode, kept);
            }
            OpBody::Link { path, inode } => {
                self.names.insert(path.clone(), *inode);
                self.contents.entry(*inode).or_default();
            }
            OpBody::Rename { from, to, inode } => {
                if self.names.get(from) == Some(inode) {
                    self.names.remove(from);
                }
                self.names.insert(to.clone(), *inode);
                self.contents.entry(*inode).or_default();
            }
            OpBody::Unlink { path, inode } => {
                if self.names.get(path) == Some(inode) {
                    self.names.remove(path);
                }
            }
        }
    }

    /// Forgets the contents of files no name points at, except those still in `keep`.
    pub fn collect_garbage(&mut self, keep: &BTreeSet<u64>) {
        let named: BTreeSet<u64> = self.names.values().copied().collect();
        self.contents.retain(|inode, _| named.contains(inode) || keep.contains(inode));
    }

    /// Path → contents, as checkers and the recovery oracle read it.
    pub fn files(&self) -> BTreeMap<String, Vec<u8>> {
        self.names.iter().map(|(path, inode)| (path.clone(), self.contents.get(inode).map(|content| content.to_vec()).unwrap_or_default())).collect()
    }
}

/// The surviving part of a torn write: the first half of its sectors, or every other sector.
fn tear(bytes: &[u8], shape: Torn, sector_bytes: u64) -> Vec<u8> {
    let sector = sector_bytes.max(1) as usize;
    let sectors = bytes.len().div_ceil(sector);
    match shape {
        Torn::None => bytes.to_vec(),
        Torn::Prefix => bytes[..(sectors / 2 * sector).min(bytes.len())].to_vec(),
        Torn::AnySubset => {
            let mut kept = bytes.to_vec();
            for (index, chunk) in kept.chunks_mut(sector).enumerate() {
                if index % 2 == 1 {
                    chunk.fill(0);
                }
            }
            kept
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpBody {
    Write { path: String, inode: u64, bytes: Content },
    Link { path: String, inode: u64 },
    Rename { from: String, to: String, inode: u64 },
    Unlink { path: String, inode: u64 },
}

impl OpBody {
    pub fn kind_name(&self) -> &'static str {
        match self {
            OpBody::Write { .. } => "write",
            OpBody::Link { .. } => "link",
            OpBody::Rename { .. } => "rename",
            OpBody::Unlink { .. } => "unlink",
        }
    }

    /// The path the operation is about (the target of a rename).
    pub fn path(&self) -> &str {
        match self {
            OpBody::Write { path, .. } | OpBody::Link { path, .. } | OpBody::Unlink { path, .. } => path,
            OpBody::Rename { to, .. } => to,
        }
    }

    pub fn inode(&self) -> u64 {
        match self {
            OpBody::Write { inode, .. } | OpBody::Link { inode, .. } | OpBody::Rename { inode, .. } | OpBody::Unlink { inode, .. } => *inode,
        }
    }

    pub fn is_data_of(&self, inode: u64) -> bool {
        matches!(self, OpBody::Write { inode: i, .. } if *i == inode)
    }

    /// A name operation that makes `inode` reachable under a name.
    pub fn names_inode(&self, inode: u64) -> bool {
        matches!(self, OpBody::Link { inode: i, .. } | OpBody::Rename { inode: i, .. } if *i == inode)
    }

    pub fn is_name_op(&self) -> bool {
        !matches!(self, OpBody::Write { .. })
    }

    pub fn touches_dir(&self, dir: &str) -> bool {
        match self {
            OpBody::Write { .. } => false,
            OpBody::Link { path, .. } | OpBody::Unlink { path, .. } => parent(path) == dir,
            OpBody::Rename { from, to, .. } => parent(from) == dir || parent(to) == dir,
        }
    }

    /// The files and directories whose order per-file reordering keeps.
    fn groups(&self) -> Vec<String> {
        match self {
            OpBody::Write { inode, .. } => vec![format!("inode:{inode}")],
            OpBody::Link { path, .. } | OpBody::Unlink { path, .. } => vec![format!("dir:{}", parent(path))],
            OpBody::Rename { from, to, .. } => vec![format!("dir:{}", parent(from)), format!("dir:{}", parent(to))],
        }
    }

    /// The name this operation needs to exist (a rename's source, an unlinked name).
    fn needs_name(&self) -> Option<&str> {
        match self {
            OpBody::Rename { from, .. } => Some(from),
            OpBody::Unlink { path, .. } => Some(path),
            _ => None,
        }
    }

    fn creates_name(&self, name: &str) -> bool {
        match self {
            OpBody::Link { path, .. } => path == name,
            OpBody::Rename { to, .. } => to == name,
            _ => false,
        }
    }

    fn describe(&self) -> String {
        match self {
            OpBody::Write { path, bytes, .. } => format!("write {path} ({} bytes)", bytes.len()),
            OpBody::Link { path, .. } => format!("create {path}"),
            OpBody::Rename { from, to, .. } => format!("rename {from} -> {to}"),
            OpBody::Unlink { path, .. } => format!("unlink {path}"),
        }
    }
}

/// One operation not yet on the media.
#[derive(Clone, Debug)]
pub struct LogOp {
    pub seq: u64,
    pub body: OpBody,
    /// A sync acknowledged it as durable (a lie, or a write-back cache): losing it breaks a promise.
    pub promised: bool,
    /// The device will never persist it (a lost write).
    pub lost: bool,
    /// A torn-write fault: if it survives a crash unsynced, it survives torn.
    pub torn: bool,
}

/// The direct prerequisites of `log[index]` under the profile's rules: earlier indices.
fn prerequisites(log: &[LogOp], index: usize, profile: &Profile) -> Vec<usize> {
    let op = &log[index].body;
    let earlier = |wanted: &dyn Fn(&OpBody) -> bool| (0..index).rev().find(|&j| wanted(&log[j].body));
    let mut found = Vec::new();
    let rules = &profile.persistence;
    match rules.reorder {
        Reorder::None if index > 0 => found.push(index - 1),
        Reorder::PerFile => {
            for group in op.groups() {
                found.extend(earlier(&|other: &OpBody| other.groups().contains(&group)));
            }
        }
        _ => {}
    }
    if rules.metadata == MetadataOrder::Ordered && op.is_name_op() {
        found.extend(earlier(&|other: &OpBody| other.is_name_op()));
    }
    if rules.data_before_metadata && op.names_inode(op.inode()) {
        found.extend((0..index).filter(|&j| log[j].body.is_data_of(op.inode())));
    }
    if let Some(name) = op.needs_name() {
        found.extend(earlier(&|other: &OpBody| other.creates_name(name)));
    }
    found
}

/// `chosen` with every prerequisite, transitively; sorted. Lost operations are never included
/// (the device believes it wrote them, so they block nothing).
pub fn closure(log: &[LogOp], chosen: &[usize], profile: &Profile) -> Vec<usize> {
    let mut included = vec![false; log.len()];
    let mut stack: Vec<usize> = chosen.to_vec();
    while let Some(index) = stack.pop() {
        if included[index] || log[index].lost {
            continue;
        }
        included[index] = true;
        stack.extend(prerequisites(log, index, profile));
    }
    (0..log.len()).filter(|&index| included[index]).collect()
}

/// One crash state: the log operations that survive, and the one that survives torn.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct CrashState {
    pub survivors: Vec<usize>,
    pub torn: Option<usize>,
}

/// The media and the log at one moment, with the rules: every crash state a profile allows.
pub struct Frontier {
    pub media: Image,
    pub log: Vec<LogOp>,
    profile: Rc<Profile>,
    prerequisites: Vec<Vec<usize>>,
}

impl Frontier {
    pub fn new(media: Image, log: Vec<LogOp>, profile: Rc<Profile>) -> Frontier {
        let prerequisites = (0..log.len()).map(|index| prerequisites(&log, index, &profile)).collect();
        Frontier { media, log, profile, prerequisites }
    }

    /// Operations a crash may keep (lost writes never reach the media).
    fn eligible(&self) -> Vec<usize> {
        (0..self.log.len()).filter(|&index| !self.log[index].lost).collect()
    }

    /// What every crash keeps: writes acknowledged from a write-back cache survive a host crash.
    fn forced(&self) -> Vec<usize> {
        if !self.profile.failover.write_back_cache {
            return Vec::new();
        }
        let cached: Vec<usize> = (0..self.log.len()).filter(|&index| self.log[index].promised).collect();
        closure(&self.log, &cached, &self.profile)
    }

    fn allowed(&self, index: usize, included: &[bool]) -> bool {
        self.prerequisites[index].iter().all(|&j| included[j] || self.log[j].lost)
    }

    /// A forced torn write of this state, or a chosen one.
    fn torn_of(&self, survivors: &[usize], chosen: Option<usize>) -> Option<usize> {
        if self.profile.persistence.torn == Torn::None {
            return survivors.iter().copied().find(|&index| self.log[index].torn);
        }
        chosen.or_else(|| survivors.iter().copied().find(|&index| self.log[index].torn))
    }

    fn writes(&self, survivors: &[usize]) -> Vec<usize> {
        survivors.iter().copied().filter(|&index| matches!(self.log[index].body, OpBody::Write { .. })).collect()
    }

    /// One state drawn from `rng`: nothing, everything, or a random closed subset; sometimes torn.
    pub fn sample(&self, rng: &mut impl Rng) -> CrashState {
        let mut included = vec![false; self.log.len()];
        for index in self.forced() {
            included[index] = true;
        }
        let strategy = rng.random_range(0..4);
        for index in self.eligible() {
            let wanted = match strategy {
                0 => false,
                1 => true,
                _ => rng.random_bool(0.5),
            };
            if wanted && !included[index] && self.allowed(index, &included) {
                included[index] = true;
            }
        }
        let survivors: Vec<usize> = (0..self.log.len()).filter(|&index| included[index]).collect();
        let writes = self.writes(&survivors);
        let chosen = (!writes.is_empty() && rng.random_range(0..4) == 0).then(|| writes[rng.random_range(0..writes.len())]);
        let torn = self.torn_of(&survivors, chosen);
        CrashState { survivors, torn }
    }

    /// The crash states to explore, and whether they are all the profile allows.
    pub fn enumerate(&self, max_states: usize, rng: &mut impl Rng) -> (Vec<CrashState>, bool) {
        let eligible = self.eligible();
        let mut states = BTreeSet::new();
        let mut exhaustive = eligible.len() <= EXHAUSTIVE_LIMIT;
        if exhaustive {
            let mut included = vec![false; self.log.len()];
            for index in self.forced() {
                included[index] = true;
            }
            self.every_closed_subset(&eligible, 0, &mut included, &mut states);
        } else {
            self.alice_families(&eligible, &mut states);
        }
        let everything = closure(&self.log, &eligible, &self.profile);
        if self.profile.persistence.torn != Torn::None {
            for write in self.writes(&everything) {
                states.insert(CrashState { survivors: everything.clone(), torn: Some(write) });
            }
        }
        let mut states: Vec<CrashState> = states.into_iter().collect();
        if states.len() > max_states {
            states.truncate(max_states);
            exhaustive = false;
        }
        let mut attempts = 0;
        while !exhaustive && states.len() < max_states && attempts < 4 * max_states {
            attempts += 1;
            let sample = self.sample(rng);
            if !states.contains(&sample) {
                states.push(sample);
            }
        }
        (states, exhaustive)
    }

    fn every_closed_subset(&self, eligible: &[usize], position: usize, included: &mut Vec<bool>, states: &mut BTreeSet<CrashState>) {
        let Some(&index) = eligible.get(position) else {
            let survivors: Vec<usize> = (0..self.log.len()).filter(|&i| included[i]).collect();
            let torn = self.torn_of(&survivors, None);
            states.insert(CrashState { survivors, torn });
            return;
        };
        if included[index] {
            return self.every_closed_subset(eligible, position + 1, included, states);
        }
        self.every_closed_subset(eligible, position + 1, included, states);
        if self.allowed(index, included) {
            included[index] = true;
            self.every_closed_subset(eligible, position + 1, included, states);
            included[index] = false;
        }
    }

    /// Every prefix, and everything but one operation (and what depends on it).
    fn alice_families(&self, eligible: &[usize], states: &mut BTreeSet<CrashState>) {
        let forced = self.forced();
        for length in 0..=eligible.len() {
            let mut chosen = forced.clone();
            chosen.extend_from_slice(&eligible[..length]);
            let survivors = closure(&self.log, &chosen, &self.profile);
            let torn = self.torn_of(&survivors, None);
            states.insert(CrashState { survivors, torn });
        }
        for &omitted in eligible {
            let mut included = vec![false; self.log.len()];
            for &index in &forced {
                included[index] = true;
            }
            for &index in eligible {
                if index != omitted && !included[index] && self.allowed(index, &included) {
                    included[index] = true;
                }
            }
            let survivors: Vec<usize> = (0..self.log.len()).filter(|&i| included[i]).collect();
            let torn = self.torn_of(&survivors, None);
            states.insert(CrashState { survivors, torn });
        }
    }

    /// The disk image of one crash state.
    pub fn materialize(&self, state: &CrashState) -> Image {
        let mut image = self.media.clone();
        let shape = (self.profile.persistence.torn, *self.profile.persistence.sector_bytes.get_ref());
        for &index in &state.survivors {
            let torn = (state.torn == Some(index)).then_some(shape);
            let torn = torn.map(|(shape, sector)| (if shape == Torn::None { Torn::Prefix } else { shape }, sector));
            image.apply(&self.log[index].body, torn);
        }
        image.collect_garbage(&BTreeSet::new());
        image
    }

    /// Which operations of the log a state keeps and which it loses, for a person to read.
    pub fn describe(&self, state: &CrashState) -> String {
        let mut kept = Vec::new();
        let mut lost = Vec::new();
        for (index, op) in self.log.iter().enumerate() {
            let mut text = format!("#{} {}", op.seq, op.body.describe());
            if state.torn == Some(index) {
                text.push_str(" [torn]");
            }
            if op.promised {
                text.push_str(" [acknowledged by sync]");
            }
            if state.survivors.contains(&index) { kept.push(text) } else { lost.push(text) }
        }
        format!("survived: [{}]; lost: [{}]", kept.join(", "), lost.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(seq: u64, body: OpBody) -> LogOp {
        LogOp { seq, body, promised: false, lost: false, torn: false }
    }

    fn create_and_rename() -> Vec<LogOp> {
        vec![
            op(0, OpBody::Link { path: "t/x".into(), inode: 1 }),
            op(1, OpBody::Write { path: "t/x".into(), inode: 1, bytes: Rc::new(vec![7; 2048]) }),
            op(2, OpBody::Rename { from: "t/x".into(), to: "n/x".into(), inode: 1 }),
        ]
    }

    fn count(profile: &str) -> usize {
        let frontier = Frontier::new(Image::default(), create_and_rename(), Rc::new(Profile::resolve(profile).unwrap()));
        let (states, exhaustive) = frontier.enumerate(1000, &mut rand_chacha::ChaCha8Rng::from_seed([0; 32]));
        assert!(exhaustive);
        states.iter().filter(|state| state.torn.is_none()).count()
    }

    use rand::SeedableRng;

    #[test]
    fn the_profiles_rules_decide_how_many_states_a_crash_may_leave() {
        // posix-strict: any subset, except that the rename needs the create: 6 of 8.
        assert_eq!(count("posix-strict"), 6);
        // ext4 ordered: per-file order, names in order, data before the name: ∅, {0}, {0,1}, {1}, {0,1,2}.
        assert_eq!(count("linux-ext4-ordered"), 5);
    }

    #[test]
    fn a_torn_prefix_keeps_whole_sectors_only() {
        assert_eq!(tear(&[1; 1500], Torn::Prefix, 512).len(), 512);
        assert_eq!(tear(&[1; 300], Torn::Prefix, 512).len(), 0);
        let subset = tear(&[1; 1024], Torn::AnySubset, 512);
        assert_eq!((subset[0], subset[600]), (1, 0));
    }

    #[test]
    fn large_logs_take_the_alice_families_and_samples() {
        let log: Vec<LogOp> = (0..40).map(|i| op(i, OpBody::Link { path: format!("d/{i}"), inode: i })).collect();
        let frontier = Frontier::new(Image::default(), log, Rc::new(Profile::resolve("posix-strict").unwrap()));
        let (states, exhaustive) = frontier.enumerate(200, &mut rand_chacha::ChaCha8Rng::from_seed([1; 32]));
        assert!(!exhaustive);
        assert_eq!(states.len(), 200);
        let image = frontier.materialize(&states[0]);
        assert!(image.names.len() <= 40);
    }
}
