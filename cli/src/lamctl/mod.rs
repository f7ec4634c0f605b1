//! `lamctl`: vzctl's container verbs on Lamina images.
//!
//! The grammar is vzctl's, `lamctl [--quiet|--verbose] COMMAND CTID
//! [OPTIONS]`, and so are the exit codes: a syntax error exits 20, and a
//! failed command exits with the code of its [`ContainerError`]. Each verb
//! has its own file that parses nothing itself and calls the engine.

mod create;
mod destroy;
mod enter;
mod exec;
mod list;
mod mount;
mod net;
mod set;
mod snapshot;
mod start;
mod status;
mod stop;

use std::ffi::OsString;

use clap::{Parser, Subcommand};
use lamina_engine::container::ContainerError;
use lamina_engine::container::ctid::{self, Ctid};
use lamina_engine::container::layout::Layout;

/// vzctl's exit code for invalid command-line syntax.
pub const EXIT_SYNTAX: i32 = 20;

/// The help section of the flags that every command takes.
const GLOBAL_OPTIONS: &str = "Global options";

#[derive(Debug, Parser)]
#[command(
    name = "lamctl",
    version,
    about = "Manage system containers on Lamina images"
)]
struct Cli {
    /// Print nothing but errors.
    #[arg(long, global = true, help_heading = GLOBAL_OPTIONS)]
    quiet: bool,
    /// Log more; repeat for debug output.
    #[arg(
        long,
        short = 'v',
        action = clap::ArgAction::Count,
        global = true,
        help_heading = GLOBAL_OPTIONS
    )]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a container from an OS template.
    Create(create::Args),
    /// Mount the root and start init.
    Start(start::Args),
    /// Shut the container down and unmount its root.
    Stop(stop::Args),
    /// Stop the container if it runs, then start it.
    Restart(start::RestartArgs),
    /// Print `CTID N exist|deleted mounted|unmounted running|down`.
    Status(CtArg),
    /// Mount the container's root without starting it.
    Mount(CtArg),
    /// Unmount the root of a stopped container.
    Umount(CtArg),
    /// Remove a stopped container and its image.
    #[command(alias = "delete")]
    Destroy(CtArg),
    /// Open a shell inside the container.
    Enter(enter::Args),
    /// Run a command inside; exit 8 when it fails.
    Exec(exec::Args),
    /// Run a command inside; exit with its status.
    Exec2(exec::Args),
    /// Change limits, disk size, hostname, name or network settings.
    Set(set::Args),
    /// List containers (vzlist).
    List(list::Args),
    /// Take a snapshot of the container's disk.
    Snapshot(snapshot::CreateArgs),
    /// List the container's snapshots.
    SnapshotList(snapshot::ListArgs),
    /// Revert the container to a snapshot.
    SnapshotSwitch(snapshot::IdArgs),
    /// Delete a snapshot.
    SnapshotDelete(snapshot::IdArgs),
    /// Mount a snapshot read-only at a directory.
    SnapshotMount(snapshot::MountArgs),
    /// Unmount a snapshot mounted with snapshot-mount.
    SnapshotUmount(snapshot::IdArgs),
}

/// A command that takes only the container.
#[derive(Debug, clap::Args)]
struct CtArg {
    /// Container ID or name.
    ctid: String,
}

/// Output settings shared by every verb.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    /// `--quiet` was given.
    pub quiet: bool,
}

impl Output {
    /// Prints a progress message unless `--quiet`.
    pub fn say(&self, message: impl std::fmt::Display) {
        if !self.quiet {
            println!("{message}");
        }
    }
}

/// Runs lamctl with `args` and returns the process exit code.
pub fn run(args: impl IntoIterator<Item = OsString>) -> i32 {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return if err.use_stderr() { EXIT_SYNTAX } else { 0 };
        }
    };
    init_logging(cli.verbose);
    // Only the listings: exec and enter relay the container's I/O, and a
    // closed pipe must not kill them halfway.
    if matches!(
        cli.command,
        Command::List(_) | Command::Status(_) | Command::SnapshotList(_)
    ) {
        crate::pipe::default_sigpipe();
    }
    let out = Output { quiet: cli.quiet };
    match dispatch(cli.command, out) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("{}", error_chain(&err));
            err.exit_code()
        }
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("LAMINA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Formats an error with its causes: `message: cause: cause`.
fn error_chain(err: &ContainerError) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn dispatch(command: Command, out: Output) -> Result<i32, ContainerError> {
    let layout = Layout::from_env()?;
    match command {
        Command::Create(args) => create::run(&layout, args, out),
        Command::Start(args) => start::run(&layout, args, out),
        Command::Stop(args) => stop::run(&layout, args, out),
        Command::Restart(args) => start::restart(&layout, args, out),
        Command::Status(args) => status::run(&layout, &args.ctid),
        Command::Mount(args) => mount::mount(&layout, &args.ctid, out),
        Command::Umount(args) => mount::umount(&layout, &args.ctid, out),
        Command::Destroy(args) => destroy::run(&layout, &args.ctid, out),
        Command::Enter(args) => enter::run(&layout, args, out),
        Command::Exec(args) => exec::run(&layout, args, exec::Mode::Exec),
        Command::Exec2(args) => exec::run(&layout, args, exec::Mode::Exec2),
        Command::Set(args) => set::run(&layout, args, out),
        Command::List(args) => list::run(&layout, args),
        Command::Snapshot(args) => snapshot::create(&layout, args, out),
        Command::SnapshotList(args) => snapshot::list(&layout, args),
        Command::SnapshotSwitch(args) => snapshot::switch(&layout, args, out),
        Command::SnapshotDelete(args) => snapshot::delete(&layout, args, out),
        Command::SnapshotMount(args) => snapshot::mount(&layout, args, out),
        Command::SnapshotUmount(args) => snapshot::umount(&layout, args, out),
    }
}

/// Resolves a CTID or a registered name.
pub fn resolve(layout: &Layout, text: &str) -> Result<Ctid, ContainerError> {
    ctid::resolve(layout, text)
}
