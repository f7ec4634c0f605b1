//! Per-container lock files, as vzctl 4.x takes them.
//!
//! The lock is `LOCKDIR/<CTID>.lck` holding the owner's PID. It is taken by
//! writing a temp file and `link()`ing it to the lock name, which fails
//! atomically when the lock exists. A lock whose owner is no longer alive
//! is removed and taken over. A lock with unreadable content is treated the
//! same way after a short retry, because its writer may still be writing.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::ctid::Ctid;
use super::error::ContainerError;
use super::layout::Layout;

const ATTEMPTS: u32 = 3;
const RETRY_DELAY: Duration = Duration::from_millis(500);

/// A held container lock; dropping it removes the lock file.
#[derive(Debug)]
pub struct CtLock {
    path: PathBuf,
}

impl CtLock {
    /// Takes the lock of `ctid`, or fails with the locked error when a live
    /// process holds it.
    pub fn acquire(layout: &Layout, ctid: Ctid) -> Result<Self, ContainerError> {
        Self::acquire_path(&layout.lock_file(ctid))
    }

    /// Takes the lock file at `path`.
    pub fn acquire_path(path: &Path) -> Result<Self, ContainerError> {
        let dir = path.parent().unwrap_or(Path::new("/"));
        fs::create_dir_all(dir).map_err(ContainerError::io("create directory", dir))?;
        let tmp = write_temp(path).map_err(ContainerError::io("write lock file", path))?;
        let result = Self::link_loop(path);
        let _ = fs::remove_file(&tmp);
        result
    }

    fn link_loop(path: &Path) -> Result<Self, ContainerError> {
        let tmp = temp_path(path);
        for attempt in 1..=ATTEMPTS {
            match fs::hard_link(&tmp, path) {
                Ok(()) => {
                    return Ok(CtLock {
                        path: path.to_path_buf(),
                    });
                }
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
                Err(err) => return Err(ContainerError::io("create lock file", path)(err)),
            }

            match read_owner(path) {
                Owner::Alive(pid) => {
                    return Err(ContainerError::Locked {
                        pid,
                        path: path.to_path_buf(),
                    });
                }
                Owner::Dead(pid) => {
                    tracing::warn!(pid, lock = %path.display(), "removing stale lock file");
                    let _ = fs::remove_file(path);
                }
                Owner::Gone => {}
                Owner::Unreadable if attempt < ATTEMPTS => std::thread::sleep(RETRY_DELAY),
                Owner::Unreadable => {
                    tracing::warn!(lock = %path.display(), "removing unreadable lock file");
                    let _ = fs::remove_file(path);
                }
            }
        }
        // One last try after the final cleanup.
        fs::hard_link(&tmp, path).map_err(ContainerError::io("create lock file", path))?;
        Ok(CtLock {
            path: path.to_path_buf(),
        })
    }

    /// Returns the lock file path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for CtLock {
    fn drop(&mut self) {
        // Remove the file only while it still names this process.
        if read_pid(&self.path) == Some(process_id::id_i32()) {
            let _ = fs::remove_file(&self.path);
        }
    }
}

mod process_id {
    /// Returns this process's PID as the signed type the kernel uses.
    pub fn id_i32() -> i32 {
        i32::try_from(std::process::id()).unwrap_or(i32::MAX)
    }
}

enum Owner {
    Alive(i32),
    Dead(i32),
    Gone,
    Unreadable,
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(format!(".{}", std::process::id()));
    PathBuf::from(name)
}

fn write_temp(path: &Path) -> io::Result<PathBuf> {
    let tmp = temp_path(path);
    let mut file = fs::File::create(&tmp)?;
    writeln!(file, "{}", std::process::id())?;
    file.sync_all()?;
    Ok(tmp)
}

fn read_pid(path: &Path) -> Option<i32> {
    let text = fs::read_to_string(path).ok()?;
    text.lines().next()?.trim().parse().ok()
}

fn read_owner(path: &Path) -> Owner {
    match fs::read_to_string(path) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => Owner::Gone,
        Err(_) => Owner::Unreadable,
        Ok(text) => match text
            .lines()
            .next()
            .and_then(|l| l.trim().parse::<i32>().ok())
        {
            Some(pid) if pid > 0 && pid_alive(pid) => Owner::Alive(pid),
            Some(pid) => Owner::Dead(pid),
            None => Owner::Unreadable,
        },
    }
}

/// Returns whether a process with `pid` exists.
pub fn pid_alive(pid: i32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_is_exclusive_and_released() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock/101.lck");
        let lock = CtLock::acquire_path(&path).unwrap();
        assert_eq!(read_pid(&path), Some(process_id::id_i32()));

        let err = CtLock::acquire_path(&path).unwrap_err();
        assert_eq!(err.exit_code(), 9);

        drop(lock);
        assert!(!path.exists());
        let entries: Vec<_> = fs::read_dir(dir.path().join("lock")).unwrap().collect();
        assert!(entries.is_empty(), "temp files left: {entries:?}");
    }

    #[test]
    fn dead_owner_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("101.lck");
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead_pid = child.id();
        child.wait().unwrap();
        fs::write(&path, format!("{dead_pid}\n")).unwrap();

        let lock = CtLock::acquire_path(&path).unwrap();
        assert_eq!(read_pid(lock.path()), Some(process_id::id_i32()));
    }

    #[test]
    fn live_owner_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("101.lck");
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        fs::write(&path, format!("{}\n", child.id())).unwrap();

        let result = CtLock::acquire_path(&path);
        child.kill().unwrap();
        child.wait().unwrap();

        match result {
            Err(ContainerError::Locked { pid, .. }) => {
                assert_eq!(Ok(pid), i32::try_from(child.id()))
            }
            other => panic!("expected Locked, got {other:?}"),
        }
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            format!("{}\n", child.id())
        );
    }

    #[test]
    fn garbage_lock_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("101.lck");
        fs::write(&path, "not a pid\n").unwrap();
        let lock = CtLock::acquire_path(&path).unwrap();
        assert_eq!(read_pid(lock.path()), Some(process_id::id_i32()));
    }
}
