//! The merged cluster map of an open chain: for each virtual cluster, the
//! top-most delta with a non-absent entry for it, and that entry.
//!
//! The map is paged like the BAT (511 entries a page) and keeps only pages
//! that hold at least one entry, so its memory and build time grow with
//! allocated clusters, not with the virtual size. Entries are atomics, so
//! lookups and updates of existing pages take only the shared lock.

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use lamina_format::bat::page_and_slot;
use lamina_format::{BatEntry, ENTRIES_PER_PAGE};

/// The source of a virtual cluster's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    /// Level of the delta holding the entry, 0 for the base.
    pub level: u8,
    /// The entry; never [`BatEntry::Absent`].
    pub entry: BatEntry,
    /// Whether a delta below `level` also has a non-absent entry, so that
    /// dropping this entry would expose older data.
    pub shadows: bool,
}

// Packing of a mapping into a u64: bits 56..64 hold the level, bit 55 the
// shadows flag and bits 0..55 the encoded BAT entry. 0 means no mapping.
const LEVEL_SHIFT: u32 = 56;
const SHADOWS_BIT: u64 = 1 << 55;
const ENTRY_MASK: u64 = SHADOWS_BIT - 1;
/// Largest physical cluster index the map can hold.
pub const MAX_PHYSICAL: u64 = ENTRY_MASK >> 2;

impl Mapping {
    fn pack(self) -> u64 {
        let shadows = if self.shadows { SHADOWS_BIT } else { 0 };
        (u64::from(self.level) << LEVEL_SHIFT) | shadows | (self.entry.encode() & ENTRY_MASK)
    }

    fn unpack(value: u64) -> Option<Mapping> {
        if value == 0 {
            return None;
        }
        Some(Mapping {
            // The shift leaves 8 bits.
            level: (value >> LEVEL_SHIFT) as u8,
            entry: BatEntry::decode(value & ENTRY_MASK)?,
            shadows: value & SHADOWS_BIT != 0,
        })
    }
}

/// Converts a length or offset inside one cluster to `usize`. Clusters
/// are at most 16 MiB, so the value always fits.
#[allow(
    clippy::cast_possible_truncation,
    reason = "bounded by the 16 MiB cluster size"
)]
pub fn in_cluster(value: u64) -> usize {
    debug_assert!(value <= lamina_format::header::MAX_CLUSTER_SIZE);
    value as usize
}

struct MapPage([AtomicU64; ENTRIES_PER_PAGE]);

impl MapPage {
    fn new() -> Box<MapPage> {
        Box::new(MapPage(std::array::from_fn(|_| AtomicU64::new(0))))
    }
}

/// The merged map. See the module documentation.
#[derive(Default)]
pub struct ClusterMap {
    pages: RwLock<HashMap<u64, Box<MapPage>>>,
}

impl std::fmt::Debug for ClusterMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterMap")
            .field("pages", &self.page_count())
            .finish()
    }
}

impl ClusterMap {
    /// Returns the mapping of a virtual cluster.
    pub fn get(&self, cluster: u64) -> Option<Mapping> {
        let (page, slot) = page_and_slot(cluster);
        let pages = self.pages.read().unwrap_or_else(|e| e.into_inner());
        let value = pages.get(&page)?.0[slot].load(Ordering::Acquire);
        Mapping::unpack(value)
    }

    /// Sets or clears the mapping of a virtual cluster. The entry of a
    /// `Some` mapping must not be absent and its physical index must not
    /// exceed [`MAX_PHYSICAL`].
    pub fn set(&self, cluster: u64, mapping: Option<Mapping>) {
        let value = mapping.map_or(0, Mapping::pack);
        let (page, slot) = page_and_slot(cluster);
        {
            let pages = self.pages.read().unwrap_or_else(|e| e.into_inner());
            if let Some(p) = pages.get(&page) {
                p.0[slot].store(value, Ordering::Release);
                return;
            }
        }
        if value == 0 {
            return;
        }
        let mut pages = self.pages.write().unwrap_or_else(|e| e.into_inner());
        pages.entry(page).or_insert_with(MapPage::new).0[slot].store(value, Ordering::Release);
    }

    /// Indexes of the pages held in memory, sorted.
    pub fn pages(&self) -> Vec<u64> {
        let pages = self.pages.read().unwrap_or_else(|e| e.into_inner());
        let mut indexes: Vec<u64> = pages.keys().copied().collect();
        indexes.sort_unstable();
        indexes
    }

    /// Returns whether page `page` is held in memory.
    pub fn has_page(&self, page: u64) -> bool {
        let pages = self.pages.read().unwrap_or_else(|e| e.into_inner());
        pages.contains_key(&page)
    }

    /// Number of pages held in memory.
    pub fn page_count(&self) -> usize {
        self.pages.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Returns the raw BAT entries of page `page` as the delta at `level`
    /// stores them, with entries of other levels absent.
    pub fn level_page(&self, page: u64, level: u8) -> [u64; ENTRIES_PER_PAGE] {
        let pages = self.pages.read().unwrap_or_else(|e| e.into_inner());
        let mut raw = [0u64; ENTRIES_PER_PAGE];
        if let Some(p) = pages.get(&page) {
            for (out, value) in raw.iter_mut().zip(&p.0) {
                match Mapping::unpack(value.load(Ordering::Acquire)) {
                    Some(m) if m.level == level => *out = m.entry.encode(),
                    _ => {}
                }
            }
        }
        raw
    }

    /// Returns every `(cluster, mapping)` whose mapping is at `level`,
    /// in no particular order.
    pub fn entries_at_level(&self, level: u8) -> Vec<(u64, Mapping)> {
        let pages = self.pages.read().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        for (index, page) in pages.iter() {
            let first = index * ENTRIES_PER_PAGE as u64;
            for (slot, value) in page.0.iter().enumerate() {
                if let Some(m) = Mapping::unpack(value.load(Ordering::Acquire))
                    && m.level == level
                {
                    out.push((first + slot as u64, m));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping_pack_round_trip() {
        let cases = [
            Mapping {
                level: 0,
                entry: BatEntry::Zero,
                shadows: false,
            },
            Mapping {
                level: 255,
                entry: BatEntry::Allocated(MAX_PHYSICAL),
                shadows: true,
            },
            Mapping {
                level: 3,
                entry: BatEntry::Allocated(1),
                shadows: false,
            },
        ];
        for m in cases {
            assert_eq!(Mapping::unpack(m.pack()), Some(m));
        }
    }

    #[test]
    fn map_keeps_only_touched_pages() {
        let map = ClusterMap::default();
        let m = Mapping {
            level: 0,
            entry: BatEntry::Zero,
            shadows: false,
        };
        map.set(5, Some(m));
        map.set(1_000_000, Some(m));
        map.set(2_000_000, None);
        assert_eq!(map.page_count(), 2);
        assert_eq!(map.get(5), Some(m));
        assert_eq!(map.get(6), None);
        assert_eq!(map.level_page(0, 0)[5], BatEntry::Zero.encode());
        assert_eq!(map.level_page(0, 1)[5], 0);
    }
}
