//! Offline operations on whole disks: snapshot delete, switch and merge
//! over a snapshot tree, shrink, check and repair, corruption of every
//! header and BAT byte, and raw import and export.

use std::path::Path;
use std::sync::Arc;

use lamina_engine::error::{ErrorKind, HasKind};
use lamina_engine::image::check::{self, CheckMode, CheckResult, Problem, Severity};
use lamina_engine::image::convert;
use lamina_engine::image::io::Storage;
use lamina_engine::image::memfs::MemStorage;
use lamina_engine::image::ops::{self, MergeScope, OpsError};
use lamina_engine::image::{Access, CreateOptions, Disk};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const CLUSTER: u64 = 64 * KIB;
const DIR: &str = "/d/disk";

fn dir() -> &'static Path {
    Path::new(DIR)
}

fn new_disk(size: u64) -> (MemStorage, Arc<dyn Storage>) {
    let mem = MemStorage::new();
    let storage = mem.shared();
    let opts = CreateOptions {
        size,
        cluster_size: CLUSTER,
    };
    Disk::create_with(storage.clone(), dir(), &opts).unwrap();
    (mem, storage)
}

fn open(storage: &Arc<dyn Storage>) -> Disk {
    Disk::open_with(storage.clone(), dir(), Access::ReadWrite).unwrap()
}

fn write(storage: &Arc<dyn Storage>, offset: u64, data: &[u8]) {
    let disk = open(storage);
    disk.write_at(data, offset).unwrap();
    disk.close().unwrap();
}

fn snapshot(storage: &Arc<dyn Storage>, name: &str) -> String {
    let disk = open(storage);
    let uuid = disk.snapshot(Some(name), None).unwrap();
    disk.close().unwrap();
    uuid.to_string()
}

fn read_all(disk: &Disk) -> Vec<u8> {
    let mut buf = vec![0u8; usize::try_from(disk.virtual_size()).unwrap()];
    disk.read_at(&mut buf, 0).unwrap();
    buf
}

fn current(storage: &Arc<dyn Storage>) -> Vec<u8> {
    let disk = Disk::open_with(storage.clone(), dir(), Access::ReadOnly).unwrap();
    read_all(&disk)
}

fn snapshot_content(storage: &Arc<dyn Storage>, id: &str) -> Vec<u8> {
    let disk = Disk::open_snapshot_with(storage.clone(), dir(), id).unwrap();
    read_all(&disk)
}

fn depth(storage: &Arc<dyn Storage>) -> usize {
    let disk = Disk::open_with(storage.clone(), dir(), Access::ReadOnly).unwrap();
    disk.info().chain_depth
}

fn names(storage: &Arc<dyn Storage>) -> Vec<Option<String>> {
    let disk = Disk::open_with(storage.clone(), dir(), Access::ReadOnly).unwrap();
    let mut names: Vec<_> = disk.snapshots().into_iter().map(|s| s.name).collect();
    names.sort();
    names
}

fn assert_clean(storage: &Arc<dyn Storage>) {
    let report = check::check_with(storage.clone(), dir(), CheckMode::Report).unwrap();
    let noisy: Vec<_> = report
        .findings
        .iter()
        .filter(|f| f.severity > Severity::Info)
        .collect();
    assert!(noisy.is_empty(), "findings: {noisy:#?}");
    assert_eq!(report.result, CheckResult::Clean);
}

fn fill(byte: u8, len: u64) -> Vec<u8> {
    vec![byte; usize::try_from(len).unwrap()]
}

#[test]
fn delete_middle_snapshot_keeps_content() {
    let (_mem, s) = new_disk(MIB);
    write(&s, 0, &fill(1, 3 * CLUSTER));
    let s1 = snapshot(&s, "s1");
    write(&s, CLUSTER, &fill(2, 100));
    let s2 = snapshot(&s, "s2");
    write(&s, 2 * CLUSTER + 7, &fill(3, 100));
    let (before, s2_before) = (current(&s), snapshot_content(&s, &s2));

    ops::snapshot_delete_with(s.clone(), dir(), "s1").unwrap();

    assert_eq!(current(&s), before);
    assert_eq!(snapshot_content(&s, &s2), s2_before);
    assert_eq!(depth(&s), 2);
    let missing = Disk::open_snapshot_with(s.clone(), dir(), &s1).unwrap_err();
    assert_eq!(missing.kind(), ErrorKind::NotFound);
    assert_clean(&s);
}

