//! `lamina snapshot-merge DISK [--all]`: merge the top delta into its
//! parent, or every delta down to the base.

use std::path::PathBuf;

use anyhow::Context;
use lamina_engine::image::{Access, Disk};

use super::pending;
use super::route::{self, Route};

/// Arguments of `lamina snapshot-merge`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Disk directory.
    pub disk: PathBuf,
    /// Merge the whole chain into one delta.
    #[arg(long)]
    pub all: bool,
}

/// Merges; the disk reads the same before and after.
pub fn run(args: Args) -> anyhow::Result<()> {
    match route::route(&args.disk)? {
        Route::Mounted(info) | Route::SnapshotMounted(info) => {
            Err(route::reject_mounted("`lamina snapshot-merge`", info))
        }
        Route::Offline => {
            let disk = Disk::open(&args.disk, Access::ReadWrite)
                .with_context(|| format!("open disk {}", args.disk.display()))?;
            pending::snapshot_merge(&disk, args.all)?;
            disk.close()?;
            Ok(())
        }
    }
}
