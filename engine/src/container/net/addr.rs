//! Container addresses: `--ipadd ADDR[/PREFIX]` values and the
//! space-separated IP_ADDRESS list.

use std::fmt;
use std::net::IpAddr;

use super::error::NetError;

/// One routed address of a container, with the prefix given at `--ipadd`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CtAddress {
    /// The address.
    pub ip: IpAddr,
    /// The prefix length, when one was given.
    pub prefix: Option<u8>,
}

impl CtAddress {
    /// Parses `ADDR` or `ADDR/PREFIX`; IPv4 prefixes are 1 to 32, IPv6
    /// prefixes 1 to 128. Unspecified, loopback, multicast and broadcast
    /// addresses are rejected because they cannot be a container's own.
    pub fn parse(text: &str) -> Result<Self, NetError> {
        let bad = |reason: &str| NetError::BadAddress {
            value: text.to_string(),
            reason: reason.to_string(),
        };
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let ip: IpAddr = addr
            .parse()
            .map_err(|_| bad("use an IPv4 or IPv6 address, optionally with /PREFIX"))?;
        if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() {
            return Err(bad("use a unicast address that is not a loopback address"));
        }
        if let IpAddr::V4(v4) = ip
            && v4.is_broadcast()
        {
            return Err(bad("use a unicast address, not the broadcast address"));
        }

        let max = if ip.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => None,
            Some(text) => {
                let reason = format!("the prefix must be a number from 1 to {max}");
                let value: u8 = text.parse().map_err(|_| bad(&reason))?;
                if value == 0 || value > max {
                    return Err(bad(&reason));
                }
                Some(value)
            }
        };
        Ok(CtAddress { ip, prefix })
    }

    /// Returns the prefix the container side carries: the given one for
    /// IPv4, else /32, and always /128 for IPv6. An on-link IPv6 prefix
    /// would make the container solicit neighbours that the host side does
    /// not reply for, so every IPv6 packet goes to the gateway instead.
    pub fn prefix_len(&self) -> u8 {
        match self.ip {
            IpAddr::V4(_) => self.prefix.unwrap_or(32),
            IpAddr::V6(_) => 128,
        }
    }

    /// Returns 32 for IPv4 and 128 for IPv6: the length of the host route.
    pub fn host_prefix(&self) -> u8 {
        if self.ip.is_ipv4() { 32 } else { 128 }
    }

    /// Returns `ADDR/PREFIX` as `ip addr` takes it inside the container.
    pub fn with_prefix(&self) -> String {
        format!("{}/{}", self.ip, self.prefix_len())
    }

    /// Returns `ADDR/32` or `ADDR/128` for the host route.
    pub fn host_route(&self) -> String {
        format!("{}/{}", self.ip, self.host_prefix())
    }
}

impl fmt::Display for CtAddress {
    /// Formats the address as IP_ADDRESS stores it: `ADDR` or `ADDR/PREFIX`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.prefix {
            Some(prefix) => write!(f, "{}/{prefix}", self.ip),
            None => write!(f, "{}", self.ip),
        }
    }
}

/// Parses an IP_ADDRESS value. Words that do not parse are skipped with a
/// warning, as vzctl skips invalid config values.
pub fn parse_list(value: &str) -> Vec<CtAddress> {
    let mut list: Vec<CtAddress> = Vec::new();
    for word in value.split_whitespace() {
        match CtAddress::parse(word) {
            Ok(addr) if !list.iter().any(|a| a.ip == addr.ip) => list.push(addr),
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "skipping an invalid IP_ADDRESS entry"),
        }
    }
    list
}

/// Formats addresses as an IP_ADDRESS value.
pub fn format_list(list: &[CtAddress]) -> String {
    list.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Applies `--ipadd` and `--ipdel` values to `list`: `all` in `ipdel`
/// removes every address first, then the additions follow. An added
/// address that is present already replaces its old prefix.
pub fn edit_list(
    list: &[CtAddress],
    ipadd: &[String],
    ipdel: &[String],
) -> Result<Vec<CtAddress>, NetError> {
    let mut out = list.to_vec();
    for text in ipdel {
        if text == "all" {
            out.clear();
            continue;
        }
        let addr = CtAddress::parse(text)?;
        if !out.iter().any(|a| a.ip == addr.ip) {
            tracing::warn!(address = %addr.ip, "--ipdel: the container does not have this address");
        }
        out.retain(|a| a.ip != addr.ip);
    }
    for text in ipadd {
        let addr = CtAddress::parse(text)?;
        match out.iter_mut().find(|a| a.ip == addr.ip) {
            Some(existing) => *existing = addr,
            None => out.push(addr),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_and_format() {
        for (text, shown, inside) in [
            ("198.18.0.2", "198.18.0.2", "198.18.0.2/32"),
            ("198.18.0.2/24", "198.18.0.2/24", "198.18.0.2/24"),
            ("fd00::2", "fd00::2", "fd00::2/128"),
            ("FD00:0::2/64", "fd00::2/64", "fd00::2/128"),
        ] {
            let addr = CtAddress::parse(text).unwrap();
            assert_eq!(addr.to_string(), shown);
            assert_eq!(addr.with_prefix(), inside);
        }
    }

    #[test]
    fn bad_addresses_are_71() {
        for bad in [
            "",
            "198.18.0",
            "198.18.0.256",
            "198.18.0.2/33",
            "198.18.0.2/0",
            "198.18.0.2/x",
            "fd00::2/129",
            "0.0.0.0",
            "127.0.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "host.example",
        ] {
            let err = CtAddress::parse(bad).unwrap_err();
            assert_eq!(err.exit_code(), 71, "{bad}");
        }
    }

    #[test]
    fn edit_adds_and_removes() {
        let list = parse_list("198.18.0.2 198.18.0.3");
        let out = edit_list(&list, &["fd00::2".into()], &["198.18.0.2".into()]).unwrap();
        assert_eq!(format_list(&out), "198.18.0.3 fd00::2");

        let out = edit_list(&list, &["198.18.0.9".into()], &["all".into()]).unwrap();
        assert_eq!(format_list(&out), "198.18.0.9");

        let out = edit_list(&list, &["198.18.0.3/24".into()], &[]).unwrap();
        assert_eq!(format_list(&out), "198.18.0.2 198.18.0.3/24");
    }

    #[test]
    fn config_list_skips_bad_words() {
        let list = parse_list("198.18.0.2 junk 198.18.0.2 fd00::5/64");
        assert_eq!(format_list(&list), "198.18.0.2 fd00::5/64");
    }
}
