//! The container's `/etc/resolv.conf` and `/etc/hosts`, written from the
//! host into the mounted root.

use std::io::Read;
use std::net::IpAddr;
use std::path::Path;

use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::Mode;

use super::addr::CtAddress;
use super::error::NetError;

/// The value that copies the host's own setting.
pub const INHERIT: &str = "inherit";

/// The marker that ends every `/etc/hosts` line lamctl writes, so that the
/// next change replaces it instead of adding another.
pub const HOSTS_MARKER: &str = "# lamctl hostname";

/// The host file that `inherit` copies resolver settings from.
pub const HOST_RESOLV_CONF: &str = "/etc/resolv.conf";

/// Checks `--nameserver` values: addresses, or `inherit` alone.
pub fn validate_nameservers(values: &[String]) -> Result<(), NetError> {
    for value in values {
        let ok = value == INHERIT && values.len() == 1 || value.parse::<IpAddr>().is_ok();
        if !ok {
            return Err(NetError::BadNameserver {
                value: value.clone(),
            });
        }
    }
    Ok(())
}

/// Checks `--searchdomain` values: domain names, or `inherit` alone.
pub fn validate_search_domains(values: &[String]) -> Result<(), NetError> {
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    for value in values {
        let name = value.strip_suffix('.').unwrap_or(value);
        let ok = value == INHERIT && values.len() == 1
            || (value.len() <= 253 && name.split('.').all(label_ok));
        if !ok {
            return Err(NetError::BadSearchDomain {
                value: value.clone(),
            });
        }
    }
    Ok(())
}

/// Builds resolv.conf text from NAMESERVER and SEARCHDOMAIN values
/// (space-separated lists or `inherit`); `host_resolv` is the host's file
/// for `inherit`.
pub fn resolv_conf(nameserver: Option<&str>, search: Option<&str>, host_resolv: &str) -> String {
    let inherited = |keyword: &str| -> Vec<String> {
        host_resolv
            .lines()
            .filter_map(|line| {
                let mut words = line.split_whitespace();
                (words.next() == Some(keyword)).then(|| words.collect::<Vec<_>>().join(" "))
            })
            .filter(|rest| !rest.is_empty())
            .collect()
    };
    let mut text = String::new();
    if let Some(search) = search {
        let domains = if search == INHERIT {
            inherited("search").join(" ")
        } else {
            search.to_string()
        };
        if !domains.is_empty() {
            text.push_str(&format!("search {domains}\n"));
        }
    }
    if let Some(nameserver) = nameserver {
        let servers: Vec<String> = if nameserver == INHERIT {
            inherited("nameserver")
        } else {
            nameserver.split_whitespace().map(str::to_string).collect()
        };
        for server in servers {
            text.push_str(&format!("nameserver {server}\n"));
        }
    }
    text
}

/// The way a distribution writes its own hostname into `/etc/hosts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostsStyle {
    /// Debian and derivatives: `127.0.1.1 FQDN SHORT`.
    Debian,
    /// Everything else, busybox included: `127.0.0.1 FQDN SHORT`.
    Plain,
}

impl HostsStyle {
    /// Detects the style of the root at `root`: Debian has
    /// `/etc/debian_version`.
    pub fn of_root(root: &Path) -> Self {
        if read_in_root(root, "etc/debian_version").is_some() {
            HostsStyle::Debian
        } else {
            HostsStyle::Plain
        }
    }
}

