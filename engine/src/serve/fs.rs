//! The filesystem on a served disk: detection, mkfs, mount, freeze, online
//! grow and usage.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::mount::{MntFlags, MsFlags};
use serde::{Deserialize, Serialize};

use super::error::ServeError;

/// A filesystem Lamina creates and mounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsType {
    /// ext4, grown online with resize2fs.
    Ext4,
    /// XFS, grown online with xfs_growfs.
    Xfs,
}

impl FsType {
    /// Returns the name mount(2) and mkfs use.
    pub fn name(self) -> &'static str {
        match self {
            FsType::Ext4 => "ext4",
            FsType::Xfs => "xfs",
        }
    }
}

impl std::str::FromStr for FsType {
    type Err = ServeError;

    fn from_str(s: &str) -> Result<FsType, ServeError> {
        match s {
            "ext4" => Ok(FsType::Ext4),
            "xfs" => Ok(FsType::Xfs),
            _ => Err(ServeError::InvalidArgument {
                what: "filesystem type (expected ext4 or xfs)",
                value: s.to_string(),
            }),
        }
    }
}

/// Usage of a mounted filesystem, as `df` and `df -i` report it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsUsage {
    /// Size of a block in bytes.
    pub block_size: u64,
    /// Total data blocks.
    pub blocks: u64,
    /// Free blocks.
    pub blocks_free: u64,
    /// Free blocks available to unprivileged users.
    pub blocks_available: u64,
    /// Total inodes.
    pub inodes: u64,
    /// Free inodes.
    pub inodes_free: u64,
}

/// Reads the superblock magic numbers: ext2/3/4 store 0xEF53 at byte 1080
/// (offset 56 of the superblock at 1024), XFS stores "XFSB" at byte 0.
pub fn detect(device: &Path) -> Result<Option<FsType>, ServeError> {
    let file = File::open(device).map_err(|e| ServeError::io("open", device, e))?;
    let mut block = [0u8; 4096];
    file.read_exact_at(&mut block, 0)
        .map_err(|e| ServeError::io("read superblock of", device, e))?;
    if &block[..4] == b"XFSB" {
        return Ok(Some(FsType::Xfs));
    }
    if block[1080..1082] == [0x53, 0xEF] {
        return Ok(Some(FsType::Ext4));
    }
    Ok(None)
}

/// Creates a filesystem on `device`.
///
/// ext4 is created with the inode tables and journal written out now
/// instead of by a background thread after the first mount, and without a
/// discard of the fresh, already empty device.
pub fn mkfs(device: &Path, fs: FsType, inodes: Option<u64>) -> Result<(), ServeError> {
    let mut command = match fs {
        FsType::Ext4 => {
            let mut c = Command::new("mkfs.ext4");
            c.args([
                "-q",
                "-F",
                "-E",
                "nodiscard,lazy_itable_init=0,lazy_journal_init=0",
            ]);
            if let Some(n) = inodes {
                c.arg("-N").arg(n.to_string());
            }
            c
        }
        FsType::Xfs => {
            if inodes.is_some() {
                return Err(ServeError::Unsupported {
                    what: "a fixed inode count on xfs, which allocates inodes on demand,".into(),
                });
            }
            let mut c = Command::new("mkfs.xfs");
            c.args(["-q", "-f", "-K"]);
            c
        }
    };
    command.arg(device);
    run(&mut command)
}

/// Mounts `device` at `target`. Snapshot mounts of XFS need `nouuid`
/// because the snapshot's filesystem UUID equals that of the live disk.
/// Read-only ext4 mounts use `noload`: a snapshot frozen while mounted can
/// still carry the needs-recovery flag, and ext4 rejects a journal replay
/// on a read-only device with EROFS (ext4(5), "noload").
pub fn mount(
    device: &Path,
    target: &Path,
    fs: FsType,
    read_only: bool,
    options: Option<&str>,
) -> Result<(), ServeError> {
    let mut flags = MsFlags::empty();
    let mut data: Vec<&str> = options.into_iter().filter(|o| !o.is_empty()).collect();
    if read_only {
        flags |= MsFlags::MS_RDONLY;
        match fs {
            FsType::Xfs => data.push("nouuid"),
            FsType::Ext4 => {
                if !data.contains(&"noload") {
                    data.push("noload");
                }
            }
        }
    }
    let data = data.join(",");
    nix::mount::mount(
        Some(device),
        target,
        Some(fs.name()),
        flags,
        Some(data.as_str()),
    )
    .map_err(|e| ServeError::io("mount filesystem at", target, e.into()))
}

