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
    /// Files holding only the removed ancestors' clusters, by child UUID,
    /// for children whose own delta still changes: see [`Removal::prepare`].
    prepared: HashMap<Uuid, MergedFile>,
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
            prepared: HashMap::new(),
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
    /// is rewritten already. A node prepared with [`Removal::prepare`]
    /// only has its own clusters copied now.
    pub fn rewrite(&mut self, tree: &Tree, uuid: Uuid) -> Result<(), ImageError> {
        if self.written.contains_key(&uuid) {
            return Ok(());
        }
        let Some(orphan) = self.orphans.iter().find(|o| o.node.uuid == uuid) else {
            return Ok(());
        };
        let own = tree.load(&orphan.node)?;
        let virtual_size = own.delta.header.geometry.virtual_size();
        let mut merged = match self.prepared.remove(&uuid) {
            Some(mut merged) => {
                merged.overlay(&own)?;
                merged
            }
            None => {
                let mut merged = MergedFile::create(tree, uuid, orphan.parent, own.delta.header)?;
                merged.fill(&own)?;
                for ancestor in orphan.ancestors.iter().filter_map(|a| self.sources.get(a)) {
                    merged.fill(ancestor)?;
                }
                merged
            }
        };
        merged.commit()?;
        self.written.insert(
            uuid,
            Rewritten {
                file: merged.file,
                virtual_size,
            },
        );
        Ok(())
    }

    /// Writes, for orphaned node `uuid` whose delta still takes writes (the
    /// open top), a file with its removed ancestors' clusters only. The
    /// later [`Removal::rewrite`] then copies just the node's own clusters,
    /// so the pause while I/O waits grows with the top's size alone.
    pub fn prepare(&mut self, tree: &Tree, uuid: Uuid) -> Result<(), ImageError> {
        let Some(orphan) = self.orphans.iter().find(|o| o.node.uuid == uuid) else {
            return Ok(());
        };
        let header = tree.open_delta(&orphan.node)?.header;
        let mut merged = MergedFile::create(tree, uuid, orphan.parent, header)?;
        for ancestor in orphan.ancestors.iter().filter_map(|a| self.sources.get(a)) {
            merged.fill(ancestor)?;
        }
        merged.commit()?;
        self.prepared.insert(uuid, merged);
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
        let written = self.written.drain().map(|(_, new)| new.file);
        let prepared = self.prepared.drain().map(|(_, merged)| merged.file);
        for file in written.chain(prepared).collect::<Vec<_>>() {
            let path = tree.dir.join(&file);
            if let Err(error) = tree.storage().remove_file(&path) {
                tracing::warn!(path = %path.display(), %error, "cannot remove an unused rewritten delta");
            }
        }
    }
}

/// A new delta file being filled with the merged content of several
/// deltas. It is unreferenced until the descriptor names it, so a crash
/// while it is written only leaves a file to remove.
struct MergedFile {
    file: String,
    delta: DeltaFile,
    bat: BatTable,
    /// Next physical cluster to append at.
    next: u64,
    buf: Vec<u8>,
}

impl MergedFile {
    /// Creates the file for node `uuid` with parent `parent`, with the
    /// geometry of `template` (the node's current header).
    fn create(
        tree: &Tree,
        uuid: Uuid,
        parent: Option<Uuid>,
        template: Header,
    ) -> Result<MergedFile, ImageError> {
        let geometry = template.geometry;
        let file = format!("{uuid}-{}.delta", &Uuid::new_v4().simple().to_string()[..8]);
        let path = tree.dir.join(&file);
        let delta = DeltaFile::create(tree.storage(), &path, Header::new(geometry, uuid, parent))?;
        let next = delta.next_free_cluster()?;
        Ok(MergedFile {
            file,
            delta,
            bat: BatTable::default(),
            next,
            buf: vec![0u8; in_cluster(geometry.cluster_size())],
        })
    }

    /// Copies the clusters of `source` that no layer added before has an
    /// entry for. Clusters that read as zeros become zero entries.
    fn fill(&mut self, source: &Source) -> Result<(), ImageError> {
        let clusters = self.delta.header.geometry.clusters();
        for (cluster, entry) in source.bat.entries() {
            if self.bat.get(cluster) != BatEntry::Absent || cluster >= clusters {
                continue;
            }
            let entry = match entry {
                BatEntry::Allocated(physical) => {
                    source.delta.read_cluster(physical, &mut self.buf)?;
                    self.store_buf(None)?
                }
                other => other,
            };
            self.bat.set(cluster, entry);
        }
        Ok(())
    }

    /// Copies every entry of `source` over what the file has: the layer on
    /// top of those added before. A cluster it replaces with zeros is
    /// punched out of the file.
    fn overlay(&mut self, source: &Source) -> Result<(), ImageError> {
        let clusters = self.delta.header.geometry.clusters();
        for (cluster, entry) in source.bat.entries() {
            if cluster >= clusters {
                continue;
            }
            let present = match self.bat.get(cluster) {
                BatEntry::Allocated(physical) => Some(physical),
                _ => None,
            };
            let entry = match entry {
                BatEntry::Allocated(physical) => {
                    source.delta.read_cluster(physical, &mut self.buf)?;
                    self.store_buf(present)?
                }
                other => other,
            };
            if let (Some(physical), BatEntry::Zero | BatEntry::Absent) = (present, entry) {
                let size = self.delta.cluster_size();
                self.delta
                    .file()
                    .punch_hole(physical * size, size)
                    .map_err(|e| self.delta.io_error("punch hole in", e))?;
            }
            if entry != self.bat.get(cluster) {
                self.bat.set(cluster, entry);
            }
        }
        Ok(())
    }

    /// Stores the cluster in `buf`: returns a zero entry when it reads as
    /// zeros, else writes it at `place` or appends it.
    fn store_buf(&mut self, place: Option<u64>) -> Result<BatEntry, ImageError> {
        if self.buf.iter().all(|b| *b == 0) {
            return Ok(BatEntry::Zero);
        }
        let physical = place.unwrap_or_else(|| {
            self.next += 1;
            self.next - 1
        });
        self.delta.write_cluster(physical, &self.buf)?;
        Ok(BatEntry::Allocated(physical))
    }

    /// Makes the file complete: syncs the data, writes the changed BAT
    /// pages, cuts clusters past the last referenced one and syncs again.
    fn commit(&mut self) -> Result<(), ImageError> {
        self.delta.sync()?;
        self.bat.write_dirty(&self.delta)?;
        let size = self.delta.cluster_size();
        let end = self
            .bat
            .entries()
            .filter_map(|(_, entry)| match entry {
                BatEntry::Allocated(physical) => Some(physical + 1),
                _ => None,
            })
            .max()
            .unwrap_or(0)
            .max(self.delta.header.data_offset.div_ceil(size));
        if self.delta.file_len()? > end * size {
            self.delta
                .file()
                .set_len(end * size)
                .map_err(|e| self.delta.io_error("truncate", e))?;
            self.next = end;
        }
        self.delta.sync()
    }
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
