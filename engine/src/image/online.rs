//! Operations on an open read-write disk that change the chain or the
//! layout of the top: snapshot, grow and compact. Each takes the state
//! lock exclusively, so concurrent I/O waits until it finishes.

use std::sync::atomic::{AtomicU64, Ordering};

use lamina_format::header::HEADER_BLOCK_SIZE;
use lamina_format::{BatEntry, Geometry, Header, Node};
use uuid::Uuid;

use super::delta::DeltaFile;
use super::disk::{Disk, Layer, State, Writer};
use super::error::ImageError;
use super::map::Mapping;
use super::map::in_cluster;
use super::rw::{allocate, flush_state};
use super::store;

impl Disk {
    /// Takes a snapshot: flushes, freezes the current top as the snapshot
    /// and continues on a new empty top. Returns the snapshot's UUID (the
    /// frozen delta's). The descriptor update is the commit point; a crash
    /// before it leaves an unused delta file and the old state.
    pub fn snapshot(
        &self,
        name: Option<&str>,
        description: Option<&str>,
    ) -> Result<Uuid, ImageError> {
        self.check_writable()?;
        let mut state = self.write_state();
        Disk::check_new_name(&state, name)?;
        flush_state(&state)?;

        let frozen = state.top().node.uuid;
        let uuid = Uuid::new_v4();
        let file = store::delta_file_name(uuid);
        let path = self.dir.join(&file);
        let mut header = Header::new(state.top().delta.header.geometry, uuid, Some(frozen));
        header.in_use = true;
        let delta = DeltaFile::create(self.storage.as_ref(), &path, header)?;
        store::sync_dir(self.storage.as_ref(), &self.dir)?;

        let now = store::now();
        let node = Node {
            uuid,
            parent: Some(frozen),
            file,
            name: None,
            description: None,
            created: now,
        };
        let mut descriptor = state.descriptor.clone();
        if let Some(old) = descriptor.node_mut(frozen) {
            old.name = name.map(str::to_string);
            old.description = description.map(str::to_string);
            old.created = now;
        }
        descriptor.deltas.push(node.clone());
        descriptor.top = uuid;
        let saved = store::save_descriptor(self.storage.as_ref(), &self.dir, &descriptor);
        if let Err(error) = saved {
            if !self.descriptor_names(uuid) {
                let _ = self.storage.remove_file(&path);
                return Err(error);
            }
            // The rename happened but a later sync failed: the descriptor
            // names the new top, so writes must go there from now on.
            tracing::warn!(top = %uuid, "snapshot committed before the failure, continuing on the new top");
            self.switch_to_new_top(&mut state, descriptor, delta, node, frozen);
            return Err(error);
        }
        self.switch_to_new_top(&mut state, descriptor, delta, node, frozen);
        tracing::info!(dir = %self.dir.display(), snapshot = %frozen, top = %uuid, "snapshot created");
        Ok(frozen)
    }

    /// Returns whether the descriptor on storage names delta `uuid`; false
    /// when it cannot be read.
    fn descriptor_names(&self, uuid: Uuid) -> bool {
        store::load_descriptor(self.storage.as_ref(), &self.dir)
            .is_ok_and(|d| d.node(uuid).is_some())
    }

    fn switch_to_new_top(
        &self,
        state: &mut State,
        descriptor: lamina_format::Descriptor,
        delta: DeltaFile,
        node: Node,
        frozen: Uuid,
    ) {
        let frozen_node = descriptor.node(frozen).cloned();
        state.descriptor = descriptor;
        finish_frozen_top(state, frozen_node);
        let file_len = delta.header.data_offset;
        state.writer = Some(Writer::new(&delta, file_len));
        state.chain.push(Layer {
            node,
            delta,
            allocated: AtomicU64::new(0),
        });
    }

