//! The container layout: paths from the global config and `LAMINA_HOME`.
//!
//! Without `LAMINA_HOME` the defaults follow vzctl's layout under
//! `/var/lib/lamina` and the global config is `/etc/lamina/lamina.conf`.
//! With `LAMINA_HOME=H` every default moves under `H` and the global config
//! is `H/lamina.conf`. The global config may override each path with
//! vzctl's keys (`VE_PRIVATE`, `VE_ROOT`, `TEMPLATE`, `LOCKDIR`) and
//! Lamina's own (`CONFDIR`, `NAMESDIR`, `RUNDIR`).

use std::path::{Component, Path, PathBuf};

use super::config::ConfigFile;
use super::ctid::Ctid;
use super::error::ContainerError;

/// The environment variable that relocates every path under one directory.
pub const HOME_ENV: &str = "LAMINA_HOME";

const DEFAULT_HOME: &str = "/var/lib/lamina";
const DEFAULT_GLOBAL_CONFIG: &str = "/etc/lamina/lamina.conf";

/// vzctl's built-in stop timeout in seconds, used when no config sets one.
pub const DEFAULT_STOP_TIMEOUT: u64 = 120;

/// The paths of one Lamina installation.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The global config file (it may not exist).
    pub global_path: PathBuf,
    /// The global config's contents.
    pub global: ConfigFile,
    /// VE_PRIVATE with `$VEID` unsubstituted.
    pub private_pattern: String,
    /// VE_ROOT with `$VEID` unsubstituted.
    pub root_pattern: String,
    /// The directory every private area must be inside.
    pub private_area: PathBuf,
    /// The directory every mount point must be inside.
    pub root_area: PathBuf,
    /// The template root; tarballs are in its `cache/`.
    pub template_dir: PathBuf,
    /// Container configs and sample configs.
    pub conf_dir: PathBuf,
    /// Container lock files.
    pub lock_dir: PathBuf,
    /// Name links.
    pub names_dir: PathBuf,
    /// Runtime state: init PIDs, snapshot mounts.
    pub run_dir: PathBuf,
}

impl Layout {
    /// Builds the layout from `LAMINA_HOME` and the global config.
    pub fn from_env() -> Result<Self, ContainerError> {
        match std::env::var_os(HOME_ENV).filter(|home| !home.is_empty()) {
            Some(home) => Self::under_home(Path::new(&home)),
            None => {
                let global = ConfigFile::load_or_empty(Path::new(DEFAULT_GLOBAL_CONFIG))?;
                let defaults = Defaults {
                    home: PathBuf::from(DEFAULT_HOME),
                    run: PathBuf::from("/run/lamina"),
                };
                Self::build(PathBuf::from(DEFAULT_GLOBAL_CONFIG), global, &defaults)
            }
        }
    }

    /// Builds the layout for `LAMINA_HOME=home`.
    pub fn under_home(home: &Path) -> Result<Self, ContainerError> {
        let home = std::path::absolute(home).map_err(ContainerError::io("resolve", home))?;
        let global_path = home.join("lamina.conf");
        let global = ConfigFile::load_or_empty(&global_path)?;
        let defaults = Defaults {
            run: home.join("run"),
            home,
        };
        Self::build(global_path, global, &defaults)
    }

    fn build(
        global_path: PathBuf,
        global: ConfigFile,
        defaults: &Defaults,
    ) -> Result<Self, ContainerError> {
        let home = &defaults.home;
        let path_of = |key: &str, default: PathBuf| -> PathBuf {
            global
                .get_nonempty(key)
                .map(PathBuf::from)
                .unwrap_or(default)
        };
        let private_pattern = global
            .get_nonempty("VE_PRIVATE")
            .map(str::to_string)
            .unwrap_or_else(|| format!("{}/private/$VEID", home.display()));
        let root_pattern = global
            .get_nonempty("VE_ROOT")
            .map(str::to_string)
            .unwrap_or_else(|| format!("{}/root/$VEID", home.display()));

        let private_area = area_of(&private_pattern, &global_path, "VE_PRIVATE")?;
        let root_area = area_of(&root_pattern, &global_path, "VE_ROOT")?;
        let conf_dir = path_of("CONFDIR", home.join("conf"));
        Ok(Layout {
            private_pattern,
            root_pattern,
            private_area,
            root_area,
            template_dir: path_of("TEMPLATE", home.join("template")),
            names_dir: path_of("NAMESDIR", home.join("names")),
            lock_dir: path_of("LOCKDIR", home.join("lock")),
            run_dir: path_of("RUNDIR", defaults.run.clone()),
            conf_dir,
            global_path,
            global,
        })
    }

