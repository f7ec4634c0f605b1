//! The sample configs that ship with Lamina (`etc/samples/`).
//!
//! They are compiled into the binary and written into the config directory
//! the first time a command needs one, unless a file of that name is there
//! already, so an administrator's edits are kept.

use std::fs;
use std::path::Path;

use super::config::{ConfigFile, write_atomic};
use super::error::ContainerError;
use super::layout::Layout;

/// The shipped samples: name (as `--config` takes it) and text.
pub const SAMPLES: [(&str, &str); 4] = [
    (
        "basic",
        include_str!("../../../etc/samples/ve-basic.conf-sample"),
    ),
    (
        "vswap-256m",
        include_str!("../../../etc/samples/ve-vswap-256m.conf-sample"),
    ),
    (
        "vswap-512m",
        include_str!("../../../etc/samples/ve-vswap-512m.conf-sample"),
    ),
    (
        "vswap-1g",
        include_str!("../../../etc/samples/ve-vswap-1g.conf-sample"),
    ),
];

/// The sample that `create` uses when neither `--config` nor the global
/// CONFIGFILE names one (vzctl 4.x ships the same default).
pub const DEFAULT_SAMPLE: &str = "vswap-256m";

/// Writes every shipped sample that is missing from the config directory.
pub fn install(layout: &Layout) -> Result<(), ContainerError> {
    let dir = &layout.conf_dir;
    fs::create_dir_all(dir).map_err(ContainerError::io("create directory", dir))?;
    for (name, text) in SAMPLES {
        let path = layout.sample_file(name);
        if !path.exists() {
            write_atomic(&path, text.as_bytes()).map_err(ContainerError::io("write", &path))?;
        }
    }
    Ok(())
}

/// Loads sample `name`, installing the shipped samples first.
pub fn load(layout: &Layout, name: &str) -> Result<ConfigFile, ContainerError> {
    let not_found = || ContainerError::SampleNotFound {
        name: name.to_string(),
        path: layout.sample_file(name),
    };
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_.".contains(c);
    if name.is_empty() || !name.chars().all(plain) || name.starts_with('.') {
        return Err(not_found());
    }
    install(layout)?;
    let path = layout.sample_file(name);
    if !Path::new(&path).is_file() {
        return Err(not_found());
    }
    Ok(ConfigFile::load(&path)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_install_and_load() {
        let home = tempfile::tempdir().unwrap();
        let layout = Layout::under_home(home.path()).unwrap();
        let config = load(&layout, "vswap-1g").unwrap();
        assert_eq!(config.get("PHYSPAGES"), Some("0:1G"));
        assert_eq!(config.get("SWAPPAGES"), Some("0:2G"));
        for (name, _) in SAMPLES {
            assert!(layout.sample_file(name).is_file(), "{name} not installed");
        }
    }

    #[test]
    fn edited_sample_is_kept() {
        let home = tempfile::tempdir().unwrap();
        let layout = Layout::under_home(home.path()).unwrap();
        install(&layout).unwrap();
        fs::write(layout.sample_file("basic"), "CPUS=\"3\"\n").unwrap();
        assert_eq!(load(&layout, "basic").unwrap().get("CPUS"), Some("3"));
    }

    #[test]
    fn unknown_sample_is_82() {
        let home = tempfile::tempdir().unwrap();
        let layout = Layout::under_home(home.path()).unwrap();
        for name in ["nosuch", "../x", ""] {
            assert_eq!(load(&layout, name).unwrap_err().exit_code(), 82, "{name}");
        }
    }

    #[test]
    fn every_sample_parses_with_vzctl_units() {
        use super::super::units::{Unit, Unlimited, parse_pair};
        for (name, text) in SAMPLES {
            let config = ConfigFile::parse(text);
            for key in ["PHYSPAGES", "SWAPPAGES"] {
                let value = config.get(key).unwrap();
                assert!(
                    parse_pair(value, Unit::Pages, Unlimited::Allowed).is_ok(),
                    "{name} {key}"
                );
            }
            let space = config.get("DISKSPACE").unwrap();
            assert!(
                parse_pair(space, Unit::Kilobytes, Unlimited::Rejected).is_ok(),
                "{name}"
            );
        }
    }
}
