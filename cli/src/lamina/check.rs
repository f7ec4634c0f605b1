//! `lamina check DISK [--repair]`: validate every delta of the disk and
//! optionally repair what can be repaired.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use lamina_engine::image::check::{self, CheckMode, CheckReport, CheckResult};

use super::route;
use crate::exit;

/// Arguments of `lamina check`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Disk directory; the disk must not be mounted.
    pub disk: PathBuf,
    /// Repair the problems that can be repaired.
    #[arg(long)]
    pub repair: bool,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Runs the check and turns its outcome or failure into the exit code.
pub fn main(args: Args) -> ExitCode {
    match run(args) {
        Ok(code) => ExitCode::from(code),
        Err(error) => exit::finish("lamina", Err(error)),
    }
}

/// Checks the disk offline and prints one line per finding. Returns the
/// exit code of the outcome: clean, repaired, repairable or unrepairable.
pub fn run(args: Args) -> anyhow::Result<u8> {
    route::require_offline("`lamina check`", &args.disk)?;
    let mode = if args.repair {
        CheckMode::Repair
    } else {
        CheckMode::Report
    };
    let report = check::check(&args.disk, mode)
        .with_context(|| format!("check disk {}", args.disk.display()))?;

    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_text(&report);
    }
    Ok(code_for(report.result))
}

/// Returns the exit code of a check outcome.
pub fn code_for(result: CheckResult) -> u8 {
    match result {
        CheckResult::Clean => exit::OK,
        CheckResult::Repaired => exit::CHECK_REPAIRED,
        CheckResult::Repairable => exit::CHECK_REPAIRABLE,
        CheckResult::Unrepairable => exit::CORRUPT,
    }
}

/// Prints `SEVERITY PROBLEM FILE: MESSAGE` per finding, then the result.
fn print_text(report: &CheckReport) {
    for finding in &report.findings {
        let json = serde_json::to_value(finding).unwrap_or_default();
        let mut line = format!(
            "{} {} {}: {}",
            crate::table::plain(&json["severity"]),
            crate::table::plain(&json["problem"]),
            finding.file.as_deref().unwrap_or("-"),
            finding.message
        );
        if finding.repaired {
            line.push_str(" (repaired)");
        } else if finding.repairable {
            line.push_str(" (repairable with --repair)");
        }
        println!("{line}");
    }
    let result = serde_json::to_value(report.result).unwrap_or_default();
    println!("result: {}", crate::table::plain(&result));
}
