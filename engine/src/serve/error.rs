//! Errors of the image server and of the calls that reach it.

use std::io;
use std::path::PathBuf;

use crate::error::{ErrorKind, HasKind};

/// Failure of serving, mounting or an online operation.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A system call on a file, device or mount point failed.
    #[error("{op} {path} failed")]
    Io {
        /// The operation, such as "open" or "umount".
        op: &'static str,
        /// The file, device or mount point.
        path: PathBuf,
        /// The system error.
        #[source]
        source: io::Error,
    },
    /// The image engine failed.
    #[error("{op} failed")]
    Image {
        /// The engine operation that failed.
        op: &'static str,
        /// The kind of the engine's error.
        kind: ErrorKind,
        /// The engine's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The mount target does not exist.
    #[error("mount target {target} does not exist; create the directory first")]
    TargetNotFound {
        /// The requested target.
        target: PathBuf,
    },
    /// The mount target is not a directory.
    #[error("mount target {target} is not a directory")]
    TargetNotDirectory {
        /// The requested target.
        target: PathBuf,
    },
    /// The mount target contains files.
    #[error("mount target {target} is not empty; pass an empty directory")]
    TargetNotEmpty {
        /// The requested target.
        target: PathBuf,
    },
    /// The disk is mounted already.
    #[error("disk {disk} is already mounted at {target} by server {pid}; unmount it first")]
    AlreadyMounted {
        /// The disk directory.
        disk: PathBuf,
        /// Its mount target.
        target: PathBuf,
        /// The server process.
        pid: u32,
    },
    /// A server died and left its mount behind.
    #[error(
        "disk {disk} has a stale mount at {target} from dead server {pid}; \
         run `lamina umount --force {disk}`"
    )]
    StaleMount {
        /// The disk directory.
        disk: PathBuf,
        /// Its former mount target.
        target: PathBuf,
        /// The dead server process.
        pid: u32,
    },
    /// A delete named the running top of a mounted disk.
    #[error(
        "{id:?} names the running top {uuid} of the mounted disk, not a snapshot; \
         `lamina snapshot-merge` merges the top into its parent, `lamina snapshot-list` shows the snapshots"
    )]
    RunningTop {
        /// The UUID or name given.
        id: String,
        /// The top's UUID.
        uuid: uuid::Uuid,
    },
    /// A delete or merge would remove a snapshot that is mounted.
    #[error(
        "snapshot {snapshot} is mounted at {target}; unmount it first with `lamina umount {target}`"
    )]
    SnapshotMounted {
        /// The snapshot's UUID.
        snapshot: uuid::Uuid,
        /// Its mount target.
        target: PathBuf,
    },
    /// No server serves this disk or target.
    #[error("{path} is not mounted by lamina")]
    NotMounted {
        /// The disk directory or target given.
        path: PathBuf,
    },
    /// The device contains no filesystem that can be mounted.
    #[error("no ext4 or xfs filesystem on {device}; create one with `lamina init --fs ext4`")]
    NoFilesystem {
        /// The loop device.
        device: PathBuf,
    },
    /// No free loop device could be claimed.
    #[error("no free loop device after {attempts} attempts")]
    NoFreeLoop {
        /// How many devices were tried.
        attempts: u32,
    },
    /// An external tool such as mkfs.ext4 or resize2fs failed.
    #[error("{program} exited with {status}: {stderr}")]
    Tool {
        /// The program.
        program: String,
        /// Its exit status.
        status: String,
        /// The end of its standard error.
        stderr: String,
    },
    /// The disk grew but its filesystem did not; the next read-write
    /// mount grows it.
    #[error(
        "the disk grew, but growing its {fs} filesystem online failed ({reason}); \
         the next read-write mount grows it (online ext4 resize needs CAP_SYS_RESOURCE)"
    )]
    FsGrowDeferred {
        /// The filesystem type.
        fs: &'static str,
        /// The reason the online grow failed.
        reason: String,
    },
    /// The operation needs something this server does not have.
    #[error("{what} is not supported by this server")]
    Unsupported {
        /// The operation.
        what: String,
    },
    /// A value passed by the caller is invalid.
    #[error("invalid {what}: {value}")]
    InvalidArgument {
        /// The parameter.
        what: &'static str,
        /// The value given.
        value: String,
    },
    /// The server reported a failure.
    #[error("{message}")]
    Server {
        /// The kind of the server-side error.
        kind: ErrorKind,
        /// The server-side message, with its causes.
        message: String,
    },
    /// The server sent something that is not a valid message.
    #[error("invalid message from server {pid}: {detail}")]
    Protocol {
        /// The server process, or 0 when it is not known.
        pid: u32,
        /// The problem found.
        detail: String,
    },
    /// The server exited before it reported ready.
    #[error("the server exited before it was ready; see its log {log}")]
    ServerExited {
        /// The server's log file.
        log: PathBuf,
    },
    /// Waiting for the server timed out.
    #[error("timed out after {seconds} s waiting for {what}")]
    Timeout {
        /// The awaited event.
        what: String,
        /// The time waited.
        seconds: u64,
    },
}

impl ServeError {
    /// Builds an [`ServeError::Io`] for `op` on `path`.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> ServeError {
        ServeError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// Wraps an image engine error that happened during `op`.
    pub fn image<E>(op: &'static str, source: E) -> ServeError
    where
        E: std::error::Error + HasKind + Send + Sync + 'static,
    {
        ServeError::Image {
            op,
            kind: source.kind(),
            source: Box::new(source),
        }
    }
}

/// Maps an errno of a failed system call to an error kind.
pub(crate) fn kind_of_io(error: &io::Error) -> ErrorKind {
    match error.raw_os_error() {
        Some(libc::ENOENT) => ErrorKind::NotFound,
        Some(libc::EBUSY) => ErrorKind::Busy,
        Some(libc::EEXIST) => ErrorKind::AlreadyExists,
        Some(libc::EINVAL) => ErrorKind::InvalidArgument,
        Some(libc::EOPNOTSUPP | libc::ENOSYS) => ErrorKind::Unsupported,
        _ => ErrorKind::Io,
    }
}

impl HasKind for ServeError {
    fn kind(&self) -> ErrorKind {
        match self {
            ServeError::Io { source, .. } => kind_of_io(source),
            ServeError::Image { kind, .. } | ServeError::Server { kind, .. } => *kind,
            ServeError::TargetNotFound { .. } | ServeError::NotMounted { .. } => {
                ErrorKind::NotFound
            }
            ServeError::TargetNotDirectory { .. }
            | ServeError::TargetNotEmpty { .. }
            | ServeError::NoFilesystem { .. }
            | ServeError::InvalidArgument { .. } => ErrorKind::InvalidArgument,
            ServeError::AlreadyMounted { .. }
            | ServeError::RunningTop { .. }
            | ServeError::SnapshotMounted { .. }
            | ServeError::StaleMount { .. }
            | ServeError::NoFreeLoop { .. } => ErrorKind::Busy,
            ServeError::Unsupported { .. } => ErrorKind::Unsupported,
            ServeError::Tool { .. }
            | ServeError::FsGrowDeferred { .. }
            | ServeError::Protocol { .. }
            | ServeError::ServerExited { .. }
            | ServeError::Timeout { .. } => ErrorKind::Io,
        }
    }
}

/// Renders an error with its chain of causes on one line.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
