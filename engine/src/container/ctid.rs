//! Container IDs and names, and the name registry.
//!
//! As in vzctl 4.x, a name is a symlink `NAMES/<name>` to the container's
//! config file `CONF/<CTID>.conf`; resolving a name reads the link and checks
//! that the config's NAME still matches.

use std::fmt;
use std::fs;
use std::io;
use std::path::Path;

use super::config::ConfigFile;
use super::error::ContainerError;
use super::layout::Layout;

/// vzctl's `VEID_MAX`: the largest valid numeric container ID.
pub const CTID_MAX: u32 = 2_147_483_644;

/// A numeric container ID from 1 to [`CTID_MAX`].
///
/// ID 0 is the host in vzctl and is not a container here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ctid(u32);

impl Ctid {
    /// Parses a decimal CTID.
    pub fn parse(text: &str) -> Result<Self, ContainerError> {
        let bad = || ContainerError::BadCtid {
            value: text.to_string(),
            max: CTID_MAX,
        };
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let id: u32 = text.parse().map_err(|_| bad())?;
        if id == 0 || id > CTID_MAX {
            return Err(bad());
        }
        Ok(Ctid(id))
    }

    /// Returns the number.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for Ctid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Checks a container name: letters, digits, space and `-+_.` (vzctl's set),
/// not all digits (a number would read as a CTID), at most 255 bytes.
pub fn validate_name(name: &str) -> Result<(), ContainerError> {
    let bad = || ContainerError::BadName {
        name: name.to_string(),
    };
    let allowed = |c: char| c.is_ascii_alphanumeric() || " -+_.".contains(c);
    if name.is_empty() || name.len() > 255 || !name.chars().all(allowed) {
        return Err(bad());
    }
    if name.bytes().all(|b| b.is_ascii_digit()) || name == "." || name == ".." {
        return Err(bad());
    }
    Ok(())
}

/// Resolves a command-line container reference: a CTID or a registered name.
pub fn resolve(layout: &Layout, text: &str) -> Result<Ctid, ContainerError> {
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return Ctid::parse(text);
    }
    if validate_name(text).is_err() {
        return Err(ContainerError::BadCtid {
            value: text.to_string(),
            max: CTID_MAX,
        });
    }
    let not_found = || ContainerError::NameNotFound {
        name: text.to_string(),
    };
    let ctid = lookup_name(layout, text)?.ok_or_else(not_found)?;

    // vzctl re-checks that the config still carries this name.
    let config = ConfigFile::load_or_empty(&layout.conf_file(ctid))?;
    if config.get("NAME") != Some(text) {
        return Err(not_found());
    }
    Ok(ctid)
}

/// Returns the CTID a name's link points to, if the link exists.
pub fn lookup_name(layout: &Layout, name: &str) -> Result<Option<Ctid>, ContainerError> {
    let link = layout.names_dir.join(name);
    let target = match fs::read_link(&link) {
        Ok(target) => target,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(ContainerError::io("read name link", &link)(err)),
    };
    let file = target
        .file_name()
        .and_then(|f| f.to_str())
        .unwrap_or_default();
    let id = file.strip_suffix(".conf").unwrap_or_default();
    Ok(Ctid::parse(id).ok())
}

/// Registers `name` for `ctid`, replacing the container's old name. Fails
/// when the name belongs to another container.
pub fn register_name(
    layout: &Layout,
    ctid: Ctid,
    name: &str,
    old_name: Option<&str>,
) -> Result<(), ContainerError> {
    validate_name(name)?;
    if let Some(owner) = lookup_name(layout, name)?
        && owner != ctid
        && layout.conf_file(owner).exists()
    {
        return Err(ContainerError::NameInUse {
            name: name.to_string(),
            owner: owner.get(),
        });
    }

    let dir = &layout.names_dir;
    fs::create_dir_all(dir).map_err(ContainerError::io("create directory", dir))?;
    let link = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(layout.conf_file(ctid), &tmp)
        .map_err(ContainerError::io("create name link", &tmp))?;
    fs::rename(&tmp, &link).map_err(ContainerError::io("create name link", &link))?;

    if let Some(old) = old_name.filter(|old| *old != name) {
        unregister_name(layout, ctid, old)?;
    }
    Ok(())
}

