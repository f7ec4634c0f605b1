//! The host side of `enter`: a pty for the shell inside, the caller's
//! terminal in raw mode, a relay between the two, and window size changes
//! passed on (SIGWINCH, then TIOCSWINSZ on the pty).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
use nix::sys::termios::{SetArg, Termios, cfmakeraw, tcgetattr, tcsetattr};

use super::error::RuntimeError;

static RESIZED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigwinch(_: libc::c_int) {
    RESIZED.store(true, Ordering::Relaxed);
}

/// Puts a terminal in raw mode and restores it on drop.
pub struct RawMode<'a> {
    fd: BorrowedFd<'a>,
    saved: Termios,
}

impl<'a> RawMode<'a> {
    /// Switches `fd` to raw mode; `None` when it is not a terminal.
    pub fn enable(fd: BorrowedFd<'a>) -> Option<Self> {
        let saved = tcgetattr(fd).ok()?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(fd, SetArg::TCSANOW, &raw).ok()?;
        Some(Self { fd, saved })
    }
}

impl Drop for RawMode<'_> {
    fn drop(&mut self) {
        let _ = tcsetattr(self.fd, SetArg::TCSAFLUSH, &self.saved);
    }
}

/// Copies the window size of `from` (a terminal) to `to` (the pty master).
pub fn copy_winsize(from: RawFd, to: RawFd) {
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize into `size`.
    if unsafe { libc::ioctl(from, libc::TIOCGWINSZ, &mut size) } == 0 {
        // SAFETY: TIOCSWINSZ reads one winsize from `size`.
        unsafe { libc::ioctl(to, libc::TIOCSWINSZ, &size) };
    }
}

/// Installs the SIGWINCH handler; without SA_RESTART so that poll returns.
pub fn watch_resize() -> Result<(), RuntimeError> {
    let action = SigAction::new(
        SigHandler::Handler(on_sigwinch),
        SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: the handler only stores to an atomic, which is
    // async-signal-safe.
    unsafe { sigaction(Signal::SIGWINCH, &action) }
        .map(drop)
        .map_err(RuntimeError::sys("install the SIGWINCH handler"))
}

/// Relays `input` to `master` and `master` to `output` until the pty
/// reports end of file (every process inside closed it).
pub fn relay(
    input: BorrowedFd<'_>,
    output: BorrowedFd<'_>,
    master: &OwnedFd,
) -> Result<(), RuntimeError> {
    let mut buf = [0u8; 4096];
    let mut input_open = true;
    loop {
        if RESIZED.swap(false, Ordering::Relaxed) {
            copy_winsize(input.as_raw_fd(), master.as_raw_fd());
        }
        let mut fds = [
            poll_entry(master.as_raw_fd()),
            poll_entry(if input_open { input.as_raw_fd() } else { -1 }),
        ];
        // SAFETY: fds is a valid array of two pollfds.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        // A resize that came with the input goes first, so that a program
        // reading the input already gets the new size.
        if RESIZED.swap(false, Ordering::Relaxed) {
            copy_winsize(input.as_raw_fd(), master.as_raw_fd());
        }
        if ready < 0 {
            let err = nix::Error::last();
            if err == nix::Error::EINTR {
                continue;
            }
            return Err(RuntimeError::Sys {
                op: "poll",
                source: err,
            });
        }
        if fds[0].revents != 0 {
            match nix::unistd::read(master.as_fd(), &mut buf) {
                Ok(n) if n > 0 => write_all(output, &buf[..n])?,
                Err(nix::Error::EINTR) | Err(nix::Error::EAGAIN) => {}
                // EIO once the last slave fd is closed.
                _ => return Ok(()),
            }
        }
        if fds[1].revents != 0 {
            match nix::unistd::read(input, &mut buf) {
                Ok(n) if n > 0 => write_all(master.as_fd(), &buf[..n])?,
                Err(nix::Error::EINTR) | Err(nix::Error::EAGAIN) => {}
                _ => input_open = false,
            }
        }
    }
}

fn poll_entry(fd: RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

fn write_all(fd: BorrowedFd<'_>, mut bytes: &[u8]) -> Result<(), RuntimeError> {
    while !bytes.is_empty() {
        match nix::unistd::write(fd, bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(nix::Error::EINTR) => {}
            Err(err) => {
                return Err(RuntimeError::Sys {
                    op: "write to the terminal",
                    source: err,
                });
            }
        }
    }
    Ok(())
}

/// Opens a pty in the devpts instance of the container whose init is
/// `init_pid`, so that `tty` inside names a device the container can
/// see. The slave comes from TIOCGPTPEER (Linux 4.13), without a path.
pub fn open_container_pty(init_pid: i32) -> nix::Result<(OwnedFd, OwnedFd)> {
    let ptmx = format!("/proc/{init_pid}/root/dev/ptmx");
    let flags = OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
    let master = nix::fcntl::open(ptmx.as_str(), flags, Mode::empty())?;
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads one int.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) } < 0 {
        return Err(nix::Error::last());
    }
    let peer_flags = libc::O_RDWR | libc::O_NOCTTY;
    // SAFETY: TIOCGPTPEER takes open flags and returns a new fd.
    let slave = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, peer_flags) };
    if slave < 0 {
        return Err(nix::Error::last());
    }
    // SAFETY: the ioctl returned a new fd that nothing else owns.
    let slave = unsafe { OwnedFd::from_raw_fd(slave) };
    Ok((master, slave))
}
