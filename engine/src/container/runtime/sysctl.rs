//! Host-wide kernel limits that containers without a user namespace share.
//!
//! Every container's root is the host's root user, so per-user limits such
//! as `fs.inotify.max_user_instances` (128 by default, inotify(7)) are
//! shared by all containers. systemd and its services each hold several
//! inotify instances, and a few dozen systemd containers exhaust the
//! default ("Failed to create inotify object: Too many open files").

use std::fs;
use std::path::Path;

use super::error::RuntimeError;

/// inotify instances budgeted per container.
pub const INSTANCES_PER_CONTAINER: u64 = 256;
/// inotify watches budgeted per container.
pub const WATCHES_PER_CONTAINER: u64 = 65_536;

/// One sysctl raised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Raised {
    /// The sysctl name.
    pub name: &'static str,
    /// The old value.
    pub from: u64,
    /// The new value.
    pub to: u64,
}

/// Raises the inotify limits under `proc_sys` (normally `/proc/sys`) so
/// that `containers` containers plus the host each get their budget.
/// Values already higher are left alone.
pub fn raise_inotify(proc_sys: &Path, containers: u64) -> Result<Vec<Raised>, RuntimeError> {
    let shares = containers.saturating_add(1);
    let limits = [
        (
            "fs.inotify.max_user_instances",
            shares.saturating_mul(INSTANCES_PER_CONTAINER),
        ),
        (
            "fs.inotify.max_user_watches",
            shares.saturating_mul(WATCHES_PER_CONTAINER),
        ),
    ];
    let mut raised = Vec::new();
    for (name, requested) in limits {
        let path = proc_sys.join(name.replace('.', "/"));
        let text = fs::read_to_string(&path).map_err(|err| RuntimeError::io("read", &path, err))?;
        let current: u64 = text.trim().parse().unwrap_or(0);
        if current >= requested {
            continue;
        }
        fs::write(&path, requested.to_string())
            .map_err(|err| RuntimeError::io("write", &path, err))?;
        tracing::info!(
            sysctl = name,
            from = current,
            to = requested,
            "raised a host limit for containers"
        );
        raised.push(Raised {
            name,
            from: current,
            to: requested,
        });
    }
    Ok(raised)
}