/// Removes `name` if it points to `ctid`.
pub fn unregister_name(layout: &Layout, ctid: Ctid, name: &str) -> Result<(), ContainerError> {
    if lookup_name(layout, name)? == Some(ctid) {
        let link = layout.names_dir.join(name);
        fs::remove_file(&link).map_err(ContainerError::io("remove name link", &link))?;
    }
    Ok(())
}

/// Removes every name link that points to `ctid`.
pub fn unregister_all(layout: &Layout, ctid: Ctid) -> Result<(), ContainerError> {
    let entries = match fs::read_dir(&layout.names_dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(ContainerError::io("read directory", &layout.names_dir)(err)),
    };
    for entry in entries.flatten() {
        if let Some(name) = entry.file_name().to_str() {
            unregister_name(layout, ctid, name)?;
        }
    }
    Ok(())
}

/// Returns whether a path names the config file of a container.
pub fn ctid_of_conf(path: &Path) -> Option<Ctid> {
    let file = path.file_name()?.to_str()?;
    Ctid::parse(file.strip_suffix(".conf")?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctid_range() {
        assert_eq!(Ctid::parse("101").unwrap().get(), 101);
        assert_eq!(Ctid::parse("2147483644").unwrap().get(), CTID_MAX);
        for bad in ["0", "2147483645", "99999999999", "-1", "1a", "", " 1", "+5"] {
            assert!(Ctid::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn bad_ctid_exit_code_is_21() {
        assert_eq!(Ctid::parse("abc").unwrap_err().exit_code(), 21);
    }

    #[test]
    fn name_charset() {
        for good in ["web", "web-1", "a.b_c+d e"] {
            assert!(validate_name(good).is_ok(), "{good:?} rejected");
        }
        for bad in ["", "123", "a/b", "ä", "x;y", "..", &"n".repeat(256)] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn names_register_resolve_and_conflict() {
        let home = tempfile::tempdir().unwrap();
        let layout = Layout::under_home(home.path()).unwrap();
        fs::create_dir_all(&layout.conf_dir).unwrap();
        let a = Ctid::parse("101").unwrap();
        let b = Ctid::parse("102").unwrap();
        fs::write(layout.conf_file(a), "NAME=\"web\"\n").unwrap();
        fs::write(layout.conf_file(b), "NAME=\"db\"\n").unwrap();

        register_name(&layout, a, "web", None).unwrap();
        assert_eq!(resolve(&layout, "web").unwrap(), a);
        assert_eq!(resolve(&layout, "101").unwrap(), a);

        let err = register_name(&layout, b, "web", None).unwrap_err();
        assert_eq!(err.exit_code(), 131);
        assert!(matches!(
            resolve(&layout, "db"),
            Err(ContainerError::NameNotFound { .. })
        ));

        unregister_all(&layout, a).unwrap();
        assert!(matches!(
            resolve(&layout, "web"),
            Err(ContainerError::NameNotFound { .. })
        ));
    }

    #[test]
    fn stale_name_link_is_not_resolved() {
        let home = tempfile::tempdir().unwrap();
        let layout = Layout::under_home(home.path()).unwrap();
        fs::create_dir_all(&layout.conf_dir).unwrap();
        let a = Ctid::parse("101").unwrap();
        fs::write(layout.conf_file(a), "NAME=\"web\"\n").unwrap();
        register_name(&layout, a, "web", None).unwrap();

        fs::write(layout.conf_file(a), "NAME=\"other\"\n").unwrap();
        assert!(matches!(
            resolve(&layout, "web"),
            Err(ContainerError::NameNotFound { .. })
        ));
    }
}
