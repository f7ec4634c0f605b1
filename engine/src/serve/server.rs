//! The server process: it owns a mounted disk from `mount` until `umount`.
//!
//! [`spawn`] forks twice so that the server is a session leader that no
//! caller waits for, and reads one startup message from a pipe: the
//! [`MountInfo`] once the filesystem is mounted, or the error that stopped
//! the setup. The server then serves FUSE requests on its worker threads
//! and control requests on the control socket until a shutdown request or
//! SIGTERM.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, Signal};
use nix::unistd::ForkResult;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::attach::Attachment;
use super::control::{ControlRequest, ControlResponse, Reply, kind_from_name, kind_name};
use super::error::{ServeError, error_chain};
use super::fs::{self, FsType};
use super::runtime::{self, MountInfo};
use crate::error::HasKind;
use crate::image::ops::{MergeScope, OpsError, TreeChange};
use crate::image::{Access, Disk, SnapshotInfo};

/// How long `mount` waits for the server to report ready.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the FUSE unmount is retried after a normal filesystem unmount.
const EXPORT_UNMOUNT_TIMEOUT: Duration = Duration::from_secs(10);
/// After a lazy filesystem unmount, the loop device stays busy until the
/// last process using the filesystem lets go. The server keeps serving
/// until then, for at most this long.
const LAZY_EXPORT_UNMOUNT_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// Everything the server needs to start.
#[derive(Debug, Clone)]
pub(crate) struct ServerConfig {
    pub disk: PathBuf,
    pub target: PathBuf,
    /// Snapshot UUID, resolved from the name or UUID the caller gave.
    pub snapshot: Option<String>,
    pub read_only: bool,
    pub fs_options: Option<String>,
    pub run_dir: PathBuf,
    pub log: PathBuf,
}

/// The one message the server sends on the startup pipe.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Startup {
    Ready(MountInfo),
    Failed { kind: String, message: String },
}

/// Starts a server for `config` and returns once it serves the mounted
/// filesystem.
///
/// The server is forked from the calling process, so call this before the
/// process starts threads of its own: a fork copies only the calling
/// thread, and locks held by other threads stay locked in the child.
pub(crate) fn spawn(config: &ServerConfig) -> Result<MountInfo, ServeError> {
    let threads = thread_count();
    if threads > 1 {
        tracing::warn!(
            threads,
            "forking the server from a multi-threaded process; call mount before starting threads"
        );
    }
    let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| ServeError::io("create pipe for", &config.run_dir, e.into()))?;

    // SAFETY: the child only calls async-signal-safe functions (setsid,
    // fork, _exit) until the second fork, and the server process it
    // becomes never returns into the caller's code: it ends in _exit.
    match unsafe { nix::unistd::fork() } {
        Ok(ForkResult::Parent { child }) => {
            drop(write_end);
            // The intermediate child exits right after the second fork.
            let _ = nix::sys::wait::waitpid(child, None);
            wait_ready(read_end, config)
        }
        Ok(ForkResult::Child) => {
            drop(read_end);
            let _ = nix::unistd::setsid();
            // SAFETY: as above; the grandchild runs the server and exits.
            match unsafe { nix::unistd::fork() } {
                Ok(ForkResult::Child) => {
                    let main = std::panic::AssertUnwindSafe(|| server_main(config, write_end));
                    let code = std::panic::catch_unwind(main).unwrap_or(101);
                    // SAFETY: _exit ends the process without running the
                    // caller's atexit handlers or destructors.
                    unsafe { libc::_exit(code) }
                }
                // SAFETY: as above.
                _ => unsafe { libc::_exit(0) },
            }
        }
        Err(e) => Err(ServeError::io("fork server for", &config.disk, e.into())),
    }
}

/// Returns the number of threads of this process, or 0 when unknown.
fn thread_count() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

