//! `list`: vzlist's rows, fields, sorting, table and JSON output.

use std::cmp::Ordering;
use std::fs;
use std::path::PathBuf;

use serde_json::{Map, Value as Json};

use super::backend::RunState;
use super::config::ConfigFile;
use super::ctid::{Ctid, ctid_of_conf};
use super::error::ContainerError;
use super::instance::Container;
use super::layout::Layout;
use super::units::{UNLIMITED, Unit, Unlimited, parse_pair};

/// The container selection of `list`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// Running containers only (vzlist without flags).
    Running,
    /// Every container whose private area exists (`-a`).
    All,
    /// Containers that are not running (`-S`).
    Stopped,
}

/// One container as `list` shows it.
#[derive(Debug, Clone)]
pub struct Row {
    /// The container ID.
    pub ctid: Ctid,
    /// Its config.
    pub config: ConfigFile,
    /// Private area path.
    pub private: PathBuf,
    /// Mount point path.
    pub root: PathBuf,
    /// `running`, `mounted` or `stopped`.
    pub status: &'static str,
    /// Number of processes, when running.
    pub nproc: Option<u64>,
    /// Disk blocks used in KB, when mounted.
    pub disk_used_kb: Option<u64>,
    /// Inodes used, when mounted.
    pub inodes_used: Option<u64>,
}

/// Reads the rows of every container that `filter` and `only` select.
pub fn collect(layout: &Layout, filter: Filter, only: &[Ctid]) -> Result<Vec<Row>, ContainerError> {
    let mut ctids: Vec<Ctid> = match fs::read_dir(&layout.conf_dir) {
        Ok(entries) => entries
            .flatten()
            .filter_map(|e| ctid_of_conf(&e.path()))
            .collect(),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(err) => return Err(ContainerError::io("read directory", &layout.conf_dir)(err)),
    };
    if !only.is_empty() {
        ctids.retain(|ctid| only.contains(ctid));
    }
    ctids.sort();

    let mut rows = Vec::new();
    for ctid in ctids {
        let container = match Container::load(layout, ctid) {
            Ok(container) => container,
            Err(err) => {
                tracing::warn!(%ctid, error = %err, "skipping container with an unusable config");
                continue;
            }
        };
        if !container.paths.private.is_dir() {
            continue;
        }
        let row = row_of(&container)?;
        let keep = match filter {
            Filter::All => true,
            Filter::Running => row.status == "running",
            Filter::Stopped => row.status != "running",
        };
        if keep {
            rows.push(row);
        }
    }
    Ok(rows)
}

fn row_of(container: &Container) -> Result<Row, ContainerError> {
    let state = container.run_state()?;
    let mounted = container.is_mounted();
    let (status, nproc) = match state {
        RunState::Running { nproc, .. } => ("running", Some(nproc)),
        RunState::Stopped if mounted => ("mounted", None),
        RunState::Stopped => ("stopped", None),
    };
    let usage = if mounted {
        fs_usage(&container.paths.root)
    } else {
        None
    };
    Ok(Row {
        ctid: container.ctid,
        config: container.config.clone(),
        private: container.paths.private.clone(),
        root: container.paths.root.clone(),
        status,
        nproc,
        disk_used_kb: usage.map(|(kb, _)| kb),
        inodes_used: usage.map(|(_, inodes)| inodes),
    })
}

/// Returns used KB and used inodes of the filesystem at `root`.
fn fs_usage(root: &std::path::Path) -> Option<(u64, u64)> {
    let stat = nix::sys::statvfs::statvfs(root).ok()?;
    let used_blocks = stat.blocks().saturating_sub(stat.blocks_free());
    let used_kb = used_blocks.saturating_mul(stat.fragment_size()) / 1024;
    let used_inodes = stat.files().saturating_sub(stat.files_free());
    Some((used_kb, used_inodes))
}

/// A field value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// Text, `None` when unset.
    Text(Option<String>),
    /// A number, `None` when unset.
    Number(Option<u64>),
    /// A list of words (IP addresses).
    List(Vec<String>),
}

