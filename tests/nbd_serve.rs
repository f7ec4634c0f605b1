//! `lamina serve DISK --nbd unix:PATH` as users run it: a foreground
//! process that qemu-io and qemu-img use as an independent client, and
//! that closes the disk cleanly on SIGTERM or SIGINT.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};

use lamina_engine::image::{Access, CreateOptions, Disk};
use lamina_format::Header;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const MIB: u64 = 1 << 20;

/// A running `lamina serve`; dropping it kills the process, so a failing
/// test leaves no server behind.
struct Server {
    child: Option<Child>,
    socket: PathBuf,
}

impl Server {
    /// Starts the server and waits for its "serving" line, printed once
    /// the socket listens.
    fn start(disk: &Path, socket: &Path, extra: &[&str]) -> Server {
        let mut child = lamina()
            .arg("serve")
            .arg(disk)
            .arg("--nbd")
            .arg(format!("unix:{}", socket.display()))
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start lamina serve");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("stdout");
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read stdout");
        let mut server = Server {
            child: Some(child),
            socket: socket.to_path_buf(),
        };
        if !line.starts_with("serving ") {
            let output = server.wait_output();
            panic!(
                "lamina serve did not start: {line:?}, {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        assert!(line.contains(&socket.display().to_string()), "{line}");
        server
    }

    fn uri(&self) -> String {
        format!("nbd+unix:///?socket={}", self.socket.display())
    }

    fn signal(&self, signal: Signal) {
        let pid = self.child.as_ref().expect("child").id();
        kill(Pid::from_raw(i32::try_from(pid).unwrap()), signal).expect("send signal");
    }

    fn wait_output(&mut self) -> Output {
        self.child
            .take()
            .expect("child")
            .wait_with_output()
            .expect("wait")
    }

    /// Sends `signal` and returns the exit status and standard error.
    fn stop(mut self, signal: Signal) -> (ExitStatus, String) {
        self.signal(signal);
        let output = self.wait_output();
        (
            output.status,
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn lamina() -> Command {
    Command::new(env!("CARGO_BIN_EXE_lamina"))
}

fn new_disk(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).expect("create parent");
    let disk = dir.join("disk");
    let opts = CreateOptions {
        size: 64 * MIB,
        cluster_size: MIB,
    };
    Disk::create(&disk, &opts).expect("create disk");
    disk
}

/// Reads the in-use flag of the disk's only delta straight from its
/// header, without opening the disk.
fn top_in_use(disk: &Path) -> bool {
    let deltas: Vec<PathBuf> = std::fs::read_dir(disk)
        .expect("list disk")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "delta"))
        .collect();
    assert_eq!(deltas.len(), 1, "{deltas:?}");
    let delta = std::fs::File::open(&deltas[0]).expect("open delta");
    let mut block = vec![0u8; 4096];
    delta.read_exact_at(&mut block, 0).expect("read header");
    Header::decode(&block).expect("decode header").in_use
}

fn qemu_io(target: &str, read_only: bool, commands: &[&str]) -> Output {
    let mut command = Command::new("qemu-io");
    command.args(["-f", "raw"]);
    if read_only {
        command.arg("-r");
    }
    for c in commands {
        command.args(["-c", c]);
    }
    command.arg(target).output().expect("run qemu-io")
}

fn assert_qemu_io_ok(target: &str, commands: &[&str]) {
    let output = qemu_io(target, false, commands);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "qemu-io {commands:?}: {output:?}");
    assert!(!stdout.contains("Pattern verification failed"), "{stdout}");
    assert!(!stdout.contains("failed"), "{stdout}");
}

#[test]
fn serve_stops_cleanly_on_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let disk = new_disk(tmp.path());
    let socket = tmp.path().join("nbd.sock");
    let reference = tmp.path().join("reference.raw");
    std::fs::File::create(&reference)
        .unwrap()
        .set_len(64 * MIB)
        .unwrap();
    let commands = [
        "write -P 0xab 0 1M",
        "write -P 0xcd 4M 2M",
        "write -z 4M 1M",
        "discard 5M 512k",
        "write -P 0x12 40000000 123456",
    ];

    let server = Server::start(&disk, &socket, &[]);
    assert!(top_in_use(&disk), "served read-write: in use");
    assert_qemu_io_ok(&server.uri(), &commands);
    assert_qemu_io_ok(&reference.display().to_string(), &commands);
    let compare = Command::new("qemu-img")
        .args(["compare", "-f", "raw", "-F", "raw", &server.uri()])
        .arg(&reference)
        .output()
        .unwrap();
    assert!(compare.status.success(), "qemu-img compare: {compare:?}");

    // A client still in the handshake must not keep the server alive.
    let mut idle = UnixStream::connect(&socket).unwrap();
    let (status, stderr) = server.stop(Signal::SIGTERM);
    assert!(status.success(), "exit status {status}: {stderr}");
    assert!(!socket.exists(), "socket file removed");
    let mut rest = Vec::new();
    let _ = idle.read_to_end(&mut rest);
    assert!(!top_in_use(&disk), "in-use flag cleared on shutdown");

