//! The NBD handshake and request checks that qemu never exercises:
//! malformed and unknown options, bounds, flags, read-only rejections,
//! and shutdown with requests in flight. A raw client speaks the wire
//! protocol; qemu-io confirms the server keeps serving afterwards.

mod nbd_common;

use std::io::Write;
use std::net::Shutdown;
use std::path::Path;
use std::sync::{Arc, Mutex};

use lamina_engine::serve::nbd::{MAX_PAYLOAD, NbdOptions, NbdServer};
use lamina_engine::serve::{BackendError, BlockBackend, RawFile};
use nbd_common::*;

/// Transmission flags of a writable export: HAS_FLAGS, SEND_FLUSH,
/// SEND_FUA, SEND_TRIM, SEND_WRITE_ZEROES and CAN_MULTI_CONN.
const WRITABLE_FLAGS: u16 = 1 | 4 | 8 | 32 | 64 | 256;
/// Of a read-only export: HAS_FLAGS, READ_ONLY, SEND_FLUSH, SEND_FUA and
/// CAN_MULTI_CONN.
const READ_ONLY_FLAGS: u16 = 1 | 2 | 4 | 8 | 256;

/// A raw file backend that records which calls reach it, to tell a
/// zero-range from written zeros and to see FUA flushes.
struct Recording {
    inner: RawFile,
    calls: Mutex<Vec<&'static str>>,
}

impl Recording {
    fn take(&self) -> Vec<&'static str> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }

    fn record(&self, call: &'static str) {
        self.calls.lock().unwrap().push(call);
    }
}

impl BlockBackend for Recording {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), BackendError> {
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), BackendError> {
        self.record("write");
        self.inner.write_at(buf, offset)
    }
    fn flush(&self) -> Result<(), BackendError> {
        self.record("flush");
        self.inner.flush()
    }
    fn discard(&self, offset: u64, len: u64) -> Result<(), BackendError> {
        self.record("discard");
        self.inner.discard(offset, len)
    }
    fn zero_range(&self, offset: u64, len: u64) -> Result<(), BackendError> {
        self.record("zero_range");
        self.inner.zero_range(offset, len)
    }
}

fn raw_backend(dir: &Path, size: u64) -> Arc<RawFile> {
    let image = dir.join("image.raw");
    sparse_file(&image, size);
    Arc::new(RawFile::open(&image, true).unwrap())
}

fn serve_raw(dir: &Path, size: u64) -> Served {
    Served::start(
        raw_backend(dir, size),
        &dir.join("nbd.sock"),
        NbdOptions::default(),
    )
}

/// Requires that a fresh qemu-io client can still write and read.
fn assert_still_serving(served: &Served) {
    qemu_io(
        &served.uri(),
        &["write -P 0x99 1M 64k", "read -P 0x99 1M 64k"],
    );
}

#[test]
fn info_reports_size_and_flags() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = NbdOptions {
        export_name: "disk0".into(),
        description: Some("test disk".into()),
        ..NbdOptions::default()
    };
    let served = Served::start(
        raw_backend(tmp.path(), 8 * MIB),
        &tmp.path().join("s"),
        opts,
    );
    let mut client = RawClient::handshake(&served.socket, 0b11);

    let replies = client.info(OPT_INFO, "disk0", &[1, 2, 3]);
    assert_eq!(replies.last().unwrap().reply, REP_ACK, "{replies:?}");
    assert!(replies.iter().all(|r| r.option == OPT_INFO));
    assert_eq!(export_info(&replies), Some((8 * MIB, WRITABLE_FLAGS)));
    let info = |kind: u16| {
        replies
            .iter()
            .find(|r| r.reply == REP_INFO && r.data[..2] == kind.to_be_bytes())
            .map(|r| r.data[2..].to_vec())
    };
    assert_eq!(info(1).as_deref(), Some(&b"disk0"[..]));
    assert_eq!(info(2).as_deref(), Some(&b"test disk"[..]));
    let mut sizes = Vec::new();
    for value in [1u32, 4096, MAX_PAYLOAD] {
        sizes.extend_from_slice(&value.to_be_bytes());
    }
    assert_eq!(info(3), Some(sizes));

    // INFO leaves the client in option haggling; GO with the default
    // name then enters transmission.
    let replies = client.info(OPT_GO, "", &[]);
    assert_eq!(replies.last().unwrap().reply, REP_ACK);
    let reply = client.request(CMD_READ, 0, 0, 512, &[]);
    assert_eq!(
        reply,
        Reply {
            error: 0,
            data: vec![0; 512]
        }
    );
}

