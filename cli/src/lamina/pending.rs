//! Stand-ins for engine operations that this build does not have yet.
//! Each fails with the unsupported exit code and names the operation.

use lamina_engine::image::Disk;
use lamina_engine::serve::ServeError;

fn missing(what: &str) -> anyhow::Error {
    ServeError::Unsupported {
        what: format!("{what} (missing from this build of the image engine)"),
    }
    .into()
}

/// Shrinks the disk to `size` bytes.
pub fn shrink(_disk: &Disk, _size: u64) -> anyhow::Result<()> {
    Err(missing("shrinking a disk"))
}

/// Deletes the snapshot `uuid`.
pub fn snapshot_delete(_disk: &Disk, _uuid: uuid::Uuid) -> anyhow::Result<()> {
    Err(missing("deleting a snapshot"))
}

/// Switches the disk to the snapshot `uuid`.
pub fn snapshot_switch(_disk: &Disk, _uuid: uuid::Uuid) -> anyhow::Result<()> {
    Err(missing("switching to a snapshot"))
}

/// Merges the top into its parent, or the whole chain.
pub fn snapshot_merge(_disk: &Disk, _all: bool) -> anyhow::Result<()> {
    Err(missing("merging snapshots"))
}

/// Checks and optionally repairs the disk.
pub fn check(_dir: &std::path::Path, _repair: bool) -> anyhow::Result<()> {
    Err(missing("checking a disk"))
}

/// Converts between a disk and a raw file.
pub fn convert(
    _src: &std::path::Path,
    _dst: &std::path::Path,
    _to_raw: bool,
) -> anyhow::Result<()> {
    Err(missing("converting to or from raw"))
}
