//! Unit tests of the parsers: round trips and one case per rejection.

use uuid::Uuid;

use crate::bat::{MAX_PHYSICAL_CLUSTER, decode_raw_page, encode_raw_page, pages_for_clusters};
use crate::descriptor::{DESCRIPTOR_VERSION, MAX_CHAIN_DEPTH};
use crate::header::{HEADER_RECORD_SIZE, MAX_VIRTUAL_SIZE};
use crate::*;

const MIB: u64 = 1 << 20;

fn header() -> Header {
    let geometry = Geometry::new(MIB, 8 << 30).unwrap();
    Header::new(geometry, Uuid::from_u128(1), Some(Uuid::from_u128(2)))
}

/// Encodes a header after changing a field in the raw bytes, with a fresh
/// CRC so that only the field's own check can fail.
fn patched(offset: usize, bytes: &[u8]) -> Vec<u8> {
    let mut block = header().encode();
    block[offset..offset + bytes.len()].copy_from_slice(bytes);
    let crc = crc32fast::hash(&block[..HEADER_RECORD_SIZE - 4]);
    block[HEADER_RECORD_SIZE - 4..HEADER_RECORD_SIZE].copy_from_slice(&crc.to_le_bytes());
    block
}

#[test]
fn header_round_trip() {
    let mut h = header();
    h.in_use = true;
    let bytes = h.encode();
    assert_eq!(bytes.len(), 4096);
    assert_eq!(Header::decode(&bytes), Ok(h));
}

#[test]
fn header_layout_for_default_cluster() {
    let h = header();
    // 8 GiB / 1 MiB = 8192 clusters -> 17 pages of 511 entries.
    assert_eq!(h.bat_len, 17 * 4096);
    assert_eq!(h.data_offset, MIB);
    assert_eq!(h.parent, Some(Uuid::from_u128(2)));
    let base = Header::new(h.geometry, Uuid::from_u128(1), None);
    assert_eq!(Header::decode(&base.encode()).unwrap().parent, None);
}

#[test]
fn header_truncated_is_rejected() {
    let bytes = header().encode();
    assert_eq!(
        Header::decode(&bytes[..100]),
        Err(FormatError::Truncated {
            len: 100,
            needed: 128
        })
    );
}

#[test]
fn header_bad_magic_is_rejected() {
    let bytes = patched(0, b"QFI\xfbXXXX");
    assert!(matches!(
        Header::decode(&bytes),
        Err(FormatError::BadMagic { .. })
    ));
}

#[test]
fn header_bad_crc_is_rejected() {
    let mut bytes = header().encode();
    bytes[30] ^= 1;
    assert!(matches!(
        Header::decode(&bytes),
        Err(FormatError::HeaderCrcMismatch { .. })
    ));
}

#[test]
fn header_unknown_version_is_rejected() {
    let bytes = patched(8, &7u32.to_le_bytes());
    assert_eq!(
        Header::decode(&bytes),
        Err(FormatError::UnknownVersion {
            found: 7,
            supported: 1
        })
    );
}

#[test]
fn header_unknown_flags_are_rejected() {
    let bytes = patched(12, &0x10u32.to_le_bytes());
    assert_eq!(
        Header::decode(&bytes),
        Err(FormatError::UnknownFlags { flags: 0x10 })
    );
}

#[test]
fn header_cluster_size_checks() {
    let cases = [
        (
            3 * MIB,
            FormatError::ClusterSizeNotPowerOfTwo {
                cluster_size: 3 * MIB,
            },
        ),
        (
            32 << 10,
            FormatError::ClusterSizeOutOfRange {
                cluster_size: 32 << 10,
                min: 64 << 10,
                max: 16 << 20,
            },
        ),
        (
            32 << 20,
            FormatError::ClusterSizeOutOfRange {
                cluster_size: 32 << 20,
                min: 64 << 10,
                max: 16 << 20,
            },
        ),
        (0, FormatError::ClusterSizeNotPowerOfTwo { cluster_size: 0 }),
    ];
    for (cluster_size, expected) in cases {
        let bytes = patched(16, &cluster_size.to_le_bytes());
        assert_eq!(
            Header::decode(&bytes),
            Err(expected),
            "cluster size {cluster_size}"
        );
    }
}

