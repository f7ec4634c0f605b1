//! Data path of `Disk` on real files: read-after-write against a flat
//! model, copy-on-write through a chain, zero and discard, reopen, and
//! concurrent writers.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use lamina_engine::image::{Access, CreateOptions, Disk};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;

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
}

fn new_disk(tmp: &Path, size: u64, cluster_size: u64) -> PathBuf {
    let dir = tmp.join("disk");
    Disk::create(&dir, &CreateOptions { size, cluster_size }).unwrap();
    dir
}

fn read_all(disk: &Disk) -> Vec<u8> {
    let mut buf = vec![0u8; usize::try_from(disk.virtual_size()).unwrap()];
    disk.read_at(&mut buf, 0).unwrap();
    buf
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| seed.wrapping_add(u8::try_from(i % 251).unwrap()))
        .collect()
}

fn to_usize(v: u64) -> usize {
    usize::try_from(v).unwrap()
}

#[test]
fn random_io_matches_flat_model() {
    let tmp = tempfile::tempdir().unwrap();
    let size = 4 * MIB;
    let dir = new_disk(tmp.path(), size, 64 * KIB);
    let disk = Disk::open(&dir, Access::ReadWrite).unwrap();
    let mut model = vec![0u8; to_usize(size)];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);

    for round in 0..400u32 {
        let offset = rng.below(size);
        let len = rng.below((size - offset).min(200 * KIB)) + 1;
        let (start, end) = (to_usize(offset), to_usize(offset + len));
        match rng.below(10) {
            0 => {
                disk.zero_range(offset, len).unwrap();
                model[start..end].fill(0);
            }
            1 => {
                disk.discard(offset, len).unwrap();
                model[start..end].fill(0);
            }
            2 => disk.flush().unwrap(),
            _ => {
                let data = pattern(end - start, round.to_le_bytes()[0]);
                disk.write_at(&data, offset).unwrap();
                model[start..end].copy_from_slice(&data);
            }
        }
        let mut got = vec![0u8; end - start];
        disk.read_at(&mut got, offset).unwrap();
        assert_same(
            &got,
            &model[start..end],
            &format!("round {round} at {offset}+{len}"),
        );
    }
    assert_same(&read_all(&disk), &model, "whole disk");
    disk.close().unwrap();

    let disk = Disk::open(&dir, Access::ReadOnly).unwrap();
    assert_same(&read_all(&disk), &model, "after reopen");
}

/// Asserts equal buffers, reporting the first differing offset instead of
/// printing megabytes.
fn assert_same(got: &[u8], expected: &[u8], what: &str) {
    assert_eq!(got.len(), expected.len(), "{what}: length");
    if let Some(i) = got.iter().zip(expected).position(|(a, b)| a != b) {
        panic!(
            "{what}: first difference at {i}: got {}, expected {}",
            got[i], expected[i]
        );
    }
}

#[test]
fn unwritten_disk_reads_zeros() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = new_disk(tmp.path(), 8 * MIB, MIB);
    let disk = Disk::open(&dir, Access::ReadOnly).unwrap();
    assert!(read_all(&disk).iter().all(|b| *b == 0));
}

#[test]
fn io_past_end_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = new_disk(tmp.path(), 8 * MIB, MIB);
    let disk = Disk::open(&dir, Access::ReadWrite).unwrap();
    let mut buf = [0u8; 2];
    let err = disk.read_at(&mut buf, 8 * MIB - 1).unwrap_err();
    assert_eq!(
        lamina_engine::HasKind::kind(&err),
        lamina_engine::ErrorKind::InvalidArgument
    );
    assert!(disk.write_at(&buf, u64::MAX).is_err());
    assert!(disk.zero_range(8 * MIB, 1).is_err());
    disk.read_at(&mut buf, 8 * MIB - 2).unwrap();
}

#[test]
fn read_only_disk_rejects_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = new_disk(tmp.path(), 8 * MIB, MIB);
    let disk = Disk::open(&dir, Access::ReadOnly).unwrap();
    assert!(disk.write_at(b"x", 0).is_err());
    assert!(disk.snapshot(None, None).is_err());
    assert!(disk.grow(16 * MIB).is_err());
    disk.flush().unwrap();
}

