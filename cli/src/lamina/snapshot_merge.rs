//! `lamina snapshot-merge DISK [--all]`: merge the top delta into its
//! parent, or every delta down to the base.

use std::path::PathBuf;

use anyhow::Context;
use lamina_engine::image::ops::{self, MergeScope};
use lamina_engine::serve::{ControlRequest, ControlResponse};

use super::route::{self, Route};

/// Arguments of `lamina snapshot-merge`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Disk directory, mounted or not.
    pub disk: PathBuf,
    /// Merge the whole chain into one delta.
    #[arg(long)]
    pub all: bool,
}

/// Merges, through the server when the disk is mounted. The disk reads
/// the same before and after, and the merged parents' UUIDs and names go
/// away.
pub fn run(args: Args) -> anyhow::Result<()> {
    let context = || format!("merge snapshots of {}", args.disk.display());
    match route::route(&args.disk)? {
        Route::Mounted(_) => {
            let request = ControlRequest::SnapshotMerge { all: args.all };
            match route::online(&args.disk, request).with_context(context)? {
                ControlResponse::TreeChanged { .. } => Ok(()),
                other => Err(route::unexpected("snapshot-merge", &other)),
            }
        }
        Route::SnapshotMounted(info) => Err(route::reject_mounted("`lamina snapshot-merge`", info)),
        Route::Offline => {
            let scope = if args.all {
                MergeScope::All
            } else {
                MergeScope::Parent
            };
            ops::snapshot_merge(&args.disk, scope).with_context(context)
        }
    }
}
