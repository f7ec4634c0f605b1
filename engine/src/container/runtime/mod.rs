//! The container runtime: start a container's init in new namespaces and a
//! cgroup, stop it, run commands inside, and change its limits live.
//!
//! The caller mounts the root filesystem first. The runtime keeps its
//! state (init's PID, the cgroup directories, the console log) in a state
//! directory per container.

pub mod caps;
pub mod cgroup;
pub mod child;
pub mod enter;
pub mod error;
pub mod join;
pub mod rootfs;
pub mod spawn;
pub mod state;
pub mod stop;
pub mod sys;
pub mod sysctl;

#[cfg(test)]
mod tests;

use std::fs::{self, OpenOptions};
use std::io::Read as _;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sched::CloneFlags;

pub use error::RuntimeError;

use cgroup::{Cgroup, CgroupLayout, PARENT_GROUP};
use child::Command;
use join::{Stdio, Target, Terminal};
use rootfs::RootPlan;
use spawn::SpawnPlan;
use state::{CONSOLE_LOG, State};
use sys::{LinuxSyscalls, proc_stat};

/// Resource limits of a container; `None` means unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Memory in bytes.
    pub ram: Option<u64>,
    /// Swap in bytes, on top of `ram`.
    pub swap: Option<u64>,
    /// Number of CPUs the container may use in time (caps the CFS quota).
    pub cpus: Option<u32>,
    /// CPU time in percent of one CPU (vzctl's CPULIMIT; 200 is two CPUs).
    pub cpulimit: Option<u32>,
    /// CPU weight in vzctl's CPUUNITS (8 to 500000, default 1000).
    pub cpuunits: Option<u32>,
    /// Maximum number of processes and threads.
    pub numproc: Option<u64>,
}

/// The parameters of [`start`].
#[derive(Debug, Clone)]
pub struct StartSpec {
    /// The container ID; names the cgroup `lamina/CTID`.
    pub ctid: String,
    /// The mounted root filesystem.
    pub root: PathBuf,
    /// The hostname inside.
    pub hostname: Option<String>,
    /// Init's command line.
    pub init: Vec<String>,
    /// Limits applied to the cgroup before init runs.
    pub limits: Limits,
    /// The directory of the state file and the console log.
    pub state_dir: PathBuf,
    /// Wait until init reports that boot finished.
    pub wait: bool,
    /// How long `wait` waits before it reports a failed boot.
    pub boot_timeout: Duration,
}

impl StartSpec {
    /// Returns a spec with `/sbin/init`, no limits, no hostname, no wait
    /// and a boot timeout of 300 s.
    pub fn new(ctid: &str, root: &Path, state_dir: &Path) -> Self {
        Self {
            ctid: ctid.to_string(),
            root: root.to_path_buf(),
            hostname: None,
            init: vec!["/sbin/init".to_string()],
            limits: Limits::default(),
            state_dir: state_dir.to_path_buf(),
            wait: false,
            boot_timeout: Duration::from_secs(300),
        }
    }
}

/// A started container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Running {
    /// Init's PID on the host.
    pub init_pid: i32,
}

/// Whether a container runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Init runs; `nproc` processes are in the cgroup.
    Running { init_pid: i32, nproc: u64 },
    /// No process of the container exists.
    Stopped,
}

/// Options of [`exec`].
#[derive(Debug, Clone, Default)]
pub struct ExecOptions<'a> {
    /// The environment (`KEY=value`); `None` gives PATH and HOME=/root.
    pub env: Option<Vec<String>>,
    /// Standard input; `None` keeps the caller's.
    pub stdin: Option<BorrowedFd<'a>>,
    /// Standard output; `None` keeps the caller's.
    pub stdout: Option<BorrowedFd<'a>>,
    /// Standard error; `None` keeps the caller's.
    pub stderr: Option<BorrowedFd<'a>>,
    /// Kill the command and fail after this long.
    pub timeout: Option<Duration>,
}

/// The init program a container runs, which decides the stop signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitKind {
    /// systemd.
    Systemd,
    /// busybox init.
    Busybox,
    /// Anything else (sysvinit, a shell script).
    Other,
}

