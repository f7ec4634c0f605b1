//! [`BlockBackend`]: what the FUSE file reads from and writes to, with an
//! implementation for a plain file.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{ErrorKind, HasKind};
use crate::image::{Disk, ImageError};

use super::error::{ServeError, kind_of_io};

/// A failed backend request. The FUSE layer replies to it with the errno
/// of `kind`.
#[derive(Debug, thiserror::Error)]
#[error("{op} at offset {offset} failed")]
pub struct BackendError {
    /// The request, such as "read" or "discard".
    pub op: &'static str,
    /// The byte offset of the request.
    pub offset: u64,
    /// The kind of failure.
    pub kind: ErrorKind,
    /// The underlying error.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

impl HasKind for BackendError {
    fn kind(&self) -> ErrorKind {
        self.kind
    }
}

/// A block device in user space: positional I/O on `size()` bytes.
///
/// All methods take `&self` and are called from several threads at once.
pub trait BlockBackend: Send + Sync {
    /// Returns the size in bytes; it may grow while serving.
    fn size(&self) -> u64;
    /// Fills `buf` from `offset`; the range lies inside `size()`.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), BackendError>;
    /// Writes `buf` at `offset`; the range lies inside `size()`.
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), BackendError>;
    /// Makes every completed write durable.
    fn flush(&self) -> Result<(), BackendError>;
    /// Drops the data of a range; later reads of it return zeros.
    fn discard(&self, offset: u64, len: u64) -> Result<(), BackendError>;
    /// Makes a range read as zeros.
    fn zero_range(&self, offset: u64, len: u64) -> Result<(), BackendError>;
}

/// A regular file served as is, for tests and benchmarks.
#[derive(Debug)]
pub struct RawFile {
    file: File,
    path: PathBuf,
    size: u64,
}

impl RawFile {
    /// Opens `path`; its current length is the served size.
    pub fn open(path: &Path, writable: bool) -> Result<RawFile, ServeError> {
        let file = OpenOptions::new()
            .read(true)
            .write(writable)
            .open(path)
            .map_err(|e| ServeError::io("open", path, e))?;
        let size = file
            .metadata()
            .map_err(|e| ServeError::io("stat", path, e))?
            .len();
        Ok(RawFile {
            file,
            path: path.to_path_buf(),
            size,
        })
    }

    /// Creates a sparse file of `size` bytes, or truncates an existing one.
    pub fn create(path: &Path, size: u64) -> Result<RawFile, ServeError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(|e| ServeError::io("create", path, e))?;
        file.set_len(size)
            .map_err(|e| ServeError::io("truncate", path, e))?;
        Ok(RawFile {
            file,
            path: path.to_path_buf(),
            size,
        })
    }

    /// Returns the path of the file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn fallocate(
        &self,
        op: &'static str,
        mode: i32,
        offset: u64,
        len: u64,
    ) -> Result<(), BackendError> {
        let (Ok(start), Ok(length)) = (i64::try_from(offset), i64::try_from(len)) else {
            return Err(backend_io(
                op,
                offset,
                std::io::Error::from_raw_os_error(libc::EINVAL),
            ));
        };
        // SAFETY: fallocate only reads its integer arguments; the fd is open
        // for the lifetime of `self.file`.
        let rc = unsafe { libc::fallocate(self.file.as_raw_fd(), mode, start, length) };
        if rc < 0 {
            return Err(backend_io(op, offset, std::io::Error::last_os_error()));
        }
        Ok(())
    }
}

fn backend_io(op: &'static str, offset: u64, source: std::io::Error) -> BackendError {
    BackendError {
        op,
        offset,
        kind: kind_of_io(&source),
        source: Box::new(source),
    }
}

impl BlockBackend for RawFile {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), BackendError> {
        self.file
            .read_exact_at(buf, offset)
            .map_err(|e| backend_io("read", offset, e))
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), BackendError> {
        self.file
            .write_all_at(buf, offset)
            .map_err(|e| backend_io("write", offset, e))
    }

    fn flush(&self) -> Result<(), BackendError> {
        self.file.sync_data().map_err(|e| backend_io("flush", 0, e))
    }

    fn discard(&self, offset: u64, len: u64) -> Result<(), BackendError> {
        let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
        self.fallocate("discard", mode, offset, len)
    }

    fn zero_range(&self, offset: u64, len: u64) -> Result<(), BackendError> {
        let mode = libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE;
        self.fallocate("zero range", mode, offset, len)
    }
}

fn image_error(op: &'static str, offset: u64, error: ImageError) -> BackendError {
    BackendError {
        op,
        offset,
        kind: error.kind(),
        source: Box::new(error),
    }
}

impl BlockBackend for Disk {
    fn size(&self) -> u64 {
        self.virtual_size()
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), BackendError> {
        Disk::read_at(self, buf, offset).map_err(|e| image_error("read", offset, e))
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), BackendError> {
        Disk::write_at(self, buf, offset).map_err(|e| image_error("write", offset, e))
    }

    fn flush(&self) -> Result<(), BackendError> {
        Disk::flush(self).map_err(|e| image_error("flush", 0, e))
    }

    fn discard(&self, offset: u64, len: u64) -> Result<(), BackendError> {
        Disk::discard(self, offset, len).map_err(|e| image_error("discard", offset, e))
    }

    fn zero_range(&self, offset: u64, len: u64) -> Result<(), BackendError> {
        Disk::zero_range(self, offset, len).map_err(|e| image_error("zero range", offset, e))
    }
}
