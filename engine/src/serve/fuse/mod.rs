//! A private FUSE filesystem whose root is one regular file: the served
//! block device.
//!
//! The protocol is spoken directly over `/dev/fuse`. Each worker thread
//! reads requests from its own clone of the device file
//! (`FUSE_DEV_IOC_CLONE`), so requests of one large direct write are
//! handled in parallel, each with its own payload and offset.

pub mod abi;
mod worker;

use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::errno::Errno;

use nix::mount::{MntFlags, MsFlags};
use zerocopy::IntoBytes;

use super::backend::BlockBackend;
use super::error::ServeError;
use worker::Worker;

/// Largest READ or WRITE payload: 1 MiB, so that the loop device's 1 MiB
/// requests reach the backend whole.
pub const MAX_IO: usize = 1 << 20;

/// How long [`FuseExport`]'s drop waits for its workers after a lazy
/// unmount before it leaves them running.
const DROP_JOIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Settings of a FUSE export.
#[derive(Debug, Clone)]
pub struct FuseOptions {
    /// Rejects writes and read-write opens with `EROFS`.
    pub read_only: bool,
    /// Number of worker threads, at least 1.
    pub threads: usize,
}

impl Default for FuseOptions {
    fn default() -> Self {
        FuseOptions {
            read_only: false,
            threads: default_threads(),
        }
    }
}

/// Returns the worker count: `LAMINA_FUSE_THREADS` when set, else 8.
///
/// Workers mostly wait on the backend, so more threads than cores help at
/// high queue depths.
pub fn default_threads() -> usize {
    std::env::var("LAMINA_FUSE_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(8)
}

/// State shared by the workers of one export.
pub(crate) struct Shared {
    pub backend: Arc<dyn BlockBackend>,
    pub read_only: bool,
    /// Count of requests that failed, kept instead of logging each one.
    pub failed: AtomicU64,
    /// Seconds since the epoch when the export was mounted, reported as the
    /// file's times.
    pub mount_time: u64,
}

/// A mounted FUSE export and its worker threads.
pub struct FuseExport {
    mountpoint: PathBuf,
    device: Arc<OwnedFd>,
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    done: mpsc::Receiver<()>,
    mounted: bool,
}

impl FuseExport {
    /// Mounts a FUSE filesystem on `mountpoint`, an existing regular file,
    /// and starts the workers that serve `backend` through it.
    pub fn mount(
        backend: Arc<dyn BlockBackend>,
        mountpoint: &Path,
        opts: &FuseOptions,
    ) -> Result<FuseExport, ServeError> {
        let device = open_device()?;
        mount_fuse(&device, mountpoint, opts.read_only)?;

        let shared = Arc::new(Shared {
            backend,
            read_only: opts.read_only,
            failed: AtomicU64::new(0),
            mount_time: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        });
        let device = Arc::new(OwnedFd::from(device));
        let (done_tx, done) = mpsc::channel();
        let mut export = FuseExport {
            mountpoint: mountpoint.to_path_buf(),
            device,
            shared,
            workers: Vec::new(),
            done,
            mounted: true,
        };

        for index in 0..opts.threads.max(1) {
            let fd = if index == 0 {
                export.device.try_clone()
            } else {
                clone_device(&export.device)
            };
            let fd = fd.map_err(|e| ServeError::io("clone", "/dev/fuse", e))?;
            let worker = Worker::new(fd, Arc::clone(&export.shared));
            let handle = spawn_worker(index, worker, done_tx.clone())
                .map_err(|e| ServeError::io("spawn worker for", mountpoint, e))?;
            export.workers.push(handle);
        }
        tracing::debug!(mountpoint = %mountpoint.display(), threads = opts.threads, "FUSE export mounted");
        Ok(export)
    }

    /// Returns the mounted file.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Returns how many requests failed so far.
    pub fn failed_requests(&self) -> u64 {
        self.shared.failed.load(Ordering::Relaxed)
    }

    /// Makes the kernel fetch the file size again after the backend grew.
    ///
    /// The loop device reads the size from the kernel's cached inode, so
    /// the cached attributes are invalidated (`FUSE_NOTIFY_INVAL_INODE`
    /// with a negative offset touches attributes only) and then refreshed
    /// with a stat.
    pub fn refresh_size(&self) -> Result<u64, ServeError> {
        let body = abi::NotifyInvalInodeOut {
            ino: abi::ROOT_ID,
            off: -1,
            len: 0,
        };
        let header = abi::OutHeader {
            len: u32::try_from(size_of::<abi::OutHeader>() + size_of::<abi::NotifyInvalInodeOut>())
                .unwrap_or(u32::MAX),
            error: abi::NOTIFY_INVAL_INODE,
            unique: 0,
        };
        let mut message = Vec::with_capacity(header.len as usize);
        message.extend_from_slice(header.as_bytes());
        message.extend_from_slice(body.as_bytes());
        nix::unistd::write(&*self.device, &message)
            .map_err(|e| ServeError::io("notify", &self.mountpoint, e.into()))?;

        let size = std::fs::metadata(&self.mountpoint)
            .map_err(|e| ServeError::io("stat", &self.mountpoint, e))?
            .size();
        Ok(size)
    }

    /// Unmounts the export and waits for the workers to exit.
    ///
    /// Retries for up to `busy_timeout` while the file is still in use,
    /// as right after a loop device detach; on failure the drop unmounts
    /// lazily.
    pub fn unmount(mut self, busy_timeout: Duration) -> Result<(), ServeError> {
        let start = Instant::now();
        loop {
            match nix::mount::umount2(&self.mountpoint, MntFlags::empty()) {
                Ok(()) => break,
                Err(Errno::EBUSY) if start.elapsed() < busy_timeout => {
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(e) => return Err(ServeError::io("umount", &self.mountpoint, e.into())),
            }
        }
        self.mounted = false;
        for handle in self.workers.drain(..) {
            let _ = handle.join();
        }
        Ok(())
    }
}

impl Drop for FuseExport {
    fn drop(&mut self) {
        if self.mounted
            && let Err(e) = nix::mount::umount2(&self.mountpoint, MntFlags::MNT_DETACH)
        {
            tracing::warn!(mountpoint = %self.mountpoint.display(), error = %e, "lazy unmount of FUSE export failed");
        }
        // Workers exit once the kernel aborts the connection, which happens
        // when the last user of the detached mount lets go of it.
        for _ in 0..self.workers.len() {
            if self.done.recv_timeout(DROP_JOIN_TIMEOUT).is_err() {
                tracing::warn!(mountpoint = %self.mountpoint.display(), "FUSE workers still running after unmount; leaving them");
                return;
            }
        }
        for handle in self.workers.drain(..) {
            let _ = handle.join();
        }
    }
}

fn open_device() -> Result<File, ServeError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .map_err(|e| ServeError::io("open", "/dev/fuse", e))
}

fn clone_device(master: &OwnedFd) -> std::io::Result<OwnedFd> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")?;
    let master_fd =
        u32::try_from(master.as_raw_fd()).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    // SAFETY: FUSE_DEV_IOC_CLONE reads one u32 (the fd to clone) from the
    // pointer, which points to a live local.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), abi::DEV_IOC_CLONE, &master_fd) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(OwnedFd::from(file))
}

