//! The control protocol between the CLI and a server: one JSON request
//! line, one JSON reply line, over the mount's unix socket.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::error::ServeError;
use super::fs::FsUsage;
use super::runtime::MountInfo;
use crate::error::ErrorKind;

/// How long a client waits for a reply. Generous, because shutdown flushes
/// the filesystem and grow runs resize2fs.
const REPLY_TIMEOUT: Duration = Duration::from_secs(600);
/// How long a forced unmount waits for the server to exit.
const FORCED_EXIT_WAIT: Duration = Duration::from_secs(5);

/// An online operation for a server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum ControlRequest {
    /// Freeze the filesystem, flush, make the top a snapshot, thaw.
    Snapshot {
        /// Name of the new snapshot.
        name: Option<String>,
        /// Free-form description.
        description: Option<String>,
    },
    /// Grow the disk to `size` bytes, then the loop device and filesystem.
    Grow {
        /// The new virtual size in bytes.
        size: u64,
    },
    /// Report the disk, the mount and filesystem usage.
    Info,
    /// List the disk's snapshots.
    SnapshotList,
    /// Trim the filesystem and give freed clusters back to the host.
    Compact,
    /// Delete a snapshot, named by UUID or name. I/O waits while the
    /// chain is switched; the running top cannot be deleted.
    SnapshotDelete {
        /// The snapshot's UUID or name.
        snapshot: String,
    },
    /// Merge the top into its parent, or with `all` every delta below it.
    /// The top keeps serving as the writable delta.
    SnapshotMerge {
        /// Merge every delta down to the base.
        all: bool,
    },
    /// Unmount and exit; fails with the busy kind while the target is in use.
    Shutdown,
    /// Unmount lazily when busy and exit once the kernel lets go.
    ForceShutdown,
}

/// A server's reply to a [`ControlRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum ControlResponse {
    /// The operation finished and has nothing to report.
    Done,
    /// A snapshot was taken.
    Snapshot {
        /// The new snapshot's UUID.
        uuid: Uuid,
        /// How long writes were paused, in milliseconds.
        pause_ms: f64,
    },
    /// The disk and filesystem grew.
    Grown {
        /// The new virtual size in bytes.
        size: u64,
    },
    /// State of the mount.
    Info {
        /// The mount.
        mount: Box<MountInfo>,
        /// The engine's `DiskInfo`.
        disk: serde_json::Value,
        /// Usage of the mounted filesystem.
        fs: FsUsage,
    },
    /// The disk's snapshots, as the engine lists them.
    Snapshots {
        /// The engine's snapshot list.
        snapshots: serde_json::Value,
    },
    /// Compaction finished.
    Compacted {
        /// Bytes given back to the host.
        bytes: u64,
    },
    /// A delete or merge removed deltas from the snapshot tree.
    TreeChanged {
        /// UUIDs of the removed deltas.
        removed: Vec<Uuid>,
        /// How long I/O waited, in milliseconds.
        pause_ms: f64,
    },
}

/// The reply line on the socket: a response or an error.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Reply {
    Ok(ControlResponse),
    Error { kind: String, message: String },
}

/// Returns the stable name of an error kind on the wire.
pub(crate) fn kind_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidArgument => "invalid-argument",
        ErrorKind::NotFound => "not-found",
        ErrorKind::AlreadyExists => "already-exists",
        ErrorKind::Corrupt => "corrupt",
        ErrorKind::Unsupported => "unsupported",
        ErrorKind::Busy => "busy",
        ErrorKind::Io => "io",
    }
}

/// Parses [`kind_name`]'s output; unknown names become `Io`.
pub(crate) fn kind_from_name(name: &str) -> ErrorKind {
    match name {
        "invalid-argument" => ErrorKind::InvalidArgument,
        "not-found" => ErrorKind::NotFound,
        "already-exists" => ErrorKind::AlreadyExists,
        "corrupt" => ErrorKind::Corrupt,
        "unsupported" => ErrorKind::Unsupported,
        "busy" => ErrorKind::Busy,
        _ => ErrorKind::Io,
    }
}

/// Sends `request` to the server listening on `socket` and returns its
/// reply. For the shutdown requests it then waits until the server has
/// exited, which closes the connection.
pub fn send(
    socket: &Path,
    pid: u32,
    request: &ControlRequest,
) -> Result<ControlResponse, ServeError> {
    let mut stream =
        UnixStream::connect(socket).map_err(|e| ServeError::io("connect to", socket, e))?;
    stream
        .set_read_timeout(Some(REPLY_TIMEOUT))
        .map_err(|e| ServeError::io("configure", socket, e))?;
    let mut line = serde_json::to_vec(request).map_err(|e| protocol(pid, &e))?;
    line.push(b'\n');
    stream
        .write_all(&line)
        .map_err(|e| ServeError::io("write to", socket, e))?;

    let mut reader = BufReader::new(stream);
    let mut reply = String::new();
    reader
        .read_line(&mut reply)
        .map_err(|e| ServeError::io("read from", socket, e))?;
    if reply.is_empty() {
        return Err(ServeError::Protocol {
            pid,
            detail: "connection closed without a reply".into(),
        });
    }
    let reply: Reply = serde_json::from_str(&reply).map_err(|e| protocol(pid, &e))?;
    let response = match reply {
        Reply::Ok(response) => response,
        Reply::Error { kind, message } => {
            return Err(ServeError::Server {
                kind: kind_from_name(&kind),
                message,
            });
        }
    };

    // The server closes the socket by exiting. After a forced shutdown it
    // may keep serving a lazily detached filesystem for as long as some
    // process uses it, so that wait is bounded.
    let exit_wait = match request {
        ControlRequest::Shutdown => Some(REPLY_TIMEOUT),
        ControlRequest::ForceShutdown => Some(FORCED_EXIT_WAIT),
        _ => None,
    };
    if let Some(wait) = exit_wait {
        let _ = reader.get_ref().set_read_timeout(Some(wait));
        let mut rest = Vec::new();
        let _ = reader.read_to_end(&mut rest);
    }
    Ok(response)
}

fn protocol(pid: u32, error: &serde_json::Error) -> ServeError {
    ServeError::Protocol {
        pid,
        detail: error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_survives_the_wire() {
        let kinds = [
            ErrorKind::InvalidArgument,
            ErrorKind::NotFound,
            ErrorKind::AlreadyExists,
            ErrorKind::Corrupt,
            ErrorKind::Unsupported,
            ErrorKind::Busy,
            ErrorKind::Io,
        ];
        for kind in kinds {
            assert_eq!(kind_from_name(kind_name(kind)), kind);
        }
    }

    #[test]
    fn request_json_is_tagged_by_op() {
        let json = serde_json::to_string(&ControlRequest::Grow { size: 4096 }).unwrap();
        assert_eq!(json, r#"{"op":"grow","size":4096}"#);
        let parsed: ControlRequest = serde_json::from_str(r#"{"op":"snapshot-list"}"#).unwrap();
        assert_eq!(parsed, ControlRequest::SnapshotList);
        let parsed: ControlRequest =
            serde_json::from_str(r#"{"op":"snapshot-delete","snapshot":"a"}"#).unwrap();
        assert_eq!(
            parsed,
            ControlRequest::SnapshotDelete {
                snapshot: "a".into()
            }
        );
        let json = serde_json::to_string(&ControlRequest::SnapshotMerge { all: true }).unwrap();
        assert_eq!(json, r#"{"op":"snapshot-merge","all":true}"#);
    }
}
