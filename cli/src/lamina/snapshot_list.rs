//! `lamina snapshot-list DISK`: the snapshot tree, one line per delta.

use std::path::PathBuf;

use anyhow::Context;
use lamina_engine::image::{Access, Disk};
use lamina_engine::serve::{ControlRequest, ControlResponse};
use serde_json::Value;

use super::route::{self, Route};
use crate::table::{self, plain};

/// Fields `-o` accepts, in the order of the default table.
const FIELDS: [&str; 7] = [
    "uuid",
    "parent",
    "name",
    "created",
    "current",
    "description",
    "file",
];

/// Columns shown without `-o`.
const DEFAULT_FIELDS: [&str; 6] = [
    "uuid",
    "parent",
    "name",
    "created",
    "current",
    "description",
];

/// Arguments of `lamina snapshot-list`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Disk directory.
    pub disk: PathBuf,
    /// Print a JSON array of all fields instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Leave out the header line.
    #[arg(short = 'H')]
    pub no_header: bool,
    /// Comma-separated columns: uuid, parent, name, created, current,
    /// description, file.
    #[arg(short = 'o')]
    pub fields: Option<String>,
}

/// Lists every delta of the tree, oldest first; `current` marks the
/// writable top.
pub fn run(args: Args) -> anyhow::Result<()> {
    let fields = table::select_fields(args.fields.as_deref(), &FIELDS, &DEFAULT_FIELDS)?;
    let snapshots = match route::route(&args.disk)? {
        Route::Mounted(_) => match route::online(&args.disk, ControlRequest::SnapshotList)? {
            ControlResponse::Snapshots { snapshots } => snapshots,
            other => return Err(route::unexpected("snapshot-list", &other)),
        },
        Route::Offline | Route::SnapshotMounted(_) => {
            let disk = Disk::open(&args.disk, Access::ReadOnly)
                .with_context(|| format!("open disk {}", args.disk.display()))?;
            let list = serde_json::to_value(disk.snapshots())?;
            disk.close()?;
            list
        }
    };

    if args.json {
        println!("{}", serde_json::to_string_pretty(&snapshots)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = snapshots
        .as_array()
        .into_iter()
        .flatten()
        .map(|snapshot| fields.iter().map(|f| cell(snapshot, f)).collect())
        .collect();
    for line in table::render(&rows, &fields, !args.no_header) {
        println!("{line}");
    }
    Ok(())
}

fn cell(snapshot: &Value, field: &str) -> String {
    match (field, &snapshot[field]) {
        ("created", Value::Number(n)) => n.as_u64().map_or_else(|| n.to_string(), table::utc_time),
        ("current", Value::Bool(current)) => if *current { "yes" } else { "no" }.into(),
        (_, value) => plain(value),
    }
}
