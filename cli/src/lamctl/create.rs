//! `lamctl create CTID --ostemplate NAME ...`

use std::ffi::c_int;
use std::sync::atomic::Ordering;

use lamina_engine::container::ContainerError;
use lamina_engine::container::create::{self, CreateOptions};
use lamina_engine::container::ctid::Ctid;
use lamina_engine::container::layout::Layout;

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

use super::Output;
use super::net::NetArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Numeric container ID.
    ctid: String,
    /// OS template from the template cache (`NAME.tar.{zst,xz,gz}`).
    #[arg(long)]
    ostemplate: Option<String>,
    /// Sample config `ve-NAME.conf-sample` from the config directory.
    #[arg(long)]
    config: Option<String>,
    /// Disk size, `[soft:]hard`; K, M, G, T suffixes, bare numbers are KB.
    #[arg(long)]
    diskspace: Option<String>,
    /// Inode count of the filesystem, `[soft:]hard`.
    #[arg(long)]
    diskinodes: Option<String>,
    /// Hostname, written to the container's /etc/hostname.
    #[arg(long)]
    hostname: Option<String>,
    /// Name to address the container by.
    #[arg(long)]
    name: Option<String>,
    #[command(flatten)]
    net: NetArgs,
}

pub fn run(layout: &Layout, args: Args, out: Output) -> Result<i32, ContainerError> {
    let ctid = Ctid::parse(&args.ctid)?;
    let opts = CreateOptions {
        ostemplate: args.ostemplate,
        config: args.config,
        diskspace: args.diskspace,
        diskinodes: args.diskinodes,
        hostname: args.hostname,
        name: args.name,
        net: args.net.into_options(),
    };
    // Every argument is checked before the first message.
    let plan = create::prepare(layout, ctid, &opts)?;
    let _signals = CancelOnSignals::install();
    out.say(format_args!(
        "Creating container private area ({})",
        plan.template()
    ));
    match plan.run() {
        Ok(created) => {
            out.say(format_args!(
                "Container private area was created ({})",
                created.template
            ));
            Ok(0)
        }
        Err(err) => {
            eprintln!("Creation of container private area failed");
            Err(err)
        }
    }
}

/// Makes SIGINT, SIGTERM and SIGHUP cancel the running create instead of
/// killing lamctl, so that create removes what it made. Dropping it
/// restores the previous handlers.
struct CancelOnSignals {
    previous: Vec<(Signal, SigAction)>,
}

extern "C" fn request_cancel(_signal: c_int) {
    create::CANCEL.store(true, Ordering::Relaxed);
}

impl CancelOnSignals {
    fn install() -> Self {
        // SA_RESTART lets the current step finish; create checks the flag
        // between steps and between template members.
        let action = SigAction::new(
            SigHandler::Handler(request_cancel),
            SaFlags::SA_RESTART,
            SigSet::empty(),
        );
        let mut previous = Vec::new();
        for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
            // SAFETY: the handler only stores to an atomic, which is
            // async-signal-safe.
            if let Ok(old) = unsafe { sigaction(signal, &action) } {
                previous.push((signal, old));
            }
        }
        CancelOnSignals { previous }
    }
}

impl Drop for CancelOnSignals {
    fn drop(&mut self) {
        for (signal, old) in &self.previous {
            // SAFETY: this restores the disposition the process had before.
            let _ = unsafe { sigaction(*signal, old) };
        }
    }
}
