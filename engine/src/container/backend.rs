//! The one place where container operations call the image engine, the
//! image server and the namespace runtime.
//!
//! Every call converts the other module's error into a [`ContainerError`]
//! with the [`Stage`] that selects vzctl's exit code.

use std::path::{Path, PathBuf};
use std::time::Duration;

use uuid::Uuid;

use super::ctid::Ctid;
use super::error::{ContainerError, Stage};
use super::resources::Resources;
use super::runtime;
use crate::error::ErrorKind;
use crate::{image, serve};

/// The cluster size of container images: 1 MiB, the engine's default.
pub const CLUSTER_SIZE: u64 = 1 << 20;

/// A mount request: the image, the mount point and an optional snapshot.
#[derive(Debug, Clone, Copy)]
pub struct MountRequest<'a> {
    /// The image directory.
    pub disk: &'a Path,
    /// The mount point.
    pub target: &'a Path,
    /// A snapshot UUID to mount read-only instead of the top.
    pub snapshot: Option<Uuid>,
}

/// Whether a container runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    /// Init runs with this host PID; `nproc` processes are in the cgroup.
    Running { init_pid: i32, nproc: u64 },
    /// No process of the container exists.
    Stopped,
}

/// The parameters `start` needs to run a container's init.
#[derive(Debug, Clone)]
pub struct StartRequest<'a> {
    /// The container.
    pub ctid: Ctid,
    /// The mounted root filesystem.
    pub root: &'a Path,
    /// The hostname to set inside.
    pub hostname: Option<&'a str>,
    /// Limits for the cgroup.
    pub resources: Resources,
    /// The runtime's state directory (init PID).
    pub state_dir: &'a Path,
    /// Wait until init reports that boot finished.
    pub wait: bool,
}

/// One snapshot of a container's disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotEntry {
    /// The snapshot UUID.
    pub uuid: Uuid,
    /// Its parent snapshot, `None` for the base.
    pub parent: Option<Uuid>,
    /// Whether this is the current (writable) top.
    pub current: bool,
    /// Creation time in seconds since the Unix epoch.
    pub created: u64,
    /// Snapshot name.
    pub name: Option<String>,
    /// Snapshot description.
    pub description: Option<String>,
}

/// Creates an empty image of `size` bytes (rounded up to whole clusters).
pub fn create_disk(disk: &Path, size: u64) -> Result<(), ContainerError> {
    let opts = image::CreateOptions {
        size: size.div_ceil(CLUSTER_SIZE) * CLUSTER_SIZE,
        cluster_size: CLUSTER_SIZE,
    };
    image::Disk::create(disk, &opts).map_err(ContainerError::backend(Stage::ImageCreate))
}

/// Builds an ext4 filesystem with at least `inodes` inodes on the image.
pub fn mkfs(disk: &Path, inodes: Option<u64>) -> Result<(), ContainerError> {
    serve::mkfs(disk, serve::FsType::Ext4, inodes)
        .map_err(ContainerError::backend(Stage::ImageCreate))
}

/// Mounts the image (or a snapshot of it, read-only) at the target.
pub fn mount(request: &MountRequest<'_>) -> Result<(), ContainerError> {
    let stage = if request.snapshot.is_some() {
        Stage::SnapshotMount
    } else {
        Stage::Mount
    };
    // A snapshot of a mounted ext4 was frozen, so its journal is flushed.
    // Its superblock may still carry the needs-recovery flag, which a
    // read-only device cannot clear, so `noload` mounts it without replay.
    let fs_options = request.snapshot.map(|_| "noload".to_string());
    let opts = serve::MountOptions {
        read_only: request.snapshot.is_some(),
        snapshot: request.snapshot.map(|id| id.to_string()),
        fs_options,
    };
    serve::mount(request.disk, request.target, &opts).map_err(ContainerError::backend(stage))?;
    Ok(())
}

/// Unmounts what is mounted at `target` and stops its server.
pub fn umount(target: &Path, force: bool) -> Result<(), ContainerError> {
    serve::umount(target, force).map_err(ContainerError::backend(Stage::Umount))
}

