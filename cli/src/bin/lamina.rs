//! `lamina`: create, inspect and serve Lamina disk images.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use lamina_cli::{exit, lamina};

#[derive(Debug, Parser)]
#[command(
    name = "lamina",
    version,
    about = "Layered block images served to the kernel"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// One variant per verb; the verb's module contains its arguments and logic.
#[derive(Debug, Subcommand)]
enum Command {
    /// Mount a disk's filesystem at a directory through a server process.
    Mount(lamina::mount::Args),
    /// Unmount a disk and stop its server.
    Umount(lamina::umount::Args),
    /// List mounted disks.
    List(lamina::list::Args),
    /// Export a disk over NBD on a unix socket, in the foreground.
    Serve(lamina::nbd::Args),
    /// Create a disk, with an ext4 filesystem unless --fs says otherwise.
    Init(lamina::init::Args),
    /// Show a disk's size, cluster size, chain and mount.
    Info(lamina::info::Args),
    /// Write a file's content into a disk at an offset.
    Write(lamina::write::Args),
    /// Read a byte range of a disk or snapshot.
    Read(lamina::read::Args),
    /// Take a snapshot and print its UUID.
    Snapshot(lamina::snapshot::Args),
    /// List a disk's snapshots.
    SnapshotList(lamina::snapshot_list::Args),
    /// Delete a snapshot without changing the disk's content.
    SnapshotDelete(lamina::snapshot_delete::Args),
    /// Revert an unmounted disk to a snapshot, discarding the current state.
    SnapshotSwitch(lamina::snapshot_switch::Args),
    /// Merge the top delta into its parent, or all deltas into the base.
    SnapshotMerge(lamina::snapshot_merge::Args),
    /// Grow a disk, or shrink an unmounted one past unused clusters.
    Resize(lamina::resize::Args),
    /// Check a disk's metadata and optionally repair it.
    Check(lamina::check::Args),
    /// Convert a disk to a raw file or a raw file to a disk.
    Convert(lamina::convert::Args),
    /// Give space that contains no data back to the host.
    Compact(lamina::compact::Args),
}

fn main() -> ExitCode {
    init_logging();
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve(_)) {
        lamina_cli::pipe::default_sigpipe();
    }
    let result = match cli.command {
        Command::Mount(args) => lamina::mount::run(args),
        Command::Umount(args) => lamina::umount::run(args),
        Command::List(args) => lamina::list::run(args),
        Command::Serve(args) => lamina::nbd::run(args),
        Command::Init(args) => lamina::init::run(args),
        Command::Info(args) => lamina::info::run(args),
        Command::Write(args) => lamina::write::run(args),
        Command::Read(args) => lamina::read::run(args),
        Command::Snapshot(args) => lamina::snapshot::run(args),
        Command::SnapshotList(args) => lamina::snapshot_list::run(args),
        Command::SnapshotDelete(args) => lamina::snapshot_delete::run(args),
        Command::SnapshotSwitch(args) => lamina::snapshot_switch::run(args),
        Command::SnapshotMerge(args) => lamina::snapshot_merge::run(args),
        Command::Resize(args) => lamina::resize::run(args),
        Command::Check(args) => return lamina::check::main(args),
        Command::Convert(args) => lamina::convert::run(args),
        Command::Compact(args) => lamina::compact::run(args),
    };
    exit::finish("lamina", result)
}

/// Logs warnings and errors to standard error; `LAMINA_LOG` overrides the
/// level (tracing-subscriber's env-filter syntax).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LAMINA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