/// Starts the container: cgroup, namespaces, root, init. Returns once
/// init runs (with `wait`, once boot finished); init does not depend on
/// the calling process.
pub fn start(spec: &StartSpec) -> Result<Running, RuntimeError> {
    validate_ctid(&spec.ctid)?;
    check_root(&spec.root, &spec.init)?;
    if let Status::Running { init_pid, .. } = status(&spec.ctid, &spec.state_dir)? {
        return Err(RuntimeError::AlreadyRunning {
            ctid: spec.ctid.clone(),
            init_pid,
        });
    }
    fs::create_dir_all(&spec.state_dir)
        .map_err(|err| RuntimeError::io("create", &spec.state_dir, err))?;

    let layout = CgroupLayout::detect()?;
    raise_host_limits(&layout);
    let mut cgroup = Cgroup::for_container(&layout, &spec.ctid);
    // This container is not running, so processes in its cgroup are not
    // its own: another Lamina home may run a container with the same CTID.
    // They are never killed here.
    if let Some((path, nproc)) = cgroup.populated()? {
        return Err(RuntimeError::CgroupInUse { path, nproc });
    }
    if cgroup.exists() {
        // An empty leftover, such as the group of a start that crashed.
        cgroup.remove()?;
    }
    cgroup.create()?;

    let started = launch(spec, &layout, &cgroup);
    let running = match started {
        Ok(running) => running,
        Err(err) => {
            fail_start(spec, &cgroup);
            return Err(err);
        }
    };
    tracing::info!(ctid = %spec.ctid, init_pid = running.init_pid, "container started");
    Ok(running)
}

/// How long a kill of the whole cgroup may take.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// Undoes a failed start: kills what it started and removes its cgroup
/// and state file. A cgroup that another start replaced meanwhile is left
/// alone.
fn fail_start(spec: &StartSpec, cgroup: &Cgroup) {
    if !cgroup.is_owned() {
        tracing::warn!(ctid = %spec.ctid, "the cgroup was replaced during the failed start; leaving it alone");
        let _ = State::remove(&spec.state_dir);
        return;
    }
    let _ = cgroup.kill_all(&LinuxSyscalls, KILL_WAIT);
    // An init that exited during boot may still be a zombie that the
    // monitor has not reaped. The state file names it when launch got as
    // far as writing one.
    if let Ok(Some(state)) = State::load(&spec.state_dir) {
        wait_reaped(&state);
    }
    let _ = cgroup.remove();
    let _ = State::remove(&spec.state_dir);
}

fn launch(
    spec: &StartSpec,
    layout: &CgroupLayout,
    cgroup: &Cgroup,
) -> Result<Running, RuntimeError> {
    cgroup.apply(&spec.limits)?;
    let plan = spawn_plan(spec, layout, cgroup)?;
    let spawned = spawn::spawn(&plan)?;
    drop(plan);

    let start_time = proc_stat(spawned.init_pid)
        .map(|stat| stat.start_time)
        .ok_or_else(|| RuntimeError::Setup {
            ctid: spec.ctid.clone(),
            message: format!(
                "init exited right after it started; see {}",
                spec.state_dir.join(CONSOLE_LOG).display()
            ),
        })?;
    let state = State {
        ctid: spec.ctid.clone(),
        init_pid: spawned.init_pid,
        start_time,
        monitor_pid: spawned.monitor_pid,
        cgroup: cgroup.clone(),
    };
    state.save(&spec.state_dir)?;
    if spec.wait {
        wait_booted(spec, &state)?;
    }
    Ok(Running {
        init_pid: spawned.init_pid,
    })
}

