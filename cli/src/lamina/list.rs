//! `lamina list`: the mounted disks.

use lamina_engine::serve;

/// Arguments of `lamina list`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print a JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Prints disk, snapshot, loop device, target and server PID per mount.
pub fn run(args: Args) -> anyhow::Result<()> {
    let mounts = serve::list()?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&mounts)?);
        return Ok(());
    }
    println!(
        "{:<40} {:<36} {:<12} {:<30} {:>8} STATE",
        "DISK", "SNAPSHOT", "DEVICE", "TARGET", "PID"
    );
    for mount in mounts {
        let state = if mount.running { "running" } else { "dead" };
        println!(
            "{:<40} {:<36} {:<12} {:<30} {:>8} {state}",
            mount.disk.display(),
            mount.snapshot.as_deref().unwrap_or("-"),
            mount.loop_device.display(),
            mount.target.display(),
            mount.pid,
        );
    }
    Ok(())
}
