//! [`Disk`]: an open chain of deltas, its creation, opening and closing.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use lamina_format::descriptor::{DESCRIPTOR_VERSION, check_snapshot_name};
use lamina_format::{DEFAULT_CLUSTER_SIZE, Descriptor, FormatError, Geometry, Header, Node};
use serde::Serialize;
use uuid::Uuid;

use super::delta::{DeltaFile, PastEof, ScanReport};
use super::error::ImageError;
use super::io::{LockGuard, LockMode, OpenMode, RealStorage, Storage};
use super::map::{ClusterMap, Mapping};
use super::repair::{RepairMode, repair_in_use};
use super::store::{self, LOCK_FILE};

/// Options of [`Disk::create`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreateOptions {
    /// Virtual size in bytes, a multiple of the cluster size.
    pub size: u64,
    /// Cluster size in bytes: a power of two from 64 KiB to 16 MiB.
    pub cluster_size: u64,
}

impl Default for CreateOptions {
    fn default() -> Self {
        CreateOptions {
            size: 0,
            cluster_size: DEFAULT_CLUSTER_SIZE,
        }
    }
}

/// Access mode of [`Disk::open`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Shared lock; no writes.
    ReadOnly,
    /// Exclusive lock; the top delta is marked in use.
    ReadWrite,
}

/// One delta of an open chain, as [`Disk::info`] reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeltaInfo {
    /// The delta's UUID.
    pub uuid: Uuid,
    /// Its file name in the disk directory.
    pub file: String,
    /// Number of clusters with data in this delta.
    pub allocated_clusters: u64,
    /// `allocated_clusters` times the cluster size.
    pub allocated_bytes: u64,
}

/// Summary of an open disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiskInfo {
    /// The disk directory.
    pub dir: PathBuf,
    /// Virtual size in bytes.
    pub virtual_size: u64,
    /// Cluster size in bytes.
    pub cluster_size: u64,
    /// Number of deltas from base to top.
    pub chain_depth: usize,
    /// UUID of the top of the open chain.
    pub top: Uuid,
    /// Whether the disk is open read-only.
    pub read_only: bool,
    /// The deltas from base to top.
    pub deltas: Vec<DeltaInfo>,
    /// Pages of the merged cluster map held in memory.
    pub map_pages: usize,
}

/// One node of the snapshot tree, as [`Disk::snapshots`] reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnapshotInfo {
    /// The delta's UUID.
    pub uuid: Uuid,
    /// Its parent, `None` for a base.
    pub parent: Option<Uuid>,
    /// Snapshot name.
    pub name: Option<String>,
    /// Snapshot description.
    pub description: Option<String>,
    /// Creation time in seconds since the Unix epoch.
    pub created: u64,
    /// Whether this is the writable top of the disk.
    pub current: bool,
    /// The delta file name.
    pub file: String,
}

/// An open disk: the chain from the base to the top and its merged map.
///
/// Every I/O method takes `&self`; share the disk as `Arc<Disk>`. Reads
/// and writes of allocated clusters take no exclusive lock. Snapshot,
/// grow and compact make concurrent I/O wait until they finish; snapshot
/// delete and merge make it wait while they switch to the new chain.
#[derive(Debug)]
pub struct Disk {
    pub(super) storage: Arc<dyn Storage>,
    pub(super) dir: PathBuf,
    pub(super) access: Access,
    _lock: Option<Box<dyn LockGuard>>,
    pub(super) state: RwLock<State>,
    /// Serializes snapshot deletes and merges, whose first phase runs
    /// without the exclusive state lock.
    pub(super) tree_change: Mutex<()>,
    closed: AtomicBool,
}

/// Everything snapshot, grow, delete and merge replace. I/O takes it
/// shared.
#[derive(Debug)]
pub(super) struct State {
    pub descriptor: Descriptor,
    pub chain: Vec<Layer>,
    pub map: ClusterMap,
    pub writer: Option<Writer>,
}

/// One delta of the open chain.
#[derive(Debug)]
pub(super) struct Layer {
    pub node: Node,
    pub delta: DeltaFile,
    pub allocated: AtomicU64,
}

