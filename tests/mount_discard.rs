//! Space given back to the host after a large file is deleted on a mounted
//! disk: ext4's discards (fstrim) reach the server as FUSE punch-hole
//! requests on the loop device's backing file, and `lamina compact` frees
//! what is left. Sizes are the allocated bytes of the top delta file
//! (st_blocks * 512, as `du` counts them). Needs root.

mod mount_common;

use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use mount_common::{Home, MIB, leftovers, run};

/// Size of the file that is written and deleted.
const FILE: u64 = 500 * MIB;
/// Share of the file's size that must go back to the host, in percent.
const RETURNED_PERCENT: u64 = 80;

fn allocated(path: &Path) -> u64 {
    let metadata =
        std::fs::metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
    metadata.blocks() * 512
}

/// Returns the path of the disk's top delta file, from `lamina info`.
fn top_delta(home: &Home, disk: &Path) -> PathBuf {
    let json = home.lamina_ok(&["info", disk.to_str().unwrap(), "--json"]);
    let info: serde_json::Value = serde_json::from_str(&json).expect("info --json");
    let deltas = info["disk"]["deltas"].as_array().expect("deltas");
    let top = deltas.last().expect("a delta");
    disk.join(top["file"].as_str().expect("delta file name"))
}

/// Writes `len` bytes from /dev/urandom (incompressible, non-zero) to
/// `path` in 4 MiB pieces and syncs the file.
fn write_random(path: &Path, len: u64) {
    let mut source = std::fs::File::open("/dev/urandom").expect("open /dev/urandom");
    let mut file = std::fs::File::create(path).expect("create file");
    let mut buf = vec![0u8; 4 << 20];
    let mut left = len;
    while left > 0 {
        let take = usize::try_from(left.min(buf.len() as u64)).unwrap();
        source
            .read_exact(&mut buf[..take])
            .expect("read /dev/urandom");
        file.write_all(&buf[..take]).expect("write file");
        left -= take as u64;
    }
    file.sync_all().expect("sync file");
}

/// Deletes `path` and syncs the filesystem, so that its blocks are free.
fn delete_synced(path: &Path, target: &Path) {
    std::fs::remove_file(path).expect("delete file");
    run("sync", &["-f", target.to_str().unwrap()]);
}

fn compact(home: &Home, disk: &Path) -> u64 {
    let output = home.lamina_ok(&["compact", disk.to_str().unwrap()]);
    output
        .trim()
        .strip_prefix("freed: ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected compact output {output:?}"))
}

#[test]
fn trim_and_compact_return_deleted_file() {
    let home = Home::new();
    let disk = home.disk("disk", 2048 * MIB);
    let target = home.target("mnt");
    let disk_arg = disk.to_str().unwrap();
    home.lamina_ok(&["mount", disk_arg, "--target", target.to_str().unwrap()]);
    let top = top_delta(&home, &disk);
    let expected = FILE / 100 * RETURNED_PERCENT;

    // Round 1: fstrim on the mount, then compact.
    let big = target.join("big");
    write_random(&big, FILE);
    let written = allocated(&top);
    delete_synced(&big, &target);
    let fstrim = run("fstrim", &["-v", target.to_str().unwrap()]);
    let trimmed = allocated(&top);
    let freed = compact(&home, &disk);
    let compacted = allocated(&top);
    eprintln!(
        "round 1: top delta {written} bytes with the file, {trimmed} after fstrim \
         ({}), {compacted} after compact (reported freed: {freed})",
        fstrim.trim()
    );
    assert!(
        written >= FILE,
        "the file did not land in the top delta: {written} bytes"
    );
    assert!(
        written - compacted >= expected,
        "only {} of {FILE} bytes went back to the host",
        written.saturating_sub(compacted)
    );

    // Round 2: compact alone trims the filesystem, and its report counts
    // what the trim returned too.
    write_random(&big, FILE);
    let written = allocated(&top);
    delete_synced(&big, &target);
    let freed = compact(&home, &disk);
    let compacted = allocated(&top);
    eprintln!(
        "round 2: top delta {written} bytes with the file, {compacted} after compact \
         (reported freed: {freed})"
    );
    assert!(
        written - compacted >= expected,
        "only {} of {FILE} bytes went back to the host",
        written.saturating_sub(compacted)
    );
    assert!(
        freed >= expected,
        "compact reported {freed} bytes freed, expected at least {expected}"
    );

    home.lamina_ok(&["umount", disk_arg]);
    assert!(leftovers(home.path().to_str().unwrap()).is_empty());
    let check = home.lamina_ok(&["check", disk_arg]);
    assert!(check.contains("result: clean"), "{check}");

    let raw = home.path().join("disk.raw");
    home.lamina_ok(&["convert", disk_arg, raw.to_str().unwrap(), "--to", "raw"]);
    let fsck = Command::new("e2fsck")
        .args(["-fn", raw.to_str().unwrap()])
        .output()
        .expect("run e2fsck");
    assert!(
        fsck.status.success(),
        "e2fsck -fn: {}",
        String::from_utf8_lossy(&fsck.stdout)
    );
}
