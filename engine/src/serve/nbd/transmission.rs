//! The transmission phase: one reader thread takes requests (and write
//! payloads) off the socket, and a few workers handle them and send simple
//! replies, so that a slow request does not hold up the ones behind it.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex, MutexGuard};

use zerocopy::big_endian::{U32, U64};
use zerocopy::{FromBytes, IntoBytes};

use super::proto::{self, Request, SimpleReply};
use super::session::{SessionError, read_or_eof};
use super::{Export, MAX_PAYLOAD, Shared};
use crate::error::ErrorKind;
use crate::serve::BackendError;

const HEADER: usize = size_of::<SimpleReply>();

/// Requests of one connection handled at once. Replies may leave in a
/// different order than the requests came, which the protocol allows.
// NOTE: each in-flight write holds its payload, so one connection can hold
// up to (WORKERS + 1) * 32 MiB at once; there is no byte budget.
pub(super) const WORKERS: usize = 4;

/// Largest zero buffer used to write zeros for `NBD_CMD_FLAG_NO_HOLE`.
const ZERO_CHUNK: usize = 1 << 20;

/// A worker's read buffer keeps at most this many bytes between
/// requests, so that an idle connection does not hold 32 MiB buffers.
const KEEP_BUFFER: usize = 1 << 20;

/// The result of one request: `Ok` with the bytes of read data to send
/// (0 for commands without data), or an NBD error value.
type Outcome = Result<usize, u32>;

/// One request on its way from the reader to a worker.
struct Job {
    command: u16,
    flags: u16,
    cookie: u64,
    offset: u64,
    length: u32,
    /// The payload of a write.
    payload: Vec<u8>,
    /// The outcome when the reader decided it already: an oversized
    /// write whose payload was read and dropped.
    decided: Option<Outcome>,
}

/// Request counters of one connection.
#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    failures: AtomicU64,
}

/// The transmission phase of one connection.
pub(super) struct Transmission<'a> {
    stream: &'a mut UnixStream,
    export: &'a Export,
    shared: &'a Shared,
}

impl<'a> Transmission<'a> {
    pub(super) fn new(
        stream: &'a mut UnixStream,
        export: &'a Export,
        shared: &'a Shared,
    ) -> Transmission<'a> {
        Transmission {
            stream,
            export,
            shared,
        }
    }

    /// Serves requests until the client disconnects, then waits until
    /// every request read so far has its reply.
    pub(super) fn run(self) -> Result<(), SessionError> {
        let writer = Mutex::new(self.stream.try_clone()?);
        let counters = Counters::default();
        // The size announced in the handshake; requests are checked
        // against it.
        let size = self.export.size();

        let (sender, receiver) = sync_channel::<Job>(0);
        // Only the workers own the receiver, so that the reader's `send`
        // fails instead of blocking once every worker has stopped.
        let receiver = Arc::new(Mutex::new(receiver));
        let result = std::thread::scope(|scope| {
            // Moved in, so that every return drops it and the workers stop
            // once they have sent their last reply.
            let sender = sender;
            for index in 0..WORKERS {
                let mut worker = Worker {
                    export: self.export,
                    size,
                    writer: &writer,
                    counters: &counters,
                    buffer: Vec::new(),
                    zeros: Vec::new(),
                };
                let receiver = receiver.clone();
                std::thread::Builder::new()
                    .name(format!("nbd-worker-{index}"))
                    .spawn_scoped(scope, move || worker.run(&receiver))?;
            }
            drop(receiver);
            read_requests(self.stream, &sender, &counters)
        });

        let requests = counters.requests.load(Ordering::Relaxed);
        let failures = counters.failures.load(Ordering::Relaxed);
        self.shared.requests.fetch_add(requests, Ordering::Relaxed);
        self.shared.failures.fetch_add(failures, Ordering::Relaxed);
        tracing::debug!(requests, failed = failures, "NBD transmission ended");
        result
    }
}

/// Reads requests and hands them to the workers until the client sends
/// `NBD_CMD_DISC` or the stream ends.
fn read_requests(
    stream: &mut UnixStream,
    sender: &SyncSender<Job>,
    counters: &Counters,
) -> Result<(), SessionError> {
    loop {
        let mut raw = [0u8; size_of::<Request>()];
        if !read_or_eof(stream, &mut raw)? {
            // A hard disconnect by the client, or the server shutting down
            // its reading side. Requests read so far still get replies.
            return Ok(());
        }
        let request = Request::read_from_bytes(&raw)
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
        let magic = request.magic.get();
        if magic != proto::REQUEST_MAGIC {
            return Err(SessionError::BadRequestMagic { magic });
        }
        counters.requests.fetch_add(1, Ordering::Relaxed);

        let mut job = Job {
            command: request.command.get(),
            flags: request.flags.get(),
            cookie: request.cookie.get(),
            offset: request.offset.get(),
            length: request.length.get(),
            payload: Vec::new(),
            decided: None,
        };
        match job.command {
            proto::CMD_DISC => return Ok(()),
            // The payload is consumed before any check, so that a rejected
            // write leaves the stream at the next request.
            proto::CMD_WRITE => read_payload(stream, &mut job)?,
            _ => {}
        }
        if sender.send(job).is_err() {
            // Every worker has stopped because sending a reply failed.
            return Ok(());
        }
    }
}

