//! The data path: read, write with copy-on-write, zero, discard, flush.

use std::sync::atomic::Ordering;

use lamina_format::{BatEntry, ENTRIES_PER_PAGE};

use super::disk::{Disk, State, Writer};
use super::error::ImageError;
use super::map::in_cluster;
use super::map::{MAX_PHYSICAL, Mapping};

/// The part of a request that falls into one cluster.
#[derive(Debug, Clone, Copy)]
struct Piece {
    cluster: u64,
    /// Offset inside the cluster.
    within: u64,
    /// Range inside the caller's buffer.
    start: usize,
    len: usize,
}

/// Splits `len` bytes at `offset` into per-cluster pieces.
fn pieces(offset: u64, len: usize, cluster_size: u64) -> impl Iterator<Item = Piece> {
    let mut done = 0usize;
    std::iter::from_fn(move || {
        if done >= len {
            return None;
        }
        let pos = offset + done as u64;
        let within = pos % cluster_size;
        let room = cluster_size - within;
        let take = usize::try_from(room).map_or(len - done, |room| room.min(len - done));
        let piece = Piece {
            cluster: pos / cluster_size,
            within,
            start: done,
            len: take,
        };
        done += take;
        Some(piece)
    })
}

fn check_range(state: &State, offset: u64, len: u64) -> Result<(), ImageError> {
    let size = state.virtual_size();
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(ImageError::OutOfRange { offset, len, size }),
    }
}

fn allocated_in(mapping: Option<Mapping>, level: u8) -> Option<u64> {
    match mapping {
        Some(Mapping {
            level: l,
            entry: BatEntry::Allocated(physical),
            ..
        }) if l == level => Some(physical),
        _ => None,
    }
}

impl Disk {
    /// Reads `buf.len()` bytes at `offset`. Never-written ranges read as
    /// zeros.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), ImageError> {
        let state = self.read_state();
        check_range(&state, offset, buf.len() as u64)?;
        let cluster_size = state.cluster_size();
        for piece in pieces(offset, buf.len(), cluster_size) {
            let out = &mut buf[piece.start..piece.start + piece.len];
            match state.map.get(piece.cluster) {
                Some(Mapping {
                    level,
                    entry: BatEntry::Allocated(physical),
                    ..
                }) => {
                    let delta = &state.chain[usize::from(level)].delta;
                    delta
                        .file()
                        .read_at(out, physical * cluster_size + piece.within)
                        .map_err(|e| delta.io_error("read", e))?;
                }
                _ => out.fill(0),
            }
        }
        Ok(())
    }

    /// Writes `buf` at `offset`. A partial write to a cluster whose data
    /// is only in a lower delta first copies that cluster up into the top.
    pub fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), ImageError> {
        self.check_writable()?;
        let state = self.read_state();
        check_range(&state, offset, buf.len() as u64)?;
        let writer = self.writer(&state)?;
        for piece in pieces(offset, buf.len(), state.cluster_size()) {
            let data = &buf[piece.start..piece.start + piece.len];
            write_piece(&state, writer, piece, data)?;
        }
        Ok(())
    }

    /// Zeros a range. Whole clusters become zero entries, or absent when
    /// no lower delta has an entry for them. Partial clusters at the ends
    /// are written with zeros unless they already read as zeros.
    pub fn zero_range(&self, offset: u64, len: u64) -> Result<(), ImageError> {
        self.clear_range(offset, len)
    }

    /// Discards a range. Whole clusters of the top are freed and their
    /// space is punched out of the file. The entry becomes absent, or zero
    /// when a lower delta has data for the cluster. The range reads as
    /// zeros afterwards, as `fallocate(PUNCH_HOLE)` requires, so partial
    /// clusters at the ends are zeroed like [`Disk::zero_range`] does.
    pub fn discard(&self, offset: u64, len: u64) -> Result<(), ImageError> {
        self.clear_range(offset, len)
    }

    /// Makes every acknowledged write durable: copy the dirty BAT pages,
    /// sync the data, write the copies, sync again. Entries set after the
    /// copy wait for the next flush, so their data is synced before them.
    pub fn flush(&self) -> Result<(), ImageError> {
        if self.check_writable().is_err() {
            return Ok(());
        }
        let state = self.read_state();
        flush_state(&state)
    }

    pub(super) fn writer<'a>(&self, state: &'a State) -> Result<&'a Writer, ImageError> {
        state.writer.as_ref().ok_or_else(|| ImageError::ReadOnly {
            dir: self.dir.clone(),
        })
    }

    fn clear_range(&self, offset: u64, len: u64) -> Result<(), ImageError> {
        self.check_writable()?;
        let state = self.read_state();
        check_range(&state, offset, len)?;
        let writer = self.writer(&state)?;
        let cluster_size = state.cluster_size();
        let end = offset + len;
        let first_whole = offset.div_ceil(cluster_size);
        let end_whole = end / cluster_size;
        if first_whole >= end_whole {
            return zero_partial(&state, writer, offset, end);
        }

        zero_partial(&state, writer, offset, first_whole * cluster_size)?;
        // Only map pages with entries can have clusters to clear, so visit
        // those, or the range's pages when there are fewer of them.
        let per_page = ENTRIES_PER_PAGE as u64;
        let range_pages = first_whole / per_page..(end_whole - 1) / per_page + 1;
        let pages: Vec<u64> =
            if range_pages.end - range_pages.start <= state.map.page_count() as u64 {
                range_pages.filter(|p| state.map.has_page(*p)).collect()
            } else {
                state.map.pages()
            };
        for page in pages {
            let from = (page * per_page).max(first_whole);
            let to = ((page + 1) * per_page).min(end_whole);
            for cluster in from..to {
                clear_cluster(&state, writer, cluster)?;
            }
        }
        zero_partial(&state, writer, end_whole * cluster_size, end)
    }
}

