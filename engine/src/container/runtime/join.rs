//! Running a process inside a running container: join its cgroup and
//! namespaces, take its root, then fork so that the child is inside the
//! PID namespace too (setns(2): a PID namespace join applies to children).

use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::sched::CloneFlags;
use nix::sys::stat::Mode;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork};

use super::caps::drop_capabilities;
use super::child::{self, Command};
use super::error::RuntimeError;
use super::state::State;

/// The namespaces joined, in order. The mount namespace comes last: it
/// replaces the root and the paths under /proc (vzctl does the same).
const NAMESPACES: [(&str, CloneFlags); 6] = [
    ("cgroup", CloneFlags::CLONE_NEWCGROUP),
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("net", CloneFlags::CLONE_NEWNET),
    ("pid", CloneFlags::CLONE_NEWPID),
    ("mnt", CloneFlags::CLONE_NEWNS),
];

/// The namespaces, root and cgroup of a container, opened before the fork.
pub struct Target {
    /// The container ID.
    pub ctid: String,
    /// Namespace fds in join order.
    pub namespaces: Vec<(OwnedFd, CloneFlags)>,
    /// The container's root directory.
    pub root: OwnedFd,
    /// `cgroup.procs` files to write `0` to.
    pub procs_files: Vec<CString>,
    /// Capabilities to drop.
    pub drop_caps: Vec<u32>,
}

impl Target {
    /// Opens the namespaces and root of the container's init; `only`
    /// limits the join to some namespaces (no cgroup, no root then).
    pub fn open(
        state: &State,
        only: Option<CloneFlags>,
        drop_caps: Vec<u32>,
    ) -> Result<Self, RuntimeError> {
        let pid = state.init_pid;
        let open = |path: String, flags: OFlag| {
            nix::fcntl::open(path.as_str(), flags | OFlag::O_CLOEXEC, Mode::empty()).map_err(
                RuntimeError::sys("open a namespace of the container's init"),
            )
        };
        let mut namespaces = Vec::new();
        for (name, flag) in NAMESPACES {
            if only.is_some_and(|only| !only.contains(flag)) {
                continue;
            }
            let fd = open(format!("/proc/{pid}/ns/{name}"), OFlag::O_RDONLY)?;
            namespaces.push((fd, flag));
        }
        let root = open(
            format!("/proc/{pid}/root"),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY,
        )?;
        let procs_files = if only.is_some() {
            Vec::new()
        } else {
            state
                .cgroup
                .procs_files()
                .iter()
                .filter_map(|p| super::sys::cstring(p).ok())
                .collect()
        };
        // The open fds pin the namespaces; a PID reused after the check
        // would be caught here.
        if !state.init_alive() {
            return Err(RuntimeError::NotRunning {
                ctid: state.ctid.clone(),
            });
        }
        Ok(Self {
            ctid: state.ctid.clone(),
            namespaces,
            root,
            procs_files,
            drop_caps,
        })
    }

    /// Joins the cgroup and the namespaces and takes the container's root.
    /// Runs in a forked, single-threaded child.
    pub fn join(&self, root: bool) -> Result<(), String> {
        for file in &self.procs_files {
            write_zero(file).map_err(|err| format!("join cgroup {file:?}: {err}"))?;
        }
        for (fd, flag) in &self.namespaces {
            nix::sched::setns(fd, *flag).map_err(|err| format!("setns {flag:?}: {err}"))?;
        }
        if root {
            nix::unistd::fchdir(&self.root).map_err(|err| format!("fchdir to the root: {err}"))?;
            nix::unistd::chroot(".").map_err(|err| format!("chroot: {err}"))?;
            nix::unistd::chdir("/").map_err(|err| format!("chdir /: {err}"))?;
        }
        Ok(())
    }
}

/// The standard streams of a command run inside; `None` keeps the
/// caller's.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stdio {
    /// Standard input.
    pub stdin: Option<RawFd>,
    /// Standard output.
    pub stdout: Option<RawFd>,
    /// Standard error.
    pub stderr: Option<RawFd>,
}

/// The terminal setup of the inner child.
#[derive(Debug, Clone, Copy)]
pub enum Terminal {
    /// Redirect the streams.
    Streams(Stdio),
    /// Make this pty slave the controlling terminal and all three streams.
    Pty(RawFd),
}

/// A running joined process: the outer child that waits for the command.
pub struct Joined {
    pid: Pid,
    report: OwnedFd,
}

/// Forks a child that joins `target` and runs `command` in a grandchild.
pub fn run(target: &Target, command: &Command, terminal: Terminal) -> Result<Joined, RuntimeError> {
    let (reader, writer) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(RuntimeError::sys("pipe"))?;
    // SAFETY: the child only runs `outer`, which exits and never returns.
    match unsafe { fork() }.map_err(RuntimeError::sys("fork"))? {
        ForkResult::Child => {
            drop(reader);
            outer(target, command, terminal, writer.as_raw_fd())
        }
        ForkResult::Parent { child } => Ok(Joined {
            pid: child,
            report: reader,
        }),
    }
}

