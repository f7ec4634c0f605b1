//! Crash consistency of the offline operations on the fault-injecting
//! `MemStorage`. Each operation is cut after every possible number of
//! writes and syncs, the unsynced state is dropped (or partly kept, to
//! model writeback), and the disk is reopened. It must pass `check`,
//! repairing at most the leftovers of an unclean stop, and hold either the
//! state before or the state after the operation: the same current
//! content, the same snapshots and the same content in each.

use std::collections::BTreeMap;
use std::path::Path;

use lamina_engine::image::check::{self, CheckMode, CheckResult, Problem, Severity};
use lamina_engine::image::memfs::{CrashPoint, MemStorage, Pending, Writeback};
use lamina_engine::image::ops::{self, MergeScope};
use lamina_engine::image::{Access, CreateOptions, Disk};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const CLUSTER: u64 = 64 * KIB;
const DIR: &str = "/vm/disk";

fn dir() -> &'static Path {
    Path::new(DIR)
}

/// Returns whether a change touches a header, a BAT or a descriptor: all
/// lie below the first data cluster, at 64 KiB or more here.
fn is_metadata(change: &Pending) -> bool {
    match change {
        Pending::Write { offset, .. } | Pending::Punch { offset, .. } => *offset < CLUSTER,
        Pending::SetLen { .. } => false,
    }
}

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
    // Metadata and the data of later clusters, but not of the first data
    // clusters: catches a BAT entry written before its data was synced.
    Writeback {
        name: "metadata and late data",
        keep: |_, change| is_metadata(change) || offset_of(change) >= 4 * CLUSTER,
    },
];

fn offset_of(change: &Pending) -> u64 {
    match change {
        Pending::Write { offset, .. } | Pending::Punch { offset, .. } => *offset,
        Pending::SetLen { len } => *len,
    }
}

/// Problems a crash may leave and `check --repair` may fix.
const ALLOWED: [Problem; 6] = [
    Problem::InUse,
    Problem::LeakedTail,
    Problem::EntryPastEof,
    Problem::OrphanFile,
    Problem::DescriptorTemp,
    Problem::DescriptorSize,
];

/// State visible to a reader: the virtual size, the first 2 MiB of the
/// current content and of every named snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    size: u64,
    current: Vec<u8>,
    snapshots: BTreeMap<String, Vec<u8>>,
}

fn head(disk: &Disk) -> Vec<u8> {
    let len = disk.virtual_size().min(2 * MIB);
    let mut buf = vec![0u8; usize::try_from(len).unwrap()];
    disk.read_at(&mut buf, 0).unwrap();
    buf
}

fn observe(storage: &MemStorage, point: &str) -> Seen {
    let disk = Disk::open_with(storage.shared(), dir(), Access::ReadOnly)
        .unwrap_or_else(|e| panic!("{point}: open: {e}"));
    let mut snapshots = BTreeMap::new();
    for info in disk.snapshots() {
        let Some(name) = info.name else { continue };
        let view = Disk::open_snapshot_with(storage.shared(), dir(), &name)
            .unwrap_or_else(|e| panic!("{point}: open snapshot {name}: {e}"));
        snapshots.insert(name, head(&view));
    }
    Seen {
        size: disk.virtual_size(),
        current: head(&disk),
        snapshots,
    }
}

/// Checks, repairs what a crash may leave, and checks again.
fn check_and_repair(storage: &MemStorage, point: &str) {
    let report = check::check_with(storage.shared(), dir(), CheckMode::Report)
        .unwrap_or_else(|e| panic!("{point}: check: {e}"));
    for finding in report
        .findings
        .iter()
        .filter(|f| f.severity > Severity::Info)
    {
        assert!(
            ALLOWED.contains(&finding.problem),
            "{point}: unexpected finding {finding:?}"
        );
    }
    let repaired = check::check_with(storage.shared(), dir(), CheckMode::Repair).unwrap();
    assert!(
        matches!(repaired.result, CheckResult::Clean | CheckResult::Repaired),
        "{point}: {repaired:#?}"
    );
    let again = check::check_with(storage.shared(), dir(), CheckMode::Report).unwrap();
    assert_eq!(again.result, CheckResult::Clean, "{point}: {again:#?}");
}

/// Runs `op` on a fork of `base` without faults to learn the state after
/// it, then cuts it at every call and checks each crashed disk against the
/// states before and after. Returns the number of cut points.
fn crash_test(base: &MemStorage, op: impl Fn(&MemStorage) -> bool) -> u64 {
    let before = observe(base, "before");
    let done = base.fork();
    assert!(op(&done), "the operation succeeds without faults");
    let after = observe(&done, "after");
    assert_ne!(before, after, "the operation changes what a reader sees");

    let cuts = base.at_every_cut(&WRITEBACK, op, |crashed, ok, point: CrashPoint| {
        let point = point.to_string();
        check_and_repair(crashed, &point);
        let seen = observe(crashed, &point);
        assert!(
            seen == before || seen == after,
            "{point}: neither the old nor the new state: {:?}",
            seen.snapshots.keys().collect::<Vec<_>>()
        );
        if *ok {
            assert_eq!(seen, after, "{point}: the operation returned success");
        }
    });
    assert!(cuts > 3, "only {cuts} cut points");
    eprintln!(
        "{cuts} cut points, {} writeback patterns each",
        WRITEBACK.len()
    );
    cuts
}

