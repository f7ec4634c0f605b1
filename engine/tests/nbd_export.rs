//! The NBD export checked with QEMU's tools as independent clients:
//! qemu-io writes and reads through the export, the same commands go to a
//! raw reference file, and `qemu-img compare` must find both identical.

mod nbd_common;

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use lamina_engine::image::{Access, CreateOptions, Disk};
use lamina_engine::serve::RawFile;
use lamina_engine::serve::nbd::NbdOptions;
use lamina_format::Header;
use nbd_common::*;

/// qemu-io commands that cover data, zeroes, discards and unaligned
/// writes. The zero and discard ranges contain data first, so that a
/// no-op implementation shows up on compare.
const MIXED_COMMANDS: &[&str] = &[
    "write -P 0xab 0 1M",
    "write -P 0xcd 4M 2M",
    "write -z 4M 1M",
    "write -P 0xee 8M 2M",
    "discard 8M 1M",
    "write -P 0x5a 10485773 3000",
    "write -f -P 0x77 12M 64k",
    "flush",
];

/// Reads that check the mixed commands landed through the export.
const MIXED_READS: &[&str] = &[
    "read -P 0xab 0 1M",
    "read -P 0 4M 1M",
    "read -P 0xcd 5M 1M",
    "read -P 0 8M 1M",
    "read -P 0xee 9M 1M",
    "read -P 0x5a 10485773 3000",
    "read -P 0x77 12M 64k",
];

fn new_disk(dir: &Path, size: u64) -> Disk {
    let opts = CreateOptions {
        size,
        cluster_size: MIB,
    };
    Disk::create(dir, &opts).expect("create disk");
    Disk::open(dir, Access::ReadWrite).expect("open disk")
}

fn top_in_use(disk_dir: &Path, delta_file: &str) -> bool {
    let file = std::fs::File::open(disk_dir.join(delta_file)).expect("open delta");
    let mut block = vec![0u8; 4096];
    file.read_exact_at(&mut block, 0).expect("read header");
    Header::decode(&block).expect("decode header").in_use
}

#[test]
fn raw_export_matches_reference() {
    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("image.raw");
    let reference = tmp.path().join("reference.raw");
    sparse_file(&image, 64 * MIB);
    sparse_file(&reference, 64 * MIB);
    let backend = Arc::new(RawFile::open(&image, true).unwrap());
    let served = Served::start(backend, &tmp.path().join("nbd.sock"), NbdOptions::default());

    qemu_io(&served.uri(), MIXED_COMMANDS);
    qemu_io(&reference.display().to_string(), MIXED_COMMANDS);
    qemu_io(&served.uri(), MIXED_READS);
    qemu_img_compare(&served.uri(), &reference);

    let stats = served.stop().expect("server stops cleanly");
    assert_eq!(stats.failed_requests, 0, "{stats:?}");
    assert!(stats.connections >= 3, "{stats:?}");
}

#[test]
fn disk_export_matches_reference() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("disk");
    let reference = tmp.path().join("reference.raw");
    sparse_file(&reference, 64 * MIB);
    let disk = Arc::new(new_disk(&dir, 64 * MIB));
    let delta = disk.info().deltas[0].file.clone();
    assert!(top_in_use(&dir, &delta), "open read-write sets in use");
    let socket = tmp.path().join("nbd.sock");

    let served = Served::start(disk.clone(), &socket, NbdOptions::default());
    qemu_io(&served.uri(), MIXED_COMMANDS);
    qemu_io(&reference.display().to_string(), MIXED_COMMANDS);
    qemu_io(&served.uri(), MIXED_READS);
    qemu_img_compare(&served.uri(), &reference);
    served.stop().expect("server stops cleanly");
    assert!(!socket.exists(), "socket file removed");

    let disk = Arc::try_unwrap(disk).expect("server released the disk");
    disk.close().expect("close disk");
    assert!(!top_in_use(&dir, &delta), "clean close clears in use");

    // What the export wrote survives a close and reopen.
    let disk = Disk::open(&dir, Access::ReadOnly).expect("reopen disk");
    let opts = NbdOptions {
        read_only: true,
        ..NbdOptions::default()
    };
    let served = Served::start(Arc::new(disk), &socket, opts);
    qemu_img_compare(&served.uri(), &reference);
}

#[test]
fn raw_writes_past_4_gib() {
    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("large.raw");
    sparse_file(&image, 6 * GIB);
    let backend = Arc::new(RawFile::open(&image, true).unwrap());
    let served = Served::start(backend, &tmp.path().join("nbd.sock"), NbdOptions::default());

    // 4 GiB + 512 and 5 GiB + 1 MiB - 7: offsets that lose their high
    // bits in any 32-bit truncation.
    qemu_io(
        &served.uri(),
        &[
            "write -P 0x31 4294967808 64k",
            "write -P 0x32 5369757689 4096",
            "write -P 0x33 512 64k",
            "write -P 0x34 6442446848 4096",
        ],
    );
    qemu_io(
        &served.uri(),
        &[
            "read -P 0x31 4294967808 64k",
            "read -P 0x32 5369757689 4096",
            "read -P 0x33 512 64k",
            "read -P 0x34 6442446848 4096",
            "read -P 0 4294967296 512",
        ],
    );
    served.stop().unwrap();

    // The file itself, read without the server.
    let file = std::fs::File::open(&image).unwrap();
    let mut buf = vec![0u8; 4096];
    for (offset, byte) in [
        (4_294_967_808u64, 0x31u8),
        (5_369_757_689, 0x32),
        (512, 0x33),
        (6_442_446_848, 0x34),
    ] {
        file.read_exact_at(&mut buf, offset).unwrap();
        assert!(buf.iter().all(|&b| b == byte), "offset {offset}");
    }
    file.read_exact_at(&mut buf, 4 * GIB - 4096).unwrap();
    assert!(buf.iter().all(|&b| b == 0), "4 GiB - 4096 untouched");
}

