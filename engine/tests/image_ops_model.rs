//! Property test of the snapshot tree: random sequences of write, zero,
//! discard, flush, snapshot, switch, delete, merge and grow against a flat
//! in-memory model, on `MemStorage`. The model keeps the current content
//! and the content and parent of every snapshot. The current content is
//! compared after each operation, and every snapshot is read through
//! `Disk::open_snapshot` after each change of the tree.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use lamina_engine::image::check::{self, CheckMode, CheckResult};
use lamina_engine::image::io::Storage;
use lamina_engine::image::memfs::MemStorage;
use lamina_engine::image::ops::{self, MergeScope, OpsError};
use lamina_engine::image::{Access, CreateOptions, Disk};
use proptest::prelude::*;

const CLUSTER: u64 = 64 << 10;
const START_SIZE: u64 = 16 * CLUSTER;
const DIR: &str = "/m/disk";

#[derive(Debug, Clone)]
enum Op {
    Write { offset: u64, len: u64, seed: u8 },
    Zero { offset: u64, len: u64 },
    Discard { offset: u64, len: u64 },
    Flush,
    Snapshot,
    Switch { pick: usize },
    Delete { pick: usize },
    Merge,
    MergeAll,
    Grow { clusters: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    // Offsets and lengths are per-mille fractions of the current size,
    // resolved when the operation runs, so they stay in range.
    let range = (0u64..1000, 1u64..400);
    prop_oneof![
        6 => (range.clone(), any::<u8>())
            .prop_map(|((offset, len), seed)| Op::Write { offset, len, seed }),
        2 => range.clone().prop_map(|(offset, len)| Op::Zero { offset, len }),
        2 => range.prop_map(|(offset, len)| Op::Discard { offset, len }),
        1 => Just(Op::Flush),
        3 => Just(Op::Snapshot),
        2 => any::<usize>().prop_map(|pick| Op::Switch { pick }),
        2 => any::<usize>().prop_map(|pick| Op::Delete { pick }),
        1 => Just(Op::Merge),
        1 => Just(Op::MergeAll),
        1 => (1u64..4).prop_map(|clusters| Op::Grow { clusters }),
    ]
}

fn span(size: u64, offset: u64, len: u64) -> (u64, u64) {
    let start = size * offset / 1000;
    let len = (size * len / 1000).clamp(1, size - start);
    (start, len)
}

fn to_usize(v: u64) -> usize {
    usize::try_from(v).unwrap()
}

/// A snapshot in the model.
#[derive(Debug, Clone)]
struct Snap {
    content: Vec<u8>,
    parent: Option<String>,
}

/// The flat model: current content, the top's parent, every snapshot.
#[derive(Debug, Default)]
struct Model {
    current: Vec<u8>,
    top_parent: Option<String>,
    snaps: BTreeMap<String, Snap>,
    next: u32,
}

impl Model {
    fn pick(&self, pick: usize) -> Option<String> {
        let names: Vec<&String> = self.snaps.keys().collect();
        (!names.is_empty()).then(|| names[pick % names.len()].clone())
    }

    /// Removes a snapshot; its children take its parent.
    fn delete(&mut self, name: &str) {
        let removed = self.snaps.remove(name).unwrap();
        for snap in self.snaps.values_mut() {
            if snap.parent.as_deref() == Some(name) {
                snap.parent.clone_from(&removed.parent);
            }
        }
        if self.top_parent.as_deref() == Some(name) {
            self.top_parent = removed.parent;
        }
    }
}

struct Harness {
    storage: Arc<dyn Storage>,
    disk: Option<Disk>,
    model: Model,
}

impl Harness {
    fn new() -> Harness {
        let storage = MemStorage::new().shared();
        let opts = CreateOptions {
            size: START_SIZE,
            cluster_size: CLUSTER,
        };
        Disk::create_with(storage.clone(), Path::new(DIR), &opts).unwrap();
        let mut harness = Harness {
            storage,
            disk: None,
            model: Model {
                current: vec![0; to_usize(START_SIZE)],
                ..Model::default()
            },
        };
        harness.reopen();
        harness
    }

    fn dir() -> &'static Path {
        Path::new(DIR)
    }

    fn disk(&self) -> &Disk {
        self.disk.as_ref().unwrap()
    }

    fn reopen(&mut self) {
        let disk = Disk::open_with(self.storage.clone(), Harness::dir(), Access::ReadWrite);
        self.disk = Some(disk.unwrap());
    }

    /// Closes the disk for an offline operation and reopens it after.
    fn offline<T>(&mut self, op: impl FnOnce(Arc<dyn Storage>) -> T) -> T {
        self.disk.take().unwrap().close().unwrap();
        let result = op(self.storage.clone());
        self.reopen();
        result
    }

    fn size(&self) -> u64 {
        self.model.current.len() as u64
    }

