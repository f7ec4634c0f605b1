//! Loop devices attached with direct I/O through the ioctls of loop(4).

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::error::ServeError;

// Request codes and flags from loop(4) and <linux/loop.h>.
const LOOP_CLR_FD: libc::c_ulong = 0x4C01;
const LOOP_SET_CAPACITY: libc::c_ulong = 0x4C07;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LO_FLAGS_READ_ONLY: u32 = 1;
/// Detach when the last opener closes the device, so that a dead server's
/// device goes away once its filesystem is unmounted.
const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LO_FLAGS_DIRECT_IO: u32 = 16;
const LO_NAME_SIZE: usize = 64;

/// Logical block size of the device; filesystems on it use at least this.
pub const BLOCK_SIZE: u32 = 4096;
/// Devices tried before giving up when others claim free devices first.
const ATTACH_ATTEMPTS: u32 = 16;

/// `struct loop_info64`, 232 bytes.
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; LO_NAME_SIZE],
    lo_crypt_name: [u8; LO_NAME_SIZE],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// `struct loop_config`, 304 bytes: the argument of `LOOP_CONFIGURE`.
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

const _: () = assert!(size_of::<LoopInfo64>() == 232);
const _: () = assert!(size_of::<LoopConfig>() == 304);

/// An attached loop device; dropping it detaches the device.
#[derive(Debug)]
pub struct LoopDevice {
    device: Option<File>,
    path: PathBuf,
}

impl LoopDevice {
    /// Attaches a free loop device to `backing` with direct I/O.
    pub fn attach(backing: &Path, read_only: bool) -> Result<LoopDevice, ServeError> {
        let backing_file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(backing)
            .map_err(|e| ServeError::io("open", backing, e))?;
        let control = File::open("/dev/loop-control")
            .map_err(|e| ServeError::io("open", "/dev/loop-control", e))?;

        for _ in 0..ATTACH_ATTEMPTS {
            // SAFETY: LOOP_CTL_GET_FREE takes no argument.
            let number = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE) };
            if number < 0 {
                let e = std::io::Error::last_os_error();
                return Err(ServeError::io(
                    "find a free loop device with",
                    "/dev/loop-control",
                    e,
                ));
            }
            let path = PathBuf::from(format!("/dev/loop{number}"));
            let device = OpenOptions::new()
                .read(true)
                .write(!read_only)
                .open(&path)
                .map_err(|e| ServeError::io("open", &path, e))?;
            match configure(&device, &backing_file, backing, read_only) {
                Ok(()) => {
                    let device = LoopDevice {
                        device: Some(device),
                        path,
                    };
                    device.check_direct_io();
                    return Ok(device);
                }
                // Another process configured this device between our
                // GET_FREE and CONFIGURE.
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => continue,
                Err(e) => return Err(ServeError::io("configure", &path, e)),
            }
        }
        Err(ServeError::NoFreeLoop {
            attempts: ATTACH_ATTEMPTS,
        })
    }

    /// Returns the device node, such as `/dev/loop3`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes the device pick up the backing file's new size.
    pub fn set_capacity(&self) -> Result<(), ServeError> {
        let Some(device) = &self.device else {
            return Ok(());
        };
        // SAFETY: LOOP_SET_CAPACITY takes no argument.
        let rc = unsafe { libc::ioctl(device.as_raw_fd(), LOOP_SET_CAPACITY, 0) };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            return Err(ServeError::io("set capacity of", &self.path, e));
        }
        Ok(())
    }

    /// Detaches the device. The kernel finishes the detach when the last
    /// opener closes it, which is this handle once no filesystem uses it.
    pub fn detach(mut self) -> Result<(), ServeError> {
        self.detach_inner()
    }

    fn detach_inner(&mut self) -> Result<(), ServeError> {
        let Some(device) = self.device.take() else {
            return Ok(());
        };
        // SAFETY: LOOP_CLR_FD takes no argument.
        let rc = unsafe { libc::ioctl(device.as_raw_fd(), LOOP_CLR_FD, 0) };
        let result = if rc < 0 {
            let e = std::io::Error::last_os_error();
            Err(ServeError::io("detach", &self.path, e))
        } else {
            Ok(())
        };
        drop(device);
        result
    }

    fn check_direct_io(&self) {
        let name = self.path.file_name().unwrap_or_default().to_string_lossy();
        let sysfs = format!("/sys/block/{name}/loop/dio");
        match std::fs::read_to_string(&sysfs) {
            Ok(value) if value.trim() == "1" => {}
            Ok(_) => {
                tracing::warn!(device = %self.path.display(), "loop device runs without direct I/O; pages are cached twice")
            }
            Err(e) => tracing::debug!(path = sysfs, error = %e, "cannot read loop dio state"),
        }
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        if let Err(e) = self.detach_inner() {
            tracing::warn!(error = %e, "detaching loop device failed");
        }
    }
}

fn configure(
    device: &File,
    backing: &File,
    backing_path: &Path,
    read_only: bool,
) -> std::io::Result<()> {
    let mut flags = LO_FLAGS_DIRECT_IO | LO_FLAGS_AUTOCLEAR;
    if read_only {
        flags |= LO_FLAGS_READ_ONLY;
    }
    let mut info = LoopInfo64 {
        lo_device: 0,
        lo_inode: 0,
        lo_rdevice: 0,
        lo_offset: 0,
        lo_sizelimit: 0,
        lo_number: 0,
        lo_encrypt_type: 0,
        lo_encrypt_key_size: 0,
        lo_flags: flags,
        lo_file_name: [0; LO_NAME_SIZE],
        lo_crypt_name: [0; LO_NAME_SIZE],
        lo_encrypt_key: [0; 32],
        lo_init: [0; 2],
    };
    let name = backing_path.as_os_str().as_bytes();
    let len = name.len().min(LO_NAME_SIZE - 1);
    info.lo_file_name[..len].copy_from_slice(&name[..len]);
    let config = LoopConfig {
        fd: u32::try_from(backing.as_raw_fd()).map_err(|_| std::io::ErrorKind::InvalidInput)?,
        block_size: BLOCK_SIZE,
        info,
        reserved: [0; 8],
    };
    // SAFETY: LOOP_CONFIGURE reads a `struct loop_config`, which `config`
    // matches in layout (size asserted above) and outlives the call.
    let rc = unsafe { libc::ioctl(device.as_raw_fd(), LOOP_CONFIGURE, &config) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Detaches the loop device at `path` if it is attached, for cleaning up
/// after a dead server. With autoclear set, the kernel detaches it when
/// the last user closes it.
pub fn detach_path(path: &Path) -> Result<(), ServeError> {
    let device = match OpenOptions::new().read(true).open(path) {
        Ok(device) => device,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(ServeError::io("open", path, e)),
    };
    // SAFETY: LOOP_CLR_FD takes no argument.
    let rc = unsafe { libc::ioctl(device.as_raw_fd(), LOOP_CLR_FD, 0) };
    if rc < 0 {
        let e = std::io::Error::last_os_error();
        // ENXIO: the device is not attached.
        if e.raw_os_error() != Some(libc::ENXIO) {
            return Err(ServeError::io("detach", path, e));
        }
    }
    Ok(())
}

/// Returns the backing file of the loop device at `path`, if attached.
pub fn backing_file(path: &Path) -> Option<PathBuf> {
    let name = path.file_name()?.to_string_lossy().into_owned();
    let text = std::fs::read_to_string(format!("/sys/block/{name}/loop/backing_file")).ok()?;
    Some(PathBuf::from(text.trim_end()))
}