fn spawn_plan(
    spec: &StartSpec,
    layout: &CgroupLayout,
    cgroup: &Cgroup,
) -> Result<SpawnPlan, RuntimeError> {
    let log_path = spec.state_dir.join(CONSOLE_LOG);
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|err| RuntimeError::io("open", &log_path, err))?;
    let pty = nix::pty::openpty(None, None).map_err(RuntimeError::sys("open the console pty"))?;
    let slave_path = nix::unistd::ttyname(&pty.slave).map_err(RuntimeError::sys("ttyname"))?;

    let env = vec![
        "container=lamina".to_string(),
        "HOME=/".to_string(),
        "TERM=linux".to_string(),
        child::PATH.to_string(),
    ];
    let init = Command::new(&spec.init, &env, None)
        .map_err(|reason| invalid("init", &spec.init.join(" "), reason))?;
    let procs_files = cgroup
        .procs_files()
        .iter()
        .map(|p| sys::cstring(p))
        .collect::<Result<_, _>>()
        .map_err(RuntimeError::sys("cgroup path"))?;
    Ok(SpawnPlan {
        ctid: spec.ctid.clone(),
        root: RootPlan {
            root: spec.root.clone(),
            console: Some(slave_path),
            hostname: spec.hostname.clone(),
            cgroup2: layout.unified().is_some(),
        },
        procs_files,
        init,
        drop_caps: caps::drop_list(cgroup.restricts_devices()),
        log,
        console: (pty.master, pty.slave),
    })
}

fn raise_host_limits(layout: &CgroupLayout) {
    let containers = layout
        .hierarchies
        .first()
        .and_then(|h| fs::read_dir(h.mount.join(PARENT_GROUP)).ok())
        .map_or(0, |entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.path().is_dir())
                .count()
        });
    let containers = u64::try_from(containers)
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    if let Err(err) = sysctl::raise_inotify(Path::new("/proc/sys"), containers) {
        tracing::warn!(error = %err, "could not raise the inotify limits; systemd containers may hang at boot");
    }
}

fn wait_booted(spec: &StartSpec, state: &State) -> Result<(), RuntimeError> {
    match init_kind(state.init_pid) {
        InitKind::Systemd => wait_systemd(spec, state),
        InitKind::Busybox | InitKind::Other => {
            // Such inits report nothing: a short settle, then init must
            // still run.
            std::thread::sleep(Duration::from_millis(500));
            if state.init_alive() {
                Ok(())
            } else {
                Err(init_exited(spec))
            }
        }
    }
}

fn init_exited(spec: &StartSpec) -> RuntimeError {
    RuntimeError::Setup {
        ctid: spec.ctid.clone(),
        message: format!(
            "init exited during boot; see {}",
            spec.state_dir.join(CONSOLE_LOG).display()
        ),
    }
}

