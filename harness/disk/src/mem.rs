//! A device of files in memory on which every operation succeeds at once and is durable: for
//! tests of the stack's protocol logic, where storage is not the subject (the simulator's
//! `SimDisk` is the device that misbehaves).

use crate::{Device, DiskError, OpKind};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Default)]
pub struct MemDisk(RefCell<BTreeMap<String, Vec<u8>>>);

impl MemDisk {
    /// The paths it holds, in order.
    pub fn paths(&self) -> Vec<String> {
        self.0.borrow().keys().cloned().collect()
    }
}

impl Device for MemDisk {
    fn wait_before(&self, _op: OpKind, _path: &str, _waited: bool) -> Option<Duration> {
        None
    }
    fn write(&self, path: &str, bytes: &[u8]) -> Result<(), DiskError> {
        self.0.borrow_mut().insert(path.to_string(), bytes.to_vec());
        Ok(())
    }
    fn read(&self, path: &str) -> Result<Vec<u8>, DiskError> {
        self.0.borrow().get(path).cloned().ok_or(DiskError::NotFound)
    }
    fn fsync(&self, _path: &str) -> Result<(), DiskError> {
        Ok(())
    }
    fn fsync_dir(&self, _dir: &str) -> Result<(), DiskError> {
        Ok(())
    }
    fn rename(&self, from: &str, to: &str) -> Result<(), DiskError> {
        let bytes = self.0.borrow_mut().remove(from).ok_or(DiskError::NotFound)?;
        self.0.borrow_mut().insert(to.to_string(), bytes);
        Ok(())
    }
    fn remove(&self, path: &str) -> Result<(), DiskError> {
        self.0.borrow_mut().remove(path).map(|_| ()).ok_or(DiskError::NotFound)
    }
    fn list(&self, dir: &str) -> Result<Vec<String>, DiskError> {
        let prefix = format!("{dir}/");
        let files = self.0.borrow();
        Ok(files.keys().filter_map(|path| path.strip_prefix(&prefix)).filter(|name| !name.contains('/')).map(str::to_string).collect())
    }
}
