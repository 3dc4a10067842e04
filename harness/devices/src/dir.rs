//! DirDisk: a device on a real directory, so the stack can run against a real file system (and a
//! storage vendor can run it against theirs) while the harness records the same disk events as
//! in simulation.
//!
//! Paths are relative to the root and never leave it: an absolute path or a `..` component is
//! refused with EIO rather than resolved. (A symlink planted inside the root is not guarded
//! against; the stack never creates one.) Directories are created on demand, as the simulated
//! device treats them as implicit. Nothing here adds durability the caller did not ask for:
//! `write` does not fsync, so crash behaviour stays the file system's own.
//!
//! Errors can be injected through the fail points `dirdisk-write`, `dirdisk-read`,
//! `dirdisk-fsync`, `dirdisk-fsync-dir`, `dirdisk-rename` and `dirdisk-remove`; the action's
//! value names the errno: `return(eio)`, `return(enospc)`, `return(erofs)` (anything else: EIO).

use disk::{Device, DiskError, OpKind};
use history::{Event, Journal};
use std::fs::{self, File};
use std::io::{self, ErrorKind};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

pub struct DirDisk {
    root: PathBuf,
    journal: Journal,
}

impl DirDisk {
    /// A device on `root`, created (with its parents) if missing.
    pub fn new(root: &Path, journal: Journal) -> io::Result<DirDisk> {
        fs::create_dir_all(root)?;
        Ok(DirDisk { root: root.to_path_buf(), journal })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Every file under the root with its contents, by device path: what checkers judge.
    /// Bounded by the simulated disk's file limit, so a huge directory cannot exhaust memory.
    pub fn image(&self) -> std::collections::BTreeMap<String, Vec<u8>> {
        let mut image = std::collections::BTreeMap::new();
        let mut pending = vec![self.root.clone()];
        while let Some(dir) = pending.pop() {
            let Ok(entries) = fs::read_dir(&dir) else { continue };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    pending.push(path);
                } else if image.len() < crate::sim::MAX_FILES {
                    let Ok(relative) = path.strip_prefix(&self.root) else { continue };
                    if let (Some(name), Ok(bytes)) = (relative.to_str(), fs::read(&path)) {
                        image.insert(name.to_string(), bytes);
                    }
                }
            }
        }
        image
    }

    /// The real path of a device path, or EIO when it would leave the root.
    fn resolve(&self, path: &str) -> Result<PathBuf, DiskError> {
        let inside = Path::new(path).components().all(|part| matches!(part, Component::Normal(_) | Component::CurDir));
        if inside {
            Ok(self.root.join(path))
        } else {
            Err(DiskError::Io)
        }
    }

    /// Runs one operation: an injected error first, then the file system; records the outcome
    /// exactly as [`crate::sim::SimDisk`] does, so checkers read both histories alike.
    fn apply<T>(
        &self,
        op: OpKind,
        path: &str,
        event: impl FnOnce() -> Option<Event>,
        body: impl FnOnce() -> Result<T, DiskError>,
    ) -> Result<T, DiskError> {
        let result = match injected_error(op) {
            Some(error) => Err(error),
            None => body(),
        };
        match &result {
            Ok(_) => {
                if let Some(event) = event() {
                    self.journal.record(event);
                }
            }
            Err(error) => self.journal.record(Event::DiskError {
                op: history::Text::new_static(op.name()),
                path: path.into(),
                error: error.to_string().into(),
            }),
        }
        result
    }
}

/// The fail point guarding each kind of operation (`list` has none: the stack treats a failed
/// listing as empty, and the simulated device's faults cover it).
fn fail_point_of(op: OpKind) -> Option<&'static str> {
    match op {
        OpKind::Write => Some("dirdisk-write"),
        OpKind::Read => Some("dirdisk-read"),
        OpKind::Fsync => Some("dirdisk-fsync"),
        OpKind::FsyncDir => Some("dirdisk-fsync-dir"),
        OpKind::Rename => Some("dirdisk-rename"),
        OpKind::Remove => Some("dirdisk-remove"),
        OpKind::List => None,
    }
}