fn wait_ready(pipe: OwnedFd, config: &ServerConfig) -> Result<MountInfo, ServeError> {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    let mut file = std::fs::File::from(pipe);
    let mut message = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let timeout = nix::poll::PollTimeout::try_from(left).unwrap_or(nix::poll::PollTimeout::MAX);
        let mut fds = [nix::poll::PollFd::new(
            std::os::fd::AsFd::as_fd(&file),
            nix::poll::PollFlags::POLLIN,
        )];
        let ready = nix::poll::poll(&mut fds, timeout);
        if matches!(ready, Ok(0)) {
            return Err(ServeError::Timeout {
                what: format!("the server of {} to start", config.disk.display()),
                seconds: STARTUP_TIMEOUT.as_secs(),
            });
        }
        match file.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => message.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ServeError::io("read startup message of", &config.log, e)),
        }
    }
    if message.is_empty() {
        return Err(ServeError::ServerExited {
            log: config.log.clone(),
        });
    }
    match serde_json::from_slice::<Startup>(&message) {
        Ok(Startup::Ready(info)) => Ok(info),
        Ok(Startup::Failed { kind, message }) => Err(ServeError::Server {
            kind: kind_from_name(&kind),
            message,
        }),
        Err(e) => Err(ServeError::Protocol {
            pid: 0,
            detail: e.to_string(),
        }),
    }
}

/// The server process's main function; returns its exit code.
fn server_main(config: &ServerConfig, ready: OwnedFd) -> i32 {
    detach_from_caller(ready.as_raw_fd());
    name_process();
    let dispatch = log_dispatch(&config.log);
    let _log_guard = tracing::dispatcher::set_default(&dispatch);
    if let Err(e) = block_signals() {
        tracing::warn!(error = %e, "cannot block signals; SIGTERM ends the server uncleanly");
    }
    super::fuse::set_io_flusher();

    let start = Instant::now();
    let server = match Server::start(config) {
        Ok(server) => server,
        Err(e) => {
            let message = error_chain(&e);
            tracing::error!(disk = %config.disk.display(), error = %message, "mount failed");
            send_startup(
                ready,
                &Startup::Failed {
                    kind: kind_name(e.kind()).into(),
                    message,
                },
            );
            return 1;
        }
    };
    tracing::info!(
        disk = %config.disk.display(),
        target = %config.target.display(),
        device = %server.info.loop_device.display(),
        snapshot = ?config.snapshot,
        ms = start.elapsed().as_secs_f64() * 1000.0,
        "mounted"
    );
    send_startup(ready, &Startup::Ready(server.info.clone()));
    server.run()
}

fn send_startup(pipe: OwnedFd, message: &Startup) {
    let mut file = std::fs::File::from(pipe);
    if let Ok(bytes) = serde_json::to_vec(message) {
        let _ = file.write_all(&bytes);
    }
}

/// Points standard input and output at /dev/null, standard error at the
/// log, and closes every other descriptor inherited from the caller except
/// `keep`, so that a caller reading our output is not held open by us.
fn detach_from_caller(keep: RawFd) {
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for fd in 0..3 {
            // SAFETY: dup2 onto the standard descriptors, which this process
            // owns; `null` stays open for the call.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
    let keep = u32::try_from(keep).unwrap_or(3);
    let ranges = [(3, keep.saturating_sub(1)), (keep + 1, u32::MAX)];
    for (first, last) in ranges {
        if first <= last {
            // SAFETY: close_range only closes descriptors; no Rust object
            // of this process uses them after the fork except `keep`.
            unsafe { libc::syscall(libc::SYS_close_range, first, last, 0) };
        }
    }
    let _ = std::env::set_current_dir("/");
}

/// Names the main thread so that `ps` and [`runtime::server_alive`] can
/// tell the server apart.
fn name_process() {
    let name = std::ffi::CString::new(runtime::SERVER_NAME).unwrap_or_default();
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16
    // bytes, which `name` is and outlives the call.
    unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr(), 0, 0, 0) };
}

fn log_dispatch(log: &Path) -> tracing::Dispatch {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LAMINA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
    {
        Ok(file) => tracing::Dispatch::new(
            tracing_subscriber::fmt()
                .with_writer(Mutex::new(file))
                .with_ansi(false)
                .with_thread_names(true)
                .with_env_filter(filter)
                .finish(),
        ),
        Err(_) => tracing::Dispatch::none(),
    }
}

