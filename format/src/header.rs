//! The delta header: a 128-byte record at offset 0 of every delta file,
//! padded to a 4 KiB header block.

use uuid::Uuid;
use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::bat::{self, BAT_PAGE_SIZE};
use crate::error::FormatError;

/// Magic at offset 0 of every delta file.
pub const MAGIC: [u8; 8] = *b"LAMDELTA";
/// The only format version this build reads and writes.
pub const VERSION: u32 = 1;
/// Size of the header block; the BAT starts right after it.
pub const HEADER_BLOCK_SIZE: u64 = HEADER_BLOCK_BYTES as u64;
const HEADER_BLOCK_BYTES: usize = 4096;
/// Size of the header record inside the header block.
pub const HEADER_RECORD_SIZE: usize = 128;
/// Smallest cluster size: 64 KiB.
pub const MIN_CLUSTER_SIZE: u64 = 64 << 10;
/// Largest cluster size: 16 MiB.
pub const MAX_CLUSTER_SIZE: u64 = 16 << 20;
/// Cluster size used when the caller names none: 1 MiB.
pub const DEFAULT_CLUSTER_SIZE: u64 = 1 << 20;
/// Largest virtual size: 256 TiB. It keeps the BAT page index in 32 bits
/// even at the smallest cluster size.
pub const MAX_VIRTUAL_SIZE: u64 = 1 << 48;
/// Header flag: the delta is open read-write, or was not closed cleanly.
pub const FLAG_IN_USE: u32 = 1;
const KNOWN_FLAGS: u32 = FLAG_IN_USE;

/// On-disk header record, 128 bytes, all integers little-endian.
#[repr(C)]
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
struct RawHeader {
    magic: [u8; 8],
    version: U32,
    flags: U32,
    cluster_size: U64,
    virtual_size: U64,
    uuid: [u8; 16],
    parent_uuid: [u8; 16],
    bat_offset: U64,
    bat_len: U64,
    data_offset: U64,
    reserved: [u8; 36],
    /// CRC32 of bytes 0..124.
    crc: U32,
}

const _: () = assert!(size_of::<RawHeader>() == HEADER_RECORD_SIZE);
const CRC_OFFSET: usize = HEADER_RECORD_SIZE - 4;

/// Cluster size and virtual size of a disk, both validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    cluster_size: u64,
    virtual_size: u64,
}

impl Geometry {
    /// Validates a cluster size and a virtual size.
    pub fn new(cluster_size: u64, virtual_size: u64) -> Result<Geometry, FormatError> {
        check_cluster_size(cluster_size)?;
        if virtual_size == 0 {
            return Err(FormatError::VirtualSizeZero);
        }
        if !virtual_size.is_multiple_of(cluster_size) {
            return Err(FormatError::VirtualSizeNotAligned {
                virtual_size,
                cluster_size,
            });
        }
        if virtual_size > MAX_VIRTUAL_SIZE {
            return Err(FormatError::VirtualSizeTooLarge {
                virtual_size,
                max: MAX_VIRTUAL_SIZE,
            });
        }
        Ok(Geometry {
            cluster_size,
            virtual_size,
        })
    }

    /// Cluster size in bytes.
    pub fn cluster_size(&self) -> u64 {
        self.cluster_size
    }

    /// Virtual size in bytes.
    pub fn virtual_size(&self) -> u64 {
        self.virtual_size
    }

    /// Number of virtual clusters.
    pub fn clusters(&self) -> u64 {
        self.virtual_size / self.cluster_size
    }

    /// Minimal BAT length in bytes for this geometry.
    pub fn bat_len(&self) -> u64 {
        bat::pages_for_clusters(self.clusters()) * BAT_PAGE_SIZE as u64
    }

    /// First data offset for a BAT of `bat_len` bytes: the end of the BAT
    /// rounded up to the cluster size.
    pub fn data_offset_for(&self, bat_len: u64) -> u64 {
        // Cannot overflow: both terms are bounded by MAX_VIRTUAL_SIZE / 64.
        (HEADER_BLOCK_SIZE + bat_len).next_multiple_of(self.cluster_size)
    }
}

/// Checks that a cluster size is a power of two inside the supported range.
pub fn check_cluster_size(cluster_size: u64) -> Result<(), FormatError> {
    if !cluster_size.is_power_of_two() {
        return Err(FormatError::ClusterSizeNotPowerOfTwo { cluster_size });
    }
    if !(MIN_CLUSTER_SIZE..=MAX_CLUSTER_SIZE).contains(&cluster_size) {
        return Err(FormatError::ClusterSizeOutOfRange {
            cluster_size,
            min: MIN_CLUSTER_SIZE,
            max: MAX_CLUSTER_SIZE,
        });
    }
    Ok(())
}

/// A decoded and validated delta header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Cluster size and virtual size.
    pub geometry: Geometry,
    /// Whether the delta is open read-write or was not closed cleanly.
    pub in_use: bool,
    /// This delta's UUID.
    pub uuid: Uuid,
    /// The UUID of the delta below, `None` for the base of a chain.
    pub parent: Option<Uuid>,
    /// Length of the BAT in bytes, a multiple of the page size. It may be
    /// longer than the virtual size needs.
    pub bat_len: u64,
    /// Offset of the first data cluster, cluster aligned.
    pub data_offset: u64,
}

impl Header {
    /// Builds the header of a new empty delta with a minimal BAT.
    pub fn new(geometry: Geometry, uuid: Uuid, parent: Option<Uuid>) -> Header {
        let bat_len = geometry.bat_len();
        Header {
            geometry,
            in_use: false,
            uuid,
            parent,
            bat_len,
            data_offset: geometry.data_offset_for(bat_len),
        }
    }

