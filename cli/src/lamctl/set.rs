//! `lamctl set CTID [--ram] [--swap] ... [--save]`

use lamina_engine::container::ContainerError;
use lamina_engine::container::layout::Layout;
use lamina_engine::container::set::{self, SetOptions};

use super::net::NetArgs;
use super::{Output, resolve};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Container ID or name.
    ctid: String,
    /// Memory limit in bytes; K, M, G, T suffixes (saved as PHYSPAGES).
    #[arg(long)]
    ram: Option<String>,
    /// Swap limit in bytes; K, M, G, T suffixes (saved as SWAPPAGES).
    #[arg(long)]
    swap: Option<String>,
    /// Number of CPUs.
    #[arg(long)]
    cpus: Option<String>,
    /// CPU limit in percent of one CPU (200 is two CPUs); 0 for none.
    #[arg(long)]
    cpulimit: Option<String>,
    /// CPU weight, 8 to 500000 (1000 is the default weight).
    #[arg(long)]
    cpuunits: Option<String>,
    /// Disk size, `[soft:]hard`; bare numbers are KB. Grows the image
    /// and its filesystem, online when mounted; shrinking is rejected.
    #[arg(long)]
    diskspace: Option<String>,
    /// Inode count, `[soft:]hard`; saved only, used at create.
    #[arg(long)]
    diskinodes: Option<String>,
    /// Hostname; applied live and to /etc/hostname.
    #[arg(long)]
    hostname: Option<String>,
    /// Name to address the container by; needs --save.
    #[arg(long)]
    name: Option<String>,
    /// Start the container at boot: yes or no.
    #[arg(long)]
    onboot: Option<String>,
    /// Seconds that stop waits for init before killing; 0 for 120.
    #[arg(long = "stop-timeout")]
    stop_timeout: Option<String>,
    #[command(flatten)]
    net: NetArgs,
    /// Write the changes into the container's config.
    #[arg(long)]
    save: bool,
}

pub fn run(layout: &Layout, args: Args, out: Output) -> Result<i32, ContainerError> {
    let ctid = resolve(layout, &args.ctid)?;
    let opts = SetOptions {
        ram: args.ram,
        swap: args.swap,
        cpus: args.cpus,
        cpulimit: args.cpulimit,
        cpuunits: args.cpuunits,
        diskspace: args.diskspace,
        diskinodes: args.diskinodes,
        hostname: args.hostname,
        name: args.name,
        onboot: args.onboot,
        stop_timeout: args.stop_timeout,
        net: args.net.into_options(),
        save: args.save,
    };
    let report = set::set(layout, ctid, &opts)?;
    if report.saved {
        out.say("Saved parameters for container");
    } else if report.unchanged {
        out.say("No changes in container configuration, not saving");
    } else if !opts.save {
        eprintln!(
            "WARNING: Settings were not saved to the config file and will be lost after a restart; use --save"
        );
    }
    Ok(0)
}
