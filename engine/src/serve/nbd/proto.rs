//! NBD wire constants and message layouts, from the NBD protocol
//! specification (`doc/proto.md` of the NetworkBlockDevice/nbd project).
//! Every integer on the wire is big-endian.

use zerocopy::big_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// `NBDMAGIC`, the first 8 bytes the server sends.
pub const INIT_MAGIC: u64 = 0x4e42_444d_4147_4943;
/// `IHAVEOPT`: the newstyle greeting and the start of every option.
pub const OPTION_MAGIC: u64 = 0x4948_4156_454f_5054;
/// Start of every option reply.
pub const OPTION_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
/// Start of every transmission request.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// Start of every simple reply.
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;

/// Handshake flag: the server speaks fixed newstyle.
pub const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
/// Handshake flag: the server can omit the 124 zero bytes after
/// `NBD_OPT_EXPORT_NAME`.
pub const FLAG_NO_ZEROES: u16 = 1 << 1;
/// Client flag: the client speaks fixed newstyle.
pub const FLAG_C_FIXED_NEWSTYLE: u32 = 1 << 0;
/// Client flag: the client does not want the 124 zero bytes.
pub const FLAG_C_NO_ZEROES: u32 = 1 << 1;

/// Transmission flags (16 bits, sent with the export size).
pub const FLAG_HAS_FLAGS: u16 = 1 << 0;
/// The export rejects writes.
pub const FLAG_READ_ONLY: u16 = 1 << 1;
/// The server handles `NBD_CMD_FLUSH`.
pub const FLAG_SEND_FLUSH: u16 = 1 << 2;
/// The server honours `NBD_CMD_FLAG_FUA`.
pub const FLAG_SEND_FUA: u16 = 1 << 3;
/// The server handles `NBD_CMD_TRIM`.
pub const FLAG_SEND_TRIM: u16 = 1 << 5;
/// The server handles `NBD_CMD_WRITE_ZEROES` and `NBD_CMD_FLAG_NO_HOLE`.
pub const FLAG_SEND_WRITE_ZEROES: u16 = 1 << 6;
/// Flush and FUA on one connection cover writes of all connections.
pub const FLAG_CAN_MULTI_CONN: u16 = 1 << 8;

/// Option: choose an export and enter transmission, with no error path.
pub const OPT_EXPORT_NAME: u32 = 1;
/// Option: end the negotiation.
pub const OPT_ABORT: u32 = 2;
/// Option: list the exports.
pub const OPT_LIST: u32 = 3;
/// Option: upgrade to TLS (not supported here).
pub const OPT_STARTTLS: u32 = 5;
/// Option: describe an export.
pub const OPT_INFO: u32 = 6;
/// Option: describe an export and enter transmission.
pub const OPT_GO: u32 = 7;

/// Option reply: success, or the end of a list.
pub const REP_ACK: u32 = 1;
/// Option reply: one export of a list.
pub const REP_SERVER: u32 = 2;
/// Option reply: one piece of export information.
pub const REP_INFO: u32 = 3;
/// Error replies have bit 31 set.
const REP_ERROR: u32 = 1 << 31;
/// Option reply: the option is not supported.
pub const REP_ERR_UNSUP: u32 = REP_ERROR + 1;
/// Option reply: the option data is malformed.
pub const REP_ERR_INVALID: u32 = REP_ERROR + 3;
/// Option reply: no export has this name.
pub const REP_ERR_UNKNOWN: u32 = REP_ERROR + 6;
/// Option reply: the server is shutting down.
pub const REP_ERR_SHUTDOWN: u32 = REP_ERROR + 7;

/// `NBD_REP_INFO` type: export size and transmission flags.
pub const INFO_EXPORT: u16 = 0;
/// `NBD_REP_INFO` type: canonical export name.
pub const INFO_NAME: u16 = 1;
/// `NBD_REP_INFO` type: human-readable description.
pub const INFO_DESCRIPTION: u16 = 2;
/// `NBD_REP_INFO` type: minimum, preferred and maximum block size.
pub const INFO_BLOCK_SIZE: u16 = 3;

