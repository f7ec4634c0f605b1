//! Starting init: the process tree behind `start`.
//!
//! The caller forks a short-lived child that starts a new session and
//! forks the monitor, so the container outlives the caller. The monitor
//! unshares the PID namespace and forks init, which becomes PID 1 there.
//! Init joins the cgroup, unshares the other namespaces, builds its root
//! and execs the container's init. The monitor relays the console pty to
//! the console log and reaps init. A close-on-exec pipe carries init's
//! host PID and any setup error to the caller. End of file after the PID
//! means that the exec succeeded.

use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Duration;

use nix::fcntl::OFlag;
use nix::sched::CloneFlags;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork};

use super::caps::drop_capabilities;
use super::child::{self, Command};
use super::error::RuntimeError;
use super::rootfs::{RootPlan, prepare_root};
use super::sys::LinuxSyscalls;

/// Everything init needs, prepared before the fork.
pub struct SpawnPlan {
    /// The container ID, for messages.
    pub ctid: String,
    /// The mounts.
    pub root: RootPlan,
    /// `cgroup.procs` files to write `0` to.
    pub procs_files: Vec<CString>,
    /// Init's command.
    pub init: Command,
    /// Capabilities to drop.
    pub drop_caps: Vec<u32>,
    /// The console log, opened for appending.
    pub log: File,
    /// The console pty: master and slave.
    pub console: (OwnedFd, OwnedFd),
}

/// The PIDs of a started container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spawned {
    /// Init's host PID.
    pub init_pid: i32,
    /// The monitor's PID.
    pub monitor_pid: i32,
}

/// Forks the process tree and returns once init runs or failed.
pub fn spawn(plan: &SpawnPlan) -> Result<Spawned, RuntimeError> {
    let (reader, writer) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(RuntimeError::sys("pipe"))?;

    // SAFETY: the child only runs `session_leader`, which forks again and
    // exits; it never returns into the caller's code.
    let first = match unsafe { fork() }.map_err(RuntimeError::sys("fork"))? {
        ForkResult::Child => {
            drop(reader);
            session_leader(plan, writer.as_raw_fd())
        }
        ForkResult::Parent { child } => child,
    };
    drop(writer);
    // The first child exits right after forking the monitor.
    let _ = waitpid(first, None);

    let report = read_report(reader)?;
    parse_report(&plan.ctid, &report)
}

fn read_report(reader: OwnedFd) -> Result<String, RuntimeError> {
    let mut text = String::new();
    File::from(reader)
        .read_to_string(&mut text)
        .map_err(|err| RuntimeError::io("read", "the start report pipe", err))?;
    Ok(text)
}

/// Parses the pipe's text: `monitor N`, `pid N`, then `error ...` lines on
/// failure.
pub fn parse_report(ctid: &str, text: &str) -> Result<Spawned, RuntimeError> {
    let field = |key: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(key))
            .and_then(|v| v.trim().parse::<i32>().ok())
    };
    let errors: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("error "))
        .collect();
    let setup = |message: String| RuntimeError::Setup {
        ctid: ctid.to_string(),
        message,
    };
    if !errors.is_empty() {
        return Err(setup(errors.join("; ")));
    }
    match (field("pid "), field("monitor ")) {
        (Some(init_pid), Some(monitor_pid)) => Ok(Spawned {
            init_pid,
            monitor_pid,
        }),
        _ => Err(setup(
            "init exited before it reported; see the console log".into(),
        )),
    }
}

fn session_leader(plan: &SpawnPlan, report: RawFd) -> ! {
    if let Err(err) = nix::unistd::setsid() {
        child::fail(report, &format!("setsid: {err}"));
    }
    // SAFETY: the child runs `monitor`, which never returns.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => monitor(plan, report),
        Ok(ForkResult::Parent { .. }) => child::exit(0),
        Err(err) => child::fail(report, &format!("fork: {err}")),
    }
}

fn monitor(plan: &SpawnPlan, report: RawFd) -> ! {
    // The name shows in ps; the fork copied the caller's.
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"lamina-monitor".as_ptr(), 0, 0, 0) };
    if let Err(err) = nix::sched::unshare(CloneFlags::CLONE_NEWPID) {
        child::fail(report, &format!("unshare the PID namespace: {err}"));
    }
    // SAFETY: the child runs `init`, which execs or exits.
    let init_pid = match unsafe { fork() } {
        Ok(ForkResult::Child) => init(plan, report),
        Ok(ForkResult::Parent { child }) => child,
        Err(err) => child::fail(report, &format!("fork init: {err}")),
    };
    let monitor_pid = std::process::id();
    child::report(report, &format!("monitor {monitor_pid}\npid {init_pid}\n"));

    let master = plan.console.0.as_raw_fd();
    let log = plan.log.as_raw_fd();
    if keep_only(master, log).is_err() {
        // Without the console the container still runs; only the log is lost.
        let _ = waitpid(init_pid, None);
        child::exit(0);
    }
    relay_console(init_pid);
    child::exit(0)
}

