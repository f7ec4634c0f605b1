//! Opening disks: locking, missing and invalid input, snapshot lookup,
//! in-use repair, and corrupt metadata that must fail without a panic.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use lamina_engine::image::memfs::MemStorage;
use lamina_engine::image::{Access, CreateOptions, Disk, resolve_snapshot};
use lamina_engine::{ErrorKind, HasKind};
use lamina_format::{BatEntry, Header};

const MIB: u64 = 1 << 20;

fn new_disk(tmp: &Path) -> PathBuf {
    let dir = tmp.join("disk");
    let opts = CreateOptions {
        size: 64 * MIB,
        cluster_size: MIB,
    };
    Disk::create(&dir, &opts).unwrap();
    dir
}

fn kind<T>(result: Result<T, lamina_engine::image::ImageError>) -> ErrorKind {
    match result {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.kind(),
    }
}

#[test]
fn second_writer_is_busy() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = new_disk(tmp.path());
    let disk = Disk::open(&dir, Access::ReadWrite).unwrap();
    assert_eq!(kind(Disk::open(&dir, Access::ReadWrite)), ErrorKind::Busy);
    assert_eq!(kind(Disk::open(&dir, Access::ReadOnly)), ErrorKind::Busy);

    disk.write_at(b"old", 0).unwrap();
    let snap = disk.snapshot(None, None).unwrap();
    disk.write_at(b"new", 0).unwrap();
    let view = Disk::open_snapshot(&dir, &snap.to_string()).unwrap();
    let mut buf = [0u8; 3];
    view.read_at(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"old");
    assert!(view.write_at(b"x", 0).is_err());
    view.close().unwrap();

    disk.close().unwrap();
    let reader = Disk::open(&dir, Access::ReadOnly).unwrap();
    let second = Disk::open(&dir, Access::ReadOnly).unwrap();
    assert_eq!(kind(Disk::open(&dir, Access::ReadWrite)), ErrorKind::Busy);
    drop((reader, second));
    Disk::open(&dir, Access::ReadWrite)
        .unwrap()
        .close()
        .unwrap();
}

#[test]
fn create_rejects_bad_input_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("disk");
    for (size, cluster_size) in [
        (0, MIB),
        (MIB + 1, MIB),
        (64 * MIB, 3 * MIB),
        (64 * MIB, 4096),
    ] {
        let opts = CreateOptions { size, cluster_size };
        assert_eq!(kind(Disk::create(&dir, &opts)), ErrorKind::InvalidArgument);
        assert!(
            !dir.exists(),
            "size {size} cluster {cluster_size} left {dir:?}"
        );
    }
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("other"), b"x").unwrap();
    let opts = CreateOptions {
        size: 64 * MIB,
        ..CreateOptions::default()
    };
    assert_eq!(kind(Disk::create(&dir, &opts)), ErrorKind::AlreadyExists);
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);

    // An existing empty directory is fine, and the default cluster is 1 MiB.
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    Disk::create(&empty, &opts).unwrap();
    assert_eq!(
        Disk::open(&empty, Access::ReadOnly).unwrap().cluster_size(),
        MIB
    );
}

#[test]
fn missing_disk_and_snapshot_are_not_found() {
    let tmp = tempfile::tempdir().unwrap();
    assert_eq!(
        kind(Disk::open(&tmp.path().join("none"), Access::ReadOnly)),
        ErrorKind::NotFound
    );
    let dir = new_disk(tmp.path());
    assert_eq!(kind(resolve_snapshot(&dir, "nope")), ErrorKind::NotFound);
    assert_eq!(kind(Disk::open_snapshot(&dir, "nope")), ErrorKind::NotFound);
    let unknown = uuid::Uuid::from_u128(5).to_string();
    assert_eq!(kind(resolve_snapshot(&dir, &unknown)), ErrorKind::NotFound);
}

