//! `update_config` against a temp layout and a recorded host.

use super::sys::RecordingNet;
use super::*;

fn layout_with(configs: &[(&str, &str)]) -> (tempfile::TempDir, Layout) {
    let home = tempfile::tempdir().unwrap();
    let layout = Layout::under_home(home.path()).unwrap();
    fs::create_dir_all(&layout.conf_dir).unwrap();
    for (ctid, text) in configs {
        fs::write(layout.conf_dir.join(format!("{ctid}.conf")), text).unwrap();
    }
    (home, layout)
}

fn ctid(text: &str) -> Ctid {
    Ctid::parse(text).unwrap()
}

#[test]
fn options_are_stored() {
    let (_home, layout) = layout_with(&[]);
    let sys = RecordingNet::default();
    sys.links.lock().unwrap().push(("br0".into(), true));
    let mut config = ConfigFile::parse("IP_ADDRESS=\"198.18.0.2\"\n");
    let opts = NetOptions {
        ipadd: vec!["fd00::2".into()],
        netif_add: vec!["eth0,02:00:5e:00:53:01,,,br0".into()],
        nameserver: vec!["198.18.0.53".into(), "fd00::53".into()],
        searchdomain: vec!["example.test".into()],
        ..NetOptions::default()
    };
    assert!(update_config_with(&sys, &layout, ctid("101"), &mut config, &opts).unwrap());
    assert_eq!(config.get("IP_ADDRESS"), Some("198.18.0.2 fd00::2"));
    assert_eq!(config.get("NAMESERVER"), Some("198.18.0.53 fd00::53"));
    assert_eq!(config.get("SEARCHDOMAIN"), Some("example.test"));
    let netif = config.get("NETIF").unwrap();
    assert!(
        netif.starts_with("ifname=eth0,mac=02:00:5e:00:53:01,host_ifname=veth101.0,"),
        "{netif}"
    );
    assert!(netif.ends_with(",bridge=br0"), "{netif}");
}

#[test]
fn address_of_other_container_is_78() {
    let (_home, layout) = layout_with(&[("102", "IP_ADDRESS=\"198.18.0.9/24 fd00::9\"\n")]);
    let sys = RecordingNet::default();
    for taken in ["198.18.0.9", "fd00::9/64"] {
        let mut config = ConfigFile::default();
        let opts = NetOptions {
            ipadd: vec![taken.into()],
            ..NetOptions::default()
        };
        let err = update_config_with(&sys, &layout, ctid("101"), &mut config, &opts).unwrap_err();
        assert_eq!(err.exit_code(), 78, "{taken}");
        assert_eq!(config, ConfigFile::default(), "{taken}");
    }

    // The container's own config does not count against it.
    let mut own = ConfigFile::parse("IP_ADDRESS=\"198.18.0.9\"\n");
    let opts = NetOptions {
        ipadd: vec!["198.18.0.9/24".into()],
        ..NetOptions::default()
    };
    update_config_with(&sys, &layout, ctid("102"), &mut own, &opts).unwrap();
    assert_eq!(own.get("IP_ADDRESS"), Some("198.18.0.9/24"));
}

#[test]
fn bad_option_leaves_config_unchanged() {
    let (_home, layout) = layout_with(&[]);
    let sys = RecordingNet::default();
    let before = ConfigFile::parse("IP_ADDRESS=\"198.18.0.2\"\nNAMESERVER=\"inherit\"\n");
    let cases: [(NetOptions, i32); 3] = [
        (
            NetOptions {
                ipadd: vec!["198.18.0.3".into()],
                netif_add: vec!["eth0,,,,br9".into()],
                ..NetOptions::default()
            },
            130,
        ),
        (
            NetOptions {
                ipdel: vec!["all".into()],
                nameserver: vec!["resolver".into()],
                ..NetOptions::default()
            },
            72,
        ),
        (
            NetOptions {
                ipadd: vec!["198.18.0.3/40".into()],
                ..NetOptions::default()
            },
            71,
        ),
    ];
    for (opts, code) in cases {
        let mut config = before.clone();
        let err = update_config_with(&sys, &layout, ctid("101"), &mut config, &opts).unwrap_err();
        assert_eq!(err.exit_code(), code, "{opts:?}");
        assert_eq!(config, before, "{opts:?}");
    }
}

#[test]
fn neighbour_devs_values() {
    assert_eq!(parse_neighbour_devs("list:eth0 eth1"), ["eth0", "eth1"]);
    assert_eq!(parse_neighbour_devs("eth0,bond0"), ["eth0", "bond0"]);
    assert!(parse_neighbour_devs("detect").is_empty());
    assert!(parse_neighbour_devs("").is_empty());
    assert_eq!(parse_neighbour_devs("list:eth0 a/b"), ["eth0"]);
}
