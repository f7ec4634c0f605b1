//! One client connection: the fixed newstyle handshake, then the
//! transmission phase until the client disconnects.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;

use zerocopy::big_endian::{U16, U32, U64};
use zerocopy::{FromBytes, IntoBytes};

use super::proto::{self, Greeting, OptionHeader, OptionReplyHeader};
use super::transmission::Transmission;
use super::{Export, Shared};

/// Largest option data the server reads; longer options end the
/// connection. `NBD_OPT_GO` with a 4096-byte name and every information
/// request fits easily.
const MAX_OPTION_DATA: u32 = 64 * 1024;

/// The reason a connection ended before the client disconnected cleanly.
/// These go to the log only.
#[derive(Debug, thiserror::Error)]
pub(super) enum SessionError {
    /// Reading or writing the socket failed, or the client hung up in the
    /// middle of a message.
    #[error("socket I/O failed")]
    Io(#[from] io::Error),
    /// The client set flags the server does not know.
    #[error("unknown client flags {flags:#x}")]
    BadClientFlags {
        /// The flags sent.
        flags: u32,
    },
    /// An option did not start with `IHAVEOPT`.
    #[error("invalid option magic {magic:#018x}")]
    BadOptionMagic {
        /// The magic sent.
        magic: u64,
    },
    /// An option carried more data than the server accepts.
    #[error("option {option} carries {length} bytes, more than the maximum {MAX_OPTION_DATA}")]
    OptionTooLong {
        /// The option.
        option: u32,
        /// Its data length.
        length: u32,
    },
    /// `NBD_OPT_EXPORT_NAME` named an export this server does not have;
    /// the protocol gives that option no error reply.
    #[error("unknown export {name:?} in NBD_OPT_EXPORT_NAME")]
    UnknownExport {
        /// The requested name.
        name: String,
    },
    /// A request did not start with the request magic.
    #[error("invalid request magic {magic:#010x}")]
    BadRequestMagic {
        /// The magic sent.
        magic: u32,
    },
}

/// The outcome of the handshake.
enum Negotiated {
    /// The client chose the export; transmission starts.
    Transmit,
    /// The client aborted or hung up cleanly.
    Closed,
}

/// Runs one connection to its end.
pub(super) fn run(stream: &mut UnixStream, export: &Export, shared: &Shared) {
    let mut handshake = Handshake {
        stream,
        export,
        shared,
        no_zeroes: false,
    };
    let result = match handshake.negotiate() {
        Ok(Negotiated::Transmit) => Transmission::new(stream, export, shared).run(),
        Ok(Negotiated::Closed) => Ok(()),
        Err(e) => Err(e),
    };
    if let Err(error) = result {
        tracing::warn!(error = %super::error_chain(&error), "NBD connection closed on error");
    }
}

struct Handshake<'a> {
    stream: &'a mut UnixStream,
    export: &'a Export,
    shared: &'a Shared,
    no_zeroes: bool,
}

