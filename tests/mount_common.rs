//! Helpers shared by the `lamina mount` integration tests: temp homes,
//! disks with a filesystem, command runners and cleanup guards.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use lamina_engine::image::{CreateOptions, Disk};
use lamina_engine::serve::{self, FsType};

pub const MIB: u64 = 1 << 20;

/// A temp directory used as `LAMINA_HOME`, with a disk and mount targets.
/// Dropping it force-unmounts everything mounted under it.
pub struct Home {
    pub dir: tempfile::TempDir,
}

impl Home {
    pub fn new() -> Home {
        Home {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Creates a disk of `size` bytes with an ext4 filesystem.
    pub fn disk(&self, name: &str, size: u64) -> PathBuf {
        self.disk_with(name, size, Some(FsType::Ext4))
    }

    /// Creates a disk of `size` bytes with filesystem `fs`, or none.
    pub fn disk_with(&self, name: &str, size: u64, fs: Option<FsType>) -> PathBuf {
        let disk = self.path().join(name);
        let opts = CreateOptions {
            size,
            ..CreateOptions::default()
        };
        Disk::create(&disk, &opts).expect("create disk");
        if let Some(fs) = fs {
            with_home(self.path(), || serve::mkfs(&disk, fs, None)).expect("mkfs");
        }
        disk
    }

    /// Creates an empty directory to mount at.
    pub fn target(&self, name: &str) -> PathBuf {
        let target = self.path().join(name);
        std::fs::create_dir_all(&target).expect("create target");
        target
    }

    /// Runs the `lamina` binary with `LAMINA_HOME` set to this home.
    pub fn lamina(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_lamina"))
            .args(args)
            .env("LAMINA_HOME", self.path())
            .output()
            .expect("run lamina")
    }

    /// Runs `lamina` and asserts that it succeeded.
    pub fn lamina_ok(&self, args: &[&str]) -> String {
        let output = self.lamina(args);
        assert!(
            output.status.success(),
            "lamina {args:?} failed with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    pub fn mounts(&self) -> Vec<serve::MountInfo> {
        let json = self.lamina_ok(&["list", "--json"]);
        serde_json::from_str(&json).expect("list --json output")
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        let Ok(mounts) = with_home(self.path(), serve::list) else {
            return;
        };
        for mount in mounts {
            let _ = with_home(self.path(), || serve::umount(&mount.target, true));
        }
    }
}

/// Runs `f` with `LAMINA_HOME` pointing at `home`. The variable is read
/// by the library, so tests that call it in-process serialize on a lock.
pub fn with_home<T>(home: &Path, f: impl FnOnce() -> T) -> T {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    // SAFETY: every reader and writer of LAMINA_HOME in the test binary
    // takes LOCK first.
    unsafe { std::env::set_var("LAMINA_HOME", home) };
    f()
}

/// Runs a command and asserts success; returns its standard output.
pub fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} did not start: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Returns the lines of `losetup -a` and /proc/self/mountinfo that mention
/// `needle`, to check that nothing is left behind.
pub fn leftovers(needle: &str) -> Vec<String> {
    let mut lines: Vec<String> = run("losetup", &["-a"])
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    lines.extend(
        mountinfo
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_string),
    );
    lines
}

/// Returns the PIDs of live processes named like the server whose
/// `LAMINA_HOME` is not visible; checked through the state files instead.
pub fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Builds `len` bytes that differ per seed and per 512-byte sector, so
/// that a payload written at the wrong offset or by the wrong request
/// shows up on compare.
pub fn pattern(seed: u8, len: u64) -> Vec<u8> {
    (0..len)
        .map(|i| {
            let sector = u8::try_from(i / 512 % 256).unwrap();
            let within = u8::try_from(i % 251).unwrap();
            seed.wrapping_mul(31)
                .wrapping_add(sector)
                .wrapping_add(within)
        })
        .collect()
}

/// One dd writer of case C1: a pattern file written at a byte offset.
pub struct DirectWrite {
    pub seed: u8,
    pub block: &'static str,
    pub offset: u64,
    pub file: PathBuf,
}

/// Runs all writes at once, each with `dd oflag=direct`, and waits.
pub fn write_all_at_once(writes: &[DirectWrite], scratch: &Path) {
    let mut children = Vec::new();
    for write in writes {
        let input = scratch.join(format!("pattern-{}", write.seed));
        std::fs::write(&input, pattern(write.seed, 4 * MIB)).expect("write pattern");
        let child = Command::new("dd")
            .arg(format!("if={}", input.display()))
            .arg(format!("of={}", write.file.display()))
            .arg(format!("bs={}", write.block))
            .arg(format!("seek={}", write.offset))
            .args([
                "oflag=direct,seek_bytes",
                "conv=notrunc,fsync",
                "status=none",
            ])
            .spawn()
            .expect("start dd");
        children.push(child);
    }
    for mut child in children {
        assert!(child.wait().expect("wait dd").success(), "dd failed");
    }
}

/// Reads 4 MiB at each write's offset with `dd iflag=direct` and checks
/// every byte.
pub fn verify_direct(writes: &[DirectWrite]) {
    for write in writes {
        let output = Command::new("dd")
            .arg(format!("if={}", write.file.display()))
            .arg(format!("skip={}", write.offset))
            .args(["bs=1M", "count=4", "iflag=direct,skip_bytes", "status=none"])
            .output()
            .expect("run dd");
        assert!(output.status.success(), "dd read: {}", stderr_of(&output));
        let expected = pattern(write.seed, 4 * MIB);
        assert_eq!(
            output.stdout.len(),
            expected.len(),
            "short read of {}",
            write.file.display()
        );
        let first_bad = output
            .stdout
            .iter()
            .zip(&expected)
            .position(|(a, b)| a != b);
        assert_eq!(
            first_bad, None,
            "seed {} bs={} at offset {} differs at byte",
            write.seed, write.block, write.offset
        );
    }
}

/// Runs `e2fsck -fn` on the unmounted disk, attached read-only in process.
pub fn fsck(home: &Home, disk: &Path) {
    use lamina_engine::image::Access;
    use std::sync::Arc;

    let opened = Disk::open(disk, Access::ReadOnly).expect("open disk for fsck");
    let backend: Arc<dyn serve::BlockBackend> = Arc::new(opened);
    let export = home.path().join("fsck-export");
    let attachment = serve::Attachment::attach(backend, &export, true).expect("attach for fsck");
    let device = attachment.device().to_str().unwrap().to_string();
    let output = Command::new("e2fsck")
        .args(["-fn", &device])
        .output()
        .expect("e2fsck");
    attachment
        .detach(std::time::Duration::from_secs(10))
        .expect("detach after fsck");
    assert!(
        output.status.success(),
        "e2fsck -fn: {}",
        String::from_utf8_lossy(&output.stdout)
    );
}

/// Tells whether this process has CAP_SYS_RESOURCE, which the kernel
/// requires for online ext4 resize (EXT4_IOC_RESIZE_FS).
pub fn has_cap_sys_resource() -> bool {
    const CAP_SYS_RESOURCE: u32 = 24;
    let status = std::fs::read_to_string("/proc/self/status").expect("read status");
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .expect("CapEff line")
        .trim();
    let caps = u64::from_str_radix(hex, 16).expect("CapEff value");
    caps & (1 << CAP_SYS_RESOURCE) != 0
}

/// Returns the size of a block device in bytes.
pub fn device_size(device: &Path) -> u64 {
    run("blockdev", &["--getsize64", device.to_str().unwrap()])
        .trim()
        .parse()
        .expect("blockdev size")
}
