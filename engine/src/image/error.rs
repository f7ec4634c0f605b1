//! Errors of the image engine.

use std::io;
use std::path::PathBuf;

use lamina_format::{DescriptorError, FormatError};
use uuid::Uuid;

use crate::error::{ErrorKind, HasKind};

/// Failure of an image operation.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A system call on a file or directory failed.
    #[error("{op} {path} failed")]
    Io {
        /// The operation, such as "read" or "rename".
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The system error.
        #[source]
        source: io::Error,
    },
    /// A delta file failed validation.
    #[error("delta file {path} is invalid; run `lamina check` on the disk")]
    Format {
        /// The delta file.
        path: PathBuf,
        /// The validation failure.
        #[source]
        source: FormatError,
    },
    /// The descriptor failed validation.
    #[error("descriptor {path} is invalid")]
    Descriptor {
        /// The descriptor file.
        path: PathBuf,
        /// The validation failure.
        #[source]
        source: DescriptorError,
    },
    /// The creation options are invalid.
    #[error("invalid disk geometry")]
    InvalidGeometry {
        /// The validation failure.
        #[source]
        source: FormatError,
    },
    /// Another process holds the disk's lock.
    #[error("disk {dir} is locked by another process; unmount it or wait for that process")]
    Busy {
        /// The disk directory.
        dir: PathBuf,
    },
    /// The directory contains no disk.
    #[error("no disk at {dir}: {descriptor} is missing")]
    DiskNotFound {
        /// The disk directory.
        dir: PathBuf,
        /// The descriptor path that does not exist.
        descriptor: PathBuf,
    },
    /// `create` was given a directory that is not empty.
    #[error("{dir} exists and is not empty; pass a new or empty directory")]
    DirNotEmpty {
        /// The directory.
        dir: PathBuf,
    },
    /// No snapshot has this UUID or name.
    #[error("no snapshot with UUID or name {id:?} in {dir}")]
    SnapshotNotFound {
        /// The disk directory.
        dir: PathBuf,
        /// The UUID or name looked up.
        id: String,
    },
    /// A snapshot name is taken or invalid.
    #[error("snapshot name {name:?} is already used or invalid; choose another")]
    BadSnapshotName {
        /// The name.
        name: String,
    },
    /// A request reaches past the virtual size.
    #[error("request at offset {offset} with length {len} ends past the virtual size {size}")]
    OutOfRange {
        /// Start of the request.
        offset: u64,
        /// Length of the request.
        len: u64,
        /// The disk's virtual size.
        size: u64,
    },
    /// A write or metadata change on a disk opened read-only.
    #[error("disk {dir} is open read-only")]
    ReadOnly {
        /// The disk directory.
        dir: PathBuf,
    },
    /// A resize to a smaller size than the current one.
    #[error(
        "new size {requested} is smaller than the current size {current}; only growing is supported here"
    )]
    Shrink {
        /// The requested size.
        requested: u64,
        /// The current size.
        current: u64,
    },
    /// The delta file of a chain member does not match the descriptor.
    #[error("delta {uuid} in {path} does not fit the chain")]
    Chain {
        /// The delta.
        uuid: Uuid,
        /// Its file.
        path: PathBuf,
        /// The mismatch.
        #[source]
        source: FormatError,
    },
    /// The delta file would need more physical clusters than an entry holds.
    #[error("delta {path} has no room for more clusters")]
    DeltaFull {
        /// The delta file.
        path: PathBuf,
    },
}

impl ImageError {
    /// Builds an [`ImageError::Io`] from an operation, a path and a cause.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> ImageError {
        ImageError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

impl HasKind for ImageError {
    fn kind(&self) -> ErrorKind {
        match self {
            ImageError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound => {
                ErrorKind::NotFound
            }
            ImageError::Io { .. } => ErrorKind::Io,
            ImageError::Format {
                source: FormatError::UnknownVersion { .. } | FormatError::UnknownFlags { .. },
                ..
            } => ErrorKind::Unsupported,
            ImageError::Descriptor {
                source: DescriptorError::UnknownVersion { .. },
                ..
            } => ErrorKind::Unsupported,
            ImageError::Format { .. }
            | ImageError::Descriptor { .. }
            | ImageError::Chain { .. } => ErrorKind::Corrupt,
            ImageError::DeltaFull { .. } => ErrorKind::Unsupported,
            ImageError::InvalidGeometry { .. }
            | ImageError::BadSnapshotName { .. }
            | ImageError::OutOfRange { .. }
            | ImageError::ReadOnly { .. }
            | ImageError::Shrink { .. } => ErrorKind::InvalidArgument,
            ImageError::Busy { .. } => ErrorKind::Busy,
            ImageError::DiskNotFound { .. } | ImageError::SnapshotNotFound { .. } => {
                ErrorKind::NotFound
            }
            ImageError::DirNotEmpty { .. } => ErrorKind::AlreadyExists,
        }
    }
}
