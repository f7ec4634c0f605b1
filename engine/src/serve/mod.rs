//! The server that owns a mounted image: a FUSE file that serves the disk,
//! a loop device on it with direct I/O, the filesystem mounted from the
//! loop device, and a control socket for online operations.
//!
//! [`mount`] forks a server process and returns once the filesystem is
//! mounted. [`umount`] sends the server a shutdown request, which undoes
//! every step, and waits until it has exited. [`mkfs`] attaches a disk in the calling process just long enough
//! to create a filesystem. [`control`] carries online snapshot, grow,
//! compact, snapshot delete and merge, and info requests to a running
//! server.

pub mod attach;
pub mod backend;
mod cleanup;
pub mod control;
pub mod error;
pub mod fs;
pub mod fuse;
pub mod loopdev;
pub mod nbd;
pub mod runtime;
mod server;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use attach::Attachment;
pub use backend::{BackendError, BlockBackend, RawFile};
pub use control::{ControlRequest, ControlResponse};
pub use error::ServeError;
pub use fs::{FsType, FsUsage};
pub use runtime::MountInfo;

use crate::image::{Access, Disk, resolve_snapshot};
use server::ServerConfig;

/// How long `mkfs` retries the FUSE unmount after detaching.
const MKFS_DETACH_TIMEOUT: Duration = Duration::from_secs(10);

/// Options of [`mount`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountOptions {
    /// Mount read-only; the disk is opened read-only as well.
    pub read_only: bool,
    /// Mount this snapshot (UUID or name) read-only instead of the top.
    pub snapshot: Option<String>,
    /// Extra options for the filesystem mount, comma-separated.
    pub fs_options: Option<String>,
}

/// Mounts the filesystem on the disk at `disk_dir` at `target`, an existing
/// empty directory, and returns once it is mounted.
///
/// A server process is forked from the caller: call this before the
/// calling process starts threads (see `serve::server`). A snapshot mount
/// is always read-only and leaves the top untouched, so it can run next to
/// a mount of the top.
pub fn mount(disk_dir: &Path, target: &Path, opts: &MountOptions) -> Result<MountInfo, ServeError> {
    let disk = canonical_disk(disk_dir)?;
    let snapshot = match &opts.snapshot {
        Some(id) => Some(
            resolve_snapshot(&disk, id)
                .map_err(|e| ServeError::image("look up snapshot", e))?
                .to_string(),
        ),
        None => None,
    };

    let run_root = runtime::ensure_runtime_dir()?;
    let id = runtime::mount_id(&disk, snapshot.as_deref());
    let run_dir = run_root.join(&id);
    // Checked before the target, so that mounting a mounted disk again at
    // its own target reports the mount, not a non-empty directory.
    check_not_mounted(&disk, &run_dir)?;
    let target = check_target(target)?;

    let config = ServerConfig {
        disk,
        target,
        read_only: opts.read_only || snapshot.is_some(),
        snapshot,
        fs_options: opts.fs_options.clone(),
        run_dir,
        log: run_root.join(format!("{id}.log")),
    };
    server::spawn(&config)
}

/// Unmounts the mount of a disk directory or at a target directory and
/// waits for its server to exit.
///
/// Without `force`, a busy filesystem makes this fail and the server keeps
/// serving. With `force`, a busy filesystem is detached lazily, and the
/// leftovers of a dead server (mount, loop device, FUSE file, runtime
/// files) are removed.
pub fn umount(disk_or_target: &Path, force: bool) -> Result<(), ServeError> {
    let info = find_mount(disk_or_target)?;
    if info.running {
        let request = if force {
            ControlRequest::ForceShutdown
        } else {
            ControlRequest::Shutdown
        };
        control::send(&info.control_socket(), info.pid, &request)?;
        return Ok(());
    }
    if !force {
        return Err(ServeError::StaleMount {
            disk: info.disk,
            target: info.target,
            pid: info.pid,
        });
    }
    cleanup::clean_dead(&info)
}

/// Lists the mounts that have a state file, with `running` telling live
/// servers from dead ones.
pub fn list() -> Result<Vec<MountInfo>, ServeError> {
    runtime::read_all()
}

