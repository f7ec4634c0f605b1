//! The networking module on its own, without lamctl or the runtime: a
//! `sleep` in a new network namespace stands for a container's init, and
//! another one for the host. A thread joins the host namespace with
//! setns(2), so every `ip` command the module runs from it stays inside
//! the test's namespaces. Runs as root.

use std::fs::File;
use std::process::{Child, Command, Stdio};

use lamina_engine::container::net::addr::parse_list;
use lamina_engine::container::net::link;
use lamina_engine::container::net::netif::parse_add;
use lamina_engine::container::net::sys::LinuxNet;
use lamina_engine::container::net::{NetConfig, setup_with};
use nix::sched::{CloneFlags, setns};

/// A process in a network namespace of its own, killed on drop.
struct Namespace {
    holder: Child,
}

impl Namespace {
    fn new() -> Namespace {
        let holder = Command::new("unshare")
            .args(["--net", "sleep", "600"])
            .stdin(Stdio::null())
            .spawn()
            .expect("run unshare --net");
        let ns = Namespace { holder };
        let own = std::fs::read_link("/proc/self/ns/net").unwrap();
        for _ in 0..500 {
            let exe = std::fs::read_link(format!("/proc/{}/exe", ns.pid()));
            let net = std::fs::read_link(ns.path());
            if let (Ok(exe), Ok(net)) = (exe, net)
                && exe.to_string_lossy().contains("sleep")
                && net != own
            {
                return ns;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("unshare --net did not start its own network namespace");
    }

    fn pid(&self) -> i32 {
        i32::try_from(self.holder.id()).unwrap()
    }

    fn path(&self) -> String {
        format!("/proc/{}/ns/net", self.pid())
    }

    /// Runs `PROGRAM ARGS` inside and returns whether it exited 0.
    fn run(&self, program: &str, args: &[&str]) -> (bool, String) {
        let output = Command::new("nsenter")
            .arg(format!("--net={}", self.path()))
            .arg(program)
            .args(args)
            .output()
            .expect("run nsenter");
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        (output.status.success(), text)
    }

    fn ip(&self, args: &[&str]) -> String {
        let (ok, text) = self.run("ip", args);
        assert!(ok, "ip {args:?} failed");
        text
    }

    fn ping(&self, address: &str) -> bool {
        self.run("ping", &["-c", "1", "-W", "1", address]).0
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// Runs `work` on a thread that joined `host`'s network namespace.
fn in_host<T: Send>(host: &Namespace, work: impl FnOnce() -> T + Send) -> T {
    let file = File::open(host.path()).expect("open the host namespace");
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                setns(&file, CloneFlags::CLONE_NEWNET).expect("setns into the test namespace");
                let joined = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
                assert_eq!(joined, std::fs::read_link(host.path()).unwrap());
                work()
            })
            .join()
            .expect("thread in the host namespace")
    })
}

