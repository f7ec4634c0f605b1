//! Delete and merge on an open read-write disk: both remove deltas from the
//! snapshot tree while the disk keeps serving I/O.
//!
//! The work runs in two phases. First, with I/O running, the snapshot
//! children of the removed deltas are rewritten. Nothing has to wait for
//! that, because snapshots never change. When the top is a child of a
//! removed delta (a merge, or the delete of its parent), its new file is
//! started with the removed ancestors' clusters in this phase too. Then
//! the state lock is taken exclusively, so concurrent I/O waits: the top
//! is flushed and its own clusters are copied over the started file. The
//! descriptor is committed and the open chain is reopened from it before
//! I/O goes on.
//!
//! NOTE: the top's own clusters are still copied while I/O waits, so that
//! pause grows with the data written since the top was created: about the
//! time to copy it once.

use std::sync::atomic::AtomicU64;
use std::time::Instant;

use lamina_format::{Descriptor, Node};
use uuid::Uuid;

use super::delta::{DeltaFile, PastEof};
use super::disk::{Disk, Layer, State, Writer, check_link, scan_into_map};
use super::error::ImageError;
use super::io::OpenMode;
use super::map::ClusterMap;
use super::ops::{MergeScope, OpsError, TreeChange};
use super::rw::flush_state;
use super::store;
use super::tree::{Removal, Tree};

impl Disk {
    /// Deletes a snapshot, named by UUID or name. Each child of the
    /// snapshot inherits the clusters it reads from it, so the content of
    /// the disk and of every other snapshot stays the same. Rejects the
    /// current top with [`OpsError::CurrentTop`].
    pub fn snapshot_delete(&self, id_or_name: &str) -> Result<TreeChange, OpsError> {
        let change = self.remove_deltas(|tree| {
            let node = tree.find(id_or_name)?;
            if node.uuid == tree.descriptor.top {
                return Err(OpsError::CurrentTop {
                    id: id_or_name.to_string(),
                    uuid: node.uuid,
                });
            }
            Ok(vec![node.uuid])
        })?;
        tracing::info!(dir = %self.dir.display(), snapshot = %change.removed[0], "snapshot deleted");
        Ok(change)
    }

    /// Merges the top into its parent, or with [`MergeScope::All`] every
    /// delta below the top, in one commit. The top keeps its UUID; the
    /// merged parents' UUIDs and names go away. A top without a parent is
    /// rejected with [`OpsError::NothingToMerge`].
    pub fn snapshot_merge(&self, scope: MergeScope) -> Result<TreeChange, OpsError> {
        let change = self.remove_deltas(|tree| {
            let top = tree.descriptor.top;
            let parent = tree
                .parent_of_top()?
                .ok_or(OpsError::NothingToMerge { top })?;
            Ok(match scope {
                MergeScope::Parent => vec![parent],
                MergeScope::All => tree.ancestors_of_top()?,
            })
        })?;
        tracing::info!(
            dir = %self.dir.display(),
            deltas = change.removed.len(),
            "merged the top into its parents"
        );
        Ok(change)
    }

    /// Removes the deltas that `select` picks from the tree; see the
    /// module documentation for the two phases.
    fn remove_deltas(
        &self,
        select: impl FnOnce(&Tree) -> Result<Vec<Uuid>, OpsError>,
    ) -> Result<TreeChange, OpsError> {
        self.check_writable()?;
        let _serial = self.tree_change.lock().unwrap_or_else(|e| e.into_inner());
        let mut tree = {
            // The exclusive lock of a read-write disk keeps other processes
            // out, `tree_change` other deletes and merges, and the shared
            // state lock a snapshot, which creates its delta file before
            // the descriptor names it. So unreferenced files are a crash's
            // leftovers.
            let state = self.read_state();
            let tree = Tree::new(self.storage.clone(), &self.dir, state.descriptor.clone());
            tree.remove_orphans()?;
            tree
        };
        let removed = select(&tree)?;
        let mut removal = tree.plan_removal(&removed)?;
        let rewritten = removal.orphans();

        let top = tree.descriptor.top;
        for uuid in &rewritten {
            let written = if *uuid == top {
                removal.prepare(&tree, top)
            } else {
                removal.rewrite(&tree, *uuid)
            };
            if let Err(error) = written {
                removal.discard(&tree);
                return Err(error.into());
            }
        }

        let mut state = self.write_state();
        let paused = Instant::now();
        if state.descriptor != tree.descriptor {
            removal.discard(&tree);
            return Err(OpsError::TreeChanged {
                dir: self.dir.clone(),
            });
        }
        self.commit_removal(&mut state, &mut tree, &mut removal)?;
        Ok(TreeChange {
            removed,
            rewritten,
            pause: paused.elapsed(),
        })
    }

