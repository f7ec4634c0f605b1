//! `create`: a new container from a sample config and an OS template.
//!
//! The image is built in `VE_PRIVATE.tmp` and renamed into place only when
//! the template is extracted and unmounted, and the config is written last,
//! so a failed or interrupted create leaves no container behind. A guard
//! undoes the mount, the temp area and the mount point on every error.
//!
//! lamctl turns SIGINT, SIGTERM and SIGHUP into [`CANCEL`], which create
//! checks between steps. NOTE: SIGKILL still skips the guard; the next
//! create of the same CTID unmounts and removes the leftover temp area.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use super::backend::{self, MountRequest};
use super::config::ConfigFile;
use super::ctid::{self, Ctid};
use super::error::ContainerError;
use super::layout::Layout;
use super::lock::CtLock;
use super::net::{self, NetOptions};
use super::rootfs;
use super::samples::{self, DEFAULT_SAMPLE};
use super::template::{self, TemplateError};
use super::units::{Unit, Unlimited, format_pair, parse_pair};

/// Options of [`create`], as given on the command line.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    /// OS template name (`--ostemplate`).
    pub ostemplate: Option<String>,
    /// Sample config name without `ve-` and `.conf-sample` (`--config`).
    pub config: Option<String>,
    /// Disk space, `[soft:]hard` with vzctl units; bare numbers are KB.
    pub diskspace: Option<String>,
    /// Inode count, `[soft:]hard`.
    pub diskinodes: Option<String>,
    /// Hostname.
    pub hostname: Option<String>,
    /// Container name.
    pub name: Option<String>,
    /// Addresses, interfaces and resolver settings.
    pub net: NetOptions,
}

/// The container that [`create`] made.
#[derive(Debug, Clone)]
pub struct Created {
    /// The template name, as OSTEMPLATE stores it.
    pub template: String,
    /// The private area.
    pub private: PathBuf,
}

/// Set by the caller (a signal handler of lamctl) to stop a running
/// [`create`] at its next step; the create then removes what it made.
pub static CANCEL: AtomicBool = AtomicBool::new(false);

fn check_cancel(ctid: u32) -> Result<(), ContainerError> {
    if CANCEL.load(Ordering::Relaxed) {
        return Err(ContainerError::CreateCancelled { ctid });
    }
    Ok(())
}

/// Creates container `ctid`: [`prepare`], then [`Plan::run`].
pub fn create(
    layout: &Layout,
    ctid: Ctid,
    opts: &CreateOptions,
) -> Result<Created, ContainerError> {
    prepare(layout, ctid, opts)?.run()
}

/// A create whose options, config, template and disk size were checked,
/// holding the container lock until it runs or is dropped.
#[derive(Debug)]
pub struct Plan {
    layout: Layout,
    ctid: Ctid,
    _lock: CtLock,
    conf_path: PathBuf,
    config: ConfigFile,
    private: PathBuf,
    root: PathBuf,
    name: Option<String>,
    template: String,
    tarball: PathBuf,
    size: u64,
    inodes: Option<u64>,
}