/// State of the writable top.
#[derive(Debug)]
pub(super) struct Writer {
    /// Next physical cluster to allocate at the end of the top file.
    pub next_physical: AtomicU64,
    /// BAT pages of the top changed since the last flush.
    pub dirty: Mutex<BTreeSet<u64>>,
    /// Whether the top file changed since the last flush, so that a flush
    /// of a clean disk costs no sync.
    pub unsynced: AtomicBool,
    /// Virtual clusters being allocated, zeroed or copied up.
    pub busy: ClusterLocks,
    /// Serializes flushes.
    pub flush: Mutex<()>,
    /// Top clusters freed by discard, for reuse by later allocations.
    pub free: Mutex<FreeClusters>,
}

/// Physical clusters of the top that no entry references any more.
///
/// A freed cluster may be reused only once a BAT without its old entry
/// is durable: were it reused earlier, a crash could leave the old entry
/// pointing at another cluster's new data. So clusters wait in `pending`
/// until a flush has written and synced the BAT pages, then move to
/// `ready`, from which allocation takes them.
#[derive(Debug, Default)]
pub(super) struct FreeClusters {
    /// Clusters freed since the last flush began, which the durable BAT
    /// may still reference.
    pub pending: Vec<u64>,
    /// Clusters the durable BAT does not reference, safe to allocate.
    pub ready: Vec<u64>,
}

impl Writer {
    /// Records a changed entry: its BAT page is written, and the file
    /// synced, by the next flush.
    pub fn mark_dirty(&self, cluster: u64) {
        let (page, _) = lamina_format::bat::page_and_slot(cluster);
        self.dirty
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(page);
        self.unsynced.store(true, Ordering::Release);
    }
}

/// A set of locked virtual clusters.
#[derive(Debug, Default)]
pub(super) struct ClusterLocks {
    held: Mutex<HashSet<u64>>,
    released: Condvar,
}

/// Holds one entry of [`ClusterLocks`] until dropped.
pub(super) struct ClusterGuard<'a> {
    locks: &'a ClusterLocks,
    cluster: u64,
}

impl ClusterLocks {
    /// Waits until no one has locked `cluster`, then locks it.
    pub fn lock(&self, cluster: u64) -> ClusterGuard<'_> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        while held.contains(&cluster) {
            held = self.released.wait(held).unwrap_or_else(|e| e.into_inner());
        }
        held.insert(cluster);
        ClusterGuard {
            locks: self,
            cluster,
        }
    }
}

impl Drop for ClusterGuard<'_> {
    fn drop(&mut self) {
        let mut held = self.locks.held.lock().unwrap_or_else(|e| e.into_inner());
        held.remove(&self.cluster);
        drop(held);
        self.locks.released.notify_all();
    }
}

impl State {
    /// Returns the top layer.
    pub fn top(&self) -> &Layer {
        // A chain always has at least one delta.
        &self.chain[self.chain.len() - 1]
    }

    /// Level of the top layer.
    pub fn top_level(&self) -> u8 {
        // The descriptor limits chains to 255 deltas.
        u8::try_from(self.chain.len() - 1).unwrap_or(u8::MAX)
    }

    /// Virtual size of the open chain: its top's.
    pub fn virtual_size(&self) -> u64 {
        self.top().delta.header.geometry.virtual_size()
    }

    /// Cluster size of the chain.
    pub fn cluster_size(&self) -> u64 {
        self.top().delta.cluster_size()
    }
}

impl Writer {
    pub fn new(top: &DeltaFile, file_len: u64) -> Writer {
        let cluster_size = top.cluster_size();
        let first = top.header.data_offset / cluster_size;
        Writer {
            next_physical: AtomicU64::new(first.max(file_len.div_ceil(cluster_size))),
            dirty: Mutex::new(BTreeSet::new()),
            unsynced: AtomicBool::new(false),
            busy: ClusterLocks::default(),
            flush: Mutex::new(()),
            free: Mutex::new(FreeClusters::default()),
        }
    }

    /// Records a top cluster whose entry was just cleared, for reuse
    /// after the next flush.
    pub fn release(&self, physical: u64) {
        self.free_lists().pending.push(physical);
    }

