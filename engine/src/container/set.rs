//! `set`: change limits, disk size, hostname, name and boot flag.
//!
//! Limits and the hostname apply live to a running container. The disk
//! and its filesystem grow online while the container is mounted, and
//! offline through a private loop device otherwise. `--save` writes the
//! changed keys into the config, and only when every live change
//! succeeded, as vzctl does.

use std::cmp::Ordering;

use super::backend::{self, RunState};
use super::create::{parse_option_pair, validate_hostname};
use super::ctid::{self, Ctid};
use super::error::ContainerError;
use super::instance::Container;
use super::layout::Layout;
use super::lock::CtLock;
use super::net::{self, NetOptions};
use super::resources::{CPUUNITS_RANGE, Resources};
use super::rootfs;
use super::units::{Unit, Unlimited, format_pair, page_size, parse_pair, parse_value};

/// Options of [`set`], as given on the command line.
#[derive(Debug, Clone, Default)]
pub struct SetOptions {
    /// Memory limit (`--ram`), bytes with vzctl suffixes.
    pub ram: Option<String>,
    /// Swap limit (`--swap`), bytes with vzctl suffixes.
    pub swap: Option<String>,
    /// CPU count (`--cpus`).
    pub cpus: Option<String>,
    /// CPU limit in percent of one CPU (`--cpulimit`, `N` or `N%`).
    pub cpulimit: Option<String>,
    /// CPU weight (`--cpuunits`).
    pub cpuunits: Option<String>,
    /// Disk size, `[soft:]hard` (`--diskspace`).
    pub diskspace: Option<String>,
    /// Inode count, `[soft:]hard` (`--diskinodes`); applies at create only.
    pub diskinodes: Option<String>,
    /// Hostname (`--hostname`).
    pub hostname: Option<String>,
    /// Container name (`--name`); needs `--save`.
    pub name: Option<String>,
    /// Start at boot (`--onboot yes|no`).
    pub onboot: Option<String>,
    /// Seconds to wait for init at stop (`--stop-timeout`).
    pub stop_timeout: Option<String>,
    /// Addresses, interfaces and resolver settings.
    pub net: NetOptions,
    /// Write the changes into the config (`--save`).
    pub save: bool,
}

/// The outcome of [`set`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetReport {
    /// Changes were applied to the running container.
    pub applied_live: bool,
    /// The config was written.
    pub saved: bool,
    /// `--save` was given but no key changed.
    pub unchanged: bool,
}

/// Applies `opts` to container `ctid`.
pub fn set(layout: &Layout, ctid: Ctid, opts: &SetOptions) -> Result<SetReport, ContainerError> {
    let _lock = CtLock::acquire(layout, ctid)?;
    let mut container = Container::load(layout, ctid)?;
    let old_name = container.config.get_nonempty("NAME").map(str::to_string);

    let changes = parse_changes(opts)?;
    if opts.name.is_some() && !opts.save {
        return Err(ContainerError::BadUsage {
            message: "Unable to set the name without --save: add --save".to_string(),
        });
    }
    let mut changed = container.config.clone();
    let mut any_change = false;
    for (key, value) in &changes {
        any_change |= changed.set(key, value);
    }
    any_change |= net::update_config(layout, ctid, &mut changed, &opts.net)?;
    let resources = Resources::from_config(&changed, &container.conf_path)?;

    let grow_to = match &opts.diskspace {
        Some(space) => plan_grow(&container, space)?,
        None => None,
    };

    let running = matches!(container.run_state()?, RunState::Running { .. });
    let mut report = SetReport::default();
    if running && touches_limits(opts) {
        backend::apply_limits(ctid, &resources)?;
        report.applied_live = true;
    }
    if let Some(hostname) = &opts.hostname {
        apply_hostname(&container, running, hostname)?;
        report.applied_live |= running;
    }
    if !opts.net.is_empty() || opts.hostname.is_some() {
        report.applied_live |= net::apply_set(&container, &changed)?;
    }
    if let Some(size) = grow_to {
        grow_disk(&container, size)?;
    }

    if let Some(name) = &opts.name {
        ctid::register_name(layout, ctid, name, old_name.as_deref())?;
    }
    if opts.save {
        if any_change {
            container.config = changed;
            container.save_config()?;
            report.saved = true;
        } else {
            report.unchanged = true;
        }
    }
    Ok(report)
}