#[test]
fn delete_snapshot_with_two_children() {
    let (_mem, s) = new_disk(MIB);
    write(&s, 0, &fill(1, 2 * CLUSTER));
    snapshot(&s, "root");
    write(&s, 0, &fill(2, 10));
    let left = snapshot(&s, "left");
    ops::snapshot_switch_with(s.clone(), dir(), "root").unwrap();
    write(&s, CLUSTER, &fill(3, 10));
    let (right, left_before) = (current(&s), snapshot_content(&s, &left));
    assert_eq!(left_before[..10], fill(2, 10)[..]);
    assert_eq!(right[..10], fill(1, 10)[..], "the branch starts from root");

    ops::snapshot_delete_with(s.clone(), dir(), "root").unwrap();

    assert_eq!(current(&s), right);
    assert_eq!(snapshot_content(&s, "left"), left_before);
    assert_eq!(names(&s).len(), 2, "left and the top remain");
    assert_eq!(depth(&s), 1, "the top became a base");
    assert_clean(&s);
}

#[test]
fn delete_base_and_leaf_snapshots() {
    let (_mem, s) = new_disk(MIB);
    write(&s, 0, &fill(1, CLUSTER));
    snapshot(&s, "base");
    write(&s, CLUSTER, &fill(2, CLUSTER));
    snapshot(&s, "leaf");
    ops::snapshot_switch_with(s.clone(), dir(), "base").unwrap();
    let before = current(&s);

    ops::snapshot_delete_with(s.clone(), dir(), "leaf").unwrap();
    assert_eq!(current(&s), before);
    ops::snapshot_delete_with(s.clone(), dir(), "base").unwrap();
    assert_eq!(current(&s), before);
    assert_eq!(names(&s), vec![None]);
    assert_clean(&s);
}