/// Returns where the image is mounted, if its server runs.
pub fn mounted_at(disk: &Path) -> Option<PathBuf> {
    let mounts = serve::list().ok()?;
    let disk = disk.canonicalize().ok()?;
    mounts
        .into_iter()
        .find(|m| m.disk == disk && m.snapshot.is_none() && m.running)
        .map(|m| m.target)
}

/// Returns whether any mount of the image exists, the top or a snapshot.
pub fn has_any_mount(disk: &Path) -> bool {
    let Ok(disk) = disk.canonicalize() else {
        return false;
    };
    serve::list().is_ok_and(|mounts| mounts.iter().any(|m| m.disk == disk))
}

/// A read-only mount of one snapshot of an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotMount {
    /// The snapshot.
    pub id: Uuid,
    /// The mount point.
    pub target: PathBuf,
    /// Whether its image server runs; a dead one left only leftovers.
    pub running: bool,
}

/// Returns the snapshot mounts of the image, live or left by a dead
/// server.
pub fn snapshot_mounts(disk: &Path) -> Vec<SnapshotMount> {
    let Ok(disk) = disk.canonicalize() else {
        return Vec::new();
    };
    let mounts = serve::list().unwrap_or_default();
    mounts
        .into_iter()
        .filter(|m| m.disk == disk)
        .filter_map(|m| {
            let id = Uuid::parse_str(m.snapshot.as_deref()?).ok()?;
            Some(SnapshotMount {
                id,
                target: m.target,
                running: m.running,
            })
        })
        .collect()
}

/// Returns the mount point of the image's top whose server has died, if
/// such leftovers are recorded (after a reboot or a crash of the server).
pub fn dead_mount(disk: &Path) -> Option<PathBuf> {
    let disk = disk.canonicalize().ok()?;
    let mounts = serve::list().ok()?;
    mounts
        .into_iter()
        .find(|m| m.disk == disk && m.snapshot.is_none() && !m.running)
        .map(|m| m.target)
}

/// Returns the virtual size of the image in bytes, from its descriptor.
pub fn image_size(disk: &Path) -> Result<u64, ContainerError> {
    let descriptor = image::store::load_descriptor(&image::io::RealStorage, disk)
        .map_err(ContainerError::backend(Stage::Resize))?;
    Ok(descriptor.virtual_size)
}

/// Grows the mounted image and its filesystem to `size` bytes.
pub fn grow(disk: &Path, size: u64) -> Result<(), ContainerError> {
    let size = size.div_ceil(CLUSTER_SIZE) * CLUSTER_SIZE;
    serve::control(disk, serve::ControlRequest::Grow { size })
        .map_err(ContainerError::backend(Stage::Resize))?;
    Ok(())
}

/// Grows the unmounted image and its filesystem to `size` bytes, rounded
/// up to whole clusters.
pub fn grow_offline(disk: &Path, size: u64) -> Result<(), ContainerError> {
    let size = size.div_ceil(CLUSTER_SIZE) * CLUSTER_SIZE;
    serve::grow_offline(disk, size).map_err(ContainerError::backend(Stage::Resize))
}

/// Takes a snapshot; through the server when the image is mounted.
pub fn snapshot(
    disk: &Path,
    name: Option<&str>,
    description: Option<&str>,
) -> Result<Uuid, ContainerError> {
    let to_err = ContainerError::backend::<serve::ServeError>(Stage::SnapshotCreate);
    if mounted_at(disk).is_some() {
        let request = serve::ControlRequest::Snapshot {
            name: name.map(str::to_string),
            description: description.map(str::to_string),
        };
        return match serve::control(disk, request).map_err(to_err)? {
            serve::ControlResponse::Snapshot { uuid, .. } => Ok(uuid),
            other => Err(unexpected(Stage::SnapshotCreate, &other)),
        };
    }
    let image_err = ContainerError::backend::<image::ImageError>(Stage::SnapshotCreate);
    let opened = image::Disk::open(disk, image::Access::ReadWrite).map_err(image_err)?;
    let uuid = opened
        .snapshot(name, description)
        .map_err(ContainerError::backend(Stage::SnapshotCreate))?;
    opened
        .close()
        .map_err(ContainerError::backend(Stage::SnapshotCreate))?;
    Ok(uuid)
}

