//! `lamina write DISK --offset N --input FILE`: copy a file into the disk.

use std::fs::File;
use std::io::Read;
use std::path::PathBuf;

use anyhow::Context;
use lamina_engine::image::{Access, Disk, ImageError};

use crate::size::Size;

/// Bytes copied per request.
const CHUNK: usize = 1 << 20;

/// Arguments of `lamina write`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Disk directory; the disk must not be mounted.
    pub disk: PathBuf,
    /// Byte offset in the disk to write at (K, M, G, T suffixes allowed).
    #[arg(long, allow_hyphen_values = true)]
    pub offset: Size,
    /// File whose whole content is written.
    #[arg(long)]
    pub input: PathBuf,
}

/// Writes the input file at the offset and flushes. A write past the
/// virtual size fails before the first byte is written.
pub fn run(args: Args) -> anyhow::Result<()> {
    let mut input =
        File::open(&args.input).map_err(|e| ImageError::io("open input", &args.input, e))?;
    let len = input
        .metadata()
        .map_err(|e| ImageError::io("stat input", &args.input, e))?
        .len();
    let disk = Disk::open(&args.disk, Access::ReadWrite)
        .with_context(|| format!("open disk {}", args.disk.display()))?;
    check_range(&disk, args.offset.0, len)?;

    let mut buf = vec![0u8; CHUNK];
    let mut offset = args.offset.0;
    loop {
        let n = input
            .read(&mut buf)
            .map_err(|e| ImageError::io("read input", &args.input, e))?;
        if n == 0 {
            break;
        }
        disk.write_at(&buf[..n], offset)?;
        offset += n as u64;
    }
    disk.close()?;
    Ok(())
}

/// Rejects a request that ends past the virtual size, with the engine's
/// error so that the exit code is the usage code.
pub fn check_range(disk: &Disk, offset: u64, len: u64) -> anyhow::Result<()> {
    let size = disk.virtual_size();
    if offset.checked_add(len).is_none_or(|end| end > size) {
        return Err(ImageError::OutOfRange { offset, len, size }.into());
    }
    Ok(())
}