#[test]
fn list_returns_the_export() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = NbdOptions {
        export_name: "disk0".into(),
        ..NbdOptions::default()
    };
    let served = Served::start(raw_backend(tmp.path(), MIB), &tmp.path().join("s"), opts);
    let mut client = RawClient::handshake(&served.socket, 1);

    client.send_option(OPT_LIST, &[]);
    let server = client.read_option_reply();
    assert_eq!(server.reply, REP_SERVER);
    assert_eq!(server.data, [&5u32.to_be_bytes()[..], b"disk0"].concat());
    assert_eq!(client.read_option_reply().reply, REP_ACK);

    client.send_option(OPT_LIST, b"junk");
    assert_eq!(client.read_option_reply().reply, REP_ERR_INVALID);

    client.send_option(OPT_ABORT, &[]);
    assert_eq!(client.read_option_reply().reply, REP_ACK);
    assert!(client.is_closed_by_server());
}

#[test]
fn bad_options_get_error_replies() {
    let tmp = tempfile::tempdir().unwrap();
    let served = serve_raw(tmp.path(), MIB);
    let mut client = RawClient::handshake(&served.socket, 1);

    for (option, data, expected) in [
        (99u32, &b"whatever"[..], REP_ERR_UNSUP),
        (OPT_STRUCTURED_REPLY, &[][..], REP_ERR_UNSUP),
        (OPT_GO, &[0, 0, 0, 9, b'x'][..], REP_ERR_INVALID),
        (OPT_GO, &[0, 0, 0, 0, 0, 2, 0, 1][..], REP_ERR_INVALID),
        (OPT_INFO, &[0, 0][..], REP_ERR_INVALID),
    ] {
        client.send_option(option, data);
        let reply = client.read_option_reply();
        assert_eq!(reply.option, option);
        assert_eq!(reply.reply, expected, "option {option} data {data:?}");
        assert!(!reply.data.is_empty(), "error replies carry a message");
    }
    let replies = client.info(OPT_GO, "no-such-export", &[]);
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].reply, REP_ERR_UNKNOWN);

    // After all that the same connection still negotiates.
    let replies = client.info(OPT_GO, "", &[]);
    assert_eq!(replies.last().unwrap().reply, REP_ACK);
    assert_eq!(client.request(CMD_FLUSH, 0, 0, 0, &[]).error, 0);
}

#[test]
fn export_name_option_enters_transmission() {
    let tmp = tempfile::tempdir().unwrap();
    let served = serve_raw(tmp.path(), 2 * MIB);

    for (client_flags, padding) in [(1u32, 124usize), (3, 0)] {
        let mut client = RawClient::handshake(&served.socket, client_flags);
        client.send_option(OPT_EXPORT_NAME, b"");
        let mut reply = vec![0u8; 10 + padding];
        std::io::Read::read_exact(&mut client.stream, &mut reply).unwrap();
        assert_eq!(u64::from_be_bytes(reply[..8].try_into().unwrap()), 2 * MIB);
        assert_eq!(u16::from_be_bytes([reply[8], reply[9]]), WRITABLE_FLAGS);
        assert!(reply[10..].iter().all(|&b| b == 0));

        let write = client.request(CMD_WRITE, 0, 4096, 3, b"abc");
        assert_eq!(write.error, 0);
        let read = client.request(CMD_READ, 0, 4096, 3, &[]);
        assert_eq!(read.data, b"abc");
    }

    // An unknown name has no error reply in this option: the server hangs
    // up.
    let mut client = RawClient::handshake(&served.socket, 1);
    client.send_option(OPT_EXPORT_NAME, b"other");
    assert!(client.is_closed_by_server());
    assert_still_serving(&served);
}

#[test]
fn garbage_magic_closes_one_client() {
    let tmp = tempfile::tempdir().unwrap();
    let served = serve_raw(tmp.path(), 4 * MIB);
    let (mut bystander, _, _) = RawClient::go(&served.socket);

    let mut client = RawClient::handshake(&served.socket, 1);
    client.send(b"GARBAGE!\0\0\0\x07\0\0\0\0");
    assert!(client.is_closed_by_server());

    assert_still_serving(&served);
    assert_eq!(
        bystander.request(CMD_READ, 0, MIB, 16, &[]).data,
        vec![0x99; 16]
    );
}