/// Mounts the FUSE filesystem with the file as its root: `rootmode=100000`
/// is `S_IFREG` in octal, as in fuse(4)'s mount options.
fn mount_fuse(device: &File, mountpoint: &Path, read_only: bool) -> Result<(), ServeError> {
    let data = format!(
        "fd={},rootmode=100000,user_id=0,group_id=0,default_permissions,max_read={MAX_IO}",
        device.as_raw_fd()
    );
    let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    if read_only {
        flags |= MsFlags::MS_RDONLY;
    }
    nix::mount::mount(
        Some("lamina"),
        mountpoint,
        Some("fuse.lamina"),
        flags,
        Some(data.as_str()),
    )
    .map_err(|e| ServeError::io("mount FUSE on", mountpoint, e.into()))
}

fn spawn_worker(
    index: usize,
    worker: Worker,
    done: mpsc::Sender<()>,
) -> std::io::Result<JoinHandle<()>> {
    let dispatch = tracing::dispatcher::get_default(|d| d.clone());
    std::thread::Builder::new()
        .name(format!("fuse-{index}"))
        .spawn(move || {
            tracing::dispatcher::with_default(&dispatch, || {
                set_io_flusher();
                worker.run();
            });
            let _ = done.send(());
        })
}

/// Marks the thread as part of the I/O path (prctl(2) `PR_SET_IO_FLUSHER`),
/// so that its allocations do not wait on writeback of the loop device it
/// serves, which could deadlock under memory pressure. The call needs
/// `CAP_SYS_RESOURCE`; without it the thread runs unmarked.
pub(crate) fn set_io_flusher() {
    // PR_SET_IO_FLUSHER from <linux/prctl.h>; the libc crate lacks it.
    const PR_SET_IO_FLUSHER: libc::c_int = 57;
    // SAFETY: PR_SET_IO_FLUSHER takes integer arguments only.
    let rc = unsafe { libc::prctl(PR_SET_IO_FLUSHER, 1, 0, 0, 0) };
    if rc < 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "PR_SET_IO_FLUSHER failed");
    }
}