fn read_payload(stream: &mut UnixStream, job: &mut Job) -> Result<(), SessionError> {
    let length = u64::from(job.length);
    if job.length > MAX_PAYLOAD {
        let drained = io::copy(&mut (&mut *stream).take(length), &mut io::sink())?;
        if drained < length {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
        }
        job.decided = Some(Err(proto::EINVAL));
        return Ok(());
    }
    job.payload.resize(job.length as usize, 0);
    stream.read_exact(&mut job.payload)?;
    Ok(())
}

/// Handles requests of one connection and sends their replies.
struct Worker<'a> {
    export: &'a Export,
    size: u64,
    writer: &'a Mutex<UnixStream>,
    counters: &'a Counters,
    /// Reply header room followed by read data.
    buffer: Vec<u8>,
    zeros: Vec<u8>,
}

impl Worker<'_> {
    fn run(&mut self, receiver: &Mutex<Receiver<Job>>) {
        loop {
            // Only one idle worker waits in `recv`; the others wait for
            // the lock.
            let job = match lock(receiver).recv() {
                Ok(job) => job,
                Err(_) => return,
            };
            let outcome = match job.decided {
                Some(outcome) => outcome,
                None => self.handle(&job),
            };
            if let Err(error) = outcome {
                self.note_failure(&job, error);
            }
            if let Err(error) = self.send_reply(job.cookie, outcome) {
                tracing::debug!(%error, "sending an NBD reply failed, closing the connection");
                // Ends the reader too, so that the connection closes.
                let _ = lock(self.writer).shutdown(Shutdown::Both);
                return;
            }
        }
    }

    fn handle(&mut self, job: &Job) -> Outcome {
        let (flags, offset, length) = (job.flags, job.offset, job.length);
        match job.command {
            proto::CMD_READ => self.read(flags, offset, length),
            proto::CMD_WRITE => self.write(flags, offset, &job.payload),
            proto::CMD_FLUSH => self.flush(flags),
            proto::CMD_TRIM => self.trim(flags, offset, length),
            proto::CMD_WRITE_ZEROES => self.write_zeroes(flags, offset, length),
            _ => Err(proto::EINVAL),
        }
    }

    fn read(&mut self, flags: u16, offset: u64, length: u32) -> Outcome {
        check_flags(flags, 0)?;
        check_payload(length)?;
        self.check_range(offset, length, proto::EINVAL)?;
        let len = length as usize;
        self.buffer.resize(HEADER + len, 0);
        if len > 0 {
            let backend = &self.export.backend;
            backend
                .read_at(&mut self.buffer[HEADER..], offset)
                .map_err(|e| errno_of(&e))?;
        }
        Ok(len)
    }

    fn write(&mut self, flags: u16, offset: u64, payload: &[u8]) -> Outcome {
        check_flags(flags, 0)?;
        self.check_writable()?;
        // The reader bounded the payload by `MAX_PAYLOAD`.
        let length = u32::try_from(payload.len()).map_err(|_| proto::EINVAL)?;
        self.check_range(offset, length, proto::ENOSPC)?;
        if length > 0 {
            let backend = &self.export.backend;
            backend
                .write_at(payload, offset)
                .map_err(|e| errno_of(&e))?;
        }
        self.flush_if_fua(flags)?;
        Ok(0)
    }

    fn flush(&mut self, flags: u16) -> Outcome {
        check_flags(flags, 0)?;
        if self.export.read_only {
            return Ok(0);
        }
        self.export.backend.flush().map_err(|e| errno_of(&e))?;
        Ok(0)
    }

    fn trim(&mut self, flags: u16, offset: u64, length: u32) -> Outcome {
        check_flags(flags, 0)?;
        self.check_writable()?;
        self.check_range(offset, length, proto::EINVAL)?;
        if length > 0 {
            match self.export.backend.discard(offset, u64::from(length)) {
                Ok(()) => {}
                // A trim is a hint. A backend that cannot punch holes
                // keeps the data, which the protocol allows.
                Err(e) if e.kind == ErrorKind::Unsupported => {}
                Err(e) => return Err(errno_of(&e)),
            }
        }
        self.flush_if_fua(flags)?;
        Ok(0)
    }

    fn write_zeroes(&mut self, flags: u16, offset: u64, length: u32) -> Outcome {
        check_flags(flags, proto::CMD_FLAG_NO_HOLE)?;
        check_payload(length)?;
        self.check_writable()?;
        self.check_range(offset, length, proto::ENOSPC)?;
        if length > 0 {
            let len = u64::from(length);
            if flags & proto::CMD_FLAG_NO_HOLE != 0 {
                self.write_zero_data(offset, len)?;
            } else {
                match self.export.backend.zero_range(offset, len) {
                    Ok(()) => {}
                    Err(e) if e.kind == ErrorKind::Unsupported => {
                        self.write_zero_data(offset, len)?;
                    }
                    Err(e) => return Err(errno_of(&e)),
                }
            }
        }
        self.flush_if_fua(flags)?;
        Ok(0)
    }

    /// Writes zeros as data, so that the range stays allocated.
    fn write_zero_data(&mut self, offset: u64, len: u64) -> Result<(), u32> {
        let chunk = usize::try_from(len).map_or(ZERO_CHUNK, |len| len.min(ZERO_CHUNK));
        if self.zeros.len() < chunk {
            self.zeros.resize(chunk, 0);
        }
        let mut done = 0u64;
        while done < len {
            let step = usize::try_from(len - done).map_or(chunk, |left| left.min(chunk));
            self.export
                .backend
                .write_at(&self.zeros[..step], offset + done)
                .map_err(|e| errno_of(&e))?;
            done += step as u64;
        }
        Ok(())
    }

    fn flush_if_fua(&self, flags: u16) -> Result<(), u32> {
        if flags & proto::CMD_FLAG_FUA != 0 {
            self.export.backend.flush().map_err(|e| errno_of(&e))?;
        }
        Ok(())
    }

    fn check_writable(&self) -> Result<(), u32> {
        if self.export.read_only {
            return Err(proto::EPERM);
        }
        Ok(())
    }

    /// Rejects a range that does not lie inside the export with `error`.
    /// The protocol requests `ENOSPC` for writes and `EINVAL` otherwise.
    fn check_range(&self, offset: u64, length: u32, error: u32) -> Result<(), u32> {
        match offset.checked_add(u64::from(length)) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(error),
        }
    }

    fn note_failure(&self, job: &Job, error: u32) {
        let earlier = self.counters.failures.fetch_add(1, Ordering::Relaxed);
        let command = proto::command_name(job.command);
        let (offset, length) = (job.offset, job.length);
        // The first failure of a connection is worth a warning. The rest
        // are counted and logged at debug level.
        if earlier == 0 {
            tracing::warn!(command, offset, length, error, "NBD request failed");
        } else {
            tracing::debug!(command, offset, length, error, "NBD request failed");
        }
    }

    fn send_reply(&mut self, cookie: u64, outcome: Outcome) -> io::Result<()> {
        let (error, data_len) = match outcome {
            Ok(len) => (0, len),
            // A failed read sends no data, as the protocol requires for
            // simple replies.
            Err(error) => (error, 0),
        };
        let header = SimpleReply {
            magic: U32::new(proto::SIMPLE_REPLY_MAGIC),
            error: U32::new(error),
            cookie: U64::new(cookie),
        };
        if data_len > 0 {
            self.buffer[..HEADER].copy_from_slice(header.as_bytes());
            lock(self.writer).write_all(&self.buffer[..HEADER + data_len])?;
        } else {
            lock(self.writer).write_all(header.as_bytes())?;
        }
        if self.buffer.capacity() > KEEP_BUFFER {
            self.buffer = Vec::new();
        }
        Ok(())
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Rejects command flags other than FUA (valid on every command) and
/// `allowed`.
fn check_flags(flags: u16, allowed: u16) -> Result<(), u32> {
    if flags & !(proto::CMD_FLAG_FUA | allowed) != 0 {
        return Err(proto::EINVAL);
    }
    Ok(())
}

/// Rejects lengths above the advertised maximum block size.
fn check_payload(length: u32) -> Result<(), u32> {
    if length > MAX_PAYLOAD {
        return Err(proto::EINVAL);
    }
    Ok(())
}

/// Maps a backend failure to an NBD error value. System errors found in
/// the chain of causes decide first, because the error kind has no
/// "no space" kind.
fn errno_of(error: &BackendError) -> u32 {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = cause {
        if let Some(io_error) = current.downcast_ref::<io::Error>() {
            match io_error.raw_os_error() {
                // The protocol requests EDQUOT and EFBIG as ENOSPC.
                Some(libc::ENOSPC | libc::EDQUOT | libc::EFBIG) => return proto::ENOSPC,
                Some(libc::EPERM | libc::EROFS | libc::EACCES) => return proto::EPERM,
                _ => {}
            }
        }
        cause = current.source();
    }
    match error.kind {
        ErrorKind::InvalidArgument => proto::EINVAL,
        _ => proto::EIO,
    }
}
