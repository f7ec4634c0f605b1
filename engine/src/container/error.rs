//! Errors of the container layer and the vzctl exit code of each.

use std::io;
use std::path::PathBuf;

use crate::error::{ErrorKind, HasKind};

use super::config::ConfigError;
use super::template::TemplateError;
use super::units::UnitError;

/// A failed container operation.
///
/// Each variant maps to one of vzctl's exit codes through
/// [`ContainerError::exit_code`], so that scripts written for vzctl see the
/// codes they expect.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// The command line named a container that is not a valid CTID or name.
    #[error("Bad CT ID {value}: use a number from 1 to {max} or a registered name")]
    BadCtid { value: String, max: u32 },

    /// A name was given that is not registered.
    #[error("Unable to find container by name {name}")]
    NameNotFound { name: String },

    /// A container name contains characters vzctl does not allow.
    #[error("Invalid container name {name:?}: use letters, digits, space and -+_.")]
    BadName { name: String },

    /// A container name is registered to another container.
    #[error("Name {name} is already in use by container {owner}")]
    NameInUse { name: String, owner: u32 },

    /// An option value is malformed or out of range.
    #[error("Invalid value for {option}: {value:?}: {reason}")]
    BadValue {
        option: String,
        value: String,
        reason: String,
    },

    /// A size or count could not be parsed.
    #[error("Invalid value for {option}")]
    BadUnit {
        option: String,
        #[source]
        source: UnitError,
    },

    /// A combination of options is not allowed.
    #[error("{message}")]
    BadUsage { message: String },

    /// The container's config file does not exist.
    #[error("Container config file does not exist: {}", path.display())]
    ConfigMissing { ctid: u32, path: PathBuf },

    /// A config file could not be read or written.
    #[error(transparent)]
    Config(#[from] ConfigError),

    /// A config value is present but unusable.
    #[error("Invalid {key}={value:?} in {}: {reason}", path.display())]
    InvalidConfig {
        path: PathBuf,
        key: String,
        value: String,
        reason: String,
    },

    /// The requested sample config does not exist.
    #[error("Sample config {name} not found: {} does not exist", path.display())]
    SampleNotFound { name: String, path: PathBuf },

    /// `--config` was given for a container whose config already exists.
    #[error("Config file {} already exists; remove it or omit --config", path.display())]
    ConfigExists { path: PathBuf },

    /// Neither the command line nor the config names an OS template.
    #[error(
        "OS template is not specified: pass --ostemplate NAME or set DEF_OSTEMPLATE in the \
         global config"
    )]
    TemplateNotSpecified,

    /// The template cache has no tarball for the template.
    #[error("Cached OS template {name} not found in {}: run scripts/make-template {name}", dir.display())]
    TemplateNotFound { name: String, dir: PathBuf },

    /// Extracting the template failed.
    #[error(transparent)]
    Template(#[from] TemplateError),

    /// DISKSPACE is missing, and an image cannot be sized without it.
    #[error("DISKSPACE is not set: pass --diskspace SIZE or use a sample config that sets it")]
    DiskspaceNotSet,

    /// The container's private area exists already.
    #[error("Private area already exists in {}", path.display())]
    PrivateExists { path: PathBuf },

    /// The container's private area is missing.
    #[error("Container private area {} does not exist", path.display())]
    PrivateMissing { path: PathBuf },

    /// Another live process holds the container lock.
    #[error("Container already locked by pid {pid} (lock file {})", path.display())]
    Locked { pid: i32, path: PathBuf },

    /// The container must run for this command.
    #[error("Container {ctid} is not running")]
    NotRunning { ctid: u32 },

    /// The container must be stopped for this command.
    #[error("Container {ctid} is running -- stop it first")]
    Running { ctid: u32 },

    /// A start of a running container.
    #[error("Container is already running")]
    AlreadyRunning { ctid: u32 },

    /// Processes that are not this container's are in its cgroup. Cgroup
    /// paths are the same for every Lamina home.
    #[error(
        "Unable to start container {ctid}: its cgroup {} already has processes ({nproc}), \
         so another Lamina home may run a container with this CTID. Stop that container \
         or use another CTID",
        path.display()
    )]
    CgroupInUse {
        ctid: u32,
        path: PathBuf,
        nproc: usize,
    },

    /// The container must be mounted for this command.
    #[error("Container {ctid} is not mounted")]
    NotMounted { ctid: u32 },

    /// The container must be unmounted for this command.
    #[error("Container {ctid} is mounted -- umount it first")]
    Mounted { ctid: u32 },

    /// A snapshot mount keeps the container's image open.
    #[error(
        "Snapshot {id} of container {ctid} is mounted at {} -- run \
         `lamctl snapshot-umount {ctid} --id {id}` first",
        target.display()
    )]
    SnapshotMounted {
        ctid: u32,
        id: String,
        target: PathBuf,
    },

    /// A hostname is not a valid DNS name.
    #[error("Bad hostname {hostname:?}: use letters, digits, '-' and '.', at most 253 characters")]
    BadHostname { hostname: String },

    /// A filesystem operation on the host failed.
    #[error("{op} {} failed", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The image engine, image server or runtime reported an error.
    #[error("{stage} failed: {message}")]
    Backend {
        stage: Stage,
        kind: ErrorKind,
        message: String,
    },

    /// A signal cancelled `create`; everything it made was removed.
    #[error("Creation of container {ctid} was cancelled by a signal; nothing was left behind")]
    CreateCancelled { ctid: u32 },

    /// The snapshot ID is not known to the container's disk.
    #[error("Snapshot {id} not found: run snapshot-list for the IDs")]
    SnapshotNotFound { id: String },

    /// A mount of a snapshot that is mounted already.
    #[error(
        "Snapshot {id} is already mounted at {} -- run \
         `lamctl snapshot-umount {ctid} --id {id}` first",
        target.display()
    )]
    SnapshotAlreadyMounted {
        ctid: u32,
        id: String,
        target: PathBuf,
    },

    /// An unmount of a snapshot that is not mounted.
    #[error("Snapshot {id} is not mounted")]
    SnapshotNotMounted { id: String },

    /// A networking option or step failed.
    #[error(transparent)]
    Net(#[from] super::net::NetError),
}