fn shutdown_signals() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set.add(Signal::SIGHUP);
    set
}

/// Blocks the shutdown signals in this thread and so in every thread it
/// starts; one thread then takes them with sigwait.
fn block_signals() -> nix::Result<()> {
    shutdown_signals().thread_block()?;
    // A client that hangs up must not kill the server with SIGPIPE.
    // SAFETY: SIG_IGN installs no handler code.
    unsafe { nix::sys::signal::signal(Signal::SIGPIPE, nix::sys::signal::SigHandler::SigIgn) }
        .map(|_| ())
}

/// Logs the result of growing the filesystem at mount time and, on
/// success, removes the record of the pending grow. A failure leaves the
/// record for the next mount and does not stop this one.
fn finish_grow(disk: &Path, grown: Result<(), ServeError>) {
    match grown.and_then(|()| fs::clear_grow_pending(disk)) {
        Ok(()) => tracing::info!(disk = %disk.display(), "filesystem grown to fill the disk"),
        Err(error) => {
            tracing::warn!(disk = %disk.display(), error = %error_chain(&error), "growing the filesystem at mount failed; the next mount tries again")
        }
    }
}

/// Mutable state of a running server, behind one lock: control requests
/// run one at a time.
struct State {
    attachment: Option<Attachment>,
    fs_mounted: bool,
}

/// A running server.
struct Server {
    info: MountInfo,
    /// Taken out at shutdown so that the disk can be closed.
    disk: Mutex<Option<Arc<Disk>>>,
    fs: FsType,
    state: Mutex<State>,
    listener: UnixListener,
}

/// Requests for the main thread, which owns the shutdown.
enum Event {
    Signal(Signal),
    Shutdown { force: bool, client: UnixStream },
}

impl Server {
    /// Opens the disk, attaches it, mounts the filesystem, binds the
    /// control socket and writes the state file. On error, the guards undo
    /// the steps already taken.
    fn start(config: &ServerConfig) -> Result<Server, ServeError> {
        let disk = open_disk(config)?;
        let run_dir = RunDirGuard::create(&config.run_dir)?;
        let export = config.run_dir.join(runtime::EXPORT_FILE);
        let backend: Arc<dyn super::backend::BlockBackend> = disk.clone();
        let attachment = Attachment::attach(backend, &export, config.read_only)?;
        let device = attachment.device().to_path_buf();

        let fs = fs::detect(&device)?.ok_or_else(|| ServeError::NoFilesystem {
            device: device.clone(),
        })?;
        let grow_pending = !config.read_only && fs::grow_pending(&config.disk);
        if grow_pending && fs == FsType::Ext4 {
            finish_grow(&config.disk, fs::grow_unmounted_ext4(&device));
        }
        fs::mount(
            &device,
            &config.target,
            fs,
            config.read_only,
            config.fs_options.as_deref(),
        )?;
        let fs_guard = FsGuard(&config.target);
        if grow_pending && fs == FsType::Xfs {
            finish_grow(&config.disk, fs::grow(&device, &config.target, fs));
        }

        let socket = config.run_dir.join(runtime::CONTROL_SOCKET);
        let listener =
            UnixListener::bind(&socket).map_err(|e| ServeError::io("bind", &socket, e))?;
        let info = MountInfo {
            disk: config.disk.clone(),
            snapshot: config.snapshot.clone(),
            loop_device: device,
            target: config.target.clone(),
            pid: std::process::id(),
            read_only: config.read_only,
            fs_type: fs.name().to_string(),
            run_dir: config.run_dir.clone(),
            log: config.log.clone(),
            running: true,
        };
        runtime::write_state(&info)?;

        std::mem::forget(fs_guard);
        run_dir.keep();
        Ok(Server {
            info,
            disk: Mutex::new(Some(disk)),
            fs,
            state: Mutex::new(State {
                attachment: Some(attachment),
                fs_mounted: true,
            }),
            listener,
        })
    }

