//! Writing files inside a container's root from the host.
//!
//! The container's files are untrusted: `/etc` may be a symlink to a host
//! path. Directories are opened with `RESOLVE_IN_ROOT` (openat2(2)), so
//! every symlink resolves inside the root, and the file is replaced by a
//! rename within that directory, which never follows a symlink.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::Path;

use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat, openat2, renameat};
use nix::sys::stat::Mode;

use super::error::ContainerError;

/// Replaces `dir/name` under `root` with `data` (mode 0644).
pub fn write_file(root: &Path, dir: &str, name: &str, data: &[u8]) -> Result<(), ContainerError> {
    let target = root.join(dir).join(name);
    let io_err = |err: nix::Error| ContainerError::io("write", &target)(err.into());

    let root_fd = open_dir(root, None).map_err(io_err)?;
    let dir_fd = open_dir(root, Some((&root_fd, dir))).map_err(io_err)?;
    let tmp = format!(".{name}.lamina-tmp");
    let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_TRUNC | OFlag::O_NOFOLLOW;
    let file_fd = openat(
        &dir_fd,
        tmp.as_str(),
        flags | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o644),
    )
    .map_err(io_err)?;

    let mut file = std::fs::File::from(file_fd);
    file.write_all(data)
        .and_then(|()| file.sync_all())
        .map_err(ContainerError::io("write", &target))?;
    renameat(&dir_fd, tmp.as_str(), &dir_fd, name).map_err(io_err)
}

fn open_dir(root: &Path, inside: Option<(&OwnedFd, &str)>) -> nix::Result<OwnedFd> {
    let flags = OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC;
    match inside {
        None => nix::fcntl::open(root, flags, Mode::empty()),
        Some((root_fd, dir)) => {
            let how = OpenHow::new()
                .flags(flags)
                .resolve(ResolveFlag::RESOLVE_IN_ROOT);
            openat2(root_fd, dir, how)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_inside_root() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("etc")).unwrap();
        write_file(root.path(), "etc", "hostname", b"ct101\n").unwrap();
        let text = std::fs::read_to_string(root.path().join("etc/hostname")).unwrap();
        assert_eq!(text, "ct101\n");
    }

    #[test]
    fn symlinked_dir_stays_inside_root() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("etc")).unwrap();

        // The absolute symlink resolves inside the root, where it does not exist.
        assert!(write_file(root.path(), "etc", "hostname", b"x\n").is_err());
        assert!(!outside.path().join("hostname").exists());
    }

    #[test]
    fn symlinked_file_is_replaced_not_followed() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        std::fs::create_dir(root.path().join("etc")).unwrap();
        std::os::unix::fs::symlink(&victim, root.path().join("etc/hostname")).unwrap();

        write_file(root.path(), "etc", "hostname", b"ct\n").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        let meta = std::fs::symlink_metadata(root.path().join("etc/hostname")).unwrap();
        assert!(meta.is_file());
    }
}
