//! `lamina init DISK --size SIZE`: create a disk, by default with an ext4
//! filesystem on it.

use std::path::{Path, PathBuf};

use anyhow::Context;
use lamina_engine::image::{CreateOptions, Disk};
use lamina_engine::serve::{self, FsType};
use lamina_format::DEFAULT_CLUSTER_SIZE;

use crate::exit::UsageError;
use crate::size::Size;

/// Filesystem to create on a new disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FsChoice {
    /// ext4 (mkfs.ext4).
    Ext4,
    /// XFS (mkfs.xfs).
    Xfs,
    /// No filesystem: a blank disk.
    None,
}

/// Arguments of `lamina init`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Disk directory to create; it must be missing or empty.
    pub disk: PathBuf,
    /// Virtual size in bytes, with an optional K, M, G or T suffix; a
    /// multiple of the cluster size.
    #[arg(long, allow_hyphen_values = true)]
    pub size: Size,
    /// Cluster size: a power of two from 64K to 16M.
    #[arg(long, allow_hyphen_values = true, default_value_t = Size(DEFAULT_CLUSTER_SIZE))]
    pub cluster_size: Size,
    /// Filesystem to create on the disk.
    #[arg(long, value_enum, default_value_t = FsChoice::Ext4)]
    pub fs: FsChoice,
    /// Number of inodes of the ext4 filesystem (mkfs.ext4 -N).
    #[arg(long)]
    pub inodes: Option<u64>,
}

/// Creates the disk, then the filesystem through a temporary loop device.
/// When mkfs fails the new disk is removed again.
pub fn run(args: Args) -> anyhow::Result<()> {
    let fs = match args.fs {
        FsChoice::Ext4 => Some(FsType::Ext4),
        FsChoice::Xfs => Some(FsType::Xfs),
        FsChoice::None => None,
    };
    if args.inodes.is_some() && fs != Some(FsType::Ext4) {
        return Err(UsageError("--inodes applies only to --fs ext4".into()).into());
    }
    if args.inodes == Some(0) {
        return Err(UsageError("invalid --inodes 0: pass a positive count".into()).into());
    }

    let existed = args.disk.exists();
    let opts = CreateOptions {
        size: args.size.0,
        cluster_size: args.cluster_size.0,
    };
    Disk::create(&args.disk, &opts)
        .with_context(|| format!("create disk {}", args.disk.display()))?;

    let Some(fs) = fs else { return Ok(()) };
    if let Err(error) = serve::mkfs(&args.disk, fs, args.inodes) {
        remove_disk(&args.disk, existed);
        return Err(anyhow::Error::new(error).context(format!(
            "create {} on {}",
            fs.name(),
            args.disk.display()
        )));
    }
    Ok(())
}

/// Removes what `Disk::create` made: the directory's files, and the
/// directory itself when it did not exist before.
fn remove_disk(disk: &Path, existed: bool) {
    let result = if existed {
        std::fs::read_dir(disk).and_then(|entries| {
            entries
                .filter_map(Result::ok)
                .try_for_each(|entry| std::fs::remove_file(entry.path()))
        })
    } else {
        std::fs::remove_dir_all(disk)
    };
    if let Err(error) = result {
        tracing::warn!(disk = %disk.display(), %error, "removing the disk after a failed mkfs failed");
    }
}