    /// Returns the template cache directory.
    pub fn template_cache(&self) -> PathBuf {
        self.template_dir.join("cache")
    }

    /// Returns the config file path of `ctid`.
    pub fn conf_file(&self, ctid: Ctid) -> PathBuf {
        self.conf_dir.join(format!("{ctid}.conf"))
    }

    /// Returns the path of sample config `name` (`ve-NAME.conf-sample`).
    pub fn sample_file(&self, name: &str) -> PathBuf {
        self.conf_dir.join(format!("ve-{name}.conf-sample"))
    }

    /// Returns the lock file of `ctid`.
    pub fn lock_file(&self, ctid: Ctid) -> PathBuf {
        self.lock_dir.join(format!("{ctid}.lck"))
    }

    /// Returns the runtime state directory of `ctid`. It sits one level
    /// below the run directory, whose direct subdirectories belong to the
    /// image server's mounts.
    pub fn state_dir(&self, ctid: Ctid) -> PathBuf {
        self.run_dir.join("containers").join(ctid.to_string())
    }

    /// Resolves the private area and mount point of `ctid` from its config
    /// (falling back to the global patterns) and checks that each lies
    /// inside its area, so a config cannot point a destroy or an extraction
    /// at a host directory.
    pub fn container_paths(
        &self,
        ctid: Ctid,
        config: &ConfigFile,
        config_path: &Path,
    ) -> Result<ContainerPaths, ContainerError> {
        let private_pattern = config
            .get_nonempty("VE_PRIVATE")
            .unwrap_or(&self.private_pattern);
        let root_pattern = config.get_nonempty("VE_ROOT").unwrap_or(&self.root_pattern);
        let private = substitute(private_pattern, ctid);
        let root = substitute(root_pattern, ctid);

        check_inside(
            &private,
            &self.private_area,
            config_path,
            "VE_PRIVATE",
            private_pattern,
        )?;
        check_inside(&root, &self.root_area, config_path, "VE_ROOT", root_pattern)?;
        let disk = private.join("root.hdd");
        Ok(ContainerPaths {
            private,
            root,
            disk,
        })
    }

    /// Returns the stop timeout: the container's STOP_TIMEOUT, else the
    /// global one, else 120 s; 0 means the default, as in vzctl.
    pub fn stop_timeout(&self, config: &ConfigFile) -> u64 {
        let parse = |c: &ConfigFile| c.get("STOP_TIMEOUT").and_then(|v| v.parse::<u64>().ok());
        match parse(config).or_else(|| parse(&self.global)) {
            Some(0) | None => DEFAULT_STOP_TIMEOUT,
            Some(seconds) => seconds,
        }
    }
}

struct Defaults {
    home: PathBuf,
    run: PathBuf,
}

/// The resolved paths of one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerPaths {
    /// The private area (VE_PRIVATE): the disk and the container's state.
    pub private: PathBuf,
    /// The mount point (VE_ROOT).
    pub root: PathBuf,
    /// The image directory inside the private area.
    pub disk: PathBuf,
}

/// Replaces `$VEID` and `${VEID}` and strips a trailing `/`.
pub fn substitute(pattern: &str, ctid: Ctid) -> PathBuf {
    let id = ctid.to_string();
    let text = pattern.replace("${VEID}", &id).replace("$VEID", &id);
    let trimmed = text.trim_end_matches('/');
    PathBuf::from(if trimmed.is_empty() { "/" } else { trimmed })
}

/// Returns the directory a per-container pattern lives in: the pattern up
/// to the component that contains `$VEID`.
fn area_of(pattern: &str, global_path: &Path, key: &str) -> Result<PathBuf, ContainerError> {
    let invalid = |reason: &str| ContainerError::InvalidConfig {
        path: global_path.to_path_buf(),
        key: key.to_string(),
        value: pattern.to_string(),
        reason: reason.to_string(),
    };
    let path = Path::new(pattern);
    if !path.is_absolute() {
        return Err(invalid("use an absolute path"));
    }
    let mut area = PathBuf::new();
    for component in path.components() {
        if component.as_os_str().to_string_lossy().contains("VEID") {
            return Ok(area);
        }
        area.push(component);
    }
    Err(invalid("the path must contain $VEID"))
}

