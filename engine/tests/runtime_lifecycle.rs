//! Root tests of the container runtime on a busybox root in a temp dir:
//! start, status, exec, limits, hostname, enter, stop.

use std::fs;
use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use lamina_engine::container::runtime::{
    self, ExecOptions, Limits, StartSpec, Status, caps, cgroup::CgroupLayout,
};

const APPLETS: [&str; 17] = [
    "sh", "cat", "echo", "hostname", "sleep", "ls", "grep", "true", "false", "test", "stty",
    "mount", "mkdir", "ps", "mknod", "readlink", "head",
];

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A busybox container in a temp dir; stops the container on drop.
struct Fixture {
    dir: tempfile::TempDir,
    ctid: String,
}

impl Fixture {
    fn new() -> Self {
        let busybox = Path::new("/bin/busybox");
        assert!(
            busybox.exists(),
            "/bin/busybox is missing: install Debian's busybox-static"
        );
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        for sub in ["bin", "sbin", "etc", "root", "tmp"] {
            fs::create_dir_all(root.join(sub)).unwrap();
        }
        // A copy made in this process would keep a write fd open while
        // another test forks, and the forked child would inherit it: exec
        // of the copy then fails with ETXTBSY. cp writes in its own process.
        let copied = std::process::Command::new("cp")
            .arg(busybox)
            .arg(root.join("bin/busybox"))
            .status()
            .unwrap();
        assert!(copied.success(), "cp {} failed", busybox.display());
        for applet in APPLETS {
            symlink("busybox", root.join("bin").join(applet)).unwrap();
        }
        symlink("/bin/busybox", root.join("sbin/init")).unwrap();
        let inittab = "::sysinit:/bin/echo lamina-booted\n::shutdown:/bin/echo lamina-shutdown\n";
        fs::write(root.join("etc/inittab"), inittab).unwrap();
        fs::write(root.join("etc/hostname"), "ct-from-file\n").unwrap();
        fs::write(dir.path().join("host-secret"), "secret\n").unwrap();

        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let ctid = format!("rt-test-{}-{n}", std::process::id());
        Self { dir, ctid }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    fn spec(&self) -> StartSpec {
        let mut spec = StartSpec::new(&self.ctid, &self.root(), &self.state_dir());
        spec.hostname = Some("ct-test".to_string());
        spec
    }

    fn start(&self) -> i32 {
        runtime::start(&self.spec()).unwrap().init_pid
    }

    /// Runs argv inside and returns (status, stdout).
    fn exec(&self, argv: &[&str]) -> (i32, String) {
        let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        let (reader, writer) = nix::unistd::pipe().unwrap();
        let options = ExecOptions {
            stdout: Some(writer.as_fd()),
            timeout: Some(Duration::from_secs(60)),
            ..ExecOptions::default()
        };
        let status = runtime::exec(&self.ctid, &self.state_dir(), &argv, &options).unwrap();
        drop(options);
        drop(writer);
        let mut out = String::new();
        fs::File::from(reader).read_to_string(&mut out).unwrap();
        (status, out)
    }

    fn memory_dir(&self) -> Option<PathBuf> {
        let layout = CgroupLayout::detect().unwrap();
        let memory = layout.controller("memory")?;
        Some(memory.mount.join("lamina").join(&self.ctid))
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = runtime::stop(&self.ctid, &self.state_dir(), Duration::ZERO, true);
    }
}

fn running_pid(fixture: &Fixture) -> i32 {
    match runtime::status(&fixture.ctid, &fixture.state_dir()).unwrap() {
        Status::Running { init_pid, nproc } => {
            assert!(nproc >= 1, "nproc {nproc}");
            init_pid
        }
        Status::Stopped => panic!("container {} is not running", fixture.ctid),
    }
}

#[test]
fn start_exec_stop_lifecycle() {
    let fixture = Fixture::new();
    let init_pid = fixture.start();
    assert_eq!(running_pid(&fixture), init_pid);

    let (code, out) = fixture.exec(&["cat", "/etc/hostname"]);
    assert_eq!(code, 0);
    assert_eq!(out, "ct-from-file\n");

    let (code, out) = fixture.exec(&["hostname"]);
    assert_eq!(code, 0);
    assert_eq!(out.trim(), "ct-test");

    let (code, out) = fixture.exec(&["cat", "/proc/1/cmdline"]);
    assert_eq!(code, 0);
    // busybox init rewrites its argv[0] to "init".
    let argv0 = out.split('\0').next().unwrap();
    assert!(argv0.ends_with("init"), "PID 1 runs {out:?}");
    let (_, exe) = fixture.exec(&["readlink", "/proc/1/exe"]);
    assert_eq!(exe.trim(), "/bin/busybox");

    let state_dir = fixture.state_dir();
    runtime::stop(&fixture.ctid, &state_dir, Duration::from_secs(30), false).unwrap();
    assert!(
        !Path::new(&format!("/proc/{init_pid}")).exists(),
        "init {init_pid} survived"
    );
    assert_eq!(
        runtime::status(&fixture.ctid, &state_dir).unwrap(),
        Status::Stopped
    );
    if let Some(memory) = fixture.memory_dir() {
        assert!(!memory.exists(), "{} was not removed", memory.display());
    }
    let log = fs::read_to_string(state_dir.join("console.log")).unwrap();
    assert!(log.contains("lamina-booted"), "console log: {log:?}");
    assert!(log.contains("lamina-shutdown"), "console log: {log:?}");
}

#[test]
fn exec_returns_command_status() {
    let fixture = Fixture::new();
    fixture.start();
    assert_eq!(fixture.exec(&["true"]).0, 0);
    assert_eq!(fixture.exec(&["sh", "-c", "exit 3"]).0, 3);
    assert_eq!(fixture.exec(&["no-such-command"]).0, 127);
    assert_eq!(fixture.exec(&["/etc/inittab"]).0, 126);
    assert_eq!(fixture.exec(&["sh", "-c", "kill -9 $$"]).0, 128 + 9);
}

#[test]
fn host_paths_are_invisible() {
    let fixture = Fixture::new();
    fixture.start();
    let secret = fixture.dir.path().join("host-secret");
    let secret = secret.to_str().unwrap();
    assert_eq!(fixture.exec(&["test", "-e", secret]).0, 1);
    let (_, mounts) = fixture.exec(&["cat", "/proc/self/mountinfo"]);
    let temp = fixture.dir.path().to_str().unwrap();
    assert!(!mounts.contains(" /work"), "host mount visible: {mounts}");
    let (_, root_listing) = fixture.exec(&["ls", "/"]);
    assert!(!root_listing.contains("host-secret"), "{root_listing}");
    assert!(!root_listing.contains(temp), "{root_listing}");
}

#[test]
fn dropped_capabilities_are_absent_inside() {
    let fixture = Fixture::new();
    fixture.start();
    let (code, out) = fixture.exec(&["grep", "CapBnd", "/proc/self/status"]);
    assert_eq!(code, 0);
    let hex = out.split_whitespace().nth(1).unwrap();
    let bounding = u64::from_str_radix(hex, 16).unwrap();
    for (cap, why) in caps::DROPPED {
        assert_eq!(bounding & (1 << cap), 0, "{why} still in CapBnd {hex}");
    }
    let cap_sys_admin = 21;
    assert_ne!(
        bounding & (1 << cap_sys_admin),
        0,
        "CAP_SYS_ADMIN missing: {hex}"
    );

    let (_, out) = fixture.exec(&["grep", "CapEff", "/proc/self/status"]);
    let hex = out.split_whitespace().nth(1).unwrap();
    let effective = u64::from_str_radix(hex, 16).unwrap();
    assert_eq!(effective & (1 << 16), 0, "CAP_SYS_MODULE effective: {hex}");
}

#[test]
fn apply_limits_changes_memory_limit() {
    let fixture = Fixture::new();
    fixture.start();
    let Some(memory) = fixture.memory_dir() else {
        panic!("no memory controller on this host");
    };
    let limits = Limits {
        ram: Some(64 << 20),
        swap: Some(32 << 20),
        numproc: Some(100),
        cpulimit: Some(50),
        cpuunits: Some(500),
        ..Limits::default()
    };
    runtime::apply_limits(&fixture.ctid, &limits).unwrap();
    let read = |file: &str| {
        fs::read_to_string(memory.join(file))
            .unwrap()
            .trim()
            .to_string()
    };
    if memory.join("memory.limit_in_bytes").exists() {
        assert_eq!(read("memory.limit_in_bytes"), (64u64 << 20).to_string());
        if memory.join("memory.memsw.limit_in_bytes").exists() {
            assert_eq!(
                read("memory.memsw.limit_in_bytes"),
                (96u64 << 20).to_string()
            );
        }
    } else {
        assert_eq!(read("memory.max"), (64u64 << 20).to_string());
    }

    // Lower below the old swap total, then raise again: the v1 order of
    // writes must keep limit <= memsw at every step.
    let lower = Limits {
        ram: Some(48 << 20),
        swap: Some(0),
        ..Limits::default()
    };
    runtime::apply_limits(&fixture.ctid, &lower).unwrap();
    let higher = Limits {
        ram: Some(256 << 20),
        swap: Some(256 << 20),
        ..Limits::default()
    };
    runtime::apply_limits(&fixture.ctid, &higher).unwrap();
    if memory.join("memory.limit_in_bytes").exists() {
        assert_eq!(read("memory.limit_in_bytes"), (256u64 << 20).to_string());
    }
    let (code, _) = fixture.exec(&["true"]);
    assert_eq!(code, 0);
}

#[test]
fn set_hostname_applies_live() {
    let fixture = Fixture::new();
    fixture.start();
    runtime::set_hostname(&fixture.ctid, &fixture.state_dir(), "renamed").unwrap();
    assert_eq!(fixture.exec(&["hostname"]).1.trim(), "renamed");
    let host = nix::unistd::gethostname().unwrap();
    assert_ne!(host.to_str(), Some("renamed"));
}

#[test]
fn start_twice_is_rejected() {
    let fixture = Fixture::new();
    fixture.start();
    let err = runtime::start(&fixture.spec()).unwrap_err();
    assert!(
        matches!(err, runtime::RuntimeError::AlreadyRunning { .. }),
        "{err}"
    );
}

#[test]
fn stop_fast_kills_everything() {
    let fixture = Fixture::new();
    let init_pid = fixture.start();
    let (code, _) = fixture.exec(&[
        "sh",
        "-c",
        "sleep 1000 >/dev/null & sleep 1000 >/dev/null & exit 0",
    ]);
    assert_eq!(code, 0);
    let nproc = match runtime::status(&fixture.ctid, &fixture.state_dir()).unwrap() {
        Status::Running { nproc, .. } => nproc,
        Status::Stopped => panic!("stopped"),
    };
    assert!(nproc >= 3, "nproc {nproc}");
    let procs_file = fixture.memory_dir().map(|d| d.join("ct/cgroup.procs"));
    let pids_before = procs_file
        .as_ref()
        .map(|f| fs::read_to_string(f).unwrap())
        .unwrap_or_default();

    runtime::stop(&fixture.ctid, &fixture.state_dir(), Duration::ZERO, true).unwrap();
    assert!(!Path::new(&format!("/proc/{init_pid}")).exists());
    for pid in pids_before.split_whitespace() {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(
            stat.is_empty() || stat.contains(") Z"),
            "process {pid} survived: {stat}"
        );
    }
    if let Some(file) = procs_file {
        assert!(!file.exists());
    }
    let err = runtime::stop(&fixture.ctid, &fixture.state_dir(), Duration::ZERO, true).unwrap_err();
    assert!(
        matches!(err, runtime::RuntimeError::NotRunning { .. }),
        "{err}"
    );
    let err = runtime::apply_limits(&fixture.ctid, &Limits::default()).unwrap_err();
    assert!(
        matches!(err, runtime::RuntimeError::NotRunning { .. }),
        "{err}"
    );
}

#[test]
fn missing_init_fails_start_cleanly() {
    let fixture = Fixture::new();
    let mut spec = fixture.spec();
    spec.init = vec!["/sbin/no-such-init".to_string()];
    let err = runtime::start(&spec).unwrap_err();
    assert!(err.to_string().contains("no-such-init"), "{err}");
    assert_eq!(
        runtime::status(&fixture.ctid, &fixture.state_dir()).unwrap(),
        Status::Stopped
    );
    if let Some(memory) = fixture.memory_dir() {
        assert!(!memory.exists(), "{} left behind", memory.display());
    }
}

fn set_winsize(fd: std::os::fd::BorrowedFd<'_>, rows: u16, cols: u16) {
    use std::os::fd::AsRawFd;
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from `size`.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &size) };
    assert_eq!(rc, 0);
}

