//! `lamina check DISK [--repair]`: validate every delta of the disk and
//! optionally repair what can be repaired.

use std::path::PathBuf;

use super::pending;
use super::route;

/// Arguments of `lamina check`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Disk directory; the disk must not be mounted.
    pub disk: PathBuf,
    /// Repair the problems that can be repaired.
    #[arg(long)]
    pub repair: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Checks the disk offline.
pub fn run(args: Args) -> anyhow::Result<()> {
    route::require_offline("`lamina check`", &args.disk)?;
    pending::check(&args.disk, args.repair)
}