/// Flushes the top of an open chain; see [`Disk::flush`].
pub(super) fn flush_state(state: &State) -> Result<(), ImageError> {
    let Some(writer) = state.writer.as_ref() else {
        return Ok(());
    };
    let _serial = writer.flush.lock().unwrap_or_else(|e| e.into_inner());
    if !writer.unsynced.swap(false, Ordering::AcqRel) {
        return Ok(());
    }
    // Clusters freed before the pages are taken have their cleared
    // entries in these pages, so once the pages are durable the clusters
    // are safe to reuse.
    let freed = std::mem::take(&mut writer.free_lists().pending);
    let pages = std::mem::take(&mut *writer.dirty.lock().unwrap_or_else(|e| e.into_inner()));
    let top = state.top_level();
    let copies: Vec<_> = pages
        .iter()
        .map(|page| (*page, state.map.level_page(*page, top)))
        .collect();

    let result = write_pages(state, &copies);
    if result.is_err() {
        let mut dirty = writer.dirty.lock().unwrap_or_else(|e| e.into_inner());
        dirty.extend(pages);
        writer.free_lists().pending.extend(freed);
        writer.unsynced.store(true, Ordering::Release);
    } else {
        writer.free_lists().ready.extend(freed);
    }
    result
}

fn write_pages(state: &State, copies: &[(u64, [u64; ENTRIES_PER_PAGE])]) -> Result<(), ImageError> {
    let delta = &state.top().delta;
    delta
        .file()
        .sync_data()
        .map_err(|e| delta.io_error("sync", e))?;
    if copies.is_empty() {
        return Ok(());
    }
    for (page, raw) in copies {
        delta.write_raw_page(*page, *raw)?;
    }
    delta
        .file()
        .sync_data()
        .map_err(|e| delta.io_error("sync", e))
}

fn write_piece(
    state: &State,
    writer: &Writer,
    piece: Piece,
    data: &[u8],
) -> Result<(), ImageError> {
    let top = state.top_level();
    let delta = &state.top().delta;
    let cluster_size = state.cluster_size();
    let write = |physical: u64| {
        delta
            .file()
            .write_at(data, physical * cluster_size + piece.within)
            .map_err(|e| delta.io_error("write", e))?;
        // Set after the write: a flush that clears the flag first syncs
        // after it, and one that clears it before leaves it set again.
        writer.unsynced.store(true, Ordering::Release);
        Ok(())
    };
    if let Some(physical) = allocated_in(state.map.get(piece.cluster), top) {
        return write(physical);
    }

    let _busy = writer.busy.lock(piece.cluster);
    let current = state.map.get(piece.cluster);
    if let Some(physical) = allocated_in(current, top) {
        return write(physical);
    }
    let physical = allocate(state, writer)?;
    fill_new_cluster(state, current, piece, data, physical)?;

    let shadows = match current {
        None => false,
        Some(m) if m.level == top => m.shadows,
        Some(_) => true,
    };
    let entry = BatEntry::Allocated(physical);
    state.map.set(
        piece.cluster,
        Some(Mapping {
            level: top,
            entry,
            shadows,
        }),
    );
    state.top().allocated.fetch_add(1, Ordering::Relaxed);
    writer.mark_dirty(piece.cluster);
    Ok(())
}

