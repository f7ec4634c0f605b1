//! The block allocation table (BAT): 4 KiB pages of 511 little-endian
//! entries, each page closed by its index and a CRC32.

use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::error::FormatError;

/// Size of one BAT page in bytes.
pub const BAT_PAGE_SIZE: usize = 4096;
/// Number of entries in one BAT page.
pub const ENTRIES_PER_PAGE: usize = 511;

const TAG_MASK: u64 = 0b11;
const TAG_ZERO: u64 = 1;
const TAG_ALLOCATED: u64 = 2;
/// Largest physical cluster index an entry can hold.
pub const MAX_PHYSICAL_CLUSTER: u64 = u64::MAX >> 2;

/// On-disk BAT page, 4096 bytes, all integers little-endian.
#[repr(C)]
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
struct RawBatPage {
    entries: [U64; ENTRIES_PER_PAGE],
    /// Index of this page in the BAT, so a misplaced page is detected.
    page_index: U32,
    /// CRC32 of bytes 0..4092.
    crc: U32,
}

const _: () = assert!(size_of::<RawBatPage>() == BAT_PAGE_SIZE);
const CRC_OFFSET: usize = BAT_PAGE_SIZE - 4;

/// One BAT entry: the state of one virtual cluster in one delta.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BatEntry {
    /// The delta does not hold the cluster: look in the parent.
    Absent,
    /// The cluster reads as zeros and hides the parent's data.
    Zero,
    /// The cluster's data is at this physical cluster index of the file,
    /// that is at byte offset `index * cluster_size`.
    Allocated(u64),
}

impl BatEntry {
    /// Encodes the entry: 0 is absent, 1 is zero, and `index << 2 | 2` is
    /// an allocated cluster.
    pub fn encode(self) -> u64 {
        match self {
            BatEntry::Absent => 0,
            BatEntry::Zero => TAG_ZERO,
            BatEntry::Allocated(index) => (index << 2) | TAG_ALLOCATED,
        }
    }

    /// Decodes a raw entry, or returns `None` for an invalid encoding.
    pub fn decode(raw: u64) -> Option<BatEntry> {
        match (raw & TAG_MASK, raw >> 2) {
            (0, 0) => Some(BatEntry::Absent),
            (TAG_ZERO, 0) => Some(BatEntry::Zero),
            (TAG_ALLOCATED, index) if index > 0 => Some(BatEntry::Allocated(index)),
            _ => None,
        }
    }
}

/// Number of BAT pages needed for `clusters` entries.
pub fn pages_for_clusters(clusters: u64) -> u64 {
    clusters.div_ceil(ENTRIES_PER_PAGE as u64)
}

/// Splits a virtual cluster index into a BAT page index and a slot.
#[allow(clippy::cast_possible_truncation, reason = "the slot is below 511")]
pub fn page_and_slot(cluster: u64) -> (u64, usize) {
    let per_page = ENTRIES_PER_PAGE as u64;
    // The remainder is below 511 and fits in usize.
    (cluster / per_page, (cluster % per_page) as usize)
}

/// The entries of one BAT page, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatPage {
    /// Index of the page in the BAT.
    pub index: u64,
    /// The 511 entries; slot `i` is virtual cluster `index * 511 + i`.
    pub entries: Box<[BatEntry; ENTRIES_PER_PAGE]>,
}

impl BatPage {
    /// Returns a page whose entries are all absent.
    pub fn empty(index: u64) -> BatPage {
        BatPage {
            index,
            entries: Box::new([BatEntry::Absent; ENTRIES_PER_PAGE]),
        }
    }

    /// Virtual cluster index of slot 0.
    pub fn first_cluster(&self) -> u64 {
        self.index * ENTRIES_PER_PAGE as u64
    }

    /// Returns whether every entry is absent.
    pub fn is_empty(&self) -> bool {
        self.entries.iter().all(|e| *e == BatEntry::Absent)
    }

    /// Encodes the page with its index and CRC32.
    pub fn encode(&self) -> Vec<u8> {
        encode_raw_page(self.index, self.entries.map(BatEntry::encode))
    }

    /// Decodes and validates page `index`. A page of all zero bytes, as a
    /// hole in a sparse file reads, is valid and has all entries absent.
    pub fn decode(bytes: &[u8], index: u64) -> Result<BatPage, FormatError> {
        let raw = decode_raw_page(bytes, index)?;
        let mut page = BatPage::empty(index);
        for (slot, value) in raw.iter().enumerate() {
            page.entries[slot] = BatEntry::decode(*value).ok_or(FormatError::BadEntry {
                cluster: page.first_cluster() + slot as u64,
                raw: *value,
            })?;
        }
        Ok(page)
    }
}

/// Encodes a page from raw entry values. The caller guarantees that the
/// values are valid encodings.
pub fn encode_raw_page(index: u64, entries: [u64; ENTRIES_PER_PAGE]) -> Vec<u8> {
    let mut raw = RawBatPage {
        entries: entries.map(U64::new),
        // Page indexes stay below 2^32 because MAX_VIRTUAL_SIZE / 64 KiB
        // / 511 does.
        page_index: U32::new(u32::try_from(index).unwrap_or(u32::MAX)),
        crc: U32::new(0),
    };
    raw.crc = U32::new(crc32fast::hash(&raw.as_bytes()[..CRC_OFFSET]));
    raw.as_bytes().to_vec()
}

