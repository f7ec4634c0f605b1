//! Container snapshots: create, list, switch, delete, mount and umount.
//!
//! The image's descriptor is the record of snapshots. Beside it, as vzctl
//! does, a copy of the container config is kept per snapshot in
//! `VE_PRIVATE/dump/{UUID}.ve.conf`, and a snapshot switch restores it.
//! `snapshot-umount --id` finds the mount point in the image server's
//! records of the disk's snapshot mounts.

use std::fs;
use std::path::{Path, PathBuf};

use uuid::Uuid;

use crate::error::ErrorKind;

use super::backend::{self, MountRequest, RunState, SnapshotEntry};
use super::config::write_atomic;
use super::ctid::Ctid;
use super::error::{ContainerError, Stage};
use super::instance::Container;
use super::layout::Layout;
use super::lock::CtLock;

/// Parses a snapshot ID with or without vzctl's braces.
pub fn parse_id(text: &str) -> Result<Uuid, ContainerError> {
    let bare = text.trim_start_matches('{').trim_end_matches('}');
    Uuid::parse_str(bare).map_err(|_| ContainerError::BadValue {
        option: "--id".to_string(),
        value: text.to_string(),
        reason: "use a UUID as snapshot-list prints it".to_string(),
    })
}

/// Formats a snapshot ID the way vzctl prints it: `{uuid}`.
pub fn format_id(id: Uuid) -> String {
    format!("{{{id}}}")
}

/// Takes a snapshot of container `ctid`, online if it is mounted.
pub fn create(
    layout: &Layout,
    ctid: Ctid,
    name: Option<&str>,
    description: Option<&str>,
) -> Result<Uuid, ContainerError> {
    let _lock = CtLock::acquire(layout, ctid)?;
    let container = Container::load(layout, ctid)?;
    container.require_private()?;

    let id = backend::snapshot(&container.paths.disk, name, description)?;
    save_config_copy(&container, id)?;
    Ok(id)
}

fn dump_dir(container: &Container) -> PathBuf {
    container.paths.private.join("dump")
}

fn config_copy(container: &Container, id: Uuid) -> PathBuf {
    dump_dir(container).join(format!("{}.ve.conf", format_id(id)))
}

fn save_config_copy(container: &Container, id: Uuid) -> Result<(), ContainerError> {
    let dir = dump_dir(container);
    fs::create_dir_all(&dir).map_err(ContainerError::io("create directory", &dir))?;
    let path = config_copy(container, id);
    write_atomic(&path, container.config.to_text().as_bytes())
        .map_err(ContainerError::io("write", &path))
}

/// Lists the snapshots of container `ctid`.
pub fn list(layout: &Layout, ctid: Ctid) -> Result<Vec<SnapshotEntry>, ContainerError> {
    let container = Container::load(layout, ctid)?;
    container.require_private()?;
    Ok(tree_order(backend::snapshots(&container.paths.disk)?))
}

/// Orders snapshots as vzctl lists them: every parent before its children,
/// siblings by creation time.
pub fn tree_order(mut entries: Vec<SnapshotEntry>) -> Vec<SnapshotEntry> {
    entries.sort_by_key(|e| (e.created, e.uuid));
    let mut ordered: Vec<SnapshotEntry> = Vec::with_capacity(entries.len());
    while !entries.is_empty() {
        let ready = entries.iter().position(|e| {
            e.parent.is_none_or(|p| {
                ordered.iter().any(|o| o.uuid == p) || !entries.iter().any(|x| x.uuid == p)
            })
        });
        // A cycle cannot come from the engine; list the rest as they are.
        let index = ready.unwrap_or(0);
        ordered.push(entries.remove(index));
    }
    ordered
}

fn require_known(container: &Container, id: Uuid) -> Result<SnapshotEntry, ContainerError> {
    backend::snapshots(&container.paths.disk)?
        .into_iter()
        .find(|entry| entry.uuid == id)
        .ok_or_else(|| ContainerError::SnapshotNotFound { id: format_id(id) })
}

