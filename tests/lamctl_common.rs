//! Helpers shared by the `lamctl` integration tests: a temp `LAMINA_HOME`
//! with the busybox template, a runner for the binary, snapshots of the
//! home's files, and cleanup of every container, mount and server on drop.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// A temp directory used as `LAMINA_HOME` with the busybox template in its
/// cache. Dropping it stops and unmounts everything under it.
pub struct Home {
    pub dir: tempfile::TempDir,
}

/// Builds the busybox template once and returns its path. It is kept in
/// cargo's test temp directory (under `target/`), in a directory named by
/// a hash of `scripts/make-template`, so later test binaries and runs reuse
/// it and a changed script builds a new one.
fn busybox_template() -> &'static Path {
    static TEMPLATE: OnceLock<PathBuf> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        use std::hash::{Hash, Hasher};

        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/make-template");
        let text = std::fs::read(&script).expect("read scripts/make-template");
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        text.hash(&mut hasher);
        let root = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let cache = root.join(format!("busybox-template-{:016x}", hasher.finish()));
        let path = cache.join("busybox.tar.gz");
        if path.exists() {
            return path;
        }

        // Build beside the final place and rename, so that a test binary
        // running at the same time never reads a half-written template.
        std::fs::create_dir_all(root).expect("create the test temp directory");
        let build = tempfile::tempdir_in(root).expect("tempdir");
        let status = Command::new(&script)
            .args(["busybox", "--cache"])
            .arg(build.path())
            .stdout(std::process::Stdio::null())
            .status()
            .expect("run make-template");
        assert!(status.success(), "make-template busybox failed");
        match std::fs::rename(build.path(), &cache) {
            Ok(()) => {}
            // Another test binary renamed its build into place first.
            Err(_) if path.exists() => {}
            Err(error) => panic!("move the template to {}: {error}", cache.display()),
        }
        path
    })
}

impl Home {
    pub fn new() -> Home {
        let home = Home {
            dir: tempfile::tempdir().expect("tempdir"),
        };
        let cache = home.path().join("template/cache");
        std::fs::create_dir_all(&cache).expect("create cache");
        std::fs::copy(busybox_template(), cache.join("busybox.tar.gz")).expect("copy template");
        home
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `lamctl` with `LAMINA_HOME` set to this home.
    pub fn lamctl(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_lamctl"))
            .args(args)
            .env("LAMINA_HOME", self.path())
            .output()
            .expect("run lamctl")
    }

    /// Runs `lamctl`, asserts success and returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let output = self.lamctl(args);
        assert!(
            output.status.success(),
            "lamctl {args:?} failed with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Runs `lamctl` and returns its exit code and stderr.
    pub fn fails(&self, args: &[&str]) -> (i32, String) {
        let output = self.lamctl(args);
        let code = output.status.code().unwrap_or(-1);
        (code, String::from_utf8_lossy(&output.stderr).into_owned())
    }

    /// Creates container `ctid` from the busybox template.
    pub fn create(&self, ctid: &str, extra: &[&str]) {
        let mut args = vec![
            "create",
            ctid,
            "--ostemplate",
            "busybox",
            "--diskspace",
            "256M",
        ];
        args.extend_from_slice(extra);
        self.ok(&args);
    }

    /// Returns every path under the home except what any command may
    /// leave: the area directories, the sample configs the first command
    /// installs, and the image server's log files.
    pub fn files(&self) -> BTreeSet<PathBuf> {
        let mut files = BTreeSet::new();
        collect(self.path(), self.path(), &mut files);
        let areas = ["lock", "conf", "run", "private", "root"];
        files.retain(|p| {
            let text = p.to_string_lossy();
            let server_log = text.starts_with("run/") && text.ends_with(".log");
            !text.ends_with(".conf-sample") && !areas.contains(&text.as_ref()) && !server_log
        });
        files
    }

    /// Returns the mount points under this home.
    pub fn mounts(&self) -> Vec<PathBuf> {
        mounts_under(self.path())
    }

    /// Returns the loop devices whose backing file is under this home.
    pub fn loop_devices(&self) -> Vec<String> {
        let Ok(output) = Command::new("losetup").arg("-a").output() else {
            return Vec::new();
        };
        let home = self.path().to_string_lossy().into_owned();
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.lines()
            .filter(|line| line.contains(&home))
            .map(str::to_string)
            .collect()
    }

    /// Asserts that no mount or loop device of this home is left.
    pub fn assert_clean(&self) {
        assert_eq!(self.mounts(), Vec::<PathBuf>::new(), "mounts left behind");
        assert_eq!(
            self.loop_devices(),
            Vec::<String>::new(),
            "loop devices left behind"
        );
    }

    /// Returns the targets of every image server that `lamina list` shows
    /// for this home.
    fn server_targets(&self) -> Vec<PathBuf> {
        let Ok(output) = Command::new(env!("CARGO_BIN_EXE_lamina"))
            .args(["list", "--json"])
            .env("LAMINA_HOME", self.path())
            .output()
        else {
            return Vec::new();
        };
        let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
        let mounts = json.as_array().cloned().unwrap_or_default();
        mounts
            .iter()
            .filter_map(|m| m.get("target")?.as_str().map(PathBuf::from))
            .collect()
    }

    fn containers(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.path().join("conf")) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_suffix(".conf")
                    .map(str::to_string)
            })
            .collect()
    }
}

fn collect(base: &Path, dir: &Path, out: &mut BTreeSet<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        out.insert(path.strip_prefix(base).unwrap_or(&path).to_path_buf());
        if entry.file_type().is_ok_and(|t| t.is_dir()) && !is_mount_point(&path) {
            collect(base, &path, out);
        }
    }
}

fn mount_points() -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(field.replace("\\040", " ")))
        .collect()
}

fn is_mount_point(path: &Path) -> bool {
    let real = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    mount_points().contains(&real)
}

fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let real = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    mount_points()
        .into_iter()
        .filter(|m| m.starts_with(&real))
        .collect()
}

impl Drop for Home {
    fn drop(&mut self) {
        for ctid in self.containers() {
            let _ = self.lamctl(&["stop", "--fast", &ctid]);
            let _ = self.lamctl(&["umount", &ctid]);
        }
        // Every image server of this home, including snapshot mounts whose
        // target lies outside it.
        for target in self.server_targets() {
            let _ = Command::new(env!("CARGO_BIN_EXE_lamina"))
                .args(["umount", "--force"])
                .arg(&target)
                .env("LAMINA_HOME", self.path())
                .output();
        }
        // Whatever is still mounted under the home: force.
        let mut leftovers = self.mounts();
        leftovers.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
        for target in leftovers {
            let _ = Command::new(env!("CARGO_BIN_EXE_lamina"))
                .args(["umount", "--force"])
                .arg(&target)
                .env("LAMINA_HOME", self.path())
                .output();
            if is_mount_point(&target) {
                let _ = Command::new("umount").arg("-l").arg(&target).status();
            }
        }
    }
}
