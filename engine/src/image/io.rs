//! The I/O layer every file access of the image engine goes through: a
//! [`Storage`] for directory operations and a [`StorageFile`] per open
//! file. [`RealStorage`] uses the host file system; the fault-injecting
//! [`MemStorage`](super::memfs::MemStorage) models a page cache for crash
//! tests.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use nix::errno::Errno;
use nix::fcntl::{FallocateFlags, Flock, FlockArg};
use nix::unistd::Whence;

/// Open mode of [`Storage::open`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// An existing file, read-only.
    Read,
    /// An existing file, read and write.
    ReadWrite,
    /// A new file, read and write; fails if the file exists.
    CreateNew,
}

/// Lock mode of [`Storage::try_lock`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Several holders at once, none exclusive.
    Shared,
    /// One holder.
    Exclusive,
}

/// A held lock; dropping it releases the lock.
pub trait LockGuard: Send + Sync + fmt::Debug {}

/// Directory-level operations.
pub trait Storage: Send + Sync + fmt::Debug {
    /// Opens or creates a file.
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>>;
    /// Removes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Renames a file, replacing the target.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes the directory's entries (creates, renames, removes) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Creates a directory and its missing parents.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Removes an empty directory.
    fn remove_dir(&self, dir: &Path) -> io::Result<()>;
    /// Lists the names in a directory; fails with `NotFound` if it does
    /// not exist.
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Returns whether a file or directory exists.
    fn exists(&self, path: &Path) -> io::Result<bool>;
    /// Takes a lock on a lock file without waiting, creating the file if
    /// it is missing. Returns `None` when another holder conflicts.
    fn try_lock(&self, path: &Path, mode: LockMode) -> io::Result<Option<Box<dyn LockGuard>>>;
}

/// Positional I/O on one open file. All methods take `&self` and may be
/// called from many threads at once.
#[allow(
    clippy::len_without_is_empty,
    reason = "a file length, not a collection"
)]
pub trait StorageFile: Send + Sync + fmt::Debug {
    /// Fills `buf` from `offset`; fails with `UnexpectedEof` past the end.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` at `offset`, extending the file if needed.
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes written data and the file length durable (fdatasync).
    fn sync_data(&self) -> io::Result<()>;
    /// Makes data and all metadata durable (fsync).
    fn sync_all(&self) -> io::Result<()>;
    /// Truncates or extends the file.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Returns the file length in bytes.
    fn len(&self) -> io::Result<u64>;
    /// Deallocates a range so that it reads as zeros, keeping the length.
    fn punch_hole(&self, offset: u64, len: u64) -> io::Result<()>;
    /// Returns the start of the first data region at or after `offset`,
    /// skipping holes, or `None` when only holes follow (lseek `SEEK_DATA`).
    fn next_data(&self, offset: u64) -> io::Result<Option<u64>>;
    /// Returns the start of the first hole at or after `offset`, or the file
    /// length when only data follows (lseek `SEEK_HOLE`).
    fn next_hole(&self, offset: u64) -> io::Result<u64>;
    /// Returns the bytes of storage the file occupies on the host.
    fn allocated_bytes(&self) -> io::Result<u64>;
}

/// The host file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealStorage;

impl RealStorage {
    /// Returns a shared handle.
    pub fn shared() -> Arc<dyn Storage> {
        Arc::new(RealStorage)
    }
}

#[derive(Debug)]
struct RealLock(#[allow(dead_code, reason = "held only to keep the lock")] Flock<File>);

impl LockGuard for RealLock {}

impl Storage for RealStorage {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>> {
        let mut options = OpenOptions::new();
        match mode {
            OpenMode::Read => options.read(true),
            OpenMode::ReadWrite => options.read(true).write(true),
            OpenMode::CreateNew => options.read(true).write(true).create_new(true),
        };
        Ok(Arc::new(RealFile(options.open(path)?)))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }

    fn remove_dir(&self, dir: &Path) -> io::Result<()> {
        fs::remove_dir(dir)
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        Ok(names)
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        path.try_exists()
    }

    fn try_lock(&self, path: &Path, mode: LockMode) -> io::Result<Option<Box<dyn LockGuard>>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let arg = match mode {
            LockMode::Shared => FlockArg::LockSharedNonblock,
            LockMode::Exclusive => FlockArg::LockExclusiveNonblock,
        };
        match Flock::lock(file, arg) {
            Ok(lock) => Ok(Some(Box::new(RealLock(lock)))),
            Err((_, Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, errno)) => Err(errno.into()),
        }
    }
}

/// A host file, accessed with pread and pwrite.
#[derive(Debug)]
pub struct RealFile(File);

impl StorageFile for RealFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.0.read_exact_at(buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_all_at(buf, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.0.sync_all()
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn punch_hole(&self, offset: u64, len: u64) -> io::Result<()> {
        let flags = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
        let (offset, len) = (to_off(offset)?, to_off(len)?);
        match nix::fcntl::fallocate(self.0.as_fd(), flags, offset, len) {
            Ok(()) => Ok(()),
            // A file system without hole punching: write zeros instead.
            Err(Errno::EOPNOTSUPP) => write_zeros(&self.0, offset, len),
            Err(errno) => Err(errno.into()),
        }
    }

    fn next_data(&self, offset: u64) -> io::Result<Option<u64>> {
        match nix::unistd::lseek(self.0.as_fd(), to_off(offset)?, Whence::SeekData) {
            Ok(pos) => Ok(u64::try_from(pos).ok()),
            // lseek(2): ENXIO means no data at or after the offset.
            Err(Errno::ENXIO) => Ok(None),
            // File systems without SEEK_DATA: treat everything as data.
            Err(Errno::EINVAL) if offset < self.len()? => Ok(Some(offset)),
            Err(Errno::EINVAL) => Ok(None),
            Err(errno) => Err(errno.into()),
        }
    }

    fn next_hole(&self, offset: u64) -> io::Result<u64> {
        match nix::unistd::lseek(self.0.as_fd(), to_off(offset)?, Whence::SeekHole) {
            Ok(pos) => Ok(pos.unsigned_abs()),
            // Past the end, or no SEEK_HOLE support: the end is the hole.
            Err(Errno::ENXIO | Errno::EINVAL) => self.len(),
            Err(errno) => Err(errno.into()),
        }
    }

    fn allocated_bytes(&self) -> io::Result<u64> {
        use std::os::unix::fs::MetadataExt;
        Ok(self.0.metadata()?.blocks() * 512)
    }
}

fn to_off(value: u64) -> io::Result<i64> {
    i64::try_from(value).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn write_zeros(file: &File, offset: i64, len: i64) -> io::Result<()> {
    const CHUNK: u64 = 1 << 20;
    let zeros = vec![0u8; 1 << 20];
    let (mut pos, end) = (
        offset.unsigned_abs(),
        offset.unsigned_abs() + len.unsigned_abs(),
    );
    while pos < end {
        let n = (end - pos).min(CHUNK);
        // n is at most 1 MiB.
        file.write_all_at(&zeros[..n as usize], pos)?;
        pos += n;
    }
    Ok(())
}
