//! Operations that change the snapshot tree: delete, switch and merge,
//! plus shrink.
//!
//! Delete and merge run on an open read-write [`Disk`], so that a server
//! can run them on the disk it serves. The functions of the same name
//! here open the disk, run them and close it. Neither changes a delta
//! file in place: each child of a removed snapshot is rewritten into a
//! new file with the same UUID, and the descriptor rename commits the
//! change (see the `tree` module). Switch and shrink work only on a
//! closed disk.
//!
//! Merge follows ploop's semantics: the top absorbs its parent, whose UUID
//! and name go away, and the parent's other children (if any) are
//! rewritten the same way, so every remaining snapshot keeps its content.
//!
//! TODO: rewriting the child copies the child's own clusters too, so
//! merging a small top into a large parent costs the size of both. An
//! in-place merge needs a redo log for the header change.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use lamina_format::{BatEntry, Geometry, Header, Node};
use uuid::Uuid;

use super::Access;
use super::delta::DeltaFile;
use super::disk::Disk;
use super::error::ImageError;
use super::io::{RealStorage, Storage};
use super::rw::flush_state;
use super::store;
use super::tree::Tree;
use crate::error::{ErrorKind, HasKind};

/// Errors of the snapshot tree operations and of shrink.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// An image error: I/O, a corrupt delta, a missing snapshot, a lock.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// The named delta is the writable top, not a snapshot.
    #[error(
        "{id:?} names the current top {uuid}, not a snapshot; `snapshot-list` shows the snapshots"
    )]
    CurrentTop {
        /// The UUID or name given.
        id: String,
        /// The top's UUID.
        uuid: Uuid,
    },
    /// The snapshot tree changed between the two phases of a delete or
    /// merge of an open disk, because another operation ran on the disk.
    #[error("the snapshot tree of {dir} changed during the operation; run it again")]
    TreeChanged {
        /// The disk directory.
        dir: std::path::PathBuf,
    },
    /// The top is a base delta, so there is no parent to merge into.
    #[error("the current top {top} has no parent snapshot; nothing to merge")]
    NothingToMerge {
        /// The top's UUID.
        top: Uuid,
    },
    /// A shrink would cut off clusters that hold data.
    #[error(
        "cannot shrink to {requested} bytes: the cluster at offset {first_used} holds data; zero or discard everything from there first"
    )]
    ShrinkOverData {
        /// The requested size.
        requested: u64,
        /// Byte offset of the first cluster at or past the new size with data.
        first_used: u64,
    },
    /// A shrink below the size of a snapshot in the chain.
    #[error(
        "cannot shrink to {requested} bytes: snapshot {snapshot} has {size} bytes; delete or merge it first"
    )]
    ShrinkBelowSnapshot {
        /// The requested size.
        requested: u64,
        /// The larger snapshot.
        snapshot: Uuid,
        /// Its virtual size.
        size: u64,
    },
}

impl HasKind for OpsError {
    fn kind(&self) -> ErrorKind {
        match self {
            OpsError::Image(e) => e.kind(),
            OpsError::CurrentTop { .. }
            | OpsError::NothingToMerge { .. }
            | OpsError::ShrinkOverData { .. }
            | OpsError::ShrinkBelowSnapshot { .. } => ErrorKind::InvalidArgument,
            OpsError::TreeChanged { .. } => ErrorKind::Busy,
        }
    }
}

/// Scope of a [`snapshot_merge`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MergeScope {
    /// The top into its parent.
    Parent,
    /// The top with every delta below it, down to the base.
    All,
}

/// The result of a snapshot delete or merge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeChange {
    /// The deltas removed from the tree.
    pub removed: Vec<Uuid>,
    /// The deltas rewritten with the clusters of their removed ancestors.
    pub rewritten: Vec<Uuid>,
    /// How long I/O on the disk waited: the flush, the rewrite of the top
    /// when it is among `rewritten`, the commit and the reopening of the
    /// chain.
    pub pause: Duration,
}

/// Deletes a snapshot of a closed disk, named by UUID or name; see
/// [`Disk::snapshot_delete`].
pub fn snapshot_delete(dir: &Path, id_or_name: &str) -> Result<(), OpsError> {
    snapshot_delete_with(RealStorage::shared(), dir, id_or_name)
}

/// Like [`snapshot_delete`] on any storage.
pub fn snapshot_delete_with(
    storage: Arc<dyn Storage>,
    dir: &Path,
    id_or_name: &str,
) -> Result<(), OpsError> {
    let disk = Disk::open_with(storage, dir, Access::ReadWrite)?;
    disk.snapshot_delete(id_or_name)?;
    disk.close()?;
    Ok(())
}

/// Reverts the disk to a snapshot, named by UUID or name: the current top
/// and its data are discarded and a new empty top is created on the
/// snapshot, with the snapshot's virtual size. Writing to it afterwards
/// starts a new branch of the tree. Returns the new top's UUID.
pub fn snapshot_switch(dir: &Path, id_or_name: &str) -> Result<Uuid, OpsError> {
    snapshot_switch_with(RealStorage::shared(), dir, id_or_name)
}

