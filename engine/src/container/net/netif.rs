//! Bridged veth interfaces: `--netif_add`, `--netif_del` and the NETIF
//! config value.
//!
//! NETIF uses vzctl's syntax: one `key=value,...` group per interface,
//! groups separated by `;`, with the keys `ifname`, `mac`, `host_ifname`,
//! `host_mac` and `bridge`. Other keys of vzctl (`mac_filter`, `gw`, ...)
//! are kept as they are and have no effect here.

use super::error::NetError;

/// The maximum length of a Linux interface name (IFNAMSIZ - 1).
pub const IFNAME_MAX: usize = 15;

/// The interface name the routed veth carries inside every container.
pub const VENET_IFNAME: &str = "venet0";

/// One bridged veth interface of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Netif {
    /// The interface name inside the container.
    pub ifname: String,
    /// The MAC address inside the container.
    pub mac: String,
    /// The host side's interface name.
    pub host_ifname: String,
    /// The host side's MAC address.
    pub host_mac: String,
    /// The host bridge the host side joins, if any.
    pub bridge: Option<String>,
    /// Keys of other vzctl versions, kept in order.
    pub extra: Vec<(String, String)>,
}

/// Parses a NETIF value. Entries that do not parse are skipped with a
/// warning, as vzctl skips invalid config values.
pub fn parse_config(value: &str) -> Vec<Netif> {
    let mut out: Vec<Netif> = Vec::new();
    for group in value.split(';').map(str::trim).filter(|g| !g.is_empty()) {
        match parse_group(group) {
            Ok(netif) if !out.iter().any(|n| n.ifname == netif.ifname) => out.push(netif),
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "skipping an invalid NETIF entry"),
        }
    }
    out
}

fn parse_group(group: &str) -> Result<Netif, NetError> {
    let bad = |reason: &str| NetError::BadNetif {
        value: group.to_string(),
        reason: reason.to_string(),
    };
    let mut netif = Netif {
        ifname: String::new(),
        mac: String::new(),
        host_ifname: String::new(),
        host_mac: String::new(),
        bridge: None,
        extra: Vec::new(),
    };
    for pair in group.split(',') {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| bad("use key=value pairs"))?;
        match key {
            "ifname" => netif.ifname = value.to_string(),
            "mac" => netif.mac = value.to_string(),
            "host_ifname" => netif.host_ifname = value.to_string(),
            "host_mac" => netif.host_mac = value.to_string(),
            "bridge" => netif.bridge = Some(value.to_string()).filter(|b| !b.is_empty()),
            _ => netif.extra.push((key.to_string(), value.to_string())),
        }
    }
    validate_ifname(&netif.ifname).map_err(|reason| bad(&reason))?;
    validate_ifname(&netif.host_ifname).map_err(|reason| bad(&reason))?;
    validate_mac(&netif.mac).map_err(|reason| bad(&reason))?;
    validate_mac(&netif.host_mac).map_err(|reason| bad(&reason))?;
    if let Some(bridge) = &netif.bridge {
        validate_ifname(bridge).map_err(|reason| bad(&reason))?;
    }
    Ok(netif)
}

/// Formats interfaces as a NETIF value.
pub fn format_config(list: &[Netif]) -> String {
    list.iter().map(format_group).collect::<Vec<_>>().join(";")
}

fn format_group(netif: &Netif) -> String {
    let mut pairs = vec![
        format!("ifname={}", netif.ifname),
        format!("mac={}", netif.mac),
        format!("host_ifname={}", netif.host_ifname),
        format!("host_mac={}", netif.host_mac),
    ];
    if let Some(bridge) = &netif.bridge {
        pairs.push(format!("bridge={bridge}"));
    }
    pairs.extend(netif.extra.iter().map(|(k, v)| format!("{k}={v}")));
    pairs.join(",")
}

