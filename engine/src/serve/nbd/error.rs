//! Errors of the NBD server.

use std::io;
use std::path::PathBuf;

use crate::error::{ErrorKind, HasKind};

/// A failure that kept the NBD server from starting or ended it.
///
/// Failures of single connections or requests are not errors of the
/// server: they go to the client as NBD error values and into the log.
#[derive(Debug, thiserror::Error)]
pub enum NbdError {
    /// A system call on the socket failed.
    #[error("{op} NBD socket {path} failed")]
    Socket {
        /// The operation, such as "bind" or "accept".
        op: &'static str,
        /// The socket path.
        path: PathBuf,
        /// The system error.
        #[source]
        source: io::Error,
    },
    /// Another server listens on the socket path.
    #[error("another server listens on {path}; stop it or choose another socket path")]
    SocketInUse {
        /// The socket path.
        path: PathBuf,
    },
    /// The socket path exists and is not a socket.
    #[error("{path} exists and is not a socket; remove it or choose another socket path")]
    NotASocket {
        /// The socket path.
        path: PathBuf,
    },
    /// The export name or description is longer than NBD allows.
    #[error("NBD {what} is {len} bytes long; the maximum is {max}")]
    StringTooLong {
        /// "export name" or "description".
        what: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The protocol limit in bytes.
        max: usize,
    },
    /// Blocking or watching the shutdown signals failed.
    #[error("set up the shutdown signals failed")]
    Signals {
        /// The system error.
        #[source]
        source: nix::Error,
    },
    /// The final flush after the last client left failed.
    #[error("final flush of the export failed")]
    Flush {
        /// The backend's error.
        #[source]
        source: super::super::BackendError,
    },
}

impl HasKind for NbdError {
    fn kind(&self) -> ErrorKind {
        match self {
            NbdError::Socket { source, .. } => match source.raw_os_error() {
                Some(libc::EADDRINUSE) => ErrorKind::Busy,
                Some(libc::ENOENT) => ErrorKind::NotFound,
                Some(libc::EINVAL | libc::ENAMETOOLONG) => ErrorKind::InvalidArgument,
                _ => ErrorKind::Io,
            },
            NbdError::SocketInUse { .. } => ErrorKind::Busy,
            NbdError::NotASocket { .. } => ErrorKind::AlreadyExists,
            NbdError::StringTooLong { .. } => ErrorKind::InvalidArgument,
            NbdError::Signals { .. } => ErrorKind::Io,
            NbdError::Flush { source } => source.kind(),
        }
    }
}