/// Moves the console master to fd 3 and the log to fd 4 and points stdio
/// at /dev/null. Everything else is closed, so the monitor keeps no fd of
/// the caller, such as a pipe that a test harness reads to its end.
fn keep_only(master: RawFd, log: RawFd) -> nix::Result<()> {
    let high = |fd: RawFd| nix::fcntl::fcntl(fd_ref(fd), nix::fcntl::FcntlArg::F_DUPFD(10));
    let master = high(master)?;
    let log = high(log)?;
    child::dup_onto(master, 3)?;
    child::dup_onto(log, 4)?;
    let null = nix::fcntl::open("/dev/null", OFlag::O_RDWR, nix::sys::stat::Mode::empty())?;
    for fd in 0..3 {
        child::dup_onto(null.as_raw_fd(), fd)?;
    }
    child::close_from(5);
    std::mem::forget(null);
    Ok(())
}

fn fd_ref(fd: RawFd) -> std::os::fd::BorrowedFd<'static> {
    // SAFETY: the fd stays open for the whole life of the forked monitor.
    unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }
}

/// The console log is cut back to empty when it reaches this size.
const LOG_LIMIT: u64 = 16 << 20;

/// Copies the console (fd 3) to the log (fd 4) until init is gone.
fn relay_console(init_pid: Pid) {
    let mut buf = [0u8; 4096];
    let mut written = 0u64;
    let mut console_open = true;
    loop {
        if console_open {
            let mut fds = [libc::pollfd {
                fd: 3,
                events: libc::POLLIN,
                revents: 0,
            }];
            // SAFETY: fds is a valid array of one pollfd.
            let ready = unsafe { libc::poll(fds.as_mut_ptr(), 1, 500) };
            if ready > 0 {
                // SAFETY: buf is a live buffer of the given length.
                let n = unsafe { libc::read(3, buf.as_mut_ptr().cast(), buf.len()) };
                match usize::try_from(n) {
                    Ok(n) if n > 0 => {
                        written += n as u64;
                        if written > LOG_LIMIT {
                            // SAFETY: ftruncate(2) on the log fd; O_APPEND
                            // puts the next write at the new end.
                            unsafe { libc::ftruncate(4, 0) };
                            written = 0;
                        }
                        child::write_bytes(4, &buf[..n]);
                    }
                    // EIO: no process has the slave open at the moment.
                    _ => console_open = false,
                }
            }
        } else {
            std::thread::sleep(Duration::from_millis(200));
            console_open = true;
        }
        match waitpid(init_pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {}
            _ => break,
        }
    }
    // Init's last words (the shutdown messages) may still be buffered.
    loop {
        let mut fds = [libc::pollfd {
            fd: 3,
            events: libc::POLLIN,
            revents: 0,
        }];
        // SAFETY: fds is a valid array of one pollfd.
        if unsafe { libc::poll(fds.as_mut_ptr(), 1, 0) } <= 0 {
            return;
        }
        // SAFETY: buf is a live buffer of the given length.
        let n = unsafe { libc::read(3, buf.as_mut_ptr().cast(), buf.len()) };
        match usize::try_from(n) {
            Ok(n) if n > 0 => child::write_bytes(4, &buf[..n]),
            _ => return,
        }
    }
}

fn init(plan: &SpawnPlan, report: RawFd) -> ! {
    for file in &plan.procs_files {
        if let Err(err) = super::join::write_zero(file) {
            child::fail(report, &format!("join cgroup {file:?}: {err}"));
        }
    }

    let flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWNET
        | CloneFlags::CLONE_NEWCGROUP;
    if let Err(err) = nix::sched::unshare(flags) {
        child::fail(report, &format!("unshare namespaces: {err}"));
    }
    if let Err(err) = prepare_root(&LinuxSyscalls, &plan.root) {
        child::fail(report, &err.to_string());
    }
    if let Err(err) = drop_capabilities(&plan.drop_caps) {
        child::fail(report, &format!("drop capabilities: {err}"));
    }

    // Init's streams are the container's /dev/console (the slave, bound
    // there), so that init finds its console under the usual name.
    let console = nix::fcntl::open("/dev/console", OFlag::O_RDWR, nix::sys::stat::Mode::empty());
    let console = match &console {
        Ok(fd) => fd.as_raw_fd(),
        Err(_) => plan.console.1.as_raw_fd(),
    };
    if let Err(err) = child::take_terminal(console) {
        child::fail(report, &format!("set up the console: {err}"));
    }
    if let Err(err) = child::cloexec_from(3) {
        child::fail(report, &format!("close host file descriptors: {err}"));
    }
    let status = plan.init.exec();
    let err = nix::Error::last();
    let name = &plan.init.name;
    child::report(report, &format!("error exec init {name}: {err}\n"));
    child::exit(status)
}
