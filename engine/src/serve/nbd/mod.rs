//! An NBD server on a unix socket that exports one [`BlockBackend`], so
//! that NBD clients such as `qemu-img` and `qemu-io` can read and write a
//! disk.
//!
//! It speaks the fixed newstyle handshake (`NBD_OPT_GO`, `NBD_OPT_INFO`,
//! `NBD_OPT_LIST`, `NBD_OPT_ABORT` and the old `NBD_OPT_EXPORT_NAME`) and
//! sends a simple reply to every request. Structured replies, block
//! status and TLS are not offered. Each connection has its own reader
//! thread and a few workers that handle its requests concurrently. [`NbdServer::run`] returns after a
//! [`ShutdownHandle::shutdown`] or a SIGTERM/SIGINT (see
//! [`NbdServer::stop_on_signals`]): it stops accepting, removes the
//! socket file, lets every connection finish the requests it has already
//! sent, and flushes the backend.

mod error;
mod proto;
mod session;
mod transmission;

use std::collections::HashMap;
use std::io::ErrorKind as IoErrorKind;
use std::net::Shutdown;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

pub use error::NbdError;

use super::backend::BlockBackend;
use super::error::error_chain;

/// Maximum READ, WRITE or WRITE_ZEROES length, 32 MiB. The protocol
/// recommends this limit to clients when no block size is advertised,
/// and this server advertises it as its maximum block size.
pub const MAX_PAYLOAD: u32 = 32 << 20;

/// Preferred block size advertised to clients.
const PREFERRED_BLOCK: u32 = 4096;

/// How long shutdown waits for connections to finish the requests they
/// have sent before it closes them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Pause after an accept that failed for lack of resources.
const ACCEPT_RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Connections served at once; more are closed right after accept, so a
/// misbehaving client cannot make the server start threads without bound.
pub const MAX_CONNECTIONS: usize = 128;

/// Settings of an NBD export.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NbdOptions {
    /// Reject writes, trims and write-zeroes with `EPERM` and announce the
    /// export as read-only.
    pub read_only: bool,
    /// The export's name. Clients may also ask for the default export
    /// (the empty name), which is this one.
    pub export_name: String,
    /// A description that `NBD_OPT_LIST` and `NBD_OPT_INFO` return.
    pub description: Option<String>,
}

/// Counts of one server run, returned by [`NbdServer::run`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NbdStats {
    /// Connections accepted.
    pub connections: u64,
    /// Transmission requests received, `NBD_CMD_DISC` included.
    pub requests: u64,
    /// Requests that failed with an NBD error value.
    pub failed_requests: u64,
}

/// The served export.
struct Export {
    backend: Arc<dyn BlockBackend>,
    name: String,
    description: Option<String>,
    read_only: bool,
}

impl Export {
    fn size(&self) -> u64 {
        self.backend.size()
    }

    fn answers_to(&self, name: &str) -> bool {
        name.is_empty() || name == self.name
    }

    /// Returns the transmission flags. `NBD_FLAG_CAN_MULTI_CONN` is
    /// correct because every connection uses the same backend with no
    /// cache of its own, and a backend flush covers every completed write.
    fn transmission_flags(&self) -> u16 {
        let common = proto::FLAG_HAS_FLAGS
            | proto::FLAG_SEND_FLUSH
            | proto::FLAG_SEND_FUA
            | proto::FLAG_CAN_MULTI_CONN;
        if self.read_only {
            common | proto::FLAG_READ_ONLY
        } else {
            common | proto::FLAG_SEND_TRIM | proto::FLAG_SEND_WRITE_ZEROES
        }
    }
}

/// State shared by the accept loop, the connections and shutdown handles.
struct Shared {
    stopping: AtomicBool,
    /// Write end of the pipe that wakes the accept loop.
    wake: OwnedFd,
    /// A clone of every open connection, to shut down its reading side.
    clients: Mutex<HashMap<u64, UnixStream>>,
    requests: AtomicU64,
    failures: AtomicU64,
}

impl Shared {
    fn clients(&self) -> MutexGuard<'_, HashMap<u64, UnixStream>> {
        self.clients.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops every connection from reading new requests. Requests that a
    /// client has sent already are still read, handled and replied to.
    fn stop(&self) {
        let clients = self.clients();
        self.stopping.store(true, Ordering::Release);
        for stream in clients.values() {
            let _ = stream.shutdown(Shutdown::Read);
        }
    }