/// Checks everything `create` needs before it changes anything: option
/// values, the sample config, the paths, the name, the OS template and
/// the disk size. Takes the container lock.
pub fn prepare(layout: &Layout, ctid: Ctid, opts: &CreateOptions) -> Result<Plan, ContainerError> {
    validate_options(opts)?;
    let lock = CtLock::acquire(layout, ctid)?;

    let conf_path = layout.conf_file(ctid);
    let mut config = initial_config(layout, &conf_path, opts)?;
    apply_options(&mut config, layout, opts)?;
    net::update_config(layout, ctid, &mut config, &opts.net)?;
    let paths = layout.container_paths(ctid, &config, &conf_path)?;
    if paths.private.exists() {
        return Err(ContainerError::PrivateExists {
            path: paths.private,
        });
    }
    if let Some(name) = &opts.name
        && let Some(owner) = ctid::lookup_name(layout, name)?
        && owner != ctid
        && layout.conf_file(owner).exists()
    {
        return Err(ContainerError::NameInUse {
            name: name.clone(),
            owner: owner.get(),
        });
    }

    let template_name = config
        .get_nonempty("OSTEMPLATE")
        .ok_or(ContainerError::TemplateNotSpecified)?;
    let cache = layout.template_cache();
    let tarball =
        template::find(&cache, template_name).ok_or_else(|| ContainerError::TemplateNotFound {
            name: template_name.to_string(),
            dir: cache.clone(),
        })?;
    let template = template::base_name(template_name).to_string();
    let (size, inodes) = disk_geometry(&config, &conf_path)?;

    Ok(Plan {
        layout: layout.clone(),
        ctid,
        _lock: lock,
        conf_path,
        config,
        private: paths.private,
        root: paths.root,
        name: opts.name.clone(),
        template,
        tarball,
        size,
        inodes,
    })
}

impl Plan {
    /// Returns the OS template name, as OSTEMPLATE stores it.
    pub fn template(&self) -> &str {
        &self.template
    }

    /// Builds the private area, saves the config and registers the name.
    pub fn run(self) -> Result<Created, ContainerError> {
        let ctid = self.ctid;
        let mut build = Build::new(ctid.get(), &self.private, &self.root);
        let hostname = self.config.get_nonempty("HOSTNAME");
        build.run(&self.tarball, self.size, self.inodes, hostname)?;
        check_cancel(ctid.get())?;
        build.commit()?;

        let conf_dir = &self.layout.conf_dir;
        fs::create_dir_all(conf_dir).map_err(ContainerError::io("create directory", conf_dir))?;
        self.config.save(&self.conf_path)?;
        if let Some(name) = &self.name {
            ctid::register_name(&self.layout, ctid, name, None)?;
        }
        Ok(Created {
            template: self.template,
            private: self.private,
        })
    }
}

fn validate_options(opts: &CreateOptions) -> Result<(), ContainerError> {
    if let Some(hostname) = &opts.hostname {
        validate_hostname(hostname)?;
    }
    if let Some(name) = &opts.name {
        ctid::validate_name(name)?;
    }
    if let Some(space) = &opts.diskspace {
        parse_option_pair("--diskspace", space, Unit::Kilobytes)?;
    }
    if let Some(inodes) = &opts.diskinodes {
        parse_option_pair("--diskinodes", inodes, Unit::Count)?;
    }
    Ok(())
}

/// Checks a hostname: labels of letters, digits and `-` joined by `.`, at
/// most 253 characters (RFC 1123).
pub fn validate_hostname(hostname: &str) -> Result<(), ContainerError> {
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    let name = hostname.strip_suffix('.').unwrap_or(hostname);
    if hostname.len() > 253 || !name.split('.').all(label_ok) {
        return Err(ContainerError::BadHostname {
            hostname: hostname.to_string(),
        });
    }
    Ok(())
}

/// Parses a `[soft:]hard` option value into native units.
pub fn parse_option_pair(
    option: &str,
    value: &str,
    unit: Unit,
) -> Result<(u64, u64), ContainerError> {
    let (soft, hard) =
        parse_pair(value, unit, Unlimited::Rejected).map_err(|source| ContainerError::BadUnit {
            option: format!("{option} {value:?}"),
            source,
        })?;
    if soft > hard || hard == 0 {
        return Err(ContainerError::BadValue {
            option: option.to_string(),
            value: value.to_string(),
            reason: "the hard limit must be above zero and at least the soft limit".to_string(),
        });
    }
    Ok((soft, hard))
}

