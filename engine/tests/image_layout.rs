//! Layout-changing cases on real sparse files: grow with BAT relocation,
//! disks past 4 GiB, a mostly empty 16 TiB disk, compact.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use lamina_engine::image::{Access, CreateOptions, Disk};
use lamina_engine::{ErrorKind, HasKind};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const TIB: u64 = 1 << 40;

fn new_disk(tmp: &Path, size: u64, cluster_size: u64) -> PathBuf {
    let dir = tmp.join("disk");
    Disk::create(&dir, &CreateOptions { size, cluster_size }).unwrap();
    dir
}

fn stamp(offset: u64) -> Vec<u8> {
    format!("lamina block at {offset:#x}").into_bytes()
}

fn assert_stamp(disk: &Disk, offset: u64) {
    let expected = stamp(offset);
    let mut got = vec![0u8; expected.len()];
    disk.read_at(&mut got, offset).unwrap();
    assert_eq!(got, expected, "data at {offset:#x}");
}

fn assert_zero(disk: &Disk, offset: u64, len: usize) {
    let mut got = vec![0xffu8; len];
    disk.read_at(&mut got, offset).unwrap();
    assert!(got.iter().all(|b| *b == 0), "zeros at {offset:#x}");
}

fn host_bytes(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().blocks() * 512
}

#[test]
fn grow_1gib_to_2tib_keeps_data() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = new_disk(tmp.path(), GIB, MIB);
    let disk = Disk::open(&dir, Access::ReadWrite).unwrap();
    // The first 20 clusters land right after the 1 MiB of metadata, where
    // the BAT of a 2 TiB disk (about 16 MiB) has to grow.
    let offsets: Vec<u64> = (0..20)
        .map(|i| i * 7 * MIB + 123)
        .chain([GIB - 64])
        .collect();
    for offset in &offsets {
        disk.write_at(&stamp(*offset), *offset).unwrap();
    }
    disk.snapshot(Some("small"), None).unwrap();
    disk.write_at(b"top", 5).unwrap();

    disk.grow(2 * TIB).unwrap();
    assert_eq!(disk.virtual_size(), 2 * TIB);
    for offset in &offsets[1..] {
        assert_stamp(&disk, *offset);
    }
    disk.write_at(&stamp(2 * TIB - 100), 2 * TIB - 100).unwrap();
    assert_zero(&disk, GIB, 4096);
    disk.close().unwrap();

    let disk = Disk::open(&dir, Access::ReadWrite).unwrap();
    assert_eq!(disk.virtual_size(), 2 * TIB);
    for offset in &offsets[1..] {
        assert_stamp(&disk, *offset);
    }
    assert_stamp(&disk, 2 * TIB - 100);
    let mut head = [0u8; 3];
    disk.read_at(&mut head, 5).unwrap();
    assert_eq!(&head, b"top");

    // A second grow moves the clusters allocated since the first one.
    disk.grow(4 * TIB).unwrap();
    assert_stamp(&disk, 2 * TIB - 100);
    disk.close().unwrap();

    let view = Disk::open_snapshot(&dir, "small").unwrap();
    assert_eq!(view.virtual_size(), GIB);
    assert_stamp(&view, 123);
}

#[test]
fn grow_moves_top_clusters_out_of_the_bat() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = new_disk(tmp.path(), GIB, MIB);
    let disk = Disk::open(&dir, Access::ReadWrite).unwrap();
    let offsets: Vec<u64> = (0..40).map(|i| i * 13 * MIB + 1).collect();
    for offset in &offsets {
        disk.write_at(&stamp(*offset), *offset).unwrap();
    }
    disk.flush().unwrap();
    disk.grow(2 * TIB).unwrap();
    for offset in &offsets {
        assert_stamp(&disk, *offset);
    }
    assert_eq!(disk.info().deltas[0].allocated_clusters, 40);
    disk.close().unwrap();

    let disk = Disk::open(&dir, Access::ReadOnly).unwrap();
    for offset in &offsets {
        assert_stamp(&disk, *offset);
    }
}