/// Checks a page's CRC32 and index and returns its raw entry values, not
/// yet decoded. An all-zero page returns all zeros.
pub fn decode_raw_page(bytes: &[u8], index: u64) -> Result<[u64; ENTRIES_PER_PAGE], FormatError> {
    let (raw, _) = RawBatPage::ref_from_prefix(bytes).map_err(|_| FormatError::Truncated {
        len: bytes.len(),
        needed: BAT_PAGE_SIZE,
    })?;
    if raw.as_bytes().iter().all(|b| *b == 0) {
        return Ok([0; ENTRIES_PER_PAGE]);
    }
    let stored = raw.crc.get();
    let computed = crc32fast::hash(&raw.as_bytes()[..CRC_OFFSET]);
    if stored != computed {
        return Err(FormatError::BatPageCrcMismatch {
            page: index,
            stored,
            computed,
        });
    }
    let found = u64::from(raw.page_index.get());
    if found != index {
        return Err(FormatError::BatPageIndexMismatch { page: index, found });
    }
    Ok(raw.entries.map(U64::get))
}

/// Returns a page's raw entry values without checking its CRC32, for the
/// repair of a delta that was not closed cleanly. A page write torn by a
/// crash mixes old and new sectors, and every entry in either version
/// points at data synced before the write. The page index must still
/// match, unless the trailer sector is all zeros (the first write of the
/// page tore before reaching it).
pub fn decode_raw_page_ignoring_crc(
    bytes: &[u8],
    index: u64,
) -> Result<[u64; ENTRIES_PER_PAGE], FormatError> {
    let (raw, _) = RawBatPage::ref_from_prefix(bytes).map_err(|_| FormatError::Truncated {
        len: bytes.len(),
        needed: BAT_PAGE_SIZE,
    })?;
    let found = u64::from(raw.page_index.get());
    let trailer_blank = found == 0 && raw.crc.get() == 0;
    if found != index && !trailer_blank {
        return Err(FormatError::BatPageIndexMismatch { page: index, found });
    }
    Ok(raw.entries.map(U64::get))
}

/// Checks BAT entries against the layout of one delta file: every
/// allocated cluster must lie in the data area, end inside the file and
/// belong to one entry only. Used clusters are tracked in a bitmap of one
/// bit per physical cluster of the file. A sparse file can claim any
/// length, so past 2^27 clusters a hash set that grows with the entries
/// replaces the bitmap.
#[derive(Debug)]
pub struct EntryChecker {
    cluster_size: u64,
    clusters: u64,
    first_data_cluster: u64,
    file_len: u64,
    seen: UsedClusters,
}

#[derive(Debug)]
enum UsedClusters {
    Bitmap(Vec<u64>),
    Set(std::collections::HashSet<u64>),
}

/// Largest file, in clusters, whose used clusters are kept in a bitmap
/// (16 MiB of memory).
const MAX_BITMAP_CLUSTERS: u64 = 1 << 27;

impl UsedClusters {
    /// Records `physical` and returns whether it was recorded before.
    fn insert(&mut self, physical: u64) -> bool {
        match self {
            UsedClusters::Bitmap(words) => {
                let bit = 1u64 << (physical % 64);
                let word = usize::try_from(physical / 64)
                    .ok()
                    .and_then(|w| words.get_mut(w));
                match word {
                    Some(word) => {
                        let seen = *word & bit != 0;
                        *word |= bit;
                        seen
                    }
                    None => false,
                }
            }
            UsedClusters::Set(set) => !set.insert(physical),
        }
    }

    fn contains(&self, physical: u64) -> bool {
        match self {
            UsedClusters::Bitmap(words) => usize::try_from(physical / 64)
                .ok()
                .and_then(|w| words.get(w))
                .is_some_and(|w| w & (1 << (physical % 64)) != 0),
            UsedClusters::Set(set) => set.contains(&physical),
        }
    }
}

impl EntryChecker {
    /// Creates a checker for a file of `file_len` bytes whose data area
    /// starts at `data_offset` and which maps `clusters` virtual clusters.
    pub fn new(cluster_size: u64, clusters: u64, data_offset: u64, file_len: u64) -> Self {
        let file_clusters = file_len / cluster_size;
        let seen = match usize::try_from(file_clusters.div_ceil(64)) {
            Ok(words) if file_clusters <= MAX_BITMAP_CLUSTERS => {
                UsedClusters::Bitmap(vec![0; words])
            }
            _ => UsedClusters::Set(std::collections::HashSet::new()),
        };
        EntryChecker {
            cluster_size,
            clusters,
            first_data_cluster: data_offset / cluster_size,
            file_len,
            seen,
        }
    }

    /// Checks the entry of virtual cluster `cluster` and records its
    /// physical cluster as used.
    pub fn check(&mut self, cluster: u64, entry: BatEntry) -> Result<(), FormatError> {
        if entry != BatEntry::Absent && cluster >= self.clusters {
            return Err(FormatError::EntryPastVirtualSize {
                cluster,
                clusters: self.clusters,
            });
        }
        let BatEntry::Allocated(physical) = entry else {
            return Ok(());
        };
        if physical < self.first_data_cluster {
            return Err(FormatError::EntryInMetadata {
                cluster,
                physical,
                data_offset: self.first_data_cluster * self.cluster_size,
            });
        }
        let end = physical
            .checked_add(1)
            .and_then(|n| n.checked_mul(self.cluster_size));
        if end.is_none_or(|end| end > self.file_len) {
            return Err(FormatError::EntryPastEof {
                cluster,
                physical,
                file_len: self.file_len,
            });
        }
        if self.seen.insert(physical) {
            return Err(FormatError::SharedPhysicalCluster { cluster, physical });
        }
        Ok(())
    }

    /// Returns whether a physical cluster was recorded as used.
    pub fn is_used(&self, physical: u64) -> bool {
        self.seen.contains(physical)
    }
}