#[test]
fn disk_writes_past_4_gib() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("disk");
    let disk = Arc::new(new_disk(&dir, 8 * GIB));
    let served = Served::start(
        disk.clone(),
        &tmp.path().join("nbd.sock"),
        NbdOptions::default(),
    );
    qemu_io(
        &served.uri(),
        &[
            "write -P 0x41 4294967808 64k",
            "write -P 0x42 7516192768 1M",
            "write -P 0x43 0 4096",
        ],
    );
    qemu_io(
        &served.uri(),
        &[
            "read -P 0x41 4294967808 64k",
            "read -P 0x42 7516192768 1M",
            "read -P 0x43 0 4096",
            "read -P 0 4294967296 512",
        ],
    );
    served.stop().unwrap();

    let mut buf = vec![0u8; 4096];
    disk.read_at(&mut buf, 7 * GIB).unwrap();
    assert!(buf.iter().all(|&b| b == 0x42), "read through the engine");
    disk.read_at(&mut buf, 0).unwrap();
    assert!(buf.iter().all(|&b| b == 0x43), "first 4 KiB");
    disk.read_at(&mut buf, 4096).unwrap();
    assert!(buf.iter().all(|&b| b == 0), "second 4 KiB untouched");
}

#[test]
fn read_only_rejects_qemu_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("image.raw");
    std::fs::write(&image, vec![0x66u8; 4 << 20]).unwrap();
    let backend = Arc::new(RawFile::open(&image, false).unwrap());
    let opts = NbdOptions {
        read_only: true,
        ..NbdOptions::default()
    };
    let served = Served::start(backend, &tmp.path().join("nbd.sock"), opts);

    let output = qemu_io_output(&served.uri(), true, &["read -P 0x66 0 4M"]);
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!stdout.contains("Pattern verification failed"), "{stdout}");

    let output = qemu_io_output(&served.uri(), false, &["write -P 0x11 0 64k"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        !output.status.success() || text.contains("failed") || text.contains("read-only"),
        "write to a read-only export must fail: {text}"
    );
    assert!(!text.contains("wrote 65536"), "{text}");
    drop(served);

    let content = std::fs::read(&image).unwrap();
    assert!(content.iter().all(|&b| b == 0x66), "file unchanged");
}

#[test]
fn two_clients_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("image.raw");
    let reference = tmp.path().join("reference.raw");
    sparse_file(&image, 64 * MIB);
    sparse_file(&reference, 64 * MIB);
    let backend = Arc::new(RawFile::open(&image, true).unwrap());
    let served = Served::start(backend, &tmp.path().join("nbd.sock"), NbdOptions::default());

    // A raw client keeps a connection in transmission the whole time, so
    // the qemu-io clients below run next to it.
    let (mut held, size, _) = RawClient::go(&served.socket);
    assert_eq!(size, 64 * MIB);

    let first: Vec<String> = (0..16)
        .map(|i| format!("write -P 0x{:02x} {}M 1M", 0x10 + i, i))
        .collect();
    let second: Vec<String> = (0..16)
        .map(|i| format!("write -P 0x{:02x} {}M 1M", 0x40 + i, 32 + i))
        .collect();
    let uri = served.uri();
    let writers: Vec<_> = [first.clone(), second.clone()]
        .into_iter()
        .map(|commands| {
            let uri = uri.clone();
            std::thread::spawn(move || {
                let commands: Vec<&str> = commands.iter().map(String::as_str).collect();
                qemu_io(&uri, &commands);
            })
        })
        .collect();
    for writer in writers {
        writer.join().expect("qemu-io writer");
    }
    let all: Vec<&str> = first.iter().chain(&second).map(String::as_str).collect();
    qemu_io(&reference.display().to_string(), &all);
    qemu_img_compare(&uri, &reference);

    // The held connection reads what the others wrote.
    let reply = held.request(CMD_READ, 0, 33 * MIB, 4096, &[]);
    assert_eq!(reply.error, 0);
    assert!(reply.data.iter().all(|&b| b == 0x41));
    let cookie = held.send_request(CMD_DISC, 0, 0, 0, &[]);
    assert!(cookie > 0);
    assert!(held.is_closed_by_server());

    let stats = served.stop().unwrap();
    assert_eq!(stats.failed_requests, 0, "{stats:?}");
}

/// Unmounts a tmpfs on drop, so a failing test leaves no mount.
struct TmpfsGuard(std::path::PathBuf);

impl Drop for TmpfsGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn full_host_filesystem_gives_enospc() {
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(status.success(), "mount tmpfs");
    let _guard = TmpfsGuard(mnt.clone());

    // A 16 MiB sparse file on a 1 MiB filesystem.
    let image = mnt.join("image.raw");
    sparse_file(&image, 16 * MIB);
    let backend = Arc::new(RawFile::open(&image, true).unwrap());
    let served = Served::start(backend, &tmp.path().join("nbd.sock"), NbdOptions::default());

    let (mut client, _, _) = RawClient::go(&served.socket);
    let data = vec![0x3cu8; 4 << 20];
    let reply = client.request(CMD_WRITE, 0, 0, 4 << 20, &data);
    assert_eq!(reply.error, ENOSPC);
    drop(client);

    let output = qemu_io_output(&served.uri(), false, &["write -P 0x3c 8M 4M"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("No space left on device"), "{stdout}");
    qemu_io(
        &served.uri(),
        &["write -P 0x3d 0 64k", "read -P 0x3d 0 64k"],
    );
}