    fn apply(&mut self, op: &Op) -> bool {
        let size = self.size();
        match *op {
            Op::Write { offset, len, seed } => {
                let (start, len) = span(size, offset, len);
                let data: Vec<u8> = (0..len)
                    .map(|i| seed.wrapping_add(u8::try_from(i % 253).unwrap()) | 1)
                    .collect();
                self.disk().write_at(&data, start).unwrap();
                self.model.current[to_usize(start)..to_usize(start + len)].copy_from_slice(&data);
            }
            Op::Zero { offset, len } | Op::Discard { offset, len } => {
                let (start, len) = span(size, offset, len);
                if matches!(op, Op::Zero { .. }) {
                    self.disk().zero_range(start, len).unwrap();
                } else {
                    self.disk().discard(start, len).unwrap();
                }
                self.model.current[to_usize(start)..to_usize(start + len)].fill(0);
            }
            Op::Flush => self.disk().flush().unwrap(),
            Op::Snapshot => self.snapshot(),
            Op::Switch { pick } => return self.switch(pick),
            Op::Delete { pick } => return self.delete(pick),
            Op::Merge | Op::MergeAll => return self.merge(matches!(op, Op::MergeAll)),
            Op::Grow { clusters } => {
                let new_size = size + clusters * CLUSTER;
                self.disk().grow(new_size).unwrap();
                self.model.current.resize(to_usize(new_size), 0);
            }
        }
        false
    }

    fn snapshot(&mut self) {
        let name = format!("s{}", self.model.next);
        self.model.next += 1;
        self.disk().snapshot(Some(&name), None).unwrap();
        let snap = Snap {
            content: self.model.current.clone(),
            parent: self.model.top_parent.replace(name.clone()),
        };
        self.model.snaps.insert(name, snap);
    }

    fn switch(&mut self, pick: usize) -> bool {
        let Some(name) = self.model.pick(pick) else {
            return false;
        };
        self.offline(|s| ops::snapshot_switch_with(s, Harness::dir(), &name).unwrap());
        self.model.current = self.model.snaps[&name].content.clone();
        self.model.top_parent = Some(name);
        true
    }

    fn delete(&mut self, pick: usize) -> bool {
        let Some(name) = self.model.pick(pick) else {
            return false;
        };
        self.offline(|s| ops::snapshot_delete_with(s, Harness::dir(), &name).unwrap());
        self.model.delete(&name);
        true
    }

    fn merge(&mut self, all: bool) -> bool {
        let scope = if all {
            MergeScope::All
        } else {
            MergeScope::Parent
        };
        let result = self.offline(|s| ops::snapshot_merge_with(s, Harness::dir(), scope));
        let Some(parent) = self.model.top_parent.clone() else {
            assert!(
                matches!(result, Err(OpsError::NothingToMerge { .. })),
                "{result:?}"
            );
            return false;
        };
        result.unwrap();
        self.model.delete(&parent);
        while all && let Some(next) = self.model.top_parent.clone() {
            self.model.delete(&next);
        }
        true
    }

    fn check_current(&self, step: usize) {
        let disk = self.disk();
        assert_eq!(disk.virtual_size(), self.size(), "step {step}: size");
        let mut buf = vec![0u8; self.model.current.len()];
        disk.read_at(&mut buf, 0).unwrap();
        assert!(
            buf == self.model.current,
            "step {step}: current content differs"
        );
    }

    fn check_tree(&self, step: usize) {
        let infos = self.disk().snapshots();
        let named: Vec<String> = infos.iter().filter_map(|i| i.name.clone()).collect();
        let expected: Vec<&String> = self.model.snaps.keys().collect();
        let mut sorted = named.clone();
        sorted.sort();
        assert_eq!(
            sorted.iter().collect::<Vec<_>>(),
            expected,
            "step {step}: names"
        );
        for (name, snap) in &self.model.snaps {
            let view = Disk::open_snapshot_with(self.storage.clone(), Harness::dir(), name)
                .unwrap_or_else(|e| panic!("step {step}: open {name}: {e}"));
            let mut buf = vec![0u8; snap.content.len()];
            assert_eq!(
                view.virtual_size(),
                snap.content.len() as u64,
                "step {step}: {name}"
            );
            view.read_at(&mut buf, 0).unwrap();
            assert!(buf == snap.content, "step {step}: snapshot {name} differs");
            let info = infos
                .iter()
                .find(|i| i.name.as_deref() == Some(name))
                .unwrap();
            let parent = info
                .parent
                .and_then(|p| infos.iter().find(|i| i.uuid == p))
                .and_then(|i| i.name.clone());
            assert_eq!(parent, snap.parent, "step {step}: parent of {name}");
        }
    }

    fn finish(mut self) {
        self.disk.take().unwrap().close().unwrap();
        let report = check::check_with(self.storage.clone(), Harness::dir(), CheckMode::Report);
        let report = report.unwrap();
        assert_eq!(report.result, CheckResult::Clean, "{report:#?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn tree_matches_model(ops in prop::collection::vec(op(), 1..48)) {
        let mut harness = Harness::new();
        for (step, op) in ops.iter().enumerate() {
            let tree_changed = harness.apply(op);
            harness.check_current(step);
            if tree_changed || matches!(op, Op::Snapshot) {
                harness.check_tree(step);
            }
        }
        harness.check_tree(ops.len());
        harness.finish();
    }
}
