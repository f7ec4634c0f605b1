//! `lamina snapshot-merge DISK [--all]`: merge the top delta into its
//! parent, or every delta down to the base.

use std::path::PathBuf;

use anyhow::Context;
use lamina_engine::image::ops::{self, MergeScope};

use super::route::{self, Route};

/// Arguments of `lamina snapshot-merge`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Disk directory; the disk must not be mounted.
    pub disk: PathBuf,
    /// Merge the whole chain into one delta.
    #[arg(long)]
    pub all: bool,
}

/// Merges offline; the disk reads the same before and after, and the
/// merged parents' UUIDs and names go away.
pub fn run(args: Args) -> anyhow::Result<()> {
    let scope = if args.all {
        MergeScope::All
    } else {
        MergeScope::Parent
    };
    match route::route(&args.disk)? {
        // NOTE: the server's control protocol has no merge request, so a
        // mounted disk is rejected instead of being forwarded.
        Route::Mounted(info) | Route::SnapshotMounted(info) => {
            Err(route::reject_mounted("`lamina snapshot-merge`", info))
        }
        Route::Offline => ops::snapshot_merge(&args.disk, scope)
            .with_context(|| format!("merge snapshots of {}", args.disk.display())),
    }
}
