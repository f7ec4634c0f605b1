//! `lamctl snapshot*`: create, list, switch, delete, mount and umount.

use std::path::PathBuf;

use lamina_engine::container::ContainerError;
use lamina_engine::container::layout::Layout;
use lamina_engine::container::snapshot::{self, format_id, parse_id};

use super::{Output, resolve};

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// Container ID or name.
    ctid: String,
    /// Snapshot UUID to use instead of a generated one.
    #[arg(long)]
    id: Option<String>,
    /// Snapshot name.
    #[arg(long)]
    name: Option<String>,
    /// Snapshot description.
    #[arg(long)]
    description: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Container ID or name.
    ctid: String,
    /// Print no header line.
    #[arg(short = 'H', long = "no-header")]
    no_header: bool,
    /// Comma-separated fields: parent_uuid, current, uuid, date, name, desc.
    #[arg(short = 'o', long = "output")]
    output: Option<String>,
    /// Show only this snapshot.
    #[arg(long)]
    id: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct IdArgs {
    /// Container ID or name.
    ctid: String,
    /// Snapshot UUID, with or without braces.
    #[arg(long)]
    id: String,
}

#[derive(Debug, clap::Args)]
pub struct MountArgs {
    /// Container ID or name.
    ctid: String,
    /// Snapshot UUID, with or without braces.
    #[arg(long)]
    id: String,
    /// Directory to mount the snapshot at, read-only.
    #[arg(long)]
    target: PathBuf,
}

pub fn create(layout: &Layout, args: CreateArgs, out: Output) -> Result<i32, ContainerError> {
    let ctid = resolve(layout, &args.ctid)?;
    if let Some(id) = &args.id {
        parse_id(id)?;
        return Err(ContainerError::BadUsage {
            message: "--id is not supported yet: omit it and use the UUID that snapshot prints"
                .into(),
        });
    }
    let id = snapshot::create(
        layout,
        ctid,
        args.name.as_deref(),
        args.description.as_deref(),
    )?;
    out.say(format_args!(
        "Snapshot {} has been successfully created",
        format_id(id)
    ));
    Ok(0)
}

pub fn list(layout: &Layout, args: ListArgs) -> Result<i32, ContainerError> {
    let ctid = resolve(layout, &args.ctid)?;
    let only = args.id.as_deref().map(parse_id).transpose()?;
    let fields_text = args
        .output
        .unwrap_or_else(|| "parent_uuid,current,uuid,date,name".into());
    let fields: Vec<&str> = fields_text.split(',').map(str::trim).collect();
    for field in &fields {
        if header_of(field).is_none() {
            return Err(ContainerError::BadValue {
                option: "-o".into(),
                value: field.to_string(),
                reason: "use parent_uuid, current, uuid, date, name or desc".into(),
            });
        }
    }

    let entries = snapshot::list(layout, ctid)?;
    let widths: Vec<usize> = fields.iter().map(|f| width_of(f)).collect();
    if !args.no_header {
        let cells = fields
            .iter()
            .map(|f| header_of(f).unwrap_or_default().to_string());
        print_row(cells.collect(), &widths);
    }
    for entry in entries
        .iter()
        .filter(|e| only.is_none_or(|id| e.uuid == id))
    {
        let cells = fields.iter().map(|f| cell(entry, f));
        print_row(cells.collect(), &widths);
    }
    Ok(0)
}

fn header_of(field: &str) -> Option<&'static str> {
    Some(match field {
        "parent_uuid" | "parent_id" => "PARENT_UUID",
        "current" => "C",
        "uuid" | "id" => "UUID",
        "date" => "DATE",
        "name" => "NAME",
        "desc" => "DESCRIPTION",
        _ => return None,
    })
}

fn width_of(field: &str) -> usize {
    match field {
        "parent_uuid" | "parent_id" | "uuid" | "id" => 38,
        "current" => 1,
        "date" => 19,
        _ => 0,
    }
}

fn cell(entry: &lamina_engine::container::backend::SnapshotEntry, field: &str) -> String {
    match field {
        "parent_uuid" | "parent_id" => entry.parent.map(format_id).unwrap_or_default(),
        "current" => if entry.current { "*" } else { "" }.to_string(),
        "uuid" | "id" => format_id(entry.uuid),
        "date" => format_date(entry.created),
        "name" => entry.name.clone().unwrap_or_default(),
        _ => entry.description.clone().unwrap_or_default(),
    }
}

fn print_row(cells: Vec<String>, widths: &[usize]) {
    let padded: Vec<String> = cells
        .iter()
        .zip(widths)
        .map(|(c, w)| format!("{c:<w$}"))
        .collect();
    println!("{}", padded.join(" ").trim_end());
}

/// Formats seconds since the epoch as `YYYY-MM-DD HH:MM:SS` in UTC.
fn format_date(seconds: u64) -> String {
    let days = seconds / 86_400;
    let rest = seconds % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// Converts days since 1970-01-01 to a proleptic Gregorian date (Howard
/// Hinnant's `civil_from_days` algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

pub fn switch(layout: &Layout, args: IdArgs, out: Output) -> Result<i32, ContainerError> {
    let ctid = resolve(layout, &args.ctid)?;
    let id = parse_id(&args.id)?;
    snapshot::switch(layout, ctid, id)?;
    out.say(format_args!(
        "Container has been successfully switched to snapshot {}",
        format_id(id)
    ));
    Ok(0)
}

pub fn delete(layout: &Layout, args: IdArgs, out: Output) -> Result<i32, ContainerError> {
    let ctid = resolve(layout, &args.ctid)?;
    let id = parse_id(&args.id)?;
    snapshot::delete(layout, ctid, id)?;
    out.say(format_args!(
        "Snapshot {} has been successfully deleted",
        format_id(id)
    ));
    Ok(0)
}

pub fn mount(layout: &Layout, args: MountArgs, out: Output) -> Result<i32, ContainerError> {
    let ctid = resolve(layout, &args.ctid)?;
    let id = parse_id(&args.id)?;
    snapshot::mount(layout, ctid, id, &args.target)?;
    out.say(format_args!(
        "Snapshot {} is mounted at {}",
        format_id(id),
        args.target.display()
    ));
    Ok(0)
}

pub fn umount(layout: &Layout, args: IdArgs, out: Output) -> Result<i32, ContainerError> {
    let ctid = resolve(layout, &args.ctid)?;
    let id = parse_id(&args.id)?;
    snapshot::umount(layout, ctid, id)?;
    out.say(format_args!("Snapshot {} is unmounted", format_id(id)));
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_in_utc() {
        assert_eq!(format_date(0), "1970-01-01 00:00:00");
        assert_eq!(format_date(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(format_date(1_700_000_000), "2023-11-14 22:13:20");
    }
}
