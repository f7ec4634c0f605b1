//! The one place where container operations call the image engine, the
//! image server and the namespace runtime.
//!
//! Every call converts the other module's error into a [`ContainerError`]
//! with the [`Stage`] that selects vzctl's exit code.

use std::path::{Path, PathBuf};

use uuid::Uuid;

use super::ctid::Ctid;
use super::error::{ContainerError, Stage};
use super::resources::Resources;
use crate::error::ErrorKind;

/// The cluster size of container images: 1 MiB, the engine's default.
pub const CLUSTER_SIZE: u64 = 1 << 20;

/// What to mount and where.
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

/// What `start` needs to run a container's init.
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
    /// Where the runtime keeps its state (init PID).
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

fn unavailable(stage: Stage, what: &str) -> ContainerError {
    ContainerError::Backend {
        stage,
        kind: ErrorKind::Unsupported,
        message: format!("{what} is not available in this build"),
    }
}

/// Creates an empty image of `size` bytes (rounded up to whole clusters).
pub fn create_disk(disk: &Path, size: u64) -> Result<(), ContainerError> {
    let _ = (disk, size.div_ceil(CLUSTER_SIZE));
    Err(unavailable(Stage::ImageCreate, "image creation"))
}

/// Builds an ext4 filesystem with at least `inodes` inodes on the image.
pub fn mkfs(disk: &Path, inodes: Option<u64>) -> Result<(), ContainerError> {
    let _ = (disk, inodes);
    Err(unavailable(
        Stage::ImageCreate,
        "mkfs through the image server",
    ))
}

/// Mounts the image (or a snapshot of it, read-only) at the target.
pub fn mount(request: &MountRequest<'_>) -> Result<(), ContainerError> {
    let stage = if request.snapshot.is_some() {
        Stage::SnapshotMount
    } else {
        Stage::Mount
    };
    Err(unavailable(stage, "the image server"))
}

/// Unmounts what is mounted at `target` and stops its server.
pub fn umount(target: &Path, force: bool) -> Result<(), ContainerError> {
    let _ = (target, force);
    Err(unavailable(Stage::Umount, "the image server"))
}

/// Returns where the image is mounted, if its server runs.
pub fn mounted_at(disk: &Path) -> Option<PathBuf> {
    let _ = disk;
    None
}

/// Grows the mounted image and its filesystem to `size` bytes.
pub fn grow(disk: &Path, size: u64) -> Result<(), ContainerError> {
    let _ = (disk, size);
    Err(unavailable(Stage::Resize, "online grow"))
}

/// Takes a snapshot; through the server when the image is mounted.
pub fn snapshot(
    disk: &Path,
    name: Option<&str>,
    description: Option<&str>,
) -> Result<Uuid, ContainerError> {
    let _ = (disk, name, description);
    Err(unavailable(Stage::SnapshotCreate, "snapshots"))
}

/// Lists the snapshots of the image.
pub fn snapshots(disk: &Path) -> Result<Vec<SnapshotEntry>, ContainerError> {
    let _ = disk;
    Err(unavailable(Stage::SnapshotList, "snapshot listing"))
}

/// Deletes snapshot `id`, merging its data into its child.
pub fn snapshot_delete(disk: &Path, id: Uuid) -> Result<(), ContainerError> {
    let _ = (disk, id);
    Err(unavailable(Stage::SnapshotDelete, "snapshot deletion"))
}

/// Reverts the image to snapshot `id`; the current top is discarded.
pub fn snapshot_switch(disk: &Path, id: Uuid) -> Result<(), ContainerError> {
    let _ = (disk, id);
    Err(unavailable(Stage::SnapshotSwitch, "snapshot switching"))
}

/// Starts the container's init in new namespaces and a cgroup.
pub fn start(request: &StartRequest<'_>) -> Result<(), ContainerError> {
    let _ = request;
    Err(unavailable(Stage::Start, "the container runtime"))
}

/// Stops the container: init shutdown, then a kill of the whole cgroup after
/// `timeout` seconds (at once with `fast`).
pub fn stop(ctid: Ctid, state_dir: &Path, timeout: u64, fast: bool) -> Result<(), ContainerError> {
    let _ = (ctid, state_dir, timeout, fast);
    Err(unavailable(Stage::Stop, "the container runtime"))
}

/// Returns whether the container runs.
pub fn status(ctid: Ctid, state_dir: &Path) -> Result<RunState, ContainerError> {
    let _ = (ctid, state_dir);
    // TODO: ask the namespace runtime once it exists; until then no container can run.
    Ok(RunState::Stopped)
}

/// Runs `argv` inside the container and returns its exit status.
pub fn exec(ctid: Ctid, state_dir: &Path, argv: &[String]) -> Result<i32, ContainerError> {
    let _ = (ctid, state_dir, argv);
    Err(unavailable(Stage::Exec, "the container runtime"))
}

/// Opens a shell inside the container on a new pty; `command` is typed
/// into it first. Returns the shell's exit status.
pub fn enter(ctid: Ctid, state_dir: &Path, command: Option<&str>) -> Result<i32, ContainerError> {
    let _ = (ctid, state_dir, command);
    Err(unavailable(Stage::Exec, "the container runtime"))
}

/// Applies limits to the running container's cgroup.
pub fn apply_limits(ctid: Ctid, resources: &Resources) -> Result<(), ContainerError> {
    let _ = (ctid, resources);
    Err(unavailable(Stage::SetParams, "the container runtime"))
}

/// Sets the hostname inside the running container's UTS namespace.
pub fn set_hostname(ctid: Ctid, state_dir: &Path, hostname: &str) -> Result<(), ContainerError> {
    let _ = (ctid, state_dir, hostname);
    Err(unavailable(Stage::SetParams, "the container runtime"))
}
