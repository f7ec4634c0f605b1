//! One FUSE worker: reads requests from its device file, serves them from
//! the backend and writes the replies back to the same file.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use zerocopy::{FromBytes, Immutable, IntoBytes};

use super::abi::{self, opcode};
use super::{MAX_IO, Shared};
use crate::error::HasKind;

/// Attribute cache time reported to the kernel. The size only changes on
/// grow, which invalidates the cache explicitly.
const ATTR_VALID_SECS: u64 = 3600;
const IN_HEADER: usize = size_of::<abi::InHeader>();
const OUT_HEADER: usize = size_of::<abi::OutHeader>();
/// Room for the request header and the WRITE arguments in front of a
/// payload of `MAX_IO` bytes; the kernel rejects reads into smaller buffers.
const REQUEST_BUFFER: usize = MAX_IO + 4096;

/// How long a worker waits for the next request before it gives the
/// pages of its buffers back to the kernel.
const IDLE_RELEASE_MS: u16 = 1000;
/// Requests larger than this mark the buffers as worth releasing.
const RELEASE_THRESHOLD: usize = 64 * 1024;

pub(super) struct Worker {
    fd: OwnedFd,
    shared: Arc<Shared>,
    request: Vec<u8>,
    reply: Vec<u8>,
    /// Whether a large request touched pages of the buffers since they
    /// were last released.
    touched: bool,
}

/// The reply a handler produces.
enum Outcome {
    /// Nothing: the kernel expects no reply.
    NoReply,
    /// An error reply with this errno.
    Error(i32),
    /// A reply whose body is in `reply[OUT_HEADER..OUT_HEADER + len]`.
    Reply(usize),
}

impl Worker {
    pub(super) fn new(fd: OwnedFd, shared: Arc<Shared>) -> Worker {
        Worker {
            fd,
            shared,
            // Zeroed allocations of this size are mapped lazily, so unused
            // capacity costs no resident memory.
            request: vec![0; REQUEST_BUFFER.max(abi::MIN_READ_BUFFER)],
            reply: vec![0; OUT_HEADER + MAX_IO],
            touched: false,
        }
    }

    /// Serves requests until the connection goes away.
    pub(super) fn run(mut self) {
        loop {
            if self.touched && self.idle() {
                release_pages(&mut self.request);
                release_pages(&mut self.reply);
                self.touched = false;
            }
            let len = match nix::unistd::read(&self.fd, &mut self.request) {
                Ok(len) => len,
                // ENOENT: the request was interrupted before we read it.
                Err(Errno::EINTR | Errno::EAGAIN | Errno::ENOENT) => continue,
                // ENODEV: the filesystem was unmounted or the connection aborted.
                Err(Errno::ENODEV) => return,
                Err(e) => {
                    tracing::error!(error = %e, "reading from /dev/fuse failed; worker stops");
                    return;
                }
            };
            if len > RELEASE_THRESHOLD {
                self.touched = true;
            }
            self.handle(len);
        }
    }

    /// Waits up to `IDLE_RELEASE_MS` for a request; true when none came.
    fn idle(&self) -> bool {
        let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
        matches!(poll(&mut fds, PollTimeout::from(IDLE_RELEASE_MS)), Ok(0))
    }

    fn handle(&mut self, len: usize) {
        let Ok((header, _)) = abi::InHeader::read_from_prefix(&self.request[..len]) else {
            tracing::warn!(len, "short FUSE request ignored");
            return;
        };
        let end = (header.len as usize).min(len);
        let request = std::mem::take(&mut self.request);
        let args = request.get(IN_HEADER..end).unwrap_or(&[]);
        let outcome = self.dispatch(&header, args);
        if let Outcome::Error(errno) = outcome {
            tracing::debug!(
                opcode = header.opcode,
                errno,
                "FUSE request answered with an error"
            );
        }
        self.send(header.unique, outcome);
        self.request = request;
    }

    fn dispatch(&mut self, header: &abi::InHeader, args: &[u8]) -> Outcome {
        match header.opcode {
            opcode::INIT => self.init(args),
            opcode::GETATTR | opcode::SETATTR => self.getattr(),
            opcode::OPEN => self.open(args),
            opcode::READ => self.read(args),
            opcode::WRITE => self.write(args),
            opcode::FSYNC | opcode::SYNCFS => self.fsync(),
            opcode::FALLOCATE => self.fallocate(args),
            opcode::STATFS => self.statfs(),
            opcode::FLUSH | opcode::RELEASE | opcode::DESTROY => Outcome::Reply(0),
            opcode::LOOKUP => Outcome::Error(libc::ENOENT),
            // The kernel expects no reply to these.
            opcode::FORGET | opcode::BATCH_FORGET | opcode::INTERRUPT => Outcome::NoReply,
            _ => Outcome::Error(libc::ENOSYS),
        }
    }

