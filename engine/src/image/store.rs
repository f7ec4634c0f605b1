//! Disk directory layout and crash-safe descriptor updates.

use std::path::{Path, PathBuf};

use lamina_format::Descriptor;
use lamina_format::descriptor::DESCRIPTOR_FILE;

use super::error::ImageError;
use super::io::{LockGuard, LockMode, OpenMode, Storage};

/// Name of the lock file inside a disk directory.
pub const LOCK_FILE: &str = "lock";
pub(crate) const DESCRIPTOR_TEMP: &str = "disk.json.tmp";

/// Path of the descriptor of the disk in `dir`.
pub fn descriptor_path(dir: &Path) -> PathBuf {
    dir.join(DESCRIPTOR_FILE)
}

/// File name for a new delta.
pub fn delta_file_name(uuid: uuid::Uuid) -> String {
    format!("{uuid}.delta")
}

/// Reads and validates the descriptor of the disk in `dir`.
pub fn load_descriptor(storage: &dyn Storage, dir: &Path) -> Result<Descriptor, ImageError> {
    let path = descriptor_path(dir);
    if !storage
        .exists(&path)
        .map_err(|e| ImageError::io("stat", &path, e))?
    {
        return Err(ImageError::DiskNotFound {
            dir: dir.to_path_buf(),
            descriptor: path,
        });
    }
    let file = storage
        .open(&path, OpenMode::Read)
        .map_err(|e| ImageError::io("open", &path, e))?;
    let len = file.len().map_err(|e| ImageError::io("stat", &path, e))?;
    let mut bytes = vec![0u8; usize::try_from(len).unwrap_or(usize::MAX).min(64 << 20)];
    file.read_at(&mut bytes, 0)
        .map_err(|e| ImageError::io("read", &path, e))?;
    Descriptor::parse(&bytes).map_err(|source| ImageError::Descriptor { path, source })
}

/// Replaces the descriptor atomically: write a temporary file, sync it,
/// rename it over the descriptor, sync the directory.
pub fn save_descriptor(
    storage: &dyn Storage,
    dir: &Path,
    descriptor: &Descriptor,
) -> Result<(), ImageError> {
    let temp = dir.join(DESCRIPTOR_TEMP);
    match storage.remove_file(&temp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(ImageError::io("remove", &temp, e));
        }
        _ => {}
    }
    let file = storage
        .open(&temp, OpenMode::CreateNew)
        .map_err(|e| ImageError::io("create", &temp, e))?;
    file.write_at(&descriptor.to_json(), 0)
        .map_err(|e| ImageError::io("write", &temp, e))?;
    file.sync_all()
        .map_err(|e| ImageError::io("sync", &temp, e))?;
    drop(file);

    let path = descriptor_path(dir);
    storage
        .rename(&temp, &path)
        .map_err(|e| ImageError::io("rename", &temp, e))?;
    sync_dir(storage, dir)
}

/// Takes the disk's lock without waiting: exclusive for any change,
/// shared for readers. Fails with [`ImageError::Busy`] when another holder
/// conflicts, and with [`ImageError::DiskNotFound`] when `dir` holds no
/// disk. Offline operations hold the exclusive lock while they run.
pub fn lock_disk(
    storage: &dyn Storage,
    dir: &Path,
    mode: LockMode,
) -> Result<Box<dyn LockGuard>, ImageError> {
    let descriptor = descriptor_path(dir);
    if !storage
        .exists(&descriptor)
        .map_err(|e| ImageError::io("stat", &descriptor, e))?
    {
        return Err(ImageError::DiskNotFound {
            dir: dir.to_path_buf(),
            descriptor,
        });
    }
    let path = dir.join(LOCK_FILE);
    match storage.try_lock(&path, mode) {
        Ok(Some(guard)) => Ok(guard),
        Ok(None) => Err(ImageError::Busy {
            dir: dir.to_path_buf(),
        }),
        Err(e) => Err(ImageError::io("lock", &path, e)),
    }
}

/// Syncs a directory's entries.
pub fn sync_dir(storage: &dyn Storage, dir: &Path) -> Result<(), ImageError> {
    storage
        .sync_dir(dir)
        .map_err(|e| ImageError::io("sync directory", dir, e))
}

/// Seconds since the Unix epoch, 0 if the clock is before it.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
