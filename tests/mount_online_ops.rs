//! `lamina snapshot-delete` and `lamina snapshot-merge` on a mounted disk:
//! the server rewrites the chain while the filesystem stays mounted and a
//! writer keeps writing. File contents are compared by SHA-256 with what
//! was written, after dropping their cached pages so that reads go through
//! the loop device and the server. Needs root (loop devices, FUSE, mount).

mod mount_common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mount_common::{Home, fsck, leftovers, stderr_of};

/// Exit codes of `lamina`, as docs/lamina.md lists them.
const USAGE: i32 = 2;
const NOT_FOUND: i32 = 3;
const BUSY: i32 = 5;

/// Size of one write of the background writer.
const CHUNK: usize = 256 * 1024;
/// One MiB as a buffer length.
const MIB: usize = 1 << 20;

/// Returns `len` bytes from /dev/urandom: incompressible and, with
/// overwhelming probability, not all zeros in any cluster.
fn random(len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut data))
        .expect("read /dev/urandom");
    data
}

/// Returns the SHA-256 of `data` in hex, computed by `sha256sum`.
fn sha256(data: &[u8]) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start sha256sum");
    let mut stdin = child.stdin.take().expect("sha256sum stdin");
    let input = data.to_vec();
    let feeder = std::thread::spawn(move || stdin.write_all(&input));
    let output = child.wait_with_output().expect("run sha256sum");
    feeder.join().unwrap().expect("write to sha256sum");
    assert!(output.status.success(), "sha256sum failed");
    let text = String::from_utf8_lossy(&output.stdout);
    text.split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Reads a file after dropping its cached pages, so that the data comes
/// from the disk under the filesystem and not from the page cache.
fn read_uncached(path: &Path) -> Vec<u8> {
    let mut file =
        std::fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    nix::fcntl::posix_fadvise(
        file.as_fd(),
        0,
        0,
        nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
    )
    .expect("posix_fadvise");
    let mut data = Vec::new();
    file.read_to_end(&mut data).expect("read file");
    data
}

/// Writes a file and syncs it.
fn write_synced(path: &Path, data: &[u8]) {
    let mut file =
        std::fs::File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    file.write_all(data).expect("write file");
    file.sync_all().expect("sync file");
}

/// Files written to the mount, with their expected contents.
#[derive(Clone, Default)]
struct Files(BTreeMap<String, Vec<u8>>);

impl Files {
    fn write(&mut self, root: &Path, name: &str, data: Vec<u8>) {
        write_synced(&root.join(name), &data);
        self.0.insert(name.to_string(), data);
    }

    fn remove(&mut self, root: &Path, name: &str) {
        std::fs::remove_file(root.join(name)).expect("remove file");
        self.0.remove(name);
    }

