//! kill -9 of a server: the mount fails with I/O errors, `umount --force`
//! removes the leftovers, and the next mount keeps every fsynced write.

mod mount_common;

use std::process::{Command, Stdio};
use std::time::Duration;

use mount_common::{Home, MIB, fsck, leftovers, pattern};

#[test]
fn killed_server_recovers_fsynced_writes() {
    let home = Home::new();
    let disk = home.disk("disk", 256 * MIB);
    let target = home.target("mnt");
    let disk_arg = disk.to_str().unwrap();
    let target_arg = target.to_str().unwrap();
    home.lamina_ok(&["mount", disk_arg, "--target", target_arg]);
    let pid = home.mounts()[0].pid;

    let durable = pattern(51, 8 * MIB);
    let input = home.path().join("durable-input");
    std::fs::write(&input, &durable).expect("write pattern");
    mount_common::run(
        "dd",
        &[
            &format!("if={}", input.display()),
            &format!("of={}", target.join("durable").display()),
            "bs=1M",
            "conv=fsync",
            "status=none",
        ],
    );

    let mut writer = Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", target.join("streaming").display()))
        .args(["bs=1M", "count=200", "status=none"])
        .stderr(Stdio::null())
        .spawn()
        .expect("start writer");
    std::thread::sleep(Duration::from_millis(100));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill server");
    let _ = writer.wait();

    // Syncing the filesystem now has to fail: its device is gone.
    let sync = Command::new("sync")
        .arg("-f")
        .arg(&target)
        .output()
        .expect("sync");
    assert!(
        !sync.status.success(),
        "sync succeeded on a mount whose server is dead"
    );
    let mounts = home.mounts();
    assert!(!mounts[0].running, "server still listed as running");

    let output = home.lamina(&["umount", disk_arg]);
    assert_eq!(
        output.status.code(),
        Some(5),
        "umount without --force of a dead server"
    );
    home.lamina_ok(&["umount", "--force", disk_arg]);
    assert!(home.mounts().is_empty());
    assert!(
        leftovers(home.path().to_str().unwrap()).is_empty(),
        "{:?}",
        leftovers(home.path().to_str().unwrap())
    );

    home.lamina_ok(&["mount", disk_arg, "--target", target_arg]);
    assert!(
        std::fs::read(target.join("durable")).expect("read durable") == durable,
        "fsynced file lost"
    );
    home.lamina_ok(&["umount", disk_arg]);
    fsck(&home, &disk);
    assert!(leftovers(home.path().to_str().unwrap()).is_empty());
}
