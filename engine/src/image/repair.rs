//! Repair of a delta that was not closed cleanly: drop BAT entries that
//! point past the end of the file and cut unreferenced clusters off the
//! tail.

use std::path::Path;

use super::delta::{DeltaFile, ScanReport};
use super::disk::Layer;
use super::error::ImageError;
use super::io::{OpenMode, Storage};

/// Repair policy for a delta marked in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RepairMode {
    /// Read-only open: ignore entries past the end in memory only.
    InMemory,
    /// Read-write open of the top: repair the file, keep it in use.
    Top,
    /// Read-write open of a chain whose lower delta is still in use (a
    /// crash during a snapshot): repair it and clear the flag.
    Lower,
}

/// Repairs a delta loaded with [`PastEof::Drop`](super::delta::PastEof)
/// and logs what was repaired.
pub(super) fn repair_in_use(
    storage: &dyn Storage,
    layer: &mut Layer,
    report: &ScanReport,
    mode: RepairMode,
) -> Result<(), ImageError> {
    let path = layer.delta.path().to_path_buf();
    if mode == RepairMode::InMemory {
        if !report.past_eof.is_empty() || !report.torn_pages.is_empty() {
            tracing::warn!(
                path = %path.display(),
                entries = report.past_eof.len(),
                torn_pages = report.torn_pages.len(),
                "delta was not closed cleanly; ignoring BAT entries past the end of the file \
                 and CRCs of torn BAT pages"
            );
        }
        return Ok(());
    }

    tracing::warn!(path = %path.display(), "delta was not closed cleanly, checking");
    let reopened;
    let delta = if mode == RepairMode::Lower {
        reopened = DeltaFile::open(storage, &path, OpenMode::ReadWrite)?;
        &reopened
    } else {
        &layer.delta
    };
    drop_past_eof(delta, report, &path)?;
    truncate_tail(delta, report, &path)?;

    if mode == RepairMode::Lower {
        let mut header = delta.header;
        header.in_use = false;
        let mut delta = DeltaFile::open(storage, &path, OpenMode::ReadWrite)?;
        delta.header = header;
        delta.write_header()?;
        layer.delta.header.in_use = false;
        tracing::warn!(path = %path.display(), "cleared the in-use flag of a snapshot delta");
    }
    Ok(())
}

fn drop_past_eof(delta: &DeltaFile, report: &ScanReport, path: &Path) -> Result<(), ImageError> {
    if report.past_eof.is_empty() && report.torn_pages.is_empty() {
        return Ok(());
    }
    let clusters: Vec<u64> = report.past_eof.iter().map(|(c, _)| *c).collect();
    delta.rewrite_pages(&report.torn_pages, &clusters)?;
    if !clusters.is_empty() {
        tracing::warn!(
            path = %path.display(),
            entries = clusters.len(),
            first_cluster = clusters[0],
            "repaired: dropped BAT entries that pointed past the end of the file"
        );
    }
    if !report.torn_pages.is_empty() {
        tracing::warn!(
            path = %path.display(),
            pages = ?report.torn_pages,
            "repaired: rewrote BAT pages torn by a crash"
        );
    }
    Ok(())
}

fn truncate_tail(delta: &DeltaFile, report: &ScanReport, path: &Path) -> Result<(), ImageError> {
    let len = delta.file_len()?;
    if len <= report.data_end {
        return Ok(());
    }
    delta
        .file()
        .set_len(report.data_end)
        .map_err(|e| delta.io_error("truncate", e))?;
    delta
        .file()
        .sync_data()
        .map_err(|e| delta.io_error("sync", e))?;
    tracing::warn!(
        path = %path.display(),
        bytes = len - report.data_end,
        "repaired: cut unreferenced clusters off the end of the file"
    );
    Ok(())
}
