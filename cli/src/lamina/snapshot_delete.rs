//! `lamina snapshot-delete DISK ID|NAME`: remove a snapshot point without
//! changing what the disk or any other snapshot reads.

use std::path::PathBuf;

use anyhow::Context;
use lamina_engine::image::{ops, resolve_snapshot};
use lamina_engine::serve::{ControlRequest, ControlResponse};

use super::route::{self, Route};

/// Arguments of `lamina snapshot-delete`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Disk directory, mounted or not.
    pub disk: PathBuf,
    /// The snapshot's UUID or name.
    pub snapshot: String,
}

/// Deletes the snapshot, through the server when the disk is mounted.
/// Data that its children still read is moved into them first.
pub fn run(args: Args) -> anyhow::Result<()> {
    resolve_snapshot(&args.disk, &args.snapshot)?;
    let context = || {
        format!(
            "delete snapshot {} of {}",
            args.snapshot,
            args.disk.display()
        )
    };
    match route::route(&args.disk)? {
        Route::Mounted(_) => {
            let request = ControlRequest::SnapshotDelete {
                snapshot: args.snapshot.clone(),
            };
            match route::online(&args.disk, request).with_context(context)? {
                ControlResponse::TreeChanged { .. } => Ok(()),
                other => Err(route::unexpected("snapshot-delete", &other)),
            }
        }
        Route::SnapshotMounted(info) => {
            Err(route::reject_mounted("`lamina snapshot-delete`", info))
        }
        Route::Offline => ops::snapshot_delete(&args.disk, &args.snapshot).with_context(context),
    }
}
