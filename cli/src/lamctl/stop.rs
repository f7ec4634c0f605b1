//! `lamctl stop CTID [--fast]`

use lamina_engine::container::ContainerError;
use lamina_engine::container::layout::Layout;
use lamina_engine::container::lifecycle::{self, Outcome};

use super::{Output, resolve};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Container ID or name.
    ctid: String,
    /// Kill the container at once instead of asking init to shut down.
    #[arg(long)]
    fast: bool,
}

pub fn run(layout: &Layout, args: Args, out: Output) -> Result<i32, ContainerError> {
    let ctid = resolve(layout, &args.ctid)?;
    out.say("Stopping container ...");
    match lifecycle::stop(layout, ctid, args.fast)? {
        // vzctl exits 0 here; scripts rely on it.
        Outcome::AlreadyDone => eprintln!("Unable to stop: container is not running"),
        Outcome::Done => {
            out.say("Container was stopped");
            out.say("Container is unmounted");
        }
    }
    Ok(0)
}