/// Returns the mount of the disk at `disk_dir`, preferring the mount of
/// the top over snapshot mounts; `None` when it is not mounted.
pub fn find(disk_dir: &Path) -> Result<Option<MountInfo>, ServeError> {
    let Ok(disk) = disk_dir.canonicalize() else {
        return Ok(None);
    };
    let mut mounts: Vec<MountInfo> = list()?.into_iter().filter(|m| m.disk == disk).collect();
    mounts.sort_by_key(|m| m.snapshot.is_some());
    Ok(mounts.into_iter().next())
}

/// Creates a filesystem on the disk at `disk_dir`: attaches it in this
/// process through FUSE and a loop device, runs mkfs and detaches.
/// `inodes` sets the ext4 inode count.
pub fn mkfs(disk_dir: &Path, fs: FsType, inodes: Option<u64>) -> Result<(), ServeError> {
    let disk = canonical_disk(disk_dir)?;
    let opened =
        Disk::open(&disk, Access::ReadWrite).map_err(|e| ServeError::image("open disk", e))?;
    let opened = Arc::new(opened);

    let run_root = runtime::ensure_runtime_dir()?;
    let run_dir = run_root.join(format!(
        "mkfs-{}-{}",
        runtime::mount_id(&disk, None),
        std::process::id()
    ));
    std::fs::create_dir(&run_dir).map_err(|e| ServeError::io("create", &run_dir, e))?;
    let result = mkfs_attached(&opened, &run_dir.join(runtime::EXPORT_FILE), fs, inodes);
    runtime::remove_run_dir(&run_dir);
    result?;

    match Arc::try_unwrap(opened) {
        Ok(opened) => opened
            .close()
            .map_err(|e| ServeError::image("close disk", e)),
        Err(_) => Err(ServeError::Unsupported {
            what: "closing a disk that FUSE workers still hold".into(),
        }),
    }
}

fn mkfs_attached(
    disk: &Arc<Disk>,
    export: &Path,
    fs: FsType,
    inodes: Option<u64>,
) -> Result<(), ServeError> {
    let backend: Arc<dyn BlockBackend> = disk.clone();
    let attachment = Attachment::attach(backend, export, false)?;
    fs::mkfs(attachment.device(), fs, inodes)?;
    attachment.detach(MKFS_DETACH_TIMEOUT)?;
    disk.flush().map_err(|e| ServeError::image("flush", e))
}

/// Grows the unmounted disk at `disk_dir` to `size` bytes, then its
/// filesystem: ext4 here, through FUSE and a loop device in this process
/// (e2fsck, then resize2fs). XFS grows only while mounted, so its grow is
/// recorded and done by the next read-write mount, as is an ext4 grow that
/// fails here. A disk without a filesystem only grows.
pub fn grow_offline(disk_dir: &Path, size: u64) -> Result<(), ServeError> {
    let disk = canonical_disk(disk_dir)?;
    let opened =
        Disk::open(&disk, Access::ReadWrite).map_err(|e| ServeError::image("open disk", e))?;
    opened
        .grow(size)
        .map_err(|e| ServeError::image("grow disk", e))?;
    opened.flush().map_err(|e| ServeError::image("flush", e))?;
    fs::mark_grow_pending(&disk)?;
    let opened = Arc::new(opened);

    let run_root = runtime::ensure_runtime_dir()?;
    let run_dir = run_root.join(format!(
        "grow-{}-{}",
        runtime::mount_id(&disk, None),
        std::process::id()
    ));
    std::fs::create_dir(&run_dir).map_err(|e| ServeError::io("create", &run_dir, e))?;
    let result = grow_fs_attached(&opened, &run_dir.join(runtime::EXPORT_FILE));
    runtime::remove_run_dir(&run_dir);

    // The disk is closed cleanly even when the filesystem grow failed: it
    // has grown, and the pending record makes the next mount try again.
    let closed = match Arc::try_unwrap(opened) {
        Ok(opened) => opened
            .close()
            .map_err(|e| ServeError::image("close disk", e)),
        Err(_) => Err(ServeError::Unsupported {
            what: "closing a disk that FUSE workers still hold".into(),
        }),
    };
    if result? {
        fs::clear_grow_pending(&disk)?;
    }
    closed
}

