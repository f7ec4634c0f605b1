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
}

fn main() -> ExitCode {
    init_logging();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Mount(args) => lamina::mount::run(args),
        Command::Umount(args) => lamina::umount::run(args),
        Command::List(args) => lamina::list::run(args),
        Command::Serve(args) => lamina::nbd::run(args),
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
