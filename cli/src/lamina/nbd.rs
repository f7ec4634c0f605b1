//! `lamina serve DISK --nbd unix:PATH`: export a disk over NBD in the
//! foreground until SIGTERM or SIGINT.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use lamina_engine::HasKind;
use lamina_engine::image::{Access, Disk};
use lamina_engine::serve::nbd::{self, NbdError, NbdOptions, NbdServer};
use lamina_engine::serve::{BlockBackend, ServeError};

use crate::exit::UsageError;

/// Arguments of `lamina serve`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Disk directory.
    pub disk: PathBuf,
    /// Listen address: unix:PATH, a unix socket. TCP is not offered.
    #[arg(long, value_name = "unix:PATH")]
    pub nbd: String,
    /// Export read-only; the disk is opened read-only as well.
    #[arg(long)]
    pub read_only: bool,
    /// Export this snapshot (UUID or name) read-only instead of the top.
    #[arg(long)]
    pub snapshot: Option<String>,
    /// Export name; clients that ask for the default (empty) name get the
    /// same export.
    #[arg(long, default_value = "")]
    pub export_name: String,
}

/// Serves the disk until a shutdown signal, then closes it.
pub fn run(args: Args) -> anyhow::Result<()> {
    let socket = parse_listen(&args.nbd)?;
    // Before the disk is opened and before any thread starts, so that a
    // signal from now on waits for the server instead of killing the
    // process with the disk still marked in use.
    nbd::block_shutdown_signals().map_err(into_anyhow)?;

    let read_only = args.read_only || args.snapshot.is_some();
    let disk = open_disk(&args.disk, args.snapshot.as_deref(), read_only)?;
    let disk = Arc::new(disk);
    let opts = NbdOptions {
        read_only,
        export_name: args.export_name,
        description: Some(format!("lamina disk {}", args.disk.display())),
    };

    let served = serve(disk.clone(), &socket, opts);
    let disk = Arc::try_unwrap(disk).map_err(|_| {
        anyhow::anyhow!("closing the disk failed: NBD connections still use it after shutdown")
    })?;
    let closed = disk
        .close()
        .with_context(|| format!("close disk {}", args.disk.display()));
    served?;
    closed
}

fn serve(disk: Arc<Disk>, socket: &Path, opts: NbdOptions) -> anyhow::Result<()> {
    let backend: Arc<dyn BlockBackend> = disk;
    let mut server = NbdServer::bind(backend, socket, opts).map_err(into_anyhow)?;
    server.stop_on_signals().map_err(into_anyhow)?;
    println!("serving nbd+unix:///?socket={}", socket.display());
    server.run().map_err(into_anyhow)?;
    Ok(())
}

fn open_disk(dir: &Path, snapshot: Option<&str>, read_only: bool) -> anyhow::Result<Disk> {
    let disk = match snapshot {
        Some(id) => Disk::open_snapshot(dir, id),
        None if read_only => Disk::open(dir, Access::ReadOnly),
        None => Disk::open(dir, Access::ReadWrite),
    };
    disk.with_context(|| format!("open disk {}", dir.display()))
}

/// Parses `unix:PATH`.
fn parse_listen(value: &str) -> anyhow::Result<PathBuf> {
    match value.strip_prefix("unix:") {
        Some(path) if !path.is_empty() => Ok(PathBuf::from(path)),
        _ => Err(UsageError(format!(
            "invalid --nbd {value:?}: expected unix:PATH, such as unix:/run/disk.sock"
        ))
        .into()),
    }
}

/// Keeps the error kind for the exit code. `exit::kind_of` does not know
/// `NbdError`, so the failure travels as a `ServeError` with the same kind.
fn into_anyhow(error: NbdError) -> anyhow::Error {
    let kind = error.kind();
    let mut message = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    ServeError::Server { kind, message }.into()
}

#[cfg(test)]
mod tests {
    use super::parse_listen;

    #[test]
    fn listen_address_needs_unix_prefix() {
        assert_eq!(
            parse_listen("unix:/tmp/a.sock").unwrap(),
            std::path::PathBuf::from("/tmp/a.sock")
        );
        assert!(parse_listen("unix:").is_err());
        assert!(parse_listen("/tmp/a.sock").is_err());
        assert!(parse_listen("tcp:localhost:10809").is_err());
    }
}
