//! `lamina snapshot-switch DISK ID|NAME`: revert the disk to a snapshot;
//! the current state is discarded.

use std::path::PathBuf;

use anyhow::Context;
use lamina_engine::image::{Access, Disk, resolve_snapshot};

use super::pending;
use super::route;

/// Arguments of `lamina snapshot-switch`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Disk directory; the disk must not be mounted.
    pub disk: PathBuf,
    /// The snapshot's UUID or name.
    pub snapshot: String,
}

/// Switches offline; a mounted disk is rejected with the busy code.
pub fn run(args: Args) -> anyhow::Result<()> {
    let uuid = resolve_snapshot(&args.disk, &args.snapshot)?;
    route::require_offline("`lamina snapshot-switch`", &args.disk)?;
    let disk = Disk::open(&args.disk, Access::ReadWrite)
        .with_context(|| format!("open disk {}", args.disk.display()))?;
    pending::snapshot_switch(&disk, uuid)?;
    disk.close()?;
    Ok(())
}
