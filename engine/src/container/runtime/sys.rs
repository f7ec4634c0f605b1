//! The system calls of the runtime behind a trait, so that the sequence of
//! mounts and signals is unit-tested with a recording fake.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use nix::mount::{MntFlags, MsFlags};

/// The arguments of one mount(2) call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountCall {
    /// The source, `None` for propagation changes.
    pub source: Option<PathBuf>,
    /// The mount point.
    pub target: PathBuf,
    /// The filesystem type, `None` for binds and remounts.
    pub fstype: Option<String>,
    /// mount(2) flags.
    pub flags: MsFlags,
    /// Filesystem options.
    pub data: Option<String>,
}

/// The system calls the runtime makes on its own behalf.
pub trait Syscalls {
    /// Calls mount(2).
    fn mount(&self, call: &MountCall) -> nix::Result<()>;
    /// Calls umount2(2).
    fn umount2(&self, target: &Path, flags: MntFlags) -> nix::Result<()>;
    /// Calls pivot_root(2).
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> nix::Result<()>;
    /// Calls chdir(2).
    fn chdir(&self, path: &Path) -> nix::Result<()>;
    /// Creates a directory (and its parents) with mode 0755.
    fn mkdir_all(&self, path: &Path) -> nix::Result<()>;
    /// Creates an empty regular file to bind a device node onto.
    fn touch(&self, path: &Path) -> nix::Result<()>;
    /// Creates a symbolic link at `link` pointing to `target`.
    fn symlink(&self, target: &Path, link: &Path) -> nix::Result<()>;
    /// Calls sethostname(2).
    fn sethostname(&self, name: &str) -> nix::Result<()>;
    /// Sends `signal` to `pid`; a missing process is not an error.
    fn kill(&self, pid: i32, signal: i32);
    /// Returns whether `pid` exists and is not a zombie.
    fn alive(&self, pid: i32) -> bool;
    /// Sleeps.
    fn sleep(&self, duration: Duration);
}

/// The real system calls.
#[derive(Debug, Default, Clone, Copy)]
pub struct LinuxSyscalls;

impl Syscalls for LinuxSyscalls {
    fn mount(&self, call: &MountCall) -> nix::Result<()> {
        nix::mount::mount(
            call.source.as_deref(),
            &call.target,
            call.fstype.as_deref(),
            call.flags,
            call.data.as_deref(),
        )
    }

    fn umount2(&self, target: &Path, flags: MntFlags) -> nix::Result<()> {
        nix::mount::umount2(target, flags)
    }

    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> nix::Result<()> {
        nix::unistd::pivot_root(new_root, put_old)
    }

    fn chdir(&self, path: &Path) -> nix::Result<()> {
        nix::unistd::chdir(path)
    }

    fn mkdir_all(&self, path: &Path) -> nix::Result<()> {
        std::fs::create_dir_all(path).map_err(io_errno)
    }

    fn touch(&self, path: &Path) -> nix::Result<()> {
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map(drop)
            .map_err(io_errno)
    }

    fn symlink(&self, target: &Path, link: &Path) -> nix::Result<()> {
        std::os::unix::fs::symlink(target, link).map_err(io_errno)
    }

    fn sethostname(&self, name: &str) -> nix::Result<()> {
        nix::unistd::sethostname(name)
    }

    fn kill(&self, pid: i32, signal: i32) {
        // SAFETY: kill(2) takes plain integers and touches no memory.
        unsafe { libc::kill(pid, signal) };
    }

    fn alive(&self, pid: i32) -> bool {
        process_alive(pid)
    }

    fn sleep(&self, duration: Duration) {
        std::thread::sleep(duration);
    }
}

/// Returns whether `pid` exists and is not a zombie, from `/proc/PID/stat`.
pub fn process_alive(pid: i32) -> bool {
    proc_stat(pid).is_some_and(|stat| stat.state != 'Z' && stat.state != 'X')
}

/// The fields of `/proc/PID/stat` the runtime uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// The state letter (R, S, D, Z, ...).
    pub state: char,
    /// Start time in clock ticks after boot, which distinguishes a reused PID.
    pub start_time: u64,
}

/// Reads the state and start time of `pid` (proc(5), fields 3 and 22).
pub fn proc_stat(pid: i32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields after
    // the last ')' are space separated.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let start_time = fields.get(19)?.parse().ok()?;
    Some(ProcStat { state, start_time })
}

fn io_errno(err: std::io::Error) -> nix::Error {
    nix::Error::from_raw(err.raw_os_error().unwrap_or(libc::EIO))
}

/// Converts a path to a C string; paths with NUL bytes become an error.
pub fn cstring(path: &Path) -> nix::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| nix::Error::EINVAL)
}

/// One recorded call of [`RecordingSyscalls`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// mount(2).
    Mount(MountCall),
    /// umount2(2).
    Umount(PathBuf),
    /// pivot_root(2).
    PivotRoot(PathBuf, PathBuf),
    /// chdir(2).
    Chdir(PathBuf),
    /// A directory creation.
    Mkdir(PathBuf),
    /// A file creation.
    Touch(PathBuf),
    /// A symlink creation (target, link).
    Symlink(PathBuf, PathBuf),
    /// sethostname(2).
    Hostname(String),
    /// kill(2) (pid, signal).
    Kill(i32, i32),
    /// A sleep.
    Sleep(Duration),
}

/// A fake that records every call and succeeds. Processes are alive until
/// they receive one of the signals in `fatal`.
#[derive(Debug, Default)]
pub struct RecordingSyscalls {
    /// The calls so far.
    pub calls: Mutex<Vec<Call>>,
    /// PIDs that exist.
    pub alive: Mutex<Vec<i32>>,
    /// Signals that end a process in this fake.
    pub fatal: Vec<i32>,
}

impl RecordingSyscalls {
    fn record(&self, call: Call) {
        self.calls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(call);
    }

    /// Returns a copy of the recorded calls.
    pub fn calls(&self) -> Vec<Call> {
        self.calls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl Syscalls for RecordingSyscalls {
    fn mount(&self, call: &MountCall) -> nix::Result<()> {
        self.record(Call::Mount(call.clone()));
        Ok(())
    }

    fn umount2(&self, target: &Path, _flags: MntFlags) -> nix::Result<()> {
        self.record(Call::Umount(target.to_path_buf()));
        Ok(())
    }

    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> nix::Result<()> {
        self.record(Call::PivotRoot(new_root.into(), put_old.into()));
        Ok(())
    }

    fn chdir(&self, path: &Path) -> nix::Result<()> {
        self.record(Call::Chdir(path.into()));
        Ok(())
    }

    fn mkdir_all(&self, path: &Path) -> nix::Result<()> {
        self.record(Call::Mkdir(path.into()));
        Ok(())
    }

    fn touch(&self, path: &Path) -> nix::Result<()> {
        self.record(Call::Touch(path.into()));
        Ok(())
    }

    fn symlink(&self, target: &Path, link: &Path) -> nix::Result<()> {
        self.record(Call::Symlink(target.into(), link.into()));
        Ok(())
    }

    fn sethostname(&self, name: &str) -> nix::Result<()> {
        self.record(Call::Hostname(name.to_string()));
        Ok(())
    }

    fn kill(&self, pid: i32, signal: i32) {
        self.record(Call::Kill(pid, signal));
        if self.fatal.contains(&signal) {
            let mut alive = self
                .alive
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            alive.retain(|&p| p != pid);
        }
    }

    fn alive(&self, pid: i32) -> bool {
        self.alive
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(&pid)
    }

    fn sleep(&self, duration: Duration) {
        self.record(Call::Sleep(duration));
    }
}