#[test]
fn copy_on_write_keeps_snapshot_data() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = new_disk(tmp.path(), 8 * MIB, 64 * KIB);
    let disk = Disk::open(&dir, Access::ReadWrite).unwrap();
    let old = pattern(to_usize(3 * 64 * KIB), 1);
    disk.write_at(&old, 0).unwrap();
    let snap = disk
        .snapshot(Some("base"), Some("before the partial write"))
        .unwrap();

    // A partial write into a cluster that only the snapshot holds.
    disk.write_at(b"NEW", 64 * KIB + 10).unwrap();
    let mut expected = old.clone();
    expected[to_usize(64 * KIB + 10)..to_usize(64 * KIB + 13)].copy_from_slice(b"NEW");
    let mut got = vec![0u8; old.len()];
    disk.read_at(&mut got, 0).unwrap();
    assert_same(&got, &expected, "chain read");

    let info = disk.info();
    assert_eq!(info.chain_depth, 2);
    assert_eq!(info.deltas[0].allocated_clusters, 3);
    assert_eq!(
        info.deltas[1].allocated_clusters, 1,
        "only the written cluster is copied up"
    );

    // The snapshot view reads the old data while the disk is open.
    let view = Disk::open_snapshot(&dir, "base").unwrap();
    view.read_at(&mut got, 0).unwrap();
    assert_same(&got, &old, "snapshot view");
    let by_uuid = Disk::open_snapshot(&dir, &snap.to_string()).unwrap();
    assert_eq!(by_uuid.info().top, snap);
    drop(view);

    disk.close().unwrap();
    let disk = Disk::open(&dir, Access::ReadOnly).unwrap();
    disk.read_at(&mut got, 0).unwrap();
    assert_same(&got, &expected, "after reopen");
}

#[test]
fn deep_chain_reads_top_most_data() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = new_disk(tmp.path(), 4 * MIB, 64 * KIB);
    let disk = Disk::open(&dir, Access::ReadWrite).unwrap();
    let mut model = vec![0u8; to_usize(4 * MIB)];
    for level in 0..64u64 {
        let offset = (level * 37 * KIB) % (4 * MIB - 100);
        let data = pattern(100, u8::try_from(level).unwrap());
        disk.write_at(&data, offset).unwrap();
        model[to_usize(offset)..to_usize(offset) + 100].copy_from_slice(&data);
        disk.snapshot(None, None).unwrap();
    }
    assert_eq!(disk.info().chain_depth, 65);
    assert_same(&read_all(&disk), &model, "whole disk");
    disk.close().unwrap();
    let disk = Disk::open(&dir, Access::ReadOnly).unwrap();
    assert_same(&read_all(&disk), &model, "after reopen");
    assert_eq!(disk.snapshots().len(), 65);
    assert_eq!(disk.snapshots().iter().filter(|s| s.current).count(), 1);
}

#[test]
fn zero_range_hides_lower_data() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = new_disk(tmp.path(), 4 * MIB, 64 * KIB);
    let disk = Disk::open(&dir, Access::ReadWrite).unwrap();
    disk.write_at(&pattern(to_usize(MIB), 9), 0).unwrap();
    disk.snapshot(None, None).unwrap();

    // Two partial clusters and 14 whole ones.
    disk.zero_range(100, MIB - 200).unwrap();
    let mut got = vec![0u8; to_usize(MIB)];
    disk.read_at(&mut got, 0).unwrap();
    assert_eq!(got[..100], pattern(to_usize(MIB), 9)[..100]);
    assert!(got[100..to_usize(MIB) - 100].iter().all(|b| *b == 0));
    assert_eq!(
        disk.info().deltas[1].allocated_clusters,
        2,
        "only the partial ends are copied"
    );
    disk.close().unwrap();

    let disk = Disk::open(&dir, Access::ReadOnly).unwrap();
    disk.read_at(&mut got, 0).unwrap();
    assert!(
        got[100..to_usize(MIB) - 100].iter().all(|b| *b == 0),
        "after reopen"
    );
}

