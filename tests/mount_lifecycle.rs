//! Server lifecycle: SIGTERM, a busy target, and giving freed space back.

mod mount_common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use lamina_engine::serve::{self, ControlRequest, ControlResponse};
use mount_common::{Home, MIB, leftovers, pattern, stderr_of, with_home};

/// Waits until `lamina list` shows no mount, for at most 20 seconds.
fn wait_unmounted(home: &Home) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !home.mounts().is_empty() {
        assert!(
            Instant::now() < deadline,
            "server did not exit: {:?}",
            home.mounts()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(pid: u32, signal: nix::sys::signal::Signal) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap());
    nix::sys::signal::kill(pid, signal).expect("send signal");
}

/// Returns the bytes allocated on the host for the disk's delta files.
fn allocated_bytes(disk: &Path) -> u64 {
    std::fs::read_dir(disk)
        .expect("read disk dir")
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "delta"))
        .map(|e| e.metadata().expect("stat delta").blocks() * 512)
        .sum()
}

#[test]
fn sigterm_unmounts_cleanly() {
    let home = Home::new();
    let disk = home.disk("disk", 128 * MIB);
    let target = home.target("mnt");
    let disk_arg = disk.to_str().unwrap();
    home.lamina_ok(&["mount", disk_arg, "--target", target.to_str().unwrap()]);
    std::fs::write(target.join("kept"), pattern(61, 2 * MIB)).expect("write");

    signal(home.mounts()[0].pid, nix::sys::signal::Signal::SIGTERM);
    wait_unmounted(&home);
    assert!(leftovers(home.path().to_str().unwrap()).is_empty());

    home.lamina_ok(&["mount", disk_arg, "--target", target.to_str().unwrap()]);
    assert!(std::fs::read(target.join("kept")).expect("read") == pattern(61, 2 * MIB));
    home.lamina_ok(&["umount", disk_arg]);
}

#[test]
fn busy_target_keeps_serving_until_forced() {
    let home = Home::new();
    let disk = home.disk("disk", 128 * MIB);
    let target = home.target("mnt");
    let disk_arg = disk.to_str().unwrap();
    home.lamina_ok(&["mount", disk_arg, "--target", target.to_str().unwrap()]);
    std::fs::write(target.join("file"), b"still here").expect("write");
    let mut holder = Command::new("sleep")
        .arg("60")
        .current_dir(&target)
        .spawn()
        .expect("start sleep");

    let output = home.lamina(&["umount", disk_arg]);
    assert_eq!(
        output.status.code(),
        Some(5),
        "umount of busy target: {}",
        stderr_of(&output)
    );
    assert!(
        home.mounts()[0].running,
        "server stopped after a failed umount"
    );
    assert_eq!(
        std::fs::read(target.join("file")).expect("read"),
        b"still here"
    );

    home.lamina_ok(&["umount", "--force", disk_arg]);
    holder.kill().expect("kill sleep");
    holder.wait().expect("wait sleep");
    wait_unmounted(&home);
    assert!(leftovers(home.path().to_str().unwrap()).is_empty());
}

#[test]
fn compact_returns_deleted_file_space() {
    let home = Home::new();
    let disk = home.disk("disk", 512 * MIB);
    let target = home.target("mnt");
    let disk_arg = disk.to_str().unwrap();
    home.lamina_ok(&["mount", disk_arg, "--target", target.to_str().unwrap()]);

    let file = target.join("big");
    std::fs::write(&file, pattern(71, 200 * MIB)).expect("write big file");
    mount_common::run("sync", &["-f", target.to_str().unwrap()]);
    let full = allocated_bytes(&disk);
    std::fs::remove_file(&file).expect("remove big file");
    mount_common::run("sync", &["-f", target.to_str().unwrap()]);

    let response = with_home(home.path(), || {
        serve::control(&disk, ControlRequest::Compact)
    })
    .expect("compact");
    assert!(
        matches!(response, ControlResponse::Compacted { .. }),
        "reply {response:?}"
    );
    let after = allocated_bytes(&disk);
    assert!(
        full.saturating_sub(after) >= 160 * MIB,
        "deltas shrank only from {full} to {after} bytes"
    );
    home.lamina_ok(&["umount", disk_arg]);
}