    fn init(&mut self, args: &[u8]) -> Outcome {
        let Ok((init, _)) = abi::InitIn::read_from_prefix(args) else {
            return Outcome::Error(libc::EINVAL);
        };
        // FUSE_MAX_PAGES needs protocol 7.28 and FOPEN_PARALLEL_DIRECT_WRITES
        // needs 7.36, so older kernels are rejected.
        if init.major != abi::KERNEL_VERSION || init.minor < 36 {
            tracing::error!(
                major = init.major,
                minor = init.minor,
                "unsupported FUSE protocol version"
            );
            return Outcome::Error(libc::EPROTO);
        }
        let wanted = abi::init_flags::ASYNC_READ
            | abi::init_flags::BIG_WRITES
            | abi::init_flags::ASYNC_DIO
            | abi::init_flags::PARALLEL_DIROPS
            | abi::init_flags::MAX_PAGES;
        let reply = abi::InitOut {
            major: abi::KERNEL_VERSION,
            minor: init.minor.min(abi::KERNEL_MINOR_VERSION),
            max_readahead: init.max_readahead,
            flags: init.flags & wanted,
            // Enough background requests for a queue depth of 64 direct
            // I/Os from the loop device; congestion starts at 3/4 of that.
            max_background: 64,
            congestion_threshold: 48,
            max_write: u32::try_from(MAX_IO).unwrap_or(u32::MAX),
            time_gran: 1,
            max_pages: u16::try_from(MAX_IO / 4096).unwrap_or(u16::MAX),
            ..Default::default()
        };
        tracing::debug!(
            minor = init.minor,
            flags = format_args!("{:#x}", init.flags),
            "FUSE INIT"
        );
        self.body(&reply)
    }

    fn getattr(&mut self) -> Outcome {
        let size = self.shared.backend.size();
        let mode = if self.shared.read_only { 0o400 } else { 0o600 };
        let time = self.shared.mount_time;
        let reply = abi::AttrOut {
            attr_valid: ATTR_VALID_SECS,
            attr: abi::Attr {
                ino: abi::ROOT_ID,
                size,
                blocks: size.div_ceil(512),
                atime: time,
                mtime: time,
                ctime: time,
                mode: libc::S_IFREG | mode,
                nlink: 1,
                blksize: 4096,
                ..Default::default()
            },
            ..Default::default()
        };
        self.body(&reply)
    }

    fn open(&mut self, args: &[u8]) -> Outcome {
        let Ok((open, _)) = abi::OpenIn::read_from_prefix(args) else {
            return Outcome::Error(libc::EINVAL);
        };
        let access = open.flags & u32::try_from(libc::O_ACCMODE).unwrap_or(3);
        if self.shared.read_only && access != 0 {
            return Outcome::Error(libc::EROFS);
        }
        // Direct I/O: the loop device above already bypasses the page
        // cache, and a second cache here would only hold stale copies.
        let reply = abi::OpenOut {
            fh: 0,
            open_flags: abi::FOPEN_DIRECT_IO | abi::FOPEN_PARALLEL_DIRECT_WRITES,
            padding: 0,
        };
        self.body(&reply)
    }

    fn read(&mut self, args: &[u8]) -> Outcome {
        let Ok((read, _)) = abi::ReadIn::read_from_prefix(args) else {
            return Outcome::Error(libc::EINVAL);
        };
        let size = self.shared.backend.size();
        let wanted = (read.size as usize).min(MAX_IO);
        let available = size.saturating_sub(read.offset);
        let len = usize::try_from(available).map_or(wanted, |a| a.min(wanted));
        if len == 0 {
            return Outcome::Reply(0);
        }
        let buf = &mut self.reply[OUT_HEADER..OUT_HEADER + len];
        match self.shared.backend.read_at(buf, read.offset) {
            Ok(()) => Outcome::Reply(len),
            Err(e) => self.failed(&e),
        }
    }

    fn write(&mut self, args: &[u8]) -> Outcome {
        let Ok((write, payload)) = abi::WriteIn::read_from_prefix(args) else {
            return Outcome::Error(libc::EINVAL);
        };
        if self.shared.read_only {
            return Outcome::Error(libc::EROFS);
        }
        let Some(data) = payload.get(..write.size as usize) else {
            return Outcome::Error(libc::EINVAL);
        };
        let end = write.offset.checked_add(u64::from(write.size));
        if end.is_none_or(|end| end > self.shared.backend.size()) {
            return Outcome::Error(libc::ENOSPC);
        }
        match self.shared.backend.write_at(data, write.offset) {
            Ok(()) => {
                let reply = abi::WriteOut {
                    size: write.size,
                    padding: 0,
                };
                self.body(&reply)
            }
            Err(e) => self.failed(&e),
        }
    }