fn initial_config(
    layout: &Layout,
    conf_path: &Path,
    opts: &CreateOptions,
) -> Result<ConfigFile, ContainerError> {
    if conf_path.exists() {
        if opts.config.is_some() {
            return Err(ContainerError::ConfigExists {
                path: conf_path.to_path_buf(),
            });
        }
        return Ok(ConfigFile::load(conf_path)?);
    }
    let sample = opts
        .config
        .as_deref()
        .or_else(|| layout.global.get_nonempty("CONFIGFILE"))
        .unwrap_or(DEFAULT_SAMPLE);
    let mut config = samples::load(layout, sample)?;
    config.set("ORIGIN_SAMPLE", sample);
    Ok(config)
}

fn apply_options(
    config: &mut ConfigFile,
    layout: &Layout,
    opts: &CreateOptions,
) -> Result<(), ContainerError> {
    let template = opts
        .ostemplate
        .as_deref()
        .or_else(|| config.get_nonempty("OSTEMPLATE"))
        .or_else(|| layout.global.get_nonempty("DEF_OSTEMPLATE"))
        .map(|name| template::base_name(name).to_string());
    if let Some(template) = template {
        config.set("OSTEMPLATE", &template);
    }
    if let Some(space) = &opts.diskspace {
        let (soft, hard) = parse_option_pair("--diskspace", space, Unit::Kilobytes)?;
        config.set("DISKSPACE", &format_pair(soft, hard));
    }
    if let Some(inodes) = &opts.diskinodes {
        let (soft, hard) = parse_option_pair("--diskinodes", inodes, Unit::Count)?;
        config.set("DISKINODES", &format_pair(soft, hard));
    }
    if let Some(hostname) = &opts.hostname {
        config.set("HOSTNAME", hostname);
    }
    if let Some(name) = &opts.name {
        config.set("NAME", name);
    }
    if config.get_nonempty("VE_ROOT").is_none() {
        config.set("VE_ROOT", &layout.root_pattern);
    }
    if config.get_nonempty("VE_PRIVATE").is_none() {
        config.set("VE_PRIVATE", &layout.private_pattern);
    }
    Ok(())
}

/// Returns the image size in bytes (the DISKSPACE hard limit) and the inode
/// count (the DISKINODES hard limit).
fn disk_geometry(
    config: &ConfigFile,
    conf_path: &Path,
) -> Result<(u64, Option<u64>), ContainerError> {
    let invalid = |key: &str, value: &str, reason: String| ContainerError::InvalidConfig {
        path: conf_path.to_path_buf(),
        key: key.to_string(),
        value: value.to_string(),
        reason,
    };
    let space = config
        .get_nonempty("DISKSPACE")
        .ok_or(ContainerError::DiskspaceNotSet)?;
    let (_, hard_kb) = parse_pair(space, Unit::Kilobytes, Unlimited::Rejected)
        .map_err(|err| invalid("DISKSPACE", space, err.to_string()))?;
    if hard_kb == 0 {
        return Err(ContainerError::DiskspaceNotSet);
    }
    let size = hard_kb
        .checked_mul(1024)
        .ok_or_else(|| invalid("DISKSPACE", space, "too large".into()))?;

    let inodes = match config.get_nonempty("DISKINODES") {
        Some(value) => {
            let (_, hard) = parse_pair(value, Unit::Count, Unlimited::Rejected)
                .map_err(|err| invalid("DISKINODES", value, err.to_string()))?;
            Some(hard)
        }
        None => None,
    };
    Ok((size, inodes))
}

/// The steps that build the private area, undone on drop unless committed.
struct Build {
    ctid: u32,
    private: PathBuf,
    tmp: PathBuf,
    root: PathBuf,
    root_created: bool,
    mounted: bool,
    committed: bool,
}

impl Build {
    fn new(ctid: u32, private: &Path, root: &Path) -> Self {
        let mut tmp = private.as_os_str().to_os_string();
        tmp.push(".tmp");
        Build {
            ctid,
            private: private.to_path_buf(),
            tmp: PathBuf::from(tmp),
            root: root.to_path_buf(),
            root_created: false,
            mounted: false,
            committed: false,
        }
    }

