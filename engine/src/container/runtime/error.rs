//! Errors of the container runtime.

use std::io;
use std::path::PathBuf;

use crate::error::{ErrorKind, HasKind};

/// A failed runtime operation.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A start was requested for a container whose init runs.
    #[error("container {ctid} is already running (init PID {init_pid})")]
    AlreadyRunning { ctid: String, init_pid: i32 },

    /// The container's cgroup exists with processes that this start did
    /// not put there, or another start made the cgroup first. The cgroup
    /// path `lamina/CTID` is the same for every Lamina home on the host.
    #[error(
        "cgroup {} already has processes ({nproc}), so another Lamina home may run \
         a container with this CTID",
        path.display()
    )]
    CgroupInUse { path: PathBuf, nproc: usize },

    /// An operation needs a running container.
    #[error("container {ctid} is not running; start it first")]
    NotRunning { ctid: String },

    /// A caller passed a value the runtime cannot use.
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidArgument {
        what: &'static str,
        value: String,
        reason: String,
    },

    /// A file or directory operation failed.
    #[error("{op} {} failed", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// A system call failed.
    #[error("{op} failed")]
    Sys {
        op: &'static str,
        #[source]
        source: nix::Error,
    },

    /// A cgroup controller the limits need is in no hierarchy.
    #[error(
        "cgroup controller {controller} is not available: mount it (cgroup v1) \
         or enable it in cgroup.subtree_control (cgroup v2)"
    )]
    ControllerMissing { controller: String },

    /// The container's first process failed before it could run init.
    #[error("container {ctid} setup failed: {message}")]
    Setup { ctid: String, message: String },

    /// Processes of the container were still alive after the kill.
    #[error(
        "container {ctid} still has {remaining} processes after SIGKILL; \
         check for processes stuck in the D state"
    )]
    KillTimeout { ctid: String, remaining: usize },

    /// Init did not report that boot finished in time.
    #[error(
        "container {ctid} did not finish booting within {seconds} s (last state {state:?}); \
         see the console log {}", log.display()
    )]
    BootTimeout {
        ctid: String,
        seconds: u64,
        state: String,
        log: PathBuf,
    },

    /// A command run inside the container did not finish in time.
    #[error("command {command:?} in container {ctid} timed out after {seconds} s")]
    ExecTimeout {
        ctid: String,
        command: String,
        seconds: u64,
    },

    /// The state file of a container is unreadable.
    #[error("invalid state file {}: {reason}; stop the container with --fast", path.display())]
    BadState { path: PathBuf, reason: String },
}

impl RuntimeError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        RuntimeError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn sys(op: &'static str) -> impl FnOnce(nix::Error) -> Self {
        move |source| RuntimeError::Sys { op, source }
    }
}

impl HasKind for RuntimeError {
    fn kind(&self) -> ErrorKind {
        match self {
            RuntimeError::AlreadyRunning { .. } | RuntimeError::CgroupInUse { .. } => {
                ErrorKind::Busy
            }
            RuntimeError::NotRunning { .. } => ErrorKind::NotFound,
            RuntimeError::InvalidArgument { .. } => ErrorKind::InvalidArgument,
            RuntimeError::ControllerMissing { .. } => ErrorKind::Unsupported,
            RuntimeError::BadState { .. } => ErrorKind::Corrupt,
            RuntimeError::Io { .. }
            | RuntimeError::Sys { .. }
            | RuntimeError::Setup { .. }
            | RuntimeError::KillTimeout { .. }
            | RuntimeError::BootTimeout { .. }
            | RuntimeError::ExecTimeout { .. } => ErrorKind::Io,
        }
    }
}