#[test]
fn delete_current_top_is_rejected() {
    let (_mem, s) = new_disk(MIB);
    snapshot(&s, "s1");
    let top = Disk::open_with(s.clone(), dir(), Access::ReadOnly)
        .unwrap()
        .info()
        .top;
    let err = ops::snapshot_delete_with(s.clone(), dir(), &top.to_string()).unwrap_err();
    assert!(matches!(err, OpsError::CurrentTop { .. }), "{err}");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    let err = ops::snapshot_delete_with(s.clone(), dir(), "nope").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

#[test]
fn switch_discards_top_and_branches() {
    let (mem, s) = new_disk(MIB);
    write(&s, 0, b"first");
    snapshot(&s, "s1");
    write(&s, 0, b"second");
    let old_files = mem.list(dir()).len();

    let top = ops::snapshot_switch_with(s.clone(), dir(), "s1").unwrap();
    let disk = open(&s);
    assert_eq!(disk.info().top, top);
    let mut buf = [0u8; 6];
    disk.read_at(&mut buf, 0).unwrap();
    assert_eq!(&buf[..5], b"first");
    disk.write_at(b"branch", 0).unwrap();
    disk.close().unwrap();

    assert_eq!(&snapshot_content(&s, "s1")[..5], b"first");
    assert_eq!(&current(&s)[..6], b"branch");
    assert_eq!(mem.list(dir()).len(), old_files, "the old top file is gone");
    let err = ops::snapshot_switch_with(s.clone(), dir(), &top.to_string()).unwrap_err();
    assert!(matches!(err, OpsError::CurrentTop { .. }), "{err}");
    assert_clean(&s);
}

#[test]
fn merge_top_into_parent_drops_parent() {
    let (_mem, s) = new_disk(MIB);
    write(&s, 0, &fill(1, 2 * CLUSTER));
    snapshot(&s, "s1");
    write(&s, 5, &fill(2, 10));
    let s2 = snapshot(&s, "s2");
    write(&s, CLUSTER + 5, &fill(3, 10));
    let before = current(&s);

    ops::snapshot_merge_with(s.clone(), dir(), MergeScope::Parent).unwrap();

    assert_eq!(current(&s), before);
    assert_eq!(depth(&s), 2);
    assert_eq!(names(&s), vec![None, Some("s1".to_string())]);
    let gone = Disk::open_snapshot_with(s.clone(), dir(), &s2).unwrap_err();
    assert_eq!(gone.kind(), ErrorKind::NotFound);
    assert_clean(&s);
}

#[test]
fn merge_all_leaves_one_delta() {
    let (_mem, s) = new_disk(MIB);
    for i in 0..4u8 {
        write(&s, u64::from(i) * 1000, &fill(i + 1, CLUSTER));
        snapshot(&s, &format!("s{i}"));
    }
    write(&s, 3, b"top");
    let before = current(&s);

    ops::snapshot_merge_with(s.clone(), dir(), MergeScope::All).unwrap();

    assert_eq!(current(&s), before);
    assert_eq!(depth(&s), 1);
    let err = ops::snapshot_merge_with(s.clone(), dir(), MergeScope::Parent).unwrap_err();
    assert!(matches!(err, OpsError::NothingToMerge { .. }), "{err}");
    assert_clean(&s);
}

#[test]
fn ops_on_open_disk_are_busy() {
    let (_mem, s) = new_disk(MIB);
    snapshot(&s, "s1");
    let held = open(&s);
    let delete = ops::snapshot_delete_with(s.clone(), dir(), "s1").unwrap_err();
    assert_eq!(delete.kind(), ErrorKind::Busy);
    let switch = ops::snapshot_switch_with(s.clone(), dir(), "s1").unwrap_err();
    assert_eq!(switch.kind(), ErrorKind::Busy);
    let merge = ops::snapshot_merge_with(s.clone(), dir(), MergeScope::All).unwrap_err();
    assert_eq!(merge.kind(), ErrorKind::Busy);
    let resize = ops::resize_with(s.clone(), dir(), 2 * MIB).unwrap_err();
    assert_eq!(resize.kind(), ErrorKind::Busy);
    let check = check::check_with(s.clone(), dir(), CheckMode::Repair).unwrap_err();
    assert_eq!(check.kind(), ErrorKind::Busy);
    held.close().unwrap();
}

#[test]
fn shrink_past_unused_clusters() {
    let (_mem, s) = new_disk(2 * MIB);
    write(&s, 0, b"keep");
    write(&s, MIB + 3 * CLUSTER, b"tail");
    let err = ops::resize_with(s.clone(), dir(), MIB).unwrap_err();
    match err {
        OpsError::ShrinkOverData { first_used, .. } => assert_eq!(first_used, MIB + 3 * CLUSTER),
        other => panic!("unexpected error: {other}"),
    }

    let disk = open(&s);
    disk.zero_range(MIB, MIB).unwrap();
    disk.close().unwrap();
    ops::resize_with(s.clone(), dir(), MIB).unwrap();
    let disk = open(&s);
    assert_eq!(disk.virtual_size(), MIB);
    let mut buf = [0u8; 4];
    disk.read_at(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"keep");
    disk.close().unwrap();

    ops::resize_with(s.clone(), dir(), 3 * MIB).unwrap();
    assert_eq!(current(&s)[usize::try_from(MIB + 3 * CLUSTER).unwrap()], 0);
    assert_clean(&s);
}

#[test]
fn shrink_below_snapshot_is_rejected() {
    let (_mem, s) = new_disk(MIB);
    snapshot(&s, "s1");
    ops::resize_with(s.clone(), dir(), 2 * MIB).unwrap();
    let err = ops::resize_with(s.clone(), dir(), MIB / 2).unwrap_err();
    assert!(
        matches!(err, OpsError::ShrinkBelowSnapshot { size, .. } if size == MIB),
        "{err}"
    );
    ops::resize_with(s.clone(), dir(), MIB).unwrap();
    assert_eq!(current(&s).len(), usize::try_from(MIB).unwrap());
}

#[test]
fn check_repairs_unclean_stop() {
    let (mem, s) = new_disk(MIB);
    write(&s, 0, b"durable");
    let disk = open(&s);
    disk.write_at(&fill(9, CLUSTER), 4 * CLUSTER).unwrap();
    disk.flush().unwrap();
    disk.write_at(&fill(8, CLUSTER), 6 * CLUSTER).unwrap();
    let crashed = mem.crash_keeping(|_, change| {
        // Keep the data of the unflushed write but not its BAT entry.
        matches!(change, lamina_engine::image::memfs::Pending::Write { offset, .. } if *offset >= CLUSTER)
    });
    drop(disk);
    let c = crashed.shared();

    let report = check::check_with(c.clone(), dir(), CheckMode::Report).unwrap();
    assert_eq!(report.result, CheckResult::Repairable, "{report:#?}");
    assert!(report.has(Problem::InUse));
    assert!(report.has(Problem::LeakedTail));

    let report = check::check_with(c.clone(), dir(), CheckMode::Repair).unwrap();
    assert_eq!(report.result, CheckResult::Repaired, "{report:#?}");
    assert!(report.findings.iter().all(|f| f.repaired));
    assert_clean(&c);
    let content = current(&c);
    assert_eq!(&content[..7], b"durable");
    assert_eq!(content[usize::try_from(4 * CLUSTER).unwrap()], 9);
}

#[test]
fn check_reports_and_removes_orphan_files() {
    let (mem, s) = new_disk(MIB);
    let orphan = dir().join("0badf11e.delta");
    s.open(&orphan, lamina_engine::image::io::OpenMode::CreateNew)
        .unwrap();
    let report = check::check_with(s.clone(), dir(), CheckMode::Report).unwrap();
    assert!(report.has(Problem::OrphanFile));
    assert_eq!(report.result, CheckResult::Repairable);
    let report = check::check_with(s.clone(), dir(), CheckMode::Repair).unwrap();
    assert_eq!(report.result, CheckResult::Repaired);
    assert!(mem.read_file(&orphan).is_none());
}

/// Builds a small disk with two deltas and data in both, and returns the
/// top's file path.
fn small_chain() -> (MemStorage, Arc<dyn Storage>, std::path::PathBuf) {
    chain_of_size(MIB)
}

/// Like [`small_chain`] with a chosen virtual size.
fn chain_of_size(size: u64) -> (MemStorage, Arc<dyn Storage>, std::path::PathBuf) {
    let (mem, s) = new_disk(size);
    write(&s, 0, &fill(1, 3 * CLUSTER));
    snapshot(&s, "s1");
    write(&s, CLUSTER, &fill(2, CLUSTER));
    write(&s, 5 * CLUSTER, b"x");
    let disk = Disk::open_with(s.clone(), dir(), Access::ReadOnly).unwrap();
    let top = dir().join(&disk.info().deltas[1].file);
    (mem, s, top)
}

#[test]
fn every_corrupt_header_or_bat_byte_is_caught() {
    let (base, s, top) = small_chain();
    let disk = Disk::open_with(s, dir(), Access::ReadOnly).unwrap();
    let lower = dir().join(&disk.info().deltas[0].file);
    drop(disk);
    let mut checked = 0;
    for path in [&top, &lower] {
        let original = base.read_file(path).unwrap();
        // The 128-byte header record and the first BAT page at 4096.
        for offset in (0..128u64).chain(4096..8192) {
            let mem = base.fork();
            let s = mem.shared();
            let byte = original[usize::try_from(offset).unwrap()];
            mem.corrupt(path, offset, &[byte ^ 0x5a]).unwrap();
            let at = format!("{} byte {offset}", path.display());

            let err = Disk::open_with(s.clone(), dir(), Access::ReadOnly).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Corrupt, "{at}: {err}");
            let report = check::check_with(s.clone(), dir(), CheckMode::Report).unwrap();
            assert_eq!(report.result, CheckResult::Unrepairable, "{at}");
            let errors = report
                .findings
                .iter()
                .filter(|f| f.severity == Severity::Error);
            assert!(errors.count() > 0, "{at}: {report:#?}");
            checked += 1;
        }
    }
    assert_eq!(checked, 2 * (128 + 4096));
}