#[test]
fn routed_pair_lifecycle() {
    let host = Namespace::new();
    let container = Namespace::new();
    host.ip(&["link", "set", "dev", "lo", "up"]);
    host.ip(&["addr", "add", "198.18.255.1/32", "dev", "lo"]);
    let pid = container.pid();

    let net = NetConfig {
        addresses: parse_list("198.18.0.2 198.18.0.3/24"),
        netifs: Vec::new(),
        neighbour_devs: Vec::new(),
    };
    in_host(&host, || setup_with(&LinuxNet, 7, pid, &net)).unwrap();
    assert!(host.ping("198.18.0.2"), "no reply from 198.18.0.2");
    assert!(host.ping("198.18.0.3"), "no reply from 198.18.0.3");
    let (_, proxy_arp) = host.run("cat", &["/proc/sys/net/ipv4/conf/venet7/proxy_arp"]);
    assert_eq!(proxy_arp.trim(), "1");
    let inside = container.ip(&["route", "show"]);
    assert!(inside.contains("default dev venet0"), "{inside}");

    // Setting up again (a restart after a crash) replaces the old pair.
    in_host(&host, || setup_with(&LinuxNet, 7, pid, &net)).unwrap();
    assert!(host.ping("198.18.0.2"), "no reply after a second setup");

    let fewer = parse_list("198.18.0.3/24");
    in_host(&host, || {
        link::apply_routed(&LinuxNet, &net.venet(7, pid), &net.addresses, &fewer)
    })
    .unwrap();
    assert!(!host.ping("198.18.0.2"), "198.18.0.2 still replies");
    assert!(host.ping("198.18.0.3"), "198.18.0.3 stopped replying");

    in_host(&host, || link::teardown(&LinuxNet, 7, &[], &[], &[])).unwrap();
    let links = host.ip(&["-o", "link", "show"]);
    assert!(!links.contains("venet7"), "{links}");
    let routes = host.ip(&["route", "show"]);
    assert!(!routes.contains("198.18.0."), "{routes}");
    let inside = container.ip(&["-o", "link", "show"]);
    assert!(!inside.contains("venet0"), "{inside}");
}

#[test]
fn bridged_pair_joins_bridge() {
    let host = Namespace::new();
    let container = Namespace::new();
    host.ip(&["link", "add", "br0", "type", "bridge"]);
    let netif = parse_add(
        "eth0,02:00:5e:00:53:01,veth8.0,02:00:5e:00:53:02,br0",
        8,
        &[],
    )
    .unwrap();
    let net = NetConfig {
        addresses: Vec::new(),
        netifs: vec![netif.clone()],
        neighbour_devs: Vec::new(),
    };

    in_host(&host, || setup_with(&LinuxNet, 8, container.pid(), &net)).unwrap();
    let host_side = host.ip(&["link", "show", "dev", "veth8.0"]);
    assert!(host_side.contains("master br0"), "{host_side}");
    assert!(host_side.contains("02:00:5e:00:53:02"), "{host_side}");
    let inside = container.ip(&["link", "show", "dev", "eth0"]);
    assert!(inside.contains("02:00:5e:00:53:01"), "{inside}");

    let missing = parse_add("eth1,,,,br9", 8, std::slice::from_ref(&netif)).unwrap();
    let err = in_host(&host, || {
        link::apply_netifs(&LinuxNet, container.pid(), &[], &[missing])
    })
    .unwrap_err();
    assert_eq!(err.exit_code(), 130);

    in_host(&host, || link::teardown(&LinuxNet, 8, &[], &[], &[netif])).unwrap();
    let links = host.ip(&["-o", "link", "show"]);
    assert!(!links.contains("veth8.0"), "{links}");
}

#[test]
fn uplink_proxies_routed_addresses() {
    let host = Namespace::new();
    let container = Namespace::new();
    host.ip(&["link", "add", "up0", "type", "bridge"]);
    let net = NetConfig {
        addresses: parse_list("198.18.0.2 fd00::2"),
        netifs: Vec::new(),
        neighbour_devs: vec!["up0".to_string()],
    };

    in_host(&host, || setup_with(&LinuxNet, 9, container.pid(), &net)).unwrap();
    let proxies = host.ip(&["neigh", "show", "proxy"]);
    assert!(proxies.contains("198.18.0.2 dev up0"), "{proxies}");
    let proxies = host.ip(&["-6", "neigh", "show", "proxy"]);
    assert!(proxies.contains("fd00::2 dev up0"), "{proxies}");

    in_host(&host, || {
        link::teardown(&LinuxNet, 9, &net.neighbour_devs, &[], &[])
    })
    .unwrap();
    let proxies = host.ip(&["neigh", "show", "proxy"]);
    assert!(!proxies.contains("198.18.0.2"), "{proxies}");
    let proxies = host.ip(&["-6", "neigh", "show", "proxy"]);
    assert!(!proxies.contains("fd00::2"), "{proxies}");
}