#[test]
fn truncated_option_closes_one_client() {
    let tmp = tempfile::tempdir().unwrap();
    let served = serve_raw(tmp.path(), 4 * MIB);

    let mut client = RawClient::handshake(&served.socket, 1);
    let mut message = Vec::new();
    message.extend_from_slice(&OPTION_MAGIC.to_be_bytes());
    message.extend_from_slice(&OPT_GO.to_be_bytes());
    message.extend_from_slice(&100u32.to_be_bytes());
    message.extend_from_slice(&[0; 10]);
    client.send(&message);
    client.stream.shutdown(Shutdown::Write).unwrap();
    assert!(client.is_closed_by_server());

    // Half a header, then hang up.
    let mut client = RawClient::handshake(&served.socket, 1);
    client.send(&OPTION_MAGIC.to_be_bytes()[..5]);
    drop(client);

    // Unknown client flags end the handshake.
    let mut client = RawClient::handshake(&served.socket, 0x80);
    assert!(client.is_closed_by_server());

    // An option too long to buffer ends it as well.
    let mut client = RawClient::handshake(&served.socket, 1);
    let mut header = Vec::new();
    header.extend_from_slice(&OPTION_MAGIC.to_be_bytes());
    header.extend_from_slice(&OPT_GO.to_be_bytes());
    header.extend_from_slice(&(1u32 << 30).to_be_bytes());
    client.send(&header);
    assert!(client.is_closed_by_server());

    assert_still_serving(&served);
}

#[test]
fn bad_requests_get_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let served = serve_raw(tmp.path(), 64 * MIB);
    let (mut client, size, _) = RawClient::go(&served.socket);
    assert_eq!(size, 64 * MIB);

    let cases: &[(u16, u16, u64, u32, u32)] = &[
        (CMD_READ, 0, size - 512, 1024, EINVAL),
        (CMD_READ, 0, u64::MAX - 10, 512, EINVAL),
        (CMD_READ, 0, 0, MAX_PAYLOAD + 1, EINVAL),
        (CMD_TRIM, 0, size, 512, EINVAL),
        (CMD_WRITE_ZEROES, 0, size - 512, 4096, ENOSPC),
        (CMD_WRITE_ZEROES, 0, 0, MAX_PAYLOAD + 1, EINVAL),
        (CMD_BLOCK_STATUS, 0, 0, 512, EINVAL),
        (42, 0, 0, 0, EINVAL),
        (CMD_READ, 1 << 2, 0, 512, EINVAL),
        (CMD_WRITE_ZEROES, FLAG_FAST_ZERO, 0, 512, EINVAL),
        (CMD_TRIM, FLAG_NO_HOLE, 0, 512, EINVAL),
    ];
    for &(command, flags, offset, length, expected) in cases {
        let reply = client.request(command, flags, offset, length, &[]);
        assert_eq!(
            reply.error, expected,
            "command {command} flags {flags} at {offset}+{length}"
        );
    }

    // Writes carry their payload even when rejected; the stream must stay
    // in step.
    let reply = client.request(CMD_WRITE, 0, size - 2, 4, b"wxyz");
    assert_eq!(reply.error, ENOSPC);
    let reply = client.request(CMD_WRITE, FLAG_NO_HOLE, 0, 4, b"wxyz");
    assert_eq!(reply.error, EINVAL);
    let big = vec![0x5au8; MAX_PAYLOAD as usize + 4096];
    let reply = client.request(CMD_WRITE, 0, 0, MAX_PAYLOAD + 4096, &big);
    assert_eq!(reply.error, EINVAL);

    // A payload of exactly the maximum is fine, and nothing above landed.
    let max = vec![0x6bu8; MAX_PAYLOAD as usize];
    assert_eq!(client.request(CMD_WRITE, 0, 0, MAX_PAYLOAD, &max).error, 0);
    let reply = client.request(CMD_READ, 0, u64::from(MAX_PAYLOAD) - 4, 8, &[]);
    assert_eq!(reply.data, [0x6b, 0x6b, 0x6b, 0x6b, 0, 0, 0, 0]);
    let reply = client.request(CMD_READ, 0, size - 4, 4, &[]);
    assert_eq!(reply.data, [0; 4]);
    let reply = client.request(CMD_READ, 0, 0, 0, &[]);
    assert_eq!(
        reply,
        Reply {
            error: 0,
            data: Vec::new()
        }
    );
}

