//! The veth pairs of a running container.
//!
//! Routed mode works like vzctl's venet on an upstream kernel: one veth
//! pair per container, `venetCTID` on the host and `venet0` inside. The
//! container side carries the addresses and a default route through the
//! host side. The host side carries a /32 or /128 route to each address,
//! replies to ARP requests for the rest of the network (proxy_arp) and
//! forwards what the container sends. IPv6 uses `fe80::1` on the host side
//! as the next hop. On the uplinks the host's NEIGHBOUR_DEVS names, each
//! address also gets a proxy neighbour entry, so the host replies to ARP
//! and NDP requests for it there. Bridged mode adds one veth pair per NETIF entry and puts the host
//! side into the named bridge; the container configures its addresses.

use std::net::IpAddr;

use super::addr::CtAddress;
use super::error::NetError;
use super::netif::{Netif, VENET_IFNAME};
use super::sys::{NetSys, Netns};

/// The IPv6 next hop of routed containers: a link-local address that the
/// host side of every venet pair carries.
pub const V6_GATEWAY: &str = "fe80::1";

/// Returns the host side's name of the routed pair: `venetCTID`, at most
/// 15 bytes for every CTID up to 2147483644.
pub fn venet_host_name(ctid: u32) -> String {
    format!("venet{ctid}")
}

/// The routed pair of one running container.
#[derive(Debug, Clone, Copy)]
pub struct Venet<'a> {
    /// The container ID, which names the host side.
    pub ctid: u32,
    /// The host PID of the container's init.
    pub pid: i32,
    /// Host uplinks that reply to ARP and NDP requests for the container's
    /// addresses.
    pub neighbour_devs: &'a [String],
}

/// Returns whether the host has a link named `name`.
pub fn link_exists(sys: &dyn NetSys, name: &str) -> Result<bool, NetError> {
    Ok(sys.ip(Netns::Host, &["link", "show", "dev", name])?.status == 0)
}

/// Returns whether the host link `name` is one end of a veth pair.
pub fn is_veth(sys: &dyn NetSys, name: &str) -> Result<bool, NetError> {
    let output = sys.ip(Netns::Host, &["-d", "-o", "link", "show", "dev", name])?;
    // The details name the link kind as a word of its own: `... veth addrgenmode ...`.
    Ok(output.status == 0 && output.stdout.split_whitespace().any(|w| w == "veth"))
}

/// Deletes the host veth `name`, left from an earlier run or removed from
/// the config. A missing link is not an error, and a link of another kind
/// (a real NIC that a host_ifname happens to name) is never deleted.
pub fn remove_veth(sys: &dyn NetSys, name: &str) -> Result<(), NetError> {
    if !link_exists(sys, name)? {
        return Ok(());
    }
    if !is_veth(sys, name)? {
        return Err(NetError::HostLinkTaken {
            name: name.to_string(),
        });
    }
    remove_link(sys, name)
}

/// Deletes the host link `name` and so its veth peer; a missing link is
/// not an error.
pub fn remove_link(sys: &dyn NetSys, name: &str) -> Result<(), NetError> {
    if !link_exists(sys, name)? {
        return Ok(());
    }
    let output = sys.ip(Netns::Host, &["link", "del", "dev", name])?;
    // The kernel may have deleted it meanwhile, with the container's namespace.
    if output.status == 0 || !link_exists(sys, name)? {
        Ok(())
    } else {
        sys.ip_ok(Netns::Host, &["link", "del", "dev", name])
            .map(|_| ())
    }
}

/// Returns the bridges of the host.
pub fn bridges(sys: &dyn NetSys) -> Result<Vec<String>, NetError> {
    let text = sys.ip_ok(Netns::Host, &["-o", "link", "show", "type", "bridge"])?;
    // Lines read `5: br0: <BROADCAST,...> mtu ...`.
    Ok(text
        .lines()
        .filter_map(|line| line.split(": ").nth(1))
        .map(|name| name.split('@').next().unwrap_or(name).to_string())
        .collect())
}

/// Fails with [`NetError::BridgeNotFound`] unless `bridge` is a bridge on
/// the host.
pub fn require_bridge(sys: &dyn NetSys, bridge: &str) -> Result<(), NetError> {
    if bridges(sys)?.iter().any(|b| b == bridge) {
        Ok(())
    } else {
        Err(NetError::BridgeNotFound {
            bridge: bridge.to_string(),
        })
    }
}

