//! Cleanup after a dead server: the filesystem mount, the loop device, the
//! FUSE file and the runtime directory it left behind.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::error::{ServeError, error_chain};
use super::fs;
use super::loopdev;
use super::runtime::{self, MountInfo};

/// How long the FUSE unmount is retried before it is done lazily.
const EXPORT_UNMOUNT_RETRY: Duration = Duration::from_secs(2);

/// One line of /proc/self/mountinfo: the mount point and its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MountEntry {
    pub mount_point: PathBuf,
    pub source: String,
}

/// Reads the mounts of this process's mount namespace.
pub(crate) fn mounts() -> Vec<MountEntry> {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    text.lines().filter_map(parse_mountinfo_line).collect()
}

/// Parses a mountinfo line (proc(5)): field 5 is the mount point, and the
/// source follows the " - " separator and the filesystem type.
fn parse_mountinfo_line(line: &str) -> Option<MountEntry> {
    let (left, right) = line.split_once(" - ")?;
    let mount_point = left.split(' ').nth(4)?;
    let source = right.split(' ').nth(1)?;
    Some(MountEntry {
        mount_point: PathBuf::from(unescape(mount_point)),
        source: unescape(source),
    })
}

/// Undoes the octal escapes (`\040` for a space) of mountinfo fields.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let digits = std::str::from_utf8(&bytes[i + 1..i + 4]).unwrap_or("");
            if let Ok(value) = u8::from_str_radix(digits, 8) {
                out.push(value);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn is_mount_point(path: &Path, entries: &[MountEntry]) -> bool {
    entries.iter().any(|entry| entry.mount_point == path)
}

/// Removes what a dead server left behind. Every step is done only when
/// the kernel still shows it as this mount's.
pub(crate) fn clean_dead(info: &MountInfo) -> Result<(), ServeError> {
    let entries = mounts();
    let loop_source = info.loop_device.to_string_lossy();
    let fs_mounted = entries
        .iter()
        .any(|entry| entry.mount_point == info.target && entry.source == loop_source);
    if fs_mounted {
        // The FUSE connection died with the server, so the filesystem
        // cannot write back; a normal unmount still works unless busy.
        if let Err(e) = fs::unmount(&info.target, false) {
            tracing::warn!(error = %error_chain(&e), "unmount failed; detaching lazily");
            fs::unmount(&info.target, true)?;
        }
    }

    let export = info.export_file();
    if loopdev::backing_file(&info.loop_device).as_deref() == Some(export.as_path()) {
        loopdev::detach_path(&info.loop_device)?;
    }

    if is_mount_point(&export, &entries) {
        unmount_export(&export)?;
    }
    runtime::remove_run_dir(&info.run_dir);
    tracing::info!(disk = %info.disk.display(), target = %info.target.display(), "cleaned up after dead server");
    Ok(())
}

/// Removes a runtime directory that has no state file, left by a server
/// that died during setup.
pub(crate) fn clean_orphan_dir(run_dir: &Path) -> Result<(), ServeError> {
    let export = run_dir.join(runtime::EXPORT_FILE);
    if is_mount_point(&export, &mounts()) {
        unmount_export(&export)?;
    }
    runtime::remove_run_dir(run_dir);
    Ok(())
}

fn unmount_export(export: &Path) -> Result<(), ServeError> {
    let start = Instant::now();
    loop {
        match nix::mount::umount2(export, nix::mount::MntFlags::empty()) {
            Ok(()) => return Ok(()),
            Err(nix::errno::Errno::EBUSY) if start.elapsed() < EXPORT_UNMOUNT_RETRY => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => return fs::unmount(export, true),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_line_is_parsed() {
        let line = "36 35 98:0 /mnt1 /mnt/my\\040dir rw,noatime master:1 - ext4 /dev/loop3 rw,errors=continue";
        let entry = parse_mountinfo_line(line).expect("parsed");
        assert_eq!(entry.mount_point, PathBuf::from("/mnt/my dir"));
        assert_eq!(entry.source, "/dev/loop3");
    }

    #[test]
    fn mountinfo_line_without_separator_is_skipped() {
        assert_eq!(parse_mountinfo_line("36 35 98:0 / /mnt rw"), None);
    }
}