#[test]
fn discard_frees_top_clusters() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = new_disk(tmp.path(), 16 * MIB, MIB);
    let disk = Disk::open(&dir, Access::ReadWrite).unwrap();
    disk.write_at(&pattern(to_usize(8 * MIB), 3), 0).unwrap();
    disk.flush().unwrap();
    let delta = dir.join(&disk.info().deltas[0].file);
    let before = allocated(&delta);

    disk.discard(0, 8 * MIB).unwrap();
    disk.flush().unwrap();
    assert_eq!(disk.info().deltas[0].allocated_clusters, 0);
    assert!(read_all(&disk).iter().all(|b| *b == 0));
    assert!(
        allocated(&delta) + 7 * MIB <= before,
        "the host file shrank"
    );

    // A discard of a huge empty range is cheap and changes nothing.
    disk.discard(0, 16 * MIB).unwrap();
    disk.close().unwrap();
    let disk = Disk::open(&dir, Access::ReadOnly).unwrap();
    assert_eq!(disk.info().deltas[0].allocated_clusters, 0);
}

#[test]
fn discarded_clusters_are_reused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = new_disk(tmp.path(), 64 * MIB, MIB);
    let disk = Disk::open(&dir, Access::ReadWrite).unwrap();
    disk.write_at(&pattern(to_usize(8 * MIB), 3), 0).unwrap();
    disk.flush().unwrap();
    let delta = dir.join(&disk.info().deltas[0].file);
    let len = std::fs::metadata(&delta).unwrap().len();

    // Freed clusters wait for the flush that makes their release durable,
    // then hold the next writes: the file does not grow.
    disk.discard(0, 4 * MIB).unwrap();
    disk.flush().unwrap();
    let fresh = pattern(to_usize(4 * MIB), 11);
    disk.write_at(&fresh, 32 * MIB).unwrap();
    disk.flush().unwrap();
    assert_eq!(std::fs::metadata(&delta).unwrap().len(), len, "file length");
    assert_eq!(disk.info().deltas[0].allocated_clusters, 8);

    let mut got = vec![0u8; to_usize(4 * MIB)];
    disk.read_at(&mut got, 32 * MIB).unwrap();
    assert!(got == fresh, "new data reads back");
    disk.read_at(&mut got, 0).unwrap();
    assert!(got.iter().all(|b| *b == 0), "discarded range reads zeros");
    disk.close().unwrap();

    let disk = Disk::open(&dir, Access::ReadOnly).unwrap();
    let mut got = vec![0u8; to_usize(4 * MIB)];
    disk.read_at(&mut got, 32 * MIB).unwrap();
    assert!(got == fresh, "new data after reopen");
    disk.read_at(&mut got, 4 * MIB).unwrap();
    let old = pattern(to_usize(8 * MIB), 3);
    assert!(
        got[..] == old[to_usize(4 * MIB)..],
        "untouched data after reopen"
    );
}

fn allocated(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().blocks() * 512
}

#[test]
fn unflushed_writes_survive_close() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = new_disk(tmp.path(), 8 * MIB, MIB);
    {
        let disk = Disk::open(&dir, Access::ReadWrite).unwrap();
        disk.write_at(b"dropped without close", 5 * MIB).unwrap();
    }
    let disk = Disk::open(&dir, Access::ReadOnly).unwrap();
    let mut buf = [0u8; 21];
    disk.read_at(&mut buf, 5 * MIB).unwrap();
    assert_eq!(&buf, b"dropped without close");
}

