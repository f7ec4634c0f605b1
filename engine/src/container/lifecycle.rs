//! start, stop, restart, mount, umount and destroy.

use std::fs;
use std::path::Path;

use super::backend::{self, MountRequest, RunState, StartRequest};
use super::ctid::{self, Ctid};
use super::error::ContainerError;
use super::instance::Container;
use super::layout::Layout;
use super::lock::CtLock;
use super::net;
use super::rootfs;
use super::snapshot;

/// The result of `mount` and `stop`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The command changed the container.
    Done,
    /// The container was already in the requested state; vzctl exits 0.
    AlreadyDone,
}

/// Mounts the container's image at its root (vzctl `mount`).
pub fn mount(layout: &Layout, ctid: Ctid) -> Result<Outcome, ContainerError> {
    let _lock = CtLock::acquire(layout, ctid)?;
    let container = Container::load(layout, ctid)?;
    container.require_private()?;
    // A dead server's mount is no mount, and its leftovers would make the
    // image server refuse a new one.
    container.clean_dead_root_mount()?;
    if container.is_mounted() {
        return Ok(Outcome::AlreadyDone);
    }
    mount_root(&container)?;
    Ok(Outcome::Done)
}

fn mount_root(container: &Container) -> Result<(), ContainerError> {
    let root = &container.paths.root;
    fs::create_dir_all(root).map_err(ContainerError::io("create directory", root))?;
    let request = MountRequest {
        disk: &container.paths.disk,
        target: root,
        snapshot: None,
    };
    backend::mount(&request)
}

/// Unmounts the container's root (vzctl `umount`).
pub fn umount(layout: &Layout, ctid: Ctid) -> Result<(), ContainerError> {
    let _lock = CtLock::acquire(layout, ctid)?;
    let container = Container::load(layout, ctid)?;
    if matches!(container.run_state()?, RunState::Running { .. }) {
        return Err(ContainerError::Running { ctid: ctid.get() });
    }
    if container.clean_dead_root_mount()? {
        return Ok(());
    }
    if !container.is_mounted() {
        return Err(ContainerError::NotMounted { ctid: ctid.get() });
    }
    backend::umount(&container.paths.root, false)
}

/// Mounts the root if needed and starts init (vzctl `start`).
pub fn start(layout: &Layout, ctid: Ctid, wait: bool) -> Result<(), ContainerError> {
    let _lock = CtLock::acquire(layout, ctid)?;
    let container = Container::load(layout, ctid)?;
    container.require_private()?;
    if matches!(container.run_state()?, RunState::Running { .. }) {
        return Err(ContainerError::AlreadyRunning { ctid: ctid.get() });
    }
    start_locked(&container, wait)
}

fn start_locked(container: &Container, wait: bool) -> Result<(), ContainerError> {
    let resources = container.resources()?;
    container.clean_dead_root_mount()?;
    let mounted_here = !container.is_mounted();
    if mounted_here {
        mount_root(container)?;
    }
    let hostname_written = write_hostname(container);
    if let Err(err) = hostname_written {
        if mounted_here {
            let _ = backend::umount(&container.paths.root, true);
        }
        return Err(err);
    }

    let state_dir = container.state_dir();
    let request = StartRequest {
        ctid: container.ctid,
        root: &container.paths.root,
        hostname: container.config.get_nonempty("HOSTNAME"),
        resources,
        state_dir: &state_dir,
        wait,
    };
    let result = fs::create_dir_all(&state_dir)
        .map_err(ContainerError::io("create directory", &state_dir))
        .and_then(|()| net::prepare_root(container))
        .and_then(|()| backend::start(&request))
        .and_then(|()| net::setup(container));
    if result.is_err() && mounted_here {
        // Leave the container as it was: stopped and unmounted.
        if let Err(err) = backend::umount(&container.paths.root, true) {
            tracing::error!(ctid = %container.ctid, error = %err, "umount after failed start");
        }
    }
    result
}

