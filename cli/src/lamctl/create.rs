//! `lamctl create CTID --ostemplate NAME ...`

use lamina_engine::container::ContainerError;
use lamina_engine::container::create::{self, CreateOptions};
use lamina_engine::container::ctid::Ctid;
use lamina_engine::container::layout::Layout;

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
    let label = opts.ostemplate.clone().unwrap_or_default();
    out.say(format_args!("Creating container private area ({label})"));
    match create::create(layout, ctid, &opts) {
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
