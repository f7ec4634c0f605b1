//! Offline operations on a disk directory that change the snapshot tree:
//! delete, switch and merge, plus shrink.
//!
//! Delete and merge never change a delta file in place. Each child of a
//! removed snapshot is rewritten into a new file with the same UUID. The
//! new file contains the child's clusters plus those of the removed
//! snapshot that the child does not override, and its parent is the
//! removed snapshot's parent. The descriptor rename is the single
//! commit point: before it the old files are untouched, after it the new
//! ones are complete and durable. Files that a crash leaves unreferenced
//! are removed at the start of the next operation, and `check` reports them.
//!
//! Merge follows ploop's semantics: the top absorbs its parent, whose UUID
//! and name go away, and the parent's other children (if any) are
//! rewritten the same way, so every remaining snapshot keeps its content.
//!
//! TODO: rewriting the child copies the child's own clusters too, so
//! merging a small top into a large parent costs the size of both. An
//! in-place merge needs a redo log for the header change.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use lamina_format::{BatEntry, Descriptor, FormatError, Geometry, Header, Node};
use uuid::Uuid;

use super::delta::{BatTable, DeltaFile, PastEof};
use super::disk::Disk;
use super::error::ImageError;
use super::io::{LockMode, OpenMode, RealStorage, Storage};
use super::map::in_cluster;
use super::rw::flush_state;
use super::store;
use crate::error::{ErrorKind, HasKind};

/// Errors of the offline snapshot operations and of shrink.
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

/// Deletes a snapshot, named by UUID or name. Each child of the snapshot
/// inherits the clusters it reads from it, so the content of the disk and
/// of every other snapshot stays the same. Rejects the current top.
pub fn snapshot_delete(dir: &Path, id_or_name: &str) -> Result<(), OpsError> {
    snapshot_delete_with(RealStorage::shared(), dir, id_or_name)
}

/// Like [`snapshot_delete`] on any storage.
pub fn snapshot_delete_with(
    storage: Arc<dyn Storage>,
    dir: &Path,
    id_or_name: &str,
) -> Result<(), OpsError> {
    let ctx = Offline::start(storage, dir)?;
    let node = ctx.find(id_or_name)?;
    if node.uuid == ctx.descriptor.top {
        return Err(OpsError::CurrentTop {
            id: id_or_name.to_string(),
            uuid: node.uuid,
        });
    }
    let mut ctx = ctx;
    ctx.remove_node(node.uuid)?;
    tracing::info!(dir = %dir.display(), snapshot = %node.uuid, "snapshot deleted");
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
    let mut ctx = Offline::start(storage, dir)?;
    let target = ctx.find(id_or_name)?;
    let old_top = ctx.descriptor.top;
    if target.uuid == old_top {
        return Err(OpsError::CurrentTop {
            id: id_or_name.to_string(),
            uuid: old_top,
        });
    }
    let snapshot = ctx.open_delta(&target)?;
    let geometry = snapshot.header.geometry;

    let uuid = Uuid::new_v4();
    let file = store::delta_file_name(uuid);
    let header = Header::new(geometry, uuid, Some(target.uuid));
    DeltaFile::create(ctx.storage(), &dir.join(&file), header)?;
    store::sync_dir(ctx.storage(), dir)?;

    let mut descriptor = ctx.descriptor.clone();
    let removed = descriptor
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
    ctx.commit(descriptor, removed)?;
    tracing::info!(dir = %dir.display(), snapshot = %target.uuid, top = %uuid, "switched to snapshot");
    Ok(uuid)
}

/// Merges the top into its parent, or with [`MergeScope::All`] every
/// delta below the top, in one commit. The merged parents' UUIDs and
/// names go away; see the module documentation.
pub fn snapshot_merge(dir: &Path, scope: MergeScope) -> Result<(), OpsError> {
    snapshot_merge_with(RealStorage::shared(), dir, scope)
}

