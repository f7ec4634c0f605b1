//! Crash consistency on the fault-injecting `MemStorage`. Each operation
//! is cut after every possible number of storage calls and the unsynced
//! state is dropped. The reopened disk must contain the state before or
//! after the operation, and the state after once the operation succeeded.

use std::path::Path;

use lamina_engine::image::memfs::{CrashPoint, MemStorage, Pending, Writeback};
use lamina_engine::image::{Access, CreateOptions, Disk, ImageError};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const DIR: &str = "/vm/disk";

fn dir() -> &'static Path {
    Path::new(DIR)
}

fn create(storage: &MemStorage, size: u64) {
    let opts = CreateOptions {
        size,
        cluster_size: MIB,
    };
    Disk::create_with(storage.shared(), dir(), &opts).unwrap();
}

fn open(storage: &MemStorage, access: Access) -> Result<Disk, ImageError> {
    Disk::open_with(storage.shared(), dir(), access)
}

fn read(disk: &Disk, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    disk.read_at(&mut buf, offset).unwrap();
    buf
}

/// Which unsynced changes survive a simulated crash.
const WRITEBACK: [Writeback; 5] = [
    Writeback::NONE,
    Writeback::ALL,
    Writeback {
        name: "metadata only",
        keep: |_, change| is_metadata(change),
    },
    Writeback {
        name: "data only",
        keep: |_, change| !is_metadata(change),
    },
    // Metadata and the data of later clusters but not of the first one:
    // an entry for the first cluster then points inside the file at a
    // hole, which repair cannot tell from written data.
    Writeback {
        name: "metadata and late data",
        keep: |_, change| is_metadata(change) || offset_of(change) >= 2 * MIB,
    },
];

fn offset_of(change: &Pending) -> u64 {
    match change {
        Pending::Write { offset, .. } | Pending::Punch { offset, .. } => *offset,
        Pending::SetLen { len } => *len,
    }
}

/// Returns whether a change touches the header, the BAT or the
/// descriptor, which all lie below the first data cluster at 1 MiB here.
fn is_metadata(change: &Pending) -> bool {
    match change {
        Pending::Write { offset, .. } | Pending::Punch { offset, .. } => *offset < MIB,
        Pending::SetLen { .. } => false,
    }
}

/// Runs [`MemStorage::at_every_cut`] with every writeback pattern after
/// checking that `op` succeeds without faults.
fn at_every_cut(
    base: &MemStorage,
    op: impl Fn(&MemStorage) -> bool,
    verify: impl Fn(&MemStorage, bool, CrashPoint),
) -> u64 {
    assert!(op(&base.fork()), "the operation succeeds without faults");
    base.at_every_cut(&WRITEBACK, op, |crashed, done, point| {
        verify(crashed, *done, point)
    })
}

fn base_with(size: u64, writes: &[(u64, &[u8])]) -> MemStorage {
    let base = MemStorage::new();
    create(&base, size);
    let disk = open(&base, Access::ReadWrite).unwrap();
    for (offset, data) in writes {
        disk.write_at(data, *offset).unwrap();
    }
    disk.close().unwrap();
    base
}

#[test]
fn crash_during_write_and_flush() {
    let base = base_with(64 * MIB, &[(MIB, &[b'A'; 4096]), (3 * MIB, &[b'A'; 4096])]);
    let op = |s: &MemStorage| -> bool {
        let Ok(disk) = open(s, Access::ReadWrite) else {
            return false;
        };
        let wrote = disk.write_at(&[b'B'; 4096], MIB).is_ok()
            && disk.write_at(&[b'C'; 4096], 9 * MIB + 100).is_ok()
            && disk.write_at(&[b'D'; 10], 3 * MIB + 4090).is_ok();
        wrote && disk.flush().is_ok() && disk.close().is_ok()
    };
    let cuts = at_every_cut(&base, op, |crashed, done, cut| {
        let disk = open(crashed, Access::ReadWrite).unwrap_or_else(|e| panic!("cut {cut}: {e}"));
        let b = read(&disk, MIB, 4096);
        let c = read(&disk, 9 * MIB + 100, 4096);
        let d = read(&disk, 3 * MIB + 4090, 10);
        assert!(
            b == [b'A'; 4096] || b == [b'B'; 4096],
            "cut {cut}: cluster 1 torn"
        );
        assert!(
            c == [0; 4096] || c == [b'C'; 4096],
            "cut {cut}: cluster 9 torn"
        );
        let d_old = [&[b'A'; 6][..], &[0; 4][..]].concat();
        assert!(d == d_old || d == [b'D'; 10], "cut {cut}: cluster 3 torn");
        if done {
            assert_eq!(b, [b'B'; 4096], "cut {cut}");
            assert_eq!(c, [b'C'; 4096], "cut {cut}");
        }
        disk.close().unwrap();
        open(crashed, Access::ReadOnly).unwrap_or_else(|e| panic!("cut {cut} clean reopen: {e}"));
    });
    assert!(cuts > 5, "only {cuts} cut points");
}

