//! `exec`, `exec2` and `enter`: commands inside a running container.
//!
//! As in vzctl, `exec` takes no lock and joins the running container; the
//! arguments are joined with spaces and run by the container's `/bin/sh
//! -c` (vzctl uses bash, which small templates lack). The argument `-`
//! runs the shell on the caller's stdin.

use super::backend::{self, RunState};
use super::ctid::Ctid;
use super::error::ContainerError;
use super::instance::Container;
use super::layout::Layout;

/// Builds the argv that runs `args` the way vzctl's exec does.
pub fn shell_argv(args: &[String]) -> Vec<String> {
    if args.len() == 1 && args[0] == "-" {
        return vec!["/bin/sh".to_string()];
    }
    let quoted: Vec<String> = args
        .iter()
        .map(|a| {
            if a.is_empty() {
                "''".to_string()
            } else {
                a.clone()
            }
        })
        .collect();
    vec!["/bin/sh".to_string(), "-c".to_string(), quoted.join(" ")]
}

fn running(layout: &Layout, ctid: Ctid) -> Result<Container, ContainerError> {
    let container = Container::load(layout, ctid)?;
    match container.run_state()? {
        RunState::Running { .. } => Ok(container),
        RunState::Stopped => Err(ContainerError::NotRunning { ctid: ctid.get() }),
    }
}

/// Runs `args` inside container `ctid` and returns the command's status.
pub fn exec(layout: &Layout, ctid: Ctid, args: &[String]) -> Result<i32, ContainerError> {
    let container = running(layout, ctid)?;
    backend::exec(ctid, &container.state_dir(), &shell_argv(args))
}

/// Opens a login shell in container `ctid` on a new pty, or runs
/// `command` there through `/bin/sh -c`. `on_entered` runs once the shell
/// has joined the container, before any of its output is relayed.
pub fn enter(
    layout: &Layout,
    ctid: Ctid,
    command: Option<&[String]>,
    on_entered: &mut dyn FnMut(),
) -> Result<i32, ContainerError> {
    let container = running(layout, ctid)?;
    let argv = command.map(shell_argv);
    backend::enter(ctid, &container.state_dir(), argv.as_deref(), on_entered)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_are_joined_for_sh() {
        let args = vec![
            "cat".to_string(),
            "/etc/hostname".to_string(),
            String::new(),
        ];
        assert_eq!(shell_argv(&args), ["/bin/sh", "-c", "cat /etc/hostname ''"]);
    }

    #[test]
    fn dash_reads_stdin() {
        assert_eq!(shell_argv(&["-".to_string()]), ["/bin/sh"]);
    }
}
