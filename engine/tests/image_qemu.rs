//! Independent checks with outside tools. The same data is written
//! through `Disk` and into a plain raw file. The disk's raw export must be
//! identical for `qemu-img compare` and `cmp`, through snapshots and
//! merges, and for a disk over 4 GiB. Needs `qemu-img` (Debian's
//! qemu-utils) and `cmp` on the PATH.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use lamina_engine::image::convert;
use lamina_engine::image::ops::{self, MergeScope};
use lamina_engine::image::{Access, CreateOptions, Disk};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// A small deterministic generator (xorshift64*), so failures replay.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn bytes(&mut self, len: u64) -> Vec<u8> {
        (0..len).map(|_| self.next().to_le_bytes()[3]).collect()
    }
}

/// Runs a command and fails the test with its output unless it exits 0.
fn run_ok(program: &str, args: &[&Path]) {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} (install qemu-utils and diffutils): {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Compares two raw files with `qemu-img compare` and with `cmp`.
fn assert_same(a: &Path, b: &Path) {
    qemu_compare(a, b);
    run_ok("cmp", &[a, b]);
}

/// Compares two raw files with `qemu-img compare` only, which skips holes,
/// where `cmp` would read all of a large sparse file.
fn qemu_compare(a: &Path, b: &Path) {
    let raw = Path::new("raw");
    let args = [
        Path::new("compare"),
        Path::new("-f"),
        raw,
        Path::new("-F"),
        raw,
        a,
        b,
    ];
    run_ok("qemu-img", &args);
}

/// Writes the same bytes through the disk and into the raw file.
fn write_both(disk: &Disk, raw: &File, data: &[u8], offset: u64) {
    disk.write_at(data, offset).unwrap();
    raw.write_all_at(data, offset).unwrap();
}

fn create(dir: &Path, size: u64, cluster_size: u64) -> Disk {
    Disk::create(dir, &CreateOptions { size, cluster_size }).unwrap();
    Disk::open(dir, Access::ReadWrite).unwrap()
}

fn raw_file(path: &Path, size: u64) -> File {
    let file = File::create(path).unwrap();
    file.set_len(size).unwrap();
    file
}

#[test]
fn random_writes_match_raw_through_snapshot_and_merge() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, size) = (tmp.path().join("disk"), 32 * MIB);
    let expected = tmp.path().join("expected.raw");
    let at_snapshot = tmp.path().join("at-snapshot.raw");
    let exported = tmp.path().join("exported.raw");
    let disk = create(&dir, size, 64 * KIB);
    let raw = raw_file(&expected, size);
    let mut rng = Rng(0x0123_4567_89ab_cdef);

    for round in 0..3 {
        for _ in 0..60 {
            let len = 1 + rng.below(200 * KIB);
            let offset = rng.below(size - len);
            write_both(&disk, &raw, &rng.bytes(len), offset);
        }
        if round < 2 {
            disk.snapshot(Some(&format!("r{round}")), None).unwrap();
        }
        if round == 0 {
            std::fs::copy(&expected, &at_snapshot).unwrap();
        }
    }
    disk.zero_range(3 * MIB + 5, 2 * MIB).unwrap();
    raw.write_all_at(&vec![0u8; 2 << 20], 3 * MIB + 5).unwrap();
    disk.close().unwrap();

    convert::export_raw(&dir, None, &exported).unwrap();
    assert_same(&expected, &exported);
    convert::export_raw(&dir, Some("r0"), &exported).unwrap();
    assert_same(&at_snapshot, &exported);

    ops::snapshot_merge(&dir, MergeScope::Parent).unwrap();
    convert::export_raw(&dir, None, &exported).unwrap();
    assert_same(&expected, &exported);
    convert::export_raw(&dir, Some("r0"), &exported).unwrap();
    assert_same(&at_snapshot, &exported);

    ops::snapshot_merge(&dir, MergeScope::All).unwrap();
    convert::export_raw(&dir, None, &exported).unwrap();
    assert_same(&expected, &exported);
}

#[test]
fn disk_over_4_gib_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, size) = (tmp.path().join("disk"), 5 * GIB);
    let expected = tmp.path().join("expected.raw");
    let exported = tmp.path().join("exported.raw");
    let disk = create(&dir, size, MIB);
    let raw = raw_file(&expected, size);
    let mut rng = Rng(0xfeed_f00d_dead_beef);

    let offsets = [
        4 * GIB + 3 * MIB + 123,
        5 * GIB - 3 * MIB,
        4 * GIB - MIB / 2,
        7,
    ];
    for offset in offsets {
        write_both(&disk, &raw, &rng.bytes(2 * MIB + 17), offset);
    }
    disk.snapshot(Some("low"), None).unwrap();
    for offset in [4 * GIB + 4 * MIB, 5 * GIB - 100 * KIB] {
        write_both(&disk, &raw, &rng.bytes(64 * KIB), offset);
    }
    disk.close().unwrap();

    ops::snapshot_merge(&dir, MergeScope::All).unwrap();
    let report = convert::export_raw(&dir, None, &exported).unwrap();
    assert_eq!(report.virtual_size, size);
    assert_same(&expected, &exported);

    let back = tmp.path().join("back");
    convert::import_raw(&exported, &back, MIB).unwrap();
    let again = tmp.path().join("again.raw");
    convert::export_raw(&back, None, &again).unwrap();
    qemu_compare(&expected, &again);
}
