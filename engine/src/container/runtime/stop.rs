//! Stopping a container: the shutdown request to init, the wait, and the
//! kill of everything left in the cgroup.

use std::time::Duration;

use super::InitKind;
use super::error::RuntimeError;
use super::state::State;
use super::sys::Syscalls;

/// The first step of a stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Kill the cgroup at once (`--fast`, or a stale container).
    Kill,
    /// Send init this signal and wait for it to exit first.
    Signal(i32),
}

/// How long the kill of the whole cgroup may take before the stop fails.
pub const KILL_WAIT: Duration = Duration::from_secs(10);

/// How often the stop checks whether init has exited.
const POLL: Duration = Duration::from_millis(100);

/// Returns the signal that makes `kind` shut down.
///
/// systemd halts on SIGRTMIN+3 (systemd(1), "Signals"). busybox init
/// powers off on SIGUSR2: its halt, poweroff and reboot applets send
/// SIGUSR1, SIGUSR2 and SIGTERM to PID 1 (busybox init/halt.c). It runs
/// its shutdown actions and then reboot(2), which in a PID namespace ends
/// init (pid_namespaces(7)). Other inits get SIGTERM, and one that ignores
/// it is killed after the timeout.
pub fn shutdown_signal(kind: InitKind) -> i32 {
    match kind {
        InitKind::Systemd => libc::SIGRTMIN() + 3,
        InitKind::Busybox => libc::SIGUSR2,
        InitKind::Other => libc::SIGTERM,
    }
}

/// Stops the container of `state` and removes its cgroup.
pub fn stop(
    sys: &dyn Syscalls,
    state: &State,
    request: Request,
    timeout: Duration,
) -> Result<(), RuntimeError> {
    if let Request::Signal(signal) = request {
        sys.kill(state.init_pid, signal);
        let rounds = timeout.as_millis() / POLL.as_millis();
        let mut round = 0;
        while sys.alive(state.init_pid) && round < rounds {
            sys.sleep(POLL);
            round += 1;
        }
        if sys.alive(state.init_pid) {
            tracing::warn!(
                ctid = %state.ctid,
                seconds = timeout.as_secs(),
                "init did not exit in time; killing the container"
            );
        }
    }

    let remaining = state.cgroup.kill_all(sys, KILL_WAIT)?;
    if remaining > 0 {
        return Err(RuntimeError::KillTimeout {
            ctid: state.ctid.clone(),
            remaining,
        });
    }
    remove_cgroup(sys, state)
}

/// Removes the cgroup; a group whose last processes are still being torn
/// down reports EBUSY for a moment, so removal is retried.
fn remove_cgroup(sys: &dyn Syscalls, state: &State) -> Result<(), RuntimeError> {
    let mut tries = 0;
    loop {
        match state.cgroup.remove() {
            Ok(()) => return Ok(()),
            Err(err) if tries < 50 => {
                tracing::debug!(error = %err, "cgroup removal failed; retrying");
                tries += 1;
                sys.sleep(POLL);
            }
            Err(err) => return Err(err),
        }
    }
}