    /// Grows the virtual size. When the BAT needs more room, data clusters
    /// in the way are copied to the end first and their entries updated,
    /// then the new BAT area is zeroed and only then the header switched.
    /// A crash at any step leaves the old or the new size, with leaked
    /// clusters at worst.
    pub fn grow(&self, new_size: u64) -> Result<(), ImageError> {
        self.check_writable()?;
        let mut state = self.write_state();
        let current = state.virtual_size();
        if new_size < current {
            return Err(ImageError::Shrink {
                requested: new_size,
                current,
            });
        }
        if new_size == current {
            return Ok(());
        }
        let geometry = Geometry::new(state.cluster_size(), new_size)
            .map_err(|source| ImageError::InvalidGeometry { source })?;
        flush_state(&state)?;

        let old = state.top().delta.header;
        let mut header = old;
        header.geometry = geometry;
        if geometry.bat_len() > old.bat_len {
            header.bat_len = geometry.bat_len();
            header.data_offset = geometry.data_offset_for(header.bat_len);
            relocate_clusters(&state, old.data_offset, header.data_offset)?;
            prepare_bat_area(&state, &old, &header)?;
        }

        let top = state.chain.len() - 1;
        let delta = &mut state.chain[top].delta;
        delta.header = header;
        if let Err(error) = delta.write_header() {
            delta.header = old;
            return Err(error);
        }
        state.descriptor.virtual_size = new_size;
        store::save_descriptor(self.storage.as_ref(), &self.dir, &state.descriptor)?;
        tracing::info!(dir = %self.dir.display(), from = current, to = new_size, "disk grown");
        Ok(())
    }

    /// Returns the bytes the top delta file occupies on the host: its
    /// allocated blocks, as `du` counts them.
    pub fn top_file_bytes(&self) -> Result<u64, ImageError> {
        let state = self.read_state();
        let delta = &state.top().delta;
        delta
            .file()
            .allocated_bytes()
            .map_err(|e| delta.io_error("stat", e))
    }

    /// Returns space to the host: clusters of the top that hold only
    /// zeros are freed, clusters no entry references are punched, and the
    /// file is cut after the last referenced cluster. Returns the number
    /// of bytes the top file occupies less than before.
    pub fn compact(&self) -> Result<u64, ImageError> {
        self.check_writable()?;
        let state = self.write_state();
        flush_state(&state)?;
        let delta = &state.top().delta;
        let before = delta
            .file()
            .allocated_bytes()
            .map_err(|e| delta.io_error("stat", e))?;

        free_zero_clusters(&state)?;
        flush_state(&state)?;
        let (data_end, holes) = punch_unreferenced(&state)?;
        let len = delta.file_len()?;
        if len > data_end {
            delta
                .file()
                .set_len(data_end)
                .map_err(|e| delta.io_error("truncate", e))?;
            delta
                .file()
                .sync_data()
                .map_err(|e| delta.io_error("sync", e))?;
        }
        // The BAT on disk references none of the holes, so they are
        // ready for reuse at once; freed clusters past the new end are gone.
        let writer = self.writer(&state)?;
        writer.forget_free(None);
        writer.free_lists().ready = holes;
        writer
            .next_physical
            .store(data_end / state.cluster_size(), Ordering::Relaxed);

        let after = delta
            .file()
            .allocated_bytes()
            .map_err(|e| delta.io_error("stat", e))?;
        let returned = before.saturating_sub(after);
        tracing::info!(dir = %self.dir.display(), bytes = returned, "disk compacted");
        Ok(returned)
    }
}

/// Updates the frozen top's layer after a snapshot: new node metadata,
/// in-use flag cleared. A failure to clear the flag is only logged,
/// because the next read-write open clears it.
fn finish_frozen_top(state: &mut State, node: Option<Node>) {
    let top = state.chain.len() - 1;
    let layer = &mut state.chain[top];
    if let Some(node) = node {
        layer.node = node;
    }
    layer.delta.header.in_use = false;
    if let Err(error) = layer.delta.write_header() {
        tracing::warn!(%error, "clearing the in-use flag of the snapshot failed");
    }
}

