//! A delta file by itself, as offline operations use it: create, append
//! clusters, edit the BAT, reload.

use std::path::Path;

use lamina_engine::image::delta::{DeltaFile, PastEof};
use lamina_engine::image::io::{OpenMode, Storage};
use lamina_engine::image::memfs::MemStorage;
use lamina_format::{BatEntry, Geometry, Header};
use uuid::Uuid;

const MIB: u64 = 1 << 20;

#[test]
fn delta_bat_table_round_trip() {
    let storage = MemStorage::new();
    storage.create_dir_all(Path::new("/d")).unwrap();
    let path = Path::new("/d/x.delta");
    let geometry = Geometry::new(MIB, 4 << 30).unwrap();
    let header = Header::new(geometry, Uuid::from_u128(1), None);
    let delta = DeltaFile::create(&storage, path, header).unwrap();
    assert_eq!(delta.next_free_cluster().unwrap(), 1);

    let (mut table, report) = delta.load_bat(PastEof::Reject).unwrap();
    assert_eq!(report.pages_read, 0, "a new BAT is all holes");
    for (i, cluster) in [0u64, 600, 4095].into_iter().enumerate() {
        let physical = delta.next_free_cluster().unwrap();
        delta
            .write_cluster(physical, &vec![u8::try_from(i).unwrap() + 1; 1 << 20])
            .unwrap();
        table.set(cluster, BatEntry::Allocated(physical));
    }
    table.set(7, BatEntry::Zero);
    delta.sync().unwrap();
    table.write_dirty(&delta).unwrap();
    delta.sync().unwrap();

    let reopened = DeltaFile::open(&storage, path, OpenMode::Read).unwrap();
    let (loaded, report) = reopened.load_bat(PastEof::Reject).unwrap();
    assert_eq!(report.pages_read, 3);
    assert_eq!(report.allocated, 3);
    assert_eq!(report.data_end, 4 * MIB);
    assert_eq!(loaded.allocated(), 3);
    assert_eq!(loaded.get(7), BatEntry::Zero);
    assert_eq!(loaded.get(8), BatEntry::Absent);
    let entries: Vec<_> = loaded.entries().collect();
    assert_eq!(
        entries,
        vec![
            (0, BatEntry::Allocated(1)),
            (7, BatEntry::Zero),
            (600, BatEntry::Allocated(2)),
            (4095, BatEntry::Allocated(3))
        ]
    );
    let mut buf = vec![0u8; 16];
    reopened.read_cluster(3, &mut buf).unwrap();
    assert_eq!(buf, [3u8; 16]);
}

#[test]
fn delta_open_rejects_short_file() {
    let storage = MemStorage::new();
    storage.create_dir_all(Path::new("/d")).unwrap();
    let path = Path::new("/d/short.delta");
    let file = storage.open(path, OpenMode::CreateNew).unwrap();
    file.write_at(b"LAMDELTA", 0).unwrap();
    let err = DeltaFile::open(&storage, path, OpenMode::Read).unwrap_err();
    assert!(err.to_string().contains("invalid"), "{err}");
}
