//! Whether a verb runs offline on the disk files or goes to the server of
//! a mounted disk through its control socket.

use std::path::Path;

use anyhow::Context;
use lamina_engine::error::ErrorKind;
use lamina_engine::serve::{self, ControlRequest, ControlResponse, MountInfo, ServeError};

/// The place a verb on a disk runs: the disk files or a server.
#[derive(Debug)]
pub enum Route {
    /// No server has the disk: open its files.
    Offline,
    /// A server (live or dead) serves the running top of the disk.
    Mounted(MountInfo),
    /// Only read-only snapshot mounts of the disk exist.
    SnapshotMounted(MountInfo),
}

/// Finds out whether `disk` is mounted.
pub fn route(disk: &Path) -> anyhow::Result<Route> {
    let found =
        serve::find(disk).with_context(|| format!("look up mounts of {}", disk.display()))?;
    Ok(match found {
        None => Route::Offline,
        Some(info) if info.snapshot.is_none() => Route::Mounted(info),
        Some(info) => Route::SnapshotMounted(info),
    })
}

/// Sends `request` to the server of the mounted disk `disk`.
pub fn online(disk: &Path, request: ControlRequest) -> anyhow::Result<ControlResponse> {
    Ok(serve::control(disk, request)?)
}

/// Returns the busy error of an operation (such as "`lamina
/// snapshot-switch`") that works only on an unmounted disk.
pub fn reject_mounted(what: &str, info: MountInfo) -> anyhow::Error {
    let mounted = match &info.snapshot {
        Some(snapshot) => format!("its snapshot {snapshot} is mounted"),
        None => "it is mounted".to_string(),
    };
    anyhow::Error::new(ServeError::Server {
        kind: ErrorKind::Busy,
        message: format!(
            "{what} works only on an unmounted disk, and {mounted} at {} (server {}); \
             run `lamina umount {}` first",
            info.target.display(),
            info.pid,
            info.target.display()
        ),
    })
}

/// Rejects a mounted disk, or one with snapshot mounts, for an operation
/// that works only offline.
pub fn require_offline(what: &str, disk: &Path) -> anyhow::Result<()> {
    match route(disk)? {
        Route::Offline => Ok(()),
        Route::Mounted(info) | Route::SnapshotMounted(info) => Err(reject_mounted(what, info)),
    }
}

/// Returns the error for a reply of the wrong type.
pub fn unexpected(request: &str, response: &ControlResponse) -> anyhow::Error {
    anyhow::anyhow!("the server sent {response:?} in reply to {request}")
}
