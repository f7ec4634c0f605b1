//! `lamctl list`: vzlist.

use lamina_engine::container::ContainerError;
use lamina_engine::container::ctid::{self, Ctid};
use lamina_engine::container::layout::Layout;
use lamina_engine::container::list::{self, DEFAULT_FIELDS, Filter};

#[derive(Debug, clap::Args)]
#[command(disable_help_flag = true)]
pub struct Args {
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
    /// Show only containers whose hostname matches this shell pattern.
    #[arg(short = 'h', long = "hostname")]
    hostname: Option<String>,
    /// Show only containers whose name matches this shell pattern.
    #[arg(short = 'N', long = "name_filter")]
    name_filter: Option<String>,
    /// Show only containers whose description matches this shell pattern.
    #[arg(short = 'd', long = "description")]
    description: Option<String>,
    /// List every container, running or not.
    #[arg(short = 'a', long = "all", conflicts_with = "stopped")]
    all: bool,
    /// List only containers that are not running.
    #[arg(short = 'S', long = "stopped")]
    stopped: bool,
    /// Show the NAME column instead of HOSTNAME.
    #[arg(short = 'n', long = "name")]
    name: bool,
    /// Print no header line.
    #[arg(short = 'H', long = "no-header")]
    no_header: bool,
    /// Do not cut long values to the column width.
    #[arg(short = 't', long = "no-trim")]
    no_trim: bool,
    /// Print JSON: an array of objects, null for unset values.
    #[arg(short = 'j', long = "json")]
    json: bool,
    /// Comma-separated fields to show (see -L).
    #[arg(short = 'o', long = "output")]
    output: Option<String>,
    /// Print only CTIDs without a header (same as -H -o ctid).
    #[arg(short = '1')]
    only_ctid: bool,
    /// Sort by a field; a leading '-' reverses.
    #[arg(short = 's', long = "sort", allow_hyphen_values = true)]
    sort: Option<String>,
    /// List the field names and headers.
    #[arg(short = 'L', long = "list")]
    list_fields: bool,
    /// Show only these containers, by ID or name.
    ctids: Vec<String>,
}

/// vzlist's exit code when none of the containers named on the command
/// line exists.
const EXIT_NOT_FOUND: i32 = 1;

pub fn run(layout: &Layout, args: Args) -> Result<i32, ContainerError> {
    if args.list_fields {
        print!("{}", list::field_listing());
        return Ok(0);
    }
    let filter = match (args.all, args.stopped) {
        (true, _) => Filter::All,
        (_, true) => Filter::Stopped,
        _ => Filter::Running,
    };
    let only = args
        .ctids
        .iter()
        .map(|text| ctid::resolve(layout, text))
        .collect::<Result<Vec<Ctid>, _>>()?;
    let fields_text = match (&args.output, args.only_ctid, args.name) {
        (Some(list), _, _) => list.clone(),
        (None, true, _) => "ctid".to_string(),
        (None, false, true) => DEFAULT_FIELDS.replace("hostname", "name"),
        (None, false, false) if args.json => all_field_names(),
        (None, false, false) => DEFAULT_FIELDS.to_string(),
    };
    let fields = list::parse_fields(&fields_text)?;
    let sort = args.sort.as_deref().map(list::parse_sort).transpose()?;

    // As in vzlist: scripts run `list CTID` and test the exit code to
    // find out whether a container exists.
    if !only.is_empty() && !only.iter().any(|&ctid| layout.conf_file(ctid).is_file()) {
        eprintln!("Container(s) not found");
        return Ok(EXIT_NOT_FOUND);
    }
    let mut rows = list::collect(layout, filter, &only)?;
    let filters = [
        ("HOSTNAME", &args.hostname),
        ("NAME", &args.name_filter),
        ("DESCRIPTION", &args.description),
    ];
    for (key, pattern) in filters {
        if let Some(pattern) = pattern {
            let matches = |row: &list::Row| {
                let value = row.config.get(key).unwrap_or_default();
                list::glob_match(pattern, value)
            };
            rows.retain(matches);
        }
    }
    if let Some((field, reverse)) = sort {
        list::sort(&mut rows, field, reverse);
    }

    if args.json {
        let json = list::format_json(&rows, &fields);
        println!(
            "{}",
            serde_json::to_string_pretty(&json).unwrap_or_default()
        );
    } else {
        let header = !args.no_header && !args.only_ctid;
        print!(
            "{}",
            list::format_table(&rows, &fields, header, !args.no_trim)
        );
    }
    Ok(0)
}

fn all_field_names() -> String {
    list::FIELDS
        .iter()
        .map(|f| f.name)
        .collect::<Vec<_>>()
        .join(",")
}