#[test]
fn read_only_export_rejects_every_write() {
    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("image.raw");
    std::fs::write(&image, vec![0x66u8; 1 << 20]).unwrap();
    let backend = Arc::new(RawFile::open(&image, false).unwrap());
    let opts = NbdOptions {
        read_only: true,
        ..NbdOptions::default()
    };
    let served = Served::start(backend, &tmp.path().join("s"), opts);
    let (mut client, size, flags) = RawClient::go(&served.socket);
    assert_eq!(size, MIB);
    assert_eq!(flags, READ_ONLY_FLAGS);

    assert_eq!(client.request(CMD_WRITE, 0, 0, 4, b"nope").error, EPERM);
    assert_eq!(
        client.request(CMD_WRITE, FLAG_FUA, 0, 4, b"nope").error,
        EPERM
    );
    assert_eq!(client.request(CMD_TRIM, 0, 0, 4096, &[]).error, EPERM);
    assert_eq!(
        client.request(CMD_WRITE_ZEROES, 0, 0, 4096, &[]).error,
        EPERM
    );
    assert_eq!(client.request(CMD_FLUSH, 0, 0, 0, &[]).error, 0);
    let reply = client.request(CMD_READ, 0, 0, 4, &[]);
    assert_eq!(reply.data, [0x66; 4]);
    drop(client);

    let stats = served.stop().unwrap();
    assert_eq!(stats.failed_requests, 4, "{stats:?}");
    let content = std::fs::read(&image).unwrap();
    assert!(content.iter().all(|&b| b == 0x66), "file unchanged");
}

#[test]
fn no_hole_and_fua_dispatch() {
    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("image.raw");
    sparse_file(&image, 8 * MIB);
    let backend = Arc::new(Recording {
        inner: RawFile::open(&image, true).unwrap(),
        calls: Mutex::new(Vec::new()),
    });
    let served = Served::start(
        backend.clone(),
        &tmp.path().join("s"),
        NbdOptions::default(),
    );
    let (mut client, _, _) = RawClient::go(&served.socket);
    let data = vec![0xa5u8; 3 << 20];
    assert_eq!(client.request(CMD_WRITE, 0, 0, 3 << 20, &data).error, 0);
    assert_eq!(backend.take(), ["write"]);

    let reply = client.request(CMD_WRITE_ZEROES, 0, 0, 1 << 20, &[]);
    assert_eq!(reply.error, 0);
    assert_eq!(backend.take(), ["zero_range"]);

    let reply = client.request(CMD_WRITE_ZEROES, FLAG_NO_HOLE, MIB, 1 << 20, &[]);
    assert_eq!(reply.error, 0);
    assert_eq!(backend.take(), ["write"]);

    let reply = client.request(
        CMD_WRITE_ZEROES,
        FLAG_NO_HOLE | FLAG_FUA,
        2 * MIB,
        4096,
        &[],
    );
    assert_eq!(reply.error, 0);
    assert_eq!(backend.take(), ["write", "flush"]);

    assert_eq!(client.request(CMD_WRITE, FLAG_FUA, 0, 2, b"hi").error, 0);
    assert_eq!(backend.take(), ["write", "flush"]);
    assert_eq!(client.request(CMD_TRIM, 0, 4 * MIB, 1 << 20, &[]).error, 0);
    assert_eq!(backend.take(), ["discard"]);
    assert_eq!(client.request(CMD_FLUSH, 0, 0, 0, &[]).error, 0);
    assert_eq!(backend.take(), ["flush"]);
    drop(client);
    served.stop().unwrap();

    // Both kinds of zeroing read back as zeros, checked by qemu-io on the
    // file itself.
    let file = image.display().to_string();
    qemu_io(
        &file,
        &[
            "read -P 0x68 0 1",
            "read -P 0 2 2M",
            "read -P 0xa5 2101248 946176",
        ],
    );
}