/// Parses `--netif_add IFNAME[,MAC,HOST_IFNAME,HOST_MAC,BRIDGE]` and fills
/// the fields left empty: a host name `vethCTID.N` (`veCTID.N` where that
/// is too long) and random locally administered MACs. `existing` are the
/// container's interfaces so far.
pub fn parse_add(text: &str, ctid: u32, existing: &[Netif]) -> Result<Netif, NetError> {
    let bad = |reason: String| NetError::BadNetif {
        value: text.to_string(),
        reason,
    };
    let fields: Vec<&str> = text.split(',').collect();
    if fields.len() > 5 {
        return Err(bad("use IFNAME[,MAC,HOST_IFNAME,HOST_MAC,BRIDGE]".into()));
    }
    let field = |i: usize| fields.get(i).copied().filter(|f| !f.is_empty());

    let ifname = field(0).unwrap_or_default().to_string();
    validate_ifname(&ifname).map_err(bad)?;
    if ifname == VENET_IFNAME || ifname == "lo" {
        return Err(bad(format!(
            "{ifname} is reserved inside the container; pick another name"
        )));
    }
    if existing.iter().any(|n| n.ifname == ifname) {
        return Err(bad(format!(
            "the container has {ifname} already; remove it with --netif_del first"
        )));
    }

    let mac = match field(1) {
        Some(mac) => normalize_mac(mac).map_err(bad)?,
        None => random_mac(),
    };
    let host_ifname = match field(2) {
        Some(name) => name.to_string(),
        None => default_host_ifname(ctid, existing),
    };
    validate_ifname(&host_ifname).map_err(bad)?;
    if existing.iter().any(|n| n.host_ifname == host_ifname) {
        return Err(bad(format!("host interface {host_ifname} is used already")));
    }
    let host_mac = match field(3) {
        Some(mac) => normalize_mac(mac).map_err(bad)?,
        None => random_mac(),
    };
    let bridge = field(4).map(str::to_string);
    if let Some(bridge) = &bridge {
        validate_ifname(bridge).map_err(bad)?;
    }
    Ok(Netif {
        ifname,
        mac,
        host_ifname,
        host_mac,
        bridge,
        extra: Vec::new(),
    })
}

fn default_host_ifname(ctid: u32, existing: &[Netif]) -> String {
    let taken = |name: &str| existing.iter().any(|n| n.host_ifname == name);
    (0..)
        .map(|n| {
            let long = format!("veth{ctid}.{n}");
            if long.len() <= IFNAME_MAX {
                long
            } else {
                format!("ve{ctid}.{n}")
            }
        })
        .find(|name| !taken(name))
        .unwrap_or_default()
}

/// Checks an interface name: 1 to 15 bytes, no `/`, `:`, `=`, `,`, `;`,
/// whitespace, and not `.` or `..` (dev_valid_name() in the kernel plus
/// the NETIF separators).
pub fn validate_ifname(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= IFNAME_MAX
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_graphic() && !"/:=,;\"'".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "interface name {name:?} must be 1 to {IFNAME_MAX} characters without / : = , ; or spaces"
        ))
    }
}

fn validate_mac(mac: &str) -> Result<(), String> {
    normalize_mac(mac).map(|_| ())
}

/// Returns a MAC in lower case `xx:xx:xx:xx:xx:xx` form; rejects group
/// (multicast) addresses, which no interface may carry.
pub fn normalize_mac(mac: &str) -> Result<String, String> {
    let bytes: Vec<u8> = mac
        .split(':')
        .map(|part| {
            if part.len() == 2 {
                u8::from_str_radix(part, 16).ok()
            } else {
                None
            }
        })
        .collect::<Option<_>>()
        .filter(|b: &Vec<u8>| b.len() == 6)
        .ok_or_else(|| {
            format!("MAC address {mac:?} must be six hex pairs like 02:00:5e:00:53:01")
        })?;
    if bytes[0] & 1 != 0 {
        return Err(format!("MAC address {mac} is a multicast address"));
    }
    if bytes.iter().all(|&b| b == 0) {
        return Err("MAC address 00:00:00:00:00:00 is not usable".to_string());
    }
    Ok(format_mac(&bytes))
}