fn check_inside(
    path: &Path,
    area: &Path,
    config_path: &Path,
    key: &str,
    value: &str,
) -> Result<(), ContainerError> {
    let outside = || ContainerError::InvalidConfig {
        path: config_path.to_path_buf(),
        key: key.to_string(),
        value: value.to_string(),
        reason: format!("it must be a directory inside {}", area.display()),
    };
    if !path.is_absolute() || path.components().any(|c| c == Component::ParentDir) {
        return Err(outside());
    }
    let relative = path.strip_prefix(area).map_err(|_| outside())?;
    if relative.as_os_str().is_empty() {
        return Err(outside());
    }

    // A symlink inside the area could still lead out of it.
    let real_area = std::fs::canonicalize(area).unwrap_or_else(|_| area.to_path_buf());
    if let Ok(real) = std::fs::canonicalize(path)
        && (!real.starts_with(&real_area) || real == real_area)
    {
        return Err(outside());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ct(id: u32) -> Ctid {
        Ctid::parse(&id.to_string()).unwrap()
    }

    #[test]
    fn home_relocates_everything() {
        let home = tempfile::tempdir().unwrap();
        let layout = Layout::under_home(home.path()).unwrap();
        let h = home.path();
        assert_eq!(layout.private_area, h.join("private"));
        assert_eq!(layout.root_area, h.join("root"));
        assert_eq!(layout.template_cache(), h.join("template/cache"));
        assert_eq!(layout.conf_file(ct(101)), h.join("conf/101.conf"));
        assert_eq!(layout.lock_file(ct(101)), h.join("lock/101.lck"));
        assert_eq!(layout.state_dir(ct(101)), h.join("run/containers/101"));
        assert_eq!(layout.global_path, h.join("lamina.conf"));
    }

    #[test]
    fn global_config_overrides_paths() {
        let home = tempfile::tempdir().unwrap();
        let h = home.path();
        let text = format!(
            "VE_PRIVATE=\"{0}/vz/private/$VEID\"\nLOCKDIR={0}/locks\n",
            h.display()
        );
        std::fs::write(h.join("lamina.conf"), text).unwrap();

        let layout = Layout::under_home(h).unwrap();
        assert_eq!(layout.private_area, h.join("vz/private"));
        assert_eq!(layout.lock_dir, h.join("locks"));
        let paths = layout
            .container_paths(ct(7), &ConfigFile::default(), h)
            .unwrap();
        assert_eq!(paths.private, h.join("vz/private/7"));
        assert_eq!(paths.disk, h.join("vz/private/7/root.hdd"));
    }

    #[test]
    fn veid_forms_are_substituted() {
        assert_eq!(substitute("/a/${VEID}/", ct(5)), PathBuf::from("/a/5"));
        assert_eq!(substitute("/a/$VEID", ct(5)), PathBuf::from("/a/5"));
    }

    #[test]
    fn private_outside_area_is_rejected() {
        let home = tempfile::tempdir().unwrap();
        let layout = Layout::under_home(home.path()).unwrap();
        let conf = home.path().join("conf/101.conf");
        let private = layout.private_area.display().to_string();
        let bad = [
            "/etc".to_string(),
            format!("{private}/../../etc"),
            private.clone(),
            "relative/101".to_string(),
        ];
        for value in bad {
            let config = ConfigFile::parse(&format!("VE_PRIVATE=\"{value}\"\n"));
            let err = layout.container_paths(ct(101), &config, &conf).unwrap_err();
            assert_eq!(err.exit_code(), 85, "{value} accepted");
        }
    }

    #[test]
    fn private_through_symlink_is_rejected() {
        let home = tempfile::tempdir().unwrap();
        let layout = Layout::under_home(home.path()).unwrap();
        std::fs::create_dir_all(&layout.private_area).unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), layout.private_area.join("101")).unwrap();

        let conf = home.path().join("conf/101.conf");
        let err = layout
            .container_paths(ct(101), &ConfigFile::default(), &conf)
            .unwrap_err();
        assert_eq!(err.exit_code(), 85);
    }

    #[test]
    fn stop_timeout_fallbacks() {
        let home = tempfile::tempdir().unwrap();
        let layout = Layout::under_home(home.path()).unwrap();
        assert_eq!(layout.stop_timeout(&ConfigFile::default()), 120);
        assert_eq!(
            layout.stop_timeout(&ConfigFile::parse("STOP_TIMEOUT=\"7\"")),
            7
        );
        assert_eq!(
            layout.stop_timeout(&ConfigFile::parse("STOP_TIMEOUT=\"0\"")),
            120
        );
    }
}
