//! Helpers shared by the `lamina` image-verb tests: a temp `LAMINA_HOME`,
//! a runner for the real binary and checks of its exit code and output.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const KIB: u64 = 1 << 10;
pub const MIB: u64 = 1 << 20;
pub const GIB: u64 = 1 << 30;
/// One MiB as a buffer length.
pub const MIB_LEN: usize = 1 << 20;

/// Exit codes of `lamina`, as `docs/lamina.md` lists them.
pub mod code {
    pub const OK: i32 = 0;
    pub const USAGE: i32 = 2;
    pub const NOT_FOUND: i32 = 3;
    pub const CORRUPT: i32 = 4;
    pub const BUSY: i32 = 5;
    pub const ALREADY_EXISTS: i32 = 7;
    pub const CHECK_REPAIRED: i32 = 9;
    pub const CHECK_REPAIRABLE: i32 = 10;
}

/// A temp directory used as `LAMINA_HOME` and to hold disks and files.
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

    /// Returns a path under the home, as a string for argument lists.
    pub fn join(&self, name: &str) -> String {
        self.path().join(name).display().to_string()
    }

    /// Runs the `lamina` binary with `LAMINA_HOME` set to this home.
    pub fn lamina(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_lamina"))
            .args(args)
            .env("LAMINA_HOME", self.path())
            .env("RUST_BACKTRACE", "1")
            .output()
            .expect("run lamina")
    }

    /// Runs `lamina`, asserts success and returns standard output.
    pub fn ok(&self, args: &[&str]) -> String {
        let output = self.lamina(args);
        assert!(
            output.status.success(),
            "lamina {args:?} failed with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("utf-8 output")
    }

    /// Runs `lamina`, asserts exit code `expected` and returns standard
    /// error. Also asserts that the binary did not panic.
    pub fn fails(&self, args: &[&str], expected: i32) -> String {
        let output = self.lamina(args);
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert_eq!(
            output.status.code(),
            Some(expected),
            "lamina {args:?}: stderr {stderr}"
        );
        assert_no_panic(&stderr);
        stderr
    }

    /// Creates a disk without a filesystem and returns its path.
    pub fn disk(&self, name: &str, size: &str) -> String {
        let disk = self.join(name);
        self.ok(&["init", &disk, "--size", size, "--fs", "none"]);
        disk
    }

    /// Writes `data` to a file under the home and returns its path.
    pub fn file(&self, name: &str, data: &[u8]) -> String {
        let path = self.join(name);
        std::fs::write(&path, data).expect("write input file");
        path
    }
}

/// Asserts that standard error shows no panic and no backtrace.
pub fn assert_no_panic(stderr: &str) {
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    assert!(!stderr.contains("stack backtrace"), "backtrace: {stderr}");
}

/// Returns `len` bytes of a pattern that differs per `seed`.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u64).wrapping_mul(2_654_435_761).to_le_bytes()[1] ^ seed)
        .collect()
}

/// Returns the delta files of a disk directory.
pub fn delta_files(disk: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(disk)
        .expect("read disk dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "delta"))
        .collect();
    files.sort();
    files
}

/// XORs the byte at `offset` of `path` with 0xff.
pub fn flip_byte(path: &Path, offset: u64) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open for corruption");
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, offset).expect("read byte");
    byte[0] ^= 0xff;
    file.write_all_at(&byte, offset).expect("write byte");
}