    /// Offset of the BAT: always right after the header block.
    pub fn bat_offset(&self) -> u64 {
        HEADER_BLOCK_SIZE
    }

    /// Number of BAT pages.
    pub fn bat_pages(&self) -> u64 {
        self.bat_len / BAT_PAGE_SIZE as u64
    }

    /// Byte offset of BAT page `page`.
    pub fn bat_page_offset(&self, page: u64) -> u64 {
        HEADER_BLOCK_SIZE + page * BAT_PAGE_SIZE as u64
    }

    /// Number of virtual clusters.
    pub fn clusters(&self) -> u64 {
        self.geometry.clusters()
    }

    /// Checks that the BAT lies inside a file of `file_len` bytes.
    pub fn check_file_len(&self, file_len: u64) -> Result<(), FormatError> {
        let bat_end = HEADER_BLOCK_SIZE + self.bat_len;
        if bat_end > file_len {
            return Err(FormatError::BatOutsideFile { bat_end, file_len });
        }
        Ok(())
    }

    /// Encodes the header block: the record followed by zeros.
    pub fn encode(&self) -> Vec<u8> {
        let mut raw = RawHeader {
            magic: MAGIC,
            version: U32::new(VERSION),
            flags: U32::new(if self.in_use { FLAG_IN_USE } else { 0 }),
            cluster_size: U64::new(self.geometry.cluster_size),
            virtual_size: U64::new(self.geometry.virtual_size),
            uuid: *self.uuid.as_bytes(),
            parent_uuid: *self.parent.unwrap_or(Uuid::nil()).as_bytes(),
            bat_offset: U64::new(HEADER_BLOCK_SIZE),
            bat_len: U64::new(self.bat_len),
            data_offset: U64::new(self.data_offset),
            reserved: [0; 36],
            crc: U32::new(0),
        };
        raw.crc = U32::new(crc32fast::hash(&raw.as_bytes()[..CRC_OFFSET]));

        let mut block = vec![0u8; HEADER_BLOCK_BYTES];
        block[..HEADER_RECORD_SIZE].copy_from_slice(raw.as_bytes());
        block
    }

    /// Decodes and validates a header from the first bytes of a delta file.
    /// Only the 128-byte record is read; the rest of the block is ignored.
    pub fn decode(bytes: &[u8]) -> Result<Header, FormatError> {
        let (raw, _) = RawHeader::ref_from_prefix(bytes).map_err(|_| FormatError::Truncated {
            len: bytes.len(),
            needed: HEADER_RECORD_SIZE,
        })?;
        if raw.magic != MAGIC {
            return Err(FormatError::BadMagic { found: raw.magic });
        }
        let stored = raw.crc.get();
        let computed = crc32fast::hash(&raw.as_bytes()[..CRC_OFFSET]);
        if stored != computed {
            return Err(FormatError::HeaderCrcMismatch { stored, computed });
        }
        if raw.version.get() != VERSION {
            return Err(FormatError::UnknownVersion {
                found: raw.version.get(),
                supported: VERSION,
            });
        }
        let flags = raw.flags.get();
        if flags & !KNOWN_FLAGS != 0 {
            return Err(FormatError::UnknownFlags { flags });
        }

        let geometry = Geometry::new(raw.cluster_size.get(), raw.virtual_size.get())?;
        let bat_len = decode_bat_len(raw, &geometry)?;
        let data_offset = decode_data_offset(raw, &geometry, bat_len)?;
        let parent = Uuid::from_bytes(raw.parent_uuid);
        Ok(Header {
            geometry,
            in_use: flags & FLAG_IN_USE != 0,
            uuid: Uuid::from_bytes(raw.uuid),
            parent: (!parent.is_nil()).then_some(parent),
            bat_len,
            data_offset,
        })
    }
}

fn decode_bat_len(raw: &RawHeader, geometry: &Geometry) -> Result<u64, FormatError> {
    let bat_offset = raw.bat_offset.get();
    if bat_offset != HEADER_BLOCK_SIZE {
        return Err(FormatError::BatOffsetInvalid {
            bat_offset,
            expected: HEADER_BLOCK_SIZE,
        });
    }
    let bat_len = raw.bat_len.get();
    let needed = geometry.bat_len();
    // The BAT may have headroom, but never more pages than the largest
    // virtual size needs.
    let max = Geometry::new(
        geometry.cluster_size,
        max_virtual_size(geometry.cluster_size),
    )
    .map(|g| g.bat_len())
    .unwrap_or(needed);
    if !bat_len.is_multiple_of(BAT_PAGE_SIZE as u64) || bat_len < needed || bat_len > max {
        return Err(FormatError::BatLengthInvalid {
            bat_len,
            needed,
            page_size: BAT_PAGE_SIZE as u64,
        });
    }
    Ok(bat_len)
}

fn decode_data_offset(
    raw: &RawHeader,
    geometry: &Geometry,
    bat_len: u64,
) -> Result<u64, FormatError> {
    let data_offset = raw.data_offset.get();
    let bat_end = HEADER_BLOCK_SIZE + bat_len;
    let cluster_size = geometry.cluster_size;
    if data_offset < bat_end
        || !data_offset.is_multiple_of(cluster_size)
        || data_offset > geometry.data_offset_for(bat_len)
    {
        return Err(FormatError::DataOffsetInvalid {
            data_offset,
            bat_end,
            cluster_size,
        });
    }
    Ok(data_offset)
}

/// The largest virtual size that is a whole number of clusters.
fn max_virtual_size(cluster_size: u64) -> u64 {
    MAX_VIRTUAL_SIZE - MAX_VIRTUAL_SIZE % cluster_size
}