#[test]
fn snapshot_names_resolve_and_must_be_unique() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = new_disk(tmp.path());
    let disk = Disk::open(&dir, Access::ReadWrite).unwrap();
    let first = disk.snapshot(Some("first"), Some("empty disk")).unwrap();
    assert_eq!(
        kind(disk.snapshot(Some("first"), None)),
        ErrorKind::InvalidArgument
    );
    let as_uuid = uuid::Uuid::from_u128(9).to_string();
    assert_eq!(
        kind(disk.snapshot(Some(&as_uuid), None)),
        ErrorKind::InvalidArgument
    );
    assert_eq!(
        kind(disk.snapshot(Some(""), None)),
        ErrorKind::InvalidArgument
    );
    let second = disk.snapshot(None, None).unwrap();

    assert_eq!(resolve_snapshot(&dir, "first").unwrap(), first);
    assert_eq!(resolve_snapshot(&dir, &second.to_string()).unwrap(), second);
    let list = disk.snapshots();
    assert_eq!(list.len(), 3);
    let entry = list.iter().find(|s| s.uuid == first).unwrap();
    assert_eq!(entry.name.as_deref(), Some("first"));
    assert_eq!(entry.description.as_deref(), Some("empty disk"));
    assert!(!entry.current);
    let current = list.iter().find(|s| s.current).unwrap();
    assert_eq!(current.parent, Some(second));
    assert_eq!(disk.info().top, current.uuid);
    let json = serde_json::to_string(&disk.info()).unwrap();
    assert!(json.contains("\"chain_depth\":3"), "{json}");
}

/// Rewrites a delta header with a change, keeping its CRC valid.
fn edit_header(path: &Path, edit: impl FnOnce(&mut Header)) {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut block = vec![0u8; 4096];
    file.read_exact_at(&mut block, 0).unwrap();
    let mut header = Header::decode(&block).unwrap();
    edit(&mut header);
    file.write_all_at(&header.encode(), 0).unwrap();
}

/// Sets one BAT entry of a delta file, keeping the page CRC valid.
fn set_entry(path: &Path, cluster: u64, entry: BatEntry) {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let (page, slot) = lamina_format::bat::page_and_slot(cluster);
    let offset = 4096 + page * 4096;
    let mut bytes = vec![0u8; 4096];
    file.read_exact_at(&mut bytes, offset).unwrap();
    let mut raw = lamina_format::bat::decode_raw_page(&bytes, page).unwrap();
    raw[slot] = entry.encode();
    file.write_all_at(&lamina_format::bat::encode_raw_page(page, raw), offset)
        .unwrap();
}

#[test]
fn in_use_top_is_repaired_on_open() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = new_disk(tmp.path());
    let disk = Disk::open(&dir, Access::ReadWrite).unwrap();
    disk.write_at(b"kept", 0).unwrap();
    disk.write_at(b"also kept", 3 * MIB).unwrap();
    let delta = dir.join(&disk.info().deltas[0].file);
    disk.close().unwrap();

    // What a crash can leave: the flag set, a half-written cluster at the
    // tail, an entry whose cluster the file no longer has, and a BAT page
    // whose write tore (here: its CRC no longer matches).
    let len = std::fs::metadata(&delta).unwrap().len();
    edit_header(&delta, |h| h.in_use = true);
    set_entry(&delta, 7, BatEntry::Allocated(len / MIB + 5));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&delta)
        .unwrap();
    file.set_len(len + 4096).unwrap();
    let mut crc = [0u8; 1];
    file.read_exact_at(&mut crc, 4096 + 4092).unwrap();
    file.write_all_at(&[crc[0] ^ 0x40], 4096 + 4092).unwrap();
    drop(file);

    // A non-writer only ignores the bad entry and the bad CRC.
    let reader = Disk::open(&dir, Access::ReadOnly).unwrap();
    let mut buf = [0xffu8; 4];
    reader.read_at(&mut buf, 7 * MIB).unwrap();
    assert_eq!(buf, [0; 4]);
    drop(reader);

    let disk = Disk::open(&dir, Access::ReadWrite).unwrap();
    assert_eq!(std::fs::metadata(&delta).unwrap().len(), len, "tail cut");
    disk.read_at(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"kept");
    disk.read_at(&mut buf, 7 * MIB).unwrap();
    assert_eq!(buf, [0; 4]);
    assert_eq!(disk.info().deltas[0].allocated_clusters, 2);
    disk.close().unwrap();

    // Repaired on disk: the flag is clear and the CRC valid again.
    let mut block = vec![0u8; 8192];
    std::fs::File::open(&delta)
        .unwrap()
        .read_exact_at(&mut block, 0)
        .unwrap();
    assert!(!Header::decode(&block).unwrap().in_use);
    assert!(lamina_format::bat::decode_raw_page(&block[4096..], 0).is_ok());
    let disk = Disk::open(&dir, Access::ReadOnly).unwrap();
    let mut also = [0u8; 9];
    disk.read_at(&mut also, 3 * MIB).unwrap();
    assert_eq!(&also, b"also kept");
}