    /// Serves until shut down; returns the exit code.
    fn run(self) -> i32 {
        let server = Arc::new(self);
        let (events, inbox) = mpsc::channel();
        spawn_named("signals", {
            let events = events.clone();
            move || wait_signals(&events)
        });
        spawn_named("control", {
            let server = Arc::clone(&server);
            move || server.accept_loop(&events)
        });

        for event in inbox {
            let (force, client) = match event {
                Event::Signal(signal) => {
                    tracing::info!(%signal, "shutting down on signal");
                    (false, None)
                }
                Event::Shutdown { force, client } => (force, Some(client)),
            };
            match server.unmount_fs(force) {
                Ok(()) => {
                    if let Some(mut client) = client {
                        write_reply(&mut client, &Ok(ControlResponse::Done));
                        // Kept open until exit: the client waits for EOF.
                        std::mem::forget(client);
                    }
                    return server.finish(force);
                }
                Err(e) => {
                    tracing::error!(error = %error_chain(&e), "unmount failed; still serving");
                    if let Some(mut client) = client {
                        write_reply(&mut client, &Err(e));
                    }
                }
            }
        }
        1
    }

    fn accept_loop(&self, events: &mpsc::Sender<Event>) {
        for stream in self.listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let request = match read_request(&stream) {
                Ok(request) => request,
                Err(e) => {
                    write_reply(&mut stream, &Err(e));
                    continue;
                }
            };
            let force = match request {
                ControlRequest::Shutdown => false,
                ControlRequest::ForceShutdown => true,
                other => {
                    let result = self.handle(&other);
                    if let Err(e) = &result {
                        tracing::error!(request = ?other, error = %error_chain(e), "control request failed");
                    }
                    write_reply(&mut stream, &result);
                    continue;
                }
            };
            if events
                .send(Event::Shutdown {
                    force,
                    client: stream,
                })
                .is_err()
            {
                return;
            }
        }
    }

    fn handle(&self, request: &ControlRequest) -> Result<ControlResponse, ServeError> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let writable = || {
            if self.info.read_only {
                return Err(ServeError::Unsupported {
                    what: format!("{request:?} on a read-only mount"),
                });
            }
            Ok(())
        };
        match request {
            ControlRequest::Snapshot { name, description } => {
                writable()?;
                self.snapshot(&state, name.as_deref(), description.as_deref())
            }
            ControlRequest::Grow { size } => {
                writable()?;
                self.grow(&state, *size)
            }
            ControlRequest::Info => Ok(ControlResponse::Info {
                mount: Box::new(self.info.clone()),
                disk: to_json(&self.disk()?.info()),
                fs: fs::usage(&self.info.target)?,
            }),
            ControlRequest::SnapshotList => Ok(ControlResponse::Snapshots {
                snapshots: to_json(&self.disk()?.snapshots()),
            }),
            ControlRequest::Compact => {
                writable()?;
                self.compact()
            }
            ControlRequest::SnapshotDelete { snapshot } => {
                writable()?;
                self.snapshot_delete(snapshot)
            }
            ControlRequest::SnapshotMerge { all } => {
                writable()?;
                self.snapshot_merge(*all)
            }
            ControlRequest::Shutdown | ControlRequest::ForceShutdown => Ok(ControlResponse::Done),
        }
    }

    /// Takes a consistent snapshot. Freezing the filesystem writes all its
    /// dirty data and journal through the loop device and blocks new
    /// writes. The flush makes them durable, the snapshot switches to a new
    /// top, and the thaw lets writes continue on it.
    ///
    /// Writes are paused from the freeze to the thaw only. To keep that
    /// short, the filesystem and the disk are synced once before the
    /// freeze while writes still go on, so that the syncs inside the
    /// freeze have only what arrived since.
    fn snapshot(
        &self,
        state: &State,
        name: Option<&str>,
        description: Option<&str>,
    ) -> Result<ControlResponse, ServeError> {
        let disk = self.disk()?;
        let start = Instant::now();
        if state.fs_mounted {
            fs::sync(&self.info.target)?;
        }
        disk.flush().map_err(|e| ServeError::image("flush", e))?;
        let presync_ms = ms_since(start);

        let paused = Instant::now();
        let frozen = if state.fs_mounted {
            Some(fs::freeze(&self.info.target)?)
        } else {
            None
        };
        let freeze_ms = ms_since(paused);
        let flushed = Instant::now();
        disk.flush().map_err(|e| ServeError::image("flush", e))?;
        let flush_ms = ms_since(flushed);
        let switched = Instant::now();
        let uuid = disk
            .snapshot(name, description)
            .map_err(|e| ServeError::image("snapshot", e))?;
        let switch_ms = ms_since(switched);
        drop(frozen);
        let pause_ms = ms_since(paused);
        tracing::info!(
            %uuid,
            ?name,
            pause_ms,
            presync_ms,
            freeze_ms,
            flush_ms,
            switch_ms,
            "snapshot created"
        );
        Ok(ControlResponse::Snapshot { uuid, pause_ms })
    }

    fn grow(&self, state: &State, size: u64) -> Result<ControlResponse, ServeError> {
        let Some(attachment) = &state.attachment else {
            return Err(ServeError::Unsupported {
                what: "grow during shutdown".into(),
            });
        };
        self.disk()?
            .grow(size)
            .map_err(|e| ServeError::image("grow", e))?;
        let seen = attachment.refresh_size()?;
        if seen != size {
            tracing::warn!(size, seen, "FUSE file size differs after grow");
        }
        if state.fs_mounted
            && let Err(error) = fs::grow(&self.info.loop_device, &self.info.target, self.fs)
        {
            let reason = error_chain(&error);
            tracing::warn!(error = %reason, "online filesystem grow failed; the next mount grows it");
            fs::mark_grow_pending(&self.info.disk)?;
            return Err(ServeError::FsGrowDeferred {
                fs: self.fs.name(),
                reason,
            });
        }
        tracing::info!(size, "disk grown");
        Ok(ControlResponse::Grown { size })
    }

    /// Trims the filesystem, whose discards punch freed clusters out of
    /// the top, then compacts the disk. Replies with how much less the top
    /// file occupies than before the trim, or with what the compaction
    /// alone freed when writes during the trim allocated more than that.
    fn compact(&self) -> Result<ControlResponse, ServeError> {
        let disk = self.disk()?;
        let before = disk
            .top_file_bytes()
            .map_err(|e| ServeError::image("stat top delta", e))?;
        match fs::trim(&self.info.target) {
            Ok(trimmed) => tracing::debug!(trimmed, "filesystem trimmed"),
            Err(e) => {
                tracing::warn!(error = %error_chain(&e), "trim failed; compacting what is discarded already")
            }
        }
        let compacted = disk
            .compact()
            .map_err(|e| ServeError::image("compact", e))?;
        let after = disk
            .top_file_bytes()
            .map_err(|e| ServeError::image("stat top delta", e))?;
        let bytes = before.saturating_sub(after).max(compacted);
        tracing::info!(bytes, compacted, "disk compacted");
        Ok(ControlResponse::Compacted { bytes })
    }

    /// Deletes a snapshot. The filesystem needs no freeze, because what
    /// the disk reads does not change. The engine makes I/O wait while it
    /// switches to the new chain.
    fn snapshot_delete(&self, id: &str) -> Result<ControlResponse, ServeError> {
        let disk = self.disk()?;
        let snapshots = disk.snapshots();
        if let Some(found) = find_snapshot(&snapshots, id) {
            if found.current {
                return Err(ServeError::RunningTop {
                    id: id.to_string(),
                    uuid: found.uuid,
                });
            }
            self.check_unmounted(&[found.uuid])?;
        }
        let change = disk.snapshot_delete(id).map_err(|e| match e {
            OpsError::CurrentTop { id, uuid } => ServeError::RunningTop { id, uuid },
            other => ServeError::image("delete snapshot", other),
        })?;
        Ok(tree_changed("snapshot deleted", &change))
    }

    /// Merges the top into its parent, or every delta below it, while the
    /// filesystem stays mounted; see [`Server::snapshot_delete`].
    fn snapshot_merge(&self, all: bool) -> Result<ControlResponse, ServeError> {
        let disk = self.disk()?;
        let scope = if all {
            MergeScope::All
        } else {
            MergeScope::Parent
        };
        self.check_unmounted(&merged_parents(&disk.snapshots(), scope))?;
        let change = disk
            .snapshot_merge(scope)
            .map_err(|e| ServeError::image("merge snapshots", e))?;
        Ok(tree_changed("snapshots merged", &change))
    }

    /// Rejects removing a snapshot that a snapshot mount serves.
    fn check_unmounted(&self, snapshots: &[Uuid]) -> Result<(), ServeError> {
        for mount in runtime::read_all()? {
            if mount.disk != self.info.disk {
                continue;
            }
            let mounted = mount.snapshot.as_deref().map(Uuid::parse_str);
            if let Some(Ok(snapshot)) = mounted
                && snapshots.contains(&snapshot)
            {
                return Err(ServeError::SnapshotMounted {
                    snapshot,
                    target: mount.target,
                });
            }
        }
        Ok(())
    }

    fn disk(&self) -> Result<Arc<Disk>, ServeError> {
        let disk = self.disk.lock().unwrap_or_else(|e| e.into_inner());
        disk.clone().ok_or_else(|| ServeError::Unsupported {
            what: "an image operation during shutdown".into(),
        })
    }

    /// Unmounts the filesystem; with `force`, lazily when it is busy.
    fn unmount_fs(&self, force: bool) -> Result<(), ServeError> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if !state.fs_mounted {
            return Ok(());
        }
        match fs::unmount(&self.info.target, false) {
            Ok(()) => {}
            Err(e) if force => {
                tracing::warn!(error = %error_chain(&e), "unmount failed; detaching lazily");
                fs::unmount(&self.info.target, true)?;
            }
            Err(e) => return Err(e),
        }
        state.fs_mounted = false;
        Ok(())
    }

    /// Detaches the loop device, unmounts the FUSE file, closes the disk
    /// and removes the runtime directory; returns the exit code.
    fn finish(&self, lazy: bool) -> i32 {
        let attachment = self
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .attachment
            .take();
        let mut code = 0;
        if let Some(attachment) = attachment {
            let failed = attachment.failed_requests();
            let timeout = if lazy {
                LAZY_EXPORT_UNMOUNT_TIMEOUT
            } else {
                EXPORT_UNMOUNT_TIMEOUT
            };
            if let Err(e) = attachment.detach(timeout) {
                tracing::error!(error = %error_chain(&e), "detach failed");
                code = 1;
            }
            if failed > 0 {
                tracing::warn!(failed, "FUSE requests failed while serving");
            }
        }
        let disk = self.disk.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(disk) = disk
            && let Err(e) = close_disk(disk)
        {
            tracing::error!(error = %error_chain(&e), "closing the disk failed");
            code = 1;
        }
        runtime::remove_run_dir(&self.info.run_dir);
        tracing::info!(disk = %self.info.disk.display(), "stopped");
        code
    }
}