impl Joined {
    /// Waits for the command; after `timeout` it is killed and an error
    /// returned. Returns the exit status, 128 + N for a signal N.
    pub fn wait(
        self,
        ctid: &str,
        command: &str,
        timeout: Option<Duration>,
    ) -> Result<i32, RuntimeError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let status = loop {
            let flags = deadline.map(|_| WaitPidFlag::WNOHANG);
            match waitpid(self.pid, flags) {
                Ok(WaitStatus::StillAlive) => {}
                Ok(status) => break status,
                Err(nix::Error::EINTR) => continue,
                Err(err) => {
                    return Err(RuntimeError::Sys {
                        op: "waitpid",
                        source: err,
                    });
                }
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                // The inner child has PR_SET_PDEATHSIG and follows.
                let _ = nix::sys::signal::kill(self.pid, nix::sys::signal::Signal::SIGKILL);
                let _ = waitpid(self.pid, None);
                return Err(RuntimeError::ExecTimeout {
                    ctid: ctid.to_string(),
                    command: command.to_string(),
                    seconds: timeout.map_or(0, |t| t.as_secs()),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        };

        let mut text = String::new();
        let _ = File::from(self.report).read_to_string(&mut text);
        if let Some(message) = text.lines().find_map(|l| l.strip_prefix("error ")) {
            return Err(RuntimeError::Setup {
                ctid: ctid.to_string(),
                message: message.to_string(),
            });
        }
        Ok(exit_code(status))
    }
}

fn exit_code(status: WaitStatus) -> i32 {
    match status {
        WaitStatus::Exited(_, code) => code,
        WaitStatus::Signaled(_, signal, _) => 128 + signal as i32,
        _ => 1,
    }
}

fn outer(target: &Target, command: &Command, terminal: Terminal, report: RawFd) -> ! {
    if let Err(message) = target.join(true) {
        child::fail(report, &message);
    }
    // SAFETY: the child only runs `inner`, which execs or exits.
    let pid = match unsafe { fork() } {
        Ok(ForkResult::Child) => inner(target, command, terminal, report),
        Ok(ForkResult::Parent { child }) => child,
        Err(err) => child::fail(report, &format!("fork inside: {err}")),
    };
    // The pty slave belongs to the inner child alone, so the caller sees
    // end of file when the command and its children are done.
    if let Terminal::Pty(fd) = terminal {
        // SAFETY: closes this process's copy of the slave.
        unsafe { libc::close(fd) };
    }
    // SAFETY: closes this process's copy of the report pipe.
    unsafe { libc::close(report) };
    loop {
        match waitpid(pid, None) {
            Ok(status) => child::exit(exit_code(status)),
            Err(nix::Error::EINTR) => continue,
            Err(_) => child::exit(1),
        }
    }
}

fn inner(target: &Target, command: &Command, terminal: Terminal, report: RawFd) -> ! {
    // SAFETY: PR_SET_PDEATHSIG takes integers; the outer child is killed
    // on a timeout and the command must go with it.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    if let Err(err) = drop_capabilities(&target.drop_caps) {
        child::fail(report, &format!("drop capabilities: {err}"));
    }
    let streams = match terminal {
        Terminal::Pty(fd) => child::take_terminal(fd),
        Terminal::Streams(stdio) => redirect(stdio),
    };
    if let Err(err) = streams {
        child::fail(report, &format!("set up standard streams: {err}"));
    }
    if let Err(err) = child::cloexec_from(3) {
        child::fail(report, &format!("close host file descriptors: {err}"));
    }
    let status = command.exec();
    let what = if status == 127 {
        "command not found"
    } else {
        "permission denied"
    };
    let message = format!("lamina: {}: {what}\n", command.name);
    child::report(2, &message);
    child::exit(status)
}

fn redirect(stdio: Stdio) -> nix::Result<()> {
    for (fd, target) in [(stdio.stdin, 0), (stdio.stdout, 1), (stdio.stderr, 2)] {
        if let Some(fd) = fd {
            child::dup_onto(fd, target)?;
        }
    }
    Ok(())
}

/// Writes `0` to a `cgroup.procs` file, which moves the calling process.
pub(super) fn write_zero(path: &CString) -> nix::Result<()> {
    let file = nix::fcntl::open(
        path.as_c_str(),
        OFlag::O_WRONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    nix::unistd::write(&file, b"0").map(drop)
}

/// Forks a child that joins the UTS namespace of `target` and sets the
/// hostname.
pub fn set_hostname(target: &Target, hostname: &str) -> Result<Joined, RuntimeError> {
    let (reader, writer) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(RuntimeError::sys("pipe"))?;
    // SAFETY: the child joins, calls sethostname and exits.
    match unsafe { fork() }.map_err(RuntimeError::sys("fork"))? {
        ForkResult::Child => {
            drop(reader);
            if let Err(message) = target.join(false) {
                child::fail(writer.as_raw_fd(), &message);
            }
            if let Err(err) = nix::unistd::sethostname(hostname) {
                child::fail(
                    writer.as_raw_fd(),
                    &format!("sethostname {hostname}: {err}"),
                );
            }
            child::exit(0)
        }
        ForkResult::Parent { child } => Ok(Joined {
            pid: child,
            report: reader,
        }),
    }
}