fn unexpected(stage: Stage, response: &serve::ControlResponse) -> ContainerError {
    ContainerError::Backend {
        stage,
        kind: ErrorKind::Io,
        message: format!("unexpected reply from the image server: {response:?}"),
    }
}

/// Lists the snapshots of the image.
pub fn snapshots(disk: &Path) -> Result<Vec<SnapshotEntry>, ContainerError> {
    if mounted_at(disk).is_some() {
        let response = serve::control(disk, serve::ControlRequest::SnapshotList)
            .map_err(ContainerError::backend(Stage::SnapshotList))?;
        let serve::ControlResponse::Snapshots { snapshots } = response else {
            return Err(unexpected(Stage::SnapshotList, &response));
        };
        return parse_snapshot_json(&snapshots);
    }
    let opened = image::Disk::open(disk, image::Access::ReadOnly)
        .map_err(ContainerError::backend(Stage::SnapshotList))?;
    let infos = opened.snapshots();
    opened
        .close()
        .map_err(ContainerError::backend(Stage::SnapshotList))?;
    Ok(infos.into_iter().map(entry_of).collect())
}

fn entry_of(info: image::SnapshotInfo) -> SnapshotEntry {
    SnapshotEntry {
        uuid: info.uuid,
        parent: info.parent,
        current: info.current,
        created: info.created,
        name: info.name,
        description: info.description,
    }
}

/// Reads the server's snapshot list, which carries the engine's
/// `SnapshotInfo` records as JSON.
fn parse_snapshot_json(value: &serde_json::Value) -> Result<Vec<SnapshotEntry>, ContainerError> {
    let bad = || unexpected_json(value);
    let items = value.as_array().ok_or_else(bad)?;
    let mut entries = Vec::with_capacity(items.len());
    for item in items {
        let uuid_of = |key: &str| {
            item.get(key)
                .and_then(|v| v.as_str())
                .and_then(|s| Uuid::parse_str(s).ok())
        };
        let text_of = |key: &str| item.get(key).and_then(|v| v.as_str()).map(str::to_string);
        entries.push(SnapshotEntry {
            uuid: uuid_of("uuid").ok_or_else(bad)?,
            parent: uuid_of("parent"),
            current: item
                .get("current")
                .and_then(|v| v.as_bool())
                .unwrap_or(false),
            created: item.get("created").and_then(|v| v.as_u64()).unwrap_or(0),
            name: text_of("name"),
            description: text_of("description"),
        });
    }
    Ok(entries)
}

fn unexpected_json(value: &serde_json::Value) -> ContainerError {
    ContainerError::Backend {
        stage: Stage::SnapshotList,
        kind: ErrorKind::Corrupt,
        message: format!("unexpected snapshot list from the image server: {value}"),
    }
}

/// Deletes snapshot `id`, merging its data into its child. A mounted
/// image goes through its server, which rejects the running top and a
/// snapshot that is mounted itself with the busy kind.
pub fn snapshot_delete(disk: &Path, id: Uuid) -> Result<(), ContainerError> {
    if mounted_at(disk).is_some() {
        let request = serve::ControlRequest::SnapshotDelete {
            snapshot: id.to_string(),
        };
        let response = serve::control(disk, request)
            .map_err(ContainerError::backend(Stage::SnapshotDelete))?;
        return match response {
            serve::ControlResponse::TreeChanged { .. } => Ok(()),
            other => Err(unexpected(Stage::SnapshotDelete, &other)),
        };
    }
    if has_any_mount(disk) {
        return Err(mounted_disk(Stage::SnapshotDelete));
    }
    image::ops::snapshot_delete(disk, &id.to_string())
        .map_err(ContainerError::backend(Stage::SnapshotDelete))
}

/// Returns the busy error of an operation that needs an unmounted image:
/// switch always, and delete while only snapshots of the image are
/// mounted.
fn mounted_disk(stage: Stage) -> ContainerError {
    ContainerError::Backend {
        stage,
        kind: ErrorKind::Busy,
        message: "the image or one of its snapshots is mounted; stop the container and \
                  run umount and snapshot-umount first"
            .to_string(),
    }
}