/// Like [`snapshot_merge`] on any storage.
pub fn snapshot_merge_with(
    storage: Arc<dyn Storage>,
    dir: &Path,
    scope: MergeScope,
) -> Result<(), OpsError> {
    let mut ctx = Offline::start(storage, dir)?;
    let top = ctx.descriptor.top;
    let parent = ctx
        .parent_of_top()?
        .ok_or(OpsError::NothingToMerge { top })?;
    let merged: Vec<Uuid> = match scope {
        MergeScope::Parent => vec![parent],
        MergeScope::All => ctx.ancestors_of_top()?,
    };
    ctx.remove_nodes(&merged)?;
    tracing::info!(dir = %dir.display(), top = %top, deltas = merged.len(), "merged the top into its parents");
    Ok(())
}

/// Changes the virtual size of a closed disk: grows with [`Disk::grow`]
/// or shrinks with [`Disk::shrink`].
pub fn resize(dir: &Path, new_size: u64) -> Result<(), OpsError> {
    resize_with(RealStorage::shared(), dir, new_size)
}

/// Like [`resize`] on any storage.
pub fn resize_with(storage: Arc<dyn Storage>, dir: &Path, new_size: u64) -> Result<(), OpsError> {
    let disk = Disk::open_with(storage, dir, super::Access::ReadWrite)?;
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

/// An offline operation in progress: the exclusive lock and the
/// descriptor as loaded under it.
struct Offline {
    storage: Arc<dyn Storage>,
    dir: std::path::PathBuf,
    descriptor: Descriptor,
    _lock: Box<dyn super::io::LockGuard>,
}

/// A delta opened read-only with its BAT loaded.
struct Source {
    delta: DeltaFile,
    bat: BatTable,
}

impl Offline {
    /// Takes the exclusive lock, loads the descriptor and removes delta
    /// files that a crash left unreferenced.
    fn start(storage: Arc<dyn Storage>, dir: &Path) -> Result<Offline, ImageError> {
        let lock = store::lock_disk(storage.as_ref(), dir, LockMode::Exclusive)?;
        let descriptor = store::load_descriptor(storage.as_ref(), dir)?;
        remove_orphans(storage.as_ref(), dir, &descriptor)?;
        Ok(Offline {
            storage,
            dir: dir.to_path_buf(),
            descriptor,
            _lock: lock,
        })
    }

    fn storage(&self) -> &dyn Storage {
        self.storage.as_ref()
    }

    fn find(&self, id_or_name: &str) -> Result<Node, ImageError> {
        self.descriptor
            .find(id_or_name)
            .cloned()
            .ok_or_else(|| ImageError::SnapshotNotFound {
                dir: self.dir.clone(),
                id: id_or_name.to_string(),
            })
    }

    fn parent_of_top(&self) -> Result<Option<Uuid>, ImageError> {
        let top = self.descriptor.top;
        self.descriptor
            .node(top)
            .map(|n| n.parent)
            .ok_or_else(|| ImageError::SnapshotNotFound {
                dir: self.dir.clone(),
                id: top.to_string(),
            })
    }

    /// Returns every delta below the top, nearest first.
    fn ancestors_of_top(&self) -> Result<Vec<Uuid>, ImageError> {
        let chain = self
            .descriptor
            .chain(self.descriptor.top)
            .map_err(|source| ImageError::Descriptor {
                path: store::descriptor_path(&self.dir),
                source,
            })?;
        Ok(chain.iter().rev().skip(1).map(|n| n.uuid).collect())
    }

    /// Opens a node's delta read-only and checks that its header names the
    /// node and its parent, so that no operation rewrites a corrupt chain.
    fn open_delta(&self, node: &Node) -> Result<DeltaFile, ImageError> {
        let path = self.dir.join(&node.file);
        let delta = DeltaFile::open(self.storage(), &path, OpenMode::Read)?;
        let header = delta.header;
        let mismatch = if header.uuid != node.uuid {
            Some(FormatError::UuidMismatch {
                expected: node.uuid,
                found: header.uuid,
            })
        } else if header.parent != node.parent {
            Some(FormatError::ParentMismatch {
                uuid: node.uuid,
                expected: node.parent,
                found: header.parent,
            })
        } else {
            None
        };
        match mismatch {
            Some(source) => Err(ImageError::Chain {
                uuid: node.uuid,
                path,
                source,
            }),
            None => Ok(delta),
        }
    }

    fn load(&self, node: &Node) -> Result<Source, ImageError> {
        let delta = self.open_delta(node)?;
        // A delta not closed cleanly may hold entries past its end; they
        // were never acknowledged, so they are left out.
        let policy = if delta.header.in_use {
            PastEof::Drop
        } else {
            PastEof::Reject
        };
        let (bat, _) = delta.load_bat(policy)?;
        Ok(Source { delta, bat })
    }

    /// Removes node `uuid` from the tree; see [`Offline::remove_nodes`].
    fn remove_node(&mut self, uuid: Uuid) -> Result<(), ImageError> {
        self.remove_nodes(&[uuid])
    }

    /// Removes the nodes `uuids` from the tree in one commit. Each kept
    /// node whose parent is removed is rewritten with the clusters of its
    /// removed ancestors that it does not override, and re-parented to
    /// its nearest kept ancestor. Commits the new descriptor and updates
    /// `self.descriptor`.
    fn remove_nodes(&mut self, uuids: &[Uuid]) -> Result<(), ImageError> {
        let to_remove: HashSet<Uuid> = uuids.iter().copied().collect();
        let mut sources = HashMap::new();
        for uuid in &to_remove {
            let node = self.find(&uuid.to_string())?;
            sources.insert(*uuid, self.load(&node)?);
        }
        let orphaned: Vec<Node> = self
            .descriptor
            .deltas
            .iter()
            .filter(|n| {
                !to_remove.contains(&n.uuid) && n.parent.is_some_and(|p| to_remove.contains(&p))
            })
            .cloned()
            .collect();

        let mut descriptor = self.descriptor.clone();
        let mut removed: Vec<String> = descriptor
            .deltas
            .iter()
            .filter(|n| to_remove.contains(&n.uuid))
            .map(|n| n.file.clone())
            .collect();
        for child in &orphaned {
            let own = self.load(child)?;
            let (ancestors, parent) = self.removed_ancestors(child, &to_remove)?;
            let mut layers = vec![&own];
            layers.extend(ancestors.iter().filter_map(|a| sources.get(a)));
            let file = write_merged(self, child.uuid, parent, &layers)?;
            if child.uuid == descriptor.top {
                descriptor.virtual_size = own.delta.header.geometry.virtual_size();
            }
            if let Some(entry) = descriptor.node_mut(child.uuid) {
                entry.parent = parent;
                entry.file = file;
            }
            removed.push(child.file.clone());
        }
        descriptor.deltas.retain(|n| !to_remove.contains(&n.uuid));
        if !orphaned.is_empty() {
            store::sync_dir(self.storage(), &self.dir)?;
        }
        self.commit(descriptor, removed)
    }

    /// Returns the removed ancestors of `node`, nearest first, and its
    /// nearest kept ancestor. The walk is bounded by the node count.
    fn removed_ancestors(
        &self,
        node: &Node,
        to_remove: &HashSet<Uuid>,
    ) -> Result<(Vec<Uuid>, Option<Uuid>), ImageError> {
        let mut ancestors = Vec::new();
        let mut next = node.parent;
        while let Some(uuid) = next.filter(|u| to_remove.contains(u)) {
            if ancestors.len() > self.descriptor.deltas.len() {
                return Err(ImageError::Descriptor {
                    path: store::descriptor_path(&self.dir),
                    source: lamina_format::DescriptorError::Cycle { uuid },
                });
            }
            ancestors.push(uuid);
            next = self.descriptor.node(uuid).and_then(|n| n.parent);
        }
        Ok((ancestors, next))
    }

    /// Validates and saves `descriptor` (the commit point), then removes
    /// the files it no longer references.
    fn commit(&mut self, descriptor: Descriptor, removed: Vec<String>) -> Result<(), ImageError> {
        descriptor
            .validate()
            .map_err(|source| ImageError::Descriptor {
                path: store::descriptor_path(&self.dir),
                source,
            })?;
        store::save_descriptor(self.storage(), &self.dir, &descriptor)?;
        self.descriptor = descriptor;
        for file in removed {
            let path = self.dir.join(&file);
            match self.storage().remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(ImageError::io("remove", &path, e)),
            }
        }
        store::sync_dir(self.storage(), &self.dir)
    }
}

