//! `lamina read DISK --offset N --length N`: copy bytes out of the disk or
//! one of its snapshots.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use lamina_engine::image::{Access, Disk, ImageError};

use super::write::check_range;
use crate::size::Size;

/// Bytes copied per request.
const CHUNK: u64 = 1 << 20;

/// Arguments of `lamina read`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Disk directory.
    pub disk: PathBuf,
    /// Byte offset to read from (K, M, G, T suffixes allowed).
    #[arg(long, allow_hyphen_values = true)]
    pub offset: Size,
    /// Number of bytes to read (K, M, G, T suffixes allowed).
    #[arg(long, allow_hyphen_values = true)]
    pub length: Size,
    /// Read this snapshot (UUID or name) instead of the current state.
    #[arg(long)]
    pub snapshot: Option<String>,
    /// File to write the bytes to; standard output when missing.
    #[arg(long)]
    pub output: Option<PathBuf>,
}

/// Reads the range in chunks and writes it to the output.
pub fn run(args: Args) -> anyhow::Result<()> {
    let disk = match &args.snapshot {
        Some(id) => Disk::open_snapshot(&args.disk, id),
        None => Disk::open(&args.disk, Access::ReadOnly),
    }
    .with_context(|| format!("open disk {}", args.disk.display()))?;
    check_range(&disk, args.offset.0, args.length.0)?;

    let mut output: Box<dyn Write> = match &args.output {
        Some(path) => {
            Box::new(File::create(path).map_err(|e| ImageError::io("create output", path, e))?)
        }
        None => Box::new(std::io::stdout().lock()),
    };
    let mut buf = vec![0u8; usize::try_from(CHUNK)?];
    let mut offset = args.offset.0;
    let end = args.offset.0 + args.length.0;
    while offset < end {
        let n = (end - offset).min(CHUNK);
        let chunk = &mut buf[..usize::try_from(n)?];
        disk.read_at(chunk, offset)?;
        output.write_all(chunk).context("write output")?;
        offset += n;
    }
    output.flush().context("flush output")?;
    disk.close()?;
    Ok(())
}