fn format_mac(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Returns a random unicast, locally administered MAC: the first octet
/// has its local bit (bit 1) set and its group bit (bit 0) clear.
pub fn random_mac() -> String {
    let random = uuid::Uuid::new_v4();
    let mut bytes = [0u8; 6];
    bytes.copy_from_slice(&random.as_bytes()[..6]);
    bytes[0] = (bytes[0] & 0xfc) | 0x02;
    format_mac(&bytes)
}

/// Applies `--netif_del` values (`all` removes every interface) and then
/// `--netif_add` values to `list`.
pub fn edit_list(
    list: &[Netif],
    ctid: u32,
    add: &[String],
    del: &[String],
) -> Result<Vec<Netif>, NetError> {
    let mut out = list.to_vec();
    for name in del {
        if name == "all" {
            out.clear();
            continue;
        }
        if !out.iter().any(|n| &n.ifname == name) {
            return Err(NetError::BadNetif {
                value: name.clone(),
                reason: "the container has no such interface".to_string(),
            });
        }
        out.retain(|n| &n.ifname != name);
    }
    for text in add {
        let netif = parse_add(text, ctid, &out)?;
        out.push(netif);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netif_round_trips() {
        let text = "ifname=eth0,mac=02:00:00:00:00:01,host_ifname=veth101.0,\
                    host_mac=02:00:00:00:00:02,bridge=br0;ifname=eth1,mac=02:00:00:00:00:03,\
                    host_ifname=veth101.1,host_mac=02:00:00:00:00:04,mac_filter=on";
        let list = parse_config(text);
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].bridge.as_deref(), Some("br0"));
        assert_eq!(list[1].bridge, None);
        assert_eq!(list[1].extra, vec![("mac_filter".into(), "on".into())]);
        assert_eq!(format_config(&list), text);
    }

    #[test]
    fn add_fills_missing_fields() {
        let first = parse_add("eth0", 101, &[]).unwrap();
        assert_eq!(first.host_ifname, "veth101.0");
        assert!(normalize_mac(&first.mac).is_ok());
        assert_ne!(first.mac, first.host_mac);
        let second = parse_add("eth1,,,,br0", 101, std::slice::from_ref(&first)).unwrap();
        assert_eq!(second.host_ifname, "veth101.1");
        assert_eq!(second.bridge.as_deref(), Some("br0"));

        let given = parse_add("eth2,02:AA:00:00:00:01,vh0,02:aa:00:00:00:02,br1", 7, &[]).unwrap();
        assert_eq!(given.mac, "02:aa:00:00:00:01");
        assert_eq!(given.host_ifname, "vh0");
        assert_eq!(given.host_mac, "02:aa:00:00:00:02");
    }

    #[test]
    fn long_ctid_gets_short_host_name() {
        let netif = parse_add("eth0", 2_147_483_644, &[]).unwrap();
        assert_eq!(netif.host_ifname, "ve2147483644.0");
        assert!(netif.host_ifname.len() <= IFNAME_MAX);
    }

    #[test]
    fn random_macs_are_local_unicast() {
        for _ in 0..32 {
            let mac = random_mac();
            let first = u8::from_str_radix(&mac[..2], 16).unwrap();
            assert_eq!(first & 0x03, 0x02, "{mac}");
        }
    }

    #[test]
    fn bad_netif_values_are_rejected() {
        let existing = [parse_add("eth0", 101, &[]).unwrap()];
        for bad in [
            "",
            "venet0",
            "eth0",
            "this-name-is-too-long",
            "eth1,zz:00:00:00:00:01",
            "eth1,01:00:00:00:00:01",
            "eth1,,bad/name",
            "eth1,,,,br0,extra",
        ] {
            let err = parse_add(bad, 101, &existing).unwrap_err();
            assert_eq!(err.exit_code(), 21, "{bad}");
        }
    }

    #[test]
    fn del_all_then_add() {
        let list = vec![parse_add("eth0", 5, &[]).unwrap()];
        let out = edit_list(&list, 5, &["eth1".into()], &["all".into()]).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].ifname, "eth1");
        assert!(edit_list(&list, 5, &[], &["eth9".into()]).is_err());
    }
}