#[test]
fn header_virtual_size_checks() {
    let unaligned = (8 << 30) + 4096u64;
    let bytes = patched(24, &unaligned.to_le_bytes());
    assert_eq!(
        Header::decode(&bytes),
        Err(FormatError::VirtualSizeNotAligned {
            virtual_size: unaligned,
            cluster_size: MIB
        })
    );
    let huge = MAX_VIRTUAL_SIZE * 2;
    let bytes = patched(24, &huge.to_le_bytes());
    assert_eq!(
        Header::decode(&bytes),
        Err(FormatError::VirtualSizeTooLarge {
            virtual_size: huge,
            max: MAX_VIRTUAL_SIZE
        })
    );
    let bytes = patched(24, &0u64.to_le_bytes());
    assert_eq!(Header::decode(&bytes), Err(FormatError::VirtualSizeZero));
}

#[test]
fn header_bat_placement_checks() {
    let bytes = patched(64, &8192u64.to_le_bytes());
    assert_eq!(
        Header::decode(&bytes),
        Err(FormatError::BatOffsetInvalid {
            bat_offset: 8192,
            expected: 4096
        })
    );
    for bat_len in [16 * 4096u64, 17 * 4096 + 1, u64::MAX - 4095] {
        let bytes = patched(72, &bat_len.to_le_bytes());
        assert!(
            matches!(
                Header::decode(&bytes),
                Err(FormatError::BatLengthInvalid { .. })
            ),
            "BAT length {bat_len}"
        );
    }
    for data_offset in [0, 64 << 10, 3 * MIB, MIB + 4096, u64::MAX] {
        let bytes = patched(80, &data_offset.to_le_bytes());
        assert!(
            matches!(
                Header::decode(&bytes),
                Err(FormatError::DataOffsetInvalid { .. })
            ),
            "data offset {data_offset}"
        );
    }
}

#[test]
fn header_bat_outside_file_is_rejected() {
    let h = header();
    assert_eq!(
        h.check_file_len(8192),
        Err(FormatError::BatOutsideFile {
            bat_end: 4096 + 17 * 4096,
            file_len: 8192
        })
    );
    assert_eq!(h.check_file_len(MIB), Ok(()));
}

#[test]
fn header_over_4_gib_offsets_do_not_wrap() {
    // 16 TiB with 64 KiB clusters: 2^28 clusters, far past u32.
    let geometry = Geometry::new(64 << 10, 16 << 40).unwrap();
    let h = Header::new(geometry, Uuid::from_u128(1), None);
    assert_eq!(h.clusters(), 1 << 28);
    assert_eq!(h.bat_pages(), pages_for_clusters(1 << 28));
    assert_eq!(Header::decode(&h.encode()), Ok(h));
    let bat_end = 4096 + pages_for_clusters(1 << 28) * 4096;
    assert_eq!(h.data_offset, bat_end.next_multiple_of(64 << 10));
    assert!(h.data_offset > u64::from(u32::MAX) / 2);
}

#[test]
fn entry_encoding_round_trip() {
    for entry in [
        BatEntry::Absent,
        BatEntry::Zero,
        BatEntry::Allocated(1),
        BatEntry::Allocated(5 << 32),
        BatEntry::Allocated(MAX_PHYSICAL_CLUSTER),
    ] {
        assert_eq!(BatEntry::decode(entry.encode()), Some(entry));
    }
    assert_eq!(BatEntry::Absent.encode(), 0);
    assert_eq!(BatEntry::Zero.encode(), 1);
    assert_eq!(BatEntry::Allocated(3).encode(), 14);
}

#[test]
fn entry_invalid_encodings_are_rejected() {
    for raw in [3u64, 2, 4, 5, 7, 1 << 40] {
        assert_eq!(BatEntry::decode(raw), None, "raw {raw:#x}");
    }
}

#[test]
fn bat_page_round_trip() {
    let mut page = BatPage::empty(9);
    page.entries[0] = BatEntry::Zero;
    page.entries[510] = BatEntry::Allocated(77);
    let bytes = page.encode();
    assert_eq!(bytes.len(), BAT_PAGE_SIZE);
    assert_eq!(BatPage::decode(&bytes, 9), Ok(page));
}

#[test]
fn bat_page_hole_reads_as_absent() {
    let page = BatPage::decode(&[0u8; BAT_PAGE_SIZE], 3).unwrap();
    assert!(page.is_empty());
    assert_eq!(page.first_cluster(), 3 * 511);
}

