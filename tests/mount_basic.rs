//! `lamina mount`, `list` and `umount` on a real disk.

mod mount_common;

use mount_common::{Home, MIB, leftovers};

#[test]
fn mount_write_umount_remount() {
    let home = Home::new();
    let disk = home.disk("disk", 256 * MIB);
    let target = home.target("mnt");
    let disk_arg = disk.to_str().unwrap();
    let target_arg = target.to_str().unwrap();

    let start = std::time::Instant::now();
    home.lamina_ok(&["mount", disk_arg, "--target", target_arg]);
    eprintln!("mount took {:?}", start.elapsed());
    let mounts = home.mounts();
    assert_eq!(mounts.len(), 1, "mounts: {mounts:?}");
    assert!(mounts[0].running);
    assert_eq!(mounts[0].target, target.canonicalize().unwrap());
    let mounted = leftovers(target.to_str().unwrap());
    assert!(
        mounted.iter().any(|l| l.contains(" - ext4 /dev/loop")),
        "no ext4 mount at target: {mounted:?}"
    );

    std::fs::write(target.join("hello"), b"hello world").expect("write");
    let start = std::time::Instant::now();
    home.lamina_ok(&["umount", disk_arg]);
    eprintln!("umount took {:?}", start.elapsed());
    assert!(home.mounts().is_empty());
    assert!(leftovers(home.path().to_str().unwrap()).is_empty());

    home.lamina_ok(&["mount", disk_arg, "--target", target_arg]);
    assert_eq!(
        std::fs::read(target.join("hello")).expect("read"),
        b"hello world"
    );
    home.lamina_ok(&["umount", target_arg]);
    assert!(
        leftovers(home.path().to_str().unwrap()).is_empty(),
        "{:?}",
        leftovers(home.path().to_str().unwrap())
    );
}

#[test]
fn read_only_mount_rejects_writes() {
    let home = Home::new();
    let disk = home.disk("disk", 128 * MIB);
    let target = home.target("mnt");
    let disk_arg = disk.to_str().unwrap();
    let target_arg = target.to_str().unwrap();
    home.lamina_ok(&["mount", disk_arg, "--target", target_arg]);
    std::fs::write(target.join("file"), b"before").expect("write");
    home.lamina_ok(&["umount", disk_arg]);

    home.lamina_ok(&["mount", disk_arg, "--target", target_arg, "--read-only"]);
    let mounts = home.mounts();
    assert!(mounts[0].read_only, "mount not listed as read-only");
    assert_eq!(std::fs::read(target.join("file")).expect("read"), b"before");
    let error = std::fs::write(target.join("other"), b"x").expect_err("write on read-only mount");
    assert_eq!(error.raw_os_error(), Some(nix::errno::Errno::EROFS as i32));
    home.lamina_ok(&["umount", target_arg]);
    assert!(leftovers(home.path().to_str().unwrap()).is_empty());
}

#[test]
fn list_prints_table_header() {
    let home = Home::new();
    let output = home.lamina_ok(&["list"]);
    assert!(output.starts_with("DISK"), "list output: {output}");
    assert_eq!(output.lines().count(), 1, "list output: {output}");
}