/// Copies every top cluster in `[old_data, new_data)` to the end of the
/// file, syncs, then points the entries at the copies and writes the BAT
/// pages.
fn relocate_clusters(state: &State, old_data: u64, new_data: u64) -> Result<(), ImageError> {
    let cluster_size = state.cluster_size();
    let writer = state.writer.as_ref().ok_or_else(|| ImageError::ReadOnly {
        dir: state.top().delta.path().to_path_buf(),
    })?;
    let (first, end) = (old_data / cluster_size, new_data / cluster_size);
    writer.next_physical.fetch_max(end, Ordering::Relaxed);
    // Freed clusters in the area the BAT grows into must not be reused.
    writer.forget_free(Some(end));

    let top = state.top_level();
    let delta = &state.top().delta;
    let mut buf = vec![0u8; in_cluster(cluster_size)];
    let mut moves = Vec::new();
    for (cluster, mapping) in state.map.entries_at_level(top) {
        let BatEntry::Allocated(physical) = mapping.entry else {
            continue;
        };
        if !(first..end).contains(&physical) {
            continue;
        }
        let target = allocate(state, writer)?;
        delta
            .file()
            .read_at(&mut buf, physical * cluster_size)
            .map_err(|e| delta.io_error("read", e))?;
        delta
            .file()
            .write_at(&buf, target * cluster_size)
            .map_err(|e| delta.io_error("write", e))?;
        moves.push((cluster, mapping, target));
    }
    if moves.is_empty() {
        return Ok(());
    }

    for (cluster, mapping, target) in &moves {
        let entry = BatEntry::Allocated(*target);
        state.map.set(*cluster, Some(Mapping { entry, ..*mapping }));
        writer.mark_dirty(*cluster);
    }
    tracing::debug!(
        clusters = moves.len(),
        "moved data clusters out of the BAT's way"
    );
    flush_state(state)
}

/// Zeros the area the BAT grows into and extends the file over it, so the
/// new pages read as holes (all absent) before the header names them.
fn prepare_bat_area(state: &State, old: &Header, new: &Header) -> Result<(), ImageError> {
    let delta = &state.top().delta;
    let start = HEADER_BLOCK_SIZE + old.bat_len;
    let end = new.data_offset;
    let len = delta.file_len()?;
    if len < end {
        delta
            .file()
            .set_len(end)
            .map_err(|e| delta.io_error("extend", e))?;
    }
    delta
        .file()
        .punch_hole(start, end - start)
        .map_err(|e| delta.io_error("punch hole in", e))?;
    delta
        .file()
        .sync_data()
        .map_err(|e| delta.io_error("sync", e))
}

/// Frees top clusters that read as zeros.
fn free_zero_clusters(state: &State) -> Result<(), ImageError> {
    let cluster_size = state.cluster_size();
    let top = state.top_level();
    let delta = &state.top().delta;
    let writer = state.writer.as_ref();
    let mut buf = vec![0u8; in_cluster(cluster_size)];
    for (cluster, mapping) in state.map.entries_at_level(top) {
        let BatEntry::Allocated(physical) = mapping.entry else {
            continue;
        };
        delta
            .file()
            .read_at(&mut buf, physical * cluster_size)
            .map_err(|e| delta.io_error("read", e))?;
        if buf.iter().any(|b| *b != 0) {
            continue;
        }
        let next = mapping.shadows.then_some(Mapping {
            entry: BatEntry::Zero,
            ..mapping
        });
        state.map.set(cluster, next);
        state.top().allocated.fetch_sub(1, Ordering::Relaxed);
        if let Some(writer) = writer {
            writer.mark_dirty(cluster);
        }
    }
    Ok(())
}

/// Punches every data cluster of the top that no entry references.
/// Returns the end of the last referenced cluster (at least the data
/// offset) and the unreferenced clusters below it. The entries must be
/// durable before this runs.
fn punch_unreferenced(state: &State) -> Result<(u64, Vec<u64>), ImageError> {
    let cluster_size = state.cluster_size();
    let delta = &state.top().delta;
    let mut used: Vec<u64> = state
        .map
        .entries_at_level(state.top_level())
        .into_iter()
        .filter_map(|(_, m)| match m.entry {
            BatEntry::Allocated(p) => Some(p),
            _ => None,
        })
        .collect();
    used.sort_unstable();

    let first = delta.header.data_offset / cluster_size;
    let file_clusters = delta.file_len()?.div_ceil(cluster_size);
    let last = used.last().map_or(first, |p| p + 1);
    let mut holes = Vec::new();
    let mut next_free = first;
    for physical in used.iter().copied().chain([file_clusters]) {
        if physical > next_free {
            holes.extend(next_free..physical.min(last));
            let start = next_free * cluster_size;
            let len = (physical - next_free) * cluster_size;
            delta
                .file()
                .punch_hole(start, len)
                .map_err(|e| delta.io_error("punch hole in", e))?;
        }
        next_free = next_free.max(physical + 1);
    }
    Ok((last * cluster_size, holes))
}