#[test]
fn bat_page_bad_crc_is_rejected() {
    let mut bytes = encode_raw_page(2, [0; ENTRIES_PER_PAGE]);
    bytes[100] = 6;
    assert!(matches!(
        decode_raw_page(&bytes, 2),
        Err(FormatError::BatPageCrcMismatch { page: 2, .. })
    ));
}

#[test]
fn bat_page_at_wrong_index_is_rejected() {
    let bytes = encode_raw_page(2, [0; ENTRIES_PER_PAGE]);
    assert_eq!(
        decode_raw_page(&bytes, 5),
        Err(FormatError::BatPageIndexMismatch { page: 5, found: 2 })
    );
}

#[test]
fn bat_page_bad_entry_is_rejected() {
    let mut raw = [0u64; ENTRIES_PER_PAGE];
    raw[4] = 3;
    let bytes = encode_raw_page(1, raw);
    assert_eq!(
        BatPage::decode(&bytes, 1),
        Err(FormatError::BadEntry {
            cluster: 511 + 4,
            raw: 3
        })
    );
    assert!(BatPage::decode(&bytes[..4000], 1).is_err());
}

#[test]
fn entry_checker_rejections() {
    // Data area from cluster 1 to the end of a 4 MiB file.
    let mut checker = EntryChecker::new(MIB, 100, MIB, 4 * MIB);
    assert_eq!(checker.check(0, BatEntry::Allocated(1)), Ok(()));
    assert_eq!(checker.check(1, BatEntry::Zero), Ok(()));
    assert!(checker.is_used(1));
    assert_eq!(
        checker.check(2, BatEntry::Allocated(1)),
        Err(FormatError::SharedPhysicalCluster {
            cluster: 2,
            physical: 1
        })
    );
    assert_eq!(
        checker.check(3, BatEntry::Allocated(4)),
        Err(FormatError::EntryPastEof {
            cluster: 3,
            physical: 4,
            file_len: 4 * MIB
        })
    );
    assert_eq!(
        checker.check(4, BatEntry::Allocated(MAX_PHYSICAL_CLUSTER)),
        Err(FormatError::EntryPastEof {
            cluster: 4,
            physical: MAX_PHYSICAL_CLUSTER,
            file_len: 4 * MIB
        })
    );
    let mut checker = EntryChecker::new(MIB, 100, 2 * MIB, 4 * MIB);
    assert_eq!(
        checker.check(5, BatEntry::Allocated(1)),
        Err(FormatError::EntryInMetadata {
            cluster: 5,
            physical: 1,
            data_offset: 2 * MIB
        })
    );
    assert_eq!(
        checker.check(100, BatEntry::Zero),
        Err(FormatError::EntryPastVirtualSize {
            cluster: 100,
            clusters: 100
        })
    );
    assert!(!checker.is_used(1));
}

fn node(uuid: u128, parent: Option<u128>) -> Node {
    Node {
        uuid: Uuid::from_u128(uuid),
        parent: parent.map(Uuid::from_u128),
        file: format!("{uuid}.delta"),
        name: None,
        description: None,
        created: 0,
    }
}

fn descriptor(nodes: Vec<Node>, top: u128) -> Descriptor {
    Descriptor {
        version: DESCRIPTOR_VERSION,
        virtual_size: 1 << 30,
        cluster_size: MIB,
        top: Uuid::from_u128(top),
        deltas: nodes,
    }
}

#[test]
fn descriptor_round_trip_and_chain() {
    let mut nodes = vec![
        node(1, None),
        node(2, Some(1)),
        node(3, Some(2)),
        node(4, Some(1)),
    ];
    nodes[1].name = Some("before-upgrade".into());
    let d = descriptor(nodes, 3);
    let parsed = Descriptor::parse(&d.to_json()).unwrap();
    assert_eq!(parsed, d);
    let chain: Vec<u128> = d
        .chain(d.top)
        .unwrap()
        .iter()
        .map(|n| n.uuid.as_u128())
        .collect();
    assert_eq!(chain, vec![1, 2, 3]);
    assert_eq!(d.find("before-upgrade").unwrap().uuid, Uuid::from_u128(2));
    assert_eq!(
        d.find(&Uuid::from_u128(4).to_string()).unwrap().uuid,
        Uuid::from_u128(4)
    );
    assert!(d.find("missing").is_none());
    assert_eq!(d.children(Uuid::from_u128(1)).count(), 2);
}