    // The data is in the disk, read again through a read-only export.
    let server = Server::start(&disk, &socket, &["--read-only"]);
    let compare = Command::new("qemu-img")
        .args(["compare", "-f", "raw", "-F", "raw", &server.uri()])
        .arg(&reference)
        .output()
        .unwrap();
    assert!(compare.status.success(), "qemu-img compare: {compare:?}");
    let (status, stderr) = server.stop(Signal::SIGINT);
    assert!(status.success(), "exit status {status}: {stderr}");
    assert!(!socket.exists());
}

#[test]
fn serve_snapshot_next_to_writer() {
    let tmp = tempfile::tempdir().unwrap();
    let disk = new_disk(tmp.path());
    let writer = Disk::open(&disk, Access::ReadWrite).unwrap();
    writer.write_at(&[0x01; 4096], 0).unwrap();
    writer.snapshot(Some("before"), None).unwrap();
    writer.write_at(&[0x02; 4096], 0).unwrap();

    // The snapshot export works while the writer has the disk open.
    let socket = tmp.path().join("nbd.sock");
    let server = Server::start(&disk, &socket, &["--snapshot", "before"]);
    let read = qemu_io(&server.uri(), true, &["read -P 0x01 0 4096"]);
    let stdout = String::from_utf8_lossy(&read.stdout);
    assert!(read.status.success(), "{read:?}");
    assert!(!stdout.contains("Pattern verification failed"), "{stdout}");
    let (status, stderr) = server.stop(Signal::SIGTERM);
    assert!(status.success(), "{stderr}");

    let mut buf = [0u8; 4096];
    writer.read_at(&mut buf, 0).unwrap();
    assert_eq!(buf, [0x02; 4096], "the top is untouched");
    writer.close().unwrap();
}

#[test]
fn serve_read_only_rejects_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let disk = new_disk(tmp.path());
    let socket = tmp.path().join("nbd.sock");
    let server = Server::start(&disk, &socket, &["--read-only"]);

    let read = qemu_io(&server.uri(), true, &["read -P 0 0 1M"]);
    assert!(read.status.success(), "{read:?}");
    let write = qemu_io(&server.uri(), false, &["write -P 0x11 0 64k"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&write.stdout),
        String::from_utf8_lossy(&write.stderr)
    );
    assert!(!text.contains("wrote"), "write must fail: {text}");

    // A read-only server shares the disk with other readers but keeps
    // writers out.
    let writer = Disk::open(&disk, Access::ReadWrite);
    assert!(writer.is_err(), "a writer must be locked out");
    drop(writer);
    let (status, stderr) = server.stop(Signal::SIGTERM);
    assert!(status.success(), "{stderr}");
}

#[test]
fn serve_bad_input_exits_with_codes() {
    let tmp = tempfile::tempdir().unwrap();
    let disk = new_disk(tmp.path());
    let socket = tmp.path().join("nbd.sock");

    let output = lamina()
        .args(["serve"])
        .arg(&disk)
        .args(["--nbd", "tcp:127.0.0.1:10809"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");

    let missing = tmp.path().join("missing");
    let output = lamina()
        .arg("serve")
        .arg(&missing)
        .arg("--nbd")
        .arg(format!("unix:{}", socket.display()))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3), "{output:?}");
    assert!(!socket.exists());

    // A disk served already is busy for a second server.
    let server = Server::start(&disk, &socket, &[]);
    let other = tmp.path().join("other.sock");
    let output = lamina()
        .arg("serve")
        .arg(&disk)
        .arg("--nbd")
        .arg(format!("unix:{}", other.display()))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(5), "{output:?}");
    assert!(!other.exists());

    // A socket path in use by a live server is busy as well.
    let second = new_disk(&tmp.path().join("second"));
    let output = lamina()
        .arg("serve")
        .arg(&second)
        .arg("--nbd")
        .arg(format!("unix:{}", socket.display()))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(5), "{output:?}");
    assert!(!top_in_use(&second), "the second disk was closed again");

    let (status, stderr) = server.stop(Signal::SIGTERM);
    assert!(status.success(), "{stderr}");
}

#[test]
fn serve_after_kill_9_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let disk = new_disk(tmp.path());
    let socket = tmp.path().join("nbd.sock");

    // The flush makes the write durable before the kill.
    let server = Server::start(&disk, &socket, &[]);
    assert_qemu_io_ok(&server.uri(), &["write -P 0x7e 3M 1M", "flush"]);
    let (status, _) = server.stop(Signal::SIGKILL);
    assert!(!status.success());
    assert!(socket.exists(), "kill -9 leaves the socket file");
    assert!(top_in_use(&disk), "kill -9 leaves the in-use flag");

    // The next server replaces the stale socket and repairs the disk.
    let server = Server::start(&disk, &socket, &[]);
    assert_qemu_io_ok(&server.uri(), &["read -P 0x7e 3M 1M", "read -P 0 4M 1M"]);
    let (status, stderr) = server.stop(Signal::SIGTERM);
    assert!(status.success(), "{stderr}");
    assert!(!top_in_use(&disk));
    assert!(!socket.exists());
}
