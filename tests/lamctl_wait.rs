//! `lamctl start --wait` on the busybox template: a normal boot returns
//! success, and an init that exits during boot fails the start with a
//! message naming the console log, leaving the container stopped and
//! unmounted. Runs as root.

#[path = "lamctl_common.rs"]
mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::Home;

// Cgroups are named after the CTID host-wide (`lamina/CTID`), so these
// CTIDs are used by no other test.

#[test]
fn busybox_start_wait_succeeds() {
    let home = Home::new();
    home.create("73201", &[]);

    let started = Instant::now();
    let output = home.ok(&["start", "73201", "--wait"]);
    let elapsed = started.elapsed();
    assert!(
        output.contains("Container started successfully"),
        "{output}"
    );
    // busybox init reports nothing, so --wait only settles for 500 ms.
    assert!(elapsed < Duration::from_secs(30), "start took {elapsed:?}");
    assert_eq!(
        home.ok(&["status", "73201"]),
        "CTID 73201 exist mounted running\n"
    );
    assert_eq!(home.ok(&["exec", "73201", "echo", "inside"]), "inside\n");

    home.ok(&["stop", "73201"]);
    home.ok(&["destroy", "73201"]);
    home.assert_clean();
}

#[test]
fn start_wait_reports_exited_init() {
    let home = Home::new();
    home.create("73202", &[]);

    // An init whose executable is named like systemd's and that exits at
    // once: the kernel runs the script's interpreter, a copy of busybox
    // named `systemd`, which has no applet of that name and exits 127.
    home.ok(&["mount", "73202"]);
    let root = home.path().join("root/73202");
    fs::copy(root.join("bin/busybox"), root.join("bin/systemd")).unwrap();
    let init = root.join("sbin/init");
    fs::remove_file(&init).unwrap();
    fs::write(&init, "#!/bin/systemd\n").unwrap();
    fs::set_permissions(&init, fs::Permissions::from_mode(0o755)).unwrap();
    home.ok(&["umount", "73202"]);

    let started = Instant::now();
    let (code, stderr) = home.fails(&["start", "73202", "--wait"]);
    let elapsed = started.elapsed();
    assert_ne!(code, 0, "start succeeded: {stderr}");
    assert!(stderr.contains("init exited"), "{stderr}");
    assert!(stderr.contains("console.log"), "{stderr}");
    assert!(!stderr.contains("did not finish booting"), "{stderr}");
    assert!(elapsed < Duration::from_secs(30), "start took {elapsed:?}");
    assert_eq!(
        home.ok(&["status", "73202"]),
        "CTID 73202 exist unmounted down\n"
    );

    home.ok(&["destroy", "73202"]);
    home.assert_clean();
}