    /// Forgets every freed cluster below `end`, or all of them, for callers
    /// that reuse or cut off that part of the file themselves.
    pub fn forget_free(&self, end: Option<u64>) {
        let mut free = self.free_lists();
        match end {
            Some(end) => {
                free.pending.retain(|p| *p >= end);
                free.ready.retain(|p| *p >= end);
            }
            None => {
                free.pending.clear();
                free.ready.clear();
            }
        }
    }

    pub fn free_lists(&self) -> std::sync::MutexGuard<'_, FreeClusters> {
        self.free.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The chain [`Disk::open_view`] opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum View {
    Top(Access),
    Snapshot(Uuid),
}

impl Disk {
    /// Creates a disk in `dir`, which must be missing or empty. On failure
    /// the files created so far are removed.
    pub fn create(dir: &Path, opts: &CreateOptions) -> Result<(), ImageError> {
        Disk::create_with(RealStorage::shared(), dir, opts)
    }

    /// Like [`Disk::create`] on any storage.
    pub fn create_with(
        storage: Arc<dyn Storage>,
        dir: &Path,
        opts: &CreateOptions,
    ) -> Result<(), ImageError> {
        let geometry = Geometry::new(opts.cluster_size, opts.size)
            .map_err(|source| ImageError::InvalidGeometry { source })?;
        let storage = storage.as_ref();
        let made_dir = prepare_dir(storage, dir)?;
        let uuid = Uuid::new_v4();
        let file = store::delta_file_name(uuid);
        let result = create_files(storage, dir, geometry, uuid, &file);
        if result.is_err() {
            for name in [store::DESCRIPTOR_TEMP, LOCK_FILE, file.as_str()] {
                let _ = storage.remove_file(&dir.join(name));
            }
            if made_dir {
                let _ = storage.remove_dir(dir);
            }
        }
        result
    }

    /// Opens the chain ending at the current top.
    pub fn open(dir: &Path, access: Access) -> Result<Disk, ImageError> {
        Disk::open_with(RealStorage::shared(), dir, access)
    }

    /// Like [`Disk::open`] on any storage.
    pub fn open_with(
        storage: Arc<dyn Storage>,
        dir: &Path,
        access: Access,
    ) -> Result<Disk, ImageError> {
        Disk::open_view(storage, dir, View::Top(access))
    }

    /// Opens a read-only view of the chain ending at a snapshot, named by
    /// UUID or name. Takes no lock and writes nothing, so it works while
    /// another process has the disk open read-write. Snapshot deltas do
    /// not change, so the view is stable.
    ///
    /// NOTE: naming the current top gives a view of a delta that is being
    /// written. The view reads the entries of the last flush as of the
    /// open and never changes; because the top is marked in use, a BAT
    /// page read while it is rewritten is accepted without its CRC.
    pub fn open_snapshot(dir: &Path, id_or_name: &str) -> Result<Disk, ImageError> {
        Disk::open_snapshot_with(RealStorage::shared(), dir, id_or_name)
    }

    /// Like [`Disk::open_snapshot`] on any storage.
    pub fn open_snapshot_with(
        storage: Arc<dyn Storage>,
        dir: &Path,
        id_or_name: &str,
    ) -> Result<Disk, ImageError> {
        let uuid = resolve_with(storage.as_ref(), dir, id_or_name)?;
        Disk::open_view(storage, dir, View::Snapshot(uuid))
    }

    fn open_view(storage: Arc<dyn Storage>, dir: &Path, view: View) -> Result<Disk, ImageError> {
        let lock = take_lock(storage.as_ref(), dir, view)?;
        let descriptor = store::load_descriptor(storage.as_ref(), dir)?;
        let (end, access) = match view {
            View::Top(access) => (descriptor.top, access),
            View::Snapshot(uuid) => (uuid, Access::ReadOnly),
        };
        let nodes: Vec<Node> = descriptor
            .chain(end)
            .map_err(|source| ImageError::Descriptor {
                path: store::descriptor_path(dir),
                source,
            })?
            .into_iter()
            .cloned()
            .collect();

        let chain = open_chain(storage.as_ref(), dir, nodes, access)?;
        let writable = access == Access::ReadWrite;
        let (map, chain) = build_map(storage.as_ref(), chain, writable, descriptor.cluster_size)?;
        let mut state = State {
            descriptor,
            chain,
            map,
            writer: None,
        };
        if writable {
            start_writing(storage.as_ref(), dir, &mut state)?;
        }
        Ok(Disk {
            storage,
            dir: dir.to_path_buf(),
            access,
            _lock: lock,
            state: RwLock::new(state),
            tree_change: Mutex::new(()),
            closed: AtomicBool::new(false),
        })
    }