    /// Flushes, rewrites the remaining orphans (the top among them),
    /// commits the descriptor, reopens the chain and removes the old
    /// files. The caller holds the state lock exclusively.
    fn commit_removal(
        &self,
        state: &mut State,
        tree: &mut Tree,
        removal: &mut Removal,
    ) -> Result<(), ImageError> {
        let prepared = flush_state(state).and_then(|()| removal.finish(tree));
        let (descriptor, unreferenced) = match prepared {
            Ok(prepared) => prepared,
            Err(error) => {
                removal.discard(tree);
                return Err(error);
            }
        };
        let saved = tree.save(descriptor.clone());
        if let Err(error) = &saved {
            if tree.descriptor != descriptor {
                removal.discard(tree);
                return saved;
            }
            // The rename happened but a later sync failed: the descriptor
            // names the new files, so I/O must go to them from now on.
            tracing::warn!(%error, "tree change committed before the failure, continuing on the new chain");
        }

        if let Err(error) = self.reopen_chain(state, descriptor) {
            // The old top may be gone from the directory, so a write to it
            // would be lost: stop writing until the disk is opened again.
            state.writer = None;
            tracing::error!(dir = %self.dir.display(), %error, "reopening the chain after a committed tree change failed; the disk is read-only until it is opened again");
            let _ = tree.remove_files(&unreferenced);
            return Err(error);
        }
        tree.remove_files(&unreferenced)?;
        saved
    }

    /// Replaces the open chain with the chain of `descriptor`'s top.
    /// Deltas whose file did not change keep their open file; the others
    /// are opened, and a new top file is marked in use. The state changes
    /// only when every step succeeded.
    fn reopen_chain(&self, state: &mut State, descriptor: Descriptor) -> Result<(), ImageError> {
        let nodes: Vec<Node> = descriptor
            .chain(descriptor.top)
            .map_err(|source| ImageError::Descriptor {
                path: store::descriptor_path(&self.dir),
                source,
            })?
            .into_iter()
            .cloned()
            .collect();
        let top = nodes.len() - 1;

        // Deltas whose file is open already share that file.
        let mut deltas: Vec<DeltaFile> = Vec::with_capacity(nodes.len());
        let mut new_top = false;
        for (level, node) in nodes.iter().enumerate() {
            if let Some(kept) = state.chain.iter().find(|l| l.node.file == node.file) {
                deltas.push(kept.delta.clone());
                continue;
            }
            let mode = if level == top {
                new_top = true;
                OpenMode::ReadWrite
            } else {
                OpenMode::Read
            };
            let path = self.dir.join(&node.file);
            deltas.push(DeltaFile::open(self.storage.as_ref(), &path, mode)?);
        }

        let map = ClusterMap::default();
        let mut allocated = Vec::with_capacity(nodes.len());
        for (level, (node, delta)) in nodes.iter().zip(&deltas).enumerate() {
            let below = level.checked_sub(1).map(|b| &deltas[b].header);
            check_link(node, &delta.header, below).map_err(|source| ImageError::Chain {
                uuid: node.uuid,
                path: delta.path().to_path_buf(),
                source,
            })?;
            let policy = if delta.header.in_use {
                PastEof::Drop
            } else {
                PastEof::Reject
            };
            let level = u8::try_from(level).unwrap_or(u8::MAX);
            allocated.push(scan_into_map(&map, level, delta, policy)?.allocated);
        }

        let writer = if new_top {
            let delta = &mut deltas[top];
            delta.header.in_use = true;
            delta.write_header()?;
            Some(Writer::new(delta, delta.file_len()?))
        } else {
            state.writer.take()
        };

        state.chain = nodes
            .into_iter()
            .zip(deltas)
            .zip(allocated)
            .map(|((node, delta), allocated)| Layer {
                node,
                delta,
                allocated: AtomicU64::new(allocated),
            })
            .collect();
        state.map = map;
        state.writer = writer;
        state.descriptor = descriptor;
        Ok(())
    }
}
