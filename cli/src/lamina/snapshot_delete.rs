//! `lamina snapshot-delete DISK ID|NAME`: remove a snapshot point without
//! changing what the disk or any other snapshot reads.

use std::path::PathBuf;

use anyhow::Context;
use lamina_engine::image::{ops, resolve_snapshot};

use super::route::{self, Route};

/// Arguments of `lamina snapshot-delete`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Disk directory; the disk must not be mounted.
    pub disk: PathBuf,
    /// The snapshot's UUID or name.
    pub snapshot: String,
}

/// Deletes the snapshot offline; data that its children still read is
/// moved into them first.
pub fn run(args: Args) -> anyhow::Result<()> {
    resolve_snapshot(&args.disk, &args.snapshot)?;
    match route::route(&args.disk)? {
        // NOTE: the server's control protocol has no delete request, so a
        // mounted disk is rejected instead of being forwarded.
        Route::Mounted(info) | Route::SnapshotMounted(info) => {
            Err(route::reject_mounted("`lamina snapshot-delete`", info))
        }
        Route::Offline => ops::snapshot_delete(&args.disk, &args.snapshot).with_context(|| {
            format!(
                "delete snapshot {} of {}",
                args.snapshot,
                args.disk.display()
            )
        }),
    }
}