    /// Virtual size in bytes.
    pub fn virtual_size(&self) -> u64 {
        self.read_state().virtual_size()
    }

    /// Cluster size in bytes.
    pub fn cluster_size(&self) -> u64 {
        self.read_state().cluster_size()
    }

    /// Returns the disk directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Summary of the open chain.
    pub fn info(&self) -> DiskInfo {
        let state = self.read_state();
        let cluster_size = state.cluster_size();
        let deltas = state
            .chain
            .iter()
            .map(|layer| {
                let clusters = layer.allocated.load(Ordering::Relaxed);
                DeltaInfo {
                    uuid: layer.node.uuid,
                    file: layer.node.file.clone(),
                    allocated_clusters: clusters,
                    allocated_bytes: clusters * cluster_size,
                }
            })
            .collect();
        DiskInfo {
            dir: self.dir.clone(),
            virtual_size: state.virtual_size(),
            cluster_size,
            chain_depth: state.chain.len(),
            top: state.top().node.uuid,
            read_only: self.access == Access::ReadOnly,
            deltas,
            map_pages: state.map.page_count(),
        }
    }

    /// Lists every node of the snapshot tree, from the descriptor as it was
    /// when the disk was opened or last changed through this handle.
    pub fn snapshots(&self) -> Vec<SnapshotInfo> {
        let state = self.read_state();
        snapshot_infos(&state.descriptor)
    }

    /// Flushes, clears the in-use flag of the top and releases the lock.
    pub fn close(self) -> Result<(), ImageError> {
        self.closed.store(true, Ordering::Release);
        self.finish()
    }

    fn finish(&self) -> Result<(), ImageError> {
        if self.access != Access::ReadWrite {
            return Ok(());
        }
        self.flush()?;
        let mut state = self.write_state();
        let top = state.chain.len() - 1;
        let delta = &mut state.chain[top].delta;
        delta.header.in_use = false;
        delta.write_header()?;
        tracing::debug!(dir = %self.dir.display(), "disk closed");
        Ok(())
    }

