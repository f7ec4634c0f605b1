//! `lamctl exec CTID CMD...` and `lamctl exec2 CTID CMD...`

use lamina_engine::container::ContainerError;
use lamina_engine::container::exec;
use lamina_engine::container::layout::Layout;

use super::resolve;

/// vzctl's exit code when the command run by `exec` fails.
const EXIT_EXEC_FAILED: i32 = 8;

/// The mapping from the command's status to lamctl's exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// 0 on success, 8 on any failure (vzctl `exec`).
    Exec,
    /// The command's own status (vzctl `exec2`).
    Exec2,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Container ID or name.
    ctid: String,
    /// The command and its arguments; `-` reads commands from stdin.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

pub fn run(layout: &Layout, args: Args, mode: Mode) -> Result<i32, ContainerError> {
    let ctid = resolve(layout, &args.ctid)?;
    let status = exec::exec(layout, ctid, &args.command)?;
    Ok(match mode {
        Mode::Exec if status != 0 => EXIT_EXEC_FAILED,
        _ => status,
    })
}