    /// Closes every connection that is still open, which also ends a
    /// reply blocked on a client that stopped reading.
    fn disconnect_all(&self) {
        let clients = self.clients();
        for (id, stream) in clients.iter() {
            tracing::warn!(
                id,
                "NBD client still connected after the grace period, disconnecting"
            );
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

/// Stops a running [`NbdServer`] from another thread.
#[derive(Clone)]
pub struct ShutdownHandle(Arc<Shared>);

impl ShutdownHandle {
    /// Asks the server to shut down; [`NbdServer::run`] returns once every
    /// connection has ended and the backend is flushed.
    pub fn shutdown(&self) {
        self.0.stopping.store(true, Ordering::Release);
        // A full pipe already contains a wake-up, so EAGAIN is fine.
        let _ = nix::unistd::write(&self.0.wake, &[1]);
    }
}

impl std::fmt::Debug for ShutdownHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShutdownHandle").finish_non_exhaustive()
    }
}

/// Removes the socket file when dropped.
struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        if let Err(error) = std::fs::remove_file(&self.0)
            && error.kind() != IoErrorKind::NotFound
        {
            tracing::warn!(socket = %self.0.display(), %error, "removing the NBD socket failed");
        }
    }
}

/// An NBD server bound to its socket; [`NbdServer::run`] serves clients.
pub struct NbdServer {
    listener: UnixListener,
    socket: SocketFile,
    export: Arc<Export>,
    shared: Arc<Shared>,
    wake: OwnedFd,
    signals: Option<SignalFd>,
}

impl std::fmt::Debug for NbdServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NbdServer")
            .field("socket", &self.socket.0)
            .field("export", &self.export.name)
            .field("read_only", &self.export.read_only)
            .finish_non_exhaustive()
    }
}

impl NbdServer {
    /// Binds `socket_path`. A socket file left by a dead server is
    /// replaced. A path where a server still listens, or that is not a
    /// socket, is an error.
    pub fn bind(
        backend: Arc<dyn BlockBackend>,
        socket_path: &Path,
        opts: NbdOptions,
    ) -> Result<NbdServer, NbdError> {
        check_string("export name", &opts.export_name)?;
        if let Some(description) = &opts.description {
            check_string("description", description)?;
        }
        remove_stale_socket(socket_path)?;
        let listener = UnixListener::bind(socket_path).map_err(|source| NbdError::Socket {
            op: "bind",
            path: socket_path.to_path_buf(),
            source,
        })?;
        let socket = SocketFile(socket_path.to_path_buf());
        listener
            .set_nonblocking(true)
            .map_err(|source| NbdError::Socket {
                op: "configure",
                path: socket_path.to_path_buf(),
                source,
            })?;

        let (wake, wake_write) =
            nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).map_err(|errno| {
                NbdError::Socket {
                    op: "create wake-up pipe for",
                    path: socket_path.to_path_buf(),
                    source: errno.into(),
                }
            })?;
        let shared = Arc::new(Shared {
            stopping: AtomicBool::new(false),
            wake: wake_write,
            clients: Mutex::new(HashMap::new()),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        });
        let export = Arc::new(Export {
            backend,
            name: opts.export_name,
            description: opts.description,
            read_only: opts.read_only,
        });
        Ok(NbdServer {
            listener,
            socket,
            export,
            shared,
            wake,
            signals: None,
        })
    }

    /// Returns the socket path.
    pub fn socket_path(&self) -> &Path {
        &self.socket.0
    }

    /// Returns a handle that stops [`NbdServer::run`].
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(self.shared.clone())
    }

    /// Makes SIGTERM and SIGINT shut the server down cleanly.
    ///
    /// The signals are blocked in the calling thread and read through a
    /// signalfd. Threads started earlier keep their signal mask, and a
    /// signal delivered to one of them still ends the process, so call
    /// [`block_shutdown_signals`] before starting any thread.
    pub fn stop_on_signals(&mut self) -> Result<(), NbdError> {
        let set = block_shutdown_signals()?;
        let fd = SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
            .map_err(|source| NbdError::Signals { source })?;
        self.signals = Some(fd);
        Ok(())
    }

    /// Serves clients until shut down, then waits for every connection to
    /// end and flushes the backend. The socket file is removed before
    /// this returns, also on error.
    pub fn run(self) -> Result<NbdStats, NbdError> {
        let NbdServer {
            listener,
            socket,
            export,
            shared,
            wake,
            signals,
        } = self;
        tracing::info!(
            socket = %socket.0.display(),
            size = export.size(),
            read_only = export.read_only,
            "NBD server started"
        );

        let mut accept = AcceptLoop {
            listener: &listener,
            socket: &socket.0,
            export: &export,
            shared: &shared,
            threads: Vec::new(),
            next_id: 0,
        };
        let result = accept.run(&wake, signals.as_ref());
        let threads = std::mem::take(&mut accept.threads);
        let connections = accept.next_id;

        drop(listener);
        drop(socket);
        shared.stop();
        wait_for_connections(&shared, threads);

        let flushed = if export.read_only {
            Ok(())
        } else {
            export
                .backend
                .flush()
                .map_err(|source| NbdError::Flush { source })
        };
        let stats = NbdStats {
            connections,
            requests: shared.requests.load(Ordering::Relaxed),
            failed_requests: shared.failures.load(Ordering::Relaxed),
        };
        tracing::info!(
            connections = stats.connections,
            requests = stats.requests,
            failed = stats.failed_requests,
            "NBD server stopped"
        );
        result?;
        flushed?;
        Ok(stats)
    }
}