#[test]
fn concurrent_writers_same_cluster() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = new_disk(tmp.path(), 8 * MIB, MIB);
    let disk = Arc::new(Disk::open(&dir, Access::ReadWrite).unwrap());
    // Cluster 1 is allocated by whichever thread comes first; cluster 3 is
    // copied up from a snapshot by whichever comes first.
    disk.write_at(&vec![0xAA; to_usize(MIB)], 3 * MIB).unwrap();
    disk.snapshot(None, None).unwrap();

    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let disk = disk.clone();
            std::thread::spawn(move || {
                for i in 0..32u64 {
                    let block = i * 8 + t;
                    let data = vec![u8::try_from(t + 1).unwrap(); 4096];
                    disk.write_at(&data, MIB + block * 4096).unwrap();
                    disk.write_at(&data, 3 * MIB + block * 4096).unwrap();
                    if i % 8 == 0 {
                        disk.flush().unwrap();
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }

    let check = |disk: &Disk| {
        for cluster in [1u64, 3] {
            let mut got = vec![0u8; to_usize(MIB)];
            disk.read_at(&mut got, cluster * MIB).unwrap();
            for block in 0..256u64 {
                let expected = u8::try_from(block % 8 + 1).unwrap();
                let start = to_usize(block * 4096);
                assert!(
                    got[start..start + 4096].iter().all(|b| *b == expected),
                    "cluster {cluster} block {block}"
                );
            }
        }
    };
    check(&disk);
    assert_eq!(disk.info().deltas[1].allocated_clusters, 2);
    Arc::try_unwrap(disk).unwrap().close().unwrap();
    check(&Disk::open(&dir, Access::ReadOnly).unwrap());
}

#[test]
fn concurrent_io_during_snapshot_and_grow() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = new_disk(tmp.path(), 16 * MIB, 64 * KIB);
    let disk = Arc::new(Disk::open(&dir, Access::ReadWrite).unwrap());
    let writers: Vec<_> = (0..4u64)
        .map(|t| {
            let disk = disk.clone();
            std::thread::spawn(move || {
                for i in 0..200u64 {
                    let offset = (t * 4 + (i % 4)) * MIB + (i * 4096) % MIB;
                    disk.write_at(&[u8::try_from(t + 1).unwrap(); 4096], offset)
                        .unwrap();
                }
            })
        })
        .collect();
    for round in 1..=10u64 {
        disk.snapshot(None, None).unwrap();
        disk.grow(16 * MIB + round * 8 * MIB).unwrap();
        disk.flush().unwrap();
    }
    for writer in writers {
        writer.join().unwrap();
    }
    assert_eq!(disk.virtual_size(), 96 * MIB);
    let all = read_all(&disk);
    for t in 0..4u64 {
        for i in 0..200u64 {
            let offset = to_usize((t * 4 + (i % 4)) * MIB + (i * 4096) % MIB);
            let expected = u8::try_from(t + 1).unwrap();
            assert!(all[offset..offset + 4096].iter().all(|b| *b == expected));
        }
    }
    Arc::try_unwrap(disk).unwrap().close().unwrap();
    let disk = Disk::open(&dir, Access::ReadOnly).unwrap();
    assert_same(&read_all(&disk), &all, "after reopen");
}

#[test]
fn raw_export_matches_qemu_compare() {
    let tmp = tempfile::tempdir().unwrap();
    let size = 32 * MIB;
    let dir = new_disk(tmp.path(), size, 64 * KIB);
    let disk = Disk::open(&dir, Access::ReadWrite).unwrap();
    let raw_path = tmp.path().join("model.raw");
    let raw = std::fs::File::create(&raw_path).unwrap();
    raw.set_len(size).unwrap();
    let mut rng = Rng(42);
    for round in 0..200u32 {
        use std::os::unix::fs::FileExt;
        let offset = rng.below(size - 300 * KIB);
        let len = to_usize(rng.below(300 * KIB) + 1);
        if round % 7 == 0 {
            disk.snapshot(None, None).unwrap();
        }
        if round % 5 == 0 {
            disk.zero_range(offset, len as u64).unwrap();
            raw.write_all_at(&vec![0u8; len], offset).unwrap();
        } else {
            let data = pattern(len, round.to_le_bytes()[0]);
            disk.write_at(&data, offset).unwrap();
            raw.write_all_at(&data, offset).unwrap();
        }
    }
    disk.close().unwrap();

    let export_path = tmp.path().join("export.raw");
    let disk = Disk::open(&dir, Access::ReadOnly).unwrap();
    std::fs::write(&export_path, read_all(&disk)).unwrap();
    let status = std::process::Command::new("qemu-img")
        .args(["compare", "-q", "-f", "raw", "-F", "raw"])
        .arg(&export_path)
        .arg(&raw_path)
        .status()
        .expect("qemu-img is installed");
    assert!(
        status.success(),
        "qemu-img compare found a difference: {status}"
    );
}

#[test]
fn disk_is_send_and_sync() {
    fn shareable<T: Send + Sync>() {}
    shareable::<Disk>();
    shareable::<Arc<Disk>>();
}