#[test]
fn grow_rejects_shrink_and_bad_sizes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = new_disk(tmp.path(), GIB, MIB);
    let disk = Disk::open(&dir, Access::ReadWrite).unwrap();
    assert_eq!(
        disk.grow(GIB / 2).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    assert_eq!(
        disk.grow(GIB + 1).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    assert_eq!(
        disk.grow(1 << 60).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    disk.grow(GIB).unwrap();
    assert_eq!(disk.virtual_size(), GIB);
}

#[test]
fn disk_past_4gib_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = new_disk(tmp.path(), 8 * GIB, MIB);
    let offsets = [
        4 * GIB - 10,
        4 * GIB + MIB / 2,
        5 * GIB + 17,
        8 * GIB - 4096,
    ];
    let disk = Disk::open(&dir, Access::ReadWrite).unwrap();
    for offset in offsets {
        disk.write_at(&stamp(offset), offset).unwrap();
    }
    disk.snapshot(None, None).unwrap();
    disk.write_at(b"cow", 5 * GIB + 3).unwrap();
    disk.close().unwrap();

    let disk = Disk::open(&dir, Access::ReadOnly).unwrap();
    for offset in offsets {
        assert_stamp(&disk, offset);
    }
    let mut cow = [0u8; 3];
    disk.read_at(&mut cow, 5 * GIB + 3).unwrap();
    assert_eq!(&cow, b"cow");
    assert_zero(&disk, 6 * GIB, 4096);
    assert_eq!(disk.info().deltas[0].allocated_clusters, 4);
}

#[test]
fn empty_16tib_disk_opens_cheaply() {
    for cluster_size in [MIB, 64 << 10] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = new_disk(tmp.path(), 16 * TIB, cluster_size);
        let offsets = [0, 5 * TIB + 3, 16 * TIB - 4096];
        let disk = Disk::open(&dir, Access::ReadWrite).unwrap();
        for offset in offsets {
            disk.write_at(&stamp(offset), offset).unwrap();
        }
        disk.close().unwrap();

        let disk = Disk::open(&dir, Access::ReadWrite).unwrap();
        let info = disk.info();
        assert_eq!(info.virtual_size, 16 * TIB);
        assert_eq!(info.map_pages, 3, "cluster size {cluster_size}");
        for offset in offsets {
            assert_stamp(&disk, offset);
        }
        let delta = dir.join(&info.deltas[0].file);
        assert!(
            host_bytes(&delta) < 4 * cluster_size + MIB,
            "the host file holds only data and three BAT pages"
        );
        disk.close().unwrap();
    }
}

#[test]
fn compact_returns_zero_clusters() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = new_disk(tmp.path(), 64 * MIB, MIB);
    let disk = Disk::open(&dir, Access::ReadWrite).unwrap();
    disk.write_at(&vec![0u8; 8 << 20], 0).unwrap();
    disk.write_at(b"keep", 10 * MIB).unwrap();
    disk.flush().unwrap();
    assert_eq!(disk.info().deltas[0].allocated_clusters, 9);

    let returned = disk.compact().unwrap();
    // The host's block accounting (metadata blocks, extent rounding)
    // differs from the 8 MiB freed by a few blocks.
    assert!(returned >= 7 * MIB, "returned {returned} bytes");
    assert_eq!(disk.info().deltas[0].allocated_clusters, 1);
    let mut keep = [0u8; 4];
    disk.read_at(&mut keep, 10 * MIB).unwrap();
    assert_eq!(&keep, b"keep");
    disk.write_at(b"after", 20 * MIB).unwrap();
    disk.close().unwrap();

    let disk = Disk::open(&dir, Access::ReadOnly).unwrap();
    disk.read_at(&mut keep, 10 * MIB).unwrap();
    assert_eq!(&keep, b"keep");
    let mut after = [0u8; 5];
    disk.read_at(&mut after, 20 * MIB).unwrap();
    assert_eq!(&after, b"after");
    assert_zero(&disk, 0, 8 << 20);
}