/// Writes HOSTNAME into the root's `/etc/hostname`, as vzctl's distribution
/// scripts do at start, so a hostname saved while the container was
/// stopped takes effect. A root without `/etc` is left alone.
fn write_hostname(container: &Container) -> Result<(), ContainerError> {
    let Some(hostname) = container.config.get_nonempty("HOSTNAME") else {
        return Ok(());
    };
    let etc = container.paths.root.join("etc");
    if !fs::symlink_metadata(&etc).is_ok_and(|m| m.is_dir()) {
        return Ok(());
    }
    let data = format!("{hostname}\n");
    rootfs::write_file(&container.paths.root, "etc", "hostname", data.as_bytes())
}

/// Stops the container and unmounts its root (vzctl `stop`). A container
/// that is not running is not an error, as in vzctl.
pub fn stop(layout: &Layout, ctid: Ctid, fast: bool) -> Result<Outcome, ContainerError> {
    let _lock = CtLock::acquire(layout, ctid)?;
    let container = Container::load(layout, ctid)?;
    stop_locked(&container, fast)
}

fn stop_locked(container: &Container, fast: bool) -> Result<Outcome, ContainerError> {
    if container.run_state()? == RunState::Stopped {
        return Ok(Outcome::AlreadyDone);
    }
    let timeout = container.layout.stop_timeout(&container.config);
    let routed = net::routed_addresses(container);
    backend::stop(container.ctid, &container.state_dir(), timeout, fast)?;
    net::teardown(container, &routed);
    if container.is_mounted() {
        backend::umount(&container.paths.root, false)?;
    }
    Ok(Outcome::Done)
}

/// Stops the container if it runs, then starts it (vzctl `restart`).
pub fn restart(layout: &Layout, ctid: Ctid, fast: bool, wait: bool) -> Result<(), ContainerError> {
    let _lock = CtLock::acquire(layout, ctid)?;
    let container = Container::load(layout, ctid)?;
    container.require_private()?;
    stop_locked(&container, fast)?;
    start_locked(&container, wait)
}

/// Removes the container's private area, mount point, names and config
/// (vzctl `destroy`). The config is kept as `CTID.conf.destroyed`.
pub fn destroy(layout: &Layout, ctid: Ctid) -> Result<(), ContainerError> {
    let _lock = CtLock::acquire(layout, ctid)?;
    let container = Container::load(layout, ctid)?;
    if matches!(container.run_state()?, RunState::Running { .. }) {
        return Err(ContainerError::Running { ctid: ctid.get() });
    }
    container.clean_dead_root_mount()?;
    if container.is_mounted() {
        return Err(ContainerError::Mounted { ctid: ctid.get() });
    }
    // A snapshot mount keeps the image open as well.
    if let Some(mount) = backend::snapshot_mounts(&container.paths.disk).first() {
        return Err(ContainerError::SnapshotMounted {
            ctid: ctid.get(),
            id: snapshot::format_id(mount.id),
            target: mount.target.clone(),
        });
    }
    if backend::has_any_mount(&container.paths.disk) {
        return Err(ContainerError::Mounted { ctid: ctid.get() });
    }

    remove_private(&container.paths.private)?;
    remove_dir_if_empty(&container.paths.root)?;
    let state_dir = container.state_dir();
    if state_dir.exists() {
        fs::remove_dir_all(&state_dir).map_err(ContainerError::io("remove", &state_dir))?;
    }
    ctid::unregister_all(layout, ctid)?;

    let mut destroyed = container.conf_path.as_os_str().to_os_string();
    destroyed.push(".destroyed");
    fs::rename(&container.conf_path, &destroyed)
        .map_err(ContainerError::io("rename", &container.conf_path))
}

/// Renames the private area out of the way first, so that a crash during
/// the removal never leaves a half-deleted area under the container's name.
fn remove_private(private: &Path) -> Result<(), ContainerError> {
    if !private.exists() {
        return Ok(());
    }
    let mut doomed = private.as_os_str().to_os_string();
    doomed.push(format!(".destroy-{}", std::process::id()));
    fs::rename(private, &doomed).map_err(ContainerError::io("rename", private))?;
    fs::remove_dir_all(&doomed).map_err(ContainerError::io("remove", Path::new(&doomed)))
}

fn remove_dir_if_empty(dir: &Path) -> Result<(), ContainerError> {
    match fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(ContainerError::io("remove", dir)(err)),
    }
}
