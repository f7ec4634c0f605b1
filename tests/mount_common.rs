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
        let disk = self.path().join(name);
        let opts = CreateOptions {
            size,
            ..CreateOptions::default()
        };
        Disk::create(&disk, &opts).expect("create disk");
        with_home(self.path(), || serve::mkfs(&disk, FsType::Ext4, None)).expect("mkfs");
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
    // holds LOCK.
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
