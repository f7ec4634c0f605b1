//! `lamina snapshot DISK`: freeze the current state as a snapshot and
//! print its UUID.

use std::path::PathBuf;

use anyhow::Context;
use lamina_engine::image::{Access, Disk};
use lamina_engine::serve::{ControlRequest, ControlResponse};

use super::route::{self, Route};

/// Arguments of `lamina snapshot`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Disk directory.
    pub disk: PathBuf,
    /// Name of the snapshot, unique within the disk.
    #[arg(long)]
    pub name: Option<String>,
    /// Free-form description.
    #[arg(long)]
    pub description: Option<String>,
}

/// Takes the snapshot, through the server when the disk is mounted, and
/// prints the new snapshot's UUID alone on a line.
pub fn run(args: Args) -> anyhow::Result<()> {
    let uuid = match route::route(&args.disk)? {
        Route::Mounted(_) => {
            let request = ControlRequest::Snapshot {
                name: args.name,
                description: args.description,
            };
            match route::online(&args.disk, request)? {
                ControlResponse::Snapshot { uuid, .. } => uuid,
                other => return Err(route::unexpected("snapshot", &other)),
            }
        }
        Route::Offline | Route::SnapshotMounted(_) => {
            let disk = Disk::open(&args.disk, Access::ReadWrite)
                .with_context(|| format!("open disk {}", args.disk.display()))?;
            let uuid = disk.snapshot(args.name.as_deref(), args.description.as_deref())?;
            disk.close()?;
            uuid
        }
    };
    println!("{uuid}");
    Ok(())
}
