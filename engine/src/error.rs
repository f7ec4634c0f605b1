//! The small set of error kinds that callers match on.
//!
//! Every module has its own `thiserror` enum with the numbers of what went
//! wrong; each implements [`HasKind`] so that the command-line tools can map
//! a failure to a stable exit code and the FUSE and NBD layers to an errno.

/// What kind of failure an error is, independent of the module it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// A caller passed a value that is out of range or malformed.
    InvalidArgument,
    /// A disk, snapshot, container, template or file does not exist.
    NotFound,
    /// The thing to create exists already.
    AlreadyExists,
    /// On-disk metadata failed validation.
    Corrupt,
    /// The input is valid but uses something this build does not support.
    Unsupported,
    /// Another process holds the lock, or the disk is mounted.
    Busy,
    /// A system call failed.
    Io,
}

impl ErrorKind {
    /// Returns the errno that the FUSE and NBD layers report for this kind.
    pub fn errno(self) -> i32 {
        match self {
            ErrorKind::InvalidArgument => libc::EINVAL,
            ErrorKind::NotFound => libc::ENOENT,
            ErrorKind::AlreadyExists => libc::EEXIST,
            ErrorKind::Corrupt => libc::EUCLEAN,
            ErrorKind::Unsupported => libc::EOPNOTSUPP,
            ErrorKind::Busy => libc::EBUSY,
            ErrorKind::Io => libc::EIO,
        }
    }
}

/// Implemented by every error type of the engine.
pub trait HasKind {
    /// Returns the kind of this error.
    fn kind(&self) -> ErrorKind;
}