/// The error an armed fail point imposes, named by its action's value.
fn injected_error(op: OpKind) -> Option<DiskError> {
    let point = fail_point_of(op)?;
    fail::eval(point, |value| match value.as_deref() {
        Some("enospc") => DiskError::NoSpace,
        Some("erofs") => DiskError::ReadOnly,
        _ => DiskError::Io,
    })
}

/// The errno a real failure stands for. ENOSPC and EROFS are also matched by number (28 and 30
/// on Linux and the BSDs) in case the kind is reported as uncategorised.
fn disk_error(error: &io::Error) -> DiskError {
    match (error.kind(), error.raw_os_error()) {
        (ErrorKind::NotFound, _) => DiskError::NotFound,
        (ErrorKind::StorageFull, _) | (_, Some(28)) => DiskError::NoSpace,
        (ErrorKind::ReadOnlyFilesystem, _) | (_, Some(30)) => DiskError::ReadOnly,
        _ => DiskError::Io,
    }
}

fn io<T>(result: io::Result<T>) -> Result<T, DiskError> {
    result.map_err(|error| disk_error(&error))
}

/// fsync(2) of a file or a directory: both are opened read-only, which Linux and the BSDs accept.
fn sync(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}

/// Creates the directory holding `path` (a no-op for the root).
fn make_parent(path: &Path) -> Result<(), DiskError> {
    match path.parent() {
        Some(dir) => io(fs::create_dir_all(dir)),
        None => Ok(()),
    }
}

impl Device for DirDisk {
    fn wait_before(&self, _op: OpKind, _path: &str, _waited: bool) -> Option<Duration> {
        None
    }

    fn write(&self, path: &str, bytes: &[u8]) -> Result<(), DiskError> {
        let event = || Some(Event::DiskWrite { path: path.into(), len: bytes.len() as u64, digest: history::bytes_digest(bytes).into() });
        self.apply(OpKind::Write, path, event, || {
            let real = self.resolve(path)?;
            make_parent(&real)?;
            io(fs::write(&real, bytes))
        })
    }

    fn read(&self, path: &str) -> Result<Vec<u8>, DiskError> {
        self.apply(OpKind::Read, path, || None, || io(fs::read(self.resolve(path)?)))
    }

    fn fsync(&self, path: &str) -> Result<(), DiskError> {
        let event = || Some(Event::DiskSync { path: path.into() });
        self.apply(OpKind::Fsync, path, event, || io(sync(&self.resolve(path)?)))
    }

    fn fsync_dir(&self, dir: &str) -> Result<(), DiskError> {
        let event = || Some(Event::DiskDirSync { dir: dir.into() });
        self.apply(OpKind::FsyncDir, dir, event, || {
            let real = self.resolve(dir)?;
            io(fs::create_dir_all(&real))?;
            io(sync(&real))
        })
    }

    fn rename(&self, from: &str, to: &str) -> Result<(), DiskError> {
        let event = || Some(Event::DiskRename { from: from.into(), to: to.into() });
        self.apply(OpKind::Rename, from, event, || {
            let (real_from, real_to) = (self.resolve(from)?, self.resolve(to)?);
            make_parent(&real_to)?;
            io(fs::rename(real_from, real_to))
        })
    }

    fn remove(&self, path: &str) -> Result<(), DiskError> {
        let event = || Some(Event::DiskRemove { path: path.into() });
        self.apply(OpKind::Remove, path, event, || io(fs::remove_file(self.resolve(path)?)))
    }