#[test]
fn corrupt_header_padding_is_repairable() {
    let (mem, s, top) = small_chain();
    mem.corrupt(&top, 1000, &[7]).unwrap();
    let report = check::check_with(s.clone(), dir(), CheckMode::Report).unwrap();
    assert!(report.has(Problem::HeaderPadding));
    let report = check::check_with(s.clone(), dir(), CheckMode::Repair).unwrap();
    assert_eq!(report.result, CheckResult::Repaired);
    assert_clean(&s);
}

#[test]
fn raw_round_trip_is_sparse() {
    let tmp = tempfile::tempdir().unwrap();
    let raw = tmp.path().join("in.raw");
    let file = std::fs::File::create(&raw).unwrap();
    let size = 3 * MIB + 1000;
    file.set_len(size).unwrap();
    use std::os::unix::fs::FileExt;
    file.write_all_at(&fill(5, 5000), 70_000).unwrap();
    file.write_all_at(b"end", size - 3).unwrap();
    file.write_all_at(&fill(0, CLUSTER), 2 * MIB).unwrap();
    drop(file);

    let dir = tmp.path().join("disk");
    let report = convert::import_raw(&raw, &dir, CLUSTER).unwrap();
    assert_eq!(report.virtual_size, 49 * CLUSTER);
    assert_eq!(report.clusters_copied, 2, "{report:?}");
    assert_eq!(report.zero_clusters, 1, "the written zero cluster");

    let out = tmp.path().join("out.raw");
    let report = convert::export_raw(&dir, None, &out).unwrap();
    assert_eq!(report.clusters_copied, 2);
    let back = std::fs::read(&out).unwrap();
    let mut expected = std::fs::read(&raw).unwrap();
    expected.resize(back.len(), 0);
    assert_eq!(back, expected);
    use std::os::unix::fs::MetadataExt;
    let blocks = std::fs::metadata(&out).unwrap().blocks() * 512;
    assert!(
        blocks <= 4 * CLUSTER,
        "export is not sparse: {blocks} bytes"
    );
}

