//! Micro-benchmarks of the image engine on a disk in a temp directory
//! (default 1 MiB clusters, real files through the page cache):
//!
//! - `write_4k_random`: one 4 KiB `write_at` at a random 4 KiB-aligned
//!   offset of a 256 MiB disk whose clusters are all allocated, so it
//!   measures the overwrite path without copy-on-write. No flush.
//! - `read_4k_random`: one 4 KiB `read_at` at a random offset of the same
//!   disk.
//! - `write_1m_sequential`: 1 MiB `write_at` calls in order over a 1 GiB
//!   disk, wrapping around; the first pass allocates clusters.
//! - `snapshot`: `Disk::snapshot` on an open disk with 16 MiB of data,
//!   including its flush; disk creation is not timed.
//! - `merge`: `ops::snapshot_merge` of a 16 MiB top into a parent with
//!   16 MiB, including opening and closing the disk offline.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use lamina_engine::image::ops::{self, MergeScope};
use lamina_engine::image::{Access, CreateOptions, Disk};
use tempfile::TempDir;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;

/// A disk in its own temp directory, removed on drop.
struct TempDisk {
    _dir: TempDir,
    path: std::path::PathBuf,
}

fn create(size: u64) -> TempDisk {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("disk");
    let opts = CreateOptions {
        size,
        ..CreateOptions::default()
    };
    Disk::create(&path, &opts).expect("create disk");
    TempDisk { _dir: dir, path }
}

/// Writes `len` bytes of non-zero data from offset 0 in 1 MiB requests.
fn fill(disk: &Disk, len: u64) {
    let buf = vec![0x5a_u8; 1 << 20];
    for offset in (0..len).step_by(1 << 20) {
        disk.write_at(&buf, offset).expect("fill");
    }
    disk.flush().expect("flush");
}

/// A xorshift generator: random offsets without a dependency.
struct Offsets(u64);

impl Offsets {
    /// Returns a random multiple of 4 KiB below `limit`.
    fn next(&mut self, limit: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % (limit / (4 * KIB)) * 4 * KIB
    }
}

fn random_io(c: &mut Criterion) {
    let size = 256 * MIB;
    let temp = create(size);
    let disk = Disk::open(&temp.path, Access::ReadWrite).expect("open");
    fill(&disk, size);

    let mut group = c.benchmark_group("image");
    group.throughput(Throughput::Bytes(4 * KIB));
    let data = vec![0xa5_u8; 4096];
    let mut offsets = Offsets(0x9e37_79b9_7f4a_7c15);
    group.bench_function("write_4k_random", |b| {
        b.iter(|| {
            disk.write_at(black_box(&data), offsets.next(size))
                .expect("write")
        })
    });
    disk.flush().expect("flush");

    let mut buf = vec![0u8; 4096];
    group.bench_function("read_4k_random", |b| {
        b.iter(|| {
            disk.read_at(black_box(&mut buf), offsets.next(size))
                .expect("read")
        })
    });
    group.finish();
    disk.close().expect("close");
}

fn sequential_write(c: &mut Criterion) {
    let size = 1 << 30;
    let temp = create(size);
    let disk = Disk::open(&temp.path, Access::ReadWrite).expect("open");
    let data = vec![0x3c_u8; 1 << 20];
    let mut offset = 0;

    let mut group = c.benchmark_group("image");
    group.throughput(Throughput::Bytes(MIB));
    group.bench_function("write_1m_sequential", |b| {
        b.iter(|| {
            disk.write_at(black_box(&data), offset).expect("write");
            offset = (offset + MIB) % size;
        })
    });
    group.finish();
    disk.close().expect("close");
}

fn snapshot(c: &mut Criterion) {
    let mut group = c.benchmark_group("image");
    group.sample_size(10);
    group.bench_function("snapshot", |b| {
        b.iter_batched(
            || {
                let temp = create(64 * MIB);
                let disk = Disk::open(&temp.path, Access::ReadWrite).expect("open");
                fill(&disk, 16 * MIB);
                (temp, disk)
            },
            |(temp, disk)| {
                disk.snapshot(None, None).expect("snapshot");
                (temp, disk)
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

fn merge(c: &mut Criterion) {
    let mut group = c.benchmark_group("image");
    group.sample_size(10);
    group.bench_function("merge", |b| {
        b.iter_batched(
            || {
                let temp = create(64 * MIB);
                let disk = Disk::open(&temp.path, Access::ReadWrite).expect("open");
                fill(&disk, 16 * MIB);
                disk.snapshot(None, None).expect("snapshot");
                fill(&disk, 16 * MIB);
                disk.close().expect("close");
                temp
            },
            |temp| {
                ops::snapshot_merge(&temp.path, MergeScope::Parent).expect("merge");
                temp
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, random_io, sequential_write, snapshot, merge);
criterion_main!(benches);