/// Column alignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Align {
    Left,
    Right,
}

/// One vzlist field: its name, aliases, header and column width.
pub struct Field {
    /// The name `-o` and `-s` take.
    pub name: &'static str,
    aliases: &'static [&'static str],
    /// The column header.
    pub header: &'static str,
    width: usize,
    align: Align,
    get: fn(&Row) -> Value,
}

fn text(row: &Row, key: &str) -> Value {
    Value::Text(row.config.get_nonempty(key).map(str::to_string))
}

fn pair(row: &Row, key: &str, unit: Unit, second: bool) -> Value {
    let parsed = row
        .config
        .get_nonempty(key)
        .and_then(|v| parse_pair(v, unit, Unlimited::Allowed).ok())
        .map(|(soft, hard)| if second { hard } else { soft });
    Value::Number(parsed.filter(|&n| n < UNLIMITED))
}

fn number(row: &Row, key: &str) -> Value {
    Value::Number(
        row.config
            .get_nonempty(key)
            .and_then(|v| v.trim_end_matches('%').parse().ok()),
    )
}

macro_rules! field {
    ($name:literal, [$($alias:literal),*], $header:literal, $width:literal, $align:ident, $get:expr) => {
        Field { name: $name, aliases: &[$($alias),*], header: $header, width: $width, align: Align::$align, get: $get }
    };
}

/// Every field of `list`, in `-L` order.
pub static FIELDS: &[Field] = &[
    field!("ctid", ["veid", "vpsid"], "CTID", 10, Right, |r| {
        Value::Number(Some(u64::from(r.ctid.get())))
    }),
    field!("private", [], "PRIVATE", 32, Left, |r| Value::Text(Some(
        r.private.display().to_string()
    ))),
    field!("root", [], "ROOT", 32, Left, |r| Value::Text(Some(
        r.root.display().to_string()
    ))),
    field!("hostname", [], "HOSTNAME", 32, Left, |r| text(
        r, "HOSTNAME"
    )),
    field!("name", [], "NAME", 10, Left, |r| text(r, "NAME")),
    field!("smart_name", [], "SMARTNAME", 10, Left, |r| {
        Value::Text(Some(
            r.config
                .get_nonempty("NAME")
                .map_or(r.ctid.to_string(), str::to_string),
        ))
    }),
    field!("description", [], "DESCRIPTION", 32, Left, |r| text(
        r,
        "DESCRIPTION"
    )),
    field!("ostemplate", [], "OSTEMPLATE", 24, Left, |r| text(
        r,
        "OSTEMPLATE"
    )),
    field!("origin_sample", [], "ORIGIN_SAMPLE", 13, Left, |r| text(
        r,
        "ORIGIN_SAMPLE"
    )),
    field!("ip", [], "IP_ADDR", 15, Left, |r| {
        let words = r
            .config
            .get("IP_ADDRESS")
            .unwrap_or_default()
            .split_whitespace();
        Value::List(words.map(str::to_string).collect())
    }),
    field!("nameserver", [], "NAMESERVER", 15, Left, |r| text(
        r,
        "NAMESERVER"
    )),
    field!("status", [], "STATUS", 9, Left, |r| Value::Text(Some(
        r.status.to_string()
    ))),
    field!("numproc", [], "NPROC", 10, Right, |r| Value::Number(
        r.nproc
    )),
    field!("numproc.l", [], "NPROC.L", 10, Right, |r| pair(
        r,
        "NUMPROC",
        Unit::Count,
        true
    )),
    field!("physpages.b", [], "PHYSP.B", 10, Right, |r| pair(
        r,
        "PHYSPAGES",
        Unit::Pages,
        false
    )),
    field!("physpages.l", [], "PHYSP.L", 10, Right, |r| pair(
        r,
        "PHYSPAGES",
        Unit::Pages,
        true
    )),
    field!("swappages.b", [], "SWAPP.B", 10, Right, |r| pair(
        r,
        "SWAPPAGES",
        Unit::Pages,
        false
    )),
    field!("swappages.l", [], "SWAPP.L", 10, Right, |r| pair(
        r,
        "SWAPPAGES",
        Unit::Pages,
        true
    )),
    field!("diskspace", [], "DSPACE", 10, Right, |r| Value::Number(
        r.disk_used_kb
    )),
    field!("diskspace.s", [], "DSPACE.S", 10, Right, |r| pair(
        r,
        "DISKSPACE",
        Unit::Kilobytes,
        false
    )),
    field!("diskspace.h", [], "DSPACE.H", 10, Right, |r| pair(
        r,
        "DISKSPACE",
        Unit::Kilobytes,
        true
    )),
    field!("diskinodes", [], "DINODES", 10, Right, |r| Value::Number(
        r.inodes_used
    )),
    field!("diskinodes.s", [], "DINODES.S", 10, Right, |r| pair(
        r,
        "DISKINODES",
        Unit::Count,
        false
    )),
    field!("diskinodes.h", [], "DINODES.H", 10, Right, |r| pair(
        r,
        "DISKINODES",
        Unit::Count,
        true
    )),
    field!("cpulimit", [], "CPULIM", 7, Right, |r| number(
        r, "CPULIMIT"
    )),
    field!("cpuunits", [], "CPUUNI", 7, Right, |r| number(
        r, "CPUUNITS"
    )),
    field!("cpus", [], "CPUS", 5, Right, |r| number(r, "CPUS")),
    field!("onboot", [], "ONBOOT", 6, Left, |r| text(r, "ONBOOT")),
];

