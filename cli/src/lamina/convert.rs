//! `lamina convert SRC DST --to raw|lamina`: export a disk to a raw file
//! or import a raw file as a new disk. Clusters of zeros are not stored.

use std::path::PathBuf;

use anyhow::Context;
use lamina_engine::image::convert;
use lamina_format::DEFAULT_CLUSTER_SIZE;

use crate::exit::UsageError;
use crate::size::Size;

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
    /// Destination: a raw file, replaced (with --to raw), or a new or
    /// empty disk directory.
    pub dst: PathBuf,
    /// Output format.
    #[arg(long, value_enum)]
    pub to: Target,
    /// Export this snapshot (UUID or name) instead of the current state;
    /// only with --to raw.
    #[arg(long)]
    pub snapshot: Option<String>,
    /// Cluster size of the new disk; only with --to lamina.
    #[arg(long, allow_hyphen_values = true)]
    pub cluster_size: Option<Size>,
}

/// Converts and prints the virtual size and the clusters copied.
pub fn run(args: Args) -> anyhow::Result<()> {
    let report = match args.to {
        Target::Raw => {
            if args.cluster_size.is_some() {
                return Err(UsageError("--cluster-size applies only to --to lamina".into()).into());
            }
            convert::export_raw(&args.src, args.snapshot.as_deref(), &args.dst).with_context(
                || format!("export {} to {}", args.src.display(), args.dst.display()),
            )?
        }
        Target::Lamina => {
            if args.snapshot.is_some() {
                return Err(UsageError("--snapshot applies only to --to raw".into()).into());
            }
            let cluster_size = args.cluster_size.map_or(DEFAULT_CLUSTER_SIZE, |s| s.0);
            convert::import_raw(&args.src, &args.dst, cluster_size).with_context(|| {
                format!("import {} into {}", args.src.display(), args.dst.display())
            })?
        }
    };
    println!("virtual_size: {}", report.virtual_size);
    println!("clusters_copied: {}", report.clusters_copied);
    println!("zero_clusters: {}", report.zero_clusters);
    Ok(())
}
