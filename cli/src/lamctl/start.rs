//! `lamctl start CTID [--wait]` and `lamctl restart CTID`.

use lamina_engine::container::ContainerError;
use lamina_engine::container::layout::Layout;
use lamina_engine::container::lifecycle;

use super::{Output, resolve};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Container ID or name.
    ctid: String,
    /// Wait until init has finished booting.
    #[arg(long)]
    wait: bool,
}

#[derive(Debug, clap::Args)]
pub struct RestartArgs {
    /// Container ID or name.
    ctid: String,
    /// Wait until init has finished booting.
    #[arg(long)]
    wait: bool,
    /// Kill the container at once instead of asking init to shut down.
    #[arg(long)]
    fast: bool,
}

pub fn run(layout: &Layout, args: Args, out: Output) -> Result<i32, ContainerError> {
    let ctid = resolve(layout, &args.ctid)?;
    out.say("Starting container...");
    lifecycle::start(layout, ctid, args.wait)?;
    out.say(if args.wait {
        "Container started successfully"
    } else {
        "Container start in progress..."
    });
    Ok(0)
}

pub fn restart(layout: &Layout, args: RestartArgs, out: Output) -> Result<i32, ContainerError> {
    let ctid = resolve(layout, &args.ctid)?;
    out.say("Restarting container");
    lifecycle::restart(layout, ctid, args.fast, args.wait)?;
    out.say("Container start in progress...");
    Ok(0)
}