/// Binds `socket_path`, stops on SIGTERM and SIGINT and serves `backend`
/// until then.
pub fn serve_nbd(
    backend: Arc<dyn BlockBackend>,
    socket_path: &Path,
    opts: NbdOptions,
) -> Result<NbdStats, NbdError> {
    let mut server = NbdServer::bind(backend, socket_path, opts)?;
    server.stop_on_signals()?;
    server.run()
}

/// Blocks SIGTERM and SIGINT in the calling thread and in the threads it
/// starts afterwards, so that the signals wait for [`NbdServer::run`].
/// Returns the blocked set.
pub fn block_shutdown_signals() -> Result<SigSet, NbdError> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set.thread_block()
        .map_err(|source| NbdError::Signals { source })?;
    Ok(set)
}

struct AcceptLoop<'a> {
    listener: &'a UnixListener,
    socket: &'a Path,
    export: &'a Arc<Export>,
    shared: &'a Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    next_id: u64,
}

impl AcceptLoop<'_> {
    /// Accepts connections until the wake pipe or a signal fires.
    fn run(&mut self, wake: &OwnedFd, signals: Option<&SignalFd>) -> Result<(), NbdError> {
        loop {
            let mut fds = vec![
                PollFd::new(self.listener.as_fd(), PollFlags::POLLIN),
                PollFd::new(wake.as_fd(), PollFlags::POLLIN),
            ];
            if let Some(signals) = signals {
                fds.push(PollFd::new(signals.as_fd(), PollFlags::POLLIN));
            }
            match nix::poll::poll(&mut fds, PollTimeout::NONE) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(errno) => return Err(self.socket_error("poll", errno.into())),
            }
            let ready = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
            let (listener_ready, woken) = (ready(&fds[0]), ready(&fds[1]));
            let signalled = fds.get(2).is_some_and(ready);
            drop(fds);

            if signalled && let Some(signal) = signals.and_then(read_signal) {
                tracing::info!(%signal, "NBD server shutting down on signal");
                return Ok(());
            }
            if woken || self.shared.stopping.load(Ordering::Acquire) {
                tracing::info!("NBD server shutting down on request");
                return Ok(());
            }
            if listener_ready {
                self.accept()?;
            }
            self.threads.retain(|thread| !thread.is_finished());
        }
    }

    fn accept(&mut self) -> Result<(), NbdError> {
        let stream = match self.listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if matches!(e.kind(), IoErrorKind::WouldBlock | IoErrorKind::Interrupted) => {
                return Ok(());
            }
            // The client gave up before the accept, so there is nothing to serve.
            Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => return Ok(()),
            // Out of descriptors or memory: the pending client waits in the
            // backlog until a connection ends, and the pause keeps this
            // loop from spinning on the still-readable listener.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                ) =>
            {
                tracing::warn!(error = %e, "accepting an NBD connection failed, retrying");
                std::thread::sleep(ACCEPT_RETRY_PAUSE);
                return Ok(());
            }
            Err(e) => return Err(self.socket_error("accept on", e)),
        };
        if self.shared.clients().len() >= MAX_CONNECTIONS {
            tracing::warn!(
                max = MAX_CONNECTIONS,
                "NBD connection rejected: too many clients"
            );
            return Ok(());
        }
        let id = self.next_id;
        self.next_id += 1;
        if let Err(error) = self.spawn(id, stream) {
            tracing::error!(%error, id, "starting an NBD connection thread failed");
        }
        Ok(())
    }

    fn spawn(&mut self, id: u64, stream: UnixStream) -> std::io::Result<()> {
        stream.set_nonblocking(false)?;
        let clone = stream.try_clone()?;
        {
            let mut clients = self.shared.clients();
            if self.shared.stopping.load(Ordering::Acquire) {
                let _ = clone.shutdown(Shutdown::Read);
            }
            clients.insert(id, clone);
        }

        let export = self.export.clone();
        let shared = self.shared.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("nbd-{id}"))
            .spawn(move || serve_connection(id, stream, &export, &shared));
        match spawned {
            Ok(thread) => {
                self.threads.push(thread);
                Ok(())
            }
            Err(e) => {
                self.shared.clients().remove(&id);
                Err(e)
            }
        }
    }

    fn socket_error(&self, op: &'static str, source: std::io::Error) -> NbdError {
        NbdError::Socket {
            op,
            path: self.socket.to_path_buf(),
            source,
        }
    }
}

