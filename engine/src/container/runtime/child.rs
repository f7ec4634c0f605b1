//! Small helpers for forked children: reporting to the parent through a
//! pipe, exiting without running destructors, fd housekeeping, and exec.

use std::ffi::CString;
use std::os::fd::RawFd;

/// The environment of a container's init and of commands run inside.
pub const PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Writes `message` to `fd`, ignoring errors: the reader treats a short
/// message as a failure anyway.
pub fn report(fd: RawFd, message: &str) {
    write_bytes(fd, message.as_bytes());
}

/// Writes all of `bytes` to `fd`, ignoring errors.
pub fn write_bytes(fd: RawFd, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: the pointer and length come from a live slice.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        let Ok(n) = usize::try_from(n) else {
            if nix::Error::last() == nix::Error::EINTR {
                continue;
            }
            return;
        };
        if n == 0 {
            return;
        }
        bytes = &bytes[n..];
    }
}

/// Ends a forked child at once; the parent's destructors, buffers and
/// atexit handlers are not the child's to run.
pub fn exit(code: i32) -> ! {
    // SAFETY: _exit(2) ends the process and touches no memory.
    unsafe { libc::_exit(code) }
}

/// Reports `message` with an `error ` prefix and exits with status 1.
pub fn fail(fd: RawFd, message: &str) -> ! {
    report(fd, &format!("error {message}\n"));
    exit(1)
}

/// Marks every fd from `first` up close-on-exec (close_range(2) with
/// CLOSE_RANGE_CLOEXEC, Linux 5.11), so nothing of the host leaks into
/// the container while the report pipe stays open until exec.
pub fn cloexec_from(first: u32) -> nix::Result<()> {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: close_range(2) takes integers and touches no memory.
    let rc = unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, CLOSE_RANGE_CLOEXEC) };
    if rc == 0 {
        Ok(())
    } else {
        Err(nix::Error::last())
    }
}

/// Closes every fd from `first` up.
pub fn close_from(first: u32) {
    // SAFETY: close_range(2) takes integers and touches no memory.
    unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, 0) };
}

/// Duplicates `fd` onto `target` (dup2(2)) unless they are the same.
pub fn dup_onto(fd: RawFd, target: RawFd) -> nix::Result<()> {
    if fd == target {
        return Ok(());
    }
    // SAFETY: dup2(2) takes integers and touches no memory.
    let rc = unsafe { libc::dup2(fd, target) };
    if rc < 0 {
        Err(nix::Error::last())
    } else {
        Ok(())
    }
}

/// Makes `fd` (a pty slave) the controlling terminal of a new session and
/// the standard input, output and error.
pub fn take_terminal(fd: RawFd) -> nix::Result<()> {
    nix::unistd::setsid()?;
    // SAFETY: TIOCSCTTY takes an integer argument (0: do not steal).
    let rc = unsafe { libc::ioctl(fd, libc::TIOCSCTTY, 0) };
    if rc < 0 {
        return Err(nix::Error::last());
    }
    for target in 0..3 {
        dup_onto(fd, target)?;
    }
    Ok(())
}

/// A command prepared for execve(2) before a fork: the candidate paths
/// from a PATH search, the argument vector and the environment.
#[derive(Debug, Clone)]
pub struct Command {
    /// The name as given, for messages.
    pub name: String,
    /// Paths to try in order.
    pub candidates: Vec<CString>,
    /// argv.
    pub argv: Vec<CString>,
    /// envp.
    pub envp: Vec<CString>,
}

impl Command {
    /// Prepares `argv` with `env` (`KEY=value` strings); `argv0` replaces
    /// the first argument when set (a login shell's `-sh`).
    pub fn new(argv: &[String], env: &[String], argv0: Option<&str>) -> Result<Self, String> {
        let name = argv.first().ok_or("the command is empty")?.clone();
        let to_c = |s: &str| CString::new(s).map_err(|_| format!("{s:?} contains a NUL byte"));
        let mut args: Vec<CString> = argv.iter().map(|a| to_c(a)).collect::<Result<_, _>>()?;
        if let Some(argv0) = argv0 {
            args[0] = to_c(argv0)?;
        }
        let envp = env.iter().map(|e| to_c(e)).collect::<Result<_, _>>()?;
        let path = env
            .iter()
            .find_map(|e| e.strip_prefix("PATH="))
            .unwrap_or(&PATH[5..]);
        let candidates = if name.contains('/') {
            vec![to_c(&name)?]
        } else {
            path.split(':')
                .filter(|dir| !dir.is_empty())
                .map(|dir| to_c(&format!("{dir}/{name}")))
                .collect::<Result<_, _>>()?
        };
        Ok(Self {
            name,
            candidates,
            argv: args,
            envp,
        })
    }

    /// Executes the first candidate that exists. Returns the exit status a
    /// shell would give when none can run: 127 for not found, 126 for
    /// found but not executable.
    pub fn exec(&self) -> i32 {
        let mut argv: Vec<*const libc::c_char> = self.argv.iter().map(|a| a.as_ptr()).collect();
        argv.push(std::ptr::null());
        let mut envp: Vec<*const libc::c_char> = self.envp.iter().map(|e| e.as_ptr()).collect();
        envp.push(std::ptr::null());
        let mut status = 127;
        for path in &self.candidates {
            // SAFETY: path, argv and envp are NUL-terminated C strings and
            // NULL-terminated arrays that live across the call.
            unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
            let err = nix::Error::last();
            if err != nix::Error::ENOENT && err != nix::Error::ENOTDIR {
                status = 126;
            }
        }
        status
    }
}