fn create(size: u64) -> MemStorage {
    let mem = MemStorage::new();
    let opts = CreateOptions {
        size,
        cluster_size: CLUSTER,
    };
    Disk::create_with(mem.shared(), dir(), &opts).unwrap();
    mem
}

fn write(mem: &MemStorage, offset: u64, data: &[u8]) {
    let disk = Disk::open_with(mem.shared(), dir(), Access::ReadWrite).unwrap();
    disk.write_at(data, offset).unwrap();
    disk.close().unwrap();
}

fn snapshot(mem: &MemStorage, name: &str) {
    let disk = Disk::open_with(mem.shared(), dir(), Access::ReadWrite).unwrap();
    disk.snapshot(Some(name), None).unwrap();
    disk.close().unwrap();
}

fn switch(mem: &MemStorage, name: &str) {
    ops::snapshot_switch_with(mem.shared(), dir(), name).unwrap();
}

fn fill(byte: u8, len: u64) -> Vec<u8> {
    vec![byte; usize::try_from(len).unwrap()]
}

/// Builds a tree: base -> s1 -> {s2 -> top} and s1 -> b1 (a branch), with data
/// at every level, some of it partial clusters and zero ranges.
fn tree() -> MemStorage {
    let mem = create(MIB);
    write(&mem, 0, &fill(1, 4 * CLUSTER));
    snapshot(&mem, "base");
    write(&mem, CLUSTER + 100, &fill(2, 300));
    write(&mem, 6 * CLUSTER, &fill(2, CLUSTER));
    snapshot(&mem, "s1");
    write(&mem, 7 * CLUSTER, &fill(3, 10));
    snapshot(&mem, "b1");
    switch(&mem, "s1");
    write(&mem, 2 * CLUSTER + 5, &fill(4, 20));
    let disk = Disk::open_with(mem.shared(), dir(), Access::ReadWrite).unwrap();
    disk.zero_range(3 * CLUSTER, CLUSTER).unwrap();
    disk.close().unwrap();
    snapshot(&mem, "s2");
    write(&mem, 5, b"top");
    mem
}

#[test]
fn crash_during_write_and_flush() {
    // A partial write into a cluster of a lower delta (copy-on-write):
    // all or nothing, because a cluster is the unit of allocation.
    let base = tree();
    let op = |s: &MemStorage| -> bool {
        let Ok(disk) = Disk::open_with(s.shared(), dir(), Access::ReadWrite) else {
            return false;
        };
        let ok = disk.write_at(&fill(7, 1000), CLUSTER + 50).is_ok() && disk.flush().is_ok();
        ok && disk.close().is_ok()
    };
    crash_test(&base, op);

    // A write over several clusters, flushed, then another write: the
    // flushed one survives every crash once the flush returned, the
    // second one is all or nothing.
    let first = fill(7, 3 * CLUSTER);
    let flushed = |s: &MemStorage| -> (bool, bool) {
        let Ok(disk) = Disk::open_with(s.shared(), dir(), Access::ReadWrite) else {
            return (false, false);
        };
        let first_ok = disk.write_at(&first, CLUSTER / 2).is_ok() && disk.flush().is_ok();
        let second_ok =
            first_ok && disk.write_at(&fill(8, 100), 9 * CLUSTER).is_ok() && disk.close().is_ok();
        (first_ok, second_ok)
    };
    base.at_every_cut(&WRITEBACK, flushed, |crashed, (first_ok, _), point| {
        let point = point.to_string();
        check_and_repair(crashed, &point);
        let seen = observe(crashed, &point);
        let start = usize::try_from(CLUSTER / 2).unwrap();
        if *first_ok {
            assert_eq!(
                seen.current[start..start + first.len()],
                first[..],
                "{point}"
            );
        }
        let second = &seen.current[usize::try_from(9 * CLUSTER).unwrap()..][..100];
        assert!(second == fill(8, 100) || second == fill(0, 100), "{point}");
    });
}

#[test]
fn crash_during_snapshot() {
    let base = tree();
    crash_test(&base, |s| {
        let Ok(disk) = Disk::open_with(s.shared(), dir(), Access::ReadWrite) else {
            return false;
        };
        disk.snapshot(Some("new"), None).is_ok() && disk.close().is_ok()
    });
}

#[test]
fn crash_during_delete_with_two_children() {
    let base = tree();
    crash_test(&base, |s| {
        ops::snapshot_delete_with(s.shared(), dir(), "s1").is_ok()
    });
}

#[test]
fn crash_during_delete_of_base() {
    let base = tree();
    crash_test(&base, |s| {
        ops::snapshot_delete_with(s.shared(), dir(), "base").is_ok()
    });
}

