//! `lamina snapshot-delete DISK ID|NAME`: remove a snapshot point without
//! changing what the disk or any other snapshot reads.

use std::path::PathBuf;

use anyhow::Context;
use lamina_engine::image::{Access, Disk, resolve_snapshot};

use super::pending;
use super::route::{self, Route};

/// Arguments of `lamina snapshot-delete`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Disk directory.
    pub disk: PathBuf,
    /// The snapshot's UUID or name.
    pub snapshot: String,
}

/// Deletes the snapshot; data that later layers still need is merged
/// into them first.
pub fn run(args: Args) -> anyhow::Result<()> {
    let uuid = resolve_snapshot(&args.disk, &args.snapshot)?;
    match route::route(&args.disk)? {
        Route::Mounted(info) | Route::SnapshotMounted(info) => {
            Err(route::reject_mounted("`lamina snapshot-delete`", info))
        }
        Route::Offline => {
            let disk = Disk::open(&args.disk, Access::ReadWrite)
                .with_context(|| format!("open disk {}", args.disk.display()))?;
            pending::snapshot_delete(&disk, uuid)?;
            disk.close()?;
            Ok(())
        }
    }
}
