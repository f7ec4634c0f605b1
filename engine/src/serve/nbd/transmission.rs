//! The transmission phase: requests in, simple replies out, one request at
//! a time per connection.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;

use zerocopy::big_endian::{U32, U64};
use zerocopy::{FromBytes, IntoBytes};

use super::proto::{self, Request, SimpleReply};
use super::session::{SessionError, read_or_eof};
use super::{Export, MAX_PAYLOAD, Shared};
use crate::error::ErrorKind;
use crate::serve::BackendError;

const HEADER: usize = size_of::<SimpleReply>();

/// Largest zero buffer used to write zeros for `NBD_CMD_FLAG_NO_HOLE`.
const ZERO_CHUNK: usize = 1 << 20;

/// A reusable request buffer keeps at most this many bytes between
/// requests, so that an idle connection does not hold a 32 MiB buffer.
const KEEP_BUFFER: usize = 1 << 20;

/// The result of one request: `Ok` with the bytes of read data to send
/// (0 for commands without data), or an NBD error value.
type Outcome = Result<usize, u32>;

/// The step after a request.
enum Next {
    /// Send the reply and read the next request.
    Reply(Outcome),
    /// `NBD_CMD_DISC`: no reply, close the connection.
    Disconnect,
}

/// The transmission phase of one connection.
pub(super) struct Transmission<'a> {
    stream: &'a mut UnixStream,
    export: &'a Export,
    shared: &'a Shared,
    /// The export size announced in the handshake; requests are checked
    /// against it.
    size: u64,
    /// Reply header room followed by read data or write payload.
    buffer: Vec<u8>,
    zeros: Vec<u8>,
    requests: u64,
    failures: u64,
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
            size: export.size(),
            buffer: Vec::new(),
            zeros: Vec::new(),
            requests: 0,
            failures: 0,
        }
    }

    /// Serves requests until the client disconnects.
    pub(super) fn run(mut self) -> Result<(), SessionError> {
        let result = self.serve();
        self.shared
            .requests
            .fetch_add(self.requests, Ordering::Relaxed);
        self.shared
            .failures
            .fetch_add(self.failures, Ordering::Relaxed);
        tracing::debug!(
            requests = self.requests,
            failed = self.failures,
            "NBD transmission ended"
        );
        result
    }

    fn serve(&mut self) -> Result<(), SessionError> {
        loop {
            let mut raw = [0u8; size_of::<Request>()];
            if !read_or_eof(self.stream, &mut raw)? {
                // A hard disconnect by the client, or the server shutting
                // down its reading side: every request read so far has its
                // reply.
                return Ok(());
            }
            let request = Request::read_from_bytes(&raw)
                .map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
            let magic = request.magic.get();
            if magic != proto::REQUEST_MAGIC {
                return Err(SessionError::BadRequestMagic { magic });
            }

            self.requests += 1;
            let outcome = match self.handle(&request)? {
                Next::Reply(outcome) => outcome,
                Next::Disconnect => return Ok(()),
            };
            if let Err(error) = outcome {
                self.note_failure(&request, error);
            }
            self.send_reply(request.cookie.get(), outcome)?;
        }
    }

    fn handle(&mut self, request: &Request) -> Result<Next, SessionError> {
        let flags = request.flags.get();
        let (offset, length) = (request.offset.get(), request.length.get());
        let outcome = match request.command.get() {
            proto::CMD_READ => self.read(flags, offset, length),
            // The payload is consumed before any check, so that a rejected
            // write leaves the stream at the next request.
            proto::CMD_WRITE => self.write(flags, offset, length)?,
            proto::CMD_DISC => return Ok(Next::Disconnect),
            proto::CMD_FLUSH => self.flush(flags),
            proto::CMD_TRIM => self.trim(flags, offset, length),
            proto::CMD_WRITE_ZEROES => self.write_zeroes(flags, offset, length),
            _ => Err(proto::EINVAL),
        };
        Ok(Next::Reply(outcome))
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

    fn write(&mut self, flags: u16, offset: u64, length: u32) -> Result<Outcome, SessionError> {
        if length > MAX_PAYLOAD {
            let drained = io::copy(
                &mut (&mut *self.stream).take(u64::from(length)),
                &mut io::sink(),
            )?;
            if drained < u64::from(length) {
                return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
            }
            return Ok(Err(proto::EINVAL));
        }
        let len = length as usize;
        self.buffer.resize(len, 0);
        self.stream.read_exact(&mut self.buffer)?;

        Ok(self.write_payload(flags, offset, length))
    }

    fn write_payload(&mut self, flags: u16, offset: u64, length: u32) -> Outcome {
        check_flags(flags, 0)?;
        self.check_writable()?;
        self.check_range(offset, length, proto::ENOSPC)?;
        if length > 0 {
            let backend = &self.export.backend;
            backend
                .write_at(&self.buffer, offset)
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
                // A trim is a hint; a backend that cannot punch holes
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

    fn note_failure(&mut self, request: &Request, error: u32) {
        self.failures += 1;
        let command = proto::command_name(request.command.get());
        let (offset, length) = (request.offset.get(), request.length.get());
        // The first failure of a connection is worth a warning; the rest
        // are counted and logged at debug level.
        if self.failures == 1 {
            tracing::warn!(command, offset, length, error, "NBD request failed");
        } else {
            tracing::debug!(command, offset, length, error, "NBD request failed");
        }
    }

    fn send_reply(&mut self, cookie: u64, outcome: Outcome) -> Result<(), SessionError> {
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
            self.stream.write_all(&self.buffer[..HEADER + data_len])?;
        } else {
            self.stream.write_all(header.as_bytes())?;
        }
        if self.buffer.capacity() > KEEP_BUFFER {
            self.buffer = Vec::new();
        }
        Ok(())
    }
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
