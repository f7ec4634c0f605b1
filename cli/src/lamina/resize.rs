//! `lamina resize DISK --size SIZE`: grow the disk, or shrink an unmounted
//! disk past clusters that hold no data.

use std::path::PathBuf;

use anyhow::Context;
use lamina_engine::image::{Access, Disk, ops};
use lamina_engine::serve::{ControlRequest, ControlResponse};

use super::route::{self, Route};
use crate::size::Size;

/// Arguments of `lamina resize`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Disk directory.
    pub disk: PathBuf,
    /// New virtual size (K, M, G, T suffixes allowed), a multiple of the
    /// cluster size.
    #[arg(long, allow_hyphen_values = true)]
    pub size: Size,
}

/// Grows online through the server, or offline, in both cases with the
/// filesystem. Shrinking works only offline and leaves the filesystem as
/// it is.
pub fn run(args: Args) -> anyhow::Result<()> {
    let size = args.size.0;
    match route::route(&args.disk)? {
        Route::Mounted(info) => {
            let current = disk_size(&info)?;
            if size < current {
                return Err(route::reject_mounted("shrinking a disk", info));
            }
            match route::online(&args.disk, ControlRequest::Grow { size })? {
                ControlResponse::Grown { .. } | ControlResponse::Done => Ok(()),
                other => Err(route::unexpected("grow", &other)),
            }
        }
        Route::Offline | Route::SnapshotMounted(_) => {
            let current = Disk::open(&args.disk, Access::ReadOnly)?.virtual_size();
            if size > current {
                lamina_engine::serve::grow_offline(&args.disk, size)?;
                return Ok(());
            }
            ops::resize(&args.disk, size)
                .with_context(|| format!("resize {} to {size} bytes", args.disk.display()))
        }
    }
}

/// Returns the virtual size of a mounted disk, from its server.
fn disk_size(info: &lamina_engine::serve::MountInfo) -> anyhow::Result<u64> {
    match route::online(&info.disk, ControlRequest::Info)? {
        ControlResponse::Info { disk, .. } => disk["virtual_size"]
            .as_u64()
            .context("the server's info reply has no virtual_size"),
        other => Err(route::unexpected("info", &other)),
    }
}
