//! `lamina compact DISK`: give space that contains no data back to the host.

use std::path::PathBuf;

use anyhow::Context;
use lamina_engine::image::{Access, Disk};
use lamina_engine::serve::{ControlRequest, ControlResponse};

use super::route::{self, Route};

/// Arguments of `lamina compact`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Disk directory.
    pub disk: PathBuf,
}

/// Compacts the top delta, through the server when the disk is mounted
/// (which trims the filesystem first), and prints the bytes freed.
pub fn run(args: Args) -> anyhow::Result<()> {
    let freed = match route::route(&args.disk)? {
        Route::Mounted(_) => match route::online(&args.disk, ControlRequest::Compact)? {
            ControlResponse::Compacted { bytes } => bytes,
            other => return Err(route::unexpected("compact", &other)),
        },
        Route::Offline | Route::SnapshotMounted(_) => {
            let disk = Disk::open(&args.disk, Access::ReadWrite)
                .with_context(|| format!("open disk {}", args.disk.display()))?;
            let freed = disk.compact()?;
            disk.close()?;
            freed
        }
    };
    println!("freed: {freed}");
    Ok(())
}