/// Unmounts `target`; a lazy unmount detaches it even while busy.
pub fn unmount(target: &Path, lazy: bool) -> Result<(), ServeError> {
    let flags = if lazy {
        MntFlags::MNT_DETACH
    } else {
        MntFlags::empty()
    };
    nix::mount::umount2(target, flags).map_err(|e| ServeError::io("umount", target, e.into()))
}

// FIFREEZE and FITHAW: _IOWR('X', 119, int) and _IOWR('X', 120, int)
// from <linux/fs.h>; FITRIM: _IOWR('X', 121, struct fstrim_range).
const FIFREEZE: libc::c_ulong = 0xC004_5877;
const FITHAW: libc::c_ulong = 0xC004_5878;
const FITRIM: libc::c_ulong = 0xC018_5879;

/// Writes the dirty data and metadata of the filesystem mounted at
/// `target` to its device (syncfs(2)), without blocking writers.
pub fn sync(target: &Path) -> Result<(), ServeError> {
    let dir = File::open(target).map_err(|e| ServeError::io("open", target, e))?;
    // SAFETY: syncfs takes a descriptor, which `dir` keeps open.
    let rc = unsafe { libc::syncfs(dir.as_raw_fd()) };
    if rc < 0 {
        let e = std::io::Error::last_os_error();
        return Err(ServeError::io("sync", target, e));
    }
    Ok(())
}

/// A frozen filesystem; dropping it thaws the filesystem.
pub struct Frozen {
    dir: File,
    target: PathBuf,
}

/// Freezes the filesystem mounted at `target`: all dirty data reaches the
/// device and new writes block until the thaw.
pub fn freeze(target: &Path) -> Result<Frozen, ServeError> {
    let dir = File::open(target).map_err(|e| ServeError::io("open", target, e))?;
    let mut arg: libc::c_int = 0;
    // SAFETY: FIFREEZE ignores its int argument, which is a live local.
    let rc = unsafe { libc::ioctl(dir.as_raw_fd(), FIFREEZE, &mut arg) };
    if rc < 0 {
        let e = std::io::Error::last_os_error();
        return Err(ServeError::io("freeze", target, e));
    }
    Ok(Frozen {
        dir,
        target: target.to_path_buf(),
    })
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let mut arg: libc::c_int = 0;
        // SAFETY: FITHAW ignores its int argument, which is a live local.
        let rc = unsafe { libc::ioctl(self.dir.as_raw_fd(), FITHAW, &mut arg) };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            tracing::error!(target = %self.target.display(), error = %e, "thaw failed");
        }
    }
}

/// `struct fstrim_range` from <linux/fs.h>, 24 bytes.
#[repr(C)]
struct FstrimRange {
    start: u64,
    len: u64,
    minlen: u64,
}

/// Discards the free blocks of the filesystem at `target` (like fstrim)
/// and returns the bytes the filesystem reported as trimmed.
pub fn trim(target: &Path) -> Result<u64, ServeError> {
    let dir = File::open(target).map_err(|e| ServeError::io("open", target, e))?;
    let mut range = FstrimRange {
        start: 0,
        len: u64::MAX,
        minlen: 0,
    };
    // SAFETY: FITRIM reads and updates a `struct fstrim_range`, which
    // `range` matches and which outlives the call.
    let rc = unsafe { libc::ioctl(dir.as_raw_fd(), FITRIM, &mut range) };
    if rc < 0 {
        let e = std::io::Error::last_os_error();
        return Err(ServeError::io("trim", target, e));
    }
    Ok(range.len)
}

/// Grows the mounted filesystem to fill its device.
pub fn grow(device: &Path, target: &Path, fs: FsType) -> Result<(), ServeError> {
    let mut command = match fs {
        FsType::Ext4 => {
            let mut c = Command::new("resize2fs");
            c.arg(device);
            c
        }
        FsType::Xfs => {
            let mut c = Command::new("xfs_growfs");
            c.arg(target);
            c
        }
    };
    run(&mut command)
}