    fn fsync(&mut self) -> Outcome {
        if self.shared.read_only {
            return Outcome::Reply(0);
        }
        match self.shared.backend.flush() {
            Ok(()) => Outcome::Reply(0),
            Err(e) => self.failed(&e),
        }
    }

    /// Serves the loop device's discard (punch hole) and write-zeroes
    /// (zero range or punch hole) requests; both keep the size.
    fn fallocate(&mut self, args: &[u8]) -> Outcome {
        let Ok((fallocate, _)) = abi::FallocateIn::read_from_prefix(args) else {
            return Outcome::Error(libc::EINVAL);
        };
        if self.shared.read_only {
            return Outcome::Error(libc::EROFS);
        }
        let end = fallocate.offset.checked_add(fallocate.length);
        if end.is_none_or(|end| end > self.shared.backend.size()) {
            return Outcome::Error(libc::EINVAL);
        }
        let mode = i32::try_from(fallocate.mode).unwrap_or(-1);
        let keep_size = mode & libc::FALLOC_FL_KEEP_SIZE != 0;
        let backend = &self.shared.backend;
        let result = match mode & !libc::FALLOC_FL_KEEP_SIZE {
            // Plain allocation inside the file: clusters are allocated on
            // write, so there is nothing to reserve.
            0 => Ok(()),
            libc::FALLOC_FL_PUNCH_HOLE if keep_size => {
                backend.discard(fallocate.offset, fallocate.length)
            }
            libc::FALLOC_FL_ZERO_RANGE => backend.zero_range(fallocate.offset, fallocate.length),
            _ => return Outcome::Error(libc::EOPNOTSUPP),
        };
        match result {
            Ok(()) => Outcome::Reply(0),
            Err(e) => self.failed(&e),
        }
    }

    fn statfs(&mut self) -> Outcome {
        let reply = abi::StatfsOut {
            blocks: self.shared.backend.size() / 4096,
            bsize: 4096,
            frsize: 4096,
            namelen: 255,
            ..Default::default()
        };
        self.body(&reply)
    }

    fn body<T: IntoBytes + Immutable>(&mut self, value: &T) -> Outcome {
        let bytes = value.as_bytes();
        self.reply[OUT_HEADER..OUT_HEADER + bytes.len()].copy_from_slice(bytes);
        Outcome::Reply(bytes.len())
    }

    fn failed<E: HasKind + std::error::Error>(&self, error: &E) -> Outcome {
        let count = self.shared.failed.fetch_add(1, Ordering::Relaxed);
        // Log the first failures and then every 1000th, so that a dead
        // backend does not flood the log.
        if count < 10 || count.is_multiple_of(1000) {
            tracing::warn!(error = %super::super::error::error_chain(error), failed = count + 1, "FUSE request failed");
        }
        Outcome::Error(error.kind().errno())
    }

    fn send(&mut self, unique: u64, outcome: Outcome) {
        let (error, body_len) = match outcome {
            Outcome::NoReply => return,
            Outcome::Error(errno) => (-errno, 0),
            Outcome::Reply(len) => (0, len),
        };
        if body_len > RELEASE_THRESHOLD {
            self.touched = true;
        }
        let header = abi::OutHeader {
            len: u32::try_from(OUT_HEADER + body_len).unwrap_or(u32::MAX),
            error,
            unique,
        };
        self.reply[..OUT_HEADER].copy_from_slice(header.as_bytes());
        let result = nix::unistd::write(&self.fd, &self.reply[..OUT_HEADER + body_len]);
        match result {
            // ENOENT: the request was interrupted or its caller is gone.
            Ok(_) | Err(Errno::ENOENT) => {}
            Err(e) => tracing::warn!(error = %e, unique, "writing FUSE reply failed"),
        }
    }
}

/// Gives the whole pages of an idle buffer back to the kernel
/// (`MADV_DONTNEED`), so that an idle server stays small after a burst of
/// 1 MiB requests. The pages read as zeros when touched again.
fn release_pages(buffer: &mut [u8]) {
    const PAGE: usize = 4096;
    let start = buffer.as_mut_ptr() as usize;
    let first = start.next_multiple_of(PAGE);
    let end = (start + buffer.len()) / PAGE * PAGE;
    if end <= first {
        return;
    }
    // SAFETY: [first, end) lies inside `buffer`, which this worker borrows
    // mutably, so no other reference sees the contents change to zeros.
    let rc = unsafe { libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_DONTNEED) };
    if rc < 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "madvise failed");
    }
}