/// Command: read.
pub const CMD_READ: u16 = 0;
/// Command: write; the payload follows the request.
pub const CMD_WRITE: u16 = 1;
/// Command: disconnect; no reply.
pub const CMD_DISC: u16 = 2;
/// Command: make completed writes durable.
pub const CMD_FLUSH: u16 = 3;
/// Command: discard a range (a hint).
pub const CMD_TRIM: u16 = 4;
/// Command: make a range read as zeros.
pub const CMD_WRITE_ZEROES: u16 = 6;

/// Command flag: force unit access, reply only once the data is durable.
pub const CMD_FLAG_FUA: u16 = 1 << 0;
/// Command flag of `NBD_CMD_WRITE_ZEROES`: allocate, do not punch holes.
pub const CMD_FLAG_NO_HOLE: u16 = 1 << 1;

/// Error values of replies. They equal the Linux errno values, but the
/// protocol defines them, so they are spelled out here.
pub const EPERM: u32 = 1;
/// Input/output error.
pub const EIO: u32 = 5;
/// Invalid argument.
pub const EINVAL: u32 = 22;
/// No space left on device.
pub const ENOSPC: u32 = 28;

/// Maximum length of an export name or description, in bytes.
pub const MAX_STRING: usize = 4096;

/// The server greeting of the fixed newstyle handshake (18 bytes).
#[derive(Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct Greeting {
    /// [`INIT_MAGIC`].
    pub init_magic: U64,
    /// [`OPTION_MAGIC`].
    pub option_magic: U64,
    /// Handshake flags.
    pub flags: U16,
}
const _: () = assert!(size_of::<Greeting>() == 18);

/// The header of a client option (16 bytes); the data follows.
#[derive(Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct OptionHeader {
    /// [`OPTION_MAGIC`].
    pub magic: U64,
    /// The option, such as [`OPT_GO`].
    pub option: U32,
    /// Length of the option data in bytes.
    pub length: U32,
}
const _: () = assert!(size_of::<OptionHeader>() == 16);

/// The header of an option reply (20 bytes); the data follows.
#[derive(Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct OptionReplyHeader {
    /// [`OPTION_REPLY_MAGIC`].
    pub magic: U64,
    /// The option this replies to.
    pub option: U32,
    /// The reply type, such as [`REP_ACK`].
    pub reply: U32,
    /// Length of the reply data in bytes.
    pub length: U32,
}
const _: () = assert!(size_of::<OptionReplyHeader>() == 20);

/// A transmission request (28 bytes); a write's payload follows.
#[derive(Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct Request {
    /// [`REQUEST_MAGIC`].
    pub magic: U32,
    /// Command flags, such as [`CMD_FLAG_FUA`].
    pub flags: U16,
    /// The command, such as [`CMD_READ`].
    pub command: U16,
    /// An opaque value that the reply carries back.
    pub cookie: U64,
    /// Byte offset into the export.
    pub offset: U64,
    /// Length in bytes.
    pub length: U32,
}
const _: () = assert!(size_of::<Request>() == 28);

/// A simple reply (16 bytes); a successful read's data follows.
#[derive(Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct SimpleReply {
    /// [`SIMPLE_REPLY_MAGIC`].
    pub magic: U32,
    /// 0, or an error value such as [`EIO`].
    pub error: U32,
    /// The cookie of the request.
    pub cookie: U64,
}
const _: () = assert!(size_of::<SimpleReply>() == 16);

/// Names a command for logs.
pub fn command_name(command: u16) -> &'static str {
    match command {
        CMD_READ => "read",
        CMD_WRITE => "write",
        CMD_DISC => "disconnect",
        CMD_FLUSH => "flush",
        CMD_TRIM => "trim",
        CMD_WRITE_ZEROES => "write zeroes",
        _ => "unknown command",
    }
}