impl Handshake<'_> {
    fn negotiate(&mut self) -> Result<Negotiated, SessionError> {
        let greeting = Greeting {
            init_magic: U64::new(proto::INIT_MAGIC),
            option_magic: U64::new(proto::OPTION_MAGIC),
            flags: U16::new(proto::FLAG_FIXED_NEWSTYLE | proto::FLAG_NO_ZEROES),
        };
        self.stream.write_all(greeting.as_bytes())?;

        let mut flags = [0u8; 4];
        if !read_or_eof(self.stream, &mut flags)? {
            return Ok(Negotiated::Closed);
        }
        let flags = u32::from_be_bytes(flags);
        let known = proto::FLAG_C_FIXED_NEWSTYLE | proto::FLAG_C_NO_ZEROES;
        if flags & !known != 0 {
            return Err(SessionError::BadClientFlags { flags });
        }
        self.no_zeroes = flags & proto::FLAG_C_NO_ZEROES != 0;

        loop {
            let Some((option, data)) = self.read_option()? else {
                return Ok(Negotiated::Closed);
            };
            if let Some(outcome) = self.handle_option(option, &data)? {
                return Ok(outcome);
            }
        }
    }

    /// Reads one option; `None` when the client hung up between options.
    fn read_option(&mut self) -> Result<Option<(u32, Vec<u8>)>, SessionError> {
        let mut raw = [0u8; size_of::<OptionHeader>()];
        if !read_or_eof(self.stream, &mut raw)? {
            return Ok(None);
        }
        let header = OptionHeader::read_from_bytes(&raw).map_err(|_| invalid_data())?;
        let magic = header.magic.get();
        if magic != proto::OPTION_MAGIC {
            return Err(SessionError::BadOptionMagic { magic });
        }
        let (option, length) = (header.option.get(), header.length.get());
        if length > MAX_OPTION_DATA {
            return Err(SessionError::OptionTooLong { option, length });
        }
        let mut data = vec![0u8; length as usize];
        self.stream.read_exact(&mut data)?;
        Ok(Some((option, data)))
    }

    /// Replies to one option. Returns `Some` when the handshake is over.
    fn handle_option(
        &mut self,
        option: u32,
        data: &[u8],
    ) -> Result<Option<Negotiated>, SessionError> {
        if self.shared.stopping.load(Ordering::Acquire) && option != proto::OPT_ABORT {
            self.reply_error(
                option,
                proto::REP_ERR_SHUTDOWN,
                "the server is shutting down",
            )?;
            return Ok(None);
        }
        match option {
            proto::OPT_EXPORT_NAME => self.export_name(data).map(Some),
            proto::OPT_ABORT => {
                // The client may already have closed its end; the reply is
                // a courtesy.
                let _ = self.reply(option, proto::REP_ACK, &[]);
                Ok(Some(Negotiated::Closed))
            }
            proto::OPT_LIST => {
                self.list(data)?;
                Ok(None)
            }
            proto::OPT_INFO | proto::OPT_GO => self.info(option, data),
            proto::OPT_STARTTLS => {
                let message = "TLS is not supported; connect without TLS";
                self.reply_error(option, proto::REP_ERR_UNSUP, message)?;
                Ok(None)
            }
            _ => {
                let message = format!("option {option} is not supported");
                self.reply_error(option, proto::REP_ERR_UNSUP, &message)?;
                Ok(None)
            }
        }
    }

    fn export_name(&mut self, data: &[u8]) -> Result<Negotiated, SessionError> {
        let name = String::from_utf8_lossy(data);
        if !self.export.answers_to(&name) {
            return Err(SessionError::UnknownExport {
                name: name.into_owned(),
            });
        }
        let mut reply = Vec::with_capacity(10 + 124);
        reply.extend_from_slice(&self.export.size().to_be_bytes());
        reply.extend_from_slice(&self.export.transmission_flags().to_be_bytes());
        if !self.no_zeroes {
            reply.resize(reply.len() + 124, 0);
        }
        self.stream.write_all(&reply)?;
        self.log_chosen("NBD_OPT_EXPORT_NAME");
        Ok(Negotiated::Transmit)
    }

    fn list(&mut self, data: &[u8]) -> Result<(), SessionError> {
        if !data.is_empty() {
            let message = "NBD_OPT_LIST takes no data";
            return self.reply_error(proto::OPT_LIST, proto::REP_ERR_INVALID, message);
        }
        let name = self.export.name.as_bytes();
        let mut server = Vec::with_capacity(4 + name.len());
        server.extend_from_slice(&u32_len(name.len()).to_be_bytes());
        server.extend_from_slice(name);
        if let Some(description) = &self.export.description {
            server.extend_from_slice(description.as_bytes());
        }
        self.reply(proto::OPT_LIST, proto::REP_SERVER, &server)?;
        self.reply(proto::OPT_LIST, proto::REP_ACK, &[])
    }

    /// Replies to `NBD_OPT_INFO` and `NBD_OPT_GO`, which share their format.
    fn info(&mut self, option: u32, data: &[u8]) -> Result<Option<Negotiated>, SessionError> {
        let Some(request) = InfoRequest::parse(data) else {
            let message = "malformed NBD_OPT_INFO or NBD_OPT_GO data";
            self.reply_error(option, proto::REP_ERR_INVALID, message)?;
            return Ok(None);
        };
        let name = String::from_utf8_lossy(request.name);
        if !self.export.answers_to(&name) {
            let message = format!(
                "no export named {name:?}; this server exports {:?}",
                self.export.name
            );
            self.reply_error(option, proto::REP_ERR_UNKNOWN, &message)?;
            return Ok(None);
        }

        let mut export = Vec::with_capacity(12);
        export.extend_from_slice(&proto::INFO_EXPORT.to_be_bytes());
        export.extend_from_slice(&self.export.size().to_be_bytes());
        export.extend_from_slice(&self.export.transmission_flags().to_be_bytes());
        self.reply(option, proto::REP_INFO, &export)?;

        // Sent even when not requested, which the protocol allows: the
        // maximum payload is smaller than the default of 0xffffffff.
        let mut sizes = Vec::with_capacity(14);
        sizes.extend_from_slice(&proto::INFO_BLOCK_SIZE.to_be_bytes());
        sizes.extend_from_slice(&1u32.to_be_bytes());
        sizes.extend_from_slice(&super::PREFERRED_BLOCK.to_be_bytes());
        sizes.extend_from_slice(&super::MAX_PAYLOAD.to_be_bytes());
        self.reply(option, proto::REP_INFO, &sizes)?;

        if request.wants(proto::INFO_NAME) {
            let text = self.export.name.clone();
            self.reply_string(option, proto::INFO_NAME, &text)?;
        }
        if let Some(text) = self.export.description.clone()
            && request.wants(proto::INFO_DESCRIPTION)
        {
            self.reply_string(option, proto::INFO_DESCRIPTION, &text)?;
        }
        self.reply(option, proto::REP_ACK, &[])?;

        if option == proto::OPT_GO {
            self.log_chosen("NBD_OPT_GO");
            return Ok(Some(Negotiated::Transmit));
        }
        Ok(None)
    }

    fn log_chosen(&self, how: &str) {
        tracing::debug!(
            how,
            size = self.export.size(),
            flags = format_args!("{:#x}", self.export.transmission_flags()),
            "NBD client entered transmission"
        );
    }

    fn reply_string(&mut self, option: u32, info: u16, text: &str) -> Result<(), SessionError> {
        let mut data = Vec::with_capacity(2 + text.len());
        data.extend_from_slice(&info.to_be_bytes());
        data.extend_from_slice(text.as_bytes());
        self.reply(option, proto::REP_INFO, &data)
    }

    fn reply_error(&mut self, option: u32, reply: u32, message: &str) -> Result<(), SessionError> {
        tracing::debug!(
            option,
            reply = format_args!("{reply:#x}"),
            message,
            "NBD option rejected"
        );
        self.reply(option, reply, message.as_bytes())
    }

    fn reply(&mut self, option: u32, reply: u32, data: &[u8]) -> Result<(), SessionError> {
        let header = OptionReplyHeader {
            magic: U64::new(proto::OPTION_REPLY_MAGIC),
            option: U32::new(option),
            reply: U32::new(reply),
            length: U32::new(u32_len(data.len())),
        };
        let mut message = Vec::with_capacity(size_of::<OptionReplyHeader>() + data.len());
        message.extend_from_slice(header.as_bytes());
        message.extend_from_slice(data);
        self.stream.write_all(&message)?;
        Ok(())
    }
}