/// Writes a new delta file for node `uuid` with parent `parent` that contains
/// the merged content of `layers`, top-most first. Each cluster comes from
/// the first layer with a non-absent entry for it. Clusters that read as
/// zeros become zero entries. Data is synced before the BAT, and the BAT
/// before this returns. Returns the new file's name.
fn write_merged(
    ctx: &Offline,
    uuid: Uuid,
    parent: Option<Uuid>,
    layers: &[&Source],
) -> Result<String, ImageError> {
    let geometry = layers[0].delta.header.geometry;
    let file = format!("{uuid}-{}.delta", &Uuid::new_v4().simple().to_string()[..8]);
    let path = ctx.dir.join(&file);
    let delta = DeltaFile::create(ctx.storage(), &path, Header::new(geometry, uuid, parent))?;

    let cluster_size = geometry.cluster_size();
    let mut next = delta.next_free_cluster()?;
    let mut out = BatTable::default();
    let mut buf = vec![0u8; in_cluster(cluster_size)];
    for source in layers {
        for (cluster, entry) in source.bat.entries() {
            if out.get(cluster) != BatEntry::Absent || cluster >= geometry.clusters() {
                continue;
            }
            let entry = match entry {
                BatEntry::Allocated(physical) => {
                    source.delta.read_cluster(physical, &mut buf)?;
                    if buf.iter().all(|b| *b == 0) {
                        BatEntry::Zero
                    } else {
                        delta.write_cluster(next, &buf)?;
                        next += 1;
                        BatEntry::Allocated(next - 1)
                    }
                }
                other => other,
            };
            out.set(cluster, entry);
        }
    }
    delta.sync()?;
    out.write_dirty(&delta)?;
    delta.sync()?;
    Ok(file)
}

/// Removes delta files in `dir` that the descriptor does not reference,
/// left by a crash before or after a descriptor update.
fn remove_orphans(
    storage: &dyn Storage,
    dir: &Path,
    descriptor: &Descriptor,
) -> Result<(), ImageError> {
    let orphans = orphan_files(storage, dir, descriptor)?;
    for name in &orphans {
        let path = dir.join(name);
        storage
            .remove_file(&path)
            .map_err(|e| ImageError::io("remove", &path, e))?;
        tracing::warn!(path = %path.display(), "removed a delta file that no snapshot references");
    }
    if !orphans.is_empty() {
        store::sync_dir(storage, dir)?;
    }
    Ok(())
}

/// Returns the names of `*.delta` files in `dir` that the descriptor does
/// not reference.
pub(crate) fn orphan_files(
    storage: &dyn Storage,
    dir: &Path,
    descriptor: &Descriptor,
) -> Result<Vec<String>, ImageError> {
    let mut names = storage
        .list_dir(dir)
        .map_err(|e| ImageError::io("list", dir, e))?;
    names.retain(|name| {
        name.ends_with(".delta") && !descriptor.deltas.iter().any(|n| &n.file == name)
    });
    names.sort();
    Ok(names)
}