/// Waits for the connection threads. After [`SHUTDOWN_GRACE`] the
/// remaining connections are closed, so that a client that stopped reading
/// replies cannot hold the shutdown forever.
fn wait_for_connections(shared: &Shared, threads: Vec<JoinHandle<()>>) {
    let deadline = Instant::now() + SHUTDOWN_GRACE;
    while threads.iter().any(|t| !t.is_finished()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    if threads.iter().any(|t| !t.is_finished()) {
        shared.disconnect_all();
    }
    for thread in threads {
        let _ = thread.join();
    }
}

fn serve_connection(id: u64, mut stream: UnixStream, export: &Export, shared: &Shared) {
    tracing::debug!(id, "NBD client connected");
    session::run(&mut stream, export, shared);
    shared.clients().remove(&id);
    tracing::debug!(id, "NBD client disconnected");
}

fn read_signal(signals: &SignalFd) -> Option<Signal> {
    match signals.read_signal() {
        Ok(Some(info)) => i32::try_from(info.ssi_signo)
            .ok()
            .and_then(|number| Signal::try_from(number).ok()),
        Ok(None) => None,
        Err(error) => {
            tracing::warn!(%error, "reading the signalfd failed");
            None
        }
    }
}

fn check_string(what: &'static str, value: &str) -> Result<(), NbdError> {
    if value.len() > proto::MAX_STRING {
        return Err(NbdError::StringTooLong {
            what,
            len: value.len(),
            max: proto::MAX_STRING,
        });
    }
    Ok(())
}

/// Removes a socket file that no server listens on any more.
fn remove_stale_socket(path: &Path) -> Result<(), NbdError> {
    let metadata = match std::fs::symlink_metadata(path) {
        Ok(metadata) => metadata,
        Err(e) if e.kind() == IoErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(NbdError::Socket {
                op: "stat",
                path: path.to_path_buf(),
                source,
            });
        }
    };
    if !metadata.file_type().is_socket() {
        return Err(NbdError::NotASocket {
            path: path.to_path_buf(),
        });
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(NbdError::SocketInUse {
            path: path.to_path_buf(),
        }),
        Err(e) if e.kind() == IoErrorKind::ConnectionRefused => {
            tracing::info!(socket = %path.display(), "removing stale NBD socket");
            std::fs::remove_file(path).map_err(|source| NbdError::Socket {
                op: "remove stale",
                path: path.to_path_buf(),
                source,
            })
        }
        Err(source) => Err(NbdError::Socket {
            op: "probe",
            path: path.to_path_buf(),
            source,
        }),
    }
}