/// The data of `NBD_OPT_INFO` and `NBD_OPT_GO`: a 32-bit name length, the
/// name, a 16-bit count and that many 16-bit information requests.
struct InfoRequest<'a> {
    name: &'a [u8],
    requests: &'a [u8],
}

impl<'a> InfoRequest<'a> {
    fn parse(data: &'a [u8]) -> Option<InfoRequest<'a>> {
        let (name_len, rest) = data.split_first_chunk::<4>()?;
        let name_len = usize::try_from(u32::from_be_bytes(*name_len)).ok()?;
        if name_len > proto::MAX_STRING || name_len > rest.len() {
            return None;
        }
        let (name, rest) = rest.split_at(name_len);
        let (count, requests) = rest.split_first_chunk::<2>()?;
        let count = usize::from(u16::from_be_bytes(*count));
        if requests.len() != count * 2 {
            return None;
        }
        Some(InfoRequest { name, requests })
    }

    fn wants(&self, info: u16) -> bool {
        self.requests
            .chunks_exact(2)
            .any(|pair| u16::from_be_bytes([pair[0], pair[1]]) == info)
    }
}

/// Fills `buf`; `false` when the peer closed before sending a byte.
pub(super) fn read_or_eof(stream: &mut UnixStream, buf: &mut [u8]) -> io::Result<bool> {
    let mut filled = 0;
    while filled < buf.len() {
        match stream.read(&mut buf[filled..]) {
            Ok(0) if filled == 0 => return Ok(false),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

fn invalid_data() -> io::Error {
    io::ErrorKind::InvalidData.into()
}

/// Converts a length that the caller bounded (names and messages are at
/// most 4096 bytes, option data at most 64 KiB) to the wire's 32 bits.
fn u32_len(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}
