//! Errors of the on-disk parsers, one variant per rejected input.

use uuid::Uuid;

/// Why a delta header, a BAT page or a chain of headers was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// The input is shorter than the record it should contain.
    #[error("record needs {needed} bytes but only {len} were given")]
    Truncated {
        /// Bytes given.
        len: usize,
        /// Bytes the record needs.
        needed: usize,
    },
    /// The first eight bytes are not the delta magic.
    #[error("bad magic {found:02x?}: not a Lamina delta file")]
    BadMagic {
        /// The bytes found at offset 0.
        found: [u8; 8],
    },
    /// The header has a version this build does not read.
    #[error("unknown delta format version {found}; this build reads version {supported}")]
    UnknownVersion {
        /// Version in the header.
        found: u32,
        /// The version this build reads and writes.
        supported: u32,
    },
    /// The header has flag bits that this build does not know.
    #[error("unknown header flags {flags:#x}")]
    UnknownFlags {
        /// The whole flags field.
        flags: u32,
    },
    /// The header CRC32 does not match its bytes.
    #[error("header CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    HeaderCrcMismatch {
        /// CRC32 stored in the header.
        stored: u32,
        /// CRC32 of the header bytes.
        computed: u32,
    },
    /// The cluster size is outside the supported range.
    #[error("cluster size {cluster_size} is outside {min}..={max}")]
    ClusterSizeOutOfRange {
        /// The rejected cluster size in bytes.
        cluster_size: u64,
        /// Smallest supported cluster size.
        min: u64,
        /// Largest supported cluster size.
        max: u64,
    },
    /// The cluster size is not a power of two.
    #[error("cluster size {cluster_size} is not a power of two")]
    ClusterSizeNotPowerOfTwo {
        /// The rejected cluster size in bytes.
        cluster_size: u64,
    },
    /// The virtual size is zero.
    #[error("virtual size is zero; use at least one cluster")]
    VirtualSizeZero,
    /// The virtual size is not a whole number of clusters.
    #[error("virtual size {virtual_size} is not a multiple of the cluster size {cluster_size}")]
    VirtualSizeNotAligned {
        /// The rejected virtual size in bytes.
        virtual_size: u64,
        /// The cluster size in bytes.
        cluster_size: u64,
    },
    /// The virtual size exceeds the format maximum.
    #[error("virtual size {virtual_size} exceeds the format maximum {max}")]
    VirtualSizeTooLarge {
        /// The rejected virtual size in bytes.
        virtual_size: u64,
        /// The largest virtual size the format allows.
        max: u64,
    },
    /// The BAT does not start right after the header block.
    #[error("BAT offset {bat_offset} is invalid; version 1 requires {expected}")]
    BatOffsetInvalid {
        /// The BAT offset in the header.
        bat_offset: u64,
        /// The only BAT offset version 1 allows.
        expected: u64,
    },
    /// The BAT length is not a whole number of pages or too short.
    #[error("BAT length {bat_len} is invalid; need a multiple of {page_size} of at least {needed}")]
    BatLengthInvalid {
        /// The BAT length in the header, in bytes.
        bat_len: u64,
        /// The minimal length for the virtual size, in bytes.
        needed: u64,
        /// The BAT page size in bytes.
        page_size: u64,
    },
    /// The first data offset overlaps the BAT or is not cluster aligned.
    #[error(
        "data offset {data_offset} is invalid; need a multiple of {cluster_size} at or past {bat_end}"
    )]
    DataOffsetInvalid {
        /// The data offset in the header.
        data_offset: u64,
        /// The end of the BAT.
        bat_end: u64,
        /// The cluster size.
        cluster_size: u64,
    },
    /// The BAT, as the header places it, ends past the end of the file.
    #[error("BAT ends at {bat_end}, past the end of the file at {file_len}")]
    BatOutsideFile {
        /// The end of the BAT in bytes.
        bat_end: u64,
        /// The file length in bytes.
        file_len: u64,
    },
    /// A BAT page CRC32 does not match its bytes.
    #[error("BAT page {page} CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    BatPageCrcMismatch {
        /// Index of the page in the BAT.
        page: u64,
        /// CRC32 stored in the page.
        stored: u32,
        /// CRC32 of the page bytes.
        computed: u32,
    },
    /// A BAT page carries the index of another page.
    #[error("BAT page {page} carries index {found}")]
    BatPageIndexMismatch {
        /// Index of the page in the BAT.
        page: u64,
        /// Index stored in the page.
        found: u64,
    },
    /// A BAT entry has an invalid encoding.
    #[error("BAT entry of cluster {cluster} has invalid value {raw:#x}")]
    BadEntry {
        /// Virtual cluster index.
        cluster: u64,
        /// The raw little-endian value.
        raw: u64,
    },
    /// A BAT entry maps a virtual cluster past the virtual size.
    #[error("BAT entry of cluster {cluster} is past the last cluster {clusters}")]
    EntryPastVirtualSize {
        /// Virtual cluster index.
        cluster: u64,
        /// Number of clusters of the virtual size.
        clusters: u64,
    },
    /// A BAT entry points at a cluster that ends past the end of the file.
    #[error(
        "BAT entry of cluster {cluster} points at physical cluster {physical}, past the end of the file at {file_len}"
    )]
    EntryPastEof {
        /// Virtual cluster index.
        cluster: u64,
        /// Physical cluster index.
        physical: u64,
        /// The file length in bytes.
        file_len: u64,
    },
    /// A BAT entry points into the header or the BAT.
    #[error(
        "BAT entry of cluster {cluster} points at physical cluster {physical}, inside the metadata before {data_offset}"
    )]
    EntryInMetadata {
        /// Virtual cluster index.
        cluster: u64,
        /// Physical cluster index.
        physical: u64,
        /// The first data offset in bytes.
        data_offset: u64,
    },
    /// Two BAT entries point at one physical cluster.
    #[error(
        "BAT entry of cluster {cluster} points at physical cluster {physical}, which another entry uses too"
    )]
    SharedPhysicalCluster {
        /// Virtual cluster index of the second entry.
        cluster: u64,
        /// The shared physical cluster index.
        physical: u64,
    },
    /// A delta's parent UUID is not the UUID of the delta below it.
    #[error("delta {uuid} names parent {found:?} but the chain has {expected:?} below it")]
    ParentMismatch {
        /// The delta whose header is wrong.
        uuid: Uuid,
        /// The UUID of the delta below it in the chain, `None` for the base.
        expected: Option<Uuid>,
        /// The parent UUID in its header.
        found: Option<Uuid>,
    },
    /// A delta has a different UUID than the chain expects.
    #[error("delta header has UUID {found}, expected {expected}")]
    UuidMismatch {
        /// The UUID the descriptor names.
        expected: Uuid,
        /// The UUID in the header.
        found: Uuid,
    },
    /// A parent delta is larger than its child.
    #[error(
        "delta {parent} has virtual size {parent_size}, larger than its child {child} with {child_size}"
    )]
    ChainVirtualSizeMismatch {
        /// The parent delta.
        parent: Uuid,
        /// Its virtual size.
        parent_size: u64,
        /// The child delta.
        child: Uuid,
        /// Its virtual size.
        child_size: u64,
    },
    /// Two deltas of one chain have different cluster sizes.
    #[error("delta {uuid} has cluster size {found}, the chain uses {expected}")]
    ChainClusterSizeMismatch {
        /// The delta whose cluster size differs.
        uuid: Uuid,
        /// The chain's cluster size.
        expected: u64,
        /// The cluster size in its header.
        found: u64,
    },
}