/// Reverts the image to snapshot `id`; the current top is discarded.
pub fn snapshot_switch(disk: &Path, id: Uuid) -> Result<(), ContainerError> {
    if has_any_mount(disk) {
        return Err(mounted_disk(Stage::SnapshotSwitch));
    }
    image::ops::snapshot_switch(disk, &id.to_string())
        .map_err(ContainerError::backend(Stage::SnapshotSwitch))?;
    Ok(())
}

/// Starts the container's init in new namespaces and a cgroup.
pub fn start(request: &StartRequest<'_>) -> Result<(), ContainerError> {
    let mut spec =
        runtime::StartSpec::new(&request.ctid.to_string(), request.root, request.state_dir);
    spec.hostname = request.hostname.map(str::to_string);
    spec.limits = limits_of(&request.resources);
    spec.wait = request.wait;
    let ctid = request.ctid.get();
    runtime::start(&spec).map_err(|err| match err {
        runtime::RuntimeError::AlreadyRunning { .. } => ContainerError::AlreadyRunning { ctid },
        runtime::RuntimeError::CgroupInUse { path, nproc } => {
            ContainerError::CgroupInUse { ctid, path, nproc }
        }
        other => ContainerError::backend(Stage::Start)(other),
    })?;
    Ok(())
}

fn limits_of(resources: &Resources) -> runtime::Limits {
    runtime::Limits {
        ram: resources.ram,
        swap: resources.swap,
        cpus: resources.cpus,
        cpulimit: resources.cpulimit,
        cpuunits: resources.cpuunits,
        numproc: resources.numproc,
    }
}

/// Stops the container: init shutdown, then a kill of the whole cgroup after
/// `timeout` seconds (at once with `fast`).
pub fn stop(ctid: Ctid, state_dir: &Path, timeout: u64, fast: bool) -> Result<(), ContainerError> {
    let timeout = Duration::from_secs(timeout);
    runtime::stop(&ctid.to_string(), state_dir, timeout, fast)
        .map_err(ContainerError::backend(Stage::Stop))
}

/// Returns whether the runtime has a state file for the container; a
/// stopped container has none, unless its init died without a stop.
pub fn has_run_state(state_dir: &Path) -> bool {
    runtime::state::State::path(state_dir).exists()
}

/// Returns whether the container runs. A state whose init is gone is
/// removed, and the container reported stopped.
pub fn status(ctid: Ctid, state_dir: &Path) -> Result<RunState, ContainerError> {
    let status = runtime::status(&ctid.to_string(), state_dir)
        .map_err(ContainerError::backend(Stage::Status))?;
    Ok(match status {
        runtime::Status::Running { init_pid, nproc } => RunState::Running { init_pid, nproc },
        runtime::Status::Stopped => RunState::Stopped,
    })
}

/// Runs `argv` inside the container and returns its exit status.
pub fn exec(ctid: Ctid, state_dir: &Path, argv: &[String]) -> Result<i32, ContainerError> {
    let opts = runtime::ExecOptions::default();
    runtime::exec(&ctid.to_string(), state_dir, argv, &opts)
        .map_err(ContainerError::backend(Stage::Exec))
}

/// Opens a login shell inside the container on a new pty, or runs
/// `command` there; `on_entered` runs once the shell has joined the
/// container. Returns the exit status.
pub fn enter(
    ctid: Ctid,
    state_dir: &Path,
    command: Option<&[String]>,
    on_entered: &mut dyn FnMut(),
) -> Result<i32, ContainerError> {
    runtime::enter(&ctid.to_string(), state_dir, command, on_entered)
        .map_err(ContainerError::backend(Stage::Exec))
}

/// Applies limits to the running container's cgroup.
pub fn apply_limits(ctid: Ctid, resources: &Resources) -> Result<(), ContainerError> {
    runtime::apply_limits(&ctid.to_string(), &limits_of(resources))
        .map_err(ContainerError::backend(Stage::SetParams))
}

/// Sets the hostname inside the running container's UTS namespace.
pub fn set_hostname(ctid: Ctid, state_dir: &Path, hostname: &str) -> Result<(), ContainerError> {
    runtime::set_hostname(&ctid.to_string(), state_dir, hostname)
        .map_err(ContainerError::backend(Stage::SetParams))
}