fn touches_limits(opts: &SetOptions) -> bool {
    opts.ram.is_some()
        || opts.swap.is_some()
        || opts.cpus.is_some()
        || opts.cpulimit.is_some()
        || opts.cpuunits.is_some()
}

/// Validates every option and returns the config keys it sets.
fn parse_changes(opts: &SetOptions) -> Result<Vec<(&'static str, String)>, ContainerError> {
    let mut changes = Vec::new();
    let bad_unit = |option: &str, value: &str| {
        let option = format!("{option} {value:?}");
        move |source| ContainerError::BadUnit { option, source }
    };
    for (option, value, key) in [
        ("--ram", &opts.ram, "PHYSPAGES"),
        ("--swap", &opts.swap, "SWAPPAGES"),
    ] {
        if let Some(value) = value {
            let bytes = parse_value(value, Unit::Bytes, Unlimited::Allowed)
                .map_err(bad_unit(option, value))?;
            // A zero memory limit cannot work: cgroup v1 rejects a limit
            // below the memory in use (EBUSY), and v2 OOM-kills processes
            // until they fit under memory.max. Zero swap is valid.
            if key == "PHYSPAGES" && bytes == 0 {
                return Err(bad_value(
                    option,
                    value,
                    "a memory limit must be above zero; use a size or unlimited",
                ));
            }
            let pages = if bytes >= super::units::UNLIMITED {
                bytes
            } else {
                bytes.div_ceil(page_size())
            };
            changes.push((key, format_pair(0, pages)));
        }
    }
    if let Some(value) = &opts.cpus {
        changes.push(("CPUS", number(value, "--cpus", 1..=u32::MAX)?.to_string()));
    }
    if let Some(value) = &opts.cpulimit {
        let percent = number(value.trim_end_matches('%'), "--cpulimit", 0..=u32::MAX)?;
        changes.push(("CPULIMIT", percent.to_string()));
    }
    if let Some(value) = &opts.cpuunits {
        changes.push((
            "CPUUNITS",
            number(value, "--cpuunits", CPUUNITS_RANGE)?.to_string(),
        ));
    }
    if let Some(value) = &opts.diskspace {
        let (soft, hard) = parse_option_pair("--diskspace", value, Unit::Kilobytes)?;
        changes.push(("DISKSPACE", format_pair(soft, hard)));
    }
    if let Some(value) = &opts.diskinodes {
        let (soft, hard) = parse_option_pair("--diskinodes", value, Unit::Count)?;
        changes.push(("DISKINODES", format_pair(soft, hard)));
    }
    if let Some(value) = &opts.hostname {
        validate_hostname(value)?;
        changes.push(("HOSTNAME", value.clone()));
    }
    if let Some(value) = &opts.name {
        ctid::validate_name(value)?;
        changes.push(("NAME", value.clone()));
    }
    if let Some(value) = &opts.onboot {
        if value != "yes" && value != "no" {
            return Err(bad_value("--onboot", value, "use yes or no"));
        }
        changes.push(("ONBOOT", value.clone()));
    }
    if let Some(value) = &opts.stop_timeout {
        changes.push((
            "STOP_TIMEOUT",
            number(value, "--stop-timeout", 0..=u32::MAX)?.to_string(),
        ));
    }
    Ok(changes)
}