/// The step of a container operation that a backend error came from; it
/// selects the vzctl exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Creating the image and its filesystem.
    ImageCreate,
    /// Mounting the image.
    Mount,
    /// Unmounting the image.
    Umount,
    /// Growing the image and its filesystem.
    Resize,
    /// Starting the container's init.
    Start,
    /// Stopping the container.
    Stop,
    /// Running a command inside the container.
    Exec,
    /// Applying resource limits or the hostname.
    SetParams,
    /// Creating a snapshot.
    SnapshotCreate,
    /// Deleting a snapshot.
    SnapshotDelete,
    /// Switching to a snapshot.
    SnapshotSwitch,
    /// Mounting a snapshot.
    SnapshotMount,
    /// Unmounting a snapshot.
    SnapshotUmount,
    /// Listing snapshots.
    SnapshotList,
    /// Reading whether the container runs.
    Status,
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = match self {
            Stage::ImageCreate => "Creating the image",
            Stage::Mount => "Mounting the container",
            Stage::Umount => "Unmounting the container",
            Stage::Resize => "Resizing the image",
            Stage::Start => "Starting the container",
            Stage::Stop => "Stopping the container",
            Stage::Exec => "Running the command",
            Stage::SetParams => "Applying parameters",
            Stage::SnapshotCreate => "Creating the snapshot",
            Stage::SnapshotDelete => "Deleting the snapshot",
            Stage::SnapshotSwitch => "Switching to the snapshot",
            Stage::SnapshotMount => "Mounting the snapshot",
            Stage::SnapshotUmount => "Unmounting the snapshot",
            Stage::SnapshotList => "Listing snapshots",
            Stage::Status => "Reading the container's run state",
        };
        f.write_str(text)
    }
}