/// Flushes and closes the disk, which clears its in-use flag. A request
/// still holding the disk delays the close to its drop.
fn close_disk(disk: Arc<Disk>) -> Result<(), ServeError> {
    match Arc::try_unwrap(disk) {
        Ok(disk) => disk.close().map_err(|e| ServeError::image("close disk", e)),
        Err(disk) => {
            tracing::warn!("disk still in use at shutdown; it closes when the last user drops it");
            disk.flush().map_err(|e| ServeError::image("flush", e))
        }
    }
}

fn open_disk(config: &ServerConfig) -> Result<Arc<Disk>, ServeError> {
    let disk = match (&config.snapshot, config.read_only) {
        (Some(snapshot), _) => Disk::open_snapshot(&config.disk, snapshot),
        (None, true) => Disk::open(&config.disk, Access::ReadOnly),
        (None, false) => Disk::open(&config.disk, Access::ReadWrite),
    };
    disk.map(Arc::new)
        .map_err(|e| ServeError::image("open disk", e))
}

fn wait_signals(events: &mpsc::Sender<Event>) {
    let set = shutdown_signals();
    loop {
        match set.wait() {
            Ok(signal) => {
                if events.send(Event::Signal(signal)).is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "sigwait failed");
                return;
            }
        }
    }
}

