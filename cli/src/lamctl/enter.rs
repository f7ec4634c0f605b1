//! `lamctl enter CTID [--exec CMD]`

use lamina_engine::container::ContainerError;
use lamina_engine::container::exec;
use lamina_engine::container::layout::Layout;

use super::{Output, resolve};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Container ID or name.
    ctid: String,
    /// Run this command on the pty instead of a login shell.
    #[arg(long, num_args = 1.., allow_hyphen_values = true)]
    exec: Option<Vec<String>>,
}

pub fn run(layout: &Layout, args: Args, out: Output) -> Result<i32, ContainerError> {
    let ctid = resolve(layout, &args.ctid)?;
    let mut entered = || out.say(format_args!("entered into CT {ctid}"));
    let status = exec::enter(layout, ctid, args.exec.as_deref(), &mut entered)?;
    out.say(format_args!("exited from CT {ctid}"));
    Ok(status)
}