#[test]
fn export_of_snapshot_reads_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("disk");
    let opts = CreateOptions {
        size: MIB,
        cluster_size: CLUSTER,
    };
    Disk::create(&dir, &opts).unwrap();
    let disk = Disk::open(&dir, Access::ReadWrite).unwrap();
    disk.write_at(b"old", 0).unwrap();
    disk.snapshot(Some("s1"), None).unwrap();
    disk.write_at(b"new", 0).unwrap();
    disk.close().unwrap();

    let out = tmp.path().join("s1.raw");
    convert::export_raw(&dir, Some("s1"), &out).unwrap();
    assert_eq!(&std::fs::read(&out).unwrap()[..3], b"old");
    let check = check::check(&dir, CheckMode::Report).unwrap();
    assert_eq!(check.result, CheckResult::Clean);
}

/// Rewrites entry `slot` of BAT page 0 of `path` with a valid page CRC.
fn set_entry(mem: &MemStorage, path: &Path, slot: usize, raw: u64) {
    use lamina_format::bat::{decode_raw_page, encode_raw_page};
    let bytes = mem.read_file(path).unwrap();
    let mut entries = decode_raw_page(&bytes[4096..8192], 0).unwrap();
    entries[slot] = raw;
    mem.corrupt(path, 4096, &encode_raw_page(0, entries))
        .unwrap();
}

/// Rewrites the header of `path` after `change`, with a valid CRC.
fn set_header(mem: &MemStorage, path: &Path, change: impl FnOnce(&mut lamina_format::Header)) {
    let bytes = mem.read_file(path).unwrap();
    let mut header = lamina_format::Header::decode(&bytes).unwrap();
    change(&mut header);
    mem.corrupt(path, 0, &header.encode()).unwrap();
}

#[test]
fn check_finds_crafted_metadata_errors() {
    use lamina_format::BatEntry;
    type Craft = fn(&MemStorage, &Path, &Path);
    // At 512 MiB the BAT needs 17 pages, so the data starts at physical
    // cluster 2 and cluster 1 is metadata.
    let cases: [(&str, Problem, u64, Craft); 6] = [
        ("duplicate", Problem::DuplicateCluster, MIB, |m, top, _| {
            set_entry(m, top, 5, BatEntry::Allocated(1).encode());
        }),
        (
            "past size",
            Problem::EntryPastVirtualSize,
            MIB,
            |m, top, _| {
                set_entry(m, top, 20, BatEntry::Zero.encode());
            },
        ),
        ("bad tag", Problem::EntryInvalid, MIB, |m, top, _| {
            set_entry(m, top, 7, 3)
        }),
        (
            "in metadata",
            Problem::EntryInMetadata,
            512 * MIB,
            |m, top, _| {
                set_entry(m, top, 5, BatEntry::Allocated(1).encode());
            },
        ),
        ("parent", Problem::ParentMismatch, MIB, |m, top, _| {
            set_header(m, top, |h| h.parent = Some(uuid::Uuid::new_v4()));
        }),
        ("size", Problem::SizeMismatch, MIB, |m, _, base| {
            set_header(m, base, |h| {
                h.geometry = lamina_format::Geometry::new(CLUSTER, 2 * MIB).unwrap();
            });
        }),
    ];
    for (name, problem, size, craft) in cases {
        let (mem, s, top) = chain_of_size(size);
        let disk = Disk::open_with(s.clone(), dir(), Access::ReadOnly).unwrap();
        let base = dir().join(&disk.info().deltas[0].file);
        drop(disk);
        craft(&mem, &top, &base);

        let report = check::check_with(s.clone(), dir(), CheckMode::Repair).unwrap();
        assert!(report.has(problem), "{name}: {report:#?}");
        assert_eq!(report.result, CheckResult::Unrepairable, "{name}");
        let err = Disk::open_with(s.clone(), dir(), Access::ReadOnly).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupt, "{name}: {err}");
    }
}

