//! One container: its config, paths and status.

use std::fmt;
use std::path::PathBuf;

use super::backend::{self, RunState};
use super::config::ConfigFile;
use super::ctid::Ctid;
use super::error::ContainerError;
use super::layout::{ContainerPaths, Layout};
use super::mounts;
use super::resources::Resources;

/// A container with an existing config file.
#[derive(Debug, Clone)]
pub struct Container {
    /// The installation layout.
    pub layout: Layout,
    /// The container ID.
    pub ctid: Ctid,
    /// The config file path.
    pub conf_path: PathBuf,
    /// The config file contents.
    pub config: ConfigFile,
    /// Private area, mount point and image directory.
    pub paths: ContainerPaths,
}

impl Container {
    /// Loads the container's config; fails with vzctl's code 14 when it does
    /// not exist.
    pub fn load(layout: &Layout, ctid: Ctid) -> Result<Self, ContainerError> {
        let conf_path = layout.conf_file(ctid);
        if !conf_path.is_file() {
            return Err(ContainerError::ConfigMissing {
                ctid: ctid.get(),
                path: conf_path,
            });
        }
        let config = ConfigFile::load(&conf_path)?;
        let paths = layout.container_paths(ctid, &config, &conf_path)?;
        Ok(Container {
            layout: layout.clone(),
            ctid,
            conf_path,
            config,
            paths,
        })
    }

    /// Returns the runtime state directory.
    pub fn state_dir(&self) -> PathBuf {
        self.layout.state_dir(self.ctid)
    }

    /// Returns whether the container runs.
    ///
    /// A state file whose init is gone (after a reboot, or when init died)
    /// is removed. If the image server of the root mount died as well, its
    /// leftovers are removed too, so the container shows as down and
    /// unmounted. Failures of that cleanup are logged, not returned.
    pub fn run_state(&self) -> Result<RunState, ContainerError> {
        let state_dir = self.state_dir();
        let had_state = backend::has_run_state(&state_dir);
        let state = backend::status(self.ctid, &state_dir)?;
        if had_state
            && state == RunState::Stopped
            && let Err(err) = self.clean_dead_root_mount()
        {
            tracing::warn!(ctid = %self.ctid, error = %err, "cleaning up the root mount of a dead image server failed");
        }
        Ok(state)
    }

    /// Removes what a dead image server left of the root mount (the mount,
    /// the loop device, its runtime files) through the image layer's forced
    /// unmount. Returns whether there was such a mount.
    pub fn clean_dead_root_mount(&self) -> Result<bool, ContainerError> {
        let Some(target) = backend::dead_mount(&self.paths.disk) else {
            return Ok(false);
        };
        tracing::info!(ctid = %self.ctid, target = %target.display(), "removing the mount of a dead image server");
        backend::umount(&target, true)?;
        Ok(true)
    }

    /// Returns whether the container's root is mounted.
    pub fn is_mounted(&self) -> bool {
        backend::mounted_at(&self.paths.disk).is_some() || mounts::is_mount_point(&self.paths.root)
    }

    /// Fails unless the private area exists (vzctl code 43).
    pub fn require_private(&self) -> Result<(), ContainerError> {
        if self.paths.private.is_dir() {
            Ok(())
        } else {
            Err(ContainerError::PrivateMissing {
                path: self.paths.private.clone(),
            })
        }
    }

    /// Returns the resource limits of the config.
    pub fn resources(&self) -> Result<Resources, ContainerError> {
        Resources::from_config(&self.config, &self.conf_path)
    }

    /// Saves the config atomically.
    pub fn save_config(&self) -> Result<(), ContainerError> {
        Ok(self.config.save(&self.conf_path)?)
    }
}

/// The three words of vzctl's status line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    /// The container ID.
    pub ctid: Ctid,
    /// The config file and the private area both exist.
    pub exists: bool,
    /// The root is mounted.
    pub mounted: bool,
    /// Init runs.
    pub running: bool,
}

impl Status {
    /// Returns the status of `ctid`; works for containers that do not
    /// exist, as vzctl's does.
    pub fn of(layout: &Layout, ctid: Ctid) -> Result<Self, ContainerError> {
        let container = match Container::load(layout, ctid) {
            Ok(container) => container,
            Err(ContainerError::ConfigMissing { .. }) => {
                return Ok(Status {
                    ctid,
                    exists: false,
                    mounted: false,
                    running: false,
                });
            }
            Err(err) => return Err(err),
        };
        let running = matches!(container.run_state()?, RunState::Running { .. });
        Ok(Status {
            ctid,
            exists: container.paths.private.is_dir(),
            mounted: container.is_mounted(),
            running,
        })
    }
}

impl fmt::Display for Status {
    /// Formats vzctl 4.x's line: `CTID 101 exist mounted running`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let exist = if self.exists { "exist" } else { "deleted" };
        let mounted = if self.mounted { "mounted" } else { "unmounted" };
        let running = if self.running { "running" } else { "down" };
        write!(f, "CTID {} {exist} {mounted} {running}", self.ctid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_line_words() {
        let ctid = Ctid::parse("101").unwrap();
        let all = Status {
            ctid,
            exists: true,
            mounted: true,
            running: true,
        };
        assert_eq!(all.to_string(), "CTID 101 exist mounted running");
        let none = Status {
            ctid,
            exists: false,
            mounted: false,
            running: false,
        };
        assert_eq!(none.to_string(), "CTID 101 deleted unmounted down");
    }

    #[test]
    fn status_of_missing_container() {
        let home = tempfile::tempdir().unwrap();
        let layout = Layout::under_home(home.path()).unwrap();
        let status = Status::of(&layout, Ctid::parse("555").unwrap()).unwrap();
        assert_eq!(status.to_string(), "CTID 555 deleted unmounted down");
    }

    #[test]
    fn missing_config_is_14() {
        let home = tempfile::tempdir().unwrap();
        let layout = Layout::under_home(home.path()).unwrap();
        let err = Container::load(&layout, Ctid::parse("7").unwrap()).unwrap_err();
        assert_eq!(err.exit_code(), 14);
    }
}