    fn run(
        &mut self,
        tarball: &Path,
        size: u64,
        inodes: Option<u64>,
        hostname: Option<&str>,
    ) -> Result<(), ContainerError> {
        if self.tmp.exists() {
            // An interrupted create may have left its image mounted.
            tracing::warn!(path = %self.tmp.display(), "removing a leftover temp private area");
            if let Some(target) = backend::mounted_at(&self.tmp.join("root.hdd")) {
                backend::umount(&target, true)?;
            }
            fs::remove_dir_all(&self.tmp).map_err(ContainerError::io("remove", &self.tmp))?;
        }
        fs::create_dir_all(&self.tmp).map_err(ContainerError::io("create directory", &self.tmp))?;
        let disk = self.tmp.join("root.hdd");
        let ctid = self.ctid;
        backend::create_disk(&disk, size)?;
        check_cancel(ctid)?;
        backend::mkfs(&disk, inodes)?;
        check_cancel(ctid)?;

        if !self.root.exists() {
            fs::create_dir_all(&self.root)
                .map_err(ContainerError::io("create directory", &self.root))?;
            self.root_created = true;
        }
        backend::mount(&MountRequest {
            disk: &disk,
            target: &self.root,
            snapshot: None,
        })?;
        self.mounted = true;

        template::extract_cancellable(tarball, &self.root, &CANCEL).map_err(|err| match err {
            TemplateError::Cancelled { .. } => ContainerError::CreateCancelled { ctid },
            other => other.into(),
        })?;
        if let Some(hostname) = hostname {
            rootfs::write_file(
                &self.root,
                "etc",
                "hostname",
                format!("{hostname}\n").as_bytes(),
            )?;
        }

        backend::umount(&self.root, false)?;
        self.mounted = false;
        Ok(())
    }

    fn commit(mut self) -> Result<(), ContainerError> {
        fs::rename(&self.tmp, &self.private).map_err(ContainerError::io("rename", &self.tmp))?;
        if let Some(parent) = self.private.parent() {
            fs::File::open(parent)
                .and_then(|dir| dir.sync_all())
                .map_err(ContainerError::io("sync", parent))?;
        }
        self.committed = true;
        Ok(())
    }

    fn undo(&mut self) {
        if self.mounted
            && let Err(err) = backend::umount(&self.root, true)
        {
            tracing::error!(root = %self.root.display(), error = %err, "umount after failed create");
        }
        if self.tmp.exists()
            && let Err(err) = fs::remove_dir_all(&self.tmp)
        {
            tracing::error!(path = %self.tmp.display(), error = %err, "remove after failed create");
        }
        if self.root_created {
            let _ = fs::remove_dir(&self.root);
        }
    }
}

impl Drop for Build {
    fn drop(&mut self) {
        if !self.committed {
            self.undo();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames() {
        for good in ["ct101", "a.example.org", "x-1.y", "host."] {
            assert!(validate_hostname(good).is_ok(), "{good}");
        }
        for bad in ["", "-a", "a-", "a..b", "a_b", "a b", &"x".repeat(64)] {
            assert_eq!(validate_hostname(bad).unwrap_err().exit_code(), 70, "{bad}");
        }
    }

    #[test]
    fn diskspace_option_units() {
        assert_eq!(
            parse_option_pair("--diskspace", "10G", Unit::Kilobytes).unwrap(),
            (10 << 20, 10 << 20)
        );
        assert_eq!(
            parse_option_pair("--diskspace", "1G:2G", Unit::Kilobytes).unwrap(),
            (1 << 20, 2 << 20)
        );
        for bad in ["10Q", "2G:1G", "0", "unlimited"] {
            let err = parse_option_pair("--diskspace", bad, Unit::Kilobytes).unwrap_err();
            assert_eq!(err.exit_code(), 21, "{bad}");
        }
    }
}