    /// Compares every file under `root` by SHA-256, and the file list.
    fn verify(&self, root: &Path, when: &str) {
        let mut names: Vec<String> = std::fs::read_dir(root)
            .expect("list mount")
            .map(|e| {
                e.expect("dir entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .filter(|n| n != "lost+found")
            .collect();
        names.sort();
        let expected: Vec<&String> = self.0.keys().collect();
        assert_eq!(
            names.iter().collect::<Vec<_>>(),
            expected,
            "{when}: file list differs"
        );
        for (name, data) in &self.0 {
            let found = read_uncached(&root.join(name));
            assert_eq!(
                sha256(&found),
                sha256(data),
                "{when}: SHA-256 of {name} differs"
            );
        }
    }
}

/// A thread that appends random chunks to a file on the mount and syncs
/// each one, until stopped.
struct Writer {
    stop: Arc<AtomicBool>,
    chunks: Arc<AtomicUsize>,
    thread: std::thread::JoinHandle<Vec<u8>>,
}

impl Writer {
    fn start(path: PathBuf) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let chunks = Arc::new(AtomicUsize::new(0));
        let thread = {
            let (stop, chunks) = (Arc::clone(&stop), Arc::clone(&chunks));
            std::thread::spawn(move || {
                let mut file = std::fs::File::create(&path).expect("create writer file");
                let mut written = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let chunk = random(CHUNK);
                    file.write_all(&chunk).expect("writer: write");
                    file.sync_data().expect("writer: sync");
                    written.extend_from_slice(&chunk);
                    chunks.fetch_add(1, Ordering::Relaxed);
                }
                written
            })
        };
        let writer = Writer {
            stop,
            chunks,
            thread,
        };
        writer.wait_for(2);
        writer
    }

    /// Waits until `more` further chunks are written.
    fn wait_for(&self, more: usize) {
        let goal = self.chunks.load(Ordering::Relaxed) + more;
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.chunks.load(Ordering::Relaxed) < goal {
            assert!(Instant::now() < deadline, "the writer stalled");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Runs `op` and prints how many chunks the writer synced meanwhile.
    fn during(&self, what: &str, op: impl FnOnce()) {
        let before = self.chunks.load(Ordering::Relaxed);
        let start = Instant::now();
        op();
        let chunks = self.chunks.load(Ordering::Relaxed) - before;
        eprintln!(
            "{what}: {:.0} ms, the writer synced {chunks} chunks meanwhile",
            start.elapsed().as_secs_f64() * 1000.0
        );
    }

    /// Lets the writer write two more chunks, stops it and returns what
    /// it wrote.
    fn finish(self) -> Vec<u8> {
        self.wait_for(2);
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("writer thread")
    }
}

/// Runs `lamina` and asserts its exit code; returns standard error.
fn fails(home: &Home, args: &[&str], code: i32) -> String {
    let output: Output = home.lamina(args);
    let stderr = stderr_of(&output);
    assert_eq!(
        output.status.code(),
        Some(code),
        "lamina {args:?}: {stderr}"
    );
    stderr
}

fn info(home: &Home, disk: &str) -> serde_json::Value {
    serde_json::from_str(&home.lamina_ok(&["info", disk, "--json"])).expect("info --json")
}

fn chain_depth(home: &Home, disk: &str) -> u64 {
    info(home, disk)["disk"]["chain_depth"]
        .as_u64()
        .expect("chain_depth")
}

fn qemu_compare(a: &str, b: &str) {
    let output = Command::new("qemu-img")
        .args(["compare", "-f", "raw", "-F", "raw", a, b])
        .output()
        .expect("run qemu-img");
    assert!(
        output.status.success(),
        "qemu-img compare {a} {b}: {}",
        String::from_utf8_lossy(&output.stdout)
    );
}

#[test]
fn delete_and_merge_while_mounted() {
    let home = Home::new();
    let disk = home.disk("disk", 256 << 20);
    let disk_arg = disk.to_str().unwrap();
    let target = home.target("mnt");
    let snap_target = home.target("snap");
    home.lamina_ok(&["mount", disk_arg, "--target", target.to_str().unwrap()]);

    let mut files = Files::default();
    files.write(&target, "f1", random(3 * MIB));
    files.write(&target, "f2", random(MIB + 4321));
    home.lamina_ok(&["snapshot", disk_arg, "--name", "A"]);
    files.write(&target, "f1", random(3 * MIB));
    files.write(&target, "f3", random(2 * MIB));
    home.lamina_ok(&["snapshot", disk_arg, "--name", "B"]);
    let in_b = files.clone();
    files.write(&target, "f4", random(2 * MIB));
    files.remove(&target, "f2");

    let b_before = home.path().join("b-before.raw");
    let b_before = b_before.to_str().unwrap();
    home.lamina_ok(&[
        "convert",
        disk_arg,
        b_before,
        "--to",
        "raw",
        "--snapshot",
        "B",
    ]);

    // Delete A, the base: B is rewritten while the writer keeps going.
    let writer = Writer::start(target.join("w1"));
    writer.during("delete A", || {
        home.lamina_ok(&["snapshot-delete", disk_arg, "A"]);
    });
    let w1 = writer.finish();
    files.0.insert("w1".into(), w1);
    files.verify(&target, "after deleting A");
    assert_eq!(chain_depth(&home, disk_arg), 2);
    let list = home.lamina_ok(&["snapshot-list", disk_arg, "-H", "-o", "name"]);
    assert!(!list.contains('A'), "A is still listed: {list}");

    let b_after = home.path().join("b-after.raw");
    let b_after = b_after.to_str().unwrap();
    home.lamina_ok(&[
        "convert",
        disk_arg,
        b_after,
        "--to",
        "raw",
        "--snapshot",
        "B",
    ]);
    qemu_compare(b_before, b_after);
    std::fs::remove_file(b_before).expect("remove raw export");
    std::fs::remove_file(b_after).expect("remove raw export");

    let snap_arg = snap_target.to_str().unwrap();
    home.lamina_ok(&["mount", disk_arg, "--target", snap_arg, "--snapshot", "B"]);
    in_b.verify(&snap_target, "snapshot B after deleting A");
    // B is mounted, so a merge that removes it is rejected.
    let stderr = fails(&home, &["snapshot-merge", disk_arg], BUSY);
    assert!(stderr.contains("lamina umount"), "{stderr}");
    home.lamina_ok(&["umount", snap_arg]);

    let top = info(&home, disk_arg)["disk"]["top"]
        .as_str()
        .expect("top")
        .to_string();
    let stderr = fails(&home, &["snapshot-delete", disk_arg, &top], BUSY);
    assert!(stderr.contains("running top"), "{stderr}");
    let stderr = fails(&home, &["snapshot-delete", disk_arg, "nope"], NOT_FOUND);
    assert!(stderr.contains("nope"), "{stderr}");
    files.verify(&target, "after rejected requests");

    // Merge the top into B: the top is rewritten while the writer runs.
    files.write(&target, "f5", random(MIB));
    let writer = Writer::start(target.join("w2"));
    writer.during("merge", || {
        home.lamina_ok(&["snapshot-merge", disk_arg]);
    });
    let w2 = writer.finish();
    files.0.insert("w2".into(), w2);
    files.verify(&target, "after merging B");
    assert_eq!(chain_depth(&home, disk_arg), 1);

    home.lamina_ok(&["snapshot", disk_arg, "--name", "C"]);
    files.write(&target, "f6", random(MIB));
    home.lamina_ok(&["snapshot", disk_arg, "--name", "D"]);
    files.write(&target, "f7", random(MIB));
    files.remove(&target, "f3");
    assert_eq!(chain_depth(&home, disk_arg), 3);
    let writer = Writer::start(target.join("w3"));
    writer.during("merge --all", || {
        home.lamina_ok(&["snapshot-merge", disk_arg, "--all"]);
    });
    let w3 = writer.finish();
    files.0.insert("w3".into(), w3);
    files.verify(&target, "after merge --all");
    assert_eq!(chain_depth(&home, disk_arg), 1);
    fails(&home, &["snapshot-merge", disk_arg], USAGE);

    let log = home.mounts()[0].log.clone();
    home.lamina_ok(&["umount", disk_arg]);
    assert!(leftovers(home.path().to_str().unwrap()).is_empty());
    let server_log = std::fs::read_to_string(&log).unwrap_or_default();
    for line in server_log.lines().filter(|l| l.contains("pause_ms")) {
        eprintln!("server: {line}");
    }

    let check = home.lamina_ok(&["check", disk_arg]);
    assert!(check.contains("result: clean"), "{check}");
    fsck(&home, &disk);
    let delta_files = std::fs::read_dir(&disk)
        .expect("list disk")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".delta"))
        })
        .count();
    assert_eq!(delta_files, 1, "old delta files are left in {disk_arg}");

    home.lamina_ok(&["mount", disk_arg, "--target", target.to_str().unwrap()]);
    files.verify(&target, "after remount");
    home.lamina_ok(&["umount", disk_arg]);
    assert!(leftovers(home.path().to_str().unwrap()).is_empty());
}

