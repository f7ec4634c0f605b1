//! Changes to the snapshot tree of a disk: the descriptor, the delta files
//! it names, and the rewrite that removes nodes from the tree.
//!
//! A removal never changes a delta file in place. Each child of a removed
//! node is rewritten into a new file with the same UUID. The new file
//! contains the child's clusters plus those of its removed ancestors that
//! the child does not override, and its parent is the nearest kept
//! ancestor. The descriptor rename is the single commit point: before it
//! the old files are untouched, after it the new ones are complete and
//! durable. Files that a crash leaves unreferenced are removed at the
//! start of the next change, and `check` reports them.
//!
//! Every function here expects the caller to hold the disk's exclusive
//! lock, either through [`Tree::lock`] or through a read-write [`Disk`].
//!
//! [`Disk`]: super::Disk

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use lamina_format::{BatEntry, Descriptor, FormatError, Header, Node};
use uuid::Uuid;

use super::delta::{BatTable, DeltaFile, PastEof};
use super::error::ImageError;
use super::io::{LockGuard, LockMode, OpenMode, Storage};
use super::map::in_cluster;
use super::store;

/// The snapshot tree of one disk: its descriptor as last loaded or saved.
pub(super) struct Tree {
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    /// The descriptor the changes are planned against.
    pub descriptor: Descriptor,
}

/// A delta opened read-only with its BAT loaded.
pub(super) struct Source {
    pub delta: DeltaFile,
    pub bat: BatTable,
}

/// A kept node whose parent is removed, so it must be rewritten.
struct Orphan {
    node: Node,
    /// Its removed ancestors, nearest first.
    ancestors: Vec<Uuid>,
    /// Its nearest kept ancestor, the parent of the rewritten file.
    parent: Option<Uuid>,
}

/// A planned removal of nodes from a [`Tree`]. The rewritten files of the
/// orphaned children are written one at a time with [`Removal::rewrite`],
/// so that a caller can write some of them while the disk serves I/O.
pub(super) struct Removal {
    removed: Vec<Uuid>,
    sources: HashMap<Uuid, Source>,
    orphans: Vec<Orphan>,
    /// Files written so far, by child UUID.
    written: HashMap<Uuid, Rewritten>,
}

/// The new file of a rewritten node.
struct Rewritten {
    file: String,
    /// The node's virtual size, which the descriptor takes for the top.
    virtual_size: u64,
}

impl Tree {
    /// Returns the tree of `descriptor`, the current descriptor of `dir`.
    pub fn new(storage: Arc<dyn Storage>, dir: &Path, descriptor: Descriptor) -> Tree {
        Tree {
            storage,
            dir: dir.to_path_buf(),
            descriptor,
        }
    }

    /// Takes the exclusive lock of a closed disk, loads the descriptor and
    /// removes delta files that a crash left unreferenced.
    pub fn lock(
        storage: Arc<dyn Storage>,
        dir: &Path,
    ) -> Result<(Box<dyn LockGuard>, Tree), ImageError> {
        let lock = store::lock_disk(storage.as_ref(), dir, LockMode::Exclusive)?;
        let descriptor = store::load_descriptor(storage.as_ref(), dir)?;
        let tree = Tree::new(storage, dir, descriptor);
        tree.remove_orphans()?;
        Ok((lock, tree))
    }

    pub fn storage(&self) -> &dyn Storage {
        self.storage.as_ref()
    }

    pub fn find(&self, id_or_name: &str) -> Result<Node, ImageError> {
        self.descriptor
            .find(id_or_name)
            .cloned()
            .ok_or_else(|| ImageError::SnapshotNotFound {
                dir: self.dir.clone(),
                id: id_or_name.to_string(),
            })
    }