#[test]
fn shutdown_finishes_requests_in_flight() {
    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("image.raw");
    sparse_file(&image, 4 * MIB);
    let backend = Arc::new(RawFile::open(&image, true).unwrap());
    let socket = tmp.path().join("nbd.sock");
    let server = NbdServer::bind(backend, &socket, NbdOptions::default()).unwrap();
    let handle = server.shutdown_handle();
    let thread = std::thread::spawn(move || server.run());

    let (mut client, _, _) = RawClient::go(&socket);
    let mut waiting = RawClient::handshake(&socket, 1);

    // Both requests are in the server's receive queue before the
    // shutdown starts, so both must still get a reply.
    let write = client.send_request(CMD_WRITE, 0, 0, 5, b"final");
    let flush = client.send_request(CMD_FLUSH, 0, 0, 0, &[]);
    client.stream.flush().unwrap();
    handle.shutdown();
    // Replies may come in either order.
    let mut replies: Vec<(u64, u32)> = (0..2)
        .map(|_| client.read_any_reply(|_| 0))
        .map(|(cookie, reply)| (cookie, reply.error))
        .collect();
    replies.sort();
    assert_eq!(replies, [(write, 0), (flush, 0)]);

    let stats = thread.join().unwrap().expect("clean shutdown");
    assert_eq!(stats.failed_requests, 0);
    assert!(!socket.exists(), "socket file removed");
    assert!(client.is_closed_by_server());
    assert!(waiting.is_closed_by_server());
    assert_eq!(&std::fs::read(&image).unwrap()[..5], b"final");
}

#[test]
fn bind_replaces_only_stale_socket() {
    let tmp = tempfile::tempdir().unwrap();
    let socket = tmp.path().join("nbd.sock");
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(socket.exists(), "a dead listener leaves its file");

    let backend = raw_backend(tmp.path(), 4 * MIB);
    let served = Served::start(backend.clone(), &socket, NbdOptions::default());
    let second = NbdServer::bind(backend.clone(), &socket, NbdOptions::default());
    assert!(second.is_err(), "a live server keeps its socket");
    assert_still_serving(&served);
    drop(served);
    assert!(!socket.exists());

    let plain = tmp.path().join("plain");
    std::fs::write(&plain, b"data").unwrap();
    assert!(NbdServer::bind(backend, &plain, NbdOptions::default()).is_err());
    assert_eq!(
        std::fs::read(&plain).unwrap(),
        b"data",
        "not a socket: left alone"
    );
}

#[test]
fn shutdown_disconnects_stalled_client() {
    let tmp = tempfile::tempdir().unwrap();
    let backend = raw_backend(tmp.path(), 64 * MIB);
    let socket = tmp.path().join("nbd.sock");
    let server = NbdServer::bind(backend, &socket, NbdOptions::default()).unwrap();
    let handle = server.shutdown_handle();
    let thread = std::thread::spawn(move || server.run());

    // 64 reads of 1 MiB whose replies are never read: the server blocks
    // writing the replies into the full socket buffer.
    let (mut stalled, _, _) = RawClient::go(&socket);
    for i in 0..64 {
        stalled.send_request(CMD_READ, 0, i * MIB, 1 << 20, &[]);
    }
    handle.shutdown();

    let stats = thread.join().unwrap().expect("shutdown completes");
    assert_eq!(stats.connections, 1);
    assert!(!socket.exists(), "socket file removed");
}

#[test]
fn pipelined_requests_get_matching_replies() {
    let tmp = tempfile::tempdir().unwrap();
    let served = serve_raw(tmp.path(), 64 * MIB);
    let (mut client, _, _) = RawClient::go(&served.socket);

    // 32 writes of distinct patterns sent back to back, then 32 reads of
    // the same ranges: each reply must carry its own request's data.
    let mut writes = Vec::new();
    for i in 0..32u8 {
        let data = vec![i + 1; 256 << 10];
        let offset = u64::from(i) * MIB;
        writes.push(client.send_request(CMD_WRITE, 0, offset, 256 << 10, &data));
    }
    let mut written: Vec<u64> = (0..32)
        .map(|_| {
            let (cookie, reply) = client.read_any_reply(|_| 0);
            assert_eq!(reply.error, 0, "write {cookie}");
            cookie
        })
        .collect();
    written.sort();
    assert_eq!(written, writes);

    let mut reads = std::collections::HashMap::new();
    for i in 0..32u8 {
        let cookie = client.send_request(CMD_READ, 0, u64::from(i) * MIB, 256 << 10, &[]);
        reads.insert(cookie, i + 1);
    }
    for _ in 0..32 {
        let (cookie, reply) = client.read_any_reply(|_| 256 << 10);
        let expected = reads.remove(&cookie).expect("reply to a pending read");
        assert_eq!(reply.error, 0);
        assert!(reply.data.iter().all(|&b| b == expected), "read {cookie}");
    }
    assert!(reads.is_empty());
}