/// Name of the file in a disk directory that records a grow of the disk
/// whose filesystem has not grown yet. The next read-write mount grows the
/// filesystem and removes the file.
pub const GROW_PENDING_FILE: &str = "fs-grow-pending";

/// Records that the filesystem on the disk in `disk_dir` must grow to fill
/// the disk at the next read-write mount. The file is synced by name.
pub fn mark_grow_pending(disk_dir: &Path) -> Result<(), ServeError> {
    let path = disk_dir.join(GROW_PENDING_FILE);
    let file = File::create(&path).map_err(|e| ServeError::io("create", &path, e))?;
    file.sync_all()
        .map_err(|e| ServeError::io("sync", &path, e))?;
    sync_dir(disk_dir)
}

/// Returns whether a grow of the filesystem in `disk_dir` is pending.
pub fn grow_pending(disk_dir: &Path) -> bool {
    disk_dir.join(GROW_PENDING_FILE).exists()
}

/// Removes the record of a pending grow.
pub fn clear_grow_pending(disk_dir: &Path) -> Result<(), ServeError> {
    let path = disk_dir.join(GROW_PENDING_FILE);
    match std::fs::remove_file(&path) {
        Ok(()) => sync_dir(disk_dir),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ServeError::io("remove", &path, e)),
    }
}

fn sync_dir(dir: &Path) -> Result<(), ServeError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| ServeError::io("sync", dir, e))
}

/// Grows an unmounted ext4 filesystem to fill `device`: a forced
/// `e2fsck -p` first, because resize2fs refuses to grow an unmounted
/// filesystem that was not checked since its last mount. Unlike the online
/// resize, this needs no `CAP_SYS_RESOURCE`.
pub fn grow_unmounted_ext4(device: &Path) -> Result<(), ServeError> {
    let output = Command::new("e2fsck")
        .arg("-fp")
        .arg(device)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| ServeError::io("run", "e2fsck", e))?;
    // e2fsck exits 1 or 2 when it corrected errors, 4 and up when it could
    // not.
    if output.status.code().is_none_or(|code| code >= 4) {
        return Err(ServeError::Tool {
            program: "e2fsck".into(),
            status: output.status.to_string(),
            stderr: last_lines(&String::from_utf8_lossy(&output.stderr), 3),
        });
    }
    run(Command::new("resize2fs").arg(device))
}

/// Returns the usage of the filesystem mounted at `target`.
pub fn usage(target: &Path) -> Result<FsUsage, ServeError> {
    let stat = nix::sys::statvfs::statvfs(target)
        .map_err(|e| ServeError::io("statvfs", target, e.into()))?;
    Ok(FsUsage {
        block_size: stat.fragment_size(),
        blocks: stat.blocks(),
        blocks_free: stat.blocks_free(),
        blocks_available: stat.blocks_available(),
        inodes: stat.files(),
        inodes_free: stat.files_free(),
    })
}

fn run(command: &mut Command) -> Result<(), ServeError> {
    let program = command.get_program().to_string_lossy().into_owned();
    tracing::debug!(?command, "running");
    let output = command
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| ServeError::io("run", program.clone(), e))?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    Err(ServeError::Tool {
        program,
        status: output.status.to_string(),
        stderr: last_lines(&stderr, 3),
    })
}

/// Returns the last `count` non-empty lines of a tool's output in their
/// order, joined with " / ", with tabs and runs of spaces squeezed.
fn last_lines(text: &str, count: usize) -> String {
    let lines: Vec<String> = text
        .lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|line| !line.is_empty())
        .collect();
    lines[lines.len().saturating_sub(count)..].join(" / ")
}

#[cfg(test)]
mod tests {
    use super::last_lines;

    #[test]
    fn last_lines_keep_order() {
        let text = "banner 1.0\n\nfirst\tline\nsecond   line\nthird\n";
        assert_eq!(last_lines(text, 3), "first line / second line / third");
        assert_eq!(
            last_lines(text, 10),
            "banner 1.0 / first line / second line / third"
        );
        assert_eq!(last_lines("", 3), "");
    }
}
