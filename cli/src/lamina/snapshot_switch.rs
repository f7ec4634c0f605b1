//! `lamina snapshot-switch DISK ID|NAME`: revert the disk to a snapshot;
//! the current state is discarded.

use std::path::PathBuf;

use anyhow::Context;
use lamina_engine::image::{ops, resolve_snapshot};

use super::route;

/// Arguments of `lamina snapshot-switch`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Disk directory; the disk must not be mounted.
    pub disk: PathBuf,
    /// The snapshot's UUID or name.
    pub snapshot: String,
}

/// Switches offline and prints the UUID of the new empty top; a mounted
/// disk is rejected with the busy code.
pub fn run(args: Args) -> anyhow::Result<()> {
    resolve_snapshot(&args.disk, &args.snapshot)?;
    route::require_offline("`lamina snapshot-switch`", &args.disk)?;
    let top = ops::snapshot_switch(&args.disk, &args.snapshot).with_context(|| {
        format!(
            "switch {} to snapshot {}",
            args.disk.display(),
            args.snapshot
        )
    })?;
    println!("{top}");
    Ok(())
}
