//! Helpers of the NBD tests: an in-process server with a drop guard,
//! qemu-io and qemu-img runners, and a minimal raw-protocol client for
//! the cases qemu cannot produce (malformed handshakes, rejected
//! requests).

#![allow(dead_code)] // Each test binary uses a different subset.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::thread::JoinHandle;

use lamina_engine::serve::BlockBackend;
use lamina_engine::serve::nbd::{NbdError, NbdOptions, NbdServer, NbdStats, ShutdownHandle};

pub const MIB: u64 = 1 << 20;
pub const GIB: u64 = 1 << 30;

pub const OPTION_MAGIC: u64 = 0x4948_4156_454f_5054;
pub const REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
pub const OPT_EXPORT_NAME: u32 = 1;
pub const OPT_ABORT: u32 = 2;
pub const OPT_LIST: u32 = 3;
pub const OPT_INFO: u32 = 6;
pub const OPT_GO: u32 = 7;
pub const OPT_STRUCTURED_REPLY: u32 = 8;
pub const REP_ACK: u32 = 1;
pub const REP_SERVER: u32 = 2;
pub const REP_INFO: u32 = 3;
pub const REP_ERR_UNSUP: u32 = (1 << 31) + 1;
pub const REP_ERR_INVALID: u32 = (1 << 31) + 3;
pub const REP_ERR_UNKNOWN: u32 = (1 << 31) + 6;
pub const REP_ERR_SHUTDOWN: u32 = (1 << 31) + 7;

pub const CMD_READ: u16 = 0;
pub const CMD_WRITE: u16 = 1;
pub const CMD_DISC: u16 = 2;
pub const CMD_FLUSH: u16 = 3;
pub const CMD_TRIM: u16 = 4;
pub const CMD_WRITE_ZEROES: u16 = 6;
pub const CMD_BLOCK_STATUS: u16 = 7;
pub const FLAG_FUA: u16 = 1;
pub const FLAG_NO_HOLE: u16 = 2;
pub const FLAG_FAST_ZERO: u16 = 16;

pub const EPERM: u32 = 1;
pub const EINVAL: u32 = 22;
pub const ENOSPC: u32 = 28;

pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A server running in a thread; dropping it shuts the server down, so a
/// failing test leaves no thread serving and no socket file.
pub struct Served {
    pub socket: PathBuf,
    handle: ShutdownHandle,
    thread: Option<JoinHandle<Result<NbdStats, NbdError>>>,
}

impl Served {
    pub fn start(backend: Arc<dyn BlockBackend>, socket: &Path, opts: NbdOptions) -> Served {
        init_logging();
        let server = NbdServer::bind(backend, socket, opts).expect("bind NBD socket");
        let handle = server.shutdown_handle();
        let thread = std::thread::spawn(move || server.run());
        Served {
            socket: socket.to_path_buf(),
            handle,
            thread: Some(thread),
        }
    }

    /// Returns the URI of the default export for qemu tools.
    pub fn uri(&self) -> String {
        format!("nbd+unix:///?socket={}", self.socket.display())
    }

    /// Shuts the server down and returns what `run` returned.
    pub fn stop(mut self) -> Result<NbdStats, NbdError> {
        self.handle.shutdown();
        let thread = self.thread.take().expect("server thread");
        thread.join().expect("server thread panicked")
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.handle.shutdown();
            let _ = thread.join();
        }
    }
}

/// Runs a program and returns its output without judging it.
pub fn run(program: &str, args: &[String]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} did not start: {e}"))
}