/// Deletes snapshot `id`; its data merges into its child.
///
/// The current top and a mounted snapshot are rejected here, with advice
/// in lamctl's terms, before the image engine or server would reject them.
pub fn delete(layout: &Layout, ctid: Ctid, id: Uuid) -> Result<(), ContainerError> {
    let _lock = CtLock::acquire(layout, ctid)?;
    let container = Container::load(layout, ctid)?;
    let entry = require_known(&container, id)?;
    if entry.current {
        return Err(delete_error(
            ErrorKind::InvalidArgument,
            format!(
                "{} is the current top of container {ctid}, which holds its live data, not \
                 a snapshot. Run `lamctl snapshot-list {ctid}` for the snapshot IDs (the top \
                 is marked with *)",
                format_id(id)
            ),
        ));
    }
    let mounted = backend::snapshot_mounts(&container.paths.disk)
        .into_iter()
        .find(|m| m.id == id);
    if let Some(mount) = mounted {
        return Err(delete_error(
            ErrorKind::Busy,
            format!(
                "snapshot {} is mounted at {} -- run `lamctl snapshot-umount {ctid} --id {}` \
                 first",
                format_id(id),
                mount.target.display(),
                format_id(id)
            ),
        ));
    }
    backend::snapshot_delete(&container.paths.disk, id)?;
    let copy = config_copy(&container, id);
    match fs::remove_file(&copy) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
            Err(ContainerError::io("remove", &copy)(err))
        }
        _ => Ok(()),
    }
}

fn delete_error(kind: ErrorKind, message: String) -> ContainerError {
    ContainerError::Backend {
        stage: Stage::SnapshotDelete,
        kind,
        message,
    }
}

/// Reverts container `ctid` to snapshot `id` and restores the config saved
/// with it. The container must be stopped and unmounted.
pub fn switch(layout: &Layout, ctid: Ctid, id: Uuid) -> Result<(), ContainerError> {
    let _lock = CtLock::acquire(layout, ctid)?;
    let container = Container::load(layout, ctid)?;
    if matches!(container.run_state()?, RunState::Running { .. }) {
        return Err(ContainerError::Running { ctid: ctid.get() });
    }
    if container.is_mounted() {
        return Err(ContainerError::Mounted { ctid: ctid.get() });
    }
    require_known(&container, id)?;
    backend::snapshot_switch(&container.paths.disk, id)?;

    let copy = config_copy(&container, id);
    if let Ok(text) = fs::read(&copy) {
        write_atomic(&container.conf_path, &text)
            .map_err(ContainerError::io("write", &container.conf_path))?;
    }
    Ok(())
}

/// Mounts snapshot `id` read-only at `target`, for backups while the
/// container runs.
pub fn mount(layout: &Layout, ctid: Ctid, id: Uuid, target: &Path) -> Result<(), ContainerError> {
    let container = Container::load(layout, ctid)?;
    require_known(&container, id)?;
    let target = std::path::absolute(target).map_err(ContainerError::io("resolve", target))?;

    match find_mount(&container, id) {
        Some(mount) if mount.running => {
            return Err(ContainerError::SnapshotAlreadyMounted {
                ctid: ctid.get(),
                id: format_id(id),
                target: mount.target,
            });
        }
        // Leftovers of a dead server, for example after a reboot.
        Some(mount) => backend::umount(&mount.target, true)?,
        None => {}
    }
    backend::mount(&MountRequest {
        disk: &container.paths.disk,
        target: &target,
        snapshot: Some(id),
    })
}

/// Unmounts snapshot `id`, mounted by [`mount`] or by `lamina mount
/// --snapshot`. The leftovers of a dead server are removed as well.
pub fn umount(layout: &Layout, ctid: Ctid, id: Uuid) -> Result<(), ContainerError> {
    let container = Container::load(layout, ctid)?;
    let Some(mount) = find_mount(&container, id) else {
        return Err(ContainerError::SnapshotNotMounted { id: format_id(id) });
    };
    backend::umount(&mount.target, !mount.running)
}

fn find_mount(container: &Container, id: Uuid) -> Option<backend::SnapshotMount> {
    backend::snapshot_mounts(&container.paths.disk)
        .into_iter()
        .find(|m| m.id == id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(uuid: Uuid, parent: Option<Uuid>, created: u64) -> SnapshotEntry {
        SnapshotEntry {
            uuid,
            parent,
            current: false,
            created,
            name: None,
            description: None,
        }
    }

    #[test]
    fn parents_come_before_children() {
        let (a, b, c, d) = (
            Uuid::new_v4(),
            Uuid::new_v4(),
            Uuid::new_v4(),
            Uuid::new_v4(),
        );
        let input = vec![
            entry(c, Some(b), 1),
            entry(b, Some(a), 5),
            entry(d, Some(a), 3),
            entry(a, None, 9),
        ];
        let order: Vec<Uuid> = tree_order(input).iter().map(|e| e.uuid).collect();
        assert_eq!(order, [a, d, b, c]);
    }

    #[test]
    fn ids_with_and_without_braces() {
        let id = Uuid::new_v4();
        assert_eq!(parse_id(&format_id(id)).unwrap(), id);
        assert_eq!(parse_id(&id.to_string()).unwrap(), id);
        assert_eq!(parse_id("nope").unwrap_err().exit_code(), 21);
    }
}