fn spawn_named<F: FnOnce() + Send + 'static>(name: &str, body: F) {
    let dispatch = tracing::dispatcher::get_default(|d| d.clone());
    let spawned = std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || tracing::dispatcher::with_default(&dispatch, body));
    if let Err(e) = spawned {
        tracing::error!(thread = name, error = %e, "cannot start thread");
    }
}

fn read_request(stream: &UnixStream) -> Result<ControlRequest, ServeError> {
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .map_err(|e| ServeError::io("read", runtime::CONTROL_SOCKET, e))?;
    serde_json::from_str(&line).map_err(|e| ServeError::InvalidArgument {
        what: "control request",
        value: format!("{}: {e}", line.trim_end()),
    })
}

fn write_reply(stream: &mut UnixStream, result: &Result<ControlResponse, ServeError>) {
    let reply = match result {
        Ok(response) => Reply::Ok(response.clone()),
        Err(e) => Reply::Error {
            kind: kind_name(e.kind()).into(),
            message: error_chain(e),
        },
    };
    if let Ok(mut line) = serde_json::to_vec(&reply) {
        line.push(b'\n');
        let _ = stream.write_all(&line);
    }
}

fn ms_since(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1000.0
}

/// Returns the snapshot that `id` names, by UUID or name, as
/// `Descriptor::find` resolves it.
fn find_snapshot<'a>(snapshots: &'a [SnapshotInfo], id: &str) -> Option<&'a SnapshotInfo> {
    match Uuid::parse_str(id) {
        Ok(uuid) => snapshots.iter().find(|s| s.uuid == uuid),
        Err(_) => snapshots.iter().find(|s| s.name.as_deref() == Some(id)),
    }
}