fn describe(output: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Runs `qemu-io -f raw` with one `-c` per command on `target` (a file or
/// an NBD URI).
pub fn qemu_io_output(target: &str, read_only: bool, commands: &[&str]) -> Output {
    let mut args = vec!["-f".to_string(), "raw".to_string()];
    if read_only {
        args.push("-r".to_string());
    }
    for command in commands {
        args.push("-c".to_string());
        args.push((*command).to_string());
    }
    args.push(target.to_string());
    run("qemu-io", &args)
}

/// Runs qemu-io and requires every command to succeed, including the
/// pattern checks of `read -P`.
pub fn qemu_io(target: &str, commands: &[&str]) -> String {
    let output = qemu_io_output(target, false, commands);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "qemu-io {commands:?} on {target} failed: {}",
        describe(&output)
    );
    for failure in ["Pattern verification failed", "failed:", "error"] {
        assert!(
            !stdout.contains(failure),
            "qemu-io {commands:?} on {target} reported {failure:?}:\n{stdout}"
        );
    }
    stdout
}

/// Runs `qemu-img compare` of an NBD export against a raw reference file
/// and requires them to be identical.
pub fn qemu_img_compare(uri: &str, reference: &Path) {
    let args = [
        "compare",
        "-f",
        "raw",
        "-F",
        "raw",
        uri,
        &reference.display().to_string(),
    ]
    .map(String::from);
    let output = run("qemu-img", &args);
    assert!(
        output.status.success(),
        "qemu-img compare {uri} {} failed: {}",
        reference.display(),
        describe(&output)
    );
}

/// Creates a sparse file of `size` bytes.
pub fn sparse_file(path: &Path, size: u64) {
    let file = std::fs::File::create(path).expect("create file");
    file.set_len(size).expect("set file length");
}

/// A raw-protocol client for the cases qemu does not send.
pub struct RawClient {
    pub stream: UnixStream,
    next_cookie: u64,
}

/// One option reply.
#[derive(Debug)]
pub struct OptionReply {
    pub option: u32,
    pub reply: u32,
    pub data: Vec<u8>,
}

/// The result of a transmission request.
#[derive(Debug, PartialEq, Eq)]
pub struct Reply {
    pub error: u32,
    pub data: Vec<u8>,
}

impl RawClient {
    /// Connects and reads the server greeting, checking its magic numbers
    /// and handshake flags.
    pub fn connect(socket: &Path) -> RawClient {
        let mut stream = UnixStream::connect(socket).expect("connect");
        let mut greeting = [0u8; 18];
        stream.read_exact(&mut greeting).expect("read greeting");
        assert_eq!(&greeting[..8], b"NBDMAGIC");
        assert_eq!(&greeting[8..16], b"IHAVEOPT");
        let flags = u16::from_be_bytes([greeting[16], greeting[17]]);
        assert_eq!(flags, 0b11, "fixed newstyle and no zeroes");
        RawClient {
            stream,
            next_cookie: 1,
        }
    }

    /// Connects and sends the client flags.
    pub fn handshake(socket: &Path, client_flags: u32) -> RawClient {
        let mut client = RawClient::connect(socket);
        client.send(&client_flags.to_be_bytes());
        client
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send to server");
    }

    pub fn send_option(&mut self, option: u32, data: &[u8]) {
        let mut message = Vec::new();
        message.extend_from_slice(&OPTION_MAGIC.to_be_bytes());
        message.extend_from_slice(&option.to_be_bytes());
        message.extend_from_slice(&u32::try_from(data.len()).unwrap().to_be_bytes());
        message.extend_from_slice(data);
        self.send(&message);
    }

    pub fn read_option_reply(&mut self) -> OptionReply {
        let mut header = [0u8; 20];
        self.stream
            .read_exact(&mut header)
            .expect("read option reply");
        let magic = u64::from_be_bytes(header[..8].try_into().unwrap());
        assert_eq!(magic, REPLY_MAGIC, "option reply magic");
        let option = u32::from_be_bytes(header[8..12].try_into().unwrap());
        let reply = u32::from_be_bytes(header[12..16].try_into().unwrap());
        let length = u32::from_be_bytes(header[16..20].try_into().unwrap());
        let mut data = vec![0u8; length as usize];
        self.stream.read_exact(&mut data).expect("read reply data");
        OptionReply {
            option,
            reply,
            data,
        }
    }

    /// Sends `NBD_OPT_INFO` or `NBD_OPT_GO` and collects the replies up to
    /// the final one.
    pub fn info(&mut self, option: u32, name: &str, requests: &[u16]) -> Vec<OptionReply> {
        self.send_option(option, &info_data(name, requests));
        let mut replies = Vec::new();
        loop {
            let reply = self.read_option_reply();
            let last = reply.reply != REP_INFO;
            replies.push(reply);
            if last {
                return replies;
            }
        }
    }

    /// Negotiates the default export with `NBD_OPT_GO` and returns its size
    /// and transmission flags.
    pub fn go(socket: &Path) -> (RawClient, u64, u16) {
        let mut client = RawClient::handshake(socket, 0b11);
        let replies = client.info(OPT_GO, "", &[]);
        assert_eq!(replies.last().unwrap().reply, REP_ACK, "{replies:?}");
        let (size, flags) = export_info(&replies).expect("NBD_INFO_EXPORT");
        (client, size, flags)
    }

    /// Sends one request with an optional write payload.
    pub fn send_request(
        &mut self,
        command: u16,
        flags: u16,
        offset: u64,
        length: u32,
        payload: &[u8],
    ) -> u64 {
        let cookie = self.next_cookie;
        self.next_cookie += 1;
        let mut message = Vec::with_capacity(28 + payload.len());
        message.extend_from_slice(&0x2560_9513u32.to_be_bytes());
        message.extend_from_slice(&flags.to_be_bytes());
        message.extend_from_slice(&command.to_be_bytes());
        message.extend_from_slice(&cookie.to_be_bytes());
        message.extend_from_slice(&offset.to_be_bytes());
        message.extend_from_slice(&length.to_be_bytes());
        message.extend_from_slice(payload);
        self.send(&message);
        cookie
    }

    /// Reads a simple reply for `cookie`; a successful read carries
    /// `data_len` bytes.
    pub fn read_reply(&mut self, cookie: u64, data_len: usize) -> Reply {
        let mut header = [0u8; 16];
        self.stream.read_exact(&mut header).expect("read reply");
        assert_eq!(
            u32::from_be_bytes(header[..4].try_into().unwrap()),
            0x6744_6698
        );
        let error = u32::from_be_bytes(header[4..8].try_into().unwrap());
        assert_eq!(u64::from_be_bytes(header[8..].try_into().unwrap()), cookie);
        let mut data = Vec::new();
        if error == 0 {
            data.resize(data_len, 0);
            self.stream.read_exact(&mut data).expect("read data");
        }
        Reply { error, data }
    }

    /// Reads the next simple reply, whichever request it belongs to;
    /// `data_len` gives the data length of a successful reply by cookie.
    pub fn read_any_reply(&mut self, data_len: impl Fn(u64) -> usize) -> (u64, Reply) {
        let mut header = [0u8; 16];
        self.stream.read_exact(&mut header).expect("read reply");
        let magic = u32::from_be_bytes(header[..4].try_into().unwrap());
        assert_eq!(magic, 0x6744_6698, "simple reply magic");
        let error = u32::from_be_bytes(header[4..8].try_into().unwrap());
        let cookie = u64::from_be_bytes(header[8..].try_into().unwrap());
        let mut data = Vec::new();
        if error == 0 {
            data.resize(data_len(cookie), 0);
            self.stream.read_exact(&mut data).expect("read data");
        }
        (cookie, Reply { error, data })
    }

    /// Sends a request and waits for its reply.
    pub fn request(
        &mut self,
        command: u16,
        flags: u16,
        offset: u64,
        length: u32,
        payload: &[u8],
    ) -> Reply {
        let cookie = self.send_request(command, flags, offset, length, payload);
        let data_len = if command == CMD_READ {
            length as usize
        } else {
            0
        };
        self.read_reply(cookie, data_len)
    }

    /// Returns true when the server closed the connection: a read gets
    /// end of file (or a reset).
    pub fn is_closed_by_server(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(self.stream.read(&mut byte), Ok(0) | Err(_))
    }
}

pub fn info_data(name: &str, requests: &[u16]) -> Vec<u8> {
    let mut data = Vec::new();
    data.extend_from_slice(&u32::try_from(name.len()).unwrap().to_be_bytes());
    data.extend_from_slice(name.as_bytes());
    data.extend_from_slice(&u16::try_from(requests.len()).unwrap().to_be_bytes());
    for request in requests {
        data.extend_from_slice(&request.to_be_bytes());
    }
    data
}

/// Finds `NBD_INFO_EXPORT` among option replies: (size, flags).
pub fn export_info(replies: &[OptionReply]) -> Option<(u64, u16)> {
    replies
        .iter()
        .filter(|r| r.reply == REP_INFO && r.data.len() == 12 && r.data[..2] == [0, 0])
        .map(|r| {
            let size = u64::from_be_bytes(r.data[2..10].try_into().unwrap());
            let flags = u16::from_be_bytes(r.data[10..12].try_into().unwrap());
            (size, flags)
        })
        .next()
}