/// Grows the ext4 filesystem on the attached disk, and returns whether the
/// filesystem needs nothing more: false for XFS, which must be mounted.
fn grow_fs_attached(disk: &Arc<Disk>, export: &Path) -> Result<bool, ServeError> {
    let backend: Arc<dyn BlockBackend> = disk.clone();
    let attachment = Attachment::attach(backend, export, false)?;
    let grown = match fs::detect(attachment.device()) {
        Ok(Some(FsType::Ext4)) => fs::grow_unmounted_ext4(attachment.device()).map(|()| true),
        Ok(Some(FsType::Xfs)) => Ok(false),
        Ok(None) => Ok(true),
        Err(error) => Err(error),
    };
    let detached = attachment.detach(MKFS_DETACH_TIMEOUT);
    let grown = grown?;
    detached?;
    disk.flush().map_err(|e| ServeError::image("flush", e))?;
    Ok(grown)
}

/// Sends an online operation to the server of the disk at `disk_dir`.
pub fn control(disk_dir: &Path, req: ControlRequest) -> Result<ControlResponse, ServeError> {
    let info = find(disk_dir)?.ok_or_else(|| ServeError::NotMounted {
        path: disk_dir.to_path_buf(),
    })?;
    if !info.running {
        return Err(ServeError::StaleMount {
            disk: info.disk,
            target: info.target,
            pid: info.pid,
        });
    }
    control::send(&info.control_socket(), info.pid, &req)
}

fn canonical_disk(disk_dir: &Path) -> Result<PathBuf, ServeError> {
    disk_dir
        .canonicalize()
        .map_err(|e| ServeError::io("find disk", disk_dir, e))
}

fn check_target(target: &Path) -> Result<PathBuf, ServeError> {
    let metadata = match std::fs::metadata(target) {
        Ok(metadata) => metadata,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ServeError::TargetNotFound {
                target: target.to_path_buf(),
            });
        }
        Err(e) => return Err(ServeError::io("stat", target, e)),
    };
    if !metadata.is_dir() {
        return Err(ServeError::TargetNotDirectory {
            target: target.to_path_buf(),
        });
    }
    let mut entries = std::fs::read_dir(target).map_err(|e| ServeError::io("read", target, e))?;
    if entries.next().is_some() {
        return Err(ServeError::TargetNotEmpty {
            target: target.to_path_buf(),
        });
    }
    target
        .canonicalize()
        .map_err(|e| ServeError::io("resolve", target, e))
}

/// Rejects a disk (or snapshot) that has a live or stale mount, and clears
/// a runtime directory left without a state file.
fn check_not_mounted(disk: &Path, run_dir: &Path) -> Result<(), ServeError> {
    match runtime::read_state(run_dir)? {
        Some(info) if info.running => Err(ServeError::AlreadyMounted {
            disk: disk.to_path_buf(),
            target: info.target,
            pid: info.pid,
        }),
        Some(info) => Err(ServeError::StaleMount {
            disk: disk.to_path_buf(),
            target: info.target,
            pid: info.pid,
        }),
        None if run_dir.exists() => cleanup::clean_orphan_dir(run_dir),
        None => Ok(()),
    }
}

/// Finds the mount that `path` names, as a disk directory or a target.
/// A disk with several mounts is resolved to the mount of its top.
fn find_mount(path: &Path) -> Result<MountInfo, ServeError> {
    let resolved = path.canonicalize().unwrap_or_else(|_| absolute(path));
    let mounts = list()?;
    if let Some(info) = mounts.iter().find(|m| m.target == resolved) {
        return Ok(info.clone());
    }
    let mut of_disk: Vec<&MountInfo> = mounts.iter().filter(|m| m.disk == resolved).collect();
    of_disk.sort_by_key(|m| m.snapshot.is_some());
    match of_disk.first() {
        Some(info) if info.snapshot.is_none() || of_disk.len() == 1 => Ok((*info).clone()),
        Some(_) => Err(ServeError::InvalidArgument {
            what: "disk with several snapshot mounts (pass the target directory instead)",
            value: path.display().to_string(),
        }),
        None => Err(ServeError::NotMounted {
            path: path.to_path_buf(),
        }),
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}
