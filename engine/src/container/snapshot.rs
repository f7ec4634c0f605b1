//! Container snapshots: create, list, switch, delete, mount and umount.
//!
//! The image's descriptor is the record of snapshots. Beside it, as vzctl
//! does, a copy of the container config is kept per snapshot in
//! `VE_PRIVATE/dump/{UUID}.ve.conf`, and a snapshot switch restores it.
//! Snapshot mounts are recorded in the runtime directory so that
//! `snapshot-umount --id` finds the mount point again.

use std::fs;
use std::path::{Path, PathBuf};

use uuid::Uuid;

use super::backend::{self, MountRequest, RunState, SnapshotEntry};
use super::config::write_atomic;
use super::ctid::Ctid;
use super::error::ContainerError;
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
pub fn delete(layout: &Layout, ctid: Ctid, id: Uuid) -> Result<(), ContainerError> {
    let _lock = CtLock::acquire(layout, ctid)?;
    let container = Container::load(layout, ctid)?;
    require_known(&container, id)?;
    backend::snapshot_delete(&container.paths.disk, id)?;
    let copy = config_copy(&container, id);
    match fs::remove_file(&copy) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
            Err(ContainerError::io("remove", &copy)(err))
        }
        _ => Ok(()),
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

fn mount_record(layout: &Layout, ctid: Ctid, id: Uuid) -> PathBuf {
    layout.state_dir(ctid).join(format!("snapshot-{id}.target"))
}

/// Mounts snapshot `id` read-only at `target`, for backups while the
/// container runs.
pub fn mount(layout: &Layout, ctid: Ctid, id: Uuid, target: &Path) -> Result<(), ContainerError> {
    let container = Container::load(layout, ctid)?;
    require_known(&container, id)?;
    let target = std::path::absolute(target).map_err(ContainerError::io("resolve", target))?;

    let record = mount_record(layout, ctid, id);
    if record.exists() {
        return Err(ContainerError::BadUsage {
            message: format!(
                "Snapshot {} is already mounted; run snapshot-umount first",
                format_id(id)
            ),
        });
    }
    backend::mount(&MountRequest {
        disk: &container.paths.disk,
        target: &target,
        snapshot: Some(id),
    })?;

    let dir = layout.state_dir(ctid);
    let written = fs::create_dir_all(&dir)
        .and_then(|()| write_atomic(&record, target.as_os_str().as_encoded_bytes()))
        .map_err(ContainerError::io("write", &record));
    if written.is_err() {
        let _ = backend::umount(&target, true);
    }
    written
}

/// Unmounts snapshot `id` mounted by [`mount`].
pub fn umount(layout: &Layout, ctid: Ctid, id: Uuid) -> Result<(), ContainerError> {
    let record = mount_record(layout, ctid, id);
    let target = fs::read_to_string(&record).map_err(|_| ContainerError::SnapshotNotFound {
        id: format!("{} (not mounted)", format_id(id)),
    })?;
    backend::umount(Path::new(&target), false)?;
    fs::remove_file(&record).map_err(ContainerError::io("remove", &record))
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