#[test]
fn rejected_online_ops_leave_nothing() {
    let home = Home::new();
    let disk = home.disk("disk", 64 << 20);
    let disk_arg = disk.to_str().unwrap();
    let target = home.target("mnt");
    home.lamina_ok(&["mount", disk_arg, "--target", target.to_str().unwrap()]);
    let mut files = Files::default();
    files.write(&target, "a", random(MIB));

    let stderr = fails(&home, &["snapshot-merge", disk_arg], USAGE);
    assert!(stderr.contains("no parent"), "{stderr}");
    home.lamina_ok(&["snapshot", disk_arg, "--name", "s1"]);
    let top = info(&home, disk_arg)["disk"]["top"]
        .as_str()
        .expect("top")
        .to_string();
    let stderr = fails(&home, &["snapshot-delete", disk_arg, &top], BUSY);
    assert!(stderr.contains("running top"), "{stderr}");
    fails(&home, &["snapshot-delete", disk_arg, "missing"], NOT_FOUND);
    for verb in [
        vec!["snapshot-switch", disk_arg, "s1"],
        vec!["resize", disk_arg, "--size", "32M"],
    ] {
        let stderr = fails(&home, &verb, BUSY);
        assert!(
            stderr.contains("works only on an unmounted disk"),
            "{verb:?}: {stderr}"
        );
    }
    files.verify(&target, "after rejected requests");
    assert_eq!(chain_depth(&home, disk_arg), 2);

    home.lamina_ok(&["umount", disk_arg]);
    assert!(leftovers(home.path().to_str().unwrap()).is_empty());
    let check = home.lamina_ok(&["check", disk_arg]);
    assert!(check.contains("result: clean"), "{check}");
}
