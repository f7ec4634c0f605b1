//! The state file of a running container: init's PID and start time, and
//! its cgroup directories. Written atomically.

use std::fs;
use std::io::{ErrorKind as IoErrorKind, Write as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::cgroup::Cgroup;
use super::error::RuntimeError;
use super::sys::proc_stat;

/// The state file name inside the state directory.
pub const STATE_FILE: &str = "state.json";
/// The console log name inside the state directory.
pub const CONSOLE_LOG: &str = "console.log";

/// The record that `start` leaves for the later commands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// The container ID.
    pub ctid: String,
    /// Init's PID on the host.
    pub init_pid: i32,
    /// Init's start time in clock ticks after boot (proc(5) field 22), so
    /// that a reused PID is not taken for init.
    pub start_time: u64,
    /// The process that relays the console and reaps init.
    pub monitor_pid: i32,
    /// The container's cgroup directories.
    pub cgroup: Cgroup,
}

impl State {
    /// Returns the state file path in `state_dir`.
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join(STATE_FILE)
    }

    /// Reads the state, `None` when there is no state file.
    pub fn load(state_dir: &Path) -> Result<Option<Self>, RuntimeError> {
        let path = Self::path(state_dir);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) if err.kind() == IoErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(RuntimeError::io("read", path, err)),
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|err| RuntimeError::BadState {
                path,
                reason: err.to_string(),
            })
    }

    /// Writes the state: a temp file, fsync, rename, fsync of the directory.
    pub fn save(&self, state_dir: &Path) -> Result<(), RuntimeError> {
        let path = Self::path(state_dir);
        let temp = state_dir.join(format!(".{STATE_FILE}.tmp"));
        let text = serde_json::to_vec_pretty(self).map_err(|err| RuntimeError::BadState {
            path: path.clone(),
            reason: err.to_string(),
        })?;
        let write = || -> std::io::Result<()> {
            let mut file = fs::File::create(&temp)?;
            file.write_all(&text)?;
            file.sync_all()?;
            fs::rename(&temp, &path)?;
            fs::File::open(state_dir)?.sync_all()
        };
        write().map_err(|err| RuntimeError::io("write", &path, err))
    }

    /// Removes the state file; a missing one is fine.
    pub fn remove(state_dir: &Path) -> Result<(), RuntimeError> {
        let path = Self::path(state_dir);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == IoErrorKind::NotFound => Ok(()),
            Err(err) => Err(RuntimeError::io("remove", path, err)),
        }
    }

    /// Returns whether the recorded init still runs: the PID exists, is not
    /// a zombie, and started at the recorded time.
    pub fn init_alive(&self) -> bool {
        proc_stat(self.init_pid).is_some_and(|stat| {
            stat.start_time == self.start_time && stat.state != 'Z' && stat.state != 'X'
        })
    }
}