#[test]
fn clean_delta_with_entry_past_eof_is_corrupt() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = new_disk(tmp.path());
    let disk = Disk::open(&dir, Access::ReadWrite).unwrap();
    disk.write_at(b"x", 0).unwrap();
    let delta = dir.join(&disk.info().deltas[0].file);
    disk.close().unwrap();

    set_entry(&delta, 4, BatEntry::Allocated(100));
    assert_eq!(
        kind(Disk::open(&dir, Access::ReadWrite)),
        ErrorKind::Corrupt
    );
    set_entry(&delta, 4, BatEntry::Allocated(1));
    assert_eq!(kind(Disk::open(&dir, Access::ReadOnly)), ErrorKind::Corrupt);
    set_entry(&delta, 4, BatEntry::Allocated(0));
    assert_eq!(kind(Disk::open(&dir, Access::ReadOnly)), ErrorKind::Corrupt);
    set_entry(&delta, 4, BatEntry::Absent);
    Disk::open(&dir, Access::ReadOnly).unwrap();
}

#[test]
fn delta_shorter_than_its_bat_is_corrupt() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = new_disk(tmp.path());
    let disk = Disk::open(&dir, Access::ReadOnly).unwrap();
    let delta = dir.join(&disk.info().deltas[0].file);
    drop(disk);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&delta)
        .unwrap();
    file.set_len(4096).unwrap();
    assert_eq!(kind(Disk::open(&dir, Access::ReadOnly)), ErrorKind::Corrupt);
    file.set_len(100).unwrap();
    assert_eq!(kind(Disk::open(&dir, Access::ReadOnly)), ErrorKind::Corrupt);
    file.set_len(0).unwrap();
    assert_eq!(
        kind(Disk::open(&dir, Access::ReadWrite)),
        ErrorKind::Corrupt
    );
}

#[test]
fn chain_with_wrong_parent_is_corrupt() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = new_disk(tmp.path());
    let disk = Disk::open(&dir, Access::ReadWrite).unwrap();
    disk.snapshot(None, None).unwrap();
    let top = dir.join(&disk.info().deltas[1].file);
    disk.close().unwrap();
    edit_header(&top, |h| h.parent = Some(uuid::Uuid::from_u128(77)));
    assert_eq!(kind(Disk::open(&dir, Access::ReadOnly)), ErrorKind::Corrupt);
}

#[test]
fn chain_with_larger_parent_is_corrupt() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = new_disk(tmp.path());
    let disk = Disk::open(&dir, Access::ReadWrite).unwrap();
    disk.snapshot(None, None).unwrap();
    let base = dir.join(&disk.info().deltas[0].file);
    disk.close().unwrap();
    edit_header(&base, |h| {
        h.geometry = lamina_format::Geometry::new(MIB, 128 * MIB).unwrap();
    });
    let err = Disk::open(&dir, Access::ReadOnly).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt);
    assert!(
        format!("{:?}", err).contains("ChainVirtualSizeMismatch"),
        "{err:?}"
    );
}

/// Flips every byte of the header record and of the first BAT page, one
/// at a time, and expects each open to fail as corrupt.
#[test]
fn every_corrupt_metadata_byte_fails_open() {
    let storage = MemStorage::new();
    let dir = Path::new("/disk");
    let opts = CreateOptions {
        size: 64 * MIB,
        cluster_size: MIB,
    };
    Disk::create_with(storage.shared(), dir, &opts).unwrap();
    let disk = Disk::open_with(storage.shared(), dir, Access::ReadWrite).unwrap();
    for i in 0..10u64 {
        disk.write_at(&[1u8; 100], i * 3 * MIB).unwrap();
    }
    let delta = dir.join(&disk.info().deltas[0].file);
    disk.close().unwrap();

    let original = storage.read_file(&delta).unwrap();
    for offset in (0..128u64).chain(4096..8192) {
        let copy = storage.fork();
        let byte = original[usize::try_from(offset).unwrap()] ^ 0x5a;
        copy.corrupt(&delta, offset, &[byte]).unwrap();
        for access in [Access::ReadOnly, Access::ReadWrite] {
            let result = Disk::open_with(copy.shared(), dir, access);
            assert_eq!(kind(result), ErrorKind::Corrupt, "byte {offset} {access:?}");
        }
    }
}

#[test]
fn corrupt_descriptor_fails_open() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = new_disk(tmp.path());
    std::fs::write(dir.join("disk.json"), b"{\"version\": 1,").unwrap();
    assert_eq!(kind(Disk::open(&dir, Access::ReadOnly)), ErrorKind::Corrupt);
    std::fs::write(dir.join("disk.json"), b"{\"version\": 9}").unwrap();
    assert_ne!(kind(Disk::open(&dir, Access::ReadOnly)), ErrorKind::Io);
}
