//! Property test: random sequences of write, zero, discard, flush,
//! snapshot, grow and reopen against a sparse in-memory model, on
//! `MemStorage`. Every snapshot is checked against the model's copy taken
//! when it was created. Large grows push the BAT past its first cluster,
//! so data clusters have to move.

use std::collections::BTreeMap;
use std::path::Path;

use lamina_engine::image::memfs::MemStorage;
use lamina_engine::image::{Access, CreateOptions, Disk};
use proptest::prelude::*;
use uuid::Uuid;

const CLUSTER: u64 = 64 << 10;
const START_SIZE: u64 = 16 * CLUSTER;
/// One 64 KiB cluster has room for the header and 15 BAT pages, 7665
/// entries.
/// Growing past that moves the first data clusters.
const BIG_GROW: u64 = 8000;

#[derive(Debug, Clone)]
enum Op {
    Write { offset: u64, len: u64, seed: u8 },
    Zero { offset: u64, len: u64 },
    Discard { offset: u64, len: u64 },
    Flush,
    Snapshot,
    Grow { clusters: u64 },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    // Offsets are per-mille fractions of the current size and lengths are
    // in units of 1/8 cluster, resolved when the operation runs.
    let range = (0u64..1000, 1u64..24);
    prop_oneof![
        6 => (range.clone(), any::<u8>())
            .prop_map(|((offset, len), seed)| Op::Write { offset, len, seed }),
        2 => range.clone().prop_map(|(offset, len)| Op::Zero { offset, len }),
        2 => range.prop_map(|(offset, len)| Op::Discard { offset, len }),
        1 => Just(Op::Flush),
        1 => Just(Op::Snapshot),
        1 => (1u64..8).prop_map(|clusters| Op::Grow { clusters }),
        1 => Just(Op::Grow { clusters: BIG_GROW }),
        1 => Just(Op::Reopen),
    ]
}

/// A disk image as a map from cluster index to content; missing clusters
/// read as zeros.
#[derive(Debug, Clone, Default)]
struct Model {
    size: u64,
    clusters: BTreeMap<u64, Vec<u8>>,
}

impl Model {
    fn write(&mut self, offset: u64, data: &[u8]) {
        let mut done = 0;
        while done < data.len() {
            let pos = offset + done as u64;
            let within = to_usize(pos % CLUSTER);
            let take = (to_usize(CLUSTER) - within).min(data.len() - done);
            let cluster = self
                .clusters
                .entry(pos / CLUSTER)
                .or_insert_with(|| vec![0; to_usize(CLUSTER)]);
            cluster[within..within + take].copy_from_slice(&data[done..done + take]);
            done += take;
        }
    }

    /// Returns one whole cluster.
    fn cluster(&self, cluster: u64) -> Vec<u8> {
        self.clusters
            .get(&cluster)
            .cloned()
            .unwrap_or_else(|| vec![0; to_usize(CLUSTER)])
    }
}

fn span(size: u64, offset: u64, len: u64) -> (u64, u64) {
    let start = size * offset / 1000;
    let len = (len * CLUSTER / 8).min(size - start);
    (start, len)
}

fn to_usize(v: u64) -> usize {
    usize::try_from(v).unwrap()
}

fn read(disk: &Disk, offset: u64, len: u64) -> Vec<u8> {
    let mut buf = vec![0u8; to_usize(len)];
    disk.read_at(&mut buf, offset).unwrap();
    buf
}

/// Compares every cluster the model has data for, plus a spread of
/// others, which must read as zeros.
fn check(disk: &Disk, model: &Model, what: &str) -> Result<(), TestCaseError> {
    prop_assert_eq!(disk.virtual_size(), model.size, "{}: size", what);
    let step = (model.size / CLUSTER / 16).max(1);
    let samples = (0..model.size / CLUSTER).step_by(to_usize(step));
    let clusters: Vec<u64> = model.clusters.keys().copied().chain(samples).collect();
    for cluster in clusters {
        let got = read(disk, cluster * CLUSTER, CLUSTER);
        let expected = model.cluster(cluster);
        prop_assert!(got == expected, "{}: cluster {} differs", what, cluster);
    }
    Ok(())
}

fn run(ops: &[Op]) -> Result<(), TestCaseError> {
    let storage = MemStorage::new();
    let dir = Path::new("/disk");
    let opts = CreateOptions {
        size: START_SIZE,
        cluster_size: CLUSTER,
    };
    Disk::create_with(storage.shared(), dir, &opts).unwrap();
    let mut disk = Disk::open_with(storage.shared(), dir, Access::ReadWrite).unwrap();
    let mut model = Model {
        size: START_SIZE,
        ..Model::default()
    };
    let mut snapshots: Vec<(Uuid, Model)> = Vec::new();

    for (step, op) in ops.iter().enumerate() {
        let what = format!("step {step} {op:?}");
        match op {
            Op::Write { offset, len, seed } => {
                let (start, len) = span(model.size, *offset, *len);
                let data: Vec<u8> = (0..len)
                    .map(|i| seed.wrapping_add(i.to_le_bytes()[0]) | 1)
                    .collect();
                disk.write_at(&data, start).unwrap();
                model.write(start, &data);
                prop_assert!(read(&disk, start, len) == data, "{}: read back", what);
            }
            Op::Zero { offset, len } | Op::Discard { offset, len } => {
                let (start, len) = span(model.size, *offset, *len);
                if matches!(op, Op::Zero { .. }) {
                    disk.zero_range(start, len).unwrap();
                } else {
                    disk.discard(start, len).unwrap();
                }
                model.write(start, &vec![0; to_usize(len)]);
                let got = read(&disk, start, len);
                prop_assert!(got.iter().all(|b| *b == 0), "{}: zeros", what);
            }
            Op::Flush => disk.flush().unwrap(),
            Op::Snapshot => {
                let uuid = disk.snapshot(None, None).unwrap();
                snapshots.push((uuid, model.clone()));
            }
            Op::Grow { clusters } => {
                model.size += clusters * CLUSTER;
                disk.grow(model.size).unwrap();
                check(&disk, &model, &what)?;
            }
            Op::Reopen => {
                disk.close().unwrap();
                disk = Disk::open_with(storage.shared(), dir, Access::ReadWrite).unwrap();
                check(&disk, &model, &what)?;
            }
        }
    }

    disk.close().unwrap();
    let disk = Disk::open_with(storage.shared(), dir, Access::ReadOnly).unwrap();
    check(&disk, &model, "final reopen")?;
    for (uuid, expected) in &snapshots {
        let view = Disk::open_snapshot_with(storage.shared(), dir, &uuid.to_string()).unwrap();
        check(&view, expected, &format!("snapshot {uuid}"))?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn model_random_ops(ops in proptest::collection::vec(op(), 1..40)) {
        run(&ops)?;
    }
}
