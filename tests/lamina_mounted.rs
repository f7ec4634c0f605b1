//! `lamina` image verbs with a filesystem: `init --fs ext4` and verbs on a
//! mounted disk, which go through the server's control socket or are
//! rejected with the busy code. `tests/mount_online_ops.rs` covers delete
//! and merge on a mounted disk. Needs root (loop devices, FUSE, mount).

mod lamina_common;

use std::process::Command;

use lamina_common::{Home, MIB, code};

/// Force-unmounts every mount of the home when dropped, also when a test
/// fails half way.
struct Mounted<'a> {
    home: &'a Home,
    disk: String,
}

impl Drop for Mounted<'_> {
    fn drop(&mut self) {
        let _ = self.home.lamina(&["umount", "--force", &self.disk]);
    }
}

fn mount<'a>(home: &'a Home, disk: &str) -> Mounted<'a> {
    let target = home.join("mnt");
    std::fs::create_dir_all(&target).expect("create target");
    let guard = Mounted {
        home,
        disk: disk.to_string(),
    };
    home.ok(&["mount", disk, "--target", &target]);
    guard
}

fn fsck_clean(raw: &str) {
    let output = Command::new("e2fsck")
        .args(["-fn", raw])
        .output()
        .expect("run e2fsck");
    assert!(
        output.status.success(),
        "e2fsck -fn {raw}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Returns whether this process has CAP_SYS_RESOURCE (bit 24 of CapEff in
/// /proc/self/status, see capabilities(7)).
fn has_cap_sys_resource() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << 24) != 0)
}

#[test]
fn init_ext4_exports_clean_fs() {
    let home = Home::new();
    let disk = home.join("d");
    home.ok(&["init", &disk, "--size", "64M", "--inodes", "4096"]);
    let raw = home.join("d.img");
    home.ok(&["convert", &disk, &raw, "--to", "raw"]);
    fsck_clean(&raw);

    let dumpe2fs = Command::new("dumpe2fs")
        .args(["-h", &raw])
        .output()
        .expect("run dumpe2fs");
    let header = String::from_utf8_lossy(&dumpe2fs.stdout);
    let inodes = header
        .lines()
        .find_map(|l| l.strip_prefix("Inode count:"))
        .map(str::trim)
        .and_then(|n| n.parse::<u64>().ok())
        .expect("inode count in dumpe2fs output");
    assert!((4096..8192).contains(&inodes), "inode count {inodes}");
}

#[test]
fn init_xfs_exports_clean_fs() {
    let home = Home::new();
    let disk = home.join("d");
    home.ok(&["init", &disk, "--size", "320M", "--fs", "xfs"]);
    let raw = home.join("d.img");
    home.ok(&["convert", &disk, &raw, "--to", "raw"]);
    let output = Command::new("xfs_repair")
        .args(["-n", "-f", &raw])
        .output()
        .expect("run xfs_repair");
    assert!(
        output.status.success(),
        "xfs_repair -n {raw}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn mounted_disk_routes_through_server() {
    let home = Home::new();
    let disk = home.join("d");
    home.ok(&["init", &disk, "--size", "64M"]);
    let mounted = mount(&home, &disk);
    std::fs::write(home.path().join("mnt/file"), b"mounted data").expect("write file");

    let info: serde_json::Value =
        serde_json::from_str(&home.ok(&["info", &disk, "--json"])).expect("info --json");
    assert_eq!(info["disk"]["virtual_size"], 64 * MIB);
    assert!(info["mount"]["pid"].is_u64(), "{info}");
    assert!(home.ok(&["info", &disk]).contains("mounted: yes"));

    let uuid = home.ok(&["snapshot", &disk, "--name", "online"]);
    let uuid = uuid.trim_end();
    assert!(uuid::Uuid::parse_str(uuid).is_ok(), "{uuid:?}");
    let names = home.ok(&["snapshot-list", &disk, "-H", "-o", "uuid,name"]);
    assert!(names.contains(&format!("{uuid}  online")), "{names}");

    // Online ext4 grow needs CAP_SYS_RESOURCE for resize2fs; without it
    // the disk grows and resize2fs is reported as the failing step.
    let grow = home.lamina(&["resize", &disk, "--size", "128M"]);
    if has_cap_sys_resource() {
        assert!(
            grow.status.success(),
            "{}",
            String::from_utf8_lossy(&grow.stderr)
        );
    } else {
        let stderr = String::from_utf8_lossy(&grow.stderr);
        assert!(stderr.contains("resize2fs"), "{stderr}");
    }
    let info: serde_json::Value =
        serde_json::from_str(&home.ok(&["info", &disk, "--json"])).expect("info --json");
    assert_eq!(info["disk"]["virtual_size"], 128 * MIB);

    for verb in [
        vec!["snapshot-switch", &disk, "online"],
        vec!["resize", &disk, "--size", "64M"],
        vec!["check", &disk],
    ] {
        let stderr = home.fails(&verb, code::BUSY);
        assert!(stderr.contains("lamina umount"), "{verb:?}: {stderr}");
    }
    // Delete and merge go to the server, which rejects the running top.
    let top = info["disk"]["top"].as_str().expect("top").to_string();
    let stderr = home.fails(&["snapshot-delete", &disk, &top], code::BUSY);
    assert!(stderr.contains("running top"), "{stderr}");
    home.fails(
        &[
            "write",
            &disk,
            "--offset",
            "0",
            "--input",
            &home.file("x", b"x"),
        ],
        code::BUSY,
    );
    home.fails(
        &["read", &disk, "--offset", "0", "--length", "4K"],
        code::BUSY,
    );
    let snapshot_read = home.lamina(&[
        "read",
        &disk,
        "--offset",
        "0",
        "--length",
        "4K",
        "--snapshot",
        "online",
    ]);
    assert!(snapshot_read.status.success());
    assert_eq!(snapshot_read.stdout.len(), 4096);

    let compact = home.ok(&["compact", &disk]);
    assert!(compact.starts_with("freed: "), "{compact}");

    drop(mounted);
    home.ok(&["snapshot-switch", &disk, "online"]);
    let raw = home.join("d.img");
    home.ok(&["convert", &disk, &raw, "--to", "raw"]);
    fsck_clean(&raw);
}