fn wait_systemd(spec: &StartSpec, state: &State) -> Result<(), RuntimeError> {
    let deadline = std::time::Instant::now() + spec.boot_timeout;
    let boot_failed = |state: String| RuntimeError::BootTimeout {
        ctid: spec.ctid.clone(),
        seconds: spec.boot_timeout.as_secs(),
        state,
        log: spec.state_dir.join(CONSOLE_LOG),
    };
    loop {
        // systemd in a container exits on a fatal boot error instead of
        // freezing (Debian 12's systemd 252 exits with status 255), so
        // asking again would only print "offline".
        if !state.init_alive() {
            return Err(init_exited(spec));
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let output = match is_system_running(state, left) {
            Err(RuntimeError::ExecTimeout { .. }) => return Err(boot_failed("starting".into())),
            Err(_) if !state.init_alive() => return Err(init_exited(spec)),
            other => other?,
        };
        match output.as_str() {
            // is-system-running exits non-zero for "degraded", which still
            // means that boot finished.
            "running" | "degraded" => return Ok(()),
            // "offline" until systemd has created /run/systemd/system, and
            // no output while its private socket is missing: --wait only
            // waits on a booted manager, so ask again.
            "offline" | "" if !left.is_zero() => {
                std::thread::sleep(Duration::from_millis(200));
            }
            _ if !state.init_alive() => return Err(init_exited(spec)),
            _ => return Err(boot_failed(output)),
        }
    }
}

/// Runs `systemctl is-system-running --wait` inside and returns its output.
fn is_system_running(state: &State, timeout: Duration) -> Result<String, RuntimeError> {
    let argv: Vec<String> = ["systemctl", "is-system-running", "--wait"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let (reader, writer) = nix::unistd::pipe().map_err(RuntimeError::sys("pipe"))?;
    let null = fs::File::options()
        .write(true)
        .open("/dev/null")
        .map_err(|err| RuntimeError::io("open", "/dev/null", err))?;
    let options = ExecOptions {
        stdout: Some(writer.as_fd()),
        stderr: Some(null.as_fd()),
        timeout: Some(timeout),
        ..ExecOptions::default()
    };
    let result = exec_state(state, &argv, &options);
    drop(options);
    drop(writer);
    let mut output = String::new();
    let _ = fs::File::from(reader).read_to_string(&mut output);
    result.map(|_| output.trim().to_string())
}

/// Returns which init runs as `pid`, from the name of its executable.
pub fn init_kind(pid: i32) -> InitKind {
    let exe = fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
    let name = exe
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if name.starts_with("systemd") {
        InitKind::Systemd
    } else if name.starts_with("busybox") {
        InitKind::Busybox
    } else {
        InitKind::Other
    }
}

/// Stops the container. Sends init its shutdown signal and waits up to
/// `timeout`, then kills every process in the cgroup and removes it.
/// `fast` skips the signal. A stopped container gives
/// [`RuntimeError::NotRunning`].
pub fn stop(
    ctid: &str,
    state_dir: &Path,
    timeout: Duration,
    fast: bool,
) -> Result<(), RuntimeError> {
    let Some(state) = running_state(ctid, state_dir)? else {
        return Err(RuntimeError::NotRunning {
            ctid: ctid.to_string(),
        });
    };
    let request = if fast {
        stop::Request::Kill
    } else {
        stop::Request::Signal(stop::shutdown_signal(init_kind(state.init_pid)))
    };
    stop::stop(&LinuxSyscalls, &state, request, timeout)?;
    wait_reaped(&state);
    State::remove(state_dir)?;
    tracing::info!(ctid, "container stopped");
    Ok(())
}

/// Waits until the monitor has reaped init, so that init's PID is gone
/// when a stop returns. The monitor checks every 500 ms.
fn wait_reaped(state: &State) {
    for _ in 0..100 {
        let present = proc_stat(state.init_pid).is_some_and(|s| s.start_time == state.start_time);
        if !present {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    tracing::warn!(ctid = %state.ctid, init_pid = state.init_pid, "init was not reaped in time");
}

/// Returns whether the container runs. A state file whose init is gone is
/// cleaned up and reported as stopped (see [`clean_stale`]).
pub fn status(ctid: &str, state_dir: &Path) -> Result<Status, RuntimeError> {
    let Some(state) = running_state(ctid, state_dir)? else {
        return Ok(Status::Stopped);
    };
    let nproc = u64::try_from(state.cgroup.procs()?.len()).unwrap_or(u64::MAX);
    Ok(Status::Running {
        init_pid: state.init_pid,
        nproc,
    })
}

fn running_state(ctid: &str, state_dir: &Path) -> Result<Option<State>, RuntimeError> {
    let Some(state) = State::load(state_dir)? else {
        return Ok(None);
    };
    if state.ctid != ctid {
        return Err(RuntimeError::BadState {
            path: State::path(state_dir),
            reason: format!("it belongs to container {}, not {ctid}", state.ctid),
        });
    }
    if state.init_alive() {
        return Ok(Some(state));
    }
    clean_stale(&state, state_dir);
    Ok(None)
}

/// Cleans up after a container whose init is gone, for example after a
/// reboot (the state directory is on disk) or after init was killed.
///
/// The cgroup is killed and removed only when it is still the one that
/// this container's start created: a group at the same path with another
/// inode belongs to a later start, possibly in another Lamina home. Then
/// the state file is removed, unless a start replaced it meanwhile. A
/// failed step is logged and skipped: init is gone either way, so the
/// container is stopped.
fn clean_stale(state: &State, state_dir: &Path) {
    tracing::info!(
        ctid = %state.ctid,
        init_pid = state.init_pid,
        "init is gone; cleaning up the stale state"
    );
    if state.cgroup.is_owned() {
        if let Err(err) = stop::stop(&LinuxSyscalls, state, stop::Request::Kill, Duration::ZERO) {
            tracing::warn!(ctid = %state.ctid, error = %err, "cleaning up the stale cgroup failed");
        }
    } else if state.cgroup.exists() {
        tracing::warn!(
            ctid = %state.ctid,
            "the cgroup was not created by this container's last start; leaving it alone"
        );
    }
    // Compare first: a start that ran meanwhile has written a new state.
    match State::load(state_dir) {
        Ok(Some(current)) if current == *state => {
            if let Err(err) = State::remove(state_dir) {
                tracing::warn!(ctid = %state.ctid, error = %err, "removing the stale state failed");
            }
        }
        _ => {}
    }
}

fn running(ctid: &str, state_dir: &Path) -> Result<State, RuntimeError> {
    running_state(ctid, state_dir)?.ok_or_else(|| RuntimeError::NotRunning {
        ctid: ctid.to_string(),
    })
}

/// Runs `argv` inside the container with its streams passed through and
/// returns its exit status: the command's own, 128 + N when a signal N
/// ended it, 127 when it is not found, 126 when it cannot be executed.
pub fn exec(
    ctid: &str,
    state_dir: &Path,
    argv: &[String],
    opts: &ExecOptions<'_>,
) -> Result<i32, RuntimeError> {
    let state = running(ctid, state_dir)?;
    exec_state(&state, argv, opts)
}

fn exec_state(state: &State, argv: &[String], opts: &ExecOptions<'_>) -> Result<i32, RuntimeError> {
    let env = opts
        .env
        .clone()
        .unwrap_or_else(|| vec![child::PATH.to_string(), "HOME=/root".to_string()]);
    let command = Command::new(argv, &env, None)
        .map_err(|reason| invalid("command", &argv.join(" "), reason))?;
    let target = Target::open(state, None, drop_caps(state))?;
    let raw = |fd: Option<BorrowedFd<'_>>| fd.map(|fd| fd.as_raw_fd());
    let stdio = Stdio {
        stdin: raw(opts.stdin),
        stdout: raw(opts.stdout),
        stderr: raw(opts.stderr),
    };
    let joined = join::run(&target, &command, Terminal::Streams(stdio))?;
    joined.wait(&state.ctid, &argv.join(" "), opts.timeout)
}

/// Opens a login shell (or runs `command`) inside the container on a new
/// pty, relaying the caller's terminal in raw mode. Calls `on_entered`
/// once the shell's process has joined the container, before the relay
/// starts. Returns the exit status as [`exec`] does.
pub fn enter(
    ctid: &str,
    state_dir: &Path,
    command: Option<&[String]>,
    on_entered: &mut dyn FnMut(),
) -> Result<i32, RuntimeError> {
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    enter_on(
        ctid,
        state_dir,
        command,
        stdin.as_fd(),
        stdout.as_fd(),
        on_entered,
    )
}

/// Runs [`enter`] on explicit terminal fds: `input` is put in raw mode when
/// it is a terminal, and its window size is passed on.
pub fn enter_on(
    ctid: &str,
    state_dir: &Path,
    command: Option<&[String]>,
    input: BorrowedFd<'_>,
    output: BorrowedFd<'_>,
    on_entered: &mut dyn FnMut(),
) -> Result<i32, RuntimeError> {
    let state = running(ctid, state_dir)?;
    let term = std::env::var("TERM").unwrap_or_else(|_| "xterm".to_string());
    let env: Vec<String> = vec![
        child::PATH.to_string(),
        "HISTFILE=/dev/null".to_string(),
        "USER=root".to_string(),
        "LOGNAME=root".to_string(),
        "HOME=/root".to_string(),
        format!("TERM={term}"),
    ];
    let command = match command {
        Some(argv) => Command::new(argv, &env, None),
        None => login_shell(&state, &env),
    }
    .map_err(|reason| {
        invalid(
            "command",
            &command.map(|c| c.join(" ")).unwrap_or_default(),
            reason,
        )
    })?;

    let (master, slave) = match enter::open_container_pty(state.init_pid) {
        Ok(pair) => pair,
        Err(err) => {
            tracing::debug!(error = %err, "no pty inside the container; using a host pty");
            let pty = nix::pty::openpty(None, None).map_err(RuntimeError::sys("open a pty"))?;
            (pty.master, pty.slave)
        }
    };
    enter::copy_winsize(input.as_raw_fd(), master.as_raw_fd());
    let target = Target::open(&state, None, drop_caps(&state))?;
    enter::watch_resize()?;
    let joined = join::run(&target, &command, Terminal::Pty(slave.as_raw_fd()));
    drop(slave);
    let joined = joined?;
    // Before raw mode, so that a message printed here ends its line.
    on_entered();
    let raw_mode = enter::RawMode::enable(input);
    let relayed = enter::relay(input, output, &master);
    drop(raw_mode);
    let status = joined.wait(&state.ctid, &command.name, None)?;
    relayed?;
    Ok(status)
}

fn login_shell(state: &State, env: &[String]) -> Result<Command, String> {
    let root = PathBuf::from(format!("/proc/{}/root", state.init_pid));
    let (shell, argv0) = if root.join("bin/bash").exists() {
        ("/bin/bash", "-bash")
    } else {
        ("/bin/sh", "-sh")
    };
    Command::new(&[shell.to_string()], env, Some(argv0))
}

/// Applies `limits` to the running container's cgroup; `None` fields
/// become unlimited.
pub fn apply_limits(ctid: &str, limits: &Limits) -> Result<(), RuntimeError> {
    validate_ctid(ctid)?;
    let layout = CgroupLayout::detect()?;
    let cgroup = Cgroup::for_container(&layout, ctid);
    if !cgroup.exists() {
        return Err(RuntimeError::NotRunning {
            ctid: ctid.to_string(),
        });
    }
    cgroup.apply(limits)?;
    tracing::info!(ctid, ?limits, "limits applied");
    Ok(())
}

/// Sets the hostname in the running container's UTS namespace.
pub fn set_hostname(ctid: &str, state_dir: &Path, hostname: &str) -> Result<(), RuntimeError> {
    validate_hostname(hostname)?;
    let state = running(ctid, state_dir)?;
    let target = Target::open(&state, Some(CloneFlags::CLONE_NEWUTS), Vec::new())?;
    let joined = join::set_hostname(&target, hostname)?;
    match joined.wait(ctid, "sethostname", None)? {
        0 => Ok(()),
        code => Err(RuntimeError::Setup {
            ctid: ctid.to_string(),
            message: format!("sethostname {hostname} exited with {code}"),
        }),
    }
}

fn drop_caps(state: &State) -> Vec<u32> {
    caps::drop_list(state.cgroup.restricts_devices())
}

fn invalid(what: &'static str, value: &str, reason: String) -> RuntimeError {
    RuntimeError::InvalidArgument {
        what,
        value: value.to_string(),
        reason,
    }
}

/// Checks that a CTID can name a cgroup directory.
pub fn validate_ctid(ctid: &str) -> Result<(), RuntimeError> {
    let ok = !ctid.is_empty()
        && ctid.len() <= 64
        && ctid != "."
        && ctid != ".."
        && ctid
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "container ID",
            ctid,
            "use 1 to 64 letters, digits, '-', '_' or '.'".to_string(),
        ))
    }
}

/// Checks a hostname against sethostname(2)'s limit and RFC 1123 labels.
pub fn validate_hostname(name: &str) -> Result<(), RuntimeError> {
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    if name.len() <= 64 && name.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(invalid(
            "hostname",
            name,
            "use at most 64 characters of dot-separated labels of letters, digits and '-'"
                .to_string(),
        ))
    }
}

fn check_root(root: &Path, init: &[String]) -> Result<(), RuntimeError> {
    if !root.is_dir() {
        return Err(invalid(
            "root directory",
            &root.display().to_string(),
            "it is not a directory; mount the container first".to_string(),
        ));
    }
    let Some(program) = init.first() else {
        return Err(invalid("init", "", "the command is empty".to_string()));
    };
    if !program.starts_with('/') {
        return Err(invalid("init", program, "use an absolute path".to_string()));
    }
    Ok(())
}
