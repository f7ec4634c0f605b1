//! Container networking through `lamctl`, each test inside a network
//! namespace of its own that stands for the host: routed addresses
//! that reply to ping, a live --ipdel, two containers on one bridge, restarts
//! that keep addresses and MACs, nothing left after stop, and the bad
//! inputs with vzctl's exit codes. Runs as root.

#[path = "lamctl_net_common.rs"]
mod net_common;

use net_common::{HOST_V4, NetHome};

/// Returns the MAC of `ifname` inside the container.
fn mac_inside(home: &NetHome, ctid: &str, ifname: &str) -> String {
    let text = home.ok(&["exec", ctid, "ip", "link", "show", "dev", ifname]);
    let words: Vec<&str> = text.split_whitespace().collect();
    let at = words
        .iter()
        .position(|w| *w == "link/ether")
        .unwrap_or_else(|| panic!("no MAC in: {text}"));
    words[at + 1].to_string()
}

/// Returns the field `key` of the first NETIF entry.
fn netif_field(home: &NetHome, ctid: &str, key: &str) -> String {
    let netif = home.conf_value(ctid, "NETIF").expect("NETIF saved");
    let prefix = format!("{key}=");
    netif
        .split(';')
        .next()
        .unwrap()
        .split(',')
        .find_map(|pair| pair.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {key} in NETIF {netif}"))
        .to_string()
}

#[test]
fn routed_addresses_answer_ping() {
    let home = NetHome::new();
    home.create("111", &["--ipadd", "198.18.0.2", "--hostname", "ct101"]);
    home.ok(&[
        "set",
        "111",
        "--ipadd",
        "198.18.0.3",
        "--ipadd",
        "fd00::2",
        "--nameserver",
        "198.18.0.53",
        "--searchdomain",
        "example.test",
        "--save",
    ]);
    assert_eq!(
        home.conf_value("111", "IP_ADDRESS").as_deref(),
        Some("198.18.0.2 198.18.0.3 fd00::2")
    );

    home.ok(&["start", "111"]);
    assert!(home.net.ping("198.18.0.2"), "no reply from 198.18.0.2");
    assert!(home.net.ping("198.18.0.3"), "no reply from 198.18.0.3");
    assert!(home.net.ping("fd00::2"), "no reply from fd00::2");
    assert!(home.net.links().contains(&"venet111".to_string()));
    let routes = home.net.routes();
    assert!(routes.contains("198.18.0.2 dev venet111"), "{routes}");
    assert!(routes.contains("fd00::2 dev venet111"), "{routes}");

    // The container reaches the host's own address through venet0.
    home.ok(&["exec", "111", "ping", "-c", "1", "-W", "1", HOST_V4]);

    let resolv = home.ok(&["exec", "111", "cat", "/etc/resolv.conf"]);
    assert_eq!(resolv, "search example.test\nnameserver 198.18.0.53\n");
    let hosts = home.ok(&["exec", "111", "cat", "/etc/hosts"]);
    assert!(hosts.contains("198.18.0.2\tct101"), "{hosts}");
    assert!(hosts.contains("127.0.0.1\tlocalhost"), "{hosts}");

    let listed = home.ok(&["list", "-H", "-o", "ip"]);
    assert_eq!(listed.trim(), "198.18.0.2 198.18.0.3 fd00::2");
    let table = home.ok(&["list"]);
    assert!(table.contains("IP_ADDR"), "{table}");
    assert!(table.contains("198.18.0.2"), "{table}");

    // A live --ipdel takes one address away and leaves the others.
    home.ok(&["set", "111", "--ipdel", "198.18.0.2", "--save"]);
    assert!(!home.net.ping("198.18.0.2"), "198.18.0.2 still answers");
    assert!(home.net.ping("198.18.0.3"), "198.18.0.3 stopped answering");
    let routes = home.net.routes();
    assert!(!routes.contains("198.18.0.2 "), "{routes}");
    let inside = home.ok(&["exec", "111", "ip", "addr", "show", "dev", "venet0"]);
    assert!(!inside.contains("198.18.0.2/"), "{inside}");
    assert!(inside.contains("198.18.0.3/32"), "{inside}");

    // A live --ipadd without --save.
    home.ok(&["set", "111", "--ipadd", "198.18.0.4"]);
    assert!(home.net.ping("198.18.0.4"), "no reply from 198.18.0.4");

    // A live --hostname rewrites the hosts line with the first address.
    home.ok(&["set", "111", "--hostname", "web.example.test"]);
    let hosts = home.ok(&["exec", "111", "cat", "/etc/hosts"]);
    assert!(
        hosts.contains("198.18.0.3\tweb.example.test web\t# lamctl hostname"),
        "{hosts}"
    );
    assert!(!hosts.contains("ct101"), "{hosts}");

    home.ok(&["stop", "111"]);
    assert_eq!(home.net.links(), ["lo"]);
    let routes = home.net.routes();
    assert!(!routes.contains("venet"), "{routes}");
    assert!(!routes.contains("198.18.0."), "{routes}");
    home.home.assert_clean();
}

#[test]
fn bridged_containers_reach_each_other() {
    let home = NetHome::new();
    home.net.ip(&["link", "add", "br0", "type", "bridge"]);
    home.net.ip(&["link", "set", "dev", "br0", "up"]);
    home.create(
        "121",
        &["--netif_add", "eth0,,,,br0", "--ipadd", "198.18.0.11"],
    );
    home.create("122", &["--netif_add", "eth0,,,,br0"]);
    let mac = netif_field(&home, "121", "mac");
    let host_mac = netif_field(&home, "121", "host_mac");
    assert_eq!(netif_field(&home, "121", "host_ifname"), "veth121.0");

    home.ok(&["start", "121"]);
    home.ok(&["start", "122"]);
    assert_eq!(mac_inside(&home, "121", "eth0"), mac);
    let host_side = home.net.ip(&["link", "show", "dev", "veth121.0"]);
    assert!(host_side.contains("master br0"), "{host_side}");
    assert!(host_side.contains(&host_mac), "{host_side}");

    for (ctid, address) in [("121", "198.18.1.1/24"), ("122", "198.18.1.2/24")] {
        home.ok(&["exec", ctid, "ip", "addr", "add", address, "dev", "eth0"]);
    }
    home.ok(&["exec", "121", "ping", "-c", "1", "-W", "1", "198.18.1.2"]);
    home.ok(&["exec", "122", "ping", "-c", "1", "-W", "1", "198.18.1.1"]);

    // A restart keeps the MACs and the routed address.
    home.ok(&["restart", "121"]);
    assert_eq!(mac_inside(&home, "121", "eth0"), mac);
    let host_side = home.net.ip(&["link", "show", "dev", "veth121.0"]);
    assert!(host_side.contains(&host_mac), "{host_side}");
    assert!(home.net.ping("198.18.0.11"), "no reply after restart");

    home.ok(&["stop", "121"]);
    home.ok(&["stop", "122"]);
    assert_eq!(home.net.links(), ["lo", "br0"]);
    assert_eq!(netif_field(&home, "121", "mac"), mac);
    home.home.assert_clean();
}

#[test]
fn netif_add_and_del_apply_live() {
    let home = NetHome::new();
    home.net.ip(&["link", "add", "br0", "type", "bridge"]);
    home.create("131", &[]);
    home.ok(&["start", "131"]);

    home.ok(&["set", "131", "--netif_add", "eth1,,,,br0", "--save"]);
    let mac = netif_field(&home, "131", "mac");
    assert_eq!(mac_inside(&home, "131", "eth1"), mac);
    assert!(home.net.links().contains(&"veth131.0".to_string()));

    home.ok(&["set", "131", "--netif_del", "eth1", "--save"]);
    assert!(!home.net.links().contains(&"veth131.0".to_string()));
    assert_eq!(home.conf_value("131", "NETIF").as_deref(), Some(""));
    let (code, _) = home.fails(&["exec", "131", "ip", "link", "show", "dev", "eth1"]);
    assert_eq!(code, 8, "eth1 is still inside");

    home.ok(&["stop", "131"]);
    assert_eq!(home.net.links(), ["lo", "br0"]);
}

#[test]
fn bad_network_input_changes_nothing() {
    let home = NetHome::new();
    home.create("141", &["--ipadd", "198.18.0.2"]);
    home.create("142", &[]);
    let before = home.conf("142");

    for (args, code) in [
        (&["--ipadd", "198.18.0.2"][..], 78),
        (&["--ipadd", "198.18.0.300"], 71),
        (&["--ipadd", "198.18.0.5/33"], 71),
        (&["--ipadd", "fd00::5/129"], 71),
        (&["--ipadd", "not-an-address"], 71),
        (&["--ipdel", "198.18.0"], 71),
        (&["--netif_add", "eth0,,,,nobridge"], 130),
        (&["--netif_add", "eth0,zz:zz"], 21),
        (&["--netif_add", "eth0,,lo"], 130),
        (&["--netif_del", "eth7"], 21),
        (&["--nameserver", "dns.example"], 72),
        (&["--searchdomain", "bad domain"], 73),
    ] {
        let mut full = vec!["set", "142"];
        full.extend_from_slice(args);
        full.push("--save");
        let (actual, stderr) = home.fails(&full);
        assert_eq!(actual, code, "lamctl {full:?}: {stderr}");
        assert_eq!(
            home.conf("142"),
            before,
            "lamctl {full:?} changed the config"
        );
    }

    // A create with a used address leaves no container behind.
    let (code, stderr) = home.fails(&[
        "create",
        "143",
        "--ostemplate",
        "busybox",
        "--diskspace",
        "256M",
        "--ipadd",
        "198.18.0.2",
    ]);
    assert_eq!(code, 78, "{stderr}");
    assert!(!home.home.path().join("conf/143.conf").exists());
    assert!(!home.home.path().join("private/143").exists());
}

#[test]
fn routed_containers_reach_each_other() {
    let home = NetHome::new();
    home.create("151", &["--ipadd", "198.18.0.21"]);
    home.create("152", &["--ipadd", "198.18.0.22"]);
    home.ok(&["start", "151"]);
    home.ok(&["start", "152"]);

    // Through the host: proxy ARP on venet151, forwarding to venet152.
    home.ok(&["exec", "151", "ping", "-c", "1", "-W", "1", "198.18.0.22"]);
    home.ok(&["exec", "152", "ping", "-c", "1", "-W", "1", "198.18.0.21"]);
    let forward = home
        .net
        .command("cat")
        .arg("/proc/sys/net/ipv4/ip_forward")
        .output()
        .expect("read ip_forward");
    assert_eq!(String::from_utf8_lossy(&forward.stdout).trim(), "0");

    home.ok(&["stop", "151"]);
    home.ok(&["stop", "152"]);
    assert_eq!(home.net.links(), ["lo"]);
    home.home.assert_clean();
}

#[test]
fn start_without_bridge_fails_clean() {
    let home = NetHome::new();
    home.net.ip(&["link", "add", "br0", "type", "bridge"]);
    home.create(
        "161",
        &["--netif_add", "eth0,,,,br0", "--ipadd", "198.18.0.31"],
    );
    home.net.ip(&["link", "del", "dev", "br0"]);

    let (code, stderr) = home.fails(&["start", "161"]);
    assert_eq!(code, 130, "{stderr}");
    assert_eq!(
        home.ok(&["status", "161"]),
        "CTID 161 exist unmounted down\n"
    );
    assert_eq!(home.net.links(), ["lo"]);
    let routes = home.net.routes();
    assert!(!routes.contains("198.18.0.31"), "{routes}");
    home.home.assert_clean();
}

#[test]
fn stop_clears_uplink_proxy_entries() {
    let home = NetHome::new();
    home.net.ip(&["link", "add", "up0", "type", "bridge"]);
    std::fs::write(
        home.home.path().join("lamina.conf"),
        "NEIGHBOUR_DEVS=\"list:up0\"\n",
    )
    .unwrap();
    home.create("171", &["--ipadd", "198.18.0.41"]);
    home.ok(&["start", "171"]);
    // Live only, not saved: stop must still find it.
    home.ok(&["set", "171", "--ipadd", "198.18.0.42"]);
    let proxies = home.net.ip(&["neigh", "show", "proxy"]);
    assert!(proxies.contains("198.18.0.41 dev up0"), "{proxies}");
    assert!(proxies.contains("198.18.0.42 dev up0"), "{proxies}");

    home.ok(&["stop", "171"]);
    let proxies = home.net.ip(&["neigh", "show", "proxy"]);
    assert!(!proxies.contains("198.18.0.4"), "{proxies}");
    assert_eq!(home.net.links(), ["lo", "up0"]);
    home.home.assert_clean();
}