/// Like [`snapshot_switch`] on any storage.
pub fn snapshot_switch_with(
    storage: Arc<dyn Storage>,
    dir: &Path,
    id_or_name: &str,
) -> Result<Uuid, OpsError> {
    let (_lock, mut tree) = Tree::lock(storage, dir)?;
    let target = tree.find(id_or_name)?;
    let old_top = tree.descriptor.top;
    if target.uuid == old_top {
        return Err(OpsError::CurrentTop {
            id: id_or_name.to_string(),
            uuid: old_top,
        });
    }
    let snapshot = tree.open_delta(&target)?;
    let geometry = snapshot.header.geometry;

    let uuid = Uuid::new_v4();
    let file = store::delta_file_name(uuid);
    let header = Header::new(geometry, uuid, Some(target.uuid));
    DeltaFile::create(tree.storage(), &dir.join(&file), header)?;
    store::sync_dir(tree.storage(), dir)?;

    let mut descriptor = tree.descriptor.clone();
    let removed: Vec<String> = descriptor
        .node(old_top)
        .map(|n| n.file.clone())
        .into_iter()
        .collect();
    descriptor.deltas.retain(|n| n.uuid != old_top);
    descriptor.deltas.push(Node {
        uuid,
        parent: Some(target.uuid),
        file,
        name: None,
        description: None,
        created: store::now(),
    });
    descriptor.top = uuid;
    descriptor.virtual_size = geometry.virtual_size();
    tree.save(descriptor)?;
    tree.remove_files(&removed)?;
    tracing::info!(dir = %dir.display(), snapshot = %target.uuid, top = %uuid, "switched to snapshot");
    Ok(uuid)
}

/// Merges the top of a closed disk into its parent, or every delta below
/// it; see [`Disk::snapshot_merge`].
pub fn snapshot_merge(dir: &Path, scope: MergeScope) -> Result<(), OpsError> {
    snapshot_merge_with(RealStorage::shared(), dir, scope)
}

/// Like [`snapshot_merge`] on any storage.
pub fn snapshot_merge_with(
    storage: Arc<dyn Storage>,
    dir: &Path,
    scope: MergeScope,
) -> Result<(), OpsError> {
    let disk = Disk::open_with(storage, dir, Access::ReadWrite)?;
    disk.snapshot_merge(scope)?;
    disk.close()?;
    Ok(())
}

/// Changes the virtual size of a closed disk: grows with [`Disk::grow`]
/// or shrinks with [`Disk::shrink`].
pub fn resize(dir: &Path, new_size: u64) -> Result<(), OpsError> {
    resize_with(RealStorage::shared(), dir, new_size)
}

/// Like [`resize`] on any storage.
pub fn resize_with(storage: Arc<dyn Storage>, dir: &Path, new_size: u64) -> Result<(), OpsError> {
    let disk = Disk::open_with(storage, dir, Access::ReadWrite)?;
    if new_size < disk.virtual_size() {
        disk.shrink(new_size)?;
    } else {
        disk.grow(new_size)?;
    }
    disk.close()?;
    Ok(())
}

impl Disk {
    /// Shrinks the virtual size. Only clusters past the new size that hold
    /// no data can go: the shrink is rejected with the offset of the
    /// first cluster there that does, and below the size of any snapshot
    /// in the chain. Zero entries past the new size are dropped and
    /// flushed before the header names the new size, which is the commit
    /// point; the descriptor follows.
    pub fn shrink(&self, new_size: u64) -> Result<(), OpsError> {
        self.check_writable()?;
        let mut state = self.write_state();
        let current = state.virtual_size();
        if new_size >= current {
            return Ok(());
        }
        let geometry = Geometry::new(state.cluster_size(), new_size)
            .map_err(|source| ImageError::InvalidGeometry { source })?;
        for layer in &state.chain[..state.chain.len() - 1] {
            let size = layer.delta.header.geometry.virtual_size();
            if size > new_size {
                return Err(OpsError::ShrinkBelowSnapshot {
                    requested: new_size,
                    snapshot: layer.node.uuid,
                    size,
                });
            }
        }
        flush_state(&state)?;

        let cut = clusters_past(&state, geometry.clusters());
        if let Some((cluster, _)) = cut.iter().find(|(_, e)| *e != BatEntry::Zero) {
            return Err(OpsError::ShrinkOverData {
                requested: new_size,
                first_used: cluster * state.cluster_size(),
            });
        }
        {
            let writer = self.writer(&state)?;
            for (cluster, _) in &cut {
                state.map.set(*cluster, None);
                writer.mark_dirty(*cluster);
            }
        }
        flush_state(&state)?;

        let top = state.chain.len() - 1;
        let delta = &mut state.chain[top].delta;
        let old = delta.header;
        delta.header.geometry = geometry;
        if let Err(error) = delta.write_header() {
            delta.header = old;
            return Err(error.into());
        }
        state.descriptor.virtual_size = new_size;
        store::save_descriptor(self.storage.as_ref(), &self.dir, &state.descriptor)?;
        tracing::info!(dir = %self.dir.display(), from = current, to = new_size, "disk shrunk");
        Ok(())
    }
}

/// Returns the mapped clusters at or past `first`, sorted, with their
/// entries. Only lower deltas no larger than `first` clusters are in the
/// chain, so every mapping there belongs to the top.
fn clusters_past(state: &super::disk::State, first: u64) -> Vec<(u64, BatEntry)> {
    let per_page = lamina_format::ENTRIES_PER_PAGE as u64;
    let mut out = Vec::new();
    for page in state.map.pages() {
        let end = (page + 1) * per_page;
        if end <= first {
            continue;
        }
        for cluster in (page * per_page).max(first)..end {
            if let Some(mapping) = state.map.get(cluster) {
                out.push((cluster, mapping.entry));
            }
        }
    }
    out
}