    pub(super) fn read_state(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn write_state(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn check_writable(&self) -> Result<(), ImageError> {
        if self.access == Access::ReadWrite {
            Ok(())
        } else {
            Err(ImageError::ReadOnly {
                dir: self.dir.clone(),
            })
        }
    }

    /// Validates a new snapshot name against the descriptor.
    pub(super) fn check_new_name(state: &State, name: Option<&str>) -> Result<(), ImageError> {
        let Some(name) = name else { return Ok(()) };
        let taken = state
            .descriptor
            .deltas
            .iter()
            .any(|n| n.name.as_deref() == Some(name));
        if taken || check_snapshot_name(name).is_err() {
            return Err(ImageError::BadSnapshotName {
                name: name.to_string(),
            });
        }
        Ok(())
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        if self.closed.load(Ordering::Acquire) {
            return;
        }
        if let Err(error) = self.finish() {
            tracing::error!(dir = %self.dir.display(), %error, "closing the disk on drop failed");
        }
    }
}

/// Resolves a snapshot UUID or name to its UUID.
pub fn resolve_snapshot(dir: &Path, id_or_name: &str) -> Result<Uuid, ImageError> {
    resolve_with(&RealStorage, dir, id_or_name)
}

fn resolve_with(storage: &dyn Storage, dir: &Path, id_or_name: &str) -> Result<Uuid, ImageError> {
    let descriptor = store::load_descriptor(storage, dir)?;
    descriptor
        .find(id_or_name)
        .map(|n| n.uuid)
        .ok_or_else(|| ImageError::SnapshotNotFound {
            dir: dir.to_path_buf(),
            id: id_or_name.to_string(),
        })
}

pub(super) fn snapshot_infos(descriptor: &Descriptor) -> Vec<SnapshotInfo> {
    let mut nodes: Vec<&Node> = descriptor.deltas.iter().collect();
    nodes.sort_by_key(|n| (n.created, n.uuid));
    nodes
        .into_iter()
        .map(|n| SnapshotInfo {
            uuid: n.uuid,
            parent: n.parent,
            name: n.name.clone(),
            description: n.description.clone(),
            created: n.created,
            current: n.uuid == descriptor.top,
            file: n.file.clone(),
        })
        .collect()
}

/// Creates `dir` if missing and checks that it is empty. Returns whether
/// it was created.
fn prepare_dir(storage: &dyn Storage, dir: &Path) -> Result<bool, ImageError> {
    match storage.list_dir(dir) {
        Ok(names) if names.is_empty() => Ok(false),
        Ok(_) => Err(ImageError::DirNotEmpty {
            dir: dir.to_path_buf(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            storage
                .create_dir_all(dir)
                .map_err(|e| ImageError::io("create directory", dir, e))?;
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                store::sync_dir(storage, parent)?;
            }
            Ok(true)
        }
        Err(e) => Err(ImageError::io("list", dir, e)),
    }
}

/// Writes the base delta, the lock file and, last, the descriptor, which
/// makes the disk exist.
fn create_files(
    storage: &dyn Storage,
    dir: &Path,
    geometry: Geometry,
    uuid: Uuid,
    file: &str,
) -> Result<(), ImageError> {
    DeltaFile::create(storage, &dir.join(file), Header::new(geometry, uuid, None))?;
    let lock = dir.join(LOCK_FILE);
    storage
        .open(&lock, OpenMode::CreateNew)
        .map_err(|e| ImageError::io("create", &lock, e))?;
    store::sync_dir(storage, dir)?;

    let descriptor = Descriptor {
        version: DESCRIPTOR_VERSION,
        virtual_size: geometry.virtual_size(),
        cluster_size: geometry.cluster_size(),
        top: uuid,
        deltas: vec![Node {
            uuid,
            parent: None,
            file: file.to_string(),
            name: None,
            description: None,
            created: store::now(),
        }],
    };
    store::save_descriptor(storage, dir, &descriptor)?;
    tracing::info!(dir = %dir.display(), size = geometry.virtual_size(), "disk created");
    Ok(())
}

fn take_lock(
    storage: &dyn Storage,
    dir: &Path,
    view: View,
) -> Result<Option<Box<dyn LockGuard>>, ImageError> {
    let mode = match view {
        View::Top(Access::ReadWrite) => LockMode::Exclusive,
        View::Top(Access::ReadOnly) => LockMode::Shared,
        View::Snapshot(_) => return Ok(None),
    };
    store::lock_disk(storage, dir, mode).map(Some)
}

/// Opens every delta of the chain and checks that the headers agree with
/// the descriptor and with each other.
fn open_chain(
    storage: &dyn Storage,
    dir: &Path,
    nodes: Vec<Node>,
    access: Access,
) -> Result<Vec<Layer>, ImageError> {
    let top = nodes.len() - 1;
    let mut chain: Vec<Layer> = Vec::with_capacity(nodes.len());
    for (level, node) in nodes.into_iter().enumerate() {
        let path = dir.join(&node.file);
        let mode = if level == top && access == Access::ReadWrite {
            OpenMode::ReadWrite
        } else {
            OpenMode::Read
        };
        let delta = DeltaFile::open(storage, &path, mode)?;
        let below = chain.last().map(|l| &l.delta.header);
        check_link(&node, &delta.header, below).map_err(|source| ImageError::Chain {
            uuid: node.uuid,
            path: path.clone(),
            source,
        })?;
        chain.push(Layer {
            node,
            delta,
            allocated: AtomicU64::new(0),
        });
    }
    Ok(chain)
}

/// Checks that a delta's header names its node and the delta below it,
/// and that its geometry fits on that delta's.
pub(super) fn check_link(
    node: &Node,
    header: &Header,
    below: Option<&Header>,
) -> Result<(), FormatError> {
    if header.uuid != node.uuid {
        return Err(FormatError::UuidMismatch {
            expected: node.uuid,
            found: header.uuid,
        });
    }
    let expected = below.map(|b| b.uuid);
    if header.parent != expected || node.parent != expected {
        return Err(FormatError::ParentMismatch {
            uuid: header.uuid,
            expected,
            found: header.parent,
        });
    }
    let Some(below) = below else { return Ok(()) };
    let (cluster_size, expected_cs) = (
        header.geometry.cluster_size(),
        below.geometry.cluster_size(),
    );
    if cluster_size != expected_cs {
        return Err(FormatError::ChainClusterSizeMismatch {
            uuid: header.uuid,
            expected: expected_cs,
            found: cluster_size,
        });
    }
    if below.geometry.virtual_size() > header.geometry.virtual_size() {
        return Err(FormatError::ChainVirtualSizeMismatch {
            parent: below.uuid,
            parent_size: below.geometry.virtual_size(),
            child: header.uuid,
            child_size: header.geometry.virtual_size(),
        });
    }
    Ok(())
}

/// Scans every delta's BAT from the base up into one merged map. Deltas
/// marked in use are repaired when `writable`, otherwise their entries
/// past the end of the file are ignored.
fn build_map(
    storage: &dyn Storage,
    chain: Vec<Layer>,
    writable: bool,
    cluster_size: u64,
) -> Result<(ClusterMap, Vec<Layer>), ImageError> {
    let map = ClusterMap::default();
    let mut chain = chain;
    let top = chain.len() - 1;
    for (level, layer) in chain.iter_mut().enumerate() {
        let is_top = level == top;
        let level = u8::try_from(level).unwrap_or(u8::MAX);
        if layer.delta.header.geometry.cluster_size() != cluster_size {
            return Err(ImageError::Chain {
                uuid: layer.node.uuid,
                path: layer.delta.path().to_path_buf(),
                source: FormatError::ChainClusterSizeMismatch {
                    uuid: layer.node.uuid,
                    expected: cluster_size,
                    found: layer.delta.header.geometry.cluster_size(),
                },
            });
        }
        let in_use = layer.delta.header.in_use;
        let policy = if in_use {
            PastEof::Drop
        } else {
            PastEof::Reject
        };
        let report = scan_into_map(&map, level, &layer.delta, policy)?;
        layer.allocated.store(report.allocated, Ordering::Relaxed);
        if in_use {
            let mode = match (writable, is_top) {
                (false, _) => RepairMode::InMemory,
                (true, true) => RepairMode::Top,
                (true, false) => RepairMode::Lower,
            };
            repair_in_use(storage, layer, &report, mode)?;
        }
    }
    Ok((map, chain))
}

/// Scans a delta's BAT into `map` at `level`, over the levels below it.
pub(super) fn scan_into_map(
    map: &ClusterMap,
    level: u8,
    delta: &DeltaFile,
    policy: PastEof,
) -> Result<ScanReport, ImageError> {
    delta.scan(policy, |cluster, entry| {
        let shadows = map.get(cluster).is_some();
        map.set(
            cluster,
            Some(Mapping {
                level,
                entry,
                shadows,
            }),
        );
    })
}

/// Marks the top in use and aligns the descriptor's size with it.
fn start_writing(storage: &dyn Storage, dir: &Path, state: &mut State) -> Result<(), ImageError> {
    let size = state.virtual_size();
    if state.descriptor.virtual_size != size {
        tracing::warn!(
            dir = %dir.display(),
            descriptor = state.descriptor.virtual_size,
            top = size,
            "descriptor size differs from the top delta, taking the top's"
        );
        state.descriptor.virtual_size = size;
        store::save_descriptor(storage, dir, &state.descriptor)?;
    }
    let top = state.chain.len() - 1;
    let delta = &mut state.chain[top].delta;
    let file_len = delta.file_len()?;
    delta.header.in_use = true;
    delta.write_header()?;
    state.writer = Some(Writer::new(&state.chain[top].delta, file_len));
    Ok(())
}
