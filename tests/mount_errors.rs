//! Mount failures: each reports its exit code and leaves no loop device,
//! mount, runtime directory or server behind.

mod mount_common;

use std::path::Path;

use mount_common::{Home, MIB, leftovers, stderr_of};

/// Asserts that `lamina mount` failed with `code` and left nothing.
fn assert_mount_fails(home: &Home, args: &[&str], code: i32, mounts_before: usize) {
    let output = home.lamina(args);
    assert_eq!(
        output.status.code(),
        Some(code),
        "lamina {args:?}: {}",
        stderr_of(&output)
    );
    assert!(
        !stderr_of(&output).trim().is_empty(),
        "no error message for {args:?}"
    );
    assert_eq!(home.mounts().len(), mounts_before, "mounts after {args:?}");
    let run_dirs = std::fs::read_dir(home.path().join("run"))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.path().is_dir())
                .count()
        })
        .unwrap_or(0);
    assert_eq!(
        run_dirs, mounts_before,
        "runtime directories after {args:?}"
    );
}

fn corrupt_delta(disk: &Path) {
    let delta = std::fs::read_dir(disk)
        .expect("read disk dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "delta"))
        .expect("a delta file");
    let mut bytes = std::fs::read(&delta).expect("read delta");
    for byte in bytes.iter_mut().take(64) {
        *byte ^= 0x5a;
    }
    std::fs::write(&delta, bytes).expect("write delta");
}

#[test]
fn bad_mounts_fail_cleanly() {
    let home = Home::new();
    let disk = home.disk("disk", 128 * MIB);
    let target = home.target("mnt");
    let other = home.target("other");
    let disk_arg = disk.to_str().unwrap();
    let target_arg = target.to_str().unwrap();
    let other_arg = other.to_str().unwrap();

    let missing = home.path().join("missing");
    assert_mount_fails(
        &home,
        &["mount", disk_arg, "--target", missing.to_str().unwrap()],
        3,
        0,
    );
    std::fs::write(other.join("file"), b"x").expect("fill target");
    assert_mount_fails(&home, &["mount", disk_arg, "--target", other_arg], 2, 0);
    std::fs::remove_file(other.join("file")).expect("empty target");
    assert_mount_fails(
        &home,
        &[
            "mount",
            disk_arg,
            "--target",
            target_arg,
            "--snapshot",
            "nope",
        ],
        3,
        0,
    );
    let no_disk = home.path().join("no-disk");
    assert_mount_fails(
        &home,
        &["mount", no_disk.to_str().unwrap(), "--target", target_arg],
        3,
        0,
    );
    assert!(leftovers(home.path().to_str().unwrap()).is_empty());

    home.lamina_ok(&["mount", disk_arg, "--target", target_arg]);
    assert_mount_fails(&home, &["mount", disk_arg, "--target", other_arg], 5, 1);
    // Its own target is busy too, not merely a non-empty directory.
    assert_mount_fails(&home, &["mount", disk_arg, "--target", target_arg], 5, 1);
    let output = home.lamina(&["umount", home.path().join("nothing").to_str().unwrap()]);
    assert_eq!(
        output.status.code(),
        Some(3),
        "umount of unmounted path: {}",
        stderr_of(&output)
    );
    home.lamina_ok(&["umount", disk_arg]);
    assert!(leftovers(home.path().to_str().unwrap()).is_empty());

    let blank = home.disk_with("blank", 64 * MIB, None);
    assert_mount_fails(
        &home,
        &["mount", blank.to_str().unwrap(), "--target", target_arg],
        2,
        0,
    );
    assert!(leftovers(home.path().to_str().unwrap()).is_empty());

    corrupt_delta(&disk);
    assert_mount_fails(&home, &["mount", disk_arg, "--target", target_arg], 4, 0);
    assert!(leftovers(home.path().to_str().unwrap()).is_empty());
}