/// Returns the deltas a merge of `scope` removes: the top's parent, or
/// every delta below the top.
fn merged_parents(snapshots: &[SnapshotInfo], scope: MergeScope) -> Vec<Uuid> {
    let parent_of = |uuid: Uuid| {
        snapshots
            .iter()
            .find(|s| s.uuid == uuid)
            .and_then(|s| s.parent)
    };
    let mut merged = Vec::new();
    let mut next = snapshots.iter().find(|s| s.current).and_then(|s| s.parent);
    while let Some(uuid) = next {
        merged.push(uuid);
        if scope == MergeScope::Parent || merged.len() >= snapshots.len() {
            break;
        }
        next = parent_of(uuid);
    }
    merged
}

/// Logs a finished delete or merge with `message` and builds the reply.
fn tree_changed(message: &str, change: &TreeChange) -> ControlResponse {
    let pause_ms = change.pause.as_secs_f64() * 1000.0;
    tracing::info!(removed = ?change.removed, rewritten = ?change.rewritten, pause_ms, "{message}");
    ControlResponse::TreeChanged {
        removed: change.removed.clone(),
        pause_ms,
    }
}

fn to_json<T: Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or(serde_json::Value::Null)
}

/// Removes a half-built runtime directory unless kept.
struct RunDirGuard<'a> {
    path: &'a Path,
    keep: bool,
}

impl<'a> RunDirGuard<'a> {
    fn create(path: &'a Path) -> Result<RunDirGuard<'a>, ServeError> {
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(path)
            .map_err(|e| ServeError::io("create", path, e))?;
        Ok(RunDirGuard { path, keep: false })
    }

    fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for RunDirGuard<'_> {
    fn drop(&mut self) {
        if !self.keep {
            runtime::remove_run_dir(self.path);
        }
    }
}

/// Unmounts a filesystem mounted during a setup that failed later.
struct FsGuard<'a>(&'a Path);

impl Drop for FsGuard<'_> {
    fn drop(&mut self) {
        if fs::unmount(self.0, false).is_err() {
            let _ = fs::unmount(self.0, true);
        }
    }
}