#[test]
fn crash_during_switch() {
    let base = tree();
    crash_test(&base, |s| {
        ops::snapshot_switch_with(s.shared(), dir(), "b1").is_ok()
    });
}

#[test]
fn crash_during_merge() {
    let base = tree();
    crash_test(&base, |s| {
        ops::snapshot_merge_with(s.shared(), dir(), MergeScope::Parent).is_ok()
    });
}

#[test]
fn crash_during_merge_all() {
    // The branch b1 hangs off s1, so it is rewritten with base and s1.
    let base = tree();
    crash_test(&base, |s| {
        ops::snapshot_merge_with(s.shared(), dir(), MergeScope::All).is_ok()
    });
}

#[test]
fn crash_during_grow_with_bat_growth() {
    // 1 MiB needs one BAT page; 1 GiB needs 33, which pushes the data
    // offset from 64 KiB to 192 KiB, so the first clusters must move.
    let base = tree();
    crash_test(&base, |s| {
        ops::resize_with(s.shared(), dir(), 1 << 30).is_ok()
    });
}

#[test]
fn crash_during_shrink() {
    // A merge leaves a zero entry at 2 MiB in the only delta. The shrink
    // has to drop it before the header names the smaller size.
    let base = create(4 * MIB);
    write(&base, 0, &fill(1, CLUSTER));
    write(&base, 2 * MIB, &fill(2, CLUSTER));
    snapshot(&base, "s1");
    let disk = Disk::open_with(base.shared(), dir(), Access::ReadWrite).unwrap();
    disk.zero_range(2 * MIB, CLUSTER).unwrap();
    disk.close().unwrap();
    ops::snapshot_merge_with(base.shared(), dir(), MergeScope::Parent).unwrap();
    crash_test(&base, |s| ops::resize_with(s.shared(), dir(), MIB).is_ok());
}

#[test]
fn crash_during_check_repair() {
    // An unclean stop: the top is in use, with an unflushed write whose
    // data reached the file but whose BAT entry did not.
    let clean = tree();
    let disk = Disk::open_with(clean.shared(), dir(), Access::ReadWrite).unwrap();
    disk.write_at(&fill(9, CLUSTER), 8 * CLUSTER).unwrap();
    disk.flush().unwrap();
    disk.write_at(&fill(5, CLUSTER), 10 * CLUSTER).unwrap();
    let base = clean.crash_keeping(|_, change| !is_metadata(change));
    drop(disk);
    let before = observe(&base, "before");
    let report = check::check_with(base.shared(), dir(), CheckMode::Report).unwrap();
    assert!(report.has(Problem::InUse), "{report:#?}");
    assert!(report.has(Problem::LeakedTail), "{report:#?}");

    let op = |s: &MemStorage| check::check_with(s.shared(), dir(), CheckMode::Repair).is_ok();
    let cuts = base.at_every_cut(&WRITEBACK, op, |crashed, ok, point| {
        let point = point.to_string();
        check_and_repair(crashed, &point);
        assert_eq!(observe(crashed, &point), before, "{point}");
        if *ok {
            let report = check::check_with(crashed.shared(), dir(), CheckMode::Report).unwrap();
            assert_eq!(report.result, CheckResult::Clean, "{point}");
        }
    });
    assert!(cuts > 3, "only {cuts} cut points");
}

#[test]
fn crash_during_online_delete_then_write() {
    // The disk stays open: s2, the top's parent, goes away, so the top is
    // rewritten and reopened, and the write after it must land in the new
    // top. Cluster 12 is absent everywhere, so the write is all or nothing.
    let base = tree();
    let before = observe(&base, "before");
    let deleted = base.fork();
    ops::snapshot_delete_with(deleted.shared(), dir(), "s2").unwrap();
    let after_delete = observe(&deleted, "after delete");
    let op = |s: &MemStorage| -> bool {
        let Ok(disk) = Disk::open_with(s.shared(), dir(), Access::ReadWrite) else {
            return false;
        };
        let ok = disk.snapshot_delete("s2").is_ok()
            && disk.write_at(&fill(9, CLUSTER), 12 * CLUSTER).is_ok()
            && disk.flush().is_ok();
        ok && disk.close().is_ok()
    };
    let done = base.fork();
    assert!(op(&done), "the operation succeeds without faults");
    let after = observe(&done, "after");
    assert_ne!(after, after_delete, "the write changes what a reader sees");

    let cuts = base.at_every_cut(&WRITEBACK, op, |crashed, ok, point| {
        let point = point.to_string();
        check_and_repair(crashed, &point);
        let seen = observe(crashed, &point);
        assert!(
            seen == before || seen == after_delete || seen == after,
            "{point}: neither before, after the delete nor after the write"
        );
        if *ok {
            assert_eq!(seen, after, "{point}: the operation returned success");
        }
    });
    assert!(cuts > 3, "only {cuts} cut points");
}
