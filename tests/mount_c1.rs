//! Case C1: several concurrent large direct writes through the loop
//! device, each request with its own payload and offset.

mod mount_common;

use mount_common::{DirectWrite, Home, MIB, fsck, leftovers, verify_direct, write_all_at_once};

#[test]
fn concurrent_direct_writes_survive_remount() {
    let home = Home::new();
    let disk = home.disk("disk", 512 * MIB);
    let target = home.target("mnt");
    let disk_arg = disk.to_str().unwrap();
    let target_arg = target.to_str().unwrap();
    home.lamina_ok(&["mount", disk_arg, "--target", target_arg]);

    // The default cluster is 1 MiB: offsets 0 and 8 MiB are aligned to it,
    // the others start 12 KiB and 516 KiB into a cluster.
    let shared = target.join("shared");
    let writes = [
        DirectWrite {
            seed: 1,
            block: "1M",
            offset: 0,
            file: shared.clone(),
        },
        DirectWrite {
            seed: 2,
            block: "4M",
            offset: 8 * MIB,
            file: shared.clone(),
        },
        DirectWrite {
            seed: 3,
            block: "1M",
            offset: 16 * MIB + 12 * 1024,
            file: shared.clone(),
        },
        DirectWrite {
            seed: 4,
            block: "4M",
            offset: 24 * MIB + 516 * 1024,
            file: shared.clone(),
        },
        DirectWrite {
            seed: 5,
            block: "4M",
            offset: 0,
            file: target.join("own-a"),
        },
        DirectWrite {
            seed: 6,
            block: "1M",
            offset: 12 * 1024,
            file: target.join("own-b"),
        },
    ];
    write_all_at_once(&writes, home.path());
    verify_direct(&writes);

    home.lamina_ok(&["umount", disk_arg]);
    fsck(&home, &disk);
    home.lamina_ok(&["mount", disk_arg, "--target", target_arg]);
    verify_direct(&writes);
    home.lamina_ok(&["umount", target_arg]);
    fsck(&home, &disk);
    assert!(leftovers(home.path().to_str().unwrap()).is_empty());
}