#[test]
fn check_drops_entries_past_eof() {
    use lamina_format::BatEntry;
    let (mem, s, top) = small_chain();
    set_entry(&mem, &top, 5, BatEntry::Allocated(100).encode());
    let err = Disk::open_with(s.clone(), dir(), Access::ReadOnly).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt);

    let report = check::check_with(s.clone(), dir(), CheckMode::Report).unwrap();
    assert!(report.has(Problem::EntryPastEof));
    assert_eq!(report.result, CheckResult::Repairable);
    let report = check::check_with(s.clone(), dir(), CheckMode::Repair).unwrap();
    assert_eq!(report.result, CheckResult::Repaired, "{report:#?}");
    assert_clean(&s);
    let content = current(&s);
    assert_eq!(content[usize::try_from(5 * CLUSTER).unwrap()], 0);
    assert_eq!(content[usize::try_from(CLUSTER).unwrap()], 2);
}

#[test]
fn delete_over_corrupt_chain_is_rejected() {
    let (mem, s, top) = small_chain();
    set_header(&mem, &top, |h| h.parent = Some(uuid::Uuid::new_v4()));
    let err = ops::snapshot_delete_with(s.clone(), dir(), "s1").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    let err = ops::snapshot_merge_with(s.clone(), dir(), MergeScope::All).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
}

#[test]
fn merge_all_of_deep_chain() {
    let (_mem, s) = new_disk(4 * MIB);
    let disk = open(&s);
    for i in 0..100u64 {
        let byte = u8::try_from(i % 250).unwrap() + 1;
        disk.write_at(&[byte; 100], (i % 64) * CLUSTER + i).unwrap();
        disk.snapshot(Some(&format!("s{i}")), None).unwrap();
    }
    disk.close().unwrap();
    let before = current(&s);
    let s50 = snapshot_content(&s, "s50");

    ops::snapshot_delete_with(s.clone(), dir(), "s49").unwrap();
    assert_eq!(snapshot_content(&s, "s50"), s50);
    ops::snapshot_merge_with(s.clone(), dir(), MergeScope::All).unwrap();
    assert_eq!(current(&s), before);
    assert_eq!(depth(&s), 1);
    assert_clean(&s);
}