    pub fn parent_of_top(&self) -> Result<Option<Uuid>, ImageError> {
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
    pub fn ancestors_of_top(&self) -> Result<Vec<Uuid>, ImageError> {
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
    pub fn open_delta(&self, node: &Node) -> Result<DeltaFile, ImageError> {
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
        // A delta not closed cleanly may hold entries past its end. They
        // were never acknowledged, so they are left out. The open top of a
        // disk is in use too, and flushed before it is loaded here.
        let policy = if delta.header.in_use {
            PastEof::Drop
        } else {
            PastEof::Reject
        };
        let (bat, _) = delta.load_bat(policy)?;
        Ok(Source { delta, bat })
    }

    /// Plans the removal of the nodes `uuids`: loads their deltas and
    /// finds each kept node whose parent is removed. Writes nothing.
    pub fn plan_removal(&self, uuids: &[Uuid]) -> Result<Removal, ImageError> {
        let to_remove: HashSet<Uuid> = uuids.iter().copied().collect();
        let mut sources = HashMap::new();
        for uuid in &to_remove {
            let node = self.find(&uuid.to_string())?;
            sources.insert(*uuid, self.load(&node)?);
        }
        let mut orphans = Vec::new();
        for node in &self.descriptor.deltas {
            let orphaned = !to_remove.contains(&node.uuid)
                && node.parent.is_some_and(|p| to_remove.contains(&p));
            if !orphaned {
                continue;
            }
            let (ancestors, parent) = self.removed_ancestors(node, &to_remove)?;
            orphans.push(Orphan {
                node: node.clone(),
                ancestors,
                parent,
            });
        }
        Ok(Removal {
            removed: uuids.to_vec(),
            sources,
            orphans,
            written: HashMap::new(),
        })
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

    /// Validates and saves `descriptor`: the commit point of a change.
    /// Updates `self.descriptor` once the rename is done.
    pub fn save(&mut self, descriptor: Descriptor) -> Result<(), ImageError> {
        descriptor
            .validate()
            .map_err(|source| ImageError::Descriptor {
                path: store::descriptor_path(&self.dir),
                source,
            })?;
        let saved = store::save_descriptor(self.storage(), &self.dir, &descriptor);
        if saved.is_ok() || self.stored_descriptor_is(&descriptor) {
            self.descriptor = descriptor;
        }
        saved
    }

    /// Returns whether the descriptor on storage equals `descriptor`:
    /// after a failed save, whether the rename happened before the failure.
    pub fn stored_descriptor_is(&self, descriptor: &Descriptor) -> bool {
        store::load_descriptor(self.storage(), &self.dir).is_ok_and(|d| d == *descriptor)
    }

    /// Removes files that the saved descriptor no longer references.
    pub fn remove_files(&self, files: &[String]) -> Result<(), ImageError> {
        for file in files {
            let path = self.dir.join(file);
            match self.storage().remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(ImageError::io("remove", &path, e)),
            }
        }
        store::sync_dir(self.storage(), &self.dir)
    }

    /// Removes delta files in the directory that the descriptor does not
    /// reference, left by a crash before or after a descriptor update.
    pub fn remove_orphans(&self) -> Result<(), ImageError> {
        let orphans = orphan_files(self.storage(), &self.dir, &self.descriptor)?;
        for name in &orphans {
            let path = self.dir.join(name);
            self.storage()
                .remove_file(&path)
                .map_err(|e| ImageError::io("remove", &path, e))?;
            tracing::warn!(path = %path.display(), "removed a delta file that no snapshot references");
        }
        if !orphans.is_empty() {
            store::sync_dir(self.storage(), &self.dir)?;
        }
        Ok(())
    }
}

impl Removal {
    /// Returns the UUIDs of the kept nodes that must be rewritten.
    pub fn orphans(&self) -> Vec<Uuid> {
        self.orphans.iter().map(|o| o.node.uuid).collect()
    }

    /// Writes the new file of orphaned node `uuid`, loading its current
    /// delta first. Does nothing for a node that is not orphaned or that
    /// is rewritten already.
    pub fn rewrite(&mut self, tree: &Tree, uuid: Uuid) -> Result<(), ImageError> {
        if self.written.contains_key(&uuid) {
            return Ok(());
        }
        let Some(orphan) = self.orphans.iter().find(|o| o.node.uuid == uuid) else {
            return Ok(());
        };
        let own = tree.load(&orphan.node)?;
        let virtual_size = own.delta.header.geometry.virtual_size();
        let mut layers = vec![&own];
        layers.extend(orphan.ancestors.iter().filter_map(|a| self.sources.get(a)));
        let file = write_merged(tree, uuid, orphan.parent, &layers)?;
        self.written.insert(uuid, Rewritten { file, virtual_size });
        Ok(())
    }

    /// Rewrites the orphans not rewritten yet and returns the descriptor
    /// after the removal and the files it no longer references. The
    /// directory is synced, so the new files are durable by name.
    pub fn finish(&mut self, tree: &Tree) -> Result<(Descriptor, Vec<String>), ImageError> {
        for uuid in self.orphans() {
            self.rewrite(tree, uuid)?;
        }
        let to_remove: HashSet<Uuid> = self.removed.iter().copied().collect();
        let mut descriptor = tree.descriptor.clone();
        let mut unreferenced: Vec<String> = descriptor
            .deltas
            .iter()
            .filter(|n| to_remove.contains(&n.uuid))
            .map(|n| n.file.clone())
            .collect();
        for orphan in &self.orphans {
            let uuid = orphan.node.uuid;
            let Some(new) = self.written.get(&uuid) else {
                continue;
            };
            if uuid == descriptor.top {
                descriptor.virtual_size = new.virtual_size;
            }
            if let Some(entry) = descriptor.node_mut(uuid) {
                entry.parent = orphan.parent;
                entry.file = new.file.clone();
            }
            unreferenced.push(orphan.node.file.clone());
        }
        descriptor.deltas.retain(|n| !to_remove.contains(&n.uuid));
        if !self.orphans.is_empty() {
            store::sync_dir(tree.storage(), &tree.dir)?;
        }
        Ok((descriptor, unreferenced))
    }

    /// Removes the files written so far, after a failure before the
    /// commit. A file that cannot be removed is left for the next change
    /// or `check --repair`.
    pub fn discard(&mut self, tree: &Tree) {
        for (_, new) in self.written.drain() {
            let path = tree.dir.join(&new.file);
            if let Err(error) = tree.storage().remove_file(&path) {
                tracing::warn!(path = %path.display(), %error, "cannot remove an unused rewritten delta");
            }
        }
    }
}

/// Writes a new delta file for node `uuid` with parent `parent` that contains
/// the merged content of `layers`, top-most first. Each cluster comes from
/// the first layer with a non-absent entry for it. Clusters that read as
/// zeros become zero entries. Data is synced before the BAT, and the BAT
/// before this returns. Returns the new file's name.
fn write_merged(
    tree: &Tree,
    uuid: Uuid,
    parent: Option<Uuid>,
    layers: &[&Source],
) -> Result<String, ImageError> {
    let geometry = layers[0].delta.header.geometry;
    let file = format!("{uuid}-{}.delta", &Uuid::new_v4().simple().to_string()[..8]);
    let path = tree.dir.join(&file);
    let delta = DeltaFile::create(tree.storage(), &path, Header::new(geometry, uuid, parent))?;

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
