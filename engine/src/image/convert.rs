//! Raw import and export: a raw file into a new disk, and a disk or one
//! of its snapshots into a raw file. Both are sparse-aware: holes in the
//! source are skipped, clusters that read as zeros are not stored in the
//! disk, and the export leaves holes where the disk reads zeros.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use lamina_format::BatEntry;
use serde::Serialize;

use super::disk::{Access, CreateOptions, Disk};
use super::error::ImageError;
use super::io::{OpenMode, RealStorage, Storage};
use super::map::in_cluster;

/// Counts of an [`import_raw`] or [`export_raw`] run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ConvertReport {
    /// Virtual size of the disk in bytes.
    pub virtual_size: u64,
    /// Clusters with data that were copied.
    pub clusters_copied: u64,
    /// Clusters that were read but held only zeros, so nothing was stored.
    pub zero_clusters: u64,
}

/// Creates a disk in `dir` (missing or empty) from the raw file `src`.
/// The virtual size is the file length rounded up to the cluster size;
/// the bytes past the end of the file read as zeros.
pub fn import_raw(src: &Path, dir: &Path, cluster_size: u64) -> Result<ConvertReport, ImageError> {
    import_raw_with(RealStorage::shared(), src, dir, cluster_size)
}

/// Like [`import_raw`] with the disk on any storage; `src` is a host file.
pub fn import_raw_with(
    storage: Arc<dyn Storage>,
    src: &Path,
    dir: &Path,
    cluster_size: u64,
) -> Result<ConvertReport, ImageError> {
    let source = RealStorage
        .open(src, OpenMode::Read)
        .map_err(|e| ImageError::io("open", src, e))?;
    let len = source.len().map_err(|e| ImageError::io("stat", src, e))?;
    let size = len.div_ceil(cluster_size.max(1)) * cluster_size;
    Disk::create_with(storage.clone(), dir, &CreateOptions { size, cluster_size })?;
    let disk = Disk::open_with(storage, dir, Access::ReadWrite)?;

    let mut report = ConvertReport {
        virtual_size: size,
        clusters_copied: 0,
        zero_clusters: 0,
    };
    let mut buf = vec![0u8; in_cluster(cluster_size)];
    let mut pos = 0;
    let seek_error = |e| ImageError::io("seek in", src, e);
    while pos < len {
        let Some(data) = source.next_data(pos).map_err(seek_error)? else {
            break;
        };
        let hole = source.next_hole(data).map_err(seek_error)?.min(len);
        let mut offset = data - data % cluster_size;
        while offset < hole {
            let n = in_cluster((len - offset).min(cluster_size));
            let chunk = &mut buf[..n];
            source
                .read_at(chunk, offset)
                .map_err(|e| ImageError::io("read", src, e))?;
            if chunk.iter().all(|b| *b == 0) {
                report.zero_clusters += 1;
            } else {
                disk.write_at(chunk, offset)?;
                report.clusters_copied += 1;
            }
            offset += cluster_size;
        }
        pos = offset.max(hole);
    }
    disk.close()?;
    tracing::info!(src = %src.display(), dir = %dir.display(), clusters = report.clusters_copied, "raw file imported");
    Ok(report)
}

/// Writes the content of the disk in `dir`, or of one of its snapshots
/// (named by UUID or name), into the raw file `dst`, replacing it. The
/// file gets the virtual size; clusters that read as zeros stay holes.
pub fn export_raw(
    dir: &Path,
    snapshot: Option<&str>,
    dst: &Path,
) -> Result<ConvertReport, ImageError> {
    export_raw_with(RealStorage::shared(), dir, snapshot, dst)
}

/// Like [`export_raw`] with the disk on any storage; `dst` is a host file.
pub fn export_raw_with(
    storage: Arc<dyn Storage>,
    dir: &Path,
    snapshot: Option<&str>,
    dst: &Path,
) -> Result<ConvertReport, ImageError> {
    let disk = match snapshot {
        Some(id) => Disk::open_snapshot_with(storage, dir, id)?,
        None => Disk::open_with(storage, dir, Access::ReadOnly)?,
    };
    let out = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(dst)
        .map_err(|e| ImageError::io("create", dst, e))?;
    let size = disk.virtual_size();
    out.set_len(size)
        .map_err(|e| ImageError::io("extend", dst, e))?;

    let cluster_size = disk.cluster_size();
    let mut report = ConvertReport {
        virtual_size: size,
        clusters_copied: 0,
        zero_clusters: 0,
    };
    let mut buf = vec![0u8; in_cluster(cluster_size)];
    for cluster in allocated_clusters(&disk) {
        disk.read_at(&mut buf, cluster * cluster_size)?;
        if buf.iter().all(|b| *b == 0) {
            report.zero_clusters += 1;
            continue;
        }
        out.write_all_at(&buf, cluster * cluster_size)
            .map_err(|e| ImageError::io("write", dst, e))?;
        report.clusters_copied += 1;
    }
    out.sync_all().map_err(|e| ImageError::io("sync", dst, e))?;
    tracing::info!(dir = %dir.display(), dst = %dst.display(), clusters = report.clusters_copied, "disk exported as raw");
    Ok(report)
}

/// Returns the virtual clusters that read data from some delta, sorted.
fn allocated_clusters(disk: &Disk) -> Vec<u64> {
    let state = disk.read_state();
    let per_page = lamina_format::ENTRIES_PER_PAGE as u64;
    let clusters = state.virtual_size() / state.cluster_size();
    let mut out = Vec::new();
    for page in state.map.pages() {
        let end = ((page + 1) * per_page).min(clusters);
        for cluster in page * per_page..end {
            if let Some(m) = state.map.get(cluster)
                && matches!(m.entry, BatEntry::Allocated(_))
            {
                out.push(cluster);
            }
        }
    }
    out
}