impl ContainerError {
    /// Builds an [`ContainerError::Io`] for `op` on `path`.
    pub fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| ContainerError::Io { op, path, source }
    }

    /// Wraps an error of another engine module that failed in `stage`. The
    /// message carries the error's causes, such as the OS error of a failed
    /// system call.
    pub fn backend<E: HasKind + std::error::Error>(stage: Stage) -> impl FnOnce(E) -> Self {
        move |err| ContainerError::Backend {
            stage,
            kind: err.kind(),
            message: with_causes(&err),
        }
    }

    /// Returns the vzctl 4.x exit code for this error (vzctl(8), DIAGNOSTICS).
    pub fn exit_code(&self) -> i32 {
        use ContainerError as E;
        match self {
            E::BadCtid { .. } | E::NameNotFound { .. } => 21,
            E::BadName { .. } | E::NameInUse { .. } => 131,
            E::BadValue { .. } | E::BadUnit { .. } => 21,
            E::BadUsage { .. } => 20,
            E::ConfigMissing { .. } => 14,
            E::Config(err) => err.exit_code(),
            E::InvalidConfig { .. } => 85,
            E::SampleNotFound { .. } | E::ConfigExists { .. } => 82,
            E::TemplateNotSpecified => 29,
            E::TemplateNotFound { .. } => 91,
            E::Template(_) | E::CreateCancelled { .. } => 48,
            E::DiskspaceNotSet => 63,
            E::PrivateExists { .. } => 44,
            E::PrivateMissing { .. } => 43,
            E::Locked { .. } => 9,
            E::NotRunning { .. } => 31,
            E::Running { .. } | E::AlreadyRunning { .. } | E::CgroupInUse { .. } => 32,
            E::NotMounted { .. } => 40,
            E::Mounted { .. } | E::SnapshotMounted { .. } => 41,
            E::BadHostname { .. } => 70,
            E::Io { .. } => 3,
            E::Backend { stage, .. } => stage_exit_code(*stage),
            E::SnapshotNotFound { .. } | E::SnapshotNotMounted { .. } => 21,
            E::SnapshotAlreadyMounted { .. } => 160,
            E::Net(err) => err.exit_code(),
        }
    }
}

/// Formats an error and its chain of causes: `error: cause: cause`.
pub fn with_causes(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn stage_exit_code(stage: Stage) -> i32 {
    match stage {
        Stage::ImageCreate => 151,
        Stage::Mount => 50,
        Stage::Umount => 51,
        Stage::Resize => 154,
        Stage::Start => 7,
        Stage::Stop => 33,
        Stage::Exec => 3,
        Stage::SetParams => 109,
        Stage::SnapshotCreate => 156,
        Stage::SnapshotDelete => 158,
        Stage::SnapshotSwitch => 159,
        Stage::SnapshotMount => 160,
        Stage::SnapshotUmount => 161,
        Stage::SnapshotList => 167,
        Stage::Status => 3,
    }
}

impl HasKind for ContainerError {
    fn kind(&self) -> ErrorKind {
        use ContainerError as E;
        match self {
            E::BadCtid { .. }
            | E::BadName { .. }
            | E::BadValue { .. }
            | E::BadUnit { .. }
            | E::BadUsage { .. }
            | E::BadHostname { .. }
            | E::TemplateNotSpecified
            | E::DiskspaceNotSet => ErrorKind::InvalidArgument,
            E::InvalidConfig { .. } => ErrorKind::Corrupt,
            E::Config(err) => err.kind(),
            E::Template(err) => err.kind(),
            E::NameNotFound { .. }
            | E::ConfigMissing { .. }
            | E::SampleNotFound { .. }
            | E::TemplateNotFound { .. }
            | E::PrivateMissing { .. }
            | E::NotRunning { .. }
            | E::NotMounted { .. }
            | E::SnapshotNotFound { .. }
            | E::SnapshotNotMounted { .. } => ErrorKind::NotFound,
            E::NameInUse { .. } | E::ConfigExists { .. } | E::PrivateExists { .. } => {
                ErrorKind::AlreadyExists
            }
            E::Locked { .. }
            | E::Running { .. }
            | E::AlreadyRunning { .. }
            | E::CgroupInUse { .. }
            | E::Mounted { .. }
            | E::SnapshotMounted { .. }
            | E::SnapshotAlreadyMounted { .. } => ErrorKind::Busy,
            E::Io { .. } | E::CreateCancelled { .. } => ErrorKind::Io,
            E::Backend { kind, .. } => *kind,
            E::Net(err) => err.kind(),
        }
    }
}
