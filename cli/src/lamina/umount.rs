//! `lamina umount DISK|DIR`: unmount and stop the server.

use std::path::PathBuf;

use lamina_engine::serve;

/// Arguments of `lamina umount`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Disk directory or mount target.
    pub path: PathBuf,
    /// Detach a busy filesystem lazily, and clean up after a dead server.
    #[arg(long)]
    pub force: bool,
}

/// Unmounts and waits until the server has exited.
pub fn run(args: Args) -> anyhow::Result<()> {
    serve::umount(&args.path, args.force)?;
    Ok(())
}
