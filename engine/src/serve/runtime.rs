//! The runtime directory: one subdirectory per mount with its state file,
//! control socket and FUSE file, plus the servers' log files.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::ServeError;

/// Name servers give their main thread, checked to tell a live server from
/// a reused PID.
pub const SERVER_NAME: &str = "lamina-serve";

/// A mounted disk, as its state file records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountInfo {
    /// The disk directory, canonical.
    pub disk: PathBuf,
    /// The snapshot served, or `None` for the running top.
    pub snapshot: Option<String>,
    /// The loop device, such as `/dev/loop3`.
    pub loop_device: PathBuf,
    /// Mount point of the filesystem, canonical.
    pub target: PathBuf,
    /// The server's process ID.
    pub pid: u32,
    /// Whether the mount is read-only.
    pub read_only: bool,
    /// The mounted filesystem type, such as "ext4".
    pub fs_type: String,
    /// The mount's runtime directory (state, control socket, FUSE file).
    pub run_dir: PathBuf,
    /// The server's log file.
    pub log: PathBuf,
    /// Whether the server process is alive; computed when listed.
    #[serde(default)]
    pub running: bool,
}

impl MountInfo {
    /// Returns the control socket path.
    pub fn control_socket(&self) -> PathBuf {
        self.run_dir.join(CONTROL_SOCKET)
    }

    /// Returns the FUSE file the loop device reads from.
    pub fn export_file(&self) -> PathBuf {
        self.run_dir.join(EXPORT_FILE)
    }
}

const STATE_FILE: &str = "state.json";
pub(crate) const CONTROL_SOCKET: &str = "control.sock";
pub(crate) const EXPORT_FILE: &str = "disk.img";

/// Returns the runtime directory: `$LAMINA_HOME/run`, or `/run/lamina`
/// when `LAMINA_HOME` is unset.
pub fn runtime_dir() -> PathBuf {
    match std::env::var_os("LAMINA_HOME") {
        Some(home) if !home.is_empty() => PathBuf::from(home).join("run"),
        _ => PathBuf::from("/run/lamina"),
    }
}

/// Returns the name of a mount's runtime directory: the disk's base name
/// and a hash of its canonical path and snapshot, so that the top and
/// several snapshots of one disk can be mounted at once.
pub fn mount_id(disk: &Path, snapshot: Option<&str>) -> String {
    // FNV-1a, 64 bit: stable across builds, unlike std's DefaultHasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let path = disk.as_os_str().as_encoded_bytes();
    let snapshot = snapshot.unwrap_or("").as_bytes();
    for byte in path.iter().chain(&[0u8]).chain(snapshot) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    let base: String = disk
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(32)
        .collect();
    format!("{base}-{hash:016x}")
}

/// Creates the runtime directory (mode 0700) if needed.
pub fn ensure_runtime_dir() -> Result<PathBuf, ServeError> {
    let dir = runtime_dir();
    std::fs::create_dir_all(&dir).map_err(|e| ServeError::io("create", &dir, e))?;
    Ok(dir)
}

/// Writes the state file atomically: temp file, fsync, rename, fsync of
/// the directory.
pub fn write_state(info: &MountInfo) -> Result<(), ServeError> {
    let path = info.run_dir.join(STATE_FILE);
    let temp = info.run_dir.join(".state.json.tmp");
    let mut json = serde_json::to_vec_pretty(info).map_err(|e| ServeError::Protocol {
        pid: info.pid,
        detail: e.to_string(),
    })?;
    json.push(b'\n');

    let mut file = std::fs::File::create(&temp).map_err(|e| ServeError::io("create", &temp, e))?;
    file.write_all(&json)
        .and_then(|()| file.sync_all())
        .map_err(|e| ServeError::io("write", &temp, e))?;
    std::fs::rename(&temp, &path).map_err(|e| ServeError::io("rename", &temp, e))?;
    std::fs::File::open(&info.run_dir)
        .and_then(|dir| dir.sync_all())
        .map_err(|e| ServeError::io("fsync", &info.run_dir, e))
}

/// Reads one mount's state file; `None` when it has none.
pub fn read_state(run_dir: &Path) -> Result<Option<MountInfo>, ServeError> {
    let path = run_dir.join(STATE_FILE);
    let text = match std::fs::read(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ServeError::io("read", &path, e)),
    };
    let mut info: MountInfo = serde_json::from_slice(&text).map_err(|e| ServeError::Protocol {
        pid: 0,
        detail: format!("{}: {e}", path.display()),
    })?;
    info.running = server_alive(info.pid);
    Ok(Some(info))
}

/// Lists every mount that has a state file, live or stale, sorted by
/// target.
pub fn read_all() -> Result<Vec<MountInfo>, ServeError> {
    let dir = runtime_dir();
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(ServeError::io("read", &dir, e)),
    };
    let mut mounts = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| ServeError::io("read", &dir, e))?;
        if entry.path().is_dir()
            && let Some(info) = read_state(&entry.path())?
        {
            mounts.push(info);
        }
    }
    mounts.sort_by(|a, b| a.target.cmp(&b.target));
    Ok(mounts)
}

/// Removes a mount's runtime directory and everything in it.
pub fn remove_run_dir(run_dir: &Path) {
    if let Err(e) = std::fs::remove_dir_all(run_dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %run_dir.display(), error = %e, "cannot remove runtime directory");
    }
}

/// Tells whether `pid` is a live Lamina server: the process exists and its
/// main thread carries the server's name.
pub fn server_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/comm")) {
        Ok(comm) => comm.trim_end() == SERVER_NAME && !is_zombie(pid),
        Err(_) => false,
    }
}

fn is_zombie(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state letter follows the parenthesized command name.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .is_some_and(|state| state == "Z" || state == "X")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_id_differs_per_snapshot() {
        let disk = Path::new("/var/lib/lamina/private/101/root.hdd");
        let top = mount_id(disk, None);
        let snapshot = mount_id(disk, Some("0b5e8f2c-0000-4000-8000-000000000001"));
        assert!(top.starts_with("root_hdd-"), "id {top}");
        assert_ne!(top, snapshot);
        assert_eq!(top, mount_id(disk, None));
    }

    #[test]
    fn mount_id_differs_per_disk() {
        let a = mount_id(Path::new("/a/disk"), None);
        let b = mount_id(Path::new("/b/disk"), None);
        assert_ne!(a, b);
    }

    #[test]
    fn dead_pid_is_not_a_server() {
        assert!(!server_alive(u32::MAX));
        assert!(!server_alive(std::process::id()));
    }
}