/// vzlist's default columns.
pub const DEFAULT_FIELDS: &str = "ctid,numproc,status,ip,hostname";

/// Returns the field called `name` or one of its aliases.
pub fn field(name: &str) -> Option<&'static Field> {
    FIELDS
        .iter()
        .find(|f| f.name == name || f.aliases.contains(&name))
}

/// Parses a comma-separated field list (`-o`).
pub fn parse_fields(list: &str) -> Result<Vec<&'static Field>, ContainerError> {
    list.split(',')
        .map(|name| field(name.trim()).ok_or_else(|| unknown_field("-o", name)))
        .collect()
}

/// Parses the field of `-s`: one field name, with an optional leading `-`
/// that reverses the order. Returns the field and whether to reverse.
pub fn parse_sort(spec: &str) -> Result<(&'static Field, bool), ContainerError> {
    let (name, reverse) = match spec.strip_prefix('-') {
        Some(name) => (name, true),
        None => (spec, false),
    };
    let field = field(name.trim()).ok_or_else(|| unknown_field("-s", spec))?;
    Ok((field, reverse))
}

fn unknown_field(option: &str, name: &str) -> ContainerError {
    ContainerError::BadValue {
        option: option.to_string(),
        value: name.to_string(),
        reason: "unknown field; run list -L for the field names".to_string(),
    }
}

/// Returns whether `text` matches the shell glob `pattern` (`*`, `?` and
/// `[...]` sets), as vzlist's `-h`, `-N` and `-d` filters use fnmatch(3).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    glob_at(&pattern, &text)
}

fn glob_at(pattern: &[char], text: &[char]) -> bool {
    match pattern.first() {
        None => text.is_empty(),
        Some('*') => (0..=text.len()).any(|skip| glob_at(&pattern[1..], &text[skip..])),
        Some('?') => !text.is_empty() && glob_at(&pattern[1..], &text[1..]),
        Some('[') => match (set_end(pattern), text.first()) {
            (Some(end), Some(&c)) => {
                set_contains(&pattern[1..end], c) && glob_at(&pattern[end + 1..], &text[1..])
            }
            (Some(_), None) => false,
            (None, _) => text.first() == Some(&'[') && glob_at(&pattern[1..], &text[1..]),
        },
        Some(&c) => text.first() == Some(&c) && glob_at(&pattern[1..], &text[1..]),
    }
}

