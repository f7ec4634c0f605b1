//! `lamina convert SRC DST --to raw|lamina`: export a disk to a raw file
//! or import a raw file as a new disk.

use std::path::PathBuf;

use super::pending;

/// Target format of `lamina convert`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// A sparse raw image file.
    Raw,
    /// A new Lamina disk directory.
    Lamina,
}

/// Arguments of `lamina convert`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Source: a disk directory (with --to raw) or a raw file.
    pub src: PathBuf,
    /// Destination: a raw file (with --to raw) or a new disk directory.
    pub dst: PathBuf,
    /// Output format.
    #[arg(long, value_enum)]
    pub to: Target,
}

/// Converts between a disk and a raw file.
pub fn run(args: Args) -> anyhow::Result<()> {
    pending::convert(&args.src, &args.dst, args.to == Target::Raw)
}