#[test]
fn crash_during_copy_on_write() {
    let base = base_with(64 * MIB, &[(MIB, &[b'A'; 8192]), (3 * MIB, &[b'A'; 8192])]);
    let disk = open(&base, Access::ReadWrite).unwrap();
    disk.snapshot(None, None).unwrap();
    disk.close().unwrap();
    let op = |s: &MemStorage| -> bool {
        let Ok(disk) = open(s, Access::ReadWrite) else {
            return false;
        };
        let wrote = disk.write_at(&[b'B'; 4096], MIB).is_ok()
            && disk.write_at(&[b'C'; 4096], 3 * MIB + 4096).is_ok();
        wrote && disk.flush().is_ok() && disk.close().is_ok()
    };
    at_every_cut(&base, op, |crashed, done, cut| {
        let disk = open(crashed, Access::ReadWrite).unwrap_or_else(|e| panic!("cut {cut}: {e}"));
        let first = read(&disk, MIB, 8192);
        let second = read(&disk, 3 * MIB, 8192);
        let new_first = [&[b'B'; 4096][..], &[b'A'; 4096][..]].concat();
        let new_second = [&[b'A'; 4096][..], &[b'C'; 4096][..]].concat();
        assert!(
            first == [b'A'; 8192] || first == new_first,
            "cut {cut}: cluster 1"
        );
        assert!(
            second == [b'A'; 8192] || second == new_second,
            "cut {cut}: cluster 3"
        );
        if done {
            assert_eq!(first, new_first, "cut {cut}");
            assert_eq!(second, new_second, "cut {cut}");
        }
        disk.close().unwrap();
    });
}

#[test]
fn crash_during_snapshot() {
    let base = base_with(64 * MIB, &[(0, b"before")]);
    let op = |s: &MemStorage| -> bool {
        let Ok(disk) = open(s, Access::ReadWrite) else {
            return false;
        };
        let done = disk.snapshot(Some("s1"), None).is_ok();
        let wrote = done && disk.write_at(b"after!", 0).is_ok() && disk.flush().is_ok();
        wrote && disk.close().is_ok()
    };
    at_every_cut(&base, op, |crashed, done, cut| {
        let disk = open(crashed, Access::ReadWrite).unwrap_or_else(|e| panic!("cut {cut}: {e}"));
        let data = read(&disk, 0, 6);
        assert!(data == b"before" || data == b"after!", "cut {cut}");
        let depth = disk.info().chain_depth;
        assert!(depth == 1 || depth == 2, "cut {cut}: depth {depth}");
        if done {
            assert_eq!(depth, 2, "cut {cut}");
            assert_eq!(data, b"after!", "cut {cut}");
        }
        if depth == 2 {
            let view = Disk::open_snapshot_with(crashed.shared(), dir(), "s1").unwrap();
            assert_eq!(read(&view, 0, 6), b"before", "cut {cut}: snapshot content");
        }
        disk.close().unwrap();
    });
}

#[test]
fn crash_during_grow() {
    // Clusters right after the metadata are in the way of the larger BAT.
    let writes: Vec<(u64, &[u8])> = (0..6).map(|i| (i * MIB, &b"payload"[..])).collect();
    let base = base_with(GIB, &writes);
    let op = |s: &MemStorage| -> bool {
        let Ok(disk) = open(s, Access::ReadWrite) else {
            return false;
        };
        disk.grow(2 << 40).is_ok() && disk.close().is_ok()
    };
    at_every_cut(&base, op, |crashed, done, cut| {
        let disk = open(crashed, Access::ReadWrite).unwrap_or_else(|e| panic!("cut {cut}: {e}"));
        let size = disk.virtual_size();
        assert!(size == GIB || size == 2 << 40, "cut {cut}: size {size}");
        if done {
            assert_eq!(size, 2 << 40, "cut {cut}");
        }
        for i in 0..6 {
            assert_eq!(
                read(&disk, i * MIB, 7),
                b"payload",
                "cut {cut}: cluster {i}"
            );
        }
        disk.close().unwrap();
        let again = open(crashed, Access::ReadOnly).unwrap();
        assert_eq!(again.virtual_size(), size, "cut {cut}: size after reopen");
    });
}

#[test]
fn crash_during_discard_and_compact() {
    let base = base_with(64 * MIB, &[(0, &[7u8; 3 << 20]), (10 * MIB, b"tail")]);
    let op = |s: &MemStorage| -> bool {
        let Ok(disk) = open(s, Access::ReadWrite) else {
            return false;
        };
        let ok = disk.discard(MIB, MIB).is_ok()
            && disk.write_at(&vec![0u8; 1 << 20], 2 * MIB).is_ok()
            && disk.compact().is_ok();
        ok && disk.close().is_ok()
    };
    at_every_cut(&base, op, |crashed, done, cut| {
        let disk = open(crashed, Access::ReadWrite).unwrap_or_else(|e| panic!("cut {cut}: {e}"));
        assert_eq!(
            read(&disk, 0, 4096),
            vec![7u8; 4096],
            "cut {cut}: cluster 0"
        );
        assert_eq!(read(&disk, 10 * MIB, 4), b"tail", "cut {cut}: cluster 10");
        for cluster in [1u64, 2] {
            let data = read(&disk, cluster * MIB, 4096);
            let ok = data == [7u8; 4096] || data == [0u8; 4096];
            assert!(ok, "cut {cut}: cluster {cluster}");
            if done {
                assert_eq!(data, [0u8; 4096], "cut {cut}: cluster {cluster}");
            }
        }
        disk.close().unwrap();
    });
}