/// Makes the container's routed addresses `new` (previously `old`): creates
/// the pair with the first address, changes only what differs, and
/// removes the pair with the last address.
pub fn apply_routed(
    sys: &dyn NetSys,
    venet: &Venet<'_>,
    old: &[CtAddress],
    new: &[CtAddress],
) -> Result<(), NetError> {
    let host = venet_host_name(venet.ctid);
    if new.is_empty() {
        return remove_venet(sys, venet.ctid, venet.neighbour_devs, &[]);
    }
    let old = if link_exists(sys, &host)? {
        old
    } else {
        create_venet(sys, &host, venet.pid)?;
        &[]
    };

    for addr in old.iter().filter(|a| !new.contains(a)) {
        del_address(sys, venet, addr)?;
    }
    for addr in new.iter().filter(|a| !old.contains(a)) {
        add_address(sys, venet, addr)?;
    }
    Ok(())
}

/// Deletes the routed pair, and the proxy neighbour entries of every
/// address routed through it and of `also_proxied`.
fn remove_venet(
    sys: &dyn NetSys,
    ctid: u32,
    neighbour_devs: &[String],
    also_proxied: &[IpAddr],
) -> Result<(), NetError> {
    if !neighbour_devs.is_empty() {
        let mut ips = routed_ips(sys, ctid)?;
        ips.extend(
            also_proxied
                .iter()
                .filter(|ip| !ips.contains(ip))
                .collect::<Vec<_>>(),
        );
        for ip in ips {
            let ip = ip.to_string();
            for dev in neighbour_devs {
                let _ = sys.ip(Netns::Host, &["neigh", "del", "proxy", &ip, "dev", dev])?;
            }
        }
    }
    remove_veth(sys, &venet_host_name(ctid))
}

/// Returns the addresses that host routes send through the container's
/// routed pair, without the link-local ones; none when the pair is gone.
pub fn routed_ips(sys: &dyn NetSys, ctid: u32) -> Result<Vec<IpAddr>, NetError> {
    let host = venet_host_name(ctid);
    if !link_exists(sys, &host)? {
        return Ok(Vec::new());
    }
    let mut ips = Vec::new();
    for family in ["-4", "-6"] {
        let text = sys.ip_ok(Netns::Host, &[family, "route", "show", "dev", &host])?;
        // Lines read `198.18.0.2 scope link` or `fd00::2 metric 1024 ...`.
        let found = text
            .lines()
            .filter_map(|line| line.split_whitespace().next())
            .filter_map(|dest| dest.split('/').next()?.parse::<IpAddr>().ok())
            .filter(|ip| !matches!(ip, IpAddr::V6(v6) if v6.is_unicast_link_local()));
        ips.extend(found);
    }
    Ok(ips)
}

fn create_venet(sys: &dyn NetSys, host: &str, pid: i32) -> Result<(), NetError> {
    let pid_text = pid.to_string();
    sys.ip_ok(
        Netns::Host,
        &[
            "link",
            "add",
            host,
            "type",
            "veth",
            "peer",
            "name",
            VENET_IFNAME,
            "netns",
            &pid_text,
        ],
    )?;
    // proxy_arp replies to the container's ARP requests for every address
    // the host routes elsewhere, and it only works on an interface that
    // forwards (arp_process() in net/ipv4/arp.c).
    sys.sysctl(&format!("net/ipv4/conf/{host}/proxy_arp"), "1")?;
    sys.sysctl(&format!("net/ipv4/conf/{host}/forwarding"), "1")?;
    // Proxy ARP replies wait a random time up to proxy_delay, 80 hundredths
    // of a second by default, which would stall the first packet to a peer.
    sys.sysctl(&format!("net/ipv4/neigh/{host}/proxy_delay"), "0")?;
    sys.ip_ok(Netns::Host, &["link", "set", "dev", host, "up"])?;

    let inside = Netns::Of(pid);
    sys.ip_ok(inside, &["link", "set", "dev", "lo", "up"])?;
    sys.ip_ok(inside, &["link", "set", "dev", VENET_IFNAME, "up"])?;
    Ok(())
}

