//! `lamina info DISK`: size, cluster size, chain and, for a mounted disk,
//! the mount and filesystem usage.

use std::path::PathBuf;

use anyhow::Context;
use lamina_engine::image::{Access, Disk};
use lamina_engine::serve::{ControlRequest, ControlResponse};
use serde_json::{Value, json};

use super::route::{self, Route};
use crate::table::plain;

/// Arguments of `lamina info`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Disk directory.
    pub disk: PathBuf,
    /// Print one JSON object: {"disk": ..., "mount": ..., "fs": ...}.
    #[arg(long)]
    pub json: bool,
}

/// Prints the summary, asking the server when the disk is mounted.
pub fn run(args: Args) -> anyhow::Result<()> {
    let report = match route::route(&args.disk)? {
        Route::Mounted(_) => match route::online(&args.disk, ControlRequest::Info)? {
            ControlResponse::Info { mount, disk, fs } => {
                json!({ "disk": disk, "mount": mount, "fs": fs })
            }
            other => return Err(route::unexpected("info", &other)),
        },
        Route::Offline | Route::SnapshotMounted(_) => {
            let disk = Disk::open(&args.disk, Access::ReadOnly)
                .with_context(|| format!("open disk {}", args.disk.display()))?;
            let info = serde_json::to_value(disk.info())?;
            disk.close()?;
            json!({ "disk": info, "mount": null, "fs": null })
        }
    };

    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_text(&report);
    }
    Ok(())
}

/// Prints `key: value` lines, then one line per delta from base to top.
fn print_text(report: &Value) {
    let disk = &report["disk"];
    for key in ["dir", "virtual_size", "cluster_size", "chain_depth", "top"] {
        println!("{key}: {}", plain(&disk[key]));
    }
    match report["mount"].as_object() {
        Some(mount) => {
            println!("mounted: yes");
            for key in ["target", "loop_device", "pid", "fs_type", "read_only"] {
                println!("{key}: {}", plain(&mount[key]));
            }
        }
        None => println!("mounted: no"),
    }
    if let Some(fs) = report["fs"].as_object() {
        for (key, value) in fs {
            println!("fs_{key}: {}", plain(value));
        }
    }
    println!("deltas:");
    for delta in disk["deltas"].as_array().into_iter().flatten() {
        println!(
            "  {} {} {}",
            plain(&delta["uuid"]),
            plain(&delta["allocated_bytes"]),
            plain(&delta["file"])
        );
    }
}