fn bad_value(option: &str, value: &str, reason: &str) -> ContainerError {
    ContainerError::BadValue {
        option: option.to_string(),
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

fn number(
    value: &str,
    option: &str,
    range: std::ops::RangeInclusive<u32>,
) -> Result<u32, ContainerError> {
    parse_value(value, Unit::Count, Unlimited::Rejected)
        .ok()
        .and_then(|n| u32::try_from(n).ok())
        .filter(|n| range.contains(n))
        .ok_or_else(|| {
            let reason = format!("use a number from {} to {}", range.start(), range.end());
            bad_value(option, value, &reason)
        })
}

/// Sets the hostname in the running container and in its `/etc/hostname`.
fn apply_hostname(
    container: &Container,
    running: bool,
    hostname: &str,
) -> Result<(), ContainerError> {
    if running {
        backend::set_hostname(container.ctid, &container.state_dir(), hostname)?;
    }
    if container.is_mounted() {
        let data = format!("{hostname}\n");
        rootfs::write_file(&container.paths.root, "etc", "hostname", data.as_bytes())?;
    }
    Ok(())
}

/// Returns the size in bytes to grow the image to for `--diskspace`, or
/// `None` when the image has that size already. The hard limit is rounded
/// up to whole clusters, as the image engine sizes images.
///
/// Shrinking is rejected: below DISKSPACE in the config, and below the
/// image's actual size, which exceeds DISKSPACE after a grow that was not
/// saved or whose filesystem step failed.
fn plan_grow(container: &Container, space: &str) -> Result<Option<u64>, ContainerError> {
    let (_, hard_kb) = parse_option_pair("--diskspace", space, Unit::Kilobytes)?;
    if let Some(current) = container.config.get_nonempty("DISKSPACE")
        && let Ok((_, current_kb)) = parse_pair(current, Unit::Kilobytes, Unlimited::Rejected)
        && hard_kb < current_kb
    {
        let reason = format!(
            "shrinking an image is not supported; DISKSPACE is {current_kb} KB, give at least that"
        );
        return Err(bad_value("--diskspace", space, &reason));
    }

    container.require_private()?;
    let cluster = backend::CLUSTER_SIZE;
    let size = hard_kb
        .checked_mul(1024)
        .and_then(|bytes| bytes.div_ceil(cluster).checked_mul(cluster))
        .ok_or_else(|| bad_value("--diskspace", space, "the size is too large"))?;
    let image = backend::image_size(&container.paths.disk)?;
    match size.cmp(&image) {
        Ordering::Less => {
            let reason = format!(
                "shrinking an image is not supported; the image is {} KB, give at least that",
                image / 1024
            );
            Err(bad_value("--diskspace", space, &reason))
        }
        Ordering::Equal => Ok(None),
        Ordering::Greater => Ok(Some(size)),
    }
}

/// Grows the image and its filesystem to `size` bytes: online through the
/// image server when the root is mounted, offline otherwise.
fn grow_disk(container: &Container, size: u64) -> Result<(), ContainerError> {
    if container.is_mounted() {
        return backend::grow(&container.paths.disk, size);
    }
    backend::grow_offline(&container.paths.disk, size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ram_becomes_pages() {
        let opts = SetOptions {
            ram: Some("512M".into()),
            ..Default::default()
        };
        let changes = parse_changes(&opts).unwrap();
        let pages = (512u64 << 20) / page_size();
        assert_eq!(changes, vec![("PHYSPAGES", format!("0:{pages}"))]);
    }

    #[test]
    fn diskspace_becomes_kb_pair() {
        let opts = SetOptions {
            diskspace: Some("10G".into()),
            ..Default::default()
        };
        let changes = parse_changes(&opts).unwrap();
        assert_eq!(
            changes,
            vec![("DISKSPACE", "10485760:10485760".to_string())]
        );
    }

    #[test]
    fn bad_values_are_rejected() {
        let cases = [
            (
                SetOptions {
                    ram: Some("10Q".into()),
                    ..Default::default()
                },
                21,
            ),
            (
                SetOptions {
                    ram: Some("0".into()),
                    ..Default::default()
                },
                21,
            ),
            (
                SetOptions {
                    cpuunits: Some("5".into()),
                    ..Default::default()
                },
                21,
            ),
            (
                SetOptions {
                    cpus: Some("0".into()),
                    ..Default::default()
                },
                21,
            ),
            (
                SetOptions {
                    onboot: Some("maybe".into()),
                    ..Default::default()
                },
                21,
            ),
            (
                SetOptions {
                    hostname: Some("bad_host".into()),
                    ..Default::default()
                },
                70,
            ),
            (
                SetOptions {
                    name: Some("12".into()),
                    ..Default::default()
                },
                131,
            ),
        ];
        for (opts, code) in cases {
            assert_eq!(
                parse_changes(&opts).unwrap_err().exit_code(),
                code,
                "{opts:?}"
            );
        }
    }

    #[test]
    fn zero_swap_is_allowed() {
        let opts = SetOptions {
            swap: Some("0".into()),
            ..Default::default()
        };
        assert_eq!(
            parse_changes(&opts).unwrap(),
            vec![("SWAPPAGES", "0:0".to_string())]
        );
    }

    #[test]
    fn cpulimit_accepts_percent_sign() {
        let opts = SetOptions {
            cpulimit: Some("150%".into()),
            ..Default::default()
        };
        assert_eq!(
            parse_changes(&opts).unwrap(),
            vec![("CPULIMIT", "150".to_string())]
        );
    }
}