fn add_address(sys: &dyn NetSys, venet: &Venet<'_>, addr: &CtAddress) -> Result<(), NetError> {
    let host = &venet_host_name(venet.ctid);
    let inside = Netns::Of(venet.pid);
    let local = addr.with_prefix();
    let route = addr.host_route();
    if addr.ip.is_ipv4() {
        sys.ip_ok(inside, &["addr", "replace", &local, "dev", VENET_IFNAME])?;
        sys.ip_ok(
            inside,
            &["route", "replace", "default", "dev", VENET_IFNAME],
        )?;
    } else {
        // No duplicate address detection: the host routes the address to
        // this pair only, and DAD would keep it unusable for a second.
        let gateway = format!("{V6_GATEWAY}/64");
        sys.ip_ok(
            Netns::Host,
            &["-6", "addr", "replace", &gateway, "dev", host, "nodad"],
        )?;
        sys.ip_ok(
            inside,
            &[
                "-6",
                "addr",
                "replace",
                &local,
                "dev",
                VENET_IFNAME,
                "nodad",
            ],
        )?;
        sys.ip_ok(
            inside,
            &[
                "-6",
                "route",
                "replace",
                "default",
                "via",
                V6_GATEWAY,
                "dev",
                VENET_IFNAME,
            ],
        )?;
    }
    sys.ip_ok(Netns::Host, &["route", "replace", &route, "dev", host])?;
    let ip = addr.ip.to_string();
    for dev in venet.neighbour_devs {
        sys.ip_ok(Netns::Host, &["neigh", "replace", "proxy", &ip, "dev", dev])?;
    }
    Ok(())
}

fn del_address(sys: &dyn NetSys, venet: &Venet<'_>, addr: &CtAddress) -> Result<(), NetError> {
    let host = &venet_host_name(venet.ctid);
    let local = addr.with_prefix();
    let route = addr.host_route();
    let ip = addr.ip.to_string();
    // Each may be gone already, with a half-finished earlier change.
    let inside = Netns::Of(venet.pid);
    let _ = sys.ip(inside, &["addr", "del", &local, "dev", VENET_IFNAME])?;
    let _ = sys.ip(Netns::Host, &["route", "del", &route, "dev", host])?;
    for dev in venet.neighbour_devs {
        let _ = sys.ip(Netns::Host, &["neigh", "del", "proxy", &ip, "dev", dev])?;
    }
    Ok(())
}

/// Makes the container's bridged interfaces `new` (previously `old`).
/// Every bridge of `new` must exist before anything changes.
pub fn apply_netifs(
    sys: &dyn NetSys,
    pid: i32,
    old: &[Netif],
    new: &[Netif],
) -> Result<(), NetError> {
    let added: Vec<&Netif> = new.iter().filter(|n| !old.contains(n)).collect();
    for bridge in added.iter().filter_map(|n| n.bridge.as_deref()) {
        require_bridge(sys, bridge)?;
    }
    for netif in old.iter().filter(|n| !new.contains(n)) {
        remove_veth(sys, &netif.host_ifname)?;
    }
    for netif in added {
        add_netif(sys, pid, netif)?;
    }
    Ok(())
}

fn add_netif(sys: &dyn NetSys, pid: i32, netif: &Netif) -> Result<(), NetError> {
    remove_veth(sys, &netif.host_ifname)?;
    let pid_text = pid.to_string();
    sys.ip_ok(
        Netns::Host,
        &[
            "link",
            "add",
            &netif.host_ifname,
            "address",
            &netif.host_mac,
            "type",
            "veth",
            "peer",
            "name",
            &netif.ifname,
            "address",
            &netif.mac,
            "netns",
            &pid_text,
        ],
    )?;
    if let Some(bridge) = &netif.bridge {
        sys.ip_ok(
            Netns::Host,
            &["link", "set", "dev", &netif.host_ifname, "master", bridge],
        )?;
    }
    sys.ip_ok(
        Netns::Host,
        &["link", "set", "dev", &netif.host_ifname, "up"],
    )?;
    sys.ip_ok(Netns::Of(pid), &["link", "set", "dev", "lo", "up"])?;
    sys.ip_ok(Netns::Of(pid), &["link", "set", "dev", &netif.ifname, "up"])?;
    Ok(())
}