/// Reads the pty master until `needle` shows up or the reader thread ends.
fn read_until(master: &std::os::fd::OwnedFd, output: &mut String, needle: &str) {
    use std::os::fd::AsRawFd;
    let mut buf = [0u8; 1024];
    while !output.contains(needle) {
        let mut fds = [libc::pollfd {
            fd: master.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        // SAFETY: one valid pollfd.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), 1, 30_000) };
        assert!(ready > 0, "no output; got so far: {output:?}");
        match nix::unistd::read(master.as_fd(), &mut buf) {
            Ok(n) if n > 0 => output.push_str(&String::from_utf8_lossy(&buf[..n])),
            other => panic!("pty read ended with {other:?}; got {output:?}"),
        }
    }
}

#[test]
fn enter_relays_a_pty_and_window_size() {
    let fixture = Fixture::new();
    fixture.start();
    let pty = nix::pty::openpty(None, None).unwrap();
    set_winsize(pty.slave.as_fd(), 33, 77);

    let ctid = fixture.ctid.clone();
    let state_dir = fixture.state_dir();
    let slave = pty.slave;
    let script = "stty size; tty; read line; stty size; exit 5";
    let session = std::thread::spawn(move || {
        let argv: Vec<String> = ["sh", "-c", script].iter().map(|s| s.to_string()).collect();
        runtime::enter_on(
            &ctid,
            &state_dir,
            Some(&argv),
            slave.as_fd(),
            slave.as_fd(),
            &mut || {},
        )
    });

    let mut output = String::new();
    read_until(&pty.master, &mut output, "/dev/pts/");
    assert!(output.contains("33 77"), "first size: {output:?}");

    // The resize reaches the session before the line that the shell
    // waits for.
    set_winsize(pty.master.as_fd(), 40, 100);
    nix::sys::signal::raise(nix::sys::signal::Signal::SIGWINCH).unwrap();
    nix::unistd::write(&pty.master, b"go\r").unwrap();
    read_until(&pty.master, &mut output, "40 100");

    let status = session.join().unwrap().unwrap();
    assert_eq!(status, 5, "output: {output:?}");
}

#[test]
fn v1_freezer_kill_empties_the_real_group() {
    use lamina_engine::container::runtime::{cgroup::Version, state::State, sys::LinuxSyscalls};

    let fixture = Fixture::new();
    let init_pid = fixture.start();
    let (code, _) = fixture.exec(&["sh", "-c", "sleep 1000 >/dev/null & exit 0"]);
    assert_eq!(code, 0);
    let state = State::load(&fixture.state_dir()).unwrap().unwrap();
    let mut v1_only = state.cgroup.clone();
    v1_only.dirs.retain(|d| d.version == Version::V1);
    let has_freezer = v1_only
        .dirs
        .iter()
        .any(|d| d.controllers.iter().any(|c| c == "freezer"));
    assert!(has_freezer, "this host has no v1 freezer: {v1_only:?}");
    assert!(v1_only.procs().unwrap().len() >= 2);

    let remaining = v1_only
        .kill_all(&LinuxSyscalls, Duration::from_secs(10))
        .unwrap();
    assert_eq!(remaining, 0);
    assert!(v1_only.procs().unwrap().is_empty());
    let stat = fs::read_to_string(format!("/proc/{init_pid}/stat")).unwrap_or_default();
    assert!(
        stat.is_empty() || stat.contains(") Z"),
        "init survived: {stat}"
    );

    // The next status notices the dead init and cleans up.
    assert_eq!(
        runtime::status(&fixture.ctid, &fixture.state_dir()).unwrap(),
        Status::Stopped
    );
    assert!(!state.cgroup.exists());
}

#[test]
fn dead_init_is_cleaned_up_by_status() {
    let fixture = Fixture::new();
    let init_pid = fixture.start();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(init_pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // SIGKILL is delivered asynchronously: wait until init is gone or a
    // zombie, which status must not report as running.
    let dying = || {
        let stat = fs::read_to_string(format!("/proc/{init_pid}/stat")).unwrap_or_default();
        !stat.is_empty() && !stat.contains(") Z")
    };
    for _ in 0..1000 {
        if !dying() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        runtime::status(&fixture.ctid, &fixture.state_dir()).unwrap(),
        Status::Stopped
    );
    assert!(!fixture.state_dir().join("state.json").exists());
    if let Some(memory) = fixture.memory_dir() {
        assert!(!memory.exists(), "{} left behind", memory.display());
    }
    let err = runtime::exec(
        &fixture.ctid,
        &fixture.state_dir(),
        &["true".to_string()],
        &ExecOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(err, runtime::RuntimeError::NotRunning { .. }),
        "{err}"
    );
}

#[test]
fn start_with_wait_and_limits() {
    let fixture = Fixture::new();
    let mut spec = fixture.spec();
    spec.wait = true;
    spec.limits = Limits {
        ram: Some(128 << 20),
        numproc: Some(50),
        ..Limits::default()
    };
    runtime::start(&spec).unwrap();
    if let Some(memory) = fixture.memory_dir() {
        let limit = fs::read_to_string(memory.join("memory.limit_in_bytes")).unwrap();
        assert_eq!(limit.trim(), (128u64 << 20).to_string());
    }
    let (code, _) = fixture.exec(&["true"]);
    assert_eq!(code, 0);
}

#[test]
fn init_holds_no_host_fds() {
    let fixture = Fixture::new();
    fixture.start();
    let (code, out) = fixture.exec(&["ls", "/proc/1/fd"]);
    assert_eq!(code, 0);
    let fds: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(fds, ["0", "1", "2"], "init's fds");
    let (_, console) = fixture.exec(&["readlink", "/proc/1/fd/1"]);
    assert_eq!(console.trim(), "/dev/console");
}

#[test]
fn host_block_devices_are_denied() {
    let fixture = Fixture::new();
    fixture.start();
    // Loop device 0 (block 7:0): the devices cgroup (v1) denies opening
    // it; without one, CAP_MKNOD is dropped and mknod itself fails.
    let script = "mknod /tmp/disk b 7 0 2>/dev/null; head -c 1 /tmp/disk >/dev/null 2>&1";
    let (code, _) = fixture.exec(&["sh", "-c", script]);
    assert_ne!(code, 0, "a host block device was readable inside");
    let (code, _) = fixture.exec(&["head", "-c", "1", "/dev/zero"]);
    assert_eq!(code, 0, "/dev/zero must stay usable");
}

#[test]
fn enter_defaults_to_login_shell() {
    let fixture = Fixture::new();
    fixture.start();
    let pty = nix::pty::openpty(None, None).unwrap();
    let ctid = fixture.ctid.clone();
    let state_dir = fixture.state_dir();
    let slave = pty.slave;
    let session = std::thread::spawn(move || {
        runtime::enter_on(
            &ctid,
            &state_dir,
            None,
            slave.as_fd(),
            slave.as_fd(),
            &mut || {},
        )
    });
    nix::unistd::write(&pty.master, b"echo shell=$0 home=$HOME; exit 7\r").unwrap();
    let mut output = String::new();
    read_until(&pty.master, &mut output, "home=/root");
    assert!(output.contains("shell=-sh"), "{output:?}");
    assert_eq!(session.join().unwrap().unwrap(), 7, "{output:?}");
}

#[test]
fn limits_are_outside_the_cgroup_namespace() {
    let fixture = Fixture::new();
    let mut spec = fixture.spec();
    spec.limits.ram = Some(64 << 20);
    runtime::start(&spec).unwrap();
    let Some(memory) = fixture.memory_dir() else {
        panic!("no memory controller on this host");
    };

    let (_, cgroups) = fixture.exec(&["cat", "/proc/self/cgroup"]);
    for line in cgroups.lines() {
        assert!(line.ends_with(":/"), "cgroup path visible inside: {line}");
    }

    // Root inside mounts its memory hierarchy and writes to the root of
    // what it sees: that is the payload group, below the real limit.
    let script = "mkdir -p /tmp/m && mount -t cgroup -o memory none /tmp/m && \
                  echo 1073741824 > /tmp/m/memory.limit_in_bytes";
    let (code, _) = fixture.exec(&["sh", "-c", script]);
    assert_eq!(code, 0, "the mount or the write inside failed");
    let limit = fs::read_to_string(memory.join("memory.limit_in_bytes")).unwrap();
    assert_eq!(limit.trim(), (64u64 << 20).to_string());
    let payload = fs::read_to_string(memory.join("ct/memory.limit_in_bytes")).unwrap();
    assert_eq!(payload.trim(), "1073741824");
}