#[test]
fn delete_and_merge_keep_open_disk_serving() {
    let (mem, s) = new_disk(MIB);
    let disk = Arc::new(open(&s));
    disk.write_at(&fill(1, 4 * CLUSTER), 0).unwrap();
    disk.snapshot(Some("s1"), None).unwrap();
    disk.write_at(&fill(2, 100), CLUSTER + 10).unwrap();
    let s2 = disk.snapshot(Some("s2"), None).unwrap();
    disk.write_at(&fill(3, 100), 2 * CLUSTER + 10).unwrap();
    let s2_before = snapshot_content(&s, "s2");

    // A writer rewrites clusters 8 to 11 until s1 is gone.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (disk, stop) = (Arc::clone(&disk), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut last = 0u8;
            for round in 0u64.. {
                if round >= 10 && stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                last = u8::try_from(round % 250).unwrap() + 1;
                disk.write_at(&fill(last, 4 * CLUSTER), 8 * CLUSTER)
                    .unwrap();
            }
            last
        })
    };
    let change = disk.snapshot_delete("s1").unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let last = writer.join().unwrap();
    assert_eq!(change.removed.len(), 1);
    assert_eq!(
        change.rewritten,
        vec![s2],
        "only the snapshot child is rewritten"
    );
    let mut expected = fill(0, MIB);
    expected[..usize::try_from(4 * CLUSTER).unwrap()].fill(1);
    expected[usize::try_from(CLUSTER + 10).unwrap()..][..100].fill(2);
    expected[usize::try_from(2 * CLUSTER + 10).unwrap()..][..100].fill(3);
    expected[usize::try_from(8 * CLUSTER).unwrap()..][..usize::try_from(4 * CLUSTER).unwrap()]
        .fill(last);
    assert!(read_all(&disk) == expected, "content differs after delete");
    assert_eq!(disk.info().chain_depth, 2);
    assert_eq!(snapshot_content(&s, "s2"), s2_before);

    let top = disk.info().top.to_string();
    let err = disk.snapshot_delete(&top).unwrap_err();
    assert!(matches!(err, OpsError::CurrentTop { .. }), "{err}");
    let err = disk.snapshot_delete("nope").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);

    // A partial write over a cluster of the rewritten s2 copies it up.
    disk.write_at(&fill(4, 10), CLUSTER + 20).unwrap();
    expected[usize::try_from(CLUSTER + 20).unwrap()..][..10].fill(4);
    let change = disk.snapshot_merge(MergeScope::Parent).unwrap();
    assert_eq!(
        change.rewritten,
        vec![disk.info().top],
        "the top is rewritten"
    );
    assert_eq!(disk.info().chain_depth, 1);
    disk.write_at(&fill(5, 10), 3 * CLUSTER + 1).unwrap();
    expected[usize::try_from(3 * CLUSTER + 1).unwrap()..][..10].fill(5);
    assert!(read_all(&disk) == expected, "content differs after merge");

    disk.snapshot(Some("s3"), None).unwrap();
    disk.write_at(&fill(6, CLUSTER), 5 * CLUSTER).unwrap();
    disk.snapshot(Some("s4"), None).unwrap();
    disk.discard(0, CLUSTER).unwrap();
    expected[usize::try_from(5 * CLUSTER).unwrap()..][..usize::try_from(CLUSTER).unwrap()].fill(6);
    expected[..usize::try_from(CLUSTER).unwrap()].fill(0);
    let change = disk.snapshot_merge(MergeScope::All).unwrap();
    assert_eq!(change.removed.len(), 2);
    assert_eq!(disk.info().chain_depth, 1);
    disk.flush().unwrap();
    assert!(
        read_all(&disk) == expected,
        "content differs after merge --all"
    );

    Arc::try_unwrap(disk).unwrap().close().unwrap();
    assert!(current(&s) == expected, "content differs after reopen");
    assert_eq!(
        mem.list(dir())
            .iter()
            .filter(|f| f.ends_with(".delta"))
            .count(),
        1
    );
    assert_clean(&s);
}

#[test]
fn concurrent_tree_changes_stay_consistent() {
    let (mem, s) = new_disk(MIB);
    let disk = Arc::new(open(&s));
    for i in 0..6u8 {
        disk.write_at(&fill(i + 1, CLUSTER), u64::from(i) * CLUSTER)
            .unwrap();
        disk.snapshot(Some(&format!("s{i}")), None).unwrap();
    }
    let expected = read_all(&disk);

    // Deletes and snapshots race. A delete may fail with the busy kind
    // when a snapshot changed the tree under it, but nothing may break.
    let mut threads = Vec::new();
    for name in ["s1", "s3", "s4"] {
        let disk = Arc::clone(&disk);
        threads.push(std::thread::spawn(move || {
            disk.snapshot_delete(name).map(|_| ()).map_err(|e| e.kind())
        }));
    }
    for i in 0..3 {
        let disk = Arc::clone(&disk);
        threads.push(std::thread::spawn(move || {
            let name = format!("new{i}");
            disk.snapshot(Some(&name), None)
                .map(|_| ())
                .map_err(|e| e.kind())
        }));
    }
    for thread in threads {
        let result = thread.join().unwrap();
        assert!(
            matches!(result, Ok(()) | Err(ErrorKind::Busy)),
            "{result:?}"
        );
    }

    assert!(read_all(&disk) == expected, "content changed");
    Arc::try_unwrap(disk).unwrap().close().unwrap();
    assert!(current(&s) == expected, "content changed after reopen");
    let deltas = mem
        .list(dir())
        .iter()
        .filter(|f| f.ends_with(".delta"))
        .count();
    assert_eq!(deltas, node_count(&s), "unreferenced delta files are left");
    assert_clean(&s);
}

/// Returns the number of nodes in the snapshot tree.
fn node_count(storage: &Arc<dyn Storage>) -> usize {
    let disk = Disk::open_with(storage.clone(), dir(), Access::ReadOnly).unwrap();
    disk.snapshots().len()
}