    /// Regular files only, sorted; a missing directory lists as empty, as in simulation, where
    /// directories exist only through their files. Names that are not UTF-8 cannot be named by
    /// the stack's `&str` paths and are left out.
    fn list(&self, dir: &str) -> Result<Vec<String>, DiskError> {
        self.apply(OpKind::List, dir, || None, || {
            let entries = match fs::read_dir(self.resolve(dir)?) {
                Ok(entries) => entries,
                Err(error) if error.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
                Err(error) => return Err(disk_error(&error)),
            };
            let mut names = Vec::new();
            for entry in entries {
                let entry = io(entry)?;
                if io(entry.file_type())?.is_file() {
                    names.extend(entry.file_name().into_string().ok());
                }
            }
            names.sort();
            Ok(names)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use history::History;
    use std::cell::RefCell;
    use std::rc::Rc;

    /// Every test here holds fail's scenario lock: the registry is global to the process, and a
    /// fail point armed by one test must not fire in another running at the same time.
    struct Fixture {
        _scenario: fail::FailScenario<'static>,
        _root: tempfile::TempDir,
        history: Rc<RefCell<History>>,
        disk: DirDisk,
    }

    fn fixture() -> Fixture {
        let scenario = fail::FailScenario::setup();
        let root = tempfile::tempdir().expect("temporary directory");
        let history = Rc::new(RefCell::new(History::default()));
        let journal = Journal::new(history.clone(), "store", Rc::new(|| 0));
        let disk = DirDisk::new(&root.path().join("store"), journal).expect("device");
        Fixture { _scenario: scenario, _root: root, history, disk }
    }

    fn events(fixture: &Fixture) -> Vec<Event> {
        fixture.history.borrow().records.iter().map(|record| record.event.clone()).collect()
    }

    #[test]
    fn each_operation_reaches_the_real_file_system_and_is_recorded() {
        let fixture = fixture();
        let disk = &fixture.disk;
        disk.write("mail/anna/tmp/x", b"hello").unwrap();
        assert_eq!(fs::read(disk.root().join("mail/anna/tmp/x")).unwrap(), b"hello");
        disk.fsync("mail/anna/tmp/x").unwrap();
        disk.fsync_dir("mail/anna/tmp").unwrap();
        disk.rename("mail/anna/tmp/x", "mail/anna/new/x").unwrap();
        disk.fsync_dir("mail/anna/new").unwrap();
        assert_eq!(disk.read("mail/anna/new/x").unwrap(), b"hello");
        assert_eq!(disk.read("mail/anna/tmp/x"), Err(DiskError::NotFound));
        disk.write("mail/anna/new/x", b"bye").unwrap();
        assert_eq!(disk.read("mail/anna/new/x").unwrap(), b"bye");
        disk.remove("mail/anna/new/x").unwrap();
        assert!(!disk.root().join("mail/anna/new/x").exists());
        assert_eq!(
            events(&fixture),
            vec![
                Event::DiskWrite { path: "mail/anna/tmp/x".into(), len: 5, digest: history::bytes_digest(b"hello").into() },
                Event::DiskSync { path: "mail/anna/tmp/x".into() },
                Event::DiskDirSync { dir: "mail/anna/tmp".into() },
                Event::DiskRename { from: "mail/anna/tmp/x".into(), to: "mail/anna/new/x".into() },
                Event::DiskDirSync { dir: "mail/anna/new".into() },
                Event::DiskError { op: "read".into(), path: "mail/anna/tmp/x".into(), error: "ENOENT".into() },
                Event::DiskWrite { path: "mail/anna/new/x".into(), len: 3, digest: history::bytes_digest(b"bye").into() },
                Event::DiskRemove { path: "mail/anna/new/x".into() },
            ]
        );
    }

    #[test]
    fn list_gives_sorted_file_names_only_and_nothing_for_a_missing_directory() {
        let fixture = fixture();
        let disk = &fixture.disk;
        for name in ["c", "a", "b"] {
            disk.write(&format!("q/{name}"), b"x").unwrap();
        }
        disk.write("q/sub/d", b"x").unwrap();
        assert_eq!(disk.list("q").unwrap(), vec!["a", "b", "c"]);
        assert_eq!(disk.list("nowhere").unwrap(), Vec::<String>::new());
        assert_eq!(disk.list("").unwrap(), Vec::<String>::new());
    }

    #[test]
    fn errors_are_mapped_and_paths_never_leave_the_root() {
        let fixture = fixture();
        let disk = &fixture.disk;
        assert_eq!(disk.fsync("missing"), Err(DiskError::NotFound));
        assert_eq!(disk.remove("missing"), Err(DiskError::NotFound));
        assert_eq!(disk.rename("missing", "elsewhere"), Err(DiskError::NotFound));
        assert_eq!(disk.write("../escape", b"x"), Err(DiskError::Io));
        assert_eq!(disk.write("mail/../../escape", b"x"), Err(DiskError::Io));
        assert_eq!(disk.read("/etc/hostname"), Err(DiskError::Io));
        assert_eq!(disk.rename("q/a", "/tmp/escape"), Err(DiskError::Io));
        assert!(!disk.root().parent().unwrap().join("escape").exists());
        disk.write("q/a", b"x").unwrap();
        assert_eq!(disk.read("q"), Err(DiskError::Io)); // a directory is not a file
        assert_eq!(disk_error(&io::Error::from_raw_os_error(28)), DiskError::NoSpace);
        assert_eq!(disk_error(&io::Error::from_raw_os_error(30)), DiskError::ReadOnly);
        assert_eq!(disk_error(&io::Error::from(ErrorKind::StorageFull)), DiskError::NoSpace);
        assert_eq!(disk_error(&io::Error::from(ErrorKind::PermissionDenied)), DiskError::Io);
    }

    /// All fail point cases in one test: the scenario lock serialises it with the rest anyway,
    /// and one place shows the whole contract.
    #[test]
    fn fail_points_inject_errors_once_then_the_device_works_again() {
        let fixture = fixture();
        let disk = &fixture.disk;
        disk.write("q/a", b"x").unwrap();
        fail::cfg("dirdisk-fsync", "1*return(eio)").unwrap();
        assert_eq!(disk.fsync("q/a"), Err(DiskError::Io));
        assert_eq!(disk.fsync("q/a"), Ok(()));
        fail::cfg("dirdisk-write", "1*return(enospc)").unwrap();
        assert_eq!(disk.write("q/b", b"y"), Err(DiskError::NoSpace));
        assert!(!disk.root().join("q/b").exists(), "an injected error happens before the write");
        assert_eq!(disk.write("q/b", b"y"), Ok(()));
        fail::cfg("dirdisk-rename", "1*return(erofs)").unwrap();
        assert_eq!(disk.rename("q/b", "q/c"), Err(DiskError::ReadOnly));
        fail::cfg("dirdisk-fsync-dir", "1*return").unwrap();
        assert_eq!(disk.fsync_dir("q"), Err(DiskError::Io));
        fail::cfg("dirdisk-remove", "1*return(eio)").unwrap();
        assert_eq!(disk.remove("q/b"), Err(DiskError::Io));
        fail::cfg("dirdisk-read", "1*return(eio)").unwrap();
        assert_eq!(disk.read("q/b"), Err(DiskError::Io));
        assert_eq!(disk.rename("q/b", "q/c"), Ok(()));
        assert_eq!(disk.fsync_dir("q"), Ok(()));
        assert_eq!(disk.read("q/c").unwrap(), b"y");
        assert_eq!(disk.remove("q/c"), Ok(()));
        let errors: Vec<String> = events(&fixture)
            .into_iter()
            .filter_map(|event| match event {
                Event::DiskError { op, error, .. } => Some(format!("{op}:{error}")),
                _ => None,
            })
            .collect();
        assert_eq!(errors, ["fsync:EIO", "write:ENOSPC", "rename:EROFS", "fsync_dir:EIO", "remove:EIO", "read:EIO"]);
    }
}