/// Removes every host link of the container, the venet pair and each
/// NETIF pair, and on `neighbour_devs` the proxy neighbour entries of the
/// routed addresses and of `proxied`. The routes go with the links.
pub fn teardown(
    sys: &dyn NetSys,
    ctid: u32,
    neighbour_devs: &[String],
    proxied: &[IpAddr],
    netifs: &[Netif],
) -> Result<(), NetError> {
    let mut first_error = remove_venet(sys, ctid, neighbour_devs, proxied).err();
    for netif in netifs {
        if let Err(err) = remove_veth(sys, &netif.host_ifname) {
            first_error.get_or_insert(err);
        }
    }
    first_error.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::net::addr::parse_list;
    use crate::container::net::netif::parse_add;
    use crate::container::net::sys::RecordingNet;

    const VENET: Venet<'static> = Venet {
        ctid: 101,
        pid: 42,
        neighbour_devs: &[],
    };

    #[test]
    fn neighbour_devs_get_proxy_entries() {
        let sys = RecordingNet::default();
        let uplinks = ["eth0".to_string()];
        let venet = Venet {
            neighbour_devs: &uplinks,
            ..VENET
        };
        let old = parse_list("198.18.0.2 fd00::2");
        apply_routed(&sys, &venet, &[], &old).unwrap();
        let log = sys.take();
        assert!(log.contains(&"host: ip neigh replace proxy 198.18.0.2 dev eth0".to_string()));
        assert!(log.contains(&"host: ip neigh replace proxy fd00::2 dev eth0".to_string()));

        apply_routed(&sys, &venet, &old, &parse_list("fd00::2")).unwrap();
        let log = sys.take();
        assert!(log.contains(&"host: ip neigh del proxy 198.18.0.2 dev eth0".to_string()));
    }

    #[test]
    fn first_address_creates_the_pair() {
        let sys = RecordingNet::default();
        let new = parse_list("198.18.0.2 fd00::2");
        apply_routed(&sys, &VENET, &[], &new).unwrap();
        let log = sys.take();
        let expected = [
            "host: ip link show dev venet101",
            "host: ip link add venet101 type veth peer name venet0 netns 42",
            "sysctl net/ipv4/conf/venet101/proxy_arp=1",
            "sysctl net/ipv4/conf/venet101/forwarding=1",
            "sysctl net/ipv4/neigh/venet101/proxy_delay=0",
            "host: ip link set dev venet101 up",
            "42: ip link set dev lo up",
            "42: ip link set dev venet0 up",
            "42: ip addr replace 198.18.0.2/32 dev venet0",
            "42: ip route replace default dev venet0",
            "host: ip route replace 198.18.0.2/32 dev venet101",
            "host: ip -6 addr replace fe80::1/64 dev venet101 nodad",
            "42: ip -6 addr replace fd00::2/128 dev venet0 nodad",
            "42: ip -6 route replace default via fe80::1 dev venet0",
            "host: ip route replace fd00::2/128 dev venet101",
        ];
        assert_eq!(log, expected);
    }

    #[test]
    fn ipdel_changes_only_that_address() {
        let sys = RecordingNet::default();
        let old = parse_list("198.18.0.2 198.18.0.3");
        apply_routed(&sys, &VENET, &[], &old).unwrap();
        sys.take();

        let new = parse_list("198.18.0.3");
        apply_routed(&sys, &VENET, &old, &new).unwrap();
        assert_eq!(
            sys.take(),
            [
                "host: ip link show dev venet101",
                "42: ip addr del 198.18.0.2/32 dev venet0",
                "host: ip route del 198.18.0.2/32 dev venet101",
            ]
        );

        apply_routed(&sys, &VENET, &new, &[]).unwrap();
        assert_eq!(
            sys.take(),
            [
                "host: ip link show dev venet101",
                "host: ip -d -o link show dev venet101",
                "host: ip link show dev venet101",
                "host: ip link del dev venet101",
            ]
        );
    }

    #[test]
    fn netif_joins_its_bridge() {
        let sys = RecordingNet::default();
        sys.links.lock().unwrap().push(("br0".into(), true));
        let netif = parse_add(
            "eth0,02:00:00:00:00:01,veth7.0,02:00:00:00:00:02,br0",
            7,
            &[],
        )
        .unwrap();
        apply_netifs(&sys, 9, &[], &[netif]).unwrap();
        let log = sys.take();
        assert!(
            log.contains(
                &"host: ip link add veth7.0 address 02:00:00:00:00:02 type veth peer name eth0 \
              address 02:00:00:00:00:01 netns 9"
                    .to_string()
            )
        );
        assert!(log.contains(&"host: ip link set dev veth7.0 master br0".to_string()));
        assert!(log.contains(&"9: ip link set dev eth0 up".to_string()));
    }

    #[test]
    fn host_nic_is_never_deleted() {
        let sys = RecordingNet::default();
        sys.links.lock().unwrap().push(("eth0".into(), true));
        let netif = parse_add("eth1,,eth0", 7, &[]).unwrap();
        let err = apply_netifs(&sys, 9, &[], std::slice::from_ref(&netif)).unwrap_err();
        assert_eq!(err.exit_code(), 130);
        teardown(&sys, 7, &[], &[], &[netif]).unwrap_err();
        let log = sys.take();
        assert!(!log.iter().any(|l| l.contains("link del")), "{log:?}");
    }

    #[test]
    fn missing_bridge_changes_nothing() {
        let sys = RecordingNet::default();
        let netif = parse_add("eth0,,,,br9", 7, &[]).unwrap();
        let err = apply_netifs(&sys, 9, &[], &[netif]).unwrap_err();
        assert_eq!(err.exit_code(), 130);
        assert_eq!(sys.take(), ["host: ip -o link show type bridge"]);
    }
}