#[test]
fn descriptor_rejections() {
    let cases: Vec<(Descriptor, &str)> = vec![
        (
            descriptor(vec![node(1, None), node(1, None)], 1),
            "DuplicateUuid",
        ),
        (
            descriptor(vec![node(1, None), node(2, Some(9))], 2),
            "MissingParent",
        ),
        (
            descriptor(vec![node(1, Some(2)), node(2, Some(1))], 1),
            "Cycle",
        ),
        (descriptor(vec![node(1, Some(1))], 1), "Cycle"),
        (descriptor(vec![node(1, None)], 5), "TopNotFound"),
        (
            {
                let mut d = descriptor(vec![node(1, None), node(2, Some(1))], 2);
                d.deltas[1].file = d.deltas[0].file.clone();
                d
            },
            "DuplicateFile",
        ),
        (
            {
                let mut d = descriptor(vec![node(1, None)], 1);
                d.deltas[0].file = "../etc/passwd".into();
                d
            },
            "BadFileName",
        ),
        (
            {
                let mut d = descriptor(vec![node(1, None), node(2, Some(1))], 2);
                d.deltas[0].name = Some("a".into());
                d.deltas[1].name = Some("a".into());
                d
            },
            "DuplicateName",
        ),
        (
            {
                let mut d = descriptor(vec![node(1, None)], 1);
                d.deltas[0].name = Some(Uuid::from_u128(7).to_string());
                d
            },
            "NameIsUuid",
        ),
        (
            {
                let mut d = descriptor(vec![node(1, None)], 1);
                d.virtual_size = 1000;
                d
            },
            "Geometry",
        ),
        (
            {
                let mut d = descriptor(vec![node(1, None)], 1);
                d.version = 2;
                d
            },
            "UnknownVersion",
        ),
    ];
    for (d, expected) in cases {
        let err = Descriptor::parse(&d.to_json()).unwrap_err();
        let name = format!("{err:?}");
        assert!(
            name.starts_with(expected),
            "expected {expected}, got {name}"
        );
    }
    assert!(matches!(
        Descriptor::parse(b"{\"version\": 1"),
        Err(DescriptorError::Json { .. })
    ));
}

#[test]
fn descriptor_chain_depth_is_bounded() {
    let count = u128::try_from(MAX_CHAIN_DEPTH).unwrap() + 1;
    let nodes: Vec<Node> = (1..=count)
        .map(|i| node(i, (i > 1).then_some(i - 1)))
        .collect();
    let d = descriptor(nodes, count);
    assert!(matches!(
        Descriptor::parse(&d.to_json()),
        Err(DescriptorError::ChainTooDeep { .. })
    ));
}

#[test]
fn entry_checker_huge_sparse_file() {
    // A file claiming 2^60 bytes must not make the checker allocate a
    // bitmap for all of it.
    let mut checker = EntryChecker::new(64 << 10, 1 << 32, 1 << 20, 1 << 60);
    assert_eq!(checker.check(0, BatEntry::Allocated(1 << 40)), Ok(()));
    assert_eq!(
        checker.check(1, BatEntry::Allocated(1 << 40)),
        Err(FormatError::SharedPhysicalCluster {
            cluster: 1,
            physical: 1 << 40
        })
    );
    assert!(checker.is_used(1 << 40));
}

#[test]
fn torn_bat_page_decodes_ignoring_crc() {
    let mut raw = [0u64; ENTRIES_PER_PAGE];
    raw[3] = BatEntry::Allocated(9).encode();
    let mut bytes = encode_raw_page(4, raw);
    bytes[4092] ^= 0xff;
    assert!(decode_raw_page(&bytes, 4).is_err());
    assert_eq!(crate::bat::decode_raw_page_ignoring_crc(&bytes, 4), Ok(raw));
    assert!(crate::bat::decode_raw_page_ignoring_crc(&bytes, 5).is_err());
    // The first write of page 4 torn before its trailer sector.
    bytes[3584..].fill(0);
    raw[448..].fill(0);
    assert_eq!(crate::bat::decode_raw_page_ignoring_crc(&bytes, 4), Ok(raw));
}