/// Returns `current` hosts text with the hostname line replaced: the line
/// names the container's first routed address when it has one (as vzctl's
/// scripts do), else the style's loopback address. Lines lamctl did not
/// write are kept, and localhost lines are added when missing.
pub fn hosts(
    current: &str,
    hostname: &str,
    first_address: Option<&CtAddress>,
    style: HostsStyle,
) -> String {
    let mut lines: Vec<String> = current
        .lines()
        .filter(|line| !line.trim_end().ends_with(HOSTS_MARKER))
        .map(str::to_string)
        .collect();
    let has = |lines: &[String], addr: &str| {
        lines.iter().any(|l| {
            let mut words = l.split_whitespace();
            words.next() == Some(addr) && words.any(|w| w == "localhost")
        })
    };
    if !has(&lines, "127.0.0.1") {
        lines.insert(0, "127.0.0.1\tlocalhost".to_string());
    }
    if !has(&lines, "::1") {
        lines.insert(1, "::1\tlocalhost ip6-localhost ip6-loopback".to_string());
    }

    let address = match (first_address, style) {
        (Some(addr), _) => addr.ip.to_string(),
        (None, HostsStyle::Debian) => "127.0.1.1".to_string(),
        (None, HostsStyle::Plain) => "127.0.0.1".to_string(),
    };
    let short = hostname.split('.').next().unwrap_or(hostname);
    let names = if short == hostname {
        hostname.to_string()
    } else {
        format!("{hostname} {short}")
    };
    lines.push(format!("{address}\t{names}\t{HOSTS_MARKER}"));
    let mut text = lines.join("\n");
    text.push('\n');
    text
}

/// Reads `path` (relative) inside `root` with every symlink resolved
/// inside the root (openat2(2) RESOLVE_IN_ROOT), so a container's symlink
/// never makes the host read its own files. Returns `None` when the file
/// cannot be read.
pub fn read_in_root(root: &Path, path: &str) -> Option<String> {
    let dir_flags = OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC;
    let root_fd = nix::fcntl::open(root, dir_flags, Mode::empty()).ok()?;
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT);
    let fd = openat2(&root_fd, path, how).ok()?;
    let mut text = String::new();
    std::fs::File::from(fd).read_to_string(&mut text).ok()?;
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_from_lists() {
        let text = resolv_conf(Some("198.18.0.53 fd00::53"), Some("example.test"), "");
        assert_eq!(
            text,
            "search example.test\nnameserver 198.18.0.53\nnameserver fd00::53\n"
        );
    }

    #[test]
    fn resolv_conf_inherits_host_lines() {
        let host = "# comment\nsearch a.test b.test\nnameserver 198.18.1.1\noptions edns0\n";
        let text = resolv_conf(Some(INHERIT), Some(INHERIT), host);
        assert_eq!(text, "search a.test b.test\nnameserver 198.18.1.1\n");
    }

    #[test]
    fn dns_values_are_checked() {
        assert!(validate_nameservers(&["198.18.0.1".into(), "fd00::1".into()]).is_ok());
        assert!(validate_nameservers(&[INHERIT.into()]).is_ok());
        for bad in [
            vec!["dns.example".to_string()],
            vec![INHERIT.into(), "198.18.0.1".into()],
        ] {
            assert_eq!(validate_nameservers(&bad).unwrap_err().exit_code(), 72);
        }
        assert!(validate_search_domains(&["example.test".into()]).is_ok());
        for bad in ["bad domain", "-a.test", "a..test"] {
            let err = validate_search_domains(&[bad.to_string()]).unwrap_err();
            assert_eq!(err.exit_code(), 73, "{bad}");
        }
    }

    #[test]
    fn hosts_replaces_its_own_line() {
        let busybox = "127.0.0.1\tlocalhost\n::1\tlocalhost\n";
        let once = hosts(busybox, "ct.example.test", None, HostsStyle::Plain);
        assert_eq!(
            once,
            format!("{busybox}127.0.0.1\tct.example.test ct\t{HOSTS_MARKER}\n")
        );
        let addr = CtAddress::parse("198.18.0.2").unwrap();
        let twice = hosts(&once, "other", Some(&addr), HostsStyle::Plain);
        assert_eq!(
            twice,
            format!("{busybox}198.18.0.2\tother\t{HOSTS_MARKER}\n")
        );
    }

    #[test]
    fn debian_hosts_use_127_0_1_1() {
        let text = hosts("", "ct101", None, HostsStyle::Debian);
        assert_eq!(
            text,
            format!(
                "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
                 127.0.1.1\tct101\t{HOSTS_MARKER}\n"
            )
        );
    }
}
