//! `lamina mount DISK --target DIR`: serve a disk and mount its filesystem.

use std::path::PathBuf;

use lamina_engine::serve::{self, MountOptions};

/// Arguments of `lamina mount`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Disk directory.
    pub disk: PathBuf,
    /// Empty directory to mount the filesystem at.
    #[arg(long, short = 't')]
    pub target: PathBuf,
    /// Mount read-only.
    #[arg(long)]
    pub read_only: bool,
    /// Mount this snapshot (UUID or name) read-only instead of the running top.
    #[arg(long)]
    pub snapshot: Option<String>,
    /// Filesystem mount options, comma-separated, such as "discard".
    #[arg(long, short = 'o')]
    pub options: Option<String>,
}

/// Starts the server and returns once the filesystem is mounted.
pub fn run(args: Args) -> anyhow::Result<()> {
    let opts = MountOptions {
        read_only: args.read_only,
        snapshot: args.snapshot,
        fs_options: args.options,
    };
    serve::mount(&args.disk, &args.target, &opts)?;
    Ok(())
}
