//! `lamctl enter CTID [--exec CMD]`

use lamina_engine::container::ContainerError;
use lamina_engine::container::exec;
use lamina_engine::container::layout::Layout;

use super::{Output, resolve};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Container ID or name.
    ctid: String,
    /// Text typed into the shell after it starts.
    #[arg(long, num_args = 1.., allow_hyphen_values = true)]
    exec: Option<Vec<String>>,
}

pub fn run(layout: &Layout, args: Args, out: Output) -> Result<i32, ContainerError> {
    let ctid = resolve(layout, &args.ctid)?;
    let command = args.exec.map(|words| words.join(" "));
    out.say(format_args!("entered into CT {ctid}"));
    let status = exec::enter(layout, ctid, command.as_deref())?;
    out.say(format_args!("exited from CT {ctid}"));
    Ok(status)
}