/// Writes the content of a newly allocated cluster. A newly allocated
/// cluster lies past every byte written before (clusters are never reused
/// while their old entry may be durable), so it reads as zeros until
/// written. Over zeros only the new bytes and the cluster's last byte
/// (which extends the file over the whole cluster) are written. Over a
/// lower delta's data the whole cluster is copied up.
fn fill_new_cluster(
    state: &State,
    current: Option<Mapping>,
    piece: Piece,
    data: &[u8],
    physical: u64,
) -> Result<(), ImageError> {
    let cluster_size = state.cluster_size();
    let delta = &state.top().delta;
    let start = physical * cluster_size;
    let write = |buf: &[u8], offset: u64| {
        delta
            .file()
            .write_at(buf, offset)
            .map_err(|e| delta.io_error("write", e))
    };
    let lower = match current {
        Some(Mapping {
            level,
            entry: BatEntry::Allocated(lower),
            ..
        }) => Some((level, lower)),
        _ => None,
    };
    let Some((level, lower)) = lower.filter(|_| data.len() as u64 != cluster_size) else {
        write(data, start + piece.within)?;
        let end = piece.within + data.len() as u64;
        if end < cluster_size {
            write(&[0], start + cluster_size - 1)?;
        }
        return Ok(());
    };

    let mut image = vec![0u8; in_cluster(cluster_size)];
    let source = &state.chain[usize::from(level)].delta;
    source
        .file()
        .read_at(&mut image, lower * cluster_size)
        .map_err(|e| source.io_error("read", e))?;
    let within = in_cluster(piece.within);
    image[within..within + data.len()].copy_from_slice(data);
    write(&image, start)
}

/// Returns a physical cluster of the top for new data: a freed one whose
/// release a flush has made durable, or else the next one past the end.
pub(super) fn allocate(state: &State, writer: &Writer) -> Result<u64, ImageError> {
    if let Some(physical) = writer.free_lists().ready.pop() {
        return Ok(physical);
    }
    let physical = writer.next_physical.fetch_add(1, Ordering::Relaxed);
    // Keep the cluster's end inside what an entry, the map and an off_t
    // (i64) can address.
    let limit = (i64::MAX.unsigned_abs() / state.cluster_size() - 1).min(MAX_PHYSICAL);
    if physical > limit {
        return Err(ImageError::DeltaFull {
            path: state.top().delta.path().to_path_buf(),
        });
    }
    Ok(physical)
}

/// Zeros `[start, end)` cluster by cluster, skipping clusters that read
/// as zeros already.
fn zero_partial(state: &State, writer: &Writer, start: u64, end: u64) -> Result<(), ImageError> {
    if start >= end {
        return Ok(());
    }
    let cluster_size = state.cluster_size();
    let len = usize::try_from(end - start).map_err(|_| ImageError::OutOfRange {
        offset: start,
        len: end - start,
        size: state.virtual_size(),
    })?;
    for piece in pieces(start, len, cluster_size) {
        match state.map.get(piece.cluster) {
            None
            | Some(Mapping {
                entry: BatEntry::Zero,
                ..
            }) => continue,
            Some(_) => {}
        }
        let zeros = vec![0u8; piece.len];
        write_piece(state, writer, piece, &zeros)?;
    }
    Ok(())
}

/// Turns one whole cluster into zeros: free it in the top and leave an
/// absent entry, or a zero entry when older data would show through.
fn clear_cluster(state: &State, writer: &Writer, cluster: u64) -> Result<(), ImageError> {
    if state.map.get(cluster).is_none() {
        return Ok(());
    }
    let _busy = writer.busy.lock(cluster);
    let Some(current) = state.map.get(cluster) else {
        return Ok(());
    };
    let top = state.top_level();
    let zero = Mapping {
        level: top,
        entry: BatEntry::Zero,
        shadows: true,
    };
    let next = if current.level < top {
        Some(zero)
    } else {
        current.shadows.then_some(zero)
    };
    if current.level < top && current.entry == BatEntry::Zero {
        return Ok(());
    }
    if let Some(physical) = allocated_in(Some(current), top) {
        let delta = &state.top().delta;
        let cluster_size = state.cluster_size();
        delta
            .file()
            .punch_hole(physical * cluster_size, cluster_size)
            .map_err(|e| delta.io_error("punch hole in", e))?;
        state.top().allocated.fetch_sub(1, Ordering::Relaxed);
    }
    if next != Some(current) {
        state.map.set(cluster, next);
        writer.mark_dirty(cluster);
    }
    // Released only after the cleared entry is in the map and its page
    // is dirty: see flush_state.
    if let Some(physical) = allocated_in(Some(current), top) {
        writer.release(physical);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_split_at_cluster_boundaries() {
        let got: Vec<_> = pieces(65_000, 70_000, 65_536)
            .map(|p| (p.cluster, p.within, p.start, p.len))
            .collect();
        assert_eq!(
            got,
            vec![
                (0, 65_000, 0, 536),
                (1, 0, 536, 65_536),
                (2, 0, 66_072, 3_928)
            ]
        );
    }

    #[test]
    fn pieces_of_empty_request_are_empty() {
        assert_eq!(pieces(10, 0, 65_536).count(), 0);
    }
}