#[test]
fn crash_during_discard_then_reuse() {
    // Cluster 1 is discarded and, after a flush, its space goes to new
    // data for clusters 5 and 6. No cut may show that data at cluster 1.
    let base = base_with(64 * MIB, &[(0, &[7u8; 3 << 20])]);
    let op = |s: &MemStorage| -> bool {
        let Ok(disk) = open(s, Access::ReadWrite) else {
            return false;
        };
        let ok = disk.discard(MIB, MIB).is_ok()
            && disk.write_at(&[9u8; 1 << 20], 5 * MIB).is_ok()
            && disk.flush().is_ok()
            && disk.write_at(&[8u8; 1 << 20], 6 * MIB).is_ok()
            && disk.flush().is_ok();
        ok && disk.close().is_ok()
    };
    at_every_cut(&base, op, |crashed, done, cut| {
        let disk = open(crashed, Access::ReadWrite).unwrap_or_else(|e| panic!("cut {cut}: {e}"));
        let first = read(&disk, MIB, 4096);
        assert!(
            first == [7u8; 4096] || first == [0u8; 4096],
            "cut {cut}: discarded cluster shows {:?}",
            &first[..4]
        );
        assert_eq!(
            read(&disk, 0, 4096),
            vec![7u8; 4096],
            "cut {cut}: cluster 0"
        );
        assert_eq!(
            read(&disk, 2 * MIB, 4096),
            vec![7u8; 4096],
            "cut {cut}: cluster 2"
        );
        let fifth = read(&disk, 5 * MIB, 4096);
        assert!(
            fifth == [9u8; 4096] || fifth == [0u8; 4096],
            "cut {cut}: cluster 5"
        );
        let sixth = read(&disk, 6 * MIB, 4096);
        assert!(
            sixth == [8u8; 4096] || sixth == [0u8; 4096],
            "cut {cut}: cluster 6"
        );
        if done {
            assert_eq!(first, [0u8; 4096], "cut {cut}: cluster 1 after");
            assert_eq!(fifth, [9u8; 4096], "cut {cut}: cluster 5 after");
            assert_eq!(sixth, [8u8; 4096], "cut {cut}: cluster 6 after");
        }
        disk.close().unwrap();
    });
}

#[test]
fn crash_during_create() {
    let base = MemStorage::new();
    let op = |s: &MemStorage| -> bool {
        let opts = CreateOptions {
            size: 64 * MIB,
            cluster_size: MIB,
        };
        Disk::create_with(s.shared(), dir(), &opts).is_ok()
    };
    at_every_cut(&base, op, |crashed, done, cut| {
        match open(crashed, Access::ReadWrite) {
            Ok(disk) => assert_eq!(disk.virtual_size(), 64 * MIB, "cut {cut}"),
            Err(e) => {
                assert!(!done, "cut {cut}: created disk does not open: {e}");
                assert!(
                    matches!(e, ImageError::DiskNotFound { .. }),
                    "cut {cut}: {e}"
                );
            }
        }
    });
}

#[test]
fn memstorage_drops_unsynced_state() {
    use lamina_engine::image::io::{OpenMode, Storage};
    let storage = MemStorage::new();
    let d = Path::new("/d");
    storage.create_dir_all(d).unwrap();
    storage.sync_dir(Path::new("/")).unwrap();
    let synced = storage
        .open(&d.join("synced"), OpenMode::CreateNew)
        .unwrap();
    synced.write_at(b"durable", 0).unwrap();
    synced.sync_data().unwrap();
    storage.sync_dir(d).unwrap();
    synced.write_at(b"lost", 0).unwrap();
    let unsynced_name = storage.open(&d.join("new"), OpenMode::CreateNew).unwrap();
    unsynced_name.write_at(b"data", 0).unwrap();
    unsynced_name.sync_data().unwrap();
    storage
        .rename(&d.join("synced"), &d.join("renamed"))
        .unwrap();

    let crashed = storage.crash();
    assert_eq!(crashed.read_file(&d.join("synced")).unwrap(), b"durable");
    assert!(
        crashed.read_file(&d.join("renamed")).is_none(),
        "rename not synced"
    );
    assert!(
        crashed.read_file(&d.join("new")).is_none(),
        "entry not synced"
    );

    storage.fail_after(1);
    synced.write_at(b"x", 0).unwrap();
    assert!(synced.sync_data().is_err());
    assert!(storage.is_stopped());
    let mut buf = [0u8; 1];
    assert!(
        synced.read_at(&mut buf, 0).is_err(),
        "reads fail once stopped"
    );
}