/// Returns the index of the `]` that closes the set opening `pattern`.
fn set_end(pattern: &[char]) -> Option<usize> {
    let first = if pattern.get(1) == Some(&'!') { 2 } else { 1 };
    // A `]` right after the opening bracket is a member, not the end.
    (first + 1..pattern.len()).find(|&i| pattern[i] == ']')
}

fn set_contains(set: &[char], c: char) -> bool {
    let (negated, set) = match set.first() {
        Some('!') => (true, &set[1..]),
        _ => (false, set),
    };
    let mut found = false;
    let mut i = 0;
    while i < set.len() {
        if i + 2 < set.len() && set[i + 1] == '-' {
            found |= (set[i]..=set[i + 2]).contains(&c);
            i += 3;
        } else {
            found |= set[i] == c;
            i += 1;
        }
    }
    found != negated
}

/// Sorts rows by `field`, unset values first; `reverse` for `-s -field`.
pub fn sort(rows: &mut [Row], field: &Field, reverse: bool) {
    rows.sort_by(|a, b| {
        let order = compare(&(field.get)(a), &(field.get)(b)).then(a.ctid.cmp(&b.ctid));
        if reverse { order.reverse() } else { order }
    });
}

fn compare(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.cmp(y),
        (Value::Text(x), Value::Text(y)) => x.cmp(y),
        (Value::List(x), Value::List(y)) => x.cmp(y),
        _ => Ordering::Equal,
    }
}

fn cell(value: &Value) -> String {
    match value {
        Value::Text(Some(text)) => text.clone(),
        Value::Number(Some(n)) => n.to_string(),
        Value::List(words) if !words.is_empty() => words.join(" "),
        _ => "-".to_string(),
    }
}

fn pad(text: &str, field: &Field, last: bool, trim: bool) -> String {
    let mut text = text.to_string();
    if trim && !last && text.chars().count() > field.width {
        text = text.chars().take(field.width).collect();
    }
    match field.align {
        Align::Right => format!("{text:>width$}", width = field.width),
        Align::Left if last => text,
        Align::Left => format!("{text:<width$}", width = field.width),
    }
}

/// Formats rows as vzlist's table. Long text is cut to the column width
/// unless it is the last column or `trim` is off (`-t`).
pub fn format_table(rows: &[Row], fields: &[&Field], header: bool, trim: bool) -> String {
    let mut out = String::new();
    let last = fields.len().saturating_sub(1);
    let mut line = |cells: Vec<String>| {
        let joined = cells.join(" ");
        out.push_str(joined.trim_end());
        out.push('\n');
    };
    if header {
        line(
            fields
                .iter()
                .enumerate()
                .map(|(i, f)| pad(f.header, f, i == last, trim))
                .collect(),
        );
    }
    for row in rows {
        let cells = fields
            .iter()
            .enumerate()
            .map(|(i, f)| pad(&cell(&(f.get)(row)), f, i == last, trim));
        line(cells.collect());
    }
    out
}

/// Formats rows as vzlist's JSON: an array of objects keyed by field name,
/// with `null` for unset values.
pub fn format_json(rows: &[Row], fields: &[&Field]) -> Json {
    let objects = rows.iter().map(|row| {
        let mut object = Map::new();
        for field in fields {
            let value = match (field.get)(row) {
                Value::Text(text) => text.map_or(Json::Null, Json::String),
                Value::Number(n) => n.map_or(Json::Null, Json::from),
                Value::List(words) => Json::from(words),
            };
            object.insert(field.name.to_string(), value);
        }
        Json::Object(object)
    });
    Json::Array(objects.collect())
}

/// Returns the `-L` listing: each field name and its header.
pub fn field_listing() -> String {
    FIELDS
        .iter()
        .map(|f| format!("{:<15} {}\n", f.name, f.header))
        .collect()
}

#[cfg(test)]
mod tests;
